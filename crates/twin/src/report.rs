//! Simulation report: job completion times, waits, utilization, losses,
//! fairness, per-category breakdown.

use gigafab_core::{Category, JobIdx, JobState, SchedCore};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Figures for one tenant category.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CategoryStats {
    pub jobs: u64,
    pub completed: u64,
    pub avg_jct_s: f64,
    pub avg_wait_s: f64,
    pub gpu_hours: f64,
    /// Energy of the category's runs (accelerators and node share, before PUE), MWh.
    pub energy_mwh: f64,
    /// Carbon of the category's runs (with PUE), tCO2e; null when no site
    /// has a grid carbon intensity (series or constant).
    pub carbon_t: Option<f64>,
}

/// Figures of one job-size class (accelerators asked), over the measured
/// jobs: whether large gangs starve shows here.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SizeClassStats {
    /// `1`, `2-4`, `5-8`, `9-15` or `16+` accelerators.
    pub class: String,
    pub jobs: u64,
    pub completed: u64,
    pub avg_jct_s: f64,
    pub p99_jct_s: f64,
    /// Over the jobs that started.
    pub avg_wait_s: f64,
    pub p99_wait_s: f64,
    /// The longest wait, a job that never started counting its wait until
    /// the simulation's end.
    pub max_wait_s: f64,
    /// Jobs that never started.
    pub never_started: u64,
    /// Time in the queue in all, first wait and the waits after each
    /// preemption or failure (over the completed jobs): where least
    /// attained service starves a gang, it shows here rather than in the
    /// wait to the first start.
    pub avg_queued_s: f64,
    pub max_queued_s: f64,
}

/// The seconds a job that ended spent waiting in all: from submission to
/// its end, less the time it ran (None while it has not ended).
pub fn queued_s(job: &gigafab_core::Job) -> Option<f64> {
    let end = job.end_s?;
    Some((end - job.submit_s - job.attained_gpu_s / job.gpus.max(1) as f64).max(0.0))
}

/// The size class of a job of `gpus` accelerators (its index in
/// [`SIZE_CLASSES`]).
pub fn size_class(gpus: u32) -> usize {
    match gpus {
        0..=1 => 0,
        2..=4 => 1,
        5..=8 => 2,
        9..=15 => 3,
        _ => 4,
    }
}

/// The size classes of the report, smallest first.
pub const SIZE_CLASSES: [&str; 5] = ["1", "2-4", "5-8", "9-15", "16+"];

/// Energy figures of one site.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SiteStats {
    pub energy_mwh: f64,
    /// Null when the site has no grid carbon intensity (series or constant).
    pub carbon_t: Option<f64>,
    pub peak_power_mw: f64,
    pub power_budget_mw: Option<f64>,
    /// Mean grid intensity over the run, gCO2e/kWh (none without a series).
    pub grid_g_per_kwh: Option<f64>,
}

/// The bound τ of the bounded slowdown, s: runs shorter than this count as
/// this long, so that tiny jobs do not dominate the mean.
pub const BSLD_TAU_S: f64 = 10.0;

