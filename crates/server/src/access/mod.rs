//! The one-stop shop's workflow: access calls, requests, reviews and
//! decisions. Ordinary transactional handlers on the store (docs/server.md,
//! "Where a resource lives"): each write is one transaction with its audit
//! line; an approval reaches the controller only as a typed grant.
//!
//! Access modes, after the EuroHPC AI Factories' tracks:
//! - `playground`: at most 2,000 GPU-hours and 92 days a request; approved
//!   at submission for an organisation of an eligible category;
//! - `fast-lane`: at most 50,000 GPU-hours; one technical review decides;
//! - `large-scale`: two scored reviews at least, then an operator decides.
//!
//! A request goes draft → submitted → in_review → approved | rejected, or
//! revision_requested (back to the applicant, who submits again), or
//! withdrawn by the applicant. A reviewer is assigned per call and never
//! reviews a request of their own organisation; applicants and reviewers
//! write comments on it. An approval creates the project (its members: the
//! applicant and the team) and the allocation granted to that project,
//! charged against the call's envelope, which is never exceeded.

mod calls;
mod decisions;
mod requests;

pub use calls::*;
pub use decisions::*;
pub use requests::*;

use axum::http::StatusCode;
use gigafab_api as t;

use crate::auth::{Principal, Role};
use crate::ctl::Action;
use crate::error::ApiError;
use crate::names::valid_name;
use crate::state::Shared;
use crate::store::{self, access::CallRow, access::RequestRow, commit::Op};
use crate::time::{Ms, parse_rfc3339};

/// Most GPU-hours and days of a playground request.
pub const PLAYGROUND_MAX_GPU_H: f64 = 2_000.0;
pub const PLAYGROUND_MAX_DAYS: f64 = 92.0;
/// Most GPU-hours of a fast-lane request.
pub const FAST_LANE_MAX_GPU_H: f64 = 50_000.0;
/// Reviews a large-scale request needs before a decision.
pub const LARGE_SCALE_REVIEWS: usize = 2;

const MODES: [&str; 3] = ["playground", "fast-lane", "large-scale"];

/// States of a request not yet decided.
const OPEN: [&str; 4] = ["draft", "submitted", "in_review", "revision_requested"];
/// Most open requests of one organisation.
pub const MAX_OPEN_REQUESTS: usize = 50;

/// One access write at a time (envelope and id checks against the store,
/// then the transaction).
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unprocessable(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg)
}

async fn commit(s: &Shared, ops: Vec<Op>) -> Result<(), ApiError> {
    Ok(s.store.write(ops).await?)
}

fn call_state(c: &CallRow, now: Ms) -> &'static str {
    if now < c.opens_ms {
        "upcoming"
    } else if c.closes_ms.is_some_and(|e| now >= e) {
        "closed"
    } else {
        "open"
    }
}

fn call_view(c: &CallRow, reviewers: &[(i64, i64)], now: Ms) -> t::Call {
    t::Call {
        id: t::CallId(c.id),
        name: c.name.clone(),
        mode: c.mode.clone(),
        categories: serde_json::from_str(&c.categories).unwrap_or_default(),
        envelope_gpu_hours: c.envelope_gpu_s / 3600.0,
        granted_gpu_hours: c.granted_gpu_s / 3600.0,
        opens_at: c.opens_ms.rfc3339(),
        closes_at: c.closes_ms.map(Ms::rfc3339),
        state: call_state(c, now).into(),
        reviewers: reviewers
            .iter()
            .filter(|r| r.0 == c.id)
            .map(|r| t::UserId(r.1))
            .collect(),
        countries: serde_json::from_str(&c.countries).unwrap_or_default(),
        types: serde_json::from_str(&c.types).unwrap_or_default(),
    }
}

async fn request_view(s: &Shared, r: &RequestRow) -> Result<t::AccessRequest, ApiError> {
    let reviews = store::access::reviews(&s.store.pool, r.id).await?;
    // the request is one the caller sees: every comment on it
    let comments = store::access::comments(&s.store.pool, Some(r.id), true, None, 0)
        .await?
        .into_iter()
        .map(|c| c.1)
        .collect();
    Ok(view_with(r, reviews, comments))
}

