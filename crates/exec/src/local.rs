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
}

impl Default for DeviceFiles {
    fn default() -> Self {
        DeviceFiles {
            nvidia: "/dev/nvidia{index}".into(),
            amd: "/dev/dri/renderD{render}".into(),
        }
    }
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

    /// The device files of this machine that a job given `own` may not
    /// open (the other accelerators' files that exist).
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
        for stale in [STATUS_FILE, STATUS_TMP, CANCEL_FILE, PID_FILE] {
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
                use std::os::unix::fs::PermissionsExt;
                let at = dir.join(INPUTS_DIR).join(k.to_string());
                fs::create_dir_all(&at).map_err(io_error(&at))?;
                // reachable by the account whatever the server's umask
                // (the mount covers `at` in the job's namespace)
                for (d, mode) in [(dir.join(INPUTS_DIR), 0o711), (at.clone(), 0o755)] {
                    fs::set_permissions(&d, fs::Permissions::from_mode(mode))
                        .map_err(io_error(&d))?;
                }
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
        if account.is_some() && self.private_network {
            cmd.arg("--private-network");
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

const USAGE: &str = "usage: job-supervise --dir DIR --time-limit SECS --grace-ms MS \
                     [--workdir DIR] -- COMMAND [ARGS...]";

/// Parsed arguments of [`supervise`].
#[derive(Debug, Clone, PartialEq, Default)]
struct SuperviseArgs {
    dir: PathBuf,
    /// 0: no limit.
    time_limit_s: u64,
    grace: Duration,
    workdir: Option<PathBuf>,
    /// The account the command runs as: uid, gid and supplementary groups
    /// (the supervisor runs as root then).
    identity: Option<(u32, u32, Vec<u32>)>,
    /// A cgroup (v2) directory, made for this run, that holds the command
    /// and everything it starts.
    cgroup: Option<PathBuf>,
    /// Largest file the command may write, bytes (its logs included):
    /// RLIMIT_FSIZE, so that one job cannot fill the disk with its output.
    max_file_bytes: Option<u64>,
    /// Memory and CPU limits, written to the run's cgroup.
    memory_bytes: Option<u64>,
    cpus: Option<f64>,
    /// Device files the command must not open (covered by /dev/null in
    /// its own mount namespace).
    hide_devices: Vec<PathBuf>,
    /// Directories bound read-only in its mount namespace (as root): each
    /// at the second path (itself, or a mount point of the job's own).
    read_only: Vec<(PathBuf, PathBuf)>,
    /// A network namespace of its own (loopback only).
    private_network: bool,
    /// cgroup pids.max of the run.
    pids_max: Option<u64>,
    /// Most bytes the job's directory (work/ and logs) may hold.
    max_disk_bytes: Option<u64>,
    /// The command's environment (from `--env-file`); `None`: the
    /// supervisor's own.
    env: Option<Vec<(String, String)>>,
    command: Vec<String>,
}

/// Parses `--dir D --time-limit S --grace-ms M [--workdir W] [--] CMD...`.
/// The command starts after `--`, or at the first argument that is not an
/// option (in case a front end swallowed the `--`).
fn parse_supervise_args(args: &[String]) -> Result<SuperviseArgs, String> {
    let mut dir = None;
    let mut time_limit = None;
    let mut grace = None;
    let mut workdir = None;
    let mut uid = None;
    let mut gid = None;
    let mut groups = None;
    let mut cgroup = None;
    let mut max_file = None;
    let mut memory = None;
    let mut cpus = None;
    let mut hide_devices = Vec::new();
    let mut read_only = Vec::new();
    let mut max_disk = None;
    let mut env = None;
    let mut private_network = false;
    let mut pids_max = None;
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "--" {
            i += 1;
            break;
        }
        if arg == "--read-only-list" {
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("`{arg}` needs a value"))?;
            let text =
                std::fs::read_to_string(value).map_err(|e| format!("`{arg}`: {value}: {e}"))?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let (from, to) = line.split_once('\t').unwrap_or((line, line));
                if !from.starts_with('/') || !to.starts_with('/') {
                    return Err(format!("`{arg}`: not an absolute path: {line:?}"));
                }
                read_only.push((PathBuf::from(from), PathBuf::from(to)));
            }
            i += 2;
            continue;
        }
        if arg == "--private-network" {
            private_network = true;
            i += 1;
            continue;
        }
        if arg == "--env-file" {
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("`{arg}` needs a value"))?;
            let bytes = std::fs::read(value).map_err(|e| format!("`{arg}`: {value}: {e}"))?;
            if env
                .replace(decode_env(&bytes).map_err(|e| format!("`{arg}`: {value}: {e}"))?)
                .is_some()
            {
                return Err(format!("`{arg}` given twice"));
            }
            i += 2;
            continue;
        }
        if arg == "--hide-device" || arg == "--read-only" {
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("`{arg}` needs a value"))?;
            if arg == "--read-only" {
                if !value.starts_with('/') {
                    return Err(format!("`{arg}`: not an absolute path: {value:?}"));
                }
                read_only.push((PathBuf::from(value), PathBuf::from(value)));
            } else {
                hide_devices.push(PathBuf::from(value));
            }
            i += 2;
            continue;
        }
        let slot = match arg {
            "--dir" => &mut dir,
            "--time-limit" => &mut time_limit,
            "--grace-ms" => &mut grace,
            "--workdir" => &mut workdir,
            "--uid" => &mut uid,
            "--gid" => &mut gid,
            "--groups" => &mut groups,
            "--cgroup" => &mut cgroup,
            "--max-file-bytes" => &mut max_file,
            "--memory-bytes" => &mut memory,
            "--cpus" => &mut cpus,
            "--max-disk-bytes" => &mut max_disk,
            "--pids-max" => &mut pids_max,
            _ if arg.starts_with('-') => return Err(format!("unknown option `{arg}`")),
            _ => break,
        };
        let value = args
            .get(i + 1)
            .ok_or_else(|| format!("`{arg}` needs a value"))?;
        if slot.replace(value.clone()).is_some() {
            return Err(format!("`{arg}` given twice"));
        }
        i += 2;
    }
    let command = args[i.min(args.len())..].to_vec();
    if command.is_empty() || command[0].is_empty() {
        return Err("no command to run".into());
    }
    let number = |name: &str, value: Option<String>| -> Result<u64, String> {
        let value = value.ok_or_else(|| format!("`{name}` is required"))?;
        value
            .parse()
            .map_err(|_| format!("`{name}`: not a non-negative integer: {value:?}"))
    };
    let dir = dir.ok_or("`--dir` is required")?;
    if dir.is_empty() {
        return Err("`--dir` is empty".into());
    }
    let id = |name: &str, v: &str| -> Result<u32, String> {
        v.parse()
            .map_err(|_| format!("`{name}`: not a numeric id: {v:?}"))
    };
    let identity = match (uid, gid) {
        (None, None) => None,
        (Some(u), Some(g)) => {
            let (u, g) = (id("--uid", &u)?, id("--gid", &g)?);
            if u == 0 {
                return Err("`--uid 0`: jobs never run as root".into());
            }
            let groups = match groups.as_deref() {
                None | Some("") => vec![g],
                Some(list) => list
                    .split(',')
                    .map(|x| id("--groups", x))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Some((u, g, groups))
        }
        _ => return Err("`--uid` and `--gid` go together".into()),
    };
    Ok(SuperviseArgs {
        dir: PathBuf::from(dir),
        time_limit_s: number("--time-limit", time_limit)?,
        grace: Duration::from_millis(number("--grace-ms", grace)?),
        workdir: workdir.filter(|w| !w.is_empty()).map(PathBuf::from),
        identity,
        cgroup: cgroup.filter(|c| !c.is_empty()).map(PathBuf::from),
        hide_devices,
        read_only,
        max_disk_bytes: match max_disk {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("`--max-disk-bytes`: not a byte count: {v:?}"))?,
            ),
            None => None,
        },
        memory_bytes: match memory {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("`--memory-bytes`: not a byte count: {v:?}"))?,
            ),
            None => None,
        },
        cpus: match cpus {
            Some(v) => Some(
                v.parse::<f64>()
                    .ok()
                    .filter(|c| c.is_finite() && *c > 0.0)
                    .ok_or_else(|| format!("`--cpus`: not a positive number: {v:?}"))?,
            ),
            None => None,
        },
        max_file_bytes: match max_file {
            Some(v) => Some(
                v.parse()
                    .map_err(|_| format!("`--max-file-bytes`: not a byte count: {v:?}"))?,
            ),
            None => None,
        },
        env,
        private_network,
        pids_max: match pids_max {
            Some(v) => Some(
                v.parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`--pids-max`: not a positive count: {v:?}"))?,
            ),
            None => None,
        },
        command,
    })
}

