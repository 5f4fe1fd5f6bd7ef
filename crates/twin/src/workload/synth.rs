//! Synthetic workload generation: pure functions of a seed.
//!
//! Three profiles:
//!
//! * **gavel** — Gavel's own generator (Narayanan et al., OSDI'20): duration
//!   60·10^U(1.5,3) s with probability 0.8, else 60·10^U(3,4) s; 1/2/4/8 GPUs
//!   with probability 0.70/0.10/0.15/0.05; job type uniform over the
//!   throughput table's job types that run on that many V100s; work in steps
//!   = duration × the job's V100 throughput at that scale. Jobs accept any
//!   accelerator type, are preemptible and have no checkpoint interval (the
//!   throughput-aware schedulers account for work in steps).
//! * **philly** — (duration, GPU count) pairs resampled uniformly, with
//!   replacement, from the Philly job distribution
//!   (`traces/philly_job_distribution.csv`). Jobs accept any type, are
//!   preemptible at priority 0 and checkpoint every [`PHILLY_CHECKPOINT_S`]
//!   of run time (typical research-training practice: an interrupted job
//!   loses at most an hour).
//! * **gigafactory** — philly-profile jobs mixed with large training gangs:
//!   GPUs uniform over {1024, 2048, 4096, 8192, 16384}, duration log-uniform
//!   between 2 h and 48 h, not preemptible, checkpoint every 30 min,
//!   priority 0, tenant from [`GANG_TENANTS`]. Each job is a gang with
//!   probability `q`, chosen so that gangs carry `gang_share` of the expected
//!   GPU-seconds: `q·G / (q·G + (1−q)·P) = s`, i.e.
//!   `q = s·P / (s·P + (1−s)·G)` with `G`, `P` the mean GPU-seconds of a gang
//!   and of a Philly job.
//!
//! Arrivals are a Poisson process at `rate_per_hour`: the first job arrives
//! after one exponential gap (not at t = 0), like Gavel's generator.
//!
//! Every job that is not a gang gets a tenant drawn uniformly from
//! [`TENANTS`] (12 organisations over the five categories) with its category.
//! Job ids are `j0`, `j1`, … in submission order.
//!
//! The seed feeds three independent streams (arrival gaps, job shapes,
//! tenants), so the same seed and rate give the same arrival times whatever
//! the profile.

use super::WorkloadError;
use gigafab_core::{Category, JobSpec, Rng, Throughputs, TypeFilter};
use std::path::Path;

/// Workload profile of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Gavel,
    Philly,
    Gigafactory,
}

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gavel" => Some(Profile::Gavel),
            "philly" => Some(Profile::Philly),
            "gigafactory" => Some(Profile::Gigafactory),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Gavel => "gavel",
            Profile::Philly => "philly",
            Profile::Gigafactory => "gigafactory",
        }
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Default share of expected GPU-seconds carried by large gangs
/// (gigafactory profile).
pub const DEFAULT_GANG_SHARE: f64 = 0.5;

/// Parameters of [`generate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SynthParams {
    pub profile: Profile,
    /// Number of jobs (> 0).
    pub jobs: usize,
    /// Mean arrivals per hour (finite, > 0).
    pub rate_per_hour: f64,
    pub seed: u64,
    /// Gigafactory: fraction of expected GPU-seconds carried by large gangs,
    /// in [0, 1). Checked for every profile.
    pub gang_share: f64,
}

impl SynthParams {
    /// Parameters with the default gang share.
    pub fn new(profile: Profile, jobs: usize, rate_per_hour: f64, seed: u64) -> SynthParams {
        SynthParams {
            profile,
            jobs,
            rate_per_hour,
            seed,
            gang_share: DEFAULT_GANG_SHARE,
        }
    }
}

/// Errors of [`generate`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SynthError {
    #[error("bad parameter `{name}`: {message}")]
    BadParam { name: &'static str, message: String },
    #[error("the gavel profile needs a throughput table (job types with V100 throughputs)")]
    MissingThroughputs,
    #[error("no job type in the throughput table has a positive V100 throughput on {gpus} GPU(s)")]
    NoRunnableJobType { gpus: u32 },
    #[error(
        "the {profile} profile needs the Philly job distribution (traces/philly_job_distribution.csv)"
    )]
    MissingPhilly { profile: Profile },
    #[error("the Philly job distribution is empty")]
    EmptyPhilly,
    #[error("Philly distribution entry {index}: {message}")]
    BadPhillyEntry { index: usize, message: String },
}

