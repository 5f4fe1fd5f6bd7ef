//! Turning samples into joules.

use crate::Sample;
use std::collections::BTreeMap;

/// How far an energy counter's delta may stray from power × time and still be
/// trusted: ±25 %.
pub const COUNTER_TOLERANCE: f64 = 0.25;

/// Whether an energy counter that read `e0_j` and then `e1_j`, `dt_s` seconds
/// apart, agrees with an average power of `avg_power_w` over that interval.
///
/// It does when the counter went up and its delta is within
/// [`COUNTER_TOLERANCE`] (±25 %) of `avg_power_w × dt_s`. Any non-finite input,
/// a non-positive interval or expected energy, or a counter that did not go up
/// gives `false`.
pub fn counter_trustworthy(e0_j: f64, e1_j: f64, avg_power_w: f64, dt_s: f64) -> bool {
    if ![e0_j, e1_j, avg_power_w, dt_s]
        .iter()
        .all(|v| v.is_finite())
    {
        return false;
    }
    let delta = e1_j - e0_j;
    let expected = avg_power_w * dt_s;
    if delta <= 0.0 || expected <= 0.0 || dt_s <= 0.0 {
        return false;
    }
    (delta - expected).abs() <= COUNTER_TOLERANCE * expected
}

/// The part of a sample the meter keeps between two samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    at_ms: i64,
    power_w: Option<f64>,
    energy_j: Option<f64>,
}

impl Reading {
    fn of(s: &Sample) -> Self {
        Reading {
            at_ms: s.at_ms,
            // Negative or non-finite power is a bad reading, not a value.
            power_w: s.power_w.filter(|p| p.is_finite() && *p >= 0.0),
            energy_j: s.energy_j.filter(|e| e.is_finite()),
        }
    }
}

/// Energy in joules between two readings of one device, `prev` before `cur`.
///
/// Uses the counter delta when both readings have a counter and it did not go
/// backwards; otherwise (no counter, or a reset or wrap) the trapezoid of the
/// two powers over the interval, or the one power known times the interval, or
/// zero when neither reading has power.
fn interval_j(prev: &Reading, cur: &Reading) -> f64 {
    if let (Some(e0), Some(e1)) = (prev.energy_j, cur.energy_j)
        && e1 >= e0
    {
        return e1 - e0;
    }
    let dt_s = (i128::from(cur.at_ms) - i128::from(prev.at_ms)) as f64 / 1000.0;
    match (prev.power_w, cur.power_w) {
        (Some(p0), Some(p1)) => (p0 + p1) / 2.0 * dt_s,
        (Some(p), None) | (None, Some(p)) => p * dt_s,
        (None, None) => 0.0,
    }
}

#[derive(Debug, Clone, Default)]
struct DeviceMeter {
    last: Option<Reading>,
    total_j: f64,
}

/// Integrates the energy of each device from its successive samples.
///
/// For each interval between two samples of a device it prefers the device's
/// cumulative energy counter (the delta of [`Sample::energy_j`]); when the
/// counter is missing from either sample, or went backwards (a reset or a
/// wrap), it integrates power over the interval instead, by the trapezoid rule.
/// A sample no later than the device's previous one is ignored. The first
/// sample of a device only sets the starting point.
#[derive(Debug, Clone, Default)]
pub struct EnergyMeter {
    devices: BTreeMap<u32, DeviceMeter>,
}

impl EnergyMeter {
    /// A meter that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in one sample and returns the joules it added to its device (zero
    /// for a device's first sample and for an ignored one).
    pub fn add(&mut self, sample: &Sample) -> f64 {
        let cur = Reading::of(sample);
        let dev = self.devices.entry(sample.index).or_default();
        let added = match dev.last {
            Some(prev) if cur.at_ms <= prev.at_ms => return 0.0,
            Some(prev) => interval_j(&prev, &cur),
            None => 0.0,
        };
        let added = if added.is_finite() { added } else { 0.0 };
        dev.total_j += added;
        dev.last = Some(cur);
        added
    }

