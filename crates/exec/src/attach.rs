//! A shell in a running job (`gigafab attach`), as `kubectl exec -it` or
//! `srun --pty --overlap`: a terminal whose shell runs where the job's
//! own processes do — as its account, in its cgroup, its PID, mount and
//! network namespaces, with its environment and working directory.
//!
//! The job's supervisor (root) is the one process that can start it
//! there. Before its job runs it binds [`ATTACH_SOCKET`] in the job's
//! root-owned directory (0600, peers of its own account only); for each
//! request (`ROWS COLS\n`) it opens a pseudo-terminal, starts the shell on
//! its terminal side and hands the controlling side over (`SCM_RIGHTS`).
//! The server relays it to the user; nothing the user sends reaches a
//! privileged process but as bytes on that terminal.

use std::ffi::CString;
use std::io::{self, IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

/// The supervisor's attach socket in the job's directory.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// Shells of one job open at once, at most.
pub const MAX_SHELLS: usize = 8;

/// Where and as whom a job's shells run.
#[derive(Debug, Clone, Default)]
pub struct ShellSpec {
    /// The job's environment (None: the supervisor's own).
    pub env: Option<Vec<(String, String)>>,
    pub workdir: PathBuf,
    /// The working directory is the job's own (made by the supervisor in
    /// its root-owned directory): entered before the drop to the account,
    /// as the job's command enters it. Else (one the user named) entered
    /// with the account's rights only.
    pub workdir_is_jobs: bool,
    /// (uid, gid, groups) of the job's account (None: the supervisor's).
    pub identity: Option<(u32, u32, Vec<u32>)>,
    /// The `cgroup.procs` files the job's processes are in.
    pub cgroups: Vec<PathBuf>,
}

/// The first shell found of `/bin/bash`, `/bin/sh`.
fn shell() -> &'static str {
    if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
}

