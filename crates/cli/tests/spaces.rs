//! Organisations' project spaces against the real binary (docs/portal.md,
//! "Files"): a directory per organisation, shared by its members, that
//! their jobs find at `$GIGAFAB_PROJECT_DIR` and the API browses as the
//! caller's account; no one else's, nothing outside it, uploads within its
//! quota. Under tenants' own accounts: `hostile_sessions.rs`.

#[path = "common/app.rs"]
#[macro_use]
mod app;
#[path = "common/openapi.rs"]
mod openapi;

use app::{App, Db, TOKEN};
use serde_json::json;

/// A file of the caller's space: (status, body).
async fn get(app: &App, token: &str, path: &str) -> (u16, String) {
    let r = app
        .http
        .get(format!(
            "{}/api/v1/space/files/content?path={path}",
            app.url
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Writes a file of the caller's space: (status, body).
async fn put(app: &App, token: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = app
        .http
        .put(format!(
            "{}/api/v1/space/files/content?path={path}",
            app.url
        ))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

both_stores!(an_organisations_space_is_its_members_and_its_jobs);
async fn an_organisations_space_is_its_members_and_its_jobs(mut app: App) {
    let mut alloc = 0;
    for o in ["acme", "evil"] {
        app.post("/api/v1/orgs", json!({"name": o, "category": "sme"}))
            .await;
        let a = app
            .post("/api/v1/allocations", json!({"org": o, "gpu_hours": 10.0}))
            .await;
        if o == "acme" {
            alloc = a["id"].as_i64().unwrap();
        }
    }
    // a name that would be a directory's parent is no name
    let (st, e) = app
        .call(
            "POST",
            "/api/v1/orgs",
            Some(TOKEN),
            Some(json!({"name": "..", "category": "sme"})),
        )
        .await;
    assert_eq!(st, 422, "{e}");
    let alice = app.user_token("alice", "acme", "member").await;
    let bob = app.user_token("bob", "acme", "member").await;
    let mallory = app.user_token("mallory", "evil", "member").await;

    // made with the organisation, empty, writable
    let (st, l) = app
        .call("GET", "/api/v1/space/files", Some(&alice), None)
        .await;
    assert_eq!(st, 200, "{l}");
    assert_eq!(l["org"], "acme");
    assert_eq!(l["writable"], true);
    assert_eq!(l["entries"].as_array().unwrap().len(), 0, "{l}");
    let dir = std::path::PathBuf::from(l["dir"].as_str().unwrap());
    assert_eq!(dir, app.dir.join("spaces/acme"));
    assert!(dir.is_dir());

    // an upload, listed and read back by another member
    assert_eq!(put(&app, &alice, "data.csv", "a,b\n1,2\n").await.0, 200);
    let (_, l) = app
        .call("GET", "/api/v1/space/files", Some(&bob), None)
        .await;
    assert_eq!(l["entries"][0]["name"], "data.csv", "{l}");
    assert_eq!(l["entries"][0]["size"], 8);
    assert_eq!(
        get(&app, &bob, "data.csv").await,
        (200, "a,b\n1,2\n".into())
    );

    // a job of the organisation reads it and writes beside it
    let (st, j) = app
        .submit(
            &alice,
            json!({"allocation": alloc, "gpus": 1, "command": ["sh", "-c",
                "cat \"$GIGAFAB_PROJECT_DIR/data.csv\" && echo result > \"$GIGAFAB_PROJECT_DIR/out.txt\""]}),
        )
        .await;
    assert_eq!(st, 201, "{j}");
    let id = j["id"].as_i64().unwrap();
    let j = app.wait_state(id, &["completed", "failed"], 60).await;
    assert_eq!(j["state"], "completed", "{j:#}\n{}", app.logs(id, "").await);
    assert!(app.logs(id, "").await.contains("1,2"));
    assert_eq!(get(&app, &alice, "out.txt").await, (200, "result\n".into()));

    // the CLI: put, ls (a table and JSON), get, and a job's files
    let local = app.dir.join("report.md");
    std::fs::write(&local, "# results\n").unwrap();
    let local = local.display().to_string();
    let (ok, _, err) = app.cli(&bob, &["files", "put", &local, "report.md"]);
    assert!(ok, "{err}");
    assert!(err.contains("10 bytes uploaded as report.md"), "{err}");
    let (ok, out, err) = app.cli(&bob, &["files", "ls"]);
    assert!(ok, "{err}");
    assert!(err.contains("acme's project space"), "{err}");
    for name in ["data.csv", "out.txt", "report.md"] {
        assert!(out.contains(name), "{out}");
    }
    let (ok, out, _) = app.cli(&bob, &["files", "ls", "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["org"], "acme", "{v}");
    let (ok, out, err) = app.cli(&alice, &["files", "get", "report.md", "-"]);
    assert_eq!((ok, out.as_str()), (true, "# results\n"), "{err}");
    let (ok, out, err) = app.cli(
        &alice,
        &["files", "get", "--job", &id.to_string(), "stdout.log", "-"],
    );
    assert!(ok && out.contains("1,2"), "{out}{err}");
    // by its own name here: never over a file that exists, unless told
    let here = app.dir.join("here");
    std::fs::create_dir_all(&here).unwrap();
    std::fs::write(here.join("report.md"), "mine").unwrap();
    let get_here = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gigafab"))
            .args(["files", "get", "report.md"])
            .args(extra)
            .current_dir(&here)
            .env("GIGAFAB_SERVER", &app.url)
            .env("GIGAFAB_TOKEN", &alice)
            .output()
            .unwrap()
    };
    let o = get_here(&[]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(here.join("report.md")).unwrap(),
        "mine"
    );
    assert!(get_here(&["--force"]).status.success());
    assert_eq!(
        std::fs::read_to_string(here.join("report.md")).unwrap(),
        "# results\n"
    );
    let (ok, _, err) = app.cli(&mallory, &["files", "get", "report.md", "-"]);
    assert!(!ok && err.contains("not found"), "{err}");

    // another organisation's member sees her own space, not acme's
    let (_, l) = app
        .call("GET", "/api/v1/space/files", Some(&mallory), None)
        .await;
    assert_eq!(l["org"], "evil");
    assert_eq!(l["entries"].as_array().unwrap().len(), 0, "{l}");
    assert_eq!(get(&app, &mallory, "data.csv").await.0, 404);
    for bad in ["../acme/data.csv", "/etc/passwd", "sub/../../acme/out.txt"] {
        let (st, body) = get(&app, &mallory, bad).await;
        assert_eq!(st, 422, "{bad}: {body}");
        let (st, body) = put(&app, &mallory, bad, "x").await;
        assert_eq!(st, 422, "{bad}: {body}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("out.txt")).unwrap(),
        "result\n"
    );
    // no parent made on the way
    assert_eq!(put(&app, &alice, "no/such/dir.txt", "x").await.0, 404);
    // an admin belongs to no organisation: no space
    let (st, e) = app
        .call("GET", "/api/v1/space/files", Some(TOKEN), None)
        .await;
    assert_eq!(
        (st, e["error"].as_str()),
        (404, Some("no_project_space")),
        "{e}"
    );

    // a quota: an upload past it is refused, one within it goes in
    app.kill9();
    app.extra = vec!["--project-space-gib".into(), "0.0001".into()];
    app.start(None);
    let (st, body) = put(&app, &alice, "big.bin", vec![0u8; 200 << 10]).await;
    assert_eq!(st, 413, "{body}");
    assert!(body.contains("payload_too_large"), "{body}");
    assert_eq!(put(&app, &alice, "small.txt", "ok").await.0, 200);
    let (_, l) = app
        .call("GET", "/api/v1/space/files", Some(&alice), None)
        .await;
    assert_eq!(l["limit_bytes"], 107374, "{l}");
}
