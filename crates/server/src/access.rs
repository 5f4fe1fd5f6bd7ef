//! The one-stop shop's workflow: access calls, requests, reviews and
//! decisions. Ordinary transactional handlers on the store (docs/server.md,
//! "Where a resource lives"): each write is one transaction with its audit
//! line; an approval reaches the controller only as a typed grant.
//!
//! Access modes, after the EuroHPC AI Factories' tracks:
//! - `playground`: at most 2,000 GPU-hours and 92 days a request; approved
//!   at submission for an organisation of an eligible category;
//! - `fast-lane`: at most 50,000 GPU-hours; one technical review decides;
//! - `large-scale`: two scored reviews at least, then an operator decides.
//!
//! A request goes draft → submitted → in_review → approved | rejected, or
//! revision_requested (back to the applicant, who submits again), or
//! withdrawn by the applicant. A reviewer is assigned per call and never
//! reviews a request of their own organisation; applicants and reviewers
//! write comments on it. An approval creates the project (its members: the
//! applicant and the team) and the allocation granted to that project,
//! charged against the call's envelope, which is never exceeded.

use axum::http::StatusCode;
use gigafab_api as t;

use crate::auth::{Principal, Role};
use crate::ctl::Action;
use crate::error::ApiError;
use crate::names::valid_name;
use crate::state::Shared;
use crate::store::{self, access::CallRow, access::RequestRow, commit::Op};
use crate::time::{Ms, parse_rfc3339};

/// Most GPU-hours and days of a playground request.
pub const PLAYGROUND_MAX_GPU_H: f64 = 2_000.0;
pub const PLAYGROUND_MAX_DAYS: f64 = 92.0;
/// Most GPU-hours of a fast-lane request.
pub const FAST_LANE_MAX_GPU_H: f64 = 50_000.0;
/// Reviews a large-scale request needs before a decision.
pub const LARGE_SCALE_REVIEWS: usize = 2;

const MODES: [&str; 3] = ["playground", "fast-lane", "large-scale"];

/// States of a request not yet decided.
const OPEN: [&str; 4] = ["draft", "submitted", "in_review", "revision_requested"];
/// Most open requests of one organisation.
pub const MAX_OPEN_REQUESTS: usize = 50;

/// One access write at a time (envelope and id checks against the store,
/// then the transaction).
static WRITES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn unprocessable(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg)
}

async fn commit(s: &Shared, ops: Vec<Op>) -> Result<(), ApiError> {
    Ok(s.store.write(ops).await?)
}

fn call_state(c: &CallRow, now: Ms) -> &'static str {
    if now < c.opens_ms {
        "upcoming"
    } else if c.closes_ms.is_some_and(|e| now >= e) {
        "closed"
    } else {
        "open"
    }
}

fn call_view(c: &CallRow, reviewers: &[(i64, i64)], now: Ms) -> t::Call {
    t::Call {
        id: t::CallId(c.id),
        name: c.name.clone(),
        mode: c.mode.clone(),
        categories: serde_json::from_str(&c.categories).unwrap_or_default(),
        envelope_gpu_hours: c.envelope_gpu_s / 3600.0,
        granted_gpu_hours: c.granted_gpu_s / 3600.0,
        opens_at: c.opens_ms.rfc3339(),
        closes_at: c.closes_ms.map(Ms::rfc3339),
        state: call_state(c, now).into(),
        reviewers: reviewers
            .iter()
            .filter(|r| r.0 == c.id)
            .map(|r| t::UserId(r.1))
            .collect(),
        countries: serde_json::from_str(&c.countries).unwrap_or_default(),
        types: serde_json::from_str(&c.types).unwrap_or_default(),
    }
}

async fn request_view(s: &Shared, r: &RequestRow) -> Result<t::AccessRequest, ApiError> {
    let reviews = store::access::reviews(&s.store.pool, r.id).await?;
    // the request is one the caller sees: every comment on it
    let comments = store::access::comments(&s.store.pool, Some(r.id), true, None, 0)
        .await?
        .into_iter()
        .map(|c| c.1)
        .collect();
    Ok(view_with(r, reviews, comments))
}

/// A request's details as stored (`access_requests.details`).
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Details {
    #[serde(default)]
    gpu_hours_by_type: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    residency: Option<String>,
    #[serde(default)]
    team: Vec<String>,
}

fn view_with(
    r: &RequestRow,
    reviews: Vec<store::access::ReviewRow>,
    comments: Vec<store::access::CommentRow>,
) -> t::AccessRequest {
    let d: Details = serde_json::from_str(&r.details).unwrap_or_default();
    t::AccessRequest {
        gpu_hours_by_type: d.gpu_hours_by_type,
        residency: d.residency,
        team: d.team,
        id: t::RequestId(r.id),
        call: t::CallId(r.call_id),
        org: r.org.clone(),
        user: r.user.clone(),
        title: r.title.clone(),
        summary: r.summary.clone(),
        project: r.project.clone(),
        gpu_hours: r.gpu_s / 3600.0,
        days: r.days,
        state: r.state.clone(),
        allocation: r.allocation_id.map(t::AllocationId),
        extends: r.extends_id.map(t::AllocationId),
        reviews: reviews
            .into_iter()
            .map(|v| t::Review {
                reviewer: t::UserId(v.reviewer_id),
                reviewer_name: crate::names::short_name(v.reviewer),
                score: v.score,
                verdict: v.verdict,
                comment: v.comment,
                at: v.at_ms.rfc3339(),
            })
            .collect(),
        comments: comments
            .into_iter()
            .map(|c| t::RequestComment {
                user: crate::names::short_name(c.user),
                side: c.side,
                text: c.body,
                at: c.at_ms.rfc3339(),
            })
            .collect(),
        created_at: r.created_ms.rfc3339(),
        updated_at: r.updated_ms.rfc3339(),
    }
}

