//! The fleet: nodes, accelerators, drains (the controller's).

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Caller, Route, reply};
use crate::auth::Principal;
use crate::ctl::Action;
use crate::error::ApiError;
use crate::state::Shared;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/offer",
        who: "anyone",
        summary: "What the factory offers: pools, free accelerators now, open calls",
        operation_id: "offer",
        body: None,
        status: 200,
        answer: Answer::Json("Offer"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/fleet",
        who: "any token",
        summary: "Nodes and accelerators",
        operation_id: "get_fleet",
        body: None,
        status: 200,
        answer: Answer::Json("Fleet"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/sites",
        who: "any token",
        summary: "Sites: power, energy, carbon, grid intensity now and its 24-hour forecast, powered-down nodes",
        operation_id: "list_sites",
        body: None,
        status: 200,
        answer: Answer::Json("Sites"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/fleet/nodes/{name}/drain",
        who: "admin, operator",
        summary: "Drain a node (body optional: {reason})",
        operation_id: "drain_node",
        body: Some("DrainNode"),
        status: 200,
        answer: Answer::Json("FleetNode"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/fleet/nodes/{name}/telemetry",
        who: "admin, operator",
        summary: "A node agent's batch of accelerator readings: fed to the health model (docs/health.md)",
        operation_id: "post_node_telemetry",
        body: Some("NodeTelemetry"),
        status: 200,
        answer: Answer::Json("TelemetryAck"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/fleet/nodes/{name}/telemetry",
        who: "admin, operator",
        summary: "The node's recent readings per accelerator and its health with the evidence",
        operation_id: "get_node_telemetry",
        body: None,
        status: 200,
        answer: Answer::Json("NodeReadings"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/fleet/nodes/{name}/resume",
        who: "admin, operator",
        summary: "Resume a drained node",
        operation_id: "resume_node",
        body: None,
        status: 200,
        answer: Answer::Json("FleetNode"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/offer", get(offer))
        .route("/api/v1/fleet", get(fleet))
        .route("/api/v1/sites", get(sites))
        .route("/api/v1/fleet/nodes/{name}/drain", post(drain))
        .route("/api/v1/fleet/nodes/{name}/resume", post(resume))
        .route(
            "/api/v1/fleet/nodes/{name}/telemetry",
            post(post_telemetry).get(get_telemetry),
        )
}

async fn offer(State(s): State<AppState>) -> ApiResult {
    Ok(Json(offer_of(&s).await?).into_response())
}

/// What the factory offers now (no token needed: nothing of a tenant in it).
pub(crate) async fn offer_of(s: &Shared) -> Result<gigafab_api::Offer, ApiError> {
    let (_, v) = s.ask(Principal::anonymous(), Action::Offer).await?;
    let mut offer = v.offer()?;
    let mut calls = crate::access::list_calls(s).await?;
    calls.retain(|c| c.state == "open");
    for c in &mut calls {
        c.reviewers.clear();
    }
    offer.calls = calls;
    Ok(offer)
}

async fn fleet(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(reply(s.ask(p, Action::Fleet).await?))
}

async fn sites(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(reply(s.ask(p, Action::Sites).await?))
}

/// `{"reason"?}`: why (at most 200 bytes, one line), kept with the node
/// and written to the audit log. No body: no reason.
async fn drain(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(n): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let b: gigafab_api::DrainNode = super::parse_body(&body)?;
        b.reason
    };
    if let Some(r) = &reason
        && (r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(ApiError::invalid("reason: one line of at most 200 bytes"));
    }
    Ok(reply(s.ask(p, Action::Drain(n, true, reason)).await?))
}

/// Most readings in one batch.
const MAX_BATCH: usize = 256;

async fn post_telemetry(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(n): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let b: gigafab_api::NodeTelemetry = super::parse_body(&body)?;
    if b.samples.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "samples: at most {MAX_BATCH} readings a batch, got {}",
            b.samples.len()
        )));
    }
    for (i, x) in b.samples.iter().enumerate() {
        let bad = |what: &str| Err(ApiError::invalid(format!("samples[{i}].{what}")));
        if x.xid_errors.len() > 64 {
            return bad("xid_errors: at most 64 a reading");
        }
        let finite_in = |v: Option<f64>, lo: f64, hi: f64| {
            v.is_none_or(|v| v.is_finite() && (lo..=hi).contains(&v))
        };
        if !finite_in(x.power_w, 0.0, 1e5) {
            return bad("power_w: must be within 0..=100000");
        }
        if !finite_in(x.temperature_c, -100.0, 300.0) {
            return bad("temperature_c: must be within -100..=300");
        }
        if !finite_in(x.utilization_pct, 0.0, 100.0) {
            return bad("utilization_pct: must be within 0..=100");
        }
        if !finite_in(x.energy_j, 0.0, 1e18) {
            return bad("energy_j: must be a finite number >= 0");
        }
    }
    Ok(reply(s.ask(p, Action::Telemetry(n, Box::new(b))).await?))
}

async fn get_telemetry(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(n): Path<String>,
) -> ApiResult {
    Ok(reply(s.ask(p, Action::NodeTelemetry(n)).await?))
}

async fn resume(State(s): State<AppState>, Caller(p): Caller, Path(n): Path<String>) -> ApiResult {
    Ok(reply(s.ask(p, Action::Drain(n, false, None)).await?))
}
