//! Standalone gateways (`gigafab gateway`): two of them beside the
//! server, each serving an endpoint whose replica is a small
//! OpenAI-style server (tests/fixtures/echo_openai.py); scaling from
//! zero on a gateway's request, metering, revocation, and back to zero.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "common/app.rs"]
#[allow(unused_macros)]
mod app;
#[path = "common/oai.rs"]
mod oai;
#[path = "common/openapi.rs"]
mod openapi;
use app::*;

const ECHO: &str = include_str!("fixtures/echo_openai.py");

/// A running `gigafab gateway`: its process, its address and where its
/// metrics are.
struct Gateway {
    child: Child,
    url: String,
    metrics: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `gigafab gateway` against `app` with `token`: the gateway, or
/// what it said when it stopped.
fn gateway(app: &App, token: &str, name: &str) -> Result<Gateway, String> {
    let child = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args(["gateway", "--listen", "127.0.0.1:0", "--name", name])
        .args(["--metrics-listen", "127.0.0.1:0", "--header-timeout", "1"])
        .env("GIGAFAB_SERVER", &app.url)
        .env("GIGAFAB_TOKEN", token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // waited for when dropped, whatever happens
    let mut g = Gateway {
        child,
        url: String::new(),
        metrics: String::new(),
    };
    let mut err = BufReader::new(g.child.stderr.take().unwrap());
    let mut said = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            return Err(said);
        }
        said.push_str(&line);
        if let Some(rest) = line.split("listening on ").nth(1) {
            g.url = rest.split_whitespace().next().unwrap().to_string();
            g.metrics = line.split("metrics on ").nth(1).unwrap().trim().to_string();
            // the rest of its output is drained, never blocking it
            std::thread::spawn(move || for _ in err.lines() {});
            return Ok(g);
        }
    }
}

