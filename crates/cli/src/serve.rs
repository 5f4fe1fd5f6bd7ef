//! `gigafab serve`: the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use gigafab_server::{CtlConfig, ServeConfig, store};

/// Every flag is also a key of the `--config` file (`data-dir = "/var/lib/gigafab"`
/// or `data_dir = ...`) and an environment variable (`GIGAFAB_DATA_DIR`);
/// a flag wins over the environment, which wins over the file.
#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (TOML): every flag below as a key.
    #[arg(long, env = "GIGAFAB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port of the HTTP API (port 0 picks a free one).
    #[arg(long, env = "GIGAFAB_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory of the embedded database and of the jobs' logs
    /// [default: $XDG_DATA_HOME/gigafab or ~/.local/share/gigafab].
    #[arg(long, env = "GIGAFAB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL instead of the embedded SQLite: postgres://user:pass@host/db.
    #[arg(long, env = "GIGAFAB_DATABASE", hide_env_values = true)]
    database: Option<String>,
    /// Factory file declaring the fleet [default: embedded local fleet of
    /// 4 virtual H100 and 4 virtual MI300X].
    #[arg(long, env = "GIGAFAB_FACTORY")]
    factory: Option<PathBuf>,
    #[command(flatten)]
    sched: crate::profile::SchedArgs,
    /// File holding the first admin token (instead of a random one shown
    /// once); the variable GIGAFAB_BOOTSTRAP_TOKEN gives the token itself.
    #[arg(long, env = "GIGAFAB_BOOTSTRAP_TOKEN_FILE")]
    bootstrap_token_file: Option<PathBuf>,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or
    /// reaches its time limit.
    #[arg(long, env = "GIGAFAB_KILL_GRACE", default_value_t = 10.0)]
    kill_grace: f64,
    /// Longest time between scheduling passes, milliseconds.
    #[arg(long, env = "GIGAFAB_TICK_MS", default_value_t = 1000)]
    tick_ms: u64,
    /// Time between checks of running jobs, milliseconds.
    #[arg(long, env = "GIGAFAB_POLL_MS", default_value_t = 200)]
    poll_ms: u64,
    /// Seconds between looks at the sites' grid files (a factory's `grid`):
    /// one that changed is read again, so a forecast file kept up to date
    /// by a grid operator's or Electricity Maps' feed steers carbon-aware
    /// scheduling while the server runs.
    #[arg(
        long,
        env = "GIGAFAB_GRID_REFRESH",
        default_value_t = 300.0,
        value_name = "SECONDS"
    )]
    grid_refresh: f64,
    /// Gangs over at least this many nodes are checked before they launch
    /// by their site's `preflight_program` (the factory's), run on each
    /// node; a node that fails it is drained and the gang placed elsewhere
    /// (0: never).
    #[arg(
        long,
        env = "GIGAFAB_PREFLIGHT_MIN_NODES",
        default_value_t = 2,
        value_name = "NODES"
    )]
    preflight_min_nodes: u32,
    /// Most active (queued and running) jobs one organisation may have at
    /// once, every task of an array counted; a submission past it is
    /// refused (409 too_many_jobs); 0: no cap.
    #[arg(
        long,
        env = "GIGAFAB_MAX_ACTIVE_JOBS_PER_ORG",
        default_value_t = 10_000,
        value_name = "JOBS"
    )]
    max_active_jobs_per_org: usize,
    /// GPU telemetry for measured energy: `auto` (NVML, then AMD SMI, else
    /// the power model), `off` (model only), or `replay:FILE` (recorded
    /// samples, JSON `{"devices": [...], "samples": [[...], ...]}`, played
    /// at their recorded pace and looped, for tests and demonstrations).
    #[arg(long, env = "GIGAFAB_TELEMETRY", default_value = "auto")]
    telemetry: String,
    /// Where jobs run: `local` (child processes on this machine) or `slurm`
    /// (sbatch to the Slurm whose commands are on PATH; job directories in
    /// the data directory must be on a file system the nodes share).
    #[arg(long, env = "GIGAFAB_EXECUTOR", default_value = "local")]
    executor: String,
    /// Slurm partition for `--executor slurm` [default: Slurm's default].
    #[arg(long, env = "GIGAFAB_SLURM_PARTITION")]
    slurm_partition: Option<String>,
    /// Run each tenant's jobs as its own POSIX account: a TOML file mapping
    /// gigafab users and organisations to accounts (`[users] alice =
    /// "alice"`, `[orgs] acme = "gf-acme"`; a user's entry wins). Needs root
    /// (docs/security.md).
    #[arg(long, env = "GIGAFAB_JOB_ACCOUNTS", value_name = "FILE")]
    job_accounts: Option<PathBuf>,
    /// Run every job as the server's own account, accepting that tenants'
    /// jobs are not isolated from each other (one-tenant machines, tests).
    /// Without it an unprivileged server refuses a second organisation, and a
    /// root server needs --job-accounts.
    #[arg(long, env = "GIGAFAB_SINGLE_USER")]
    single_user: bool,
    /// The site's mail relay (plain SMTP) for notifications: requests
    /// submitted, reviewers assigned, decisions [default: none; they wait
    /// in the outbox].
    #[arg(long, env = "GIGAFAB_SMTP_RELAY", value_name = "HOST:PORT")]
    smtp_relay: Option<String>,
    /// The sender of notification e-mails (with --smtp-relay).
    #[arg(long, env = "GIGAFAB_MAIL_FROM", value_name = "ADDRESS")]
    mail_from: Option<String>,
    /// Where the data and model catalog keeps versions: a directory (an
    /// absolute path) or `s3://BUCKET` (credentials, region and endpoint
    /// from the AWS_* environment) [default: DATA_DIR/catalog].
    #[arg(long, env = "GIGAFAB_CATALOG_STORE", value_name = "URL")]
    catalog_store: Option<String>,
    /// The factory site the catalog store is at: entries whose residency
    /// leaves it out are not stored here [default: the factory's first
    /// site].
    #[arg(long, env = "GIGAFAB_CATALOG_SITE", value_name = "SITE")]
    catalog_site: Option<String>,
    /// The site's OpenID Connect provider (its issuer URL, https://; http://
    /// only on the loopback): the portal offers to sign in there, and the
    /// identity's `sub` signs in as the user created with that
    /// `--oidc-subject` [default: none, tokens only].
    #[arg(long, env = "GIGAFAB_OIDC_ISSUER", value_name = "URL")]
    oidc_issuer: Option<String>,
    /// This server's client id at the provider (with --oidc-issuer).
    #[arg(long, env = "GIGAFAB_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// A file holding the client's secret [default: none, a public client
    /// with PKCE].
    #[arg(long, env = "GIGAFAB_OIDC_CLIENT_SECRET_FILE", value_name = "FILE")]
    oidc_client_secret_file: Option<PathBuf>,
    /// This server's address as browsers reach it (the provider sends them
    /// back to URL/login/oidc/callback) [default: http://LISTEN].
    #[arg(long, env = "GIGAFAB_PUBLIC_URL", value_name = "URL")]
    public_url: Option<String>,
    /// Largest file a job may write, its logs included, in GiB (RLIMIT_FSIZE:
    /// past it the job is killed); 0: no limit.
    #[arg(long, env = "GIGAFAB_MAX_JOB_FILE_GIB", default_value_t = 64.0)]
    max_job_file_gib: f64,
    /// Where this machine's NVIDIA device files are (`{index}`: the device
    /// index); as root, each job sees only its own (the others are covered
    /// by /dev/null in its mount namespace).
    #[arg(
        long,
        env = "GIGAFAB_NVIDIA_DEVICES",
        default_value = "/dev/nvidia{index}"
    )]
    nvidia_devices: String,
    /// Directory of NVIDIA's capability device files (`nvidia-cap<minor>`):
    /// a job sees only its own MIG instances' (the others are covered by
    /// /dev/null).
    #[arg(long, env = "GIGAFAB_NVIDIA_CAPS", default_value = "/dev/nvidia-caps")]
    nvidia_caps: PathBuf,
    /// The driver's capability table, which names each MIG instance's
    /// capability minor (`gpuN/mig/giG/access`, `.../ciC/access`).
    #[arg(
        long,
        env = "GIGAFAB_NVIDIA_CAPABILITIES",
        default_value = "/proc/driver/nvidia/capabilities"
    )]
    nvidia_capabilities: PathBuf,
    /// Where this machine's AMD device files are (`{index}`, or `{render}` =
    /// 128 + index for DRM render nodes).
    #[arg(
        long,
        env = "GIGAFAB_AMD_DEVICES",
        default_value = "/dev/dri/renderD{render}"
    )]
    amd_devices: String,
    /// Most a job's directory (its work/ and logs) may hold, GiB; past it
    /// the job is stopped and recorded failed; 0: no limit.
    #[arg(long, env = "GIGAFAB_MAX_JOB_DISK_GIB", default_value_t = 0.0)]
    max_job_disk_gib: f64,
    /// Network of a job run as an account: `private` (a network namespace
    /// of its own: its own loopback, no other job's ports, no egress) or
    /// `host` (the machine's: jobs on one machine reach each other's
    /// loopback services; for egress, or where the site's network does the
    /// separating).
    #[arg(
        long,
        env = "GIGAFAB_JOB_NETWORK",
        value_enum,
        default_value = "private"
    )]
    job_network: JobNetwork,
    /// A directory of app definitions for interactive sessions
    /// (`NAME.toml` each): they add apps to the built-in ones (jupyter,
    /// terminal, vscode) or replace one of the same name (docs/sessions.md).
    #[arg(long, env = "GIGAFAB_APPS_DIR")]
    apps_dir: Option<PathBuf>,
    /// Longest interactive session, extensions included, hours.
    #[arg(long, env = "GIGAFAB_SESSION_MAX_HOURS", default_value_t = 12.0)]
    session_max_hours: f64,
    /// Where the organisations' project spaces are made (a directory
    /// each, shared by its members; jobs find theirs at
    /// $GIGAFAB_PROJECT_DIR): a directory of this server's that no tenant
    /// can write, on a file system every node mounts. Default:
    /// DATA_DIR/spaces.
    #[arg(long, env = "GIGAFAB_PROJECT_SPACES")]
    project_spaces: Option<PathBuf>,
    /// Most GiB a project space may take for an upload through the server
    /// to go in (0: the file system's own quotas alone).
    #[arg(long, env = "GIGAFAB_PROJECT_SPACE_GIB", default_value_t = 0.0)]
    project_space_gib: f64,
    /// Most processes and threads of one job (cgroup pids.max, where the
    /// pids controller is there); 0: no limit.
    #[arg(long, env = "GIGAFAB_MAX_JOB_PIDS", default_value_t = 4096)]
    max_job_pids: u64,
    /// Open HTTP connections at most; past it new ones are closed at once
    /// and a line is logged.
    #[arg(long, env = "GIGAFAB_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// Open HTTP connections of one client address at most (0: no cap);
    /// past it its new ones are closed at once. Behind a reverse proxy
    /// every client has the proxy's address: set 0 and cap at the proxy.
    #[arg(long, env = "GIGAFAB_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 64)]
    max_connections_per_client: usize,
    /// API requests that change state (POST, PUT, PATCH, DELETE) a second,
    /// per token, sustained (bursts of 5 s worth); past it 429 with
    /// Retry-After. Admins and operators are not limited; 0: no limit.
    #[arg(long, env = "GIGAFAB_WRITES_PER_TOKEN", default_value_t = 20)]
    writes_per_token: u32,
    /// The same, per organisation (all its members' tokens together).
    #[arg(long, env = "GIGAFAB_WRITES_PER_ORG", default_value_t = 100)]
    writes_per_org: u32,
    /// Seconds a connection may take to send a request's headers; idle
    /// keep-alive and half-open connections are closed after it too.
    #[arg(long, env = "GIGAFAB_HEADER_TIMEOUT", default_value_t = 30.0)]
    header_timeout: f64,
    /// Log format on standard error: `text` (for people) or `json` (one
    /// object per line, for log collectors); RUST_LOG filters (default
    /// info; `gigafab::access=off` silences the access log).
    #[arg(long, env = "GIGAFAB_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// The network a job run as an account gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JobNetwork {
    /// A network namespace of its own (loopback only).
    Private,
    /// The machine's network.
    Host,
}

