//! From the scheduler to the executor: restoring and adopting runs,
//! scheduling passes, starts, wait reasons, launches and polls.

use super::*;
use gigafab_core::catalog::SliceKind;
use gigafab_exec::{AssignedSlice, ExecError};

fn outcome_state(o: Outcome) -> &'static str {
    match o {
        Outcome::Completed => "completed",
        Outcome::Failed => "failed",
        Outcome::TimedOut => "timeout",
        Outcome::Cancelled => "cancelled",
    }
}

impl Controller {
    pub(super) fn restore_job(&mut self, row: JobRow, spec: StoredSpec, next_seq: i64) {
        let Some(a) = self.allocs.get(&row.alloc_id) else {
            return;
        };
        let alloc_core = a.core;
        let cs = self.core_spec(&row, &spec);
        let mut devices = Vec::new();
        let idx = if row.state == "running" {
            let labels: Vec<String> = row
                .accelerators
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let mut counts: BTreeMap<u32, u16> = BTreeMap::new();
            for l in &labels {
                if let Some((n, i)) = l.rsplit_once('/')
                    && let Some(&node) = self.node_by_name.get(n)
                    && let Ok(i) = i.parse::<u32>()
                    && let Some(slot) = self.devices[node as usize].get_mut(i as usize)
                {
                    *slot = Some(row.id);
                    devices.push((node, i));
                    *counts.entry(node).or_insert(0) += 1;
                }
            }
            let placement: Vec<(u32, u16)> = counts.into_iter().collect();
            let pool = placement
                .first()
                .map_or(0, |&(n, _)| self.core.cluster.pool_of(n));
            // a run that was to begin after a resume: no later than now
            let now_s = self.shared.clock.now().core_s();
            let start = row
                .started_ms
                .unwrap_or(row.submitted_ms)
                .core_s()
                .min(now_s);
            let w = spec.billing_weight.unwrap_or(1.0);
            let a = self.allocs.get_mut(&row.alloc_id).expect("checked");
            a.running += 1;
            a.run_rate += w * row.gpus as f64;
            a.run_start_sum += w * row.gpus as f64 * row.started_ms.unwrap_or(Ms(0)).0 as f64;
            let idx = self
                .core
                .restore_running(&cs, alloc_core, pool, &placement, start);
            self.core.jobs[idx as usize].service = spec.endpoint.is_some();
            idx
        } else {
            self.allocs.get_mut(&row.alloc_id).expect("checked").queued += 1;
            // what it waits for: active jobs by their index, jobs that
            // ended before the restart by their stored state; one that can
            // no longer be satisfied cancels it at the first pass
            let waits: Vec<(DepKind, i64)> = spec
                .after
                .iter()
                .filter_map(|(k, d)| DepKind::parse(k).map(|k| (k, *d)))
                .collect();
            let after = match self.resolve_after(&waits, |d| self.dep_states.get(&d).cloned()) {
                Ok(a) => a.into_iter().map(|(k, i, _)| (k, i)).collect(),
                // a never-satisfied one: an index no job has
                Err(_) => vec![(DepKind::AfterOk, JobIdx::MAX)],
            };
            self.core_submit(
                &cs,
                alloc_core,
                row.submitted_ms.core_s(),
                spec.endpoint.is_some(),
                &after,
            )
        };
        self.map_core(idx, row.id);
        self.jobs.insert(
            row.id,
            LiveJob {
                row,
                spec,
                core: idx,
                next_seq,
                devices,
                cancel_requested: false,
                meter_start: Vec::new(),
                wait_events: 0,
                starts: 0,
            },
        );
    }

    pub(super) fn map_core(&mut self, idx: JobIdx, id: i64) {
        let i = idx as usize;
        if self.core_job.len() <= i {
            self.core_job.resize(i + 1, 0);
            self.core_wait.resize(i + 1, 0);
        }
        self.core_job[i] = id;
    }