/// The report of a simulation. Every field except `wall_time_s` and
/// `events_per_s` is a deterministic function of the inputs and the seed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Model endpoints served alongside the jobs (`gigafab sim --endpoints`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<crate::endpoints::EndpointReport>,
    /// What residency cost (`gigafab sim --residency-cost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<crate::residency::ResidencyCost>,
    /// What sharing accelerators gave (`gigafab sim --against-whole`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharing: Option<crate::sharing::SharingReport>,
    pub policy: String,
    pub factory: String,
    pub accelerators: u64,
    pub seed: u64,
    pub jobs_submitted: u64,
    pub jobs_completed: u64,
    pub jobs_timed_out: u64,
    pub jobs_cancelled: u64,
    /// Jobs failed after more accelerator failures than the policy's
    /// `max_requeues` (`--max-requeues`).
    pub jobs_failed: u64,
    pub jobs_unfinished: u64,
    /// Cancelled jobs by reason code (`unsatisfiable`, `unknown_job_type`,
    /// `allocation_expired`, `allocation_exhausted`).
    pub cancelled_reasons: BTreeMap<String, u64>,
    /// Jobs in the measurement window (`--measure-jobs`), all by default.
    pub measured_jobs: u64,
    /// JCT (end − submission) of the measured jobs that completed: mean and
    /// percentiles. Jobs cut at their time limit are not in them (see
    /// `avg_jct_timed_out_s`).
    pub avg_jct_s: f64,
    /// What `avg_jct_s` would be if each of those jobs had started at its
    /// submission, alone, on the accelerator type where it runs fastest:
    /// a bound no policy can beat on this workload (compare policies and
    /// simulators with it, not across draws of a workload).
    pub avg_jct_bound_s: f64,
    pub p50_jct_s: f64,
    pub p95_jct_s: f64,
    pub p99_jct_s: f64,
    /// Measured jobs cut at their time limit.
    pub measured_timed_out: u64,
    /// Mean JCT (end − submission) of the measured jobs cut at their time
    /// limit (0 when none was).
    pub avg_jct_timed_out_s: f64,
    /// Wait (first start − submission) of every measured job that started:
    /// completed, timed out, or still running at the end.
    pub avg_wait_s: f64,
    pub p99_wait_s: f64,
    /// Mean bounded slowdown of the measured jobs that completed or were cut
    /// at their time limit: max(1, JCT / max(run, τ)) with τ =
    /// [`BSLD_TAU_S`] (10 s), `run` the shortest possible run time (a job
    /// cut at its limit: the lesser of that and its limit), as in the
    /// scheduling literature (Feitelson et al.).
    pub avg_slowdown: f64,
    /// Mean of JCT / shortest possible run time over the measured jobs that
    /// completed (no bound: a 1-second job that waited an hour counts 3,600).
    pub avg_slowdown_unbounded: f64,
    /// From the first submission (of the window) to the last end (of the window).
    pub makespan_s: f64,
    /// Busy accelerator-seconds / (accelerators × makespan): low when the
    /// run ends with a long drained tail.
    pub utilization: f64,
    /// Busy accelerator-seconds / (accelerators × busy period), the busy
    /// period running from the first to the last submission of the measured
    /// jobs: the utilization under the offered load. When those submissions
    /// coincide (one job, or all at once) it is `utilization`.
    pub utilization_busy: f64,
    /// Accelerator-hours of work lost to failures.
    pub gpu_hours_lost: f64,
    /// Accelerator-hours of work lost to preemption.
    pub gpu_hours_lost_preemption: f64,
    pub failures: u64,
    pub failure_job_hits: u64,
    /// Preemptions, migrations included.
    pub preemptions: u64,
    /// Runs moved to a faster accelerator type (`--migrate`).
    pub migrations: u64,
    /// Jobs promoted by the starvation bound (`las`, `hetero`, `fairshare`).
    pub promotions: u64,
    /// Jain's index over allocations of 1 / mean slowdown (1 = equal service).
    pub jain_fairness: f64,
    /// Facility energy (IT × PUE, idle included) from the first submission
    /// to the last end, MWh.
    pub energy_mwh: f64,
    /// Carbon of that energy at the sites' grid intensity, tCO2e, summed
    /// over the sites that have one; null when none has (not accounted,
    /// rather than zero).
    pub carbon_t: Option<f64>,
    /// Facility energy and carbon from the first submission to the last
    /// measured one: the period the offered load holds, without the tail
    /// where the last jobs drain an otherwise idle factory (what a factory
    /// that never empties compares on).
    pub arrivals_energy_mwh: f64,
    pub arrivals_carbon_t: Option<f64>,
    /// Highest facility power (sum over sites), MW.
    pub peak_power_mw: f64,
    /// Mean facility power over the makespan, MW.
    pub avg_power_mw: f64,
    /// Sum of the sites' power budgets, MW (none if no site has one).
    pub power_budget_mw: Option<f64>,
    /// Jobs with a deadline that ended after it (or never ended).
    pub deadline_misses: u64,
    /// Those misses by cause: `failures` (the job was hit by an
    /// accelerator failure), else `carbon` (a carbon-aware decision
    /// deferred it at least once), else `scheduling` (it waited for room).
    pub deadline_misses_by_cause: BTreeMap<String, u64>,
    /// Jobs with a deadline.
    pub flexible_jobs: u64,
    /// Energy of the jobs' runs (accelerators and node share, before PUE), MWh.
    pub jobs_energy_mwh: f64,
    /// Carbon of the jobs' runs (with PUE), tCO2e: what scheduling moves;
    /// null when no site has a grid carbon intensity.
    pub jobs_carbon_t: Option<f64>,
    /// Mean JCT of measured completed jobs with a deadline, and without.
    pub avg_jct_flexible_s: f64,
    pub avg_jct_inflexible_s: f64,
    /// Carbon-aware deferrals decided.
    pub carbon_deferrals: u64,
    /// Runs started under a power cap.
    pub capped_runs: u64,
    /// Effective training time of the large gangs (jobs of at least
    /// [`LARGE_GANG`] accelerators) that completed: the time their work
    /// takes uninterrupted on their accelerators over the wall time from
    /// their first start to their end (restarts, lost work, restores and
    /// waits to run again included), as Meta and ByteDance define it. None
    /// without such a job.
    pub large_gang_ettr: Option<f64>,
    pub large_gangs: u64,
    /// Nodes drained ahead of a failure on a caught precursor, and on a
    /// false alarm (`--precursor-recall`).
    pub true_drains: u64,
    pub false_drains: u64,
    /// Of the true drains, those a pre-flight check made before a large
    /// gang's run began (`--preflight-minutes`).
    pub preflight_catches: u64,
    /// Idle power-down (`--power-down-after`): none when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_down: Option<PowerDownReport>,
    pub sites: BTreeMap<String, SiteStats>,
    pub categories: BTreeMap<String, CategoryStats>,
    /// Per job-size class, smallest first (classes without a measured job
    /// left out).
    pub sizes: Vec<SizeClassStats>,
    pub events: u64,
    pub wall_time_s: f64,
    pub events_per_s: f64,
}