    /// Takes in every sample of a batch; returns the joules they added.
    pub fn add_all<'a>(&mut self, samples: impl IntoIterator<Item = &'a Sample>) -> f64 {
        samples.into_iter().map(|s| self.add(s)).sum()
    }

    /// Joules integrated so far for device `index` (zero for one not seen).
    pub fn energy_j(&self, index: u32) -> f64 {
        self.devices.get(&index).map_or(0.0, |d| d.total_j)
    }

    /// Joules integrated so far over every device.
    pub fn total_j(&self) -> f64 {
        self.devices.values().map(|d| d.total_j).sum()
    }

    /// Indices of the devices seen so far, in order.
    pub fn devices(&self) -> Vec<u32> {
        self.devices.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(index: u32, at_ms: i64, power_w: Option<f64>, energy_j: Option<f64>) -> Sample {
        Sample {
            power_w,
            energy_j,
            ..Sample::new(index, at_ms)
        }
    }

    #[test]
    fn trust_within_a_quarter() {
        // 100 W for 10 s is 1000 J.
        assert!(counter_trustworthy(0.0, 1000.0, 100.0, 10.0));
        assert!(counter_trustworthy(5000.0, 5750.0, 100.0, 10.0));
        assert!(counter_trustworthy(5000.0, 6250.0, 100.0, 10.0));
        assert!(!counter_trustworthy(5000.0, 5749.0, 100.0, 10.0));
        assert!(!counter_trustworthy(5000.0, 6251.0, 100.0, 10.0));
        // Off by a unit (mJ read as J, µJ as mJ) is never trusted.
        assert!(!counter_trustworthy(0.0, 1.0, 100.0, 10.0));
        assert!(!counter_trustworthy(0.0, 1_000_000.0, 100.0, 10.0));
    }

    #[test]
    fn no_trust_without_positive_delta_or_sane_inputs() {
        assert!(!counter_trustworthy(1000.0, 1000.0, 100.0, 10.0));
        assert!(!counter_trustworthy(1000.0, 0.0, 100.0, 10.0));
        assert!(!counter_trustworthy(0.0, 1000.0, 0.0, 10.0));
        assert!(!counter_trustworthy(0.0, 1000.0, 100.0, 0.0));
        assert!(!counter_trustworthy(0.0, -1000.0, -100.0, 10.0));
        assert!(!counter_trustworthy(0.0, 1000.0, 100.0, -10.0));
        assert!(!counter_trustworthy(f64::NAN, 1000.0, 100.0, 10.0));
        assert!(!counter_trustworthy(0.0, f64::INFINITY, 100.0, 10.0));
        assert!(!counter_trustworthy(0.0, 1000.0, f64::NAN, 10.0));
    }

    #[test]
    fn counter_delta_is_preferred() {
        let mut m = EnergyMeter::new();
        assert_eq!(m.add(&s(0, 1_000, Some(100.0), Some(5_000.0))), 0.0);
        // Power says 100 J; the counter says 120 J; the counter wins.
        assert_eq!(m.add(&s(0, 2_000, Some(100.0), Some(5_120.0))), 120.0);
        assert_eq!(m.add(&s(0, 3_000, None, Some(5_200.0))), 80.0);
        assert_eq!(m.energy_j(0), 200.0);
    }

    #[test]
    fn power_is_integrated_by_trapezoid() {
        let mut m = EnergyMeter::new();
        m.add(&s(1, 0, Some(100.0), None));
        // (100 + 300) / 2 × 2 s = 400 J.
        assert_eq!(m.add(&s(1, 2_000, Some(300.0), None)), 400.0);
        // Only one side known: 300 W × 0.5 s, then 200 W × 1 s.
        assert_eq!(m.add(&s(1, 2_500, None, None)), 150.0);
        assert_eq!(m.add(&s(1, 3_500, Some(200.0), None)), 200.0);
        assert_eq!(m.energy_j(1), 750.0);
    }

    #[test]
    fn one_side_power_and_no_power() {
        let mut m = EnergyMeter::new();
        m.add(&s(0, 0, Some(250.0), None));
        assert_eq!(m.add(&s(0, 4_000, None, None)), 1000.0);
        assert_eq!(m.add(&s(0, 5_000, None, None)), 0.0);
        assert_eq!(m.energy_j(0), 1000.0);
    }

    #[test]
    fn counter_going_backwards_falls_back_to_power() {
        let mut m = EnergyMeter::new();
        m.add(&s(0, 0, Some(200.0), Some(1_000_000.0)));
        // Reset: the counter restarts near zero; use (200 + 400) / 2 × 1 s.
        assert_eq!(m.add(&s(0, 1_000, Some(400.0), Some(10.0))), 300.0);
        // Next interval counts from the new origin again.
        assert_eq!(m.add(&s(0, 2_000, Some(400.0), Some(410.0))), 400.0);
        assert_eq!(m.energy_j(0), 700.0);
    }

    #[test]
    fn counter_on_one_side_only_uses_power() {
        let mut m = EnergyMeter::new();
        m.add(&s(0, 0, Some(100.0), None));
        assert_eq!(m.add(&s(0, 1_000, Some(100.0), Some(42.0))), 100.0);
        assert_eq!(m.add(&s(0, 2_000, Some(100.0), Some(142.5))), 100.5);
    }

    #[test]
    fn late_and_duplicate_samples_are_ignored() {
        let mut m = EnergyMeter::new();
        m.add(&s(0, 10_000, Some(100.0), None));
        assert_eq!(m.add(&s(0, 10_000, Some(900.0), None)), 0.0);
        assert_eq!(m.add(&s(0, 5_000, Some(900.0), None)), 0.0);
        assert_eq!(m.add(&s(0, 11_000, Some(100.0), None)), 100.0);
        assert_eq!(m.energy_j(0), 100.0);
    }

    #[test]
    fn bad_values_are_dropped_not_summed() {
        let mut m = EnergyMeter::new();
        m.add(&s(0, 0, Some(f64::NAN), Some(f64::INFINITY)));
        assert_eq!(m.add(&s(0, 1_000, Some(-5.0), None)), 0.0);
        assert_eq!(m.add(&s(0, 2_000, Some(50.0), None)), 50.0);
        assert_eq!(m.energy_j(0), 50.0);
        // Extreme timestamps do not overflow.
        let mut m = EnergyMeter::new();
        m.add(&s(0, i64::MIN, Some(1.0), None));
        let added = m.add(&s(0, i64::MAX, Some(1.0), None));
        assert!(added.is_finite() && added > 0.0);
    }

    #[test]
    fn devices_are_kept_apart_and_totalled() {
        let mut m = EnergyMeter::new();
        let batch0 = [s(0, 0, Some(100.0), Some(0.0)), s(1, 0, Some(200.0), None)];
        let batch1 = [
            s(0, 1_000, Some(100.0), Some(150.0)),
            s(1, 1_000, Some(200.0), None),
        ];
        assert_eq!(m.add_all(&batch0), 0.0);
        assert_eq!(m.add_all(&batch1), 350.0);
        assert_eq!(m.energy_j(0), 150.0);
        assert_eq!(m.energy_j(1), 200.0);
        assert_eq!(m.energy_j(7), 0.0);
        assert_eq!(m.total_j(), 350.0);
        assert_eq!(m.devices(), vec![0, 1]);
    }
}