/// Whether the log is JSON (set once at start).
static JSON_LOG: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line of the server's own on standard error: plain text, or with
/// `--log-format json` a JSON log event like every other line.
macro_rules! say {
    ($($t:tt)*) => {{
        let msg = format!($($t)*);
        if JSON_LOG.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::info!(target: "gigafab::serve", "{msg}");
        } else {
            eprintln!("{msg}");
        }
    }};
}

/// `--log-format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Reads and parses a TOML file; errors name the file and line.
fn read_toml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
    what: &str,
) -> Result<(String, T)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read {what}", path.display()))?;
    let v = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].lines().count().max(1))
            .unwrap_or(0);
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })?;
    Ok((text, v))
}

/// Command-line arguments of `serve` with the `--config` file's keys put
/// in for every flag that neither the command line nor the environment
/// set. `args` are those after `serve`.
pub fn with_config(
    matches: &clap::ArgMatches,
    args: &[std::ffi::OsString],
) -> Result<Option<Vec<std::ffi::OsString>>> {
    let Some(path) = matches.get_one::<PathBuf>("config") else {
        return Ok(None);
    };
    let (text, table): (String, toml::Table) = read_toml(path, "the configuration file")?;
    let cmd = <crate::Cli as clap::CommandFactory>::command();
    let serve = cmd.find_subcommand("serve").expect("serve is a subcommand");
    let known: Vec<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|l| l != "config" && l != "help")
        .collect();
    let line_of = |key: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(key))
            .map_or(0, |i| i + 1)
    };
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        if !known.contains(&long) {
            bail!(
                "{}:{}: unknown key `{key}` (known: {})",
                path.display(),
                line_of(key),
                known.join(", ")
            );
        }
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
            .expect("known");
        let id = arg.get_id().as_str();
        if matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        ) {
            continue;
        }
        let v = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => bail!(
                "{}:{}: `{key}` must be a string, a number or a boolean",
                path.display(),
                line_of(key)
            ),
        };
        // paths in the file are relative to the file
        let v = if ["data-dir", "factory", "bootstrap-token-file", "throughputs"]
            .contains(&long.as_str())
            && !v.starts_with(gigafab_core::builtin::PREFIX)
            && std::path::Path::new(&v).is_relative()
        {
            path.parent()
                .unwrap_or(std::path::Path::new("."))
                .join(&v)
                .display()
                .to_string()
        } else {
            v
        };
        out.push(format!("--{long}={v}").into());
    }
    out.extend(args.iter().cloned());
    Ok(Some(out))
}

