//! gigafab's native CSV workload format (see `docs/workload-formats.md`).
//!
//! ```text
//! # comment lines and blank lines are skipped
//! id,submit_s,gpus,duration_s,types,tenant,category,priority,preemptible
//! train-1,0,8,3600,h100|mi300x,acme,startup,1,true
//! eval-2,30.5,1,600,,uni-x,academia,,
//! ```
//!
//! The header must name at least `id`, `submit_s`, `gpus` and `duration_s`
//! (in any order); the optional columns are `types`, `tenant`, `category`,
//! `priority`, `preemptible`, `checkpoint_s`, `deadline_s`, `job_type`,
//! `steps`, `time_limit_s`, `inputs` and `dependency` (Slurm's form with
//! the workload's ids: `afterok:train-1:train-2,afterany:eval-3`; each job
//! named must come earlier in the file and not be submitted later).
//! An empty cell means "absent" (or the default).
//! Cells are trimmed of surrounding white space. [`to_string`] writes a file
//! that [`parse`] reads back to the same jobs.

use super::WorkloadError;
use gigafab_core::spec::{Category, JobSpec, TypeFilter};
use std::collections::HashMap;
use std::path::Path;

/// Most accelerators one job may ask for (in every format).
pub const MAX_GPUS: u32 = 10_000_000;

/// Columns every native file must have.
pub const REQUIRED_COLUMNS: [&str; 4] = ["id", "submit_s", "gpus", "duration_s"];

/// All columns of the native format, in the order [`to_string`] writes them.
pub const COLUMNS: [&str; 16] = [
    "id",
    "submit_s",
    "gpus",
    "duration_s",
    "types",
    "tenant",
    "category",
    "priority",
    "preemptible",
    "checkpoint_s",
    "deadline_s",
    "job_type",
    "steps",
    "time_limit_s",
    "inputs",
    "dependency",
];

const ID: usize = 0;
const SUBMIT: usize = 1;
const GPUS: usize = 2;
const DURATION: usize = 3;
const TYPES: usize = 4;
const TENANT: usize = 5;
const CATEGORY: usize = 6;
const PRIORITY: usize = 7;
const PREEMPTIBLE: usize = 8;
const CHECKPOINT: usize = 9;
const DEADLINE: usize = 10;
const JOB_TYPE: usize = 11;
const STEPS: usize = 12;
const TIME_LIMIT: usize = 13;
/// Catalog inputs with their residency, `NAME@SITE|SITE;NAME`: read into
/// the job's site filter (the sites every input allows), written back as
/// `types` (`site:...`).
const INPUTS: usize = 14;
/// What it waits for ([`JobSpec::dependency`]).
const DEPENDENCY: usize = 15;

/// Reads a native CSV workload file.
pub fn read(path: &Path) -> Result<Vec<JobSpec>, WorkloadError> {
    let file = path.display().to_string();
    let text = read_text(path)?;
    parse(&text, &file)
}

/// Parses native CSV text; `file` names the source in errors. Jobs come back
/// sorted by submission time (stable for ties).
pub fn parse(text: &str, file: &str) -> Result<Vec<JobSpec>, WorkloadError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut columns: Option<Vec<usize>> = None;
    let mut jobs: Vec<JobSpec> = Vec::new();
    // each id: its line and its submission time
    let mut first_line: HashMap<String, (usize, f64)> = HashMap::new();
    let mut record = csv::StringRecord::new();
    while let Some(line) = super::next_row(&mut rdr, &mut record, file)? {
        let Some(cols) = &columns else {
            columns = Some(parse_header(&record, file, line)?);
            continue;
        };
        if record.len() != cols.len() {
            let missing = cols.get(record.len()).map(|&c| COLUMNS[c]);
            return Err(super::width_error(
                file,
                line,
                record.len(),
                cols.len(),
                missing,
            ));
        }
        let mut cells: [Option<&str>; COLUMNS.len()] = [None; COLUMNS.len()];
        for (i, &c) in cols.iter().enumerate() {
            let v = record[i].trim();
            if !v.is_empty() {
                cells[c] = Some(v);
            }
        }
        let job = parse_row(&cells, file, line)?;
        // what it waits for: jobs before it, submitted no later
        for (_, d) in job
            .dependency
            .as_deref()
            .map(gigafab_core::spec::parse_dependency)
            .transpose()
            .ok()
            .flatten()
            .unwrap_or_default()
        {
            let earlier = first_line
                .get(&d)
                .is_some_and(|&(_, submit_s)| submit_s <= job.submit_s);
            if !earlier {
                return Err(WorkloadError::new(
                    file,
                    line,
                    "dependency",
                    format!(
                        "`{d}` is not a job on an earlier line submitted no later than `{}`",
                        job.id
                    ),
                ));
            }
        }
        if let Some((prev, _)) = first_line.get(&job.id) {
            return Err(WorkloadError::new(
                file,
                line,
                "id",
                format!("duplicate job id `{}` (first on line {prev})", job.id),
            ));
        }
        first_line.insert(job.id.clone(), (line, job.submit_s));
        jobs.push(job);
    }
    if columns.is_none() {
        return Err(WorkloadError::new(
            file,
            1,
            "",
            format!(
                "empty file: expected a header line naming at least {}",
                REQUIRED_COLUMNS.join(",")
            ),
        ));
    }
    sort_by_submit(&mut jobs);
    Ok(jobs)
}

