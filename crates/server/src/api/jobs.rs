//! Jobs: submission and cancellation (commands to the controller), and
//! the reads that go straight to the store (lists, one job, logs).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{
    Answer, ApiResult, AppState, Body_, Caller, Route, page, page_limit, parse_id, query_err, reply,
};
use crate::auth::Principal;
use crate::ctl::{Action, Made, Reply};
use crate::error::ApiError;
use crate::model::{JobEvent, JobRow, TERMINAL};
use crate::state::Shared;
use crate::store;
use crate::store::idempotency::Kind;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/api/v1/jobs",
        who: "admin, owner, member",
        summary: "Submit a job {allocation, gpus, command, ...}",
        operation_id: "submit_job",
        body: Some("SubmitJob"),
        status: 201,
        answer: Answer::Json("Job"),
        replay: true,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/jobs",
        who: "any token",
        summary: "List jobs (?state, allocation, org, user, limit, after)",
        operation_id: "list_jobs",
        body: None,
        status: 200,
        answer: Answer::Json("JobPage"),
        replay: false,
        query: Some(gigafab_api::query_params::<gigafab_api::ListJobs>),
    },
    Route {
        method: "get",
        path: "/api/v1/jobs/{id}",
        who: "any token",
        summary: "One job with its events",
        operation_id: "get_job",
        body: None,
        status: 200,
        answer: Answer::Json("Job"),
        replay: false,
        query: None,
    },
    Route {
        method: "delete",
        path: "/api/v1/jobs/{id}",
        who: "admin, operator, owner, the job's user",
        summary: "Cancel a job",
        operation_id: "cancel_job",
        body: None,
        status: 200,
        answer: Answer::Json("Job"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/jobs/{id}/logs",
        who: "any token",
        summary: "A job's output (?stream=stdout|stderr, offset, follow)",
        operation_id: "job_logs",
        body: None,
        status: 200,
        answer: Answer::Text("text/plain"),
        replay: false,
        query: Some(gigafab_api::query_params::<gigafab_api::LogsQuery>),
    },
    Route {
        method: "get",
        path: "/api/v1/jobs/{id}/estimate",
        who: "any token",
        summary: "A queued job's estimated start: the scheduler run forward from now",
        operation_id: "job_estimate",
        body: None,
        status: 200,
        answer: Answer::Json("JobEstimate"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", axum::routing::post(submit).get(list_jobs))
        .route("/api/v1/jobs/{id}", get(get_job).delete(cancel_job))
        .route("/api/v1/jobs/{id}/logs", get(job_logs))
        .route("/api/v1/jobs/{id}/estimate", get(estimate))
}

/// Submits a job. With an `Idempotency-Key`, a retry (the answer to the
/// first try was lost) gets the job the first try made (200, header
/// `Idempotent-Replayed: true`) instead of a second one, for 24 hours.
async fn submit(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: axum::http::HeaderMap,
    Body_(b): Body_<crate::model::SubmitReq>,
) -> ApiResult {
    let key = super::idempotency_key(&headers)?;
    if let Some(id) = super::replayed(&s, &p, key.as_deref(), Kind::Job).await? {
        let job = visible_job(&s, &p, id).await?;
        return Ok(super::replay(Json(job.view(s.clock.now())).into_response()));
    }
    // its own fields first, here: the controller's loop checks only what
    // it alone knows
    let mut valid = crate::submission::validate(&p, b, &s.factory)?;
    // the jobs it waits for: the caller's to see, each with its state now
    valid
        .resolve_after(|id| {
            let (s, p) = (&s, &p);
            async move {
                visible_job(s, p, id).await.map(|j| j.state).map_err(|_| {
                    ApiError::not_found("job_not_found", format!("dependency: job {id} not found"))
                })
            }
        })
        .await?;
    let req = valid.request();
    // a working directory the job's account cannot enter: refused now,
    // not failed at its start (engines on other machines cannot tell)
    if let (Some(dir), Some(org)) = (req.workdir.clone(), p.org_id) {
        let account = s.tenancy.account_of(p.user_id, org);
        let exec = s.executor.clone();
        let shown = account.clone();
        let checked = tokio::task::spawn_blocking(move || {
            exec.check_workdir(account.as_deref(), std::path::Path::new(&dir))
                .map_err(|e| format!("workdir: {dir}: {e}"))
        })
        .await
        .map_err(|e| ApiError::unavailable(format!("the working directory's check failed: {e}")))?;
        if let Err(m) = checked {
            let hint = match shown {
                Some(a) => format!(
                    "; jobs of yours run as `{a}`: submit from a directory it can reach, or give --chdir"
                ),
                None => "; submit from a directory that exists, or give --chdir".into(),
            };
            return Err(ApiError::invalid(format!("{m}{hint}")));
        }
    }
    let inputs =
        crate::catalog::resolve_inputs(&s, &p, req.inputs.as_deref().unwrap_or(&[])).await?;
    if let Some(m) = &req.output_model {
        crate::catalog::check_output(&s, &p, m).await?;
    }
    let action = super::keyed(s.submission_with(valid, inputs), key);
    Ok(reply(s.ask(p, action).await?))
}

/// A job visible to the caller (404 for another organisation's).
async fn visible_job(s: &Shared, p: &Principal, id: i64) -> Result<JobRow, ApiError> {
    let job = match store::jobs::get(&s.store.pool, id).await? {
        Some(j) => j,
        None => {
            return Err(ApiError::not_found(
                "job_not_found",
                format!("job {id} not found"),
            ));
        }
    };
    if !p.sees_org(job.org_id) {
        return Err(ApiError::not_found(
            "job_not_found",
            format!("job {id} not found"),
        ));
    }
    Ok(job)
}

async fn get_job(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    let job = visible_job(&s, &p, id).await?;
    let events = store::jobs::events(&s.store.pool, id).await?;
    let mut v = job.view(s.clock.now());
    v.events = Some(events.iter().map(JobEvent::view).collect());
    if v.output_model.is_some() && s.catalog.is_some() {
        v.output = crate::catalog::output_of(&s, id).await?.map(|o| o.2);
    }
    Ok(Json(v).into_response())
}

async fn estimate(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    match ask_active(&s, &p, id, Action::Estimate(gigafab_api::JobId(id))).await? {
        Ok(r) => Ok(reply(r)),
        Err(job) => Ok(Json(gigafab_api::JobEstimate {
            job: gigafab_api::JobId(id),
            state: job.state,
            estimated_start: None,
            basis: "the job is not queued".into(),
        })
        .into_response()),
    }
}

/// Asks the controller about job `id`; a job it no longer holds (ended)
/// is read from the store instead (`Err`), or not found.
async fn ask_active(
    s: &Shared,
    p: &Principal,
    id: i64,
    action: Action,
) -> Result<Result<(Made, Reply), JobRow>, ApiError> {
    match s.ask(p.clone(), action).await? {
        (_, Reply::NotHeld) => Ok(Err(visible_job(s, p, id).await?)),
        r => Ok(Ok(r)),
    }
}

async fn cancel_job(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    match ask_active(&s, &p, id, Action::Cancel(gigafab_api::JobId(id))).await? {
        Ok(r) => Ok(reply(r)),
        // not active: ended (409)
        Err(job) => Err(ApiError::conflict(
            "job_finished",
            format!("job {id} has already ended ({})", job.state),
        )),
    }
}

use gigafab_api::ListJobs as JobsQuery;

async fn list_jobs(
    State(s): State<AppState>,
    Caller(p): Caller,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_err)?;
    let limit = page_limit(q.limit)?;
    if let Some(st) = &q.state
        && !(st == "queued" || st == "running" || TERMINAL.contains(&st.as_str()))
    {
        return Err(ApiError::invalid(format!(
            "state: `{st}` is not queued, running, completed, failed, timeout or cancelled"
        )));
    }
    let filter = store::jobs::JobFilter {
        org_id: (!p.global()).then(|| p.org_id.unwrap_or(-1)),
        state: q.state.clone(),
        allocation: q.allocation,
        org: q.org.clone(),
        user: q.user.clone(),
        before_id: q.after,
    };
    let rows = store::jobs::list(&s.store.pool, &filter, limit).await?;
    let now = s.clock.now();
    let mut items = Vec::with_capacity(rows.len());
    let mut last = None;
    for r in rows {
        match r {
            Ok(j) => {
                last = Some(j.id);
                items.push(gigafab_api::JobItem::Job(Box::new(j.view(now))));
            }
            Err((id, e)) => {
                // one damaged row must not hide everyone's jobs: it is
                // listed as unreadable, and logged
                tracing::error!("job {id:?}: unreadable row in the store: {e}");
                if let Some(id) = id {
                    last = Some(id);
                }
                items.push(gigafab_api::JobItem::Unreadable(
                    gigafab_api::UnreadableJob {
                        id: id.map(gigafab_api::JobId),
                        state: "unreadable".into(),
                        error: "store_damaged".into(),
                        message: format!("this job's row in the store cannot be read: {e}"),
                    },
                ));
            }
        }
    }
    Ok(page(items, last, limit))
}

use gigafab_api::LogsQuery;

async fn job_logs(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    q: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_err)?;
    let id = parse_id(&id, "job_not_found")?;
    let job = visible_job(&s, &p, id).await?;
    let (out, err) = s.executor.log_paths(id);
    let path = match q.stream.as_deref() {
        None | Some("stdout") => out,
        Some("stderr") => err,
        Some(x) => {
            return Err(ApiError::invalid(format!(
                "stream: `{x}` is not stdout or stderr"
            )));
        }
    };
    let follow = q.follow.unwrap_or(false);
    let offset = q.offset.unwrap_or(0);
    let ended = TERMINAL.contains(&job.state.as_str());
    let st = LogState {
        shared: s.clone(),
        id,
        path,
        offset,
        file: None,
        follow: follow && !ended,
        done: false,
        idle_checks: 0,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        let chunk = st.next_chunk().await;
        chunk.map(|c| (Ok::<Bytes, std::io::Error>(c), st))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct LogState {
    shared: Arc<Shared>,
    id: i64,
    path: std::path::PathBuf,
    offset: u64,
    file: Option<tokio::fs::File>,
    follow: bool,
    done: bool,
    idle_checks: u32,
}

impl LogState {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if self.done {
                return None;
            }
            if self.file.is_none() {
                match tokio::fs::File::open(&self.path).await {
                    Ok(mut f) => {
                        if f.seek(std::io::SeekFrom::Start(self.offset)).await.is_err() {
                            return None;
                        }
                        self.file = Some(f);
                    }
                    Err(_) if self.follow => {}
                    Err(_) => return None,
                }
            }
            if let Some(f) = self.file.as_mut() {
                match f.read(&mut buf).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.offset += n as u64;
                        buf.truncate(n);
                        return Some(Bytes::from(buf));
                    }
                    Err(_) => return None,
                }
            }
            // at the end of what is written
            if !self.follow {
                return None;
            }
            self.idle_checks += 1;
            if self.idle_checks.is_multiple_of(2) && self.job_ended().await {
                // drain what the job wrote last, then stop
                self.follow = false;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn job_ended(&self) -> bool {
        match store::jobs::state(&self.shared.store.pool, self.id).await {
            Ok(Some(s)) => TERMINAL.contains(&s.as_str()),
            _ => true,
        }
    }
}
