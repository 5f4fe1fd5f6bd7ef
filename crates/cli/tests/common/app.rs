//! The end-to-end harness of the `gigafab serve` tests: the real binary on
//! port 0 with a fresh store (SQLite in a fresh directory, or a fresh
//! PostgreSQL database), every answer checked against the server's own
//! OpenAPI document, and `both_stores!` for a test run on each store.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::openapi;

pub const TOKEN: &str = "gf_test_bootstrap_token_0123456789";

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A running `gigafab serve` with its data directory and database.
pub struct App {
    pub child: Option<Child>,
    pub url: String,
    pub dir: PathBuf,
    pub db_url: Option<String>,
    pub http: reqwest::Client,
    /// Extra `serve` arguments.
    pub extra: Vec<String>,
    /// The server's OpenAPI document, once fetched.
    pub doc: std::sync::OnceLock<Value>,
}

/// The PostgreSQL variants are ignored by default and run with
/// `--include-ignored` (CI): run without a server, they fail rather than
/// pass without testing anything.
pub fn pg_base() -> Option<String> {
    match std::env::var("GIGAFAB_TEST_POSTGRES") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => panic!("GIGAFAB_TEST_POSTGRES is not set: eval \"$(bash .ci/postgres.sh)\""),
    }
}

pub fn fresh_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("gigafab-serve-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl App {
    /// Starts a server on a fresh store; `None` when the PostgreSQL
    /// variant cannot run here.
    pub async fn spawn(db: Db, tag: &str) -> Option<App> {
        let dir = fresh_dir(tag);
        let db_url = match db {
            Db::Sqlite => None,
            Db::Postgres => {
                let base = pg_base()?;
                let (head, _) = base.rsplit_once('/').expect("URL with a database");
                let name = format!(
                    "gf_{}_{}_{}",
                    tag,
                    std::process::id(),
                    dir.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .rsplit('-')
                        .next()
                        .unwrap()
                );
                Some(format!("{head}/{name}"))
            }
        };
        let mut app = App {
            child: None,
            url: String::new(),
            dir,
            db_url,
            http: reqwest::Client::new(),
            extra: Vec::new(),
            doc: std::sync::OnceLock::new(),
        };
        app.start(Some(TOKEN));
        Some(app)
    }

    /// (Re)starts the server process on the same store.
    pub fn start(&mut self, bootstrap: Option<&str>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gigafab"));
        cmd.args([
            "serve",
            "--single-user",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&self.dir)
        .args(["--kill-grace", "0.5", "--tick-ms", "100", "--poll-ms", "50"])
        .env_remove("GIGAFAB_DATABASE")
        .env_remove("GIGAFAB_BOOTSTRAP_TOKEN")
        .env("RUST_LOG", "warn")
        // tests fire up to 64 clients at once from one address, each with
        // its own connection, beside the pool's idle ones
        .env("GIGAFAB_MAX_CONNECTIONS_PER_CLIENT", "256")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(u) = &self.db_url {
            cmd.args(["--database", u]);
        }
        cmd.args(&self.extra);
        if let Some(t) = bootstrap {
            cmd.env("GIGAFAB_BOOTSTRAP_TOKEN", t);
        }
        let mut child = cmd.spawn().expect("start gigafab serve");
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let mut url = None;
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.split("listening on ").nth(1) {
                url = Some(rest.split_whitespace().next().unwrap().to_string());
                break;
            }
        }
        let url = url.unwrap_or_else(|| panic!("server did not start:\n{seen}"));
        // keep draining stderr so the server never blocks on it
        std::thread::spawn(move || for _ in lines {});
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stdout), &mut s);
        });
        self.url = url;
        self.child = Some(child);
    }

    /// The store's URL (to reach it with the server stopped).
    pub fn store_url(&self) -> String {
        self.db_url
            .clone()
            .unwrap_or_else(|| gigafab_server::store::sqlite_url(&self.dir))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut rq = self.http.request(m, format!("{}{}", self.url, path));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let resp = rq.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        // every answer a test receives fits the server's OpenAPI document
        if path != "/api/v1/openapi.json" {
            let doc = self.openapi().await;
            // a success the document does not declare is a lie to generators
            if (200..300).contains(&status)
                && openapi::declares(&doc, method, path, status) == Some(false)
            {
                panic!("{method} {path} answered {status}, which openapi.json does not declare");
            }
            if let Some(schema) = openapi::answer_schema(&doc, method, path, status)
                && let Some(e) = openapi::check(&doc, schema, &v, "answer")
            {
                panic!("{method} {path} -> {status} disagrees with openapi.json: {e}\n{v:#}");
            }
        }
        (status, v)
    }

    /// The server's OpenAPI document (fetched once per app).
    pub async fn openapi(&self) -> Value {
        if let Some(d) = self.doc.get() {
            return d.clone();
        }
        let r = self
            .http
            .get(format!("{}/api/v1/openapi.json", self.url))
            .send()
            .await
            .expect("openapi.json");
        let d: Value = r.json().await.expect("openapi.json is JSON");
        let _ = self.doc.set(d.clone());
        d
    }

    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call("GET", path, Some(TOKEN), None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call("POST", path, Some(TOKEN), Some(body)).await;
        assert!(s == 201 || s == 200, "POST {path}: {s} {v}");
        v
    }

    /// `gigafab ARGS` against the server as `token`: (success, stdout,
    /// stderr).
    pub fn cli(&self, token: &str, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args(args)
            .env("GIGAFAB_SERVER", &self.url)
            .env("GIGAFAB_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A new user `name` of `org` with `role`: their token.
    pub async fn user_token(&self, name: &str, org: &str, role: &str) -> String {
        let u = self
            .post(
                "/api/v1/users",
                json!({"name": name, "org": org, "role": role}),
            )
            .await;
        u["token"].as_str().unwrap().to_string()
    }

    pub async fn submit(&self, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", "/api/v1/jobs", Some(token), Some(body))
            .await
    }

    pub async fn logs(&self, id: i64, query: &str) -> String {
        let r = self
            .http
            .get(format!("{}/api/v1/jobs/{id}/logs{query}", self.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.unwrap()
    }

    /// Waits until job `id` is in one of `states`; returns it.
    pub async fn wait_state(&self, id: i64, states: &[&str], secs: u64) -> Value {
        let t = Instant::now();
        loop {
            let j = self.get(&format!("/api/v1/jobs/{id}")).await;
            if states.contains(&j["state"].as_str().unwrap()) {
                return j;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "job {id} stuck: {j:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.kill9();
        // stop what the jobs left running, then remove the directory
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.dir.to_string_lossy().as_ref())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

pub fn events(job: &Value) -> Vec<(String, String)> {
    job["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

macro_rules! both_stores {
    ($name:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) = App::spawn(Db::Sqlite, stringify!($name)).await {
                    super::$name(app).await;
                }
            }
            #[ignore = "needs PostgreSQL: eval \"$(bash .ci/postgres.sh)\"; cargo test -- --include-ignored"]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) = App::spawn(Db::Postgres, stringify!($name)).await {
                    super::$name(app).await;
                }
            }
        }
    };
}
