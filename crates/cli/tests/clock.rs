//! The controller on a manual clock with a recording fake executor, in
//! process: scheduling times are the clock's, exact and repeatable; time
//! moves when the test says so, never by waiting for it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gigafab_core::{Factory, Policy};
use gigafab_exec::{ExecError, Executor, ExitRecord, LaunchSpec, Outcome, RunStatus};
use gigafab_server::ctl::{CtlConfig, Isolation};
use gigafab_server::time::{Clock, ManualClock, rfc3339};
use gigafab_server::{HttpLimits, ServeConfig};
use serde_json::{Value, json};

const TOKEN: &str = "gf_clock_test_token_0123456789abcdef";
/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000;
const DAY: i64 = 86_400_000;

/// Records launches (job, the clock's time); runs end when the test ends them.
struct Fake {
    clock: Arc<ManualClock>,
    launched: Mutex<Vec<(i64, i64)>>,
    ended: Mutex<HashSet<i64>>,
}

impl Executor for Fake {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn launch(&self, s: &LaunchSpec) -> Result<String, ExecError> {
        self.launched
            .lock()
            .unwrap()
            .push((s.job_id, self.clock.now_ms()));
        Ok(format!("fake-{}", s.job_id))
    }
    fn poll(&self, job: i64, _: &str) -> Result<RunStatus, ExecError> {
        Ok(if self.ended.lock().unwrap().contains(&job) {
            RunStatus::Exited(ExitRecord {
                outcome: Outcome::Completed,
                exit_code: Some(0),
                signal: None,
                message: "exit code 0".into(),
                ended_at_ms: self.clock.now_ms(),
            })
        } else {
            RunStatus::Running
        })
    }
    fn cancel(&self, _: i64, _: &str) -> Result<(), ExecError> {
        Ok(())
    }
    fn adopt(&self, _: i64, h: Option<&str>) -> Result<(Option<String>, RunStatus), ExecError> {
        Ok((h.map(str::to_string), RunStatus::Running))
    }
    fn log_paths(&self, job: i64) -> (PathBuf, PathBuf) {
        (
            format!("/nonexistent/{job}.out").into(),
            format!("/nonexistent/{job}.err").into(),
        )
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
    let fake = Arc::new(Fake {
        clock: clock.clone(),
        launched: Mutex::default(),
        ended: Mutex::default(),
    });
    let factory = Factory::parse(
        "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\n",
        "t.toml",
    )
    .unwrap();
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: gigafab_server::store::sqlite_url(&dir),
        ctl: CtlConfig {
            factory,
            policy: Policy::by_name("backfill").unwrap(),
            throughputs: gigafab_core::Throughputs::new(),
            tick: Duration::from_millis(20),
            poll: Duration::from_millis(20),
            bootstrap_token: Some(TOKEN.into()),
            isolation: Isolation::single_user(),
        },
        executor: fake.clone(),
        telemetry: None,
        existing_job_dirs: Vec::new(),
        http: HttpLimits::default(),
        clock: clock.clone(),
    };
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
    assert!(
        fake.launched.lock().unwrap().is_empty(),
        "launched before its window"
    );
    clock.advance(DAY);
    let j = until_state(&url, id, "running").await;
    assert_eq!(j["started_at"], rfc3339(T0 + DAY), "{j:#}");
    assert_eq!(*fake.launched.lock().unwrap(), vec![(id, T0 + DAY)]);
    clock.advance(90_000);
    fake.ended.lock().unwrap().insert(id);
    let j = until_state(&url, id, "completed").await;
    assert_eq!(j["ended_at"], rfc3339(T0 + DAY + 90_000), "{j:#}");
    assert_eq!(fake.launched.lock().unwrap().len(), 1, "launched once");
    server.stop_handle().stop();
    server.wait().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
