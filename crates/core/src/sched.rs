//! The scheduler: state, and a pass that turns (state, policy, now) into
//! decisions.
//!
//! [`SchedCore`] holds the jobs, the queue, the allocations and the free
//! capacity. Callers feed it events (`submit`, `finish`, `fail_accelerator`,
//! `repair`) and call [`SchedCore::schedule`] with the current time; the pass
//! reads no clock and does no I/O. The live control plane feeds wall-clock
//! time and runs the decisions on an executor; the digital twin feeds
//! virtual time and turns them into events.

use crate::catalog::TypeIdx;
use crate::cluster::{Cluster, NodeIdx, Placement};
use crate::factory::{Factory, PoolIdx};
use crate::policy::{FairshareWeights, Policy, PolicyKind};
use crate::queue::{Queue, Queued};

mod invariants;
use crate::spec::{AllocationSpec, Category, JobSpec, Throughputs, TypeFilter};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Index of a job in [`SchedCore::jobs`].
pub type JobIdx = u32;
/// Index of an allocation.
pub type AllocIdx = u32;

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
        }
    }
}

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
    /// Restarts caused by accelerator failures (bounded by the policy's
    /// `max_requeues`).
    pub fail_requeues: u32,
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
    pub placement: Placement,
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
pub struct SchedCore {
    pub factory: Factory,
    pub policy: Policy,
    pub cluster: Cluster,
    pub jobs: Vec<Job>,
    pub allocs: Vec<AllocState>,
    alloc_by_name: HashMap<String, AllocIdx>,
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
    requeue: Vec<JobIdx>,
    victims: Vec<(i64, f64, JobIdx)>,
    place_buf: Placement,
    sites: Vec<SitePower>,
    /// Per pool: power figures of its accelerators, precomputed.
    pool_power: Vec<PoolPower>,
    site_order: Vec<(f64, usize)>,
    /// Carbon-aware deferrals decided so far.
    pub deferrals: u64,
    /// Starts refused by a site's power budget so far (a job counts once per pass).
    pub power_waits: u64,
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

fn end_key(t: f64) -> u64 {
    // non-negative finite floats order like their bits
    t.max(0.0).to_bits()
}

impl SchedCore {
    pub fn new(factory: Factory, policy: Policy, throughputs: Throughputs) -> SchedCore {
        let cluster = Cluster::new(&factory);
        let np = factory.pools.len();
        let nn = cluster.nodes() as usize;
        let grouped = policy.kind == PolicyKind::Fairshare;
        SchedCore {
            policy,
            cluster,
            jobs: Vec::new(),
            allocs: Vec::new(),
            alloc_by_name: HashMap::new(),
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
            requeue: Vec::new(),
            victims: Vec::new(),
            place_buf: Vec::new(),
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
            power_waits: 0,
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

    /// Run-time factor of job `j` on `pool` (None if it cannot run there).
    pub fn factor(&self, j: JobIdx, pool: PoolIdx) -> Option<f64> {
        let job = &self.jobs[j as usize];
        self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .find(|(p, _)| *p == pool)
            .map(|x| x.1)
    }

    fn type_ok(&self, f: &TypeFilter, t: TypeIdx) -> bool {
        let ty = self.factory.catalog.get(t);
        (f.types.is_empty() || f.types.contains(&ty.id))
            && f.vendor.is_none_or(|v| v == ty.vendor)
            && f.min_memory_gb.is_none_or(|m| ty.memory_gb >= m)
    }

    fn cand_list(&mut self, spec: &JobSpec, steps: bool) -> Result<u32, Reason> {
        let hash = class_hash(spec, steps);
        if let Some(&(_, i)) = self
            .cand_index
            .get(&hash)
            .and_then(|b| b.iter().find(|(k, _)| k.matches(spec, steps)))
        {
            return Ok(i);
        }
        let jt = spec
            .job_type
            .as_deref()
            .filter(|t| self.throughputs.has_job_type(t));
        if steps && jt.is_none() {
            return Err(Reason::UnknownJobType);
        }
        // throughput per pool (None: not measured)
        let mut pools: Vec<(PoolIdx, Option<f64>)> = Vec::new();
        for (i, p) in self.factory.pools.iter().enumerate() {
            let site_ok = spec.types.sites.is_empty()
                || spec
                    .types
                    .sites
                    .iter()
                    .any(|s| *s == self.factory.sites[p.site].name);
            if !site_ok
                || !self.type_ok(&spec.types, p.accel)
                || spec.gpus as u64 > p.accelerators()
            {
                continue;
            }
            let thr = jt.and_then(|t| {
                self.throughputs
                    .get(t, &self.factory.catalog.get(p.accel).id, spec.gpus)
            });
            if jt.is_some() && !thr.is_some_and(|x| x > 0.0 && x.is_finite()) {
                continue; // cannot run there (or unmeasured)
            }
            pools.push((i as PoolIdx, thr));
        }
        if pools.is_empty() {
            return Err(Reason::Unsatisfiable);
        }
        let best = pools.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
        let mut list: Vec<(PoolIdx, f64)> = pools
            .iter()
            .map(|&(p, thr)| {
                let f = match (thr, steps) {
                    (Some(t), true) => 1.0 / t,
                    (Some(t), false) => best / t,
                    (None, _) => 1.0,
                };
                (p, f)
            })
            .collect();
        if self.policy.kind == PolicyKind::Hetero {
            // best throughput per billing unit first
            let cat = &self.factory.catalog;
            let pools = &self.factory.pools;
            let score = |&(p, f): &(PoolIdx, f64)| {
                1.0 / (f * cat.get(pools[p as usize].accel).billing_weight)
            };
            list.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.0.cmp(&b.0)));
        } else if spec.types.sites.len() > 1 {
            // the sites a job lists come in its order of preference (its
            // home first)
            let sites = &self.factory.sites;
            let pools = &self.factory.pools;
            let rank = |p: PoolIdx| {
                let name = &sites[pools[p as usize].site].name;
                spec.types
                    .sites
                    .iter()
                    .position(|s| s == name)
                    .unwrap_or(usize::MAX)
            };
            list.sort_by_key(|&(p, _)| rank(p));
        }
        if self.policy.energy_aware {
            // lowest energy to solution first: run time × power (stable,
            // so the order above breaks ties)
            let cat = &self.factory.catalog;
            let pools = &self.factory.pools;
            let energy = |&(p, f): &(PoolIdx, f64)| {
                f * crate::energy::job_power_w(cat.get(pools[p as usize].accel))
            };
            list.sort_by(|a, b| energy(a).total_cmp(&energy(b)));
        }
        let i = self.cand_lists.len() as u32;
        self.cand_lists.push(CandList { pools: list });
        self.cand_index.entry(hash).or_default().push((
            CandKey {
                types: spec.types.clone(),
                job_type: spec.job_type.clone(),
                gpus: spec.gpus,
                steps,
            },
            i,
        ));
        Ok(i)
    }

