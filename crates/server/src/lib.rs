//! gigafab's control plane: `gigafab serve`.
//!
//! - [`store`]: SQLite (embedded default) or PostgreSQL, migrated at start;
//! - [`ctl`]: the controller task that owns the live state, runs the same
//!   scheduler as the digital twin with wall-clock time, group-commits every
//!   change before answering, and drives an [`gigafab_exec::Executor`];
//! - [`api`]: the JSON HTTP API under `/api/v1`.

#![recursion_limit = "512"]

pub mod access;
pub mod api;
pub mod auth;
pub mod catalog;
pub mod ctl;
pub mod endpoints;
pub mod error;
pub mod gateway;
pub mod isolation;
pub mod metrics;
pub mod model;
pub mod names;
pub mod notify;
pub mod portal;
pub mod ratelimit;
pub mod sessions;
pub mod spaces;
pub mod state;
pub mod store;
pub mod submission;
pub mod tenancy;
pub mod time;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use gigafab_exec::Executor;
use tokio::sync::{mpsc, watch};

pub use ctl::CtlConfig;
pub use store::{Store, StoreError, StoreKind};

/// What `serve` needs.
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    pub ctl: CtlConfig,
    pub executor: Arc<dyn Executor>,
    /// GPU telemetry (none: energy is modelled).
    pub telemetry: Option<Arc<dyn gigafab_telemetry::Telemetry>>,
    /// Ids of the job directories already on disk (the local executor's):
    /// an empty store beside them is a lost store, not a first start, and a
    /// store whose jobs end below the highest of them has lost jobs.
    pub existing_job_dirs: Vec<i64>,
    /// Connection limits and timeouts.
    pub http: HttpLimits,
    /// Where the controller and the API read the time
    /// ([`time::SystemClock`] in the server).
    pub clock: Arc<dyn time::Clock>,
    /// The site's mail relay for notifications (None: they wait in the
    /// outbox).
    pub smtp: Option<notify::SmtpConfig>,
    /// The site's OpenID Connect provider for the portal's sign-in (None:
    /// tokens only).
    pub oidc: Option<portal::OidcConfig>,
    /// The data and model catalog's store (None: no catalog).
    pub catalog: Option<Arc<catalog::Site>>,
    /// Interactive sessions: their apps and limits.
    pub sessions: sessions::SessionConfig,
    /// The organisations' project spaces (None: none kept).
    pub spaces: Option<spaces::Spaces>,
}

