//! The HTTP API (`/api/v1`): routing, auth, body parsing, and the reads
//! that go straight to the store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::auth::Principal;
use crate::ctl::{Action, Shared};
use crate::error::ApiError;
use crate::model::{JobEvent, JobRow, TERMINAL};
use crate::store;

/// Largest request body, bytes.
pub const MAX_BODY: usize = 1 << 20;

type AppState = Arc<Shared>;
type ApiResult = Result<Response, ApiError>;

/// Every route: (method, path, who, summary). The OpenAPI document is
/// built from this table; a test checks that each one is routed.
pub const ROUTES: &[(&str, &str, &str, &str)] = &[
    ("get", "/api/v1/health", "anyone", "Liveness and store kind"),
    ("get", "/api/v1/openapi.json", "anyone", "This document"),
    ("get", "/api/v1/whoami", "any token", "The caller"),
    (
        "post",
        "/api/v1/orgs",
        "admin",
        "Create an organisation {name, category}",
    ),
    ("get", "/api/v1/orgs", "any token", "List organisations"),
    (
        "post",
        "/api/v1/projects",
        "admin, owner",
        "Create a project {org, name}",
    ),
    ("get", "/api/v1/projects", "any token", "List projects"),
    (
        "post",
        "/api/v1/users",
        "admin, owner",
        "Create a user {name, org?, role?}; answers its token once",
    ),
    (
        "get",
        "/api/v1/users",
        "admin, operator, owner",
        "List users",
    ),
    (
        "post",
        "/api/v1/tokens",
        "any token",
        "Create a token {user?, expires_in_days?=90}; answers it once, with its id and expiry",
    ),
    (
        "get",
        "/api/v1/tokens",
        "any token",
        "List live tokens (yours; an owner: the organisation's; an admin: all), never their secrets",
    ),
    (
        "post",
        "/api/v1/users/{id}/disable",
        "admin, owner of the user's organisation",
        "Disable a user: every token revoked, no new one",
    ),
    (
        "delete",
        "/api/v1/tokens/{id}",
        "admin, the token's user, an owner of the user's organisation",
        "Revoke a token",
    ),
    (
        "post",
        "/api/v1/allocations",
        "admin",
        "Grant an allocation {org, gpu_hours, days?, valid_from?, qos_priority?, name?}",
    ),
    (
        "get",
        "/api/v1/allocations",
        "any token",
        "List allocations with use so far",
    ),
    (
        "get",
        "/api/v1/allocations/{id}",
        "any token",
        "One allocation",
    ),
    (
        "post",
        "/api/v1/jobs",
        "admin, owner, member",
        "Submit a job {allocation, gpus, command, ...}",
    ),
    (
        "get",
        "/api/v1/jobs",
        "any token",
        "List jobs (?state, allocation, org, user, limit, after)",
    ),
    (
        "get",
        "/api/v1/jobs/{id}",
        "any token",
        "One job with its events",
    ),
    (
        "delete",
        "/api/v1/jobs/{id}",
        "admin, operator, owner, the job's user",
        "Cancel a job",
    ),
    (
        "get",
        "/api/v1/jobs/{id}/logs",
        "any token",
        "A job's output (?stream=stdout|stderr, offset, follow)",
    ),
    (
        "get",
        "/api/v1/fleet",
        "any token",
        "Nodes and accelerators",
    ),
    (
        "post",
        "/api/v1/fleet/nodes/{name}/drain",
        "admin, operator",
        "Drain a node",
    ),
    (
        "post",
        "/api/v1/fleet/nodes/{name}/resume",
        "admin, operator",
        "Resume a drained node",
    ),
    ("get", "/api/v1/usage", "any token", "Use per allocation"),
    (
        "get",
        "/metrics",
        "admin, operator",
        "Prometheus metrics (text exposition format)",
    ),
    (
        "get",
        "/api/v1/audit",
        "admin, operator",
        "Audit log (?limit, after)",
    ),
];

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/api/v1/orgs", post(create_org).get(list_orgs))
        .route("/api/v1/projects", post(create_project).get(list_projects))
        .route("/api/v1/users", post(create_user).get(list_users))
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/users/{id}/disable", post(disable_user))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/allocations", post(create_alloc).get(list_allocs))
        .route("/api/v1/allocations/{id}", get(get_alloc))
        .route("/api/v1/jobs", post(submit).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/v1/jobs/{id}/logs", get(job_logs))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/fleet/nodes/{name}/drain", post(drain))
        .route("/api/v1/fleet/nodes/{name}/resume", post(resume))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/audit", get(audit))
        .route("/metrics", get(metrics))
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
        state
            .principal(token)
            .map(Caller)
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
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

