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
        let (id, app) = (row.id, row.app.clone());
        if s.sessions.hold(row).is_none() {
            tracing::warn!("session {id}: its app `{app}` is gone; ending it");
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
    if !who.role.in_org() {
        return Err(ApiError::forbidden(
            "sessions are an organisation's members' (an admin signs in as one)",
        ));
    }
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
        org_id: who.org_id.unwrap_or_default(),
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

/// How much longer session `r` (running `gpus` accelerators under a time
/// limit of `limit_s`) may be extended by: the server's longest session,
/// the allocation's end and what is left of its grant.
fn extendable(
    s: &Shared,
    limit_s: i64,
    gpus: i64,
    started: Option<Ms>,
    a: &gigafab_api::Allocation,
) -> i64 {
    let by_policy = s.sessions.cfg.max_s - limit_s;
    let by_grant = if gpus > 0 {
        let left_h = (a.granted_gpu_hours - a.used_gpu_hours).max(0.0);
        (left_h * 3600.0 / gpus as f64) as i64
    } else {
        i64::MAX
    };
    let by_end = match (started, crate::time::parse_rfc3339(&a.valid_until)) {
        (Some(st), Ok(until)) => (until - st.0) / 1000 - limit_s,
        _ => i64::MAX,
    };
    by_policy.min(by_grant).min(by_end).max(0)
}

/// Extends session `id` by `by_s` seconds, within policy.
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
    let (_, a) = s
        .ask(
            who.clone(),
            Action::GetAlloc(gigafab_api::AllocationId(job.alloc_id)),
        )
        .await?;
    let a = a.allocation()?;
    let room = extendable(
        s,
        job.time_limit_s,
        job.gpus,
        job.started_ms.or(Some(s.clock.now())),
        &a,
    );
    if req.by_s > room {
        return Err(ApiError::conflict(
            "extension_refused",
            format!(
                "session {id} may be extended by {room} s at most (the server's longest session is {} h; allocation {} ends {} with {:.2} GPU-hours left)",
                s.sessions.cfg.max_s / 3600,
                a.id,
                a.valid_until,
                (a.granted_gpu_hours - a.used_gpu_hours).max(0.0)
            ),
        ));
    }
    let limit = job.time_limit_s + req.by_s;
    s.ask(
        who.clone(),
        Action::SetTimeLimit(gigafab_api::JobId(r.job_id), limit),
    )
    .await?;
    // the controller holds the new limit; the store has it at its next
    // commit
    let mut v = get(s, who, id).await?;
    let added = limit - v.time_limit_s;
    v.time_limit_s = limit;
    v.extendable_s = (v.extendable_s - added).max(0);
    if let Some(st) = job.started_ms {
        v.ends_at = Some(Ms(st.0 + limit * 1000).rfc3339());
    }
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
            Ok(a) => extendable(s, limit, gpus, started.or(Some(s.clock.now())), &a),
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

async fn tick(s: &Shared) {
    for l in s.sessions.all() {
        if let Err(e) = look(s, &l).await {
            tracing::warn!("session {}: {e}", l.row.id);
        }
    }
}

async fn look(s: &Shared, l: &Arc<Live>) -> Result<(), ApiError> {
    let now = s.clock.now();
    let Some(job) = crate::store::jobs::get(&s.store.pool, l.row.job_id).await? else {
        return end(s, l.row.id, "its job is gone").await;
    };
    match job.state.as_str() {
        "queued" => return Ok(()),
        "running" => {}
        state => {
            let why = job.reason.clone().unwrap_or_default();
            return end(s, l.row.id, format!("its job ended ({state}) {why}").trim()).await;
        }
    }
    let Some(handle) = job.handle.as_deref() else {
        return Ok(());
    };
    let reach = match l.reach() {
        Some(r) => r,
        None => {
            let r = s
                .executor
                .reach(job.id, handle, l.row.port as u16)
                .map_err(|e| ApiError::unavailable(e.to_string()))?;
            *l.reach.lock().unwrap_or_else(|e| e.into_inner()) = Some(r.clone());
            r
        }
    };
    if !l.ready.load(Ordering::Acquire) {
        let path = AppDef::fill(&l.app.ready, l.row.port as u16, &l.base(), &l.row.token);
        if let Ok((status, _)) = proxy::get(l, &reach, &path).await
            && status.is_success()
        {
            l.ready.store(true, Ordering::Release);
            // idle from here on, not from its submission
            l.last_activity_ms.fetch_max(now.0, Ordering::AcqRel);
            l.last_traffic_ms.fetch_max(now.0, Ordering::AcqRel);
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
        tracing::info!("session {}: {why}", l.row.id);
        match s
            .ask(system(), Action::Cancel(gigafab_api::JobId(job.id)))
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == axum::http::StatusCode::CONFLICT => {}
            Err(e) => return Err(e),
        }
        end(s, l.row.id, &why).await?;
    }
    Ok(())
}
