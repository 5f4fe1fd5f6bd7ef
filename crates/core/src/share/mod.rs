//! Sharing accelerators: fractional demands, their placement on nodes, and
//! the fragmentation measure that placement minimises.
//!
//! A node here is what a fraction needs to know of it: its accelerator
//! model, its free CPU (milli-cores) and memory (MiB), and, per accelerator,
//! the thousandths (milli) still free. A demand asks for CPU, memory and
//! either nothing of an accelerator, a fraction of one (`gpus` = 1 and
//! `milli` < 1000) or whole ones (`milli` = 1000).
//!
//! Placement is a pure function of (nodes, demand, policy, seeded random
//! draw): [`place`]. The policies are those of the GPU-sharing literature —
//! random fit, best fit, Fragmentation Gradient Descent (Weng et al.,
//! USENIX ATC'23) — and gigafab's own, [`Placement::Gigafab`]: FGD's
//! fragmentation gradient in steps of a twentieth of an accelerator, with
//! packing deciding within a step (see docs/scheduling.md, "Sharing").

mod frag;
pub mod profiles;

pub use frag::{FragCache, Typical, node_frag};

use crate::rng::Rng;

/// Thousandths of an accelerator: one whole accelerator.
pub const MILLI: u16 = 1000;

/// Most accelerators one node may hold in the sharing model.
pub const MAX_GPUS: usize = 16;

/// Accelerator models a demand accepts, as a bit set over the model
/// indices of the run (bit i: model i); empty accepts every model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Models(pub u64);

impl Models {
    pub const ANY: Models = Models(0);

    pub fn allows(self, model: u8) -> bool {
        self.0 == 0 || self.0 & (1u64 << model) != 0
    }
}

/// What one job or pod asks of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Demand {
    pub cpu_milli: u32,
    pub mem_mib: u64,
    /// Accelerators: 0 (none), 1 (a fraction or a whole one) or more
    /// (whole ones).
    pub gpus: u8,
    /// Thousandths of each accelerator: below 1000 only when `gpus` is 1.
    pub milli: u16,
    pub models: Models,
}

impl Demand {
    /// A demand, normalised: several accelerators are whole ones, none
    /// needs no share of one, and a fraction is at least one thousandth.
    pub fn new(cpu_milli: u32, mem_mib: u64, gpus: u8, milli: u16, models: Models) -> Demand {
        let milli = match gpus {
            0 => 0,
            1 => milli.clamp(1, MILLI),
            _ => MILLI,
        };
        Demand {
            cpu_milli,
            mem_mib,
            gpus,
            milli,
            models,
        }
    }

    /// Thousandths of an accelerator asked for in all.
    pub fn gpu_milli_total(&self) -> u64 {
        self.gpus as u64 * self.milli as u64
    }

    /// Whether this is a fraction of one accelerator.
    pub fn is_fraction(&self) -> bool {
        self.gpus == 1 && self.milli < MILLI
    }
}

/// One node's free resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeRes {
    pub model: u8,
    pub cpu_milli: u32,
    pub mem_mib: u64,
    /// Number of accelerators.
    pub n: u8,
    /// Free thousandths per accelerator (first `n` entries).
    pub left: [u16; MAX_GPUS],
}

impl NodeRes {
    /// A node with everything free.
    pub fn new(model: u8, cpu_milli: u32, mem_mib: u64, gpus: u8) -> NodeRes {
        let n = gpus.min(MAX_GPUS as u8);
        let mut left = [0; MAX_GPUS];
        left[..n as usize].fill(MILLI);
        NodeRes {
            model,
            cpu_milli,
            mem_mib,
            n,
            left,
        }
    }

    pub fn gpus(&self) -> &[u16] {
        &self.left[..self.n as usize]
    }

    /// Free thousandths over all accelerators.
    pub fn gpu_left_total(&self) -> u64 {
        self.gpus().iter().map(|&l| l as u64).sum()
    }

    /// Whether `d` fits here (CPU, memory, model and accelerators).
    pub fn fits(&self, d: &Demand) -> bool {
        if self.cpu_milli < d.cpu_milli || self.mem_mib < d.mem_mib {
            return false;
        }
        if d.gpus == 0 {
            return true;
        }
        if !d.models.allows(self.model) {
            return false;
        }
        let can = self.gpus().iter().filter(|&&l| l >= d.milli).count();
        can >= d.gpus as usize
    }

    /// The node after `d` is placed with `choice` (the accelerator of a
    /// fraction); whole accelerators are the lowest-numbered free ones.
    /// `d` must fit.
    pub fn with(&self, d: &Demand, gpu: Option<u8>) -> NodeRes {
        let mut out = *self;
        out.cpu_milli -= d.cpu_milli;
        out.mem_mib -= d.mem_mib;
        if d.is_fraction() {
            let g = gpu.expect("a fraction names its accelerator") as usize;
            out.left[g] -= d.milli;
        } else if d.gpus > 0 {
            let mut need = d.gpus;
            for l in out.left[..out.n as usize].iter_mut() {
                if need > 0 && *l == MILLI {
                    *l = 0;
                    need -= 1;
                }
            }
            debug_assert_eq!(need, 0, "whole accelerators must fit");
        }
        out
    }

