//! Health live: a replayed Xid 79 on one accelerator of a running job's
//! node drains the node, requeues the job from its checkpoint on a healthy
//! node, and shows in the fleet and `/metrics`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// A factory of one site `s` (with `site_extra` in its table) and one pool
/// `h100` of `nodes` nodes of 2 H100, written in `dir`.
fn factory(dir: &Path, nodes: u32, site_extra: &str) -> std::path::PathBuf {
    let f = dir.join("factory.toml");
    std::fs::write(
        &f,
        format!(
            "name = \"health\"\n[[sites]]\nname = \"s\"\n{site_extra}[[sites.pools]]\nname = \"h100\"\naccelerator = \"h100\"\nnodes = {nodes}\naccelerators_per_node = 2\n"
        ),
    )
    .unwrap();
    f
}

/// `gigafab serve` of `factory` on a fresh data directory in `dir`, the
/// test arguments changed by `edit`.
fn serve(dir: &Path, factory: &Path, edit: impl FnOnce(&mut Vec<String>)) -> Server {
    let mut args = base_args(&dir.join("data"));
    edit(&mut args);
    args.extend(["--factory".into(), factory.display().to_string()]);
    Server::start(dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap()
}

#[tokio::test]
async fn an_xid_79_drains_the_node_and_requeues_its_job_elsewhere() {
    let dir = fresh_dir("health-live");
    let f = factory(&dir, 2, "");
    let rec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../telemetry/tests/fixtures/xid79-replay.json")
        .display()
        .to_string();
    // the server's own telemetry: the recording (the last base argument)
    let s = serve(&dir, &f, |a| {
        *a.last_mut().unwrap() = format!("replay:{rec}")
    });
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
    // its job has left it: drained, not draining any more
    assert_eq!(node0["health"], "drained", "{node0:#}");
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
        "gigafab_nodes_by_health{state=\"drained\"} 1",
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

/// Kills the agent however the test ends.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_node_agent_streams_an_xid_79_and_a_two_node_job_moves_to_healthy_nodes() {
    let dir = fresh_dir("health-agent");
    let f = factory(&dir, 3, "");
    let s = serve(&dir, &f, |_| {});
    // a tenant cannot send readings (it could drain nodes with them)
    let tenants = s.tenants(&["acme"], 10.0).await;
    let batch = json!({"seq": 1, "agent_start_ms": 1, "samples": [{"index": 0, "at_ms": 1, "xid_errors": [79]}]});
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/fleet/nodes/h100-0/telemetry",
            Some(&tenants[0].0),
            Some(batch.clone()),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    // bad readings are refused with their place
    let bad = json!({"seq": 1, "agent_start_ms": 1, "samples": [{"index": 5, "at_ms": 1}]});
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/fleet/nodes/h100-0/telemetry",
            Some(TOKEN),
            Some(bad),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("samples[0].index"), "{body}");
    let hot = json!({"seq": 1, "agent_start_ms": 1, "samples": [{"index": 0, "at_ms": 1, "temperature_c": 1e9}]});
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/fleet/nodes/h100-0/telemetry",
            Some(TOKEN),
            Some(hot),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("temperature_c"), "{body}");

    // a two-node job
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 4, "command": ["sleep", "60"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let j = s.wait_state(TOKEN, id, &["running"]).await;
    let acc: Vec<String> = serde_json::from_value(j["accelerators"].clone()).unwrap();
    let node = acc[0].split('/').next().unwrap().to_string();
    let nodes: std::collections::BTreeSet<&str> =
        acc.iter().map(|a| a.split('/').next().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "{acc:?}");

    // the agent on one of its nodes, replaying an Xid 79 on device 1
    let rec =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../telemetry/tests/fixtures/xid79-replay.json");
    let token_file = dir.join("agent-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args([
                "agent",
                "run",
                "--node",
                &node,
                "--server",
                &s.url,
                "--interval",
                "0.2",
            ])
            .arg("--token-file")
            .arg(&token_file)
            .arg(format!("--telemetry=replay:{}", rec.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    loop {
        let j = s
            .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
            .await;
        let acc = j["accelerators"].to_string();
        if j["state"] == "running" && !acc.contains(&format!("{node}/")) {
            assert!(
                j["events"]
                    .to_string()
                    .contains(&format!("node {node} left service (xid 79 on gpu 1")),
                "{j:#}"
            );
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "not moved: {j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the node's readings and health, with the evidence
    let r = s
        .json(
            "GET",
            &format!("/api/v1/fleet/nodes/{node}/telemetry"),
            TOKEN,
            None,
        )
        .await;
    // its jobs have left: drained
    assert_eq!(r["health"], "drained", "{r:#}");
    assert!(
        r["evidence"].to_string().contains("xid 79 on gpu 1"),
        "{r:#}"
    );
    assert!(
        !r["devices"][1]["readings"].as_array().unwrap().is_empty(),
        "{r:#}"
    );
    let (_, metrics) = s.call("GET", "/metrics", Some(TOKEN), None).await;
    for line in [
        format!("gigafab_gpu_xid_errors_total{{node=\"{node}\",gpu=\"1\",xid=\"79\"}}"),
        format!("gigafab_gpu_temperature_celsius{{node=\"{node}\",gpu=\"0\"}} 61.0"),
        "gigafab_nodes_by_health{state=\"drained\"} 1".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    // a batch sent again (its answer lost) is taken once
    let again = json!({"seq": 7, "agent_start_ms": 42, "samples": []});
    let a = s
        .json(
            "POST",
            "/api/v1/fleet/nodes/h100-2/telemetry",
            TOKEN,
            Some(again.clone()),
        )
        .await;
    assert_eq!(a["acked"], 7);
    let a = s
        .json(
            "POST",
            "/api/v1/fleet/nodes/h100-2/telemetry",
            TOKEN,
            Some(again),
        )
        .await;
    assert_eq!(a["duplicate"], true);
    let _ = s
        .call("DELETE", &format!("/api/v1/jobs/{id}"), Some(TOKEN), None)
        .await;
}

#[tokio::test]
async fn an_agent_keeps_its_readings_while_the_server_is_away() {
    let dir = fresh_dir("health-buffer");
    // a port with nothing on it yet
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rec =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../telemetry/tests/fixtures/xid79-replay.json");
    let token_file = dir.join("agent-token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let before = gigafab_now_ms();
    let _agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args([
                "agent",
                "run",
                "--node",
                "h100-0",
                "--interval",
                "0.1",
                "--buffer",
                "5",
            ])
            .args(["--server", &format!("http://127.0.0.1:{port}")])
            .arg("--token-file")
            .arg(&token_file)
            .arg(format!("--telemetry=replay:{}", rec.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // readings pile up (at most 5 batches kept) while nothing answers
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let f = factory(&dir, 2, "");
    let s = serve(&dir, &f, |a| a[1] = format!("127.0.0.1:{port}"));
    let started = gigafab_now_ms();
    let t = Instant::now();
    loop {
        let r = s
            .json("GET", "/api/v1/fleet/nodes/h100-0/telemetry", TOKEN, None)
            .await;
        let readings = r["devices"][0]["readings"].as_array().unwrap().clone();
        let early: Vec<i64> = readings
            .iter()
            .filter_map(|x| x["at_ms"].as_i64())
            .filter(|&at| at < started)
            .collect();
        if !early.is_empty() {
            // the buffered ones, sent when the server came: at most the 5
            // last, each once, in order
            assert!(early.len() <= 5, "{early:?}");
            assert!(early.iter().all(|&at| at >= before));
            assert!(early.windows(2).all(|w| w[0] < w[1]), "{early:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "nothing sent: {r:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gigafab_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_node_failing_its_pre_flight_check_is_drained_and_the_gang_placed_elsewhere() {
    let dir = fresh_dir("health-preflight");
    let log = dir.join("checked");
    // the check fails on h100-1 and notes every node it checks
    let check = format!(
        "preflight_program = [\"sh\", \"-c\", \"echo $1 >> {}; test $1 != h100-1 || {{ echo 'dcgm: SM stress failed' >&2; exit 1; }}\", \"check\"]\n",
        log.display()
    );
    let f = factory(&dir, 3, &check);
    let s = serve(&dir, &f, |_| {});
    // a one-node job is not checked
    let small = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "command": ["true"]})),
        )
        .await;
    s.wait_state(TOKEN, small["id"].as_i64().unwrap(), &["completed"])
        .await;
    assert!(!log.exists(), "a one-node job was checked");
    // a two-node gang: its first placement takes h100-1, which fails
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 4, "command": ["sleep", "30"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let t = Instant::now();
    let j = loop {
        let j = s
            .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
            .await;
        if j["events"].to_string().contains("pre-flight check passed") {
            break j;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{j:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let events = j["events"].to_string();
    assert!(
        events.contains("pre-flight check failed on h100-1: drained; placed again elsewhere"),
        "{events}"
    );
    let j = s.wait_state(TOKEN, id, &["running"]).await;
    let acc = j["accelerators"].to_string();
    assert!(!acc.contains("h100-1/"), "{acc}");
    let checked = std::fs::read_to_string(&log).unwrap();
    assert!(checked.contains("h100-1"), "{checked}");
    let fleet = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
    let n1 = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "h100-1")
        .unwrap()
        .clone();
    assert_eq!(n1["state"], "drained", "{n1:#}");
    // everyone sees that the check failed; operators see how
    assert_eq!(n1["reason"], "[gigafab] pre-flight check failed", "{n1:#}");
    assert!(
        n1["health_reason"]
            .as_str()
            .unwrap()
            .contains("SM stress failed"),
        "{n1:#}"
    );
    let _ = s
        .call("DELETE", &format!("/api/v1/jobs/{id}"), Some(TOKEN), None)
        .await;
}

#[tokio::test]
async fn rising_error_counters_make_a_node_suspect_and_long_gangs_avoid_it() {
    let dir = fresh_dir("health-suspect");
    let f = factory(&dir, 3, "");
    let s = serve(&dir, &f, |_| {});
    let reading = |seq: u64, corrected: u64, replays: u64| {
        json!({"seq": seq, "agent_start_ms": 5, "samples": [
            {"index": 0, "at_ms": seq, "ecc_corrected": corrected, "pcie_replays": replays, "temperature_c": 60.0}
        ]})
    };
    // counters start somewhere: nothing yet
    s.json(
        "POST",
        "/api/v1/fleet/nodes/h100-0/telemetry",
        TOKEN,
        Some(reading(1, 1000, 10)),
    )
    .await;
    let r = s
        .json("GET", "/api/v1/fleet/nodes/h100-0/telemetry", TOKEN, None)
        .await;
    assert_eq!(r["health"], "healthy", "{r:#}");
    // 150 more corrected ECC errors in one reading: suspect
    s.json(
        "POST",
        "/api/v1/fleet/nodes/h100-0/telemetry",
        TOKEN,
        Some(reading(2, 1150, 10)),
    )
    .await;
    let r = s
        .json("GET", "/api/v1/fleet/nodes/h100-0/telemetry", TOKEN, None)
        .await;
    assert_eq!(r["health"], "suspect", "{r:#}");
    assert!(
        r["evidence"]
            .to_string()
            .contains("150 correctable ECC errors on gpu 0"),
        "{r:#}"
    );
    // a power draw well above the H100's 700 W board power is evidence too
    let hot = json!({"seq": 3, "agent_start_ms": 5, "samples": [{"index": 1, "at_ms": 3, "power_w": 900.0}]});
    s.json(
        "POST",
        "/api/v1/fleet/nodes/h100-0/telemetry",
        TOKEN,
        Some(hot),
    )
    .await;
    let r = s
        .json("GET", "/api/v1/fleet/nodes/h100-0/telemetry", TOKEN, None)
        .await;
    assert!(
        r["evidence"]
            .to_string()
            .contains("gpu 1 200 W above its power limit"),
        "{r:#}"
    );
    // a long two-node gang runs on the two healthy nodes
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 4, "time_limit_s": 7200, "command": ["sleep", "30"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let j = s.wait_state(TOKEN, id, &["running"]).await;
    let acc = j["accelerators"].to_string();
    assert!(!acc.contains("h100-0/"), "{acc}");
    let _ = s
        .call("DELETE", &format!("/api/v1/jobs/{id}"), Some(TOKEN), None)
        .await;
}

#[tokio::test]
async fn a_node_where_jobs_of_several_tenants_fail_is_drained_as_a_lemon() {
    let dir = fresh_dir("health-lemon");
    let f = factory(&dir, 1, "");
    let s = serve(&dir, &f, |_| {});
    let who = s.tenants(&["acme", "beta", "gamma"], 10.0).await;
    let fail = async |w: &(String, i64)| {
        let j = s
            .json(
                "POST",
                "/api/v1/jobs",
                &w.0,
                Some(json!({"allocation": w.1, "gpus": 1, "command": ["false"]})),
            )
            .await;
        s.wait_state(&w.0, j["id"].as_i64().unwrap(), &["failed"])
            .await;
    };
    // two tenants' failing code, however much: the node stays in service
    for _ in 0..3 {
        fail(&who[0]).await;
        fail(&who[1]).await;
    }
    let node = async || {
        let f = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
        f["nodes"][0].clone()
    };
    assert_eq!(node().await["health"], "healthy");
    // a third tenant's job fails there too: a lemon
    fail(&who[2]).await;
    // draining, then drained at the next poll (no job left on it)
    let t = Instant::now();
    let n = loop {
        let n = node().await;
        if n["health"] == "drained" || t.elapsed() > Duration::from_secs(10) {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(n["health"], "drained", "{n:#}");
    assert_eq!(n["state"], "drained", "{n:#}");
    assert_eq!(
        n["reason"], "[gigafab] lemon node: jobs of 3 tenants failed on it within 24 h",
        "{n:#}"
    );
    // a tenant sees the node's state, not the health model's evidence
    let f = s.json("GET", "/api/v1/fleet", &who[0].0, None).await;
    assert_eq!(f["nodes"][0]["health"], "drained");
    assert!(f["nodes"][0]["health_reason"].is_null(), "{f:#}");
}

#[tokio::test]
async fn a_pre_flight_check_that_cannot_run_drains_nothing() {
    let dir = fresh_dir("health-preflight-broken");
    let f = factory(
        &dir,
        2,
        "preflight_program = [\"/nonexistent/dcgmi\", \"diag\"]\n",
    );
    let s = serve(&dir, &f, |_| {});
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 4, "command": ["true"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let j = s.wait_state(TOKEN, id, &["completed"]).await;
    assert!(
        j["events"]
            .to_string()
            .contains("pre-flight check not conclusive (2 of 2 nodes failed"),
        "{j:#}"
    );
    let fleet = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
    for n in fleet["nodes"].as_array().unwrap() {
        assert_eq!(n["state"], "up", "{n:#}");
        assert_eq!(n["health"], "healthy", "{n:#}");
    }
}

#[tokio::test]
async fn an_xid_on_a_shared_gpu_requeues_every_slice_of_that_gpu_and_no_other() {
    let dir = fresh_dir("health-slices");
    // one node of 2 H100 in quarters: slots 0-3 on GPU 0, 4-7 on GPU 1
    let f = dir.join("factory.toml");
    std::fs::write(
        &f,
        "name = \"health\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"h100\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\nfractions = 4\n",
    )
    .unwrap();
    let rec = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../telemetry/tests/fixtures/xid79-replay.json")
        .display()
        .to_string();
    let s = serve(&dir, &f, |a| {
        *a.last_mut().unwrap() = format!("replay:{rec}")
    });
    let mut ids = Vec::new();
    for _ in 0..8 {
        let j = s
            .json(
                "POST",
                "/api/v1/jobs",
                TOKEN,
                Some(json!({"allocation": 1, "gpus": 1, "gpu_share": 0.25, "command": ["sleep", "60"]})),
            )
            .await;
        ids.push(j["id"].as_i64().unwrap_or_else(|| panic!("{j}")));
    }
    let mut slot_of = std::collections::HashMap::new();
    for &id in &ids {
        let j = s.wait_state(TOKEN, id, &["running"]).await;
        let label = j["accelerators"][0].as_str().unwrap().to_string();
        let slot: u32 = label.rsplit('/').next().unwrap().parse().unwrap();
        slot_of.insert(id, slot);
    }
    // the Xid on GPU 1 (~3 s after the start): the slices of GPU 1 (slots
    // 4-7) are requeued, those of GPU 0 run on
    let t = Instant::now();
    loop {
        let mut requeued = Vec::new();
        let mut untouched = Vec::new();
        for &id in &ids {
            let j = s
                .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
                .await;
            if j["events"].to_string().contains("xid 79 on gpu 1") {
                requeued.push(slot_of[&id]);
            } else {
                untouched.push(slot_of[&id]);
            }
        }
        if requeued.len() == 4 {
            requeued.sort();
            untouched.sort();
            assert_eq!(requeued, [4, 5, 6, 7]);
            assert_eq!(untouched, [0, 1, 2, 3]);
            break;
        }
        assert!(
            requeued.len() < 4 && t.elapsed() < Duration::from_secs(20),
            "requeued slots {requeued:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in ids {
        let _ = s
            .call("DELETE", &format!("/api/v1/jobs/{id}"), Some(TOKEN), None)
            .await;
    }
}
