//! NVIDIA GPUs through NVML.

use crate::{DeviceInfo, Sample, Telemetry, TelemetryError, Vendor, lock, now_ms};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::event::EventSet;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::{Mutex, OnceLock};

const BACKEND: &str = "NVML";
/// The library NVML is looked up as first.
const DEFAULT_LIB: &str = "libnvidia-ml.so";
/// The name the NVIDIA driver installs it under.
const DRIVER_LIB: &str = "libnvidia-ml.so.1";
const MIB: u64 = 1024 * 1024;
/// Most XID events drained from the event set at one sample.
const MAX_EVENTS_PER_SAMPLE: usize = 1024;

/// The process's NVML handle. NVML is meant to be initialised once per
/// process; keeping it here also lets the XID event set borrow it for
/// `'static`. It is never shut down (the driver cleans up at exit).
static NVML: OnceLock<Nvml> = OnceLock::new();

/// NVIDIA GPUs read through NVML.
///
/// `libnvidia-ml.so` is loaded at run time by [`NvmlTelemetry::init`], so
/// building and running without NVIDIA drivers works; `init` then fails with
/// [`TelemetryError::Unavailable`].
///
/// Each sample reads the energy counter (`nvmlDeviceGetTotalEnergyConsumption`),
/// power, GPU utilisation, memory in use, GPU temperature, volatile uncorrected
/// ECC errors, and drains the XID critical-error events seen since the last
/// sample. Measurements a device does not support are `None`.
pub struct NvmlTelemetry {
    nvml: &'static Nvml,
    count: u32,
    /// Registered for critical XID events on every device that supports them;
    /// `None` when no device does (or events are not supported here).
    events: Mutex<Option<EventSet<'static>>>,
}

impl std::fmt::Debug for NvmlTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlTelemetry")
            .field("count", &self.count)
            .field("xid_events", &lock(&self.events).is_some())
            .finish()
    }
}

impl NvmlTelemetry {
    /// Loads `libnvidia-ml.so` (else `libnvidia-ml.so.1`) from the default
    /// loader path and initialises NVML.
    pub fn init() -> Result<Self, TelemetryError> {
        Self::init_inner(None)
    }

    /// Like [`NvmlTelemetry::init`], loading the library from `path`. If NVML
    /// was already initialised in this process, that instance is used.
    pub fn init_with_lib_path(path: impl AsRef<OsStr>) -> Result<Self, TelemetryError> {
        Self::init_inner(Some(path.as_ref()))
    }

    fn init_inner(path: Option<&OsStr>) -> Result<Self, TelemetryError> {
        let nvml = match NVML.get() {
            Some(n) => n,
            None => {
                let fresh = match path {
                    Some(p) => Nvml::builder()
                        .lib_path(p)
                        .init()
                        .map_err(|e| unavailable(&p.to_string_lossy(), e))?,
                    // The driver installs `libnvidia-ml.so.1`; the bare name
                    // often exists only with development packages (and not
                    // in containers), so fall back to the versioned one.
                    None => Nvml::init()
                        .or_else(|e| match e {
                            NvmlError::LibloadingError(_) => Nvml::builder()
                                .lib_path(OsStr::new(DRIVER_LIB))
                                .init()
                                .map_err(|e2| match e2 {
                                    NvmlError::LibloadingError(_) => e,
                                    other => other,
                                }),
                            other => Err(other),
                        })
                        .map_err(|e| unavailable(DEFAULT_LIB, e))?,
                };
                // Another thread may have won the race; its handle is as good.
                let _ = NVML.set(fresh);
                NVML.get().ok_or_else(|| TelemetryError::Backend {
                    backend: BACKEND,
                    message: "NVML handle lost after initialisation".into(),
                })?
            }
        };
        let count = nvml.device_count().map_err(|e| TelemetryError::Backend {
            backend: BACKEND,
            message: format!("cannot count devices: {e}"),
        })?;
        let events = Mutex::new(register_xid_events(nvml, count));
        Ok(NvmlTelemetry {
            nvml,
            count,
            events,
        })
    }

