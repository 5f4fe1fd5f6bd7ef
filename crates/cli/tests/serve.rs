//! End-to-end tests of `gigafab serve`: every test starts the real binary
//! on port 0 with a fresh store (an embedded SQLite database in a fresh
//! directory, or a fresh PostgreSQL database), talks to it over HTTP, and
//! runs real jobs as child processes on the virtual local fleet.
//!
//! PostgreSQL: the `*::postgres` variants need `GIGAFAB_TEST_POSTGRES`
//! (a server URL; `.ci/postgres.sh` starts one). They are `#[ignore]`d,
//! run with `cargo test -- --include-ignored` (as CI does), and fail
//! without a server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "common/openapi.rs"]
mod openapi;
#[path = "common/app.rs"]
#[macro_use]
mod app;
use app::*;

both_stores!(job_lifecycle);
both_stores!(exits_limits_and_cancels);
both_stores!(waiting_reasons_and_drain);
both_stores!(tenants_quota_and_audit);
both_stores!(bad_input_never_writes);
both_stores!(survives_kill_9);
both_stores!(concurrent_submits_and_cancels);

/// queued -> running on the right accelerators -> completed, with logs.
async fn job_lifecycle(app: App) {
    let (s, j) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 2, "type": "h100", "name": "hello",
                   "command": sh("echo out $CUDA_VISIBLE_DEVICES/$ROCR_VISIBLE_DEVICES/$GIGAFAB_ACCELERATORS/$GIGAFAB_JOB_ID; echo err >&2")}),
        )
        .await;
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["state"], "queued");
    let id = j["id"].as_i64().unwrap();
    let j = app.wait_state(id, &["completed"], 20).await;
    assert_eq!(j["exit_code"], 0);
    assert_eq!(j["accelerators"], json!(["nvidia-0/0", "nvidia-0/1"]));
    let kinds: Vec<String> = events(&j).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["submitted", "started", "finished"], "{j:#}");
    // modelled energy: 2 H100 at 542.5 W plus a quarter each of the node's
    // 1,400 W, over the run
    assert_eq!(j["energy_source"], "model");
    let w = j["avg_power_w"].as_f64().unwrap();
    assert!((w - 2.0 * (542.5 + 350.0)).abs() < 0.5, "{w}");
    assert!(j["energy_kwh"].as_f64().unwrap() > 0.0);
    assert!(
        j["carbon_g"].is_null(),
        "the local fleet has no grid series"
    );
    assert!(events(&j)[1].1.contains("nvidia-0/0, nvidia-0/1"));
    let out = app.logs(id, "").await;
    assert_eq!(out, format!("out 0,1//nvidia-0/0,nvidia-0/1/{id}\n"));
    assert_eq!(app.logs(id, "?stream=stderr").await, "err\n");
    assert_eq!(
        app.logs(id, "?offset=4").await,
        format!("0,1//nvidia-0/0,nvidia-0/1/{id}\n")
    );
    // an AMD job sees ROCR_VISIBLE_DEVICES only
    let (_, j) = app
        .submit(TOKEN, json!({"allocation": 1, "gpus": 1, "vendor": "amd", "command": sh("echo [$CUDA_VISIBLE_DEVICES] [$ROCR_VISIBLE_DEVICES]")}))
        .await;
    let id2 = j["id"].as_i64().unwrap();
    app.wait_state(id2, &["completed"], 20).await;
    assert_eq!(app.logs(id2, "").await, "[] [0]\n");
    // follow streams until the job ends
    let (_, j) = app
        .submit(TOKEN, json!({"allocation": 1, "gpus": 1, "command": sh("for i in 1 2 3; do echo line $i; sleep 0.3; done")}))
        .await;
    let id3 = j["id"].as_i64().unwrap();
    let t = Instant::now();
    let followed = app.logs(id3, "?follow=true").await;
    assert_eq!(followed, "line 1\nline 2\nline 3\n");
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "follow returned before the job ended"
    );
    // usage charged
    let u = app.get("/api/v1/usage").await;
    let used = u["items"][0]["used_gpu_hours"].as_f64().unwrap();
    assert!(used > 0.0, "{u}");
    assert_eq!(u["items"][0]["jobs_ended"], 3);
    assert!(u["items"][0]["energy_kwh"].as_f64().unwrap() > 0.0);
    assert_eq!(u["orgs"][0]["org"], "default");
    assert_eq!(u["orgs"][0]["energy_kwh"], u["items"][0]["energy_kwh"]);
    let list = app.get("/api/v1/jobs?state=completed&limit=2").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert_eq!(list["items"][0]["id"], id3);
    let next = list["next"].as_i64().unwrap();
    let rest = app
        .get(&format!(
            "/api/v1/jobs?state=completed&limit=2&after={next}"
        ))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["id"], id);
    assert!(rest["next"].is_null());
}