fn call_not_found(id: i64) -> ApiError {
    ApiError::not_found("call_not_found", format!("call {id} not found"))
}

/// Call `id` (404 if there is none).
async fn call_of(s: &Shared, id: i64) -> Result<CallRow, ApiError> {
    store::access::call(&s.store.pool, id)
        .await?
        .ok_or_else(|| call_not_found(id))
}

fn request_not_found(id: i64) -> ApiError {
    ApiError::not_found("request_not_found", format!("request {id} not found"))
}

/// `POST /calls` (admin, operator).
pub async fn create_call(
    s: &Shared,
    who: &Principal,
    req: t::CreateCall,
) -> Result<t::Call, ApiError> {
    if !who.global() {
        return Err(ApiError::forbidden("only an admin or operator opens calls"));
    }
    valid_name(&req.name, "name")?;
    if !MODES.contains(&req.mode.as_str()) {
        return Err(ApiError::invalid(format!(
            "mode: `{}` is not one of playground, fast-lane, large-scale",
            req.mode.chars().take(64).collect::<String>()
        )));
    }
    if req.categories.is_empty() || req.categories.len() > 5 {
        return Err(ApiError::invalid(
            "categories: 1 to 5 of startup, sme, industry, academia, public",
        ));
    }
    let mut categories = Vec::new();
    for c in &req.categories {
        if gigafab_core::Category::parse(c).is_none() {
            return Err(ApiError::invalid(format!(
                "categories: `{}` is not one of startup, sme, industry, academia, public",
                c.chars().take(64).collect::<String>()
            )));
        }
        categories.push(c.to_ascii_lowercase());
    }
    if !(req.envelope_gpu_hours.is_finite()
        && req.envelope_gpu_hours > 0.0
        && req.envelope_gpu_hours <= 1e9)
    {
        return Err(ApiError::invalid(
            "envelope_gpu_hours: must be > 0 and at most 1e9",
        ));
    }
    let now = s.clock.now();
    let at = |v: &Option<String>, what: &str| -> Result<Option<Ms>, ApiError> {
        v.as_deref()
            .map(|x| {
                parse_rfc3339(x)
                    .map(Ms)
                    .map_err(|e| ApiError::invalid(format!("{what}: {e}")))
            })
            .transpose()
    };
    let countries = req.countries.clone().unwrap_or_default();
    if countries.len() > 250 || !countries.iter().all(|c| crate::names::valid_country(c)) {
        return Err(ApiError::invalid(
            "countries: ISO 3166-1 alpha-2 codes (`FR`, `DE`), at most 250",
        ));
    }
    let types = req.types.clone().unwrap_or_default();
    if types.len() > 64 || !types.iter().all(|t| valid_type(t)) {
        return Err(ApiError::invalid(
            "types: accelerator type names (`h100`, `mi300x`), at most 64",
        ));
    }
    let opens = at(&req.opens_at, "opens_at")?.unwrap_or(now);
    let closes = at(&req.closes_at, "closes_at")?;
    if closes.is_some_and(|c| c <= opens) {
        return Err(ApiError::invalid("closes_at: must be after opens_at"));
    }
    let _w = WRITES.lock().await;
    if store::access::call_by_name(&s.store.pool, &req.name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            format!("a call named `{}` exists", req.name),
        ));
    }
    let c = CallRow {
        id: store::access::max_id(&s.store.pool, "calls").await? + 1,
        name: req.name.clone(),
        mode: req.mode.clone(),
        categories: serde_json::to_string(&categories).unwrap_or_default(),
        envelope_gpu_s: req.envelope_gpu_hours * 3600.0,
        granted_gpu_s: 0.0,
        opens_ms: opens,
        closes_ms: closes,
        countries: serde_json::to_string(&countries).unwrap_or_default(),
        types: serde_json::to_string(&types).unwrap_or_default(),
    };
    let v = call_view(&c, &[], now);
    commit(
        s,
        vec![
            store::access::insert_call(&c, now),
            s.audit_op(
                who,
                now,
                "create_call",
                &format!("call {}", c.id),
                serde_json::to_string(&v).unwrap_or_default(),
            ),
        ],
    )
    .await?;
    Ok(v)
}

/// `GET /calls` (any token): every call with its state.
pub async fn list_calls(s: &Shared) -> Result<Vec<t::Call>, ApiError> {
    let now = s.clock.now();
    let reviewers = store::access::reviewers(&s.store.pool).await?;
    Ok(store::access::calls(&s.store.pool)
        .await?
        .iter()
        .map(|c| call_view(c, &reviewers, now))
        .collect())
}

