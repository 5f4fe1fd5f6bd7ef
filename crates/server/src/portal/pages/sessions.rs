//! Interactive sessions: the user's sessions (open, Extend, stop) and a
//! form that starts one. The session itself opens at `/sessions/{id}/`.

use super::*;

/// A session as the page draws it.
pub(super) struct SessionRow {
    pub id: i64,
    pub app: String,
    pub state: &'static str,
    pub ready: bool,
    pub open: bool,
    pub gpus: i64,
    pub ends: String,
    pub url: String,
    pub extendable_h: i64,
    pub reason: String,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub(super) struct SessionsPage<'a> {
    c: Chrome<'a>,
    rows: Vec<SessionRow>,
    inputs: Vec<Input>,
    problem: Option<String>,
}

fn state(s: &t::Session) -> &'static str {
    match s.state {
        t::SessionState::Queued => "queued",
        t::SessionState::Starting => "starting",
        t::SessionState::Ready => "ready",
        t::SessionState::Ended => "ended",
    }
}

async fn inputs(p: &PortalState, s: &Signed) -> Result<Vec<Input>, Failure> {
    let w = &p.words;
    let apps: t::Page<t::App> = p
        .api(&s.token, Method::GET, "/api/v1/apps", NO_BODY)
        .await?;
    let mut app = input(w, "app", "sess.app", "select");
    app.options = apps
        .items
        .iter()
        .map(|a| (a.name.clone(), format!("{} ({})", a.title, a.name)))
        .collect();
    app.value = "jupyter".into();
    // the allocation select of the job form
    let mut all = job_inputs(p, s).await?;
    let alloc = all.remove(0);
    let mut gpus = input(w, "gpus", "newjob.gpus", "number");
    gpus.help = w.get("newjob.gpus_help").to_string();
    gpus.value = "1".into();
    let mut hours = input(w, "hours", "sess.hours", "number");
    hours.value = "2".into();
    let mut idle = input(w, "idle_min", "sess.idle", "number");
    idle.value = "60".into();
    Ok(vec![app, alloc, gpus, hours, idle])
}

async fn show(
    p: &PortalState,
    s: &Signed,
    form: Option<&HashMap<String, String>>,
    f: Option<Failure>,
) -> Response {
    let list: t::Page<t::Session> = match p
        .api(&s.token, Method::GET, "/api/v1/sessions", NO_BODY)
        .await
    {
        Ok(v) => v,
        Err(f) => return failure(p, Some(s), f, "/"),
    };
    let mut inputs = match inputs(p, s).await {
        Ok(i) => i,
        Err(f) => return failure(p, Some(s), f, "/"),
    };
    let problem = match form {
        Some(form) => refill(&mut inputs, form, f.as_ref()),
        None => f.map(|f| f.message),
    };
    let rows = list
        .items
        .iter()
        .map(|x| SessionRow {
            id: x.id.0,
            app: x.app.clone(),
            state: state(x),
            ready: x.state == t::SessionState::Ready,
            open: x.state != t::SessionState::Ended,
            gpus: x.gpus,
            ends: x.ends_at.clone().unwrap_or_else(|| "-".into()),
            url: x.url.clone(),
            extendable_h: x.extendable_s / 3600,
            reason: x.reason.clone().unwrap_or_default(),
        })
        .collect();
    page(&SessionsPage {
        c: chrome(p, Some(s)),
        rows,
        inputs,
        problem,
    })
}

pub(super) async fn sessions(State(p): State<PortalState>, s: Signed) -> Response {
    show(&p, &s, None, None).await
}

pub(super) async fn start_session(
    State(p): State<PortalState>,
    s: Signed,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let body = (|| -> Result<t::StartSession, Failure> {
        // a share below 1 asks for a slice of one accelerator
        let gpus = number(&form, "gpus")?;
        let share = (gpus > 0.0 && gpus < 1.0).then_some(gpus);
        if share.is_none() && gpus.fract() != 0.0 {
            return Err(invalid(
                "gpus",
                "a whole number of accelerators, or a share of one below 1",
            ));
        }
        Ok(t::StartSession {
            app: form.get("app").cloned().unwrap_or_default(),
            allocation: t::IdRef::Num(number(&form, "allocation")? as i64),
            project: None,
            gpus: Some(if share.is_some() { 1 } else { gpus as i64 }),
            gpu_share: share,
            gpu_profile: None,
            types: None,
            time_limit_s: Some((number(&form, "hours")? * 3600.0).round() as i64),
            idle_timeout_s: Some((number(&form, "idle_min")? * 60.0).round() as i64),
        })
    })();
    let res = match body {
        Ok(b) => {
            p.api::<t::Session, _>(&s.token, Method::POST, "/api/v1/sessions", Some(&b))
                .await
        }
        Err(f) => Err(f),
    };
    match res {
        Ok(_) => Redirect::to("/interactive").into_response(),
        Err(f) => {
            // refused in seconds, asked in hours and minutes
            let f = match f.field() {
                Some("time_limit_s") => Failure {
                    message: f.message.replacen("time_limit_s", "hours", 1),
                    ..f
                },
                Some("idle_timeout_s") => Failure {
                    message: f.message.replacen("idle_timeout_s", "idle_min", 1),
                    ..f
                },
                _ => f,
            };
            show(&p, &s, Some(&form), Some(f)).await
        }
    }
}

/// Extend (by an hour) or stop session `id`.
pub(super) async fn session_act(
    State(p): State<PortalState>,
    s: Signed,
    Path((id, act)): Path<(i64, String)>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !form_ok(&s, &f.csrf) {
        return csrf_refused(&p, &s);
    }
    let res = match act.as_str() {
        "extend" => {
            let body = t::ExtendSession { by_s: 3600 };
            p.api::<t::Session, _>(
                &s.token,
                Method::POST,
                &format!("/api/v1/sessions/{id}/extend"),
                Some(&body),
            )
            .await
        }
        "stop" => {
            p.api::<t::Session, _>(
                &s.token,
                Method::POST,
                &format!("/api/v1/sessions/{id}/stop"),
                NO_BODY,
            )
            .await
        }
        _ => {
            return failure(
                &p,
                Some(&s),
                Failure {
                    status: StatusCode::NOT_FOUND,
                    code: "not_found".into(),
                    message: String::new(),
                },
                "/interactive",
            );
        }
    };
    match res {
        Ok(_) => Redirect::to("/interactive").into_response(),
        Err(f) => show(&p, &s, None, Some(f)).await,
    }
}
