//! AMD GPUs through AMD SMI (`libamd_smi.so`, ROCm 6.x and later), loaded at
//! run time.
//!
//! The declarations below follow the AMD SMI C API (`amdsmi.h`). Structures
//! whose layout changed between ROCm releases are never declared as Rust
//! structs: the library writes into a zeroed, 8-aligned buffer larger than any
//! version of the structure, and only the leading fields are decoded, with the
//! layout picked by checks on the buffer's shape (see `decode_power`).

use crate::energy::counter_trustworthy;
use crate::{DeviceInfo, Sample, Telemetry, TelemetryError, Vendor, lock, now_ms};
use libloading::Library;
use std::ffi::{c_uint, c_void};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

const BACKEND: &str = "AMD SMI";
const LIB_NAME: &str = "libamd_smi.so";

// `amdsmi_status_t` (a C enum whose largest value is 0xFFFFFFFF, so it is an
// `unsigned int`).
type Status = u32;
const STATUS_SUCCESS: Status = 0;
const STATUS_NOT_SUPPORTED: Status = 2;
const STATUS_NOT_YET_IMPLEMENTED: Status = 3;
const STATUS_FILE_ERROR: Status = 14;
const STATUS_NO_DATA: Status = 40;
const STATUS_UNEXPECTED_DATA: Status = 43;

/// `AMDSMI_INIT_AMD_GPUS` of `amdsmi_init_flags_t`.
const INIT_AMD_GPUS: u64 = 1 << 1;
/// `AMDSMI_TEMPERATURE_TYPE_EDGE` / `_JUNCTION` (alias `_HOTSPOT`).
const TEMP_TYPE_EDGE: u32 = 0;
const TEMP_TYPE_HOTSPOT: u32 = 1;
/// `AMDSMI_TEMP_CURRENT` of `amdsmi_temperature_metric_t`.
const TEMP_CURRENT: u32 = 0;
/// More processors than any machine has: a larger count is garbage.
const MAX_HANDLES: u32 = 4096;
/// Watts above which a reading is not a GPU's power.
const MAX_PLAUSIBLE_W: u64 = 10_000;

/// `amdsmi_processor_handle` / `amdsmi_socket_handle`: opaque `void *`.
type RawHandle = *mut c_void;

// Signatures of the functions used (amdsmi.h, ROCm 6.x).
/// `amdsmi_status_t amdsmi_init(uint64_t init_flags)`
type InitFn = unsafe extern "C" fn(u64) -> Status;
/// `amdsmi_status_t amdsmi_shut_down(void)`
type ShutDownFn = unsafe extern "C" fn() -> Status;
/// `amdsmi_get_socket_handles(uint32_t *socket_count, amdsmi_socket_handle *socket_handles)`
type GetSocketHandlesFn = unsafe extern "C" fn(*mut u32, *mut RawHandle) -> Status;
/// `amdsmi_get_processor_handles(amdsmi_socket_handle, uint32_t *processor_count,
/// amdsmi_processor_handle *processor_handles)`
type GetProcessorHandlesFn = unsafe extern "C" fn(RawHandle, *mut u32, *mut RawHandle) -> Status;
/// `amdsmi_get_energy_count(amdsmi_processor_handle, uint64_t *energy_accumulator,
/// float *counter_resolution, uint64_t *timestamp)`; energy = accumulator ×
/// resolution, in µJ.
type GetEnergyCountFn = unsafe extern "C" fn(RawHandle, *mut u64, *mut f32, *mut u64) -> Status;
/// `amdsmi_get_power_info(amdsmi_processor_handle, amdsmi_power_info_t *info)`
type GetPowerInfoFn = unsafe extern "C" fn(RawHandle, *mut c_void) -> Status;
/// `amdsmi_get_gpu_activity(amdsmi_processor_handle, amdsmi_engine_usage_t *info)`;
/// the first field is `uint32_t gfx_activity` in percent.
type GetGpuActivityFn = unsafe extern "C" fn(RawHandle, *mut c_void) -> Status;
/// `amdsmi_get_temp_metric(amdsmi_processor_handle, amdsmi_temperature_type_t,
/// amdsmi_temperature_metric_t, int64_t *temperature)`; degrees Celsius.
type GetTempMetricFn = unsafe extern "C" fn(RawHandle, u32, u32, *mut i64) -> Status;
/// Optional: `amdsmi_get_lib_version(amdsmi_version_t *version)`; the first two
/// `uint32_t` are year and major (ROCm ≤ 6.4) or major and minor (ROCm 7).
type GetLibVersionFn = unsafe extern "C" fn(*mut c_void) -> Status;
/// Optional: `amdsmi_get_gpu_device_uuid(amdsmi_processor_handle,
/// unsigned int *uuid_length, char *uuid)`.
type GetUuidFn = unsafe extern "C" fn(RawHandle, *mut c_uint, *mut c_void) -> Status;
/// Optional: `amdsmi_get_gpu_compute_partition(amdsmi_processor_handle,
/// char *compute_partition, uint32_t len)` and
/// `amdsmi_get_gpu_memory_partition(..., char *memory_partition, uint32_t len)`:
/// the mode as text (`CPX`, `NPS4`).
type GetPartitionFn = unsafe extern "C" fn(RawHandle, *mut c_void, u32) -> Status;
/// Optional: `amdsmi_get_gpu_asic_info(amdsmi_processor_handle, amdsmi_asic_info_t *info)`;
/// the first field is `char market_name[]`.
type GetAsicInfoFn = unsafe extern "C" fn(RawHandle, *mut c_void) -> Status;

