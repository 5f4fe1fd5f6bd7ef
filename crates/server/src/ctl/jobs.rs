//! Jobs: submission, cancellation, and how a job ends or is preempted.

use super::*;
use crate::submission::ValidSubmit;

impl Controller {
    /// Submits `cs` to the scheduler: a service (a replica) runs until
    /// it is stopped.
    pub(super) fn core_submit(
        &mut self,
        cs: &JobSpec,
        alloc: gigafab_core::AllocIdx,
        t: f64,
        service: bool,
        after: &[(DepKind, JobIdx)],
    ) -> JobIdx {
        if service {
            self.core.submit_service(cs, alloc, t)
        } else if after.is_empty() {
            self.core.submit(cs, alloc, t)
        } else {
            self.core.submit_after(cs, alloc, t, after)
        }
    }

    /// The scheduler's index of job `id`, while it is active or since it
    /// ended under this controller.
    fn core_index(&self, id: i64) -> Option<JobIdx> {
        match self.jobs.get(&id) {
            Some(j) => Some(j.core),
            None => self
                .core_job
                .iter()
                .rposition(|&x| x == id)
                .map(|i| i as JobIdx),
        }
    }

    /// What `after` leaves to wait for, as the scheduler's indexes: a job
    /// found ended (`state_of`) as asked is not waited for; one ended
    /// otherwise, or not found, is `Err` with why.
    pub(super) fn resolve_after(
        &self,
        after: &[(DepKind, i64)],
        state_of: impl Fn(i64) -> Option<String>,
    ) -> Result<Vec<(DepKind, JobIdx, i64)>, String> {
        let mut out = Vec::new();
        for &(k, d) in after {
            if let Some(st) = state_of(d).as_deref().and_then(core_state) {
                match k.satisfied_by(st) {
                    Some(true) => continue,
                    Some(false) => {
                        return Err(format!(
                            "job {d} ended {}: {}:{d} can never be satisfied",
                            state_name(st),
                            k.code()
                        ));
                    }
                    None => {}
                }
            }
            match self.core_index(d) {
                Some(i) => out.push((k, i, d)),
                None => return Err(format!("job {d} is not known to the scheduler")),
            }
        }
        Ok(out)
    }

    pub(super) fn core_spec(&self, row: &JobRow, spec: &StoredSpec) -> JobSpec {
        let limit = row.time_limit_s as f64;
        // a replica runs until it is stopped: no limit to plan with
        let (duration, time_limit) = match spec.endpoint {
            Some(_) => (gigafab_core::sched::SERVICE_RUN_S, None),
            None => (limit, Some(limit)),
        };
        JobSpec {
            id: row.id.to_string(),
            submit_s: row.submitted_ms.core_s(),
            gpus: row.gpus as u32,
            types: TypeFilter {
                types: spec.types.clone(),
                vendor: spec.vendor.as_deref().and_then(Vendor::parse),
                min_memory_gb: spec.min_memory_gb,
                sites: spec.sites.clone(),
                slice: spec.slice.clone(),
            },
            duration_s: Some(duration),
            steps: None,
            job_type: spec.job_type.clone(),
            time_limit_s: time_limit,
            tenant: Some(row.org_id.to_string()),
            category: None,
            priority: spec.priority,
            preemptible: spec.preemptible,
            checkpoint_s: None,
            deadline_s: None,
            // held by the controller's own indexes (`resolve_after`)
            dependency: None,
        }
    }

    /// The POSIX account the jobs of `user` in the organisation `org` run
    /// as (None: the server's).
    pub(super) fn account_of(&self, user: i64, org: &str) -> Option<String> {
        let Isolation::Accounts(map) = &self.cfg.isolation else {
            return None;
        };
        let login = self.shared.tenancy.login(user).unwrap_or_default();
        map.account(&login, org).map(str::to_string)
    }

