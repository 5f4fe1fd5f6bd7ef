//! `gigafab sim --no-departures`: the capacity run of a placement policy
//! (docs/scheduling.md, "Sharing").

use crate::Output;
use anyhow::{Context, Result, bail};
use clap::Args;
use gigafab_core::share::Placement;
use gigafab_twin::capacity::{self, Mode, Report, mean_sd};
use gigafab_twin::files::read_to_string;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct CapacityArgs {
    /// Capacity run: pods of an Alibaba pod list (--workload, default
    /// builtin:alibaba-openb-pods) arrive in a seeded random order and never
    /// leave, until their accelerator requests reach --arrive times the
    /// cluster's (--nodes); the report gives the share allocated.
    #[arg(long)]
    pub no_departures: bool,
    /// Alibaba node list of the capacity run (sn,cpu_milli,memory_mib,gpu,
    /// model) [default: builtin:alibaba-openb-nodes].
    #[arg(long, requires = "no_departures")]
    pub nodes: Option<PathBuf>,
    /// Placement policies of the capacity run, comma separated: random,
    /// best-fit, fgd, gigafab, or whole-gpus (no sharing: a fraction takes
    /// a whole accelerator) [default: all five].
    #[arg(long, requires = "no_departures", value_delimiter = ',')]
    pub placement: Vec<String>,
    /// Arrivals of the capacity run, as a multiple of the cluster's
    /// accelerators.
    #[arg(long, default_value_t = 1.3, requires = "no_departures")]
    pub arrive: f64,
    /// Runs per policy, with seeds --seed, --seed + 1, ...
    #[arg(long, default_value_t = 1, requires = "no_departures")]
    pub repeat: u32,
}

pub fn run(
    a: &CapacityArgs,
    workload: Option<&Path>,
    seed: u64,
    output: Output,
    plot: Option<&Path>,
) -> Result<()> {
    if !(a.arrive.is_finite() && a.arrive > 0.0 && a.arrive <= 10.0) {
        bail!("--arrive must be within (0, 10], got {}", a.arrive);
    }
    if a.repeat == 0 || a.repeat > 1000 {
        bail!("--repeat must be within 1..=1000");
    }
    let policies: Vec<Mode> = if a.placement.is_empty() {
        Placement::ALL
            .into_iter()
            .map(Mode::Shared)
            .chain([Mode::Whole])
            .collect()
    } else {
        a.placement
            .iter()
            .map(|p| match Placement::parse(p) {
                Some(p) => Ok(Mode::Shared(p)),
                None if p.trim().eq_ignore_ascii_case("whole-gpus") => Ok(Mode::Whole),
                None => Err(anyhow::anyhow!(
                    "--placement: unknown policy `{p}` (random, best-fit, fgd, gigafab, whole-gpus)"
                )),
            })
            .collect::<Result<_>>()?
    };
    let nodes_path = a
        .nodes
        .clone()
        .unwrap_or_else(|| PathBuf::from("builtin:alibaba-openb-nodes"));
    let pods_path = workload
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("builtin:alibaba-openb-pods"));
    let text =
        read_to_string(&nodes_path).with_context(|| format!("reading {}", nodes_path.display()))?;
    let cluster = capacity::parse_nodes(&text, &nodes_path.display().to_string())?;
    let text =
        read_to_string(&pods_path).with_context(|| format!("reading {}", pods_path.display()))?;
    let pods = capacity::parse_pods(&text, &pods_path.display().to_string(), &cluster)?;
    if pods.iter().all(|d| d.gpus == 0) {
        bail!(
            "{}: no pod asks for a GPU: nothing to place",
            pods_path.display()
        );
    }
    let mut reports: Vec<Report> = Vec::new();
    for &p in &policies {
        for k in 0..a.repeat as u64 {
            reports.push(capacity::run_mode(&cluster, &pods, p, seed + k, a.arrive));
        }
    }
    if let Some(path) = plot {
        let title = format!(
            "Allocation without departures: {} nodes, {} accelerators, {} pods",
            cluster.nodes.len(),
            cluster.gpus(),
            pods.len()
        );
        std::fs::write(path, capacity::curve_svg(&reports, &title))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match output {
        Output::Json => {
            let summary: Vec<Summary> = policies.iter().map(|p| summarise(*p, &reports)).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&CapacityOut {
                    nodes: cluster.nodes.len(),
                    gpus: cluster.gpus(),
                    pods: pods.len(),
                    arrive: a.arrive,
                    summary,
                    runs: reports,
                })?
            );
        }
        Output::Table => {
            println!(
                "capacity run: {} nodes, {} accelerators, {} pods; arrivals to {:.0}%, {} run(s) per policy from seed {seed}",
                cluster.nodes.len(),
                cluster.gpus(),
                pods.len(),
                a.arrive * 100.0,
                a.repeat
            );
            println!(
                "{:<11} {:>16} {:>16} {:>11} {:>11} {:>12} {:>10}",
                "policy",
                "alloc@100% (sd)",
                "alloc@end (sd)",
                "pods placed",
                "pods failed",
                "GPUs in use",
                "GPUs saved"
            );
            for p in &policies {
                let s = summarise(*p, &reports);
                println!(
                    "{:<11} {:>9.2}% ({:.2}) {:>9.2}% ({:.2}) {:>11.0} {:>11.0} {:>12.0} {:>10.0}",
                    s.policy,
                    s.allocated_at_100_pct,
                    s.allocated_at_100_sd,
                    s.allocated_at_end_pct,
                    s.allocated_at_end_sd,
                    s.pods_placed,
                    s.pods_failed,
                    s.gpus_occupied,
                    s.gpus_saved
                );
            }
            println!(
                "(alloc: share of the accelerators given out; GPUs saved: what the placed pods would take without sharing, less the GPUs they hold)"
            );
        }
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct CapacityOut {
    nodes: usize,
    gpus: u64,
    pods: usize,
    arrive: f64,
    summary: Vec<Summary>,
    runs: Vec<Report>,
}

/// A policy's runs: means (and sample standard deviations).
#[derive(serde::Serialize)]
struct Summary {
    policy: &'static str,
    runs: usize,
    allocated_at_100_pct: f64,
    allocated_at_100_sd: f64,
    allocated_at_end_pct: f64,
    allocated_at_end_sd: f64,
    pods_placed: f64,
    pods_failed: f64,
    gpus_failed: f64,
    gpus_occupied: f64,
    /// Accelerators the placed pods would take without sharing, less those
    /// they hold.
    gpus_saved: f64,
}

fn summarise(p: Mode, reports: &[Report]) -> Summary {
    let runs: Vec<&Report> = reports.iter().filter(|r| r.policy == p.name()).collect();
    let col = |f: fn(&Report) -> f64| mean_sd(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let (a100, a100sd) = col(|r| r.allocated_at_100_pct);
    let (end, endsd) = col(|r| r.allocated_at_end_pct);
    Summary {
        policy: p.name(),
        runs: runs.len(),
        allocated_at_100_pct: a100,
        allocated_at_100_sd: a100sd,
        allocated_at_end_pct: end,
        allocated_at_end_sd: endsd,
        pods_placed: col(|r| r.pods_placed as f64).0,
        pods_failed: col(|r| r.pods_failed as f64).0,
        gpus_failed: col(|r| r.gpus_failed).0,
        gpus_occupied: col(|r| r.gpus_occupied as f64).0,
        gpus_saved: col(|r| r.whole_gpus_of_placed as f64 - r.gpus_occupied as f64).0,
    }
}
