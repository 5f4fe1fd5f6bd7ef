//! Standard Workload Format (SWF) of the Parallel Workloads Archive.
//!
//! Each job is one line of 18 white-space separated numbers; lines starting
//! with `;` are header comments. gigafab maps:
//!
//! | SWF field                   | job field                                  |
//! |-----------------------------|--------------------------------------------|
//! | 1 `job_number`              | `id` (the number as written)               |
//! | 2 `submit_time`             | `submit_s`                                 |
//! | 4 `run_time`                | `duration_s`                               |
//! | 5 `allocated_processors`    | `gpus` (field 8 when field 5 is -1)        |
//! | 8 `requested_processors`    | `gpus` when field 5 is -1                  |
//! | 9 `requested_time`          | `time_limit_s` when > 0                    |
//! | 12 `user_id`                | `tenant` = `u<id>` when >= 0               |
//!
//! Processors are taken to be accelerators one for one (there is no scaling
//! parameter): a job that used 64 processors becomes a 64-accelerator gang.
//! Jobs with a run time <= 0 or no processor count (cancelled before they
//! ran, or unknown, -1) are skipped and counted, not errors. The other
//! fields are checked to be numbers but not used.

use super::WorkloadError;
use super::native::{MAX_GPUS, parse_finite, read_text, sort_by_submit};
use gigafab_core::spec::JobSpec;
use std::collections::HashMap;
use std::path::Path;

/// SWF field names, in file order.
pub const FIELDS: [&str; 18] = [
    "job_number",
    "submit_time",
    "wait_time",
    "run_time",
    "allocated_processors",
    "average_cpu_time",
    "used_memory",
    "requested_processors",
    "requested_time",
    "requested_memory",
    "status",
    "user_id",
    "group_id",
    "executable_number",
    "queue_number",
    "partition_number",
    "preceding_job_number",
    "think_time",
];

const JOB_NUMBER: usize = 0;
const SUBMIT_TIME: usize = 1;
const RUN_TIME: usize = 3;
const ALLOCATED: usize = 4;
const REQUESTED_PROCS: usize = 7;
const REQUESTED_TIME: usize = 8;
const USER_ID: usize = 11;

/// Reads an SWF file; returns the jobs and the number of skipped ones.
pub fn read(path: &Path) -> Result<(Vec<JobSpec>, usize), WorkloadError> {
    let text = read_text(path)?;
    parse(&text, &path.display().to_string())
}

