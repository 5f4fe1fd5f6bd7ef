//! End-to-end tests of the `gigafab` binary: every test runs the real
//! executable on the repository's real data (`data/`) or on small files written to a
//! fresh temporary directory, and checks its exit status, stdout and stderr.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Paths relative to `crates/cli`, the working directory of every command.
const DATA: &str = "../../data";
const THROUGHPUTS: &str = "../../data/gavel/simulation_throughputs.json";
const PHILLY: &str = "../../data/traces/philly_job_distribution.csv";
const GAVEL_TRACE: &str = "../../data/gavel/msr_seed0/23dbec.trace";
const ALIBABA_PODS: &str = "../../data/traces/alibaba_openb_pods_default.csv";
const GAVEL_108: &str = "../../examples/factories/gavel-108.toml";
const MIXED_SMALL: &str = "../../examples/factories/mixed-small.toml";
const ALIBABA_OPENB: &str = "../../examples/factories/alibaba-openb.toml";
const GIGAFACTORY: &str = "../../examples/factories/gigafactory-100k.toml";

const POLICIES: [&str; 5] = ["fifo", "backfill", "fairshare", "las", "hetero"];

/// A fresh directory under the system temp dir, removed on drop.
struct Tmp {
    dir: PathBuf,
}

impl Tmp {
    fn new(test: &str) -> Tmp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("gigafab-cli-{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Tmp { dir }
    }

    /// Path of `name` inside the directory, as a string for command lines.
    fn path(&self, name: &str) -> String {
        self.dir
            .join(name)
            .to_str()
            .expect("UTF-8 temp path")
            .to_string()
    }

    /// Writes `text` to `name` and returns its path.
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gigafab"));
    c.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// Runs `gigafab ARGS` from `crates/cli`.
fn gigafab(args: &[&str]) -> Output {
    command(args).output().expect("run gigafab")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `gigafab ARGS`, asserts it succeeded without a panic, returns stdout.
fn run_ok(args: &[&str]) -> Output {
    let o = gigafab(args);
    assert!(
        o.status.success(),
        "gigafab {args:?} failed ({}):\n{}",
        o.status,
        stderr(&o)
    );
    assert!(
        !stderr(&o).contains("panicked"),
        "gigafab {args:?}:\n{}",
        stderr(&o)
    );
    o
}

/// `gigafab sim -q --output json ARGS` → the parsed report.
fn sim_json(args: &[&str]) -> Value {
    let mut all = vec!["sim", "-q", "--output", "json"];
    all.extend_from_slice(args);
    let o = run_ok(&all);
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("gigafab {all:?}: stdout is not JSON ({e}):\n{}", stdout(&o)))
}

fn f64_of(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("report has no number `{key}`: {v}"))
}

fn u64_of(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("report has no count `{key}`: {v}"))
}

/// Asserts that a command failed cleanly: a non-zero exit status (not a
/// signal), nothing on stdout, an `error:` line on stderr containing every
/// needle, and no panic. Returns stderr.
fn assert_clean_failure(o: &Output, needles: &[&str]) -> String {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success:\n{err}");
    assert!(
        matches!(o.status.code(), Some(c) if c != 0),
        "killed by a signal? {}",
        o.status
    );
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    assert!(o.stdout.is_empty(), "stdout not empty:\n{}", stdout(o));
    assert!(err.starts_with("error:"), "no error line:\n{err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks `{n}`:\n{err}");
    }
    err
}

/// Writes the Gavel-profile workload of these tests (300 jobs, 3 jobs/hour,
/// seed 7) into `tmp` and returns its path.
fn gavel_workload(tmp: &Tmp) -> String {
    let out = tmp.path("gavel-300.csv");
    run_ok(&[
        "workload",
        "synth",
        "--profile",
        "gavel",
        "--jobs",
        "300",
        "--rate",
        "3",
        "--seed",
        "7",
        "--throughputs",
        THROUGHPUTS,
        "--out",
        &out,
    ]);
    out
}

/// `sim` of the Gavel workload on gavel-108 with the throughput matrix.
fn sim_gavel(workload: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "--factory",
        GAVEL_108,
        "--workload",
        workload,
        "--throughputs",
        THROUGHPUTS,
    ];
    args.extend_from_slice(extra);
    sim_json(&args)
}