fn reply((status, v): (StatusCode, Value)) -> Response {
    (status, Json(v)).into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    if !s.controller_alive.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "controller_stopped", "version": env!("CARGO_PKG_VERSION")})),
        )
            .into_response();
    }
    let st = s.stats.lock().map(|x| x.clone()).unwrap_or_default();
    let last = st.recent_passes.back().copied();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "store": s.store.kind.as_str(),
        "scheduler": {
            "passes": st.passes,
            "commits": st.commits,
            "queued": last.map(|l| l.0),
            "running": last.map(|l| l.1),
            "last_pass_us": last.map(|l| l.2),
            "last_commit_us": st.recent_commits.back().map(|c| c.1),
        },
    }))
    .into_response()
}

/// The operationId of a route (stable: clients generate names from it).
pub fn operation_id(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("get", "/api/v1/health") => "health",
        ("get", "/api/v1/openapi.json") => "openapi",
        ("get", "/api/v1/whoami") => "whoami",
        ("post", "/api/v1/orgs") => "create_org",
        ("get", "/api/v1/orgs") => "list_orgs",
        ("post", "/api/v1/projects") => "create_project",
        ("get", "/api/v1/projects") => "list_projects",
        ("post", "/api/v1/users") => "create_user",
        ("get", "/api/v1/users") => "list_users",
        ("post", "/api/v1/tokens") => "create_token",
        ("get", "/api/v1/tokens") => "list_tokens",
        ("post", "/api/v1/users/{id}/disable") => "disable_user",
        ("delete", "/api/v1/tokens/{id}") => "revoke_token",
        ("post", "/api/v1/allocations") => "create_allocation",
        ("get", "/api/v1/allocations") => "list_allocations",
        ("get", "/api/v1/allocations/{id}") => "get_allocation",
        ("post", "/api/v1/jobs") => "submit_job",
        ("get", "/api/v1/jobs") => "list_jobs",
        ("get", "/api/v1/jobs/{id}") => "get_job",
        ("delete", "/api/v1/jobs/{id}") => "cancel_job",
        ("get", "/api/v1/jobs/{id}/logs") => "job_logs",
        ("get", "/api/v1/fleet") => "get_fleet",
        ("post", "/api/v1/fleet/nodes/{name}/drain") => "drain_node",
        ("post", "/api/v1/fleet/nodes/{name}/resume") => "resume_node",
        ("get", "/api/v1/usage") => "get_usage",
        ("get", "/metrics") => "metrics",
        ("get", "/api/v1/audit") => "list_audit",
        _ => "",
    }
}

async fn openapi() -> Json<Value> {
    Json(openapi_doc())
}

