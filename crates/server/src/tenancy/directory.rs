//! The directory: organisations, projects, users and tokens in memory, as
//! the store has them. Authentication and the listings read it; the
//! handlers ([`super`]) change it only once their transaction is durable.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::RwLock;

use gigafab_core::Category;

use crate::auth::{Principal, Role, hash_token, new_token};
use crate::error::ApiError;
use crate::isolation::Isolation;
use crate::names::short_name;
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

pub(super) struct OrgRec {
    pub(super) id: i64,
    pub(super) name: String,
    pub(super) category: String,
    pub(super) created_ms: Ms,
    pub(super) country: Option<String>,
}

pub(super) struct ProjectRec {
    pub(super) id: i64,
    pub(super) org: i64,
    pub(super) name: String,
    /// Its members; none: open to every member of its organisation.
    pub(super) members: BTreeSet<i64>,
}

pub(super) struct UserRec {
    pub(super) id: i64,
    pub(super) name: String,
    /// `ORG/NAME`, or the name of a user of no organisation.
    pub(super) login: String,
    pub(super) org: Option<i64>,
    pub(super) role: Role,
    /// Disabled: no token of theirs works, none can be made.
    pub(super) disabled: bool,
    /// Where notifications go.
    pub(super) email: Option<String>,
    /// Its identity at the site's OpenID Connect provider.
    pub(super) oidc_subject: Option<String>,
}

pub(super) struct TokenRec {
    pub(super) user: i64,
    pub(super) hash: String,
    pub(super) created_ms: Ms,
    pub(super) expires_ms: Option<Ms>,
}

/// What the store holds of tenancy, in memory: written only after the
/// store's transaction committed.
#[derive(Default)]
pub(super) struct Directory {
    pub(super) orgs: BTreeMap<i64, OrgRec>,
    pub(super) projects: BTreeMap<i64, ProjectRec>,
    pub(super) users: BTreeMap<i64, UserRec>,
    /// Live tokens (not revoked) by id, and their ids by hash.
    pub(super) tokens: BTreeMap<i64, TokenRec>,
    pub(super) by_hash: HashMap<String, i64>,
    /// The highest id used so far, per table.
    pub(super) last: [i64; 4],
}

pub(super) const ORG: usize = 0;
pub(super) const PROJECT: usize = 1;
pub(super) const USER: usize = 2;
pub(super) const TOKEN: usize = 3;

/// The tenancy resources of a server.
pub struct Tenancy {
    pub(super) dir: RwLock<Directory>,
    /// One write at a time: validation against the directory, the store's
    /// transaction, then the directory.
    pub(super) writes: tokio::sync::Mutex<()>,
    pub(super) isolation: Isolation,
}

pub(super) fn lock_err() -> ApiError {
    ApiError::unavailable("the tenancy directory is unusable after a failure")
}

impl Directory {
    pub(super) fn next(&mut self, table: usize) -> i64 {
        self.last[table] += 1;
        self.last[table]
    }

    pub(super) fn org_name(&self, id: i64) -> String {
        self.orgs
            .get(&id)
            .map_or_else(String::new, |o| o.name.clone())
    }

    pub(super) fn org_by_name(&self, name: &str) -> Option<&OrgRec> {
        self.orgs.values().find(|o| o.name == name)
    }

    pub(super) fn login(&self, user: i64) -> Option<String> {
        self.users.get(&user).map(|u| u.login.clone())
    }

    pub(super) fn principal(&self, token_id: i64) -> Option<Principal> {
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
    pub(super) fn visible_org(&self, who: &Principal, name: &str) -> Result<i64, ApiError> {
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
    pub(super) fn manages(&self, who: &Principal, user: i64) -> bool {
        who.role == Role::Admin
            || who.user_id == user
            || (who.role == Role::Owner
                && self
                    .users
                    .get(&user)
                    .is_some_and(|u| u.org.is_some() && u.org == who.org_id))
    }

    pub(super) fn project_view(&self, p: &ProjectRec) -> gigafab_api::Project {
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
    pub(super) fn members_named(
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

    pub(super) fn org_view(o: &OrgRec) -> gigafab_api::Org {
        gigafab_api::Org {
            id: gigafab_api::OrgId(o.id),
            name: o.name.clone(),
            category: o.category.clone(),
            created_at: o.created_ms.rfc3339(),
            country: o.country.clone(),
        }
    }

    pub(super) fn user_view(&self, u: &UserRec) -> gigafab_api::User {
        gigafab_api::User {
            id: gigafab_api::UserId(u.id),
            name: u.name.clone(),
            org: u.org.map(|o| self.org_name(o)),
            role: u.role.as_str().into(),
            email: u.email.clone(),
            oidc_subject: u.oidc_subject.clone(),
        }
    }

    pub(super) fn token_view(&self, id: i64, t: &TokenRec) -> gigafab_api::Token {
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
pub(super) async fn commit(store: &Store, ops: Vec<Op>) -> Result<(), ApiError> {
    Ok(store.write(ops).await?)
}

impl Tenancy {
    /// Reads the directory from the store; on a first start (no user) it
    /// makes the administrator (with `bootstrap_token`, else a new random
    /// token, returned to be shown once) and the organisation `default`.
    /// An empty directory (no organisation, no user): the controller's
    /// unit tests.
    #[cfg(test)]
    pub(crate) fn empty(isolation: Isolation) -> Tenancy {
        Tenancy {
            dir: RwLock::new(Directory::default()),
            writes: Default::default(),
            isolation,
        }
    }

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
    /// The POSIX account the jobs of `user` of organisation `org` run as
    /// (None: the server's own).
    pub fn account_of(&self, user: i64, org: i64) -> Option<String> {
        let Isolation::Accounts(map) = &self.isolation else {
            return None;
        };
        let login = self.login(user)?;
        map.account(&login, &self.org_name(org)).map(str::to_string)
    }

    pub fn org_name(&self, id: i64) -> String {
        self.dir.read().map(|d| d.org_name(id)).unwrap_or_default()
    }

    /// Every organisation's id.
    pub fn org_ids(&self) -> Vec<i64> {
        self.dir
            .read()
            .map(|d| d.orgs.keys().copied().collect())
            .unwrap_or_default()
    }

    /// The POSIX account that owns organisation `org`'s project space
    /// (None: the server's own, where every job runs as it), or why it has
    /// none.
    pub fn space_account(&self, org: i64) -> Result<Option<String>, String> {
        let name = self.org_name(org);
        match &self.isolation {
            Isolation::Shared { .. } => Ok(None),
            Isolation::Accounts(map) => match map.orgs.get(&name) {
                Some(a) => Ok(Some(a.clone())),
                None => Err(format!(
                    "organisation `{name}` has no project space: it needs an account of its own in --job-accounts ([orgs] {name} = \"ACCOUNT\"), whose group its members' accounts share (docs/security.md)"
                )),
            },
        }
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
