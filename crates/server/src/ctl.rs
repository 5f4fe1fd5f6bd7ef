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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use gigafab_core::sched::AllocIdx;
use gigafab_core::{
    AllocationSpec, Category, Factory, JobIdx, JobSpec, JobState, Policy, Reason, SchedCore,
    Throughputs, TypeFilter, Vendor,
};
use gigafab_exec::{AssignedAccel, DeviceVendor, Executor, LaunchSpec, Outcome, RunStatus};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::auth::{Principal, Role, hash_token, new_token};
use crate::error::ApiError;
use crate::model::*;
use crate::store::Store;
use crate::time::{parse_rfc3339, rfc3339};

/// Most accelerators one job may ask for.
pub const MAX_GPUS: i64 = 65_536;
/// Longest time limit, seconds (30 days).
pub const MAX_TIME_LIMIT_S: i64 = 30 * 86_400;
/// Default time limit, seconds.
pub const DEFAULT_TIME_LIMIT_S: i64 = 3_600;
/// Most commands taken into one transaction.
const MAX_BATCH: usize = 1024;

/// A value bound to an SQL parameter.
#[derive(Debug, Clone)]
pub enum Arg {
    I(i64),
    F(f64),
    S(String),
    OI(Option<i64>),
    OF(Option<f64>),
    OS(Option<String>),
}

/// One statement of a transaction.
#[derive(Debug, Clone)]
pub struct Op {
    pub sql: std::borrow::Cow<'static, str>,
    pub args: Vec<Arg>,
}

/// What a request asks of the controller.
#[derive(Debug)]
pub enum Action {
    Submit(Box<SubmitReq>),
    Cancel(i64),
    CreateOrg(OrgReq),
    CreateProject(ProjectReq),
    CreateUser(UserReq),
    CreateToken(TokenReq),
    RevokeToken(i64),
    ListTokens,
    DisableUser(i64),
    CreateAlloc(AllocReq),
    Drain(String, bool),
    ListOrgs,
    ListProjects,
    ListUsers,
    ListAllocs,
    GetAlloc(i64),
    Usage,
    Fleet,
    /// Prometheus exposition text (admin, operator).
    Metrics,
}

/// What the controller answers a command: a status and a body, or an error.
pub type Answer = Result<(StatusCode, Value), ApiError>;

/// A request with its caller and where to answer.
pub struct Cmd {
    pub who: Principal,
    pub action: Action,
    pub reply: oneshot::Sender<Answer>,
}

/// State shared with the HTTP handlers.
pub struct Shared {
    pub store: Store,
    /// Token hash -> caller (live tokens only).
    pub tokens: RwLock<HashMap<String, Principal>>,
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
    fn push<T>(q: &mut std::collections::VecDeque<T>, v: T) {
        if q.len() == 64 {
            q.pop_front();
        }
        q.push_back(v);
    }
}

impl Shared {
    /// Sends a command and waits for its answer.
    pub async fn ask(
        &self,
        who: Principal,
        action: Action,
    ) -> Result<(StatusCode, Value), ApiError> {
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
        let h = hash_token(token);
        let p = self.tokens.read().ok()?.get(&h).cloned()?;
        match p.expires_ms {
            Some(e) if self.clock.now_ms() >= e => None,
            _ => Some(p),
        }
    }
}

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
}

/// Whose identity jobs run under (docs/security.md).
#[derive(Clone, Debug)]
pub enum Isolation {
    /// Every job runs as the server's own account `user`: nothing separates
    /// tenants' jobs from each other. Unless the operator `accepted` it
    /// (`--single-user`), a second organisation is refused.
    Shared { user: String, accepted: bool },
    /// Each job runs as the POSIX account of its user, else of its
    /// organisation (the server runs as root and drops to it).
    Accounts(AccountMap),
}

impl Isolation {
    /// One identity for all, accepted: tests, benchmarks, one-tenant machines.
    pub fn single_user() -> Isolation {
        Isolation::Shared {
            user: String::new(),
            accepted: true,
        }
    }
}

/// gigafab users and organisations → POSIX accounts (`--job-accounts`).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountMap {
    /// User login (`ORG/NAME`, or the plain name of an admin or operator)
    /// → account (wins over the organisation's).
    #[serde(default)]
    pub users: BTreeMap<String, String>,
    /// Organisation name → the account of all its members.
    #[serde(default)]
    pub orgs: BTreeMap<String, String>,
}

impl AccountMap {
    /// The account of the user whose login is `user` (`ORG/NAME` for an
    /// organisation's member, the plain name for admins and operators) in
    /// `org`.
    /// Checks the map's keys: `[users]` keys are `ORG/NAME` or a plain
    /// name, `[orgs]` keys an organisation name.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = |n: &str| valid_name(n, "name").is_ok();
        for key in self.users.keys() {
            let ok = match key.split_once('/') {
                Some((o, n)) => name_ok(o) && name_ok(n),
                None => name_ok(key),
            };
            if !ok {
                return Err(format!(
                    "[users] `{}`: a key is ORG/NAME for an organisation's member or NAME for an admin or operator",
                    gigafab_core::time::excerpt(key, 80)
                ));
            }
        }
        for key in self.orgs.keys() {
            if !name_ok(key) {
                return Err(format!(
                    "[orgs] `{}`: not an organisation name",
                    gigafab_core::time::excerpt(key, 80)
                ));
            }
        }
        Ok(())
    }

    pub fn account(&self, user: &str, org: &str) -> Option<&str> {
        self.users
            .get(user)
            .or_else(|| self.orgs.get(org))
            .map(String::as_str)
    }
}

struct Org {
    id: i64,
    name: String,
    category: String,
    created_ms: i64,
}

struct Project {
    id: i64,
    org: i64,
    name: String,
}

struct User {
    id: i64,
    name: String,
    org: Option<i64>,
    role: Role,
    /// Disabled: no token of theirs works, none can be made.
    disabled: bool,
}

struct TokenRec {
    user: i64,
    hash: String,
    created_ms: i64,
    expires_ms: Option<i64>,
}

/// Days a token lives unless its request says otherwise.
pub const DEFAULT_TOKEN_DAYS: f64 = 90.0;
/// Longest life of a token, days.
pub const MAX_TOKEN_DAYS: f64 = 3650.0;

struct Alloc {
    id: i64,
    org: i64,
    name: String,
    granted_gpu_s: f64,
    /// Charged by ended runs.
    used_gpu_s: f64,
    /// Energy and carbon of ended runs, J and g.
    energy_j: f64,
    carbon_g: f64,
    valid_from_ms: i64,
    valid_until_ms: i64,
    qos: i64,
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
    fn used_at(&self, now: i64) -> f64 {
        self.used_gpu_s + (self.run_rate * now as f64 - self.run_start_sum).max(0.0) / 1000.0
    }
    fn state(&self, now: i64) -> &'static str {
        if now < self.valid_from_ms {
            "pending"
        } else if now >= self.valid_until_ms {
            "expired"
        } else if self.used_at(now) >= self.granted_gpu_s {
            "exhausted"
        } else {
            "active"
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
}

/// Most "waiting" events one job records; later changes of its reason only
/// update the job's `reason`.
pub const MAX_WAIT_EVENTS: u32 = 4;

#[derive(Default)]
struct Ids {
    org: i64,
    project: i64,
    user: i64,
    token: i64,
    alloc: i64,
    job: i64,
    audit: i64,
}

struct Pending {
    reply: oneshot::Sender<Result<(StatusCode, Value), ApiError>>,
    answer: Result<(StatusCode, Value), ApiError>,
    /// Tokens that become valid once committed.
    tokens: Vec<(String, Principal)>,
}

/// The controller's state.
pub struct Controller {
    cfg: CtlConfig,
    shared: Arc<Shared>,
    core: SchedCore,
    orgs: BTreeMap<i64, Org>,
    projects: BTreeMap<i64, Project>,
    users: BTreeMap<i64, User>,
    tokens: BTreeMap<i64, TokenRec>,
    allocs: BTreeMap<i64, Alloc>,
    jobs: HashMap<i64, LiveJob>,
    core_job: Vec<i64>,
    /// Per core job: why it waited at the last pass (0 not yet, 1 for
    /// capacity, 2 for its turn, 3 for its allocation's window, 4 for power).
    core_wait: Vec<u8>,
    ids: Ids,
    /// Per node: job using each device slot.
    devices: Vec<Vec<Option<i64>>>,
    node_names: Vec<String>,
    node_by_name: HashMap<String, u32>,
    ops: Vec<Op>,
    pending: Vec<Pending>,
    launches: Vec<i64>,
    dirty: bool,
    /// The row of the job `end_job` last ended.
    last_ended: Option<JobRow>,
    /// Energy integrated from telemetry samples, per device.
    meter: gigafab_telemetry::EnergyMeter,
    /// Launches to try again (job, not before ms): the engine was unreachable.
    relaunch: Vec<(i64, i64)>,
    /// Jobs whose earlier launch may have reached the engine: their next
    /// launch looks for that run first.
    retry: std::collections::HashSet<i64>,
    /// Runs of preempted jobs that were asked to stop and have not yet
    /// (job, run handle): polled until they end; the job is not launched
    /// again before.
    stopping: HashMap<i64, String>,
    /// When the loop polls the runs next, and schedules next (ms).
    next_poll: i64,
    next_sched: i64,
    /// The core's last wake-up request (ms).
    wake: Option<i64>,
    /// Commits failed in a row (the loop backs off).
    failed_commits: u32,
    /// The node whose devices the telemetry reports.
    tele_node: Option<u32>,
    tele_failed: bool,
    /// The connection commits go through (opened at the first commit,
    /// closed after a failed one).
    writer: Option<sqlx::AnyConnection>,
}

fn op(sql: &'static str, args: Vec<Arg>) -> Op {
    Op {
        sql: sql.into(),
        args,
    }
}

/// Inserts that a commit folds into multi-row statements (one round trip
/// for a whole batch of submissions).
const FOLDABLE: [&str; 3] = [JOB_INSERT, EVENT_INSERT, AUDIT_INSERT];

/// Most parameters in one statement (SQLite allows 32766, PostgreSQL 65535).
const MAX_PARAMS: usize = 30_000;

/// `INSERT INTO t (cols) VALUES ($1, ..), ($k, ..), ..` for `rows` rows of
/// `width` values, from the single-row form.
fn multi_row_sql(single: &str, width: usize, rows: usize) -> String {
    let head = single.split(" VALUES ").next().unwrap_or(single);
    let mut s = String::with_capacity(head.len() + rows * width * 6);
    s.push_str(head);
    s.push_str(" VALUES ");
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..width {
            if c > 0 {
                s.push_str(", ");
            }
            n += 1;
            s.push('$');
            s.push_str(&n.to_string());
        }
        s.push(')');
    }
    s
}

/// Folds the foldable inserts of `ops` into multi-row statements. Each
/// run of foldable inserts between two other statements is folded on its
/// own, so every statement still follows the ones it depends on.
pub fn fold_ops(ops: Vec<Op>) -> Vec<Op> {
    let mut out: Vec<Op> = Vec::new();
    let mut groups: Vec<(&'static str, Vec<Vec<Arg>>)> = Vec::new();
    fn flush(groups: &mut Vec<(&'static str, Vec<Vec<Arg>>)>, out: &mut Vec<Op>) {
        for (sql, rows) in groups.drain(..) {
            let width = rows[0].len().max(1);
            let per = (MAX_PARAMS / width).max(1);
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                let chunk: Vec<Vec<Arg>> = rows.by_ref().take(per).collect();
                if chunk.len() == 1 {
                    let args = chunk.into_iter().next().unwrap_or_default();
                    out.push(Op {
                        sql: sql.into(),
                        args,
                    });
                } else {
                    out.push(Op {
                        sql: multi_row_sql(sql, width, chunk.len()).into(),
                        args: chunk.into_iter().flatten().collect(),
                    });
                }
            }
        }
    }
    for o in ops {
        match FOLDABLE.iter().find(|f| **f == o.sql) {
            Some(f) => match groups.iter_mut().find(|g| g.0 == *f) {
                Some(g) => g.1.push(o.args),
                None => groups.push((f, vec![o.args])),
            },
            None => {
                flush(&mut groups, &mut out);
                out.push(o);
            }
        }
    }
    flush(&mut groups, &mut out);
    out
}

fn valid_name(s: &str, what: &str) -> Result<(), ApiError> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::invalid(format!(
            "{what}: `{}` is not a valid name (1-64 of A-Z a-z 0-9 - _ .)",
            s.chars().take(80).collect::<String>()
        )));
    }
    Ok(())
}