    /// Submits a job at `now`. Returns its index; a job that can never run
    /// is recorded as cancelled with a reason.
    pub fn submit(&mut self, spec: &JobSpec, alloc: AllocIdx, now: f64) -> JobIdx {
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
            restore_s: 0.0,
            power_w: 0.0,
            speed: 1.0,
            capped_runs: 0,
            energy_j: 0.0,
            carbon_g: 0.0,
            defer_until: 0.0,
            placement: Vec::new(),
        };
        if let Err(r) = cands {
            job.state = JobState::Cancelled;
            job.reason = Some(r);
            job.end_s = Some(now);
            self.jobs.push(job);
            return idx;
        }
        self.jobs.push(job);
        self.enqueue(idx, now);
        idx
    }

    fn compute_key(&self, j: JobIdx, now: f64) -> f64 {
        let job = &self.jobs[j as usize];
        let prio = job.priority as f64;
        match self.policy.kind {
            PolicyKind::Fifo => 0.0,
            PolicyKind::Backfill => -prio,
            PolicyKind::Fairshare => self.policy.fairshare_key(
                job.priority,
                self.allocs[job.alloc as usize].fs_factor,
                job.submit_s,
                now,
            ),
            PolicyKind::Las => -prio * 1e3 + self.policy.las_level(job.attained_gpu_s) as f64,
            PolicyKind::Hetero => -prio * 1e15 + job.attained_gpu_s / job.gpus as f64,
        }
    }

    fn enqueue(&mut self, j: JobIdx, now: f64) {
        let key = self.compute_key(j, now);
        let job = &self.jobs[j as usize];
        let pools = &self.cand_lists[job.cands as usize].pools;
        let (pool1, factor) = match pools[..] {
            [(p, f)] => (p, f),
            _ => (u32::MAX, 1.0),
        };
        let q = Queued::new(
            key,
            job.submit_s,
            j,
            job.gpus,
            job.cands,
            job.alloc,
            job.priority,
            job.time_limit_s
                .unwrap_or((1.0 - job.done).max(0.0) * job.base),
            job.time_limit_s.is_some(),
            pool1,
            factor,
        );
        let pos = self.queue.insert(q);
        // behind where the last backfill pass stopped for its test limit,
        // a pass over the same state would not reach it
        if pos < self.bf_horizon {
            self.bf_horizon = self.bf_horizon.saturating_add(1);
            self.changes += 1;
        }
    }

    fn accrue(&mut self, a: AllocIdx, now: f64) {
        let hl = self.policy.decay_half_life_s;
        let s = &mut self.allocs[a as usize];
        let dt = now - s.usage_t;
        if dt > 0.0 {
            let decay = (-dt * std::f64::consts::LN_2 / hl).exp();
            s.usage = s.usage * decay + s.rate * hl / std::f64::consts::LN_2 * (1.0 - decay);
            s.used_total += s.rate * dt;
            s.usage_t = now;
        }
    }

    fn billing(&self, pool: PoolIdx) -> f64 {
        self.factory
            .catalog
            .get(self.factory.pools[pool as usize].accel)
            .billing_weight
    }

    /// Accrues site `s`'s energy and carbon up to `now`.
    fn accrue_site(&mut self, s: usize, now: f64) {
        let cal = self.policy.calendar_start_s;
        let sp = &mut self.sites[s];
        let dt = now - sp.t;
        if dt > 0.0 {
            let w = sp.it_w * sp.pue;
            sp.energy_j += w * dt;
            if let Some(cs) = &sp.carbon {
                sp.carbon_g += w * cs.integral(cal + sp.t, cal + now) / 3.6e6;
            }
            sp.t = now;
        }
    }

    /// Power at which `gpus` accelerators of `pool` may start now, given
    /// `freed_w` of IT power about to be released: (W each, speed kept), or
    /// None when the site's budget does not allow it even capped.
    fn power_plan(&self, pool: PoolIdx, gpus: u32, freed_w: f64) -> Option<(f64, f64)> {
        let pp = self.pool_power[pool as usize];
        let want = pp.job_w;
        let sp = &self.sites[pp.site];
        let Some(budget) = sp.budget_w else {
            return Some((want, 1.0));
        };
        let g = gpus as f64;
        let head_it = budget / sp.pue - (sp.it_w - freed_w);
        if g * (want - pp.idle_w) <= head_it + 1e-6 {
            return Some((want, 1.0));
        }
        if !self.policy.power_capping {
            return None;
        }
        let cap = pp.idle_w + head_it / g;
        if cap + 1e-9 < pp.min_cap_w {
            return None;
        }
        Some((cap, crate::energy::capped_speed(cap, want)))
    }

