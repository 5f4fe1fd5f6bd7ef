//! Model endpoints end to end: the real server and CLI, a model pushed to
//! the catalog, and replicas that are real llama.cpp servers (PyPI's
//! llama-cpp-python) serving a tiny random model written with PyPI's
//! gguf. Calls with HTTP and with the official `openai` Python client;
//! scaling from zero under load and back to zero when idle; tokens and
//! GPU-hours charged; and what hostile tenants try.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[path = "common/app.rs"]
#[allow(unused_macros)]
mod app;
#[path = "common/openapi.rs"]
mod openapi;
use app::*;

const NEEDS: &str = "needs llama-cpp-python, gguf and openai: eval \"$(bash .ci/llama.sh)\"";

fn python() -> String {
    match std::env::var("GIGAFAB_TEST_LLAMA_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!("GIGAFAB_TEST_LLAMA_PYTHON is not set: {NEEDS}"),
    }
}

async fn user(app: &App, name: &str, org: &str) -> String {
    app.user_token(name, org, "member").await
}

fn cli(app: &App, token: &str, args: &[&str]) -> (bool, String, String) {
    app.cli(token, args)
}

fn cli_ok(app: &App, token: &str, args: &[&str]) -> String {
    let (ok, out, err) = cli(app, token, args);
    assert!(ok, "gigafab {args:?} failed:\n{err}");
    out
}

