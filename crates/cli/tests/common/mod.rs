//! A `gigafab serve` process for the integration tests: started on a fresh
//! data directory, its stdout and stderr kept.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "gf_test_bootstrap_token_0123456789";

pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("gigafab-op-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn gigafab() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gigafab"));
    for v in [
        "GIGAFAB_DATABASE",
        "GIGAFAB_BOOTSTRAP_TOKEN",
        "GIGAFAB_CONFIG",
        "GIGAFAB_LISTEN",
        "GIGAFAB_DATA_DIR",
        "GIGAFAB_POLICY",
        "GIGAFAB_LOG_FORMAT",
    ] {
        c.env_remove(v);
    }
    c
}

/// A server process, its stdout and stderr kept.
pub struct Server {
    pub child: Child,
    pub url: String,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
    pub dir: PathBuf,
}

pub fn drain(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            let mut s = into.lock().unwrap();
            s.push_str(&l);
            s.push('\n');
        }
    });
}

impl Server {
    /// Starts `gigafab serve ARGS` (cwd `dir`) and waits until it listens;
    /// `Err(stderr)` if it exits first.
    /// A server on a fresh data directory `data` with the test's admin
    /// token and the default test options.
    pub fn plain(dir: &Path, data: &Path) -> Server {
        Server::start(
            dir,
            &strs(&base_args(data)),
            &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)],
        )
        .unwrap()
    }

    /// A server on `dir/data` that runs organisation `a`'s jobs as
    /// `gf-test-a` and `b`'s as `gf-test-b` (as root), with `extra`
    /// options.
    pub fn two_tenants(dir: &Path, extra: &[&str]) -> Server {
        test_account("gf-test-a");
        test_account("gf-test-b");
        let map = dir.join("accounts.toml");
        std::fs::write(&map, "[orgs]\na = \"gf-test-a\"\nb = \"gf-test-b\"\n").unwrap();
        let mut args = base_args(&dir.join("data"));
        args.extend(["--job-accounts".into(), map.display().to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        Server::start(dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap()
    }

    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let mut cmd = gigafab();
        cmd.arg("serve");
        // one identity for all, unless the test maps accounts itself
        if !args.contains(&"--job-accounts") {
            cmd.arg("--single-user");
        }
        cmd.args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start gigafab serve");
        let out = Arc::new(Mutex::new(String::new()));
        let err = Arc::new(Mutex::new(String::new()));
        drain(child.stdout.take().unwrap(), out.clone());
        drain(child.stderr.take().unwrap(), err.clone());
        let t = Instant::now();
        loop {
            let e = err.lock().unwrap().clone();
            if let Some(rest) = e.split("listening on ").nth(1) {
                let url = rest.split_whitespace().next().unwrap().to_string();
                return Ok(Server {
                    child,
                    url,
                    out,
                    err,
                    dir: dir.to_path_buf(),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(err.lock().unwrap().clone());
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no start:\n{e}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rq = reqwest::Client::new().request(m, format!("{}{}", self.url, path));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq.send().await.expect("request");
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn json(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let (s, t) = self.call(method, path, Some(token), body).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {t}");
        serde_json::from_str(&t).unwrap()
    }

    pub async fn wait_state(&self, token: &str, id: i64, states: &[&str]) -> Value {
        let t = Instant::now();
        loop {
            let j = self
                .json("GET", &format!("/api/v1/jobs/{id}"), token, None)
                .await;
            if states.contains(&j["state"].as_str().unwrap()) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "job {id} stuck: {j:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `n` one-accelerator `true` jobs on allocation 1 to completion;
    /// their ids.
    pub async fn complete_jobs(&self, n: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let body = serde_json::json!({"allocation": 1, "gpus": 1, "command": ["true"]});
            let j = self.json("POST", "/api/v1/jobs", TOKEN, Some(body)).await;
            ids.push(j["id"].as_i64().unwrap());
        }
        for id in &ids {
            self.wait_state(TOKEN, *id, &["completed"]).await;
        }
        ids
    }

    /// Organisations `orgs`, each with a member and an allocation of
    /// `gpu_hours`: (the member's token, the allocation's id) of each.
    /// Submits `n` one-accelerator `true` jobs on allocation 1 as the admin;
    /// returns their ids.
    pub async fn submit_true(&self, n: usize) -> Vec<i64> {
        let mut ids = Vec::new();
        for _ in 0..n {
            let body = serde_json::json!({"allocation": 1, "gpus": 1, "command": ["true"]});
            let j = self.json("POST", "/api/v1/jobs", TOKEN, Some(body)).await;
            ids.push(j["id"].as_i64().unwrap());
        }
        ids
    }

    pub async fn tenants(&self, orgs: &[&str], gpu_hours: f64) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for org in orgs {
            let body = serde_json::json!({"name": org, "category": "sme"});
            self.json("POST", "/api/v1/orgs", TOKEN, Some(body)).await;
            let body =
                serde_json::json!({"name": format!("{org}-u"), "org": org, "role": "member"});
            let u = self.json("POST", "/api/v1/users", TOKEN, Some(body)).await;
            let body = serde_json::json!({"org": org, "gpu_hours": gpu_hours});
            let al = self
                .json("POST", "/api/v1/allocations", TOKEN, Some(body))
                .await;
            out.push((
                u["token"].as_str().unwrap().to_string(),
                al["id"].as_i64().unwrap(),
            ));
        }
        out
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    pub fn sigterm(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return st;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "no stop after SIGTERM:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.dir.to_string_lossy().as_ref())
            .status();
    }
}

pub fn base_args(data: &Path) -> Vec<String> {
    vec![
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--tick-ms".into(),
        "100".into(),
        "--poll-ms".into(),
        "50".into(),
        "--kill-grace".into(),
        "0.5".into(),
        "--telemetry".into(),
        "off".into(),
    ]
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Tests that need root (jobs as other accounts, cgroups) are ignored by
/// default and run with `--include-ignored` (CI, as root): run without
/// root, they fail rather than pass without testing anything.
pub fn require_root(test: &str) {
    // SAFETY: plain syscall.
    assert!(
        unsafe { libc::geteuid() } == 0,
        "{test} needs root (jobs run as other POSIX accounts): run it as root"
    );
}

/// A POSIX account for tests (made once, kept: accounts are cheap and the
/// machine is a test machine).
pub fn test_account(name: &str) -> (u32, u32) {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "--user-group", name])
            .status()
            .expect("useradd");
        assert!(st.success() || id("-u").is_some(), "useradd {name} failed");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}
