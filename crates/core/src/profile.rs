//! The scheduler profile: how a factory is scheduled, the same for the
//! digital twin (`gigafab sim`) and the live server (`gigafab serve`).
//!
//! It comes from three places, each filling what the one before left
//! open: a command-line flag (or, for `serve`, its environment variable
//! or configuration key), the `[scheduler]` section of the factory file,
//! then the defaults below. Both commands resolve it with
//! [`SchedulerProfile::policy`], so a factory scheduled in the twin is
//! scheduled the same way live.
//!
//! ```toml
//! [scheduler]
//! policy = "fairshare"          # fifo, backfill, fairshare, las, hetero
//! backfill_interval_s = 30      # 0: every pass backfills
//! preemption = true             # higher priority stops preemptible jobs
//! checkpoint_on_preempt = true  # a stopped job keeps its progress
//! restore_overhead_s = 30       # restoring that progress takes this long
//! migrate = true                # running jobs move to faster free types (las/hetero default)
//! las_thresholds_gpu_h = [1, 10, 100]  # las/hetero attained-service queues
//! promote = true                # las/hetero/fairshare: the starvation bound
//! promote_after_s = 28800       # a job that has not run is promoted after this wait
//! promote_knob = 2              # one that has, after this multiple of its service
//! max_requeues = 5              # failure requeues before a job fails
//! carbon_aware = false
//! carbon_forecast = "daily"    # or "oracle": the future itself
//! carbon_cap_g_per_kwh = 200   # carbon-aware: flexible jobs run capped where dirtier
//! power_capping = false
//! energy_aware = false
//! power_down_after_s = 1800    # idle nodes power down after this (none: never)
//! resume_s = 300               # a powered-down node takes this to come back
//! warm_nodes = 1               # idle nodes each pool keeps powered up
//! site_balance = "declared"    # or "least-loaded": no site first by file order
//! suspect_avoid_s = 3600       # gangs over nodes this long avoid suspect nodes
//! throughputs = "builtin:gavel-throughputs"  # relative to the factory file
//! ```

use serde::Deserialize;

use crate::policy::{Policy, PolicyKind};

/// The policy both commands use when nothing names one.
pub const DEFAULT_POLICY: PolicyKind = PolicyKind::Fairshare;

/// Every knob of the profile; `None` is "not given here".
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerProfile {
    /// fifo, backfill, fairshare, las or hetero [default: fairshare].
    pub policy: Option<String>,
    /// Seconds between backfill passes; 0: every pass backfills [default: 30].
    pub backfill_interval_s: Option<f64>,
    /// Whether higher-priority jobs stop lower-priority preemptible ones
    /// (live: the run is stopped and the job requeued) [default: true].
    pub preemption: Option<bool>,
    /// Whether a preempted job keeps its progress (it checkpoints as it is
    /// stopped) rather than only its periodic checkpoints [default: true].
    pub checkpoint_on_preempt: Option<bool>,
    /// Seconds a job stopped with its progress spends restoring it [default: 30].
    pub restore_overhead_s: Option<f64>,
    /// Times a job hit by an accelerator failure is requeued [default: 5].
    pub max_requeues: Option<u32>,
    /// Running preemptible jobs move to free accelerators of a type where
    /// they run faster [default: true under las and hetero, else false].
    pub migrate: Option<bool>,
    /// `las` and `hetero`: the attained service (accelerator-hours) at
    /// which a job moves down a queue, ascending [default: 1, 10, 100].
    pub las_thresholds_gpu_h: Option<Vec<f64>>,
    /// `las`, `hetero` and `fairshare`: the starvation bound (a job that
    /// has waited long enough is promoted, reserved for and not preempted
    /// for the jobs it was promoted over) [default: true].
    pub promote: Option<bool>,
    /// The starvation bound's floor: seconds a job waits before it is
    /// promoted whatever its service [default: 28800, 8 hours].
    pub promote_after_s: Option<f64>,
    /// The starvation bound's multiple: a job that has run is promoted
    /// once its wait reaches this many times the seconds it has run (and
    /// the floor) [default: 2].
    pub promote_knob: Option<f64>,
    /// Jobs with a deadline start in low-carbon hours [default: false].
    pub carbon_aware: Option<bool>,
    /// What carbon-aware decisions know of the grid's future: `daily` (the
    /// past alone: each hour as the same hour the day before) or `oracle`
    /// (the series itself, for comparison) [default: daily].
    pub carbon_forecast: Option<String>,
    /// Carbon-aware: jobs with a deadline that start where the grid is
    /// dirtier than this (gCO2e/kWh, over their run) run power-capped as
    /// low as their deadline allows [default: none, never].
    pub carbon_cap_g_per_kwh: Option<f64>,
    /// Jobs may start power-capped under a site's budget [default: false].
    pub power_capping: Option<bool>,
    /// Prefer the accelerator type with the lowest energy to solution [default: false].
    pub energy_aware: Option<bool>,
    /// Seconds a node stays idle before it is powered down; resumed when a
    /// job needs it [default: none, nodes stay on].
    pub power_down_after_s: Option<f64>,
    /// Seconds a powered-down node takes to come back, for pools that do
    /// not set `resume_s` [default: 300].
    pub resume_s: Option<f64>,
    /// Idle nodes each pool keeps powered up, for pools that do not set
    /// `warm_nodes` [default: 1].
    pub warm_nodes: Option<u32>,
    /// Where a job that may run at several sites goes first: `declared`
    /// (the factory's order) or `least-loaded` [default: declared].
    pub site_balance: Option<String>,
    /// A gang over several nodes expected to run at least this long avoids
    /// suspect nodes (health) [default: 3600].
    pub suspect_avoid_s: Option<f64>,
    /// Throughput matrix (Gavel JSON or CSV, or `builtin:NAME`); in a
    /// factory file, relative to that file [default: none].
    pub throughputs: Option<String>,
}

