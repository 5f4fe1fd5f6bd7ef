//! The fleet: nodes, drains, telemetry and the gauges of `/metrics`.

use super::*;

impl Controller {
    /// The first node of the first pool whose vendor is the telemetry
    /// devices' (device index = accelerator index on that node).
    pub(super) fn telemetry_node(&self) -> Option<u32> {
        let t = self.shared.telemetry.as_ref()?;
        let devs = t.devices().ok()?;
        let want = match devs.first()?.vendor {
            gigafab_telemetry::Vendor::Nvidia => Vendor::Nvidia,
            gigafab_telemetry::Vendor::Amd => Vendor::Amd,
            gigafab_telemetry::Vendor::Other => Vendor::Other,
        };
        let f = &self.cfg.factory;
        f.pools
            .iter()
            .find(|p| f.catalog.get(p.accel).vendor == want)
            .map(|p| p.first_node)
    }

    /// Reads the telemetry: integrates the devices' energy and feeds
    /// their health signals to the health model.
    pub(super) fn sample_telemetry(&mut self, now: Ms) {
        let Some(t) = self.shared.telemetry.clone() else {
            return;
        };
        match t.sample() {
            Ok(samples) => {
                self.meter.add_all(&samples);
                if let Some(n) = self.tele_node {
                    self.observe_samples(n, &samples, now);
                }
            }
            Err(e) => {
                if !self.tele_failed {
                    tracing::warn!("telemetry: {e}; energy falls back to the model");
                    self.tele_failed = true;
                }
            }
        }
    }

    /// Measured energy of a run that ended at `now`: the devices' meters
    /// since its start, plus the modelled node share (`model_j` minus the
    /// modelled accelerator energy). None without telemetry readings.
    pub(super) fn measured_energy(
        &self,
        j: &LiveJob,
        cj: &gigafab_core::Job,
        model_j: f64,
        now: Ms,
    ) -> Option<f64> {
        if j.meter_start.is_empty() || self.tele_failed {
            return None;
        }
        let measured: f64 = j
            .meter_start
            .iter()
            .map(|&(i, e0)| (self.meter.energy_j(i) - e0).max(0.0))
            .sum();
        if measured <= 0.0 {
            return None;
        }
        let dt = now.secs_since(j.row.started_ms.unwrap_or(now));
        let model_accel = cj.gpus as f64 * cj.power_w * dt;
        Some((model_j - model_accel).max(0.0) + measured)
    }

    /// Why a job can never run, in words: the fleet's pools.
    pub(super) fn fleet_summary(&self, r: gigafab_core::Reason) -> String {
        if r != gigafab_core::Reason::Unsatisfiable {
            return format!(" ({})", r.code());
        }
        let f = &self.cfg.factory;
        let pools: Vec<String> = f
            .pools
            .iter()
            .map(|p| {
                let t = f.catalog.get(p.accel);
                format!(
                    "{} ({} nodes × {} {}, {} GB each)",
                    p.name, p.nodes, p.per_node, t.id, t.memory_gb
                )
            })
            .collect();
        format!("; its pools: {}", pools.join(", "))
    }