/// Exit codes, time limits (SIGTERM then SIGKILL), cancels.
async fn exits_limits_and_cancels(app: App) {
    let sub = |cmd: Value, extra: Value| {
        let mut b = json!({"allocation": 1, "gpus": 1, "command": cmd});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        app.submit(TOKEN, b)
    };
    let (_, f) = sub(sh("exit 3"), json!({})).await;
    let (_, t) = sub(sh("trap '' TERM; sleep 30"), json!({"time_limit_s": 1})).await;
    let (_, c) = sub(sh("sleep 30"), json!({})).await;
    let c_id = c["id"].as_i64().unwrap();
    app.wait_state(c_id, &["running"], 10).await;
    let (s, v) = app
        .call("DELETE", &format!("/api/v1/jobs/{c_id}"), Some(TOKEN), None)
        .await;
    assert_eq!(s, 200, "{v}");
    let f = app
        .wait_state(f["id"].as_i64().unwrap(), &["failed", "completed"], 10)
        .await;
    assert_eq!(f["state"], "failed");
    assert_eq!(f["exit_code"], 3);
    let t0 = Instant::now();
    let t = app
        .wait_state(
            t["id"].as_i64().unwrap(),
            &["timeout", "failed", "completed"],
            15,
        )
        .await;
    assert_eq!(t["state"], "timeout", "{t:#}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    let c = app.wait_state(c_id, &["cancelled", "failed"], 10).await;
    assert_eq!(c["state"], "cancelled", "{c:#}");
    let kinds: Vec<String> = events(&c).into_iter().map(|e| e.0).collect();
    assert!(kinds.contains(&"cancel_requested".to_string()), "{kinds:?}");
    // cancelling an ended job is a conflict; an unknown one is 404
    let (s, v) = app
        .call("DELETE", &format!("/api/v1/jobs/{c_id}"), Some(TOKEN), None)
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (409, "job_finished"));
    let (s, v) = app
        .call("DELETE", "/api/v1/jobs/99999", Some(TOKEN), None)
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (404, "job_not_found"));
    // a queued job is cancelled at once: fill the nvidia node first
    let (_, big) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 4, "type": "h100", "command": sh("sleep 30")}),
        )
        .await;
    app.wait_state(big["id"].as_i64().unwrap(), &["running"], 10)
        .await;
    let (_, q) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 1, "type": "h100", "command": sh("echo never")}),
        )
        .await;
    let q_id = q["id"].as_i64().unwrap();
    let (s, v) = app
        .call("DELETE", &format!("/api/v1/jobs/{q_id}"), Some(TOKEN), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["state"], "cancelled");
    let q = app.get(&format!("/api/v1/jobs/{q_id}")).await;
    assert_eq!(q["state"], "cancelled");
    assert!(q["started_at"].is_null());
    // command not found
    let (_, nf) = sub(json!(["/nonexistent/prog"]), json!({})).await;
    let nf = app
        .wait_state(nf["id"].as_i64().unwrap(), &["failed", "completed"], 10)
        .await;
    assert_eq!(nf["state"], "failed");
    assert!(
        app.logs(nf["id"].as_i64().unwrap(), "?stream=stderr")
            .await
            .contains("/nonexistent/prog")
    );
}

/// "waiting: no N×type gang free", drain and resume.
async fn waiting_reasons_and_drain(mut app: App) {
    let (_, a) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 3, "type": "h100", "command": sh("sleep 2")}),
        )
        .await;
    app.wait_state(a["id"].as_i64().unwrap(), &["running"], 10)
        .await;
    let (_, b) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 2, "type": "h100", "command": sh("echo b")}),
        )
        .await;
    let b_id = b["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = app.get(&format!("/api/v1/jobs/{b_id}")).await;
    assert_eq!(b["state"], "queued");
    assert_eq!(b["reason"], "waiting: no 2×h100 gang free");
    let b = app.wait_state(b_id, &["completed"], 20).await;
    let ev = events(&b);
    assert_eq!(
        ev[1],
        ("waiting".into(), "waiting: no 2×h100 gang free".into())
    );
    // drain: nothing new starts on the node; resume: it does
    let n = app.post("/api/v1/fleet/nodes/amd-0/drain", json!({})).await;
    assert_eq!(n["state"], "drained");
    assert_eq!(n["free"], 0);
    let (_, c) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 1, "vendor": "amd", "command": sh("echo c")}),
        )
        .await;
    let c_id = c["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c = app.get(&format!("/api/v1/jobs/{c_id}")).await;
    assert_eq!(c["state"], "queued");
    // a drained node is said to be drained, not "no gang free"
    assert_eq!(
        c["reason"], "waiting: no 1×amd gang free; drained: amd-0",
        "{c:#}"
    );
    let fleet = app.get("/api/v1/fleet").await;
    let amd = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "amd-0")
        .unwrap()
        .clone();
    assert_eq!(amd["state"], "drained");
    app.post("/api/v1/fleet/nodes/amd-0/resume", json!({}))
        .await;
    app.wait_state(c_id, &["completed"], 10).await;
    let (s, v) = app
        .call(
            "POST",
            "/api/v1/fleet/nodes/nope-9/drain",
            Some(TOKEN),
            Some(json!({})),
        )
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (404, "node_not_found"));
    // a drain's reason: one line, kept with the node across a restart,
    // audited
    let (s, v) = app
        .call(
            "POST",
            "/api/v1/fleet/nodes/amd-0/drain",
            Some(TOKEN),
            Some(json!({"reason": "two\nlines"})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let n = app
        .post(
            "/api/v1/fleet/nodes/amd-0/drain",
            json!({"reason": "memory errors on GPU 2"}),
        )
        .await;
    assert_eq!(n["reason"], "memory errors on GPU 2");
    app.kill9();
    app.start(None);
    let fleet = app.get("/api/v1/fleet").await;
    let amd = fleet["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "amd-0")
        .unwrap()
        .clone();
    assert_eq!(
        (&amd["state"], &amd["reason"]),
        (&json!("drained"), &json!("memory errors on GPU 2"))
    );
    let audit = app.get("/api/v1/audit?limit=1000").await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "drain" && e["detail"] == "memory errors on GPU 2"),
        "{audit}"
    );
    let n = app
        .post("/api/v1/fleet/nodes/amd-0/resume", json!({}))
        .await;
    assert!(n["reason"].is_null(), "{n}");
}

