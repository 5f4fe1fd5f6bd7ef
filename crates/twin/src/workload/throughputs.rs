//! Throughput matrices: steps per second of job types on accelerator types.
//!
//! Two forms:
//!
//! * Gavel's `simulation_throughputs.json` (a `.json` file): top-level keys
//!   are accelerator types (`k80`, `p100`, `v100`); keys ending in
//!   `_unconsolidated` (multi-GPU jobs spread across servers) are ignored.
//!   Under each type, keys are Python tuple strings
//!   `"('ResNet-18 (batch size 16)', 4)"` = (job type, GPUs), and each holds
//!   a `"null"` entry, the job's isolated throughput, which is what gigafab
//!   uses; the other entries (throughputs when co-located with another job)
//!   are ignored.
//! * CSV (any other extension): header `job_type,accelerator,gpus,steps_per_s`
//!   (any order), one measurement per line; `#` lines and blank lines are
//!   skipped.
//!
//! A throughput of 0 means the job cannot run on that type (e.g. it does not
//! fit in memory).

use super::WorkloadError;
use super::native::{MAX_GPUS, non_negative, parse_finite, parse_gpus, read_text};
use gigafab_core::spec::Throughputs;
use std::collections::HashMap;
use std::path::Path;

/// Columns of the CSV form.
pub const CSV_COLUMNS: [&str; 4] = ["job_type", "accelerator", "gpus", "steps_per_s"];

/// Loads a throughput matrix: Gavel JSON when the extension is `.json`,
/// else CSV.
pub fn load(path: &Path) -> Result<Throughputs, WorkloadError> {
    let text = read_text(path)?;
    let file = path.display().to_string();
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        || text.trim_start().starts_with('{');
    if is_json {
        parse_json(&text, &file)
    } else {
        parse_csv(&text, &file)
    }
}

/// Parses Gavel's `simulation_throughputs.json` format.
pub fn parse_json(text: &str, file: &str) -> Result<Throughputs, WorkloadError> {
    let root: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        WorkloadError::new(
            file,
            e.line(),
            "",
            format!("invalid JSON (column {}): {e}", e.column()),
        )
    })?;
    let top = root.as_object().ok_or_else(|| {
        WorkloadError::new(file, 1, "", "expected an object keyed by accelerator type")
    })?;
    let mut t = Throughputs::new();
    for (accel, jobs) in top {
        if accel.ends_with("_unconsolidated") {
            continue;
        }
        check_accel(accel).map_err(|m| WorkloadError::new(file, 0, accel, m))?;
        let jobs = jobs.as_object().ok_or_else(|| {
            WorkloadError::new(
                file,
                0,
                accel,
                "expected an object keyed by (job type, GPUs)",
            )
        })?;
        for (key, entry) in jobs {
            let field = format!("{accel}/{key}");
            let (job_type, gpus) =
                parse_tuple_key(key).map_err(|m| WorkloadError::new(file, 0, &field, m))?;
            let null = entry
                .as_object()
                .and_then(|o| o.get("null"))
                .ok_or_else(|| {
                    WorkloadError::new(
                        file,
                        0,
                        &field,
                        "expected an object with a \"null\" (isolated throughput) entry",
                    )
                })?;
            let v = null
                .as_f64()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    WorkloadError::new(
                        file,
                        0,
                        &format!("{field}/null"),
                        format!("expected a throughput >= 0 (steps/s), got `{null}`"),
                    )
                })?;
            t.insert(&job_type, accel, gpus, v);
        }
    }
    Ok(t)
}

