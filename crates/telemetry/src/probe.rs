//! Finding out what telemetry a machine has.

use crate::{AmdSmiTelemetry, DeviceInfo, NvmlTelemetry, Sample, Telemetry, TelemetryError};
use serde::{Deserialize, Serialize};

/// What [`probe`] found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// The source used: `nvml`, `amd_smi`, or `none` when no hardware
    /// telemetry was found.
    pub source: String,
    /// The devices that source reports.
    pub devices: Vec<DeviceInfo>,
    /// One sample of each device (empty if sampling failed; a note says why).
    pub samples: Vec<Sample>,
    /// Why each backend tried before (or instead of) the one used was not
    /// used, e.g. `NVML not available: libnvidia-ml.so not found`.
    pub notes: Vec<String>,
}

impl Probe {
    /// Whether hardware telemetry was found.
    pub fn found(&self) -> bool {
        self.source != "none"
    }

    /// One line for people: `N GPU(s) via SOURCE`, or, with nothing found,
    /// `no GPU telemetry found (NVML: ..., AMD SMI: ...); energy will be
    /// modelled`.
    pub fn summary(&self) -> String {
        if self.found() {
            let n = self.devices.len();
            return format!(
                "{n} GPU{} via {}",
                if n == 1 { "" } else { "s" },
                self.source
            );
        }
        let reasons: Vec<String> = self
            .notes
            .iter()
            .map(|n| n.replacen(" not available:", ":", 1))
            .collect();
        if reasons.is_empty() {
            "no GPU telemetry found; energy will be modelled".to_string()
        } else {
            format!(
                "no GPU telemetry found ({}); energy will be modelled",
                reasons.join(", ")
            )
        }
    }
}

type Opener = Box<dyn FnOnce() -> Result<Box<dyn Telemetry>, TelemetryError>>;
/// A backend that opened, with the devices it reported.
type Opened = (Box<dyn Telemetry>, Vec<DeviceInfo>);

fn hardware_backends() -> Vec<(&'static str, Opener)> {
    vec![
        (
            "NVML",
            Box::new(|| NvmlTelemetry::init().map(|t| Box::new(t) as Box<dyn Telemetry>)),
        ),
        (
            "AMD SMI",
            Box::new(|| AmdSmiTelemetry::init().map(|t| Box::new(t) as Box<dyn Telemetry>)),
        ),
    ]
}

