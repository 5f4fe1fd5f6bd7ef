//! The fleet: nodes, accelerators, drains (the controller's).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};

use super::{ApiResult, AppState, Caller, Route, reply};
use crate::ctl::Action;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/fleet",
        who: "any token",
        summary: "Nodes and accelerators",
        operation_id: "get_fleet",
        body: None,
        answer: None,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/fleet/nodes/{name}/drain",
        who: "admin, operator",
        summary: "Drain a node",
        operation_id: "drain_node",
        body: None,
        answer: None,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/fleet/nodes/{name}/resume",
        who: "admin, operator",
        summary: "Resume a drained node",
        operation_id: "resume_node",
        body: None,
        answer: None,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/fleet/nodes/{name}/drain", post(drain))
        .route("/api/v1/fleet/nodes/{name}/resume", post(resume))
}

async fn fleet(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(reply(s.ask(p, Action::Fleet).await?))
}

async fn drain(State(s): State<AppState>, Caller(p): Caller, Path(n): Path<String>) -> ApiResult {
    Ok(reply(s.ask(p, Action::Drain(n, true)).await?))
}

async fn resume(State(s): State<AppState>, Caller(p): Caller, Path(n): Path<String>) -> ApiResult {
    Ok(reply(s.ask(p, Action::Drain(n, false)).await?))
}
