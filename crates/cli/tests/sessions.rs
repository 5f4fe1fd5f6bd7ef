//! Interactive sessions against the real binary (docs/sessions.md): an app
//! defined by a file, run as its user's job, reached through the server's
//! proxy by its user alone, its secret added and the portal's cookie kept
//! back, WebSocket-style upgrades passed through, extended within policy,
//! culled when idle, stopped. The app is a small Python server
//! (`fixtures/session_app.py`); JupyterLab itself, as the README starts
//! it, is in `sessions_jupyter.rs` and the portal's Chromium test.

#[path = "common/app.rs"]
#[macro_use]
mod app;
#[path = "common/openapi.rs"]
mod openapi;

use app::{App, Db};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Python interpreter itself (a shim may not run under a job's PATH).
fn python() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Writes the test apps (`probe`, and `stale`, whose last activity is long
/// ago) and restarts `app` with them.
fn with_test_apps(app: &mut App) {
    let dir = app.dir.join("apps");
    std::fs::create_dir_all(&dir).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/session_app.py");
    for (name, mode) in [("probe", ""), ("stale", "old")] {
        std::fs::write(
            dir.join(format!("{name}.toml")),
            format!(
                "title = \"{name}\"\ncommand = [\"{}\", \"{}\"]\nenv = {{ APP_TOKEN = \"{{token}}\", APP_MODE = \"{mode}\" }}\nready = \"{{base}}api/status\"\nauth_header = \"token {{token}}\"\n[idle]\ncheck = \"app\"\npath = \"{{base}}api/status\"\nfield = \"last_activity\"\n",
                python(),
                script.display()
            ),
        )
        .unwrap();
    }
    app.kill9();
    app.extra = vec!["--apps-dir".into(), dir.display().to_string()];
    app.start(None);
}

/// Two organisations with an allocation each; members' tokens:
/// (alice, bob of acme; mallory of evil) and acme's allocation.
async fn tenants(app: &App) -> (String, String, String, i64) {
    let mut acme = 0;
    for o in ["acme", "evil"] {
        app.post("/api/v1/orgs", json!({"name": o, "category": "sme"}))
            .await;
        let a = app
            .post("/api/v1/allocations", json!({"org": o, "gpu_hours": 100.0}))
            .await;
        if o == "acme" {
            acme = a["id"].as_i64().unwrap();
        }
    }
    (
        app.user_token("alice", "acme", "member").await,
        app.user_token("bob", "acme", "member").await,
        app.user_token("mallory", "evil", "member").await,
        acme,
    )
}

async fn wait_session(app: &App, token: &str, id: i64, state: &str, secs: u64) -> Value {
    let t = Instant::now();
    loop {
        let (st, s) = app
            .call("GET", &format!("/api/v1/sessions/{id}"), Some(token), None)
            .await;
        assert_eq!(st, 200, "{s}");
        if s["state"] == state {
            return s;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let job = s["job"].as_i64().unwrap_or(0);
            let (o, e) = (
                app.logs(job, "").await,
                app.logs(job, "?stream=stderr").await,
            );
            panic!("not {state}: {s:#}\njob {job}'s output:\n{o}\n{e}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A raw upgrade through the proxy: the answer's head, then (after a 101)
/// what comes back of `ping`.
async fn upgrade(
    url: &str,
    path: &str,
    token: &str,
    origin: Option<&str>,
    ping: &[u8],
) -> (String, Vec<u8>) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    if !head.starts_with("HTTP/1.1 101") {
        return (head, Vec::new());
    }
    s.write_all(ping).await.unwrap();
    let mut back = vec![0u8; ping.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    (head, back)
}

both_stores!(a_session_is_its_users_alone);

async fn a_session_is_its_users_alone(mut app: App) {
    with_test_apps(&mut app);
    let (alice, bob, mallory, alloc) = tenants(&app).await;
    let (st, apps) = app.call("GET", "/api/v1/apps", Some(&alice), None).await;
    assert_eq!(st, 200);
    let names: Vec<&str> = apps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    // vscode needs a network per job, which a single-user server has not
    assert_eq!(names, ["jupyter", "probe", "stale", "terminal"], "{apps}");
    // refusals name the field
    let (st, e) = app
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&alice),
            Some(json!({"app": "nope", "allocation": alloc})),
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (422, Some("invalid_request")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .starts_with("app: no app `nope`"),
        "{e}"
    );
    let (st, e) = app
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&alice),
            Some(json!({"app": "probe", "allocation": alloc, "time_limit_s": 999_999})),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("--session-max-hours"),
        "{e}"
    );
    let (st, s) = app
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&alice),
            Some(json!({"app": "probe", "allocation": alloc, "time_limit_s": 600})),
        )
        .await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_i64().unwrap();
    let job = s["job"].as_i64().unwrap();
    assert_eq!(s["url"], format!("/sessions/{id}/"));
    wait_session(&app, &alice, id, "ready", 60).await;
    let base = format!("{}/sessions/{id}/", app.url);
    let http = client();
    // its user: the app sees its own secret, its own Host, not the
    // portal's cookie, whatever the request said
    let r = http
        .get(format!("{base}hello?x=1"))
        .bearer_auth(&alice)
        .header("cookie", "gf_session=stolen; theme=dark")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], format!("/sessions/{id}/hello?x=1"));
    assert!(v["host"].as_str().unwrap().starts_with("127.0.0.1:"), "{v}");
    assert_eq!(v["cookie"], "theme=dark", "{v}");
    assert!(v["cuda"].is_string(), "the job's accelerators: {v}");
    // a request aimed elsewhere (absolute URI, another Host) still goes
    // to the session's app, and only there
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    raw.write_all(
        format!("GET http://169.254.169.254:80/sessions/{id}/meta HTTP/1.1\r\nHost: 169.254.169.254\r\nAuthorization: Bearer {alice}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!("\"path\": \"/sessions/{id}/meta\"")),
        "{answer}"
    );
    assert!(answer.contains("\"host\": \"127.0.0.1:"), "{answer}");
    // anyone else: no such session
    for (who, t) in [("bob", &bob), ("mallory", &mallory)] {
        let r = http.get(&base).bearer_auth(t).send().await.unwrap();
        assert_eq!(r.status(), 404, "{who}");
        let (st, _) = app
            .call("GET", &format!("/api/v1/sessions/{id}"), Some(t), None)
            .await;
        assert_eq!(st, 404, "{who}");
        let (st, _) = app
            .call(
                "POST",
                &format!("/api/v1/sessions/{id}/extend"),
                Some(t),
                Some(json!({"by_s": 600})),
            )
            .await;
        assert_eq!(st, 404, "{who}");
        let (head, _) = upgrade(&app.url, &format!("/sessions/{id}/ws"), t, None, b"x").await;
        assert!(head.starts_with("HTTP/1.1 404"), "{who}: {head}");
    }
    // no one signed in: the sign-in page (a GET), refused (else)
    let r = http.get(&base).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "{:?}", r.headers());
    let r = http.post(&base).body("x").send().await.unwrap();
    assert_eq!(r.status(), 401);
    // a page of another site cannot drive it with the user's credentials
    let r = http
        .post(format!("{base}api/run"))
        .bearer_auth(&alice)
        .header("origin", "http://evil.example")
        .body("rm -rf ~")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .post(format!("{base}api/run"))
        .bearer_auth(&alice)
        .header("origin", &app.url)
        .body("print(1)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["body"], "print(1)");
    let (head, _) = upgrade(
        &app.url,
        &format!("/sessions/{id}/ws"),
        &alice,
        Some("http://evil.example"),
        b"x",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // an upgrade passes through, both ways
    let (head, back) = upgrade(
        &app.url,
        &format!("/sessions/{id}/ws"),
        &alice,
        Some(&app.url),
        b"ping-123",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(back, b"ping-123");
    // extended within policy: its job's limit moves, its engine is told
    let (st, e) = app
        .call(
            "POST",
            &format!("/api/v1/sessions/{id}/extend"),
            Some(&alice),
            Some(json!({"by_s": 10_000_000})),
        )
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (409, Some("extension_refused")),
        "{e}"
    );
    let (st, s) = app
        .call(
            "POST",
            &format!("/api/v1/sessions/{id}/extend"),
            Some(&alice),
            Some(json!({"by_s": 300})),
        )
        .await;
    assert_eq!(st, 200, "{s}");
    assert_eq!(s["time_limit_s"], 900);
    let t = Instant::now();
    loop {
        let j = app.get(&format!("/api/v1/jobs/{job}")).await;
        if j["time_limit_s"] == 900 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{j}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    while !app
        .logs(job, "?stream=stderr")
        .await
        .contains("time limit now 900 s")
    {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{}",
            app.logs(job, "?stream=stderr").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // the server restarts: the session is reached again
    app.kill9();
    app.start(None);
    wait_session(&app, &alice, id, "ready", 60).await;
    let base = format!("{}/sessions/{id}/", app.url);
    let r = http
        .get(format!("{base}again"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // the CLI lists it
    let (ok, out, err) = app.cli(&alice, &["session", "ls", "-o", "json"]);
    assert!(ok, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["items"][0]["id"], id, "{v}");
    // stopped: its job cancelled, its URL gone for its user
    let (ok, _, err) = app.cli(&alice, &["session", "stop", &id.to_string()]);
    assert!(ok, "{err}");
    let s = wait_session(&app, &alice, id, "ended", 5).await;
    assert!(s["reason"].as_str().unwrap().contains("stopped by"), "{s}");
    app.wait_state(job, &["cancelled"], 30).await;
    let r = http.get(&base).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let r = http.get(&base).bearer_auth(&mallory).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_culled() {
    let mut app = App::spawn(Db::Sqlite, "sess_idle").await.unwrap();
    with_test_apps(&mut app);
    let (alice, _, _, alloc) = tenants(&app).await;
    let (ok, out, err) = app.cli(
        &alice,
        &[
            "session",
            "start",
            "--app",
            "stale",
            "--idle",
            "10s",
            "--time",
            "10m",
            "--allocation",
            &alloc.to_string(),
            "-o",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let s: Value = serde_json::from_str(&out).unwrap();
    let (id, job) = (s["id"].as_i64().unwrap(), s["job"].as_i64().unwrap());
    wait_session(&app, &alice, id, "ready", 60).await;
    // the app says it was last active in 2000: culled once idle 10 s
    let s = wait_session(&app, &alice, id, "ended", 60).await;
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .starts_with("culled: idle for"),
        "{s}"
    );
    app.wait_state(job, &["cancelled"], 30).await;
}

/// `gigafab attach`: a shell in a running job of one's own, on a pipe
/// here (its input read to its end, then the shell exits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_attaches_to_a_running_job_of_ones_own() {
    let app = App::spawn(Db::Sqlite, "attach").await.unwrap();
    let (alice, bob, _, alloc) = tenants(&app).await;
    let (st, j) = app
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&alice),
            Some(json!({"allocation": alloc, "gpus": 1, "time_limit_s": 120, "command": ["sleep", "100"]})),
        )
        .await;
    assert_eq!(st, 201, "{j}");
    let job = j["id"].as_i64().unwrap();
    app.wait_state(job, &["running"], 30).await;
    let run = |token: &str, script: &str| {
        use std::io::Write;
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args(["attach", &job.to_string()])
            .env("GIGAFAB_SERVER", &app.url)
            .env("GIGAFAB_TOKEN", token)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let o = c.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&alice, "echo in-job-$GIGAFAB_JOB_ID\nexit\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("in-job-{job}")), "{out}");
    // another member of the organisation: no such job for her
    let (code, _, err) = run(&bob, "id\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("job_not_found"), "{err}");
    // a shell ends with the token it was opened with
    let carol = app.user_token("carol", "acme", "member").await;
    let (st, j2) = app
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&carol),
            Some(json!({"allocation": alloc, "gpus": 1, "time_limit_s": 120, "command": ["sleep", "100"]})),
        )
        .await;
    assert_eq!(st, 201, "{j2}");
    let job2 = j2["id"].as_i64().unwrap();
    app.wait_state(job2, &["running"], 30).await;
    let mut held = std::process::Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args(["attach", &job2.to_string()])
        .env("GIGAFAB_SERVER", &app.url)
        .env("GIGAFAB_TOKEN", &carol)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        held.try_wait().unwrap().is_none(),
        "the shell stays while its input is open"
    );
    let (_, tokens) = app.call("GET", "/api/v1/tokens", Some(&carol), None).await;
    let tid = tokens["items"][0]["id"].as_i64().unwrap();
    let (st, _) = app
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{tid}"),
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(st, 200);
    let t = Instant::now();
    while held.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the shell outlived its token"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // an ended job: nothing to attach to
    let (st, body) = app
        .call("DELETE", &format!("/api/v1/jobs/{job}"), Some(&alice), None)
        .await;
    assert_eq!(st, 200, "{body}");
    app.wait_state(job, &["cancelled"], 30).await;
    let (code, _, err) = run(&alice, "id\n");
    assert_eq!(code, Some(1));
    assert!(err.contains("job_not_running"), "{err}");
}

/// A job's files through the API: its directory listed, its files read,
/// nothing outside it, no link followed; read only where jobs share one
/// account; its user's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_files_are_its_users_and_stay_inside_its_directory() {
    let app = App::spawn(Db::Sqlite, "files").await.unwrap();
    let (alice, bob, _, alloc) = tenants(&app).await;
    let (st, j) = app
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&alice),
            Some(json!({"allocation": alloc, "gpus": 1, "time_limit_s": 120, "command": ["sh", "-c",
                "echo hello > out.txt; mkdir sub; echo deep > sub/x; ln -s /etc/passwd link; mkfifo pipe; echo made; sleep 100"]})),
        )
        .await;
    assert_eq!(st, 201, "{j}");
    let job = j["id"].as_i64().unwrap();
    let t = Instant::now();
    while !app.logs(job, "").await.contains("made") {
        assert!(t.elapsed() < Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (st, l) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{job}/files"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["writable"], false);
    let names: Vec<&str> = l["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "sub", "directories first: {names:?}");
    assert!(
        names.contains(&"out.txt") && names.contains(&"link"),
        "{names:?}"
    );
    let get = |path: &str, token: &str| {
        let url = format!("{}/api/v1/jobs/{job}/files/content?path={path}", app.url);
        let token = token.to_string();
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("out.txt", &alice).await, (200, "hello\n".into()));
    assert_eq!(get("sub/x", &alice).await, (200, "deep\n".into()));
    let (st, l) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{job}/files?path=sub"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        (st, l["entries"][0]["name"].as_str()),
        (200, Some("x")),
        "{l}"
    );
    // nothing outside it, no link, no FIFO, no directory read as a file
    for bad in [
        "link",
        "../../gigafab.db",
        "/etc/passwd",
        "sub/../../x",
        "pipe",
        "sub",
    ] {
        let (st, body) = get(bad, &alice).await;
        assert_eq!(st, 422, "{bad}: {body}");
        assert!(body.contains("invalid_request"), "{bad}: {body}");
    }
    assert_eq!(get("absent", &alice).await.0, 404);
    // its user's alone
    assert_eq!(get("out.txt", &bob).await.0, 404);
    let (st, _) = app
        .call(
            "GET",
            &format!("/api/v1/jobs/{job}/files"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!(st, 404);
    // one account for all: read only
    let r = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/jobs/{job}/files/content?path=new.txt",
            app.url
        ))
        .bearer_auth(&alice)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("read_only"));
    app.call("DELETE", &format!("/api/v1/jobs/{job}"), Some(&alice), None)
        .await;
}
