//! The scheduler: state, and a pass that turns (state, policy, now) into
//! decisions.
//!
//! [`SchedCore`] holds the jobs, the queue, the allocations and the free
//! capacity. Callers feed it events (`submit`, `finish`, `fail_accelerator`,
//! `repair`) and call [`SchedCore::schedule`] with the current time; the pass
//! reads no clock and does no I/O. The live control plane feeds wall-clock
//! time and runs the decisions on an executor; the digital twin feeds
//! virtual time and turns them into events.
//!
//! The pass ([`SchedCore::schedule`], here) runs in stages, each in its
//! own module: the queue order ([`order`]: each policy's key), the
//! candidates of a job ([`candidates`]: the filter, with run-time
//! factors), placement on the fleet ([`crate::cluster`], [`fleet`]),
//! backfill reservations ([`backfill`]), preemption ([`preempt`]), power
//! budgets and carbon ([`power`]), and the runs and their accounting
//! ([`runs`]). What a policy decides at each stage is one table,
//! [`crate::policy::PolicyTraits`].

use crate::catalog::TypeIdx;
use crate::cluster::{Cluster, NodeIdx, Placement};
use crate::factory::{Factory, PoolIdx};
use crate::policy::{FairshareWeights, Policy, PoolOrder, QueueOrder};
use crate::queue::{Queue, Queued};

mod backfill;
mod candidates;
mod deps;
mod fleet;
mod forecast;
mod idle;
mod invariants;
mod migrate;
mod order;
mod power;
mod preempt;
mod runs;
mod waits;

use crate::spec::{AllocationSpec, Category, JobSpec, Throughputs, TypeFilter};
pub use deps::DepKind;
pub use idle::PowerDownStats;
use std::collections::{BTreeMap, BTreeSet, HashMap};
pub use waits::Wait;

pub use crate::ids::{AllocIdx, JobIdx};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Waiting,
    Running,
    Completed,
    /// A run reached the job's time limit.
    TimedOut,
    /// Refused or withdrawn; see [`Job::reason`].
    Cancelled,
    /// The run ended in error (live systems: non-zero exit, lost run).
    Failed,
}

/// Whether a job's time limit fits in what its allocation has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    /// It may start.
    Fits,
    /// Not while the running jobs' limits hold the rest of the grant.
    Wait,
    /// Not even with nothing running: the grant is too small for it.
    Never,
}

/// Why a job was refused or cancelled (snake_case codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No pool of the factory can ever run it (type, memory or size).
    Unsatisfiable,
    /// Its work is in steps but the throughput matrix does not know its type.
    UnknownJobType,
    AllocationExpired,
    AllocationExhausted,
    /// Withdrawn by its owner or an operator.
    Withdrawn,
    /// Hit by accelerator failures more often than the policy requeues.
    RestartsExhausted,
    /// A job it depends on ended in a way that can never satisfy it.
    DependencyNeverSatisfied,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Unsatisfiable => "unsatisfiable",
            Reason::UnknownJobType => "unknown_job_type",
            Reason::AllocationExpired => "allocation_expired",
            Reason::AllocationExhausted => "allocation_exhausted",
            Reason::Withdrawn => "withdrawn",
            Reason::RestartsExhausted => "restarts_exhausted",
            Reason::DependencyNeverSatisfied => "dependency_never_satisfied",
        }
    }
}

/// How long a service is planned to run (it runs until stopped): ~31.7
/// years, past any horizon the scheduler plans to.
pub const SERVICE_RUN_S: f64 = 1e9;

/// A job inside the scheduler.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub submit_s: f64,
    pub gpus: u32,
    pub alloc: AllocIdx,
    /// Job priority plus its allocation's QOS priority.
    pub priority: i32,
    pub preemptible: bool,
    /// Checkpoint interval (0: none).
    pub checkpoint_s: f64,
    pub time_limit_s: Option<f64>,
    pub deadline_s: Option<f64>,
    /// Work: seconds (duration jobs) or steps; multiplied by a pool's
    /// factor gives the full run time there.
    pub base: f64,
    cands: u32,
    pub state: JobState,
    pub reason: Option<Reason>,
    /// Fraction of the work done and saved (checkpointed or finished).
    pub done: f64,
    pub run_start: f64,
    pub run_pool: PoolIdx,
    /// Full run time on the current pool.
    pub run_full: f64,
    /// End of the current run as planned by the scheduler.
    pub est_end: f64,
    /// Incremented at each start: tells stale finish events apart.
    pub epoch: u32,
    pub first_start: Option<f64>,
    pub end_s: Option<f64>,
    /// Accelerator-seconds received so far (closed runs).
    pub attained_gpu_s: f64,
    /// Accelerator-seconds of work thrown away by interruptions.
    pub lost_gpu_s: f64,
    pub restarts: u32,
    /// Restarts caused by accelerator failures, in all.
    pub fail_requeues: u32,
    /// Failure restarts since the job last moved forward (a run that
    /// reached a checkpoint): bounded by the policy's `max_requeues`.
    pub hits_without_progress: u32,
    /// Seconds the next (or current) run spends restoring progress saved
    /// when the job was preempted.
    pub restore_s: f64,
    /// Power of each of its accelerators in the current run, W (capped or not).
    pub power_w: f64,
    /// Speed kept under its power cap in the current run (1: uncapped).
    pub speed: f64,
    /// Runs started under a power cap.
    pub capped_runs: u32,
    /// Energy of its runs so far (accelerators and their share of node
    /// power, without PUE), J.
    pub energy_j: f64,
    /// Carbon of its runs so far (energy × PUE × grid intensity), g.
    pub carbon_g: f64,
    /// Carbon-aware deferral: not considered before this time.
    pub defer_until: f64,
    /// Promoted by the starvation bound ([`Policy::promote_wait`]): ahead
    /// of the jobs of its priority that are not while it waits, and not
    /// preempted for them until `lease_end` once it runs.
    pub promoted: bool,
    /// When it last began to wait.
    pub queued_at: f64,
    /// A promoted job's lease, seconds (its wait over `promote_knob`),
    /// until its next start sets `lease_end`.
    pub lease_s: f64,
    pub lease_end: f64,
    pub placement: Placement,
    /// A service (an endpoint's replica): it runs until stopped, planned
    /// as ending at [`SERVICE_RUN_S`].
    pub service: bool,
}

