//! The gateway of model endpoints: OpenAI-compatible routes under
//! `/v1/endpoints/{name}/` (`chat/completions`, `completions`,
//! `embeddings`, `models`), authenticated by the endpoint's API keys,
//! limited per key, sent to the ready replica with the fewest requests in
//! flight, held (a bounded queue, a timeout) while a replica starts, and
//! metered: prompt and completion tokens from the answer's `usage` (or
//! counted from a stream's chunks), time to first byte and to the end.
//! Streams (server-sent events) are passed through chunk by chunk.
//!
//! Its errors have OpenAI's shape, `{"error": {"message", "type",
//! "code"}}`, which OpenAI clients read.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::hash_token;
use crate::endpoints::registry::{Endpoint, Key, RState, Replica, Serving};
use crate::state::Shared;
use crate::time::Clock;

/// Largest request body the gateway forwards, bytes.
pub const MAX_REQUEST: usize = 16 << 20;
/// Largest answer it reads whole (non-streamed, to meter it), bytes.
pub const MAX_ANSWER: usize = 64 << 20;
/// Most tokens one answer is counted for, each of prompt and completion
/// (a replica's `usage` is its tenant's word: nothing it says may
/// overflow a counter).
pub const MAX_TOKENS: u64 = 10_000_000;

pub mod h1;

pub use h1::Pool as Upstream;

struct Gw {
    serving: Arc<Serving>,
    clock: Arc<dyn Clock>,
    client: Arc<Upstream>,
}

/// The gateway's routes, inside `gigafab serve`.
pub fn router(s: Arc<Shared>) -> Router {
    router_over(s.serving.clone(), s.clock.clone())
}

/// The gateway's routes over `serving` (its own, in `gigafab gateway`).
pub fn router_over(serving: Arc<Serving>, clock: Arc<dyn Clock>) -> Router {
    let gw = Arc::new(Gw {
        client: Upstream::new(serving.clone()),
        serving,
        clock,
    });
    Router::new()
        .route("/v1/endpoints/{name}/{*rest}", axum::routing::any(proxy))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(gw)
}

/// An error as OpenAI's API answers it.
fn oai_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = serde_json::json!({
        "error": {"message": message.into(), "type": kind, "code": code, "param": null}
    });
    (status, axum::Json(body)).into_response()
}

fn queue_full(name: &str, limit: u32) -> Response {
    with_retry_after(
        oai_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "queue_full",
            format!("{limit} requests already wait for a replica of `{name}`; retry later"),
        ),
        5,
    )
}

/// A request the gateway answers itself with an error (its refusals, a
/// replica that failed): counted against the key and the endpoint.
fn refused(e: &Endpoint, key: &Key, total_s: f64, r: Response) -> Response {
    key.served.add(true, 0, 0);
    e.metrics.request(r.status().as_u16(), 0.0, total_s, 0, 0);
    r
}

/// `502 replica_failed`: a replica that did not answer, or whose answer
/// broke off, `t0` after the request came.
fn broken(e: &Endpoint, key: &Key, t0: Instant, message: String) -> Response {
    refused(
        e,
        key,
        t0.elapsed().as_secs_f64(),
        oai_error(StatusCode::BAD_GATEWAY, "replica_failed", message),
    )
}

/// `503 code`, to be retried after 10 s.
fn unavailable(code: &str, message: String) -> Response {
    with_retry_after(
        oai_error(StatusCode::SERVICE_UNAVAILABLE, code, message),
        10,
    )
}

fn with_retry_after(mut r: Response, s: u64) -> Response {
    r.headers_mut().insert(header::RETRY_AFTER, s.max(1).into());
    r
}

/// Keeps an endpoint's and a replica's in-flight counts while a request
/// is served (until its answer's last byte).
struct Flight {
    e: Arc<Endpoint>,
    r: Arc<Replica>,
}

