//! Jobs: the list, the submission form, one job with its log, cancelling.

use super::*;

#[derive(Template)]
#[template(path = "jobs.html")]
pub(super) struct Jobs<'a> {
    c: Chrome<'a>,
    jobs: Vec<t::Job>,
}

pub(super) async fn jobs(State(p): State<PortalState>, s: Signed) -> Response {
    let page_: t::Page<t::JobItem> = match p
        .api(&s.token, Method::GET, "/api/v1/jobs?limit=200", NO_BODY)
        .await
    {
        Ok(v) => v,
        Err(f) => return failure(&p, Some(&s), f, "/"),
    };
    let jobs = page_
        .items
        .into_iter()
        .filter_map(|i| match i {
            t::JobItem::Job(j) => Some(*j),
            t::JobItem::Unreadable(_) => None,
        })
        .collect();
    page(&Jobs {
        c: chrome(&p, Some(&s)),
        jobs,
    })
}

#[derive(Template)]
#[template(path = "job_new.html")]
pub(super) struct NewJob<'a> {
    c: Chrome<'a>,
    inputs: Vec<Input>,
    problem: Option<String>,
}

pub(super) async fn job_inputs(p: &PortalState, s: &Signed) -> Result<Vec<Input>, Failure> {
    let w = &p.words;
    let allocs: t::Page<t::Allocation> = p
        .api(&s.token, Method::GET, "/api/v1/allocations", NO_BODY)
        .await?;
    let mut alloc = input(w, "allocation", "newjob.allocation", "select");
    alloc.options = allocs
        .items
        .iter()
        .filter(|a| a.state == "active")
        .map(|a| {
            (
                a.id.0.to_string(),
                format!(
                    "#{} {} ({:.0} GPU-h left)",
                    a.id.0,
                    a.name,
                    (a.granted_gpu_hours - a.used_gpu_hours).max(0.0)
                ),
            )
        })
        .collect();
    let mut gpus = input(w, "gpus", "newjob.gpus", "number");
    gpus.value = "1".into();
    gpus.help = w.get("newjob.gpus_help").to_string();
    let mut profile = input(w, "gpu_profile", "newjob.profile", "text");
    profile.help = w.get("newjob.profile_help").to_string();
    let mut command = input(w, "command", "newjob.command", "text");
    command.help = w.get("newjob.command_help").to_string();
    let mut time = input(w, "time_limit_min", "newjob.time", "number");
    time.value = "60".into();
    Ok(vec![
        alloc,
        gpus,
        command,
        input(w, "name", "newjob.name", "text"),
        input(w, "type", "newjob.type", "text"),
        profile,
        time,
    ])
}

pub(super) async fn new_job_page(State(p): State<PortalState>, s: Signed) -> Response {
    match job_inputs(&p, &s).await {
        Ok(inputs) => page(&NewJob {
            c: chrome(&p, Some(&s)),
            inputs,
            problem: None,
        }),
        Err(f) => failure(&p, Some(&s), f, "/jobs"),
    }
}

