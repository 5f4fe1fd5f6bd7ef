//! `gigafab bench --scenario serve-submit | serve-schedule`: the control
//! plane's speed, measured through its real HTTP API and store.
//!
//! The server runs in this process on loopback (port 0) with a fresh store;
//! the clients are in the same process, so both share the machine's cores.
//! Jobs run on a virtual executor that starts nothing (a 100,000-accelerator
//! fleet cannot run here); everything else — HTTP, auth, validation, group
//! commit, scheduling passes — is the production path.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use gigafab_core::{Factory, Policy};

use gigafab_server::{CtlConfig, ServeConfig};
use serde_json::{Value, json};

/// Settings of the control-plane benchmarks.
pub struct ServeBench {
    pub database: Option<String>,
    pub clients: usize,
    pub requests: usize,
    pub factory: Factory,
    pub queued: usize,
}

#[derive(serde::Serialize)]
pub struct SubmitFigures {
    pub store: &'static str,
    pub clients: usize,
    pub submits: usize,
    pub wall_s: f64,
    pub submits_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub commits: u64,
    pub jobs_per_commit: f64,
}

#[derive(serde::Serialize)]
pub struct ScheduleFigures {
    pub store: &'static str,
    pub accelerators: u64,
    pub queued: usize,
    pub running: usize,
    pub passes_sampled: usize,
    pub pass_ms_median: f64,
    pub pass_ms_max: f64,
}

pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) token: String,
    pub(crate) http: reqwest::Client,
    pub(crate) shared: Arc<gigafab_server::state::Shared>,
    kind: &'static str,
    cleanup: Option<String>,
    pub(crate) dir: PathBuf,
}

pub(crate) async fn start(b: &ServeBench, tag: &str) -> Result<Server> {
    let dir = std::env::temp_dir().join(format!("gigafab-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (url, cleanup) = match &b.database {
        Some(u) => {
            let (head, _) = u
                .rsplit_once('/')
                .context("--database: expected postgres://user@host:port/db")?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos();
            let fresh = format!("{head}/gigafab_bench_{tag}_{nanos}");
            (fresh.clone(), Some(fresh))
        }
        None => (gigafab_server::store::sqlite_url(&dir), None),
    };
    let token = gigafab_server::auth::new_token();
    let mut policy = Policy::by_name("fairshare").expect("known policy");
    policy.backfill_interval_s = 0.0;
    policy.preemption = false;
    let cfg = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        database_url: url,
        ctl: CtlConfig {
            factory: b.factory.clone(),
            policy,
            throughputs: gigafab_core::Throughputs::new(),
            tick: Duration::from_millis(1000),
            poll: Duration::from_millis(1000),
            bootstrap_token: Some(token.clone()),
            isolation: gigafab_server::isolation::Isolation::single_user(),
            node_power: Vec::new(),
            grid_refresh: Duration::from_secs(300),
            preflight_min_nodes: 0,
            max_active_jobs_per_org: 0,
        },
        // fleets that cannot run here: every launch succeeds and runs
        // until cancelled
        executor: Arc::new(
            gigafab_exec::testing::RecordingExecutor::new(gigafab_server::time::now_ms)
                .with_logs(dir.clone()),
        ),
        existing_job_dirs: Vec::new(),
        http: gigafab_server::HttpLimits {
            max_connections: 4096,
            // every client of the benchmark comes from this one address
            // (loopback): the per-client cap, there to stop one host from
            // holding the server's connections, would refuse the pool's
            // connections beyond it with 429s
            max_connections_per_client: 4096,
            ..Default::default()
        },
        telemetry: None,
        clock: Arc::new(gigafab_server::time::SystemClock),
        smtp: None,
        oidc: None,
        catalog: Some(Arc::new(gigafab_server::catalog::Site::new(
            gigafab_catalog::store::Blobs::open(
                &dir.join("catalog").display().to_string(),
                &dir.join("catalog-cache"),
            )?,
            dir.join("catalog-staging"),
            b.factory.sites[0].name.clone(),
        )?)),
        sessions: Default::default(),
        spaces: None,
    };
    let r = gigafab_server::start(cfg).await?;
    Ok(Server {
        url: format!("http://{}", r.addr),
        token,
        http: reqwest::Client::new(),
        kind: r.store.as_str(),
        shared: r.shared.clone(),
        cleanup,
        dir,
    })
}

impl Server {
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Result<(u16, Value)> {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let s = r.status().as_u16();
        Ok((s, r.json().await.unwrap_or(Value::Null)))
    }

