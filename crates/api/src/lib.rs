//! gigafab's API contract: the request and response bodies of `/api/v1`,
//! typed once and shared by the server (which builds its answers as these
//! types), the CLI and the portal. The OpenAPI document's schemas are
//! generated from them ([`schemas`]), so the document and the answers
//! cannot drift apart: the server's tests validate every answer they
//! receive against the document.
//!
//! Error codes (`Error::error`) are snake_case and stable (docs/api.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

mod catalog;
mod fleet;
mod meta;
pub use catalog::*;
pub use fleet::*;
pub use meta::*;

/// Most accelerators one job may ask for.
pub const MAX_GPUS: i64 = 65_536;
/// Longest time limit, seconds (30 days).
pub const MAX_TIME_LIMIT_S: i64 = 30 * 86_400;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = i64, format = Int64)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

mod endpoints;
pub use endpoints::*;
mod sessions;
pub use sessions::*;

id_type!(
    /// A job's id.
    JobId
);
id_type!(
    /// An allocation's id.
    AllocationId
);
id_type!(
    /// An organisation's id.
    OrgId
);
id_type!(
    /// A user's id.
    UserId
);
id_type!(
    /// A token's id (never its secret).
    TokenId
);
id_type!(
    /// A project's id.
    ProjectId
);
id_type!(
    /// An access call's id.
    CallId
);
id_type!(
    /// An access request's id.
    RequestId
);

/// An access request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Draft,
    Submitted,
    InReview,
    RevisionRequested,
    Approved,
    Rejected,
    Withdrawn,
}

/// An access call's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallState {
    Upcoming,
    Open,
    Closed,
}

/// How an access call's requests are decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CallMode {
    Playground,
    FastLane,
    LargeScale,
}

/// A review's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Reject,
    Revise,
}

/// Who wrote a comment on an access request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommentSide {
    Applicant,
    Reviewer,
    Operator,
}

/// An organisation's category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrgCategory {
    Academia,
    Public,
    Industry,
    Sme,
    Startup,
}

/// Where a job's energy figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnergySource {
    Model,
    Measured,
}

/// A row of the store that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnreadableState {
    Unreadable,
}

/// Every error answer: a stable snake_case code and a message for people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Error {
    /// `invalid_request`, `job_not_found`, `exceeds_allocation`, ...
    pub error: String,
    pub message: String,
}

/// A page of a listing; `next` is the cursor of the following page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

/// An accelerator vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    Nvidia,
    Amd,
    Other,
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

/// An allocation by id: a number, or a numeric string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum IdRef {
    Num(i64),
    Text(String),
}

impl IdRef {
    pub fn id(&self) -> Option<i64> {
        match self {
            IdRef::Num(n) => Some(*n),
            IdRef::Text(s) => s.trim().parse().ok(),
        }
    }
}

