//! Interactive sessions (docs/sessions.md): an app ([`apps`]) run as a job
//! of its user on the accelerators asked for, reached by the browser
//! through the server's own proxy at `/sessions/{id}/` ([`proxy`]) with
//! the portal's sign-in, ended when idle or at its time limit, extended
//! within policy, charged like any job.
//!
//! A session's app listens on a port the server picks, inside the job's
//! own network where jobs have one (reached through the job's supervisor,
//! as a model endpoint's replica), and answers only requests that carry
//! the session's secret, which the proxy adds and the browser never sees.

pub mod apps;
pub mod proxy;
pub mod registry;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

use crate::auth::{Principal, Role};
use crate::ctl::Action;
use crate::error::ApiError;
use crate::state::Shared;
use crate::store::sessions::{self as st, SessionRow};
use crate::time::Ms;
pub use apps::AppDef;
pub use registry::{Live, SessionConfig, Sessions, base};

/// A session's time limit unless it asks for another, seconds.
pub const DEFAULT_LIMIT_S: i64 = 2 * 3600;
/// Its idle timeout unless it asks for another, seconds.
pub const DEFAULT_IDLE_S: i64 = 3600;
/// The shortest time limit and idle timeout, seconds.
pub const MIN_S: i64 = 60;
/// The shortest idle timeout, seconds.
pub const MIN_IDLE_S: i64 = 10;
/// Most accelerators of one session.
pub const MAX_GPUS: i64 = 64;
/// Sessions of one user not yet ended, at most.
pub const MAX_OPEN_PER_USER: usize = 8;
/// How often the sessions are looked at (ready, idle, ended).
const TICK: std::time::Duration = std::time::Duration::from_secs(2);
/// How often an app's idleness is asked.
const IDLE_EVERY_MS: i64 = 15_000;
/// How long a session's app may take to answer its readiness check once
/// its job runs, seconds; past it the session is ended.
const STARTUP_S: i64 = 600;

/// The server's own principal (its cull stops a session's job).
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

/// Loads the sessions not yet ended (at start).
pub async fn load(s: &Shared) -> Result<(), sqlx::Error> {
    let pool = &s.store.pool;
    s.sessions
        .last_id
        .store(st::max_id(pool).await?, Ordering::Release);
    for row in st::live(pool).await? {
        let (id, app, job) = (row.id, row.app.clone(), row.job_id);
        if s.sessions.hold(row).is_none() {
            tracing::warn!("session {id}: its app `{app}` is gone; ending it and its job");
            let _ = s
                .ask(system(), Action::Cancel(gigafab_api::JobId(job)))
                .await;
            let _ = s
                .store
                .write(vec![st::end(
                    id,
                    s.clock.now(),
                    "its app is no longer defined",
                )])
                .await;
        }
    }
    Ok(())
}

/// The apps, as the API lists them.
pub fn apps(s: &Shared) -> Vec<gigafab_api::App> {
    s.sessions
        .cfg
        .apps
        .iter()
        .filter(|a| s.sessions.cfg.private_network || !a.private_network)
        .map(|a| gigafab_api::App {
            name: a.name.clone(),
            title: a.title.clone(),
            description: a.description.clone(),
            idle_check: a.idle_check().into(),
        })
        .collect()
}

fn not_found(id: i64) -> ApiError {
    ApiError::not_found("session_not_found", format!("session {id} not found"))
}

