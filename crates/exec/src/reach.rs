//! How the gateway reaches a job that serves on a port (a model
//! endpoint's replica).
//!
//! A job in a network namespace of its own (`--job-network private`) has a
//! loopback nobody else shares: no process outside the namespace can
//! connect to it, and no other job can take its port. Its supervisor,
//! which made the namespace, is the one process that can reach in. It
//! listens on a Unix socket in the job's root-owned directory
//! ([`SERVE_SOCKET`], mode 0600), accepts only its own account (root) as
//! the peer, and for each request opens a TCP connection to the job's
//! port inside the namespace and hands the connected descriptor over
//! (`SCM_RIGHTS`). The gateway then talks to the replica over that
//! connection directly: nothing relays the bytes, and nothing a tenant
//! controls is followed (no path it names, no port on a shared network).
//!
//! Jobs on the machine's network are reached at `127.0.0.1:port`.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// The supervisor's socket in the job's directory.
pub const SERVE_SOCKET: &str = "serve.sock";

/// How long the supervisor waits for the job's port to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a serving job is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// `host:port` on the gateway's network.
    Tcp(String),
    /// Through its supervisor's socket (a job with a network of its own).
    Socket(PathBuf),
}

/// A path to `dir/name` that fits in a socket address (108 bytes): the
/// path itself, or the same file through a descriptor of `dir`, kept open
/// while the returned guard lives.
fn short_path(dir: &Path, name: &str) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    let full = dir.join(name);
    if full.as_os_str().len() < 100 {
        return Ok((full, None));
    }
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    use std::os::fd::AsRawFd;
    let p = PathBuf::from(format!("/proc/self/fd/{}/{name}", fd.as_raw_fd()));
    Ok((p, Some(fd)))
}

/// A path to the supervisor's socket at `path` that fits in a socket
/// address, with the descriptor that keeps it valid (hold it until the
/// connection is made).
pub fn socket_path(path: &Path) -> io::Result<(PathBuf, Option<OwnedFd>)> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::other("not a socket path"))?;
    short_path(dir, name)
}

/// Reads the supervisor's answer on `s`, a connection to its socket: the
/// connected TCP stream, or why there is none. On a non-blocking socket
/// with nothing to read yet, `WouldBlock`.
pub fn receive(s: impl AsFd) -> io::Result<TcpStream> {
    receive_fd(s).map(TcpStream::from)
}

/// Reads a supervisor's answer on `s`: `1` and a descriptor, or `0` and
/// why there is none.
pub fn receive_fd(s: impl AsFd) -> io::Result<OwnedFd> {
    let mut buf = [0u8; 512];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        &s,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fd: Option<OwnedFd> = None;
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = m {
            for f in fds {
                fd.get_or_insert(f);
            }
        }
    }
    let said = &buf[..got.bytes.min(buf.len())];
    match (said.first(), fd) {
        (Some(b'1'), Some(fd)) => Ok(fd),
        (Some(b'0'), _) => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            String::from_utf8_lossy(&said[1..]).into_owned(),
        )),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "the job's supervisor handed over no connection",
        )),
    }
}

/// Asks the supervisor listening at `path` for a connection to its job's
/// port, waiting at most `timeout` for its answer (blocking: the gateway
/// does the same without blocking a thread).
pub fn connect(path: &Path, timeout: Duration) -> io::Result<TcpStream> {
    let (short, _guard) = socket_path(path)?;
    let s = UnixStream::connect(&short)?;
    s.set_read_timeout(Some(timeout))?;
    receive(&s)
}

/// The supervisor's side, started before its job: binds
/// `dir/`[`SERVE_SOCKET`] (0600) and returns where to send the job's
/// network namespace once it runs. From then on a thread of its own,
/// moved into that namespace, answers each peer of the supervisor's own
/// account with a connection to `port`; other peers are hung up on.
///
/// The thread is made here, before the supervisor enters a PID namespace
/// for its children (after which it could make no thread).
pub fn broker(dir: &Path, port: u16) -> io::Result<std::sync::mpsc::Sender<OwnedFd>> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SERVE_SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (short, guard) = short_path(dir, SERVE_SOCKET)?;
    let listener = UnixListener::bind(&short)?;
    drop(guard);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let (tx, rx) = std::sync::mpsc::channel::<OwnedFd>();
    std::thread::Builder::new()
        .name("serve-broker".into())
        .spawn(move || {
            let Ok(ns) = rx.recv() else { return };
            if rustix::thread::move_into_link_name_space(
                ns.as_fd(),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .is_err()
            {
                return;
            }
            drop(ns);
            let me = rustix::process::geteuid();
            let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            for conn in listener.incoming() {
                let Ok(mut c) = conn else { continue };
                match rustix::net::sockopt::socket_peercred(&c) {
                    Ok(cred) if cred.uid == me => {}
                    _ => continue,
                }
                let _ = c.set_write_timeout(Some(CONNECT_TIMEOUT));
                match TcpStream::connect_timeout(&to, CONNECT_TIMEOUT) {
                    Ok(t) => {
                        let _ = t.set_nodelay(true);
                        let fds = [t.as_fd()];
                        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                        let mut cmsg = SendAncillaryBuffer::new(&mut space);
                        cmsg.push(SendAncillaryMessage::ScmRights(&fds));
                        let _ = rustix::net::sendmsg(
                            &c,
                            &[IoSlice::new(b"1")],
                            &mut cmsg,
                            SendFlags::NOSIGNAL,
                        );
                    }
                    Err(e) => {
                        let _ = c.write_all(format!("0port {port} of the job: {e}").as_bytes());
                    }
                }
            }
        })?;
    Ok(tx)
}

/// The job's network namespace, opened from its first process (a child of
/// the caller, not yet reaped: its pid is still its own).
pub fn namespace_of(pid: u32) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        format!("/proc/{pid}/ns/net"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}
