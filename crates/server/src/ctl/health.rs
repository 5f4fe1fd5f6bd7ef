//! Health live: the telemetry's samples are fed to the core's health
//! model ([`gigafab_core::health`]); a node that must leave service is
//! drained (in the scheduler, the store and the engine), the run on a
//! failed accelerator is requeued from its last checkpoint, and the
//! transitions and Xids go to `/metrics` and the log.

use std::collections::{HashMap, VecDeque};

use gigafab_core::health::{HealthModel, HealthPolicy, HealthState, Signal, Transition};
use gigafab_telemetry::Sample;

use super::*;

/// Readings kept per accelerator.
const SERIES: usize = 120;

/// How a pre-flight error that is the check's own (it could not run, or
/// did not answer) begins: not a fault of the node.
pub(super) const CHECK_BROKEN: &str = "check:";

/// The health model and what it needs between samples.
pub(super) struct LiveHealth {
    pub model: HealthModel,
    /// Per (node, device): its counters at the last reading (uncorrected
    /// and corrected ECC, PCIe replays, link errors).
    ecc: HashMap<(u32, u32), [Option<u64>; 4]>,
    /// Per (node, device): its latest readings, oldest first.
    pub series: HashMap<(u32, u32), VecDeque<Sample>>,
    /// Per node: the agent run (its start) and the last batch taken.
    agents: HashMap<u32, (i64, u64)>,
}

impl LiveHealth {
    pub(super) fn new(nodes: u32) -> LiveHealth {
        LiveHealth {
            model: HealthModel::new(nodes, HealthPolicy::default()),
            ecc: HashMap::new(),
            series: HashMap::new(),
            agents: HashMap::new(),
        }
    }
}

impl Controller {
    /// Turns one telemetry reading of node `node` into health signals.
    pub(super) fn observe_samples(&mut self, node: u32, samples: &[Sample], now: Ms) {
        let thermal = self.health.model.policy.thermal_suspect_c;
        // the node's accelerators' board power: a reading well above it is
        // a power anomaly
        let peak = {
            let p = &self.cfg.factory.pools[self.core.cluster.pool_of(node) as usize];
            self.cfg.factory.catalog.get(p.accel).peak_watts
        };
        for s in samples {
            let gpu = s.index.min(u16::MAX as u32) as u16;
            if s.unreadable {
                self.health_signal(node, Signal::Unreadable { gpu }, now);
            }
            for &code in &s.xid_errors {
                // Xids outside the table share one label: a reading cannot
                // make the metric's label sets grow without bound
                let known = u32::try_from(code)
                    .ok()
                    .and_then(gigafab_core::health::xid)
                    .is_some();
                self.shared
                    .metrics
                    .xid_errors
                    .get_or_create(&crate::metrics::XidLabel {
                        node: self.node_names[node as usize].clone(),
                        gpu: s.index.to_string(),
                        xid: if known {
                            code.to_string()
                        } else {
                            "other".into()
                        },
                    })
                    .inc();
                let code = code.min(u32::MAX as u64) as u32;
                self.health_signal(node, Signal::Xid { gpu, code }, now);
            }
            let series = self.health.series.entry((node, s.index)).or_default();
            if series.len() >= SERIES {
                series.pop_front();
            }
            series.push_back(s.clone());
            // counters: what rose since the last reading
            let now_c = [
                s.ecc_uncorrected,
                s.ecc_corrected,
                s.pcie_replays,
                s.link_errors,
            ];
            let before = self.health.ecc.get(&(node, s.index)).copied();
            // a counter missing from a reading keeps its last value
            let merged: [Option<u64>; 4] =
                std::array::from_fn(|k| now_c[k].or(before.and_then(|b| b[k])));
            self.health.ecc.insert((node, s.index), merged);
            let rise = |k: usize| match (before.and_then(|b| b[k]), now_c[k]) {
                (Some(b), Some(n)) if n > b => n - b,
                _ => 0,
            };
            let (unc, cor, pcie, link) = (rise(0), rise(1), rise(2), rise(3));
            if unc > 0 {
                self.health_signal(node, Signal::EccUncorrectable { gpu, count: unc }, now);
            }
            if cor > 0 {
                self.health_signal(node, Signal::EccCorrectable { gpu, count: cor }, now);
            }
            if pcie > 0 {
                self.health_signal(node, Signal::PcieReplays { gpu, count: pcie }, now);
            }
            if link > 0 {
                self.health_signal(node, Signal::LinkErrors { gpu, count: link }, now);
            }
            if let Some(w) = s.power_w
                && peak > 0.0
                && w > 1.05 * peak
            {
                self.health_signal(
                    node,
                    Signal::PowerExcess {
                        gpu,
                        watts: w - peak,
                    },
                    now,
                );
            }
            let throttled = s.thermal_throttled == Some(true);
            if throttled || s.temperature_c.is_some_and(|t| t >= thermal) {
                self.health_signal(
                    node,
                    Signal::Thermal {
                        gpu,
                        celsius: s.temperature_c.unwrap_or(f64::NAN),
                        throttled,
                    },
                    now,
                );
            }
        }
        for t in self.health.model.tick(now.core_s()) {
            self.apply_health(t, None, now);
        }
    }

