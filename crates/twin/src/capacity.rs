//! Capacity runs without departures: how much of a cluster's accelerator
//! capacity a placement policy fills before sharing fragments it.
//!
//! The experiment of Weng et al. (USENIX ATC'23, §6): pods of a trace arrive
//! one by one in a seeded random order and never leave; a pod placed nowhere
//! fails and is gone. When the trace's pods ask for less than `arrive` times
//! the cluster's accelerators, pods drawn from it at random (with
//! replacement) follow until they do. The run records, as arrivals grow,
//! the share of the accelerators allocated: the allocation curve.
//!
//! Nodes come from an Alibaba node list (`sn,cpu_milli,memory_mib,gpu,
//! model`); pods from an Alibaba pod list (`cpu_milli,memory_mib,num_gpu,
//! gpu_milli,gpu_spec`; other columns ignored). Placement is the core's
//! [`gigafab_core::share::place`]: fractions of any size on an
//! accelerator, as time-slicing with free shares allows. The server's
//! shared pools are fixed layouts (one slice size per pool), which cannot
//! pack as tightly.

use crate::workload::WorkloadError;
use gigafab_core::rng::Rng;
use gigafab_core::share::{
    Demand, FragCache, MAX_GPUS, MILLI, MaxSpec, Models, NodeRes, Placement, Typical, place,
};
use serde::Serialize;
use std::fmt::Write;

/// The cluster and pods of a capacity run.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub nodes: Vec<NodeRes>,
    /// Accelerator model names; a node's `model` indexes this.
    pub models: Vec<String>,
}

impl Cluster {
    /// Accelerators in the cluster.
    pub fn gpus(&self) -> u64 {
        self.nodes.iter().map(|n| n.n as u64).sum()
    }
}

/// One data row of a CSV file, its cells found by column name.
struct Row<'a> {
    record: &'a csv::StringRecord,
    cols: &'a [usize],
    names: &'a [&'a str],
    file: &'a str,
    line: usize,
}

impl Row<'_> {
    fn cell(&self, k: usize) -> &str {
        self.record[self.cols[k]].trim()
    }

    fn err(&self, k: usize, message: String) -> WorkloadError {
        WorkloadError::new(self.file, self.line, self.names[k], message)
    }

    /// A whole number up to `max`; an empty cell is 0.
    fn num(&self, k: usize, max: u64) -> Result<u64, WorkloadError> {
        let s = self.cell(k);
        if s.is_empty() {
            return Ok(0);
        }
        s.parse::<u64>()
            .ok()
            .filter(|&v| v <= max)
            .ok_or_else(|| self.err(k, format!("expected a whole number up to {max}, got `{s}`")))
    }
}

/// Calls `each` on every data row of `text`, a CSV file with a header
/// naming `names` (any order, more columns allowed); `what` names the file
/// kind in errors. Returns the number of data rows.
fn each_row(
    text: &str,
    file: &str,
    names: &[&str],
    what: &str,
    mut each: impl FnMut(&Row) -> Result<(), WorkloadError>,
) -> Result<usize, WorkloadError> {
    let mut rdr = crate::workload::csv_rows(text);
    let mut record = csv::StringRecord::new();
    let mut columns: Option<(Vec<usize>, usize)> = None;
    let mut rows = 0;
    while let Some(line) = crate::workload::next_row(&mut rdr, &mut record, file)? {
        let Some((cols, width)) = &columns else {
            let needs = format!("{what} needs {}", names.join(","));
            columns = Some(crate::workload::header_columns(
                &record, names, file, line, &needs,
            )?);
            continue;
        };
        crate::workload::check_width(&record, (cols, *width), names, file, line)?;
        each(&Row {
            record: &record,
            cols,
            names,
            file,
            line,
        })?;
        rows += 1;
    }
    if rows == 0 {
        return Err(WorkloadError::new(
            file,
            1,
            "",
            format!(
                "{what} is empty: expected a header naming {} and rows",
                names.join(",")
            ),
        ));
    }
    Ok(rows)
}

/// Reads an Alibaba node list.
pub fn parse_nodes(text: &str, file: &str) -> Result<Cluster, WorkloadError> {
    let mut cluster = Cluster {
        nodes: Vec::new(),
        models: Vec::new(),
    };
    each_row(
        text,
        file,
        &["cpu_milli", "memory_mib", "gpu", "model"],
        "an Alibaba node list",
        |row| {
            let cpu = row.num(0, u32::MAX as u64)? as u32;
            let mem = row.num(1, u64::MAX / 2)?;
            let gpus = row.num(2, MAX_GPUS as u64)? as u8;
            let model = model_index(&mut cluster.models, row.cell(3)).map_err(|m| row.err(3, m))?;
            cluster.nodes.push(NodeRes::new(model, cpu, mem, gpus));
            Ok(())
        },
    )?;
    Ok(cluster)
}

