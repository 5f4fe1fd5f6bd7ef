//! The twin end to end: determinism, failures, measurement windows.

use gigafab_core::{Factory, JobSpec, Policy, PolicyKind, Throughputs};
use gigafab_twin::{Failures, Report, SimConfig, simulate};
use std::path::Path;

fn factory(name: &str) -> Factory {
    gigafab_twin::files::load_factory(Path::new(&format!("../../examples/factories/{name}.toml")))
        .unwrap()
}

fn run(f: &Factory, kind: PolicyKind, jobs: Vec<JobSpec>, cfg: &SimConfig) -> Report {
    run_with(f, Policy::new(kind), jobs, cfg).report
}

fn workload(n: usize, seed: u64) -> Vec<JobSpec> {
    let mut r = gigafab_core::Rng::new(seed);
    let mut t = 0.0;
    (0..n)
        .map(|i| {
            t += r.exp(1.0 / 60.0);
            let gpus = [1, 2, 4, 8, 16, 32][r.below(6) as usize];
            let mut j = JobSpec::simple(format!("j{i}"), t, gpus, r.uniform(60.0, 7200.0));
            j.tenant = Some(format!("t{}", r.below(4)));
            j.preemptible = true;
            j.checkpoint_s = Some(600.0);
            j
        })
        .collect()
}

fn strip(mut r: Report) -> Report {
    r.wall_time_s = 0.0;
    r.events_per_s = 0.0;
    r
}

#[test]
fn same_seed_same_report_for_every_policy() {
    let f = factory("mixed-small");
    let cfg = failing(42, 0.2, 3600.0);
    for kind in PolicyKind::ALL {
        let a = strip(run(&f, kind, workload(400, 1), &cfg));
        let b = strip(run(&f, kind, workload(400, 1), &cfg));
        assert_eq!(a, b, "{kind}");
        assert!(
            a.failures > 0,
            "{kind}: failures should happen at this rate"
        );
        let c = strip(run(
            &f,
            kind,
            workload(400, 1),
            &SimConfig {
                seed: 43,
                ..cfg.clone()
            },
        ));
        assert_ne!(a.failures + a.failure_job_hits, 0);
        assert!(
            a.failures != c.failures || a.gpu_hours_lost != c.gpu_hours_lost,
            "{kind}: another seed should draw other failures"
        );
        assert_eq!(a.jobs_completed, 400, "{kind}");
    }
}

#[test]
fn lone_job_runs_exactly_its_duration() {
    let (f, cfg) = small_without_failures();
    let r = run(
        &f,
        PolicyKind::Fifo,
        vec![JobSpec::simple("a", 10.0, 64, 1000.0)],
        &cfg,
    );
    assert_eq!(r.jobs_completed, 1);
    assert_eq!(r.avg_jct_s, 1000.0);
    assert_eq!(r.avg_wait_s, 0.0);
    assert_eq!(r.makespan_s, 1000.0);
    assert!((r.utilization - 0.5).abs() < 1e-12);
}

#[test]
fn failures_cost_work_since_last_checkpoint() {
    // one 64-accelerator job on a 64-accelerator pool of an 8-node factory:
    // every failure on the H100 pool hits it.
    let f = factory("mixed-small");
    let mut j = JobSpec::simple("big", 0.0, 64, 100_000.0);
    j.types = gigafab_core::TypeFilter::parse("h100").unwrap();
    j.checkpoint_s = Some(1000.0);
    let cfg = failing(5, 0.05, 600.0);
    let r = run(&f, PolicyKind::Fifo, vec![j.clone()], &cfg);
    assert_eq!(r.jobs_completed, 1);
    assert!(r.failure_job_hits > 0);
    assert!(r.gpu_hours_lost > 0.0);
    // each hit loses less than one checkpoint interval on 64 accelerators
    assert!(r.gpu_hours_lost <= r.failure_job_hits as f64 * 64.0 * 1000.0 / 3600.0);
    // the job finishes later than its duration, by at least the lost work
    assert!(r.avg_jct_s > 100_000.0 + r.gpu_hours_lost * 3600.0 / 64.0 - 1e-6);
    // without checkpoints, more is lost
    j.checkpoint_s = None;
    let r2 = run(&f, PolicyKind::Fifo, vec![j], &cfg);
    assert!(r2.gpu_hours_lost > r.gpu_hours_lost);
}

