//! The controller's commands: what a request asks of it, with its caller
//! and where the answer goes.

use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::model::{AllocReq, SubmitReq};
use crate::tenancy::directory::OrgRef;

/// What a request asks of the controller.
#[derive(Debug)]
pub enum Action {
    /// A submission, with the projects of that name: (organisation,
    /// project) pairs, the one of the allocation's organisation is the job's.
    Submit(Box<SubmitReq>, Vec<(i64, i64)>, Vec<crate::model::Input>),
    /// A creating action (a submission, a grant) with an `Idempotency-Key`:
    /// what it makes is named by the key, in the same commit.
    Keyed(Box<Action>, String),
    Cancel(gigafab_api::JobId),
    /// The queued jobs of a user just disabled are cancelled (its running
    /// ones run to their end).
    CancelQueuedOf(i64),
    /// A queued job's estimated start (the scheduler run forward).
    Estimate(gigafab_api::JobId),
    /// Grant an allocation to an organisation.
    Grant(AllocReq, OrgRef),
    /// Extend an allocation for an approved extension request (the
    /// workflow's, as an admin).
    Extend(Extension),
    /// Drain (with its reason) or resume a node.
    Drain(String, bool, Option<String>),
    /// A node agent's readings (admin, operator).
    Telemetry(String, Box<gigafab_api::NodeTelemetry>),
    /// A node's recent readings and health (admin, operator).
    NodeTelemetry(String),
    ListAllocs,
    GetAlloc(gigafab_api::AllocationId),
    Usage,
    Fleet,
    /// The sites: power, energy, carbon, grid intensity and its forecast
    /// (any token).
    Sites,
    /// The pools and their free accelerators (anyone: see
    /// [`Principal::anonymous`]).
    Offer,
    /// Prometheus exposition text (admin, operator).
    Metrics,
}

/// An approved extension request's change to its allocation.
#[derive(Debug)]
pub struct Extension {
    pub allocation: i64,
    pub request: i64,
    pub gpu_hours: f64,
    pub days: f64,
}

/// What the controller answers a command: a status and a body, or an error.
pub type Answer = Result<(StatusCode, Value), ApiError>;

/// A request with its caller and where to answer.
pub struct Cmd {
    pub who: Principal,
    pub action: Action,
    pub reply: oneshot::Sender<Answer>,
}
