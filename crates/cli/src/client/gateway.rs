//! `gigafab gateway`: a standalone, stateless gateway for the model
//! endpoints, several of which may stand behind a load balancer
//! (docs/endpoints.md). It serves `/v1/endpoints/{name}/...` as the
//! server's own gateway does, learns the endpoints, their ready replicas
//! and the live keys from the server, and reports its load and what each
//! key served (`gigafab_server::endpoints::remote`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Args;
use gigafab_server::endpoints::registry::Serving;
use gigafab_server::endpoints::remote;
use gigafab_server::metrics::{Metrics, Snapshot};

use super::Conn;

/// How often it reports and learns (more often while requests wait).
const SYNC: Duration = Duration::from_secs(1);
const SYNC_BUSY: Duration = Duration::from_millis(200);
const SYNC_MIN: Duration = Duration::from_millis(50);
/// Past this without a sync, `/readyz` says not ready.
const STALE_MS: i64 = 10_000;

/// Options of `gigafab gateway`.
#[derive(Args, Debug)]
pub struct GatewayArgs {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, env = "GIGAFAB_GATEWAY_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Its name in its reports to the server [default: gateway-PORT@HOST].
    #[arg(long)]
    name: Option<String>,
    /// Where to serve `/metrics` (Prometheus text): not on the public port,
    /// which would tell anyone the endpoints' names [default: nowhere].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Open connections at most, all workers together; past it a new one
    /// is closed at once.
    #[arg(long, default_value_t = 8192)]
    max_connections: usize,
    /// Seconds a connection may take to send a request's headers (idle
    /// keep-alive connections included).
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Open connections of one client address at most (0: no cap; behind
    /// a load balancer, every connection comes from it).
    #[arg(long, default_value_t = 0)]
    max_connections_per_client: usize,
    /// Threads serving requests, each with its own listener on the same
    /// port (SO_REUSEPORT) and its own connections to the replicas, as
    /// nginx's workers [default: one per CPU].
    #[arg(long)]
    workers: Option<usize>,
    /// The server and an admin's token (the gateway is given the
    /// replicas' keys).
    #[command(flatten)]
    conn: Conn,
}

/// Runs the gateway until SIGTERM or Ctrl-C.
pub fn run(a: GatewayArgs) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(a))
}

/// A listener on `addr` that other workers' listeners share
/// (SO_REUSEPORT: the kernel spreads connections among them).
fn shared_listener(addr: SocketAddr) -> Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())
        .with_context(|| format!("cannot listen on {addr}"))?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

