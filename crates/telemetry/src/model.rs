//! Modelled telemetry: power from declared idle and peak watts.

use crate::{DeviceInfo, Sample, Telemetry, TelemetryError, Vendor, lock, now_ms};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// Power in watts of a device that draws `idle_w` at rest and `peak_w` flat
/// out, at utilisation `util` (a fraction, clamped to 0–1; NaN counts as 0):
/// `idle + (peak − idle) × util`.
pub fn model_power_w(idle_w: f64, peak_w: f64, util: f64) -> f64 {
    idle_w + (peak_w - idle_w) * clamp_util(util)
}

fn clamp_util(util: f64) -> f64 {
    if util.is_nan() {
        0.0
    } else {
        util.clamp(0.0, 1.0)
    }
}

/// A device declared to a [`ModelTelemetry`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDevice {
    /// How the device describes itself.
    pub info: DeviceInfo,
    /// Power at zero utilisation, in watts.
    pub idle_w: f64,
    /// Power at full utilisation, in watts.
    pub peak_w: f64,
}

impl ModelDevice {
    /// A device `index` named `name` (vendor [`Vendor::Other`], uuid
    /// `model-INDEX`, power limit `peak_w`).
    pub fn new(index: u32, name: impl Into<String>, idle_w: f64, peak_w: f64) -> Self {
        ModelDevice {
            info: DeviceInfo {
                index,
                uuid: format!("model-{index}"),
                name: name.into(),
                vendor: Vendor::Other,
                memory_total_mib: None,
                power_limit_w: Some(peak_w),
            },
            idle_w,
            peak_w,
        }
    }
}

type UtilFn = dyn Fn(u32, i64) -> f64 + Send + Sync;
type ClockFn = dyn Fn() -> i64 + Send + Sync;

#[derive(Debug, Clone, Copy)]
struct DeviceState {
    last_ms: i64,
    energy_j: f64,
    util: f64,
}

/// Telemetry with no hardware: power = idle + (peak − idle) × utilisation, and
/// an energy counter that integrates that power over wall-clock time.
///
/// Utilisation (a fraction, 0–1) is either set with
/// [`ModelTelemetry::set_utilization`], which holds until the next change, or
/// given by a function of the device index and the time
/// ([`ModelTelemetry::with_utilization_fn`]), evaluated at each sample and held
/// until the next. The counter starts at zero when the model is built and
/// integrates exactly for utilisation that only changes through
/// `set_utilization` or at samples. [`Telemetry::source`] is `model`.
pub struct ModelTelemetry {
    devices: Vec<ModelDevice>,
    util_fn: Option<Box<UtilFn>>,
    clock: Box<ClockFn>,
    state: Mutex<Vec<DeviceState>>,
}

impl std::fmt::Debug for ModelTelemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTelemetry")
            .field("devices", &self.devices)
            .field("util_fn", &self.util_fn.is_some())
            .field("state", &*lock(&self.state))
            .finish()
    }
}

impl ModelTelemetry {
    /// A model of `devices`, all idle, on the wall clock.
    ///
    /// Fails when a device has a negative or non-finite wattage, a peak below
    /// its idle, or an index another device already has.
    pub fn new(devices: Vec<ModelDevice>) -> Result<Self, TelemetryError> {
        for (i, d) in devices.iter().enumerate() {
            let idx = d.info.index;
            if !(d.idle_w.is_finite() && d.peak_w.is_finite()) || d.idle_w < 0.0 {
                return Err(TelemetryError::InvalidModel(format!(
                    "device {idx}: idle {} W and peak {} W must be finite and non-negative",
                    d.idle_w, d.peak_w
                )));
            }
            if d.peak_w < d.idle_w {
                return Err(TelemetryError::InvalidModel(format!(
                    "device {idx}: peak {} W is below idle {} W",
                    d.peak_w, d.idle_w
                )));
            }
            if devices[..i].iter().any(|o| o.info.index == idx) {
                return Err(TelemetryError::InvalidModel(format!(
                    "device index {idx} declared twice"
                )));
            }
        }
        let t = now_ms();
        let state = devices
            .iter()
            .map(|_| DeviceState {
                last_ms: t,
                energy_j: 0.0,
                util: 0.0,
            })
            .collect();
        Ok(ModelTelemetry {
            devices,
            util_fn: None,
            clock: Box::new(now_ms),
            state: Mutex::new(state),
        })
    }