fn model_index(models: &mut Vec<String>, name: &str) -> Result<u8, String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        return Err(format!("bad GPU model `{name}`"));
    }
    if let Some(i) = models.iter().position(|m| m.eq_ignore_ascii_case(name)) {
        return Ok(i as u8);
    }
    if models.len() >= 64 {
        return Err("more than 64 GPU models".into());
    }
    models.push(name.to_string());
    Ok((models.len() - 1) as u8)
}

/// Reads the demands of an Alibaba pod list against `cluster`'s models (a
/// `gpu_spec` naming a model the cluster lacks is an error).
pub fn parse_pods(text: &str, file: &str, cluster: &Cluster) -> Result<Vec<Demand>, WorkloadError> {
    let mut pods = Vec::new();
    each_row(
        text,
        file,
        &[
            "cpu_milli",
            "memory_mib",
            "num_gpu",
            "gpu_milli",
            "gpu_spec",
        ],
        "an Alibaba pod list",
        |row| {
            let cpu = row.num(0, u32::MAX as u64)? as u32;
            let mem = row.num(1, u64::MAX / 2)?;
            let gpus = row.num(2, MAX_GPUS as u64)? as u8;
            let milli = row.num(3, MILLI as u64)? as u16;
            if gpus == 1 && milli == 0 {
                return Err(row.err(
                    3,
                    "a pod with one GPU asks 1 to 1000 thousandths of it".into(),
                ));
            }
            let mut models = Models::ANY;
            let spec = row.cell(4);
            if !spec.is_empty() && !spec.eq_ignore_ascii_case("nan") {
                for m in spec.split('|').map(str::trim) {
                    let i = cluster
                        .models
                        .iter()
                        .position(|c| c.eq_ignore_ascii_case(m))
                        .ok_or_else(|| {
                            row.err(
                                4,
                                format!(
                                    "GPU model `{m}` is not in the cluster ({})",
                                    cluster.models.join(", ")
                                ),
                            )
                        })?;
                    models.0 |= 1 << i;
                }
            }
            pods.push(Demand::new(cpu, mem, gpus, milli, models));
            Ok(())
        },
    )?;
    Ok(pods)
}

/// One point of the allocation curve, in percent of the cluster's
/// accelerators.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub arrived_pct: f64,
    pub allocated_pct: f64,
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub policy: &'static str,
    pub seed: u64,
    pub gpus: u64,
    pub pods_arrived: u64,
    pub pods_placed: u64,
    pub pods_failed: u64,
    /// Accelerators holding any allocation at the end.
    pub gpus_occupied: u64,
    /// Accelerators the placed pods would take without sharing (each
    /// fraction a whole one): less `gpus_occupied`, what sharing saved.
    pub whole_gpus_of_placed: u64,
    /// Accelerators asked for by pods that failed.
    pub gpus_failed: f64,
    /// Allocated accelerators, percent, when arrivals reached 100% of them.
    pub allocated_at_100_pct: f64,
    /// ... and at the end (arrivals at `arrive`, e.g. 130%).
    pub allocated_at_end_pct: f64,
    /// Each whole percent of arrivals.
    pub curve: Vec<Point>,
}

/// How the accelerators are given out in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fractions share accelerators, placed by this policy.
    Shared(Placement),
    /// No sharing: a fraction takes a whole accelerator (best fit), as
    /// gigafab did before shared pools. Arrivals still count what was
    /// asked; the allocated share counts whole accelerators taken.
    Whole,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shared(p) => p.name(),
            Mode::Whole => "whole-gpus",
        }
    }
}

/// Runs `pods` into `cluster` under `policy` until the arrived accelerator
/// requests reach `arrive` times the cluster's accelerators.
pub fn run(
    cluster: &Cluster,
    pods: &[Demand],
    policy: Placement,
    seed: u64,
    arrive: f64,
) -> Report {
    run_mode(cluster, pods, Mode::Shared(policy), seed, arrive)
}

