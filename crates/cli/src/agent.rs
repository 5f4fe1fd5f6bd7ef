//! `gigafab agent`: the node agent's commands.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use gigafab_telemetry::{DeviceInfo, Probe, Sample, probe};

/// Commands of the node agent.
#[derive(clap::Subcommand)]
pub enum AgentCmd {
    /// Print the GPUs this machine has and one sample of each.
    Probe {
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value = "table")]
        output: Output,
    },
    /// Stream this machine's accelerator readings (power, temperature,
    /// ECC, Xids) to a gigafab server, which feeds them to its health
    /// model (docs/health.md). Runs until stopped; while the server cannot
    /// be reached the readings wait in a bounded buffer and are sent, in
    /// order and once each, when it is back.
    Run(RunArgs),
}

/// `gigafab agent run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// This node's name at the server (`POOL-INDEX`, as `gigafab fleet`
    /// shows); the device indexes are the accelerators' on the node.
    #[arg(long)]
    node: String,
    /// URL of the gigafab server.
    #[arg(long, env = "GIGAFAB_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// File holding an admin's or operator's token (one line) [else
    /// GIGAFAB_TOKEN].
    #[arg(long, env = "GIGAFAB_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Where the readings come from: `auto` (NVML, then AMD SMI) or
    /// `replay:FILE` (recorded readings, for tests and demonstrations).
    #[arg(long, default_value = "auto")]
    telemetry: String,
    /// Seconds between readings.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Batches of readings kept while the server cannot be reached; the
    /// oldest are dropped beyond (and the count of dropped ones logged).
    #[arg(long, default_value_t = 720)]
    buffer: usize,
}

/// How `agent probe` prints what it found.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// A table for people, with notes below it.
    Table,
    /// The probe as JSON: source, devices, samples, notes.
    Json,
}

/// Runs an agent command.
pub fn run(cmd: AgentCmd) -> Result<()> {
    match cmd {
        AgentCmd::Run(a) => tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")?
            .block_on(stream(a)),
        AgentCmd::Probe { output } => {
            let found = probe();
            let text = match output {
                Output::Table => render_table(&found),
                Output::Json => {
                    let mut s = serde_json::to_string_pretty(&found)
                        .context("encoding the probe as JSON")?;
                    s.push('\n');
                    s
                }
            };
            print!("{text}");
            Ok(())
        }
    }
}