impl Flight {
    fn new(e: Arc<Endpoint>, r: Arc<Replica>) -> Flight {
        e.in_flight.fetch_add(1, Ordering::AcqRel);
        r.in_flight.fetch_add(1, Ordering::AcqRel);
        Flight { e, r }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.e.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.r.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request as waiting for a replica while it lives.
struct Waiting(Arc<Endpoint>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The bearer key of a request, hashed.
fn key_hash(req: &Request) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let k = v.strip_prefix("Bearer ")?.trim();
    (!k.is_empty()).then(|| hash_token(k))
}

/// Which of the OpenAI operations a path is.
fn operation(rest: &str, method: &axum::http::Method) -> Option<&'static str> {
    use axum::http::Method;
    let rest = rest.trim_start_matches("v1/");
    match (rest, method) {
        ("chat/completions", &Method::POST) => Some("chat/completions"),
        ("completions", &Method::POST) => Some("completions"),
        ("embeddings", &Method::POST) => Some("embeddings"),
        ("models", &Method::GET) => Some("models"),
        _ => None,
    }
}

async fn proxy(
    State(gw): State<Arc<Gw>>,
    Path((name, rest)): Path<(String, String)>,
    req: Request,
) -> Response {
    let s = &*gw;
    let t0 = Instant::now();
    // one answer for an unknown endpoint and a key that is not its own:
    // nothing tells another tenant which names exist
    let denied = || {
        oai_error(
            StatusCode::UNAUTHORIZED,
            "invalid_api_key",
            "missing, unknown, revoked or expired API key for this endpoint",
        )
    };
    let Some(hash) = key_hash(&req) else {
        return denied();
    };
    let (Some(e), Some(key)) = (s.serving.get(&name), s.serving.key(&hash)) else {
        return denied();
    };
    let now = s.clock.now();
    if key.endpoint_id != e.id || !key.live(now.0) {
        return denied();
    }
    if let Err(wait) = key.check() {
        return refused(
            &e,
            &key,
            0.0,
            with_retry_after(
                oai_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "this key makes more requests than its endpoint allows; slow down",
                ),
                wait.as_secs_f64().ceil() as u64,
            ),
        );
    }
    let Some(op) = operation(&rest, req.method()) else {
        return oai_error(
            StatusCode::NOT_FOUND,
            "unknown_route",
            format!(
                "`{} /v1/endpoints/{name}/{rest}` is not served: chat/completions, completions, embeddings (POST), models (GET)",
                req.method()
            ),
        );
    };
    if op == "models" {
        // answered here: the endpoint serves one model, under its name
        let body = serde_json::json!({
            "object": "list",
            "data": [{"id": e.name, "object": "model", "created": e.created_ms / 1000, "owned_by": e.owner}]
        });
        return axum::Json(body).into_response();
    }
    let (set_hold, limit) = e.hold_and_queue();
    if e.pick().is_none() && e.queued.load(Ordering::Acquire) >= limit {
        // refused before its body is read; the autoscaler still hears of
        // it (a request within idle_to_zero_s asks for a replica)
        e.last_request_ms.store(now.0, Ordering::Relaxed);
        s.serving.wake.notify_one();
        return refused(&e, &key, 0.0, queue_full(&name, limit));
    }
    // the two headers passed on (not the whole map)
    let passed = [
        ("content-type", header::CONTENT_TYPE),
        ("accept", header::ACCEPT),
    ]
    .map(|(name, h)| (name, req.headers().get(&h).cloned()));
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST).await {
        Ok(b) => b,
        Err(_) => {
            return oai_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("the body is larger than {MAX_REQUEST} bytes"),
            );
        }
    };
    let streamed = wants_stream(&body);
    // written when it moves on (a line every request would share)
    if now.0 - e.last_request_ms.load(Ordering::Relaxed) >= 100 {
        e.last_request_ms.store(now.0, Ordering::Relaxed);
    }
    // a ready replica, or wait for one
    let deadline = tokio::time::Instant::now() + Duration::from_secs(set_hold as u64);
    let mut tried: Vec<i64> = Vec::new();
    loop {
        // the common case first: a ready replica, without registering as
        // a waiter (a lock shared by every request of the endpoint)
        let picked = pick_untried(&e, &tried);
        let replica = match picked {
            Some(r) => r,
            None => {
                let ready = e.ready.notified();
                tokio::pin!(ready);
                ready.as_mut().enable();
                // again, now that a replica becoming ready wakes this one
                match pick_untried(&e, &tried) {
                    Some(r) => r,
                    None => {
                        if e.deleted.load(Ordering::Acquire) {
                            return denied();
                        }
                        // one more waiting, unless as many wait as allowed
                        if e.queued
                            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                                (q < limit).then_some(q + 1)
                            })
                            .is_err()
                        {
                            return refused(&e, &key, 0.0, queue_full(&name, limit));
                        }
                        let waiting = Waiting(e.clone());
                        s.serving.wake.notify_one();
                        let failures = e.failures.load(Ordering::Acquire);
                        let timed_out = tokio::time::timeout_at(deadline, ready).await.is_err();
                        drop(waiting);
                        if !timed_out && e.failures.load(Ordering::Acquire) != failures {
                            // a replica ended while this request waited for it:
                            // say why now rather than at the hold's end
                            let why = e.last_failure();
                            return refused(
                                &e,
                                &key,
                                0.0,
                                unavailable(
                                    "replica_failed",
                                    format!("a replica of `{name}` failed as it started: {why}"),
                                ),
                            );
                        }
                        if timed_out {
                            return refused(
                                &e,
                                &key,
                                0.0,
                                unavailable(
                                    "no_replica",
                                    format!(
                                        "no replica of `{name}` became ready within {set_hold} s; retry later"
                                    ),
                                ),
                            );
                        }
                        continue;
                    }
                }
            }
        };
        let flight = Flight::new(e.clone(), replica.clone());
        if replica.state() != RState::Ready {
            // drained (or lost) between the pick and now: another one
            drop(flight);
            continue;
        }
        let Some(authority) = replica.authority.get() else {
            drop(flight);
            continue;
        };
        let path = match op {
            "chat/completions" => "/v1/chat/completions",
            "completions" => "/v1/completions",
            _ => "/v1/embeddings",
        };
        let mut headers: [(&'static str, &HeaderValue); 3] =
            [("authorization", &replica.bearer); 3];
        let mut n = 1;
        for (h, v) in &passed {
            if let Some(v) = v {
                headers[n] = (h, v);
                n += 1;
            }
        }
        let req = h1::Req {
            method: "POST",
            path,
            headers: &headers[..n],
            body: &body,
        };
        match gw.client.send(authority, &req).await {
            Ok(ans) => {
                let estimate = if streamed {
                    estimate_prompt_tokens(&body)
                } else {
                    0
                };
                return answer(e, key, flight, ans, (streamed, estimate), t0).await;
            }
            Err(err) if err.is_connect() => {
                // nothing reached it: safe to try another; it is asked
                // again whether it is ready
                if replica.demote() {
                    s.serving.wake.notify_one();
                }
                tried.push(replica.job);
                drop(flight);
                continue;
            }
            Err(err) => {
                drop(flight);
                return broken(&e, &key, t0, format!("the replica did not answer: {err}"));
            }
        }
    }
}

