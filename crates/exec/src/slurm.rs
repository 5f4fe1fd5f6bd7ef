//! The Slurm executor: gigafab admits and orders jobs, Slurm runs them.
//!
//! Each admitted job is submitted with `sbatch --parsable` under the name
//! `gigafab-<installation>-<id>`, asking for the accelerator type and count gigafab chose
//! (`--gres=gpu:<type>:<n>` per node), its time limit, the allocation as
//! account, and output files in the job's directory. State comes from
//! `squeue`, then `sacct` (or `scontrol show job` where there is no
//! accounting database) once the job has left the queue; `scancel` stops
//! it. After a restart a job is found again by its name, so it is never
//! submitted twice. Every output of Slurm's commands is parsed by a pure
//! function below, tested on recorded text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{ExecError, Executor, ExitRecord, LaunchSpec, Outcome, RunStatus};

/// What a Slurm command printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs Slurm's commands (the real ones, or recorded answers in tests).
pub trait SlurmCli: Send + Sync {
    fn run(&self, program: &str, args: &[String]) -> std::io::Result<CmdOutput>;

    /// Runs `program` in the name of `account` (sbatch of a job that runs as
    /// its tenant's POSIX account; the server is root then). The default
    /// ignores the account (recording fakes).
    fn run_as(
        &self,
        program: &str,
        args: &[String],
        account: Option<&crate::posix::Account>,
    ) -> std::io::Result<CmdOutput> {
        let _ = account;
        self.run(program, args)
    }

    /// Starts `program` on terminal `tty` (its controlling terminal, in a
    /// session of its own), in the name of `account`; the caller reaps it.
    /// The default: not supported (recording fakes).
    fn spawn_on_tty(
        &self,
        program: &str,
        args: &[String],
        account: Option<&crate::posix::Account>,
        tty: &std::os::fd::OwnedFd,
    ) -> std::io::Result<std::process::Child> {
        let _ = (program, args, account, tty);
        Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
    }
}

/// The Slurm commands on `PATH` (or in `bin_dir`).
#[derive(Debug, Clone, Default)]
pub struct RealSlurm {
    pub bin_dir: Option<PathBuf>,
}

impl SlurmCli for RealSlurm {
    fn run(&self, program: &str, args: &[String]) -> std::io::Result<CmdOutput> {
        self.run_as(program, args, None)
    }

    fn run_as(
        &self,
        program: &str,
        args: &[String],
        account: Option<&crate::posix::Account>,
    ) -> std::io::Result<CmdOutput> {
        use std::os::unix::process::CommandExt;
        let prog = match &self.bin_dir {
            Some(d) => d.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = Command::new(prog);
        cmd.args(args).stdin(std::process::Stdio::null());
        if program == "sbatch" {
            // sbatch exports its whole environment to the job (Slurm's
            // fast path: `--export=NIL`, `NONE` or a list of names make
            // slurmd build the job's environment itself, ~0.3 s a job
            // here), so it gets only what a program needs and the
            // client's own settings: nothing else of the server's
            cmd.env_clear().envs(crate::base_env());
            cmd.envs(
                std::env::vars().filter(|(k, _)| k == "SLURM_CONF" || k.starts_with("SBATCH_")),
            );
        }
        if let Some(a) = account {
            // the command runs as the account (std drops root's groups)
            cmd.uid(a.uid)
                .gid(a.gid)
                .env("HOME", &a.home)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name);
        }
        let out = cmd.output()?;
        Ok(CmdOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn spawn_on_tty(
        &self,
        program: &str,
        args: &[String],
        account: Option<&crate::posix::Account>,
        tty: &std::os::fd::OwnedFd,
    ) -> std::io::Result<std::process::Child> {
        use std::os::unix::process::CommandExt;
        let prog = match &self.bin_dir {
            Some(d) => d.join(program),
            None => PathBuf::from(program),
        };
        let mut cmd = Command::new(prog);
        // a fixed environment: what a program needs, Slurm's own settings
        cmd.args(args)
            .env_clear()
            .envs(crate::base_env())
            .envs(std::env::vars().filter(|(k, _)| k == "SLURM_CONF"))
            .env("TERM", "xterm-256color")
            .stdin(tty.try_clone()?)
            .stdout(tty.try_clone()?)
            .stderr(tty.try_clone()?);
        if let Some(a) = account {
            cmd.uid(a.uid)
                .gid(a.gid)
                .env("HOME", &a.home)
                .env("USER", &a.name)
                .env("LOGNAME", &a.name);
        }
        // SAFETY: async-signal-safe calls only, in the child before exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
}

/// A job's state as Slurm tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmJob {
    pub id: String,
    pub name: String,
    /// Base state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...).
    pub state: String,
    /// Pending reason or similar (`Resources`, `None`).
    pub reason: String,
    /// Exit code and signal (`ExitCode=2:0`).
    pub exit: Option<(i32, i32)>,
    /// Seconds it ran by Slurm's accounting (sacct's `ElapsedRaw`).
    pub elapsed_s: Option<i64>,
}

/// `sbatch --parsable`: `123` or `123;cluster`.
pub fn parse_sbatch(out: &str) -> Option<String> {
    let line = out.lines().map(str::trim).find(|l| !l.is_empty())?;
    let id = line.split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_string())
}

/// `squeue -h -o '%i|%j|%T|%r'`.
pub fn parse_squeue(out: &str) -> Vec<SlurmJob> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(SlurmJob {
                id: f[0].to_string(),
                name: f[1].to_string(),
                state: base_state(f[2]),
                reason: f.get(3).map(|s| s.to_string()).unwrap_or_default(),
                exit: None,
                elapsed_s: None,
            })
        })
        .collect()
}

/// `CANCELLED by 0` → `CANCELLED`; `completed` → `COMPLETED`.
fn base_state(s: &str) -> String {
    s.split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches('+')
        .to_ascii_uppercase()
}

fn parse_exit(s: &str) -> Option<(i32, i32)> {
    let (a, b) = s.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// `sacct -P -n -o JobID,JobName,State,ExitCode,ElapsedRaw`: the allocation lines
/// only (steps such as `12.batch` are skipped).
pub fn parse_sacct_states(out: &str) -> Vec<SlurmJob> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('|').collect();
            if f.len() < 4 || f[0].is_empty() || f[0].contains('.') {
                return None;
            }
            Some(SlurmJob {
                id: f[0].to_string(),
                name: f[1].to_string(),
                state: base_state(f[2]),
                reason: String::new(),
                exit: parse_exit(f[3]),
                elapsed_s: f.get(4).and_then(|e| e.trim().parse::<i64>().ok()),
            })
        })
        .collect()
}

/// `key=value` pairs of one `scontrol show ... -o` line (values may hold
/// spaces only in the last field, which Slurm prints last: not needed here).
pub fn scontrol_fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `scontrol show job -o <id>`.
pub fn parse_scontrol_job(out: &str) -> Option<SlurmJob> {
    let line = out.lines().find(|l| l.contains("JobId="))?;
    let f = scontrol_fields(line);
    let get = |k: &str| f.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    Some(SlurmJob {
        id: get("JobId")?,
        name: get("JobName").unwrap_or_default(),
        state: base_state(&get("JobState")?),
        reason: get("Reason").unwrap_or_default(),
        exit: get("ExitCode").as_deref().and_then(parse_exit),
        elapsed_s: None,
    })
}

