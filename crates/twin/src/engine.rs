//! The discrete-event engine: virtual time, events ordered by (time,
//! sequence), seeded failures, and the scheduler of `gigafab-core` deciding.

use crate::endpoints::{EndpointInput, Endpoints, EpEv};
use crate::plot::{ExtraPanel, Series, Timeline};
use crate::report::{Collector, Report};
use gigafab_core::{
    AllocationSpec, Category, Factory, FailOutcome, JobIdx, JobSpec, JobState, Policy, Rng,
    SchedCore, Throughputs,
};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

/// Accelerator failure model.
#[derive(Debug, Clone, PartialEq)]
pub struct Failures {
    /// Failures per accelerator-day (Meta's Llama 3 405B run: ~4.7e-4).
    pub rate_per_accel_day: f64,
    /// Seconds until a failed accelerator is back.
    pub repair_s: f64,
    /// Proactive draining on failure precursors; None: failures strike
    /// unannounced (the reactive baseline).
    pub precursors: Option<Precursors>,
}

impl Default for Failures {
    fn default() -> Self {
        Failures {
            rate_per_accel_day: 4.7e-4,
            repair_s: 4.0 * 3600.0,
            precursors: None,
        }
    }
}

/// A class of failures: its share of all failures, the chance that it
/// shows a detectable precursor (ECC errors growing, an Xid, heat, link
/// flaps), and how long before the failure.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureClass {
    pub name: &'static str,
    pub share: f64,
    pub precursor: f64,
    pub lead_s: f64,
}

const fn class(name: &'static str, count: f64, precursor: f64, lead_h: f64) -> FailureClass {
    FailureClass {
        name,
        share: count,
        precursor,
        lead_s: lead_h * 3600.0,
    }
}

/// The unexpected interruptions of Meta's Llama 3 405B run (16,384 H100,
/// 54 days: 419, by cause, "The Llama 3 Herd of Models", table 5), as
/// counts (their share is the count over 419); with gigafab's assumed
/// chance of a precursor and its lead time (docs/health.md says why each).
pub const LLAMA3_FAILURES: &[FailureClass] = &[
    class("faulty GPU", 148.0, 0.3, 0.5),
    class("GPU HBM3 memory", 72.0, 0.6, 2.0),
    class("software bug", 54.0, 0.0, 0.0),
    class("network switch or cable", 35.0, 0.3, 0.5),
    class("host maintenance", 32.0, 0.5, 1.0),
    class("GPU SRAM memory", 19.0, 0.3, 0.5),
    class("GPU system processor", 17.0, 0.2, 0.25),
    class("NIC", 7.0, 0.3, 0.5),
    class("NCCL watchdog timeout", 7.0, 0.0, 0.0),
    class("silent data corruption", 6.0, 0.0, 0.0),
    class("GPU thermal interface and sensor", 6.0, 0.8, 1.0),
    class("SSD", 3.0, 0.5, 6.0),
    class("power supply", 3.0, 0.5, 1.0),
    class("server chassis", 2.0, 0.1, 0.5),
    class("IO expansion board", 2.0, 0.1, 0.5),
    class("dependency", 2.0, 0.0, 0.0),
    class("CPU", 2.0, 0.1, 0.5),
    class("system memory", 2.0, 0.5, 2.0),
];

/// A predictor acting on failure precursors: it catches a share `recall`
/// of the precursors; of the alarms it raises, a share `precision` are
/// true. A caught precursor drains the node: its run stops with its
/// progress saved (a checkpoint as it stops) and goes back to the queue,
/// and the node is out until the failure's repair. A false alarm does the
/// same to a healthy node, which is back after `check_s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Precursors {
    pub classes: Vec<FailureClass>,
    pub recall: f64,
    pub precision: f64,
    pub check_s: f64,
    /// Share of the latent faults (a precursor already there when a run
    /// starts) that the pre-flight check of a large gang catches
    /// (`Policy::preflight_s` > 0): the node is drained before the run
    /// begins and the gang placed elsewhere.
    pub preflight_recall: f64,
}

