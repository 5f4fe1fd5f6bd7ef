//! The twin and the live controller are one scheduler: the same workload,
//! fed to the digital twin and to the controller (a manual clock, a fake
//! executor that ends each run when the twin says it ends), starts every
//! job at the same time, job by job, for each policy of the profile —
//! preemption included (the controller stops the run and requeues the
//! job; the twin does the same in its model).

use std::collections::HashMap;
use std::sync::Arc;

use gigafab_core::{AllocationSpec, Category, Factory, JobSpec, Rng, SchedulerProfile};
use gigafab_exec::testing::RecordingExecutor;
use gigafab_exec::{Executor, Outcome};
use gigafab_server::ctl::{Action, Cmd, CtlConfig};
use gigafab_server::isolation::Isolation;
use gigafab_server::model::{AllocReq, SubmitReq};
use gigafab_server::time::Ms;
use gigafab_server::time::{Clock, ManualClock};
use gigafab_server::{HttpLimits, ServeConfig};
use gigafab_twin::{SimConfig, simulate};
use tokio::sync::oneshot;

const TOKEN: &str = "gf_conformance_token_0123456789abcdef";
/// The live clock's start, s (1973-03-03: the twin's time has a horizon
/// of 1e9 s, and both count from the Unix epoch here).
const T0: i64 = 100_000_000;
const GRANT_H: f64 = 1e6;
const YEAR_S: f64 = 365.0 * 86_400.0;

const FACTORY: &str = r#"
name = "conformance"
[[sites]]
name = "s"
[[sites.pools]]
name = "h100"
accelerator = "h100"
nodes = 4
accelerators_per_node = 8
[[sites.pools]]
name = "mi300x"
accelerator = "mi300x"
nodes = 2
accelerators_per_node = 8
"#;

/// The shared recording executor on the test's manual clock: runs end
/// at the ends the test plans (the twin's), or when the test ends them.
fn recording(clock: &Arc<ManualClock>) -> RecordingExecutor {
    let c = clock.clone();
    RecordingExecutor::new(move || c.now_ms())
}

/// A seeded workload: two tenants, gangs of 1-16 on either type, integer
/// seconds, limits above run times, some high-priority jobs and some
/// preemptible ones.
fn workload(seed: u64, n: usize, job_types: &[String]) -> Vec<JobSpec> {
    let mut rng = Rng::new(seed);
    let mut t = T0 as f64;
    (0..n)
        .map(|i| {
            t += 1.0 + (rng.exp(1.0 / 240.0)).floor();
            let gpus = if job_types.is_empty() {
                [1, 1, 2, 4, 8, 8, 16][(rng.f64() * 7.0) as usize]
            } else {
                [1, 1, 2, 4][(rng.f64() * 4.0) as usize]
            };
            let dur = 60.0 + (rng.f64() * 7_200.0).floor();
            let mut j = JobSpec::simple(format!("j{i}"), t, gpus, dur);
            j.time_limit_s = Some(dur + 60.0 + (rng.f64() * dur).floor());
            j.tenant = Some(if rng.f64() < 0.6 { "a" } else { "b" }.into());
            j.priority = if rng.f64() < 0.15 { 5 } else { 0 };
            j.preemptible = j.priority == 0 && rng.f64() < 0.5;
            if !job_types.is_empty() {
                j.job_type = Some(job_types[(rng.f64() * job_types.len() as f64) as usize].clone());
            }
            j
        })
        .collect()
}

/// The twin's allocations: the live server's first-start `default` one
/// (no job uses it, but it holds fair-share shares), then one per tenant.
fn twin_allocations() -> Vec<AllocationSpec> {
    [("default", 3650.0 * 86_400.0), ("a", YEAR_S), ("b", YEAR_S)]
        .into_iter()
        .enumerate()
        .map(|(i, (t, valid))| AllocationSpec {
            id: (i + 1).to_string(),
            tenant: t.into(),
            category: Category::Academia,
            granted_gpu_hours: Some(GRANT_H),
            valid_from_s: T0 as f64,
            valid_until_s: Some(T0 as f64 + valid),
            qos_priority: 0,
            shares: Some(GRANT_H),
        })
        .collect()
}

