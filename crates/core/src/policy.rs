//! Scheduling policies and their knobs.

use std::fmt;

/// What carbon-aware decisions know of the grid's future.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CarbonForecast {
    /// Only the past: each future hour as the same hour on the last day
    /// before now ([`crate::carbon::CarbonSeries::forecast_mean`]).
    Daily,
    /// The series itself, future included (a perfect forecast: for
    /// comparison only).
    Oracle,
}

impl CarbonForecast {
    pub fn name(self) -> &'static str {
        match self {
            CarbonForecast::Daily => "daily",
            CarbonForecast::Oracle => "oracle",
        }
    }

    pub fn parse(s: &str) -> Option<CarbonForecast> {
        match s {
            "daily" => Some(CarbonForecast::Daily),
            "oracle" => Some(CarbonForecast::Oracle),
            _ => None,
        }
    }
}

/// The ordering/placement rule of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Strict first-come first-served: a job that cannot start blocks every
    /// pool it could use for the jobs behind it.
    Fifo,
    /// FCFS with EASY backfill: jobs behind a blocked job start only if they
    /// do not delay its reservation.
    Backfill,
    /// Slurm-style multifactor priority (usage-decayed fair share per
    /// allocation, age, QOS) with EASY backfill.
    Fairshare,
    /// Least attained service first (Tiresias-style discretised queues),
    /// preemptive, work-conserving.
    Las,
    /// Heterogeneity-aware (Gavel-style): least attained time first for
    /// fairness across jobs, preemptive as `Las` (a job of a lower
    /// attained-service level stops preemptible ones of a higher level);
    /// each job is placed on the accelerator type with the best throughput
    /// per billing unit that has room.
    Hetero,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Fifo,
        PolicyKind::Backfill,
        PolicyKind::Fairshare,
        PolicyKind::Las,
        PolicyKind::Hetero,
    ];

    pub fn parse(s: &str) -> Option<PolicyKind> {
        PolicyKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Fifo => "fifo",
            PolicyKind::Backfill => "backfill",
            PolicyKind::Fairshare => "fairshare",
            PolicyKind::Las => "las",
            PolicyKind::Hetero => "hetero",
        }
    }
}

/// How a policy orders its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueOrder {
    /// Submission order only.
    Fifo,
    /// Priority, then submission.
    Priority,
    /// Slurm-style multifactor: priority, decayed fair share, age.
    Fairshare,
    /// Priority, then attained-service level (discretised queues).
    AttainedLevel,
    /// Priority, then attained time per accelerator.
    AttainedTime,
}

/// How a policy orders the pools a job may run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolOrder {
    /// The fastest pool first (the job's run-time factor).
    Fastest,
    /// The best throughput per billing unit first.
    ThroughputPerCost,
}

/// What a policy decides at each step of a pass: the one table the
/// scheduler reads. A new policy is a new [`PolicyKind`] and its line in
/// [`PolicyKind::traits`] (an exhaustive match: the compiler names every
/// decision it must take).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTraits {
    pub order: QueueOrder,
    pub pools: PoolOrder,
    /// Jobs behind a blocked one may start if they do not delay its
    /// reservation (EASY backfill).
    pub backfills: bool,
    /// A blocked job stops lower-ranked jobs from using its pools.
    pub blocks: bool,
    /// Preemption ranks by attained service as well as priority (a job of
    /// a lower service level may stop preemptible ones of a higher level).
    pub preempts_by_service: bool,
    /// The queue keeps one sorted run per (allocation, priority) and
    /// priorities are recomputed every `priority_period_s`.
    pub periodic_priorities: bool,
    /// The order can keep a job behind later ones for ever (by attained
    /// service or fair share): the starvation bound applies
    /// ([`Policy::promote_wait`]).
    pub promotes: bool,
}