#[test]
fn measurement_window_counts_only_its_jobs() {
    let f = factory("mixed-small");
    let all = run(
        &f,
        PolicyKind::Backfill,
        workload(300, 2),
        &SimConfig::default(),
    );
    let win = run(
        &f,
        PolicyKind::Backfill,
        workload(300, 2),
        &SimConfig {
            measure: Some((100, 200)),
            ..SimConfig::default()
        },
    );
    assert_eq!(all.measured_jobs, 300);
    assert_eq!(win.measured_jobs, 100);
    assert_eq!(win.jobs_completed, 300);
    assert!(win.makespan_s < all.makespan_s);
    assert_ne!(win.avg_jct_s, all.avg_jct_s);
    let bad = simulate(
        f,
        Policy::new(PolicyKind::Fifo),
        Throughputs::new(),
        workload(10, 1),
        &[],
        &SimConfig {
            measure: Some((5, 11)),
            ..SimConfig::default()
        },
        &mut |_, _| {},
    );
    assert!(bad.is_err());
}

#[test]
fn backfill_and_las_beat_fifo_on_waiting() {
    let (f, cfg) = small_without_failures();
    let fifo = run(&f, PolicyKind::Fifo, workload(600, 3), &cfg);
    let bf = run(&f, PolicyKind::Backfill, workload(600, 3), &cfg);
    let las = run(&f, PolicyKind::Las, workload(600, 3), &cfg);
    assert!(
        bf.avg_wait_s < fifo.avg_wait_s,
        "{} vs {}",
        bf.avg_wait_s,
        fifo.avg_wait_s
    );
    assert!(las.avg_jct_s < fifo.avg_jct_s);
}

#[test]
fn bad_jobs_are_refused_with_their_id() {
    let f = factory("mixed-small");
    let mut j = JobSpec::simple("nan", 0.0, 1, 10.0);
    j.duration_s = Some(f64::NAN);
    let e = simulate(
        f,
        Policy::new(PolicyKind::Fifo),
        Throughputs::new(),
        vec![j],
        &[],
        &SimConfig::default(),
        &mut |_, _| {},
    )
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("nan") && e.contains("duration"), "{e}");
}

