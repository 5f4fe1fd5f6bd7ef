//! Standalone gateways (`gigafab gateway`): several stateless processes
//! behind a load balancer, each serving `/v1/endpoints/...` as the
//! server's own gateway does.
//!
//! A gateway keeps nothing of its own. About once a second (five times a
//! second while requests wait for a replica) it sends the server
//! `POST /api/v1/gateway/sync`: what its requests do to each endpoint now
//! (in flight, waiting, the last one) and what each key served since its
//! last report. The answer is everything it serves: the endpoints with
//! their ready replicas, and the live keys. The server's autoscaler adds
//! the gateways' load to its own; what they served is charged as the
//! server's own gateway's is.
//!
//! This module has both sides: the server's ([`sync`]; the reports are
//! kept in [`super::registry::Reports`]) and
//! the gateway's ([`apply`], [`load`], [`take_usage`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use gigafab_api::{
    EndpointId, EndpointKeyId, GatewayEndpoint, GatewayKey, GatewayKeyUsage, GatewayLoad,
    GatewayReplica, GatewayReplicaLoad, GatewayRoutes, GatewaySync, JobId, ReplicaReach,
};

/// Most requests in flight or waiting one gateway reports on an endpoint.
const MAX_LOAD: u32 = 1_000_000;
/// Most endpoints one report counts.
const MAX_ENDPOINTS_REPORTED: usize = 100_000;

use super::registry::{
    Endpoint, Key, MAX_GATEWAYS, REPORT_TTL_MS, RState, Replica, Serving, Settings,
};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::state::Shared;

/// `POST /api/v1/gateway/sync`: takes a gateway's report, answers what it
/// serves. Admins only (the answer holds the replicas' keys).
pub fn sync(s: &Shared, who: &Principal, req: GatewaySync) -> Result<GatewayRoutes, ApiError> {
    if who.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only an admin's token may run a gateway (it is given the replicas' keys)",
        ));
    }
    let name = req.gateway.trim();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "`gateway`: a gateway's name is 1 to 128 printable characters",
        ));
    }
    let now = s.clock.now().0;
    let waiting = req.load.iter().any(|l| l.queued > 0);
    {
        let mut m = s
            .gateway_reports
            .by_gateway
            .lock()
            .map_err(|_| ApiError::unavailable("lock"))?;
        m.retain(|_, (at, _)| now - *at <= 10 * REPORT_TTL_MS);
        if m.len() >= MAX_GATEWAYS && !m.contains_key(name) {
            return Err(ApiError::unavailable(format!(
                "{MAX_GATEWAYS} gateways report already"
            )));
        }
        // its numbers held to bounds, its times to the server's clock
        let load = req
            .load
            .into_iter()
            .take(MAX_ENDPOINTS_REPORTED)
            .map(|mut l| {
                l.in_flight = l.in_flight.min(MAX_LOAD);
                l.queued = l.queued.min(MAX_LOAD);
                l.last_request_ms = l.last_request_ms.min(now);
                l.replicas.truncate(MAX_LOAD as usize);
                for r in l.replicas.iter_mut() {
                    r.in_flight = r.in_flight.min(MAX_LOAD);
                }
                l
            })
            .collect();
        m.insert(name.to_string(), (now, load));
    }
    // what they served: charged as the server's own gateway's is (once)
    let keys: HashMap<i64, Arc<Key>> = s.serving.keys().into_iter().map(|k| (k.id, k)).collect();
    let usage = if s.gateway_reports.first_time(name, req.seq) {
        &req.usage[..]
    } else {
        &[]
    };
    for u in usage {
        if let Some(k) = keys.get(&u.key.0) {
            // held to what that many answers may count
            let most = u.requests.saturating_mul(crate::gateway::MAX_TOKENS);
            let t = (
                u.requests,
                u.errors.min(u.requests),
                u.prompt_tokens.min(most),
                u.completion_tokens.min(most),
            );
            k.served.put_back(t);
            if let Some(e) = s.serving.by_id(k.endpoint_id) {
                e.served.put_back(t);
            }
        }
    }
    if waiting {
        s.serving.wake.notify_one();
    }
    Ok(routes(&s.serving, now, s.gateway_reports.live(now).max(1)))
}

/// Everything a gateway serves: each key's rate shared among the
/// `gateways` that report (a load balancer spreads a key's requests).
fn routes(serving: &Serving, now_ms: i64, gateways: usize) -> GatewayRoutes {
    let endpoints: Vec<GatewayEndpoint> = serving
        .all()
        .iter()
        .filter(|e| !e.deleted.load(Ordering::Acquire))
        .map(|e| {
            let set = e.settings();
            GatewayEndpoint {
                id: EndpointId(e.id),
                name: e.name.clone(),
                owner: e.owner.clone(),
                created_ms: e.created_ms,
                hold_timeout_s: set.hold_timeout_s,
                queue_limit: set.queue_limit,
                key_rate_per_s: set.key_rate_per_s / gateways as f64,
                replicas: e
                    .replicas()
                    .iter()
                    .filter(|r| r.state() == RState::Ready)
                    .filter_map(|r| {
                        let a = r.authority.get()?;
                        Some(GatewayReplica {
                            job: JobId(r.job),
                            reach: match serving.socket(a) {
                                Some(p) => ReplicaReach::Socket(p.display().to_string()),
                                None => ReplicaReach::Tcp(a.clone()),
                            },
                            secret: r.secret.clone(),
                        })
                    })
                    .collect(),
                failures: e.failures.load(Ordering::Acquire),
                last_failure: e.last_failure(),
            }
        })
        .collect();
    let live: HashSet<i64> = endpoints.iter().map(|e| e.id.0).collect();
    let keys = serving
        .keys_by_hash()
        .into_iter()
        .filter(|(_, k)| k.live(now_ms) && live.contains(&k.endpoint_id))
        .map(|(hash, k)| GatewayKey {
            id: EndpointKeyId(k.id),
            endpoint: EndpointId(k.endpoint_id),
            hash,
            expires_ms: k.expires_ms,
        })
        .collect();
    GatewayRoutes { endpoints, keys }
}

