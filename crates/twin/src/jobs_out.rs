//! Per-job output of a simulation (`gigafab sim --jobs-out FILE`): one CSV
//! row per job, so that simulators and policies can be compared job by job.

use gigafab_core::{JobState, SchedCore};
use std::io::Write;

/// The columns, in order.
pub const COLUMNS: [&str; 14] = [
    "id",
    "submit_s",
    "start_s",
    "end_s",
    "state",
    "accelerators",
    "pool",
    "site",
    "wait_s",
    "restarts",
    "energy_kwh",
    "carbon_g",
    "size_class",
    "queued_s",
];

/// A job's final state as the CSV names it.
pub fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Completed => "completed",
        JobState::TimedOut => "timed_out",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
        JobState::Waiting | JobState::Running => "unfinished",
    }
}

/// Writes one row per job of `core` (after a simulation), in submission
/// order: first start and final end (empty when there was none), the
/// accelerators it asked for, the pool and site of its last run, its wait
/// to the first start, its restarts (failures and preemptions), the energy
/// of its runs (accelerators and node share, kWh) and their carbon (g, with
/// the site's PUE; empty when no site has a grid intensity), its size class
/// (as the report's), and its time in the queue in all, waits after
/// preemptions and failures included (empty until it ended).
pub fn write_jobs_csv<W: Write>(core: &SchedCore, out: W) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    let carbon = core.factory.sites.iter().any(|s| s.carbon.is_some());
    let num = |v: f64| format!("{}", (v * 1e6).round() / 1e6);
    for job in core.jobs.iter().filter(|j| !j.service) {
        let started = job.first_start.is_some();
        let (pool, site) = if started {
            let p = &core.factory.pools[job.run_pool as usize];
            (p.name.as_str(), core.factory.sites[p.site].name.as_str())
        } else {
            ("", "")
        };
        let end = match job.state {
            JobState::Waiting | JobState::Running => None,
            _ => job.end_s,
        };
        w.write_record([
            job.id.as_str(),
            &num(job.submit_s),
            &job.first_start.map(num).unwrap_or_default(),
            &end.map(num).unwrap_or_default(),
            state_name(job.state),
            &job.gpus.to_string(),
            pool,
            site,
            &job.first_start
                .map(|s| num(s - job.submit_s))
                .unwrap_or_default(),
            &job.restarts.to_string(),
            &num(job.energy_j / 3.6e6),
            &if carbon {
                num(job.carbon_g)
            } else {
                String::new()
            },
            crate::report::SIZE_CLASSES[crate::report::size_class(job.gpus)],
            &crate::report::queued_s(job).map(num).unwrap_or_default(),
        ])?;
    }
    w.flush()?;
    Ok(())
}
