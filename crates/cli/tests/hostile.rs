//! A hostile tenant: jobs that try to reach what is not theirs. Every
//! attempt must fail while the other tenant's work goes on.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_sees_none_of_the_servers_environment() {
    let dir = fresh_dir("env");
    let data = dir.join("data");
    let s = Server::start(
        &dir,
        &strs(&base_args(&data)),
        &[
            ("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN),
            ("PGPASSWORD", "pg-secret-1"),
            ("AWS_SECRET_ACCESS_KEY", "aws-secret-2"),
            ("GIGAFAB_DATABASE_PASSWORD", "db-secret-3"),
        ],
    )
    .unwrap();
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "type": "h100",
                "env": {"MINE": "asked-for"}, "command": ["env"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    s.wait_state(TOKEN, id, &["completed"]).await;
    let (code, out) = s
        .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
        .await;
    assert_eq!(code, 200);
    for secret in [
        TOKEN,
        "pg-secret-1",
        "aws-secret-2",
        "db-secret-3",
        "RUST_LOG",
    ] {
        assert!(!out.contains(secret), "the job saw `{secret}`:\n{out}");
    }
    for mine in [
        "MINE=asked-for",
        "GIGAFAB_JOB_ID=",
        "CUDA_VISIBLE_DEVICES=0",
        "PATH=",
    ] {
        assert!(out.contains(mine), "missing `{mine}`:\n{out}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The attacks of organisation A's job on organisation B's job and on the
/// server, each printed as `ATTACK name: blocked` or `... SUCCEEDED`.
const ATTACKS: &str = r#"
try() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "ATTACK $name: SUCCEEDED"; else echo "ATTACK $name: blocked"; fi; }
V=$DATA/jobs/$VICTIM
try read_victim_stdout cat $V/stdout.log
try read_victim_files cat $V/work/secret
try list_victim_dir ls $V/work
try list_jobs ls $DATA/jobs
try read_store cat $DATA/gigafab.db
try read_instance cat $DATA/instance-id
try cancel_victim touch $V/cancel
try forge_victim_status sh -c "echo '{}' > $V/status.json"
try forge_own_status sh -c "echo '{\"outcome\":\"completed\"}' > ../status.json"
try read_victim_environ sh -c 'cat /proc/[0-9]*/environ 2>/dev/null | tr "\0" "\n" | grep -q B_SECRET'
n=0; for p in /proc/[0-9]*; do a=$(tr '\0' '\n' < $p/cmdline 2>/dev/null | sed -n 2p); [ "$a" = job-supervise ] && n=$((n+1)); done; echo "supervisors seen: $n"
try kill_supervisors sh -c 'ok=1; for p in /proc/[0-9]*; do a=$(tr "\0" "\n" < $p/cmdline 2>/dev/null | sed -n 2p); if [ "$a" = job-supervise ]; then kill -9 ${p#/proc/} 2>/dev/null; sleep 0.2; kill -0 ${p#/proc/} 2>/dev/null || ok=0; fi; done; exit $ok'
try become_root sh -c 'test "$(id -u)" = 0'
echo "whoami: $(id -un)"
# outlive the end
setsid sh -c 'exec sleep 7777' >/dev/null 2>&1 < /dev/null &
echo attacks done
"#;

fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("7777"))
                .unwrap_or(false)
        })
        .count()
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_reach_another_tenants_job_or_the_server() {
    require_root("a_job_cannot_reach_another_tenants_job_or_the_server");
    let dir = fresh_dir("tenants");
    let data = dir.join("data");
    let s = Server::two_tenants(&dir, &[]);
    assert!(
        s.stderr()
            .contains("jobs run as their users' POSIX accounts"),
        "{}",
        s.stderr()
    );
    let tokens = s.tenants(&["a", "b"], 10.0).await;
    // B: a secret in its output, its files and its environment
    let (tb, ab) = &tokens[1];
    let b = s
        .json("POST", "/api/v1/jobs", tb, Some(json!({"allocation": ab, "gpus": 1, "type": "mi300x",
            "env": {"B_SECRET": "b-env-secret"},
            "command": ["sh", "-c", "echo b-out-secret; echo b-file-secret > secret; sleep 4; cat secret; echo b-done"]})))
        .await;
    let b_id = b["id"].as_i64().unwrap();
    s.wait_state(TOKEN, b_id, &["running"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // A attacks
    let (ta, aa) = &tokens[0];
    let a = s
        .json(
            "POST",
            "/api/v1/jobs",
            ta,
            Some(json!({"allocation": aa, "gpus": 1, "type": "h100",
            "env": {"DATA": data.display().to_string(), "VICTIM": b_id.to_string()},
            "command": ["sh", "-c", ATTACKS]})),
        )
        .await;
    let a_id = a["id"].as_i64().unwrap();
    let a_job = s.wait_state(TOKEN, a_id, &["completed", "failed"]).await;
    let (_, out) = s
        .call(
            "GET",
            &format!("/api/v1/jobs/{a_id}/logs"),
            Some(TOKEN),
            None,
        )
        .await;
    assert!(out.contains("attacks done"), "{out}\n{a_job:#}");
    assert!(out.contains("whoami: gf-test-a"), "{out}");
    let seen: usize = out
        .split("supervisors seen: ")
        .nth(1)
        .and_then(|r| r.lines().next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    // its own PID namespace: at most its own init (a fork of its
    // supervisor) is there; no other job's supervisor
    assert!(seen <= 1, "A sees {seen} supervisors: {out}");
    let attacks: Vec<&str> = out.lines().filter(|l| l.starts_with("ATTACK")).collect();
    assert_eq!(attacks.len(), 12, "{out}");
    for l in &attacks {
        assert!(l.ends_with(": blocked"), "{l}\n{out}");
    }
    // nothing A started outlives it
    let t = std::time::Instant::now();
    while sleepers() > 0 {
        assert!(
            t.elapsed().as_secs() < 10,
            "`setsid sleep 7777` outlived its job"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // B went on undisturbed, and its owner reads its output
    let b = s
        .wait_state(TOKEN, b_id, &["completed", "failed", "cancelled"])
        .await;
    assert_eq!(b["state"], "completed", "{b:#}");
    let (_, out) = s
        .call("GET", &format!("/api/v1/jobs/{b_id}/logs"), Some(tb), None)
        .await;
    assert_eq!(out, "b-out-secret\nb-file-secret\nb-done\n");
    // a user without an account gets a clear refusal
    s.json(
        "POST",
        "/api/v1/orgs",
        TOKEN,
        Some(json!({"name": "c", "category": "sme"})),
    )
    .await;
    let u = s
        .json(
            "POST",
            "/api/v1/users",
            TOKEN,
            Some(json!({"name": "c-user", "org": "c", "role": "member"})),
        )
        .await;
    let al = s
        .json(
            "POST",
            "/api/v1/allocations",
            TOKEN,
            Some(json!({"org": "c", "gpu_hours": 1})),
        )
        .await;
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/jobs",
            u["token"].as_str(),
            Some(json!({"allocation": al["id"], "gpus": 1, "command": ["true"]})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("no_account"), "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_server_says_jobs_share_its_identity() {
    require_root("an_unprivileged_server_says_jobs_share_its_identity");
    let (uid, gid) = test_account("gf-test-a");
    let dir = fresh_dir("unpriv");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    // the server as an ordinary account: setpriv drops root before exec
    let mut cmd = std::process::Command::new("setpriv");
    cmd.args([
        "--reuid",
        &uid.to_string(),
        "--regid",
        &gid.to_string(),
        "--clear-groups",
    ])
    .arg(env!("CARGO_BIN_EXE_gigafab"))
    .args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--telemetry",
        "off",
        "--data-dir",
    ])
    .arg(&data)
    .env("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)
    .env("HOME", "/nonexistent")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(err));
    let mut seen = String::new();
    let mut url = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        seen.push_str(&l);
        seen.push('\n');
        if let Some(r) = l.split("listening on ").nth(1) {
            url = Some(r.split_whitespace().next().unwrap().to_string());
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.unwrap_or_else(|| panic!("{seen}"));
    assert!(seen.contains("every job runs as `gf-test-a`"), "{seen}");
    assert!(seen.contains("a second organisation is refused"), "{seen}");
    let r = reqwest::Client::new()
        .post(format!("{url}/api/v1/orgs"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "other", "category": "sme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    assert!(r.text().await.unwrap().contains("isolation_required"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[test]
fn a_root_server_without_an_identity_rule_refuses_to_start() {
    require_root("a_root_server_without_an_identity_rule_refuses_to_start");
    let dir = fresh_dir("rootrule");
    let o = gigafab()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--telemetry",
            "off",
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("runs as root") && e.contains("--job-accounts"),
        "{e}"
    );
    // and the two rules exclude each other
    let map = dir.join("m.toml");
    std::fs::write(&map, "[orgs]\n").unwrap();
    let o = gigafab()
        .args(["serve", "--single-user", "--job-accounts"])
        .arg(&map)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("exclude each other"));
    // a bad map says where
    std::fs::write(&map, "[orgs]\na = 3\n").unwrap();
    let o = gigafab()
        .args(["serve", "--job-accounts"])
        .arg(&map)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("m.toml:2"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_shows_only_ones_own_jobs() {
    let dir = fresh_dir("fleetleak");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    let who = s.tenants(&["a", "b"], 1.0).await;
    let j = s
        .json("POST", "/api/v1/jobs", &who[0].0, Some(json!({"allocation": who[0].1, "gpus": 1, "type": "h100", "command": ["sleep", "3"]})))
        .await;
    let id = j["id"].as_i64().unwrap();
    s.wait_state(TOKEN, id, &["running"]).await;
    let jobs_on = |f: &serde_json::Value| -> Vec<i64> {
        f["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|n| {
                n["jobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_i64().unwrap())
            })
            .collect()
    };
    let fa = s.json("GET", "/api/v1/fleet", &who[0].0, None).await;
    assert_eq!(jobs_on(&fa), vec![id]);
    let fb = s.json("GET", "/api/v1/fleet", &who[1].0, None).await;
    assert!(jobs_on(&fb).is_empty(), "{fb}");
    assert_eq!(fb["busy"], 1, "capacity is still shown");
    let fadmin = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
    assert_eq!(jobs_on(&fadmin), vec![id]);
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_owners_revoke_and_users_can_be_disabled() {
    let dir = fresh_dir("tokens");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    s.json(
        "POST",
        "/api/v1/orgs",
        TOKEN,
        Some(json!({"name": "acme", "category": "sme"})),
    )
    .await;
    let owner = s
        .json(
            "POST",
            "/api/v1/users",
            TOKEN,
            Some(json!({"name": "olga", "org": "acme", "role": "owner"})),
        )
        .await;
    let member = s
        .json(
            "POST",
            "/api/v1/users",
            TOKEN,
            Some(json!({"name": "max", "org": "acme", "role": "member"})),
        )
        .await;
    let other = s
        .json(
            "POST",
            "/api/v1/users",
            TOKEN,
            Some(json!({"name": "eve", "org": "default", "role": "member"})),
        )
        .await;
    let (ot, mt, et) = (
        owner["token"].as_str().unwrap(),
        member["token"].as_str().unwrap(),
        other["token"].as_str().unwrap(),
    );
    let whoami = |t: &str| {
        let t = t.to_string();
        let s = &s;
        async move { s.call("GET", "/api/v1/whoami", Some(&t), None).await.0 }
    };
    // a token that lives 3.5 s: it works, then it does not
    let short = s
        .json(
            "POST",
            "/api/v1/tokens",
            mt,
            Some(json!({"expires_in_days": 4e-5})),
        )
        .await;
    assert!(
        short["id"].as_i64().is_some() && short["expires_at"].is_string(),
        "{short}"
    );
    let st = short["token"].as_str().unwrap().to_string();
    assert_eq!(whoami(&st).await, 200);
    tokio::time::sleep(std::time::Duration::from_millis(4000)).await;
    assert_eq!(whoami(&st).await, 401, "an expired token still works");
    let (code, _) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(mt),
            Some(json!({"expires_in_days": 0})),
        )
        .await;
    assert_eq!(code, 422);
    // the owner sees and revokes her member's tokens; not another org's
    let (_, list) = s.call("GET", "/api/v1/tokens", Some(ot), None).await;
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["user_name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"max") && names.contains(&"olga") && !names.contains(&"eve"),
        "{names:?}"
    );
    assert!(
        !list.to_string().contains("gf_"),
        "secrets are never listed"
    );
    let extra = s.json("POST", "/api/v1/tokens", mt, Some(json!({}))).await;
    let (code, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{}", extra["id"]),
            Some(ot),
            None,
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(whoami(extra["token"].as_str().unwrap()).await, 401);
    let eve_tokens = s.json("GET", "/api/v1/tokens", et, None).await;
    let eve_id = eve_tokens["items"][0]["id"].clone();
    let (code, _) = s
        .call(
            "DELETE",
            &format!("/api/v1/tokens/{eve_id}"),
            Some(ot),
            None,
        )
        .await;
    assert_eq!(code, 404, "another organisation's token");
    // disabling: every token of the user stops, no new one; a member may not
    let (code, _) = s
        .call(
            "POST",
            &format!("/api/v1/users/{}/disable", owner["id"]),
            Some(mt),
            None,
        )
        .await;
    assert_eq!(code, 403);
    let d = s
        .json(
            "POST",
            &format!("/api/v1/users/{}/disable", member["id"]),
            ot,
            Some(json!({})),
        )
        .await;
    assert_eq!(d["disabled"], true);
    assert_eq!(whoami(mt).await, 401);
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/tokens",
            Some(TOKEN),
            Some(json!({"user": member["id"]})),
        )
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("user_disabled"));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_never_run_past_their_allocation() {
    let dir = fresh_dir("grant");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    // 0.002 GPU-hours = 7.2 GPU-s
    let al = s
        .json(
            "POST",
            "/api/v1/allocations",
            TOKEN,
            Some(json!({"org": "default", "gpu_hours": 0.002})),
        )
        .await;
    let a = al["id"].as_i64().unwrap();
    // a limit larger than the grant is refused at once
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/jobs",
            Some(TOKEN),
            Some(json!({"allocation": a, "gpus": 4, "time_limit_s": 2, "command": ["true"]})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("exceeds_allocation"), "{body}");
    // eight jobs of 1 accelerator × 2 s reserve 2 GPU-s each: at most three
    // run at once, and the grant is never overrun (once: 43×)
    let mut ids = Vec::new();
    for _ in 0..8 {
        let (code, j) = s
            .call("POST", "/api/v1/jobs", Some(TOKEN), Some(json!({"allocation": a, "gpus": 1, "type": "h100", "time_limit_s": 2, "command": ["sleep", "1"]})))
            .await;
        if code == 201 {
            ids.push(
                serde_json::from_str::<serde_json::Value>(&j).unwrap()["id"]
                    .as_i64()
                    .unwrap(),
            );
        }
    }
    assert!(!ids.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let jobs = s.json("GET", "/api/v1/jobs?limit=100", TOKEN, None).await;
    let running = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["state"] == "running")
        .count();
    assert!(running <= 3, "{running} running on a 7.2 GPU-s grant");
    let waiting_reason = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["reason"].as_str())
        .any(|r| r.contains("time limits of its running jobs"));
    assert!(waiting_reason, "{jobs:#}");
    for id in &ids {
        s.wait_state(TOKEN, *id, &["completed", "cancelled", "failed", "timeout"])
            .await;
    }
    let al = s
        .json("GET", &format!("/api/v1/allocations/{a}"), TOKEN, None)
        .await;
    let used = al["used_gpu_hours"].as_f64().unwrap();
    assert!(
        used <= 0.002 + 1e-9,
        "used {used} GPU-h of a 0.002 GPU-h grant"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_write_past_its_file_size_limit() {
    let dir = fresh_dir("fsize");
    let data = dir.join("data");
    let mut args = base_args(&data);
    args.extend(["--max-job-file-gib".into(), "0.001".into()]);
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1,
            "command": ["sh", "-c", "head -c 8000000 /dev/zero | tr '\\0' x"]})),
        )
        .await;
    let id = j["id"].as_i64().unwrap();
    let j = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
    assert_eq!(j["state"], "failed", "{j:#}");
    let log = data.join(format!("jobs/{id}/stdout.log"));
    let n = std::fs::metadata(&log).unwrap().len();
    assert!(n <= (1u64 << 30) / 1000 + 1, "{n} bytes of output");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stalls_no_one_once_space_is_back() {
    require_root("a_full_disk_stalls_no_one_once_space_is_back");
    let dir = fresh_dir("diskfull");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(data.clone());
    let s = Server::plain(&dir, &data);
    // every answer comes within seconds, full disk or not
    let submit = || async {
        let call = s.call(
            "POST",
            "/api/v1/jobs",
            Some(TOKEN),
            Some(json!({"allocation": 1, "gpus": 1, "command": ["true"]})),
        );
        match tokio::time::timeout(std::time::Duration::from_secs(15), call).await {
            Ok(answer) => answer,
            Err(_) => panic!("a submit waited 15 s for an answer\n{}", s.stderr()),
        }
    };
    let (code, first) = submit().await;
    assert_eq!(code, 201, "{first}");
    // fill the disk
    let fill = data.join("fill");
    let _ = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("head -c 10000000 /dev/zero > {}", fill.display()))
        .status();
    let mut refused = false;
    for _ in 0..20 {
        let (code, _) = submit().await;
        if code == 503 {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full disk should refuse writes");
    // reads go on while writes are refused
    let (code, body) = s.call("GET", "/api/v1/jobs", Some(TOKEN), None).await;
    assert_eq!(code, 200, "{body}");
    // space comes back: the server serves again without a restart
    std::fs::remove_file(&fill).unwrap();
    let t = std::time::Instant::now();
    loop {
        let (code, body) = submit().await;
        if code == 201 {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 20,
            "still refusing after space came back: {code} {body}\n{}",
            s.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let first_id = serde_json::from_str::<serde_json::Value>(&first).unwrap()["id"]
        .as_i64()
        .unwrap();
    // the job that ended while the disk was full is accounted as it ended:
    // completed, or (when the disk filled before it could start) failed
    // for that reason, never `lost`
    let j = s
        .wait_state(TOKEN, first_id, &["completed", "failed"])
        .await;
    let reason = j["reason"].as_str().unwrap_or("");
    assert!(
        (j["state"] == "completed" && j["exit_code"] == 0)
            || (j["state"] == "failed" && reason.contains("No space left")),
        "{j}\n{}",
        s.stderr()
    );
    drop(s);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_opens_only_its_own_accelerators_device_files() {
    require_root("a_job_opens_only_its_own_accelerators_device_files");
    let dir = fresh_dir("devices");
    let data = dir.join("data");
    // stand-ins for /dev/nvidia0..3: files whose content says which they are
    let devs = dir.join("dev");
    std::fs::create_dir_all(&devs).unwrap();
    for i in 0..4 {
        std::fs::write(devs.join(format!("gpu{i}")), format!("device-{i}\n")).unwrap();
    }
    let mut args = base_args(&data);
    args.extend([
        "--nvidia-devices".into(),
        devs.join("gpu{index}").display().to_string(),
        "--amd-devices".into(),
        devs.join("none{index}").display().to_string(),
    ]);
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let d = devs.display().to_string();
    let j = s
        .json("POST", "/api/v1/jobs", TOKEN, Some(json!({"allocation": 1, "gpus": 2, "type": "h100",
            "command": ["sh", "-c", format!("echo $CUDA_VISIBLE_DEVICES; cat {d}/gpu0 {d}/gpu1 {d}/gpu2 {d}/gpu3")]})))
        .await;
    let id = j["id"].as_i64().unwrap();
    let j = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
    assert_eq!(j["state"], "completed", "{j:#}");
    let (_, out) = s
        .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
        .await;
    // its two devices, and nothing of the others
    assert_eq!(out, "0,1\ndevice-0\ndevice-1\n", "{out}");
    // the machine's files are untouched
    assert_eq!(
        std::fs::read_to_string(devs.join("gpu3")).unwrap(),
        "device-3\n"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_held_to_its_memory_limit() {
    require_root("a_job_is_held_to_its_memory_limit");
    let v2_memory = gigafab_exec::posix::cgroup2_mount()
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .is_some_and(|c| c.split_whitespace().any(|x| x == "memory"));
    if !v2_memory && gigafab_exec::posix::cgroup1_mount("memory").is_none() {
        panic!("this root machine has no memory controller at all");
    }
    let dir = fresh_dir("memlimit");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    // 50 MB allowed; it writes 400 MB
    let big = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "memory_gb": 0.05,
            "command": ["python3", "-c", "b = b'x' * 400_000_000; print(len(b))"]})),
        )
        .await;
    // the same within its limit
    let small = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1, "memory_gb": 1.0,
            "command": ["python3", "-c", "b = b'x' * 40_000_000; print(len(b))"]})),
        )
        .await;
    let b = s
        .wait_state(TOKEN, big["id"].as_i64().unwrap(), &["completed", "failed"])
        .await;
    assert_eq!(
        b["state"], "failed",
        "a job past its memory limit ran: {b:#}"
    );
    let sm = s
        .wait_state(
            TOKEN,
            small["id"].as_i64().unwrap(),
            &["completed", "failed"],
        )
        .await;
    assert_eq!(sm["state"], "completed", "{sm:#}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_stopped_past_its_disk_limit() {
    let dir = fresh_dir("disklimit");
    let data = dir.join("data");
    let mut args = base_args(&data);
    // 4 MiB for the whole job directory; each file stays under the file cap
    args.extend(["--max-job-disk-gib".into(), (4.0 / 1024.0).to_string()]);
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let j = s
        .json("POST", "/api/v1/jobs", TOKEN, Some(json!({"allocation": 1, "gpus": 1,
            "command": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do head -c 1000000 /dev/zero > f$i; done; sleep 30"]})))
        .await;
    let id = j["id"].as_i64().unwrap();
    let j = s
        .wait_state(TOKEN, id, &["completed", "failed", "cancelled"])
        .await;
    assert_eq!(j["state"], "failed", "{j:#}");
    assert!(
        j["reason"].as_str().unwrap_or("").contains("disk limit"),
        "{j:#}"
    );
    // a job within it completes
    let ok = s
        .json(
            "POST",
            "/api/v1/jobs",
            TOKEN,
            Some(json!({"allocation": 1, "gpus": 1,
            "command": ["sh", "-c", "head -c 1000000 /dev/zero > f; sleep 1.5"]})),
        )
        .await;
    let ok = s
        .wait_state(TOKEN, ok["id"].as_i64().unwrap(), &["completed", "failed"])
        .await;
    assert_eq!(ok["state"], "completed", "{ok:#}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Creates `name` (a member) in `org`; returns (status, body).
async fn create_member(s: &Server, token: &str, org: &str, name: &str) -> (u16, String) {
    s.call(
        "POST",
        "/api/v1/users",
        Some(token),
        Some(json!({"name": name, "org": org, "role": "member"})),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_names_are_private_to_their_organisation() {
    let dir = fresh_dir("usernames");
    let data = dir.join("data");
    let s = Server::plain(&dir, &data);
    let who = s.tenants(&["a", "b"], 1.0).await;
    // owners of a and b
    let mut owners = Vec::new();
    for org in ["a", "b"] {
        let o = s
            .json(
                "POST",
                "/api/v1/users",
                TOKEN,
                Some(json!({"name": format!("{org}-owner"), "org": org, "role": "owner"})),
            )
            .await;
        owners.push(o["token"].as_str().unwrap().to_string());
    }
    let (code, body) = create_member(&s, &owners[0], "a", "alice").await;
    assert_eq!(code, 201, "{body}");
    // b's owner learns nothing of a's users: the same name is b's to take
    let (code, body) = create_member(&s, &owners[1], "b", "alice").await;
    assert_eq!(code, 201, "{body}");
    let b_alice: serde_json::Value = serde_json::from_str(&body).unwrap();
    // within an organisation a name stays unique
    let (code, body) = create_member(&s, &owners[1], "b", "alice").await;
    assert_eq!(code, 409, "{body}");
    assert!(!body.contains("`a`"), "{body}");
    // b's alice runs a job; listings by name find the right alice
    let tb = b_alice["token"].as_str().unwrap();
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            tb,
            Some(json!({"allocation": who[1].1, "gpus": 1, "command": ["true"]})),
        )
        .await;
    assert_eq!(j["user"], "alice", "{j}");
    let id = j["id"].as_i64().unwrap();
    let l = s.json("GET", "/api/v1/jobs?user=alice", TOKEN, None).await;
    let ids: Vec<i64> = l["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![id], "{l}");
    let l = s
        .json("GET", "/api/v1/jobs?user=a/alice", TOKEN, None)
        .await;
    assert!(l["items"].as_array().unwrap().is_empty(), "{l}");
    let l = s
        .json("GET", "/api/v1/jobs?user=b/alice", TOKEN, None)
        .await;
    assert_eq!(l["items"][0]["user"], "alice", "{l}");
    // each owner lists its own alice only
    for (i, org) in ["a", "b"].iter().enumerate() {
        let u = s.json("GET", "/api/v1/users", &owners[i], None).await;
        let alices: Vec<&serde_json::Value> = u["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["name"] == "alice")
            .collect();
        assert_eq!(alices.len(), 1, "{u}");
        assert_eq!(alices[0]["org"], *org, "{u}");
    }
    // the names survive a restart
    let mut s = s;
    assert!(s.sigterm().success());
    let s = Server::plain(&dir, &data);
    let u = s.json("GET", "/api/v1/users", TOKEN, None).await;
    let alices = u["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "alice")
        .count();
    assert_eq!(alices, 2, "{u}");
    let w = s.json("GET", "/api/v1/whoami", tb, None).await;
    assert_eq!(
        (w["user"].as_str(), w["org"].as_str()),
        (Some("alice"), Some("b"))
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_own_account_is_mapped_by_organisation_and_name() {
    require_root("a_users_own_account_is_mapped_by_organisation_and_name");
    test_account("gf-test-a");
    test_account("gf-test-b");
    test_account("gf-test-c");
    let dir = fresh_dir("loginmap");
    let data = dir.join("data");
    let map = dir.join("accounts.toml");
    // a key that is neither NAME nor ORG/NAME is refused at start, saying so
    std::fs::write(&map, "[users]\n\"a/b/c\" = \"gf-test-c\"\n").unwrap();
    let o = std::process::Command::new("timeout")
        .arg("20")
        .arg(gigafab().get_program())
        .args(["serve", "--job-accounts"])
        .arg(&map)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("ORG/NAME"), "{e}");
    std::fs::write(
        &map,
        "[users]\n\"a/alice\" = \"gf-test-c\"\n[orgs]\na = \"gf-test-a\"\nb = \"gf-test-b\"\n",
    )
    .unwrap();
    let mut args = base_args(&data);
    args.extend(["--job-accounts".into(), map.display().to_string()]);
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let who = s.tenants(&["a", "b"], 1.0).await;
    let mut outputs = Vec::new();
    let mut tokens = Vec::new();
    for (org, alloc) in [("a", who[0].1), ("b", who[1].1)] {
        let (code, body) = create_member(&s, TOKEN, org, "alice").await;
        assert_eq!(code, 201, "{body}");
        let u: serde_json::Value = serde_json::from_str(&body).unwrap();
        tokens.push(u["token"].as_str().unwrap().to_string());
        let j = s
            .json(
                "POST",
                "/api/v1/jobs",
                u["token"].as_str().unwrap(),
                Some(json!({"allocation": alloc, "gpus": 1, "command": ["id", "-un"]})),
            )
            .await;
        let id = j["id"].as_i64().unwrap();
        let j = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
        assert_eq!(j["state"], "completed", "{j}");
        let (_, log) = s
            .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
            .await;
        outputs.push(log);
    }
    // a's alice has her own account; b's alice has b's, not hers
    assert!(outputs[0].contains("gf-test-c"), "{}", outputs[0]);
    assert!(outputs[1].contains("gf-test-b"), "{}", outputs[1]);
    // a working directory her account cannot enter is refused at submit,
    // saying which account; her own is taken
    let (c_uid, c_gid) = test_account("gf-test-c");
    let (a_uid, a_gid) = test_account("gf-test-a");
    let mut dirs = Vec::new();
    for (name, uid, gid) in [("theirs", a_uid, a_gid), ("hers", c_uid, c_gid)] {
        let d = std::path::PathBuf::from(format!("/var/tmp/gf-wd-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(uid), Some(gid)).unwrap();
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        dirs.push(d);
    }
    let token = tokens[0].clone();
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&token),
            Some(json!({"allocation": who[0].1, "gpus": 1, "command": ["pwd"], "time_limit_s": 60, "workdir": dirs[0]})),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("cannot enter it") && body.contains("gf-test-c"),
        "{body}"
    );
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/jobs",
            Some(&token),
            Some(json!({"allocation": who[0].1, "gpus": 1, "command": ["pwd"], "time_limit_s": 60, "workdir": dirs[1]})),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    for d in dirs {
        let _ = std::fs::remove_dir_all(d);
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_tmp_is_its_own_and_counts_toward_its_disk_limit() {
    require_root("a_jobs_tmp_is_its_own_and_counts_toward_its_disk_limit");
    test_account("gf-test-a");
    test_account("gf-test-b");
    for f in ["/tmp/a-secret", "/dev/shm/a-shm", "/var/tmp/a-var"] {
        let _ = std::fs::remove_file(f);
    }
    let dir = fresh_dir("privtmp");
    let data = dir.join("data");
    let s = Server::two_tenants(&dir, &["--max-job-disk-gib", &(4.0 / 1024.0).to_string()]);
    let who = s.tenants(&["a", "b"], 10.0).await;
    let submit = |t: usize, cmd: &str| {
        let (token, alloc) = who[t].clone();
        let cmd = cmd.to_string();
        let s = &s;
        async move {
            let j = s
                .json(
                    "POST",
                    "/api/v1/jobs",
                    &token,
                    Some(json!({"allocation": alloc, "gpus": 1, "command": ["sh", "-c", cmd]})),
                )
                .await;
            j["id"].as_i64().unwrap()
        }
    };
    // A leaves files in /tmp, /var/tmp and /dev/shm while it runs
    let a = submit(
        0,
        "echo a-secret > /tmp/a-secret && echo a-shm > /dev/shm/a-shm && \
         echo a-var > /var/tmp/a-var && sleep 4",
    )
    .await;
    s.wait_state(TOKEN, a, &["running"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    // B looks for them, and fills its own /tmp past its disk limit
    let b = submit(
        1,
        "for f in /tmp/a-secret /dev/shm/a-shm /var/tmp/a-var; do \
           if cat $f 2>/dev/null; then echo LEAK $f; fi; done; \
         ls -A /tmp /dev/shm; echo looked; \
         for i in 1 2 3 4 5 6 7 8; do head -c 1000000 /dev/zero > /tmp/f$i; done; sleep 30",
    )
    .await;
    let jb = s
        .wait_state(TOKEN, b, &["completed", "failed", "cancelled"])
        .await;
    let (_, log) = s
        .call("GET", &format!("/api/v1/jobs/{b}/logs"), Some(TOKEN), None)
        .await;
    assert!(log.contains("looked"), "{log}");
    assert!(!log.contains("LEAK") && !log.contains("a-"), "{log}");
    assert_eq!(jb["state"], "failed", "{jb:#}");
    assert!(
        jb["reason"].as_str().unwrap_or("").contains("disk limit"),
        "{jb:#}"
    );
    // A's files were its own, in its directory
    let ja = s.wait_state(TOKEN, a, &["completed", "failed"]).await;
    assert_eq!(ja["state"], "completed", "{ja:#}");
    let got = std::fs::read_to_string(data.join(format!("jobs/{a}/tmp/a-secret"))).unwrap();
    assert_eq!(got.trim(), "a-secret");
    assert!(!std::path::Path::new("/tmp/a-secret").exists());
    assert!(!std::path::Path::new("/dev/shm/a-shm").exists());
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
