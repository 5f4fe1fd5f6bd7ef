//! `gigafab bench --scenario gateway`: what the model endpoints' gateway
//! adds to a request, side by side with nginx proxying the same replica.
//!
//! The server runs in this process on loopback with a fresh store and a
//! catalog. One endpoint has one replica: a separate process that answers
//! the OpenAI API at once with a fixed answer (`gigafab bench-echo`, a
//! fast echo backend: what is measured is the proxy, not a model). It
//! checks its key, as a real replica does. The same requests go three ways:
//!
//! - to the replica directly;
//! - through the gateway, with an endpoint key;
//! - through a standalone gateway (`gigafab gateway`, a process of its
//!   own in sync with the server);
//! - through Debian's nginx (`proxy_pass` with keep-alive, the replica's key
//!   set by nginx), when `nginx` is installed.
//!
//! Two measures per way:
//!
//! - **throughput**: `--clients` requests in flight, closed loop;
//! - **latency at a fixed rate**: `--rate` requests a second, open loop.
//!
//! The added latency is the gateway's p99 minus the direct p99. The cold
//! start is also measured: from a request at zero replicas to the
//! replica's job running (what gigafab adds), then to the answer.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench_serve::{ServeBench, Server, start};

/// What one way measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Way {
    pub way: &'static str,
    pub throughput_rps: f64,
    pub closed_p50_ms: f64,
    pub closed_p99_ms: f64,
    pub rate_rps: f64,
    pub rate_achieved_rps: f64,
    pub rate_p50_ms: f64,
    pub rate_p99_ms: f64,
    pub errors: usize,
    /// CPU time the proxy (gateway or nginx, all its threads and
    /// processes) spent per request of the closed loop, µs; None for the
    /// replica called directly.
    pub proxy_cpu_us: Option<f64>,
}

/// Whose CPU time a way's proxy is.
#[derive(Debug, Clone)]
enum Cpu {
    /// Nobody's (the replica called directly).
    None,
    /// These processes', all their threads.
    Pids(Vec<u32>),
    /// This process's threads but the load's.
    Here,
}

/// The name of the load's threads (left out of [`Cpu::Here`]).
const LOAD_THREAD: &str = "bench-load";

impl Cpu {
    /// CPU time so far, ns (from each thread's `schedstat`).
    fn ns(&self) -> Option<u64> {
        let (pids, skip_load) = match self {
            Cpu::None => return None,
            Cpu::Pids(p) => (p.clone(), false),
            Cpu::Here => (vec![std::process::id()], true),
        };
        let mut total = 0u64;
        for pid in pids {
            for t in std::fs::read_dir(format!("/proc/{pid}/task"))
                .ok()?
                .flatten()
            {
                let dir = t.path();
                if skip_load
                    && std::fs::read_to_string(dir.join("comm"))
                        .is_ok_and(|c| c.trim_end().starts_with(LOAD_THREAD))
                {
                    continue;
                }
                let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap_or_default();
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|x| x.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Some(total)
    }
}

/// `pid` and its children (nginx's master and workers).
fn with_children(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    for d in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = d.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(d.path().join("stat")).unwrap_or_default();
        // the parent is the second field after the command's closing paren
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|x| x.parse::<u32>().ok());
        if ppid == Some(pid) {
            all.push(child);
        }
    }
    all
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GatewayFigures {
    pub clients: usize,
    pub requests: usize,
    pub ways: Vec<Way>,
    /// Gateway p99 minus direct p99 at the fixed rate, ms.
    pub added_p99_ms: f64,
    /// Gateway throughput over nginx's (None without nginx).
    pub vs_nginx: Option<f64>,
    /// The standalone gateway's throughput over nginx's.
    pub standalone_vs_nginx: Option<f64>,
    /// The gateway's CPU time per request over nginx's (below 1: less).
    pub cpu_vs_nginx: Option<f64>,
    /// The standalone gateway's CPU time per request over nginx's.
    pub standalone_cpu_vs_nginx: Option<f64>,
    /// From a request at zero replicas to its replica's job running, s.
    pub cold_start_to_replica_s: f64,
    /// From that request to its answer, s (the echo backend starts in
    /// milliseconds; a real model's load time adds to this).
    pub cold_start_to_answer_s: f64,
}

const BODY: &str =
    r#"{"model":"echo","messages":[{"role":"user","content":"hello"}],"max_tokens":8}"#;

/// The echo backend: the OpenAI API answered at once, behind the key in
/// `API_KEY` (`gigafab bench-echo --port P`).
pub fn echo_backend(port: u16) -> Result<()> {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    let key = std::env::var("API_KEY").unwrap_or_default();
    let want = Arc::new(format!("Bearer {key}"));
    let ok = move |h: &HeaderMap, want: &str| {
        h.get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == want)
    };
    let (w1, w2) = (want.clone(), want);
    let app = axum::Router::new()
        .route(
            "/v1/models",
            axum::routing::get(move |h: HeaderMap| {
                let w = w1.clone();
                async move {
                    if !ok(&h, &w) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    axum::Json(json!({"object": "list", "data": [{"id": "echo", "object": "model"}]}))
                        .into_response()
                }
            }),
        )
        .route(
            "/v1/chat/completions",
            axum::routing::post(move |h: HeaderMap, _b: axum::body::Bytes| {
                let w = w2.clone();
                async move {
                    if !ok(&h, &w) {
                        return StatusCode::UNAUTHORIZED.into_response();
                    }
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"id":"echo","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
                    )
                        .into_response()
                }
            }),
        );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(l, app).await?;
        Ok(())
    })
}