    /// Carbon-aware start of a job with a deadline: defer it to a cleaner
    /// hour, or go now with its candidate pools ordered by the carbon
    /// intensity of their sites over its run (in `site_order`).
    fn carbon_plan(&mut self, j: JobIdx, cl: usize, now: f64) -> CarbonPlan {
        let cal = self.policy.calendar_start_s;
        let job = &self.jobs[j as usize];
        let Some(deadline) = job.deadline_s else {
            return CarbonPlan::NoData;
        };
        let pools = &self.cand_lists[cl].pools;
        let run = |f: f64| {
            job.time_limit_s
                .unwrap_or((1.0 - job.done).max(0.0) * job.base * f)
                .max(1.0)
        };
        self.site_order.clear();
        let mut any = false;
        let mut longest: f64 = 0.0;
        for (ci, &(p, f)) in pools.iter().enumerate() {
            let s = self.factory.pools[p as usize].site;
            let r = run(f);
            longest = longest.max(r);
            let key = match &self.sites[s].carbon {
                Some(cs) => {
                    any = true;
                    cs.mean(cal + now, cal + now + r)
                }
                None => f64::MAX,
            };
            self.site_order.push((key, ci));
        }
        if !any {
            return CarbonPlan::NoData;
        }
        self.site_order
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // latest start that still meets the deadline, with a margin for
        // waiting on capacity then
        let latest = deadline - longest - (3600.0 + 0.1 * longest);
        if now >= latest {
            return CarbonPlan::Go;
        }
        // the cleanest start possible now: the first pool in carbon order
        // with a free gang and power headroom
        let gpus = job.gpus;
        let mut feasible = f64::INFINITY;
        for &(key, ci) in &self.site_order {
            let p = pools[ci].0;
            if self.cluster.pools[p as usize].may_fit(gpus)
                && self.power_plan(p, gpus, 0.0).is_some()
            {
                feasible = key;
                break;
            }
        }
        // what waiting could give: a cleaner site once it has room, or a
        // cleaner hour anywhere before the latest start
        let mut best = (self.site_order[0].0, now + RECHECK_S);
        let mut h = ((cal + now) / 3600.0).floor() * 3600.0 + 3600.0 - cal;
        let mut steps = 0;
        while h <= latest && steps < 168 {
            for &(p, f) in pools.iter() {
                let s = self.factory.pools[p as usize].site;
                if let Some(cs) = &self.sites[s].carbon {
                    let m = cs.mean(cal + h, cal + h + run(f));
                    if m < best.0 {
                        best = (m, h);
                    }
                }
            }
            h += 3600.0;
            steps += 1;
        }
        if best.0 < feasible * (1.0 - self.policy.carbon_threshold) {
            // look again soon: room may free up at a cleaner site first
            CarbonPlan::Defer(best.1.min(now + RECHECK_S).min(latest).max(now + 1.0))
        } else {
            CarbonPlan::Go
        }
    }

    /// Energy figures of every site, accrued to `now`.
    pub fn site_energy(&mut self, now: f64) -> Vec<SiteEnergy> {
        for s in 0..self.sites.len() {
            self.accrue_site(s, now);
        }
        self.sites
            .iter()
            .map(|sp| SiteEnergy {
                power_w: sp.it_w * sp.pue,
                peak_w: sp.peak_w,
                budget_w: sp.budget_w,
                energy_j: sp.energy_j,
                carbon_g: sp.carbon_g,
            })
            .collect()
    }

    /// Starts the energy clocks of every site at `t` (the twin: its first
    /// submission), before anything runs.
    pub fn set_energy_origin(&mut self, t: f64) {
        for sp in &mut self.sites {
            sp.t = t;
        }
    }

    /// Facility power of all sites now (IT × PUE), W.
    pub fn facility_power_w(&self) -> f64 {
        self.sites.iter().map(|sp| sp.it_w * sp.pue).sum()
    }

    /// Facility power of site `s` now (IT × PUE), W; 0 for no such site.
    pub fn site_power_w(&self, s: usize) -> f64 {
        self.sites.get(s).map_or(0.0, |sp| sp.it_w * sp.pue)
    }

    /// Carbon intensity of site `s` at scheduler time `t` (None: no series).
    pub fn intensity(&self, s: usize, t: f64) -> Option<f64> {
        self.sites[s]
            .carbon
            .as_ref()
            .map(|c| c.at(self.policy.calendar_start_s + t))
    }

    /// Starts `j` on the placement in `place_buf` with its accelerators at
    /// `power` = (W each, speed kept).
    fn start(&mut self, j: JobIdx, pool: PoolIdx, factor: f64, now: f64, power: (f64, f64)) {
        self.changes += 1;
        let (power_w, speed) = power;
        let pp = self.pool_power[pool as usize];
        let (site, idle) = (pp.site, pp.idle_w);
        let g = self.jobs[j as usize].gpus as f64;
        self.accrue_site(site, now);
        let sp = &mut self.sites[site];
        sp.it_w += g * (power_w - idle);
        sp.peak_w = sp.peak_w.max(sp.it_w * sp.pue);
        let placement = std::mem::take(&mut self.place_buf);
        for &(n, c) in &placement {
            self.node_jobs[n as usize].push((j, c));
        }
        let w = self.billing(pool);
        let job = &mut self.jobs[j as usize];
        job.placement.clone_from(&placement);
        self.place_buf = placement;
        job.state = JobState::Running;
        job.run_start = now;
        job.run_pool = pool;
        job.run_full = job.base * factor / speed.max(1e-6);
        job.power_w = power_w;
        job.speed = speed;
        if speed < 1.0 {
            job.capped_runs += 1;
        }
        job.epoch += 1;
        job.first_start.get_or_insert(now);
        let est = job
            .time_limit_s
            .unwrap_or((1.0 - job.done).max(0.0) * job.run_full + job.restore_s);
        job.est_end = now + est;
        let limited = job.time_limit_s.is_some();
        let (est_end, gpus, alloc, prio, pre) = (
            job.est_end,
            job.gpus,
            job.alloc,
            job.priority,
            job.preemptible,
        );
        self.running_by_end[pool as usize].insert((end_key(est_end), j, gpus));
        if pre {
            let e = self.preemptible_prios[pool as usize]
                .entry(prio)
                .or_insert((0, 0));
            e.0 += 1;
            e.1 += gpus as u64;
        }
        self.accrue(alloc, now);
        let a = &mut self.allocs[alloc as usize];
        a.rate += gpus as f64 * w;
        if limited {
            a.res_rate += gpus as f64 * w;
            a.res_end += gpus as f64 * w * est_end;
        }
        self.n_running += 1;
        self.dec.started.push(j);
    }

