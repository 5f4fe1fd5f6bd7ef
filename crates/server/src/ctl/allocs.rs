//! Allocations: grants, validity windows, usage and their JSON views.

use super::*;

impl Controller {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_alloc(
        &mut self,
        id: i64,
        org: OrgRef,
        name: String,
        granted_gpu_s: f64,
        valid_from_ms: Ms,
        valid_until_ms: Ms,
        qos: i64,
    ) -> Alloc {
        let category = org.category;
        let spec = AllocationSpec {
            id: id.to_string(),
            tenant: org.id.to_string(),
            category,
            granted_gpu_hours: Some(granted_gpu_s / 3600.0),
            valid_from_s: valid_from_ms.core_s(),
            valid_until_s: Some(valid_until_ms.core_s()),
            qos_priority: qos.clamp(-1_000_000, 1_000_000) as i32,
            shares: Some((granted_gpu_s / 3600.0).max(1.0)),
        };
        let core = self.core.add_allocation(spec);
        Alloc {
            id,
            org: org.id,
            org_name: org.name,
            name,
            granted_gpu_s,
            used_gpu_s: 0.0,
            energy_j: 0.0,
            carbon_g: 0.0,
            valid_from_ms,
            valid_until_ms,
            qos,
            project: None,
            core,
            run_rate: 0.0,
            run_start_sum: 0.0,
            queued: 0,
            running: 0,
            ended: 0,
            expiry_noted: false,
        }
    }

    pub(super) fn insert_alloc_op(&mut self, a: &Alloc, now: Ms) {
        self.ops.push(store::allocs::insert(
            a.id,
            a.org,
            &a.name,
            a.granted_gpu_s,
            a.used_gpu_s,
            a.valid_from_ms,
            a.valid_until_ms,
            a.qos,
            a.project,
            now,
        ));
    }

    /// Tells allocation `id`'s owners it is exhausted, if the charge that
    /// brought its use from `before` to now crossed its grant.
    pub(super) fn exhausted_notice(&mut self, id: i64, before: f64) {
        let Some(a) = self.allocs.get(&id) else {
            return;
        };
        if before < a.granted_gpu_s && a.used_gpu_s >= a.granted_gpu_s {
            let owners = self.shared.tenancy.owners_of(a.org);
            let ops = crate::notify::mails(
                &self.shared,
                &owners,
                &format!("[gigafab] allocation {} is exhausted", a.name),
                &format!(
                    "Allocation {} ({}) has used {:.2} of its {:.2} GPU-hours: new jobs on it are refused.\n",
                    a.id,
                    a.name,
                    a.used_gpu_s / 3600.0,
                    a.granted_gpu_s / 3600.0
                ),
            );
            self.ops.extend(ops);
        }
    }

    /// Tells the owners of each allocation that ends within a week, once.
    pub(super) fn expiry_notices(&mut self, now: Ms) {
        const WEEK_MS: i64 = 7 * 86_400_000;
        let due: Vec<i64> = self
            .allocs
            .values()
            .filter(|a| {
                !a.expiry_noted
                    && now >= a.valid_from_ms
                    && now < a.valid_until_ms
                    && a.valid_until_ms.0 - now.0 <= WEEK_MS
            })
            .map(|a| a.id)
            .collect();
        for id in due {
            let Some(a) = self.allocs.get_mut(&id) else {
                continue;
            };
            a.expiry_noted = true;
            let owners = self.shared.tenancy.owners_of(a.org);
            let ops = crate::notify::mails(
                &self.shared,
                &owners,
                &format!(
                    "[gigafab] allocation {} expires on {}",
                    a.name,
                    a.valid_until_ms.rfc3339()
                ),
                &format!(
                    "Allocation {} ({}) ends at {}, with {:.2} of its {:.2} GPU-hours used; ask for an extension before then.\n",
                    a.id,
                    a.name,
                    a.valid_until_ms.rfc3339(),
                    a.used_at(now) / 3600.0,
                    a.granted_gpu_s / 3600.0
                ),
            );
            self.ops.extend(ops);
            self.ops.push(store::allocs::expiry_noted(id, now));
        }
    }

    pub(super) fn next_alloc(&mut self) -> i64 {
        self.ids.alloc += 1;
        self.ids.alloc
    }

    /// Use per organisation (ended runs' energy and carbon; GPU-hours
    /// including running jobs).
    pub(super) fn org_usage(&self, who: &Principal, now: Ms) -> Vec<gigafab_api::OrgUsage> {
        let mut per: BTreeMap<(i64, &str), (f64, f64, f64)> = BTreeMap::new();
        for a in self.allocs.values().filter(|a| who.sees_org(a.org)) {
            let e = per.entry((a.org, &a.org_name)).or_default();
            e.0 += a.used_at(now);
            e.1 += a.energy_j;
            e.2 += a.carbon_g;
        }
        per.into_iter()
            .map(|((_, o), (gs, ej, cg))| gigafab_api::OrgUsage {
                org: o.to_string(),
                used_gpu_hours: gs / 3600.0,
                energy_kwh: ej / 3.6e6,
                carbon_kg: cg / 1e3,
            })
            .collect()
    }

    pub(super) fn alloc_view(&self, a: &Alloc, now: Ms) -> gigafab_api::Allocation {
        gigafab_api::Allocation {
            id: gigafab_api::AllocationId(a.id),
            org: a.org_name.clone(),
            name: a.name.clone(),
            granted_gpu_hours: a.granted_gpu_s / 3600.0,
            used_gpu_hours: a.used_at(now) / 3600.0,
            valid_from: a.valid_from_ms.rfc3339(),
            valid_until: a.valid_until_ms.rfc3339(),
            qos_priority: a.qos,
            state: a.state(now).into(),
            energy_kwh: a.energy_j / 3.6e6,
            carbon_kg: self
                .cfg
                .factory
                .sites
                .iter()
                .any(|s| s.carbon.is_some())
                .then_some(a.carbon_g / 1e3),
            project: a.project.map(|p| self.shared.tenancy.project_name(p)),
        }
    }