/// A child process stopped when dropped: SIGTERM (nginx's master then
/// stops its workers), waited for.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        // SAFETY: a plain syscall on our own child's pid.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize] * 1e3
}

/// `n` requests to `url` from `clients` clients, closed loop: (req/s,
/// latencies s, errors).
async fn closed(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    clients: usize,
    n: usize,
) -> (f64, Vec<f64>, usize) {
    let t0 = Instant::now();
    let per = n.div_ceil(clients);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let k = per.min(n.saturating_sub(c * per));
        let (http, url, auth) = (http.clone(), url.to_string(), auth.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(k);
            let mut err = 0;
            for _ in 0..k {
                let t = Instant::now();
                match one(&http, &url, &auth).await {
                    true => lat.push(t.elapsed().as_secs_f64()),
                    false => err += 1,
                }
            }
            (lat, err)
        }));
    }
    let (mut all, mut errors) = (Vec::with_capacity(n), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    (all.len() as f64 / t0.elapsed().as_secs_f64(), all, errors)
}

async fn one(http: &reqwest::Client, url: &str, auth: &str) -> bool {
    match http
        .post(url)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
    {
        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// `n` requests at `rate` a second, open loop: (achieved req/s,
/// latencies s, errors).
async fn open(
    http: &reqwest::Client,
    url: &str,
    auth: &str,
    rate: f64,
    n: usize,
) -> (f64, Vec<f64>, usize) {
    let t0 = tokio::time::Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until(t0 + every * i as u32).await;
        let (http, url, auth) = (http.clone(), url.to_string(), auth.to_string());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            one(&http, &url, &auth)
                .await
                .then(|| t.elapsed().as_secs_f64())
        }));
    }
    let (mut all, mut errors) = (Vec::with_capacity(n), 0);
    for t in tasks {
        match t.await {
            Ok(Some(l)) => all.push(l),
            _ => errors += 1,
        }
    }
    (n as f64 / t0.elapsed().as_secs_f64(), all, errors)
}

/// [`measure_here`] on a runtime of its own (two threads): the load does
/// not take the server's threads, as it does not take nginx's processes.
async fn measure(
    way: &'static str,
    (url, auth): (&str, &str),
    cpu: Cpu,
    clients: usize,
    n: usize,
    rate: f64,
) -> Way {
    let (url, auth) = (url.to_string(), auth.to_string());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(LOAD_THREAD.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(LOAD_THREAD)
                .enable_all()
                .build()
                .expect("a runtime for the load");
            let _ = tx.send(rt.block_on(measure_here(way, (&url, &auth), cpu, clients, n, rate)));
        })
        .expect("the load's thread");
    rx.await.expect("the load's answer")
}

async fn measure_here(
    way: &'static str,
    (url, auth): (&str, &str),
    cpu: Cpu,
    clients: usize,
    n: usize,
    rate: f64,
) -> Way {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .build()
        .expect("an HTTP client");
    // warm the connections
    let _ = closed(&http, url, auth, clients, clients * 4).await;
    let before = cpu.ns();
    let (throughput, mut lat, e1) = closed(&http, url, auth, clients, n).await;
    let proxy_cpu_us = match (before, cpu.ns()) {
        (Some(a), Some(b)) if !lat.is_empty() => Some((b - a) as f64 / 1e3 / lat.len() as f64),
        _ => None,
    };
    let (achieved, mut rlat, e2) = open(&http, url, auth, rate, n).await;
    Way {
        way,
        throughput_rps: throughput,
        closed_p50_ms: pct(&mut lat, 0.5),
        closed_p99_ms: pct(&mut lat, 0.99),
        rate_rps: rate,
        rate_achieved_rps: achieved,
        rate_p50_ms: pct(&mut rlat, 0.5),
        rate_p99_ms: pct(&mut rlat, 0.99),
        errors: e1 + e2,
        proxy_cpu_us,
    }
}

