//! Alibaba `cluster-trace-gpu-v2023` pod lists (`openb_pod_list_*.csv`).
//!
//! Columns: `name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,
//! pod_phase,creation_time,deletion_time,scheduled_time` (any order; extra
//! columns are ignored; `cpu_milli`, `memory_mib` and `pod_phase` are not
//! used). gigafab maps:
//!
//! * `id` = `name`; `submit_s` = `creation_time`;
//! * `duration_s` = `deletion_time - scheduled_time`;
//! * `gpus` = `num_gpu`. A pod with one GPU and `gpu_milli` < 1000 shares
//!   it with others in the real cluster: it asks for a slice of at least
//!   that share (`slice:0.46`). Where the factory has no shared pool that
//!   holds it, `gigafab sim` gives it a whole GPU instead (and says how
//!   many);
//! * `types` from `gpu_spec` (`|`-separated GPU models; empty or `nan`
//!   means any): `V100M16` and `V100M32` both become `v100`, every other
//!   model its lower-case name (`P100` → `p100`, `T4` → `t4`, `A10` → `a10`,
//!   `G2` → `g2`, `G3` → `g3`); duplicates are dropped;
//! * `qos`: `BE` (best effort) → priority 0 and preemptible; `LS` (latency
//!   sensitive) → priority 1; `Guaranteed` → priority 2; `Burstable` or
//!   empty → priority 0.
//!
//! Skipped (and counted, not errors): CPU-only pods (`num_gpu` = 0), pods
//! never scheduled (empty `scheduled_time`: the `Pending` ones), and pods
//! without a positive `deletion_time - scheduled_time`. Pods still `Running`
//! at the end of the trace carry the trace end as deletion time and are kept
//! with that (censored) duration; `Failed` pods are kept (they held GPUs).

use super::WorkloadError;
use super::native::{MAX_GPUS, non_negative, parse_finite, read_text, sort_by_submit};
use gigafab_core::spec::{JobSpec, TypeFilter};
use std::collections::HashMap;
use std::path::Path;

/// Columns the reader needs.
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "name",
    "num_gpu",
    "gpu_milli",
    "gpu_spec",
    "qos",
    "creation_time",
    "deletion_time",
    "scheduled_time",
];

const NAME: usize = 0;
const NUM_GPU: usize = 1;
const GPU_MILLI: usize = 2;
const GPU_SPEC: usize = 3;
const QOS: usize = 4;
const CREATION: usize = 5;
const DELETION: usize = 6;
const SCHEDULED: usize = 7;

/// Reads an Alibaba pod list; returns the jobs and the number of skipped pods.
pub fn read(path: &Path) -> Result<(Vec<JobSpec>, usize), WorkloadError> {
    let text = read_text(path)?;
    parse(&text, &path.display().to_string())
}

/// Parses an Alibaba pod list; `file` names the source in errors. Returns
/// the jobs, sorted by submission time, and the number of skipped pods.
pub fn parse(text: &str, file: &str) -> Result<(Vec<JobSpec>, usize), WorkloadError> {
    let mut rdr = super::csv_rows(text);
    let mut record = csv::StringRecord::new();
    let mut columns: Option<(Vec<usize>, usize)> = None;
    let mut jobs = Vec::new();
    let mut skipped = 0;
    let mut first_line: HashMap<String, usize> = HashMap::new();
    while let Some(line) = super::next_row(&mut rdr, &mut record, file)? {
        let Some((cols, width)) = &columns else {
            let needs = format!("an Alibaba pod list needs {}", REQUIRED_COLUMNS.join(","));
            columns = Some(super::header_columns(
                &record,
                &REQUIRED_COLUMNS,
                file,
                line,
                &needs,
            )?);
            continue;
        };
        super::check_width(&record, (cols, *width), &REQUIRED_COLUMNS, file, line)?;
        let cell = |k: usize| record[cols[k]].trim();
        let err = |k: usize, msg: String| WorkloadError::new(file, line, REQUIRED_COLUMNS[k], msg);
        // A time cell: `None` when empty, else a finite number >= 0.
        let time = |k: usize| -> Result<Option<f64>, WorkloadError> {
            let s = cell(k);
            if s.is_empty() {
                return Ok(None);
            }
            let v = parse_finite(s).map_err(|m| err(k, m))?;
            non_negative(s, v).map_err(|m| err(k, m))?;
            Ok(Some(v))
        };

        let name = cell(NAME);
        if name.is_empty() {
            return Err(err(NAME, "pod name must not be empty".into()));
        }
        let num_gpu = {
            let s = cell(NUM_GPU);
            let v = parse_finite(s).map_err(|m| err(NUM_GPU, m))?;
            if v.fract() != 0.0 || !(0.0..=MAX_GPUS as f64).contains(&v) {
                return Err(err(
                    NUM_GPU,
                    format!("expected a whole number from 0 to {MAX_GPUS}, got `{s}`"),
                ));
            }
            v as u32
        };
        let s = cell(GPU_MILLI);
        let mut milli = None;
        if !s.is_empty() {
            let v = parse_finite(s).map_err(|m| err(GPU_MILLI, m))?;
            non_negative(s, v).map_err(|m| err(GPU_MILLI, m))?;
            milli = Some(v);
        }
        let types = parse_gpu_spec(cell(GPU_SPEC)).map_err(|m| err(GPU_SPEC, m))?;
        let (priority, preemptible) = match cell(QOS).to_ascii_lowercase().as_str() {
            "be" => (0, true),
            "ls" => (1, false),
            "guaranteed" => (2, false),
            "burstable" | "" => (0, false),
            other => {
                return Err(err(
                    QOS,
                    format!("unknown QoS class `{other}` (BE, LS, Guaranteed or Burstable)"),
                ));
            }
        };
        let creation = time(CREATION)?
            .ok_or_else(|| err(CREATION, "creation time must not be empty".into()))?;
        let deletion = time(DELETION)?;
        let scheduled = time(SCHEDULED)?;
        if let Some(prev) = first_line.insert(name.to_string(), line) {
            return Err(err(
                NAME,
                format!("duplicate pod name `{name}` (first on line {prev})"),
            ));
        }
        let duration = match (deletion, scheduled) {
            (Some(d), Some(s)) if d > s => d - s,
            _ => {
                skipped += 1;
                continue;
            }
        };
        if num_gpu == 0 {
            skipped += 1;
            continue;
        }
        let mut job = JobSpec::simple(name, creation, num_gpu, duration);
        job.types = types;
        if let Some(m) = milli
            && num_gpu == 1
            && m > 0.0
            && m < 1000.0
        {
            job.types.slice = Some(gigafab_core::spec::SliceReq {
                milli: m.ceil() as u16,
                profile: None,
            });
        }
        job.priority = priority;
        job.preemptible = preemptible;
        jobs.push(job);
    }
    if columns.is_none() {
        return Err(WorkloadError::new(
            file,
            1,
            "",
            format!(
                "empty file: expected a header naming {}",
                REQUIRED_COLUMNS.join(",")
            ),
        ));
    }
    sort_by_submit(&mut jobs);
    Ok((jobs, skipped))
}