#[test]
fn jobs_wait_for_their_allocation_window() {
    let f = factory("mixed-small");
    let mut a = gigafab_core::AllocationSpec::open("late", gigafab_core::Category::Public);
    a.valid_from_s = 5000.0;
    let mut j = JobSpec::simple("j", 0.0, 8, 100.0);
    j.tenant = Some("late".into());
    let out = simulate(
        f,
        Policy::new(PolicyKind::Fairshare),
        Throughputs::new(),
        vec![j],
        &[a],
        &SimConfig {
            failures: None,
            ..SimConfig::default()
        },
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(out.report.jobs_completed, 1);
    assert_eq!(out.report.avg_wait_s, 5000.0);
    assert_eq!(out.report.categories["public"].jobs, 1);
}

#[test]
fn utilization_over_the_busy_period_ignores_the_drained_tail() {
    // 128 accelerators (64 H100, 64 MI300X). Submissions at 0, 1000 and
    // 4000 s; the last job runs 12,000 s alone after them.
    let f = factory("mixed-small");
    let jobs = || {
        vec![
            JobSpec::simple("a", 0.0, 64, 1000.0),
            JobSpec::simple("b", 1000.0, 32, 3000.0),
            JobSpec::simple("c", 4000.0, 64, 12_000.0),
        ]
    };
    let cfg = SimConfig {
        failures: None,
        ..SimConfig::default()
    };
    let r = run(&f, PolicyKind::Fifo, jobs(), &cfg);
    assert_eq!(r.jobs_completed, 3);
    assert_eq!(r.makespan_s, 16_000.0);
    // makespan: (64 × 1000 + 32 × 3000 + 64 × 12,000) / (128 × 16,000)
    assert!((r.utilization - 928_000.0 / 2_048_000.0).abs() < 1e-12);
    // arrivals 0..4000: (64 × 1000 + 32 × 3000) / (128 × 4000)
    assert!(
        (r.utilization_busy - 0.3125).abs() < 1e-12,
        "{}",
        r.utilization_busy
    );
    // a window: jobs b and c, submitted 1000..4000
    let w = run(
        &f,
        PolicyKind::Fifo,
        jobs(),
        &SimConfig {
            measure: Some((1, 3)),
            ..cfg.clone()
        },
    );
    assert_eq!(w.makespan_s, 15_000.0);
    // (32 × 3000 + 64 × 12,000) / (128 × 15,000)
    assert!((w.utilization - 0.45).abs() < 1e-12, "{}", w.utilization);
    // (32 × 3000) / (128 × 3000)
    assert!(
        (w.utilization_busy - 0.25).abs() < 1e-12,
        "{}",
        w.utilization_busy
    );
    // one submission only: no busy period, the makespan figure stands in
    let lone = run(&f, PolicyKind::Fifo, jobs()[..1].to_vec(), &cfg);
    assert_eq!(lone.utilization_busy, lone.utilization);
    assert!((lone.utilization - 0.5).abs() < 1e-12);
    let table = r.table();
    assert!(table.contains("utilization (makespan)"), "{table}");
    assert!(
        table.contains("utilization (arrivals: first→last)"),
        "{table}"
    );
    assert!(
        table.contains("31.2 %") || table.contains("31.3 %"),
        "{table}"
    );
}

#[test]
fn timed_out_jobs_count_in_waits_and_have_their_own_jct() {
    // two 64-accelerator gangs on the 64 H100: `a` runs 500 s, `cut` waits
    // for it, then runs into its 1000 s limit (it needed 5000 s).
    let f = factory("mixed-small");
    let h100 = gigafab_core::TypeFilter::parse("h100").unwrap();
    let mut a = JobSpec::simple("a", 0.0, 64, 500.0);
    a.types = h100.clone();
    let mut cut = JobSpec::simple("cut", 0.0, 64, 5000.0);
    cut.types = h100;
    cut.time_limit_s = Some(1000.0);
    let cfg = SimConfig {
        failures: None,
        ..SimConfig::default()
    };
    let r = run(&f, PolicyKind::Fifo, vec![a.clone(), cut.clone()], &cfg);
    assert_eq!((r.jobs_completed, r.jobs_timed_out), (1, 1));
    assert_eq!(r.measured_timed_out, 1);
    // completed-only JCT
    assert_eq!(r.avg_jct_s, 500.0);
    assert_eq!(r.p99_jct_s, 500.0);
    // the cut job: submitted at 0, started at 500, cut at 1500
    assert_eq!(r.avg_jct_timed_out_s, 1500.0);
    // both waited: 0 and 500 s
    assert_eq!(r.avg_wait_s, 250.0);
    assert_eq!(r.p99_wait_s, 500.0);
    assert_eq!(r.makespan_s, 1500.0);
    let table = r.table();
    assert!(
        table.contains("jobs timed out") && table.contains("1 measured, avg JCT 0.42 h"),
        "{table}"
    );
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["avg_jct_timed_out_s"], 1500.0);
    assert_eq!(v["measured_timed_out"], 1);
    // outside the window, the cut job is not measured
    let w = run(
        &f,
        PolicyKind::Fifo,
        vec![a, cut],
        &SimConfig {
            measure: Some((0, 1)),
            ..cfg
        },
    );
    assert_eq!((w.jobs_timed_out, w.measured_timed_out), (1, 0));
    assert_eq!(w.avg_jct_timed_out_s, 0.0);
    assert_eq!(w.avg_wait_s, 0.0);
}

fn run_with(
    f: &Factory,
    p: Policy,
    jobs: Vec<JobSpec>,
    cfg: &SimConfig,
) -> gigafab_twin::SimOutput {
    simulate(
        f.clone(),
        p,
        Throughputs::new(),
        jobs,
        &[],
        cfg,
        &mut |_, _| {},
    )
    .unwrap()
}