fn pick_untried(e: &Endpoint, tried: &[i64]) -> Option<Arc<Replica>> {
    if tried.is_empty() {
        return e.pick();
    }
    e.replicas()
        .into_iter()
        .filter(|r| r.state() == RState::Ready && !tried.contains(&r.job))
        .min_by_key(|r| r.in_flight.load(Ordering::Relaxed))
}

/// Whether the request asks for a stream (`"stream": true`).
fn wants_stream(body: &[u8]) -> bool {
    // most requests do not name it: no parse for them
    if !contains(body, b"\"stream\"") {
        return false;
    }
    #[derive(serde::Deserialize)]
    struct S {
        #[serde(default)]
        stream: bool,
    }
    serde_json::from_slice::<S>(body).is_ok_and(|s| s.stream)
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The token counts of an answer's `usage`.
fn usage_of(v: &[u8]) -> Option<(u64, u64)> {
    if !contains(v, b"\"usage\"") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct U {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    #[derive(serde::Deserialize)]
    struct A {
        usage: Option<U>,
    }
    let a: A = serde_json::from_slice(v).ok()?;
    // what a replica says is its tenant's word: held to a bound
    a.usage.map(|u| {
        (
            u.prompt_tokens.min(MAX_TOKENS),
            u.completion_tokens.min(MAX_TOKENS),
        )
    })
}

async fn answer(
    e: Arc<Endpoint>,
    key: Arc<Key>,
    flight: Flight,
    ans: h1::Answer,
    (streamed, prompt_estimate): (bool, u64),
    t0: Instant,
) -> Response {
    let status = ans.status;
    let ctype = ans.content_type;
    let sse = ctype
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if streamed || sse {
        let meter = Meter {
            e,
            key,
            status: status.as_u16(),
            t0,
            first: None,
            prompt: prompt_estimate,
            completion: 0,
            usage: false,
            line: Vec::new(),
            _flight: flight,
        };
        let body = Body::from_stream(metered(ans.body, meter));
        let mut r = Response::new(body);
        *r.status_mut() = status;
        if let Some(c) = ctype {
            r.headers_mut().insert(header::CONTENT_TYPE, c);
        }
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        r.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        return r;
    }
    let bytes = match ans.body.collect(MAX_ANSWER).await {
        Ok(b) => b,
        Err(err) => {
            drop(flight);
            return broken(
                &e,
                &key,
                t0,
                format!("the replica's answer broke off: {err}"),
            );
        }
    };
    drop(flight);
    let (p, c) = usage_of(&bytes).unwrap_or((0, 0));
    let secs = t0.elapsed().as_secs_f64();
    let error = status.as_u16() >= 400;
    key.served.add(error, p, c);
    e.served.add(error, p, c);
    e.metrics.request(status.as_u16(), secs, secs, p, c);
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    if let Some(c) = ctype {
        r.headers_mut().insert(header::CONTENT_TYPE, c);
    }
    r
}

/// What a streamed answer served, recorded when it ends.
struct Meter {
    e: Arc<Endpoint>,
    key: Arc<Key>,
    status: u16,
    t0: Instant,
    /// Seconds to the first chunk.
    first: Option<f64>,
    prompt: u64,
    completion: u64,
    /// A `usage` was seen: its counts replace the chunk count.
    usage: bool,
    /// The event-stream line being read.
    line: Vec<u8>,
    _flight: Flight,
}

impl Meter {
    fn chunk(&mut self, b: &[u8]) {
        if self.first.is_none() {
            self.first = Some(self.t0.elapsed().as_secs_f64());
        }
        for &x in b {
            if x == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.event_line(&line);
            } else if self.line.len() < 1 << 20 {
                self.line.push(x);
            }
        }
    }

    /// One `data: {...}` line: a chunk that carries content (a chat
    /// delta's `content`, a completion's `text`) is a token; a `usage`
    /// gives the counts.
    fn event_line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii();
        if data == b"[DONE]" || data.is_empty() {
            return;
        }
        if let Some((p, c)) = usage_of(data) {
            self.usage = true;
            self.prompt = p.min(MAX_TOKENS);
            self.completion = c.min(MAX_TOKENS);
        } else if !self.usage && carries_content(data) {
            self.completion = (self.completion + 1).min(MAX_TOKENS);
        }
    }
}