    /// The node after `d`, placed at `gpus`, leaves: the inverse of
    /// [`NodeRes::with`].
    pub fn without(&self, d: &Demand, gpus: &[u8]) -> NodeRes {
        let mut out = *self;
        out.cpu_milli += d.cpu_milli;
        out.mem_mib += d.mem_mib;
        for &g in gpus {
            out.left[g as usize] += d.milli;
        }
        out
    }
}

/// How a demand picks its node (and its accelerator, for a fraction).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// A feasible node and accelerator drawn at random.
    Random,
    /// The node left with the least free CPU and accelerators (half
    /// weight each, relative to the largest node), then the fullest
    /// accelerator that fits.
    BestFit,
    /// Fragmentation Gradient Descent as published: the least growth in
    /// expected fragmentation, scored as the published simulator does
    /// (a sigmoid of the growth in whole accelerators, to integer
    /// percent), equal scores broken at random.
    Fgd,
    /// gigafab's: the least growth in expected fragmentation, counted in
    /// steps of [`GROWTH_STEP`]; within a step, the fullest accelerator,
    /// then the fullest node, then the least CPU left, then the lowest node
    /// number. Deterministic.
    Gigafab,
}

impl Placement {
    pub const ALL: [Placement; 4] = [
        Placement::Random,
        Placement::BestFit,
        Placement::Fgd,
        Placement::Gigafab,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placement::Random => "random",
            Placement::BestFit => "best-fit",
            Placement::Fgd => "fgd",
            Placement::Gigafab => "gigafab",
        }
    }

    pub fn parse(s: &str) -> Option<Placement> {
        Placement::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// Where a demand goes: its node, and for a fraction the accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    pub node: u32,
    pub gpu: Option<u8>,
}

/// What the largest node holds, to scale best fit's scores.
#[derive(Debug, Clone, Copy)]
pub struct MaxSpec {
    pub cpu_milli: u32,
    pub gpus: u8,
}

impl MaxSpec {
    pub fn of(nodes: &[NodeRes]) -> MaxSpec {
        MaxSpec {
            cpu_milli: nodes.iter().map(|n| n.cpu_milli).max().unwrap_or(1).max(1),
            gpus: nodes.iter().map(|n| n.n).max().unwrap_or(1).max(1),
        }
    }
}

/// Where `d` goes on `nodes` under `policy`, or None when it fits nowhere.
/// `frags` holds each node's current fragmentation (kept by the caller with
/// [`node_frag`] through `cache`); `max` scales best fit; `rng` draws for
/// the random policies.
pub fn place(
    nodes: &[NodeRes],
    frags: &[f64],
    d: &Demand,
    policy: Placement,
    cache: &mut FragCache,
    max: MaxSpec,
    rng: &mut Rng,
) -> Option<Choice> {
    let mut best: Option<(Choice, Score)> = None;
    let mut ties = 0u64;
    for (i, node) in nodes.iter().enumerate() {
        if !node.fits(d) {
            continue;
        }
        // this node's best candidate: the first best accelerator
        let mut here: Option<(Option<u8>, Score)> = None;
        let mut consider = |gpu: Option<u8>| {
            let score = score(node, frags[i], d, gpu, policy, cache, max);
            if here
                .as_ref()
                .is_none_or(|(_, b)| score.cmp_within(b) == std::cmp::Ordering::Greater)
            {
                here = Some((gpu, score));
            }
        };
        if d.is_fraction() && policy != Placement::Random {
            // One candidate per distinct free amount: accelerators with the
            // same free share are interchangeable.
            let mut seen = [u16::MAX; MAX_GPUS];
            let mut k = 0;
            for (g, &l) in node.gpus().iter().enumerate() {
                if l >= d.milli && !seen[..k].contains(&l) {
                    seen[k] = l;
                    k += 1;
                    consider(Some(g as u8));
                }
            }
        } else {
            consider(None);
        }
        let Some((gpu, score)) = here else { continue };
        let choice = Choice {
            node: i as u32,
            gpu,
        };
        match &best {
            None => {
                best = Some((choice, score));
                ties = 1;
            }
            Some((_, b)) => match score.cmp_across(b) {
                std::cmp::Ordering::Greater => {
                    best = Some((choice, score));
                    ties = 1;
                }
                std::cmp::Ordering::Equal if policy != Placement::Gigafab => {
                    // reservoir sampling among equal scores
                    ties += 1;
                    if rng.below(ties) == 0 {
                        best = Some((choice, score));
                    }
                }
                _ => {}
            },
        }
    }
    let (mut choice, _) = best?;
    if policy == Placement::Random && d.is_fraction() {
        // a random accelerator among those of the chosen node that fit
        let node = &nodes[choice.node as usize];
        let fit = node.gpus().iter().filter(|&&l| l >= d.milli).count() as u64;
        let pick = rng.below(fit) as usize;
        choice.gpu = node
            .gpus()
            .iter()
            .enumerate()
            .filter(|&(_, &l)| l >= d.milli)
            .nth(pick)
            .map(|(g, _)| g as u8);
    }
    Some(choice)
}