impl SchedulerProfile {
    /// `self` with what it leaves open taken from `under`.
    pub fn over(self, under: &SchedulerProfile) -> SchedulerProfile {
        SchedulerProfile {
            policy: self.policy.or_else(|| under.policy.clone()),
            backfill_interval_s: self.backfill_interval_s.or(under.backfill_interval_s),
            preemption: self.preemption.or(under.preemption),
            checkpoint_on_preempt: self.checkpoint_on_preempt.or(under.checkpoint_on_preempt),
            restore_overhead_s: self.restore_overhead_s.or(under.restore_overhead_s),
            max_requeues: self.max_requeues.or(under.max_requeues),
            migrate: self.migrate.or(under.migrate),
            las_thresholds_gpu_h: self
                .las_thresholds_gpu_h
                .or_else(|| under.las_thresholds_gpu_h.clone()),
            promote: self.promote.or(under.promote),
            promote_after_s: self.promote_after_s.or(under.promote_after_s),
            promote_knob: self.promote_knob.or(under.promote_knob),
            carbon_aware: self.carbon_aware.or(under.carbon_aware),
            carbon_forecast: self
                .carbon_forecast
                .or_else(|| under.carbon_forecast.clone()),
            carbon_cap_g_per_kwh: self.carbon_cap_g_per_kwh.or(under.carbon_cap_g_per_kwh),
            power_capping: self.power_capping.or(under.power_capping),
            energy_aware: self.energy_aware.or(under.energy_aware),
            power_down_after_s: self.power_down_after_s.or(under.power_down_after_s),
            resume_s: self.resume_s.or(under.resume_s),
            warm_nodes: self.warm_nodes.or(under.warm_nodes),
            site_balance: self.site_balance.or_else(|| under.site_balance.clone()),
            suspect_avoid_s: self.suspect_avoid_s.or(under.suspect_avoid_s),
            throughputs: self.throughputs.or_else(|| under.throughputs.clone()),
        }
    }