/// Body of `POST /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    /// The allocation charged.
    #[schema(value_type = IdRef)]
    pub allocation: IdRef,
    /// Accelerators, allocated all at once.
    #[schema(minimum = 1, maximum = 65536)]
    pub gpus: i64,
    /// Program and arguments.
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// One accelerator type (`h100`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Accelerator types it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vendor>)]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub min_memory_gb: Option<f64>,
    /// A slice of one accelerator: at least this share of it (0 < share
    /// < 1; `gpus` is then 1). The job runs on a shared pool's slice
    /// (docs/scheduling.md, "Sharing an accelerator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub gpu_share: Option<f64>,
    /// A slice with at least this much accelerator memory, GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub gpu_memory_gb: Option<f64>,
    /// A named slice: a MIG profile (`1g.10gb`), an AMD partition (`cpx`),
    /// or `mps-N` / `ts-N` (one of N MPS or time-sliced clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32)]
    pub gpu_profile: Option<String>,
    /// Seconds [default 3600, at most 30 days].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2592000)]
    pub time_limit_s: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -10000, maximum = 10000)]
    pub priority: Option<i64>,
    /// Whether a job of higher priority may stop it (it runs again later).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preemptible: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Memory limit of the job's processes, GB (its cgroup's memory.max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub memory_gb: Option<f64>,
    /// CPU limit of the job's processes, in CPUs (its cgroup's cpu.max).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub cpus: Option<f64>,
    /// What it trains or serves (`ResNet-50 (batch size 64)`): a job type of
    /// the server's throughput matrix, which places it where it runs best
    /// per billing unit (the `hetero` policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 128)]
    pub job_type: Option<String>,
    /// Catalog entries it reads: `dataset:NAME@VERSION`, `model:NAME@ALIAS`
    /// (or without the kind). Each must be readable by the caller; an alias
    /// resolves to its version now, and the job runs only at sites every
    /// input's residency allows. Each is a read-only directory in
    /// `GIGAFAB_INPUT_<NAME>` (upper case, `-` and `.` as `_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    /// A catalog model of the caller's organisation: once the job
    /// completes, what it wrote in `GIGAFAB_OUTPUT_DIR` becomes the model's
    /// next version (alias `latest`), its lineage the job and its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_model: Option<String>,
    /// Jobs it waits for, in Slurm's form: `afterok:12[:13][,afterany:14]`
    /// (`afterok`: their success; `afternotok`: their failure, time-out
    /// or cancellation; `afterany`: any end). Held until then; cancelled
    /// (`dependency_never_satisfied`) when it can no longer be satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// A job array, in Slurm's form: task indexes `0-99`, `1,3,5`,
    /// `0-30:10` (a step), then `%N` for at most N tasks at once
    /// (`0-99%10`). One job per task, each with `GIGAFAB_ARRAY_TASK_ID`;
    /// the answer is the first task's job. At most 1000 tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
}

impl SubmitJob {
    /// `command` on `gpus` accelerators of allocation `allocation`,
    /// everything else left to the server's defaults.
    pub fn new(allocation: i64, gpus: i64, command: Vec<String>) -> SubmitJob {
        SubmitJob {
            allocation: IdRef::Num(allocation),
            gpus,
            command,
            name: None,
            project: None,
            type_: None,
            types: None,
            vendor: None,
            min_memory_gb: None,
            gpu_share: None,
            gpu_memory_gb: None,
            gpu_profile: None,
            time_limit_s: None,
            priority: None,
            preemptible: None,
            env: None,
            workdir: None,
            memory_gb: None,
            cpus: None,
            job_type: None,
            inputs: None,
            output_model: None,
            dependency: None,
            array: None,
        }
    }
}

/// What a job may run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AcceleratorFilter {
    pub types: Vec<String>,
    /// A slice of one accelerator (`1g.10gb`, `0.25`, `any`), when the job
    /// asked for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<String>,
    #[schema(value_type = Option<Vendor>)]
    pub vendor: Option<String>,
    pub min_memory_gb: Option<f64>,
}

/// One line of a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvent {
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub at: String,
    /// `submitted`, `started`, `waiting`, `preempted`, `finished`, ...
    pub kind: String,
    pub message: String,
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub org: String,
    pub project: Option<String>,
    pub user: String,
    pub allocation: AllocationId,
    pub gpus: i64,
    pub accelerator: AcceleratorFilter,
    /// Its job type in the throughput matrix, if given.
    pub job_type: Option<String>,
    pub command: Vec<String>,
    pub time_limit_s: i64,
    pub priority: i32,
    pub preemptible: bool,
    #[schema(value_type = JobState)]
    pub state: String,
    /// Why it waits, or how it ended.
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub submitted_at: String,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub ended_at: Option<String>,
    /// `node/index` of each accelerator of its current run.
    pub accelerators: Vec<String>,
    /// Accelerator-hours charged so far (billing-weighted).
    pub gpu_hours: f64,
    pub energy_kwh: f64,
    pub avg_power_w: Option<f64>,
    /// None without a grid series for its site.
    pub carbon_g: Option<f64>,
    /// `model` or `measured`.
    #[schema(value_type = Option<EnergySource>)]
    pub energy_source: Option<String>,
    /// Its history (`GET /api/v1/jobs/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<JobEvent>>,
    /// The catalog versions it reads, as resolved at submission
    /// (`dataset:NAME@VERSION`).
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The catalog model its output becomes.
    #[serde(default)]
    pub output_model: Option<String>,
    /// What came of its output (`GET /api/v1/jobs/{id}` only): the version
    /// it became (`NAME@VERSION`), or why it was not registered; none
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The jobs it waits for, in Slurm's form (`afterok:12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dependency: Option<String>,
    /// The array it is a task of: its first task's job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_job: Option<i64>,
    /// Its task index in that array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_task: Option<i64>,
}

