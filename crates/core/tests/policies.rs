//! Each policy's defining behaviour, driven through the scheduler API with
//! hand-made clocks.

use gigafab_core::{
    AllocationSpec, Category, Factory, JobSpec, JobState, Policy, PolicyKind, SchedCore,
    Throughputs,
};

fn factory(pools: &[(&str, &str, u32, u32)]) -> Factory {
    let mut s = String::from("name = \"t\"\n[[sites]]\nname = \"s\"\n");
    for (name, acc, nodes, per) in pools {
        s.push_str(&format!(
            "[[sites.pools]]\nname = \"{name}\"\naccelerator = \"{acc}\"\nnodes = {nodes}\naccelerators_per_node = {per}\n"
        ));
    }
    Factory::parse(&s, "t.toml").unwrap()
}

fn core(kind: PolicyKind, f: Factory) -> SchedCore {
    core_with(Policy::new(kind), f)
}

fn core_with(mut p: Policy, f: Factory) -> SchedCore {
    p.backfill_interval_s = 0.0;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c.add_allocation(AllocationSpec::open("b", Category::Startup));
    c
}

fn submit(c: &mut SchedCore, alloc: &str, id: &str, t: f64, gpus: u32, dur: f64) -> u32 {
    let a = c.allocation(alloc).unwrap();
    c.submit(&JobSpec::simple(id, t, gpus, dur), a, t)
}

fn started(c: &mut SchedCore, now: f64) -> Vec<String> {
    let d = c.schedule(now).started.clone();
    c.check_invariants().unwrap();
    d.iter().map(|&j| c.jobs[j as usize].id.clone()).collect()
}

#[test]
fn gang_never_starts_partially() {
    let mut c = core(PolicyKind::Fifo, factory(&[("p", "h100", 2, 8)]));
    submit(&mut c, "a", "one", 0.0, 1, 100.0);
    assert_eq!(started(&mut c, 0.0), ["one"]);
    submit(&mut c, "a", "gang", 1.0, 16, 100.0);
    assert!(started(&mut c, 1.0).is_empty());
    assert_eq!(c.busy_accelerators(), 1);
    assert_eq!(c.jobs[1].state, JobState::Waiting);
    c.finish(0, 100.0);
    assert_eq!(started(&mut c, 100.0), ["gang"]);
    let pl = &c.jobs[1].placement;
    assert_eq!(pl.iter().map(|x| x.1 as u32).sum::<u32>(), 16);
    assert_eq!(pl.len(), 2);
}

/// A 6-GPU job runs until t=100; an 8-GPU head job waits for it. A 2-GPU
/// job that ends before t=100 may start; one that would end after may not.
fn backfill_scenario(kind: PolicyKind) -> (Vec<String>, SchedCore) {
    let mut c = core(kind, factory(&[("p", "h100", 1, 8)]));
    submit(&mut c, "a", "running", 0.0, 6, 100.0);
    assert_eq!(started(&mut c, 0.0), ["running"]);
    submit(&mut c, "a", "head", 1.0, 8, 50.0);
    submit(&mut c, "a", "long", 2.0, 2, 500.0);
    submit(&mut c, "a", "short", 3.0, 2, 50.0);
    let s = started(&mut c, 3.0);
    (s, c)
}

#[test]
fn backfill_starts_small_job_without_delaying_head() {
    let (s, mut c) = backfill_scenario(PolicyKind::Backfill);
    assert_eq!(s, ["short"]);
    // the head starts exactly when the running job ends
    c.finish(0, 100.0);
    assert!(started(&mut c, 100.0).is_empty()); // "short" still holds 2 until 53
    let short = c.jobs.iter().position(|j| j.id == "short").unwrap() as u32;
    c.finish(short, 53.0);
    // finishing order in real time: short at 53, then running at 100
    let mut c2 = backfill_scenario(PolicyKind::Backfill).1;
    c2.finish(short, 53.0);
    assert!(
        started(&mut c2, 53.0).is_empty(),
        "long must not take the head's GPUs"
    );
    c2.finish(0, 100.0);
    assert_eq!(started(&mut c2, 100.0), ["head"]);
}