/// A free port on this machine's loopback.
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts a session: its job is submitted as the caller's.
pub async fn start(
    s: &Shared,
    who: &Principal,
    req: gigafab_api::StartSession,
) -> Result<gigafab_api::Session, ApiError> {
    if let Some(why) = &s.sessions.cfg.unavailable {
        return Err(ApiError::conflict("sessions_unavailable", why.clone()));
    }
    // who may start one is who may submit its job (an operator may not)
    let Some(app) = s.sessions.app(&req.app).cloned() else {
        let names: Vec<&str> = s
            .sessions
            .cfg
            .apps
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        return Err(ApiError::invalid(format!(
            "app: no app `{}` (the server's: {})",
            req.app.chars().take(40).collect::<String>(),
            names.join(", ")
        )));
    };
    if app.private_network && !s.sessions.cfg.private_network {
        return Err(ApiError::invalid(format!(
            "app: `{}` runs only where jobs have networks of their own (`--job-network private`)",
            app.name
        )));
    }
    let max = s.sessions.cfg.max_s;
    let limit = req.time_limit_s.unwrap_or(DEFAULT_LIMIT_S.min(max));
    if !(MIN_S..=max).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "time_limit_s: within {MIN_S}..={max} (the server's --session-max-hours)"
        )));
    }
    let idle = req.idle_timeout_s.unwrap_or(DEFAULT_IDLE_S);
    if !(MIN_IDLE_S..=max).contains(&idle) {
        return Err(ApiError::invalid(format!(
            "idle_timeout_s: within {MIN_IDLE_S}..={max}"
        )));
    }
    let gpus = req.gpus.unwrap_or(1);
    if !(1..=MAX_GPUS).contains(&gpus) {
        return Err(ApiError::invalid(format!("gpus: within 1..={MAX_GPUS}")));
    }
    // one start at a time: the count below holds until the session does
    let _one = s.sessions.starting.lock().await;
    let open = s
        .sessions
        .all()
        .iter()
        .filter(|l| l.row.user_id == who.user_id)
        .count();
    if open >= MAX_OPEN_PER_USER {
        return Err(ApiError::conflict(
            "too_many_sessions",
            format!("{open} sessions of yours are open; stop one first (gigafab session stop ID)"),
        ));
    }
    let id = s.sessions.last_id.fetch_add(1, Ordering::AcqRel) + 1;
    let port = free_port().map_err(|e| ApiError::unavailable(format!("no free port: {e}")))?;
    let token = crate::auth::new_token();
    let b = base(id);
    let command: Vec<String> = app
        .command
        .iter()
        .map(|a| AppDef::fill(a, port, &b, ""))
        .collect();
    let env: std::collections::BTreeMap<String, String> = app
        .env
        .iter()
        .map(|(k, v)| (k.clone(), AppDef::fill(v, port, &b, &token)))
        .collect();
    let mut job = gigafab_api::SubmitJob::new(0, gpus, command);
    job.allocation = req.allocation;
    job.project = req.project;
    job.types = req.types;
    job.gpu_share = req.gpu_share;
    job.gpu_profile = req.gpu_profile;
    job.time_limit_s = Some(limit);
    job.name = Some(format!("session-{id}-{}", app.name));
    job.env = Some(env);
    let mut valid = crate::submission::validate(who, job, &s.factory)?;
    // set by gigafab, after the check that keeps tenants from them
    valid.env.insert("PORT".into(), port.to_string());
    valid.env.insert("GIGAFAB_SESSION".into(), id.to_string());
    valid.env.insert("GIGAFAB_SESSION_URL".into(), b.clone());
    let action = s.submission_with(valid, Vec::new());
    let (_, reply) = s.ask(who.clone(), action).await?;
    let j = reply.job()?;
    let row = SessionRow {
        id,
        job_id: j.id.0,
        user_id: who.user_id,
        // the job's organisation (an admin's session runs in the
        // allocation's)
        org_id: s
            .tenancy
            .org_named(&j.org)
            .map_or(who.org_id.unwrap_or_default(), |o| o.id),
        app: app.name.clone(),
        port: i64::from(port),
        token,
        idle_timeout_s: idle,
        created_ms: s.clock.now(),
        last_activity_ms: None,
        ended_ms: None,
        ended_reason: None,
    };
    if let Err(e) = s.store.write(vec![st::insert(&row)]).await {
        // no session to reach it: its job must not run unseen
        let _ = s.ask(system(), Action::Cancel(j.id)).await;
        return Err(e.into());
    }
    let l = s
        .sessions
        .hold(row)
        .ok_or_else(|| ApiError::unavailable("the app is gone"))?;
    view(s, &l.row, Some(&l)).await
}

