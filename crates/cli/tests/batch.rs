//! Batch work as Slurm users do it, against the real binary: `logs -f`
//! ends with the job's state and exits with its exit code; `logs` of a job
//! that waits says why.

#[path = "common/app.rs"]
#[macro_use]
mod app;
#[path = "common/openapi.rs"]
mod openapi;

use app::{App, Db, TOKEN};
use std::process::Command;

/// Runs the CLI against `url`: (exit code, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args(args)
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
