//! Migration between accelerator types (`Policy::migrate`, off by
//! default): once the queue has had its turn, a running preemptible job
//! moves to a pool where it runs faster if that pool's accelerators are
//! free. It is stopped with its progress (as a preemption that keeps it)
//! and starts again on the faster pool, paying the restore overhead. Gavel
//! gets the same effect from its rounds, in which a job runs on whatever
//! type the round gives it; without it a job placed on a slow type keeps
//! it for its whole run even when faster ones fall idle.

use super::*;

/// Most moves in one pass.
const MAX_MOVES: usize = 64;

impl SchedCore {
    /// The remaining run time of running job `j` if it kept running where
    /// it is, and if it moved now to a pool where its run-time factor is
    /// `factor` (restore included).
    fn remaining_here_and_there(&self, j: JobIdx, now: f64, factor: f64) -> (f64, f64) {
        let job = &self.jobs[j as usize];
        let ran = (now - job.run_start - job.restore_s).max(0.0);
        let done = if job.run_full > 0.0 {
            (job.done + ran / job.run_full).min(1.0)
        } else {
            1.0
        };
        let left_here =
            (job.run_start + job.restore_s - now).max(0.0) + (1.0 - done) * job.run_full;
        let left_there = self.policy.restore_overhead_s.max(0.0) + (1.0 - done) * job.base * factor;
        (left_here, left_there)
    }

    /// Moves running preemptible jobs to free accelerators where they run
    /// faster (see the module's comment). A move must save more than twice
    /// the restore overhead and at least five minutes.
    pub(super) fn migrate(&mut self, now: f64) {
        if !self.policy.migrate {
            return;
        }
        let min_gain = (2.0 * self.policy.restore_overhead_s).max(300.0);
        for _ in 0..MAX_MOVES {
            // the best move: (gain, job, to pool, factor there)
            let mut best: Option<(f64, JobIdx, PoolIdx, f64)> = None;
            for (q, running) in self.running_by_end.iter().enumerate() {
                for &(_, v, gpus) in running {
                    let job = &self.jobs[v as usize];
                    if !job.preemptible || job.time_limit_s.is_some() || job.run_start >= now {
                        continue;
                    }
                    for &(p, factor) in &self.cand_lists[job.cands as usize].pools {
                        if p as usize == q || !self.cluster.pools[p as usize].may_fit(gpus) {
                            continue;
                        }
                        let (here, there) = self.remaining_here_and_there(v, now, factor);
                        let gain = here - there;
                        if gain > min_gain && best.is_none_or(|b| gain > b.0) {
                            best = Some((gain, v, p, factor));
                        }
                    }
                }
            }
            let Some((_, v, p, factor)) = best else {
                return;
            };
            let gpus = self.jobs[v as usize].gpus;
            let Some(power) = self.power_plan(p, gpus, 0.0) else {
                return;
            };
            let mut buf = std::mem::take(&mut self.place_buf);
            if !self.cluster.place(p, gpus, &mut buf) {
                self.place_buf = buf;
                return;
            }
            // placed on the new pool; the old run stops with its progress
            let lost = self.interrupt(v, now, false, true);
            self.requeue.retain(|&x| x != v);
            self.dec.preempted.push((v, lost));
            self.place_buf = buf;
            self.start(v, p, factor, now, power);
            self.migrations += 1;
        }
    }
}
