//! Accelerator catalog: the accelerator types a factory can contain.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Accelerator vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    Nvidia,
    Amd,
    Other,
}

impl Vendor {
    /// Parses `nvidia`, `amd` or `other` (case-insensitive).
    pub fn parse(s: &str) -> Option<Vendor> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nvidia" => Some(Vendor::Nvidia),
            "amd" => Some(Vendor::Amd),
            "other" => Some(Vendor::Other),
            _ => None,
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Vendor::Nvidia => "nvidia",
            Vendor::Amd => "amd",
            Vendor::Other => "other",
        })
    }
}

/// One accelerator type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcceleratorType {
    /// Lower-case identifier, e.g. `h100`.
    pub id: String,
    pub vendor: Vendor,
    pub memory_gb: f64,
    pub idle_watts: f64,
    pub peak_watts: f64,
    /// Weight of one accelerator-hour of this type when charging allocations.
    #[serde(default = "one")]
    pub billing_weight: f64,
    /// Set on the slice types a factory derives for a shared pool (never
    /// read from a file).
    #[serde(skip)]
    pub slice: Option<SliceOf>,
}

/// What a slice type is a slice of.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceOf {
    /// The whole accelerator's type id (`h100`).
    pub parent: String,
    /// The slice's name: a MIG profile (`1g.10gb`), an AMD partition mode
    /// (`cpx`), or `ts-N` / `mps-N` for one of N time-sliced or MPS clients.
    pub name: String,
    /// Its compute share of the accelerator, in thousandths: what share
    /// requests are matched against.
    pub milli: u16,
    /// Slices of the accelerator in the pool's layout: each is charged,
    /// and draws, 1/`per_accel` of it.
    pub per_accel: u32,
    pub kind: SliceKind,
}

/// How an accelerator is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SliceKind {
    /// NVIDIA Multi-Instance GPU: isolated compute and memory.
    Mig,
    /// AMD compute partition (SPX/DPX/QPX/CPX).
    Partition,
    /// Time-slicing: clients take turns on the whole accelerator.
    TimeSliced,
    /// NVIDIA Multi-Process Service: clients run at once, each with a
    /// memory limit and a share of the compute threads.
    Mps,
}

impl SliceOf {
    /// The share of the accelerator it is charged and draws power as.
    pub fn share(&self) -> f64 {
        1.0 / self.per_accel.max(1) as f64
    }
}

impl SliceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SliceKind::Mig => "mig",
            SliceKind::Partition => "partition",
            SliceKind::TimeSliced => "time-slicing",
            SliceKind::Mps => "mps",
        }
    }
}

fn one() -> f64 {
    1.0
}

/// Index of a type in a [`Catalog`].
pub type TypeIdx = u16;

/// The set of known accelerator types.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    types: Vec<AcceleratorType>,
}

/// Built-in entries: (id, vendor, memory GB, idle W, peak W, billing weight).
/// Peak figures are board power from vendor datasheets (see DESIGN.md); idle
/// figures are typical measured idle draw; billing weights are relative to an
/// H100 hour.
const BUILTIN: &[(&str, Vendor, f64, f64, f64, f64)] = &[
    ("h100", Vendor::Nvidia, 80.0, 70.0, 700.0, 1.0),
    ("h200", Vendor::Nvidia, 141.0, 75.0, 700.0, 1.2),
    ("b200", Vendor::Nvidia, 192.0, 120.0, 1000.0, 1.8),
    ("mi300x", Vendor::Amd, 192.0, 90.0, 750.0, 0.9),
    ("mi355x", Vendor::Amd, 288.0, 140.0, 1400.0, 1.6),
    ("k80", Vendor::Nvidia, 24.0, 25.0, 300.0, 0.1),
    ("p100", Vendor::Nvidia, 16.0, 30.0, 250.0, 0.2),
    ("v100", Vendor::Nvidia, 32.0, 40.0, 300.0, 0.3),
    ("t4", Vendor::Nvidia, 16.0, 10.0, 70.0, 0.1),
    ("a10", Vendor::Nvidia, 24.0, 20.0, 150.0, 0.15),
    // A100 SXM 80 GB: 400 W board power
    ("a100", Vendor::Nvidia, 80.0, 50.0, 400.0, 0.5),
    // MI250X OAM: 128 GB HBM2e, 560 W (two dies, one accelerator here)
    ("mi250x", Vendor::Amd, 128.0, 90.0, 560.0, 0.5),
    // GH200 Grace Hopper superchip, 96 GB HBM3: module power up to 1000 W,
    // Grace CPU and its LPDDR5X included
    ("gh200", Vendor::Nvidia, 96.0, 100.0, 1000.0, 1.3),
];

