//! Health live: the telemetry's samples are fed to the core's health
//! model ([`gigafab_core::health`]); a node that must leave service is
//! drained (in the scheduler, the store and the engine), the run on a
//! failed accelerator is requeued from its last checkpoint, and the
//! transitions and Xids go to `/metrics` and the log.

use std::collections::HashMap;

use gigafab_core::health::{HealthModel, HealthPolicy, HealthState, Signal, Transition};
use gigafab_telemetry::Sample;

use super::*;

/// The health model and what it needs between samples.
pub(super) struct LiveHealth {
    pub model: HealthModel,
    /// Per device of the telemetry node: its uncorrected-ECC counter.
    ecc: HashMap<u32, u64>,
}

impl LiveHealth {
    pub(super) fn new(nodes: u32) -> LiveHealth {
        LiveHealth {
            model: HealthModel::new(nodes, HealthPolicy::default()),
            ecc: HashMap::new(),
        }
    }
}

impl Controller {
    /// Turns one telemetry reading of node `node` into health signals.
    pub(super) fn observe_samples(&mut self, node: u32, samples: &[Sample], now: Ms) {
        let thermal = self.health.model.policy.thermal_suspect_c;
        for s in samples {
            let gpu = s.index.min(u16::MAX as u32) as u16;
            for &code in &s.xid_errors {
                self.shared
                    .metrics
                    .xid_errors
                    .get_or_create(&crate::metrics::XidLabel {
                        node: self.node_names[node as usize].clone(),
                        gpu: s.index.to_string(),
                        xid: code.to_string(),
                    })
                    .inc();
                let code = code.min(u32::MAX as u64) as u32;
                self.health_signal(node, Signal::Xid { gpu, code }, now);
            }
            if let Some(e) = s.ecc_uncorrected {
                let before = self.health.ecc.insert(s.index, e);
                if let Some(b) = before
                    && e > b
                {
                    self.health_signal(node, Signal::EccUncorrectable { gpu, count: e - b }, now);
                }
            }
            if let Some(t) = s.temperature_c
                && t >= thermal
            {
                self.health_signal(
                    node,
                    Signal::Thermal {
                        gpu,
                        celsius: t,
                        throttled: false,
                    },
                    now,
                );
            }
        }
        for t in self.health.model.tick(now.core_s()) {
            self.apply_health(t, None, now);
        }
    }

    /// Feeds one signal; carries out the transition it causes.
    pub(super) fn health_signal(&mut self, node: u32, signal: Signal, now: Ms) {
        if let Some(t) = self.health.model.observe(node, &signal, now.core_s()) {
            self.apply_health(t, Some(&signal), now);
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
                let gpu = match signal {
                    Some(Signal::Xid { gpu, .. })
                    | Some(Signal::EccUncorrectable { gpu, .. })
                    | Some(Signal::RemapFailed { gpu })
                    | Some(Signal::AmdRas { gpu, .. }) => Some(*gpu),
                    _ => None,
                };
                if let Some(g) = gpu
                    && let Some(Some(id)) = self.devices[n as usize].get(g as usize).copied()
                {
                    self.requeue_for_health(id, &name, &t.reason, now);
                }
                let reason = format!("[gigafab] {}", t.reason);
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