/// Optional: `amdsmi_get_gpu_total_ecc_count(amdsmi_processor_handle,
/// amdsmi_error_count_t *ec)`: `uint64_t correctable_count,
/// uncorrectable_count, deferred_count` then reserved words (AMD's RAS
/// error counts over every block).
type GetTotalEccCountFn = unsafe extern "C" fn(RawHandle, *mut c_void) -> Status;

/// A zeroed, 8-aligned scratch buffer for a C structure to be written into.
#[repr(C, align(8))]
struct Buf<const N: usize>([u8; N]);

impl<const N: usize> Buf<N> {
    fn new() -> Self {
        Buf([0; N])
    }
    fn as_mut_ptr(&mut self) -> *mut c_void {
        self.0.as_mut_ptr().cast()
    }
    /// The `i`th native-endian `uint32_t` (0 past the end).
    fn word(&self, i: usize) -> u32 {
        self.0
            .get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    }
    /// The `i`th native-endian `uint64_t` (0 past the end).
    fn qword(&self, i: usize) -> u64 {
        self.0
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_ne_bytes)
    }
    fn words<const W: usize>(&self) -> [u32; W] {
        std::array::from_fn(|i| self.word(i))
    }
    /// The NUL-terminated string at the start, within the first `max` bytes.
    fn c_string(&self, max: usize) -> String {
        let bytes = &self.0[..max.min(N)];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).trim().to_string()
    }
}

/// A processor handle. The library issues it and keeps it valid until
/// `amdsmi_shut_down`; this code never dereferences it, only passes it back,
/// and every call into the library is made under the telemetry's mutex.
#[derive(Clone, Copy)]
struct Handle(RawHandle);
// SAFETY: see above: an opaque token, used only under a mutex.
unsafe impl Send for Handle {}
// SAFETY: as for Send.
unsafe impl Sync for Handle {}

/// The resolved functions. The plain function pointers stay valid while the
/// `Library` they came from is loaded; both live in [`AmdSmiTelemetry`].
#[derive(Clone, Copy)]
struct Fns {
    init: InitFn,
    shut_down: ShutDownFn,
    get_socket_handles: GetSocketHandlesFn,
    get_processor_handles: GetProcessorHandlesFn,
    get_energy_count: GetEnergyCountFn,
    get_power_info: GetPowerInfoFn,
    get_gpu_activity: GetGpuActivityFn,
    get_temp_metric: GetTempMetricFn,
    get_lib_version: Option<GetLibVersionFn>,
    get_uuid: Option<GetUuidFn>,
    get_asic_info: Option<GetAsicInfoFn>,
    get_total_ecc_count: Option<GetTotalEccCountFn>,
    get_compute_partition: Option<GetPartitionFn>,
    get_memory_partition: Option<GetPartitionFn>,
}

/// Copies a function pointer of type `T` out of `lib`.
///
/// # Safety
/// `T` must be the function's true signature, and the pointer must not be
/// called after `lib` is unloaded.
unsafe fn symbol<T: Copy>(lib: &Library, name: &str) -> Option<T> {
    let mut cname = name.as_bytes().to_vec();
    cname.push(0);
    // SAFETY: guaranteed by the caller.
    unsafe { lib.get::<T>(&cname).ok().map(|s| *s) }
}

/// Resolves every function, or names the first required one missing.
fn resolve(lib: &Library) -> Result<Fns, &'static str> {
    macro_rules! required {
        ($name:literal) => {
            // SAFETY: the type annotation on the field is the C signature.
            unsafe { symbol(lib, $name) }.ok_or($name)?
        };
    }
    Ok(Fns {
        init: required!("amdsmi_init"),
        shut_down: required!("amdsmi_shut_down"),
        get_socket_handles: required!("amdsmi_get_socket_handles"),
        get_processor_handles: required!("amdsmi_get_processor_handles"),
        get_energy_count: required!("amdsmi_get_energy_count"),
        get_power_info: required!("amdsmi_get_power_info"),
        get_gpu_activity: required!("amdsmi_get_gpu_activity"),
        get_temp_metric: required!("amdsmi_get_temp_metric"),
        // SAFETY: as above.
        get_lib_version: unsafe { symbol(lib, "amdsmi_get_lib_version") },
        // SAFETY: as above.
        get_uuid: unsafe { symbol(lib, "amdsmi_get_gpu_device_uuid") },
        // SAFETY: as above.
        get_asic_info: unsafe { symbol(lib, "amdsmi_get_gpu_asic_info") },
        // SAFETY: as above.
        get_total_ecc_count: unsafe { symbol(lib, "amdsmi_get_gpu_total_ecc_count") },
        // SAFETY: as above.
        get_compute_partition: unsafe { symbol(lib, "amdsmi_get_gpu_compute_partition") },
        // SAFETY: as above.
        get_memory_partition: unsafe { symbol(lib, "amdsmi_get_gpu_memory_partition") },
    })
}

