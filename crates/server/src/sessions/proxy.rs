//! The sessions' reverse proxy: a request to `/sessions/{id}/...` from the
//! session's user (checked by the portal before it gets here) goes to the
//! session's app, on a connection of its own, with the app's secret added
//! and the portal's cookie and the caller's `Authorization` taken off.
//! WebSocket upgrades are passed through; the bytes both ways count as the
//! session's traffic.
//!
//! Where the request goes is the session's alone: its app's address, from
//! the engine that runs its job. Nothing in the request (path, `Host`, an
//! absolute URI) can point the proxy at another host or port.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use gigafab_exec::Reach;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{AppDef, Live};
use crate::time::Clock;

/// How long the app has to accept a connection.
const CONNECT: Duration = Duration::from_secs(10);
/// How long it has to answer a request's head (long polls included).
const ANSWER: Duration = Duration::from_secs(300);
/// Largest answer to the server's own checks (ready, idle), bytes.
const CHECK_MAX: usize = 256 << 10;
use crate::auth::PORTAL_COOKIE;
/// A WebSocket tunnel with no byte either way for this long is closed.
const TUNNEL_IDLE: Duration = Duration::from_secs(3600);

/// A connection to the app at `reach`.
pub async fn connect(reach: &Reach) -> std::io::Result<TcpStream> {
    let go = async {
        match reach {
            Reach::Tcp(a) => TcpStream::connect(a.as_str()).await,
            Reach::Socket(p) => {
                let s = crate::gateway::h1::from_supervisor(p).await?;
                s.set_nonblocking(true)?;
                TcpStream::from_std(s)
            }
        }
    };
    tokio::time::timeout(CONNECT, go)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the app did not accept"))?
}

/// The server's own GET of `path` at session `l`'s app (its readiness,
/// its idleness): the status and at most [`CHECK_MAX`] bytes of body.
pub async fn get(l: &Live, reach: &Reach, path: &str) -> Result<(StatusCode, Bytes), String> {
    let go = async {
        let io = connect(reach).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::get(path)
            .header(header::HOST, format!("127.0.0.1:{}", l.row.port))
            .header(header::ACCEPT, "application/json");
        if let Some(a) = &l.app.auth_header {
            req = req.header(
                header::AUTHORIZATION,
                AppDef::fill(a, l.row.port as u16, &l.base(), &l.row.token),
            );
        }
        let req = req
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let res = send.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status();
        let body = http_body_util::Limited::new(res.into_body(), CHECK_MAX)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
}

/// Hop-by-hop headers, never passed on (RFC 9110 7.6.1).
const HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// `h` without hop-by-hop headers and those its `Connection` names;
/// `upgrade` kept (with `Connection: upgrade`) where `upgrading`.
fn end_to_end(h: &mut HeaderMap, upgrading: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| !(upgrading && n == header::UPGRADE))
        .collect();
    for n in HOP.iter().chain(named.iter()) {
        h.remove(n);
    }
    if upgrading {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        h.remove(header::UPGRADE);
    }
}

/// The `Cookie` header without the portal's cookie.
fn without_portal_cookie(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(PORTAL_COOKIE))
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

fn bad_gateway(message: String) -> Response {
    (StatusCode::BAD_GATEWAY, message).into_response()
}

/// Whether `h` asks for a protocol upgrade: an `Upgrade` header and
/// `upgrade` among `Connection`'s tokens.
pub(crate) fn asks_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// What an app may not set in the user's browser, which sees it at the
/// portal's origin: the portal's cookie, a service worker over more than
/// its own path, the site's stored data cleared.
fn app_answer_headers(h: &mut HeaderMap) {
    h.remove("service-worker-allowed");
    h.remove("clear-site-data");
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .to_str()
                .ok()
                .and_then(|c| c.split(';').next())
                .and_then(|kv| kv.split('=').next())
                .map(str::trim);
            // unreadable, or the portal's: dropped
            name.is_some_and(|n| !n.eq_ignore_ascii_case(PORTAL_COOKIE))
        })
        .cloned()
        .collect();
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

/// The path and query the app is asked for.
fn upstream_uri(l: &Live, uri: &Uri) -> Result<Uri, String> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let pq = if l.app.strip_prefix {
        let prefix = format!("/sessions/{}", l.row.id);
        match pq.strip_prefix(&prefix) {
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            Some(rest) => format!("/{rest}"),
            None => pq.to_string(),
        }
    } else {
        pq.to_string()
    };
    pq.parse::<Uri>().map_err(|e| e.to_string())
}

