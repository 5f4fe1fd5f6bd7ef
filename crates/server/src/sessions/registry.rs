//! The sessions the server holds: their apps, those not yet ended, where
//! each is reached (what the proxy and the sessions' watch share).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, Mutex, RwLock};

use gigafab_exec::Reach;

use super::apps::{self, AppDef};

/// WebSocket tunnels of one session open at once, at most.
pub const TUNNELS_PER_SESSION: usize = 32;
use crate::store::sessions::SessionRow;

/// The sessions' settings (`gigafab serve` flags).
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The apps sessions may run.
    pub apps: Vec<AppDef>,
    /// Longest time limit, extensions included, seconds
    /// (`--session-max-hours`).
    pub max_s: i64,
    /// Jobs have networks of their own (`--job-network private`): apps
    /// with no secret of their own may run.
    pub private_network: bool,
    /// Why sessions cannot run on this server, if they cannot: where
    /// tenants' jobs share the machine's network, another tenant's job
    /// could take a session's port first; an engine that runs jobs on other
    /// machines has no way to them yet.
    pub unavailable: Option<String>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            apps: apps::load(None).expect("the built-in apps read"),
            max_s: 12 * 3600,
            private_network: true,
            unavailable: None,
        }
    }
}

/// A session not yet ended, as the server holds it.
pub struct Live {
    pub row: SessionRow,
    pub app: Arc<AppDef>,
    /// Where its app is reached, once its job runs, with the run's handle
    /// (a run requeued elsewhere is reached anew).
    pub reach: Mutex<Option<(String, Reach)>>,
    /// Its WebSocket tunnels open now, at most [`TUNNELS_PER_SESSION`].
    pub tunnels: Arc<tokio::sync::Semaphore>,
    /// Its app answered its readiness check.
    pub ready: AtomicBool,
    /// The last request through the proxy, ms.
    pub last_traffic_ms: AtomicI64,
    /// Its last activity as last seen (the app's word, or traffic), ms.
    pub last_activity_ms: AtomicI64,
    /// When its idleness was last asked, ms.
    pub(super) idle_asked_ms: AtomicI64,
}

impl Live {
    /// Its path under the server (`/sessions/{id}/`).
    pub fn base(&self) -> String {
        base(self.row.id)
    }

    /// Where its app is reached (None: its job does not run yet).
    pub fn reach(&self) -> Option<Reach> {
        self.reach
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.1.clone())
    }

    /// Its run stopped or moved: not reached until its app answers again.
    pub fn unplace(&self) {
        self.ready
            .store(false, std::sync::atomic::Ordering::Release);
        *self.reach.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The path of session `id` under the server.
pub fn base(id: i64) -> String {
    format!("/sessions/{id}/")
}

/// The sessions: the apps, those not yet ended, the next id.
pub struct Sessions {
    pub cfg: SessionConfig,
    /// Held while a session starts (the per-user cap is counted under it).
    pub starting: tokio::sync::Mutex<()>,
    live: RwLock<HashMap<i64, Arc<Live>>>,
    pub(super) last_id: AtomicI64,
}

impl Sessions {
    pub fn new(cfg: SessionConfig) -> Sessions {
        Sessions {
            cfg,
            starting: Default::default(),
            live: Default::default(),
            last_id: AtomicI64::new(0),
        }
    }

    pub fn app(&self, name: &str) -> Option<&AppDef> {
        self.cfg.apps.iter().find(|a| a.name == name)
    }

    /// Session `id`, if not ended.
    pub fn live(&self, id: i64) -> Option<Arc<Live>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub(super) fn all(&self) -> Vec<Arc<Live>> {
        self.live
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub(super) fn hold(&self, row: SessionRow) -> Option<Arc<Live>> {
        let app = Arc::new(self.app(&row.app)?.clone());
        let at = row.last_activity_ms.unwrap_or(row.created_ms).0;
        let l = Arc::new(Live {
            app,
            reach: Mutex::new(None),
            tunnels: Arc::new(tokio::sync::Semaphore::new(TUNNELS_PER_SESSION)),
            ready: AtomicBool::new(false),
            last_traffic_ms: AtomicI64::new(at),
            last_activity_ms: AtomicI64::new(at),
            idle_asked_ms: AtomicI64::new(0),
            row,
        });
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(l.row.id, l.clone());
        Some(l)
    }

    pub(super) fn forget(&self, id: i64) {
        self.live
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }
}