    /// Takes a running job off its accelerators (bookkeeping only).
    fn stop(&mut self, j: JobIdx, now: f64) {
        self.changes += 1;
        {
            let (pool, gpus, power_w, start) = {
                let job = &self.jobs[j as usize];
                (
                    job.run_pool as usize,
                    job.gpus as f64,
                    job.power_w,
                    job.run_start,
                )
            };
            let pp = self.pool_power[pool];
            let (site, idle, node_share) = (pp.site, pp.idle_w, pp.node_share_w);
            self.accrue_site(site, now);
            let cal = self.policy.calendar_start_s;
            let sp = &mut self.sites[site];
            sp.it_w = (sp.it_w - gpus * (power_w - idle)).max(0.0);
            let dt = (now - start).max(0.0);
            let e = gpus * (power_w + node_share) * dt;
            let c = match &sp.carbon {
                Some(cs) => e * sp.pue * cs.mean(cal + start, cal + now) / 3.6e6,
                None => 0.0,
            };
            let job = &mut self.jobs[j as usize];
            job.energy_j += e;
            job.carbon_g += c;
        }
        let job = &mut self.jobs[j as usize];
        debug_assert_eq!(job.state, JobState::Running);
        let placement = std::mem::take(&mut job.placement);
        let limited = job.time_limit_s.is_some();
        let (pool, est_end, gpus, alloc, prio, pre) = (
            job.run_pool,
            job.est_end,
            job.gpus,
            job.alloc,
            job.priority,
            job.preemptible,
        );
        job.attained_gpu_s += gpus as f64 * (now - job.run_start).max(0.0);
        self.cluster.release(&placement);
        for &(n, c) in &placement {
            if let Some(d) = self.drained.get_mut(n as usize)
                && *d & DRAIN_FLAG != 0
            {
                for _ in 0..c {
                    if self.cluster.down(n) {
                        *d += 1;
                    }
                }
            }
            let v = &mut self.node_jobs[n as usize];
            if let Some(i) = v.iter().position(|x| x.0 == j) {
                v.swap_remove(i);
            }
        }
        self.running_by_end[pool as usize].remove(&(end_key(est_end), j, gpus));
        if pre {
            let m = &mut self.preemptible_prios[pool as usize];
            if let Some(c) = m.get_mut(&prio) {
                c.0 -= 1;
                c.1 -= gpus as u64;
                if c.0 == 0 {
                    m.remove(&prio);
                }
            }
        }
        let w = self.billing(pool);
        self.accrue(alloc, now);
        let a = &mut self.allocs[alloc as usize];
        a.rate = (a.rate - gpus as f64 * w).max(0.0);
        if limited {
            a.res_rate = (a.res_rate - gpus as f64 * w).max(0.0);
            a.res_end -= gpus as f64 * w * est_end;
            if a.res_rate == 0.0 {
                a.res_end = 0.0;
            }
        }
        self.n_running -= 1;
    }

    /// A running job's current run ended at `now` (completion or time limit).
    pub fn finish(&mut self, j: JobIdx, now: f64) -> JobState {
        let (_, timed_out) = self.jobs[j as usize].planned_run();
        self.stop(j, now);
        let job = &mut self.jobs[j as usize];
        job.end_s = Some(now);
        if timed_out {
            job.state = JobState::TimedOut;
        } else {
            job.done = 1.0;
            job.state = JobState::Completed;
        }
        job.state
    }

    /// Stops a running job, keeping the work saved at its last checkpoint
    /// (or, when `on_stop`, all its work: it checkpoints as it stops, and
    /// restores that for the policy's `restore_overhead_s` when it runs
    /// again); returns the accelerator-seconds lost. The job goes back to
    /// the queue (at once if `requeue_now`, else at the end of the current
    /// pass).
    fn interrupt(&mut self, j: JobIdx, now: f64, requeue_now: bool, on_stop: bool) -> f64 {
        self.stop(j, now);
        let restore = self.policy.restore_overhead_s.max(0.0);
        let job = &mut self.jobs[j as usize];
        let r = (now - job.run_start).max(0.0);
        // the first seconds of a run restore what an earlier stop saved
        let work = (r - job.restore_s).max(0.0);
        let saved = if on_stop {
            work
        } else if job.checkpoint_s > 0.0 {
            (work / job.checkpoint_s).floor() * job.checkpoint_s
        } else {
            0.0
        };
        if job.run_full > 0.0 {
            job.done = (job.done + saved / job.run_full).min(1.0);
        }
        let lost = job.gpus as f64 * (r - saved);
        // what is saved must be restored at the next start
        job.restore_s = if on_stop {
            restore
        } else if job.done > 0.0 {
            job.restore_s
        } else {
            0.0
        };
        job.lost_gpu_s += lost;
        job.restarts += 1;
        job.state = JobState::Waiting;
        if requeue_now {
            self.enqueue(j, now);
        } else {
            self.requeue.push(j);
        }
        lost
    }

