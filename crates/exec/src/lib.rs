//! Executors: where gigafab's jobs actually run.
//!
//! The control plane decides *what* runs *where*; an [`Executor`] makes it
//! happen on an existing engine (local processes here; Slurm and Kubernetes
//! implement the same trait). Every call is synchronous and quick: launching
//! hands the work to a supervisor and returns, polling reads state that the
//! supervisor keeps on disk, so the server survives being killed and adopts
//! what is still running when it comes back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub mod attach;
pub mod engines;
pub mod files;
pub mod local;
pub mod posix;
pub mod power;
pub mod reach;
pub mod routed;
pub mod slurm;
pub mod testing;

pub use local::{DeviceFiles, LocalExecutor};
pub use reach::Reach;
pub use slurm::SlurmExecutor;

/// Vendor of an assigned accelerator (selects the visibility variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceVendor {
    Nvidia,
    Amd,
    Other,
}

/// One accelerator handed to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedAccel {
    /// Node name as in the factory file (`nvidia-0`).
    pub node: String,
    /// Device index on that node (what `CUDA_VISIBLE_DEVICES` lists): for
    /// a slice, its accelerator's (an AMD partition is a device of its own,
    /// numbered among the partitions).
    pub index: u32,
    pub vendor: DeviceVendor,
    /// Set when the job holds a slice of the accelerator, not all of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slice: Option<AssignedSlice>,
}

/// A slice of an accelerator handed to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedSlice {
    /// `mig`, `partition`, `mps` or `time-slicing`.
    pub kind: String,
    /// `1g.10gb`, `cpx`, `mps-4`, `ts-4`.
    pub name: String,
    /// Which slice of the accelerator (0-based).
    pub slot: u32,
    /// Slices the accelerator is split into.
    pub of: u32,
    /// The slice's memory, MiB.
    pub memory_mib: u64,
    /// A MIG instance's UUID (`MIG-...`), as NVML lists it on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// A MIG instance's GPU instance and compute instance ids: which of
    /// the driver's capability files (`/dev/nvidia-caps/nvidia-capN`) it
    /// opens; every other one is hidden from the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance: Option<u32>,
    /// A MIG instance's GPU's minor number, which names it in the
    /// driver's capability table (`gpuN`); the device index where unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_minor: Option<u32>,
    /// An AMD partition's device: the compute partition mode AMD SMI
    /// reports for it (`CPX`), when it could say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_mode: Option<String>,
}

