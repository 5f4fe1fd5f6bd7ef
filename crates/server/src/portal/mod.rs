//! The web portal at `/`: server-rendered pages (askama templates in
//! `crates/server/templates/`, words in `crates/server/portal-en.txt`)
//! over the same API as every other client. A page calls the API in
//! process with the session's token ([`Portal::api`]), so the portal
//! decides nothing the API does not: who may do what, validation and
//! errors are the API's, and the portal only words them, next to the
//! field they name.
//!
//! Sessions live in memory (a restart signs everyone out), in an
//! `HttpOnly`, `Secure`, `SameSite=Lax` cookie; every form carries the
//! session's CSRF token and every POST must come from this origin; pages
//! are sent with a content security policy that allows no inline script
//! or style.

mod catalog;
mod i18n;
mod oidc;
mod pages;
mod proxy;

pub use oidc::OidcConfig;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use tower::ServiceExt;

use crate::state::Shared;
pub use i18n::Words;

/// How long a session lasts without use.
const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// Most sessions held at once: past it, the oldest session of the user
/// who holds the most goes (a flood evicts only the flooder's own).
const MAX_SESSIONS: usize = 10_000;
/// Most sessions of one user, all its tokens together (its own oldest go
/// first: one user signing in in a loop, with as many tokens as it likes,
/// cannot push other users' sessions out).
const MAX_SESSIONS_PER_USER: usize = 16;
/// The session cookie's name.
const COOKIE: &str = crate::auth::PORTAL_COOKIE;

/// A signed-in browser.
#[derive(Clone)]
struct Session {
    /// The API token it acts with.
    token: String,
    /// Every form of this session carries it.
    csrf: String,
    last: Instant,
    /// The token made for this session at an OpenID Connect sign-in
    /// (revoked at sign-out).
    minted: Option<i64>,
    /// The user it signed in (0: unknown).
    user: i64,
}

/// The portal's state: the server's, the API router it calls, sessions.
pub struct Portal {
    shared: Arc<Shared>,
    api: Router,
    sessions: Mutex<HashMap<String, Session>>,
    pub words: Words,
    oidc: Option<oidc::Oidc>,
}

type PortalState = Arc<Portal>;

/// No request body (`api(.., NO_BODY)`).
const NO_BODY: Option<&()> = None;

/// What went wrong with an API call, as the API said it.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
}

impl Failure {
    /// The field a validation message names (`gpus: must be ...`).
    pub fn field(&self) -> Option<&str> {
        if self.status != StatusCode::UNPROCESSABLE_ENTITY {
            return None;
        }
        let m = self.message.strip_prefix("body: ").unwrap_or(&self.message);
        let f = m.split(':').next()?;
        (!f.is_empty() && f.len() < 40 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
            .then_some(f)
    }
}

impl Portal {
    pub fn new(shared: Arc<Shared>, api: Router, oidc: Option<OidcConfig>) -> Portal {
        Portal {
            shared,
            api,
            sessions: Mutex::new(HashMap::new()),
            words: Words::english(),
            oidc: oidc.map(oidc::Oidc::new),
        }
    }

    /// Sends one request to the API in process as `token`: its status and
    /// body (at most `limit` bytes).
    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<String>,
        limit: usize,
    ) -> Result<(StatusCode, axum::body::Bytes), Failure> {
        let body = body.map(|b| (Body::from(b), "application/json"));
        self.send_raw(token, method, path, body, limit).await
    }

    /// [`Portal::send`] with a body of any type.
    async fn send_raw(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<(Body, &'static str)>,
        limit: usize,
    ) -> Result<(StatusCode, axum::body::Bytes), Failure> {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some((b, kind)) => {
                req = req.header(header::CONTENT_TYPE, kind);
                b
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(|e| Failure {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_request".into(),
            message: format!("not a valid address: {e}"),
        })?;
        let res = self
            .api
            .clone()
            .oneshot(req)
            .await
            .expect("the router never fails");
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), limit)
            .await
            .map_err(|e| Failure {
                status: StatusCode::BAD_GATEWAY,
                code: "unreadable".into(),
                message: e.to_string(),
            })?;
        Ok((status, bytes))
    }

