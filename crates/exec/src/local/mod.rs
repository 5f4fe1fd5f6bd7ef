//! The local executor: every job runs as its own process group on this
//! machine, under a small supervisor process that outlives the server.
//!
//! Each job gets a directory `root/<job_id>/`:
//!
//! | file              | written by | content                                      |
//! |-------------------|------------|----------------------------------------------|
//! | `stdout.log`      | the job    | its standard output (appended)               |
//! | `stderr.log`      | job, sup.  | its standard error, plus `gigafab:` notes    |
//! | `supervisor.pid`  | supervisor | the supervisor's pid                         |
//! | `status.json`     | supervisor | the [`ExitRecord`], written atomically        |
//! | `cancel`          | executor   | marker: stop the run (SIGTERM, grace, KILL)  |
//! | `work/`, `tmp/`   | the job    | its working directory and its `/tmp`, when it runs as an account |
//!
//! The handle of a run is `"<pid>:<starttime>"` of its supervisor, where
//! `starttime` is field 22 of `/proc/<pid>/stat`; comparing it guards
//! against the pid being reused by an unrelated process.
//!
//! The supervisor ([`supervise`]) is started by [`LocalExecutor::launch`]
//! in a process group of its own, so it survives the server being killed
//! and is not hit by a Ctrl-C in the server's terminal. It starts the
//! command in yet another process group, enforces the time limit, watches
//! for the `cancel` marker, stops the whole group (SIGTERM, then SIGKILL
//! after the grace period) and records how the run ended.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{ExecError, Executor, ExitRecord, LaunchSpec, Outcome, RunStatus, accelerator_env};

mod disk;
mod sandbox;
mod supervisor;

pub use supervisor::supervise;

/// Bytes a directory tree takes on disk (one file system, links not
/// followed), counted up to a little past `stop_after`.
pub fn disk_size(dir: &Path, stop_after: u64) -> u64 {
    disk::dir_size(dir, stop_after)
}

/// [`disk_size`], or None past `max_entries` entries (not measured).
pub fn disk_size_within(dir: &Path, stop_after: u64, max_entries: usize) -> Option<u64> {
    disk::dir_size_within(dir, stop_after, max_entries)
}

/// The job's standard output, in its directory.
pub const STDOUT_LOG: &str = "stdout.log";
/// The job's standard error (and the supervisor's notes), in its directory.
pub const STDERR_LOG: &str = "stderr.log";
/// The supervisor's pid, in the job's directory.
pub const PID_FILE: &str = "supervisor.pid";
/// The exit record, in the job's directory.
pub const STATUS_FILE: &str = "status.json";
/// Marker asking the supervisor to stop the run.
pub const CANCEL_FILE: &str = "cancel";
/// The working directory of a job that runs as its own account, inside its
/// directory and owned by that account (the rest of the directory is the
/// server's).
pub const WORK_DIR: &str = "work";
/// The `/tmp` (and `/var/tmp`) of a job that runs as its own account,
/// inside its directory and owned by that account.
pub const TMP_DIR: &str = "tmp";
/// A new time limit of a running job, seconds from its start, written
/// by the server (the supervisor reads it as it watches the run).
pub const LIMIT_FILE: &str = "time_limit";
/// How a serving job is reached (`socket` or `tcp`), written at launch.
const REACH_FILE: &str = "serve.reach";

/// Mount points of a job's inputs (`inputs/<n>`), when it runs as an
/// account.
pub const INPUTS_DIR: &str = "inputs";
/// The job's environment (`KEY=VALUE`, NUL-separated), root-only, read
/// by the supervisor and given to the command alone.
const ENV_FILE: &str = "env";
/// The supervisor's own environment, whatever the server's or the job's.
const SUPERVISOR_ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("LC_ALL", "C"),
];

const STATUS_TMP: &str = "status.json.tmp";
const LOST_MESSAGE: &str = "supervisor vanished without recording an exit";
const NEVER_STARTED: &str = "never started";
/// How often the supervisor looks at the command, the clock and `cancel`.
const TICK: Duration = Duration::from_millis(50);
/// How often it looks while waiting out the grace period.
const GRACE_TICK: Duration = Duration::from_millis(20);

/// Where this machine's GPU device files are, per vendor: a path with
/// `{index}` (the device index) or `{render}` (128 + index, DRM render
/// nodes) in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFiles {
    pub nvidia: String,
    pub amd: String,
    /// NVIDIA's capability device files (`nvidia-cap<minor>`): opening a
    /// MIG instance's is what lets a process use it.
    pub nvidia_caps: PathBuf,
    /// The driver's table of those minors: `gpuN/mig/giG/access` and
    /// `gpuN/mig/giG/ciC/access`, each with a `DeviceFileMinor: M` line.
    pub nvidia_capabilities: PathBuf,
    /// The kernel's device majors (`/proc/devices`): the `nvidia-caps` one.
    pub proc_devices: PathBuf,
}

impl Default for DeviceFiles {
    fn default() -> Self {
        DeviceFiles {
            nvidia: "/dev/nvidia{index}".into(),
            amd: "/dev/dri/renderD{render}".into(),
            nvidia_caps: "/dev/nvidia-caps".into(),
            nvidia_capabilities: "/proc/driver/nvidia/capabilities".into(),
            proc_devices: "/proc/devices".into(),
        }
    }
}

/// The minor in a driver capability file (`DeviceFileMinor: 12`).
fn cap_minor(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("DeviceFileMinor:"))
        .and_then(|v| v.trim().parse().ok())
}

