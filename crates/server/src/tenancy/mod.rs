//! Organisations, projects, users and tokens: ordinary transactional
//! handlers on the store, outside the controller (docs/server.md, "Where a
//! resource lives").
//!
//! The scheduler reads none of them. Each write is one transaction of its
//! own on the store (with its audit line), taken one at a time; memory (the
//! [`Directory`]) changes only once that transaction is durable, so an
//! answer is never ahead of the disk. The directory is what authentication
//! and the listings read; the controller reaches it only to learn the
//! login a job's POSIX account is looked up by, and gets organisations in
//! typed commands ([`OrgRef`] in a grant).

pub mod directory;

pub use directory::*;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use gigafab_core::Category;

use crate::auth::{Principal, Role, hash_token, new_token};
use crate::error::ApiError;
use crate::isolation::Isolation;
use crate::model::{OrgReq, ProjectReq, TokenReq, UserReq};
use crate::names::{login, valid_country, valid_email, valid_name};
use crate::state::Shared;
use crate::store::{self, commit::Op};

/// `POST /orgs` (admin).
pub async fn create_org(
    s: &Shared,
    who: &Principal,
    req: OrgReq,
) -> Result<gigafab_api::Org, ApiError> {
    let t = &s.tenancy;
    if who.role != Role::Admin {
        return Err(ApiError::forbidden("only an admin creates organisations"));
    }
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let (id, category) = {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        if let Isolation::Shared {
            user,
            accepted: false,
        } = &t.isolation
            && !d.orgs.is_empty()
        {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "isolation_required",
                format!(
                    "this server runs every job as the Unix user `{user}`: organisations \
                     would not be isolated from each other; run it as root with \
                     --job-accounts FILE (docs/security.md), or start it with --single-user \
                     to accept one identity for all"
                ),
            ));
        }
        valid_name(&req.name, "name")?;
        if let Some(c) = &req.country
            && !valid_country(c)
        {
            return Err(ApiError::invalid(
                "country: two capital letters (ISO 3166-1 alpha-2, `FR`)",
            ));
        }
        if Category::parse(&req.category).is_none() {
            return Err(ApiError::invalid(format!(
                "category: `{}` is not one of startup, sme, industry, academia, public",
                req.category
            )));
        }
        if d.org_by_name(&req.name).is_some() {
            return Err(ApiError::conflict(
                "conflict",
                format!("an organisation named `{}` exists", req.name),
            ));
        }
        (d.next(ORG), req.category.to_ascii_lowercase())
    };
    let o = OrgRec {
        id,
        name: req.name.clone(),
        category,
        created_ms: now,
        country: req.country.clone(),
    };
    let v = Directory::org_view(&o);
    let detail = serde_json::to_string(&v).unwrap_or_default();
    commit(
        &s.store,
        vec![
            store::tenancy::insert_org(id, &o.name, &o.category, o.country.as_deref(), now),
            s.audit_op(who, now, "create_org", &format!("org {}", req.name), detail),
        ],
    )
    .await?;
    t.dir.write().map_err(|_| lock_err())?.orgs.insert(id, o);
    drop(_w);
    // its project space; a failure (its account missing on this machine)
    // is said again to whoever opens the space, which tries again
    if t.space_account(id).is_ok()
        && let Err(e) = crate::spaces::ensure(s, id).await
    {
        tracing::warn!("{}", e.message);
    }
    Ok(v)
}

/// The project `name` of organisation `org`, made (and audited as done by
/// `who`) if it does not exist yet: what an approved access request gets.
/// `members` (users of the organisation; those no longer in it, or
/// disabled, are left out) become its members, added to those it has.
pub async fn ensure_project(
    s: &Shared,
    who: &Principal,
    org: i64,
    name: &str,
    members: &[i64],
) -> Result<i64, ApiError> {
    let t = &s.tenancy;
    valid_name(name, "project")?;
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let (id, exists, add) = {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        let found = d
            .projects
            .values()
            .find(|p| p.org == org && p.name == name)
            .map(|p| (p.id, p.members.clone()));
        let add: BTreeSet<i64> = members
            .iter()
            .copied()
            .filter(|u| {
                d.users
                    .get(u)
                    .is_some_and(|u| u.org == Some(org) && !u.disabled)
            })
            .filter(|u| !found.as_ref().is_some_and(|f| f.1.contains(u)))
            .collect();
        match found {
            Some((id, _)) if add.is_empty() => return Ok(id),
            Some((id, _)) => (id, true, add),
            None => (d.next(PROJECT), false, add),
        }
    };
    let mut ops = Vec::new();
    if !exists {
        ops.push(store::tenancy::insert_project(id, org, name, now));
    }
    ops.extend(add.iter().map(|u| store::tenancy::add_member(id, *u, now)));
    ops.push(s.audit_op(
        who,
        now,
        if exists {
            "add_project_members"
        } else {
            "create_project"
        },
        &format!("project {id}"),
        format!(
            "for an approved access request, in org {org}; members {:?}",
            add.iter().collect::<Vec<_>>()
        ),
    ));
    commit(&s.store, ops).await?;
    let mut d = t.dir.write().map_err(|_| lock_err())?;
    let p = d.projects.entry(id).or_insert_with(|| ProjectRec {
        id,
        org,
        name: name.to_string(),
        members: BTreeSet::new(),
    });
    p.members.extend(add);
    Ok(id)
}