impl Job {
    /// Seconds the current run will last if it is not interrupted, and
    /// whether it ends by reaching the time limit.
    pub fn planned_run(&self) -> (f64, bool) {
        let rem = (1.0 - self.done).max(0.0) * self.run_full + self.restore_s;
        match self.time_limit_s {
            Some(l) if l < rem => (l, true),
            _ => (rem, false),
        }
    }

    /// The run-time factor of the current run (its accelerators' slowness
    /// against the job's base run time, power caps included).
    pub fn run_factor(&self) -> f64 {
        if self.base > 0.0 {
            self.run_full / self.base
        } else {
            1.0
        }
    }

    /// Attained accelerator-seconds at `now` (including a current run).
    pub fn attained_at(&self, now: f64) -> f64 {
        if self.state == JobState::Running {
            self.attained_gpu_s + self.gpus as f64 * (now - self.run_start).max(0.0)
        } else {
            self.attained_gpu_s
        }
    }
}

/// Scheduler-side state of an allocation.
#[derive(Debug, Clone)]
pub struct AllocState {
    pub spec: AllocationSpec,
    pub shares: f64,
    /// Decayed billing-weighted usage, accelerator-seconds, as of `usage_t`.
    pub usage: f64,
    /// Undecayed billing-weighted usage, accelerator-seconds.
    pub used_total: f64,
    usage_t: f64,
    /// Billing-weighted accelerators running now.
    rate: f64,
    /// Running jobs with a time limit: Σ of their billing-weighted
    /// accelerators, and Σ of that times their limit's end; what they may
    /// still use at `now` is `res_end - now * res_rate` (their reservation).
    res_rate: f64,
    res_end: f64,
    fs_factor: f64,
}

impl AllocState {
    /// Billing-weighted accelerator-seconds used by `now` (its running
    /// jobs' time so far included).
    pub fn used_at(&self, now: f64) -> f64 {
        self.used_total + self.rate * (now - self.usage_t).max(0.0)
    }

    /// Accelerator-seconds the running jobs' time limits may still take.
    pub fn reserved_at(&self, now: f64) -> f64 {
        (self.res_end - now * self.res_rate).max(0.0)
    }
}

/// What one pass decided.
#[derive(Debug, Default, Clone)]
pub struct Decisions {
    /// Jobs started (their placement and `est_end` are set).
    pub started: Vec<JobIdx>,
    /// Jobs preempted: (job, accelerator-seconds of work lost).
    pub preempted: Vec<(JobIdx, f64)>,
    /// Jobs cancelled.
    pub cancelled: Vec<(JobIdx, Reason)>,
    /// Call again by then even if nothing happens.
    pub wakeup: Option<f64>,
}

impl Decisions {
    fn clear(&mut self) {
        self.started.clear();
        self.preempted.clear();
        self.cancelled.clear();
        self.wakeup = None;
    }
}

/// Outcome of a failed accelerator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FailOutcome {
    /// The accelerator was already down.
    AlreadyDown,
    /// It was idle; now down.
    Idle,
    /// It ran this job, which was stopped and requeued (or, past the
    /// policy's `max_requeues`, failed), losing this many
    /// accelerator-seconds of work.
    Hit {
        job: JobIdx,
        lost_gpu_s: f64,
        failed: bool,
    },
}

/// Candidate pools of a class of jobs, each with its run-time factor.
#[derive(Debug, Clone)]
struct CandList {
    pools: Vec<(PoolIdx, f64)>,
    /// Whether the job runs faster on some of these pools than on others
    /// (what makes moving it between them worth anything).
    varied: bool,
    /// Whether these pools are at more than one site.
    multi_site: bool,
    /// Whether the least-loaded site balance may reorder them: at several
    /// sites, equally fast, and nothing else orders them (no energy or
    /// cost order, no sites of the job's own preference).
    balanced: bool,
}

/// What decides a job's candidate pools.
#[derive(Debug, Clone, PartialEq)]
struct CandKey {
    types: TypeFilter,
    job_type: Option<String>,
    gpus: u32,
    steps: bool,
}

impl CandKey {
    fn matches(&self, spec: &JobSpec, steps: bool) -> bool {
        self.gpus == spec.gpus
            && self.steps == steps
            && self.types == spec.types
            && self.job_type == spec.job_type
    }
}