/// The sessions of the caller, newest first (the last 100).
pub async fn list(s: &Shared, who: &Principal) -> Result<Vec<gigafab_api::Session>, ApiError> {
    let rows = st::of_user(&s.store.pool, who.user_id, 100).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let l = s.sessions.live(r.id);
        out.push(view(s, &r, l.as_ref()).await?);
    }
    Ok(out)
}

/// Session `id` of the caller (a session is its user's alone: anyone
/// else is told it does not exist).
pub async fn own(s: &Shared, who: &Principal, id: i64) -> Result<SessionRow, ApiError> {
    match st::get(&s.store.pool, id).await? {
        Some(r) if r.user_id == who.user_id => Ok(r),
        _ => Err(not_found(id)),
    }
}

pub async fn get(s: &Shared, who: &Principal, id: i64) -> Result<gigafab_api::Session, ApiError> {
    let r = own(s, who, id).await?;
    let l = s.sessions.live(id);
    view(s, &r, l.as_ref()).await
}

/// Stops session `id` (its job is cancelled).
pub async fn stop(s: &Shared, who: &Principal, id: i64) -> Result<gigafab_api::Session, ApiError> {
    let r = own(s, who, id).await?;
    if r.ended_ms.is_none() {
        match s
            .ask(who.clone(), Action::Cancel(gigafab_api::JobId(r.job_id)))
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
        end(s, id, &format!("stopped by {}", who.name)).await?;
    }
    get(s, who, id).await
}

/// Records that session `id` ended, for `reason`.
async fn end(s: &Shared, id: i64, reason: &str) -> Result<(), ApiError> {
    s.store
        .write(vec![st::end(id, s.clock.now(), reason)])
        .await?;
    s.sessions.forget(id);
    Ok(())
}

/// The longest time limit, in all, a session started at `started` may
/// reach: the server's longest session and its allocation's end.
fn longest_s(s: &Shared, started: Ms, a: &gigafab_api::Allocation) -> i64 {
    let by_end = match crate::time::parse_rfc3339(&a.valid_until) {
        Ok(until) => (until - started.0) / 1000,
        Err(_) => i64::MAX,
    };
    s.sessions.cfg.max_s.min(by_end)
}

/// About how much longer a session (limit `limit_s`, `gpus`, started at
/// `started`, `now`) may be extended by: the longest session, the
/// allocation's end, what is left of its grant beyond what this session
/// holds already (other running jobs' limits are the controller's to
/// count at the extension itself).
fn extendable(
    s: &Shared,
    (limit_s, gpus): (i64, i64),
    started: Ms,
    now: Ms,
    a: &gigafab_api::Allocation,
) -> i64 {
    let by_time = longest_s(s, started, a) - limit_s;
    let held_s = (limit_s - (now.0 - started.0) / 1000).max(0);
    let by_grant = if gpus > 0 {
        let left_h = (a.granted_gpu_hours - a.used_gpu_hours).max(0.0);
        (left_h * 3600.0 / gpus as f64) as i64 - held_s
    } else {
        i64::MAX
    };
    by_time.min(by_grant).max(0)
}