/// Sends a command without waiting: the answer comes after the next step.
fn send(
    shared: &gigafab_server::state::Shared,
    who: &gigafab_server::auth::Principal,
    action: Action,
) -> oneshot::Receiver<gigafab_server::ctl::Answer> {
    let (reply, rx) = oneshot::channel();
    shared
        .tx
        .try_send(Cmd {
            who: who.clone(),
            action,
            reply,
        })
        .unwrap_or_else(|_| panic!("controller channel full"));
    rx
}

/// A controller on a fresh store in `dir`, without HTTP or loop: the test
/// drives it with `Controller::step` (its own timers never fire).
async fn stepped(
    dir: &std::path::Path,
    factory: Factory,
    policy: gigafab_core::Policy,
    throughputs: gigafab_core::Throughputs,
    executor: Arc<dyn Executor>,
    clock: Arc<ManualClock>,
) -> gigafab_server::Opened {
    gigafab_server::open(ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: gigafab_server::store::sqlite_url(dir),
        ctl: CtlConfig {
            factory,
            policy,
            throughputs,
            tick: std::time::Duration::from_secs(3600),
            poll: std::time::Duration::from_secs(3600),
            bootstrap_token: Some(TOKEN.into()),
            isolation: Isolation::single_user(),
            node_power: Vec::new(),
            grid_refresh: std::time::Duration::from_secs(300),
            preflight_min_nodes: 0,
            max_active_jobs_per_org: 0,
        },
        executor,
        telemetry: None,
        existing_job_dirs: Vec::new(),
        http: HttpLimits::default(),
        clock,
        smtp: None,
        oidc: None,
        catalog: None,
        sessions: Default::default(),
        spaces: None,
    })
    .await
    .unwrap()
}

/// What a job did: first start, end (s), launches.
#[derive(Debug, PartialEq)]
struct Story {
    first_start: Option<i64>,
    end: Option<i64>,
    runs: u32,
}

async fn conformance(profile: SchedulerProfile, seed: u64, n: usize) -> usize {
    conformance_on(FACTORY, gigafab_core::Throughputs::new(), profile, seed, n).await
}