/// [`run`] in either mode.
pub fn run_mode(cluster: &Cluster, pods: &[Demand], mode: Mode, seed: u64, arrive: f64) -> Report {
    let policy = match mode {
        Mode::Shared(p) => p,
        Mode::Whole => Placement::BestFit,
    };
    let mut rng = Rng::new(seed);
    let mut order: Vec<usize> = (0..pods.len()).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let capacity = cluster.gpus() * MILLI as u64;
    let target = (arrive * capacity as f64).ceil() as u64;
    let mut nodes = cluster.nodes.clone();
    let typical = Typical::of(pods);
    let mut cache = if policy == Placement::Gigafab {
        FragCache::cpu_aware(typical)
    } else {
        FragCache::new(typical)
    };
    let mut frags: Vec<f64> = nodes.iter().map(|n| cache.frag(n)).collect();
    let max = MaxSpec::of(&nodes);
    let mut place_rng = rng.fork(1);
    let (mut arrived, mut allocated) = (0u64, 0u64);
    let mut report = Report {
        policy: mode.name(),
        seed,
        gpus: cluster.gpus(),
        pods_arrived: 0,
        pods_placed: 0,
        pods_failed: 0,
        gpus_occupied: 0,
        whole_gpus_of_placed: 0,
        gpus_failed: 0.0,
        allocated_at_100_pct: 0.0,
        allocated_at_end_pct: 0.0,
        curve: vec![Point {
            arrived_pct: 0.0,
            allocated_pct: 0.0,
        }],
    };
    let pct = |x: u64| 100.0 * x as f64 / capacity.max(1) as f64;
    if pods.iter().all(|d| d.gpu_milli_total() == 0) {
        // nothing would ever arrive on an accelerator
        return report;
    }
    let mut next_step = 1u64;
    let mut k = 0usize;
    let mut at_100 = None;
    while arrived < target && !pods.is_empty() {
        let d = if k < order.len() {
            &pods[order[k]]
        } else {
            &pods[rng.below(pods.len() as u64) as usize]
        };
        k += 1;
        report.pods_arrived += 1;
        arrived += d.gpu_milli_total();
        let whole = Demand::new(d.cpu_milli, d.mem_mib, d.gpus, MILLI, d.models);
        let d = if mode == Mode::Whole && d.gpus > 0 {
            &whole
        } else {
            d
        };
        match place(&nodes, &frags, d, policy, &mut cache, max, &mut place_rng) {
            Some(c) => {
                let i = c.node as usize;
                nodes[i] = nodes[i].with(d, c.gpu);
                frags[i] = cache.frag(&nodes[i]);
                allocated += d.gpu_milli_total();
                report.pods_placed += 1;
                report.whole_gpus_of_placed += d.gpus as u64;
            }
            None => {
                report.pods_failed += 1;
                report.gpus_failed += d.gpu_milli_total() as f64 / MILLI as f64;
            }
        }
        // one point per whole percent of arrivals crossed
        while arrived * 100 >= next_step * capacity {
            report.curve.push(Point {
                arrived_pct: next_step as f64,
                allocated_pct: pct(allocated),
            });
            if next_step == 100 {
                at_100 = Some(pct(allocated));
            }
            next_step += 1;
        }
    }
    report.gpus_occupied = nodes
        .iter()
        .flat_map(|n| n.gpus().iter())
        .filter(|&&l| l < MILLI)
        .count() as u64;
    report.allocated_at_100_pct = at_100.unwrap_or(pct(allocated));
    report.allocated_at_end_pct = pct(allocated);
    report
}

/// Mean and sample standard deviation.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    if xs.is_empty() {
        return (0.0, 0.0);
    }
    let m = xs.iter().sum::<f64>() / n;
    let v = if xs.len() > 1 {
        xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, v.sqrt())
}

