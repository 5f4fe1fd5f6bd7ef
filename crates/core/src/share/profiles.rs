//! Named slices of an accelerator: NVIDIA MIG profiles and AMD compute
//! partitions, with the share of the accelerator each is charged as.
//!
//! A MIG profile `Ng.Mgb` holds N of the accelerator's 7 compute slices
//! and M GB of its memory. A pool's layout is one profile on every
//! accelerator, as many as fit, and each slice is charged that share of
//! an accelerator-hour: 1g.10gb of an H100 1/7, 1g.20gb a quarter (four
//! fit), 3g.40gb a half, 4g.40gb the whole. A share request (`0.25`) is
//! matched against the compute share (N/7). An AMD partition mode splits
//! the accelerator's 8 compute dies (XCDs) into 1 (SPX), 2 (DPX), 4 (QPX)
//! or 8 (CPX) equal partitions; each is charged 1/partitions. Memory per partition is the accelerator's memory over the
//! partitions (NPS4 makes that a hard split into quarters; under NPS1 the
//! partitions share one pool and gigafab still counts each its equal part).

use super::MILLI;

/// One named slice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    /// Compute slices held, of `of`.
    pub compute: u8,
    pub of: u8,
    pub memory_gb: f64,
    /// The whole accelerator's memory, GB.
    pub full_gb: f64,
    /// How many of this profile one accelerator holds at most.
    pub max_per_gpu: u8,
}

impl Profile {
    /// The compute share, in thousandths of the accelerator: what a share
    /// request (`--gpus 0.25`) is matched against.
    pub fn milli(&self) -> u16 {
        ((self.compute as u32 * MILLI as u32).div_ceil(self.of as u32)) as u16
    }

    /// The share charged, in thousandths: one of the `max_per_gpu` slices
    /// a pool of this profile makes of each accelerator (1g.10gb: 1/7,
    /// 1g.20gb: 1/4, 3g.40gb: 1/2, 4g.40gb: the whole, since nothing else
    /// fits beside it in the pool's layout).
    pub fn charge_milli(&self) -> u16 {
        (MILLI as u32).div_ceil(self.max_per_gpu.max(1) as u32) as u16
    }
}

const fn mig(name: &'static str, compute: u8, memory_gb: f64, max: u8) -> Profile {
    Profile {
        name,
        compute,
        of: 7,
        memory_gb,
        full_gb: 0.0,
        max_per_gpu: max,
    }
}

const fn amd(name: &'static str, parts: u8, memory_gb: f64) -> Profile {
    Profile {
        name,
        compute: 8 / parts,
        of: 8,
        memory_gb,
        full_gb: 0.0,
        max_per_gpu: parts,
    }
}

/// `table` with every profile's `full_gb` set to the largest one's memory.
const fn full<const N: usize>(mut table: [Profile; N]) -> [Profile; N] {
    let mut max = 0.0;
    let mut i = 0;
    while i < N {
        if table[i].memory_gb > max {
            max = table[i].memory_gb;
        }
        i += 1;
    }
    let mut i = 0;
    while i < N {
        table[i].full_gb = max;
        i += 1;
    }
    table
}

const A100_40: &[Profile] = &full([
    mig("1g.5gb", 1, 5.0, 7),
    mig("1g.10gb", 1, 10.0, 4),
    mig("2g.10gb", 2, 10.0, 3),
    mig("3g.20gb", 3, 20.0, 2),
    mig("4g.20gb", 4, 20.0, 1),
    mig("7g.40gb", 7, 40.0, 1),
]);

const A100_80: &[Profile] = &full([
    mig("1g.10gb", 1, 10.0, 7),
    mig("1g.20gb", 1, 20.0, 4),
    mig("2g.20gb", 2, 20.0, 3),
    mig("3g.40gb", 3, 40.0, 2),
    mig("4g.40gb", 4, 40.0, 1),
    mig("7g.80gb", 7, 80.0, 1),
]);

const H200: &[Profile] = &full([
    mig("1g.18gb", 1, 18.0, 7),
    mig("1g.35gb", 1, 35.0, 4),
    mig("2g.35gb", 2, 35.0, 3),
    mig("3g.71gb", 3, 71.0, 2),
    mig("4g.71gb", 4, 71.0, 1),
    mig("7g.141gb", 7, 141.0, 1),
]);