/// A 64-accelerator job alone on the H100 pool under frequent failures.
fn failing_gang(checkpoint_s: Option<f64>) -> (Factory, JobSpec, SimConfig) {
    let f = factory("mixed-small");
    let mut j = JobSpec::simple("big", 0.0, 64, 100_000.0);
    j.types = gigafab_core::TypeFilter::parse("h100").unwrap();
    j.checkpoint_s = checkpoint_s;
    let cfg = failing(5, 0.05, 600.0);
    (f, j, cfg)
}

#[test]
fn a_job_is_requeued_a_bounded_number_of_times_then_fails() {
    // without a checkpoint, each failure restarts it from zero: with at most
    // 2 requeues the third hit fails it, and the run ends there
    let (f, j, cfg) = failing_gang(None);
    let mut p = Policy::new(PolicyKind::Fifo);
    p.max_requeues = 2;
    let out = run_with(&f, p, vec![j.clone()], &cfg);
    let r = &out.report;
    assert_eq!((r.jobs_completed, r.jobs_failed), (0, 1), "{r:?}");
    assert_eq!(r.failure_job_hits, 3);
    let job = &out.core.jobs[0];
    assert_eq!(job.state, gigafab_core::JobState::Failed);
    assert_eq!(job.reason.map(|x| x.code()), Some("restarts_exhausted"));
    assert_eq!(job.restarts, 2);
    // every accelerator-second it ran was lost
    assert!(
        (r.gpu_hours_lost * 3600.0 - job.attained_gpu_s).abs() < 1e-3 * job.attained_gpu_s.max(1.0)
    );
    // with checkpoints every 1,000 s and enough requeues it completes,
    // restarting from its last checkpoint each time
    let (f, j, cfg) = failing_gang(Some(1000.0));
    let mut p = Policy::new(PolicyKind::Fifo);
    p.max_requeues = 1000;
    let out = run_with(&f, p, vec![j], &cfg);
    let r = &out.report;
    assert_eq!((r.jobs_completed, r.jobs_failed), (1, 0), "{r:?}");
    assert!(r.failure_job_hits > 2);
    assert!(r.gpu_hours_lost <= r.failure_job_hits as f64 * 64.0 * 1000.0 / 3600.0);
    assert_eq!(out.core.jobs[0].restarts as u64, r.failure_job_hits);
}

/// Issue 28: the factory's flagship run, 16,384 accelerators for 54 days
/// with 30-minute checkpoints, under the default failure rate (Meta's
/// Llama 3 figure) and the default `max_requeues`: a job that moves
/// forward from its checkpoints is not failed by the bound, which counts
/// only hits without progress (Llama 3's 16k-GPU run saw 419 unexpected
/// interruptions in 54 days and kept over 90%).
#[test]
fn the_flagship_run_completes_by_default() {
    let f = factory("gigafactory-100k");
    let mut j = JobSpec::simple("flagship", 0.0, 16_384, 54.0 * 86_400.0);
    j.checkpoint_s = Some(1800.0);
    let p = Policy::new(PolicyKind::Fifo);
    assert_eq!(p.max_requeues, 5, "the default bound");
    let out = run_with(&f, p, vec![j], &failing(1, 4.7e-4, 4.0 * 3600.0));
    let r = &out.report;
    assert_eq!((r.jobs_completed, r.jobs_failed), (1, 0), "{r:?}");
    assert!(r.failure_job_hits > 300, "{}", r.failure_job_hits);
    let e = r.large_gang_ettr.unwrap();
    eprintln!("flagship: {} hits, ETTR {e:.3}", r.failure_job_hits);
    assert!((0.85..=0.95).contains(&e), "ETTR {e}");
}

