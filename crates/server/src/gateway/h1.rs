//! The gateway's HTTP/1.1 client for replicas.
//!
//! A request is written and its answer read by the task that serves the
//! request: no connection task, no channel between the two, one `write`
//! and (for a small answer) one `read` a request. Connections are kept
//! alive and reused, per replica (authority), from a pool.
//!
//! It speaks what replicas answer: a status line and headers, then a body
//! framed by `Content-Length`, by `Transfer-Encoding: chunked`, or by the
//! connection's end; interim `1xx` answers are skipped.
//!
//! A kept-alive connection is reused only when its last answer was read
//! exactly to its end, and only if, looked at just before the request is
//! written, it has neither ended nor received bytes nobody asked for (a
//! replica cannot queue an answer ahead of the request). A request is
//! written again on a new connection only when writing it failed: never
//! once it was written whole, as the replica may have acted on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::endpoints::registry::Serving;

/// Longest an answer's head may be, bytes.
const MAX_HEAD: usize = 64 << 10;
/// Most headers an answer's head may have.
const MAX_HEADERS: usize = 64;
/// Longest a chunk-size line (or a trailer) may be, bytes.
const MAX_LINE: usize = 4 << 10;
/// Connections kept idle per replica.
const MAX_IDLE: usize = 1024;
/// An idle connection older than this is closed rather than reused.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// How often idle connections past [`IDLE_FOR`] are closed.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Most interim (`1xx`) answers skipped before an answer.
const MAX_INTERIM: usize = 8;
/// How long a connection may take to open.
const CONNECT_WITHIN: Duration = Duration::from_secs(5);
/// A body up to this size goes out in the head's write.
const INLINE_BODY: usize = 16 << 10;

/// Why a request to a replica failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be opened: nothing was sent.
    #[error("cannot connect to the replica: {0}")]
    Connect(std::io::Error),
    /// The connection failed while the request or its answer went through.
    #[error("{0}")]
    Io(std::io::Error),
    /// The answer ended before its body did.
    #[error("the answer ended early")]
    Early,
    /// The answer is not HTTP/1 as this client reads it.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// The answer is larger than asked for.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

impl Error {
    /// Nothing reached the replica: another may be tried.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_))
    }
}

/// A kept-alive connection to a replica.
struct Conn {
    io: TcpStream,
    /// Bytes read and not consumed yet.
    buf: BytesMut,
    /// The request being written (its buffer kept from one to the next).
    out: Vec<u8>,
    /// Where it goes.
    authority: Arc<str>,
    /// When it was put back idle.
    idle_since: Instant,
}

/// Connections to replicas, kept alive between requests.
pub struct Pool {
    serving: Arc<Serving>,
    idle: Mutex<Idle>,
}

/// Idle connections by replica, and when they were last swept.
struct Idle {
    by: HashMap<Arc<str>, Vec<Conn>>,
    swept: Instant,
}

/// A request to a replica.
pub struct Req<'a> {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Its path (and query).
    pub path: &'a str,
    /// Headers passed on, as name and value.
    pub headers: &'a [(&'static str, &'a HeaderValue)],
    /// Its body (`POST`).
    pub body: &'a [u8],
}

/// An answer whose head has been read.
pub struct Answer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Reader,
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Chunked: a chunk-size line is next.
    ChunkSize,
    /// Chunked: this many bytes of a chunk are left, then its CRLF.
    Chunk(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: trailers, up to an empty line.
    Trailers,
    /// Up to the connection's end.
    Close,
    /// Read whole (or failed).
    Done,
}

/// Reads an answer's body, then gives its connection back to the pool.
pub struct Reader {
    conn: Option<Conn>,
    framing: Framing,
    /// Whether the connection may serve another request once this body is
    /// read.
    keep: bool,
    /// Bytes of trailers read (held to [`MAX_HEAD`]).
    trailers: usize,
    pool: Arc<Pool>,
}

impl Pool {
    pub fn new(serving: Arc<Serving>) -> Arc<Pool> {
        Arc::new(Pool {
            serving,
            idle: Mutex::new(Idle {
                by: HashMap::new(),
                swept: Instant::now(),
            }),
        })
    }

