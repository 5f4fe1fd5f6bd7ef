//! Slurm accounting history: `sacct -P` output (with its header line)
//! replayed as a twin workload, so operators rerun their cluster's past
//! under other policies.
//!
//! ```sh
//! sacct -a -P -S 2026-01-01 -E now \
//!   -o JobID,JobName,Account,Submit,Start,End,State,AllocTRES,Timelimit > history.txt
//! gigafab workload import-sacct history.txt --out history.csv
//! ```
//!
//! | sacct field | job field |
//! |---|---|
//! | `JobID` | `id` = `slurm-<JobID>` (job steps such as `12.batch` are skipped) |
//! | `Submit` | `submit_s`, seconds after the earliest submission |
//! | `Start`, `End` | `duration_s` = End − Start |
//! | `AllocTRES` (or `ReqTRES`) | `gpus` from `gres/gpu=N`; a single `gres/gpu:<type>=N` also sets `types` |
//! | `Account` | `tenant` |
//! | `Timelimit` | `time_limit_s` (`[D-]HH:MM:SS`, `MM:SS`, minutes; none for `UNLIMITED`) |
//!
//! Real-world mess is skipped and counted, never fatal: steps, jobs that
//! never started or have not ended (PENDING, RUNNING, `Unknown` times), jobs
//! without GPUs, and unparsable fields. Only a missing header column is an
//! error (with the file and line).

use std::collections::BTreeMap;
use std::path::Path;

use super::WorkloadError;
use super::native::{read_text, sort_by_submit};
use gigafab_core::spec::{JobSpec, TypeFilter};

/// Why records were skipped, with counts.
pub type Skipped = BTreeMap<&'static str, usize>;

/// Reads a `sacct -P` file.
pub fn read(path: &Path) -> Result<(Vec<JobSpec>, Skipped), WorkloadError> {
    parse(&read_text(path)?, &path.display().to_string())
}

/// Resolution of sacct's Start and End times.
pub const SACCT_GRANULARITY_S: f64 = 1.0;

/// `[D-]HH:MM:SS`, `HH:MM:SS`, `MM:SS` or minutes → seconds.
pub fn parse_duration(s: &str) -> Option<f64> {
    let s = s.trim();
    let (days, rest) = match s.split_once('-') {
        Some((d, r)) => (d.parse::<f64>().ok()?, r),
        None => (0.0, s),
    };
    let parts: Vec<f64> = rest
        .split(':')
        .map(|p| p.parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let secs = match parts.as_slice() {
        [m] if days == 0.0 => m * 60.0,
        [h] => h * 3600.0,
        [m, s] if days == 0.0 => m * 60.0 + s,
        [h, m] => h * 3600.0 + m * 60.0,
        [h, m, s] => h * 3600.0 + m * 60.0 + s,
        _ => return None,
    };
    Some(days * 86_400.0 + secs)
}

/// GPUs and their type from a TRES list (`cpu=4,gres/gpu:h100=2,gres/gpu=2`).
pub fn parse_gpus(tres: &str) -> Option<(u32, Option<String>)> {
    let mut total = None;
    let mut typed: Vec<(String, u32)> = Vec::new();
    for kv in tres.split(',') {
        let Some((k, v)) = kv.split_once('=') else {
            continue;
        };
        let Ok(n) = v.trim().parse::<u32>() else {
            continue;
        };
        match k.trim() {
            "gres/gpu" => total = Some(n),
            k => {
                if let Some(t) = k.strip_prefix("gres/gpu:") {
                    typed.push((t.to_ascii_lowercase(), n));
                }
            }
        }
    }
    let total = total.or_else(|| (!typed.is_empty()).then(|| typed.iter().map(|t| t.1).sum()))?;
    let ty = (typed.len() == 1).then(|| typed[0].0.clone());
    Some((total, ty))
}

fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if matches!(s, "" | "Unknown" | "None") {
        return None;
    }
    gigafab_core::time::parse_utc(s)
        .ok()
        .map(|ms| ms as f64 / 1000.0)
}

