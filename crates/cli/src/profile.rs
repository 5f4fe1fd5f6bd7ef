//! The scheduler profile's flags: one set for `gigafab sim` and `gigafab
//! serve`, resolved the same way (flag, then the factory's `[scheduler]`
//! section, then the defaults of `gigafab_core::profile`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use gigafab_core::{Factory, Policy, SchedulerProfile, Throughputs};

/// How the factory is scheduled. Every flag overrides the factory file's
/// `[scheduler]` section; what neither gives takes the default, the same
/// in the twin and live.
#[derive(Args, Debug, Clone, Default)]
pub struct SchedArgs {
    /// Scheduling policy: fifo, backfill, fairshare, las or hetero
    /// [default: the factory's, else fairshare].
    #[arg(long, env = "GIGAFAB_POLICY", value_parser = check_policy)]
    pub policy: Option<String>,
    /// Seconds between backfill passes; 0: every pass backfills [default:
    /// the factory's, else 30].
    #[arg(long, env = "GIGAFAB_BACKFILL_INTERVAL", value_name = "SECONDS")]
    pub backfill_interval: Option<f64>,
    /// Whether a job of higher priority may stop lower-priority preemptible
    /// ones (live: their runs are stopped and they are requeued) [default:
    /// the factory's, else true].
    #[arg(long, env = "GIGAFAB_PREEMPTION", value_name = "BOOL")]
    pub preemption: Option<bool>,
    /// A preempted job keeps only the work of its periodic checkpoints
    /// (`checkpoint_s`), instead of saving all its progress as it stops.
    #[arg(long, env = "GIGAFAB_PREEMPT_RESTART")]
    pub preempt_restart: bool,
    /// Seconds a job preempted with its progress spends restoring it when
    /// it runs again [default: the factory's, else 30].
    #[arg(long, env = "GIGAFAB_RESTORE_OVERHEAD", value_name = "SECONDS")]
    pub restore_overhead: Option<f64>,
    /// Times in a row a job hit by an accelerator failure is requeued (from
    /// its last checkpoint, or from the start without one) without having
    /// reached a checkpoint since its previous hit, before it fails
    /// [default: the factory's, else 5].
    #[arg(long, env = "GIGAFAB_MAX_REQUEUES")]
    pub max_requeues: Option<u32>,
    /// Running preemptible jobs move to free accelerators of a type where
    /// they run faster, and pairs swap types where each gains from the
    /// other's (stopped with their progress, restored there): what
    /// Gavel's rounds do by giving each round's types anew [default: on
    /// under las and hetero, off otherwise; the factory's if it says].
    #[arg(long, env = "GIGAFAB_MIGRATE", conflicts_with = "no_migrate")]
    pub migrate: bool,
    /// Never move running jobs between types (see --migrate).
    #[arg(long, env = "GIGAFAB_NO_MIGRATE")]
    pub no_migrate: bool,
    /// `las` and `hetero`: the attained service, in accelerator-hours, at
    /// which a job moves down a queue, ascending and comma separated
    /// [default: the factory's, else 1,10,100].
    #[arg(
        long,
        env = "GIGAFAB_LAS_THRESHOLDS",
        value_delimiter = ',',
        value_name = "HOURS"
    )]
    pub las_thresholds: Option<Vec<f64>>,
    /// `las`, `hetero` and `fairshare`: turn the starvation bound off (a
    /// waiting job is then never promoted; docs/scheduling.md).
    #[arg(long, env = "GIGAFAB_NO_PROMOTE")]
    pub no_promote: bool,
    /// The starvation bound's floor: a job that has not run is promoted
    /// (ahead of the jobs of its priority, reserved for, not preempted for
    /// them) once it has waited this many seconds [default: the
    /// factory's, else 28800].
    #[arg(long, env = "GIGAFAB_PROMOTE_AFTER", value_name = "SECONDS")]
    pub promote_after: Option<f64>,
    /// The starvation bound's multiple: a job that has run is promoted
    /// once its wait reaches this many times the seconds it has run (and
    /// the floor) [default: the factory's, else 2].
    #[arg(long, env = "GIGAFAB_PROMOTE_KNOB", value_name = "K")]
    pub promote_knob: Option<f64>,
    /// Carbon-aware scheduling: jobs with a deadline start in low-carbon
    /// hours and at the lower-carbon site (never missing the deadline for it).
    #[arg(long, env = "GIGAFAB_CARBON_AWARE")]
    pub carbon_aware: bool,
    /// What carbon-aware decisions know of the grid's future: `daily` (the
    /// past alone: each future hour as the same hour the day before) or
    /// `oracle` (the series itself, future included: for comparison)
    /// [default: daily].
    #[arg(long, env = "GIGAFAB_CARBON_FORECAST", value_parser = ["daily", "oracle"])]
    pub carbon_forecast: Option<String>,
    /// Carbon-aware: a job with a deadline that starts where the grid is
    /// dirtier than this over its run (gCO2e/kWh) runs power-capped as low
    /// as its deadline and time limit allow: slower, not later [default:
    /// the factory's, else never].
    #[arg(long, env = "GIGAFAB_CARBON_CAP_ABOVE", value_name = "G_PER_KWH")]
    pub carbon_cap_above: Option<f64>,
    /// Let jobs start power-capped (slower) when a site's power budget would
    /// otherwise keep them waiting.
    #[arg(long, env = "GIGAFAB_POWER_CAPPING")]
    pub power_capping: bool,
    /// Among the accelerator types a job may use, prefer the one with the
    /// lowest energy to solution (run time × power).
    #[arg(long, env = "GIGAFAB_ENERGY_AWARE")]
    pub energy_aware: bool,
    /// Idle power-down: a node idle this many seconds is powered down and
    /// resumed when a job needs it (Slurm's SuspendTime) [default: the
    /// factory's, else never].
    #[arg(long, env = "GIGAFAB_POWER_DOWN_AFTER", value_name = "SECONDS")]
    pub power_down_after: Option<f64>,
    /// Seconds a powered-down node takes to come back, for pools that do
    /// not set `resume_s` [default: the factory's, else 300].
    #[arg(long, env = "GIGAFAB_RESUME_TIME", value_name = "SECONDS")]
    pub resume_time: Option<f64>,
    /// Idle nodes each pool keeps powered up under idle power-down, for
    /// pools that do not set `warm_nodes` [default: the factory's, else 1].
    #[arg(long, env = "GIGAFAB_WARM_NODES", value_name = "NODES")]
    pub warm_nodes: Option<u32>,
    /// Where a job that may run at several sites goes first: `declared`
    /// (the factory's order: the first site fills first) or `least-loaded`
    /// (the largest share of free accelerators) [default: the factory's,
    /// else declared].
    #[arg(long, env = "GIGAFAB_SITE_BALANCE", value_parser = ["declared", "least-loaded"])]
    pub site_balance: Option<String>,
    /// A gang over several nodes expected to run at least this many
    /// seconds is not placed on suspect nodes (health; docs/health.md)
    /// [default: the factory's, else 3600].
    #[arg(long, env = "GIGAFAB_SUSPECT_AVOID", value_name = "SECONDS")]
    pub suspect_avoid: Option<f64>,
    /// Throughput matrix: Gavel's simulation_throughputs.json, a CSV
    /// `job_type,accelerator,gpus,steps_per_s`, or builtin:gavel-throughputs
    /// [default: the factory's, else none].
    #[arg(long, env = "GIGAFAB_THROUGHPUTS")]
    pub throughputs: Option<PathBuf>,
}