/// What a client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Open connections at most; past it a new one is closed at once (and
    /// a line is logged).
    pub max_connections: usize,
    /// Time a connection may take to send a request's headers, idle
    /// keep-alive and half-open connections included.
    pub header_timeout: std::time::Duration,
    /// Open connections of one client address at most (0: no cap): past
    /// it its new ones are answered 429 `too_many_connections` and closed,
    /// so that one client cannot take the server's connections from
    /// everyone else.
    pub max_connections_per_client: usize,
    /// Requests that change state, per token and per organisation.
    pub write_rates: ratelimit::WriteRates,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_timeout: std::time::Duration::from_secs(30),
            max_connections_per_client: 64,
            write_rates: ratelimit::WriteRates::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the state from the store")]
    Load(#[from] sqlx::Error),
    #[error(
        "the store is empty but {job_dirs} job directories exist beside it: the database was lost or replaced, and starting afresh would forget those jobs and reuse their ids. Restore the database from a backup, or move the jobs directory aside to start afresh"
    )]
    StoreLost { job_dirs: usize },
    #[error(
        "the store knows jobs up to {store_max} but directories of {missing} later jobs exist (up to job {dir_max}): the database lost jobs (a damaged or replaced write-ahead log, a restore from an older backup). Restore it from a newer backup, or move those job directories aside to go on without them"
    )]
    StoreBehind {
        store_max: i64,
        dir_max: i64,
        missing: usize,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A started server.
pub struct Running {
    /// Where it listens (the real port when asked for port 0).
    pub addr: SocketAddr,
    pub store: StoreKind,
    /// The new admin token of a first start (shown once), if one was made.
    pub first_token: Option<String>,
    /// True on a first start (empty store).
    pub first_start: bool,
    pub shared: Arc<state::Shared>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    controller: tokio::task::JoinHandle<()>,
    stop_http: watch::Sender<bool>,
    stop_ctl: watch::Sender<bool>,
}

/// Asks a [`Running`] server to stop (see [`Running::wait`]).
#[derive(Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// How long open connections (a `logs --follow` stream, say) may delay a
/// stop before they are cut.
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

impl Running {
    /// A handle that stops the server gracefully.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop_http.clone())
    }

    /// Serves until stopped ([`StopHandle::stop`]) or the listener fails.
    /// A stop is graceful: no new connection is accepted, requests in
    /// flight get their answers (open streams are cut after
    /// [`STOP_GRACE`]), the controller commits what it has and ends; jobs
    /// keep running, to be adopted at the next start.
    pub async fn wait(mut self) -> std::io::Result<()> {
        let mut stopping = self.stop_http.subscribe();
        let r = tokio::select! {
            r = &mut self.server => Some(r),
            _ = stopping.wait_for(|v| *v) => None,
            c = &mut self.controller => {
                // the controller ended without a stop: it panicked. Serving
                // on would answer 503 forever: fail health, stop, exit with
                // an error (a service manager restarts the server, which
                // reloads from the store)
                self.shared
                    .controller_alive
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                let why = match c {
                    Err(e) if e.is_panic() => {
                        let p = e.into_panic();
                        p.downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "a panic".into())
                    }
                    Err(e) => e.to_string(),
                    Ok(()) => "it ended".into(),
                };
                let _ = self.stop_http.send(true);
                let _ = tokio::time::timeout(STOP_GRACE, &mut self.server).await;
                return Err(std::io::Error::other(format!(
                    "the controller stopped ({why}); exiting so that a restart reloads the state from the store"
                )));
            }
        };
        let r = match r {
            Some(r) => r,
            None => match tokio::time::timeout(STOP_GRACE, &mut self.server).await {
                Ok(r) => r,
                Err(_) => {
                    self.server.abort();
                    Ok(Ok(()))
                }
            },
        };
        let _ = self.stop_ctl.send(true);
        let _ = (&mut self.controller).await;
        match r {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Binds, then opens the store, loads and adopts, and starts serving. The
/// listener comes first: a busy port fails the start before anything is
/// created (a first start's admin token is never made and lost).
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServeError::Listen {
            addr: cfg.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Listen {
        addr: cfg.listen,
        source: e,
    })?;
    let existing_job_dirs = cfg.existing_job_dirs.clone();
    let http = cfg.http;
    let smtp = cfg.smtp.clone();
    let cfg_oidc = cfg.oidc.clone();
    let opened = open(cfg).await?;
    let (controller, shared, rx, token) = (
        opened.controller,
        opened.shared,
        opened.rx,
        opened.first_token,
    );
    let store = shared.store.clone();
    let cfg_dirs = existing_job_dirs;
    let store_max = controller.max_job_id();
    let missing = cfg_dirs.iter().filter(|&&id| id > store_max).count();
    if missing > 0 {
        return Err(ServeError::StoreBehind {
            store_max,
            dir_max: cfg_dirs.iter().copied().max().unwrap_or(0),
            missing,
        });
    }
    let (stop_ctl, ctl_rx) = watch::channel(false);
    let controller = tokio::spawn(controller.run(rx, ctl_rx));
    let (stop_http, http_rx) = watch::channel(false);
    let app = app(shared.clone(), cfg_oidc);
    if let Some(smtp) = smtp {
        // it ends with the HTTP server (the outbox keeps what is unsent)
        notify::spawn_mailer(shared.clone(), smtp, stop_http.subscribe());
    }
    {
        // approvals a stop cut short get their allocation (the controller
        // runs by now and answers the grant)
        let shared = shared.clone();
        tokio::spawn(async move {
            match access::repair(&shared).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!("finished {n} access approvals cut short by a stop"),
                Err(e) => tracing::error!("cannot finish the approvals cut short by a stop: {e}"),
            }
        });
    }
    catalog::spawn_outputs(shared.clone(), stop_http.subscribe());
    // model endpoints: their replicas as recorded, then their manager
    endpoints::load(&shared).await?;
    endpoints::manager::spawn(shared.clone(), stop_http.subscribe());
    // interactive sessions: those not ended, then their watch
    sessions::load(&shared).await?;
    sessions::spawn(shared.clone(), stop_http.subscribe());
    // the organisations' project spaces, made where missing
    spaces::ensure_all(&shared).await;
    {
        // the rate limiters forget idle tokens and organisations
        let shared = shared.clone();
        let mut stop = stop_http.subscribe();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tokio::select! {
                    _ = every.tick() => shared.limits.prune(),
                    _ = stop.changed() => break,
                }
            }
        });
    }
    let server = tokio::spawn(serve_http(listener, app, http, http_rx));
    Ok(Running {
        addr,
        store: store.kind,
        first_start: token.is_some(),
        first_token: token.filter(|t| !t.is_empty()),
        shared,
        server,
        controller,
        stop_http,
        stop_ctl,
    })
}