const JOB_INSERT: &str = "INSERT INTO jobs (id, org_id, user_id, alloc_id, project_id, name, spec, gpus, time_limit_s, state, reason, exit_code, submitted_ms, started_ms, ended_ms, accelerators, handle, gpu_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";
const JOB_UPDATE: &str = "UPDATE jobs SET state = $2, reason = $3, exit_code = $4, started_ms = $5, ended_ms = $6, accelerators = $7, handle = $8, gpu_s = $9, spec = $10, energy_j = $11, carbon_g = $12, energy_source = $13 WHERE id = $1";
const EVENT_INSERT: &str =
    "INSERT INTO job_events (job_id, seq, at_ms, kind, message) VALUES ($1, $2, $3, $4, $5)";
const AUDIT_INSERT: &str = "INSERT INTO audit (id, at_ms, user_id, user_name, action, object, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Columns of a job row joined with names, in [`row_to_job`] order.
pub const JOB_COLUMNS: &str = "j.id, j.org_id, o.name, j.user_id, u.name, j.alloc_id, j.project_id, j.name, j.spec, j.gpus, j.time_limit_s, j.state, j.reason, j.exit_code, j.submitted_ms, j.started_ms, j.ended_ms, j.accelerators, j.handle, j.gpu_s, j.energy_j, j.carbon_g, j.energy_source FROM jobs j JOIN orgs o ON o.id = j.org_id JOIN users u ON u.id = j.user_id";

/// A user's name without its organisation: the store keeps members as
/// `ORG/NAME` (names are unique within an organisation only).
pub fn short_name(stored: String) -> String {
    match stored.rsplit_once('/') {
        Some((_, name)) => name.to_string(),
        None => stored,
    }
}

/// The login of `name` in `org` as the store keeps it (see [`short_name`]).
pub fn login(org: Option<&str>, name: &str) -> String {
    match org {
        Some(o) => format!("{o}/{name}"),
        None => name.to_string(),
    }
}

pub fn row_to_job(r: &sqlx::any::AnyRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: r.try_get(0)?,
        org_id: r.try_get(1)?,
        org: r.try_get(2)?,
        user_id: r.try_get(3)?,
        user: short_name(r.try_get(4)?),
        alloc_id: r.try_get(5)?,
        project_id: r.try_get(6)?,
        name: r.try_get(7)?,
        spec: r.try_get(8)?,
        gpus: r.try_get(9)?,
        time_limit_s: r.try_get(10)?,
        state: r.try_get(11)?,
        reason: r.try_get(12)?,
        exit_code: r.try_get(13)?,
        submitted_ms: r.try_get(14)?,
        started_ms: r.try_get(15)?,
        ended_ms: r.try_get(16)?,
        accelerators: r.try_get(17)?,
        handle: r.try_get(18)?,
        gpu_s: r.try_get(19)?,
        energy_j: r.try_get(20)?,
        carbon_g: r.try_get(21)?,
        energy_source: r.try_get(22)?,
    })
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
    if parts.is_empty() {
        "any".into()
    } else {
        parts.join(" ")
    }
}

impl Controller {
    /// Loads the state from the store (creating the first admin on an empty
    /// store) and adopts the runs of jobs recorded as running. Returns the
    /// controller and, on a first start without a given token, the new
    /// admin token to show once.
    pub async fn load(
        cfg: CtlConfig,
        shared: Arc<Shared>,
    ) -> Result<(Controller, Option<String>), sqlx::Error> {
        let (mut c, shown) = Controller::read(cfg, shared).await?;
        if !c.ops.is_empty() {
            c.commit().await?;
        }
        Ok((c, shown))
    }

    /// Reads the state from the store; what reading it decided (adopted
    /// runs that ended meanwhile, relaunches) waits in `ops` for the next
    /// commit.
    async fn read(
        cfg: CtlConfig,
        shared: Arc<Shared>,
    ) -> Result<(Controller, Option<String>), sqlx::Error> {
        let policy = cfg.policy.clone();
        let core = SchedCore::new(cfg.factory.clone(), policy, cfg.throughputs.clone());
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
        let mut c = Controller {
            cfg,
            shared,
            core,
            orgs: BTreeMap::new(),
            projects: BTreeMap::new(),
            users: BTreeMap::new(),
            tokens: BTreeMap::new(),
            allocs: BTreeMap::new(),
            jobs: HashMap::new(),
            core_job: Vec::new(),
            core_wait: Vec::new(),
            ids: Ids::default(),
            devices,
            node_names,
            node_by_name,
            ops: Vec::new(),
            pending: Vec::new(),
            launches: Vec::new(),
            dirty: true,
            last_ended: None,
            meter: gigafab_telemetry::EnergyMeter::new(),
            relaunch: Vec::new(),
            retry: std::collections::HashSet::new(),
            stopping: HashMap::new(),
            next_poll: 0,
            next_sched: 0,
            wake: None,
            failed_commits: 0,
            tele_node: None,
            tele_failed: false,
            writer: None,
        };
        c.tele_node = c.telemetry_node();
        let shown = c.load_rows().await?;
        Ok((c, shown))
    }

