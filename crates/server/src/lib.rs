//! gigafab's control plane: `gigafab serve`.
//!
//! - [`store`]: SQLite (embedded default) or PostgreSQL, migrated at start;
//! - [`ctl`]: the controller task that owns the live state, runs the same
//!   scheduler as the digital twin with wall-clock time, group-commits every
//!   change before answering, and drives an [`gigafab_exec::Executor`];
//! - [`api`]: the JSON HTTP API under `/api/v1`.

#![recursion_limit = "512"]

pub mod api;
pub mod auth;
pub mod ctl;
pub mod error;
pub mod model;
pub mod store;
pub mod time;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use gigafab_exec::Executor;
use tokio::sync::mpsc;

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
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the state from the store: {0}")]
    Load(#[from] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
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
    pub shared: Arc<ctl::Shared>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Serves until the process is stopped or the listener fails.
    pub async fn wait(self) -> std::io::Result<()> {
        match self.server.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

/// Opens the store, loads and adopts, binds and starts serving.
pub async fn start(cfg: ServeConfig) -> Result<Running, ServeError> {
    let store = Store::open(&cfg.database_url).await?;
    let (tx, rx) = mpsc::channel(4096);
    let shared = Arc::new(ctl::Shared {
        store: store.clone(),
        tokens: RwLock::new(HashMap::new()),
        tx,
        executor: cfg.executor,
        telemetry: cfg.telemetry,
        stats: Default::default(),
    });
    let (controller, token) = ctl::Controller::load(cfg.ctl, shared.clone()).await?;
    tokio::spawn(controller.run(rx));
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
    let app = api::router(shared.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running {
        addr,
        store: store.kind,
        first_start: token.is_some(),
        first_token: token.filter(|t| !t.is_empty()),
        shared,
        server,
    })
}
