//! The endpoints' manager: once a second (and at once when a request
//! arrives at zero replicas), for each endpoint it follows its replicas'
//! jobs, asks the starting ones whether they answer, runs the autoscaler
//! (`gigafab_core::serving::decide`, the twin's) and submits or stops
//! replicas to match; every change is an event of the endpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use gigafab_core::serving::{self, ScaleReason};
use tokio::sync::watch;

use super::registry::{Endpoint, RState, Replica};
use crate::auth::{Principal, Role};
use crate::ctl::Action;
use crate::error::ApiError;
use crate::state::Shared;
use crate::store::endpoints::{self as st, Table};
use crate::time::Ms;

/// How often the manager looks (a request at zero replicas wakes it).
pub const TICK: Duration = Duration::from_secs(1);
/// After a replica could not be submitted, the wait before trying again.
const RETRY_SUBMIT_MS: i64 = 30_000;
/// How often the served counters are written to the store.
const FLUSH_EVERY: u32 = 5;

/// Runs the manager until `stop` turns true.
pub fn spawn(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        // the gateway's own client (a replica's redirect is never
        // followed: it would point the control plane elsewhere)
        let mut m = Manager {
            http: crate::gateway::Upstream::new(s.serving.clone()),
            failed_submit: Default::default(),
            restarts: Default::default(),
            ticks: 0,
        };
        // a dropped sender (a server run without its handle) never stops it
        let mut stop_gone = false;
        loop {
            m.tick(&s).await;
            // while a replica starts or requests wait, look more often: a
            // ready replica is used within a fifth of a second
            let busy = s.serving.all().iter().any(|e| {
                e.queued.load(Ordering::Relaxed) > 0
                    || s.gateway_reports.load(e.id, s.clock.now().0).queued > 0
                    || e.replicas().iter().any(|r| r.state() == RState::Starting)
            });
            let wait = if busy { TICK / 5 } else { TICK };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = s.serving.wake.notified() => {}
                r = stop.changed(), if !stop_gone => match r {
                    Ok(()) if *stop.borrow() => break,
                    Ok(()) => {}
                    Err(_) => stop_gone = true,
                },
            }
        }
        m.flush(&s).await;
    });
}

struct Manager {
    http: std::sync::Arc<crate::gateway::Upstream>,
    /// Endpoint id -> when a replica last failed to be submitted, why.
    failed_submit: std::collections::HashMap<i64, (i64, String)>,
    /// Endpoint id -> replicas that ended unasked in a row, and when the
    /// next may start (a command that crashes is not restarted in a loop).
    restarts: std::collections::HashMap<i64, (u32, i64)>,
    ticks: u32,
}

/// The wait before replacing a replica that ended unasked, after `n` such
/// ends in a row: 5 s doubling to 5 minutes.
fn restart_backoff_ms(n: u32) -> i64 {
    (5_000i64 << n.saturating_sub(1).min(6)).min(300_000)
}

/// The principal internal stops act as (an endpoint's replicas are
/// stopped even when their creator was disabled since).
fn system() -> Principal {
    Principal {
        user_id: 0,
        name: "gigafab".into(),
        login: "gigafab".into(),
        role: Role::Admin,
        org_id: None,
        token_id: 0,
        expires_ms: None,
    }
}

/// Serialises the events' ids (taken from the store's highest): the
/// manager's events and `scale`'s.
pub(crate) static EVENT_IDS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Records an event of endpoint `e`.
async fn event(
    s: &Shared,
    e: &Endpoint,
    kind: &str,
    from: u32,
    to: u32,
    reason: &str,
    detail: String,
) {
    let _g = EVENT_IDS.lock().await;
    let now = s.clock.now();
    let r = async {
        let id = st::max_id(&s.store.pool, Table::Events).await? + 1;
        s.store
            .write(vec![st::event(
                id,
                e.id,
                now,
                kind,
                from,
                to,
                reason,
                detail.clone(),
            )])
            .await
    }
    .await;
    if let Err(err) = r {
        tracing::warn!(
            "endpoint {}: cannot record event {kind} ({reason}): {err}",
            e.name
        );
    }
    tracing::info!(
        endpoint = e.name.as_str(),
        kind,
        from,
        to,
        reason,
        "endpoint {}: {kind} {from} -> {to} ({reason}) {detail}",
        e.name
    );
}

/// Cancels replica job `job` of `e` (it leaves the endpoint's list).
pub async fn cancel_replica(s: &Shared, e: &Endpoint, job: i64) {
    if let Ok(mut r) = e.replicas.write() {
        r.retain(|x| x.job != job);
    }
    if let Err(err) = s
        .ask(system(), Action::Cancel(gigafab_api::JobId(job)))
        .await
        && err.status != axum::http::StatusCode::CONFLICT
    {
        tracing::warn!("endpoint {}: cannot stop replica job {job}: {err}", e.name);
    }
}

