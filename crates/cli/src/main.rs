//! The `gigafab` command.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use gigafab_core::{AllocationSpec, Factory, JobSpec, PolicyKind};
use gigafab_twin::workload::{self, Format, synth};
use gigafab_twin::{Failures, SimConfig, simulate};
use std::path::{Path, PathBuf};

mod agent;
mod bench;
mod bench_gateway;
mod bench_serve;
mod capacity;
mod client;
mod profile;
mod serve;

/// Operating platform for AI factories: scheduler, digital twin and tools.
#[derive(Parser)]
#[command(name = "gigafab", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Simulate a workload on a factory with the digital twin.
    Sim(Box<SimArgs>),
    /// Generate or convert workloads.
    #[command(subcommand)]
    Workload(WorkloadCmd),
    /// Inspect factory files.
    #[command(subcommand)]
    Factory(FactoryCmd),
    /// Run the built-in benchmarks and print their figures.
    Bench(bench::BenchArgs),
    /// Start the control plane: HTTP API, store, scheduler, local executor.
    Serve(Box<serve::ServeArgs>),
    /// A standalone gateway for the model endpoints: stateless, several
    /// behind a load balancer (needs an admin's token).
    Gateway(Box<client::gateway::GatewayArgs>),
    /// The echo backend of `bench --scenario gateway`: the OpenAI API
    /// answered at once, behind the key in API_KEY.
    #[command(hide = true, name = "bench-echo")]
    BenchEcho {
        /// Port to listen on (loopback).
        #[arg(long)]
        port: u16,
    },
    /// Runs one job under supervision (started by the local executor).
    #[command(hide = true, name = "job-supervise")]
    JobSupervise {
        /// Supervisor arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Node agent: GPU telemetry of this machine.
    #[command(subcommand)]
    Agent(agent::AgentCmd),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (gigafab.1 and one per command).
    Man {
        /// Directory to write the pages to [default: print gigafab.1 on
        /// standard output].
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Print the API's OpenAPI 3.1 document (what `GET /api/v1/openapi.json`
    /// answers), for client generators.
    Openapi {
        /// File to write it to [default: standard output].
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    #[command(flatten)]
    Client(Box<client::ClientCmd>),
}

/// Output format of reports and listings.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args)]
struct SimArgs {
    /// Factory TOML file, or an embedded one: builtin:mixed-small,
    /// builtin:gavel-108, builtin:gigafactory-100k, builtin:campus-500k,
    /// builtin:alibaba-openb, builtin:shared-h100,
    /// builtin:two-sites-fr-de, builtin:local [default: builtin:mixed-small].
    #[arg(long)]
    factory: Option<PathBuf>,
    /// Workload file [default: 1,000 synthetic gavel-profile jobs, duration only].
    #[arg(long)]
    workload: Option<PathBuf>,
    /// Format of the workload file.
    #[arg(long, value_enum, default_value = "native")]
    workload_format: WorkloadFormat,
    /// Seed of every random draw (failures).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Measure only jobs A..B (0-based, in submission order).
    #[arg(long, value_parser = parse_range)]
    measure_jobs: Option<(usize, usize)>,
    /// Report format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
    /// Write one CSV row per job to FILE: id, submit_s, start_s (first
    /// start), end_s (final end), state (completed, timed_out, failed,
    /// cancelled, unfinished), accelerators, pool, site, wait_s (to the
    /// first start), restarts, energy_kwh, carbon_g, size_class (1, 2-4,
    /// 5-8, 9-15, 16+), queued_s (time waiting in all, after preemptions
    /// too).
    #[arg(long, value_name = "FILE")]
    jobs_out: Option<PathBuf>,
    /// Write an SVG plot over time (dates from --start-date): utilization,
    /// queue length, each site's power against its budget, grid intensity.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Accelerator failures per accelerator-day (0 disables failures).
    #[arg(long, default_value_t = 4.7e-4)]
    failure_rate: f64,
    /// Hours until a failed accelerator is repaired.
    #[arg(long, default_value_t = 4.0)]
    repair_hours: f64,
    /// Proactive draining: the share of failure precursors a predictor
    /// catches (0..=1); failures follow Meta's Llama 3 mix, each class with
    /// its chance of a precursor and lead time (docs/health.md) [default:
    /// none, failures strike unannounced].
    #[arg(long, value_name = "RECALL")]
    precursor_recall: Option<f64>,
    /// The share of the predictor's alarms that are true (0..=1]; a false
    /// one drains a healthy node for --false-alarm-check-hours.
    #[arg(long, default_value_t = 0.8, value_name = "PRECISION")]
    precursor_precision: f64,
    /// Hours a node drained on a false alarm is out (checked, then back).
    #[arg(long, default_value_t = 1.0)]
    false_alarm_check_hours: f64,
    /// Pre-flight checks: a gang over at least --preflight-min-nodes nodes
    /// begins its run this many minutes after its start (0: no check).
    #[arg(long, default_value_t = 0.0)]
    preflight_minutes: f64,
    /// Nodes from which a gang is checked before it runs.
    #[arg(long, default_value_t = 2)]
    preflight_min_nodes: u32,
    /// Share of the latent faults at a gang's start (a precursor already
    /// there) that its pre-flight check catches; needs --precursor-recall
    /// (which may be 0: pre-flight alone).
    #[arg(long, default_value_t = 0.5)]
    preflight_recall: f64,
    /// Allocations TOML file (`[[allocations]]` entries); tenants without one
    /// get an unlimited allocation.
    #[arg(long)]
    allocations: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    sched: profile::SchedArgs,
    /// Calendar time of the simulation's time 0 (carbon series line up with
    /// it), RFC 3339.
    #[arg(long, default_value = "2023-01-01T00:00:00Z")]
    start_date: String,
    /// Grid carbon-intensity series of a site, replacing the factory's:
    /// SITE=FILE.csv (repeatable).
    #[arg(long, value_name = "SITE=FILE")]
    grid: Vec<String>,
    /// Power budget of a site in MW, replacing the factory's: SITE=MW
    /// (repeatable).
    #[arg(long, value_name = "SITE=MW")]
    power_budget: Vec<String>,
    /// Run the workload a second time without its jobs' site restrictions
    /// (their inputs' residency) and report the jobs residency delayed and
    /// the wait it added.
    #[arg(long)]
    residency_cost: bool,
    /// Run the workload a second time on the same factory with nothing
    /// shared (a job that asked for a slice takes a whole accelerator) and
    /// report what sharing gave: waits of slice and whole jobs, the
    /// accelerator-hours the slice jobs held, accelerators freed, energy
    #[arg(long)]
    against_whole: bool,
    /// Size the shared pools: run the workload once per scale, each shared
    /// pool's nodes multiplied by it (traded with the largest pool of whole
    /// accelerators of its type; 0: nothing shared), and report waits,
    /// accelerator-hours of slice jobs and energy per size, comma separated
    /// (e.g. 0,1,2,4; a pool keeps one node at least)
    #[arg(long, value_delimiter = ',', conflicts_with = "against_whole")]
    shared_scale: Vec<f64>,
    /// Model endpoints served alongside the jobs: a TOML file of
    /// `[[endpoint]]` tables, each with its request trace
    /// (docs/endpoints.md); the report gives their latency, cold starts,
    /// replica-hours, energy and carbon.
    #[arg(long, value_name = "FILE")]
    endpoints: Option<PathBuf>,
    /// No training jobs: simulate the endpoints alone (needs --endpoints).
    #[arg(long, requires = "endpoints", conflicts_with = "workload")]
    no_jobs: bool,
    #[command(flatten)]
    capacity: capacity::CapacityArgs,
}

/// `gigafab workload slices`.
fn cmd_slices(input: &Path, format: WorkloadFormat, accel: &str, output: Output) -> Result<()> {
    let jobs = read_workload(input, format)?;
    let advice = gigafab_twin::slices::advise(&accel.trim().to_ascii_lowercase(), &jobs)
        .map_err(|m| anyhow::anyhow!("--accelerator: {m}"))?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&advice)?),
        Output::Table => {
            let n = advice.first().map_or(0, |a| a.jobs);
            println!("{n} of {} jobs ask for a slice; on {accel}:", jobs.len());
            println!(
                "{:<14} {:>7} {:>12} {:>14} {:>14} {:>8} {:>8}",
                "slice", "per GPU", "jobs held", "GPU-h sliced", "GPU-h whole", "saved", "unused"
            );
            for a in &advice {
                let saved = if a.whole_gpu_hours > 0.0 {
                    1.0 - a.slice_gpu_hours / a.whole_gpu_hours
                } else {
                    0.0
                };
                println!(
                    "{:<14} {:>7} {:>12} {:>14.1} {:>14.1} {:>7.1}% {:>7.1}%",
                    a.layout,
                    a.per_accelerator.map_or("-".into(), |p| p.to_string()),
                    format!("{}/{}", a.jobs_held, a.jobs),
                    a.slice_gpu_hours,
                    a.whole_gpu_hours,
                    100.0 * saved,
                    100.0 * a.unused_inside
                );
            }
        }
    }
    Ok(())
}

