//! The data and model catalog over the real server and the real CLI: push
//! (hash, upload, commit), duplicates, bad input, verify on a corrupted
//! file, gated access with grants and requests, jobs reading inputs, and
//! residency placing jobs live on a two-site factory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

#[path = "common/openapi.rs"]
mod openapi;
#[path = "common/app.rs"]
#[macro_use]
mod app;
use app::*;

/// A user of `org` with `role`: their token.
async fn user(app: &App, name: &str, org: &str, role: &str) -> String {
    app.user_token(name, org, role).await
}

/// `gigafab ARGS` against the app as `token`: (success, stdout, stderr).
fn cli(app: &App, token: &str, args: &[&str]) -> (bool, String, String) {
    app.cli(token, args)
}

fn tree(dir: &Path, files: &[(&str, &[u8])]) {
    let _ = std::fs::remove_dir_all(dir);
    for (p, data) in files {
        let f = dir.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, data).unwrap();
    }
}

/// The store's copies of every version (`DATA_DIR/catalog/v/*`).
fn stored(app: &App) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(app.dir.join("catalog/v"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn chmod_w(p: &Path) {
    let _ = Command::new("chmod").arg("-R").arg("u+w").arg(p).status();
}

both_stores!(push_verify_and_access);

async fn push_verify_and_access(app: App) {
    for (o, c) in [("acme", "sme"), ("beta", "startup")] {
        app.post("/api/v1/orgs", json!({"name": o, "category": c}))
            .await;
    }
    let alice = user(&app, "alice", "acme", "member").await;
    let olga = user(&app, "olga", "acme", "owner").await;
    let bob = user(&app, "bob", "beta", "member").await;
    let work = app.dir.join("work");
    let ds = work.join("ds");
    let big: Vec<u8> = (0..2_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    tree(
        &ds,
        &[
            ("train/a.txt", b"alpha\n"),
            ("train/big.bin", &big),
            ("README", b"cells\n"),
        ],
    );

    // a new entry needs its kind and licence
    let (ok, _, err) = cli(
        &app,
        &alice,
        &["catalog", "push", ds.to_str().unwrap(), "--name", "cells"],
    );
    assert!(!ok && err.contains("give --kind and --licence"), "{err}");
    let push = |extra: &[&str]| {
        let mut a = vec!["catalog", "push", ds.to_str().unwrap(), "--name", "cells"];
        a.extend_from_slice(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = push(&[
        "--kind",
        "dataset",
        "--licence",
        "CC-BY-4.0",
        "--access",
        "gated",
        "--description",
        "Cell images",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(&app, &alice, &args);
    assert!(ok, "{err}");
    assert!(
        out.starts_with("cells@1: 3 files, 2500012 bytes, manifest "),
        "{out}"
    );
    // the manifest hash is of `sha256 size path` lines, as sha256sum prints them
    let (_, v) = app
        .call(
            "GET",
            "/api/v1/catalog/cells/versions/latest?files=true",
            Some(&alice),
            None,
        )
        .await;
    let files = v["manifest"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    let sums = Command::new("sha256sum")
        .arg("train/a.txt")
        .current_dir(&ds)
        .output()
        .unwrap();
    let sum = String::from_utf8_lossy(&sums.stdout);
    let a = files.iter().find(|f| f["path"] == "train/a.txt").unwrap();
    assert!(
        sum.starts_with(a["sha256"].as_str().unwrap()),
        "{sum} vs {a}"
    );
    assert_eq!(stored(&app).len(), 1);

    // the same content again: refused, nothing stored
    let (ok, _, err) = cli(&app, &alice, &args);
    assert!(!ok && err.contains("duplicate_version"), "{err}");
    assert_eq!(stored(&app).len(), 1);
    // changed content: version 2, `latest` moves, `v1` kept by alias
    std::fs::write(ds.join("README"), b"cells, v2\n").unwrap();
    let (ok, out, err) = cli(&app, &alice, &args);
    assert!(ok && out.starts_with("cells@2:"), "{out}{err}");
    let (ok, _, err) = cli(&app, &alice, &["catalog", "alias", "cells", "first", "1"]);
    assert!(ok, "{err}");
    let e = app.get("/api/v1/catalog/cells").await;
    assert_eq!(e["versions"], json!([1, 2]));
    assert_eq!(e["aliases"], json!({"first": 1, "latest": 2}));

    // bad input: each a clear refusal naming what is wrong
    let bad = work.join("bad");
    tree(&bad, &[("ok.txt", b"x")]);
    std::os::unix::fs::symlink("/etc/passwd", bad.join("leak")).unwrap();
    let (ok, _, err) = cli(
        &app,
        &alice,
        &["catalog", "push", bad.to_str().unwrap(), "--name", "cells"],
    );
    assert!(
        !ok && err.contains("`leak`: a symbolic link pointing out of the tree"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &app,
        &alice,
        &["catalog", "push", "/no/such/dir", "--name", "cells"],
    );
    assert!(!ok && err.contains("not found"), "{err}");
    let sha = "0".repeat(64);
    for (files, says) in [
        (json!([{"path": "../x", "size": 1, "sha256": sha}]), "`..`"),
        (
            json!([{"path": "/etc/passwd", "size": 1, "sha256": sha}]),
            "absolute",
        ),
        (
            json!([{"path": "a", "size": 1, "sha256": sha}, {"path": "a", "size": 1, "sha256": sha}]),
            "given twice",
        ),
        (
            json!([{"path": "a", "size": 1, "sha256": "xyz"}]),
            "64 lower-case hex",
        ),
        (json!([]), "no file"),
    ] {
        let (s, e) = app
            .call(
                "POST",
                "/api/v1/catalog/cells/uploads",
                Some(&alice),
                Some(json!({"files": files})),
            )
            .await;
        assert_eq!(s, 422, "{e}");
        assert!(e["message"].as_str().unwrap().contains(says), "{says}: {e}");
    }
    // a file whose bytes are not the manifest's is refused; the upload is
    // not committed with a file missing
    let good = format!("{:x}", sha2_of(b"hello"));
    let (s, up) = app
        .call(
            "POST",
            "/api/v1/catalog/cells/uploads",
            Some(&alice),
            Some(json!({"files": [{"path": "h.txt", "size": 5, "sha256": good}]})),
        )
        .await;
    assert_eq!(s, 201, "{up}");
    let id = up["id"].as_str().unwrap();
    let put = |body: &'static [u8], token: String| {
        let url = format!("{}/api/v1/catalog/uploads/{id}/files/h.txt", app.url);
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .bearer_auth(token)
                .body(body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (s, e) = put(b"HELLO", alice.clone()).await;
    assert!(s == 422 && e.contains("hash_mismatch"), "{s} {e}");
    let (s, e) = app
        .call(
            "POST",
            &format!("/api/v1/catalog/uploads/{id}/commit"),
            Some(&alice),
            Some(json!({})),
        )
        .await;
    assert_eq!((s, &e["error"]), (409, &json!("upload_incomplete")), "{e}");
    let (s, _) = put(b"hello", bob.clone()).await;
    assert_eq!(s, 404, "another user's upload");
    let (s, e) = put(b"hello", alice.clone()).await;
    assert_eq!(s, 200, "{e}");
    let (s, v) = app
        .call(
            "POST",
            &format!("/api/v1/catalog/uploads/{id}/commit"),
            Some(&alice),
            Some(json!({"aliases": ["tiny"]})),
        )
        .await;
    assert_eq!((s, &v["version"]), (201, &json!(3)), "{v}");

    // verify: intact, then a stored file corrupted in place
    let (ok, out, _) = cli(&app, &alice, &["catalog", "verify", "cells@1"]);
    assert!(ok && out.contains("cells@1: intact"), "{out}");
    let v1 = stored(&app)
        .into_iter()
        .find(|d| {
            d.join("train/big.bin").exists()
                && std::fs::read(d.join("README")).unwrap() == b"cells\n"
        })
        .unwrap();
    chmod_w(&v1);
    let mut b = std::fs::read(v1.join("train/big.bin")).unwrap();
    b[1_000_000] ^= 0xff;
    std::fs::write(v1.join("train/big.bin"), b).unwrap();
    let (ok, out, _) = cli(&app, &alice, &["catalog", "verify", "cells@first"]);
    assert!(!ok, "a corrupt version exits non-zero: {out}");
    assert!(
        out.contains("CORRUPT") && out.contains("corrupt") && out.contains("train/big.bin"),
        "{out}"
    );
    let (_, r) = app
        .call("POST", "/api/v1/catalog/cells/verify/2", Some(&alice), None)
        .await;
    assert_eq!(r["intact"], true, "{r}");

    // gated: bob sees the card, not the versions; asks; the owner grants
    let (_, l) = app.call("GET", "/api/v1/catalog", Some(&bob), None).await;
    let e = &l["items"][0];
    assert_eq!(
        (&e["name"], &e["readable"], &e["versions"]),
        (&json!("cells"), &json!(false), &json!([]))
    );
    let job = |input: &str| {
        json!({"allocation": 1, "gpus": 1, "inputs": [input],
               "command": ["sh", "-c", "cat $GIGAFAB_INPUT_CELLS/README"]})
    };
    let beta_alloc = app
        .post(
            "/api/v1/allocations",
            json!({"org": "beta", "gpu_hours": 10}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let bob_job = |input: &str| {
        let mut j = job(input);
        j["allocation"] = json!(beta_alloc);
        j
    };
    for path in ["/api/v1/catalog/cells/versions/1"] {
        let (s, e) = app.call("GET", path, Some(&bob), None).await;
        assert_eq!(s, 403, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains("access-requests"),
            "{e}"
        );
    }
    let (s, e) = app.submit(&bob, bob_job("dataset:cells@latest")).await;
    assert_eq!(s, 403, "{e}");
    let (s, _) = app
        .call(
            "POST",
            "/api/v1/catalog/cells/access-requests",
            Some(&bob),
            Some(json!({"reason": "benchmarking"})),
        )
        .await;
    assert_eq!(s, 201);
    let (_, e) = app
        .call("GET", "/api/v1/catalog/cells", Some(&olga), None)
        .await;
    assert_eq!(e["access_requests"][0]["org"], "beta", "{e}");
    let (ok, _, err) = cli(
        &app,
        &alice,
        &["catalog", "grant", "cells", "--org", "beta"],
    );
    assert!(
        !ok && err.contains("owners"),
        "a member does not grant: {err}"
    );
    let (ok, out, err) = cli(
        &app,
        &olga,
        &["catalog", "grant", "cells", "--org", "beta", "--days", "30"],
    );
    assert!(ok && out.contains("granted to beta until"), "{out}{err}");
    let (_, e) = app
        .call("GET", "/api/v1/catalog/cells", Some(&olga), None)
        .await;
    assert_eq!(
        e["access_requests"],
        json!([]),
        "the grant answers the request"
    );

    // bob's job reads the version `latest` pinned at submission
    let (s, j) = app.submit(&bob, bob_job("cells@latest")).await;
    assert_eq!(s, 201, "{j}");
    assert_eq!(j["inputs"], json!(["dataset:cells@2"]));
    let id = j["id"].as_i64().unwrap();
    let done = app.wait_state(id, &["completed", "failed"], 20).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(app.logs(id, "").await, "cells, v2\n");
    let events = events(&done);
    assert!(
        events.iter().any(|(k, m)| k == "inputs"
            && m.contains("dataset:cells@2 (manifest ")
            && m.contains("$GIGAFAB_INPUT_CELLS")),
        "{events:?}"
    );
    for (input, code) in [
        ("model:cells@1", 422),
        ("cells@nope", 404),
        ("nothing@1", 422),
        ("cells@1;rm", 422),
    ] {
        let (s, e) = app.submit(&bob, bob_job(input)).await;
        assert_eq!(s, code, "{input}: {e}");
    }

    // revoked: refused again
    let (ok, _, err) = cli(
        &app,
        &olga,
        &["catalog", "revoke", "cells", "--org", "beta"],
    );
    assert!(ok, "{err}");
    let (s, _) = app.submit(&bob, bob_job("cells@1")).await;
    assert_eq!(s, 403);

    // an org-only entry is invisible to others
    tree(&work.join("p"), &[("w", b"w")]);
    let (ok, _, err) = cli(
        &app,
        &alice,
        &[
            "catalog",
            "push",
            work.join("p").to_str().unwrap(),
            "--name",
            "private-model",
            "--kind",
            "model",
            "--licence",
            "LicenseRef-acme",
        ],
    );
    assert!(ok, "{err}");
    let (s, _) = app
        .call("GET", "/api/v1/catalog/private-model", Some(&bob), None)
        .await;
    assert_eq!(s, 404);
    // lineage: a model trained on the dataset, from the private base
    tree(&work.join("m"), &[("weights", b"trained")]);
    let (ok, _, err) = cli(
        &app,
        &alice,
        &[
            "catalog",
            "push",
            work.join("m").to_str().unwrap(),
            "--name",
            "cell-model",
            "--kind",
            "model",
            "--licence",
            "Apache-2.0",
            "--base",
            "private-model@1",
            "--dataset",
            "cells@2",
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&app, &alice, &["catalog", "lineage", "cell-model@latest"]);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "cell-model@1 --base--> private-model@1\ncell-model@1 --dataset--> cells@2\n"
    );
    let (ok, _, err) = cli(
        &app,
        &bob,
        &[
            "catalog",
            "push",
            work.join("m").to_str().unwrap(),
            "--name",
            "cell-model",
        ],
    );
    assert!(
        !ok && err.contains("does not exist"),
        "another organisation's entry is not shown: {err}"
    );
    // a job's output becomes the model's next version, with the job and its
    // inputs as lineage; a hostile output (a link out of its directory) is
    // refused and said so
    let acme_alloc = app
        .post(
            "/api/v1/allocations",
            json!({"org": "acme", "gpu_hours": 10}),
        )
        .await["id"]
        .as_i64()
        .unwrap();
    let train = |script: &str| {
        json!({"allocation": acme_alloc, "gpus": 1, "inputs": ["cells@2", "model:cell-model@1"],
               "output_model": "cell-model", "command": ["sh", "-c", script]})
    };
    let (s, j) = app
        .submit(&alice, train("mkdir -p $GIGAFAB_OUTPUT_DIR/ckpt && cat $GIGAFAB_INPUT_CELLS/README > $GIGAFAB_OUTPUT_DIR/ckpt/w"))
        .await;
    assert_eq!(s, 201, "{j}");
    let id = j["id"].as_i64().unwrap();
    app.wait_state(id, &["completed"], 20).await;
    let mut out;
    out = output_of(&app, id).await;
    assert_eq!(out["output"], "cell-model@2", "{out}");
    let (_, v) = app
        .call(
            "GET",
            "/api/v1/catalog/cell-model/versions/latest?files=true",
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(v["version"], 2);
    assert_eq!(
        v["lineage"],
        json!({"base": "cell-model@1", "datasets": ["cells@2"], "job": id})
    );
    assert_eq!(v["manifest"][0]["path"], "ckpt/w");
    let (ok, text, _) = cli(&app, &alice, &["catalog", "lineage", "cell-model@2"]);
    assert!(ok);
    assert!(
        text.contains(&format!("cell-model@2 --job--> job {id}"))
            && text.contains("cell-model@2 --dataset--> cells@2")
            && text.contains("cell-model@1 --base--> private-model@1"),
        "{text}"
    );
    let (_, j) = app
        .submit(
            &alice,
            train("mkdir -p $GIGAFAB_OUTPUT_DIR && ln -s /etc/passwd $GIGAFAB_OUTPUT_DIR/leak"),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    app.wait_state(id, &["completed"], 20).await;
    out = output_of(&app, id).await;
    assert!(
        out["output"]
            .as_str()
            .unwrap()
            .contains("`leak`: a symbolic link pointing out of the tree"),
        "{out}"
    );
    // the output directory itself a link out: moved as a link, refused
    let (_, j) = app
        .submit(
            &alice,
            train("mkdir -p $(dirname $GIGAFAB_OUTPUT_DIR) && ln -s /etc $GIGAFAB_OUTPUT_DIR"),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    app.wait_state(id, &["completed"], 20).await;
    out = output_of(&app, id).await;
    assert!(
        out["output"].as_str().unwrap().contains("not a directory"),
        "{out}"
    );
    assert!(
        std::fs::metadata("/etc/passwd").is_ok(),
        "nothing of /etc touched"
    );
    let e = app.get("/api/v1/catalog/cell-model").await;
    assert_eq!(e["versions"], json!([1, 2]), "nothing registered");
    // only a model the submitter's organisation may push
    let mut j = train("true");
    j["output_model"] = json!("cells");
    let (s, e) = app.submit(&alice, j).await;
    assert_eq!(s, 422, "a dataset: {e}");
    let mut j = bob_job("cells@1");
    j["inputs"] = json!([]);
    j["output_model"] = json!("cell-model");
    let (s, e) = app.submit(&bob, j).await;
    assert_eq!((s, &e["error"]), (422, &json!("output_not_found")), "{e}");

    // every write is audited
    let audit = app.get("/api/v1/audit?limit=1000").await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    for a in [
        "create_catalog_entry",
        "push_catalog_version",
        "set_catalog_alias",
        "request_catalog_access",
        "grant_catalog_entry",
        "revoke_catalog_entry",
    ] {
        assert!(actions.contains(&a), "{a}: {actions:?}");
    }
}

/// Job `id` once what came of its output is known (10 s at most).
async fn output_of(app: &App, id: i64) -> Value {
    let mut out = Value::Null;
    for _ in 0..100 {
        out = app.get(&format!("/api/v1/jobs/{id}")).await;
        if !out["output"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

fn sha2_of(b: &[u8]) -> impl std::fmt::LowerHex {
    struct H(Vec<u8>);
    impl std::fmt::LowerHex for H {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            for x in &self.0 {
                write!(f, "{x:02x}")?;
            }
            Ok(())
        }
    }
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout);
    let hex = hex.split_whitespace().next().unwrap();
    H((0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect())
}

/// Two sites, a dataset allowed at one: its jobs run there only, and wait
/// (saying why) while that site is full and the other is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn residency_places_jobs_live() {
    let mut app = App::spawn(Db::Sqlite, "residency").await.unwrap();
    let f = app.dir.join("two.toml");
    let pool = |site: &str, pool: &str| {
        format!(
            "[[sites]]\nname = \"{site}\"\n[[sites.pools]]\nname = \"{pool}\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 2\n"
        )
    };
    std::fs::write(
        &f,
        format!(
            "name = \"two\"\n{}{}",
            pool("paris", "pa"),
            pool("frankfurt", "fr")
        ),
    )
    .unwrap();
    app.kill9();
    app.extra = vec!["--factory".into(), f.display().to_string()];
    app.start(None);
    let d = app.dir.join("eu");
    tree(&d, &[("x", b"x")]);
    let (ok, _, err) = cli(
        &app,
        TOKEN,
        &[
            "catalog",
            "push",
            d.to_str().unwrap(),
            "--name",
            "eu-data",
            "--kind",
            "dataset",
            "--licence",
            "CC0-1.0",
            "--org",
            "default",
            "--residency",
            "paris",
        ],
    );
    assert!(ok, "{err}");
    // residency must name sites of the factory
    let (s, e) = app
        .call("POST", "/api/v1/catalog", Some(TOKEN), Some(json!({"name": "x", "kind": "dataset", "licence": "MIT", "org": "default", "residency": ["tokyo"]})))
        .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("paris, frankfurt"),
        "{e}"
    );
    // frankfurt's store may not hold it
    let job = |gpus: i64, input: bool, script: &str| {
        let mut j = json!({"allocation": 1, "gpus": gpus, "command": ["sh", "-c", script]});
        if input {
            j["inputs"] = json!(["eu-data@latest"]);
        }
        j
    };
    let (_, a) = app.submit(TOKEN, job(2, true, "sleep 2")).await;
    let a = a["id"].as_i64().unwrap();
    let ja = app.wait_state(a, &["running"], 10).await;
    assert!(
        ja["accelerators"][0].as_str().unwrap().starts_with("pa"),
        "{ja}"
    );
    let (_, b) = app.submit(TOKEN, job(1, true, "true")).await;
    let (_, c) = app.submit(TOKEN, job(1, false, "true")).await;
    let (b, c) = (b["id"].as_i64().unwrap(), c["id"].as_i64().unwrap());
    let jc = app.wait_state(c, &["completed"], 10).await;
    assert!(
        jc["accelerators"][0].as_str().unwrap().starts_with("fr"),
        "{jc}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jb = app.get(&format!("/api/v1/jobs/{b}")).await;
    assert_eq!(jb["state"], "queued", "{jb}");
    assert!(
        jb["reason"]
            .as_str()
            .unwrap()
            .starts_with("waiting: residency allows only site paris, full"),
        "{jb}"
    );
    let jb = app.wait_state(b, &["completed"], 15).await;
    assert!(
        jb["accelerators"][0].as_str().unwrap().starts_with("pa"),
        "{jb}"
    );
    // an input allowed nowhere the others are: refused at submission
    let d2 = app.dir.join("de");
    tree(&d2, &[("y", b"y")]);
    app.kill9();
    app.extra
        .extend(["--catalog-site".into(), "frankfurt".into()]);
    app.start(None);
    let (ok, _, err) = cli(
        &app,
        TOKEN,
        &[
            "catalog",
            "push",
            d2.to_str().unwrap(),
            "--name",
            "de-data",
            "--kind",
            "dataset",
            "--licence",
            "CC0-1.0",
            "--org",
            "default",
            "--residency",
            "frankfurt",
        ],
    );
    assert!(ok, "{err}");
    let mut j = job(1, true, "true");
    j["inputs"] = json!(["eu-data@1", "de-data@1"]);
    let (s, e) = app.submit(TOKEN, j).await;
    assert_eq!((s, &e["error"]), (422, &json!("residency_conflict")), "{e}");
    // and a store at frankfurt takes no new version of a paris-only entry
    let (ok, _, err) = cli(
        &app,
        TOKEN,
        &["catalog", "push", d2.to_str().unwrap(), "--name", "eu-data"],
    );
    assert!(!ok && err.contains("residency_violation"), "{err}");
    let _: Value = Value::Null;
}
