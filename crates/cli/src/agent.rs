//! `gigafab agent`: the node agent's commands.

use anyhow::{Context, Result};
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