/// A request's details as stored (`access_requests.details`).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Details {
    #[serde(default)]
    gpu_hours_by_type: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    residency: Option<String>,
    #[serde(default)]
    team: Vec<String>,
}

fn view_with(
    r: &RequestRow,
    reviews: Vec<store::access::ReviewRow>,
    comments: Vec<store::access::CommentRow>,
) -> t::AccessRequest {
    let d: Details = serde_json::from_str(&r.details).unwrap_or_default();
    t::AccessRequest {
        gpu_hours_by_type: d.gpu_hours_by_type,
        residency: d.residency,
        team: d.team,
        id: t::RequestId(r.id),
        call: t::CallId(r.call_id),
        org: r.org.clone(),
        user: r.user.clone(),
        title: r.title.clone(),
        summary: r.summary.clone(),
        project: r.project.clone(),
        gpu_hours: r.gpu_s / 3600.0,
        days: r.days,
        state: r.state.clone(),
        allocation: r.allocation_id.map(t::AllocationId),
        extends: r.extends_id.map(t::AllocationId),
        reviews: reviews
            .into_iter()
            .map(|v| t::Review {
                reviewer: t::UserId(v.reviewer_id),
                reviewer_name: crate::names::short_name(v.reviewer),
                score: v.score,
                verdict: v.verdict,
                comment: v.comment,
                at: v.at_ms.rfc3339(),
            })
            .collect(),
        comments: comments
            .into_iter()
            .map(|c| t::RequestComment {
                user: crate::names::short_name(c.user),
                side: c.side,
                text: c.body,
                at: c.at_ms.rfc3339(),
            })
            .collect(),
        created_at: r.created_ms.rfc3339(),
        updated_at: r.updated_ms.rfc3339(),
    }
}

fn call_not_found(id: i64) -> ApiError {
    ApiError::not_found("call_not_found", format!("call {id} not found"))
}

/// Call `id` (404 if there is none).
async fn call_of(s: &Shared, id: i64) -> Result<CallRow, ApiError> {
    store::access::call(&s.store.pool, id)
        .await?
        .ok_or_else(|| call_not_found(id))
}

fn request_not_found(id: i64) -> ApiError {
    ApiError::not_found("request_not_found", format!("request {id} not found"))
}

/// Whether `who` may see request `r`: its organisation, the reviewers of
/// its call once it is submitted (a draft is its applicant's alone),
/// admins and operators.
fn sees(who: &Principal, r: &RequestRow, reviewers: &[(i64, i64)]) -> bool {
    who.sees_org(r.org_id) || (r.state != "draft" && reviewers.contains(&(r.call_id, who.user_id)))
}

async fn visible_request(
    s: &Shared,
    who: &Principal,
    id: i64,
) -> Result<(RequestRow, Vec<(i64, i64)>), ApiError> {
    let r = store::access::request(&s.store.pool, id)
        .await?
        .ok_or_else(|| request_not_found(id))?;
    let reviewers = store::access::reviewers(&s.store.pool).await?;
    if !sees(who, &r, &reviewers) {
        return Err(request_not_found(id));
    }
    Ok((r, reviewers))
}

/// The applicant's own request, for a transition only its organisation's
/// owners and members make.
async fn own_request(s: &Shared, who: &Principal, id: i64) -> Result<RequestRow, ApiError> {
    let (r, _) = visible_request(s, who, id).await?;
    if !(who.role.in_org() && who.org_id == Some(r.org_id)) {
        return Err(ApiError::forbidden(
            "only the applicant organisation's owners and members do this",
        ));
    }
    Ok(r)
}

fn wrong_state(r: &RequestRow, what: &str) -> ApiError {
    ApiError::conflict(
        "wrong_state",
        format!("request {} is {}: it cannot be {what}", r.id, r.state),
    )
}
