//! Runs and accounting: starting and stopping runs, usage charged to
//! allocations, interruptions, failures and repairs, live restores.

use super::*;

impl SchedCore {
    pub(super) fn accrue(&mut self, a: AllocIdx, now: f64) {
        let hl = self.policy.decay_half_life_s;
        let s = &mut self.allocs[a as usize];
        let dt = now - s.usage_t;
        if dt > 0.0 {
            let decay = (-dt * std::f64::consts::LN_2 / hl).exp();
            s.usage = s.usage * decay + s.rate * hl / std::f64::consts::LN_2 * (1.0 - decay);
            s.used_total += s.rate * dt;
            s.usage_t = now;
        }
    }

    pub(super) fn billing(&self, pool: PoolIdx) -> f64 {
        self.factory
            .catalog
            .get(self.factory.pools[pool as usize].accel)
            .billing_weight
    }

    /// Starts `j` on the placement in `place_buf` with its accelerators at
    /// `power` = (W each, speed kept).
    pub(super) fn start(
        &mut self,
        j: JobIdx,
        pool: PoolIdx,
        factor: f64,
        now: f64,
        power: (f64, f64),
    ) {
        self.changes += 1;
        let (power_w, speed) = power;
        let pp = self.pool_power[pool as usize];
        let (site, idle) = (pp.site, pp.idle_w);
        let g = self.jobs[j as usize].gpus as f64;
        self.accrue_site(site, now);
        let sp = &mut self.sites[site];
        sp.it_w += g * (power_w - idle);
        sp.peak_w = sp.peak_w.max(sp.it_w * sp.pue);
        let placement = std::mem::take(&mut self.place_buf);
        for &(n, c) in &placement {
            self.node_jobs[n as usize].push((j, c));
        }
        let w = self.billing(pool);
        let job = &mut self.jobs[j as usize];
        job.placement.clone_from(&placement);
        self.place_buf = placement;
        job.state = JobState::Running;
        if job.promoted && job.lease_s > 0.0 {
            job.lease_end = now + job.lease_s;
            job.lease_s = 0.0;
        }
        job.run_pool = pool;
        job.run_full = job.base * factor / speed.max(1e-6);
        job.power_w = power_w;
        job.speed = speed;
        if speed < 1.0 {
            job.capped_runs += 1;
        }
        job.epoch += 1;
        let est = job
            .time_limit_s
            .unwrap_or((1.0 - job.done).max(0.0) * job.run_full + job.restore_s);
        // on resumed nodes, the run begins once they are up (idle.rs)
        let mut delay = self.boot_delay(&self.place_buf, now);
        if delay > 0.0 {
            self.boot_waits += 1;
            self.boot_wait_s += delay;
        }
        // a large gang's nodes are checked first (the twin's pre-flight)
        if self.policy.preflight_s > 0.0
            && self.place_buf.len() as u32 >= self.policy.preflight_min_nodes
        {
            delay += self.policy.preflight_s;
        }
        let job = &mut self.jobs[j as usize];
        job.run_start = now + delay;
        job.first_start.get_or_insert(now + delay);
        job.est_end = now + delay + est;
        let limited = job.time_limit_s.is_some();
        let (est_end, gpus, alloc, prio, pre) = (
            job.est_end,
            job.gpus,
            job.alloc,
            job.priority,
            job.preemptible,
        );
        self.running_by_end[pool as usize].insert((end_key(est_end), j, gpus));
        if pre {
            let e = self.preemptible_prios[pool as usize]
                .entry(prio)
                .or_insert((0, 0));
            e.0 += 1;
            e.1 += gpus as u64;
        }
        self.accrue(alloc, now);
        let a = &mut self.allocs[alloc as usize];
        a.rate += gpus as f64 * w;
        // a run waiting for its nodes to boot is charged from its begin
        let boot = (self.jobs[j as usize].run_start - now).max(0.0) * gpus as f64 * w;
        if boot > 0.0 {
            a.used_total -= boot;
            a.usage -= boot;
        }
        if limited {
            a.res_rate += gpus as f64 * w;
            a.res_end += gpus as f64 * w * est_end;
        }
        self.n_running += 1;
        if self.movable(j) {
            self.n_movable += 1;
        }
        self.dec.started.push(j);
    }