fn class_hash(spec: &JobSpec, steps: bool) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    spec.types.types.hash(&mut h);
    spec.types.vendor.hash(&mut h);
    spec.types.min_memory_gb.map(f64::to_bits).hash(&mut h);
    spec.types.sites.hash(&mut h);
    spec.job_type.hash(&mut h);
    spec.gpus.hash(&mut h);
    steps.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, Copy)]
struct Reservation {
    shadow: f64,
    extra: u64,
}

/// Scheduler state.
#[derive(Clone)]
pub struct SchedCore {
    pub factory: Factory,
    pub policy: Policy,
    pub cluster: Cluster,
    pub jobs: Vec<Job>,
    pub allocs: Vec<AllocState>,
    alloc_by_name: HashMap<String, AllocIdx>,
    /// Jobs held for their dependencies, and what each waits for (see
    /// `deps.rs`); in job order, so that releases are deterministic.
    dep_held: BTreeMap<JobIdx, Vec<(DepKind, JobIdx)>>,
    /// Why jobs waited, per job: (the pass that noted it, the cause);
    /// kept only while `waits_on` (see `waits.rs`).
    waits: Vec<(u32, Wait)>,
    waits_on: bool,
    wait_pass: u32,
    wait_now: f64,
    throughputs: Throughputs,
    queue: Queue,
    /// Per pool: running jobs by planned end: (end bits, job, accelerators).
    running_by_end: Vec<BTreeSet<(u64, JobIdx, u32)>>,
    /// Per pool: static priority -> (preemptible running jobs, their accelerators).
    preemptible_prios: Vec<BTreeMap<i32, (u32, u64)>>,
    node_jobs: Vec<Vec<(JobIdx, u16)>>,
    cand_lists: Vec<CandList>,
    /// Job class -> candidate list, bucketed by a hash of the class so that
    /// a lookup allocates nothing.
    cand_index: HashMap<u64, Vec<(CandKey, u32)>>,
    last_backfill: f64,
    /// Changes that can alter a pass's decisions (queue, runs, capacity,
    /// allocations, priorities), counted; and their count when the last
    /// backfill pass began. A backfill tick is only worth waking for when
    /// they differ: a pass over an unchanged state starts nothing new.
    changes: u64,
    bf_changes: u64,
    /// Queue position where the last backfill pass stopped for its test
    /// limit (`max_job_test`): a job queued at or past it is not seen by a
    /// pass over the same state, so queueing it there is no change.
    bf_horizon: usize,
    /// Whether some allocation has a grant or an end, and the latest start
    /// of their windows: when none has either and all have begun, a pass's
    /// allocation checks are no-ops.
    allocs_limited: bool,
    allocs_from: f64,
    /// Whether the last pass left jobs waiting without waking for the next
    /// backfill tick (nothing had changed): the ticks keep their phase.
    bf_skipped: bool,
    last_priority: f64,
    /// Jobs waiting, running.
    pub n_running: usize,
    /// Per node: drain flag and accelerators the drain took down.
    drained: Vec<u16>,
    /// Per pool: drained nodes.
    pool_drained: Vec<u32>,
    // scratch
    dec: Decisions,
    blocked: Vec<bool>,
    reservations: Vec<Option<Reservation>>,
    /// Per pool: its reservation is a promoted job's (preemption and
    /// migration leave it alone).
    held: Vec<bool>,
    /// Per pool, in this pass: the last failed preemption try there (the
    /// job's rank, its accelerators, `changes` then, and whether it failed
    /// for too few victims rather than on placement or power).
    preempt_failed: Vec<Option<(i64, u32, u64, bool)>>,
    /// Per pool, in this pass: the lowest rank of a job preemption could
    /// stop there (`changes` then).
    lowest_rank: Vec<Option<(i64, u64)>>,
    requeue: Vec<JobIdx>,
    victims: Vec<(i64, f64, JobIdx)>,
    place_buf: Placement,
    /// Scratch: the classes of running jobs a swap may move, and the two
    /// sides of a swap search.
    swap_reps: Vec<SwapClass>,
    swap_sides: (Vec<SwapSide>, Vec<SwapSide>),
    /// When the last swap search found no pair.
    swap_seen: Option<f64>,
    /// `changes` when the next demotion was last looked for, and it.
    demotion_seen: Option<(u64, Option<f64>)>,
    /// Running jobs that `migrate` may move (see `movable`).
    n_movable: usize,
    sites: Vec<SitePower>,
    /// Per pool: power figures of its accelerators, precomputed.
    pool_power: Vec<PoolPower>,
    site_order: Vec<(f64, usize)>,
    /// Carbon-aware deferrals decided so far.
    pub deferrals: u64,
    /// Runs moved to a faster accelerator type (`Policy::migrate`).
    pub migrations: u64,
    /// Jobs promoted by the starvation bound so far.
    pub promotions: u64,
    /// When each waiting job is due for promotion: (time as `end_key`,
    /// job, its `epoch` when it was queued; stale once it has started).
    promote_at: std::collections::BinaryHeap<std::cmp::Reverse<(u64, JobIdx, u32)>>,
    /// Starts refused by a site's power budget so far (a job counts once per pass).
    pub power_waits: u64,
    /// Idle power-down (`idle.rs`); None when the policy has it off.
    pd: Option<Box<idle::PowerDown>>,
    /// Suspect nodes (health), and scratch: the accelerators hidden from a
    /// long gang's placement.
    suspect: BTreeSet<NodeIdx>,
    hidden: Vec<(NodeIdx, u16)>,
    power_downs: u64,
    resumes: u64,
    boot_waits: u64,
    boot_wait_s: f64,
}