impl DeviceFiles {
    /// Highest device index looked at.
    const MAX_INDEX: u32 = 64;

    /// The device file of accelerator `index` of `vendor`.
    pub fn path(&self, vendor: crate::DeviceVendor, index: u32) -> Option<PathBuf> {
        let t = match vendor {
            crate::DeviceVendor::Nvidia => &self.nvidia,
            crate::DeviceVendor::Amd => &self.amd,
            crate::DeviceVendor::Other => return None,
        };
        Some(PathBuf::from(
            t.replace("{index}", &index.to_string())
                .replace("{render}", &(128 + index).to_string()),
        ))
    }

    /// The capabilities a job given `own` may open, (minor, mode): the
    /// GPU instance's and the compute instance's of each of its MIG
    /// slices. A MIG slice whose instance ids or capability entries cannot
    /// be read is an error (the job would reach none, or every one).
    fn own_caps(&self, own: &[crate::AssignedAccel]) -> Result<Vec<(u32, u32)>, String> {
        let mut out = Vec::new();
        for a in own {
            let Some(s) = a.slice.as_ref().filter(|s| s.kind == "mig") else {
                continue;
            };
            let (Some(gi), Some(ci)) = (s.gpu_instance, s.compute_instance) else {
                return Err(format!(
                    "{}: GPU {} MIG slice {}: NVML gave no instance ids, so its capability files are not known",
                    a.node, a.index, s.slot
                ));
            };
            let gpu = s.gpu_minor.unwrap_or(a.index);
            let gi_dir = self
                .nvidia_capabilities
                .join(format!("gpu{gpu}/mig/gi{gi}"));
            for f in [gi_dir.join("access"), gi_dir.join(format!("ci{ci}/access"))] {
                let text = fs::read_to_string(&f)
                    .map_err(|e| format!("{}: cannot read: {e}", f.display()))?;
                let minor = cap_minor(&text)
                    .ok_or_else(|| format!("{}: no DeviceFileMinor line", f.display()))?;
                // the driver's mode (decimal); read-only to all if unsaid
                let mode = text
                    .lines()
                    .find_map(|l| l.strip_prefix("DeviceFileMode:"))
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .unwrap_or(0o444)
                    & 0o777;
                out.push((minor, mode));
            }
        }
        // two slices of one GPU instance share its capability
        out.sort_unstable();
        out.dedup_by_key(|c| c.0);
        Ok(out)
    }