/// The catalog id of an Alibaba GPU model name (`V100M32` → `v100`).
pub fn model_type(model: &str) -> Result<String, String> {
    let m = model.trim();
    let valid = !m.is_empty()
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !valid {
        return Err(format!("bad GPU model `{m}`"));
    }
    let lower = m.to_ascii_lowercase();
    match lower.strip_prefix("v100m") {
        Some(mem) if !mem.is_empty() && mem.chars().all(|c| c.is_ascii_digit()) => {
            Ok("v100".into())
        }
        _ => Ok(lower),
    }
}

/// Parses a `gpu_spec` cell into a type filter.
pub fn parse_gpu_spec(spec: &str) -> Result<TypeFilter, String> {
    let spec = spec.trim();
    let mut f = TypeFilter::any();
    if spec.is_empty() || spec.eq_ignore_ascii_case("nan") {
        return Ok(f);
    }
    for m in spec.split('|') {
        let t = model_type(m)?;
        if !f.types.contains(&t) {
            f.types.push(t);
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gigafab_core::factory::Factory;

    const HEADER: &str = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n";

    #[test]
    fn maps_pods() {
        let text = format!(
            "{HEADER}\
             p0,12000,16384,1,1000,,LS,Running,100,500,110\n\
             p1,6000,12288,1,460,V100M16|V100M32|T4,BE,Failed,50,80,50\n\
             p2,88000,327680,8,1000,nan,Burstable,Succeeded,20,40,30\n\
             p3,1000,100,0,0,,LS,Running,0,100,0\n\
             p4,1000,100,1,1000,,Guaranteed,Pending,5,900,\n\
             p5,1000,100,2,1000,G2|g3,Guaranteed,Running,5,7,7\n\
             p6,1000,100,4,1000,A10|P100,guaranteed,Running,6,9,7\n"
        );
        let (jobs, skipped) = parse(&text, "p.csv").unwrap();
        assert_eq!(skipped, 3);
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["p6", "p2", "p1", "p0"]);
        let p1 = &jobs[2];
        assert_eq!((p1.submit_s, p1.duration_s, p1.gpus), (50.0, Some(30.0), 1));
        assert_eq!(p1.types.types, ["v100", "t4"]);
        assert!(p1.preemptible && p1.priority == 0);
        // 460 thousandths of a GPU: a slice of at least that share
        assert_eq!(p1.types.slice.as_ref().map(|s| s.milli), Some(460));
        assert!(jobs[3].types.slice.is_none(), "a whole GPU is not a slice");
        let p0 = &jobs[3];
        assert_eq!(
            (p0.submit_s, p0.duration_s, p0.priority),
            (100.0, Some(390.0), 1)
        );
        assert!(!p0.preemptible && p0.types.is_any());
        assert_eq!(jobs[1].gpus, 8);
        assert_eq!(jobs[1].priority, 0);
        assert!(jobs[1].types.is_any());
        assert_eq!(jobs[0].types.types, ["a10", "p100"]);
        assert_eq!(jobs[0].priority, 2);
    }

    #[test]
    fn model_names() {
        assert_eq!(model_type("V100M16").unwrap(), "v100");
        assert_eq!(model_type("V100M32").unwrap(), "v100");
        assert_eq!(model_type("G3").unwrap(), "g3");
        assert!(model_type("").is_err());
        assert!(model_type("A 100").is_err());
    }

    #[test]
    fn real_trace() {
        let (jobs, skipped) = read(Path::new(
            "../../data/traces/alibaba_openb_pods_default.csv",
        ))
        .unwrap();
        // 8,152 pods: 1,088 CPU-only and 861 GPU pods never scheduled.
        assert_eq!(skipped, 1949);
        assert_eq!(jobs.len(), 8152 - 1949);
        assert!(jobs.windows(2).all(|w| w[0].submit_s <= w[1].submit_s));
        assert!(
            jobs.iter()
                .all(|j| j.gpus >= 1 && j.duration_s.unwrap() > 0.0)
        );
        let first = jobs.iter().find(|j| j.id == "openb-pod-0000").unwrap();
        assert_eq!((first.submit_s, first.duration_s), (0.0, Some(12537496.0)));
        assert_eq!(first.priority, 1);
        assert_eq!(jobs.iter().filter(|j| j.gpus == 8).count(), 44);
    }

    #[test]
    fn example_factory_matches_node_list() {
        let text = std::fs::read_to_string("../../examples/factories/alibaba-openb.toml").unwrap();
        let f = Factory::parse(&text, "alibaba-openb.toml").unwrap();
        let nodes =
            std::fs::read_to_string("../../data/traces/alibaba_openb_gpu_nodes.csv").unwrap();
        let (mut n, mut gpus) = (0u32, 0u64);
        for l in nodes.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            n += 1;
            gpus += l.split(',').nth(3).unwrap().parse::<u64>().unwrap();
        }
        assert_eq!(f.nodes(), n);
        assert_eq!(f.accelerators(), gpus);
        for id in ["g2", "g3", "t4", "p100", "v100", "a10"] {
            let i = f.catalog.index(id).unwrap();
            assert!(f.pools.iter().any(|p| p.accel == i), "{id}");
        }
    }

    #[test]
    fn errors_name_line_and_field() {
        let ok = "p0,1,1,1,1000,,LS,Running,0,10,0";
        let cases: &[(&str, &str, &str)] = &[
            ("p1,1,1,1,1000,,LS,Running,0", "deletion_time", "9 cells"),
            ("p1,1,1,1,1000,,LS,Running,0,10,0,x", "cell 12", "12 cells"),
            (
                "p1,1,1,x,1000,,LS,Running,0,10,0",
                "num_gpu",
                "expected a number",
            ),
            (
                "p1,1,1,-1,1000,,LS,Running,0,10,0",
                "num_gpu",
                "whole number",
            ),
            (
                "p1,1,1,1.5,1000,,LS,Running,0,10,0",
                "num_gpu",
                "whole number",
            ),
            (
                "p1,1,1,20000000,1000,,LS,Running,0,10,0",
                "num_gpu",
                "whole number",
            ),
            (
                "p1,1,1,1,abc,,LS,Running,0,10,0",
                "gpu_milli",
                "expected a number",
            ),
            (
                "p1,1,1,1,1000,V 100,LS,Running,0,10,0",
                "gpu_spec",
                "bad GPU model",
            ),
            ("p1,1,1,1,1000,,Gold,Running,0,10,0", "qos", "unknown QoS"),
            (
                "p1,1,1,1,1000,,LS,Running,NaN,10,0",
                "creation_time",
                "finite",
            ),
            ("p1,1,1,1,1000,,LS,Running,,10,0", "creation_time", "empty"),
            ("p1,1,1,1,1000,,LS,Running,0,-10,0", "deletion_time", ">= 0"),
            (
                "p1,1,1,1,1000,,LS,Running,0,10,x",
                "scheduled_time",
                "expected a number",
            ),
            (",1,1,1,1000,,LS,Running,0,10,0", "name", "empty"),
            (ok, "name", "duplicate pod name `p0` (first on line 2)"),
        ];
        for (l, field, msg) in cases {
            let text = format!("{HEADER}{ok}\n{l}\n");
            let e = parse(&text, "p.csv").unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("p.csv:3: field `{field}`")) && e.contains(msg),
                "{l:?} -> {e}"
            );
        }
        let e = parse("name,num_gpu\n", "p.csv").unwrap_err().to_string();
        assert!(
            e.starts_with("p.csv:1: field `gpu_milli`") && e.contains("missing"),
            "{e}"
        );
        let e = parse("", "p.csv").unwrap_err().to_string();
        assert!(e.contains("empty file"), "{e}");
        assert_eq!(parse(HEADER, "p.csv").unwrap(), (vec![], 0));
        assert!(parse(&format!("{HEADER}\"p0,1"), "p.csv").is_err());
    }
}
