//! Power model of accelerators, nodes and sites.
//!
//! - An accelerator draws `idle + (peak − idle) × u` at utilisation `u`.
//!   A running job is taken at [`JOB_UTILIZATION`] = 0.75, which puts an
//!   H100 at 542 W, 77% of its 700 W board power: an 8×H100 node training
//!   Llama2-13B averaged ~76% of rated power (Latif et al., 2025; see
//!   DESIGN.md). Idle accelerators draw their idle power.
//! - A node draws `node_watts` besides its accelerators (CPUs, memory,
//!   NICs, fans) whenever it is on (default: half its accelerators' peak; a
//!   DGX H100 is rated 10.2 kW for 5.6 kW of GPUs).
//! - A site draws its IT power × PUE.
//! - A power cap `c` (W) below a job's uncapped draw `d` keeps a fraction
//!   `(c / d)^0.22` of its speed: at 70% of the draw, 92.5% of the speed,
//!   the middle of the 90–95% that Zeus (You et al., NSDI'23) and MIT
//!   Lincoln Laboratory's power-capping study (Frey et al., HPEC'22,
//!   "Great power, great responsibility") measured for training at about
//!   that cap; energy per unit of work falls to 0.7 / 0.925 ≈ 76%. Caps go
//!   no lower than [`MIN_CAP_FRACTION`] of board power (the lowest limit
//!   `nvidia-smi -pl` accepts on data-centre parts is about half of it).

use crate::catalog::AcceleratorType;

/// Utilisation of a running job's accelerators in the power model.
pub const JOB_UTILIZATION: f64 = 0.75;
/// Exponent of the speed–cap curve.
pub const CAP_EXPONENT: f64 = 0.22;
/// Lowest power cap, as a fraction of board (peak) power.
pub const MIN_CAP_FRACTION: f64 = 0.5;

/// Power of one accelerator at utilisation `u` (0..=1), W.
pub fn accel_power_w(t: &AcceleratorType, u: f64) -> f64 {
    t.idle_watts + (t.peak_watts - t.idle_watts) * u.clamp(0.0, 1.0)
}

/// Uncapped power of one accelerator running a job, W.
pub fn job_power_w(t: &AcceleratorType) -> f64 {
    accel_power_w(t, JOB_UTILIZATION)
}

/// Fraction of its speed a job keeps when its accelerators, which would
/// draw `draw_w` each, are capped at `cap_w`.
pub fn capped_speed(cap_w: f64, draw_w: f64) -> f64 {
    if cap_w >= draw_w || draw_w <= 0.0 {
        1.0
    } else {
        (cap_w.max(0.0) / draw_w).powf(CAP_EXPONENT)
    }
}

/// Lowest cap allowed on an accelerator type, W.
pub fn min_cap_w(t: &AcceleratorType) -> f64 {
    (MIN_CAP_FRACTION * t.peak_watts).max(t.idle_watts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    #[test]
    fn h100_figures() {
        let c = Catalog::builtin();
        let h = c.get(c.index("h100").unwrap());
        assert_eq!(accel_power_w(h, 0.0), 70.0);
        assert_eq!(accel_power_w(h, 1.0), 700.0);
        assert!((job_power_w(h) - 542.5).abs() < 1e-9);
        assert_eq!(min_cap_w(h), 350.0);
    }

    #[test]
    fn cap_curve_matches_the_cited_range() {
        assert_eq!(capped_speed(600.0, 500.0), 1.0);
        let s = capped_speed(0.7 * 542.5, 542.5);
        assert!((0.90..=0.95).contains(&s), "{s}");
        // energy per unit of work falls under a cap
        assert!(0.7 / s < 0.8);
        assert!(capped_speed(0.5, 1.0) < capped_speed(0.8, 1.0));
    }
}
