//! Accelerator and node health: what a signal means and what to do about
//! it. Pure, as the scheduler: the live server and the twin feed it
//! signals with their time and carry out the transitions it returns.
//!
//! - [`xid`]: NVIDIA's Xid events and the action each calls for, after the
//!   immediate-action buckets of NVIDIA's Xid catalog (docs.nvidia.com,
//!   "Analyzing Xid Errors with the Xid Catalog"): application faults
//!   (13, 31, 43, ...) restart the application and never drain a node;
//!   double-bit ECC (48), uncontained ECC (95), GSP errors (119, 120),
//!   NVLink errors (74) reset the GPU; a GPU fallen off the bus (79)
//!   needs the node rebooted.
//! - [`HealthModel`]: per node, healthy → suspect → draining → drained →
//!   in repair → healthy, with the reason and the evidence of each step;
//!   an operator may set any state. A node that took down
//!   [`HealthPolicy::lemon_failures`] jobs of at least
//!   [`HealthPolicy::lemon_tenants`] tenants within
//!   [`HealthPolicy::lemon_window_s`] is drained without a hardware signal
//!   (a "lemon node").

use std::collections::VecDeque;

/// What an Xid calls for, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum XidAction {
    /// Informational: nothing to do.
    Ignore,
    /// The application faulted (its own bug, most often): restart it; the
    /// node stays in service.
    RestartApp,
    /// The GPU must be reset: drain the node, reset it once idle.
    ResetGpu,
    /// The node must be rebooted: drain it.
    RebootNode,
    /// Hardware service: drain the node and send it to repair.
    Service,
}

impl XidAction {
    pub fn name(self) -> &'static str {
        match self {
            XidAction::Ignore => "ignore",
            XidAction::RestartApp => "restart_app",
            XidAction::ResetGpu => "reset_gpu",
            XidAction::RebootNode => "reboot_node",
            XidAction::Service => "service",
        }
    }

    /// Whether the node must leave service.
    pub fn drains(self) -> bool {
        self >= XidAction::ResetGpu
    }
}

/// One Xid of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xid {
    pub code: u32,
    pub name: &'static str,
    pub action: XidAction,
}

const fn x(code: u32, name: &'static str, action: XidAction) -> Xid {
    Xid { code, name, action }
}

use XidAction::{Ignore, RebootNode, ResetGpu, RestartApp, Service};

/// The Xids of data-centre GPUs (Ampere, Hopper, Blackwell) that gigafab
/// acts on, ascending by code.
pub const XID_TABLE: &[Xid] = &[
    x(
        8,
        "GPU stopped processing (channel idle timeout)",
        RestartApp,
    ),
    x(13, "graphics engine exception", RestartApp),
    x(31, "GPU memory page fault", RestartApp),
    x(32, "invalid or corrupted push buffer stream", RestartApp),
    x(38, "driver firmware error", ResetGpu),
    x(43, "GPU stopped processing (reset channel)", RestartApp),
    x(45, "preemptive cleanup after earlier errors", Ignore),
    x(46, "GPU stopped processing", ResetGpu),
    x(48, "double-bit ECC error", ResetGpu),
    x(56, "display engine error", Ignore),
    x(57, "error programming video memory interface", Service),
    x(61, "internal micro-controller breakpoint/warning", ResetGpu),
    x(62, "internal micro-controller halt", ResetGpu),
    x(
        63,
        "ECC page retirement or row remapping recorded",
        ResetGpu,
    ),
    x(64, "ECC page retirement or row remapping failure", Service),
    x(68, "video processor exception", RestartApp),
    x(69, "graphics engine class error", RestartApp),
    x(74, "NVLink error", ResetGpu),
    x(79, "GPU has fallen off the bus", RebootNode),
    x(92, "high single-bit ECC error rate", Ignore),
    x(94, "contained ECC error", RestartApp),
    x(95, "uncontained ECC error", ResetGpu),
    x(109, "context switch timeout", RestartApp),
    x(110, "security fault error", Service),
    x(119, "GSP RPC timeout", ResetGpu),
    x(120, "GSP error", ResetGpu),
    x(121, "C2C link corrected error", Ignore),
    x(122, "SPI PMU RPC read failure", ResetGpu),
    x(123, "SPI PMU RPC write failure", ResetGpu),
    x(136, "link training failure", RebootNode),
    x(140, "unrecovered ECC error", ResetGpu),
    x(143, "GPU initialisation failure", RebootNode),
    x(144, "NVLink SAW error", ResetGpu),
    x(145, "NVLink RLW error", ResetGpu),
    x(146, "NVLink TLW error", ResetGpu),
    x(147, "NVLink TREX error", ResetGpu),
    x(148, "NVLink NVLPW_CTRL error", ResetGpu),
    x(149, "NVLink NETIR error", ResetGpu),
    x(150, "NVLink MSE error", ResetGpu),
    x(
        154,
        "GPU recovery action changed (reboot required)",
        RebootNode,
    ),
];