/// `POST /calls/{id}/reviewers` (admin, operator): `user` reviews the
/// call's requests (never those of their own organisation).
pub async fn add_reviewer(
    s: &Shared,
    who: &Principal,
    call: i64,
    req: t::AddReviewer,
) -> Result<t::Call, ApiError> {
    if !who.global() {
        return Err(ApiError::forbidden(
            "only an admin or operator assigns reviewers",
        ));
    }
    let user = req.user.0;
    if s.tenancy.user_org(user).is_none() {
        return Err(ApiError::not_found(
            "user_not_found",
            format!("user {user} not found"),
        ));
    }
    let _w = WRITES.lock().await;
    let c = call_of(s, call).await?;
    let mut reviewers = store::access::reviewers(&s.store.pool).await?;
    if reviewers.contains(&(call, user)) {
        return Err(ApiError::conflict(
            "conflict",
            format!("user {user} already reviews call {call}"),
        ));
    }
    let now = s.clock.now();
    let mut ops = vec![
        store::access::insert_reviewer(call, user),
        s.audit_op(
            who,
            now,
            "add_reviewer",
            &format!("call {call}"),
            format!("user {user}"),
        ),
    ];
    ops.extend(
        crate::notify::mails(
            s,
            &[user],
            &format!("[gigafab] you review call {}", c.name),
            &format!(
                "You review the requests of access call {} ({}), except those of your own organisation.\n",
                c.name, c.mode
            ),
        ),
    );
    commit(s, ops).await?;
    reviewers.push((call, user));
    Ok(call_view(&c, &reviewers, now))
}

/// Whether `who` may see request `r`: its organisation, the reviewers of
/// its call once it is submitted (a draft is its applicant's alone),
/// admins and operators.
fn sees(who: &Principal, r: &RequestRow, reviewers: &[(i64, i64)]) -> bool {
    who.sees_org(r.org_id) || (r.state != "draft" && reviewers.contains(&(r.call_id, who.user_id)))
}

async fn visible_request(
    s: &Shared,
    who: &Principal,
    id: i64,
) -> Result<(RequestRow, Vec<(i64, i64)>), ApiError> {
    let r = store::access::request(&s.store.pool, id)
        .await?
        .ok_or_else(|| request_not_found(id))?;
    let reviewers = store::access::reviewers(&s.store.pool).await?;
    if !sees(who, &r, &reviewers) {
        return Err(request_not_found(id));
    }
    Ok((r, reviewers))
}

/// `GET /requests`: those the caller may see.
pub async fn list_requests(s: &Shared, who: &Principal) -> Result<Vec<t::AccessRequest>, ApiError> {
    // the visible ones in one query, their reviews in another
    let rows =
        store::access::visible_requests(&s.store.pool, who.global(), who.org_id, who.user_id)
            .await?;
    let mut reviews: std::collections::HashMap<i64, Vec<store::access::ReviewRow>> =
        std::collections::HashMap::new();
    if !rows.is_empty() {
        for (req, v) in
            store::access::visible_reviews(&s.store.pool, who.global(), who.org_id, who.user_id)
                .await?
        {
            reviews.entry(req).or_default().push(v);
        }
    }
    let mut comments: std::collections::HashMap<i64, Vec<store::access::CommentRow>> =
        std::collections::HashMap::new();
    if !rows.is_empty() {
        for (req, c) in
            store::access::comments(&s.store.pool, None, who.global(), who.org_id, who.user_id)
                .await?
        {
            comments.entry(req).or_default().push(c);
        }
    }
    Ok(rows
        .iter()
        .map(|r| {
            view_with(
                r,
                reviews.remove(&r.id).unwrap_or_default(),
                comments.remove(&r.id).unwrap_or_default(),
            )
        })
        .collect())
}

/// Most comments on one request.
pub const MAX_COMMENTS: i64 = 500;

/// `POST /requests/{id}/comments`: the applicant organisation's users,
/// the call's reviewers, admins and operators write to each other; each
/// comment is audited.
pub async fn comment_request(
    s: &Shared,
    who: &Principal,
    id: i64,
    req: t::CreateComment,
) -> Result<t::AccessRequest, ApiError> {
    let text = req.text.trim();
    if text.is_empty() || text.len() > 10_000 {
        return Err(ApiError::invalid("text: 1 to 10,000 bytes"));
    }
    let _w = WRITES.lock().await;
    let (r, reviewers) = visible_request(s, who, id).await?;
    let side = if who.org_id == Some(r.org_id) && who.role.in_org() {
        "applicant"
    } else if reviewers.contains(&(r.call_id, who.user_id)) {
        "reviewer"
    } else {
        "operator"
    };
    let pool = &s.store.pool;
    let had = store::access::comments(pool, Some(id), true, None, 0)
        .await?
        .len() as i64;
    if had >= MAX_COMMENTS {
        return Err(ApiError::conflict(
            "too_many_comments",
            format!("request {id} has {MAX_COMMENTS} comments, the most it takes"),
        ));
    }
    let cid = store::access::max_id(pool, "request_comments").await? + 1;
    let now = s.clock.now();
    commit(
        s,
        vec![
            store::access::insert_comment(cid, id, who.user_id, side, text, now),
            s.audit_op(
                who,
                now,
                "comment_request",
                &format!("request {id}"),
                format!("{side} comment {cid}"),
            ),
        ],
    )
    .await?;
    let r = store::access::request(pool, id)
        .await?
        .ok_or_else(|| request_not_found(id))?;
    request_view(s, &r).await
}

