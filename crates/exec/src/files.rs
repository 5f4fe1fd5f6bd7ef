//! A job's files as its account sees them (the portal's file browser and
//! `/api/v1/jobs/{id}/files`): list a directory, read a file, write one.
//!
//! Each operation runs in a thread of its own with the account's
//! file-system rights (its fsuid, fsgid and groups, a thread's own at the
//! system call level; the thread ends after), so the server reaches
//! nothing the job's account could not. Paths are resolved beneath the
//! job's working directory with `openat2` (`RESOLVE_BENEATH`,
//! `RESOLVE_NO_SYMLINKS`, `RESOLVE_NO_MAGICLINKS`): no `..`, absolute
//! path or link, the job's own included, leads anywhere else.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Where a job's files are browsed, as its engine says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesRoot {
    /// Its working directory.
    pub dir: PathBuf,
    /// Uploads may go there (a job run as its account).
    pub writable: bool,
    /// It is the job's own directory, under its disk limit (not one its
    /// user named, under that file system's own quotas).
    pub counted: bool,
}

use rustix::fs::{Dir, FileType, Mode, OFlags, ResolveFlags};

use crate::posix::Account;

/// Most entries of one listing.
pub const MAX_ENTRIES: usize = 10_000;

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub dir: bool,
    /// Bytes (files), 0 (the rest).
    pub size: u64,
    /// Last change, seconds since the epoch.
    pub modified_s: i64,
}

/// Runs `f` in a thread of its own with `who`'s file-system rights (None:
/// this process's): its groups, fsgid and fsuid, and no capability left
/// (root's others, such as reading any process's memory map, would still
/// reach past the account's). Credentials and capabilities are a thread's
/// own at the system call level; the thread ends after `f`.
pub(crate) fn as_account<T: Send + 'static>(
    who: Option<&Account>,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ids = who.map(|a| (a.uid, a.gid, a.groups.clone()));
    std::thread::spawn(move || {
        if let Some((uid, gid, groups)) = &ids {
            become_account(*uid, *gid, groups)?;
        }
        f()
    })
    .join()
    .map_err(|_| io::Error::other("the file operation failed"))?
}

/// This thread takes `uid`'s file-system identity and drops every
/// capability.
fn become_account(uid: u32, gid: u32, groups: &[u32]) -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: raw system calls on this thread alone, with valid pointers.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        // both answer the previous id: asked again with -1, they say
        // whether the change took
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
        if libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 != gid
            || libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 != uid
        {
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        let header = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let none = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &header, none.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `rel` if it is a path beneath a directory: relative, no NUL, no `..`.
fn relative(rel: &str) -> io::Result<String> {
    let rel = rel.trim_start_matches("./");
    if rel.len() > 4096
        || rel.contains('\0')
        || rel.starts_with('/')
        || rel.split('/').any(|c| c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a path inside the directory (no `..`, not absolute)",
        ));
    }
    Ok(if rel.is_empty() {
        ".".into()
    } else {
        rel.into()
    })
}