fn check_policy(s: &str) -> Result<String, String> {
    crate::parse_policy(s).map(|k| k.name().to_string())
}

impl SchedArgs {
    /// What the flags give (a switch left off gives nothing).
    pub fn given(&self) -> SchedulerProfile {
        SchedulerProfile {
            policy: self.policy.clone(),
            backfill_interval_s: self.backfill_interval,
            preemption: self.preemption,
            checkpoint_on_preempt: self.preempt_restart.then_some(false),
            restore_overhead_s: self.restore_overhead,
            max_requeues: self.max_requeues,
            migrate: if self.no_migrate {
                Some(false)
            } else {
                self.migrate.then_some(true)
            },
            las_thresholds_gpu_h: self.las_thresholds.clone(),
            promote: self.no_promote.then_some(false),
            promote_after_s: self.promote_after,
            promote_knob: self.promote_knob,
            carbon_aware: self.carbon_aware.then_some(true),
            carbon_forecast: self.carbon_forecast.clone(),
            carbon_cap_g_per_kwh: self.carbon_cap_above,
            power_capping: self.power_capping.then_some(true),
            energy_aware: self.energy_aware.then_some(true),
            power_down_after_s: self.power_down_after,
            resume_s: self.resume_time,
            warm_nodes: self.warm_nodes,
            site_balance: self.site_balance.clone(),
            suspect_avoid_s: self.suspect_avoid,
            throughputs: self.throughputs.as_ref().map(|p| p.display().to_string()),
        }
    }

    /// The policy and throughputs of `factory` under these flags.
    pub fn resolve(&self, factory: &Factory) -> Result<(Policy, Throughputs)> {
        let profile = self.given().over(&factory.scheduler);
        let policy = profile
            .policy()
            .map_err(|e| anyhow::anyhow!("scheduler profile: {e}"))?;
        let throughputs = match &profile.throughputs {
            Some(p) => gigafab_twin::workload::throughputs::load(Path::new(p))
                .with_context(|| format!("{p}: cannot load the throughputs"))?,
            None => Throughputs::new(),
        };
        Ok((policy, throughputs))
    }
}