/// EASY with ties: two running jobs of 2 end together at t=100 on 5
/// accelerators; the head needs 3, so at t=100 two are spare. A 1-GPU job
/// that runs past t=100 fits in them and starts now; a 3-GPU one does not.
#[test]
fn backfill_counts_every_job_that_ends_at_the_shadow_time() {
    for kind in [PolicyKind::Backfill, PolicyKind::Fairshare] {
        let mut c = core(kind, factory(&[("p", "h100", 1, 5)]));
        submit(&mut c, "a", "r1", 0.0, 2, 100.0);
        submit(&mut c, "a", "r2", 0.0, 2, 100.0);
        assert_eq!(started(&mut c, 0.0), ["r1", "r2"]);
        submit(&mut c, "a", "head", 1.0, 3, 50.0);
        submit(&mut c, "a", "wide", 2.0, 3, 500.0);
        submit(&mut c, "a", "small", 3.0, 1, 500.0);
        assert_eq!(started(&mut c, 3.0), ["small"], "{kind:?}");
        // and the head still starts when the two end
        c.finish(0, 100.0);
        c.finish(1, 100.0);
        assert_eq!(started(&mut c, 100.0), ["head"], "{kind:?}");
    }
}

#[test]
fn fifo_does_not_backfill() {
    let (s, _) = backfill_scenario(PolicyKind::Fifo);
    assert!(s.is_empty());
}

#[test]
fn fairshare_favours_under_served_allocation() {
    let run = |kind| {
        let mut c = core(kind, factory(&[("p", "h100", 1, 8)]));
        submit(&mut c, "a", "a1", 0.0, 8, 1000.0);
        assert_eq!(started(&mut c, 0.0), ["a1"]);
        submit(&mut c, "a", "a2", 10.0, 8, 100.0);
        submit(&mut c, "b", "b1", 20.0, 8, 100.0);
        started(&mut c, 20.0);
        c.finish(0, 1000.0);
        started(&mut c, 1000.0)
    };
    assert_eq!(run(PolicyKind::Backfill), ["a2"]);
    assert_eq!(run(PolicyKind::Fairshare), ["b1"]);
}

/// LAS at t=1000 preempts a job that ran 1,000 s (checkpoints every 600 s)
/// for a new one; returns the scheduler and the decisions.
fn las_preemption(checkpoint_on_preempt: bool) -> (SchedCore, gigafab_core::Decisions) {
    preemption_by_attained(PolicyKind::Las, checkpoint_on_preempt)
}

fn preemption_by_attained(
    kind: PolicyKind,
    checkpoint_on_preempt: bool,
) -> (SchedCore, gigafab_core::Decisions) {
    let mut p = Policy::new(kind);
    p.checkpoint_on_preempt = checkpoint_on_preempt;
    let mut c = core_with(p, factory(&[("p", "h100", 1, 8)]));
    let a = c.allocation("a").unwrap();
    let mut long = JobSpec::simple("long", 0.0, 8, 100_000.0);
    long.preemptible = true;
    long.checkpoint_s = Some(600.0);
    c.submit(&long, a, 0.0);
    assert_eq!(started(&mut c, 0.0), ["long"]);
    let mut new = JobSpec::simple("new", 1000.0, 4, 10.0);
    new.preemptible = true;
    c.submit(&new, a, 1000.0);
    let d = c.schedule(1000.0).clone();
    (c, d)
}