    /// Reads time from `clock` (milliseconds since the epoch) instead of the
    /// wall clock, and restarts every counter at zero from `clock()`.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        let t = clock();
        self.clock = Box::new(clock);
        for s in lock(&self.state).iter_mut() {
            s.last_ms = t;
            s.energy_j = 0.0;
        }
        self
    }

    /// Takes each device's utilisation from `f(index, at_ms)`, evaluated now
    /// and at each sample.
    pub fn with_utilization_fn(
        mut self,
        f: impl Fn(u32, i64) -> f64 + Send + Sync + 'static,
    ) -> Self {
        let t = (self.clock)();
        {
            let mut state = lock(&self.state);
            for (d, s) in self.devices.iter().zip(state.iter_mut()) {
                advance(d, s, t);
                s.util = clamp_util(f(d.info.index, t));
            }
        }
        self.util_fn = Some(Box::new(f));
        self
    }

    /// Sets device `index`'s utilisation (a fraction, clamped to 0–1) from now
    /// on. With a utilisation function, the next sample replaces it.
    pub fn set_utilization(&self, index: u32, util: f64) -> Result<(), TelemetryError> {
        let pos = self.position(index)?;
        let t = (self.clock)();
        let mut state = lock(&self.state);
        advance(&self.devices[pos], &mut state[pos], t);
        state[pos].util = clamp_util(util);
        Ok(())
    }

    /// Device `index`'s current utilisation, a fraction.
    pub fn utilization(&self, index: u32) -> Result<f64, TelemetryError> {
        let pos = self.position(index)?;
        Ok(lock(&self.state)[pos].util)
    }

    fn position(&self, index: u32) -> Result<usize, TelemetryError> {
        self.devices
            .iter()
            .position(|d| d.info.index == index)
            .ok_or(TelemetryError::UnknownDevice(index))
    }
}

/// Adds the energy drawn at the held utilisation from `s.last_ms` to `t`. A
/// clock that went backwards adds nothing and restarts from `t`.
fn advance(d: &ModelDevice, s: &mut DeviceState, t: i64) {
    if t > s.last_ms {
        let dt_s = (i128::from(t) - i128::from(s.last_ms)) as f64 / 1000.0;
        s.energy_j += model_power_w(d.idle_w, d.peak_w, s.util) * dt_s;
    }
    s.last_ms = t;
}