/// A row of the store that cannot be read (listed, never hidden).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UnreadableJob {
    pub id: Option<JobId>,
    /// Always `unreadable`.
    #[schema(value_type = UnreadableState)]
    pub state: String,
    /// Always `store_damaged`.
    pub error: String,
    pub message: String,
}

/// An item of `GET /api/v1/jobs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum JobItem {
    Job(Box<Job>),
    Unreadable(UnreadableJob),
}

/// Body of `POST /api/v1/allocations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAllocation {
    pub org: String,
    #[schema(exclusive_minimum = 0)]
    pub gpu_hours: f64,
    /// Validity [default 365 days].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub days: Option<f64>,
    /// RFC 3339 [default now].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub valid_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A project of the organisation the allocation is for: jobs on it run
    /// in that project, by its members [default: none: any member's].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

/// An allocation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    Pending,
    Active,
    Exhausted,
    Expired,
}

/// An allocation: a grant of accelerator-hours to an organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Allocation {
    pub id: AllocationId,
    pub org: String,
    pub name: String,
    pub granted_gpu_hours: f64,
    pub used_gpu_hours: f64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub valid_from: String,
    #[schema(format = DateTime)]
    pub valid_until: String,
    pub qos_priority: i64,
    #[schema(value_type = AllocationState)]
    pub state: String,
    /// Energy of its ended runs, kWh.
    #[serde(default)]
    pub energy_kwh: f64,
    /// Carbon of its ended runs, kg CO2e; none without a grid carbon
    /// intensity at any site.
    #[serde(default)]
    pub carbon_kg: Option<f64>,
    /// The project it is granted to, whose members alone run on it.
    #[serde(default)]
    pub project: Option<String>,
}

/// Body of `POST /api/v1/orgs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrg {
    pub name: String,
    /// `academia`, `public`, `industry`, `sme` or `startup`.
    pub category: String,
    /// Where it is established: ISO 3166-1 alpha-2 (`FR`), what calls
    /// limited to some countries check [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// An organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    #[schema(value_type = OrgCategory)]
    pub category: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(default)]
    pub country: Option<String>,
}

/// Body of `POST /api/v1/projects`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub org: String,
    pub name: String,
    /// Users of the organisation (names) who alone, with its owners, may
    /// run jobs in the project [default: none: every member may].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
}

/// A project of an organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: ProjectId,
    pub org: String,
    pub name: String,
    /// Its members' names. With members, only they and the organisation's
    /// owners run jobs in it (and on an allocation granted to it); without,
    /// every member of the organisation does.
    #[serde(default)]
    pub members: Vec<String>,
}

/// Body of `POST /api/v1/projects/{id}/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// A user of the project's organisation.
    pub user: UserId,
}

/// Body of `POST /api/v1/users`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// `admin`, `operator`, `owner` or `member` [default member].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Where notifications go (submitted, assigned, decided) [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The `sub` claim of the user's identity at the site's OpenID Connect
    /// provider (opaque and permanent, as MyAccessID's): signing in there
    /// signs in as this user [default: none].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 255)]
    pub oidc_subject: Option<String>,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub org: Option<String>,
    #[schema(value_type = Role)]
    pub role: String,
    pub email: Option<String>,
    /// The `sub` of the user's identity at the site's OpenID Connect
    /// provider, if linked.
    #[serde(default)]
    pub oidc_subject: Option<String>,
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Whose token (id or numeric string) [default: the caller].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<IdRef>)]
    pub user: Option<IdRef>,
    /// Days until it expires [default 90, at most 3650].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<f64>,
}