#[test]
fn a_preempted_job_keeps_its_progress_and_pays_a_restore() {
    let (mut c, d) = las_preemption(true);
    assert_eq!(d.preempted.len(), 1);
    // it checkpoints as it stops: nothing lost, all 1,000 s kept
    assert!(d.preempted[0].1.abs() < 1e-9, "{:?}", d.preempted);
    assert!((c.jobs[0].done - 1000.0 / 100_000.0).abs() < 1e-12);
    assert_eq!(c.jobs[0].restore_s, 30.0);
    // it runs again for what is left plus the restore
    let new = d.started[0];
    c.finish(new, 1010.0);
    assert_eq!(started(&mut c, 1010.0), ["long"]);
    let (run, _) = c.jobs[0].planned_run();
    assert!((run - (99_000.0 + 30.0)).abs() < 1e-6, "{run}");
    // stopped again 20 s later (still restoring), it keeps no new work
    let mut other = JobSpec::simple("other", 1030.0, 4, 10.0);
    other.preemptible = true;
    let a = c.allocation("a").unwrap();
    c.submit(&other, a, 1030.0);
    let d = c.schedule(1030.0).clone();
    assert_eq!(d.preempted.len(), 1);
    assert!((c.jobs[0].done - 1000.0 / 100_000.0).abs() < 1e-12);
    assert!(
        (d.preempted[0].1 - 8.0 * 20.0).abs() < 1e-9,
        "{:?}",
        d.preempted
    );
}

#[test]
fn las_preempts_job_with_most_attained_service() {
    let (c, d) = las_preemption(false);
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].0, 0);
    // 1000 s run, checkpoint at 600: 400 s x 8 GPUs lost
    assert!((d.preempted[0].1 - 3200.0).abs() < 1e-9);
    assert_eq!(c.jobs[d.started[0] as usize].id, "new");
    assert!((c.jobs[0].done - 600.0 / 100_000.0).abs() < 1e-12);
    assert_eq!(c.jobs[0].state, JobState::Waiting);
}

#[test]
fn priority_preemption_spares_non_preemptible_jobs() {
    let mut p = Policy::new(PolicyKind::Backfill);
    p.checkpoint_on_preempt = false;
    let mut c = core_with(p, factory(&[("p", "h100", 2, 8)]));
    let a = c.allocation("a").unwrap();
    let mut low = JobSpec::simple("low", 0.0, 8, 1000.0);
    low.preemptible = true;
    c.submit(&low, a, 0.0);
    c.submit(&JobSpec::simple("fixed", 0.0, 8, 1000.0), a, 0.0);
    assert_eq!(started(&mut c, 0.0).len(), 2);
    let mut high = JobSpec::simple("high", 5.0, 8, 10.0);
    high.priority = 10;
    c.submit(&high, a, 5.0);
    let d = c.schedule(5.0).clone();
    assert_eq!(d.preempted.iter().map(|p| p.0).collect::<Vec<_>>(), [0]);
    // no checkpoint: the whole run is lost
    assert!((d.preempted[0].1 - 40.0).abs() < 1e-9);
    assert_eq!(c.jobs[d.started[0] as usize].id, "high");
    // a second high-priority job finds nothing preemptible
    let mut high2 = high.clone();
    high2.id = "high2".into();
    c.submit(&high2, a, 6.0);
    let d = c.schedule(6.0).clone();
    assert!(d.preempted.is_empty() && d.started.is_empty());
}

#[test]
fn hetero_places_on_best_throughput_per_billing_unit() {
    let f = factory(&[("old", "k80", 1, 4), ("new", "v100", 1, 4)]);
    let mut t = Throughputs::new();
    t.insert("resnet", "k80", 1, 1.0);
    t.insert("resnet", "v100", 1, 10.0);
    let mut spec = JobSpec::simple("j", 0.0, 1, 0.0);
    spec.duration_s = None;
    spec.steps = Some(1000.0);
    spec.job_type = Some("resnet".into());
    for (kind, pool, runtime) in [
        (PolicyKind::Fifo, 0, 1000.0),
        (PolicyKind::Hetero, 1, 100.0),
    ] {
        let mut c = SchedCore::new(f.clone(), Policy::new(kind), t.clone());
        let a = c.add_allocation(AllocationSpec::open("a", Category::Academia));
        c.submit(&spec, a, 0.0);
        c.schedule(0.0);
        assert_eq!(c.jobs[0].run_pool, pool, "{kind}");
        assert!((c.jobs[0].planned_run().0 - runtime).abs() < 1e-9);
    }
}