impl PolicyKind {
    /// The policy's decisions (see [`PolicyTraits`]).
    pub const fn traits(self) -> PolicyTraits {
        match self {
            PolicyKind::Fifo => PolicyTraits {
                order: QueueOrder::Fifo,
                pools: PoolOrder::Fastest,
                backfills: false,
                blocks: true,
                preempts_by_service: false,
                periodic_priorities: false,
                promotes: false,
            },
            PolicyKind::Backfill => PolicyTraits {
                order: QueueOrder::Priority,
                pools: PoolOrder::Fastest,
                backfills: true,
                blocks: true,
                preempts_by_service: false,
                periodic_priorities: false,
                promotes: false,
            },
            PolicyKind::Fairshare => PolicyTraits {
                order: QueueOrder::Fairshare,
                pools: PoolOrder::Fastest,
                backfills: true,
                blocks: true,
                preempts_by_service: false,
                periodic_priorities: true,
                promotes: true,
            },
            PolicyKind::Las => PolicyTraits {
                order: QueueOrder::AttainedLevel,
                pools: PoolOrder::Fastest,
                backfills: false,
                blocks: false,
                preempts_by_service: true,
                periodic_priorities: false,
                promotes: true,
            },
            PolicyKind::Hetero => PolicyTraits {
                order: QueueOrder::AttainedTime,
                pools: PoolOrder::ThroughputPerCost,
                backfills: false,
                blocks: false,
                preempts_by_service: true,
                periodic_priorities: false,
                promotes: true,
            },
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The starvation bound's floor by default: a job that has not run is
/// promoted after waiting this long (seconds).
pub const DEFAULT_PROMOTE_AFTER_S: f64 = 8.0 * 3600.0;
/// The starvation bound's multiple of a job's own service by default.
pub const DEFAULT_PROMOTE_KNOB: f64 = 2.0;

/// A policy with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub kind: PolicyKind,
    /// Seconds between backfill passes (0: every pass backfills). Between
    /// them a blocked job blocks its pools, as Slurm's main scheduler does.
    pub backfill_interval_s: f64,
    /// Most queued jobs examined in one pass (Slurm's bf_max_job_test).
    pub max_job_test: usize,
    /// Blocked jobs that get a reservation in a backfill pass (1 = EASY).
    pub reservations: usize,
    /// Seconds between recomputations of fair-share priorities.
    pub priority_period_s: f64,
    /// Half-life of recorded usage, seconds.
    pub decay_half_life_s: f64,
    /// Weights of the multifactor priority.
    pub weight_fairshare: f64,
    pub weight_age: f64,
    /// Age at which the age factor saturates, seconds.
    pub max_age_s: f64,
    /// LAS queue thresholds in accelerator-seconds of attained service.
    pub las_thresholds_gpu_s: Vec<f64>,
    /// Whether higher-priority jobs may preempt lower-priority preemptible ones.
    pub preemption: bool,
    /// Most blocked jobs that try preemption in one pass.
    pub max_preempt_attempts: usize,
    /// Whether a job that would exceed a site's power budget may start
    /// with its accelerators power-capped (slower, see [`crate::energy`]).
    pub power_capping: bool,
    /// Whether jobs with a deadline start in low-carbon hours and at the
    /// lower-carbon site.
    pub carbon_aware: bool,
    /// A flexible job waits for a start whose carbon intensity is at least
    /// this fraction lower than now.
    pub carbon_threshold: f64,
    /// What carbon-aware decisions know of the grid's future.
    pub carbon_forecast: CarbonForecast,
    /// Carbon-aware: a job with a deadline that starts where the grid is
    /// dirtier than this over its run (forecast), gCO2e/kWh, runs
    /// power-capped as low as its deadline and time limit allow (slower,
    /// not later: less energy per unit of work); None: never.
    pub carbon_cap_g_per_kwh: Option<f64>,
    /// Unix time (s) that scheduler time 0 stands for: carbon series are
    /// indexed by calendar time. The twin uses its start date; a live
    /// server, whose clock is Unix time already, 0.
    pub calendar_start_s: f64,
    /// Among the accelerator types a job may use, try the one with the
    /// lowest energy to solution (run-time factor × modelled power) first.
    pub energy_aware: bool,
    /// Times in a row a job hit by an accelerator failure is requeued
    /// without having moved forward (no checkpoint reached since its last
    /// hit) before it is failed (as Slurm's `MaxBatchRequeue`, 5 by
    /// default there and here; Slurm counts every requeue).
    pub max_requeues: u32,
    /// Whether a preempted job saves its progress when it is stopped (as
    /// Gavel and Tiresias suspend jobs: frameworks checkpoint when asked to
    /// stop), rather than only at its periodic checkpoints.
    pub checkpoint_on_preempt: bool,
    /// Seconds a job stopped with its progress spends restoring it when it
    /// runs again.
    pub restore_overhead_s: f64,
    /// Running preemptible jobs move to free accelerators of a type where
    /// they run faster, and pairs of them swap types where each gains from
    /// the other's (stopped with their progress, restored there). On by
    /// default under `las` and `hetero`.
    pub migrate: bool,
    /// Idle power-down: a node idle this long is powered down, and resumed
    /// when a job needs it (Slurm's `SuspendTime`); None: never.
    pub power_down_after_s: Option<f64>,
    /// Seconds a powered-down node takes to come back (Slurm's resume
    /// time), for pools that do not set their own.
    pub resume_s: f64,
    /// Idle nodes each pool keeps powered up (a warm reserve), for pools
    /// that do not set their own.
    pub warm_nodes: u32,
    /// Where a job that may run at several sites goes first.
    pub site_balance: SiteBalance,
    /// A gang over more than one node expected to run at least this long
    /// (seconds) is not placed on suspect nodes ([`crate::health`]).
    pub suspect_avoid_s: f64,
    /// The twin: a gang over at least `preflight_min_nodes` nodes begins
    /// its run this long after its start (its nodes' pre-flight check).
    /// The live server runs the real check instead (0 there).
    pub preflight_s: f64,
    pub preflight_min_nodes: u32,
    /// The starvation bound (policies whose order can keep a job waiting
    /// for ever: `las`, `hetero`, `fairshare`): a job that has waited
    /// `promote_knob` times its service (the seconds it has run), and at
    /// least `promote_after_s`, is promoted: ahead of every job of its
    /// priority that is not, free to preempt them, reserved for until it
    /// starts, and not stopped for them once it runs (Tiresias' PROMOTE
    /// knob, with a floor for jobs that have not run). None: never.
    pub promote_after_s: Option<f64>,
    pub promote_knob: f64,
}

/// Where a job that may run at several sites goes first (after carbon,
/// energy or cost orders, when the policy has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SiteBalance {
    /// The pools in the order the factory declares them (a job's own list
    /// of sites first): the first site fills first.
    Declared,
    /// The candidate pool with the largest share of free accelerators
    /// first (powered-down ones count as free): no site is favoured by
    /// its place in the file.
    LeastLoaded,
}

impl SiteBalance {
    pub fn name(self) -> &'static str {
        match self {
            SiteBalance::Declared => "declared",
            SiteBalance::LeastLoaded => "least-loaded",
        }
    }