/// A node as `scontrol show node -o` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmNode {
    pub name: String,
    pub cpus: u32,
    pub real_memory_mb: u64,
    /// GPU GRES: (type, count); type `gpu` when untyped.
    pub gpus: Vec<(String, u32)>,
    pub state: String,
    pub partitions: Vec<String>,
}

/// `gpu:h100:4,gpu:mi300x:4(S:0)` → [("h100", 4), ("mi300x", 4)].
pub fn parse_gres(s: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    // commas inside parentheses (socket lists) are not separators
    let mut depth = 0;
    let mut cur = String::new();
    let mut parts = Vec::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        if depth == 0 && c != ')' {
            cur.push(c);
        }
    }
    parts.push(cur);
    for p in parts {
        let f: Vec<&str> = p.trim().split(':').collect();
        if f.first() != Some(&"gpu") {
            continue;
        }
        let (ty, n) = match f.len() {
            2 => ("gpu", f[1]),
            3 => (f[1], f[2]),
            _ => continue,
        };
        if let Ok(n) = n.parse::<u32>() {
            out.push((ty.to_string(), n));
        }
    }
    out
}

/// `scontrol show node -o`: one node per line.
pub fn parse_scontrol_nodes(out: &str) -> Vec<SlurmNode> {
    out.lines()
        .filter(|l| l.contains("NodeName="))
        .filter_map(|l| {
            let f = scontrol_fields(l);
            let get = |k: &str| f.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
            Some(SlurmNode {
                name: get("NodeName")?.to_string(),
                cpus: get("CPUTot").and_then(|v| v.parse().ok()).unwrap_or(0),
                real_memory_mb: get("RealMemory").and_then(|v| v.parse().ok()).unwrap_or(0),
                gpus: get("Gres").map(parse_gres).unwrap_or_default(),
                state: get("State").unwrap_or("").to_string(),
                partitions: get("Partitions")
                    .map(|p| p.split(',').map(str::to_string).collect())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The run state of a Slurm job state.
pub fn status_of(j: &SlurmJob) -> RunStatus {
    let (code, sig) = j.exit.unwrap_or((0, 0));
    let rec = |outcome, message: String| {
        RunStatus::Exited(ExitRecord {
            outcome,
            exit_code: Some(code),
            signal: (sig != 0).then_some(sig),
            message,
            ended_at_ms: crate::now_ms(),
            elapsed_s: j.elapsed_s,
        })
    };
    match j.state.as_str() {
        "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
        | "RESIZING" | "STAGE_OUT" | "SIGNALING" => RunStatus::Running,
        "COMPLETED" if code == 0 => rec(Outcome::Completed, "exit code 0 (Slurm)".into()),
        "COMPLETED" | "FAILED" => rec(
            Outcome::Failed,
            format!("exit code {code} (Slurm job {} {})", j.id, j.state),
        ),
        "TIMEOUT" | "DEADLINE" => rec(
            Outcome::TimedOut,
            format!("time limit reached (Slurm job {} {})", j.id, j.state),
        ),
        "CANCELLED" => rec(Outcome::Cancelled, format!("Slurm job {} cancelled", j.id)),
        other => rec(
            Outcome::Failed,
            format!("Slurm job {} ended {other} {}", j.id, j.reason)
                .trim()
                .to_string(),
        ),
    }
}

/// The part of a job's environment every program expects: the server's
/// PATH, LANG, LC_ALL, TZ and TERM ([`crate::base_env`]); HOME, USER and
/// LOGNAME of the account the job runs as (the server's own when none).
fn script_base_env(account: Option<&crate::posix::Account>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = crate::base_env()
        .into_iter()
        .filter(|(k, _)| account.is_none() || k != "HOME")
        .collect();
    if let Some(a) = account {
        env.push(("HOME".into(), a.home.display().to_string()));
        env.push(("USER".into(), a.name.clone()));
        env.push(("LOGNAME".into(), a.name.clone()));
    }
    env
}

/// Quotes a word for a POSIX shell script.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The sbatch arguments for a slice of an accelerator: one shard of its
/// type (`--gres=shard:h100:1`, Slurm's sharing of a GPU) for an MPS
/// or time-sliced slice, the gres.conf shards of each GPU being the pool's
/// `fractions`; one GPU of the slice's own type (`--gres=gpu:h100-1g.10gb:1`,
/// a gres.conf `Type` whose `MultipleFiles` are the instance's device
/// files) for a MIG instance or an AMD partition.
pub fn slice_gres_args(slice_type: &str, s: &crate::AssignedSlice) -> Vec<String> {
    match s.kind.as_str() {
        // a shard of the slice's own accelerator type (`h100-mps-4`: h100)
        "mps" | "time-slicing" => {
            let parent = slice_type
                .strip_suffix(&format!("-{}", s.name))
                .unwrap_or(slice_type);
            vec!["--nodes=1".into(), format!("--gres=shard:{parent}:1")]
        }
        _ => vec!["--nodes=1".into(), format!("--gres=gpu:{slice_type}:1")],
    }
}

/// The sbatch arguments for a job of `gpus` accelerators of `accel_type`
/// on nodes of `per_node`: whole nodes when the gang spans several.
pub fn gres_args(accel_type: &str, gpus: u32, per_node: u32) -> Vec<String> {
    let per_node = per_node.max(1);
    if gpus <= per_node {
        return vec![
            "--nodes=1".into(),
            format!("--gres=gpu:{accel_type}:{gpus}"),
        ];
    }
    let nodes = gpus.div_ceil(per_node);
    if gpus.is_multiple_of(per_node) {
        vec![
            format!("--nodes={nodes}"),
            format!("--gres=gpu:{accel_type}:{per_node}"),
        ]
    } else {
        vec![
            format!("--nodes={nodes}"),
            format!("--gpus={accel_type}:{gpus}"),
        ]
    }
}

/// Runs jobs through Slurm's commands.
pub struct SlurmExecutor {
    cli: Box<dyn SlurmCli>,
    root: PathBuf,
    partition: Option<String>,
    /// Distinguishes this installation's jobs from other gigafab
    /// installations' on the same cluster (job names must be unique).
    instance: String,
    /// (Slurm account, user) associations made so far (see
    /// [`SlurmExecutor::ensure_association`]).
    associations: std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    /// Runs squeue shows ended that accounting has not recorded yet, and
    /// since when: their end waits for accounting (the length a run is
    /// charged) for [`ACCOUNTING_GRACE`] at most.
    unrecorded: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

/// How long an ended run waits for accounting to record it.
const ACCOUNTING_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl SlurmExecutor {
    /// `root`: where job directories (script, logs) go; must be visible to
    /// the compute nodes at the same path (a shared file system).
    /// `instance`: a short id unique to this installation (job names are
    /// `gigafab-<instance>-<id>`).
    pub fn new(
        cli: Box<dyn SlurmCli>,
        root: PathBuf,
        partition: Option<String>,
        instance: String,
    ) -> SlurmExecutor {
        SlurmExecutor {
            cli,
            root,
            partition,
            instance,
            associations: Default::default(),
            unrecorded: Default::default(),
        }
    }

    /// The Slurm account of gigafab allocation `alloc`.
    pub fn slurm_account(&self, alloc: &str) -> String {
        format!("gigafab-{}-a{alloc}", self.instance)
    }

    /// `sacctmgr -i ARGS`, taking "already there" as done. One call at a
    /// time in this process: slurmdbd refuses a change while another holds
    /// its lock ("Database is busy"), so concurrent grants would fail.
    fn sacctmgr(&self, job: i64, args: &[&str]) -> Result<(), String> {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let mut all = vec!["-i".to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let mut tries = 0;
        let o = loop {
            let o = self
                .run(job, "sacctmgr", all.clone())
                .map_err(|e| e.to_string())?;
            // an account just added may not be seen yet by the next call
            // ("This account 'x' doesn't exist ... Nothing new added"): a
            // few short waits
            if sacctmgr_missing(&o) && tries < SACCTMGR_MISSING_TRIES {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(250 * tries));
                continue;
            }
            break o;
        };
        if sacctmgr_done(&o) {
            Ok(())
        } else {
            Err(format!(
                "sacctmgr {}: {}",
                args.join(" "),
                o.stderr.trim().lines().next().unwrap_or("failed")
            ))
        }
    }

    /// Makes the Slurm account `account` with `grant_minutes` as its
    /// `GrpTRESMins` limit (when given) and the association of each of
    /// `users` with it (`sacctmgr -i add account/user`, `modify`), so that
    /// Slurm's accounting (sacct, sreport) and limits see gigafab's
    /// allocations. Associations are made once per pair; the limit each
    /// time (an extension raises it).
    fn associate(
        &self,
        job: i64,
        account: &str,
        users: &[&str],
        grant_minutes: Option<u64>,
    ) -> Result<(), String> {
        let cached = |u: &str| {
            self.associations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&(account.to_string(), u.to_string()))
        };
        if grant_minutes.is_none() && users.iter().all(|u| cached(u)) {
            return Ok(());
        }
        self.sacctmgr(
            job,
            &["add", "account", account, "Description=gigafab allocation"],
        )?;
        // Slurm's own limit agrees with the grant (enforced where the
        // cluster sets AccountingStorageEnforce=limits)
        if let Some(m) = grant_minutes {
            self.sacctmgr(
                job,
                &[
                    "modify",
                    "account",
                    account,
                    "set",
                    &format!("GrpTRESMins=gres/gpu={m}"),
                ],
            )?;
        }
        for u in users.iter().filter(|u| !cached(u)) {
            self.sacctmgr(job, &["add", "user", u, &format!("Account={account}")])?;
            self.associations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((account.to_string(), u.to_string()));
        }
        Ok(())
    }

    /// At a launch: the association of the job's account with its
    /// allocation's (made at the grant; again here for a member who joined
    /// since). Where Slurm has no accounting database (sacctmgr fails) the
    /// job goes without `--account`.
    fn ensure_association(
        &self,
        job: i64,
        account: &str,
        user: &str,
        grant_minutes: Option<u64>,
    ) -> bool {
        let known = self
            .associations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&(account.to_string(), user.to_string()));
        known || self.associate(job, account, &[user], grant_minutes).is_ok()
    }

    /// The Slurm job name of gigafab job `id`.
    pub fn job_name(&self, id: i64) -> String {
        format!("gigafab-{}-{id}", self.instance)
    }

    fn job_dir(&self, id: i64) -> PathBuf {
        self.root.join(id.to_string())
    }

    fn run(&self, job: i64, program: &str, args: Vec<String>) -> Result<CmdOutput, ExecError> {
        self.run_as(job, program, args, None)
    }

    fn run_as(
        &self,
        job: i64,
        program: &str,
        args: Vec<String>,
        account: Option<&crate::posix::Account>,
    ) -> Result<CmdOutput, ExecError> {
        self.cli
            .run_as(program, &args, account)
            .map_err(|e| ExecError::Launch {
                job,
                message: format!("cannot run `{program}`: {e} (is Slurm installed and on PATH?)"),
            })
    }

    /// `squeue -h <select> <value>`: the raw answer.
    fn squeue(&self, job: i64, select: &str, value: &str) -> Result<CmdOutput, ExecError> {
        let args = ["-h", select, value, "-o", "%i|%j|%T|%r"];
        self.run(job, "squeue", args.iter().map(|a| a.to_string()).collect())
    }

    /// `squeue -t all`: also the jobs that ended within slurmctld's
    /// `MinJobAge` (300 s by default), with their final state.
    fn squeue_all_states(&self, job: i64, ids: &str) -> Result<CmdOutput, ExecError> {
        let args = ["-h", "-t", "all", "-j", ids, "-o", "%i|%j|%T|%r"];
        self.run(job, "squeue", args.iter().map(|a| a.to_string()).collect())
    }

    /// Whether run `handle`, ended by squeue but not in accounting that
    /// answered, still waits for accounting to record it.
    fn awaits_accounting(&self, handle: &str) -> bool {
        let mut m = self.unrecorded.lock().unwrap_or_else(|e| e.into_inner());
        let since = *m
            .entry(handle.to_string())
            .or_insert_with(std::time::Instant::now);
        let waiting = since.elapsed() < ACCOUNTING_GRACE;
        if !waiting {
            m.remove(handle);
        }
        waiting
    }

    fn recorded(&self, handle: &str) {
        self.unrecorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(handle);
    }

    /// `sacct -P -n <select> <value>`: None where accounting does not answer.
    fn sacct(&self, job: i64, select: &str, value: &str) -> Option<Vec<SlurmJob>> {
        let args = [
            "-P",
            "-n",
            select,
            value,
            "-o",
            "JobID,JobName,State,ExitCode,ElapsedRaw",
        ];
        let a = self
            .run(job, "sacct", args.iter().map(|a| a.to_string()).collect())
            .ok()?;
        a.success.then(|| parse_sacct_states(&a.stdout))
    }

    fn find(&self, job: i64, handle: &str) -> Result<Option<SlurmJob>, ExecError> {
        let q = self.squeue(job, "-j", handle)?;
        if !q.success && !q.stderr.contains("Invalid job id") {
            return Err(failed(job, "squeue", &q));
        }
        let queued = parse_squeue(&q.stdout).into_iter().find(|j| j.id == handle);
        if let Some(j) = &queued
            && status_of(j) == RunStatus::Running
        {
            return Ok(queued);
        }
        // ended or left the queue: accounting (its length and exit code),
        // else what squeue said, else the controller's memory of it
        let acct = self.sacct(job, "-j", handle);
        if let Some(j) = acct
            .as_ref()
            .and_then(|v| v.iter().find(|j| j.id == handle))
        {
            self.recorded(handle);
            return Ok(Some(j.clone()));
        }
        if let Some(mut j) = queued {
            if acct.is_some() && self.awaits_accounting(handle) {
                j.state = "COMPLETING".into();
            }
            return Ok(Some(j));
        }
        self.controller_memory(job, handle)
    }

    /// `scontrol show job`: the controller's memory of a job that left the
    /// queue before accounting recorded it (or where there is none).
    fn controller_memory(&self, job: i64, handle: &str) -> Result<Option<SlurmJob>, ExecError> {
        let s = self.run(
            job,
            "scontrol",
            vec!["show".into(), "job".into(), "-o".into(), handle.into()],
        )?;
        if !s.success && transient_error(&s.stderr) {
            return Err(failed(job, "scontrol", &s));
        }
        Ok(parse_scontrol_job(&s.stdout).filter(|j| j.id == handle))
    }

    fn find_by_name(&self, job: i64) -> Result<Option<SlurmJob>, ExecError> {
        let name = self.job_name(job);
        let q = self.squeue(job, "-n", &name)?;
        if !q.success {
            return Err(failed(job, "squeue", &q));
        }
        if let Some(j) = parse_squeue(&q.stdout).into_iter().find(|j| j.name == name) {
            return Ok(Some(j));
        }
        Ok(self
            .sacct(job, "--name", &name)
            .and_then(|v| v.into_iter().rfind(|j| j.name == name)))
    }
}

/// Tries of a `sacctmgr` call that names something slurmdbd does not
/// show yet.
const SACCTMGR_MISSING_TRIES: u64 = 4;

/// Whether `sacctmgr` refused for want of something named ("This account
/// 'x' doesn't exist").
fn sacctmgr_missing(o: &CmdOutput) -> bool {
    [&o.stdout, &o.stderr]
        .iter()
        .any(|t| t.contains("doesn't exist") || t.contains("does not exist"))
}

/// Whether a `sacctmgr -i add/modify` left things as asked: it succeeded,
/// or found them there already. "Nothing new added" alone is not enough:
/// sacctmgr says it too when a named account does not exist.
fn sacctmgr_done(o: &CmdOutput) -> bool {
    if sacctmgr_missing(o) {
        return false;
    }
    o.success
        || [&o.stdout, &o.stderr]
            .iter()
            .any(|t| t.contains("Nothing new added") || t.contains("already exists"))
}

/// Whether Slurm's message says the controller cannot be reached now.
pub fn transient_error(stderr: &str) -> bool {
    let e = stderr.to_ascii_lowercase();
    [
        "unable to contact slurm controller",
        "socket timed out",
        "zero bytes were transmitted",
        "connection refused",
        "temporarily unavailable",
        "slurm_persist_conn",
        "communication connection failure",
    ]
    .iter()
    .any(|m| e.contains(m))
}

fn failed(job: i64, what: &str, out: &CmdOutput) -> ExecError {
    let msg = format!("{what}: {}", out.stderr.trim());
    if transient_error(&out.stderr) {
        ExecError::Transient { job, message: msg }
    } else {
        ExecError::Launch { job, message: msg }
    }
}

impl Executor for SlurmExecutor {
    fn name(&self) -> &'static str {
        "slurm"
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecError> {
        let id = spec.job_id;
        if spec.command.is_empty() {
            return Err(ExecError::Launch {
                job: id,
                message: "empty command".into(),
            });
        }
        // never twice: after a launch that may have reached Slurm, a job
        // already known under our name is adopted
        if spec.retry
            && let Some(j) = self.find_by_name(id)?
        {
            return Ok(j.id);
        }
        let account = match &spec.run_as {
            Some(name) => Some(
                crate::posix::lookup(name)
                    .map_err(|message| ExecError::Launch { job: id, message })?,
            ),
            None => None,
        };
        let dir = self.job_dir(id);
        std::fs::create_dir_all(&dir).map_err(|e| ExecError::Io {
            path: dir.clone(),
            source: e,
        })?;
        let script = dir.join("job.sh");
        let mut text = String::from("#!/bin/sh\n# gigafab job, submitted with sbatch\n");
        // the job's environment: what a program needs (sbatch's own, see
        // RealSlurm::run_as), then the job's own variables. Slurm adds its
        // SLURM_* and CUDA_VISIBLE_DEVICES / ROCR_VISIBLE_DEVICES itself.
        for (k, v) in script_base_env(account.as_ref()) {
            text.push_str(&format!("export {k}={}\n", sh_quote(&v)));
        }
        for (k, v) in &spec.env {
            text.push_str(&format!("export {k}={}\n", sh_quote(v)));
        }
        text.push_str(&format!("export GIGAFAB_JOB_ID={id}\n"));
        // a slice's description and MPS limits (Slurm picks its device)
        for (k, v) in crate::accelerator_env(&spec.accelerators) {
            if k == "GIGAFAB_SLICE" || k.starts_with("CUDA_MPS_") {
                text.push_str(&format!("export {k}={}\n", sh_quote(&v)));
            }
        }
        text.push_str("exec");
        for a in &spec.command {
            text.push(' ');
            text.push_str(&sh_quote(a));
        }
        text.push('\n');
        std::fs::write(&script, text).map_err(|e| ExecError::Io {
            path: script.clone(),
            source: e,
        })?;
        if let Some(a) = &account {
            // the job's directory and script are its account's (Slurm writes
            // the logs there in its name); 0700: no other tenant reads them
            use std::os::unix::fs::PermissionsExt;
            for (p, mode) in [(&dir, 0o700), (&script, 0o700)] {
                std::os::unix::fs::chown(p, Some(a.uid), Some(a.gid))
                    .and_then(|_| {
                        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                    })
                    .map_err(|e| ExecError::Io {
                        path: p.clone(),
                        source: e,
                    })?;
            }
        }
        let minutes = spec.time_limit_s.div_ceil(60).max(1);
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", self.job_name(id)),
            format!("--time={minutes}"),
            format!("--output={}", dir.join("stdout.log").display()),
            format!("--error={}", dir.join("stderr.log").display()),
            format!(
                "--chdir={}",
                spec.workdir.as_deref().unwrap_or(&dir).display()
            ),
        ];
        if let Some(p) = &self.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &spec.account {
            args.push(format!("--comment=gigafab allocation {a}"));
            // a tenant's job: the allocation's Slurm account, associated
            // with the job's POSIX account
            if let Some(acc) = &account {
                let slurm_acct = self.slurm_account(a);
                if self.ensure_association(id, &slurm_acct, &acc.name, spec.grant_gpu_minutes) {
                    args.push(format!("--account={slurm_acct}"));
                }
            }
        }
        if let Some(t) = &spec.accel_type {
            let slice = spec.accelerators.first().and_then(|a| a.slice.as_ref());
            args.extend(match slice {
                Some(s) => slice_gres_args(t, s),
                None => gres_args(t, spec.gpus.max(1), spec.per_node),
            });
        }
        if spec.serve_port.is_some() {
            // it listens on the node's network: no other user's job may
            // share its nodes and take its port first
            args.push("--exclusive=user".into());
        }
        args.push(script.display().to_string());
        let out = self.run_as(id, "sbatch", args, account.as_ref())?;
        if !out.success {
            return Err(failed(id, "sbatch refused the job", &out));
        }
        parse_sbatch(&out.stdout).ok_or_else(|| ExecError::Launch {
            job: id,
            message: format!("unexpected sbatch output `{}`", out.stdout.trim()),
        })
    }

    fn poll(&self, job_id: i64, handle: &str) -> Result<RunStatus, ExecError> {
        match self.find(job_id, handle)? {
            Some(j) => Ok(status_of(&j)),
            None => Ok(RunStatus::Lost {
                message: format!("Slurm no longer knows job {handle}"),
            }),
        }
    }

    fn poll_all(&self, runs: &[(i64, String)]) -> Vec<Result<RunStatus, ExecError>> {
        match runs {
            [] => return Vec::new(),
            [(id, h)] => return vec![self.poll(*id, h)],
            _ => {}
        }
        let first = runs[0].0;
        let ids = runs
            .iter()
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>()
            .join(",");
        // one squeue for every run: queued, running, or ended recently
        let q = match self.squeue_all_states(first, &ids) {
            Ok(q) if q.success => q,
            Ok(q) => {
                return runs
                    .iter()
                    .map(|r| Err(failed(r.0, "squeue", &q)))
                    .collect();
            }
            Err(e) => {
                let message = e.to_string();
                return runs
                    .iter()
                    .map(|r| {
                        Err(ExecError::Launch {
                            job: r.0,
                            message: message.clone(),
                        })
                    })
                    .collect();
            }
        };
        // those still queued or running; the ended ones are asked of
        // accounting (a failure's exit code, the length a run is charged)
        let (mut known, ended): (HashMap<String, SlurmJob>, HashMap<String, SlurmJob>) =
            parse_squeue(&q.stdout)
                .into_iter()
                .map(|j| (j.id.clone(), j))
                .partition(|(_, j)| status_of(j) == RunStatus::Running);
        // one sacct for those slurmctld no longer holds, or that ended
        let gone: Vec<&str> = runs
            .iter()
            .map(|r| r.1.as_str())
            .filter(|h| !known.contains_key(*h))
            .collect();
        let mut acct_answered = false;
        if !gone.is_empty()
            && let Some(v) = self.sacct(first, "-j", &gone.join(","))
        {
            acct_answered = true;
            for j in v {
                if gone.contains(&j.id.as_str()) {
                    known.insert(j.id.clone(), j);
                }
            }
        }
        // not in accounting (yet): an accounting that answers is waited for
        // a while; without one, what squeue said of the ended ones (but a
        // failure, whose exit code only accounting has, is left to the
        // controller's memory)
        for (h, mut j) in ended {
            if known.contains_key(&h) {
                self.recorded(&h);
                continue;
            }
            if acct_answered && self.awaits_accounting(&h) {
                j.state = "COMPLETING".into();
                known.insert(h, j);
            } else if j.state != "FAILED" {
                known.insert(h, j);
            }
        }
        runs.iter()
            .map(|(id, h)| match known.get(h) {
                Some(j) => Ok(status_of(j)),
                // not in accounting (yet): the controller's memory, run by run
                None => match self.controller_memory(*id, h)? {
                    Some(j) => Ok(status_of(&j)),
                    None => Ok(RunStatus::Lost {
                        message: format!("Slurm no longer knows job {h}"),
                    }),
                },
            })
            .collect()
    }

    fn cancel(&self, job_id: i64, handle: &str) -> Result<(), ExecError> {
        let out = self.run(job_id, "scancel", vec![handle.to_string()])?;
        if !out.success {
            return Err(failed(job_id, "scancel", &out));
        }
        Ok(())
    }

    fn adopt(
        &self,
        job_id: i64,
        handle: Option<&str>,
    ) -> Result<(Option<String>, RunStatus), ExecError> {
        let found = match handle {
            Some(h) => self.find(job_id, h)?,
            None => self.find_by_name(job_id)?,
        };
        Ok(match found {
            Some(j) => (Some(j.id.clone()), status_of(&j)),
            None => (
                None,
                RunStatus::Lost {
                    message: "Slurm has no job by that id or name".into(),
                },
            ),
        })
    }

    fn extend(&self, job_id: i64, handle: &str, limit_s: u64) -> Result<(), ExecError> {
        let minutes = limit_s.div_ceil(60).max(1);
        let o = self.run(
            job_id,
            "scontrol",
            vec![
                "update".into(),
                format!("JobId={handle}"),
                format!("TimeLimit={minutes}"),
            ],
        )?;
        if o.success {
            Ok(())
        } else {
            Err(failed(job_id, "scontrol update TimeLimit", &o))
        }
    }

    fn provision(&self, alloc: &str, grant: u64, users: &[String]) -> Result<(), ExecError> {
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        self.associate(0, &self.slurm_account(alloc), &users, Some(grant))
            .map_err(|message| ExecError::Transient { job: 0, message })
    }

    /// A replica on a compute node listens on all its addresses (it asks
    /// every request for its own key); the gateway reaches it at the
    /// node's address.
    fn serve_host(&self, _spec: &LaunchSpec) -> &'static str {
        "0.0.0.0"
    }

    /// A shell in the running Slurm job: `srun --jobid=ID --overlap --pty`
    /// run as the job's own user (Slurm's, the one it runs as) on a
    /// pseudo-terminal of the server's, so that the shell runs on the
    /// job's node, in its allocation and cgroup.
    fn attach(
        &self,
        job_id: i64,
        handle: &str,
        rows: u16,
        cols: u16,
    ) -> Result<std::os::fd::OwnedFd, ExecError> {
        let fail = |message: String| ExecError::Launch {
            job: job_id,
            message,
        };
        if handle.is_empty() || !handle.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(format!("job {job_id}: not a Slurm job id `{handle}`")));
        }
        let out = self.run(
            job_id,
            "squeue",
            vec![
                "-h".into(),
                "-j".into(),
                handle.into(),
                "-o".into(),
                "%u|%T".into(),
            ],
        )?;
        let line = out.stdout.lines().next().unwrap_or("").trim().to_string();
        let (user, state) = line.split_once('|').unwrap_or(("", ""));
        if !out.success || state != "RUNNING" {
            return Err(fail(format!(
                "job {job_id} does not run in Slurm now ({})",
                if state.is_empty() {
                    "not in squeue"
                } else {
                    state
                }
            )));
        }
        // the job's own user: the server's (one account for all), or a
        // tenant's account
        let account = if user == crate::posix::current_user() {
            None
        } else {
            Some(crate::posix::lookup(user).map_err(fail)?)
        };
        let (master, tty) =
            crate::attach::open_pty(rows, cols).map_err(|e| fail(format!("no terminal: {e}")))?;
        let shell = if Path::new("/bin/bash").exists() {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let args = vec![
            format!("--jobid={handle}"),
            "--overlap".into(),
            "--pty".into(),
            "--nodes=1".into(),
            "--ntasks=1".into(),
            format!("--chdir={}", self.job_dir(job_id).display()),
            shell.into(),
            "-l".into(),
        ];
        let mut child = self
            .cli
            .spawn_on_tty("srun", &args, account.as_ref(), &tty)
            .map_err(|e| fail(format!("cannot start `srun --pty`: {e}")))?;
        drop(tty);
        // reaped when the shell ends (its terminal closed)
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(master)
    }

    /// A Slurm job's directory is on the file system the server shares
    /// with the nodes (its script and logs are there): browsed from here,
    /// as its account; where every job runs as the server's user, read
    /// only (the directory holds the server's own files).
    fn files_root(
        &self,
        job_id: i64,
        _handle: Option<&str>,
        workdir: Option<&str>,
        as_account: bool,
    ) -> Option<crate::files::FilesRoot> {
        Some(match workdir {
            Some(w) if as_account => crate::files::FilesRoot {
                dir: PathBuf::from(w),
                writable: true,
                counted: false,
            },
            _ => crate::files::FilesRoot {
                dir: self.job_dir(job_id),
                writable: as_account,
                counted: false,
            },
        })
    }

    /// The node the job runs on (its first), at its `NodeAddr`.
    fn reach(&self, job_id: i64, handle: &str, port: u16) -> Result<crate::Reach, ExecError> {
        let run = |program: &str, args: &[&str]| -> Result<String, ExecError> {
            let out = self.run(
                job_id,
                program,
                args.iter().map(|a| a.to_string()).collect(),
            )?;
            if out.success {
                Ok(out.stdout)
            } else {
                Err(failed(job_id, program, &out))
            }
        };
        let nodes = run("squeue", &["-h", "-j", handle, "-o", "%N"])?;
        let nodes = nodes.trim();
        if nodes.is_empty() || nodes == "(null)" {
            return Err(ExecError::Transient {
                job: job_id,
                message: "not on a node yet".into(),
            });
        }
        let first = run("scontrol", &["show", "hostnames", nodes])?;
        let first = first.lines().next().unwrap_or(nodes).trim().to_string();
        let shown = run("scontrol", &["show", "node", &first, "-o"])?;
        let f = scontrol_fields(shown.lines().next().unwrap_or(""));
        let addr = f
            .iter()
            .find(|(k, _)| k == "NodeAddr")
            .map_or(first.as_str(), |(_, v)| v.as_str());
        Ok(crate::Reach::Tcp(if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        }))
    }

    fn log_paths(&self, job_id: i64) -> (PathBuf, PathBuf) {
        let d = self.job_dir(job_id);
        (d.join("stdout.log"), d.join("stderr.log"))
    }

    /// `scontrol update nodename=N state=drain reason=R` (or
    /// `state=resume`): the node takes no new Slurm job; running ones end.
    fn drain_node(
        &self,
        _site: Option<&str>,
        node: &str,
        reason: &str,
        drain: bool,
    ) -> Result<(), ExecError> {
        let mut args = vec!["update".to_string(), format!("nodename={node}")];
        if drain {
            args.push("state=drain".into());
            // one line, Slurm's quoting is the argument itself (no shell)
            let r: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            args.push(format!("reason={r}"));
        } else {
            args.push("state=resume".into());
        }
        let out = self.run(0, "scontrol", args)?;
        if out.success {
            Ok(())
        } else {
            Err(ExecError::Transient {
                job: 0,
                message: format!("scontrol update nodename={node}: {}", out.stderr.trim()),
            })
        }
    }
}

