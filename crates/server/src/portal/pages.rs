//! The portal's pages and forms, each a call or two to the API.

use super::NO_BODY;
use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use gigafab_api as t;
use serde::Deserialize;

use super::{
    COOKIE, Failure, MaybeSigned, PortalState, SESSION_IDLE, Signed, Words, form_ok, page,
};

/// What every page shows around its content.
pub struct Chrome<'a> {
    pub t: &'a Words,
    pub lang: &'static str,
    pub user: Option<String>,
    pub role: String,
    pub csrf: String,
    /// An admin or operator (sees the operations page).
    pub global: bool,
}

pub(super) fn chrome<'a>(p: &'a PortalState, s: Option<&Signed>) -> Chrome<'a> {
    Chrome {
        t: &p.words,
        lang: "en",
        user: s.map(|s| s.who.name.clone()),
        role: s
            .map(|s| s.who.role.as_str().to_string())
            .unwrap_or_default(),
        csrf: s.map(|s| s.csrf.clone()).unwrap_or_default(),
        global: s.is_some_and(|s| s.who.global()),
    }
}

/// One field of a form, with its value and, after a refusal, its error.
pub struct Input {
    pub name: &'static str,
    pub label: String,
    pub kind: &'static str,
    pub value: String,
    pub help: String,
    pub error: Option<String>,
    pub options: Vec<(String, String)>,
}

fn input(w: &Words, name: &'static str, key: &'static str, kind: &'static str) -> Input {
    Input {
        name,
        label: w.get(key).to_string(),
        kind,
        value: String::new(),
        help: String::new(),
        error: None,
        options: Vec::new(),
    }
}

/// Puts the posted values back and the API's refusal next to its field
/// (or in `problem` when it names none).
fn refill(
    inputs: &mut [Input],
    form: &HashMap<String, String>,
    f: Option<&Failure>,
) -> Option<String> {
    for i in inputs.iter_mut() {
        if let Some(v) = form.get(i.name) {
            i.value = v.clone();
        }
    }
    let f = f?;
    if let Some(field) = f.field()
        && let Some(i) = inputs.iter_mut().find(|i| i.name == field)
    {
        i.error = Some(f.message.clone());
        return None;
    }
    Some(f.message.clone())
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    c: Chrome<'a>,
    message: String,
    back: &'static str,
}

/// An API refusal as a page (never raw JSON): its status, its words.
pub(super) fn failure(
    p: &PortalState,
    s: Option<&Signed>,
    f: Failure,
    back: &'static str,
) -> Response {
    let message = match f.status {
        StatusCode::FORBIDDEN => format!("{} {}", p.words.get("err.forbidden"), f.message),
        StatusCode::NOT_FOUND => p.words.get("err.notfound").to_string(),
        _ => f.message,
    };
    let mut r = page(&ErrorPage {
        c: chrome(p, s),
        message,
        back,
    });
    *r.status_mut() = f.status;
    r
}

pub(super) fn csrf_refused(p: &PortalState, s: &Signed) -> Response {
    let mut r = page(&ErrorPage {
        c: chrome(p, Some(s)),
        message: p.words.get("err.csrf").to_string(),
        back: "/",
    });
    *r.status_mut() = StatusCode::FORBIDDEN;
    r
}

pub(super) fn router() -> Router<PortalState> {
    Router::new()
        .route("/", get(home))
        .route("/login", get(login_page).post(login))
        .route("/login/oidc", get(oidc_start))
        .route("/login/oidc/callback", get(oidc_callback))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/jobs", get(jobs))
        .route("/jobs/new", get(new_job_page).post(new_job))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/log", get(job_log))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/requests", get(requests))
        .route("/requests/new", get(new_request_page).post(new_request))
        .route("/requests/{id}", get(request))
        .route("/requests/{id}/{act}", post(request_act))
        .route("/reviews", get(reviews))
        .route("/admin", get(admin))
        .route("/admin/nodes/{name}/{act}", post(node_act))
        .route("/admin/calls", post(open_call))
        .route("/static/portal.css", get(css))
        .route("/static/portal.js", get(js))
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/portal.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../static/portal.js"),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "home.html")]
struct Home<'a> {
    c: Chrome<'a>,
    offer: t::Offer,
    sites: Vec<SiteRow>,
}