/// Recorded telemetry for `--telemetry replay:FILE`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    devices: Vec<gigafab_telemetry::DeviceInfo>,
    samples: Vec<Vec<gigafab_telemetry::Sample>>,
}

/// The telemetry source `spec` names (`auto`, `off`, `replay:FILE`), for
/// `gigafab serve` and `gigafab agent run`.
pub(crate) fn telemetry(spec: &str) -> Result<Option<Arc<dyn gigafab_telemetry::Telemetry>>> {
    match spec {
        "off" => Ok(None),
        "auto" => {
            let (t, notes) = gigafab_telemetry::detect();
            match t {
                Some(t) => {
                    say!(
                        "gigafab serve: GPU telemetry from {}: energy is measured",
                        t.source()
                    );
                    Ok(Some(Arc::from(t)))
                }
                None => {
                    say!(
                        "gigafab serve: no GPU telemetry ({}); energy is modelled",
                        notes.join("; ")
                    );
                    Ok(None)
                }
            }
        }
        other => {
            let Some(path) = other.strip_prefix("replay:") else {
                bail!("--telemetry: expected auto, off or replay:FILE, got `{other}`");
            };
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{path}: cannot read the telemetry replay"))?;
            let r: Replay = serde_json::from_str(&text)
                .with_context(|| format!("{path}: not a telemetry replay"))?;
            if r.samples.is_empty() {
                bail!("{path}: a telemetry replay needs at least one batch of samples");
            }
            say!(
                "gigafab serve: GPU telemetry from replay {path} ({} devices): energy is measured",
                r.devices.len()
            );
            Ok(Some(Arc::new(gigafab_telemetry::ReplayTelemetry::new(
                r.devices, r.samples,
            ))))
        }
    }
}

