//! Migration between accelerator types (`Policy::migrate`, off by
//! default): once the queue has had its turn, a running preemptible job
//! moves to a pool where it runs faster if that pool's accelerators are
//! free. It is stopped with its progress (as a preemption that keeps it)
//! and starts again on the faster pool, paying the restore overhead; and
//! two running jobs swap pools when each gains from the other's. Gavel
//! gets the same effect from its rounds, in which a job runs on whatever
//! type the round gives it; without it a job placed on a slow type keeps
//! it for its whole run even when faster ones fall idle.

use super::*;

/// Most moves in one pass.
const MAX_MOVES: usize = 64;

/// Least rise of the pair's normalised throughput for a swap.
const MIN_SWAP_GAIN: f64 = 0.2;

impl SchedCore {
    /// Whether a running job may be moved by `migrate`: preemptible,
    /// without a time limit (the twin knows its remaining work), and
    /// faster on some of its pools than on others.
    pub(super) fn movable(&self, j: JobIdx) -> bool {
        let job = &self.jobs[j as usize];
        job.preemptible && job.time_limit_s.is_none() && self.cand_lists[job.cands as usize].varied
    }

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
        if !self.policy.migrate || self.n_movable == 0 {
            return;
        }
        let min_gain = (2.0 * self.policy.restore_overhead_s).max(300.0);
        for _ in 0..MAX_MOVES {
            // the best move: (gain, job, to pool, factor there)
            let mut best: Option<(f64, JobIdx, PoolIdx, f64)> = None;
            for (q, running) in self.running_by_end.iter().enumerate() {
                for &(_, v, gpus) in running {
                    let job = &self.jobs[v as usize];
                    if job.run_start >= now || !self.movable(v) {
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
                break;
            };
            let gpus = self.jobs[v as usize].gpus;
            let Some(power) = self.power_plan(p, gpus, 0.0) else {
                break;
            };
            let mut buf = std::mem::take(&mut self.place_buf);
            if !self.cluster.place(p, gpus, &mut buf) {
                self.place_buf = buf;
                break;
            }
            // placed on the new pool; the old run stops with its progress
            let lost = self.interrupt(v, now, false, true);
            self.requeue.retain(|&x| x != v);
            self.dec.preempted.push((v, lost));
            self.place_buf = buf;
            self.start(v, p, factor, now, power);
            self.migrations += 1;
        }
        self.swap(now, min_gain);
    }

    /// Swaps pairs of running preemptible jobs of the same size between
    /// two pools when each runs comparatively faster on the other's
    /// (a job that gains little from a fast type gives it up to one that
    /// gains much): the pair's remaining run time must fall by more than
    /// twice `min_gain`.
    fn swap(&mut self, now: f64, min_gain: f64) {
        let mut movable = std::mem::take(&mut self.swap_buf);
        let mut reps = std::mem::take(&mut self.swap_reps);
        for _ in 0..MAX_MOVES {
            // the movable jobs by class (pool, size, candidate list): a
            // swap's gain depends on the classes alone, its checks on the
            // remaining times, for which a class's shortest and longest
            // remaining runs are the ones to try (so the search is over
            // classes, not over pairs of running jobs)
            movable.clear();
            for (q, running) in self.running_by_end.iter().enumerate() {
                for &(_, v, gpus) in running {
                    let job = &self.jobs[v as usize];
                    if job.run_start < now && self.movable(v) {
                        let here = self.remaining_here_and_there(v, now, 1.0).0;
                        movable.push(((q as PoolIdx, gpus, job.cands), here, v));
                    }
                }
            }
            movable.sort_unstable_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
            reps.clear();
            for (i, m) in movable.iter().enumerate() {
                let last = i + 1 == movable.len() || movable[i + 1].0 != m.0;
                if i == 0 || movable[i - 1].0 != m.0 {
                    reps.push((m.0, m.2, m.2));
                }
                if last {
                    reps.last_mut().expect("pushed above").2 = m.2;
                }
            }
            // the best swap: (gain, a, b, a's factor on b's pool, b's on a's)
            let mut best: Option<(f64, JobIdx, JobIdx, f64, f64)> = None;
            for (i, &((pa, ga, _), a_short, a_long)) in reps.iter().enumerate() {
                for &((pb, gb, _), b_short, b_long) in &reps[i + 1..] {
                    if pa == pb || ga != gb {
                        continue;
                    }
                    let (Some(fa), Some(fb)) = (self.factor(a_short, pb), self.factor(b_short, pa))
                    else {
                        continue;
                    };
                    // the gain: the sum of the two jobs' speed ratios
                    // (there over here), less 2 (Gavel's normalised
                    // throughput); a swap must raise it by a fifth
                    let gain = self.jobs[a_short as usize].run_factor() / fa
                        + self.jobs[b_short as usize].run_factor() / fb
                        - 2.0;
                    if gain <= MIN_SWAP_GAIN || best.is_some_and(|x| gain <= x.0) {
                        continue;
                    }
                    for (a, b) in [
                        (a_short, b_short),
                        (a_short, b_long),
                        (a_long, b_short),
                        (a_long, b_long),
                    ] {
                        let (ha, ta) = self.remaining_here_and_there(a, now, fa);
                        let (hb, tb) = self.remaining_here_and_there(b, now, fb);
                        // neither job's remaining time more than doubles,
                        // and the pair's does not grow
                        if ta <= ha + min_gain.max(ha)
                            && tb <= hb + min_gain.max(hb)
                            && ha + hb >= ta + tb
                        {
                            best = Some((gain, a, b, fa, fb));
                            break;
                        }
                    }
                }
            }
            let Some((_, a, b, fa, fb)) = best else {
                break;
            };
            let (pa, pb) = (
                self.jobs[a as usize].run_pool,
                self.jobs[b as usize].run_pool,
            );
            let gpus = self.jobs[a as usize].gpus;
            for v in [a, b] {
                let lost = self.interrupt(v, now, false, true);
                self.requeue.retain(|&x| x != v);
                self.dec.preempted.push((v, lost));
            }
            for (v, p, f) in [(a, pb, fa), (b, pa, fb)] {
                let mut buf = std::mem::take(&mut self.place_buf);
                let power = self.power_plan(p, gpus, 0.0);
                let placed = power.is_some() && self.cluster.place(p, gpus, &mut buf);
                self.place_buf = buf;
                match power {
                    Some(power) if placed => {
                        self.start(v, p, f, now, power);
                        self.migrations += 1;
                    }
                    // not placed: it waits in the queue with its progress
                    _ => self.enqueue(v, now),
                }
            }
        }
        self.swap_buf = movable;
        self.swap_reps = reps;
    }
}
