//! The controller: one task owns the live state (scheduler core, jobs,
//! allocations, accounts) and is the only writer of the store.
//!
//! Requests reach it as commands on a channel. It takes every command that
//! is waiting, applies them to memory, writes their effects in ONE
//! transaction (group commit), and answers only once that transaction is
//! durable: a 201 means the job is on disk. It then runs a scheduling pass
//! (the same [`SchedCore`] as the digital twin, with wall-clock `now`),
//! records the decisions, and only then starts processes through the
//! [`Executor`]. If a commit fails, memory is rebuilt from the store, so
//! memory never runs ahead of what is durable.
//!
//! This module holds the state, the loop and the store writes; each
//! resource's commands live in their own module: [`allocs`], [`fleet`]
//! (nodes, drains, telemetry, metrics), [`jobs`] (submit, cancel, end,
//! preempt) and [`runs`] (scheduling passes, starts, wait reasons,
//! launches, polls, adoption); [`restore`] loads the state from the store.
//! Organisations, projects, users and tokens are not the controller's:
//! they are handlers on the store ([`crate::tenancy`]), and reach it as
//! typed commands ([`OrgRef`] in a grant, project ids in a submission).

mod allocs;
mod driver;
mod fleet;
pub mod handle;
mod health;
mod jobs;
mod power;
mod restore;
mod runs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use gigafab_core::sched::{AllocIdx, DepKind};
use gigafab_core::{
    AllocationSpec, Category, Factory, JobIdx, JobSpec, JobState, Policy, Reason, SchedCore,
    Throughputs, TypeFilter, Vendor,
};
use gigafab_exec::{AssignedAccel, DeviceVendor, LaunchSpec, Outcome, RunStatus};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::isolation::Isolation;
use crate::model::*;
use crate::names::valid_name;
use crate::store;
use crate::store::commit::Op;
pub use crate::store::jobs::{JOB_COLUMNS, row_to_job};
use crate::tenancy::directory::OrgRef;
use crate::time::{Ms, parse_rfc3339};
pub use handle::{Action, Answer, Cmd, Extension, Made, Reply};
pub use power::{FileGridSource, GridSource, node_power_of};
pub use restore::Snapshot;

use crate::state::{LoopStats, Shared};

pub use crate::submission::{DEFAULT_TIME_LIMIT_S, MAX_GPUS, MAX_TIME_LIMIT_S};
/// Most commands taken into one transaction.
const MAX_BATCH: usize = 1024;

/// Controller settings.
#[derive(Clone)]
pub struct CtlConfig {
    pub factory: Factory,
    pub policy: Policy,
    /// Throughputs of job types on accelerator types (the `hetero` policy
    /// and jobs given in steps); empty: every type runs at its nominal speed.
    pub throughputs: Throughputs,
    /// Longest time between scheduling passes.
    pub tick: Duration,
    /// Time between polls of running jobs.
    pub poll: Duration,
    /// First admin token (else a random one is made on first start).
    pub bootstrap_token: Option<String>,
    /// Whose identity jobs run under.
    pub isolation: Isolation,
    /// Per site: what powers its nodes down and up (idle power-down);
    /// empty or None: nothing is done on the machines.
    pub node_power: Vec<Option<Arc<dyn gigafab_exec::power::NodePower>>>,
    /// How often the sites' grid files are looked at for changes.
    pub grid_refresh: Duration,
    /// Gangs over at least this many nodes are checked by their site's
    /// `preflight_program` before they launch (0: never).
    pub preflight_min_nodes: u32,
    /// Most active (queued and running) jobs one organisation may have; a
    /// submission past it is `409 too_many_jobs` (0: no cap).
    pub max_active_jobs_per_org: usize,
}