    /// Submits a job; `projects` are the (organisation, project) pairs of
    /// the project name it gives.
    pub(super) fn submit(
        &mut self,
        who: &Principal,
        valid: ValidSubmit,
        projects: &[(i64, i64)],
        inputs: Vec<crate::model::Input>,
        now: Ms,
    ) -> Result<gigafab_api::Job, ApiError> {
        let ValidSubmit {
            req,
            alloc_id,
            name,
            time_limit_s: limit,
            priority,
            types,
            vendor,
            env,
            endpoint,
            after,
            array,
            slice,
        } = valid;
        let waits: Vec<(DepKind, i64)> = after.iter().map(|a| (a.kind, a.job)).collect();
        let core_after = self
            .resolve_after(&waits, |d| {
                after
                    .iter()
                    .find(|a| a.job == d)
                    .map(|a| a.state.clone())
                    .filter(|s| !s.is_empty())
            })
            .map_err(|why| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "dependency_never_satisfied",
                    format!("dependency: {why}"),
                )
            })?;
        let held = (!core_after.is_empty()).then(|| {
            let w: Vec<String> = core_after
                .iter()
                .map(|(k, _, d)| format!("{}:{d}", k.code()))
                .collect();
            format!("waiting: dependency {}", w.join(","))
        });
        let core_after: Vec<(DepKind, JobIdx)> =
            core_after.into_iter().map(|(k, i, _)| (k, i)).collect();
        let not_found = || {
            ApiError::not_found(
                "allocation_not_found",
                format!("allocation {alloc_id} not found in your organisation"),
            )
        };
        let a = self.allocs.get(&alloc_id).ok_or_else(not_found)?;
        if !who.sees_org(a.org) {
            return Err(not_found());
        }
        // an organisation's active jobs are capped (an array counts each
        // task): one tenant cannot fill the scheduler and the store
        let cap = self.cfg.max_active_jobs_per_org;
        let adding = array.as_ref().map_or(1, |(ix, _)| ix.len());
        if cap > 0 && endpoint.is_none() {
            let org = a.org;
            let active: usize = self
                .allocs
                .values()
                .filter(|x| x.org == org)
                .map(|x| (x.queued + x.running) as usize)
                .sum();
            if active + adding > cap {
                // 409, not 429: waiting seconds does not help, jobs
                // ending does (a client does not retry it blindly)
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "too_many_jobs",
                    format!(
                        "organisation `{}` has {active} active jobs and this adds {adding}: at most {cap} at once; submit more as they end",
                        a.org_name
                    ),
                ));
            }
        }
        if let Isolation::Accounts(map) = &self.cfg.isolation
            && map.account(&who.login, &a.org_name).is_none()
        {
            let user = &who.login;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_account",
                format!(
                    "user `{user}` has no POSIX account to run jobs as (neither the user nor \
                     the organisation is in the server's --job-accounts map); ask an operator"
                ),
            ));
        }
        match a.state(now) {
            "expired" => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "allocation_expired",
                    format!(
                        "allocation {alloc_id} expired at {}",
                        a.valid_until_ms.rfc3339()
                    ),
                ));
            }
            "exhausted" => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "allocation_exhausted",
                    format!(
                        "allocation {alloc_id} has used {:.2} of its {:.2} GPU-hours",
                        a.used_at(now) / 3600.0,
                        a.granted_gpu_s / 3600.0
                    ),
                ));
            }
            _ => {}
        }
        let (org, alloc_core, org_name, alloc_project) =
            (a.org, a.core, a.org_name.clone(), a.project);
        let project_id = match &req.project {
            Some(p) => Some(
                projects
                    .iter()
                    .find(|x| x.0 == org)
                    .map(|x| x.1)
                    .ok_or_else(|| {
                        ApiError::not_found(
                            "project_not_found",
                            format!("project `{p}` not found in the allocation's organisation"),
                        )
                    })?,
            ),
            None => None,
        };
        // an allocation granted to a project runs that project's jobs,
        // by its members
        let project_id = match (project_id, alloc_project) {
            (Some(p), Some(q)) if p != q => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "wrong_project",
                    format!(
                        "project: allocation {alloc_id} is granted to project `{}`; a job on it runs in that project",
                        self.shared.tenancy.project_name(q)
                    ),
                ));
            }
            (None, q) => q,
            (p, _) => p,
        };
        if let Some(p) = project_id
            && !self.shared.tenancy.may_run_in(who, p)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_project_member",
                format!(
                    "you are not a member of project `{}`; its owners add members",
                    self.shared.tenancy.project_name(p)
                ),
            ));
        }
        let project_name = project_id.map(|p| self.shared.tenancy.project_name(p));
        let job_type = match req.job_type {
            None => None,
            Some(t) if !self.cfg.throughputs.has_job_type(&t) => {
                let known = self.cfg.throughputs.job_types();
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_job_type",
                    if known.is_empty() {
                        format!(
                            "job_type: `{}`: this server has no throughput matrix (--throughputs)",
                            t.chars().take(128).collect::<String>()
                        )
                    } else {
                        format!(
                            "job_type: `{}` is not in the throughput matrix ({} types, e.g. {})",
                            t.chars().take(128).collect::<String>(),
                            known.len(),
                            known.iter().take(3).copied().collect::<Vec<_>>().join("; ")
                        )
                    },
                ));
            }
            Some(t) => Some(t),
        };
        // the inputs' residency: the sites all of them allow
        let sites = match crate::catalog::allowed_sites(&inputs) {
            None => Vec::new(),
            Some(s) if s.is_empty() => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "residency_conflict",
                    format!(
                        "inputs: no site is allowed by every input's residency ({})",
                        inputs
                            .iter()
                            .filter(|i| !i.residency.is_empty())
                            .map(|i| format!("{}: {}", i.reference, i.residency.join("|")))
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ));
            }
            Some(s) => s,
        };
        let mut env = env;
        for i in &inputs {
            env.insert(i.var.clone(), i.path.clone());
        }
        if let Some(dir) = crate::spaces::dir_of(&self.shared, org) {
            env.insert(PROJECT_DIR_VAR.into(), dir.display().to_string());
        }
        if req.output_model.is_some() {
            let id = self.ids.job + 1;
            env.insert(
                crate::catalog::OUTPUT_VAR.into(),
                crate::catalog::output_dir(&*self.shared.executor, id)
                    .display()
                    .to_string(),
            );
        }
        let mut spec = StoredSpec {
            array: None,
            inputs,
            sites,
            output_model: req.output_model.clone(),
            endpoint,
            command: req.command,
            env,
            workdir: req.workdir,
            types,
            vendor,
            // a slice's memory is the slice's (the larger bound holds)
            min_memory_gb: match &slice {
                Some(_) => req
                    .gpu_memory_gb
                    .into_iter()
                    .chain(req.min_memory_gb)
                    .reduce(f64::max),
                None => req.min_memory_gb,
            },
            slice,
            priority: priority as i32,
            preemptible: req.preemptible.unwrap_or(false),
            project: project_name,
            billing_weight: None,
            memory_gb: req.memory_gb,
            cpus: req.cpus,
            job_type,
            after: waits
                .iter()
                .map(|(k, d)| (k.code().to_string(), *d))
                .collect(),
        };
        self.ids.job += 1;
        let id = self.ids.job;
        if let Some((indexes, _)) = &array {
            spec.array = Some((id, indexes[0]));
            set_array_env(&mut spec.env, id, indexes[0]);
        }
        let row = JobRow {
            id,
            org_id: org,
            org: org_name,
            user_id: who.user_id,
            user: who.name.clone(),
            alloc_id,
            project_id,
            name,
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            gpus: req.gpus,
            time_limit_s: limit,
            state: "queued".into(),
            reason: held.clone(),
            exit_code: None,
            submitted_ms: now,
            started_ms: None,
            ended_ms: None,
            accelerators: None,
            handle: None,
            gpu_s: 0.0,
            energy_j: 0.0,
            carbon_g: None,
            energy_source: None,
            stopping: None,
        };
        let cs = self.core_spec(&row, &spec);
        if let Err(r) = self.core.check(&cs) {
            self.ids.job -= 1;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unsatisfiable",
                format!(
                    "no pool of this fleet can ever run {}×{}{}{}",
                    req.gpus,
                    filter_label(&spec),
                    match &spec.job_type {
                        Some(t) => format!(
                            " of job type `{t}` (measured on: {})",
                            self.cfg.throughputs.accelerators(t).join(", ")
                        ),
                        None => String::new(),
                    },
                    self.fleet_summary(r)
                ),
            ));
        }
        // its time limit is reserved against the grant when it starts: a
        // limit larger than what is left could never start (a replica has
        // none: it is charged as it runs)
        let w = self.core.max_billing(&cs).unwrap_or(1.0);
        let reserve_s = if endpoint.is_some() { 0 } else { limit };
        let need_h = reserve_s as f64 * req.gpus as f64 * w / 3600.0;
        let a = &self.allocs[&alloc_id];
        let left_h = (a.granted_gpu_s - a.used_at(now)) / 3600.0;
        if need_h > left_h + 1e-9 {
            self.ids.job -= 1;
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "exceeds_allocation",
                format!(
                    "its time limit reserves {need_h:.3} GPU-hours ({} s × {} accelerators × billing weight {w}) but allocation {alloc_id} has {left_h:.3} left; lower --time or ask for a larger allocation",
                    limit, req.gpus
                ),
            ));
        }
        let v = self.enqueue_new(
            who,
            (row.clone(), spec.clone(), project_id),
            (alloc_core, endpoint),
            (&core_after, held.clone()),
            now,
        );
        // the other tasks of an array: the same job, their own index; with
        // `%N`, each waits for the end of the task N places before it
        if let Some((indexes, limit)) = &array {
            let first = id;
            let mut cores = vec![self.jobs[&first].core];
            for (k, &task) in indexes.iter().enumerate().skip(1) {
                self.ids.job += 1;
                let tid = self.ids.job;
                let mut row = row.clone();
                let mut spec = spec.clone();
                row.id = tid;
                spec.array = Some((first, task));
                set_array_env(&mut spec.env, first, task);
                let mut after = core_after.clone();
                let mut held = held.clone();
                if let Some(l) = limit
                    && k >= *l as usize
                {
                    let before = cores[k - *l as usize];
                    after.push((DepKind::AfterAny, before));
                    let prior = self.core_job[before as usize];
                    spec.after.push(("afterany".into(), prior));
                    held = Some(match held {
                        Some(h) => format!("{h},afterany:{prior} (at most {l} tasks at once)"),
                        None => format!(
                            "waiting: dependency afterany:{prior} (at most {l} tasks at once)"
                        ),
                    });
                }
                row.reason = held.clone();
                row.spec = serde_json::to_string(&spec).unwrap_or_default();
                self.enqueue_new(
                    who,
                    (row, spec, project_id),
                    (alloc_core, endpoint),
                    (&after, held),
                    now,
                );
                cores.push(self.jobs[&tid].core);
            }
        }
        self.dirty = true;
        Ok(v)
    }

    /// Records a new job that passed every check: stored, given to the
    /// scheduler (held while `after` waits), told in its history.
    fn enqueue_new(
        &mut self,
        who: &Principal,
        (row, spec, project_id): (JobRow, StoredSpec, Option<i64>),
        (alloc_core, endpoint): (gigafab_core::AllocIdx, Option<i64>),
        (core_after, held): (&[(DepKind, JobIdx)], Option<String>),
        now: Ms,
    ) -> gigafab_api::Job {
        let (id, alloc_id, limit) = (row.id, row.alloc_id, row.time_limit_s);
        let cs = self.core_spec(&row, &spec);
        self.ops.push(store::jobs::insert(&row, project_id));
        if let Some(e) = endpoint {
            self.ops.push(store::endpoints::tag_replica(id, e));
        }
        let idx = self.core_submit(
            &cs,
            alloc_core,
            now.core_s(),
            endpoint.is_some(),
            core_after,
        );
        self.map_core(idx, id);
        let msg = format!(
            "queued: {}×{} for {} s on allocation {alloc_id}",
            row.gpus,
            filter_label(&spec),
            limit
        );
        let v = row.view(now);
        self.jobs.insert(
            id,
            LiveJob {
                row,
                spec,
                core: idx,
                next_seq: 1,
                devices: Vec::new(),
                cancel_requested: false,
                meter_start: Vec::new(),
                wait_events: 0,
                starts: 0,
            },
        );
        self.allocs.get_mut(&alloc_id).expect("checked").queued += 1;
        let inputs: Vec<String> = self.jobs[&id]
            .spec
            .inputs
            .iter()
            .map(|i| {
                format!(
                    "{} (manifest {}) in ${}",
                    i.reference, i.manifest_hash, i.var
                )
            })
            .collect();
        self.event(id, now, "submitted", msg);
        if let Some(h) = held {
            self.event(id, now, "held", h);
        }
        if !inputs.is_empty() {
            self.event(id, now, "inputs", inputs.join("; "));
        }
        self.shared.metrics.jobs_submitted.inc();
        self.audit(
            who,
            now,
            "submit",
            &format!("job {id}"),
            format!("allocation {alloc_id}"),
        );
        v
    }

    pub(super) fn cancel(
        &mut self,
        who: &Principal,
        id: i64,
        now: Ms,
    ) -> Result<Option<gigafab_api::Job>, ApiError> {
        // not held (ended or absent) or not the caller's to see: None,
        // and the handler tells which from the store
        let Some(j) = self.jobs.get(&id).filter(|j| who.sees_org(j.row.org_id)) else {
            return Ok(None);
        };
        let allowed = match who.role {
            Role::Admin | Role::Operator | Role::Owner => true,
            Role::Member => j.row.user_id == who.user_id,
        };
        if !allowed {
            return Err(ApiError::forbidden("members cancel only their own jobs"));
        }
        let core_idx = j.core;
        // a run waiting for its nodes to boot was never launched: it ends
        // here, as a queued job does
        let booting = j.row.state == "running"
            && j.row.handle.is_none()
            && !self.driver.in_flight.contains(&id)
            && self.relaunch.iter().any(|r| r.0 == id);
        if booting {
            self.audit(who, now, "cancel", &format!("job {id}"), String::new());
            self.relaunch.retain(|r| r.0 != id);
            self.end_job(
                id,
                now,
                "cancelled",
                None,
                format!("cancelled by {} before its run began", who.name),
                None,
            );
            self.dirty = true;
            let row = self.last_ended.take().expect("just ended");
            return Ok(Some(row.view(now)));
        }
        let queued = j.row.state == "queued";
        let handle = j.row.handle.clone();
        let first = !j.cancel_requested;
        self.audit(who, now, "cancel", &format!("job {id}"), String::new());
        if queued {
            self.core.withdraw(core_idx, now.core_s());
            self.end_job(
                id,
                now,
                "cancelled",
                None,
                format!("cancelled by {}", who.name),
                None,
            );
            self.dirty = true;
            let mut row = self.last_ended.take().expect("just ended");
            row.reason = Some(format!("cancelled by {}", who.name));
            return Ok(Some(row.view(now)));
        }
        if let Some(j) = self.jobs.get_mut(&id) {
            j.cancel_requested = true;
        }
        if first {
            // a launch still under way is stopped when it answers
            if let Some(h) = handle {
                self.driver.cancel(id, h);
            }
            self.event(
                id,
                now,
                "cancel_requested",
                format!("cancel requested by {}; stopping", who.name),
            );
        }
        let j = &self.jobs[&id];
        Ok(Some(j.row.view(now)))
    }

    /// Extends running job `id`'s time limit by `by_s` seconds, to at
    /// most `max_s` in all: its owner's or an admin's, within what its
    /// allocation's grant does not hold yet. Its engine is told; the
    /// scheduler plans with the new end.
    pub(super) fn extend_job(
        &mut self,
        who: &Principal,
        id: i64,
        by_s: i64,
        max_s: i64,
        now: Ms,
    ) -> Result<Option<gigafab_api::Job>, ApiError> {
        let Some(j) = self.jobs.get(&id).filter(|j| who.sees_org(j.row.org_id)) else {
            return Ok(None);
        };
        if !(who.role == Role::Admin || j.row.user_id == who.user_id) {
            return Err(ApiError::forbidden(
                "only a job's owner or an admin extends it",
            ));
        }
        let refused = |m: String| Err(ApiError::conflict("extension_refused", m));
        if j.cancel_requested || j.row.state != "running" || j.row.handle.is_none() {
            return refused(format!("job {id} is not running (yet): nothing to extend"));
        }
        let top = max_s.min(gigafab_api::MAX_TIME_LIMIT_S);
        let limit_s = j.row.time_limit_s.saturating_add(by_s.max(0));
        if by_s <= 0 || limit_s > top {
            return refused(format!(
                "job {id}: {by_s} s more would make {limit_s} s, over the longest allowed ({top} s)"
            ));
        }
        if let Some(room) = self.core.extension_room_s(j.core, now.core_s())
            && by_s as f64 > room + 1e-6
        {
            return refused(format!(
                "job {id}: allocation {} has room for {} s more at its {} accelerators (its grant, less what is used and what running jobs' limits hold)",
                j.row.alloc_id,
                room.floor() as i64,
                j.row.gpus
            ));
        }
        let (core_idx, handle, old) = (j.core, j.row.handle.clone(), j.row.time_limit_s);
        self.core.set_time_limit(core_idx, limit_s as f64);
        if let Some(j) = self.jobs.get_mut(&id) {
            j.row.time_limit_s = limit_s;
        }
        if let Some(h) = handle {
            self.driver.set_time_limit(id, h, limit_s as u64);
        }
        self.update_job_op(id);
        let msg = format!("time limit {old} s -> {limit_s} s by {}", who.name);
        self.event(id, now, "time_limit_changed", msg.clone());
        self.audit(who, now, "set_time_limit", &format!("job {id}"), msg);
        self.dirty = true;
        Ok(Some(self.jobs[&id].row.view(now)))
    }

    /// Ends an active job: frees its accelerators, charges its allocation,
    /// records the state and an event, and forgets it. `engine_s`: the
    /// run's length by the engine's own accounting (Slurm's), charged
    /// instead of what the controller watched.
    pub(super) fn end_job(
        &mut self,
        id: i64,
        now: Ms,
        state: &str,
        exit_code: Option<i64>,
        message: String,
        engine_s: Option<i64>,
    ) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let was_running = j.row.state == "running";
        // a failed run counts against its nodes (lemon nodes, health.rs)
        let mut failed_on: Vec<u32> = if was_running && state == "failed" {
            j.devices.iter().map(|&(n, _)| n).collect()
        } else {
            Vec::new()
        };
        failed_on.sort_unstable();
        failed_on.dedup();
        // only a run that ran and failed (not a launch the engine refused,
        // nor a run lost) says something of its nodes
        if exit_code.is_none() {
            failed_on.clear();
        }
        let tenant = j.row.org.clone();
        self.preflight_running.remove(&id);
        self.preflight_passed.remove(&id);
        let core_state = match state {
            "completed" => JobState::Completed,
            "timeout" => JobState::TimedOut,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Failed,
        };
        let core_idx = j.core;
        let (mut energy_j, mut carbon_g, mut source) = (0.0, None, None);
        if was_running {
            self.core.end_run(core_idx, now.core_s(), core_state);
            let cj = &self.core.jobs[core_idx as usize];
            let site = self.cfg.factory.pools[cj.run_pool as usize].site;
            energy_j = cj.energy_j;
            carbon_g = self.cfg.factory.sites[site]
                .carbon
                .as_ref()
                .map(|_| cj.carbon_g);
            source = Some("model".to_string());
            if let Some(e) = self.measured_energy(j, cj, energy_j, now) {
                let sp = &self.cfg.factory.sites[site];
                if let Some(cs) = &sp.carbon {
                    let s0 = j.row.started_ms.unwrap_or(now).core_s();
                    carbon_g = Some(e * sp.pue * cs.mean(s0, now.core_s()) / 3.6e6);
                }
                energy_j = e;
                source = Some("measured".to_string());
            }
        }
        let kind = match state {
            "completed" => "finished",
            s => s,
        };
        let message = match engine_s {
            Some(e) if was_running => format!("{message}; ran {e} s by the engine's accounting"),
            _ => message,
        };
        self.event(id, now, kind, message.clone());
        self.shared.metrics.finished(state);
        let j = self.jobs.get_mut(&id).expect("checked");
        let devices = std::mem::take(&mut j.devices);
        let w = j.spec.billing_weight.unwrap_or(1.0);
        let (gpus, alloc_id) = (j.row.gpus as f64, j.row.alloc_id);
        let started = j.row.started_ms;
        // this run's use (a preempted job's earlier runs are in gpu_s already)
        let mut charged = 0.0;
        if was_running && let Some(s) = started {
            let ran = match engine_s {
                Some(e) => e.max(0) as f64,
                None => now.secs_since(s),
            };
            // never past what its start reserved (its time limit): the
            // grace a stopped run is given, and the engine's lateness, are
            // not the tenant's to pay, nor a way past its grant
            let ran = ran.min(j.row.time_limit_s as f64);
            charged = w * gpus * ran;
            j.row.gpu_s += charged;
        }
        j.row.state = state.into();
        j.row.energy_j = energy_j;
        j.row.carbon_g = carbon_g;
        j.row.energy_source = source;
        j.row.exit_code = exit_code;
        j.row.ended_ms = Some(now);
        j.row.reason = Some(message);
        for (n, i) in devices {
            if let Some(d) = self.devices[n as usize].get_mut(i as usize) {
                *d = None;
            }
        }
        self.update_job_op(id);
        let used_before = self.allocs.get(&alloc_id).map_or(0.0, |a| a.used_gpu_s);
        if let Some(a) = self.allocs.get_mut(&alloc_id) {
            if was_running {
                a.running = a.running.saturating_sub(1);
                a.run_rate = (a.run_rate - w * gpus).max(0.0);
                a.run_start_sum =
                    (a.run_start_sum - w * gpus * started.unwrap_or(Ms(0)).0 as f64).max(0.0);
                if a.running == 0 {
                    a.run_rate = 0.0;
                    a.run_start_sum = 0.0;
                }
                a.used_gpu_s += charged;
            } else {
                a.queued = a.queued.saturating_sub(1);
            }
            a.ended += 1;
            a.energy_j += energy_j;
            a.carbon_g += carbon_g.unwrap_or(0.0);
            let (aid, used, e, c) = (a.id, a.used_gpu_s, a.energy_j, a.carbon_g);
            self.ops.push(store::allocs::usage(aid, used, e, c));
        }
        self.exhausted_notice(alloc_id, used_before);
        self.last_ended = self.jobs.remove(&id).map(|j| j.row);
        self.dirty = true;
        for n in failed_on {
            self.health_signal(
                n,
                gigafab_core::health::Signal::JobFailure {
                    job: id.to_string(),
                    tenant: tenant.clone(),
                },
                now,
            );
        }
    }

    /// A run the scheduler preempted for a job of higher priority: its
    /// accelerators went to that job in the same pass. The run is asked to
    /// stop (SIGTERM, the grace to checkpoint, then SIGKILL; `scancel` on
    /// Slurm), its use so far is charged, and the job waits in the queue
    /// again; it is launched anew, from its own checkpoint, once the old
    /// run has ended.
    pub(super) fn preempt_job(&mut self, id: i64, now: Ms) {
        let Some(j) = self.jobs.get_mut(&id) else {
            return;
        };
        let handle = j.row.handle.take();
        let devices = std::mem::take(&mut j.devices);
        let w = j.spec.billing_weight.unwrap_or(1.0);
        let (gpus, alloc_id) = (j.row.gpus as f64, j.row.alloc_id);
        let started = j.row.started_ms.unwrap_or(now);
        let used = w * gpus * now.secs_since(started).min(j.row.time_limit_s as f64);
        j.row.gpu_s += used;
        j.row.state = "queued".into();
        j.row.accelerators = None;
        j.row.reason = Some("preempted: waiting to run again".into());
        j.meter_start.clear();
        let cancel_requested = j.cancel_requested;
        for (n, i) in devices {
            if let Some(d) = self.devices[n as usize].get_mut(i as usize) {
                *d = None;
            }
        }
        let used_before = self.allocs.get(&alloc_id).map_or(0.0, |a| a.used_gpu_s);
        if let Some(a) = self.allocs.get_mut(&alloc_id) {
            a.running = a.running.saturating_sub(1);
            a.queued += 1;
            a.run_rate = (a.run_rate - w * gpus).max(0.0);
            a.run_start_sum = (a.run_start_sum - w * gpus * started.0 as f64).max(0.0);
            if a.running == 0 {
                a.run_rate = 0.0;
                a.run_start_sum = 0.0;
            }
            a.used_gpu_s += used;
            let (aid, u, e, c) = (a.id, a.used_gpu_s, a.energy_j, a.carbon_g);
            self.ops.push(store::allocs::usage(aid, u, e, c));
        }
        self.exhausted_notice(alloc_id, used_before);
        self.launches.retain(|&l| l != id);
        // a relaunch planned for the run just stopped is not for the next
        // one (`retry` stays: a launch that may have reached the engine is
        // looked for before another is made)
        self.relaunch.retain(|r| r.0 != id);
        if let Some(h) = handle {
            if !cancel_requested {
                self.driver.cancel(id, h.clone());
            }
            // durable: a restart asks it again to stop, and waits for it
            if let Some(j) = self.jobs.get_mut(&id) {
                j.row.stopping = Some(h.clone());
            }
            self.stopping.insert(h, id);
        }
        self.update_job_op(id);
        self.event(
            id,
            now,
            "preempted",
            "preempted by a job of higher priority: its run is stopped and it waits to run again"
                .into(),
        );
        self.shared.metrics.jobs_preempted.inc();
        if cancel_requested {
            // its cancel was asked before: it ends here, not in the queue
            if let Some(c) = self.jobs.get(&id).map(|j| j.core) {
                self.core.withdraw(c, now.core_s());
            }
            self.end_job(
                id,
                now,
                "cancelled",
                None,
                "cancelled (its run was stopping when it was preempted)".into(),
                None,
            );
        }
    }
}