/// `POST /projects/{id}/members` and `DELETE /projects/{id}/members/{user}`
/// (admin; the organisation's owner): adds or removes a member.
pub async fn set_member(
    s: &Shared,
    who: &Principal,
    project: i64,
    user: i64,
    add: bool,
) -> Result<gigafab_api::Project, ApiError> {
    let t = &s.tenancy;
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let not_found =
        || ApiError::not_found("project_not_found", format!("project {project} not found"));
    {
        let d = t.dir.read().map_err(|_| lock_err())?;
        let p = d.projects.get(&project).ok_or_else(not_found)?;
        if !who.sees_org(p.org) {
            return Err(not_found());
        }
        if !(who.role == Role::Admin || who.role == Role::Owner) {
            return Err(ApiError::forbidden(
                "only an admin or the organisation's owner changes a project's members",
            ));
        }
        let u = d.users.get(&user).filter(|u| u.org == Some(p.org));
        if add && u.is_none_or(|u| u.disabled) {
            return Err(ApiError::invalid(format!(
                "user: {user} is not an enabled user of the project's organisation"
            )));
        }
        if add == p.members.contains(&user) {
            return Ok(d.project_view(p));
        }
    }
    commit(
        &s.store,
        vec![
            if add {
                store::tenancy::add_member(project, user, now)
            } else {
                store::tenancy::remove_member(project, user)
            },
            s.audit_op(
                who,
                now,
                if add {
                    "add_project_member"
                } else {
                    "remove_project_member"
                },
                &format!("project {project}"),
                format!("user {user}"),
            ),
        ],
    )
    .await?;
    let mut d = t.dir.write().map_err(|_| lock_err())?;
    let p = d.projects.get_mut(&project).ok_or_else(not_found)?;
    if add {
        p.members.insert(user);
    } else {
        p.members.remove(&user);
    }
    let p = &d.projects[&project];
    Ok(d.project_view(p))
}

/// `POST /projects` (admin; the organisation's owner).
pub async fn create_project(
    s: &Shared,
    who: &Principal,
    req: ProjectReq,
) -> Result<gigafab_api::Project, ApiError> {
    let t = &s.tenancy;
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let (id, org, members) = {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        let org = d.visible_org(who, &req.org)?;
        if !(who.role == Role::Admin || who.role == Role::Owner) {
            return Err(ApiError::forbidden(
                "only an admin or the organisation's owner creates projects",
            ));
        }
        valid_name(&req.name, "name")?;
        if d.projects
            .values()
            .any(|p| p.org == org && p.name == req.name)
        {
            return Err(ApiError::conflict(
                "conflict",
                format!("project `{}` exists", req.name),
            ));
        }
        let members = d.members_named(org, req.members.as_deref().unwrap_or(&[]), "members")?;
        (d.next(PROJECT), org, members)
    };
    let rec = ProjectRec {
        id,
        org,
        name: req.name.clone(),
        members,
    };
    let v = t.dir.read().map_err(|_| lock_err())?.project_view(&rec);
    let detail = serde_json::to_string(&v).unwrap_or_default();
    let mut ops = vec![store::tenancy::insert_project(id, org, &req.name, now)];
    ops.extend(
        rec.members
            .iter()
            .map(|u| store::tenancy::add_member(id, *u, now)),
    );
    ops.push(s.audit_op(who, now, "create_project", &format!("project {id}"), detail));
    commit(&s.store, ops).await?;
    t.dir
        .write()
        .map_err(|_| lock_err())?
        .projects
        .insert(id, rec);
    Ok(v)
}

