//! Organisations, projects, users and tokens: the controller's commands
//! for them and their JSON views.

use super::*;

impl Controller {
    pub(super) fn principal_of(&self, user: i64, token_id: i64) -> Option<Principal> {
        let u = self.users.get(&user).filter(|u| !u.disabled)?;
        Some(Principal {
            user_id: u.id,
            name: u.name.clone(),
            role: u.role,
            org_id: u.org,
            token_id,
            expires_ms: self.tokens.get(&token_id).and_then(|t| t.expires_ms),
        })
    }

    pub(super) fn next_user(&mut self) -> i64 {
        self.ids.user += 1;
        self.ids.user
    }

    pub(super) fn next_org(&mut self) -> i64 {
        self.ids.org += 1;
        self.ids.org
    }

    pub(super) fn add_token(
        &mut self,
        user: i64,
        token: &str,
        now: i64,
        expires_ms: Option<i64>,
    ) -> Option<Principal> {
        self.ids.token += 1;
        let id = self.ids.token;
        let hash = hash_token(token);
        self.ops.push(store::tenancy::insert_token(
            id, user, &hash, now, expires_ms,
        ));
        self.tokens.insert(
            id,
            TokenRec {
                user,
                hash,
                created_ms: now,
                expires_ms,
            },
        );
        self.principal_of(user, id)
    }

    /// Whether `who` may manage (list, revoke, disable) the tokens of `user`:
    /// an admin, the user themself, or an owner of the user's organisation.
    pub(super) fn manages(&self, who: &Principal, user: i64) -> bool {
        who.role == Role::Admin
            || who.user_id == user
            || (who.role == Role::Owner
                && self
                    .users
                    .get(&user)
                    .is_some_and(|u| u.org.is_some() && u.org == who.org_id))
    }

    pub(super) fn token_json(&self, id: i64, t: &TokenRec) -> Value {
        view(gigafab_api::Token {
            id: gigafab_api::TokenId(id),
            user: gigafab_api::UserId(t.user),
            user_name: self.users.get(&t.user).map(|u| u.name.clone()),
            created_at: rfc3339(t.created_ms),
            expires_at: t.expires_ms.map(rfc3339),
        })
    }

    pub(super) fn list_tokens(&self, who: &Principal) -> Value {
        let items: Vec<Value> = self
            .tokens
            .iter()
            .filter(|(_, t)| self.manages(who, t.user))
            .map(|(id, t)| self.token_json(*id, t))
            .collect();
        json!({"items": items, "next": null})
    }

    /// Disables a user: every token of theirs stops working at once, and
    /// no new one can be made (admin; owner of the user's organisation).
    pub(super) fn disable_user(
        &mut self,
        who: &Principal,
        id: i64,
        now: i64,
    ) -> Result<Value, ApiError> {
        let not_found = || ApiError::not_found("user_not_found", format!("user {id} not found"));
        let u = self.users.get(&id).ok_or_else(not_found)?;
        if !(who.role == Role::Admin
            || (who.role == Role::Owner && u.org.is_some() && u.org == who.org_id))
        {
            return Err(
                if who.global() || (u.org.is_some() && u.org == who.org_id) {
                    ApiError::forbidden(
                        "only an admin, or an owner of the user's organisation, disables users",
                    )
                } else {
                    not_found()
                },
            );
        }
        if id == who.user_id {
            return Err(ApiError::invalid("you cannot disable yourself"));
        }
        let ids: Vec<i64> = self
            .tokens
            .iter()
            .filter(|(_, t)| t.user == id)
            .map(|(tid, _)| *tid)
            .collect();
        for tid in &ids {
            if let Some(t) = self.tokens.remove(tid) {
                if let Ok(mut c) = self.shared.tokens.write() {
                    c.remove(&t.hash);
                }
                self.ops.push(store::tenancy::revoke_token(*tid, now));
            }
        }
        if let Some(u) = self.users.get_mut(&id) {
            u.disabled = true;
        }
        self.ops.push(store::tenancy::disable_user(id, now));
        self.audit(
            who,
            now,
            "disable_user",
            &format!("user {id}"),
            format!("{} tokens revoked", ids.len()),
        );
        Ok(json!({"id": id, "disabled": true, "tokens_revoked": ids.len()}))
    }

