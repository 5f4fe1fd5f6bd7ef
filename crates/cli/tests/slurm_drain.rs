//! Draining a node through Slurm, against the real daemons of
//! `.ci/slurm.sh`: what the health model's drains and an operator's
//! resumes hand to the engine. A test binary of its own: cargo runs test
//! binaries one after another, so the other Slurm tests never see their
//! only node drained.

use std::process::Command;

use gigafab_exec::Executor;

fn scontrol(args: &[&str]) -> String {
    let out = Command::new("scontrol")
        .args(args)
        .output()
        .expect("scontrol");
    assert!(
        out.status.success(),
        "scontrol {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Resumes the node however the test ends.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = Command::new("scontrol")
            .args(["update", &format!("nodename={}", self.0), "state=resume"])
            .status();
    }
}

#[test]
#[ignore = "needs a Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\"; cargo test -- --include-ignored"]
fn a_health_drain_reaches_slurm_with_its_reason_and_a_resume_ends_it() {
    assert!(
        std::env::var("GIGAFAB_TEST_SLURM").as_deref() == Ok("1"),
        "no Slurm cluster: bash .ci/slurm.sh; eval \"$(bash .ci/slurm.sh env)\""
    );
    let first = scontrol(&["show", "node", "-o"]);
    let node = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("NodeName="))
        .expect("a node")
        .to_string();
    let _guard = Resume(node.clone());
    let dir = std::env::temp_dir().join(format!("gigafab-slurm-drain-{}", std::process::id()));
    let e = gigafab_exec::SlurmExecutor::new(
        Box::new(gigafab_exec::slurm::RealSlurm::default()),
        dir,
        None,
        "drain-test".into(),
    );
    e.drain_node(
        None,
        &node,
        "[gigafab] xid 79 on gpu 1: GPU has fallen off the bus",
        true,
    )
    .unwrap();
    let shown = scontrol(&["show", "node", &node]);
    assert!(shown.contains("DRAIN"), "{shown}");
    assert!(
        shown.contains("Reason=[gigafab] xid 79 on gpu 1: GPU has fallen off the bus"),
        "{shown}"
    );
    e.drain_node(None, &node, "", false).unwrap();
    let shown = scontrol(&["show", "node", &node]);
    assert!(!shown.contains("DRAIN"), "{shown}");
    // a node Slurm does not know is an error, named
    let err = e
        .drain_node(None, "no-such-node", "x", true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no-such-node"), "{err}");
}
