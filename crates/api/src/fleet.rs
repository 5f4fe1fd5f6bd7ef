//! The fleet, the sites, node telemetry and usage: what the controller
//! answers about the machine.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AllocationId, AllocationState, DeviceSample, JobId};

/// A node's state in the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Up,
    Drained,
    PoweredDown,
    Booting,
}

/// A node's health (predictive maintenance, docs/health.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeHealth {
    Healthy,
    Suspect,
    Draining,
    Drained,
    InRepair,
}

/// A node of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetNode {
    pub name: String,
    pub pool: String,
    pub site: Option<String>,
    /// The accelerator type (`h100`).
    #[serde(rename = "type")]
    pub type_: String,
    pub vendor: String,
    pub accelerators: u32,
    pub free: u32,
    pub busy: u32,
    /// Accelerators out of service (failed) on a node in service.
    pub down: i64,
    pub state: NodeState,
    /// Why it was drained, when a reason was given.
    pub reason: Option<String>,
    pub health: NodeHealth,
    /// The evidence behind its health (admins and operators only).
    pub health_reason: Option<String>,
    /// The jobs on it the caller may see.
    pub jobs: Vec<JobId>,
}

/// `GET /api/v1/fleet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Fleet {
    pub nodes: Vec<FleetNode>,
    /// Schedulable accelerators: a slice of a shared pool counts as one.
    pub accelerators: u64,
    pub free: u64,
    pub busy: u64,
    /// Physical accelerators (the slices of each shared accelerator
    /// counted once); `accelerators` where nothing is shared.
    #[serde(default)]
    pub physical_accelerators: u64,
}

/// A site: its power, energy, carbon and grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteStatus {
    pub name: String,
    pub pue: f64,
    /// Facility power now, W.
    pub power_w: f64,
    pub peak_w: f64,
    pub power_budget_w: Option<f64>,
    pub energy_kwh: f64,
    /// None without a grid carbon intensity.
    pub carbon_kg: Option<f64>,
    pub intensity_g_per_kwh: Option<f64>,
    /// The next 24 hours, hour by hour, as the scheduler's forecast sees
    /// them (none without a grid carbon intensity).
    pub forecast_g_per_kwh: Option<Vec<f64>>,
    /// The forecast's kind (`daily`, `oracle`, ...).
    pub forecast: String,
    /// Where the grid series is read from (admins and operators only).
    pub grid_source: Option<String>,
    pub nodes: u32,
    pub nodes_powered_down: u32,
    pub nodes_booting: u32,
}

/// `GET /api/v1/sites`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sites {
    pub sites: Vec<SiteStatus>,
}

/// The answer to a node agent's readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TelemetryAck {
    /// The batch's sequence number, taken.
    pub acked: u64,
    /// The batch had been taken before (a retry): nothing was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

/// One piece of evidence behind a node's health.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthEvidence {
    #[schema(format = DateTime)]
    pub at: String,
    pub what: String,
}

/// An accelerator's recent readings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DeviceReadings {
    pub index: u32,
    pub readings: Vec<DeviceSample>,
}

/// `GET /api/v1/fleet/nodes/{name}/telemetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NodeReadings {
    pub node: String,
    pub health: NodeHealth,
    pub reason: Option<String>,
    pub evidence: Vec<HealthEvidence>,
    pub devices: Vec<DeviceReadings>,
}

/// An allocation's use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllocationUsage {
    pub allocation: AllocationId,
    pub name: String,
    pub org: String,
    pub granted_gpu_hours: f64,
    pub used_gpu_hours: f64,
    /// Accelerators its running jobs hold now.
    pub running_gpus: f64,
    pub jobs_queued: u64,
    pub jobs_running: u64,
    pub jobs_ended: u64,
    pub state: AllocationState,
    pub energy_kwh: f64,
    pub carbon_kg: f64,
}

/// An organisation's use over its allocations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OrgUsage {
    pub org: String,
    pub used_gpu_hours: f64,
    pub energy_kwh: f64,
    pub carbon_kg: f64,
}

/// `GET /api/v1/usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub items: Vec<AllocationUsage>,
    pub orgs: Vec<OrgUsage>,
}