impl Catalog {
    /// The ids of every type, comma separated (for error messages).
    pub fn ids(&self) -> String {
        self.types
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Most types a catalog may hold (type sets are 64-bit masks).
pub const MAX_TYPES: usize = 64;

impl Catalog {
    /// The catalog of built-in accelerator types.
    pub fn builtin() -> Catalog {
        Catalog {
            types: BUILTIN
                .iter()
                .map(|&(id, vendor, mem, idle, peak, w)| AcceleratorType {
                    id: id.to_string(),
                    vendor,
                    memory_gb: mem,
                    idle_watts: idle,
                    peak_watts: peak,
                    billing_weight: w,
                    slice: None,
                })
                .collect(),
        }
    }

    /// Adds or replaces a type; returns its index. Fails when the catalog is full.
    pub fn upsert(&mut self, t: AcceleratorType) -> Result<TypeIdx, String> {
        if let Some(i) = self.index(&t.id) {
            self.types[i as usize] = t;
            return Ok(i);
        }
        if self.types.len() >= MAX_TYPES {
            return Err(format!("more than {MAX_TYPES} accelerator types"));
        }
        self.types.push(t);
        Ok((self.types.len() - 1) as TypeIdx)
    }

    /// Index of the type with this id (case-insensitive).
    pub fn index(&self, id: &str) -> Option<TypeIdx> {
        let id = id.trim();
        self.types
            .iter()
            .position(|t| t.id.eq_ignore_ascii_case(id))
            .map(|i| i as TypeIdx)
    }

    pub fn get(&self, i: TypeIdx) -> &AcceleratorType {
        &self.types[i as usize]
    }

    pub fn types(&self) -> &[AcceleratorType] {
        &self.types
    }

    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_has_required_types() {
        let c = Catalog::builtin();
        for id in [
            "h100", "h200", "b200", "mi300x", "mi355x", "k80", "p100", "v100", "t4", "a10", "a100",
            "mi250x", "gh200",
        ] {
            assert!(c.index(id).is_some(), "{id} missing");
        }
        let mi = c.get(c.index("MI300X").unwrap());
        assert_eq!(mi.vendor, Vendor::Amd);
        assert_eq!(mi.memory_gb, 192.0);
        let a = c.get(c.index("A100").unwrap());
        assert_eq!(
            (a.vendor, a.memory_gb, a.peak_watts),
            (Vendor::Nvidia, 80.0, 400.0)
        );
        assert_eq!(c.get(c.index("mi250x").unwrap()).vendor, Vendor::Amd);
        assert!(c.ids().contains("gh200"));
    }

    #[test]
    fn upsert_replaces_and_adds() {
        let mut c = Catalog::builtin();
        let n = c.len();
        let mut t = c.get(0).clone();
        t.billing_weight = 5.0;
        assert_eq!(c.upsert(t).unwrap(), 0);
        assert_eq!(c.get(0).billing_weight, 5.0);
        let mut t2 = c.get(0).clone();
        t2.id = "x1".into();
        assert_eq!(c.upsert(t2).unwrap() as usize, n);
    }
}