fn status_name(s: Status) -> &'static str {
    match s {
        0 => "SUCCESS",
        1 => "INVAL",
        2 => "NOT_SUPPORTED",
        3 => "NOT_YET_IMPLEMENTED",
        4 => "FAIL_LOAD_MODULE",
        5 => "FAIL_LOAD_SYMBOL",
        6 => "DRM_ERROR",
        7 => "API_FAILED",
        8 => "TIMEOUT",
        9 => "RETRY",
        10 => "NO_PERM",
        11 => "INTERRUPT",
        12 => "IO",
        13 => "ADDRESS_FAULT",
        14 => "FILE_ERROR",
        15 => "OUT_OF_RESOURCES",
        16 => "INTERNAL_EXCEPTION",
        17 => "INPUT_OUT_OF_BOUNDS",
        18 => "INIT_ERROR",
        19 => "REFCOUNT_OVERFLOW",
        30 => "BUSY",
        31 => "NOT_FOUND",
        32 => "NOT_INIT",
        33 => "NO_SLOT",
        40 => "NO_DATA",
        41 => "INSUFFICIENT_SIZE",
        42 => "UNEXPECTED_SIZE",
        43 => "UNEXPECTED_DATA",
        _ => "UNKNOWN_ERROR",
    }
}

fn status_text(call: &str, s: Status) -> String {
    format!("{call} returned AMDSMI_STATUS_{} ({s})", status_name(s))
}

/// `Ok(true)` on success, `Ok(false)` where the reading is not supported or
/// not available, an error naming the device otherwise.
fn readable(index: u32, call: &str, s: Status) -> Result<bool, TelemetryError> {
    match s {
        STATUS_SUCCESS => Ok(true),
        STATUS_NOT_SUPPORTED
        | STATUS_NOT_YET_IMPLEMENTED
        | STATUS_FILE_ERROR
        | STATUS_NO_DATA
        | STATUS_UNEXPECTED_DATA => Ok(false),
        _ => Err(TelemetryError::Device {
            backend: BACKEND,
            index,
            message: status_text(call, s),
        }),
    }
}

/// Which `amdsmi_power_info_t` the library writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PowerLayout {
    /// ROCm 6.0–6.2: `uint32_t current_socket_power, average_socket_power,
    /// gfx_voltage, soc_voltage, mem_voltage, power_limit, reserved[11]`.
    Flat32,
    /// ROCm 6.3 and later: `uint64_t socket_power; uint32_t
    /// current_socket_power, average_socket_power; uint64_t gfx_voltage,
    /// soc_voltage, mem_voltage; uint32_t power_limit; ...`.
    Wide64,
}

/// The layout to try first, from `amdsmi_get_lib_version`'s first two words:
/// year and major up to ROCm 6.4 (24.7 is ROCm 6.3; 25 is 6.4), major and
/// minor from ROCm 7 (major 25 and up).
fn preferred_layout(version: Option<[u32; 2]>) -> PowerLayout {
    match version {
        Some([first, _]) if first >= 25 => PowerLayout::Wide64,
        Some([24, major]) if major >= 7 => PowerLayout::Wide64,
        Some(_) => PowerLayout::Flat32,
        None => PowerLayout::Wide64,
    }
}

/// Whether a word is 0 or the "unsupported" sentinel.
fn blank(w: u32) -> bool {
    w == 0 || w == u32::MAX
}

/// Whether the words can be a `Wide64` structure: the high halves of its
/// `uint64_t` fields are 0 or all ones.
fn fits_wide64(w: &[u32; 24]) -> bool {
    blank(w[1]) && blank(w[5]) && blank(w[7]) && blank(w[9])
}

/// Whether the words can be a `Flat32` structure: everything after its six
/// fields (reserved, never written) is still zero.
fn fits_flat32(w: &[u32; 24]) -> bool {
    w[6..].iter().all(|&x| x == 0)
}

/// Power and power limit decoded from an `amdsmi_power_info_t`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct PowerReading {
    power_w: Option<f64>,
    limit_w: Option<f64>,
}

/// A power field's value in watts, unless it is a sentinel, zero, or too large
/// to be a GPU's power.
fn watts(v: u64) -> Option<f64> {
    (v != 0 && v != u64::from(u32::MAX) && v != u64::MAX && v != 0xFFFF && v <= MAX_PLAUSIBLE_W)
        .then_some(v as f64)
}

/// A power limit in watts: given in W, or in µW by some releases.
fn limit_watts(v: u32) -> Option<f64> {
    let v = u64::from(v);
    if v == 0 || v == u64::from(u32::MAX) {
        None
    } else if v <= MAX_PLAUSIBLE_W {
        Some(v as f64)
    } else if v >= 1_000_000 && v / 1_000_000 <= MAX_PLAUSIBLE_W {
        Some(v as f64 / 1e6)
    } else {
        None
    }
}