/// [`conformance`] on a factory and a throughput matrix (jobs get the
/// matrix's job types when it has any).
async fn conformance_on(
    factory_text: &str,
    throughputs: gigafab_core::Throughputs,
    profile: SchedulerProfile,
    seed: u64,
    n: usize,
) -> usize {
    let mut factory = Factory::parse(factory_text, "conformance.toml").unwrap();
    factory.scheduler = profile;
    let policy = factory.scheduler.policy().unwrap();
    let types: Vec<String> = throughputs
        .job_types()
        .into_iter()
        .take(8)
        .map(str::to_string)
        .collect();
    let jobs = workload(seed, n, &types);

    // the twin
    let out = simulate(
        factory.clone(),
        policy.clone(),
        throughputs.clone(),
        jobs.clone(),
        &twin_allocations(),
        &SimConfig {
            seed,
            failures: None,
            measure: None,
            timeline_points: None,
            endpoints: Vec::new(),
        },
        &mut |_, _| {},
    )
    .unwrap();
    let twin: HashMap<&str, &gigafab_core::Job> =
        out.core.jobs.iter().map(|j| (j.id.as_str(), j)).collect();

    // the controller, on a manual clock, turn by turn
    let dir = std::env::temp_dir().join(format!(
        "gigafab-conformance-{}-{}-{seed}",
        std::process::id(),
        policy.kind.name()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1000));
    let exec = Arc::new(recording(&clock));
    let mut opened = stepped(
        &dir,
        factory,
        policy.clone(),
        throughputs,
        exec.clone(),
        clock.clone(),
    )
    .await;
    let ctl = &mut opened.controller;
    let shared = opened.shared.clone();
    let admin = shared.principal(TOKEN).expect("the bootstrap token");
    let mut alloc_of = HashMap::new();
    for t in ["a", "b"] {
        let rx = send(
            &shared,
            &admin,
            shared
                .grant(
                    &admin,
                    AllocReq {
                        org: "default".into(),
                        gpu_hours: GRANT_H,
                        days: Some(365.0),
                        valid_from: None,
                        qos_priority: None,
                        name: Some(t.into()),
                        project: None,
                    },
                )
                .expect("a grant"),
        );
        assert!(ctl.step(Ms(T0 * 1000), &mut opened.rx).await);
        let (_, a) = rx.await.unwrap().unwrap();
        alloc_of.insert(t, a.allocation().unwrap().id.0);
    }

    // events: arrivals, the ends the twin decided, the core's wake-ups
    let mut live_of: HashMap<String, i64> = HashMap::new();
    let mut next = 0;
    let mut steps = 0usize;
    loop {
        let arrival = jobs.get(next).map(|j| (j.submit_s * 1000.0) as i64);
        let running_end = exec.next_end_after(clock.now_ms());
        let wake = ctl.wakeup().map(|w| w.0).filter(|&w| w > clock.now_ms());
        let Some(t) = [arrival, running_end, wake].into_iter().flatten().min() else {
            break;
        };
        clock.advance(t - clock.now_ms());
        let mut answers = Vec::new();
        while let Some(j) = jobs.get(next).filter(|j| (j.submit_s * 1000.0) as i64 == t) {
            let rx = send(
                &shared,
                &admin,
                shared
                    .submission(
                        &admin,
                        SubmitReq {
                            name: Some(j.id.clone()),
                            time_limit_s: j.time_limit_s.map(|l| l as i64),
                            priority: Some(j.priority as i64),
                            preemptible: Some(j.preemptible),
                            job_type: j.job_type.clone(),
                            ..SubmitReq::new(
                                alloc_of[j.tenant.as_deref().unwrap()],
                                j.gpus as i64,
                                vec!["train".into()],
                            )
                        },
                    )
                    .expect("valid fields"),
            );
            answers.push((j.id.clone(), rx));
            next += 1;
        }
        assert!(
            ctl.step(Ms(t), &mut opened.rx).await,
            "commit failed at {t}"
        );
        steps += 1;
        for (name, rx) in answers {
            let (_, v) = rx
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let id = v.job().unwrap().id.0;
            // the run ends when the twin's job ended
            if let Some(e) = twin[name.as_str()].end_s {
                exec.end_at(id, (e * 1000.0).round() as i64);
            }
            live_of.insert(name, id);
        }
        assert!(steps < 50 * n, "no end in sight at {t}");
    }

    // job by job: the same first start, the same end, the same runs
    let launched = exec.launched();
    let ended: HashMap<i64, (String, Option<i64>)> = {
        use sqlx::Row;
        sqlx::query("SELECT id, state, ended_ms FROM jobs")
            .fetch_all(&shared.store.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>(0),
                    (r.get::<String, _>(1), r.get::<Option<i64>, _>(2)),
                )
            })
            .collect()
    };
    let mut differ = Vec::new();
    for j in &jobs {
        let tj = twin[j.id.as_str()];
        let id = live_of[&j.id];
        let mine: Vec<i64> = launched.iter().filter(|l| l.0 == id).map(|l| l.1).collect();
        let (state, end_ms) = ended[&id].clone();
        // times to the millisecond: the live clock's resolution
        let live = Story {
            first_start: mine.first().copied(),
            end: end_ms.filter(|_| state == "completed"),
            runs: mine.len() as u32,
        };
        let ms = |s: f64| (s * 1000.0).round() as i64;
        let want = Story {
            first_start: tj.first_start.map(ms),
            end: tj.end_s.map(ms),
            runs: tj.restarts + 1,
        };
        if live != want {
            let at = live.first_start.min(want.first_start).unwrap_or(0);
            differ.push((at, format!("{}: live {live:?}, twin {want:?}", j.id)));
        }
    }
    let preempted = out.core.jobs.iter().filter(|j| j.restarts > 0).count();
    assert!(
        differ.is_empty(),
        "{} of {n} jobs differ ({}):\n{}",
        differ.len(),
        policy.kind.name(),
        {
            differ.sort();
            differ
                .iter()
                .take(10)
                .map(|d| d.1.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }
    );
    // every run was stopped only by a preemption the twin made too
    assert_eq!(exec.cancels().len(), launched.len() - n);
    let _ = std::fs::remove_dir_all(&dir);
    preempted
}