    /// The device files of this machine that a job given `own` may not
    /// open: the other accelerators' files that exist.
    pub fn others(&self, own: &[crate::AssignedAccel]) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for v in [crate::DeviceVendor::Nvidia, crate::DeviceVendor::Amd] {
            for i in 0..Self::MAX_INDEX {
                if own.iter().any(|a| a.vendor == v && a.index == i) {
                    continue;
                }
                if let Some(p) = self.path(v, i).filter(|p| p.exists()) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// What the job sees of NVIDIA's capability directory: a directory
    /// holding its own MIG instances' capabilities and nothing else (not
    /// MIG's configuration or monitoring, not a neighbour's instance, not
    /// what the driver makes later), where the machine has the directory
    /// or the job holds a MIG slice; none elsewhere.
    pub fn caps_mask(&self, own: &[crate::AssignedAccel]) -> Result<Option<CapsMask>, String> {
        let caps = self.own_caps(own)?;
        if caps.is_empty() && !self.nvidia_caps.is_dir() {
            return Ok(None);
        }
        if !self.nvidia_caps.is_dir() {
            // the driver makes it on first use: made now (through
            // descriptors that follow no link), so that it is covered from
            // the start
            mkdir_nofollow(&self.nvidia_caps, 0o755)
                .map_err(|e| format!("{}: cannot make: {e}", self.nvidia_caps.display()))?;
        }
        let major = if caps.is_empty() {
            0
        } else {
            let devices = fs::read_to_string(&self.proc_devices)
                .map_err(|e| format!("{}: cannot read: {e}", self.proc_devices.display()))?;
            devices
                .lines()
                .find_map(|l| {
                    let (n, name) = l.trim().split_once(' ')?;
                    (name.trim() == "nvidia-caps").then(|| n.parse::<u32>().ok())?
                })
                .ok_or_else(|| {
                    format!(
                        "{}: no nvidia-caps device (is the NVIDIA driver loaded?)",
                        self.proc_devices.display()
                    )
                })?
        };
        Ok(Some(CapsMask {
            dir: self.nvidia_caps.clone(),
            caps: caps
                .into_iter()
                .map(|(minor, mode)| (major, minor, mode))
                .collect(),
        }))
    }
}

/// A job's view of NVIDIA's capability directory: a read-only tmpfs over
/// `dir` holding these character devices (major, minor, mode) alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsMask {
    pub dir: PathBuf,
    pub caps: Vec<(u32, u32, u32)>,
}

/// Runs jobs as local processes (see the module documentation).
pub struct LocalExecutor {
    root: PathBuf,
    supervisor: Vec<String>,
    grace: Duration,
    /// Where each run gets its own cgroup (v2), if anywhere.
    cgroups: Option<PathBuf>,
    /// Largest file a job may write, bytes.
    max_file_bytes: Option<u64>,
    /// Hide the other accelerators' device files from each job.
    devices: Option<DeviceFiles>,
    /// Most bytes a job's directory may hold.
    max_disk_bytes: Option<u64>,
    /// A network namespace of its own for each job run as an account.
    private_network: bool,
    /// Most processes of one job (cgroup pids.max).
    max_pids: Option<u64>,
    /// Supervisors started by this instance, by pid, until reaped.
    children: Mutex<HashMap<u32, Child>>,
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalExecutor")
            .field("root", &self.root)
            .field("supervisor", &self.supervisor)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl LocalExecutor {
    /// An executor keeping job directories under `root` (made absolute, so
    /// that supervisors do not depend on the server's working directory).
    /// `supervisor` is the program and leading arguments that run
    /// [`supervise`] (the real binary passes `[current_exe, "job-supervise"]`);
    /// `grace` is the time between SIGTERM and SIGKILL when a run is stopped.
    pub fn new(root: PathBuf, supervisor: Vec<String>, grace: Duration) -> LocalExecutor {
        let root = std::path::absolute(&root).unwrap_or(root);
        LocalExecutor {
            root,
            supervisor,
            grace,
            cgroups: None,
            max_file_bytes: None,
            devices: None,
            max_disk_bytes: None,
            private_network: false,
            max_pids: None,
            children: Mutex::new(HashMap::new()),
        }
    }

    /// Runs each job in its own cgroup under `dir` (a cgroup v2 directory
    /// this process may write): nothing a job starts outlives its end.
    pub fn with_cgroups(mut self, dir: PathBuf) -> LocalExecutor {
        self.cgroups = Some(dir);
        self
    }

    /// Each job sees only its own accelerators' device files: the others
    /// are covered by `/dev/null` in a mount namespace of its own (needs
    /// root).
    pub fn with_device_isolation(mut self, files: DeviceFiles) -> LocalExecutor {
        self.devices = Some(files);
        self
    }

    /// Stops a job whose directory (its work/ and logs) holds more than
    /// `bytes` (measured every second).
    pub fn with_max_disk_bytes(mut self, bytes: u64) -> LocalExecutor {
        self.max_disk_bytes = Some(bytes);
        self
    }

    /// Gives each job run as an account a network namespace of its own: a
    /// loopback of its own, no other interface (no port of another job's
    /// to reach or to hold; no egress unless the operator adds it).
    pub fn with_private_network(mut self, on: bool) -> LocalExecutor {
        self.private_network = on;
        self
    }

    /// Most processes and threads of one job (cgroup `pids.max`).
    pub fn with_max_pids(mut self, n: u64) -> LocalExecutor {
        self.max_pids = Some(n);
        self
    }

    /// Caps every file a job writes (its logs included) at `bytes`.
    pub fn with_max_file_bytes(mut self, bytes: u64) -> LocalExecutor {
        self.max_file_bytes = Some(bytes);
        self
    }

    /// Where runs get their cgroups, if anywhere.
    pub fn cgroups(&self) -> Option<&Path> {
        self.cgroups.as_deref()
    }

    /// The directory holding the jobs' directories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one job (`root/<job_id>`).
    pub fn job_dir(&self, job_id: i64) -> PathBuf {
        self.root.join(job_id.to_string())
    }

    /// Reaps every supervisor of ours that has exited (no zombies).
    fn reap(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        // An error (ECHILD: reaped elsewhere) also means there is nothing
        // left to wait for.
        children.retain(|_, child| matches!(child.try_wait(), Ok(None)));
    }

    /// What the job directory and the supervisor named by `handle` say.
    fn status_of(&self, job_id: i64, handle: Handle) -> Result<RunStatus, ExecError> {
        let dir = self.job_dir(job_id);
        if let Some(record) = read_status(&dir)? {
            return Ok(RunStatus::Exited(record));
        }
        if handle.is_alive() {
            return Ok(RunStatus::Running);
        }
        // It may have written its record between the two looks.
        if let Some(record) = read_status(&dir)? {
            return Ok(RunStatus::Exited(record));
        }
        Ok(RunStatus::Lost {
            message: LOST_MESSAGE.into(),
        })
    }
}

impl Executor for LocalExecutor {
    fn name(&self) -> &'static str {
        "local"
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecError> {
        let job = spec.job_id;
        let fail = |message: String| ExecError::Launch { job, message };
        match spec.command.first() {
            None => return Err(fail("empty command".into())),
            Some(program) if program.is_empty() => {
                return Err(fail("empty program name in the command".into()));
            }
            Some(_) => {}
        }
        let Some((program, leading)) = self.supervisor.split_first() else {
            return Err(fail("no supervisor program configured".into()));
        };
        for (key, value) in &spec.env {
            if key.is_empty() || key.contains(['=', '\0']) || value.contains('\0') {
                return Err(fail(format!("invalid environment variable {key:?}")));
            }
        }
        for a in &spec.accelerators {
            if let Some(s) = &a.slice
                && s.kind == "partition"
                && let Some(mode) = &s.device_mode
                && !mode.eq_ignore_ascii_case(&s.name)
            {
                let gpu = a.index / s.of.max(1);
                return Err(fail(format!(
                    "{}: partition {} is on GPU {gpu}, which is in {mode} mode, not the pool's {} (amd-smi set --gpu {gpu} --compute-partition {}, then restart the server)",
                    a.node,
                    a.index,
                    s.name.to_ascii_uppercase(),
                    s.name.to_ascii_uppercase()
                )));
            }
            if let Some(s) = &a.slice
                && s.kind == "mig"
                && s.uuid.is_none()
            {
                return Err(fail(format!(
                    "{}: GPU {} has no MIG instance {} of {} (MIG mode off, another layout, or the layout not made when the server started: nvidia-smi mig -i {} -cgi {} -C, then restart the server)",
                    a.node, a.index, s.slot, s.name, a.index, s.name
                )));
            }
        }
        self.reap();

        let account = match &spec.run_as {
            Some(name) => Some(crate::posix::lookup(name).map_err(fail)?),
            None => None,
        };
        let dir = self.job_dir(job);
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        if let Some(a) = &account {
            prepare_account_dir(&dir, a).map_err(fail)?;
        }
        if let Some(live) = find_supervisor(&dir)? {
            return Err(fail(format!(
                "already running under supervisor {} (handle {live})",
                live.pid
            )));
        }
        // Traces of an earlier run of the same job; the logs are kept and
        // appended to.
        for stale in [
            STATUS_FILE,
            STATUS_TMP,
            CANCEL_FILE,
            LIMIT_FILE,
            PID_FILE,
            crate::attach::ATTACH_SOCKET,
            REACH_FILE,
            crate::reach::SERVE_SOCKET,
        ] {
            remove_if_exists(&dir.join(stale))?;
        }

        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| fail(format!("path {} is not valid UTF-8", p.display())))
        };
        let mut cmd = Command::new(program);
        cmd.args(leading)
            .arg("--dir")
            .arg(utf8(&dir)?)
            .arg("--time-limit")
            .arg(spec.time_limit_s.to_string())
            .arg("--grace-ms")
            .arg(self.grace.as_millis().min(u64::MAX as u128).to_string());
        if let Some(workdir) = &spec.workdir {
            let workdir = std::path::absolute(workdir).unwrap_or_else(|_| workdir.clone());
            cmd.arg("--workdir").arg(utf8(&workdir)?);
        }
        if let Some(a) = &account {
            let groups: Vec<String> = a.groups.iter().map(u32::to_string).collect();
            cmd.args(["--uid", &a.uid.to_string(), "--gid", &a.gid.to_string()])
                .args(["--groups", &groups.join(",")]);
        }
        if let Some(cg) = &self.cgroups {
            cmd.arg("--cgroup")
                .arg(utf8(&cg.join(format!("job-{job}")))?);
        }
        if let Some(max) = self.max_file_bytes {
            cmd.args(["--max-file-bytes", &max.to_string()]);
        }
        if let Some(max) = self.max_disk_bytes {
            cmd.args(["--max-disk-bytes", &max.to_string()]);
        }
        if let Some(d) = &self.devices {
            for p in d.others(&spec.accelerators) {
                cmd.arg("--hide-device").arg(utf8(&p)?);
            }
            if let Some(m) = d.caps_mask(&spec.accelerators).map_err(fail)? {
                cmd.arg("--caps-dir").arg(utf8(&m.dir)?);
                for (major, minor, mode) in m.caps {
                    cmd.arg("--cap").arg(format!("{major}:{minor}:{mode}"));
                }
            }
        }
        // A job run as an account (the server is root) reads each input at
        // a mount point of its own directory (`inputs/<n>`), bound there
        // in its mount namespace: its mount table names no store path, and
        // it reads the input whatever the store's directory modes. The
        // variables that named an input's path name the mount point.
        let mut env_spec: Vec<(String, String)> = spec.env.clone();
        let mut binds: Vec<(PathBuf, PathBuf)> = Vec::new();
        for (k, p) in spec.read_only.iter().enumerate() {
            if account.is_some() && crate::posix::is_root() {
                // reachable by the account whatever the server's umask
                // (the mount covers `at` in the job's namespace); made and
                // changed through descriptors that never follow a link
                let inputs = dir.join(INPUTS_DIR);
                mkdir_nofollow(&inputs, 0o711).map_err(io_error(&inputs))?;
                let at = inputs.join(k.to_string());
                mkdir_nofollow(&at, 0o755).map_err(io_error(&at))?;
                let shown = utf8(&at)?;
                let was = utf8(p)?;
                for (_, v) in env_spec.iter_mut().filter(|(_, v)| *v == was) {
                    *v = shown.clone();
                }
                binds.push((p.clone(), at));
            } else {
                binds.push((p.clone(), p.clone()));
            }
        }
        if !binds.is_empty() {
            // in a file of the job's root-owned directory, not on the
            // command line (which every local user may read in /proc)
            let mut list = String::new();
            for (from, to) in &binds {
                let (from, to) = (utf8(from)?, utf8(to)?);
                if from.contains(['\t', '\n']) || to.contains(['\t', '\n']) {
                    return Err(fail(format!("input path {from:?}: a tab or newline")));
                }
                list.push_str(&from);
                if to != from {
                    list.push('\t');
                    list.push_str(&to);
                }
                list.push('\n');
            }
            let f = dir.join("read-only.list");
            std::fs::write(&f, list).map_err(|e| fail(format!("{}: {e}", f.display())))?;
            cmd.arg("--read-only-list").arg(utf8(&f)?);
        }
        let private = account.is_some() && self.private_network;
        if private {
            cmd.arg("--private-network");
        }
        // how the gateway reaches a job that serves: through its
        // supervisor (a network of its own) or the machine's loopback;
        // written in the job's root-owned directory, for `reach`
        if let Some(port) = spec.serve_port {
            let private = private && crate::posix::is_root();
            if private {
                cmd.args(["--serve-port", &port.to_string()]);
            }
            let f = dir.join(REACH_FILE);
            let how = if private { "socket\n" } else { "tcp\n" };
            std::fs::write(&f, how).map_err(|e| fail(format!("{}: {e}", f.display())))?;
        }
        if self.cgroups.is_some() {
            if let Some(n) = self.max_pids {
                cmd.args(["--pids-max", &n.to_string()]);
            }
            if let Some(m) = spec.memory_bytes {
                cmd.args(["--memory-bytes", &m.to_string()]);
            }
            if let Some(c) = spec.cpus {
                cmd.args(["--cpus", &c.to_string()]);
            }
        }
        // The job's environment: a clean one (nothing of the server's
        // tokens, database URLs or cloud keys; only what it asked for, what
        // gigafab sets, and the few variables a program needs to run). It
        // goes to the command alone, through a root-only file: the
        // supervisor runs with privilege and a fixed environment of its own,
        // so that nothing a tenant sends (LD_PRELOAD, GCONV_PATH, ...)
        // reaches a privileged process.
        let mut env: Vec<(String, String)> = crate::base_env();
        if let Some(a) = &account {
            env.push(("HOME".into(), a.home.display().to_string()));
            env.push(("USER".into(), a.name.clone()));
            env.push(("LOGNAME".into(), a.name.clone()));
        }
        env.extend(env_spec);
        env.extend(accelerator_env(&spec.accelerators));
        env.push(("GIGAFAB_JOB_ID".into(), job.to_string()));
        let env_file = dir.join(ENV_FILE);
        write_private(&env_file, &encode_env(&env))
            .map_err(|e| fail(format!("{}: {e}", env_file.display())))?;
        cmd.arg("--env-file").arg(utf8(&env_file)?);
        cmd.arg("--").args(&spec.command);
        cmd.env_clear()
            .envs(SUPERVISOR_ENV.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| fail(format!("cannot start supervisor `{program}`: {e}")))?;
        let pid = child.id();
        // Not reaped yet, so /proc/<pid> exists even if it already exited.
        let start = read_proc_stat(pid).map(|s| s.starttime);
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, child);
        let start =
            start.ok_or_else(|| fail(format!("cannot read /proc/{pid}/stat of the supervisor")))?;
        Ok(Handle { pid, start }.to_string())
    }

    fn poll(&self, job_id: i64, handle: &str) -> Result<RunStatus, ExecError> {
        let handle = Handle::parse(job_id, handle)?;
        self.reap();
        self.status_of(job_id, handle)
    }

    fn cancel(&self, job_id: i64, handle: &str) -> Result<(), ExecError> {
        Handle::parse(job_id, handle)?;
        let path = self.job_dir(job_id).join(CANCEL_FILE);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(drop)
            .map_err(io_error(&path))
    }

    fn attach(
        &self,
        job_id: i64,
        handle: &str,
        rows: u16,
        cols: u16,
    ) -> Result<std::os::fd::OwnedFd, ExecError> {
        Handle::parse(job_id, handle)?;
        let path = self.job_dir(job_id).join(crate::attach::ATTACH_SOCKET);
        crate::attach::connect(&path, rows, cols).map_err(|e| ExecError::Launch {
            job: job_id,
            message: format!("no shell in job {job_id}: {e}"),
        })
    }

    fn files_root(
        &self,
        job_id: i64,
        _handle: Option<&str>,
        workdir: Option<&str>,
        as_account: bool,
    ) -> Option<crate::files::FilesRoot> {
        let job_dir = self.job_dir(job_id);
        if !as_account {
            // one account for all: the job's directory, read only (its
            // control files are the server's)
            return Some(crate::files::FilesRoot {
                dir: job_dir,
                writable: false,
                counted: true,
            });
        }
        Some(match workdir {
            Some(w) => crate::files::FilesRoot {
                dir: PathBuf::from(w),
                writable: true,
                counted: false,
            },
            None => crate::files::FilesRoot {
                dir: job_dir.join(WORK_DIR),
                writable: true,
                counted: true,
            },
        })
    }

    fn files_room(&self, job_id: i64) -> Option<u64> {
        let max = self.max_disk_bytes?;
        Some(max.saturating_sub(disk::dir_size(&self.job_dir(job_id), max)))
    }

    fn check_workdir(&self, account: Option<&str>, dir: &Path) -> Result<(), String> {
        let who = match account {
            Some(a) => Some(crate::posix::lookup(a)?),
            None => None,
        };
        can_enter(who.as_ref(), dir)
    }

    fn extend(&self, job_id: i64, handle: &str, limit_s: u64) -> Result<(), ExecError> {
        Handle::parse(job_id, handle)?;
        // written whole, then renamed: the supervisor never reads half
        let dir = self.job_dir(job_id);
        let tmp = dir.join(format!("{LIMIT_FILE}.tmp"));
        let path = dir.join(LIMIT_FILE);
        std::fs::write(&tmp, limit_s.to_string()).map_err(io_error(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    fn adopt(
        &self,
        job_id: i64,
        handle: Option<&str>,
    ) -> Result<(Option<String>, RunStatus), ExecError> {
        self.reap();
        if let Some(handle) = handle {
            let parsed = Handle::parse(job_id, handle)?;
            return Ok((Some(handle.to_owned()), self.status_of(job_id, parsed)?));
        }
        let dir = self.job_dir(job_id);
        if let Some(live) = find_supervisor(&dir)? {
            let status = self.status_of(job_id, live)?;
            return Ok((Some(live.to_string()), status));
        }
        if let Some(record) = read_status(&dir)? {
            return Ok((None, RunStatus::Exited(record)));
        }
        let message = if dir.join(PID_FILE).exists() {
            LOST_MESSAGE
        } else {
            NEVER_STARTED
        };
        Ok((
            None,
            RunStatus::Lost {
                message: message.into(),
            },
        ))
    }

    /// Through the supervisor's socket where the job has a network of its
    /// own, else the machine's loopback (as recorded at launch).
    fn reach(&self, job_id: i64, handle: &str, port: u16) -> Result<crate::Reach, ExecError> {
        Handle::parse(job_id, handle)?;
        let dir = self.job_dir(job_id);
        let how = fs::read_to_string(dir.join(REACH_FILE)).map_err(|e| ExecError::Launch {
            job: job_id,
            message: format!("how to reach it is not recorded: {e}"),
        })?;
        Ok(match how.trim() {
            "socket" => crate::Reach::Socket(dir.join(crate::reach::SERVE_SOCKET)),
            _ => crate::Reach::Tcp(format!("127.0.0.1:{port}")),
        })
    }

    fn log_paths(&self, job_id: i64) -> (PathBuf, PathBuf) {
        let dir = self.job_dir(job_id);
        (dir.join(STDOUT_LOG), dir.join(STDERR_LOG))
    }

    /// Under `work/`, the job's own (its directory is root's).
    fn output_dir(&self, job_id: i64) -> PathBuf {
        self.job_dir(job_id).join(WORK_DIR).join("output")
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ExecError + '_ {
    move |source| ExecError::Io {
        path: path.to_owned(),
        source,
    }
}

fn remove_if_exists(path: &Path) -> Result<(), ExecError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path)(e)),
        _ => Ok(()),
    }
}

