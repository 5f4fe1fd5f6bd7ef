//! Model endpoints under tenants' own accounts, each job in a network of
//! its own (`--job-network private`, the default): the gateway reaches
//! each replica through its supervisor, and no other tenant's job reaches
//! it at all.

mod common;
#[path = "common/oai.rs"]
mod oai;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A small OpenAI-style server (tests/fixtures/echo_openai.py).
const ECHO: &str = include_str!("fixtures/echo_openai.py");

fn cli(s: &Server, token: &str, args: &[&str]) -> String {
    let out = gigafab()
        .args(args)
        .env("GIGAFAB_SERVER", &s.url)
        .env("GIGAFAB_TOKEN", token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gigafab {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Endpoint `name` of the caller (`who` answers), a replica kept; waits
/// until it is ready; returns its replica's job and a key.
async fn serve(s: &Server, dir: &Path, token: &str, name: &str, who: &str) -> (i64, String) {
    let model = dir.join(format!("model-{name}"));
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), who).unwrap();
    cli(
        s,
        token,
        &[
            "catalog",
            "push",
            model.to_str().unwrap(),
            "--name",
            name,
            "--kind",
            "model",
            "--licence",
            "MIT",
        ],
    );
    let model_ref = format!("{name}@1");
    let who_env = format!("WHO={who}");
    cli(
        s,
        token,
        &[
            "endpoint",
            "create",
            name,
            "--model",
            &model_ref,
            "--min",
            "1",
            "--env",
            "API_KEY={api_key}",
            "--env",
            &who_env,
            "--",
            "python3",
            "-c",
            ECHO,
            "{port}",
        ],
    );
    let t = Instant::now();
    let job = loop {
        let v = s
            .json("GET", &format!("/api/v1/endpoints/{name}"), token, None)
            .await;
        if let Some(r) = v["replicas"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["state"] == "ready"))
        {
            break r["job"].as_i64().unwrap();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no replica of {name} became ready: {v:#}\n{}",
            s.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = cli(
        s,
        token,
        &["endpoint", "keys", "create", name, "-o", "json"],
    );
    let key: Value = serde_json::from_str(&out).unwrap();
    (job, key["key"].as_str().unwrap().to_string())
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_in_networks_of_their_own_are_reached_by_the_gateway_alone() {
    require_root("replicas_in_networks_of_their_own_are_reached_by_the_gateway_alone");
    let dir = fresh_dir("endpoints-private");
    let data = dir.join("data");
    let s = Server::two_tenants(&dir, &[]);
    let tokens = s.tenants(&["a", "b"], 10.0).await;
    let (ta, aa) = &tokens[0];
    let (tb, _) = &tokens[1];
    // each tenant's endpoint, each replica on its own loopback
    let (_job_a, key_a) = serve(&s, &dir, ta, "ep-a", "tenant-a").await;
    let (job_b, key_b) = serve(&s, &dir, tb, "ep-b", "tenant-b").await;
    for (ep, key, who) in [("ep-a", &key_a, "tenant-a"), ("ep-b", &key_b, "tenant-b")] {
        for _ in 0..3 {
            let (code, v) = oai::chat(&s.url, ep, key).await;
            assert_eq!(code, 200, "{ep}: {v}\n{}", s.stderr());
            assert_eq!(v["choices"][0]["message"]["content"], who, "{v}");
        }
    }
    assert_eq!(oai::chat(&s.url, "ep-b", &key_a).await.0, 401);
    // B's replica: the port it was given, and its supervisor's socket
    let b = s
        .json("GET", &format!("/api/v1/jobs/{job_b}"), TOKEN, None)
        .await;
    let port = b["command"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|p| p.as_str())
        .unwrap()
        .to_string();
    assert!(port.parse::<u16>().is_ok(), "{b}");
    let sock = data.join("jobs").join(job_b.to_string()).join("serve.sock");
    assert!(sock.exists(), "{}", sock.display());
    // the machine's loopback does not reach it
    assert!(std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err());
    // A's job tries both ways in
    let attack = format!(
        r#"
import socket
t = socket.socket(); t.settimeout(2)
try:
    t.connect(("127.0.0.1", {port})); print("ATTACK port: SUCCEEDED")
except OSError as e:
    print("port refused:", e)
u = socket.socket(socket.AF_UNIX); u.settimeout(2)
try:
    u.connect("{sock}")
    print("ATTACK socket: SUCCEEDED" if u.recv(16) else "socket: hung up")
except OSError as e:
    print("socket refused:", e)
print("attacks done")
"#,
        sock = sock.display()
    );
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            ta,
            Some(json!({"allocation": aa, "gpus": 1, "command": ["python3", "-c", attack]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let done = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
    let (_, out) = s
        .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(ta), None)
        .await;
    assert!(out.contains("attacks done"), "{out}\n{done:#}");
    assert!(!out.contains("SUCCEEDED"), "{out}");
    // B is served as before
    let (code, v) = oai::chat(&s.url, "ep-b", &key_b).await;
    assert_eq!((code, v["model"].as_str()), (200, Some("tenant-b")), "{v}");
    // the replica's supervisor is the one that made the socket, and it
    // goes with the replica
    cli(&s, tb, &["endpoint", "delete", "ep-b"]);
    let t = Instant::now();
    while sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "the socket outlived its replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
