//! The controller on a manual clock with a recording fake executor, in
//! process: scheduling times are the clock's, exact and repeatable; time
//! moves when the test says so, never by waiting for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gigafab_core::{Factory, Policy};
use gigafab_exec::testing::RecordingExecutor;
use gigafab_server::ctl::CtlConfig;
use gigafab_server::isolation::Isolation;
use gigafab_server::time::{Clock, ManualClock, rfc3339};
use gigafab_server::{HttpLimits, ServeConfig};
use serde_json::{Value, json};

const TOKEN: &str = "gf_clock_test_token_0123456789abcdef";
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000;
const DAY: i64 = 86_400_000;

/// The shared recording executor on the test's manual clock.
fn fake(clock: &Arc<ManualClock>) -> Arc<RecordingExecutor> {
    let c = clock.clone();
    Arc::new(RecordingExecutor::new(move || c.now_ms()))
}

/// A server's settings on a fresh store in `dir`: one node of 4 H100,
/// the manual clock, the fake executor.
fn config(
    dir: &std::path::Path,
    clock: &Arc<ManualClock>,
    fake: &Arc<RecordingExecutor>,
    policy: &str,
    tick: Duration,
) -> ServeConfig {
    ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: gigafab_server::store::sqlite_url(dir),
        ctl: CtlConfig {
            factory: Factory::parse(
                "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\n",
                "t.toml",
            )
            .unwrap(),
            policy: Policy::by_name(policy).unwrap(),
            throughputs: gigafab_core::Throughputs::new(),
            tick,
            poll: tick,
            bootstrap_token: Some(TOKEN.into()),
            isolation: Isolation::single_user(),
            node_power: Vec::new(),
            grid_refresh: std::time::Duration::from_secs(300),
            preflight_min_nodes: 0,
            max_active_jobs_per_org: 0,
        },
        executor: fake.clone(),
        telemetry: None,
        existing_job_dirs: Vec::new(),
        http: HttpLimits::default(),
        clock: clock.clone(),
        smtp: None,
        oidc: None,
        catalog: None,
        sessions: Default::default(),
        spaces: None,
    }
}

