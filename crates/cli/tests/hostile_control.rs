//! The hostile-tenant suite, third part: a tenant that tries to starve the
//! control plane for the others (sessions, connections, upload slots,
//! request rates), to make a retry count twice, or to act past what its
//! role allows. Each flood must leave the other tenants served.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

fn server(tag: &str, extra: &[&str]) -> (std::path::PathBuf, Server) {
    let dir = fresh_dir(tag);
    let data = dir.join("data");
    let mut args = base_args(&data);
    args.extend(extra.iter().map(|s| s.to_string()));
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    (dir, s)
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Issue 26, item 11: one member submitted ~600 jobs a second. Requests
/// that change state are limited per token and per organisation, answered
/// 429 with Retry-After; another organisation is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_submissions_is_limited_and_others_are_served() {
    let (dir, s) = server(
        "rate",
        &["--writes-per-token", "10", "--writes-per-org", "50"],
    );
    let who = s.tenants(&["a", "b"], 1000.0).await;
    let (ta, aa) = who[0].clone();
    let (tb, ab) = who[1].clone();
    let job = |a: i64| json!({"allocation": a, "gpus": 1, "time_limit_s": 60, "command": ["true"]});
    let http = reqwest::Client::new();
    let (mut ok, mut limited, mut retry_after) = (0, 0, None);
    for _ in 0..200 {
        let r = http
            .post(format!("{}/api/v1/jobs", s.url))
            .bearer_auth(&ta)
            .json(&job(aa))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            201 => ok += 1,
            429 => {
                limited += 1;
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = r.text().await.unwrap();
                assert!(body.contains("rate_limited"), "{body}");
            }
            other => panic!("{other}: {}", r.text().await.unwrap()),
        }
    }
    assert!(limited > 0, "200 submissions at once, none limited");
    assert!(
        (50..120).contains(&ok),
        "{ok} accepted of 200 (burst 50 + 10/s)"
    );
    assert!(
        retry_after.is_some_and(|s| (1..=10).contains(&s)),
        "{retry_after:?}"
    );
    // the other organisation is served at once; reads are not limited
    let (code, body) = s
        .call("POST", "/api/v1/jobs", Some(&tb), Some(job(ab)))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, _) = s.call("GET", "/api/v1/jobs", Some(&ta), None).await;
    assert_eq!(code, 200);
    // admins are not limited
    for _ in 0..80 {
        let (code, body) = s
            .call("POST", "/api/v1/jobs", Some(TOKEN), Some(job(1)))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxy in front of the server that forwards the first connection's
/// request and then closes it without passing the answer on (a lost
/// answer); later connections go through whole.
fn lossy_proxy(server: String) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut first = true;
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut up = std::net::TcpStream::connect(&server).unwrap();
            let lose = std::mem::take(&mut first);
            let (mut c2, mut up2) = (c.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut up2);
            });
            std::thread::spawn(move || {
                if lose {
                    // the server answers; the client never hears it
                    let mut buf = [0u8; 4096];
                    let _ = up.read(&mut buf);
                    let _ = c.shutdown(std::net::Shutdown::Both);
                    return;
                }
                let mut buf = [0u8; 65536];
                loop {
                    match up.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = c.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    format!("http://{at}")
}

/// Issue 26, item 12: submissions stored while the client saw a
/// connection error made a second job when retried. `Idempotency-Key`
/// names one submission; the CLI sends one and retries with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_submission_never_makes_a_second_job() {
    let (dir, s) = server("idempotency", &[]);
    let body = json!({"allocation": 1, "gpus": 1, "command": ["true"]});
    let post = |key: &'static str| {
        let (url, body) = (s.url.clone(), body.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v1/jobs"))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = r.headers().contains_key("idempotent-replayed");
            let code = r.status().as_u16();
            let v: serde_json::Value = r.json().await.unwrap();
            (code, v, replayed)
        }
    };
    let (c1, j1, r1) = post("retry-key-1").await;
    let (c2, j2, r2) = post("retry-key-1").await;
    assert_eq!((c1, r1), (201, false), "{j1}");
    assert_eq!((c2, r2), (200, true), "{j2}");
    assert_eq!(j1["id"], j2["id"]);
    let (c3, j3, _) = post("retry-key-2").await;
    assert_eq!(c3, 201);
    assert_ne!(j3["id"], j1["id"]);
    // a bad key is refused, with a clear error
    let (code, body) = {
        let r = reqwest::Client::new()
            .post(format!("{}/api/v1/jobs", s.url))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "has space")
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad_idempotency_key"), "{body}");
    // allocations (an admin's grant) too; a key names one kind of thing
    let grant = |key: &'static str, path: &'static str, body: serde_json::Value| {
        let url = s.url.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}{path}"))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let g = json!({"org": "default", "gpu_hours": 5.0});
    let (c1, a1) = grant("grant-1", "/api/v1/allocations", g.clone()).await;
    let (c2, a2) = grant("grant-1", "/api/v1/allocations", g.clone()).await;
    assert_eq!((c1, c2), (201, 200), "{a1} {a2}");
    assert_eq!(a1["id"], a2["id"]);
    let (c, e) = grant(
        "grant-1",
        "/api/v1/jobs",
        json!({"allocation": 1, "gpus": 1, "command": ["true"]}),
    )
    .await;
    assert_eq!(
        (c, &e["error"]),
        (422, &json!("idempotency_key_reused")),
        "{e}"
    );
    // another user's key of the same text is its own
    let who = s.tenants(&["a"], 10.0).await;
    let (ta, aa) = &who[0];
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/jobs", s.url))
        .bearer_auth(ta)
        .header("Idempotency-Key", "retry-key-1")
        .json(&json!({"allocation": aa, "gpus": 1, "command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    // the CLI through a connection that loses the first answer: it retries
    // with its key, and one job is made
    let before = s.json("GET", "/api/v1/jobs?limit=1000", TOKEN, None).await["items"]
        .as_array()
        .unwrap()
        .len();
    let proxy = lossy_proxy(host_port(&s.url));
    let out = gigafab()
        .args([
            "submit",
            "--server",
            &proxy,
            "--token",
            TOKEN,
            "--allocation",
            "1",
            "--gpus",
            "1",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = s.json("GET", "/api/v1/jobs?limit=1000", TOKEN, None).await["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(after, before + 1, "the retry made a second job");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection to the server from 127.0.0.2 (another client address).
fn attacker_connection(port: u16) -> std::io::Result<std::net::TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: std::net::SocketAddr = "127.0.0.2:0".parse().unwrap();
    sock.bind(&from.into())?;
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())?;
    Ok(sock.into())
}

/// Issue 26, item 9: 600 connections held open by one client reset the
/// health probes of everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_connections_starves_no_one() {
    let (dir, s) = server("slowloris", &["--header-timeout", "60"]);
    let port: u16 = host_port(&s.url)
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // the attacker: another loopback address, 600 connections that send
    // half a request and wait
    let mut held = Vec::new();
    for _ in 0..600 {
        if let Ok(mut t) = attacker_connection(port) {
            let _ = t.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n");
            held.push(t);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // everyone else: 15 probes over 3 s, each answered
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let t0 = Instant::now();
    for i in 0..15 {
        let r = http
            .get(format!("{}/api/v1/health", s.url))
            .send()
            .await
            .unwrap_or_else(|e| panic!("probe {i} after {:?}: {e}", t0.elapsed()));
        assert_eq!(r.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the attacker kept at most its share
    let mut open = 0;
    for t in &mut held {
        t.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        match t.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            _ => {}
        }
    }
    assert!(open <= 64, "{open} of the attacker's connections are open");
    // one more from the attacker is answered, not reset: 429 and why
    let mut t = attacker_connection(port).unwrap();
    t.write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = t.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 429") && answer.contains("too_many_connections"),
        "{answer}"
    );
    assert!(
        s.stderr().contains("max-connections-per-client"),
        "{}",
        s.stderr()
    );
    drop(held);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 8: a member made 640 tokens and signed in 10,240 times:
/// the portal's session cap evicted another user's session. Caps evict
/// only the flooder's own sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_flood_evicts_only_the_flooders_sessions() {
    let (dir, s) = server(
        "sessions",
        &["--writes-per-token", "0", "--writes-per-org", "0"],
    );
    let who = s.tenants(&["a", "b"], 1.0).await;
    let (victim, _) = who[1].clone();
    let no_redirect = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    };
    let sign_in = |token: String| {
        let (http, url) = (no_redirect(), s.url.clone());
        async move {
            let r = http
                .post(format!("{url}/login"))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap();
            r.headers()
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|c| c.starts_with("gf_session="))
                .map(|c| c.split(';').next().unwrap().to_string())
                .unwrap_or_else(|| panic!("no session cookie: {}", r.status()))
        }
    };
    let victim_cookie = sign_in(victim).await;
    // the flooder: 640 tokens of one member, 16 sign-ins each
    let (flooder, _) = who[0].clone();
    let mut tokens = Vec::new();
    for _ in 0..640 {
        let t = s
            .json("POST", "/api/v1/tokens", &flooder, Some(json!({})))
            .await;
        tokens.push(t["token"].as_str().unwrap().to_string());
    }
    let first_flood = sign_in(flooder.clone()).await;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in tokens.chunks(80) {
        let chunk = chunk.to_vec();
        let url = s.url.clone();
        tasks.spawn(async move {
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            for t in chunk {
                for _ in 0..16 {
                    http.post(format!("{url}/login"))
                        .form(&[("token", t.clone())])
                        .send()
                        .await
                        .unwrap();
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let page = |cookie: String| {
        let (http, url) = (no_redirect(), s.url.clone());
        async move {
            http.get(format!("{url}/me"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        page(victim_cookie).await,
        200,
        "the victim's session was evicted"
    );
    assert_ne!(
        page(first_flood).await,
        200,
        "the flooder's own oldest session went"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, item 10: one organisation held 63 of the server's 64 upload
/// slots (up to 24 h each), and another was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_slots_are_per_organisation() {
    let (dir, s) = server(
        "uploads",
        &["--writes-per-token", "0", "--writes-per-org", "0"],
    );
    let who = s.tenants(&["a", "b"], 1.0).await;
    for org in ["a", "b"] {
        let (code, body) = s
            .call("POST", "/api/v1/catalog", Some(TOKEN), Some(json!({"name": format!("{org}-data"), "kind": "dataset", "licence": "MIT", "org": org})))
            .await;
        assert_eq!(code, 201, "{body}");
    }
    let sha = "0".repeat(64);
    let upload = |token: String, entry: &'static str, n: usize| {
        let url = s.url.clone();
        let sha = sha.clone();
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v1/catalog/{entry}/uploads"))
                .bearer_auth(token)
                .json(&json!({"files": [{"path": format!("f{n}"), "size": 1, "sha256": sha}]}))
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            (code, r.text().await.unwrap())
        }
    };
    let mut refused = None;
    for n in 0..63 {
        let (code, body) = upload(who[0].0.clone(), "a-data", n).await;
        if code != 201 {
            refused = Some((n, code, body));
            break;
        }
    }
    let (n, code, body) = refused.expect("one organisation took 63 upload slots");
    assert_eq!((n, code), (8, 429), "{body}");
    assert!(body.contains("uploads in progress"), "{body}");
    let (code, body) = upload(who[1].0.clone(), "b-data", 0).await;
    assert_eq!(code, 201, "the other organisation: {body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, lower items: a disabled user's queued jobs used to run. They
/// are cancelled when the user is disabled, and the audit log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_users_queued_jobs_never_run() {
    let (dir, s) = server("disabled-queue", &[]);
    let who = s.tenants(&["a"], 10_000.0).await;
    let (ta, aa) = who[0].clone();
    // the whole fleet is busy: the member's job waits
    let mut blockers = Vec::new();
    for t in ["h100", "mi300x"] {
        let (code, b) = s
            .call(
                "POST",
                "/api/v1/jobs",
                Some(TOKEN),
                Some(json!({"allocation": 1, "gpus": 4, "type": t, "command": ["sleep", "30"]})),
            )
            .await;
        assert_eq!(code, 201, "{b}");
        let id = serde_json::from_str::<serde_json::Value>(&b).unwrap()["id"]
            .as_i64()
            .unwrap();
        s.wait_state(TOKEN, id, &["running"]).await;
        blockers.push(id);
    }
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            &ta,
            Some(json!({"allocation": aa, "gpus": 4, "command": ["true"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = s
        .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
        .await;
    assert_eq!(now["state"], "queued", "{now:#}");
    let user = s.json("GET", "/api/v1/users", TOKEN, None).await["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "a-u")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let d = s
        .json(
            "POST",
            &format!("/api/v1/users/{user}/disable"),
            TOKEN,
            None,
        )
        .await;
    assert_eq!(d["queued_jobs_cancelled"], json!([id]), "{d}");
    let j = s
        .wait_state(TOKEN, id, &["cancelled", "completed", "failed"])
        .await;
    assert_eq!(j["state"], "cancelled", "{j:#}");
    let audit = s.json("GET", "/api/v1/audit?limit=1000", TOKEN, None).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "cancel_jobs_of_disabled_user"),
        "{audit:#}"
    );
    for b in blockers {
        s.call("DELETE", &format!("/api/v1/jobs/{b}"), Some(TOKEN), None)
            .await;
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, lower items: a call's reviewers could read and comment on a
/// request still in `draft`, before its applicants sent it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviewers_see_a_request_only_once_it_is_submitted() {
    let (dir, s) = server("drafts", &[]);
    let who = s.tenants(&["a", "b"], 1.0).await;
    let (applicant, _) = who[0].clone();
    let (reviewer, _) = who[1].clone();
    let c = s
        .json("POST", "/api/v1/calls", TOKEN, Some(json!({"name": "fast", "mode": "fast-lane", "categories": ["sme"], "envelope_gpu_hours": 1000.0})))
        .await;
    let call = c["id"].as_i64().unwrap();
    let users = s.json("GET", "/api/v1/users", TOKEN, None).await;
    let rid = users["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "b-u")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    s.json(
        "POST",
        &format!("/api/v1/calls/{call}/reviewers"),
        TOKEN,
        Some(json!({"user": rid})),
    )
    .await;
    // created with an Idempotency-Key: its retry is the same request
    let create = || {
        let (url, applicant) = (s.url.clone(), applicant.clone());
        async move {
            let r = reqwest::Client::new()
                .post(format!("{url}/api/v1/requests"))
                .bearer_auth(applicant)
                .header("Idempotency-Key", "request-1")
                .json(&json!({"call": call, "title": "secret plan", "project": "p1", "gpu_hours": 10.0, "days": 30.0}))
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (c1, r) = create().await;
    let (c2, again) = create().await;
    assert_eq!((c1, c2), (201, 200), "{r} {again}");
    assert_eq!(r["id"], again["id"]);
    let id = r["id"].as_i64().unwrap();
    assert_eq!(r["state"], "draft");
    let (code, body) = s
        .call(
            "GET",
            &format!("/api/v1/requests/{id}"),
            Some(&reviewer),
            None,
        )
        .await;
    assert_eq!(code, 404, "a reviewer read a draft: {body}");
    let (_, list) = s
        .call("GET", "/api/v1/requests", Some(&reviewer), None)
        .await;
    assert!(!list.contains("secret plan"), "{list}");
    let (code, body) = s
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/comments"),
            Some(&reviewer),
            Some(json!({"text": "seen your draft"})),
        )
        .await;
    assert_eq!(code, 404, "a reviewer commented on a draft: {body}");
    // once sent, the reviewer reads it
    s.json(
        "POST",
        &format!("/api/v1/requests/{id}/submit"),
        &applicant,
        None,
    )
    .await;
    let (code, body) = s
        .call(
            "GET",
            &format!("/api/v1/requests/{id}"),
            Some(&reviewer),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 26, lower items: a write-ahead log whose last frame a crash cut
/// short was replayed without a word, though the docs promised a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_write_ahead_log_is_said_at_start() {
    let dir = fresh_dir("torn-wal");
    let data = dir.join("data");
    let args = base_args(&data);
    let mut s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    for _ in 0..5 {
        s.json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "command": ["true"]})),
        )
        .await;
    }
    // a crash: no checkpoint, the log stays
    s.child.kill().unwrap();
    let _ = s.child.wait();
    let wal = data.join("gigafab.db-wal");
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 4096, "a log to tear: {len} bytes");
    // a crash in the middle of writing the next commit's first frame: part
    // of a frame at the end, never acknowledged
    let mut f = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    std::io::Write::write_all(&mut f, &[0x5A; 100]).unwrap();
    drop(f);
    drop(s);
    let s = Server::start(&dir, &strs(&args), &[]).unwrap();
    let err = s.stderr();
    assert!(
        err.contains("torn commit") && err.contains("frames (pages) are dropped"),
        "{err}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
