//! Access requests: the lists, the application form, one request and what reviewers and operators do with it.

use super::*;

#[derive(Template)]
#[template(path = "requests.html")]
pub(super) struct Requests<'a> {
    c: Chrome<'a>,
    title: String,
    reviews: bool,
    requests: Vec<t::AccessRequest>,
}

pub(super) async fn requests(State(p): State<PortalState>, s: Signed) -> Response {
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
pub(super) async fn reviews(State(p): State<PortalState>, s: Signed) -> Response {
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
pub(super) struct NewRequest<'a> {
    c: Chrome<'a>,
    inputs: Vec<Input>,
    problem: Option<String>,
}

pub(super) async fn request_inputs(p: &PortalState, s: &Signed) -> Result<Vec<Input>, Failure> {
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

pub(super) async fn new_request_page(State(p): State<PortalState>, s: Signed) -> Response {
    match request_inputs(&p, &s).await {
        Ok(inputs) => page(&NewRequest {
            c: chrome(&p, Some(&s)),
            inputs,
            problem: None,
        }),
        Err(f) => failure(&p, Some(&s), f, "/requests"),
    }
}

pub(super) async fn new_request(
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
pub(super) struct RequestPage<'a> {
    c: Chrome<'a>,
    r: t::AccessRequest,
    call_name: String,
    applicant: bool,
    reviewer: bool,
    problem: Option<String>,
}

pub(super) async fn request_page(
    p: &PortalState,
    s: &Signed,
    id: &str,
    problem: Option<String>,
) -> Response {
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

pub(super) async fn request(
    State(p): State<PortalState>,
    s: Signed,
    Path(id): Path<String>,
) -> Response {
    request_page(&p, &s, &id, None).await
}

/// The applicant's submit and withdraw, a reviewer's review, an
/// operator's decision.
pub(super) async fn request_act(
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
