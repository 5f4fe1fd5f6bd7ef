//! Backfill: reservations of blocked jobs and the room a backfill
//! pass may use without delaying them.

use super::*;

impl SchedCore {
    /// Computes the earliest time `gpus` accelerators are free in `pool`
    /// from planned ends (count-based), and the accelerators to spare then;
    /// None when that is later than `bound`. (Kept out of the pass's body:
    /// its walk over the running jobs is hot and is compiled best alone.)
    #[inline(never)]
    pub(super) fn reservation(
        &self,
        pool: PoolIdx,
        gpus: u32,
        now: f64,
        bound: f64,
    ) -> Option<Reservation> {
        let ps = &self.cluster.pools[pool as usize];
        let need = gpus as u64;
        // powered-down accelerators come up on demand
        let mut acc = ps.free_total + self.off_accelerators(pool);
        let running = &self.running_by_end[pool as usize];
        if acc >= need {
            // enough in total but fragmented: wait for the next release
            let shadow = running
                .iter()
                .next()
                .map(|&(e, _, _)| f64::from_bits(e).max(now))
                .unwrap_or(now);
            return (shadow <= bound).then_some(Reservation { shadow, extra: 0 });
        }
        let mut ends = running.iter().peekable();
        while let Some(&(e, _, g)) = ends.next() {
            let t = f64::from_bits(e);
            if t > bound {
                return None;
            }
            acc += g as u64;
            if acc >= need {
                // every job that ends at that same instant frees its
                // accelerators too: they are spare for backfill
                while let Some(&&(e2, _, g2)) = ends.peek() {
                    if e2 != e {
                        break;
                    }
                    acc += g2 as u64;
                    ends.next();
                }
                return Some(Reservation {
                    shadow: t.max(now),
                    extra: acc - need,
                });
            }
        }
        (bound == f64::INFINITY).then_some(Reservation {
            shadow: f64::INFINITY,
            extra: 0,
        })
    }

    /// Reserves for a promoted job that cannot start (the starvation
    /// bound): on the candidate pool that frees up first among those not
    /// reserved for already, held against preemption and migration too.
    /// False if every candidate pool has its reservation.
    pub(super) fn reserve_first_free(&mut self, cl: usize, gpus: u32, now: f64) -> bool {
        let mut best: Option<(PoolIdx, Reservation)> = None;
        for &(p, _) in &self.cand_lists[cl].pools {
            if self.reservations[p as usize].is_some() {
                continue;
            }
            let bound = best.map_or(f64::INFINITY, |(_, b)| b.shadow);
            if let Some(r) = self.reservation(p, gpus, now, bound)
                && best.is_none_or(|(_, b)| r.shadow < b.shadow)
            {
                best = Some((p, r));
            }
        }
        let Some((p, r)) = best else {
            return false;
        };
        self.reservations[p as usize] = Some(r);
        self.held[p as usize] = true;
        true
    }

    /// Whether a candidate pool of `j` may have room for it in a backfill
    /// pass: enough free accelerators, and an end before the pool's
    /// reservation or few enough accelerators to use its spare ones. A
    /// necessary condition of the pass's own checks (a backfill pass blocks
    /// no pool).
    #[inline(always)]
    pub(super) fn room_for(&self, q: &Queued, now: f64) -> bool {
        let gpus = q.gpus as u64;
        if q.pool1 != u32::MAX {
            let pu = q.pool1 as usize;
            return gpus <= self.cluster.pools[pu].free_total + self.off_accelerators(q.pool1)
                && self.reservations[pu]
                    .is_none_or(|r| now + q.est1 <= r.shadow || gpus <= r.extra);
        }
        self.cand_lists[q.cl as usize]
            .pools
            .iter()
            .any(|&(p, factor)| {
                let pu = p as usize;
                if gpus > self.cluster.pools[pu].free_total + self.off_accelerators(p) {
                    return false;
                }
                self.reservations[pu].is_none_or(|r| {
                    let est = if q.limited { q.est } else { q.est * factor };
                    now + est <= r.shadow || gpus <= r.extra
                })
            })
    }

    /// Whether job `j`'s time limit fits in its allocation's grant now (see
    /// [`Reserve`]); jobs without a limit or a grant always fit.
    pub fn reserve_check(&self, j: JobIdx, now: f64) -> Reserve {
        let job = &self.jobs[j as usize];
        let (Some(limit), a) = (job.time_limit_s, &self.allocs[job.alloc as usize]) else {
            return Reserve::Fits;
        };
        let Some(g) = a.spec.granted_gpu_hours else {
            return Reserve::Fits;
        };
        // the dearest pool it may run on: wherever it starts, its limit fits
        let w = self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .map(|&(p, _)| self.billing(p))
            .fold(0.0, f64::max);
        let need = limit * job.gpus as f64 * w;
        let left = g * 3600.0 - a.used_total;
        if need > left + 1e-6 {
            Reserve::Never
        } else if need > left - a.reserved_at(now) + 1e-6 {
            Reserve::Wait
        } else {
            Reserve::Fits
        }
    }
}