    /// After a restart: finds the run of a job recorded as running.
    pub(super) fn adopt(&mut self, id: i64, now: Ms) {
        let handle = self.jobs.get(&id).and_then(|j| j.row.handle.clone());
        let exec = self.shared.executor.clone();
        match exec.adopt(id, handle.as_deref()) {
            Ok((found, RunStatus::Running)) => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.row.handle = found.or(handle);
                }
                self.update_job_op(id);
                self.event(
                    id,
                    now,
                    "adopted",
                    "still running after a server restart; adopted".into(),
                );
            }
            Ok((found, RunStatus::Exited(rec))) => {
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.row.handle = found.or(handle);
                }
                let state = outcome_state(rec.outcome);
                self.end_job(
                    id,
                    Ms(rec.ended_at_ms.min(now.0).max(0)),
                    state,
                    rec.exit_code.map(i64::from),
                    format!("{} (while the server was down)", rec.message),
                    rec.elapsed_s,
                );
            }
            Ok((_, RunStatus::Lost { .. })) if handle.is_none() => {
                // decided and committed, but the server stopped before its
                // launch was recorded, and the engine has no trace of it:
                // it never started, so it starts now on its accelerators
                // its nodes may still be coming up (they are all powered up
                // at a restart under idle power-down)
                let boot = self.jobs.get(&id).map_or(now, |j| {
                    j.devices
                        .iter()
                        .filter_map(|&(n, _)| self.core.booting_until(n, now.core_s()))
                        .map(Ms::from_core_s)
                        .fold(now, Ms::max)
                });
                self.event(
                    id,
                    now,
                    "adopted",
                    "never launched before a server restart; launching now".into(),
                );
                if boot > now {
                    self.relaunch.push((id, boot));
                } else {
                    self.launches.push(id);
                }
            }
            Ok((_, RunStatus::Lost { message })) => {
                self.end_job(id, now, "failed", None, format!("lost: {message}"), None);
            }
            Err(e) if e.is_transient() => {
                // the engine is unreachable now: keep the job, poll later
                self.event(
                    id,
                    now,
                    "adopted",
                    format!("kept while the engine is unreachable: {e}"),
                );
                if handle.is_none() {
                    self.relaunch.push((id, now.plus(Duration::from_secs(5))));
                    self.retry.insert(id);
                }
            }
            Err(e) => {
                self.end_job(id, now, "failed", None, format!("lost: {e}"), None);
            }
        }
    }

    /// Asks the executor how running jobs are doing.
    pub(super) fn poll_runs(&mut self, now: Ms) {
        self.sample_telemetry(now);
        self.settle_drains(now);
        let due: Vec<i64> = self
            .relaunch
            .iter()
            .filter(|r| r.1 <= now)
            .map(|r| r.0)
            .collect();
        if !due.is_empty() {
            self.relaunch.retain(|r| r.1 > now);
            self.launches
                .extend(due.into_iter().filter(|id| self.jobs.contains_key(id)));
        }
        let mut running: Vec<(i64, String)> = self
            .jobs
            .values()
            .filter(|j| j.row.state == "running")
            .filter_map(|j| j.row.handle.clone().map(|h| (j.row.id, h)))
            .collect();
        running.extend(self.stopping.iter().map(|(h, &id)| (id, h.clone())));
        if !running.is_empty() {
            // one query per engine for all its runs, off the loop
            self.driver.poll(running);
        }
    }

    /// Applies what a poll found. Answers about runs the controller has
    /// moved on from (ended, preempted since) are stale and change nothing.
    pub(super) fn polled(
        &mut self,
        runs: Vec<(i64, String)>,
        states: Vec<Result<RunStatus, ExecError>>,
        now: Ms,
    ) {
        self.driver.polling = false;
        for ((id, handle), st) in runs.into_iter().zip(states) {
            if self.stopping.get(&handle) == Some(&id) {
                // a preempted run: gone once it has ended, whatever its end
                match st {
                    Ok(RunStatus::Running) => {}
                    Err(e) if e.is_transient() => {}
                    _ => {
                        self.stopping.remove(&handle);
                        if let Some(j) = self.jobs.get_mut(&id)
                            && j.row.stopping.as_deref() == Some(handle.as_str())
                        {
                            j.row.stopping = None;
                            self.update_job_op(id);
                        }
                    }
                }
                continue;
            }
            let current = self.jobs.get(&id).is_some_and(|j| {
                j.row.state == "running" && j.row.handle.as_deref() == Some(handle.as_str())
            });
            if !current {
                continue;
            }
            match st {
                Ok(RunStatus::Running) => {}
                Ok(RunStatus::Exited(rec)) => {
                    let state = outcome_state(rec.outcome);
                    let msg = match rec.outcome {
                        Outcome::Completed => "exit code 0".to_string(),
                        _ => rec.message.clone(),
                    };
                    self.end_job(
                        id,
                        now,
                        state,
                        rec.exit_code.map(i64::from),
                        msg,
                        rec.elapsed_s,
                    );
                }
                Ok(RunStatus::Lost { message }) => {
                    self.end_job(id, now, "failed", None, format!("lost: {message}"), None);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!("job {id}: {e}");
                }
                Err(e) => {
                    self.end_job(id, now, "failed", None, format!("lost: {e}"), None);
                }
            }
        }
    }

    /// One scheduling pass: the core decides, memory and the store follow,
    /// launches wait for the commit. Returns the core's wake-up time (ms).
    pub(super) fn schedule(&mut self, now: Ms) -> Option<Ms> {
        let dec = self.core.schedule(now.core_s()).clone();
        for &(j, r) in &dec.cancelled {
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            let msg = match r {
                Reason::AllocationExhausted => "allocation exhausted while waiting",
                Reason::AllocationExpired => "allocation expired while waiting",
                Reason::DependencyNeverSatisfied => {
                    "a job it depends on ended in a way that can never satisfy it"
                }
                _ => "refused by the scheduler",
            };
            self.end_job(
                id,
                now,
                "cancelled",
                None,
                format!("{msg} ({})", r.code()),
                None,
            );
        }
        // the preempted runs' devices first: the jobs that preempted them
        // start on them
        for &(j, _) in &dec.preempted {
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            self.preempt_job(id, now);
        }
        for &j in &dec.started {
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            self.start_job(id, j, now);
        }
        self.apply_power(now);
        self.record_waits(now);
        self.expiry_notices(now);
        // never before the time asked for: a pass a fraction of a millisecond
        // early would find nothing to do and ask for the same time again
        dec.wakeup.map(Ms::from_core_s)
    }

    pub(super) fn start_job(&mut self, id: i64, j: JobIdx, now: Ms) {
        let placement = self.core.jobs[j as usize].placement.clone();
        let pool = self.core.jobs[j as usize].run_pool as usize;
        let p = &self.cfg.factory.pools[pool];
        let t = self.cfg.factory.catalog.get(p.accel);
        let weight = t.billing_weight;
        let mut devices = Vec::new();
        for &(n, c) in &placement {
            let mut left = c;
            for (i, d) in self.devices[n as usize].iter_mut().enumerate() {
                if left == 0 {
                    break;
                }
                if d.is_none() {
                    *d = Some(id);
                    devices.push((n, i as u32));
                    left -= 1;
                }
            }
        }
        let labels: Vec<String> = devices
            .iter()
            .map(|&(n, i)| format!("{}/{}", self.node_names[n as usize], i))
            .collect();
        // a slice's energy is its share of the model's: a measured
        // accelerator's counter is not the slice's alone
        let whole = |n: u32| {
            self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].slices_per_accel <= 1
        };
        let meter_start: Vec<(u32, f64)> = devices
            .iter()
            .filter(|(n, _)| Some(*n) == self.tele_node && whole(*n))
            .map(|&(_, i)| (i, self.meter.energy_j(i)))
            .collect();
        // on resumed nodes the run begins once they are up
        let begin = Ms::from_core_s(self.core.jobs[j as usize].run_start).max(now);
        let Some(job) = self.jobs.get_mut(&id) else {
            return;
        };
        job.meter_start = meter_start;
        job.starts += 1;
        job.devices = devices;
        job.row.state = "running".into();
        job.row.started_ms = Some(begin);
        job.row.reason = None;
        job.row.accelerators = Some(serde_json::to_string(&labels).unwrap_or_default());
        job.spec.billing_weight = Some(weight);
        let gpus = job.row.gpus as f64;
        let alloc_id = job.row.alloc_id;
        if let Some(a) = self.allocs.get_mut(&alloc_id) {
            a.queued = a.queued.saturating_sub(1);
            a.running += 1;
            a.run_rate += weight * gpus;
            a.run_start_sum += weight * gpus * begin.0 as f64;
        }
        self.update_job_op(id);
        if begin > now {
            self.event(
                id,
                now,
                "started",
                format!(
                    "started on {}, powered down until now: its run begins once they are up ({} s)",
                    labels.join(", "),
                    (begin.0 - now.0 + 999) / 1000
                ),
            );
            self.relaunch.push((id, begin));
        } else {
            self.event(
                id,
                now,
                "started",
                format!("started on {}", labels.join(", ")),
            );
            self.launches.push(id);
        }
        self.shared.metrics.jobs_started.inc();
    }

    /// Records why queued jobs wait, when that changes: the cause is the
    /// one the pass found ([`SchedCore::wait_of`]); only its wording
    /// (which drained nodes, which allocation) is added here.
    pub(super) fn record_waits(&mut self, now: Ms) {
        use gigafab_core::sched::Wait;
        let policy = self.cfg.policy.kind.name();
        let mut changed: Vec<(JobIdx, u8)> = Vec::new();
        // the scan reads only the core's arrays: no lookups, no strings
        for j in self.core.queue_order() {
            let ju = j as usize;
            let kind = match self.core.wait_of(j) {
                None => continue,
                Some(Wait::AllocationWindow) => 3u8,
                Some(Wait::AllocationReserve) => 6,
                Some(Wait::Capacity) if self.core.waits_on_drained(j) => 5,
                Some(Wait::Capacity) => 1,
                Some(Wait::Power) => 4,
                Some(Wait::Carbon) => 7,
                Some(Wait::Suspect) => 8,
                // held jobs are in no queue: said at submission
                Some(Wait::Dependency) => continue,
                Some(Wait::Turn) => 2,
            };
            if self.core_wait.get(ju).copied().unwrap_or(0) != kind {
                changed.push((j, kind));
            }
        }
        let mut by_reason: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (j, kind) in changed {
            self.core_wait[j as usize] = kind;
            let id = self.core_job[j as usize];
            let Some(job) = self.jobs.get(&id) else {
                continue;
            };
            let msg = match kind {
                3 => {
                    let a = &self.allocs[&job.row.alloc_id];
                    format!(
                        "waiting: allocation {} starts at {}",
                        a.id,
                        a.valid_from_ms.rfc3339()
                    )
                }
                1 if !job.spec.sites.is_empty() => format!(
                    "waiting: residency allows only site {}, full (no {}×{} gang free there)",
                    job.spec.sites.join(" or "),
                    job.row.gpus,
                    filter_label(&job.spec)
                ),
                1 => format!(
                    "waiting: no {}×{} gang free",
                    job.row.gpus,
                    filter_label(&job.spec)
                ),
                4 => "waiting: site power budget".to_string(),
                8 => {
                    "waiting: a long gang is kept off suspect nodes, and the healthy ones are busy"
                        .to_string()
                }
                7 => format!(
                    "waiting: deferred to a lower-carbon hour, until {}",
                    Ms::from_core_s(self.core.jobs[job.core as usize].defer_until).rfc3339()
                ),
                6 => {
                    let a = &self.allocs[&job.row.alloc_id];
                    format!(
                        "waiting: allocation {}: the time limits of its running jobs hold the rest of its {:.3} GPU-hours",
                        a.id,
                        a.granted_gpu_s / 3600.0
                    )
                }
                5 => {
                    let c = job.core;
                    let mut drained: Vec<&str> = Vec::new();
                    for p in self.core.candidate_pools(c) {
                        let st = &self.core.cluster.pools[p as usize];
                        for n in st.first_node..st.first_node + st.nodes {
                            if self.core.is_drained(n) && drained.len() < 8 {
                                drained.push(&self.node_names[n as usize]);
                            }
                        }
                    }
                    format!(
                        "waiting: no {}×{} gang free; drained: {}",
                        job.row.gpus,
                        filter_label(&job.spec),
                        drained.join(", ")
                    )
                }
                _ => format!("waiting: priority (other jobs come first in {policy} order)"),
            };
            let job = self.jobs.get_mut(&id).expect("present");
            if job.row.reason.as_deref() == Some(msg.as_str()) {
                // the reason it already has (reloaded after a restart):
                // nothing to record, nothing to write
                continue;
            }
            job.row.reason = Some(msg.clone());
            if job.wait_events < MAX_WAIT_EVENTS {
                job.wait_events += 1;
                self.event(id, now, "waiting", msg.clone());
            }
            by_reason.entry(msg).or_default().push(id);
        }
        // one statement per distinct reason
        for (msg, ids) in by_reason {
            self.ops.extend(store::jobs::reasons(&msg, &ids));
        }
    }

    /// Starts the processes of jobs whose start is now durable (the
    /// launches run off the loop; [`Controller::launched`] takes their
    /// answers).
    pub(super) fn launch_pending(&mut self, now: Ms) {
        for id in std::mem::take(&mut self.launches) {
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
            if j.row.state != "running" || j.row.handle.is_some() {
                // not to start, or launched already (a stale relaunch)
                continue;
            }
            if self.preflight_gate(id, now) {
                // its nodes are checked first (health.rs)
                continue;
            }
            let Some(j) = self.jobs.get(&id) else {
                continue;
            };
            if self.stopping.values().any(|&s| s == id) || self.driver.in_flight.contains(&id) {
                // its preempted run is still stopping, or an earlier launch
                // has not answered: one engine run at a time
                self.relaunch.push((id, now.plus(self.cfg.poll)));
                continue;
            }
            let accels: Vec<AssignedAccel> = j
                .devices
                .iter()
                .map(|&(n, i)| {
                    let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                    let vendor = match self.cfg.factory.catalog.get(p.accel).vendor {
                        Vendor::Nvidia => DeviceVendor::Nvidia,
                        Vendor::Amd => DeviceVendor::Amd,
                        Vendor::Other => DeviceVendor::Other,
                    };
                    let t = self.cfg.factory.catalog.get(p.accel);
                    let k = p.slices_per_accel.max(1);
                    let memory_mib = (t.memory_gb * 1024.0).round() as u64;
                    // the instance NVML listed there, if its memory is the
                    // profile's (NVML reports a little less than the name
                    // says): another layout's instance is not this slice
                    let mig = self.mig_uuids.get(&(n, i / k, i % k)).filter(|m| {
                        let mib = m.memory_mib as f64;
                        mib >= 0.85 * memory_mib as f64 && mib <= 1.05 * memory_mib as f64
                    });
                    let slice = t.slice.as_ref().map(|s| AssignedSlice {
                        kind: s.kind.as_str().to_string(),
                        name: s.name.clone(),
                        slot: i % k,
                        of: k,
                        memory_mib,
                        uuid: mig.map(|m| m.uuid.clone()),
                        gpu_instance: mig.and_then(|m| m.gpu_instance),
                        compute_instance: mig.and_then(|m| m.compute_instance),
                        gpu_minor: mig.and_then(|m| m.gpu_minor),
                        // the partition's device where the node shows one
                        // device per partition, its GPU's where it shows one
                        // per GPU (SPX), and neither's where it shows
                        // another count (a layout other than the pool's)
                        device_mode: (s.kind == SliceKind::Partition)
                            .then(|| {
                                let devs = self.amd_modes.keys().filter(|(m, _)| *m == n).count();
                                let per = p.per_node as usize;
                                if devs == 0 {
                                    None
                                } else if devs == per {
                                    self.amd_modes.get(&(n, i)).cloned()
                                } else if devs * k as usize == per {
                                    self.amd_modes.get(&(n, i / k)).cloned()
                                } else {
                                    Some(format!("a {devs}-device"))
                                }
                            })
                            .flatten(),
                    });
                    // a slice's device is its accelerator's, except an AMD
                    // partition's: a device of its own
                    let index = match t.slice.as_ref().map(|s| s.kind) {
                        Some(SliceKind::Partition) | None => i,
                        Some(_) => i / k,
                    };
                    AssignedAccel {
                        node: self.node_names[n as usize].clone(),
                        index,
                        vendor,
                        slice,
                    }
                })
                .collect();
            let spec = LaunchSpec {
                // a replica serves on the port its endpoint gave it, a
                // session's app on its session's (GIGAFAB_ variables are
                // the server's alone)
                serve_port: (j.spec.endpoint.is_some()
                    || j.spec.env.contains_key("GIGAFAB_SESSION"))
                .then(|| j.spec.env.get("PORT")?.parse().ok())
                .flatten(),
                read_only: j
                    .spec
                    .inputs
                    .iter()
                    .map(|i| i.path.clone().into())
                    .collect(),
                job_id: id,
                command: j.spec.command.clone(),
                env: j
                    .spec
                    .env
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                accelerators: accels,
                time_limit_s: j.row.time_limit_s as u64,
                workdir: j.spec.workdir.as_ref().map(Into::into),
                accel_type: j.devices.first().map(|&(n, _)| {
                    let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                    self.cfg.factory.catalog.get(p.accel).id.clone()
                }),
                gpus: j.row.gpus as u32,
                per_node: j
                    .devices
                    .first()
                    .map(|&(n, _)| {
                        self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].per_node
                    })
                    .unwrap_or(1),
                account: Some(j.row.alloc_id.to_string()),
                grant_gpu_minutes: self
                    .allocs
                    .get(&j.row.alloc_id)
                    .map(|a| (a.granted_gpu_s / 60.0).ceil() as u64),
                site: j.devices.first().map(|&(n, _)| {
                    let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                    self.cfg.factory.sites[p.site].name.clone()
                }),
                run_as: self.account_of(j.row.user_id, &j.row.org),
                // as asked, else the job's share of its node's memory by
                // its accelerators there (as Slurm's DefMemPerGPU)
                memory_bytes: j
                    .spec
                    .memory_gb
                    .or_else(|| {
                        let &(n, _) = j.devices.first()?;
                        let p = &self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize];
                        let on_node = j.devices.iter().filter(|d| d.0 == n).count() as f64;
                        (p.memory_gb_per_node > 0.0 && p.per_node > 0)
                            .then(|| p.memory_gb_per_node * on_node / p.per_node as f64)
                    })
                    .map(|g| (g * 1e9) as u64),
                cpus: j.spec.cpus,
                retry: self.retry.contains(&id),
            };
            let mut spec = spec;
            if spec.serve_port.is_some() {
                // where a replica listens: what its engine says (`{host}`)
                let host = self.shared.executor.serve_host(&spec);
                for a in spec.command.iter_mut() {
                    *a = a.replace("{host}", host);
                }
                for (_, v) in spec.env.iter_mut() {
                    *v = v.replace("{host}", host);
                }
            }
            let starts = j.starts;
            self.driver.launch(spec, starts);
        }
    }

    /// Applies a launch's answer: the run's handle is recorded (committed
    /// with the next batch); a run whose job was cancelled or preempted
    /// while it was being launched is stopped at once.
    pub(super) fn launched(
        &mut self,
        id: i64,
        start: u32,
        result: Result<String, ExecError>,
        now: Ms,
    ) {
        self.driver.in_flight.remove(&id);
        let Some(j) = self.jobs.get_mut(&id) else {
            if let Ok(h) = result {
                self.driver.cancel(id, h);
            }
            return;
        };
        // the answer belongs to the job's current start (not to one it was
        // preempted from while the launch was under way)
        let waiting_for_it =
            j.row.state == "running" && j.row.handle.is_none() && j.starts == start;
        match result {
            Ok(h) if waiting_for_it => {
                self.retry.remove(&id);
                j.row.handle = Some(h.clone());
                let cancel = j.cancel_requested;
                self.update_job_op(id);
                if cancel {
                    self.driver.cancel(id, h);
                }
            }
            Ok(h) if j.row.handle.as_deref() == Some(h.as_str()) => {
                // already adopted as this job's run (a reload meanwhile)
            }
            Ok(h) => {
                // preempted (or restarted) while launching: this run is
                // not the job's; it is stopped, and the job's next launch
                // waits until it has ended
                self.driver.cancel(id, h.clone());
                if j.row.stopping.is_none() {
                    j.row.stopping = Some(h.clone());
                    self.update_job_op(id);
                }
                self.stopping.insert(h, id);
            }
            Err(_) if !waiting_for_it => {}
            Err(e) if e.is_transient() => {
                // launch again shortly (the executor adopts rather
                // than submits twice)
                self.event(id, now, "launch_deferred", format!("{e}"));
                self.relaunch.push((id, now.plus(Duration::from_secs(5))));
                self.retry.insert(id);
            }
            Err(e) => {
                self.retry.remove(&id);
                self.end_job(id, now, "failed", None, format!("cannot launch: {e}"), None);
            }
        }
    }

    /// Applies an answer from the executor.
    pub(super) fn apply(&mut self, d: super::driver::Done, now: Ms) {
        match d {
            super::driver::Done::Launched { job, start, result } => {
                self.launched(job, start, result, now)
            }
            super::driver::Done::Polled { runs, states } => self.polled(runs, states, now),
            super::driver::Done::Preflight { job, start, failed } => {
                self.driver.preflights.remove(&job);
                self.preflight_done(job, start, failed, now)
            }
        }
    }
}
