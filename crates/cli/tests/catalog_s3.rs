//! The catalog on an S3 store over the real server: `gigafab serve
//! --catalog-store s3://BUCKET` against the Python `moto` server (a real
//! S3-compatible server, `pip install 'moto[server]'`), a push, and a job
//! reading the version fetched (and checked) into the server's cache.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "common/app.rs"]
#[allow(unused_macros)]
mod app;
#[path = "common/openapi.rs"]
mod openapi;
use app::*;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A moto server on a free port, with bucket `bucket`: its endpoint.
async fn moto(bucket: &str) -> (Moto, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is not installed: pip install 'moto[server]'");
    let m = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    loop {
        let put = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await;
        if put.is_ok_and(|r| r.status().is_success()) {
            return (m, endpoint);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the moto S3 server: pip install 'moto[server]'; CI runs it"]
async fn an_s3_catalog_store() {
    let (_moto, endpoint) = moto("site-catalog").await;
    // the server's environment, as the AWS tools read it (this test is
    // alone in its binary: nothing else reads the environment meanwhile)
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT_URL", &endpoint);
        std::env::set_var("AWS_ALLOW_HTTP", "true");
    }
    let mut app = App::spawn(Db::Sqlite, "s3").await.unwrap();
    app.kill9();
    app.extra = vec!["--catalog-store".into(), "s3://site-catalog".into()];
    app.start(None);
    let d = app.dir.join("cells");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/x.txt"), "from s3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gigafab"))
        .args([
            "catalog",
            "push",
            d.to_str().unwrap(),
            "--name",
            "cells",
            "--kind",
            "dataset",
            "--licence",
            "CC0-1.0",
            "--org",
            "default",
        ])
        .env("GIGAFAB_SERVER", &app.url)
        .env("GIGAFAB_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // nothing of it in the data directory: the bucket has it
    assert!(
        !app.dir.join("catalog/v").exists()
            || std::fs::read_dir(app.dir.join("catalog/v"))
                .unwrap()
                .next()
                .is_none()
    );
    let listing = reqwest::get(format!("{endpoint}/site-catalog?list-type=2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listing.contains("/sub/x.txt</Key>"), "{listing}");
    let (s, r) = app
        .call("POST", "/api/v1/catalog/cells/verify/1", Some(TOKEN), None)
        .await;
    assert_eq!((s, &r["intact"]), (200, &json!(true)), "{r}");
    // a job reads it, fetched into the server's cache
    let (s, j) = app
        .submit(
            TOKEN,
            json!({"allocation": 1, "gpus": 1, "inputs": ["cells@1"],
                   "command": ["sh", "-c", "cat $GIGAFAB_INPUT_CELLS/sub/x.txt; echo $GIGAFAB_INPUT_CELLS"]}),
        )
        .await;
    assert_eq!(s, 201, "{j}");
    let id = j["id"].as_i64().unwrap();
    let done = app.wait_state(id, &["completed", "failed"], 20).await;
    assert_eq!(done["state"], "completed", "{done}");
    let log = app.logs(id, "").await;
    assert!(log.starts_with("from s3\n"), "{log}");
    assert!(log.contains("catalog-cache/v/"), "{log}");
}
