//! The portal's catalog pages: browse the entries one may see, an entry's
//! card, versions and aliases, and a request for a gated entry (its owners
//! see the requests and grant from the page).

use super::NO_BODY;
use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use gigafab_api as t;

use super::pages::{Chrome, chrome, csrf_refused, failure};
use super::{Failure, PortalState, Signed, form_ok, page};

pub(super) fn router() -> Router<PortalState> {
    Router::new()
        .route("/catalog", get(list))
        .route("/catalog/{name}", get(entry))
        .route("/catalog/{name}/{act}", post(act))
}

#[derive(Template)]
#[template(path = "catalog.html")]
struct List<'a> {
    c: Chrome<'a>,
    entries: Vec<t::CatalogEntry>,
}

async fn list(State(p): State<PortalState>, s: Signed) -> Response {
    match p
        .api::<t::Page<t::CatalogEntry>, _>(&s.token, Method::GET, "/api/v1/catalog", NO_BODY)
        .await
    {
        Ok(v) => page(&List {
            c: chrome(&p, Some(&s)),
            entries: v.items,
        }),
        Err(f) => failure(&p, Some(&s), f, "/"),
    }
}

#[derive(Template)]
#[template(path = "catalog_entry.html")]
struct Entry<'a> {
    c: Chrome<'a>,
    e: t::CatalogEntry,
    /// The newest version (readers only).
    latest: Option<t::CatalogVersion>,
    problem: Option<String>,
}

/// A name as the API takes it in a path (the portal's own check: the same
/// characters as the API's names).
fn name_ok(name: &str) -> Result<&str, Failure> {
    if !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Ok(name)
    } else {
        Err(Failure {
            status: StatusCode::NOT_FOUND,
            code: "entry_not_found".into(),
            message: String::new(),
        })
    }
}

async fn entry_page(p: &PortalState, s: &Signed, name: &str, problem: Option<String>) -> Response {
    let name = match name_ok(name) {
        Ok(n) => n,
        Err(f) => return failure(p, Some(s), f, "/catalog"),
    };
    let e: t::CatalogEntry = match p
        .api(
            &s.token,
            Method::GET,
            &format!("/api/v1/catalog/{name}"),
            NO_BODY,
        )
        .await
    {
        Ok(e) => e,
        Err(f) => return failure(p, Some(s), f, "/catalog"),
    };
    let latest = match e.versions.last() {
        Some(v) if e.readable => p
            .api(
                &s.token,
                Method::GET,
                &format!("/api/v1/catalog/{name}/versions/{v}?files=true"),
                NO_BODY,
            )
            .await
            .ok(),
        _ => None,
    };
    page(&Entry {
        c: chrome(p, Some(s)),
        e,
        latest,
        problem,
    })
}

async fn entry(State(p): State<PortalState>, s: Signed, Path(name): Path<String>) -> Response {
    entry_page(&p, &s, &name, None).await
}

/// A request for access, an owner's grant.
async fn act(
    State(p): State<PortalState>,
    s: Signed,
    Path((name, act)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let n = match name_ok(&name) {
        Ok(n) => n,
        Err(f) => return failure(&p, Some(&s), f, "/catalog"),
    };
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    /// What an action on an entry posts.
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum EntryAction {
        Request(t::RequestEntryAccess),
        Grant(t::GrantEntry),
    }
    let (path, body) = match act.as_str() {
        "request" => (
            format!("/api/v1/catalog/{n}/access-requests"),
            EntryAction::Request(t::RequestEntryAccess {
                reason: text("reason"),
            }),
        ),
        "grant" => (
            format!("/api/v1/catalog/{n}/grants"),
            EntryAction::Grant(t::GrantEntry {
                org: text("org"),
                days: text("days").parse::<f64>().ok(),
            }),
        ),
        _ => {
            return failure(
                &p,
                Some(&s),
                Failure {
                    status: StatusCode::NOT_FOUND,
                    code: "not_found".into(),
                    message: String::new(),
                },
                "/catalog",
            );
        }
    };
    match p
        .api::<t::CatalogEntry, _>(&s.token, Method::POST, &path, Some(&body))
        .await
    {
        Ok(_) => Redirect::to(&format!("/catalog/{n}")).into_response(),
        Err(f) if f.status.is_client_error() && f.status != StatusCode::NOT_FOUND => {
            let mut r = entry_page(&p, &s, n, Some(f.message)).await;
            if r.status() == StatusCode::OK {
                *r.status_mut() = f.status;
            }
            r
        }
        Err(f) => failure(&p, Some(&s), f, "/catalog"),
    }
}
