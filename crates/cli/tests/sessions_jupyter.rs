//! The README's notebook session, run as written: JupyterLab installed
//! from PyPI into `~/jupyterlab` (a fresh home), an app file made from the
//! built-in one, `gigafab serve --single-user --apps-dir apps`, then the
//! CLI's session commands, line by line; between them, JupyterLab answers
//! through the server's proxy. Two adaptations, said here: the server
//! listens on a free port (`GIGAFAB_LISTEN`, the README's default being
//! 8080), and the test waits for the session to be ready after `session
//! start`, as a person reading the README would. The browser walk is the
//! portal's Chromium test (e2e/portal.test.mjs).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The README's ```shell block that contains `needle`.
fn block(needle: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    readme
        .split("```shell\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap())
        .find(|b| b.contains(needle))
        .unwrap_or_else(|| panic!("the README has no block with `{needle}`"))
        .to_string()
}

/// Kills the process group of the README's server (and what it started)
/// at the end, whatever happens.
struct Group(i32, PathBuf);

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: a signal to a process group this test made.
        unsafe { libc::killpg(self.0, libc::SIGKILL) };
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.1.to_string_lossy().as_ref())
            .status();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

#[ignore = "needs PyPI (the README installs jupyterlab with pip): cargo test -- --include-ignored"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_notebook_session_runs_as_written() {
    let setup = block("pip install jupyterlab");
    let cli = block("gigafab session start");
    let dir = std::env::temp_dir().join(format!("gigafab-readme-nb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    // the repository's file the README's `sed` reads
    let apps = dir.join("crates/server/apps");
    std::fs::create_dir_all(&apps).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/apps/jupyter.toml"),
        apps.join("jupyter.toml"),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_gigafab")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // a fresh home; the machine's own settings (pip's index and
    // certificates among them) kept, gigafab's left out
    let env = |c: &mut Command| {
        c.current_dir(&dir).env("PATH", &path).env("HOME", &home);
        for (k, _) in std::env::vars() {
            if k.starts_with("GIGAFAB_") {
                c.env_remove(k);
            }
        }
        // pip's downloads and configuration, kept where the machine keeps them
        if let Ok(h) = std::env::var("HOME") {
            c.env("PIP_CACHE_DIR", Path::new(&h).join(".cache/pip"))
                .env("XDG_CONFIG_HOME", Path::new(&h).join(".config"));
        }
    };
    let mut c = Command::new("bash");
    c.args(["-e", "-c", &setup])
        .env("GIGAFAB_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    env(&mut c);
    let mut child = c.spawn().unwrap();
    let _group = Group(child.id() as i32, dir.clone());
    // what the server prints at its first start: its token and address
    let (tx, rx) = mpsc::channel::<String>();
    for r in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let (mut token, mut server, mut seen) = (None, None, String::new());
    let t = Instant::now();
    while token.is_none() || server.is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "no server after 10 min:\n{seen}"
        );
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "the README's setup failed ({st}):\n{seen}");
        }
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if let Some(v) = line.strip_prefix("export GIGAFAB_TOKEN=") {
            token = Some(v.trim().to_string());
        }
        if let Some(v) = line.strip_prefix("export GIGAFAB_SERVER=") {
            server = Some(v.trim().to_string());
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    // the setup's shell ends once it has put the server in the background
    let st = child.wait().unwrap();
    assert!(st.success(), "the README's setup failed ({st}):\n{seen}");
    let (token, server) = (token.unwrap(), server.unwrap());
    let http = reqwest::Client::new();
    let session = || async {
        http.get(format!("{server}/api/v1/sessions/1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    for line in cli.lines().filter(|l| !l.trim().is_empty()) {
        let mut c = Command::new("bash");
        c.args(["-e", "-c", line])
            .env("GIGAFAB_SERVER", &server)
            .env("GIGAFAB_TOKEN", &token);
        env(&mut c);
        let o = c.output().unwrap();
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert!(o.status.success(), "{line}: {out}{err}");
        if line.contains("session start") {
            let t = Instant::now();
            loop {
                let s = session().await;
                if s["state"] == "ready" {
                    break;
                }
                assert!(
                    s["state"] != "ended" && t.elapsed() < Duration::from_secs(180),
                    "the notebook is not ready: {s:#}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // JupyterLab itself, through the proxy, with the token alone
            let r = http
                .get(format!("{server}/sessions/1/api/kernelspecs"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let specs: serde_json::Value = r.json().await.unwrap();
            assert!(specs["kernelspecs"]["python3"].is_object(), "{specs:#}");
        }
        if line.contains("session show") {
            assert!(out.contains("ready"), "{out}");
            assert!(out.contains("/sessions/1/"), "{out}");
        }
    }
    let t = Instant::now();
    while session().await["state"] != "ended" {
        assert!(t.elapsed() < Duration::from_secs(60), "not stopped");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