/// A live token (never its secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Token {
    pub id: TokenId,
    pub user: UserId,
    pub user_name: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// Query of `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListJobs {
    /// A state, or `active` (queued and running).
    pub state: Option<String>,
    /// Jobs charged to this allocation.
    pub allocation: Option<i64>,
    /// Jobs of this organisation (admins and operators).
    pub org: Option<String>,
    /// Jobs of this user (`name`, or `org/name`).
    pub user: Option<String>,
    /// Page size [default 100, at most 1000].
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub after: Option<i64>,
}

/// Query of a listing that pages (`GET /api/v1/audit`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListPage {
    /// Page size [default 100, at most 1000].
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub after: Option<i64>,
}

/// Query of `GET /api/v1/jobs/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `stdout` [default] or `stderr`.
    pub stream: Option<String>,
    /// Byte offset to start from.
    pub offset: Option<u64>,
    /// Keep the answer open and stream what the job writes.
    pub follow: Option<bool>,
}

/// A line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub user: String,
    pub action: String,
    pub object: String,
    pub detail: String,
}

/// The query parameters of `T`, as OpenAPI parameter objects.
pub fn query_params<T: IntoParams>() -> Vec<serde_json::Value> {
    T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query))
        .into_iter()
        .map(|p| serde_json::to_value(p).expect("a parameter is JSON"))
        .collect()
}

/// Body of `POST /api/v1/calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCall {
    pub name: String,
    /// `playground` (at most 2,000 GPU-hours and 92 days a request,
    /// approved at once for an eligible organisation), `fast-lane` (at most
    /// 50,000 GPU-hours, one technical review decides) or `large-scale`
    /// (more, two scored reviews then an operator's decision).
    pub mode: String,
    /// Organisation categories that may apply (startup, sme, industry,
    /// academia, public).
    pub categories: Vec<String>,
    /// GPU-hours the call may grant in all.
    #[schema(exclusive_minimum = 0)]
    pub envelope_gpu_hours: f64,
    /// RFC 3339 [default now].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub opens_at: Option<String>,
    /// RFC 3339 [default: never closes].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub closes_at: Option<String>,
    /// Countries whose organisations may apply (ISO 3166-1 alpha-2)
    /// [default: any].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub countries: Option<Vec<String>>,
    /// Accelerator types it offers (`h100`), which requests split their
    /// GPU-hours among [default: any].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
}

/// An access call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Call {
    pub id: CallId,
    pub name: String,
    #[schema(value_type = CallMode)]
    pub mode: String,
    pub categories: Vec<String>,
    pub envelope_gpu_hours: f64,
    /// GPU-hours granted by its approved requests so far.
    pub granted_gpu_hours: f64,
    #[schema(format = DateTime)]
    pub opens_at: String,
    #[schema(format = DateTime)]
    pub closes_at: Option<String>,
    /// `upcoming`, `open` or `closed`.
    #[schema(value_type = CallState)]
    pub state: String,
    /// The users who review its requests.
    pub reviewers: Vec<UserId>,
    /// Eligible countries (empty: any).
    #[serde(default)]
    pub countries: Vec<String>,
    /// Offered accelerator types (empty: any).
    #[serde(default)]
    pub types: Vec<String>,
}

/// Body of `POST /api/v1/calls/{id}/reviewers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddReviewer {
    pub user: UserId,
}