/// Tenants of ordinary jobs, drawn uniformly: 3 startups, 2 SMEs, 3
/// industrial, 2 academic and 2 public organisations.
pub const TENANTS: [(&str, Category); 12] = [
    ("nimbus-ai", Category::Startup),
    ("quantaflow", Category::Startup),
    ("tinyllm", Category::Startup),
    ("atelier-vision", Category::Sme),
    ("medimage", Category::Sme),
    ("aerodyn", Category::Industry),
    ("autodrive", Category::Industry),
    ("pharmafold", Category::Industry),
    ("univ-paris", Category::Academia),
    ("polytech-lab", Category::Academia),
    ("meteo-public", Category::Public),
    ("health-agency", Category::Public),
];

/// Tenants of the gigafactory profile's large training gangs, drawn
/// uniformly.
pub const GANG_TENANTS: [(&str, Category); 3] = [
    ("frontier-lab", Category::Startup),
    ("industrial-fm", Category::Industry),
    ("sovereign-llm", Category::Public),
];

/// Gang sizes of the gigafactory profile (uniform).
pub const GANG_GPUS: [u32; 5] = [1024, 2048, 4096, 8192, 16384];
/// Gang duration bounds (log-uniform), seconds.
pub const GANG_MIN_S: f64 = 2.0 * 3600.0;
pub const GANG_MAX_S: f64 = 48.0 * 3600.0;
/// Gang checkpoint interval, seconds of run time.
pub const GANG_CHECKPOINT_S: f64 = 1800.0;
/// Checkpoint interval of philly-profile jobs, seconds of run time.
pub const PHILLY_CHECKPOINT_S: f64 = 3600.0;

/// Gavel's GPU counts and their probabilities.
const GAVEL_GPUS: [(u32, f64); 4] = [(1, 0.70), (2, 0.10), (4, 0.15), (8, 0.05)];
/// Probability of a short job in Gavel's generator, and the exponent ranges.
const GAVEL_SHORT_P: f64 = 0.8;
const GAVEL_SHORT: (f64, f64) = (1.5, 3.0);
const GAVEL_LONG: (f64, f64) = (3.0, 4.0);

/// Mean of 60·10^U(a,b).
fn mean_pow10_minutes(a: f64, b: f64) -> f64 {
    60.0 * (10f64.powf(b) - 10f64.powf(a)) / ((b - a) * std::f64::consts::LN_10)
}

/// Expected duration of a gavel-profile job (V100 seconds).
fn gavel_mean_duration() -> f64 {
    GAVEL_SHORT_P * mean_pow10_minutes(GAVEL_SHORT.0, GAVEL_SHORT.1)
        + (1.0 - GAVEL_SHORT_P) * mean_pow10_minutes(GAVEL_LONG.0, GAVEL_LONG.1)
}

fn gavel_mean_gpus() -> f64 {
    GAVEL_GPUS.iter().map(|&(g, p)| g as f64 * p).sum()
}

/// Expected GPU-seconds of a gigafactory gang.
fn gang_mean_gpu_seconds() -> f64 {
    let mean_gpus = GANG_GPUS.iter().map(|&g| g as f64).sum::<f64>() / GANG_GPUS.len() as f64;
    let mean_dur = (GANG_MAX_S - GANG_MIN_S) / (GANG_MAX_S / GANG_MIN_S).ln();
    mean_gpus * mean_dur
}

fn philly_mean_gpu_seconds(philly: &[(f64, u32)]) -> f64 {
    philly.iter().map(|&(d, g)| d * g as f64).sum::<f64>() / philly.len() as f64
}

/// Per-job probability of a gang so that gangs carry `share` of the expected
/// GPU-seconds, given the mean GPU-seconds of a Philly job.
fn gang_probability(share: f64, philly_mean: f64) -> f64 {
    let g = gang_mean_gpu_seconds();
    share * philly_mean / (share * philly_mean + (1.0 - share) * g)
}

/// Expected accelerator-seconds per job of the profile, so that a caller can
/// turn a target offered load into a rate:
/// `rate_per_hour = load * accelerators * 3600 / mean`.
///
/// Gavel: analytic (V100 seconds × GPUs). Philly: the mean over the
/// distribution. Gigafactory: the gang/Philly mixture for `p.gang_share`.
/// NaN when the profile needs the Philly distribution and it is missing or
/// empty, or when the gang share is outside [0, 1).
pub fn mean_gpu_seconds(p: &SynthParams, philly: Option<&[(f64, u32)]>) -> f64 {
    let philly_mean = || match philly {
        Some(d) if !d.is_empty() => philly_mean_gpu_seconds(d),
        _ => f64::NAN,
    };
    match p.profile {
        Profile::Gavel => gavel_mean_duration() * gavel_mean_gpus(),
        Profile::Philly => philly_mean(),
        Profile::Gigafactory => {
            if !(0.0..1.0).contains(&p.gang_share) {
                return f64::NAN;
            }
            let pm = philly_mean();
            let q = gang_probability(p.gang_share, pm);
            q * gang_mean_gpu_seconds() + (1.0 - q) * pm
        }
    }
}