    /// Takes a running job off its accelerators (bookkeeping only).
    pub(super) fn stop(&mut self, j: JobIdx, now: f64) {
        self.changes += 1;
        if self.movable(j) {
            self.n_movable -= 1;
        }
        {
            let (pool, gpus, power_w, start) = {
                let job = &self.jobs[j as usize];
                (
                    job.run_pool as usize,
                    job.gpus as f64,
                    job.power_w,
                    job.run_start,
                )
            };
            let pp = self.pool_power[pool];
            let (site, idle, node_share) = (pp.site, pp.idle_w, pp.node_share_w);
            self.accrue_site(site, now);
            let cal = self.policy.calendar_start_s;
            let sp = &mut self.sites[site];
            sp.it_w = (sp.it_w - gpus * (power_w - idle)).max(0.0);
            let dt = (now - start).max(0.0);
            let e = gpus * (power_w + node_share) * dt;
            let c = match &sp.carbon {
                Some(cs) => e * sp.pue * cs.mean(cal + start, cal + now) / 3.6e6,
                None => 0.0,
            };
            let job = &mut self.jobs[j as usize];
            job.energy_j += e;
            job.carbon_g += c;
        }
        let job = &mut self.jobs[j as usize];
        debug_assert_eq!(job.state, JobState::Running);
        let placement = std::mem::take(&mut job.placement);
        let limited = job.time_limit_s.is_some();
        let (pool, est_end, gpus, alloc, prio, pre) = (
            job.run_pool,
            job.est_end,
            job.gpus,
            job.alloc,
            job.priority,
            job.preemptible,
        );
        // a slice counts its share of an accelerator
        let share = self
            .factory
            .catalog
            .get(self.factory.pools[pool as usize].accel)
            .slice
            .as_ref()
            .map_or(1.0, |s| s.share());
        let job = &mut self.jobs[j as usize];
        job.attained_gpu_s += gpus as f64 * share * (now - job.run_start).max(0.0);
        self.cluster.release(&placement);
        for &(n, c) in &placement {
            if let Some(d) = self.drained.get_mut(n as usize)
                && *d & DRAIN_FLAG != 0
            {
                for _ in 0..c {
                    if self.cluster.down(n) {
                        *d += 1;
                    }
                }
            }
            let v = &mut self.node_jobs[n as usize];
            if let Some(i) = v.iter().position(|x| x.0 == j) {
                v.swap_remove(i);
            }
        }
        self.running_by_end[pool as usize].remove(&(end_key(est_end), j, gpus));
        if pre {
            let m = &mut self.preemptible_prios[pool as usize];
            if let Some(c) = m.get_mut(&prio) {
                c.0 -= 1;
                c.1 -= gpus as u64;
                if c.0 == 0 {
                    m.remove(&prio);
                }
            }
        }
        let w = self.billing(pool);
        self.accrue(alloc, now);
        let a = &mut self.allocs[alloc as usize];
        a.rate = (a.rate - gpus as f64 * w).max(0.0);
        if limited {
            a.res_rate = (a.res_rate - gpus as f64 * w).max(0.0);
            a.res_end -= gpus as f64 * w * est_end;
            if a.res_rate == 0.0 {
                a.res_end = 0.0;
            }
        }
        self.n_running -= 1;
    }