/// Organisations, users, roles, isolation, quota, audit.
async fn tenants_quota_and_audit(app: App) {
    app.post(
        "/api/v1/orgs",
        json!({"name": "acme", "category": "startup"}),
    )
    .await;
    app.post(
        "/api/v1/orgs",
        json!({"name": "uni", "category": "academia"}),
    )
    .await;
    let (s, v) = app
        .call(
            "POST",
            "/api/v1/orgs",
            Some(TOKEN),
            Some(json!({"name": "acme", "category": "sme"})),
        )
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (409, "conflict"));
    let (s, v) = app
        .call(
            "POST",
            "/api/v1/orgs",
            Some(TOKEN),
            Some(json!({"name": "x", "category": "pirate"})),
        )
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (422, "invalid_request"));
    let owner = app
        .post(
            "/api/v1/users",
            json!({"name": "alice", "org": "acme", "role": "owner"}),
        )
        .await;
    let alice = owner["token"].as_str().unwrap().to_string();
    // the owner creates a member of her organisation, not of another
    let (s, bob) = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&alice),
            Some(json!({"name": "bob", "org": "acme"})),
        )
        .await;
    assert_eq!(s, 201, "{bob}");
    let bob = bob["token"].as_str().unwrap().to_string();
    let (s, _) = app
        .call(
            "POST",
            "/api/v1/users",
            Some(&alice),
            Some(json!({"name": "eve", "org": "uni"})),
        )
        .await;
    assert_eq!(s, 404, "another organisation is invisible");
    let carol = app
        .post("/api/v1/users", json!({"name": "carol", "org": "uni"}))
        .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let acme_alloc = app
        .post(
            "/api/v1/allocations",
            json!({"org": "acme", "gpu_hours": 0.0012, "days": 30}),
        )
        .await;
    let uni_alloc = app
        .post(
            "/api/v1/allocations",
            json!({"org": "uni", "gpu_hours": 100}),
        )
        .await;
    let (a1, a2) = (
        acme_alloc["id"].as_i64().unwrap(),
        uni_alloc["id"].as_i64().unwrap(),
    );
    // only an admin grants
    let (s, v) = app
        .call(
            "POST",
            "/api/v1/allocations",
            Some(&alice),
            Some(json!({"org": "acme", "gpu_hours": 1e6})),
        )
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (403, "forbidden"));
    // bob runs on acme's allocation; carol (uni) cannot use it or see the job
    let (s, j) = app
        .submit(
            &bob,
            json!({"allocation": a1, "gpus": 2, "time_limit_s": 1, "command": sh("sleep 3")}),
        )
        .await;
    assert_eq!(s, 201, "{j}");
    let bob_job = j["id"].as_i64().unwrap();
    // a tenant cannot raise a job's priority (it would preempt others'
    // jobs); lowering it is its own business
    let (s, v) = app
        .submit(
            &bob,
            json!({"allocation": a1, "gpus": 1, "priority": 10000, "command": sh("true")}),
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (403, Some("forbidden")), "{v}");
    let (s, v) = app
        .submit(
            &alice,
            json!({"allocation": a1, "gpus": 1, "priority": 1, "command": sh("true")}),
        )
        .await;
    assert_eq!(s, 403, "an owner neither: {v}");
    // projects group work inside an organisation
    let (s, p) = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&alice),
            Some(json!({"org": "acme", "name": "llm"})),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let (s, _) = app
        .call(
            "POST",
            "/api/v1/projects",
            Some(&bob),
            Some(json!({"org": "acme", "name": "x"})),
        )
        .await;
    assert_eq!(s, 403, "members do not create projects");
    let (s, pj) = app
        .submit(
            &bob,
            json!({"allocation": a1, "gpus": 1, "time_limit_s": 1, "project": "llm", "command": sh("true")}),
        )
        .await;
    assert_eq!(s, 201, "{pj}");
    assert_eq!(pj["project"], "llm");
    let (s, v) = app
        .submit(
            &bob,
            json!({"allocation": a1, "gpus": 1, "time_limit_s": 1, "project": "nope", "command": sh("true")}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    let (_, l) = app
        .call("GET", "/api/v1/projects", Some(&carol), None)
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 0);
    app.wait_state(pj["id"].as_i64().unwrap(), &["completed"], 10)
        .await;
    let (s, v) = app
        .submit(
            &carol,
            json!({"allocation": a1, "gpus": 1, "command": sh("true")}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (404, "allocation_not_found")
    );
    let (s, v) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{bob_job}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (404, "job_not_found"));
    let (s, _) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{bob_job}/logs"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/jobs/{bob_job}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (_, l) = app.call("GET", "/api/v1/jobs", Some(&carol), None).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 0);
    let (_, l) = app
        .call("GET", "/api/v1/allocations", Some(&carol), None)
        .await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_eq!(l["items"][0]["id"], a2);
    let (_, l) = app.call("GET", "/api/v1/jobs", Some(&alice), None).await;
    let ids: Vec<i64> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert!(ids.contains(&bob_job) && ids.len() == 2, "{ids:?}");
    // a member lists no users; an owner lists her organisation's
    let (s, _) = app.call("GET", "/api/v1/users", Some(&bob), None).await;
    assert_eq!(s, 403);
    let (_, l) = app.call("GET", "/api/v1/users", Some(&alice), None).await;
    let names: Vec<&str> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    // quota: 0.0012 GPU-hours = 4.32 GPU-s; each start reserves its time
    // limit: 2 GPUs to a 1 s limit (and the kill grace), then 1 GPU to 1 s
    // more, use it up
    app.wait_state(bob_job, &["timeout"], 10).await;
    let (s, last) = app
        .submit(
            &bob,
            json!({"allocation": a1, "gpus": 1, "time_limit_s": 1, "command": sh("sleep 3")}),
        )
        .await;
    assert_eq!(s, 201, "{last}");
    app.wait_state(last["id"].as_i64().unwrap(), &["timeout"], 10)
        .await;
    let (s, v) = app
        .submit(
            &bob,
            json!({"allocation": a1, "gpus": 1, "command": sh("true")}),
        )
        .await;
    // what is left is less than any time limit reserves: refused
    assert_eq!(s, 422, "{v}");
    assert!(
        ["allocation_exhausted", "exceeds_allocation"].contains(&v["error"].as_str().unwrap()),
        "{v}"
    );
    let al = app.get(&format!("/api/v1/allocations/{a1}")).await;
    let used = al["used_gpu_hours"].as_f64().unwrap();
    // used up, and never past the grant by more than the kill grace allows
    assert!((0.0008..=0.0012 + 1.0 / 3600.0).contains(&used), "{al}");
    // expired: a window in the past
    let old = app
        .post(
            "/api/v1/allocations",
            json!({"org": "uni", "gpu_hours": 10, "days": 1, "valid_from": "2020-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(old["state"], "expired");
    let (s, v) = app
        .submit(
            &carol,
            json!({"allocation": old["id"], "gpus": 1, "command": sh("true")}),
        )
        .await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (422, "allocation_expired")
    );
    // tokens: a revoked token stops working
    let (s, t) = app.call("POST", "/api/v1/tokens", Some(&carol), None).await;
    assert_eq!(s, 201, "{t}");
    let t2 = t["token"].as_str().unwrap().to_string();
    let (s, _) = app.call("GET", "/api/v1/whoami", Some(&t2), None).await;
    assert_eq!(s, 200);
    let (s, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{}", t["id"]),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = app.call("GET", "/api/v1/whoami", Some(&t2), None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (401, "unauthorized"));
    // the audit log says who did what; members cannot read it
    let (s, _) = app.call("GET", "/api/v1/audit", Some(&bob), None).await;
    assert_eq!(s, 403);
    let audit = app.get("/api/v1/audit?limit=1000").await;
    let entries: Vec<(String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["user"].as_str().unwrap().into(),
                e["action"].as_str().unwrap().into(),
            )
        })
        .collect();
    for want in [
        ("admin", "create_org"),
        // the audit names members by login, ORG/NAME
        ("acme/alice", "create_user"),
        ("admin", "create_allocation"),
        ("acme/bob", "submit"),
        ("uni/carol", "revoke_token"),
    ] {
        assert!(
            entries.contains(&(want.0.into(), want.1.into())),
            "{want:?} not in {entries:?}"
        );
    }
    // refused calls leave no trace
    assert!(!entries.iter().any(|e| e.0 == "carol" && e.1 == "submit"));
}

/// Malformed and absurd input: clear 4xx, no 500, nothing written.
async fn bad_input_never_writes(app: App) {
    let raw = |body: &'static [u8], ct: &'static str| {
        app.http
            .post(format!("{}/api/v1/jobs", app.url))
            .bearer_auth(TOKEN)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"allocation": 1, "gpus": 1}), 422, "invalid_request"),
        (
            json!({"allocation": 1, "gpus": -1, "command": ["true"]}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 0, "command": ["true"]}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1e12, "command": ["true"]}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 100000000, "command": ["true"]}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 9, "command": ["true"]}),
            422,
            "unsatisfiable",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": []}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": "true"}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "type": "z9000"}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "vendor": "intel"}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "time_limit_s": -5}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "time_limit_s": 1e10}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "min_memory_gb": -1}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "env": {"GIGAFAB_X": "1"}}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "workdir": "rel/path"}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "command": ["true"], "colour": "red"}),
            422,
            "invalid_request",
        ),
        (
            json!({"allocation": 77, "gpus": 1, "command": ["true"]}),
            404,
            "allocation_not_found",
        ),
        (
            json!({"allocation": "x", "gpus": 1, "command": ["true"]}),
            422,
            "invalid_request",
        ),
        (json!([1, 2]), 422, "invalid_request"),
    ];
    for (body, status, code) in cases {
        let (s, v) = app.submit(TOKEN, body.clone()).await;
        assert_eq!(
            (s, v["error"].as_str().unwrap_or("")),
            (status, code),
            "{body} -> {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let r = raw(b"{\"allocation\": 1, \"gpus\": ", "application/json")
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_json");
    assert!(
        v["message"].as_str().unwrap().contains("line 1 column"),
        "{v}"
    );
    let r = raw(b"{}", "text/plain").await.unwrap();
    assert_eq!(r.status().as_u16(), 415);
    let big = vec![b' '; 2 << 20];
    // its own connection: the server may close it without reading it all
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", app.url))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "payload_too_large");
    // auth, routing
    let (s, v) = app.call("GET", "/api/v1/jobs", None, None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (401, "unauthorized"));
    let (s, v) = app
        .call("GET", "/api/v1/jobs", Some("gf_wrong"), None)
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (401, "unauthorized"));
    let (s, v) = app.call("GET", "/api/v1/nope", Some(TOKEN), None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (404, "not_found"));
    let (s, v) = app.call("PUT", "/api/v1/jobs", Some(TOKEN), None).await;
    assert_eq!(
        (s, v["error"].as_str().unwrap()),
        (405, "method_not_allowed")
    );
    let (s, v) = app.call("GET", "/api/v1/jobs/abc", Some(TOKEN), None).await;
    assert_eq!((s, v["error"].as_str().unwrap()), (404, "job_not_found"));
    let (s, v) = app
        .call("GET", "/api/v1/jobs?limit=0", Some(TOKEN), None)
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (422, "invalid_request"));
    let (s, v) = app
        .call("GET", "/api/v1/jobs?state=weird", Some(TOKEN), None)
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (422, "invalid_request"));
    let (s, v) = app
        .call("GET", "/api/v1/jobs?limit=abc", Some(TOKEN), None)
        .await;
    assert_eq!((s, v["error"].as_str().unwrap()), (422, "invalid_request"));
    // nothing was written
    let l = app.get("/api/v1/jobs").await;
    assert_eq!(l["items"].as_array().unwrap().len(), 0, "{l}");
    let audit = app.get("/api/v1/audit").await;
    assert!(
        !audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "submit")
    );
    // the document lists every route, and every route is routed
    let doc = app.get("/api/v1/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/logs",
        "/api/v1/fleet",
        "/api/v1/usage",
        "/api/v1/allocations",
        "/api/v1/orgs",
        "/api/v1/users",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(p), "{p} missing from openapi");
    }
    for (p, ops) in paths {
        for m in ops.as_object().unwrap().keys() {
            let concrete = p.replace("{id}", "1").replace("{name}", "nvidia-0");
            let (s, v) = app
                .call(&m.to_uppercase(), &concrete, Some("gf_nobody"), None)
                .await;
            assert!(
                !(s == 404 && v["error"] == "not_found"),
                "{m} {p} is not routed"
            );
            assert!(s == 200 || s == 401, "{m} {p}: {s} {v}");
        }
    }
}