    /// Whether XID critical-error events are being collected.
    pub fn xid_events_enabled(&self) -> bool {
        lock(&self.events).is_some()
    }

    /// Drains the event set without waiting; XID codes per device index.
    fn drain_xids(&self) -> BTreeMap<u32, Vec<u64>> {
        let mut out: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        let guard = lock(&self.events);
        let Some(set) = guard.as_ref() else {
            return out;
        };
        for _ in 0..MAX_EVENTS_PER_SAMPLE {
            match set.wait(0) {
                Ok(data) => {
                    use nvml_wrapper::enums::event::XidError;
                    if let Some(XidError::Value(code)) = data.event_data
                        && let Ok(index) = data.device.index()
                    {
                        out.entry(index).or_default().push(code);
                    }
                }
                // Timeout means the set is empty; anything else, give up for
                // this sample rather than fail it.
                Err(_) => break,
            }
        }
        out
    }

    fn device(&self, index: u32) -> Result<nvml_wrapper::Device<'static>, TelemetryError> {
        self.nvml
            .device_by_index(index)
            .map_err(|e| device_error(index, e))
    }
}

/// Maps a failed `Nvml::init` to `Unavailable` with a short reason.
/// NVLink errors summed over a device's links (CRC flit and data,
/// replays, recoveries); None when it has no link NVML reports on.
fn link_errors(d: &nvml_wrapper::Device<'static>) -> Option<u64> {
    use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter as E;
    let mut total = None;
    // data-centre GPUs have at most 18 links
    for l in 0..18 {
        let link = d.link_wrapper_for(l);
        let mut any = false;
        for c in [E::DlCrcFlit, E::DlCrcData, E::DlReplay, E::DlRecovery] {
            if let Ok(v) = link.error_counter(c) {
                *total.get_or_insert(0u64) += v;
                any = true;
            }
        }
        if !any {
            continue;
        }
    }
    total
}

fn unavailable(lib_name: &str, e: NvmlError) -> TelemetryError {
    let reason = match &e {
        NvmlError::LibloadingError(le) => {
            let text = le.to_string();
            if text.contains("No such file") || text.contains("cannot open shared object") {
                format!("{lib_name} not found")
            } else {
                format!("{lib_name} could not be loaded: {text}")
            }
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".to_string(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".to_string(),
        other => other.to_string(),
    };
    TelemetryError::Unavailable {
        backend: BACKEND,
        reason,
    }
}

fn device_error(index: u32, e: NvmlError) -> TelemetryError {
    TelemetryError::Device {
        backend: BACKEND,
        index,
        message: e.to_string(),
    }
}

/// `Ok(Some(v))` for a reading, `Ok(None)` where the device or driver does not
/// support it, an error naming the device otherwise.
fn optional<T>(index: u32, r: Result<T, NvmlError>) -> Result<Option<T>, TelemetryError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(
            NvmlError::NotSupported
            | NvmlError::FunctionNotFound
            | NvmlError::FailedToLoadSymbol(_),
        ) => Ok(None),
        Err(e) => Err(device_error(index, e)),
    }
}

/// Builds one event set registered for critical XID errors on every device
/// that supports them. `None` where events are not available at all.
#[cfg(target_os = "linux")]
fn register_xid_events(nvml: &'static Nvml, count: u32) -> Option<EventSet<'static>> {
    use nvml_wrapper::bitmasks::event::EventTypes;
    let mut set = nvml.create_event_set().ok()?;
    let mut registered = false;
    for index in 0..count {
        let Ok(device) = nvml.device_by_index(index) else {
            continue;
        };
        let supported = device
            .supported_event_types()
            .is_ok_and(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !supported {
            continue;
        }
        match device.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                set = s;
                registered = true;
            }
            // A failed registration frees the set: start a new one, keeping
            // none of the earlier registrations (they went with it).
            Err(_) => {
                set = nvml.create_event_set().ok()?;
                registered = false;
            }
        }
    }
    registered.then_some(set)
}

