//! GPU telemetry for gigafab: what GPUs a machine has, and how much power and
//! energy they draw.
//!
//! Every source implements [`Telemetry`]:
//!
//! * [`NvmlTelemetry`] reads NVIDIA GPUs through NVML (`libnvidia-ml.so`, loaded
//!   at run time, so building needs no driver);
//! * [`AmdSmiTelemetry`] reads AMD GPUs through AMD SMI (`libamd_smi.so`, loaded
//!   at run time as well);
//! * [`ModelTelemetry`] models power from declared idle and peak watts when there
//!   is no hardware to read;
//! * [`FakeTelemetry`] replays scripted samples, for tests.
//!
//! [`probe`] tries the hardware sources in turn and says what it found, and
//! [`EnergyMeter`] turns successive [`Sample`]s into joules per device:
//!
//! ```
//! use gigafab_telemetry::{EnergyMeter, Sample};
//!
//! let mut meter = EnergyMeter::new();
//! meter.add(&Sample { power_w: Some(300.0), ..Sample::new(0, 0) });
//! meter.add(&Sample { power_w: Some(500.0), ..Sample::new(0, 2_000) });
//! // (300 W + 500 W) / 2 over 2 s.
//! assert_eq!(meter.energy_j(0), 800.0);
//! ```

use serde::{Deserialize, Serialize};
use std::fmt;

mod amd;
mod energy;
mod fake;
mod model;
mod nvml;
mod probe;
mod replay;

pub use amd::{AmdPartition, AmdSmiTelemetry};
pub use energy::{COUNTER_TOLERANCE, EnergyMeter, counter_trustworthy};
pub use fake::FakeTelemetry;
pub use model::{ModelDevice, ModelTelemetry, model_power_w};
pub use nvml::{MigInstance, NvmlTelemetry};
pub use probe::{Probe, detect, probe};
pub use replay::ReplayTelemetry;

/// Who made a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vendor {
    /// NVIDIA.
    Nvidia,
    /// AMD.
    Amd,
    /// Anyone else, or a modelled device.
    Other,
}

impl Vendor {
    /// The vendor's name as it is serialised: `nvidia`, `amd` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
            Vendor::Other => "other",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GPU as its telemetry source describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Index of the device within its source (0, 1, ...).
    pub index: u32,
    /// Stable identifier of the device (for NVIDIA, `GPU-...`).
    pub uuid: String,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Who made it.
    pub vendor: Vendor,
    /// Installed memory in MiB, where known.
    #[serde(default)]
    pub memory_total_mib: Option<u64>,
    /// Power limit in watts that the device enforces, where known.
    #[serde(default)]
    pub power_limit_w: Option<f64>,
}

/// One reading of one device. Every measurement is optional: a device that does
/// not support one leaves it `None`. The API's `DeviceSample` (what a node
/// agent posts, what the server shows of a node's readings) is this type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = DeviceSample)]
pub struct Sample {
    /// Index of the device (see [`DeviceInfo::index`]).
    pub index: u32,
    /// When it was read: wall clock, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Power draw in watts.
    #[serde(default)]
    pub power_w: Option<f64>,
    /// Cumulative energy counter in joules, as the device reports it (its
    /// origin is arbitrary: use differences).
    #[serde(default)]
    pub energy_j: Option<f64>,
    /// GPU utilisation in percent (0–100).
    #[serde(default)]
    pub utilization_pct: Option<f64>,
    /// Memory in use in MiB.
    #[serde(default)]
    pub memory_used_mib: Option<u64>,
    /// GPU temperature in degrees Celsius.
    #[serde(default)]
    pub temperature_c: Option<f64>,
    /// Uncorrected ECC errors since the driver loaded (volatile counter).
    #[serde(default)]
    pub ecc_uncorrected: Option<u64>,
    /// XID error codes seen since the previous sample.
    #[serde(default)]
    pub xid_errors: Vec<u64>,
    /// Corrected ECC errors since the driver loaded (volatile counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ecc_corrected: Option<u64>,
    /// PCIe replays (cumulative counter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_replays: Option<u64>,
    /// NVLink errors summed over the device's links: CRC (flit and data),
    /// replays, recoveries (cumulative counters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_errors: Option<u64>,
    /// Whether the device slows down for heat now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_throttled: Option<bool>,
    /// The device did not answer (NVML: the GPU is lost, fallen off the
    /// bus): only its Xids are in this reading.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

impl Sample {
    /// A sample of device `index` taken at `at_ms` with no measurements yet.
    pub fn new(index: u32, at_ms: i64) -> Self {
        Sample {
            index,
            at_ms,
            ..Sample::default()
        }
    }
}

/// What can go wrong reading telemetry.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TelemetryError {
    /// The backend cannot be used on this machine (library absent, driver not
    /// loaded, ...). `backend` is `NVML` or `AMD SMI`.
    #[error("{backend} not available: {reason}")]
    Unavailable {
        /// `NVML` or `AMD SMI`.
        backend: &'static str,
        /// Why, e.g. `libnvidia-ml.so not found`.
        reason: String,
    },
    /// A call about one device failed.
    #[error("{backend} error on GPU {index}: {message}")]
    Device {
        /// The backend that failed.
        backend: &'static str,
        /// Index of the device.
        index: u32,
        /// What the backend said.
        message: String,
    },
    /// A call not about one device failed.
    #[error("{backend} error: {message}")]
    Backend {
        /// The backend that failed.
        backend: &'static str,
        /// What the backend said.
        message: String,
    },
    /// A [`FakeTelemetry`] was asked for more batches than it was given.
    #[error("fake telemetry script exhausted after {served} batches")]
    Exhausted {
        /// How many batches it had served.
        served: usize,
    },
    /// No device has this index.
    #[error("no device with index {0}")]
    UnknownDevice(u32),
    /// A [`ModelTelemetry`] was declared with impossible values.
    #[error("invalid power model: {0}")]
    InvalidModel(String),
}

