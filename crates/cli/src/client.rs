//! Client commands: talk to a running `gigafab serve` over its HTTP API
//! (docs/api.md).

mod allocs;
mod attach;
mod catalog;
mod directives;
mod duration;
mod endpoints;
mod files;
mod fleet;
mod fmt;
pub mod gateway;
mod http;
mod jobs;
mod render;
mod sessions;
mod tenancy;

use allocs::*;
use fleet::*;
pub use jobs::ExitStatus;
use jobs::*;
use tenancy::*;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use futures_util::StreamExt;
use http::{Api, DEFAULT_SERVER, Reply};
use serde_json::Value;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;

/// Connection options shared by every client command.
#[derive(Args, Clone, Debug, Default)]
pub struct Conn {
    /// URL of the gigafab server [env: GIGAFAB_SERVER] [default:
    /// http://127.0.0.1:8080].
    #[arg(long, value_name = "URL", help_heading = "Connection")]
    server: Option<String>,
    /// API token (`gf_...`) [env: GIGAFAB_TOKEN].
    #[arg(long, value_name = "TOKEN", help_heading = "Connection")]
    token: Option<String>,
}

impl Conn {
    /// The server URL: `--server`, else `GIGAFAB_SERVER`, else the default.
    fn server(&self) -> String {
        self.server
            .clone()
            .or_else(|| env_var("GIGAFAB_SERVER"))
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
    }

    /// The token: `--token`, else `GIGAFAB_TOKEN`.
    fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| env_var("GIGAFAB_TOKEN"))
    }

    fn api(&self) -> Result<Api> {
        Api::new(&self.server(), self.token().as_deref())
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// How a client command prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned human-readable columns.
    #[default]
    Table,
    /// The server's JSON answer, pretty-printed.
    Json,
}

/// Options shared by every client command: connection and output format.
#[derive(Args, Clone, Debug, Default)]
pub struct Global {
    #[command(flatten)]
    conn: Conn,
    /// Output format: aligned columns or the server's JSON.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// Commands that talk to a running `gigafab serve`.
#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Manage organisations (tenants).
    #[command(subcommand)]
    Org(OrgCmd),
    /// Manage projects of organisations.
    #[command(subcommand)]
    Project(ProjectCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Create and revoke API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage allocations (GPU-hour grants of organisations).
    #[command(subcommand)]
    Alloc(AllocCmd),
    /// Submit a job: `gigafab submit --gpus 2 --type h100 -- python train.py`.
    Submit(SubmitArgs),
    /// List jobs, newest first.
    Jobs(JobsArgs),
    /// Show one job with its event history.
    Job(JobArgs),
    /// Cancel jobs (queued ones at once, running ones once stopped).
    Cancel(CancelArgs),
    /// Print a job's output; with --follow, stream it until the job ends.
    Logs(LogsArgs),
    /// Show GPU-hour usage of allocations.
    Usage(ListArgs),
    /// Show the fleet's nodes, or drain and resume them.
    Fleet(FleetArgs),
    /// Show who the token belongs to.
    Whoami(ListArgs),
    /// The data and model catalog: push, list, show, verify, lineage,
    /// aliases, grants.
    #[command(subcommand)]
    Catalog(catalog::CatalogCmd),
    /// Model endpoints: a catalog model served as an OpenAI-compatible,
    /// autoscaled service; its API keys and events.
    #[command(subcommand)]
    Endpoint(endpoints::EndpointCmd),
    /// Interactive sessions: JupyterLab, a terminal or a site's app run as
    /// a job and opened in the browser through the server.
    #[command(subcommand)]
    Session(sessions::SessionCmd),
    /// A shell in a running job of yours, on this terminal: as the job's
    /// account, in its cgroup and namespaces. Exit it to detach.
    Attach(attach::AttachArgs),
    /// Files as your account sees them: your organisation's project space,
    /// or a job's working directory (--job): ls, get, put.
    #[command(subcommand)]
    Files(files::FilesCmd),
}

/// Options of commands that only read.
#[derive(Args, Clone, Debug, Default)]
pub struct ListArgs {
    #[command(flatten)]
    g: Global,
}

/// Categories of organisations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Category {
    /// A start-up.
    Startup,
    /// A small or medium enterprise.
    Sme,
    /// A large industrial company.
    Industry,
    /// A university or research institute.
    Academia,
    /// A public administration.
    Public,
}

