//! Rows of the store, request bodies and their JSON views.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::time::{Ms, rfc3339};

/// A job as the `jobs` table holds it (plus the names joined in).
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: i64,
    pub org_id: i64,
    pub org: String,
    pub user_id: i64,
    pub user: String,
    pub alloc_id: i64,
    pub project_id: Option<i64>,
    pub name: String,
    /// JSON of [`StoredSpec`].
    pub spec: String,
    pub gpus: i64,
    pub time_limit_s: i64,
    pub state: String,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub submitted_ms: Ms,
    pub started_ms: Option<Ms>,
    pub ended_ms: Option<Ms>,
    /// JSON array of `node/index` labels.
    pub accelerators: Option<String>,
    pub handle: Option<String>,
    /// Billing-weighted accelerator-seconds charged (ended runs).
    pub gpu_s: f64,
    /// Energy of its run (accelerators and their node share), J.
    pub energy_j: f64,
    /// Carbon of its run (energy × PUE × grid intensity), g; none without
    /// a grid series for its site.
    pub carbon_g: Option<f64>,
    /// `model` or `measured` (device energy counters).
    pub energy_source: Option<String>,
    /// The run of this job that was asked to stop (it was preempted) and
    /// has not ended yet: the job is not launched again before it has.
    pub stopping: Option<String>,
}

/// The parts of a submission kept as JSON in `jobs.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredSpec {
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub min_memory_gb: Option<f64>,
    /// A slice of one accelerator instead of whole ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<gigafab_core::spec::SliceReq>,
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub preemptible: bool,
    #[serde(default)]
    pub project: Option<String>,
    /// Billing weight of the pool the job runs on (set at start).
    #[serde(default)]
    pub billing_weight: Option<f64>,
    #[serde(default)]
    pub memory_gb: Option<f64>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// Catalog versions it reads, resolved at submission.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<Input>,
    /// The jobs it waits for (`dependency`), as `(kind, job)`: `afterok`,
    /// `afternotok` or `afterany`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<(String, i64)>,
    /// The array it is a task of: (its first task's job id, its index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<(i64, i64)>,
    /// Sites it may run at (its inputs' residency; empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// The catalog model its output becomes once it completes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_model: Option<String>,
    /// The endpoint it is a replica of: a service, with no time limit of
    /// its own (docs/endpoints.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<i64>,
}

// Request bodies: the API contract's types, under the names the
// controller uses.
pub use gigafab_api::IdRef;
pub type SubmitReq = gigafab_api::SubmitJob;
pub type OrgReq = gigafab_api::CreateOrg;
pub type ProjectReq = gigafab_api::CreateProject;
pub type UserReq = gigafab_api::CreateUser;
pub type TokenReq = gigafab_api::CreateToken;
pub type AllocReq = gigafab_api::CreateAllocation;

/// Job states at the API.
pub const TERMINAL: [&str; 4] = ["completed", "failed", "timeout", "cancelled"];

impl JobRow {
    /// Accelerator-hours charged so far (billing-weighted), at `now`.
    pub fn gpu_hours(&self, now: Ms) -> f64 {
        let spec = serde_json::from_str::<StoredSpec>(&self.spec).unwrap_or_default();
        self.gpu_hours_with(&spec, now)
    }

    /// [`JobRow::gpu_hours`] with the spec already parsed.
    fn gpu_hours_with(&self, spec: &StoredSpec, now: Ms) -> f64 {
        if self.state == "running"
            && let Some(s) = self.started_ms
        {
            let w = spec.billing_weight.unwrap_or(1.0);
            // earlier runs (a preempted job) are in gpu_s already
            return self.gpu_s / 3600.0 + self.gpus as f64 * w * now.secs_since(s) / 3600.0;
        }
        self.gpu_s / 3600.0
    }