/// `gigafab agent run`: reads, buffers, sends.
async fn stream(a: RunArgs) -> Result<()> {
    if !(a.interval.is_finite() && (0.05..=3600.0).contains(&a.interval)) {
        bail!("--interval must be within 0.05..=3600 seconds");
    }
    if a.buffer == 0 {
        bail!("--buffer must be at least 1");
    }
    let token = match &a.token_file {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("{}: cannot read the token", p.display()))?
            .trim()
            .to_string(),
        None => std::env::var("GIGAFAB_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .context("no token: --token-file or GIGAFAB_TOKEN (an admin's or operator's)")?,
    };
    let Some(t) = crate::serve::telemetry(&a.telemetry)? else {
        bail!("no GPU telemetry on this machine (gigafab agent probe says why)");
    };
    let url = format!(
        "{}/api/v1/fleet/nodes/{}/telemetry",
        a.server.trim_end_matches('/'),
        a.node
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot make an HTTP client")?;
    let start_ms = gigafab_telemetry::now_ms();
    let mut seq = 0u64;
    let mut buf: VecDeque<gigafab_api::NodeTelemetry> = VecDeque::new();
    let (mut dropped, mut unreachable, mut read_failed) = (0u64, false, false);
    eprintln!(
        "gigafab agent: {} readings of node {} to {} every {} s",
        t.source(),
        a.node,
        a.server,
        a.interval
    );
    loop {
        match t.sample() {
            Ok(samples) => {
                read_failed = false;
                seq += 1;
                buf.push_back(gigafab_api::NodeTelemetry {
                    seq,
                    agent_start_ms: start_ms,
                    samples,
                });
                if buf.len() > a.buffer {
                    buf.pop_front();
                    dropped += 1;
                    eprintln!("gigafab agent: buffer full: {dropped} batches dropped so far");
                }
            }
            Err(e) if !read_failed => {
                read_failed = true;
                eprintln!("gigafab agent: cannot read the devices: {e}");
            }
            Err(_) => {}
        }
        // in order, each once: the server takes a batch sent again (its
        // answer lost) only once
        while let Some(b) = buf.front() {
            match client.post(&url).bearer_auth(&token).json(b).send().await {
                Ok(r) if r.status().is_success() => {
                    if unreachable {
                        eprintln!("gigafab agent: the server is back");
                        unreachable = false;
                    }
                    buf.pop_front();
                }
                Ok(r) if r.status() == reqwest::StatusCode::UNPROCESSABLE_ENTITY => {
                    // a bad reading (a failing device's garbage): dropped,
                    // the agent goes on watching
                    let body = r.text().await.unwrap_or_default();
                    eprintln!(
                        "gigafab agent: a batch refused and dropped: {}",
                        body.trim()
                    );
                    buf.pop_front();
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    bail!("the server refused the readings: {status} {}", body.trim());
                }
                Ok(r) => {
                    if !unreachable {
                        eprintln!(
                            "gigafab agent: the server answered {}; keeping the readings",
                            r.status()
                        );
                        unreachable = true;
                    }
                    break;
                }
                Err(e) => {
                    if !unreachable {
                        eprintln!(
                            "gigafab agent: cannot reach {}: {e}; keeping the readings",
                            a.server
                        );
                        unreachable = true;
                    }
                    break;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs_f64(a.interval)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn opt_f64(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| x.to_string())
}

/// The probe as a table of devices (with their sample) followed by notes.
fn render_table(p: &Probe) -> String {
    let mut out = String::new();
    if !p.found() {
        out.push_str(&p.summary());
        out.push('\n');
        return out;
    }
    let header = [
        "INDEX", "NAME", "VENDOR", "POWER W", "ENERGY J", "UTIL %", "TEMP C", "MEM MiB", "ECC",
    ];
    let rows: Vec<[String; 9]> = p
        .devices
        .iter()
        .map(|d| row(d, sample_of(p, d.index)))
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            // Text columns (name, vendor) left-aligned; numbers right-aligned.
            if i == 1 || i == 2 {
                l.push_str(&format!("{cell:<w$}"));
            } else {
                l.push_str(&format!("{cell:>w$}"));
            }
            if i + 1 < cells.len() {
                l.push_str("  ");
            }
        }
        l.trim_end().to_string()
    };
    out.push_str(&line(&header));
    out.push('\n');
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        out.push_str(&line(&cells));
        out.push('\n');
    }
    out.push_str(&format!("source: {}\n", p.source));
    for note in &p.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

fn sample_of(p: &Probe, index: u32) -> Option<&Sample> {
    p.samples.iter().find(|s| s.index == index)
}

fn row(d: &DeviceInfo, s: Option<&Sample>) -> [String; 9] {
    let mem = match (s.and_then(|s| s.memory_used_mib), d.memory_total_mib) {
        (Some(used), Some(total)) => format!("{used}/{total}"),
        (Some(used), None) => used.to_string(),
        (None, Some(total)) => format!("-/{total}"),
        (None, None) => "-".to_string(),
    };
    [
        d.index.to_string(),
        d.name.clone(),
        d.vendor.to_string(),
        opt_f64(s.and_then(|s| s.power_w), 1),
        opt_f64(s.and_then(|s| s.energy_j), 1),
        opt_f64(s.and_then(|s| s.utilization_pct), 0),
        opt_f64(s.and_then(|s| s.temperature_c), 0),
        mem,
        opt_u64(s.and_then(|s| s.ecc_uncorrected)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use gigafab_telemetry::Vendor;

    #[test]
    fn no_gpu_says_energy_will_be_modelled() {
        let p = Probe {
            source: "none".into(),
            devices: vec![],
            samples: vec![],
            notes: vec![
                "NVML not available: libnvidia-ml.so not found".into(),
                "AMD SMI not available: libamd_smi.so not found".into(),
            ],
        };
        assert_eq!(
            render_table(&p),
            "no GPU telemetry found (NVML: libnvidia-ml.so not found, AMD SMI: libamd_smi.so not found); energy will be modelled\n"
        );
    }

    #[test]
    fn table_lists_devices_with_their_sample() {
        let p = Probe {
            source: "nvml".into(),
            devices: vec![DeviceInfo {
                index: 0,
                uuid: "GPU-1".into(),
                name: "NVIDIA H100 80GB HBM3".into(),
                vendor: Vendor::Nvidia,
                memory_total_mib: Some(81559),
                power_limit_w: Some(700.0),
            }],
            samples: vec![Sample {
                power_w: Some(71.5),
                energy_j: Some(123456.789),
                utilization_pct: Some(0.0),
                memory_used_mib: Some(1),
                temperature_c: Some(31.0),
                ecc_uncorrected: Some(0),
                ..Sample::new(0, 1)
            }],
            notes: vec![],
        };
        let t = render_table(&p);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("INDEX  NAME"), "{t}");
        assert!(lines[0].ends_with("ECC"), "{t}");
        assert!(lines[1].contains("NVIDIA H100 80GB HBM3  nvidia"), "{t}");
        assert!(
            lines[1].contains("71.5") && lines[1].contains("123456.8"),
            "{t}"
        );
        assert!(lines[1].contains("1/81559"), "{t}");
        assert_eq!(lines[2], "source: nvml");
    }
}
