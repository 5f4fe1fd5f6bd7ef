//! The starvation bound (issue 28): under the policies that reorder by
//! attained service, a gang behind a stream of small jobs is promoted
//! once its wait reaches the bound, reserved for, and not stopped for
//! the jobs it was promoted over.

use gigafab_core::{Factory, JobSpec, JobState, Policy, PolicyKind, Throughputs};
use gigafab_twin::{SimConfig, SimOutput, simulate};

/// One pool of 16 accelerators (2 nodes of 8).
fn factory() -> Factory {
    Factory::parse(
        "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\n\
         accelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 8\n",
        "t.toml",
    )
    .unwrap()
}

/// A 1-accelerator job of 30 minutes every 100 s for 24 hours (18
/// accelerators' worth of work on 16: the queue never empties), and an
/// 8-accelerator job of 2 hours submitted 4 hours in, when the pool is
/// full.
fn stream(preemptible: bool) -> Vec<JobSpec> {
    let mut jobs: Vec<JobSpec> = (0..864)
        .map(|i| {
            let mut j = JobSpec::simple(format!("s{i}"), i as f64 * 100.0, 1, 1800.0);
            j.preemptible = preemptible;
            j
        })
        .collect();
    let mut g = JobSpec::simple("gang", 4.0 * 3600.0, 8, 7200.0);
    g.preemptible = true;
    jobs.push(g);
    jobs
}

fn run(p: Policy, jobs: Vec<JobSpec>) -> SimOutput {
    simulate(
        factory(),
        p,
        Throughputs::new(),
        jobs,
        &[],
        &SimConfig::default(),
        &mut |_, _| {},
    )
    .unwrap()
}

/// The gang's wait, and its run from its first start to its end.
fn gang(out: &SimOutput) -> (f64, f64, u32) {
    let g = out.core.jobs.iter().find(|j| j.id == "gang").unwrap();
    assert_eq!(g.state, JobState::Completed, "{g:?}");
    let start = g.first_start.unwrap();
    (start - g.submit_s, g.end_s.unwrap() - start, g.restarts)
}

/// The report's longest time in the queue of the 5-8 accelerator class.
fn queued_of_gangs(out: &SimOutput) -> f64 {
    let c = out.report.sizes.iter().find(|c| c.class == "5-8").unwrap();
    assert_eq!(c.jobs, 1);
    c.max_queued_s
}

#[test]
fn a_gang_behind_a_stream_of_small_jobs_starts_within_the_bound() {
    for kind in [PolicyKind::Las, PolicyKind::Hetero] {
        let p = Policy::new(kind);
        let bound = p.promote_wait(0.0).expect("las and hetero have a bound");
        // without the bound the gang waits for the stream to end
        let mut off = p.clone();
        off.promote_after_s = None;
        let out = run(off, stream(true));
        let (wait, _, _) = gang(&out);
        assert!(wait > bound + 3600.0, "{kind} without the bound: {wait}");
        assert!(queued_of_gangs(&out) >= wait, "{kind}: the report shows it");
        // with it, the small jobs it was promoted over make room at once
        // (they are preemptible), and it is not stopped for them
        let out = run(p.clone(), stream(true));
        let (wait, ran, restarts) = gang(&out);
        assert!(
            wait <= bound + 1.0,
            "{kind}: waited {wait} s, bound {bound}"
        );
        assert!(wait >= bound - 1.0, "{kind}: promoted early? {wait}");
        assert_eq!(
            (ran, restarts),
            (7200.0, 0),
            "{kind}: stopped once promoted"
        );
        assert!(out.core.promotions >= 1);
        assert!(out.report.promotions >= 1);
        assert!(
            (queued_of_gangs(&out) - wait).abs() < 1.0,
            "{kind}: the 5-8 class's longest time queued is the gang's wait"
        );
        // the small jobs cannot be preempted: the gang is reserved for,
        // and starts once the runs before its reservation end
        let (wait, ran, restarts) = gang(&run(p, stream(false)));
        assert!(
            wait <= bound + 1800.0 + 1.0,
            "{kind}, small jobs not preemptible: waited {wait} s, bound {bound}"
        );
        assert_eq!((ran, restarts), (7200.0, 0), "{kind}");
    }
}

/// A job that has run waits at most `promote_knob` times its service (or
/// the floor) before it is promoted: a gang demoted and preempted by the
/// stream gets back within the bound of its own service.
#[test]
fn the_bound_grows_with_the_service_a_job_has_had() {
    let p = Policy::new(PolicyKind::Las);
    let k = p.promote_knob;
    let floor = p.promote_after_s.unwrap();
    assert_eq!(p.promote_wait(0.0), Some(floor));
    assert_eq!(p.promote_wait(floor), Some(floor.max(k * floor)));
    assert_eq!(p.promote_wait(10.0 * floor / k), Some(10.0 * floor));
    // the policies whose order is fixed by submission have no bound
    for kind in [PolicyKind::Fifo, PolicyKind::Backfill] {
        assert_eq!(Policy::new(kind).promote_wait(0.0), None, "{kind}");
    }
}