    /// The login of a user: `ORG/NAME` for an organisation's member, the
    /// plain name for users of no organisation.
    pub(super) fn login_of(&self, user: i64) -> String {
        match self.users.get(&user) {
            Some(u) => login(
                u.org
                    .and_then(|o| self.orgs.get(&o))
                    .map(|o| o.name.as_str()),
                &u.name,
            ),
            None => String::new(),
        }
    }

    /// The POSIX account jobs of `user` in `org` run as (None: the server's).
    pub(super) fn account_of(&self, user: i64, org: i64) -> Option<String> {
        let Isolation::Accounts(map) = &self.cfg.isolation else {
            return None;
        };
        let u = self.login_of(user);
        let o = self.orgs.get(&org).map_or("", |o| o.name.as_str());
        map.account(&u, o).map(str::to_string)
    }

    pub(super) fn org_name(&self, id: i64) -> String {
        self.orgs
            .get(&id)
            .map_or_else(String::new, |o| o.name.clone())
    }

    pub(super) fn org_json(&self, o: &Org) -> Value {
        view(gigafab_api::Org {
            id: gigafab_api::OrgId(o.id),
            name: o.name.clone(),
            category: o.category.clone(),
            created_at: rfc3339(o.created_ms),
        })
    }

    pub(super) fn user_json(&self, u: &User) -> Value {
        view(gigafab_api::User {
            id: gigafab_api::UserId(u.id),
            name: u.name.clone(),
            org: u.org.map(|o| self.org_name(o)),
            role: u.role.as_str().into(),
        })
    }

    pub(super) fn org_by_name(&self, name: &str) -> Option<i64> {
        self.orgs.values().find(|o| o.name == name).map(|o| o.id)
    }

    pub(super) fn create_org(
        &mut self,
        who: &Principal,
        req: OrgReq,
        now: i64,
    ) -> Result<Value, ApiError> {
        if who.role != Role::Admin {
            return Err(ApiError::forbidden("only an admin creates organisations"));
        }
        if let Isolation::Shared {
            user,
            accepted: false,
        } = &self.cfg.isolation
            && !self.orgs.is_empty()
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
        if Category::parse(&req.category).is_none() {
            return Err(ApiError::invalid(format!(
                "category: `{}` is not one of startup, sme, industry, academia, public",
                req.category
            )));
        }
        if self.org_by_name(&req.name).is_some() {
            return Err(ApiError::conflict(
                "conflict",
                format!("an organisation named `{}` exists", req.name),
            ));
        }
        let id = self.next_org();
        let o = Org {
            id,
            name: req.name.clone(),
            category: req.category.to_ascii_lowercase(),
            created_ms: now,
        };
        self.ops
            .push(store::tenancy::insert_org(id, &o.name, &o.category, now));
        let v = self.org_json(&o);
        self.orgs.insert(id, o);
        self.audit(
            who,
            now,
            "create_org",
            &format!("org {}", req.name),
            v.to_string(),
        );
        Ok(v)
    }

    /// The organisation `name` if the caller may act on it (404 otherwise).
    pub(super) fn visible_org(&self, who: &Principal, name: &str) -> Result<i64, ApiError> {
        match self.org_by_name(name) {
            Some(o) if who.sees_org(o) => Ok(o),
            _ => Err(ApiError::not_found(
                "org_not_found",
                format!("organisation `{name}` not found"),
            )),
        }
    }

    pub(super) fn create_project(
        &mut self,
        who: &Principal,
        req: ProjectReq,
        now: i64,
    ) -> Result<Value, ApiError> {
        let org = self.visible_org(who, &req.org)?;
        if !(who.role == Role::Admin || who.role == Role::Owner) {
            return Err(ApiError::forbidden(
                "only an admin or the organisation's owner creates projects",
            ));
        }
        valid_name(&req.name, "name")?;
        if self
            .projects
            .values()
            .any(|p| p.org == org && p.name == req.name)
        {
            return Err(ApiError::conflict(
                "conflict",
                format!("project `{}` exists", req.name),
            ));
        }
        self.ids.project += 1;
        let id = self.ids.project;
        self.ops
            .push(store::tenancy::insert_project(id, org, &req.name, now));
        self.projects.insert(
            id,
            Project {
                id,
                org,
                name: req.name.clone(),
            },
        );
        let v = json!({"id": id, "org": req.org, "name": req.name});
        self.audit(
            who,
            now,
            "create_project",
            &format!("project {id}"),
            v.to_string(),
        );
        Ok(v)
    }