/// A site on the home page: its grid now and the lowest intensity of the
/// next 24 hours (and in how many hours), its powered-down nodes.
struct SiteRow {
    name: String,
    intensity: Option<f64>,
    cleanest: Option<(f64, usize)>,
    off: u64,
    nodes: u64,
}

/// The sites as the controller reports them (`Action::Sites`); none when
/// it cannot answer (the page still shows the offer).
async fn site_rows(p: &PortalState) -> Vec<SiteRow> {
    let Ok(Ok(sites)) = p
        .shared
        .ask(
            crate::auth::Principal::anonymous(),
            crate::ctl::Action::Sites,
        )
        .await
        .map(|(_, r)| r.sites())
    else {
        return Vec::new();
    };
    sites
        .sites
        .into_iter()
        .map(|s| SiteRow {
            cleanest: s.forecast_g_per_kwh.as_ref().and_then(|f| {
                f.iter()
                    .enumerate()
                    .map(|(h, g)| (*g, h))
                    .min_by(|a, b| a.0.total_cmp(&b.0))
            }),
            name: s.name,
            intensity: s.intensity_g_per_kwh,
            off: s.nodes_powered_down.into(),
            nodes: s.nodes.into(),
        })
        .collect()
}

impl Home<'_> {
    fn mode_key(&self, mode: &str) -> &'static str {
        match mode {
            "playground" => "mode.playground",
            "fast-lane" => "mode.fast-lane",
            _ => "mode.large-scale",
        }
    }
}