impl Precursors {
    /// The Llama 3 mix with `recall` and `precision`, false alarms checked
    /// in an hour.
    pub fn llama3(recall: f64, precision: f64) -> Precursors {
        Precursors {
            classes: LLAMA3_FAILURES.to_vec(),
            recall,
            precision,
            check_s: 3600.0,
            preflight_recall: 0.0,
        }
    }

    /// Picks a failure's class from `u` uniform in [0, 1).
    fn class(&self, u: f64) -> &FailureClass {
        let total: f64 = self.classes.iter().map(|c| c.share).sum();
        let mut x = u * total;
        for c in &self.classes {
            if x < c.share {
                return c;
            }
            x -= c.share;
        }
        self.classes.last().expect("classes")
    }

    /// False alarms per failure: the true alarms' rate × (1 − p) / p.
    fn false_alarms_per_failure(&self) -> f64 {
        let total: f64 = self.classes.iter().map(|c| c.share).sum();
        let caught: f64 = self
            .classes
            .iter()
            .map(|c| c.share * c.precursor)
            .sum::<f64>()
            / total.max(1e-12)
            * self.recall;
        if self.precision <= 0.0 {
            return 0.0;
        }
        caught * (1.0 - self.precision).max(0.0) / self.precision
    }
}

/// Simulation settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    /// None: no failures.
    pub failures: Option<Failures>,
    /// Measure jobs with these indexes (submission order), `a..b`.
    pub measure: Option<(usize, usize)>,
    /// Record a utilization/queue timeline with this many points.
    pub timeline_points: Option<usize>,
    /// Model endpoints served alongside the jobs.
    pub endpoints: Vec<EndpointInput>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            failures: Some(Failures::default()),
            measure: None,
            timeline_points: None,
            endpoints: Vec::new(),
        }
    }
}

/// Errors setting up a simulation.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the workload is empty")]
    EmptyWorkload,
    #[error("--measure-jobs {0}..{1} is outside the workload's {2} jobs or empty")]
    BadWindow(usize, usize, usize),
    #[error("job `{0}`: {1}")]
    BadJob(String, String),
    #[error("duplicate allocation for tenant `{0}`")]
    DuplicateTenant(String),
    #[error(
        "failures on for {span_years:.0} years of {accelerators} accelerators: about {expected:.1e} failure events, more than the {max:.0e} the twin simulates; shorten the workload or lower --failure-rate (0 turns failures off)"
    )]
    TooManyFailures {
        span_years: f64,
        accelerators: u64,
        expected: f64,
        max: f64,
    },
}

/// Longest time a job may be submitted after time 0 or run, s (~31.7 years):
/// past it a workload is refused, not simulated for hours.
pub const MAX_TIME_S: f64 = 1e9;

/// Most failure events a simulation may expect (each one is an event, and
/// many restart jobs).
pub const MAX_FAILURE_EVENTS: f64 = 5e7;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    /// An endpoint's event.
    Ep(EpEv),
    Finish(JobIdx, u32),
    /// One accelerator of a run (job, epoch) fails.
    JobFail(JobIdx, u32),
    /// A caught precursor on accelerator `pick` of a run (job, epoch):
    /// the failure itself comes at the time given.
    Precursor(JobIdx, u32, u32, f64),
    /// A false alarm on accelerator `pick` of a run (job, epoch).
    FalseAlarm(JobIdx, u32, u32),
    /// A node drained by an alarm is back.
    Undrain(u32),
    Repair(u32),
    Wake,
}

#[derive(Debug, Clone, Copy)]
struct Event {
    t: f64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    // reversed: BinaryHeap is a max-heap, we pop the earliest
    fn cmp(&self, o: &Self) -> Ordering {
        o.t.total_cmp(&self.t).then(o.seq.cmp(&self.seq))
    }
}

