//! Why waiting jobs wait, as the pass found it: each job the pass reaches
//! and does not start gets the cause that stopped it there (the way a
//! filter's rejection says why a pod waits), not a cause guessed again
//! after the pass. Recorded only when asked ([`SchedCore::track_waits`]:
//! the live controller shows reasons, the twin does not need them).

use super::*;

/// Why a waiting job did not start at the last pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wait {
    /// Its turn: jobs ahead of it come first (queue order, their
    /// reservations, the pass's test limit), or the pass did not reach it.
    #[default]
    Turn,
    /// No candidate pool has a free gang of its size.
    Capacity,
    /// Its allocation's validity window has not opened.
    AllocationWindow,
    /// The time limits of its allocation's running jobs hold the rest of
    /// the grant.
    AllocationReserve,
    /// A pool had room but its site's power budget did not.
    Power,
    /// Deferred to a lower-carbon hour (carbon-aware starts).
    Carbon,
    /// A long gang that would fit only on suspect nodes, which it avoids.
    Suspect,
    /// Held for jobs it depends on ([`SchedCore::submit_after`]).
    Dependency,
}

impl SchedCore {
    /// Records, from now on, why each job the pass reaches does not start
    /// ([`SchedCore::wait_of`]).
    pub fn track_waits(&mut self, on: bool) {
        self.waits_on = on;
    }

    /// Why job `j` waited at the last pass (None: not waiting). A job the
    /// pass did not reach (a strict order stopped at a job ahead of it:
    /// the pass ended there, so the fleet is as it left it) waits for its
    /// allocation's window if that had not opened, else for capacity if no
    /// candidate pool has its accelerators free, else for its turn.
    pub fn wait_of(&self, j: JobIdx) -> Option<Wait> {
        let job = self.jobs.get(j as usize)?;
        if job.state != JobState::Waiting {
            return None;
        }
        if self.dep_held.contains_key(&j) {
            return Some(Wait::Dependency);
        }
        Some(match self.waits.get(j as usize) {
            Some(&(pass, w)) if pass == self.wait_pass => w,
            _ if self.allocs[job.alloc as usize].spec.valid_from_s > self.wait_now => {
                Wait::AllocationWindow
            }
            _ => self.turn_or_capacity(job.cands, job.gpus),
        })
    }

    /// A job with no pool of its own to start on: its turn if one of its
    /// candidate pools has its accelerators free (they are held for jobs
    /// ahead of it), else capacity.
    fn turn_or_capacity(&self, cl: u32, gpus: u32) -> Wait {
        let free = self.cand_lists[cl as usize]
            .pools
            .iter()
            .any(|&(p, _)| self.cluster.pools[p as usize].may_fit(gpus));
        if free { Wait::Turn } else { Wait::Capacity }
    }

    /// Starts a pass's record.
    #[inline]
    pub(super) fn waits_begin(&mut self, now: f64) {
        if self.waits_on {
            self.wait_pass = self.wait_pass.wrapping_add(1);
            self.wait_now = now;
        }
    }

    #[inline]
    pub(super) fn note_wait(&mut self, j: JobIdx, w: Wait) {
        if self.waits_on {
            let ju = j as usize;
            if self.waits.len() <= ju {
                self.waits.resize(ju + 1, (0, Wait::Turn));
            }
            self.waits[ju] = (self.wait_pass, w);
        }
    }

    /// A job the pass passed over without trying its pools (they are
    /// blocked for a job ahead, or a backfill pass found no room once the
    /// reservations are counted): see `turn_or_capacity`.
    pub(super) fn note_no_room(&mut self, q: &Queued) {
        if self.waits_on {
            let w = self.turn_or_capacity(q.cl, q.gpus);
            self.note_wait(q.j, w);
        }
    }
}