/// A free port on this machine's loopback for a replica.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Submits replica number `k` of `e` as a job of its creator.
/// Submits a replica of `e`: one it keeps (within `min_replicas`: never
/// preempted) or one above the minimum.
async fn submit_replica(s: &Shared, e: &Endpoint, kept: bool) -> Result<Arc<Replica>, ApiError> {
    let who = s.tenancy.user_principal(e.user_id).ok_or_else(|| {
        ApiError::forbidden("the endpoint's creator is disabled: its replicas cannot run")
    })?;
    let set = e.settings();
    let port = free_port().map_err(|err| ApiError::unavailable(format!("no free port: {err}")))?;
    // filled in at launch, by the engine that runs it (the loopback of
    // the local machine, all addresses of a compute node)
    let host = "{host}";
    let inputs = crate::catalog::resolve_inputs(s, &who, std::slice::from_ref(&set.model)).await?;
    let model_dir = inputs.first().map(|i| i.path.clone()).unwrap_or_default();
    // the replica's own key: the gateway sends it, nothing else knows it
    let secret = crate::auth::new_token();
    let fill = |a: &str| {
        a.replace("{port}", &port.to_string())
            .replace("{model_dir}", &model_dir)
            .replace("{api_key}", &secret)
    };
    let command: Vec<String> = set.command.iter().map(|a| fill(a)).collect();
    let (priority, preemptible) = serving::replica_rank(set.priority as i32, u32::from(kept), 0);
    let types = (!set.types.is_empty()).then(|| set.types.clone());
    let env = Some(
        set.env
            .iter()
            .map(|(k, v)| (k.clone(), fill(v)))
            .collect::<std::collections::BTreeMap<_, _>>(),
    );
    let mut req = super::replica_request(
        &command,
        e.alloc_id,
        set.gpus,
        (&types, &set.vendor, set.min_memory_gb),
        &set.slice,
        (set.priority, preemptible),
        (&env, e.project.clone()),
    );
    req.name = Some(format!("{}-replica", e.name));
    let mut valid = crate::submission::validate(&who, req, &s.factory)?.replica_of(e.id);
    // its rank against training (docs/endpoints.md), whoever the creator is
    valid.priority = priority as i64;
    valid.env.insert("PORT".into(), port.to_string());
    valid.env.insert("HOST".into(), host.into());
    valid.env.insert("GIGAFAB_MODEL_DIR".into(), model_dir);
    valid
        .env
        .insert(super::REPLICA_KEY_VAR.into(), secret.clone());
    let action = s.submission_with(valid, inputs);
    let (_, reply) = s.ask(who, action).await?;
    let job = reply.job()?;
    Ok(Arc::new(Replica::new(job.id.0, port, secret)))
}