/// `gigafab org ...`.
#[derive(Subcommand, Debug)]
pub enum OrgCmd {
    /// Create an organisation (admin).
    Create {
        /// Name of the organisation (unique).
        name: String,
        /// Category of the organisation.
        #[arg(long, value_enum)]
        category: Category,
        #[command(flatten)]
        g: Global,
    },
    /// List organisations (others than admins and operators see their own).
    List(ListArgs),
}

/// `gigafab project ...`.
#[derive(Subcommand, Debug)]
pub enum ProjectCmd {
    /// Create a project in an organisation (admin, owner).
    Create {
        /// Name of the project.
        name: String,
        /// Organisation of the project (name).
        #[arg(long)]
        org: String,
        /// A user of the organisation (name) who may run jobs in it; repeat
        /// for several. Without any, every member of the organisation may.
        #[arg(long = "member")]
        members: Vec<String>,
        #[command(flatten)]
        g: Global,
    },
    /// List projects with their members.
    List(ListArgs),
    /// Add a member to a project (admin, owner).
    AddMember {
        /// Project id.
        project: i64,
        /// User id (a user of the project's organisation).
        user: i64,
        #[command(flatten)]
        g: Global,
    },
    /// Remove a member from a project (admin, owner).
    RemoveMember {
        /// Project id.
        project: i64,
        /// User id.
        user: i64,
        #[command(flatten)]
        g: Global,
    },
}

/// Roles of users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Manages the users, projects and jobs of their organisation.
    Owner,
    /// Submits jobs and cancels their own.
    Member,
    /// May do everything.
    Admin,
    /// Reads everything, drains and resumes nodes, cancels any job.
    Operator,
}

/// `gigafab user ...`.
#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Create a user and print their first token (shown once).
    Create {
        /// Name of the user (unique).
        name: String,
        /// Organisation of the user (name; required for owners and members).
        #[arg(long)]
        org: Option<String>,
        /// Role of the user.
        #[arg(long, value_enum, default_value_t = Role::Member)]
        role: Role,
        /// Where notifications go.
        #[arg(long)]
        email: Option<String>,
        /// The `sub` of the user's identity at the site's OpenID Connect
        /// provider: signing in to the portal there signs in as this user.
        #[arg(long)]
        oidc_subject: Option<String>,
        #[command(flatten)]
        g: Global,
    },
    /// List users (admin, operator, owner); tokens are never listed.
    List(ListArgs),
    /// Disable a user: every token of theirs stops working, no new one can
    /// be made (admin; owner of the user's organisation).
    Disable {
        /// Id of the user.
        id: u64,
        #[command(flatten)]
        g: Global,
    },
}

/// `gigafab token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Create a token and print it (shown once).
    Create {
        /// Id of the user the token is for [default: yourself] (admin, or
        /// owner of that user's organisation).
        #[arg(long, value_name = "ID")]
        user: Option<u64>,
        /// Days until the token expires (at most 3650).
        #[arg(long, value_name = "DAYS", default_value_t = 90.0)]
        expires_days: f64,
        #[command(flatten)]
        g: Global,
    },
    /// List live tokens: yours; an owner sees the organisation's; an admin
    /// all (ids, users, expiry; never the secrets).
    List(ListArgs),
    /// Revoke a token (admin, the token's user, or an owner of the user's
    /// organisation).
    Revoke {
        /// Id of the token.
        id: u64,
        #[command(flatten)]
        g: Global,
    },
}

/// `gigafab alloc ...`.
#[derive(Subcommand, Debug)]
pub enum AllocCmd {
    /// Grant GPU-hours to an organisation (admin); prints the allocation's id.
    Create {
        /// Organisation receiving the grant (name).
        #[arg(long)]
        org: String,
        /// GPU-hours granted (accelerators × hours).
        #[arg(long, value_name = "N", value_parser = parse_gpu_hours)]
        gpu_hours: f64,
        /// Days of validity [server default: 365].
        #[arg(long, value_name = "D")]
        days: Option<u32>,
        /// Start of validity, RFC 3339 (e.g. 2026-12-01T00:00:00Z) [server
        /// default: now].
        #[arg(long, value_name = "TIME")]
        valid_from: Option<String>,
        /// Quality-of-service priority of the allocation's jobs [server
        /// default: 0].
        #[arg(long, value_name = "P", allow_negative_numbers = true)]
        qos_priority: Option<i64>,
        /// Name of the allocation.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        g: Global,
    },
    /// List allocations.
    List(ListArgs),
}

