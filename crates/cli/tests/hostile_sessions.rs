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

/// `gigafab attach JOB` as `token`, its input `script`: (exit code,
/// stdout, stderr).
fn attach(s: &Server, token: &str, job: i64, script: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = gigafab()
        .args(["attach", &job.to_string()])
        .env("GIGAFAB_SERVER", &s.url)
        .env("GIGAFAB_TOKEN", token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_attaches_inside_its_job_and_for_its_user_alone() {
    require_root("a_shell_attaches_inside_its_job_and_for_its_user_alone");
    let dir = fresh_dir("attach");
    let s = Server::two_tenants(&dir, &[]);
    let tokens = s.tenants(&["a", "b"], 10.0).await;
    let (ta, aa) = &tokens[0];
    let (tb, _) = &tokens[1];
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            ta,
            Some(json!({"allocation": aa, "gpus": 1, "time_limit_s": 120, "command": ["sleep", "100"]})),
        )
        .await;
    let job = j["id"].as_i64().unwrap();
    s.wait_state(TOKEN, job, &["running"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, out, err) = attach(
        &s,
        ta,
        job,
        "echo user=$(id -un) job=$GIGAFAB_JOB_ID cuda=$CUDA_VISIBLE_DEVICES\n\
         echo procs=$(ls /proc | grep -c '^[0-9][0-9]*$')\n\
         echo links=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,)\n\
         echo cwd=$(stat -c %U:%a .)\n\
         echo cgroup=$(grep -c gigafab /proc/self/cgroup)\n\
         exit\n",
    );
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(
        out.contains(&format!("user=gf-test-a job={job} cuda=")),
        "{out}"
    );
    // its own PID namespace: its init, sleep, the shell and its commands
    // (the typed lines come back once or twice: the terminal's echo, and
    // the shell's own line editing where it was ready before them)
    let procs: usize = out
        .split("procs=")
        .skip(1)
        .find_map(|x| x.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(procs < 10, "{out}");
    // its own network (loopback only) and its cgroup
    assert!(out.contains("links=lo,"), "{out}");
    // where the job's directory is hidden in its namespace (the test's
    // data directory is under /tmp, which the job's own /tmp covers), the
    // shell starts at the namespace's root, never on the host's tree
    assert!(
        out.contains("cwd=gf-test-a:") || out.contains("cwd=root:"),
        "{out}"
    );
    assert!(!out.contains("cgroup=0"), "{out}");
    // another tenant, and an admin: no such job for them
    let (code, _, err) = attach(&s, tb, job, "id\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("job_not_found"), "{err}");
    let (code, _, err) = attach(&s, TOKEN, job, "id\n");
    assert_ne!(code, Some(0));
    assert!(err.contains("job_not_found"), "{err}");
    // the attach is audited
    let audit = s.json("GET", "/api/v1/audit", TOKEN, None).await;
    assert!(
        audit.to_string().contains(&format!("job {job}")) && audit.to_string().contains("attach"),
        "{audit}"
    );
    // the job goes on, then ends as it would
    let j = s.wait_state(TOKEN, job, &["running", "completed"]).await;
    assert_ne!(j["state"], "failed", "{j}");
    let (code, body) = s
        .call("DELETE", &format!("/api/v1/jobs/{job}"), Some(ta), None)
        .await;
    assert_eq!(code, 200, "{body}");
    s.wait_state(TOKEN, job, &["cancelled"]).await;
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The file browser under accounts: an upload is the job's account's own
/// file in its working directory, through the portal's form as through
/// the API; what the account may not read stays unread; a link planted by
/// the job is not followed; an upload past the job's disk limit is
/// refused.
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_files_are_reached_with_its_accounts_rights() {
    require_root("a_jobs_files_are_reached_with_its_accounts_rights");
    let dir = fresh_dir("files-accounts");
    let s = Server::two_tenants(&dir, &["--max-job-disk-gib", &(2.0 / 1024.0).to_string()]);
    let tokens = s.tenants(&["a", "b"], 10.0).await;
    let (ta, aa) = &tokens[0];
    let (tb, _) = &tokens[1];
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            ta,
            Some(
                json!({"allocation": aa, "gpus": 1, "time_limit_s": 120, "command": ["sh", "-c",
                "ln -s /etc/shadow shadow; echo ready; sleep 100"]}),
            ),
        )
        .await;
    let job = j["id"].as_i64().unwrap();
    s.wait_state(TOKEN, job, &["running"]).await;
    let work = dir.join(format!("data/jobs/{job}/work"));
    let t = Instant::now();
    while !work.join("shadow").exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", s.stderr());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a root-only file in its directory: its account may not read it
    std::fs::write(work.join("secret"), "root's").unwrap();
    std::fs::set_permissions(
        work.join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let http = reqwest::Client::new();
    let content = |path: &str| format!("{}/api/v1/jobs/{job}/files/content?path={path}", s.url);
    let r = http
        .get(content("secret"))
        .bearer_auth(ta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let r = http
        .get(content("shadow"))
        .bearer_auth(ta)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // an upload through the API: the account's own file
    let r = http
        .put(content("data.csv"))
        .bearer_auth(ta)
        .body("a,b\n1,2\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (uid, _) = test_account("gf-test-a");
    let meta = std::fs::metadata(work.join("data.csv")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), uid);
    // the other tenant: no such job
    let r = http
        .put(content("x"))
        .bearer_auth(tb)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // past the job's disk limit (2 MiB): refused
    let r = http
        .put(content("big.bin"))
        .bearer_auth(ta)
        .body(vec![0u8; 3 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "{}", r.text().await.unwrap());
    assert!(!work.join("big.bin").exists());
    // through the portal's form, signed in with the token
    let web = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = web
        .post(format!("{}/login", s.url))
        .form(&[("token", ta.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = web
        .get(format!("{}/files/{job}", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("data.csv") && page.contains("enctype=\"multipart/form-data\""),
        "{page}"
    );
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    let boundary = "gfboundary42";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../notes.txt\"\r\nContent-Type: text/plain\r\n\r\nfrom the portal\r\n--{boundary}--\r\n"
    );
    let r = web
        .post(format!("{}/files/{job}/upload?path=", s.url))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header("cookie", &cookie)
        .header("origin", &s.url)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    // the file's own name, in the job's directory, not a path above it
    assert_eq!(
        std::fs::read_to_string(work.join("notes.txt")).unwrap(),
        "from the portal"
    );
    let view = web
        .get(format!("{}/files/{job}/view?path=notes.txt", s.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(view.contains("from the portal"), "{view}");
    // a working directory of the tenant's choosing, /proc: read with the
    // account's rights and no capability (root's would read the server's
    // own environment)
    let j = s
        .json(
            "POST",
            "/api/v1/jobs",
            ta,
            Some(json!({"allocation": aa, "gpus": 1, "time_limit_s": 60, "workdir": "/proc", "command": ["sleep", "30"]})),
        )
        .await;
    let pj = j["id"].as_i64().unwrap();
    let me = std::process::id();
    for path in [format!("{me}/environ"), "1/environ".to_string()] {
        let r = http
            .get(format!(
                "{}/api/v1/jobs/{pj}/files/content?path={path}&max=100",
                s.url
            ))
            .bearer_auth(ta)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}: {}", r.text().await.unwrap());
    }
    s.call("DELETE", &format!("/api/v1/jobs/{pj}"), Some(ta), None)
        .await;
    let (code, body) = s
        .call("DELETE", &format!("/api/v1/jobs/{job}"), Some(ta), None)
        .await;
    assert_eq!(code, 200, "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Project spaces under accounts: each organisation's is its account's,
/// 2770; an upload is the caller's account's file, 0660; a job of the
/// organisation reads it at `$GIGAFAB_PROJECT_DIR`, a job of another
/// organisation can neither list, read nor write it, and its member's API
/// calls reach her own space only.
#[ignore = "needs root: jobs run as other POSIX accounts (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_space_is_its_organisations_alone() {
    use std::os::unix::fs::MetadataExt;
    require_root("a_project_space_is_its_organisations_alone");
    let dir = fresh_dir("spaces-accounts");
    // outside /tmp: a job's /tmp is its own
    let spaces = std::path::PathBuf::from(format!(
        "/var/lib/gigafab-tests/spaces-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&spaces);
    let parent = spaces.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    std::fs::set_permissions(parent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // a's space left half-made (root's, 0700: a stop between mkdir and
    // chown): finished at its organisation's creation
    std::fs::create_dir(&spaces).unwrap();
    std::fs::set_permissions(&spaces, std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    std::fs::create_dir(spaces.join("a")).unwrap();
    let s = Server::two_tenants(&dir, &["--project-spaces", &spaces.display().to_string()]);
    let tokens = s.tenants(&["a", "b"], 10.0).await;
    let (ta, aa) = &tokens[0];
    let (tb, ab) = &tokens[1];
    let (uid_a, gid_a) = test_account("gf-test-a");
    let (uid_b, gid_b) = test_account("gf-test-b");
    for (org, want) in [("a", (uid_a, gid_a, 0o2770)), ("b", (uid_b, gid_b, 0o2770))] {
        let m = std::fs::metadata(spaces.join(org)).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), want, "{org}");
    }
    assert_eq!(std::fs::metadata(&spaces).unwrap().mode() & 0o777, 0o711);
    let http = reqwest::Client::new();
    let content = |path: &str| format!("{}/api/v1/space/files/content?path={path}", s.url);
    let r = http
        .put(content("secret.txt"))
        .bearer_auth(ta)
        .body("a's data\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let m = std::fs::metadata(spaces.join("a/secret.txt")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (uid_a, gid_a, 0o660));
    // b's member: her own space, empty; a's file is not in it
    let l = s.json("GET", "/api/v1/space/files", tb, None).await;
    assert_eq!(l["org"], "b", "{l}");
    assert_eq!(l["entries"].as_array().unwrap().len(), 0, "{l}");
    let r = http
        .get(content("../a/secret.txt"))
        .bearer_auth(tb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // a's job reads it; b's job, knowing where it is, reaches nothing
    let a_space = spaces.join("a").display().to_string();
    let run = |token: &str, alloc: i64, script: String| {
        let body = json!({"allocation": alloc, "gpus": 1, "command": ["sh", "-c", script]});
        let token = token.to_string();
        let s = &s;
        async move {
            let j = s.json("POST", "/api/v1/jobs", &token, Some(body)).await;
            let id = j["id"].as_i64().unwrap();
            let j = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
            let out = s
                .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
                .await
                .1;
            (j["state"].as_str().unwrap().to_string(), out)
        }
    };
    let (state, out) = run(ta, *aa, "cat \"$GIGAFAB_PROJECT_DIR/secret.txt\"".into()).await;
    assert_eq!(state, "completed", "{out}");
    assert!(out.contains("a's data"), "{out}");
    let (state, out) = run(
        tb,
        *ab,
        format!(
            "test \"$GIGAFAB_PROJECT_DIR\" = {b}; \
             ls {a} && echo LISTED; cat {a}/secret.txt && echo READ; \
             echo x > {a}/planted && echo WROTE; \
             echo mine > \"$GIGAFAB_PROJECT_DIR/mine\" && echo OWN",
            a = a_space,
            b = spaces.join("b").display()
        ),
    )
    .await;
    assert_eq!(state, "completed", "{out}");
    assert!(out.contains("OWN"), "{out}");
    for bad in ["LISTED", "READ", "WROTE", "a's data"] {
        assert!(!out.contains(bad), "b's job: {bad}\n{out}");
    }
    assert!(!spaces.join("a/planted").exists());
    // a space owned by another organisation's account is never handed out
    std::os::unix::fs::chown(spaces.join("b"), Some(uid_a), Some(gid_a)).unwrap();
    let (st, body) = s.call("GET", "/api/v1/space/files", Some(tb), None).await;
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("not by the organisation's account"), "{body}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&spaces);
}