    /// One accelerator of `node` fails; `slot` (uniform in 0..per-node)
    /// picks which one. A job using it is stopped and requeued.
    pub fn fail_accelerator(&mut self, node: NodeIdx, slot: u16, now: f64) -> FailOutcome {
        let (cap, free) = self.cluster.node_state(node);
        if slot >= cap {
            return FailOutcome::AlreadyDown;
        }
        let used = cap - free;
        let mut out = FailOutcome::Idle;
        if slot < used {
            let mut acc = 0u16;
            let mut hit = None;
            for &(j, c) in &self.node_jobs[node as usize] {
                acc += c;
                if slot < acc {
                    hit = Some(j);
                    break;
                }
            }
            if let Some(j) = hit {
                let (lost, failed) = self.hit_by_failure(j, now);
                out = FailOutcome::Hit {
                    job: j,
                    lost_gpu_s: lost,
                    failed,
                };
            }
        }
        self.changes += 1;
        self.cluster.down(node);
        out
    }

    /// One accelerator of running job `j` fails: `pick` (in 0..its
    /// accelerators) says which, in the order of its placement. The job is
    /// requeued or failed as by [`SchedCore::fail_accelerator`], and that
    /// accelerator is down. A job no longer running is left alone.
    /// Returns the node of that accelerator and the outcome.
    pub fn fail_job(&mut self, j: JobIdx, pick: u32, now: f64) -> Option<(NodeIdx, FailOutcome)> {
        let job = &self.jobs[j as usize];
        if job.state != JobState::Running {
            return None;
        }
        let mut acc = 0u32;
        let mut node = job.placement.first().map_or(0, |p| p.0);
        for &(n, c) in &job.placement {
            acc += c as u32;
            if pick < acc {
                node = n;
                break;
            }
        }
        let (lost, failed) = self.hit_by_failure(j, now);
        self.cluster.down(node);
        Some((
            node,
            FailOutcome::Hit {
                job: j,
                lost_gpu_s: lost,
                failed,
            },
        ))
    }

    /// Stops running job `j` hit by a failure: requeued from its last
    /// checkpoint while it has requeues left, else failed with its run lost.
    /// Returns (accelerator-seconds lost, failed).
    fn hit_by_failure(&mut self, j: JobIdx, now: f64) -> (f64, bool) {
        let job = &self.jobs[j as usize];
        if job.fail_requeues >= self.policy.max_requeues {
            let lost = job.gpus as f64 * (now - job.run_start).max(0.0);
            self.stop(j, now);
            let job = &mut self.jobs[j as usize];
            job.lost_gpu_s += lost;
            job.end_s = Some(now);
            job.state = JobState::Failed;
            job.reason = Some(Reason::RestartsExhausted);
            (lost, true)
        } else {
            let lost = self.interrupt(j, now, true, false);
            self.jobs[j as usize].fail_requeues += 1;
            (lost, false)
        }
    }

    /// An idle accelerator of `node` fails (it is down until repaired);
    /// false if the node has none idle.
    pub fn fail_idle(&mut self, node: NodeIdx) -> bool {
        self.changes += 1;
        self.cluster.down(node)
    }

    /// One accelerator of `node` is repaired.
    pub fn repair(&mut self, node: NodeIdx) -> bool {
        self.changes += 1;
        self.cluster.up(node)
    }

    fn refresh_priorities(&mut self, now: f64) {
        for a in 0..self.allocs.len() {
            self.accrue(a as AllocIdx, now);
        }
        let tot_u: f64 = self.allocs.iter().map(|a| a.usage).sum();
        let tot_s: f64 = self.allocs.iter().map(|a| a.shares).sum();
        for a in &mut self.allocs {
            let u = if tot_u > 0.0 { a.usage / tot_u } else { 0.0 };
            let s = if tot_s > 0.0 { a.shares / tot_s } else { 1.0 };
            a.fs_factor = (-(u / s.max(1e-12)) * std::f64::consts::LN_2).exp();
        }
        let weights = FairshareWeights::of(&self.policy);
        // a pass reads the queue's order only: a refresh that keeps it is
        // no change (no backfill tick is woken for it)
        if self
            .queue
            .refresh(self.allocs.iter().map(|a| a.fs_factor), now, weights)
        {
            self.changes += 1;
        }
    }

    /// Rank for preemption: a job may preempt preemptible jobs of strictly
    /// lower rank.
    fn rank(&self, j: JobIdx, now: f64) -> i64 {
        let job = &self.jobs[j as usize];
        match self.policy.kind {
            PolicyKind::Las | PolicyKind::Hetero => {
                job.priority as i64 * 100 - self.policy.las_level(job.attained_at(now)) as i64
            }
            _ => job.priority as i64,
        }
    }

