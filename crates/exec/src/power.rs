//! Powering nodes down and up (idle power-down, as Slurm's power saving).
//!
//! The scheduler decides which nodes go down and which come back; a
//! [`NodePower`] carries it out on the machines: Slurm's own power saving
//! (`scontrol update nodename=... state=power_down|power_up`, which runs the
//! cluster's `SuspendProgram`/`ResumeProgram`), or the programs a factory
//! names for a site (`suspend_program`, `resume_program`: run with the node
//! names as arguments, e.g. IPMI or a BMC's Redfish API). [`RecordingPower`]
//! is the fake tests use to see the calls.

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::slurm::SlurmCli;

/// Powers nodes down or up.
pub trait NodePower: Send + Sync {
    /// What it is, for logs (`slurm`, the program's name).
    fn describe(&self) -> String;
    /// Powers `nodes` down (`on` false) or up. Returns once the engine has
    /// taken the order (a node may take its resume time to be up).
    fn set(&self, nodes: &[String], on: bool) -> Result<(), String>;
}

/// Slurm's power saving, through `scontrol`.
pub struct SlurmPower {
    cli: Box<dyn SlurmCli>,
}

impl SlurmPower {
    pub fn new(cli: Box<dyn SlurmCli>) -> SlurmPower {
        SlurmPower { cli }
    }
}

impl NodePower for SlurmPower {
    fn describe(&self) -> String {
        "slurm (scontrol state=power_down|power_up)".into()
    }

    fn set(&self, nodes: &[String], on: bool) -> Result<(), String> {
        if nodes.is_empty() {
            return Ok(());
        }
        let state = if on { "power_up" } else { "power_down" };
        let args = vec![
            "update".to_string(),
            format!("nodename={}", nodes.join(",")),
            format!("state={state}"),
        ];
        let out = self
            .cli
            .run("scontrol", &args)
            .map_err(|e| format!("scontrol: {e}"))?;
        if out.success {
            Ok(())
        } else {
            Err(format!(
                "scontrol {}: {}",
                args.join(" "),
                out.stderr.trim()
            ))
        }
    }
}

/// Programs that power nodes down and up, each run with the node names as
/// its arguments; a non-zero exit is an error with its standard error.
pub struct CommandPower {
    suspend: Vec<String>,
    resume: Vec<String>,
    timeout: Duration,
}

impl CommandPower {
    /// `suspend` and `resume`: a program and its first arguments each.
    pub fn new(suspend: Vec<String>, resume: Vec<String>) -> Result<CommandPower, String> {
        if suspend.is_empty() || resume.is_empty() {
            return Err("suspend_program and resume_program must both name a program".into());
        }
        Ok(CommandPower {
            suspend,
            resume,
            timeout: Duration::from_secs(300),
        })
    }

    /// Stops a program that has not ended after `t` (default 5 minutes).
    pub fn with_timeout(mut self, t: Duration) -> CommandPower {
        self.timeout = t;
        self
    }
}

impl NodePower for CommandPower {
    fn describe(&self) -> String {
        format!("{} / {}", self.suspend[0], self.resume[0])
    }

    fn set(&self, nodes: &[String], on: bool) -> Result<(), String> {
        if nodes.is_empty() {
            return Ok(());
        }
        let argv = if on { &self.resume } else { &self.suspend };
        run_program(argv, nodes, self.timeout).map_err(|e| e.message)
    }
}

/// Why a program failed: `ran` when it ran and answered with a failure
/// (its verdict), not when it could not start or did not answer in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramError {
    pub ran: bool,
    pub message: String,
}

/// Runs `argv` with `extra` appended as arguments (no shell), stopped
/// after `timeout`; Ok on a zero exit, else what went wrong with the
/// program's standard error (its first 4 KiB).
pub fn run_program(
    argv: &[String],
    extra: &[String],
    timeout: Duration,
) -> Result<(), ProgramError> {
    let broken = |message: String| ProgramError {
        ran: false,
        message,
    };
    let Some(prog) = argv.first() else {
        return Err(broken("no program".into()));
    };
    let mut child = Command::new(prog)
        .args(&argv[1..])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| broken(format!("{prog}: {e}")))?;
    // a hung program (an unreachable BMC, a stuck diagnostic) is stopped
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(broken(format!(
                    "{prog} {}: no answer within {} s, stopped",
                    extra.join(" "),
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(broken(format!("{prog}: {e}"))),
        }
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.by_ref().take(4096).read_to_string(&mut err);
    }
    if status.success() {
        Ok(())
    } else {
        Err(ProgramError {
            ran: true,
            message: format!("{prog} {}: {} {}", extra.join(" "), status, err.trim()),
        })
    }
}