/// A gigafab factory (TOML) describing the GPU nodes Slurm reports: one
/// pool per (GPU type, GPUs per node, CPUs, memory), one site. A node with
/// several GPU types counts in one pool per type, its CPUs and memory
/// shared among them in proportion to their GPUs. Types outside gigafab's
/// catalog are declared under `[[accelerators]]` with unknown power
/// figures (0 W) for the operator to fill in. Nodes without GPUs are left
/// out (counted in a comment).
/// What a GRES type is a slice of: (accelerator type, slice name, slices
/// per accelerator), for `h100-1g.10gb`: ("h100", "1g.10gb", 7).
pub type SliceOfType<'a> = dyn Fn(&str) -> Option<(String, String, u32)> + 'a;

pub fn factory_toml(
    nodes: &[SlurmNode],
    name: &str,
    site: &str,
    known: &dyn Fn(&str) -> bool,
    slice: &SliceOfType<'_>,
) -> String {
    // a MIG or partition GRES type (`h100-1g.10gb`: 7 per GPU) of a known
    // accelerator, in a count that makes whole GPUs
    let shared_of = |t: &str, c: u32| {
        slice(t).filter(|(parent, _, per)| *per > 0 && c.is_multiple_of(*per) && known(parent))
    };
    let mut groups: std::collections::BTreeMap<(String, u32, u32, u64), u32> = Default::default();
    let mut no_gpu = 0;
    for n in nodes {
        if n.gpus.is_empty() {
            no_gpu += 1;
        }
        // a node with several GPU types is one node per type: its CPUs
        // and memory are shared among them in proportion to their GPUs
        // (the first type takes what division leaves), never claimed twice
        // a slice type weighs the GPUs it makes (7 1g.10gb: one GPU)
        let weight = |t: &str, c: u32| match shared_of(&t.to_ascii_lowercase(), c) {
            Some((_, _, per)) => c as u64 * 1000 / per as u64,
            None => c as u64 * 1000,
        };
        let total: u64 = n.gpus.iter().map(|(t, c)| weight(t, *c)).sum();
        // each type its share, rounded down; what rounding leaves goes to
        // the heaviest type (the first of equals)
        let share = |x: u64, w: u64| x * w / total.max(1);
        let mut parts: Vec<(u64, u64)> = n
            .gpus
            .iter()
            .map(|(t, c)| {
                let w = weight(t, *c);
                (share(n.cpus as u64, w), share(n.real_memory_mb, w))
            })
            .collect();
        if let Some(heaviest) = (0..n.gpus.len())
            .rev()
            .max_by_key(|&i| weight(&n.gpus[i].0, n.gpus[i].1))
        {
            let (cpus, mem): (u64, u64) =
                parts.iter().fold((0, 0), |(a, b), (c, m)| (a + c, b + m));
            parts[heaviest].0 += n.cpus as u64 - cpus;
            parts[heaviest].1 += n.real_memory_mb - mem;
        }
        for ((t, c), (cpus, mem)) in n.gpus.iter().zip(parts) {
            *groups
                .entry((t.to_ascii_lowercase(), *c, cpus as u32, mem))
                .or_insert(0) += 1;
        }
    }
    let mut s = format!(
        "# Imported from Slurm (scontrol show node -o): {} nodes, {} without GPUs left out.\n\nname = \"{name}\"\n",
        nodes.len(),
        no_gpu
    );
    let mut unknown: Vec<&str> = groups
        .keys()
        .filter(|k| !known(&k.0) && shared_of(&k.0, k.1).is_none())
        .map(|k| k.0.as_str())
        .collect();
    unknown.dedup();
    for t in unknown {
        s.push_str(&format!(
            "\n[[accelerators]]\nid = \"{t}\"\nvendor = \"other\"\nmemory_gb = 0\nidle_watts = 0\npeak_watts = 0\nbilling_weight = 1\n"
        ));
    }
    s.push_str(&format!("\n[[sites]]\nname = \"{site}\"\n"));
    let mut used = std::collections::BTreeSet::new();
    for ((t, c, cpus, mem), nodes) in &groups {
        let mut pool = format!("{t}-x{c}");
        let mut k = 2;
        while !used.insert(pool.clone()) {
            pool = format!("{t}-x{c}-{k}");
            k += 1;
        }
        // a MIG or partition GRES type (`h100-1g.10gb`: 7 per GPU) is a
        // shared pool of its accelerator, when its count makes whole GPUs
        let (accel, count, slices) = match shared_of(t, *c) {
            Some((parent, name, per)) => (parent, c / per, format!("slices = \"{name}\"\n")),
            None => (t.clone(), *c, String::new()),
        };
        s.push_str(&format!(
            "\n[[sites.pools]]\nname = \"{pool}\"\naccelerator = \"{accel}\"\nnodes = {nodes}\naccelerators_per_node = {count}\ncpus_per_node = {cpus}\nmemory_gb_per_node = {}\n{slices}",
            (*mem as f64 / 1024.0).round()
        ));
    }
    s
}

