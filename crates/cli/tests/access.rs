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
    // approved with no person in the loop: 2,000 GPU-hours per organisation
    // and call, however many requests (1,500 + 600 fits the envelope)
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(play, "p3", 600.0, 30.0)),
    )
    .await;
    let r3 = r["id"].as_i64().unwrap();
    let (s, e) = as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{r3}/submit"),
        None,
    )
    .await;
    assert_eq!((s, &e["error"]), (409, &json!("playground_limit")), "{e}");
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
    assert_eq!(
        s, 404,
        "a draft is not reviewed: its reviewers do not see it"
    );
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
    // sent back for revision, submitted again: a new round of reviews
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(draft(fast, "f3", 100.0, 60.0)),
    )
    .await;
    let f3 = r["id"].as_i64().unwrap();
    as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{f3}/submit"),
        None,
    )
    .await;
    let (_, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{f3}/reviews"),
        Some(review("revise")),
    )
    .await;
    assert_eq!(r["state"], "revision_requested", "{r}");
    let (s, r) = as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{f3}/submit"),
        None,
    )
    .await;
    assert_eq!(
        (s, &r["state"], &r["reviews"]),
        (201, &json!("submitted"), &json!([])),
        "{r}"
    );
    let (s, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{f3}/reviews"),
        Some(review("approve")),
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
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
        5,
        "rita: fast's 4 and big's 1: {l}"
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

/// How many lines of the audit log record `action`.
async fn audited(app: &App, action: &str) -> usize {
    let audit = app.get("/api/v1/audit?limit=1000").await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .count()
}

/// Runs `(sql, id)` statements on the stopped server's store (a stop
/// simulated between two transactions).
async fn on_store(app: &App, statements: &[(&str, i64)]) {
    let store = gigafab_server::store::Store::open(&app.store_url())
        .await
        .unwrap();
    for (sql, id) in statements {
        sqlx::query(sql)
            .bind(*id)
            .execute(&store.pool)
            .await
            .unwrap();
    }
}

/// Mails a local SMTP sink received: (recipients, the message).
type Inbox = std::sync::Arc<std::sync::Mutex<Vec<(Vec<String>, String)>>>;

/// A local SMTP sink: speaks enough SMTP for a relay client (greeting,
/// EHLO, MAIL, RCPT, DATA, QUIT) and keeps every message it receives.
async fn smtp_sink() -> (String, Inbox) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let inbox: Inbox = Default::default();
    let keep = inbox.clone();
    tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                let (mut rcpt, mut data, mut in_data) = (Vec::new(), String::new(), false);
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            keep.lock()
                                .unwrap()
                                .push((std::mem::take(&mut rcpt), std::mem::take(&mut data)));
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            data.push_str(&line);
                            data.push('\n');
                        }
                        continue;
                    }
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250 sink\r\n",
                        "RCPT" => {
                            let to = line.split(':').nth(1).unwrap_or("").trim();
                            rcpt.push(to.trim_matches(|c| c == '<' || c == '>').to_string());
                            b"250 ok\r\n"
                        }
                        "DATA" => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 ok\r\n",
                    };
                    w.write_all(answer).await.unwrap();
                }
            });
        }
    });
    (addr, inbox)
}

both_stores!(notifications_reach_the_smtp_relay);

