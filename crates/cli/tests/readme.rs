//! The README's commands work as written, from a directory that holds
//! nothing of the repository: every ```sh block of README.md is run with
//! bash in a fresh empty directory, with this build's `gigafab` first on
//! PATH. Two adaptations, both said here: `cargo run --release -p gigafab --`
//! becomes `gigafab` (this test already runs a build of it) and other
//! `cargo` lines are left out; workloads of more than 5,000 jobs are cut to
//! 2,000 (a debug build; the full figures are in BENCHMARKS.md).
//! ```shell blocks need a server or a Slurm cluster: tests/serve.rs and
//! tests/slurm.rs cover them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn readme() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    std::fs::read_to_string(p).unwrap()
}

/// The ```sh blocks, each as (first line number, script).
fn sh_blocks(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut cur {
            None if line.trim_end() == "```sh" => cur = Some((i + 2, String::new())),
            Some(_) if line.trim_end() == "```" => out.push(cur.take().unwrap()),
            Some((_, s)) => {
                s.push_str(line);
                s.push('\n');
            }
            None => {}
        }
    }
    out
}

/// The adaptations said at the top.
fn adapt(script: &str) -> String {
    let joined = script.replace("\\\n", " ");
    let mut out = String::new();
    for line in joined.lines() {
        let t = line.trim_start();
        let line = if let Some(rest) = t.strip_prefix("cargo run --release -p gigafab -- ") {
            format!("gigafab {rest}")
        } else if t.starts_with("cargo ") {
            continue;
        } else {
            line.to_string()
        };
        let words: Vec<String> = line.split(' ').map(str::to_string).collect();
        let mut fixed = words.clone();
        for (k, w) in words.iter().enumerate() {
            if w == "--jobs"
                && let Some(n) = words.get(k + 1).and_then(|n| n.parse::<u64>().ok())
                && n > 5000
            {
                fixed[k + 1] = "2000".into();
            }
        }
        out.push_str(&fixed.join(" "));
        out.push('\n');
    }
    out
}

fn fresh_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("gigafab-readme-{}/a/b", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn every_sh_block_of_the_readme_runs_from_an_empty_directory() {
    let text = readme();
    let blocks = sh_blocks(&text);
    assert!(
        blocks.len() >= 5,
        "found only {} ```sh blocks",
        blocks.len()
    );
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_gigafab"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = fresh_dir();
    for (line, script) in &blocks {
        let script = adapt(script);
        let o = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .env("PATH", &path)
            .env_remove("GIGAFAB_SERVER")
            .env_remove("GIGAFAB_TOKEN")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success(),
            "README.md:{line}: the block failed ({}):\n{script}\n--- stderr:\n{err}",
            o.status
        );
        assert!(!err.contains("error:"), "README.md:{line}:\n{err}");
        assert!(!err.contains("panicked"), "README.md:{line}:\n{err}");
    }
    // what the blocks say they make
    for f in ["gavel.csv", "gavel.svg", "giga.csv", "flex.csv", "flex.svg"] {
        assert!(dir.join(f).is_file(), "{f} was not written");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["jobs_submitted"], 1500);
    assert_eq!(r["measured_jobs"], 500);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap());
}

#[test]
fn the_readme_reads_nothing_outside_the_repository() {
    let text = readme();
    for (i, line) in text.lines().enumerate() {
        assert!(
            // no path that climbs out of the repository
            !line.contains("../"),
            "README.md:{}: `{line}` reads outside the repository",
            i + 1
        );
    }
    // and the adaptation is what the header says
    assert_eq!(
        adapt(
            "cargo run --release -p gigafab -- sim\ncargo build\ngigafab x --jobs 100000 \\\n  --y 1\n"
        ),
        "gigafab sim\ngigafab x --jobs 2000    --y 1\n"
    );
}
