//! The HTTP side of the client: URLs, auth, error answers, pagination.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde_json::Value;
use std::time::Duration;

/// Where the server listens when neither `--server` nor `GIGAFAB_SERVER` say.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// Seconds a plain (non-streaming) request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// An answer of the server: its body as sent, and parsed.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The body verbatim (for `--output json`).
    pub raw: String,
    /// The body parsed.
    pub value: Value,
}

impl Reply {
    /// A reply built from a value (for answers merged from several pages).
    pub fn from_value(value: Value) -> Reply {
        Reply {
            raw: value.to_string(),
            value,
        }
    }

    /// The `items` array of a list answer (empty when absent).
    pub fn items(&self) -> &[Value] {
        self.value["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A connection to the gigafab server.
pub struct Api {
    base: Url,
    shown: String,
    token: String,
    http: reqwest::Client,
}

/// Turns a `--server` value into a base URL: adds `http://` when no scheme is
/// given, drops trailing slashes and a trailing `/api/v1`.
pub fn normalize_server(s: &str) -> Result<String> {
    let mut s = s.trim().to_string();
    if s.is_empty() {
        bail!("the server URL is empty; pass --server URL or set GIGAFAB_SERVER");
    }
    if !s.contains("://") {
        s = format!("http://{s}");
    }
    while s.ends_with('/') {
        s.pop();
    }
    if let Some(stripped) = s.strip_suffix("/api/v1") {
        s = stripped.to_string();
    }
    let url = Url::parse(&s).with_context(|| format!("invalid server URL '{s}'"))?;
    match url.scheme() {
        "http" => {}
        "https" => bail!(
            "server URL '{s}': this gigafab client speaks plain http only; use http:// \
             (or a local TLS-terminating proxy)"
        ),
        other => bail!("server URL '{s}': unsupported scheme '{other}'; use http://"),
    }
    if url.host_str().is_none_or(str::is_empty) {
        bail!("server URL '{s}' has no host");
    }
    Ok(s)
}

/// No request body (`post(.., NO_BODY)`).
pub const NO_BODY: Option<&()> = None;

/// The failures a command acts on (others are only shown): found in an
/// `anyhow::Error` with `downcast_ref`, never by reading its text.
#[derive(Debug)]
pub enum ClientError {
    /// Nothing answers at the server's address.
    Unreachable { server: String, cause: String },
    /// The server refused the request with the contract's error body.
    Refused {
        status: u16,
        error: gigafab_api::Error,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { server, cause } => write!(
                f,
                "cannot reach gigafab server at {server}: {cause} (start it with `gigafab serve` or set --server/GIGAFAB_SERVER)"
            ),
            ClientError::Refused { error, .. } if !error.message.is_empty() => {
                write!(f, "{} ({})", error.message, error.error)
            }
            ClientError::Refused { status, error } => write!(f, "{} (HTTP {status})", error.error),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientError {
    /// Whether `e` is a server that cannot be reached.
    pub fn is_unreachable(e: &anyhow::Error) -> bool {
        matches!(e.downcast_ref(), Some(ClientError::Unreachable { .. }))
    }

    /// The HTTP status of a refusal, if `e` is one.
    pub fn status(e: &anyhow::Error) -> Option<u16> {
        match e.downcast_ref() {
            Some(ClientError::Refused { status, .. }) => Some(*status),
            _ => None,
        }
    }
}

/// The error for a 4xx/5xx answer: `<message> (<code>)` from the contract's
/// `{"error", "message"}` body, else the HTTP status and the body's start.
pub fn answer_error(status: u16, body: &str) -> anyhow::Error {
    match serde_json::from_str::<gigafab_api::Error>(body) {
        Ok(error) => ClientError::Refused { status, error }.into(),
        Err(_) => {
            let b = body.trim();
            if b.is_empty() {
                anyhow!("the server answered HTTP {status}")
            } else {
                anyhow!(
                    "the server answered HTTP {status}: {}",
                    super::fmt::truncate(b, 200)
                )
            }
        }
    }
}

/// The innermost cause of an error (e.g. `Connection refused (os error 111)`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The causes of an error after its first line, joined by `: `.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}

/// The cursor of a list answer's `next` as a query value; `None` at the end.
pub fn next_cursor(page: &Value) -> Option<String> {
    match &page["next"] {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Api {
    /// A connection from `--server`/`--token` (already resolved against the
    /// environment). Fails when no token is known.
    pub fn new(server: &str, token: Option<&str>) -> Result<Api> {
        let shown = normalize_server(server)?;
        let token = match token.map(str::trim) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => bail!(
                "no API token: set GIGAFAB_TOKEN (or pass --token); `gigafab user create` \
                 and `gigafab token create` make tokens"
            ),
        };
        let base = Url::parse(&shown).with_context(|| format!("invalid server URL '{shown}'"))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("gigafab/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("setting up the HTTP client")?;
        Ok(Api {
            base,
            shown,
            token,
            http,
        })
    }

    /// `<base>/api/v1/<segments...>?<query>`; segments are percent-encoded.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url).bearer_auth(&self.token)
    }

    /// Sends a request and fails on transport errors and 4xx/5xx answers.
    async fn send(&self, req: RequestBuilder, url: &Url) -> Result<Response> {
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => {
                return Err(ClientError::Unreachable {
                    server: self.shown.clone(),
                    cause: root_cause(&e),
                }
                .into());
            }
            Err(e) if e.is_timeout() => bail!(
                "gigafab server at {} did not answer in time ({})",
                self.shown,
                url.path()
            ),
            Err(e) => bail!("request to {url} failed: {}", causes(&e)),
        };
        self.checked(resp).await
    }

    /// `resp`, or its error for a 4xx/5xx answer.
    async fn checked(&self, resp: Response) -> Result<Response> {
        let status = resp.status();
        if status.is_client_error() || status.is_server_error() {
            let body = resp.text().await.unwrap_or_default();
            return Err(answer_error(status.as_u16(), &body));
        }
        Ok(resp)
    }

    async fn call<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<Reply> {
        let url = self.url(segments, query);
        let mut req = self.request(method, url.clone()).timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.send(req, &url).await?;
        self.answer(resp, &url).await
    }

    /// The JSON answer of `resp`.
    async fn answer(&self, resp: Response, url: &Url) -> Result<Reply> {
        let raw = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let value = serde_json::from_str(&raw).with_context(|| {
            format!(
                "the answer of {url} is not JSON: {}",
                super::fmt::truncate(raw.trim(), 200)
            )
        })?;
        Ok(Reply { raw, value })
    }

    /// `GET /api/v1/<segments>?<query>`.
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Reply> {
        self.call(Method::GET, segments, query, NO_BODY).await
    }

    /// `POST /api/v1/<segments>` with a JSON body (or none).
    pub async fn post<B: serde::Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: Option<&B>,
    ) -> Result<Reply> {
        self.call(Method::POST, segments, &[], body).await
    }

    /// `POST /api/v1/<segments>` that creates something, with an
    /// `Idempotency-Key` of its own: retried with the same key when the
    /// answer is lost (a connection error or time-out), when the server is
    /// unavailable (503) or asks to wait (429, after its `Retry-After`, at
    /// most 10 s), so that a retry never makes a second one. Four tries.
    pub async fn post_idempotent<B: serde::Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply> {
        let url = self.url(segments, &[]);
        let key = gigafab_server::auth::new_token();
        let mut tries = 0u32;
        loop {
            tries += 1;
            let req = self
                .request(Method::POST, url.clone())
                .timeout(REQUEST_TIMEOUT)
                .header("Idempotency-Key", &key)
                .json(body);
            if tries < 4 {
                let wait = match req.try_clone().expect("a JSON body").send().await {
                    Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                        Duration::from_millis(500 << (tries - 1))
                    }
                    Ok(r) if matches!(r.status().as_u16(), 429 | 503) => {
                        let after = r
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .unwrap_or(1);
                        Duration::from_secs(after.clamp(1, 10))
                    }
                    Ok(r) => return self.answer(self.checked(r).await?, &url).await,
                    Err(e) => bail!("request to {url} failed: {}", causes(&e)),
                };
                tokio::time::sleep(wait).await;
                continue;
            }
            let resp = self.send(req, &url).await?;
            return self.answer(resp, &url).await;
        }
    }

    /// `PUT /api/v1/<segments>` with a JSON body.
    pub async fn put<B: serde::Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply> {
        self.call(Method::PUT, segments, &[], Some(body)).await
    }

    /// `PUT /api/v1/<segments>` with a file's bytes, streamed (no overall
    /// time limit); the answer is JSON.
    pub async fn put_file(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        path: &std::path::Path,
    ) -> Result<Reply> {
        let url = self.url(segments, query);
        let f = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        // read 1 MiB at a time (not a small buffer per read)
        let chunks = futures_util::stream::unfold(f, |mut f| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), f))
                }
                Err(e) => Some((Err(e), f)),
            }
        });
        let req = self
            .request(Method::PUT, url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(chunks));
        let resp = self.send(req, &url).await?;
        let raw = resp
            .text()
            .await
            .with_context(|| format!("reading the answer of {url}"))?;
        let value = serde_json::from_str(&raw)
            .with_context(|| format!("the answer of {url} is not JSON"))?;
        Ok(Reply { raw, value })
    }

    /// `DELETE /api/v1/<segments>`.
    pub async fn delete(&self, segments: &[&str]) -> Result<Reply> {
        self.call(Method::DELETE, segments, &[], NO_BODY).await
    }

    /// `GET` of a streamed (non-JSON) body, status already checked; no
    /// overall time limit.
    pub async fn get_stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Response> {
        let url = self.url(segments, query);
        let req = self.request(Method::GET, url.clone());
        self.send(req, &url).await
    }

    /// `GET` of a list, following `next` through every page (or stopping after
    /// the first when `all` is false). A single page comes back verbatim;
    /// several are merged into `{"items": [...], "next": null}`.
    pub async fn get_list(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        all: bool,
    ) -> Result<Reply> {
        let first = self.get(segments, query).await?;
        let mut cursor = match next_cursor(&first.value) {
            Some(c) if all => c,
            _ => return Ok(first),
        };
        let mut items: Vec<Value> = first.items().to_vec();
        let mut raws: Vec<String> = vec![first.raw.clone()];
        loop {
            let mut q: Vec<(&str, String)> = query
                .iter()
                .filter(|(k, _)| *k != "after")
                .cloned()
                .collect();
            q.push(("after", cursor.clone()));
            let page = self.get(segments, &q).await?;
            items.extend(page.items().iter().cloned());
            let empty = page.items().is_empty();
            raws.push(page.raw);
            match next_cursor(&page.value) {
                Some(c) if c != cursor && !empty => cursor = c,
                _ => break,
            }
        }
        Ok(merge_pages(&raws, items))
    }

    /// Every page of a list, one after the other, each handed to `each`
    /// with whether it is the last: memory holds one page at a time.
    pub async fn for_each_page(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
        mut each: impl FnMut(Reply, bool) -> Result<()>,
    ) -> Result<()> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        let mut cursor: Option<String> = None;
        loop {
            if let Some(c) = &cursor {
                q.retain(|(k, _)| *k != "after");
                q.push(("after", c.clone()));
            }
            let page = self.get(segments, &q).await?;
            let next = next_cursor(&page.value)
                .filter(|c| Some(c) != cursor.as_ref() && !page.items().is_empty());
            let last = next.is_none();
            each(page, last)?;
            if last {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// Merges list pages into one `{"items": [...], "next": null}` answer whose
/// items keep the server's text verbatim (key order included).
fn merge_pages(raws: &[String], items: Vec<Value>) -> Reply {
    let value = serde_json::json!({ "items": items, "next": null });
    let texts: Option<Vec<&str>> = raws.iter().map(|r| super::fmt::items_text(r)).collect();
    match texts {
        Some(texts) => {
            let parts: Vec<&str> = texts
                .into_iter()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            Reply {
                raw: format!("{{\"items\":[{}],\"next\":null}}", parts.join(",")),
                value,
            }
        }
        None => Reply::from_value(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_urls_are_normalized() {
        assert_eq!(
            normalize_server("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalize_server("localhost:9000/").unwrap(),
            "http://localhost:9000"
        );
        assert_eq!(
            normalize_server("http://h:1/api/v1/").unwrap(),
            "http://h:1"
        );
        assert_eq!(
            normalize_server("http://h/prefix").unwrap(),
            "http://h/prefix"
        );
        let e = normalize_server("https://h").unwrap_err().to_string();
        assert!(e.contains("plain http"), "{e}");
        let e = normalize_server("ftp://h").unwrap_err().to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
        assert!(normalize_server("  ").is_err());
    }

    #[test]
    fn urls_encode_segments_and_queries() {
        let api = Api::new("http://h:1/prefix/", Some("gf_x")).unwrap();
        assert_eq!(
            api.url(&["jobs", "12"], &[]).as_str(),
            "http://h:1/prefix/api/v1/jobs/12"
        );
        assert_eq!(
            api.url(&["fleet", "nodes", "a/b c", "drain"], &[]).as_str(),
            "http://h:1/prefix/api/v1/fleet/nodes/a%2Fb%20c/drain"
        );
        assert_eq!(
            api.url(
                &["jobs"],
                &[("state", "queued".into()), ("after", "a&b".into())]
            )
            .as_str(),
            "http://h:1/prefix/api/v1/jobs?state=queued&after=a%26b"
        );
        let api = Api::new("127.0.0.1:8080", Some("t")).unwrap();
        assert_eq!(
            api.url(&["whoami"], &[]).as_str(),
            "http://127.0.0.1:8080/api/v1/whoami"
        );
    }

    #[test]
    fn a_token_is_required() {
        for t in [None, Some(""), Some("  ")] {
            let e = Api::new(DEFAULT_SERVER, t).err().unwrap().to_string();
            assert!(e.contains("GIGAFAB_TOKEN"), "{e}");
        }
    }

    #[test]
    fn error_answers() {
        let e = answer_error(404, r#"{"error":"job_not_found","message":"no job 7"}"#);
        assert_eq!(e.to_string(), "no job 7 (job_not_found)");
        let e = answer_error(502, "Bad Gateway");
        assert_eq!(e.to_string(), "the server answered HTTP 502: Bad Gateway");
        let e = answer_error(500, "");
        assert_eq!(e.to_string(), "the server answered HTTP 500");
        let e = answer_error(401, r#"{"error":"unauthorized","message":""}"#);
        assert_eq!(e.to_string(), "unauthorized (HTTP 401)");
    }

    #[test]
    fn pages_merge_verbatim() {
        let raws = [
            r#"{"items":[{"z":1,"a":2}],"next":"1"}"#.to_string(),
            r#"{"items":[],"next":"2"}"#.to_string(),
            r#"{"items":[{"z":3,"a":4.50}],"next":null}"#.to_string(),
        ];
        let items = vec![json!({"z":1,"a":2}), json!({"z":3,"a":4.5})];
        let r = merge_pages(&raws, items);
        assert_eq!(
            r.raw,
            r#"{"items":[{"z":1,"a":2},{"z":3,"a":4.50}],"next":null}"#
        );
        assert_eq!(r.items().len(), 2);
        let parsed: Value = serde_json::from_str(&r.raw).unwrap();
        assert_eq!(parsed, r.value);
    }

    #[test]
    fn cursors() {
        assert_eq!(next_cursor(&json!({"items": [], "next": null})), None);
        assert_eq!(next_cursor(&json!({"items": []})), None);
        assert_eq!(next_cursor(&json!({"next": 41})).as_deref(), Some("41"));
        assert_eq!(next_cursor(&json!({"next": "abc"})).as_deref(), Some("abc"));
        assert_eq!(next_cursor(&json!({"next": ""})), None);
    }

    #[tokio::test]
    async fn unreachable_server_is_explained() {
        // A port that was just free: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let api = Api::new(&format!("http://127.0.0.1:{port}"), Some("gf_x")).unwrap();
        let e = api.get(&["whoami"], &[]).await.unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "cannot reach gigafab server at http://127.0.0.1:{port}: "
            )),
            "{e}"
        );
        assert!(
            e.ends_with("(start it with `gigafab serve` or set --server/GIGAFAB_SERVER)"),
            "{e}"
        );
    }
}