    /// A new time limit of job `j`, seconds (an interactive session
    /// extended): a running job's planned end moves with it, so that
    /// backfill plans around the new end.
    pub fn set_time_limit(&mut self, j: JobIdx, limit_s: f64) {
        let job = &mut self.jobs[j as usize];
        let old = job.time_limit_s;
        job.time_limit_s = Some(limit_s);
        // a job planned as running to its limit runs to the new one
        if let Some(o) = old
            && o > 0.0
            && job.base == o
        {
            job.run_full *= limit_s / o;
            job.base = limit_s;
        }
        if job.state != JobState::Running {
            return;
        }
        let (pool, gpus, old_end, alloc) = (job.run_pool, job.gpus, job.est_end, job.alloc);
        let new_end = job.run_start + limit_s;
        job.est_end = new_end;
        let set = &mut self.running_by_end[pool as usize];
        set.remove(&(end_key(old_end), j, gpus));
        set.insert((end_key(new_end), j, gpus));
        // its allocation's reservation holds the new end (what stop()
        // takes back)
        if old.is_some() {
            let w = self.billing(pool);
            self.allocs[alloc as usize].res_end += gpus as f64 * w * (new_end - old_end);
        }
    }

    /// How many more seconds running job `j` may be given under its
    /// allocation's grant at `now`: what neither use so far nor the
    /// running jobs' time limits hold, over its billing-weighted
    /// accelerators. None: no grant, or not running.
    pub fn extension_room_s(&self, j: JobIdx, now: f64) -> Option<f64> {
        let job = &self.jobs[j as usize];
        if job.state != JobState::Running || job.gpus == 0 {
            return None;
        }
        let a = &self.allocs[job.alloc as usize];
        let g = a.spec.granted_gpu_hours?;
        let w = self.billing(job.run_pool);
        let free = g * 3600.0 - a.used_at(now) - a.reserved_at(now);
        Some((free / (job.gpus as f64 * w)).max(0.0))
    }

    /// A running job's current run ended at `now` (completion or time limit).
    pub fn finish(&mut self, j: JobIdx, now: f64) -> JobState {
        let (_, timed_out) = self.jobs[j as usize].planned_run();
        self.stop(j, now);
        let job = &mut self.jobs[j as usize];
        job.end_s = Some(now);
        if timed_out {
            job.state = JobState::TimedOut;
        } else {
            job.done = 1.0;
            job.state = JobState::Completed;
        }
        job.state
    }

    /// Stops a running job, keeping the work saved at its last checkpoint
    /// (or, when `on_stop`, all its work: it checkpoints as it stops, and
    /// restores that for the policy's `restore_overhead_s` when it runs
    /// again); returns the accelerator-seconds lost. The job goes back to
    /// the queue (at once if `requeue_now`, else at the end of the current
    /// pass).
    pub(super) fn interrupt(
        &mut self,
        j: JobIdx,
        now: f64,
        requeue_now: bool,
        on_stop: bool,
    ) -> f64 {
        self.stop(j, now);
        let restore = self.policy.restore_overhead_s.max(0.0);
        let job = &mut self.jobs[j as usize];
        let r = (now - job.run_start).max(0.0);
        // the first seconds of a run restore what an earlier stop saved
        let work = (r - job.restore_s).max(0.0);
        let saved = if on_stop {
            work
        } else if job.checkpoint_s > 0.0 {
            (work / job.checkpoint_s).floor() * job.checkpoint_s
        } else {
            0.0
        };
        if job.run_full > 0.0 {
            job.done = (job.done + saved / job.run_full).min(1.0);
        }
        let lost = job.gpus as f64 * (r - saved);
        // what is saved (as it stopped, or at a checkpoint) must be
        // restored at the next start
        job.restore_s = if on_stop || job.done > 0.0 {
            restore
        } else {
            0.0
        };
        job.lost_gpu_s += lost;
        job.restarts += 1;
        job.state = JobState::Waiting;
        if requeue_now {
            self.enqueue(j, now);
        } else {
            self.requeue.push(j);
        }
        lost
    }

