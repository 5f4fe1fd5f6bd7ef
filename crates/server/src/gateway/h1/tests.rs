//! The client against a replica made of canned answers on a real socket.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// A server that answers the `i`-th request on a connection with
/// `answers[i]` (written in pieces of `piece` bytes), closing the
/// connection after the last one; it counts the connections it accepts.
async fn replica(
    answers: Vec<Vec<u8>>,
    piece: usize,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answers = answers.clone();
            tokio::spawn(async move {
                for a in answers {
                    if !read_request(&mut s).await {
                        return;
                    }
                    for p in a.chunks(piece.max(1)) {
                        if s.write_all(p).await.is_err() {
                            return;
                        }
                        s.flush().await.ok();
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

fn pool() -> Arc<Pool> {
    Pool::new(Arc::new(Serving::default()))
}

fn post(body: &[u8]) -> Req<'_> {
    Req {
        method: "POST",
        path: "/v1/chat/completions",
        headers: &[],
        body,
    }
}

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"a\": true}";

#[tokio::test]
async fn a_length_framed_answer_is_read_whole_and_its_connection_reused() {
    let (addr, accepted) = replica(vec![OK.to_vec(); 3], 1 << 20).await;
    let p = pool();
    for _ in 0..3 {
        let a = p.send(&addr, &post(b"{}")).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.content_type.unwrap(), "application/json");
        assert_eq!(
            &a.body.collect(1 << 20).await.unwrap()[..],
            b"{\"a\": true}"
        );
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_chunked_answer_in_small_pieces_is_decoded() {
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/event-stream\r\n\r\n5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n".to_vec();
    let (addr, accepted) = replica(vec![chunked.clone(), chunked], 3).await;
    let p = pool();
    for _ in 0..2 {
        let a = p.send(&addr, &post(b"")).await.unwrap();
        let mut r = a.body;
        let mut got = Vec::new();
        while let Some(b) = r.next().await.unwrap() {
            got.extend_from_slice(&b);
        }
        assert_eq!(got, b"hello, world");
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn interim_answers_are_skipped_and_a_close_framed_body_ends_with_the_connection() {
    let a = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nuntil the end".to_vec();
    // one answer a connection, which ends it
    let (addr, accepted) = replica(vec![a], 4).await;
    let p = pool();
    for _ in 0..2 {
        let a = p.send(&addr, &post(b"x")).await.unwrap();
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(&a.body.collect(100).await.unwrap()[..], b"until the end");
    }
    // the connection ended the body: never reused
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_replica_closed_while_idle_is_not_reused() {
    // each connection serves one answer and is closed after it
    let (addr, accepted) = replica(vec![OK.to_vec()], 1 << 20).await;
    let p = pool();
    for _ in 0..3 {
        let a = p.send(&addr, &post(b"{}")).await.unwrap();
        assert_eq!(a.body.collect(100).await.unwrap().len(), 11);
        // the replica closes it after its answer; let it
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// Reads one request (head and Content-Length body) from `s`.
async fn read_request(s: &mut TcpStream) -> bool {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = s.read(&mut b).await.unwrap_or(0);
        if n == 0 {
            return false;
        }
        got.extend_from_slice(&b[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..i]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= i + 4 + len {
                return true;
            }
        }
    }
}

#[tokio::test]
async fn an_answer_queued_ahead_of_a_request_is_never_taken_for_its_answer() {
    // the first connection answers, then sends a forged answer unasked and
    // waits; the second answers honestly
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        assert!(read_request(&mut s).await);
        s.write_all(OK).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged")
            .await
            .unwrap();
        let (mut t, _) = l.accept().await.unwrap();
        assert!(read_request(&mut t).await);
        t.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nhonest")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(s);
    });
    let p = pool();
    let a = p.send(&addr, &post(b"{}")).await.unwrap();
    assert_eq!(a.body.collect(100).await.unwrap().len(), 11);
    assert_eq!(p.idle_count(), 1, "kept alive");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let a = p.send(&addr, &post(b"{}")).await.unwrap();
    assert_eq!(&a.body.collect(100).await.unwrap()[..], b"honest");
}

#[tokio::test]
async fn a_request_written_whole_is_never_written_again() {
    // the replica reads the request and ends the connection unanswered
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        // the first connection answers once, to be kept alive
        let (mut s, _) = l.accept().await.unwrap();
        assert!(read_request(&mut s).await);
        s.write_all(OK).await.unwrap();
        loop {
            if !read_request(&mut s).await {
                break;
            }
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
            let Ok((next, _)) = l.accept().await else {
                return;
            };
            s = next;
        }
    });
    let p = pool();
    let a = p.send(&addr, &post(b"{}")).await.unwrap();
    a.body.collect(100).await.unwrap();
    let e = match p.send(&addr, &post(b"{}")).await {
        Ok(a) => a.body.collect(100).await.err().unwrap(),
        Err(e) => e,
    };
    assert!(!e.is_connect(), "{e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_answers_are_errors_not_panics() {
    let mut big_chunk = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n7d0\r\n".to_vec();
    big_chunk.extend_from_slice(&[b'a'; 2000]);
    big_chunk.extend_from_slice(b"\r\n0\r\n\r\n");
    let many_interim = b"HTTP/1.1 102 Processing\r\n\r\n".repeat(9);
    let mut endless_trailers =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n".to_vec();
    for _ in 0..20_000 {
        endless_trailers.extend_from_slice(b"x-t: 1\r\n");
    }
    for (bad, why) in [
        (&b"garbage\r\n\r\n"[..], "malformed"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n", "malformed"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n",
            "malformed",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "malformed",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "malformed",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\n\r\nshort",
            "early",
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5000\r\n\r\n", "larger"),
        (b"HTTP/1.1 101 Switching\r\n\r\n", "malformed"),
        (b"HTTP/1.1 200 OK\r\ncont", "early"),
        (&endless_trailers[..], "malformed"),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
            "malformed",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
            "malformed",
        ),
        (&big_chunk[..], "larger"),
        (&many_interim[..], "interim"),
    ] {
        let (addr, _) = replica(vec![bad.to_vec()], 1 << 20).await;
        let p = pool();
        let r = match p.send(&addr, &post(b"{}")).await {
            Ok(a) => a.body.collect(1000).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let e = r.expect_err(&String::from_utf8_lossy(bad));
        assert!(
            e.to_string().contains(why),
            "{}: {e}",
            String::from_utf8_lossy(bad)
        );
        assert!(!e.is_connect());
    }
}

#[tokio::test]
async fn no_replica_listening_is_a_connect_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let e = pool().send(&addr, &post(b"{}")).await.err().unwrap();
    assert!(e.is_connect(), "{e}");
    let e = pool()
        .send("job-1.replica", &post(b"{}"))
        .await
        .err()
        .unwrap();
    assert!(e.is_connect(), "{e}");
}

#[test]
fn the_request_head_names_its_host_headers_and_length() {
    let v = HeaderValue::from_static("Bearer s");
    let mut out = Vec::new();
    write_head(
        &mut out,
        "10.0.0.1:80",
        &Req {
            method: "POST",
            path: "/v1/embeddings",
            headers: &[("authorization", &v)],
            body: b"{}",
        },
    );
    assert_eq!(
        out,
        b"POST /v1/embeddings HTTP/1.1\r\nhost: 10.0.0.1:80\r\nauthorization: Bearer s\r\ncontent-length: 2\r\n\r\n"
    );
    write_head(
        &mut out,
        "h:1",
        &Req {
            method: "GET",
            path: "/health",
            headers: &[],
            body: b"",
        },
    );
    assert_eq!(out, b"GET /health HTTP/1.1\r\nhost: h:1\r\n\r\n");
}
