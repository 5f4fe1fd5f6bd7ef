//! Reviews and decisions, and what an approval does: the project, the allocation granted through the controller, the notices; `repair` finishes approvals a stop cut.

use super::*;

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
pub(super) fn decided_mail(s: &Shared, r: &RequestRow, state: &str, detail: &str) -> Vec<Op> {
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
pub(super) async fn approve(
    s: &Shared,
    who: &Principal,
    id: i64,
    why: &str,
) -> Result<(), ApiError> {
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
pub(super) async fn grant_for(
    s: &Shared,
    grantor: &Principal,
    r: &RequestRow,
) -> Result<i64, ApiError> {
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