/// Extends session `id` by `by_s` seconds, within policy: the server's
/// longest session and the allocation's end (checked here), its grant
/// (by the controller, which counts every running job's limit).
pub async fn extend(
    s: &Shared,
    who: &Principal,
    id: i64,
    req: gigafab_api::ExtendSession,
) -> Result<gigafab_api::Session, ApiError> {
    let r = own(s, who, id).await?;
    if r.ended_ms.is_some() {
        return Err(ApiError::conflict(
            "session_ended",
            format!("session {id} has ended"),
        ));
    }
    if req.by_s < MIN_S {
        return Err(ApiError::invalid(format!("by_s: at least {MIN_S}")));
    }
    let job = crate::store::jobs::get(&s.store.pool, r.job_id)
        .await?
        .ok_or_else(|| not_found(id))?;
    let Some(started) = job.started_ms else {
        return Err(ApiError::conflict(
            "extension_refused",
            format!("session {id} has not started: nothing to extend yet"),
        ));
    };
    let (_, a) = s
        .ask(
            who.clone(),
            Action::GetAlloc(gigafab_api::AllocationId(job.alloc_id)),
        )
        .await?;
    let a = a.allocation()?;
    let longest = longest_s(s, started, &a);
    let (_, reply) = s
        .ask(
            who.clone(),
            Action::ExtendJob(gigafab_api::JobId(r.job_id), req.by_s, longest),
        )
        .await
        .map_err(|e| {
            if e.code == "extension_refused" {
                ApiError::conflict(
                    "extension_refused",
                    format!(
                        "session {id}: {} (the server's longest session is {} h; allocation {} ends {})",
                        e.message,
                        s.sessions.cfg.max_s / 3600,
                        a.id,
                        a.valid_until
                    ),
                )
            } else {
                e
            }
        })?;
    let j = reply.job()?;
    // the controller holds the new limit; the store has it at its next
    // commit
    let mut v = get(s, who, id).await?;
    let added = j.time_limit_s - v.time_limit_s;
    v.time_limit_s = j.time_limit_s;
    v.extendable_s = (v.extendable_s - added).max(0);
    v.ends_at = Some(Ms(started.0 + j.time_limit_s * 1000).rfc3339());
    Ok(v)
}

/// Session `r` as the API shows it.
pub async fn view(
    s: &Shared,
    r: &SessionRow,
    live: Option<&Arc<Live>>,
) -> Result<gigafab_api::Session, ApiError> {
    use gigafab_api::SessionState as S;
    let job = crate::store::jobs::get(&s.store.pool, r.job_id).await?;
    let (limit, gpus, started, state_s, reason) = match &job {
        Some(j) => (
            j.time_limit_s,
            j.gpus,
            j.started_ms,
            j.state.as_str(),
            j.reason.clone(),
        ),
        None => (0, 0, None, "cancelled", None),
    };
    let state = if r.ended_ms.is_some() {
        S::Ended
    } else {
        match (state_s, live) {
            ("queued", _) => S::Queued,
            ("running", Some(l)) if l.ready.load(Ordering::Acquire) => S::Ready,
            ("running", _) => S::Starting,
            _ => S::Ended,
        }
    };
    let extendable_s = if state == S::Ended {
        0
    } else if let Some(j) = &job {
        match s
            .ask(
                system(),
                Action::GetAlloc(gigafab_api::AllocationId(j.alloc_id)),
            )
            .await
            .and_then(|(_, a)| a.allocation())
        {
            Ok(a) => {
                let now = s.clock.now();
                extendable(s, (limit, gpus), started.unwrap_or(now), now, &a)
            }
            Err(_) => 0,
        }
    } else {
        0
    };
    let last = live
        .map(|l| Ms(l.last_activity_ms.load(Ordering::Acquire)))
        .or(r.last_activity_ms);
    Ok(gigafab_api::Session {
        id: gigafab_api::SessionId(r.id),
        app: r.app.clone(),
        job: gigafab_api::JobId(r.job_id),
        user: s.tenancy.login(r.user_id).unwrap_or_default(),
        state,
        url: base(r.id),
        gpus,
        time_limit_s: limit,
        ends_at: started.map(|st| Ms(st.0 + limit * 1000).rfc3339()),
        idle_timeout_s: r.idle_timeout_s,
        last_activity: last.map(|m| m.rfc3339()),
        extendable_s,
        created: r.created_ms.rfc3339(),
        reason: r.ended_reason.clone().or(reason),
    })
}

/// Looks at the sessions every [`TICK`] until `stop`: where a started
/// job's app is reached, whether it answers yet, whether it has been idle
/// too long (then its job is stopped), whether its job ended.
pub fn spawn(s: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tick(&s).await;
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { break },
            }
        }
    });
}

async fn tick(s: &Arc<Shared>) {
    // each session looked at on its own: an app that never answers costs
    // its own checks' time, not the others'
    let mut looks = tokio::task::JoinSet::new();
    for l in s.sessions.all() {
        let s = s.clone();
        looks.spawn(async move {
            if let Err(e) = look(&s, &l).await {
                tracing::warn!("session {}: {e}", l.row.id);
            }
        });
    }
    while looks.join_next().await.is_some() {}
}