/// The exit record in `dir`, if the supervisor wrote one.
/// `KEY=VALUE` pairs, each ended by a NUL (neither holds one: checked).
fn encode_env(env: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in env {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// The pairs of an [`ENV_FILE`]; a later value of a key replaces an
/// earlier one, in place.
fn decode_env(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, item) in bytes.split(|b| *b == 0).enumerate() {
        if item.is_empty() {
            continue;
        }
        let text =
            std::str::from_utf8(item).map_err(|_| format!("variable {} is not UTF-8", i + 1))?;
        let Some((k, v)) = text.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(format!("variable {} has no name", i + 1));
        };
        match out.iter_mut().find(|(x, _)| x == k) {
            Some(slot) => slot.1 = v.to_owned(),
            None => out.push((k.to_owned(), v.to_owned())),
        }
    }
    Ok(out)
}

/// Writes `bytes` to a new file `path` that only this process's user reads
/// (0600, replacing what was there; a link in its place is removed, not
/// followed).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)
}

/// `path` made a directory of `mode` (kept if it is one already): its
/// parent opened without following a link, the directory made and opened
/// at that descriptor without following one, its mode set through its own
/// descriptor. A link in its place is refused, never followed.
fn mkdir_nofollow(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (parent, name) = match (path.parent(), path.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
    };
    let cstr = |b: &[u8]| {
        std::ffi::CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (p, n) = (cstr(parent.as_os_str().as_bytes())?, cstr(name.as_bytes())?);
    let flags = libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_RDONLY;
    // SAFETY: plain system calls on C strings that outlive them; each
    // descriptor is owned (closed) as soon as it is made
    let parent_fd = unsafe { libc::open(p.as_ptr(), flags) };
    if parent_fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let parent_fd = unsafe { OwnedFd::from_raw_fd(parent_fd) };
    if unsafe { libc::mkdirat(parent_fd.as_raw_fd(), n.as_ptr(), 0o700) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let fd = unsafe { libc::openat(parent_fd.as_raw_fd(), n.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn read_status(dir: &Path) -> Result<Option<ExitRecord>, ExecError> {
    let path = dir.join(STATUS_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| io_error(&path)(io::Error::new(io::ErrorKind::InvalidData, e)))
}

/// The live supervisor of the job in `dir`, found through its pid file:
/// the pid must be alive and its command line must name `dir`.
fn find_supervisor(dir: &Path) -> Result<Option<Handle>, ExecError> {
    let path = dir.join(PID_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let Some(pid) = parse_pid(text.trim()) else {
        return Ok(None);
    };
    // Launched with `process_group(0)`: a supervisor leads its group.
    let Some(stat) = live_stat(pid).filter(|s| s.pgrp == pid as i32) else {
        return Ok(None);
    };
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return Ok(None);
    };
    if !cmdline_names_dir(&cmdline, dir.as_os_str()) {
        return Ok(None);
    }
    Ok(Some(Handle {
        pid,
        start: stat.starttime,
    }))
}

/// Whether a NUL-separated command line holds `--dir <dir>`.
fn cmdline_names_dir(cmdline: &[u8], dir: &OsStr) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.windows(2)
        .any(|w| w[0] == b"--dir" && w[1] == dir.as_bytes())
}

/// A positive pid that `kill` cannot mistake for a group (0, negative).
fn parse_pid(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u32 = s.parse().ok()?;
    (pid > 0 && pid <= i32::MAX as u32).then_some(pid)
}

/// A run's handle: its supervisor's pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handle {
    pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot).
    start: u64,
}

impl Handle {
    fn parse(job: i64, handle: &str) -> Result<Handle, ExecError> {
        Self::parse_str(handle).ok_or_else(|| ExecError::BadHandle {
            job,
            handle: handle.to_owned(),
        })
    }

    fn parse_str(handle: &str) -> Option<Handle> {
        let (pid, start) = handle.split_once(':')?;
        let pid = parse_pid(pid)?;
        if start.is_empty() || !start.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Handle {
            pid,
            start: start.parse().ok()?,
        })
    }

    /// The supervisor named by the handle is alive (not a zombie, and not
    /// another process that got the same pid).
    fn is_alive(&self) -> bool {
        live_stat(self.pid).is_some_and(|s| s.starttime == self.start)
    }
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.pid, self.start)
    }
}

