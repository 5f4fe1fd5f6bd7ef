//! Health live: a replayed Xid 79 on one accelerator of a running job's
//! node drains the node, requeues the job from its checkpoint on a healthy
//! node, and shows in the fleet and `/metrics`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[tokio::test]
async fn an_xid_79_drains_the_node_and_requeues_its_job_elsewhere() {
    let dir = fresh_dir("health-live");
    let f = dir.join("factory.toml");
    std::fs::write(
        &f,
        "name = \"health\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"h100\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 2\n",
    )
    .unwrap();
    let rec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../telemetry/tests/fixtures/xid79-replay.json")
        .display()
        .to_string();
    let data = dir.join("data");
    let mut args = base_args(&data);
    let n = args.len();
    args[n - 1] = format!("replay:{rec}");
    args.extend(["--factory".into(), f.display().to_string()]);
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    // the telemetry reports on the first node (h100-0); a blocker takes the
    // other one for 4 s, so that the job runs on h100-0
    let submit = async |cmd: &[&str]| {
        let j = s
            .json(
                "POST",
                "/api/v1/jobs",
                TOKEN,
                Some(json!({"allocation": 1, "gpus": 2, "command": cmd})),
            )
            .await;
        j["id"].as_i64().unwrap()
    };
    let blocker = submit(&["sleep", "4"]).await;
    let b = s.wait_state(TOKEN, blocker, &["running"]).await;
    assert!(b["accelerators"].to_string().contains("h100-1"), "{b:#}");
    let job = submit(&["sleep", "60"]).await;
    let j = s.wait_state(TOKEN, job, &["running"]).await;
    assert!(j["accelerators"].to_string().contains("h100-0"), "{j:#}");

    // the Xid arrives ~3 s after the start: the node is drained and the
    // job requeued, then run on h100-1 once the blocker has ended
    let t = Instant::now();
    loop {
        let j = s
            .json("GET", &format!("/api/v1/jobs/{job}"), TOKEN, None)
            .await;
        if j["state"] == "running" && j["accelerators"].to_string().contains("h100-1") {
            let events = j["events"].to_string();
            assert!(
                events.contains("node h100-0 left service (xid 79 on gpu 1: GPU has fallen off the bus (reboot_node)): requeued from its last checkpoint"),
                "{events}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "not requeued: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fleet = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
    let node0 = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "h100-0")
        .unwrap()
        .clone();
    assert_eq!(node0["state"], "drained", "{node0:#}");
    assert_eq!(node0["health"], "draining", "{node0:#}");
    assert!(
        node0["reason"]
            .as_str()
            .unwrap()
            .starts_with("[gigafab] xid 79 on gpu 1"),
        "{node0:#}"
    );
    let (_, metrics) = s.call("GET", "/metrics", Some(TOKEN), None).await;
    for line in [
        "gigafab_gpu_xid_errors_total{node=\"h100-0\",gpu=\"1\",xid=\"79\"}",
        "gigafab_node_health_transitions_total{state=\"draining\"} 1",
        "gigafab_nodes_by_health{state=\"draining\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
    // an operator resumes the node once repaired
    let node0 = s
        .json("POST", "/api/v1/fleet/nodes/h100-0/resume", TOKEN, None)
        .await;
    assert_eq!(node0["health"], "healthy", "{node0:#}");
    assert_eq!(node0["state"], "up", "{node0:#}");
    let _ = s
        .call("DELETE", &format!("/api/v1/jobs/{job}"), Some(TOKEN), None)
        .await;
}