pub(super) async fn new_job(
    State(p): State<PortalState>,
    s: Signed,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let body = (|| -> Result<t::SubmitJob, Failure> {
        let alloc = number(&form, "allocation")?;
        let gpus = number(&form, "gpus")?;
        let minutes = number(&form, "time_limit_min")?;
        let command =
            words(form.get("command").map_or("", |c| c)).map_err(|e| invalid("command", e))?;
        if command.is_empty() {
            return Err(invalid("command", "give the program to run"));
        }
        let field = |k: &str| {
            form.get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // a share below 1 is a slice of one accelerator; so is a named one
        let (count, share) = if gpus > 0.0 && gpus < 1.0 {
            (1, Some(gpus))
        } else if gpus.fract() != 0.0 {
            return Err(invalid(
                "gpus",
                "a whole number of accelerators, or a share of one below 1",
            ));
        } else {
            (gpus as i64, None)
        };
        Ok(t::SubmitJob {
            time_limit_s: Some((minutes * 60.0).round() as i64),
            name: field("name"),
            type_: field("type"),
            gpu_share: share,
            gpu_profile: field("gpu_profile"),
            ..t::SubmitJob::new(alloc as i64, count, command)
        })
    })();
    let res = match body {
        Ok(b) => {
            p.api::<t::Job, _>(&s.token, Method::POST, "/api/v1/jobs", Some(&b))
                .await
        }
        Err(f) => Err(f),
    };
    match res {
        Ok(job) => Redirect::to(&format!("/jobs/{}", job.id.0)).into_response(),
        Err(f) if f.status == StatusCode::UNPROCESSABLE_ENTITY || f.status.is_client_error() => {
            let mut inputs = match job_inputs(&p, &s).await {
                Ok(i) => i,
                Err(f) => return failure(&p, Some(&s), f, "/jobs"),
            };
            // the time limit is posted in minutes, refused in seconds
            let f = if f.field() == Some("time_limit_s") {
                Failure {
                    message: f.message.replacen("time_limit_s", "time_limit_min", 1),
                    ..f
                }
            } else {
                f
            };
            let problem = refill(&mut inputs, &form, Some(&f));
            let mut r = page(&NewJob {
                c: chrome(&p, Some(&s)),
                inputs,
                problem,
            });
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
        Err(f) => failure(&p, Some(&s), f, "/jobs"),
    }
}

#[derive(Template)]
#[template(path = "job.html")]
pub(super) struct JobPage<'a> {
    c: Chrome<'a>,
    job: t::Job,
    events: Vec<t::JobEvent>,
    ended: bool,
    estimate: Option<String>,
    stdout: String,
    stderr: String,
}

pub(super) fn job_id(raw: &str) -> Result<i64, Failure> {
    raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or(Failure {
        status: StatusCode::NOT_FOUND,
        code: "job_not_found".into(),
        message: String::new(),
    })
}

pub(super) async fn job(
    State(p): State<PortalState>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(f) => return failure(&p, Some(&s), f, "/jobs"),
    };
    let mut job: t::Job = match p
        .api(
            &s.token,
            Method::GET,
            &format!("/api/v1/jobs/{id}"),
            NO_BODY,
        )
        .await
    {
        Ok(j) => j,
        Err(f) => return failure(&p, Some(&s), f, "/jobs"),
    };
    let ended = crate::model::TERMINAL.contains(&job.state.as_str());
    let estimate = if job.state == "queued" {
        p.api::<t::JobEstimate, _>(
            &s.token,
            Method::GET,
            &format!("/api/v1/jobs/{id}/estimate"),
            NO_BODY,
        )
        .await
        .ok()
        .map(|e| match e.estimated_start {
            Some(at) => format!("{at} ({})", e.basis),
            None => e.basis,
        })
    } else {
        None
    };
    let log = |stream: &str| format!("/api/v1/jobs/{id}/logs?stream={stream}");
    let stdout = p
        .api_text(&s.token, &log("stdout"))
        .await
        .unwrap_or_default();
    let stderr = p
        .api_text(&s.token, &log("stderr"))
        .await
        .unwrap_or_default();
    page(&JobPage {
        c: chrome(&p, Some(&s)),
        events: job.events.take().unwrap_or_default(),
        estimate,
        job,
        ended,
        stdout,
        stderr,
    })
}

#[derive(Deserialize)]
pub(super) struct LogQuery {
    stream: Option<String>,
    offset: Option<u64>,
}

/// The output of a job from `offset`, for the page's script: the text,
/// with the job's state in `X-Job-State`.
pub(super) async fn job_log(
    State(p): State<PortalState>,
    s: Signed,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let Ok(id) = job_id(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let stream = match q.stream.as_deref() {
        Some("stderr") => "stderr",
        _ => "stdout",
    };
    let state = match p
        .api::<t::Job, _>(
            &s.token,
            Method::GET,
            &format!("/api/v1/jobs/{id}"),
            NO_BODY,
        )
        .await
    {
        Ok(j) => j.state,
        Err(f) => return (f.status, f.message).into_response(),
    };
    let path = format!(
        "/api/v1/jobs/{id}/logs?stream={stream}&offset={}",
        q.offset.unwrap_or(0)
    );
    match p.api_text(&s.token, &path).await {
        Ok(text) => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/plain; charset=utf-8".to_string(),
                ),
                (header::HeaderName::from_static("x-job-state"), state),
            ],
            text,
        )
            .into_response(),
        Err(f) => (f.status, f.message).into_response(),
    }
}

pub(super) async fn cancel_job(
    State(p): State<PortalState>,
    s: Signed,
    Path(id): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !form_ok(&s, &f.csrf) {
        return csrf_refused(&p, &s);
    }
    let id = match job_id(&id) {
        Ok(id) => id,
        Err(f) => return failure(&p, Some(&s), f, "/jobs"),
    };
    match p
        .api::<t::Job, _>(
            &s.token,
            Method::DELETE,
            &format!("/api/v1/jobs/{id}"),
            NO_BODY,
        )
        .await
    {
        Ok(_) => Redirect::to(&format!("/jobs/{id}")).into_response(),
        Err(f) => failure(&p, Some(&s), f, "/jobs"),
    }
}