/// Parses the CSV form `job_type,accelerator,gpus,steps_per_s`.
pub fn parse_csv(text: &str, file: &str) -> Result<Throughputs, WorkloadError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut record = csv::StringRecord::new();
    let mut cols: Option<[usize; 4]> = None;
    let mut width = 0;
    let mut t = Throughputs::new();
    let mut seen: HashMap<(String, String, u32), usize> = HashMap::new();
    while let Some(line) = super::next_row(&mut rdr, &mut record, file)? {
        let Some(c) = cols else {
            let names: Vec<String> = record
                .iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .collect();
            if let Some(u) = names.iter().find(|n| !CSV_COLUMNS.contains(&n.as_str())) {
                return Err(WorkloadError::new(
                    file,
                    line,
                    u,
                    format!("unknown column `{u}` (expected {})", CSV_COLUMNS.join(",")),
                ));
            }
            let mut c = [0; 4];
            for (k, name) in CSV_COLUMNS.iter().enumerate() {
                let pos: Vec<usize> = (0..names.len()).filter(|&i| names[i] == *name).collect();
                if pos.len() != 1 {
                    let what = if pos.is_empty() {
                        "missing"
                    } else {
                        "repeated"
                    };
                    return Err(WorkloadError::new(
                        file,
                        line,
                        name,
                        format!(
                            "{what} column `{name}` (the header needs {})",
                            CSV_COLUMNS.join(",")
                        ),
                    ));
                }
                c[k] = pos[0];
            }
            cols = Some(c);
            width = names.len();
            continue;
        };
        if record.len() != width {
            let missing = c
                .iter()
                .position(|&i| i == record.len())
                .map(|k| CSV_COLUMNS[k]);
            return Err(super::width_error(file, line, record.len(), width, missing));
        }
        let cell = |k: usize| record[c[k]].trim();
        let err = |k: usize, m: String| WorkloadError::new(file, line, CSV_COLUMNS[k], m);
        let job_type = cell(0);
        if job_type.is_empty() {
            return Err(err(0, "job type must not be empty".into()));
        }
        let accel = cell(1);
        check_accel(accel).map_err(|m| err(1, m))?;
        let gpus = parse_gpus(cell(2)).map_err(|m| err(2, m))?;
        let v = parse_finite(cell(3)).map_err(|m| err(3, m))?;
        non_negative(cell(3), v).map_err(|m| err(3, m))?;
        let key = (job_type.to_string(), accel.to_ascii_lowercase(), gpus);
        if let Some(prev) = seen.insert(key, line) {
            return Err(err(
                0,
                format!("duplicate entry for ({job_type}, {accel}, {gpus}) (first on line {prev})"),
            ));
        }
        t.insert(job_type, accel, gpus, v);
    }
    if cols.is_none() {
        return Err(WorkloadError::new(
            file,
            1,
            "",
            format!("empty file: expected a header {}", CSV_COLUMNS.join(",")),
        ));
    }
    Ok(t)
}

fn check_accel(a: &str) -> Result<(), String> {
    let ok = !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(format!("bad accelerator type `{a}`"))
    }
}