    /// The policy this profile describes, defaults filled in; an invalid
    /// value is named with its key.
    pub fn policy(&self) -> Result<Policy, String> {
        let kind = match &self.policy {
            None => DEFAULT_POLICY,
            Some(name) => PolicyKind::parse(name).ok_or_else(|| {
                let known: Vec<&str> = PolicyKind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown policy `{name}` ({})", known.join(", "))
            })?,
        };
        let mut p = Policy::new(kind);
        if let Some(b) = self.backfill_interval_s {
            if !(b.is_finite() && (0.0..=86_400.0).contains(&b)) {
                return Err("backfill_interval_s: must be within 0..=86400 seconds".into());
            }
            p.backfill_interval_s = b;
        }
        if let Some(r) = self.restore_overhead_s {
            if !(r.is_finite() && (0.0..=86_400.0).contains(&r)) {
                return Err("restore_overhead_s: must be within 0..=86400 seconds".into());
            }
            p.restore_overhead_s = r;
        }
        if let Some(v) = self.preemption {
            p.preemption = v;
        }
        if let Some(v) = self.checkpoint_on_preempt {
            p.checkpoint_on_preempt = v;
        }
        if let Some(v) = self.max_requeues {
            p.max_requeues = v;
        }
        if let Some(v) = self.migrate {
            p.migrate = v;
        }
        if let Some(th) = &self.las_thresholds_gpu_h {
            if th.is_empty()
                || th.len() > 16
                || th.iter().any(|h| !(h.is_finite() && *h > 0.0 && *h <= 1e9))
                || th.windows(2).any(|w| w[0] >= w[1])
            {
                return Err(
                    "las_thresholds_gpu_h: 1 to 16 ascending accelerator-hours, each > 0".into(),
                );
            }
            p.las_thresholds_gpu_s = th.iter().map(|h| h * 3600.0).collect();
        }
        if let Some(w) = self.promote_after_s {
            if !(w.is_finite() && (0.0..=365.0 * 86_400.0).contains(&w)) {
                return Err("promote_after_s: must be within 0..=31536000 seconds".into());
            }
            p.promote_after_s = Some(w);
        }
        if let Some(k) = self.promote_knob {
            if !(k.is_finite() && (0.0..=1e6).contains(&k)) {
                return Err("promote_knob: must be a number within 0..=1000000".into());
            }
            p.promote_knob = k;
        }
        if self.promote == Some(false) {
            p.promote_after_s = None;
        }
        if let Some(v) = self.carbon_aware {
            p.carbon_aware = v;
        }
        if let Some(f) = &self.carbon_forecast {
            p.carbon_forecast = crate::policy::CarbonForecast::parse(f)
                .ok_or_else(|| format!("carbon_forecast: `{f}` is not daily or oracle"))?;
        }
        if let Some(g) = self.carbon_cap_g_per_kwh {
            if !(g.is_finite() && (0.0..=5_000.0).contains(&g)) {
                return Err("carbon_cap_g_per_kwh: must be within 0..=5000 gCO2e/kWh".into());
            }
            p.carbon_cap_g_per_kwh = Some(g);
        }
        if let Some(v) = self.power_capping {
            p.power_capping = v;
        }
        if let Some(v) = self.energy_aware {
            p.energy_aware = v;
        }
        if let Some(a) = self.power_down_after_s {
            if !(a.is_finite() && (1.0..=30.0 * 86_400.0).contains(&a)) {
                return Err("power_down_after_s: must be within 1..=2592000 seconds".into());
            }
            p.power_down_after_s = Some(a);
        }
        if let Some(r) = self.resume_s {
            p.resume_s = check_resume_s(r)?;
        }
        if let Some(w) = self.warm_nodes {
            p.warm_nodes = w;
        }
        if let Some(a) = self.suspect_avoid_s {
            if !(a.is_finite() && a >= 0.0) {
                return Err("suspect_avoid_s: must be a number of seconds >= 0".into());
            }
            p.suspect_avoid_s = a;
        }
        if let Some(b) = &self.site_balance {
            p.site_balance = crate::policy::SiteBalance::parse(b)
                .ok_or_else(|| format!("site_balance: `{b}` is not declared or least-loaded"))?;
        }
        Ok(p)
    }
}