    /// The job as the API shows it.
    pub fn view(&self, now: Ms) -> gigafab_api::Job {
        let spec: StoredSpec = serde_json::from_str(&self.spec).unwrap_or_default();
        let gpu_hours = self.gpu_hours_with(&spec, now);
        let accels: Vec<String> = self
            .accelerators
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        gigafab_api::Job {
            id: gigafab_api::JobId(self.id),
            name: self.name.clone(),
            org: self.org.clone(),
            project: spec.project,
            user: self.user.clone(),
            allocation: gigafab_api::AllocationId(self.alloc_id),
            gpus: self.gpus,
            accelerator: gigafab_api::AcceleratorFilter {
                types: spec.types,
                vendor: spec.vendor,
                min_memory_gb: spec.min_memory_gb,
                slice: spec.slice.as_ref().map(|s| s.to_column()),
            },
            job_type: spec.job_type,
            command: spec.command,
            time_limit_s: self.time_limit_s,
            priority: spec.priority,
            preemptible: spec.preemptible,
            state: self.state.clone(),
            reason: self.reason.clone(),
            exit_code: self.exit_code,
            submitted_at: self.submitted_ms.rfc3339(),
            started_at: self.started_ms.map(Ms::rfc3339),
            ended_at: self.ended_ms.map(Ms::rfc3339),
            accelerators: accels,
            gpu_hours,
            energy_kwh: self.energy_j / 3.6e6,
            avg_power_w: match (self.started_ms, self.ended_ms) {
                (Some(s), Some(e)) if e > s => Some(self.energy_j / e.secs_since(s)),
                _ => None,
            },
            carbon_g: self.carbon_g,
            energy_source: self.energy_source.clone(),
            events: None,
            inputs: spec.inputs.iter().map(|i| i.reference.clone()).collect(),
            output_model: spec.output_model,
            output: None,
            dependency: dependency_form(&spec.after),
            array_job: spec.array.map(|a| a.0),
            array_task: spec.array.map(|a| a.1),
        }
    }
}

/// `after` in Slurm's form, kinds in order of first appearance:
/// `afterok:12:13,afterany:14` (None when empty).
pub fn dependency_form(after: &[(String, i64)]) -> Option<String> {
    let mut parts: Vec<(String, Vec<i64>)> = Vec::new();
    for (k, d) in after {
        match parts.iter_mut().find(|(x, _)| x == k) {
            Some((_, ids)) => ids.push(*d),
            None => parts.push((k.clone(), vec![*d])),
        }
    }
    (!parts.is_empty()).then(|| {
        parts
            .iter()
            .map(|(k, ids)| {
                let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                format!("{k}:{}", ids.join(":"))
            })
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// One line of a job's history.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub at_ms: i64,
    pub kind: String,
    pub message: String,
}

impl JobEvent {
    pub fn view(&self) -> gigafab_api::JobEvent {
        gigafab_api::JobEvent {
            at: rfc3339(self.at_ms),
            kind: self.kind.clone(),
            message: self.message.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running job that was preempted before counts its earlier runs too.
    #[test]
    fn gpu_hours_of_a_running_job_include_its_earlier_runs() {
        let spec = StoredSpec {
            command: vec!["x".into()],
            billing_weight: Some(2.0),
            ..Default::default()
        };
        let row = JobRow {
            id: 1,
            org_id: 1,
            org: "o".into(),
            user_id: 1,
            user: "u".into(),
            alloc_id: 1,
            project_id: None,
            name: "j".into(),
            spec: serde_json::to_string(&spec).unwrap(),
            gpus: 4,
            time_limit_s: 7200,
            state: "running".into(),
            reason: None,
            exit_code: None,
            submitted_ms: Ms(0),
            started_ms: Some(Ms(3_600_000)),
            ended_ms: None,
            accelerators: None,
            handle: None,
            // an earlier run: 1 GPU-hour charged
            gpu_s: 3600.0,
            energy_j: 0.0,
            carbon_g: None,
            energy_source: None,
            stopping: None,
        };
        // this run: 4 GPUs × weight 2 × 0.5 h = 4 GPU-hours, plus the earlier 1
        assert!((row.gpu_hours(Ms(5_400_000)) - 5.0).abs() < 1e-9);
        assert!((row.view(Ms(5_400_000)).gpu_hours - 5.0).abs() < 1e-9);
    }
}

/// A job's input, resolved at submission.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Input {
    /// `dataset:NAME@VERSION`.
    pub reference: String,
    /// The environment variable naming its directory.
    pub var: String,
    /// Its directory, read-only.
    pub path: String,
    pub manifest_hash: String,
    /// Sites its residency allows (empty: any).
    pub residency: Vec<String>,
}