/// The OpenAPI 3.1 description of [`ROUTES`]: paths, operationIds, path
/// and query parameters, and request, answer and error schemas, all
/// generated from the API contract's types (`gigafab_api`).
pub fn openapi_doc() -> Value {
    use gigafab_api as t;
    let schema = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
    let mut paths = serde_json::Map::new();
    for &(method, path, who, summary) in ROUTES {
        let mut params = Vec::new();
        for seg in path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                params.push(json!({"name": name, "in": "path", "required": true,
                    "schema": {"type": if name == "id" {"integer"} else {"string"}}}));
            }
        }
        params.extend(match (method, path) {
            ("get", "/api/v1/jobs") => t::query_params::<t::ListJobs>(),
            ("get", "/api/v1/audit") => t::query_params::<t::ListPage>(),
            ("get", "/api/v1/jobs/{id}/logs") => t::query_params::<t::LogsQuery>(),
            _ => Vec::new(),
        });
        let public = who == "anyone";
        let mut opd = json!({
            "operationId": operation_id(method, path),
            "summary": summary,
            "description": format!("Allowed: {who}."),
            "parameters": params,
            "responses": {
                "200": {"description": "OK"},
                "201": {"description": "Created"},
                "4XX": {"description": "Error", "content": {"application/json": {"schema": schema("Error")}}},
                "5XX": {"description": "The store or the engine failed", "content": {"application/json": {"schema": schema("Error")}}},
            },
        });
        if !public {
            opd["security"] = json!([{"bearer": []}]);
        }
        if method == "post" {
            let body = match path {
                "/api/v1/jobs" => Some("SubmitJob"),
                "/api/v1/allocations" => Some("CreateAllocation"),
                "/api/v1/orgs" => Some("CreateOrg"),
                "/api/v1/projects" => Some("CreateProject"),
                "/api/v1/users" => Some("CreateUser"),
                "/api/v1/tokens" => Some("CreateToken"),
                _ => None,
            };
            if let Some(b) = body {
                opd["requestBody"] = json!({"required": true,
                    "content": {"application/json": {"schema": schema(b)}}});
            }
        }
        let answer = match (method, path) {
            ("post", "/api/v1/jobs")
            | ("get", "/api/v1/jobs/{id}")
            | ("delete", "/api/v1/jobs/{id}") => Some("Job"),
            ("get", "/api/v1/jobs") => Some("JobPage"),
            ("post", "/api/v1/allocations") | ("get", "/api/v1/allocations/{id}") => {
                Some("Allocation")
            }
            ("get", "/api/v1/allocations") => Some("AllocationPage"),
            ("post", "/api/v1/orgs") => Some("Org"),
            ("get", "/api/v1/orgs") => Some("OrgPage"),
            ("post", "/api/v1/projects") => Some("Project"),
            ("get", "/api/v1/projects") => Some("ProjectPage"),
            ("get", "/api/v1/users") => Some("UserPage"),
            ("get", "/api/v1/tokens") => Some("TokenPage"),
            ("get", "/api/v1/audit") => Some("AuditPage"),
            _ => None,
        };
        if let Some(a) = answer {
            let code = if method == "post" { "201" } else { "200" };
            opd["responses"][code]["content"] = json!({"application/json": {"schema": schema(a)}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = opd;
    }
    let schemas: serde_json::Map<String, Value> = t::schemas().into_iter().collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "gigafab control plane", "version": env!("CARGO_PKG_VERSION"),
                 "description": "See docs/api.md for the objects and error codes."},
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
    })
}

async fn whoami(State(s): State<AppState>, Caller(p): Caller) -> Json<Value> {
    let org = match p.org_id {
        Some(o) => store::tenancy::org_name(&s.store.pool, o)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    Json(json!({"id": p.user_id, "user": p.name, "role": p.role.as_str(), "org": org}))
}

macro_rules! ask {
    ($name:ident, $action:expr) => {
        async fn $name(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
            Ok(reply(s.ask(p, $action).await?))
        }
    };
    ($name:ident, $body:ty, $action:path) => {
        async fn $name(
            State(s): State<AppState>,
            Caller(p): Caller,
            Body_(b): Body_<$body>,
        ) -> ApiResult {
            Ok(reply(s.ask(p, $action(b)).await?))
        }
    };
}

ask!(list_orgs, Action::ListOrgs);
ask!(list_projects, Action::ListProjects);
ask!(list_users, Action::ListUsers);
ask!(list_allocs, Action::ListAllocs);
ask!(usage, Action::Usage);
ask!(fleet, Action::Fleet);
ask!(list_tokens, Action::ListTokens);

async fn disable_user(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "user_not_found")?;
    Ok(reply(
        s.ask(p, Action::DisableUser(gigafab_api::UserId(id)))
            .await?,
    ))
}