const GH200: &[Profile] = &full([
    mig("1g.12gb", 1, 12.0, 7),
    mig("1g.24gb", 1, 24.0, 4),
    mig("2g.24gb", 2, 24.0, 3),
    mig("3g.48gb", 3, 48.0, 2),
    mig("4g.48gb", 4, 48.0, 1),
    mig("7g.96gb", 7, 96.0, 1),
]);

const B200: &[Profile] = &full([
    mig("1g.23gb", 1, 23.0, 7),
    mig("1g.45gb", 1, 45.0, 4),
    mig("2g.45gb", 2, 45.0, 3),
    mig("3g.90gb", 3, 90.0, 2),
    mig("4g.90gb", 4, 90.0, 1),
    mig("7g.180gb", 7, 180.0, 1),
]);

const MI300X: &[Profile] = &full([
    amd("cpx", 8, 24.0),
    amd("qpx", 4, 48.0),
    amd("dpx", 2, 96.0),
    amd("spx", 1, 192.0),
]);

const MI325X: &[Profile] = &full([
    amd("cpx", 8, 32.0),
    amd("qpx", 4, 64.0),
    amd("dpx", 2, 128.0),
    amd("spx", 1, 256.0),
]);

const MI355X: &[Profile] = &full([
    amd("cpx", 8, 36.0),
    amd("qpx", 4, 72.0),
    amd("dpx", 2, 144.0),
    amd("spx", 1, 288.0),
]);

/// The slices an accelerator type (catalog id, lower case) offers, smallest
/// first; empty for types that cannot be sliced.
pub fn of_type(accel: &str) -> &'static [Profile] {
    match accel {
        "a100-40" | "a100-40gb" => A100_40,
        "a100" | "a100-80" | "a100-80gb" | "h100" | "h100-sxm" | "h100-pcie" | "h800" => A100_80,
        "h200" => H200,
        "gh200" => GH200,
        "b200" | "gb200" => B200,
        "mi300x" => MI300X,
        "mi325x" => MI325X,
        "mi355x" | "mi350x" => MI355X,
        _ => &[],
    }
}

/// The profile `name` of `accel`.
pub fn find(accel: &str, name: &str) -> Option<&'static Profile> {
    of_type(accel)
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name.trim()))
}

/// The smallest slices of `accel` with at least `memory_gb` and `milli`
/// of compute: the profiles a request fits, smallest first.
pub fn fitting(accel: &str, memory_gb: f64, milli: u16) -> Vec<&'static Profile> {
    let mut out: Vec<&Profile> = of_type(accel)
        .iter()
        .filter(|p| p.memory_gb >= memory_gb && p.milli() >= milli)
        .collect();
    out.sort_by(|a, b| {
        a.milli()
            .cmp(&b.milli())
            .then(a.memory_gb.total_cmp(&b.memory_gb))
    });
    out
}

/// Whether a layout (profiles on one accelerator) is one the hardware
/// accepts: compute slices within the whole, each profile within its own
/// count, and (AMD) a single partition mode.
pub fn layout_fits(accel: &str, layout: &[&str]) -> Result<(), String> {
    let all = of_type(accel);
    if all.is_empty() {
        return Err(format!("`{accel}` cannot be partitioned"));
    }
    let mut compute = 0u32;
    let of = all[0].of as u32;
    for name in layout {
        let p = all
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|p| p.name).collect();
                format!(
                    "`{name}` is not a profile of {accel} (known: {})",
                    known.join(", ")
                )
            })?;
        let same = layout
            .iter()
            .filter(|n| n.eq_ignore_ascii_case(p.name))
            .count();
        if same > p.max_per_gpu as usize {
            return Err(format!(
                "{accel} holds at most {} × {}, not {same}",
                p.max_per_gpu, p.name
            ));
        }
        compute += p.compute as u32;
    }
    if of == 8 {
        // AMD: one partition mode for the whole accelerator
        if let Some(first) = layout.first()
            && layout.iter().any(|n| !n.eq_ignore_ascii_case(first))
        {
            return Err(format!(
                "{accel} runs one partition mode at a time, not {}",
                layout.join(" + ")
            ));
        }
    }
    if compute > of {
        return Err(format!(
            "{} takes {compute} of {accel}'s {of} compute slices",
            layout.join(" + ")
        ));
    }
    Ok(())
}