/// An SVG of the allocation curves: one line per policy (the mean over
/// its runs), allocated against arrived, both in percent.
pub fn curve_svg(reports: &[Report], title: &str) -> String {
    const W: f64 = 760.0;
    const H: f64 = 460.0;
    const L: f64 = 70.0;
    const R: f64 = 160.0;
    const T: f64 = 50.0;
    const B: f64 = 50.0;
    let colours = [
        "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    ];
    let x_max = reports
        .iter()
        .flat_map(|r| r.curve.last())
        .map(|p| p.arrived_pct)
        .fold(100.0f64, f64::max);
    let (pw, ph) = (W - L - R, H - T - B);
    let x = |v: f64| L + pw * v / x_max;
    let y = |v: f64| T + ph * (1.0 - v / 100.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/><text x="{}" y="28" font-size="15" text-anchor="middle">{}</text>"#,
        W / 2.0,
        crate::plot::escape(title)
    );
    for v in (0..=100).step_by(20) {
        let yy = y(v as f64);
        let _ = write!(
            s,
            r##"<line x1="{L}" y1="{yy}" x2="{}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v}%</text>"##,
            L + pw,
            L - 6.0,
            yy + 4.0
        );
    }
    let mut v = 0.0;
    while v <= x_max + 1e-9 {
        let xx = x(v);
        let _ = write!(
            s,
            r##"<line x1="{xx}" y1="{T}" x2="{xx}" y2="{}" stroke="#eee"/><text x="{xx}" y="{}" text-anchor="middle">{v}%</text>"##,
            T + ph,
            T + ph + 16.0
        );
        v += 20.0;
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">arrived accelerator requests (% of the cluster)</text><text transform="translate(18,{}) rotate(-90)" text-anchor="middle">accelerators allocated (%)</text>"#,
        L + pw / 2.0,
        H - 10.0,
        T + ph / 2.0
    );
    let mut policies: Vec<&str> = Vec::new();
    for r in reports {
        if !policies.contains(&r.policy) {
            policies.push(r.policy);
        }
    }
    for (i, p) in policies.iter().enumerate() {
        let runs: Vec<&Report> = reports.iter().filter(|r| r.policy == *p).collect();
        let len = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
        let mut d = String::new();
        for j in 0..len {
            let a = runs[0].curve[j].arrived_pct;
            let m = runs.iter().map(|r| r.curve[j].allocated_pct).sum::<f64>() / runs.len() as f64;
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if j == 0 { "M" } else { " L" },
                x(a),
                y(m)
            );
        }
        let c = colours[i % colours.len()];
        let ly = T + 20.0 * i as f64 + 10.0;
        let _ = write!(
            s,
            r#"<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/><line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            L + pw + 12.0,
            L + pw + 34.0,
            L + pw + 40.0,
            ly + 4.0,
            crate::plot::escape(p)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "sn,cpu_milli,memory_mib,gpu,model\n\
        n0,32000,65536,2,T4\n\
        n1,32000,65536,2,T4\n\
        n2,64000,131072,4,V100\n";

    #[test]
    fn reads_nodes_and_pods_with_their_models() {
        let c = parse_nodes(NODES, "nodes.csv").unwrap();
        assert_eq!(c.gpus(), 8);
        assert_eq!(c.models, vec!["T4", "V100"]);
        let pods = parse_pods(
            "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n\
             a,1000,1024,1,250,\n\
             b,2000,2048,2,1000,V100\n\
             c,500,512,0,0,\n",
            "pods.csv",
            &c,
        )
        .unwrap();
        assert_eq!(pods.len(), 3);
        assert!(pods[0].is_fraction());
        assert_eq!(pods[1].models, Models(0b10));
        assert_eq!(pods[2].gpus, 0);
    }

    #[test]
    fn bad_rows_say_where() {
        let e = parse_nodes("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,99,T4\n", "n.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("n.csv:2") && e.contains("`gpu`"), "{e}");
        let c = parse_nodes(NODES, "nodes.csv").unwrap();
        let e = parse_pods(
            "cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n1,1,1,500,A100\n",
            "p.csv",
            &c,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("A100") && e.contains("T4, V100"), "{e}");
        let e = parse_pods(
            "cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec\n1,1,1,0,\n",
            "p.csv",
            &c,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("gpu_milli"), "{e}");
        assert!(parse_nodes("", "e.csv").is_err());
    }

    #[test]
    fn a_run_fills_the_cluster_and_counts_failures() {
        let c = parse_nodes(NODES, "nodes.csv").unwrap();
        let pods: Vec<Demand> = (0..8)
            .map(|i| {
                if i % 2 == 0 {
                    Demand::new(1000, 1024, 1, 500, Models::ANY)
                } else {
                    Demand::new(1000, 1024, 1, 1000, Models::ANY)
                }
            })
            .collect();
        for policy in Placement::ALL {
            let r = run(&c, &pods, policy, 3, 1.3);
            assert_eq!(r.gpus, 8);
            // arrivals stop once 130% of 8 accelerators arrived
            assert!(r.curve.last().unwrap().arrived_pct >= 130.0, "{policy:?}");
            assert!(r.allocated_at_end_pct <= 100.0);
            assert!(r.allocated_at_end_pct >= r.allocated_at_100_pct);
            assert!(r.pods_failed > 0, "more arrived than fits");
            let again = run(&c, &pods, policy, 3, 1.3);
            assert_eq!(r, again, "seeded: the same run twice");
        }
        // packing policies fill this cluster completely
        assert_eq!(
            run(&c, &pods, Placement::Gigafab, 3, 1.3).allocated_at_end_pct,
            100.0
        );
    }
}