/// `GET /metrics`: Prometheus text format (admin, operator token).
async fn metrics(State(s): State<AppState>, Caller(who): Caller) -> Result<Response, ApiError> {
    let (_, v) = s.ask(who, Action::Metrics).await?;
    let text = v.as_str().unwrap_or_default().to_string();
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
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
ask!(create_org, crate::model::OrgReq, Action::CreateOrg);
ask!(
    create_project,
    crate::model::ProjectReq,
    Action::CreateProject
);
ask!(create_user, crate::model::UserReq, Action::CreateUser);
ask!(create_alloc, crate::model::AllocReq, Action::CreateAlloc);
async fn submit(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<crate::model::SubmitReq>,
) -> ApiResult {
    Ok(reply(s.ask(p, Action::Submit(Box::new(b))).await?))
}

async fn create_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    // the body is optional here
    let req = if body.is_empty() {
        crate::model::TokenReq::default()
    } else {
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
        parse_body(&body)?
    };
    Ok(reply(s.ask(p, Action::CreateToken(req)).await?))
}

fn parse_id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::not_found(what, format!("`{raw}` is not a valid id")))
}

async fn revoke_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "token_not_found")?;
    Ok(reply(
        s.ask(p, Action::RevokeToken(gigafab_api::TokenId(id)))
            .await?,
    ))
}

async fn get_alloc(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "allocation_not_found")?;
    Ok(reply(
        s.ask(p, Action::GetAlloc(gigafab_api::AllocationId(id)))
            .await?,
    ))
}

async fn drain(State(s): State<AppState>, Caller(p): Caller, Path(n): Path<String>) -> ApiResult {
    Ok(reply(s.ask(p, Action::Drain(n, true)).await?))
}

async fn resume(State(s): State<AppState>, Caller(p): Caller, Path(n): Path<String>) -> ApiResult {
    Ok(reply(s.ask(p, Action::Drain(n, false)).await?))
}

/// A job visible to the caller (404 for another organisation's).
async fn visible_job(s: &Shared, p: &Principal, id: i64) -> Result<JobRow, ApiError> {
    let job = match store::jobs::get(&s.store.pool, id).await? {
        Some(j) => j,
        None => {
            return Err(ApiError::not_found(
                "job_not_found",
                format!("job {id} not found"),
            ));
        }
    };
    if !p.sees_org(job.org_id) {
        return Err(ApiError::not_found(
            "job_not_found",
            format!("job {id} not found"),
        ));
    }
    Ok(job)
}

async fn get_job(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    let job = visible_job(&s, &p, id).await?;
    let events = store::jobs::events(&s.store.pool, id).await?;
    let mut v = job.view(s.clock.now_ms());
    v.events = Some(events.iter().map(JobEvent::view).collect());
    Ok(Json(v).into_response())
}

async fn cancel_job(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    match s
        .ask(p.clone(), Action::Cancel(gigafab_api::JobId(id)))
        .await
    {
        Ok(r) => Ok(reply(r)),
        Err(e) if e.code == "job_not_found" => {
            // not active: ended (409) or not there (404)
            let job = visible_job(&s, &p, id).await?;
            Err(ApiError::conflict(
                "job_finished",
                format!("job {id} has already ended ({})", job.state),
            ))
        }
        Err(e) => Err(e),
    }
}

use gigafab_api::ListJobs as JobsQuery;

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
fn page<T: serde::Serialize>(items: Vec<T>, last: Option<i64>, limit: i64) -> Response {
    let next = if items.len() as i64 == limit {
        last
    } else {
        None
    };
    // the typed page, serialized once (no JSON tree in between)
    Json(gigafab_api::Page { items, next }).into_response()
}