/// Parses `sacct -P` text; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<(Vec<JobSpec>, Skipped), WorkloadError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((hl, header)) = lines.next() else {
        return Ok((Vec::new(), Skipped::new()));
    };
    let cols: Vec<&str> = header.split('|').map(str::trim).collect();
    let col = |name: &str| cols.iter().position(|c| c.eq_ignore_ascii_case(name));
    let need = |name: &'static str| {
        col(name).ok_or_else(|| {
            WorkloadError::new(
                file,
                hl + 1,
                name,
                format!("the header lacks `{name}` (run sacct -P with -o JobID,Account,Submit,Start,End,State,AllocTRES,Timelimit)"),
            )
        })
    };
    let (c_id, c_submit, c_start, c_end) = (
        need("JobID")?,
        need("Submit")?,
        need("Start")?,
        need("End")?,
    );
    let c_tres = col("AllocTRES").or_else(|| col("ReqTRES")).ok_or_else(|| {
        WorkloadError::new(
            file,
            hl + 1,
            "AllocTRES",
            "the header lacks `AllocTRES` (or `ReqTRES`)",
        )
    })?;
    let (c_account, c_limit, c_state) = (col("Account"), col("Timelimit"), col("State"));
    let mut skipped = Skipped::new();
    let mut jobs = Vec::new();
    for (_, l) in lines {
        let f: Vec<&str> = l.split('|').collect();
        let mut skip = |why: &'static str| *skipped.entry(why).or_insert(0) += 1;
        if f.len() < cols.len() {
            skip("short line");
            continue;
        }
        let id = f[c_id].trim();
        if id.contains('.') {
            skip("job step");
            continue;
        }
        let state = c_state.map(|c| f[c].trim()).unwrap_or("");
        if state.starts_with("PENDING") || state.starts_with("RUNNING") {
            skip("not ended (PENDING/RUNNING)");
            continue;
        }
        let (Some(submit), Some(start), Some(end)) = (
            parse_time(f[c_submit]),
            parse_time(f[c_start]),
            parse_time(f[c_end]),
        ) else {
            skip("never started or no end time");
            continue;
        };
        let Some((gpus, ty)) = parse_gpus(f[c_tres]).filter(|g| g.0 > 0) else {
            skip("no GPUs");
            continue;
        };
        if end < start || start < submit {
            skip("times out of order");
            continue;
        }
        // sacct's times are whole seconds: a job that ran under a second
        // shows Start == End; it ran, so it is kept, rounded up to 1 s
        let mut j = JobSpec::simple(
            format!("slurm-{id}"),
            submit,
            gpus,
            (end - start).max(SACCT_GRANULARITY_S),
        );
        if let Some(t) = ty {
            j.types = TypeFilter {
                types: vec![t],
                ..TypeFilter::default()
            };
        }
        j.tenant = c_account
            .map(|c| f[c].trim().to_string())
            .filter(|a| !a.is_empty());
        j.time_limit_s = c_limit.and_then(|c| parse_duration(f[c]));
        jobs.push(j);
    }
    let t0 = jobs
        .iter()
        .map(|j| j.submit_s)
        .fold(f64::INFINITY, f64::min);
    for j in &mut jobs {
        j.submit_s -= t0;
    }
    sort_by_submit(&mut jobs);
    Ok((jobs, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "JobID|JobName|Account|Submit|Start|End|State|AllocTRES|Timelimit
10|gigafab-1|alloc-1|2026-11-21T10:00:00|2026-11-21T10:00:05|2026-11-21T10:01:05|COMPLETED|billing=2,cpu=2,gres/gpu:h100=2,gres/gpu=2,mem=1G,node=1|01:00:00
10.batch|batch||2026-11-21T10:00:05|2026-11-21T10:00:05|2026-11-21T10:01:05|COMPLETED|cpu=2,gres/gpu:h100=2,gres/gpu=2,mem=1G,node=1|
11|train|alloc-2|2026-11-21T10:00:30|2026-11-21T10:02:00|2026-11-21T12:02:00|FAILED|cpu=8,gres/gpu=8,node=1|1-00:00:00
12|x|a|2026-11-21T10:01:00|Unknown|Unknown|PENDING|cpu=1|30:00
13|y|a|2026-11-21T10:01:00|None|2026-11-21T10:01:10|CANCELLED by 0|cpu=1,gres/gpu=1|UNLIMITED
14|cpu-only|a|2026-11-21T10:01:00|2026-11-21T10:01:00|2026-11-21T10:02:00|COMPLETED|cpu=4,mem=1G|UNLIMITED
15|broken
16|run|a|2026-11-21T10:03:00|2026-11-21T10:03:00|Unknown|RUNNING|gres/gpu=1|5
";

    #[test]
    fn reads_jobs_and_counts_the_mess() {
        let (jobs, skipped) = parse(TEXT, "h.txt").unwrap();
        assert_eq!(jobs.len(), 2);
        let a = &jobs[0];
        assert_eq!(
            (a.id.as_str(), a.submit_s, a.gpus, a.duration_s),
            ("slurm-10", 0.0, 2, Some(60.0))
        );
        assert_eq!(a.types.types, vec!["h100"]);
        assert_eq!(a.tenant.as_deref(), Some("alloc-1"));
        assert_eq!(a.time_limit_s, Some(3600.0));
        let b = &jobs[1];
        assert_eq!(
            (b.submit_s, b.gpus, b.duration_s, b.time_limit_s),
            (30.0, 8, Some(7200.0), Some(86_400.0))
        );
        assert!(b.types.types.is_empty());
        assert_eq!(skipped["job step"], 1);
        assert_eq!(skipped["not ended (PENDING/RUNNING)"], 2);
        assert_eq!(skipped["never started or no end time"], 1);
        assert_eq!(skipped["no GPUs"], 1);
        assert_eq!(skipped["short line"], 1);
    }

    #[test]
    fn sub_second_jobs_are_kept_and_the_import_replays() {
        // a job that ran under a second: Start == End in sacct's whole seconds
        let text = "JobID|Account|Submit|Start|End|State|AllocTRES|Timelimit
7|a|2026-11-21T10:00:00|2026-11-21T10:00:01|2026-11-21T10:00:01|COMPLETED|gres/gpu=1|10
8|a|2026-11-21T10:00:02|2026-11-21T10:00:03|2026-11-21T10:00:13|COMPLETED|gres/gpu=2|10
";
        let (jobs, skipped) = parse(text, "h.txt").unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].duration_s, Some(SACCT_GRANULARITY_S));
        assert_eq!(jobs[1].duration_s, Some(10.0));
        // import → native CSV → the reader `gigafab sim` uses
        let dir = std::env::temp_dir().join(format!("gigafab-sacct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("history.csv");
        crate::workload::native::write(&out, &jobs).unwrap();
        let back = crate::workload::native::read(&out).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].duration_s, Some(1.0));
    }

    #[test]
    fn a_missing_column_is_an_error_with_its_line() {
        let e = parse("JobID|Submit|Start\n1|a|b\n", "h.txt").unwrap_err();
        assert_eq!((e.line, e.field.as_str()), (1, "End"));
        assert_eq!(parse("", "h.txt").unwrap().0.len(), 0);
    }

    #[test]
    fn durations_and_tres() {
        assert_eq!(parse_duration("01:00:00"), Some(3600.0));
        assert_eq!(
            parse_duration("2-03:00:00"),
            Some(2.0 * 86_400.0 + 3.0 * 3600.0)
        );
        assert_eq!(parse_duration("30:00"), Some(1800.0));
        assert_eq!(parse_duration("45"), Some(2700.0));
        assert_eq!(parse_duration("UNLIMITED"), None);
        assert_eq!(
            parse_gpus("cpu=1,gres/gpu:a100=4"),
            Some((4, Some("a100".into())))
        );
        assert_eq!(
            parse_gpus("gres/gpu:a=1,gres/gpu:b=2,gres/gpu=3"),
            Some((3, None))
        );
        assert_eq!(parse_gpus("cpu=1,gres/gpu=x"), None);
    }
}
