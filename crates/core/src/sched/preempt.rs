//! Preemption: who may stop whom, and the choice of victims.

use super::*;

impl SchedCore {
    /// Rank for preemption: a job may preempt preemptible jobs of strictly
    /// lower rank. A promoted job (the starvation bound) outranks every
    /// job of its priority that is not.
    pub(super) fn rank(&self, j: JobIdx, now: f64) -> i64 {
        let job = &self.jobs[j as usize];
        if self.policy.kind.traits().preempts_by_service {
            if job.promoted && (job.state != JobState::Running || now < job.lease_end) {
                return job.priority as i64 * 100 + 1;
            }
            job.priority as i64 * 100 - self.policy.las_level(job.attained_at(now)) as i64
        } else {
            job.priority as i64
        }
    }

    pub(super) fn try_preempt(&mut self, j: JobIdx, now: f64) -> bool {
        let my_rank = self.rank(j, now);
        let gpus = self.jobs[j as usize].gpus;
        let cl = self.jobs[j as usize].cands as usize;
        for ci in 0..self.cand_lists[cl].pools.len() {
            let (p, factor) = self.cand_lists[cl].pools[ci];
            let pu = p as usize;
            // a pool reserved for a promoted job is its own
            if self.held[pu] {
                continue;
            }
            // a try in this pass that failed here, with nothing changed
            // since, for a job of no lower rank, had every victim this one
            // could have: if they were too few, they are too few for as
            // many accelerators or more; if the room they left would not
            // take the gang (placement, power), it will not take one as
            // large (a larger one would stop more)
            if self.preempt_failed[pu].is_some_and(|(r, g, c, too_few)| {
                c == self.changes && my_rank <= r && (gpus == g || (too_few && gpus > g))
            }) {
                continue;
            }
            // cheap filter: any preemptible job that could be outranked?
            match self.policy.kind.traits().preempts_by_service {
                true => {
                    if self.preemptible_prios[pu].is_empty() {
                        continue;
                    }
                    // the lowest rank a victim here has, once per pass and
                    // change: most tries find none below their own
                    let lowest = match self.lowest_rank[pu] {
                        Some((r, c)) if c == self.changes => r,
                        _ => {
                            let r = self.running_by_end[pu]
                                .iter()
                                .filter(|&&(_, v, _)| {
                                    let vj = &self.jobs[v as usize];
                                    vj.preemptible && vj.run_start < now
                                })
                                .map(|&(_, v, _)| self.rank(v, now))
                                .min()
                                .unwrap_or(i64::MAX);
                            self.lowest_rank[pu] = Some((r, self.changes));
                            r
                        }
                    };
                    if lowest >= my_rank {
                        continue;
                    }
                }
                false => {
                    // enough accelerators held by lower-priority preemptible jobs?
                    let lower: u64 = self.preemptible_prios[pu]
                        .range(..)
                        .take_while(|(p, _)| (**p as i64) < my_rank)
                        .map(|(_, c)| c.1)
                        .sum();
                    if lower == 0 || self.cluster.pools[pu].free_total + lower < gpus as u64 {
                        continue;
                    }
                }
            }
            let mut victims = std::mem::take(&mut self.victims);
            victims.clear();
            for &(_, v, _) in &self.running_by_end[pu] {
                let vj = &self.jobs[v as usize];
                if vj.preemptible && vj.run_start < now {
                    let r = self.rank(v, now);
                    if r < my_rank {
                        victims.push((r, -vj.run_start, v));
                    }
                }
            }
            victims.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
            let mut have = self.cluster.pools[pu].free_total;
            let mut n = 0;
            while have < gpus as u64 && n < victims.len() {
                have += self.jobs[victims[n].2 as usize].gpus as u64;
                n += 1;
            }
            if have < gpus as u64 {
                self.victims = victims;
                self.preempt_failed[pu] = Some((my_rank, gpus, self.changes, true));
                continue;
            }
            // tentatively release victims, then place; for a promoted job
            // (the starvation bound), where the room they leave is
            // scattered over nodes, more of them, in order, until the
            // gang fits
            for &(_, _, v) in &victims[..n] {
                self.cluster.release(&self.jobs[v as usize].placement);
            }
            let mut buf = std::mem::take(&mut self.place_buf);
            let mut ok = self.cluster.place(p, gpus, &mut buf);
            let promoted = self.jobs[j as usize].promoted;
            while !ok && promoted && n < victims.len() {
                self.cluster
                    .release(&self.jobs[victims[n].2 as usize].placement);
                n += 1;
                ok = self.cluster.place(p, gpus, &mut buf);
            }
            if ok {
                self.cluster.release(&buf);
            }
            for &(_, _, v) in &victims[..n] {
                self.cluster.take_exact(&self.jobs[v as usize].placement);
            }
            if !ok {
                self.place_buf = buf;
                self.victims = victims;
                self.preempt_failed[pu] = Some((my_rank, gpus, self.changes, false));
                continue;
            }
            // of those, only the ones on the placement's nodes that make
            // room there are stopped (moved to the front, in order)
            let mut k = 0;
            for i in 0..n {
                let v = victims[i].2;
                let useful = self.jobs[v as usize].placement.iter().any(|&(node, _)| {
                    buf.iter()
                        .any(|&(bn, c)| bn == node && self.cluster.node_state(node).1 < c)
                });
                if useful {
                    self.cluster.release(&self.jobs[v as usize].placement);
                    victims.swap(k, i);
                    k += 1;
                }
            }
            for &(_, _, v) in &victims[..k] {
                self.cluster.take_exact(&self.jobs[v as usize].placement);
            }
            let n = k;
            // the victims' power must make room too
            let idle = self
                .factory
                .catalog
                .get(self.factory.pools[pu].accel)
                .idle_watts;
            let freed: f64 = victims[..n]
                .iter()
                .map(|&(_, _, v)| {
                    let vj = &self.jobs[v as usize];
                    vj.gpus as f64 * (vj.power_w - idle)
                })
                .sum();
            if let Some(power) = self.power_plan(p, gpus, freed) {
                for &(_, _, v) in &victims[..n] {
                    let on_stop = self.policy.checkpoint_on_preempt;
                    let lost = self.interrupt(v, now, false, on_stop);
                    self.dec.preempted.push((v, lost));
                }
                self.victims = victims;
                // the placement found has room now, unless a victim's
                // accelerators went down as it stopped (a drained node):
                // then placed afresh
                let fits = buf
                    .iter()
                    .all(|&(node, c)| self.cluster.node_state(node).1 >= c);
                let ok2 = if fits {
                    self.cluster.take_exact(&buf);
                    true
                } else {
                    self.cluster.place(p, gpus, &mut buf)
                };
                self.place_buf = buf;
                if ok2 {
                    self.start(j, p, factor, now, power);
                    return true;
                }
                return false;
            }
            self.place_buf = buf;
            self.victims = victims;
            self.preempt_failed[pu] = Some((my_rank, gpus, self.changes, false));
        }
        false
    }