/// A pseudo-terminal of `rows` × `cols`: (controlling side, terminal side).
pub fn open_pty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut m = -1;
    let mut s = -1;
    let ws = libc::winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: valid out-pointers; no name buffer; termios left default.
    let r = unsafe { libc::openpty(&mut m, &mut s, std::ptr::null_mut(), std::ptr::null(), &ws) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned here alone.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(m), OwnedFd::from_raw_fd(s)) };
    for fd in [&m, &s] {
        // SAFETY: plain fcntl on an open descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

/// Sets the size of the terminal whose controlling side is `fd`.
pub fn resize(fd: impl AsFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    if unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens `/proc/PID/ns/NAME`.
fn ns(pid: u32, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        format!("/proc/{pid}/ns/{name}"),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?)
}

/// Whether `ours` and the job's namespace `name` differ.
fn differs(pid: u32, name: &str) -> bool {
    let a = std::fs::metadata(format!("/proc/self/ns/{name}"));
    let b = std::fs::metadata(format!("/proc/{pid}/ns/{name}"));
    use std::os::unix::fs::MetadataExt;
    match (a, b) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

/// The job's mount and network namespaces (where they are its own),
/// opened once, as soon as its first process runs: never again by a pid
/// that may have been reused.
struct JobNs {
    mnt: Option<OwnedFd>,
    net: Option<OwnedFd>,
}

impl JobNs {
    fn of(pid: u32) -> io::Result<JobNs> {
        Ok(JobNs {
            mnt: differs(pid, "mnt").then(|| ns(pid, "mnt")).transpose()?,
            net: differs(pid, "net").then(|| ns(pid, "net")).transpose()?,
        })
    }
}

/// Starts a shell on terminal `tty` in the job's namespaces `job`, as
/// `spec` says.
fn start_shell(job: &JobNs, spec: &ShellSpec, tty: &OwnedFd) -> io::Result<Child> {
    let (mnt, net) = (&job.mnt, &job.net);
    // every cgroup of the job, or no shell: outside them it would escape
    // the job's limits
    let procs: Vec<std::fs::File> = spec
        .cgroups
        .iter()
        .map(|p| std::fs::OpenOptions::new().write(true).open(p))
        .collect::<io::Result<_>>()?;
    let cwd = CString::new(spec.workdir.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a NUL in the working directory"))?;
    let mut cmd = Command::new(shell());
    cmd.arg("-i");
    if let Some(env) = &spec.env {
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    cmd.env("TERM", "xterm-256color");
    cmd.stdin(Stdio::from(tty.try_clone()?))
        .stdout(Stdio::from(tty.try_clone()?))
        .stderr(Stdio::from(tty.try_clone()?));
    let ident = spec.identity.clone();
    let cwd_first = spec.workdir_is_jobs;
    let mnt_fd = mnt.as_ref().map(|f| f.as_raw_fd());
    let net_fd = net.as_ref().map(|f| f.as_raw_fd());
    let proc_fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: the closure only makes system calls on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &proc_fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(fd) = net_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if let Some(fd) = mnt_fd
                && libc::setns(fd, libc::CLONE_NEWNS) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // by its path, inside the job's mount namespace (a
            // descriptor opened outside would lead back out of it): the
            // job's own directory as root, as its command was started
            if cwd_first && libc::chdir(cwd.as_ptr()) != 0 {
                libc::chdir(c"/".as_ptr());
            }
            if let Some((uid, gid, groups)) = &ident
                && (libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0)
            {
                return Err(io::Error::last_os_error());
            }
            // one the user named: with the account's rights
            if !cwd_first && libc::chdir(cwd.as_ptr()) != 0 {
                libc::chdir(c"/".as_ptr());
            }
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // gone with the supervisor (set after the identity change,
            // which clears it)
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn()
}

/// Hands `fd` over on `c` (`1`), or says why not (`0MESSAGE`).
fn answer(c: &UnixStream, r: io::Result<OwnedFd>) {
    match r {
        Ok(fd) => {
            let fds = [fd.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut cmsg = SendAncillaryBuffer::new(&mut space);
            cmsg.push(SendAncillaryMessage::ScmRights(&fds));
            let _ = rustix::net::sendmsg(c, &[IoSlice::new(b"1")], &mut cmsg, SendFlags::NOSIGNAL);
        }
        Err(e) => {
            let mut c = c;
            let _ = c.write_all(format!("0{e}").as_bytes());
        }
    }
}

/// Reads a request, `ROWS COLS\n`, from `c`.
fn request(c: &mut UnixStream) -> io::Result<(u16, u16)> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 32];
    let mut n = 0;
    while n < buf.len() && !buf[..n].contains(&b'\n') {
        let got = c.read(&mut buf[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| io::Error::other("not text"))?;
    let mut it = text.split_whitespace().map(|x| x.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(r)), Some(Ok(c))) => Ok((r, c)),
        _ => Err(io::Error::other("expected `ROWS COLS`")),
    }
}

/// The supervisor's side, started before its job: binds
/// `dir/`[`ATTACH_SOCKET`] (0600) and returns where to send the pid of
/// the job's first process once it runs. From then on a thread of its
/// own starts a shell for each peer of the supervisor's account, at most
/// [`MAX_SHELLS`] at once, and reaps them.
///
/// The thread is made here, before the supervisor enters a PID namespace
/// for its children; it joins that namespace for its own children once
/// the job runs.
pub fn broker(dir: &Path, spec: ShellSpec) -> io::Result<std::sync::mpsc::Sender<u32>> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(ATTACH_SOCKET);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let (short, guard) = crate::reach::socket_path(&path)?;
    let listener = UnixListener::bind(&short)?;
    drop(guard);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    std::thread::Builder::new()
        .name("attach-broker".into())
        .spawn(move || {
            let Ok(pid) = rx.recv() else { return };
            let Ok(job) = JobNs::of(pid) else { return };
            // its children in the job's PID namespace (where it has one)
            if differs(pid, "pid")
                && let Ok(p) = ns(pid, "pid")
                // SAFETY: plain system call on an open descriptor.
                && unsafe { libc::setns(p.as_raw_fd(), libc::CLONE_NEWPID) } != 0
            {
                return;
            }
            let me = rustix::process::geteuid();
            let mut shells: Vec<Child> = Vec::new();
            loop {
                shells.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                // the job's first process gone: no more shells
                if !Path::new(&format!("/proc/{pid}")).exists() {
                    for c in &mut shells {
                        // each shell leads its own session: its group too
                        // SAFETY: plain kill of a child's process group.
                        unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    return;
                }
                let mut c = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    Err(_) => {
                        // out of descriptors, say: no busy loop
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                };
                let _ = c.set_nonblocking(false);
                match rustix::net::sockopt::socket_peercred(&c) {
                    Ok(cred) if cred.uid == me => {}
                    _ => continue,
                }
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                let made = (|| {
                    if shells.len() >= MAX_SHELLS {
                        return Err(io::Error::other(format!(
                            "{MAX_SHELLS} shells of this job are open already"
                        )));
                    }
                    let (rows, cols) = request(&mut c)?;
                    let (m, s) = open_pty(rows, cols)?;
                    let child = start_shell(&job, &spec, &s)?;
                    shells.push(child);
                    Ok(m)
                })();
                answer(&c, made);
            }
        })?;
    Ok(tx)
}

/// Asks the supervisor listening at `path` for a shell in its job on a
/// `rows` × `cols` terminal: the terminal's controlling side, or why not.
pub fn connect(path: &Path, rows: u16, cols: u16) -> io::Result<OwnedFd> {
    let (short, _guard) = crate::reach::socket_path(path)?;
    let mut s = UnixStream::connect(&short)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("{rows} {cols}\n").as_bytes())?;
    crate::reach::receive_fd(&s)
}
