//! The `mixed` synthetic profile: what a shared AI factory runs in a day,
//! for the question of what sharing its accelerators gives.
//!
//! Four kinds of jobs, drawn by count with the shares of [`Shares`]:
//!
//! * **training**: Philly jobs, as the `philly` profile (whole
//!   accelerators, preemptible, a checkpoint an hour);
//! * **notebooks**: an interactive session on a slice of one accelerator,
//!   1/8, 1/4 or 1/2 of it (probabilities 0.3, 0.5, 0.2), open for a
//!   log-uniform 15 minutes to 8 hours, not preemptible, priority 1;
//! * **inference**: a model replica on a quarter (0.4), a half (0.4) or a
//!   whole accelerator (0.2), up for a log-uniform 2 to 24 hours, not
//!   preemptible, priority 1;
//! * **pods**: the fractional pods of an Alibaba trace (less than one GPU:
//!   their share and run time, resampled), not preemptible.
//!
//! The shapes of notebooks and replicas are assumptions, not data: no
//! public trace gives them; change the shares (`--mix`) to see what they
//! weigh. Ids name the kind (`train-3`, `notebook-4`, `inference-5`,
//! `pod-6`). Arrivals are a Poisson process; the seed feeds arrival gaps,
//! kinds and shapes, and tenants from separate streams.

use super::synth::{PHILLY_CHECKPOINT_S, SynthError, TENANTS};
use gigafab_core::spec::SliceReq;
use gigafab_core::{JobSpec, Rng, TypeFilter};

/// The share of each kind of job, by count (they sum to 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    pub training: f64,
    pub notebooks: f64,
    pub inference: f64,
    pub pods: f64,
}

impl Default for Shares {
    fn default() -> Shares {
        Shares {
            training: 0.4,
            notebooks: 0.3,
            inference: 0.1,
            pods: 0.2,
        }
    }
}