/// How long a deferred flexible job waits before it is considered again, s.
const RECHECK_S: f64 = 1800.0;

/// What carbon awareness says of a flexible job now.
enum CarbonPlan {
    /// Wait until this time (a cleaner start).
    Defer(f64),
    /// Start now, lowest-carbon site first.
    Go,
    /// No carbon series on its candidate sites.
    NoData,
}

/// Power and energy of a site.
#[derive(Debug, Clone)]
struct SitePower {
    pue: f64,
    budget_w: Option<f64>,
    /// IT power now, W.
    it_w: f64,
    /// Accrued up to this time.
    t: f64,
    energy_j: f64,
    carbon_g: f64,
    peak_w: f64,
    carbon: Option<std::sync::Arc<crate::carbon::CarbonSeries>>,
}

/// Power figures of a pool's accelerators, W.
#[derive(Debug, Clone, Copy)]
struct PoolPower {
    site: usize,
    job_w: f64,
    idle_w: f64,
    node_share_w: f64,
    min_cap_w: f64,
}

/// Energy figures of a site (facility level: IT power × PUE).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteEnergy {
    /// Facility power now, W.
    pub power_w: f64,
    /// Highest facility power so far, W.
    pub peak_w: f64,
    pub budget_w: Option<f64>,
    pub energy_j: f64,
    pub carbon_g: f64,
}

const DRAIN_FLAG: u16 = 0x8000;

/// A class of running jobs a swap may move ((pool, size, candidate
/// list)), with its shortest and longest remaining runs.
type SwapClass = ((PoolIdx, u32, u32), JobIdx, JobIdx);

/// One side of a swap search: a class's part of the gain, its factor on
/// the other side's pool, its index among the classes.
type SwapSide = (f64, f64, usize);

fn end_key(t: f64) -> u64 {
    // non-negative finite floats order like their bits
    t.max(0.0).to_bits()
}

impl SchedCore {
    pub fn new(factory: Factory, policy: Policy, throughputs: Throughputs) -> SchedCore {
        let mut cluster = Cluster::new(&factory);
        let pd = idle::PowerDown::new(&factory, &policy).map(Box::new);
        if pd.is_some() {
            for p in &mut cluster.pools {
                p.became_whole = Some(Vec::new());
            }
        }
        let np = factory.pools.len();
        let nn = cluster.nodes() as usize;
        let grouped = policy.kind.traits().periodic_priorities;
        SchedCore {
            policy,
            cluster,
            jobs: Vec::new(),
            allocs: Vec::new(),
            alloc_by_name: HashMap::new(),
            dep_held: BTreeMap::new(),
            throughputs,
            queue: Queue::new(grouped),
            running_by_end: vec![BTreeSet::new(); np],
            preemptible_prios: vec![BTreeMap::new(); np],
            node_jobs: vec![Vec::new(); nn],
            cand_lists: Vec::new(),
            cand_index: HashMap::new(),
            last_backfill: f64::NEG_INFINITY,
            changes: 0,
            bf_changes: u64::MAX,
            bf_horizon: 0,
            allocs_limited: false,
            allocs_from: f64::NEG_INFINITY,
            bf_skipped: false,
            last_priority: f64::NEG_INFINITY,
            n_running: 0,
            drained: Vec::new(),
            pool_drained: Vec::new(),
            dec: Decisions::default(),
            blocked: vec![false; np],
            reservations: vec![None; np],
            held: vec![false; np],
            preempt_failed: vec![None; np],
            lowest_rank: vec![None; np],
            requeue: Vec::new(),
            victims: Vec::new(),
            place_buf: Vec::new(),
            swap_reps: Vec::new(),
            swap_sides: (Vec::new(), Vec::new()),
            swap_seen: None,
            demotion_seen: None,
            n_movable: 0,
            site_order: Vec::new(),
            pool_power: factory
                .pools
                .iter()
                .map(|p| {
                    let t = factory.catalog.get(p.accel);
                    PoolPower {
                        site: p.site,
                        job_w: crate::energy::job_power_w(t),
                        idle_w: t.idle_watts,
                        node_share_w: p.node_watts / p.per_node.max(1) as f64,
                        min_cap_w: crate::energy::min_cap_w(t),
                    }
                })
                .collect(),
            deferrals: 0,
            migrations: 0,
            promotions: 0,
            promote_at: Default::default(),
            power_waits: 0,
            pd,
            suspect: BTreeSet::new(),
            hidden: Vec::new(),
            power_downs: 0,
            resumes: 0,
            boot_waits: 0,
            boot_wait_s: 0.0,
            waits: Vec::new(),
            waits_on: false,
            wait_pass: 0,
            wait_now: 0.0,
            sites: factory
                .sites
                .iter()
                .enumerate()
                .map(|(si, site)| {
                    let it_w: f64 = factory
                        .pools
                        .iter()
                        .filter(|p| p.site == si)
                        .map(|p| {
                            let t = factory.catalog.get(p.accel);
                            p.nodes as f64 * p.node_watts + p.accelerators() as f64 * t.idle_watts
                        })
                        .sum();
                    SitePower {
                        pue: site.pue,
                        budget_w: site.power_budget_w,
                        it_w,
                        t: 0.0,
                        energy_j: 0.0,
                        carbon_g: 0.0,
                        peak_w: it_w * site.pue,
                        carbon: site.carbon.clone(),
                    }
                })
                .collect(),
            factory,
        }
    }