struct Alloc {
    id: i64,
    org: i64,
    /// Its organisation's name (organisations are never renamed).
    org_name: String,
    name: String,
    granted_gpu_s: f64,
    /// Charged by ended runs.
    used_gpu_s: f64,
    /// Energy and carbon of ended runs, J and g.
    energy_j: f64,
    carbon_g: f64,
    /// Its owners were told it expires within a week.
    expiry_noted: bool,
    valid_from_ms: Ms,
    valid_until_ms: Ms,
    qos: i64,
    /// The project it is granted to: its jobs run in it, by its members.
    project: Option<i64>,
    core: AllocIdx,
    /// Billing-weighted accelerators running now, and the sum of
    /// weight × accelerators × start (ms) over those runs.
    run_rate: f64,
    run_start_sum: f64,
    queued: u64,
    running: u64,
    ended: u64,
}

impl Alloc {
    fn used_at(&self, now: Ms) -> f64 {
        self.used_gpu_s + (self.run_rate * now.0 as f64 - self.run_start_sum).max(0.0) / 1000.0
    }
    fn state(&self, now: Ms) -> &'static str {
        match self.state_api(now) {
            gigafab_api::AllocationState::Pending => "pending",
            gigafab_api::AllocationState::Expired => "expired",
            gigafab_api::AllocationState::Exhausted => "exhausted",
            gigafab_api::AllocationState::Active => "active",
        }
    }

    fn state_api(&self, now: Ms) -> gigafab_api::AllocationState {
        use gigafab_api::AllocationState as S;
        if now < self.valid_from_ms {
            S::Pending
        } else if now >= self.valid_until_ms {
            S::Expired
        } else if self.used_at(now) >= self.granted_gpu_s {
            S::Exhausted
        } else {
            S::Active
        }
    }
}

struct LiveJob {
    row: JobRow,
    spec: StoredSpec,
    core: JobIdx,
    next_seq: i64,
    devices: Vec<(u32, u32)>,
    cancel_requested: bool,
    /// Telemetry: (device index, its energy meter) when the run started.
    meter_start: Vec<(u32, f64)>,
    /// "waiting" events recorded for it so far (bounded: a job whose
    /// reason flaps keeps its current reason, not a row per flap).
    wait_events: u32,
    /// Starts so far (a preempted job starts again): tells the answer of
    /// a launch for an earlier start apart.
    starts: u32,
}

/// Most "waiting" events one job records; later changes of its reason only
/// update the job's `reason`.
pub const MAX_WAIT_EVENTS: u32 = 4;

#[derive(Default)]
struct Ids {
    alloc: i64,
    job: i64,
}

/// Where the controller's commits go.
enum Journal {
    /// The store, through the controller's own connection (opened at the
    /// first commit, and again after a failed one).
    Store(Option<sqlx::AnyConnection>),
    /// Kept in memory, one entry per commit (the state machine's unit
    /// tests: no database).
    #[cfg_attr(not(test), allow(dead_code))]
    Recorded(Vec<Vec<Op>>),
}

struct Pending {
    reply: oneshot::Sender<Answer>,
    answer: Answer,
}

