//! The controller's state machine, driven command by command with the
//! recording executor: no HTTP, no database (a store that never connects;
//! commits are kept in memory and read back here).

use std::sync::Arc;

use gigafab_exec::testing::RecordingExecutor;
use tokio::sync::mpsc;

use super::*;
use crate::store::commit::Arg;
use crate::tenancy::directory::Tenancy;
use crate::time::ManualClock;

const T0: i64 = 1_767_225_600_000;

/// A controller on `nodes` nodes of 4 H100 (one site), allocation 1 of
/// organisation 1 (`acme`, 1,000 GPU-hours), the recording executor, a
/// manual clock.
struct Rig {
    c: Controller,
    rx: mpsc::Receiver<Cmd>,
    shared: Arc<Shared>,
    exec: Arc<RecordingExecutor>,
    clock: Arc<ManualClock>,
}

fn factory(nodes: u32) -> Factory {
    Factory::parse(
        &format!(
            "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = {nodes}\naccelerators_per_node = 4\n"
        ),
        "t.toml",
    )
    .expect("a factory")
}

fn alloc_row() -> store::allocs::AllocRow {
    store::allocs::AllocRow {
        id: 1,
        org_id: 1,
        org_name: "acme".into(),
        org_category: "academia".into(),
        name: "grant".into(),
        granted_gpu_s: 1000.0 * 3600.0,
        used_gpu_s: 0.0,
        valid_from_ms: Ms(T0 - 86_400_000),
        valid_until_ms: Ms(T0 + 365 * 86_400_000),
        qos: 0,
        energy_j: 0.0,
        carbon_g: 0.0,
        expiry_noted: false,
        project_id: None,
    }
}

impl Rig {
    fn new(nodes: u32, snap: Snapshot) -> Rig {
        let clock = Arc::new(ManualClock::new(T0));
        let c2 = clock.clone();
        let exec = Arc::new(RecordingExecutor::new(move || {
            crate::time::Clock::now_ms(&*c2)
        }));
        let (tx, rx) = mpsc::channel(64);
        let f = factory(nodes);
        let shared = Arc::new(Shared {
            store: store::Store::detached(),
            tenancy: Tenancy::empty(Isolation::single_user()),
            audit_id: Default::default(),
            outbox_id: Default::default(),
            tx,
            executor: exec.clone(),
            telemetry: None,
            stats: Default::default(),
            metrics: Default::default(),
            controller_alive: std::sync::atomic::AtomicBool::new(true),
            clock: clock.clone(),
            catalog: None,
            sites: vec!["s".into()],
            factory: Arc::new(factory(nodes)),
            limits: crate::ratelimit::RateLimits::new(Default::default()),
            serving: Default::default(),
            gateway_reports: Default::default(),
            sessions: crate::sessions::Sessions::new(Default::default()),
            spaces: None,
        });
        let cfg = CtlConfig {
            policy: f.scheduler.policy().expect("a policy"),
            factory: f,
            throughputs: Throughputs::new(),
            tick: Duration::from_secs(3600),
            poll: Duration::from_secs(3600),
            bootstrap_token: None,
            isolation: Isolation::single_user(),
            node_power: Vec::new(),
            grid_refresh: Duration::from_secs(3600),
            preflight_min_nodes: 0,
            max_active_jobs_per_org: 0,
        };
        let mut c = Controller::empty(cfg, shared.clone());
        c.journal = Journal::Recorded(Vec::new());
        c.restore(snap);
        c.after_load();
        Rig {
            c,
            rx,
            shared,
            exec,
            clock,
        }
    }

    fn fresh(nodes: u32) -> Rig {
        Rig::new(
            nodes,
            Snapshot {
                allocs: vec![alloc_row()],
                ..Snapshot::default()
            },
        )
    }

    fn now(&self) -> Ms {
        Ms(crate::time::Clock::now_ms(&*self.clock))
    }

    /// One turn of the loop now: commands, polls, a pass, launches.
    async fn step(&mut self) {
        let now = self.now();
        assert!(self.c.step(now, &mut self.rx).await, "the turn failed");
    }

    async fn ask(&mut self, who: &Principal, action: Action) -> Answer {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.shared
            .tx
            .try_send(Cmd {
                who: who.clone(),
                action,
                reply,
            })
            .expect("room on the channel");
        self.step().await;
        rx.await.expect("an answer")
    }

