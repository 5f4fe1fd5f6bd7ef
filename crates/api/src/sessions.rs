//! Interactive sessions (docs/sessions.md): an app (JupyterLab, a
//! terminal, ...) run as a job on accelerators and reached through the
//! server's authenticated proxy at `/sessions/{id}/`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{IdRef, JobId};

id_type!(
    /// An interactive session's id.
    SessionId
);

/// An app sessions can run (a file of the server's app directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct App {
    /// Its name, as `StartSession::app` gives it.
    pub name: String,
    pub title: String,
    pub description: String,
    /// How its idleness is seen: `app` (the app's own activity API) or
    /// `traffic` (the requests through the proxy).
    pub idle_check: String,
}

/// Body of `POST /api/v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartSession {
    /// The app (`GET /api/v1/apps`).
    pub app: String,
    /// The allocation charged.
    #[schema(value_type = IdRef)]
    pub allocation: IdRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Accelerators [default 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub gpus: Option<i64>,
    /// Accelerator types it may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    /// A slice of one accelerator instead (`gpus` 1): at least this share
    /// of it (0 < share < 1), as a job's `gpu_share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub gpu_share: Option<f64>,
    /// A named slice (`1g.10gb`, `cpx`, `mps-4`), as a job's `gpu_profile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32)]
    pub gpu_profile: Option<String>,
    /// Its time limit, seconds [default 2 h]; at most the server's
    /// `--session-max-hours`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 60)]
    pub time_limit_s: Option<i64>,
    /// Ended after this long without activity, seconds [default 1 h].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 10)]
    pub idle_timeout_s: Option<i64>,
}

/// Body of `POST /api/v1/sessions/{id}/extend`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendSession {
    /// Seconds added to its time limit.
    #[schema(minimum = 60)]
    pub by_s: i64,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Its job waits for accelerators.
    Queued,
    /// Its job runs; the app does not answer yet.
    Starting,
    /// Open it at `url`.
    Ready,
    /// Its job ended (`reason` says why: stopped, culled when idle, its
    /// time limit, a failure).
    Ended,
}

/// An interactive session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Session {
    pub id: SessionId,
    pub app: String,
    /// Its job (charged like any job).
    pub job: JobId,
    pub user: String,
    pub state: SessionState,
    /// Where the browser opens it: this server's `/sessions/{id}/`
    /// (signed in to the portal as its user).
    pub url: String,
    pub gpus: i64,
    pub time_limit_s: i64,
    /// When its time limit ends it (RFC 3339), once it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
    pub idle_timeout_s: i64,
    /// Its last activity as last seen (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,
    /// Most seconds it may still be extended by.
    pub extendable_s: i64,
    pub created: String,
    /// Why it ended, or why it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Query of `/api/v1/jobs/{id}/files...` and `/api/v1/space/files...`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilePath {
    /// A path inside the job's working directory, or the project space
    /// (no `..`, not absolute) [default: the directory itself].
    pub path: Option<String>,
    /// A file's first bytes only, at most this many (a preview).
    pub max: Option<u64>,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub dir: bool,
    /// Bytes (files).
    pub size: u64,
    /// Last change (RFC 3339).
    pub modified: String,
}

/// A directory of a job's files, as its account sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobFiles {
    pub job: JobId,
    /// The directory, inside the job's working directory (`.`: itself).
    pub path: String,
    /// Uploads may go there (a job run as its user's account).
    pub writable: bool,
    pub entries: Vec<FileEntry>,
}

/// A directory of the caller's organisation's project space, as the
/// caller's account sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpaceFiles {
    pub org: String,
    /// The space on the machines (what jobs find at `$GIGAFAB_PROJECT_DIR`).
    pub dir: String,
    /// The directory, inside the space (`.`: itself).
    pub path: String,
    /// Uploads may go there.
    pub writable: bool,
    /// Most bytes the space may take for an upload to go in (absent: the
    /// file system's own quotas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    pub entries: Vec<FileEntry>,
}