    /// Grants an allocation to `org` (the command comes from an admin: see
    /// [`Shared::grant`]).
    pub(super) fn create_alloc(
        &mut self,
        who: &Principal,
        req: AllocReq,
        org: OrgRef,
        now: Ms,
    ) -> Result<gigafab_api::Allocation, ApiError> {
        // fault injection for the tests of a dead controller (debug builds,
        // and only with GIGAFAB_FAULTS=1)
        #[cfg(debug_assertions)]
        if req.name.as_deref() == Some("__controller_panic__")
            && std::env::var("GIGAFAB_FAULTS").as_deref() == Ok("1")
        {
            panic!("injected controller fault");
        }
        if who.role != Role::Admin || !who.sees_org(org.id) {
            return Err(ApiError::forbidden("only an admin grants allocations"));
        }
        if !(req.gpu_hours.is_finite() && req.gpu_hours > 0.0 && req.gpu_hours <= 1e9) {
            return Err(ApiError::invalid("gpu_hours: must be > 0 and at most 1e9"));
        }
        let days = req.days.unwrap_or(365.0);
        if !(days.is_finite() && days > 0.0 && days <= 36_500.0) {
            return Err(ApiError::invalid("days: must be > 0 and at most 36500"));
        }
        let from = match &req.valid_from {
            Some(s) => {
                Ms(parse_rfc3339(s).map_err(|e| ApiError::invalid(format!("valid_from: {e}")))?)
            }
            None => now,
        };
        let qos = req.qos_priority.unwrap_or(0);
        if !(-1000..=1000).contains(&qos) {
            return Err(ApiError::invalid(
                "qos_priority: must be within -1000..=1000",
            ));
        }
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", req.org, self.ids.alloc + 1));
        valid_name(&name, "name")?;
        let project = match &req.project {
            Some(p) => Some(
                self.shared
                    .tenancy
                    .projects_named(p)
                    .into_iter()
                    .find(|x| x.0 == org.id)
                    .map(|x| x.1)
                    .ok_or_else(|| {
                        ApiError::not_found(
                            "project_not_found",
                            format!(
                                "project: `{}` is not a project of organisation {}",
                                p.chars().take(64).collect::<String>(),
                                org.name
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        let id = self.next_alloc();
        let until = from.plus_days(days);
        let mut a = self.new_alloc(id, org, name, req.gpu_hours * 3600.0, from, until, qos);
        a.project = project;
        self.insert_alloc_op(&a, now);
        let v = self.alloc_view(&a, now);
        self.allocs.insert(id, a);
        self.provision(id);
        self.dirty = true;
        self.audit(
            who,
            now,
            "create_allocation",
            &format!("allocation {id}"),
            serde_json::to_string(&v).unwrap_or_default(),
        );
        Ok(v)
    }

    /// Extends an allocation for an approved extension request: more
    /// GPU-hours, and `days` more from its end (or from now, for one that
    /// has ended), recorded once per request.
    pub(super) fn extend_alloc(
        &mut self,
        who: &Principal,
        x: Extension,
        now: Ms,
    ) -> Result<gigafab_api::Allocation, ApiError> {
        if who.role != Role::Admin {
            return Err(ApiError::forbidden("only an admin extends allocations"));
        }
        let ok = (0.0..=1e9).contains(&x.gpu_hours) && (0.0..=3650.0).contains(&x.days);
        if !ok {
            return Err(ApiError::invalid(
                "an extension of 0..1e9 GPU-hours and 0..3650 days",
            ));
        }
        let a = self.allocs.get_mut(&x.allocation).ok_or_else(|| {
            ApiError::not_found(
                "allocation_not_found",
                format!("allocation {} not found", x.allocation),
            )
        })?;
        a.granted_gpu_s += x.gpu_hours * 3600.0;
        a.valid_until_ms = a.valid_until_ms.max(now).plus_days(x.days);
        a.expiry_noted = false;
        self.core
            .extend_allocation(a.core, a.granted_gpu_s / 3600.0, a.valid_until_ms.core_s());
        self.ops.extend(store::allocs::extend(
            a.id,
            x.request,
            a.granted_gpu_s,
            a.valid_until_ms,
            x.gpu_hours * 3600.0,
            x.days,
            now,
        ));
        let v = self.alloc_view(&self.allocs[&x.allocation], now);
        self.provision(x.allocation);
        self.dirty = true;
        self.audit(
            who,
            now,
            "extend_allocation",
            &format!("allocation {}", x.allocation),
            format!(
                "request {}: +{:.1} GPU-hours, +{} days",
                x.request, x.gpu_hours, x.days
            ),
        );
        Ok(v)
    }

    /// Sends allocation `id` to the engines as an account of theirs (Slurm:
    /// an account with the grant as `GrpTRESMins`, associated with the
    /// POSIX accounts of its organisation's users), as it is granted or
    /// extended. A member who joins later is associated at their first
    /// job's launch.
    pub(super) fn provision(&self, id: i64) {
        let Some(a) = self.allocs.get(&id) else {
            return;
        };
        let users: std::collections::BTreeSet<String> = self
            .shared
            .tenancy
            .users_of(a.org)
            .into_iter()
            .filter_map(|u| self.account_of(u, &a.org_name))
            .collect();
        self.driver.provision(
            id,
            (a.granted_gpu_s / 60.0).ceil() as u64,
            users.into_iter().collect(),
        );
    }
}
