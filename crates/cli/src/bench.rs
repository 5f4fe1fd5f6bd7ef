//! `gigafab bench`: the digital twin's speed benchmarks.
//!
//! Workloads are generated in memory (seeded) from the real data in
//! `--data`, so the figures measure the simulation, not file parsing.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use gigafab_core::{Factory, Policy, PolicyKind};
use gigafab_twin::workload::{synth, throughputs};
use gigafab_twin::{Failures, SimConfig, simulate};
use std::path::PathBuf;

use crate::Output;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 1,500 gavel-profile jobs on the 108-GPU Gavel cluster, `hetero`.
    Gavel,
    /// Gigafactory: philly jobs plus large gangs at ~90% offered load on
    /// 100,000 accelerators, `fairshare` with backfill and failures on.
    Gigafactory,
    /// Scale: the gigafactory workload family at ~90% offered load on the
    /// 500,000 accelerators of `campus-500k` (1M and 10M jobs), `fairshare`
    /// with backfill and failures on.
    Campus,
    /// A queue years deep: 28,755 Philly-profile jobs at 8 jobs/hour on
    /// the 108-GPU Gavel cluster, `backfill` (or `--policy`), failures off.
    DeepQueue,
    /// A real-log-sized EASY run: 250,000 Philly-profile jobs at 95%
    /// offered load on 1,152 accelerators (144 nodes of 8), `backfill`
    /// (or `--policy`), failures off.
    LogEasy,
    /// Control plane: HTTP submissions with durable commits from
    /// `--clients` concurrent clients (SQLite, or `--database` PostgreSQL).
    ServeSubmit,
    /// Control plane: scheduling-pass time with `--queued` jobs waiting on
    /// a full 100,000-accelerator fleet.
    ServeSchedule,
    /// Model endpoints: what the gateway adds to a request (throughput
    /// with `--clients` in flight, latency at `--rate` req/s), beside
    /// the replica called directly and nginx proxying it; the cold start.
    Gateway,
}

/// The factory of the `log-easy` scenario: 1,152 accelerators in nodes of
/// 8, the size of the large Parallel Workloads Archive logs.
const LOG_FACTORY: &str = "name = \"log-1152\"\n[[sites]]\nname = \"site\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 144\naccelerators_per_node = 8\n";

/// Variants of the gigafactory workload: the same family, shaped to stress
/// other paths of the twin.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// As generated: checkpoints on large gangs, a few tenants.
    Standard,
    /// No job has a checkpoint interval: every failure restarts a run
    /// from zero (bounded by the requeue limit).
    NoCheckpoints,
    /// 200 tenants under fair share.
    #[value(name = "tenants-200")]
    Tenants200,
    /// Runs a tenth of their time limit (the limit is the generated
    /// duration): backfill plans with limits far from the real ends.
    ShortRuns,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Standard => "standard",
            Variant::NoCheckpoints => "no-checkpoints",
            Variant::Tenants200 => "tenants-200",
            Variant::ShortRuns => "short-runs",
        }
    }

    /// Reshapes a generated workload.
    fn apply(self, jobs: &mut [gigafab_core::JobSpec]) {
        for (i, j) in jobs.iter_mut().enumerate() {
            match self {
                Variant::Standard => {}
                Variant::NoCheckpoints => j.checkpoint_s = None,
                Variant::Tenants200 => j.tenant = Some(format!("t{}", i % 200)),
                Variant::ShortRuns => {
                    if let Some(d) = j.duration_s {
                        j.time_limit_s = Some(d);
                        j.duration_s = Some(d / 10.0);
                    }
                }
            }
        }
    }
}