    /// Draining nodes whose jobs have all left are drained (health); each
    /// poll.
    pub(super) fn settle_drains(&mut self, now: Ms) {
        if self.health.model.count(HealthState::Draining) == 0 {
            return;
        }
        let devices = &self.devices;
        for t in self.health.model.settle(
            |n| devices[n as usize].iter().all(Option::is_none),
            now.core_s(),
        ) {
            self.apply_health(t, None, now);
        }
    }

    /// Feeds one signal; carries out the transition it causes.
    pub(super) fn health_signal(&mut self, node: u32, signal: Signal, now: Ms) {
        let drains = self.health.model.drains(&signal);
        match self.health.model.observe(node, &signal, now.core_s()) {
            Some(t) => self.apply_health(t, Some(&signal), now),
            // a node already leaving: its other runs on a failed
            // accelerator are requeued all the same
            None if drains => {
                let name = self.node_names[node as usize].clone();
                self.requeue_on(node, &signal, &name, &signal.describe(), now);
            }
            None => {}
        }
    }

    /// Requeues the run on the accelerator `signal` names, if any.
    fn requeue_on(&mut self, n: u32, signal: &Signal, name: &str, why: &str, now: Ms) {
        let gpu = match signal {
            Signal::Xid { gpu, .. }
            | Signal::EccUncorrectable { gpu, .. }
            | Signal::RemapFailed { gpu }
            | Signal::Unreadable { gpu }
            | Signal::AmdRas { gpu, .. } => Some(*gpu),
            _ => None,
        };
        let Some(g) = gpu else { return };
        // a shared pool's slots: every slice of the faulty accelerator
        let k = self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize]
            .slices_per_accel
            .max(1) as usize;
        let slots = g as usize * k..(g as usize + 1) * k;
        let mut hit: Vec<i64> = self.devices[n as usize]
            .get(slots)
            .unwrap_or_default()
            .iter()
            .flatten()
            .copied()
            .collect();
        hit.dedup();
        for id in hit {
            self.requeue_for_health(id, name, why, now);
        }
    }

    /// Carries out a health transition: suspect nodes are kept from long
    /// gangs; a draining node is drained everywhere, and the run on the
    /// accelerator at fault is requeued from its last checkpoint.
    fn apply_health(&mut self, t: Transition, signal: Option<&Signal>, now: Ms) {
        let n = t.node;
        let name = self.node_names[n as usize].clone();
        self.shared
            .metrics
            .health_transitions
            .get_or_create(&crate::metrics::StateLabel {
                state: t.to.name().to_string(),
            })
            .inc();
        tracing::warn!(
            "node {name}: {} → {}: {}",
            t.from.name(),
            t.to.name(),
            t.reason
        );
        self.dirty = true;
        match t.to {
            HealthState::Suspect => self.core.set_suspect(n, true),
            HealthState::Healthy => self.core.set_suspect(n, false),
            HealthState::Draining => {
                self.core.set_suspect(n, false);
                // the run on the accelerator at fault lost its device:
                // requeued from its checkpoint, elsewhere
                if let Some(sig) = signal {
                    self.requeue_on(n, sig, &name, &t.reason, now);
                }
                // shown to every token and, on Slurm, to every user: the
                // details of a failed check stay in the evidence
                let shown = match signal {
                    Some(Signal::PreflightFailed { .. }) => "pre-flight check failed".to_string(),
                    _ => t.reason.clone(),
                };
                let reason = format!("[gigafab] {shown}");
                if !self.core.is_drained(n) {
                    self.core.drain(n);
                    self.ops
                        .push(store::fleet::drain(&name, now, Some(reason.as_str())));
                }
                self.drain_reasons.insert(n, reason.clone());
                let site = self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].site;
                let site = self.cfg.factory.sites[site].name.clone();
                self.driver.drain_node(site, name, reason, true);
            }
            _ => {}
        }
    }

    /// Stops job `id` whose accelerator failed and puts it back in the
    /// queue from its last checkpoint (or fails it past its requeues).
    fn requeue_for_health(&mut self, id: i64, node: &str, why: &str, now: Ms) {
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        let core = j.core;
        match self.core.requeue_from_checkpoint(core, now.core_s()) {
            Some((_, false)) => {
                self.event(
                    id,
                    now,
                    "requeued",
                    format!("node {node} left service ({why}): requeued from its last checkpoint"),
                );
                self.preempt_job(id, now);
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.row.reason = Some(format!(
                        "requeued: node {node} left service ({why}); waiting to run again"
                    ));
                }
                self.update_job_op(id);
            }
            Some((_, true)) => {
                let handle = self.jobs.get(&id).and_then(|j| j.row.handle.clone());
                if let Some(h) = handle {
                    self.driver.cancel(id, h);
                }
                self.end_job(
                    id,
                    now,
                    "failed",
                    None,
                    format!("node {node} left service ({why}) more often than its requeues allow"),
                    None,
                );
            }
            None => {}
        }
    }

    /// A node agent's batch: taken once (a batch sent again after a lost
    /// answer is acknowledged, not taken twice), its readings kept and
    /// fed to the health model.
    pub(super) fn node_telemetry(
        &mut self,
        who: &Principal,
        node: &str,
        batch: gigafab_api::NodeTelemetry,
        now: Ms,
    ) -> Result<gigafab_api::TelemetryAck, ApiError> {
        if !who.global() {
            return Err(ApiError::forbidden(
                "only an admin or operator (a node agent's token) sends node telemetry",
            ));
        }
        let n = *self.node_by_name.get(node).ok_or_else(|| {
            ApiError::not_found("node_not_found", format!("node `{node}` not found"))
        })?;
        let per = self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].per_node;
        if let Some((i, x)) = batch
            .samples
            .iter()
            .enumerate()
            .find(|(_, x)| x.index >= per)
        {
            return Err(ApiError::invalid(format!(
                "samples[{i}].index: node {node} has accelerators 0..{per}, not {}",
                x.index
            )));
        }
        let last = self.health.agents.get(&n).copied();
        if let Some((start, seq)) = last
            && start == batch.agent_start_ms
            && batch.seq <= seq
        {
            return Ok(gigafab_api::TelemetryAck {
                acked: batch.seq,
                duplicate: Some(true),
            });
        }
        self.health
            .agents
            .insert(n, (batch.agent_start_ms, batch.seq));
        let samples: Vec<Sample> = batch.samples;
        self.observe_samples(n, &samples, now);
        Ok(gigafab_api::TelemetryAck {
            acked: batch.seq,
            duplicate: None,
        })
    }

    /// A node's recent readings per accelerator, and its health with the
    /// evidence.
    pub(super) fn node_readings(
        &self,
        who: &Principal,
        node: &str,
    ) -> Result<gigafab_api::NodeReadings, ApiError> {
        if !who.global() {
            return Err(ApiError::forbidden(
                "only an admin or operator reads node telemetry",
            ));
        }
        let n = *self.node_by_name.get(node).ok_or_else(|| {
            ApiError::not_found("node_not_found", format!("node `{node}` not found"))
        })?;
        let per = self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].per_node;
        let devices = (0..per)
            .map(|i| gigafab_api::DeviceReadings {
                index: i,
                readings: self
                    .health
                    .series
                    .get(&(n, i))
                    .map(|v| v.iter().cloned().collect())
                    .unwrap_or_default(),
            })
            .collect();
        let h = self.health.model.node(n);
        Ok(gigafab_api::NodeReadings {
            node: node.to_string(),
            health: api_health(self.health.model.state(n)),
            reason: h.and_then(|h| h.reason.clone()),
            evidence: h
                .map(|h| {
                    h.evidence
                        .iter()
                        .map(|e| gigafab_api::HealthEvidence {
                            at: Ms::from_core_s(e.t).rfc3339(),
                            what: e.what.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            devices,
        })
    }

    /// The latest temperature and power of every accelerator that has
    /// readings (for `/metrics`).
    pub(super) fn device_gauges(&self) -> Vec<crate::metrics::DeviceSnap> {
        let mut v: Vec<crate::metrics::DeviceSnap> = self
            .health
            .series
            .iter()
            .filter_map(|(&(n, i), s)| {
                let last = s.back()?;
                Some(crate::metrics::DeviceSnap {
                    node: self.node_names[n as usize].clone(),
                    gpu: i,
                    temperature_c: last.temperature_c,
                    power_w: last.power_w,
                })
            })
            .collect();
        v.sort_by(|a, b| (&a.node, a.gpu).cmp(&(&b.node, b.gpu)));
        v
    }

    /// Whether job `id`'s launch waits for a pre-flight check of its
    /// nodes (started here when due): gangs over at least
    /// `preflight_min_nodes` nodes at a site with a `preflight_program`.
    pub(super) fn preflight_gate(&mut self, id: i64, now: Ms) -> bool {
        let min = self.cfg.preflight_min_nodes;
        let Some(j) = self.jobs.get(&id) else {
            return false;
        };
        let start = j.starts;
        if min == 0 || self.preflight_passed.get(&id) == Some(&start) {
            return false;
        }
        if self.preflight_running.get(&id) == Some(&start) {
            return true;
        }
        let mut nodes: Vec<u32> = j.devices.iter().map(|&(n, _)| n).collect();
        nodes.dedup();
        if (nodes.len() as u32) < min {
            return false;
        }
        let site = self.cfg.factory.pools[self.core.cluster.pool_of(nodes[0]) as usize].site;
        let Some(program) = self.cfg.factory.sites[site].preflight_program.clone() else {
            return false;
        };
        let named: Vec<(u32, String)> = nodes
            .iter()
            .map(|&n| (n, self.node_names[n as usize].clone()))
            .collect();
        self.preflight_running.insert(id, start);
        self.event(
            id,
            now,
            "preflight",
            format!("pre-flight check of its {} nodes", named.len()),
        );
        self.driver.preflight(
            id,
            start,
            program,
            named,
            std::time::Duration::from_secs(600),
        );
        true
    }

    /// A pre-flight check answered: the job launches, or its failed nodes
    /// are drained and it goes back to the queue to be placed elsewhere.
    pub(super) fn preflight_done(
        &mut self,
        id: i64,
        start: u32,
        failed: Vec<(u32, String)>,
        now: Ms,
    ) {
        if self.preflight_running.get(&id) == Some(&start) {
            self.preflight_running.remove(&id);
        }
        let Some(j) = self.jobs.get(&id) else {
            return;
        };
        if j.row.state != "running" || j.starts != start {
            return; // cancelled or stopped meanwhile
        }
        let core = j.core;
        if j.cancel_requested {
            // cancelled while its nodes were checked: it never runs
            self.end_job(
                id,
                now,
                "cancelled",
                None,
                "cancelled before its run began".into(),
                None,
            );
            return;
        }
        // a check that could not run, or that most nodes fail at once,
        // says more of the check than of the nodes: the gang launches
        let total = j
            .devices
            .iter()
            .map(|d| d.0)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let node_faults: Vec<(u32, String)> = failed
            .iter()
            .filter(|(_, e)| !e.starts_with(CHECK_BROKEN))
            .cloned()
            .collect();
        if !failed.is_empty() && (node_faults.len() < failed.len() || 2 * node_faults.len() > total)
        {
            let first = failed[0].1.clone();
            tracing::warn!("job {id}: the pre-flight check looks broken ({first}); launching");
            self.event(
                id,
                now,
                "preflight",
                format!("pre-flight check not conclusive ({} of {total} nodes failed: {first}); launching", failed.len()),
            );
            self.preflight_passed.insert(id, start);
            self.launches.push(id);
            return;
        }
        let failed = node_faults;
        if failed.is_empty() {
            self.preflight_passed.insert(id, start);
            self.event(id, now, "preflight", "pre-flight check passed".into());
            self.launches.push(id);
            return;
        }
        let names: Vec<String> = failed
            .iter()
            .filter_map(|(n, _)| self.node_names.get(*n as usize).cloned())
            .collect();
        for (n, e) in failed {
            if (n as usize) < self.node_names.len() {
                self.health_signal(n, Signal::PreflightFailed { detail: e }, now);
            }
        }
        self.core.checkpoint_stop(core, now.core_s());
        self.preempt_job(id, now);
        let msg = format!(
            "pre-flight check failed on {}: drained; placed again elsewhere",
            names.join(", ")
        );
        self.event(id, now, "preflight", msg.clone());
        if let Some(j) = self.jobs.get_mut(&id) {
            j.row.reason = Some(msg);
        }
        self.update_job_op(id);
        self.dirty = true;
    }

    /// Nodes per health state (for `/metrics`).
    pub(super) fn health_counts(&self) -> Vec<(String, u64)> {
        [
            HealthState::Healthy,
            HealthState::Suspect,
            HealthState::Draining,
            HealthState::Drained,
            HealthState::InRepair,
        ]
        .iter()
        .map(|s| (s.name().to_string(), self.health.model.count(*s) as u64))
        .collect()
    }
}

/// A node's health as the API types it.
pub(super) fn api_health(h: HealthState) -> gigafab_api::NodeHealth {
    use gigafab_api::NodeHealth as A;
    match h {
        HealthState::Healthy => A::Healthy,
        HealthState::Suspect => A::Suspect,
        HealthState::Draining => A::Draining,
        HealthState::Drained => A::Drained,
        HealthState::InRepair => A::InRepair,
    }
}