/// The bound still stops a job that makes no progress: hits closer
/// together than its checkpoints fail it after `max_requeues` of them in a
/// row.
#[test]
fn hits_without_progress_exhaust_the_requeues() {
    // checkpoints every 10,000 s, a hit every ~1,350 s on its 64
    // accelerators: it never gets to a checkpoint
    let (f, j, _) = failing_gang(Some(10_000.0));
    let mut p = Policy::new(PolicyKind::Fifo);
    p.max_requeues = 3;
    let out = run_with(&f, p, vec![j], &failing(5, 1.0, 600.0));
    let job = &out.core.jobs[0];
    assert_eq!(
        job.state,
        gigafab_core::JobState::Failed,
        "{:?}",
        out.report
    );
    assert_eq!(job.reason.map(|x| x.code()), Some("restarts_exhausted"));
    assert_eq!(out.report.failure_job_hits, 4);
    let lost = out.report.gpu_hours_lost * 3600.0;
    assert!((job.attained_gpu_s - lost).abs() <= 1e-6 * lost.max(1.0));
}

/// Issue 28: the report breaks JCT and waits down by job size, so that a
/// starving gang class shows (its longest wait counts a job that never
/// started until the end).
#[test]
fn the_report_has_figures_per_size_class() {
    let (f, cfg) = small_without_failures();
    let mut jobs: Vec<JobSpec> = (0..6)
        .map(|i| JobSpec::simple(format!("one{i}"), i as f64, 1, 100.0))
        .collect();
    jobs.push(JobSpec::simple("four", 0.0, 4, 100.0));
    jobs.push(JobSpec::simple("eight", 0.0, 8, 300.0));
    let r = run(&f, PolicyKind::Fifo, jobs, &cfg);
    let classes: Vec<(&str, u64, u64)> = r
        .sizes
        .iter()
        .map(|c| (c.class.as_str(), c.jobs, c.completed))
        .collect();
    assert_eq!(classes, vec![("1", 6, 6), ("2-4", 1, 1), ("5-8", 1, 1)]);
    for c in &r.sizes {
        assert!(
            c.max_wait_s >= c.p99_wait_s && c.p99_wait_s >= c.avg_wait_s,
            "{c:?}"
        );
        assert!(c.p99_jct_s >= c.avg_jct_s && c.avg_jct_s >= 100.0, "{c:?}");
        assert_eq!(c.never_started, 0);
    }
    assert!(r.table().contains("max wait h"));
}