/// Entry point of the supervisor process (`gigafab job-supervise ARGS`;
/// `args` excludes the program and sub-command names). Runs the command to
/// its end and records it in `status.json`; returns the process exit code
/// (0 when the record was written, 1 when it could not be, 2 on bad
/// arguments).
///
/// Installs handlers for SIGTERM, SIGINT and SIGHUP (they stop the job as
/// a cancel would), so call it only from a process of its own.
pub fn supervise(args: &[String]) -> i32 {
    let args = match parse_supervise_args(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = writeln!(io::stderr(), "gigafab job-supervise: {e}\n{USAGE}");
            return 2;
        }
    };
    // what the supervisor writes (logs, status, pid) is the server's alone
    // SAFETY: plain syscall.
    unsafe { libc::umask(0o077) };
    let status_path = args.dir.join(STATUS_FILE);
    if let Err(e) = write_atomic(
        &args.dir.join(PID_FILE),
        format!("{}\n", std::process::id()).as_bytes(),
    ) {
        let _ = writeln!(io::stderr(), "gigafab job-supervise: {e}");
        // Without a pid file nobody can adopt the run; still try to
        // leave a record.
        let record = failed(format!("cannot write {PID_FILE}: {e}"));
        let _ = record_exit(&status_path, &record);
        return 1;
    }
    install_signal_handlers();
    let record = match open_logs(&args.dir) {
        Ok((out, err)) => run_command(&args, out, err),
        Err(e) => failed(e),
    };
    record_exit(&status_path, &record)
}

/// Writes the exit record; returns the supervisor's exit code.
fn record_exit(status_path: &Path, record: &ExitRecord) -> i32 {
    // The record is the job's accounting: a full disk delays it, it does
    // not lose it (the run is reported running until the record lands).
    let mut json = serde_json::to_vec_pretty(record).unwrap_or_default();
    json.push(b'\n');
    let mut tries = 0u32;
    loop {
        match write_atomic_io(status_path, &json) {
            Ok(()) => return 0,
            Err(e)
                if tries < RECORD_RETRIES
                    && matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) =>
            {
                let e = format!("cannot write {}: {e}", status_path.display());
                if tries == 0 {
                    let _ = writeln!(
                        io::stderr(),
                        "gigafab job-supervise: {e}; retrying every second"
                    );
                }
                tries += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "gigafab job-supervise: cannot write {}: {e}",
                    status_path.display()
                );
                return 1;
            }
        }
    }
}

/// How many times (one a second) the supervisor retries writing the exit
/// record when it cannot (a full disk): one hour.
const RECORD_RETRIES: u32 = 3_600;