/// Reads a file given relative to `crates/cli`.
fn read_rel(rel: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn lines(path: &str) -> usize {
    std::fs::read_to_string(path)
        .expect("read file")
        .lines()
        .count()
}

// 1. Every policy on the Gavel workload.
#[test]
fn sim_json_gavel_workload_every_policy() {
    let tmp = Tmp::new("every_policy");
    let w = gavel_workload(&tmp);
    for p in POLICIES {
        let r = sim_gavel(&w, &["--policy", p]);
        for key in [
            "jobs_completed",
            "avg_jct_s",
            "p99_jct_s",
            "avg_wait_s",
            "makespan_s",
            "utilization",
            "gpu_hours_lost",
            "events",
            "wall_time_s",
        ] {
            assert!(r.get(key).is_some(), "{p}: no `{key}` in {r}");
        }
        assert_eq!(r["policy"], p, "{p}: report names another policy");
        assert_eq!(u64_of(&r, "jobs_submitted"), 300, "{p}");
        assert_eq!(u64_of(&r, "measured_jobs"), 300, "{p}");
        // failures are on by default, but failed jobs restart: all complete
        assert_eq!(u64_of(&r, "jobs_completed"), 300, "{p}: {r}");
        let u = f64_of(&r, "utilization");
        assert!(u > 0.0 && u <= 1.0, "{p}: utilization {u}");
        let (p50, p99) = (f64_of(&r, "p50_jct_s"), f64_of(&r, "p99_jct_s"));
        assert!(p50 > 0.0 && p99 >= p50, "{p}: p50 {p50}, p99 {p99}");
        assert!(f64_of(&r, "avg_jct_s") > 0.0, "{p}");
        assert!(f64_of(&r, "avg_wait_s") >= 0.0, "{p}");
        assert!(f64_of(&r, "makespan_s") > 0.0, "{p}");
        assert!(f64_of(&r, "gpu_hours_lost") >= 0.0, "{p}");
        // at least one submission and one end per job
        assert!(u64_of(&r, "events") >= 600, "{p}: events {}", r["events"]);
    }
}

// 2. Same seed, same report; another seed, other failures.
#[test]
fn sim_is_deterministic_per_seed() {
    let tmp = Tmp::new("determinism");
    let w = gavel_workload(&tmp);
    let strip = |mut v: Value| {
        let o = v.as_object_mut().expect("report object");
        assert!(o.remove("wall_time_s").is_some());
        assert!(o.remove("events_per_s").is_some());
        v
    };
    let args = ["--seed", "3", "--failure-rate", "0.05"];
    let a = strip(sim_gavel(&w, &args));
    let b = strip(sim_gavel(&w, &args));
    assert_eq!(a, b, "two runs with --seed 3 differ");
    assert_eq!(u64_of(&a, "seed"), 3);
    assert!(u64_of(&a, "failures") > 0, "no failures at rate 0.05: {a}");
    // the default failure rate too
    let c = strip(sim_gavel(&w, &["--seed", "3"]));
    let d = strip(sim_gavel(&w, &["--seed", "3"]));
    assert_eq!(c, d, "two runs with --seed 3 (default failures) differ");
    let other = strip(sim_gavel(&w, &["--seed", "4", "--failure-rate", "0.05"]));
    assert!(
        a["gpu_hours_lost"] != other["gpu_hours_lost"] || a["failures"] != other["failures"],
        "seeds 3 and 4 gave the same failures: {} / {}",
        a["failures"],
        a["gpu_hours_lost"]
    );
}

// 3. Gavel's finding: heterogeneity-aware placement cuts JCT.
#[test]
fn hetero_beats_fifo_on_gavel_workload() {
    let tmp = Tmp::new("hetero_fifo");
    let w = gavel_workload(&tmp);
    let fifo = sim_gavel(&w, &["--policy", "fifo"]);
    let hetero = sim_gavel(&w, &["--policy", "hetero"]);
    assert_eq!(u64_of(&fifo, "jobs_completed"), 300);
    assert_eq!(u64_of(&hetero, "jobs_completed"), 300);
    let (f, h) = (f64_of(&fifo, "avg_jct_s"), f64_of(&hetero, "avg_jct_s"));
    assert!(h < f, "hetero avg JCT {h} s is not below fifo's {f} s");
}

// 4. Measurement window.
#[test]
fn measure_jobs_window() {
    let tmp = Tmp::new("measure");
    let w = gavel_workload(&tmp);
    let r = sim_gavel(&w, &["--measure-jobs", "50..250"]);
    assert_eq!(u64_of(&r, "measured_jobs"), 200);
    assert_eq!(u64_of(&r, "jobs_submitted"), 300);
    let u = f64_of(&r, "utilization");
    assert!(u > 0.0 && u <= 1.0, "utilization {u}");

    for (range, problem) in [
        ("250..50", "below"),
        ("0..99999", "outside"),
        ("abc", "A..B"),
    ] {
        let o = gigafab(&[
            "sim",
            "-q",
            "--output",
            "json",
            "--factory",
            GAVEL_108,
            "--workload",
            &w,
            "--throughputs",
            THROUGHPUTS,
            "--measure-jobs",
            range,
        ]);
        assert_clean_failure(&o, &["measure-jobs", range, problem]);
    }
}

// 5. SVG plot.
#[test]
fn plot_writes_svg() {
    let tmp = Tmp::new("plot");
    let w = gavel_workload(&tmp);
    let svg = tmp.path("out.svg");
    let r = sim_gavel(&w, &["--plot", &svg]);
    assert_eq!(u64_of(&r, "jobs_completed"), 300);
    let text = std::fs::read_to_string(&svg).expect("plot written");
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    assert!(text.contains("polyline"), "no polyline in the plot");
    assert!(text.trim_end().ends_with("</svg>"), "plot not closed");
}

// 5b. Per-job CSV, and the requeue limit it shows.
#[test]
fn jobs_out_writes_a_row_per_job() {
    let tmp = Tmp::new("jobsout");
    let w = gavel_workload(&tmp);
    let csv = tmp.path("jobs.csv");
    let r = sim_gavel(&w, &["--jobs-out", &csv]);
    let text = std::fs::read_to_string(&csv).expect("jobs written");
    let mut rows = text.lines();
    assert_eq!(
        rows.next(),
        Some(
            "id,submit_s,start_s,end_s,state,accelerators,pool,site,wait_s,restarts,energy_kwh,carbon_g,size_class,queued_s"
        )
    );
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len() as u64, u64_of(&r, "jobs_submitted"));
    let completed = rows.iter().filter(|l| l.contains(",completed,")).count();
    assert_eq!(completed as u64, u64_of(&r, "jobs_completed"));
    // the mean wait of the CSV is the report's
    let waits: Vec<f64> = rows
        .iter()
        .filter_map(|l| l.split(',').nth(8).and_then(|w| w.parse().ok()))
        .collect();
    let mean = waits.iter().sum::<f64>() / waits.len() as f64;
    assert!((mean - f64_of(&r, "avg_wait_s")).abs() < 1e-3, "{mean}");
    // a file that cannot be written is an error naming it
    let o = gigafab(&["sim", "--quiet", "--jobs-out", "/nonexistent-dir/jobs.csv"]);
    assert_clean_failure(&o, &["/nonexistent-dir/jobs.csv", "cannot write the jobs"]);
}

