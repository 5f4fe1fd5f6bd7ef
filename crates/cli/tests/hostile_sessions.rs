//! Interactive sessions under tenants' own accounts, each job in a network
//! of its own (`--job-network private`, the default): the proxy reaches a
//! session's app through its job's supervisor, the app runs as its user's
//! account, and no other tenant's job reaches its port. On the machine's
//! network, where another tenant's job could take a session's port first,
//! sessions are refused.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The test app (tests/fixtures/session_app.py), run as `python3 -c`.
const APP: &str = include_str!("fixtures/session_app.py");

/// An apps directory with `probe`, the test app.
fn apps(dir: &std::path::Path) -> String {
    let d = dir.join("apps");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("probe.toml"),
        format!(
            "title = \"probe\"\ncommand = [\"python3\", \"-c\", '''\n{APP}''']\nenv = {{ APP_TOKEN = \"{{token}}\" }}\nready = \"{{base}}api/status\"\nauth_header = \"token {{token}}\"\n[idle]\ncheck = \"traffic\"\n"
        ),
    )
    .unwrap();
    d.display().to_string()
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_app_runs_as_its_account_in_a_network_of_its_own() {
    require_root("a_sessions_app_runs_as_its_account_in_a_network_of_its_own");
    let dir = fresh_dir("sessions-private");
    let apps = apps(&dir);
    let s = Server::two_tenants(&dir, &["--apps-dir", &apps]);
    let tokens = s.tenants(&["a", "b"], 10.0).await;
    let (ta, aa) = &tokens[0];
    let (tb, ab) = &tokens[1];
    let v = s
        .json(
            "POST",
            "/api/v1/sessions",
            ta,
            Some(json!({"app": "probe", "allocation": aa, "time_limit_s": 600})),
        )
        .await;
    let id = v["id"].as_i64().unwrap();
    let t = Instant::now();
    loop {
        let v = s
            .json("GET", &format!("/api/v1/sessions/{id}"), ta, None)
            .await;
        if v["state"] == "ready" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{v:#}\n{}",
            s.stderr()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let http = reqwest::Client::new();
    let base = format!("{}/sessions/{id}/", s.url);
    let r = http
        .get(format!("{base}who"))
        .bearer_auth(ta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    let (uid, _) = test_account("gf-test-a");
    assert_eq!(echo["uid"], uid, "{echo}");
    let port: u16 = echo["host"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // the other tenant: not through the proxy, nor from a job of its own
    let r = http.get(&base).bearer_auth(tb).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let probe = format!(
        "import socket\ns = socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('127.0.0.1', {port}))\n    print('REACHED')\nexcept OSError as e:\n    print('refused', e)\n"
    );
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            tb,
            Some(json!({"allocation": ab, "gpus": 1, "time_limit_s": 60, "command": ["python3", "-c", probe]})),
        )
        .await;
    let jid = j["id"].as_i64().unwrap();
    let j = s.wait_state(TOKEN, jid, &["completed", "failed"]).await;
    let (_, log) = s
        .call(
            "GET",
            &format!("/api/v1/jobs/{jid}/logs"),
            Some(TOKEN),
            None,
        )
        .await;
    assert!(
        log.contains("refused") && !log.contains("REACHED"),
        "{j:#}\n{log}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_refused_where_tenants_share_the_network() {
    require_root("sessions_are_refused_where_tenants_share_the_network");
    let dir = fresh_dir("sessions-host");
    let apps = apps(&dir);
    let s = Server::two_tenants(&dir, &["--apps-dir", &apps, "--job-network", "host"]);
    let tokens = s.tenants(&["a"], 10.0).await;
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/sessions",
            Some(&tokens[0].0),
            Some(json!({"app": "probe", "allocation": tokens[0].1})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("sessions_unavailable") && body.contains("--job-network private"),
        "{body}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