/// A resume time checked: within 0..=86400 seconds.
pub fn check_resume_s(r: f64) -> Result<f64, String> {
    if r.is_finite() && (0.0..=86_400.0).contains(&r) {
        Ok(r)
    } else {
        Err("resume_s: must be within 0..=86400 seconds".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_file_then_flags() {
        let none = SchedulerProfile::default();
        let p = none.policy().unwrap();
        assert_eq!(p.kind, DEFAULT_POLICY);
        assert_eq!(p.backfill_interval_s, 30.0);
        assert!(p.preemption);
        let file = SchedulerProfile {
            policy: Some("backfill".into()),
            backfill_interval_s: Some(0.0),
            preemption: Some(false),
            ..Default::default()
        };
        let flags = SchedulerProfile {
            policy: Some("fifo".into()),
            ..Default::default()
        };
        let p = flags.over(&file).policy().unwrap();
        assert_eq!(p.kind, PolicyKind::Fifo, "the flag wins");
        assert_eq!(p.backfill_interval_s, 0.0, "the file fills the rest");
        assert!(!p.preemption);
        assert_eq!(p.restore_overhead_s, 30.0, "the default last");
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = SchedulerProfile {
            policy: Some("lottery".into()),
            ..Default::default()
        }
        .policy()
        .unwrap_err();
        assert!(
            e.contains("unknown policy `lottery`") && e.contains("hetero"),
            "{e}"
        );
        let e = SchedulerProfile {
            backfill_interval_s: Some(-1.0),
            ..Default::default()
        }
        .policy()
        .unwrap_err();
        assert!(e.starts_with("backfill_interval_s"), "{e}");
        for bad in [vec![], vec![10.0, 1.0], vec![0.0], vec![f64::NAN]] {
            let e = SchedulerProfile {
                las_thresholds_gpu_h: Some(bad.clone()),
                ..Default::default()
            }
            .policy()
            .unwrap_err();
            assert!(e.starts_with("las_thresholds_gpu_h"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn migration_and_las_queues_come_from_the_profile() {
        let p = SchedulerProfile {
            migrate: Some(true),
            las_thresholds_gpu_h: Some(vec![0.5, 1.0, 2.0]),
            ..Default::default()
        }
        .policy()
        .unwrap();
        assert!(p.migrate);
        assert_eq!(p.las_thresholds_gpu_s, vec![1_800.0, 3_600.0, 7_200.0]);
        let d = SchedulerProfile::default().policy().unwrap();
        assert!(!d.migrate, "off by default under fair share");
        assert_eq!(d.las_thresholds_gpu_s, vec![3_600.0, 36_000.0, 360_000.0]);
        for name in ["las", "hetero"] {
            let named = |migrate| SchedulerProfile {
                policy: Some(name.into()),
                migrate,
                ..Default::default()
            };
            assert!(
                named(None).policy().unwrap().migrate,
                "{name}: on by default"
            );
            assert!(!named(Some(false)).policy().unwrap().migrate, "{name}: off");
        }
    }

    #[test]
    fn the_starvation_bound_comes_from_the_profile() {
        let d = SchedulerProfile {
            policy: Some("las".into()),
            ..Default::default()
        };
        let p = d.policy().unwrap();
        assert_eq!(
            p.promote_wait(0.0),
            Some(crate::policy::DEFAULT_PROMOTE_AFTER_S)
        );
        let p = SchedulerProfile {
            promote_after_s: Some(600.0),
            promote_knob: Some(3.0),
            ..d.clone()
        }
        .policy()
        .unwrap();
        assert_eq!(p.promote_wait(0.0), Some(600.0));
        assert_eq!(p.promote_wait(1000.0), Some(3000.0));
        let off = SchedulerProfile {
            promote: Some(false),
            ..d.clone()
        };
        assert_eq!(off.policy().unwrap().promote_wait(0.0), None);
        for (after, knob, key) in [
            (Some(-1.0), None, "promote_after_s"),
            (Some(f64::NAN), None, "promote_after_s"),
            (None, Some(-2.0), "promote_knob"),
            (None, Some(f64::INFINITY), "promote_knob"),
        ] {
            let e = SchedulerProfile {
                promote_after_s: after,
                promote_knob: knob,
                ..d.clone()
            }
            .policy()
            .unwrap_err();
            assert!(e.starts_with(key), "{after:?} {knob:?}: {e}");
        }
    }
}
