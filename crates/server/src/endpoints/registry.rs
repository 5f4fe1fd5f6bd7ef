//! What the gateway and the endpoints' manager share in memory: each live
//! endpoint with its settings, replicas and load, and the API keys by
//! their hash. The store holds the durable part (`store::endpoints`);
//! this is rebuilt from it at start.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use gigafab_core::serving::{ScalePolicy, ScaleState};
use serde::{Deserialize, Serialize};

/// An endpoint's settings, as `endpoints.spec` keeps them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The model, pinned: `model:NAME@VERSION`.
    pub model: String,
    pub command: Vec<String>,
    pub gpus: i64,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub min_memory_gb: Option<f64>,
    /// Replicas on a slice: (share, name), as a job's `gpu_share` and
    /// `gpu_profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<(Option<f64>, Option<String>)>,
    pub priority: i64,
    pub scaling: ScalePolicy,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub ready_path: String,
    pub startup_timeout_s: i64,
    pub hold_timeout_s: i64,
    pub queue_limit: u32,
    pub key_rate_per_s: f64,
}

/// Where a replica is (the API's `ReplicaState`, as a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RState {
    Queued = 0,
    Starting = 1,
    Ready = 2,
    Draining = 3,
}

impl RState {
    fn from_u8(v: u8) -> RState {
        match v {
            1 => RState::Starting,
            2 => RState::Ready,
            3 => RState::Draining,
            _ => RState::Queued,
        }
    }

    pub fn api(self) -> gigafab_api::ReplicaState {
        match self {
            RState::Queued => gigafab_api::ReplicaState::Queued,
            RState::Starting => gigafab_api::ReplicaState::Starting,
            RState::Ready => gigafab_api::ReplicaState::Ready,
            RState::Draining => gigafab_api::ReplicaState::Draining,
        }
    }
}

/// One replica: its job and where it listens.
pub struct Replica {
    pub job: i64,
    /// The port it serves on, in its own network or the node's.
    pub port: u16,
    /// What the gateway's requests name as their host, once the replica
    /// runs: `host:port` on the gateway's network, or
    /// `job-<id>.replica` for one reached through its supervisor
    /// ([`Serving::socket`]).
    pub authority: std::sync::OnceLock<String>,
    /// The key only the gateway knows (`{api_key}`): what the replica
    /// asks of every request, so that no other process reaches it.
    pub secret: String,
    /// `Bearer <secret>`, as the gateway sends it (made once).
    pub bearer: axum::http::HeaderValue,
    state: AtomicU8,
    /// Requests it is serving.
    pub in_flight: AtomicU32,
    /// When its job started running (ms; 0: not yet).
    pub running_since_ms: AtomicI64,
    /// Its accelerators, once running.
    pub accelerators: Mutex<Vec<String>>,
    /// One of the endpoint's minimum: never preempted.
    pub kept: bool,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never its secret
        f.debug_struct("Replica")
            .field("job", &self.job)
            .field("authority", &self.authority.get())
            .field("state", &self.state())
            .finish()
    }
}

impl Replica {
    pub fn new(job: i64, port: u16, secret: String) -> Replica {
        let mut bearer = axum::http::HeaderValue::from_str(&format!("Bearer {secret}"))
            .unwrap_or_else(|_| axum::http::HeaderValue::from_static("Bearer -"));
        bearer.set_sensitive(true);
        Replica {
            bearer,
            job,
            port,
            authority: std::sync::OnceLock::new(),
            secret,
            state: AtomicU8::new(RState::Queued as u8),
            in_flight: AtomicU32::new(0),
            running_since_ms: AtomicI64::new(0),
            accelerators: Mutex::new(Vec::new()),
            kept: false,
        }
    }