/// One candidate's score under `policy` (higher is better).
fn score(
    node: &NodeRes,
    frag_now: f64,
    d: &Demand,
    gpu: Option<u8>,
    policy: Placement,
    cache: &mut FragCache,
    max: MaxSpec,
) -> Score {
    match policy {
        Placement::Random => Score::Int(0, 0),
        Placement::BestFit => best_fit_score(node, d, gpu, max),
        Placement::Fgd => {
            let growth = cache.frag(&node.with(d, gpu)) - frag_now;
            Score::Int(fgd_published_score(growth), 0)
        }
        Placement::Gigafab => {
            let after = node.with(d, gpu);
            let growth = cache.frag(&after) - frag_now;
            let gpu_left = gpu.map_or(0, |g| node.left[g as usize] - d.milli);
            Score::Exact(
                -growth,
                -(gpu_left as i64),
                -(after.gpu_left_total() as i64),
                -(after.cpu_milli as i64),
            )
        }
    }
}

/// The accelerators a placed demand holds on its node.
pub fn held_gpus(before: &NodeRes, d: &Demand, choice: &Choice, out: &mut Vec<u8>) {
    out.clear();
    if let Some(g) = choice.gpu {
        out.push(g);
    } else if d.gpus > 0 {
        out.extend(
            before
                .gpus()
                .iter()
                .enumerate()
                .filter(|&(_, &l)| l == MILLI)
                .take(d.gpus as usize)
                .map(|(g, _)| g as u8),
        );
    }
}

/// gigafab's placement counts fragmentation growths in steps of this many
/// thousandths of an accelerator (a twentieth): within one step, packing
/// decides. Exact growths alone pack worse (docs/scheduling.md, "Sharing").
pub const GROWTH_STEP: f64 = 50.0;

/// A candidate's score: higher is better.
#[derive(Debug, Clone, Copy)]
enum Score {
    /// The published policies' integer node score, and the score that
    /// picks an accelerator within the node.
    Int(i64, i64),
    /// gigafab's: fragmentation growth (negated), then the accelerator's
    /// free share, the node's free accelerators and CPU (all negated).
    Exact(f64, i64, i64, i64),
}

impl Score {
    /// Between two candidates of one node.
    fn cmp_within(&self, other: &Score) -> std::cmp::Ordering {
        match (self, other) {
            (Score::Int(a, b), Score::Int(x, y)) => (a, b).cmp(&(x, y)),
            _ => self.cmp_across(other),
        }
    }

    /// Between the best candidates of two nodes.
    fn cmp_across(&self, other: &Score) -> std::cmp::Ordering {
        match (self, other) {
            (Score::Int(a, _), Score::Int(x, _)) => a.cmp(x),
            (Score::Exact(a, b, c, e), Score::Exact(x, y, z, w)) => {
                // growths in the same step of GROWTH_STEP are equal: the
                // fuller accelerator and node decide among them
                let (qa, qx) = ((a / GROWTH_STEP).floor(), (x / GROWTH_STEP).floor());
                if qa != qx {
                    return qa.total_cmp(&qx);
                }
                (b, c, e).cmp(&(y, z, w))
            }
            _ => std::cmp::Ordering::Equal,
        }
    }
}

/// Best fit: the node score, 0..=100, higher for less left over (half the
/// CPU and half the accelerators left after placing, each relative to the
/// largest node); within the node, the fullest accelerator that fits.
fn best_fit_score(node: &NodeRes, d: &Demand, gpu: Option<u8>, max: MaxSpec) -> Score {
    let cpu_left = (node.cpu_milli - d.cpu_milli) as f64 / max.cpu_milli as f64;
    let gpu_left =
        (node.gpu_left_total() - d.gpu_milli_total()) as f64 / (max.gpus as f64 * MILLI as f64);
    let node_score = ((1.0 - 0.5 * cpu_left - 0.5 * gpu_left) * 100.0) as i64;
    let fit = gpu.map_or(0, |g| (MILLI - (node.left[g as usize] - d.milli)) as i64);
    Score::Int(node_score, fit)
}

/// FGD's published score: `sigmoid(-growth / 1000) * 100` truncated to an
/// integer, where growth is in thousandths of an accelerator.
fn fgd_published_score(growth: f64) -> i64 {
    let x = -growth / MILLI as f64;
    (100.0 / (1.0 + (-x).exp())) as i64
}

#[cfg(test)]
mod tests;
