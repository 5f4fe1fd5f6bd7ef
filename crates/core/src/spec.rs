//! Workload-side domain types: tenants, allocations, job specifications and
//! the job-type × accelerator-type throughput matrix.

use crate::catalog::Vendor;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;

/// Category of a tenant organisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Startup,
    Sme,
    Industry,
    Academia,
    Public,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Startup,
        Category::Sme,
        Category::Industry,
        Category::Academia,
        Category::Public,
    ];

    /// Parses a category name (case-insensitive).
    pub fn parse(s: &str) -> Option<Category> {
        match s.trim().to_ascii_lowercase().as_str() {
            "startup" => Some(Category::Startup),
            "sme" => Some(Category::Sme),
            "industry" => Some(Category::Industry),
            "academia" => Some(Category::Academia),
            "public" => Some(Category::Public),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Startup => "startup",
            Category::Sme => "sme",
            Category::Industry => "industry",
            Category::Academia => "academia",
            Category::Public => "public",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which accelerators a job accepts. All present conditions must hold; an
/// empty filter accepts every type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TypeFilter {
    /// Allowed type ids (lower case); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Required vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<Vendor>,
    /// Minimum accelerator memory in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_memory_gb: Option<f64>,
    /// Sites the job may run at (data residency); empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// A slice of one accelerator instead of whole ones (then
    /// `min_memory_gb` is the slice's memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<SliceReq>,
}

/// A request for a slice of an accelerator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceReq {
    /// At least this share of the accelerator, in thousandths (0: any).
    #[serde(default)]
    pub milli: u16,
    /// This named slice (`1g.10gb`, `cpx`, `mps-4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl SliceReq {
    /// Whether a slice type satisfies the request.
    pub fn accepts(&self, s: &crate::catalog::SliceOf) -> bool {
        s.milli >= self.milli
            && self
                .profile
                .as_deref()
                .is_none_or(|p| p.eq_ignore_ascii_case(&s.name))
    }

    /// The column form after `slice:`.
    pub fn to_column(&self) -> String {
        match (&self.profile, self.milli) {
            (Some(p), _) => p.clone(),
            (None, 0) => "any".into(),
            (None, m) => format!("{}", m as f64 / 1000.0),
        }
    }

    /// Parses the column form: `any`, a share (`0.25`) or a slice name.
    pub fn parse(s: &str) -> Result<SliceReq, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("any") || s == "*" {
            return Ok(SliceReq::default());
        }
        if let Ok(x) = s.parse::<f64>() {
            if !(x.is_finite() && x > 0.0 && x < 1.0) {
                return Err(format!(
                    "a slice's share must be above 0 and below 1 (whole accelerators are counts), got `{s}`"
                ));
            }
            return Ok(SliceReq {
                milli: ((x * 1000.0).ceil() as u16).max(1),
                profile: None,
            });
        }
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
        if !ok {
            return Err(format!(
                "bad slice `{s}`: a share (0.25), a MIG profile (1g.10gb), an AMD partition (cpx) or mps-N/ts-N"
            ));
        }
        Ok(SliceReq {
            milli: 0,
            profile: Some(s.to_ascii_lowercase()),
        })
    }
}

impl TypeFilter {
    pub fn any() -> TypeFilter {
        TypeFilter::default()
    }

    pub fn is_any(&self) -> bool {
        self.types.is_empty()
            && self.vendor.is_none()
            && self.min_memory_gb.is_none()
            && self.sites.is_empty()
            && self.slice.is_none()
    }

    /// Whether an accelerator type satisfies the filter (sites aside). A
    /// slice type serves only slice requests, and a slice request only
    /// slice types; `types` names a slice's parent (`h100`) or the slice
    /// type itself (`h100-1g.10gb`).
    pub fn accepts(&self, ty: &crate::catalog::AcceleratorType) -> bool {
        let slice_ok = match (&self.slice, &ty.slice) {
            (None, None) => true,
            (Some(r), Some(s)) => r.accepts(s),
            _ => false,
        };
        slice_ok
            && (self.types.is_empty()
                || self.types.contains(&ty.id)
                || ty
                    .slice
                    .as_ref()
                    .is_some_and(|s| self.types.contains(&s.parent)))
            && self.vendor.is_none_or(|v| v == ty.vendor)
            && self.min_memory_gb.is_none_or(|m| ty.memory_gb >= m)
    }