/// Benchmark options.
#[derive(Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[arg(long, value_enum, default_value = "gavel")]
    scenario: Scenario,
    /// Job counts to run (gigafactory: a scaling series).
    #[arg(long, value_delimiter = ',')]
    jobs: Option<Vec<usize>>,
    /// Repetitions per size (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Directory of the real data (the repository's `data/`) [default: the
    /// copy embedded in the binary].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Directory of the example factories (the repository's
    /// `examples/factories`) [default: the copies embedded in the binary].
    #[arg(long)]
    factories: Option<PathBuf>,
    /// Offered load of the gigafactory workload.
    #[arg(long, default_value_t = 0.9)]
    load: f64,
    /// Policy instead of the scenario's own (twin scenarios).
    #[arg(long, value_parser = crate::parse_policy)]
    policy: Option<PolicyKind>,
    /// Gigafactory: workload variants to run, each at every size.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "standard")]
    variant: Vec<Variant>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: Output,
    /// serve-*: PostgreSQL server to use instead of the embedded SQLite
    /// (a fresh database is created on it and dropped afterwards).
    #[arg(long)]
    database: Option<String>,
    /// serve-*: concurrent HTTP clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// serve-submit: submissions measured (after a warm-up).
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// serve-schedule: jobs waiting while the passes are timed.
    #[arg(long, default_value_t = 10_000)]
    queued: usize,
    /// gateway: requests a second of the fixed-rate measure.
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
}

#[derive(serde::Serialize)]
struct Row {
    scenario: &'static str,
    variant: &'static str,
    policy: &'static str,
    jobs: usize,
    accelerators: u64,
    events: u64,
    wall_s_median: f64,
    wall_s_min: f64,
    events_per_s: f64,
    peak_rss_mib: Option<f64>,
    utilization: f64,
    avg_jct_s: f64,
}