/// Records the calls (tests).
#[derive(Default)]
pub struct RecordingPower {
    /// (nodes, on) in the order called.
    pub calls: Mutex<Vec<(Vec<String>, bool)>>,
}

impl NodePower for RecordingPower {
    fn describe(&self) -> String {
        "recording".into()
    }

    fn set(&self, nodes: &[String], on: bool) -> Result<(), String> {
        self.calls
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .push((nodes.to_vec(), on));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slurm::CmdOutput;

    struct FakeCli(Mutex<Vec<(String, Vec<String>)>>, bool);

    impl SlurmCli for FakeCli {
        fn run(&self, program: &str, args: &[String]) -> std::io::Result<CmdOutput> {
            self.0
                .lock()
                .unwrap()
                .push((program.to_string(), args.to_vec()));
            Ok(CmdOutput {
                success: self.1,
                stdout: String::new(),
                stderr: if self.1 {
                    String::new()
                } else {
                    "Invalid node name".into()
                },
            })
        }
    }

    struct Shared(std::sync::Arc<FakeCli>);
    impl SlurmCli for Shared {
        fn run(&self, p: &str, a: &[String]) -> std::io::Result<CmdOutput> {
            self.0.run(p, a)
        }
    }

    #[test]
    fn slurm_drains_and_resumes_a_node_with_its_reason() {
        use crate::Executor;
        let calls = std::sync::Arc::new(FakeCli(Mutex::new(Vec::new()), true));
        let e = crate::SlurmExecutor::new(
            Box::new(Shared(calls.clone())),
            std::env::temp_dir(),
            None,
            "t".into(),
        );
        e.drain_node(
            None,
            "gpu-3",
            "[gigafab] xid 79 on gpu 1\nforged=line",
            true,
        )
        .unwrap();
        e.drain_node(None, "gpu-3", "", false).unwrap();
        let c = calls.0.lock().unwrap();
        assert_eq!(c[0].0, "scontrol");
        assert_eq!(
            c[0].1,
            vec![
                "update",
                "nodename=gpu-3",
                "state=drain",
                "reason=[gigafab] xid 79 on gpu 1forged=line"
            ]
        );
        assert_eq!(c[1].1, vec!["update", "nodename=gpu-3", "state=resume"]);
    }

    #[test]
    fn slurm_power_asks_scontrol_for_all_nodes_at_once() {
        let calls = std::sync::Arc::new(FakeCli(Mutex::new(Vec::new()), true));
        let p = SlurmPower::new(Box::new(Shared(calls.clone())));
        p.set(&["n1".into(), "n2".into()], false).unwrap();
        p.set(&["n1".into()], true).unwrap();
        p.set(&[], true).unwrap();
        let c = calls.0.lock().unwrap();
        assert_eq!(c.len(), 2, "nothing asked for no node");
        assert_eq!(c[0].0, "scontrol");
        assert_eq!(c[0].1, vec!["update", "nodename=n1,n2", "state=power_down"]);
        assert_eq!(c[1].1, vec!["update", "nodename=n1", "state=power_up"]);
        let bad = SlurmPower::new(Box::new(FakeCli(Mutex::new(Vec::new()), false)));
        let e = bad.set(&["x".into()], true).unwrap_err();
        assert!(e.contains("Invalid node name"), "{e}");
    }

    #[test]
    fn programs_get_the_node_names_and_their_failures_are_told() {
        let dir = std::env::temp_dir().join(format!("gigafab-power-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let sh = |word: &str| {
            vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("echo {word} \"$@\" >> {}", log.display()),
                "power".to_string(),
            ]
        };
        let p = CommandPower::new(sh("down"), sh("up")).unwrap();
        p.set(&["a".into(), "b".into()], false).unwrap();
        p.set(&["a".into()], true).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "down a b\nup a\n");
        let failing = CommandPower::new(
            vec![
                "sh".into(),
                "-c".into(),
                "echo no BMC >&2; exit 3".into(),
                "x".into(),
            ],
            vec!["true".into()],
        )
        .unwrap();
        let e = failing.set(&["a".into()], false).unwrap_err();
        assert!(e.contains("no BMC") && e.contains('3'), "{e}");
        assert!(CommandPower::new(vec![], vec!["true".into()]).is_err());
        let hung = CommandPower::new(
            vec!["sh".into(), "-c".into(), "sleep 30".into(), "x".into()],
            vec!["true".into()],
        )
        .unwrap()
        .with_timeout(Duration::from_millis(300));
        let t = Instant::now();
        let e = hung.set(&["a".into()], false).unwrap_err();
        assert!(e.contains("no answer within"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