/// Decodes the first 24 words of an `amdsmi_power_info_t`: tries `preferred`
/// and then the other layout, and takes the first whose shape fits. Power is
/// the current socket power (MI300 and later), else the average (earlier
/// GPUs), else (`Wide64`) `socket_power`.
fn decode_power(w: &[u32; 24], preferred: PowerLayout) -> PowerReading {
    let order = match preferred {
        PowerLayout::Wide64 => [PowerLayout::Wide64, PowerLayout::Flat32],
        PowerLayout::Flat32 => [PowerLayout::Flat32, PowerLayout::Wide64],
    };
    for layout in order {
        match layout {
            PowerLayout::Wide64 if fits_wide64(w) => {
                let socket = u64::from(w[0]) | (u64::from(w[1]) << 32);
                return PowerReading {
                    power_w: watts(u64::from(w[2]))
                        .or(watts(u64::from(w[3])))
                        .or(watts(socket)),
                    limit_w: limit_watts(w[10]),
                };
            }
            PowerLayout::Flat32 if fits_flat32(w) => {
                return PowerReading {
                    power_w: watts(u64::from(w[0])).or(watts(u64::from(w[1]))),
                    limit_w: limit_watts(w[5]),
                };
            }
            _ => {}
        }
    }
    PowerReading::default()
}

/// Decides whether a device's energy counter can be believed: not until, over
/// one interval between samples, its delta matched the power readings × time
/// ([`counter_trustworthy`]); from then on, yes.
#[derive(Debug, Clone, Default)]
struct CounterValidator {
    prev: Option<(f64, Option<f64>, f64)>,
    trusted: bool,
}

impl CounterValidator {
    /// Takes a reading (counter in J, power in W, monotonic time in s) and
    /// says whether the counter is trusted now.
    fn observe(&mut self, energy_j: Option<f64>, power_w: Option<f64>, t_s: f64) -> bool {
        let Some(e1) = energy_j else {
            return self.trusted;
        };
        if !self.trusted
            && let Some((e0, p0, t0)) = self.prev
        {
            let avg = match (p0, power_w) {
                (Some(a), Some(b)) => Some((a + b) / 2.0),
                (Some(p), None) | (None, Some(p)) => Some(p),
                (None, None) => None,
            };
            if let Some(avg) = avg {
                self.trusted = counter_trustworthy(e0, e1, avg, t_s - t0);
            }
        }
        self.prev = Some((e1, power_w, t_s));
        self.trusted
    }
}

struct State {
    handles: Vec<Handle>,
    validators: Vec<CounterValidator>,
}

/// AMD GPUs read through AMD SMI.
///
/// [`AmdSmiTelemetry::init`] loads `libamd_smi.so` from the default loader
/// path, then `$ROCM_PATH/lib`, then `/opt/rocm/lib`; without it, `init` fails
/// with [`TelemetryError::Unavailable`].
///
/// Each sample reads power, GPU activity, temperature (hotspot, else edge) and
/// the energy counter. The counter is reported (`energy_j`) only once it has
/// been validated against power × time over at least one interval between
/// samples; until then `energy_j` is `None`. Memory, ECC and XID readings are
/// not collected (`None` / empty).
pub struct AmdSmiTelemetry {
    fns: Fns,
    path: PathBuf,
    layout: PowerLayout,
    devices: Vec<DeviceInfo>,
    state: Mutex<State>,
    started: Instant,
    // Declared last so that it is unloaded after everything else is dropped.
    _lib: Library,
}

impl std::fmt::Debug for AmdSmiTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmdSmiTelemetry")
            .field("path", &self.path)
            .field("layout", &self.layout)
            .field("devices", &self.devices)
            .finish()
    }
}

/// Where to look for the library, in order.
fn default_candidates() -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from(LIB_NAME)];
    if let Some(root) = std::env::var_os("ROCM_PATH") {
        v.push(Path::new(&root).join("lib").join(LIB_NAME));
    }
    v.push(Path::new("/opt/rocm/lib").join(LIB_NAME));
    v
}

fn unavailable(reason: String) -> TelemetryError {
    TelemetryError::Unavailable {
        backend: BACKEND,
        reason,
    }
}

impl AmdSmiTelemetry {
    /// Loads `libamd_smi.so` (default loader path, `$ROCM_PATH/lib`,
    /// `/opt/rocm/lib`) and initialises AMD SMI for AMD GPUs.
    pub fn init() -> Result<Self, TelemetryError> {
        Self::init_from(&default_candidates())
    }