/// A short random id of this installation, made on first use and kept in
/// the data directory (Slurm job names carry it).
fn instance_id(data_dir: &std::path::Path) -> Result<String> {
    let p = data_dir.join("instance-id");
    if let Ok(s) = std::fs::read_to_string(&p) {
        let s = s.trim().to_string();
        if !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(s);
        }
    }
    let t = gigafab_server::auth::new_token();
    let id: String = t[3..]
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    std::fs::write(&p, format!("{id}\n"))
        .with_context(|| format!("{}: cannot write", p.display()))?;
    Ok(id)
}

/// Whose identity jobs run under, from `--job-accounts`, `--single-user` and
/// whether the server is root; in account mode the data directory and
/// everything the server writes become the server's alone.
fn isolation(
    a: &ServeArgs,
    data_dir: &std::path::Path,
) -> Result<gigafab_server::isolation::Isolation> {
    use gigafab_server::isolation::{AccountMap, Isolation};
    use std::os::unix::fs::PermissionsExt;
    let root = gigafab_exec::posix::is_root();
    let me = gigafab_exec::posix::current_user();
    match (&a.job_accounts, a.single_user) {
        (Some(_), true) => bail!("--job-accounts and --single-user exclude each other"),
        (Some(path), false) => {
            if !root {
                bail!(
                    "--job-accounts: running jobs as other accounts needs root (this server runs as `{me}`)"
                );
            }
            let (_, map): (String, AccountMap) = read_toml(path, "the job accounts")?;
            map.check()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            for account in map.users.values().chain(map.orgs.values()) {
                if let Err(e) = gigafab_exec::posix::lookup(account) {
                    say!("gigafab serve: warning: {}: {e}", path.display());
                }
            }
            // nothing the server writes is readable by a job's account
            // SAFETY: plain syscall.
            unsafe { libc::umask(0o077) };
            for (dir, mode) in [
                (data_dir.to_path_buf(), 0o711),
                (data_dir.join("jobs"), 0o711),
            ] {
                std::fs::create_dir_all(&dir)
                    .and_then(|_| {
                        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    })
                    .with_context(|| format!("{}: cannot set its permissions", dir.display()))?;
            }
            for entry in std::fs::read_dir(data_dir)?.flatten() {
                let p = entry.path();
                if p.is_file() {
                    let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
                }
            }
            say!(
                "gigafab serve: jobs run as their users' POSIX accounts ({} users, {} organisations mapped in {})",
                map.users.len(),
                map.orgs.len(),
                path.display()
            );
            Ok(Isolation::Accounts(map))
        }
        (None, accepted) => {
            if root && !accepted {
                bail!(
                    "gigafab serve runs as root: give --job-accounts FILE so that each tenant's jobs run as its own account (docs/security.md), or --single-user to run every job as root"
                );
            }
            say!(
                "gigafab serve: every job runs as `{me}`, the server's own account: tenants are not isolated from each other{}",
                if accepted {
                    " (--single-user)"
                } else {
                    "; a second organisation is refused (see --job-accounts, --single-user)"
                }
            );
            Ok(Isolation::Shared { user: me, accepted })
        }
    }
}

