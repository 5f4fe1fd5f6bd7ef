//! Loading the state from the store at start (and after a failed commit),
//! and the first start's admin, organisation and allocation.

use super::*;

impl Controller {
    pub(super) async fn load_rows(&mut self) -> Result<Option<String>, sqlx::Error> {
        let pool = self.shared.store.pool.clone();
        let now = self.shared.clock.now_ms();
        for r in sqlx::query("SELECT id, name, category, created_ms FROM orgs ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let o = Org {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                category: r.try_get(2)?,
                created_ms: r.try_get(3)?,
            };
            self.ids.org = self.ids.org.max(o.id);
            self.orgs.insert(o.id, o);
        }
        for r in sqlx::query("SELECT id, org_id, name FROM projects ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let p = Project {
                id: r.try_get(0)?,
                org: r.try_get(1)?,
                name: r.try_get(2)?,
            };
            self.ids.project = self.ids.project.max(p.id);
            self.projects.insert(p.id, p);
        }
        for r in sqlx::query("SELECT id, name, org_id, role, disabled_ms FROM users ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let role: String = r.try_get(3)?;
            let u = User {
                id: r.try_get(0)?,
                name: short_name(r.try_get(1)?),
                org: r.try_get(2)?,
                role: Role::parse(&role).unwrap_or(Role::Member),
                disabled: r.try_get::<Option<i64>, _>(4)?.is_some(),
            };
            self.ids.user = self.ids.user.max(u.id);
            self.users.insert(u.id, u);
        }
        let mut cache = HashMap::new();
        for r in sqlx::query(
            "SELECT id, user_id, hash, revoked_ms, created_ms, expires_ms FROM tokens ORDER BY id",
        )
        .fetch_all(&pool)
        .await?
        {
            let id: i64 = r.try_get(0)?;
            self.ids.token = self.ids.token.max(id);
            let revoked: Option<i64> = r.try_get(3)?;
            if revoked.is_some() {
                continue;
            }
            let t = TokenRec {
                user: r.try_get(1)?,
                hash: r.try_get(2)?,
                created_ms: r.try_get(4)?,
                expires_ms: r.try_get(5)?,
            };
            let hash = t.hash.clone();
            self.tokens.insert(id, t);
            if let Some(p) = self.principal_of(self.tokens[&id].user, id) {
                cache.insert(hash, p);
            }
        }
        *self.shared.tokens.write().expect("token cache") = cache;
        for r in sqlx::query("SELECT id, org_id, name, granted_gpu_s, used_gpu_s, valid_from_ms, valid_until_ms, qos_priority, energy_j, carbon_g FROM allocations ORDER BY id")
            .fetch_all(&pool)
            .await?
        {
            let id: i64 = r.try_get(0)?;
            let a = self.new_alloc(
                id,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(5)?,
                r.try_get(6)?,
                r.try_get(7)?,
            );
            self.allocs.insert(id, a);
            let used: f64 = r.try_get(4)?;
            let a = self.allocs.get_mut(&id).expect("just added");
            a.used_gpu_s = used;
            a.energy_j = r.try_get(8)?;
            a.carbon_g = r.try_get(9)?;
            self.ids.alloc = self.ids.alloc.max(id);
        }
        for (k, r) in [
            ("job", "SELECT COALESCE(MAX(id), 0) FROM jobs"),
            ("audit", "SELECT COALESCE(MAX(id), 0) FROM audit"),
        ] {
            let v: i64 = sqlx::query(r).fetch_one(&pool).await?.try_get(0)?;
            if k == "job" {
                self.ids.job = v;
            } else {
                self.ids.audit = v;
            }
        }
        for r in sqlx::query("SELECT name FROM drained_nodes")
            .fetch_all(&pool)
            .await?
        {
            let name: String = r.try_get(0)?;
            if let Some(&n) = self.node_by_name.get(&name) {
                self.core.drain(n);
            }
        }
        // active jobs, oldest first
        let q =
            format!("SELECT {JOB_COLUMNS} WHERE j.state IN ('queued', 'running') ORDER BY j.id");
        let rows = sqlx::query(&q).fetch_all(&pool).await?;
        let mut seqs: HashMap<i64, i64> = HashMap::new();
        for r in sqlx::query(
            "SELECT e.job_id, MAX(e.seq) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.state IN ('queued', 'running') GROUP BY e.job_id",
        )
        .fetch_all(&pool)
        .await?
        {
            seqs.insert(r.try_get(0)?, r.try_get(1)?);
        }
        let mut adopt = Vec::new();
        for r in &rows {
            let row = row_to_job(r).map_err(|e| {
                let id: Option<i64> = r.try_get(0).ok();
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