#[test]
fn type_constraints_and_unsatisfiable_jobs() {
    let mut c = core(
        PolicyKind::Fifo,
        factory(&[("n", "h100", 1, 8), ("m", "mi300x", 1, 8)]),
    );
    let a = c.allocation("a").unwrap();
    let mut amd = JobSpec::simple("amd", 0.0, 4, 10.0);
    amd.types = gigafab_core::TypeFilter::parse("vendor:amd").unwrap();
    c.submit(&amd, a, 0.0);
    let mut big = JobSpec::simple("big", 0.0, 4, 10.0);
    big.types = gigafab_core::TypeFilter::parse("mem>=150").unwrap();
    c.submit(&big, a, 0.0);
    let j = c.submit(&JobSpec::simple("huge", 0.0, 9, 10.0), a, 0.0);
    assert_eq!(c.jobs[j as usize].state, JobState::Cancelled);
    assert_eq!(c.jobs[j as usize].reason.unwrap().code(), "unsatisfiable");
    c.schedule(0.0);
    assert_eq!(c.jobs[0].run_pool, 1);
    assert_eq!(c.jobs[1].run_pool, 1);
}

#[test]
fn failure_requeues_hit_job_from_checkpoint() {
    let mut c = core(PolicyKind::Fifo, factory(&[("p", "h100", 1, 8)]));
    let a = c.allocation("a").unwrap();
    let mut j = JobSpec::simple("j", 0.0, 8, 1000.0);
    j.checkpoint_s = Some(100.0);
    c.submit(&j, a, 0.0);
    c.schedule(0.0);
    let out = c.fail_accelerator(0, 3, 250.0);
    match out {
        gigafab_core::FailOutcome::Hit {
            job, lost_gpu_s, ..
        } => {
            assert_eq!(job, 0);
            assert!((lost_gpu_s - 400.0).abs() < 1e-9);
        }
        o => panic!("{o:?}"),
    }
    assert!((c.jobs[0].done - 0.2).abs() < 1e-12);
    assert_eq!(c.usable_accelerators(), 7);
    // cannot restart on 7 accelerators; can after repair
    assert!(c.schedule(250.0).started.is_empty());
    assert!(c.repair(0));
    assert_eq!(c.schedule(300.0).started, [0]);
    // the rest of its work, after restoring its checkpoint
    let restore = c.policy.restore_overhead_s;
    assert!((c.jobs[0].planned_run().0 - (800.0 + restore)).abs() < 1e-9);
}

#[test]
fn allocation_limits_are_enforced() {
    let mut c = core(PolicyKind::Fifo, factory(&[("p", "h100", 1, 8)]));
    let mut spec = AllocationSpec::open("small", Category::Sme);
    spec.granted_gpu_hours = Some(1.0);
    let small = c.add_allocation(spec);
    let mut spec = AllocationSpec::open("late", Category::Public);
    spec.valid_from_s = 500.0;
    spec.valid_until_s = Some(600.0);
    let late = c.add_allocation(spec);
    c.submit(&JobSpec::simple("s1", 0.0, 8, 3600.0), small, 0.0);
    c.submit(&JobSpec::simple("l1", 0.0, 1, 10.0), late, 0.0);
    let d = c.schedule(0.0).clone();
    assert_eq!(d.started, [0]);
    assert_eq!(d.wakeup, Some(500.0));
    c.finish(0, 3600.0); // used 8 GPU-hours of 1
    c.submit(&JobSpec::simple("s2", 3600.0, 1, 10.0), small, 3600.0);
    let d = c.schedule(3600.0).clone();
    let codes: Vec<_> = d.cancelled.iter().map(|(j, r)| (*j, r.code())).collect();
    assert_eq!(
        codes,
        [(1, "allocation_expired"), (2, "allocation_exhausted")]
    );
}

