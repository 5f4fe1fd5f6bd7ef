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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use axum::http::StatusCode;
use gigafab_core::Category;
use serde_json::{Value, json};

use crate::auth::{Principal, Role, hash_token, new_token};
use crate::ctl::{Isolation, Shared, login, short_name, valid_name};
use crate::error::ApiError;
use crate::model::{OrgReq, ProjectReq, TokenReq, UserReq};
use crate::store::{self, Store, commit::Op};
use crate::time::Ms;

/// Days a token lives unless its request says otherwise.
pub const DEFAULT_TOKEN_DAYS: f64 = 90.0;
/// Longest life of a token, days.
pub const MAX_TOKEN_DAYS: f64 = 3650.0;

/// An organisation as a command to the controller names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRef {
    pub id: i64,
    pub name: String,
    pub category: Category,
}

struct OrgRec {
    id: i64,
    name: String,
    category: String,
    created_ms: Ms,
    country: Option<String>,
}

struct ProjectRec {
    id: i64,
    org: i64,
    name: String,
    /// Its members; none: open to every member of its organisation.
    members: BTreeSet<i64>,
}

struct UserRec {
    id: i64,
    name: String,
    /// `ORG/NAME`, or the name of a user of no organisation.
    login: String,
    org: Option<i64>,
    role: Role,
    /// Disabled: no token of theirs works, none can be made.
    disabled: bool,
    /// Where notifications go.
    email: Option<String>,
    /// Its identity at the site's OpenID Connect provider.
    oidc_subject: Option<String>,
}

struct TokenRec {
    user: i64,
    hash: String,
    created_ms: Ms,
    expires_ms: Option<Ms>,
}

/// What the store holds of tenancy, in memory: written only after the
/// store's transaction committed.
#[derive(Default)]
struct Directory {
    orgs: BTreeMap<i64, OrgRec>,
    projects: BTreeMap<i64, ProjectRec>,
    users: BTreeMap<i64, UserRec>,
    /// Live tokens (not revoked) by id, and their ids by hash.
    tokens: BTreeMap<i64, TokenRec>,
    by_hash: HashMap<String, i64>,
    /// The highest id used so far, per table.
    last: [i64; 4],
}

const ORG: usize = 0;
const PROJECT: usize = 1;
const USER: usize = 2;
const TOKEN: usize = 3;

/// The tenancy resources of a server.
pub struct Tenancy {
    dir: RwLock<Directory>,
    /// One write at a time: validation against the directory, the store's
    /// transaction, then the directory.
    writes: tokio::sync::Mutex<()>,
    isolation: Isolation,
}

fn lock_err() -> ApiError {
    ApiError::unavailable("the tenancy directory is unusable after a failure")
}

impl Directory {
    fn next(&mut self, table: usize) -> i64 {
        self.last[table] += 1;
        self.last[table]
    }

    fn org_name(&self, id: i64) -> String {
        self.orgs
            .get(&id)
            .map_or_else(String::new, |o| o.name.clone())
    }

    fn org_by_name(&self, name: &str) -> Option<&OrgRec> {
        self.orgs.values().find(|o| o.name == name)
    }

    fn login(&self, user: i64) -> Option<String> {
        self.users.get(&user).map(|u| u.login.clone())
    }

    fn principal(&self, token_id: i64) -> Option<Principal> {
        let t = self.tokens.get(&token_id)?;
        let u = self.users.get(&t.user).filter(|u| !u.disabled)?;
        Some(Principal {
            user_id: u.id,
            name: u.name.clone(),
            login: u.login.clone(),
            role: u.role,
            org_id: u.org,
            token_id,
            expires_ms: t.expires_ms,
        })
    }

    /// The organisation `name` if the caller may act on it (404 otherwise).
    fn visible_org(&self, who: &Principal, name: &str) -> Result<i64, ApiError> {
        match self.org_by_name(name) {
            Some(o) if who.sees_org(o.id) => Ok(o.id),
            _ => Err(ApiError::not_found(
                "org_not_found",
                format!("organisation `{name}` not found"),
            )),
        }
    }