/// `GET /requests/{id}`.
pub async fn get_request(
    s: &Shared,
    who: &Principal,
    id: i64,
) -> Result<t::AccessRequest, ApiError> {
    let (r, _) = visible_request(s, who, id).await?;
    request_view(s, &r).await
}

/// `POST /requests` (an organisation's owner or member): a draft.
pub async fn create_request(
    s: &Shared,
    who: &Principal,
    req: t::CreateRequest,
    key: Option<String>,
) -> Result<t::AccessRequest, ApiError> {
    let Some(org) = who.org_id.filter(|_| who.role.in_org()) else {
        return Err(ApiError::forbidden(
            "only an organisation's owner or member applies for access",
        ));
    };
    let title = req.title.trim();
    if title.is_empty() || title.len() > 200 {
        return Err(ApiError::invalid("title: 1 to 200 bytes"));
    }
    let summary = req.summary.clone().unwrap_or_default();
    if summary.len() > 10_000 {
        return Err(ApiError::invalid("summary: at most 10,000 bytes"));
    }
    let project = match (req.extends, req.project.clone()) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "project: an extension request has none (it extends its allocation)",
            ));
        }
        (Some(_), None) => String::new(),
        (None, Some(p)) => {
            valid_name(&p, "project")?;
            p
        }
        (None, None) => {
            return Err(ApiError::invalid(
                "project: the project a new allocation is for",
            ));
        }
    };
    if req.extends.is_some() {
        // an extension adds GPU-hours, days, or both
        if !(req.gpu_hours.is_finite() && (0.0..=1e9).contains(&req.gpu_hours)) {
            return Err(ApiError::invalid("gpu_hours: must be within 0..=1e9"));
        }
        if !(req.days.is_finite() && (0.0..=3650.0).contains(&req.days)) {
            return Err(ApiError::invalid("days: must be within 0..=3650"));
        }
        if req.gpu_hours == 0.0 && req.days == 0.0 {
            return Err(ApiError::invalid(
                "gpu_hours: an extension adds GPU-hours, days, or both",
            ));
        }
    } else {
        if !(req.gpu_hours.is_finite() && req.gpu_hours > 0.0 && req.gpu_hours <= 1e9) {
            return Err(ApiError::invalid("gpu_hours: must be > 0 and at most 1e9"));
        }
        if !(req.days.is_finite() && req.days > 0.0 && req.days <= 3650.0) {
            return Err(ApiError::invalid("days: must be > 0 and at most 3650"));
        }
    }
    let call = call_of(s, req.call.0).await?;
    check_fits_call(s, &call, org, req.gpu_hours, req.days)?;
    let details = request_details(s, &call, org, &req)?;
    if let Some(a) = req.extends {
        // the allocation must be one of the applicant's organisation (the
        // controller answers only what the caller sees)
        let (_, v) = s.ask(who.clone(), Action::GetAlloc(a)).await?;
        if s.tenancy.org_named(&v.allocation()?.org).map(|o| o.id) != Some(org) {
            return Err(ApiError::not_found(
                "allocation_not_found",
                format!("allocation {} not found", a.0),
            ));
        }
        // playground grants are small and approved with no person in the
        // loop: they are not extended (a fast-lane request is the way on)
        if call.mode == "playground" {
            return Err(unprocessable(
                "not_eligible",
                "a playground call does not extend allocations; apply to a fast-lane or large-scale call",
            ));
        }
        // an allocation is extended through the call that granted it (a
        // fast-lane review does not extend a large-scale grant)
        let granted_here = store::access::requests(&s.store.pool)
            .await?
            .iter()
            .any(|q| q.call_id == call.id && q.state == "approved" && q.allocation_id == Some(a.0));
        if !granted_here {
            return Err(unprocessable(
                "not_eligible",
                format!(
                    "allocation {} was not granted through call {}: extend it through the call that granted it",
                    a.0, call.id
                ),
            ));
        }
    }
    let now = s.clock.now();
    let _w = WRITES.lock().await;
    // a retry racing its first try: that request (under the lock)
    if let Some(k) = &key
        && let Some((_, id)) = store::idempotency::get(&s.store.pool, who.user_id, k, now).await?
    {
        return get_request(s, who, id).await;
    }
    let open = store::access::requests(&s.store.pool)
        .await?
        .iter()
        .filter(|r| r.org_id == org && OPEN.contains(&r.state.as_str()))
        .count();
    if open >= MAX_OPEN_REQUESTS {
        return Err(ApiError::conflict(
            "too_many_requests",
            format!(
                "your organisation has {open} open requests (at most {MAX_OPEN_REQUESTS}); withdraw some first"
            ),
        ));
    }
    let r = RequestRow {
        id: store::access::max_id(&s.store.pool, "access_requests").await? + 1,
        call_id: call.id,
        org_id: org,
        org: s.tenancy.org_name(org),
        user_id: who.user_id,
        user: who.name.clone(),
        title: title.to_string(),
        summary,
        project,
        gpu_s: req.gpu_hours * 3600.0,
        days: req.days,
        state: "draft".into(),
        allocation_id: None,
        created_ms: now,
        updated_ms: now,
        extends_id: req.extends.map(|a| a.0),
        details,
    };
    let mut ops = vec![
        store::access::insert_request(&r),
        s.audit_op(
            who,
            now,
            "create_request",
            &format!("request {}", r.id),
            format!("call {}, {:.1} GPU-hours", call.id, req.gpu_hours),
        ),
    ];
    if let Some(k) = &key {
        ops.push(store::idempotency::insert(
            who.user_id,
            k,
            store::idempotency::Kind::Request,
            r.id,
            now,
        ));
    }
    commit(s, ops).await?;
    request_view(s, &r).await
}