/// Most planned ends and wake-ups an estimate runs through.
const ESTIMATE_EVENTS: usize = 5_000;
/// How long a job's estimate is answered again without running anew.
const ESTIMATE_FOR_MS: i64 = 10_000;
/// Least time between two estimates run anew (a client asking in a loop
/// gets the cached answer, or none, not a loop turn each time).
const ESTIMATE_EVERY_MS: i64 = 100;

impl Controller {
    /// `GET /jobs/{id}/estimate`: when a queued job would start if every
    /// running job used its whole time limit and nothing were submitted
    /// ahead of it (the scheduler run forward on a copy of its state).
    pub(super) fn estimate(
        &mut self,
        who: &Principal,
        id: i64,
        now: Ms,
    ) -> Result<Option<gigafab_api::JobEstimate>, ApiError> {
        // not held or not the caller's: None (see `cancel`)
        let Some(j) = self.jobs.get(&id).filter(|j| who.sees_org(j.row.org_id)) else {
            return Ok(None);
        };
        if j.row.state != "queued" {
            return Ok(Some(gigafab_api::JobEstimate {
                job: gigafab_api::JobId(id),
                state: j.row.state.clone(),
                estimated_start: None,
                basis: "the job is not queued".into(),
            }));
        }
        if let Some((t, v)) = self.estimates.get(&id)
            && now.0 - t.0 < ESTIMATE_FOR_MS
        {
            return Ok(Some(v.clone()));
        }
        if now.0 - self.last_estimate.0 < ESTIMATE_EVERY_MS {
            return Ok(Some(gigafab_api::JobEstimate {
                job: gigafab_api::JobId(id),
                state: j.row.state.clone(),
                estimated_start: None,
                basis: "estimates are busy; ask again in a moment".into(),
            }));
        }
        let core_idx = j.core;
        let state = j.row.state.clone();
        self.last_estimate = now;
        let at = self
            .core
            .forecast_starts(now.core_s(), &[core_idx], ESTIMATE_EVENTS)[0];
        let v = gigafab_api::JobEstimate {
            job: gigafab_api::JobId(id),
            state,
            estimated_start: at.map(|s| Ms::from_core_s(s).max(now).rfc3339()),
            basis: match at {
                Some(_) => "every running job uses its whole time limit; nothing is submitted ahead of it",
                None => "not within the next 5,000 job ends: it waits for capacity or an allocation that the fleet does not free by then",
            }
            .into(),
        };
        self.estimates
            .retain(|_, (t, _)| now.0 - t.0 < ESTIMATE_FOR_MS);
        self.estimates.insert(id, (now, v.clone()));
        Ok(Some(v))
    }
}