/// Whether a streamed chunk carries generated content.
fn carries_content(data: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Delta {
        content: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Choice {
        delta: Option<Delta>,
        text: Option<serde::de::IgnoredAny>,
    }
    #[derive(serde::Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    serde_json::from_slice::<Chunk>(data).is_ok_and(|c| {
        c.choices
            .iter()
            .any(|x| x.text.is_some() || x.delta.as_ref().is_some_and(|d| d.content.is_some()))
    })
}

/// The prompt's tokens estimated from its text (4 characters a token),
/// for a stream whose chunks carry no `usage`.
fn estimate_prompt_tokens(body: &[u8]) -> u64 {
    #[derive(serde::Deserialize)]
    struct Msg {
        content: Option<serde_json::Value>,
    }
    #[derive(serde::Deserialize)]
    struct Req {
        #[serde(default)]
        messages: Vec<Msg>,
        prompt: Option<serde_json::Value>,
    }
    fn chars(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.chars().count(),
            serde_json::Value::Array(a) => a.iter().map(chars).sum(),
            serde_json::Value::Object(o) => o.get("text").map_or(0, chars),
            _ => 0,
        }
    }
    let Ok(r) = serde_json::from_slice::<Req>(body) else {
        return 0;
    };
    let n: usize = r
        .messages
        .iter()
        .filter_map(|m| m.content.as_ref())
        .map(chars)
        .sum::<usize>()
        + r.prompt.as_ref().map_or(0, chars);
    n.div_ceil(4) as u64
}

