//! What sharing accelerators gave a run (`gigafab sim --against-whole`):
//! the same jobs on the same factory with nothing shared, where a job that
//! asked for a slice takes a whole accelerator, side by side with the run
//! on the shared pools.
//!
//! Per side: the waits of the jobs that asked for a slice and of the
//! others (a job that never started waits until the run's last event), the
//! accelerator-hours the slice jobs held (a slice counts its share of its
//! accelerator: a quarter for an hour is 0.25), every job's, the facility
//! energy, and the mean JCT. The accelerators sharing freed are those the
//! slice jobs held less when shared, on average from the first submission
//! to the last.

use std::collections::HashSet;

use gigafab_core::SchedCore;
use serde::Serialize;

/// What a run's report says that a side repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub avg_jct_s: f64,
    pub makespan_s: f64,
    pub energy_mwh: f64,
}

/// One run's side of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Side {
    /// Physical accelerators of the factory.
    pub accelerators: u64,
    /// Jobs that asked for a slice, and the others.
    pub slice_jobs: u64,
    pub whole_jobs: u64,
    /// Their waits (first start − submission), mean and 95th percentile, s.
    pub slice_wait_mean_s: f64,
    pub slice_wait_p95_s: f64,
    pub whole_wait_mean_s: f64,
    pub whole_wait_p95_s: f64,
    /// Jobs that never started.
    pub never_started: u64,
    /// Accelerator-hours held by the slice jobs, and by every job.
    pub slice_gpu_hours: f64,
    pub gpu_hours: f64,
    /// Physical accelerators in shared pools.
    pub shared_accelerators: u64,
    /// Most accelerators the slice jobs held at once (a slice counting its
    /// share), and on average from the first submission to the last.
    pub slice_peak_accelerators: f64,
    pub slice_mean_accelerators: f64,
    pub avg_jct_s: f64,
    pub makespan_s: f64,
    /// Facility energy (IT × PUE, idle included), MWh.
    pub energy_mwh: f64,
}

/// Sharing against whole accelerators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharingReport {
    pub shared: Side,
    pub whole: Side,
    /// Accelerator-hours the slice jobs held whole, less shared.
    pub gpu_hours_saved: f64,
    /// Accelerators the slice jobs held less when shared, on average from
    /// the first submission to the last.
    pub accelerators_freed: f64,
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// One side, from a finished run: `sliced` are the ids of the jobs that
/// asked for a slice.
pub fn side(core: &SchedCore, report: Totals, sliced: &HashSet<String>) -> Side {
    let end_s = core
        .jobs
        .iter()
        .map(|j| j.end_s.or(j.first_start).unwrap_or(j.submit_s))
        .fold(0.0, f64::max);
    let (mut sw, mut ww) = (Vec::new(), Vec::new());
    let (mut slice_s, mut all_s, mut never) = (0.0, 0.0, 0);
    // (time, accelerators held from then on): a slice job's share from its
    // first start to its end
    let mut steps: Vec<(f64, f64)> = Vec::new();
    for j in core.jobs.iter().filter(|j| !j.service) {
        let wait = j.first_start.unwrap_or(end_s.max(j.submit_s)) - j.submit_s;
        never += u64::from(j.first_start.is_none());
        let held = j.attained_at(end_s);
        all_s += held;
        if sliced.contains(&j.id) {
            sw.push(wait);
            slice_s += held;
            if let Some(start) = j.first_start {
                let k = core.factory.pools[j.run_pool as usize]
                    .slices_per_accel
                    .max(1);
                let share = j.gpus as f64 / k as f64;
                steps.push((start, share));
                steps.push((j.end_s.unwrap_or(end_s), -share));
            }
        } else {
            ww.push(wait);
        }
    }
    // ends before starts at the same time
    steps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    // the arrivals' window: what a factory that never empties sees
    let (t0, t1) = core
        .jobs
        .iter()
        .filter(|j| !j.service)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), j| {
            (a.min(j.submit_s), b.max(j.submit_s))
        });
    let (mut now, mut peak, mut area, mut last) = (0.0f64, 0.0f64, 0.0f64, t0);
    for &(t, d) in &steps {
        let t = t.clamp(t0, t1.max(t0));
        area += now * (t - last).max(0.0);
        last = last.max(t);
        now += d;
        peak = peak.max(now);
    }
    let window = t1 - t0;
    let accelerators = core.factory.physical_accelerators();
    let shared_accelerators = core
        .factory
        .pools
        .iter()
        .filter(|p| core.factory.catalog.get(p.accel).slice.is_some())
        .map(|p| p.accelerators() / p.slices_per_accel.max(1) as u64)
        .sum();
    Side {
        shared_accelerators,
        slice_peak_accelerators: peak,
        slice_mean_accelerators: if window > 0.0 { area / window } else { 0.0 },
        accelerators,
        slice_jobs: sw.len() as u64,
        whole_jobs: ww.len() as u64,
        slice_wait_mean_s: mean(&sw),
        slice_wait_p95_s: percentile(&mut sw, 0.95),
        whole_wait_mean_s: mean(&ww),
        whole_wait_p95_s: percentile(&mut ww, 0.95),
        never_started: never,
        slice_gpu_hours: slice_s / 3600.0,
        gpu_hours: all_s / 3600.0,
        avg_jct_s: report.avg_jct_s,
        makespan_s: report.makespan_s,
        energy_mwh: report.energy_mwh,
    }
}