    /// Parses the `types` column form: `h100|mi300x`, `vendor:amd`,
    /// `mem>=80` (GB), `site:paris|frankfurt` (residency), or several of
    /// these separated by `;` (all must hold).
    /// Empty or `any` accepts everything.
    pub fn parse(s: &str) -> Result<TypeFilter, String> {
        let mut f = TypeFilter::default();
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("any") || s == "*" {
            return Ok(f);
        }
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some(slice) = part.strip_prefix("slice:") {
                f.slice = Some(SliceReq::parse(slice)?);
            } else if let Some(list) = part.strip_prefix("site:") {
                for site in list.split('|').map(str::trim) {
                    if site.is_empty() {
                        return Err(format!("empty site name in `{part}`"));
                    }
                    f.sites.push(site.to_string());
                }
            } else if let Some(v) = part.strip_prefix("vendor:") {
                f.vendor = Some(
                    Vendor::parse(v)
                        .ok_or_else(|| format!("unknown vendor `{v}` (nvidia, amd or other)"))?,
                );
            } else if let Some(m) = part.strip_prefix("mem>=") {
                let gb: f64 = m
                    .trim()
                    .trim_end_matches("GB")
                    .trim_end_matches("gb")
                    .parse()
                    .map_err(|_| format!("bad memory bound `{m}` (expected GB, e.g. mem>=80)"))?;
                if !(gb.is_finite() && gb >= 0.0) {
                    return Err(format!("bad memory bound `{m}`"));
                }
                f.min_memory_gb = Some(gb);
            } else {
                for t in part.split('|').map(str::trim) {
                    if t.is_empty()
                        || !t
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
                    {
                        return Err(format!("bad accelerator type `{t}` in `{part}`"));
                    }
                    f.types.push(t.to_ascii_lowercase());
                }
            }
        }
        Ok(f)
    }

    /// The column form accepted by [`TypeFilter::parse`].
    pub fn to_column(&self) -> String {
        let mut parts = Vec::new();
        if !self.types.is_empty() {
            parts.push(self.types.join("|"));
        }
        if let Some(v) = self.vendor {
            parts.push(format!("vendor:{v}"));
        }
        if let Some(m) = self.min_memory_gb {
            parts.push(format!("mem>={m}"));
        }
        if !self.sites.is_empty() {
            parts.push(format!("site:{}", self.sites.join("|")));
        }
        if let Some(s) = &self.slice {
            parts.push(format!("slice:{}", s.to_column()));
        }
        parts.join(";")
    }
}

/// A job as submitted (what workload files describe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub id: String,
    /// Submission time in seconds from the start of the workload.
    pub submit_s: f64,
    /// Accelerators, allocated all at once (a gang).
    pub gpus: u32,
    #[serde(default)]
    pub types: TypeFilter,
    /// Run time in seconds. With `job_type` and a throughput matrix and no
    /// `steps`, this is the run time on the fastest allowed type.
    pub duration_s: Option<f64>,
    /// Work in training steps (needs `job_type` and a throughput matrix).
    pub steps: Option<f64>,
    /// Job type for throughput lookups (e.g. `ResNet-50 (batch size 64)`).
    pub job_type: Option<String>,
    /// Declared time limit: the scheduler plans with it and the job is
    /// stopped when a run reaches it.
    pub time_limit_s: Option<f64>,
    /// Tenant organisation (default `default`).
    pub tenant: Option<String>,
    pub category: Option<Category>,
    /// Higher runs first and may preempt lower-priority preemptible jobs.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub preemptible: bool,
    /// Checkpoint interval in seconds of run time; none means an interrupted
    /// run loses everything it did.
    pub checkpoint_s: Option<f64>,
    /// Wanted completion time (seconds from workload start).
    pub deadline_s: Option<f64>,
    /// Jobs of the workload it waits for, in Slurm's form with their ids
    /// (`afterok:train-1,afterany:eval-2:eval-3`): the twin submits it
    /// with [`crate::SchedCore::submit_after`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
}

/// What end of another job a job waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DepKind {
    /// Its successful end (completed).
    AfterOk,
    /// Its unsuccessful end (failed, timed out or cancelled).
    AfterNotOk,
    /// Any end.
    AfterAny,
}

impl DepKind {
    /// Slurm's name of it (`afterok`).
    pub fn code(self) -> &'static str {
        match self {
            DepKind::AfterOk => "afterok",
            DepKind::AfterNotOk => "afternotok",
            DepKind::AfterAny => "afterany",
        }
    }

    /// From Slurm's name.
    pub fn parse(s: &str) -> Option<DepKind> {
        match s {
            "afterok" => Some(DepKind::AfterOk),
            "afternotok" => Some(DepKind::AfterNotOk),
            "afterany" => Some(DepKind::AfterAny),
            _ => None,
        }
    }
}

/// `dependency` read: each (kind, job id) it names; an error says which
/// part is wrong.
pub fn parse_dependency(s: &str) -> Result<Vec<(DepKind, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        let mut it = part.split(':');
        let kind = it.next().unwrap_or("");
        let k = DepKind::parse(kind).ok_or_else(|| {
            format!("`{kind}` is not one of afterok, afternotok, afterany (as in `afterok:job-1`)")
        })?;
        let ids: Vec<&str> = it.map(str::trim).collect();
        if ids.is_empty() || ids.iter().any(|i| i.is_empty()) {
            return Err(format!("`{part}` names no job (as in `{kind}:job-1`)"));
        }
        out.extend(ids.into_iter().map(|i| (k, i.to_string())));
    }
    Ok(out)
}

impl JobSpec {
    /// A plain job: `gpus` accelerators of any type for `duration_s`.
    pub fn simple(id: impl Into<String>, submit_s: f64, gpus: u32, duration_s: f64) -> JobSpec {
        JobSpec {
            id: id.into(),
            submit_s,
            gpus,
            types: TypeFilter::any(),
            duration_s: Some(duration_s),
            steps: None,
            job_type: None,
            time_limit_s: None,
            tenant: None,
            category: None,
            priority: 0,
            preemptible: false,
            checkpoint_s: None,
            deadline_s: None,
            dependency: None,
        }
    }
}