/// Body of `POST /api/v1/requests`: a draft.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub call: CallId,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The project the approval creates in the applicant's organisation
    /// (required for a new allocation; an extension has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// An extension: the allocation of the applicant's organisation that
    /// the approval extends by `gpu_hours` and `days` (from its end), under
    /// the same review as a new request [default: none, a new allocation].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<AllocationId>)]
    pub extends: Option<AllocationId>,
    #[schema(exclusive_minimum = 0)]
    pub gpu_hours: f64,
    /// How long the allocation lasts, days.
    #[schema(exclusive_minimum = 0)]
    pub days: f64,
    /// How `gpu_hours` splits among the call's accelerator types
    /// (`{"h100": 1500, "mi300x": 500}`; adds up to `gpu_hours`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hours_by_type: Option<BTreeMap<String, f64>>,
    /// Data residency needs (one line: `EU only`, `FR site`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub residency: Option<String>,
    /// The team: names of users of the applicant's organisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Vec<String>>,
}

/// A review of an access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Review {
    pub reviewer: UserId,
    pub reviewer_name: String,
    /// 1 (poor) to 5 (excellent).
    pub score: i64,
    /// `approve`, `reject` or `revise`.
    #[schema(value_type = Verdict)]
    pub verdict: String,
    pub comment: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// Body of `POST /api/v1/requests/{id}/reviews`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReview {
    #[schema(minimum = 1, maximum = 5)]
    pub score: i64,
    /// `approve`, `reject` or `revise`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of `POST /api/v1/requests/{id}/decision` (an operator's, after
/// the reviews of a large-scale request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDecision {
    pub approve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Body of `POST /api/v1/requests/{id}/comments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateComment {
    /// At most 10,000 bytes.
    #[schema(max_length = 10000)]
    pub text: String,
}

/// A comment on an access request, by an applicant or a reviewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RequestComment {
    pub user: String,
    /// `applicant`, `reviewer` or `operator`.
    #[schema(value_type = CommentSide)]
    pub side: String,
    pub text: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// An access request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AccessRequest {
    pub id: RequestId,
    pub call: CallId,
    pub org: String,
    pub user: String,
    pub title: String,
    pub summary: String,
    pub project: String,
    pub gpu_hours: f64,
    pub days: f64,
    /// `draft`, `submitted`, `in_review`, `revision_requested`,
    /// `approved`, `rejected` or `withdrawn`.
    #[schema(value_type = RequestState)]
    pub state: String,
    /// The allocation its approval granted (or extended).
    pub allocation: Option<AllocationId>,
    /// The allocation it asks to extend (an extension request).
    #[serde(default)]
    pub extends: Option<AllocationId>,
    #[serde(default)]
    pub gpu_hours_by_type: BTreeMap<String, f64>,
    #[serde(default)]
    pub residency: Option<String>,
    #[serde(default)]
    pub team: Vec<String>,
    pub reviews: Vec<Review>,
    /// The conversation between the applicants and the reviewers, oldest
    /// first.
    #[serde(default)]
    pub comments: Vec<RequestComment>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// Body of `POST /api/v1/fleet/nodes/{name}/drain` (optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainNode {
    /// Why (one line, at most 200 bytes): kept with the node, audited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 200)]
    pub reason: Option<String>,
}

/// Body of `POST /api/v1/fleet/nodes/{name}/telemetry`: a node agent's
/// batch of readings (`gigafab agent run`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeTelemetry {
    /// The batch's number, increasing per agent run: a batch sent again
    /// after a lost answer is taken once.
    pub seq: u64,
    /// When the agent started (ms since the Unix epoch): a restarted agent
    /// numbers its batches from 1 again.
    pub agent_start_ms: i64,
    /// At most 256 readings.
    pub samples: Vec<DeviceSample>,
}

/// One reading of one accelerator of the node (the fields of
/// `gigafab agent probe -o json`): the telemetry crate's reading itself.
pub use gigafab_telemetry::Sample as DeviceSample;

/// A job's estimated start (`GET /api/v1/jobs/{id}/estimate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEstimate {
    pub job: JobId,
    #[schema(value_type = JobState)]
    pub state: String,
    /// RFC 3339; none when the job is not queued, or does not start within
    /// the ends the estimate runs through.
    #[schema(format = DateTime)]
    pub estimated_start: Option<String>,
    /// What the estimate assumes.
    pub basis: String,
}