/// The controller's state.
pub struct Controller {
    cfg: CtlConfig,
    shared: Arc<Shared>,
    core: SchedCore,
    allocs: BTreeMap<i64, Alloc>,
    jobs: HashMap<i64, LiveJob>,
    core_job: Vec<i64>,
    /// Per core job: why it waited at the last pass (0 not yet, 1 for
    /// capacity, 2 for its turn, 3 for its allocation's window, 4 for
    /// power, 5 for capacity with drained nodes, 6 for the allocation's
    /// reserve, 7 for a lower-carbon hour).
    core_wait: Vec<u8>,
    ids: Ids,
    /// Per node: job using each device slot.
    devices: Vec<Vec<Option<i64>>>,
    node_names: Vec<String>,
    node_by_name: HashMap<String, u32>,
    /// MIG instances' UUIDs and memory (MiB) by (node, GPU, instance) on
    /// nodes of MIG pools (this machine's, read through NVML at start).
    mig_uuids: HashMap<(u32, u32, u32), gigafab_telemetry::MigInstance>,
    /// The compute partition mode of each AMD device of partition pools
    /// run here, by (node, device index), as AMD SMI said at the start.
    amd_modes: HashMap<(u32, u32), String>,
    /// Why drained nodes were drained (when a reason was given).
    drain_reasons: HashMap<u32, String>,
    /// Recent estimates of queued jobs' starts, and when the last was run.
    estimates: HashMap<i64, (Ms, gigafab_api::JobEstimate)>,
    last_estimate: Ms,
    ops: Vec<Op>,
    pending: Vec<Pending>,
    launches: Vec<i64>,
    dirty: bool,
    /// The row of the job `end_job` last ended.
    last_ended: Option<JobRow>,
    /// After a restart: the states of jobs that active jobs wait for and
    /// that had ended (`dependency`).
    dep_states: HashMap<i64, String>,
    /// Energy integrated from telemetry samples, per device.
    meter: gigafab_telemetry::EnergyMeter,
    /// Launches to try again (job, not before ms): the engine was unreachable.
    relaunch: Vec<(i64, Ms)>,
    /// Jobs whose earlier launch may have reached the engine: their next
    /// launch looks for that run first.
    retry: std::collections::HashSet<i64>,
    /// Runs of preempted jobs that were asked to stop and have not yet
    /// (job, run handle): polled until they end; the job is not launched
    /// again before.
    stopping: HashMap<String, i64>,
    /// When the loop polls the runs next, and schedules next (ms).
    next_poll: Ms,
    next_sched: Ms,
    /// The core's last wake-up request (ms).
    wake: Option<Ms>,
    /// Commits failed in a row (the loop backs off).
    failed_commits: u32,
    /// The node whose devices the telemetry reports.
    tele_node: Option<u32>,
    tele_failed: bool,
    /// The connection commits go through (opened at the first commit,
    /// closed after a failed one).
    /// Where commits go.
    journal: Journal,
    /// The executor, off the loop.
    driver: driver::Driver,
    /// Idle power-down on the machines, grid sources.
    power: power::PowerState,
    /// Node health from the telemetry.
    health: health::LiveHealth,
    /// Pre-flight checks: running and passed, per job (its start).
    preflight_running: HashMap<i64, u32>,
    preflight_passed: HashMap<i64, u32>,
    /// Jobs made by submissions with an `Idempotency-Key` since the start
    /// (recent ones; the store keeps them all for a day).
    idempotent: HashMap<(i64, String), (store::idempotency::Kind, i64)>,
}

/// The MIG instances of this machine's GPUs for every node in `nodes`
/// (nodes of MIG pools, run here); empty, with a warning, when NVML cannot
/// say (their slices then fail to launch, saying why).
fn mig_uuids(nodes: &[u32]) -> HashMap<(u32, u32, u32), gigafab_telemetry::MigInstance> {
    let mut out = HashMap::new();
    if nodes.is_empty() {
        return out;
    }
    let found = gigafab_telemetry::NvmlTelemetry::init().and_then(|n| n.mig_instances());
    match found {
        Ok(list) => {
            for &node in nodes {
                for m in &list {
                    out.insert((node, m.gpu, m.index), m.clone());
                }
            }
        }
        Err(e) => tracing::warn!("MIG pools: their instances cannot be listed: {e}"),
    }
    out
}

/// The compute partition mode the server's telemetry (AMD SMI) reports for
/// each device of this machine, for every node in `nodes` (nodes of AMD
/// partition pools, run here); empty where it cannot say (their slices
/// then launch unchecked).
fn amd_modes(
    telemetry: Option<&Arc<dyn gigafab_telemetry::Telemetry>>,
    nodes: &[u32],
) -> HashMap<(u32, u32), String> {
    let mut out = HashMap::new();
    if nodes.is_empty() {
        return out;
    }
    let Some(t) = telemetry else {
        tracing::warn!(
            "AMD partition pools: no GPU telemetry (--telemetry off): their partition modes are not checked"
        );
        return out;
    };
    let found = t.partitions();
    if found.is_empty() {
        tracing::warn!(
            "AMD partition pools: the telemetry ({}) gives no partition modes",
            t.source()
        );
    }
    for &node in nodes {
        for p in &found {
            if let Some(mode) = &p.compute {
                out.insert((node, p.index), mode.clone());
            }
        }
    }
    out
}