    pub fn parse(s: &str) -> Option<SiteBalance> {
        match s {
            "declared" => Some(SiteBalance::Declared),
            "least-loaded" | "least_loaded" => Some(SiteBalance::LeastLoaded),
            _ => None,
        }
    }
}

impl Policy {
    /// The policy `kind` with default parameters.
    pub fn new(kind: PolicyKind) -> Policy {
        Policy {
            kind,
            backfill_interval_s: 30.0,
            max_job_test: 1000,
            reservations: 1,
            priority_period_s: 300.0,
            decay_half_life_s: 7.0 * 86400.0,
            weight_fairshare: 10_000.0,
            weight_age: 1_000.0,
            max_age_s: 7.0 * 86400.0,
            las_thresholds_gpu_s: vec![3_600.0, 36_000.0, 360_000.0],
            preemption: true,
            max_preempt_attempts: 8,
            power_capping: false,
            carbon_aware: false,
            carbon_threshold: 0.1,
            carbon_forecast: CarbonForecast::Daily,
            carbon_cap_g_per_kwh: None,
            calendar_start_s: 0.0,
            energy_aware: false,
            max_requeues: 5,
            checkpoint_on_preempt: true,
            restore_overhead_s: 30.0,
            // the attained-service policies move jobs between types as
            // Gavel's rounds do (on Gavel's workloads, the difference
            // between losing to its policies and beating them)
            migrate: matches!(kind, PolicyKind::Las | PolicyKind::Hetero),
            power_down_after_s: None,
            resume_s: 300.0,
            warm_nodes: 1,
            site_balance: SiteBalance::Declared,
            suspect_avoid_s: 3600.0,
            preflight_s: 0.0,
            preflight_min_nodes: 2,
            promote_after_s: Some(DEFAULT_PROMOTE_AFTER_S),
            promote_knob: DEFAULT_PROMOTE_KNOB,
        }
    }