    /// Whether `who` may manage (list, revoke, disable) the tokens of
    /// `user`: an admin, the user themself, or an owner of the user's
    /// organisation.
    fn manages(&self, who: &Principal, user: i64) -> bool {
        who.role == Role::Admin
            || who.user_id == user
            || (who.role == Role::Owner
                && self
                    .users
                    .get(&user)
                    .is_some_and(|u| u.org.is_some() && u.org == who.org_id))
    }

    fn project_view(&self, p: &ProjectRec) -> gigafab_api::Project {
        gigafab_api::Project {
            id: gigafab_api::ProjectId(p.id),
            org: self.org_name(p.org),
            name: p.name.clone(),
            members: p
                .members
                .iter()
                .filter_map(|u| self.users.get(u).map(|u| u.name.clone()))
                .collect(),
        }
    }

    /// Users `names` of organisation `org` (enabled), or the first name
    /// that is not one, in an error naming `field`.
    fn members_named(
        &self,
        org: i64,
        names: &[String],
        field: &str,
    ) -> Result<BTreeSet<i64>, ApiError> {
        if names.len() > 200 {
            return Err(ApiError::invalid(format!("{field}: at most 200 users")));
        }
        names
            .iter()
            .map(|n| {
                self.users
                    .values()
                    .find(|u| u.org == Some(org) && u.name == *n && !u.disabled)
                    .map(|u| u.id)
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "{field}: `{}` is not a user of the project's organisation",
                            n.chars().take(64).collect::<String>()
                        ))
                    })
            })
            .collect()
    }

    fn org_view(o: &OrgRec) -> gigafab_api::Org {
        gigafab_api::Org {
            id: gigafab_api::OrgId(o.id),
            name: o.name.clone(),
            category: o.category.clone(),
            created_at: o.created_ms.rfc3339(),
            country: o.country.clone(),
        }
    }

    fn user_view(&self, u: &UserRec) -> gigafab_api::User {
        gigafab_api::User {
            id: gigafab_api::UserId(u.id),
            name: u.name.clone(),
            org: u.org.map(|o| self.org_name(o)),
            role: u.role.as_str().into(),
            email: u.email.clone(),
            oidc_subject: u.oidc_subject.clone(),
        }
    }

    fn token_view(&self, id: i64, t: &TokenRec) -> gigafab_api::Token {
        gigafab_api::Token {
            id: gigafab_api::TokenId(id),
            user: gigafab_api::UserId(t.user),
            user_name: self.users.get(&t.user).map(|u| u.name.clone()),
            created_at: t.created_ms.rfc3339(),
            expires_at: t.expires_ms.map(Ms::rfc3339),
        }
    }
}

/// Writes `ops` in one transaction of their own.
async fn commit(store: &Store, ops: Vec<Op>) -> Result<(), ApiError> {
    Ok(store.write(ops).await?)
}