async fn serve(a: GatewayArgs) -> Result<()> {
    let api = a.conn.api()?;
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if !(1..=256).contains(&workers) {
        bail!("--workers must be within 1..=256");
    }
    if !(a.header_timeout.is_finite() && (0.1..=3600.0).contains(&a.header_timeout)) {
        bail!("--header-timeout must be within 0.1..=3600 seconds");
    }
    if a.max_connections < workers {
        bail!("--max-connections must be at least --workers ({workers})");
    }
    let limits = gigafab_server::HttpLimits {
        max_connections: a.max_connections / workers,
        header_timeout: Duration::from_secs_f64(a.header_timeout),
        max_connections_per_client: a.max_connections_per_client,
        ..Default::default()
    };
    let first = shared_listener(a.listen)?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..workers {
        listeners.push(shared_listener(addr)?);
    }
    let name = a.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("gateway-{}@{host}", addr.port())
    });
    let serving = Arc::new(Serving::default());
    let metrics = Arc::new(Metrics::default());
    let last_sync = Arc::new(AtomicI64::new(0));
    // the first sync must work: a wrong server or token fails the start
    let mut syncer = Syncer {
        api,
        serving: serving.clone(),
        metrics: metrics.clone(),
        name: name.clone(),
        seq: gigafab_exec::now_ms().max(0) as u64 * 1000,
        pending: None,
    };
    syncer
        .once()
        .await
        .context("the first sync with the server failed")?;
    last_sync.store(gigafab_exec::now_ms(), Ordering::Release);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let syncer = {
        let (serving, last_sync) = (serving.clone(), last_sync.clone());
        let mut stop = stop_tx.subscribe();
        tokio::spawn(async move {
            let mut said = false;
            loop {
                let busy = serving
                    .all()
                    .iter()
                    .any(|e| e.queued.load(Ordering::Relaxed) > 0);
                tokio::select! {
                    _ = tokio::time::sleep(if busy { SYNC_BUSY } else { SYNC }) => {}
                    _ = serving.wake.notified() => {
                        // requests may wake it often: a report at most
                        // every SYNC_MIN
                        tokio::time::sleep(SYNC_MIN).await;
                    }
                    _ = stop.changed() => break,
                }
                match syncer.once().await {
                    Ok(()) => {
                        last_sync.store(gigafab_exec::now_ms(), Ordering::Release);
                        if said {
                            eprintln!("gigafab gateway: in sync with the server again");
                            said = false;
                        }
                    }
                    Err(e) if !said => {
                        eprintln!("gigafab gateway: cannot sync with the server: {e:#}");
                        said = true;
                    }
                    Err(_) => {}
                }
            }
            // what was served since the last report
            let _ = syncer.once().await;
        })
    };
    // each worker's routes, with a client of its own: a connection is
    // used by the thread that made it (no wake-up crosses threads)
    let make_app = || {
        gigafab_server::gateway::router_over(
            serving.clone(),
            Arc::new(gigafab_server::time::SystemClock),
        )
        // out of sync with the server: it may be serving revoked keys and
        // gone replicas, so it serves nothing
        .layer(axum::middleware::from_fn({
            let last_sync = last_sync.clone();
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let fresh = gigafab_exec::now_ms() - last_sync.load(Ordering::Acquire) <= STALE_MS;
                async move {
                    if fresh {
                        next.run(req).await
                    } else {
                        out_of_sync()
                    }
                }
            }
        }))
        .route(
            "/readyz",
            get({
                let last_sync = last_sync.clone();
                move || {
                    let fresh =
                        gigafab_exec::now_ms() - last_sync.load(Ordering::Acquire) <= STALE_MS;
                    async move {
                        if fresh {
                            (axum::http::StatusCode::OK, "ready\n").into_response()
                        } else {
                            out_of_sync()
                        }
                    }
                }
            }),
        )
    };
    let mut metrics_at = String::new();
    if let Some(at) = a.metrics_listen {
        let l = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("--metrics-listen: cannot listen on {at}"))?;
        metrics_at = format!("; metrics on http://{}/metrics", l.local_addr()?);
        let metrics = metrics.clone();
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { gigafab_server::metrics::render(&m, &Snapshot::default()) }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
    }
    // each worker: a thread, a runtime, a listener and a client of its own
    // (no request crosses threads)
    let mut threads = Vec::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let app = make_app();
        let stop = stop_tx.subscribe();

        threads.push(
            std::thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || -> Result<()> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async move {
                        let l = tokio::net::TcpListener::from_std(l)?;
                        gigafab_server::serve_http(l, app, limits, stop).await?;
                        Ok(())
                    })
                })?,
        );
    }
    eprintln!(
        "gigafab gateway: listening on http://{addr} as {name} ({workers} workers){metrics_at}"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        _ = stop_rx.changed() => {}
    }
    let _ = stop_tx.send(true);
    for t in threads {
        match t.join() {
            Ok(r) => r.context("serving")?,
            Err(_) => bail!("a worker thread panicked"),
        }
    }
    let _ = syncer.await;
    Ok(())
}

/// The answer while out of sync with the server (OpenAI's error shape).
fn out_of_sync() -> axum::response::Response {
    let body = serde_json::json!({"error": {
        "message": "this gateway is out of sync with the server; retry (another gateway may answer)",
        "type": "server_error", "code": "gateway_out_of_sync", "param": null}});
    let mut r = (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(body),
    )
        .into_response();
    r.headers_mut()
        .insert(axum::http::header::RETRY_AFTER, 5.into());
    r
}

/// The gateway's reports to the server.
struct Syncer {
    api: super::http::Api,
    serving: Arc<Serving>,
    metrics: Arc<Metrics>,
    name: String,
    /// The last report's number (from the start's time: a restarted
    /// gateway's numbers are higher).
    seq: u64,
    /// A report not known to have arrived: its number and usage, sent
    /// again as they are (the server counts a number once).
    pending: Option<(u64, Vec<gigafab_api::GatewayKeyUsage>)>,
}

impl Syncer {
    /// One report and the routes it brings back.
    async fn once(&mut self) -> Result<()> {
        let (seq, usage) = match self.pending.take() {
            Some(p) => p,
            None => {
                self.seq += 1;
                (self.seq, remote::take_usage(&self.serving))
            }
        };
        let report = gigafab_api::GatewaySync {
            gateway: self.name.clone(),
            seq,
            load: remote::load(&self.serving),
            usage,
        };
        let reply = match self.api.post(&["gateway", "sync"], Some(&report)).await {
            Ok(r) => r,
            Err(e) => {
                self.pending = Some((seq, report.usage));
                return Err(e);
            }
        };
        let routes: gigafab_api::GatewayRoutes = match serde_json::from_value(reply.value) {
            Ok(r) => r,
            Err(e) => bail!("the server's routes are not readable: {e}"),
        };
        remote::apply(&self.serving, &self.metrics, routes);
        Ok(())
    }
}
