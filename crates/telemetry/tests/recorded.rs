//! What gigafab's NVML backend read from a real NVIDIA H200 (see
//! tests/fixtures/README.md): the probe decodes, and the energy meter agrees
//! with the device's own power readings.

use gigafab_telemetry::{EnergyMeter, Probe, Sample, Vendor, counter_trustworthy};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[derive(serde::Deserialize)]
struct Replay {
    devices: Vec<gigafab_telemetry::DeviceInfo>,
    samples: Vec<Vec<Sample>>,
}

#[test]
fn a_real_h200_probe_decodes() {
    let p: Probe = serde_json::from_str(&fixture("h200-probe.json")).unwrap();
    assert_eq!(p.source, "nvml");
    assert!(p.found());
    let d = &p.devices[0];
    assert_eq!((d.name.as_str(), d.vendor), ("NVIDIA H200", Vendor::Nvidia));
    assert_eq!(d.memory_total_mib, Some(143_771));
    assert_eq!(d.power_limit_w, Some(700.0));
    let s = &p.samples[0];
    let w = s.power_w.unwrap();
    assert!((600.0..=700.0).contains(&w), "{w} W under load");
    assert_eq!(s.utilization_pct, Some(100.0));
    assert!(s.energy_j.unwrap() > 0.0);
}

#[test]
fn the_h200_energy_counter_agrees_with_its_power_readings() {
    let r: Replay = serde_json::from_str(&fixture("h200-matmul-replay.json")).unwrap();
    assert_eq!(r.devices.len(), 1);
    let s: Vec<&Sample> = r.samples.iter().map(|b| &b[0]).collect();
    assert_eq!(s.len(), 16);
    let mut meter = EnergyMeter::new();
    meter.add_all(s.iter().copied());
    let (first, last) = (s[0], s[s.len() - 1]);
    let counter = last.energy_j.unwrap() - first.energy_j.unwrap();
    assert!(
        (meter.energy_j(0) - counter).abs() < 1e-6,
        "the meter uses the counter"
    );
    // interval by interval, the counter and the trapezoid of the powers agree
    // within the meter's tolerance; the first load step is the exception
    // (power jumped from 80 W to 306 W between the two readings)
    let mut trusted = 0;
    for w in s.windows(2) {
        let dt = (w[1].at_ms - w[0].at_ms) as f64 / 1000.0;
        let avg = (w[0].power_w.unwrap() + w[1].power_w.unwrap()) / 2.0;
        if counter_trustworthy(w[0].energy_j.unwrap(), w[1].energy_j.unwrap(), avg, dt) {
            trusted += 1;
        }
    }
    assert!(trusted >= 13, "{trusted} of 15 intervals agree");
    // idle ~79 W, loaded ~690 W: the counter's average over the run lies between
    let secs = (last.at_ms - first.at_ms) as f64 / 1000.0;
    let avg = counter / secs;
    assert!((79.0..700.0).contains(&avg), "{avg} W");
}