    fn try_preempt(&mut self, j: JobIdx, now: f64) -> bool {
        let my_rank = self.rank(j, now);
        let gpus = self.jobs[j as usize].gpus;
        let cl = self.jobs[j as usize].cands as usize;
        for ci in 0..self.cand_lists[cl].pools.len() {
            let (p, factor) = self.cand_lists[cl].pools[ci];
            let pu = p as usize;
            // cheap filter: any preemptible job that could be outranked?
            match self.policy.kind {
                PolicyKind::Las | PolicyKind::Hetero => {
                    if self.preemptible_prios[pu].is_empty() {
                        continue;
                    }
                }
                _ => {
                    // enough accelerators held by lower-priority preemptible jobs?
                    let lower: u64 = self.preemptible_prios[pu]
                        .range(..)
                        .take_while(|(p, _)| (**p as i64) < my_rank)
                        .map(|(_, c)| c.1)
                        .sum();
                    if lower == 0 || self.cluster.pools[pu].free_total + lower < gpus as u64 {
                        continue;
                    }
                }
            }
            let mut victims = std::mem::take(&mut self.victims);
            victims.clear();
            for &(_, v, _) in &self.running_by_end[pu] {
                let vj = &self.jobs[v as usize];
                if vj.preemptible && vj.run_start < now {
                    let r = self.rank(v, now);
                    if r < my_rank {
                        victims.push((r, -vj.run_start, v));
                    }
                }
            }
            victims.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut have = self.cluster.pools[pu].free_total;
            let mut n = 0;
            while have < gpus as u64 && n < victims.len() {
                have += self.jobs[victims[n].2 as usize].gpus as u64;
                n += 1;
            }
            if have < gpus as u64 {
                self.victims = victims;
                continue;
            }
            // tentatively release victims, then place
            for &(_, _, v) in &victims[..n] {
                self.cluster.release(&self.jobs[v as usize].placement);
            }
            let mut buf = std::mem::take(&mut self.place_buf);
            let ok = self.cluster.place(p, gpus, &mut buf);
            if ok {
                self.cluster.release(&buf);
            }
            for &(_, _, v) in &victims[..n] {
                self.cluster.take_exact(&self.jobs[v as usize].placement);
            }
            // the victims' power must make room too
            let idle = self
                .factory
                .catalog
                .get(self.factory.pools[pu].accel)
                .idle_watts;
            let freed: f64 = victims[..n]
                .iter()
                .map(|&(_, _, v)| {
                    let vj = &self.jobs[v as usize];
                    vj.gpus as f64 * (vj.power_w - idle)
                })
                .sum();
            let power = if ok {
                self.power_plan(p, gpus, freed)
            } else {
                None
            };
            if let Some(power) = power {
                for &(_, _, v) in &victims[..n] {
                    let on_stop = self.policy.checkpoint_on_preempt;
                    let lost = self.interrupt(v, now, false, on_stop);
                    self.dec.preempted.push((v, lost));
                }
                let ok2 = self.cluster.place(p, gpus, &mut buf);
                self.place_buf = buf;
                self.victims = victims;
                if ok2 {
                    self.start(j, p, factor, now, power);
                    return true;
                }
                return false;
            }
            self.place_buf = buf;
            self.victims = victims;
        }
        false
    }

    /// Computes the earliest time `gpus` accelerators are free in `pool`
    /// from planned ends (count-based), and the accelerators to spare then;
    /// None when that is later than `bound`. (Kept out of the pass's body:
    /// its walk over the running jobs is hot and is compiled best alone.)
    #[inline(never)]
    fn reservation(&self, pool: PoolIdx, gpus: u32, now: f64, bound: f64) -> Option<Reservation> {
        let ps = &self.cluster.pools[pool as usize];
        let need = gpus as u64;
        let mut acc = ps.free_total;
        let running = &self.running_by_end[pool as usize];
        if acc >= need {
            // enough in total but fragmented: wait for the next release
            let shadow = running
                .iter()
                .next()
                .map(|&(e, _, _)| f64::from_bits(e).max(now))
                .unwrap_or(now);
            return (shadow <= bound).then_some(Reservation { shadow, extra: 0 });
        }
        let mut ends = running.iter().peekable();
        while let Some(&(e, _, g)) = ends.next() {
            let t = f64::from_bits(e);
            if t > bound {
                return None;
            }
            acc += g as u64;
            if acc >= need {
                // every job that ends at that same instant frees its
                // accelerators too: they are spare for backfill
                while let Some(&&(e2, _, g2)) = ends.peek() {
                    if e2 != e {
                        break;
                    }
                    acc += g2 as u64;
                    ends.next();
                }
                return Some(Reservation {
                    shadow: t.max(now),
                    extra: acc - need,
                });
            }
        }
        (bound == f64::INFINITY).then_some(Reservation {
            shadow: f64::INFINITY,
            extra: 0,
        })
    }