/// One pool of what the factory offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OfferPool {
    pub name: String,
    pub site: String,
    /// The accelerator type (`h100`).
    #[serde(rename = "type")]
    pub type_: String,
    pub vendor: String,
    pub memory_gb: f64,
    pub accelerators: u64,
    /// Free now (neither busy, drained nor down).
    pub free: u64,
    pub drained: u64,
}

/// What the factory offers (`GET /api/v1/offer`, no token): its pools with
/// their free accelerators now, and its open access calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Offer {
    pub accelerators: u64,
    pub free: u64,
    pub pools: Vec<OfferPool>,
    /// The calls open now (without their reviewers).
    pub calls: Vec<Call>,
}

/// The component schemas of the OpenAPI document, generated from the
/// types above: (name, JSON schema).
pub fn schemas() -> Vec<(String, serde_json::Value)> {
    use utoipa::openapi::RefOr;
    use utoipa::{PartialSchema, ToSchema};
    fn one<T: ToSchema + PartialSchema>() -> (String, serde_json::Value) {
        let s: RefOr<utoipa::openapi::schema::Schema> = T::schema();
        (
            T::name().into_owned(),
            serde_json::to_value(s).expect("a schema is JSON"),
        )
    }
    let mut out = vec![
        one::<JobId>(),
        one::<SessionId>(),
        one::<App>(),
        one::<StartSession>(),
        one::<ExtendSession>(),
        one::<SessionState>(),
        one::<Session>(),
        one::<FileEntry>(),
        one::<JobFiles>(),
        one::<SpaceFiles>(),
        one::<AllocationId>(),
        one::<OrgId>(),
        one::<UserId>(),
        one::<TokenId>(),
        one::<ProjectId>(),
        one::<Error>(),
        one::<Vendor>(),
        one::<JobState>(),
        one::<IdRef>(),
        one::<SubmitJob>(),
        one::<AcceleratorFilter>(),
        one::<JobEvent>(),
        one::<Job>(),
        one::<UnreadableJob>(),
        one::<JobItem>(),
        one::<CreateAllocation>(),
        one::<AllocationState>(),
        one::<Allocation>(),
        one::<CreateOrg>(),
        one::<Org>(),
        one::<CreateProject>(),
        one::<Project>(),
        one::<CreateUser>(),
        one::<User>(),
        one::<CreateToken>(),
        one::<Token>(),
        one::<AuditEntry>(),
        one::<CallId>(),
        one::<RequestId>(),
        one::<CreateCall>(),
        one::<Call>(),
        one::<AddReviewer>(),
        one::<CreateRequest>(),
        one::<Review>(),
        one::<CreateReview>(),
        one::<CreateDecision>(),
        one::<CreateComment>(),
        one::<RequestComment>(),
        one::<AccessRequest>(),
        one::<RequestState>(),
        one::<CallState>(),
        one::<CallMode>(),
        one::<Verdict>(),
        one::<CommentSide>(),
        one::<OrgCategory>(),
        one::<EnergySource>(),
        one::<UnreadableState>(),
        one::<EntryKind>(),
        one::<EntryAccess>(),
        one::<ProblemKind>(),
        one::<AddMember>(),
        one::<Card>(),
        one::<CreateEntry>(),
        one::<CatalogEntry>(),
        one::<EntryGrant>(),
        one::<EntryAccessRequest>(),
        one::<ManifestFile>(),
        one::<Lineage>(),
        one::<CatalogVersion>(),
        one::<StartUpload>(),
        one::<Upload>(),
        one::<CommitUpload>(),
        one::<RegisterInPlace>(),
        one::<SetAlias>(),
        one::<GrantEntry>(),
        one::<RequestEntryAccess>(),
        one::<VerifyProblem>(),
        one::<VerifyReport>(),
        one::<LineageGraph>(),
        one::<JobEstimate>(),
        one::<DrainNode>(),
        one::<NodeTelemetry>(),
        one::<DeviceSample>(),
        one::<OfferPool>(),
        one::<Offer>(),
        one::<NodeState>(),
        one::<NodeHealth>(),
        one::<FleetNode>(),
        one::<Fleet>(),
        one::<SiteStatus>(),
        one::<Sites>(),
        one::<TelemetryAck>(),
        one::<HealthEvidence>(),
        one::<DeviceReadings>(),
        one::<NodeReadings>(),
        one::<AllocationUsage>(),
        one::<OrgUsage>(),
        one::<Usage>(),
        one::<HealthStatus>(),
        one::<LoopHealth>(),
        one::<Health>(),
        one::<Role>(),
        one::<WhoAmI>(),
        one::<NewUser>(),
        one::<NewToken>(),
        one::<RevokedToken>(),
        one::<DisabledUser>(),
        one::<EndpointId>(),
        one::<EndpointKeyId>(),
        one::<CreateEndpoint>(),
        one::<ScaleEndpoint>(),
        one::<EndpointScaling>(),
        one::<ReplicaState>(),
        one::<EndpointReplica>(),
        one::<EndpointUsage>(),
        one::<Endpoint>(),
        one::<CreateEndpointKey>(),
        one::<EndpointKey>(),
        one::<NewEndpointKey>(),
        one::<EndpointEvent>(),
        one::<EndpointEvents>(),
        one::<ReplicaReach>(),
        one::<GatewayReplica>(),
        one::<GatewayEndpoint>(),
        one::<GatewayKey>(),
        one::<GatewayLoad>(),
        one::<GatewayReplicaLoad>(),
        one::<GatewayKeyUsage>(),
        one::<GatewaySync>(),
        one::<GatewayRoutes>(),
    ];
    // pages of each listed object
    for (name, item) in [
        ("JobPage", "JobItem"),
        ("AllocationPage", "Allocation"),
        ("OrgPage", "Org"),
        ("ProjectPage", "Project"),
        ("UserPage", "User"),
        ("TokenPage", "Token"),
        ("AuditPage", "AuditEntry"),
        ("CallPage", "Call"),
        ("RequestPage", "AccessRequest"),
        ("CatalogPage", "CatalogEntry"),
        ("EndpointPage", "Endpoint"),
        ("EndpointKeyPage", "EndpointKey"),
        ("AppPage", "App"),
        ("SessionPage", "Session"),
    ] {
        out.push((
            name.into(),
            serde_json::json!({
                "type": "object",
                "required": ["items", "next"],
                "properties": {
                    "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
                    "next": {"type": ["integer", "null"], "format": "int64"}
                }
            }),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_name_required_fields_and_refs() {
        let s: BTreeMap<String, serde_json::Value> = schemas().into_iter().collect();
        let job = &s["Job"];
        let req: Vec<&str> = job["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(req.contains(&"id") && req.contains(&"state") && !req.contains(&"events"));
        // every $ref names a schema of the set
        let text = serde_json::to_string(&s).unwrap();
        for r in text.split("#/components/schemas/").skip(1) {
            let name: String = r.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(s.contains_key(&name), "dangling $ref {name}");
        }
        let sub = &s["SubmitJob"];
        assert_eq!(sub["additionalProperties"], false, "{sub}");
    }

    #[test]
    fn a_submission_round_trips() {
        let j: SubmitJob = serde_json::from_str(
            r#"{"allocation": "3", "gpus": 2, "command": ["x"], "type": "h100"}"#,
        )
        .unwrap();
        assert_eq!(j.allocation.id(), Some(3));
        assert_eq!(j.type_.as_deref(), Some("h100"));
        let back = serde_json::to_value(&j).unwrap();
        assert_eq!(back["type"], "h100");
        assert!(back.get("name").is_none());
        assert!(serde_json::from_str::<SubmitJob>(
            r#"{"allocation": 1, "gpus": 1, "command": ["x"], "gpu": 2}"#
        )
        .is_err());
    }
}