/// Opens the first backend that works and has devices; notes say why the
/// others before it were passed over.
fn first_working(backends: Vec<(&'static str, Opener)>) -> (Option<Opened>, Vec<String>) {
    let mut notes = Vec::new();
    for (label, open) in backends {
        let telemetry = match open() {
            Ok(t) => t,
            Err(e) => {
                notes.push(e.to_string());
                continue;
            }
        };
        match telemetry.devices() {
            Ok(devices) if devices.is_empty() => notes.push(format!("{label} found no GPUs")),
            Ok(devices) => return (Some((telemetry, devices)), notes),
            Err(e) => notes.push(e.to_string()),
        }
    }
    (None, notes)
}

fn probe_backends(backends: Vec<(&'static str, Opener)>) -> Probe {
    let (found, mut notes) = first_working(backends);
    match found {
        Some((telemetry, devices)) => {
            let samples = match telemetry.sample() {
                Ok(s) => s,
                Err(e) => {
                    notes.push(e.to_string());
                    Vec::new()
                }
            };
            Probe {
                source: telemetry.source().to_string(),
                devices,
                samples,
                notes,
            }
        }
        None => Probe {
            source: "none".to_string(),
            devices: Vec::new(),
            samples: Vec::new(),
            notes,
        },
    }
}

/// Tries NVML, then AMD SMI, and returns the first that works with the GPUs it
/// reports and one sample of each. Never fails: with no hardware telemetry,
/// `source` is `none` and `notes` say why each backend was not used.
pub fn probe() -> Probe {
    probe_backends(hardware_backends())
}

/// Like [`probe`], but keeps the backend open for further sampling: the first
/// hardware source that works and has GPUs (NVML, then AMD SMI), or `None`,
/// with notes saying why the others were not used.
pub fn detect() -> (Option<Box<dyn Telemetry>>, Vec<String>) {
    let (found, notes) = first_working(hardware_backends());
    (found.map(|(t, _)| t), notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FakeTelemetry, Vendor};

    fn gpu(index: u32) -> DeviceInfo {
        DeviceInfo {
            index,
            uuid: format!("GPU-{index}"),
            name: "Fake".into(),
            vendor: Vendor::Amd,
            memory_total_mib: None,
            power_limit_w: Some(750.0),
        }
    }

    fn unavailable(backend: &'static str, reason: &str) -> Opener {
        let reason = reason.to_string();
        Box::new(move || Err(TelemetryError::Unavailable { backend, reason }))
    }

    fn fake(t: FakeTelemetry) -> Opener {
        Box::new(move || Ok(Box::new(t) as Box<dyn Telemetry>))
    }

    #[test]
    fn probe_on_this_machine_never_panics() {
        let p = probe();
        if p.source == "none" {
            // A machine without GPUs (CI, developers): both backends noted.
            assert_eq!(p.notes.len(), 2, "{:?}", p.notes);
            assert!(p.notes[0].starts_with("NVML"), "{:?}", p.notes);
            assert!(p.notes[1].starts_with("AMD SMI"), "{:?}", p.notes);
            assert!(p.devices.is_empty() && p.samples.is_empty());
            let summary = p.summary();
            assert!(
                summary.starts_with("no GPU telemetry found (NVML: "),
                "{summary}"
            );
            assert!(summary.contains(", AMD SMI: "), "{summary}");
            assert!(summary.ends_with("; energy will be modelled"), "{summary}");
        } else {
            assert!(["nvml", "amd_smi"].contains(&p.source.as_str()));
            assert!(!p.devices.is_empty());
        }
        // It serialises for `gigafab agent probe --output json`.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Probe>(&json).unwrap(), p);
    }

    #[test]
    fn nothing_found_gives_two_notes() {
        let p = probe_backends(vec![
            ("NVML", unavailable("NVML", "libnvidia-ml.so not found")),
            ("AMD SMI", unavailable("AMD SMI", "libamd_smi.so not found")),
        ]);
        assert_eq!(p.source, "none");
        assert!(!p.found());
        assert_eq!(
            p.notes,
            vec![
                "NVML not available: libnvidia-ml.so not found",
                "AMD SMI not available: libamd_smi.so not found"
            ]
        );
        assert_eq!(
            p.summary(),
            "no GPU telemetry found (NVML: libnvidia-ml.so not found, AMD SMI: libamd_smi.so not found); energy will be modelled"
        );
    }

    #[test]
    fn second_backend_is_used_when_the_first_fails() {
        let batch = vec![Sample::new(0, 1)];
        let amd = FakeTelemetry::new(vec![gpu(0)], vec![batch.clone()]).with_source("amd_smi");
        let p = probe_backends(vec![
            ("NVML", unavailable("NVML", "libnvidia-ml.so not found")),
            ("AMD SMI", fake(amd)),
        ]);
        assert_eq!(p.source, "amd_smi");
        assert!(p.found());
        assert_eq!(p.devices, vec![gpu(0)]);
        assert_eq!(p.samples, batch);
        assert_eq!(
            p.notes,
            vec!["NVML not available: libnvidia-ml.so not found"]
        );
        assert_eq!(p.summary(), "1 GPU via amd_smi");
    }

    #[test]
    fn a_backend_without_gpus_is_passed_over() {
        let empty = FakeTelemetry::new(vec![], vec![]).with_source("nvml");
        let p = probe_backends(vec![
            ("NVML", fake(empty)),
            ("AMD SMI", unavailable("AMD SMI", "libamd_smi.so not found")),
        ]);
        assert_eq!(p.source, "none");
        assert_eq!(p.notes[0], "NVML found no GPUs");
        assert!(
            p.summary()
                .contains("(NVML found no GPUs, AMD SMI: libamd_smi.so not found)")
        );
    }

    #[test]
    fn sampling_failure_keeps_the_devices() {
        let broken = FakeTelemetry::new(vec![gpu(0), gpu(1)], vec![]).with_source("nvml");
        let p = probe_backends(vec![("NVML", fake(broken))]);
        assert_eq!(p.source, "nvml");
        assert_eq!(p.devices.len(), 2);
        assert!(p.samples.is_empty());
        assert_eq!(
            p.notes,
            vec!["fake telemetry script exhausted after 0 batches"]
        );
        assert_eq!(p.summary(), "2 GPUs via nvml");
    }
}
