//! Scripted telemetry for tests.

use crate::{DeviceInfo, Sample, Telemetry, TelemetryError, lock};
use std::collections::VecDeque;
use std::sync::Mutex;

type Batch = Result<Vec<Sample>, TelemetryError>;

#[derive(Debug)]
struct Script {
    batches: VecDeque<Batch>,
    served: usize,
    last: Option<Batch>,
}

/// Telemetry that replays a script: fixed devices, and a list of sample batches
/// (or errors) that [`Telemetry::sample`] returns in turn.
///
/// Once the script is spent, `sample` fails with
/// [`TelemetryError::Exhausted`], or, after [`FakeTelemetry::repeat_last`],
/// keeps returning the last batch.
#[derive(Debug)]
pub struct FakeTelemetry {
    source: &'static str,
    devices: Vec<DeviceInfo>,
    repeat_last: bool,
    script: Mutex<Script>,
}

impl FakeTelemetry {
    /// Devices `devices`, whose samples are `batches`, one batch per call.
    pub fn new(devices: Vec<DeviceInfo>, batches: Vec<Vec<Sample>>) -> Self {
        Self::from_results(devices, batches.into_iter().map(Ok).collect())
    }

    /// Like [`FakeTelemetry::new`], with errors in the script too: each call to
    /// `sample` returns the next entry as it is.
    pub fn from_results(
        devices: Vec<DeviceInfo>,
        results: Vec<Result<Vec<Sample>, TelemetryError>>,
    ) -> Self {
        FakeTelemetry {
            source: "fake",
            devices,
            repeat_last: false,
            script: Mutex::new(Script {
                batches: results.into(),
                served: 0,
                last: None,
            }),
        }
    }

    /// Keep returning the last entry once the script is spent, instead of
    /// failing.
    pub fn repeat_last(mut self) -> Self {
        self.repeat_last = true;
        self
    }

    /// Report `source` from [`Telemetry::source`] instead of `fake` (to stand
    /// in for a real backend).
    pub fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    /// Entries of the script not yet returned.
    pub fn remaining(&self) -> usize {
        lock(&self.script).batches.len()
    }
}

impl Telemetry for FakeTelemetry {
    fn source(&self) -> &'static str {
        self.source
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>, TelemetryError> {
        Ok(self.devices.clone())
    }

    fn sample(&self) -> Result<Vec<Sample>, TelemetryError> {
        let mut script = lock(&self.script);
        match script.batches.pop_front() {
            Some(batch) => {
                script.served += 1;
                if self.repeat_last {
                    script.last = Some(batch.clone());
                }
                batch
            }
            None => match (&script.last, self.repeat_last) {
                (Some(last), true) => last.clone(),
                _ => Err(TelemetryError::Exhausted {
                    served: script.served,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Vendor;

    fn gpu(index: u32) -> DeviceInfo {
        DeviceInfo {
            index,
            uuid: format!("GPU-fake-{index}"),
            name: "Fake GPU".into(),
            vendor: Vendor::Nvidia,
            memory_total_mib: Some(81_559),
            power_limit_w: Some(700.0),
        }
    }

    fn batch(at_ms: i64, power_w: f64) -> Vec<Sample> {
        vec![Sample {
            power_w: Some(power_w),
            ..Sample::new(0, at_ms)
        }]
    }

    #[test]
    fn returns_batches_in_turn_then_exhausts() {
        let t = FakeTelemetry::new(vec![gpu(0)], vec![batch(0, 100.0), batch(1_000, 200.0)]);
        assert_eq!(t.source(), "fake");
        assert_eq!(t.devices().unwrap(), vec![gpu(0)]);
        assert_eq!(t.remaining(), 2);
        assert_eq!(t.sample().unwrap(), batch(0, 100.0));
        assert_eq!(t.sample().unwrap(), batch(1_000, 200.0));
        assert_eq!(t.remaining(), 0);
        assert_eq!(t.sample(), Err(TelemetryError::Exhausted { served: 2 }));
        assert_eq!(t.sample(), Err(TelemetryError::Exhausted { served: 2 }));
    }

    #[test]
    fn repeat_last_keeps_serving() {
        let t = FakeTelemetry::new(vec![gpu(0)], vec![batch(0, 100.0), batch(1_000, 200.0)])
            .repeat_last()
            .with_source("nvml");
        assert_eq!(t.source(), "nvml");
        t.sample().unwrap();
        t.sample().unwrap();
        assert_eq!(t.sample().unwrap(), batch(1_000, 200.0));
        assert_eq!(t.sample().unwrap(), batch(1_000, 200.0));
    }

    #[test]
    fn scripted_errors_come_back() {
        let err = TelemetryError::Device {
            backend: "NVML",
            index: 0,
            message: "GPU is lost".into(),
        };
        let t =
            FakeTelemetry::from_results(vec![gpu(0)], vec![Err(err.clone()), Ok(batch(5, 1.0))]);
        assert_eq!(t.sample(), Err(err));
        assert_eq!(t.sample().unwrap(), batch(5, 1.0));
    }

    #[test]
    fn empty_script_fails_cleanly() {
        let t = FakeTelemetry::new(vec![], vec![]).repeat_last();
        assert_eq!(t.devices().unwrap(), vec![]);
        assert_eq!(t.sample(), Err(TelemetryError::Exhausted { served: 0 }));
    }

    #[test]
    fn usable_as_a_trait_object_across_threads() {
        let t: std::sync::Arc<dyn Telemetry> = std::sync::Arc::new(
            FakeTelemetry::new(vec![gpu(0)], vec![batch(0, 1.0)]).repeat_last(),
        );
        let t2 = t.clone();
        let h = std::thread::spawn(move || t2.sample().map(|b| b.len()));
        assert_eq!(h.join().unwrap(), Ok(1));
        assert_eq!(t.sample().unwrap().len(), 1);
    }
}