/// Serves the API of an opened server on `listener` without running its
/// controller: what does not go through the controller (tenancy, reads of
/// the store) answers, commands wait. For tests of that boundary.
/// Everything served over HTTP: the API and the portal, which calls the
/// API in process.
pub fn app(shared: Arc<state::Shared>, oidc: Option<portal::OidcConfig>) -> axum::Router {
    let api = api::router(shared.clone());
    let gateway = gateway::router(shared.clone());
    portal::router(shared, api.clone(), oidc)
        .merge(gateway)
        .merge(api)
}

pub fn serve_api(
    listener: tokio::net::TcpListener,
    shared: Arc<state::Shared>,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let (stop, rx) = watch::channel(false);
    let app = app(shared, None);
    tokio::spawn(async move {
        let r = serve_http(listener, app, HttpLimits::default(), rx).await;
        drop(stop);
        r
    })
}

/// A controller loaded from its store, not yet running: what [`start`]
/// runs, and what tests drive turn by turn ([`ctl::Controller::step`]).
pub struct Opened {
    pub controller: ctl::Controller,
    /// Commands go in through `shared.tx` ...
    pub shared: Arc<state::Shared>,
    /// ... and come out here.
    pub rx: mpsc::Receiver<ctl::Cmd>,
    /// A first start's new admin token (empty when one was given).
    pub first_token: Option<String>,
}

/// Opens the store, loads tenancy (making the first admin on an empty
/// store) and the controller (adopting recorded runs), without a listener
/// or a loop. An empty store beside `cfg.existing_job_dirs` is refused
/// before anything is written. `cfg.listen` is not read, nor `cfg.http`
/// but its write rates.
pub async fn open(cfg: ServeConfig) -> Result<Opened, ServeError> {
    let store = Store::open(&cfg.database_url).await?;
    if !cfg.existing_job_dirs.is_empty() && store::tenancy::users(&store.pool).await?.is_empty() {
        // before a first start writes anything
        return Err(ServeError::StoreLost {
            job_dirs: cfg.existing_job_dirs.len(),
        });
    }
    let (tx, rx) = mpsc::channel(4096);
    let audit_id = std::sync::atomic::AtomicI64::new(store::audit::max_id(&store.pool).await?);
    let outbox_id = std::sync::atomic::AtomicI64::new(store::outbox::max_id(&store.pool).await?);
    let (tenancy, first_token) = tenancy::Tenancy::load(
        &store,
        cfg.ctl.isolation.clone(),
        cfg.ctl.bootstrap_token.clone(),
        &audit_id,
        cfg.clock.now(),
    )
    .await?;
    let shared = Arc::new(state::Shared {
        limits: ratelimit::RateLimits::new(cfg.http.write_rates),
        serving: Default::default(),
        gateway_reports: Default::default(),
        sessions: sessions::Sessions::new(cfg.sessions),
        spaces: cfg.spaces,
        store,
        tenancy,
        audit_id,
        outbox_id,
        tx,
        executor: cfg.executor,
        telemetry: cfg.telemetry,
        stats: Default::default(),
        metrics: Default::default(),
        controller_alive: std::sync::atomic::AtomicBool::new(true),
        clock: cfg.clock,
        catalog: cfg.catalog,
        factory: Arc::new(cfg.ctl.factory.clone()),
        sites: cfg
            .ctl
            .factory
            .sites
            .iter()
            .map(|s| s.name.clone())
            .collect(),
    });
    let controller = ctl::Controller::load(cfg.ctl, shared.clone()).await?;
    Ok(Opened {
        controller,
        shared,
        rx,
        first_token,
    })
}

