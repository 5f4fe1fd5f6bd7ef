//! Recorded telemetry played back at its recorded pace.
//!
//! A recording is a list of sample batches with their own timestamps (what
//! `gigafab agent probe -o json` prints, repeated). Played back, the batch
//! shown at a moment is the one recorded at the same time since the start
//! of the recording, stamped with the wall clock; at the end it starts over,
//! with each device's energy counter carried on (as a real counter would),
//! so energy measured over a replay is what the recorded device drew over
//! the same time.

use crate::{DeviceInfo, Sample, Telemetry, TelemetryError, lock};
use std::sync::Mutex;
use std::time::Instant;

/// A recording played at its own pace (see the module documentation).
#[derive(Debug)]
pub struct ReplayTelemetry {
    devices: Vec<DeviceInfo>,
    batches: Vec<Vec<Sample>>,
    /// Offset of each batch from the first, ms (non-decreasing).
    offsets: Vec<i64>,
    /// Length of one pass, ms: the last offset plus one more step.
    period_ms: i64,
    /// Per device index: counter growth over one pass, J.
    growth: Vec<(u32, f64)>,
    start: Mutex<Option<Instant>>,
}

impl ReplayTelemetry {
    /// Batches in recording order; each batch's time is its first sample's
    /// `at_ms`.
    pub fn new(devices: Vec<DeviceInfo>, batches: Vec<Vec<Sample>>) -> Self {
        let mut offsets = Vec::with_capacity(batches.len());
        let t0 = batches
            .iter()
            .find_map(|b| b.first().map(|s| s.at_ms))
            .unwrap_or(0);
        let mut last = 0;
        for b in &batches {
            let t = b.first().map_or(last, |s| (s.at_ms - t0).max(last));
            offsets.push(t);
            last = t;
        }
        let n = offsets.len();
        let step = if n >= 2 {
            (offsets[n - 1] - offsets[n - 2]).max(1)
        } else {
            0
        };
        let period_ms = if n >= 2 { offsets[n - 1] + step } else { 0 };
        // counter growth per pass: first to last, plus the last step again
        let mut growth = Vec::new();
        for d in &devices {
            let e = |b: &Vec<Sample>| {
                b.iter()
                    .find(|s| s.index == d.index)
                    .and_then(|s| s.energy_j)
            };
            let g = match (
                batches.first().and_then(e),
                batches.last().and_then(e),
                n.checked_sub(2).and_then(|i| e(&batches[i])),
            ) {
                (Some(first), Some(last), Some(before)) => {
                    (last - first) + (last - before).max(0.0)
                }
                _ => 0.0,
            };
            growth.push((d.index, g.max(0.0)));
        }
        ReplayTelemetry {
            devices,
            batches,
            offsets,
            period_ms,
            growth,
            start: Mutex::new(None),
        }
    }

    /// The batch shown `elapsed_ms` after the first call, stamped `wall_ms`.
    pub fn sample_at(&self, elapsed_ms: i64, wall_ms: i64) -> Vec<Sample> {
        if self.batches.is_empty() {
            return Vec::new();
        }
        let (pass, pos) = if self.period_ms > 0 {
            (
                elapsed_ms.max(0) / self.period_ms,
                elapsed_ms.max(0) % self.period_ms,
            )
        } else {
            (0, 0)
        };
        let i = self
            .offsets
            .partition_point(|&o| o <= pos)
            .saturating_sub(1);
        self.batches[i]
            .iter()
            .map(|s| {
                let mut s = s.clone();
                s.at_ms = wall_ms;
                if let (Some(e), Some(&(_, g))) = (
                    s.energy_j,
                    self.growth.iter().find(|(ix, _)| *ix == s.index),
                ) {
                    s.energy_j = Some(e + pass as f64 * g);
                }
                s
            })
            .collect()
    }
}

impl Telemetry for ReplayTelemetry {
    fn source(&self) -> &'static str {
        "replay"
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        Ok(self.devices.clone())
    }

    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        let start = *lock(&self.start).get_or_insert_with(Instant::now);
        let elapsed = start.elapsed().as_millis() as i64;
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(self.sample_at(elapsed, wall))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vendor;

    fn rec() -> ReplayTelemetry {
        let dev = DeviceInfo {
            index: 0,
            uuid: "GPU-0".into(),
            name: "GPU".into(),
            vendor: Vendor::Nvidia,
            memory_total_mib: None,
            power_limit_w: None,
        };
        // 100 W for 1 s, then 500 W: counter 0, 100, 600 J at 0, 1, 2 s
        let b = |t: i64, e: f64, p: f64| {
            vec![Sample {
                index: 0,
                at_ms: 5_000 + t,
                energy_j: Some(e),
                power_w: Some(p),
                ..Sample::default()
            }]
        };
        ReplayTelemetry::new(
            vec![dev],
            vec![
                b(0, 0.0, 100.0),
                b(1000, 100.0, 500.0),
                b(2000, 600.0, 500.0),
            ],
        )
    }

    #[test]
    fn plays_at_the_recorded_pace_stamped_now() {
        let r = rec();
        assert_eq!(r.period_ms, 3000);
        let s = r.sample_at(0, 42);
        assert_eq!((s[0].at_ms, s[0].energy_j), (42, Some(0.0)));
        assert_eq!(r.sample_at(999, 1)[0].energy_j, Some(0.0));
        assert_eq!(r.sample_at(1000, 1)[0].power_w, Some(500.0));
        assert_eq!(r.sample_at(2500, 1)[0].energy_j, Some(600.0));
    }

    #[test]
    fn wraps_around_with_the_counter_carried_on() {
        let r = rec();
        // one pass grows the counter by 600 J, plus 500 J for the last step
        assert_eq!(r.sample_at(3000, 1)[0].energy_j, Some(1100.0));
        assert_eq!(r.sample_at(3000 + 2000, 1)[0].energy_j, Some(1700.0));
        assert_eq!(r.sample_at(6000, 1)[0].energy_j, Some(2200.0));
        // never backwards over many passes
        let mut last = -1.0;
        for t in (0..30_000).step_by(250) {
            let e = r.sample_at(t, 1)[0].energy_j.unwrap();
            assert!(e >= last, "{t}: {e} < {last}");
            last = e;
        }
    }
}