/// kill -9 at a bad moment: acknowledged jobs survive, running ones are
/// adopted, none runs twice.
async fn survives_kill_9(mut app: App) {
    let marks = app.dir.join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let m = marks.display().to_string();
    // j1: running across the restart; j2: finishes while the server is down;
    // j3..: queued behind (4 h100 only)
    let (_, j1) = app.submit(TOKEN, json!({"allocation": 1, "gpus": 2, "type": "h100", "command": sh(&format!("echo run >> {m}/j1; sleep 3; echo done >> {m}/j1"))})).await;
    let (_, j2) = app.submit(TOKEN, json!({"allocation": 1, "gpus": 2, "type": "h100", "command": sh(&format!("echo run >> {m}/j2; sleep 0.5"))})).await;
    let mut queued = Vec::new();
    for i in 0..5 {
        let (s, j) = app.submit(TOKEN, json!({"allocation": 1, "gpus": 4, "type": "h100", "command": sh(&format!("echo run >> {m}/q{i}"))})).await;
        assert_eq!(s, 201);
        queued.push(j["id"].as_i64().unwrap());
    }
    let (id1, id2) = (j1["id"].as_i64().unwrap(), j2["id"].as_i64().unwrap());
    app.wait_state(id1, &["running"], 10).await;
    app.wait_state(id2, &["running"], 10).await;
    app.kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.start(None);
    let j1 = app.wait_state(id1, &["completed", "failed"], 20).await;
    assert_eq!(j1["state"], "completed", "{j1:#}");
    assert!(events(&j1).iter().any(|e| e.0 == "adopted"), "{j1:#}");
    let j2 = app.wait_state(id2, &["completed", "failed"], 20).await;
    assert_eq!(j2["state"], "completed", "{j2:#}");
    assert!(
        j2["reason"]
            .as_str()
            .unwrap()
            .contains("while the server was down"),
        "{j2:#}"
    );
    for id in &queued {
        app.wait_state(*id, &["completed"], 30).await;
    }
    // each ran exactly once
    assert_eq!(
        std::fs::read_to_string(marks.join("j1")).unwrap(),
        "run\ndone\n"
    );
    assert_eq!(std::fs::read_to_string(marks.join("j2")).unwrap(), "run\n");
    for i in 0..5 {
        assert_eq!(
            std::fs::read_to_string(marks.join(format!("q{i}"))).unwrap(),
            "run\n"
        );
    }
    // kill -9 right after a burst of acknowledged submits: all are there
    let mut acked = Vec::new();
    for _ in 0..30 {
        let (s, j) = app
            .submit(
                TOKEN,
                json!({"allocation": 1, "gpus": 8, "command": sh("true")}),
            )
            .await;
        if s == 201 {
            acked.push(j["id"].as_i64().unwrap());
        }
    }
    app.kill9();
    app.start(None);
    for id in acked {
        let (s, j) = app
            .call("GET", &format!("/api/v1/jobs/{id}"), Some(TOKEN), None)
            .await;
        assert_eq!(s, 200, "acknowledged job {id} lost: {j}");
    }
}

