//! The server itself: liveness, this API's document, the caller, metrics.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

use super::{Answer, AppState, Caller, Route};
use crate::ctl::Action;
use crate::error::ApiError;
use crate::store;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/health",
        who: "anyone",
        summary: "Liveness and store kind",
        operation_id: "health",
        body: None,
        status: 200,
        answer: Answer::Json("Health"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/openapi.json",
        who: "anyone",
        summary: "This document",
        operation_id: "openapi",
        body: None,
        status: 200,
        answer: Answer::Json("OpenApiDocument"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/whoami",
        who: "any token",
        summary: "The caller",
        operation_id: "whoami",
        body: None,
        status: 200,
        answer: Answer::Json("WhoAmI"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/metrics",
        who: "admin, operator",
        summary: "Prometheus metrics (text exposition format)",
        operation_id: "metrics",
        body: None,
        status: 200,
        answer: Answer::Text("application/openmetrics-text"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/whoami", get(whoami))
        .route("/metrics", get(metrics))
}

async fn openapi() -> Json<Value> {
    Json(super::openapi_doc())
}

async fn health(State(s): State<AppState>) -> Response {
    let version = env!("CARGO_PKG_VERSION").to_string();
    if !s.controller_alive.load(std::sync::atomic::Ordering::SeqCst) {
        let h = gigafab_api::Health {
            status: gigafab_api::HealthStatus::ControllerStopped,
            version,
            store: None,
            scheduler: None,
        };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(h)).into_response();
    }
    let st = s.stats.lock().map(|x| x.clone()).unwrap_or_default();
    let last = st.recent_passes.back().copied();
    Json(gigafab_api::Health {
        status: gigafab_api::HealthStatus::Ok,
        version,
        store: Some(s.store.kind.as_str().to_string()),
        scheduler: Some(gigafab_api::LoopHealth {
            passes: st.passes,
            commits: st.commits,
            queued: last.map(|l| l.0 as u64),
            running: last.map(|l| l.1 as u64),
            last_pass_us: last.map(|l| l.2),
            last_commit_us: st.recent_commits.back().map(|c| c.1),
        }),
    })
    .into_response()
}

async fn whoami(State(s): State<AppState>, Caller(p): Caller) -> Json<gigafab_api::WhoAmI> {
    let org = match p.org_id {
        Some(o) => store::tenancy::org_name(&s.store.pool, o)
            .await
            .ok()
            .flatten(),
        None => None,
    };
    Json(gigafab_api::WhoAmI {
        id: gigafab_api::UserId(p.user_id),
        user: p.name.clone(),
        role: p.role.api(),
        org,
    })
}

/// `GET /metrics`: Prometheus text format (admin, operator token).
async fn metrics(State(s): State<AppState>, Caller(who): Caller) -> Result<Response, ApiError> {
    let (_, v) = s.ask(who, Action::Metrics).await?;
    let text = v.metrics()?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