/// The fields of `/proc/<pid>/stat` the executor uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z`, ...
    state: char,
    /// Field 5.
    pgrp: i32,
    /// Field 22.
    starttime: u64,
}

/// Parses the content of `/proc/<pid>/stat`. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so the
/// remaining fields start after the *last* `)`.
fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // fields[0] is field 3 of the file.
    let field = |n: usize| fields.get(n - 3).copied();
    let mut state = field(3)?.chars();
    let (Some(state_char), None) = (state.next(), state.next()) else {
        return None;
    };
    Some(ProcStat {
        state: state_char,
        pgrp: field(5)?.parse().ok()?,
        starttime: field(22)?.parse().ok()?,
    })
}

fn read_proc_stat(pid: u32) -> Option<ProcStat> {
    let bytes = fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&String::from_utf8_lossy(&bytes))
}

/// `/proc` facts of `pid` if it exists and is not a zombie.
fn live_stat(pid: u32) -> Option<ProcStat> {
    // SAFETY: signal 0 only checks that the process exists; pid > 0 is
    // guaranteed by `parse_pid`, so this never addresses a group.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return None;
    }
    let stat = read_proc_stat(pid)?;
    (!matches!(stat.state, 'Z' | 'X' | 'x')).then_some(stat)
}

// ---------------------------------------------------------------------------
// The supervisor.

