//! The portal's pages and forms, each a call or two to the API.

use super::NO_BODY;
use std::collections::HashMap;

mod admin;
mod endpoints;
mod files;
mod jobs;
mod me;
mod requests;
mod sessions;
mod signin;

use admin::*;
use endpoints::*;
use files::*;
use jobs::*;
use me::*;
use requests::*;
use sessions::*;
use signin::*;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use gigafab_api as t;
use serde::Deserialize;

use super::{
    COOKIE, Failure, MaybeSigned, PortalState, SESSION_IDLE, Signed, Words, form_ok, page,
};

/// What every page shows around its content.
pub struct Chrome<'a> {
    pub t: &'a Words,
    pub lang: &'static str,
    pub user: Option<String>,
    pub role: String,
    pub csrf: String,
    /// An admin or operator (sees the operations page).
    pub global: bool,
}

pub(super) fn chrome<'a>(p: &'a PortalState, s: Option<&Signed>) -> Chrome<'a> {
    Chrome {
        t: &p.words,
        lang: "en",
        user: s.map(|s| s.who.name.clone()),
        role: s
            .map(|s| s.who.role.as_str().to_string())
            .unwrap_or_default(),
        csrf: s.map(|s| s.csrf.clone()).unwrap_or_default(),
        global: s.is_some_and(|s| s.who.global()),
    }
}

/// One field of a form, with its value and, after a refusal, its error.
pub struct Input {
    pub name: &'static str,
    pub label: String,
    pub kind: &'static str,
    pub value: String,
    pub help: String,
    pub error: Option<String>,
    pub options: Vec<(String, String)>,
}

fn input(w: &Words, name: &'static str, key: &'static str, kind: &'static str) -> Input {
    Input {
        name,
        label: w.get(key).to_string(),
        kind,
        value: String::new(),
        help: String::new(),
        error: None,
        options: Vec::new(),
    }
}

/// Puts the posted values back and the API's refusal next to its field
/// (or in `problem` when it names none).
fn refill(
    inputs: &mut [Input],
    form: &HashMap<String, String>,
    f: Option<&Failure>,
) -> Option<String> {
    for i in inputs.iter_mut() {
        if let Some(v) = form.get(i.name) {
            i.value = v.clone();
        }
    }
    let f = f?;
    if let Some(field) = f.field()
        && let Some(i) = inputs.iter_mut().find(|i| i.name == field)
    {
        i.error = Some(f.message.clone());
        return None;
    }
    Some(f.message.clone())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    c: Chrome<'a>,
    message: String,
    back: &'static str,
}

/// An API refusal as a page (never raw JSON): its status, its words.
pub(super) fn failure(
    p: &PortalState,
    s: Option<&Signed>,
    f: Failure,
    back: &'static str,
) -> Response {
    let message = match f.status {
        StatusCode::FORBIDDEN => format!("{} {}", p.words.get("err.forbidden"), f.message),
        StatusCode::NOT_FOUND => p.words.get("err.notfound").to_string(),
        _ => f.message,
    };
    let mut r = page(&ErrorPage {
        c: chrome(p, s),
        message,
        back,
    });
    *r.status_mut() = f.status;
    r
}

pub(super) fn csrf_refused(p: &PortalState, s: &Signed) -> Response {
    let mut r = page(&ErrorPage {
        c: chrome(p, Some(s)),
        message: p.words.get("err.csrf").to_string(),
        back: "/",
    });
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

pub(super) fn router() -> Router<PortalState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/login/oidc", get(oidc_start))
        .route("/login/oidc/callback", get(oidc_callback))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/jobs", get(jobs))
        .route("/jobs/new", get(new_job_page).post(new_job))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/log", get(job_log))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/requests", get(requests))
        .route("/requests/new", get(new_request_page).post(new_request))
        .route("/requests/{id}", get(request))
        .route("/requests/{id}/{act}", post(request_act))
        .route("/reviews", get(reviews))
        .route("/endpoints", get(endpoints))
        .route("/endpoints/{name}/keys", post(new_key))
        .route("/endpoints/{name}/scale", post(scale))
        .route("/files/{job}", get(files))
        .route("/files/{job}/view", get(view_file))
        .route("/files/{job}/download", get(download_file))
        .route(
            "/files/{job}/upload",
            post(upload_file).layer(axum::extract::DefaultBodyLimit::max((64 << 20) + (1 << 20))),
        )
        .route("/space", get(space))
        .route("/space/view", get(space_view))
        .route("/space/download", get(space_download))
        .route(
            "/space/upload",
            post(space_upload).layer(axum::extract::DefaultBodyLimit::max((64 << 20) + (1 << 20))),
        )
        .route("/interactive", get(sessions))
        .route("/interactive/new", post(start_session))
        .route("/interactive/{id}/{act}", post(session_act))
        .route("/admin", get(admin))
        .route("/admin/nodes/{name}/{act}", post(node_act))
        .route("/admin/calls", post(open_call))
        .route("/static/portal.css", get(css))
        .route("/static/portal.js", get(js))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../static/portal.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../../static/portal.js"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home<'a> {
    c: Chrome<'a>,
    offer: t::Offer,
    sites: Vec<SiteRow>,
}