fn profile(policy: &str, backfill_interval_s: f64) -> SchedulerProfile {
    SchedulerProfile {
        policy: Some(policy.into()),
        backfill_interval_s: Some(backfill_interval_s),
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn fifo_starts_the_same_jobs_at_the_same_times() {
    conformance(profile("fifo", 30.0), 7, 300).await;
}

#[tokio::test(flavor = "current_thread")]
async fn backfill_starts_the_same_jobs_at_the_same_times() {
    conformance(profile("backfill", 30.0), 8, 300).await;
    conformance(profile("backfill", 0.0), 9, 300).await;
}

#[tokio::test(flavor = "current_thread")]
async fn fairshare_with_preemption_starts_the_same_jobs_at_the_same_times() {
    let preempted = conformance(profile("fairshare", 30.0), 10, 400).await;
    assert!(
        preempted > 0,
        "the workload preempts no job: the test tests less than it says"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn las_starts_the_same_jobs_at_the_same_times() {
    let preempted = conformance(profile("las", 30.0), 11, 300).await;
    assert!(
        preempted > 0,
        "the workload preempts no job: the test tests less than it says"
    );
}

/// Runs that take their time to stop: a cancel is recorded, the run goes
/// on until the test ends it.
fn slow(clock: &Arc<ManualClock>) -> Arc<RecordingExecutor> {
    Arc::new(recording(clock).stopping_slowly())
}

/// A 4-accelerator job of `priority` on allocation 1, as a command.
fn four_gpus(shared: &gigafab_server::state::Shared, priority: i64, preemptible: bool) -> Action {
    let admin = shared.principal(TOKEN).expect("the admin");
    shared
        .submission(
            &admin,
            SubmitReq {
                time_limit_s: Some(3600),
                priority: Some(priority),
                preemptible: Some(preemptible),
                ..SubmitReq::new(1, 4, vec!["train".into()])
            },
        )
        .expect("valid fields")
}

/// A stepped controller on one node of 4 H100 in `dir` (the factory's
/// own scheduler profile).
async fn one_node(
    dir: &std::path::Path,
    exec: Arc<dyn Executor>,
    clock: Arc<ManualClock>,
) -> gigafab_server::Opened {
    let factory = Factory::parse(
        "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\n",
        "t.toml",
    )
    .unwrap();
    let policy = factory.scheduler.policy().unwrap();
    stepped(
        dir,
        factory,
        policy,
        gigafab_core::Throughputs::new(),
        exec,
        clock,
    )
    .await
}

/// A job whose cancel was asked while its run was still stopping, and that
/// a higher-priority job then preempts, ends cancelled: it does not go
/// back to the queue. The preemptor runs on the accelerators it freed.
#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_job_that_is_preempted_ends_cancelled() {
    let dir = std::env::temp_dir().join(format!("gigafab-cancel-preempt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1000));
    let exec = slow(&clock);
    let mut o = one_node(&dir, exec.clone(), clock.clone()).await;
    let admin = o.shared.principal(TOKEN).unwrap();
    let job = |priority: i64, preemptible: bool| four_gpus(&o.shared, priority, preemptible);
    let mut t = T0 * 1000;
    let rx = send(&o.shared, &admin, job(0, true));
    assert!(o.controller.step(Ms(t), &mut o.rx).await);
    let a = rx.await.unwrap().unwrap().1.job().unwrap().id.0;
    t += 10_000;
    clock.advance(10_000);
    let rx = send(&o.shared, &admin, Action::Cancel(gigafab_api::JobId(a)));
    assert!(o.controller.step(Ms(t), &mut o.rx).await);
    let (_, v) = rx.await.unwrap().unwrap();
    let v = v.job().unwrap();
    assert_eq!(v.state, "running", "still stopping: {v:?}");
    t += 1_000;
    clock.advance(1_000);
    let rx = send(&o.shared, &admin, job(10, false));
    assert!(o.controller.step(Ms(t), &mut o.rx).await);
    let b = rx.await.unwrap().unwrap().1.job().unwrap().id.0;
    // the stopping run ends; nothing launches a again
    exec.end_run(&format!("run-{a}-1"), Outcome::Cancelled);
    for _ in 0..3 {
        t += 1_000;
        clock.advance(1_000);
        assert!(o.controller.step(Ms(t), &mut o.rx).await);
    }
    let a_row = gigafab_server::store::jobs::get(&o.shared.store.pool, a)
        .await
        .unwrap()
        .unwrap();
    let b_row = gigafab_server::store::jobs::get(&o.shared.store.pool, b)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a_row.state, "cancelled", "{a_row:?}");
    assert_eq!(b_row.state, "running", "{b_row:?}");
    let labels: Vec<String> = serde_json::from_str(b_row.accelerators.as_deref().unwrap()).unwrap();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert_eq!(launched_jobs(&exec), vec![a, b], "a launched once");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The run of a preempted job that is still stopping when the server
/// restarts is remembered: the job is not launched again beside it, its
/// stop is asked again, and it runs again once that run has ended.
#[tokio::test(flavor = "current_thread")]
async fn a_stopping_run_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("gigafab-stopping-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(T0 * 1000));
    let exec = slow(&clock);
    let mut o = one_node(&dir, exec.clone(), clock.clone()).await;
    let admin = o.shared.principal(TOKEN).unwrap();
    let job = four_gpus;
    let mut t = T0 * 1000;
    let rx = send(&o.shared, &admin, job(&o.shared, 0, true));
    assert!(o.controller.step(Ms(t), &mut o.rx).await);
    let a = rx.await.unwrap().unwrap().1.job().unwrap().id.0;
    t += 10_000;
    clock.advance(10_000);
    let rx = send(&o.shared, &admin, job(&o.shared, 10, false));
    assert!(o.controller.step(Ms(t), &mut o.rx).await);
    let b = rx.await.unwrap().unwrap().1.job().unwrap().id.0;
    // b ran on a's accelerators and ended; a's first run is still stopping
    exec.end_run(&format!("run-{b}-2"), Outcome::Cancelled);
    t += 1_000;
    clock.advance(1_000);
    assert!(o.controller.step(Ms(t), &mut o.rx).await);
    assert_eq!(launched_jobs(&exec), vec![a, b]);
    assert_eq!(cancelled_runs(&exec), vec![format!("run-{a}-1")]);
    drop(o);

    let mut o = one_node(&dir, exec.clone(), clock.clone()).await;
    for _ in 0..3 {
        t += 1_000;
        clock.advance(1_000);
        assert!(o.controller.step(Ms(t), &mut o.rx).await);
    }
    assert_eq!(
        launched_jobs(&exec),
        vec![a, b],
        "a launched beside its stopping run"
    );
    assert_eq!(
        cancelled_runs(&exec),
        vec![format!("run-{a}-1"), format!("run-{a}-1")],
        "the stop is asked again after the restart"
    );
    exec.end_run(&format!("run-{a}-1"), Outcome::Cancelled);
    // the poll that sees the end, then the launch: each waits one poll
    // interval (an hour here)
    for dt in [3_600_000, 3_600_000] {
        t += dt;
        clock.advance(dt);
        assert!(o.controller.step(Ms(t), &mut o.rx).await);
    }
    assert_eq!(launched_jobs(&exec), vec![a, b, a], "a runs again");
    let row = gigafab_server::store::jobs::get(&o.shared.store.pool, a)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, "running", "{row:?}");
    assert_eq!(row.handle.as_deref(), Some(format!("run-{a}-3").as_str()));
    drop(o);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The jobs launched, in order.
fn launched_jobs(x: &RecordingExecutor) -> Vec<i64> {
    x.launched().into_iter().map(|l| l.0).collect()
}

/// The runs asked to stop, in order.
fn cancelled_runs(x: &RecordingExecutor) -> Vec<String> {
    x.cancels().into_iter().map(|c| c.handle).collect()
}
