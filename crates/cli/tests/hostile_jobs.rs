//! The hostile-tenant suite, second part: what a tenant's job tried, as
//! root would run it, to reach root, another tenant, or more than its share
//! (files, disk, /proc, network, memory, processes, its allocation). Each
//! attack must fail while the job itself still works.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use gigafab_exec::{Executor, ExitRecord, LaunchSpec, LocalExecutor, Outcome, RunStatus};
use serde_json::json;

fn executor(root: &Path) -> LocalExecutor {
    LocalExecutor::new(
        root.to_path_buf(),
        vec![env!("CARGO_BIN_EXE_gigafab").into(), "job-supervise".into()],
        Duration::from_millis(300),
    )
}

fn spec(job_id: i64, account: &str, script: &str) -> LaunchSpec {
    LaunchSpec {
        job_id,
        command: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![],
        accelerators: vec![],
        time_limit_s: 60,
        workdir: None,
        accel_type: None,
        gpus: 0,
        per_node: 0,
        account: None,
        site: None,
        run_as: Some(account.into()),
        grant_gpu_minutes: None,
        memory_bytes: None,
        cpus: None,
        retry: false,
        read_only: vec![],
    }
}

fn wait_exit(ex: &LocalExecutor, job: i64, handle: &str, within: Duration) -> ExitRecord {
    let t0 = Instant::now();
    loop {
        match ex.poll(job, handle).unwrap() {
            RunStatus::Running => {}
            RunStatus::Exited(record) => return record,
            RunStatus::Lost { message } => panic!("job {job} lost: {message}"),
        }
        assert!(t0.elapsed() < within, "job {job} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn logs(ex: &LocalExecutor, job: i64) -> (String, String) {
    let (o, e) = ex.log_paths(job);
    (
        std::fs::read_to_string(o).unwrap_or_default(),
        std::fs::read_to_string(e).unwrap_or_default(),
    )
}

/// A fresh directory outside `/tmp` (a job's `/tmp` is its own: it does
/// not see the host's).
fn outside_tmp(tag: &str) -> std::path::PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hostile-jobs")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes every directory from `/` down to `p` traversable by others (a
/// test directory under a 0700 parent would keep the accounts out).
fn open_path(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut cur = std::path::PathBuf::new();
    for c in p.components() {
        cur.push(c);
        if let Ok(m) = std::fs::metadata(&cur)
            && m.is_dir()
            && m.permissions().mode() & 0o001 == 0
        {
            chmod(&cur, m.permissions().mode() | 0o011);
        }
    }
}

/// A shared library whose constructor leaves `ran-as-<euid>` in
/// `$MARK_DIR`: what an attacker preloads into whatever loads it.
fn evil_library(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("evil.c");
    std::fs::write(
        &src,
        r#"#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void evil(void) {
    const char *d = getenv("MARK_DIR");
    if (!d) return;
    char p[4096];
    snprintf(p, sizeof p, "%s/ran-as-%d", d, (int)geteuid());
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    if (fd >= 0) close(fd);
}
"#,
    )
    .unwrap();
    let so = dir.join("evil.so");
    let st = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
        .expect("cc (a C compiler) is needed to build the attack");
    assert!(st.success());
    chmod(&so, 0o755);
    so
}

/// Issue 26, item 1: a job's `LD_PRELOAD` used to be applied to its
/// supervisor, which runs as root: the library ran as uid 0.
#[test]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
fn a_jobs_environment_never_reaches_its_privileged_supervisor() {
    require_root("a_jobs_environment_never_reaches_its_privileged_supervisor");
    let (uid, _) = test_account("gf-test-a");
    let dir = outside_tmp("ld-preload");
    open_path(&dir);
    let so = evil_library(&dir);
    let marks = dir.join("marks");
    std::fs::create_dir(&marks).unwrap();
    chmod(&marks, 0o777);
    let ex = executor(&dir.join("jobs"));
    for (job, var) in [(1, "LD_PRELOAD"), (2, "LD_AUDIT")] {
        let mut s = spec(job, "gf-test-a", "echo ran");
        s.env = vec![
            (var.into(), so.display().to_string()),
            ("MARK_DIR".into(), marks.display().to_string()),
        ];
        let h = ex.launch(&s).unwrap();
        let rec = wait_exit(&ex, job, &h, Duration::from_secs(20));
        assert_eq!(
            rec.outcome,
            Outcome::Completed,
            "{rec:?} {:?}",
            logs(&ex, job)
        );
        assert_eq!(logs(&ex, job).0, "ran\n");
    }
    let seen: Vec<String> = std::fs::read_dir(&marks)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !seen.contains(&"ran-as-0".to_string()),
        "the tenant's library ran as root: {seen:?}"
    );
    // the variable still reaches the job's own processes (as the account)
    assert!(
        seen.contains(&format!("ran-as-{uid}")),
        "the job's own environment was lost: {seen:?}"
    );
    // the environment file is the server's alone
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join("jobs/1/env")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o077), (0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The second line: the loader's variables are refused at submit, with a
/// clear error; `LD_LIBRARY_PATH` (GPU software needs it) is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loader_variables_are_refused_at_submit() {
    let dir = fresh_dir("loader-env");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    for var in ["LD_PRELOAD", "LD_AUDIT", "GCONV_PATH", "GLIBC_TUNABLES"] {
        let (code, body) = s
            .call(
                "POST",
                "/api/v1/jobs",
                Some(TOKEN),
                Some(json!({"allocation": 1, "gpus": 1, "command": ["true"],
                    "env": {var: "/tmp/x"}})),
            )
            .await;
        assert_eq!(code, 422, "{var}: {body}");
        assert!(body.contains(var) && body.contains("env"), "{body}");
    }
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/jobs",
            Some(TOKEN),
            Some(json!({"allocation": 1, "gpus": 1, "command": ["true"],
                "env": {"LD_LIBRARY_PATH": "/opt/cuda/lib64"}})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 2: registering a job's output as a model used to chmod
/// each file through its path, following links: a process of the same
/// account, its working directory kept inside the output tree, swapped a
/// file for a link to a root-only file while the server walked, and the
/// root file became world-readable. The server's whole path (take, hash,
/// refuse hard links, adopt) runs here against that attacker, round after
/// round, while it loops its swap.
#[test]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
fn registering_an_output_never_follows_a_link_the_tenant_swaps_in() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    require_root("registering_an_output_never_follows_a_link_the_tenant_swaps_in");
    let (uid, gid) = test_account("gf-test-a");
    let dir = outside_tmp("output-race");
    open_path(&dir);
    let canary = dir.join("canary");
    std::fs::write(&canary, "root only").unwrap();
    chmod(&canary, 0o600);
    let store = dir.join("store");
    let staging = dir.join("staging");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    chmod(&staging, 0o700);
    let blobs = gigafab_catalog::store::Blobs::Dir(store.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    const FILES: usize = 2_000;
    const ROUNDS: usize = 12;
    let mut swaps = 0usize;
    for round in 0..ROUNDS {
        // the job's output: the account's, a subdirectory the attacker
        // stays in
        let out = dir.join(format!("work-{round}/output"));
        let sub = out.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..FILES {
            std::fs::write(sub.join(format!("f{i}")), "x").unwrap();
        }
        for e in walk(&out.parent().unwrap().to_path_buf()) {
            std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).unwrap();
        }
        chmod(out.parent().unwrap(), 0o755);
        let last = format!("f{}", FILES - 1);
        let mut attacker = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while :; do rm -f {last} && ln -s {c} {last} && echo swap; rm -f {last}; echo x > {last}; done",
                c = canary.display()
            ))
            .current_dir(&sub)
            .uid(uid)
            .gid(gid)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30));
        // what the server does with a finished job's output
        let taken = staging.join(format!("output-{round}"));
        std::fs::rename(&out, &taken).unwrap();
        let result = (|| -> Result<(), String> {
            gigafab_catalog::take_tree(&taken).map_err(|e| e.to_string())?;
            let m = gigafab_catalog::hash_tree(&taken, 2).map_err(|e| e.to_string())?;
            for f in &m.files {
                let md = std::fs::symlink_metadata(taken.join(&f.path)).unwrap();
                if md.nlink() > 1 {
                    return Err("hard link".into());
                }
            }
            let key = gigafab_catalog::store::new_key();
            rt.block_on(blobs.adopt_tree(&taken, &m, &key))
                .map_err(|e| e.to_string())
        })();
        let _ = attacker.kill();
        let out = attacker.wait_with_output().unwrap();
        swaps += String::from_utf8_lossy(&out.stdout).lines().count();
        let m = std::fs::metadata(&canary).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o7777),
            (0, 0o600),
            "round {round}: the root-only file was changed ({result:?})"
        );
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "root only");
        // whatever was taken is the server's: the account reaches none of it
        if std::fs::symlink_metadata(&taken).is_ok() {
            for e in walk(&taken) {
                let md = std::fs::symlink_metadata(&e).unwrap();
                assert!(
                    md.uid() == 0 || md.file_type().is_symlink(),
                    "{}: still the account's",
                    e.display()
                );
            }
            gigafab_catalog::store::remove_tree(&taken);
        }
    }
    assert!(swaps > ROUNDS, "the attacker hardly ran: {swaps} swaps");
    gigafab_catalog::store::remove_tree(&store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every path under `root` (it included), links not followed.
fn walk(root: &std::path::PathBuf) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.clone()];
    let mut i = 0;
    while i < out.len() {
        if std::fs::symlink_metadata(&out[i]).is_ok_and(|m| m.is_dir())
            && let Ok(rd) = std::fs::read_dir(&out[i])
        {
            let more: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            out.extend(more);
        }
        i += 1;
    }
    out
}
