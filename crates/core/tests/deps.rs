//! Dependencies between jobs (Slurm's `--dependency`): held until the
//! jobs waited for end as asked, then queued; cancelled when that can no
//! longer happen.

use gigafab_core::sched::{DepKind, Wait};
use gigafab_core::{
    AllocationSpec, Category, Factory, JobSpec, JobState, Policy, PolicyKind, Reason, SchedCore,
    Throughputs,
};

fn core() -> SchedCore {
    let f = Factory::parse(
        "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 4\n",
        "t.toml",
    )
    .unwrap();
    let mut p = Policy::new(PolicyKind::Fairshare);
    p.backfill_interval_s = 0.0;
    p.preemption = false;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c.track_waits(true);
    c
}

fn job(id: &str, t: f64, gpus: u32) -> JobSpec {
    let mut s = JobSpec::simple(id, t, gpus, 100.0);
    s.time_limit_s = Some(100.0);
    s
}

#[test]
fn a_job_waits_for_its_dependency_then_starts_in_the_pass_that_frees_it() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 1), 0, 0.0);
    let b = c.submit_after(&job("b", 0.0, 1), 0, 0.0, &[(DepKind::AfterOk, a)]);
    // the fleet has room for both: b is held all the same
    assert_eq!(c.schedule(0.0).started, vec![a]);
    assert_eq!(c.wait_of(b), Some(Wait::Dependency));
    assert_eq!(c.held_for(b), Some(&[(DepKind::AfterOk, a)][..]));
    assert_eq!(c.queued(), 0, "a held job is in no queue");
    c.check_invariants().unwrap();
    c.end_run(a, 30.0, JobState::Completed);
    assert_eq!(c.schedule(30.0).started, vec![b]);
    assert_eq!(c.jobs[b as usize].first_start, Some(30.0));
    assert_eq!(c.held_count(), 0);
    c.check_invariants().unwrap();
}

#[test]
fn ends_that_can_never_satisfy_cancel_and_release_in_a_chain() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 1), 0, 0.0);
    // b needs a to succeed; c runs if b did not; d after anything of c
    let b = c.submit_after(&job("b", 0.0, 1), 0, 0.0, &[(DepKind::AfterOk, a)]);
    let x = c.submit_after(&job("c", 0.0, 1), 0, 0.0, &[(DepKind::AfterNotOk, b)]);
    let d = c.submit_after(&job("d", 0.0, 1), 0, 0.0, &[(DepKind::AfterAny, x)]);
    assert_eq!(c.schedule(0.0).started, vec![a]);
    c.end_run(a, 10.0, JobState::Failed);
    let dec = c.schedule(10.0).clone();
    // b can never run: cancelled, which satisfies c at once
    assert_eq!(
        dec.cancelled,
        vec![(b, Reason::DependencyNeverSatisfied)],
        "{dec:?}"
    );
    assert_eq!(dec.started, vec![x]);
    assert_eq!(c.wait_of(d), Some(Wait::Dependency));
    c.end_run(x, 20.0, JobState::TimedOut);
    assert_eq!(c.schedule(20.0).started, vec![d]);
    c.check_invariants().unwrap();
}

#[test]
fn dependencies_already_settled_at_submission_are_not_waited_for() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 1), 0, 0.0);
    c.schedule(0.0);
    c.end_run(a, 5.0, JobState::Completed);
    let ok = c.submit_after(&job("ok", 6.0, 1), 0, 6.0, &[(DepKind::AfterOk, a)]);
    let never = c.submit_after(&job("never", 6.0, 1), 0, 6.0, &[(DepKind::AfterNotOk, a)]);
    let unknown = c.submit_after(&job("u", 6.0, 1), 0, 6.0, &[(DepKind::AfterAny, 999)]);
    assert_eq!(c.wait_of(ok), Some(Wait::Turn), "queued at once");
    // the others are cancelled at the next pass, as decisions
    let dec = c.schedule(6.0).clone();
    assert_eq!(dec.started, vec![ok]);
    assert_eq!(
        dec.cancelled,
        vec![
            (never, Reason::DependencyNeverSatisfied),
            (unknown, Reason::DependencyNeverSatisfied)
        ]
    );
    for j in [never, unknown] {
        assert_eq!(c.jobs[j as usize].state, JobState::Cancelled);
    }
    assert_eq!(c.held_count(), 0);
}

#[test]
fn a_held_job_is_withdrawn_like_any_waiting_job() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 1), 0, 0.0);
    let b = c.submit_after(&job("b", 0.0, 1), 0, 0.0, &[(DepKind::AfterAny, a)]);
    c.schedule(0.0);
    assert!(c.withdraw(b, 1.0));
    assert_eq!(c.held_count(), 0);
    c.end_run(a, 2.0, JobState::Completed);
    assert!(c.schedule(2.0).started.is_empty());
    assert_eq!(c.jobs[b as usize].reason, Some(Reason::Withdrawn));
    c.check_invariants().unwrap();
}

#[test]
fn a_cancellation_in_the_pass_releases_its_dependents_in_that_call() {
    let mut c = core();
    let mut b = AllocationSpec::open("b", Category::Academia);
    b.valid_until_s = Some(5.0);
    let bi = c.add_allocation(b);
    // the fleet is full; x (allocation b) waits, y waits for x to fail
    let full = c.submit(&job("full", 0.0, 8), 0, 0.0);
    let x = c.submit(&job("x", 0.0, 1), bi, 0.0);
    let y = c.submit_after(&job("y", 0.0, 1), 0, 0.0, &[(DepKind::AfterNotOk, x)]);
    assert_eq!(c.schedule(0.0).started, vec![full]);
    c.end_run(full, 10.0, JobState::Completed);
    // at 10 s b has expired: x is cancelled in the pass, and y starts in
    // the same call (nothing else would call again at 10 s)
    let dec = c.schedule(10.0).clone();
    assert_eq!(
        dec.cancelled,
        vec![(x, Reason::AllocationExpired)],
        "{dec:?}"
    );
    assert_eq!(dec.started, vec![y], "{dec:?}");
    c.check_invariants().unwrap();
}