async fn home(State(p): State<PortalState>, MaybeSigned(s): MaybeSigned) -> Response {
    match crate::api::offer_of(&p.shared).await {
        Ok(offer) => page(&Home {
            c: chrome(&p, s.as_ref()),
            offer,
            sites: site_rows(&p).await,
        }),
        Err(e) => failure(
            &p,
            s.as_ref(),
            Failure {
                status: e.status,
                code: e.code.to_string(),
                message: e.message,
            },
            "/",
        ),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    c: Chrome<'a>,
    expired: bool,
    bad: bool,
    /// The site's provider is configured.
    oidc: bool,
    /// Why a sign-in through the provider failed.
    problem: Option<String>,
}

#[derive(Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_page(State(p): State<PortalState>, q: Query<LoginQuery>) -> Response {
    page(&Login {
        c: chrome(&p, None),
        expired: q.expired.is_some(),
        bad: false,
        oidc: p.oidc.is_some(),
        problem: None,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(p): State<PortalState>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_string();
    if token.len() > 200 || p.shared.principal(&token).is_none() {
        let mut r = page(&Login {
            c: chrome(&p, None),
            expired: false,
            bad: true,
            oidc: p.oidc.is_some(),
            problem: None,
        });
        *r.status_mut() = StatusCode::UNAUTHORIZED;
        return r;
    }
    signed_in(&p, token, None)
}

/// Opens a session for `token` and sends the browser to its dashboard.
fn signed_in(p: &PortalState, token: String, minted: Option<i64>) -> Response {
    let (id, _) = p.open_session(token, minted);
    // Lax, not Strict: the browser comes back from the identity provider,
    // another site, and must bring the cookie along to the dashboard
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age={}",
        SESSION_IDLE.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/me")).into_response()
}

fn sign_in_failed(p: &PortalState, status: StatusCode, problem: String) -> Response {
    let mut r = page(&Login {
        c: chrome(p, None),
        expired: false,
        bad: false,
        oidc: p.oidc.is_some(),
        problem: Some(problem),
    });
    *r.status_mut() = status;
    r
}

/// The cookie that binds a sign-in through the provider to the browser
/// that started it.
const OIDC_COOKIE: &str = "gf_oidc";

/// Sends the browser to the site's identity provider.
async fn oidc_start(State(p): State<PortalState>) -> Response {
    let Some(o) = &p.oidc else {
        return sign_in_failed(
            &p,
            StatusCode::NOT_FOUND,
            p.words.get("login.nooidc").into(),
        );
    };
    match o.start().await {
        Ok((url, browser)) => {
            let c = format!(
                "{OIDC_COOKIE}={browser}; Path=/login/oidc; HttpOnly; Secure; SameSite=Lax; Max-Age=600"
            );
            ([(header::SET_COOKIE, c)], Redirect::to(&url)).into_response()
        }
        Err(e) => sign_in_failed(&p, StatusCode::BAD_GATEWAY, e.0),
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The provider sends the browser back: the identity it vouches for
/// signs in as the user linked to it.
async fn oidc_callback(
    State(p): State<PortalState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(o) = &p.oidc else {
        return sign_in_failed(
            &p,
            StatusCode::NOT_FOUND,
            p.words.get("login.nooidc").into(),
        );
    };
    if let Some(e) = q.error {
        let said = format!("{e}: {}", q.error_description.unwrap_or_default());
        return sign_in_failed(
            &p,
            StatusCode::UNAUTHORIZED,
            format!(
                "{} {}",
                p.words.get("login.refused"),
                gigafab_core::time::excerpt(&said, 200)
            ),
        );
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return sign_in_failed(
            &p,
            StatusCode::BAD_REQUEST,
            p.words.get("login.again").into(),
        );
    };
    let browser = super::cookie_named(&headers, OIDC_COOKIE).unwrap_or_default();
    let sub = match o.finish(&state, &code, &browser).await {
        Ok(sub) => sub,
        Err(e) => return sign_in_failed(&p, StatusCode::UNAUTHORIZED, e.0),
    };
    let who = p
        .shared
        .tenancy
        .user_by_subject(&sub)
        .and_then(|u| p.shared.tenancy.user_principal(u));
    let Some(who) = who else {
        return sign_in_failed(
            &p,
            StatusCode::FORBIDDEN,
            format!(
                "{} {}",
                p.words.get("login.unlinked"),
                gigafab_core::time::excerpt(&sub, 255)
            ),
        );
    };
    let req = gigafab_api::CreateToken {
        user: None,
        expires_in_days: Some(SESSION_IDLE.as_secs_f64() / 86_400.0),
    };
    let shared = p.shared.clone();
    let made =
        tokio::spawn(async move { crate::tenancy::create_token(&shared, &who, req).await }).await;
    match made {
        Ok(Ok(t)) => signed_in(&p, t.token, Some(t.id.0)),
        Ok(Err(e)) => sign_in_failed(&p, e.status, e.message),
        Err(e) => sign_in_failed(&p, StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(p): State<PortalState>,
    s: Signed,
    headers: axum::http::HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !form_ok(&s, &f.csrf) {
        return csrf_refused(&p, &s);
    }
    if let Some(id) = super::cookie(&headers)
        && let Some(minted) = p.close_session(&id)
    {
        // the token made at an OpenID Connect sign-in ends with its session
        let shared = p.shared.clone();
        let who = s.who.clone();
        let _ =
            tokio::spawn(async move { crate::tenancy::revoke_token(&shared, &who, minted).await })
                .await;
    }
    let gone = format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0");
    ([(header::SET_COOKIE, gone)], Redirect::to("/")).into_response()
}

/// An allocation as the dashboard draws it.
struct AllocView {
    id: i64,
    name: String,
    state: String,
    granted: f64,
    used: f64,
    until: String,
    energy_kwh: f64,
    carbon_kg: Option<f64>,
    /// The burn-down's point now, in its 300 × 100 box (x: time through
    /// the window, y: GPU-hours used).
    x_now: f64,
    y_now: f64,
}

fn alloc_view(a: &t::Allocation, now_ms: i64) -> AllocView {
    let from = gigafab_core::time::parse_rfc3339(&a.valid_from)
        .ok()
        .unwrap_or(now_ms);
    let until = gigafab_core::time::parse_rfc3339(&a.valid_until)
        .ok()
        .unwrap_or(now_ms);
    let span = (until - from).max(1) as f64;
    let x = ((now_ms - from) as f64 / span).clamp(0.0, 1.0) * 300.0;
    let used = if a.granted_gpu_hours > 0.0 {
        (a.used_gpu_hours / a.granted_gpu_hours).clamp(0.0, 1.0)
    } else {
        0.0
    };
    AllocView {
        id: a.id.0,
        name: a.name.clone(),
        state: a.state.clone(),
        granted: a.granted_gpu_hours,
        used: a.used_gpu_hours,
        until: a.valid_until.clone(),
        energy_kwh: a.energy_kwh,
        carbon_kg: a.carbon_kg,
        x_now: x,
        y_now: used * 100.0,
    }
}

#[derive(Template)]
#[template(path = "me.html")]
struct Me<'a> {
    c: Chrome<'a>,
    org: Option<String>,
    allocs: Vec<AllocView>,
    projects: Vec<String>,
    requests: Vec<t::AccessRequest>,
}

async fn me(State(p): State<PortalState>, s: Signed) -> Response {
    let who: t::WhoAmI = match p
        .api(&s.token, Method::GET, "/api/v1/whoami", NO_BODY)
        .await
    {
        Ok(v) => v,
        Err(f) => return failure(&p, Some(&s), f, "/"),
    };
    let allocs: t::Page<t::Allocation> = match p
        .api(&s.token, Method::GET, "/api/v1/allocations", NO_BODY)
        .await
    {
        Ok(v) => v,
        Err(f) => return failure(&p, Some(&s), f, "/"),
    };
    let requests = match p.requests(&s).await {
        Ok(v) => v,
        Err(f) => return failure(&p, Some(&s), f, "/"),
    };
    let projects: t::Page<t::Project> = match p
        .api(&s.token, Method::GET, "/api/v1/projects", NO_BODY)
        .await
    {
        Ok(v) => v,
        Err(f) => return failure(&p, Some(&s), f, "/"),
    };
    let now = p.shared.clock.now().0;
    let org = who.org.clone();
    page(&Me {
        c: chrome(&p, Some(&s)),
        projects: projects
            .items
            .into_iter()
            .filter(|x| Some(&x.org) == org.as_ref())
            .map(|x| {
                if x.members.is_empty() {
                    format!("{} ({})", x.name, p.words.get("me.open_project"))
                } else {
                    format!("{}: {}", x.name, x.members.join(", "))
                }
            })
            .collect(),
        org,
        allocs: allocs.items.iter().map(|a| alloc_view(a, now)).collect(),
        requests: requests
            .into_iter()
            .filter(|r| s.who.org_id.is_some() && Some(&r.org) == who.org.as_ref())
            .collect(),
    })
}

impl super::Portal {
    async fn requests(&self, s: &Signed) -> Result<Vec<t::AccessRequest>, Failure> {
        let page: t::Page<t::AccessRequest> = self
            .api(&s.token, Method::GET, "/api/v1/requests", NO_BODY)
            .await?;
        Ok(page.items)
    }

    async fn calls(&self, s: &Signed) -> Result<Vec<t::Call>, Failure> {
        let page: t::Page<t::Call> = self
            .api(&s.token, Method::GET, "/api/v1/calls", NO_BODY)
            .await?;
        Ok(page.items)
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct Jobs<'a> {
    c: Chrome<'a>,
    jobs: Vec<t::Job>,
}

async fn jobs(State(p): State<PortalState>, s: Signed) -> Response {
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
struct NewJob<'a> {
    c: Chrome<'a>,
    inputs: Vec<Input>,
    problem: Option<String>,
}

async fn job_inputs(p: &PortalState, s: &Signed) -> Result<Vec<Input>, Failure> {
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
        time,
    ])
}

async fn new_job_page(State(p): State<PortalState>, s: Signed) -> Response {
    match job_inputs(&p, &s).await {
        Ok(inputs) => page(&NewJob {
            c: chrome(&p, Some(&s)),
            inputs,
            problem: None,
        }),
        Err(f) => failure(&p, Some(&s), f, "/jobs"),
    }
}

fn invalid(field: &str, message: &str) -> Failure {
    Failure {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        code: "invalid_request".into(),
        message: format!("{field}: {message}"),
    }
}

/// Splits a command line into words as a POSIX shell does for quoting
/// (no expansion): spaces separate words, `'...'` keeps everything,
/// `"..."` keeps all but `\"` and `\\`, a backslash outside quotes keeps
/// the next character.
pub fn words(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut it = line.chars();
    while let Some(ch) = it.next() {
        match ch {
            '\'' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("a ' is not closed"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match it.next() {
                        Some('"') => break,
                        Some('\\') => match it.next() {
                            Some(x @ ('"' | '\\')) => cur.push(x),
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err("a \" is not closed"),
                        },
                        Some(x) => cur.push(x),
                        None => return Err("a \" is not closed"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match it.next() {
                    Some(x) => cur.push(x),
                    None => return Err("a \\ ends the line"),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// The form's numbers, or the refusal naming the field.
fn number(form: &HashMap<String, String>, field: &str) -> Result<f64, Failure> {
    let raw = form.get(field).map(|v| v.trim()).unwrap_or("");
    raw.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| invalid(field, "a number is needed"))
}

async fn new_job(
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
        Ok(t::SubmitJob {
            time_limit_s: Some((minutes * 60.0).round() as i64),
            name: field("name"),
            type_: field("type"),
            ..t::SubmitJob::new(alloc as i64, gpus as i64, command)
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
struct JobPage<'a> {
    c: Chrome<'a>,
    job: t::Job,
    events: Vec<t::JobEvent>,
    ended: bool,
    estimate: Option<String>,
    stdout: String,
    stderr: String,
}

fn job_id(raw: &str) -> Result<i64, Failure> {
    raw.parse::<i64>().ok().filter(|v| *v > 0).ok_or(Failure {
        status: StatusCode::NOT_FOUND,
        code: "job_not_found".into(),
        message: String::new(),
    })
}

async fn job(State(p): State<PortalState>, s: Signed, Path(id): Path<String>) -> Response {
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
struct LogQuery {
    stream: Option<String>,
    offset: Option<u64>,
}

/// The output of a job from `offset`, for the page's script: the text,
/// with the job's state in `X-Job-State`.
async fn job_log(
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

async fn cancel_job(
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

#[derive(Template)]
#[template(path = "requests.html")]
struct Requests<'a> {
    c: Chrome<'a>,
    title: String,
    reviews: bool,
    requests: Vec<t::AccessRequest>,
}

async fn requests(State(p): State<PortalState>, s: Signed) -> Response {
    match p.requests(&s).await {
        Ok(requests) => page(&Requests {
            c: chrome(&p, Some(&s)),
            title: p.words.get("req.title").to_string(),
            reviews: false,
            requests,
        }),
        Err(f) => failure(&p, Some(&s), f, "/"),
    }
}

/// Requests that wait for the caller's review: submitted or in review, in
/// a call the caller reviews, of another organisation.
async fn reviews(State(p): State<PortalState>, s: Signed) -> Response {
    let (requests, calls) = match (p.requests(&s).await, p.calls(&s).await) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(f), _) | (_, Err(f)) => return failure(&p, Some(&s), f, "/"),
    };
    let mine: Vec<i64> = calls
        .iter()
        .filter(|c| c.reviewers.iter().any(|u| u.0 == s.who.user_id))
        .map(|c| c.id.0)
        .collect();
    let requests = requests
        .into_iter()
        .filter(|r| {
            mine.contains(&r.call.0)
                && (r.state == "submitted" || r.state == "in_review")
                && !r.reviews.iter().any(|v| v.reviewer.0 == s.who.user_id)
        })
        .collect();
    page(&Requests {
        c: chrome(&p, Some(&s)),
        title: p.words.get("rev.title").to_string(),
        reviews: true,
        requests,
    })
}

#[derive(Template)]
#[template(path = "request_new.html")]
struct NewRequest<'a> {
    c: Chrome<'a>,
    inputs: Vec<Input>,
    problem: Option<String>,
}

async fn request_inputs(p: &PortalState, s: &Signed) -> Result<Vec<Input>, Failure> {
    let w = &p.words;
    let mut call = input(w, "call", "req.call", "select");
    call.options = p
        .calls(s)
        .await?
        .iter()
        .filter(|c| c.state == "open")
        .map(|c| (c.id.0.to_string(), format!("{} ({})", c.name, c.mode)))
        .collect();
    let allocs: t::Page<t::Allocation> = p
        .api(&s.token, Method::GET, "/api/v1/allocations", NO_BODY)
        .await?;
    let mut extends = input(w, "extends", "req.extends", "select");
    extends.options = std::iter::once((String::new(), w.get("req.newalloc").to_string()))
        .chain(allocs.items.iter().map(|a| {
            (
                a.id.0.to_string(),
                format!(
                    "#{} {} ({}, until {})",
                    a.id.0, a.name, a.state, a.valid_until
                ),
            )
        }))
        .collect();
    let mut project = input(w, "project", "req.project", "text");
    project.help = w.get("req.project_help").to_string();
    let mut days = input(w, "days", "req.days", "number");
    days.help = w.get("req.days_help").to_string();
    let mut by_type = input(w, "gpu_hours_by_type", "req.by_type", "text");
    by_type.help = w.get("req.by_type_help").to_string();
    let mut team = input(w, "team", "req.team", "text");
    team.help = w.get("req.team_help").to_string();
    let mut residency = input(w, "residency", "req.residency", "text");
    residency.help = w.get("req.residency_help").to_string();
    Ok(vec![
        call,
        extends,
        input(w, "title", "req.rtitle", "text"),
        project,
        input(w, "gpu_hours", "req.gpu_hours", "number"),
        by_type,
        days,
        team,
        residency,
        input(w, "summary", "req.summary", "textarea"),
    ])
}

async fn new_request_page(State(p): State<PortalState>, s: Signed) -> Response {
    match request_inputs(&p, &s).await {
        Ok(inputs) => page(&NewRequest {
            c: chrome(&p, Some(&s)),
            inputs,
            problem: None,
        }),
        Err(f) => failure(&p, Some(&s), f, "/requests"),
    }
}

async fn new_request(
    State(p): State<PortalState>,
    s: Signed,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let body = (|| -> Result<t::CreateRequest, Failure> {
        let call = number(&form, "call")?;
        let gpu_hours = number(&form, "gpu_hours")?;
        let days = number(&form, "days")?;
        let text = |k: &str| {
            form.get(k)
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let mut b = t::CreateRequest {
            call: t::CallId(call as i64),
            title: text("title"),
            summary: Some(text("summary")),
            project: None,
            extends: None,
            gpu_hours,
            days,
            gpu_hours_by_type: None,
            residency: None,
            team: None,
        };
        let by_type = text("gpu_hours_by_type");
        if !by_type.is_empty() {
            let mut m = std::collections::BTreeMap::new();
            for part in by_type.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                let (ty, h) = part
                    .split_once('=')
                    .and_then(|(t, h)| Some((t.trim(), h.trim().parse::<f64>().ok()?)))
                    .ok_or_else(|| invalid("gpu_hours_by_type", "write type=hours, type=hours"))?;
                m.insert(ty.to_string(), h);
            }
            b.gpu_hours_by_type = Some(m);
        }
        let team: Vec<String> = text("team")
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect();
        if !team.is_empty() {
            b.team = Some(team);
        }
        if !text("residency").is_empty() {
            b.residency = Some(text("residency"));
        }
        if text("extends").is_empty() {
            b.project = Some(text("project"));
        } else {
            b.extends = Some(t::AllocationId(number(&form, "extends")? as i64));
            if !text("project").is_empty() {
                b.project = Some(text("project"));
            }
        }
        Ok(b)
    })();
    let created = match body {
        Ok(b) => {
            p.api::<t::AccessRequest, _>(&s.token, Method::POST, "/api/v1/requests", Some(&b))
                .await
        }
        Err(f) => Err(f),
    };
    let res = match created {
        Ok(r) if form.get("then").map(String::as_str) == Some("submit") => p
            .api::<t::AccessRequest, _>(
                &s.token,
                Method::POST,
                &format!("/api/v1/requests/{}/submit", r.id.0),
                NO_BODY,
            )
            .await
            .map(|_| r),
        other => other,
    };
    match res {
        Ok(r) => Redirect::to(&format!("/requests/{}", r.id.0)).into_response(),
        Err(f) if f.status.is_client_error() => {
            let mut inputs = match request_inputs(&p, &s).await {
                Ok(i) => i,
                Err(f) => return failure(&p, Some(&s), f, "/requests"),
            };
            let problem = refill(&mut inputs, &form, Some(&f));
            let mut r = page(&NewRequest {
                c: chrome(&p, Some(&s)),
                inputs,
                problem,
            });
            *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
            r
        }
        Err(f) => failure(&p, Some(&s), f, "/requests"),
    }
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage<'a> {
    c: Chrome<'a>,
    r: t::AccessRequest,
    call_name: String,
    applicant: bool,
    reviewer: bool,
    problem: Option<String>,
}

async fn request_page(p: &PortalState, s: &Signed, id: &str, problem: Option<String>) -> Response {
    let r: t::AccessRequest = match p
        .api(
            &s.token,
            Method::GET,
            &format!("/api/v1/requests/{}", job_id(id).map_or(0, |v| v)),
            NO_BODY,
        )
        .await
    {
        Ok(r) => r,
        Err(f) => return failure(p, Some(s), f, "/requests"),
    };
    let calls = p.calls(s).await.unwrap_or_default();
    let call = calls.iter().find(|c| c.id == r.call);
    let org = p
        .api::<t::WhoAmI, _>(&s.token, Method::GET, "/api/v1/whoami", NO_BODY)
        .await
        .ok()
        .and_then(|v| v.org);
    page(&RequestPage {
        c: chrome(p, Some(s)),
        call_name: call
            .map(|c| format!("{} ({})", c.name, c.mode))
            .unwrap_or_default(),
        applicant: s.who.role.in_org() && org.as_deref() == Some(r.org.as_str()),
        reviewer: call.is_some_and(|c| c.reviewers.iter().any(|u| u.0 == s.who.user_id))
            && org.as_deref() != Some(r.org.as_str()),
        r,
        problem,
    })
}

async fn request(State(p): State<PortalState>, s: Signed, Path(id): Path<String>) -> Response {
    request_page(&p, &s, &id, None).await
}

/// The applicant's submit and withdraw, a reviewer's review, an
/// operator's decision.
async fn request_act(
    State(p): State<PortalState>,
    s: Signed,
    Path((id, act)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let n = match job_id(&id) {
        Ok(n) => n,
        Err(f) => return failure(&p, Some(&s), f, "/requests"),
    };
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    /// What an action on a request posts.
    #[derive(serde::Serialize)]
    #[serde(untagged)]
    enum RequestAction {
        Review(t::CreateReview),
        Comment(t::CreateComment),
        Decision(t::CreateDecision),
    }
    let (path, body) = match act.as_str() {
        "submit" | "withdraw" => (format!("/api/v1/requests/{n}/{act}"), None),
        "review" => (
            format!("/api/v1/requests/{n}/reviews"),
            Some(RequestAction::Review(t::CreateReview {
                score: text("score")
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0),
                verdict: text("verdict").unwrap_or_default(),
                comment: text("comment"),
            })),
        ),
        "comment" => (
            format!("/api/v1/requests/{n}/comments"),
            Some(RequestAction::Comment(t::CreateComment {
                text: text("text").unwrap_or_default(),
            })),
        ),
        "decision" => (
            format!("/api/v1/requests/{n}/decision"),
            Some(RequestAction::Decision(t::CreateDecision {
                approve: text("approve").as_deref() == Some("true"),
                comment: text("comment"),
            })),
        ),
        _ => {
            return failure(
                &p,
                Some(&s),
                Failure {
                    status: StatusCode::NOT_FOUND,
                    code: "not_found".into(),
                    message: String::new(),
                },
                "/requests",
            );
        }
    };
    match p
        .api::<t::AccessRequest, _>(&s.token, Method::POST, &path, body.as_ref())
        .await
    {
        Ok(_) => Redirect::to(&format!("/requests/{n}")).into_response(),
        Err(f) if f.status.is_client_error() && f.status != StatusCode::NOT_FOUND => {
            let mut r = request_page(&p, &s, &id, Some(f.message)).await;
            if r.status() == StatusCode::OK {
                *r.status_mut() = f.status;
            }
            r
        }
        Err(f) => failure(&p, Some(&s), f, "/requests"),
    }
}

/// A node as the operations page shows it.
struct NodeView {
    name: String,
    pool: String,
    type_: String,
    free: u64,
    busy: u64,
    drained: bool,
    reason: String,
}

/// An organisation and its members, for operators.
struct OrgView {
    name: String,
    category: String,
    members: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin.html")]
struct Admin<'a> {
    c: Chrome<'a>,
    calls: Vec<t::Call>,
    nodes: Vec<NodeView>,
    orgs: Vec<OrgView>,
    audit: Vec<t::AuditEntry>,
    problem: Option<String>,
}

async fn admin_page(p: &PortalState, s: &Signed, problem: Option<String>) -> Response {
    if !s.who.global() {
        return failure(
            p,
            Some(s),
            Failure {
                status: StatusCode::FORBIDDEN,
                code: "forbidden".into(),
                message: String::new(),
            },
            "/",
        );
    }
    let fleet: t::Fleet = match p.api(&s.token, Method::GET, "/api/v1/fleet", NO_BODY).await {
        Ok(v) => v,
        Err(f) => return failure(p, Some(s), f, "/"),
    };
    let audit: t::Page<t::AuditEntry> = match p
        .api(&s.token, Method::GET, "/api/v1/audit?limit=100", NO_BODY)
        .await
    {
        Ok(v) => v,
        Err(f) => return failure(p, Some(s), f, "/"),
    };
    let nodes = fleet
        .nodes
        .into_iter()
        .map(|n| NodeView {
            name: n.name,
            pool: n.pool,
            type_: n.type_,
            free: n.free.into(),
            busy: n.busy.into(),
            drained: n.state == t::NodeState::Drained,
            reason: n.reason.unwrap_or_default(),
        })
        .collect();
    let orgs: t::Page<t::Org> = p
        .api(&s.token, Method::GET, "/api/v1/orgs", NO_BODY)
        .await
        .unwrap_or(t::Page {
            items: Vec::new(),
            next: None,
        });
    let users: t::Page<t::User> = p
        .api(&s.token, Method::GET, "/api/v1/users", NO_BODY)
        .await
        .unwrap_or(t::Page {
            items: Vec::new(),
            next: None,
        });
    let orgs = orgs
        .items
        .into_iter()
        .map(|o| OrgView {
            members: users
                .items
                .iter()
                .filter(|u| u.org.as_deref() == Some(o.name.as_str()))
                .map(|u| format!("{} ({})", u.name, u.role))
                .collect(),
            name: o.name,
            category: o.category,
        })
        .collect();
    page(&Admin {
        c: chrome(p, Some(s)),
        calls: p.calls(s).await.unwrap_or_default(),
        nodes,
        orgs,
        audit: audit.items,
        problem,
    })
}

async fn admin(State(p): State<PortalState>, s: Signed) -> Response {
    admin_page(&p, &s, None).await
}

/// An operator opens a call from the operations page.
async fn open_call(
    State(p): State<PortalState>,
    s: Signed,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let text = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let list = |k: &str| -> Vec<String> {
        text(k)
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect()
    };
    let body = number(&form, "envelope_gpu_hours").map(|envelope| t::CreateCall {
        name: text("name"),
        mode: text("mode"),
        categories: list("categories"),
        envelope_gpu_hours: envelope,
        opens_at: None,
        closes_at: Some(text("closes_at")).filter(|c| !c.is_empty()),
        countries: Some(list("countries")),
        types: Some(list("types")),
    });
    let res = match body {
        Ok(b) => {
            p.api::<t::Call, _>(&s.token, Method::POST, "/api/v1/calls", Some(&b))
                .await
        }
        Err(f) => Err(f),
    };
    match res {
        Ok(_) => Redirect::to("/admin").into_response(),
        Err(f) if f.status.is_client_error() => {
            let mut r = admin_page(&p, &s, Some(f.message)).await;
            if r.status() == StatusCode::OK {
                *r.status_mut() = f.status;
            }
            r
        }
        Err(f) => failure(&p, Some(&s), f, "/admin"),
    }
}

#[derive(Deserialize)]
struct NodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn node_act(
    State(p): State<PortalState>,
    s: Signed,
    Path((name, act)): Path<(String, String)>,
    Form(f): Form<NodeForm>,
) -> Response {
    if !form_ok(&s, &f.csrf) {
        return csrf_refused(&p, &s);
    }
    let node_name_ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if (act != "drain" && act != "resume") || !node_name_ok {
        return failure(
            &p,
            Some(&s),
            Failure {
                status: StatusCode::NOT_FOUND,
                code: "node_not_found".into(),
                message: String::new(),
            },
            "/admin",
        );
    }
    let path = format!("/api/v1/fleet/nodes/{name}/{act}");
    let reason = f.reason.trim();
    let body = (act == "drain" && !reason.is_empty()).then(|| t::DrainNode {
        reason: Some(reason.to_string()),
    });
    match p
        .api::<t::FleetNode, _>(&s.token, Method::POST, &path, body.as_ref())
        .await
    {
        Ok(_) => Redirect::to("/admin").into_response(),
        Err(f) => admin_page(&p, &s, Some(f.message)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::words;

    #[test]
    fn a_command_line_is_split_as_a_shell_quotes_it() {
        assert_eq!(
            words("sh -c 'echo a; sleep 1'").unwrap(),
            ["sh", "-c", "echo a; sleep 1"]
        );
        assert_eq!(
            words(r#"  echo "say \"hi\" \n"  it\ s ''"#).unwrap(),
            ["echo", r#"say "hi" \n"#, "it s", ""]
        );
        assert!(words("").unwrap().is_empty());
        assert_eq!(words("echo 'open").unwrap_err(), "a ' is not closed");
        assert_eq!(words("echo \"open").unwrap_err(), "a \" is not closed");
    }
}