    /// The gauges of `/metrics`, read from the live state.
    pub(super) fn metrics_snapshot(&mut self, now: Ms) -> crate::metrics::Snapshot {
        use crate::metrics::{AllocSnap, PoolSnap, SiteSnap, Snapshot};
        let f = &self.cfg.factory;
        let mut pools: Vec<PoolSnap> = f
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let st = &self.core.cluster.pools[i];
                let drained: u64 = (st.first_node..st.first_node + st.nodes)
                    .map(|n| self.core.drained_accelerators(n) as u64)
                    .sum();
                let total = p.accelerators();
                let powered_down = (st.first_node..st.first_node + st.nodes)
                    .filter(|&n| self.core.is_powered_down(n))
                    .count() as u64
                    * p.per_node as u64;
                PoolSnap {
                    name: p.name.clone(),
                    busy: st.cap_total - st.free_total,
                    idle: st.free_total,
                    drained,
                    powered_down,
                    down: total.saturating_sub(st.cap_total + drained + powered_down),
                    ..PoolSnap::default()
                }
            })
            .collect();
        let mut per_alloc: HashMap<i64, (u64, f64)> = HashMap::new();
        let now_s = now.core_s();
        for j in self.core.queue_order() {
            let wait = (now_s - self.core.jobs[j as usize].submit_s).max(0.0);
            for p in self.core.candidate_pools(j) {
                let ps = &mut pools[p as usize];
                ps.queued += 1;
                ps.oldest_wait_s = ps.oldest_wait_s.max(wait);
            }
            let id = self.core_job.get(j as usize).copied().unwrap_or(0);
            if let Some(job) = self.jobs.get(&id) {
                let e = per_alloc.entry(job.row.alloc_id).or_default();
                e.0 += 1;
                e.1 = e.1.max(wait);
            }
        }
        let sites = self
            .core
            .site_energy(now_s)
            .into_iter()
            .zip(&f.sites)
            .enumerate()
            .map(|(i, (e, s))| SiteSnap {
                name: s.name.clone(),
                power_w: e.power_w,
                budget_w: e.budget_w,
                intensity: self.core.intensity(i, now_s),
                carbon_g: s.carbon.as_ref().map(|_| e.carbon_g),
            })
            .collect();
        let allocations = self
            .allocs
            .values()
            .map(|a| {
                let (queued, oldest_wait_s) = per_alloc.get(&a.id).copied().unwrap_or_default();
                AllocSnap {
                    id: a.id,
                    name: a.name.clone(),
                    org: a.org_name.clone(),
                    queued,
                    oldest_wait_s,
                    used_gpu_hours: a.used_at(now) / 3600.0,
                    granted_gpu_hours: a.granted_gpu_s / 3600.0,
                    energy_kwh: a.energy_j / 3.6e6,
                }
            })
            .collect();
        Snapshot {
            pools,
            sites,
            allocations,
            queued: self.core.queued() as u64,
            running: self.core.n_running as u64,
            health: self.health_counts(),
            devices: self.device_gauges(),
        }
    }

    /// A node as `who` may see it: another organisation's job ids are not
    /// shown (only how many accelerators are busy).
    pub(super) fn node_json(&self, n: u32, who: &Principal) -> gigafab_api::FleetNode {
        let pool_i = self.core.cluster.pool_of(n) as usize;
        let p = &self.cfg.factory.pools[pool_i];
        let t = self.cfg.factory.catalog.get(p.accel);
        let (cap, free) = self.core.cluster.node_state(n);
        let mut jobs: Vec<gigafab_api::JobId> = self.devices[n as usize]
            .iter()
            .flatten()
            .copied()
            .filter(|id| {
                who.global()
                    || self
                        .jobs
                        .get(id)
                        .is_some_and(|j| who.sees_org(j.row.org_id))
            })
            .map(gigafab_api::JobId)
            .collect();
        jobs.dedup();
        let busy = self.devices[n as usize]
            .iter()
            .filter(|d| d.is_some())
            .count();
        use gigafab_api::NodeState;
        let health = self.health.model.state(n);
        gigafab_api::FleetNode {
            name: self.node_names[n as usize].clone(),
            pool: p.name.clone(),
            site: self.cfg.factory.sites.get(p.site).map(|s| s.name.clone()),
            type_: t.id.to_string(),
            vendor: t.vendor.to_string(),
            accelerators: p.per_node,
            free: free.into(),
            busy: busy as u32,
            down: if self.core.is_drained(n) || self.core.is_powered_down(n) {
                0
            } else {
                p.per_node as i64 - cap as i64
            },
            state: if self.core.is_drained(n) {
                NodeState::Drained
            } else if self.core.is_powered_down(n) {
                NodeState::PoweredDown
            } else if self
                .core
                .booting_until(n, self.shared.clock.now().core_s())
                .is_some()
            {
                NodeState::Booting
            } else {
                NodeState::Up
            },
            reason: self.drain_reasons.get(&n).cloned(),
            health: super::health::api_health(health),
            // the evidence behind it is for operators
            health_reason: if who.global() {
                self.health.model.node(n).and_then(|h| h.reason.clone())
            } else {
                None
            },
            jobs,
        }
    }

    /// The pools with their free and drained accelerators now (public: no
    /// node, job or tenant in it).
    pub(super) fn offer_json(&self) -> gigafab_api::Offer {
        let f = &self.cfg.factory;
        let pools: Vec<gigafab_api::OfferPool> = f
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let st = &self.core.cluster.pools[i];
                let t = f.catalog.get(p.accel);
                gigafab_api::OfferPool {
                    name: p.name.clone(),
                    site: f
                        .sites
                        .get(p.site)
                        .map(|s| s.name.clone())
                        .unwrap_or_default(),
                    type_: t.id.to_string(),
                    vendor: t.vendor.to_string(),
                    memory_gb: t.memory_gb,
                    accelerators: p.accelerators(),
                    free: st.free_total,
                    drained: (st.first_node..st.first_node + st.nodes)
                        .map(|n| self.core.drained_accelerators(n) as u64)
                        .sum(),
                }
            })
            .collect();
        gigafab_api::Offer {
            accelerators: f.accelerators(),
            free: self.core.cluster.free_total(),
            pools,
            calls: Vec::new(),
        }
    }

    pub(super) fn fleet_json(&self, who: &Principal) -> gigafab_api::Fleet {
        let nodes = (0..self.node_names.len() as u32)
            .map(|n| self.node_json(n, who))
            .collect();
        gigafab_api::Fleet {
            nodes,
            accelerators: self.cfg.factory.accelerators(),
            free: self.core.cluster.free_total(),
            busy: self.core.busy_accelerators(),
            physical_accelerators: self.cfg.factory.physical_accelerators(),
        }
    }

    pub(super) fn drain(
        &mut self,
        who: &Principal,
        node: &str,
        drain: bool,
        reason: Option<String>,
        now: Ms,
    ) -> Result<gigafab_api::FleetNode, ApiError> {
        if !who.global() {
            return Err(ApiError::forbidden(
                "only an admin or operator drains nodes",
            ));
        }
        let n = *self.node_by_name.get(node).ok_or_else(|| {
            ApiError::not_found("node_not_found", format!("node `{node}` not found"))
        })?;
        let was = self.core.is_drained(n);
        if drain != was {
            // the engine too (Slurm: scontrol ... state=drain|resume)
            let site = self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].site;
            self.driver.drain_node(
                self.cfg.factory.sites[site].name.clone(),
                node.to_string(),
                format!(
                    "[gigafab] {}",
                    reason.as_deref().unwrap_or("drained by an operator")
                ),
                drain,
            );
        }
        if drain && !was {
            self.core.drain(n);
            self.ops
                .push(store::fleet::drain(node, now, reason.as_deref()));
            if let Some(r) = &reason {
                self.drain_reasons.insert(n, r.clone());
            }
        } else if !drain && was {
            // repaired: healthy again in the health model too
            if let Some(t) = self.health.model.override_state(
                n,
                gigafab_core::health::HealthState::Healthy,
                &format!("resumed by {}", who.name),
                now.core_s(),
            ) {
                tracing::info!("node {node}: {} → healthy ({})", t.from.name(), t.reason);
            }
            self.core.set_suspect(n, false);
            self.core.resume(n);
            self.ops.push(store::fleet::resume(node));
            self.drain_reasons.remove(&n);
            self.dirty = true;
        }
        self.audit(
            who,
            now,
            if drain { "drain" } else { "resume" },
            &format!("node {node}"),
            reason.unwrap_or_default(),
        );
        Ok(self.node_json(n, who))
    }
}