/// Some jobs, at a finite rate above 0.
pub(crate) fn check_jobs_and_rate(jobs: usize, rate_per_hour: f64) -> Result<(), SynthError> {
    if jobs == 0 {
        return Err(SynthError::BadParam {
            name: "jobs",
            message: "must be > 0".into(),
        });
    }
    if !(rate_per_hour.is_finite() && rate_per_hour > 0.0) {
        return Err(SynthError::BadParam {
            name: "rate_per_hour",
            message: format!("must be a finite number > 0, got {rate_per_hour}"),
        });
    }
    Ok(())
}

fn check_params(p: &SynthParams) -> Result<(), SynthError> {
    check_jobs_and_rate(p.jobs, p.rate_per_hour)?;
    if !(0.0..1.0).contains(&p.gang_share) {
        return Err(SynthError::BadParam {
            name: "gang_share",
            message: format!("must be in [0, 1), got {}", p.gang_share),
        });
    }
    Ok(())
}

fn check_philly(
    profile: Profile,
    philly: Option<&[(f64, u32)]>,
) -> Result<&[(f64, u32)], SynthError> {
    let d = philly.ok_or(SynthError::MissingPhilly { profile })?;
    if d.is_empty() {
        return Err(SynthError::EmptyPhilly);
    }
    for (index, &(dur, gpus)) in d.iter().enumerate() {
        if !(dur.is_finite() && dur > 0.0) {
            return Err(SynthError::BadPhillyEntry {
                index,
                message: format!("duration must be a finite number > 0, got {dur}"),
            });
        }
        if gpus == 0 {
            return Err(SynthError::BadPhillyEntry {
                index,
                message: "GPU count must be > 0".into(),
            });
        }
    }
    Ok(d)
}

/// Job types runnable at each Gavel scale (same order as [`GAVEL_GPUS`]).
fn gavel_types(t: &Throughputs) -> Result<Vec<Vec<String>>, SynthError> {
    let all = t.job_types();
    GAVEL_GPUS
        .iter()
        .map(|&(gpus, _)| {
            let v: Vec<String> = all
                .iter()
                .filter(|jt| {
                    t.get(jt, "v100", gpus)
                        .is_some_and(|x| x.is_finite() && x > 0.0)
                })
                .map(|s| s.to_string())
                .collect();
            if v.is_empty() {
                Err(SynthError::NoRunnableJobType { gpus })
            } else {
                Ok(v)
            }
        })
        .collect()
}

fn base_job(i: usize, submit_s: f64, gpus: u32, tenant: (&str, Category)) -> JobSpec {
    JobSpec {
        id: format!("j{i}"),
        submit_s,
        gpus,
        types: TypeFilter::any(),
        duration_s: None,
        steps: None,
        job_type: None,
        time_limit_s: None,
        tenant: Some(tenant.0.to_string()),
        category: Some(tenant.1),
        priority: 0,
        preemptible: true,
        checkpoint_s: None,
        deadline_s: None,
        dependency: None,
    }
}

fn philly_job(
    i: usize,
    submit_s: f64,
    d: &[(f64, u32)],
    shape: &mut Rng,
    tenants: &mut Rng,
) -> JobSpec {
    let (dur, gpus) = d[shape.below(d.len() as u64) as usize];
    let tenant = TENANTS[tenants.below(TENANTS.len() as u64) as usize];
    let mut j = base_job(i, submit_s, gpus, tenant);
    j.duration_s = Some(dur);
    j.checkpoint_s = Some(PHILLY_CHECKPOINT_S);
    j
}

/// Checkpoint interval of gavel-profile jobs: Gavel's 6-minute rounds.
pub const GAVEL_CHECKPOINT_S: f64 = 360.0;