    pub(crate) async fn finish(self) {
        if let Some(u) = &self.cleanup {
            use sqlx::migrate::MigrateDatabase;
            let _ = sqlx::Any::force_drop_database(u).await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `total` submits from `clients` concurrent clients; returns the
/// latency of each, seconds.
async fn submit_burst(s: &Server, clients: usize, total: usize, body: &Value) -> Result<Vec<f64>> {
    let mut tasks = Vec::new();
    let per = total.div_ceil(clients);
    for c in 0..clients {
        let n = per.min(total.saturating_sub(c * per));
        let (http, url, token, body) =
            (s.http.clone(), s.url.clone(), s.token.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let r = http
                    .post(format!("{url}/api/v1/jobs"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await?;
                let st = r.status().as_u16();
                let _ = r.bytes().await?;
                if st != 201 {
                    bail!("submit answered {st}");
                }
                lat.push(t.elapsed().as_secs_f64());
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// HTTP submission throughput with durable commits.
pub async fn submit(b: &ServeBench) -> Result<SubmitFigures> {
    let s = start(b, "submit").await?;
    // jobs wait for an allocation window that opens tomorrow: the figure is
    // the submission path, not process start-up
    let tomorrow = gigafab_server::time::rfc3339(gigafab_server::time::now_ms() + 86_400_000);
    let (st, a) = s
        .post(
            "/api/v1/allocations",
            &json!({"org": "default", "gpu_hours": 1e6, "valid_from": tomorrow}),
        )
        .await?;
    if st != 201 {
        bail!("cannot create the allocation: {a}");
    }
    let body = json!({"allocation": a["id"], "gpus": 4, "type": "h100",
                      "command": ["python", "train.py", "--epochs", "3"], "time_limit_s": 7200});
    submit_burst(&s, b.clients, (b.clients * 4).min(b.requests), &body).await?;
    let c0 = s.shared.stats.lock().map(|x| x.commits).unwrap_or(0);
    let t = Instant::now();
    let mut lat = submit_burst(&s, b.clients, b.requests, &body).await?;
    let wall = t.elapsed().as_secs_f64();
    let commits = s.shared.stats.lock().map(|x| x.commits).unwrap_or(0) - c0;
    lat.sort_by(f64::total_cmp);
    let f = SubmitFigures {
        store: s.kind,
        clients: b.clients,
        submits: lat.len(),
        wall_s: wall,
        submits_per_s: lat.len() as f64 / wall,
        p50_ms: pct(&lat, 0.5) * 1e3,
        p99_ms: pct(&lat, 0.99) * 1e3,
        max_ms: lat.last().copied().unwrap_or(0.0) * 1e3,
        commits,
        jobs_per_commit: lat.len() as f64 / commits.max(1) as f64,
    };
    s.finish().await;
    Ok(f)
}

/// Scheduling-pass time with `b.queued` jobs waiting on a full fleet.
pub async fn schedule(b: &ServeBench) -> Result<ScheduleFigures> {
    let s = start(b, "schedule").await?;
    let accels = b.factory.accelerators();
    // fill the fleet with long jobs of mixed sizes, then queue `queued` more
    let sizes = [8u64, 16, 32, 64, 8, 8, 128, 16];
    let mut placed = 0u64;
    let mut i = 0;
    let mut fill = Vec::new();
    while placed < accels {
        let g = sizes[i % sizes.len()];
        fill.push(g);
        placed += g;
        i += 1;
    }
    for chunk in fill.chunks(b.clients.max(1) * 8) {
        let bodies: Vec<Value> = chunk
            .iter()
            .map(|g| json!({"allocation": 1, "gpus": g, "command": ["train"], "time_limit_s": 86400}))
            .collect();
        let tasks: Vec<_> = bodies.iter().map(|b| s.post("/api/v1/jobs", b)).collect();
        for r in futures_util::future::join_all(tasks).await {
            let (st, v) = r?;
            if st != 201 {
                bail!("submit answered {st}: {v}");
            }
        }
    }
    // the queue: mixed sizes and accelerator constraints
    let gpus = [8u64, 16, 64, 256, 1024, 8, 32];
    let filters = [
        json!({}),
        json!({"type": "b200"}),
        json!({"type": "h100"}),
        json!({"vendor": "amd"}),
        json!({"min_memory_gb": 180}),
    ];
    let per_class = b.queued.div_ceil(gpus.len() * filters.len());
    let mut left = b.queued;
    'classes: for g in gpus {
        for f in &filters {
            let n = per_class.min(left);
            if n == 0 {
                break 'classes;
            }
            let mut body =
                json!({"allocation": 1, "gpus": g, "command": ["train"], "time_limit_s": 3600});
            for (k, v) in f.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            submit_burst(&s, b.clients.min(n), n, &body).await?;
            left -= n;
        }
    }
    // small jobs may have found holes: top the queue up with gangs that wait
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let q = s
            .shared
            .stats
            .lock()
            .ok()
            .and_then(|x| x.recent_passes.back().map(|p| p.0))
            .unwrap_or(0);
        if q >= b.queued {
            break;
        }
        let body =
            json!({"allocation": 1, "gpus": 1024, "command": ["train"], "time_limit_s": 3600});
        submit_burst(&s, b.clients.min(b.queued - q), b.queued - q, &body).await?;
    }
    // let the queue settle, then sample the passes of the tick
    let t = Instant::now();
    let mut samples = Vec::new();
    let mut seen = 0;
    while t.elapsed() < Duration::from_secs(8) && samples.len() < 5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let st = s.shared.stats.lock().map(|x| x.clone()).unwrap_or_default();
        if st.passes > seen {
            if let Some(&(q, r, us)) = st.recent_passes.back()
                && q >= b.queued
            {
                samples.push((q, r, us as f64 / 1e3));
            }
            seen = st.passes;
        }
    }
    if samples.is_empty() {
        bail!(
            "no scheduling pass with {} queued jobs was observed",
            b.queued
        );
    }
    let mut ms: Vec<f64> = samples.iter().map(|x| x.2).collect();
    ms.sort_by(f64::total_cmp);
    let last = samples[samples.len() - 1];
    let f = ScheduleFigures {
        store: s.kind,
        accelerators: accels,
        queued: last.0,
        running: last.1,
        passes_sampled: samples.len(),
        pass_ms_median: pct(&ms, 0.5),
        pass_ms_max: ms[ms.len() - 1],
    };
    s.finish().await;
    Ok(f)
}