    /// Sends raw bytes to the API (an upload) or reads raw bytes from it
    /// (a download, at most `limit`): the answer's bytes, or the API's
    /// refusal.
    pub async fn api_bytes(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<axum::body::Bytes>,
        limit: usize,
    ) -> Result<axum::body::Bytes, Failure> {
        let body = body.map(|b| (Body::from(b), "application/octet-stream"));
        let (status, bytes) = self.send_raw(token, method, path, body, limit).await?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        Ok(bytes)
    }

    /// Calls the API in process as `token` and reads its JSON answer.
    pub async fn api<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, Failure> {
        let body = match body.map(serde_json::to_string).transpose() {
            Ok(b) => b,
            Err(e) => {
                return Err(Failure {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_request".into(),
                    message: e.to_string(),
                });
            }
        };
        let (status, bytes) = self.send(token, method, path, body, 16 << 20).await?;
        if !status.is_success() {
            return Err(refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| Failure {
            status: StatusCode::BAD_GATEWAY,
            code: "unreadable".into(),
            message: e.to_string(),
        })
    }

    /// A text answer of the API (a job's output from an offset).
    pub async fn api_text(&self, token: &str, path: &str) -> Result<String, Failure> {
        let (status, bytes) = self.send(token, Method::GET, path, None, 1 << 20).await?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() {
            return Err(Failure {
                status,
                code: "error".into(),
                message: text,
            });
        }
        Ok(text)
    }

    fn open_session(&self, token: String, minted: Option<i64>) -> (String, String) {
        let id = crate::auth::new_token();
        let csrf = crate::auth::new_token();
        let user = self.shared.principal(&token).map_or(0, |p| p.user_id);
        let mut m = self.sessions.lock().expect("sessions");
        let now = Instant::now();
        m.retain(|_, s| now.duration_since(s.last) < SESSION_IDLE);
        let mut own: Vec<(Instant, String)> = m
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (s.last, k.clone()))
            .collect();
        if own.len() >= MAX_SESSIONS_PER_USER {
            own.sort();
            for (_, k) in &own[..=own.len() - MAX_SESSIONS_PER_USER] {
                m.remove(k);
            }
        }
        if m.len() >= MAX_SESSIONS {
            // the user who holds the most sessions loses its oldest
            let mut held: HashMap<i64, usize> = HashMap::new();
            for s in m.values() {
                *held.entry(s.user).or_default() += 1;
            }
            let most = held
                .into_iter()
                .max_by_key(|&(u, n)| (n, u == user))
                .map(|(u, _)| u);
            if let Some(oldest) = m
                .iter()
                .filter(|(_, s)| Some(s.user) == most)
                .min_by_key(|(_, s)| s.last)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            id.clone(),
            Session {
                token,
                csrf: csrf.clone(),
                last: now,
                minted,
                user,
            },
        );
        (id, csrf)
    }

    fn session(&self, id: &str) -> Option<Session> {
        let mut m = self.sessions.lock().expect("sessions");
        let s = m.get_mut(id)?;
        let now = Instant::now();
        if now.duration_since(s.last) >= SESSION_IDLE {
            m.remove(id);
            return None;
        }
        s.last = now;
        Some(s.clone())
    }

    /// Ends a session; the token made for it, if any, is returned to be
    /// revoked.
    fn close_session(&self, id: &str) -> Option<i64> {
        self.sessions.lock().expect("sessions").remove(id)?.minted
    }
}

/// An API refusal: its status, and its code and message where its body
/// says them.
fn refusal(status: StatusCode, bytes: &[u8]) -> Failure {
    let e: gigafab_api::Error =
        serde_json::from_slice(bytes).unwrap_or_else(|_| gigafab_api::Error {
            error: "error".into(),
            message: String::from_utf8_lossy(bytes).into_owned(),
        });
    Failure {
        status,
        code: e.error,
        message: e.message,
    }
}

