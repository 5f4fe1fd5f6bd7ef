//! Access requests: drafts, comments, submission (a playground request is approved at once) and withdrawal.

use super::*;

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
pub(super) fn valid_type(t: &str) -> bool {
    (1..=32).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// A request's split among accelerator types (the call's, adding up to
/// its GPU-hours), residency needs and team (users of its organisation),
/// checked and stored as JSON.
pub(super) fn request_details(
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
pub(super) fn check_fits_call(
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