/// Measured throughput (steps per second) of job types on accelerator types
/// at given gang sizes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Throughputs {
    /// job type -> accelerator type id (lower case) -> sorted (gpus, steps/s).
    table: HashMap<String, HashMap<String, Vec<(u32, f64)>>>,
}

impl Throughputs {
    pub fn new() -> Throughputs {
        Throughputs::default()
    }

    /// Records the throughput of `job_type` on `gpus` accelerators of `accel`.
    /// A throughput of 0 means the job cannot run there (e.g. out of memory).
    pub fn insert(&mut self, job_type: &str, accel: &str, gpus: u32, steps_per_s: f64) {
        let v = self
            .table
            .entry(job_type.to_string())
            .or_default()
            .entry(accel.to_ascii_lowercase())
            .or_default();
        match v.binary_search_by_key(&gpus, |e| e.0) {
            Ok(i) => v[i].1 = steps_per_s,
            Err(i) => v.insert(i, (gpus, steps_per_s)),
        }
    }

    /// Throughput of `job_type` on `gpus` accelerators of type `accel`.
    ///
    /// An exact gang size is used when measured; otherwise the largest
    /// measured size below `gpus` is scaled linearly (or the smallest above,
    /// scaled down). `None` when the pair was never measured; `Some(0.0)`
    /// when it cannot run there.
    pub fn get(&self, job_type: &str, accel: &str, gpus: u32) -> Option<f64> {
        let v = self.table.get(job_type)?.get(accel)?;
        if v.is_empty() {
            return None;
        }
        match v.binary_search_by_key(&gpus, |e| e.0) {
            Ok(i) => Some(v[i].1),
            Err(0) => Some(v[0].1 * gpus as f64 / v[0].0 as f64),
            Err(i) => Some(v[i - 1].1 * gpus as f64 / v[i - 1].0 as f64),
        }
    }

    pub fn has_job_type(&self, job_type: &str) -> bool {
        self.table.contains_key(job_type)
    }

    /// Job types, sorted.
    pub fn job_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.table.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Accelerator types measured for `job_type`, sorted.
    pub fn accelerators(&self, job_type: &str) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .table
            .get(job_type)
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// An allocation: GPU-hours granted to a tenant for a validity window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllocationSpec {
    /// Allocation id (jobs name their tenant; each tenant has one allocation
    /// unless an allocation file says otherwise).
    pub id: String,
    pub tenant: String,
    #[serde(default = "default_category")]
    pub category: Category,
    /// Granted accelerator-hours (billing-weighted); none means unlimited.
    #[serde(default)]
    pub granted_gpu_hours: Option<f64>,
    /// Validity window in seconds from workload start.
    #[serde(default)]
    pub valid_from_s: f64,
    #[serde(default)]
    pub valid_until_s: Option<f64>,
    /// QOS priority added to the job's own priority.
    #[serde(default)]
    pub qos_priority: i32,
    /// Fair-share weight; default is the granted hours, or 1.
    #[serde(default)]
    pub shares: Option<f64>,
}

fn default_category() -> Category {
    Category::Academia
}

impl AllocationSpec {
    /// An unlimited allocation for a tenant.
    pub fn open(tenant: &str, category: Category) -> AllocationSpec {
        AllocationSpec {
            id: tenant.to_string(),
            tenant: tenant.to_string(),
            category,
            granted_gpu_hours: None,
            valid_from_s: 0.0,
            valid_until_s: None,
            qos_priority: 0,
            shares: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_filter_forms() {
        let f = TypeFilter::parse("H100|mi300x").unwrap();
        assert_eq!(f.types, vec!["h100", "mi300x"]);
        let f = TypeFilter::parse("vendor:amd;mem>=100").unwrap();
        assert_eq!(f.vendor, Some(Vendor::Amd));
        assert_eq!(f.min_memory_gb, Some(100.0));
        assert_eq!(TypeFilter::parse(&f.to_column()).unwrap(), f);
        assert!(TypeFilter::parse("").unwrap().is_any());
        assert!(TypeFilter::parse("vendor:intelx").is_err());
        assert!(TypeFilter::parse("mem>=lots").is_err());
        assert!(TypeFilter::parse("h100||a").is_err());
    }

    #[test]
    fn throughput_lookup_scales() {
        let mut t = Throughputs::new();
        t.insert("a", "v100", 1, 10.0);
        t.insert("a", "v100", 4, 36.0);
        t.insert("a", "k80", 1, 0.0);
        assert_eq!(t.get("a", "v100", 4), Some(36.0));
        assert_eq!(t.get("a", "v100", 2), Some(20.0));
        assert_eq!(t.get("a", "v100", 8), Some(72.0));
        assert_eq!(t.get("a", "k80", 1), Some(0.0));
        assert_eq!(t.get("a", "p100", 1), None);
        assert_eq!(t.get("b", "v100", 1), None);
    }
}