async fn call(url: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rq = reqwest::Client::new()
        .request(m, format!("{url}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    let r = rq.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Waits (on the real clock, briefly) for the controller to act on what
/// the manual clock says.
async fn until_state(url: &str, id: i64, state: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, j) = call(url, "GET", &format!("/api/v1/jobs/{id}"), None).await;
        if j["state"] == state {
            return j;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "job {id} not {state}: {j:#}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An allocation that opens tomorrow holds its job until the clock says
/// so; the start and the end carry the clock's times to the millisecond,
/// and the fake executor saw exactly one launch at that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_runs_on_the_clock_it_is_given() {
    let dir = std::env::temp_dir().join(format!("gigafab-clock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let fake = fake(&clock);
    let cfg = config(&dir, &clock, &fake, "backfill", Duration::from_millis(20));
    let server = gigafab_server::start(cfg).await.unwrap();
    let url = format!("http://{}", server.addr);
    let (s, a) = call(
        &url,
        "POST",
        "/api/v1/allocations",
        Some(json!({"org": "default", "gpu_hours": 10, "valid_from": rfc3339(T0 + DAY)})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let (s, j) = call(
        &url,
        "POST",
        "/api/v1/jobs",
        Some(json!({"allocation": a["id"], "gpus": 2, "command": ["train"], "time_limit_s": 3600})),
    )
    .await;
    assert_eq!(s, 201, "{j}");
    let id = j["id"].as_i64().unwrap();
    assert_eq!(j["submitted_at"], rfc3339(T0));
    // a day of waiting takes no time: the controller reads the clock
    let t = Instant::now();
    loop {
        let (_, j) = call(&url, "GET", &format!("/api/v1/jobs/{id}"), None).await;
        if j["reason"]
            .as_str()
            .is_some_and(|r| r.contains("starts at"))
        {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "no reason: {j:#}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fake.launched().is_empty(), "launched before its window");
    clock.advance(DAY);
    let j = until_state(&url, id, "running").await;
    assert_eq!(j["started_at"], rfc3339(T0 + DAY), "{j:#}");
    assert_eq!(fake.launched(), vec![(id, T0 + DAY)]);
    clock.advance(90_000);
    fake.end_job(id, gigafab_exec::Outcome::Completed);
    let j = until_state(&url, id, "completed").await;
    assert_eq!(j["ended_at"], rfc3339(T0 + DAY + 90_000), "{j:#}");
    assert_eq!(fake.launched().len(), 1, "launched once");
    server.stop_handle().stop();
    server.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request with the token `token`, answered within 5 s (a request left
/// waiting on a controller that does not run fails the test, not hangs it).
async fn call_as(
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut rq = reqwest::Client::new()
        .request(m, format!("{url}{path}"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(5));
    if let Some(b) = body {
        rq = rq.json(&b);
    }
    match rq.send().await {
        Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
        Err(e) if e.is_timeout() => panic!("{method} {path}: no answer in 5 s"),
        Err(e) => panic!("{method} {path}: {e}"),
    }
}

/// Organisations, projects, users and tokens are the store's, not the
/// controller's: with the controller opened but never run (nothing takes
/// its commands), they are created, listed, used and revoked, durably,
/// and no command reaches the controller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenancy_does_not_go_through_the_controller() {
    let dir = std::env::temp_dir().join(format!("gigafab-tenancy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let fake = fake(&clock);
    let cfg = || config(&dir, &clock, &fake, "fifo", Duration::from_secs(3600));
    let mut opened = gigafab_server::open(cfg()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = gigafab_server::serve_api(listener, opened.shared.clone());

    let (s, o) = call_as(
        &url,
        TOKEN,
        "POST",
        "/api/v1/orgs",
        Some(json!({"name": "acme", "category": "sme"})),
    )
    .await;
    assert_eq!(s, 201, "{o}");
    assert_eq!(o["created_at"], rfc3339(T0), "the clock it is given");
    let (s, u) = call_as(
        &url,
        TOKEN,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "alice", "org": "acme", "role": "owner"})),
    )
    .await;
    assert_eq!(s, 201, "{u}");
    let alice = u["token"].as_str().unwrap().to_string();
    let (s, w) = call_as(&url, &alice, "GET", "/api/v1/whoami", None).await;
    assert_eq!(
        (s, &w["user"], &w["org"]),
        (200, &json!("alice"), &json!("acme"))
    );
    let (s, p) = call_as(
        &url,
        &alice,
        "POST",
        "/api/v1/projects",
        Some(json!({"org": "acme", "name": "llm"})),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let (s, dup) = call_as(
        &url,
        &alice,
        "POST",
        "/api/v1/projects",
        Some(json!({"org": "acme", "name": "llm"})),
    )
    .await;
    assert_eq!((s, &dup["error"]), (409, &json!("conflict")), "{dup}");
    let (s, t) = call_as(&url, &alice, "POST", "/api/v1/tokens", None).await;
    assert_eq!(s, 201, "{t}");
    let second = t["token"].as_str().unwrap().to_string();
    let (s, list) = call_as(&url, &alice, "GET", "/api/v1/tokens", None).await;
    assert_eq!(
        (s, list["items"].as_array().unwrap().len()),
        (200, 2),
        "{list}"
    );
    let (s, _) = call_as(
        &url,
        &alice,
        "DELETE",
        &format!("/api/v1/tokens/{}", t["id"]),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call_as(&url, &second, "GET", "/api/v1/whoami", None).await;
    assert_eq!(s, 401, "a revoked token stops at once");
    // nothing of it was asked of the controller
    assert!(
        opened.rx.try_recv().is_err(),
        "a tenancy request reached the controller"
    );
    // a command does go to the controller, and waits while it does not run
    let (s, _) = {
        let url = url.clone();
        let r = tokio::spawn(async move {
            call_as(
                &url,
                TOKEN,
                "POST",
                "/api/v1/allocations",
                Some(json!({"org": "acme", "gpu_hours": 5})),
            )
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!r.is_finished(), "a grant answered without the controller");
        let cmd = opened.rx.recv().await.expect("the grant, as a command");
        assert!(
            matches!(&cmd.action, gigafab_server::ctl::Action::Grant(req, org)
                if req.org == "acme" && org.name == "acme"),
            "{:?}",
            cmd.action
        );
        drop(cmd);
        r.await.unwrap()
    };
    assert_eq!(s, 503, "the controller dropped the command");
    server.abort();
    drop(opened);

    // durable: a new server on the store knows all of it
    let opened = gigafab_server::open(cfg()).await.unwrap();
    let admin = opened.shared.principal(TOKEN).unwrap();
    let p = opened.shared.principal(&alice).expect("alice's token");
    assert_eq!((p.login.as_str(), p.org_id.is_some()), ("acme/alice", true));
    assert!(opened.shared.principal(&second).is_none(), "still revoked");
    let projects = opened.shared.tenancy.list_projects(&admin).unwrap();
    assert_eq!(projects.len(), 1);
    assert_eq!(
        (projects[0].org.as_str(), projects[0].name.as_str()),
        ("acme", "llm")
    );
    let audit = gigafab_server::store::audit::list(&opened.shared.store.pool, None, 100)
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .rev()
        .map(|e| (e.action.as_str(), e.user.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("bootstrap", "admin"),
            ("create_org", "admin"),
            ("create_user", "admin"),
            ("create_project", "acme/alice"),
            ("create_token", "acme/alice"),
            ("revoke_token", "acme/alice"),
        ]
    );
    drop(opened);
    let _ = std::fs::remove_dir_all(&dir);
}

/// An allocation's owners are told, through the outbox, once when it
/// comes within a week of its end and once when a charge exhausts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_hear_of_expiring_and_exhausted_allocations() {
    let dir = std::env::temp_dir().join(format!("gigafab-notices-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let fake = fake(&clock);
    let server = gigafab_server::start(config(
        &dir,
        &clock,
        &fake,
        "backfill",
        Duration::from_millis(20),
    ))
    .await
    .unwrap();
    let url = format!("http://{}", server.addr);
    call(
        &url,
        "POST",
        "/api/v1/orgs",
        Some(json!({"name": "acme", "category": "sme"})),
    )
    .await;
    for (name, email) in [("olga", "olga@acme.example"), ("otto", "otto@acme.example")] {
        let (s, u) = call(
            &url,
            "POST",
            "/api/v1/users",
            Some(json!({"name": name, "org": "acme", "role": "owner", "email": email})),
        )
        .await;
        assert_eq!(s, 201, "{u}");
    }
    // a member with an address hears nothing of allocations
    call(
        &url,
        "POST",
        "/api/v1/users",
        Some(json!({"name": "max", "org": "acme", "email": "max@acme.example"})),
    )
    .await;
    let (s, a) = call(
        &url,
        "POST",
        "/api/v1/allocations",
        Some(json!({"org": "acme", "gpu_hours": 1, "days": 3, "name": "short"})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let (s, j) = call(
        &url,
        "POST",
        "/api/v1/jobs",
        Some(json!({"allocation": a["id"], "gpus": 1, "command": ["train"], "time_limit_s": 3600})),
    )
    .await;
    assert_eq!(s, 201, "{j}");
    let id = j["id"].as_i64().unwrap();
    until_state(&url, id, "running").await;
    // the whole grant used: 1 accelerator for an hour
    clock.advance(3_600_000);
    fake.end_job(id, gigafab_exec::Outcome::Completed);
    until_state(&url, id, "completed").await;
    let t = Instant::now();
    let subjects = loop {
        let mails = gigafab_server::store::outbox::unsent(&server.shared.store.pool, 10, 100)
            .await
            .unwrap();
        if mails.len() >= 4 || t.elapsed() > Duration::from_secs(10) {
            break mails
                .into_iter()
                .map(|m| (m.recipient, m.subject))
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let until = rfc3339(T0 + 3 * DAY);
    assert_eq!(
        subjects,
        [
            (
                "olga@acme.example".into(),
                format!("[gigafab] allocation short expires on {until}")
            ),
            (
                "otto@acme.example".into(),
                format!("[gigafab] allocation short expires on {until}")
            ),
            (
                "olga@acme.example".into(),
                "[gigafab] allocation short is exhausted".into()
            ),
            (
                "otto@acme.example".into(),
                "[gigafab] allocation short is exhausted".into()
            ),
        ]
    );
    // once each: more passes add nothing
    clock.advance(60_000);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = gigafab_server::store::outbox::unsent(&server.shared.store.pool, 10, 100)
        .await
        .unwrap()
        .len();
    assert_eq!(n, 4);
    server.stop_handle().stop();
    server.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