impl Shares {
    /// `training=0.4,notebooks=0.3,inference=0.1,pods=0.2` (kinds left out
    /// are 0; the shares are scaled to sum to 1).
    pub fn parse(s: &str) -> Result<Shares, String> {
        let mut m = Shares {
            training: 0.0,
            notebooks: 0.0,
            inference: 0.0,
            pods: 0.0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}`: expected KIND=SHARE"))?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("`{part}`: the share must be a number >= 0"))?;
            match k.trim() {
                "training" => m.training = v,
                "notebooks" => m.notebooks = v,
                "inference" => m.inference = v,
                "pods" => m.pods = v,
                other => {
                    return Err(format!(
                        "unknown kind `{other}` (training, notebooks, inference, pods)"
                    ));
                }
            }
        }
        let sum = m.training + m.notebooks + m.inference + m.pods;
        if !(sum > 0.0 && sum.is_finite()) {
            return Err("at least one kind needs a share above 0".into());
        }
        Ok(Shares {
            training: m.training / sum,
            notebooks: m.notebooks / sum,
            inference: m.inference / sum,
            pods: m.pods / sum,
        })
    }
}

/// A fractional pod of a trace: its run time and share (thousandths).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pod {
    pub duration_s: f64,
    pub milli: u16,
}

/// The fractional pods of a trace's jobs: one GPU, a slice request with a
/// share, a known run time.
pub fn pods_of(jobs: &[JobSpec]) -> Vec<Pod> {
    jobs.iter()
        .filter(|j| j.gpus == 1)
        .filter_map(|j| {
            let s = j.types.slice.as_ref()?;
            let d = j.duration_s?;
            (s.milli > 0 && s.milli < 1000 && d.is_finite() && d > 0.0).then_some(Pod {
                duration_s: d,
                milli: s.milli,
            })
        })
        .collect()
}

/// Parameters of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct MixParams {
    pub jobs: usize,
    pub rate_per_hour: f64,
    pub seed: u64,
    pub shares: Shares,
}

const NOTEBOOK_MILLI: [(u16, f64); 3] = [(125, 0.3), (250, 0.5), (500, 0.2)];
const NOTEBOOK_S: (f64, f64) = (900.0, 8.0 * 3600.0);
/// Replica shares (1000: a whole accelerator).
const INFERENCE_MILLI: [(u16, f64); 3] = [(250, 0.4), (500, 0.4), (1000, 0.2)];
const INFERENCE_S: (f64, f64) = (2.0 * 3600.0, 24.0 * 3600.0);

fn log_uniform_mean((a, b): (f64, f64)) -> f64 {
    (b - a) / (b / a).ln()
}

fn draw(r: &mut Rng, table: &[(u16, f64)]) -> u16 {
    let x = r.f64();
    let mut acc = 0.0;
    for &(v, p) in table {
        acc += p;
        if x < acc {
            return v;
        }
    }
    table[table.len() - 1].0
}

/// Expected accelerator-seconds per job, a slice counting its share: what
/// turns an offered load into a rate (`load × accelerators × 3600 / mean`).
/// NaN without the sources a share above 0 needs.
pub fn mean_gpu_seconds(p: &MixParams, philly: &[(f64, u32)], pods: &[Pod]) -> f64 {
    let s = p.shares;
    let mean = |t: &[(u16, f64)]| t.iter().map(|&(m, q)| m as f64 / 1000.0 * q).sum::<f64>();
    let train = if s.training > 0.0 {
        if philly.is_empty() {
            return f64::NAN;
        }
        philly.iter().map(|&(d, g)| d * g as f64).sum::<f64>() / philly.len() as f64
    } else {
        0.0
    };
    let pod = if s.pods > 0.0 {
        if pods.is_empty() {
            return f64::NAN;
        }
        pods.iter()
            .map(|p| p.duration_s * p.milli as f64 / 1000.0)
            .sum::<f64>()
            / pods.len() as f64
    } else {
        0.0
    };
    s.training * train
        + s.notebooks * mean(&NOTEBOOK_MILLI) * log_uniform_mean(NOTEBOOK_S)
        + s.inference * mean(&INFERENCE_MILLI) * log_uniform_mean(INFERENCE_S)
        + s.pods * pod
}

/// `p.jobs` jobs of the mixed profile, in submission order.
pub fn generate(
    p: &MixParams,
    philly: &[(f64, u32)],
    pods: &[Pod],
) -> Result<Vec<JobSpec>, SynthError> {
    super::synth::check_jobs_and_rate(p.jobs, p.rate_per_hour)?;
    let s = p.shares;
    if s.training > 0.0 && philly.is_empty() {
        return Err(SynthError::EmptyPhilly);
    }
    if s.pods > 0.0 && pods.is_empty() {
        return Err(SynthError::BadParam {
            name: "pods",
            message: "the pod trace has no fractional pod (one GPU, a share below 1)".into(),
        });
    }
    let mut root = Rng::new(p.seed);
    let mut arrivals = root.fork(1);
    let mut shape = root.fork(2);
    let mut tenants = root.fork(3);
    let rate_per_s = p.rate_per_hour / 3600.0;
    let mut t = 0.0;
    let mut jobs = Vec::with_capacity(p.jobs.min(1 << 20));
    for i in 0..p.jobs {
        t += arrivals.exp(rate_per_s);
        let tenant = TENANTS[tenants.below(TENANTS.len() as u64) as usize];
        // the kind: the first whose cumulative share passes the draw, the
        // last one with a share where rounding leaves a gap below 1
        let x = shape.f64();
        let shares = [s.training, s.notebooks, s.inference, s.pods];
        let last = shares.iter().rposition(|&v| v > 0.0).unwrap_or(0);
        let mut acc = 0.0;
        let kind_at = shares
            .iter()
            .position(|&v| {
                acc += v;
                v > 0.0 && x < acc
            })
            .unwrap_or(last);
        let (kind, gpus, milli, duration, preemptible, priority) = if kind_at == 0 {
            let (d, g) = philly[shape.below(philly.len() as u64) as usize];
            ("train", g, 1000, d, true, 0)
        } else if kind_at == 1 {
            let m = draw(&mut shape, &NOTEBOOK_MILLI);
            let d = shape.uniform(NOTEBOOK_S.0.ln(), NOTEBOOK_S.1.ln()).exp();
            ("notebook", 1, m, d, false, 1)
        } else if kind_at == 2 {
            let m = draw(&mut shape, &INFERENCE_MILLI);
            let d = shape.uniform(INFERENCE_S.0.ln(), INFERENCE_S.1.ln()).exp();
            ("inference", 1, m, d, false, 1)
        } else {
            let pod = pods[shape.below(pods.len() as u64) as usize];
            ("pod", 1, pod.milli, pod.duration_s, false, 0)
        };
        let mut types = TypeFilter::any();
        if milli < 1000 {
            types.slice = Some(SliceReq {
                milli,
                profile: None,
            });
        }
        jobs.push(JobSpec {
            id: format!("{kind}-{i}"),
            submit_s: t,
            gpus,
            types,
            duration_s: Some(duration),
            steps: None,
            job_type: None,
            time_limit_s: None,
            tenant: Some(tenant.0.to_string()),
            category: Some(tenant.1),
            priority,
            preemptible,
            checkpoint_s: (kind == "train").then_some(PHILLY_CHECKPOINT_S),
            deadline_s: None,
            dependency: None,
        });
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> (Vec<(f64, u32)>, Vec<Pod>) {
        (
            vec![(3600.0, 1), (7200.0, 4), (600.0, 8)],
            vec![
                Pod {
                    duration_s: 1800.0,
                    milli: 300,
                },
                Pod {
                    duration_s: 600.0,
                    milli: 500,
                },
            ],
        )
    }

    #[test]
    fn the_kinds_come_in_their_shares_and_slices_ask_for_their_share() {
        let (philly, pods) = sources();
        let p = MixParams {
            jobs: 20_000,
            rate_per_hour: 100.0,
            seed: 9,
            shares: Shares::default(),
        };
        let jobs = generate(&p, &philly, &pods).unwrap();
        let count = |k: &str| jobs.iter().filter(|j| j.id.starts_with(k)).count() as f64;
        assert!((count("train-") / 20_000.0 - 0.4).abs() < 0.02);
        assert!((count("notebook-") / 20_000.0 - 0.3).abs() < 0.02);
        assert!((count("inference-") / 20_000.0 - 0.1).abs() < 0.02);
        assert!((count("pod-") / 20_000.0 - 0.2).abs() < 0.02);
        for j in &jobs {
            let slice = j.types.slice.as_ref().map(|s| s.milli);
            match j.id.split('-').next().unwrap() {
                "train" => assert!(slice.is_none() && j.preemptible),
                "notebook" => assert!(matches!(slice, Some(125 | 250 | 500))),
                "inference" => assert!(matches!(slice, Some(250 | 500) | None)),
                "pod" => assert!(matches!(slice, Some(300 | 500))),
                k => panic!("{k}"),
            }
        }
        assert!(jobs.windows(2).all(|w| w[0].submit_s <= w[1].submit_s));
        // seeded: the same jobs again, others with another seed
        assert_eq!(generate(&p, &philly, &pods).unwrap(), jobs);
        let other = MixParams { seed: 10, ..p };
        assert_ne!(generate(&other, &philly, &pods).unwrap(), jobs);
    }

    #[test]
    fn the_mean_counts_a_slice_by_its_share() {
        let (philly, pods) = sources();
        let only = |s: &str| MixParams {
            jobs: 1,
            rate_per_hour: 1.0,
            seed: 1,
            shares: Shares::parse(s).unwrap(),
        };
        // (3600 + 28800 + 4800) / 3
        let m = mean_gpu_seconds(&only("training=1"), &philly, &pods);
        assert!((m - 12_400.0).abs() < 1e-6, "{m}");
        // (0.3 × 1800 + 0.5 × 600) / 2
        let m = mean_gpu_seconds(&only("pods=1"), &philly, &pods);
        assert!((m - 420.0).abs() < 1e-6, "{m}");
        assert!(mean_gpu_seconds(&only("pods=1"), &philly, &[]).is_nan());
    }

    #[test]
    fn bad_shares_say_what_is_wrong() {
        assert!(
            Shares::parse("training=1,gpus=2")
                .unwrap_err()
                .contains("unknown kind `gpus`")
        );
        assert!(Shares::parse("training=-1").unwrap_err().contains(">= 0"));
        assert!(Shares::parse("training=0").unwrap_err().contains("above 0"));
        assert!(
            Shares::parse("training")
                .unwrap_err()
                .contains("KIND=SHARE")
        );
        let s = Shares::parse("training=2,pods=2").unwrap();
        assert_eq!((s.training, s.pods, s.notebooks), (0.5, 0.5, 0.0));
    }
}