    pub(super) fn create_user(
        &mut self,
        who: &Principal,
        req: UserReq,
        now: i64,
        tokens: &mut Vec<(String, Principal)>,
    ) -> Result<Value, ApiError> {
        valid_name(&req.name, "name")?;
        let role_s = req.role.as_deref().unwrap_or("member");
        let role = Role::parse(role_s).ok_or_else(|| {
            ApiError::invalid(format!(
                "role: `{role_s}` is not one of admin, operator, owner, member"
            ))
        })?;
        let org = match (&req.org, role.in_org()) {
            (Some(name), true) => Some(self.visible_org(who, name)?),
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
        if self
            .users
            .values()
            .any(|u| u.org == org && u.name == req.name)
        {
            return Err(ApiError::conflict(
                "conflict",
                match org {
                    Some(o) => format!(
                        "a user named `{}` exists in organisation `{}`",
                        req.name,
                        self.org_name(o)
                    ),
                    None => format!("a user named `{}` of no organisation exists", req.name),
                },
            ));
        }
        let id = self.next_user();
        let stored = login(org.map(|o| self.org_name(o)).as_deref(), &req.name);
        self.ops.push(store::tenancy::insert_user(
            id,
            stored,
            org,
            role.as_str(),
            now,
        ));
        let u = User {
            id,
            name: req.name.clone(),
            org,
            role,
            disabled: false,
        };
        let mut v = self.user_json(&u);
        self.users.insert(id, u);
        let token = new_token();
        let expires = now + (DEFAULT_TOKEN_DAYS * 86_400_000.0) as i64;
        let p = self
            .add_token(id, &token, now, Some(expires))
            .expect("user just added");
        tokens.push((hash_token(&token), p));
        self.audit(
            who,
            now,
            "create_user",
            &format!("user {}", req.name),
            v.to_string(),
        );
        v["token"] = Value::String(token);
        Ok(v)
    }

    pub(super) fn create_token(
        &mut self,
        who: &Principal,
        req: TokenReq,
        now: i64,
        tokens: &mut Vec<(String, Principal)>,
    ) -> Result<Value, ApiError> {
        let target = match &req.user {
            None => who.user_id,
            Some(r) => {
                let id = r
                    .id()
                    .ok_or_else(|| ApiError::invalid("user: expected a user id"))?;
                let u = self.users.get(&id).filter(|u| {
                    who.role == Role::Admin
                        || u.id == who.user_id
                        || (who.role == Role::Owner && u.org.is_some() && u.org == who.org_id)
                });
                u.ok_or_else(|| {
                    ApiError::not_found("user_not_found", format!("user {id} not found"))
                })?
                .id
            }
        };
        if self.users.get(&target).is_some_and(|u| u.disabled) {
            return Err(ApiError::conflict(
                "user_disabled",
                format!("user {target} is disabled"),
            ));
        }
        let days = req.expires_in_days.unwrap_or(DEFAULT_TOKEN_DAYS);
        if !(days.is_finite() && days > 0.0 && days <= MAX_TOKEN_DAYS) {
            return Err(ApiError::invalid(format!(
                "expires_in_days: must be within 0..={MAX_TOKEN_DAYS}"
            )));
        }
        let expires = now + (days * 86_400_000.0) as i64;
        let token = new_token();
        let p = self
            .add_token(target, &token, now, Some(expires))
            .ok_or_else(|| {
                ApiError::not_found("user_not_found", format!("user {target} not found"))
            })?;
        let tid = p.token_id;
        tokens.push((hash_token(&token), p));
        self.audit(
            who,
            now,
            "create_token",
            &format!("token {tid}"),
            format!("for user {target}"),
        );
        Ok(json!({"id": tid, "user": target, "token": token, "expires_at": rfc3339(expires)}))
    }

    pub(super) fn revoke_token(
        &mut self,
        who: &Principal,
        id: i64,
        now: i64,
    ) -> Result<Value, ApiError> {
        let t = self
            .tokens
            .get(&id)
            .filter(|t| self.manages(who, t.user))
            .ok_or_else(|| {
                ApiError::not_found("token_not_found", format!("token {id} not found"))
            })?;
        let hash = t.hash.clone();
        self.tokens.remove(&id);
        if let Ok(mut c) = self.shared.tokens.write() {
            c.remove(&hash);
        }
        self.ops.push(store::tenancy::revoke_token(id, now));
        self.audit(
            who,
            now,
            "revoke_token",
            &format!("token {id}"),
            String::new(),
        );
        Ok(json!({"id": id, "revoked": true}))
    }
}