impl AssignedAccel {
    /// `node/index`, the form used in the API and in `GIGAFAB_ACCELERATORS`.
    pub fn label(&self) -> String {
        match &self.slice {
            // an AMD partition is numbered as a device of its own
            Some(s) if s.kind != "partition" => {
                format!("{}/{}:{}{}", self.node, self.index, s.name, slot_suffix(s))
            }
            _ => format!("{}/{}", self.node, self.index),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    pub job_id: i64,
    /// Program and arguments; never empty.
    pub command: Vec<String>,
    /// Extra environment (on top of the accelerator variables).
    pub env: Vec<(String, String)>,
    pub accelerators: Vec<AssignedAccel>,
    /// Wall-clock limit of the run, seconds.
    pub time_limit_s: u64,
    /// Working directory; the job's own directory when `None`.
    pub workdir: Option<PathBuf>,
    /// Accelerator type id the scheduler chose (`h100`), for engines that
    /// place jobs themselves (Slurm).
    pub accel_type: Option<String>,
    /// Accelerators of the job.
    pub gpus: u32,
    /// Accelerators per node of its pool.
    pub per_node: u32,
    /// Allocation it is charged to.
    pub account: Option<String>,
    /// That allocation's grant, accelerator-minutes (for engines that
    /// enforce it too: Slurm's GrpTRESMins).
    pub grant_gpu_minutes: Option<u64>,
    /// Site of the pool it runs on (selects the executor of that site).
    pub site: Option<String>,
    /// The POSIX account the job runs as (the server runs as root then);
    /// `None`: as the server's own account.
    pub run_as: Option<String>,
    /// Memory limit of the job's processes, bytes (cgroup memory.max).
    pub memory_bytes: Option<u64>,
    /// Whether an earlier launch of this job may have reached the engine
    /// (it failed with a transient error): the executor then looks for
    /// that run before starting another (never twice). A first launch
    /// costs no lookup.
    pub retry: bool,
    /// CPU limit of the job's processes, in CPUs (cgroup cpu.max).
    pub cpus: Option<f64>,
    /// Directories the job reads and must not change (its catalog
    /// inputs): bound read-only in its mount namespace where the executor
    /// may make one (a root server), else left to their file modes.
    pub read_only: Vec<PathBuf>,
    /// The port the job serves on (a model endpoint's replica): the
    /// executor makes it reachable to the gateway ([`Executor::reach`]).
    pub serve_port: Option<u16>,
}

impl LaunchSpec {
    /// A launch of `command` for job `job_id` with nothing else set: no
    /// accelerator, a minute's limit, the job's own directory, the server's
    /// account (tests and tools fill in what they need).
    pub fn new(job_id: i64, command: Vec<String>) -> LaunchSpec {
        LaunchSpec {
            job_id,
            command,
            env: Vec::new(),
            accelerators: Vec::new(),
            time_limit_s: 60,
            workdir: None,
            accel_type: None,
            gpus: 0,
            per_node: 0,
            account: None,
            grant_gpu_minutes: None,
            site: None,
            run_as: None,
            memory_bytes: None,
            retry: false,
            cpus: None,
            read_only: Vec::new(),
            serve_port: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Exit code 0.
    Completed,
    /// Non-zero exit, killed by a signal, or could not start.
    Failed,
    /// Reached its time limit and was stopped.
    TimedOut,
    /// Stopped on request.
    Cancelled,
}

/// The end of a run, as the supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub outcome: Outcome,
    /// Exit code when the command exited by itself.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// Human-readable detail ("exit code 3", "command not found: foo", ...).
    pub message: String,
    /// Wall-clock end, milliseconds since the Unix epoch.
    pub ended_at_ms: i64,
    /// The run's length by the engine's own accounting (Slurm: sacct's
    /// `ElapsedRaw`), which the allocation is charged; None where the
    /// engine keeps none (local runs: the controller's own watch is it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_s: Option<i64>,
}

/// What `poll`/`adopt` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunStatus {
    /// Still running.
    Running,
    /// Ended; see the record.
    Exited(ExitRecord),
    /// Neither running nor recorded as ended (its supervisor vanished, or
    /// it never started): the run is lost.
    Lost { message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("job {job}: {message}")]
    Launch { job: i64, message: String },
    #[error("job {job}: bad handle {handle:?}")]
    BadHandle { job: i64, handle: String },
    /// The engine cannot be reached now (e.g. slurmctld restarting): try
    /// again later; nothing is known to have changed.
    #[error("job {job}: {message} (will retry)")]
    Transient { job: i64, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ExecError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ExecError::Transient { .. })
    }
}

/// `Err` with what the names are when `name` is not one of
/// [`engines::ENGINES`].
pub fn check_backend(name: &str) -> Result<(), String> {
    engines::engine(name).map(|_| ())
}

/// An engine that runs jobs.
pub trait Executor: Send + Sync {
    /// Short name (`local`, `slurm`).
    fn name(&self) -> &'static str;
    /// Starts a run; returns an opaque handle to store with the job.
    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecError>;
    /// State of a run started by this process or adopted.
    fn poll(&self, job_id: i64, handle: &str) -> Result<RunStatus, ExecError>;
    /// State of many runs at once, in the order given: one query to the
    /// engine where it can (Slurm asks `squeue` once for all of them, and
    /// `sacct` once for those that left its queue). By default, one by one.
    fn poll_all(&self, runs: &[(i64, String)]) -> Vec<Result<RunStatus, ExecError>> {
        runs.iter().map(|(id, h)| self.poll(*id, h)).collect()
    }
    /// Asks a run to stop (SIGTERM, grace, SIGKILL for local runs); returns
    /// at once, the end shows up in `poll`.
    fn cancel(&self, job_id: i64, handle: &str) -> Result<(), ExecError>;
    /// After a restart: finds the run of a job recorded as running. `handle`
    /// is `None` when the server stopped between deciding the start and
    /// recording the handle; the executor then looks for traces of a launch
    /// and returns the handle it found with the status.
    fn adopt(
        &self,
        job_id: i64,
        handle: Option<&str>,
    ) -> Result<(Option<String>, RunStatus), ExecError>;
    /// Where the gateway reaches a running job launched with
    /// `serve_port` = `port` (its `handle` from [`Executor::launch`]). By
    /// default the machine's loopback: right for engines whose jobs share
    /// the gateway's host and network.
    fn reach(&self, _job_id: i64, _handle: &str, port: u16) -> Result<Reach, ExecError> {
        Ok(Reach::Tcp(format!("127.0.0.1:{port}")))
    }
    /// The address a job launched as `spec` (with `serve_port`) listens on
    /// (`{host}` in its command): the loopback where the gateway shares the
    /// job's machine, all addresses where the job runs on another one.
    fn serve_host(&self, _spec: &LaunchSpec) -> &'static str {
        "127.0.0.1"
    }
    /// Files holding the job's stdout and stderr.
    fn log_paths(&self, job_id: i64) -> (PathBuf, PathBuf);
    /// A directory the job may make and write its output in (a catalog
    /// output model): beside its logs unless the engine says otherwise.
    fn output_dir(&self, job_id: i64) -> PathBuf {
        let (out, _) = self.log_paths(job_id);
        out.parent()
            .map_or_else(|| PathBuf::from("output"), |d| d.join("output"))
    }
    /// Makes (or brings up to date) the engine's own account for gigafab
    /// allocation `alloc` as it is granted or extended: its grant as the
    /// engine's limit, and the POSIX accounts that may charge it (Slurm:
    /// an account, `GrpTRESMins=gres/gpu=M`, a user association each).
    /// Engines without accounts (local processes) have nothing to do.
    fn provision(
        &self,
        _alloc: &str,
        _grant_gpu_minutes: u64,
        _users: &[String],
    ) -> Result<(), ExecError> {
        Ok(())
    }
    /// Gives a running run a new time limit, `limit_s` from its start (an
    /// interactive session extended). Engines that cannot say so.
    fn extend(&self, job_id: i64, _handle: &str, _limit_s: u64) -> Result<(), ExecError> {
        Err(ExecError::Launch {
            job: job_id,
            message: format!(
                "the {} engine cannot change a run's time limit",
                self.name()
            ),
        })
    }
    /// A shell in running job `job_id` on a `rows` × `cols` terminal, as
    /// its account, in its cgroup and namespaces ([`attach`]): the
    /// terminal's controlling side. Engines that cannot say so.
    fn attach(
        &self,
        job_id: i64,
        _handle: &str,
        _rows: u16,
        _cols: u16,
    ) -> Result<std::os::fd::OwnedFd, ExecError> {
        Err(ExecError::Launch {
            job: job_id,
            message: format!("the {} engine cannot attach a shell to a job", self.name()),
        })
    }
    /// Where job `job_id`'s files are browsed: its working directory
    /// (`workdir` where it named one), writable where it runs as an
    /// account (`as_account`). None: the engine's jobs keep their files
    /// elsewhere (a cluster's file systems).
    fn files_root(
        &self,
        _job_id: i64,
        _handle: Option<&str>,
        _workdir: Option<&str>,
        _as_account: bool,
    ) -> Option<files::FilesRoot> {
        None
    }
    /// Bytes job `job_id` may still add to its directory under its disk
    /// limit (None: no limit). Walks the directory: call it off the async
    /// threads.
    fn files_room(&self, _job_id: i64) -> Option<u64> {
        None
    }
    /// Whether a job run as `account` (None: the server's own) could
    /// enter `dir` as its working directory, checked with the account's
    /// own rights where this engine runs jobs on this machine. Engines
    /// whose jobs run elsewhere cannot tell, and say yes.
    fn check_workdir(&self, _account: Option<&str>, _dir: &std::path::Path) -> Result<(), String> {
        Ok(())
    }
    /// Takes node `node` (of `site`) out of the engine's service with
    /// `reason` (`drain`), or puts it back. Engines without nodes of their
    /// own (local processes) have nothing to do: gigafab's scheduler keeps
    /// jobs off a drained node itself.
    fn drain_node(
        &self,
        _site: Option<&str>,
        _node: &str,
        _reason: &str,
        _drain: bool,
    ) -> Result<(), ExecError> {
        Ok(())
    }
}

