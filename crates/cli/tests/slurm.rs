//! `gigafab serve --executor slurm` against a real Slurm cluster: the
//! daemons `.ci/slurm.sh` starts on this machine (one node with 4 h100 and
//! 4 mi300x declared as GRES). Needs `GIGAFAB_TEST_SLURM=1` and `SLURM_CONF`
//! (`eval "$(bash .ci/slurm.sh env)"`): the tests are `#[ignore]`d, run
//! with `cargo test -- --include-ignored` (as CI does), and fail without
//! a cluster.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "gf_slurm_test_token_0123456789";

/// The Slurm tests are ignored by default and run with
/// `--include-ignored` (CI): run without a cluster, they fail rather than
/// pass without testing anything.
fn require_slurm() {
    assert!(
        std::env::var("GIGAFAB_TEST_SLURM").as_deref() == Ok("1"),
        "no Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\""
    );
}

fn gigafab() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gigafab"))
}

struct Server {
    child: Option<Child>,
    url: String,
    http: reqwest::Client,
}

impl Server {
    fn start(dir: &std::path::Path) -> Server {
        Server::start_with(dir, &["--single-user"])
    }

    /// Starts a server with `extra` arguments (the identity rule).
    fn start_with(dir: &std::path::Path, extra: &[&str]) -> Server {
        Server::start_env(dir, extra, &[])
    }