/// Gives a whole accelerator to each job whose slice no pool of `factory`
/// offers (a trace's fractional pods on a factory without shared pools);
/// returns how many.
fn whole_where_no_slice(factory: &Factory, jobs: &mut [JobSpec]) -> usize {
    let mut n = 0;
    for j in jobs.iter_mut().filter(|j| j.types.slice.is_some()) {
        let held = factory
            .pools
            .iter()
            .any(|p| j.types.accepts(factory.catalog.get(p.accel)));
        if !held {
            j.types.slice = None;
            n += 1;
        }
    }
    n
}

/// `NAME=VALUE` of a repeatable option.
fn split_kv<'a>(s: &'a str, flag: &str) -> Result<(&'a str, &'a str)> {
    s.split_once('=')
        .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
        .map(|(k, v)| (k.trim(), v.trim()))
        .ok_or_else(|| anyhow::anyhow!("{flag}: expected SITE=VALUE, got `{s}`"))
}

/// Applies `--grid` and `--power-budget` to a factory.
fn apply_site_overrides(f: &mut Factory, grid: &[String], budget: &[String]) -> Result<()> {
    for g in grid {
        let (site, file) = split_kv(g, "--grid")?;
        let series = gigafab_twin::files::load_carbon(Path::new(file))?;
        if !f.set_carbon(site, series) {
            bail!("--grid: the factory has no site `{site}`");
        }
    }
    for b in budget {
        let (site, mw) = split_kv(b, "--power-budget")?;
        let mw: f64 = mw
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                anyhow::anyhow!("--power-budget: `{mw}` is not a positive number of MW")
            })?;
        let s =
            f.sites.iter_mut().find(|s| s.name == site).ok_or_else(|| {
                anyhow::anyhow!("--power-budget: the factory has no site `{site}`")
            })?;
        s.power_budget_w = Some(mw * 1e6);
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum WorkloadFormat {
    Native,
    Swf,
    Alibaba,
    Gavel,
}

