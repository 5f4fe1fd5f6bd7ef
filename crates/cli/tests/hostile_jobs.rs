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

/// An executor over `root`, made 0711 as `gigafab serve` makes its jobs'
/// directory (whatever the umask).
fn executor(root: &Path) -> LocalExecutor {
    std::fs::create_dir_all(root).unwrap();
    chmod(root, 0o711);
    LocalExecutor::new(
        root.to_path_buf(),
        vec![env!("CARGO_BIN_EXE_gigafab").into(), "job-supervise".into()],
        Duration::from_millis(300),
    )
}

fn spec(job_id: i64, account: &str, script: &str) -> LaunchSpec {
    LaunchSpec {
        run_as: Some(account.into()),
        ..LaunchSpec::new(job_id, vec!["sh".into(), "-c".into(), script.into()])
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

/// Runs attacker job `a` to its end: it completes, prints `done`, and
/// no line says an attack `SUCCEEDED`. Its stdout and stderr.
fn attacks(ex: &LocalExecutor, a: &LaunchSpec) -> (String, String) {
    let h = ex.launch(a).unwrap();
    let rec = wait_exit(ex, a.job_id, &h, Duration::from_secs(30));
    let (out, err) = logs(ex, a.job_id);
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?}\n{out}\n{err}");
    assert!(out.contains("done"), "{out}\n{err}");
    assert!(!out.contains("SUCCEEDED"), "{out}");
    (out, err)
}

fn logs(ex: &LocalExecutor, job: i64) -> (String, String) {
    let (o, e) = ex.log_paths(job);
    (
        std::fs::read_to_string(o).unwrap_or_default(),
        std::fs::read_to_string(e).unwrap_or_default(),
    )
}

/// A fresh directory outside `/tmp` and `/var/tmp` (a job's are its own:
/// it does not see the host's; the repository itself may be under /tmp),
/// that the test accounts may traverse.
fn outside_tmp(tag: &str) -> std::path::PathBuf {
    let d = Path::new("/var/lib/gigafab-tests")
        .join("hostile-jobs")
        .join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    open_path(&d);
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
        for e in walk(out.parent().unwrap()) {
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
fn walk(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![root.to_path_buf()];
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

/// Issue 26, items 5 and 6: another tenant's processes, command lines,
/// mounts and loopback services, through the shared /proc and network;
/// and inputs in a store the accounts cannot traverse (0700, as created by
/// default), which a job must still read.
#[test]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
fn a_job_sees_no_other_jobs_processes_mounts_or_ports_and_reads_its_inputs() {
    require_root("a_job_sees_no_other_jobs_processes_mounts_or_ports_and_reads_its_inputs");
    test_account("gf-test-a");
    test_account("gf-test-b");
    let dir = outside_tmp("proc-net");
    // the store: root's, 0700, an input version in it
    let store = dir.join("catalog");
    let input = store.join("v/k0123456789abcdef");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("data.txt"), "b-input-content\n").unwrap();
    chmod(&store, 0o700);
    let ex = executor(&dir.join("jobs")).with_private_network(true);
    // as `gigafab serve` runs: what it makes is its own unless made otherwise
    let umask = unsafe { libc::umask(0o077) };
    // B: reads its input, serves on 127.0.0.1:29700, sleeps with a marker
    // in its command line
    let mut b = spec(
        1,
        "gf-test-b",
        "cat $GIGAFAB_INPUT_DATA/data.txt; echo at=$GIGAFAB_INPUT_DATA; \
         python3 -c 'import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", 29700)); s.listen(); print(\"listening\", flush=True); time.sleep(20)' b-marker-7391",
    );
    b.env = vec![("GIGAFAB_INPUT_DATA".into(), input.display().to_string())];
    b.read_only = vec![input.clone()];
    let hb = ex.launch(&b).unwrap();
    unsafe { libc::umask(umask) };
    let t0 = Instant::now();
    while !logs(&ex, 1).0.contains("listening") {
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", logs(&ex, 1));
        std::thread::sleep(Duration::from_millis(50));
    }
    let (out, _) = logs(&ex, 1);
    assert!(
        out.contains("b-input-content"),
        "B reads its own input: {out}"
    );
    assert!(
        !out.contains("catalog"),
        "B's input is at a mount point of its own: {out}"
    );
    // A: looks for B everywhere
    let a = spec(
        2,
        "gf-test-a",
        r#"
echo "procs: $(ls -d /proc/[0-9]* | wc -l)"
# (the patterns are classes, so that neither this script's text nor grep's
# own command line matches them)
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -q "b-marker-[7]391" && echo "ATTACK cmdline: SUCCEEDED"
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' | grep -q "jobs/[1] " && echo "ATTACK supervisor: SUCCEEDED"
grep -h "[c]atalog" /proc/[0-9]*/mountinfo 2>/dev/null | grep -q . && echo "ATTACK mountinfo: SUCCEEDED"
python3 -c '
import socket
s = socket.socket(); s.settimeout(2)
try:
    s.connect(("127.0.0.1", 29700)); print("ATTACK connect: SUCCEEDED")
except OSError as e:
    print("connect refused:", e)
t = socket.socket(); t.bind(("127.0.0.1", 29700)); t.listen(); print("own port: bound")
'
ip -o link 2>/dev/null | grep -v ' lo:' | grep -q . && echo "ATTACK host interfaces: SUCCEEDED"
echo done
"#,
    );
    let (out, err) = attacks(&ex, &a);
    assert!(out.contains("own port: bound"), "{out}\n{err}");
    let procs: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("procs: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    assert!(procs <= 5, "A sees {procs} processes: only its own");
    // B was undisturbed; the machine's loopback does not reach it either
    assert!(std::net::TcpStream::connect("127.0.0.1:29700").is_err());
    ex.cancel(1, &hb).unwrap();
    let rec = wait_exit(&ex, 1, &hb, Duration::from_secs(30));
    assert_eq!(rec.outcome, Outcome::Cancelled, "{rec:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 29: a replica in a network of its own is reached by the gateway
/// through its supervisor (a connection handed over a root-only socket),
/// and by no one else: not through the machine's loopback, not through
/// that socket by another tenant's job, not by a job of the same machine
/// that binds the port after it.
#[test]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
fn a_serving_job_is_reached_through_its_supervisor_alone() {
    use std::io::{BufRead, Write};
    require_root("a_serving_job_is_reached_through_its_supervisor_alone");
    test_account("gf-test-a");
    test_account("gf-test-b");
    let dir = outside_tmp("serve-net");
    let ex = executor(&dir.join("jobs")).with_private_network(true);
    // B serves a line echo on 127.0.0.1:29710 of its own network
    let mut b = spec(
        1,
        "gf-test-b",
        "exec python3 -c 'import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"127.0.0.1\", 29710)); s.listen(); print(\"listening\", flush=True)
while True:
    c, _ = s.accept(); f = c.makefile(\"rwb\")
    f.write(b\"echo \" + f.readline()); f.flush(); c.close()'",
    );
    b.serve_port = Some(29710);
    let hb = ex.launch(&b).unwrap();
    let t0 = Instant::now();
    while !logs(&ex, 1).0.contains("listening") {
        assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", logs(&ex, 1));
        std::thread::sleep(Duration::from_millis(50));
    }
    // the gateway's way in: the supervisor's socket, root's alone
    let reach = ex.reach(1, &hb, 29710).unwrap();
    let gigafab_exec::Reach::Socket(sock) = reach else {
        panic!("a job with a network of its own is reached through its supervisor: {reach:?}")
    };
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    assert!(meta.file_type().is_socket());
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o600));
    for n in 0..3 {
        let mut c = gigafab_exec::reach::connect(&sock, Duration::from_secs(5)).unwrap();
        writeln!(c, "hello {n}").unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c).read_line(&mut line).unwrap();
        assert_eq!(line, format!("echo hello {n}\n"));
    }
    // the machine's loopback does not reach it
    assert!(std::net::TcpStream::connect("127.0.0.1:29710").is_err());
    // A, another tenant: B's socket, and the port on its own loopback
    let a = spec(
        2,
        "gf-test-a",
        &format!(
            r#"python3 -c '
import socket
u = socket.socket(socket.AF_UNIX)
try:
    u.connect("{}"); u.settimeout(2)
    print("ATTACK socket: SUCCEEDED" if u.recv(16) else "socket: hung up")
except OSError as e:
    print("socket refused:", e)
t = socket.socket(); t.settimeout(2)
try:
    t.connect(("127.0.0.1", 29710)); print("ATTACK port: SUCCEEDED")
except OSError as e:
    print("port refused:", e)
'
echo done"#,
            sock.display()
        ),
    );
    let (out, _) = attacks(&ex, &a);
    assert!(out.contains("socket refused"), "{out}");
    // B is still served, and once it ends its socket is gone
    let c = gigafab_exec::reach::connect(&sock, Duration::from_secs(5));
    assert!(c.is_ok(), "{c:?}");
    ex.cancel(1, &hb).unwrap();
    let rec = wait_exit(&ex, 1, &hb, Duration::from_secs(30));
    assert_eq!(rec.outcome, Outcome::Cancelled, "{rec:?}");
    assert!(!sock.exists());
    assert!(gigafab_exec::reach::connect(&sock, Duration::from_secs(1)).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 3: space a job holds without its files' sizes showing
/// it (`fallocate --keep-size`, empty directories, removed files kept
/// open), and places outside its directory (`/run/lock`, the host's /tmp
/// through `workdir`).
#[test]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
fn disk_held_any_way_counts_toward_a_jobs_limit() {
    require_root("disk_held_any_way_counts_toward_a_jobs_limit");
    test_account("gf-test-a");
    let dir = outside_tmp("disk-tricks");
    let ex = executor(&dir.join("jobs"))
        .with_max_disk_bytes(10 << 20)
        .with_max_file_bytes(20 << 20);
    let tricks = [
        (1, "touch f; fallocate -n -l 400M f"),
        (2, "touch f; fallocate -n -l 400M f; sleep 20"),
        (
            3,
            "i=0; while [ $i -lt 4000 ]; do mkdir d$i; i=$((i+1)); done; sleep 20",
        ),
        (
            4,
            "exec 3>big; head -c 15000000 /dev/zero >&3; rm big; sleep 20",
        ),
    ];
    for (job, script) in tricks {
        let h = ex.launch(&spec(job, "gf-test-a", script)).unwrap();
        let rec = wait_exit(&ex, job, &h, Duration::from_secs(30));
        assert_eq!(
            rec.outcome,
            Outcome::Failed,
            "job {job} ({script}): {rec:?}"
        );
        assert!(rec.message.contains("disk limit"), "job {job}: {rec:?}");
    }
    // /run/lock and /tmp (even as the working directory) are the job's own
    let marker = format!("gf-host-{}", std::process::id());
    let mut s = spec(
        5,
        "gf-test-a",
        &format!("touch /run/lock/{marker} /tmp/{marker}-tmp && pwd && ls /tmp | wc -l"),
    );
    s.workdir = Some("/tmp".into());
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 5, &h, Duration::from_secs(30));
    let (out, err) = logs(&ex, 5);
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?} {out} {err}");
    assert!(!Path::new(&format!("/run/lock/{marker}")).exists());
    assert!(!Path::new(&format!("/tmp/{marker}-tmp")).exists());
    assert!(
        dir.join(format!("jobs/5/tmp/{marker}-tmp")).exists(),
        "its /tmp is its directory's tmp/: {out}"
    );
    // a job within its limit completes
    let h = ex
        .launch(&spec(
            6,
            "gf-test-a",
            "head -c 1000000 /dev/zero > f; mkdir d",
        ))
        .unwrap();
    let rec = wait_exit(&ex, 6, &h, Duration::from_secs(30));
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 7: a job without a process cap started 2,000 processes.
#[test]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
fn a_job_is_held_to_its_process_limit() {
    require_root("a_job_is_held_to_its_process_limit");
    test_account("gf-test-a");
    let dir = outside_tmp("pids");
    let cg = gigafab_exec::posix::jobs_cgroup(&format!("gigafab-test-pids-{}", std::process::id()))
        .expect("a writable cgroup v2 hierarchy");
    let ex = executor(&dir.join("jobs"))
        .with_cgroups(cg.clone())
        .with_max_pids(64);
    let h = ex
        .launch(&spec(
            1,
            "gf-test-a",
            "python3 -c '\nimport os, time\nn = 0\nfor i in range(300):\n    try:\n        if os.fork() == 0:\n            time.sleep(5); os._exit(0)\n        n += 1\n    except OSError:\n        break\nprint(\"alive=%d\" % n, flush=True)\nos._exit(0)\n'",
        ))
        .unwrap();
    let rec = wait_exit(&ex, 1, &h, Duration::from_secs(60));
    let (out, err) = logs(&ex, 1);
    let e = format!("{rec:?} {err}");
    let alive: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("alive="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{out}\n{e}"));
    assert!(
        (10..64).contains(&alive),
        "{alive} processes under a limit of 64\n{e}"
    );
    let _ = std::fs::remove_dir(&cg);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 4: jobs that ignore SIGTERM ran for their time limit and
/// then the whole grace, and the grace was charged though never reserved:
/// 10.4× the grant. The rule (never charged past the reservation) holds
/// for any grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_of_a_stopped_run_never_overruns_the_grant() {
    let dir = fresh_dir("grace-overrun");
    let data = dir.join("data");
    let mut args = base_args(&data);
    let at = args.iter().position(|a| a == "--kill-grace").unwrap();
    args[at + 1] = "3".into();
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    // 0.002 GPU-hours = 7.2 GPU-s
    let a = s
        .json(
            "POST",
            "/api/v1/allocations",
            TOKEN,
            Some(json!({"org": "default", "gpu_hours": 0.002})),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..7 {
        let (code, j) = s
            .call(
                "POST",
                "/api/v1/jobs",
                Some(TOKEN),
                Some(json!({"allocation": a, "gpus": 1, "type": "h100",
                "time_limit_s": 1, "command": ["sh", "-c", "trap '' TERM; sleep 60"]})),
            )
            .await;
        assert_eq!(code, 201, "{j}");
        ids.push(
            serde_json::from_str::<serde_json::Value>(&j).unwrap()["id"]
                .as_i64()
                .unwrap(),
        );
    }
    // each runs to its limit and the grace, or is cancelled once the grant
    // is spent while it waits
    let mut timed_out = 0;
    for id in &ids {
        let j = s
            .wait_state(TOKEN, *id, &["completed", "cancelled", "failed", "timeout"])
            .await;
        assert!(
            j["state"] == "timeout" || j["state"] == "cancelled",
            "{j:#}"
        );
        timed_out += usize::from(j["state"] == "timeout");
    }
    assert!(timed_out >= 2, "{timed_out} ran");
    let al = s
        .json("GET", &format!("/api/v1/allocations/{a}"), TOKEN, None)
        .await;
    let used = al["used_gpu_hours"].as_f64().unwrap();
    assert!(
        used <= 0.002 + 1e-9,
        "used {} GPU-s of a 7.2 GPU-s grant",
        used * 3600.0
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 7: a job without `memory_gb` allocated 2 GB with no
/// limit. Its limit is now its accelerators' share of its node's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
async fn a_job_without_a_memory_request_gets_its_share_of_the_node() {
    require_root("a_job_without_a_memory_request_gets_its_share_of_the_node");
    let dir = fresh_dir("default-memory");
    let data = dir.join("data");
    // 4 accelerators sharing 0.4 GB: 0.1 GB each
    let factory = dir.join("small-memory.toml");
    std::fs::write(
        &factory,
        "name = \"small-memory\"\n[[sites]]\nname = \"here\"\n[[sites.pools]]\nname = \"h100\"\n\
         accelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\ncpus_per_node = 8\n\
         memory_gb_per_node = 0.4\n",
    )
    .unwrap();
    let mut args = base_args(&data);
    args.extend(["--factory".into(), factory.display().to_string()]);
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let big = "b = b'x' * 400_000_000; print(len(b))";
    let submit = |gpus: u32, memory: Option<f64>| {
        let mut j = json!({"allocation": 1, "gpus": gpus, "command": ["python3", "-c", big]});
        if let Some(m) = memory {
            j["memory_gb"] = json!(m);
        }
        j
    };
    // one accelerator, no request: 0.1 GB, killed
    let a = s
        .json("POST", "/api/v1/jobs", TOKEN, Some(submit(1, None)))
        .await;
    let a = s
        .wait_state(TOKEN, a["id"].as_i64().unwrap(), &["completed", "failed"])
        .await;
    assert_eq!(a["state"], "failed", "ran past its share: {a:#}");
    // asking for what it needs, it completes
    let b = s
        .json("POST", "/api/v1/jobs", TOKEN, Some(submit(1, Some(1.0))))
        .await;
    let b = s
        .wait_state(TOKEN, b["id"].as_i64().unwrap(), &["completed", "failed"])
        .await;
    assert_eq!(b["state"], "completed", "{b:#}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