/// The comparison of two sides.
pub fn compare(shared: Side, whole: Side) -> SharingReport {
    let saved = whole.slice_gpu_hours - shared.slice_gpu_hours;
    SharingReport {
        accelerators_freed: whole.slice_mean_accelerators - shared.slice_mean_accelerators,
        gpu_hours_saved: saved,
        shared,
        whole,
    }
}

impl SharingReport {
    /// The comparison as the report's table prints it.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let h = |s: f64| format!("{:.2} h", s / 3600.0);
        let mut t = String::new();
        let _ = writeln!(
            t,
            "sharing against whole accelerators ({} accelerators; {} jobs asked for a slice, {} for whole ones):",
            self.shared.accelerators, self.shared.slice_jobs, self.shared.whole_jobs
        );
        let _ = writeln!(
            t,
            "  {:<8} {:>16} {:>16} {:>16} {:>16} {:>12} {:>11} {:>11} {:>12} {:>11} {:>10}",
            "",
            "slice wait mean",
            "slice wait p95",
            "whole wait mean",
            "whole wait p95",
            "slice GPU-h",
            "slice peak",
            "all GPU-h",
            "avg JCT",
            "energy MWh",
            "never ran"
        );
        for (name, s) in [("shared", &self.shared), ("whole", &self.whole)] {
            let _ = writeln!(
                t,
                "  {:<8} {:>16} {:>16} {:>16} {:>16} {:>12.1} {:>11.1} {:>11.1} {:>12} {:>11.3} {:>10}",
                name,
                h(s.slice_wait_mean_s),
                h(s.slice_wait_p95_s),
                h(s.whole_wait_mean_s),
                h(s.whole_wait_p95_s),
                s.slice_gpu_hours,
                s.slice_peak_accelerators,
                s.gpu_hours,
                h(s.avg_jct_s),
                s.energy_mwh,
                s.never_started
            );
        }
        let _ = writeln!(
            t,
            "  the shared pools hold {} accelerators; slice jobs held at most {:.1} at once, {:.1} on average while jobs arrived",
            self.shared.shared_accelerators,
            self.shared.slice_peak_accelerators,
            self.shared.slice_mean_accelerators
        );
        let _ = writeln!(
            t,
            "  sharing saved {:.1} accelerator-hours: {:.1} accelerators freed on average while jobs arrived",
            self.gpu_hours_saved, self.accelerators_freed
        );
        t
    }
}

/// One size of the shared pools in a sweep (`gigafab sim --shared-scale`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepRow {
    /// The shared pools' nodes were multiplied by this (0: nothing shared).
    pub scale: f64,
    #[serde(flatten)]
    pub side: Side,
}

/// The sweep as a table, one line per size.
pub fn sweep_table(rows: &[SweepRow]) -> String {
    use std::fmt::Write as _;
    let h = |s: f64| format!("{:.2} h", s / 3600.0);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:>6} {:>8} {:>16} {:>16} {:>16} {:>16} {:>12} {:>11} {:>12} {:>11} {:>10}",
        "scale",
        "shared",
        "slice wait mean",
        "slice wait p95",
        "whole wait mean",
        "whole wait p95",
        "slice GPU-h",
        "slice mean",
        "avg JCT",
        "energy MWh",
        "never ran"
    );
    for r in rows {
        let s = &r.side;
        let _ = writeln!(
            t,
            "{:>6} {:>8} {:>16} {:>16} {:>16} {:>16} {:>12.1} {:>11.1} {:>12} {:>11.3} {:>10}",
            r.scale,
            s.shared_accelerators,
            h(s.slice_wait_mean_s),
            h(s.slice_wait_p95_s),
            h(s.whole_wait_mean_s),
            h(s.whole_wait_p95_s),
            s.slice_gpu_hours,
            s.slice_mean_accelerators,
            h(s.avg_jct_s),
            s.energy_mwh,
            s.never_started
        );
    }
    t
}
