//! `gigafab serve` as a service: a busy port on the first start, graceful
//! stop on SIGTERM, the configuration file and the environment, `/metrics`,
//! `/health`, the access log. Each test starts the real binary on a fresh
//! data directory (embedded SQLite).

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_port_on_the_first_start_loses_no_token() {
    let dir = fresh_dir("busy");
    let data = dir.join("data");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let e = Server::start(
        &dir,
        &[
            "--listen",
            &port,
            "--data-dir",
            data.to_str().unwrap(),
            "--telemetry",
            "off",
        ],
        &[],
    )
    .err()
    .expect("the start must fail on a busy port");
    assert!(e.contains(&format!("cannot listen on {port}")), "{e}");
    assert_eq!(
        e.matches("Address already in use").count(),
        1,
        "said once: {e}"
    );
    assert!(!e.contains("GIGAFAB_TOKEN"), "{e}");
    // nothing was created: the next start is a first start and shows its token
    drop(busy);
    let s = Server::start(&dir, &strs(&base_args(&data)), &[]).unwrap();
    let out = s.stdout();
    let t0 = Instant::now();
    let mut out = out;
    while !out.contains("GIGAFAB_TOKEN=") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
        out = s.stdout();
    }
    let token = out
        .split("GIGAFAB_TOKEN=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no admin token on the first real start:\n{out}"))
        .to_string();
    let who = s.json("GET", "/api/v1/whoami", &token, None).await;
    assert_eq!(who["role"], "admin", "{who}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_jobs_are_adopted() {
    let dir = fresh_dir("term");
    let data = dir.join("data");
    let mut s = Server::plain(&dir, &data);
    let marker = dir.join("ran");
    let job = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1,
                "command": ["sh", "-c", format!("sleep 2; echo x >> {}", marker.display())]})),
        )
        .await;
    let id = job["id"].as_i64().unwrap();
    s.wait_state(TOKEN, id, &["running"]).await;
    // acknowledged just before the signal: must be there after the restart
    let queued = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 4, "type": "mi300x", "command": ["true"]})),
        )
        .await;
    let st = s.sigterm();
    assert!(st.success(), "exit {st:?}:\n{}", s.stderr());
    let err = s.stderr();
    assert!(err.contains("SIGTERM: stopping"), "{err}");
    assert!(err.contains("stopped; running jobs go on"), "{err}");
    // the job outlives the server
    assert!(!marker.exists(), "the job ended too early");
    let mut s2 = Server::plain(&dir, &data);
    let j = s2
        .wait_state(TOKEN, id, &["completed", "failed", "lost"])
        .await;
    assert_eq!(j["state"], "completed", "{j:#}");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "x\n",
        "ran exactly once"
    );
    let q = s2
        .wait_state(TOKEN, queued["id"].as_i64().unwrap(), &["completed"])
        .await;
    assert_eq!(q["exit_code"], 0);
    // SIGINT stops it too
    let pid = s2.child.id().to_string();
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    let t = Instant::now();
    while s2.child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "no stop after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s2.stderr().contains("SIGINT: stopping"), "{}", s2.stderr());
    drop(s2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_access_log() {
    let dir = fresh_dir("metrics");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    let (code, _) = s.call("GET", "/metrics", None, None).await;
    assert_eq!(code, 401);
    // two jobs complete, one fails; one waits on a drained node
    let mut ids = Vec::new();
    for cmd in ["true", "true", "exit 3"] {
        let j = s
            .json("POST", "/api/v1/jobs", TOKEN, Some(json!({"allocation": 1, "gpus": 2, "type": "h100", "command": ["sh", "-c", cmd]})))
            .await;
        ids.push(j["id"].as_i64().unwrap());
    }
    for id in &ids {
        s.wait_state(TOKEN, *id, &["completed", "failed"]).await;
    }
    s.json(
        "POST",
        "/api/v1/fleet/nodes/amd-0/drain",
        TOKEN,
        Some(json!({})),
    )
    .await;
    s.json(
        "POST",
        "/api/v1/jobs",
        TOKEN,
        Some(json!({"allocation": 1, "gpus": 1, "type": "mi300x", "command": ["true"]})),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (code, text) = s.call("GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(code, 200, "{text}");
    let value = |line: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no `{line}` in\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("gigafab_jobs_submitted_total"), 4.0);
    assert_eq!(value("gigafab_jobs_started_total"), 3.0);
    assert_eq!(
        value("gigafab_jobs_finished_total{state=\"completed\"}"),
        2.0
    );
    assert_eq!(value("gigafab_jobs_finished_total{state=\"failed\"}"), 1.0);
    assert_eq!(value("gigafab_jobs_queued"), 1.0);
    assert_eq!(value("gigafab_pool_queued_jobs{pool=\"amd\"}"), 1.0);
    assert!(value("gigafab_pool_oldest_wait_seconds{pool=\"amd\"}") > 0.2);
    assert_eq!(
        value("gigafab_accelerators{pool=\"amd\",state=\"drained\"}"),
        4.0
    );
    assert_eq!(
        value("gigafab_accelerators{pool=\"nvidia\",state=\"idle\"}"),
        4.0
    );
    assert_eq!(
        value("gigafab_accelerators{pool=\"nvidia\",state=\"busy\"}"),
        0.0
    );
    assert_eq!(
        value("gigafab_allocation_queued_jobs{id=\"1\",allocation=\"default\",org=\"default\"}"),
        1.0
    );
    assert!(
        value("gigafab_allocation_used_gpu_hours{id=\"1\",allocation=\"default\",org=\"default\"}")
            > 0.0
    );
    assert!(
        value("gigafab_allocation_energy_kwh{id=\"1\",allocation=\"default\",org=\"default\"}")
            > 0.0
    );
    assert!(value("gigafab_schedule_pass_seconds_count") >= 1.0);
    assert!(value("gigafab_commit_seconds_count") >= 1.0);
    assert!(value("gigafab_site_power_watts{site=\"local\"}") >= 0.0);
    assert!(value("gigafab_http_requests_total{method=\"POST\",code=\"201\"}") >= 4.0);
    // a member may not read them
    let u = s
        .json(
            "POST",
            "/api/v1/users",
            TOKEN,
            Some(json!({"name": "m", "org": "default", "role": "member"})),
        )
        .await;
    let (code, _) = s.call("GET", "/metrics", u["token"].as_str(), None).await;
    assert_eq!(code, 403);
    // health: what docs/api.md says
    let h = s.json("GET", "/api/v1/health", TOKEN, None).await;
    assert_eq!(h["status"], "ok");
    assert!(h["scheduler"]["passes"].as_u64().unwrap() >= 1, "{h}");
    assert!(h["scheduler"]["commits"].as_u64().unwrap() >= 1, "{h}");
    assert_eq!(h["scheduler"]["queued"], 1, "{h}");
    assert!(h["scheduler"]["last_pass_us"].is_u64(), "{h}");
    // the access log names each request without its query string
    let err = s.stderr();
    assert!(
        err.lines()
            .any(|l| l.contains("gigafab::access") && l.contains("/metrics") && l.contains("401")),
        "{err}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_environment_and_flags() {
    let dir = fresh_dir("config");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().to_string();
    let cfg = dir.join("gigafab.toml");
    // paths in the file are relative to it
    std::fs::write(
        &cfg,
        format!(
            "listen = \"{port}\"\ndata_dir = \"state\"\ntick-ms = 100\nlog-format = \"json\"\ntelemetry = \"off\"\npolicy = \"nope\"\n"
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    // the file's policy is refused ...
    let e = Server::start(&dir, &["--config", c, "--listen", "127.0.0.1:0"], &[])
        .err()
        .unwrap();
    assert!(e.contains("unknown policy `nope`"), "{e}");
    // ... unless the environment sets one; and the flag's --listen wins
    // over the file's busy port
    let s = Server::start(
        &dir,
        &["--config", c, "--listen", "127.0.0.1:0"],
        &[
            ("GIGAFAB_POLICY", "fifo"),
            ("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN),
        ],
    )
    .unwrap();
    assert!(dir.join("state/gigafab.db").exists() || dir.join("state").is_dir());
    s.json("GET", "/api/v1/whoami", TOKEN, None).await;
    // log-format json from the file: every log line on stderr is JSON
    let t = Instant::now();
    while !s.stderr().contains("gigafab::access") && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let access = s
        .stderr()
        .lines()
        .find(|l| l.contains("gigafab::access"))
        .map(str::to_string)
        .expect("an access log line");
    let v: Value = serde_json::from_str(&access).unwrap_or_else(|e| panic!("{e}: {access}"));
    assert_eq!(v["path"], "/api/v1/whoami");
    // the server's own lines too: one JSON object per line
    for l in s.stderr().lines() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v["level"].is_string(), "{l}");
    }
    drop(s);
    // environment variable for a flag, no file
    let s = Server::start(
        &dir,
        &[
            "--data-dir",
            dir.join("state2").to_str().unwrap(),
            "--telemetry",
            "off",
        ],
        &[
            ("GIGAFAB_LISTEN", "127.0.0.1:0"),
            ("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN),
        ],
    )
    .unwrap();
    assert!(s.url.starts_with("http://127.0.0.1:"), "{}", s.url);
    drop(s);
    // unknown keys and bad TOML are errors with the file and line
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\n\nlisten_port = 3\n").unwrap();
    let e = Server::start(&dir, &["--config", c], &[]).err().unwrap();
    assert!(
        e.contains("gigafab.toml:3: unknown key `listen_port`"),
        "{e}"
    );
    assert!(e.contains("data-dir"), "lists the known keys: {e}");
    std::fs::write(&cfg, "listen = \n").unwrap();
    let e = Server::start(&dir, &["--config", c], &[]).err().unwrap();
    assert!(e.contains("gigafab.toml:1"), "{e}");
    drop(busy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refusals_say_what_the_fleet_has() {
    let dir = fresh_dir("refusals");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    let submit = |args: &[&str]| {
        let o = gigafab()
            .arg("submit")
            .args(args)
            .env("GIGAFAB_SERVER", &s.url)
            .env("GIGAFAB_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (ok, e) = submit(&["--gpus", "9", "--", "true"]);
    assert!(!ok);
    assert_eq!(e.matches("unsatisfiable").count(), 1, "said once: {e}");
    assert!(
        e.contains("nvidia (1 nodes × 4 h100"),
        "names the pools: {e}"
    );
    let (ok, e) = submit(&["--type", "a200", "--", "true"]);
    assert!(!ok);
    assert!(e.contains("unknown accelerator type `a200`"), "{e}");
    assert!(e.contains("this fleet has: h100, mi300x"), "{e}");
    assert!(
        e.contains("gh200") && e.contains("mi250x") && e.contains("a100"),
        "{e}"
    );
    // a bare --time is minutes, as in Slurm
    let (ok, e) = submit(&["--time", "2", "--", "true"]);
    assert!(ok, "{e}");
    let j = s.json("GET", "/api/v1/jobs/1", TOKEN, None).await;
    assert_eq!(j["time_limit_s"], 120, "{j}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_of_a_real_h200_replays_as_measured_energy() {
    let dir = fresh_dir("h200");
    let data = dir.join("data");
    let rec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../telemetry/tests/fixtures/h200-matmul-replay.json")
        .display()
        .to_string();
    let mut args = base_args(&data);
    let n = args.len();
    args[n - 1] = format!("replay:{rec}");
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    assert!(
        s.stderr().contains("GPU telemetry from replay"),
        "{}",
        s.stderr()
    );
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "type": "h100", "command": ["sleep", "3"]})),
        )
        .await;
    let j = s
        .wait_state(TOKEN, j["id"].as_i64().unwrap(), &["completed"])
        .await;
    assert_eq!(j["energy_source"], "measured", "{j:#}");
    // the GPU's recorded draw (79..693 W, in 0.5 s counter steps) plus the
    // modelled node share (350 W); the model alone would say 542.5 + 350 W
    let w = j["avg_power_w"].as_f64().unwrap();
    assert!((350.0 + 40.0..=350.0 + 700.0).contains(&w), "{w}");
    assert!(
        (w - 892.5).abs() > 1.0,
        "{w}: the model's figure, not the recording's"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_decided_but_never_launched_starts_after_a_restart() {
    let dir = fresh_dir("never");
    let data = dir.join("data");
    let mut s = Server::plain(&dir, &data);
    // an allocation that starts tomorrow keeps the job queued
    let al = s
        .json(
            "POST",
            "/api/v1/allocations",
            TOKEN,
            Some(json!({"org": "default", "gpu_hours": 1,
            "valid_from": "2099-01-01T00:00:00Z"})),
        )
        .await;
    let marker = dir.join("ran");
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": al["id"], "gpus": 1, "type": "h100",
            "command": ["sh", "-c", format!("echo once >> {}", marker.display())]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    // the server dies between deciding the start (committed) and the launch
    let _ = s.child.kill();
    let _ = s.child.wait();
    let db = format!("sqlite://{}", data.join("gigafab.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlx::query("UPDATE jobs SET state = 'running', started_ms = ?, accelerators = ?, handle = NULL WHERE id = ?")
        .bind(now)
        .bind(r#"["nvidia-0/0"]"#)
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE allocations SET valid_from_ms = 0 WHERE id = ?")
        .bind(al["id"].as_i64().unwrap())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let s2 = Server::plain(&dir, &data);
    let j = s2.wait_state(TOKEN, id, &["completed", "failed"]).await;
    assert_eq!(j["state"], "completed", "{j:#}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "once\n");
    drop(s2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_controller_fails_health_and_stops_the_server() {
    let dir = fresh_dir("dead");
    let data = dir.join("data");
    let env = [("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN), ("GIGAFAB_FAULTS", "1")];
    let mut s = Server::start(&dir, &strs(&base_args(&data)), &env).unwrap();
    let (code, _) = s
        .call(
            "POST",
            "/api/v1/allocations",
            Some(TOKEN),
            Some(json!({"org": "default", "gpu_hours": 1, "name": "__controller_panic__"})),
        )
        .await;
    assert_eq!(code, 503);
    // the process exits with an error rather than answer 503 forever
    let t = Instant::now();
    let st = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "still serving:\n{}",
            s.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!st.success());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        s.stderr()
            .contains("the controller stopped (injected controller fault)"),
        "{}",
        s.stderr()
    );
    // a restart reloads the state and serves
    let s2 = Server::plain(&dir, &data);
    let h = s2.json("GET", "/api/v1/health", TOKEN, None).await;
    assert_eq!(h["status"], "ok");
    drop(s2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_never_share_one_sqlite_store() {
    let dir = fresh_dir("twostores");
    let db = format!("sqlite://{}?mode=rwc", dir.join("shared.db").display());
    let env = [("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)];
    let mut a1 = base_args(&dir.join("d1"));
    a1.extend(["--database".into(), db.clone()]);
    let s1 = Server::start(&dir, &strs(&a1), &env).unwrap();
    let mut a2 = base_args(&dir.join("d2"));
    a2.extend(["--database".into(), db]);
    let e = Server::start(&dir, &strs(&a2), &env)
        .err()
        .expect("a second server on the store");
    assert!(
        e.contains("another gigafab server is using the database"),
        "{e}"
    );
    drop(s1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_job_records_a_bounded_number_of_wait_events() {
    let dir = fresh_dir("waits");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    // 32 short jobs through 4 accelerators: the reason of the ones behind
    // flaps between "no gang free" and "priority" as runs end and start
    // (each runs long enough that the queue outlasts the submissions on a
    // loaded machine)
    let mut ids = Vec::new();
    for _ in 0..32 {
        let j = s
            .json("POST", "/api/v1/jobs", TOKEN, Some(json!({"allocation": 1, "gpus": 1, "type": "h100", "command": ["sleep", "0.5"]})))
            .await;
        ids.push(j["id"].as_i64().unwrap());
    }
    let mut most = 0;
    for id in ids {
        let j = s.wait_state(TOKEN, id, &["completed"]).await;
        let waits = j["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "waiting")
            .count();
        most = most.max(waits);
    }
    assert!(most <= 4, "a job recorded {most} waiting events");
    assert!(most >= 1, "jobs did wait");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_store_is_never_taken_for_a_first_start() {
    let dir = fresh_dir("lost");
    let data = dir.join("data");
    let env = [("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)];
    let mut s = Server::plain(&dir, &data);
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "command": ["true"]})),
        )
        .await;
    s.wait_state(TOKEN, j["id"].as_i64().unwrap(), &["completed"])
        .await;
    s.sigterm();
    for f in ["gigafab.db", "gigafab.db-wal", "gigafab.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let e = Server::start(&dir, &strs(&base_args(&data)), &env)
        .err()
        .expect("an empty store beside job directories must not start");
    assert!(
        e.contains("the store is empty but 1 job directories exist"),
        "{e}"
    );
    // moving the jobs aside is the way to start afresh
    std::fs::rename(data.join("jobs"), dir.join("old-jobs")).unwrap();
    let s = Server::plain(&dir, &data);
    // every error is JSON, even those made before a handler runs
    let (code, body) = s
        .call("GET", "/api/v1/jobs/%FF%FE", Some(TOKEN), None)
        .await;
    assert!((400..500).contains(&code), "{code}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_half_open_connections_are_closed_and_limited() {
    use std::io::{Read, Write};
    let dir = fresh_dir("conns");
    let data = dir.join("data");
    let mut args = base_args(&data);
    args.extend(["--max-connections", "4", "--header-timeout", "1"].map(String::from));
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let addr = s.url.trim_start_matches("http://").to_string();
    // three idle connections and one half-open request hold every slot
    let mut held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    held[3]
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // a fifth is closed at once, and the server says why
    let (code, _) = tokio::time::timeout(Duration::from_secs(5), async {
        match reqwest::Client::new()
            .get(format!("{}/api/v1/health", s.url))
            .send()
            .await
        {
            Ok(r) => (r.status().as_u16(), ()),
            Err(_) => (0, ()),
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "a connection past the limit was served");
    // the server's log line comes through its stderr pipe: wait for it
    let t = Instant::now();
    while !s.stderr().contains("connection limit of 4 reached")
        && t.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        s.stderr().contains("connection limit of 4 reached"),
        "{}",
        s.stderr()
    );
    // after the header timeout the server has closed all four
    std::thread::sleep(Duration::from_millis(1500));
    for (i, c) in held.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 256];
        let n = match c.read(&mut buf) {
            Ok(n) => n,
            // reset by the server: closed too
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!("connection {i} still open after the header timeout: {e}"),
        };
        // closed (0 bytes) or answered with a timeout error, never left open
        assert!(
            n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"),
            "connection {i} still open"
        );
    }
    let h = s.json("GET", "/api/v1/health", TOKEN, None).await;
    assert_eq!(h["status"], "ok");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_damaged_row_hides_no_ones_jobs_and_a_restart_names_it() {
    let dir = fresh_dir("badrow");
    let data = dir.join("data");
    let env = [("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)];
    let mut s = Server::plain(&dir, &data);
    let ids = s.complete_jobs(3).await;
    // damage one row behind the server's back (SQLite keeps what it is given)
    let db = format!("sqlite://{}", data.join("gigafab.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("UPDATE jobs SET gpus = 'many' WHERE id = ?")
        .bind(ids[1])
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let l = s
        .json("GET", "/api/v1/jobs?state=completed", TOKEN, None)
        .await;
    let items = l["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{l}");
    assert_eq!(
        items.iter().filter(|j| j["state"] == "completed").count(),
        2,
        "{l}"
    );
    assert!(
        items
            .iter()
            .any(|j| j["error"] == "store_damaged" && j["id"] == ids[1]),
        "{l}"
    );
    // a damaged waiting job (which a restart must load) is named, and the
    // server refuses to start rather than forget it
    let al = s
        .json(
            "POST",
            "/api/v1/allocations",
            TOKEN,
            Some(json!({"org": "default", "gpu_hours": 1,
            "valid_from": "2099-01-01T00:00:00Z"})),
        )
        .await;
    let q = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": al["id"], "gpus": 1, "command": ["true"]})),
        )
        .await;
    let qid = q["id"].as_i64().unwrap();
    s.sigterm();
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("UPDATE jobs SET gpus = 'many' WHERE id = ?")
        .bind(qid)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let e = Server::start(&dir, &strs(&base_args(&data)), &env)
        .err()
        .expect("a damaged store must not start");
    assert!(
        e.contains(&format!("job {qid} in the store cannot be read")),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_jobs_refuses_to_start() {
    let dir = fresh_dir("behind");
    let data = dir.join("data");
    let env = [("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)];
    let mut s = Server::plain(&dir, &data);
    let ids = s.complete_jobs(3).await;
    s.sigterm();
    // the last two jobs vanish from the database (as with a damaged WAL)
    let db = format!("sqlite://{}", data.join("gigafab.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    for t in ["job_events", "jobs"] {
        let col = if t == "jobs" { "id" } else { "job_id" };
        sqlx::query(&format!("DELETE FROM {t} WHERE {col} >= ?"))
            .bind(ids[1])
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let e = Server::start(&dir, &strs(&base_args(&data)), &env)
        .err()
        .expect("a store behind its job directories must not start");
    assert!(
        e.contains(&format!(
            "the store knows jobs up to {} but directories of 2 later jobs exist",
            ids[0]
        )),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_file_is_refused() {
    let dir = fresh_dir("corrupt");
    let data = dir.join("data");
    let env = [("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)];
    let mut s = Server::plain(&dir, &data);
    s.submit_true(50).await;
    s.sigterm();
    // everything into the main file first (the WAL may still hold it)
    let db = data.join("gigafab.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    // then garbage over the middle of the file
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() > 8192, "{} bytes", bytes.len());
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid - 2048..mid + 2048] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    for f in ["gigafab.db-wal", "gigafab.db-shm"] {
        let _ = std::fs::remove_file(data.join(f));
    }
    let e = Server::start(&dir, &strs(&base_args(&data)), &env)
        .err()
        .expect("a damaged database must not be served");
    assert!(e.contains("damaged") || e.contains("malformed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_write_ahead_log_is_refused_not_truncated() {
    let dir = fresh_dir("badwal");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    // 60 acknowledged jobs, queued behind a drained fleet (no job directory)
    let nodes = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
    for n in nodes["nodes"].as_array().unwrap() {
        let name = n["name"].as_str().unwrap();
        s.json(
            "POST",
            &format!("/api/v1/fleet/nodes/{name}/drain"),
            TOKEN,
            Some(json!({"reason": "test"})),
        )
        .await;
    }
    s.submit_true(60).await;
    // killed: the commits stay in the WAL, not yet in the database file
    drop(s);
    let wal = data.join("gigafab.db-wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let page = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let frames = (bytes.len() - 32) / (24 + page);
    assert!(frames > 60, "{frames} frames");
    let at = 32 + (frames / 2) * (24 + page) + 24 + 512;
    bytes[at..at + 256].fill(0xA5);
    std::fs::write(&wal, &bytes).unwrap();
    let e = Server::start(
        &dir,
        &strs(&base_args(&data)),
        &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)],
    )
    .err()
    .expect("a damaged WAL must not be served as if its later commits never were");
    assert!(
        e.contains("gigafab.db-wal is damaged at frame") && e.contains("move the -wal file aside"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restart reloads waiting jobs with the reason they had: it records no
/// second, identical "waiting" event for each of them (with thousands
/// queued, those writes stalled the controller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_records_no_second_identical_wait_event() {
    let dir = fresh_dir("rewait");
    let data = dir.join("data");
    let mut s = Server::plain(&dir, &data);
    let submit = |gpus: u32, cmd: &'static str| json!({"allocation": 1, "gpus": gpus, "type": "h100", "command": ["sh", "-c", cmd]});
    let blocker = s
        .json("POST", "/api/v1/jobs", TOKEN, Some(submit(4, "sleep 12")))
        .await;
    let blocker = blocker["id"].as_i64().unwrap();
    s.wait_state(TOKEN, blocker, &["running"]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let j = s
            .json("POST", "/api/v1/jobs", TOKEN, Some(submit(1, "true")))
            .await;
        ids.push(j["id"].as_i64().unwrap());
    }
    let waits = |j: &Value| -> Vec<String> {
        j["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "waiting")
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect()
    };
    for &id in &ids {
        let t = Instant::now();
        loop {
            let j = s
                .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
                .await;
            if !waits(&j).is_empty() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no wait event: {j:#}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(s.sigterm().success(), "{}", s.stderr());
    let s2 = Server::plain(&dir, &data);
    // a few scheduling passes after the restart
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for &id in &ids {
        let j = s2
            .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
            .await;
        assert_eq!(j["state"], "queued", "{j:#}");
        let w = waits(&j);
        assert_eq!(w.len(), 1, "job {id}: {w:?}");
        assert!(w[0].contains("no 1×h100 gang free"), "{w:?}");
    }
    s2.call(
        "DELETE",
        &format!("/api/v1/jobs/{blocker}"),
        Some(TOKEN),
        None,
    )
    .await;
    drop(s2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Executor names are the executor crate's: a site naming an unknown one
/// stops the server at start with the factory, the site and the names it
/// knows (the factory itself still loads, for `gigafab sim`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_site_executor_is_refused_by_name() {
    let dir = fresh_dir("badexec");
    let data = dir.join("data");
    let f = dir.join("f.toml");
    std::fs::write(
        &f,
        "name = \"two\"\n[[sites]]\nname = \"lab\"\nexecutor = \"k8s\"\n\
         [[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\n",
    )
    .unwrap();
    let mut args = base_args(&data);
    args.extend(["--factory".to_string(), f.display().to_string()]);
    let err = match Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]) {
        Ok(_) => panic!("started with executor k8s"),
        Err(e) => e,
    };
    assert!(
        err.contains("site `lab`: executor `k8s` is not an executor (one of: local, slurm)"),
        "{err}"
    );
    let sim = gigafab()
        .args(["sim", "-q", "--factory"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        sim.status.success(),
        "{}",
        String::from_utf8_lossy(&sim.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