/// The signal that asked the supervisor to stop, 0 if none.
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop_signal(signal: libc::c_int) {
    STOP_SIGNAL.store(signal, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe);
        // the sigaction struct is fully initialised (zeroed + mask + flags).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn open_logs(dir: &Path) -> Result<(File, File), String> {
    let open = |name: &str| {
        let path = dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    Ok((open(STDOUT_LOG)?, open(STDERR_LOG)?))
}

/// Writes `bytes` to `path` through `path.tmp`, fsync and rename, so that
/// readers see either nothing or the whole content.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_atomic_io(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_atomic_io(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        if let Some(parent) = path.parent()
            && let Ok(dir) = File::open(parent)
        {
            let _ = dir.sync_all();
        }
        Ok::<(), io::Error>(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
fn write_record(path: &Path, record: &ExitRecord) -> Result<(), String> {
    let mut json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
    json.push(b'\n');
    write_atomic(path, &json)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn failed(message: String) -> ExitRecord {
    ExitRecord {
        outcome: Outcome::Failed,
        exit_code: None,
        signal: None,
        message,
        ended_at_ms: now_ms(),
        elapsed_s: None,
    }
}

/// The record of a command that ended by itself.
fn record_for_exit(status: ExitStatus) -> ExitRecord {
    let (outcome, message) = match (status.code(), status.signal()) {
        (Some(0), _) => (Outcome::Completed, "exit code 0".to_string()),
        (Some(code), _) => (Outcome::Failed, format!("exit code {code}")),
        (None, Some(signal)) if signal == libc::SIGXFSZ => (
            Outcome::Failed,
            "killed: a file it wrote reached the job's file-size limit (SIGXFSZ)".to_string(),
        ),
        (None, Some(signal)) => (Outcome::Failed, format!("killed by signal {signal}")),
        (None, None) => (Outcome::Failed, format!("ended with status {status}")),
    };
    ExitRecord {
        outcome,
        exit_code: status.code(),
        signal: status.signal(),
        message,
        ended_at_ms: now_ms(),
        elapsed_s: None,
    }
}

/// Why the supervisor stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    TimeLimit(u64),
    Cancel,
    Signal(i32),
    /// The job's directory grew past this many bytes.
    Disk(u64),
}

impl StopReason {
    fn outcome(self) -> Outcome {
        match self {
            StopReason::TimeLimit(_) => Outcome::TimedOut,
            StopReason::Cancel | StopReason::Signal(_) => Outcome::Cancelled,
            StopReason::Disk(_) => Outcome::Failed,
        }
    }

    fn describe(self) -> String {
        match self {
            StopReason::TimeLimit(s) => format!("time limit of {s} s reached"),
            StopReason::Cancel => "cancel requested".into(),
            StopReason::Signal(n) => format!("supervisor received signal {n}"),
            StopReason::Disk(b) => {
                format!("the job's directory passed its disk limit of {b} bytes")
            }
        }
    }
}

/// The record of a run the supervisor stopped.
fn record_for_stop(
    reason: StopReason,
    status: Option<ExitStatus>,
    killed_after: Option<Duration>,
) -> ExitRecord {
    let mut message = reason.describe();
    if let Some(grace) = killed_after {
        message += &format!("; killed with SIGKILL after {} ms grace", grace.as_millis());
    }
    ExitRecord {
        outcome: reason.outcome(),
        exit_code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        message,
        ended_at_ms: now_ms(),
        elapsed_s: None,
    }
}

/// Sends `signal` to the process group `pgid` (> 0).
fn signal_group(pgid: i32, signal: libc::c_int) {
    if pgid > 0 {
        // SAFETY: plain syscall; a negative pid addresses the group.
        unsafe { libc::kill(-pgid, signal) };
    }
}

/// Whether a live (non-zombie) process is left in group `pgid`. Zombies
/// are skipped: orphans are reaped by init, which some containers' init
/// does late or never.
fn group_alive(pgid: i32) -> bool {
    if pgid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let r = unsafe { libc::kill(-pgid, 0) };
    if r != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(parse_pid)
            .and_then(read_proc_stat)
            .is_some_and(|s| s.pgrp == pgid && !matches!(s.state, 'Z' | 'X' | 'x'))
    })
}

/// What the supervisor follows of a run: its process group, and its
/// cgroup where it has one (a process that leaves the group with `setsid`
/// stays in the cgroup).
struct Track {
    pgid: i32,
    cgroup: Option<PathBuf>,
    /// Where the run's init writes the command's wait status.
    status: Option<File>,
}

impl Track {
    /// The command's own exit status: what its init passed back, else
    /// `status` (the init's, or the command's where there is no init).
    fn command_status(&self, status: ExitStatus) -> ExitStatus {
        use std::io::Read;
        let Some(mut f) = self.status.as_ref() else {
            return status;
        };
        let mut raw = [0u8; 4];
        match f.read(&mut raw) {
            Ok(4) => ExitStatus::from_raw(i32::from_ne_bytes(raw)),
            _ => status,
        }
    }

    fn signal(&self, signal: libc::c_int) {
        signal_group(self.pgid, signal);
        if let Some(cg) = &self.cgroup {
            crate::posix::cgroup_signal(cg, signal);
        }
    }

    /// The run's processes: its cgroup's, else its process group's.
    fn pids(&self) -> Vec<i32> {
        if let Some(cg) = &self.cgroup {
            return crate::posix::cgroup_pids(cg);
        }
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(parse_pid))
            .filter(|&p| read_proc_stat(p).is_some_and(|s| s.pgrp == self.pgid))
            .map(|p| p as i32)
            .collect()
    }

    fn alive(&self) -> bool {
        group_alive(self.pgid)
            || self
                .cgroup
                .as_ref()
                .is_some_and(|cg| !crate::posix::cgroup_pids(cg).is_empty())
    }
}

/// Appends a `gigafab:` note to stderr.log.
fn note(log: &mut Option<File>, message: &str) {
    if let Some(file) = log {
        let _ = writeln!(file, "gigafab: {message}");
    }
}