    async fn load_rows(&mut self) -> Result<Option<String>, sqlx::Error> {
        let pool = self.shared.store.pool.clone();
        let now = self.shared.clock.now_ms();
        for r in sqlx::query("SELECT id, name, category, created_ms FROM orgs ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let o = Org {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                category: r.try_get(2)?,
                created_ms: r.try_get(3)?,
            };
            self.ids.org = self.ids.org.max(o.id);
            self.orgs.insert(o.id, o);
        }
        for r in sqlx::query("SELECT id, org_id, name FROM projects ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let p = Project {
                id: r.try_get(0)?,
                org: r.try_get(1)?,
                name: r.try_get(2)?,
            };
            self.ids.project = self.ids.project.max(p.id);
            self.projects.insert(p.id, p);
        }
        for r in sqlx::query("SELECT id, name, org_id, role, disabled_ms FROM users ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let role: String = r.try_get(3)?;
            let u = User {
                id: r.try_get(0)?,
                name: short_name(r.try_get(1)?),
                org: r.try_get(2)?,
                role: Role::parse(&role).unwrap_or(Role::Member),
                disabled: r.try_get::<Option<i64>, _>(4)?.is_some(),
            };
            self.ids.user = self.ids.user.max(u.id);
            self.users.insert(u.id, u);
        }
        let mut cache = HashMap::new();
        for r in sqlx::query(
            "SELECT id, user_id, hash, revoked_ms, created_ms, expires_ms FROM tokens ORDER BY id",
        )
        .fetch_all(&pool)
        .await?
        {
            let id: i64 = r.try_get(0)?;
            self.ids.token = self.ids.token.max(id);
            let revoked: Option<i64> = r.try_get(3)?;
            if revoked.is_some() {
                continue;
            }
            let t = TokenRec {
                user: r.try_get(1)?,
                hash: r.try_get(2)?,
                created_ms: r.try_get(4)?,
                expires_ms: r.try_get(5)?,
            };
            let hash = t.hash.clone();
            self.tokens.insert(id, t);
            if let Some(p) = self.principal_of(self.tokens[&id].user, id) {
                cache.insert(hash, p);
            }
        }
        *self.shared.tokens.write().expect("token cache") = cache;
        for r in sqlx::query("SELECT id, org_id, name, granted_gpu_s, used_gpu_s, valid_from_ms, valid_until_ms, qos_priority, energy_j, carbon_g FROM allocations ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let id: i64 = r.try_get(0)?;
            let a = self.new_alloc(
                id,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
            );
            self.allocs.insert(id, a);
            let used: f64 = r.try_get(4)?;
            let a = self.allocs.get_mut(&id).expect("just added");
            a.used_gpu_s = used;
            a.energy_j = r.try_get(8)?;
            a.carbon_g = r.try_get(9)?;
            self.ids.alloc = self.ids.alloc.max(id);
        }
        for (k, r) in [
            ("job", "SELECT COALESCE(MAX(id), 0) FROM jobs"),
            ("audit", "SELECT COALESCE(MAX(id), 0) FROM audit"),
        ] {
            let v: i64 = sqlx::query(r).fetch_one(&pool).await?.try_get(0)?;
            if k == "job" {
                self.ids.job = v;
            } else {
                self.ids.audit = v;
            }
        }
        for r in sqlx::query("SELECT name FROM drained_nodes")
            .fetch_all(&pool)
            .await?
        {
            let name: String = r.try_get(0)?;
            if let Some(&n) = self.node_by_name.get(&name) {
                self.core.drain(n);
            }
        }
        // active jobs, oldest first
        let q =
            format!("SELECT {JOB_COLUMNS} WHERE j.state IN ('queued', 'running') ORDER BY j.id");
        let rows = sqlx::query(&q).fetch_all(&pool).await?;
        let mut seqs: HashMap<i64, i64> = HashMap::new();
        for r in sqlx::query(
            "SELECT e.job_id, MAX(e.seq) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.state IN ('queued', 'running') GROUP BY e.job_id",
        )
        .fetch_all(&pool)
        .await?
        {
            seqs.insert(r.try_get(0)?, r.try_get(1)?);
        }
        let mut adopt = Vec::new();
        for r in &rows {
            let row = row_to_job(r).map_err(|e| {
                let id: Option<i64> = r.try_get(0).ok();
                sqlx::Error::Protocol(format!(
                    "job {} in the store cannot be read ({e}): the store is damaged; restore it from a backup",
                    id.map_or("?".to_string(), |i| i.to_string())
                ))
            })?;
            let spec: StoredSpec = serde_json::from_str(&row.spec).unwrap_or_default();
            let next_seq = seqs.get(&row.id).copied().unwrap_or(0) + 1;
            let id = row.id;
            let running = row.state == "running";
            self.restore_job(row, spec, next_seq);
            if running {
                adopt.push(id);
            }
        }
        for a in self.allocs.values() {
            self.core.restore_usage(a.core, a.used_at(now));
        }
        for id in adopt {
            self.adopt(id, now);
        }
        // first start: an administrator and a default allocation
        if self.users.is_empty() {
            return Ok(Some(self.bootstrap(now)));
        }
        Ok(None)
    }

    fn bootstrap(&mut self, now: i64) -> String {
        let given = self.cfg.bootstrap_token.clone();
        let token = given.clone().unwrap_or_else(new_token);
        let uid = self.next_user();
        self.users.insert(
            uid,
            User {
                id: uid,
                name: "admin".into(),
                org: None,
                role: Role::Admin,
                disabled: false,
            },
        );
        self.ops.push(op(
            "INSERT INTO users (id, name, org_id, role, created_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![
                Arg::I(uid),
                Arg::S("admin".into()),
                Arg::OI(None),
                Arg::S("admin".into()),
                Arg::I(now),
            ],
        ));
        // the bootstrap token does not expire (revoke it once other admins exist)
        let p = self
            .add_token(uid, &token, now, None)
            .expect("user just added");
        self.shared
            .tokens
            .write()
            .expect("token cache")
            .insert(hash_token(&token), p.clone());
        // a default organisation and allocation so that a first job can run
        let oid = self.next_org();
        self.orgs.insert(
            oid,
            Org {
                id: oid,
                name: "default".into(),
                category: "public".into(),
                created_ms: now,
            },
        );
        self.ops.push(op(
            "INSERT INTO orgs (id, name, category, created_ms) VALUES ($1, $2, $3, $4)",
            vec![
                Arg::I(oid),
                Arg::S("default".into()),
                Arg::S("public".into()),
                Arg::I(now),
            ],
        ));
        let aid = self.next_alloc();
        let until = now + 3650 * 86_400_000;
        let a = self.new_alloc(aid, oid, "default".into(), 1e6 * 3600.0, now, until, 0);
        self.insert_alloc_op(&a, now);
        self.allocs.insert(aid, a);
        self.audit(
            &p,
            now,
            "bootstrap",
            "user admin",
            "first start: admin user, org default, allocation default".into(),
        );
        if given.is_some() {
            String::new()
        } else {
            token
        }
    }

    /// The first node of the first pool whose vendor is the telemetry
    /// devices' (device index = accelerator index on that node).
    fn telemetry_node(&self) -> Option<u32> {
        let t = self.shared.telemetry.as_ref()?;
        let devs = t.devices().ok()?;
        let want = match devs.first()?.vendor {
            gigafab_telemetry::Vendor::Nvidia => Vendor::Nvidia,
            gigafab_telemetry::Vendor::Amd => Vendor::Amd,
            gigafab_telemetry::Vendor::Other => Vendor::Other,
        };
        let f = &self.cfg.factory;
        f.pools
            .iter()
            .find(|p| f.catalog.get(p.accel).vendor == want)
            .map(|p| p.first_node)
    }

    /// Reads the telemetry and integrates the devices' energy.
    fn sample_telemetry(&mut self) {
        let Some(t) = self.shared.telemetry.clone() else {
            return;
        };
        match t.sample() {
            Ok(samples) => {
                self.meter.add_all(&samples);
            }
            Err(e) => {
                if !self.tele_failed {
                    tracing::warn!("telemetry: {e}; energy falls back to the model");
                    self.tele_failed = true;
                }
            }
        }
    }

    /// Measured energy of a run that ended at `now`: the devices' meters
    /// since its start, plus the modelled node share (`model_j` minus the
    /// modelled accelerator energy). None without telemetry readings.
    fn measured_energy(
        &self,
        j: &LiveJob,
        cj: &gigafab_core::Job,
        model_j: f64,
        now: i64,
    ) -> Option<f64> {
        if j.meter_start.is_empty() || self.tele_failed {
            return None;
        }
        let measured: f64 = j
            .meter_start
            .iter()
            .map(|&(i, e0)| (self.meter.energy_j(i) - e0).max(0.0))
            .sum();
        if measured <= 0.0 {
            return None;
        }
        let dt = (now - j.row.started_ms.unwrap_or(now)).max(0) as f64 / 1000.0;
        let model_accel = cj.gpus as f64 * cj.power_w * dt;
        Some((model_j - model_accel).max(0.0) + measured)
    }

    fn principal_of(&self, user: i64, token_id: i64) -> Option<Principal> {
        let u = self.users.get(&user).filter(|u| !u.disabled)?;
        Some(Principal {
            user_id: u.id,
            name: u.name.clone(),
            role: u.role,
            org_id: u.org,
            token_id,
            expires_ms: self.tokens.get(&token_id).and_then(|t| t.expires_ms),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn new_alloc(
        &mut self,
        id: i64,
        org: i64,
        name: String,
        granted_gpu_s: f64,
        valid_from_ms: i64,
        valid_until_ms: i64,
        qos: i64,
    ) -> Alloc {
        let category = self
            .orgs
            .get(&org)
            .and_then(|o| Category::parse(&o.category))
            .unwrap_or(Category::Academia);
        let spec = AllocationSpec {
            id: id.to_string(),
            tenant: org.to_string(),
            category,
            granted_gpu_hours: Some(granted_gpu_s / 3600.0),
            valid_from_s: valid_from_ms as f64 / 1000.0,
            valid_until_s: Some(valid_until_ms as f64 / 1000.0),
            qos_priority: qos.clamp(-1_000_000, 1_000_000) as i32,
            shares: Some((granted_gpu_s / 3600.0).max(1.0)),
        };
        let core = self.core.add_allocation(spec);
        Alloc {
            id,
            org,
            name,
            granted_gpu_s,
            used_gpu_s: 0.0,
            energy_j: 0.0,
            carbon_g: 0.0,
            valid_from_ms,
            valid_until_ms,
            qos,
            core,
            run_rate: 0.0,
            run_start_sum: 0.0,
            queued: 0,
            running: 0,
            ended: 0,
        }
    }

    fn insert_alloc_op(&mut self, a: &Alloc, now: i64) {
        self.ops.push(op(
            "INSERT INTO allocations (id, org_id, name, granted_gpu_s, used_gpu_s, valid_from_ms, valid_until_ms, qos_priority, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                Arg::I(a.id),
                Arg::I(a.org),
                Arg::S(a.name.clone()),
                Arg::F(a.granted_gpu_s),
                Arg::F(a.used_gpu_s),
                Arg::I(a.valid_from_ms),
                Arg::I(a.valid_until_ms),
                Arg::I(a.qos),
                Arg::I(now),
            ],
        ));
    }

    fn next_user(&mut self) -> i64 {
        self.ids.user += 1;
        self.ids.user
    }
    fn next_org(&mut self) -> i64 {
        self.ids.org += 1;
        self.ids.org
    }
    fn next_alloc(&mut self) -> i64 {
        self.ids.alloc += 1;
        self.ids.alloc
    }

    fn add_token(
        &mut self,
        user: i64,
        token: &str,
        now: i64,
        expires_ms: Option<i64>,
    ) -> Option<Principal> {
        self.ids.token += 1;
        let id = self.ids.token;
        let hash = hash_token(token);
        self.ops.push(op(
            "INSERT INTO tokens (id, user_id, hash, created_ms, revoked_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Arg::I(id),
                Arg::I(user),
                Arg::S(hash.clone()),
                Arg::I(now),
                Arg::OI(None),
                Arg::OI(expires_ms),
            ],
        ));
        self.tokens.insert(
            id,
            TokenRec {
                user,
                hash,
                created_ms: now,
                expires_ms,
            },
        );
        self.principal_of(user, id)
    }

    /// Whether `who` may manage (list, revoke, disable) the tokens of `user`:
    /// an admin, the user themself, or an owner of the user's organisation.
    fn manages(&self, who: &Principal, user: i64) -> bool {
        who.role == Role::Admin
            || who.user_id == user
            || (who.role == Role::Owner
                && self
                    .users
                    .get(&user)
                    .is_some_and(|u| u.org.is_some() && u.org == who.org_id))
    }

    fn token_json(&self, id: i64, t: &TokenRec) -> Value {
        json!({
            "id": id,
            "user": t.user,
            "user_name": self.users.get(&t.user).map(|u| u.name.clone()),
            "created_at": rfc3339(t.created_ms),
            "expires_at": t.expires_ms.map(rfc3339),
        })
    }

    fn list_tokens(&self, who: &Principal) -> Value {
        let items: Vec<Value> = self
            .tokens
            .iter()
            .filter(|(_, t)| self.manages(who, t.user))
            .map(|(id, t)| self.token_json(*id, t))
            .collect();
        json!({"items": items, "next": null})
    }

    /// Disables a user: every token of theirs stops working at once, and
    /// no new one can be made (admin; owner of the user's organisation).
    fn disable_user(&mut self, who: &Principal, id: i64, now: i64) -> Result<Value, ApiError> {
        let not_found = || ApiError::not_found("user_not_found", format!("user {id} not found"));
        let u = self.users.get(&id).ok_or_else(not_found)?;
        if !(who.role == Role::Admin
            || (who.role == Role::Owner && u.org.is_some() && u.org == who.org_id))
        {
            return Err(
                if who.global() || (u.org.is_some() && u.org == who.org_id) {
                    ApiError::forbidden(
                        "only an admin, or an owner of the user's organisation, disables users",
                    )
                } else {
                    not_found()
                },
            );
        }
        if id == who.user_id {
            return Err(ApiError::invalid("you cannot disable yourself"));
        }
        let ids: Vec<i64> = self
            .tokens
            .iter()
            .filter(|(_, t)| t.user == id)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in &ids {
            if let Some(t) = self.tokens.remove(tid) {
                if let Ok(mut c) = self.shared.tokens.write() {
                    c.remove(&t.hash);
                }
                self.ops.push(op(
                    "UPDATE tokens SET revoked_ms = $2 WHERE id = $1",
                    vec![Arg::I(*tid), Arg::I(now)],
                ));
            }
        }
        if let Some(u) = self.users.get_mut(&id) {
            u.disabled = true;
        }
        self.ops.push(op(
            "UPDATE users SET disabled_ms = $2 WHERE id = $1",
            vec![Arg::I(id), Arg::I(now)],
        ));
        self.audit(
            who,
            now,
            "disable_user",
            &format!("user {id}"),
            format!("{} tokens revoked", ids.len()),
        );
        Ok(json!({"id": id, "disabled": true, "tokens_revoked": ids.len()}))
    }

    fn audit(&mut self, who: &Principal, now: i64, action: &str, object: &str, detail: String) {
        self.ids.audit += 1;
        self.ops.push(op(
            AUDIT_INSERT,
            vec![
                Arg::I(self.ids.audit),
                Arg::I(now),
                Arg::OI(Some(who.user_id)),
                Arg::S(self.login_of(who.user_id)),
                Arg::S(action.into()),
                Arg::S(object.into()),
                Arg::S(detail),
            ],
        ));
    }

    fn event(&mut self, job: i64, now: i64, kind: &str, message: String) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let seq = j.next_seq;
        j.next_seq += 1;
        self.ops.push(op(
            EVENT_INSERT,
            vec![
                Arg::I(job),
                Arg::I(seq),
                Arg::I(now),
                Arg::S(kind.into()),
                Arg::S(message),
            ],
        ));
    }

    fn update_job_op(&mut self, job: i64) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        let r = &j.row;
        let spec = serde_json::to_string(&j.spec).unwrap_or_default();
        self.ops.push(op(
            JOB_UPDATE,
            vec![
                Arg::I(r.id),
                Arg::S(r.state.clone()),
                Arg::OS(r.reason.clone()),
                Arg::OI(r.exit_code),
                Arg::OI(r.started_ms),
                Arg::OI(r.ended_ms),
                Arg::OS(r.accelerators.clone()),
                Arg::OS(r.handle.clone()),
                Arg::F(r.gpu_s),
                Arg::S(spec),
                Arg::F(r.energy_j),
                Arg::OF(r.carbon_g),
                Arg::OS(r.energy_source.clone()),
            ],
        ));
    }

    /// The highest job id the store has seen.
    pub fn max_job_id(&self) -> i64 {
        self.ids.job
    }

    /// The login of a user: `ORG/NAME` for an organisation's member, the
    /// plain name for users of no organisation.
    fn login_of(&self, user: i64) -> String {
        match self.users.get(&user) {
            Some(u) => login(
                u.org
                    .and_then(|o| self.orgs.get(&o))
                    .map(|o| o.name.as_str()),
                &u.name,
            ),
            None => String::new(),
        }
    }

    /// The POSIX account jobs of `user` in `org` run as (None: the server's).
    fn account_of(&self, user: i64, org: i64) -> Option<String> {
        let Isolation::Accounts(map) = &self.cfg.isolation else {
            return None;
        };
        let u = self.login_of(user);
        let o = self.orgs.get(&org).map_or("", |o| o.name.as_str());
        map.account(&u, o).map(str::to_string)
    }

    /// Why a job can never run, in words: the fleet's pools.
    fn fleet_summary(&self, r: gigafab_core::Reason) -> String {
        if r != gigafab_core::Reason::Unsatisfiable {
            return format!(" ({})", r.code());
        }
        let f = &self.cfg.factory;
        let pools: Vec<String> = f
            .pools
            .iter()
            .map(|p| {
                let t = f.catalog.get(p.accel);
                format!(
                    "{} ({} nodes × {} {}, {} GB each)",
                    p.name, p.nodes, p.per_node, t.id, t.memory_gb
                )
            })
            .collect();
        format!("; its pools: {}", pools.join(", "))
    }

    fn core_spec(&self, row: &JobRow, spec: &StoredSpec) -> JobSpec {
        let limit = row.time_limit_s as f64;
        JobSpec {
            id: row.id.to_string(),
            submit_s: row.submitted_ms as f64 / 1000.0,
            gpus: row.gpus as u32,
            types: TypeFilter {
                types: spec.types.clone(),
                vendor: spec.vendor.as_deref().and_then(Vendor::parse),
                min_memory_gb: spec.min_memory_gb,
                sites: Vec::new(),
            },
            duration_s: Some(limit),
            steps: None,
            job_type: None,
            time_limit_s: Some(limit),
            tenant: Some(row.org_id.to_string()),
            category: None,
            priority: spec.priority,
            preemptible: spec.preemptible,
            checkpoint_s: None,
            deadline_s: None,
        }
    }

    fn restore_job(&mut self, row: JobRow, spec: StoredSpec, next_seq: i64) {
        let Some(a) = self.allocs.get(&row.alloc_id) else {
            return;
        };
        let alloc_core = a.core;
        let cs = self.core_spec(&row, &spec);
        let mut devices = Vec::new();
        let idx = if row.state == "running" {
            let labels: Vec<String> = row
                .accelerators
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let mut counts: BTreeMap<u32, u16> = BTreeMap::new();
            for l in &labels {
                if let Some((n, i)) = l.rsplit_once('/')
                    && let Some(&node) = self.node_by_name.get(n)
                    && let Ok(i) = i.parse::<u32>()
                    && let Some(slot) = self.devices[node as usize].get_mut(i as usize)
                {
                    *slot = Some(row.id);
                    devices.push((node, i));
                    *counts.entry(node).or_insert(0) += 1;
                }
            }
            let placement: Vec<(u32, u16)> = counts.into_iter().collect();
            let pool = placement
                .first()
                .map_or(0, |&(n, _)| self.core.cluster.pool_of(n));
            let start = row.started_ms.unwrap_or(row.submitted_ms) as f64 / 1000.0;
            let w = spec.billing_weight.unwrap_or(1.0);
            let a = self.allocs.get_mut(&row.alloc_id).expect("checked");
            a.running += 1;
            a.run_rate += w * row.gpus as f64;
            a.run_start_sum += w * row.gpus as f64 * row.started_ms.unwrap_or(0) as f64;
            self.core
                .restore_running(&cs, alloc_core, pool, &placement, start)
        } else {
            self.allocs.get_mut(&row.alloc_id).expect("checked").queued += 1;
            self.core
                .submit(&cs, alloc_core, row.submitted_ms as f64 / 1000.0)
        };
        self.map_core(idx, row.id);
        self.jobs.insert(
            row.id,
            LiveJob {
                row,
                spec,
                core: idx,
                next_seq,
                devices,
                cancel_requested: false,
                meter_start: Vec::new(),
                wait_events: 0,
            },
        );
    }

    fn map_core(&mut self, idx: JobIdx, id: i64) {
        let i = idx as usize;
        if self.core_job.len() <= i {
            self.core_job.resize(i + 1, 0);
            self.core_wait.resize(i + 1, 0);
        }
        self.core_job[i] = id;
    }

    /// After a restart: finds the run of a job recorded as running.
    fn adopt(&mut self, id: i64, now: i64) {
        let handle = self.jobs.get(&id).and_then(|j| j.row.handle.clone());
        let exec = self.shared.executor.clone();
        match exec.adopt(id, handle.as_deref()) {
            Ok((found, RunStatus::Running)) => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.row.handle = found.or(handle);
                }
                self.update_job_op(id);
                self.event(
                    id,
                    now,
                    "adopted",
                    "still running after a server restart; adopted".into(),
                );
            }
            Ok((found, RunStatus::Exited(rec))) => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.row.handle = found.or(handle);
                }
                let state = outcome_state(rec.outcome);
                self.end_job(
                    id,
                    rec.ended_at_ms.min(now).max(0),
                    state,
                    rec.exit_code.map(i64::from),
                    format!("{} (while the server was down)", rec.message),
                );
            }
            Ok((_, RunStatus::Lost { .. })) if handle.is_none() => {
                // decided and committed, but the server stopped before its
                // launch was recorded, and the engine has no trace of it:
                // it never started, so it starts now on its accelerators
                self.event(
                    id,
                    now,
                    "adopted",
                    "never launched before a server restart; launching now".into(),
                );
                self.launches.push(id);
            }
            Ok((_, RunStatus::Lost { message })) => {
                self.end_job(id, now, "failed", None, format!("lost: {message}"));
            }
            Err(e) if e.is_transient() => {
                // the engine is unreachable now: keep the job, poll later
                self.event(
                    id,
                    now,
                    "adopted",
                    format!("kept while the engine is unreachable: {e}"),
                );
                if handle.is_none() {
                    self.relaunch.push((id, now + 5_000));
                    self.retry.insert(id);
                }
            }
            Err(e) => {
                self.end_job(id, now, "failed", None, format!("lost: {e}"));
            }
        }
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
        let tick_ms = self.cfg.tick.as_millis() as i64;
        loop {
            let wait = if !self.ops.is_empty() || self.dirty || !self.launches.is_empty() {
                Duration::ZERO
            } else {
                let now = self.shared.clock.now_ms();
                let until = self.next_poll.min(self.next_sched) - now;
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
                _ = tokio::time::sleep(wait) => {}
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            let now = self.shared.clock.now_ms();
            if !self.turn(now, &mut batch).await {
                continue;
            }
            if stopping {
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
    async fn turn(&mut self, now: i64, batch: &mut Vec<Cmd>) -> bool {
        let tick_ms = self.cfg.tick.as_millis() as i64;
        for c in batch.drain(..) {
            self.handle(c, now);
        }
        if now >= self.next_poll {
            self.poll_runs(now);
            self.next_poll = now + self.cfg.poll.as_millis() as i64;
        }
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
            self.next_sched = now + tick_ms;
            if let Some(w) = wake {
                self.next_sched = self.next_sched.min(w.max(now + 1));
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
        self.launch_pending(self.shared.clock.now_ms());
        true
    }

    /// One whole turn at `now` (tests and the twin/controller conformance):
    /// the commands sent so far, a poll of every run and a scheduling
    /// pass, whatever the loop's timers say. Time is only what `now` says.
    pub async fn step(&mut self, now: i64, rx: &mut mpsc::Receiver<Cmd>) -> bool {
        let mut batch = Vec::new();
        while let Ok(c) = rx.try_recv() {
            batch.push(c);
        }
        self.next_poll = now;
        self.next_sched = now;
        self.turn(now, &mut batch).await
    }

    /// When the last scheduling pass asked to be called again (ms), even
    /// if nothing happens before.
    pub fn wakeup(&self) -> Option<i64> {
        self.wake
    }

    fn answer(&mut self, err: Option<ApiError>) {
        for p in self.pending.drain(..) {
            match &err {
                None => {
                    if !p.tokens.is_empty()
                        && let Ok(mut t) = self.shared.tokens.write()
                    {
                        t.extend(p.tokens);
                    }
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
                Ok((c, _)) => {
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
        let ops = fold_ops(std::mem::take(&mut self.ops));
        let mut conn = match self.writer.take() {
            Some(c) => c,
            None => self.shared.store.writer().await?,
        };
        match write_ops(&mut conn, ops).await {
            Ok(()) => {
                self.writer = Some(conn);
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

    fn handle(&mut self, c: Cmd, now: i64) {
        let mark = self.ops.len();
        let mut tokens = Vec::new();
        let answer = self.act(&c.who, c.action, now, &mut tokens);
        if answer.is_err() {
            // a refused command leaves no trace
            self.ops.truncate(mark);
            tokens.clear();
        }
        self.pending.push(Pending {
            reply: c.reply,
            answer,
            tokens,
        });
    }

    fn act(
        &mut self,
        who: &Principal,
        action: Action,
        now: i64,
        tokens: &mut Vec<(String, Principal)>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let ok = |v: Value| Ok((StatusCode::OK, v));
        let created = |v: Value| Ok((StatusCode::CREATED, v));
        match action {
            Action::Submit(req) => created(self.submit(who, *req, now)?),
            Action::Cancel(id) => ok(self.cancel(who, id, now)?),
            Action::CreateOrg(req) => created(self.create_org(who, req, now)?),
            Action::CreateProject(req) => created(self.create_project(who, req, now)?),
            Action::CreateUser(req) => created(self.create_user(who, req, now, tokens)?),
            Action::CreateToken(req) => created(self.create_token(who, req, now, tokens)?),
            Action::RevokeToken(id) => ok(self.revoke_token(who, id, now)?),
            Action::ListTokens => ok(self.list_tokens(who)),
            Action::DisableUser(id) => ok(self.disable_user(who, id, now)?),
            Action::CreateAlloc(req) => created(self.create_alloc(who, req, now)?),
            Action::Drain(node, drain) => ok(self.drain(who, &node, drain, now)?),
            Action::ListOrgs => ok(json!({"items": self
                .orgs
                .values()
                .filter(|o| who.sees_org(o.id))
                .map(|o| self.org_json(o))
                .collect::<Vec<_>>(), "next": null})),
            Action::ListProjects => ok(json!({"items": self
                .projects
                .values()
                .filter(|p| who.sees_org(p.org))
                .map(|p| json!({"id": p.id, "org": self.org_name(p.org), "name": p.name}))
                .collect::<Vec<_>>(), "next": null})),
            Action::ListUsers => {
                if who.role == Role::Member {
                    return Err(ApiError::forbidden("members cannot list users"));
                }
                ok(json!({"items": self
                    .users
                    .values()
                    .filter(|u| who.global() || (u.org.is_some() && u.org == who.org_id))
                    .map(|u| self.user_json(u))
                    .collect::<Vec<_>>(), "next": null}))
            }
            Action::ListAllocs => ok(json!({"items": self
                .allocs
                .values()
                .filter(|a| who.sees_org(a.org))
                .map(|a| self.alloc_json(a, now))
                .collect::<Vec<_>>(), "next": null})),
            Action::GetAlloc(id) => match self.allocs.get(&id) {
                Some(a) if who.sees_org(a.org) => ok(self.alloc_json(a, now)),
                _ => Err(ApiError::not_found(
                    "allocation_not_found",
                    format!("allocation {id} not found"),
                )),
            },
            Action::Usage => ok(json!({"items": self
                .allocs
                .values()
                .filter(|a| who.sees_org(a.org))
                .map(|a| json!({
                    "allocation": a.id,
                    "name": a.name,
                    "org": self.org_name(a.org),
                    "granted_gpu_hours": a.granted_gpu_s / 3600.0,
                    "used_gpu_hours": a.used_at(now) / 3600.0,
                    "running_gpus": a.run_rate,
                    "jobs_queued": a.queued,
                    "jobs_running": a.running,
                    "jobs_ended": a.ended,
                    "state": a.state(now),
                    "energy_kwh": a.energy_j / 3.6e6,
                    "carbon_kg": a.carbon_g / 1e3,
                }))
                .collect::<Vec<_>>(),
                "orgs": self.org_usage(who, now)})),
            Action::Fleet => ok(self.fleet_json(who)),
            Action::Metrics => {
                if !who.global() {
                    return Err(ApiError::forbidden("metrics are for admins and operators"));
                }
                let snap = self.metrics_snapshot(now);
                ok(Value::String(crate::metrics::render(
                    &self.shared.metrics,
                    &snap,
                )))
            }
        }
    }

    /// The gauges of `/metrics`, read from the live state.
    fn metrics_snapshot(&mut self, now: i64) -> crate::metrics::Snapshot {
        use crate::metrics::{AllocSnap, PoolSnap, SiteSnap, Snapshot};
        let f = &self.cfg.factory;
        let mut pools: Vec<PoolSnap> = f
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let st = &self.core.cluster.pools[i];
                let drained: u64 = (st.first_node..st.first_node + st.nodes)
                    .map(|n| self.core.drained_accelerators(n) as u64)
                    .sum();
                let total = p.accelerators();
                PoolSnap {
                    name: p.name.clone(),
                    busy: st.cap_total - st.free_total,
                    idle: st.free_total,
                    drained,
                    down: total.saturating_sub(st.cap_total + drained),
                    ..PoolSnap::default()
                }
            })
            .collect();
        let mut per_alloc: HashMap<i64, (u64, f64)> = HashMap::new();
        let now_s = now as f64 / 1000.0;
        for j in self.core.queue_order() {
            let wait = (now_s - self.core.jobs[j as usize].submit_s).max(0.0);
            for p in self.core.candidate_pools(j) {
                let ps = &mut pools[p as usize];
                ps.queued += 1;
                ps.oldest_wait_s = ps.oldest_wait_s.max(wait);
            }
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            if let Some(job) = self.jobs.get(&id) {
                let e = per_alloc.entry(job.row.alloc_id).or_default();
                e.0 += 1;
                e.1 = e.1.max(wait);
            }
        }
        let sites = self
            .core
            .site_energy(now_s)
            .into_iter()
            .zip(&f.sites)
            .map(|(e, s)| SiteSnap {
                name: s.name.clone(),
                power_w: e.power_w,
                budget_w: e.budget_w,
            })
            .collect();
        let allocations = self
            .allocs
            .values()
            .map(|a| {
                let (queued, oldest_wait_s) = per_alloc.get(&a.id).copied().unwrap_or_default();
                AllocSnap {
                    id: a.id,
                    name: a.name.clone(),
                    org: self.org_name(a.org),
                    queued,
                    oldest_wait_s,
                    used_gpu_hours: a.used_at(now) / 3600.0,
                    granted_gpu_hours: a.granted_gpu_s / 3600.0,
                    energy_kwh: a.energy_j / 3.6e6,
                }
            })
            .collect();
        Snapshot {
            pools,
            sites,
            allocations,
            queued: self.core.queued() as u64,
            running: self.core.n_running as u64,
        }
    }

    /// Use per organisation (ended runs' energy and carbon; GPU-hours
    /// including running jobs).
    fn org_usage(&self, who: &Principal, now: i64) -> Value {
        let mut per: BTreeMap<i64, (f64, f64, f64)> = BTreeMap::new();
        for a in self.allocs.values().filter(|a| who.sees_org(a.org)) {
            let e = per.entry(a.org).or_default();
            e.0 += a.used_at(now);
            e.1 += a.energy_j;
            e.2 += a.carbon_g;
        }
        Value::Array(
            per.into_iter()
                .map(|(o, (gs, ej, cg))| {
                    json!({"org": self.org_name(o), "used_gpu_hours": gs / 3600.0,
                           "energy_kwh": ej / 3.6e6, "carbon_kg": cg / 1e3})
                })
                .collect(),
        )
    }

    fn org_name(&self, id: i64) -> String {
        self.orgs
            .get(&id)
            .map_or_else(String::new, |o| o.name.clone())
    }

    fn org_json(&self, o: &Org) -> Value {
        json!({"id": o.id, "name": o.name, "category": o.category, "created_at": rfc3339(o.created_ms)})
    }

    fn user_json(&self, u: &User) -> Value {
        json!({"id": u.id, "name": u.name, "org": u.org.map(|o| self.org_name(o)), "role": u.role.as_str()})
    }

    fn alloc_json(&self, a: &Alloc, now: i64) -> Value {
        json!({
            "id": a.id,
            "org": self.org_name(a.org),
            "name": a.name,
            "granted_gpu_hours": a.granted_gpu_s / 3600.0,
            "used_gpu_hours": a.used_at(now) / 3600.0,
            "valid_from": rfc3339(a.valid_from_ms),
            "valid_until": rfc3339(a.valid_until_ms),
            "qos_priority": a.qos,
            "state": a.state(now),
        })
    }

    fn org_by_name(&self, name: &str) -> Option<i64> {
        self.orgs.values().find(|o| o.name == name).map(|o| o.id)
    }

    fn create_org(&mut self, who: &Principal, req: OrgReq, now: i64) -> Result<Value, ApiError> {
        if who.role != Role::Admin {
            return Err(ApiError::forbidden("only an admin creates organisations"));
        }
        if let Isolation::Shared {
            user,
            accepted: false,
        } = &self.cfg.isolation
            && !self.orgs.is_empty()
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "isolation_required",
                format!(
                    "this server runs every job as the Unix user `{user}`: organisations \
                     would not be isolated from each other; run it as root with \
                     --job-accounts FILE (docs/security.md), or start it with --single-user \
                     to accept one identity for all"
                ),
            ));
        }
        valid_name(&req.name, "name")?;
        if Category::parse(&req.category).is_none() {
            return Err(ApiError::invalid(format!(
                "category: `{}` is not one of startup, sme, industry, academia, public",
                req.category
            )));
        }
        if self.org_by_name(&req.name).is_some() {
            return Err(ApiError::conflict(
                "conflict",
                format!("an organisation named `{}` exists", req.name),
            ));
        }
        let id = self.next_org();
        let o = Org {
            id,
            name: req.name.clone(),
            category: req.category.to_ascii_lowercase(),
            created_ms: now,
        };
        self.ops.push(op(
            "INSERT INTO orgs (id, name, category, created_ms) VALUES ($1, $2, $3, $4)",
            vec![
                Arg::I(id),
                Arg::S(o.name.clone()),
                Arg::S(o.category.clone()),
                Arg::I(now),
            ],
        ));
        let v = self.org_json(&o);
        self.orgs.insert(id, o);
        self.audit(
            who,
            now,
            "create_org",
            &format!("org {}", req.name),
            v.to_string(),
        );
        Ok(v)
    }

    /// The organisation `name` if the caller may act on it (404 otherwise).
    fn visible_org(&self, who: &Principal, name: &str) -> Result<i64, ApiError> {
        match self.org_by_name(name) {
            Some(o) if who.sees_org(o) => Ok(o),
            _ => Err(ApiError::not_found(
                "org_not_found",
                format!("organisation `{name}` not found"),
            )),
        }
    }

    fn create_project(
        &mut self,
        who: &Principal,
        req: ProjectReq,
        now: i64,
    ) -> Result<Value, ApiError> {
        let org = self.visible_org(who, &req.org)?;
        if !(who.role == Role::Admin || who.role == Role::Owner) {
            return Err(ApiError::forbidden(
                "only an admin or the organisation's owner creates projects",
            ));
        }
        valid_name(&req.name, "name")?;
        if self
            .projects
            .values()
            .any(|p| p.org == org && p.name == req.name)
        {
            return Err(ApiError::conflict(
                "conflict",
                format!("project `{}` exists", req.name),
            ));
        }
        self.ids.project += 1;
        let id = self.ids.project;
        self.ops.push(op(
            "INSERT INTO projects (id, org_id, name, created_ms) VALUES ($1, $2, $3, $4)",
            vec![
                Arg::I(id),
                Arg::I(org),
                Arg::S(req.name.clone()),
                Arg::I(now),
            ],
        ));
        self.projects.insert(
            id,
            Project {
                id,
                org,
                name: req.name.clone(),
            },
        );
        let v = json!({"id": id, "org": req.org, "name": req.name});
        self.audit(
            who,
            now,
            "create_project",
            &format!("project {id}"),
            v.to_string(),
        );
        Ok(v)
    }

    fn create_user(
        &mut self,
        who: &Principal,
        req: UserReq,
        now: i64,
        tokens: &mut Vec<(String, Principal)>,
    ) -> Result<Value, ApiError> {
        valid_name(&req.name, "name")?;
        let role_s = req.role.as_deref().unwrap_or("member");
        let role = Role::parse(role_s).ok_or_else(|| {
            ApiError::invalid(format!(
                "role: `{role_s}` is not one of admin, operator, owner, member"
            ))
        })?;
        let org = match (&req.org, role.in_org()) {
            (Some(name), true) => Some(self.visible_org(who, name)?),
            (None, true) => {
                return Err(ApiError::invalid(format!(
                    "org: a {role_s} belongs to an organisation"
                )));
            }
            (Some(_), false) => {
                return Err(ApiError::invalid(format!(
                    "org: an {role_s} belongs to no organisation"
                )));
            }
            (None, false) => None,
        };
        let allowed = match who.role {
            Role::Admin => true,
            Role::Owner => role.in_org() && org == who.org_id,
            _ => false,
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "you cannot create a user with role {role_s}"
            )));
        }
        // names are unique within an organisation (or among the users of
        // none): a conflict reveals nothing of other organisations
        if self
            .users
            .values()
            .any(|u| u.org == org && u.name == req.name)
        {
            return Err(ApiError::conflict(
                "conflict",
                match org {
                    Some(o) => format!(
                        "a user named `{}` exists in organisation `{}`",
                        req.name,
                        self.org_name(o)
                    ),
                    None => format!("a user named `{}` of no organisation exists", req.name),
                },
            ));
        }
        let id = self.next_user();
        let stored = login(org.map(|o| self.org_name(o)).as_deref(), &req.name);
        self.ops.push(op(
            "INSERT INTO users (id, name, org_id, role, created_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![
                Arg::I(id),
                Arg::S(stored),
                Arg::OI(org),
                Arg::S(role.as_str().into()),
                Arg::I(now),
            ],
        ));
        let u = User {
            id,
            name: req.name.clone(),
            org,
            role,
            disabled: false,
        };
        let mut v = self.user_json(&u);
        self.users.insert(id, u);
        let token = new_token();
        let expires = now + (DEFAULT_TOKEN_DAYS * 86_400_000.0) as i64;
        let p = self
            .add_token(id, &token, now, Some(expires))
            .expect("user just added");
        tokens.push((hash_token(&token), p));
        self.audit(
            who,
            now,
            "create_user",
            &format!("user {}", req.name),
            v.to_string(),
        );
        v["token"] = Value::String(token);
        Ok(v)
    }

    fn create_token(
        &mut self,
        who: &Principal,
        req: TokenReq,
        now: i64,
        tokens: &mut Vec<(String, Principal)>,
    ) -> Result<Value, ApiError> {
        let target = match &req.user {
            None => who.user_id,
            Some(r) => {
                let id = r
                    .id()
                    .ok_or_else(|| ApiError::invalid("user: expected a user id"))?;
                let u = self.users.get(&id).filter(|u| {
                    who.role == Role::Admin
                        || u.id == who.user_id
                        || (who.role == Role::Owner && u.org.is_some() && u.org == who.org_id)
                });
                u.ok_or_else(|| {
                    ApiError::not_found("user_not_found", format!("user {id} not found"))
                })?
                .id
            }
        };
        if self.users.get(&target).is_some_and(|u| u.disabled) {
            return Err(ApiError::conflict(
                "user_disabled",
                format!("user {target} is disabled"),
            ));
        }
        let days = req.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
        if !(days.is_finite() && days > 0.0 && days <= MAX_TOKEN_DAYS) {
            return Err(ApiError::invalid(format!(
                "expires_in_days: must be within 0..={MAX_TOKEN_DAYS}"
            )));
        }
        let expires = now + (days * 86_400_000.0) as i64;
        let token = new_token();
        let p = self
            .add_token(target, &token, now, Some(expires))
            .ok_or_else(|| {
                ApiError::not_found("user_not_found", format!("user {target} not found"))
            })?;
        let tid = p.token_id;
        tokens.push((hash_token(&token), p));
        self.audit(
            who,
            now,
            "create_token",
            &format!("token {tid}"),
            format!("for user {target}"),
        );
        Ok(json!({"id": tid, "user": target, "token": token, "expires_at": rfc3339(expires)}))
    }

    fn revoke_token(&mut self, who: &Principal, id: i64, now: i64) -> Result<Value, ApiError> {
        let t = self
            .tokens
            .get(&id)
            .filter(|t| self.manages(who, t.user))
            .ok_or_else(|| ApiError::not_found("not_found", format!("token {id} not found")))?;
        let hash = t.hash.clone();
        self.tokens.remove(&id);
        if let Ok(mut c) = self.shared.tokens.write() {
            c.remove(&hash);
        }
        self.ops.push(op(
            "UPDATE tokens SET revoked_ms = $2 WHERE id = $1",
            vec![Arg::I(id), Arg::I(now)],
        ));
        self.audit(
            who,
            now,
            "revoke_token",
            &format!("token {id}"),
            String::new(),
        );
        Ok(json!({"id": id, "revoked": true}))
    }

    fn create_alloc(
        &mut self,
        who: &Principal,
        req: AllocReq,
        now: i64,
    ) -> Result<Value, ApiError> {
        // fault injection for the tests of a dead controller (debug builds,
        // and only with GIGAFAB_FAULTS=1)
        #[cfg(debug_assertions)]
        if req.name.as_deref() == Some("__controller_panic__")
            && std::env::var("GIGAFAB_FAULTS").as_deref() == Ok("1")
        {
            panic!("injected controller fault");
        }
        if who.role != Role::Admin {
            return Err(ApiError::forbidden("only an admin grants allocations"));
        }
        let org = self.visible_org(who, &req.org)?;
        if !(req.gpu_hours.is_finite() && req.gpu_hours > 0.0 && req.gpu_hours <= 1e9) {
            return Err(ApiError::invalid("gpu_hours: must be > 0 and at most 1e9"));
        }
        let days = req.days.unwrap_or(365.0);
        if !(days.is_finite() && days > 0.0 && days <= 36_500.0) {
            return Err(ApiError::invalid("days: must be > 0 and at most 36500"));
        }
        let from = match &req.valid_from {
            Some(s) => {
                parse_rfc3339(s).map_err(|e| ApiError::invalid(format!("valid_from: {e}")))?
            }
            None => now,
        };
        let qos = req.qos_priority.unwrap_or(0);
        if !(-1000..=1000).contains(&qos) {
            return Err(ApiError::invalid(
                "qos_priority: must be within -1000..=1000",
            ));
        }
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", req.org, self.ids.alloc + 1));
        valid_name(&name, "name")?;
        let id = self.next_alloc();
        let until = from + (days * 86_400_000.0) as i64;
        let a = self.new_alloc(id, org, name, req.gpu_hours * 3600.0, from, until, qos);
        self.insert_alloc_op(&a, now);
        let v = self.alloc_json(&a, now);
        self.allocs.insert(id, a);
        self.dirty = true;
        self.audit(
            who,
            now,
            "create_allocation",
            &format!("allocation {id}"),
            v.to_string(),
        );
        Ok(v)
    }

    /// A node as `who` may see it: another organisation's job ids are not
    /// shown (only how many accelerators are busy).
    fn node_json(&self, n: u32, who: &Principal) -> Value {
        let pool_i = self.core.cluster.pool_of(n) as usize;
        let p = &self.cfg.factory.pools[pool_i];
        let t = self.cfg.factory.catalog.get(p.accel);
        let (cap, free) = self.core.cluster.node_state(n);
        let mut jobs: Vec<i64> = self.devices[n as usize]
            .iter()
            .flatten()
            .copied()
            .filter(|id| {
                who.global()
                    || self
                        .jobs
                        .get(id)
                        .is_some_and(|j| who.sees_org(j.row.org_id))
            })
            .collect();
        jobs.dedup();
        let busy = self.devices[n as usize]
            .iter()
            .filter(|d| d.is_some())
            .count();
        json!({
            "name": self.node_names[n as usize],
            "pool": p.name,
            "site": self.cfg.factory.sites.get(p.site).map(|s| s.name.clone()),
            "type": t.id,
            "vendor": t.vendor.to_string(),
            "accelerators": p.per_node,
            "free": free,
            "busy": busy,
            "down": if self.core.is_drained(n) { 0 } else { p.per_node as i64 - cap as i64 },
            "state": if self.core.is_drained(n) { "drained" } else { "up" },
            "jobs": jobs,
        })
    }

    fn fleet_json(&self, who: &Principal) -> Value {
        let nodes: Vec<Value> = (0..self.node_names.len() as u32)
            .map(|n| self.node_json(n, who))
            .collect();
        json!({
            "nodes": nodes,
            "accelerators": self.cfg.factory.accelerators(),
            "free": self.core.cluster.free_total(),
            "busy": self.core.busy_accelerators(),
        })
    }

    fn drain(
        &mut self,
        who: &Principal,
        node: &str,
        drain: bool,
        now: i64,
    ) -> Result<Value, ApiError> {
        if !who.global() {
            return Err(ApiError::forbidden(
                "only an admin or operator drains nodes",
            ));
        }
        let n = *self.node_by_name.get(node).ok_or_else(|| {
            ApiError::not_found("node_not_found", format!("node `{node}` not found"))
        })?;
        let was = self.core.is_drained(n);
        if drain && !was {
            self.core.drain(n);
            self.ops.push(op(
                "INSERT INTO drained_nodes (name, at_ms) VALUES ($1, $2)",
                vec![Arg::S(node.into()), Arg::I(now)],
            ));
        } else if !drain && was {
            self.core.resume(n);
            self.ops.push(op(
                "DELETE FROM drained_nodes WHERE name = $1",
                vec![Arg::S(node.into())],
            ));
            self.dirty = true;
        }
        self.audit(
            who,
            now,
            if drain { "drain" } else { "resume" },
            &format!("node {node}"),
            String::new(),
        );
        Ok(self.node_json(n, who))
    }

    fn submit(&mut self, who: &Principal, req: SubmitReq, now: i64) -> Result<Value, ApiError> {
        if who.role == Role::Operator {
            return Err(ApiError::forbidden("operators do not submit jobs"));
        }
        let alloc_id = req
            .allocation
            .id()
            .ok_or_else(|| ApiError::invalid("allocation: expected an allocation id"))?;
        let not_found = || {
            ApiError::not_found(
                "allocation_not_found",
                format!("allocation {alloc_id} not found in your organisation"),
            )
        };
        let a = self.allocs.get(&alloc_id).ok_or_else(not_found)?;
        if !who.sees_org(a.org) {
            return Err(not_found());
        }
        let alloc_org = a.org;
        if let Isolation::Accounts(_) = &self.cfg.isolation
            && self.account_of(who.user_id, alloc_org).is_none()
        {
            let user = self.login_of(who.user_id);
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_account",
                format!(
                    "user `{user}` has no POSIX account to run jobs as (neither the user nor \
                     the organisation is in the server's --job-accounts map); ask an operator"
                ),
            ));
        }
        match a.state(now) {
            "expired" => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "allocation_expired",
                    format!(
                        "allocation {alloc_id} expired at {}",
                        rfc3339(a.valid_until_ms)
                    ),
                ));
            }
            "exhausted" => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "allocation_exhausted",
                    format!(
                        "allocation {alloc_id} has used {:.2} of its {:.2} GPU-hours",
                        a.used_at(now) / 3600.0,
                        a.granted_gpu_s / 3600.0
                    ),
                ));
            }
            _ => {}
        }
        let (org, alloc_core) = (a.org, a.core);
        if !(1..=MAX_GPUS).contains(&req.gpus) {
            return Err(ApiError::invalid(format!(
                "gpus: {} is not within 1..={MAX_GPUS}",
                req.gpus
            )));
        }
        if req.command.is_empty() || req.command[0].is_empty() {
            return Err(ApiError::invalid(
                "command: needs a program (a non-empty array of strings)",
            ));
        }
        let total: usize = req.command.iter().map(String::len).sum();
        if req.command.len() > 4096 || total > 256 * 1024 {
            return Err(ApiError::invalid(
                "command: longer than 4096 arguments or 256 KiB",
            ));
        }
        if req.command.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::invalid(
                "command: an argument contains a NUL byte",
            ));
        }
        let name = req.name.clone().unwrap_or_else(|| {
            let p = &req.command[0];
            p.rsplit('/').next().unwrap_or(p).chars().take(64).collect()
        });
        if name.len() > 128 || name.contains('\0') {
            return Err(ApiError::invalid("name: at most 128 bytes"));
        }
        if req
            .memory_gb
            .is_some_and(|m| !(m.is_finite() && (0.001..=1e6).contains(&m)))
        {
            return Err(ApiError::invalid(
                "memory_gb: must be within 0.001..=1000000",
            ));
        }
        if req
            .cpus
            .is_some_and(|c| !(c.is_finite() && (0.01..=100_000.0).contains(&c)))
        {
            return Err(ApiError::invalid("cpus: must be within 0.01..=100000"));
        }
        let limit = req.time_limit_s.unwrap_or(DEFAULT_TIME_LIMIT_S);
        if !(1..=MAX_TIME_LIMIT_S).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "time_limit_s: {limit} is not within 1..={MAX_TIME_LIMIT_S} (30 days)"
            )));
        }
        let priority = req.priority.unwrap_or(0);
        if !(-10_000..=10_000).contains(&priority) {
            return Err(ApiError::invalid("priority: must be within -10000..=10000"));
        }
        let mut types: Vec<String> = req.types.clone().unwrap_or_default();
        if let Some(t) = &req.type_ {
            types.push(t.clone());
        }
        for t in &mut types {
            *t = t.trim().to_ascii_lowercase();
            if self.cfg.factory.catalog.index(t).is_none() {
                let fleet: std::collections::BTreeSet<&str> = self
                    .cfg
                    .factory
                    .pools
                    .iter()
                    .map(|p| self.cfg.factory.catalog.get(p.accel).id.as_str())
                    .collect();
                return Err(ApiError::invalid(format!(
                    "type: unknown accelerator type `{t}` (this fleet has: {}; known types: {})",
                    fleet.into_iter().collect::<Vec<_>>().join(", "),
                    self.cfg.factory.catalog.ids()
                )));
            }
        }
        let vendor = match &req.vendor {
            Some(v) => Some(
                Vendor::parse(v)
                    .ok_or_else(|| {
                        ApiError::invalid(format!("vendor: `{v}` is not nvidia, amd or other"))
                    })?
                    .to_string(),
            ),
            None => None,
        };
        if let Some(m) = req.min_memory_gb
            && !(m.is_finite() && m > 0.0 && m <= 100_000.0)
        {
            return Err(ApiError::invalid(
                "min_memory_gb: must be > 0 and at most 100000",
            ));
        }
        let env = req.env.clone().unwrap_or_default();
        if env.len() > 256 {
            return Err(ApiError::invalid("env: at most 256 variables"));
        }
        for (k, v) in &env {
            let okk = !k.is_empty()
                && k.len() <= 256
                && !k.as_bytes()[0].is_ascii_digit()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !okk || v.contains('\0') || v.len() > 64 * 1024 {
                return Err(ApiError::invalid(format!(
                    "env: bad variable `{}`",
                    k.chars().take(64).collect::<String>()
                )));
            }
            if k.starts_with("GIGAFAB_")
                || k == "CUDA_VISIBLE_DEVICES"
                || k == "ROCR_VISIBLE_DEVICES"
            {
                return Err(ApiError::invalid(format!("env: `{k}` is set by gigafab")));
            }
        }
        if let Some(w) = &req.workdir
            && (!w.starts_with('/') || w.contains('\0') || w.len() > 4096)
        {
            return Err(ApiError::invalid("workdir: must be an absolute path"));
        }
        let project_id = match &req.project {
            Some(p) => Some(
                self.projects
                    .values()
                    .find(|x| x.org == org && x.name == *p)
                    .map(|x| x.id)
                    .ok_or_else(|| {
                        ApiError::not_found(
                            "not_found",
                            format!("project `{p}` not found in the allocation's organisation"),
                        )
                    })?,
            ),
            None => None,
        };
        let spec = StoredSpec {
            command: req.command,
            env,
            workdir: req.workdir,
            types,
            vendor,
            min_memory_gb: req.min_memory_gb,
            priority: priority as i32,
            preemptible: req.preemptible.unwrap_or(false),
            project: req.project,
            billing_weight: None,
            memory_gb: req.memory_gb,
            cpus: req.cpus,
        };
        self.ids.job += 1;
        let id = self.ids.job;
        let row = JobRow {
            id,
            org_id: org,
            org: self.org_name(org),
            user_id: who.user_id,
            user: who.name.clone(),
            alloc_id,
            project_id,
            name,
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            gpus: req.gpus,
            time_limit_s: limit,
            state: "queued".into(),
            reason: None,
            exit_code: None,
            submitted_ms: now,
            started_ms: None,
            ended_ms: None,
            accelerators: None,
            handle: None,
            gpu_s: 0.0,
            energy_j: 0.0,
            carbon_g: None,
            energy_source: None,
        };
        let cs = self.core_spec(&row, &spec);
        if let Err(r) = self.core.check(&cs) {
            self.ids.job -= 1;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsatisfiable",
                format!(
                    "no pool of this fleet can ever run {}×{}{}",
                    req.gpus,
                    filter_label(&spec),
                    self.fleet_summary(r)
                ),
            ));
        }
        // its time limit is reserved against the grant when it starts: a
        // limit larger than what is left could never start
        let w = self.core.max_billing(&cs).unwrap_or(1.0);
        let need_h = limit as f64 * req.gpus as f64 * w / 3600.0;
        let a = &self.allocs[&alloc_id];
        let left_h = (a.granted_gpu_s - a.used_at(now)) / 3600.0;
        if need_h > left_h + 1e-9 {
            self.ids.job -= 1;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "exceeds_allocation",
                format!(
                    "its time limit reserves {need_h:.3} GPU-hours ({} s × {} accelerators × billing weight {w}) but allocation {alloc_id} has {left_h:.3} left; lower --time or ask for a larger allocation",
                    limit, req.gpus
                ),
            ));
        }
        self.ops.push(op(
            JOB_INSERT,
            vec![
                Arg::I(id),
                Arg::I(org),
                Arg::I(who.user_id),
                Arg::I(alloc_id),
                Arg::OI(project_id),
                Arg::S(row.name.clone()),
                Arg::S(row.spec.clone()),
                Arg::I(row.gpus),
                Arg::I(limit),
                Arg::S("queued".into()),
                Arg::OS(None),
                Arg::OI(None),
                Arg::I(now),
                Arg::OI(None),
                Arg::OI(None),
                Arg::OS(None),
                Arg::OS(None),
                Arg::F(0.0),
            ],
        ));
        let idx = self.core.submit(&cs, alloc_core, now as f64 / 1000.0);
        self.map_core(idx, id);
        let msg = format!(
            "queued: {}×{} for {} s on allocation {alloc_id}",
            row.gpus,
            filter_label(&spec),
            limit
        );
        let v = row.to_json(now);
        self.jobs.insert(
            id,
            LiveJob {
                row,
                spec,
                core: idx,
                next_seq: 1,
                devices: Vec::new(),
                cancel_requested: false,
                meter_start: Vec::new(),
                wait_events: 0,
            },
        );
        self.allocs.get_mut(&alloc_id).expect("checked").queued += 1;
        self.event(id, now, "submitted", msg);
        self.shared.metrics.jobs_submitted.inc();
        self.audit(
            who,
            now,
            "submit",
            &format!("job {id}"),
            format!("allocation {alloc_id}"),
        );
        self.dirty = true;
        Ok(v)
    }

    fn cancel(&mut self, who: &Principal, id: i64, now: i64) -> Result<Value, ApiError> {
        let Some(j) = self.jobs.get(&id) else {
            // ended or absent: the handler tells which from the store
            return Err(ApiError::not_found(
                "job_not_found",
                format!("job {id} not found"),
            ));
        };
        if !who.sees_org(j.row.org_id) {
            return Err(ApiError::not_found(
                "job_not_found",
                format!("job {id} not found"),
            ));
        }
        let allowed = match who.role {
            Role::Admin | Role::Operator | Role::Owner => true,
            Role::Member => j.row.user_id == who.user_id,
        };
        if !allowed {
            return Err(ApiError::forbidden("members cancel only their own jobs"));
        }
        let core_idx = j.core;
        let queued = j.row.state == "queued";
        let handle = j.row.handle.clone();
        let first = !j.cancel_requested;
        self.audit(who, now, "cancel", &format!("job {id}"), String::new());
        if queued {
            self.core.withdraw(core_idx, now as f64 / 1000.0);
            self.end_job(
                id,
                now,
                "cancelled",
                None,
                format!("cancelled by {}", who.name),
            );
            self.dirty = true;
            let mut row = self.last_ended.take().expect("just ended");
            row.reason = Some(format!("cancelled by {}", who.name));
            return Ok(row.to_json(now));
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.cancel_requested = true;
        }
        if first {
            if let Some(h) = &handle
                && let Err(e) = self.shared.executor.cancel(id, h)
            {
                tracing::warn!("job {id}: cancel: {e}");
            }
            self.event(
                id,
                now,
                "cancel_requested",
                format!("cancel requested by {}; stopping", who.name),
            );
        }
        let j = &self.jobs[&id];
        Ok(j.row.to_json(now))
    }
}