/// A backfill pass over an unchanged state starts nothing: the scheduler
/// asks to be woken for the next backfill tick only after a change, and
/// the ticks keep their phase across the ones it skipped.
#[test]
fn backfill_ticks_are_skipped_while_nothing_changes() {
    let mut p = Policy::new(PolicyKind::Backfill);
    p.backfill_interval_s = 30.0;
    let mut c = SchedCore::new(factory(&[("p", "h100", 1, 8)]), p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    submit(&mut c, "a", "running", 0.0, 8, 100_000.0);
    assert_eq!(started(&mut c, 0.0), ["running"]);
    submit(&mut c, "a", "waiting", 1.0, 4, 100.0);
    // the pass at 1 s is a main pass (the last backfill ran at 0): woken
    // for the tick at 30 s
    assert!(started(&mut c, 1.0).is_empty());
    assert_eq!(c.decisions().wakeup, Some(30.0));
    // the backfill pass at 30 s starts nothing and nothing changed since
    // it began: no tick to wake for
    assert!(started(&mut c, 30.0).is_empty());
    assert_eq!(c.decisions().wakeup, None);
    // a submission at 100 s: a main pass (the tick phase is 30, 60, 90,
    // 120, ...), woken for the tick at 120 s
    submit(&mut c, "a", "another", 100.0, 2, 50.0);
    assert!(started(&mut c, 100.0).is_empty());
    assert_eq!(c.decisions().wakeup, Some(120.0));
}

/// `hetero` preempts as LAS does: the job with the most attained service
/// makes room for a new one (it did not preempt at all before).
#[test]
fn hetero_preempts_by_attained_service() {
    let (c, d) = preemption_by_attained(PolicyKind::Hetero, true);
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(d.preempted[0].0, 0);
    assert_eq!(c.jobs[d.started[0] as usize].id, "new");
}

/// LAS stops a preemptible run when it is demoted below a waiting job: the
/// pass asks to be called at the moment of the demotion, so the decision
/// does not wait for (or depend on) the next unrelated event.
#[test]
fn las_wakes_up_when_a_running_job_is_demoted() {
    let mut c = core(PolicyKind::Las, factory(&[("p", "h100", 1, 8)]));
    let a = c.allocation("a").unwrap();
    // 8 GPUs: the first level ends at 3,600 GPU-s, i.e. 450 s of run
    let mut long = JobSpec::simple("long", 0.0, 8, 100_000.0);
    long.preemptible = true;
    c.submit(&long, a, 0.0);
    assert_eq!(started(&mut c, 0.0), ["long"]);
    // a job of the same level waits: no preemption yet
    let mut waiting = JobSpec::simple("waiting", 100.0, 8, 10.0);
    waiting.preemptible = true;
    c.submit(&waiting, a, 100.0);
    let d = c.schedule(100.0).clone();
    assert!(d.preempted.is_empty() && d.started.is_empty());
    assert_eq!(d.wakeup, Some(450.0), "woken at the demotion");
    // at the demotion the waiting job, of a higher level now, takes over
    let d = c.schedule(450.0).clone();
    assert_eq!(d.preempted.len(), 1);
    assert_eq!(c.jobs[d.started[0] as usize].id, "waiting");
}

/// With `migrate`, a preemptible job running on a slow type moves to a
/// faster one as soon as it is free, keeping its progress and paying the
/// restore overhead; without it the job keeps its slow accelerator.
#[test]
fn migrate_moves_a_running_job_to_a_faster_free_type() {
    let f = factory(&[("old", "k80", 1, 1), ("new", "v100", 1, 1)]);
    let mut t = Throughputs::new();
    t.insert("resnet", "k80", 1, 1.0);
    t.insert("resnet", "v100", 1, 10.0);
    for migrate in [false, true] {
        let mut p = Policy::new(PolicyKind::Fifo);
        p.migrate = migrate;
        let mut c = SchedCore::new(f.clone(), p, t.clone());
        let a = c.add_allocation(AllocationSpec::open("a", Category::Academia));
        let mut x = JobSpec::simple("x", 0.0, 1, 100.0);
        x.types = gigafab_core::TypeFilter::parse("v100").unwrap();
        let x = c.submit(&x, a, 0.0);
        let mut spec = JobSpec::simple("j", 0.0, 1, 0.0);
        spec.duration_s = None;
        spec.steps = Some(10_000.0);
        spec.job_type = Some("resnet".into());
        spec.preemptible = true;
        let j = c.submit(&spec, a, 0.0);
        assert_eq!(c.schedule(0.0).started, vec![x, j]);
        assert_eq!(c.jobs[j as usize].run_pool, 0, "the k80 was the free one");
        c.end_run(x, 100.0, JobState::Completed);
        let d = c.schedule(100.0).clone();
        let job = &c.jobs[j as usize];
        if migrate {
            assert_eq!(d.preempted.len(), 1, "{d:?}");
            assert_eq!(d.preempted[0].0, j);
            assert_eq!(d.started, vec![j]);
            assert_eq!(job.run_pool, 1, "moved to the v100");
            // 100 of its 10,000 k80-seconds done: 9,900 / 10 on the v100,
            // plus the restore overhead
            let (run, _) = job.planned_run();
            assert!((run - (990.0 + 30.0)).abs() < 1e-6, "{run}");
            assert_eq!(c.migrations, 1);
        } else {
            assert!(d.preempted.is_empty() && d.started.is_empty(), "{d:?}");
            assert_eq!(job.run_pool, 0);
        }
        c.check_invariants().unwrap();
    }
}

/// With `migrate`, two running jobs swap types when each gains from the
/// other's more than it loses from its own: a job that barely gains from a
/// fast type gives it up to one that gains tenfold (Gavel reaches this by
/// its rounds). Without the option each keeps where it was placed.
#[test]
fn migrate_swaps_jobs_to_the_types_they_gain_most_on() {
    let f = factory(&[("old", "k80", 1, 1), ("new", "v100", 1, 1)]);
    let mut t = Throughputs::new();
    t.insert("resnet", "k80", 1, 1.0);
    t.insert("resnet", "v100", 1, 10.0);
    t.insert("recommend", "k80", 1, 10.0);
    t.insert("recommend", "v100", 1, 8.0);
    for migrate in [false, true] {
        let mut p = Policy::new(PolicyKind::Fifo);
        p.migrate = migrate;
        let mut c = SchedCore::new(f.clone(), p, t.clone());
        let a = c.add_allocation(AllocationSpec::open("a", Category::Academia));
        let typed = |id: &str, ty: &str, steps: f64| {
            let mut s = JobSpec::simple(id, 0.0, 1, 0.0);
            s.duration_s = None;
            s.steps = Some(steps);
            s.job_type = Some(ty.into());
            s.preemptible = true;
            s
        };
        // the v100 is taken: resnet gets the k80
        let mut x = JobSpec::simple("x", 0.0, 1, 100.0);
        x.types = gigafab_core::TypeFilter::parse("v100").unwrap();
        let x = c.submit(&x, a, 0.0);
        let resnet = c.submit(&typed("resnet", "resnet", 10_000.0), a, 0.0);
        assert_eq!(c.schedule(0.0).started, vec![x, resnet]);
        // the v100 frees as the recommender arrives: it takes it
        c.end_run(x, 100.0, JobState::Completed);
        let rec = c.submit(&typed("rec", "recommend", 8_000.0), a, 100.0);
        assert_eq!(c.schedule(100.0).started, vec![rec]);
        assert_eq!(c.jobs[rec as usize].run_pool, 1);
        // swaps are looked for once a round (Gavel's 360 s): the search at
        // t = 100 found none (the recommender had only just started)
        assert!(c.schedule(200.0).started.is_empty());
        let d = c.schedule(460.0).clone();
        if migrate {
            assert_eq!(d.started, vec![resnet, rec], "{d:?}");
            assert_eq!(c.jobs[resnet as usize].run_pool, 1, "resnet on the v100");
            assert_eq!(c.jobs[rec as usize].run_pool, 0, "rec on the k80");
            // resnet: 460 of 10,000 steps done, 9,540 at 10/s; rec: 2,880
            // of 8,000 done at 8/s, 5,120 at 10/s; both restore first
            let (run, _) = c.jobs[resnet as usize].planned_run();
            assert!((run - (954.0 + 30.0)).abs() < 1e-6, "{run}");
            let (run, _) = c.jobs[rec as usize].planned_run();
            assert!((run - (512.0 + 30.0)).abs() < 1e-6, "{run}");
            assert_eq!(c.migrations, 2);
            // and they stay: a swap back would slow both
            assert!(c.schedule(900.0).started.is_empty());
        } else {
            assert!(d.preempted.is_empty() && d.started.is_empty(), "{d:?}");
            assert_eq!(c.jobs[resnet as usize].run_pool, 0);
        }
        c.check_invariants().unwrap();
    }
}

/// A queued job's estimated start: the scheduler run forward on a copy,
/// each run ending at its time limit. Behind a full pool, the first waiting
/// job starts when the running one's limit ends, and the second when the
/// first's does, under the policy's own order (fair share here); the live
/// state is left as it was.
#[test]
fn forecast_runs_the_policy_forward_through_the_planned_ends() {
    let mut c = core(PolicyKind::Fairshare, factory(&[("p", "h100", 1, 8)]));
    let limited = |id: &str, t: f64, gpus: u32, limit: f64| {
        let mut s = JobSpec::simple(id, t, gpus, limit / 2.0);
        s.time_limit_s = Some(limit);
        s
    };
    let a = c.allocation("a").unwrap();
    c.submit(&limited("running", 0.0, 8, 100.0), a, 0.0);
    assert_eq!(started(&mut c, 0.0), ["running"]);
    let first = c.submit(&limited("first", 10.0, 8, 50.0), a, 10.0);
    let second = c.submit(&limited("second", 11.0, 4, 30.0), a, 11.0);
    let never = c.submit(&limited("never", 12.0, 8, 30.0), a, 12.0);
    assert!(started(&mut c, 12.0).is_empty());
    let f = c.forecast_starts(12.0, &[second, first], 100);
    assert_eq!(f, [Some(150.0), Some(100.0)]);
    // a bound on the events run through: not within it
    assert_eq!(c.forecast_starts(12.0, &[never], 1), [None]);
    assert_eq!(c.forecast_starts(12.0, &[never], 100), [Some(180.0)]);
    // the live state is untouched
    assert_eq!(c.queued(), 3);
    assert_eq!(c.jobs[first as usize].state, JobState::Waiting);
    c.check_invariants().unwrap();
}

/// The starvation bound under fair share: a job of an allocation with a
/// far worse fair share waits behind the others' jobs of its priority
/// until its wait reaches the bound; then it goes ahead of them (and gets
/// the backfill reservation).
#[test]
fn fairshare_promotes_a_job_past_the_bound() {
    for bound in [true, false] {
        let mut p = Policy::new(PolicyKind::Fairshare);
        if !bound {
            p.promote_after_s = None;
        }
        let after = Policy::new(PolicyKind::Fairshare)
            .promote_wait(0.0)
            .unwrap();
        let mut c = core_with(p, factory(&[("p", "h100", 1, 8)]));
        let b = c.allocation("b").unwrap();
        c.restore_usage(b, 1e9);
        submit(&mut c, "a", "run", 0.0, 8, 1e7);
        assert_eq!(started(&mut c, 0.0), ["run"]);
        let b1 = submit(&mut c, "b", "b1", 1.0, 1, 100.0);
        let a1 = submit(&mut c, "a", "a1", 2.0, 1, 100.0);
        c.schedule(400.0);
        assert_eq!(c.queue_order(), vec![a1, b1], "fair share first");
        c.schedule(1.0 + after - 10.0);
        assert_eq!(c.queue_order(), vec![a1, b1], "not yet");
        c.schedule(1.0 + after);
        c.check_invariants().unwrap();
        if bound {
            assert_eq!(c.queue_order(), vec![b1, a1], "promoted");
            assert!(c.jobs[b1 as usize].promoted && !c.jobs[a1 as usize].promoted);
            assert_eq!(c.promotions, 1);
        } else {
            assert_eq!(c.queue_order(), vec![a1, b1], "no bound");
        }
    }
}

/// A victim on a drained node: its accelerators go down as it stops, so
/// the room a preemption counted on there is gone. The scheduler neither
/// panics nor starts the job on accelerators that are down; it waits.
#[test]
fn preemption_never_counts_on_a_drained_nodes_accelerators() {
    let mut c = core(PolicyKind::Las, factory(&[("p", "h100", 2, 4)]));
    let a = c.allocation("a").unwrap();
    let mut v = JobSpec::simple("v", 0.0, 4, 1e6);
    v.preemptible = true;
    let v = c.submit(&v, a, 0.0);
    let w = c.submit(&JobSpec::simple("w", 0.0, 4, 1e6), a, 0.0);
    assert_eq!(started(&mut c, 0.0).len(), 2);
    let node = c.jobs[v as usize].placement[0].0;
    assert_ne!(node, c.jobs[w as usize].placement[0].0);
    c.drain(node);
    // two hours in, v is in a lower queue than a new job
    let j = submit(&mut c, "a", "new", 7200.0, 4, 100.0);
    let d = c.schedule(7200.0).clone();
    c.check_invariants().unwrap();
    assert!(!d.started.contains(&j), "{d:?}");
    assert_eq!(c.jobs[j as usize].state, JobState::Waiting);
    assert_eq!(c.busy_accelerators(), 4, "w alone runs");
}

/// A preemption try that failed on placement (the room its victims left
/// was not where the gang could use it) does not stop a larger job of the
/// same rank from trying: it may stop more victims and fit.
#[test]
fn a_larger_gang_tries_preemption_where_a_smaller_one_did_not_fit() {
    let mut c = core(PolicyKind::Las, factory(&[("p", "h100", 2, 8)]));
    let a = c.allocation("a").unwrap();
    let pre = |id: &str, t: f64| {
        let mut s = JobSpec::simple(id, t, 4, 1e6);
        s.preemptible = true;
        s
    };
    let v1 = c.submit(&pre("v1", 0.0), a, 0.0);
    let w = c.submit(&JobSpec::simple("w", 0.0, 4, 1e6), a, 0.0);
    assert_eq!(started(&mut c, 0.0).len(), 2);
    let n0 = c.jobs[v1 as usize].placement[0].0;
    assert_eq!(
        c.jobs[w as usize].placement[0].0, n0,
        "v1 and w share a node"
    );
    let v2 = c.submit(&pre("v2", 8000.0), a, 8000.0);
    assert_eq!(started(&mut c, 8000.0).len(), 1);
    assert_ne!(c.jobs[v2 as usize].placement[0].0, n0);
    // at t = 10,000 v1 is two queues down, v2 one: a 5-GPU job can stop v1
    // but not fit in two halves of nodes; a 9-GPU job stops both and fits
    let j1 = submit(&mut c, "a", "j1", 10_000.0, 5, 100.0);
    let j2 = submit(&mut c, "a", "j2", 10_000.0, 9, 100.0);
    let d = c.schedule(10_000.0).clone();
    c.check_invariants().unwrap();
    assert!(!d.started.contains(&j1), "{d:?}");
    assert!(d.started.contains(&j2), "{d:?}");
}

/// A promoted job's lease is its wait until the bound over the knob,
/// whenever the pass that promotes it runs: the twin and a live server,
/// whose passes fall at other times, give the same lease.
#[test]
fn a_lease_does_not_depend_on_when_the_pass_runs() {
    let p = Policy::new(PolicyKind::Las);
    let due = p.promote_wait(0.0).unwrap();
    let knob = p.promote_knob;
    for late in [0.0, 500.0] {
        let mut c = core_with(p.clone(), factory(&[("p", "h100", 1, 1)]));
        submit(&mut c, "a", "run", 0.0, 1, 1e7);
        assert_eq!(started(&mut c, 0.0), ["run"]);
        let x = submit(&mut c, "a", "x", 10.0, 1, 100.0);
        let d = c.schedule(10.0).clone();
        assert_eq!(d.wakeup, Some(10.0 + due), "woken for the promotion");
        c.schedule(10.0 + due + late);
        let job = &c.jobs[x as usize];
        assert!(job.promoted);
        assert_eq!(job.lease_s, due / knob, "pass {late} s late");
    }
}
