//! Allocations and their use: commands to the controller, which owns
//! them (the scheduler reads them).

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;

use super::{Answer, ApiResult, AppState, Body_, Caller, Route, parse_id, reply};
use crate::ctl::Action;
use crate::model::AllocReq;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/api/v1/allocations",
        who: "admin",
        summary: "Grant an allocation {org, gpu_hours, days?, valid_from?, qos_priority?, name?}",
        operation_id: "create_allocation",
        body: Some("CreateAllocation"),
        status: 201,
        answer: Answer::Json("Allocation"),
        replay: true,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/allocations",
        who: "any token",
        summary: "List allocations with use so far",
        operation_id: "list_allocations",
        body: None,
        status: 200,
        answer: Answer::Json("AllocationPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/allocations/{id}",
        who: "any token",
        summary: "One allocation",
        operation_id: "get_allocation",
        body: None,
        status: 200,
        answer: Answer::Json("Allocation"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/usage",
        who: "any token",
        summary: "Use per allocation",
        operation_id: "get_usage",
        body: None,
        status: 200,
        answer: Answer::Json("Usage"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/allocations",
            axum::routing::post(create_alloc).get(list_allocs),
        )
        .route("/api/v1/allocations/{id}", get(get_alloc))
        .route("/api/v1/usage", get(usage))
}

/// Grants an allocation; with an `Idempotency-Key`, a retry gets the
/// allocation its first try made.
async fn create_alloc(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: axum::http::HeaderMap,
    Body_(b): Body_<AllocReq>,
) -> ApiResult {
    use crate::store::idempotency::Kind;
    let key = super::idempotency_key(&headers)?;
    if let Some(id) = super::replayed(&s, &p, key.as_deref(), Kind::Allocation).await? {
        let (_, v) = s
            .ask(p, Action::GetAlloc(gigafab_api::AllocationId(id)))
            .await?;
        return Ok(super::replay(axum::response::IntoResponse::into_response(
            axum::Json(v.allocation()?),
        )));
    }
    let action = super::keyed(s.grant(&p, b)?, key);
    Ok(reply(s.ask(p, action).await?))
}

async fn list_allocs(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(reply(s.ask(p, Action::ListAllocs).await?))
}

async fn usage(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(reply(s.ask(p, Action::Usage).await?))
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