/// Whether `path` looks like a Slurm installation's command directory.
pub fn has_slurm(bin_dir: Option<&Path>) -> bool {
    RealSlurm {
        bin_dir: bin_dir.map(Path::to_path_buf),
    }
    .run("sinfo", &["--version".to_string()])
    .is_ok_and(|o| o.success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sbatch_and_squeue() {
        assert_eq!(parse_sbatch("1234\n"), Some("1234".into()));
        assert_eq!(parse_sbatch("77;cluster\n"), Some("77".into()));
        assert_eq!(parse_sbatch("Submitted batch job 5"), None);
        assert_eq!(parse_sbatch(""), None);
        let q = parse_squeue("12|gigafab-3|PENDING|Resources\n13|x|RUNNING|None\nbad\n");
        assert_eq!(q.len(), 2);
        assert_eq!(
            (q[0].id.as_str(), q[0].state.as_str(), q[0].reason.as_str()),
            ("12", "PENDING", "Resources")
        );
        assert_eq!(status_of(&q[1]), RunStatus::Running);
    }

    #[test]
    fn sacct_and_scontrol_states() {
        let text = "20|gigafab-9|COMPLETED|0:0\n20.batch|batch|COMPLETED|0:0\n21|gigafab-10|FAILED|3:0\n22|x|CANCELLED by 0|0:15\n23|y|TIMEOUT|0:0\n24|z|NODE_FAIL|0:0\n";
        let s = parse_sacct_states(text);
        assert_eq!(s.len(), 5, "steps are skipped");
        let outcome = |j: &SlurmJob| match status_of(j) {
            RunStatus::Exited(r) => (r.outcome, r.exit_code),
            other => panic!("{other:?}"),
        };
        assert_eq!(outcome(&s[0]), (Outcome::Completed, Some(0)));
        assert_eq!(outcome(&s[1]), (Outcome::Failed, Some(3)));
        assert_eq!(outcome(&s[2]).0, Outcome::Cancelled);
        assert_eq!(outcome(&s[3]).0, Outcome::TimedOut);
        assert_eq!(outcome(&s[4]).0, Outcome::Failed);
        // with ElapsedRaw: the length a run is charged
        let s = parse_sacct_states("25|g|COMPLETED|0:0|137\n26|h|COMPLETED|0:0|\n");
        let elapsed = |j: &SlurmJob| match status_of(j) {
            RunStatus::Exited(r) => r.elapsed_s,
            other => panic!("{other:?}"),
        };
        assert_eq!((elapsed(&s[0]), elapsed(&s[1])), (Some(137), None));
        let j = parse_scontrol_job(
            "JobId=31 JobName=gigafab-4 UserId=root(0) JobState=COMPLETED Reason=None Dependency=(null) ExitCode=2:0 RunTime=00:00:01\n",
        )
        .unwrap();
        assert_eq!(
            (j.id.as_str(), j.state.as_str(), j.exit),
            ("31", "COMPLETED", Some((2, 0)))
        );
        assert_eq!(
            parse_scontrol_job("slurm_load_jobs error: Invalid job id specified"),
            None
        );
    }

    #[test]
    fn nodes_and_gres() {
        assert_eq!(
            parse_gres("gpu:h100:4,gpu:mi300x:4(S:0-1)"),
            vec![("h100".into(), 4), ("mi300x".into(), 4)]
        );
        assert_eq!(parse_gres("gpu:2,mps:100"), vec![("gpu".into(), 2)]);
        assert_eq!(parse_gres("(null)"), vec![]);
        let n = parse_scontrol_nodes(
            "NodeName=n1 Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=2 CPULoad=0.1 AvailableFeatures=(null) Gres=gpu:h100:4,gpu:mi300x:4 NodeAddr=n1 RealMemory=20000 State=IDLE Partitions=gpu,debug\nNodeName=n2 CPUTot=64 Gres=(null) RealMemory=1 State=DOWN+NOT_RESPONDING\n",
        );
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].cpus, 2);
        assert_eq!(n[0].gpus, vec![("h100".into(), 4), ("mi300x".into(), 4)]);
        assert_eq!(n[0].partitions, vec!["gpu", "debug"]);
        assert!(n[1].gpus.is_empty());
    }

    #[test]
    fn factory_from_nodes() {
        let n = parse_scontrol_nodes(
            "NodeName=a CPUTot=2 Gres=gpu:h100:4,gpu:mi300x:4 RealMemory=20480 State=IDLE\nNodeName=b CPUTot=2 Gres=gpu:h100:4 RealMemory=20480 State=IDLE\nNodeName=c CPUTot=8 Gres=gpu:a100:8 RealMemory=1024 State=IDLE\nNodeName=d CPUTot=8 Gres=(null) RealMemory=1 State=IDLE\n",
        );
        let t = factory_toml(&n, "lab", "here", &|t| t != "a100", &|_| None);
        assert!(t.contains("4 nodes, 1 without GPUs"), "{t}");
        assert!(
            t.contains("name = \"mi300x-x4\"\naccelerator = \"mi300x\"\nnodes = 1"),
            "{t}"
        );
        assert!(t.contains("[[accelerators]]\nid = \"a100\""), "{t}");
        assert!(t.contains("memory_gb_per_node = 20"), "{t}");
        // node a's 2 CPUs and 20 GiB are split between its two GPU types,
        // not claimed by each: the pools hold what the nodes have
        let field = |k: &str| -> Vec<u64> {
            t.lines()
                .filter_map(|l| l.strip_prefix(k))
                .map(|v| v.trim_start_matches(" = ").parse().unwrap())
                .collect()
        };
        // Σ nodes × per-node `k` over the pools
        let total = |k: &str| -> u64 {
            field("nodes")
                .iter()
                .zip(field(k))
                .map(|(n, c)| n * c)
                .sum()
        };
        let cpus = total("cpus_per_node");
        assert_eq!(cpus, 2 + 2 + 8, "{t}");
        let gpus = total("accelerators_per_node");
        assert_eq!(gpus, 8 + 4 + 8, "{t}");
        assert!(
            t.contains("accelerator = \"mi300x\"\nnodes = 1\naccelerators_per_node = 4\ncpus_per_node = 1\nmemory_gb_per_node = 10"),
            "{t}"
        );
    }

    /// Issue 31: a MIG GRES type named as gigafab names its slice type
    /// (`h100-1g.10gb`) is imported as a shared pool of its GPUs, weighed
    /// as the GPUs it makes when the node's CPUs and memory are split.
    #[test]
    fn mig_gres_types_become_shared_pools() {
        let n = parse_scontrol_nodes(
            "NodeName=a CPUTot=16 Gres=gpu:h100:2,gpu:h100-1g.10gb:14 RealMemory=30720 State=IDLE\nNodeName=b CPUTot=4 Gres=gpu:h100-3g.40gb:3 RealMemory=1024 State=IDLE\n",
        );
        let slice = |t: &str| match t {
            "h100-1g.10gb" => Some(("h100".to_string(), "1g.10gb".to_string(), 7)),
            "h100-3g.40gb" => Some(("h100".to_string(), "3g.40gb".to_string(), 2)),
            _ => None,
        };
        let t = factory_toml(&n, "lab", "here", &|t| t == "h100", &slice);
        // 14 instances of 1g.10gb: 2 GPUs in 7 slices each
        assert!(
            t.contains("name = \"h100-1g.10gb-x14\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\ncpus_per_node = 8\nmemory_gb_per_node = 15\nslices = \"1g.10gb\""),
            "{t}"
        );
        // 2 whole GPUs: half of the node's 4 GPUs' worth
        assert!(
            t.contains("accelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\ncpus_per_node = 8\nmemory_gb_per_node = 15\n\n"),
            "{t}"
        );
        // 3 of 3g.40gb do not make whole GPUs (2 per GPU): left as a type
        // of its own, not guessed at
        assert!(t.contains("[[accelerators]]\nid = \"h100-3g.40gb\""), "{t}");
        assert!(!t.contains("slices = \"3g.40gb\""), "{t}");
    }

    #[test]
    fn transient_errors() {
        assert!(transient_error(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!transient_error(
            "sbatch: error: invalid partition specified: nope"
        ));
        let out = CmdOutput {
            success: false,
            stdout: String::new(),
            stderr: "squeue: error: Socket timed out on send/recv operation".into(),
        };
        assert!(failed(1, "squeue", &out).is_transient());
    }

    /// sacctmgr answers "add user" with "doesn't exist" the first
    /// `missing` times (an account just added that slurmdbd does not show
    /// yet), and records each call.
    struct LaggingDbd {
        missing: std::sync::Mutex<u32>,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl SlurmCli for LaggingDbd {
        fn run(&self, program: &str, args: &[String]) -> std::io::Result<CmdOutput> {
            let line = format!("{program} {}", args.join(" "));
            self.calls.lock().unwrap().push(line.clone());
            let mut missing = self.missing.lock().unwrap();
            if line.contains(" add user ") && *missing > 0 {
                *missing -= 1;
                return Ok(CmdOutput {
                    success: false,
                    stdout: " This account 'x' doesn't exist.\n        Contact your admin to add this account.\n Nothing new added.\n".into(),
                    stderr: String::new(),
                });
            }
            Ok(CmdOutput {
                success: true,
                stdout: String::new(),
                stderr: String::new(),
            })
        }
    }

    impl SlurmCli for std::sync::Arc<LaggingDbd> {
        fn run(&self, program: &str, args: &[String]) -> std::io::Result<CmdOutput> {
            self.as_ref().run(program, args)
        }
    }

    fn lagging(missing: u32) -> (std::sync::Arc<LaggingDbd>, SlurmExecutor) {
        let dbd = std::sync::Arc::new(LaggingDbd {
            missing: std::sync::Mutex::new(missing),
            calls: Default::default(),
        });
        let exec = SlurmExecutor::new(
            Box::new(dbd.clone()),
            std::env::temp_dir(),
            None,
            "t".into(),
        );
        (dbd, exec)
    }

    #[test]
    fn an_account_slurmdbd_does_not_show_yet_is_waited_for() {
        let (dbd, exec) = lagging(2);
        exec.provision("7", 60, &["alice".into()]).unwrap();
        let adds = |dbd: &LaggingDbd| {
            dbd.calls
                .lock()
                .unwrap()
                .iter()
                .filter(|c| c.contains("add user alice Account=gigafab-t-a7"))
                .count()
        };
        assert_eq!(adds(&dbd), 3);
        // made: not asked again
        exec.provision("7", 60, &["alice".into()]).unwrap();
        assert_eq!(adds(&dbd), 3);
    }

    #[test]
    fn nothing_new_added_for_a_missing_account_is_an_error() {
        let (dbd, exec) = lagging(100);
        let e = exec.provision("7", 60, &["alice".into()]).unwrap_err();
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("add user alice"), "{e}");
        // not taken as made: the next provisioning asks again
        let before = dbd.calls.lock().unwrap().len();
        let _ = exec.provision("7", 60, &["alice".into()]);
        assert!(
            dbd.calls.lock().unwrap()[before..]
                .iter()
                .any(|c| c.contains("add user alice"))
        );
    }

    #[test]
    fn quoting_and_gres_requests() {
        assert_eq!(sh_quote("abc"), "abc");
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
        assert_eq!(gres_args("h100", 2, 8), ["--nodes=1", "--gres=gpu:h100:2"]);
        let slice = |kind: &str| crate::AssignedSlice {
            kind: kind.into(),
            name: "x".into(),
            slot: 0,
            of: 4,
            memory_mib: 1,
            uuid: None,
            gpu_instance: None,
            compute_instance: None,
            gpu_minor: None,
            device_mode: None,
        };
        assert_eq!(
            slice_gres_args(
                "h100-mps-4",
                &crate::AssignedSlice {
                    name: "mps-4".into(),
                    ..slice("mps")
                }
            ),
            ["--nodes=1", "--gres=shard:h100:1"]
        );
        assert_eq!(
            slice_gres_args("h100-1g.10gb", &slice("mig")),
            ["--nodes=1", "--gres=gpu:h100-1g.10gb:1"]
        );
        assert_eq!(gres_args("h100", 16, 8), ["--nodes=2", "--gres=gpu:h100:8"]);
        assert_eq!(gres_args("h100", 12, 8), ["--nodes=2", "--gpus=h100:12"]);
    }
}