    /// An idle connection to `authority` that is young enough and still
    /// quiet (see [`quiet`]); the others met on the way are closed.
    fn checkout(&self, authority: &str) -> Option<Conn> {
        loop {
            let c = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.by.get_mut(authority)?.pop()?
            };
            if c.idle_since.elapsed() < IDLE_FOR && quiet(&c.io) {
                return Some(c);
            }
        }
    }

    fn give_back(&self, mut c: Conn) {
        c.idle_since = Instant::now();
        if c.out.capacity() > 4 * INLINE_BODY {
            c.out = Vec::with_capacity(1 << 10);
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // now and then, the connections idle too long are closed (those
        // of replicas that are gone among them)
        if idle.swept.elapsed() >= SWEEP_EVERY {
            idle.swept = Instant::now();
            idle.by.retain(|_, list| {
                list.retain(|c| c.idle_since.elapsed() < IDLE_FOR);
                !list.is_empty()
            });
        }
        let list = idle.by.entry(c.authority.clone()).or_default();
        if list.len() < MAX_IDLE {
            list.push(c);
        }
    }

    /// Idle connections kept, all replicas together.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.by.values().map(Vec::len).sum()
    }

    async fn connect(&self, authority: &str) -> Result<Conn, Error> {
        let io = tokio::time::timeout(CONNECT_WITHIN, self.open(authority))
            .await
            .map_err(|_| {
                Error::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within {} s", CONNECT_WITHIN.as_secs()),
                ))
            })?
            .map_err(Error::Connect)?;
        io.set_nodelay(true).map_err(Error::Connect)?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(8 << 10),
            out: Vec::with_capacity(1 << 10),
            authority: authority.into(),
            idle_since: Instant::now(),
        })
    }

    /// Opens a connection: over TCP, or, for a replica in a network of its
    /// own, from its supervisor ([`gigafab_exec::reach`]).
    async fn open(&self, authority: &str) -> std::io::Result<TcpStream> {
        if let Some(path) = self.serving.socket(authority) {
            let s = from_supervisor(&path).await?;
            s.set_nonblocking(true)?;
            return TcpStream::from_std(s);
        }
        // a replica reached through its supervisor that is gone: never a
        // name to look up
        if authority.ends_with(".replica") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the replica is gone",
            ));
        }
        TcpStream::connect(authority).await
    }

    /// Sends `req` to `authority` and reads its answer's head.
    pub async fn send(self: &Arc<Self>, authority: &str, req: &Req<'_>) -> Result<Answer, Error> {
        if let Some(c) = self.checkout(authority) {
            match self.exchange(c, authority, req).await {
                // the request did not go out whole: nothing can have acted
                // on it; once more on a new connection
                Err(Unsent(_)) => {}
                Ok(r) => return r,
            }
        }
        let c = self.connect(authority).await?;
        match self.exchange(c, authority, req).await {
            Ok(r) => r,
            Err(Unsent(e)) => Err(Error::Io(e)),
        }
    }

    async fn exchange(
        self: &Arc<Self>,
        mut c: Conn,
        authority: &str,
        req: &Req<'_>,
    ) -> Result<Result<Answer, Error>, Unsent> {
        write_head(&mut c.out, authority, req);
        let inline = req.body.len() <= INLINE_BODY;
        if inline {
            c.out.extend_from_slice(req.body);
        }
        let mut wrote = c.io.write_all(&c.out).await;
        if wrote.is_ok() && !inline {
            wrote = c.io.write_all(req.body).await;
        }
        if let Err(e) = wrote {
            return Err(Unsent(e));
        }
        c.buf.clear();
        let mut interim = 0;
        loop {
            match parse_head(&c.buf) {
                Ok(Head::Partial) => {}
                Ok(Head::Interim(n)) => {
                    interim += 1;
                    if interim > MAX_INTERIM {
                        return Ok(Err(Error::Malformed("more than 8 interim answers")));
                    }
                    c.buf.advance(n);
                    continue;
                }
                Ok(Head::Done(n, h)) => {
                    c.buf.advance(n);
                    let framing = if req.method == "HEAD"
                        || h.status == StatusCode::NO_CONTENT
                        || h.status == StatusCode::NOT_MODIFIED
                    {
                        Framing::Length(0)
                    } else {
                        h.framing
                    };
                    let keep = h.keep && framing != Framing::Close;
                    return Ok(Ok(Answer {
                        status: h.status,
                        content_type: h.content_type,
                        body: Reader {
                            conn: Some(c),
                            framing,
                            keep,
                            trailers: 0,
                            pool: self.clone(),
                        },
                    }));
                }
                Err(e) => return Ok(Err(e)),
            }
            if c.buf.len() >= MAX_HEAD {
                return Ok(Err(Error::Malformed("its head is longer than 64 KiB")));
            }
            match c.io.read_buf(&mut c.buf).await {
                Ok(0) => return Ok(Err(Error::Early)),
                Ok(_) => {}
                Err(e) => return Ok(Err(Error::Io(e))),
            }
        }
    }
}