/// The gateway's side: makes `serving` what `routes` says (endpoints,
/// their ready replicas, keys), keeping the counters and rate limiters of
/// what stays. Requests held for a replica go on when one is there.
pub fn apply(serving: &Serving, metrics: &crate::metrics::Metrics, routes: GatewayRoutes) {
    let named: HashSet<String> = routes.endpoints.iter().map(|e| e.name.clone()).collect();
    for e in serving.all() {
        if !named.contains(&e.name) {
            serving.remove(&e.name);
        }
    }
    for r in routes.endpoints {
        let e = match serving.get(&r.name).filter(|e| e.id == r.id.0) {
            Some(e) => e,
            None => {
                if serving.get(&r.name).is_some() {
                    serving.remove(&r.name);
                }
                let e = Arc::new(Endpoint::new(
                    r.id.0,
                    (r.name.clone(), r.owner.clone()),
                    (0, 0, 0),
                    None,
                    r.created_ms,
                    gateway_settings(&r),
                    metrics.endpoint(&r.name),
                ));
                serving.insert(e.clone());
                e
            }
        };
        if let Ok(mut set) = e.settings.write() {
            *set = gateway_settings(&r);
        }
        let had: HashMap<i64, Arc<Replica>> =
            e.replicas().into_iter().map(|x| (x.job, x)).collect();
        let mut fresh = false;
        let list: Vec<Arc<Replica>> = r
            .replicas
            .into_iter()
            .map(|x| match had.get(&x.job.0) {
                Some(old) if old.state() == RState::Ready => old.clone(),
                _ => {
                    fresh = true;
                    let n = Replica::new(x.job.0, 0, x.secret);
                    serving.place(
                        &n,
                        match x.reach {
                            ReplicaReach::Tcp(a) => gigafab_exec::Reach::Tcp(a),
                            ReplicaReach::Socket(p) => gigafab_exec::Reach::Socket(p.into()),
                        },
                    );
                    n.set_state(RState::Ready);
                    Arc::new(n)
                }
            })
            .collect();
        if let Ok(mut l) = e.replicas.write() {
            *l = list;
        }
        if r.failures > e.failures.load(Ordering::Acquire) {
            e.failures.store(r.failures - 1, Ordering::Release);
            e.replica_failed(r.last_failure);
        }
        if fresh {
            e.ready.notify_waiters();
        }
    }
    serving.sweep_sockets();
    serving.keep_keys(
        routes
            .keys
            .into_iter()
            .map(|k| (k.hash, (k.id.0, k.endpoint.0, k.expires_ms)))
            .collect(),
        |endpoint| {
            serving
                .by_id(endpoint)
                .map_or(1.0, |e| e.settings().key_rate_per_s)
        },
    );
}

/// The settings a gateway needs of an endpoint (the rest is the server's).
fn gateway_settings(r: &GatewayEndpoint) -> Settings {
    Settings {
        model: String::new(),
        command: Vec::new(),
        gpus: 0,
        types: Vec::new(),
        vendor: None,
        min_memory_gb: None,
        slice: None,
        priority: 0,
        scaling: Default::default(),
        env: Default::default(),
        ready_path: String::new(),
        startup_timeout_s: 0,
        hold_timeout_s: r.hold_timeout_s,
        queue_limit: r.queue_limit,
        key_rate_per_s: r.key_rate_per_s,
    }
}

/// The gateway's side: what its requests do to each endpoint now.
pub fn load(serving: &Serving) -> Vec<GatewayLoad> {
    serving
        .all()
        .iter()
        .map(|e| GatewayLoad {
            endpoint: EndpointId(e.id),
            in_flight: e.in_flight.load(Ordering::Relaxed),
            queued: e.queued.load(Ordering::Relaxed),
            last_request_ms: e.last_request_ms.load(Ordering::Relaxed),
            replicas: e
                .replicas()
                .iter()
                .map(|r| GatewayReplicaLoad {
                    job: JobId(r.job),
                    in_flight: r.in_flight.load(Ordering::Relaxed),
                })
                .filter(|r| r.in_flight > 0)
                .collect(),
        })
        .collect()
}

/// The gateway's side: what each key served since the last time, taken
/// (its counters start again from zero).
pub fn take_usage(serving: &Serving) -> Vec<GatewayKeyUsage> {
    serving
        .keys()
        .iter()
        .filter_map(|k| {
            let (requests, errors, prompt_tokens, completion_tokens) = k.served.take();
            (requests > 0).then_some(GatewayKeyUsage {
                key: EndpointKeyId(k.id),
                requests,
                errors,
                prompt_tokens,
                completion_tokens,
            })
        })
        .collect()
}