/// The scheduler's end state of a stored job state (None: not ended).
pub(super) fn core_state(s: &str) -> Option<gigafab_core::JobState> {
    use gigafab_core::JobState as S;
    match s {
        "completed" => Some(S::Completed),
        "failed" => Some(S::Failed),
        "timeout" => Some(S::TimedOut),
        "cancelled" => Some(S::Cancelled),
        _ => None,
    }
}

fn state_name(s: gigafab_core::JobState) -> &'static str {
    use gigafab_core::JobState as S;
    match s {
        S::Completed => "completed",
        S::Failed => "failed",
        S::TimedOut => "timeout",
        S::Cancelled => "cancelled",
        S::Waiting => "queued",
        S::Running => "running",
    }
}

/// The variable that names a job's organisation's project space.
pub const PROJECT_DIR_VAR: &str = "GIGAFAB_PROJECT_DIR";

/// The variables a task of an array runs with (Slurm's names as well, for
/// scripts written for it).
fn set_array_env(env: &mut BTreeMap<String, String>, first: i64, task: i64) {
    for (k, v) in [
        ("GIGAFAB_ARRAY_JOB_ID", first),
        ("GIGAFAB_ARRAY_TASK_ID", task),
        ("SLURM_ARRAY_JOB_ID", first),
        ("SLURM_ARRAY_TASK_ID", task),
    ] {
        env.insert(k.into(), v.to_string());
    }
}