/// A site on the home page: its grid now and the lowest intensity of the
/// next 24 hours (and in how many hours), its powered-down nodes.
struct SiteRow {
    name: String,
    intensity: Option<f64>,
    cleanest: Option<(f64, usize)>,
    off: u64,
    nodes: u64,
}

/// The sites as the controller reports them (`Action::Sites`); none when
/// it cannot answer (the page still shows the offer).
async fn site_rows(p: &PortalState) -> Vec<SiteRow> {
    let Ok(Ok(sites)) = p
        .shared
        .ask(
            crate::auth::Principal::anonymous(),
            crate::ctl::Action::Sites,
        )
        .await
        .map(|(_, r)| r.sites())
    else {
        return Vec::new();
    };
    sites
        .sites
        .into_iter()
        .map(|s| SiteRow {
            cleanest: s.forecast_g_per_kwh.as_ref().and_then(|f| {
                f.iter()
                    .enumerate()
                    .map(|(h, g)| (*g, h))
                    .min_by(|a, b| a.0.total_cmp(&b.0))
            }),
            name: s.name,
            intensity: s.intensity_g_per_kwh,
            off: s.nodes_powered_down.into(),
            nodes: s.nodes.into(),
        })
        .collect()
}

impl Home<'_> {
    fn mode_key(&self, mode: &str) -> &'static str {
        match mode {
            "playground" => "mode.playground",
            "fast-lane" => "mode.fast-lane",
            _ => "mode.large-scale",
        }
    }
}

async fn home(State(p): State<PortalState>, MaybeSigned(s): MaybeSigned) -> Response {
    match crate::api::offer_of(&p.shared).await {
        Ok(offer) => page(&Home {
            c: chrome(&p, s.as_ref()),
            offer,
            sites: site_rows(&p).await,
        }),
        Err(e) => failure(
            &p,
            s.as_ref(),
            Failure {
                status: e.status,
                code: e.code.to_string(),
                message: e.message,
            },
            "/",
        ),
    }
}

impl super::Portal {
    async fn requests(&self, s: &Signed) -> Result<Vec<t::AccessRequest>, Failure> {
        let page: t::Page<t::AccessRequest> = self
            .api(&s.token, Method::GET, "/api/v1/requests", NO_BODY)
            .await?;
        Ok(page.items)
    }

    async fn calls(&self, s: &Signed) -> Result<Vec<t::Call>, Failure> {
        let page: t::Page<t::Call> = self
            .api(&s.token, Method::GET, "/api/v1/calls", NO_BODY)
            .await?;
        Ok(page.items)
    }
}

fn invalid(field: &str, message: &str) -> Failure {
    Failure {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_request".into(),
        message: format!("{field}: {message}"),
    }
}

/// Splits a command line into words as a POSIX shell does for quoting
/// (no expansion): spaces separate words, `'...'` keeps everything,
/// `"..."` keeps all but `\"` and `\\`, a backslash outside quotes keeps
/// the next character.
pub fn words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = line.chars();
    while let Some(ch) = it.next() {
        match ch {
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("a ' is not closed"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("a \" is not closed"),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("a \" is not closed"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match it.next() {
                    Some(x) => cur.push(x),
                    None => return Err("a \\ ends the line"),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The form's numbers, or the refusal naming the field.
fn number(form: &HashMap<String, String>, field: &str) -> Result<f64, Failure> {
    let raw = form.get(field).map(|v| v.trim()).unwrap_or("");
    raw.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid(field, "a number is needed"))
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn a_command_line_is_split_as_a_shell_quotes_it() {
        assert_eq!(
            words("sh -c 'echo a; sleep 1'").unwrap(),
            ["sh", "-c", "echo a; sleep 1"]
        );
        assert_eq!(
            words(r#"  echo "say \"hi\" \n"  it\ s ''"#).unwrap(),
            ["echo", r#"say "hi" \n"#, "it s", ""]
        );
        assert!(words("").unwrap().is_empty());
        assert_eq!(words("echo 'open").unwrap_err(), "a ' is not closed");
        assert_eq!(words("echo \"open").unwrap_err(), "a \" is not closed");
    }
}