/// The table's entry for `code` (None: not in the table).
pub fn xid(code: u32) -> Option<&'static Xid> {
    XID_TABLE
        .binary_search_by_key(&code, |e| e.code)
        .ok()
        .map(|i| &XID_TABLE[i])
}

/// A health signal of one accelerator (`gpu`: its index on the node) or
/// of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Signal {
    /// An NVIDIA Xid event.
    Xid {
        gpu: u16,
        code: u32,
    },
    /// Uncorrectable (double-bit) ECC errors since the last sample.
    EccUncorrectable {
        gpu: u16,
        count: u64,
    },
    /// Correctable (single-bit) ECC errors since the last sample.
    EccCorrectable {
        gpu: u16,
        count: u64,
    },
    /// Retired pages or remapped rows pending a reset (the GPU must be
    /// reset for them to take effect), or a remapping that failed.
    RemapPending {
        gpu: u16,
    },
    RemapFailed {
        gpu: u16,
    },
    /// Temperature, °C, and whether the GPU throttles for heat.
    Thermal {
        gpu: u16,
        celsius: f64,
        throttled: bool,
    },
    /// Power drawn above the board's limit (W over it).
    PowerExcess {
        gpu: u16,
        watts: f64,
    },
    /// NVLink / xGMI errors since the last sample.
    LinkErrors {
        gpu: u16,
        count: u64,
    },
    /// PCIe replays since the last sample.
    PcieReplays {
        gpu: u16,
        count: u64,
    },
    /// AMD RAS (through AMD SMI): an ECC event of a block (`umc` is the
    /// memory), uncorrectable or not.
    AmdRas {
        gpu: u16,
        block: String,
        uncorrectable: bool,
    },
    /// A pre-flight check failed on the node.
    PreflightFailed {
        detail: String,
    },
    /// The accelerator no longer answers its management library (as a GPU
    /// fallen off the bus: NVML's `GpuLost`).
    Unreadable {
        gpu: u16,
    },
    /// A job running on the node ended in failure (counted for lemon-node
    /// detection), with its tenant.
    JobFailure {
        job: String,
        tenant: String,
    },
}

impl Signal {
    /// What the signal says, in a line (the evidence kept with the node).
    pub fn describe(&self) -> String {
        match self {
            Signal::Xid { gpu, code } => match xid(*code) {
                Some(e) => format!("xid {code} on gpu {gpu}: {}", e.name),
                None => format!("xid {code} on gpu {gpu}: not in the table"),
            },
            Signal::EccUncorrectable { gpu, count } => {
                format!("{count} uncorrectable ECC errors on gpu {gpu}")
            }
            Signal::EccCorrectable { gpu, count } => {
                format!("{count} correctable ECC errors on gpu {gpu}")
            }
            Signal::RemapPending { gpu } => format!("row remapping pending a reset on gpu {gpu}"),
            Signal::RemapFailed { gpu } => format!("row remapping failed on gpu {gpu}"),
            Signal::Thermal {
                gpu,
                celsius,
                throttled,
            } => {
                let heat = if celsius.is_finite() {
                    format!(" at {celsius:.0} °C")
                } else {
                    String::new()
                };
                let slow = if *throttled {
                    ", thermal throttling"
                } else {
                    ""
                };
                format!("gpu {gpu}{heat}{slow}")
            }
            Signal::PowerExcess { gpu, watts } => {
                format!("gpu {gpu} {watts:.0} W above its power limit")
            }
            Signal::LinkErrors { gpu, count } => format!("{count} NVLink/xGMI errors on gpu {gpu}"),
            Signal::PcieReplays { gpu, count } => format!("{count} PCIe replays on gpu {gpu}"),
            Signal::AmdRas {
                gpu,
                block,
                uncorrectable,
            } => format!(
                "{} RAS error in block {block} of gpu {gpu}",
                if *uncorrectable {
                    "uncorrectable"
                } else {
                    "correctable"
                }
            ),
            Signal::PreflightFailed { detail } => format!("pre-flight check failed: {detail}"),
            Signal::Unreadable { gpu } => {
                format!("gpu {gpu} does not answer its management library")
            }
            Signal::JobFailure { job, tenant } => {
                format!("job {job} of {tenant} failed on its accelerators")
            }
        }
    }
}