/// The directory of a job that runs as `account`: the server's (0711: the
/// job can reach its `work/` but not list or touch the logs, status and
/// control files), with `work/` the account's own (0700).
fn prepare_account_dir(dir: &Path, account: &crate::posix::Account) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))
            .map_err(|e| format!("{}: {e}", p.display()))
    };
    set(dir, 0o711)?;
    let work = dir.join(WORK_DIR);
    match fs::create_dir(&work) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", work.display())),
    }
    std::os::unix::fs::chown(&work, Some(account.uid), Some(account.gid))
        .map_err(|e| format!("{}: {e}", work.display()))?;
    set(&work, 0o700)?;
    // its /tmp, bound over /tmp and /var/tmp in its mount namespace
    let tmp = dir.join(TMP_DIR);
    match fs::create_dir(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("{}: {e}", tmp.display())),
    }
    std::os::unix::fs::chown(&tmp, Some(account.uid), Some(account.gid))
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    set(&tmp, 0o700)
}

/// Whether `who` (None: this process) may enter directory `dir`: search
/// permission on it and on every directory above, asked with `who`'s file
/// rights in a thread of its own (file-system ids and groups are a
/// thread's own at the system call level; the thread ends after), so
/// nothing this process can reach and `who` cannot counts.
pub fn can_enter(who: Option<&crate::posix::Account>, dir: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| "a NUL in the path".to_string())?;
    let name = who.map_or_else(
        || "the server's account".to_string(),
        |a| format!("account `{}`", a.name),
    );
    let asked = crate::files::as_account(who, move || -> Result<(), std::io::Error> {
        // SAFETY: plain system calls with a valid path.
        unsafe {
            let fd = libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // search permission on the directory itself, as its user
            let ok = libc::syscall(
                libc::SYS_faccessat2,
                fd,
                c"".as_ptr(),
                libc::X_OK,
                libc::AT_EACCESS | libc::AT_EMPTY_PATH,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if ok != 0 {
                return Err(err);
            }
        }
        Ok(())
    });
    asked.map_err(|e| format!("{name} cannot enter it: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 31: a job on a MIG slice is given its own instance's
    /// capabilities and no other (another tenant's instance on the same
    /// GPU, MIG's configuration and monitoring), as the driver lays them
    /// out: minors named under `/proc/driver/nvidia/capabilities`, devices
    /// of the `nvidia-caps` major. What the job sees is the mask alone
    /// (tests/local.rs runs it).
    #[test]
    fn a_mig_slice_is_given_only_its_own_capabilities() {
        let root = std::env::temp_dir().join(format!("gigafab-caps-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (caps, table) = (root.join("caps"), root.join("capabilities"));
        let access = |path: &str, minor: u32, mode: u32| {
            let f = table.join(path);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(
                f,
                format!("DeviceFileMinor: {minor}\nDeviceFileMode: {mode}\nDeviceFileModify: 1\n"),
            )
            .unwrap();
        };
        // config 1, monitor 2; GPU 0: gi 1 (3) ci 0 (4), gi 2 (5) ci 0 (6)
        access("mig/config", 1, 256);
        access("mig/monitor", 2, 292);
        access("gpu0/mig/gi1/access", 3, 292);
        access("gpu0/mig/gi1/ci0/access", 4, 292);
        access("gpu0/mig/gi2/access", 5, 292);
        access("gpu0/mig/gi2/ci0/access", 6, 292);
        let devices = root.join("devices");
        fs::write(
            &devices,
            "Character devices:\n  1 mem\n195 nvidia\n509 nvidia-caps\n",
        )
        .unwrap();
        let files = DeviceFiles {
            nvidia: root.join("nvidia{index}").display().to_string(),
            amd: root.join("render{render}").display().to_string(),
            nvidia_caps: caps.clone(),
            nvidia_capabilities: table,
            proc_devices: devices,
        };
        let mig = |gi: Option<u32>| crate::AssignedAccel {
            node: "n0".into(),
            index: 0,
            vendor: crate::DeviceVendor::Nvidia,
            slice: Some(crate::AssignedSlice {
                kind: "mig".into(),
                name: "3g.40gb".into(),
                slot: 1,
                of: 2,
                memory_mib: 40 << 10,
                uuid: Some("MIG-x".into()),
                gpu_instance: gi,
                compute_instance: gi.map(|_| 0),
                gpu_minor: None,
                device_mode: None,
            }),
        };
        let whole = crate::AssignedAccel {
            slice: None,
            ..mig(None)
        };
        // no capability directory and no MIG slice: nothing to cover
        assert_eq!(files.caps_mask(std::slice::from_ref(&whole)).unwrap(), None);
        // a MIG slice: its two capabilities, the directory made to be
        // covered (the driver makes it on first use)
        let m = files.caps_mask(&[mig(Some(2))]).unwrap().unwrap();
        assert_eq!(m.dir, caps);
        assert_eq!(m.caps, [(509, 5, 0o444), (509, 6, 0o444)]);
        assert!(caps.is_dir());
        let m = files.caps_mask(&[mig(Some(1))]).unwrap().unwrap();
        assert_eq!(m.caps, [(509, 3, 0o444), (509, 4, 0o444)]);
        // the table is read at the GPU's minor number where NVML gave it
        let mut on_minor = mig(Some(1));
        if let Some(s) = on_minor.slice.as_mut() {
            s.gpu_minor = Some(3);
        }
        let e = files.caps_mask(&[on_minor]).unwrap_err();
        assert!(e.contains("gpu3/mig/gi1/access: cannot read"), "{e}");
        // where the directory is, a whole-GPU job sees it empty
        let m = files.caps_mask(&[whole]).unwrap().unwrap();
        assert!(m.caps.is_empty());
        // instance ids unknown, or an instance the driver does not list:
        // refused, not run with every capability hidden or shown
        let e = files.caps_mask(&[mig(None)]).unwrap_err();
        assert!(e.contains("no instance ids"), "{e}");
        let e = files.caps_mask(&[mig(Some(7))]).unwrap_err();
        assert!(e.contains("gpu0/mig/gi7/access: cannot read"), "{e}");
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn mkdir_nofollow_makes_keeps_and_refuses_links() {
        use std::os::unix::fs::PermissionsExt;
        let root = std::env::temp_dir().join(format!("gigafab-mkdirnf-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let d = root.join("inputs");
        mkdir_nofollow(&d, 0o711).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            0o711
        );
        // there already: kept, its mode set again
        mkdir_nofollow(&d, 0o755).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        // a link in its place is refused, and what it points at unchanged
        let target = root.join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(mkdir_nofollow(&link, 0o777).is_err());
        assert_eq!(
            fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        // and so is a link among the parents' last component
        assert!(mkdir_nofollow(&link.join("x"), 0o777).is_err());
        assert!(!target.join("x").exists());
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn proc_stat_plain() {
        let line = "1234 (sleep) S 1 1234 1234 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 \
                    987654 8192000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        let stat = parse_proc_stat(line).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                state: 'S',
                pgrp: 1234,
                starttime: 987654
            }
        );
    }

    #[test]
    fn proc_stat_comm_with_parens_and_spaces() {
        let line = "77 (a) b (c) Z 5 6 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0 0\n";
        let stat = parse_proc_stat(line).unwrap();
        assert_eq!(stat.state, 'Z');
        assert_eq!(stat.pgrp, 6);
        assert_eq!(stat.starttime, 4242);
        let line = "8 ()) R 1 8 8 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99 0";
        assert_eq!(parse_proc_stat(line).unwrap().starttime, 99);
    }

    #[test]
    fn proc_stat_garbage() {
        assert_eq!(parse_proc_stat(""), None);
        assert_eq!(parse_proc_stat("12 sleep S 1 2 3"), None);
        assert_eq!(parse_proc_stat("12 (sleep) S 1 2 3"), None, "truncated");
        assert_eq!(parse_proc_stat(") 12 (x"), None);
        let bad_start = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 nope 0";
        assert_eq!(parse_proc_stat(bad_start), None);
        let bad_state = "1 (x) SS 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0";
        assert_eq!(parse_proc_stat(bad_state), None);
    }

    #[test]
    fn proc_stat_of_this_process() {
        let stat = read_proc_stat(std::process::id()).unwrap();
        assert!(stat.starttime > 0);
        // SAFETY: getpgrp has no preconditions.
        assert_eq!(stat.pgrp, unsafe { libc::getpgrp() });
        assert!(live_stat(std::process::id()).is_some());
    }

    #[test]
    fn handles() {
        assert_eq!(
            Handle::parse_str("123:456"),
            Some(Handle {
                pid: 123,
                start: 456
            })
        );
        assert_eq!(Handle::parse_str("123:456").unwrap().to_string(), "123:456");
        for bad in [
            "",
            "123",
            ":5",
            "5:",
            "0:5",
            "-1:5",
            "+1:5",
            "1:-5",
            "a:b",
            "1:2:3",
            " 1:2",
            "4294967295:1",
        ] {
            assert_eq!(Handle::parse_str(bad), None, "{bad:?}");
            assert!(matches!(
                Handle::parse(7, bad),
                Err(ExecError::BadHandle { job: 7, .. })
            ));
        }
    }

    #[test]
    fn cmdline_match() {
        let cmdline = b"/bin/gigafab\0job-supervise\0--dir\0/r/1\0--\0sleep\0";
        assert!(cmdline_names_dir(cmdline, OsStr::new("/r/1")));
        assert!(!cmdline_names_dir(cmdline, OsStr::new("/r/12")));
        assert!(!cmdline_names_dir(b"", OsStr::new("/r/1")));
    }
}