/// Accelerators from which a job counts as a large gang (effective
/// training time).
pub const LARGE_GANG: u32 = 1024;

/// What idle power-down did over a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PowerDownReport {
    /// Node power-downs, and resumes.
    pub power_downs: u64,
    pub resumes: u64,
    /// Power-downs per node: mean over all nodes, and the most of one node.
    pub cycles_per_node: f64,
    pub max_cycles_per_node: u32,
    /// Runs that waited for their nodes to boot, and their mean wait, s.
    pub boot_waits: u64,
    pub avg_boot_wait_s: f64,
}

/// What the table prints for carbon without any grid carbon intensity.
pub const NOT_ACCOUNTED: &str = "not accounted (no grid series)";

/// Accumulates figures during a run.
pub(crate) struct Collector {
    window: (usize, usize),
    w_start: f64,
    w_end: f64,
    w_left: usize,
    /// Last submission of the measured jobs.
    w_last_arrival: f64,
    busy_all: f64,
    busy_window: f64,
    /// Busy accelerator-seconds over [w_start, w_last_arrival].
    busy_arrivals: f64,
    first_t: Option<f64>,
    last_end: f64,
    pub failures: u64,
    pub failure_hits: u64,
    pub preemptions: u64,
    pub lost_failures_gpu_s: f64,
    pub lost_preemption_gpu_s: f64,
    /// Nodes drained on a caught failure precursor, and on a false alarm.
    pub true_drains: u64,
    pub false_drains: u64,
    /// Of the true drains, those of a pre-flight check.
    pub preflight_catches: u64,
    pub last_pass_started: bool,
    /// Facility (energy J, carbon g) at the last measured submission.
    arrivals_energy: Option<(f64, f64)>,
}

impl Collector {
    /// Measures jobs `window.0..window.1`, submitted from `w_start` to
    /// `w_last_arrival`.
    pub fn new(window: (usize, usize), w_start: f64, w_last_arrival: f64) -> Collector {
        Collector {
            window,
            w_start,
            w_end: f64::NAN,
            w_left: window.1 - window.0,
            w_last_arrival,
            busy_all: 0.0,
            busy_window: 0.0,
            busy_arrivals: 0.0,
            first_t: None,
            last_end: 0.0,
            failures: 0,
            failure_hits: 0,
            preemptions: 0,
            lost_failures_gpu_s: 0.0,
            lost_preemption_gpu_s: 0.0,
            true_drains: 0,
            false_drains: 0,
            preflight_catches: 0,
            last_pass_started: true,
            arrivals_energy: None,
        }
    }

    /// Called before the events at `now`: takes the facility's energy and
    /// carbon at the last measured submission once `now` reaches it
    /// (nothing changed between the previous event and `now`).
    pub fn at_arrivals_end(&mut self, core: &mut SchedCore, now: f64) {
        if self.arrivals_energy.is_none() && now >= self.w_last_arrival {
            let e = core.site_energy(self.w_last_arrival);
            self.arrivals_energy = Some((
                e.iter().map(|s| s.energy_j).sum(),
                e.iter().map(|s| s.carbon_g).sum(),
            ));
        }
    }

    /// Busy accelerators were `busy` over [from, to).
    pub fn integrate(&mut self, from: f64, to: f64, busy: u64) {
        self.first_t.get_or_insert(from);
        let dt = to - from;
        if dt <= 0.0 {
            return;
        }
        let b = busy as f64;
        self.busy_all += b * dt;
        if self.w_end.is_nan() {
            let lo = from.max(self.w_start);
            if to > lo {
                self.busy_window += b * (to - lo);
            }
        }
        let (lo, hi) = (from.max(self.w_start), to.min(self.w_last_arrival));
        if hi > lo {
            self.busy_arrivals += b * (hi - lo);
        }
    }

    /// Job `j` reached a terminal state at `now`.
    pub fn terminal(&mut self, _core: &SchedCore, j: JobIdx, now: f64) {
        self.last_end = self.last_end.max(now);
        let i = j as usize;
        if i >= self.window.0 && i < self.window.1 {
            self.w_left -= 1;
            if self.w_left == 0 {
                self.w_end = now;
            }
        }
    }