/// Thresholds of the health model.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthPolicy {
    /// Jobs taken down on one node within `lemon_window_s` that drain it,
    /// each of a different tenant (a tenant counts once, however many of
    /// its jobs fail: one tenant's failing code cannot drain a node), and
    /// at least `lemon_tenants` of them.
    pub lemon_failures: u32,
    pub lemon_window_s: f64,
    pub lemon_tenants: u32,
    /// Correctable ECC errors in one sample that make a node suspect.
    pub ecc_correctable_suspect: u64,
    /// NVLink/xGMI errors, PCIe replays in one sample that make it suspect.
    pub link_errors_suspect: u64,
    pub pcie_replays_suspect: u64,
    /// Temperature that makes it suspect (throttling always does), °C.
    pub thermal_suspect_c: f64,
    /// A suspect node with no new evidence for this long is healthy again.
    pub suspect_clear_s: f64,
    /// Evidence kept per node (the latest).
    pub max_evidence: usize,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            lemon_failures: 3,
            lemon_window_s: 24.0 * 3600.0,
            lemon_tenants: 3,
            ecc_correctable_suspect: 100,
            link_errors_suspect: 10,
            pcie_replays_suspect: 100,
            thermal_suspect_c: 90.0,
            suspect_clear_s: 24.0 * 3600.0,
            max_evidence: 16,
        }
    }
}

/// Where a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    Healthy,
    /// Evidence of trouble: in service, but long gangs avoid it.
    Suspect,
    /// Leaving service: its running jobs finish or checkpoint, no new one
    /// starts there.
    Draining,
    /// Out of service, idle.
    Drained,
    /// Being repaired (reset, reboot, service).
    InRepair,
}

impl HealthState {
    pub fn name(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Suspect => "suspect",
            HealthState::Draining => "draining",
            HealthState::Drained => "drained",
            HealthState::InRepair => "in_repair",
        }
    }

    pub fn parse(s: &str) -> Option<HealthState> {
        [
            HealthState::Healthy,
            HealthState::Suspect,
            HealthState::Draining,
            HealthState::Drained,
            HealthState::InRepair,
        ]
        .into_iter()
        .find(|h| h.name() == s)
    }

    /// Whether new jobs may start on the node.
    pub fn in_service(self) -> bool {
        matches!(self, HealthState::Healthy | HealthState::Suspect)
    }
}

/// One piece of evidence: when, and what.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub t: f64,
    pub what: String,
}

/// A node's health.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    pub state: HealthState,
    /// Why it is in that state (None when healthy).
    pub reason: Option<String>,
    /// What the repair must do (the strongest action asked so far).
    pub action: Option<XidAction>,
    pub since: f64,
    /// The latest evidence, oldest first.
    pub evidence: VecDeque<Evidence>,
    /// The jobs it took down within the lemon window: (time, tenant).
    failures: VecDeque<(f64, String)>,
    last_evidence: f64,
}

impl NodeHealth {
    fn new() -> NodeHealth {
        NodeHealth {
            state: HealthState::Healthy,
            reason: None,
            action: None,
            since: 0.0,
            evidence: VecDeque::new(),
            failures: VecDeque::new(),
            last_evidence: f64::NEG_INFINITY,
        }
    }
}

/// A change of a node's state, for the caller to carry out (drain the
/// node, record the event).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub node: u32,
    pub from: HealthState,
    pub to: HealthState,
    pub reason: String,
}

/// What a signal calls for, before the node's state is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Nothing,
    Suspect,
    Drain(XidAction),
}

/// The health of every node.
#[derive(Debug, Clone)]
pub struct HealthModel {
    pub policy: HealthPolicy,
    nodes: Vec<NodeHealth>,
}

impl HealthModel {
    pub fn new(nodes: u32, policy: HealthPolicy) -> HealthModel {
        HealthModel {
            policy,
            nodes: vec![NodeHealth::new(); nodes as usize],
        }
    }