#[cfg(not(target_os = "linux"))]
fn register_xid_events(_nvml: &'static Nvml, _count: u32) -> Option<EventSet<'static>> {
    None
}

impl Telemetry for NvmlTelemetry {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        (0..self.count)
            .map(|index| {
                let d = self.device(index)?;
                Ok(DeviceInfo {
                    index,
                    uuid: d.uuid().map_err(|e| device_error(index, e))?,
                    name: d.name().map_err(|e| device_error(index, e))?,
                    vendor: Vendor::Nvidia,
                    memory_total_mib: optional(index, d.memory_info())?.map(|m| m.total / MIB),
                    power_limit_w: optional(index, d.enforced_power_limit())?
                        .map(|mw| f64::from(mw) / 1000.0),
                })
            })
            .collect()
    }

    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        let mut xids = self.drain_xids();
        (0..self.count)
            .map(|index| {
                let xid_errors = xids.remove(&index).unwrap_or_default();
                match self.read(index, xid_errors.clone()) {
                    Ok(s) => Ok(s),
                    // a lost GPU fails every read: it is reported (with the
                    // Xids drained for it), not the whole node's reading
                    Err(TelemetryError::Device { .. }) => Ok(Sample {
                        index,
                        at_ms: now_ms(),
                        xid_errors,
                        unreadable: true,
                        ..Sample::default()
                    }),
                    Err(e) => Err(e),
                }
            })
            .collect()
    }
}

/// One MIG instance of a GPU, as NVML lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MigInstance {
    /// The GPU's index.
    pub gpu: u32,
    /// The instance's index among the GPU's MIG devices.
    pub index: u32,
    /// `MIG-...`: what `CUDA_VISIBLE_DEVICES` takes.
    pub uuid: String,
    pub memory_mib: u64,
    /// Its GPU instance and compute instance ids (what the driver's
    /// capability files under `/proc/driver/nvidia/capabilities/gpuN/mig/`
    /// are named by); none where NVML does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_instance: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_instance: Option<u32>,
    /// The parent GPU's minor number (`/dev/nvidiaN`, and `gpuN` in the
    /// driver's capability table), which may differ from its NVML index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_minor: Option<u32>,
}

/// A MIG device's GPU instance and compute instance ids.
fn instance_ids(m: &nvml_wrapper::Device) -> (Option<u32>, Option<u32>) {
    let lib = m.nvml().lib();
    // an older library without them: none, not a panic
    if lib.nvmlDeviceGetGpuInstanceId.is_err() || lib.nvmlDeviceGetComputeInstanceId.is_err() {
        return (None, None);
    }
    let (mut gi, mut ci) = (0u32, 0u32);
    // SAFETY: the handle is the live device's; NVML writes one uint each
    // and returns 0 (NVML_SUCCESS) when it did.
    unsafe {
        let h = m.handle();
        let gi_ok = lib.nvmlDeviceGetGpuInstanceId(h, &mut gi) == 0;
        let ci_ok = lib.nvmlDeviceGetComputeInstanceId(h, &mut ci) == 0;
        (gi_ok.then_some(gi), ci_ok.then_some(ci))
    }
}

impl NvmlTelemetry {
    /// The MIG instances of every GPU in MIG mode (none where MIG is off
    /// or unsupported), GPU by GPU in NVML's order.
    pub fn mig_instances(&self) -> Result<Vec<MigInstance>, TelemetryError> {
        let mut out = Vec::new();
        for gpu in 0..self.count {
            let d = self.device(gpu)?;
            let on = match d.mig_mode() {
                Ok(m) => m.current == 1,
                Err(NvmlError::NotSupported) => false,
                Err(e) => return Err(backend(gpu, e)),
            };
            if !on {
                continue;
            }
            let gpu_minor = d.minor_number().ok();
            let max = d.mig_device_count().map_err(|e| backend(gpu, e))?;
            for index in 0..max {
                let m = match d.mig_device_by_index(index) {
                    Ok(m) => m,
                    // a slot without an instance
                    Err(NvmlError::NotFound) | Err(NvmlError::InvalidArg) => continue,
                    Err(e) => return Err(backend(gpu, e)),
                };
                let (gpu_instance, compute_instance) = instance_ids(&m);
                out.push(MigInstance {
                    gpu,
                    index,
                    uuid: m.uuid().map_err(|e| backend(gpu, e))?,
                    memory_mib: m.memory_info().map_err(|e| backend(gpu, e))?.total / MIB,
                    gpu_instance,
                    compute_instance,
                    gpu_minor,
                });
            }
        }
        Ok(out)
    }
}