/// Writes the tiny model and pushes it as catalog model `tiny` of the
/// caller's organisation.
fn push_tiny_model(app: &App, token: &str, py: &str) {
    let dir = app.dir.join("work/tiny");
    std::fs::create_dir_all(&dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_gguf.py");
    let st = Command::new(py)
        .arg(script)
        .arg(dir.join("model.gguf"))
        .status()
        .unwrap();
    assert!(st.success(), "tiny_gguf.py failed");
    cli_ok(
        app,
        token,
        &[
            "catalog",
            "push",
            dir.to_str().unwrap(),
            "--name",
            "tiny",
            "--kind",
            "model",
            "--licence",
            "MIT",
        ],
    );
}

/// `gigafab endpoint create NAME ...` serving the tiny model with
/// llama.cpp's server.
fn create_endpoint(app: &App, token: &str, py: &str, name: &str, extra: &[&str]) -> Value {
    let mut args: Vec<&str> = vec!["endpoint", "create", name, "--model", "tiny@1"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[
        "--env",
        "API_KEY={api_key}",
        "-o",
        "json",
        "--",
        py,
        "-m",
        "llama_cpp.server",
        "--model",
        "{model_dir}/model.gguf",
        "--host",
        "{host}",
        "--port",
        "{port}",
        "--n_ctx",
        "256",
    ]);
    serde_json::from_str(&cli_ok(app, token, &args)).unwrap()
}

fn new_key(app: &App, token: &str, endpoint: &str) -> String {
    let out = cli_ok(
        app,
        token,
        &["endpoint", "keys", "create", endpoint, "-o", "json"],
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    v["key"].as_str().unwrap().to_string()
}

async fn chat(app: &App, endpoint: &str, key: &str, body: Value) -> reqwest::Response {
    app.http
        .post(format!(
            "{}/v1/endpoints/{endpoint}/chat/completions",
            app.url
        ))
        .bearer_auth(key)
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap()
}

async fn endpoint(app: &App, token: &str, name: &str) -> Value {
    let (s, v) = app
        .call(
            "GET",
            &format!("/api/v1/endpoints/{name}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    v
}

/// Polls endpoint `name` until `ok` holds (or fails after `secs`).
async fn wait_for(
    app: &App,
    token: &str,
    name: &str,
    secs: u64,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        let v = endpoint(app, token, name).await;
        if ok(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "waited {secs} s for {name}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready(v: &Value) -> usize {
    v["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "ready")
        .count()
}

async fn event_reasons(app: &App, token: &str, name: &str) -> Vec<String> {
    let (_, v) = app
        .call(
            "GET",
            &format!("/api/v1/endpoints/{name}/events"),
            Some(token),
            None,
        )
        .await;
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["kind"].as_str().unwrap(),
                e["reason"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs llama-cpp-python, gguf and openai: eval \"$(bash .ci/llama.sh)\""]
async fn an_endpoint_serves_a_catalog_model_scales_and_meters() {
    serves_scales_and_meters(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs llama-cpp-python, gguf, openai and PostgreSQL: eval \"$(bash .ci/llama.sh)\" \"$(bash .ci/postgres.sh)\""]
async fn an_endpoint_serves_a_catalog_model_scales_and_meters_on_postgres() {
    serves_scales_and_meters(Db::Postgres).await;
}

async fn serves_scales_and_meters(db: Db) {
    let py = python();
    let app = App::spawn(db, "endpoints").await.unwrap();
    app.post("/api/v1/orgs", json!({"name": "acme", "category": "sme"}))
        .await;
    let alice = user(&app, "alice", "acme").await;
    let alloc = app
        .post(
            "/api/v1/allocations",
            json!({"org": "acme", "gpu_hours": 100.0}),
        )
        .await;
    push_tiny_model(&app, &alice, &py);
    let e = create_endpoint(
        &app,
        &alice,
        &py,
        "chat",
        &[
            "--max",
            "2",
            "--target-inflight",
            "1",
            "--idle-to-zero",
            "6",
            "--scale-down-delay",
            "2",
        ],
    );
    assert_eq!(e["model"], "model:tiny@1");
    assert_eq!(e["replicas"].as_array().unwrap().len(), 0);
    assert_eq!(e["url"], "/v1/endpoints/chat");
    let key = new_key(&app, &alice, "chat");
    assert!(key.starts_with("gfk_"), "{key}");

    // the first request at zero replicas is held while one starts
    let t = Instant::now();
    let r = chat(
        &app,
        "chat",
        &key,
        json!({"messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}),
    )
    .await;
    let cold = t.elapsed();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion >= 1, "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");
    eprintln!(
        "cold start: first answer {:.2} s after the request",
        cold.as_secs_f64()
    );
    let reasons = event_reasons(&app, &alice, "chat").await;
    assert!(
        reasons.contains(&"scale:cold_start".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"replica_ready:ready".to_string()),
        "{reasons:?}"
    );
    // how long gigafab took from the request to the replica's start
    let v = endpoint(&app, &alice, "chat").await;
    let job = v["replicas"][0]["job"].as_i64().unwrap();
    let (_, j) = app
        .call("GET", &format!("/api/v1/jobs/{job}"), Some(&alice), None)
        .await;
    assert_eq!(j["state"], "running", "{j}");
    assert!(
        j["accelerators"].as_array().is_some_and(|a| a.len() == 1),
        "{j}"
    );

    // a stream is passed through as server-sent events
    let r = chat(
        &app,
        "chat",
        &key,
        json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 6, "stream": true}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains("data: ") && body.trim_end().ends_with("data: [DONE]"),
        "{body}"
    );

    // the official openai client, streaming and not
    let script = format!(
        r#"
import openai
c = openai.OpenAI(base_url="{}/v1/endpoints/chat", api_key="{key}")
r = c.chat.completions.create(model="chat", messages=[{{"role": "user", "content": "hi"}}], max_tokens=5)
assert r.usage.completion_tokens > 0, r
n = 0
for ch in c.chat.completions.create(model="chat", messages=[{{"role": "user", "content": "hi"}}], max_tokens=5, stream=True):
    n += 1
print([m.id for m in c.models.list().data], r.usage.completion_tokens, n)
try:
    openai.OpenAI(base_url="{}/v1/endpoints/chat", api_key="gfk_wrong").models.list()
    print("wrong key accepted")
except openai.AuthenticationError:
    print("wrong key refused")
"#,
        app.url, app.url
    );
    let o = Command::new(&py).arg("-c").arg(&script).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        out.starts_with("['chat']") && out.contains("wrong key refused"),
        "{out}"
    );

    // idle: back to zero replicas
    wait_for(&app, &alice, "chat", 90, |v| {
        v["replicas"].as_array().unwrap().is_empty() && v["desired_replicas"] == 0
    })
    .await;
    let reasons = event_reasons(&app, &alice, "chat").await;
    assert!(reasons.contains(&"scale:idle".to_string()), "{reasons:?}");

    // load: six requests at once, held at zero replicas, ask for more
    // than one (one each: capped at two)
    let mut load = Vec::new();
    for _ in 0..6 {
        let (url, key) = (app.url.clone(), key.clone());
        let http = app.http.clone();
        load.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/endpoints/chat/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"messages": [{"role": "user", "content": "tell me more"}], "max_tokens": 100}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    let v = wait_for(&app, &alice, "chat", 60, |v| {
        v["replicas"].as_array().unwrap().len() == 2
    })
    .await;
    assert_eq!(v["desired_replicas"], 2, "{v:#}");
    for h in load {
        assert_eq!(h.await.unwrap().unwrap(), 200);
    }
    let reasons = event_reasons(&app, &alice, "chat").await;
    assert!(
        reasons.contains(&"scale:max_replicas".to_string()),
        "{reasons:?}"
    );
    let v = wait_for(&app, &alice, "chat", 90, |v| {
        v["replicas"].as_array().unwrap().is_empty() && v["desired_replicas"] == 0
    })
    .await;
    // metered: requests, tokens, GPU-hours charged to the allocation
    let u = &v["usage"];
    assert!(u["requests"].as_u64().unwrap() >= 9, "{u}");
    assert!(u["completion_tokens"].as_u64().unwrap() > 0, "{u}");
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0, "{u}");
    assert!(u["gpu_hours"].as_f64().unwrap() > 0.0, "{u}");
    let (_, a) = app
        .call(
            "GET",
            &format!("/api/v1/allocations/{}", alloc["id"]),
            Some(&alice),
            None,
        )
        .await;
    assert!(a["used_gpu_hours"].as_f64().unwrap() > 0.0, "{a}");
    let out = cli_ok(&app, &alice, &["endpoint", "show", "chat"]);
    assert!(
        out.contains("model:tiny@1") && out.contains("requests"),
        "{out}"
    );
    let out = cli_ok(&app, &alice, &["endpoint", "events", "chat"]);
    assert!(out.contains("cold_start") && out.contains("idle"), "{out}");
    // the answers of the gateway are on /metrics
    let m = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("gigafab_endpoint_requests_total{endpoint=\"chat\",code=\"200\"}"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs llama-cpp-python, gguf and openai: eval \"$(bash .ci/llama.sh)\""]
async fn hostile_tenants_cannot_use_or_reach_anothers_endpoint() {
    let py = python();
    let app = App::spawn(Db::Sqlite, "endpoints_hostile").await.unwrap();
    for o in ["acme", "evil"] {
        app.post("/api/v1/orgs", json!({"name": o, "category": "sme"}))
            .await;
        app.post("/api/v1/allocations", json!({"org": o, "gpu_hours": 100.0}))
            .await;
    }
    let alice = user(&app, "alice", "acme").await;
    let mallory = user(&app, "mallory", "evil").await;
    push_tiny_model(&app, &alice, &py);
    // acme's endpoint keeps a replica; its keys allow 2 requests a second
    create_endpoint(
        &app,
        &alice,
        &py,
        "chat",
        &["--min", "1", "--key-rate", "2"],
    );
    let v = wait_for(&app, &alice, "chat", 120, |v| ready(v) == 1).await;
    let key = new_key(&app, &alice, "chat");
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2});
    assert_eq!(chat(&app, "chat", &key, body.clone()).await.status(), 200);

    // another organisation sees nothing of it, and cannot make keys
    let (s, _) = app
        .call("GET", "/api/v1/endpoints/chat", Some(&mallory), None)
        .await;
    assert_eq!(s, 404);
    let (ok, _, err) = cli(&app, &mallory, &["endpoint", "keys", "create", "chat"]);
    assert!(!ok && err.contains("not found"), "{err}");
    // ...nor can it serve acme's model (not readable by it)
    let (ok, _, err) = cli(
        &app,
        &mallory,
        &[
            "endpoint", "create", "steal", "--model", "tiny@1", "--", "true",
        ],
    );
    assert!(!ok && err.contains("model"), "{err}");
    // its own endpoint's key does not open acme's; an unknown endpoint
    // answers the same (no name is confirmed)
    let (s, other) = app
        .call(
            "POST",
            "/api/v1/endpoints",
            Some(&mallory),
            Some(
                json!({"name": "evil-ep", "model": "tiny@1", "allocation": 2, "command": ["true"]}),
            ),
        )
        .await;
    assert_ne!(s, 201, "{other}");
    let wrong = chat(&app, "chat", "gfk_not_a_key", body.clone()).await;
    assert_eq!(wrong.status(), 401);
    let w1: Value = wrong.json().await.unwrap();
    let none = chat(&app, "no-such", &key, body.clone()).await;
    assert_eq!(none.status(), 401);
    let w2: Value = none.json().await.unwrap();
    assert_eq!(w1, w2);
    assert_eq!(w1["error"]["code"], "invalid_api_key");
    // a tenant's own API token is not an endpoint key
    assert_eq!(
        chat(&app, "chat", &mallory, body.clone()).await.status(),
        401
    );
    assert_eq!(chat(&app, "chat", &alice, body.clone()).await.status(), 401);

    // a replica answers only the gateway: its port, reached directly, wants
    // the key that only the gateway has
    let job = v["replicas"][0]["job"].as_i64().unwrap();
    let (_, j) = app
        .call("GET", &format!("/api/v1/jobs/{job}"), Some(&alice), None)
        .await;
    let cmd: Vec<&str> = j["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let port = cmd[cmd.iter().position(|a| *a == "--port").unwrap() + 1];
    assert!(port.parse::<u16>().is_ok(), "{cmd:?}");
    let direct = app
        .http
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 401);
    let (s, mj) = app
        .call("GET", &format!("/api/v1/jobs/{job}"), Some(&mallory), None)
        .await;
    assert_eq!(s, 404, "{mj}");

    // a flood from one key is throttled; another key of the same endpoint
    // still answers
    let second = new_key(&app, &alice, "chat");
    let mut limited = 0;
    let mut retry_after = None;
    for _ in 0..40 {
        let r = app
            .http
            .get(format!("{}/v1/endpoints/chat/models", app.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            limited += 1;
            retry_after = r.headers().get("retry-after").cloned();
        }
    }
    assert!(limited >= 20, "{limited} of 40 throttled");
    assert!(retry_after.is_some());
    assert_eq!(
        chat(&app, "chat", &second, body.clone()).await.status(),
        200
    );

    // a revoked key stops at once
    let keys = cli_ok(
        &app,
        &alice,
        &["endpoint", "keys", "ls", "chat", "-o", "json"],
    );
    let keys: Value = serde_json::from_str(&keys).unwrap();
    let id = keys["items"][1]["id"].as_i64().unwrap();
    cli_ok(
        &app,
        &alice,
        &["endpoint", "keys", "revoke", "chat", &id.to_string()],
    );
    assert_eq!(
        chat(&app, "chat", &second, body.clone()).await.status(),
        401
    );
    // keys never show in listings
    assert!(!keys.to_string().contains(&second));

    // deleted: its keys stop and its replicas end
    cli_ok(&app, &alice, &["endpoint", "delete", "chat"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(chat(&app, "chat", &key, body).await.status(), 401);
    let t = Instant::now();
    loop {
        let (_, j) = app
            .call("GET", &format!("/api/v1/jobs/{job}"), Some(&alice), None)
            .await;
        if j["state"] == "cancelled" {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What an endpoint's creator may ask, checked before anything runs (no
/// model server needed: the endpoint scales to zero and no request comes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_requests_are_checked() {
    let app = App::spawn(Db::Sqlite, "endpoints_checked").await.unwrap();
    for o in ["acme", "evil"] {
        app.post("/api/v1/orgs", json!({"name": o, "category": "sme"}))
            .await;
    }
    let alice = user(&app, "alice", "acme").await;
    let mallory = user(&app, "mallory", "evil").await;
    let a = app
        .post(
            "/api/v1/allocations",
            json!({"org": "acme", "gpu_hours": 10.0}),
        )
        .await;
    let m = app
        .post(
            "/api/v1/allocations",
            json!({"org": "evil", "gpu_hours": 10.0}),
        )
        .await;
    let dir = app.dir.join("work/m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.gguf"), b"weights").unwrap();
    cli_ok(
        &app,
        &alice,
        &[
            "catalog",
            "push",
            dir.to_str().unwrap(),
            "--name",
            "m",
            "--kind",
            "model",
            "--licence",
            "MIT",
        ],
    );
    let create = |who: &str, body: Value| {
        let who = who.to_string();
        let app = &app;
        async move {
            app.call("POST", "/api/v1/endpoints", Some(&who), Some(body))
                .await
        }
    };
    let base = json!({"name": "chat", "model": "m@1", "allocation": a["id"], "command": ["serve"]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, code, words) in [
        (with("name", json!("Chat!")), 422, "name"),
        (with("min_replicas", json!(3)), 422, "min_replicas"),
        (with("hold_timeout_s", json!(601)), 422, "hold_timeout_s"),
        (with("queue_limit", json!(10_001)), 422, "queue_limit"),
        (
            with("command", json!(["serve", "--api-key", "{api_key}"])),
            422,
            "in env",
        ),
        (with("model", json!("nope@1")), 422, "model"),
        // replicas on a slice: this fleet has no shared pool
        (
            with("gpu_profile", json!("1g.10gb")),
            422,
            "no slice of this fleet holds slice 1g.10gb",
        ),
    ] {
        let (s, v) = create(&alice, body.clone()).await;
        assert_eq!(s, code, "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains(words), "{v}");
    }
    // more kept accelerators than an organisation may keep
    let (s, v) = create(
        &alice,
        json!({"name": "big", "model": "m@1", "allocation": a["id"], "command": ["serve"],
               "gpus": 4, "min_replicas": 5, "max_replicas": 5}),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("ask an admin"),
        "{v}"
    );
    // another organisation's allocation, or model
    let (s, _) = create(&alice, with("allocation", m["id"].clone())).await;
    assert_eq!(s, 404);
    let (s, _) = create(&mallory, with("allocation", m["id"].clone())).await;
    assert_eq!(s, 422);
    // made once; a name is taken once
    let (s, e) = create(&alice, with("queue_limit", json!(0))).await;
    assert_eq!(s, 201, "{e}");
    assert_eq!(e["replicas"], json!([]));
    let (s, _) = create(&alice, base.clone()).await;
    assert_eq!(s, 409);
    // a full queue (of 0) answers at once, before the body is read
    let key = new_key(&app, &alice, "chat");
    let t = Instant::now();
    let r = chat(&app, "chat", &key, json!({"messages": []})).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "queue_full");
    assert!(t.elapsed() < Duration::from_secs(5));
    // a replica that fails as it starts: the waiting request is told why
    // at once, not at the end of its hold
    let (s, v) = create(
        &alice,
        json!({"name": "broken", "model": "m@1", "allocation": a["id"], "command": ["/bin/false"]}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let bkey = new_key(&app, &alice, "broken");
    let t = Instant::now();
    let r = chat(&app, "broken", &bkey, json!({"messages": []})).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "replica_failed", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gigafab logs"),
        "{v}"
    );
    assert!(t.elapsed() < Duration::from_secs(60), "{:?}", t.elapsed());
    // its own scale: within bounds and the kept limit
    let (s, v) = app
        .call(
            "POST",
            "/api/v1/endpoints/chat/scale",
            Some(&alice),
            Some(json!({"min_replicas": 17})),
        )
        .await;
    assert_eq!(s, 422, "{v}");
    let (s, _) = app
        .call(
            "POST",
            "/api/v1/endpoints/chat/scale",
            Some(&mallory),
            Some(json!({"max_replicas": 3})),
        )
        .await;
    assert_eq!(s, 404);
}