    pub fn state(&self) -> RState {
        RState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub fn set_state(&self, s: RState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// A ready replica that could not be reached goes back to starting
    /// (asked again whether it is ready, its startup time counted from
    /// now); any other state stays. Whether it changed.
    pub fn demote(&self) -> bool {
        let changed = self
            .state
            .compare_exchange(
                RState::Ready as u8,
                RState::Starting as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if changed {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            self.running_since_ms.store(now, Ordering::Relaxed);
        }
        changed
    }
}

/// Counters of what was served, since the last flush to the store.
#[derive(Debug, Default)]
pub struct Served {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
}

impl Served {
    pub fn add(&self, error: bool, prompt: u64, completion: u64) {
        self.put_back((1, u64::from(error), prompt, completion));
    }

    /// The counts so far, reset to zero: (requests, errors, prompt,
    /// completion).
    pub fn take(&self) -> (u64, u64, u64, u64) {
        (
            self.requests.swap(0, Ordering::Relaxed),
            self.errors.swap(0, Ordering::Relaxed),
            self.prompt_tokens.swap(0, Ordering::Relaxed),
            self.completion_tokens.swap(0, Ordering::Relaxed),
        )
    }

    /// Adds counts (a flush that failed puts its own back): each stays
    /// within what the store's 64-bit signed counters hold.
    pub fn put_back(&self, (r, e, p, c): (u64, u64, u64, u64)) {
        let add = |a: &AtomicU64, v: u64| {
            let _ = a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
                Some(x.saturating_add(v).min(i64::MAX as u64 / 2))
            });
        };
        add(&self.requests, r);
        add(&self.errors, e);
        add(&self.prompt_tokens, p);
        add(&self.completion_tokens, c);
    }
}

/// A live endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub id: i64,
    pub name: String,
    /// Its organisation's name (what `models` says owns it).
    pub owner: String,
    pub org_id: i64,
    pub user_id: i64,
    pub alloc_id: i64,
    pub project: Option<String>,
    pub created_ms: i64,
    pub settings: RwLock<Settings>,
    pub replicas: RwLock<Vec<Arc<Replica>>>,
    /// Requests being served, and waiting for a ready replica.
    pub in_flight: AtomicU32,
    pub queued: AtomicU32,
    pub last_request_ms: AtomicI64,
    /// Told when a replica becomes ready (held requests go on).
    pub ready: tokio::sync::Notify,
    /// What the autoscaler remembers between decisions.
    pub scale: Mutex<ScaleState>,
    pub deleted: AtomicBool,
    /// Totals since the server started (the store has the earlier ones).
    pub served: Served,
    /// Its metrics' handles.
    pub metrics: crate::metrics::EndpointMetrics,
    /// Replicas that ended unasked, and how the last one did.
    pub failures: AtomicU64,
    last_failure: Mutex<String>,
}

impl Endpoint {
    pub fn new(
        id: i64,
        (name, owner): (String, String),
        (org_id, user_id, alloc_id): (i64, i64, i64),
        project: Option<String>,
        created_ms: i64,
        settings: Settings,
        metrics: crate::metrics::EndpointMetrics,
    ) -> Endpoint {
        Endpoint {
            id,
            name,
            owner,
            org_id,
            user_id,
            alloc_id,
            project,
            created_ms,
            settings: RwLock::new(settings),
            replicas: RwLock::new(Vec::new()),
            in_flight: AtomicU32::new(0),
            queued: AtomicU32::new(0),
            last_request_ms: AtomicI64::new(0),
            ready: tokio::sync::Notify::new(),
            scale: Mutex::new(ScaleState::default()),
            deleted: AtomicBool::new(false),
            served: Served::default(),
            metrics,
            failures: AtomicU64::new(0),
            last_failure: Mutex::new(String::new()),
        }
    }

    /// A replica ended unasked (`why`): requests waiting for one are told.
    pub fn replica_failed(&self, why: String) {
        if let Ok(mut l) = self.last_failure.lock() {
            *l = why;
        }
        self.failures.fetch_add(1, Ordering::AcqRel);
        self.ready.notify_waiters();
    }