impl Tenancy {
    /// Reads the directory from the store; on a first start (no user) it
    /// makes the administrator (with `bootstrap_token`, else a new random
    /// token, returned to be shown once) and the organisation `default`.
    pub async fn load(
        store: &Store,
        isolation: Isolation,
        bootstrap_token: Option<String>,
        audit_id: &std::sync::atomic::AtomicI64,
        now: Ms,
    ) -> Result<(Tenancy, Option<String>), sqlx::Error> {
        let pool = &store.pool;
        let mut d = Directory::default();
        for o in store::tenancy::orgs(pool).await? {
            d.last[ORG] = d.last[ORG].max(o.id);
            d.orgs.insert(
                o.id,
                OrgRec {
                    id: o.id,
                    name: o.name,
                    category: o.category,
                    created_ms: o.created_ms,
                    country: o.country,
                },
            );
        }
        for p in store::tenancy::projects(pool).await? {
            d.last[PROJECT] = d.last[PROJECT].max(p.id);
            d.projects.insert(
                p.id,
                ProjectRec {
                    id: p.id,
                    org: p.org_id,
                    name: p.name,
                    members: BTreeSet::new(),
                },
            );
        }
        for (project, user) in store::tenancy::members(pool).await? {
            if let Some(p) = d.projects.get_mut(&project) {
                p.members.insert(user);
            }
        }
        for u in store::tenancy::users(pool).await? {
            d.last[USER] = d.last[USER].max(u.id);
            d.users.insert(
                u.id,
                UserRec {
                    id: u.id,
                    login: u.login.clone(),
                    name: short_name(u.login),
                    org: u.org_id,
                    role: Role::parse(&u.role).unwrap_or(Role::Member),
                    disabled: u.disabled,
                    email: u.email,
                    oidc_subject: u.oidc_subject,
                },
            );
        }
        for t in store::tenancy::tokens(pool).await? {
            d.last[TOKEN] = d.last[TOKEN].max(t.id);
            if t.revoked {
                continue;
            }
            d.by_hash.insert(t.hash.clone(), t.id);
            d.tokens.insert(
                t.id,
                TokenRec {
                    user: t.user_id,
                    hash: t.hash,
                    created_ms: t.created_ms,
                    expires_ms: t.expires_ms,
                },
            );
        }
        let mut shown = None;
        if d.users.is_empty() {
            // first start: an administrator and a default organisation
            // (the controller grants it its default allocation)
            let token = bootstrap_token.clone().unwrap_or_else(new_token);
            let (uid, tid, oid) = (d.next(USER), d.next(TOKEN), d.next(ORG));
            let hash = hash_token(&token);
            let aid = audit_id.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let ops = vec![
                store::tenancy::insert_user(uid, "admin".into(), None, "admin", None, None, now),
                // the bootstrap token does not expire (revoke it once other admins exist)
                store::tenancy::insert_token(tid, uid, &hash, now, None),
                store::tenancy::insert_org(oid, "default", "public", None, now),
                store::audit::insert(
                    aid,
                    now,
                    uid,
                    "admin".into(),
                    "bootstrap",
                    "user admin",
                    "first start: admin user, org default, allocation default".into(),
                ),
            ];
            store.write(ops).await?;
            d.users.insert(
                uid,
                UserRec {
                    id: uid,
                    login: "admin".into(),
                    name: "admin".into(),
                    org: None,
                    role: Role::Admin,
                    disabled: false,
                    email: None,
                    oidc_subject: None,
                },
            );
            d.by_hash.insert(hash.clone(), tid);
            d.tokens.insert(
                tid,
                TokenRec {
                    user: uid,
                    hash,
                    created_ms: now,
                    expires_ms: None,
                },
            );
            d.orgs.insert(
                oid,
                OrgRec {
                    id: oid,
                    name: "default".into(),
                    category: "public".into(),
                    created_ms: now,
                    country: None,
                },
            );
            shown = Some(if bootstrap_token.is_some() {
                String::new()
            } else {
                token
            });
        }
        Ok((
            Tenancy {
                dir: RwLock::new(d),
                writes: tokio::sync::Mutex::new(()),
                isolation,
            },
            shown,
        ))
    }

    /// The caller of a live token at `now` (None: unknown, revoked,
    /// expired, or its user disabled).
    pub fn principal(&self, token: &str, now: Ms) -> Option<Principal> {
        let h = hash_token(token);
        let d = self.dir.read().ok()?;
        let p = d.principal(*d.by_hash.get(&h)?)?;
        match p.expires_ms {
            Some(e) if now >= e => None,
            _ => Some(p),
        }
    }

    /// The login of a user (`ORG/NAME`, or the plain name of a user of no
    /// organisation): what `--job-accounts` maps.
    pub fn login(&self, user: i64) -> Option<String> {
        self.dir.read().ok()?.login(user)
    }

    /// The organisation `name`, if `who` may act on it (404 otherwise).
    pub fn visible_org(&self, who: &Principal, name: &str) -> Result<OrgRef, ApiError> {
        let d = self.dir.read().map_err(|_| lock_err())?;
        let id = d.visible_org(who, name)?;
        let o = &d.orgs[&id];
        Ok(OrgRef {
            id,
            name: o.name.clone(),
            category: Category::parse(&o.category).unwrap_or(Category::Academia),
        })
    }