#[derive(Subcommand)]
enum WorkloadCmd {
    /// Generate a synthetic workload (native CSV).
    Synth(Box<SynthArgs>),
    /// Turn Slurm accounting history (`sacct -P` output) into a workload.
    ImportSacct {
        /// `sacct -P` output with its header [default: run `sacct -a -P -X`
        /// for the last 30 days].
        input: Option<PathBuf>,
        /// Output native CSV file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Summarize an LLM inference request trace (`TIMESTAMP,ContextTokens,
    /// GeneratedTokens`, as Azure's 2023 traces in data/traces): requests,
    /// span, rate, peak and token counts.
    Requests {
        /// Request trace CSV.
        input: PathBuf,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
    /// Read a workload file in any format and write it as native CSV.
    Convert {
        /// Input workload.
        input: PathBuf,
        /// Input format.
        #[arg(long, value_enum, default_value = "native")]
        format: WorkloadFormat,
        /// Output native CSV file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Which slices of an accelerator type hold a workload's jobs that ask
    /// for a slice (an Alibaba trace's pods of less than a GPU): per MIG
    /// profile or AMD partition, and for the best-fit mix, the jobs held,
    /// their accelerator-hours there against whole accelerators, and the
    /// share unused inside the slices.
    Slices {
        /// Input workload.
        input: PathBuf,
        /// Input format.
        #[arg(long, value_enum, default_value = "native")]
        format: WorkloadFormat,
        /// Accelerator type whose slices are weighed (h100, a100, h200,
        /// b200, mi300x, ...).
        #[arg(long)]
        accelerator: String,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Args)]
struct SynthArgs {
    /// Profile: gavel (Gavel's generator), philly (resampled Philly jobs),
    /// gigafactory (Philly jobs plus 1,024-16,384-accelerator training
    /// gangs), mixed (Philly training, notebooks and inference replicas on
    /// slices, and a trace's fractional pods; --mix).
    #[arg(long)]
    profile: String,
    /// Number of jobs.
    #[arg(long)]
    jobs: usize,
    /// Poisson arrival rate, jobs per hour.
    #[arg(long, conflicts_with = "load")]
    rate: Option<f64>,
    /// Offered load (fraction of the factory's accelerators) instead of --rate;
    /// needs --factory.
    #[arg(long, requires = "factory")]
    load: Option<f64>,
    /// Factory whose size --load refers to.
    #[arg(long)]
    factory: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (native CSV).
    #[arg(long)]
    out: PathBuf,
    /// Throughput matrix (the gavel profile draws job types from it)
    /// [default for the gavel profile: builtin:gavel-throughputs, Gavel's
    /// simulation_throughputs.json].
    #[arg(long)]
    throughputs: Option<PathBuf>,
    /// Philly job distribution (duration_s,num_gpus CSV) [default: the
    /// embedded copy of data/traces/philly_job_distribution.csv].
    #[arg(long, default_value = "builtin:philly")]
    philly: PathBuf,
    /// gigafactory profile: share of GPU-hours carried by large gangs.
    #[arg(long, default_value_t = synth::DEFAULT_GANG_SHARE)]
    gang_share: f64,
    /// Fraction of jobs that are flexible: they get a deadline of
    /// submission + duration + --slack-hours.
    #[arg(long, default_value_t = 0.0)]
    flexible: f64,
    /// Slack of flexible jobs, hours.
    #[arg(long, default_value_t = 24.0)]
    slack_hours: f64,
    /// Sites (comma separated): each job gets a home site drawn at random;
    /// jobs without a deadline are pinned to it (data residency), flexible
    /// ones may run at every site, home first.
    #[arg(long, value_delimiter = ',')]
    home_sites: Vec<String>,
    /// mixed profile: each kind's share of the jobs, by count.
    #[arg(
        long,
        default_value = "training=0.4,notebooks=0.3,inference=0.1,pods=0.2"
    )]
    mix: String,
    /// mixed profile: the Alibaba pod list whose fractional pods are
    /// resampled.
    #[arg(long, default_value = "builtin:alibaba-openb-pods")]
    pods: PathBuf,
}

#[derive(Subcommand)]
enum FactoryCmd {
    /// List the pools of a factory.
    Show {
        /// Factory TOML file.
        factory: PathBuf,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
}

/// Writes to stdout; a reader that went away (`| head`) ends the command
/// quietly instead of failing.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

pub(crate) fn parse_policy(s: &str) -> Result<PolicyKind, String> {
    PolicyKind::parse(s).ok_or_else(|| {
        format!(
            "unknown policy `{s}` (one of: {})",
            PolicyKind::ALL.map(|k| k.name()).join(", ")
        )
    })
}

fn parse_range(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}`: expected A..B"))?;
    let a: usize = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}`: not a job index"))?;
    let b: usize = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}`: not a job index"))?;
    if a >= b {
        return Err(format!("`{s}`: A must be below B"));
    }
    Ok((a, b))
}

pub fn load_factory(path: Option<&Path>) -> Result<Factory> {
    Ok(match path {
        Some(p) => gigafab_twin::files::load_factory(p)?,
        None => gigafab_twin::files::load_factory(Path::new("builtin:mixed-small"))?,
    })
}

/// Guesses a workload file's format from its first meaningful line.
fn sniff_format(path: &Path) -> Option<WorkloadFormat> {
    let text = gigafab_twin::files::read_to_string(path).ok()?;
    let first = text
        .lines()
        .map(str::trim_end)
        .find(|l| !l.trim().is_empty())?;
    if first.starts_with(';') {
        return Some(WorkloadFormat::Swf);
    }
    let tabs = first.split('\t').count();
    if tabs == 7 || tabs == 10 {
        return Some(WorkloadFormat::Gavel);
    }
    if first.starts_with("name,cpu_milli") {
        return Some(WorkloadFormat::Alibaba);
    }
    let fields: Vec<&str> = first.split_whitespace().collect();
    if fields.len() == 18 && fields.iter().all(|f| f.parse::<f64>().is_ok()) {
        return Some(WorkloadFormat::Swf);
    }
    let header = first.to_ascii_lowercase();
    if ["id", "submit_s", "gpus"]
        .iter()
        .all(|c| header.contains(c))
    {
        return Some(WorkloadFormat::Native);
    }
    None
}

fn read_workload(path: &Path, format: WorkloadFormat) -> Result<Vec<JobSpec>> {
    read_workload_as(path, format).map_err(|e| match sniff_format(path) {
        Some(guess) if guess != format => {
            let name = guess.to_possible_value().map(|v| v.get_name().to_string());
            e.context(format!(
                "{}: this looks like a {} file: try --workload-format {} (it was read as {})",
                path.display(),
                name.as_deref().unwrap_or("?"),
                name.as_deref().unwrap_or("?"),
                format
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default()
            ))
        }
        _ => e,
    })
}

fn read_workload_as(path: &Path, format: WorkloadFormat) -> Result<Vec<JobSpec>> {
    let fmt = match format {
        WorkloadFormat::Native => Format::Native,
        WorkloadFormat::Swf => Format::Swf,
        WorkloadFormat::Alibaba => Format::Alibaba,
        WorkloadFormat::Gavel => Format::Gavel,
    };
    Ok(match fmt {
        Format::Native => workload::native::read(path)?,
        Format::Gavel => workload::gavel::read(path)?,
        Format::Swf | Format::Alibaba => {
            let (jobs, skipped) = if fmt == Format::Swf {
                workload::swf::read(path)?
            } else {
                workload::alibaba::read(path)?
            };
            if skipped > 0 {
                eprintln!(
                    "{}: skipped {skipped} records without a usable run time or accelerator count",
                    path.display()
                );
            }
            jobs
        }
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AllocationsFile {
    allocations: Vec<AllocationSpec>,
}

fn load_allocations(path: &Path) -> Result<Vec<AllocationSpec>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let f: AllocationsFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(f.allocations)
}

/// A progress bar on stderr (drawn only on a terminal).
pub fn progress_bar(quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} jobs done (eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    pb
}

/// A report's totals that `--against-whole` repeats.
fn totals(r: &gigafab_twin::report::Report) -> gigafab_twin::sharing::Totals {
    gigafab_twin::sharing::Totals {
        avg_jct_s: r.avg_jct_s,
        makespan_s: r.makespan_s,
        energy_mwh: r.energy_mwh,
    }
}

fn cmd_sim(a: SimArgs) -> Result<()> {
    if a.capacity.no_departures {
        return capacity::run(
            &a.capacity,
            a.workload.as_deref(),
            a.seed,
            a.output,
            a.plot.as_deref(),
        );
    }
    let mut factory = load_factory(a.factory.as_deref())?;
    apply_site_overrides(&mut factory, &a.grid, &a.power_budget)?;
    if (a.against_whole || !a.shared_scale.is_empty()) && !factory.shares() {
        let flag = if a.against_whole {
            "--against-whole"
        } else {
            "--shared-scale"
        };
        bail!(
            "{flag}: the factory shares no accelerator (no pool with `slices` or `fractions`): nothing to compare"
        );
    }
    for &scale in &a.shared_scale {
        factory
            .with_shared_scaled(scale)
            .map_err(|e| anyhow::anyhow!("--shared-scale: {e}"))?;
    }
    let (mut policy, throughputs) = a.sched.resolve(&factory)?;
    if !(a.preflight_minutes.is_finite() && (0.0..=1440.0).contains(&a.preflight_minutes)) {
        bail!("--preflight-minutes must be within 0..=1440");
    }
    if !(0.0..=1.0).contains(&a.preflight_recall) {
        bail!("--preflight-recall must be within 0..=1");
    }
    policy.preflight_s = a.preflight_minutes * 60.0;
    policy.preflight_min_nodes = a.preflight_min_nodes.max(1);
    let jobs = match &a.workload {
        _ if a.no_jobs => Vec::new(),
        Some(w) => read_workload(w, a.workload_format)?,
        None => {
            // 1,000 gavel-profile jobs (durations only) at ~80% offered load
            let mut p = synth::SynthParams::new(synth::Profile::Gavel, 1000, 1.0, a.seed);
            let mean = synth::mean_gpu_seconds(&p, None);
            p.rate_per_hour = 0.8 * factory.accelerators() as f64 * 3600.0 / mean;
            synth::generate(&p, None, None)?
        }
    };
    let mut jobs = jobs;
    let whole = whole_where_no_slice(&factory, &mut jobs);
    if whole > 0 {
        eprintln!(
            "{whole} jobs asked for a slice that no shared pool of the factory holds: they run on whole accelerators"
        );
    }
    policy.calendar_start_s = gigafab_core::time::parse_rfc3339(&a.start_date)
        .map_err(|e| anyhow::anyhow!("--start-date: {e}"))? as f64
        / 1000.0;
    if !(a.failure_rate.is_finite() && a.failure_rate >= 0.0) {
        bail!("--failure-rate must be a number >= 0");
    }
    if !(a.repair_hours.is_finite() && a.repair_hours >= 0.0) {
        bail!("--repair-hours must be a number >= 0");
    }
    if let Some(r) = a.precursor_recall
        && !(0.0..=1.0).contains(&r)
    {
        bail!("--precursor-recall must be within 0..=1");
    }
    if !(a.precursor_precision > 0.0 && a.precursor_precision <= 1.0) {
        bail!("--precursor-precision must be within (0, 1]");
    }
    if !(a.false_alarm_check_hours.is_finite() && a.false_alarm_check_hours >= 0.0) {
        bail!("--false-alarm-check-hours must be a number >= 0");
    }
    let allocations = match &a.allocations {
        Some(p) => load_allocations(p)?,
        None => Vec::new(),
    };
    let cfg = SimConfig {
        seed: a.seed,
        failures: (a.failure_rate > 0.0).then_some(Failures {
            rate_per_accel_day: a.failure_rate,
            repair_s: a.repair_hours * 3600.0,
            precursors: a.precursor_recall.map(|r| gigafab_twin::Precursors {
                check_s: a.false_alarm_check_hours * 3600.0,
                preflight_recall: a.preflight_recall,
                ..gigafab_twin::Precursors::llama3(r, a.precursor_precision)
            }),
        }),
        measure: a.measure_jobs,
        timeline_points: a.plot.as_ref().map(|_| 1000),
        endpoints: match &a.endpoints {
            Some(p) => gigafab_twin::endpoints::prepare(gigafab_twin::endpoints::read(p)?, a.seed)?,
            None => Vec::new(),
        },
    };
    if !a.shared_scale.is_empty() {
        let sliced: std::collections::HashSet<String> = jobs
            .iter()
            .filter(|j| j.types.slice.is_some())
            .map(|j| j.id.clone())
            .collect();
        let mut rows = Vec::new();
        for &scale in &a.shared_scale {
            let f = factory
                .with_shared_scaled(scale)
                .map_err(|e| anyhow::anyhow!("--shared-scale: {e}"))?;
            let mut js = jobs.clone();
            whole_where_no_slice(&f, &mut js);
            let cfg = SimConfig {
                timeline_points: None,
                ..cfg.clone()
            };
            let o = simulate(
                f,
                policy.clone(),
                throughputs.clone(),
                js,
                &allocations,
                &cfg,
                &mut |_, _| {},
            )?;
            rows.push(gigafab_twin::sharing::SweepRow {
                scale,
                side: gigafab_twin::sharing::side(&o.core, totals(&o.report), &sliced),
            });
        }
        return match a.output {
            Output::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?)),
            Output::Table => emit(&gigafab_twin::sharing::sweep_table(&rows)),
        };
    }
    let pb = progress_bar(a.quiet);
    // the same jobs on whole accelerators, for --against-whole
    let whole_run = if a.against_whole {
        let sliced: std::collections::HashSet<String> = jobs
            .iter()
            .filter(|j| j.types.slice.is_some())
            .map(|j| j.id.clone())
            .collect();
        let whole = factory.without_sharing();
        let mut whole_jobs = jobs.clone();
        whole_where_no_slice(&whole, &mut whole_jobs);
        let cfg_whole = SimConfig {
            timeline_points: None,
            ..cfg.clone()
        };
        let o = simulate(
            whole,
            policy.clone(),
            throughputs.clone(),
            whole_jobs,
            &allocations,
            &cfg_whole,
            &mut |_, _| {},
        )?;
        Some((
            gigafab_twin::sharing::side(&o.core, totals(&o.report), &sliced),
            sliced,
        ))
    } else {
        None
    };
    // the counterfactual first: the same jobs, no site restrictions
    let free = if a.residency_cost {
        let (free_jobs, restricted) = gigafab_twin::residency::strip(&jobs);
        let cfg_free = SimConfig {
            timeline_points: None,
            ..cfg.clone()
        };
        let o = simulate(
            factory.clone(),
            policy.clone(),
            throughputs.clone(),
            free_jobs,
            &allocations,
            &cfg_free,
            &mut |_, _| {},
        )?;
        Some((o, restricted))
    } else {
        None
    };
    let mut out = simulate(
        factory,
        policy,
        throughputs,
        jobs,
        &allocations,
        &cfg,
        &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        },
    )?;
    pb.finish_and_clear();
    if let Some((whole, sliced)) = whole_run {
        let shared = gigafab_twin::sharing::side(&out.core, totals(&out.report), &sliced);
        out.report.sharing = Some(gigafab_twin::sharing::compare(shared, whole));
    }
    if let Some((free, restricted)) = &free {
        out.report.residency = Some(gigafab_twin::residency::compare(
            restricted, &out.core, &free.core,
        ));
    }
    if let (Some(path), Some(series)) = (&a.plot, out.plot_series()) {
        let title = format!(
            "{} on {}: utilization and queue",
            out.report.policy, out.report.factory
        );
        std::fs::write(path, gigafab_twin::plot::render_svg(&series, &title))
            .with_context(|| format!("{}: cannot write plot", path.display()))?;
    }
    if let Some(path) = &a.jobs_out {
        let file = std::fs::File::create(path)
            .with_context(|| format!("{}: cannot write the jobs", path.display()))?;
        gigafab_twin::jobs_out::write_jobs_csv(&out.core, std::io::BufWriter::new(file))
            .with_context(|| format!("{}: cannot write the jobs", path.display()))?;
    }
    if let Some(n) = out.report.cancelled_reasons.get("unknown_job_type") {
        eprintln!(
            "warning: {n} jobs were cancelled: their work is in steps of job types the throughput matrix does not know (give --throughputs)"
        );
    }
    match a.output {
        Output::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&out.report)?)),
        Output::Table => emit(&out.report.table()),
    }
}

fn cmd_import_sacct(input: Option<PathBuf>, out: &Path) -> Result<()> {
    use gigafab_exec::slurm::SlurmCli;
    let (text, name) = match &input {
        Some(p) => (
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?,
            p.display().to_string(),
        ),
        None => {
            let args: Vec<String> = [
                "-a",
                "-P",
                "-X",
                "-S",
                "now-30days",
                "-o",
                "JobID,JobName,Account,Submit,Start,End,State,AllocTRES,Timelimit",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let o = gigafab_exec::slurm::RealSlurm::default()
                .run("sacct", &args)
                .context("cannot run `sacct` (is Slurm installed and on PATH?)")?;
            if !o.success {
                bail!("sacct failed: {}", o.stderr.trim());
            }
            (o.stdout, "sacct".to_string())
        }
    };
    let (jobs, skipped) = workload::sacct::parse(&text, &name)?;
    workload::native::write(out, &jobs)
        .with_context(|| format!("{}: cannot write", out.display()))?;
    eprintln!("wrote {} jobs to {}", jobs.len(), out.display());
    for (why, n) in skipped {
        eprintln!("skipped {n} records: {why}");
    }
    Ok(())
}

/// The arrival rate of `workload synth`: `--rate`, or `--load` of the
/// factory's accelerators for jobs of `mean` accelerator-seconds.
fn synth_rate(a: &SynthArgs, mean: f64) -> Result<f64> {
    match (a.rate, a.load) {
        (Some(r), None) => Ok(r),
        (None, Some(load)) => {
            if !(load.is_finite() && load > 0.0) {
                bail!("--load must be > 0");
            }
            let f = load_factory(a.factory.as_deref())?;
            Ok(load * f.physical_accelerators() as f64 * 3600.0 / mean)
        }
        _ => bail!("give either --rate JOBS_PER_HOUR or --load FRACTION --factory F"),
    }
}

/// `workload synth --profile mixed`.
fn cmd_synth_mixed(a: SynthArgs) -> Result<()> {
    use workload::mixed;
    let shares = mixed::Shares::parse(&a.mix).map_err(|e| anyhow::anyhow!("--mix: {e}"))?;
    let philly = if shares.training > 0.0 {
        synth::load_philly(&a.philly)
            .with_context(|| "the mixed profile's training reads --philly")?
    } else {
        Vec::new()
    };
    let pods = if shares.pods > 0.0 {
        let (jobs, _) = workload::alibaba::read(&a.pods)
            .with_context(|| "the mixed profile's pods read --pods (an Alibaba pod list)")?;
        mixed::pods_of(&jobs)
    } else {
        Vec::new()
    };
    let mut p = mixed::MixParams {
        jobs: a.jobs,
        rate_per_hour: 1.0,
        seed: a.seed,
        shares,
    };
    p.rate_per_hour = synth_rate(&a, mixed::mean_gpu_seconds(&p, &philly, &pods))?;
    let jobs = mixed::generate(&p, &philly, &pods)?;
    workload::native::write(&a.out, &jobs)
        .with_context(|| format!("{}: cannot write", a.out.display()))?;
    eprintln!(
        "wrote {} jobs to {} (mixed profile, {:.2} jobs/hour, seed {})",
        jobs.len(),
        a.out.display(),
        p.rate_per_hour,
        a.seed
    );
    Ok(())
}

fn cmd_synth(a: SynthArgs) -> Result<()> {
    if a.profile.trim().eq_ignore_ascii_case("mixed") {
        return cmd_synth_mixed(a);
    }
    let profile = synth::Profile::parse(&a.profile).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown profile `{}` (one of: gavel, philly, gigafactory, mixed)",
            a.profile
        )
    })?;
    let throughputs = match (&a.throughputs, profile) {
        (Some(p), _) => Some(workload::throughputs::load(p)?),
        (None, synth::Profile::Gavel) => Some(workload::throughputs::load(Path::new(
            "builtin:gavel-throughputs",
        ))?),
        (None, _) => None,
    };
    let philly = match profile {
        synth::Profile::Philly | synth::Profile::Gigafactory => Some(
            synth::load_philly(&a.philly)
                .with_context(|| "the philly and gigafactory profiles read --philly")?,
        ),
        synth::Profile::Gavel => None,
    };
    let mut p = synth::SynthParams::new(profile, a.jobs, 1.0, a.seed);
    p.gang_share = a.gang_share;
    p.rate_per_hour = synth_rate(&a, synth::mean_gpu_seconds(&p, philly.as_deref()))?;
    let mut jobs = synth::generate(&p, throughputs.as_ref(), philly.as_deref())?;
    if !(a.flexible.is_finite() && (0.0..=1.0).contains(&a.flexible)) {
        bail!("--flexible must be a fraction within 0..=1");
    }
    if !(a.slack_hours.is_finite() && a.slack_hours >= 0.0) {
        bail!("--slack-hours must be >= 0");
    }
    synth::add_deadlines(&mut jobs, a.flexible, a.slack_hours * 3600.0, a.seed);
    synth::assign_home_sites(&mut jobs, &a.home_sites, a.seed);
    workload::native::write(&a.out, &jobs)
        .with_context(|| format!("{}: cannot write", a.out.display()))?;
    eprintln!(
        "wrote {} jobs to {} ({} profile, {:.2} jobs/hour, seed {})",
        jobs.len(),
        a.out.display(),
        profile,
        p.rate_per_hour,
        a.seed
    );
    Ok(())
}

fn cmd_requests(path: &Path, output: Output) -> Result<()> {
    let s = workload::requests::read(path)?.summary();
    match output {
        Output::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&s)?)),
        Output::Table => {
            let tok = |t: &workload::requests::TokenStats| {
                format!(
                    "mean {:.0}, p50 {}, p99 {}, max {}",
                    t.mean, t.p50, t.p99, t.max
                )
            };
            emit(&format!(
                "{} requests over {:.0} s: {:.2}/s, peak {}/s\nprompt tokens: {}\noutput tokens: {}\n",
                s.requests,
                s.span_s,
                s.rate_per_s,
                s.peak_per_s,
                tok(&s.prompt_tokens),
                tok(&s.output_tokens)
            ))
        }
    }
}

fn cmd_factory_show(path: &Path, output: Output) -> Result<()> {
    let f = gigafab_twin::files::load_factory(path)?;
    let rows: Vec<serde_json::Value> = f
        .pools
        .iter()
        .map(|p| {
            let t = f.catalog.get(p.accel);
            serde_json::json!({
                "site": f.sites[p.site].name,
                "pool": p.name,
                "accelerator": t.id,
                "vendor": t.vendor.to_string(),
                "nodes": p.nodes,
                "accelerators_per_node": p.per_node,
                "accelerators": p.accelerators(),
                "scale_up_domain_nodes": p.domain_nodes,
                "nodes_per_leaf": p.leaf_nodes,
            })
        })
        .collect();
    match output {
        Output::Json => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&serde_json::json!({
                "name": f.name, "accelerators": f.physical_accelerators(), "units": f.accelerators(), "pools": rows
            }))?
        ))?,
        Output::Table => {
            use std::fmt::Write as _;
            let mut t = String::new();
            if f.physical_accelerators() == f.accelerators() {
                writeln!(t, "{}: {} accelerators", f.name, f.accelerators())?;
            } else {
                writeln!(
                    t,
                    "{}: {} accelerators, {} schedulable units (shared pools count each slice)",
                    f.name,
                    f.physical_accelerators(),
                    f.accelerators()
                )?;
            }
            writeln!(
                t,
                "{:<12} {:<16} {:<8} {:>7} {:>9} {:>12} {:>10} {:>6}",
                "site", "pool", "type", "nodes", "per node", "accelerators", "domain n", "leaf n"
            )?;
            for p in &f.pools {
                writeln!(
                    t,
                    "{:<12} {:<16} {:<8} {:>7} {:>9} {:>12} {:>10} {:>6}",
                    f.sites[p.site].name,
                    p.name,
                    f.catalog.get(p.accel).id,
                    p.nodes,
                    p.per_node,
                    p.accelerators(),
                    p.domain_nodes,
                    p.leaf_nodes
                )?;
            }
            emit(&t)?;
        }
    }
    Ok(())
}

/// Writes gigafab.1 and a page per command (`gigafab-serve.1`, ...).
fn cmd_man(out_dir: Option<&Path>) -> Result<()> {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let Some(dir) = out_dir else {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut buf)?;
        return emit(&String::from_utf8_lossy(&buf));
    };
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut pages = vec![(String::from("gigafab"), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("gigafab-{}", sub.get_name());
        let leaked: &'static str = Box::leak(name.clone().into_boxed_str());
        pages.push((name, sub.clone().name(leaked)));
    }
    for (name, c) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| format!("{}: cannot write", path.display()))?;
    }
    eprintln!("wrote the manual pages to {}", dir.display());
    Ok(())
}

/// Parses the command line; `serve` takes its `--config` file's keys for
/// the flags that neither the command line nor the environment set.
fn parse_cli() -> Result<Cli> {
    use clap::{CommandFactory, FromArgMatches};
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&argv);
    if let Some(("serve", sub)) = matches.subcommand() {
        let pos = argv.iter().position(|a| a == "serve").unwrap_or(1);
        if let Some(args) = serve::with_config(sub, &argv[pos + 1..])? {
            let mut all: Vec<std::ffi::OsString> = argv[..=pos].to_vec();
            all.extend(args);
            let m = Cli::command().get_matches_from(all);
            return Ok(Cli::from_arg_matches(&m)?);
        }
    }
    Ok(Cli::from_arg_matches(&matches)?)
}

fn main() {
    let cli = match parse_cli() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::exit(2);
        }
    };
    let r = match cli.cmd {
        Cmd::Sim(a) => cmd_sim(*a),
        Cmd::Workload(WorkloadCmd::Synth(a)) => cmd_synth(*a),
        Cmd::Workload(WorkloadCmd::ImportSacct { input, out }) => cmd_import_sacct(input, &out),
        Cmd::Workload(WorkloadCmd::Convert { input, format, out }) => read_workload(&input, format)
            .and_then(|jobs| {
                workload::native::write(&out, &jobs)
                    .with_context(|| format!("{}: cannot write", out.display()))?;
                eprintln!("wrote {} jobs to {}", jobs.len(), out.display());
                Ok(())
            }),
        Cmd::Workload(WorkloadCmd::Requests { input, output }) => cmd_requests(&input, output),
        Cmd::Workload(WorkloadCmd::Slices {
            input,
            format,
            accelerator,
            output,
        }) => cmd_slices(&input, format, &accelerator, output),
        Cmd::Factory(FactoryCmd::Show { factory, output }) => cmd_factory_show(&factory, output),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Serve(a) => serve::run(*a),
        Cmd::Gateway(a) => client::gateway::run(*a),
        Cmd::BenchEcho { port } => bench_gateway::echo_backend(port),
        Cmd::JobSupervise { args } => std::process::exit(gigafab_exec::local::supervise(&args)),
        Cmd::Client(c) => client::run(*c),
        Cmd::Agent(c) => agent::run(c),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "gigafab", &mut buf);
            emit(&String::from_utf8_lossy(&buf))
        }
        Cmd::Man { out_dir } => cmd_man(out_dir.as_deref()),
        Cmd::Openapi { out } => {
            let doc = serde_json::to_string_pretty(&gigafab_server::api::openapi_doc())
                .map(|d| d + "\n")
                .map_err(anyhow::Error::from);
            doc.and_then(|d| match out {
                Some(p) => std::fs::write(&p, d)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display())),
                None => emit(&d),
            })
        }
    };
    if let Err(e) = r {
        if let Some(client::ExitStatus(s)) = e.downcast_ref() {
            std::process::exit(*s);
        }
        eprintln!("error: {}", error_chain(&e));
        std::process::exit(1);
    }
}

/// An error and its causes, `: `-joined, each said once: a cause whose text
/// an outer message already carries (`cannot read x: No such file` over the
/// OS error itself) is not repeated.
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