    /// How the last replica that ended unasked did.
    pub fn last_failure(&self) -> String {
        self.last_failure
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Its `hold_timeout_s` and `queue_limit` (read without a copy of the
    /// settings: the gateway asks for them on every request).
    pub fn hold_and_queue(&self) -> (i64, u32) {
        match self.settings.read() {
            Ok(s) => (s.hold_timeout_s, s.queue_limit),
            Err(e) => {
                let s = e.into_inner();
                (s.hold_timeout_s, s.queue_limit)
            }
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings
            .read()
            .map(|s| s.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.replicas
            .read()
            .map(|r| r.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The ready replica with the fewest requests in flight.
    pub fn pick(&self) -> Option<Arc<Replica>> {
        let r = self.replicas.read().ok()?;
        r.iter()
            .filter(|x| x.state() == RState::Ready)
            .min_by_key(|x| x.in_flight.load(Ordering::Relaxed))
            .cloned()
    }
}

type Limiter = governor::DefaultDirectRateLimiter;

/// `per_s` requests a second, in bursts of 5 s worth.
fn limiter(per_s: f64) -> Limiter {
    let per_s = per_s.clamp(0.001, 1e6);
    let period = std::time::Duration::from_secs_f64(1.0 / per_s);
    let burst = NonZeroU32::new(((per_s * 5.0).ceil() as u32).max(1)).expect("positive");
    let quota = governor::Quota::with_period(period)
        .expect("a positive period")
        .allow_burst(burst);
    governor::RateLimiter::direct(quota)
}

/// A live API key of an endpoint.
pub struct Key {
    pub id: i64,
    pub endpoint_id: i64,
    /// The requests a second it allows (f64 bits).
    per_s: AtomicU64,
    pub expires_ms: Option<i64>,
    pub revoked: AtomicBool,
    /// Its budget (replaced when its rate changes).
    limiter: RwLock<Limiter>,
    /// What it served since the last flush.
    pub served: Served,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("id", &self.id).finish()
    }
}

impl Key {
    /// A key allowing `per_s` requests a second, bursts of 5 s worth.
    pub fn new(id: i64, endpoint_id: i64, expires_ms: Option<i64>, per_s: f64) -> Key {
        Key {
            per_s: AtomicU64::new(per_s.to_bits()),
            id,
            endpoint_id,
            expires_ms,
            revoked: AtomicBool::new(false),
            limiter: RwLock::new(limiter(per_s)),
            served: Served::default(),
        }
    }

    /// The requests a second it allows.
    pub fn per_s(&self) -> f64 {
        f64::from_bits(self.per_s.load(Ordering::Relaxed))
    }

    /// Allows `per_s` requests a second from now on (a fresh budget).
    pub fn set_rate(&self, per_s: f64) {
        if let Ok(mut l) = self.limiter.write() {
            *l = limiter(per_s);
            self.per_s.store(per_s.to_bits(), Ordering::Relaxed);
        }
    }

    /// Takes one request from its budget; how long to wait when it is spent.
    pub fn check(&self) -> Result<(), std::time::Duration> {
        let l = self.limiter.read().unwrap_or_else(|e| e.into_inner());
        l.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// Whether it works at `now` (ms).
    pub fn live(&self, now_ms: i64) -> bool {
        !self.revoked.load(Ordering::Acquire) && self.expires_ms.is_none_or(|e| now_ms < e)
    }
}

/// Every live endpoint and key.
#[derive(Debug, Default)]
pub struct Serving {
    by_name: RwLock<HashMap<String, Arc<Endpoint>>>,
    /// Keys by the hex SHA-256 of the key.
    by_hash: RwLock<HashMap<String, Arc<Key>>>,
    /// Wakes the manager (a request at zero replicas, a change).
    pub wake: tokio::sync::Notify,
    /// The supervisors' sockets of replicas in networks of their own, by
    /// the authority their requests name.
    sockets: RwLock<HashMap<String, std::path::PathBuf>>,
}

impl Serving {
    pub fn get(&self, name: &str) -> Option<Arc<Endpoint>> {
        self.by_name.read().ok()?.get(name).cloned()
    }

    pub fn by_id(&self, id: i64) -> Option<Arc<Endpoint>> {
        self.by_name
            .read()
            .ok()?
            .values()
            .find(|e| e.id == id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        let mut v: Vec<Arc<Endpoint>> = self
            .by_name
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|e| e.id);
        v
    }

    pub fn insert(&self, e: Arc<Endpoint>) {
        if let Ok(mut m) = self.by_name.write() {
            m.insert(e.name.clone(), e);
        }
    }

    pub fn remove(&self, name: &str) -> Option<Arc<Endpoint>> {
        let e = self.by_name.write().ok()?.remove(name)?;
        e.deleted.store(true, Ordering::Release);
        // its held requests give up at once
        e.ready.notify_waiters();
        if let Ok(keys) = self.by_hash.read() {
            for k in keys.values().filter(|k| k.endpoint_id == e.id) {
                k.revoked.store(true, Ordering::Release);
            }
        }
        Some(e)
    }

    pub fn key(&self, hash: &str) -> Option<Arc<Key>> {
        self.by_hash.read().ok()?.get(hash).cloned()
    }

    pub fn insert_key(&self, hash: String, k: Arc<Key>) {
        if let Ok(mut m) = self.by_hash.write() {
            m.insert(hash, k);
        }
    }

    /// Every key with its hash.
    pub fn keys_by_hash(&self) -> Vec<(String, Arc<Key>)> {
        self.by_hash
            .read()
            .map(|m| m.iter().map(|(h, k)| (h.clone(), k.clone())).collect())
            .unwrap_or_default()
    }

    /// Keeps exactly the keys of `want` (hash -> id, endpoint, expiry):
    /// those already here as they are (with their rate limiters), new ones
    /// at `rate(endpoint)` requests a second; the rest are revoked.
    pub fn keep_keys(
        &self,
        want: HashMap<String, (i64, i64, Option<i64>)>,
        rate: impl Fn(i64) -> f64,
    ) {
        let Ok(mut m) = self.by_hash.write() else {
            return;
        };
        m.retain(|h, k| {
            let keep = want.get(h).is_some_and(|w| w.0 == k.id);
            if !keep {
                k.revoked.store(true, Ordering::Release);
            }
            keep
        });
        for (h, (id, endpoint, expires)) in want {
            let per_s = rate(endpoint);
            match m.get(&h) {
                // its rate changed (the endpoint's, or the number of
                // gateways): a fresh budget at the new rate
                Some(k) if (k.per_s() - per_s).abs() > per_s * 0.01 => k.set_rate(per_s),
                Some(_) => {}
                None => {
                    m.insert(h, Arc::new(Key::new(id, endpoint, expires, per_s)));
                }
            }
        }
    }

    pub fn keys(&self) -> Vec<Arc<Key>> {
        self.by_hash
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The supervisor's socket of the replica requests to `authority` go
    /// to, if it is one reached that way.
    pub fn socket(&self, authority: &str) -> Option<std::path::PathBuf> {
        self.sockets.read().ok()?.get(authority).cloned()
    }

    /// Sets where `r` is reached (once).
    pub fn place(&self, r: &Replica, reach: gigafab_exec::Reach) {
        let authority = match reach {
            gigafab_exec::Reach::Tcp(a) => a,
            gigafab_exec::Reach::Socket(path) => {
                let a = format!("job-{}.replica", r.job);
                if let Ok(mut m) = self.sockets.write() {
                    m.insert(a.clone(), path);
                }
                a
            }
        };
        let _ = r.authority.set(authority);
    }

    /// Forgets the sockets of replicas no endpoint has any more.
    pub fn sweep_sockets(&self) {
        let live: std::collections::HashSet<String> = self
            .all()
            .iter()
            .flat_map(|e| e.replicas())
            .filter_map(|r| r.authority.get().cloned())
            .collect();
        if let Ok(mut m) = self.sockets.write() {
            m.retain(|a, _| live.contains(a));
        }
    }

    pub fn revoke_key(&self, id: i64) {
        if let Ok(m) = self.by_hash.read() {
            for k in m.values().filter(|k| k.id == id) {
                k.revoked.store(true, Ordering::Release);
            }
        }
    }
}

/// How long a gateway's report counts (it reports every second).
pub const REPORT_TTL_MS: i64 = 5_000;
/// Most gateways reporting at once.
pub const MAX_GATEWAYS: usize = 256;

/// The gateways' latest reports, by gateway name: when, and the load.
#[derive(Debug, Default)]
pub struct Reports {
    pub(crate) by_gateway: std::sync::Mutex<HashMap<String, (i64, Vec<gigafab_api::GatewayLoad>)>>,
    /// The number of each gateway's last report whose usage was counted.
    counted: std::sync::Mutex<HashMap<String, u64>>,
}

/// The gateways' load on one endpoint now.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RemoteLoad {
    pub in_flight: u32,
    pub queued: u32,
    pub last_request_ms: i64,
}

impl Reports {
    /// The load the gateways report on endpoint `id` (reports older than
    /// a few seconds no longer count: that gateway is gone).
    pub fn load(&self, id: i64, now_ms: i64) -> RemoteLoad {
        let mut out = RemoteLoad::default();
        let Ok(m) = self.by_gateway.lock() else {
            return out;
        };
        for (at, loads) in m.values() {
            for l in loads.iter().filter(|l| l.endpoint.0 == id) {
                out.last_request_ms = out.last_request_ms.max(l.last_request_ms);
                if now_ms - at <= REPORT_TTL_MS {
                    out.in_flight = out.in_flight.saturating_add(l.in_flight);
                    out.queued = out.queued.saturating_add(l.queued);
                }
            }
        }
        out
    }

    /// Requests the gateways have in flight on replica `job`.
    pub fn on_replica(&self, job: i64, now_ms: i64) -> u32 {
        let Ok(m) = self.by_gateway.lock() else {
            return 0;
        };
        m.values()
            .filter(|(at, _)| now_ms - at <= REPORT_TTL_MS)
            .flat_map(|(_, loads)| loads.iter())
            .flat_map(|l| l.replicas.iter())
            .filter(|r| r.job.0 == job)
            .fold(0u32, |a, r| a.saturating_add(r.in_flight))
    }

    /// Whether the usage of `gateway`'s report number `seq` is to be
    /// counted: not when a report of that number or a later one was
    /// (resent after a lost answer). Number 0 is always counted.
    pub fn first_time(&self, gateway: &str, seq: u64) -> bool {
        if seq == 0 {
            return true;
        }
        let Ok(mut m) = self.counted.lock() else {
            return false;
        };
        match m.get(gateway) {
            Some(&last) if seq <= last => false,
            _ => {
                if m.len() >= 4 * MAX_GATEWAYS {
                    m.clear();
                }
                m.insert(gateway.to_string(), seq);
                true
            }
        }
    }

    /// Gateways that reported lately.
    pub fn live(&self, now_ms: i64) -> usize {
        self.by_gateway.lock().map_or(0, |m| {
            m.values()
                .filter(|(at, _)| now_ms - at <= REPORT_TTL_MS)
                .count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resent_report_is_counted_once() {
        let r = Reports::default();
        assert!(r.first_time("gw-1", 10));
        // its answer was lost: the same report again
        assert!(!r.first_time("gw-1", 10));
        assert!(!r.first_time("gw-1", 9));
        assert!(r.first_time("gw-1", 11));
        // another gateway has numbers of its own; 0 is never deduplicated
        assert!(r.first_time("gw-2", 10));
        assert!(r.first_time("gw-2", 0));
        assert!(r.first_time("gw-2", 0));
    }

    #[test]
    fn served_counts_saturate() {
        let s = Served::default();
        s.add(false, u64::MAX, 1);
        s.add(true, u64::MAX, 1);
        let (r, e, p, c) = s.take();
        assert_eq!((r, e, c), (2, 1, 2));
        assert_eq!(p, i64::MAX as u64 / 2);
        assert!(i64::try_from(p).is_ok());
    }
}
