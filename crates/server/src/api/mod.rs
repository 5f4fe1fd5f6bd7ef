//! The HTTP API (`/api/v1`): one module per resource, each with its
//! routes and handlers ([`meta`], [`tenancy`], [`allocs`], [`jobs`],
//! [`fleet`], [`audit`], [`access`]); here the shared parts: authentication, body
//! parsing, pages, errors as JSON, the access log and the OpenAPI document.

mod access;
mod allocs;
mod attach;
mod audit;
mod catalog;
mod endpoints;
mod files;
mod fleet;
mod jobs;
mod meta;
mod sessions;
mod tenancy;

pub(crate) use fleet::offer_of;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::Shared;

/// Largest request body, bytes.
pub const MAX_BODY: usize = 1 << 20;

type AppState = Arc<Shared>;
type ApiResult = Result<Response, ApiError>;

/// One route of the API: the router and the OpenAPI document are built
/// from the same lists, one per resource module.
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// Who may call it (`anyone`: no token).
    pub who: &'static str,
    pub summary: &'static str,
    /// Stable: clients generate names from it.
    pub operation_id: &'static str,
    /// The request body's schema (a name of `gigafab_api::schemas()`).
    pub body: Option<&'static str>,
    /// Its success status: 201 where it makes something, else 200.
    pub status: u16,
    /// What a success answers.
    pub answer: Answer,
    /// A retry with the same `Idempotency-Key` answers 200 with what the
    /// first try made (header `Idempotent-Replayed: true`).
    pub replay: bool,
    /// The query parameters.
    pub query: Option<fn() -> Vec<Value>>,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// JSON of this schema (a name of `gigafab_api::schemas()`, or
    /// `OpenApiDocument`).
    Json(&'static str),
    /// Text of this media type.
    Text(&'static str),
}

/// Every route, resource by resource. A test checks that each one is
/// routed, under a unique operationId.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    [
        meta::ROUTES,
        tenancy::ROUTES,
        allocs::ROUTES,
        jobs::ROUTES,
        fleet::ROUTES,
        audit::ROUTES,
        access::ROUTES,
        catalog::ROUTES,
        endpoints::ROUTES,
        sessions::ROUTES,
        attach::ROUTES,
        files::ROUTES,
    ]
    .into_iter()
    .flatten()
}

/// The router: each resource's routes, the error and access-log layers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(meta::router())
        .merge(tenancy::router())
        .merge(allocs::router())
        .merge(jobs::router())
        .merge(fleet::router())
        .merge(audit::router())
        .merge(access::router())
        .merge(catalog::router())
        .merge(endpoints::router())
        .merge(sessions::router())
        .merge(attach::router())
        .merge(files::router())
        .fallback(|| async {
            ApiError::not_found("not_found", "no such endpoint (see /api/v1/openapi.json)")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint (see /api/v1/openapi.json)",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access_log,
        ))
        .with_state(state)
}