    pub fn node(&self, n: u32) -> Option<&NodeHealth> {
        self.nodes.get(n as usize)
    }

    pub fn state(&self, n: u32) -> HealthState {
        self.nodes
            .get(n as usize)
            .map_or(HealthState::Healthy, |h| h.state)
    }

    /// Whether `signal` calls for taking a node out of service (whatever
    /// the node's state now).
    pub fn drains(&self, signal: &Signal) -> bool {
        matches!(self.verdict(signal), Verdict::Drain(_))
    }

    /// A draining node with no job left is drained; returns the nodes it
    /// moved, given which nodes are empty.
    pub fn settle(&mut self, empty: impl Fn(u32) -> bool, now: f64) -> Vec<Transition> {
        let draining: Vec<u32> = (0..self.nodes.len() as u32)
            .filter(|&n| self.nodes[n as usize].state == HealthState::Draining && empty(n))
            .collect();
        draining
            .into_iter()
            .filter_map(|n| self.emptied(n, now))
            .collect()
    }

    /// Nodes in state `s`.
    pub fn count(&self, s: HealthState) -> usize {
        self.nodes.iter().filter(|h| h.state == s).count()
    }

    fn verdict(&self, s: &Signal) -> Verdict {
        let p = &self.policy;
        match s {
            Signal::Xid { code, .. } => match xid(*code).map(|e| e.action) {
                Some(a) if a.drains() => Verdict::Drain(a),
                Some(_) => Verdict::Nothing,
                // an Xid outside the table: watched, not acted on
                None => Verdict::Suspect,
            },
            Signal::EccUncorrectable { count, .. } if *count > 0 => {
                Verdict::Drain(XidAction::ResetGpu)
            }
            Signal::EccCorrectable { count, .. } if *count >= p.ecc_correctable_suspect => {
                Verdict::Suspect
            }
            Signal::RemapPending { .. } => Verdict::Drain(XidAction::ResetGpu),
            Signal::RemapFailed { .. } => Verdict::Drain(XidAction::Service),
            Signal::Thermal {
                celsius, throttled, ..
            } if *throttled || *celsius >= p.thermal_suspect_c => Verdict::Suspect,
            Signal::PowerExcess { watts, .. } if *watts > 0.0 => Verdict::Suspect,
            Signal::LinkErrors { count, .. } if *count >= p.link_errors_suspect => Verdict::Suspect,
            Signal::PcieReplays { count, .. } if *count >= p.pcie_replays_suspect => {
                Verdict::Suspect
            }
            Signal::AmdRas { uncorrectable, .. } => {
                if *uncorrectable {
                    Verdict::Drain(XidAction::ResetGpu)
                } else {
                    Verdict::Suspect
                }
            }
            Signal::PreflightFailed { .. } => Verdict::Drain(XidAction::Service),
            Signal::Unreadable { .. } => Verdict::Drain(XidAction::RebootNode),
            // counted below (lemon nodes)
            Signal::JobFailure { .. } => Verdict::Nothing,
            _ => Verdict::Nothing,
        }
    }

    /// Feeds `signal` of node `n` at `now`; returns the transition it
    /// causes, if any. Signals of a node already out of service only add
    /// evidence (and may make its repair stronger).
    pub fn observe(&mut self, n: u32, signal: &Signal, now: f64) -> Option<Transition> {
        let mut verdict = self.verdict(signal);
        let p = self.policy.clone();
        let h = self.nodes.get_mut(n as usize)?;
        let what = signal.describe();
        if let Signal::JobFailure { tenant, .. } = signal {
            while h
                .failures
                .front()
                .is_some_and(|(t, _)| *t < now - p.lemon_window_s)
            {
                h.failures.pop_front();
            }
            // a tenant counts once (its latest failure): one tenant's
            // failing code, however much of it, is one failure here
            h.failures.retain(|(_, t)| t != tenant);
            h.failures.push_back((now, tenant.clone()));
            if h.failures.len() as u32 >= p.lemon_failures.max(p.lemon_tenants).max(1) {
                verdict = Verdict::Drain(XidAction::Service);
            }
        }
        if verdict == Verdict::Nothing && !matches!(signal, Signal::JobFailure { .. }) {
            return None;
        }
        h.evidence.push_back(Evidence {
            t: now,
            what: what.clone(),
        });
        while h.evidence.len() > p.max_evidence.max(1) {
            h.evidence.pop_front();
        }
        h.last_evidence = now;
        let (to, reason) = match verdict {
            Verdict::Nothing => return None,
            Verdict::Suspect => (HealthState::Suspect, what),
            Verdict::Drain(a) => {
                h.action = Some(h.action.map_or(a, |b| b.max(a)));
                let reason = if let Signal::JobFailure { .. } = signal {
                    // no job or tenant named: the reason is shown to all
                    format!(
                        "lemon node: jobs of {} tenants failed on it within {:.0} h",
                        h.failures.len(),
                        p.lemon_window_s / 3600.0
                    )
                } else {
                    format!("{what} ({})", a.name())
                };
                (HealthState::Draining, reason)
            }
        };
        let from = h.state;
        let to = match (from, to) {
            // already out of service: evidence only
            (HealthState::Draining | HealthState::Drained | HealthState::InRepair, _) => {
                return None;
            }
            (HealthState::Suspect, HealthState::Suspect) => return None,
            (_, t) => t,
        };
        h.state = to;
        h.reason = Some(reason.clone());
        h.since = now;
        Some(Transition {
            node: n,
            from,
            to,
            reason,
        })
    }