/// Stops session `l`'s job and ends the session for `why`.
async fn cull(s: &Shared, l: &Live, why: &str) -> Result<(), ApiError> {
    tracing::info!("session {}: {why}", l.row.id);
    match s
        .ask(system(), Action::Cancel(gigafab_api::JobId(l.row.job_id)))
        .await
    {
        Ok(_) => {}
        Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
        Err(e) => return Err(e),
    }
    end(s, l.row.id, why).await
}

async fn look(s: &Shared, l: &Arc<Live>) -> Result<(), ApiError> {
    let now = s.clock.now();
    let Some(job) = crate::store::jobs::get(&s.store.pool, l.row.job_id).await? else {
        return end(s, l.row.id, "its job is gone").await;
    };
    match job.state.as_str() {
        "queued" => {
            // preempted or requeued: reached anew once it runs again
            l.unplace();
            return Ok(());
        }
        "running" => {}
        state => {
            let why = job.reason.clone().unwrap_or_default();
            return end(s, l.row.id, format!("its job ended ({state}) {why}").trim()).await;
        }
    }
    let Some(handle) = job.handle.as_deref() else {
        return Ok(());
    };
    let placed = l
        .reach
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .filter(|(h, _)| h == handle)
        .map(|(_, r)| r.clone());
    let reach = match placed {
        Some(r) => r,
        None => {
            l.unplace();
            let r = s
                .executor
                .reach(job.id, handle, l.row.port as u16)
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            *l.reach.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((handle.to_string(), r.clone()));
            r
        }
    };
    let started = job.started_ms.unwrap_or(now);
    if !l.ready.load(Ordering::Acquire) {
        let path = AppDef::fill(&l.app.ready, l.row.port as u16, &l.base(), &l.row.token);
        if let Ok((status, _)) = proxy::get(l, &reach, &path).await
            && status.is_success()
        {
            l.ready.store(true, Ordering::Release);
            // idle from its run's start at the earliest, not from its
            // submission (a restart keeps what was seen)
            l.last_activity_ms.fetch_max(started.0, Ordering::AcqRel);
            l.last_traffic_ms.fetch_max(started.0, Ordering::AcqRel);
        } else if now.0 - started.0 > STARTUP_S * 1000 {
            let why = format!("its app did not answer its readiness check within {STARTUP_S} s");
            return cull(s, l, &why).await;
        }
        return Ok(());
    }
    let every = IDLE_EVERY_MS.min(l.row.idle_timeout_s * 1000 / 4);
    if now.0 - l.idle_asked_ms.load(Ordering::Acquire) < every {
        return Ok(());
    }
    l.idle_asked_ms.store(now.0, Ordering::Release);
    let seen = match &l.app.idle {
        apps::IdleCheck::App { path, field } => {
            let path = AppDef::fill(path, l.row.port as u16, &l.base(), &l.row.token);
            match proxy::get(l, &reach, &path).await {
                Ok((st, body)) if st.is_success() => {
                    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
                        .ok()
                        .and_then(|m| m.get(field).and_then(|v| v.as_str()).map(str::to_string))
                        .and_then(|t| crate::time::parse_rfc3339(&t).ok())
                }
                _ => None,
            }
            // an app that does not say: its traffic
            .unwrap_or_else(|| l.last_traffic_ms.load(Ordering::Acquire))
        }
        apps::IdleCheck::Traffic => l.last_traffic_ms.load(Ordering::Acquire),
    };
    // an app's word is never later than now
    let seen = seen.min(now.0);
    let before = l.last_activity_ms.fetch_max(seen, Ordering::AcqRel);
    let last = before.max(seen);
    if seen > before {
        s.store.write(vec![st::touch(l.row.id, Ms(last))]).await?;
    }
    let idle_s = (now.0 - last) / 1000;
    if idle_s >= l.row.idle_timeout_s {
        let why = format!(
            "culled: idle for {idle_s} s (idle timeout {} s)",
            l.row.idle_timeout_s
        );
        cull(s, l, &why).await?;
    }
    Ok(())
}