/// `#k` for the k-th slice.
fn slot_suffix(s: &AssignedSlice) -> String {
    format!("#{}", s.slot)
}

/// The environment that exposes `accels` to a job: `CUDA_VISIBLE_DEVICES`
/// (NVIDIA device indices, or a MIG instance's UUID), `ROCR_VISIBLE_DEVICES`
/// (AMD device indices: a partition is a device of its own) and
/// `GIGAFAB_ACCELERATORS` (`node/index` of every accelerator, with
/// `:slice#k` for a slice, comma separated). A variable whose vendor is
/// absent is set to the empty string so that a job cannot see devices it
/// was not given. A slice shared by MPS also gets its memory limit
/// (`CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`) and its share of the compute
/// threads (`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`); every slice is described
/// in `GIGAFAB_SLICE` (`kind name memory_mib`).
pub fn accelerator_env(accels: &[AssignedAccel]) -> Vec<(String, String)> {
    let list = |v: DeviceVendor| {
        accels
            .iter()
            .filter(|a| a.vendor == v)
            .map(|a| match &a.slice {
                Some(s) if s.kind == "mig" => s.uuid.clone().unwrap_or_default(),
                _ => a.index.to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut env = vec![
        ("CUDA_VISIBLE_DEVICES".into(), list(DeviceVendor::Nvidia)),
        ("ROCR_VISIBLE_DEVICES".into(), list(DeviceVendor::Amd)),
        (
            "GIGAFAB_ACCELERATORS".into(),
            accels
                .iter()
                .map(AssignedAccel::label)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if let Some(s) = accels.iter().find_map(|a| a.slice.as_ref()) {
        env.push((
            "GIGAFAB_SLICE".into(),
            format!("{} {} {}", s.kind, s.name, s.memory_mib),
        ));
        if s.kind == "mps" {
            // the device is the job's only one: index 0 in its own view
            env.push((
                "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".into(),
                format!("0={}M", s.memory_mib),
            ));
            env.push((
                "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".into(),
                (100 / s.of.max(1)).max(1).to_string(),
            ));
        }
    }
    env
}

/// Now, milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Variables of the server's environment that a job inherits: what a
/// program needs to run (PATH, locale, time zone, HOME), never secrets. The
/// rest of a job's environment is what it asked for and what gigafab sets
/// (accelerators, `GIGAFAB_JOB_ID`).
pub const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TERM"];

/// The inherited part of a job's environment (see [`INHERITED_ENV`]); PATH
/// defaults to the usual system directories.
pub fn base_env() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = INHERITED_ENV
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    if !out.iter().any(|(k, _)| k == "PATH") {
        out.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_splits_vendors() {
        let a = |node: &str, index, vendor| AssignedAccel {
            node: node.into(),
            index,
            vendor,
            slice: None,
        };
        let env = accelerator_env(&[
            a("n0", 2, DeviceVendor::Nvidia),
            a("n0", 3, DeviceVendor::Nvidia),
        ]);
        assert_eq!(env[0], ("CUDA_VISIBLE_DEVICES".into(), "2,3".into()));
        assert_eq!(env[1], ("ROCR_VISIBLE_DEVICES".into(), "".into()));
        assert_eq!(env[2], ("GIGAFAB_ACCELERATORS".into(), "n0/2,n0/3".into()));
        let env = accelerator_env(&[a("m", 0, DeviceVendor::Amd)]);
        assert_eq!(env[0].1, "");
        assert_eq!(env[1].1, "0");
    }

    #[test]
    fn a_slice_shows_only_itself() {
        let slice = |kind: &str, name: &str, slot, of, uuid: Option<&str>| AssignedSlice {
            kind: kind.into(),
            name: name.into(),
            slot,
            of,
            memory_mib: 10240,
            uuid: uuid.map(Into::into),
            gpu_instance: None,
            compute_instance: None,
            gpu_minor: None,
            device_mode: None,
        };
        let mig = AssignedAccel {
            node: "n0".into(),
            index: 3,
            vendor: DeviceVendor::Nvidia,
            slice: Some(slice("mig", "1g.10gb", 5, 7, Some("MIG-abc"))),
        };
        let env = accelerator_env(std::slice::from_ref(&mig));
        assert_eq!(env[0], ("CUDA_VISIBLE_DEVICES".into(), "MIG-abc".into()));
        assert_eq!(env[2].1, "n0/3:1g.10gb#5");
        assert_eq!(env[3], ("GIGAFAB_SLICE".into(), "mig 1g.10gb 10240".into()));
        assert_eq!(env.len(), 4, "no MPS variables for MIG");
        let mps = AssignedAccel {
            slice: Some(slice("mps", "mps-4", 1, 4, None)),
            ..mig.clone()
        };
        let env = accelerator_env(&[mps]);
        assert_eq!(env[0].1, "3", "the accelerator, not the slot");
        assert!(env.contains(&("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT".into(), "0=10240M".into())));
        assert!(env.contains(&("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE".into(), "25".into())));
        let cpx = AssignedAccel {
            vendor: DeviceVendor::Amd,
            index: 13,
            slice: Some(slice("partition", "cpx", 5, 8, None)),
            ..mig
        };
        let env = accelerator_env(&[cpx]);
        assert_eq!(env[1], ("ROCR_VISIBLE_DEVICES".into(), "13".into()));
        assert_eq!(env[2].1, "n0/13", "a partition is a device of its own");
    }
}