    /// Like [`AmdSmiTelemetry::init`], trying the library at each of `paths`
    /// in turn.
    pub fn init_from<P: AsRef<Path>>(paths: &[P]) -> Result<Self, TelemetryError> {
        let mut load_error = None;
        let mut loaded = None;
        for p in paths {
            let p = p.as_ref();
            // SAFETY: loading runs the library's initialisers; libamd_smi has
            // none with preconditions on the caller.
            match unsafe { Library::new(p) } {
                Ok(lib) => {
                    loaded = Some((lib, p.to_path_buf()));
                    break;
                }
                Err(e) => {
                    let text = e.to_string();
                    if !(text.contains("No such file")
                        || text.contains("cannot open shared object"))
                    {
                        load_error
                            .get_or_insert(format!("{} could not be loaded: {text}", p.display()));
                    }
                }
            }
        }
        let Some((lib, path)) = loaded else {
            return Err(unavailable(load_error.unwrap_or_else(|| {
                format!("{LIB_NAME} not found in the loader path or /opt/rocm/lib")
            })));
        };
        let fns = resolve(&lib).map_err(|name| {
            unavailable(format!(
                "{} lacks {name} (AMD SMI from ROCm 6 or later is needed)",
                path.display()
            ))
        })?;

        // SAFETY: a plain C call with a flags argument.
        let s = unsafe { (fns.init)(INIT_AMD_GPUS) };
        if s != STATUS_SUCCESS {
            return Err(unavailable(status_text("amdsmi_init", s)));
        }
        let handles = match processor_handles(&fns) {
            Ok(h) => h,
            Err(e) => {
                // SAFETY: balances the successful amdsmi_init above.
                unsafe { (fns.shut_down)() };
                return Err(e);
            }
        };
        let layout = preferred_layout(lib_version(&fns));
        let devices = handles
            .iter()
            .enumerate()
            .map(|(i, h)| describe(&fns, layout, i as u32, *h))
            .collect();
        let validators = vec![CounterValidator::default(); handles.len()];
        Ok(AmdSmiTelemetry {
            fns,
            path,
            layout,
            devices,
            state: Mutex::new(State {
                handles,
                validators,
            }),
            started: Instant::now(),
            _lib: lib,
        })
    }

    /// The library file that was loaded.
    pub fn library_path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AmdSmiTelemetry {
    fn drop(&mut self) {
        let _state = lock(&self.state);
        // SAFETY: balances the amdsmi_init made in init_from; the library is
        // still loaded (it is dropped after this).
        unsafe { (self.fns.shut_down)() };
    }
}

/// Fills a list of handles with the usual two calls: count, then fetch.
fn fetch_handles(
    call: &str,
    mut f: impl FnMut(*mut u32, *mut RawHandle) -> Status,
) -> Result<Vec<Handle>, TelemetryError> {
    let mut count: u32 = 0;
    let s = f(&mut count, std::ptr::null_mut());
    if s != STATUS_SUCCESS {
        return Err(TelemetryError::Backend {
            backend: BACKEND,
            message: status_text(call, s),
        });
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_HANDLES {
        return Err(TelemetryError::Backend {
            backend: BACKEND,
            message: format!("{call} reported {count} handles"),
        });
    }
    let mut raw: Vec<RawHandle> = vec![std::ptr::null_mut(); count as usize];
    let mut n = count;
    let s = f(&mut n, raw.as_mut_ptr());
    if s != STATUS_SUCCESS {
        return Err(TelemetryError::Backend {
            backend: BACKEND,
            message: status_text(call, s),
        });
    }
    raw.truncate(n.min(count) as usize);
    Ok(raw.into_iter().map(Handle).collect())
}

/// Every GPU processor handle, socket by socket.
fn processor_handles(fns: &Fns) -> Result<Vec<Handle>, TelemetryError> {
    // SAFETY: `count` points to a u32; `handles` is null (count query) or has
    // room for `*count` handles, as fetch_handles guarantees.
    let sockets = fetch_handles("amdsmi_get_socket_handles", |count, handles| unsafe {
        (fns.get_socket_handles)(count, handles)
    })?;
    let mut out = Vec::new();
    for socket in sockets {
        // SAFETY: as above; `socket` came from the library.
        let procs = fetch_handles("amdsmi_get_processor_handles", |count, handles| unsafe {
            (fns.get_processor_handles)(socket.0, count, handles)
        })?;
        out.extend(procs);
    }
    Ok(out)
}

/// The library's version words, where it tells them.
fn lib_version(fns: &Fns) -> Option<[u32; 2]> {
    let f = fns.get_lib_version?;
    // Larger than any amdsmi_version_t (at most 24 bytes).
    let mut buf = Buf::<64>::new();
    // SAFETY: the buffer is writable, aligned, and larger than the structure.
    let s = unsafe { f(buf.as_mut_ptr()) };
    (s == STATUS_SUCCESS).then(|| [buf.word(0), buf.word(1)])
}

/// Reads and decodes a device's power information.
fn power_info(fns: &Fns, layout: PowerLayout, h: Handle) -> (Status, PowerReading) {
    // amdsmi_power_info_t is at most 192 bytes in any release.
    let mut buf = Buf::<1024>::new();
    // SAFETY: `h` came from the library; the buffer is writable, aligned and
    // larger than the structure.
    let s = unsafe { (fns.get_power_info)(h.0, buf.as_mut_ptr()) };
    let reading = if s == STATUS_SUCCESS {
        decode_power(&buf.words::<24>(), layout)
    } else {
        PowerReading::default()
    };
    (s, reading)
}

/// Compute partition modes AMD SMI reports (MI300 and later).
const COMPUTE_MODES: [&str; 5] = ["SPX", "DPX", "TPX", "QPX", "CPX"];
/// Memory partition modes.
const MEMORY_MODES: [&str; 4] = ["NPS1", "NPS2", "NPS4", "NPS8"];

/// A partition mode as the library wrote it (a NUL-ended string), if it is
/// one of `known`; anything else (empty, garbage, a mode this code does not
/// know) is none, not guessed at.
fn partition_mode(raw: &[u8], known: &[&str]) -> Option<String> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = std::str::from_utf8(&raw[..end]).ok()?.trim();
    known
        .iter()
        .find(|m| m.eq_ignore_ascii_case(text))
        .map(|m| m.to_string())
}

/// How one AMD device is partitioned, as AMD SMI says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AmdPartition {
    /// The device's index (in CPX mode, each partition is a device).
    pub index: u32,
    /// `SPX`, `DPX`, `TPX`, `QPX` or `CPX`; none where it cannot say.
    pub compute: Option<String>,
    /// `NPS1`, `NPS2`, `NPS4` or `NPS8`.
    pub memory: Option<String>,
}

