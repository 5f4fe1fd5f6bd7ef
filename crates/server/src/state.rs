//! The application state: what the HTTP handlers, the resources' services
//! and the controller share (the store, the directory, the catalog, the
//! clock, metrics), and the channel to the controller.

use std::sync::Arc;

use gigafab_exec::Executor;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Principal, Role};
use crate::ctl::handle::{Action, Answer, Cmd};
use crate::error::ApiError;
use crate::model::{AllocReq, SubmitReq};
use crate::store::{self, Store, commit::Op};
use crate::tenancy::directory::Tenancy;
use crate::time::Ms;

/// State shared with the HTTP handlers.
pub struct Shared {
    pub store: Store,
    /// Organisations, projects, users and tokens.
    pub tenancy: Tenancy,
    /// The last id of the audit log (the controller and tenancy both write it).
    pub audit_id: std::sync::atomic::AtomicI64,
    /// The last id of the outbox (access handlers and the controller both
    /// write notifications).
    pub outbox_id: std::sync::atomic::AtomicI64,
    pub tx: mpsc::Sender<Cmd>,
    pub executor: Arc<dyn Executor>,
    /// GPU telemetry of this machine's devices (energy counters); none: energy is modelled.
    pub telemetry: Option<Arc<dyn gigafab_telemetry::Telemetry>>,
    /// Timings of recent scheduling passes and commits.
    pub stats: std::sync::Mutex<LoopStats>,
    /// Prometheus counters and histograms.
    pub metrics: crate::metrics::Metrics,
    /// False once the controller has stopped other than by a stop request
    /// (a panic): `/health` fails and the server exits.
    pub controller_alive: std::sync::atomic::AtomicBool,
    /// Where the controller and the API read the time.
    pub clock: Arc<dyn crate::time::Clock>,
    /// The data and model catalog's store (None: no catalog).
    pub catalog: Option<Arc<crate::catalog::site::Site>>,
    /// The names of the factory's sites.
    pub sites: Vec<String>,
    /// The factory (submissions are checked against its accelerator
    /// catalog before they reach the controller).
    pub factory: Arc<gigafab_core::Factory>,
    /// Per-token and per-organisation limits on requests that change state.
    pub limits: crate::ratelimit::RateLimits,
    /// The model endpoints: what the gateway and their manager share.
    pub serving: Arc<crate::endpoints::registry::Serving>,
    /// What standalone gateways last reported (`gigafab gateway`).
    pub gateway_reports: crate::endpoints::registry::Reports,
    /// Interactive sessions (their apps, those not ended).
    pub sessions: crate::sessions::registry::Sessions,
    /// The organisations' project spaces (None: none kept).
    pub spaces: Option<crate::spaces::config::Spaces>,
}

/// What the controller's loop measured, for `/health` and benchmarks.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LoopStats {
    pub passes: u64,
    pub commits: u64,
    pub committed_ops: u64,
    /// Recent passes: (queued jobs, running jobs, microseconds), newest last.
    pub recent_passes: std::collections::VecDeque<(usize, usize, u64)>,
    /// Recent commits: (statements, microseconds), newest last.
    pub recent_commits: std::collections::VecDeque<(usize, u64)>,
}

impl LoopStats {
    pub(crate) fn push<T>(q: &mut std::collections::VecDeque<T>, v: T) {
        if q.len() == 64 {
            q.pop_front();
        }
        q.push_back(v);
    }
}

impl Shared {
    /// The names of the factory's sites.
    pub fn site_names(&self) -> Vec<String> {
        self.sites.clone()
    }

    /// Sends a command and waits for its answer.
    pub async fn ask(&self, who: Principal, action: Action) -> Answer {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Cmd { who, action, reply })
            .await
            .map_err(|_| ApiError::unavailable("the controller has stopped"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the controller has stopped"))?
    }

    /// The caller of a live token (None: unknown, revoked or expired).
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.tenancy.principal(token, self.clock.now())
    }

    /// The next id of the audit log.
    pub fn next_audit_id(&self) -> i64 {
        self.audit_id
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// One line of the audit log: `who` did `action` to `object`.
    pub fn audit_op(
        &self,
        who: &Principal,
        now: Ms,
        action: &str,
        object: &str,
        detail: String,
    ) -> Op {
        store::audit::insert(
            self.next_audit_id(),
            now,
            who.user_id,
            who.login.clone(),
            action,
            object,
            detail,
        )
    }

    /// A submission as a command: its fields checked
    /// ([`crate::submission::validate`]), its project name resolved to
    /// the projects of that name.
    pub fn submission(&self, who: &Principal, req: SubmitReq) -> Result<Action, ApiError> {
        let valid = crate::submission::validate(who, req, &self.factory)?;
        Ok(self.submission_with(valid, Vec::new()))
    }

    /// A checked submission as a command, with its catalog inputs
    /// resolved (`catalog::resolve_inputs`).
    pub fn submission_with(
        &self,
        valid: crate::submission::ValidSubmit,
        inputs: Vec<crate::model::Input>,
    ) -> Action {
        let projects = match &valid.request().project {
            Some(p) => self.tenancy.projects_named(p),
            None => Vec::new(),
        };
        Action::Submit(Box::new(valid), projects, inputs)
    }

    /// A grant as a command (admin; the organisation must be one `who` sees).
    pub fn grant(&self, who: &Principal, req: AllocReq) -> Result<Action, ApiError> {
        if who.role != Role::Admin {
            return Err(ApiError::forbidden("only an admin grants allocations"));
        }
        let org = self.tenancy.visible_org(who, &req.org)?;
        Ok(Action::Grant(req, org))
    }
}