/// 64 clients submit and cancel at once: every acknowledged job exists,
/// and no accelerator ever runs two jobs.
async fn concurrent_submits_and_cancels(app: App) {
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for c in 0..64 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for k in 0..4 {
                let gpus = 1 + (c + k) % 3;
                let (s, j) = app
                    .submit(
                        TOKEN,
                        json!({"allocation": 1, "gpus": gpus, "command": sh("sleep 0.2")}),
                    )
                    .await;
                assert_eq!(s, 201, "{j}");
                let id = j["id"].as_i64().unwrap();
                if (c + k) % 5 == 0 {
                    let (s, v) = app
                        .call("DELETE", &format!("/api/v1/jobs/{id}"), Some(TOKEN), None)
                        .await;
                    assert!(s == 200 || s == 409, "{s} {v}");
                }
                ids.push(id);
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 256, "ids must be unique");
    // watch the fleet while the queue drains: never two jobs on one device
    let t = Instant::now();
    loop {
        let running = app.get("/api/v1/jobs?state=running&limit=1000").await;
        let mut seen = std::collections::HashSet::new();
        for j in running["items"].as_array().unwrap() {
            for a in j["accelerators"].as_array().unwrap() {
                assert!(
                    seen.insert(a.as_str().unwrap().to_string()),
                    "{a} used twice"
                );
            }
        }
        let fleet = app.get("/api/v1/fleet").await;
        assert!(fleet["busy"].as_u64().unwrap() <= 8);
        let queued = app.get("/api/v1/jobs?state=queued&limit=1").await;
        if queued["items"].as_array().unwrap().is_empty()
            && running["items"].as_array().unwrap().is_empty()
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "queue did not drain"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut total = 0;
    for st in ["completed", "cancelled"] {
        let mut after = String::new();
        loop {
            let l = app
                .get(&format!("/api/v1/jobs?state={st}&limit=100{after}"))
                .await;
            total += l["items"].as_array().unwrap().len();
            match l["next"].as_i64() {
                Some(n) => after = format!("&after={n}"),
                None => break,
            }
        }
    }
    assert_eq!(total, 256, "every job completed or was cancelled");
    let u = app.get("/api/v1/usage").await;
    assert_eq!(u["items"][0]["jobs_ended"], 256);
    assert_eq!(u["items"][0]["jobs_running"], 0);
    assert_eq!(u["items"][0]["jobs_queued"], 0);
}

/// Without a bootstrap token, the first start prints one; later starts don't.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_prints_a_working_admin_token() {
    let dir = fresh_dir("first");
    let run = |dir: &PathBuf| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args([
                "serve",
                "--single-user",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .env_remove("GIGAFAB_BOOTSTRAP_TOKEN")
            .env_remove("GIGAFAB_DATABASE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let l = err.next().unwrap().unwrap();
            if let Some(r) = l.split("listening on ").nth(1) {
                break r.split_whitespace().next().unwrap().to_string();
            }
        };
        std::thread::spawn(move || for _ in err {});
        (child, url)
    };
    let (mut c, url) = run(&dir);
    let mut out = BufReader::new(c.stdout.take().unwrap()).lines();
    let mut token = None;
    for _ in 0..3 {
        let l = out.next().unwrap().unwrap();
        if let Some(t) = l.strip_prefix("export GIGAFAB_TOKEN=") {
            token = Some(t.to_string());
        }
    }
    let token = token.expect("token printed");
    assert!(token.starts_with("gf_"));
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{url}/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["role"], "admin");
    c.kill().unwrap();
    c.wait().unwrap();
    // the token is stored hashed
    let db = std::fs::read(dir.join("gigafab.db")).unwrap();
    assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
    let (mut c, url) = run(&dir);
    let r = http
        .get(format!("{url}/api/v1/whoami"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    c.kill().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut c.stdout.take().unwrap(), &mut s).unwrap();
    assert!(!s.contains("GIGAFAB_TOKEN"), "printed again: {s}");
    c.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CLI client against a real server: the README's few commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_watch_logs_cancel() {
    let app = App::spawn(Db::Sqlite, "cli").await.unwrap();
    let url = app.url.clone();
    let cli = move |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args(args)
            .env("GIGAFAB_SERVER", &url)
            .env("GIGAFAB_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // submit picks the only active allocation
    let (ok, out, err) = cli(&[
        "submit",
        "--gpus",
        "2",
        "--vendor",
        "amd",
        "--time",
        "5m",
        "--",
        "sh",
        "-c",
        "echo rocr=$ROCR_VISIBLE_DEVICES; sleep 0.5; echo done",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("submitted job 1"), "{out}");
    let (ok, out, _) = cli(&["logs", "1", "-f"]);
    assert!(ok);
    assert_eq!(out, "rocr=0,1\ndone\n");
    let (ok, out, _) = cli(&["job", "1"]);
    assert!(ok);
    assert!(out.contains("completed"), "{out}");
    assert!(out.contains("started on amd-0/0, amd-0/1"), "{out}");
    let (ok, out, _) = cli(&["jobs", "--output", "json"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"][0]["time_limit_s"], 300);
    assert_eq!(v["items"][0]["state"], "completed");
    // administration: org, owner, allocation; the owner submits with her token
    let (ok, _, err) = cli(&["org", "create", "acme", "--category", "startup"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&[
        "user", "create", "alice", "--org", "acme", "--role", "owner",
    ]);
    assert!(ok, "{err}");
    let alice = out
        .split_whitespace()
        .find(|w| w.starts_with("gf_"))
        .unwrap()
        .to_string();
    let (ok, out, err) = cli(&[
        "alloc",
        "create",
        "--org",
        "acme",
        "--gpu-hours",
        "10",
        "--days",
        "7",
    ]);
    assert!(ok, "{err}");
    let alloc: i64 = out.trim().parse().unwrap();
    let run_as = |token: &str, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args(args)
            .env("GIGAFAB_SERVER", &app.url)
            .env("GIGAFAB_TOKEN", token)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run_as(
        &alice,
        &[
            "submit",
            "--allocation",
            &alloc.to_string(),
            "--",
            "sleep",
            "30",
        ],
    );
    assert!(ok, "{out}{err}");
    let (ok, out, _) = run_as(&alice, &["jobs"]);
    assert!(ok);
    assert!(out.contains("alice") && !out.contains("admin"), "{out}");
    let (ok, _, err) = run_as(&alice, &["cancel", "2"]);
    assert!(ok, "{err}");
    app.wait_state(2, &["cancelled"], 10).await;
    // another tenant's job is not found; errors are clear and exit non-zero
    let (ok, _, err) = run_as(&alice, &["job", "1"]);
    assert!(!ok);
    assert!(err.contains("job_not_found"), "{err}");
    let (ok, _, err) = run_as("gf_bad", &["jobs"]);
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    let (ok, out, _) = cli(&["usage", "--output", "json"]);
    assert!(ok);
    let u: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(u["items"].as_array().unwrap().len(), 2);
    let (ok, out, _) = cli(&["fleet"]);
    assert!(ok);
    assert!(out.contains("nvidia-0") && out.contains("amd-0"), "{out}");
}

both_stores!(one_server_per_store);

/// A second server on the same store refuses to start, and says why.
async fn one_server_per_store(app: App) {
    let other_dir = fresh_dir("second");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gigafab"));
    cmd.args([
        "serve",
        "--single-user",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
    ]);
    match &app.db_url {
        // same database, another data directory
        Some(u) => cmd.arg(&other_dir).args(["--database", u]),
        None => cmd.arg(&app.dir),
    };
    let out = cmd
        .env_remove("GIGAFAB_DATABASE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another gigafab server"), "{err}");
    // the first one is unharmed
    assert_eq!(app.get("/api/v1/health").await["status"], "ok");
    let _ = std::fs::remove_dir_all(&other_dir);
}

/// `--bootstrap-token-file` sets the first admin token; nothing is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_from_a_file() {
    let dir = fresh_dir("tokfile");
    let f = dir.join("token");
    std::fs::write(&f, "gf_from_a_file_0123456789abcdef\n").unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args([
            "serve",
            "--single-user",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--bootstrap-token-file")
        .arg(&f)
        .env_remove("GIGAFAB_BOOTSTRAP_TOKEN")
        .env_remove("GIGAFAB_DATABASE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let l = err.next().unwrap().unwrap();
        if let Some(r) = l.split("listening on ").nth(1) {
            break r.split_whitespace().next().unwrap().to_string();
        }
    };
    let http = reqwest::Client::new();
    let r = http
        .get(format!("{url}/api/v1/whoami"))
        .bearer_auth("gf_from_a_file_0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    child.kill().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut s).unwrap();
    assert!(!s.contains("GIGAFAB_TOKEN"), "{s}");
    child.wait().unwrap();
    // a too-short token is refused with a clear message
    std::fs::write(&f, "short").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args([
            "serve",
            "--single-user",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.join("data2"))
        .arg("--bootstrap-token-file")
        .arg(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bootstrap token"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A site power budget holds live too: the second job waits for power.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_power_budget() {
    let mut app = App::spawn(Db::Sqlite, "power").await.unwrap();
    // idle 4 × 70 W, and room for one job's 472.5 W more
    let f = app.dir.join("one-node.toml");
    std::fs::write(
        &f,
        "name = \"one\"\n[[sites]]\nname = \"lab\"\npue = 1.0\npower_budget_mw = 0.0007525\n\
         [[sites.pools]]\nname = \"nvidia\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 4\nnode_watts = 0\n",
    )
    .unwrap();
    app.kill9();
    app.extra = vec!["--factory".into(), f.display().to_string()];
    app.start(None);
    let (_, a) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 1, "command": sh("sleep 1")}),
        )
        .await;
    let (_, b) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 1, "command": sh("true")}),
        )
        .await;
    let (a, b) = (a["id"].as_i64().unwrap(), b["id"].as_i64().unwrap());
    app.wait_state(a, &["running"], 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jb = app.get(&format!("/api/v1/jobs/{b}")).await;
    assert_eq!(jb["state"], "queued");
    assert_eq!(jb["reason"], "waiting: site power budget");
    let ja = app.wait_state(a, &["completed"], 10).await;
    let jb = app.wait_state(b, &["completed"], 10).await;
    assert!(jb["started_at"].as_str().unwrap() >= ja["ended_at"].as_str().unwrap());
}

/// Energy from device counters when telemetry is present (a recorded
/// replay stands in for NVML here), from the model otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn measured_energy_from_telemetry() {
    let mut app = App::spawn(Db::Sqlite, "tele").await.unwrap();
    let dev = |i: u32| {
        json!({"index": i, "uuid": format!("GPU-{i}"), "name": "NVIDIA H100", "vendor": "nvidia",
                              "memory_total_mib": 81559, "power_limit_w": 700.0})
    };
    // each device's counter grows by 1 MJ per sample
    let batches: Vec<Value> = (0..400)
        .map(|k| {
            json!((0..4)
                .map(|i| json!({"index": i, "at_ms": 1_000_000 + k * 50, "energy_j": 1e6 * k as f64,
                                "power_w": 500.0, "xid_errors": []}))
                .collect::<Vec<_>>())
        })
        .collect();
    let f = app.dir.join("replay.json");
    std::fs::write(
        &f,
        json!({"devices": (0..4).map(dev).collect::<Vec<_>>(), "samples": batches}).to_string(),
    )
    .unwrap();
    app.kill9();
    app.extra = vec!["--telemetry".into(), format!("replay:{}", f.display())];
    app.start(None);
    let (_, j) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 2, "type": "h100", "command": sh("sleep 0.5")}),
        )
        .await;
    let (_, a) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 1, "vendor": "amd", "command": sh("sleep 0.5")}),
        )
        .await;
    let j = app
        .wait_state(j["id"].as_i64().unwrap(), &["completed"], 10)
        .await;
    let a = app
        .wait_state(a["id"].as_i64().unwrap(), &["completed"], 10)
        .await;
    assert_eq!(j["energy_source"], "measured", "{j:#}");
    // 2 MJ per 50 ms poll: tens of MW, nothing like the model's 1.8 kW
    assert!(j["avg_power_w"].as_f64().unwrap() > 1e6, "{j:#}");
    // the AMD node has no telemetry here: modelled
    assert_eq!(a["energy_source"], "model");
    let bad = app.dir.join("bad.json");
    std::fs::write(&bad, "{\"devices\": []}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args([
            "serve",
            "--single-user",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(app.dir.join("other"))
        .arg("--telemetry")
        .arg(format!("replay:{}", bad.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a telemetry replay"));
}

/// Live preemption, as the twin models it: a high-priority job takes the
/// accelerators of a running preemptible one; that run is stopped (SIGTERM,
/// so it can checkpoint), the job waits, then runs again in the same
/// directory and completes, charged for both runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_preemption_requeues_and_restarts() {
    let app = App::spawn(Db::Sqlite, "preempt").await.unwrap();
    // each run counts itself in its working directory; the first waits
    // to be stopped, the second ends at once
    let low = sh(
        "n=$(cat runs 2>/dev/null || echo 0); n=$((n+1)); echo $n > runs; echo run $n; \
                  [ $n -ge 2 ] && exit 0; trap 'echo stopping; exit 143' TERM; sleep 60 & wait",
    );
    let (s, a) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 4, "type": "h100", "preemptible": true, "command": low}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let a = a["id"].as_i64().unwrap();
    app.wait_state(a, &["running"], 10).await;
    let t = Instant::now();
    while !app.logs(a, "").await.contains("run 1") {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the first run never began"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, b) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 4, "type": "h100", "priority": 10, "command": sh("sleep 0.5")}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let b = b["id"].as_i64().unwrap();
    // the preemptor runs on the accelerators the preempted run held
    let jb = app.wait_state(b, &["running", "completed"], 20).await;
    assert_eq!(
        jb["accelerators"].as_array().map(Vec::len),
        Some(4),
        "{jb:#}"
    );
    let jb = app.wait_state(b, &["completed"], 20).await;
    let ja = app.wait_state(a, &["completed"], 20).await;
    let ev = events(&ja);
    let kinds: Vec<&str> = ev.iter().map(|e| e.0.as_str()).collect();
    let p = kinds
        .iter()
        .position(|k| *k == "preempted")
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert_eq!(
        kinds.iter().filter(|k| **k == "started").count(),
        2,
        "two runs: {ev:?}"
    );
    assert!(
        kinds[p + 1..].contains(&"started"),
        "started again after: {ev:?}"
    );
    // the second run began after the high-priority job had the accelerators
    assert!(ja["started_at"].as_str().unwrap() >= jb["started_at"].as_str().unwrap());
    let log = app.logs(a, "").await;
    for line in ["run 1", "stopping", "run 2"] {
        assert!(log.contains(line), "{line} not in the log:\n{log}");
    }
    assert_eq!(ja["exit_code"], 0);
    // charged for both runs: the first lasted at least until b was submitted
    assert!(ja["gpu_hours"].as_f64().unwrap_or(0.0) > 0.0, "{ja:#}");
    let (_, m) = app.call("GET", "/metrics", Some(TOKEN), None).await;
    let m = m.as_str().unwrap_or_default().to_string();
    assert!(m.contains("gigafab_jobs_preempted_total 1"), "{m}");
}

/// The document names every route the server has, each with a unique
/// operationId, and every route it names is routed (no `not_found` of the
/// router, no 405); its schemas are those of the API contract's types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_routed() {
    let app = App::spawn(Db::Sqlite, "routes").await.unwrap();
    let doc = app.openapi().await;
    assert_eq!(doc["openapi"], "3.1.0");
    let mut ids = std::collections::HashSet::new();
    let mut n = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            assert!(!id.is_empty(), "{method} {path}: no operationId");
            assert!(
                ids.insert(id.clone()),
                "{method} {path}: operationId {id} twice"
            );
            let concrete = path
                .replace("{id}", "999999")
                .replace("{name}", "no-such-node");
            let body = (method == "post").then(|| json!({}));
            let (status, v) = app
                .call(&method.to_uppercase(), &concrete, Some(TOKEN), body)
                .await;
            assert_ne!(status, 405, "{method} {path}: {v}");
            assert!(
                !(status == 404 && v["error"] == "not_found"),
                "{method} {path} is not routed: {v}"
            );
            n += 1;
        }
    }
    assert!(n >= 27, "{n} operations");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Job",
        "SubmitJob",
        "Allocation",
        "CreateAllocation",
        "Error",
        "JobPage",
    ] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    // the submission schema is the contract type's: closed, with its bounds
    assert_eq!(schemas["SubmitJob"]["additionalProperties"], false);
    assert_eq!(schemas["SubmitJob"]["properties"]["gpus"]["maximum"], 65536);
}

