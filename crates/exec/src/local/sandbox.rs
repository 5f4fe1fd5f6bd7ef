//! A job's confinement, set up by its supervisor between fork and exec:
//! cgroups, namespaces (mount, PID with a small init, network), its own
//! /tmp, /dev/shm and /run/lock, read-only inputs, hidden devices, and the
//! drop to its account.

use super::*;

/// A pipe, both ends close-on-exec: (read, write).
pub(super) fn pipe_cloexec() -> io::Result<(File, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just opened and are owned here alone.
    Ok(unsafe {
        (
            File::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// Sets up, for the child between fork and exec: entering the cgroup (as
/// root); a mount namespace (other jobs' devices hidden, inputs bound
/// read-only at their mount points, the job's own /tmp, /var/tmp,
/// /dev/shm and /run/lock, and with `init_status` the /proc of its own PID
/// namespace); a network namespace with only its loopback where asked; the
/// account's groups and gid, the working directory entered with the
/// account's file rights (setfsuid), the account's uid for good; then,
/// with `init_status`, a fork: the child goes on to run the command, the
/// parent stays as the PID namespace's init. Everything it runs there is
/// async-signal-safe (plain syscalls on prepared data).
#[allow(clippy::too_many_arguments)]
pub(super) fn prepare_exec(
    cmd: &mut Command,
    workdir: &Path,
    identity: Option<&(u32, u32, Vec<u32>)>,
    cgroup_procs: Vec<&File>,
    max_file_bytes: Option<u64>,
    hide_devices: &[PathBuf],
    caps: Option<&CapsMask>,
    read_only: &[(PathBuf, PathBuf)],
    private_tmp: Option<&Path>,
    init_status: Option<&std::os::fd::OwnedFd>,
    private_network: bool,
    cwd_late: bool,
) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL in a path"))
    };
    // the job's own /tmp and /var/tmp (its directory's tmp/, counted in its
    // disk use) and a /dev/shm of its own: nothing another job can see
    let tmp = match private_tmp {
        Some(t) => Some((
            cstr(t)?,
            ["/tmp", "/var/tmp"]
                .iter()
                .filter(|d| Path::new(d).is_dir())
                .map(|d| cstr(Path::new(d)))
                .collect::<io::Result<Vec<_>>>()?,
        )),
        None => None,
    };
    let shm = Path::new("/dev/shm")
        .is_dir()
        .then(|| CString::new("/dev/shm").expect("no NUL"));
    // a lock directory of its own (shared on the host, it outlives jobs)
    let run_lock = (private_tmp.is_some() && Path::new("/run/lock").is_dir())
        .then(|| CString::new("/run/lock").expect("no NUL"));
    let tmpfs = CString::new("tmpfs").expect("no NUL");
    let shm_opts = CString::new("mode=1777").expect("no NUL");
    let lock_opts = CString::new("mode=1777,size=1m").expect("no NUL");
    let proc_ = CString::new("proc").expect("no NUL");
    let proc_dir = CString::new("/proc").expect("no NUL");
    let cwd = CString::new(workdir.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("a NUL in the working directory"))?;
    let fds: Vec<i32> = cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
    let hide: Vec<CString> = hide_devices
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| io::Error::other("a NUL in a device path"))?;
    // NVIDIA's capability directory, in the job's view: a read-only tmpfs
    // holding its own capabilities' device nodes and nothing else (what
    // the driver makes there later, on the host, is not seen)
    // (the directory, each node's path, mode and device number)
    type Nodes = Vec<(CString, u32, u64)>;
    let caps_mask: Option<(CString, Nodes)> = match caps {
        Some(m) => Some((
            cstr(&m.dir)?,
            m.caps
                .iter()
                .map(|&(major, minor, mode)| {
                    Ok((
                        cstr(&m.dir.join(format!("nvidia-cap{minor}")))?,
                        mode,
                        libc::makedev(major, minor),
                    ))
                })
                .collect::<io::Result<_>>()?,
        )),
        None => None,
    };
    let caps_opts = CString::new("mode=755,size=64k").expect("no NUL");
    // read-only binds need root (a mount namespace); without it the
    // inputs' file modes are what keeps them unchanged
    let is_root = unsafe { libc::geteuid() } == 0;
    let ro: Vec<(CString, CString)> = if is_root {
        read_only
            .iter()
            .filter(|(from, to)| from.is_dir() && to.is_dir())
            .map(|(from, to)| Ok((cstr(from)?, cstr(to)?)))
            .collect::<io::Result<_>>()?
    } else {
        Vec::new()
    };
    let root = CString::new("/").expect("no NUL");
    let null = CString::new("/dev/null").expect("no NUL");
    let ident = identity.cloned();
    let init = init_status.map(|f| f.as_raw_fd());
    let mut namespaces = 0;
    if !hide.is_empty() || tmp.is_some() || !ro.is_empty() || init.is_some() || caps_mask.is_some()
    {
        namespaces |= libc::CLONE_NEWNS;
    }
    if private_network {
        namespaces |= libc::CLONE_NEWNET;
    }
    // SAFETY: the closure only makes syscalls on data prepared before the
    // fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &fds {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if namespaces != 0 && libc::unshare(namespaces) != 0 {
                return Err(io::Error::last_os_error());
            }
            if namespaces & libc::CLONE_NEWNET != 0 {
                // its own loopback, up
                let mut lo: libc::ifreq = std::mem::zeroed();
                lo.ifr_name[0] = b'l' as libc::c_char;
                lo.ifr_name[1] = b'o' as libc::c_char;
                lo.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if sock < 0 || libc::ioctl(sock, libc::SIOCSIFFLAGS, &lo) != 0 {
                    return Err(io::Error::last_os_error());
                }
                libc::close(sock);
            }
            if namespaces & libc::CLONE_NEWNS != 0 {
                // a mount namespace of its own, where the other jobs'
                // device files are /dev/null and /tmp is the job's own
                // (before dropping root)
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if init.is_some()
                    && libc::mount(
                        proc_.as_ptr(),
                        proc_dir.as_ptr(),
                        proc_.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                for p in &hide {
                    if libc::mount(
                        null.as_ptr(),
                        p.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                if let Some((dir, nodes)) = &caps_mask {
                    let ro_flags = libc::MS_NOSUID | libc::MS_NOEXEC;
                    if libc::mount(
                        tmpfs.as_ptr(),
                        dir.as_ptr(),
                        tmpfs.as_ptr(),
                        ro_flags,
                        caps_opts.as_ptr().cast(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    for (path, mode, dev) in nodes {
                        if libc::mknod(path.as_ptr(), libc::S_IFCHR | mode, *dev) != 0
                            || libc::chmod(path.as_ptr(), *mode) != 0
                        {
                            return Err(io::Error::last_os_error());
                        }
                    }
                    if libc::mount(
                        std::ptr::null(),
                        dir.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REMOUNT | libc::MS_RDONLY | ro_flags,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    // no set-user-ID helper (the driver's nvidia-modprobe)
                    // may make or mount capabilities for it
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // each input bound at its mount point, then made read-only
                for (from, to) in &ro {
                    if libc::mount(
                        from.as_ptr(),
                        to.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) != 0
                        || libc::mount(
                            std::ptr::null(),
                            to.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND
                                | libc::MS_REMOUNT
                                | libc::MS_RDONLY
                                | libc::MS_NOSUID
                                | libc::MS_NODEV,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            // the job's own directory is entered before /tmp is replaced
            // (it may lie under /tmp); a working directory it names, after
            // (a path under /tmp is in its own /tmp)
            if !cwd_late && enter(&cwd, &ident).is_err() {
                return Err(io::Error::last_os_error());
            }
            if let Some((own, targets)) = &tmp {
                // the first target becomes the job's tmp, the next ones are
                // bound to it (its path may have been under the first)
                let mut source = own.as_ptr();
                for t in targets {
                    if libc::mount(
                        source,
                        t.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    source = t.as_ptr();
                }
                if let Some(shm) = &shm
                    && libc::mount(
                        tmpfs.as_ptr(),
                        shm.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        shm_opts.as_ptr().cast(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(lock) = &run_lock
                    && libc::mount(
                        tmpfs.as_ptr(),
                        lock.as_ptr(),
                        tmpfs.as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        lock_opts.as_ptr().cast(),
                    ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            if cwd_late && enter(&cwd, &ident).is_err() {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, _, _)) = &ident {
                if libc::setuid(*uid) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // no way back
                if libc::setuid(0) == 0 {
                    return Err(io::Error::other("could not drop root"));
                }
                libc::umask(0o022);
            }
            if let Some(max) = max_file_bytes {
                let lim = libc::rlimit {
                    rlim_cur: max as libc::rlim_t,
                    rlim_max: max as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(status_fd) = init {
                let command = libc::fork();
                if command < 0 {
                    return Err(io::Error::last_os_error());
                }
                if command == 0 {
                    // the command (its pid 2): exec follows
                    return Ok(());
                }
                run_init(command, status_fd);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Enters `cwd` with the account's rights (its file-system uid and groups,
/// which stay set; the uid itself is dropped later), or as this process
/// without an account. -1 on failure, errno set. Async-signal-safe.
unsafe fn enter(cwd: &std::ffi::CStr, ident: &Option<(u32, u32, Vec<u32>)>) -> Result<(), ()> {
    unsafe {
        if let Some((uid, gid, groups)) = ident {
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0 || libc::setgid(*gid) != 0 {
                return Err(());
            }
            libc::setfsuid(*uid);
            if libc::setfsuid(u32::MAX) as u32 != *uid {
                *libc::__errno_location() = libc::EPERM;
                return Err(());
            }
            let moved = libc::chdir(cwd.as_ptr());
            let errno = *libc::__errno_location();
            libc::setfsuid(0);
            *libc::__errno_location() = errno;
            if moved != 0 {
                return Err(());
            }
        } else if libc::chdir(cwd.as_ptr()) != 0 {
            return Err(());
        }
        Ok(())
    }
}

/// The init (pid 1) of a job's PID namespace, as the job's account: keeps
/// no descriptor but `status_fd` (so that the spawner sees the command's
/// exec), ignores the stop signals (the supervisor signals the command's
/// process group; SIGKILL from outside still ends it), reaps every orphan,
/// and when `command` ends writes its wait status to `status_fd` and
/// exits, which ends every process left in the namespace. Only
/// async-signal-safe calls.
unsafe fn run_init(command: libc::pid_t, status_fd: i32) -> ! {
    unsafe {
        for fd in 3..status_fd {
            libc::close(fd);
        }
        if libc::syscall(libc::SYS_close_range, status_fd + 1, u32::MAX, 0) != 0 {
            for fd in status_fd + 1..4096 {
                libc::close(fd);
            }
        }
        for signal in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
        ] {
            libc::signal(signal, libc::SIG_IGN);
        }
        loop {
            let mut status: libc::c_int = 0;
            let pid = libc::waitpid(-1, &mut status, 0);
            if pid == command {
                let bytes = status.to_ne_bytes();
                libc::write(status_fd, bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
            if pid < 0 && *libc::__errno_location() != libc::EINTR {
                libc::_exit(1);
            }
        }
    }
}