/// An accelerator type's name: 1 to 32 of a-z, 0-9, `-`, `_`.
fn valid_type(t: &str) -> bool {
    (1..=32).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A request's split among accelerator types (the call's, adding up to
/// its GPU-hours), residency needs and team (users of its organisation),
/// checked and stored as JSON.
fn request_details(
    s: &Shared,
    call: &CallRow,
    org: i64,
    req: &t::CreateRequest,
) -> Result<String, ApiError> {
    let offered: Vec<String> = serde_json::from_str(&call.types).unwrap_or_default();
    let by_type = req.gpu_hours_by_type.clone().unwrap_or_default();
    for (ty, h) in &by_type {
        if !valid_type(ty) || !(offered.is_empty() || offered.contains(ty)) {
            return Err(ApiError::invalid(format!(
                "gpu_hours_by_type: call {} does not offer `{}`{}",
                call.id,
                ty.chars().take(32).collect::<String>(),
                if offered.is_empty() {
                    String::new()
                } else {
                    format!(" (it offers {})", offered.join(", "))
                }
            )));
        }
        if !(h.is_finite() && *h > 0.0) {
            return Err(ApiError::invalid(format!(
                "gpu_hours_by_type: {ty} must be > 0"
            )));
        }
    }
    let sum: f64 = by_type.values().sum();
    if !by_type.is_empty() && (sum - req.gpu_hours).abs() > 1e-6 * req.gpu_hours.max(1.0) {
        return Err(ApiError::invalid(format!(
            "gpu_hours_by_type: adds up to {sum}, not gpu_hours {}",
            req.gpu_hours
        )));
    }
    let residency = req
        .residency
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty());
    if residency.is_some_and(|r| r.len() > 200 || r.chars().any(char::is_control)) {
        return Err(ApiError::invalid(
            "residency: one line of at most 200 bytes",
        ));
    }
    let team = req.team.clone().unwrap_or_default();
    if team.len() > 50 {
        return Err(ApiError::invalid("team: at most 50 users"));
    }
    for name in &team {
        if s.tenancy.member_named(org, name).is_none() {
            return Err(ApiError::invalid(format!(
                "team: `{}` is not a user of your organisation",
                name.chars().take(64).collect::<String>()
            )));
        }
    }
    Ok(serde_json::to_string(&Details {
        gpu_hours_by_type: by_type,
        residency: residency.map(str::to_string),
        team,
    })
    .unwrap_or_default())
}

/// A request of organisation `org` for `gpu_h` over `days` fits call `c`:
/// open, the organisation's category eligible, within the mode's limits.
fn check_fits_call(
    s: &Shared,
    c: &CallRow,
    org: i64,
    gpu_h: f64,
    days: f64,
) -> Result<(), ApiError> {
    let now = s.clock.now();
    match call_state(c, now) {
        "open" => {}
        st => {
            return Err(unprocessable(
                "call_closed",
                format!("call {} is {st}", c.id),
            ));
        }
    }
    let category = s
        .tenancy
        .org_ref(org)
        .map(|o| o.category.as_str().to_string())
        .unwrap_or_default();
    let countries: Vec<String> = serde_json::from_str(&c.countries).unwrap_or_default();
    if !countries.is_empty() {
        let country = s.tenancy.org_country(org);
        if !country.as_ref().is_some_and(|x| countries.contains(x)) {
            return Err(unprocessable(
                "not_eligible",
                format!(
                    "call {} is for organisations of {}; yours is {}",
                    c.id,
                    countries.join(", "),
                    country.as_deref().unwrap_or("of no recorded country")
                ),
            ));
        }
    }
    let cats: Vec<String> = serde_json::from_str(&c.categories).unwrap_or_default();
    if !cats.contains(&category) {
        return Err(unprocessable(
            "not_eligible",
            format!(
                "call {} is for {}; your organisation is {category}",
                c.id,
                cats.join(", ")
            ),
        ));
    }
    let (max_h, max_days) = match c.mode.as_str() {
        "playground" => (PLAYGROUND_MAX_GPU_H, PLAYGROUND_MAX_DAYS),
        "fast-lane" => (FAST_LANE_MAX_GPU_H, 3650.0),
        _ => (f64::INFINITY, 3650.0),
    };
    if gpu_h > max_h || days > max_days {
        return Err(unprocessable(
            "over_mode_limit",
            format!(
                "a {} request is at most {max_h} GPU-hours over {max_days} days",
                c.mode
            ),
        ));
    }
    Ok(())
}

