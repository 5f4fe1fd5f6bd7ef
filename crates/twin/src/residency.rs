//! What data residency costs: the same workload run twice, with its jobs'
//! site restrictions and without, and each restricted job's wait compared
//! (`gigafab sim --residency-cost`).

use std::collections::HashMap;

use gigafab_core::{JobSpec, SchedCore};
use serde::Serialize;

/// A restricted job started this much later than without residency is
/// counted as delayed by it, seconds.
pub const DELAY_S: f64 = 60.0;

/// Jobs delayed by residency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResidencyCost {
    /// Jobs with a site restriction (their inputs' residency).
    pub jobs: u64,
    /// Of those, the ones that started at least [`DELAY_S`] later than
    /// without residency (or not at all).
    pub delayed: u64,
    /// Their average wait with residency, and without, seconds.
    pub avg_wait_s: f64,
    pub avg_wait_free_s: f64,
    /// Every job's average wait with residency, and without, seconds.
    pub all_avg_wait_s: f64,
    pub all_avg_wait_free_s: f64,
    /// The wait residency added, summed over the restricted jobs, hours.
    pub extra_wait_h: f64,
    /// Restricted jobs that never started with residency (the end of the
    /// simulation counts as their start).
    pub never_started: u64,
}

/// The jobs without their site restrictions, and the ids of those that had one.
pub fn strip(jobs: &[JobSpec]) -> (Vec<JobSpec>, Vec<String>) {
    let mut ids = Vec::new();
    let free = jobs
        .iter()
        .map(|j| {
            let mut j = j.clone();
            if !j.types.sites.is_empty() {
                ids.push(j.id.clone());
                j.types.sites.clear();
            }
            j
        })
        .collect();
    (free, ids)
}

/// Compares each job's wait in `with` (the run with residency) and `free`
/// (without); `restricted` are the jobs that had a restriction. The wait
/// of a job that never started ends with the run's last event.
pub fn compare(restricted: &[String], with: &SchedCore, free: &SchedCore) -> ResidencyCost {
    let end_s = [with, free]
        .iter()
        .flat_map(|c| c.jobs.iter())
        .map(|j| j.end_s.or(j.first_start).unwrap_or(j.submit_s))
        .fold(0.0, f64::max);
    fn wait(c: &SchedCore, end_s: f64) -> HashMap<&str, f64> {
        c.jobs
            .iter()
            .map(|j| {
                (
                    j.id.as_str(),
                    j.first_start.unwrap_or(end_s.max(j.submit_s)) - j.submit_s,
                )
            })
            .collect()
    }
    let (w, f) = (wait(with, end_s), wait(free, end_s));
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let (mut rw, mut rf, mut extra, mut delayed, mut never) = (Vec::new(), Vec::new(), 0.0, 0, 0);
    for id in restricted {
        let (Some(&a), Some(&b)) = (w.get(id.as_str()), f.get(id.as_str())) else {
            continue;
        };
        rw.push(a);
        rf.push(b);
        extra += (a - b).max(0.0);
        if a - b >= DELAY_S {
            delayed += 1;
        }
        if with
            .jobs
            .iter()
            .any(|j| j.id == *id && j.first_start.is_none())
        {
            never += 1;
        }
    }
    let all = |m: &HashMap<&str, f64>| mean(&m.values().copied().collect::<Vec<_>>());
    ResidencyCost {
        jobs: rw.len() as u64,
        delayed,
        avg_wait_s: mean(&rw),
        avg_wait_free_s: mean(&rf),
        all_avg_wait_s: all(&w),
        all_avg_wait_free_s: all(&f),
        extra_wait_h: extra / 3600.0,
        never_started: never,
    }
}

impl ResidencyCost {
    /// The report's lines.
    pub fn table(&self) -> String {
        let h = |s: f64| format!("{:.2} h", s / 3600.0);
        format!(
            "residency: {} jobs restricted to their inputs' sites, {} delayed by it (≥ {DELAY_S:.0} s later than without), {} never started\n\
             \x20 their average wait: {} with residency, {} without; {:.1} h of wait added in all\n\
             \x20 every job's average wait: {} with residency, {} without\n",
            self.jobs,
            self.delayed,
            self.never_started,
            h(self.avg_wait_s),
            h(self.avg_wait_free_s),
            self.extra_wait_h,
            h(self.all_avg_wait_s),
            h(self.all_avg_wait_free_s),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gigafab_core::{Factory, JobSpec, TypeFilter};

    /// Two sites of 2 accelerators; four 2-GPU jobs pinned to the first:
    /// with residency they run one after the other there, without they
    /// share both sites.
    #[test]
    fn pinned_jobs_wait_for_their_site() {
        let f = Factory::parse(
            "name = \"two\"\n[[sites]]\nname = \"a\"\n[[sites.pools]]\nname = \"pa\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\n\
             [[sites]]\nname = \"b\"\n[[sites.pools]]\nname = \"pb\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\n",
            "two.toml",
        )
        .unwrap();
        let jobs: Vec<JobSpec> = (0..4)
            .map(|i| {
                let mut j = JobSpec::simple(format!("j{i}"), 0.0, 2, 100.0);
                j.types = TypeFilter::parse("site:a").unwrap();
                j
            })
            .collect();
        let (free_jobs, ids) = strip(&jobs);
        assert_eq!(ids.len(), 4);
        let run = |jobs: Vec<JobSpec>| {
            crate::engine::simulate(
                f.clone(),
                gigafab_core::Policy::by_name("fifo").unwrap(),
                gigafab_core::Throughputs::new(),
                jobs,
                &[],
                &crate::engine::SimConfig::default(),
                &mut |_, _| {},
            )
            .unwrap()
        };
        let (with, free) = (run(jobs), run(free_jobs));
        let c = compare(&ids, &with.core, &free.core);
        // with: waits 0, 100, 200, 300; without: 0, 0, 100, 100
        assert_eq!(c.jobs, 4);
        assert_eq!(c.delayed, 3);
        assert!((c.avg_wait_s - 150.0).abs() < 1e-6, "{c:?}");
        assert!((c.avg_wait_free_s - 50.0).abs() < 1e-6, "{c:?}");
        assert!((c.extra_wait_h - 400.0 / 3600.0).abs() < 1e-9, "{c:?}");
        assert_eq!(c.never_started, 0);
        assert!(c.table().contains("3 delayed by it"));
    }
}