/// Generates `p.jobs` jobs of the profile, sorted by submission time.
///
/// The gavel profile draws job types and steps from `throughputs` (V100
/// throughputs of the job types); without it, jobs carry only their V100
/// duration. philly and gigafactory need the Philly distribution (see
/// [`load_philly`]). The other argument is ignored.
pub fn generate(
    p: &SynthParams,
    throughputs: Option<&Throughputs>,
    philly: Option<&[(f64, u32)]>,
) -> Result<Vec<JobSpec>, SynthError> {
    check_params(p)?;
    enum Setup<'a> {
        Gavel(Option<(&'a Throughputs, Vec<Vec<String>>)>),
        Philly(&'a [(f64, u32)]),
        Giga(&'a [(f64, u32)], f64),
    }
    let setup = match p.profile {
        Profile::Gavel => match throughputs {
            None => Setup::Gavel(None),
            Some(t) if t.is_empty() => return Err(SynthError::MissingThroughputs),
            Some(t) => Setup::Gavel(Some((t, gavel_types(t)?))),
        },
        Profile::Philly => Setup::Philly(check_philly(p.profile, philly)?),
        Profile::Gigafactory => {
            let d = check_philly(p.profile, philly)?;
            Setup::Giga(
                d,
                gang_probability(p.gang_share, philly_mean_gpu_seconds(d)),
            )
        }
    };

    let mut root = Rng::new(p.seed);
    let mut arrivals = root.fork(1);
    let mut shape = root.fork(2);
    let mut tenants = root.fork(3);
    let rate_per_s = p.rate_per_hour / 3600.0;
    let mut jobs = Vec::with_capacity(p.jobs.min(1 << 20));
    let mut t = 0.0;
    for i in 0..p.jobs {
        t += arrivals.exp(rate_per_s);
        let job = match &setup {
            Setup::Gavel(tp) => {
                let (lo, hi) = if shape.f64() < GAVEL_SHORT_P {
                    GAVEL_SHORT
                } else {
                    GAVEL_LONG
                };
                let duration = 60.0 * 10f64.powf(shape.uniform(lo, hi));
                let r = shape.f64();
                let mut acc = 0.0;
                let mut k = GAVEL_GPUS.len() - 1;
                for (idx, &(_, prob)) in GAVEL_GPUS.iter().enumerate() {
                    acc += prob;
                    if r < acc {
                        k = idx;
                        break;
                    }
                }
                let gpus = GAVEL_GPUS[k].0;
                // Uniform over the types that run at this scale: the same
                // distribution as drawing uniformly and redrawing on a zero
                // or missing V100 throughput.
                let tenant = TENANTS[tenants.below(TENANTS.len() as u64) as usize];
                let mut j = base_job(i, t, gpus, tenant);
                j.checkpoint_s = Some(GAVEL_CHECKPOINT_S);
                match tp {
                    Some((tp, types)) => {
                        let jt = &types[k][shape.below(types[k].len() as u64) as usize];
                        let tput = tp.get(jt, "v100", gpus).unwrap_or(0.0);
                        j.steps = Some(duration * tput);
                        j.job_type = Some(jt.clone());
                    }
                    None => j.duration_s = Some(duration),
                }
                j
            }
            Setup::Philly(d) => philly_job(i, t, d, &mut shape, &mut tenants),
            Setup::Giga(d, q) => {
                if shape.f64() < *q {
                    let gpus = GANG_GPUS[shape.below(GANG_GPUS.len() as u64) as usize];
                    let dur = shape.uniform(GANG_MIN_S.ln(), GANG_MAX_S.ln()).exp();
                    let tenant = GANG_TENANTS[tenants.below(GANG_TENANTS.len() as u64) as usize];
                    let mut j = base_job(i, t, gpus, tenant);
                    j.duration_s = Some(dur);
                    j.preemptible = false;
                    j.checkpoint_s = Some(GANG_CHECKPOINT_S);
                    j
                } else {
                    philly_job(i, t, d, &mut shape, &mut tenants)
                }
            }
        };
        jobs.push(job);
    }
    Ok(jobs)
}

/// Reads the Philly job distribution: a CSV with header columns
/// `duration_s` (seconds, finite and > 0) and `num_gpus` (integer > 0), in
/// any order; other columns are ignored. Errors name the line and field.
pub fn load_philly(path: &Path) -> Result<Vec<(f64, u32)>, WorkloadError> {
    let file = path.display().to_string();
    let text = crate::workload::native::read_text(path)?;
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let csv_err = |e: csv::Error| {
        let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
        WorkloadError::new(&file, line, "", e.to_string())
    };
    let headers = rdr.headers().map_err(csv_err)?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| WorkloadError::new(&file, 1, name, format!("missing column `{name}`")))
    };
    let dcol = col("duration_s")?;
    let gcol = col("num_gpus")?;
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(csv_err)?;
        let line = rec.position().map(|p| p.line() as usize).unwrap_or(0);
        let d = rec.get(dcol).unwrap_or("");
        let dur: f64 = d.parse().map_err(|_| {
            WorkloadError::new(&file, line, "duration_s", format!("not a number: `{d}`"))
        })?;
        if !(dur.is_finite() && dur > 0.0) {
            return Err(WorkloadError::new(
                &file,
                line,
                "duration_s",
                format!("must be a finite number > 0, got `{d}`"),
            ));
        }
        let g = rec.get(gcol).unwrap_or("");
        let gpus = g
            .parse::<u32>()
            .ok()
            .or_else(|| {
                // Accept integral floats such as `8.0`.
                g.parse::<f64>()
                    .ok()
                    .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x <= u32::MAX as f64)
                    .map(|x| x as u32)
            })
            .ok_or_else(|| {
                WorkloadError::new(&file, line, "num_gpus", format!("not an integer: `{g}`"))
            })?;
        if gpus == 0 {
            return Err(WorkloadError::new(&file, line, "num_gpus", "must be > 0"));
        }
        out.push((dur, gpus));
    }
    if out.is_empty() {
        return Err(WorkloadError::new(
            &file,
            0,
            "",
            "no jobs in the distribution",
        ));
    }
    Ok(out)
}