/// The applicant's own request, for a transition only its organisation's
/// owners and members make.
async fn own_request(s: &Shared, who: &Principal, id: i64) -> Result<RequestRow, ApiError> {
    let (r, _) = visible_request(s, who, id).await?;
    if !(who.role.in_org() && who.org_id == Some(r.org_id)) {
        return Err(ApiError::forbidden(
            "only the applicant organisation's owners and members do this",
        ));
    }
    Ok(r)
}

fn wrong_state(r: &RequestRow, what: &str) -> ApiError {
    ApiError::conflict(
        "wrong_state",
        format!("request {} is {}: it cannot be {what}", r.id, r.state),
    )
}

/// `POST /requests/{id}/submit`: a draft (or a request sent back for
/// revision) goes to review; a playground request of an eligible
/// organisation is approved at once.
pub async fn submit_request(
    s: &Shared,
    who: &Principal,
    id: i64,
) -> Result<t::AccessRequest, ApiError> {
    let _w = WRITES.lock().await;
    let r = own_request(s, who, id).await?;
    if !(r.state == "draft" || r.state == "revision_requested") {
        return Err(wrong_state(&r, "submitted"));
    }
    let call = call_of(s, r.call_id).await?;
    check_fits_call(s, &call, r.org_id, r.gpu_s / 3600.0, r.days)?;
    let now = s.clock.now();
    let mut ops = Vec::new();
    if r.state == "revision_requested" {
        // a new round of reviews (the earlier one is in the audit log)
        ops.push(store::access::clear_reviews(id));
    }
    ops.extend([
        store::access::set_state(id, "submitted", None, now),
        s.audit_op(
            who,
            now,
            "submit_request",
            &format!("request {id}"),
            String::new(),
        ),
    ]);
    if call.mode != "playground" {
        let reviewers: Vec<i64> = store::access::reviewers(&s.store.pool)
            .await?
            .into_iter()
            .filter(|&(c, u)| c == call.id && s.tenancy.user_org(u) != Some(Some(r.org_id)))
            .map(|(_, u)| u)
            .collect();
        ops.extend(crate::notify::mails(
            s,
            &reviewers,
            &format!(
                "[gigafab] request {id} submitted to call {}: {}",
                call.name, r.title
            ),
            &format!(
                "{} of {} asks {:.0} GPU-hours over {} days in call {} ({}).\n\n{}\n",
                r.user,
                r.org,
                r.gpu_s / 3600.0,
                r.days,
                call.name,
                call.mode,
                r.summary
            ),
        ));
    }
    commit(s, ops).await?;
    if call.mode == "playground" {
        approve(s, who, id, "approved at submission (playground)").await?;
    }
    get_request(s, who, id).await
}

/// `POST /requests/{id}/withdraw`: the applicant takes it back.
pub async fn withdraw_request(
    s: &Shared,
    who: &Principal,
    id: i64,
) -> Result<t::AccessRequest, ApiError> {
    let _w = WRITES.lock().await;
    let r = own_request(s, who, id).await?;
    if !["draft", "submitted", "in_review", "revision_requested"].contains(&r.state.as_str()) {
        return Err(wrong_state(&r, "withdrawn"));
    }
    let now = s.clock.now();
    commit(
        s,
        vec![
            store::access::set_state(id, "withdrawn", None, now),
            s.audit_op(
                who,
                now,
                "withdraw_request",
                &format!("request {id}"),
                String::new(),
            ),
        ],
    )
    .await?;
    get_request(s, who, id).await
}

/// `POST /requests/{id}/reviews`: an assigned reviewer scores it. In a
/// fast-lane (or playground) call the review decides: approve, reject, or
/// send it back for revision; a large-scale request waits for an
/// operator's decision.
pub async fn review_request(
    s: &Shared,
    who: &Principal,
    id: i64,
    req: t::CreateReview,
) -> Result<t::AccessRequest, ApiError> {
    if !(1..=5).contains(&req.score) {
        return Err(ApiError::invalid("score: 1 to 5"));
    }
    if !["approve", "reject", "revise"].contains(&req.verdict.as_str()) {
        return Err(ApiError::invalid("verdict: approve, reject or revise"));
    }
    let comment = req.comment.unwrap_or_default();
    if comment.len() > 10_000 {
        return Err(ApiError::invalid("comment: at most 10,000 bytes"));
    }
    let _w = WRITES.lock().await;
    let (r, reviewers) = visible_request(s, who, id).await?;
    if !reviewers.contains(&(r.call_id, who.user_id)) {
        return Err(ApiError::forbidden(format!(
            "you are not a reviewer of call {}",
            r.call_id
        )));
    }
    if who.org_id == Some(r.org_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "conflict_of_interest",
            "a reviewer never reviews a request of their own organisation",
        ));
    }
    if !(r.state == "submitted" || r.state == "in_review") {
        return Err(wrong_state(&r, "reviewed"));
    }
    if store::access::reviews(&s.store.pool, id)
        .await?
        .iter()
        .any(|v| v.reviewer_id == who.user_id)
    {
        return Err(ApiError::conflict(
            "conflict",
            format!("you have reviewed request {id}"),
        ));
    }
    let call = call_of(s, r.call_id).await?;
    let now = s.clock.now();
    let decides = call.mode != "large-scale";
    let next = match (decides, req.verdict.as_str()) {
        (true, "reject") => "rejected",
        (true, "revise") => "revision_requested",
        _ => "in_review",
    };
    let mut ops = vec![
        store::access::insert_review(id, who.user_id, req.score, &req.verdict, &comment, now),
        store::access::set_state(id, next, None, now),
        s.audit_op(
            who,
            now,
            "review_request",
            &format!("request {id}"),
            format!("{} ({})", req.verdict, req.score),
        ),
    ];
    if next != "in_review" {
        ops.extend(decided_mail(s, &r, next, &comment));
    }
    commit(s, ops).await?;
    if decides && req.verdict == "approve" {
        approve(s, who, id, "approved by its technical review").await?;
    }
    get_request(s, who, id).await
}