/// A job may say what it trains (a job type of the server's throughput
/// matrix, for the `hetero` policy): a type the matrix does not know is
/// refused with the matrix's size, and none is known without a matrix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_types_come_from_the_throughput_matrix() {
    let mut app = App::spawn(Db::Sqlite, "jobtype").await.unwrap();
    let body = |t: &str| json!({"allocation": 1, "gpus": 1, "command": sh("true"), "job_type": t});
    let (s, v) = app.submit(TOKEN, body("ResNet-50 (batch size 64)")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("unknown_job_type")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("--throughputs"),
        "{v}"
    );
    app.kill9();
    app.extra = vec!["--throughputs".into(), "builtin:gavel-throughputs".into()];
    app.start(None);
    // measured on V100, P100 and K80 only: not on this fleet's H100/MI300X
    let (s, v) = app.submit(TOKEN, body("ResNet-50 (batch size 64)")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("unsatisfiable")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("measured on: k80, p100, v100"),
        "{v}"
    );
    app.kill9();
    app.extra
        .extend(["--factory".into(), "builtin:gavel-108".into()]);
    app.start(None);
    let (s, v) = app.submit(TOKEN, body("ResNet-50 (batch size 64)")).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["job_type"], "ResNet-50 (batch size 64)");
    let (s, v) = app.submit(TOKEN, body("ResNet-5000")).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (422, Some("unknown_job_type")),
        "{v}"
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not in the throughput matrix"),
        "{v}"
    );
}