impl Drop for Meter {
    fn drop(&mut self) {
        let total = self.t0.elapsed().as_secs_f64();
        let error = self.status >= 400;
        self.key.served.add(error, self.prompt, self.completion);
        self.e.served.add(error, self.prompt, self.completion);
        self.e.metrics.request(
            self.status,
            self.first.unwrap_or(total),
            total,
            self.prompt,
            self.completion,
        );
    }
}

/// A replica's streamed answer, passed on chunk by chunk and metered; the
/// meter records when the answer ends, breaks off or is let go.
fn metered(
    body: h1::Reader,
    meter: Meter,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold((body, meter), |(mut body, mut meter)| async move {
        match body.next().await {
            Ok(Some(data)) => {
                meter.chunk(&data);
                Some((Ok(data), (body, meter)))
            }
            // ended (or broke off): recorded now, not when the client
            // lets go
            Ok(None) | Err(_) => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_and_streams_are_read_from_the_request() {
        use axum::http::Method;
        assert_eq!(
            operation("chat/completions", &Method::POST),
            Some("chat/completions")
        );
        assert_eq!(
            operation("v1/chat/completions", &Method::POST),
            Some("chat/completions")
        );
        assert_eq!(operation("chat/completions", &Method::GET), None);
        assert_eq!(operation("models", &Method::GET), Some("models"));
        assert_eq!(operation("../admin", &Method::POST), None);
        assert!(wants_stream(br#"{"stream": true, "messages": []}"#));
        assert!(!wants_stream(br#"{"messages": []}"#));
        assert!(!wants_stream(b"not json"));
        assert_eq!(
            usage_of(
                br#"{"usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}"#
            ),
            Some((7, 3))
        );
        assert_eq!(usage_of(br#"{"choices": []}"#), None);
        assert!(carries_content(
            br#"{"choices": [{"delta": {"content": ""}}]}"#
        ));
        assert!(!carries_content(
            br#"{"choices": [{"delta": {"role": "assistant"}}]}"#
        ));
        assert!(!carries_content(
            br#"{"choices": [{"delta": {}, "finish_reason": "length"}]}"#
        ));
        assert!(carries_content(br#"{"choices": [{"text": "x"}]}"#));
        assert_eq!(
            estimate_prompt_tokens(
                br#"{"messages": [{"role": "user", "content": "hello world!"}]}"#
            ),
            3
        );
        assert_eq!(estimate_prompt_tokens(br#"{"prompt": "abcdefgh"}"#), 2);
    }
}