/// The authenticated caller.
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let h = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>`"))?;
        let token = h
            .to_str()
            .ok()
            .and_then(|s| s.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| ApiError::unauthorized("expected `Authorization: Bearer <token>`"))?;
        let p = state
            .principal(token)
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))?;
        if !matches!(
            parts.method,
            axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
        ) {
            state.limits.check(&p)?;
        }
        Ok(Caller(p))
    }
}

/// The `Idempotency-Key` header of a creating request: 1 to 255 visible
/// ASCII characters, or none.
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_idempotency_key",
            "Idempotency-Key: 1 to 255 visible ASCII characters (a random UUID, say)",
        )
    };
    let k = v.to_str().map_err(|_| bad())?;
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(k.to_string()))
}

/// The id of the `kind` an earlier request of `who` with `key` made
/// (within a day), if any; a key that made something else is refused.
pub(crate) async fn replayed(
    s: &Shared,
    who: &Principal,
    key: Option<&str>,
    kind: crate::store::idempotency::Kind,
) -> Result<Option<i64>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    match crate::store::idempotency::get(&s.store.pool, who.user_id, key, s.clock.now()).await? {
        None => Ok(None),
        Some((k, id)) if k == kind.as_str() => Ok(Some(id)),
        Some((k, id)) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            format!("Idempotency-Key `{key}` made {k} {id}; use a new key for each request"),
        )),
    }
}

/// An answer replayed for a retry: 200, `Idempotent-Replayed: true`.
pub(crate) fn replay(mut r: Response) -> Response {
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        "idempotent-replayed",
        axum::http::HeaderValue::from_static("true"),
    );
    r
}

/// `action`, named by `key` where the request has one.
pub(crate) fn keyed(action: crate::ctl::Action, key: Option<String>) -> crate::ctl::Action {
    match key {
        Some(k) => crate::ctl::Action::Keyed(Box::new(action), k),
        None => action,
    }
}

/// A JSON body with API-style errors (415, 413, 400 with line and column,
/// 422 for a wrong or unknown field).
pub struct Body_<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body_<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &AppState) -> Result<Body_<T>, ApiError> {
        let json_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                let m = v.split(';').next().unwrap_or("").trim();
                m.eq_ignore_ascii_case("application/json")
            });
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text())
            }
        })?;
        parse_body(&bytes).map(Body_)
    }
}

/// An optional JSON body already read: `Content-Type: application/json`
/// required, then parsed as [`parse_body`] does.
pub(crate) fn json_body<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected `Content-Type: application/json`",
        ));
    }
    parse_body(body)
}

/// Parses a JSON body: syntax errors are `invalid_json` (400), wrong
/// fields `invalid_request` (422); both say where.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::invalid(format!("body: {e}")),
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("malformed JSON body: {e}"),
            ),
        }
    })
}

fn query_err(e: QueryRejection) -> ApiError {
    ApiError::invalid(format!("query: {}", e.body_text()))
}

/// The controller's answer: 201 for what it made, else 200; its typed
/// object as JSON (metrics are text, served by their own route).
fn reply((made, r): (crate::ctl::Made, crate::ctl::Reply)) -> Response {
    let status = match made {
        crate::ctl::Made::Created => StatusCode::CREATED,
        crate::ctl::Made::Found => StatusCode::OK,
    };
    (status, Json(r)).into_response()
}

/// The OpenAPI 3.1 description of [`ROUTES`]: paths, operationIds, path
/// and query parameters, and request, answer and error schemas, all
/// generated from the API contract's types (`gigafab_api`).
pub fn openapi_doc() -> Value {
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let error = |what: &str| json!({"description": what, "content": {"application/json": {"schema": schema("Error")}}});
    let mut paths = serde_json::Map::new();
    for r in routes() {
        let mut params = Vec::new();
        for seg in r.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name, "in": "path", "required": true,
                "schema": if name == "id" {
                    json!({"type": "integer", "format": "int64", "minimum": 1})
                } else {
                    json!({"type": "string"})
                }}));
            }
        }
        if let Some(q) = r.query {
            params.extend(q());
        }
        let content = match r.answer {
            Answer::Json(name) => json!({"application/json": {"schema": schema(name)}}),
            Answer::Text(media) => json!({media: {"schema": {"type": "string"}}}),
        };
        let mut responses = serde_json::Map::new();
        let what = if r.status == 201 { "Created" } else { "OK" };
        responses.insert(
            r.status.to_string(),
            json!({"description": what, "content": content}),
        );
        if r.replay {
            responses.insert(
                "200".into(),
                json!({"description": "A retry with the same Idempotency-Key: what the first try made",
                       "headers": {"Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}}},
                       "content": content}),
            );
        }
        if r.operation_id == "health" {
            // the controller stopped: the same object, status `controller_stopped`
            responses.insert(
                "503".into(),
                json!({"description": "The controller stopped; the server is exiting", "content": content}),
            );
        } else {
            responses.insert("5XX".into(), error("The store or the engine failed"));
        }
        responses.insert(
            "4XX".into(),
            error("The request was refused: see the error's code"),
        );
        let mut opd = json!({
            "operationId": r.operation_id,
            "summary": r.summary,
            "description": format!("Allowed: {}.", r.who),
            "parameters": params,
            "responses": responses,
            // public routes say so: no token
            "security": if r.who == "anyone" { json!([]) } else { json!([{"bearer": []}]) },
        });
        if let Some(b) = r.body {
            opd["requestBody"] = json!({"required": true,
                "content": {"application/json": {"schema": schema(b)}}});
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = opd;
    }
    let mut schemas: serde_json::Map<String, Value> = gigafab_api::schemas().into_iter().collect();
    schemas.insert(
        "OpenApiDocument".into(),
        json!({"type": "object", "description": "An OpenAPI 3.1 document (this one)",
               "required": ["openapi", "info", "paths"],
               "properties": {"openapi": {"type": "string"}, "info": {"type": "object"},
                              "paths": {"type": "object"}, "components": {"type": "object"}}}),
    );
    json!({
        "openapi": "3.1.0",
        "info": {"title": "gigafab control plane", "version": env!("CARGO_PKG_VERSION"),
                 "description": "See docs/api.md for the objects and error codes.",
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": "/", "description": "the server that answers this document"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

/// Every error answer is JSON (`{"error","message"}`), also those that axum
/// makes itself before a handler runs (a path that is not valid UTF-8, say).
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let body = axum::body::to_bytes(res.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let code = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    };
    ApiError::new(status, code, gigafab_core::time::excerpt(text.trim(), 300)).into_response()
}

/// Access log (target `gigafab::access`) and the request counter of
/// `/metrics`. Paths are logged without their query strings.
async fn access_log(
    State(s): State<AppState>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let t = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = json_errors(next.run(req).await).await;
    let status = res.status().as_u16();
    s.metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabel {
            method: method.to_string(),
            code: status.to_string(),
        })
        .inc();
    tracing::info!(
        target: "gigafab::access",
        method = %method,
        path = %path,
        status,
        ms = t.elapsed().as_secs_f64() * 1e3,
        "request"
    );
    res
}

fn parse_id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::not_found(what, format!("`{raw}` is not a valid id")))
}

/// The page size of a listing (default 100, at most 1000).
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit: must be within 1..=1000"));
    }
    Ok(limit)
}

/// A listing's answer: the items, and the cursor of the next page when
/// this one is full.
/// A 201 with its typed body.
fn created<T: serde::Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

/// An unpaged listing (every item the caller may see).
fn list<T: serde::Serialize>(items: Vec<T>) -> Response {
    Json(gigafab_api::Page { items, next: None }).into_response()
}

fn page<T: serde::Serialize>(items: Vec<T>, last: Option<i64>, limit: i64) -> Response {
    let next = if items.len() as i64 == limit {
        last
    } else {
        None
    };
    // the typed page, serialized once (no JSON tree in between)
    Json(gigafab_api::Page { items, next }).into_response()
}