/// An alarm on accelerator `pick` of run (`j`, `epoch`): the run stops
/// with its progress saved and goes back to the queue, and its node is
/// drained. Returns the node, or None for a run that has ended since.
fn alarm(core: &mut SchedCore, j: JobIdx, epoch: u32, pick: u32, now: f64) -> Option<u32> {
    let job = &core.jobs[j as usize];
    if job.state != JobState::Running || job.epoch != epoch {
        return None;
    }
    let mut acc = 0u32;
    let mut node = job.placement.first()?.0;
    for &(n, c) in &job.placement {
        acc += c as u32;
        if pick < acc {
            node = n;
            break;
        }
    }
    core.checkpoint_stop(j, now)?;
    core.drain(node);
    Some(node)
}

/// Failures of idle accelerators over `[from, now)` (their number is
/// constant between two events), in bulk: those repaired before `now` are
/// only counted; those still under repair take an accelerator down until
/// their repair. Returns (failures, repairs scheduled).
fn fail_idle(
    core: &mut SchedCore,
    rng: &mut Rng,
    q: &mut Queue,
    rate: f64,
    repair_s: f64,
    from: f64,
    now: f64,
) -> (u64, usize) {
    let dt = now - from;
    let idle = core.cluster.free_total();
    if dt.is_nan() || dt <= 0.0 || idle == 0 {
        return (0, 0);
    }
    let w = dt.min(repair_s);
    let early = rng.poisson(idle as f64 * rate * (dt - w));
    let late = rng.poisson(idle as f64 * rate * w);
    let mut repairs = 0;
    for _ in 0..late {
        let t = now - w + rng.f64() * w;
        if let Some(node) = pick_idle(core, rng) {
            core.fail_idle(node);
            q.push((t + repair_s).max(now), Ev::Repair(node));
            repairs += 1;
        }
    }
    (early + late, repairs)
}

/// A node with an idle accelerator, the accelerator drawn uniformly among
/// the idle ones (by rejection; a scan after 64 misses).
fn pick_idle(core: &SchedCore, rng: &mut Rng) -> Option<u32> {
    let total = core.cluster.free_total();
    if total == 0 {
        return None;
    }
    let mut k = rng.below(total);
    let p = core.cluster.pools.iter().position(|pool| {
        if k < pool.free_total {
            true
        } else {
            k -= pool.free_total;
            false
        }
    })?;
    let pool = &core.factory.pools[p];
    let per = pool.per_node as u64;
    let size = pool.nodes as u64 * per;
    for _ in 0..64 {
        let g = rng.below(size);
        let node = pool.first_node + (g / per) as u32;
        let (_, f) = core.cluster.node_state(node);
        if (g % per) < f as u64 {
            return Some(node);
        }
    }
    let start = rng.below(pool.nodes as u64) as u32;
    (0..pool.nodes)
        .map(|i| pool.first_node + (start + i) % pool.nodes)
        .find(|&n| core.cluster.node_state(n).1 > 0)
}

/// Event queue ordered by (time, insertion sequence).
#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Event>,
    seq: u64,
}

impl Queue {
    fn push(&mut self, t: f64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Event {
            t,
            seq: self.seq,
            ev,
        });
    }
    fn peek_t(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.t)
    }
    fn pop(&mut self) -> Option<Event> {
        self.heap.pop()
    }
}

/// What a run produces.
pub struct SimOutput {
    pub report: Report,
    pub timeline: Option<Timeline>,
    /// Facility power (MW, the `utilization` of its series) over time.
    pub power_timeline: Option<Timeline>,
    /// Facility power of each site (MW, the `utilization` of its series)
    /// over time, in the factory's site order; empty without a timeline.
    /// Recorded at the same times as `power_timeline`, so their series line
    /// up point for point and sum to it.
    pub site_power_timelines: Vec<Timeline>,
    /// Per job (submission order): (id, state, submit, first start, end).
    pub core: SchedCore,
}