/// Accelerator vendors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Vendor {
    /// NVIDIA GPUs.
    Nvidia,
    /// AMD GPUs.
    Amd,
}

/// `gigafab submit`.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Number of accelerators, started together as a gang [default: 1];
    /// or a share of one below 1 (`0.25`): a slice of a shared pool.
    #[arg(long, value_parser = directives::parse_gpus)]
    gpus: Option<directives::Gpus>,
    /// A slice of one accelerator with at least this much memory, GB.
    #[arg(long = "gpu-mem", value_name = "GB")]
    gpu_mem: Option<f64>,
    /// A named slice of one accelerator: a MIG profile (1g.10gb), an AMD
    /// partition (cpx), mps-N or ts-N.
    #[arg(long = "gpu-profile", value_name = "NAME")]
    gpu_profile: Option<String>,
    /// Accelerator type (e.g. h100); repeat to accept any of several types.
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Accelerator vendor.
    #[arg(long, value_enum)]
    vendor: Option<Vendor>,
    /// Minimum memory per accelerator, in GB.
    #[arg(long = "min-mem", value_name = "GB")]
    min_mem: Option<u32>,
    /// Memory limit of the job's processes, GB (enforced by its cgroup
    /// where the machine delegates the memory controller).
    #[arg(long, value_name = "GB")]
    memory: Option<f64>,
    /// CPU limit of the job's processes, in CPUs (its cgroup's cpu.max).
    #[arg(long, value_name = "N")]
    cpus: Option<f64>,
    /// Time limit, in Slurm's forms with Slurm's meaning: MM (a bare number
    /// is minutes), MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS; or with
    /// units: 90s, 30m, 2h, 1d, 1h30m; at most 30 days [server default: 1h].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_time_limit)]
    time: Option<u64>,
    /// Allocation to charge (id) [default: your only active allocation].
    #[arg(long, value_name = "ID")]
    allocation: Option<u64>,
    /// Name of the job.
    #[arg(long)]
    name: Option<String>,
    /// Project of the job (name).
    #[arg(long)]
    project: Option<String>,
    /// Priority of the job among its allocation's jobs [server default: 0].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    priority: Option<i64>,
    /// The job may be stopped and requeued to make room for other jobs.
    #[arg(long)]
    preemptible: bool,
    /// What the job trains or serves, as named in the server's throughput
    /// matrix (`ResNet-50 (batch size 64)`): the `hetero` policy places it
    /// where it runs best per billing unit.
    #[arg(long, value_name = "TYPE")]
    job_type: Option<String>,
    /// A catalog dataset the job reads, NAME@VERSION or NAME@ALIAS;
    /// repeatable. Its read-only directory is in $GIGAFAB_INPUT_<NAME>, and
    /// the job runs only where its residency allows.
    #[arg(long = "input", value_name = "NAME@VERSION")]
    inputs: Vec<String>,
    /// A catalog model the job reads, NAME@VERSION or NAME@ALIAS (as
    /// --input); repeatable.
    #[arg(long = "model", value_name = "NAME@ALIAS")]
    models: Vec<String>,
    /// A catalog model of your organisation: once the job completes, what
    /// it wrote in $GIGAFAB_OUTPUT_DIR becomes the model's next version.
    #[arg(long, value_name = "NAME")]
    output_model: Option<String>,
    /// Environment variable of the job, K=V; repeatable.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    env: Vec<(String, String)>,
    /// Jobs it waits for, in Slurm's form: afterok:ID[:ID...] (their
    /// success), afternotok:ID (their failure), afterany:ID (any end),
    /// joined by `,` (all must hold). It is held until then, and cancelled
    /// when that can no longer happen.
    #[arg(long, short = 'd', value_name = "KIND:ID")]
    dependency: Option<String>,
    /// A job array: task indexes 0-99, 1,3,5 or 0-30:10, then %N for at
    /// most N tasks at once (0-99%10); each task gets its index in
    /// $GIGAFAB_ARRAY_TASK_ID (and $SLURM_ARRAY_TASK_ID).
    #[arg(long, short = 'a', value_name = "INDEXES")]
    array: Option<String>,
    /// Working directory of the job; a relative path is taken from the
    /// current directory.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    #[command(flatten)]
    g: Global,
    /// The command to run and its arguments (after `--`). Options before
    /// the command are gigafab's: an unknown one is an error, never a
    /// command (as with sbatch). A batch script (a file here that starts
    /// with `#!`) is read as `sbatch` reads one: its `#SBATCH` and
    /// `#GIGAFAB` directives ask for what no flag asks for, and it runs in
    /// this directory unless --workdir or a directive says otherwise.
    #[arg(value_name = "CMD", required = true, trailing_var_arg = true)]
    command: Vec<String>,
}