/// Parses SWF text; `file` names the source in errors. Returns the jobs,
/// sorted by submission time, and the number of jobs skipped because they
/// have no positive run time or processor count.
pub fn parse(text: &str, file: &str) -> Result<(Vec<JobSpec>, usize), WorkloadError> {
    let mut jobs = Vec::new();
    let mut skipped = 0;
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with(';') {
            continue;
        }
        let cells: Vec<&str> = l.split_whitespace().collect();
        if cells.len() != FIELDS.len() {
            let field = FIELDS.get(cells.len()).copied().unwrap_or("think_time");
            return Err(WorkloadError::new(
                file,
                line,
                field,
                format!("expected {} fields, found {}", FIELDS.len(), cells.len()),
            ));
        }
        let mut v = [0f64; 18];
        for (k, c) in cells.iter().enumerate() {
            v[k] = parse_finite(c).map_err(|m| WorkloadError::new(file, line, FIELDS[k], m))?;
        }
        let err = |k: usize, msg: String| WorkloadError::new(file, line, FIELDS[k], msg);
        let whole = |k: usize| -> Result<(), WorkloadError> {
            if v[k].fract() != 0.0 {
                return Err(err(
                    k,
                    format!("expected a whole number, got `{}`", cells[k]),
                ));
            }
            Ok(())
        };
        whole(JOB_NUMBER)?;
        let id = cells[JOB_NUMBER].to_string();
        if v[SUBMIT_TIME] < 0.0 {
            return Err(err(
                SUBMIT_TIME,
                format!("must be >= 0, got `{}`", cells[SUBMIT_TIME]),
            ));
        }
        whole(ALLOCATED)?;
        whole(REQUESTED_PROCS)?;
        whole(USER_ID)?;
        let (pk, procs) = if v[ALLOCATED] == -1.0 {
            (REQUESTED_PROCS, v[REQUESTED_PROCS])
        } else {
            (ALLOCATED, v[ALLOCATED])
        };
        if procs > MAX_GPUS as f64 {
            return Err(err(
                pk,
                format!(
                    "{} processors is more than the {MAX_GPUS} allowed",
                    cells[pk]
                ),
            ));
        }
        if let Some(prev) = first_line.insert(id.clone(), line) {
            return Err(err(
                JOB_NUMBER,
                format!("duplicate job number `{id}` (first on line {prev})"),
            ));
        }
        if v[RUN_TIME] <= 0.0 || procs < 1.0 {
            skipped += 1;
            continue;
        }
        let mut job = JobSpec::simple(id, v[SUBMIT_TIME], procs as u32, v[RUN_TIME]);
        if v[REQUESTED_TIME] > 0.0 {
            job.time_limit_s = Some(v[REQUESTED_TIME]);
        }
        if v[USER_ID] >= 0.0 {
            job.tenant = Some(format!("u{}", v[USER_ID] as u64));
        }
        jobs.push(job);
    }
    sort_by_submit(&mut jobs);
    Ok((jobs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "; Version: 2.2\n; Computer: test\n;\n\
        1 0 5 100 4 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1\n\
        2 10 0 50 -1 -1 -1 8 -1 -1 1 7 2 -1 -1 -1 -1 -1\n\
        \n\
        3 5 0 -1 4 -1 -1 4 100 -1 5 3 1 -1 -1 -1 -1 -1\n\
        4 7 0 30 -1 -1 -1 -1 100 -1 0 -1 1 -1 -1 -1 -1 -1\n\
        \t5   5 0 0.5 2 1.5 -1 2 0 -1 1 -1 1 -1 -1 -1 -1 -1\n";

    #[test]
    fn maps_fields_and_skips() {
        let (jobs, skipped) = parse(GOOD, "t.swf").unwrap();
        assert_eq!(skipped, 2);
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["1", "5", "2"]);
        let j = &jobs[0];
        assert_eq!((j.submit_s, j.gpus, j.duration_s), (0.0, 4, Some(100.0)));
        assert_eq!(j.time_limit_s, Some(200.0));
        assert_eq!(j.tenant.as_deref(), Some("u3"));
        let j = &jobs[2];
        assert_eq!(j.gpus, 8, "requested processors when allocated is -1");
        assert_eq!(j.time_limit_s, None);
        assert_eq!(j.tenant.as_deref(), Some("u7"));
        let j = &jobs[1];
        assert_eq!(
            (j.duration_s, j.tenant.as_ref(), j.time_limit_s),
            (Some(0.5), None, None)
        );
    }

    #[test]
    fn empty_and_comment_only() {
        assert_eq!(parse("", "t.swf").unwrap(), (vec![], 0));
        assert_eq!(parse("; only\n;header\n", "t.swf").unwrap(), (vec![], 0));
    }

    #[test]
    fn errors_name_line_and_field() {
        let ok = "1 0 5 100 4 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1";
        let cases: &[(&str, &str, &str)] = &[
            (
                "1 0 5 100 4 -1 -1",
                "requested_processors",
                "expected 18 fields, found 7",
            ),
            (
                "1 0 5 100 4 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1 9",
                "think_time",
                "found 19",
            ),
            (
                "1 x 5 100 4 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "submit_time",
                "expected a number",
            ),
            (
                "1 0 5 NaN 4 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "run_time",
                "finite",
            ),
            (
                "1 -3 5 10 4 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "submit_time",
                ">= 0",
            ),
            (
                "1 0 5 10 4.5 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "allocated_processors",
                "whole",
            ),
            (
                "1 0 5 10 99999999999 -1 -1 4 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "allocated_processors",
                "more than",
            ),
            (
                "1 0 5 10 -1 -1 -1 1e300 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "requested_processors",
                "more than",
            ),
            (
                "1.5 0 5 10 1 -1 -1 1 200 -1 1 3 1 -1 -1 -1 -1 -1",
                "job_number",
                "whole",
            ),
            (
                "1 0 5 10 1 -1 -1 1 inf -1 1 3 1 -1 -1 -1 -1 -1",
                "requested_time",
                "finite",
            ),
            (
                ok,
                "job_number",
                "duplicate job number `1` (first on line 2)",
            ),
        ];
        for (l, field, msg) in cases {
            // The bad line is line 3 (after a comment, or after a good line).
            let text = if *l == ok {
                format!("; h\n{ok}\n{l}\n")
            } else {
                format!("; h\n;\n{l}\n")
            };
            let e = parse(&text, "t.swf").unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("t.swf:3: field `{field}`")) && e.contains(msg),
                "{l:?} -> {e}"
            );
        }
    }
}