// 6a. Gavel trace reader.
#[test]
fn reader_gavel_trace() {
    let r = sim_json(&[
        "--workload-format",
        "gavel",
        "--workload",
        GAVEL_TRACE,
        "--throughputs",
        THROUGHPUTS,
        "--factory",
        GAVEL_108,
    ]);
    let n = read_rel(GAVEL_TRACE)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    assert!(n > 0);
    assert_eq!(u64_of(&r, "jobs_submitted"), n);
    assert_eq!(u64_of(&r, "jobs_completed"), n, "{r}");
    assert!(f64_of(&r, "avg_jct_s") > 0.0);
}

// 6b. Alibaba pod list reader, the whole trace.
#[test]
fn reader_alibaba_pods() {
    let t = Instant::now();
    let o = run_ok(&[
        "sim",
        "-q",
        "--output",
        "json",
        "--workload-format",
        "alibaba",
        "--workload",
        ALIBABA_PODS,
        "--factory",
        ALIBABA_OPENB,
    ]);
    let took = t.elapsed();
    // 0.1 s in debug and release on a quiet machine; generous for CI
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let r: Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    let submitted = u64_of(&r, "jobs_submitted");
    assert!(submitted > 1000, "{r}");
    assert_eq!(u64_of(&r, "jobs_completed"), submitted, "{r}");
    // every pod is either a job or counted as skipped on stderr
    let err = stderr(&o);
    let skipped: u64 = err
        .split("skipped ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no skipped count on stderr:\n{err}"));
    let pods = read_rel(ALIBABA_PODS)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    assert_eq!(submitted + skipped, pods, "jobs + skipped != pods");
    let u = f64_of(&r, "utilization");
    assert!(u > 0.0 && u <= 1.0, "utilization {u}");
}

// 6c. SWF reader.
#[test]
fn reader_swf() {
    let tmp = Tmp::new("swf");
    let swf = tmp.write(
        "small.swf",
        "; Version: 2.2\n\
         ; Computer: test machine\n\
         ; MaxProcs: 128\n\
         ;\n\
         1 0 5 3600 8 -1 -1 8 7200 -1 1 1 1 -1 1 -1 -1 -1\n\
         2 60 0 1800 -1 -1 -1 16 3600 -1 1 2 1 -1 1 -1 -1 -1\n\
         3 120 0 -1 4 -1 -1 4 3600 -1 5 3 1 -1 1 -1 -1 -1\n\
         4 300 0 600 1 -1 -1 1 -1 -1 1 -1 1 -1 1 -1 -1 -1\n",
    );
    let o = run_ok(&[
        "sim",
        "-q",
        "--output",
        "json",
        "--failure-rate",
        "0",
        "--workload-format",
        "swf",
        "--workload",
        &swf,
        "--factory",
        MIXED_SMALL,
    ]);
    let r: Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    // job 3 has no run time: skipped and counted
    assert!(stderr(&o).contains("skipped 1"), "{}", stderr(&o));
    assert_eq!(u64_of(&r, "jobs_submitted"), 3);
    assert_eq!(u64_of(&r, "jobs_completed"), 3);
    // an idle factory: no waiting, JCT = run time
    let avg = f64_of(&r, "avg_jct_s");
    assert!(
        (avg - (3600.0 + 1800.0 + 600.0) / 3.0).abs() < 1e-6,
        "{avg}"
    );
    assert_eq!(f64_of(&r, "avg_wait_s"), 0.0);
}

// 6d. Native CSV written by hand, with the optional columns.
#[test]
fn reader_native_csv_with_categories() {
    let tmp = Tmp::new("native");
    let csv = tmp.write(
        "jobs.csv",
        "# hand-written workload\n\
         id,submit_s,gpus,duration_s,types,tenant,category,priority\n\
         a,0,8,3600,mi300x,acme,startup,1\n\
         b,10,16,1800,h100,uni,academia,0\n\
         c,20,4,600,,gov,public,2\n\
         d,30,2,900,mi300x|h100,acme,startup,\n\
         e,40,1,100,k80,uni,academia,0\n",
    );
    let r = sim_json(&[
        "--failure-rate",
        "0",
        "--workload",
        &csv,
        "--factory",
        MIXED_SMALL,
    ]);
    assert_eq!(u64_of(&r, "jobs_submitted"), 5);
    assert_eq!(u64_of(&r, "jobs_completed"), 4, "{r}");
    // mixed-small has no K80: job e can never run
    assert_eq!(u64_of(&r, "jobs_cancelled"), 1, "{r}");
    let cats = r["categories"].as_object().expect("categories object");
    let mut names: Vec<&str> = cats.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["academia", "public", "startup"], "{r}");
    let c = |k: &str, f: &str| cats[k][f].as_f64().unwrap_or(f64::NAN);
    assert_eq!(c("startup", "jobs"), 2.0);
    assert_eq!(c("startup", "completed"), 2.0);
    assert!((c("startup", "avg_jct_s") - 2250.0).abs() < 1e-6);
    assert!((c("startup", "gpu_hours") - 8.5).abs() < 1e-6);
    assert_eq!(c("academia", "jobs"), 2.0);
    assert_eq!(c("academia", "completed"), 1.0);
    assert!((c("academia", "avg_jct_s") - 1800.0).abs() < 1e-6);
    assert_eq!(c("public", "jobs"), 1.0);
    assert!((c("public", "avg_jct_s") - 600.0).abs() < 1e-6);
}

// 6e. `workload convert` writes a native file that simulates the same.
#[test]
fn convert_gavel_trace_to_native_same_report() {
    let tmp = Tmp::new("convert");
    let native = tmp.path("trace.csv");
    run_ok(&[
        "workload",
        "convert",
        "--format",
        "gavel",
        GAVEL_TRACE,
        "--out",
        &native,
    ]);
    let strip = |mut v: Value| {
        let o = v.as_object_mut().expect("report object");
        o.remove("wall_time_s");
        o.remove("events_per_s");
        v
    };
    let common = ["--throughputs", THROUGHPUTS, "--factory", GAVEL_108];
    let mut a = vec!["--workload-format", "gavel", "--workload", GAVEL_TRACE];
    a.extend_from_slice(&common);
    let mut b = vec!["--workload", native.as_str()];
    b.extend_from_slice(&common);
    let ra = strip(sim_json(&a));
    let rb = strip(sim_json(&b));
    assert!(u64_of(&ra, "jobs_completed") > 0);
    assert_eq!(ra, rb);
}