/// Peak resident memory of this process (Linux), MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// An example factory from `dir`, or the embedded copy.
pub fn load_example(dir: Option<&std::path::Path>, file: &str) -> Result<Factory> {
    Ok(match dir {
        Some(d) => gigafab_twin::files::load_factory(&d.join(file))?,
        None => gigafab_twin::files::load_factory(std::path::Path::new(&format!(
            "builtin:{}",
            file.trim_end_matches(".toml")
        )))?,
    })
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.repeat == 0 {
        bail!("--repeat must be >= 1");
    }
    if matches!(
        a.scenario,
        Scenario::ServeSubmit | Scenario::ServeSchedule | Scenario::Gateway
    ) {
        return run_serve(&a);
    }
    let (name, factory_file, kind, sizes) = match a.scenario {
        Scenario::ServeSubmit | Scenario::ServeSchedule | Scenario::Gateway => {
            unreachable!("handled above")
        }
        Scenario::Gavel => ("gavel", "gavel-108.toml", PolicyKind::Hetero, vec![1500]),
        Scenario::Gigafactory => (
            "gigafactory",
            "gigafactory-100k.toml",
            PolicyKind::Fairshare,
            vec![10_000, 100_000, 1_000_000],
        ),
        Scenario::DeepQueue => (
            "deep-queue",
            "gavel-108.toml",
            PolicyKind::Backfill,
            vec![28_755],
        ),
        Scenario::LogEasy => ("log-easy", "", PolicyKind::Backfill, vec![250_000]),
        Scenario::Campus => (
            "campus",
            "campus-500k.toml",
            PolicyKind::Fairshare,
            vec![1_000_000, 10_000_000],
        ),
    };
    let kind = a.policy.unwrap_or(kind);
    let sizes = a.jobs.clone().unwrap_or(sizes);
    let factory = if a.scenario == Scenario::LogEasy {
        Factory::parse(LOG_FACTORY, "log-1152")?
    } else {
        load_example(a.factories.as_deref(), factory_file)?
    };
    // the queueing scenarios compare policies run for run: no failures
    let failures = !matches!(a.scenario, Scenario::DeepQueue | Scenario::LogEasy);
    let data = |file: &str, builtin: &str| match &a.data {
        Some(d) => d.join(file),
        None => PathBuf::from(format!("builtin:{builtin}")),
    };
    let tput = throughputs::load(&data(
        "gavel/simulation_throughputs.json",
        "gavel-throughputs",
    ))?;
    let philly = synth::load_philly(&data("traces/philly_job_distribution.csv", "philly"))
        .context("the gigafactory benchmark reads the Philly distribution")?;
    let mut rows = Vec::new();
    let variants = if matches!(a.scenario, Scenario::Gigafactory | Scenario::Campus) {
        a.variant.clone()
    } else {
        vec![Variant::Standard]
    };
    for &n in &sizes {
        for &variant in &variants {
            let (params, tp, ph) = match a.scenario {
                Scenario::Gavel => {
                    // 3 jobs/hour: ~88% offered load on 108 GPUs
                    let p = synth::SynthParams::new(synth::Profile::Gavel, n, 3.0, 0);
                    (p, Some(&tput), None)
                }
                Scenario::ServeSubmit | Scenario::ServeSchedule | Scenario::Gateway => {
                    unreachable!("handled above")
                }
                Scenario::DeepQueue => {
                    let p = synth::SynthParams::new(synth::Profile::Philly, n, 8.0, 3);
                    (p, None, Some(philly.as_slice()))
                }
                Scenario::LogEasy => {
                    let mut p = synth::SynthParams::new(synth::Profile::Philly, n, 1.0, 5);
                    let mean = synth::mean_gpu_seconds(&p, Some(&philly));
                    p.rate_per_hour = 0.95 * factory.accelerators() as f64 * 3600.0 / mean;
                    (p, None, Some(philly.as_slice()))
                }
                Scenario::Gigafactory | Scenario::Campus => {
                    let mut p = synth::SynthParams::new(synth::Profile::Gigafactory, n, 1.0, 1);
                    let mean = synth::mean_gpu_seconds(&p, Some(&philly));
                    p.rate_per_hour = a.load * factory.accelerators() as f64 * 3600.0 / mean;
                    (p, None, Some(philly.as_slice()))
                }
            };
            let mut jobs = synth::generate(&params, tp, ph)?;
            variant.apply(&mut jobs);
            let mut walls = Vec::new();
            let mut last = None;
            for r in 0..a.repeat {
                // the last run takes the workload itself: one copy less in
                // memory at the largest sizes
                let run_jobs = if r + 1 == a.repeat {
                    std::mem::take(&mut jobs)
                } else {
                    jobs.clone()
                };
                let out = simulate(
                    factory.clone(),
                    Policy::new(kind),
                    tput.clone(),
                    run_jobs,
                    &[],
                    &SimConfig {
                        seed: 1,
                        failures: failures.then(Failures::default),
                        measure: None,
                        timeline_points: None,
                        endpoints: Vec::new(),
                    },
                    &mut |_, _| {},
                )?;
                walls.push(out.report.wall_time_s);
                last = Some(out.report);
            }
            walls.sort_by(f64::total_cmp);
            let r = last.expect("repeat >= 1");
            let med = walls[walls.len() / 2];
            rows.push(Row {
                scenario: name,
                variant: variant.name(),
                policy: kind.name(),
                jobs: n,
                accelerators: factory.accelerators(),
                events: r.events,
                wall_s_median: med,
                wall_s_min: walls[0],
                events_per_s: r.events as f64 / med,
                peak_rss_mib: peak_rss_mib(),
                utilization: r.utilization,
                avg_jct_s: r.avg_jct_s,
            });
            if a.output == Output::Table {
                let row = rows.last().expect("pushed");
                crate::emit(&format!(
                    "{:<12} {:<15} {:<10} jobs {:>9}  events {:>9}  wall {:>8.3} s (min {:.3})  {:>10.0} events/s  peak RSS {:>7.0} MiB  util {:.3}\n",
                    row.scenario,
                    row.variant,
                    row.policy,
                    row.jobs,
                    row.events,
                    row.wall_s_median,
                    row.wall_s_min,
                    row.events_per_s,
                    row.peak_rss_mib.unwrap_or(f64::NAN),
                    row.utilization
                ))?;
            }
        }
    }
    if a.output == Output::Json {
        crate::emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
    }
    Ok(())
}