    pub fn finish(
        self,
        core: &mut SchedCore,
        policy: &str,
        seed: u64,
        events: u64,
        wall_s: f64,
        accelerators: u64,
    ) -> Report {
        let (a, b) = self.window;
        let mut jct = Vec::new();
        let mut jct_timed_out = Vec::new();
        let mut wait = Vec::new();
        let mut slow = Vec::new();
        let mut bsld = Vec::new();
        let (mut completed, mut timed_out, mut cancelled, mut unfinished) = (0, 0, 0, 0);
        let mut failed = 0;
        // per category: jobs, completed, Σ JCT, Σ wait, GPU-hours, started, J, g
        type Acc = (u64, u64, f64, f64, f64, u64, f64, f64);
        let mut cats: BTreeMap<Category, Acc> = BTreeMap::new();
        let (mut deadline_misses, mut flexible_jobs, mut capped_runs) = (0u64, 0u64, 0u64);
        let mut miss_causes: BTreeMap<String, u64> = ["failures", "carbon", "scheduling"]
            .iter()
            .map(|c| (c.to_string(), 0))
            .collect();
        let (mut jobs_e, mut jobs_c) = (0.0, 0.0);
        let (mut jct_flex, mut jct_rigid) = (Vec::new(), Vec::new());
        let mut per_alloc: BTreeMap<u32, (f64, u64)> = BTreeMap::new();
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        let mut jct_bound = 0.0;
        // large gangs: Σ uninterrupted run, Σ wall time, how many
        let mut ettr = (0.0, 0.0, 0u64);
        // per size class: (JCTs, waits, longest wait, jobs, never started)
        // per size class: JCTs, waits, the longest wait, jobs, jobs never
        // started, times queued in all (completed jobs)
        type SizeAcc = (Vec<f64>, Vec<f64>, f64, u64, u64, Vec<f64>);
        let mut by_size: Vec<SizeAcc> =
            vec![(Vec::new(), Vec::new(), 0.0, 0, 0, Vec::new()); SIZE_CLASSES.len()];
        // training only: an endpoint's replicas are reported with it
        let n_training = core.jobs.iter().filter(|j| !j.service).count();
        let training = core.jobs.iter().enumerate().filter(|(_, j)| !j.service);
        // `i`: the job's place among the training jobs (the window's
        // index); `ji`: in the scheduler
        for (i, (ji, job)) in training.enumerate() {
            let ji = ji as JobIdx;
            let cat = core.allocs[job.alloc as usize].spec.category;
            let c = cats
                .entry(cat)
                .or_insert((0, 0, 0.0, 0.0, 0.0, 0, 0.0, 0.0));
            c.0 += 1;
            c.6 += job.energy_j;
            c.7 += job.carbon_g;
            jobs_e += job.energy_j;
            jobs_c += job.carbon_g;
            capped_runs += job.capped_runs as u64;
            if let Some(d) = job.deadline_s {
                flexible_jobs += 1;
                if job.state != JobState::Completed || job.end_s.is_none_or(|e| e > d + 1e-6) {
                    deadline_misses += 1;
                    let cause = if job.fail_requeues > 0 || job.state == JobState::Failed {
                        "failures"
                    } else if job.defer_until > 0.0 {
                        "carbon"
                    } else {
                        "scheduling"
                    };
                    *miss_causes.entry(cause.to_string()).or_insert(0) += 1;
                }
            }
            c.4 += job.attained_at(self.last_end) / 3600.0;
            if let Some(s) = job.first_start {
                c.3 += s - job.submit_s;
                c.5 += 1;
            }
            match job.state {
                JobState::Completed => completed += 1,
                JobState::TimedOut => timed_out += 1,
                JobState::Cancelled => {
                    cancelled += 1;
                    let code = job.reason.map_or("cancelled", |r| r.code());
                    *reasons.entry(code.to_string()).or_insert(0) += 1;
                }
                JobState::Failed => failed += 1,
                JobState::Waiting | JobState::Running => unfinished += 1,
            }
            if i < a || i >= b {
                continue;
            }
            let sc = &mut by_size[size_class(job.gpus)];
            sc.3 += 1;
            match job.first_start {
                Some(s) => {
                    sc.1.push(s - job.submit_s);
                    sc.2 = f64::max(sc.2, s - job.submit_s);
                }
                None => {
                    sc.4 += 1;
                    let until = job.end_s.unwrap_or(self.last_end);
                    sc.2 = f64::max(sc.2, until - job.submit_s);
                }
            }
            if job.state == JobState::Completed {
                let jct = job.end_s.unwrap_or(job.submit_s) - job.submit_s;
                sc.0.push(jct);
                sc.5.push(queued_s(job).unwrap_or(0.0));
            }
            if let Some(s) = job.first_start {
                wait.push(s - job.submit_s);
            }
            if job.state == JobState::TimedOut {
                let t = job.end_s.unwrap_or(job.submit_s) - job.submit_s;
                jct_timed_out.push(t);
                let ideal = core.ideal_runtime(ji);
                let run = job.time_limit_s.map_or(ideal, |l| ideal.min(l));
                bsld.push((t / run.max(BSLD_TAU_S)).max(1.0));
            }
            if job.state == JobState::Completed
                && job.gpus >= LARGE_GANG
                && let Some(first) = job.first_start
            {
                let wall = job.end_s.unwrap_or(first) - first;
                if wall > 0.0 {
                    ettr.0 += core.ideal_runtime(ji).min(wall);
                    ettr.1 += wall;
                    ettr.2 += 1;
                }
            }
            if job.state == JobState::Completed {
                let end = job.end_s.unwrap_or(job.submit_s);
                let t = end - job.submit_s;
                jct.push(t);
                if job.deadline_s.is_some() {
                    jct_flex.push(t);
                } else {
                    jct_rigid.push(t);
                }
                c.1 += 1;
                c.2 += t;
                let ideal = core.ideal_runtime(ji);
                jct_bound += ideal;
                let sd = if ideal > 0.0 {
                    (t / ideal).max(1.0)
                } else {
                    1.0
                };
                slow.push(sd);
                bsld.push((t / ideal.max(BSLD_TAU_S)).max(1.0));
                let e = per_alloc.entry(job.alloc).or_insert((0.0, 0));
                e.0 += sd;
                e.1 += 1;
            }
        }
        let first = self.first_t.unwrap_or(0.0);
        let w_end = if self.w_end.is_nan() {
            self.last_end
        } else {
            self.w_end
        };
        let whole = (a, b) == (0, n_training);
        let (makespan, busy) = if whole {
            (self.last_end - first, self.busy_all)
        } else {
            (w_end - self.w_start, self.busy_window)
        };
        let utilization = if makespan > 0.0 && accelerators > 0 {
            busy / (accelerators as f64 * makespan)
        } else {
            0.0
        };
        let arrivals = self.w_last_arrival - self.w_start;
        let utilization_busy = if arrivals > 0.0 && accelerators > 0 {
            self.busy_arrivals / (accelerators as f64 * arrivals)
        } else {
            utilization
        };
        // carbon is accounted where a site has a grid intensity (a series,
        // or a constant `carbon_g_per_kwh`)
        let accounted = core.factory.sites.iter().any(|s| s.carbon.is_some());
        let carbon = |g: f64| accounted.then_some(g / 1e6);
        let xs: Vec<f64> = per_alloc
            .values()
            .map(|(s, n)| n.to_owned() as f64 / s)
            .collect();
        let jain = jain(&xs);
        let categories = cats
            .into_iter()
            .map(|(k, (jobs, done, jsum, wsum, gh, started, ej, cg))| {
                (
                    k.as_str().to_string(),
                    CategoryStats {
                        jobs,
                        completed: done,
                        avg_jct_s: if done > 0 { jsum / done as f64 } else { 0.0 },
                        avg_wait_s: if started > 0 {
                            wsum / started as f64
                        } else {
                            0.0
                        },
                        gpu_hours: gh,
                        energy_mwh: ej / 3.6e9,
                        carbon_t: carbon(cg),
                    },
                )
            })
            .collect();
        jct.sort_by(f64::total_cmp);
        wait.sort_by(f64::total_cmp);
        let site_e = core.site_energy(self.last_end.max(first));
        let mut sites = BTreeMap::new();
        let (mut energy_j, mut carbon_g, mut peak_w) = (0.0, 0.0, 0.0);
        let mut budget: Option<f64> = None;
        let cal = core.policy.calendar_start_s;
        for (i, e) in site_e.iter().enumerate() {
            let site = &core.factory.sites[i];
            energy_j += e.energy_j;
            carbon_g += e.carbon_g;
            peak_w += e.peak_w;
            if let Some(b) = e.budget_w {
                budget = Some(budget.unwrap_or(0.0) + b);
            }
            sites.insert(
                site.name.clone(),
                SiteStats {
                    energy_mwh: e.energy_j / 3.6e9,
                    carbon_t: site.carbon.is_some().then_some(e.carbon_g / 1e6),
                    peak_power_mw: e.peak_w / 1e6,
                    power_budget_mw: e.budget_w.map(|b| b / 1e6),
                    grid_g_per_kwh: site
                        .carbon
                        .as_ref()
                        .map(|c| c.mean(cal + first, cal + self.last_end.max(first))),
                },
            );
        }
        let span = self.last_end - first;
        Report {
            residency: None,
            sharing: None,
            endpoints: Vec::new(),
            policy: policy.to_string(),
            factory: core.factory.name.clone(),
            accelerators,
            seed,
            jobs_submitted: n_training as u64,
            jobs_completed: completed,
            jobs_timed_out: timed_out,
            jobs_cancelled: cancelled,
            jobs_failed: failed,
            jobs_unfinished: unfinished,
            cancelled_reasons: reasons,
            measured_jobs: (b - a) as u64,
            avg_jct_s: mean(&jct),
            avg_jct_bound_s: if jct.is_empty() {
                0.0
            } else {
                jct_bound / jct.len() as f64
            },
            p50_jct_s: percentile(&jct, 50.0),
            p95_jct_s: percentile(&jct, 95.0),
            p99_jct_s: percentile(&jct, 99.0),
            measured_timed_out: jct_timed_out.len() as u64,
            avg_jct_timed_out_s: mean(&jct_timed_out),
            avg_wait_s: mean(&wait),
            p99_wait_s: percentile(&wait, 99.0),
            avg_slowdown: mean(&bsld),
            avg_slowdown_unbounded: mean(&slow),
            makespan_s: makespan,
            utilization,
            utilization_busy,
            gpu_hours_lost: self.lost_failures_gpu_s / 3600.0,
            gpu_hours_lost_preemption: self.lost_preemption_gpu_s / 3600.0,
            failures: self.failures,
            failure_job_hits: self.failure_hits,
            preemptions: self.preemptions,
            migrations: core.migrations,
            promotions: core.promotions,
            jain_fairness: jain,
            energy_mwh: energy_j / 3.6e9,
            carbon_t: carbon(carbon_g),
            arrivals_energy_mwh: self.arrivals_energy.map_or(energy_j, |e| e.0) / 3.6e9,
            arrivals_carbon_t: carbon(self.arrivals_energy.map_or(carbon_g, |e| e.1)),
            peak_power_mw: peak_w / 1e6,
            avg_power_mw: if span > 0.0 {
                energy_j / span / 1e6
            } else {
                0.0
            },
            power_budget_mw: budget.map(|b| b / 1e6),
            deadline_misses,
            deadline_misses_by_cause: miss_causes,
            flexible_jobs,
            jobs_energy_mwh: jobs_e / 3.6e9,
            jobs_carbon_t: carbon(jobs_c),
            avg_jct_flexible_s: mean(&jct_flex),
            avg_jct_inflexible_s: mean(&jct_rigid),
            carbon_deferrals: core.deferrals,
            capped_runs,
            large_gang_ettr: (ettr.2 > 0).then(|| ettr.0 / ettr.1),
            large_gangs: ettr.2,
            true_drains: self.true_drains,
            false_drains: self.false_drains,
            preflight_catches: self.preflight_catches,
            power_down: core.policy.power_down_after_s.map(|_| {
                let st = core.power_down_stats();
                let cycles = core.power_cycles();
                PowerDownReport {
                    power_downs: st.power_downs,
                    resumes: st.resumes,
                    cycles_per_node: st.power_downs as f64 / cycles.len().max(1) as f64,
                    max_cycles_per_node: st.max_cycles,
                    boot_waits: st.boot_waits,
                    avg_boot_wait_s: st.boot_wait_s / st.boot_waits.max(1) as f64,
                }
            }),
            sites,
            categories,
            sizes: by_size
                .into_iter()
                .enumerate()
                .filter(|(_, c)| c.3 > 0)
                .map(|(k, (mut jct, mut wait, longest, jobs, never, queued))| {
                    jct.sort_by(f64::total_cmp);
                    wait.sort_by(f64::total_cmp);
                    SizeClassStats {
                        class: SIZE_CLASSES[k].to_string(),
                        jobs,
                        completed: jct.len() as u64,
                        avg_jct_s: mean(&jct),
                        p99_jct_s: percentile(&jct, 99.0),
                        avg_wait_s: mean(&wait),
                        p99_wait_s: percentile(&wait, 99.0),
                        max_wait_s: longest,
                        never_started: never,
                        avg_queued_s: mean(&queued),
                        max_queued_s: queued.iter().copied().fold(0.0, f64::max),
                    }
                })
                .collect(),
            events,
            wall_time_s: wall_s,
            events_per_s: if wall_s > 0.0 {
                events as f64 / wall_s
            } else {
                0.0
            },
        }
    }
}

