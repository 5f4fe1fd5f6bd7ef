//! The supervisor (`gigafab job-supervise`): starts a job's command in
//! its confinement ([`super::sandbox`]), follows it to its end (time
//! limit, cancel, disk limit) and records how it ended.

use super::disk::{dir_size, unlinked_open};
use super::sandbox::{pipe_cloexec, prepare_exec};
use super::*;

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
    /// NVIDIA's capability directory, covered in the job's mount namespace
    /// by one holding only these capabilities (major, minor, mode).
    caps: Option<super::CapsMask>,
    /// Directories bound read-only in its mount namespace (as root): each
    /// at the second path (itself, or a mount point of the job's own).
    read_only: Vec<(PathBuf, PathBuf)>,
    /// A network namespace of its own (loopback only).
    private_network: bool,
    /// cgroup pids.max of the run.
    pids_max: Option<u64>,
    /// The port the job serves on: with a private network, the
    /// supervisor hands connections to it out ([`crate::reach`]).
    serve_port: Option<u16>,
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
    let mut caps_dir: Option<PathBuf> = None;
    let mut own_caps: Vec<(u32, u32, u32)> = Vec::new();
    let mut read_only = Vec::new();
    let mut max_disk = None;
    let mut env = None;
    let mut private_network = false;
    let mut pids_max = None;
    let mut serve_port = None;
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
        if arg == "--caps-dir" || arg == "--cap" {
            let value = args
                .get(i + 1)
                .ok_or_else(|| format!("`{arg}` needs a value"))?;
            if arg == "--caps-dir" {
                if !value.starts_with('/') || caps_dir.replace(PathBuf::from(value)).is_some() {
                    return Err(format!("`{arg}`: one absolute path: {value:?}"));
                }
            } else {
                let f: Vec<u32> = value
                    .split(':')
                    .map(|x| x.parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("`{arg}`: expected MAJOR:MINOR:MODE, got {value:?}"))?;
                let [major, minor, mode] = f[..] else {
                    return Err(format!("`{arg}`: expected MAJOR:MINOR:MODE, got {value:?}"));
                };
                own_caps.push((major, minor, mode & 0o777));
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
            "--serve-port" => &mut serve_port,
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
        caps: match (caps_dir, own_caps.is_empty()) {
            (Some(dir), _) => Some(super::CapsMask {
                dir,
                caps: own_caps,
            }),
            (None, true) => None,
            (None, false) => return Err("`--cap` needs `--caps-dir`".into()),
        },
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
        serve_port: match serve_port {
            Some(v) => Some(
                v.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("`--serve-port`: not a port: {v:?}"))?,
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

/// How often the supervisor looks for a new time limit.
const LIMIT_CHECK: Duration = Duration::from_secs(1);

/// The time limit the server last set ([`super::LIMIT_FILE`]): whole
/// seconds from the start, at least one.
fn new_limit(dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(dir.join(super::LIMIT_FILE)).ok()?;
    text.trim().parse::<u64>().ok().filter(|&l| l > 0)
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
        args.caps.as_ref(),
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
    // a job that serves, in a network of its own: the supervisor hands
    // out connections to its port (its thread made before the PID
    // namespace below, after which no thread can be made)
    let broker = match args.serve_port.filter(|_| args.private_network && isolate) {
        Some(port) => match crate::reach::broker(&args.dir, port) {
            Ok(tx) => Some(tx),
            Err(e) => {
                let message = format!("cannot start `{program}`: its serving socket: {e}");
                note(&mut log, &message);
                return failed(message);
            }
        },
        None => None,
    };
    // a shell in the job on request (`gigafab attach`): its broker
    // thread made here too, before the PID namespace
    let attach = crate::attach::broker(
        &args.dir,
        crate::attach::ShellSpec {
            env: args.env.clone(),
            workdir: workdir.clone(),
            workdir_is_jobs: args.workdir.is_none(),
            identity: args.identity.clone(),
            cgroups: cgroup
                .as_ref()
                .map(|c| {
                    std::iter::once(c.0.join("cgroup.procs"))
                        .chain(c.2.iter().map(|l| l.0.join("cgroup.procs")))
                        .collect()
                })
                .unwrap_or_default(),
        },
    );
    if let Err(e) = &attach {
        note(
            &mut log,
            &format!("no shell can be attached to the job: {e}"),
        );
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
    if let Ok(tx) = &attach {
        let _ = tx.send(child.id());
    }
    if let Some(tx) = broker {
        match crate::reach::namespace_of(child.id()) {
            Ok(ns) => {
                let _ = tx.send(ns);
            }
            Err(e) => note(
                &mut log,
                &format!(
                    "its network namespace cannot be reached ({e}): the gateway cannot reach it"
                ),
            ),
        }
    }
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
    let _ = fs::remove_file(args.dir.join(crate::reach::SERVE_SOCKET));
    let _ = fs::remove_file(args.dir.join(crate::attach::ATTACH_SOCKET));
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

/// How often the supervisor measures a job's directory.
const DISK_CHECK: Duration = Duration::from_secs(1);

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
    let mut limit_s = args.time_limit_s;
    let mut deadline = match limit_s {
        0 => None,
        s => started.checked_add(Duration::from_secs(s)),
    };
    let mut next_disk_check = Instant::now();
    let mut next_limit_check = Instant::now();

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
        // a new limit from the server (a session extended)
        if Instant::now() >= next_limit_check {
            next_limit_check = Instant::now() + LIMIT_CHECK;
            if let Some(l) = new_limit(&args.dir)
                && l != limit_s
            {
                limit_s = l;
                deadline = started.checked_add(Duration::from_secs(l));
                note(log, &format!("time limit now {l} s"));
            }
        }
        let mut reason = stop_requested(&args.dir, deadline, limit_s);
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