/// A connection counted against its client's cap; given back when dropped.
struct ClientSlot {
    clients: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>>,
    client: std::net::IpAddr,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// Connections over their client's cap answered at once, at most.
const REFUSALS_AT_ONCE: usize = 64;

/// Answers a connection over its client's cap with a 429
/// `too_many_connections` and closes it. The answer is written before the
/// request is read; what the client sends is then drained for up to a
/// second so that closing does not reset the connection (a reset would
/// lose the answer).
async fn refuse_connection(mut stream: tokio::net::TcpStream, cap: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!(
        "{{\"error\":\"too_many_connections\",\"message\":\"this client holds {cap} connections to the server already (--max-connections-per-client): reuse one, or close some and retry\"}}"
    );
    let answer = format!(
        "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let deadline = std::time::Duration::from_secs(1);
    let _ = tokio::time::timeout(deadline, async {
        if stream.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        let mut drained = 0usize;
        while drained < 1 << 16 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// The HTTP/1 accept loop: a connection limit, a header (and idle) timeout
/// per connection, and a graceful stop when `stop` turns true (no new
/// connection; those open finish their requests, up to [`STOP_GRACE`] in
/// [`Running::wait`]).
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    // a graceful stop: each connection is told, then waited for (a
    // connection that may upgrade has no hyper-util watcher of its own)
    let (closing, closing_rx) = watch::channel(false);
    let open = Arc::new(());
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let mut last_full_log: Option<std::time::Instant> = None;
    let mut last_client_log: Option<std::time::Instant> = None;
    let clients: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>> = Default::default();
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_AT_ONCE));
    let mut stop_gone = false;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            r = stop.wait_for(|v| *v), if !stop_gone => {
                if r.is_ok() {
                    break;
                }
                // a dropped sender (no one can ask for a stop) is not a stop
                stop_gone = true;
                continue;
            }
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // out of file descriptors and the like: wait, do not spin
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // one client (address) holds at most its share of the connections
        let client = peer.ip();
        let per_client = match limits.max_connections_per_client {
            0 => None,
            cap => {
                let mut held = clients.lock().unwrap_or_else(|e| e.into_inner());
                let n = held.entry(client).or_insert(0);
                if *n >= cap {
                    if last_client_log.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                        tracing::warn!(
                            "client {client} holds {cap} connections (--max-connections-per-client): closing its new ones"
                        );
                        last_client_log = Some(std::time::Instant::now());
                    }
                    drop(held);
                    // answered, not reset: a client over its share learns
                    // why and when to come back (a bounded number of such
                    // answers at once; past it the connection is dropped)
                    if let Ok(slot) = refusals.clone().try_acquire_owned() {
                        tokio::spawn(async move {
                            refuse_connection(stream, cap).await;
                            drop(slot);
                        });
                    }
                    continue;
                }
                *n += 1;
                Some(ClientSlot {
                    clients: clients.clone(),
                    client,
                })
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if last_full_log.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                tracing::warn!(
                    "connection limit of {} reached: closing new connections (from {peer} and others)",
                    limits.max_connections
                );
                last_full_log = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true);
        // upgrades: a session's WebSockets (sessions::proxy)
        let conn = b
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let (mut closing, held) = (closing_rx.clone(), open.clone());
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { let _ = closing.wait_for(|c| *c).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
            drop(per_client);
            drop(held);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    while Arc::strong_count(&open) > 1 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