    /// Runs one scheduling pass at `now` and returns its decisions. Started
    /// jobs have their placement and planned end set; preempted jobs are
    /// back in the queue.
    pub fn schedule(&mut self, now: f64) -> &Decisions {
        self.dec.clear();
        let kind = self.policy.kind;
        if kind == PolicyKind::Fairshare
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
        let mut n_blocked = 0;
        let mut n_res = 0;
        let mut tested = 0;
        let mut preempt_tries = 0;
        let mut left_waiting = false;
        let mut wake: Option<f64> = None;
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
                if n > 0 {
                    tested += n;
                    next += n;
                    reached = next;
                    left_waiting = true;
                    continue;
                }
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
                            Reserve::Wait => continue,
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
                continue;
            }
            let npools = self.cand_lists[cl].pools.len();
            let mut by_carbon = false;
            if self.policy.carbon_aware && self.jobs[j as usize].deadline_s.is_some() {
                let until = self.jobs[j as usize].defer_until;
                if until > now {
                    wake = Some(wake.map_or(until, |w: f64| w.min(until)));
                    continue;
                }
                match self.carbon_plan(j, cl, now) {
                    CarbonPlan::Defer(until) => {
                        self.jobs[j as usize].defer_until = until;
                        self.deferrals += 1;
                        wake = Some(wake.map_or(until, |w: f64| w.min(until)));
                        continue;
                    }
                    CarbonPlan::Go => by_carbon = true,
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
                continue;
            }
            let mut power_blocked = false;
            let mut started = false;
            for k in 0..npools {
                let ci = if by_carbon { self.site_order[k].1 } else { k };
                let (p, factor) = self.cand_lists[cl].pools[ci];
                let pu = p as usize;
                if self.blocked[pu] || !self.cluster.pools[pu].may_fit(gpus) {
                    continue;
                }
                let mut uses_extra = false;
                if let Some(r) = self.reservations[pu] {
                    let est = if q.limited { q.est } else { q.est * factor };
                    if now + est > r.shadow {
                        if gpus as u64 > r.extra {
                            continue;
                        }
                        uses_extra = true;
                    }
                }
                let Some(power) = self.power_plan(p, gpus, 0.0) else {
                    power_blocked = true;
                    continue;
                };
                let mut buf = std::mem::take(&mut self.place_buf);
                let ok = self.cluster.place(p, gpus, &mut buf);
                self.place_buf = buf;
                if ok {
                    if uses_extra && let Some(r) = self.reservations[pu].as_mut() {
                        r.extra -= gpus as u64;
                    }
                    self.start(j, p, factor, now, power);
                    started = true;
                    break;
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
            left_waiting = true;
            if backfill_mode {
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
        let mut requeue = std::mem::take(&mut self.requeue);
        for &j in &requeue {
            self.enqueue(j, now);
        }
        requeue.clear();
        self.requeue = requeue;
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
        if kind == PolicyKind::Fairshare && !self.queue.is_empty() {
            let w = self.last_priority + self.policy.priority_period_s;
            wake = Some(wake.map_or(w, |x: f64| x.min(w)));
        }
        self.dec.wakeup = wake.filter(|w| *w > now);
        &self.dec
    }

    /// Whether a candidate pool of `j` may have room for it in a backfill
    /// pass: enough free accelerators, and an end before the pool's
    /// reservation or few enough accelerators to use its spare ones. A
    /// necessary condition of the pass's own checks (a backfill pass blocks
    /// no pool).
    #[inline(always)]
    fn room_for(&self, q: &Queued, now: f64) -> bool {
        let gpus = q.gpus as u64;
        if q.pool1 != u32::MAX {
            let pu = q.pool1 as usize;
            return gpus <= self.cluster.pools[pu].free_total
                && self.reservations[pu]
                    .is_none_or(|r| now + q.est1 <= r.shadow || gpus <= r.extra);
        }
        self.cand_lists[q.cl as usize]
            .pools
            .iter()
            .any(|&(p, factor)| {
                let pu = p as usize;
                if gpus > self.cluster.pools[pu].free_total {
                    return false;
                }
                self.reservations[pu].is_none_or(|r| {
                    let est = if q.limited { q.est } else { q.est * factor };
                    now + est <= r.shadow || gpus <= r.extra
                })
            })
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

    /// Whether a job could ever run here (`Err` gives the reason it would
    /// be refused), without submitting it.
    pub fn check(&mut self, spec: &JobSpec) -> Result<(), Reason> {
        let steps = spec.steps.is_some() && spec.job_type.is_some();
        self.cand_list(spec, steps).map(|_| ())
    }

    /// The highest billing weight among the pools a job may run on (what
    /// its time limit reserves of a grant at the most); `Err` as
    /// [`SchedCore::check`].
    pub fn max_billing(&mut self, spec: &JobSpec) -> Result<f64, Reason> {
        let steps = spec.steps.is_some() && spec.job_type.is_some();
        let cl = self.cand_list(spec, steps)?;
        Ok(self.cand_lists[cl as usize]
            .pools
            .iter()
            .map(|&(p, _)| self.billing(p))
            .fold(0.0, f64::max))
    }

    /// Live systems: the run of job `j` ended at `now` with `state`
    /// (`Completed`, `Failed`, `TimedOut` or `Cancelled`), whatever its plan said.
    pub fn end_run(&mut self, j: JobIdx, now: f64, state: JobState) {
        if self.jobs[j as usize].state != JobState::Running {
            return;
        }
        self.stop(j, now);
        let job = &mut self.jobs[j as usize];
        job.end_s = Some(now);
        if state == JobState::Completed {
            job.done = 1.0;
        }
        if state == JobState::Cancelled {
            job.reason = Some(Reason::Withdrawn);
        }
        job.state = state;
    }

    /// Live systems: withdraws a waiting job (it leaves the queue at once).
    /// Returns false if it was not waiting; a running job is ended with
    /// [`SchedCore::end_run`] once its run has stopped.
    pub fn withdraw(&mut self, j: JobIdx, now: f64) -> bool {
        self.changes += 1;
        let job = &mut self.jobs[j as usize];
        if job.state != JobState::Waiting {
            return false;
        }
        job.state = JobState::Cancelled;
        job.reason = Some(Reason::Withdrawn);
        job.end_s = Some(now);
        let (alloc, prio) = (job.alloc, job.priority);
        self.queue.remove(j, alloc, prio);
        self.requeue.retain(|&q| q != j);
        true
    }

    /// Live systems, after a restart: records a job that is already running
    /// on `placement` (accelerator counts per node of `pool`) since
    /// `run_start`. The placement must be free.
    pub fn restore_running(
        &mut self,
        spec: &JobSpec,
        alloc: AllocIdx,
        pool: PoolIdx,
        placement: &[(NodeIdx, u16)],
        run_start: f64,
    ) -> JobIdx {
        let j = self.submit(spec, alloc, spec.submit_s);
        if self.jobs[j as usize].state != JobState::Waiting {
            return j;
        }
        let job = &self.jobs[j as usize];
        let (alloc, prio) = (job.alloc, job.priority);
        self.queue.remove(j, alloc, prio);
        self.cluster.take_exact(placement);
        self.place_buf.clear();
        self.place_buf.extend_from_slice(placement);
        let t = self
            .factory
            .catalog
            .get(self.factory.pools[pool as usize].accel);
        let power = (crate::energy::job_power_w(t), 1.0);
        self.start(j, pool, 1.0, run_start, power);
        self.dec.started.retain(|&x| x != j);
        j
    }

    /// Live systems, after a restart: sets an allocation's consumed
    /// accelerator-seconds (undecayed and decayed alike).
    pub fn restore_usage(&mut self, alloc: AllocIdx, used_gpu_s: f64) {
        self.changes += 1;
        let a = &mut self.allocs[alloc as usize];
        a.used_total = used_gpu_s;
        a.usage = used_gpu_s;
    }

    /// Whether a waiting job would find a free gang now on one of its
    /// candidate pools (ignoring queue order and reservations): tells
    /// "waits for capacity" from "waits for its turn".
    pub fn fits_now(&self, j: JobIdx) -> bool {
        let job = &self.jobs[j as usize];
        self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .any(|&(p, _)| self.cluster.pools[p as usize].may_fit(job.gpus))
    }

    /// Whether a waiting job that fits now on some candidate pool is kept
    /// waiting by the power budgets of all of them.
    pub fn power_blocked(&self, j: JobIdx) -> bool {
        let job = &self.jobs[j as usize];
        let mut fits = false;
        for &(p, _) in &self.cand_lists[job.cands as usize].pools {
            if self.cluster.pools[p as usize].may_fit(job.gpus) {
                fits = true;
                if self.power_plan(p, job.gpus, 0.0).is_some() {
                    return false;
                }
            }
        }
        fits
    }

    /// Waiting jobs in scheduling order.
    pub fn queue_order(&mut self) -> Vec<JobIdx> {
        self.queue.extend(usize::MAX);
        self.queue.prefix().iter().map(|q| q.j).collect()
    }

    /// Drains `node`: its free accelerators go down now and each one freed
    /// later by a job goes down too, until [`SchedCore::resume`]. Returns
    /// the accelerators taken down now.
    pub fn drain(&mut self, node: NodeIdx) -> u16 {
        self.changes += 1;
        let n = node as usize;
        if self.drained.len() <= n {
            self.drained.resize(n + 1, 0);
        }
        let mut c = 0;
        while self.cluster.down(node) {
            c += 1;
        }
        if self.drained[n] & DRAIN_FLAG == 0 {
            let p = self.cluster.pool_of(node) as usize;
            if self.pool_drained.len() <= p {
                self.pool_drained.resize(p + 1, 0);
            }
            self.pool_drained[p] += 1;
        }
        self.drained[n] = self.drained[n].saturating_add(c) | DRAIN_FLAG;
        c
    }

    /// Whether job `j`'s time limit fits in its allocation's grant now (see
    /// [`Reserve`]); jobs without a limit or a grant always fit.
    pub fn reserve_check(&self, j: JobIdx, now: f64) -> Reserve {
        let job = &self.jobs[j as usize];
        let (Some(limit), a) = (job.time_limit_s, &self.allocs[job.alloc as usize]) else {
            return Reserve::Fits;
        };
        let Some(g) = a.spec.granted_gpu_hours else {
            return Reserve::Fits;
        };
        // the dearest pool it may run on: wherever it starts, its limit fits
        let w = self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .map(|&(p, _)| self.billing(p))
            .fold(0.0, f64::max);
        let need = limit * job.gpus as f64 * w;
        let left = g * 3600.0 - a.used_total;
        if need > left + 1e-6 {
            Reserve::Never
        } else if need > left - a.reserved_at(now) + 1e-6 {
            Reserve::Wait
        } else {
            Reserve::Fits
        }
    }

    /// Drained nodes of pool `p`.
    pub fn drained_nodes_in(&self, p: PoolIdx) -> u32 {
        self.pool_drained.get(p as usize).copied().unwrap_or(0)
    }

    /// Whether a waiting job that finds no free gang has drained nodes on
    /// one of its pools (it may be waiting for them).
    pub fn waits_on_drained(&self, j: JobIdx) -> bool {
        self.candidate_pools(j)
            .any(|p| self.drained_nodes_in(p) > 0)
    }

    /// Ends a drain: the accelerators it took down come back.
    pub fn resume(&mut self, node: NodeIdx) -> u16 {
        self.changes += 1;
        let n = node as usize;
        let Some(d) = self.drained.get_mut(n) else {
            return 0;
        };
        let c = *d & !DRAIN_FLAG;
        if *d & DRAIN_FLAG != 0 {
            let p = self.cluster.pool_of(node) as usize;
            if let Some(x) = self.pool_drained.get_mut(p) {
                *x = x.saturating_sub(1);
            }
        }
        *d = 0;
        for _ in 0..c {
            self.cluster.up(node);
        }
        c
    }

    /// The pools a waiting or running job may run on.
    pub fn candidate_pools(&self, j: JobIdx) -> impl Iterator<Item = PoolIdx> + '_ {
        let job = &self.jobs[j as usize];
        self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .map(|&(p, _)| p)
    }

    /// Accelerators of `node` held down by its drain (0 when not drained).
    pub fn drained_accelerators(&self, node: NodeIdx) -> u16 {
        self.drained
            .get(node as usize)
            .map_or(0, |d| d & !DRAIN_FLAG)
    }

    /// Whether `node` is drained.
    pub fn is_drained(&self, node: NodeIdx) -> bool {
        self.drained
            .get(node as usize)
            .is_some_and(|d| d & DRAIN_FLAG != 0)
    }

    /// Decayed usage of every allocation at `now` (for reports and tests).
    pub fn usage_at(&mut self, now: f64) -> Vec<f64> {
        for a in 0..self.allocs.len() {
            self.accrue(a as AllocIdx, now);
        }
        self.allocs.iter().map(|a| a.usage).collect()
    }

    /// Accelerators usable now (total minus down).
    pub fn usable_accelerators(&self) -> u64 {
        self.cluster.pools.iter().map(|p| p.cap_total).sum()
    }

    /// Accelerators busy now.
    pub fn busy_accelerators(&self) -> u64 {
        self.cluster
            .pools
            .iter()
            .map(|p| p.cap_total - p.free_total)
            .sum()
    }
}