    /// One accelerator of `node` fails; `slot` (uniform in 0..per-node)
    /// picks which one. A job using it is stopped and requeued.
    pub fn fail_accelerator(&mut self, node: NodeIdx, slot: u16, now: f64) -> FailOutcome {
        let (cap, free) = self.cluster.node_state(node);
        if slot >= cap {
            return FailOutcome::AlreadyDown;
        }
        let used = cap - free;
        let mut out = FailOutcome::Idle;
        if slot < used {
            let mut acc = 0u16;
            let mut hit = None;
            for &(j, c) in &self.node_jobs[node as usize] {
                acc += c;
                if slot < acc {
                    hit = Some(j);
                    break;
                }
            }
            if let Some(j) = hit {
                let (lost, failed) = self.hit_by_failure(j, now);
                out = FailOutcome::Hit {
                    job: j,
                    lost_gpu_s: lost,
                    failed,
                };
            }
        }
        self.changes += 1;
        self.cluster.down(node);
        out
    }

    /// One accelerator of running job `j` fails: `pick` (in 0..its
    /// accelerators) says which, in the order of its placement. The job is
    /// requeued or failed as by [`SchedCore::fail_accelerator`], and that
    /// accelerator is down. A job no longer running is left alone.
    /// Returns the node of that accelerator and the outcome.
    pub fn fail_job(&mut self, j: JobIdx, pick: u32, now: f64) -> Option<(NodeIdx, FailOutcome)> {
        let job = &self.jobs[j as usize];
        if job.state != JobState::Running {
            return None;
        }
        let mut acc = 0u32;
        let mut node = job.placement.first().map_or(0, |p| p.0);
        for &(n, c) in &job.placement {
            acc += c as u32;
            if pick < acc {
                node = n;
                break;
            }
        }
        let (lost, failed) = self.hit_by_failure(j, now);
        self.cluster.down(node);
        Some((
            node,
            FailOutcome::Hit {
                job: j,
                lost_gpu_s: lost,
                failed,
            },
        ))
    }

    /// Stops running job `j` hit by a failure: requeued from its last
    /// checkpoint while it has requeues left, else failed with its run lost.
    /// The bound counts hits without progress: a run that reached a
    /// checkpoint moved the job forward, and its count starts again, so a
    /// long job that resumes from its checkpoints is never failed for the
    /// number of its interruptions, while one that cannot get past a
    /// checkpoint is (docs/scheduling.md, "Failures and requeues").
    /// Returns (accelerator-seconds lost, failed).
    pub(super) fn hit_by_failure(&mut self, j: JobIdx, now: f64) -> (f64, bool) {
        let job = &mut self.jobs[j as usize];
        let worked = (now - job.run_start).max(0.0) - job.restore_s;
        if job.checkpoint_s > 0.0 && worked >= job.checkpoint_s {
            job.hits_without_progress = 0;
        }
        if job.hits_without_progress >= self.policy.max_requeues {
            let lost = job.gpus as f64 * (now - job.run_start).max(0.0);
            self.stop(j, now);
            let job = &mut self.jobs[j as usize];
            job.lost_gpu_s += lost;
            job.end_s = Some(now);
            job.state = JobState::Failed;
            job.reason = Some(Reason::RestartsExhausted);
            (lost, true)
        } else {
            let lost = self.interrupt(j, now, true, false);
            let job = &mut self.jobs[j as usize];
            job.fail_requeues += 1;
            job.hits_without_progress += 1;
            (lost, false)
        }
    }

    /// Live systems: stops running job `j` whose node leaves service (a
    /// health drain) and requeues it from its last checkpoint, as a
    /// failure does (counted against `max_requeues`; past them the job
    /// fails). The accelerators are freed, not marked down: the drain
    /// takes the node out. Returns (accelerator-seconds lost, failed), or
    /// None when `j` is not running.
    pub fn requeue_from_checkpoint(&mut self, j: JobIdx, now: f64) -> Option<(f64, bool)> {
        if self.jobs.get(j as usize)?.state != JobState::Running {
            return None;
        }
        Some(self.hit_by_failure(j, now))
    }

    /// Stops running job `j` with its progress saved (it checkpoints as it
    /// stops: a drain ahead of a predicted failure) and requeues it at once.
    /// Returns the accelerator-seconds lost (none but what its restore
    /// costs later), or None when it is not running.
    pub fn checkpoint_stop(&mut self, j: JobIdx, now: f64) -> Option<f64> {
        if self.jobs.get(j as usize)?.state != JobState::Running {
            return None;
        }
        Some(self.interrupt(j, now, true, true))
    }