fn outcome_state(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::Failed => "failed",
        Outcome::TimedOut => "timeout",
        Outcome::Cancelled => "cancelled",
    }
}

impl Controller {
    /// Ends an active job: frees its accelerators, charges its allocation,
    /// records the state and an event, and forgets it.
    fn end_job(&mut self, id: i64, now: i64, state: &str, exit_code: Option<i64>, message: String) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let was_running = j.row.state == "running";
        let core_state = match state {
            "completed" => JobState::Completed,
            "timeout" => JobState::TimedOut,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        };
        let core_idx = j.core;
        let (mut energy_j, mut carbon_g, mut source) = (0.0, None, None);
        if was_running {
            self.core.end_run(core_idx, now as f64 / 1000.0, core_state);
            let cj = &self.core.jobs[core_idx as usize];
            let site = self.cfg.factory.pools[cj.run_pool as usize].site;
            energy_j = cj.energy_j;
            carbon_g = self.cfg.factory.sites[site]
                .carbon
                .as_ref()
                .map(|_| cj.carbon_g);
            source = Some("model".to_string());
            if let Some(e) = self.measured_energy(j, cj, energy_j, now) {
                let sp = &self.cfg.factory.sites[site];
                if let Some(cs) = &sp.carbon {
                    let s0 = j.row.started_ms.unwrap_or(now) as f64 / 1000.0;
                    carbon_g = Some(e * sp.pue * cs.mean(s0, now as f64 / 1000.0) / 3.6e6);
                }
                energy_j = e;
                source = Some("measured".to_string());
            }
        }
        let kind = match state {
            "completed" => "finished",
            s => s,
        };
        self.event(id, now, kind, message.clone());
        self.shared.metrics.finished(state);
        let j = self.jobs.get_mut(&id).expect("checked");
        let devices = std::mem::take(&mut j.devices);
        let w = j.spec.billing_weight.unwrap_or(1.0);
        let (gpus, alloc_id) = (j.row.gpus as f64, j.row.alloc_id);
        let started = j.row.started_ms;
        // this run's use (a preempted job's earlier runs are in gpu_s already)
        let mut charged = 0.0;
        if was_running && let Some(s) = started {
            charged = w * gpus * (now - s).max(0) as f64 / 1000.0;
            j.row.gpu_s += charged;
        }
        j.row.state = state.into();
        j.row.energy_j = energy_j;
        j.row.carbon_g = carbon_g;
        j.row.energy_source = source;
        j.row.exit_code = exit_code;
        j.row.ended_ms = Some(now);
        j.row.reason = Some(message);
        for (n, i) in devices {
            if let Some(d) = self.devices[n as usize].get_mut(i as usize) {
                *d = None;
            }
        }
        self.update_job_op(id);
        if let Some(a) = self.allocs.get_mut(&alloc_id) {
            if was_running {
                a.running = a.running.saturating_sub(1);
                a.run_rate = (a.run_rate - w * gpus).max(0.0);
                a.run_start_sum =
                    (a.run_start_sum - w * gpus * started.unwrap_or(0) as f64).max(0.0);
                if a.running == 0 {
                    a.run_rate = 0.0;
                    a.run_start_sum = 0.0;
                }
                a.used_gpu_s += charged;
            } else {
                a.queued = a.queued.saturating_sub(1);
            }
            a.ended += 1;
            a.energy_j += energy_j;
            a.carbon_g += carbon_g.unwrap_or(0.0);
            let (aid, used, e, c) = (a.id, a.used_gpu_s, a.energy_j, a.carbon_g);
            self.ops.push(op(
                "UPDATE allocations SET used_gpu_s = $2, energy_j = $3, carbon_g = $4 WHERE id = $1",
                vec![Arg::I(aid), Arg::F(used), Arg::F(e), Arg::F(c)],
            ));
        }
        self.last_ended = self.jobs.remove(&id).map(|j| j.row);
        self.dirty = true;
    }

    /// A run the scheduler preempted for a job of higher priority: its
    /// accelerators went to that job in the same pass. The run is asked to
    /// stop (SIGTERM, the grace to checkpoint, then SIGKILL; `scancel` on
    /// Slurm), its use so far is charged, and the job waits in the queue
    /// again; it is launched anew, from its own checkpoint, once the old
    /// run has ended.
    fn preempt_job(&mut self, id: i64, now: i64) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let handle = j.row.handle.take();
        let devices = std::mem::take(&mut j.devices);
        let w = j.spec.billing_weight.unwrap_or(1.0);
        let (gpus, alloc_id) = (j.row.gpus as f64, j.row.alloc_id);
        let started = j.row.started_ms.unwrap_or(now);
        let used = w * gpus * (now - started).max(0) as f64 / 1000.0;
        j.row.gpu_s += used;
        j.row.state = "queued".into();
        j.row.accelerators = None;
        j.row.reason = Some("preempted: waiting to run again".into());
        j.meter_start.clear();
        let cancel_requested = j.cancel_requested;
        for (n, i) in devices {
            if let Some(d) = self.devices[n as usize].get_mut(i as usize) {
                *d = None;
            }
        }
        if let Some(a) = self.allocs.get_mut(&alloc_id) {
            a.running = a.running.saturating_sub(1);
            a.queued += 1;
            a.run_rate = (a.run_rate - w * gpus).max(0.0);
            a.run_start_sum = (a.run_start_sum - w * gpus * started as f64).max(0.0);
            if a.running == 0 {
                a.run_rate = 0.0;
                a.run_start_sum = 0.0;
            }
            a.used_gpu_s += used;
            let (aid, u, e, c) = (a.id, a.used_gpu_s, a.energy_j, a.carbon_g);
            self.ops.push(op(
                "UPDATE allocations SET used_gpu_s = $2, energy_j = $3, carbon_g = $4 WHERE id = $1",
                vec![Arg::I(aid), Arg::F(u), Arg::F(e), Arg::F(c)],
            ));
        }
        self.launches.retain(|&l| l != id);
        if let Some(h) = handle {
            if !cancel_requested && let Err(e) = self.shared.executor.cancel(id, &h) {
                tracing::warn!("job {id}: stopping its preempted run: {e}");
            }
            self.stopping.insert(id, h);
        }
        self.update_job_op(id);
        self.event(
            id,
            now,
            "preempted",
            "preempted by a job of higher priority: its run is stopped and it waits to run again"
                .into(),
        );
        self.shared.metrics.jobs_preempted.inc();
    }

    /// Asks the executor how running jobs are doing.
    fn poll_runs(&mut self, now: i64) {
        self.sample_telemetry();
        let due: Vec<i64> = self
            .relaunch
            .iter()
            .filter(|r| r.1 <= now)
            .map(|r| r.0)
            .collect();
        if !due.is_empty() {
            self.relaunch.retain(|r| r.1 > now);
            self.launches
                .extend(due.into_iter().filter(|id| self.jobs.contains_key(id)));
        }
        let exec = self.shared.executor.clone();
        let mut running: Vec<(i64, String)> = self
            .jobs
            .values()
            .filter(|j| j.row.state == "running")
            .filter_map(|j| j.row.handle.clone().map(|h| (j.row.id, h)))
            .collect();
        let live = running.len();
        running.extend(self.stopping.iter().map(|(&id, h)| (id, h.clone())));
        // one query per engine for all its runs
        let states = exec.poll_all(&running);
        for (k, ((id, _), st)) in running.into_iter().zip(states).enumerate() {
            if k >= live {
                // a preempted run: gone once it has ended, whatever its end
                match st {
                    Ok(RunStatus::Running) => {}
                    Err(e) if e.is_transient() => {}
                    _ => {
                        self.stopping.remove(&id);
                    }
                }
                continue;
            }
            match st {
                Ok(RunStatus::Running) => {}
                Ok(RunStatus::Exited(rec)) => {
                    let state = outcome_state(rec.outcome);
                    let msg = match rec.outcome {
                        Outcome::Completed => "exit code 0".to_string(),
                        _ => rec.message.clone(),
                    };
                    self.end_job(id, now, state, rec.exit_code.map(i64::from), msg);
                }
                Ok(RunStatus::Lost { message }) => {
                    self.end_job(id, now, "failed", None, format!("lost: {message}"));
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!("job {id}: {e}");
                }
                Err(e) => {
                    self.end_job(id, now, "failed", None, format!("lost: {e}"));
                }
            }
        }
    }

    /// One scheduling pass: the core decides, memory and the store follow,
    /// launches wait for the commit. Returns the core's wake-up time (ms).
    fn schedule(&mut self, now: i64) -> Option<i64> {
        let now_s = now as f64 / 1000.0;
        let dec = self.core.schedule(now_s).clone();
        for &(j, r) in &dec.cancelled {
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            let msg = match r {
                Reason::AllocationExhausted => "allocation exhausted while waiting",
                Reason::AllocationExpired => "allocation expired while waiting",
                _ => "refused by the scheduler",
            };
            self.end_job(id, now, "cancelled", None, format!("{msg} ({})", r.code()));
        }
        for &j in &dec.started {
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            self.start_job(id, j, now);
        }
        for &(j, _) in &dec.preempted {
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            self.preempt_job(id, now);
        }
        self.record_waits(now);
        dec.wakeup.map(|w| (w * 1000.0) as i64)
    }

    fn start_job(&mut self, id: i64, j: JobIdx, now: i64) {
        let placement = self.core.jobs[j as usize].placement.clone();
        let pool = self.core.jobs[j as usize].run_pool as usize;
        let p = &self.cfg.factory.pools[pool];
        let t = self.cfg.factory.catalog.get(p.accel);
        let weight = t.billing_weight;
        let mut devices = Vec::new();
        for &(n, c) in &placement {
            let mut left = c;
            for (i, d) in self.devices[n as usize].iter_mut().enumerate() {
                if left == 0 {
                    break;
                }
                if d.is_none() {
                    *d = Some(id);
                    devices.push((n, i as u32));
                    left -= 1;
                }
            }
        }
        let labels: Vec<String> = devices
            .iter()
            .map(|&(n, i)| format!("{}/{}", self.node_names[n as usize], i))
            .collect();
        let meter_start: Vec<(u32, f64)> = devices
            .iter()
            .filter(|(n, _)| Some(*n) == self.tele_node)
            .map(|&(_, i)| (i, self.meter.energy_j(i)))
            .collect();
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.meter_start = meter_start;
        job.devices = devices;
        job.row.state = "running".into();
        job.row.started_ms = Some(now);
        job.row.reason = None;
        job.row.accelerators = Some(serde_json::to_string(&labels).unwrap_or_default());
        job.spec.billing_weight = Some(weight);
        let gpus = job.row.gpus as f64;
        let alloc_id = job.row.alloc_id;
        if let Some(a) = self.allocs.get_mut(&alloc_id) {
            a.queued = a.queued.saturating_sub(1);
            a.running += 1;
            a.run_rate += weight * gpus;
            a.run_start_sum += weight * gpus * now as f64;
        }
        self.update_job_op(id);
        self.event(
            id,
            now,
            "started",
            format!("started on {}", labels.join(", ")),
        );
        self.shared.metrics.jobs_started.inc();
        self.launches.push(id);
    }

    /// Records why queued jobs wait, when that changes.
    fn record_waits(&mut self, now: i64) {
        let policy = self.cfg.policy.kind.name();
        let now_s = now as f64 / 1000.0;
        let mut changed: Vec<(JobIdx, u8)> = Vec::new();
        // the scan reads only the core's arrays: no lookups, no strings
        for j in self.core.queue_order() {
            let ju = j as usize;
            let alloc = self.core.jobs[ju].alloc as usize;
            let kind = if now_s < self.core.allocs[alloc].spec.valid_from_s {
                3u8
            } else if self.core.reserve_check(j, now_s) == gigafab_core::Reserve::Wait {
                6
            } else if !self.core.fits_now(j) {
                if self.core.waits_on_drained(j) { 5 } else { 1 }
            } else if self.core.power_blocked(j) {
                4
            } else {
                2
            };
            if self.core_wait.get(ju).copied().unwrap_or(0) != kind {
                changed.push((j, kind));
            }
        }
        let mut by_reason: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (j, kind) in changed {
            self.core_wait[j as usize] = kind;
            let id = self.core_job[j as usize];
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let msg = match kind {
                3 => {
                    let a = &self.allocs[&job.row.alloc_id];
                    format!(
                        "waiting: allocation {} starts at {}",
                        a.id,
                        rfc3339(a.valid_from_ms)
                    )
                }
                1 => format!(
                    "waiting: no {}×{} gang free",
                    job.row.gpus,
                    filter_label(&job.spec)
                ),
                4 => "waiting: site power budget".to_string(),
                6 => {
                    let a = &self.allocs[&job.row.alloc_id];
                    format!(
                        "waiting: allocation {}: the time limits of its running jobs hold the rest of its {:.3} GPU-hours",
                        a.id,
                        a.granted_gpu_s / 3600.0
                    )
                }
                5 => {
                    let c = job.core;
                    let mut drained: Vec<&str> = Vec::new();
                    for p in self.core.candidate_pools(c) {
                        let st = &self.core.cluster.pools[p as usize];
                        for n in st.first_node..st.first_node + st.nodes {
                            if self.core.is_drained(n) && drained.len() < 8 {
                                drained.push(&self.node_names[n as usize]);
                            }
                        }
                    }
                    format!(
                        "waiting: no {}×{} gang free; drained: {}",
                        job.row.gpus,
                        filter_label(&job.spec),
                        drained.join(", ")
                    )
                }
                _ => format!("waiting: priority (other jobs come first in {policy} order)"),
            };
            let job = self.jobs.get_mut(&id).expect("present");
            if job.row.reason.as_deref() == Some(msg.as_str()) {
                // the reason it already has (reloaded after a restart):
                // nothing to record, nothing to write
                continue;
            }
            job.row.reason = Some(msg.clone());
            if job.wait_events < MAX_WAIT_EVENTS {
                job.wait_events += 1;
                self.event(id, now, "waiting", msg.clone());
            }
            by_reason.entry(msg).or_default().push(id);
        }
        // one statement per distinct reason
        for (msg, ids) in by_reason {
            for chunk in ids.chunks(1000) {
                let mut sql = String::from("UPDATE jobs SET reason = $1 WHERE id IN (");
                let mut args = Vec::with_capacity(chunk.len() + 1);
                args.push(Arg::S(msg.clone()));
                for (k, id) in chunk.iter().enumerate() {
                    if k > 0 {
                        sql.push_str(", ");
                    }
                    sql.push_str(&format!("${}", k + 2));
                    args.push(Arg::I(*id));
                }
                sql.push(')');
                self.ops.push(Op {
                    sql: sql.into(),
                    args,
                });
            }
        }
    }

    /// Starts the processes of jobs whose start is now durable.
    fn launch_pending(&mut self, now: i64) {
        let exec = self.shared.executor.clone();
        for id in std::mem::take(&mut self.launches) {
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
            if j.row.state != "running" {
                continue;
            }
            if self.stopping.contains_key(&id) {
                // its preempted run is still stopping: one engine run at a time
                self.relaunch
                    .push((id, now + self.cfg.poll.as_millis() as i64));
                continue;
            }
            let accels: Vec<AssignedAccel> = j
                .devices
                .iter()
                .map(|&(n, i)| {
                    let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                    let vendor = match self.cfg.factory.catalog.get(p.accel).vendor {
                        Vendor::Nvidia => DeviceVendor::Nvidia,
                        Vendor::Amd => DeviceVendor::Amd,
                        Vendor::Other => DeviceVendor::Other,
                    };
                    AssignedAccel {
                        node: self.node_names[n as usize].clone(),
                        index: i,
                        vendor,
                    }
                })
                .collect();
            let spec = LaunchSpec {
                job_id: id,
                command: j.spec.command.clone(),
                env: j
                    .spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                accelerators: accels,
                time_limit_s: j.row.time_limit_s as u64,
                workdir: j.spec.workdir.as_ref().map(Into::into),
                accel_type: j.devices.first().map(|&(n, _)| {
                    let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                    self.cfg.factory.catalog.get(p.accel).id.clone()
                }),
                gpus: j.row.gpus as u32,
                per_node: j
                    .devices
                    .first()
                    .map(|&(n, _)| {
                        self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].per_node
                    })
                    .unwrap_or(1),
                account: Some(j.row.alloc_id.to_string()),
                grant_gpu_minutes: self
                    .allocs
                    .get(&j.row.alloc_id)
                    .map(|a| (a.granted_gpu_s / 60.0).ceil() as u64),
                site: j.devices.first().map(|&(n, _)| {
                    let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                    self.cfg.factory.sites[p.site].name.clone()
                }),
                run_as: self.account_of(j.row.user_id, j.row.org_id),
                memory_bytes: j.spec.memory_gb.map(|g| (g * 1e9) as u64),
                cpus: j.spec.cpus,
                retry: self.retry.contains(&id),
            };
            match exec.launch(&spec) {
                Ok(h) => {
                    self.retry.remove(&id);
                    if let Some(j) = self.jobs.get_mut(&id) {
                        j.row.handle = Some(h);
                    }
                    self.update_job_op(id);
                    if self.jobs.get(&id).is_some_and(|j| j.cancel_requested)
                        && let Some(h) = self.jobs[&id].row.handle.clone()
                    {
                        let _ = exec.cancel(id, &h);
                    }
                }
                Err(e) if e.is_transient() => {
                    // launch again shortly (the executor adopts rather
                    // than submits twice)
                    self.event(id, now, "launch_deferred", format!("{e}"));
                    self.relaunch.push((id, now + 5_000));
                    self.retry.insert(id);
                }
                Err(e) => {
                    self.retry.remove(&id);
                    self.end_job(id, now, "failed", None, format!("cannot launch: {e}"));
                }
            }
        }
    }
}

/// Writes `ops` in one transaction on `conn`.
async fn write_ops(conn: &mut sqlx::AnyConnection, ops: Vec<Op>) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin().await?;
    for o in ops {
        let mut q = sqlx::query(&o.sql);
        for a in o.args {
            q = match a {
                Arg::I(v) => q.bind(v),
                Arg::F(v) => q.bind(v),
                Arg::S(v) => q.bind(v),
                Arg::OI(v) => q.bind(v),
                Arg::OF(v) => q.bind(v),
                Arg::OS(v) => q.bind(v),
            };
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await
}