async fn list_jobs(
    State(s): State<AppState>,
    Caller(p): Caller,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_err)?;
    let limit = page_limit(q.limit)?;
    if let Some(st) = &q.state
        && !(st == "queued" || st == "running" || TERMINAL.contains(&st.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "state: `{st}` is not queued, running, completed, failed, timeout or cancelled"
        )));
    }
    let filter = store::jobs::JobFilter {
        org_id: (!p.global()).then(|| p.org_id.unwrap_or(-1)),
        state: q.state.clone(),
        allocation: q.allocation,
        org: q.org.clone(),
        user: q.user.clone(),
        before_id: q.after,
    };
    let rows = store::jobs::list(&s.store.pool, &filter, limit).await?;
    let now = s.clock.now_ms();
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in rows {
        match r {
            Ok(j) => {
                last = Some(j.id);
                items.push(gigafab_api::JobItem::Job(Box::new(j.view(now))));
            }
            Err((id, e)) => {
                // one damaged row must not hide everyone's jobs: it is
                // listed as unreadable, and logged
                tracing::error!("job {id:?}: unreadable row in the store: {e}");
                if let Some(id) = id {
                    last = Some(id);
                }
                items.push(gigafab_api::JobItem::Unreadable(
                    gigafab_api::UnreadableJob {
                        id: id.map(gigafab_api::JobId),
                        state: "unreadable".into(),
                        error: "store_damaged".into(),
                        message: format!("this job's row in the store cannot be read: {e}"),
                    },
                ));
            }
        }
    }
    Ok(page(items, last, limit))
}

use gigafab_api::ListPage as AuditQuery;

async fn audit(
    State(s): State<AppState>,
    Caller(p): Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_err)?;
    if !p.global() {
        return Err(ApiError::forbidden(
            "only an admin or operator reads the audit log",
        ));
    }
    let limit = page_limit(q.limit)?;
    let entries = store::audit::list(&s.store.pool, q.after, limit).await?;
    let last = entries.last().map(|e| e.id);
    Ok(page(entries, last, limit))
}

use gigafab_api::LogsQuery;

async fn job_logs(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_err)?;
    let id = parse_id(&id, "job_not_found")?;
    let job = visible_job(&s, &p, id).await?;
    let (out, err) = s.executor.log_paths(id);
    let path = match q.stream.as_deref() {
        None | Some("stdout") => out,
        Some("stderr") => err,
        Some(x) => {
            return Err(ApiError::invalid(format!(
                "stream: `{x}` is not stdout or stderr"
            )));
        }
    };
    let follow = q.follow.unwrap_or(false);
    let offset = q.offset.unwrap_or(0);
    let ended = TERMINAL.contains(&job.state.as_str());
    let st = LogState {
        shared: s.clone(),
        id,
        path,
        offset,
        file: None,
        follow: follow && !ended,
        done: false,
        idle_checks: 0,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        let chunk = st.next_chunk().await;
        chunk.map(|c| (Ok::<Bytes, std::io::Error>(c), st))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct LogState {
    shared: Arc<Shared>,
    id: i64,
    path: std::path::PathBuf,
    offset: u64,
    file: Option<tokio::fs::File>,
    follow: bool,
    done: bool,
    idle_checks: u32,
}

impl LogState {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.done {
                return None;
            }
            if self.file.is_none() {
                match tokio::fs::File::open(&self.path).await {
                    Ok(mut f) => {
                        if f.seek(std::io::SeekFrom::Start(self.offset)).await.is_err() {
                            return None;
                        }
                        self.file = Some(f);
                    }
                    Err(_) if self.follow => {}
                    Err(_) => return None,
                }
            }
            if let Some(f) = self.file.as_mut() {
                match f.read(&mut buf).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.offset += n as u64;
                        buf.truncate(n);
                        return Some(Bytes::from(buf));
                    }
                    Err(_) => return None,
                }
            }
            // at the end of what is written
            if !self.follow {
                return None;
            }
            self.idle_checks += 1;
            if self.idle_checks.is_multiple_of(2) && self.job_ended().await {
                // drain what the job wrote last, then stop
                self.follow = false;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn job_ended(&self) -> bool {
        match store::jobs::state(&self.shared.store.pool, self.id).await {
            Ok(Some(s)) => TERMINAL.contains(&s.as_str()),
            _ => true,
        }
    }
}
