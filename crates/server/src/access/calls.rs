//! Access calls: opening one, listing them, their reviewers.

use super::*;

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
