//! Queue order (the score): each policy's key, and the periodic
//! recomputation of fair-share priorities.

use super::*;

impl SchedCore {
    pub(super) fn compute_key(&self, j: JobIdx, now: f64) -> f64 {
        let job = &self.jobs[j as usize];
        let prio = job.priority as f64;
        match self.policy.kind.traits().order {
            QueueOrder::Fifo => 0.0,
            QueueOrder::Priority => -prio,
            QueueOrder::Fairshare => self.policy.fairshare_key(
                job.priority,
                self.allocs[job.alloc as usize].fs_factor,
                job.submit_s,
                now,
            ),
            QueueOrder::AttainedLevel => {
                -prio * 1e3 + self.policy.las_level(job.attained_gpu_s) as f64
            }
            QueueOrder::AttainedTime => -prio * 1e15 + job.attained_gpu_s / job.gpus as f64,
        }
    }

    pub(super) fn enqueue(&mut self, j: JobIdx, now: f64) {
        let key = self.compute_key(j, now);
        let job = &self.jobs[j as usize];
        let pools = &self.cand_lists[job.cands as usize].pools;
        let (pool1, factor) = match pools[..] {
            [(p, f)] => (p, f),
            _ => (u32::MAX, 1.0),
        };
        let q = Queued::new(
            key,
            job.submit_s,
            j,
            job.gpus,
            job.cands,
            job.alloc,
            job.priority,
            job.time_limit_s
                .unwrap_or((1.0 - job.done).max(0.0) * job.base),
            job.time_limit_s.is_some(),
            pool1,
            factor,
        );
        let pos = self.queue.insert(q);
        // behind where the last backfill pass stopped for its test limit,
        // a pass over the same state would not reach it
        if pos < self.bf_horizon {
            self.bf_horizon = self.bf_horizon.saturating_add(1);
            self.changes += 1;
        }
    }

    pub(super) fn refresh_priorities(&mut self, now: f64) {
        for a in 0..self.allocs.len() {
            self.accrue(a as AllocIdx, now);
        }
        let tot_u: f64 = self.allocs.iter().map(|a| a.usage).sum();
        let tot_s: f64 = self.allocs.iter().map(|a| a.shares).sum();
        for a in &mut self.allocs {
            let u = if tot_u > 0.0 { a.usage / tot_u } else { 0.0 };
            let s = if tot_s > 0.0 { a.shares / tot_s } else { 1.0 };
            a.fs_factor = (-(u / s.max(1e-12)) * std::f64::consts::LN_2).exp();
        }
        let weights = FairshareWeights::of(&self.policy);
        // a pass reads the queue's order only: a refresh that keeps it is
        // no change (no backfill tick is woken for it)
        if self
            .queue
            .refresh(self.allocs.iter().map(|a| a.fs_factor), now, weights)
        {
            self.changes += 1;
        }
    }

    /// Waiting jobs in scheduling order.
    pub fn queue_order(&mut self) -> Vec<JobIdx> {
        self.queue.extend(usize::MAX);
        self.queue.prefix().iter().map(|q| q.j).collect()
    }
}