impl AmdSmiTelemetry {
    /// The compute and memory partition modes of each device.
    fn read_partitions(&self) -> Vec<AmdPartition> {
        let state = lock(&self.state);
        let read = |f: Option<GetPartitionFn>, h: Handle, known: &[&str]| {
            let f = f?;
            let mut buf = Buf::<64>::new();
            // SAFETY: `h` came from the library; it writes at most `len`
            // bytes (one short of the buffer, so a NUL always ends them).
            let s = unsafe { f(h.0, buf.as_mut_ptr(), 63) };
            (s == STATUS_SUCCESS)
                .then(|| partition_mode(&buf.0[..63], known))
                .flatten()
        };
        state
            .handles
            .iter()
            .enumerate()
            .map(|(i, &h)| AmdPartition {
                index: i as u32,
                compute: read(self.fns.get_compute_partition, h, &COMPUTE_MODES),
                memory: read(self.fns.get_memory_partition, h, &MEMORY_MODES),
            })
            .collect()
    }
}

/// Static description of one device; anything unreadable gets a fallback.
fn describe(fns: &Fns, layout: PowerLayout, index: u32, h: Handle) -> DeviceInfo {
    let name = fns
        .get_asic_info
        .and_then(|f| {
            // amdsmi_asic_info_t is under 1 KiB; market_name comes first and
            // is at most 256 bytes.
            let mut buf = Buf::<4096>::new();
            // SAFETY: `h` came from the library; the buffer is writable,
            // aligned and larger than the structure.
            let s = unsafe { f(h.0, buf.as_mut_ptr()) };
            (s == STATUS_SUCCESS).then(|| buf.c_string(256))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("AMD GPU {index}"));
    let uuid = fns
        .get_uuid
        .and_then(|f| {
            let mut buf = Buf::<128>::new();
            // One byte short of the buffer, so a NUL always ends the string.
            let mut len: c_uint = 127;
            // SAFETY: `len` tells the library how much of the buffer it may
            // write; the buffer outlives the call.
            let s = unsafe { f(h.0, &mut len, buf.as_mut_ptr()) };
            (s == STATUS_SUCCESS).then(|| buf.c_string(127))
        })
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| format!("amd-gpu-{index}"));
    let (_, power) = power_info(fns, layout, h);
    DeviceInfo {
        index,
        uuid,
        name,
        vendor: Vendor::Amd,
        memory_total_mib: None,
        power_limit_w: power.limit_w,
    }
}

/// A temperature reading in °C, accepting millidegrees from libraries that
/// give them; `None` when out of any sensor's range.
fn celsius(raw: i64) -> Option<f64> {
    let mut c = raw as f64;
    if c.abs() >= 1000.0 {
        c /= 1000.0;
    }
    (-100.0..=300.0).contains(&c).then_some(c)
}

impl Telemetry for AmdSmiTelemetry {
    fn source(&self) -> &'static str {
        "amd_smi"
    }

    fn partitions(&self) -> Vec<AmdPartition> {
        self.read_partitions()
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        Ok(self.devices.clone())
    }

    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        let mut state = lock(&self.state);
        let State {
            handles,
            validators,
        } = &mut *state;
        let fns = &self.fns;
        let mut out = Vec::with_capacity(handles.len());
        for (i, (h, validator)) in handles.iter().zip(validators.iter_mut()).enumerate() {
            let index = i as u32;
            let at_ms = now_ms();
            let t_s = self.started.elapsed().as_secs_f64();

            let (mut acc, mut resolution, mut stamp) = (0u64, 0f32, 0u64);
            // SAFETY: `h` came from the library; the three out-pointers are
            // to locals of the declared types.
            let s = unsafe { (fns.get_energy_count)(h.0, &mut acc, &mut resolution, &mut stamp) };
            let counter_j = (readable(index, "amdsmi_get_energy_count", s)?
                && resolution.is_finite()
                && resolution > 0.0)
                .then(|| acc as f64 * f64::from(resolution) / 1e6);

            let (s, power) = power_info(fns, self.layout, *h);
            readable(index, "amdsmi_get_power_info", s)?;

            let mut activity = Buf::<256>::new();
            // SAFETY: `h` came from the library; the buffer is writable,
            // aligned and larger than amdsmi_engine_usage_t (64 bytes).
            let s = unsafe { (fns.get_gpu_activity)(h.0, activity.as_mut_ptr()) };
            let utilization_pct = (readable(index, "amdsmi_get_gpu_activity", s)?
                && activity.word(0) <= 100)
                .then(|| f64::from(activity.word(0)));

            let mut temperature_c = None;
            for sensor in [TEMP_TYPE_HOTSPOT, TEMP_TYPE_EDGE] {
                let mut raw: i64 = 0;
                // SAFETY: `h` came from the library; `raw` is an int64_t.
                let s = unsafe { (fns.get_temp_metric)(h.0, sensor, TEMP_CURRENT, &mut raw) };
                if readable(index, "amdsmi_get_temp_metric", s)? {
                    temperature_c = celsius(raw);
                    if temperature_c.is_some() {
                        break;
                    }
                }
            }

            // RAS: ECC errors over every block (correctable, and
            // uncorrectable with deferred ones)
            let mut ecc = (None, None);
            if let Some(f) = fns.get_total_ecc_count {
                let mut b = Buf::<64>::new();
                // SAFETY: `h` came from the library; the buffer is writable,
                // aligned and as large as amdsmi_error_count_t (64 bytes).
                let s = unsafe { f(h.0, b.as_mut_ptr()) };
                // optional: any refusal (no permission, no RAS) leaves the
                // counts out, not the reading
                if s == STATUS_SUCCESS {
                    ecc = decode_ecc(&b);
                }
            }
            let trusted = validator.observe(counter_j, power.power_w, t_s);
            out.push(Sample {
                index,
                at_ms,
                power_w: power.power_w,
                energy_j: counter_j.filter(|_| trusted),
                utilization_pct,
                memory_used_mib: None,
                temperature_c,
                ecc_uncorrected: ecc.1,
                ecc_corrected: ecc.0,
                xid_errors: Vec::new(),
                ..Sample::default()
            });
        }
        Ok(out)
    }
}

