//! Model endpoints: the organisation's endpoints with their replicas and
//! what they served, a new API key (shown once), new replica bounds.

use super::*;

/// An endpoint as the page draws it.
pub(super) struct EndpointRow {
    pub name: String,
    pub model: String,
    pub url: String,
    pub ready: usize,
    pub replicas: usize,
    pub min: u32,
    pub max: u32,
    pub requests: u64,
    pub tokens: u64,
    pub gpu_hours: f64,
    pub energy_kwh: f64,
}

#[derive(Template)]
#[template(path = "endpoints.html")]
pub(super) struct Endpoints<'a> {
    c: Chrome<'a>,
    rows: Vec<EndpointRow>,
    /// A key just made: (endpoint, key), shown once.
    new_key: Option<(String, String)>,
    problem: Option<String>,
}

async fn rows(p: &PortalState, s: &Signed) -> Result<Vec<EndpointRow>, Failure> {
    let page_: t::Page<t::Endpoint> = p
        .api(&s.token, Method::GET, "/api/v1/endpoints", NO_BODY)
        .await?;
    Ok(page_
        .items
        .into_iter()
        .map(|e| EndpointRow {
            ready: e
                .replicas
                .iter()
                .filter(|r| r.state == t::ReplicaState::Ready)
                .count(),
            replicas: e.replicas.len(),
            min: e.scaling.min_replicas,
            max: e.scaling.max_replicas,
            requests: e.usage.requests,
            tokens: e.usage.prompt_tokens + e.usage.completion_tokens,
            gpu_hours: e.usage.gpu_hours,
            energy_kwh: e.usage.energy_kwh,
            url: e.url,
            model: e.model,
            name: e.name,
        })
        .collect())
}

async fn show(
    p: &PortalState,
    s: &Signed,
    new_key: Option<(String, String)>,
    problem: Option<String>,
) -> Response {
    match rows(p, s).await {
        Ok(rows) => page(&Endpoints {
            c: chrome(p, Some(s)),
            rows,
            new_key,
            problem,
        }),
        Err(f) => failure(p, Some(s), f, "/"),
    }
}

pub(super) async fn endpoints(State(p): State<PortalState>, s: Signed) -> Response {
    show(&p, &s, None, None).await
}

/// A new key of endpoint `name`: the page shows it once.
pub(super) async fn new_key(
    State(p): State<PortalState>,
    s: Signed,
    Path(name): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if !form_ok(&s, &f.csrf) {
        return csrf_refused(&p, &s);
    }
    let body = t::CreateEndpointKey::default();
    match p
        .api::<t::NewEndpointKey, _>(
            &s.token,
            Method::POST,
            &format!("/api/v1/endpoints/{name}/keys"),
            Some(&body),
        )
        .await
    {
        Ok(k) => show(&p, &s, Some((name, k.key)), None).await,
        Err(f) => show(&p, &s, None, Some(f.message)).await,
    }
}

/// New replica bounds of endpoint `name`.
pub(super) async fn scale(
    State(p): State<PortalState>,
    s: Signed,
    Path(name): Path<String>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !form_ok(&s, form.get("csrf").map_or("", |v| v)) {
        return csrf_refused(&p, &s);
    }
    let bound = |k: &str| -> Result<Option<u32>, String> {
        match form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<u32>()
                .map(Some)
                .map_err(|_| format!("{k}: a whole number of replicas is needed")),
        }
    };
    let body = match (bound("min_replicas"), bound("max_replicas")) {
        (Ok(min_replicas), Ok(max_replicas)) => t::ScaleEndpoint {
            min_replicas,
            max_replicas,
        },
        (Err(m), _) | (_, Err(m)) => return show(&p, &s, None, Some(m)).await,
    };
    match p
        .api::<t::Endpoint, _>(
            &s.token,
            Method::POST,
            &format!("/api/v1/endpoints/{name}/scale"),
            Some(&body),
        )
        .await
    {
        Ok(_) => Redirect::to("/endpoints").into_response(),
        Err(f) => show(&p, &s, None, Some(f.message)).await,
    }
}
