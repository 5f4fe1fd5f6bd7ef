//! The caller's own page: organisation, projects, allocations, requests.

use super::*;

/// An allocation as the dashboard draws it.
pub(super) struct AllocView {
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

pub(super) fn alloc_view(a: &t::Allocation, now_ms: i64) -> AllocView {
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
pub(super) struct Me<'a> {
    c: Chrome<'a>,
    org: Option<String>,
    allocs: Vec<AllocView>,
    projects: Vec<String>,
    requests: Vec<t::AccessRequest>,
}

pub(super) async fn me(State(p): State<PortalState>, s: Signed) -> Response {
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
