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
    /// Directory of the shared real data.
    #[arg(long, default_value = "../shared/data")]
    data: PathBuf,
    /// Directory of the example factories.
    #[arg(long, default_value = "examples/factories")]
    factories: PathBuf,
    /// Offered load of the gigafactory workload.
    #[arg(long, default_value_t = 0.9)]
    load: f64,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
}

#[derive(serde::Serialize)]
struct Row {
    scenario: &'static str,
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

pub fn run(a: BenchArgs) -> Result<()> {
    if a.repeat == 0 {
        bail!("--repeat must be >= 1");
    }
    let (name, factory_file, kind, sizes) = match a.scenario {
        Scenario::Gavel => ("gavel", "gavel-108.toml", PolicyKind::Hetero, vec![1500]),
        Scenario::Gigafactory => (
            "gigafactory",
            "gigafactory-100k.toml",
            PolicyKind::Fairshare,
            vec![10_000, 100_000, 1_000_000],
        ),
    };
    let sizes = a.jobs.clone().unwrap_or(sizes);
    let factory = Factory::load(&a.factories.join(factory_file))?;
    let tput_path = a.data.join("gavel/simulation_throughputs.json");
    let tput = throughputs::load(&tput_path)?;
    let philly = synth::load_philly(&a.data.join("traces/philly_job_distribution.csv"))
        .context("the gigafactory benchmark reads the Philly distribution")?;
    let mut rows = Vec::new();
    for &n in &sizes {
        let (params, tp, ph) = match a.scenario {
            Scenario::Gavel => {
                // 3 jobs/hour: ~88% offered load on 108 GPUs
                let p = synth::SynthParams::new(synth::Profile::Gavel, n, 3.0, 0);
                (p, Some(&tput), None)
            }
            Scenario::Gigafactory => {
                let mut p = synth::SynthParams::new(synth::Profile::Gigafactory, n, 1.0, 1);
                let mean = synth::mean_gpu_seconds(&p, Some(&philly));
                p.rate_per_hour = a.load * factory.accelerators() as f64 * 3600.0 / mean;
                (p, None, Some(philly.as_slice()))
            }
        };
        let jobs = synth::generate(&params, tp, ph)?;
        let mut walls = Vec::new();
        let mut last = None;
        for _ in 0..a.repeat {
            let out = simulate(
                factory.clone(),
                Policy::new(kind),
                tput.clone(),
                jobs.clone(),
                &[],
                &SimConfig {
                    seed: 1,
                    failures: Some(Failures::default()),
                    measure: None,
                    timeline_points: None,
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
                "{:<12} {:<10} jobs {:>9}  events {:>9}  wall {:>8.3} s (min {:.3})  {:>10.0} events/s  peak RSS {:>7.0} MiB  util {:.3}\n",
                row.scenario,
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
    if a.output == Output::Json {
        crate::emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
    }
    Ok(())
}
