//! Which slices of an accelerator type hold a workload's fractional jobs:
//! the layout question of a shared pool, answered from the workload.
//!
//! For each named slice of the type (a MIG profile, an AMD partition), and
//! for the mix that gives each job its smallest fitting slice (by compute
//! share, then memory): the jobs with a slice request it holds, the
//! accelerator-hours they take there (each job charged its slice: one of
//! the slices a pool of that profile makes of an accelerator), the
//! accelerator-hours the same jobs take on whole accelerators, and the
//! share of the charged capacity the jobs leave unused. Jobs weigh by
//! their run time.

use gigafab_core::JobSpec;
use gigafab_core::share::profiles::{self, Profile};
use serde::Serialize;

/// One layout's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayoutAdvice {
    /// The slice (`1g.10gb`), or `best-fit mix`.
    pub layout: String,
    /// Slices of this kind per accelerator (the mix: none).
    pub per_accelerator: Option<u8>,
    /// Fractional jobs it holds, of all with a slice request.
    pub jobs_held: usize,
    pub jobs: usize,
    /// Accelerator-hours of the held jobs on these slices.
    pub slice_gpu_hours: f64,
    /// ... and on whole accelerators.
    pub whole_gpu_hours: f64,
    /// Share of the slices' capacity the held jobs leave unused (0..1).
    pub unused_inside: f64,
}

/// A fractional job: its share (thousandths), memory bound (GB) and run
/// time (s).
struct Want {
    milli: u16,
    memory_gb: f64,
    seconds: f64,
}

fn wants(jobs: &[JobSpec]) -> Vec<Want> {
    jobs.iter()
        .filter_map(|j| {
            let s = j.types.slice.as_ref()?;
            Some(Want {
                milli: s.milli,
                memory_gb: j.types.min_memory_gb.unwrap_or(0.0),
                seconds: j.duration_s.or(j.time_limit_s).unwrap_or(0.0).max(0.0),
            })
        })
        .collect()
}

fn holds(p: &Profile, w: &Want) -> bool {
    p.milli() >= w.milli && p.memory_gb >= w.memory_gb
}

/// The answers for `accel` (a catalog id with named slices): one per
/// slice, smallest first, then the best-fit mix.
pub fn advise(accel: &str, jobs: &[JobSpec]) -> Result<Vec<LayoutAdvice>, String> {
    let all = profiles::of_type(accel);
    if all.is_empty() {
        return Err(format!(
            "`{accel}` has no named slices (MIG: a100, a100-40, h100, h200, b200; partitions: mi300x, mi325x, mi355x)"
        ));
    }
    let wants = wants(jobs);
    let mut out = Vec::new();
    let mut tally = |layout: String, per: Option<u8>, pick: &dyn Fn(&Want) -> Option<&Profile>| {
        let (mut held, mut slice_s, mut whole_s, mut used_s) = (0, 0.0, 0.0, 0.0);
        for w in &wants {
            if let Some(p) = pick(w) {
                held += 1;
                slice_s += w.seconds * p.charge_milli() as f64 / 1000.0;
                whole_s += w.seconds;
                used_s += w.seconds * w.milli as f64 / 1000.0;
            }
        }
        out.push(LayoutAdvice {
            layout,
            per_accelerator: per,
            jobs_held: held,
            jobs: wants.len(),
            slice_gpu_hours: slice_s / 3600.0,
            whole_gpu_hours: whole_s / 3600.0,
            unused_inside: if slice_s > 0.0 {
                (1.0 - used_s / slice_s).max(0.0)
            } else {
                0.0
            },
        });
    };
    for p in all {
        tally(p.name.to_string(), Some(p.max_per_gpu), &|w| {
            holds(p, w).then_some(p)
        });
    }
    let mut by_size: Vec<&Profile> = all.iter().collect();
    by_size.sort_by(|a, b| {
        a.milli()
            .cmp(&b.milli())
            .then(a.memory_gb.total_cmp(&b.memory_gb))
    });
    tally("best-fit mix".into(), None, &|w| {
        by_size.iter().copied().find(|p| holds(p, w))
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gigafab_core::TypeFilter;

    fn job(milli: &str, hours: f64) -> JobSpec {
        let mut j = JobSpec::simple("j", 0.0, 1, hours * 3600.0);
        j.types = TypeFilter::parse(&format!("slice:{milli}")).unwrap();
        j
    }

    #[test]
    fn each_slice_holds_what_fits_and_the_mix_holds_all() {
        let jobs = [
            job("0.1", 1.0),
            job("0.4", 2.0),
            JobSpec::simple("w", 0.0, 1, 3600.0),
        ];
        let a = advise("h100", &jobs).unwrap();
        let one = a.iter().find(|x| x.layout == "1g.10gb").unwrap();
        assert_eq!((one.jobs_held, one.jobs), (1, 2), "0.4 is more than 1/7");
        assert!((one.slice_gpu_hours - 0.143).abs() < 1e-9);
        assert!((one.whole_gpu_hours - 1.0).abs() < 1e-9);
        let three = a.iter().find(|x| x.layout == "3g.40gb").unwrap();
        assert_eq!(three.jobs_held, 2);
        let mix = a.last().unwrap();
        assert_eq!(mix.layout, "best-fit mix");
        assert_eq!(mix.jobs_held, 2);
        // 0.1 on a 1g (charged 1/7), 0.4 on a 3g (compute 3/7, charged 1/2)
        assert!((mix.slice_gpu_hours - (0.143 + 2.0 * 0.5)).abs() < 1e-9);
        assert!(mix.unused_inside > 0.2 && mix.unused_inside < 0.4);
        assert!(advise("t4", &jobs).unwrap_err().contains("no named slices"));
    }
}
