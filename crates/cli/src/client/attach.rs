//! `gigafab attach JOB`: a shell in a running job of yours, on this
//! terminal (`GET /api/v1/jobs/{id}/attach`, a WebSocket): as the job's
//! account, in its cgroup and namespaces, with its accelerators' variables.
//! Exit the shell (or close the input) to detach; the job goes on.

use std::os::fd::AsRawFd;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::*;

/// `gigafab attach`.
#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The job's id (a running job of yours).
    job: i64,
    #[command(flatten)]
    conn: Conn,
}

/// How long `gigafab attach` waits for a job that is starting.
const STARTING: std::time::Duration = std::time::Duration::from_secs(60);

/// The terminal's size (rows, columns), if stdout is one.
fn size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize to a valid pointer.
    let ok = unsafe { libc::ioctl(std::io::stdout().as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Standard input in raw mode while it lives (a terminal's keys go to the
/// job's shell as they are typed); restored when dropped.
struct Raw(Option<libc::termios>);

impl Raw {
    fn new() -> Raw {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: isatty and tcgetattr on our own standard input.
        unsafe {
            if libc::isatty(fd) != 1 {
                return Raw(None);
            }
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return Raw(None);
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Raw(Some(saved))
        }
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores what tcgetattr read.
            unsafe { libc::tcsetattr(std::io::stdin().as_raw_fd(), libc::TCSANOW, t) };
        }
    }
}

pub(super) async fn run(a: AttachArgs) -> Result<()> {
    let server = a.conn.server();
    let ws_base = if let Some(rest) = server.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        bail!("gigafab attach speaks plain HTTP servers only for now (ws://): {server}");
    };
    let (rows, cols) = size().unwrap_or((24, 80));
    let url = format!(
        "{}/api/v1/jobs/{}/attach?rows={rows}&cols={cols}",
        ws_base.trim_end_matches('/'),
        a.job
    );
    // a job that is still starting is waited for, up to STARTING
    let since = std::time::Instant::now();
    let mut said = false;
    let ws = loop {
        let mut req = url
            .as_str()
            .into_client_request()
            .context("not a server address")?;
        if let Some(t) = a.conn.token() {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().context("not a valid token")?,
            );
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => break ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
                let body = res.body().clone().unwrap_or_default();
                let err = serde_json::from_slice::<gigafab_api::Error>(&body).ok();
                if let Some(e) = &err
                    && e.error == "job_starting"
                    && since.elapsed() < STARTING
                {
                    if !said {
                        eprintln!("job {} is starting; waiting for it", a.job);
                        said = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    continue;
                }
                let msg = err
                    .map(|e| format!("{} ({})", e.message, e.error))
                    .unwrap_or_else(|| format!("the server answered {}", res.status()));
                bail!("{msg}");
            }
            Err(e) => bail!("cannot reach {server}: {e}"),
        }
    };
    let (mut tx, mut rx) = ws.split();
    let tty = size().is_some();
    let raw = Raw::new();
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("cannot watch the terminal's size")?;
    let mut buf = vec![0u8; 8 << 10];
    let mut input_open = true;
    loop {
        tokio::select! {
            n = stdin.read(&mut buf), if input_open => match n {
                Ok(0) | Err(_) => {
                    // input closed: an end of file (^D) for the shell,
                    // which reads to it, then exits
                    input_open = false;
                    if tx.send(Message::Binary(vec![4u8].into())).await.is_err() {
                        break;
                    }
                }
                Ok(n) => {
                    if tx.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                        break;
                    }
                }
            },
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = winch.recv() => {
                if let Some((r, c)) = size() {
                    let _ = tx.send(Message::Text(format!("{{\"rows\":{r},\"cols\":{c}}}").into())).await;
                }
            }
        }
    }
    drop(raw);
    if tty {
        eprintln!("\r\n[detached from job {}]", a.job);
    }
    Ok(())
}
