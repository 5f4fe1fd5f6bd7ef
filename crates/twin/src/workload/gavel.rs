//! Gavel job traces (Narayanan et al., OSDI'20): one tab-separated job per
//! line, in either of Gavel's two forms:
//!
//! * 7 fields (the `msr_seed0` traces): `job_type, command, steps_arg,
//!   needs_data_dir, total_steps, arrival_time_s, scale_factor`;
//! * 10 fields (Gavel's current `parse_trace`): `job_type, command,
//!   working_directory, num_steps_arg, needs_data_dir, total_steps,
//!   scale_factor, priority_weight, SLO, arrival_time`.
//!
//! Each line is read by its own field count, so a file may mix them. gigafab
//! maps: `id` = `g<n>` for the n-th job of the file (from 0, blank lines not
//! counted); `submit_s` = arrival time; `gpus` = `scale_factor`; `steps` =
//! `total_steps`; `job_type` exactly as in the trace; no `duration_s` (the
//! run time follows from a throughput matrix); preemptible (Gavel preempts
//! every round); `priority` = `priority_weight` rounded (0 in the 7-field
//! form). Gavel's SLO is a multiple of the job's run time, which is not known
//! before a throughput matrix is applied, so it is checked but not turned
//! into a deadline. `command`, the working directory and the steps argument
//! are ignored.

use super::WorkloadError;
use super::native::{parse_finite, parse_gpus, read_text, sort_by_submit};
use gigafab_core::spec::JobSpec;
use std::path::Path;

/// Field names of the 7-field form.
pub const FIELDS_7: [&str; 7] = [
    "job_type",
    "command",
    "steps_arg",
    "needs_data_dir",
    "total_steps",
    "arrival_time_s",
    "scale_factor",
];

/// Field names of the 10-field form.
pub const FIELDS_10: [&str; 10] = [
    "job_type",
    "command",
    "working_directory",
    "num_steps_arg",
    "needs_data_dir",
    "total_steps",
    "scale_factor",
    "priority_weight",
    "SLO",
    "arrival_time",
];

/// Where the used fields sit in one form.
#[derive(Clone, Copy)]
struct Fields {
    job_type: usize,
    needs_data_dir: usize,
    total_steps: usize,
    scale_factor: usize,
    arrival: usize,
    /// `priority_weight` and `SLO` (10-field form only).
    weight_slo: Option<(usize, usize)>,
}

const SEVEN: Fields = Fields {
    job_type: 0,
    needs_data_dir: 3,
    total_steps: 4,
    scale_factor: 6,
    arrival: 5,
    weight_slo: None,
};

const TEN: Fields = Fields {
    job_type: 0,
    needs_data_dir: 4,
    total_steps: 5,
    scale_factor: 6,
    arrival: 9,
    weight_slo: Some((7, 8)),
};

/// Reads a Gavel trace.
pub fn read(path: &Path) -> Result<Vec<JobSpec>, WorkloadError> {
    let text = read_text(path)?;
    parse(&text, &path.display().to_string())
}

