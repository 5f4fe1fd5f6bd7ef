//! `GET /api/v1/jobs/{id}/attach`: a shell in a running job over a
//! WebSocket (`gigafab attach`). Binary messages are the terminal's bytes
//! both ways; a text message `{"rows": R, "cols": C}` resizes it. Only the
//! job's own user gets one (anyone else: `job_not_found`, as for a job
//! of another organisation), in the job's account, cgroup and namespaces
//! ([`gigafab_exec::attach`]); each attach is in the audit log.

use std::os::fd::{AsRawFd, OwnedFd};

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::get;
use serde::Deserialize;
use tokio::io::unix::AsyncFd;

use super::{Answer, AppState, Caller, Route, parse_id};
use crate::error::ApiError;

pub(super) const ROUTES: &[Route] = &[Route {
    method: "get",
    path: "/api/v1/jobs/{id}/attach",
    who: "the job's own user",
    summary: "A shell in a running job, over a WebSocket (binary messages: the terminal; text {\"rows\",\"cols\"}: a new size); 101 on success",
    operation_id: "attach_job",
    body: None,
    status: 101,
    answer: Answer::Text("application/octet-stream"),
    replay: false,
    query: None,
}];

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/jobs/{id}/attach", get(attach))
}

/// The terminal's first size.
#[derive(Debug, Deserialize)]
struct Size {
    #[serde(default = "rows")]
    rows: u16,
    #[serde(default = "cols")]
    cols: u16,
}

fn rows() -> u16 {
    24
}

fn cols() -> u16 {
    80
}

/// A resize, as the client sends it.
#[derive(Debug, Deserialize)]
struct Resize {
    rows: u16,
    cols: u16,
}

async fn attach(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    Query(size): Query<Size>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let id = parse_id(&id, "job_not_found")?;
    let not_found = || ApiError::not_found("job_not_found", format!("job {id} not found"));
    let job = crate::store::jobs::get(&s.store.pool, id)
        .await?
        .filter(|j| j.user_id == p.user_id)
        .ok_or_else(not_found)?;
    let handle = match (job.state.as_str(), job.handle.clone()) {
        ("running", Some(h)) => h,
        // launched, but its process (or Slurm id) is not recorded yet
        ("running", None) => {
            return Err(ApiError::conflict(
                "job_starting",
                format!(
                    "job {id} is starting: a shell attaches once it runs; try again in a moment"
                ),
            ));
        }
        (state, _) => {
            return Err(ApiError::conflict(
                "job_not_running",
                format!("job {id} is {state}: a shell attaches to a running job"),
            ));
        }
    };
    let exec = s.executor.clone();
    let (rows, cols) = (size.rows.clamp(1, 1000), size.cols.clamp(1, 1000));
    let fd = tokio::task::spawn_blocking(move || exec.attach(id, &handle, rows, cols))
        .await
        .map_err(|e| ApiError::unavailable(format!("the attach failed: {e}")))?
        .map_err(|e| ApiError::conflict("attach_failed", e.to_string()))?;
    s.store
        .write(vec![s.audit_op(
            &p,
            s.clock.now(),
            "attach",
            &format!("job {id}"),
            format!("a shell, {rows}x{cols}"),
        )])
        .await?;
    // the token it came with: the shell ends when that token does
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(ws.on_upgrade(move |socket| relay(socket, fd, s, token)))
}

/// A shell with no byte either way for this long is closed.
const IDLE: std::time::Duration = std::time::Duration::from_secs(3600);
/// How often the shell's token is asked about.
const TOKEN_CHECK: std::time::Duration = std::time::Duration::from_secs(10);
/// Most bytes from the user waiting for the terminal to take them.
const PENDING: usize = 64 << 10;

/// Copies between the WebSocket and the terminal until either ends, the
/// shell is idle for [`IDLE`], or its token is revoked or expires. What
/// the user sends waits (at most [`PENDING`] bytes) while the terminal
/// cannot take it, and the terminal's output is read meanwhile.
async fn relay(mut ws: WebSocket, fd: OwnedFd, s: AppState, token: String) {
    // SAFETY: plain fcntl on an open descriptor.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: the File owns the descriptor, open for the AsyncFd's life,
    // and always gives the same one.
    let Ok(tty) = (unsafe { AsyncFd::register(std::fs::File::from(fd)) }) else {
        return;
    };
    let mut buf = vec![0u8; 16 << 10];
    let mut pending: Vec<u8> = Vec::new();
    let mut last = tokio::time::Instant::now();
    let mut check = tokio::time::interval(TOKEN_CHECK);
    loop {
        tokio::select! {
            r = tty.readable() => {
                let Ok(mut guard) = r else { break };
                match guard.try_io(|f| std::io::Read::read(&mut f.get_ref(), &mut buf)) {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        last = tokio::time::Instant::now();
                        if ws.send(Message::Binary(buf[..n].to_vec().into())).await.is_err() {
                            break;
                        }
                    }
                    Err(_would_block) => continue,
                }
            }
            w = tty.writable(), if !pending.is_empty() => {
                let Ok(mut guard) = w else { break };
                match guard.try_io(|f| std::io::Write::write(&mut f.get_ref(), &pending)) {
                    Ok(Ok(n)) => {
                        pending.drain(..n);
                    }
                    Ok(Err(_)) => break,
                    Err(_would_block) => {}
                }
            }
            m = ws.recv(), if pending.len() < PENDING => match m {
                Some(Ok(Message::Binary(b))) => {
                    last = tokio::time::Instant::now();
                    pending.extend_from_slice(&b);
                }
                Some(Ok(Message::Text(t))) => {
                    if let Ok(r) = serde_json::from_str::<Resize>(t.as_str()) {
                        let _ = gigafab_exec::attach::resize(
                            tty.get_ref(),
                            r.rows.clamp(1, 1000),
                            r.cols.clamp(1, 1000),
                        );
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            _ = tokio::time::sleep_until(last + IDLE) => break,
            _ = check.tick() => {
                if s.principal(&token).is_none() {
                    break;
                }
            }
        }
    }
    let _ = ws.send(Message::Close(None)).await;
}