    /// When the next preemptible run crosses an attained-service threshold
    /// (policies that preempt by service), if any.
    pub(super) fn next_demotion(&mut self, now: f64) -> Option<f64> {
        // each run's crossings are fixed while the runs stay as they are:
        // the earliest is found again only after a change, or once passed
        if let Some((c, next)) = self.demotion_seen
            && c == self.changes
            && next.is_none_or(|t| t > now)
        {
            return next;
        }
        let next = self.find_next_demotion(now);
        self.demotion_seen = Some((self.changes, next));
        next
    }

    fn find_next_demotion(&self, now: f64) -> Option<f64> {
        let th = &self.policy.las_thresholds_gpu_s;
        let mut next: Option<f64> = None;
        for pool in &self.running_by_end {
            for &(_, j, _) in pool {
                let job = &self.jobs[j as usize];
                if !job.preemptible || job.gpus == 0 {
                    continue;
                }
                if job.promoted && job.lease_end > now {
                    // its lease ends: it may be stopped from then on
                    next = Some(next.map_or(job.lease_end, |x: f64| x.min(job.lease_end)));
                    continue;
                }
                let a = job.attained_at(now);
                let level = self.policy.las_level(a) as usize;
                if let Some(&t) = th.get(level) {
                    let at = now + (t - a) / job.gpus as f64;
                    next = Some(next.map_or(at, |x: f64| x.min(at)));
                }
            }
        }
        next
    }
}
