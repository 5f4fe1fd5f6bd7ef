//! Interactive sessions and their apps (docs/sessions.md): handlers on
//! `crate::sessions`; the sessions themselves are reached at
//! `/sessions/{id}/` (the portal's proxy).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Body_, Caller, Route, created, list, parse_id};
use crate::sessions;

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    operation_id: &'static str,
    body: Option<&'static str>,
    status: u16,
    answer: &'static str,
) -> Route {
    Route {
        method,
        path,
        who: "an organisation's owners and members (a session is its user's alone)",
        summary,
        operation_id,
        body,
        status,
        answer: Answer::Json(answer),
        replay: false,
        query: None,
    }
}

pub(super) const ROUTES: &[Route] = &[
    route(
        "get",
        "/api/v1/apps",
        "The apps sessions may run",
        "list_apps",
        None,
        200,
        "AppPage",
    ),
    route(
        "post",
        "/api/v1/sessions",
        "Start an interactive session {app, allocation, gpus?, time_limit_s?, idle_timeout_s?}",
        "start_session",
        Some("StartSession"),
        201,
        "Session",
    ),
    route(
        "get",
        "/api/v1/sessions",
        "The caller's sessions, newest first",
        "list_sessions",
        None,
        200,
        "SessionPage",
    ),
    route(
        "get",
        "/api/v1/sessions/{id}",
        "One of the caller's sessions",
        "get_session",
        None,
        200,
        "Session",
    ),
    route(
        "post",
        "/api/v1/sessions/{id}/extend",
        "Extend a session's time limit {by_s}, within the server's longest session and the allocation",
        "extend_session",
        Some("ExtendSession"),
        200,
        "Session",
    ),
    route(
        "post",
        "/api/v1/sessions/{id}/stop",
        "Stop a session (its job is cancelled)",
        "stop_session",
        None,
        200,
        "Session",
    ),
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/apps", get(list_apps))
        .route("/api/v1/sessions", post(start).get(list_sessions))
        .route("/api/v1/sessions/{id}", get(get_session))
        .route("/api/v1/sessions/{id}/extend", post(extend))
        .route("/api/v1/sessions/{id}/stop", post(stop))
}

async fn list_apps(State(s): State<AppState>, Caller(_): Caller) -> ApiResult {
    Ok(list(sessions::apps(&s)))
}

async fn start(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<gigafab_api::StartSession>,
) -> ApiResult {
    Ok(created(sessions::start(&s, &p, b).await?))
}

async fn list_sessions(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(sessions::list(&s, &p).await?))
}

async fn get_session(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "session_not_found")?;
    Ok(Json(sessions::get(&s, &p, id).await?).into_response())
}

async fn extend(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::ExtendSession>,
) -> ApiResult {
    let id = parse_id(&id, "session_not_found")?;
    Ok(Json(sessions::extend(&s, &p, id, b).await?).into_response())
}

async fn stop(State(s): State<AppState>, Caller(p): Caller, Path(id): Path<String>) -> ApiResult {
    let id = parse_id(&id, "session_not_found")?;
    Ok(Json(sessions::stop(&s, &p, id).await?).into_response())
}
