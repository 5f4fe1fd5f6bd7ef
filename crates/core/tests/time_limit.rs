//! A running job's new time limit (an interactive session extended): its
//! planned end moves, and backfill plans around the new end.

use gigafab_core::{
    AllocationSpec, Category, Factory, JobSpec, Policy, PolicyKind, SchedCore, Throughputs,
};

fn core() -> SchedCore {
    let f = Factory::parse(
        "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 4\n",
        "t.toml",
    )
    .unwrap();
    let mut p = Policy::new(PolicyKind::Backfill);
    p.backfill_interval_s = 0.0;
    p.preemption = false;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c
}

fn job(id: &str, t: f64, gpus: u32, limit: f64) -> JobSpec {
    let mut s = JobSpec::simple(id, t, gpus, limit);
    s.time_limit_s = Some(limit);
    s
}

#[test]
fn an_extended_job_moves_the_reservation_and_lets_a_short_job_backfill() {
    let mut c = core();
    // a holds half the fleet until 100; b needs all of it: reserved at 100
    let a = c.submit(&job("a", 0.0, 4, 100.0), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![a]);
    let b = c.submit(&job("b", 1.0, 8, 100.0), 0, 1.0);
    // c would end at 151, after b's reservation: it waits
    let x = c.submit(&job("c", 1.0, 4, 150.0), 0, 1.0);
    assert!(c.schedule(1.0).started.is_empty());
    c.check_invariants().unwrap();
    // a is extended to 300 s: b's reservation moves, c fits before it
    c.set_time_limit(a, 300.0);
    assert_eq!(c.jobs[a as usize].est_end, 300.0);
    assert_eq!(c.jobs[a as usize].time_limit_s, Some(300.0));
    c.check_invariants().unwrap();
    assert_eq!(c.schedule(2.0).started, vec![x]);
    assert!(c.jobs[b as usize].first_start.is_none());
    c.check_invariants().unwrap();
}

#[test]
fn a_queued_jobs_new_limit_is_planned_with_when_it_starts() {
    let mut c = core();
    let a = c.submit(&job("a", 0.0, 8, 100.0), 0, 0.0);
    c.set_time_limit(a, 50.0);
    assert_eq!(c.schedule(0.0).started, vec![a]);
    assert_eq!(c.jobs[a as usize].est_end, 50.0);
    c.check_invariants().unwrap();
}

#[test]
fn an_extension_is_held_against_the_grant_and_given_back_at_the_end() {
    let mut c = core();
    let mut spec = AllocationSpec::open("g", Category::Academia);
    spec.granted_gpu_hours = Some(1.0);
    let g = c.add_allocation(spec);
    let a = c.submit(&job("a", 0.0, 1, 1000.0), g, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![a]);
    // 3600 s granted, 1000 held by its limit
    assert_eq!(c.extension_room_s(a, 0.0), Some(2600.0));
    c.set_time_limit(a, 3000.0);
    assert_eq!(c.extension_room_s(a, 0.0), Some(600.0));
    // 500 s later: 500 used, 2500 still held
    assert_eq!(c.extension_room_s(a, 500.0), Some(600.0));
    // a second job of the allocation that would need more than is free
    // waits for the first's end
    let b = c.submit(&job("b", 500.0, 1, 700.0), g, 500.0);
    assert!(c.schedule(500.0).started.is_empty());
    c.end_run(a, 800.0, gigafab_core::JobState::Completed);
    c.check_invariants().unwrap();
    assert_eq!(c.schedule(800.0).started, vec![b]);
}