/// Parses a Gavel trace; `file` names the source in errors. Jobs come back
/// sorted by arrival time (stable for ties).
pub fn parse(text: &str, file: &str) -> Result<Vec<JobSpec>, WorkloadError> {
    let mut jobs = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim_end_matches(['\r', '\n']);
        if l.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = l.split('\t').collect();
        let (names, f): (&[&str], Fields) = match cells.len() {
            7 => (&FIELDS_7, SEVEN),
            10 => (&FIELDS_10, TEN),
            n => {
                let field = if n < 7 { FIELDS_7[n] } else { "arrival_time" };
                return Err(WorkloadError::new(
                    file,
                    line,
                    field,
                    format!("expected 7 or 10 tab-separated fields, found {n}"),
                ));
            }
        };
        let err = |k: usize, msg: String| WorkloadError::new(file, line, names[k], msg);
        let num = |k: usize| parse_finite(cells[k]).map_err(|m| err(k, m));

        let job_type = cells[f.job_type].trim();
        if job_type.is_empty() {
            return Err(err(f.job_type, "job type must not be empty".into()));
        }
        let nd = cells[f.needs_data_dir].trim();
        if !matches!(nd, "0" | "1") {
            return Err(err(
                f.needs_data_dir,
                format!("expected 0 or 1, got `{nd}`"),
            ));
        }
        let steps = num(f.total_steps)?;
        if steps <= 0.0 {
            let s = cells[f.total_steps].trim();
            return Err(err(f.total_steps, format!("must be > 0, got `{s}`")));
        }
        let gpus = parse_gpus(cells[f.scale_factor]).map_err(|m| err(f.scale_factor, m))?;
        let submit_s = num(f.arrival)?;
        if submit_s < 0.0 {
            let s = cells[f.arrival].trim();
            return Err(err(f.arrival, format!("must be >= 0, got `{s}`")));
        }
        let mut priority = 0;
        if let Some((pw, slo)) = f.weight_slo {
            let w = num(pw)?.round();
            if !(i32::MIN as f64..=i32::MAX as f64).contains(&w) {
                let s = cells[pw].trim();
                return Err(err(pw, format!("priority weight `{s}` is out of range")));
            }
            priority = w as i32;
            num(slo)?;
        }
        jobs.push(JobSpec {
            id: format!("g{}", jobs.len()),
            submit_s,
            gpus,
            types: Default::default(),
            duration_s: None,
            steps: Some(steps),
            job_type: Some(job_type.to_string()),
            time_limit_s: None,
            tenant: None,
            category: None,
            priority,
            preemptible: true,
            checkpoint_s: None,
            deadline_s: None,
            dependency: None,
        });
    }
    sort_by_submit(&mut jobs);
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms() {
        let text = "ResNet-18 (batch size 32)\tcd %s && python3 train.py\t-step\t1\t1000\t5.5\t2\n\
                    \n\
                    LM (batch size 5)\tcmd\t/work\t--steps\t0\t200\t1\t2.6\t-1\t1.0\r\n\
                    A3C\tcmd\t-n\t0\t300\t1.0\t4\n";
        let jobs = parse(text, "t.trace").unwrap();
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["g1", "g2", "g0"]);
        let g0 = &jobs[2];
        assert_eq!(g0.job_type.as_deref(), Some("ResNet-18 (batch size 32)"));
        assert_eq!(
            (g0.submit_s, g0.gpus, g0.steps, g0.duration_s),
            (5.5, 2, Some(1000.0), None)
        );
        assert!(g0.preemptible && g0.priority == 0 && g0.deadline_s.is_none());
        let g1 = &jobs[0];
        assert_eq!(g1.job_type.as_deref(), Some("LM (batch size 5)"));
        assert_eq!(
            (g1.submit_s, g1.gpus, g1.steps, g1.priority),
            (1.0, 1, Some(200.0), 3)
        );
        assert_eq!((jobs[1].gpus, jobs[1].submit_s), (4, 1.0));
        assert!(parse("", "t.trace").unwrap().is_empty());
    }

    #[test]
    fn real_traces() {
        let dir = Path::new("../../data/gavel/msr_seed0");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "trace"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 15);
        let mut total = 0;
        for f in &files {
            let jobs = read(f).unwrap();
            assert!(jobs.iter().all(|j| j.gpus >= 1 && j.steps.unwrap() > 0.0));
            total += jobs.len();
        }
        assert_eq!(total, 15_264);
        let jobs = read(&dir.join("0e4a51.trace")).unwrap();
        let g0 = jobs.iter().find(|j| j.id == "g0").unwrap();
        assert_eq!(g0.job_type.as_deref(), Some("Transformer (batch size 128)"));
        assert_eq!((g0.steps, g0.submit_s, g0.gpus), (Some(95121.0), 0.0, 1));
    }

    #[test]
    fn errors_name_line_and_field() {
        let ok = "A3C\tcmd\t-n\t0\t300\t1.0\t4";
        let cases: &[(&str, &str, &str)] = &[
            ("A3C\tcmd\t-n\t0", "total_steps", "found 4"),
            ("A3C\tcmd\t-n\t0\t300\t1.0\t4\tx", "arrival_time", "found 8"),
            ("A3C", "command", "found 1"),
            ("\tcmd\t-n\t0\t300\t1.0\t4", "job_type", "empty"),
            ("A3C\tcmd\t-n\tyes\t300\t1.0\t4", "needs_data_dir", "0 or 1"),
            (
                "A3C\tcmd\t-n\t0\tmany\t1.0\t4",
                "total_steps",
                "expected a number",
            ),
            ("A3C\tcmd\t-n\t0\t0\t1.0\t4", "total_steps", "> 0"),
            ("A3C\tcmd\t-n\t0\t300\tNaN\t4", "arrival_time_s", "finite"),
            ("A3C\tcmd\t-n\t0\t300\t-1\t4", "arrival_time_s", ">= 0"),
            ("A3C\tcmd\t-n\t0\t300\t1\t0", "scale_factor", "whole number"),
            (
                "A3C\tcmd\t-n\t0\t300\t1\t1.5",
                "scale_factor",
                "whole number",
            ),
            (
                "A3C\tcmd\t-n\t0\t300\t1\t99999999",
                "scale_factor",
                "whole number",
            ),
            (
                "A3C\tcmd\t/w\t-n\t0\t300\t1\tx\t-1\t0",
                "priority_weight",
                "expected a number",
            ),
            (
                "A3C\tcmd\t/w\t-n\t0\t300\t1\t1e20\t-1\t0",
                "priority_weight",
                "out of range",
            ),
            ("A3C\tcmd\t/w\t-n\t0\t300\t1\t1\tinf\t0", "SLO", "finite"),
            (
                "A3C\tcmd\t/w\t-n\t0\t300\t1\t1\t-1\t-5",
                "arrival_time",
                ">= 0",
            ),
        ];
        for (l, field, msg) in cases {
            let e = parse(&format!("{ok}\n\n{l}\n"), "t.trace")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("t.trace:3: field `{field}`")) && e.contains(msg),
                "{l:?} -> {e}"
            );
        }
    }
}