/// Job states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum JobState {
    /// Waiting to start.
    Queued,
    /// Started and not ended.
    Running,
    /// Ended with exit code 0.
    Completed,
    /// Ended with an error.
    Failed,
    /// Stopped at its time limit.
    Timeout,
    /// Cancelled.
    Cancelled,
}

/// `gigafab jobs`.
#[derive(Args, Debug)]
pub struct JobsArgs {
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    state: Option<JobState>,
    /// Only jobs charged to this allocation (id).
    #[arg(long, value_name = "ID")]
    allocation: Option<u64>,
    /// Only jobs of this organisation (name).
    #[arg(long)]
    org: Option<String>,
    /// Only jobs of this user.
    #[arg(long)]
    user: Option<String>,
    /// Jobs per page, 1 to 1000 [server default: 100; with --all: 1000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
    /// List every page, not just the first.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    g: Global,
}

/// `gigafab job ID`.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// Id of the job.
    id: u64,
    #[command(flatten)]
    g: Global,
}

/// `gigafab cancel ID...`.
#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Ids of the jobs.
    #[arg(required = true, num_args = 1..)]
    ids: Vec<u64>,
    /// Each ID is a job array's (its first task's job id): cancel its
    /// tasks that have not ended, as `scancel` does with an array's id.
    #[arg(long)]
    array: bool,
    #[command(flatten)]
    g: Global,
}

/// `gigafab logs ID`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Id of the job.
    id: u64,
    /// Keep streaming until the job has ended.
    #[arg(short, long)]
    follow: bool,
    /// Print the job's standard error instead of its standard output.
    #[arg(long)]
    stderr: bool,
    #[command(flatten)]
    conn: Conn,
}

/// `gigafab fleet [drain|resume NODE]`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FleetArgs {
    #[command(subcommand)]
    cmd: Option<FleetCmd>,
    #[command(flatten)]
    g: Global,
}

/// `gigafab fleet ...`.
#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Drain a node: no new jobs start there, running ones finish (admin,
    /// operator).
    Drain(DrainArgs),
    /// Resume a drained node (admin, operator).
    Resume(NodeArgs),
    /// Write a factory file describing the GPU nodes of the Slurm cluster
    /// whose commands are on PATH (`scontrol show node -o`), so the twin and
    /// the server see the same machine.
    ImportSlurm(ImportSlurmArgs),
}

/// `gigafab fleet import-slurm`.
#[derive(Args, Debug)]
pub struct ImportSlurmArgs {
    /// Read `scontrol show node -o` output from this file instead of running it.
    #[arg(long)]
    from: Option<std::path::PathBuf>,
    /// Factory file to write (default: standard output).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Factory name.
    #[arg(long, default_value = "slurm")]
    name: String,
    /// Site name.
    #[arg(long, default_value = "slurm")]
    site: String,
}

/// A node of the fleet.
#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Name of the node.
    node: String,
    #[command(flatten)]
    g: Global,
}

/// `gigafab fleet drain NODE [--reason TEXT]`.
#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Name of the node.
    node: String,
    /// Why (one line): kept with the node and written to the audit log.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    g: Global,
}

fn parse_gpu_hours(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h > 0.0 => Ok(h),
        Ok(_) => Err(format!("GPU-hours '{s}' must be a positive number")),
        Err(_) => Err(format!("GPU-hours '{s}' is not a number")),
    }
}

/// Parses `K=V` (the value may be empty and contain `=`).
fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        Some(_) => Err(format!(
            "'{s}': the variable name before '=' is empty or has spaces"
        )),
        None => Err(format!("'{s}' is not K=V")),
    }
}

/// The command-line name of a value enum (`startup`, `member`, ...).
fn name_of<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// Runs a client command.
pub fn run(cmd: ClientCmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(dispatch(cmd));
    // a read of standard input still blocked (`attach`, its shell gone)
    // does not hold the command's end
    rt.shutdown_background();
    r
}