impl SimOutput {
    /// What `--plot` draws: utilization and queue, one panel per site of its
    /// facility power against its budget, and the sites' grid intensity,
    /// with dates on the time axis (the policy's `calendar_start_s` is sim
    /// time 0). None when no timeline was recorded.
    pub fn plot_series(&self) -> Option<Series> {
        let mut series = self.timeline.as_ref()?.series();
        let cal = self.core.policy.calendar_start_s;
        series.calendar_start_s = cal.is_finite().then_some(cal);
        let f = &self.core.factory;
        for (site, tl) in f.sites.iter().zip(&self.site_power_timelines) {
            let ps = tl.series();
            series.extra.push(ExtraPanel {
                label: format!("{} power (MW)", site.name),
                lines: vec![(
                    "facility power".into(),
                    sample_at(&series.t, &ps.t, &ps.utilization),
                )],
                limit: site
                    .power_budget_w
                    .map(|b| (format!("budget {:.2} MW", b / 1e6), b / 1e6)),
            });
        }
        let lines: Vec<(String, Vec<f64>)> = f
            .sites
            .iter()
            .filter_map(|s| {
                s.carbon.as_ref().map(|c| {
                    (
                        s.name.clone(),
                        series.t.iter().map(|&t| c.at(cal + t)).collect(),
                    )
                })
            })
            .collect();
        if !lines.is_empty() {
            series.extra.push(ExtraPanel {
                label: "grid gCO2e/kWh".into(),
                lines,
                limit: None,
            });
        }
        Some(series)
    }
}