/// A request that could not be written whole (the write's error).
struct Unsent(std::io::Error);

/// Whether an idle connection is still open with nothing to read: a look
/// at the socket that neither waits nor takes anything. An ended
/// connection, an error, or bytes the replica sent unasked (an answer
/// queued ahead of a request) all say no.
fn quiet(io: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut b = [0u8; 1];
    // SAFETY: a non-blocking peek of one byte into a buffer of one byte,
    // on a socket this connection owns.
    let n = unsafe {
        libc::recv(
            io.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock
}

fn write_head(out: &mut Vec<u8>, authority: &str, req: &Req<'_>) {
    use std::io::Write;
    out.clear();
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in req.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if req.method != "GET" || !req.body.is_empty() {
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
}

/// What an answer's head says.
struct Parsed {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    framing: Framing,
    keep: bool,
}

enum Head {
    /// More bytes are needed.
    Partial,
    /// An interim (`1xx`) answer of this many bytes, to skip.
    Interim(usize),
    /// The head, of this many bytes.
    Done(usize, Parsed),
}

fn parse_head(buf: &[u8]) -> Result<Head, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Partial) => return Ok(Head::Partial),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Malformed("more than 64 headers"));
        }
        Err(_) => return Err(Error::Malformed("not an HTTP/1 status line and headers")),
    };
    let code = r.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("no such status"))?;
    if status.is_informational() {
        if code == 101 {
            return Err(Error::Malformed("the replica switched protocols"));
        }
        return Ok(Head::Interim(n));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut keep = r.version == Some(1);
    let mut closes = false;
    let mut content_type = None;
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let digits = h.value.trim_ascii();
            let v =
                (!digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit))
                    .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                    .flatten()
                    .ok_or(Error::Malformed("a Content-Length that is not a number"))?;
            if length.is_some_and(|l| l != v) {
                return Err(Error::Malformed("two different Content-Lengths"));
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            // the last coding says whether the body is chunked
            chunked = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    closes = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && r.version == Some(0) {
                    keep = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = HeaderValue::from_bytes(h.value).ok();
        }
    }
    // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length (and the
    // connection is closed after such an answer); a coding that is not
    // chunked last ends with the connection
    if closes || (encoded && length.is_some()) {
        keep = false;
    }
    let framing = match (encoded, chunked, length) {
        (true, true, _) => Framing::ChunkSize,
        (true, false, _) => Framing::Close,
        (false, _, Some(l)) => Framing::Length(l),
        (false, _, None) => Framing::Close,
    };
    Ok(Head::Done(
        n,
        Parsed {
            status,
            content_type,
            framing,
            keep,
        },
    ))
}

impl Reader {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, Error> {
        let r = self.step().await;
        match &r {
            Ok(None) => {
                if let Some(c) = self.conn.take()
                    && self.keep
                    && c.buf.is_empty()
                {
                    self.pool.give_back(c);
                }
            }
            Ok(Some(_)) => {}
            Err(_) => {
                self.framing = Framing::Done;
                self.conn = None;
            }
        }
        r
    }

    /// Reads more bytes; `false` at the connection's end.
    async fn fill(&mut self) -> Result<bool, Error> {
        let Some(c) = self.conn.as_mut() else {
            return Ok(false);
        };
        if c.buf.capacity() - c.buf.len() < 1024 {
            c.buf.reserve(8 << 10);
        }
        Ok(c.io.read_buf(&mut c.buf).await.map_err(Error::Io)? > 0)
    }