    /// Adds an allocation (or returns the existing one with that id).
    pub fn add_allocation(&mut self, spec: AllocationSpec) -> AllocIdx {
        self.changes += 1;
        if let Some(&i) = self.alloc_by_name.get(&spec.id) {
            return i;
        }
        let i = self.allocs.len() as AllocIdx;
        let shares = spec
            .shares
            .or(spec.granted_gpu_hours)
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        self.alloc_by_name.insert(spec.id.clone(), i);
        self.allocs_limited |= spec.granted_gpu_hours.is_some() || spec.valid_until_s.is_some();
        self.allocs_from = self.allocs_from.max(spec.valid_from_s);
        self.allocs.push(AllocState {
            spec,
            shares,
            usage: 0.0,
            used_total: 0.0,
            usage_t: 0.0,
            rate: 0.0,
            res_rate: 0.0,
            res_end: 0.0,
            fs_factor: 1.0,
        });
        i
    }

    /// Extends allocation `a`: its new grant and end (an approved extension
    /// request). Its fair-share weight follows the grant.
    pub fn extend_allocation(&mut self, a: AllocIdx, granted_gpu_hours: f64, valid_until_s: f64) {
        self.changes += 1;
        let st = &mut self.allocs[a as usize];
        st.spec.granted_gpu_hours = Some(granted_gpu_hours);
        st.spec.valid_until_s = Some(valid_until_s);
        if st.spec.shares.is_some() {
            st.spec.shares = Some(granted_gpu_hours.max(1.0));
            st.shares = granted_gpu_hours.max(1.0);
        }
    }