/// Values `v` (at increasing times `vt`) sampled at times `t`: the first
/// point at or after each time, the last one past the end (NaN when empty).
/// Timelines recorded at the same events have the same times, so this is
/// then the identity.
fn sample_at(t: &[f64], vt: &[f64], v: &[f64]) -> Vec<f64> {
    t.iter()
        .map(|&x| {
            let i = vt.partition_point(|&y| y < x);
            v.get(i.min(v.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        })
        .collect()
}

/// Checks a job before it enters the simulation.
fn validate(j: &JobSpec) -> Result<(), String> {
    if !(j.submit_s.is_finite() && j.submit_s >= 0.0) {
        return Err("submit time must be finite and >= 0".into());
    }
    if j.submit_s > MAX_TIME_S {
        return Err(format!(
            "submit time {:e} s is past the twin's horizon of {MAX_TIME_S:e} s (~31.7 years)",
            j.submit_s
        ));
    }
    if j.gpus == 0 {
        return Err("gpus must be >= 1".into());
    }
    let steps = j.steps.is_some() && j.job_type.is_some();
    match (steps, j.duration_s) {
        (true, _) => {
            if !j.steps.is_some_and(|s| s.is_finite() && s > 0.0) {
                return Err("steps must be finite and > 0".into());
            }
        }
        (false, Some(d)) if d.is_finite() && d > MAX_TIME_S => {
            return Err(format!(
                "duration {d:e} s is longer than the twin's horizon of {MAX_TIME_S:e} s (~31.7 years)"
            ));
        }
        (false, Some(d)) if d.is_finite() && d > 0.0 => {}
        (false, _) => return Err("needs duration_s > 0 (or steps with job_type)".into()),
    }
    for (n, v) in [
        ("checkpoint_s", j.checkpoint_s),
        ("time_limit_s", j.time_limit_s),
        ("deadline_s", j.deadline_s),
    ] {
        if v.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
            return Err(format!("{n} must be finite and >= 0"));
        }
    }
    Ok(())
}

/// Runs a simulation of `jobs` on `factory` under `policy`.
///
/// `progress(finished, total)` is called now and then (for a progress bar).
pub fn simulate(
    factory: Factory,
    policy: Policy,
    throughputs: Throughputs,
    mut jobs: Vec<JobSpec>,
    allocations: &[AllocationSpec],
    cfg: &SimConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<SimOutput, SimError> {
    let wall = Instant::now();
    if jobs.is_empty() && cfg.endpoints.iter().all(|e| e.requests.is_empty()) {
        return Err(SimError::EmptyWorkload);
    }
    for j in &jobs {
        validate(j).map_err(|m| SimError::BadJob(j.id.clone(), m))?;
    }
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
    let n = jobs.len();
    let window = match cfg.measure {
        Some((a, b)) if a < b && b <= n => (a, b),
        Some((a, b)) => return Err(SimError::BadWindow(a, b, n)),
        None => (0, n),
    };
    // bound the work before building anything: expected failure events
    // over at least the arrivals plus the longest job
    if let Some(f) = cfg.failures.as_ref().filter(|f| f.rate_per_accel_day > 0.0) {
        let accelerators = factory.accelerators();
        let longest = jobs
            .iter()
            .filter_map(|j| j.duration_s)
            .fold(0.0f64, f64::max);
        let span = match (jobs.first(), jobs.last()) {
            (Some(a), Some(b)) => b.submit_s - a.submit_s + longest,
            _ => 0.0,
        };
        let expected = f.rate_per_accel_day / 86_400.0 * accelerators as f64 * span;
        if expected > MAX_FAILURE_EVENTS {
            return Err(SimError::TooManyFailures {
                span_years: span / (365.0 * 86_400.0),
                accelerators,
                expected,
                max: MAX_FAILURE_EVENTS,
            });
        }
    }
    let policy_name = policy.kind.name();
    let mut core = SchedCore::new(factory, policy, throughputs);
    // tenants -> allocations
    let mut by_tenant: HashMap<String, u32> = HashMap::new();
    for a in allocations {
        if by_tenant.contains_key(&a.tenant) {
            return Err(SimError::DuplicateTenant(a.tenant.clone()));
        }
        let i = core.add_allocation(a.clone());
        by_tenant.insert(a.tenant.clone(), i);
    }
    let mut job_alloc = Vec::with_capacity(n);
    for j in &jobs {
        let t = j.tenant.as_deref().unwrap_or("default");
        let i = match by_tenant.get(t) {
            Some(&i) => i,
            None => {
                let i = core.add_allocation(AllocationSpec::open(
                    t,
                    j.category.unwrap_or(Category::Academia),
                ));
                by_tenant.insert(t.to_string(), i);
                i
            }
        };
        job_alloc.push(i);
    }

    let total_accel = core.factory.accelerators();
    let mut rng = Rng::new(cfg.seed);
    let mut fail_rng = rng.fork(1);
    let mut q = Queue::default();
    // failures per accelerator-second: a run draws its first failure when
    // it starts; idle accelerators fail in bulk between events (below), so
    // the cost follows the runs, not how long accelerators sit idle
    let fail_rate = cfg
        .failures
        .as_ref()
        .map(|f| f.rate_per_accel_day / 86_400.0)
        .filter(|r| *r > 0.0 && r.is_finite());
    let repair_s = cfg.failures.as_ref().map_or(0.0, |f| f.repair_s.max(0.0));
    let precursors = cfg.failures.as_ref().and_then(|f| f.precursors.as_ref());
    let check_s = precursors.map_or(0.0, |p| p.check_s.max(0.0));
    // nodes drained by alarms, and until when (a second alarm extends it)
    let mut drained_until: HashMap<u32, f64> = HashMap::new();
    // endpoints: their replicas are charged to their tenants' allocations
    let mut eps = Endpoints::new(&cfg.endpoints, &mut |tenant, category| {
        if let Some(&i) = by_tenant.get(tenant) {
            return i;
        }
        let i = core.add_allocation(AllocationSpec::open(tenant, category));
        by_tenant.insert(tenant.to_string(), i);
        i
    });
    let first_request = cfg
        .endpoints
        .iter()
        .filter_map(|e| e.requests.first().map(|r| r.t_s))
        .fold(f64::INFINITY, f64::min);
    let first_submit = jobs
        .first()
        .map_or(first_request, |j| j.submit_s.min(first_request));
    let (w_start, w_last) = if window.1 > window.0 {
        (jobs[window.0].submit_s, jobs[window.1 - 1].submit_s)
    } else {
        (first_submit, first_submit)
    };
    let mut col = Collector::new(window, w_start, w_last);
    // a job's index in `jobs` (replicas are not there)
    let mut spec_of: Vec<u32> = Vec::with_capacity(n);
    // dependencies: the scheduler's index of each job submitted, by id
    // (kept only when some job waits for others)
    let has_deps = jobs.iter().any(|j| j.dependency.is_some());
    let mut idx_of: HashMap<String, JobIdx> = HashMap::new();
    let spec_idx =
        |spec_of: &Vec<u32>, j: JobIdx| spec_of.get(j as usize).copied().unwrap_or(u32::MAX);
    let mut ep_out: Vec<(f64, EpEv)> = Vec::new();
    eps.start(first_submit, &mut ep_out);
    for (t, e) in ep_out.drain(..) {
        q.push(t, Ev::Ep(e));
    }
    let mut timeline = cfg.timeline_points.map(Timeline::new);
    let mut power_timeline = cfg.timeline_points.map(Timeline::new);
    let mut site_power_timelines: Vec<Timeline> = match cfg.timeline_points {
        Some(p) => (0..core.factory.sites.len())
            .map(|_| Timeline::new(p))
            .collect(),
        None => Vec::new(),
    };
    core.set_energy_origin(first_submit);
    let mut next_arrival = 0usize;
    let mut events: u64 = 0;
    let mut pending_wake = f64::NEG_INFINITY;
    let mut repairs_pending = 0usize;
    #[cfg(debug_assertions)]
    let mut passes: u64 = 0;
    let mut terminal = 0usize;
    let mut last_t = first_submit;
    let mut busy = 0u64;
    let progress_every = (n as u64 / 200).max(1);
    progress(0, n as u64);

    loop {
        if terminal == n && eps.quiet() {
            break;
        }
        let ta = match (
            jobs.get(next_arrival).map(|j| j.submit_s),
            eps.next_arrival(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let te = q.peek_t();
        let now = match (ta, te) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(e)) => e,
            (Some(a), Some(e)) => a.min(e),
        };
        if ta.is_none() && core.n_running == 0 && repairs_pending == 0 && eps.quiet() {
            // nothing can change any more except wake-ups: stop if the last
            // pass could not start anything
            if !col.last_pass_started && core.next_validity(now).is_none() {
                break;
            }
        }
        // integrate busy accelerators over [last_t, now)
        col.integrate(last_t, now, busy);
        col.at_arrivals_end(&mut core, now);
        if let Some(r) = fail_rate {
            let (failed, repairs) =
                fail_idle(&mut core, &mut fail_rng, &mut q, r, repair_s, last_t, now);
            col.failures += failed;
            repairs_pending += repairs;
        }
        last_t = now;
        // the scheduler's state changed: a pass is due
        let mut dirty = false;
        let mut stopped_runs = false;
        // arrivals at `now`
        while next_arrival < n && jobs[next_arrival].submit_s <= now {
            let i = next_arrival;
            let j = match jobs[i].dependency.as_deref() {
                None => core.submit(&jobs[i], job_alloc[i], now),
                Some(d) => {
                    // a job not submitted (yet) never ends: the core
                    // cancels what waits for it
                    let after: Vec<(gigafab_core::sched::DepKind, JobIdx)> =
                        gigafab_core::spec::parse_dependency(d)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, id)| (k, idx_of.get(&id).copied().unwrap_or(JobIdx::MAX)))
                            .collect();
                    core.submit_after(&jobs[i], job_alloc[i], now, &after)
                }
            };
            if has_deps {
                idx_of.insert(jobs[i].id.clone(), j);
            }
            dirty = true;
            spec_of.resize(core.jobs.len(), u32::MAX);
            spec_of[j as usize] = i as u32;
            if core.jobs[j as usize].state == JobState::Cancelled {
                col.terminal(&core, spec_idx(&spec_of, j), now);
                terminal += 1;
            }
            next_arrival += 1;
            events += 1;
        }
        eps.arrive(&mut core, now, &mut ep_out);
        // events at `now`
        while q.peek_t() == Some(now) {
            let e = q.pop().expect("peeked");
            events += 1;
            if let Ev::Ep(ev) = e.ev {
                eps.on_event(&mut core, ev, now, &mut ep_out);
                continue;
            }
            dirty = true;
            match e.ev {
                Ev::Ep(_) => {}
                Ev::Finish(j, epoch) => {
                    let job = &core.jobs[j as usize];
                    if job.state != JobState::Running || job.epoch != epoch {
                        continue; // stale: preempted or failed since
                    }
                    core.finish(j, now);
                    col.terminal(&core, spec_idx(&spec_of, j), now);
                    terminal += 1;
                    if (terminal as u64).is_multiple_of(progress_every) {
                        progress(terminal as u64, n as u64);
                    }
                }
                Ev::JobFail(j, epoch) => {
                    let job = &core.jobs[j as usize];
                    if job.state != JobState::Running || job.epoch != epoch {
                        continue; // stale: ended, preempted or failed since
                    }
                    let pick = fail_rng.below(job.gpus as u64) as u32;
                    if let Some((
                        node,
                        FailOutcome::Hit {
                            job,
                            lost_gpu_s,
                            failed,
                        },
                    )) = core.fail_job(j, pick, now)
                    {
                        stopped_runs = true;
                        col.failures += 1;
                        q.push(now + repair_s, Ev::Repair(node));
                        repairs_pending += 1;
                        col.lost_failures_gpu_s += lost_gpu_s;
                        col.failure_hits += 1;
                        if failed && !eps.is_replica(job) {
                            col.terminal(&core, spec_idx(&spec_of, job), now);
                            terminal += 1;
                        }
                    }
                }
                Ev::Precursor(j, epoch, pick, t_fail) => {
                    // drain the node before it fails: the run checkpoints
                    // as it stops and is requeued; the node is out until
                    // the failure's repair
                    let Some(node) = alarm(&mut core, j, epoch, pick, now) else {
                        continue;
                    };
                    stopped_runs = true;
                    col.failures += 1;
                    col.true_drains += 1;
                    let until = t_fail.max(now) + repair_s;
                    let u = drained_until.entry(node).or_insert(until);
                    *u = u.max(until);
                    q.push(until, Ev::Undrain(node));
                    repairs_pending += 1;
                }
                Ev::FalseAlarm(j, epoch, pick) => {
                    let Some(node) = alarm(&mut core, j, epoch, pick, now) else {
                        continue;
                    };
                    stopped_runs = true;
                    col.false_drains += 1;
                    let until = now + check_s;
                    let u = drained_until.entry(node).or_insert(until);
                    *u = u.max(until);
                    q.push(until, Ev::Undrain(node));
                    repairs_pending += 1;
                }
                Ev::Undrain(node) => {
                    // the latest of the node's alarms ends its drain
                    if drained_until.get(&node).is_some_and(|&u| now >= u) {
                        drained_until.remove(&node);
                        core.resume(node);
                    }
                    repairs_pending -= 1;
                }
                Ev::Repair(node) => {
                    core.repair(node);
                    repairs_pending -= 1;
                }
                Ev::Wake => {}
            }
        }
        if stopped_runs {
            eps.check_runs(&mut core, now);
        }
        dirty |= std::mem::take(&mut eps.dirty);
        for (t, e) in ep_out.drain(..) {
            q.push(t, Ev::Ep(e));
        }
        if !dirty {
            // only requests moved: the scheduler has nothing new to see
            continue;
        }
        // one scheduling pass for everything that happened at `now`
        core.schedule(now);
        // debug builds (every test) check the core's bookkeeping after the
        // pass: every pass on small fleets, one in 1,024 on large ones
        #[cfg(debug_assertions)]
        {
            passes += 1;
            if (core.cluster.nodes() <= 4096 || passes.is_multiple_of(1024))
                && let Err(e) = core.check_invariants()
            {
                panic!("after the pass at t={now}: {e}");
            }
        }
        let d = core.decisions();
        col.last_pass_started = !d.started.is_empty();
        let wake = d.wakeup;
        for &(j, lost) in &d.preempted {
            if !eps.is_replica(j) {
                col.lost_preemption_gpu_s += lost;
                col.preemptions += 1;
            }
        }
        for &j in &d.started {
            let job = &core.jobs[j as usize];
            let (run, _) = job.planned_run();
            // a run on resumed nodes begins once they are up
            let begin = job.run_start.max(now);
            if !job.service {
                q.push(begin + run, Ev::Finish(j, job.epoch));
            }
            if let Some(r) = fail_rate {
                let g = job.gpus as f64;
                // the first failure among its accelerators, if before its end
                let t = fail_rng.exp(r * g);
                let mut caught = false;
                if let Some(pc) = precursors {
                    // its class, whether the predictor sees it coming
                    let c = pc.class(fail_rng.f64());
                    let seen = fail_rng.f64() < c.precursor * pc.recall;
                    let pick = fail_rng.below(job.gpus as u64) as u32;
                    // a latent fault at the start of a checked gang: its
                    // pre-flight check may catch it before the run begins
                    let checked = core.policy.preflight_s > 0.0
                        && job.placement.len() as u32 >= core.policy.preflight_min_nodes;
                    if t < run
                        && checked
                        && t <= c.lead_s
                        && pc.preflight_recall > 0.0
                        && fail_rng.f64() < c.precursor * pc.preflight_recall
                    {
                        q.push(now, Ev::Precursor(j, job.epoch, pick, begin + t));
                        col.preflight_catches += 1;
                        caught = true;
                    } else if t < run && seen {
                        // a precursor before the run began is seen as it
                        // begins (the node was already under suspicion)
                        q.push(
                            begin + (t - c.lead_s).max(0.0),
                            Ev::Precursor(j, job.epoch, pick, begin + t),
                        );
                        caught = true;
                    }
                    // a false alarm, if before the failure and the end
                    let fa = r * pc.false_alarms_per_failure() * g;
                    if fa > 0.0 {
                        let tf = fail_rng.exp(fa);
                        if tf < run.min(t) {
                            let pick = fail_rng.below(job.gpus as u64) as u32;
                            q.push(begin + tf, Ev::FalseAlarm(j, job.epoch, pick));
                        }
                    }
                }
                if t < run && !caught {
                    q.push(begin + t, Ev::JobFail(j, job.epoch));
                }
            }
        }
        for &(j, _) in &d.cancelled {
            if !core.jobs[j as usize].service {
                col.terminal(&core, spec_idx(&spec_of, j), now);
                terminal += 1;
            }
        }
        if !eps.is_empty() {
            let started = d.started.clone();
            let preempted = d.preempted.clone();
            let cancelled: Vec<JobIdx> = d.cancelled.iter().map(|c| c.0).collect();
            eps.after_pass(
                &mut core,
                &started,
                &preempted,
                &cancelled,
                now,
                &mut ep_out,
            );
            for (t, e) in ep_out.drain(..) {
                q.push(t, Ev::Ep(e));
            }
        }
        if let Some(w) = wake
            && w > now
            && (pending_wake <= now || w < pending_wake)
        {
            q.push(w, Ev::Wake);
            pending_wake = w;
        }
        busy = core.busy_accelerators();
        if let Some(tl) = timeline.as_mut() {
            tl.record(now, busy as f64 / total_accel as f64, core.queued());
        }
        if let Some(tl) = power_timeline.as_mut() {
            tl.record(now, core.facility_power_w() / 1e6, 0);
        }
        for (s, tl) in site_power_timelines.iter_mut().enumerate() {
            tl.record(now, core.site_power_w(s) / 1e6, 0);
        }
    }
    progress(terminal as u64, n as u64);
    let wall_s = wall.elapsed().as_secs_f64();
    let endpoint_reports = eps.finish(&mut core, last_t);
    let mut report = col.finish(
        &mut core,
        policy_name,
        cfg.seed,
        events,
        wall_s,
        total_accel,
    );
    report.endpoints = endpoint_reports;
    Ok(SimOutput {
        report,
        timeline,
        power_timeline,
        site_power_timelines,
        core,
    })
}