impl Manager {
    async fn tick(&mut self, s: &Shared) {
        for e in s.serving.all() {
            if e.deleted.load(Ordering::Acquire) {
                continue;
            }
            if let Err(err) = self.endpoint(s, &e).await {
                tracing::warn!("endpoint {}: {err}", e.name);
            }
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(FLUSH_EVERY) {
            s.serving.sweep_sockets();
            self.flush(s).await;
        }
    }

    /// Writes what the keys served since the last flush.
    async fn flush(&self, s: &Shared) {
        let mut ops = Vec::new();
        let mut taken = Vec::new();
        for k in s.serving.keys() {
            let t = k.served.take();
            if t.0 > 0 {
                ops.push(st::add_key_usage(
                    k.id, t.0 as i64, t.1 as i64, t.2 as i64, t.3 as i64,
                ));
                taken.push((k, t));
            }
        }
        if ops.is_empty() {
            return;
        }
        if let Err(err) = s.store.write(ops).await {
            tracing::warn!("cannot record what the endpoints served: {err}");
            for (k, t) in taken {
                k.served.put_back(t);
            }
        }
    }

    async fn endpoint(&mut self, s: &Shared, e: &Arc<Endpoint>) -> Result<(), ApiError> {
        let now = s.clock.now();
        let set = e.settings();
        // 1. the replicas' jobs
        for r in e.replicas() {
            let row = crate::store::jobs::get(&s.store.pool, r.job).await?;
            let state = row.as_ref().map_or("cancelled", |x| x.state.as_str());
            match state {
                "queued" => {
                    if r.state() != RState::Draining {
                        r.set_state(RState::Queued);
                    }
                    r.running_since_ms.store(0, Ordering::Relaxed);
                }
                "running" => {
                    // where it is reached: known once it is launched
                    if r.authority.get().is_none()
                        && let Some(h) = row.as_ref().and_then(|x| x.handle.as_deref())
                    {
                        match s.executor.reach(r.job, h, r.port) {
                            Ok(reach) => s.serving.place(&r, reach),
                            Err(err) => {
                                tracing::warn!("endpoint {}: replica job {}: {err}", e.name, r.job)
                            }
                        }
                    }
                    if r.state() == RState::Queued {
                        r.set_state(RState::Starting);
                        let since = row.as_ref().and_then(|x| x.started_ms).unwrap_or(now);
                        r.running_since_ms.store(since.0, Ordering::Relaxed);
                        if let Some(a) = row.as_ref().and_then(|x| x.accelerators.clone())
                            && let Ok(mut acc) = r.accelerators.lock()
                        {
                            *acc = serde_json::from_str(&a).unwrap_or_default();
                        }
                    }
                }
                _ => {
                    // it ended: asked to (draining), or not (failed,
                    // cancelled by someone, lost)
                    if let Ok(mut list) = e.replicas.write() {
                        list.retain(|x| x.job != r.job);
                    }
                    if r.state() != RState::Draining {
                        let n = self.restarts.get(&e.id).map_or(0, |x| x.0) + 1;
                        self.restarts
                            .insert(e.id, (n, now.0 + restart_backoff_ms(n)));
                        let why = row
                            .as_ref()
                            .and_then(|x| x.reason.clone())
                            .unwrap_or_default();
                        e.replica_failed(format!(
                            "job {} ended ({state}) {why}; its output: gigafab logs {} --stderr",
                            r.job, r.job
                        ));
                        event(
                            s,
                            e,
                            "replica_ended",
                            0,
                            0,
                            state,
                            format!("job {} ended ({state}) {why}", r.job),
                        )
                        .await;
                    }
                }
            }
        }
        // 2. the starting ones: do they answer yet? (asked all at once: a
        // slow one does not hold up the others)
        let replicas = e.replicas();
        let answers = futures_util::future::join_all(replicas.iter().map(|r| {
            let starting = r.state() == RState::Starting;
            let authority = r.authority.get().filter(|_| starting);
            let client = self.http.clone();
            let bearer = r.bearer.clone();
            let path = set.ready_path.clone();
            async move {
                let Some(authority) = authority else {
                    return false;
                };
                let req = crate::gateway::h1::Req {
                    method: "GET",
                    path: &path,
                    headers: &[("authorization", &bearer)],
                    body: &[],
                };
                // its status alone says (the body is not read: the
                // connection is closed with the answer)
                let ask = async {
                    let a = client.send(authority, &req).await?;
                    Ok::<_, crate::gateway::h1::Error>(a.status.is_success())
                };
                matches!(
                    tokio::time::timeout(Duration::from_secs(1), ask).await,
                    Ok(Ok(true))
                )
            }
        }))
        .await;
        for (r, ok) in replicas.into_iter().zip(answers) {
            match r.state() {
                RState::Starting => {
                    if ok {
                        r.set_state(RState::Ready);
                        e.ready.notify_waiters();
                        self.restarts.remove(&e.id);
                        let since = r.running_since_ms.load(Ordering::Relaxed);
                        event(
                            s,
                            e,
                            "replica_ready",
                            0,
                            0,
                            "ready",
                            format!(
                                "job {} answers at {} ({:.1} s after it started)",
                                r.job,
                                r.authority.get().map_or("", String::as_str),
                                now.secs_since(Ms(since))
                            ),
                        )
                        .await;
                    } else if now.secs_since(Ms(r.running_since_ms.load(Ordering::Relaxed)))
                        > set.startup_timeout_s as f64
                    {
                        event(
                            s,
                            e,
                            "replica_replaced",
                            0,
                            0,
                            "startup_timeout",
                            format!(
                                "job {} did not answer {} within {} s",
                                r.job, set.ready_path, set.startup_timeout_s
                            ),
                        )
                        .await;
                        cancel_replica(s, e, r.job).await;
                    }
                }
                RState::Draining
                    if r.in_flight.load(Ordering::Acquire) == 0
                        && s.gateway_reports.on_replica(r.job, now.0) == 0 =>
                {
                    cancel_replica(s, e, r.job).await;
                }
                _ => {}
            }
        }
        // 3. an allocation that ran out or expired runs no replica
        let alloc = s
            .ask(
                system(),
                Action::GetAlloc(gigafab_api::AllocationId(e.alloc_id)),
            )
            .await
            .ok()
            .and_then(|(_, r)| r.allocation().ok());
        if let Some(a) = alloc.filter(|a| a.state == "exhausted" || a.state == "expired") {
            let list = e.replicas();
            let before = e.scale.lock().map(|x| x.replicas).unwrap_or(0);
            if let Ok(mut sc) = e.scale.lock() {
                sc.replicas = 0;
                sc.below_since = None;
            }
            if !list.is_empty() || before > 0 {
                event(
                    s,
                    e,
                    "scale",
                    before,
                    0,
                    &format!("allocation_{}", a.state),
                    format!("allocation {} is {}", a.id, a.state),
                )
                .await;
            }
            for r in list {
                r.set_state(RState::Draining);
                cancel_replica(s, e, r.job).await;
            }
            return Ok(());
        }
        // 4. the autoscaler
        let held = e
            .replicas()
            .iter()
            .filter(|r| r.state() != RState::Draining)
            .count() as u32;
        // with what the standalone gateways report
        let remote = s.gateway_reports.load(e.id, now.0);
        let last = e
            .last_request_ms
            .load(Ordering::Relaxed)
            .max(remote.last_request_ms);
        let now_s = now.0 as f64 / 1000.0;
        let d = {
            let mut sc = e.scale.lock().map_err(|_| ApiError::unavailable("lock"))?;
            sc.in_flight = e
                .in_flight
                .load(Ordering::Relaxed)
                .saturating_add(remote.in_flight);
            sc.queued = e
                .queued
                .load(Ordering::Relaxed)
                .saturating_add(remote.queued);
            sc.last_request_s = (last > 0).then_some(last as f64 / 1000.0);
            let d = serving::decide(&sc, &set.scaling, now_s);
            let before = sc.replicas;
            *sc = d.apply(&sc);
            (before, d)
        };
        let (before, d) = d;
        if d.replicas != before {
            event(
                s,
                e,
                "scale",
                before,
                d.replicas,
                d.reason.code(),
                format!(
                    "{} in flight, {} waiting",
                    e.in_flight
                        .load(Ordering::Relaxed)
                        .saturating_add(remote.in_flight),
                    e.queued
                        .load(Ordering::Relaxed)
                        .saturating_add(remote.queued)
                ),
            )
            .await;
        }
        // 5. the replicas to match
        let want = d.replicas;
        if held < want {
            if let Some((at, _)) = self.failed_submit.get(&e.id)
                && now.0 - at < RETRY_SUBMIT_MS
            {
                return Ok(());
            }
            if self
                .restarts
                .get(&e.id)
                .is_some_and(|(_, until)| now.0 < *until)
            {
                return Ok(());
            }
            // the minimum is made of kept replicas, whatever went before
            let kept_now = e
                .replicas()
                .iter()
                .filter(|r| r.kept && r.state() != RState::Draining)
                .count() as u32;
            for i in 0..want - held {
                let kept = kept_now + i < set.scaling.min_replicas;
                match submit_replica(s, e, kept).await {
                    Ok(r) => {
                        if e.deleted.load(Ordering::Acquire) {
                            // deleted meanwhile: not left running
                            cancel_replica(s, e, r.job).await;
                            break;
                        }
                        if let Ok(mut list) = e.replicas.write() {
                            list.push(r);
                        }
                        self.failed_submit.remove(&e.id);
                    }
                    Err(err) => {
                        let first = self
                            .failed_submit
                            .get(&e.id)
                            .is_none_or(|(_, m)| *m != err.message);
                        if first {
                            event(
                                s,
                                e,
                                "replica_refused",
                                held,
                                want,
                                err.code,
                                err.message.clone(),
                            )
                            .await;
                        }
                        self.failed_submit.insert(e.id, (now.0, err.message));
                        break;
                    }
                }
            }
        } else if held > want {
            // the cheapest to give back first: queued, starting, then the
            // least busy ready ones, the newest first
            let mut order: Vec<Arc<Replica>> = e
                .replicas()
                .into_iter()
                .filter(|r| r.state() != RState::Draining)
                .collect();
            order.sort_by_key(|r| {
                let stage = match r.state() {
                    RState::Queued => 0,
                    RState::Starting => 1,
                    _ => 2,
                };
                (
                    stage,
                    r.in_flight.load(Ordering::Relaxed),
                    std::cmp::Reverse(r.job),
                )
            });
            for r in order.into_iter().take((held - want) as usize) {
                if r.state() == RState::Ready
                    && r.in_flight
                        .load(Ordering::Acquire)
                        .saturating_add(s.gateway_reports.on_replica(r.job, now.0))
                        > 0
                {
                    r.set_state(RState::Draining);
                } else {
                    r.set_state(RState::Draining);
                    cancel_replica(s, e, r.job).await;
                }
            }
        }
        if d.reason == ScaleReason::ColdStart {
            // requests wait: look again soon
            s.serving.wake.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::restart_backoff_ms;

    #[test]
    fn crash_loops_back_off_to_five_minutes() {
        assert_eq!(restart_backoff_ms(1), 5_000);
        assert_eq!(restart_backoff_ms(2), 10_000);
        assert_eq!(restart_backoff_ms(4), 40_000);
        assert_eq!(restart_backoff_ms(7), 300_000);
        assert_eq!(restart_backoff_ms(1_000), 300_000);
    }
}