/// Opens `rel` beneath `root` without following any link.
fn open_beneath(root: &Path, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
    let top = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::openat2(
        &top,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// The entries of directory `rel` beneath `root`, directories first, then
/// by name ([`MAX_ENTRIES`] at most), as `who` sees them.
pub fn list(who: Option<&Account>, root: &Path, rel: &str) -> io::Result<Vec<Entry>> {
    let (root, rel) = (root.to_path_buf(), relative(rel)?);
    as_account(who, move || {
        let fd = open_beneath(
            &root,
            &rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        let mut out = Vec::new();
        for ent in Dir::read_from(&fd)? {
            let ent = ent?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let Ok(st) =
                rustix::fs::statat(&fd, ent.file_name(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let kind = FileType::from_raw_mode(st.st_mode);
            out.push(Entry {
                name,
                dir: kind == FileType::Directory,
                size: if kind == FileType::RegularFile {
                    st.st_size as u64
                } else {
                    0
                },
                modified_s: st.st_mtime,
            });
            if out.len() >= MAX_ENTRIES {
                break;
            }
        }
        out.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
        Ok(out)
    })
}

/// At most `max` bytes of regular file `rel` beneath `root`, and its size,
/// as `who` reads it.
pub fn read(who: Option<&Account>, root: &Path, rel: &str, max: u64) -> io::Result<(Vec<u8>, u64)> {
    read_up_to(who, root, rel, max, true)
}

/// The first `max` bytes of regular file `rel` beneath `root` (a
/// preview, whatever its size), and its size, as `who` reads it.
pub fn read_start(
    who: Option<&Account>,
    root: &Path,
    rel: &str,
    max: u64,
) -> io::Result<(Vec<u8>, u64)> {
    read_up_to(who, root, rel, max, false)
}

/// Regular file `rel` beneath `root` as `who` reads it: its first `max`
/// bytes and its size; nothing read at all where it is larger and
/// `whole` (the caller says it is too large).
fn read_up_to(
    who: Option<&Account>,
    root: &Path,
    rel: &str,
    max: u64,
    whole: bool,
) -> io::Result<(Vec<u8>, u64)> {
    let (root, rel) = (root.to_path_buf(), relative(rel)?);
    as_account(who, move || {
        // non-blocking: a FIFO does not hang the server
        let fd = open_beneath(
            &root,
            &rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        let st = rustix::fs::fstat(&fd)?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let size = st.st_size as u64;
        if whole && size > max {
            return Ok((Vec::new(), size));
        }
        let mut out = Vec::with_capacity(size.min(max) as usize);
        (&mut std::fs::File::from(fd))
            .take(max)
            .read_to_end(&mut out)?;
        Ok((out, size))
    })
}

/// Writes `data` as regular file `rel` beneath `root` (made, or replaced
/// whole), as `who`: its parent must exist; nothing is created where the
/// account could not. The bytes go to a new file beside it, renamed over
/// it once whole: a write that fails half-way (no room) leaves the old
/// file as it was, and no reader sees a cut one. A new file gets `mode`
/// (the server's umask aside: a project space's files are its group's
/// too); one it replaces keeps its mode.
pub fn write(
    who: Option<&Account>,
    root: &Path,
    rel: &str,
    data: &[u8],
    mode: u32,
) -> io::Result<()> {
    let (root, rel) = (root.to_path_buf(), relative(rel)?);
    let (parent, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p.to_string(), n.to_string()),
        None => (".".to_string(), rel.clone()),
    };
    if rel == "." || name.is_empty() || name == "." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a file name is needed",
        ));
    }
    // the thread's own copy
    let data = data.to_vec();
    as_account(who, move || {
        let dir = open_beneath(
            &root,
            &parent,
            OFlags::PATH | OFlags::DIRECTORY,
            Mode::empty(),
        )?;
        // what it replaces: a regular file (its mode kept), or nothing
        let mode =
            match rustix::fs::statat(&dir, name.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile => {
                    Mode::from_raw_mode(st.st_mode & 0o7777)
                }
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                    return Err(io::Error::from_raw_os_error(libc::EISDIR));
                }
                Ok(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "not a regular file",
                    ));
                }
                Err(e) if e == rustix::io::Errno::NOENT => Mode::from_raw_mode(mode & 0o777),
                Err(e) => return Err(e.into()),
            };
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (tmp, fd) = loop {
            let tmp = format!(
                ".{}.upload-{}-{}",
                name.chars().take(64).collect::<String>(),
                std::process::id(),
                SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            match rustix::fs::openat(
                &dir,
                tmp.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                mode,
            ) {
                Ok(fd) => break (tmp, fd),
                Err(e) if e == rustix::io::Errno::EXIST => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let written = (|| -> io::Result<()> {
            rustix::fs::fchmod(&fd, mode)?;
            let mut f = std::fs::File::from(fd);
            f.write_all(&data)?;
            f.sync_data()?;
            rustix::fs::renameat(&dir, tmp.as_str(), &dir, name.as_str())?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), rustix::fs::AtFlags::empty());
        }
        written
    })
}

/// Makes directory `name` (an organisation's project space) in `root`,
/// unless it exists: owned by `owner` (its uid and primary group), mode
/// 2770 (its files take the group: members with accounts of their own in
/// that group share them), or by this process, 0700, without an owner.
/// `root` must be writable by this process alone (else a tenant could put
/// a link in its place); the new directory is changed through a
/// descriptor opened without following links. Returns its path.
pub fn ensure_space(root: &Path, name: &str, owner: Option<&Account>) -> io::Result<PathBuf> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` cannot name a directory"),
        ));
    }
    // its parent is the operator's to make (with the modes that let jobs'
    // accounts through); it is made 0711 (no listing of organisations)
    let made_root = match std::fs::create_dir(root) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    // not through a link (one planted where the operator's path ends)
    let top = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if made_root {
        rustix::fs::fchmod(&top, Mode::from_raw_mode(0o711))?;
    }
    let st = rustix::fs::fstat(&top)?;
    if st.st_mode & 0o022 != 0 || st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{}: must be this server's and writable by it alone (tenants could put links there)",
                root.display()
            ),
        ));
    }
    let made = match rustix::fs::mkdirat(&top, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => true,
        Err(e) if e == rustix::io::Errno::EXIST => false,
        Err(e) => return Err(e.into()),
    };
    let dir = rustix::fs::openat(
        &top,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if let Some(a) = owner {
        let st = rustix::fs::fstat(&dir)?;
        let me = rustix::process::geteuid().as_raw();
        if made || (st.st_uid == me && st.st_uid != a.uid) {
            // made now, or left half-made (a stop between mkdir and chown)
            rustix::fs::fchown(
                &dir,
                Some(rustix::process::Uid::from_raw(a.uid)),
                Some(rustix::process::Gid::from_raw(a.gid)),
            )?;
            rustix::fs::fchmod(&dir, Mode::from_raw_mode(0o2770))?;
        } else if st.st_uid != a.uid {
            // another account's: never handed to this organisation
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{}: owned by uid {}, not by the organisation's account `{}` (uid {}); its owner changed in --job-accounts? Move it aside or chown it",
                    root.join(name).display(),
                    st.st_uid,
                    a.name,
                    a.uid
                ),
            ));
        }
    }
    Ok(root.join(name))
}