/// Mean (0 for an empty slice).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Nearest-rank percentile of sorted values (0 for an empty slice).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Jain's fairness index (1 for an empty or all-equal input).
pub fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let s2: f64 = x.iter().map(|v| v * v).sum();
    if x.is_empty() || s2 == 0.0 {
        1.0
    } else {
        s * s / (x.len() as f64 * s2)
    }
}

impl Report {
    /// Human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let h = |x: f64| format!("{:.2} h", x / 3600.0);
        let co2 = |t: Option<f64>| {
            t.map_or_else(
                || format!("carbon {NOT_ACCOUNTED}"),
                |t| format!("{t:.3} tCO2e"),
            )
        };
        // a column of tCO2e: a dash where carbon is not accounted
        let co2_cell = |t: Option<f64>| t.map_or_else(|| "-".to_string(), |t| format!("{t:.3}"));
        let mut rows: Vec<(&str, String)> = vec![
            ("policy", self.policy.clone()),
            (
                "factory",
                format!("{} ({} accelerators)", self.factory, self.accelerators),
            ),
            ("seed", self.seed.to_string()),
            (
                "jobs",
                format!(
                    "{} submitted, {} completed, {} timed out, {} cancelled, {} failed (restarts exhausted), {} unfinished",
                    self.jobs_submitted,
                    self.jobs_completed,
                    self.jobs_timed_out,
                    self.jobs_cancelled,
                    self.jobs_failed,
                    self.jobs_unfinished
                ),
            ),
            ("measured jobs", self.measured_jobs.to_string()),
            ("avg JCT (completed)", h(self.avg_jct_s)),
            ("  bound (no wait, fastest type)", h(self.avg_jct_bound_s)),
            (
                "p50 / p95 / p99 JCT",
                format!(
                    "{} / {} / {}",
                    h(self.p50_jct_s),
                    h(self.p95_jct_s),
                    h(self.p99_jct_s)
                ),
            ),
            (
                "jobs timed out",
                format!(
                    "{} measured, avg JCT {}",
                    self.measured_timed_out,
                    h(self.avg_jct_timed_out_s)
                ),
            ),
            (
                "avg / p99 wait",
                format!("{} / {}", h(self.avg_wait_s), h(self.p99_wait_s)),
            ),
            ("avg bounded slowdown", format!("{:.3}", self.avg_slowdown)),
            (
                "avg slowdown (unbounded)",
                format!("{:.3}", self.avg_slowdown_unbounded),
            ),
            ("makespan", h(self.makespan_s)),
            (
                "utilization (makespan)",
                format!("{:.1} %", self.utilization * 100.0),
            ),
            (
                "utilization (arrivals: first→last)",
                format!("{:.1} %", self.utilization_busy * 100.0),
            ),
            (
                "failures",
                format!(
                    "{} ({} hit jobs), {:.1} GPU-hours lost",
                    self.failures, self.failure_job_hits, self.gpu_hours_lost
                ),
            ),
            (
                "preemptions",
                format!(
                    "{} ({} migrations), {:.1} GPU-hours lost; {} jobs promoted (starvation bound)",
                    self.preemptions,
                    self.migrations,
                    self.gpu_hours_lost_preemption,
                    self.promotions
                ),
            ),
            ("Jain fairness", format!("{:.4}", self.jain_fairness)),
            (
                "energy",
                format!(
                    "{:.3} MWh, {} ({:.3} MWh, {} while jobs arrive); power avg {:.3} MW, peak {:.3} MW{}",
                    self.energy_mwh,
                    co2(self.carbon_t),
                    self.arrivals_energy_mwh,
                    co2(self.arrivals_carbon_t),
                    self.avg_power_mw,
                    self.peak_power_mw,
                    self.power_budget_mw
                        .map(|b| format!(" (budget {b:.3} MW)"))
                        .unwrap_or_default()
                ),
            ),
            (
                "jobs' energy",
                format!(
                    "{:.3} MWh, {}; avg JCT flexible {}, inflexible {}",
                    self.jobs_energy_mwh,
                    co2(self.jobs_carbon_t),
                    h(self.avg_jct_flexible_s),
                    h(self.avg_jct_inflexible_s)
                ),
            ),
            (
                "deadlines",
                format!(
                    "{} jobs with one, {} missed ({}); {} carbon deferrals; {} capped runs",
                    self.flexible_jobs,
                    self.deadline_misses,
                    self.deadline_misses_by_cause
                        .iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    self.carbon_deferrals,
                    self.capped_runs
                ),
            ),
            ("events", self.events.to_string()),
            (
                "wall time",
                format!(
                    "{:.3} s ({:.0} events/s)",
                    self.wall_time_s, self.events_per_s
                ),
            ),
        ];
        if let Some(e) = self.large_gang_ettr {
            rows.insert(
                rows.len() - 2,
                (
                    "large gangs",
                    format!(
                        "{} of >= {LARGE_GANG} accelerators: effective training time {:.1}%; drains on precursors {} true, {} false",
                        self.large_gangs,
                        100.0 * e,
                        self.true_drains,
                        self.false_drains
                    ),
                ),
            );
        }
        if let Some(pd) = &self.power_down {
            rows.insert(
                rows.len() - 2,
                (
                    "power-down",
                    format!(
                        "{} node power-downs ({:.1} per node, at most {}), {} resumes; {} runs waited {:.0} s on average for a boot",
                        pd.power_downs,
                        pd.cycles_per_node,
                        pd.max_cycles_per_node,
                        pd.resumes,
                        pd.boot_waits,
                        pd.avg_boot_wait_s
                    ),
                ),
            );
        }
        let cancelled: Vec<(String, u64)> = self
            .cancelled_reasons
            .iter()
            .map(|(code, n)| (format!("cancelled: {code}"), *n))
            .collect();
        let w = rows
            .iter()
            .map(|(k, _)| k.chars().count())
            .chain(cancelled.iter().map(|(k, _)| k.chars().count()))
            .max()
            .unwrap_or(0);
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<w$} {v}");
        }
        for (k, n) in cancelled {
            let _ = writeln!(s, "{k:<w$} {n}");
        }
        let _ = writeln!(
            s,
            "\n{:<10} {:>9} {:>9} {:>12} {:>12} {:>14} {:>10} {:>10}",
            "category", "jobs", "completed", "avg JCT h", "avg wait h", "GPU-hours", "MWh", "tCO2e"
        );
        for (k, c) in &self.categories {
            let _ = writeln!(
                s,
                "{:<10} {:>9} {:>9} {:>12.2} {:>12.2} {:>14.1} {:>10.3} {:>10}",
                k,
                c.jobs,
                c.completed,
                c.avg_jct_s / 3600.0,
                c.avg_wait_s / 3600.0,
                c.gpu_hours,
                c.energy_mwh,
                co2_cell(c.carbon_t)
            );
        }
        if !self.sizes.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<10} {:>9} {:>9} {:>12} {:>12} {:>12} {:>12} {:>12} {:>9} {:>13} {:>13}",
                "GPUs",
                "jobs",
                "completed",
                "avg JCT h",
                "p99 JCT h",
                "avg wait h",
                "p99 wait h",
                "max wait h",
                "unstarted",
                "avg queued h",
                "max queued h"
            );
            for c in &self.sizes {
                let _ = writeln!(
                    s,
                    "{:<10} {:>9} {:>9} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>9} {:>13.2} {:>13.2}",
                    c.class,
                    c.jobs,
                    c.completed,
                    c.avg_jct_s / 3600.0,
                    c.p99_jct_s / 3600.0,
                    c.avg_wait_s / 3600.0,
                    c.p99_wait_s / 3600.0,
                    c.max_wait_s / 3600.0,
                    c.never_started,
                    c.avg_queued_s / 3600.0,
                    c.max_queued_s / 3600.0
                );
            }
        }
        if !self.endpoints.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<16} {:>9} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>6} {:>5} {:>10} {:>9} {:>8}",
                "endpoint",
                "requests",
                "served",
                "failed",
                "retried",
                "TTFT p50",
                "TTFT p99",
                "lat p50",
                "lat p99",
                "cold",
                "peak",
                "replica h",
                "kWh",
                "kgCO2e"
            );
            for e in &self.endpoints {
                let _ = writeln!(
                    s,
                    "{:<16} {:>9} {:>9} {:>8} {:>8} {:>8.2}s {:>8.2}s {:>8.2}s {:>8.2}s {:>6} {:>5} {:>10.2} {:>9.1} {:>8}",
                    e.name,
                    e.requests,
                    e.served,
                    e.rejected + e.timed_out,
                    e.retried,
                    e.ttft_p50_s,
                    e.ttft_p99_s,
                    e.latency_p50_s,
                    e.latency_p99_s,
                    e.cold_starts,
                    e.peak_replicas,
                    e.replica_hours,
                    e.energy_kwh,
                    e.carbon_kg
                        .map_or_else(|| "-".to_string(), |c| format!("{c:.1}"))
                );
            }
        }
        if self
            .sites
            .values()
            .any(|x| x.grid_g_per_kwh.is_some() || x.power_budget_mw.is_some())
        {
            let _ = writeln!(
                s,
                "\n{:<10} {:>10} {:>10} {:>10} {:>10} {:>12}",
                "site", "MWh", "tCO2e", "peak MW", "budget MW", "grid g/kWh"
            );
            for (k, x) in &self.sites {
                let opt = |v: Option<f64>, d: usize| {
                    v.map_or_else(|| "-".to_string(), |v| format!("{v:.d$}"))
                };
                let _ = writeln!(
                    s,
                    "{:<10} {:>10.3} {:>10} {:>10.3} {:>10} {:>12}",
                    k,
                    x.energy_mwh,
                    co2_cell(x.carbon_t),
                    x.peak_power_mw,
                    opt(x.power_budget_mw, 3),
                    opt(x.grid_g_per_kwh, 1)
                );
            }
        }
        if let Some(r) = &self.residency {
            s.push('\n');
            s.push_str(&r.table());
        }
        if let Some(r) = &self.sharing {
            s.push('\n');
            s.push_str(&r.table());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_helpers() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(mean(&v), 2.5);
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 99.0), 4.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(jain(&[1.0, 1.0, 1.0]), 1.0);
        assert!((jain(&[1.0, 0.0]) - 0.5).abs() < 1e-12);
    }
}
