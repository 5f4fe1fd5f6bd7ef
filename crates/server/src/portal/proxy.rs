//! `/sessions/{id}/...`: the way into an interactive session. The caller
//! is the portal's signed-in user (its cookie) or a client with its API
//! token (`Authorization: Bearer`); only the session's own user gets
//! through, to [`crate::sessions::proxy::forward`]. Anyone else is told
//! the session does not exist; its user, once it ended, that it ended.
//!
//! A request that changes something (not GET, HEAD or OPTIONS) and every
//! WebSocket upgrade must come from this origin when it says where it
//! comes from (`Origin`): a page of another site cannot drive a session
//! with the user's cookie.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{Portal, cookie};
use crate::auth::Principal;

/// The caller of a proxied request, if signed in.
fn caller(p: &Portal, h: &HeaderMap) -> Option<Principal> {
    if let Some(id) = cookie(h)
        && let Some(s) = p.session(&id)
        && let Some(who) = p.shared.principal(&s.token)
    {
        return Some(who);
    }
    let bearer = h
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    p.shared.principal(bearer.trim())
}

/// Whether `h` says the request comes from another origin than its `Host`.
fn cross_origin(h: &HeaderMap) -> bool {
    // the browser's word: another site, or another origin of this site
    // (another port)
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && matches!(site, "cross-site" | "same-site")
    {
        return true;
    }
    let host = h
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match h.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(o) => {
            let rest = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .unwrap_or("");
            rest.split('/').next().unwrap_or("") != host
        }
    }
}

fn gone(status: StatusCode, text: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], text).into_response()
}

pub(super) async fn session(State(p): State<Arc<Portal>>, req: Request) -> Response {
    // `/sessions/{id}` or `/sessions/{id}/...`
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/sessions/").unwrap_or("");
    let (raw, tail) = rest
        .split_once('/')
        .map_or((rest, None), |(a, b)| (a, Some(b)));
    let Some(id) = raw.parse::<i64>().ok().filter(|&i| i > 0) else {
        return gone(StatusCode::NOT_FOUND, "no such session".into());
    };
    let Some(who) = caller(&p, req.headers()) else {
        if req.method() == Method::GET {
            return Redirect::to("/login").into_response();
        }
        return gone(
            StatusCode::UNAUTHORIZED,
            "sign in to the portal first".into(),
        );
    };
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if (changes || crate::sessions::proxy::asks_upgrade(req.headers()))
        && cross_origin(req.headers())
    {
        return gone(StatusCode::FORBIDDEN, "cross-origin request refused".into());
    }
    let s = &p.shared;
    let live = s.sessions.live(id).filter(|l| l.row.user_id == who.user_id);
    let Some(l) = live else {
        // ended (its user is told so) or never the caller's
        return match crate::store::sessions::get(&s.store.pool, id).await {
            Ok(Some(r)) if r.user_id == who.user_id => gone(
                StatusCode::GONE,
                format!(
                    "session {id} has ended: {}",
                    r.ended_reason.unwrap_or_else(|| "its job ended".into())
                ),
            ),
            _ => gone(StatusCode::NOT_FOUND, format!("session {id} not found")),
        };
    };
    if tail.is_none() {
        return Redirect::to(&format!("/sessions/{id}/")).into_response();
    }
    let reach = match l.reach() {
        Some(r) if l.ready.load(std::sync::atomic::Ordering::Acquire) => r,
        _ => {
            let mut r = gone(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("session {id} is starting; try again in a few seconds"),
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("3"),
            );
            return r;
        }
    };
    crate::sessions::proxy::forward(l, reach, req, s.clock.clone()).await
}