// 7. Malformed inputs fail cleanly, naming file, line and field.
#[test]
fn bad_native_gpus_names_file_line_field() {
    let tmp = Tmp::new("bad_gpus");
    let csv = tmp.write(
        "bad.csv",
        "id,submit_s,gpus,duration_s\na,0,1,10\nb,5,four,10\n",
    );
    let o = gigafab(&["sim", "-q", "--workload", &csv]);
    assert_clean_failure(&o, &[&format!("{csv}:3"), "gpus", "four"]);
}

#[test]
fn bad_native_missing_column() {
    let tmp = Tmp::new("missing_col");
    let csv = tmp.write("bad.csv", "id,submit_s,duration_s\na,0,10\n");
    let o = gigafab(&["sim", "-q", "--workload", &csv]);
    assert_clean_failure(&o, &[&format!("{csv}:1"), "gpus", "missing"]);
}

/// mixed-small.toml with its MI300X pool on an accelerator that does not exist.
fn unknown_accelerator_factory(tmp: &Tmp) -> (String, usize) {
    let text = read_rel(MIXED_SMALL);
    let bad = text.replace("accelerator = \"mi300x\"", "accelerator = \"zz9\"");
    assert_ne!(bad, text);
    let line = bad
        .lines()
        .position(|l| l.contains("\"zz9\""))
        .expect("line")
        + 1;
    (tmp.write("bad.toml", &bad), line)
}

#[test]
fn bad_factory_unknown_accelerator() {
    let tmp = Tmp::new("unknown_accel");
    let (f, _) = unknown_accelerator_factory(&tmp);
    let o = gigafab(&["sim", "-q", "--factory", &f]);
    assert_clean_failure(&o, &[&f, "sites[0].pools[1]", "unknown accelerator", "zz9"]);
    let o = gigafab(&["factory", "show", &f]);
    assert_clean_failure(&o, &[&f, "unknown accelerator", "zz9"]);
}

#[test]
fn bad_factory_unknown_accelerator_names_line() {
    let tmp = Tmp::new("unknown_accel_line");
    let (f, line) = unknown_accelerator_factory(&tmp);
    let o = gigafab(&["sim", "-q", "--factory", &f]);
    assert_clean_failure(&o, &[&format!("{f}:{line}"), "zz9"]);
}

#[test]
fn bad_factory_toml_syntax_names_line() {
    let tmp = Tmp::new("toml_syntax");
    let text = read_rel(MIXED_SMALL);
    let bad = text.replacen("nodes_per_leaf = 4", "nodes_per_leaf = = 4", 1);
    assert_ne!(bad, text);
    let line = bad.lines().position(|l| l.contains("= = 4")).expect("line") + 1;
    let f = tmp.write("syntax.toml", &bad);
    let o = gigafab(&["sim", "-q", "--factory", &f]);
    assert_clean_failure(&o, &[&format!("{f}:{line}:")]);
}

#[test]
fn bad_workload_path() {
    let tmp = Tmp::new("no_workload");
    let missing = tmp.path("does-not-exist.csv");
    for format in ["native", "swf", "alibaba", "gavel"] {
        let o = gigafab(&[
            "sim",
            "-q",
            "--workload-format",
            format,
            "--workload",
            &missing,
        ]);
        assert_clean_failure(&o, &[&missing, "cannot read"]);
    }
}

#[test]
fn bad_policy_lists_valid_ones() {
    let o = gigafab(&["sim", "-q", "--policy", "nope"]);
    let mut needles = vec!["nope"];
    needles.extend_from_slice(&POLICIES);
    assert_clean_failure(&o, &needles);
}

#[test]
fn bad_throughputs_truncated_json() {
    let tmp = Tmp::new("trunc_json");
    let full = read_rel(THROUGHPUTS);
    let cut = &full[..5000];
    let line = cut.matches('\n').count() + 1;
    let tp = tmp.write("truncated.json", cut);
    let o = gigafab(&["sim", "-q", "--throughputs", &tp]);
    assert_clean_failure(&o, &[&format!("{tp}:{line}"), "JSON"]);
    // an empty file too
    let empty = tmp.write("empty.json", "");
    let o = gigafab(&["sim", "-q", "--throughputs", &empty]);
    assert_clean_failure(&o, &[&empty, "JSON"]);
}

#[test]
fn bad_other_readers_name_file_line_field() {
    let tmp = Tmp::new("bad_readers");
    let swf = tmp.write(
        "bad.swf",
        "; header\n1 0 5 3600 8 -1 -1 8 7200 -1 1 1 1 -1 1 -1 -1 -1\n\
         2 60 0 1800 x -1 -1 16 3600 -1 1 2 1 -1 1 -1 -1 -1\n",
    );
    let o = gigafab(&["sim", "-q", "--workload-format", "swf", "--workload", &swf]);
    assert_clean_failure(&o, &[&format!("{swf}:3"), "allocated_processors"]);

    let pods = tmp.write(
        "pods.csv",
        "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n\
         p0,1000,100,1,1000,,LS,Running,0,10,0\n\
         p1,1000,100,two,1000,,LS,Running,0,10,0\n",
    );
    let o = gigafab(&[
        "sim",
        "-q",
        "--workload-format",
        "alibaba",
        "--workload",
        &pods,
    ]);
    assert_clean_failure(&o, &[&format!("{pods}:3"), "num_gpu", "two"]);

    let trace = tmp.write(
        "bad.trace",
        "ResNet-18 (batch size 16)\tcmd\t-n\t1\t1000\t0.0\t1\n\
         ResNet-18 (batch size 16)\tcmd\t-n\t1\tabc\t5.0\t1\n",
    );
    let o = gigafab(&[
        "sim",
        "-q",
        "--workload-format",
        "gavel",
        "--workload",
        &trace,
    ]);
    assert_clean_failure(&o, &[&format!("{trace}:2"), "total_steps", "abc"]);
}