/// The nodes of the pools whose slices are of `kind`.
fn nodes_of_kind(f: &gigafab_core::Factory, kind: gigafab_core::catalog::SliceKind) -> Vec<u32> {
    f.pools
        .iter()
        .filter(|p| f.catalog.get(p.accel).slice.as_ref().map(|s| s.kind) == Some(kind))
        .flat_map(|p| p.first_node..p.first_node + p.nodes)
        .collect()
}

fn filter_label(spec: &StoredSpec) -> String {
    let mut parts = Vec::new();
    if !spec.types.is_empty() {
        parts.push(spec.types.join("|"));
    }
    if let Some(v) = &spec.vendor {
        parts.push(v.clone());
    }
    if let Some(m) = spec.min_memory_gb {
        parts.push(format!("≥{m} GB"));
    }
    if let Some(s) = &spec.slice {
        parts.push(format!("slice {}", s.to_column()));
    }
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(" ")
    }
}

impl Controller {
    /// Loads the state from the store (granting the organisation
    /// `default` its allocation on a first start) and adopts the runs of
    /// jobs recorded as running.
    pub async fn load(cfg: CtlConfig, shared: Arc<Shared>) -> Result<Controller, sqlx::Error> {
        let mut c = Controller::read(cfg, shared).await?;
        if !c.ops.is_empty() {
            c.commit().await?;
        }
        Ok(c)
    }

    /// Reads the state from the store; what reading it decided (adopted
    /// runs that ended meanwhile, relaunches) waits in `ops` for the next
    /// commit.
    async fn read(cfg: CtlConfig, shared: Arc<Shared>) -> Result<Controller, sqlx::Error> {
        let mut c = Controller::empty(cfg, shared);
        c.load_rows().await?;
        c.after_load();
        Ok(c)
    }

    /// A controller with nothing loaded: no allocation, no job, every node
    /// in service (no I/O).
    fn empty(cfg: CtlConfig, shared: Arc<Shared>) -> Controller {
        let policy = cfg.policy.clone();
        let cfg_factory = cfg.factory.clone();
        let mut core = SchedCore::new(cfg.factory.clone(), policy, cfg.throughputs.clone());
        // the pass notes why each job it does not start waits
        core.track_waits(true);
        let executor = shared.executor.clone();
        let mut node_names = Vec::new();
        let mut devices = Vec::new();
        for p in &cfg.factory.pools {
            for i in 0..p.nodes {
                node_names.push(format!("{}-{}", p.name, i));
                devices.push(vec![None; p.per_node as usize]);
            }
        }
        let node_by_name = node_names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        let mig_nodes = nodes_of_kind(&cfg.factory, gigafab_core::catalog::SliceKind::Mig);
        let partition_nodes =
            nodes_of_kind(&cfg.factory, gigafab_core::catalog::SliceKind::Partition);
        let amd_modes = amd_modes(shared.telemetry.as_ref(), &partition_nodes);
        let mut c = Controller {
            cfg,
            shared,
            core,
            allocs: BTreeMap::new(),
            jobs: HashMap::new(),
            core_job: Vec::new(),
            core_wait: Vec::new(),
            ids: Ids::default(),
            devices,
            mig_uuids: mig_uuids(&mig_nodes),
            amd_modes,
            node_names,
            node_by_name,
            drain_reasons: HashMap::new(),
            estimates: HashMap::new(),
            last_estimate: Ms(0),
            ops: Vec::new(),
            pending: Vec::new(),
            launches: Vec::new(),
            dirty: true,
            last_ended: None,
            dep_states: HashMap::new(),
            meter: gigafab_telemetry::EnergyMeter::new(),
            relaunch: Vec::new(),
            retry: std::collections::HashSet::new(),
            stopping: HashMap::new(),
            next_poll: Ms(0),
            next_sched: Ms(0),
            wake: None,
            failed_commits: 0,
            tele_node: None,
            tele_failed: false,
            journal: Journal::Store(None),
            driver: driver::Driver::new(executor),
            power: power::PowerState::new(&cfg_factory),
            health: health::LiveHealth::new(cfg_factory.nodes()),
            preflight_running: HashMap::new(),
            preflight_passed: HashMap::new(),
            idempotent: HashMap::new(),
        };
        c.tele_node = c.telemetry_node();
        // the sites' energy counts from now, not from 1970
        let now = c.shared.clock.now();
        c.core.set_energy_origin(now.core_s());
        c
    }

