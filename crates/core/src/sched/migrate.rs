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

/// Seconds after which a swap search that found nothing is redone: the
/// length of Gavel's rounds.
const SWAP_ROUND_S: f64 = 360.0;

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
            // no free accelerator anywhere (a loaded fleet): no move
            let most_free = self
                .cluster
                .pools
                .iter()
                .map(|p| p.free_total)
                .max()
                .unwrap_or(0);
            if most_free == 0 {
                break;
            }
            // the best move: (gain, job, to pool, factor there)
            let mut best: Option<(f64, JobIdx, PoolIdx, f64)> = None;
            for (q, running) in self.running_by_end.iter().enumerate() {
                for &(_, v, gpus) in running {
                    let job = &self.jobs[v as usize];
                    if gpus as u64 > most_free || job.run_start >= now || !self.movable(v) {
                        continue;
                    }
                    for &(p, factor) in &self.cand_lists[job.cands as usize].pools {
                        if p as usize == q
                            || self.held[p as usize]
                            || !self.cluster.pools[p as usize].may_fit(gpus)
                        {
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
        // a search that found no pair is redone a round of Gavel's later
        // (`SWAP_ROUND_S`), not at every pass: its pairs are classes of
        // long runs, and Gavel too moves jobs between types once a round
        if self.swap_seen.is_some_and(|t| now < t + SWAP_ROUND_S) {
            return;
        }
        let mut reps = std::mem::take(&mut self.swap_reps);
        for _ in 0..MAX_MOVES {
            // the movable jobs by class (pool, size, candidate list): a
            // swap's gain depends on the classes alone, its checks on the
            // remaining times, for which a class's shortest and longest
            // remaining runs are the ones to try (so the search is over
            // classes, not over pairs of running jobs; a class is found by
            // a linear search: a fleet has few)
            reps.clear();
            for (q, running) in self.running_by_end.iter().enumerate() {
                // a pool's runs in order of their planned ends: of a
                // class, the first met has the shortest remaining run and
                // the last the longest
                for &(_, v, gpus) in running {
                    let job = &self.jobs[v as usize];
                    if job.run_start < now && self.movable(v) {
                        let class = (q as PoolIdx, gpus, job.cands);
                        match reps.iter_mut().find(|r| r.0 == class) {
                            None => reps.push((class, v, v)),
                            Some(r) => r.2 = v,
                        }
                    }
                }
            }
            let best = self.best_swap(&mut reps, now, min_gain);
            let Some((_, a, b, fa, fb)) = best else {
                self.swap_seen = Some(now);
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
        self.swap_reps = reps;
    }

    /// The best swap among the classes `reps` (sorted here by size and
    /// pool): (gain, a, b, a's factor on b's pool, b's on a's). The gain
    /// of a pair is the sum of the two jobs' speed ratios (there over
    /// here) less 2 (Gavel's normalised throughput), and must exceed
    /// `MIN_SWAP_GAIN`. It is the sum of what each side adds, so per size
    /// and pair of pools each side is sorted by its part, and pairs are
    /// tried from the top down until none can beat the best: not every
    /// pair of classes.
    fn best_swap(
        &mut self,
        reps: &mut [SwapClass],
        now: f64,
        min_gain: f64,
    ) -> Option<(f64, JobIdx, JobIdx, f64, f64)> {
        reps.sort_unstable_by_key(|x| (x.0.1, x.0.0, x.0.2));
        let (mut side_a, mut side_b) = std::mem::take(&mut self.swap_sides);
        let mut best: Option<(f64, JobIdx, JobIdx, f64, f64)> = None;
        // the runs of one (size, pool)
        let group_end = |from: usize| {
            let k = (reps[from].0.1, reps[from].0.0);
            from + reps[from..]
                .iter()
                .take_while(|r| (r.0.1, r.0.0) == k)
                .count()
        };
        let mut i = 0;
        while i < reps.len() {
            let i_end = group_end(i);
            let (pa, size) = (reps[i].0.0, reps[i].0.1);
            let mut j = i_end;
            while j < reps.len() && reps[j].0.1 == size {
                let j_end = group_end(j);
                let pb = reps[j].0.0;
                // each side: (its part of the gain, its factor on the
                // other pool, its class)
                side_a.clear();
                for (k, r) in reps[i..i_end].iter().enumerate() {
                    if let Some(f) = self.factor(r.1, pb) {
                        side_a.push((self.jobs[r.1 as usize].run_factor() / f, f, i + k));
                    }
                }
                side_b.clear();
                for (k, r) in reps[j..j_end].iter().enumerate() {
                    if let Some(f) = self.factor(r.1, pa) {
                        side_b.push((self.jobs[r.1 as usize].run_factor() / f, f, j + k));
                    }
                }
                side_a.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(&y.2)));
                side_b.sort_unstable_by(|x, y| y.0.total_cmp(&x.0).then(x.2.cmp(&y.2)));
                let floor = |best: &Option<(f64, JobIdx, JobIdx, f64, f64)>| {
                    best.map_or(MIN_SWAP_GAIN, |b| b.0.max(MIN_SWAP_GAIN))
                };
                'sides: for &(xa, fa, ca) in &side_a {
                    for (n, &(yb, fb, cb)) in side_b.iter().enumerate() {
                        let gain = xa + yb - 2.0;
                        if gain <= floor(&best) {
                            if n == 0 {
                                // no later class of this side can do better
                                break 'sides;
                            }
                            break;
                        }
                        let (_, a_short, a_long) = reps[ca];
                        let (_, b_short, b_long) = reps[cb];
                        let mut found = false;
                        for (a, b) in [
                            (a_short, b_short),
                            (a_short, b_long),
                            (a_long, b_short),
                            (a_long, b_long),
                        ] {
                            let (ha, ta) = self.remaining_here_and_there(a, now, fa);
                            let (hb, tb) = self.remaining_here_and_there(b, now, fb);
                            // neither job's remaining time more than
                            // doubles, and the pair's does not grow
                            if ta <= ha + min_gain.max(ha)
                                && tb <= hb + min_gain.max(hb)
                                && ha + hb >= ta + tb
                            {
                                best = Some((gain, a, b, fa, fb));
                                found = true;
                                break;
                            }
                        }
                        if found {
                            // the best pair for this class of side a
                            break;
                        }
                    }
                }
                j = j_end;
            }
            i = i_end;
        }
        self.swap_sides = (side_a, side_b);
        best
    }
}
