//! Access calls, requests, reviews and decisions: handlers on the store
//! ([`crate::access`]).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Body_, Caller, Route, created, list, parse_id};
use crate::access;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/api/v1/calls",
        who: "admin, operator",
        summary: "Open an access call {name, mode, categories, envelope_gpu_hours, opens_at?, closes_at?}",
        operation_id: "create_call",
        body: Some("CreateCall"),
        status: 201,
        answer: Answer::Json("Call"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/calls",
        who: "any token",
        summary: "List access calls",
        operation_id: "list_calls",
        body: None,
        status: 200,
        answer: Answer::Json("CallPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/calls/{id}/reviewers",
        who: "admin, operator",
        summary: "Assign a reviewer to a call {user}",
        operation_id: "add_reviewer",
        body: Some("AddReviewer"),
        status: 201,
        answer: Answer::Json("Call"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/requests",
        who: "owner, member",
        summary: "Draft an access request {call, title, summary?, project, gpu_hours, days}",
        operation_id: "create_request",
        body: Some("CreateRequest"),
        status: 201,
        answer: Answer::Json("AccessRequest"),
        replay: true,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/requests",
        who: "any token (its organisation's, its call's reviewers', admins' and operators')",
        summary: "List access requests",
        operation_id: "list_requests",
        body: None,
        status: 200,
        answer: Answer::Json("RequestPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/requests/{id}",
        who: "its organisation, its call's reviewers, admin, operator",
        summary: "One access request with its reviews",
        operation_id: "get_request",
        body: None,
        status: 200,
        answer: Answer::Json("AccessRequest"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/requests/{id}/submit",
        who: "the applicant organisation's owners and members",
        summary: "Submit a draft (or a revised request) for review; a playground request is approved at once",
        operation_id: "submit_request",
        body: None,
        status: 201,
        answer: Answer::Json("AccessRequest"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/requests/{id}/withdraw",
        who: "the applicant organisation's owners and members",
        summary: "Withdraw a request",
        operation_id: "withdraw_request",
        body: None,
        status: 201,
        answer: Answer::Json("AccessRequest"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/requests/{id}/reviews",
        who: "the call's reviewers, never for their own organisation",
        summary: "Review a request {score 1-5, verdict approve|reject|revise, comment?}",
        operation_id: "review_request",
        body: Some("CreateReview"),
        status: 201,
        answer: Answer::Json("AccessRequest"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/requests/{id}/comments",
        who: "its organisation, its call's reviewers, admin, operator",
        summary: "Comment on a request {text}",
        operation_id: "comment_request",
        body: Some("CreateComment"),
        status: 201,
        answer: Answer::Json("AccessRequest"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/requests/{id}/decision",
        who: "admin, operator",
        summary: "Decide on a reviewed request {approve, comment?}",
        operation_id: "decide_request",
        body: Some("CreateDecision"),
        status: 201,
        answer: Answer::Json("AccessRequest"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/calls", post(create_call).get(list_calls))
        .route("/api/v1/calls/{id}/reviewers", post(add_reviewer))
        .route("/api/v1/requests", post(create_request).get(list_requests))
        .route("/api/v1/requests/{id}", get(get_request))
        .route("/api/v1/requests/{id}/submit", post(submit_request))
        .route("/api/v1/requests/{id}/withdraw", post(withdraw_request))
        .route("/api/v1/requests/{id}/reviews", post(review_request))
        .route("/api/v1/requests/{id}/decision", post(decide_request))
        .route("/api/v1/requests/{id}/comments", post(comment_request))
}

/// Runs a write to its end even if the client goes away: a dropped
/// handler would cut an approval between its transactions.
async fn to_end<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, crate::error::ApiError>> + Send + 'static,
) -> Result<T, crate::error::ApiError> {
    tokio::spawn(f)
        .await
        .map_err(|e| crate::error::ApiError::store(format!("the write stopped: {e}")))?
}

async fn create_call(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<gigafab_api::CreateCall>,
) -> ApiResult {
    Ok(created(
        to_end(async move { access::create_call(&s, &p, b).await }).await?,
    ))
}

async fn list_calls(State(s): State<AppState>, Caller(_): Caller) -> ApiResult {
    Ok(list(access::list_calls(&s).await?))
}

async fn add_reviewer(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::AddReviewer>,
) -> ApiResult {
    let id = parse_id(&id, "call_not_found")?;
    Ok(created(
        to_end(async move { access::add_reviewer(&s, &p, id, b).await }).await?,
    ))
}

/// Creates a draft request; with an `Idempotency-Key`, a retry gets the
/// request its first try made.
async fn create_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: axum::http::HeaderMap,
    Body_(b): Body_<gigafab_api::CreateRequest>,
) -> ApiResult {
    use crate::store::idempotency::Kind;
    let key = super::idempotency_key(&headers)?;
    if let Some(id) = super::replayed(&s, &p, key.as_deref(), Kind::Request).await? {
        let r = access::get_request(&s, &p, id).await?;
        return Ok(super::replay(Json(r).into_response()));
    }
    Ok(created(
        to_end(async move { access::create_request(&s, &p, b, key).await }).await?,
    ))
}

async fn list_requests(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(access::list_requests(&s, &p).await?))
}

async fn get_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "request_not_found")?;
    Ok(Json(access::get_request(&s, &p, id).await?).into_response())
}

async fn submit_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "request_not_found")?;
    Ok(created(
        to_end(async move { access::submit_request(&s, &p, id).await }).await?,
    ))
}

async fn withdraw_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "request_not_found")?;
    Ok(created(
        to_end(async move { access::withdraw_request(&s, &p, id).await }).await?,
    ))
}

async fn review_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::CreateReview>,
) -> ApiResult {
    let id = parse_id(&id, "request_not_found")?;
    Ok(created(
        to_end(async move { access::review_request(&s, &p, id, b).await }).await?,
    ))
}

async fn comment_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::CreateComment>,
) -> ApiResult {
    let id = parse_id(&id, "request_not_found")?;
    Ok(created(
        to_end(async move { access::comment_request(&s, &p, id, b).await }).await?,
    ))
}

async fn decide_request(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::CreateDecision>,
) -> ApiResult {
    let id = parse_id(&id, "request_not_found")?;
    Ok(created(
        to_end(async move { access::decide_request(&s, &p, id, b).await }).await?,
    ))
}
