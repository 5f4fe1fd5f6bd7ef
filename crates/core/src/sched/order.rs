//! Queue order (the score): each policy's key, and the periodic
//! recomputation of fair-share priorities.

use super::*;

impl SchedCore {
    pub(super) fn compute_key(&self, j: JobIdx, now: f64) -> f64 {
        let job = &self.jobs[j as usize];
        let prio = job.priority as f64;
        // a promoted job goes ahead of every job of its priority that is
        // not (and after those of a higher one); promoted jobs in
        // submission order
        match self.policy.kind.traits().order {
            QueueOrder::Fifo => 0.0,
            QueueOrder::Priority => -prio,
            QueueOrder::Fairshare => FairshareWeights::of(&self.policy).key(
                job.priority,
                self.allocs[job.alloc as usize].fs_factor,
                job.submit_s,
                now,
                job.promoted,
            ),
            QueueOrder::AttainedLevel if job.promoted => -prio * 1e3 - 1.0,
            QueueOrder::AttainedLevel => {
                -prio * 1e3 + self.policy.las_level(job.attained_gpu_s) as f64
            }
            // attained seconds stay far below 1e14
            QueueOrder::AttainedTime if job.promoted => -prio * 1e15 - 1e14,
            QueueOrder::AttainedTime => -prio * 1e15 + job.attained_gpu_s / job.gpus as f64,
        }
    }

    /// Queues a job that begins to wait (submitted, stopped or requeued),
    /// and notes when the starvation bound promotes it.
    pub(super) fn enqueue(&mut self, j: JobIdx, now: f64) {
        let job = &mut self.jobs[j as usize];
        job.queued_at = now;
        // a promoted job whose lease has run out is ranked by its service again
        if job.promoted && job.lease_s == 0.0 && now >= job.lease_end {
            job.promoted = false;
        }
        let job = &self.jobs[j as usize];
        if !job.promoted
            && let Some(w) = self
                .policy
                .promote_wait(job.attained_gpu_s / job.gpus.max(1) as f64)
        {
            let at = end_key(now + w);
            self.promote_at.push(std::cmp::Reverse((at, j, job.epoch)));
        }
        self.insert(j, now);
    }

    /// Puts a job in the queue at its key now.
    fn insert(&mut self, j: JobIdx, now: f64) {
        let q = self.entry(j, now);
        let pos = self.queue.insert(q);
        // behind where the last backfill pass stopped for its test limit,
        // a pass over the same state would not reach it
        if pos < self.bf_horizon {
            self.bf_horizon = self.bf_horizon.saturating_add(1);
            self.changes += 1;
        }
    }

    /// The queue entry of job `j` with its key at `now`.
    fn entry(&self, j: JobIdx, now: f64) -> Queued {
        let key = self.compute_key(j, now);
        let job = &self.jobs[j as usize];
        let pools = &self.cand_lists[job.cands as usize].pools;
        let (pool1, factor) = match pools[..] {
            [(p, f)] => (p, f),
            _ => (u32::MAX, 1.0),
        };
        let mut q = Queued::new(
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
        q.promoted = job.promoted;
        q
    }

    /// Promotes the waiting jobs whose wait has reached the starvation
    /// bound by `now` (each is due once per wait: a heap of due times, so
    /// a pass costs nothing for the jobs that are not).
    pub(super) fn promote_due(&mut self, now: f64) {
        let due = end_key(now);
        while let Some(&std::cmp::Reverse((at, j, epoch))) = self.promote_at.peek() {
            if at > due {
                break;
            }
            self.promote_at.pop();
            let job = &self.jobs[j as usize];
            if job.state != JobState::Waiting || job.epoch != epoch || job.promoted {
                continue;
            }
            // the entry as it was queued (the key of a waiting job under
            // these policies does not move but at fair-share refreshes,
            // which the grouped queue finds by run)
            let old = self.entry(j, now);
            let key = match self.policy.kind.traits().order {
                QueueOrder::Fairshare => old.key,
                _ => self.queue_key_of(j),
            };
            let mut old = old;
            old.key = key;
            if !self.queue.remove_entry(&old) {
                continue;
            }
            let knob = self.policy.promote_knob;
            let job = &mut self.jobs[j as usize];
            job.promoted = true;
            // once it runs, it is not stopped for the jobs it was
            // promoted over for its wait over the knob (all its run if 0)
            // (from the wait the bound allowed, not the pass's time: the
            // twin and a live server, whose passes fall at other times,
            // give the same lease)
            job.lease_s = if knob > 0.0 {
                ((f64::from_bits(at) - job.queued_at) / knob).max(1.0)
            } else {
                f64::INFINITY
            };
            self.promotions += 1;
            self.changes += 1;
            self.insert(j, now);
        }
    }

    /// The key job `j` was queued with (orders other than fair share: it
    /// does not change while the job waits).
    fn queue_key_of(&self, j: JobIdx) -> f64 {
        self.compute_key(j, 0.0)
    }

    /// When the next waiting job is due for promotion (stale entries on
    /// top are dropped: a job that started waits no more).
    pub(super) fn next_promotion(&mut self) -> Option<f64> {
        while let Some(&std::cmp::Reverse((at, j, epoch))) = self.promote_at.peek() {
            let job = &self.jobs[j as usize];
            if job.state == JobState::Waiting && job.epoch == epoch && !job.promoted {
                return Some(f64::from_bits(at));
            }
            self.promote_at.pop();
        }
        None
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