/// `POST /requests/{id}/decision` (admin, operator): the decision on a
/// reviewed request; a large-scale one needs its two reviews first.
pub async fn decide_request(
    s: &Shared,
    who: &Principal,
    id: i64,
    req: t::CreateDecision,
) -> Result<t::AccessRequest, ApiError> {
    if !who.global() {
        return Err(ApiError::forbidden(
            "only an admin or operator decides on requests",
        ));
    }
    let _w = WRITES.lock().await;
    let (r, _) = visible_request(s, who, id).await?;
    if r.state != "in_review" {
        return Err(wrong_state(&r, "decided"));
    }
    let call = call_of(s, r.call_id).await?;
    let n = store::access::reviews(&s.store.pool, id).await?.len();
    if call.mode == "large-scale" && n < LARGE_SCALE_REVIEWS {
        return Err(ApiError::conflict(
            "reviews_missing",
            format!(
                "a large-scale request needs {LARGE_SCALE_REVIEWS} reviews before a decision; it has {n}"
            ),
        ));
    }
    let comment = req.comment.unwrap_or_default();
    if comment.len() > 10_000 {
        return Err(ApiError::invalid("comment: at most 10,000 bytes"));
    }
    if req.approve {
        approve(s, who, id, &format!("approved by decision: {comment}")).await?;
    } else {
        let now = s.clock.now();
        let mut ops = decided_mail(s, &r, "rejected", &comment);
        ops.push(store::access::set_state(id, "rejected", None, now));
        ops.push(s.audit_op(
            who,
            now,
            "reject_request",
            &format!("request {id}"),
            comment,
        ));
        commit(s, ops).await?;
    }
    get_request(s, who, id).await
}

/// The applicant's notification of a decision on `r`.
fn decided_mail(s: &Shared, r: &RequestRow, state: &str, detail: &str) -> Vec<Op> {
    let word = state.replace('_', " ");
    crate::notify::mails(
        s,
        &[r.user_id],
        &format!("[gigafab] request {} {word}: {}", r.id, r.title),
        &format!("Your access request {} is {word}.\n\n{detail}\n", r.id),
    )
}

/// Approves request `id` (the caller holds [`WRITES`]): charges the call's
/// envelope, makes the project, and grants the allocation through the
/// controller. A grant that fails gives the envelope back and leaves the
/// request as it was.
async fn approve(s: &Shared, who: &Principal, id: i64, why: &str) -> Result<(), ApiError> {
    let r = store::access::request(&s.store.pool, id)
        .await?
        .ok_or_else(|| request_not_found(id))?;
    let call = call_of(s, r.call_id).await?;
    if call.granted_gpu_s + r.gpu_s > call.envelope_gpu_s + 1e-6 {
        return Err(ApiError::conflict(
            "envelope_exceeded",
            format!(
                "call {} has {:.1} of its {:.1} GPU-hours left; request {id} asks {:.1}",
                call.id,
                (call.envelope_gpu_s - call.granted_gpu_s).max(0.0) / 3600.0,
                call.envelope_gpu_s / 3600.0,
                r.gpu_s / 3600.0
            ),
        ));
    }
    if s.tenancy.org_ref(r.org_id).is_none() {
        return Err(request_not_found(id));
    }
    if call.mode == "playground" {
        // approved without a person: the cap is per organisation and call,
        // not per request
        let had: f64 = store::access::requests(&s.store.pool)
            .await?
            .iter()
            .filter(|q| q.call_id == call.id && q.org_id == r.org_id && q.state == "approved")
            .map(|q| q.gpu_s)
            .sum();
        if had + r.gpu_s > PLAYGROUND_MAX_GPU_H * 3600.0 + 1e-6 {
            return Err(ApiError::conflict(
                "playground_limit",
                format!(
                    "your organisation has {:.0} of the {PLAYGROUND_MAX_GPU_H} playground GPU-hours of call {}; this request asks {:.0} more",
                    had / 3600.0,
                    call.id,
                    r.gpu_s / 3600.0
                ),
            ));
        }
    }
    let now = s.clock.now();
    commit(
        s,
        vec![
            store::access::set_granted(call.id, call.granted_gpu_s + r.gpu_s),
            store::access::set_state(id, "approved", None, now),
            s.audit_op(
                who,
                now,
                "approve_request",
                &format!("request {id}"),
                why.to_string(),
            ),
        ],
    )
    .await?;
    // the grant is the workflow's, made with the approver's name
    let grantor = Principal {
        role: Role::Admin,
        org_id: None,
        ..who.clone()
    };
    let granted = grant_for(s, &grantor, &r).await;
    let now = s.clock.now();
    match granted {
        Ok(alloc) => {
            let mut ops = vec![store::access::set_state(id, "approved", Some(alloc), now)];
            let what = if r.extends_id.is_some() {
                format!(
                    "allocation {alloc} extended by {:.0} GPU-hours and {} days",
                    r.gpu_s / 3600.0,
                    r.days
                )
            } else {
                format!(
                    "allocation {alloc}: {:.0} GPU-hours for {} days, project {}",
                    r.gpu_s / 3600.0,
                    r.days,
                    r.project
                )
            };
            ops.extend(decided_mail(s, &r, "approved", &what));
            commit(s, ops).await?;
            Ok(())
        }
        Err(e) => {
            commit(
                s,
                vec![
                    store::access::set_granted(call.id, call.granted_gpu_s),
                    store::access::set_state(id, &r.state, None, now),
                    s.audit_op(
                        who,
                        now,
                        "approve_request_failed",
                        &format!("request {id}"),
                        e.to_string(),
                    ),
                ],
            )
            .await?;
            Err(e)
        }
    }
}

