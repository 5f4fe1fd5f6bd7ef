//! The object-store path against a real S3-compatible server: the Python
//! `moto` server (`pip install 'moto[server]'`), started by the test on a
//! free port. CI runs it (`.ci/run`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gigafab_catalog::store::{new_key, Blobs};
use gigafab_catalog::{hash_tree, Error};

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One plain HTTP request to the server: its status line.
fn http(port: u16, req: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(req.as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.lines().next().unwrap_or("").to_string())
}

fn start_moto() -> (Moto, u16) {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server is not installed: pip install 'moto[server]'");
    let moto = Moto(child);
    let t = Instant::now();
    while http(
        port,
        "GET /moto-api/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .is_err()
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (moto, port)
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gigafab-s3-{tag}-{}", std::process::id()));
    let _ = Command::new("chmod").args(["-R", "u+w"]).arg(&d).status();
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
#[ignore = "needs the moto S3 server: pip install 'moto[server]'; CI runs it"]
async fn versions_in_a_real_s3_server() {
    let (_moto, port) = start_moto();
    let status = http(
        port,
        "PUT /catalog HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert!(status.contains("200"), "create bucket: {status}");
    // the server's environment, as the AWS tools read it
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
    }
    let src = tmp("src");
    std::fs::create_dir_all(src.join("weights")).unwrap();
    // a file larger than one multipart part (object_store's 10 MiB)
    let big: Vec<u8> = (0..12_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(src.join("weights/model.safetensors"), &big).unwrap();
    std::fs::write(src.join("config.json"), b"{\"layers\": 2}").unwrap();
    let m = hash_tree(&src, 2).unwrap();
    let cache = tmp("cache");
    let b = Blobs::open("s3://catalog", &cache).unwrap();
    assert_eq!(b.name(), "s3://catalog");
    let key = new_key();
    b.put_tree(&src, &m, &key).await.unwrap();
    assert!(b.verify(&key, &m, 2).await.unwrap().is_empty());
    // fetched for a job: the same tree, checked file by file
    let local = b.local_tree(&key, &m).await.unwrap();
    assert!(local.starts_with(&cache));
    assert_eq!(hash_tree(&local, 2).unwrap(), m);
    // a missing bucket is a clear error
    let nob = Blobs::open("s3://no-such-bucket", &cache).unwrap();
    let e = nob.put_tree(&src, &m, &new_key()).await.unwrap_err();
    assert!(matches!(e, Error::Store(_)), "{e}");
    b.remove(&key).await.unwrap();
    let p = b.verify(&key, &m, 1).await.unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|p| p.kind == "missing"));
}