/// Passes `req` to session `l`'s app at `reach` and its answer back.
pub async fn forward(
    l: Arc<Live>,
    reach: Reach,
    mut req: Request,
    clock: Arc<dyn Clock>,
) -> Response {
    l.last_traffic_ms.fetch_max(clock.now().0, Ordering::AcqRel);
    let upgrading = asks_upgrade(req.headers());
    let uri = match upstream_uri(&l, req.uri()) {
        Ok(u) => u,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not a path: {e}")).into_response(),
    };
    let client_upgrade = upgrading.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    parts.version = axum::http::Version::HTTP_11;
    let h = &mut parts.headers;
    end_to_end(h, upgrading);
    without_portal_cookie(h);
    h.remove(header::AUTHORIZATION);
    if let Some(a) = &l.app.auth_header
        && let Ok(v) =
            HeaderValue::from_str(&AppDef::fill(a, l.row.port as u16, &l.base(), &l.row.token))
    {
        h.insert(header::AUTHORIZATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("127.0.0.1:{}", l.row.port)) {
        h.insert(header::HOST, v);
    }
    let io = match connect(&reach).await {
        Ok(io) => io,
        Err(e) => {
            return bad_gateway(format!(
                "session {}: its app does not answer: {e}",
                l.row.id
            ));
        }
    };
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => return bad_gateway(format!("session {}: {e}", l.row.id)),
    };
    tokio::spawn(conn.with_upgrades());
    let up = hyper::Request::from_parts(parts, body);
    let mut res = match tokio::time::timeout(ANSWER, send.send_request(up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return bad_gateway(format!("session {}: {e}", l.row.id)),
        Err(_) => return bad_gateway(format!("session {}: no answer within {ANSWER:?}", l.row.id)),
    };
    app_answer_headers(res.headers_mut());
    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = client_upgrade else {
            return bad_gateway(format!(
                "session {}: its app switched protocols unasked",
                l.row.id
            ));
        };
        // a bounded number of tunnels per session
        let Ok(slot) = l.tunnels.clone().try_acquire_owned() else {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "session {} has {} WebSocket connections open already",
                    l.row.id,
                    super::registry::TUNNELS_PER_SESSION
                ),
            )
                .into_response();
        };
        let app_side = hyper::upgrade::on(&mut res);
        let l2 = l.clone();
        tokio::spawn(async move {
            if let (Ok(c), Ok(a)) = (client.await, app_side.await) {
                pump(l2, clock, TokioIo::new(c), TokioIo::new(a)).await;
            }
            drop(slot);
        });
        let (mut p, _) = res.into_parts();
        let up = p.headers.get(header::UPGRADE).cloned();
        end_to_end(&mut p.headers, true);
        if let Some(u) = up {
            p.headers.insert(header::UPGRADE, u);
        }
        return Response::from_parts(p, Body::empty());
    }
    let (mut p, body) = res.into_parts();
    end_to_end(&mut p.headers, false);
    // the answer's bytes count as traffic as they pass
    let body = body.map_frame(move |f| {
        l.last_traffic_ms.fetch_max(clock.now().0, Ordering::AcqRel);
        f
    });
    Response::from_parts(p, Body::new(body))
}

/// Copies bytes both ways between the browser's upgraded connection and
/// the app's until either ends, or neither way carries a byte for
/// [`TUNNEL_IDLE`]; each read is traffic.
async fn pump<A, B>(l: Arc<Live>, clock: Arc<dyn Clock>, a: A, b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let last = Arc::new(std::sync::atomic::AtomicI64::new(clock.now().0));
    let one = copy(l.clone(), clock.clone(), last.clone(), ar, bw);
    let other = copy(l, clock, last, br, aw);
    // either way ending ends both
    tokio::select! {
        _ = one => {}
        _ = other => {}
    }
}

/// One way of a tunnel: `from` to `to`, each read counted in `last` and
/// as the session's traffic.
async fn copy<R, W>(
    l: Arc<Live>,
    clock: Arc<dyn Clock>,
    last: Arc<std::sync::atomic::AtomicI64>,
    mut from: R,
    mut to: W,
) where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(60), from.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => break,
            // quiet this way: the tunnel goes when both ways are
            Err(_) => {
                let quiet = clock.now().0 - last.load(Ordering::Acquire);
                if quiet >= TUNNEL_IDLE.as_millis() as i64 {
                    break;
                }
                continue;
            }
        };
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let now = clock.now().0;
        last.fetch_max(now, Ordering::AcqRel);
        l.last_traffic_ms.fetch_max(now, Ordering::AcqRel);
    }
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_portal_cookie_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gf_session=SECRET; _xsrf=2"),
        );
        let mut up = h.clone();
        end_to_end(&mut h, false);
        without_portal_cookie(&mut h);
        assert!(h.get("x-secret").is_none() && h.get(header::TE).is_none());
        assert!(h.get(header::UPGRADE).is_none() && h.get(header::CONNECTION).is_none());
        assert_eq!(h[header::COOKIE], "a=1; _xsrf=2");
        end_to_end(&mut up, true);
        assert_eq!(up[header::UPGRADE], "websocket");
        assert_eq!(up[header::CONNECTION], "upgrade");
    }

    #[test]
    fn an_app_cannot_set_the_portals_cookie_or_take_the_origin() {
        let mut h = HeaderMap::new();
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("_xsrf=1; Path=/sessions/1/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("GF_SESSION=forged; Path=/"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static(" gf_session =forged"),
        );
        h.insert("service-worker-allowed", HeaderValue::from_static("/"));
        h.insert("clear-site-data", HeaderValue::from_static("\"*\""));
        app_answer_headers(&mut h);
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["_xsrf=1; Path=/sessions/1/"]);
        assert!(h.get("service-worker-allowed").is_none() && h.get("clear-site-data").is_none());
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!asks_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(asks_upgrade(&h));
    }
}