/// `POST /users` (admin; an owner for their organisation): the user and a
/// first token, shown once.
pub async fn create_user(
    s: &Shared,
    who: &Principal,
    req: UserReq,
) -> Result<gigafab_api::NewUser, ApiError> {
    let t = &s.tenancy;
    valid_name(&req.name, "name")?;
    let email = match &req.email {
        None => None,
        Some(e) => Some(valid_email(e)?),
    };
    if let Some(sub) = &req.oidc_subject
        && (sub.is_empty() || sub.len() > 255 || sub.chars().any(|c| c.is_control()))
    {
        return Err(ApiError::invalid(
            "oidc_subject: 1 to 255 bytes, no control character",
        ));
    }
    let role_s = req.role.as_deref().unwrap_or("member");
    let role = Role::parse(role_s).ok_or_else(|| {
        ApiError::invalid(format!(
            "role: `{role_s}` is not one of admin, operator, owner, member"
        ))
    })?;
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let (uid, tid, org, stored, view) = {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        let org = match (&req.org, role.in_org()) {
            (Some(name), true) => Some(d.visible_org(who, name)?),
            (None, true) => {
                return Err(ApiError::invalid(format!(
                    "org: a {role_s} belongs to an organisation"
                )));
            }
            (Some(_), false) => {
                return Err(ApiError::invalid(format!(
                    "org: an {role_s} belongs to no organisation"
                )));
            }
            (None, false) => None,
        };
        let allowed = match who.role {
            Role::Admin => true,
            Role::Owner => role.in_org() && org == who.org_id,
            _ => false,
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "you cannot create a user with role {role_s}"
            )));
        }
        // names are unique within an organisation (or among the users of
        // none): a conflict reveals nothing of other organisations
        if d.users.values().any(|u| u.org == org && u.name == req.name) {
            return Err(ApiError::conflict(
                "conflict",
                match org {
                    Some(o) => format!(
                        "a user named `{}` exists in organisation `{}`",
                        req.name,
                        d.org_name(o)
                    ),
                    None => format!("a user named `{}` of no organisation exists", req.name),
                },
            ));
        }
        if let Some(sub) = &req.oidc_subject
            && d.users
                .values()
                .any(|u| u.oidc_subject.as_deref() == Some(sub.as_str()))
        {
            return Err(ApiError::conflict(
                "conflict",
                "another user has this oidc_subject",
            ));
        }
        let (uid, tid) = (d.next(USER), d.next(TOKEN));
        let stored = login(org.map(|o| d.org_name(o)).as_deref(), &req.name);
        let view = gigafab_api::User {
            id: gigafab_api::UserId(uid),
            name: req.name.clone(),
            org: org.map(|o| d.org_name(o)),
            role: role.as_str().into(),
            email: email.clone(),
            oidc_subject: req.oidc_subject.clone(),
        };
        (uid, tid, org, stored, view)
    };
    let token = new_token();
    let hash = hash_token(&token);
    let expires = now.plus_days(DEFAULT_TOKEN_DAYS);
    let detail = serde_json::to_string(&view).unwrap_or_default();
    commit(
        &s.store,
        vec![
            store::tenancy::insert_user(
                uid,
                stored.clone(),
                org,
                role.as_str(),
                email.as_deref(),
                req.oidc_subject.as_deref(),
                now,
            ),
            store::tenancy::insert_token(tid, uid, &hash, now, Some(expires)),
            s.audit_op(
                who,
                now,
                "create_user",
                &format!("user {}", req.name),
                detail,
            ),
        ],
    )
    .await?;
    {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        d.users.insert(
            uid,
            UserRec {
                id: uid,
                login: stored,
                name: req.name,
                org,
                role,
                disabled: false,
                email,
                oidc_subject: req.oidc_subject,
            },
        );
        d.by_hash.insert(hash.clone(), tid);
        d.tokens.insert(
            tid,
            TokenRec {
                user: uid,
                hash,
                created_ms: now,
                expires_ms: Some(expires),
            },
        );
    }
    Ok(gigafab_api::NewUser::new(view, token))
}