/// A source of GPU telemetry.
pub trait Telemetry: Send + Sync {
    /// Short name of the source: `nvml`, `amd_smi`, `model`, `fake`.
    fn source(&self) -> &'static str;
    /// The devices this source reports on.
    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError>;
    /// Reads every device once, in index order.
    fn sample(&self) -> Result<Vec<Sample>, TelemetryError>;
    /// How each device is partitioned (AMD SMI's compute and memory
    /// partition modes); none from sources that cannot say.
    fn partitions(&self) -> Vec<AmdPartition> {
        Vec::new()
    }
}

impl<T: Telemetry + ?Sized> Telemetry for Box<T> {
    fn source(&self) -> &'static str {
        (**self).source()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        (**self).devices()
    }
    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        (**self).sample()
    }
    fn partitions(&self) -> Vec<AmdPartition> {
        (**self).partitions()
    }
}

impl<T: Telemetry + ?Sized> Telemetry for std::sync::Arc<T> {
    fn source(&self) -> &'static str {
        (**self).source()
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        (**self).devices()
    }
    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        (**self).sample()
    }
    fn partitions(&self) -> Vec<AmdPartition> {
        (**self).partitions()
    }
}

/// The wall clock in milliseconds since the Unix epoch (negative before it).
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Locks a mutex, recovering the data if a thread panicked while holding it
/// (telemetry state stays usable; nothing here can be left half-updated in a
/// way that matters).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_serialises_snake_case() {
        assert_eq!(
            serde_json::to_string(&Vendor::Nvidia).unwrap(),
            "\"nvidia\""
        );
        assert_eq!(serde_json::to_string(&Vendor::Amd).unwrap(), "\"amd\"");
        assert_eq!(
            serde_json::from_str::<Vendor>("\"other\"").unwrap(),
            Vendor::Other
        );
        assert_eq!(Vendor::Amd.to_string(), "amd");
    }

    #[test]
    fn sample_round_trips_and_fills_defaults() {
        let mut s = Sample::new(3, 1_700_000_000_000);
        s.power_w = Some(350.5);
        s.xid_errors = vec![79];
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), s);
        let partial: Sample = serde_json::from_str(r#"{"index":1,"at_ms":5}"#).unwrap();
        assert_eq!(partial, Sample::new(1, 5));
    }

    #[test]
    fn errors_read_well() {
        let e = TelemetryError::Unavailable {
            backend: "NVML",
            reason: "libnvidia-ml.so not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "NVML not available: libnvidia-ml.so not found"
        );
        let e = TelemetryError::Device {
            backend: "NVML",
            index: 2,
            message: "GPU is lost".into(),
        };
        assert_eq!(e.to_string(), "NVML error on GPU 2: GPU is lost");
    }

    #[test]
    fn now_ms_is_after_2020() {
        assert!(now_ms() > 1_577_836_800_000);
    }
}