    async fn submit(
        &mut self,
        who: &Principal,
        gpus: i64,
        priority: i64,
        preemptible: bool,
    ) -> i64 {
        let req = SubmitReq {
            time_limit_s: Some(3600),
            priority: Some(priority),
            preemptible: Some(preemptible),
            ..SubmitReq::new(1, gpus, vec!["train".into()])
        };
        let action = self.shared.submission(who, req).expect("valid fields");
        let (made, r) = self.ask(who, action).await.expect("accepted");
        assert_eq!(made, Made::Created);
        r.job().expect("a job").id.0
    }

    fn state(&self, job: i64) -> &str {
        &self.c.jobs[&job].row.state
    }

    /// Every statement committed so far.
    fn committed(&self) -> Vec<Op> {
        match &self.c.journal {
            Journal::Recorded(commits) => commits.iter().flatten().cloned().collect(),
            Journal::Store(_) => panic!("not recording"),
        }
    }

    /// The states job `id` was written with, in commit order.
    fn written_states(&self, id: i64) -> Vec<String> {
        self.committed()
            .into_iter()
            .filter(|o| {
                o.sql.starts_with("UPDATE jobs SET state") || o.sql.starts_with("INSERT INTO jobs")
            })
            .filter(|o| matches!(o.args.first(), Some(Arg::I(j)) if *j == id))
            .filter_map(|o| {
                let at = if o.sql.starts_with("INSERT") { 9 } else { 1 };
                match o.args.get(at) {
                    Some(Arg::S(s)) => Some(s.clone()),
                    _ => None,
                }
            })
            .collect()
    }
}

fn member() -> Principal {
    Principal {
        user_id: 2,
        name: "ada".into(),
        login: "acme/ada".into(),
        role: Role::Member,
        org_id: Some(1),
        token_id: 1,
        expires_ms: None,
    }
}