    /// An idle accelerator of `node` fails (it is down until repaired);
    /// false if the node has none idle.
    pub fn fail_idle(&mut self, node: NodeIdx) -> bool {
        self.changes += 1;
        self.cluster.down(node)
    }

    /// One accelerator of `node` is repaired. On a drained node it stays
    /// out with the drain, and comes back when the drain ends.
    pub fn repair(&mut self, node: NodeIdx) -> bool {
        self.changes += 1;
        if let Some(d) = self.drained.get_mut(node as usize)
            && *d & DRAIN_FLAG != 0
        {
            let (cap, _) = self.cluster.node_state(node);
            let per = self.cluster.pools[self.cluster.pool_of(node) as usize].per_node;
            // accelerators down for other causes than the drain
            if cap + (*d & !DRAIN_FLAG) < per {
                *d += 1;
                return true;
            }
            return false;
        }
        self.cluster.up(node)
    }

    /// Live systems: the run of job `j` ended at `now` with `state`
    /// (`Completed`, `Failed`, `TimedOut` or `Cancelled`), whatever its plan said.
    pub fn end_run(&mut self, j: JobIdx, now: f64, state: JobState) {
        if self.jobs[j as usize].state != JobState::Running {
            return;
        }
        self.stop(j, now);
        let job = &mut self.jobs[j as usize];
        job.end_s = Some(now);
        if state == JobState::Completed {
            job.done = 1.0;
        }
        if state == JobState::Cancelled {
            job.reason = Some(Reason::Withdrawn);
        }
        job.state = state;
    }

    /// Live systems: withdraws a waiting job (it leaves the queue at once).
    /// Returns false if it was not waiting; a running job is ended with
    /// [`SchedCore::end_run`] once its run has stopped.
    pub fn withdraw(&mut self, j: JobIdx, now: f64) -> bool {
        self.changes += 1;
        let job = &mut self.jobs[j as usize];
        if job.state != JobState::Waiting {
            return false;
        }
        job.state = JobState::Cancelled;
        job.reason = Some(Reason::Withdrawn);
        job.end_s = Some(now);
        let (alloc, prio, promoted) = (job.alloc, job.priority, job.promoted);
        // a held job is in no queue
        if self.dep_held.remove(&j).is_none() {
            self.queue.remove(j, alloc, prio, promoted);
        }
        self.requeue.retain(|&q| q != j);
        true
    }

    /// Live systems, after a restart: records a job that is already running
    /// on `placement` (accelerator counts per node of `pool`) since
    /// `run_start`. The placement must be free.
    pub fn restore_running(
        &mut self,
        spec: &JobSpec,
        alloc: AllocIdx,
        pool: PoolIdx,
        placement: &[(NodeIdx, u16)],
        run_start: f64,
    ) -> JobIdx {
        let j = self.submit(spec, alloc, spec.submit_s);
        if self.jobs[j as usize].state != JobState::Waiting {
            return j;
        }
        let job = &self.jobs[j as usize];
        let (alloc, prio, promoted) = (job.alloc, job.priority, job.promoted);
        self.queue.remove(j, alloc, prio, promoted);
        self.cluster.take_exact(placement);
        self.place_buf.clear();
        self.place_buf.extend_from_slice(placement);
        let t = self
            .factory
            .catalog
            .get(self.factory.pools[pool as usize].accel);
        let power = (crate::energy::job_power_w(t), 1.0);
        self.start(j, pool, 1.0, run_start, power);
        self.dec.started.retain(|&x| x != j);
        j
    }

    /// Live systems, after a restart: sets an allocation's consumed
    /// accelerator-seconds (undecayed and decayed alike).
    pub fn restore_usage(&mut self, alloc: AllocIdx, used_gpu_s: f64) {
        self.changes += 1;
        let a = &mut self.allocs[alloc as usize];
        a.used_total = used_gpu_s;
        a.usage = used_gpu_s;
    }
}