/// Whether a stop of the run was asked for, and why.
fn stop_requested(dir: &Path, deadline: Option<Instant>, limit_s: u64) -> Option<StopReason> {
    let signal = STOP_SIGNAL.load(Ordering::SeqCst);
    if signal != 0 {
        Some(StopReason::Signal(signal))
    } else if dir.join(CANCEL_FILE).exists() {
        Some(StopReason::Cancel)
    } else if deadline.is_some_and(|d| Instant::now() >= d) {
        Some(StopReason::TimeLimit(limit_s))
    } else {
        None
    }
}

/// Starts the command and supervises it to its end.
fn run_command(args: &SuperviseArgs, out: File, err: File) -> ExitRecord {
    let mut log = err.try_clone().ok();
    let program = &args.command[0];
    if let Some(workdir) = &args.workdir {
        let problem = match fs::metadata(workdir) {
            Ok(m) if m.is_dir() => None,
            Ok(_) => Some("not a directory".to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(problem) = problem {
            let message = format!(
                "cannot start `{program}`: working directory {}: {problem}",
                workdir.display()
            );
            note(&mut log, &message);
            return failed(message);
        }
    }
    if let Some(reason) = stop_requested(&args.dir, None, args.time_limit_s) {
        note(
            &mut log,
            &format!("{}; not starting the command", reason.describe()),
        );
        return record_for_stop(reason, None, None);
    }

    let started = Instant::now();
    let mut cmd = Command::new(program);
    cmd.args(&args.command[1..]);
    if let Some(env) = &args.env {
        // given at exec, after the identity drop: the command's alone
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let workdir = args
        .workdir
        .clone()
        .unwrap_or_else(|| default_workdir(&args.dir, args.identity.is_some()));
    // the cgroup of the run, entered by the command before it runs anything
    let cgroup = match &args.cgroup {
        Some(cg) => match fs::create_dir_all(cg)
            .and_then(|_| OpenOptions::new().write(true).open(cg.join("cgroup.procs")))
        {
            Ok(f) => {
                let legacy = set_limits(cg, args.memory_bytes, args.cpus, args.pids_max, &mut log);
                Some((cg.clone(), f, legacy))
            }
            Err(e) => {
                let message = format!("cannot make the job's cgroup {}: {e}", cg.display());
                note(&mut log, &message);
                return failed(message);
            }
        },
        None => None,
    };
    // A job run as an account (the supervisor is root) gets namespaces of
    // its own: PID (its own /proc: no other job's processes, command
    // lines or mounts), mount, and network where asked. Its pid 1 is a
    // small init of the supervisor's (reaps orphans, passes the command's
    // exit status back through a pipe, and takes the rest down with it).
    let isolate = args.identity.is_some() && crate::posix::is_root();
    let (status_r, status_w) = if isolate {
        match pipe_cloexec() {
            Ok((r, w)) => (Some(r), Some(w)),
            Err(e) => {
                let message = format!("cannot start `{program}`: a pipe: {e}");
                note(&mut log, &message);
                return failed(message);
            }
        }
    } else {
        (None, None)
    };
    if let Err(e) = prepare_exec(
        &mut cmd,
        &workdir,
        args.identity.as_ref(),
        cgroup
            .as_ref()
            .map(|c| {
                std::iter::once(&c.1)
                    .chain(c.2.iter().map(|l| &l.1))
                    .collect()
            })
            .unwrap_or_default(),
        args.max_file_bytes,
        &args.hide_devices,
        &args.read_only,
        args.identity
            .as_ref()
            .map(|_| args.dir.join(TMP_DIR))
            .as_deref(),
        status_w.as_ref().filter(|_| isolate),
        args.private_network && isolate,
        args.workdir.is_some(),
    ) {
        let message = format!("cannot start `{program}`: {e}");
        note(&mut log, &message);
        return failed(message);
    }
    // its own PID namespace: the next child (the run's init) is its pid 1
    if isolate && unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        let message = format!(
            "cannot start `{program}`: a PID namespace: {}",
            io::Error::last_os_error()
        );
        note(&mut log, &message);
        return failed(message);
    }
    let spawned = cmd.spawn();
    drop(status_w);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let message = format!("cannot start `{program}`: {e}");
            note(&mut log, &message);
            if let Some((cg, _, legacy)) = &cgroup {
                let _ = fs::remove_dir(cg);
                for (d, _) in legacy {
                    let _ = fs::remove_dir(d);
                }
            }
            return failed(message);
        }
    };
    let legacy: Vec<PathBuf> = cgroup
        .as_ref()
        .map(|c| c.2.iter().map(|l| l.0.clone()).collect())
        .unwrap_or_default();
    let track = Track {
        pgid: child.id() as i32,
        cgroup: cgroup.map(|c| c.0),
        status: status_r,
    };
    let record = follow(args, &mut child, &track, started, &mut log);
    // empty now; cgroups with no process can go
    if let Some(cg) = &track.cgroup {
        let _ = fs::remove_dir(cg);
    }
    for d in legacy {
        let _ = fs::remove_dir(d);
    }
    record
}