fn backend(gpu: u32, e: NvmlError) -> TelemetryError {
    TelemetryError::Backend {
        backend: BACKEND,
        message: format!("GPU {gpu}: {e}"),
    }
}

impl NvmlTelemetry {
    /// One device's reading.
    fn read(&self, index: u32, xid_errors: Vec<u64>) -> Result<Sample, TelemetryError> {
        let d = self.device(index)?;
        let at_ms = now_ms();
        Ok(Sample {
            index,
            at_ms,
            energy_j: optional(index, d.total_energy_consumption())?.map(|mj| mj as f64 / 1000.0),
            power_w: optional(index, d.power_usage())?.map(|mw| f64::from(mw) / 1000.0),
            utilization_pct: optional(index, d.utilization_rates())?.map(|u| f64::from(u.gpu)),
            memory_used_mib: optional(index, d.memory_info())?.map(|m| m.used / MIB),
            temperature_c: optional(index, d.temperature(TemperatureSensor::Gpu))?.map(f64::from),
            ecc_uncorrected: optional(
                index,
                d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
            )?,
            xid_errors,
            ecc_corrected: optional(
                index,
                d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile),
            )?,
            pcie_replays: optional(index, d.pcie_replay_counter())?.map(u64::from),
            link_errors: link_errors(&d),
            thermal_throttled: optional(index, d.current_throttle_reasons())?.map(|r| {
                use nvml_wrapper::bitmasks::device::ThrottleReasons as T;
                r.intersects(T::HW_THERMAL_SLOWDOWN | T::SW_THERMAL_SLOWDOWN)
            }),
            unreadable: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_unavailable() {
        // Only meaningful where NVML has not been initialised by another test
        // in this process (then the existing handle is reused).
        if NVML.get().is_some() {
            return;
        }
        let err = NvmlTelemetry::init_with_lib_path("/nonexistent/libnvidia-ml.so").unwrap_err();
        assert_eq!(
            err,
            TelemetryError::Unavailable {
                backend: "NVML",
                reason: "/nonexistent/libnvidia-ml.so not found".into()
            }
        );
        assert_eq!(
            err.to_string(),
            "NVML not available: /nonexistent/libnvidia-ml.so not found"
        );
    }

    #[test]
    fn default_init_fails_cleanly_or_works() {
        match NvmlTelemetry::init() {
            Ok(t) => {
                // A machine with NVIDIA drivers: it must read without error.
                let devices = t.devices().unwrap();
                let samples = t.sample().unwrap();
                assert_eq!(devices.len(), samples.len());
            }
            Err(e) => {
                assert!(matches!(
                    e,
                    TelemetryError::Unavailable {
                        backend: "NVML",
                        ..
                    }
                ));
                assert!(e.to_string().starts_with("NVML not available: "), "{e}");
            }
        }
    }

    #[test]
    fn optional_maps_not_supported_to_none() {
        assert_eq!(optional(1, Ok::<u32, NvmlError>(5)), Ok(Some(5)));
        assert_eq!(optional::<u32>(1, Err(NvmlError::NotSupported)), Ok(None));
        assert_eq!(
            optional::<u32>(3, Err(NvmlError::GpuLost)),
            Err(TelemetryError::Device {
                backend: "NVML",
                index: 3,
                message: NvmlError::GpuLost.to_string()
            })
        );
    }
}
