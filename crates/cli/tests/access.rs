//! The one-stop shop's workflow over the real server, on both stores:
//! calls, requests, reviews, decisions, and the allocations approvals
//! grant, with every forbidden transition refused by name.

use serde_json::{Value, json};

#[path = "common/openapi.rs"]
mod openapi;
#[path = "common/app.rs"]
#[macro_use]
mod app;
use app::*;

both_stores!(access_workflow);

/// A user of `org` with `role`: their token and id.
async fn user(app: &App, name: &str, org: Option<&str>, role: &str) -> (String, i64) {
    let mut body = json!({"name": name, "role": role});
    if let Some(o) = org {
        body["org"] = json!(o);
    }
    let u = app.post("/api/v1/users", body).await;
    (
        u["token"].as_str().unwrap().to_string(),
        u["id"].as_i64().unwrap(),
    )
}

async fn as_(
    app: &App,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    app.call(method, path, Some(token), body).await
}

async fn access_workflow(app: App) {
    for (o, c) in [("acme", "sme"), ("uni", "academia"), ("rev", "public")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let (alice, _) = user(&app, "alice", Some("acme"), "member").await;
    let (bob, _) = user(&app, "bob", Some("uni"), "member").await;
    let (rita, rita_id) = user(&app, "rita", Some("rev"), "member").await;
    let (opal, _) = user(&app, "opal", None, "operator").await;
    let alice_id = app.get("/api/v1/users").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap()["id"]
        .as_i64()
        .unwrap();

    // calls: an operator's; a member cannot open one
    let call = |name: &str, mode: &str, cats: Value, env: f64| json!({"name": name, "mode": mode, "categories": cats, "envelope_gpu_hours": env});
    let (s, e) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/calls",
        Some(call("x", "fast-lane", json!(["sme"]), 10.0)),
    )
    .await;
    assert_eq!((s, &e["error"]), (403, &json!("forbidden")), "{e}");
    let (s, e) = as_(
        &app,
        &opal,
        "POST",
        "/api/v1/calls",
        Some(call("x", "lottery", json!(["sme"]), 10.0)),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert!(e["message"].as_str().unwrap().starts_with("mode:"), "{e}");
    let mut ids = Vec::new();
    for (n, m, cats, env) in [
        ("play", "playground", json!(["sme", "startup"]), 3000.0),
        ("fast", "fast-lane", json!(["sme", "academia"]), 1000.0),
        ("big", "large-scale", json!(["academia"]), 200_000.0),
    ] {
        let (s, c) = as_(
            &app,
            &opal,
            "POST",
            "/api/v1/calls",
            Some(call(n, m, cats, env)),
        )
        .await;
        assert_eq!(s, 201, "{c}");
        assert_eq!(c["state"], "open");
        ids.push(c["id"].as_i64().unwrap());
    }
    let (play, fast, big) = (ids[0], ids[1], ids[2]);
    let (s, _) = as_(
        &app,
        &opal,
        "POST",
        "/api/v1/calls",
        Some(call("play", "playground", json!(["sme"]), 1.0)),
    )
    .await;
    assert_eq!(s, 409, "names are unique");
    let calls = app.get("/api/v1/calls").await;
    assert_eq!(calls["items"].as_array().unwrap().len(), 3);

    let draft = |call: i64, project: &str, h: f64, days: f64| json!({"call": call, "title": format!("{project} request"), "project": project, "gpu_hours": h, "days": days});
    // playground: approved at submission for an eligible organisation
    let (s, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(play, "p1", 1500.0, 30.0)),
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("draft")), "{r}");
    let r1 = r["id"].as_i64().unwrap();
    let (s, r) = as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{r1}/submit"),
        None,
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
    let alloc = r["allocation"].as_i64().expect("an allocation");
    let (s, a) = as_(
        &app,
        &alice,
        "GET",
        &format!("/api/v1/allocations/{alloc}"),
        None,
    )
    .await;
    assert_eq!(
        (s, &a["org"], &a["granted_gpu_hours"]),
        (200, &json!("acme"), &json!(1500.0)),
        "{a}"
    );
    let (_, p) = as_(&app, &alice, "GET", "/api/v1/projects", None).await;
    assert!(
        p["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "p1" && p["org"] == "acme"),
        "{p}"
    );
    // the envelope is never exceeded: 1,500 + 1,600 > 3,000
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(play, "p2", 1600.0, 30.0)),
    )
    .await;
    let r2 = r["id"].as_i64().unwrap();
    let (s, e) = as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{r2}/submit"),
        None,
    )
    .await;
    assert_eq!((s, &e["error"]), (409, &json!("envelope_exceeded")), "{e}");
    let (_, r) = as_(&app, &alice, "GET", &format!("/api/v1/requests/{r2}"), None).await;
    assert_eq!(
        (&r["state"], &r["allocation"]),
        (&json!("submitted"), &Value::Null),
        "{r}"
    );
    let c = &app.get("/api/v1/calls").await["items"][0];
    assert_eq!(c["granted_gpu_hours"], 1500.0, "{c}");
    // eligibility and the mode's limits
    let (s, e) = as_(
        &app,
        &bob,
        "POST",
        "/api/v1/requests",
        Some(draft(play, "q", 10.0, 30.0)),
    )
    .await;
    assert_eq!((s, &e["error"]), (422, &json!("not_eligible")), "{e}");
    let (s, e) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(play, "q", 2500.0, 30.0)),
    )
    .await;
    assert_eq!((s, &e["error"]), (422, &json!("over_mode_limit")), "{e}");
    let (s, _) = as_(
        &app,
        &opal,
        "POST",
        "/api/v1/requests",
        Some(draft(fast, "q", 10.0, 30.0)),
    )
    .await;
    assert_eq!(s, 403, "an operator does not apply");

    // fast-lane: one review decides
    let (s, c) = as_(
        &app,
        &opal,
        "POST",
        &format!("/api/v1/calls/{fast}/reviewers"),
        Some(json!({"user": rita_id})),
    )
    .await;
    assert_eq!((s, &c["reviewers"]), (201, &json!([rita_id])), "{c}");
    let (s, _) = as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/calls/{fast}/reviewers"),
        Some(json!({"user": alice_id})),
    )
    .await;
    assert_eq!(s, 403, "only an operator assigns reviewers");
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(fast, "f1", 800.0, 60.0)),
    )
    .await;
    let f1 = r["id"].as_i64().unwrap();
    let review = |verdict: &str| json!({"score": 4, "verdict": verdict, "comment": "sound plan"});
    let (s, _) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{f1}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!(s, 409, "a draft is not reviewed");
    as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{f1}/submit"),
        None,
    )
    .await;
    let (s, _) = as_(
        &app,
        &bob,
        "POST",
        &format!("/api/v1/requests/{f1}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!(s, 404, "bob sees nothing of acme's request");
    let (s, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{f1}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
    assert_eq!(r["reviews"][0]["reviewer_name"], "rita");
    assert!(r["allocation"].as_i64().is_some());
    let (s, _) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{f1}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!(s, 409, "decided");
    // a second fast-lane request would exceed the 1,000 GPU-hours: approval
    // is refused and the request waits in review
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(fast, "f2", 300.0, 60.0)),
    )
    .await;
    let f2 = r["id"].as_i64().unwrap();
    as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{f2}/submit"),
        None,
    )
    .await;
    let (s, e) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{f2}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!((s, &e["error"]), (409, &json!("envelope_exceeded")), "{e}");
    let (_, r) = as_(&app, &alice, "GET", &format!("/api/v1/requests/{f2}"), None).await;
    assert_eq!(r["state"], "in_review", "{r}");
    // conflict of interest: alice reviews the fast call, never for acme
    as_(
        &app,
        &opal,
        "POST",
        &format!("/api/v1/calls/{fast}/reviewers"),
        Some(json!({"user": alice_id})),
    )
    .await;
    let (s, e) = as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{f2}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!(
        (s, &e["error"]),
        (403, &json!("conflict_of_interest")),
        "{e}"
    );

    // large-scale: two reviews, then an operator's decision
    let (_, r) = as_(
        &app,
        &bob,
        "POST",
        "/api/v1/requests",
        Some(draft(big, "llm", 60_000.0, 180.0)),
    )
    .await;
    let b1 = r["id"].as_i64().unwrap();
    as_(
        &app,
        &bob,
        "POST",
        &format!("/api/v1/requests/{b1}/submit"),
        None,
    )
    .await;
    for who in [rita_id, alice_id] {
        as_(
            &app,
            &opal,
            "POST",
            &format!("/api/v1/calls/{big}/reviewers"),
            Some(json!({"user": who})),
        )
        .await;
    }
    let (s, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{b1}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!(
        (s, &r["state"]),
        (201, &json!("in_review")),
        "one review decides nothing: {r}"
    );
    let decision = json!({"approve": true, "comment": "panel: yes"});
    let (s, e) = as_(
        &app,
        &opal,
        "POST",
        &format!("/api/v1/requests/{b1}/decision"),
        Some(decision.clone()),
    )
    .await;
    assert_eq!((s, &e["error"]), (409, &json!("reviews_missing")), "{e}");
    as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{b1}/reviews"),
        Some(review("approve")),
    )
    .await;
    let (s, _) = as_(
        &app,
        &bob,
        "POST",
        &format!("/api/v1/requests/{b1}/decision"),
        Some(decision.clone()),
    )
    .await;
    assert_eq!(s, 403, "an applicant does not decide");
    let (s, r) = as_(
        &app,
        &opal,
        "POST",
        &format!("/api/v1/requests/{b1}/decision"),
        Some(decision),
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
    assert_eq!(r["reviews"].as_array().unwrap().len(), 2);
    let big_alloc = r["allocation"].as_i64().unwrap();
    // the new allocation runs bob's work
    let (s, j) = app
        .submit(
            &bob,
            json!({"allocation": big_alloc, "gpus": 1, "command": ["true"], "project": "llm"}),
        )
        .await;
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["project"], "llm");
    let (s, _) = as_(
        &app,
        &bob,
        "POST",
        &format!("/api/v1/requests/{b1}/withdraw"),
        None,
    )
    .await;
    assert_eq!(s, 409, "an approved request is not withdrawn");
    let (_, r) = as_(
        &app,
        &bob,
        "POST",
        "/api/v1/requests",
        Some(draft(fast, "w", 10.0, 10.0)),
    )
    .await;
    let w = r["id"].as_i64().unwrap();
    let (s, r) = as_(
        &app,
        &bob,
        "POST",
        &format!("/api/v1/requests/{w}/withdraw"),
        None,
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("withdrawn")), "{r}");

    // who sees what
    let (_, l) = as_(&app, &bob, "GET", "/api/v1/requests", None).await;
    let mine: Vec<i64> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(mine, vec![b1, w], "bob sees uni's requests only");
    let (_, l) = as_(&app, &rita, "GET", "/api/v1/requests", None).await;
    assert_eq!(
        l["items"].as_array().unwrap().len(),
        4,
        "rita: fast's 3 and big's 1: {l}"
    );
    let (s, _) = as_(&app, &bob, "GET", &format!("/api/v1/requests/{r1}"), None).await;
    assert_eq!(s, 404);
    // every transition is audited
    let audit = app.get("/api/v1/audit?limit=1000").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "create_call",
        "add_reviewer",
        "create_request",
        "submit_request",
        "review_request",
        "approve_request",
        "create_allocation",
        "withdraw_request",
    ] {
        assert!(
            actions.contains(&a),
            "{a} not in the audit log: {actions:?}"
        );
    }
}
