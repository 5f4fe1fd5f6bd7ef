//! Model endpoints and their API keys (docs/endpoints.md): handlers on
//! the store (`crate::endpoints`); the requests themselves go to the
//! gateway (`/v1/endpoints/{name}/...`).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post};
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Body_, Caller, Route, created, list, parse_id};
use crate::endpoints;

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
        who: "an organisation's owners and members; admins",
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
        "post",
        "/api/v1/endpoints",
        "Create a model endpoint {name, model, command, allocation, gpus?, min_replicas?, max_replicas?, ...}",
        "create_endpoint",
        Some("CreateEndpoint"),
        201,
        "Endpoint",
    ),
    route(
        "get",
        "/api/v1/endpoints",
        "List the endpoints the caller sees",
        "list_endpoints",
        None,
        200,
        "EndpointPage",
    ),
    route(
        "get",
        "/api/v1/endpoints/{name}",
        "One endpoint: replicas, scaling, usage",
        "get_endpoint",
        None,
        200,
        "Endpoint",
    ),
    route(
        "delete",
        "/api/v1/endpoints/{name}",
        "Delete an endpoint: its keys stop working, its replicas stop",
        "delete_endpoint",
        None,
        200,
        "Endpoint",
    ),
    route(
        "post",
        "/api/v1/endpoints/{name}/scale",
        "Change an endpoint's replica bounds {min_replicas?, max_replicas?}",
        "scale_endpoint",
        Some("ScaleEndpoint"),
        200,
        "Endpoint",
    ),
    route(
        "post",
        "/api/v1/endpoints/{name}/keys",
        "Create an API key of the endpoint {name?, expires_in_days?} (the key is shown once)",
        "create_endpoint_key",
        Some("CreateEndpointKey"),
        201,
        "NewEndpointKey",
    ),
    route(
        "get",
        "/api/v1/endpoints/{name}/keys",
        "The endpoint's API keys (never the keys themselves) and what each served",
        "list_endpoint_keys",
        None,
        200,
        "EndpointKeyPage",
    ),
    route(
        "delete",
        "/api/v1/endpoints/{name}/keys/{id}",
        "Revoke an API key: it stops working at once",
        "revoke_endpoint_key",
        None,
        200,
        "EndpointKey",
    ),
    route(
        "get",
        "/api/v1/endpoints/{name}/events",
        "The endpoint's scaling decisions and replica changes, newest first",
        "list_endpoint_events",
        None,
        200,
        "EndpointEvents",
    ),
    Route {
        method: "post",
        path: "/api/v1/gateway/sync",
        who: "admins (a standalone gateway's token)",
        summary: "A standalone gateway's report {gateway, load, usage}; answers every endpoint's ready replicas and the live keys",
        operation_id: "gateway_sync",
        body: Some("GatewaySync"),
        status: 200,
        answer: Answer::Json("GatewayRoutes"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/api/v1/endpoints/{name}",
            get(get_endpoint).delete(delete_endpoint),
        )
        .route("/api/v1/endpoints/{name}/scale", post(scale_endpoint))
        .route(
            "/api/v1/endpoints/{name}/keys",
            post(create_key).get(list_keys),
        )
        .route("/api/v1/endpoints/{name}/keys/{id}", delete(revoke_key))
        .route("/api/v1/endpoints/{name}/events", get(events))
        .route("/api/v1/gateway/sync", post(gateway_sync))
}

async fn gateway_sync(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<gigafab_api::GatewaySync>,
) -> ApiResult {
    Ok(Json(endpoints::remote::sync(&s, &p, b)?).into_response())
}

async fn create_endpoint(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<gigafab_api::CreateEndpoint>,
) -> ApiResult {
    Ok(created(endpoints::create(&s, &p, b).await?))
}

async fn list_endpoints(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(endpoints::list(&s, &p).await?))
}

async fn get_endpoint(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult {
    let e = endpoints::visible(&s, &p, &name)?;
    Ok(Json(endpoints::view(&s, &e).await?).into_response())
}

async fn delete_endpoint(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(endpoints::delete(&s, &p, &name).await?).into_response())
}

async fn scale_endpoint(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Body_(b): Body_<gigafab_api::ScaleEndpoint>,
) -> ApiResult {
    Ok(Json(endpoints::scale(&s, &p, &name, b).await?).into_response())
}

async fn create_key(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    // the body is optional
    let req = if body.is_empty() {
        gigafab_api::CreateEndpointKey::default()
    } else {
        super::json_body(&headers, &body)?
    };
    Ok(created(endpoints::create_key(&s, &p, &name, req).await?))
}

async fn list_keys(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(list(endpoints::list_keys(&s, &p, &name).await?))
}

async fn revoke_key(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((name, id)): Path<(String, String)>,
) -> ApiResult {
    let id = parse_id(&id, "key_not_found")?;
    Ok(Json(endpoints::revoke_key(&s, &p, &name, id).await?).into_response())
}

async fn events(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(endpoints::events(&s, &p, &name).await?).into_response())
}