/// Writes the run's memory and CPU limits to its cgroup (memory.max,
/// memory.swap.max, cpu.max with a 100 ms period). Where the cgroup has no
/// such controller (not delegated to this hierarchy), says so in the job's
/// stderr log: the limit is then not enforced.
///
/// On a hybrid machine, whose memory and CPU controllers are on the legacy
/// (v1) hierarchies, the limits go to a cgroup of each of those instead
/// (`memory.limit_in_bytes`; `cpu.cfs_quota_us` over a 100 ms period);
/// those cgroups are returned, for the command to enter as well.
fn set_limits(
    cg: &Path,
    memory: Option<u64>,
    cpus: Option<f64>,
    pids: Option<u64>,
    log: &mut Option<File>,
) -> Vec<(PathBuf, File)> {
    let mut legacy = Vec::new();
    // named after the run's v2 cgroup and its parent (the instance's), so
    // that two servers' job 2 never share one (and never remove the
    // other's)
    let part = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = format!("{}-{}", part(cg.parent()), part(Some(cg)));
    // a v1 cgroup of `controller` with `files` written; None if unavailable
    let mut v1 = |controller: &str, files: &[(&str, String)]| -> bool {
        let Some(mount) = crate::posix::cgroup1_mount(controller) else {
            return false;
        };
        let dir = mount.join("gigafab").join(&name);
        let ok = fs::create_dir_all(&dir).is_ok()
            && files.iter().all(|(f, v)| fs::write(dir.join(f), v).is_ok());
        match (
            ok,
            OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs")),
        ) {
            (true, Ok(procs)) => {
                legacy.push((dir, procs));
                true
            }
            _ => {
                let _ = fs::remove_dir(&dir);
                false
            }
        }
    };
    if let Some(m) = memory {
        let v2 = cg.join("memory.max");
        let done = (v2.exists() && fs::write(&v2, m.to_string()).is_ok())
            || v1(
                "memory",
                &[
                    ("memory.limit_in_bytes", m.to_string()),
                    ("memory.swappiness", "0".into()),
                ],
            );
        if cg.join("memory.swap.max").exists() {
            let _ = fs::write(cg.join("memory.swap.max"), "0");
        }
        if !done {
            note(
                log,
                "memory limit not enforced: this machine's cgroups have no memory controller",
            );
        }
    }
    if let Some(c) = cpus {
        let quota = ((c * 100_000.0).round() as u64).max(1_000);
        let v2 = cg.join("cpu.max");
        let done = (v2.exists() && fs::write(&v2, format!("{quota} 100000")).is_ok())
            || v1(
                "cpu",
                &[
                    ("cpu.cfs_period_us", "100000".into()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            );
        if !done {
            note(
                log,
                "CPU limit not enforced: this machine's cgroups have no cpu controller",
            );
        }
    }
    if let Some(n) = pids {
        let v2 = cg.join("pids.max");
        let done = (v2.exists() && fs::write(&v2, n.to_string()).is_ok())
            || v1("pids", &[("pids.max", n.to_string())]);
        if !done {
            note(
                log,
                "process limit not enforced: this machine's cgroups have no pids controller",
            );
        }
    }
    legacy
}

/// The working directory of a run without `--workdir`: the job's directory,
/// or its `work/` subdirectory (owned by the job's account) when the job
/// runs as another account than the supervisor.
fn default_workdir(dir: &Path, as_account: bool) -> PathBuf {
    if as_account {
        dir.join(WORK_DIR)
    } else {
        dir.to_path_buf()
    }
}

/// A pipe, both ends close-on-exec: (read, write).
fn pipe_cloexec() -> io::Result<(File, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned here alone.
    Ok(unsafe {
        (
            File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Sets up, for the child between fork and exec: entering the cgroup (as
/// root); a mount namespace (other jobs' devices hidden, inputs bound
/// read-only at their mount points, the job's own /tmp, /var/tmp,
/// /dev/shm and /run/lock, and with `init_status` the /proc of its own PID
/// namespace); a network namespace with only its loopback where asked; the
/// account's groups and gid, the working directory entered with the
/// account's file rights (setfsuid), the account's uid for good; then,
/// with `init_status`, a fork: the child goes on to run the command, the
/// parent stays as the PID namespace's init. Everything it runs there is
/// async-signal-safe (plain syscalls on prepared data).
#[allow(clippy::too_many_arguments)]
fn prepare_exec(
    cmd: &mut Command,
    workdir: &Path,
    identity: Option<&(u32, u32, Vec<u32>)>,
    cgroup_procs: Vec<&File>,
    max_file_bytes: Option<u64>,
    hide_devices: &[PathBuf],
    read_only: &[(PathBuf, PathBuf)],
    private_tmp: Option<&Path>,
    init_status: Option<&std::os::fd::OwnedFd>,
    private_network: bool,
    cwd_late: bool,
) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL in a path"))
    };
    // the job's own /tmp and /var/tmp (its directory's tmp/, counted in its
    // disk use) and a /dev/shm of its own: nothing another job can see
    let tmp = match private_tmp {
        Some(t) => Some((
            cstr(t)?,
            ["/tmp", "/var/tmp"]
                .iter()
                .filter(|d| Path::new(d).is_dir())
                .map(|d| cstr(Path::new(d)))
                .collect::<io::Result<Vec<_>>>()?,
        )),
        None => None,
    };
    let shm = Path::new("/dev/shm")
        .is_dir()
        .then(|| CString::new("/dev/shm").expect("no NUL"));
    // a lock directory of its own (shared on the host, it outlives jobs)
    let run_lock = (private_tmp.is_some() && Path::new("/run/lock").is_dir())
        .then(|| CString::new("/run/lock").expect("no NUL"));
    let tmpfs = CString::new("tmpfs").expect("no NUL");
    let shm_opts = CString::new("mode=1777").expect("no NUL");
    let lock_opts = CString::new("mode=1777,size=1m").expect("no NUL");
    let proc_ = CString::new("proc").expect("no NUL");
    let proc_dir = CString::new("/proc").expect("no NUL");
    let cwd = CString::new(workdir.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("a NUL in the working directory"))?;
    let fds: Vec<i32> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
    let hide: Vec<CString> = hide_devices
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::other("a NUL in a device path"))?;
    // read-only binds need root (a mount namespace); without it the
    // inputs' file modes are what keeps them unchanged
    let is_root = unsafe { libc::geteuid() } == 0;
    let ro: Vec<(CString, CString)> = if is_root {
        read_only
            .iter()
            .filter(|(from, to)| from.is_dir() && to.is_dir())
            .map(|(from, to)| Ok((cstr(from)?, cstr(to)?)))
            .collect::<io::Result<_>>()?
    } else {
        Vec::new()
    };
    let root = CString::new("/").expect("no NUL");
    let null = CString::new("/dev/null").expect("no NUL");
    let ident = identity.cloned();
    let init = init_status.map(|f| f.as_raw_fd());
    let mut namespaces = 0;
    if !hide.is_empty() || tmp.is_some() || !ro.is_empty() || init.is_some() {
        namespaces |= libc::CLONE_NEWNS;
    }
    if private_network {
        namespaces |= libc::CLONE_NEWNET;
    }
    // SAFETY: the closure only makes syscalls on data prepared before the
    // fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if namespaces != 0 && libc::unshare(namespaces) != 0 {
                return Err(io::Error::last_os_error());
            }
            if namespaces & libc::CLONE_NEWNET != 0 {
                // its own loopback, up
                let mut lo: libc::ifreq = std::mem::zeroed();
                lo.ifr_name[0] = b'l' as libc::c_char;
                lo.ifr_name[1] = b'o' as libc::c_char;
                lo.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if sock < 0 || libc::ioctl(sock, libc::SIOCSIFFLAGS, &lo) != 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(sock);
            }
            if namespaces & libc::CLONE_NEWNS != 0 {
                // a mount namespace of its own, where the other jobs'
                // device files are /dev/null and /tmp is the job's own
                // (before dropping root)
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if init.is_some()
                    && libc::mount(
                        proc_.as_ptr(),
                        proc_dir.as_ptr(),
                        proc_.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for p in &hide {
                    if libc::mount(
                        null.as_ptr(),
                        p.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // each input bound at its mount point, then made read-only
                for (from, to) in &ro {
                    if libc::mount(
                        from.as_ptr(),
                        to.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) != 0
                        || libc::mount(
                            std::ptr::null(),
                            to.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND
                                | libc::MS_REMOUNT
                                | libc::MS_RDONLY
                                | libc::MS_NOSUID
                                | libc::MS_NODEV,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            // the job's own directory is entered before /tmp is replaced
            // (it may lie under /tmp); a working directory it names, after
            // (a path under /tmp is in its own /tmp)
            if !cwd_late && enter(&cwd, &ident).is_err() {
                return Err(io::Error::last_os_error());
            }
            if let Some((own, targets)) = &tmp {
                // the first target becomes the job's tmp, the next ones are
                // bound to it (its path may have been under the first)
                let mut source = own.as_ptr();
                for t in targets {
                    if libc::mount(
                        source,
                        t.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    source = t.as_ptr();
                }
                if let Some(shm) = &shm
                    && libc::mount(
                        tmpfs.as_ptr(),
                        shm.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        shm_opts.as_ptr().cast(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(lock) = &run_lock
                    && libc::mount(
                        tmpfs.as_ptr(),
                        lock.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        lock_opts.as_ptr().cast(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if cwd_late && enter(&cwd, &ident).is_err() {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, _, _)) = &ident {
                if libc::setuid(*uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // no way back
                if libc::setuid(0) == 0 {
                    return Err(io::Error::other("could not drop root"));
                }
                libc::umask(0o022);
            }
            if let Some(max) = max_file_bytes {
                let lim = libc::rlimit {
                    rlim_cur: max as libc::rlim_t,
                    rlim_max: max as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(status_fd) = init {
                let command = libc::fork();
                if command < 0 {
                    return Err(io::Error::last_os_error());
                }
                if command == 0 {
                    // the command (its pid 2): exec follows
                    return Ok(());
                }
                run_init(command, status_fd);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Enters `cwd` with the account's rights (its file-system uid and groups,
/// which stay set; the uid itself is dropped later), or as this process
/// without an account. -1 on failure, errno set. Async-signal-safe.
unsafe fn enter(cwd: &std::ffi::CStr, ident: &Option<(u32, u32, Vec<u32>)>) -> Result<(), ()> {
    unsafe {
        if let Some((uid, gid, groups)) = ident {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(*gid) != 0 {
                return Err(());
            }
            libc::setfsuid(*uid);
            if libc::setfsuid(u32::MAX) as u32 != *uid {
                *libc::__errno_location() = libc::EPERM;
                return Err(());
            }
            let moved = libc::chdir(cwd.as_ptr());
            let errno = *libc::__errno_location();
            libc::setfsuid(0);
            *libc::__errno_location() = errno;
            if moved != 0 {
                return Err(());
            }
        } else if libc::chdir(cwd.as_ptr()) != 0 {
            return Err(());
        }
        Ok(())
    }
}

/// The init (pid 1) of a job's PID namespace, as the job's account: keeps
/// no descriptor but `status_fd` (so that the spawner sees the command's
/// exec), ignores the stop signals (the supervisor signals the command's
/// process group; SIGKILL from outside still ends it), reaps every orphan,
/// and when `command` ends writes its wait status to `status_fd` and
/// exits, which ends every process left in the namespace. Only
/// async-signal-safe calls.
unsafe fn run_init(command: libc::pid_t, status_fd: i32) -> ! {
    unsafe {
        for fd in 3..status_fd {
            libc::close(fd);
        }
        if libc::syscall(libc::SYS_close_range, status_fd + 1, u32::MAX, 0) != 0 {
            for fd in status_fd + 1..4096 {
                libc::close(fd);
            }
        }
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
        loop {
            let mut status: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                let bytes = status.to_ne_bytes();
                libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
            if pid < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}

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

/// How often the supervisor measures a job's directory.
const DISK_CHECK: Duration = Duration::from_secs(1);

/// Disk space under `dir`: the blocks allocated to every file, directory
/// and link (not their sizes: a file grown by `fallocate --keep-size` or
/// with holes counts what it holds on disk), links not followed; counting
/// stops once past `stop_after`.
fn dir_size(dir: &Path, stop_after: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = fs::symlink_metadata(dir).map_or(0, |m| m.blocks() * 512);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(m.blocks().saturating_mul(512));
            if m.is_dir() {
                stack.push(e.path());
            }
            if total > stop_after {
                return total;
            }
        }
    }
    total
}

/// The mount id of descriptor `fd` of process `pid` (`mnt_id` of its
/// fdinfo), read from /proc without touching the file's own file system.
fn fd_mount(pid: &str, fd: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The device (`major:minor`) of mount `id` in process `pid`'s mount table.
fn mount_device(pid: &str, id: u64) -> Option<String> {
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let mid: u64 = f.next()?.parse().ok()?;
        f.next()?;
        let dev = f.next()?;
        (mid == id).then(|| dev.to_string())
    })
}

/// Disk space held by files that processes `pids` removed but keep open
/// (not in any directory, still on disk), each file once; only files on
/// `device` (the job directory's, `major:minor`), told from /proc alone,
/// so that no file system of the job's making (FUSE) is ever asked and no
/// answer of its can stall the check.
fn unlinked_open(pids: &[i32], device: Option<String>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Some(device) = device else {
        return 0;
    };
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for pid in pids {
        let pid = pid.to_string();
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let name = fd.file_name();
            let Some(n) = name.to_str() else { continue };
            // removed files only, on the job directory's file system
            let removed = fs::read_link(fd.path())
                .is_ok_and(|t| t.as_os_str().as_bytes().ends_with(b" (deleted)"));
            if !removed
                || fd_mount(&pid, n)
                    .and_then(|m| mount_device(&pid, m))
                    .as_ref()
                    != Some(&device)
            {
                continue;
            }
            // the descriptor's file itself (its /proc link is followed)
            let Ok(m) = fs::metadata(fd.path()) else {
                continue;
            };
            if m.is_file() && m.nlink() == 0 && seen.insert((m.dev(), m.ino())) {
                total = total.saturating_add(m.blocks().saturating_mul(512));
            }
        }
    }
    total
}

/// What a run holds on disk: its directory, and what its processes
/// removed but keep open.
fn disk_use(dir: &Path, track: &Track, stop_after: u64) -> u64 {
    let mut total = dir_size(dir, stop_after);
    if total <= stop_after {
        use std::os::unix::fs::MetadataExt;
        let device = fs::metadata(dir)
            .ok()
            .map(|m| format!("{}:{}", libc::major(m.dev()), libc::minor(m.dev())));
        total = total.saturating_add(unlinked_open(&track.pids(), device));
    }
    total
}

/// Follows a started run to its end.
fn follow(
    args: &SuperviseArgs,
    child: &mut Child,
    track: &Track,
    started: Instant,
    log: &mut Option<File>,
) -> ExitRecord {
    let deadline = match args.time_limit_s {
        0 => None,
        s => started.checked_add(Duration::from_secs(s)),
    };
    let mut next_disk_check = Instant::now();

    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if track.alive() {
                    note(
                        log,
                        "the command left processes behind; sent SIGTERM to its process group",
                    );
                    let (_, killed) = stop_group(child, Some(status), track, args.grace);
                    if killed {
                        sigkill_note(log, args.grace);
                    }
                }
                // a last look: what it left on disk when it ended quickly
                if let Some(max) = args.max_disk_bytes
                    && dir_size(&args.dir, max) > max
                {
                    let reason = StopReason::Disk(max);
                    note(log, &format!("{} when it ended", reason.describe()));
                    return record_for_stop(reason, Some(track.command_status(status)), None);
                }
                return record_for_exit(track.command_status(status));
            }
            Ok(None) => {}
            Err(e) => {
                // Cannot happen for our own child; stop everything rather
                // than leave a run nobody watches.
                track.signal(libc::SIGKILL);
                let message = format!("lost track of the command: {e}");
                note(log, &message);
                return failed(message);
            }
        }
        let mut reason = stop_requested(&args.dir, deadline, args.time_limit_s);
        if reason.is_none()
            && let Some(max) = args.max_disk_bytes
            && Instant::now() >= next_disk_check
        {
            next_disk_check = Instant::now() + DISK_CHECK;
            if disk_use(&args.dir, track, max) > max {
                reason = Some(StopReason::Disk(max));
            }
        }
        if let Some(reason) = reason {
            note(
                log,
                &format!(
                    "{}; sent SIGTERM to the job's process group",
                    reason.describe()
                ),
            );
            let (status, killed) = stop_group(child, None, track, args.grace);
            if killed {
                sigkill_note(log, args.grace);
            }
            return record_for_stop(
                reason,
                status.map(|s| track.command_status(s)),
                killed.then_some(args.grace),
            );
        }
        std::thread::sleep(TICK);
    }
}

fn sigkill_note(log: &mut Option<File>, grace: Duration) {
    note(
        log,
        &format!(
            "still running after a grace of {} ms; sent SIGKILL",
            grace.as_millis()
        ),
    );
}

/// Stops process group `pgid` led by `child`: SIGTERM, then up to `grace`
/// for the command to exit and the group to empty, then SIGKILL. `status`
/// is the command's exit status if it was already reaped. Returns the
/// command's exit status (if known) and whether SIGKILL was needed.
fn stop_group(
    child: &mut Child,
    mut status: Option<ExitStatus>,
    track: &Track,
    grace: Duration,
) -> (Option<ExitStatus>, bool) {
    track.signal(libc::SIGTERM);
    let until = Instant::now().checked_add(grace);
    let mut reaped = status.is_some();
    loop {
        if !reaped {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    reaped = true;
                }
                Ok(None) => {}
                Err(_) => reaped = true,
            }
        }
        if reaped && !track.alive() {
            return (status, false);
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            track.signal(libc::SIGKILL);
            if !reaped {
                // In case it left the group.
                let _ = child.kill();
                status = child.wait().ok();
            }
            return (status, true);
        }
        std::thread::sleep(GRACE_TICK);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
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
    fn supervise_args_full() {
        let args = parse_supervise_args(&strings(&[
            "--dir",
            "/j/1",
            "--time-limit",
            "60",
            "--grace-ms",
            "300",
            "--workdir",
            "/w",
            "--",
            "sh",
            "-c",
            "--dir x",
        ]))
        .unwrap();
        assert_eq!(
            args,
            SuperviseArgs {
                dir: "/j/1".into(),
                time_limit_s: 60,
                grace: Duration::from_millis(300),
                workdir: Some("/w".into()),
                command: strings(&["sh", "-c", "--dir x"]),
                ..Default::default()
            }
        );
    }

    #[test]
    fn supervise_args_identity_and_cgroup() {
        let a = parse_supervise_args(&strings(&[
            "--dir",
            "/j/2",
            "--time-limit",
            "0",
            "--grace-ms",
            "0",
            "--uid",
            "1001",
            "--gid",
            "1002",
            "--groups",
            "1002,44",
            "--cgroup",
            "/sys/fs/cgroup/g/job-2",
            "--",
            "true",
        ]))
        .unwrap();
        assert_eq!(a.identity, Some((1001, 1002, vec![1002, 44])));
        assert_eq!(a.cgroup, Some("/sys/fs/cgroup/g/job-2".into()));
        let e = |v: &[&str]| parse_supervise_args(&strings(v)).unwrap_err();
        let base = ["--dir", "/j", "--time-limit", "0", "--grace-ms", "0"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            v.extend(["--", "true"]);
            e(&v)
        };
        assert!(with(&["--uid", "0", "--gid", "0"]).contains("never run as root"));
        assert!(with(&["--uid", "5"]).contains("go together"));
        assert!(with(&["--uid", "x", "--gid", "1"]).contains("numeric"));
    }

    #[test]
    fn supervise_args_without_separator_or_workdir() {
        let args = parse_supervise_args(&strings(&[
            "--grace-ms",
            "0",
            "--time-limit",
            "0",
            "--dir",
            "d",
            "true",
            "--x",
        ]))
        .unwrap();
        assert_eq!(args.workdir, None);
        assert_eq!(args.time_limit_s, 0);
        assert_eq!(args.command, strings(&["true", "--x"]));
    }

    #[test]
    fn supervise_args_errors() {
        let base = ["--dir", "d", "--time-limit", "1", "--grace-ms", "1"];
        let err = |extra: &[&str]| {
            let mut args = strings(&base);
            args.extend(strings(extra));
            parse_supervise_args(&args).unwrap_err()
        };
        assert!(err(&["--"]).contains("no command"));
        assert!(err(&[]).contains("no command"));
        assert!(err(&["--", ""]).contains("no command"));
        assert!(err(&["--bogus", "1", "--", "x"]).contains("unknown option `--bogus`"));
        assert!(err(&["--dir", "e", "--", "x"]).contains("given twice"));
        assert!(err(&["--workdir"]).contains("needs a value"));
        let missing = parse_supervise_args(&strings(&["--dir", "d", "--", "x"])).unwrap_err();
        assert!(missing.contains("`--time-limit` is required"), "{missing}");
        let bad = parse_supervise_args(&strings(&[
            "--dir",
            "d",
            "--time-limit",
            "-1",
            "--grace-ms",
            "1",
            "--",
            "x",
        ]))
        .unwrap_err();
        assert!(bad.contains("not a non-negative integer"), "{bad}");
        assert!(parse_supervise_args(&[]).is_err());
    }

    #[test]
    fn bad_args_return_2() {
        assert_eq!(supervise(&strings(&["--nope"])), 2);
        assert_eq!(supervise(&[]), 2);
    }

    #[test]
    fn exit_records() {
        let r = record_for_exit(ExitStatus::from_raw(0));
        assert_eq!(
            (r.outcome, r.exit_code, r.signal),
            (Outcome::Completed, Some(0), None)
        );
        let r = record_for_exit(ExitStatus::from_raw(3 << 8));
        assert_eq!((r.outcome, r.exit_code), (Outcome::Failed, Some(3)));
        assert_eq!(r.message, "exit code 3");
        let r = record_for_exit(ExitStatus::from_raw(libc::SIGSEGV));
        assert_eq!(
            (r.outcome, r.signal),
            (Outcome::Failed, Some(libc::SIGSEGV))
        );
        assert_eq!(r.message, format!("killed by signal {}", libc::SIGSEGV));
        let r = record_for_stop(
            StopReason::TimeLimit(5),
            Some(ExitStatus::from_raw(libc::SIGKILL)),
            Some(Duration::from_millis(300)),
        );
        assert_eq!(r.outcome, Outcome::TimedOut);
        assert_eq!(r.signal, Some(libc::SIGKILL));
        assert!(r.message.starts_with("time limit of 5 s reached"));
        assert_eq!(
            record_for_stop(StopReason::Signal(15), None, None).outcome,
            Outcome::Cancelled
        );
    }

    #[test]
    fn cmdline_match() {
        let cmdline = b"/bin/gigafab\0job-supervise\0--dir\0/r/1\0--\0sleep\0";
        assert!(cmdline_names_dir(cmdline, OsStr::new("/r/1")));
        assert!(!cmdline_names_dir(cmdline, OsStr::new("/r/12")));
        assert!(!cmdline_names_dir(b"", OsStr::new("/r/1")));
    }

    #[test]
    fn atomic_write_and_status_round_trip() {
        let dir = std::env::temp_dir().join(format!("gigafab-exec-unit-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let record = failed("x".into());
        write_record(&dir.join(STATUS_FILE), &record).unwrap();
        assert!(!dir.join(STATUS_TMP).exists());
        assert_eq!(read_status(&dir).unwrap(), Some(record));
        fs::write(dir.join(STATUS_FILE), "{ nope").unwrap();
        let err = read_status(&dir).unwrap_err();
        assert!(err.to_string().contains(STATUS_FILE), "{err}");
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read_status(&dir).unwrap(), None);
    }
}
