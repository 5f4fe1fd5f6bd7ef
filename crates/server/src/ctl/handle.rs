//! The controller's commands: what a request asks of it, with its caller
//! and where the answer goes.

use tokio::sync::oneshot;

use crate::auth::Principal;
use crate::error::ApiError;
use crate::model::AllocReq;
use crate::tenancy::directory::OrgRef;

/// What a request asks of the controller.
#[derive(Debug)]
pub enum Action {
    /// A submission, with the projects of that name: (organisation,
    /// project) pairs, the one of the allocation's organisation is the job's.
    Submit(
        Box<crate::submission::ValidSubmit>,
        Vec<(i64, i64)>,
        Vec<crate::model::Input>,
    ),
    /// A creating action (a submission, a grant) with an `Idempotency-Key`:
    /// what it makes is named by the key, in the same commit.
    Keyed(Box<Action>, String),
    Cancel(gigafab_api::JobId),
    /// A running job's time limit extended by `.1` seconds, to at most
    /// `.2` in all (an interactive session; the sessions' module gives
    /// the bound): refused where its allocation's grant cannot hold it.
    ExtendJob(gigafab_api::JobId, i64, i64),
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

/// Whether a command made what it answers (an HTTP 201) or found or
/// changed it (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Created,
    Found,
}

/// What the controller answers: one typed object per kind of command.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Reply {
    Job(Box<gigafab_api::Job>),
    Allocation(Box<gigafab_api::Allocation>),
    Allocations(gigafab_api::Page<gigafab_api::Allocation>),
    /// The queued jobs cancelled (of a user just disabled).
    Cancelled(Vec<gigafab_api::JobId>),
    Estimate(gigafab_api::JobEstimate),
    Node(Box<gigafab_api::FleetNode>),
    TelemetryAck(gigafab_api::TelemetryAck),
    NodeReadings(gigafab_api::NodeReadings),
    Usage(gigafab_api::Usage),
    Fleet(gigafab_api::Fleet),
    Sites(gigafab_api::Sites),
    /// The pools (its `calls` are the access workflow's: left empty).
    Offer(gigafab_api::Offer),
    /// Prometheus exposition text.
    Metrics(String),
    /// The controller does not hold that job (it ended, or is not the
    /// caller's to see): the store tells which.
    NotHeld,
}

macro_rules! reply_as {
    ($($fn:ident: $variant:ident => $t:ty, $unwrap:expr;)*) => {
        impl Reply {
            $(
                #[doc = concat!("The answer as a `", stringify!($variant), "` (an error if the controller answered another kind: a bug).")]
                pub fn $fn(self) -> Result<$t, ApiError> {
                    match self {
                        Reply::$variant(x) => Ok($unwrap(x)),
                        other => Err(other.unexpected(stringify!($variant))),
                    }
                }
            )*
        }
    };
}

reply_as! {
    job: Job => gigafab_api::Job, |x: Box<gigafab_api::Job>| *x;
    allocation: Allocation => gigafab_api::Allocation, |x: Box<gigafab_api::Allocation>| *x;
    allocations: Allocations => gigafab_api::Page<gigafab_api::Allocation>, std::convert::identity;
    cancelled: Cancelled => Vec<gigafab_api::JobId>, std::convert::identity;
    offer: Offer => gigafab_api::Offer, std::convert::identity;
    sites: Sites => gigafab_api::Sites, std::convert::identity;
    metrics: Metrics => String, std::convert::identity;
}

impl Reply {
    fn unexpected(&self, wanted: &str) -> ApiError {
        tracing::error!("the controller answered {self:?} where {wanted} was asked for");
        ApiError::unavailable(format!(
            "the controller answered another kind of object than {wanted}"
        ))
    }
}

/// What the controller answers a command: what it made or found, or an
/// error.
pub type Answer = Result<(Made, Reply), ApiError>;

/// A request with its caller and where to answer.
pub struct Cmd {
    pub who: Principal,
    pub action: Action,
    pub reply: oneshot::Sender<Answer>,
}