fn operator() -> Principal {
    Principal {
        user_id: 3,
        name: "op".into(),
        login: "op".into(),
        role: Role::Operator,
        org_id: None,
        token_id: 2,
        expires_ms: None,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn submit_commits_before_the_launch_and_starts_the_job() {
    let mut r = Rig::fresh(1);
    let id = r.submit(&member(), 2, 0, false).await;
    // committed as queued (before it was started), then as running
    assert_eq!(
        r.written_states(id).first().map(String::as_str),
        Some("queued")
    );
    assert_eq!(r.state(id), "running");
    let l = r.exec.launches();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].job, id);
    assert_eq!(l[0].accelerators.len(), 2);
    // the handle is recorded
    assert_eq!(
        r.c.jobs[&id].row.handle.as_deref(),
        Some(l[0].handle.as_str())
    );
    // a second one of 3 does not fit the 2 left
    let big = r.submit(&member(), 3, 0, false).await;
    assert_eq!(r.state(big), "queued");
    assert_eq!(r.exec.launches().len(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn refused_submissions_leave_no_trace() {
    let mut r = Rig::fresh(1);
    r.step().await;
    let before = r.committed().len();
    let req = |gpus: i64| SubmitReq::new(1, gpus, vec!["x".into()]);
    // more than the factory has, and an operator's
    let five = r
        .shared
        .submission(&member(), req(5))
        .expect("valid fields");
    let e = r
        .ask(&member(), five)
        .await
        .expect_err("5 GPUs on a node of 4");
    assert_eq!(
        e.status,
        axum::http::StatusCode::UNPROCESSABLE_ENTITY,
        "{e:?}"
    );
    // refused at the edge, before the controller
    let e = r
        .shared
        .submission(&operator(), req(1))
        .expect_err("operators do not submit");
    assert_eq!(e.code, "forbidden");
    assert!(r.c.jobs.is_empty());
    assert_eq!(
        r.committed().len(),
        before,
        "a refused command wrote something"
    );
    assert!(r.exec.launches().is_empty());
}

#[tokio::test(flavor = "current_thread")]
async fn a_run_that_ends_frees_its_accelerators_and_is_charged() {
    let mut r = Rig::fresh(1);
    let a = r.submit(&member(), 4, 0, false).await;
    let b = r.submit(&member(), 4, 0, false).await;
    assert_eq!((r.state(a), r.state(b)), ("running", "queued"));
    r.clock.advance(1_800_000);
    r.exec.end_job(a, gigafab_exec::Outcome::Completed);
    r.step().await;
    assert!(
        !r.c.jobs.contains_key(&a),
        "an ended job leaves the controller"
    );
    assert_eq!(
        r.written_states(a).last().map(String::as_str),
        Some("completed")
    );
    assert_eq!(r.state(b), "running");
    assert_eq!(
        r.exec.launched().iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![a, b]
    );
    // half an hour on 4 accelerators: 2 GPU-hours
    let used = r.c.allocs[&1].used_at(r.now()) / 3600.0;
    assert!((used - 2.0).abs() < 0.01, "{used}");
}

#[tokio::test(flavor = "current_thread")]
async fn cancel_a_queued_job_and_a_running_one() {
    let mut r = Rig::fresh(1);
    let a = r.submit(&member(), 4, 0, false).await;
    let b = r.submit(&member(), 4, 0, false).await;
    // the queued one: cancelled at once, never launched
    let (_, v) = r
        .ask(&member(), Action::Cancel(gigafab_api::JobId(b)))
        .await
        .unwrap();
    assert_eq!(v.job().unwrap().state, "cancelled");
    assert!(!r.c.jobs.contains_key(&b));
    // the running one: its run is stopped through the executor
    r.ask(&member(), Action::Cancel(gigafab_api::JobId(a)))
        .await
        .unwrap();
    r.step().await;
    let cancels = r.exec.cancels();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].job, a);
    r.step().await;
    assert!(!r.c.jobs.contains_key(&a));
    assert_eq!(
        r.written_states(a).last().map(String::as_str),
        Some("cancelled")
    );
    assert_eq!(r.exec.launched().len(), 1, "{:?}", r.exec.launched());
    // a job the controller does not hold: the store tells
    let (_, v) = r
        .ask(&member(), Action::Cancel(gigafab_api::JobId(a)))
        .await
        .unwrap();
    assert!(matches!(v, Reply::NotHeld));
}

#[tokio::test(flavor = "current_thread")]
async fn a_higher_priority_job_preempts_a_preemptible_one() {
    let mut r = Rig::fresh(1);
    let low = r.submit(&member(), 4, -10, true).await;
    assert_eq!(r.state(low), "running");
    r.clock.advance(60_000);
    let high = r.submit(&member(), 4, 0, false).await;
    r.step().await;
    // the low one is asked to stop and goes back to the queue; the high
    // one runs on the accelerators it freed
    assert_eq!(
        r.exec.cancels().iter().map(|c| c.job).collect::<Vec<_>>(),
        vec![low]
    );
    r.step().await;
    assert_eq!(r.state(high), "running");
    assert_eq!(r.state(low), "queued");
    assert!(r.written_states(low).contains(&"queued".to_string()));
    let launched: Vec<i64> = r.exec.launched().iter().map(|l| l.0).collect();
    assert_eq!(launched, vec![low, high]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_drained_node_takes_no_job_until_resumed() {
    let mut r = Rig::fresh(1);
    let (_, n) = r
        .ask(
            &operator(),
            Action::Drain("p-0".into(), true, Some("fan".into())),
        )
        .await
        .unwrap();
    let Reply::Node(n) = n else { panic!("{n:?}") };
    assert_eq!(n.state, gigafab_api::NodeState::Drained);
    assert_eq!(n.reason.as_deref(), Some("fan"));
    let j = r.submit(&member(), 1, 0, false).await;
    assert_eq!(r.state(j), "queued");
    assert!(r.exec.launches().is_empty());
    // a member may not drain
    let e = r
        .ask(&member(), Action::Drain("p-0".into(), false, None))
        .await
        .expect_err("members do not resume nodes");
    assert_eq!(e.code, "forbidden");
    r.ask(&operator(), Action::Drain("p-0".into(), false, None))
        .await
        .unwrap();
    r.step().await;
    assert_eq!(r.state(j), "running");
    assert!(r.committed().iter().any(|o| o.sql.contains("drain")));
}

#[tokio::test(flavor = "current_thread")]
async fn a_restart_adopts_the_recorded_run_and_keeps_its_accelerators() {
    // what a first controller left in the store: job 7 running on all 4
    // accelerators of p-0 with handle run-7-1
    let running = JobRow {
        id: 7,
        org_id: 1,
        org: "acme".into(),
        user_id: 2,
        user: "ada".into(),
        alloc_id: 1,
        project_id: None,
        name: "train".into(),
        spec: serde_json::to_string(&StoredSpec {
            command: vec!["train".into()],
            ..StoredSpec::default()
        })
        .unwrap(),
        gpus: 4,
        time_limit_s: 3600,
        state: "running".into(),
        reason: None,
        exit_code: None,
        submitted_ms: Ms(T0 - 120_000),
        started_ms: Some(Ms(T0 - 60_000)),
        ended_ms: None,
        accelerators: Some(r#"["p-0/0","p-0/1","p-0/2","p-0/3"]"#.into()),
        handle: Some("run-7-1".into()),
        gpu_s: 0.0,
        energy_j: 0.0,
        carbon_g: None,
        energy_source: None,
        stopping: None,
    };
    let mut r = Rig::new(
        1,
        Snapshot {
            allocs: vec![alloc_row()],
            max_job_id: 7,
            jobs: vec![running],
            ..Snapshot::default()
        },
    );
    r.step().await;
    assert_eq!(r.exec.adopted(), vec![7]);
    assert_eq!(r.state(7), "running");
    // new ids follow the store's
    let next = r.submit(&member(), 1, 0, false).await;
    assert_eq!(next, 8);
    assert_eq!(
        r.state(next),
        "queued",
        "the adopted run holds every accelerator"
    );
    assert!(
        r.exec.launches().is_empty(),
        "an adopted run is not launched again"
    );
    r.clock.advance(60_000);
    r.exec.end_job(7, gigafab_exec::Outcome::Completed);
    r.step().await;
    assert!(!r.c.jobs.contains_key(&7));
    assert_eq!(r.state(next), "running");
}

/// A replica of endpoint 7, number `k`, of an endpoint of priority class 0
/// with `min` replicas: ranked as the twin ranks it.
async fn submit_replica(r: &mut Rig, min: u32, k: u32) -> i64 {
    let req = SubmitReq::new(1, 1, vec!["serve".into()]);
    let mut valid = crate::submission::validate(&member(), req, &r.c.core.factory)
        .expect("valid fields")
        .replica_of(7);
    let (priority, preemptible) = gigafab_core::serving::replica_rank(0, min, k);
    valid.priority = priority as i64;
    valid.req.preemptible = Some(preemptible);
    let action = r.shared.submission_with(valid, Vec::new());
    let (_, rep) = r.ask(&member(), action).await.expect("accepted");
    rep.job().expect("a job").id.0
}

#[tokio::test(flavor = "current_thread")]
async fn replicas_rank_against_training_as_in_the_twin() {
    let mut r = Rig::fresh(1);
    // the node is full of preemptible training of the same class
    let train = r.submit(&member(), 4, 0, true).await;
    assert_eq!(r.state(train), "running");
    r.clock.advance(60_000);
    // a replica above the minimum waits: it preempts nothing
    let extra = submit_replica(&mut r, 0, 0).await;
    r.step().await;
    assert_eq!(r.state(extra), "queued");
    assert!(r.exec.cancels().is_empty());
    // a replica within the minimum outranks it and takes an accelerator
    let kept = submit_replica(&mut r, 1, 0).await;
    r.step().await;
    assert_eq!(
        r.exec.cancels().iter().map(|c| c.job).collect::<Vec<_>>(),
        vec![train]
    );
    r.step().await;
    assert_eq!(r.state(kept), "running");
    // a service for the scheduler: no time limit to plan with or reserve
    let j = &r.c.core.jobs[r.c.jobs[&kept].core as usize];
    assert!(j.service && j.time_limit_s.is_none());
    assert!(!j.preemptible && j.priority == 1);
    assert_eq!(
        r.c.jobs[&kept].row.time_limit_s,
        crate::submission::SERVICE_LIMIT_S
    );
    // the same in the twin's core: a service of the same rank
    let mut twin = gigafab_core::SchedCore::new(
        r.c.core.factory.clone(),
        r.c.core.policy.clone(),
        gigafab_core::Throughputs::default(),
    );
    let a = twin.add_allocation(gigafab_core::AllocationSpec::open(
        "acme",
        gigafab_core::Category::Academia,
    ));
    let spec = gigafab_core::JobSpec {
        priority: 1,
        ..gigafab_core::JobSpec::simple("replica", 0.0, 1, 1.0)
    };
    let t = twin.submit_service(&spec, a, 0.0);
    let tj = &twin.jobs[t as usize];
    assert_eq!(
        (
            tj.service,
            tj.time_limit_s,
            tj.base,
            tj.preemptible,
            tj.priority
        ),
        (j.service, j.time_limit_s, j.base, j.preemptible, j.priority)
    );
}