async fn dispatch(cmd: ClientCmd) -> Result<()> {
    match cmd {
        ClientCmd::Org(c) => org(c).await,
        ClientCmd::Project(c) => project(c).await,
        ClientCmd::User(c) => user(c).await,
        ClientCmd::Token(c) => token(c).await,
        ClientCmd::Alloc(c) => alloc(c).await,
        ClientCmd::Submit(a) => submit(a).await,
        ClientCmd::Jobs(a) => jobs(a).await,
        ClientCmd::Job(a) => job(a).await,
        ClientCmd::Cancel(a) => cancel(a).await,
        ClientCmd::Logs(a) => logs(a).await,
        ClientCmd::Usage(a) => {
            let r = a.g.conn.api()?.get(&["usage"], &[]).await?;
            show_as(&a.g, &r, render::usage)
        }
        ClientCmd::Fleet(a) => fleet(a).await,
        ClientCmd::Catalog(c) => catalog::run(c).await,
        ClientCmd::Endpoint(c) => endpoints::run(c).await,
        ClientCmd::Session(c) => sessions::run(c).await,
        ClientCmd::Attach(a) => attach::run(a).await,
        ClientCmd::Files(c) => files::run(c).await,
        ClientCmd::Whoami(a) => {
            let r = a.g.conn.api()?.get(&["whoami"], &[]).await?;
            show_as(&a.g, &r, render::whoami)
        }
    }
}

// ---- output ----------------------------------------------------------------

/// Writes bytes to stdout and flushes. Returns `false` when stdout is closed
/// (broken pipe), which is not an error: the reader has seen enough.
fn write_out(bytes: &[u8]) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Prints text on stdout (a closed stdout is not an error).
fn emit(text: &str) -> Result<()> {
    write_out(text.as_bytes()).map(|_| ())
}

/// Prints a human note on stderr (failures to do so are ignored).
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// Prints a reply: its JSON re-indented verbatim, or the table view of
/// the API contract's type it holds.
fn show_as<T: serde::de::DeserializeOwned>(
    g: &Global,
    r: &Reply,
    table: impl FnOnce(&T) -> String,
) -> Result<()> {
    match g.output {
        Format::Json => emit(&format!("{}\n", fmt::pretty_json(&r.raw))),
        Format::Table => emit(&table(&typed::<T>(&r.value)?)),
    }
}

/// The server's answer as the contract's type `T`.
fn typed<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T> {
    T::deserialize(v).map_err(|e| {
        anyhow::anyhow!(
            "the server's answer is not a {}: {e} (a server of another version?)",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("?")
        )
    })
}