/// The session cookie of a request, if any.
fn cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    cookie_named(headers, COOKIE)
}

/// The value of cookie `name`.
fn cookie_named(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// The signed-in caller of a page: its session and who it is. A page that
/// needs one sends a browser without one to the sign-in page.
pub struct Signed {
    pub token: String,
    pub csrf: String,
    pub who: crate::auth::Principal,
}

/// A page that needs a session and has none (or an expired one).
pub struct NeedsSignIn {
    expired: bool,
}

impl IntoResponse for NeedsSignIn {
    fn into_response(self) -> Response {
        let to = if self.expired {
            "/login?expired=1"
        } else {
            "/login"
        };
        Redirect::to(to).into_response()
    }
}

impl FromRequestParts<PortalState> for Signed {
    type Rejection = NeedsSignIn;
    async fn from_request_parts(parts: &mut Parts, p: &PortalState) -> Result<Signed, NeedsSignIn> {
        let id = cookie(&parts.headers).ok_or(NeedsSignIn { expired: false })?;
        let s = p.session(&id).ok_or(NeedsSignIn { expired: true })?;
        // the token may have been revoked or its user disabled since
        let who = p.shared.principal(&s.token).ok_or_else(|| {
            p.close_session(&id);
            NeedsSignIn { expired: true }
        })?;
        Ok(Signed {
            token: s.token,
            csrf: s.csrf,
            who,
        })
    }
}

/// The caller of a public page: signed in or not.
pub struct MaybeSigned(pub Option<Signed>);

impl FromRequestParts<PortalState> for MaybeSigned {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        p: &PortalState,
    ) -> Result<MaybeSigned, std::convert::Infallible> {
        Ok(MaybeSigned(Signed::from_request_parts(parts, p).await.ok()))
    }
}

/// Whether a form carries this session's CSRF token: the check every
/// POST handler makes first (compared in constant time).
pub fn form_ok(signed: &Signed, csrf: &str) -> bool {
    same(csrf, &signed.csrf)
}

/// Two secrets compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |x, (p, q)| x | (p ^ q)) == 0
}

/// Refuses a POST whose `Origin` (or, without one, `Referer`) is another
/// site's: a second line behind the CSRF token and the SameSite cookie.
async fn same_origin(req: Request, next: axum::middleware::Next) -> Response {
    if req.method() == Method::POST {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let from = req
            .headers()
            .get(header::ORIGIN)
            .or_else(|| req.headers().get(header::REFERER))
            .and_then(|v| v.to_str().ok());
        if let Some(from) = from {
            let rest = from
                .strip_prefix("http://")
                .or_else(|| from.strip_prefix("https://"))
                .unwrap_or("");
            let origin_host = rest.split('/').next().unwrap_or("");
            if origin_host != host {
                return (StatusCode::FORBIDDEN, "cross-origin form refused").into_response();
            }
        }
    }
    next.run(req).await
}

/// The content security policy and the other headers of every page.
async fn security_headers(req: Request, next: axum::middleware::Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A rendered page.
pub fn page(t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!("portal: a template failed: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be made",
            )
                .into_response()
        }
    }
}

/// The portal's routes (pages, forms, its stylesheet and script).
pub fn router(shared: Arc<Shared>, api: Router, oidc: Option<OidcConfig>) -> Router {
    let state = Arc::new(Portal::new(shared, api, oidc));
    // sessions are the apps' own pages: none of the portal's headers
    let sessions = Router::new()
        .route("/sessions/{id}", axum::routing::any(proxy::session))
        .route("/sessions/{id}/", axum::routing::any(proxy::session))
        .route("/sessions/{id}/{*rest}", axum::routing::any(proxy::session))
        .with_state(state.clone());
    pages::router()
        .merge(catalog::router())
        .layer(axum::middleware::from_fn(same_origin))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
        .merge(sessions)
}