/// The gateway benchmark's figures as lines.
fn gateway_table(v: &serde_json::Value) -> String {
    let f = |x: &serde_json::Value| x.as_f64().unwrap_or(0.0);
    let mut s = format!(
        "gateway: {} requests a way, {} clients in flight (closed loop), then at {} req/s (open loop)\n",
        v["requests"], v["clients"], v["ways"][0]["rate_rps"]
    );
    s += &format!(
        "{:<16} {:>12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>7} {:>12}\n",
        "way",
        "req/s",
        "p50 ms",
        "p99 ms",
        "at rate r/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "cpu µs/req"
    );
    for w in v["ways"].as_array().into_iter().flatten() {
        s += &format!(
            "{:<16} {:>12.0} {:>10.3} {:>10.3} {:>12.0} {:>10.3} {:>10.3} {:>7} {:>12}\n",
            w["way"].as_str().unwrap_or("?"),
            f(&w["throughput_rps"]),
            f(&w["closed_p50_ms"]),
            f(&w["closed_p99_ms"]),
            f(&w["rate_achieved_rps"]),
            f(&w["rate_p50_ms"]),
            f(&w["rate_p99_ms"]),
            w["errors"],
            w["proxy_cpu_us"]
                .as_f64()
                .map_or("-".to_string(), |x| format!("{x:.1}"))
        );
    }
    let ratio = |k: &str| v[k].as_f64().map_or("-".to_string(), |x| format!("{x:.2}"));
    s += &format!(
        "added p99 at the rate: {:.3} ms; throughput over nginx's: gateway {}, gigafab-gateway {}; CPU per request over nginx's: gateway {}, gigafab-gateway {}; cold start: replica running {:.3} s after the request, answered after {:.3} s\n",
        f(&v["added_p99_ms"]),
        v["vs_nginx"]
            .as_f64()
            .map_or("no nginx".to_string(), |x| format!("{x:.2}")),
        ratio("standalone_vs_nginx"),
        ratio("cpu_vs_nginx"),
        ratio("standalone_cpu_vs_nginx"),
        f(&v["cold_start_to_replica_s"]),
        f(&v["cold_start_to_answer_s"])
    );
    s
}

fn run_serve(a: &BenchArgs) -> Result<()> {
    use crate::bench_serve::{ServeBench, schedule, submit};
    if a.clients == 0 || a.clients > 4096 {
        bail!("--clients must be within 1..=4096");
    }
    if a.requests == 0 || a.queued == 0 {
        bail!("--requests and --queued must be >= 1");
    }
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 1e6) {
        bail!("--rate must be above 0 and at most 1000000");
    }
    let factory = match a.scenario {
        Scenario::ServeSchedule => load_example(a.factories.as_deref(), "gigafactory-100k.toml")?,
        _ => gigafab_twin::files::load_factory(std::path::Path::new("builtin:local"))?,
    };
    let b = ServeBench {
        database: a.database.clone(),
        clients: a.clients,
        requests: a.requests,
        factory,
        queued: a.queued,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    for _ in 0..a.repeat {
        let v = rt.block_on(async {
            match a.scenario {
                Scenario::ServeSubmit => submit(&b)
                    .await
                    .map(|f| serde_json::to_value(f).unwrap_or_default()),
                Scenario::Gateway => crate::bench_gateway::gateway(&b, a.rate)
                    .await
                    .map(|f| serde_json::to_value(f).unwrap_or_default()),
                _ => schedule(&b)
                    .await
                    .map(|f| serde_json::to_value(f).unwrap_or_default()),
            }
        })?;
        if a.output == Output::Table {
            match a.scenario {
                Scenario::ServeSubmit => println!(
                    "serve-submit {}: {} clients, {} submits in {:.2} s: {:.0} submits/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({:.1} jobs per commit)",
                    v["store"].as_str().unwrap_or("?"),
                    v["clients"],
                    v["submits"],
                    v["wall_s"].as_f64().unwrap_or(0.0),
                    v["submits_per_s"].as_f64().unwrap_or(0.0),
                    v["p50_ms"].as_f64().unwrap_or(0.0),
                    v["p99_ms"].as_f64().unwrap_or(0.0),
                    v["max_ms"].as_f64().unwrap_or(0.0),
                    v["jobs_per_commit"].as_f64().unwrap_or(0.0)
                ),
                Scenario::Gateway => print!("{}", gateway_table(&v)),
                _ => println!(
                    "serve-schedule {}: {} accelerators, {} queued, {} running: pass median {:.1} ms, max {:.1} ms ({} passes)",
                    v["store"].as_str().unwrap_or("?"),
                    v["accelerators"],
                    v["queued"],
                    v["running"],
                    v["pass_ms_median"].as_f64().unwrap_or(0.0),
                    v["pass_ms_max"].as_f64().unwrap_or(0.0),
                    v["passes_sampled"]
                ),
            }
        }
        rows.push(v);
    }
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}
