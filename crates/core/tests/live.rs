//! The scheduler calls a live control plane makes: withdraw, end a run
//! with a given state, restore running jobs after a restart, drain and
//! resume nodes, tell "waits for capacity" from "waits for its turn".

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
    c
}

fn job(id: &str, t: f64, gpus: u32) -> JobSpec {
    let mut s = JobSpec::simple(id, t, gpus, 100.0);
    s.time_limit_s = Some(100.0);
    s
}

#[test]
fn withdrawn_jobs_never_start() {
    let mut c = core();
    let big = c.submit(&job("big", 0.0, 8), 0, 0.0);
    let w = c.submit(&job("w", 0.0, 4), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![big]);
    assert!(c.withdraw(w, 1.0));
    assert!(!c.withdraw(w, 1.0), "only a waiting job is withdrawn");
    assert_eq!(c.jobs[w as usize].state, JobState::Cancelled);
    assert_eq!(c.jobs[w as usize].reason, Some(Reason::Withdrawn));
    assert_eq!(c.queued(), 0);
    c.end_run(big, 10.0, JobState::Completed);
    assert!(c.schedule(10.0).started.is_empty());
    assert_eq!(c.busy_accelerators(), 0);
}

#[test]
fn end_run_takes_the_given_state_and_frees_accelerators() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 4), 0, 0.0);
    let b = c.submit(&job("b", 0.0, 8), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![a]);
    assert!(!c.fits_now(b), "b waits for capacity");
    // the run failed long before its planned end
    c.end_run(a, 5.0, JobState::Failed);
    assert_eq!(c.jobs[a as usize].state, JobState::Failed);
    assert_eq!(c.jobs[a as usize].end_s, Some(5.0));
    assert!((c.jobs[a as usize].attained_gpu_s - 20.0).abs() < 1e-9);
    assert!(c.fits_now(b));
    assert_eq!(c.schedule(5.0).started, vec![b]);
    // ending a job that is not running changes nothing
    c.end_run(a, 6.0, JobState::Completed);
    assert_eq!(c.jobs[a as usize].state, JobState::Failed);
}

#[test]
fn restored_runs_hold_their_accelerators() {
    let mut c = core();
    // node 1 fully used by a run that started before the restart
    let r = c.restore_running(&job("r", 0.0, 4), 0, 0, &[(1, 4)], 50.0);
    assert_eq!(c.jobs[r as usize].state, JobState::Running);
    assert_eq!(c.jobs[r as usize].run_start, 50.0);
    assert_eq!(c.n_running, 1);
    assert!(
        c.decisions().started.is_empty(),
        "a restore is not a start decision"
    );
    assert_eq!(c.cluster.node_state(1), (4, 0));
    let x = c.submit(&job("x", 60.0, 4), 0, 60.0);
    let y = c.submit(&job("y", 60.0, 1), 0, 60.0);
    assert_eq!(c.schedule(60.0).started, vec![x]);
    assert_eq!(c.jobs[x as usize].placement, vec![(0, 4)]);
    assert!(c.schedule(61.0).started.is_empty());
    assert!(!c.fits_now(y));
    c.end_run(r, 70.0, JobState::Completed);
    assert_eq!(c.schedule(70.0).started, vec![y]);
}

#[test]
fn drain_stops_new_starts_and_resume_brings_all_back() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 3), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![a]);
    let node = c.jobs[a as usize].placement[0].0;
    assert_eq!(c.drain(node), 1, "the one free accelerator goes down now");
    assert!(c.is_drained(node));
    // a 5-GPU job cannot start: only the other node's 4 are free
    let b = c.submit(&job("b", 1.0, 5), 0, 1.0);
    assert!(c.schedule(1.0).started.is_empty());
    // the running job ends: its accelerators stay down
    c.end_run(a, 2.0, JobState::Completed);
    assert_eq!(c.cluster.node_state(node), (0, 0));
    assert!(c.schedule(2.0).started.is_empty());
    assert_eq!(c.resume(node), 4);
    assert!(!c.is_drained(node));
    assert_eq!(c.cluster.node_state(node), (4, 4));
    assert_eq!(c.schedule(3.0).started, vec![b]);
}