/// Makes a seeded `fraction` of the jobs flexible: a deadline at
/// submission plus duration plus `slack_s` (jobs whose work is in steps keep
/// none). The draw uses a stream of its own, so the workload is unchanged.
pub fn add_deadlines(jobs: &mut [JobSpec], fraction: f64, slack_s: f64, seed: u64) {
    if fraction <= 0.0 {
        return;
    }
    let mut rng = gigafab_core::Rng::new(seed ^ 0x00de_ad11_e5ee_d000);
    for j in jobs.iter_mut() {
        if rng.f64() < fraction
            && let Some(d) = j.duration_s
        {
            j.deadline_s = Some(j.submit_s + d + slack_s);
        }
    }
}

/// Gives every job a home site, drawn uniformly from `sites`: a job
/// without a deadline is pinned there (residency `site:<home>`); a job with
/// a deadline may run at every site, its home first (`site:<home>|<other>`).
/// Seeded, with a stream of its own.
pub fn assign_home_sites(jobs: &mut [JobSpec], sites: &[String], seed: u64) {
    if sites.is_empty() {
        return;
    }
    let mut rng = gigafab_core::Rng::new(seed ^ 0x51_7e5e_ed00);
    for j in jobs.iter_mut() {
        let home = rng.below(sites.len() as u64) as usize;
        j.types.sites = vec![sites[home].clone()];
        if j.deadline_s.is_some() {
            let others = sites.iter().enumerate().filter(|(i, _)| *i != home);
            j.types.sites.extend(others.map(|(_, s)| s.clone()));
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn deadlines_for_a_seeded_fraction() {
        let mut jobs: Vec<JobSpec> = (0..1000)
            .map(|i| JobSpec::simple(format!("j{i}"), i as f64, 1, 100.0))
            .collect();
        add_deadlines(&mut jobs, 0.3, 3600.0, 7);
        let flex: Vec<&JobSpec> = jobs.iter().filter(|j| j.deadline_s.is_some()).collect();
        assert!((250..350).contains(&flex.len()), "{}", flex.len());
        for j in flex {
            assert_eq!(j.deadline_s, Some(j.submit_s + 100.0 + 3600.0));
        }
        let mut again: Vec<JobSpec> = (0..1000)
            .map(|i| JobSpec::simple(format!("j{i}"), i as f64, 1, 100.0))
            .collect();
        add_deadlines(&mut again, 0.3, 3600.0, 7);
        assert_eq!(jobs, again);
    }
    use super::*;
    use std::collections::HashMap;

    const PHILLY: &str = "../../data/traces/philly_job_distribution.csv";

    fn philly() -> Vec<(f64, u32)> {
        load_philly(Path::new(PHILLY)).unwrap()
    }

    /// A small table: `c` cannot run on 8 V100s, `d` has no V100 entry.
    fn table() -> Throughputs {
        let mut t = Throughputs::new();
        for (jt, base) in [("a", 10.0), ("b", 2.5), ("c", 1.0)] {
            for g in [1u32, 2, 4, 8] {
                t.insert(jt, "v100", g, base * g as f64 * 0.9);
                t.insert(jt, "k80", g, base * g as f64 * 0.2);
            }
        }
        t.insert("c", "v100", 8, 0.0);
        t.insert("d", "k80", 1, 3.0);
        t
    }

    fn params(profile: Profile, jobs: usize, seed: u64) -> SynthParams {
        SynthParams::new(profile, jobs, 100.0, seed)
    }

    #[test]
    fn deterministic_by_seed() {
        let t = table();
        let d = philly();
        for profile in [Profile::Gavel, Profile::Philly, Profile::Gigafactory] {
            let a = generate(&params(profile, 2000, 7), Some(&t), Some(&d)).unwrap();
            let b = generate(&params(profile, 2000, 7), Some(&t), Some(&d)).unwrap();
            let c = generate(&params(profile, 2000, 8), Some(&t), Some(&d)).unwrap();
            assert_eq!(a, b, "{profile}");
            assert_ne!(a, c, "{profile}");
            assert_eq!(a.len(), 2000);
            assert_eq!(a[0].id, "j0");
            assert_eq!(a[1999].id, "j1999");
            assert!(a[0].submit_s > 0.0);
            assert!(a.windows(2).all(|w| w[0].submit_s <= w[1].submit_s));
        }
        // The arrival stream does not depend on the profile.
        let a = generate(&params(Profile::Gavel, 100, 3), Some(&t), None).unwrap();
        let b = generate(&params(Profile::Philly, 100, 3), None, Some(&d)).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.submit_s == y.submit_s));
    }

    #[test]
    fn gavel_profile_statistics() {
        let t = table();
        let n = 100_000;
        let p = params(Profile::Gavel, n, 11);
        let jobs = generate(&p, Some(&t), None).unwrap();
        let mut counts: HashMap<u32, usize> = HashMap::new();
        let mut gpu_s = 0.0;
        let mut short = 0;
        for j in &jobs {
            *counts.entry(j.gpus).or_default() += 1;
            let jt = j.job_type.as_deref().unwrap();
            assert!(
                jt != "d" && !(jt == "c" && j.gpus == 8),
                "{jt} on {}",
                j.gpus
            );
            let tput = t.get(jt, "v100", j.gpus).unwrap();
            let dur = j.steps.unwrap() / tput;
            assert!((60.0 * 10f64.powf(1.5) * 0.999..=600_000.0 * 1.001).contains(&dur));
            if dur < 60_000.0 {
                short += 1;
            }
            gpu_s += dur * j.gpus as f64;
            assert!(j.duration_s.is_none() && j.checkpoint_s == Some(GAVEL_CHECKPOINT_S));
            assert!(j.preemptible && j.types.is_any());
        }
        for (g, prob) in GAVEL_GPUS {
            let f = counts[&g] as f64 / n as f64;
            assert!((f - prob).abs() < 0.01, "gpus {g}: {f} vs {prob}");
        }
        assert!((short as f64 / n as f64 - 0.8).abs() < 0.01);
        let mean = gpu_s / n as f64;
        let expect = mean_gpu_seconds(&p, None);
        assert!((mean / expect - 1.0).abs() < 0.04, "{mean} vs {expect}");
        // All three runnable types appear.
        let types: std::collections::HashSet<_> =
            jobs.iter().map(|j| j.job_type.clone().unwrap()).collect();
        assert_eq!(types.len(), 3);
    }

    #[test]
    fn gavel_profile_with_the_real_throughputs() {
        let t = crate::workload::throughputs::load(Path::new(
            "../../data/gavel/simulation_throughputs.json",
        ))
        .unwrap();
        let jobs = generate(&params(Profile::Gavel, 5000, 4), Some(&t), None).unwrap();
        let mut types = std::collections::HashSet::new();
        for j in &jobs {
            let jt = j.job_type.as_deref().unwrap();
            assert!(t.get(jt, "v100", j.gpus).unwrap() > 0.0);
            assert!(j.steps.unwrap() > 0.0);
            types.insert(jt.to_string());
        }
        assert!(types.len() > 15, "{}", types.len());
    }

    #[test]
    fn arrival_rate_and_gpu_probabilities_20k() {
        let t = table();
        let n = 20_000;
        let p = SynthParams::new(Profile::Gavel, n, 250.0, 5);
        let jobs = generate(&p, Some(&t), None).unwrap();
        let rate = n as f64 / (jobs.last().unwrap().submit_s / 3600.0);
        assert!((rate / 250.0 - 1.0).abs() < 0.03, "rate {rate}");
        for (g, prob) in GAVEL_GPUS {
            let f = jobs.iter().filter(|j| j.gpus == g).count() as f64 / n as f64;
            assert!((f - prob).abs() < 0.015, "gpus {g}: {f} vs {prob}");
        }
    }

    #[test]
    fn philly_profile_resamples_the_distribution() {
        let d = philly();
        let n = 200_000;
        let p = params(Profile::Philly, n, 2);
        let jobs = generate(&p, None, Some(&d)).unwrap();
        let set: std::collections::HashSet<(u64, u32)> =
            d.iter().map(|&(x, g)| (x.to_bits(), g)).collect();
        let mut gpu_s = 0.0;
        for j in &jobs {
            let dur = j.duration_s.unwrap();
            assert!(set.contains(&(dur.to_bits(), j.gpus)));
            assert_eq!(j.checkpoint_s, Some(PHILLY_CHECKPOINT_S));
            assert!(j.preemptible && j.priority == 0 && j.steps.is_none());
            gpu_s += dur * j.gpus as f64;
        }
        let expect = mean_gpu_seconds(&p, Some(&d));
        assert!((gpu_s / n as f64 / expect - 1.0).abs() < 0.04);
        let single = jobs.iter().filter(|j| j.gpus == 1).count() as f64 / n as f64;
        assert!((single - 0.762).abs() < 0.01, "{single}");
    }

    #[test]
    fn gigafactory_gang_share() {
        let d = philly();
        // One seed's share has a standard deviation of about 3 points (only
        // ~220 gangs in 200k jobs, with a heavy-tailed Philly side); pooling
        // five seeds brings it to about 1.3 points.
        for share in [0.5, 0.2] {
            let (mut gang, mut total) = (0.0, 0.0);
            for seed in 1..=5 {
                let mut p = params(Profile::Gigafactory, 200_000, seed);
                p.gang_share = share;
                let jobs = generate(&p, None, Some(&d)).unwrap();
                let (mut g1, mut t1) = (0.0, 0.0);
                for j in &jobs {
                    let gs = j.duration_s.unwrap() * j.gpus as f64;
                    t1 += gs;
                    if j.gpus >= 1024 {
                        g1 += gs;
                        assert!(GANG_GPUS.contains(&j.gpus));
                        let dur = j.duration_s.unwrap();
                        assert!((GANG_MIN_S..=GANG_MAX_S).contains(&dur));
                        assert!(!j.preemptible);
                        assert_eq!(j.checkpoint_s, Some(GANG_CHECKPOINT_S));
                        assert_eq!(j.priority, 0);
                        let t = j.tenant.as_deref().unwrap();
                        assert!(
                            GANG_TENANTS
                                .iter()
                                .any(|&(n, c)| n == t && Some(c) == j.category)
                        );
                    } else {
                        assert!(j.preemptible && j.priority == 0);
                    }
                }
                assert!((g1 / t1 - share).abs() < 0.1, "seed {seed}: {}", g1 / t1);
                gang += g1;
                total += t1;
            }
            let got = gang / total;
            assert!((got - share).abs() < 0.04, "share {got} vs {share}");
            let p = SynthParams {
                gang_share: share,
                ..params(Profile::Gigafactory, 1, 0)
            };
            let mean = total / 1_000_000.0;
            let expect = mean_gpu_seconds(&p, Some(&d));
            assert!((mean / expect - 1.0).abs() < 0.08, "{mean} vs {expect}");
        }
        // No gangs at share 0.
        let mut p = params(Profile::Gigafactory, 20_000, 1);
        p.gang_share = 0.0;
        let jobs = generate(&p, None, Some(&d)).unwrap();
        assert!(jobs.iter().all(|j| j.gpus < 1024));
    }

    #[test]
    fn tenants_cover_the_categories() {
        let d = philly();
        let jobs = generate(&params(Profile::Philly, 5000, 9), None, Some(&d)).unwrap();
        let mut seen = std::collections::HashSet::new();
        for j in &jobs {
            let t = j.tenant.as_deref().unwrap();
            let &(_, c) = TENANTS.iter().find(|(n, _)| *n == t).unwrap();
            assert_eq!(j.category, Some(c));
            seen.insert(c);
        }
        assert_eq!(seen.len(), Category::ALL.len());
    }

    #[test]
    fn analytic_means() {
        // Gavel: 0.8·16,822 + 0.2·234,520 ≈ 60,362 s × 1.9 GPUs.
        let m = mean_gpu_seconds(&params(Profile::Gavel, 1, 0), None);
        assert!((m - 114_688.0).abs() < 50.0, "{m}");
        assert!(mean_gpu_seconds(&params(Profile::Philly, 1, 0), None).is_nan());
        assert!(mean_gpu_seconds(&params(Profile::Gigafactory, 1, 0), Some(&[])).is_nan());
        let d = [(100.0, 1), (300.0, 2)];
        assert_eq!(
            mean_gpu_seconds(&params(Profile::Philly, 1, 0), Some(&d)),
            350.0
        );
        let mut p = params(Profile::Gigafactory, 1, 0);
        p.gang_share = 0.0;
        assert_eq!(mean_gpu_seconds(&p, Some(&d)), 350.0);
        p.gang_share = 0.5;
        assert!((mean_gpu_seconds(&p, Some(&d)) - 700.0).abs() < 0.01);
        p.gang_share = 1.0;
        assert!(mean_gpu_seconds(&p, Some(&d)).is_nan());
    }

    #[test]
    fn bad_params_are_errors() {
        let t = table();
        let d = [(100.0, 1)];
        let bad = |f: &dyn Fn(&mut SynthParams)| {
            let mut p = params(Profile::Philly, 10, 1);
            f(&mut p);
            generate(&p, Some(&t), Some(&d)).unwrap_err()
        };
        let is_bad =
            |e: SynthError, n: &str| matches!(e, SynthError::BadParam { name, .. } if name == n);
        assert!(is_bad(bad(&|p| p.jobs = 0), "jobs"));
        assert!(is_bad(bad(&|p| p.rate_per_hour = 0.0), "rate_per_hour"));
        assert!(is_bad(bad(&|p| p.rate_per_hour = -1.0), "rate_per_hour"));
        assert!(is_bad(
            bad(&|p| p.rate_per_hour = f64::NAN),
            "rate_per_hour"
        ));
        assert!(is_bad(
            bad(&|p| p.rate_per_hour = f64::INFINITY),
            "rate_per_hour"
        ));
        assert!(is_bad(bad(&|p| p.gang_share = 1.0), "gang_share"));
        assert!(is_bad(bad(&|p| p.gang_share = -0.1), "gang_share"));
        assert!(is_bad(bad(&|p| p.gang_share = f64::NAN), "gang_share"));

        let g = params(Profile::Gavel, 10, 1);
        // without a throughput table, gavel jobs carry V100 durations
        let plain = generate(&g, None, None).unwrap();
        assert!(
            plain
                .iter()
                .all(|j| j.duration_s.is_some() && j.steps.is_none() && j.job_type.is_none())
        );
        assert_eq!(
            generate(&g, Some(&Throughputs::new()), None),
            Err(SynthError::MissingThroughputs)
        );
        let mut only_k80 = Throughputs::new();
        only_k80.insert("a", "k80", 1, 1.0);
        assert_eq!(
            generate(&g, Some(&only_k80), None),
            Err(SynthError::NoRunnableJobType { gpus: 1 })
        );
        let mut no8 = table();
        no8.insert("a", "v100", 8, 0.0);
        no8.insert("b", "v100", 8, 0.0);
        assert_eq!(
            generate(&g, Some(&no8), None),
            Err(SynthError::NoRunnableJobType { gpus: 8 })
        );

        for profile in [Profile::Philly, Profile::Gigafactory] {
            let p = params(profile, 10, 1);
            assert_eq!(
                generate(&p, None, None),
                Err(SynthError::MissingPhilly { profile })
            );
            assert_eq!(generate(&p, None, Some(&[])), Err(SynthError::EmptyPhilly));
            assert!(matches!(
                generate(&p, None, Some(&[(1.0, 1), (f64::NAN, 1)])),
                Err(SynthError::BadPhillyEntry { index: 1, .. })
            ));
            assert!(matches!(
                generate(&p, None, Some(&[(1.0, 0)])),
                Err(SynthError::BadPhillyEntry { index: 0, .. })
            ));
        }
        let e = SynthError::MissingPhilly {
            profile: Profile::Gigafactory,
        };
        assert!(e.to_string().contains("gigafactory"));
    }

    #[test]
    fn load_philly_reads_the_real_file() {
        let d = philly();
        assert_eq!(d.len(), 33_192);
        assert_eq!(d[0], (860_662.0, 1));
        assert!(
            d.iter()
                .all(|&(x, g)| x >= 3600.0 && [1, 2, 4, 8].contains(&g))
        );
        let single = d.iter().filter(|&&(_, g)| g == 1).count();
        assert_eq!(single, 25_304);
    }

    #[test]
    fn load_philly_rejects_malformed_input() {
        let dir = std::env::temp_dir().join(format!("gigafab-synth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |name: &str, text: &str, line: usize, field: &str, msg: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            let e = load_philly(&path).unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (line, field), "{name}: {e}");
            assert!(e.to_string().contains(msg), "{name}: {e}");
        };
        check(
            "dur.csv",
            "duration_s,num_gpus\n10,1\nabc,2\n",
            3,
            "duration_s",
            "abc",
        );
        check(
            "neg.csv",
            "duration_s,num_gpus\n-5,1\n",
            2,
            "duration_s",
            "> 0",
        );
        check(
            "inf.csv",
            "duration_s,num_gpus\n10,1\n20,1\ninf,1\n",
            4,
            "duration_s",
            "inf",
        );
        check(
            "zero.csv",
            "duration_s,num_gpus\n10,0\n",
            2,
            "num_gpus",
            "> 0",
        );
        check(
            "frac.csv",
            "duration_s,num_gpus\n10,1.5\n",
            2,
            "num_gpus",
            "1.5",
        );
        check(
            "col.csv",
            "duration,num_gpus\n10,1\n",
            1,
            "duration_s",
            "missing column",
        );
        check("len.csv", "duration_s,num_gpus\n10,1\n10\n", 3, "", "");
        check("empty.csv", "duration_s,num_gpus\n", 0, "", "no jobs");
        // Columns in another order, extra columns, integral floats.
        let path = dir.join("ok.csv");
        std::fs::write(&path, "num_gpus,x,duration_s\n8.0,a,12.5\n 2 ,b, 7\n").unwrap();
        assert_eq!(load_philly(&path).unwrap(), vec![(12.5, 8), (7.0, 2)]);
        let e = load_philly(&dir.join("missing.csv")).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