/// (correctable, uncorrectable + deferred) of an `amdsmi_error_count_t`.
fn decode_ecc(b: &Buf<64>) -> (Option<u64>, Option<u64>) {
    let (c, u, d) = (b.qword(0), b.qword(1), b.qword(2));
    (Some(c), Some(u.saturating_add(d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_modes_are_read_as_the_library_writes_them() {
        let mut raw = [0u8; 63];
        raw[..4].copy_from_slice(b"CPX\0");
        assert_eq!(partition_mode(&raw, &COMPUTE_MODES).as_deref(), Some("CPX"));
        raw[..5].copy_from_slice(b"nps4\0");
        assert_eq!(partition_mode(&raw, &MEMORY_MODES).as_deref(), Some("NPS4"));
        // no NUL in the buffer: the whole of it, which is no mode
        assert_eq!(partition_mode(&[b'C'; 63], &COMPUTE_MODES), None);
        assert_eq!(partition_mode(&[0u8; 63], &COMPUTE_MODES), None);
        assert_eq!(partition_mode(b"XPX\0", &COMPUTE_MODES), None);
        assert_eq!(partition_mode(&[0xff, 0xfe, 0], &COMPUTE_MODES), None);
    }

    #[test]
    fn decodes_the_ras_error_counts() {
        let mut b = Buf::<64>::new();
        b.0[0..8].copy_from_slice(&150u64.to_ne_bytes());
        b.0[8..16].copy_from_slice(&2u64.to_ne_bytes());
        b.0[16..24].copy_from_slice(&1u64.to_ne_bytes());
        assert_eq!(decode_ecc(&b), (Some(150), Some(3)));
    }

    fn words(pairs: &[(usize, u32)]) -> [u32; 24] {
        let mut w = [0u32; 24];
        for &(i, v) in pairs {
            w[i] = v;
        }
        w
    }

    #[test]
    fn missing_library_is_unavailable() {
        let err = AmdSmiTelemetry::init_from(&[
            "/nonexistent/libamd_smi.so",
            "/also/missing/libamd_smi.so",
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "AMD SMI not available: libamd_smi.so not found in the loader path or /opt/rocm/lib"
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_is_unavailable() {
        let dir = std::env::temp_dir().join(format!("gigafab-telemetry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("libamd_smi.so");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let err = AmdSmiTelemetry::init_from(&[&fake]).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        match err {
            TelemetryError::Unavailable { backend, reason } => {
                assert_eq!(backend, "AMD SMI");
                assert!(reason.contains("could not be loaded"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_library_without_amd_smi_symbols_is_unavailable() {
        // libc is loaded in every process and lacks amdsmi_init.
        let err = AmdSmiTelemetry::init_from(&["libc.so.6"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "AMD SMI not available: libc.so.6 lacks amdsmi_init (AMD SMI from ROCm 6 or later is needed)"
        );
    }

    #[test]
    fn default_init_fails_cleanly_or_works() {
        match AmdSmiTelemetry::init() {
            Ok(t) => {
                let devices = t.devices().unwrap();
                assert_eq!(t.sample().unwrap().len(), devices.len());
            }
            Err(e) => assert!(e.to_string().starts_with("AMD SMI not available: "), "{e}"),
        }
    }

    #[test]
    fn version_picks_the_layout() {
        assert_eq!(preferred_layout(Some([24, 5])), PowerLayout::Flat32); // ROCm 6.1
        assert_eq!(preferred_layout(Some([24, 6])), PowerLayout::Flat32); // ROCm 6.2
        assert_eq!(preferred_layout(Some([24, 7])), PowerLayout::Wide64); // ROCm 6.3
        assert_eq!(preferred_layout(Some([25, 3])), PowerLayout::Wide64); // ROCm 6.4
        assert_eq!(preferred_layout(Some([26, 0])), PowerLayout::Wide64); // ROCm 7
        assert_eq!(preferred_layout(None), PowerLayout::Wide64);
    }

    #[test]
    fn decodes_the_rocm_6_0_layout() {
        // MI250: current unsupported, average 312 W, voltages, limit 560 W.
        let w = words(&[
            (0, u32::MAX),
            (1, 312),
            (2, 806),
            (3, 925),
            (4, 1250),
            (5, 560),
        ]);
        let r = decode_power(&w, PowerLayout::Flat32);
        assert_eq!(
            r,
            PowerReading {
                power_w: Some(312.0),
                limit_w: Some(560.0)
            }
        );
        // The version pointing the wrong way still decodes it: the high halves
        // of Wide64's u64 fields would be 312 and 560.
        assert_eq!(decode_power(&w, PowerLayout::Wide64), r);
    }

    #[test]
    fn decodes_the_rocm_6_3_layout() {
        // MI300X: socket_power unused, current 734 W, average unsupported,
        // gfx/soc/mem voltage u64s, limit 750 W.
        let w = words(&[
            (2, 734),
            (3, u32::MAX),
            (4, 800),
            (6, 900),
            (8, 1100),
            (10, 750),
        ]);
        let r = decode_power(&w, PowerLayout::Wide64);
        assert_eq!(
            r,
            PowerReading {
                power_w: Some(734.0),
                limit_w: Some(750.0)
            }
        );
        // Flat32 cannot fit (words past its six fields are set) so the other
        // layout is used.
        assert_eq!(decode_power(&w, PowerLayout::Flat32), r);
        // Older GPUs on the new layout: the average, then socket_power.
        let w = words(&[
            (0, 215),
            (2, u32::MAX),
            (3, 210),
            (4, u32::MAX),
            (5, u32::MAX),
        ]);
        assert_eq!(decode_power(&w, PowerLayout::Wide64).power_w, Some(210.0));
        let w = words(&[(0, 215), (2, u32::MAX), (3, u32::MAX)]);
        assert_eq!(decode_power(&w, PowerLayout::Wide64).power_w, Some(215.0));
    }

    #[test]
    fn implausible_power_is_none() {
        let w = words(&[(0, 50_000), (1, u32::MAX)]);
        assert_eq!(decode_power(&w, PowerLayout::Flat32).power_w, None);
        assert_eq!(
            decode_power(&[u32::MAX; 24], PowerLayout::Wide64),
            PowerReading::default()
        );
        // A power limit given in µW.
        assert_eq!(limit_watts(750_000_000), Some(750.0));
        assert_eq!(limit_watts(50_000), None);
    }

    #[test]
    fn counter_is_reported_only_once_validated() {
        let mut v = CounterValidator::default();
        // First reading: nothing to compare with.
        assert!(!v.observe(Some(1_000.0), Some(300.0), 0.0));
        // 300 W for 1 s, but the counter moved 3 J (wrong unit): not trusted.
        assert!(!v.observe(Some(1_003.0), Some(300.0), 1.0));
        // No counter: still not trusted.
        assert!(!v.observe(None, Some(300.0), 2.0));
        // Across the gap: 997 J against 600 J expected, still not trusted.
        assert!(!v.observe(Some(2_000.0), Some(300.0), 3.0));
        // This interval agrees: 300 J over 1 s at 300 W.
        assert!(v.observe(Some(2_300.0), Some(300.0), 4.0));
        // Once trusted, it stays trusted.
        assert!(v.observe(Some(2_301.0), Some(300.0), 5.0));
        assert!(v.observe(None, None, 6.0));
    }

    #[test]
    fn counter_validation_needs_some_power() {
        let mut v = CounterValidator::default();
        assert!(!v.observe(Some(0.0), None, 0.0));
        assert!(!v.observe(Some(100.0), None, 1.0));
        // One side's power is enough: 200 W × 0.5 s = 100 J.
        assert!(v.observe(Some(200.0), Some(200.0), 1.5));
    }

    #[test]
    fn temperatures() {
        assert_eq!(celsius(45), Some(45.0));
        assert_eq!(celsius(45_000), Some(45.0));
        assert_eq!(celsius(i64::MAX), None);
        assert_eq!(celsius(-5), Some(-5.0));
    }

    #[test]
    fn buffer_strings_stop_at_nul_or_the_limit() {
        let mut b = Buf::<16>::new();
        b.0[..7].copy_from_slice(b"MI300X\0");
        assert_eq!(b.c_string(16), "MI300X");
        let b = Buf::<4>([b'a'; 4]);
        assert_eq!(b.c_string(64), "aaaa");
        assert_eq!(b.word(9), 0);
    }

    #[test]
    fn unknown_statuses_name_the_device() {
        assert_eq!(readable(0, "x", STATUS_SUCCESS), Ok(true));
        assert_eq!(readable(0, "x", STATUS_NOT_SUPPORTED), Ok(false));
        assert_eq!(
            readable(2, "amdsmi_get_power_info", 31),
            Err(TelemetryError::Device {
                backend: "AMD SMI",
                index: 2,
                message: "amdsmi_get_power_info returned AMDSMI_STATUS_NOT_FOUND (31)".into()
            })
        );
    }
}