    /// The organisation called `name` (any caller).
    pub fn org_named(&self, name: &str) -> Option<OrgRef> {
        let d = self.dir.read().ok()?;
        let o = d.org_by_name(name)?;
        Some(OrgRef {
            id: o.id,
            name: o.name.clone(),
            category: Category::parse(&o.category).unwrap_or(Category::Academia),
        })
    }

    /// The projects called `name`: (organisation, project) pairs.
    pub fn projects_named(&self, name: &str) -> Vec<(i64, i64)> {
        let Ok(d) = self.dir.read() else {
            return Vec::new();
        };
        d.projects
            .values()
            .filter(|p| p.name == name)
            .map(|p| (p.org, p.id))
            .collect()
    }

    /// The organisation `id` as a command names it.
    pub fn org_ref(&self, id: i64) -> Option<OrgRef> {
        let d = self.dir.read().ok()?;
        let o = d.orgs.get(&id)?;
        Some(OrgRef {
            id,
            name: o.name.clone(),
            category: Category::parse(&o.category).unwrap_or(Category::Academia),
        })
    }

    /// The organisation of user `id` (None: no such user; Some(None): a
    /// user of no organisation).
    pub fn user_org(&self, id: i64) -> Option<Option<i64>> {
        self.dir.read().ok()?.users.get(&id).map(|u| u.org)
    }

    /// The owners of organisation `org` (not disabled).
    pub fn owners_of(&self, org: i64) -> Vec<i64> {
        let Ok(d) = self.dir.read() else {
            return Vec::new();
        };
        d.users
            .values()
            .filter(|u| u.org == Some(org) && u.role == Role::Owner && !u.disabled)
            .map(|u| u.id)
            .collect()
    }

    /// Where user `id`'s notifications go, if they gave an address.
    /// The caller that signing in as user `id` makes (its enabled
    /// record; no token yet: `token_id` 0).
    pub fn user_principal(&self, id: i64) -> Option<Principal> {
        let d = self.dir.read().ok()?;
        let u = d.users.get(&id).filter(|u| !u.disabled)?;
        Some(Principal {
            user_id: u.id,
            name: u.name.clone(),
            login: u.login.clone(),
            role: u.role,
            org_id: u.org,
            token_id: 0,
            expires_ms: None,
        })
    }

    /// The enabled user whose OpenID Connect identity is `sub`.
    pub fn user_by_subject(&self, sub: &str) -> Option<i64> {
        let d = self.dir.read().ok()?;
        d.users
            .values()
            .find(|u| !u.disabled && u.oidc_subject.as_deref() == Some(sub))
            .map(|u| u.id)
    }

    /// Where organisation `id` is established (ISO 3166-1 alpha-2).
    pub fn org_country(&self, id: i64) -> Option<String> {
        self.dir.read().ok()?.orgs.get(&id)?.country.clone()
    }

    /// The enabled user named `name` in organisation `org`.
    pub fn member_named(&self, org: i64, name: &str) -> Option<i64> {
        let d = self.dir.read().ok()?;
        d.users
            .values()
            .find(|u| u.org == Some(org) && u.name == name && !u.disabled)
            .map(|u| u.id)
    }

    /// The enabled users of organisation `org`.
    pub fn users_of(&self, org: i64) -> Vec<i64> {
        let Ok(d) = self.dir.read() else {
            return Vec::new();
        };
        d.users
            .values()
            .filter(|u| u.org == Some(org) && !u.disabled)
            .map(|u| u.id)
            .collect()
    }

    pub fn email(&self, id: i64) -> Option<String> {
        self.dir.read().ok()?.users.get(&id)?.email.clone()
    }

    /// The organisation's name (empty if unknown).
    pub fn org_name(&self, id: i64) -> String {
        self.dir.read().map(|d| d.org_name(id)).unwrap_or_default()
    }