/// Writes jobs as a native CSV file.
pub fn write(path: &Path, jobs: &[JobSpec]) -> std::io::Result<()> {
    std::fs::write(path, to_string(jobs))
}

/// Renders jobs in the native CSV format. The required columns are always
/// written; an optional column only when some job has a value for it.
/// Numbers use Rust's shortest round-trip form, so `parse(&to_string(jobs))`
/// gives back `jobs` (sorted by submission time).
pub fn to_string(jobs: &[JobSpec]) -> String {
    let present: Vec<usize> = (0..COLUMNS.len())
        .filter(|&c| c < REQUIRED_COLUMNS.len() || jobs.iter().any(|j| cell(j, c).is_some()))
        .collect();
    let mut w = csv::WriterBuilder::new()
        .comment(Some(b'#'))
        .from_writer(Vec::new());
    let header: Vec<&str> = present.iter().map(|&c| COLUMNS[c]).collect();
    // Writing to a Vec cannot fail.
    let _ = w.write_record(&header);
    for j in jobs {
        let row: Vec<String> = present
            .iter()
            .map(|&c| cell(j, c).unwrap_or_default())
            .collect();
        let _ = w.write_record(&row);
    }
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// The cell of column `c` for a job; `None` when it is absent or default.
fn cell(j: &JobSpec, c: usize) -> Option<String> {
    match c {
        ID => Some(j.id.clone()),
        SUBMIT => Some(j.submit_s.to_string()),
        GPUS => Some(j.gpus.to_string()),
        DURATION => j.duration_s.map(|v| v.to_string()),
        TYPES => (!j.types.is_any()).then(|| j.types.to_column()),
        TENANT => j.tenant.clone(),
        CATEGORY => j.category.map(|c| c.as_str().to_string()),
        PRIORITY => (j.priority != 0).then(|| j.priority.to_string()),
        PREEMPTIBLE => j.preemptible.then(|| "true".to_string()),
        CHECKPOINT => j.checkpoint_s.map(|v| v.to_string()),
        DEADLINE => j.deadline_s.map(|v| v.to_string()),
        JOB_TYPE => j.job_type.clone(),
        STEPS => j.steps.map(|v| v.to_string()),
        TIME_LIMIT => j.time_limit_s.map(|v| v.to_string()),
        DEPENDENCY => j.dependency.clone(),
        _ => None,
    }
}

fn parse_header(
    record: &csv::StringRecord,
    file: &str,
    line: usize,
) -> Result<Vec<usize>, WorkloadError> {
    let mut cols = Vec::with_capacity(record.len());
    for name in record.iter() {
        let name = name.trim();
        let lower = name.to_ascii_lowercase();
        let Some(c) = COLUMNS.iter().position(|&k| k == lower) else {
            return Err(WorkloadError::new(
                file,
                line,
                name,
                format!("unknown column `{name}` (known: {})", COLUMNS.join(", ")),
            ));
        };
        if cols.contains(&c) {
            return Err(WorkloadError::new(
                file,
                line,
                name,
                format!("column `{name}` appears twice"),
            ));
        }
        cols.push(c);
    }
    for (c, name) in REQUIRED_COLUMNS.iter().enumerate() {
        if !cols.contains(&c) {
            return Err(WorkloadError::new(
                file,
                line,
                name,
                format!(
                    "missing required column `{name}` (the header needs {})",
                    REQUIRED_COLUMNS.join(",")
                ),
            ));
        }
    }
    Ok(cols)
}

fn parse_row(
    cells: &[Option<&str>; COLUMNS.len()],
    file: &str,
    line: usize,
) -> Result<JobSpec, WorkloadError> {
    let err = |c: usize, msg: String| WorkloadError::new(file, line, COLUMNS[c], msg);
    let opt_f64 = |c: usize,
                   check: fn(&str, f64) -> Result<(), String>|
     -> Result<Option<f64>, WorkloadError> {
        match cells[c] {
            None => Ok(None),
            Some(s) => {
                let v = parse_finite(s).map_err(|m| err(c, m))?;
                check(s, v).map_err(|m| err(c, m))?;
                Ok(Some(v))
            }
        }
    };
    let id = cells[ID].ok_or_else(|| err(ID, "job id must not be empty".into()))?;
    let submit_s = opt_f64(SUBMIT, non_negative)?
        .ok_or_else(|| err(SUBMIT, "submission time must not be empty".into()))?;
    let gpus = match cells[GPUS] {
        None => return Err(err(GPUS, "accelerator count must not be empty".into())),
        Some(s) => parse_gpus(s).map_err(|m| err(GPUS, m))?,
    };
    let duration_s = opt_f64(DURATION, positive)?;
    let mut types = match cells[TYPES] {
        None => TypeFilter::any(),
        Some(s) => TypeFilter::parse(s).map_err(|m| err(TYPES, m))?,
    };
    if let Some(s) = cells[INPUTS] {
        types.sites = input_sites(s, &types.sites).map_err(|m| err(INPUTS, m))?;
    }
    let category = match cells[CATEGORY] {
        None => None,
        Some(s) => Some(Category::parse(s).ok_or_else(|| {
            err(
                CATEGORY,
                format!("unknown category `{s}` (startup, sme, industry, academia or public)"),
            )
        })?),
    };
    let priority = match cells[PRIORITY] {
        None => 0,
        Some(s) => s
            .parse::<i32>()
            .map_err(|_| err(PRIORITY, format!("expected an integer priority, got `{s}`")))?,
    };
    let preemptible = match cells[PREEMPTIBLE] {
        None => false,
        Some(s) => parse_bool(s).ok_or_else(|| {
            err(
                PREEMPTIBLE,
                format!("expected true/false, 1/0 or yes/no, got `{s}`"),
            )
        })?,
    };
    let checkpoint_s = opt_f64(CHECKPOINT, positive)?;
    let deadline_s = opt_f64(DEADLINE, non_negative)?;
    let steps = opt_f64(STEPS, positive)?;
    let time_limit_s = opt_f64(TIME_LIMIT, positive)?;
    let job_type = cells[JOB_TYPE].map(str::to_string);
    if steps.is_some() && job_type.is_none() {
        return Err(err(
            JOB_TYPE,
            "`steps` needs a `job_type` (to look up its throughput)".into(),
        ));
    }
    if duration_s.is_none() && steps.is_none() {
        return Err(err(
            DURATION,
            "duration must not be empty unless `steps` and `job_type` are given".into(),
        ));
    }
    Ok(JobSpec {
        id: id.to_string(),
        submit_s,
        gpus,
        types,
        duration_s,
        steps,
        job_type,
        time_limit_s,
        tenant: cells[TENANT].map(str::to_string),
        category,
        priority,
        preemptible,
        checkpoint_s,
        deadline_s,
        dependency: match cells[DEPENDENCY] {
            None => None,
            Some(d) => {
                gigafab_core::spec::parse_dependency(d).map_err(|m| err(DEPENDENCY, m))?;
                Some(d.to_string())
            }
        },
    })
}

/// The sites a job may run at given its inputs (`NAME@SITE|SITE`, `;`
/// between inputs; an input without `@` may be processed anywhere) and the
/// sites its types allow already (empty: any): those every one allows.
fn input_sites(cell: &str, already: &[String]) -> Result<Vec<String>, String> {
    let mut allowed: Option<Vec<String>> = (!already.is_empty()).then(|| already.to_vec());
    for input in cell.split(';').map(str::trim) {
        let (name, sites) = match input.split_once('@') {
            Some((n, s)) => (n.trim(), Some(s)),
            None => (input, None),
        };
        if name.is_empty() {
            return Err(format!(
                "an input without a name in `{cell}` (NAME@SITE|SITE;...)"
            ));
        }
        let Some(sites) = sites else { continue };
        let sites: Vec<String> = sites
            .split('|')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if sites.is_empty() {
            return Err(format!("input `{name}`: no site after `@`"));
        }
        allowed = Some(match allowed {
            None => sites,
            Some(a) => a.into_iter().filter(|s| sites.contains(s)).collect(),
        });
        if allowed.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!(
                "input `{name}`: no site is allowed by every input (and the job's types)"
            ));
        }
    }
    Ok(allowed.unwrap_or_default())
}

