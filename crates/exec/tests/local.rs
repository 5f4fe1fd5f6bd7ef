//! The local executor against real processes, with the `gigafab-supervise`
//! binary of this crate as the supervisor.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gigafab_exec::{
    AssignedAccel, DeviceVendor, ExecError, Executor, ExitRecord, LaunchSpec, LocalExecutor,
    Outcome, RunStatus,
};

const GRACE: Duration = Duration::from_millis(300);

fn root(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("gigafab-exec-tests")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn executor(root: &Path) -> LocalExecutor {
    LocalExecutor::new(
        root.to_path_buf(),
        vec![env!("CARGO_BIN_EXE_gigafab-supervise").into()],
        GRACE,
    )
}

fn spec(job_id: i64, command: &[&str]) -> LaunchSpec {
    LaunchSpec::new(job_id, command.iter().map(|s| s.to_string()).collect())
}

fn sh(job_id: i64, script: &str) -> LaunchSpec {
    spec(job_id, &["sh", "-c", script])
}

fn wait_exit(ex: &LocalExecutor, job: i64, handle: &str, within: Duration) -> ExitRecord {
    let t0 = Instant::now();
    loop {
        match ex.poll(job, handle).unwrap() {
            RunStatus::Running => {}
            RunStatus::Exited(record) => return record,
            RunStatus::Lost { message } => panic!("job {job} lost: {message}"),
        }
        assert!(
            t0.elapsed() < within,
            "job {job} still running after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path.as_ref()).unwrap_or_default()
}

/// Waits for a file holding a pid (written by a job) and returns the pid.
fn wait_pid_file(path: &Path) -> i32 {
    let t0 = Instant::now();
    loop {
        if let Ok(pid) = read(path).trim().parse() {
            return pid;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is gone (or a zombie) within a couple of seconds.
fn gone_soon(pid: i32) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) => {
                let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
                if state.is_some_and(|s| s.starts_with('Z')) {
                    return true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn completed_job_sees_its_environment() {
    let r = root("env");
    let ex = executor(&r);
    assert_eq!(ex.name(), "local");
    let accel = |node: &str, index, vendor| AssignedAccel {
        node: node.into(),
        index,
        vendor,
        slice: None,
    };
    let mut s = sh(
        11,
        "echo CUDA=$CUDA_VISIBLE_DEVICES; echo ROCR=[$ROCR_VISIBLE_DEVICES]; \
         echo ACC=$GIGAFAB_ACCELERATORS; echo JOB=$GIGAFAB_JOB_ID; echo FOO=$FOO; pwd -P",
    );
    s.accelerators = vec![
        accel("nv", 1, DeviceVendor::Nvidia),
        accel("nv", 3, DeviceVendor::Nvidia),
    ];
    // The accelerator variables win over the job's own environment.
    s.env = vec![
        ("FOO".into(), "bar baz".into()),
        ("CUDA_VISIBLE_DEVICES".into(), "0,1,2,3".into()),
    ];
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 11, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?}");
    assert_eq!(rec.exit_code, Some(0));
    assert_eq!(rec.signal, None);
    assert!(rec.ended_at_ms > 0);
    let (out, err) = ex.log_paths(11);
    assert_eq!(out, r.join("11").join("stdout.log"));
    assert_eq!(err, r.join("11").join("stderr.log"));
    let job_dir = fs::canonicalize(r.join("11")).unwrap();
    assert_eq!(
        read(&out),
        format!(
            "CUDA=1,3\nROCR=[]\nACC=nv/1,nv/3\nJOB=11\nFOO=bar baz\n{}\n",
            job_dir.display()
        )
    );
    assert_eq!(read(&err), "");
    assert!(r.join("11").join("supervisor.pid").exists());
    assert!(!r.join("11").join("status.json.tmp").exists());
    // Polling again reads the same record.
    assert_eq!(ex.poll(11, &h).unwrap(), RunStatus::Exited(rec));
}

#[test]
fn workdir_is_used() {
    let r = root("workdir");
    let wd = r.join("somewhere");
    fs::create_dir_all(&wd).unwrap();
    let ex = executor(&r);
    let mut s = spec(1, &["pwd", "-P"]);
    s.workdir = Some(wd.clone());
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 1, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Completed);
    let wd = fs::canonicalize(&wd).unwrap();
    assert_eq!(read(ex.log_paths(1).0).trim(), wd.to_str().unwrap());

    // A missing working directory fails the run clearly.
    let mut s = spec(2, &["pwd"]);
    s.workdir = Some(r.join("missing"));
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 2, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Failed);
    assert!(rec.message.contains("working directory"), "{}", rec.message);
    assert!(read(ex.log_paths(2).1).contains("working directory"));
}

#[test]
fn nonzero_exit_fails_and_stderr_is_captured() {
    let r = root("exit3");
    let ex = executor(&r);
    let h = ex
        .launch(&sh(3, "echo out; echo oops >&2; exit 3"))
        .unwrap();
    let rec = wait_exit(&ex, 3, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Failed);
    assert_eq!(rec.exit_code, Some(3));
    assert_eq!(rec.message, "exit code 3");
    let (out, err) = ex.log_paths(3);
    assert_eq!(read(out), "out\n");
    assert_eq!(read(err), "oops\n");
}

#[test]
fn killed_by_a_signal_fails() {
    let r = root("selfkill");
    let ex = executor(&r);
    let h = ex.launch(&sh(4, "kill -KILL $$")).unwrap();
    let rec = wait_exit(&ex, 4, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Failed);
    assert_eq!((rec.exit_code, rec.signal), (None, Some(9)));
    assert_eq!(rec.message, "killed by signal 9");
}

#[test]
fn time_limit_stops_the_job() {
    let r = root("timeout");
    let ex = executor(&r);
    let mut s = spec(5, &["sleep", "30"]);
    s.time_limit_s = 1;
    let t0 = Instant::now();
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 5, &h, Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(rec.outcome, Outcome::TimedOut, "{rec:?}");
    assert_eq!(rec.signal, Some(15));
    assert_eq!(rec.message, "time limit of 1 s reached");
    let err = read(ex.log_paths(5).1);
    assert!(
        err.contains("gigafab: time limit of 1 s reached; sent SIGTERM"),
        "{err}"
    );
    assert!(!err.contains("SIGKILL"), "{err}");
}

#[test]
fn ignored_sigterm_gets_sigkill_after_grace() {
    let r = root("trap");
    let ex = executor(&r);
    let mut s = sh(6, "trap '' TERM; sleep 30");
    s.time_limit_s = 1;
    let t0 = Instant::now();
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 6, &h, Duration::from_secs(5));
    let took = t0.elapsed();
    assert!(took >= Duration::from_secs(1) + GRACE, "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(rec.outcome, Outcome::TimedOut);
    assert_eq!(rec.signal, Some(9));
    assert!(rec.message.contains("SIGKILL"), "{}", rec.message);
    let err = read(ex.log_paths(6).1);
    assert!(err.contains("sent SIGKILL"), "{err}");
}

#[test]
fn cancel_stops_the_job_and_its_grandchildren() {
    let r = root("cancel");
    let ex = executor(&r);
    let h = ex
        .launch(&sh(7, "sleep 30 & echo $! > bg.pid; wait"))
        .unwrap();
    let bg = wait_pid_file(&r.join("7").join("bg.pid"));
    assert_eq!(ex.poll(7, &h).unwrap(), RunStatus::Running);
    let t0 = Instant::now();
    ex.cancel(7, &h).unwrap();
    ex.cancel(7, &h).unwrap(); // idempotent
    let rec = wait_exit(&ex, 7, &h, Duration::from_secs(5));
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(rec.outcome, Outcome::Cancelled, "{rec:?}");
    assert_eq!(rec.message, "cancel requested");
    assert!(gone_soon(bg), "grandchild {bg} survived the cancel");
    assert!(read(ex.log_paths(7).1).contains("gigafab: cancel requested; sent SIGTERM"));
    // Cancelling a finished run is harmless.
    ex.cancel(7, &h).unwrap();
}

#[test]
fn leftover_processes_are_stopped_when_the_command_exits() {
    let r = root("leftover");
    let ex = executor(&r);
    let h = ex.launch(&sh(8, "sleep 30 & echo $! > bg.pid")).unwrap();
    let rec = wait_exit(&ex, 8, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Completed);
    let bg = wait_pid_file(&r.join("8").join("bg.pid"));
    assert!(gone_soon(bg), "background process {bg} survived the job");
    assert!(read(ex.log_paths(8).1).contains("left processes behind"));
}

#[test]
fn command_not_found_fails_clearly() {
    let r = root("notfound");
    let ex = executor(&r);
    let h = ex
        .launch(&spec(9, &["gigafab-no-such-command", "x"]))
        .unwrap();
    let rec = wait_exit(&ex, 9, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Failed);
    assert_eq!((rec.exit_code, rec.signal), (None, None));
    assert!(
        rec.message
            .starts_with("cannot start `gigafab-no-such-command`: "),
        "{}",
        rec.message
    );
    assert!(rec.message.contains("No such file"), "{}", rec.message);
    assert!(read(ex.log_paths(9).1).contains(&rec.message));

    // Not executable.
    let script = r.join("script.txt");
    fs::write(&script, "echo hi\n").unwrap();
    let h = ex.launch(&spec(10, &[script.to_str().unwrap()])).unwrap();
    let rec = wait_exit(&ex, 10, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Failed);
    assert!(rec.message.contains("ermission denied"), "{}", rec.message);
}

#[test]
fn adopt_after_restart() {
    let r = root("adopt");
    let first = executor(&r);
    let h = first
        .launch(&sh(
            12,
            "while [ ! -e go ]; do sleep 0.05; done; echo finished",
        ))
        .unwrap();
    wait_pid_file(&r.join("12").join("supervisor.pid"));
    drop(first);

    let second = executor(&r);
    assert_eq!(
        second.adopt(12, Some(&h)).unwrap(),
        (Some(h.clone()), RunStatus::Running)
    );
    assert_eq!(
        second.adopt(12, None).unwrap(),
        (Some(h.clone()), RunStatus::Running)
    );
    assert_eq!(second.poll(12, &h).unwrap(), RunStatus::Running);
    fs::write(r.join("12").join("go"), "").unwrap();
    let rec = wait_exit(&second, 12, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Completed);
    assert_eq!(read(second.log_paths(12).0), "finished\n");
    assert_eq!(
        second.adopt(12, None).unwrap(),
        (None, RunStatus::Exited(rec.clone()))
    );
    assert_eq!(
        second.adopt(12, Some(&h)).unwrap(),
        (Some(h.clone()), RunStatus::Exited(rec))
    );
}

#[test]
fn adopted_run_can_be_cancelled() {
    let r = root("adopt-cancel");
    let first = executor(&r);
    let h = first.launch(&spec(13, &["sleep", "30"])).unwrap();
    drop(first);
    let second = executor(&r);
    assert_eq!(second.poll(13, &h).unwrap(), RunStatus::Running);
    second.cancel(13, &h).unwrap();
    let rec = wait_exit(&second, 13, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Cancelled);
}

#[test]
fn no_trace_and_dead_handles_are_lost() {
    let r = root("lost");
    let ex = executor(&r);
    assert_eq!(
        ex.adopt(14, None).unwrap(),
        (
            None,
            RunStatus::Lost {
                message: "never started".into()
            }
        )
    );
    let lost = RunStatus::Lost {
        message: "supervisor vanished without recording an exit".into(),
    };
    // A pid that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    assert_eq!(ex.poll(14, &format!("{pid}:1")).unwrap(), lost);
    // A live pid whose start time does not match (pid reuse).
    let me = std::process::id();
    assert_eq!(ex.poll(14, &format!("{me}:1")).unwrap(), lost);
    assert_eq!(
        ex.adopt(14, Some(&format!("{pid}:1"))).unwrap(),
        (Some(format!("{pid}:1")), lost)
    );
}

#[test]
fn killed_supervisor_is_lost() {
    let r = root("killed-supervisor");
    let ex = executor(&r);
    let h = ex
        .launch(&sh(15, "while [ ! -e go ]; do sleep 0.05; done"))
        .unwrap();
    let pid: i32 = h.split(':').next().unwrap().parse().unwrap();
    wait_pid_file(&r.join("15").join("supervisor.pid"));
    assert_eq!(ex.poll(15, &h).unwrap(), RunStatus::Running);
    // SAFETY: plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let t0 = Instant::now();
    let status = loop {
        match ex.poll(15, &h).unwrap() {
            RunStatus::Running if t0.elapsed() < Duration::from_secs(5) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => break other,
        }
    };
    // Let the orphaned job end.
    fs::write(r.join("15").join("go"), "").unwrap();
    let lost = RunStatus::Lost {
        message: "supervisor vanished without recording an exit".into(),
    };
    assert_eq!(status, lost);
    assert_eq!(ex.adopt(15, None).unwrap(), (None, lost));
}

#[test]
fn signalled_supervisor_cancels_the_job() {
    let r = root("term-supervisor");
    let ex = executor(&r);
    let h = ex.launch(&spec(16, &["sleep", "30"])).unwrap();
    let pid: i32 = h.split(':').next().unwrap().parse().unwrap();
    wait_pid_file(&r.join("16").join("supervisor.pid"));
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: plain syscall on our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let rec = wait_exit(&ex, 16, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Cancelled);
    assert_eq!(rec.message, "supervisor received signal 15");
}

#[test]
fn relaunch_replaces_the_previous_record() {
    let r = root("relaunch");
    let ex = executor(&r);
    let h = ex.launch(&sh(17, "echo first; exit 3")).unwrap();
    assert_eq!(
        wait_exit(&ex, 17, &h, Duration::from_secs(5)).exit_code,
        Some(3)
    );
    ex.cancel(17, &h).unwrap(); // a stale marker must not cancel the next run
    let h = ex.launch(&sh(17, "echo second")).unwrap();
    let rec = wait_exit(&ex, 17, &h, Duration::from_secs(5));
    assert_eq!(rec.outcome, Outcome::Completed);
    assert_eq!(read(ex.log_paths(17).0), "first\nsecond\n");
}

#[test]
fn running_job_cannot_be_launched_twice() {
    let r = root("twice");
    let ex = executor(&r);
    let h = ex.launch(&spec(18, &["sleep", "30"])).unwrap();
    wait_pid_file(&r.join("18").join("supervisor.pid"));
    let err = ex.launch(&spec(18, &["true"])).unwrap_err();
    assert!(
        matches!(&err, ExecError::Launch { job: 18, message } if message.contains("already running")),
        "{err}"
    );
    ex.cancel(18, &h).unwrap();
    assert_eq!(
        wait_exit(&ex, 18, &h, Duration::from_secs(5)).outcome,
        Outcome::Cancelled
    );
}

#[test]
fn bad_input_is_an_error() {
    let r = root("bad");
    let ex = executor(&r);
    for cmd in [&[][..], &[""][..]] {
        let err = ex.launch(&spec(19, cmd)).unwrap_err();
        assert!(matches!(err, ExecError::Launch { job: 19, .. }), "{err}");
    }
    let mut s = spec(19, &["true"]);
    s.env = vec![("A=B".into(), "c".into())];
    assert!(matches!(ex.launch(&s), Err(ExecError::Launch { .. })));
    for bad in ["", "nope", "12", "0:1", "-1:1", "1:x"] {
        assert!(matches!(
            ex.poll(19, bad),
            Err(ExecError::BadHandle { job: 19, .. })
        ));
        assert!(matches!(
            ex.cancel(19, bad),
            Err(ExecError::BadHandle { .. })
        ));
        assert!(matches!(
            ex.adopt(19, Some(bad)),
            Err(ExecError::BadHandle { .. })
        ));
    }
    // Cancelling a job that has no directory names the path.
    let err = ex.cancel(20, "1:1").unwrap_err();
    assert!(err.to_string().contains("cancel"), "{err}");

    let no_supervisor = LocalExecutor::new(
        r.clone(),
        vec!["/nonexistent/gigafab".into(), "job-supervise".into()],
        GRACE,
    );
    let err = no_supervisor.launch(&spec(21, &["true"])).unwrap_err();
    assert!(err.to_string().contains("cannot start supervisor"), "{err}");
    let empty = LocalExecutor::new(r, vec![], GRACE);
    assert!(matches!(
        empty.launch(&spec(22, &["true"])),
        Err(ExecError::Launch { .. })
    ));
}

/// Memory and CPU limits go to the run's cgroup (a directory standing in
/// for one here: its files are written as the kernel's would be); where a
/// controller's file is missing the job's stderr says the limit is not
/// enforced.
#[test]
fn memory_and_cpu_limits_are_written_to_the_runs_cgroup() {
    let r = root("limits");
    let cg = r.join("cg");
    let job = cg.join("job-1");
    fs::create_dir_all(&job).unwrap();
    for f in ["cgroup.procs", "memory.max", "cpu.max"] {
        fs::write(job.join(f), "").unwrap();
    }
    let ex = executor(&r.join("jobs")).with_cgroups(cg.clone());
    let mut s = sh(1, "echo ran");
    s.memory_bytes = Some(2_000_000_000);
    s.cpus = Some(1.5);
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 1, &h, Duration::from_secs(20));
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?}");
    assert_eq!(
        fs::read_to_string(job.join("memory.max")).unwrap(),
        "2000000000"
    );
    assert_eq!(
        fs::read_to_string(job.join("cpu.max")).unwrap(),
        "150000 100000"
    );
    // the command entered the cgroup before it ran
    assert_eq!(fs::read_to_string(job.join("cgroup.procs")).unwrap(), "0");
    // no cpu.max here: said, not silently dropped
    let job2 = cg.join("job-2");
    fs::create_dir_all(&job2).unwrap();
    for f in ["cgroup.procs", "memory.max"] {
        fs::write(job2.join(f), "").unwrap();
    }
    let mut s = sh(2, "true");
    s.cpus = Some(2.0);
    let h = ex.launch(&s).unwrap();
    wait_exit(&ex, 2, &h, Duration::from_secs(20));
    let err = fs::read_to_string(r.join("jobs/2/stderr.log")).unwrap();
    // said, unless the machine's legacy (v1) cpu controller took the limit
    assert!(
        err.contains("CPU limit not enforced")
            || gigafab_exec::posix::cgroup1_mount("cpu").is_some(),
        "{err}"
    );
    let _ = fs::remove_dir_all(&r);
}

#[test]
#[ignore = "needs root: read-only binds in a mount namespace (cargo test -- --include-ignored, as root)"]
fn inputs_are_read_only_even_for_root() {
    let r = root("read-only");
    let input = r.join("input");
    fs::create_dir_all(input.join("sub")).unwrap();
    fs::write(input.join("sub/data"), "original\n").unwrap();
    let ex = executor(&r.join("jobs"));
    let mut s = sh(
        41,
        &format!(
            "cat {0}/sub/data; echo x > {0}/sub/data && echo WROTE; touch {0}/new && echo MADE; rm -f {0}/sub/data && echo REMOVED; echo done",
            input.display()
        ),
    );
    s.read_only = vec![input.clone()];
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 41, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?}");
    let (out, err) = ex.log_paths(41);
    let out = read(&out);
    assert_eq!(out, "original\ndone\n", "stderr: {}", read(&err));
    assert!(
        read(&err).contains("Read-only file system"),
        "{}",
        read(&err)
    );
    // the files are untouched outside the job, and writable there
    assert_eq!(
        fs::read_to_string(input.join("sub/data")).unwrap(),
        "original\n"
    );
    assert!(!input.join("new").exists());
    fs::write(input.join("sub/data"), "changed by the owner").unwrap();
}

/// Issue 31: an AMD partition slice runs only on a device in its pool's
/// partition mode; one AMD SMI reports in another (SPX where the pool is
/// CPX: its partition numbering is not there) fails to launch, saying how
/// to set the mode. A mode nobody could read launches as before.
#[test]
fn a_partition_slice_on_a_device_in_another_mode_is_refused() {
    let dir = root("partition-mode");
    let ex = executor(&dir);
    let accel = |mode: Option<&str>| AssignedAccel {
        node: "mi-0".into(),
        index: 9,
        vendor: DeviceVendor::Amd,
        slice: Some(gigafab_exec::AssignedSlice {
            kind: "partition".into(),
            name: "cpx".into(),
            slot: 9,
            of: 8,
            memory_mib: 24576,
            uuid: None,
            gpu_instance: None,
            compute_instance: None,
            gpu_minor: None,
            device_mode: mode.map(Into::into),
        }),
    };
    let mut s = spec(1, &["true"]);
    s.accelerators = vec![accel(Some("SPX"))];
    let e = ex.launch(&s).unwrap_err().to_string();
    assert!(
        e.contains("partition 9 is on GPU 1, which is in SPX mode, not the pool's CPX")
            && e.contains("amd-smi set --gpu 1 --compute-partition CPX"),
        "{e}"
    );
    for mode in [Some("CPX"), None] {
        let mut s = spec(2, &["true"]);
        s.accelerators = vec![accel(mode)];
        let h = ex.launch(&s).unwrap();
        let r = wait_exit(&ex, 2, &h, Duration::from_secs(10));
        assert_eq!(r.outcome, Outcome::Completed, "{r:?}");
    }
}

/// Issue 31: what a MIG job sees of NVIDIA's capability directory is its
/// own capabilities alone, read-only, and no set-user-ID helper can make
/// it more: files there on the host (a neighbour's instance, MIG's
/// configuration) are not seen. Capabilities stand in as devices with
/// /dev/null's numbers (major 1, minor 3).
#[test]
#[ignore = "needs root: a mount namespace (cargo test -- --include-ignored, as root)"]
fn a_mig_job_sees_only_its_own_capabilities() {
    let r = root("caps-mask");
    let (caps, table) = (r.join("caps"), r.join("capabilities"));
    fs::create_dir_all(&caps).unwrap();
    for m in 1..=6 {
        fs::write(caps.join(format!("nvidia-cap{m}")), "a neighbour's\n").unwrap();
    }
    for (path, minor) in [("gpu0/mig/gi1/access", 3), ("gpu0/mig/gi1/ci0/access", 4)] {
        let f = table.join(path);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(
            f,
            format!("DeviceFileMinor: {minor}\nDeviceFileMode: 292\n"),
        )
        .unwrap();
    }
    let devices = r.join("devices");
    fs::write(&devices, "Character devices:\n  1 nvidia-caps\n").unwrap();
    let ex = executor(&r.join("jobs")).with_device_isolation(gigafab_exec::DeviceFiles {
        nvidia: r.join("nv{index}").display().to_string(),
        amd: r.join("render{render}").display().to_string(),
        nvidia_caps: caps.clone(),
        nvidia_capabilities: table,
        proc_devices: devices,
    });
    let mut s = sh(
        51,
        &format!(
            "ls {0}; stat -c '%F %a' {0}/nvidia-cap3; touch {0}/x && echo MADE; grep NoNewPrivs /proc/self/status",
            caps.display()
        ),
    );
    s.accelerators = vec![AssignedAccel {
        node: "n0".into(),
        index: 0,
        vendor: DeviceVendor::Nvidia,
        slice: Some(gigafab_exec::AssignedSlice {
            kind: "mig".into(),
            name: "1g.10gb".into(),
            slot: 0,
            of: 7,
            memory_mib: 10240,
            uuid: Some("MIG-a".into()),
            gpu_instance: Some(1),
            compute_instance: Some(0),
            gpu_minor: Some(0),
            device_mode: None,
        }),
    }];
    let h = ex.launch(&s).unwrap();
    let rec = wait_exit(&ex, 51, &h, Duration::from_secs(10));
    assert_eq!(rec.outcome, Outcome::Completed, "{rec:?}");
    let (out, err) = ex.log_paths(51);
    let out = read(&out);
    assert_eq!(
        out,
        "nvidia-cap3\nnvidia-cap4\ncharacter special file 444\nNoNewPrivs:\t1\n",
        "stderr: {}",
        read(&err)
    );
    assert!(
        read(&err).contains("Read-only file system"),
        "{}",
        read(&err)
    );
    // the host's directory is as it was
    assert_eq!(fs::read_dir(&caps).unwrap().count(), 6);
}