    pub fn allocation(&self, id: &str) -> Option<AllocIdx> {
        self.alloc_by_name.get(id).copied()
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Category of a job's allocation.
    pub fn category_of(&self, j: JobIdx) -> Category {
        self.allocs[self.jobs[j as usize].alloc as usize]
            .spec
            .category
    }

    /// Submits a job at `now`. Returns its index; a job that can never run
    /// is recorded as cancelled with a reason.
    pub fn submit(&mut self, spec: &JobSpec, alloc: AllocIdx, now: f64) -> JobIdx {
        self.submit_inner(spec, alloc, now, true)
    }

    /// [`SchedCore::submit`] without queueing the job (held: see `deps.rs`).
    fn submit_held(&mut self, spec: &JobSpec, alloc: AllocIdx, now: f64) -> JobIdx {
        self.submit_inner(spec, alloc, now, false)
    }

    fn submit_inner(&mut self, spec: &JobSpec, alloc: AllocIdx, now: f64, queue: bool) -> JobIdx {
        let steps = spec.steps.is_some() && spec.job_type.is_some();
        let base = if steps {
            spec.steps.unwrap_or(0.0)
        } else {
            spec.duration_s.unwrap_or(0.0)
        };
        let cands = self.cand_list(spec, steps);
        let a = &self.allocs[alloc as usize];
        let idx = self.jobs.len() as JobIdx;
        let mut job = Job {
            id: spec.id.clone(),
            submit_s: spec.submit_s,
            gpus: spec.gpus.max(1),
            alloc,
            priority: spec.priority.saturating_add(a.spec.qos_priority),
            preemptible: spec.preemptible,
            checkpoint_s: spec.checkpoint_s.unwrap_or(0.0).max(0.0),
            time_limit_s: spec.time_limit_s.filter(|l| *l > 0.0),
            deadline_s: spec.deadline_s,
            base,
            cands: *cands.as_ref().unwrap_or(&0),
            state: JobState::Waiting,
            reason: None,
            done: 0.0,
            run_start: 0.0,
            run_pool: 0,
            run_full: 0.0,
            est_end: 0.0,
            epoch: 0,
            first_start: None,
            end_s: None,
            attained_gpu_s: 0.0,
            lost_gpu_s: 0.0,
            restarts: 0,
            fail_requeues: 0,
            hits_without_progress: 0,
            restore_s: 0.0,
            power_w: 0.0,
            speed: 1.0,
            capped_runs: 0,
            energy_j: 0.0,
            carbon_g: 0.0,
            defer_until: 0.0,
            promoted: false,
            queued_at: now,
            lease_s: 0.0,
            lease_end: 0.0,
            placement: Vec::new(),
            service: false,
        };
        if let Err(r) = cands {
            job.state = JobState::Cancelled;
            job.reason = Some(r);
            job.end_s = Some(now);
            self.jobs.push(job);
            return idx;
        }
        self.jobs.push(job);
        if queue {
            self.enqueue(idx, now);
        }
        idx
    }

    /// Submits a service at `now` (an endpoint's replica): a job of
    /// `spec`'s accelerators, priority and preemptibility that runs until
    /// it is stopped ([`SchedCore::end_run`]); its duration and time limit
    /// are ignored, and it is planned as lasting [`SERVICE_RUN_S`].
    pub fn submit_service(&mut self, spec: &JobSpec, alloc: AllocIdx, now: f64) -> JobIdx {
        let spec = JobSpec {
            duration_s: Some(SERVICE_RUN_S),
            steps: None,
            job_type: None,
            time_limit_s: None,
            checkpoint_s: None,
            deadline_s: None,
            ..spec.clone()
        };
        let j = self.submit(&spec, alloc, now);
        self.jobs[j as usize].service = true;
        j
    }

    /// Runs one scheduling pass at `now` and returns its decisions. Started
    /// jobs have their placement and planned end set; preempted jobs are
    /// back in the queue.
    pub fn schedule(&mut self, now: f64) -> &Decisions {
        self.dec.clear();
        loop {
            let cancelled = self.dec.cancelled.len();
            self.pass(now);
            // a job the pass cancelled may settle what held jobs wait for:
            // they are released (or cancelled) in one more pass at `now`
            if self.dec.cancelled.len() == cancelled || !self.held_settled() {
                return &self.dec;
            }
        }
    }

    /// One pass of [`SchedCore::schedule`], adding to its decisions.
    fn pass(&mut self, now: f64) {
        self.waits_begin(now);
        self.release_held(now);
        let kind = self.policy.kind;
        if kind.traits().promotes {
            self.promote_due(now);
        }
        if kind.traits().periodic_priorities
            && now >= self.last_priority + self.policy.priority_period_s
        {
            self.refresh_priorities(now);
            self.last_priority = now;
        }
        let interval = self.policy.backfill_interval_s;
        let backfill_mode = self.policy.backfills()
            && (interval <= 0.0
                || self.last_backfill == f64::NEG_INFINITY
                || (now >= self.last_backfill + interval && !self.bf_skipped)
                || (now >= self.last_backfill + interval && {
                    // the backfill ticks skipped while nothing changed were
                    // passes that started nothing: keep their phase, so that
                    // a pass between two ticks stays a main pass
                    // (ticks are sums of the interval, as when each was
                    // woken for: summed again, the same floats come out)
                    let mut tick = self.last_backfill;
                    if (now - tick) / interval < 1e6 {
                        while tick + interval <= now {
                            tick += interval;
                        }
                    } else {
                        tick += ((now - tick) / interval).floor() * interval;
                    }
                    if tick >= now {
                        true
                    } else {
                        self.last_backfill = tick;
                        false
                    }
                }));
        if backfill_mode {
            self.last_backfill = now;
            self.bf_changes = self.changes;
        }
        let np = self.blocked.len();
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.reservations.iter_mut().for_each(|r| *r = None);
        self.held.iter_mut().for_each(|h| *h = false);
        self.preempt_failed.iter_mut().for_each(|f| *f = None);
        self.lowest_rank.iter_mut().for_each(|f| *f = None);
        let mut n_blocked = 0;
        let mut n_res = 0;
        let mut tested = 0;
        let mut preempt_tries = 0;
        let mut left_waiting = false;
        let mut wake: Option<f64> = self.power_tick(now);
        let mut removed = false;
        let mut queue = std::mem::take(&mut self.queue);
        let mut horizon = usize::MAX;
        // entries past the last one the pass reached are untouched
        let mut reached = 0;
        // a backfill pass whose allocation and carbon checks are no-ops may
        // pass over a job without a candidate pool that has room for it as
        // soon as its reservations are made (the checks below would all
        // refuse it; nothing is blocked in a backfill pass)
        let skip_ok = backfill_mode
            && !self.allocs_limited
            && now >= self.allocs_from
            && !self.policy.carbon_aware;
        // a pass that neither backfills nor blocks, whose allocation,
        // carbon and power-down checks are no-ops, may stop once every
        // accelerator is taken
        let full_ok = !backfill_mode
            && !self.policy.blocks()
            && !self.allocs_limited
            && now >= self.allocs_from
            && !self.policy.carbon_aware
            && self.pd.is_none();
        let mut next = 0;
        loop {
            if next == queue.prefix().len() && !queue.extend_chunk() {
                break;
            }
            if skip_ok
                && n_blocked < np
                && n_res >= self.policy.reservations
                && tested < self.policy.max_job_test
                && !(self.policy.preemption && preempt_tries < self.policy.max_preempt_attempts)
            {
                // the run of entries that no pool has room for, at once
                // (the checks below would refuse each: the allocation and
                // carbon checks are no-ops here, nothing is blocked)
                let max = self.policy.max_job_test - tested;
                let n = queue.count_while(next, max, |q| !self.room_for(q, now));
                if n > 0 && self.waits_on {
                    for q in queue.prefix().range(next..next + n) {
                        self.note_no_room(q);
                    }
                }
                if n > 0 {
                    tested += n;
                    next += n;
                    reached = next;
                    left_waiting = true;
                    continue;
                }
            }
            if full_ok
                && !(self.policy.preemption && preempt_tries < self.policy.max_preempt_attempts)
                && self.cluster.free_total() == 0
            {
                // no accelerator is free and no preemption is left to try:
                // nothing behind can start (a pass costs what starts, not
                // the queue's length)
                if self.waits_on {
                    for q in queue.prefix().range(next..) {
                        self.note_no_room(q);
                    }
                }
                left_waiting = true;
                break;
            }
            let pos = next;
            let q = &queue.prefix()[pos];
            next += 1;
            reached = pos + 1;
            if n_blocked == np {
                left_waiting = true;
                break;
            }
            let (j, alloc, gpus, cl) = (q.j, q.alloc, q.gpus, q.cl as usize);
            // allocation checks
            {
                let a = &self.allocs[alloc as usize].spec;
                if a.valid_from_s > now {
                    wake = Some(wake.map_or(a.valid_from_s, |w: f64| w.min(a.valid_from_s)));
                    self.note_wait(j, Wait::AllocationWindow);
                    continue;
                }
                let expired = a.valid_until_s.is_some_and(|u| now >= u);
                let granted = a.granted_gpu_hours;
                if !expired {
                    if let Some(g) = granted {
                        self.accrue(alloc, now);
                        if self.allocs[alloc as usize].used_total >= g * 3600.0 {
                            self.cancel_in_pass(j, Reason::AllocationExhausted, now);
                            removed = true;
                            continue;
                        }
                        // a job starts only if its time limit fits in what
                        // is left once the running jobs' limits are taken
                        // (as Slurm's GrpTRESMins): never past the grant
                        match self.reserve_check(j, now) {
                            Reserve::Fits => {}
                            Reserve::Wait => {
                                self.note_wait(j, Wait::AllocationReserve);
                                continue;
                            }
                            Reserve::Never => {
                                self.cancel_in_pass(j, Reason::AllocationExhausted, now);
                                removed = true;
                                continue;
                            }
                        }
                    }
                } else {
                    self.cancel_in_pass(j, Reason::AllocationExpired, now);
                    removed = true;
                    continue;
                }
            }
            if self.cand_lists[cl]
                .pools
                .iter()
                .all(|&(p, _)| self.blocked[p as usize])
            {
                self.note_no_room(q);
                continue;
            }
            let npools = self.cand_lists[cl].pools.len();
            let mut ordered = false;
            let mut by_carbon = false;
            if self.policy.carbon_aware {
                let until = self.jobs[j as usize].defer_until;
                if until > now {
                    wake = Some(wake.map_or(until, |w: f64| w.min(until)));
                    self.note_wait(j, Wait::Carbon);
                    continue;
                }
                match self.carbon_plan(j, cl, now) {
                    CarbonPlan::Defer(until) => {
                        self.jobs[j as usize].defer_until = until;
                        self.deferrals += 1;
                        wake = Some(wake.map_or(until, |w: f64| w.min(until)));
                        self.note_wait(j, Wait::Carbon);
                        continue;
                    }
                    CarbonPlan::Go => {
                        ordered = true;
                        by_carbon = true;
                    }
                    CarbonPlan::NoData => {}
                }
            }
            tested += 1;
            if tested > self.policy.max_job_test {
                left_waiting = true;
                horizon = pos;
                break;
            }
            // once the reservations are made, a backfill pass only starts
            // jobs, and one that no candidate pool has room for (free
            // accelerators, and the reservation's shadow or spare ones) is
            // passed over at once: the checks below would all refuse it
            if backfill_mode
                && n_res >= self.policy.reservations
                && !(self.policy.preemption && preempt_tries < self.policy.max_preempt_attempts)
                && !self.room_for(q, now)
            {
                left_waiting = true;
                self.note_no_room(q);
                continue;
            }
            let mut power_blocked = false;
            let mut suspect_blocked = false;
            // a pool with room that is held (for a reservation, or for a
            // job ahead in strict order)
            let mut held = false;
            let mut started = false;
            if !ordered
                && npools > 1
                && self.policy.site_balance == crate::policy::SiteBalance::LeastLoaded
                && self.cand_lists[cl].balanced
            {
                self.least_loaded_order(cl);
                ordered = true;
            }
            for k in 0..npools {
                let ci = if ordered { self.site_order[k].1 } else { k };
                let (p, factor) = self.cand_lists[cl].pools[ci];
                let pu = p as usize;
                // powered-down nodes to resume for it to fit (idle.rs)
                let resume = if self.cluster.pools[pu].may_fit(gpus) {
                    0
                } else {
                    match self.resume_need(p, gpus) {
                        Some(n) => n,
                        None => continue,
                    }
                };
                if self.blocked[pu] {
                    held = true;
                    continue;
                }
                let mut uses_extra = false;
                if let Some(r) = self.reservations[pu] {
                    let mut est = if q.limited { q.est } else { q.est * factor };
                    if resume > 0 {
                        est += self.resume_s(p);
                    }
                    if now + est > r.shadow {
                        if gpus as u64 > r.extra {
                            held = true;
                            continue;
                        }
                        uses_extra = true;
                    }
                }
                let Some(mut power) = self.power_plan(p, gpus, -self.resume_w(p, resume)) else {
                    power_blocked = true;
                    continue;
                };
                if by_carbon && self.policy.carbon_cap_g_per_kwh.is_some() {
                    power = self.dirty_cap(j, p, factor, resume > 0, now, power);
                }
                if resume > 0 {
                    self.resume_nodes(p, resume, now);
                }
                // a long gang is kept off suspect nodes
                let hid = !self.suspect.is_empty()
                    && gpus > self.cluster.pools[pu].per_node as u32
                    && (if q.limited { q.est } else { q.est * factor })
                        >= self.policy.suspect_avoid_s
                    && self.hide_suspects(p);
                let mut buf = std::mem::take(&mut self.place_buf);
                let ok = self.cluster.place(p, gpus, &mut buf);
                self.place_buf = buf;
                if hid {
                    self.unhide_suspects();
                    suspect_blocked |= !ok;
                }
                if ok {
                    if uses_extra && let Some(r) = self.reservations[pu].as_mut() {
                        r.extra -= gpus as u64;
                    }
                    self.start(j, p, factor, now, power);
                    started = true;
                    break;
                } else if resume > 0 {
                    self.undo_resume(now);
                }
            }
            if !started && power_blocked {
                self.power_waits += 1;
            }
            if !started
                && self.policy.preemption
                && preempt_tries < self.policy.max_preempt_attempts
            {
                preempt_tries += 1;
                started = self.try_preempt(j, now);
            }
            if started {
                removed = true;
                continue;
            }
            self.note_wait(
                j,
                if power_blocked {
                    Wait::Power
                } else if suspect_blocked {
                    Wait::Suspect
                } else if held {
                    Wait::Turn
                } else {
                    Wait::Capacity
                },
            );
            left_waiting = true;
            if self.jobs[j as usize].promoted && (backfill_mode || !self.policy.blocks()) {
                // the starvation bound: a promoted job that cannot start is
                // reserved for (in every pass of a policy that does not
                // block; backfill respects it)
                if self.reserve_first_free(cl, gpus, now) {
                    n_res += 1;
                }
            } else if backfill_mode {
                if n_res < self.policy.reservations {
                    // reserve on the candidate pool that frees up first
                    let mut best: Option<(PoolIdx, Reservation)> = None;
                    for &(p, _) in &self.cand_lists[cl].pools {
                        if self.reservations[p as usize].is_some() || self.blocked[p as usize] {
                            continue;
                        }
                        let bound = best.map_or(f64::INFINITY, |(_, b)| b.shadow);
                        if let Some(r) = self.reservation(p, gpus, now, bound)
                            && best.is_none_or(|(_, b)| r.shadow < b.shadow)
                        {
                            best = Some((p, r));
                        }
                    }
                    if let Some((p, r)) = best {
                        self.reservations[p as usize] = Some(r);
                        n_res += 1;
                    }
                }
            } else if self.policy.blocks() {
                for ci in 0..self.cand_lists[cl].pools.len() {
                    let p = self.cand_lists[cl].pools[ci].0 as usize;
                    if !self.blocked[p] {
                        self.blocked[p] = true;
                        n_blocked += 1;
                    }
                }
            }
        }
        self.queue = queue;
        if removed {
            let jobs = &self.jobs;
            if backfill_mode && horizon < self.queue.prefix().len() {
                horizon -= self
                    .queue
                    .prefix()
                    .range(..horizon)
                    .filter(|q| jobs[q.j as usize].state != JobState::Waiting)
                    .count();
            }
            // only entries the pass reached can have left the queue
            self.queue
                .compact(reached, |j| jobs[j as usize].state != JobState::Waiting);
        }
        if backfill_mode {
            self.bf_horizon = horizon;
        }
        self.migrate(now);
        let mut requeue = std::mem::take(&mut self.requeue);
        for &j in &requeue {
            self.enqueue(j, now);
        }
        requeue.clear();
        self.requeue = requeue;
        self.keep_warm(now);
        self.bf_skipped = false;
        if left_waiting && self.policy.backfills() && self.policy.backfill_interval_s > 0.0 {
            if self.changes == self.bf_changes {
                // nothing changed since the last backfill pass began: the
                // next ticks would start nothing, so none is woken for
                self.bf_skipped = true;
            } else {
                let w = self.last_backfill + self.policy.backfill_interval_s;
                wake = Some(wake.map_or(w, |x: f64| x.min(w)));
            }
        }
        if kind.traits().periodic_priorities && !self.queue.is_empty() {
            let w = self.last_priority + self.policy.priority_period_s;
            wake = Some(wake.map_or(w, |x: f64| x.min(w)));
        }
        if kind.traits().promotes
            && !self.queue.is_empty()
            && let Some(w) = self.next_promotion()
        {
            // the starvation bound promotes a waiting job then
            wake = Some(wake.map_or(w, |x: f64| x.min(w)));
        }
        if kind.traits().preempts_by_service
            && left_waiting
            && let Some(w) = self.next_demotion(now)
        {
            // a preemptible run that reaches a lower attained-service
            // level may be stopped for a waiting job: pass again then
            // (not only at the next event, which the live server and the
            // twin would see at different times)
            wake = Some(wake.map_or(w, |x: f64| x.min(w)));
        }
        self.dec.wakeup = wake.filter(|w| *w > now);
    }

    /// Earliest start, at `now` or later, of the validity window of an
    /// allocation with queued jobs (jobs that wait for their window, not for capacity).
    pub fn next_validity(&self, now: f64) -> Option<f64> {
        self.queue
            .iter_all()
            .map(|q| self.allocs[q.alloc as usize].spec.valid_from_s)
            .filter(|&t| t >= now)
            .min_by(f64::total_cmp)
    }

    /// Decisions of the last pass.
    pub fn decisions(&self) -> &Decisions {
        &self.dec
    }

    /// Shortest run time of job `j` on any pool it may use (from the start).
    pub fn ideal_runtime(&self, j: JobIdx) -> f64 {
        let job = &self.jobs[j as usize];
        let f = self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .map(|x| x.1)
            .fold(f64::INFINITY, f64::min);
        if f.is_finite() { job.base * f } else { 0.0 }
    }

    fn cancel_in_pass(&mut self, j: JobIdx, r: Reason, now: f64) {
        let job = &mut self.jobs[j as usize];
        job.state = JobState::Cancelled;
        job.reason = Some(r);
        job.end_s = Some(now);
        self.dec.cancelled.push((j, r));
    }

    /// Decayed usage of every allocation at `now` (for reports and tests).
    pub fn usage_at(&mut self, now: f64) -> Vec<f64> {
        for a in 0..self.allocs.len() {
            self.accrue(a as AllocIdx, now);
        }
        self.allocs.iter().map(|a| a.usage).collect()
    }
}