async fn replicas(app: &App, token: &str) -> Value {
    let (s, v) = app
        .call("GET", "/api/v1/endpoints/echo", Some(token), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["replicas"].clone()
}

/// Organisation `acme` with 10 GPU-hours, its member alice, the model
/// pushed, and endpoint `echo` (with `options`, and `env` for its
/// replicas): alice's token and a key of the endpoint.
async fn echo_endpoint(app: &App, options: &[&str], env: &[&str]) -> (String, String) {
    app.post("/api/v1/orgs", json!({"name": "acme", "category": "sme"}))
        .await;
    app.post(
        "/api/v1/allocations",
        json!({"org": "acme", "gpu_hours": 10.0}),
    )
    .await;
    let alice = app.user_token("alice", "acme", "member").await;
    let model = app.dir.join("work/echo-model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("weights.bin"), "w").unwrap();
    let cli = |args: &[&str]| {
        let (ok, out, err) = app.cli(&alice, args);
        assert!(ok, "gigafab {args:?}: {err}");
        out
    };
    cli(&[
        "catalog",
        "push",
        model.to_str().unwrap(),
        "--name",
        "echo-model",
        "--kind",
        "model",
        "--licence",
        "MIT",
    ]);
    let mut args = vec!["endpoint", "create", "echo", "--model", "echo-model@1"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--env", "API_KEY={api_key}", "--env", "WHO=echo"]);
    for e in env {
        args.extend_from_slice(&["--env", e]);
    }
    args.extend_from_slice(&["--", "python3", "-c", ECHO, "{port}"]);
    cli(&args);
    let key: Value =
        serde_json::from_str(&cli(&["endpoint", "keys", "create", "echo", "-o", "json"])).unwrap();
    (alice.clone(), key["key"].as_str().unwrap().to_string())
}

/// What a replica says it served is its tenant's word: counts it could
/// overflow are held to a bound (they would stop every key's metering on
/// PostgreSQL, or wrap a tenant's own usage below zero).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_usage_is_held_to_bounds() {
    let app = App::spawn(Db::Sqlite, "gateway-usage").await.unwrap();
    let (alice, key) = echo_endpoint(
        &app,
        &["--min", "1"],
        &["PROMPT_TOKENS=18446744073709551615"],
    )
    .await;
    for _ in 0..3 {
        let (code, v) = oai::chat(&app.url, "echo", &key).await;
        assert_eq!(code, 200, "{v}");
    }
    let t = Instant::now();
    loop {
        let (ok, out, err) = app.cli(&alice, &["endpoint", "keys", "ls", "echo", "-o", "json"]);
        assert!(ok, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let k = &v["items"][0];
        if k["requests"] == 3 {
            // 10 million tokens an answer at most
            assert_eq!(k["prompt_tokens"], 30_000_000, "{k}");
            assert_eq!(k["completion_tokens"], 3, "{k}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{k}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_gateways_serve_scale_meter_and_follow_revocations() {
    let mut app = App::spawn(Db::Sqlite, "gateways").await.unwrap();
    // at zero replicas, back to zero after 4 s without a request
    let (alice, key) = echo_endpoint(
        &app,
        &["--idle-to-zero", "4", "--scale-down-delay", "2"],
        &[],
    )
    .await;
    let cli = |args: &[&str]| {
        let (ok, out, err) = app.cli(&alice, args);
        assert!(ok, "gigafab {args:?}: {err}");
        out
    };

    // a member's token runs no gateway (it would hold the replicas' keys)
    let refused = gateway(&app, &alice, "gw-member").err().unwrap_or_default();
    assert!(refused.contains("admin"), "{refused}");

    let g1 = gateway(&app, TOKEN, "gw-1").unwrap();
    let g2 = gateway(&app, TOKEN, "gw-2").unwrap();
    let http = reqwest::Client::new();
    let ready = http.get(format!("{}/readyz", g1.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    // a connection that sends nothing is closed after the header timeout
    // (1 s here): idle clients hold no worker's connections for long
    {
        use std::io::Read;
        let addr = g1.url.trim_start_matches("http://").to_string();
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "held {:?}",
            t.elapsed()
        );
    }

    // a request at zero replicas, through a gateway, is held while the
    // server starts a replica, then answered
    assert_eq!(replicas(&app, &alice).await.as_array().unwrap().len(), 0);
    let t = Instant::now();
    let (code, v) = oai::chat(&g1.url, "echo", &key).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "echo", "{v}");
    eprintln!(
        "cold start through a gateway: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // both gateways serve it, and the server's own too
    for base in [&g1.url, &g2.url, &app.url] {
        for _ in 0..3 {
            let (code, v) = oai::chat(base, "echo", &key).await;
            assert_eq!(code, 200, "{base}: {v}");
        }
    }
    // a wrong key: the same answer as the server's gateway gives
    let (c1, w1) = oai::chat(&g2.url, "echo", "gfk_wrong").await;
    let (c2, w2) = oai::chat(&app.url, "echo", "gfk_wrong").await;
    assert_eq!((c1, &w1), (c2, &w2));
    assert_eq!(c1, 401);

    // what the gateways served is charged to the key: 1 + 3 + 3 + 3
    let t = Instant::now();
    loop {
        let out = cli(&["endpoint", "keys", "ls", "echo", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let k = &v["items"][0];
        if k["requests"] == 10 {
            assert_eq!(k["prompt_tokens"], 30, "{k}");
            assert_eq!(k["completion_tokens"], 10, "{k}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{k}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // and each gateway's own metrics count what it answered, on their own
    // port: the public one does not list the endpoints
    let m = http
        .get(&g1.metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.lines()
            .any(|l| l
                .starts_with("gigafab_endpoint_requests_total{endpoint=\"echo\",code=\"200\"} 4")),
        "{m}"
    );
    let public = http
        .get(format!("{}/metrics", g1.url))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);

    // a revoked key stops on every gateway within a couple of syncs
    let out = cli(&["endpoint", "keys", "ls", "echo", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let id = v["items"][0]["id"].as_i64().unwrap().to_string();
    cli(&["endpoint", "keys", "revoke", "echo", &id]);
    let t = Instant::now();
    for g in [&g1, &g2] {
        loop {
            if oai::chat(&g.url, "echo", &key).await.0 == 401 {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(5), "still served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // idle: back to zero replicas
    let t = Instant::now();
    while !replicas(&app, &alice).await.as_array().unwrap().is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "never back to zero: {}\n{}",
            replicas(&app, &alice).await,
            cli(&["endpoint", "events", "echo"])
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // the server gone: once its last sync is 10 s old, a gateway serves
    // nothing (it could be serving revoked keys)
    app.kill9();
    let t = Instant::now();
    loop {
        let (code, v) = oai::chat(&g2.url, "echo", "gfk_any").await;
        if code == 503 {
            assert_eq!(v["error"]["code"], "gateway_out_of_sync", "{v}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "{code} {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ready = http.get(format!("{}/readyz", g2.url)).send().await.unwrap();
    assert_eq!(ready.status(), 503);
}
