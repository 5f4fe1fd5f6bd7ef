//! Expected fragmentation of a node (Weng et al., USENIX ATC'23, §4).
//!
//! For one kind of demand `m`, the fragment of a node is the accelerator
//! share that `m` cannot use there: all of the node's free share when `m`
//! does not fit on the node at all (too little CPU, memory or accelerator,
//! or the wrong model), otherwise the free share of each accelerator with
//! less free than `m` asks of one. A node's fragmentation is the mean over
//! the workload's typical demands, weighted by how often each arrives.

use super::{Demand, NodeRes};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// One typical demand and its share of arrivals (the shares sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Typical {
    pub demand: Demand,
    pub share: f64,
}

impl Typical {
    /// The distinct accelerator demands of `demands` with how often each
    /// occurs. Demands without an accelerator are left out: they leave the
    /// same fragment wherever they go, so they do not change a choice.
    pub fn of(demands: &[Demand]) -> Vec<Typical> {
        let mut counts: HashMap<Demand, u64> = HashMap::new();
        let mut total = 0u64;
        for d in demands.iter().filter(|d| d.gpus > 0) {
            *counts.entry(*d).or_default() += 1;
            total += 1;
        }
        let mut out: Vec<Typical> = counts
            .into_iter()
            .map(|(demand, n)| Typical {
                demand,
                share: n as f64 / total as f64,
            })
            .collect();
        // most frequent first, then a fixed order: the sums are the same
        // from run to run
        out.sort_by(|a, b| {
            b.share.total_cmp(&a.share).then_with(|| {
                let k = |d: &Demand| (d.gpus, d.milli, d.cpu_milli, d.mem_mib, d.models.0);
                k(&a.demand).cmp(&k(&b.demand))
            })
        });
        out
    }
}

/// The expected fragment of `node` (in thousandths of an accelerator)
/// for demands arriving as `typical`.
pub fn node_frag(node: &NodeRes, typical: &[Typical]) -> f64 {
    node_frag_with(node, typical, false)
}

/// [`node_frag`], and with `cpu_aware` also the accelerator share that
/// each typical demand could use but the node's CPU or memory could not
/// feed: copies of the demand its accelerators still hold beyond those its
/// CPU and memory hold.
pub fn node_frag_with(node: &NodeRes, typical: &[Typical], cpu_aware: bool) -> f64 {
    let total = node.gpu_left_total();
    if total == 0 {
        return 0.0;
    }
    let mut frag = 0.0;
    for t in typical {
        let d = &t.demand;
        let part = if !node.fits(d) {
            total
        } else {
            let small: u64 = node
                .gpus()
                .iter()
                .filter(|&&l| l < d.milli)
                .map(|&l| l as u64)
                .sum();
            if cpu_aware {
                small + unfed(node, d)
            } else {
                small
            }
        };
        frag += t.share * part as f64;
    }
    frag
}

/// The accelerator share of the copies of `d` that `node`'s accelerators
/// hold and its CPU and memory do not.
fn unfed(node: &NodeRes, d: &Demand) -> u64 {
    let by_gpu: u64 = if d.is_fraction() {
        node.gpus().iter().map(|&l| (l / d.milli) as u64).sum()
    } else {
        node.gpus().iter().filter(|&&l| l == super::MILLI).count() as u64 / d.gpus.max(1) as u64
    };
    let by_cpu = node
        .cpu_milli
        .checked_div(d.cpu_milli)
        .map_or(u64::MAX, u64::from);
    let by_mem = node.mem_mib.checked_div(d.mem_mib).unwrap_or(u64::MAX);
    by_gpu.saturating_sub(by_cpu.min(by_mem)) * d.gpu_milli_total()
}

/// Remembers [`node_frag`] by node state: nodes of one kind in the same
/// state (accelerators in any order) share one entry.
pub struct FragCache {
    typical: Vec<Typical>,
    cpu_aware: bool,
    memo: HashMap<NodeRes, f64, BuildHasherDefault<MixHasher>>,
}

impl FragCache {
    pub fn new(typical: Vec<Typical>) -> FragCache {
        FragCache {
            typical,
            cpu_aware: false,
            memo: HashMap::default(),
        }
    }

    /// A cache of [`node_frag_with`] counting what CPU and memory cannot
    /// feed (gigafab's placement).
    pub fn cpu_aware(typical: Vec<Typical>) -> FragCache {
        FragCache {
            cpu_aware: true,
            ..FragCache::new(typical)
        }
    }

    pub fn typical(&self) -> &[Typical] {
        &self.typical
    }

    /// Entries remembered.
    pub fn len(&self) -> usize {
        self.memo.len()
    }

    pub fn is_empty(&self) -> bool {
        self.memo.is_empty()
    }

    /// The fragmentation of `node`.
    pub fn frag(&mut self, node: &NodeRes) -> f64 {
        let mut key = *node;
        key.left[..key.n as usize].sort_unstable();
        if let Some(&f) = self.memo.get(&key) {
            return f;
        }
        let f = node_frag_with(&key, &self.typical, self.cpu_aware);
        self.memo.insert(key, f);
        f
    }
}

/// A fast, non-cryptographic hasher for the cache's keys (the keys are
/// the run's own node states, never a tenant's input).
#[derive(Default)]
pub struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_u8(&mut self, x: u8) {
        self.write_u64(x as u64)
    }

    fn write_u16(&mut self, x: u16) {
        self.write_u64(x as u64)
    }

    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64)
    }

    fn write_usize(&mut self, x: usize) {
        self.write_u64(x as u64)
    }
}