// 8. Synthetic workloads.
#[test]
fn synth_philly_is_reproducible() {
    let tmp = Tmp::new("synth_philly");
    let synth = |seed: &str, out: &str| {
        run_ok(&[
            "workload",
            "synth",
            "--profile",
            "philly",
            "--jobs",
            "1000",
            "--rate",
            "100",
            "--seed",
            seed,
            "--philly",
            PHILLY,
            "--out",
            out,
        ])
    };
    let (a, b, c) = (tmp.path("a.csv"), tmp.path("b.csv"), tmp.path("c.csv"));
    synth("1", &a);
    synth("1", &b);
    synth("2", &c);
    assert_eq!(lines(&a), 1001, "header + 1000 jobs");
    let (ta, tb, tc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert!(ta == tb, "same seed, different files");
    assert!(ta != tc, "seeds 1 and 2 gave the same file");
    // the file is a valid native workload
    let r = sim_json(&["--workload", &a, "--failure-rate", "0"]);
    assert_eq!(u64_of(&r, "jobs_submitted"), 1000);
}

#[test]
fn synth_gigafactory_by_load() {
    let tmp = Tmp::new("synth_giga");
    let out = tmp.path("giga.csv");
    let o = run_ok(&[
        "workload",
        "synth",
        "--profile",
        "gigafactory",
        "--jobs",
        "200",
        "--load",
        "0.9",
        "--factory",
        GIGAFACTORY,
        "--philly",
        PHILLY,
        "--out",
        &out,
    ]);
    assert!(stderr(&o).contains("wrote 200 jobs"), "{}", stderr(&o));
    assert_eq!(lines(&out), 201);
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("id,submit_s,gpus,duration_s"),
        "{text:.200}"
    );
}

#[test]
fn synth_gavel_defaults_to_the_embedded_throughputs() {
    let tmp = Tmp::new("synth_gavel");
    let (a, b) = (tmp.path("a.csv"), tmp.path("b.csv"));
    let base = [
        "workload",
        "synth",
        "--profile",
        "gavel",
        "--jobs",
        "50",
        "--rate",
        "1",
    ];
    let mut with_file = base.to_vec();
    with_file.extend(["--throughputs", THROUGHPUTS, "--out", &a]);
    run_ok(&with_file);
    let mut embedded = base.to_vec();
    embedded.extend(["--out", &b]);
    run_ok(&embedded);
    let (a, b) = (
        std::fs::read_to_string(a).unwrap(),
        std::fs::read_to_string(b).unwrap(),
    );
    assert_eq!(a, b, "the embedded matrix is the file's");
    assert!(
        b.contains("ResNet-18"),
        "job types drawn from the matrix:\n{b}"
    );
}

// 9. Factory listing.
#[test]
fn factory_show_gigafactory_json() {
    let o = run_ok(&["factory", "show", GIGAFACTORY, "--output", "json"]);
    let f: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(f["accelerators"].as_u64(), Some(100_000), "{f}");
    let pools = f["pools"].as_array().expect("pools array");
    assert!(!pools.is_empty());
    let mut sum = 0;
    for p in pools {
        let n = p["accelerators"].as_u64().expect("pool accelerators");
        assert!(n >= 16_384, "small pool: {p}");
        assert_eq!(
            Some(n),
            p["nodes"]
                .as_u64()
                .zip(p["accelerators_per_node"].as_u64())
                .map(|(a, b)| a * b),
            "{p}"
        );
        sum += n;
    }
    assert_eq!(sum, 100_000);
}

// 10. No arguments: the embedded defaults.
#[test]
fn sim_without_arguments_prints_table() {
    let o = run_ok(&["sim"]);
    let out = stdout(&o);
    for s in ["utilization", "fairshare", "mixed-small", "1000 submitted"] {
        assert!(out.contains(s), "table lacks `{s}`:\n{out}");
    }
}

// 11. Jobs that cannot fit are cancelled, not a crash.
#[test]
fn oversized_jobs_are_cancelled() {
    let tmp = Tmp::new("oversized");
    let csv = tmp.write(
        "big.csv",
        "id,submit_s,gpus,duration_s\n\
         small,0,8,100\n\
         huge,5,10000000,100\n\
         wide,6,129,100\n\
         after,7,8,100\n",
    );
    for p in POLICIES {
        let r = sim_json(&["--workload", &csv, "--factory", MIXED_SMALL, "--policy", p]);
        assert_eq!(u64_of(&r, "jobs_submitted"), 4, "{p}");
        assert_eq!(u64_of(&r, "jobs_cancelled"), 2, "{p}: {r}");
        assert_eq!(u64_of(&r, "jobs_completed"), 2, "{p}: {r}");
        assert_eq!(u64_of(&r, "jobs_unfinished"), 0, "{p}: {r}");
    }
}