// ---- commands --------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: ClientCmd,
    }

    fn parse(args: &[&str]) -> Result<ClientCmd, clap::Error> {
        Cli::try_parse_from(std::iter::once("gigafab").chain(args.iter().copied())).map(|c| c.cmd)
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_and_flag_is_documented() {
        use clap::CommandFactory;
        fn walk(c: &clap::Command, path: &str) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(a.get_help().is_some(), "{path} {id} has no doc comment");
            }
            for s in c.get_subcommands() {
                if s.get_name() == "help" {
                    continue;
                }
                assert!(
                    s.get_about().is_some(),
                    "{path} {} has no doc comment",
                    s.get_name()
                );
                walk(s, &format!("{path} {}", s.get_name()));
            }
        }
        walk(&Cli::command(), "gigafab");
    }

    fn submit_args(args: &[&str]) -> SubmitArgs {
        let mut all = vec!["submit"];
        all.extend_from_slice(args);
        match parse(&all).unwrap() {
            ClientCmd::Submit(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn submit_parses_into_the_contract_body() {
        let a = submit_args(&[
            "--gpus",
            "2",
            "--type",
            "h100",
            "--vendor",
            "nvidia",
            "--min-mem",
            "80",
            "--time",
            "1h30m",
            "--name",
            "train",
            "--project",
            "llm",
            "--priority",
            "-3",
            "--preemptible",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--output",
            "json",
            "--",
            "python",
            "-u",
            "train.py",
            "--lr",
            "3e-4",
        ]);
        assert_eq!(a.g.output, Format::Json);
        let b = serde_json::to_value(submit_body(&a, 3, Some("/w".into()))).unwrap();
        assert_eq!(
            b,
            json!({"allocation": 3, "gpus": 2, "command": ["python", "-u", "train.py", "--lr", "3e-4"],
                   "name": "train", "project": "llm", "type": "h100", "vendor": "nvidia",
                   "min_memory_gb": 80.0, "time_limit_s": 5400, "priority": -3, "preemptible": true,
                   "env": {"A": "1", "B": "x=y"}, "workdir": "/w"})
        );
        // Minimal form, command without `--`, several types.
        let a = submit_args(&["--type", "h100", "--type", "a100", "sleep", "10"]);
        assert_eq!(
            serde_json::to_value(submit_body(&a, 1, None)).unwrap(),
            json!({"allocation": 1, "gpus": 1, "command": ["sleep", "10"], "types": ["h100", "a100"]})
        );
        // A slice: a share below 1, a memory bound and a name.
        let a = submit_args(&[
            "--gpus",
            "0.25",
            "--gpu-mem",
            "10",
            "--gpu-profile",
            "1g.10gb",
            "--",
            "nvidia-smi",
        ]);
        assert_eq!(
            serde_json::to_value(submit_body(&a, 1, None)).unwrap(),
            json!({"allocation": 1, "gpus": 1, "gpu_share": 0.25, "gpu_memory_gb": 10.0,
                   "gpu_profile": "1g.10gb", "command": ["nvidia-smi"]})
        );
    }

    #[test]
    fn submit_rejects_bad_flags() {
        for bad in [
            &["--time", "2x", "--", "a"][..],
            &["--gpus", "0", "--", "a"],
            &["--gpus", "65537", "--", "a"],
            &["--gpus", "1.5", "--", "a"],
            &["--env", "NOEQUALS", "--", "a"],
            &["--env", "=v", "--", "a"],
            &["--vendor", "intel", "--", "a"],
            &["--time", "31d", "--", "a"],
            &["--gpus", "2"],
        ] {
            let mut all = vec!["submit"];
            all.extend_from_slice(bad);
            assert!(parse(&all).is_err(), "{bad:?} parsed");
        }
        let e = parse(&["submit", "--time", "1h30", "--", "a"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("has no unit"), "{e}");
    }

    #[test]
    fn fleet_is_a_group_with_a_default() {
        match parse(&["fleet", "--output", "json"]).unwrap() {
            ClientCmd::Fleet(FleetArgs { cmd: None, g }) => assert_eq!(g.output, Format::Json),
            other => panic!("{other:?}"),
        }
        match parse(&["fleet", "drain", "n1", "--server", "http://x:1"]).unwrap() {
            ClientCmd::Fleet(FleetArgs {
                cmd: Some(FleetCmd::Drain(n)),
                ..
            }) => {
                assert_eq!(n.node, "n1");
                assert_eq!(n.g.conn.server.as_deref(), Some("http://x:1"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["fleet", "resume", "n1"]).unwrap(),
            ClientCmd::Fleet(FleetArgs {
                cmd: Some(FleetCmd::Resume(_)),
                ..
            })
        ));
        assert!(parse(&["fleet", "--output", "json", "drain", "n1"]).is_err());
    }

    #[test]
    fn other_commands_parse() {
        assert!(matches!(
            parse(&["org", "create", "acme", "--category", "sme"]).unwrap(),
            ClientCmd::Org(OrgCmd::Create {
                category: Category::Sme,
                ..
            })
        ));
        assert!(parse(&["org", "create", "acme", "--category", "bank"]).is_err());
        match parse(&["user", "create", "bob", "--org", "acme"]).unwrap() {
            ClientCmd::User(UserCmd::Create { role, .. }) => assert_eq!(role, Role::Member),
            other => panic!("{other:?}"),
        }
        match parse(&["cancel", "1", "2", "3"]).unwrap() {
            ClientCmd::Cancel(c) => assert_eq!(c.ids, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cancel"]).is_err());
        match parse(&["logs", "7", "-f", "--stderr"]).unwrap() {
            ClientCmd::Logs(l) => assert!(l.follow && l.stderr && l.id == 7),
            other => panic!("{other:?}"),
        }
        match parse(&[
            "alloc",
            "create",
            "--org",
            "acme",
            "--gpu-hours",
            "1000",
            "--qos-priority",
            "-1",
        ])
        .unwrap()
        {
            ClientCmd::Alloc(AllocCmd::Create {
                gpu_hours,
                qos_priority,
                ..
            }) => {
                assert_eq!(gpu_hours, 1000.0);
                assert_eq!(qos_priority, Some(-1));
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["alloc", "create", "--org", "a", "--gpu-hours", "-5"]).is_err());
        assert!(parse(&["alloc", "create", "--org", "a", "--gpu-hours", "NaN"]).is_err());
        match parse(&["jobs", "--state", "queued", "--allocation", "3", "--all"]).unwrap() {
            ClientCmd::Jobs(j) => assert_eq!(
                jobs_query(&j),
                vec![
                    ("state", "queued".to_string()),
                    ("allocation", "3".to_string()),
                    ("limit", "1000".to_string())
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["jobs", "--limit", "1001"]).is_err());
        for ok in [
            &["whoami"][..],
            &["usage", "--output", "json"],
            &["job", "12"],
            &["token", "create", "--user", "4"],
            &["token", "revoke", "9"],
            &["project", "list"],
            &["user", "list"],
            &["alloc", "list"],
            &["org", "list", "--token", "gf_x"],
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
        }
    }

    #[test]
    fn user_bodies() {
        assert_eq!(
            serde_json::to_value(user_body("bob", Some("acme"), Role::Owner).unwrap()).unwrap(),
            json!({"name": "bob", "org": "acme", "role": "owner"})
        );
        assert_eq!(
            serde_json::to_value(user_body("root", None, Role::Admin).unwrap()).unwrap(),
            json!({"name": "root", "role": "admin"})
        );
        let e = user_body("bob", None, Role::Member)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--org is required"), "{e}");
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("A").is_err());
        assert!(parse_env("=1").is_err());
        assert!(parse_env("A B=1").is_err());
    }

    #[test]
    fn allocation_picking() {
        let a = |id: i64, state: &str| gigafab_api::Allocation {
            id: gigafab_api::AllocationId(id),
            org: "acme".into(),
            name: format!("a{id}"),
            granted_gpu_hours: 10.0,
            used_gpu_hours: 1.0,
            valid_from: "2026-01-01T00:00:00Z".into(),
            valid_until: "2027-01-01T00:00:00Z".into(),
            qos_priority: 0,
            state: state.into(),
            energy_kwh: 0.0,
            carbon_kg: None,
            project: None,
        };
        assert_eq!(
            pick_allocation(&[a(1, "expired"), a(2, "active")])
                .unwrap()
                .id
                .0,
            2
        );
        let e = pick_allocation(&[]).unwrap_err().to_string();
        assert!(e.contains("you have none"), "{e}");
        let e = pick_allocation(&[a(1, "expired"), a(2, "pending")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no active allocation") && e.contains("--allocation"),
            "{e}"
        );
        assert!(
            e.contains("1 a1 (org acme, expired") && e.contains("2 a2 (org acme, pending"),
            "{e}"
        );
        let e = pick_allocation(&[a(1, "active"), a(2, "active")])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("2 active allocations; pick one with --allocation ID"),
            "{e}"
        );
        assert!(e.contains("\n  1 a1") && e.contains("\n  2 a2"), "{e}");
    }

    #[test]
    fn cancel_lines() {
        let job = |state: &str| -> gigafab_api::Job {
            serde_json::from_value(json!({
                "id": 3, "name": "", "org": "acme", "project": null, "user": "ann",
                "allocation": 1, "gpus": 1,
                "accelerator": {"types": [], "vendor": null, "min_memory_gb": null},
                "job_type": null, "command": ["x"], "time_limit_s": 60, "priority": 0,
                "preemptible": false, "state": state, "reason": null, "exit_code": null,
                "submitted_at": "2026-01-01T00:00:00Z", "started_at": null, "ended_at": null,
                "accelerators": [], "gpu_hours": 0.0, "energy_kwh": 0.0, "avg_power_w": null,
                "carbon_g": null, "energy_source": null
            }))
            .unwrap()
        };
        assert_eq!(cancel_line(&job("cancelled")), "cancelled job 3\n");
        assert_eq!(
            cancel_line(&job("running")),
            "cancelling job 3 (still running; it stops shortly)\n"
        );
    }

    /// A one-thread fake server: answers each request from `route` and
    /// records `METHOD /path?query` and the body.
    type Seen = Arc<Mutex<Vec<(String, String)>>>;

    fn fake(route: fn(&str, &str) -> (u16, String)) -> (String, Seen) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Seen = Arc::default();
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let target = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
                let mut len = 0usize;
                let mut auth = String::new();
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).unwrap();
                    if h.trim().is_empty() {
                        break;
                    }
                    let lower = h.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if lower.starts_with("authorization:") {
                        auth = h["authorization:".len()..].trim().to_string();
                    }
                }
                let mut body = vec![0u8; len];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                let (status, answer) = if auth != "Bearer gf_test" {
                    (
                        401,
                        r#"{"error":"unauthorized","message":"bad token"}"#.to_string(),
                    )
                } else {
                    route(&target, &body)
                };
                log.lock().unwrap().push((target, body));
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(answer.as_bytes());
            }
        });
        (url, seen)
    }

    fn route(target: &str, body: &str) -> (u16, String) {
        let ok = |s: &str| (200, s.to_string());
        match target {
            "GET /api/v1/allocations" => ok(
                r#"{"items":[{"id":3,"org":"acme","name":"a3","granted_gpu_hours":10.0,"used_gpu_hours":0.0,"valid_from":"2026-01-01T00:00:00Z","valid_until":"2026-02-01T00:00:00Z","qos_priority":0,"state":"expired"}],"next":"3"}"#,
            ),
            "GET /api/v1/allocations?after=3" => ok(
                r#"{"items":[{"id":5,"org":"acme","name":"a5","granted_gpu_hours":10.0,"used_gpu_hours":0.0,"valid_from":"2026-01-01T00:00:00Z","valid_until":"2027-01-01T00:00:00Z","qos_priority":0,"state":"active"}],"next":null}"#,
            ),
            "POST /api/v1/jobs" => {
                let b: Value = serde_json::from_str(body).unwrap();
                (
                    201,
                    format!(
                        r#"{{"id":12,"state":"queued","allocation":{}}}"#,
                        b["allocation"]
                    ),
                )
            }
            "DELETE /api/v1/jobs/99" => (
                404,
                r#"{"error":"job_not_found","message":"no job 99"}"#.to_string(),
            ),
            _ => (
                404,
                r#"{"error":"not_found","message":"no route"}"#.to_string(),
            ),
        }
    }

    #[tokio::test]
    async fn submit_picks_the_active_allocation_across_pages() {
        let (url, seen) = fake(route);
        let api = Api::new(&url, Some("gf_test")).unwrap();
        let a = submit_args(&["--gpus", "2", "--", "sleep", "1"]);
        let (r, picked) = submit_job(&api, &a).await.unwrap();
        assert_eq!(r.value["id"], 12);
        assert_eq!(r.value["allocation"], 5);
        assert_eq!(picked.unwrap().id.0, 5);
        let seen = seen.lock().unwrap();
        let last = seen.last().unwrap();
        assert_eq!(last.0, "POST /api/v1/jobs");
        let body: Value = serde_json::from_str(&last.1).unwrap();
        assert_eq!(
            body,
            json!({"allocation": 5, "gpus": 2, "command": ["sleep", "1"]})
        );
    }

    #[tokio::test]
    async fn lists_merge_pages_only_when_asked() {
        let (url, _) = fake(route);
        let api = Api::new(&url, Some("gf_test")).unwrap();
        let one = api.get_list(&["allocations"], &[], false).await.unwrap();
        assert_eq!(one.items().len(), 1);
        assert!(
            one.raw.starts_with(r#"{"items":[{"id":3"#),
            "verbatim: {}",
            one.raw
        );
        let all = api.get_list(&["allocations"], &[], true).await.unwrap();
        assert_eq!(all.items().len(), 2);
        assert_eq!(all.value["next"], Value::Null);
        assert!(
            all.raw
                .starts_with(r#"{"items":[{"id":3,"org":"acme","name":"a3""#),
            "verbatim: {}",
            all.raw
        );
    }

    #[tokio::test]
    async fn error_answers_become_errors() {
        let (url, _) = fake(route);
        let api = Api::new(&url, Some("gf_test")).unwrap();
        let e = api.delete(&["jobs", "99"]).await.unwrap_err();
        assert_eq!(e.to_string(), "no job 99 (job_not_found)");
        let api = Api::new(&url, Some("gf_wrong")).unwrap();
        let e = api.get(&["whoami"], &[]).await.unwrap_err();
        assert_eq!(e.to_string(), "bad token (unauthorized)");
    }
}