/// Assigned, submitted and decided: each a mail through the site's relay
/// to the user it concerns, written to the outbox with the transition.
async fn notifications_reach_the_smtp_relay(mut app: App) {
    let (relay, inbox) = smtp_sink().await;
    app.kill9();
    app.extra = vec![
        "--smtp-relay".into(),
        relay,
        "--mail-from".into(),
        "gigafab@factory.example".into(),
    ];
    app.start(None);
    for (o, c) in [("acme", "sme"), ("rev", "public")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    // an address is one mailbox: no line break can reach a mail header
    for bad in [
        "not-an-address",
        "x@y.example\r\nBcc: all@y.example",
        "a b@c.example",
    ] {
        let (s, e) = app
            .call(
                "POST",
                "/api/v1/users",
                Some(TOKEN),
                Some(json!({"name": "eve", "org": "acme", "email": bad})),
            )
            .await;
        assert_eq!(s, 422, "{bad:?}: {e}");
    }
    let u = app
        .post(
            "/api/v1/users",
            json!({"name": "alice", "org": "acme", "email": "alice@acme.example"}),
        )
        .await;
    let alice = u["token"].as_str().unwrap().to_string();
    assert_eq!(u["email"], "alice@acme.example");
    let u = app
        .post(
            "/api/v1/users",
            json!({"name": "rita", "org": "rev", "email": "rita@rev.example"}),
        )
        .await;
    let (rita, rita_id) = (
        u["token"].as_str().unwrap().to_string(),
        u["id"].as_i64().unwrap(),
    );
    let c = app
        .post(
            "/api/v1/calls",
            json!({"name": "fast", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 100}),
        )
        .await;
    let call = c["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/calls/{call}/reviewers"),
        json!({"user": rita_id}),
    )
    .await;
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(json!({"call": call, "title": "line\r\nbreak", "project": "p", "gpu_hours": 10, "days": 5})),
    )
    .await;
    let id = r["id"].as_i64().unwrap();
    as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{id}/submit"),
        None,
    )
    .await;
    let (s, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{id}/reviews"),
        Some(json!({"score": 5, "verdict": "approve"})),
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
    let t = std::time::Instant::now();
    while inbox.lock().unwrap().len() < 3 {
        assert!(
            t.elapsed().as_secs() < 20,
            "mails: {:?}",
            inbox.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mails = inbox.lock().unwrap().clone();
    let subject = |m: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or("")
            .to_string()
    };
    let got: Vec<(String, String)> = mails
        .iter()
        .map(|(to, m)| (to.join(","), subject(m)))
        .collect();
    assert_eq!(
        got,
        [
            (
                "rita@rev.example".to_string(),
                "[gigafab] you review call fast".to_string()
            ),
            (
                "rita@rev.example".to_string(),
                format!("[gigafab] request {id} submitted to call fast: line  break")
            ),
            (
                "alice@acme.example".to_string(),
                format!("[gigafab] request {id} approved: line  break")
            ),
        ]
    );
    assert!(
        mails
            .iter()
            .all(|(_, m)| m.contains("From: gigafab@factory.example")),
        "{mails:?}"
    );
    assert_eq!(mails.len(), 3, "each once");
}

both_stores!(cut_approvals_are_finished_at_start);

/// A stop between an approval's two transactions leaves a request
/// approved without its allocation: the next start finds the allocation
/// granted for it, or grants it then (its envelope was charged already),
/// and never grants twice.
async fn cut_approvals_are_finished_at_start(mut app: App) {
    for (o, c) in [("acme", "sme"), ("rev", "public")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let (alice, _) = user(&app, "alice", Some("acme"), "member").await;
    let (rita, rita_id) = user(&app, "rita", Some("rev"), "member").await;
    let c = app
        .post(
            "/api/v1/calls",
            json!({"name": "fast", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 1000}),
        )
        .await;
    let call = c["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/calls/{call}/reviewers"),
        json!({"user": rita_id}),
    )
    .await;
    let mut ids = Vec::new();
    for (p, h) in [("p1", 100.0), ("p2", 200.0)] {
        let (_, r) = as_(
            &app,
            &alice,
            "POST",
            "/api/v1/requests",
            Some(json!({"call": call, "title": p, "project": p, "gpu_hours": h, "days": 30})),
        )
        .await;
        let id = r["id"].as_i64().unwrap();
        as_(
            &app,
            &alice,
            "POST",
            &format!("/api/v1/requests/{id}/submit"),
            None,
        )
        .await;
        ids.push(id);
    }
    let (s, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("/api/v1/requests/{}/reviews", ids[0]),
        Some(json!({"score": 4, "verdict": "approve"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let granted = r["allocation"].as_i64().unwrap();
    app.kill9();
    // the two cuts: after the grant (its id not recorded), and before it
    on_store(
        &app,
        &[
            (
                "UPDATE access_requests SET allocation_id = NULL WHERE id = $1",
                ids[0],
            ),
            (
                "UPDATE access_requests SET state = 'approved' WHERE id = $1",
                ids[1],
            ),
            (
                "UPDATE calls SET granted_gpu_s = granted_gpu_s + 720000 WHERE id = $1",
                call,
            ),
        ],
    )
    .await;
    app.start(None);
    let t = std::time::Instant::now();
    let (a, b) = loop {
        let (_, a) = as_(
            &app,
            &alice,
            "GET",
            &format!("/api/v1/requests/{}", ids[0]),
            None,
        )
        .await;
        let (_, b) = as_(
            &app,
            &alice,
            "GET",
            &format!("/api/v1/requests/{}", ids[1]),
            None,
        )
        .await;
        if !a["allocation"].is_null() && !b["allocation"].is_null() {
            break (a, b);
        }
        assert!(t.elapsed().as_secs() < 20, "not finished: {a} {b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(
        a["allocation"], granted,
        "the grant made before the stop, not a second"
    );
    let second = b["allocation"].as_i64().unwrap();
    assert_ne!(second, granted);
    let alloc = app.get(&format!("/api/v1/allocations/{second}")).await;
    assert_eq!(
        (&alloc["org"], &alloc["granted_gpu_hours"]),
        (&json!("acme"), &json!(200.0))
    );
    let allocs = app.get("/api/v1/allocations").await;
    assert_eq!(
        allocs["items"].as_array().unwrap().len(),
        3,
        "default, and one per request: {allocs}"
    );
    let calls = app.get("/api/v1/calls").await;
    assert_eq!(calls["items"][0]["granted_gpu_hours"], 300.0);
    let repaired = audited(&app, "approve_request_repaired").await;
    assert_eq!(repaired, 2);
}

both_stores!(extension_requests);

/// An extension request follows the same review as a new one; its
/// approval extends its allocation (more GPU-hours, a later end) within
/// the call's envelope, only for the applicant's own allocation, once even
/// when a stop cuts the approval.
async fn extension_requests(mut app: App) {
    for (o, c) in [("acme", "sme"), ("uni", "academia"), ("rev", "public")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let (alice, _) = user(&app, "alice", Some("acme"), "member").await;
    let (bob, _) = user(&app, "bob", Some("uni"), "member").await;
    let (rita, rita_id) = user(&app, "rita", Some("rev"), "member").await;
    let c = app
        .post(
            "/api/v1/calls",
            json!({"name": "fast", "mode": "fast-lane", "categories": ["sme", "academia"], "envelope_gpu_hours": 1000}),
        )
        .await;
    let call = c["id"].as_i64().unwrap();
    app.post(
        &format!("/api/v1/calls/{call}/reviewers"),
        json!({"user": rita_id}),
    )
    .await;
    // file, submit, approve: the approved request
    let through = |body: serde_json::Value| {
        let (app, alice, rita) = (&app, alice.clone(), rita.clone());
        async move {
            let (s, r) = as_(app, &alice, "POST", "/api/v1/requests", Some(body)).await;
            assert_eq!(s, 201, "{r}");
            let id = r["id"].as_i64().unwrap();
            as_(
                app,
                &alice,
                "POST",
                &format!("/api/v1/requests/{id}/submit"),
                None,
            )
            .await;
            let (s, r) = as_(
                app,
                &rita,
                "POST",
                &format!("/api/v1/requests/{id}/reviews"),
                Some(json!({"score": 4, "verdict": "approve"})),
            )
            .await;
            assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
            r
        }
    };
    let r = through(
        json!({"call": call, "title": "first", "project": "p", "gpu_hours": 100, "days": 30}),
    )
    .await;
    let a = r["allocation"].as_i64().unwrap();
    let before = app.get(&format!("/api/v1/allocations/{a}")).await;
    // refusals: another organisation's allocation, a project, none
    let ext = |h: f64, d: f64| json!({"call": call, "title": "more", "extends": a, "gpu_hours": h, "days": d});
    let (s, e) = as_(&app, &bob, "POST", "/api/v1/requests", Some(ext(10.0, 1.0))).await;
    assert_eq!(
        (s, &e["error"]),
        (404, &json!("allocation_not_found")),
        "{e}"
    );
    let mut with_project = ext(10.0, 1.0);
    with_project["project"] = json!("p");
    let (s, e) = as_(&app, &alice, "POST", "/api/v1/requests", Some(with_project)).await;
    assert_eq!(s, 422, "{e}");
    let (s, e) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(json!({"call": call, "title": "x", "gpu_hours": 1, "days": 1})),
    )
    .await;
    assert_eq!(s, 422, "a new allocation names its project: {e}");
    assert!(
        e["message"].as_str().unwrap().starts_with("project:"),
        "{e}"
    );
    // only through the call that granted it, and never in a playground
    for (name, mode) in [("other", "fast-lane"), ("play", "playground")] {
        let c2 = app
            .post(
                "/api/v1/calls",
                json!({"name": name, "mode": mode, "categories": ["sme"], "envelope_gpu_hours": 1000}),
            )
            .await;
        let mut x = ext(10.0, 1.0);
        x["call"] = c2["id"].clone();
        let (s, e) = as_(&app, &alice, "POST", "/api/v1/requests", Some(x)).await;
        assert_eq!(
            (s, &e["error"]),
            (422, &json!("not_eligible")),
            "{mode}: {e}"
        );
    }
    // the extension, reviewed as any request
    let r = through(ext(50.0, 10.0)).await;
    assert_eq!(
        (r["allocation"].as_i64(), r["extends"].as_i64()),
        (Some(a), Some(a))
    );
    let after = app.get(&format!("/api/v1/allocations/{a}")).await;
    assert_eq!(after["granted_gpu_hours"], 150.0);
    let ms = |v: &serde_json::Value| {
        gigafab_core::time::parse_rfc3339(v["valid_until"].as_str().unwrap()).unwrap()
    };
    assert_eq!(
        ms(&after) - ms(&before),
        10 * 86_400_000,
        "{before} {after}"
    );
    let calls = app.get("/api/v1/calls").await;
    assert_eq!(calls["items"][0]["granted_gpu_hours"], 150.0);
    let allocs = app.get("/api/v1/allocations?org=acme").await;
    assert_eq!(
        allocs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["org"] == "acme")
            .count(),
        1,
        "extended, not granted anew: {allocs}"
    );
    // cut by a stop after the extension was applied, and before: each is
    // finished once at the next start
    let e1 = through(ext(20.0, 0.0)).await["id"].as_i64().unwrap();
    let (_, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(ext(30.0, 0.0)),
    )
    .await;
    let e2 = r["id"].as_i64().unwrap();
    as_(
        &app,
        &alice,
        "POST",
        &format!("/api/v1/requests/{e2}/submit"),
        None,
    )
    .await;
    app.kill9();
    on_store(
        &app,
        &[
            (
                "UPDATE access_requests SET allocation_id = NULL WHERE id = $1",
                e1,
            ),
            (
                "UPDATE access_requests SET state = 'approved' WHERE id = $1",
                e2,
            ),
            (
                "UPDATE calls SET granted_gpu_s = granted_gpu_s + 108000 WHERE id = $1",
                call,
            ),
        ],
    )
    .await;
    app.start(None);
    let t = std::time::Instant::now();
    loop {
        let (_, x) = as_(&app, &alice, "GET", &format!("/api/v1/requests/{e1}"), None).await;
        let (_, y) = as_(&app, &alice, "GET", &format!("/api/v1/requests/{e2}"), None).await;
        if x["allocation"] == a && y["allocation"] == a {
            break;
        }
        assert!(t.elapsed().as_secs() < 20, "not finished: {x} {y}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = app.get(&format!("/api/v1/allocations/{a}")).await;
    assert_eq!(
        after["granted_gpu_hours"], 200.0,
        "150 + 20 (applied before the stop, not again) + 30 (applied at the start)"
    );
    let extended = audited(&app, "extend_allocation").await;
    assert_eq!(extended, 3);
}

both_stores!(eligibility_and_request_details);

/// A call limited to some countries and accelerator types: organisations
/// of other countries (or of none recorded) are not eligible; a request
/// splits its GPU-hours among the offered types only, adding up; its team
/// are users of its own organisation; its residency needs are one line.
async fn eligibility_and_request_details(app: App) {
    let (s, e) = app
        .call(
            "POST",
            "/api/v1/orgs",
            Some(TOKEN),
            Some(json!({"name": "x", "category": "sme", "country": "fr"})),
        )
        .await;
    assert_eq!(s, 422, "{e}");
    for (o, country) in [("acme", Some("FR")), ("beta", Some("DE")), ("gamma", None)] {
        let mut body = json!({"name": o, "category": "sme"});
        if let Some(c) = country {
            body["country"] = json!(c);
        }
        let v = app.post("/api/v1/orgs", body).await;
        assert_eq!(v["country"], json!(country));
    }
    let (alice, _) = user(&app, "alice", Some("acme"), "member").await;
    user(&app, "carol", Some("acme"), "member").await;
    let (bob, _) = user(&app, "bob", Some("beta"), "member").await;
    let (gus, _) = user(&app, "gus", Some("gamma"), "member").await;
    let c = app
        .post(
            "/api/v1/calls",
            json!({"name": "fr-gpu", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 1000,
                   "countries": ["FR"], "types": ["h100", "mi300x"]}),
        )
        .await;
    assert_eq!(
        (&c["countries"], &c["types"]),
        (&json!(["FR"]), &json!(["h100", "mi300x"]))
    );
    let call = c["id"].as_i64().unwrap();
    let req = |extra: serde_json::Value| {
        let mut b =
            json!({"call": call, "title": "t", "project": "p", "gpu_hours": 150, "days": 30});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    for t in [&bob, &gus] {
        let (s, e) = as_(&app, t, "POST", "/api/v1/requests", Some(req(json!({})))).await;
        assert_eq!((s, &e["error"]), (422, &json!("not_eligible")), "{e}");
    }
    for (extra, says) in [
        (
            json!({"gpu_hours_by_type": {"a100": 150}}),
            "does not offer `a100` (it offers h100, mi300x)",
        ),
        (
            json!({"gpu_hours_by_type": {"h100": 100}}),
            "adds up to 100, not gpu_hours 150",
        ),
        (
            json!({"team": ["alice", "bob"]}),
            "team: `bob` is not a user of your organisation",
        ),
        (json!({"residency": "EU\nonly"}), "residency: one line"),
    ] {
        let (s, e) = as_(&app, &alice, "POST", "/api/v1/requests", Some(req(extra))).await;
        assert_eq!(s, 422, "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{e}");
    }
    let (s, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(req(
            json!({"gpu_hours_by_type": {"h100": 100, "mi300x": 50},
                        "residency": "EU only", "team": ["alice", "carol"]}),
        )),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_i64().unwrap();
    let (_, r) = as_(&app, &alice, "GET", &format!("/api/v1/requests/{id}"), None).await;
    assert_eq!(
        r["gpu_hours_by_type"],
        json!({"h100": 100.0, "mi300x": 50.0})
    );
    assert_eq!(
        (&r["residency"], &r["team"]),
        (&json!("EU only"), &json!(["alice", "carol"]))
    );
}

both_stores!(approval_makes_project_members_and_comments);

/// An approval makes the project with the applicant and the team as its
/// members; the allocation it grants runs that project's jobs, by its
/// members (and the organisation's owners) only. Applicants and reviewers
/// write comments on a request; others cannot.
async fn approval_makes_project_members_and_comments(mut app: App) {
    for (o, c) in [("acme", "sme"), ("rev", "public"), ("uni", "academia")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let (alice, _) = user(&app, "alice", Some("acme"), "member").await;
    let (carol, carol_id) = user(&app, "carol", Some("acme"), "member").await;
    let (dave, dave_id) = user(&app, "dave", Some("acme"), "member").await;
    let (olga, _) = user(&app, "olga", Some("acme"), "owner").await;
    let (rita, rita_id) = user(&app, "rita", Some("rev"), "member").await;
    let (bob, _) = user(&app, "bob", Some("uni"), "member").await;
    let call = app
        .post(
            "/api/v1/calls",
            json!({"name": "fast", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 1000}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    app.post(
        &format!("/api/v1/calls/{call}/reviewers"),
        json!({"user": rita_id}),
    )
    .await;
    let (s, r) = as_(
        &app,
        &alice,
        "POST",
        "/api/v1/requests",
        Some(
            json!({"call": call, "title": "vision", "project": "vision", "gpu_hours": 100,
                    "days": 30, "team": ["carol"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_i64().unwrap();
    let path = format!("/api/v1/requests/{id}");
    as_(&app, &alice, "POST", &format!("{path}/submit"), None).await;

    // the conversation: the reviewer asks, the applicants answer
    let comment = |t: &str| Some(json!({ "text": t }));
    let said = [
        (&rita, "which dataset?", "rita", "reviewer"),
        (&alice, "ImageNet-1k", "alice", "applicant"),
        (&dave, "and its licence allows it", "dave", "applicant"),
        (&TOKEN.to_string(), "noted", "admin", "operator"),
    ];
    for (who, text, ..) in &said {
        let (s, e) = as_(
            &app,
            who,
            "POST",
            &format!("{path}/comments"),
            comment(text),
        )
        .await;
        assert_eq!(s, 201, "{e}");
    }
    for (who, body, status) in [
        (&bob, comment("let me in"), 404),
        (&alice, comment("   "), 422),
        (&alice, Some(json!({"text": "x".repeat(10_001)})), 422),
        (&alice, Some(json!({"words": "x"})), 422),
    ] {
        let (s, e) = as_(&app, who, "POST", &format!("{path}/comments"), body).await;
        assert_eq!(s, status, "{e}");
    }
    let (_, r) = as_(&app, &rita, "GET", &path, None).await;
    let got: Vec<(String, String, String)> = r["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["text"].as_str().unwrap().into(),
                c["user"].as_str().unwrap().into(),
                c["side"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = said
        .iter()
        .map(|(_, t, u, side)| (t.to_string(), u.to_string(), side.to_string()))
        .collect();
    assert_eq!(got, want);
    // the listing carries them too
    let (_, list) = as_(&app, &alice, "GET", "/api/v1/requests", None).await;
    assert_eq!(list["items"][0]["comments"].as_array().unwrap().len(), 4);
    assert_eq!(audited(&app, "comment_request").await, 4);

    // approved: the project has the applicant and the team as members
    let (s, r) = as_(
        &app,
        &rita,
        "POST",
        &format!("{path}/reviews"),
        Some(json!({"score": 5, "verdict": "approve"})),
    )
    .await;
    assert_eq!((s, &r["state"]), (201, &json!("approved")), "{r}");
    let alloc = r["allocation"].as_i64().unwrap();
    let projects = app.get("/api/v1/projects").await;
    let vision = projects["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "vision")
        .unwrap()
        .clone();
    assert_eq!(vision["members"], json!(["alice", "carol"]));
    let allocs = app.get("/api/v1/allocations").await;
    let a = allocs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == alloc)
        .unwrap()
        .clone();
    assert_eq!(a["project"], "vision");

    // its members and the owner run on it (in the project, named or not);
    // dave, of the same organisation, does not; nor in another project
    let job = |project: Option<&str>| {
        let mut b = json!({"allocation": alloc, "gpus": 1, "command": ["true"]});
        if let Some(p) = project {
            b["project"] = json!(p);
        }
        b
    };
    for (who, project) in [(&alice, None), (&carol, Some("vision")), (&olga, None)] {
        let (s, j) = app.submit(who, job(project)).await;
        assert_eq!((s, &j["project"]), (201, &json!("vision")), "{j}");
    }
    let (s, e) = app.submit(&dave, job(None)).await;
    assert_eq!((s, &e["error"]), (403, &json!("not_project_member")), "{e}");
    let (s, e) = as_(
        &app,
        &olga,
        "POST",
        "/api/v1/projects",
        Some(json!({"org": "acme", "name": "other"})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    let (s, e) = app.submit(&alice, job(Some("other"))).await;
    assert_eq!((s, &e["error"]), (422, &json!("wrong_project")), "{e}");

    // the owner adds dave: he runs; removes carol: she does not
    let pid = vision["id"].as_i64().unwrap();
    let members = format!("/api/v1/projects/{pid}/members");
    for (who, status) in [(&alice, 403), (&bob, 404)] {
        let (s, e) = as_(&app, who, "POST", &members, Some(json!({"user": dave_id}))).await;
        assert_eq!(s, status, "{e}");
    }
    let (s, e) = as_(
        &app,
        &olga,
        "POST",
        &members,
        Some(json!({"user": rita_id})),
    )
    .await;
    assert_eq!(s, 422, "a user of another organisation: {e}");
    let (s, p) = as_(
        &app,
        &olga,
        "POST",
        &members,
        Some(json!({"user": dave_id})),
    )
    .await;
    assert_eq!(
        (s, &p["members"]),
        (200, &json!(["alice", "carol", "dave"])),
        "{p}"
    );
    let (s, p) = as_(
        &app,
        &olga,
        "DELETE",
        &format!("{members}/{carol_id}"),
        None,
    )
    .await;
    assert_eq!((s, &p["members"]), (200, &json!(["alice", "dave"])), "{p}");
    let (s, _) = app.submit(&dave, job(None)).await;
    assert_eq!(s, 201);
    let (s, e) = app.submit(&carol, job(None)).await;
    assert_eq!((s, &e["error"]), (403, &json!("not_project_member")), "{e}");

    // a project made with members is closed to the others too; one without
    // is open to every member of the organisation
    let (s, p) = as_(
        &app,
        &olga,
        "POST",
        "/api/v1/projects",
        Some(json!({"org": "acme", "name": "closed", "members": ["dave"]})),
    )
    .await;
    assert_eq!((s, &p["members"]), (201, &json!(["dave"])), "{p}");
    let (s, e) = as_(
        &app,
        &olga,
        "POST",
        "/api/v1/projects",
        Some(json!({"org": "acme", "name": "bad", "members": ["rita"]})),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    let other = app
        .post(
            "/api/v1/allocations",
            json!({"org": "acme", "gpu_hours": 10}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let on_other = |project: &str| json!({"allocation": other, "gpus": 1, "command": ["true"], "project": project});
    let (s, e) = app.submit(&alice, on_other("closed")).await;
    assert_eq!((s, &e["error"]), (403, &json!("not_project_member")), "{e}");
    let (s, e) = app.submit(&alice, on_other("other")).await;
    assert_eq!(s, 201, "{e}");

    // all of it is in the store: the same after a restart
    let before = app.get("/api/v1/projects").await;
    assert_eq!(before["items"].as_array().unwrap().len(), 3);
    app.kill9();
    app.start(None);
    assert_eq!(app.get("/api/v1/projects").await, before);
    let (s, e) = app.submit(&carol, job(None)).await;
    assert_eq!((s, &e["error"]), (403, &json!("not_project_member")), "{e}");
    let (s, e) = app.submit(&dave, job(None)).await;
    assert_eq!(s, 201, "{e}");
    let (_, r) = as_(&app, &alice, "GET", &path, None).await;
    assert_eq!(r["comments"].as_array().unwrap().len(), 4);
    let a = app.get("/api/v1/allocations").await;
    assert!(
        a["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == alloc && a["project"] == "vision")
    );
}