/// Parses a Gavel job key, a Python tuple literal `('<job type>', <GPUs>)`,
/// into the job type and GPU count. The job type may be in single or double
/// quotes and may contain parentheses, commas and backslash escapes.
pub fn parse_tuple_key(key: &str) -> Result<(String, u32), String> {
    let bad = |why: &str| format!("bad job key `{key}`: {why} (expected ('<job type>', <GPUs>))");
    let inner = key
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| bad("not in parentheses"))?
        .trim_start();
    let mut chars = inner.char_indices();
    let quote = match chars.next() {
        Some((_, q @ ('\'' | '"'))) => q,
        _ => return Err(bad("the job type is not a quoted string")),
    };
    let mut job_type = String::new();
    let mut end = None;
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some((_, 'n')) => job_type.push('\n'),
                Some((_, 't')) => job_type.push('\t'),
                Some((_, e)) => job_type.push(e),
                None => break,
            },
            c if c == quote => {
                end = Some(i + c.len_utf8());
                break;
            }
            c => job_type.push(c),
        }
    }
    let end = end.ok_or_else(|| bad("unterminated string"))?;
    if job_type.is_empty() {
        return Err(bad("empty job type"));
    }
    let rest = inner[end..]
        .trim_start()
        .strip_prefix(',')
        .ok_or_else(|| bad("no `,` after the job type"))?;
    let rest = rest.trim();
    let rest = rest.strip_suffix(',').unwrap_or(rest).trim();
    let gpus = parse_gpus(rest).map_err(|_| bad(&format!("GPUs must be 1 to {MAX_GPUS}")))?;
    Ok((job_type, gpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuple_keys() {
        assert_eq!(
            parse_tuple_key("('ResNet-18 (batch size 16)', 1)").unwrap(),
            ("ResNet-18 (batch size 16)".to_string(), 1)
        );
        assert_eq!(
            parse_tuple_key(" ( \"it's, (odd)\" ,8 ) ").unwrap(),
            ("it's, (odd)".to_string(), 8)
        );
        assert_eq!(
            parse_tuple_key(r"('a\'b\\c', 2,)").unwrap(),
            (r"a'b\c".to_string(), 2)
        );
        for bad in [
            "",
            "(",
            "()",
            "('a', )",
            "('a' 1)",
            "(a, 1)",
            "('a', 1",
            "('a, 1)",
            "('', 1)",
            "('a', 0)",
            "('a', -1)",
            "('a', 1.5)",
            "('a', x)",
            "('a', 99999999999)",
            "('a\\",
        ] {
            assert!(parse_tuple_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn real_gavel_json() {
        let t = load(Path::new("../../data/gavel/simulation_throughputs.json")).unwrap();
        assert_eq!(t.job_types().len(), 26);
        let v = t.get("ResNet-18 (batch size 16)", "v100", 4).unwrap();
        assert!((v - 123.85).abs() < 0.01, "{v}");
        assert_eq!(t.accelerators("A3C"), ["k80", "p100", "v100"]);
        assert!(
            t.get("ResNet-18 (batch size 16)", "v100_unconsolidated", 4)
                .is_none()
        );
    }

    #[test]
    fn json_forms_and_errors() {
        let good = r#"{"V100": {"('a', 1)": {"null": 2.5, "('b', 1)": [1, 1]}, "('a', 2)": {"null": 0}},
                       "v100_unconsolidated": {"junk": 1}}"#;
        let t = parse_json(good, "t.json").unwrap();
        assert_eq!(t.get("a", "v100", 1), Some(2.5));
        assert_eq!(t.get("a", "v100", 2), Some(0.0));
        let cases: &[(&str, &str)] = &[
            (
                "{\"v100\": {\n\"('a', 1)\": {\"null\": 1,}}}",
                "t.json:2: invalid JSON",
            ),
            ("", "t.json:1: invalid JSON"),
            ("[1]", "expected an object"),
            ("{\"v 100\": {}}", "field `v 100`"),
            ("{\"v100\": 3}", "field `v100`"),
            (
                "{\"v100\": {\"a\": {\"null\": 1}}}",
                "field `v100/a`: bad job key",
            ),
            ("{\"v100\": {\"('a', 1)\": {}}}", "field `v100/('a', 1)`"),
            (
                "{\"v100\": {\"('a', 1)\": {\"null\": -1}}}",
                "field `v100/('a', 1)/null`",
            ),
            (
                "{\"v100\": {\"('a', 1)\": {\"null\": \"x\"}}}",
                "field `v100/('a', 1)/null`",
            ),
        ];
        for (text, want) in cases {
            let e = parse_json(text, "t.json").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?} -> {e}");
        }
    }

    #[test]
    fn csv_form() {
        let text = "# measured\nsteps_per_s,job_type,accelerator,gpus\n10,a,H100,1\n36,\"b, with comma\",h100,4\n\n0,a,mi300x,1\n";
        let t = parse_csv(text, "t.csv").unwrap();
        assert_eq!(t.get("a", "h100", 1), Some(10.0));
        assert_eq!(t.get("b, with comma", "h100", 4), Some(36.0));
        assert_eq!(t.get("a", "mi300x", 1), Some(0.0));
        let dir = std::env::temp_dir().join(format!("gigafab-tput-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.csv");
        std::fs::write(&p, text).unwrap();
        assert_eq!(load(&p).unwrap(), t);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn csv_errors_name_line_and_field() {
        let h = "job_type,accelerator,gpus,steps_per_s\n";
        let cases: &[(&str, &str, &str)] = &[
            ("a,h100,1", "steps_per_s", "3 cells"),
            ("a,h100,1,2,3", "cell 5", "5 cells"),
            (",h100,1,2", "job_type", "empty"),
            ("a,h 100,1,2", "accelerator", "bad accelerator"),
            ("a,h100,0,2", "gpus", "whole number"),
            ("a,h100,20000000,2", "gpus", "whole number"),
            ("a,h100,1,NaN", "steps_per_s", "finite"),
            ("a,h100,1,-2", "steps_per_s", ">= 0"),
            ("a,h100,1,fast", "steps_per_s", "expected a number"),
            ("x,H100,1,3", "job_type", "first on line 2"),
        ];
        for (l, field, msg) in cases {
            let e = parse_csv(&format!("{h}x,h100,1,1\n{l}\n"), "t.csv")
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("t.csv:3: field `{field}`")) && e.contains(msg),
                "{l:?} -> {e}"
            );
        }
        let e = parse_csv("job_type,accelerator,gpus\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("t.csv:1: field `steps_per_s`") && e.contains("missing"),
            "{e}"
        );
        let e = parse_csv("job_type,accelerator,gpus,steps_per_s,x\n", "t.csv")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.csv:1: field `x`"), "{e}");
        let e = parse_csv("", "t.csv").unwrap_err().to_string();
        assert!(e.contains("empty file"), "{e}");
        assert!(parse_csv(h, "t.csv").unwrap().is_empty());
        let e = load(Path::new("/nonexistent/t.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read"), "{e}");
    }
}
