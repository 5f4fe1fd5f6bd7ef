//! The operator's console: nodes, organisations, calls, the audit log.

use super::*;

/// A node as the operations page shows it.
pub(super) struct NodeView {
    name: String,
    pool: String,
    type_: String,
    free: u64,
    busy: u64,
    drained: bool,
    reason: String,
}

/// An organisation and its members, for operators.
pub(super) struct OrgView {
    name: String,
    category: String,
    members: Vec<String>,
}

#[derive(Template)]
#[template(path = "admin.html")]
pub(super) struct Admin<'a> {
    c: Chrome<'a>,
    calls: Vec<t::Call>,
    nodes: Vec<NodeView>,
    orgs: Vec<OrgView>,
    audit: Vec<t::AuditEntry>,
    problem: Option<String>,
}

pub(super) async fn admin_page(p: &PortalState, s: &Signed, problem: Option<String>) -> Response {
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

pub(super) async fn admin(State(p): State<PortalState>, s: Signed) -> Response {
    admin_page(&p, &s, None).await
}

/// An operator opens a call from the operations page.
pub(super) async fn open_call(
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
pub(super) struct NodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn node_act(
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