#[test]
fn check_refuses_what_no_pool_can_run() {
    let mut c = core();
    assert_eq!(c.check(&job("x", 0.0, 8)), Ok(()));
    assert_eq!(c.check(&job("x", 0.0, 9)), Err(Reason::Unsatisfiable));
    let mut amd = job("x", 0.0, 1);
    amd.types = gigafab_core::TypeFilter::parse("vendor:amd").unwrap();
    assert_eq!(c.check(&amd), Err(Reason::Unsatisfiable));
    assert!(c.jobs.is_empty(), "check submits nothing");
}

/// The pass itself says why each job it did not start waits: the first
/// check that stopped it, in the pass's own order, kept for the live
/// controller's reasons.
#[test]
fn the_pass_says_why_each_job_waits() {
    use gigafab_core::sched::Wait;
    let f = Factory::parse(
        "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 4\n",
        "t.toml",
    )
    .unwrap();
    let mut p = Policy::new(PolicyKind::Fifo);
    p.preemption = false;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.track_waits(true);
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    let mut small = AllocationSpec::open("small", Category::Academia);
    small.granted_gpu_hours = Some(150.0 / 3600.0);
    c.add_allocation(small);
    let mut later = AllocationSpec::open("later", Category::Academia);
    later.valid_from_s = 1000.0;
    c.add_allocation(later);
    let a = c.submit(&job("a", 0.0, 4), 0, 0.0);
    let e = c.submit(&job("e", 0.0, 1), 1, 0.0);
    // e's 100 s limit holds 100 of small's 150 GPU-seconds: f's does not fit
    let f = c.submit(&job("f", 0.0, 1), 1, 0.0);
    // 3 accelerators are free: b does not fit, and under fifo it holds the pool
    let b = c.submit(&job("b", 0.0, 8), 0, 0.0);
    let cj = c.submit(&job("c", 0.0, 1), 0, 0.0);
    let d = c.submit(&job("d", 0.0, 1), 2, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![a, e]);
    assert_eq!(c.wait_of(a), None, "running");
    assert_eq!(c.wait_of(f), Some(Wait::AllocationReserve));
    assert_eq!(c.wait_of(b), Some(Wait::Capacity));
    assert_eq!(
        c.wait_of(cj),
        Some(Wait::Turn),
        "room for c, held for b ahead of it"
    );
    assert_eq!(c.wait_of(d), Some(Wait::AllocationWindow));
    // a pass later, the causes are that pass's: e ended, f fits its grant
    c.end_run(e, 10.0, JobState::Completed);
    assert_eq!(c.schedule(10.0).started, vec![f]);
    assert_eq!(c.wait_of(f), None);
    assert_eq!(c.wait_of(b), Some(Wait::Capacity));
    assert_eq!(c.wait_of(cj), Some(Wait::Turn));
}

/// A job the pass held back for a reservation waits for its turn, even
/// when a job backfilled after it took the room it was held from: what
/// the state after the pass shows (no room) is not why it waited.
#[test]
fn a_job_held_for_a_reservation_waits_for_its_turn() {
    use gigafab_core::sched::Wait;
    let mut c = core();
    c.track_waits(true);
    let limited = |id: &str, t: f64, gpus: u32, limit: f64| {
        let mut s = JobSpec::simple(id, t, gpus, limit);
        s.time_limit_s = Some(limit);
        s
    };
    let r = c.submit(&limited("r", 0.0, 4, 100.0), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![r]);
    let b = c.submit(&limited("b", 1.0, 8, 100.0), 0, 1.0);
    let held = c.submit(&limited("held", 1.0, 4, 200.0), 0, 1.0);
    let short = c.submit(&limited("short", 1.0, 4, 50.0), 0, 1.0);
    assert_eq!(c.schedule(1.0).started, vec![short]);
    assert_eq!(c.wait_of(b), Some(Wait::Capacity));
    assert!(!c.fits_now(held), "after the pass, no room is left for it");
    assert_eq!(
        c.wait_of(held),
        Some(Wait::Turn),
        "held for b's reservation"
    );
}
