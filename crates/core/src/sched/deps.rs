//! Dependencies between jobs, as Slurm's `--dependency`: a job submitted
//! after others is held (in no queue) until their ends allow it, then
//! queued as if submitted at that moment; when an end makes that
//! impossible, it is cancelled (`dependency_never_satisfied`), as Slurm
//! does with `kill_invalid_depend`.
//!
//! Held jobs are looked at once per pass, in job order, before anything
//! else: a job released there can start in the same pass, and a job
//! cancelled there may release others (`afterany`, `afternotok`) in the
//! same pass.

use super::{JobIdx, JobSpec, JobState, Reason, SchedCore};
use crate::ids::AllocIdx;
pub use crate::spec::DepKind;

impl DepKind {
    /// Whether a job in `state` satisfies it: Some(true) yes, Some(false)
    /// never, None not yet (it has not ended).
    pub fn satisfied_by(self, state: JobState) -> Option<bool> {
        let ok = match state {
            JobState::Waiting | JobState::Running => return None,
            JobState::Completed => true,
            JobState::Failed | JobState::TimedOut | JobState::Cancelled => false,
        };
        Some(match self {
            DepKind::AfterOk => ok,
            DepKind::AfterNotOk => !ok,
            DepKind::AfterAny => true,
        })
    }
}

/// Whether a job may be queued: Some(true) yes, Some(false) never (one of
/// its dependencies can no longer be satisfied), None not yet.
fn verdict(jobs: &[super::Job], after: &[(DepKind, JobIdx)]) -> Option<bool> {
    let mut all = true;
    for &(k, d) in after {
        match jobs.get(d as usize).map(|j| k.satisfied_by(j.state)) {
            // a job that does not exist never ends
            None | Some(Some(false)) => return Some(false),
            Some(None) => all = false,
            Some(Some(true)) => {}
        }
    }
    all.then_some(true)
}

impl SchedCore {
    /// Submits a job at `now` that may start only once the jobs of `after`
    /// have ended as asked ([`DepKind`]). Until then it is held: waiting,
    /// in no queue, [`super::Wait::Dependency`]. With nothing to wait for
    /// (or everything already ended as asked) this is
    /// [`SchedCore::submit`]; with a dependency that can never be
    /// satisfied (or a job that does not exist) the job is cancelled at
    /// the next pass, a decision like any other
    /// ([`Reason::DependencyNeverSatisfied`]).
    pub fn submit_after(
        &mut self,
        spec: &JobSpec,
        alloc: AllocIdx,
        now: f64,
        after: &[(DepKind, JobIdx)],
    ) -> JobIdx {
        let v = verdict(&self.jobs, after);
        if v == Some(true) {
            return self.submit(spec, alloc, now);
        }
        let j = self.submit_held(spec, alloc, now);
        if self.jobs[j as usize].state == JobState::Waiting {
            self.dep_held.insert(j, after.to_vec());
        }
        j
    }

    /// The dependencies job `j` is held for (None: it is not held).
    pub fn held_for(&self, j: JobIdx) -> Option<&[(DepKind, JobIdx)]> {
        self.dep_held.get(&j).map(Vec::as_slice)
    }

    /// Jobs held for dependencies.
    pub fn held_count(&self) -> usize {
        self.dep_held.len()
    }

    /// Whether some held job's dependencies are settled (it can be
    /// released or cancelled now).
    pub(super) fn held_settled(&self) -> bool {
        self.dep_held
            .values()
            .any(|after| verdict(&self.jobs, after).is_some())
    }

    /// At a pass's start: queues the held jobs whose dependencies are now
    /// satisfied, and cancels those whose can no longer be (to a fixed
    /// point: a cancellation may satisfy or doom others).
    pub(super) fn release_held(&mut self, now: f64) {
        if self.dep_held.is_empty() {
            return;
        }
        loop {
            let mut moved = false;
            let ready: Vec<(JobIdx, bool)> = self
                .dep_held
                .iter()
                .filter_map(|(&j, after)| verdict(&self.jobs, after).map(|v| (j, v)))
                .collect();
            for (j, ok) in ready {
                self.dep_held.remove(&j);
                moved = true;
                self.changes += 1;
                if ok {
                    self.jobs[j as usize].queued_at = now;
                    self.enqueue(j, now);
                } else {
                    self.cancel_in_pass(j, Reason::DependencyNeverSatisfied, now);
                }
            }
            if !moved {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_read_ends_as_slurm_does() {
        use JobState::*;
        for (k, ok, bad) in [
            (DepKind::AfterOk, Some(true), Some(false)),
            (DepKind::AfterNotOk, Some(false), Some(true)),
            (DepKind::AfterAny, Some(true), Some(true)),
        ] {
            assert_eq!(k.satisfied_by(Completed), ok);
            for s in [Failed, TimedOut, Cancelled] {
                assert_eq!(k.satisfied_by(s), bad);
            }
            assert_eq!(k.satisfied_by(Waiting), None);
            assert_eq!(k.satisfied_by(Running), None);
            assert_eq!(DepKind::parse(k.code()), Some(k));
        }
        assert_eq!(DepKind::parse("after"), None);
    }
}
