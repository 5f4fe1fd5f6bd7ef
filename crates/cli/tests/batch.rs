//! Batch work as Slurm users do it, against the real binary: `logs -f`
//! ends with the job's state and exits with its exit code; `logs` of a job
//! that waits says why; a script's `#SBATCH` directives are read, and it
//! runs where it was submitted.

#[path = "common/app.rs"]
#[macro_use]
mod app;
#[path = "common/openapi.rs"]
mod openapi;

use app::{App, Db, TOKEN};
use std::process::Command;

/// Runs the CLI against `url`: (exit code, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    cli_in(&std::env::temp_dir(), url, args)
}

/// [`cli`] run in `dir`.
fn cli_in(dir: &std::path::Path, url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args(args)
        .current_dir(dir)
        .env("GIGAFAB_SERVER", url)
        .env("GIGAFAB_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Submits `command` with `flags`; its job id.
fn submit(url: &str, flags: &[&str], command: &[&str]) -> String {
    let mut args = vec!["submit", "--time", "5m", "-o", "json"];
    args.extend_from_slice(flags);
    args.push("--");
    args.extend_from_slice(command);
    let (code, out, err) = cli(url, &args);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["id"].as_i64().unwrap().to_string()
}

both_stores!(logs_follow_ends_with_the_jobs_state_and_exit_code);

async fn logs_follow_ends_with_the_jobs_state_and_exit_code(app: App) {
    let url = app.url.clone();
    // a job that fails: its output, then how it ended, and its code
    let failing = submit(&url, &[], &["sh", "-c", "echo before; exit 7"]);
    let (code, out, err) = cli(&url, &["logs", &failing, "-f"]);
    assert_eq!(out, "before\n");
    assert!(
        err.contains(&format!("job {failing} failed (exit code 7)")),
        "{err}"
    );
    assert_eq!(code, Some(7), "{err}");
    // without -f: the output, and the exit status of a command that worked
    let (code, out, _) = cli(&url, &["logs", &failing]);
    assert_eq!((code, out.as_str()), (Some(0), "before\n"));
    // a job that completes
    let fine = submit(&url, &[], &["sh", "-c", "echo fine"]);
    let (code, out, err) = cli(&url, &["logs", &fine, "-f"]);
    assert_eq!((code, out.as_str()), (Some(0), "fine\n"), "{err}");
    assert!(err.contains(&format!("job {fine} completed")), "{err}");
    // a job that waits: `logs` says so and why, instead of nothing
    let (code, _, err) = cli(&url, &["fleet", "drain", "amd-0"]);
    assert_eq!(code, Some(0), "{err}");
    let waiting = submit(&url, &["--vendor", "amd", "--gpus", "1"], &["echo", "late"]);
    let (code, out, err) = cli(&url, &["logs", &waiting]);
    assert_eq!((code, out.as_str()), (Some(0), ""), "{err}");
    assert!(err.contains(&format!("job {waiting} is queued")), "{err}");
    assert!(err.contains("drained: amd-0"), "{err}");
    assert!(err.contains("logs -f"), "{err}");
    // cancelled while it waits: -f ends, saying so, with status 1
    let (code, _, err) = cli(&url, &["cancel", &waiting]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(&url, &["logs", &waiting, "-f"]);
    assert_eq!(out, "");
    assert!(err.contains(&format!("job {waiting} cancelled")), "{err}");
    assert_eq!(code, Some(1), "{err}");
}

both_stores!(a_script_is_read_as_sbatch_reads_it);

async fn a_script_is_read_as_sbatch_reads_it(app: App) {
    let url = app.url.clone();
    let work = app.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("input.txt"), "data from the submit directory\n").unwrap();
    // not executable: run by its `#!` interpreter, as sbatch runs it
    std::fs::write(
        work.join("train.sh"),
        "#!/bin/sh\n\
         # what it needs\n\
         #SBATCH --job-name=train\n\
         #SBATCH --gpus=2\n\
         #SBATCH --partition=gpu\n\
         #SBATCH --time=10\n\
         cat input.txt\n\
         echo \"n=$(echo $GIGAFAB_ACCELERATORS | tr ',' '\\n' | wc -l) args=$*\"\n\
         #SBATCH --gpus=3\n",
    )
    .unwrap();
    let submit = |args: &[&str]| {
        let (code, out, err) = cli_in(&work, &url, args);
        assert_eq!(code, Some(0), "{out}{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v, err)
    };
    let (v, err) = submit(&["submit", "-o", "json", "train.sh", "first"]);
    assert_eq!(v["name"], "train");
    assert_eq!(v["gpus"], 2, "the directive before the first command");
    assert_eq!(v["time_limit_s"], 600, "Slurm's minutes");
    assert!(
        err.contains("train.sh:5: --partition=gpu: not an option gigafab reads (ignored)"),
        "{err}"
    );
    let id = v["id"].as_i64().unwrap().to_string();
    let (code, out, err) = cli(&url, &["logs", &id, "-f"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out, "data from the submit directory\nn=2 args=first\n");
    // a flag wins over its directive
    let (v, _) = submit(&["submit", "--gpus", "1", "-o", "json", "train.sh"]);
    assert_eq!(
        (v["gpus"].as_i64(), v["name"].as_str()),
        (Some(1), Some("train"))
    );
    let id = v["id"].as_i64().unwrap().to_string();
    let (_, out, _) = cli(&url, &["logs", &id, "-f"]);
    assert!(out.ends_with("n=1 args=\n"), "{out}");
    // an array of four tasks, at most two at once, from its directives
    std::fs::write(
        work.join("array.sh"),
        "#!/bin/sh\n#SBATCH --array=0-3%2\n#SBATCH --job-name=sweep\n\
         sleep 0.5; echo task=$GIGAFAB_ARRAY_TASK_ID slurm=$SLURM_ARRAY_TASK_ID of=$GIGAFAB_ARRAY_JOB_ID\n",
    )
    .unwrap();
    let (v, _) = submit(&["submit", "-o", "json", "array.sh"]);
    let first = v["id"].as_i64().unwrap();
    assert_eq!(
        (v["array_job"].as_i64(), v["array_task"].as_i64()),
        (Some(first), Some(0))
    );
    let mut ends = Vec::new();
    for task in 0..4 {
        let id = (first + task).to_string();
        let (code, out, err) = cli(&url, &["logs", &id, "-f"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, format!("task={task} slurm={task} of={first}\n"));
        let (_, out, _) = cli(&url, &["job", &id, "-o", "json"]);
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["name"], "sweep");
        ends.push((
            j["started_at"].as_str().unwrap().to_string(),
            j["ended_at"].as_str().unwrap().to_string(),
        ));
    }
    // never more than two at once: task 2 after task 0, task 3 after task 1
    assert!(ends[2].0 >= ends[0].1 && ends[3].0 >= ends[1].1, "{ends:?}");
    // `gigafab jobs`: one line for the array
    let (_, out, _) = cli(&url, &["jobs"]);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("sweep")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].contains(&format!("{first}_[0-3]")), "{out}");
    assert!(lines[0].contains("4 completed"), "{out}");
    // a malformed array: refused with why
    let (code, _, err) = cli(&url, &["submit", "--array", "5-1", "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("array: `5-1` runs backwards"), "{err}");
}

both_stores!(held_for_dependencies);

async fn held_for_dependencies(mut app: App) {
    let url = app.url.clone();
    // a job that fails: what waits for its success is cancelled, what
    // waits for its failure runs
    let a = submit(&url, &[], &["sh", "-c", "sleep 1; exit 3"]);
    let ok = format!("afterok:{a}");
    let (code, out, err) = cli(
        &url,
        &[
            "submit",
            "-o",
            "json",
            "--dependency",
            &ok,
            "--",
            "echo",
            "b",
        ],
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let b = v["id"].as_i64().unwrap().to_string();
    assert_eq!(v["reason"], format!("waiting: dependency {ok}"));
    let c = submit(&url, &["-d", &format!("afternotok:{a}")], &["echo", "c"]);
    let (code, out, err) = cli(&url, &["logs", &c, "-f"]);
    assert_eq!((code, out.as_str()), (Some(0), "c\n"), "{err}");
    let (code, _, err) = cli(&url, &["logs", &b, "-f"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("job {b} cancelled")), "{err}");
    assert!(err.contains("dependency_never_satisfied"), "{err}");
    // asked once the job has ended: refused at once, saying why
    let (code, _, err) = cli(&url, &["submit", "-d", &ok, "--", "true"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "job {a} ended failed: afterok:{a} can never be satisfied"
        )),
        "{err}"
    );
    // a job that does not exist, a malformed form
    let (_, _, err) = cli(&url, &["submit", "-d", "afterok:9999", "--", "true"]);
    assert!(err.contains("dependency: job 9999 not found"), "{err}");
    let (_, _, err) = cli(&url, &["submit", "-d", "after:1", "--", "true"]);
    assert!(err.contains("`after` is not one of afterok"), "{err}");
    // held across a restart: one on a job still queued, one also on a job
    // that ended before it
    let done = submit(&url, &[], &["true"]);
    let (code, _, _) = cli(&url, &["logs", &done, "-f"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&url, &["fleet", "drain", "amd-0"]);
    assert_eq!(code, Some(0), "{err}");
    let first = submit(&url, &["--vendor", "amd"], &["echo", "first"]);
    let then = submit(
        &url,
        &["-d", &format!("afterok:{first},afterany:{done}")],
        &["echo", "then"],
    );
    app.kill9();
    app.start(None);
    let url = app.url.clone();
    let (code, out, _) = cli(&url, &["job", &then, "-o", "json"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "queued", "{v}");
    let (code, _, err) = cli(&url, &["fleet", "resume", "amd-0"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(&url, &["logs", &then, "-f"]);
    assert_eq!((code, out.as_str()), (Some(0), "then\n"), "{err}");
    let (_, out, _) = cli(&url, &["job", &first, "-o", "json"]);
    let f: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (_, out, _) = cli(&url, &["job", &then, "-o", "json"]);
    let t: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        t["started_at"].as_str().unwrap() >= f["ended_at"].as_str().unwrap(),
        "{f} {t}"
    );
    // another organisation's job: not found either, so nothing tells how
    // it ended
    let (code, _, err) = cli(&url, &["org", "create", "acme", "--category", "startup"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(
        &url,
        &[
            "user", "create", "alice", "--org", "acme", "--role", "owner",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let alice = out
        .split_whitespace()
        .find(|w| w.starts_with("gf_"))
        .unwrap()
        .to_string();
    let (code, out, err) = cli(
        &url,
        &[
            "alloc",
            "create",
            "--org",
            "acme",
            "--gpu-hours",
            "10",
            "--days",
            "7",
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    let alloc = out.trim().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args([
            "submit",
            "--allocation",
            &alloc,
            "-d",
            &format!("afterany:{a}"),
            "--",
            "true",
        ])
        .env("GIGAFAB_SERVER", &url)
        .env("GIGAFAB_TOKEN", &alice)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!("dependency: job {a} not found")),
        "{err}"
    );
}

/// The twin replays dependencies as the server holds them: the same core.
#[test]
fn the_twin_replays_dependencies() {
    let dir = std::env::temp_dir().join(format!("gigafab-twin-deps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("w.csv");
    std::fs::write(
        &w,
        "id,submit_s,gpus,duration_s,dependency\n\
         a,0,1,100,\n\
         b,0,1,10,afterok:a\n\
         c,0,1,10,afternotok:a\n\
         d,0,1,10,afterany:c\n",
    )
    .unwrap();
    let out = dir.join("jobs.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args(["sim", "--quiet", "--workload"])
        .arg(&w)
        .arg("--jobs-out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    let row = |id: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(&format!("{id},")))
            .unwrap_or_else(|| panic!("{id} in {text}"))
            .split(',')
            .map(str::to_string)
            .collect()
    };
    // id,submit_s,start_s,end_s,state,...
    let num = |r: &[String], i: usize| r[i].parse::<f64>().unwrap();
    let (a, b, c, d) = (row("a"), row("b"), row("c"), row("d"));
    assert_eq!((a[4].as_str(), b[4].as_str()), ("completed", "completed"));
    assert!(num(&b, 2) >= num(&a, 3), "b after a: {text}");
    assert_eq!(c[4], "cancelled", "{text}");
    assert_eq!(d[4], "completed", "{text}");
    assert!(num(&d, 2) >= num(&a, 3), "d after c's end: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's sweep (an array, then a job that waits for it), run as
/// written in a fresh directory, after the README's first job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_sweep_runs_as_written() {
    let app = App::spawn(Db::Sqlite, "readmesweep").await.unwrap();
    let url = app.url.clone();
    // job 1: the README's block before it submits one
    submit(&url, &[], &["true"]);
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let block = readme
        .split("```shell\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .find(|b| b.contains("sweep.sh"))
        .expect("the README's sweep");
    let dir = app.dir.join("readme");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_gigafab"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = Command::new("bash")
        .args(["-e", "-c", block])
        .current_dir(&dir)
        .env("PATH", path)
        .env("GIGAFAB_SERVER", &url)
        .env("GIGAFAB_TOKEN", TOKEN)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("submitted job array 2"), "{out}");
    assert!(out.contains("2_[0-3]"), "{out}");
    assert!(out.ends_with("the sweep is done\n"), "{out}");
    for task in 0..4 {
        let (_, log, _) = cli(&url, &["logs", &(2 + task).to_string()]);
        assert!(log.starts_with(&format!("task {task} on ")), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_array_is_cancelled_by_its_id() {
    let app = App::spawn(Db::Sqlite, "arraycancel").await.unwrap();
    let url = app.url.clone();
    let lone = submit(&url, &[], &["true"]);
    let first = submit(&url, &["--array", "0-2%1"], &["sleep", "30"]);
    let (code, out, err) = cli(&url, &["cancel", "--array", &first]);
    assert_eq!(code, Some(0), "{out}{err}");
    let first: i64 = first.parse().unwrap();
    for id in first..first + 3 {
        app.wait_state(id, &["cancelled"], 15).await;
    }
    // not an array's id: said so
    let (code, _, err) = cli(&url, &["cancel", "--array", &lone]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("is not the first task of a job array"),
        "{err}"
    );
}

/// An organisation's active jobs are capped, each task of an array
/// counted: one tenant cannot fill the scheduler and the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisations_active_jobs_are_capped() {
    let mut app = App::spawn(Db::Sqlite, "jobcap").await.unwrap();
    app.kill9();
    app.extra = vec!["--max-active-jobs-per-org".into(), "3".into()];
    app.start(None);
    let url = app.url.clone();
    let first = submit(&url, &["--array", "0-1"], &["sleep", "600"]);
    let one = submit(&url, &[], &["sleep", "600"]);
    // a fourth, or an array that would pass the cap: refused, saying why
    for extra in [&[][..], &["--array", "0-4"][..]] {
        let mut args = vec!["submit"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", "true"]);
        let (code, _, err) = cli(&url, &args);
        assert_eq!(code, Some(1));
        assert!(err.contains("too_many_jobs"), "{err}");
        assert!(err.contains("at most 3 at once"), "{err}");
    }
    // as jobs end, room comes back
    let (code, _, err) = cli(&url, &["cancel", &one]);
    assert_eq!(code, Some(0), "{err}");
    app.wait_state(one.parse().unwrap(), &["cancelled"], 15)
        .await;
    submit(&url, &[], &["true"]);
    let (code, _, err) = cli(&url, &["cancel", "--array", &first]);
    assert_eq!(code, Some(0), "{err}");
}

/// `#SBATCH --output`/`--error`: the job writes its streams there itself
/// (its account's rights, its working directory), patterns filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_and_error_directives_send_the_streams_to_files() {
    let app = App::spawn(Db::Sqlite, "batch_out").await.unwrap();
    let url = app.url.clone();
    let work = app.dir.join("outwork");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        work.join("job.sh"),
        "#!/bin/sh\n\
         #SBATCH --output=out-%j.txt\n\
         #SBATCH --error=err-%x-%a.txt\n\
         echo to-out\n\
         echo to-err >&2\n",
    )
    .unwrap();
    std::fs::write(
        work.join("arr.sh"),
        "#!/bin/sh\n#SBATCH --array=0-1\n#SBATCH -o a-%A_%a.out\necho task $GIGAFAB_ARRAY_TASK_ID; echo e >&2\n",
    )
    .unwrap();
    let (code, out, err) = cli_in(&work, &url, &["submit", "-o", "json", "job.sh"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["name"], "job.sh", "the script's name, not the shell's");
    let id = v["id"].as_i64().unwrap();
    let (code, logged, _) = cli(&url, &["logs", &id.to_string(), "-f"]);
    assert_eq!(
        (code, logged.as_str()),
        (Some(0), ""),
        "its output went to the file"
    );
    assert_eq!(
        std::fs::read_to_string(work.join(format!("out-{id}.txt"))).unwrap(),
        "to-out\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("err-job.sh-4294967294.txt")).unwrap(),
        "to-err\n"
    );
    // an array: `--output` alone takes both streams, one file per task
    let (code, out, err) = cli_in(&work, &url, &["submit", "-o", "json", "arr.sh"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let first = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_i64()
        .unwrap();
    for (k, task) in [(0, first), (1, first + 1)] {
        let (code, _, err) = cli(&url, &["logs", &task.to_string(), "-f"]);
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(
            std::fs::read_to_string(work.join(format!("a-{first}_{k}.out"))).unwrap(),
            format!("task {k}\ne\n")
        );
    }
    // a pattern gigafab cannot fill: refused at its line
    std::fs::write(
        work.join("bad.sh"),
        "#!/bin/sh\n#SBATCH --output=x-%q\ntrue\n",
    )
    .unwrap();
    let (code, _, err) = cli_in(&work, &url, &["submit", "bad.sh"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("bad.sh:2:") && err.contains("`%q`"), "{err}");
}
