//! A hostile tenant: jobs that try to reach what is not theirs. Every
//! attempt must fail while the other tenant's work goes on.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_none_of_the_servers_environment() {
    let dir = fresh_dir("env");
    let data = dir.join("data");
    let s = Server::start(
        &dir,
        &strs(&base_args(&data)),
        &[
            ("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN),
            ("PGPASSWORD", "pg-secret-1"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-2"),
            ("GIGAFAB_DATABASE_PASSWORD", "db-secret-3"),
        ],
    )
    .unwrap();
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "type": "h100",
                "env": {"MINE": "asked-for"}, "command": ["env"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    s.wait_state(TOKEN, id, &["completed"]).await;
    let (code, out) = s
        .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
        .await;
    assert_eq!(code, 200);
    for secret in [
        TOKEN,
        "pg-secret-1",
        "aws-secret-2",
        "db-secret-3",
        "RUST_LOG",
    ] {
        assert!(!out.contains(secret), "the job saw `{secret}`:\n{out}");
    }
    for mine in [
        "MINE=asked-for",
        "GIGAFAB_JOB_ID=",
        "CUDA_VISIBLE_DEVICES=0",
        "PATH=",
    ] {
        assert!(out.contains(mine), "missing `{mine}`:\n{out}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