    /// Starts a server with `extra` arguments and environment variables.
    fn start_env(dir: &std::path::Path, extra: &[&str], env: &[(&str, String)]) -> Server {
        // the fleet gigafab schedules on is the one Slurm reports
        let factory = dir.join("slurm.toml");
        if !factory.exists() {
            let out = gigafab()
                .args(["fleet", "import-slurm", "--out"])
                .arg(&factory)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut child = gigafab()
            .arg("serve")
            .args(extra)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--executor",
                "slurm",
                "--tick-ms",
                "100",
                "--poll-ms",
                "200",
                "--telemetry",
                "off",
                "--data-dir",
            ])
            .arg(dir)
            .arg("--factory")
            .arg(&factory)
            .env("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let url = loop {
            let l = lines
                .next()
                .unwrap_or_else(|| panic!("server died:\n{seen}"))
                .unwrap();
            seen.push_str(&l);
            seen.push('\n');
            if let Some(r) = l.split("listening on ").nth(1) {
                break r.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Server {
            child: Some(child),
            url,
            http: reqwest::Client::new(),
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rq = self
            .http
            .request(m, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.unwrap();
        let s = r.status().as_u16();
        let t = r.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
    }

    async fn submit(&self, body: Value) -> i64 {
        let (s, v) = self.call("POST", "/api/v1/jobs", Some(body)).await;
        assert_eq!(s, 201, "{v}");
        v["id"].as_i64().unwrap()
    }

    async fn wait(&self, id: i64, states: &[&str], secs: u64) -> Value {
        let t = Instant::now();
        loop {
            let (_, j) = self.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
            if states.contains(&j["state"].as_str().unwrap_or("")) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "job {id} stuck: {j:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn logs(&self, id: i64) -> String {
        let (_, v) = self
            .call("GET", &format!("/api/v1/jobs/{id}/logs"), None)
            .await;
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn fresh(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gigafab-slurm-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn sh(s: &str) -> Value {
    json!(["sh", "-c", s])
}

/// Slurm's default output file (`slurm-<id>.out` in the submitting
/// directory) never lands in the working tree: every job's output goes to
/// its own directory.
fn assert_no_stray_slurm_output() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for dir in [root.clone(), root.join("crates/cli")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            assert!(
                !(name.starts_with("slurm-") && name.ends_with(".out")),
                "{}: Slurm output in the working tree",
                e.path().display()
            );
        }
    }
}

#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_under_slurm_with_exit_codes_logs_and_cancel() {
    require_slurm();
    let dir = fresh("run");
    // a variable of the server's environment never reaches a job
    let secret = [("GIGAFAB_TEST_SERVER_SECRET", "s3cret".to_string())];
    let s = Server::start_env(&dir, &["--single-user"], &secret);
    // the imported fleet: one node, 4 h100 + 4 mi300x, and a fifth h100 in
    // 7 MIG instances (7 schedulable slices)
    let (_, fleet) = s.call("GET", "/api/v1/fleet", None).await;
    assert_eq!(fleet["accelerators"], 15, "{fleet}");
    assert_eq!(fleet["physical_accelerators"], 9, "{fleet}");
    let ok = s
        .submit(json!({"allocation": 1, "gpus": 2, "type": "h100",
        "command": sh("echo gpus=$SLURM_GPUS_ON_NODE job=$GIGAFAB_JOB_ID secret=${GIGAFAB_TEST_SERVER_SECRET:-none} slurm=$SLURM_JOB_NAME")}))
        .await;
    let bad = s.submit(json!({"allocation": 1, "gpus": 1, "type": "mi300x", "command": sh("echo oops >&2; exit 3")})).await;
    let j = s.wait(ok, &["completed", "failed"], 60).await;
    assert_eq!(j["state"], "completed", "{j:#}");
    let log = s.logs(ok).await;
    assert!(
        log.starts_with(&format!("gpus=2 job={ok} secret=none slurm=gigafab-")),
        "{log}"
    );
    assert!(log.ends_with(&format!("-{ok}\n")), "{log}");
    // its allocation is charged what Slurm's accounting says it ran, not
    // what the server watched
    if std::env::var("GIGAFAB_TEST_SLURM_ACCOUNTING").as_deref() == Ok("1") {
        let inst = std::fs::read_to_string(dir.join("instance-id")).unwrap();
        let name = format!("gigafab-{}-{ok}", inst.trim());
        let t = Instant::now();
        let elapsed: f64 = loop {
            let out = Command::new("sacct")
                .args([
                    "-a",
                    "-n",
                    "-P",
                    "-X",
                    "-S",
                    "now-1days",
                    "-o",
                    "ElapsedRaw",
                ])
                .args(["--name", &name])
                .output()
                .unwrap();
            if let Ok(e) = String::from_utf8_lossy(&out.stdout).trim().parse() {
                break e;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "{name} not in accounting: {out:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let charged = j["gpu_hours"].as_f64().unwrap() * 3600.0;
        assert!(
            (charged - 2.0 * elapsed).abs() < 1e-6,
            "charged {charged} GPU-s, Slurm says {elapsed} s on 2: {j:#}"
        );
        let (_, full) = s.call("GET", &format!("/api/v1/jobs/{ok}"), None).await;
        assert!(
            full.to_string().contains("by the engine's accounting"),
            "{full:#}"
        );
    }
    let j = s.wait(bad, &["completed", "failed"], 60).await;
    assert_eq!(j["state"], "failed", "{j:#}");
    assert_eq!(j["exit_code"], 3);
    assert!(j["reason"].as_str().unwrap().contains("Slurm job"), "{j:#}");
    // cancel a running job: scancel
    let long = s
        .submit(json!({"allocation": 1, "gpus": 1, "type": "h100", "command": sh("sleep 120")}))
        .await;
    s.wait(long, &["running"], 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (st, _) = s
        .call("DELETE", &format!("/api/v1/jobs/{long}"), None)
        .await;
    assert_eq!(st, 200);
    let j = s
        .wait(long, &["cancelled", "failed", "completed"], 60)
        .await;
    assert_eq!(j["state"], "cancelled", "{j:#}");
    // the accounting history of that very job, as a twin workload
    if std::env::var("GIGAFAB_TEST_SLURM_ACCOUNTING").as_deref() == Ok("1") {
        let inst = std::fs::read_to_string(dir.join("instance-id")).unwrap();
        let name = format!("gigafab-{}-{ok}", inst.trim());
        let hist = dir.join("history.txt");
        let t = Instant::now();
        loop {
            let out = Command::new("sacct")
                .args([
                    "-a",
                    "-P",
                    "-X",
                    "-S",
                    "now-1days",
                    "--name",
                    &name,
                    "-o",
                    "JobID,JobName,Account,Submit,Start,End,State,AllocTRES,Timelimit",
                ])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("COMPLETED") {
                std::fs::write(&hist, text).unwrap();
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "sacct never showed {name}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let csv = dir.join("history.csv");
        let out = gigafab()
            .args(["workload", "import-sacct"])
            .arg(&hist)
            .arg("--out")
            .arg(&csv)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<String> = std::fs::read_to_string(&csv)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        assert_eq!(rows.len(), 1, "{rows:?}");
        let f: Vec<&str> = rows[0].split(',').collect();
        assert_eq!((f[2], f[4]), ("2", "h100"), "{rows:?}");
        // and the whole recent history, run through sacct by gigafab itself
        let out = gigafab()
            .args(["workload", "import-sacct", "--out"])
            .arg(dir.join("all.csv"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("wrote"));
    }
    // larger than the cluster: refused with a reason
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/jobs",
            Some(json!({"allocation": 1, "gpus": 5, "type": "h100", "command": ["true"]})),
        )
        .await;
    assert_eq!(
        (st, v["error"].as_str().unwrap()),
        (422, "unsatisfiable"),
        "{v}"
    );
    assert_no_stray_slurm_output();
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciles_after_slurmctld_and_gigafab_restarts() {
    require_slurm();
    let dir = fresh("restart");
    let marks = dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display().to_string();
    let mut s = Server::start(&dir);
    let id = s
        .submit(json!({"allocation": 1, "gpus": 1, "type": "h100",
            "command": sh(&format!("echo run >> {m}/a; sleep 12; echo done >> {m}/a"))}))
        .await;
    s.wait(id, &["running"], 30).await;
    // wait until Slurm runs it, then restart slurmctld under it
    let t = Instant::now();
    while !marks.join("a").exists() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the job never started under Slurm"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(root.join(".ci/slurm.sh"))
        .arg("restart-ctld")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // and kill -9 gigafab itself mid-run; the new one adopts the Slurm job
    s.kill9();
    let s = Server::start(&dir);
    let j = s.wait(id, &["completed", "failed"], 90).await;
    assert_eq!(j["state"], "completed", "{j:#}");
    let kinds: Vec<&str> = j["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"adopted"), "{kinds:?}");
    // it ran once
    assert_eq!(
        std::fs::read_to_string(marks.join("a")).unwrap(),
        "run\ndone\n"
    );
    assert_no_stray_slurm_output();
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[test]
fn fleet_import_matches_the_cluster() {
    require_slurm();
    let out = gigafab().args(["fleet", "import-slurm"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8_lossy(&out.stdout);
    assert!(
        toml.contains("accelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4"),
        "{toml}"
    );
    assert!(
        toml.contains("accelerator = \"mi300x\"\nnodes = 1\naccelerators_per_node = 4"),
        "{toml}"
    );
    // the 7 MIG instances of gres type h100-1g.10gb: one h100 in 1g.10gb
    assert!(
        toml.contains("accelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 1\n"),
        "{toml}"
    );
    assert!(toml.contains("slices = \"1g.10gb\""), "{toml}");
}

#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_site_runs_on_its_own_executor() {
    require_slurm();
    let dir = fresh("sites");
    // a lab site run locally and an HPC site run by Slurm
    std::fs::write(
        dir.join("slurm.toml"),
        "name = \"mixed\"\n\
         [[sites]]\nname = \"lab\"\nexecutor = \"local\"\n\
         [[sites.pools]]\nname = \"lab-a10\"\naccelerator = \"a10\"\nnodes = 1\naccelerators_per_node = 2\n\
         [[sites]]\nname = \"hpc\"\nexecutor = \"slurm\"\n\
         [[sites.pools]]\nname = \"hpc-h100\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\n",
    )
    .unwrap();
    let s = Server::start(&dir);
    let hpc = s.submit(json!({"allocation": 1, "gpus": 1, "type": "h100", "command": sh("echo slurm=${SLURM_JOB_ID:-none}")})).await;
    let lab = s.submit(json!({"allocation": 1, "gpus": 1, "type": "a10", "command": sh("echo slurm=${SLURM_JOB_ID:-none}")})).await;
    s.wait(hpc, &["completed"], 60).await;
    s.wait(lab, &["completed"], 60).await;
    let (h, l) = (s.logs(hpc).await, s.logs(lab).await);
    assert!(h.starts_with("slurm=") && h.trim() != "slurm=none", "{h}");
    assert_eq!(l, "slurm=none\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs a Slurm cluster and root: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_under_slurm_as_their_tenants_accounts() {
    require_slurm();
    // SAFETY: plain syscall.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "needs root (jobs run as other POSIX accounts)"
    );
    for name in ["gf-test-a", "gf-test-b"] {
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "--user-group", name])
            .stderr(Stdio::null())
            .status();
    }
    let dir = fresh("accounts");
    let map = dir.join("accounts.toml");
    std::fs::write(&map, "[orgs]\na = \"gf-test-a\"\nb = \"gf-test-b\"\n").unwrap();
    let s = Server::start_with(&dir, &["--job-accounts", map.to_str().unwrap()]);
    let mut who = Vec::new();
    for org in ["a", "b"] {
        s.call(
            "POST",
            "/api/v1/orgs",
            Some(json!({"name": org, "category": "sme"})),
        )
        .await;
        let (_, u) = s
            .call(
                "POST",
                "/api/v1/users",
                Some(json!({"name": format!("{org}-u"), "org": org, "role": "member"})),
            )
            .await;
        let (_, al) = s
            .call(
                "POST",
                "/api/v1/allocations",
                Some(json!({"org": org, "gpu_hours": 10})),
            )
            .await;
        who.push((
            u["token"].as_str().unwrap().to_string(),
            al["id"].as_i64().unwrap(),
        ));
    }
    let submit = |t: &str, body: Value| {
        let (url, http, t) = (s.url.clone(), s.http.clone(), t.to_string());
        async move {
            let r = http
                .post(format!("{url}/api/v1/jobs"))
                .bearer_auth(t)
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v["id"].as_i64().unwrap_or_else(|| panic!("{v}"))
        }
    };
    let b = submit(
        &who[1].0,
        json!({"allocation": who[1].1, "gpus": 1, "type": "h100",
        "command": sh("id -un; echo b-secret; sleep 4")}),
    )
    .await;
    s.wait(b, &["running"], 60).await;
    let a = submit(
        &who[0].0,
        json!({"allocation": who[0].1, "gpus": 1, "type": "h100",
        "env": {"DATA": dir.display().to_string(), "VICTIM": b.to_string()},
        "command": sh("id -un; cat $DATA/jobs/$VICTIM/stdout.log || echo cannot-read")}),
    )
    .await;
    let ja = s.wait(a, &["completed", "failed"], 90).await;
    assert_eq!(ja["state"], "completed", "{ja:#}");
    let jb = s.wait(b, &["completed", "failed"], 90).await;
    assert_eq!(jb["state"], "completed", "{jb:#}");
    let log = |id: i64| {
        std::fs::read_to_string(dir.join(format!("jobs/{id}/stdout.log"))).unwrap_or_default()
    };
    let (la, lb) = (log(a), log(b));
    assert!(la.starts_with("gf-test-a\n"), "{la}");
    assert!(
        la.contains("cannot-read") && !la.contains("b-secret"),
        "{la}"
    );
    assert_eq!(lb, "gf-test-b\nb-secret\n");
    // its files, from the server, as its account: its user's alone
    let files = |t: &str, path: String| {
        let (url, http, t) = (s.url.clone(), s.http.clone(), t.to_string());
        async move {
            let r = http
                .get(format!("{url}{path}"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (st, l) = files(&who[1].0, format!("/api/v1/jobs/{b}/files")).await;
    assert_eq!(st, 200, "{l}");
    assert!(
        l.contains("\"stdout.log\"") && l.contains("\"writable\":true"),
        "{l}"
    );
    let content = format!("/api/v1/jobs/{b}/files/content?path=stdout.log");
    assert_eq!(
        files(&who[1].0, content.clone()).await,
        (200, "gf-test-b\nb-secret\n".to_string())
    );
    assert_eq!(files(&who[0].0, content).await.0, 404);
    // Slurm's accounting sees each job under its allocation's account,
    // associated with the tenant's POSIX account
    // (slurmdbd records asynchronously: ask again for a while)
    let seen = |text: &str, user: &str, alloc: i64| {
        text.lines().any(|l| {
            l.starts_with(&format!("{user}|gigafab-")) && l.ends_with(&format!("-a{alloc}"))
        })
    };
    let t = Instant::now();
    loop {
        let out = Command::new("sacct")
            .args([
                "-a",
                "-n",
                "-P",
                "-X",
                "-S",
                "now-1hour",
                "-o",
                "User,Account",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if seen(&text, "gf-test-a", who[0].1) && seen(&text, "gf-test-b", who[1].1) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "accounts in sacct:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // and the allocation's Slurm account carries its grant: 10 GPU-hours
    let out = Command::new("sacctmgr")
        .args([
            "-n",
            "-P",
            "show",
            "assoc",
            "format=account,user,grptresmins",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.ends_with(&format!("-a{}||gres/gpu=600", who[0].1))),
        "{text}"
    );
    assert_no_stray_slurm_output();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Slurm associations of `account`: `account|user|grptresmins` lines.
fn associations(account: &str) -> Vec<String> {
    let out = Command::new("sacctmgr")
        .args([
            "-n",
            "-P",
            "show",
            "assoc",
            "format=account,user,grptresmins",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.split('|').next() == Some(account))
        .map(str::to_string)
        .collect()
}

/// Waits until `account`'s Slurm associations are `want` (slurmdbd may
/// take tens of seconds on a loaded machine).
async fn wait_associations(account: &str, want: &[String]) {
    let mut want = want.to_vec();
    want.sort();
    let t = Instant::now();
    loop {
        let mut got = associations(account);
        got.sort();
        if got == want {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(180),
            "{account}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// An allocation becomes a Slurm account as it is granted, before any job:
/// its grant as `GrpTRESMins`, each member's POSIX account associated; an
/// approved extension raises the limit.
#[ignore = "needs a Slurm cluster and root: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocations_become_slurm_accounts_when_granted() {
    require_slurm();
    // SAFETY: plain syscall.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "needs root (POSIX accounts)"
    );
    for name in ["gf-test-c", "gf-test-r"] {
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "--user-group", name])
            .stderr(Stdio::null())
            .status();
    }
    let dir = fresh("provision");
    let map = dir.join("accounts.toml");
    std::fs::write(
        &map,
        "[orgs]
c = \"gf-test-c\"
r = \"gf-test-r\"
",
    )
    .unwrap();
    let s = Server::start_with(&dir, &["--job-accounts", map.to_str().unwrap()]);
    let inst = std::fs::read_to_string(dir.join("instance-id")).unwrap();
    let inst = inst.trim();
    let mut tokens = Vec::new();
    for (org, cat) in [("c", "sme"), ("r", "public")] {
        s.call(
            "POST",
            "/api/v1/orgs",
            Some(json!({"name": org, "category": cat})),
        )
        .await;
        let (_, u) = s
            .call(
                "POST",
                "/api/v1/users",
                Some(json!({"name": format!("{org}-u"), "org": org, "role": "member"})),
            )
            .await;
        tokens.push((
            u["token"].as_str().unwrap().to_string(),
            u["id"].as_i64().unwrap(),
        ));
    }
    let (_, call) = s
        .call(
            "POST",
            "/api/v1/calls",
            Some(json!({"name": "x", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 100})),
        )
        .await;
    let call = call["id"].as_i64().unwrap();
    s.call(
        "POST",
        &format!("/api/v1/calls/{call}/reviewers"),
        Some(json!({"user": tokens[1].1})),
    )
    .await;
    let as_ = |t: &str, path: String, body: Option<Value>| {
        let (url, http, t) = (s.url.clone(), s.http.clone(), t.to_string());
        async move {
            let mut rq = http.post(format!("{url}{path}")).bearer_auth(t);
            if let Some(b) = body {
                rq = rq.json(&b);
            }
            let r = rq.send().await.unwrap();
            let st = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            assert!(st == 201 || st == 200, "{path}: {st} {v}");
            v
        }
    };
    // granted through the access workflow: an account before any job
    let r = as_(
        &tokens[0].0,
        "/api/v1/requests".into(),
        Some(json!({"call": call, "title": "first", "project": "p", "gpu_hours": 10, "days": 30})),
    )
    .await;
    let rid = r["id"].as_i64().unwrap();
    as_(&tokens[0].0, format!("/api/v1/requests/{rid}/submit"), None).await;
    let r = as_(
        &tokens[1].0,
        format!("/api/v1/requests/{rid}/reviews"),
        Some(json!({"score": 5, "verdict": "approve"})),
    )
    .await;
    let alloc = r["allocation"].as_i64().unwrap_or_else(|| panic!("{r}"));
    let account = format!("gigafab-{inst}-a{alloc}");
    wait_associations(
        &account,
        &[
            format!("{account}||gres/gpu=600"),
            format!("{account}|gf-test-c|"),
        ],
    )
    .await;
    // and by an admin's grant
    let (_, al) = s
        .call(
            "POST",
            "/api/v1/allocations",
            Some(json!({"org": "c", "gpu_hours": 1})),
        )
        .await;
    let admin_account = format!("gigafab-{inst}-a{}", al["id"].as_i64().unwrap());
    wait_associations(
        &admin_account,
        &[
            format!("{admin_account}||gres/gpu=60"),
            format!("{admin_account}|gf-test-c|"),
        ],
    )
    .await;
    // an extension through the same call raises Slurm's limit
    let r = as_(
        &tokens[0].0,
        "/api/v1/requests".into(),
        Some(json!({"call": call, "title": "more", "extends": alloc, "gpu_hours": 5, "days": 0})),
    )
    .await;
    let rid = r["id"].as_i64().unwrap();
    as_(&tokens[0].0, format!("/api/v1/requests/{rid}/submit"), None).await;
    let r = as_(
        &tokens[1].0,
        format!("/api/v1/requests/{rid}/reviews"),
        Some(json!({"score": 5, "verdict": "approve"})),
    )
    .await;
    assert_eq!(r["state"], "approved", "{r}");
    wait_associations(
        &account,
        &[
            format!("{account}||gres/gpu=900"),
            format!("{account}|gf-test-c|"),
        ],
    )
    .await;
    assert_no_stray_slurm_output();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Wrappers for Slurm's commands, first on PATH, that log each call (the
/// command and its arguments, one line) to `log` and run the real one.
fn counting_path(dir: &std::path::Path, log: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("wrap-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for cmd in [
        "sbatch", "squeue", "sacct", "scontrol", "scancel", "sacctmgr",
    ] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .unwrap();
        let real = String::from_utf8_lossy(&real.stdout).trim().to_string();
        assert!(!real.is_empty(), "{cmd} not on PATH");
        let w = bin.join(cmd);
        std::fs::write(
            &w,
            format!(
                "#!/bin/sh\necho \"{cmd} $*\" >> {}\nexec {real} \"$@\"\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A poll cycle asks Slurm once for every running job (one `squeue` with
/// all their ids), a first launch is one `sbatch` with no lookup before
/// it, and the runs that end are looked up in accounting together.
#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_squeue_per_poll_cycle_for_all_running_jobs() {
    require_slurm();
    let dir = fresh("batched");
    let log = dir.join("calls.log");
    let path = counting_path(&dir, &log);
    let s = Server::start_env(&dir, &["--single-user"], &[("PATH", path)]);
    let n = 6;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            s.submit(
                json!({"allocation": 1, "command": sh("sleep 6"), "gpus": 1, "time_limit_s": 300}),
            )
            .await,
        );
    }
    for &id in &ids {
        s.wait(id, &["running"], 60).await;
    }
    let before = calls(&log).len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window: Vec<String> = calls(&log)[before..].to_vec();
    let squeues: Vec<&String> = window.iter().filter(|l| l.starts_with("squeue")).collect();
    // 2 s of 200-ms cycles: about 10 squeue calls, not 10 per job
    assert!(
        (4..=16).contains(&squeues.len()),
        "{} squeue calls in 2 s for {n} running jobs:\n{}",
        squeues.len(),
        window.join("\n")
    );
    for l in &squeues {
        let listed = l
            .split_whitespace()
            .skip_while(|a| *a != "-j")
            .nth(1)
            .unwrap_or("")
            .split(',')
            .count();
        assert_eq!(listed, n, "one squeue for all running jobs: {l}");
    }
    for &id in &ids {
        let j = s.wait(id, &["completed", "failed"], 60).await;
        assert_eq!(j["state"], "completed", "{j:#}");
    }
    let all = calls(&log);
    let count = |p: &str| all.iter().filter(|l| l.starts_with(p)).count();
    assert_eq!(
        count("sbatch"),
        n,
        "one sbatch per job:\n{}",
        all.join("\n")
    );
    assert_eq!(
        count("squeue -h -n"),
        0,
        "no lookup by name before a first launch:\n{}",
        all.join("\n")
    );
    assert!(
        !all.iter()
            .any(|l| l.starts_with("sacct ") && l.contains("--name")),
        "no lookup by name in accounting before a first launch:\n{}",
        all.join("\n")
    );
    // runs that left the queue in one cycle are looked up in one sacct
    // call; one whose record accounting has not written yet is asked
    // again on its own (so not a fixed count per job)
    let sacct = all.iter().filter(|l| l.starts_with("sacct ")).count();
    assert!(
        sacct < 2 * n,
        "{sacct} sacct calls for {n} jobs:\n{}",
        all.join("\n")
    );
}

/// Issue 29: a model endpoint's replica runs as a Slurm job on a compute
/// node, listens on the node's addresses (`{host}` is filled in by the
/// engine that runs it) and is reached by the gateway at the node's
/// `NodeAddr`.
#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_replicas_run_under_slurm_and_are_reached_at_their_node() {
    require_slurm();
    let dir = fresh("endpoint");
    let s = Server::start(&dir);
    // a model registered in place
    let model = dir.join("echo-model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), "w").unwrap();
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/catalog",
            Some(json!({"name": "echo", "kind": "model", "licence": "MIT", "org": "default"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/catalog/echo/versions",
            Some(json!({"path": model.display().to_string()})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let echo = include_str!("fixtures/echo_openai.py");
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/endpoints",
            Some(
                json!({"name": "echo", "model": "echo@1", "allocation": 1, "min_replicas": 1,
                "command": ["python3", "-c", echo, "{port}", "{host}"],
                "env": {"API_KEY": "{api_key}", "WHO": "slurm-replica"}}),
            ),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let t = Instant::now();
    let job = loop {
        let (_, v) = s.call("GET", "/api/v1/endpoints/echo", None).await;
        if let Some(r) = v["replicas"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["state"] == "ready"))
        {
            break r["job"].as_i64().unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(180), "{v:#}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    // it is a Slurm job, listening on all the node's addresses
    let out = Command::new("squeue")
        .args(["-h", "-o", "%j|%T|%N"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    let line = all
        .lines()
        .find(|l| {
            l.split('|')
                .next()
                .is_some_and(|n| n.ends_with(&format!("-{job}")))
        })
        .unwrap_or_else(|| panic!("replica job {job} is not in squeue:\n{all}"));
    assert!(line.contains("|RUNNING|"), "{line}");
    let logs = s.logs(job).await;
    assert!(logs.starts_with("serving on 0.0.0.0:"), "{logs}");
    let (_, key) = s
        .call("POST", "/api/v1/endpoints/echo/keys", Some(json!({})))
        .await;
    let key = key["key"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let r = s
            .http
            .post(format!("{}/v1/endpoints/echo/chat/completions", s.url))
            .bearer_auth(&key)
            .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["model"], "slurm-replica", "{v}");
    }
    let (st, _) = s.call("DELETE", "/api/v1/endpoints/echo", None).await;
    assert_eq!(st, 200);
    s.wait(job, &["cancelled"], 60).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 30: an interactive session's app runs as a Slurm job on a compute
/// node, listens on the node's addresses (`{host}`), holds its nodes for
/// its user alone (`--exclusive=user`: no other user's job can take its
/// port first), and is reached through the server's proxy at the node's
/// `NodeAddr`, its secret added by the proxy.
#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_under_slurm_and_is_reached_through_the_proxy() {
    require_slurm();
    let dir = fresh("session");
    let apps = dir.join("apps");
    std::fs::create_dir_all(&apps).unwrap();
    let app = include_str!("fixtures/session_app.py");
    std::fs::write(
        apps.join("probe.toml"),
        format!(
            "title = \"probe\"\ncommand = [\"python3\", \"-c\", '''\n{app}''']\nenv = {{ APP_TOKEN = \"{{token}}\", APP_HOST = \"{{host}}\" }}\nready = \"{{base}}api/status\"\nauth_header = \"token {{token}}\"\n[idle]\ncheck = \"traffic\"\n"
        ),
    )
    .unwrap();
    let s = Server::start_with(
        &dir,
        &["--single-user", "--apps-dir", apps.to_str().unwrap()],
    );
    // an app without a secret of its own needs a network per job: refused
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/sessions",
            Some(json!({"app": "vscode", "allocation": 1})),
        )
        .await;
    assert_eq!(st, 422, "{v}");
    let (st, v) = s
        .call(
            "POST",
            "/api/v1/sessions",
            Some(json!({"app": "probe", "allocation": 1, "time_limit_s": 600})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (id, job) = (v["id"].as_i64().unwrap(), v["job"].as_i64().unwrap());
    let t = Instant::now();
    loop {
        let (_, v) = s.call("GET", &format!("/api/v1/sessions/{id}"), None).await;
        if v["state"] == "ready" {
            break;
        }
        assert!(
            v["state"] != "ended" && t.elapsed() < Duration::from_secs(180),
            "{v:#}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // through the proxy: the app answers with the secret the proxy added
    let r = s
        .http
        .get(format!("{}/sessions/{id}/who", s.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let who: Value = r.json().await.unwrap();
    assert_eq!(who["path"], format!("/sessions/{id}/who"), "{who}");
    // a Slurm job on the node's addresses, its nodes its user's alone
    let logs = std::fs::read_to_string(dir.join(format!("jobs/{job}/job.sh"))).unwrap();
    assert!(logs.contains("APP_HOST=0.0.0.0\n"), "{logs}");
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i|%j"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    let slurm_id = all
        .lines()
        .find(|l| l.ends_with(&format!("-{job}")))
        .and_then(|l| l.split('|').next())
        .unwrap_or_else(|| panic!("session job {job} is not in squeue:\n{all}"))
        .to_string();
    let out = Command::new("scontrol")
        .args(["show", "job", &slurm_id])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("OverSubscribe=USER"), "{shown}");
    let (st, _) = s
        .call("POST", &format!("/api/v1/sessions/{id}/stop"), None)
        .await;
    assert_eq!(st, 200);
    s.wait(job, &["cancelled"], 60).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 30: `gigafab attach` reaches a running Slurm job: a shell started
/// with `srun --overlap --pty` inside the job's allocation, on its node.
#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_attaches_to_a_running_slurm_job() {
    use std::io::Write;
    require_slurm();
    let dir = fresh("attach");
    let s = Server::start(&dir);
    let job = s
        .submit(
            json!({"allocation": 1, "gpus": 1, "type": "h100", "time_limit_s": 300,
            "command": ["sleep", "120"]}),
        )
        .await;
    s.wait(job, &["running"], 60).await;
    // gigafab says running from submission; Slurm may still hold it: the
    // attach says so, and is asked again
    let t = Instant::now();
    let out = loop {
        let mut child = gigafab()
            .args(["attach", &job.to_string()])
            .env("GIGAFAB_SERVER", &s.url)
            .env("GIGAFAB_TOKEN", TOKEN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"echo inside=$SLURM_JOB_ID step=$SLURM_STEP_ID\nexit\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success() || !err.contains("does not run in Slurm now") {
            break out;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the job's own Slurm id, in a step of its own
    let id = text
        .split("inside=")
        .skip(1)
        .find_map(|x| x.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{text}"));
    let out = Command::new("squeue")
        .args(["-h", "-o", "%i|%j"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        all.lines().any(
            |l| l == format!("{id}|{}", l.split('|').nth(1).unwrap_or(""))
                && l.ends_with(&format!("-{job}"))
        ),
        "{id} is not job {job}'s Slurm id:\n{all}"
    );
    let (st, _) = s.call("DELETE", &format!("/api/v1/jobs/{job}"), None).await;
    assert_eq!(st, 200);
    s.wait(job, &["cancelled"], 60).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_gpu_runs_as_a_slurm_shard() {
    require_slurm();
    let dir = fresh("shards");
    // the cluster's first two h100s carry 4 shards each (.ci/slurm.sh)
    std::fs::write(
        dir.join("slurm.toml"),
        "name = \"shared\"\n\
         [[sites]]\nname = \"hpc\"\nexecutor = \"slurm\"\n\
         [[sites.pools]]\nname = \"h100-quarters\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\nfractions = 4\nshare = \"mps\"\n",
    )
    .unwrap();
    let s = Server::start(&dir);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            s.submit(json!({"allocation": 1, "gpus": 1, "gpu_share": 0.25,
                "command": sh("echo shards=${SLURM_SHARDS_ON_NODE:-none} cvd=$CUDA_VISIBLE_DEVICES slice=$GIGAFAB_SLICE; sleep 2")}))
                .await,
        );
    }
    for id in ids {
        let j = s.wait(id, &["completed", "failed"], 90).await;
        assert_eq!(j["state"], "completed", "{j:#}");
        let log = s.logs(id).await;
        // Slurm gave it one shard of a GPU, and the slice's description
        assert!(log.starts_with("shards=1 cvd="), "{log}");
        assert!(log.contains("slice=mps mps-4 20480"), "{log}");
        // and Slurm's record of it asked for a shard
        let mine = slurm_record(id, &dir);
        // one shard of an h100, the slice's own accelerator type
        assert!(mine.contains("gres:shard:h100:1"), "{mine}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 31: a MIG slice runs under Slurm as one GRES of its slice type
/// (the cluster's gres.conf names 7 `h100-1g.10gb` instances,
/// .ci/slurm.sh).
#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mig_slice_runs_as_its_slurm_gres() {
    require_slurm();
    let dir = fresh("mig");
    std::fs::write(
        dir.join("slurm.toml"),
        "name = \"mig\"\n\
         [[sites]]\nname = \"hpc\"\nexecutor = \"slurm\"\n\
         [[sites.pools]]\nname = \"h100-mig\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 1\nslices = \"1g.10gb\"\n",
    )
    .unwrap();
    let s = Server::start(&dir);
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            s.submit(json!({"allocation": 1, "gpus": 1, "gpu_profile": "1g.10gb",
                "command": sh("echo slice=$GIGAFAB_SLICE; sleep 1")}))
                .await,
        );
    }
    for id in ids {
        let j = s.wait(id, &["completed", "failed"], 90).await;
        assert_eq!(j["state"], "completed", "{j:#}");
        let log = s.logs(id).await;
        assert!(log.contains("slice=mig 1g.10gb 10240"), "{log}");
        let mine = slurm_record(id, &dir);
        // one MIG instance, by its slice type
        assert!(mine.contains("gres:gpu:h100-1g.10gb:1"), "{mine}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Slurm's record (`scontrol show job -o`) of gigafab job `id` of the
/// server whose jobs run in `dir`.
fn slurm_record(id: i64, dir: &std::path::Path) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", "-o"])
        .output()
        .unwrap();
    let all = String::from_utf8_lossy(&out.stdout);
    all.lines()
        .find(|l| {
            l.contains(&format!("-{id} ")) && l.contains(&format!("WorkDir={}", dir.display()))
        })
        .unwrap_or_else(|| panic!("no Slurm job for {id}:\n{all}"))
        .to_string()
}