    fn buf(&mut self) -> &mut BytesMut {
        &mut self.conn.as_mut().expect("a connection while reading").buf
    }

    async fn step(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            if self.conn.is_none() {
                return Ok(None);
            }
            match self.framing {
                Framing::Done => return Ok(None),
                Framing::Length(0) => {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                Framing::Length(left) | Framing::Chunk(left) => {
                    let buf = self.buf();
                    if !buf.is_empty() {
                        let n = (buf.len() as u64).min(left) as usize;
                        let piece = buf.split_to(n).freeze();
                        self.framing = match self.framing {
                            Framing::Length(_) => Framing::Length(left - n as u64),
                            _ if left == n as u64 => Framing::ChunkEnd,
                            _ => Framing::Chunk(left - n as u64),
                        };
                        return Ok(Some(piece));
                    }
                    if !self.fill().await? {
                        return Err(Error::Early);
                    }
                }
                Framing::Close => {
                    let buf = self.buf();
                    if !buf.is_empty() {
                        let n = buf.len();
                        return Ok(Some(buf.split_to(n).freeze()));
                    }
                    if !self.fill().await? {
                        self.framing = Framing::Done;
                        self.conn = None;
                        return Ok(None);
                    }
                }
                Framing::ChunkSize | Framing::ChunkEnd | Framing::Trailers => {
                    let Some(line) = take_line(self.buf())? else {
                        if !self.fill().await? {
                            return Err(Error::Early);
                        }
                        continue;
                    };
                    self.framing = match self.framing {
                        Framing::ChunkEnd if !line.is_empty() => {
                            return Err(Error::Malformed("a chunk longer than its size"));
                        }
                        Framing::ChunkEnd => Framing::ChunkSize,
                        Framing::Trailers if line.is_empty() => Framing::Length(0),
                        Framing::Trailers => {
                            self.trailers += line.len() + 2;
                            if self.trailers > MAX_HEAD {
                                return Err(Error::Malformed("trailers longer than 64 KiB"));
                            }
                            Framing::Trailers
                        }
                        _ => match chunk_size(&line)? {
                            0 => Framing::Trailers,
                            n => Framing::Chunk(n),
                        },
                    };
                }
            }
        }
    }

    /// The whole body, if it is at most `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes, Error> {
        if let Framing::Length(l) = self.framing
            && l > limit as u64
        {
            return Err(Error::TooLarge(limit));
        }
        let first = match self.next().await? {
            None => return Ok(Bytes::new()),
            Some(b) => b,
        };
        if first.len() > limit {
            return Err(Error::TooLarge(limit));
        }
        // the common case: the body came whole in one read
        let Some(second) = self.next().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(b) = self.next().await? {
            if all.len() + b.len() > limit {
                return Err(Error::TooLarge(limit));
            }
            all.extend_from_slice(&b);
        }
        if all.len() > limit {
            return Err(Error::TooLarge(limit));
        }
        Ok(all.freeze())
    }
}

/// A line (without its CRLF) from the front of `buf`, if a whole one is
/// there.
fn take_line(buf: &mut BytesMut) -> Result<Option<Vec<u8>>, Error> {
    match buf.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
        Some(i) => {
            let mut line = buf.split_to(i + 1).to_vec();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE => Err(Error::Malformed("a line longer than 4 KiB")),
        None => Ok(None),
    }
}

/// A chunk-size line's size (hexadecimal, before any extension).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let hex = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or(&[])
        .trim_ascii();
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::Malformed("a chunk size that is not a number"));
    }
    std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .ok_or(Error::Malformed("a chunk size that is not a number"))
}

/// A connection to a replica handed over by its supervisor at `path`
/// ([`gigafab_exec::reach`]), without blocking a thread.
pub(crate) async fn from_supervisor(
    path: &std::path::Path,
) -> std::io::Result<std::net::TcpStream> {
    let (short, _guard) = gigafab_exec::reach::socket_path(path)?;
    let u = tokio::net::UnixStream::connect(&short).await?;
    loop {
        u.readable().await?;
        match u.try_io(tokio::io::Interest::READABLE, || {
            gigafab_exec::reach::receive(&u)
        }) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests;