/// `POST /tokens`: a new token for the caller (or, for an admin or owner,
/// for a user they manage), shown once.
pub async fn create_token(
    s: &Shared,
    who: &Principal,
    req: TokenReq,
) -> Result<gigafab_api::NewToken, ApiError> {
    let t = &s.tenancy;
    let days = req.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let (target, tid) = {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        let target = match &req.user {
            None => who.user_id,
            Some(r) => {
                let id = r
                    .id()
                    .ok_or_else(|| ApiError::invalid("user: expected a user id"))?;
                d.users
                    .get(&id)
                    .filter(|u| {
                        who.role == Role::Admin
                            || u.id == who.user_id
                            || (who.role == Role::Owner && u.org.is_some() && u.org == who.org_id)
                    })
                    .ok_or_else(|| {
                        ApiError::not_found("user_not_found", format!("user {id} not found"))
                    })?
                    .id
            }
        };
        match d.users.get(&target) {
            None => {
                return Err(ApiError::not_found(
                    "user_not_found",
                    format!("user {target} not found"),
                ));
            }
            Some(u) if u.disabled => {
                return Err(ApiError::conflict(
                    "user_disabled",
                    format!("user {target} is disabled"),
                ));
            }
            Some(_) => {}
        }
        if !(days.is_finite() && days > 0.0 && days <= MAX_TOKEN_DAYS) {
            return Err(ApiError::invalid(format!(
                "expires_in_days: must be within 0..={MAX_TOKEN_DAYS}"
            )));
        }
        (target, d.next(TOKEN))
    };
    let expires = now.plus_days(days);
    let token = new_token();
    let hash = hash_token(&token);
    commit(
        &s.store,
        vec![
            store::tenancy::insert_token(tid, target, &hash, now, Some(expires)),
            s.audit_op(
                who,
                now,
                "create_token",
                &format!("token {tid}"),
                format!("for user {target}"),
            ),
        ],
    )
    .await?;
    {
        let mut d = t.dir.write().map_err(|_| lock_err())?;
        d.by_hash.insert(hash.clone(), tid);
        d.tokens.insert(
            tid,
            TokenRec {
                user: target,
                hash,
                created_ms: now,
                expires_ms: Some(expires),
            },
        );
    }
    Ok(gigafab_api::NewToken {
        id: gigafab_api::TokenId(tid),
        user: gigafab_api::UserId(target),
        token,
        expires_at: expires.rfc3339(),
    })
}

/// `DELETE /tokens/{id}`: the token stops working at once.
pub async fn revoke_token(
    s: &Shared,
    who: &Principal,
    id: i64,
) -> Result<gigafab_api::RevokedToken, ApiError> {
    let t = &s.tenancy;
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    {
        let d = t.dir.read().map_err(|_| lock_err())?;
        if !d.tokens.get(&id).is_some_and(|t| d.manages(who, t.user)) {
            return Err(ApiError::not_found(
                "token_not_found",
                format!("token {id} not found"),
            ));
        }
    }
    commit(
        &s.store,
        vec![
            store::tenancy::revoke_token(id, now),
            s.audit_op(
                who,
                now,
                "revoke_token",
                &format!("token {id}"),
                String::new(),
            ),
        ],
    )
    .await?;
    let mut d = t.dir.write().map_err(|_| lock_err())?;
    if let Some(rec) = d.tokens.remove(&id) {
        d.by_hash.remove(&rec.hash);
    }
    Ok(gigafab_api::RevokedToken {
        id: gigafab_api::TokenId(id),
        revoked: true,
    })
}

/// `POST /users/{id}/disable`: every token of theirs stops working at
/// once, and no new one can be made (admin; owner of the user's
/// organisation).
/// Answers the tokens revoked.
pub async fn disable_user(s: &Shared, who: &Principal, id: i64) -> Result<u64, ApiError> {
    let t = &s.tenancy;
    let _w = t.writes.lock().await;
    let now = s.clock.now();
    let ids: Vec<i64> = {
        let d = t.dir.read().map_err(|_| lock_err())?;
        let not_found = || ApiError::not_found("user_not_found", format!("user {id} not found"));
        let u = d.users.get(&id).ok_or_else(not_found)?;
        let same_org = u.org.is_some() && u.org == who.org_id;
        if !(who.role == Role::Admin || (who.role == Role::Owner && same_org)) {
            return Err(if who.global() || same_org {
                ApiError::forbidden(
                    "only an admin, or an owner of the user's organisation, disables users",
                )
            } else {
                not_found()
            });
        }
        if id == who.user_id {
            return Err(ApiError::invalid("you cannot disable yourself"));
        }
        d.tokens
            .iter()
            .filter(|(_, t)| t.user == id)
            .map(|(tid, _)| *tid)
            .collect()
    };
    let mut ops: Vec<Op> = ids
        .iter()
        .map(|tid| store::tenancy::revoke_token(*tid, now))
        .collect();
    ops.push(store::tenancy::disable_user(id, now));
    ops.push(s.audit_op(
        who,
        now,
        "disable_user",
        &format!("user {id}"),
        format!("{} tokens revoked", ids.len()),
    ));
    commit(&s.store, ops).await?;
    let mut d = t.dir.write().map_err(|_| lock_err())?;
    for tid in &ids {
        if let Some(rec) = d.tokens.remove(tid) {
            d.by_hash.remove(&rec.hash);
        }
    }
    if let Some(u) = d.users.get_mut(&id) {
        u.disabled = true;
    }
    Ok(ids.len() as u64)
}