#[test]
fn jobs_out_has_a_row_per_job_with_its_state() {
    let (f, cfg) = small_without_failures();
    let mut cut = JobSpec::simple("cut", 5.0, 8, 1000.0);
    cut.time_limit_s = Some(100.0);
    let jobs = vec![
        JobSpec::simple("ok", 0.0, 8, 50.0),
        cut,
        JobSpec::simple("huge", 10.0, 100_000, 50.0),
    ];
    let out = run_with(&f, Policy::new(PolicyKind::Fifo), jobs, &cfg);
    let mut buf = Vec::new();
    gigafab_twin::jobs_out::write_jobs_csv(&out.core, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,submit_s,start_s,end_s,state,accelerators,pool,site,wait_s,restarts,energy_kwh,carbon_g,size_class,queued_s"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][..6], ["ok", "0", "0", "50", "completed", "8"]);
    assert!(!rows[0][6].is_empty() && !rows[0][7].is_empty(), "{text}");
    assert_eq!(rows[0][8], "0");
    assert_eq!(&rows[1][..5], ["cut", "5", "5", "105", "timed_out"]);
    assert_eq!(&rows[2][..5], ["huge", "10", "", "10", "cancelled"]);
    assert_eq!((rows[2][6], rows[2][8]), ("", ""));
    // energy of the runs, no carbon without a grid
    let e: f64 = rows[0][10].parse().unwrap();
    assert!(e > 0.0, "{text}");
    assert_eq!(rows[0][11], "");
}

#[test]
fn bounded_slowdown_counts_jobs_cut_at_their_limit() {
    let (f, cfg) = small_without_failures();
    // a 1-second job waits 99 s behind a 100-s job on the whole H100 pool:
    // unbounded slowdown 100, bounded 100 / 10 = 10
    let mut a = JobSpec::simple("a", 0.0, 64, 100.0);
    a.types = gigafab_core::TypeFilter::parse("h100").unwrap();
    let mut b = JobSpec::simple("b", 1.0, 64, 1.0);
    b.types = a.types.clone();
    let r = run(&f, PolicyKind::Fifo, vec![a.clone(), b.clone()], &cfg);
    assert!(
        (r.avg_slowdown_unbounded - (1.0 + 100.0) / 2.0).abs() < 1e-9,
        "{r:?}"
    );
    assert!((r.avg_slowdown - (1.0 + 10.0) / 2.0).abs() < 1e-9, "{r:?}");
    // the bound: each job alone from its submission, (100 + 1) / 2, where
    // the JCTs are (100 + 100) / 2
    assert!((r.avg_jct_bound_s - 50.5).abs() < 1e-9, "{r:?}");
    assert!((r.avg_jct_s - 100.0).abs() < 1e-9, "{r:?}");
    // a job cut at its limit counts: it waited 100 s, ran its 50-s limit
    let mut c = JobSpec::simple("c", 0.0, 64, 1000.0);
    c.types = a.types.clone();
    c.time_limit_s = Some(50.0);
    let mut a2 = a.clone();
    a2.submit_s = 0.0;
    let mut c2 = c.clone();
    c2.submit_s = 0.5;
    let r = run(&f, PolicyKind::Fifo, vec![a2, c2], &cfg);
    assert_eq!(r.jobs_timed_out, 1);
    // a: 1; c: (100 - 0.5 + 50) / 50
    let want = (1.0 + (149.5 / 50.0)) / 2.0;
    assert!(
        (r.avg_slowdown - want).abs() < 1e-9,
        "{} vs {want}",
        r.avg_slowdown
    );
}

/// mixed-small, and a simulation without failures.
fn small_without_failures() -> (Factory, SimConfig) {
    let cfg = SimConfig {
        failures: None,
        ..SimConfig::default()
    };
    (factory("mixed-small"), cfg)
}

#[test]
fn idle_accelerators_fail_in_bulk_not_one_event_each() {
    // two short jobs ten years apart: the idle decade draws its failures in
    // bulk, so the run costs a handful of events, and their number is the
    // expected one
    let (f, _) = small_without_failures();
    let year = 365.0 * 86_400.0;
    let rate = 0.01;
    let cfg = failing(11, rate, 4.0 * 3600.0);
    let jobs = vec![
        JobSpec::simple("first", 0.0, 1, 100.0),
        JobSpec::simple("last", 10.0 * year, 1, 100.0),
    ];
    let r = run(&f, PolicyKind::Fifo, jobs, &cfg);
    assert_eq!(r.jobs_completed, 2);
    assert!(r.events < 100, "{} events", r.events);
    let expected = f.accelerators() as f64 * rate * 10.0 * 365.0;
    let got = r.failures as f64;
    assert!(
        (got - expected).abs() < 5.0 * expected.sqrt(),
        "{got} failures, {expected:.0} expected"
    );
}

/// A simulation with failures at `rate` per accelerator-day.
fn failing(seed: u64, rate: f64, repair_s: f64) -> SimConfig {
    SimConfig {
        seed,
        failures: Some(Failures {
            precursors: None,
            rate_per_accel_day: rate,
            repair_s,
        }),
        ..SimConfig::default()
    }
}

/// Every failure shows a precursor `lead_s` ahead.
fn announced(recall: f64, precision: f64, lead_s: f64) -> gigafab_twin::Precursors {
    gigafab_twin::Precursors {
        classes: vec![gigafab_twin::FailureClass {
            name: "announced",
            share: 1.0,
            precursor: 1.0,
            lead_s,
        }],
        recall,
        precision,
        check_s: 600.0,
        preflight_recall: 0.0,
    }
}

#[test]
fn caught_precursors_drain_nodes_before_failures_hit_the_run() {
    let (f, j, mut cfg) = failing_gang(Some(1000.0));
    let mut p = Policy::new(PolicyKind::Fifo);
    p.max_requeues = 1000;
    let reactive = run_with(&f, p.clone(), vec![j.clone()], &cfg).report;
    assert!(reactive.failure_job_hits > 2);
    // a perfect predictor: no failure hits the run, each is a true drain
    if let Some(fl) = cfg.failures.as_mut() {
        fl.precursors = Some(announced(1.0, 1.0, 600.0));
    }
    let out = run_with(&f, p.clone(), vec![j.clone()], &cfg);
    let r = &out.report;
    assert_eq!(r.jobs_completed, 1, "{r:?}");
    assert_eq!(r.failure_job_hits, 0);
    assert!(r.true_drains > 2 && r.false_drains == 0, "{r:?}");
    assert_eq!(r.gpu_hours_lost, 0.0, "it checkpointed as it stopped");
    assert!(reactive.gpu_hours_lost > 0.0);
    // no precursor caught: as reactive, plus nothing
    if let Some(fl) = cfg.failures.as_mut() {
        fl.precursors = Some(announced(0.0, 1.0, 600.0));
    }
    let r = run_with(&f, p.clone(), vec![j.clone()], &cfg).report;
    assert!(r.failure_job_hits > 2 && r.true_drains == 0 && r.false_drains == 0);
    // half of the alarms false: about as many false drains as true ones
    if let Some(fl) = cfg.failures.as_mut() {
        fl.precursors = Some(announced(1.0, 0.5, 600.0));
    }
    let r = run_with(&f, p, vec![j], &cfg).report;
    assert!(r.false_drains > 0, "{r:?}");
    let ratio = r.false_drains as f64 / r.true_drains as f64;
    assert!((0.3..=3.0).contains(&ratio), "{r:?}");
}

#[test]
fn effective_training_time_of_a_large_gang() {
    let f = factory("llama3-cluster");
    let mut j = JobSpec::simple("train", 0.0, 2048, 10.0 * 86_400.0);
    j.checkpoint_s = Some(1800.0);
    let calm = SimConfig {
        failures: None,
        ..SimConfig::default()
    };
    let mut p = Policy::new(PolicyKind::Fifo);
    p.max_requeues = 100_000;
    let r = run_with(&f, p.clone(), vec![j.clone()], &calm).report;
    assert_eq!((r.large_gangs, r.large_gang_ettr), (1, Some(1.0)));
    // failures: each costs the work since the last checkpoint and a restore
    let r = run_with(&f, p, vec![j], &failing(3, 4.7e-4, 4.0 * 3600.0)).report;
    let e = r.large_gang_ettr.unwrap();
    assert!(r.failure_job_hits > 0 && e < 1.0 && e > 0.8, "{e} {r:?}");
    let lost_h = r.failure_job_hits as f64 * (900.0 + 30.0) / 3600.0;
    let expect = 240.0 / (240.0 + lost_h);
    assert!((e - expect).abs() < 0.02, "{e} vs about {expect}");
}

#[test]
fn a_pre_flight_check_costs_its_time_and_catches_latent_faults() {
    let (f, j, mut cfg) = failing_gang(Some(1000.0));
    let mut p = Policy::new(PolicyKind::Fifo);
    p.max_requeues = 1000;
    // the check takes 10 minutes before each run of the gang (8 nodes)
    p.preflight_s = 600.0;
    let calm = SimConfig {
        failures: None,
        ..SimConfig::default()
    };
    let out = run_with(&f, p.clone(), vec![j.clone()], &calm);
    assert_eq!(out.core.jobs[0].first_start, Some(600.0));
    assert_eq!(out.core.jobs[0].end_s, Some(600.0 + 100_000.0));
    // every fault is latent at the start (a lead longer than the run) and the check sees
    // it: no failure reaches a run, each is caught before the run begins
    let mut pc = announced(0.0, 1.0, 200_000.0);
    pc.preflight_recall = 1.0;
    if let Some(fl) = cfg.failures.as_mut() {
        fl.precursors = Some(pc);
    }
    let r = run_with(&f, p, vec![j], &cfg).report;
    assert_eq!(r.jobs_completed, 1, "{r:?}");
    assert_eq!(r.failure_job_hits, 0, "{r:?}");
    assert!(
        r.preflight_catches > 0 && r.preflight_catches == r.true_drains,
        "{r:?}"
    );
    assert_eq!(r.gpu_hours_lost, 0.0);
}