async fn get(s: &Server, path: &str) -> Result<Value> {
    let r = s
        .http
        .get(format!("{}{path}", s.url))
        .bearer_auth(&s.token)
        .send()
        .await?;
    Ok(r.json().await?)
}

async fn wait_replica(s: &Server, state: &str, secs: u64) -> Result<Value> {
    let t = Instant::now();
    loop {
        let v = get(s, "/api/v1/endpoints/echo").await?;
        if v["replicas"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["state"] == state))
        {
            return Ok(v);
        }
        if t.elapsed() > Duration::from_secs(secs) {
            bail!("no replica became {state} in {secs} s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts the echo backend on the port and with the key of the replica
/// job `job`, as its executor would.
async fn start_echo(s: &Server, job: i64) -> Result<(Killed, u16, String)> {
    let row = gigafab_server::store::jobs::get(&s.shared.store.pool, job)
        .await?
        .context("the replica's job")?;
    let spec: gigafab_server::model::StoredSpec = serde_json::from_str(&row.spec)?;
    let port: u16 = spec.env.get("PORT").context("PORT")?.parse()?;
    let secret = spec
        .env
        .get("GIGAFAB_REPLICA_KEY")
        .context("GIGAFAB_REPLICA_KEY")?
        .clone();
    let child = std::process::Command::new(std::env::current_exe()?)
        .args(["bench-echo", "--port", &port.to_string()])
        .env("API_KEY", &secret)
        .spawn()?;
    Ok((Killed(child), port, secret))
}

/// nginx proxying to 127.0.0.1:`port` with keep-alive, adding the
/// replica's key; None when nginx is not installed.
async fn start_nginx(dir: &Path, port: u16, secret: &str) -> Result<Option<(Killed, u16)>> {
    let Ok(bin) = which("nginx") else {
        return Ok(None);
    };
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let d = dir.join("nginx");
    std::fs::create_dir_all(d.join("tmp"))?;
    let conf = format!(
        "worker_processes auto;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n access_log off;\n client_body_temp_path {p}/tmp;\n proxy_temp_path {p}/tmp;\n\
         upstream replica {{ server 127.0.0.1:{port}; keepalive 512; }}\n\
         server {{ listen 127.0.0.1:{listen}; keepalive_requests 100000;\n\
          location / {{ proxy_pass http://replica; proxy_http_version 1.1;\n\
           proxy_set_header Connection \"\"; proxy_set_header Authorization \"Bearer {secret}\";\n\
           proxy_buffering off; }} }}\n}}\n",
        p = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf)?;
    let child = Killed(
        std::process::Command::new(bin)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(&d)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    let t = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", listen))
        .await
        .is_err()
    {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("nginx did not listen on {listen}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some((child, listen)))
}

fn which(name: &str) -> Result<std::path::PathBuf> {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not found")
}

/// `gigafab gateway` in sync with `s`, on a free port, once it serves
/// the endpoint's ready replica; None when this program cannot be found.
async fn start_standalone(s: &Server) -> Result<Option<(Killed, u16)>> {
    let Ok(me) = std::env::current_exe() else {
        return Ok(None);
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(me)
        .args(["gateway", "--listen", &format!("127.0.0.1:{port}")])
        .env("GIGAFAB_SERVER", &s.url)
        .env("GIGAFAB_TOKEN", &s.token)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting `gigafab gateway`")?;
    let g = Killed(child);
    // ready once it routes: a models call goes through its key check
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if let Ok(r) = s
            .http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            return Ok(Some((g, port)));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("`gigafab gateway` did not become ready within 15 s")
}

/// The whole measure (`gigafab bench --scenario gateway`).
pub async fn gateway(b: &ServeBench, rate: f64) -> Result<GatewayFigures> {
    let s = start(b, "gateway").await?;
    // a model of the catalog, registered in place
    let model = s.dir.join("model");
    std::fs::create_dir_all(&model)?;
    std::fs::write(model.join("weights"), b"echo")?;
    s.post(
        "/api/v1/catalog",
        &json!({"name": "echo", "kind": "model", "licence": "MIT", "org": "default"}),
    )
    .await?;
    s.post(
        "/api/v1/catalog/echo/versions",
        &json!({"path": model.display().to_string()}),
    )
    .await?;
    let allocs = get(&s, "/api/v1/allocations").await?;
    let alloc = allocs["items"][0]["id"].as_i64().context("an allocation")?;
    let (st, e) = s
        .post(
            "/api/v1/endpoints",
            &json!({"name": "echo", "model": "echo@1", "allocation": alloc, "command": ["echo-backend"],
                    "min_replicas": 0, "max_replicas": 1, "key_rate_per_s": 1e6, "queue_limit": 10000}),
        )
        .await?;
    if st != 201 {
        bail!("the endpoint was refused: {st} {e}");
    }
    let (_, k) = s.post("/api/v1/endpoints/echo/keys", &json!({})).await?;
    let key = k["key"].as_str().context("a key")?.to_string();
    let gw_url = format!("{}/v1/endpoints/echo/chat/completions", s.url);
    let gw_auth = format!("Bearer {key}");
    // the cold start: one request at zero replicas
    let t0 = Instant::now();
    let t0_ms = gigafab_server::time::now_ms();
    let first = {
        let (http, url, auth) = (s.http.clone(), gw_url.clone(), gw_auth.clone());
        tokio::spawn(async move { one(&http, &url, &auth).await })
    };
    let v = wait_replica(&s, "starting", 30).await?;
    let job = v["replicas"][0]["job"].as_i64().context("its job")?;
    let started = gigafab_server::store::jobs::get(&s.shared.store.pool, job)
        .await?
        .and_then(|r| r.started_ms)
        .context("the replica's start")?;
    let to_replica = (started.0 - t0_ms) as f64 / 1e3;
    let (echo, port, secret) = start_echo(&s, job).await?;
    if !first.await? {
        bail!("the first request failed");
    }
    let to_answer = t0.elapsed().as_secs_f64();
    // keep the replica from here on
    s.post("/api/v1/endpoints/echo/scale", &json!({"min_replicas": 1}))
        .await?;
    let direct_url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let direct_auth = format!("Bearer {secret}");
    let mut ways = vec![
        measure(
            "direct",
            (&direct_url, &direct_auth),
            Cpu::None,
            b.clients,
            b.requests,
            rate,
        )
        .await,
        measure(
            "gateway",
            (&gw_url, &gw_auth),
            Cpu::Here,
            b.clients,
            b.requests,
            rate,
        )
        .await,
    ];
    if let Some((standalone, sp)) = start_standalone(&s).await? {
        let url = format!("http://127.0.0.1:{sp}/v1/endpoints/echo/chat/completions");
        ways.push(
            measure(
                "gigafab-gateway",
                (&url, &gw_auth),
                Cpu::Pids(vec![standalone.0.id()]),
                b.clients,
                b.requests,
                rate,
            )
            .await,
        );
        drop(standalone);
    }
    let nginx = start_nginx(&s.dir, port, &secret).await?;
    if let Some((master, np)) = &nginx {
        let url = format!("http://127.0.0.1:{np}/v1/chat/completions");
        let cpu = Cpu::Pids(with_children(master.0.id()));
        ways.push(
            measure(
                "nginx",
                (&url, "Bearer unused"),
                cpu,
                b.clients,
                b.requests,
                rate,
            )
            .await,
        );
    }
    drop(nginx);
    drop(echo);
    let by = |w: &str| ways.iter().find(|x| x.way == w).cloned();
    let added = match (by("gateway"), by("direct")) {
        (Some(g), Some(d)) => g.rate_p99_ms - d.rate_p99_ms,
        _ => 0.0,
    };
    let vs_nginx = match (by("gateway"), by("nginx")) {
        (Some(g), Some(n)) if n.throughput_rps > 0.0 => Some(g.throughput_rps / n.throughput_rps),
        _ => None,
    };
    let standalone_vs_nginx = match (by("gigafab-gateway"), by("nginx")) {
        (Some(g), Some(n)) if n.throughput_rps > 0.0 => Some(g.throughput_rps / n.throughput_rps),
        _ => None,
    };
    let cpu_over_nginx = |w: &str| match (
        by(w).and_then(|g| g.proxy_cpu_us),
        by("nginx").and_then(|n| n.proxy_cpu_us),
    ) {
        (Some(g), Some(n)) if n > 0.0 => Some(g / n),
        _ => None,
    };
    let (cpu_vs_nginx, standalone_cpu_vs_nginx) =
        (cpu_over_nginx("gateway"), cpu_over_nginx("gigafab-gateway"));
    s.finish().await;
    Ok(GatewayFigures {
        standalone_vs_nginx,
        cpu_vs_nginx,
        standalone_cpu_vs_nginx,
        clients: b.clients,
        requests: b.requests,
        ways,
        added_p99_ms: added,
        vs_nginx,
        cold_start_to_replica_s: to_replica,
        cold_start_to_answer_s: to_answer,
    })
}