    /// What a start does once the state is restored: old idempotency keys
    /// expire, every node is powered up.
    fn after_load(&mut self) {
        let now = self.shared.clock.now();
        self.ops.push(store::idempotency::expire(now));
        self.power_up_all(now);
    }

    fn audit(&mut self, who: &Principal, now: Ms, action: &str, object: &str, detail: String) {
        let op = self.shared.audit_op(who, now, action, object, detail);
        self.ops.push(op);
    }

    fn event(&mut self, job: i64, now: Ms, kind: &str, message: String) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let seq = j.next_seq;
        j.next_seq += 1;
        self.ops
            .push(store::jobs::event(job, seq, now, kind, message));
    }

    fn update_job_op(&mut self, job: i64) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        let spec = serde_json::to_string(&j.spec).unwrap_or_default();
        self.ops.push(store::jobs::update(&j.row, spec));
    }

    /// The highest job id the store has seen.
    pub fn max_job_id(&self) -> i64 {
        self.ids.job
    }

    /// Runs the controller until the channel closes.
    /// The loop: take commands, poll runs, schedule, commit, answer,
    /// launch. When `stop` turns true it ends after committing and
    /// answering what it holds (running jobs are left to be adopted).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Cmd>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut stopping = false;
        let mut stop_gone = false;
        let mut batch: Vec<Cmd> = Vec::new();
        let mut done: Vec<driver::Done> = Vec::new();
        let tick_ms = self.cfg.tick.as_millis() as i64;
        loop {
            let wait = if !self.ops.is_empty() || self.dirty || !self.launches.is_empty() {
                Duration::ZERO
            } else {
                let now = self.shared.clock.now();
                let until = self.next_poll.min(self.next_sched).0 - now.0;
                Duration::from_millis(until.clamp(1, tick_ms.max(1)) as u64)
            };
            tokio::select! {
                biased;
                c = rx.recv() => match c {
                    Some(c) => batch.push(c),
                    None => break,
                },
                // a dropped sender (no one can ask for a stop) is not a stop
                r = stop.wait_for(|v| *v), if !stopping && !stop_gone => match r {
                    Ok(_) => stopping = true,
                    Err(_) => stop_gone = true,
                },
                d = self.driver.rx.recv() => done.extend(d),
                _ = tokio::time::sleep(wait) => {}
            }
            while let Ok(d) = self.driver.rx.try_recv() {
                done.push(d);
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = self.shared.clock.now();
            for d in done.drain(..) {
                self.apply(d, now);
            }
            if !self.turn(now, &mut batch).await {
                if stopping && self.failed_commits >= 5 {
                    // the store keeps failing: stop anyway; what was not
                    // committed was answered with the error, and running
                    // jobs are adopted at the next start
                    tracing::error!("stopping without a last commit: the store keeps failing");
                    return;
                }
                continue;
            }
            if stopping {
                // launches under way are waited for (a while), so that
                // their handles are committed and the next start adopts
                // their runs
                let until = tokio::time::Instant::now() + Duration::from_secs(30);
                while !self.driver.in_flight.is_empty() {
                    match tokio::time::timeout_at(until, self.driver.rx.recv()).await {
                        Ok(Some(d)) => {
                            let now = self.shared.clock.now();
                            self.apply(d, now);
                        }
                        _ => break,
                    }
                }
                // what was committed is answered and launched; the launches'
                // handles are committed too, so the next start adopts them
                if !self.ops.is_empty()
                    && let Err(e) = self.commit().await
                {
                    tracing::warn!("last commit before stopping failed: {e}");
                }
                self.answer(None);
                tracing::info!("controller stopped; running jobs are adopted at the next start");
                return;
            }
        }
    }

    /// One turn of the loop at `now`: take the commands, poll the runs
    /// (when due), schedule (when due or something changed), commit,
    /// answer, launch. False when the commit failed: the commands were
    /// answered with the store's error and the state reloaded from it.
    async fn turn(&mut self, now: Ms, batch: &mut Vec<Cmd>) -> bool {
        for c in batch.drain(..) {
            self.handle(c, now);
        }
        if now >= self.next_poll && !self.driver.polling {
            self.poll_runs(now);
            self.next_poll = now.plus(self.cfg.poll);
        }
        self.refresh_grids(now);
        if self.dirty || now >= self.next_sched {
            let t = std::time::Instant::now();
            let wake = self.schedule(now);
            let us = t.elapsed().as_micros() as u64;
            self.shared
                .metrics
                .schedule_pass_seconds
                .observe(us as f64 / 1e6);
            if let Ok(mut st) = self.shared.stats.lock() {
                st.passes += 1;
                let q = (self.core.queued(), self.core.n_running, us);
                LoopStats::push(&mut st.recent_passes, q);
            }
            self.dirty = false;
            self.wake = wake;
            self.next_sched = now.plus(self.cfg.tick);
            if let Some(w) = wake {
                self.next_sched = self.next_sched.min(w.max(Ms(now.0 + 1)));
            }
        }
        if self.ops.is_empty() {
            self.answer(None);
        } else {
            let n = self.ops.len();
            let t = std::time::Instant::now();
            match self.commit().await {
                Ok(()) => {
                    self.failed_commits = 0;
                    let us = t.elapsed().as_micros() as u64;
                    self.shared.metrics.commit_seconds.observe(us as f64 / 1e6);
                    if let Ok(mut st) = self.shared.stats.lock() {
                        st.commits += 1;
                        st.committed_ops += n as u64;
                        LoopStats::push(&mut st.recent_commits, (n, us));
                    }
                    self.answer(None)
                }
                Err(e) => {
                    let err = ApiError::store(&e);
                    self.answer(Some(err));
                    self.launches.clear();
                    let failed = self.failed_commits + 1;
                    self.reload().await;
                    self.failed_commits = failed;
                    // a store that keeps failing (a full disk) is retried
                    // at most once a second, not in a hot loop
                    let pause = 50u64 << failed.min(5);
                    tokio::time::sleep(Duration::from_millis(pause.min(1_000))).await;
                    return false;
                }
            }
        }
        self.launch_pending(self.shared.clock.now());
        true
    }

    /// One whole turn at `now` (tests and the twin/controller conformance):
    /// the commands sent so far, a poll of every run whose answers are
    /// waited for, a scheduling pass, the launches and their answers,
    /// whatever the loop's timers say. Time is only what `now` says.
    pub async fn step(&mut self, now: Ms, rx: &mut mpsc::Receiver<Cmd>) -> bool {
        let mut batch = Vec::new();
        while let Ok(c) = rx.try_recv() {
            batch.push(c);
        }
        for c in batch.drain(..) {
            self.handle(c, now);
        }
        self.poll_runs(now);
        self.settle(now).await;
        self.next_poll = now.plus(self.cfg.poll);
        self.next_sched = now;
        if !self.turn(now, &mut batch).await {
            return false;
        }
        self.settle(now).await;
        self.ops.is_empty() || self.commit().await.is_ok()
    }

    /// Waits for every answer the executor owes and applies it.
    async fn settle(&mut self, now: Ms) {
        while self.driver.busy() {
            match self.driver.rx.recv().await {
                Some(d) => self.apply(d, now),
                None => return,
            }
        }
    }

    /// When the last scheduling pass asked to be called again (ms), even
    /// if nothing happens before.
    pub fn wakeup(&self) -> Option<Ms> {
        self.wake
    }

    fn answer(&mut self, err: Option<ApiError>) {
        for p in self.pending.drain(..) {
            match &err {
                None => {
                    let _ = p.reply.send(p.answer);
                }
                Some(e) => {
                    let _ = p.reply.send(match p.answer {
                        Ok(_) => Err(e.clone()),
                        Err(x) => Err(x),
                    });
                }
            }
        }
    }

    /// Rebuilds memory from the store after a failed commit. It only
    /// reads: while the store cannot be written (a full disk), commands are
    /// answered `store_unavailable` by the next failed commit instead of
    /// waiting for a reload that cannot commit.
    async fn reload(&mut self) {
        loop {
            let cfg = self.cfg.clone();
            match Controller::read(cfg, self.shared.clone()).await {
                Ok(mut c) => {
                    // launches and polls under way answer the new state
                    std::mem::swap(&mut c.driver, &mut self.driver);
                    *self = c;
                    return;
                }
                Err(e) => {
                    tracing::error!("cannot reload state from the store: {e}; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn commit(&mut self) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        let ops = store::commit::fold_ops(std::mem::take(&mut self.ops));
        let writer = match &mut self.journal {
            Journal::Recorded(commits) => {
                commits.push(ops);
                return Ok(());
            }
            Journal::Store(w) => w,
        };
        let mut conn = match writer.take() {
            Some(c) => c,
            None => self.shared.store.writer().await?,
        };
        match store::commit::write_ops(&mut conn, ops).await {
            Ok(()) => {
                *writer = Some(conn);
                Ok(())
            }
            Err(e) => {
                // a failed write (a full disk, a lost server) closes its
                // connection, and with it any lock or transaction left open
                let _ = conn.close().await;
                Err(e)
            }
        }
    }

    fn handle(&mut self, c: Cmd, now: Ms) {
        let mark = self.ops.len();
        let answer = self.act(&c.who, c.action, now);
        if answer.is_err() {
            // a refused command leaves no trace
            self.ops.truncate(mark);
        }
        self.pending.push(Pending {
            reply: c.reply,
            answer,
        });
    }

    fn act(&mut self, who: &Principal, action: Action, now: Ms) -> Answer {
        let ok = |r: Reply| Ok((Made::Found, r));
        let created = |r: Reply| Ok((Made::Created, r));
        match action {
            Action::Submit(req, projects, inputs) => created(Reply::Job(Box::new(
                self.submit(who, *req, &projects, inputs, now)?,
            ))),
            Action::Keyed(inner, key) => {
                use store::idempotency::Kind;
                let kind = match *inner {
                    Action::Submit(..) => Kind::Job,
                    Action::Grant(..) => Kind::Allocation,
                    _ => return Err(ApiError::invalid("Idempotency-Key: not for this request")),
                };
                // a retry that reached the controller before its first
                // try's answer could be read from the store
                if let Some(&(k, id)) = self.idempotent.get(&(who.user_id, key.clone())) {
                    let live = match k {
                        Kind::Job => self
                            .jobs
                            .get(&id)
                            .map(|j| Reply::Job(Box::new(j.row.view(now)))),
                        Kind::Allocation => self
                            .allocs
                            .get(&id)
                            .map(|a| Reply::Allocation(Box::new(self.alloc_view(a, now)))),
                        Kind::Request => None,
                    };
                    return match live {
                        Some(v) if k == kind => ok(v),
                        _ => Err(ApiError::conflict(
                            "idempotency_key_in_use",
                            format!(
                                "Idempotency-Key `{key}` made {} {id} a moment ago; ask again",
                                k.as_str()
                            ),
                        )),
                    };
                }
                let (status, v) = self.act(who, *inner, now)?;
                let id = match &v {
                    Reply::Job(j) => j.id.0,
                    Reply::Allocation(a) => a.id.0,
                    _ => 0,
                };
                self.ops
                    .push(store::idempotency::insert(who.user_id, &key, kind, id, now));
                if self.idempotent.len() >= 10_000 {
                    // the store answers for older ones
                    self.idempotent.clear();
                }
                self.idempotent.insert((who.user_id, key), (kind, id));
                Ok((status, v))
            }
            Action::Cancel(id) => ok(match self.cancel(who, id.0, now)? {
                Some(j) => Reply::Job(Box::new(j)),
                None => Reply::NotHeld,
            }),
            Action::ExtendJob(id, by_s, max_s) => {
                ok(match self.extend_job(who, id.0, by_s, max_s, now)? {
                    Some(j) => Reply::Job(Box::new(j)),
                    None => Reply::NotHeld,
                })
            }
            Action::CancelQueuedOf(user) => {
                let mut queued: Vec<i64> = self
                    .jobs
                    .values()
                    .filter(|j| j.row.user_id == user && j.row.state == "queued")
                    .map(|j| j.row.id)
                    .collect();
                queued.sort_unstable();
                for &id in &queued {
                    self.cancel(who, id, now)?;
                }
                if !queued.is_empty() {
                    self.audit(
                        who,
                        now,
                        "cancel_jobs_of_disabled_user",
                        &format!("user {user}"),
                        format!("{} queued jobs cancelled", queued.len()),
                    );
                }
                ok(Reply::Cancelled(
                    queued.into_iter().map(gigafab_api::JobId).collect(),
                ))
            }
            Action::Grant(req, org) => created(Reply::Allocation(Box::new(
                self.create_alloc(who, req, org, now)?,
            ))),
            Action::Extend(x) => ok(Reply::Allocation(Box::new(self.extend_alloc(who, x, now)?))),
            Action::Drain(node, drain, reason) => ok(Reply::Node(Box::new(
                self.drain(who, &node, drain, reason, now)?,
            ))),
            Action::Telemetry(node, batch) => ok(Reply::TelemetryAck(
                self.node_telemetry(who, &node, *batch, now)?,
            )),
            Action::NodeTelemetry(node) => ok(Reply::NodeReadings(self.node_readings(who, &node)?)),
            Action::ListAllocs => ok(Reply::Allocations(gigafab_api::Page {
                items: self
                    .allocs
                    .values()
                    .filter(|a| who.sees_org(a.org))
                    .map(|a| self.alloc_view(a, now))
                    .collect(),
                next: None,
            })),
            Action::Estimate(id) => ok(match self.estimate(who, id.0, now)? {
                Some(e) => Reply::Estimate(e),
                None => Reply::NotHeld,
            }),
            Action::GetAlloc(id) => match self.allocs.get(&id.0) {
                Some(a) if who.sees_org(a.org) => {
                    ok(Reply::Allocation(Box::new(self.alloc_view(a, now))))
                }
                _ => Err(ApiError::not_found(
                    "allocation_not_found",
                    format!("allocation {id} not found"),
                )),
            },
            Action::Usage => ok(Reply::Usage(gigafab_api::Usage {
                items: self
                    .allocs
                    .values()
                    .filter(|a| who.sees_org(a.org))
                    .map(|a| gigafab_api::AllocationUsage {
                        allocation: gigafab_api::AllocationId(a.id),
                        name: a.name.clone(),
                        org: a.org_name.clone(),
                        granted_gpu_hours: a.granted_gpu_s / 3600.0,
                        used_gpu_hours: a.used_at(now) / 3600.0,
                        running_gpus: a.run_rate,
                        jobs_queued: a.queued,
                        jobs_running: a.running,
                        jobs_ended: a.ended,
                        state: a.state_api(now),
                        energy_kwh: a.energy_j / 3.6e6,
                        carbon_kg: a.carbon_g / 1e3,
                    })
                    .collect(),
                orgs: self.org_usage(who, now),
            })),
            Action::Fleet => ok(Reply::Fleet(self.fleet_json(who))),
            Action::Sites => ok(Reply::Sites(self.sites_json(now, who))),
            Action::Offer => ok(Reply::Offer(self.offer_json())),
            Action::Metrics => {
                if !who.global() {
                    return Err(ApiError::forbidden("metrics are for admins and operators"));
                }
                let snap = self.metrics_snapshot(now);
                ok(Reply::Metrics(crate::metrics::render(
                    &self.shared.metrics,
                    &snap,
                )))
            }
        }
    }
}

impl Controller {}
