//! Loading the state from the store at start (and after a failed commit),
//! and the first start's admin, organisation and allocation.

use super::*;

impl Controller {
    pub(super) async fn load_rows(&mut self) -> Result<Option<String>, sqlx::Error> {
        let pool = self.shared.store.pool.clone();
        let now = self.shared.clock.now_ms();
        for o in store::tenancy::orgs(&pool).await? {
            let o = Org {
                id: o.id,
                name: o.name,
                category: o.category,
                created_ms: o.created_ms,
            };
            self.ids.org = self.ids.org.max(o.id);
            self.orgs.insert(o.id, o);
        }
        for p in store::tenancy::projects(&pool).await? {
            let p = Project {
                id: p.id,
                org: p.org_id,
                name: p.name,
            };
            self.ids.project = self.ids.project.max(p.id);
            self.projects.insert(p.id, p);
        }
        for u in store::tenancy::users(&pool).await? {
            let u = User {
                id: u.id,
                name: short_name(u.login),
                org: u.org_id,
                role: Role::parse(&u.role).unwrap_or(Role::Member),
                disabled: u.disabled,
            };
            self.ids.user = self.ids.user.max(u.id);
            self.users.insert(u.id, u);
        }
        let mut cache = HashMap::new();
        for t in store::tenancy::tokens(&pool).await? {
            let id = t.id;
            self.ids.token = self.ids.token.max(id);
            if t.revoked {
                continue;
            }
            let rec = TokenRec {
                user: t.user_id,
                hash: t.hash,
                created_ms: t.created_ms,
                expires_ms: t.expires_ms,
            };
            let hash = rec.hash.clone();
            self.tokens.insert(id, rec);
            if let Some(p) = self.principal_of(self.tokens[&id].user, id) {
                cache.insert(hash, p);
            }
        }
        *self.shared.tokens.write().expect("token cache") = cache;
        for r in store::allocs::all(&pool).await? {
            let id = r.id;
            let mut a = self.new_alloc(
                id,
                r.org_id,
                r.name,
                r.granted_gpu_s,
                r.valid_from_ms,
                r.valid_until_ms,
                r.qos,
            );
            a.used_gpu_s = r.used_gpu_s;
            a.energy_j = r.energy_j;
            a.carbon_g = r.carbon_g;
            self.allocs.insert(id, a);
            self.ids.alloc = self.ids.alloc.max(id);
        }
        self.ids.job = store::jobs::max_id(&pool).await?;
        self.ids.audit = store::audit::max_id(&pool).await?;
        for name in store::fleet::drained(&pool).await? {
            if let Some(&n) = self.node_by_name.get(&name) {
                self.core.drain(n);
            }
        }
        // active jobs, oldest first
        let rows = store::jobs::active(&pool).await?;
        let seqs = store::jobs::last_event_seqs(&pool).await?;
        let mut adopt = Vec::new();
        for r in rows {
            let row = r.map_err(|(id, e)| {
                sqlx::Error::Protocol(format!(
                    "job {} in the store cannot be read ({e}): the store is damaged; restore it from a backup",
                    id.map_or("?".to_string(), |i| i.to_string())
                ))
            })?;
            let spec: StoredSpec = serde_json::from_str(&row.spec).unwrap_or_default();
            let next_seq = seqs.get(&row.id).copied().unwrap_or(0) + 1;
            let id = row.id;
            let running = row.state == "running";
            self.restore_job(row, spec, next_seq);
            if running {
                adopt.push(id);
            }
        }
        for a in self.allocs.values() {
            self.core.restore_usage(a.core, a.used_at(now));
        }
        for id in adopt {
            self.adopt(id, now);
        }
        // first start: an administrator and a default allocation
        if self.users.is_empty() {
            return Ok(Some(self.bootstrap(now)));
        }
        Ok(None)
    }

    pub(super) fn bootstrap(&mut self, now: i64) -> String {
        let given = self.cfg.bootstrap_token.clone();
        let token = given.clone().unwrap_or_else(new_token);
        let uid = self.next_user();
        self.users.insert(
            uid,
            User {
                id: uid,
                name: "admin".into(),
                org: None,
                role: Role::Admin,
                disabled: false,
            },
        );
        self.ops.push(store::tenancy::insert_user(
            uid,
            "admin".into(),
            None,
            "admin",
            now,
        ));
        // the bootstrap token does not expire (revoke it once other admins exist)
        let p = self
            .add_token(uid, &token, now, None)
            .expect("user just added");
        self.shared
            .tokens
            .write()
            .expect("token cache")
            .insert(hash_token(&token), p.clone());
        // a default organisation and allocation so that a first job can run
        let oid = self.next_org();
        self.orgs.insert(
            oid,
            Org {
                id: oid,
                name: "default".into(),
                category: "public".into(),
                created_ms: now,
            },
        );
        self.ops
            .push(store::tenancy::insert_org(oid, "default", "public", now));
        let aid = self.next_alloc();
        let until = now + 3650 * 86_400_000;
        let a = self.new_alloc(aid, oid, "default".into(), 1e6 * 3600.0, now, until, 0);
        self.insert_alloc_op(&a, now);
        self.allocs.insert(aid, a);
        self.audit(
            &p,
            now,
            "bootstrap",
            "user admin",
            "first start: admin user, org default, allocation default".into(),
        );
        if given.is_some() {
            String::new()
        } else {
            token
        }
    }
}