/// The catalog's store (`--catalog-store`, by default DATA_DIR/catalog),
/// its cache of fetched versions and its staging area, in DATA_DIR.
fn catalog_site(
    a: &ServeArgs,
    data_dir: &std::path::Path,
    factory: &gigafab_core::Factory,
) -> Result<Arc<gigafab_server::catalog::Site>> {
    let url = a
        .catalog_store
        .clone()
        .unwrap_or_else(|| data_dir.join("catalog").display().to_string());
    let blobs = gigafab_catalog::store::Blobs::open(&url, &data_dir.join("catalog-cache"))
        .with_context(|| format!("--catalog-store {url}"))?;
    let site = match &a.catalog_site {
        Some(s) if factory.sites.iter().any(|x| &x.name == s) => s.clone(),
        Some(s) => bail!(
            "--catalog-site: `{s}` is not a site of fleet `{}` ({})",
            factory.name,
            factory
                .sites
                .iter()
                .map(|x| x.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => factory
            .sites
            .first()
            .map(|x| x.name.clone())
            .unwrap_or_default(),
    };
    let s = gigafab_server::catalog::Site::new(blobs, data_dir.join("catalog-staging"), site)
        .context("cannot make the catalog's staging directory")?;
    Ok(Arc::new(s))
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("gigafab");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/gigafab"),
        None => PathBuf::from("gigafab-data"),
    }
}

fn bootstrap_token(a: &ServeArgs) -> Result<Option<String>> {
    let t = if let Some(p) = &a.bootstrap_token_file {
        let s = std::fs::read_to_string(p)
            .with_context(|| format!("{}: cannot read the bootstrap token", p.display()))?;
        Some(s.trim().to_string())
    } else {
        std::env::var("GIGAFAB_BOOTSTRAP_TOKEN")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    if let Some(t) = &t
        && (t.len() < 16 || t.len() > 256 || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        bail!("the bootstrap token must be 16-256 characters without spaces");
    }
    Ok(t)
}

pub fn run(a: ServeArgs) -> Result<()> {
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    JSON_LOG.store(
        a.log_format == LogFormat::Json,
        std::sync::atomic::Ordering::Relaxed,
    );
    let _ = match a.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter())
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .try_init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(filter())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    let factory = match &a.factory {
        Some(p) => gigafab_twin::files::load_factory(p)?,
        None => gigafab_twin::files::load_factory(std::path::Path::new("builtin:local"))?,
    };
    // the same profile as the twin's (docs/server.md); the server's clock
    // is calendar time already
    let (mut policy, throughputs) = a.sched.resolve(&factory)?;
    policy.calendar_start_s = 0.0;
    if !(a.kill_grace.is_finite() && (0.0..=3600.0).contains(&a.kill_grace)) {
        bail!("--kill-grace must be within 0..=3600 seconds");
    }
    let data_dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("{}: cannot create the data directory", data_dir.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("{}: cannot resolve", data_dir.display()))?;
    let isolation = isolation(&a, &data_dir)?;
    // one server per data directory: its jobs and database are its own
    let lock_path = data_dir.join("gigafab.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{}: cannot open", lock_path.display()))?;
    if lock.try_lock().is_err() {
        bail!(
            "another gigafab server is using {} (one server per data directory)",
            data_dir.display()
        );
    }
    let url = a
        .database
        .clone()
        .unwrap_or_else(|| store::sqlite_url(&data_dir));
    // one server per SQLite store too, wherever --database puts it
    let _store_lock = match url.strip_prefix("sqlite:") {
        Some(rest) => {
            let path = rest.trim_start_matches("//");
            let path = path.split('?').next().unwrap_or(path);
            let lock_path = PathBuf::from(format!("{path}.lock"));
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .with_context(|| format!("{}: cannot open", lock_path.display()))?;
            if f.try_lock().is_err() {
                bail!("another gigafab server is using the database {path} (one server per store)");
            }
            Some(f)
        }
        None => None,
    };
    if !(a.project_space_gib.is_finite() && a.project_space_gib >= 0.0) {
        bail!("--project-space-gib: a number of GiB, 0 or more");
    }
    if !(a.session_max_hours.is_finite() && (1.0 / 60.0..=720.0).contains(&a.session_max_hours)) {
        bail!("--session-max-hours: within 0.017..=720");
    }
    let all_local = std::iter::once(a.executor.as_str())
        .chain(factory.sites.iter().filter_map(|s| s.executor.as_deref()))
        .all(|k| gigafab_exec::engines::engine(k).is_ok_and(|e| e.local_processes));
    let local_anywhere = std::iter::once(a.executor.as_str())
        .chain(factory.sites.iter().filter_map(|s| s.executor.as_deref()))
        .any(|k| gigafab_exec::engines::engine(k).is_ok_and(|e| e.local_processes));
    let sessions = gigafab_server::sessions::SessionConfig {
        apps: gigafab_server::sessions::apps::load(a.apps_dir.as_deref())
            .map_err(anyhow::Error::msg)?,
        max_s: (a.session_max_hours * 3600.0) as i64,
        // apps without a secret of their own need a network per job
        private_network: a.job_network == JobNetwork::Private
            && matches!(isolation, gigafab_server::isolation::Isolation::Accounts(_))
            && all_local,
        // on a Slurm node an app listens on the node's network, its
        // secret its own and its nodes its user's alone (--exclusive=user);
        // on this machine, with accounts, only a network of its own keeps
        // another tenant's job from taking its port first
        unavailable: if matches!(isolation, gigafab_server::isolation::Isolation::Accounts(_))
            && a.job_network != JobNetwork::Private
            && local_anywhere
        {
            Some("interactive sessions need --job-network private where jobs run as their users' accounts: on the machine's network another tenant's job could take a session's port first".into())
        } else {
            None
        },
    };
    let exe = std::env::current_exe().context("cannot find the gigafab executable")?;
    // what the engines are built with (each takes the settings it knows)
    let mut engine = gigafab_exec::engines::Settings {
        jobs_dir: data_dir.join("jobs"),
        instance: instance_id(&data_dir)?,
        supervisor: vec![exe.display().to_string(), "job-supervise".into()],
        kill_grace: Duration::from_secs_f64(a.kill_grace),
        max_disk_bytes: (a.max_job_disk_gib.max(0.0) * (1u64 << 30) as f64) as u64,
        max_file_bytes: (a.max_job_file_gib.max(0.0) * (1u64 << 30) as f64) as u64,
        max_pids: a.max_job_pids,
        private_network: a.job_network == JobNetwork::Private,
        devices: None,
        cgroup: None,
        partition: None,
    };
    if gigafab_exec::posix::is_root() && local_anywhere {
        engine.devices = Some(gigafab_exec::DeviceFiles {
            nvidia: a.nvidia_devices.clone(),
            amd: a.amd_devices.clone(),
            nvidia_caps: a.nvidia_caps.clone(),
            nvidia_capabilities: a.nvidia_capabilities.clone(),
            proc_devices: "/proc/devices".into(),
        });
        match gigafab_exec::posix::jobs_cgroup(&format!("gigafab-{}", engine.instance)) {
            Some(cg) => {
                say!(
                    "gigafab serve: each job runs in its own cgroup under {}",
                    cg.display()
                );
                engine.cgroup = Some(cg);
            }
            None => say!(
                "gigafab serve: no writable cgroup v2 hierarchy: jobs are followed by process group only (a job's `setsid` children can outlive it)"
            ),
        }
    }
    let make = |kind: &str, partition: Option<String>| -> Result<Arc<dyn gigafab_exec::Executor>> {
        let s = gigafab_exec::engines::Settings {
            partition,
            ..engine.clone()
        };
        gigafab_exec::engines::build(kind, &s).map_err(|e| anyhow::anyhow!("{e}"))
    };
    gigafab_exec::check_backend(&a.executor).map_err(|e| anyhow::anyhow!("--executor: {e}"))?;
    // sites that name their own executor in the factory file: all checked
    // before any is built
    for site in &factory.sites {
        if let Some(kind) = &site.executor {
            gigafab_exec::check_backend(kind).map_err(|e| {
                anyhow::anyhow!(
                    "factory `{}`, site `{}`: executor {e}",
                    factory.name,
                    site.name
                )
            })?;
        }
    }
    let default = make(&a.executor, a.slurm_partition.clone())?;
    let mut routes = std::collections::BTreeMap::new();
    for site in &factory.sites {
        if let Some(kind) = &site.executor {
            let part = site.slurm_partition.clone().or(a.slurm_partition.clone());
            routes.insert(site.name.clone(), make(kind, part)?);
        }
    }
    let executor: Arc<dyn gigafab_exec::Executor> = if routes.is_empty() {
        default
    } else {
        Arc::new(gigafab_exec::routed::RoutedExecutor::new(default, routes))
    };
    // idle power-down: each site's way to power its nodes
    let node_power = if policy.power_down_after_s.is_some() {
        let slurm: Vec<bool> = factory
            .sites
            .iter()
            .map(|s| {
                gigafab_exec::engines::engine(s.executor.as_deref().unwrap_or(&a.executor))
                    .is_ok_and(|e| e.slurm_power)
            })
            .collect();
        gigafab_server::ctl::node_power_of(&factory, &slurm)
            .map_err(|e| anyhow::anyhow!("--power-down-after: {e}"))?
    } else {
        Vec::new()
    };
    let cfg = ServeConfig {
        listen: a.listen,
        database_url: url.clone(),
        ctl: CtlConfig {
            factory: factory.clone(),
            policy,
            throughputs,
            tick: Duration::from_millis(a.tick_ms.clamp(10, 60_000)),
            poll: Duration::from_millis(a.poll_ms.clamp(10, 60_000)),
            bootstrap_token: bootstrap_token(&a)?,
            isolation,
            node_power,
            preflight_min_nodes: a.preflight_min_nodes,
            max_active_jobs_per_org: a.max_active_jobs_per_org,
            grid_refresh: {
                if !(a.grid_refresh.is_finite() && (0.1..=86_400.0).contains(&a.grid_refresh)) {
                    bail!("--grid-refresh must be within 0.1..=86400 seconds");
                }
                Duration::from_secs_f64(a.grid_refresh)
            },
        },
        executor,
        telemetry: telemetry(&a.telemetry)?,
        http: {
            if a.max_connections == 0 {
                bail!("--max-connections must be at least 1");
            }
            if !(a.header_timeout.is_finite() && (0.1..=3600.0).contains(&a.header_timeout)) {
                bail!("--header-timeout must be within 0.1..=3600 seconds");
            }
            gigafab_server::HttpLimits {
                max_connections: a.max_connections,
                header_timeout: Duration::from_secs_f64(a.header_timeout),
                max_connections_per_client: a.max_connections_per_client,
                write_rates: gigafab_server::ratelimit::WriteRates {
                    per_token: a.writes_per_token,
                    per_org: a.writes_per_org,
                },
            }
        },
        existing_job_dirs: std::fs::read_dir(data_dir.join("jobs"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i64>().ok()))
                    .filter(|id| *id > 0)
                    .collect()
            })
            .unwrap_or_default(),
        clock: Arc::new(gigafab_server::time::SystemClock),
        smtp: match (&a.smtp_relay, &a.mail_from) {
            (None, None) => None,
            (Some(relay), Some(from)) => Some(
                gigafab_server::notify::SmtpConfig::new(relay, from).map_err(anyhow::Error::msg)?,
            ),
            _ => bail!("--smtp-relay and --mail-from go together"),
        },
        oidc: oidc_config(&a)?,
        catalog: Some(catalog_site(&a, &data_dir, &factory)?),
        sessions,
        spaces: Some(gigafab_server::spaces::Spaces {
            root: a
                .project_spaces
                .clone()
                .unwrap_or_else(|| data_dir.join("spaces")),
            max_bytes: (a.project_space_gib > 0.0)
                .then_some((a.project_space_gib * (1u64 << 30) as f64) as u64),
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let running = gigafab_server::start(cfg).await?;
        say!(
            "gigafab serve: listening on http://{} (store: {} {}; fleet `{}`: {} accelerators on {} nodes; data in {})",
            running.addr,
            running.store.as_str(),
            store::redact(&url),
            factory.name,
            factory.accelerators(),
            factory.nodes(),
            data_dir.display()
        );
        if let Some(t) = &running.first_token {
            println!("first start: an admin token was created; it is shown once and stored hashed:");
            println!("export GIGAFAB_TOKEN={t}");
            println!("export GIGAFAB_SERVER=http://{}", running.addr);
        } else if running.first_start {
            say!("first start: the admin token is the bootstrap token given");
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _lock = lock;
        let stop = running.stop_handle();
        tokio::spawn(async move {
            let name = stop_signal().await;
            say!(
                "gigafab serve: {name}: stopping (no new requests; answering those in flight; committing)"
            );
            stop.stop();
        });
        running.wait().await.context("the HTTP server stopped")?;
        say!(
            "gigafab serve: stopped; running jobs go on and are adopted at the next start"
        );
        Ok(())
    })
}

/// Waits for SIGTERM or SIGINT; returns its name.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // no signal handling: never stop on a signal
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The portal's OpenID Connect provider from the flags (checked).
fn oidc_config(a: &ServeArgs) -> Result<Option<gigafab_server::portal::OidcConfig>> {
    let (issuer, client_id) = match (&a.oidc_issuer, &a.oidc_client_id) {
        (None, None) => {
            if a.oidc_client_secret_file.is_some() {
                bail!("--oidc-client-secret-file needs --oidc-issuer and --oidc-client-id");
            }
            return Ok(None);
        }
        (Some(i), Some(c)) => (i.clone(), c.clone()),
        _ => bail!("--oidc-issuer and --oidc-client-id go together"),
    };
    let client_secret = match &a.oidc_client_secret_file {
        None => None,
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("--oidc-client-secret-file {}", f.display()))?
                .trim()
                .to_string(),
        ),
    };
    let cfg = gigafab_server::portal::OidcConfig {
        issuer,
        client_id,
        client_secret,
        public_url: a
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", a.listen)),
    };
    cfg.check().map_err(anyhow::Error::msg)?;
    Ok(Some(cfg))
}