/// The project and the allocation (`request-ID`) of approved request
/// `r`, granted as `grantor` through the controller; the allocation's id.
async fn grant_for(s: &Shared, grantor: &Principal, r: &RequestRow) -> Result<i64, ApiError> {
    if let Some(alloc) = r.extends_id {
        // an extension: applied once (the store records it with the
        // request, in the transaction that changes the allocation)
        if !store::access::extension_applied(&s.store.pool, r.id).await? {
            s.ask(
                grantor.clone(),
                Action::Extend(crate::ctl::Extension {
                    allocation: alloc,
                    request: r.id,
                    gpu_hours: r.gpu_s / 3600.0,
                    days: r.days,
                }),
            )
            .await?;
        }
        return Ok(alloc);
    }
    let org = s
        .tenancy
        .org_ref(r.org_id)
        .ok_or_else(|| request_not_found(r.id))?;
    // its members: the applicant and the team (users of the organisation
    // when the request was made; one who left since is not added)
    let d: Details = serde_json::from_str(&r.details).unwrap_or_default();
    let mut members = vec![r.user_id];
    members.extend(
        d.team
            .iter()
            .filter_map(|n| s.tenancy.member_named(r.org_id, n)),
    );
    crate::tenancy::ensure_project(s, grantor, r.org_id, &r.project, &members).await?;
    let req = crate::model::AllocReq {
        project: Some(r.project.clone()),
        org: org.name.clone(),
        gpu_hours: r.gpu_s / 3600.0,
        days: Some(r.days),
        valid_from: None,
        qos_priority: None,
        name: Some(format!("request-{}", r.id)),
    };
    let (_, v) = s.ask(grantor.clone(), Action::Grant(req, org)).await?;
    Ok(v.allocation()?.id.0)
}

/// Finishes approvals a stop cut between their two transactions (run once
/// the controller runs): a request recorded approved without its
/// allocation gets the one granted for it (`request-ID`) if the grant was
/// made, else the grant now (its envelope was charged already).
pub async fn repair(s: &Shared) -> Result<usize, ApiError> {
    let _w = WRITES.lock().await;
    let cut: Vec<RequestRow> = store::access::requests(&s.store.pool)
        .await?
        .into_iter()
        .filter(|r| r.state == "approved" && r.allocation_id.is_none())
        .collect();
    if cut.is_empty() {
        return Ok(0);
    }
    for r in &cut {
        // the audit names it gigafab's (user_id is the applicant's, whose
        // request it finishes: audit lines carry a user)
        let system = Principal {
            user_id: r.user_id,
            name: "gigafab".into(),
            login: "gigafab".into(),
            role: Role::Admin,
            org_id: None,
            token_id: 0,
            expires_ms: None,
        };
        let (_, list) = s.ask(system.clone(), Action::ListAllocs).await?;
        let name = format!("request-{}", r.id);
        let found = match r.extends_id {
            Some(a) => store::access::extension_applied(&s.store.pool, r.id)
                .await?
                .then_some(a),
            None => list
                .allocations()?
                .items
                .into_iter()
                .find(|a| a.name == name && a.org == r.org)
                .map(|a| a.id.0),
        };
        let alloc = match found {
            Some(a) => a,
            None => match grant_for(s, &system, r).await {
                Ok(a) => a,
                Err(e) => {
                    // the others are finished all the same
                    tracing::error!("request {}: its approval cannot be finished: {e}", r.id);
                    continue;
                }
            },
        };
        let now = s.clock.now();
        commit(
            s,
            vec![
                store::access::set_state(r.id, "approved", Some(alloc), now),
                s.audit_op(
                    &system,
                    now,
                    "approve_request_repaired",
                    &format!("request {}", r.id),
                    format!(
                        "allocation {alloc} ({})",
                        if found.is_some() {
                            "granted before the stop"
                        } else {
                            "granted now"
                        }
                    ),
                ),
            ],
        )
        .await?;
    }
    Ok(cut.len())
}