    pub fn list_orgs(&self, who: &Principal) -> Result<Vec<gigafab_api::Org>, ApiError> {
        let d = self.dir.read().map_err(|_| lock_err())?;
        Ok(d.orgs
            .values()
            .filter(|o| who.sees_org(o.id))
            .map(Directory::org_view)
            .collect())
    }

    pub fn list_projects(&self, who: &Principal) -> Result<Vec<gigafab_api::Project>, ApiError> {
        let d = self.dir.read().map_err(|_| lock_err())?;
        Ok(d.projects
            .values()
            .filter(|p| who.sees_org(p.org))
            .map(|p| d.project_view(p))
            .collect())
    }

    /// Whether `who` may run jobs in project `id`: an admin, an owner of
    /// its organisation, or (a project without members) any user of its
    /// organisation, else only its members.
    pub fn may_run_in(&self, who: &Principal, id: i64) -> bool {
        let Ok(d) = self.dir.read() else {
            return false;
        };
        let Some(p) = d.projects.get(&id) else {
            return false;
        };
        if who.role == Role::Admin {
            return true;
        }
        if who.org_id != Some(p.org) {
            return false;
        }
        who.role == Role::Owner || p.members.is_empty() || p.members.contains(&who.user_id)
    }

    /// Project `id`'s name (empty if unknown).
    pub fn project_name(&self, id: i64) -> String {
        self.dir
            .read()
            .ok()
            .and_then(|d| d.projects.get(&id).map(|p| p.name.clone()))
            .unwrap_or_default()
    }

    pub fn list_users(&self, who: &Principal) -> Result<Vec<gigafab_api::User>, ApiError> {
        if who.role == Role::Member {
            return Err(ApiError::forbidden("members cannot list users"));
        }
        let d = self.dir.read().map_err(|_| lock_err())?;
        Ok(d.users
            .values()
            .filter(|u| who.global() || (u.org.is_some() && u.org == who.org_id))
            .map(|u| d.user_view(u))
            .collect())
    }

    pub fn list_tokens(&self, who: &Principal) -> Result<Vec<gigafab_api::Token>, ApiError> {
        let d = self.dir.read().map_err(|_| lock_err())?;
        Ok(d.tokens
            .iter()
            .filter(|(_, t)| d.manages(who, t.user))
            .map(|(id, t)| d.token_view(*id, t))
            .collect())
    }
}

/// An e-mail address as a mail relay takes it (one mailbox, no display
/// name, no line breaks: nothing a tenant writes reaches a mail header
/// unparsed).
/// ISO 3166-1 alpha-2: two capital letters.
pub fn valid_country(c: &str) -> bool {
    c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())
}

pub fn valid_email(e: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "email: `{}` is not an e-mail address (local@domain)",
            e.chars().take(80).collect::<String>()
        ))
    };
    if e.len() > 254 || e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad());
    }
    let a: lettre::Address = e.parse().map_err(|_| bad())?;
    Ok(a.to_string())
}

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
pub async fn create_user(s: &Shared, who: &Principal, req: UserReq) -> Result<Value, ApiError> {
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
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    v["token"] = Value::String(token);
    Ok(v)
}

/// `POST /tokens`: a new token for the caller (or, for an admin or owner,
/// for a user they manage), shown once.
pub async fn create_token(s: &Shared, who: &Principal, req: TokenReq) -> Result<Value, ApiError> {
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
    Ok(json!({"id": tid, "user": target, "token": token, "expires_at": expires.rfc3339()}))
}

/// `DELETE /tokens/{id}`: the token stops working at once.
pub async fn revoke_token(s: &Shared, who: &Principal, id: i64) -> Result<Value, ApiError> {
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
    Ok(json!({"id": id, "revoked": true}))
}

/// `POST /users/{id}/disable`: every token of theirs stops working at
/// once, and no new one can be made (admin; owner of the user's
/// organisation).
pub async fn disable_user(s: &Shared, who: &Principal, id: i64) -> Result<Value, ApiError> {
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
    Ok(json!({"id": id, "disabled": true, "tokens_revoked": ids.len()}))
}