    /// A draining node has no job left: it is drained.
    pub fn emptied(&mut self, n: u32, now: f64) -> Option<Transition> {
        self.set(n, HealthState::Drained, None, now, HealthState::Draining)
    }

    /// A drained node goes to repair (reset, reboot, service).
    pub fn repair_started(&mut self, n: u32, now: f64) -> Option<Transition> {
        self.set(n, HealthState::InRepair, None, now, HealthState::Drained)
    }

    /// A node in repair is back: healthy, its failure count cleared.
    pub fn repaired(&mut self, n: u32, now: f64) -> Option<Transition> {
        let t = self.set(
            n,
            HealthState::Healthy,
            Some("repaired".into()),
            now,
            HealthState::InRepair,
        );
        if t.is_some()
            && let Some(h) = self.nodes.get_mut(n as usize)
        {
            h.failures.clear();
            h.action = None;
            h.reason = None;
        }
        t
    }

    fn set(
        &mut self,
        n: u32,
        to: HealthState,
        reason: Option<String>,
        now: f64,
        from_only: HealthState,
    ) -> Option<Transition> {
        let h = self.nodes.get_mut(n as usize)?;
        if h.state != from_only {
            return None;
        }
        let from = h.state;
        h.state = to;
        h.since = now;
        let reason = reason.or_else(|| h.reason.clone()).unwrap_or_default();
        Some(Transition {
            node: n,
            from,
            to,
            reason,
        })
    }

    /// An operator sets node `n`'s state, whatever it was, with `reason`
    /// (kept as evidence). Healthy clears its failures and repair action.
    pub fn override_state(
        &mut self,
        n: u32,
        to: HealthState,
        reason: &str,
        now: f64,
    ) -> Option<Transition> {
        let max = self.policy.max_evidence.max(1);
        let h = self.nodes.get_mut(n as usize)?;
        let from = h.state;
        h.evidence.push_back(Evidence {
            t: now,
            what: format!("operator: {} ({reason})", to.name()),
        });
        while h.evidence.len() > max {
            h.evidence.pop_front();
        }
        h.state = to;
        h.since = now;
        if to == HealthState::Healthy {
            h.failures.clear();
            h.action = None;
            h.reason = None;
        } else {
            h.reason = Some(format!("operator: {reason}"));
        }
        (from != to).then(|| Transition {
            node: n,
            from,
            to,
            reason: format!("operator: {reason}"),
        })
    }

    /// Suspect nodes without new evidence for `suspect_clear_s` are
    /// healthy again; returns those transitions.
    pub fn tick(&mut self, now: f64) -> Vec<Transition> {
        let clear = self.policy.suspect_clear_s;
        let mut out = Vec::new();
        for (i, h) in self.nodes.iter_mut().enumerate() {
            if h.state == HealthState::Suspect && now - h.last_evidence >= clear {
                h.state = HealthState::Healthy;
                h.since = now;
                h.reason = None;
                out.push(Transition {
                    node: i as u32,
                    from: HealthState::Suspect,
                    to: HealthState::Healthy,
                    reason: format!("no new evidence for {:.0} h", clear / 3600.0),
                });
            }
        }
        out
    }
}
