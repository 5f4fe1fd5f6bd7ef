//! Estimated starts: the scheduler run forward on a copy of its state, as
//! the digital twin runs it, with every running job ending at its planned
//! end (its time limit, when it has one, as the control plane's jobs do)
//! and no new submission. Slurm's `squeue --start` reports the starts its
//! backfill plan reserved; this runs the whole policy (fair share,
//! priorities, preemption, power) through the ends to come.

use super::*;

impl SchedCore {
    /// When each of `targets` (waiting jobs) would start: the first pass
    /// that starts it, running passes at each planned end and at each time
    /// a pass asks to be woken, for at most `max_events` of them (None:
    /// not within those, or never without new capacity).
    pub fn forecast_starts(
        &self,
        now: f64,
        targets: &[JobIdx],
        max_events: usize,
    ) -> Vec<Option<f64>> {
        let mut out = vec![None; targets.len()];
        if targets.is_empty() {
            return out;
        }
        let mut c = self.clone();
        c.track_waits(false);
        let mut t = now;
        for _ in 0..max_events {
            let (started, wake) = {
                let d = c.schedule(t);
                (d.started.clone(), d.wakeup.filter(|w| *w > t))
            };
            for &j in &started {
                if let Some(i) = targets.iter().position(|&x| x == j) {
                    // its run's begin (after a resume, once its nodes are up)
                    out[i].get_or_insert(c.jobs[j as usize].run_start.max(t));
                }
            }
            if out.iter().all(Option::is_some) {
                break;
            }
            // the next planned end
            let next = c
                .running_by_end
                .iter()
                .filter_map(|s| s.first())
                .min_by_key(|e| e.0)
                .map(|&(k, j, _)| (f64::from_bits(k), j));
            match (next, wake) {
                (Some((end, _)), Some(w)) if w < end => t = w,
                (Some((end, j)), _) => {
                    t = end.max(t);
                    c.end_run(j, t, JobState::Completed);
                }
                (None, Some(w)) => t = w,
                (None, None) => break,
            }
        }
        out
    }
}