// Writing to a closed pipe (`gigafab ... | head`) must not panic.
#[test]
fn closed_stdout_does_not_panic() {
    let mut child = command(&["sim"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let o = child.wait_with_output().expect("wait");
    let err = stderr(&o);
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn data_directory_is_present() {
    // The tests above read the repository's data/ in place.
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DATA);
    assert!(d.join("README.md").is_file(), "{} missing", d.display());
}

#[test]
fn an_unknown_option_before_the_command_is_an_error_not_a_job() {
    // `--gpu` (for `--gpus`) once ran `--gpu 2 -- true` as the job's
    // command; it must be refused before anything reaches a server
    let o = command(&["submit", "--gpu", "2", "--", "true"])
        .env("GIGAFAB_SERVER", "http://127.0.0.1:9")
        .env("GIGAFAB_TOKEN", "gf_x")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("unexpected argument '--gpu'"), "{e}");
    assert!(e.contains("--gpus"), "suggests the right flag: {e}");
    assert!(!e.contains("cannot reach") && !e.contains("connect"), "{e}");
}

#[test]
fn o_is_short_for_output() {
    let o = run_ok(&["factory", "show", MIXED_SMALL, "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["accelerators"], 128);
    let r = sim_json(&[]);
    let o = run_ok(&["sim", "-q", "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["jobs_submitted"], r["jobs_submitted"]);
}

#[test]
fn an_os_error_is_said_once() {
    let o = gigafab(&["sim", "--factory", "/nonexistent/f.toml"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.matches("No such file or directory").count(), 1, "{e}");
    assert!(e.contains("/nonexistent/f.toml"), "{e}");
}

#[test]
fn a_trace_read_in_the_wrong_format_gets_the_right_one_suggested() {
    let o = gigafab(&["sim", "-q", "--workload", GAVEL_TRACE]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("try --workload-format gavel"), "{e}");
    let o = gigafab(&["sim", "-q", "--workload", ALIBABA_PODS]);
    assert!(
        stderr(&o).contains("try --workload-format alibaba"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn embedded_data_works_from_any_directory() {
    let tmp = Tmp::new("embedded");
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args(args)
            .current_dir(&tmp.dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        o
    };
    // synth profiles without --philly/--throughputs, from an empty directory
    for profile in ["philly", "gavel", "gigafactory"] {
        let mut a = vec![
            "workload",
            "synth",
            "--profile",
            profile,
            "--jobs",
            "50",
            "--out",
        ];
        let out = format!("{profile}.csv");
        a.push(&out);
        if profile == "gigafactory" {
            a.extend(["--load", "0.5", "--factory", "builtin:gigafactory-100k"]);
        } else {
            a.extend(["--rate", "10"]);
        }
        run(&a);
        assert!(tmp.dir.join(&out).is_file());
    }
    // an example factory whose grid series are embedded
    let o = run(&[
        "sim",
        "-q",
        "-o",
        "json",
        "--factory",
        "builtin:two-sites-fr-de",
        "--workload",
        "philly.csv",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["carbon_t"].as_f64().unwrap() > 0.0, "{v}");
    // an unknown embedded name lists the known ones
    let o = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args(["sim", "--factory", "builtin:mixed-big"])
        .output()
        .unwrap();
    assert!(stderr(&o).contains("builtin:mixed-small"), "{}", stderr(&o));
}

#[test]
fn absurd_workloads_are_refused_not_simulated_for_hours() {
    let tmp = Tmp::new("absurd");
    let long = tmp.write("long.csv", "id,submit_s,gpus,duration_s\na,0,1,1e10\n");
    let o = gigafab(&["sim", "-q", "--workload", &long]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("horizon"), "{}", stderr(&o));
    let late = tmp.write("late.csv", "id,submit_s,gpus,duration_s\na,1e14,1,10\n");
    let o = gigafab(&["sim", "-q", "--workload", &late]);
    assert!(stderr(&o).contains("horizon"), "{}", stderr(&o));
    // 28 years of 20 million accelerators with failures on: ~1e8 failure
    // events, refused before anything is built
    let huge = tmp.write(
        "huge.toml",
        "name = \"huge\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 2500000\naccelerators_per_node = 8\n",
    );
    let decades = tmp.write("decades.csv", "id,submit_s,gpus,duration_s\na,0,1,9e8\n");
    let o = gigafab(&["sim", "-q", "--factory", &huge, "--workload", &decades]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("failure events") && e.contains("--failure-rate"),
        "{e}"
    );
    run_ok(&[
        "sim",
        "-q",
        "--factory",
        &huge,
        "--workload",
        &decades,
        "--failure-rate",
        "0",
    ]);
}

/// A workload whose inputs reside at one of two sites: `--residency-cost`
/// runs it again without and reports the jobs residency delayed; the
/// `inputs` column pins the jobs the way `site:` does.
#[test]
fn residency_cost_on_two_sites() {
    let dir = std::env::temp_dir().join(format!("gigafab-residency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("two.toml");
    std::fs::write(
        &f,
        "name = \"two\"\n[[sites]]\nname = \"paris\"\n[[sites.pools]]\nname = \"pa\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\n\
         [[sites]]\nname = \"frankfurt\"\n[[sites.pools]]\nname = \"fr\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\n",
    )
    .unwrap();
    let w = dir.join("w.csv");
    std::fs::write(
        &w,
        "id,submit_s,gpus,duration_s,inputs\nj0,0,2,100,cells@paris\nj1,0,2,100,cells@paris\nj2,0,2,100,cells@paris;llama\nj3,0,2,100,llama\n",
    )
    .unwrap();
    let (f, w) = (f.display().to_string(), w.display().to_string());
    let r = sim_json(&[
        "--factory",
        &f,
        "--workload",
        &w,
        "--failure-rate",
        "0",
        "--residency-cost",
    ]);
    let c = &r["residency"];
    // with residency the three Paris jobs run one after the other (waits
    // 0, 100, 200; j3 goes to Frankfurt); without, two sites share them
    assert_eq!(u64_of(c, "jobs"), 3, "{c}");
    assert!(u64_of(c, "delayed") >= 1, "{c}");
    assert!((f64_of(c, "avg_wait_s") - 100.0).abs() < 1e-6, "{c}");
    assert!(
        f64_of(c, "avg_wait_free_s") < f64_of(c, "avg_wait_s"),
        "{c}"
    );
    let plain = sim_json(&["--factory", &f, "--workload", &w, "--failure-rate", "0"]);
    assert!(plain.get("residency").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `gigafab workload requests`: Azure's LLM inference trace summarized
/// (table and JSON); a file that is not a request trace is a clean error
/// that names its line and the missing column.
#[test]
fn workload_requests_summarizes_a_request_trace() {
    let conv = "../../data/traces/AzureLLMInferenceTrace_conv.csv";
    let o = run_ok(&["workload", "requests", conv]);
    assert!(
        stdout(&o).starts_with("19366 requests over "),
        "{}",
        stdout(&o)
    );
    let o = run_ok(&["workload", "requests", conv, "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(u64_of(&v, "requests"), 19_366);
    assert!(f64_of(&v, "span_s") > 3_000.0);
    assert!(
        v["prompt_tokens"]["p99"].as_u64().unwrap() >= v["prompt_tokens"]["p50"].as_u64().unwrap()
    );
    let o = gigafab(&["workload", "requests", GAVEL_108]);
    assert_clean_failure(&o, &["gavel-108.toml:1", "timestamp", "missing column"]);
}

/// `gigafab sim --endpoints`: a day of the Azure traces served alongside
/// training, reported per endpoint (table and JSON); the endpoints alone
/// with `--no-jobs`; a bad endpoints file is a clean error with its line.
#[test]
fn sim_serves_endpoints_alongside_training() {
    let eps = "../../examples/endpoints/chat-and-code.toml";
    let o = run_ok(&["sim", "--quiet", "--endpoints", eps, "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(u64_of(&v, "jobs_submitted"), 1000);
    let e = v["endpoints"].as_array().unwrap();
    assert_eq!(e.len(), 2);
    for x in e {
        assert!(u64_of(x, "requests") > 100_000, "{x}");
        assert!(
            u64_of(x, "served") * 100 >= u64_of(x, "requests") * 99,
            "{x}"
        );
        assert!(f64_of(x, "ttft_p99_s") >= f64_of(x, "ttft_p50_s"));
        assert!(f64_of(x, "replica_hours") > 0.0);
        assert!(f64_of(x, "energy_kwh") > 0.0);
    }
    let o = run_ok(&["sim", "--quiet", "--endpoints", eps, "--no-jobs"]);
    let t = stdout(&o);
    assert!(t.contains("chat-8b") && t.contains("TTFT p99"), "{t}");
    assert!(t.contains("0 submitted"), "{t}");
    let tmp = Tmp::new("sim_endpoints");
    let bad = std::path::PathBuf::from(tmp.path("bad.toml"));
    std::fs::write(
        &bad,
        "[[endpoint]]\nname = \"x\"\nmodel_params_b = 8\nrequests = \"builtin:azure-conv\"\nreplicas = 3\n",
    )
    .unwrap();
    let o = gigafab(&[
        "sim",
        "--quiet",
        "--no-jobs",
        "--endpoints",
        bad.to_str().unwrap(),
    ]);
    assert_clean_failure(&o, &["bad.toml", "line 5", "replicas"]);
}

#[test]
fn capacity_run_without_departures_reports_the_allocation_curve() {
    let t = Tmp::new("capacity");
    let svg = t.path("curve.svg");
    let o = run_ok(&[
        "sim",
        "--no-departures",
        "--placement",
        "random,gigafab",
        "--arrive",
        "0.5",
        "--repeat",
        "2",
        "--seed",
        "3",
        "--plot",
        &svg,
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON report");
    assert_eq!(v["gpus"], 6212, "the embedded openb cluster");
    assert_eq!(v["pods"], 8152);
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4, "two policies, two seeds each");
    for r in runs {
        let curve = r["curve"].as_array().unwrap();
        let last = &curve[curve.len() - 1];
        assert_eq!(last["arrived_pct"], 50.0);
        let alloc = last["allocated_pct"].as_f64().unwrap();
        assert!((40.0..=51.0).contains(&alloc), "{alloc}");
    }
    // at half the capacity, gigafab's placement has failed nothing
    let g = &v["summary"][1];
    assert_eq!(g["policy"], "gigafab");
    assert_eq!(g["pods_failed"], 0.0);
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(picture.starts_with("<svg") && picture.contains("gigafab"));

    let bad = gigafab(&["sim", "--no-departures", "--placement", "tetris"]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("unknown policy `tetris`"),
        "{}",
        stderr(&bad)
    );
    let bad = gigafab(&["sim", "--no-departures", "--arrive", "0"]);
    assert!(stderr(&bad).contains("--arrive"), "{}", stderr(&bad));
    let nodes = t.write(
        "nodes.csv",
        "sn,cpu_milli,memory_mib,gpu,model\nn,1,1,two,T4\n",
    );
    let bad = gigafab(&["sim", "--no-departures", "--nodes", &nodes]);
    assert!(stderr(&bad).contains("nodes.csv:2"), "{}", stderr(&bad));
}

#[test]
fn workload_slices_weighs_each_slice_of_a_type() {
    let o = run_ok(&[
        "workload",
        "slices",
        ALIBABA_PODS,
        "--format",
        "alibaba",
        "--accelerator",
        "h100",
        "-o",
        "json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    let rows = v.as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["layout"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "1g.10gb",
            "1g.20gb",
            "2g.20gb",
            "3g.40gb",
            "4g.40gb",
            "7g.80gb",
            "best-fit mix"
        ]
    );
    let mix = &rows[6];
    assert_eq!(
        mix["jobs_held"], mix["jobs"],
        "the mix holds every fractional pod"
    );
    let (sliced, whole) = (
        mix["slice_gpu_hours"].as_f64().unwrap(),
        mix["whole_gpu_hours"].as_f64().unwrap(),
    );
    assert!(sliced > 0.0 && sliced < whole, "{sliced} {whole}");
    assert_eq!(
        rows[5]["slice_gpu_hours"], rows[5]["whole_gpu_hours"],
        "7g is whole"
    );
    let bad = gigafab(&[
        "workload",
        "slices",
        ALIBABA_PODS,
        "--format",
        "alibaba",
        "--accelerator",
        "t4",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("no named slices"), "{}", stderr(&bad));
}

/// Issue 31: the twin's answer for an operator: the same mixed workload on
/// the factory's shared pools and on the same accelerators whole.
#[test]
fn sim_against_whole_says_what_sharing_gave() {
    let t = Tmp::new("against-whole");
    let factory = t.path("f.toml");
    std::fs::write(
        &factory,
        r#"name = "f"
[[sites]]
name = "s"
[[sites.pools]]
name = "whole"
accelerator = "h100"
nodes = 3
accelerators_per_node = 8
[[sites.pools]]
name = "quarters"
accelerator = "h100"
nodes = 1
accelerators_per_node = 8
fractions = 4
"#,
    )
    .unwrap();
    let workload = t.path("mixed.csv");
    run_ok(&[
        "workload",
        "synth",
        "--profile",
        "mixed",
        "--jobs",
        "300",
        "--load",
        "0.7",
        "--factory",
        &factory,
        "--seed",
        "4",
        "--out",
        &workload,
    ]);
    // the slice jobs a quarter holds: their run time, s
    let csv = std::fs::read_to_string(&workload).unwrap();
    let mut rows = csv.lines();
    let head: Vec<&str> = rows.next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    let (dur, types) = (col("duration_s"), col("types"));
    let (mut quarter_s, mut quarters, mut slices) = (0.0, 0, 0);
    for r in rows {
        let f: Vec<&str> = r.split(',').collect();
        if let Some(share) = f[types].strip_prefix("slice:") {
            slices += 1;
            if share.parse::<f64>().unwrap() <= 0.25 {
                quarters += 1;
                quarter_s += f[dur].parse::<f64>().unwrap();
            }
        }
    }
    assert!(quarters > 20 && slices > quarters, "{quarters} {slices}");
    let v = sim_json(&[
        "--factory",
        &factory,
        "--workload",
        &workload,
        "--failure-rate",
        "0",
        "--against-whole",
    ]);
    let s = &v["sharing"];
    let (shared, whole) = (&s["shared"], &s["whole"]);
    let shared_side = shared;
    // slices of more than a quarter have no shared pool: whole in both runs
    assert_eq!(u64_of(shared, "slice_jobs"), quarters);
    assert_eq!(u64_of(whole, "slice_jobs"), quarters);
    assert_eq!(u64_of(shared, "accelerators"), 32);
    assert_eq!(u64_of(shared, "shared_accelerators"), 8);
    assert_eq!(u64_of(whole, "shared_accelerators"), 0);
    // a quarter holds a quarter of an accelerator; whole, one
    let h = quarter_s / 3600.0;
    let (sh, wh) = (
        f64_of(shared, "slice_gpu_hours"),
        f64_of(whole, "slice_gpu_hours"),
    );
    assert!((wh - h).abs() < 1e-6 * h, "{wh} {h}");
    assert!((sh - h / 4.0).abs() < 1e-6 * h, "{sh} {h}");
    assert!((f64_of(s, "gpu_hours_saved") - 0.75 * h).abs() < 1e-6 * h);
    assert!(f64_of(s, "accelerators_freed") > 0.0);
    // at most 32 quarters at once, on 8 accelerators
    let peak = f64_of(shared, "slice_peak_accelerators");
    assert!(peak > 0.0 && peak <= 8.0, "{peak}");
    assert!(f64_of(whole, "slice_peak_accelerators") >= peak);
    // the table says it too
    let sim = |flag: &str, value: Option<&str>| {
        let mut args = vec![
            "sim",
            "-q",
            "--factory",
            &factory,
            "--workload",
            &workload,
            flag,
        ];
        args.extend(value);
        gigafab(&args)
    };
    let o = sim("--against-whole", None);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("sharing against whole accelerators (32 accelerators"),
        "{}",
        stdout(&o)
    );
    // sizing the shared pool: 0, 1 and 2 nodes of quarters, traded with
    // the whole pool
    let on = |flag: &str, value: &str| {
        let args = ["--factory", &factory, "--workload", &workload];
        let mut args: Vec<&str> = args.to_vec();
        args.extend(["--failure-rate", "0", flag, value]);
        sim_json(&args)
    };
    let rows = on("--shared-scale", "0,1,2");
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let shared: Vec<u64> = rows
        .iter()
        .map(|r| u64_of(r, "shared_accelerators"))
        .collect();
    assert_eq!(shared, [0, 8, 16]);
    assert!(rows.iter().all(|r| u64_of(r, "accelerators") == 32));
    let held: Vec<f64> = rows.iter().map(|r| f64_of(r, "slice_gpu_hours")).collect();
    assert!((held[0] - h).abs() < 1e-6 * h, "{held:?}");
    assert!((held[1] - h / 4.0).abs() < 1e-6 * h, "{held:?}");
    assert!((held[2] - h / 4.0).abs() < 1e-6 * h, "{held:?}");
    assert_eq!(
        f64_of(&rows[1], "slice_wait_mean_s"),
        f64_of(shared_side, "slice_wait_mean_s")
    );
    let o = sim("--shared-scale", Some("4"));
    assert_clean_failure(
        &o,
        &["--shared-scale", "where it and `whole` hold 4 together"],
    );
    // nothing to compare on a factory that shares nothing
    let o = gigafab(&[
        "sim",
        "-q",
        "--factory",
        "builtin:mixed-small",
        "--workload",
        &workload,
        "--against-whole",
    ]);
    assert_clean_failure(&o, &["--against-whole", "shares no accelerator"]);
    let o = gigafab(&[
        "workload",
        "synth",
        "--profile",
        "mixed",
        "--jobs",
        "5",
        "--rate",
        "1",
        "--mix",
        "training=1,gpus=1",
        "--out",
        &workload,
    ]);
    assert_clean_failure(&o, &["--mix", "unknown kind `gpus`"]);
}