    /// Parses a policy name with default parameters.
    pub fn by_name(name: &str) -> Option<Policy> {
        PolicyKind::parse(name).map(Policy::new)
    }

    pub fn backfills(&self) -> bool {
        self.kind.traits().backfills
    }

    /// Whether a blocked job stops lower-ranked jobs from using its pools.
    pub fn blocks(&self) -> bool {
        self.kind.traits().blocks
    }

    /// How long a job that has run `service_s` seconds may wait before it
    /// is promoted (the starvation bound), if the policy has one.
    pub fn promote_wait(&self, service_s: f64) -> Option<f64> {
        if !self.kind.traits().promotes {
            return None;
        }
        self.promote_after_s
            .map(|w| w.max(self.promote_knob * service_s.max(0.0)))
    }

    /// LAS level (0 = highest) for an attained service.
    pub fn las_level(&self, attained_gpu_s: f64) -> u32 {
        self.las_thresholds_gpu_s
            .iter()
            .take_while(|&&t| attained_gpu_s >= t)
            .count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        for k in PolicyKind::ALL {
            assert_eq!(PolicyKind::parse(k.name()), Some(k));
        }
        assert!(Policy::by_name("nope").is_none());
        let p = Policy::new(PolicyKind::Las);
        assert_eq!(p.las_level(0.0), 0);
        assert_eq!(p.las_level(3_600.0), 1);
        assert_eq!(p.las_level(1e9), 3);
    }
}

/// What the fair-share key weighs (the fair-share queue key of a job: [`FairshareWeights::key`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FairshareWeights {
    pub weight_fairshare: f64,
    pub weight_age: f64,
    pub max_age_s: f64,
}

impl FairshareWeights {
    pub fn of(p: &Policy) -> FairshareWeights {
        FairshareWeights {
            weight_fairshare: p.weight_fairshare,
            weight_age: p.weight_age,
            max_age_s: p.max_age_s,
        }
    }

    /// The key (lower runs first): priority, then promotion (the
    /// starvation bound: ahead of every job of its priority that is not
    /// promoted), then fair share, then age (capped at `max_age_s`).
    pub fn key(
        &self,
        priority: i32,
        fs_factor: f64,
        submit_s: f64,
        now: f64,
        promoted: bool,
    ) -> f64 {
        let age = ((now - submit_s) / self.max_age_s).clamp(0.0, 1.0);
        let boost = if promoted {
            self.weight_fairshare.abs() + self.weight_age.abs() + 1.0
        } else {
            0.0
        };
        -(priority as f64 * 1e6 + boost + self.weight_fairshare * fs_factor + self.weight_age * age)
    }
}