/// Reads a whole file; the error names the file.
pub(crate) fn read_text(path: &Path) -> Result<String, WorkloadError> {
    crate::files::read_to_string(path).map_err(|e| {
        WorkloadError::new(
            &path.display().to_string(),
            0,
            "",
            format!("cannot read: {e}"),
        )
    })
}

/// Stable sort by submission time.
pub(crate) fn sort_by_submit(jobs: &mut [JobSpec]) {
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s));
}

/// Parses a finite number (rejects `NaN` and infinities).
pub(crate) fn parse_finite(s: &str) -> Result<f64, String> {
    let s = s.trim();
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("expected a finite number, got `{s}`")),
        Err(_) => Err(format!("expected a number, got `{s}`")),
    }
}

/// Check: the value is `>= 0`.
pub(crate) fn non_negative(s: &str, v: f64) -> Result<(), String> {
    if v >= 0.0 {
        Ok(())
    } else {
        Err(format!("must be >= 0, got `{s}`"))
    }
}

/// Check: the value is `> 0`.
pub(crate) fn positive(s: &str, v: f64) -> Result<(), String> {
    if v > 0.0 {
        Ok(())
    } else {
        Err(format!("must be > 0, got `{s}`"))
    }
}

/// Parses an accelerator count: a whole number in `1..=MAX_GPUS`.
pub(crate) fn parse_gpus(s: &str) -> Result<u32, String> {
    let s = s.trim();
    let bad = || format!("expected a whole number of accelerators from 1 to {MAX_GPUS}, got `{s}`");
    let v: f64 = match s.parse::<u64>() {
        Ok(n) => n as f64,
        Err(_) => parse_finite(s).map_err(|_| bad())?,
    };
    if v.fract() != 0.0 || !(1.0..=MAX_GPUS as f64).contains(&v) {
        return Err(bad());
    }
    Ok(v as u32)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gigafab_core::catalog::Vendor;

    fn err(text: &str) -> String {
        let e = parse(text, "w.csv").unwrap_err();
        e.to_string()
    }

    #[test]
    fn inputs_restrict_the_sites() {
        let jobs = parse(
            "id,submit_s,gpus,duration_s,types,inputs\n\
             a,0,1,10,,cells@paris|lyon;llama@lyon|berlin\n\
             b,0,1,10,,weights\n\
             c,0,1,10,site:paris|lyon,cells@lyon|berlin\n",
            "w.csv",
        )
        .unwrap();
        assert_eq!(jobs[0].types.sites, ["lyon"]);
        assert!(jobs[1].types.sites.is_empty(), "an input without residency");
        assert_eq!(jobs[2].types.sites, ["lyon"]);
        // written back as the site filter, read back the same
        let again = parse(&to_string(&jobs), "w.csv").unwrap();
        assert_eq!(again, jobs);
        let e = err("id,submit_s,gpus,duration_s,inputs\na,0,1,10,cells@paris;llama@berlin\n");
        assert!(
            e.starts_with("w.csv:2:")
                && e.contains("inputs")
                && e.contains("no site is allowed by every input"),
            "{e}"
        );
        assert!(
            err("id,submit_s,gpus,duration_s,inputs\na,0,1,10,cells@\n").contains("no site after")
        );
        assert!(
            err("id,submit_s,gpus,duration_s,inputs\na,0,1,10,@paris\n").contains("without a name")
        );
    }

    fn full_job() -> JobSpec {
        JobSpec {
            id: "a,\"quoted\" id".into(),
            submit_s: 0.1 + 0.2,
            gpus: 8,
            types: TypeFilter::parse("h100|mi300x;vendor:amd;mem>=80.5").unwrap(),
            duration_s: Some(1.0 / 3.0),
            steps: Some(12345.678),
            job_type: Some("ResNet-18 (batch size 32)".into()),
            time_limit_s: Some(7200.0),
            tenant: Some("acme".into()),
            category: Some(Category::Sme),
            priority: -3,
            preemptible: true,
            checkpoint_s: Some(600.0),
            deadline_s: Some(1e9),
            dependency: None,
        }
    }

    #[test]
    fn dependencies_name_earlier_jobs() {
        let text = "id,submit_s,gpus,duration_s,dependency
a,0,1,10,
b,0,1,10,afterok:a
c,5,1,10,\"afterany:a:b,afternotok:b\"
";
        let jobs = parse(text, "w.csv").unwrap();
        assert_eq!(
            jobs[2].dependency.as_deref(),
            Some("afterany:a:b,afternotok:b")
        );
        assert_eq!(parse(&to_string(&jobs), "w.csv").unwrap(), jobs);
        for (bad, needle) in [
            (
                "id,submit_s,gpus,duration_s,dependency
a,0,1,10,afterok:b
b,0,1,10,
",
                "w.csv:2:",
            ),
            (
                "id,submit_s,gpus,duration_s,dependency
b,9,1,10,
a,0,1,10,afterok:b
",
                "submitted no later",
            ),
            (
                "id,submit_s,gpus,duration_s,dependency
a,0,1,10,after:x
",
                "not one of afterok",
            ),
        ] {
            let e = parse(bad, "w.csv").unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("dependency"), "{bad}: {e}");
        }
    }

    #[test]
    fn parses_minimal_and_sorts() {
        let text = "# a workload\n\nid,submit_s,gpus,duration_s\nb,10,2,100\n# mid\n   \na,5,1,50.5\nc,5,4,1\n";
        let jobs = parse(text, "w.csv").unwrap();
        let ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert_eq!(jobs[0], JobSpec::simple("a", 5.0, 1, 50.5));
    }

    #[test]
    fn parses_all_columns_any_order() {
        let text = "Tenant, types ,id,category,priority,preemptible,checkpoint_s,deadline_s,job_type,steps,time_limit_s,gpus,submit_s,duration_s\n\
                    acme,vendor:amd;mem>=80,j1,academia,2,yes,300,5000,LM (batch size 10),1000,7200,4,1,\n\
                    ,,j2,,,no,,,,,,1,0,60\n";
        let jobs = parse(text, "w.csv").unwrap();
        assert_eq!(jobs[0].id, "j2");
        assert!(!jobs[0].preemptible);
        let j = &jobs[1];
        assert_eq!(j.tenant.as_deref(), Some("acme"));
        assert_eq!(j.types.vendor, Some(Vendor::Amd));
        assert_eq!(j.types.min_memory_gb, Some(80.0));
        assert_eq!(j.category, Some(Category::Academia));
        assert_eq!(j.priority, 2);
        assert!(j.preemptible);
        assert_eq!(j.checkpoint_s, Some(300.0));
        assert_eq!(j.deadline_s, Some(5000.0));
        assert_eq!(j.job_type.as_deref(), Some("LM (batch size 10)"));
        assert_eq!(j.steps, Some(1000.0));
        assert_eq!(j.time_limit_s, Some(7200.0));
        assert_eq!(j.duration_s, None);
        assert_eq!(j.gpus, 4);
    }

    #[test]
    fn round_trips_exactly() {
        let mut jobs = vec![
            JobSpec::simple("#hash", 0.0, 1, 1e-7),
            full_job(),
            JobSpec::simple("z", 1e12 / 7.0, MAX_GPUS, 123456.789),
        ];
        jobs[0].tenant = Some("t with space".into());
        let text = to_string(&jobs);
        let back = parse(&text, "rt.csv").unwrap();
        assert_eq!(back, jobs);
        // Only the columns in use are written.
        let plain = to_string(&[JobSpec::simple("a", 1.0, 2, 3.0)]);
        assert_eq!(plain, "id,submit_s,gpus,duration_s\na,1,2,3\n");
        assert_eq!(to_string(&[]), "id,submit_s,gpus,duration_s\n");
        assert!(parse(&to_string(&[]), "e.csv").unwrap().is_empty());
    }

    #[test]
    fn write_and_read_file() {
        let dir = std::env::temp_dir().join(format!("gigafab-native-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.csv");
        let jobs = vec![full_job(), JobSpec::simple("b", 3.0, 2, 4.0)];
        write(&p, &jobs).unwrap();
        assert_eq!(read(&p).unwrap(), jobs);
        std::fs::remove_dir_all(&dir).unwrap();
        let e = read(&dir.join("missing.csv")).unwrap_err().to_string();
        assert!(
            e.contains("missing.csv") && e.contains("cannot read"),
            "{e}"
        );
    }

    #[test]
    fn header_errors() {
        let e = err("");
        assert!(e.starts_with("w.csv:1") && e.contains("empty file"), "{e}");
        let e = err("# only a comment\n\n");
        assert!(e.contains("empty file"), "{e}");
        let e = err("id,submit_s,gpus,duration_s,colour\n");
        assert!(
            e.starts_with("w.csv:1: field `colour`") && e.contains("unknown column"),
            "{e}"
        );
        let e = err("id,submit_s,gpus\na,1,1\n");
        assert!(
            e.starts_with("w.csv:1: field `duration_s`") && e.contains("missing"),
            "{e}"
        );
        let e = err("id,submit_s,gpus,duration_s,gpus\n");
        assert!(e.contains("field `gpus`") && e.contains("twice"), "{e}");
        // Header only: no jobs, no error.
        assert!(
            parse("id,submit_s,gpus,duration_s\n", "w.csv")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn row_errors_name_line_and_field() {
        let h = "id,submit_s,gpus,duration_s,tenant,category,priority,preemptible,types,steps,job_type\n";
        let cases: &[(&str, &str, &str)] = &[
            ("a,1,1,1,,,,,,,\nb,2,1\n", "duration_s", "3 cells"),
            ("a,1,1,1,,,,,,,,extra\n", "cell 12", "12 cells"),
            ("a,x,1,1,,,,,,,\n", "submit_s", "expected a number"),
            ("a,NaN,1,1,,,,,,,\n", "submit_s", "finite"),
            ("a,inf,1,1,,,,,,,\n", "submit_s", "finite"),
            ("a,-1,1,1,,,,,,,\n", "submit_s", ">= 0"),
            ("a,,1,1,,,,,,,\n", "submit_s", "empty"),
            (",1,1,1,,,,,,,\n", "id", "empty"),
            ("a,1,0,1,,,,,,,\n", "gpus", "whole number"),
            ("a,1,-2,1,,,,,,,\n", "gpus", "whole number"),
            ("a,1,1.5,1,,,,,,,\n", "gpus", "whole number"),
            ("a,1,10000001,1,,,,,,,\n", "gpus", "whole number"),
            (
                "a,1,99999999999999999999999,1,,,,,,,\n",
                "gpus",
                "whole number",
            ),
            ("a,1,lots,1,,,,,,,\n", "gpus", "whole number"),
            ("a,1,1,0,,,,,,,\n", "duration_s", "> 0"),
            ("a,1,1,-5,,,,,,,\n", "duration_s", "> 0"),
            ("a,1,1,,,,,,,,\n", "duration_s", "unless `steps`"),
            ("a,1,1,,,,,,,100,\n", "job_type", "needs a `job_type`"),
            ("a,1,1,1,,worker,,,,,\n", "category", "unknown category"),
            ("a,1,1,1,,,high,,,,\n", "priority", "integer"),
            ("a,1,1,1,,,99999999999,,,,\n", "priority", "integer"),
            ("a,1,1,1,,,,maybe,,,\n", "preemptible", "true/false"),
            ("a,1,1,1,,,,,vendor:intelx,,\n", "types", "unknown vendor"),
            ("a,1,1,1,,,,,h100||a,,\n", "types", "bad accelerator"),
            ("a,1,1,1,,,,,,-3,x\n", "steps", "> 0"),
        ];
        for (body, field, msg) in cases {
            let line = if body.contains("\nb,") { 3 } else { 2 };
            let e = err(&format!("{h}{body}"));
            assert!(
                e.starts_with(&format!("w.csv:{line}: field `{field}`")) && e.contains(msg),
                "{body:?} -> {e}"
            );
        }
    }

    #[test]
    fn duplicate_ids_name_both_lines() {
        let e = err("id,submit_s,gpus,duration_s\na,1,1,1\n# c\nb,1,1,1\na,2,2,2\n");
        assert!(
            e.starts_with("w.csv:5: field `id`") && e.contains("first on line 2"),
            "{e}"
        );
    }

    #[test]
    fn malformed_csv_quotes_do_not_panic() {
        let r = parse("id,submit_s,gpus,duration_s\n\"a,1,1,1\n", "w.csv");
        assert!(r.is_err());
        let r = parse("id,submit_s,gpus,duration_s\na,1,1,1", "w.csv");
        assert_eq!(r.unwrap().len(), 1);
        let r = parse("id,submit_s,gpus,duration_s\r\na,1,1,1\r\n", "w.csv");
        assert_eq!(r.unwrap().len(), 1);
    }
}