impl Telemetry for ModelTelemetry {
    fn source(&self) -> &'static str {
        "model"
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        Ok(self.devices.iter().map(|d| d.info.clone()).collect())
    }

    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        let t = (self.clock)();
        let mut state = lock(&self.state);
        let mut out = Vec::with_capacity(self.devices.len());
        for (d, s) in self.devices.iter().zip(state.iter_mut()) {
            advance(d, s, t);
            if let Some(f) = &self.util_fn {
                s.util = clamp_util(f(d.info.index, t));
            }
            out.push(Sample {
                power_w: Some(model_power_w(d.idle_w, d.peak_w, s.util)),
                energy_j: Some(s.energy_j),
                utilization_pct: Some(s.util * 100.0),
                ..Sample::new(d.info.index, t)
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnergyMeter;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn manual_clock(start: i64) -> (Arc<AtomicI64>, impl Fn() -> i64 + Send + Sync + 'static) {
        let t = Arc::new(AtomicI64::new(start));
        let t2 = t.clone();
        (t, move || t2.load(Ordering::SeqCst))
    }

    #[test]
    fn power_formula() {
        assert_eq!(model_power_w(100.0, 700.0, 0.0), 100.0);
        assert_eq!(model_power_w(100.0, 700.0, 0.5), 400.0);
        assert_eq!(model_power_w(100.0, 700.0, 1.0), 700.0);
        assert_eq!(model_power_w(100.0, 700.0, 7.0), 700.0);
        assert_eq!(model_power_w(100.0, 700.0, -1.0), 100.0);
        assert_eq!(model_power_w(100.0, 700.0, f64::NAN), 100.0);
    }

    #[test]
    fn integrates_power_over_time() {
        let (t, clock) = manual_clock(1_000_000);
        let m = ModelTelemetry::new(vec![ModelDevice::new(0, "H100 (model)", 100.0, 700.0)])
            .unwrap()
            .with_clock(clock);
        assert_eq!(m.source(), "model");
        assert_eq!(m.devices().unwrap()[0].power_limit_w, Some(700.0));

        let s0 = m.sample().unwrap();
        assert_eq!(s0[0].power_w, Some(100.0));
        assert_eq!(s0[0].energy_j, Some(0.0));
        assert_eq!(s0[0].at_ms, 1_000_000);

        // 10 s idle: 1000 J.
        t.store(1_010_000, Ordering::SeqCst);
        m.set_utilization(0, 0.5).unwrap();
        // 4 s at 400 W: 1600 J more.
        t.store(1_014_000, Ordering::SeqCst);
        let s1 = m.sample().unwrap();
        assert_eq!(s1[0].power_w, Some(400.0));
        assert_eq!(s1[0].utilization_pct, Some(50.0));
        assert_eq!(s1[0].energy_j, Some(2600.0));
        assert_eq!(m.utilization(0).unwrap(), 0.5);

        // The counter agrees with what an energy meter makes of it.
        let mut meter = EnergyMeter::new();
        meter.add_all(&s0);
        meter.add_all(&s1);
        assert_eq!(meter.energy_j(0), 2600.0);
    }

    #[test]
    fn utilisation_function_is_held_between_samples() {
        let (t, clock) = manual_clock(0);
        let m = ModelTelemetry::new(vec![
            ModelDevice::new(0, "a", 50.0, 250.0),
            ModelDevice::new(1, "b", 0.0, 1000.0),
        ])
        .unwrap()
        .with_clock(clock)
        .with_utilization_fn(|index, at_ms| {
            if at_ms < 2_000 {
                0.0
            } else {
                0.25 * f64::from(index + 1)
            }
        });

        t.store(2_000, Ordering::SeqCst);
        let s = m.sample().unwrap();
        // Held at 0 for the first 2 s; now 25 % and 50 %.
        assert_eq!(s[0].energy_j, Some(100.0));
        assert_eq!(s[1].energy_j, Some(0.0));
        assert_eq!(s[0].power_w, Some(100.0));
        assert_eq!(s[1].power_w, Some(500.0));

        t.store(3_000, Ordering::SeqCst);
        let s = m.sample().unwrap();
        assert_eq!(s[0].energy_j, Some(200.0));
        assert_eq!(s[1].energy_j, Some(500.0));
        assert_eq!(s[1].index, 1);
    }

    #[test]
    fn clock_going_backwards_adds_nothing() {
        let (t, clock) = manual_clock(10_000);
        let m = ModelTelemetry::new(vec![ModelDevice::new(0, "a", 100.0, 100.0)])
            .unwrap()
            .with_clock(clock);
        t.store(5_000, Ordering::SeqCst);
        assert_eq!(m.sample().unwrap()[0].energy_j, Some(0.0));
        t.store(6_000, Ordering::SeqCst);
        assert_eq!(m.sample().unwrap()[0].energy_j, Some(100.0));
    }

    #[test]
    fn bad_declarations_are_refused() {
        let bad = |d: ModelDevice| ModelTelemetry::new(vec![d]).unwrap_err();
        assert!(matches!(
            bad(ModelDevice::new(0, "a", 300.0, 100.0)),
            TelemetryError::InvalidModel(_)
        ));
        assert!(matches!(
            bad(ModelDevice::new(0, "a", -1.0, 100.0)),
            TelemetryError::InvalidModel(_)
        ));
        assert!(matches!(
            bad(ModelDevice::new(0, "a", 1.0, f64::NAN)),
            TelemetryError::InvalidModel(_)
        ));
        let dup = ModelTelemetry::new(vec![
            ModelDevice::new(3, "a", 1.0, 2.0),
            ModelDevice::new(3, "b", 1.0, 2.0),
        ]);
        assert!(matches!(dup, Err(TelemetryError::InvalidModel(_))));
        let m = ModelTelemetry::new(vec![]).unwrap();
        assert_eq!(
            m.set_utilization(9, 0.5),
            Err(TelemetryError::UnknownDevice(9))
        );
        assert_eq!(m.sample().unwrap(), vec![]);
    }

    #[test]
    fn wall_clock_by_default() {
        let m = ModelTelemetry::new(vec![ModelDevice::new(0, "a", 10.0, 20.0)]).unwrap();
        let s = m.sample().unwrap();
        assert!(s[0].at_ms > 1_577_836_800_000);
        assert!(s[0].energy_j.unwrap() >= 0.0);
    }
}
