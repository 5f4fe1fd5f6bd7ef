//! gigafab's data and model catalog, the content side: a version of a
//! dataset or a model is a tree of files pinned by content. Its
//! [`Manifest`] lists every file with its size and sha256, and the
//! manifest's own hash names the version: change one byte and it is
//! another version.
//!
//! - [`hash_tree`] walks a directory and hashes its files in parallel,
//!   each streamed through a fixed buffer (no file is read whole), and
//!   refuses what a catalog must not take: symbolic links (out of the tree
//!   or not), devices, pipes and sockets, names that are not plain
//!   relative paths.
//! - [`verify_tree`] hashes a tree again against its manifest and reports
//!   each corrupt, missing or extra file.
//! - [`store::Blobs`] keeps versions in a site's store, a directory or an
//!   S3 object store behind the same `object_store` trait.
//!
//! The catalog's records (entries, versions, aliases, access, residency,
//! lineage) are the server's; this crate holds no state.

pub mod store;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most files in one version.
pub const MAX_FILES: usize = 1_000_000;
/// Longest relative path of a file, bytes.
pub const MAX_PATH: usize = 4096;
/// Deepest directory nesting [`take_tree`] walks (one descriptor a level).
pub const MAX_DEPTH: usize = 256;
/// Bytes read at a time from a file.
const BUF: usize = 1 << 20;

/// What the catalog refuses, each naming the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{0}`: not found")]
    NotFound(String),
    #[error("`{0}`: not a directory")]
    NotADirectory(String),
    #[error("`{path}`: a symbolic link{}; copy the file into the tree instead", if *.out_of_tree { " pointing out of the tree" } else { "" })]
    Symlink { path: String, out_of_tree: bool },
    #[error("`{0}`: not a regular file (a device, pipe or socket)")]
    SpecialFile(String),
    #[error("`{path}`: bad name: {why}")]
    BadName { path: String, why: &'static str },
    #[error("the tree has more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("the tree has no file")]
    Empty,
    #[error("`{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}`: changed while it was read (size {expected}, now {found})")]
    Changed {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("`{0}`: a process still has it open for writing (close it before the job ends)")]
    OpenForWriting(String),
    #[error("the tree is more than {MAX_DEPTH} directories deep")]
    TooDeep,
    #[error("store: {0}")]
    Store(String),
    #[error("`{path}`: its content does not match the manifest ({why})")]
    Mismatch { path: String, why: String },
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative, `/`-separated, as checked by [`check_path`].
    pub path: String,
    pub size: u64,
    /// Hex sha256 of its bytes.
    pub sha256: String,
}

/// The files of a version, sorted by path, and the hash that pins them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: Vec<FileEntry>,
    /// Hex sha256 of the manifest's canonical text ([`Manifest::canonical`]).
    pub hash: String,
    pub bytes: u64,
}

impl Manifest {
    /// A manifest of `files` (sorted here), with its hash; each path is
    /// checked, and a path given twice is refused.
    pub fn new(mut files: Vec<FileEntry>) -> Result<Manifest, Error> {
        if files.is_empty() {
            return Err(Error::Empty);
        }
        if files.len() > MAX_FILES {
            return Err(Error::TooManyFiles);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for w in files.windows(2) {
            if w[0].path == w[1].path {
                return Err(Error::BadName {
                    path: w[1].path.clone(),
                    why: "given twice",
                });
            }
        }
        // a file and a directory of the same name cannot both exist
        let names: std::collections::HashSet<&str> =
            files.iter().map(|f| f.path.as_str()).collect();
        for f in &files {
            for (i, _) in f.path.match_indices('/') {
                if names.contains(&f.path[..i]) {
                    return Err(Error::BadName {
                        path: f.path.clone(),
                        why: "under a path that is a file",
                    });
                }
            }
        }
        for f in &files {
            check_path(&f.path)?;
            if f.sha256.len() != 64
                || !f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            {
                return Err(Error::BadName {
                    path: f.path.clone(),
                    why: "its sha256 is not 64 lower-case hex digits",
                });
            }
        }
        // sizes a client declares: their total must fit (an i64 in the store)
        let bytes = files
            .iter()
            .try_fold(0u64, |a, f| a.checked_add(f.size))
            .filter(|b| *b <= i64::MAX as u64)
            .ok_or(Error::BadName {
                path: String::new(),
                why: "the sizes add up to more than 2^63 bytes",
            })?;
        let hash = hex::encode(Sha256::digest(Manifest::canonical_of(&files).as_bytes()));
        Ok(Manifest { files, hash, bytes })
    }

    fn canonical_of(files: &[FileEntry]) -> String {
        let mut s = String::with_capacity(files.len() * 96);
        for f in files {
            s.push_str(&f.sha256);
            s.push(' ');
            s.push_str(&f.size.to_string());
            s.push(' ');
            s.push_str(&f.path);
            s.push('\n');
        }
        s
    }

    /// The text the hash is of: one line per file, `SHA256 SIZE PATH`,
    /// sorted by path (the same as `sha256sum`'s with the size added).
    pub fn canonical(&self) -> String {
        Manifest::canonical_of(&self.files)
    }
}

/// Checks a file's relative path: UTF-8 (it is a `str`), `/`-separated,
/// no empty, `.` or `..` component, not absolute, no NUL, backslash or
/// control character, at most [`MAX_PATH`] bytes and 255 a component.
pub fn check_path(path: &str) -> Result<(), Error> {
    let bad = |why| {
        Err(Error::BadName {
            path: path.chars().take(256).collect(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH {
        return bad("longer than 4096 bytes");
    }
    if path.starts_with('/') {
        return bad("absolute");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return bad("a control character or a backslash");
    }
    for c in path.split('/') {
        match c {
            "" => return bad("an empty component"),
            "." | ".." => return bad("a `.` or `..` component"),
            c if c.len() > 255 => return bad("a component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// The regular files under `root`, as (relative path, size), sorted.
pub fn list_tree(root: &Path) -> Result<Vec<(String, u64)>, Error> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(root.display().to_string()),
        _ => io(root, e),
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(root.display().to_string()));
    }
    let mut out = Vec::new();
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| io(&dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| io(&dir, e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::BadName {
                    path: format!("{rel}{}", name.to_string_lossy()),
                    why: "not UTF-8",
                });
            };
            let rp = format!("{rel}{name}");
            check_path(&rp)?;
            let ft = ent.file_type().map_err(|e| io(&ent.path(), e))?;
            if ft.is_symlink() {
                let out_of_tree = match std::fs::canonicalize(ent.path()) {
                    Ok(t) => std::fs::canonicalize(root).map_or(true, |r| !t.starts_with(r)),
                    Err(_) => true,
                };
                return Err(Error::Symlink {
                    path: rp,
                    out_of_tree,
                });
            } else if ft.is_dir() {
                stack.push((ent.path(), format!("{rp}/")));
            } else if ft.is_file() {
                let m = ent.metadata().map_err(|e| io(&ent.path(), e))?;
                out.push((rp, m.len()));
                if out.len() > MAX_FILES {
                    return Err(Error::TooManyFiles);
                }
            } else {
                return Err(Error::SpecialFile(rp));
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Empty);
    }
    out.sort();
    Ok(out)
}

/// Opens `path` for reading without following a symbolic link at its
/// last component (a tree may change between its walk and its reading).
pub fn open_nofollow(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| {
            // a pipe or device put in a file's place is not read
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(std::io::Error::other("not a regular file"))
            }
        })
}

/// Takes the tree at `root` (a tenant's, moved where the tenant cannot
/// name it) out of the tenant's reach before anything reads it: every
/// directory, from the top down and before its entries are read, becomes
/// this process's and 0700, so that a process of the tenant's that kept
/// a working directory or a descriptor inside the tree can no longer add,
/// remove or swap an entry; then every regular file with a single link
/// becomes this process's, 0400. Everything goes through descriptors
/// opened without following links (a link is never followed; links,
/// special files and hard-linked files are left as they are, for
/// [`hash_tree`] and the caller to refuse).
///
/// Returns the number of files taken.
pub fn take_tree(root: &Path) -> Result<usize, Error> {
    use rustix::fs::{fchmod, fchown, fstat, openat, statat, Dir, FileType, Mode, OFlags};
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, OwnedFd};
    let me = (rustix::process::geteuid(), rustix::process::getegid());
    let errno = |p: &Path, e: rustix::io::Errno| io(p, std::io::Error::from(e));
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let seal = |fd: &OwnedFd, p: &Path, mode: u32| -> Result<(), Error> {
        fchown(fd, Some(me.0), Some(me.1)).map_err(|e| errno(p, e))?;
        fchmod(fd, Mode::from_raw_mode(mode)).map_err(|e| errno(p, e))
    };
    // a sealed directory's entries, read once (they cannot change now)
    let entries = |fd: &OwnedFd, p: &Path| -> Result<Vec<CString>, Error> {
        let mut names = Vec::new();
        for ent in Dir::read_from(fd).map_err(|e| errno(p, e))? {
            let ent = ent.map_err(|e| errno(p, e))?;
            let name = ent.file_name();
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    };
    let top = openat(rustix::fs::CWD, root, dir_flags, Mode::empty()).map_err(|e| match e {
        rustix::io::Errno::NOENT => Error::NotFound(root.display().to_string()),
        rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => {
            Error::NotADirectory(root.display().to_string())
        }
        e => errno(root, e),
    })?;
    seal(&top, root, 0o700)?;
    let names = entries(&top, root)?;
    let mut taken = 0usize;
    // depth first, one descriptor per level of the path walked
    let mut stack: Vec<(OwnedFd, PathBuf, std::vec::IntoIter<CString>)> =
        vec![(top, root.to_path_buf(), names.into_iter())];
    while let Some((dir, path, names)) = stack.last_mut() {
        let Some(name) = names.next() else {
            stack.pop();
            continue;
        };
        let p = path
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(name.as_bytes()));
        let st = statat(
            &*dir,
            name.as_c_str(),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| errno(&p, e))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Directory => {
                let sub = openat(&*dir, name.as_c_str(), dir_flags, Mode::empty())
                    .map_err(|e| errno(&p, e))?;
                seal(&sub, &p, 0o700)?;
                let names = entries(&sub, &p)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(Error::TooDeep);
                }
                stack.push((sub, p, names.into_iter()));
            }
            FileType::RegularFile if st.st_nlink == 1 => {
                let f = openat(
                    &*dir,
                    name.as_c_str(),
                    OFlags::RDONLY
                        | OFlags::NOFOLLOW
                        | OFlags::NONBLOCK
                        | OFlags::NOCTTY
                        | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| errno(&p, e))?;
                // the same file as listed (the directory is sealed)
                let now = fstat(&f).map_err(|e| errno(&p, e))?;
                if now.st_ino != st.st_ino || now.st_dev != st.st_dev || now.st_nlink != 1 {
                    return Err(Error::Changed {
                        path: p.display().to_string(),
                        expected: st.st_size as u64,
                        found: now.st_size as u64,
                    });
                }
                seal(&f, &p, 0o400)?;
                // no process may still write it (a descriptor or a shared
                // mapping opened before the seal): a read lease is refused
                // while the file is open for writing anywhere
                // SAFETY: plain fcntl on a descriptor we own.
                let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) };
                if r != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(match e.raw_os_error() {
                        Some(libc::EAGAIN) => Error::OpenForWriting(p.display().to_string()),
                        _ => io(&p, e),
                    });
                }
                // SAFETY: as above.
                unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
                taken += 1;
            }
            _ => {}
        }
    }
    Ok(taken)
}

/// The sha256 and length of what `r` reads to its end, through `buf`.
pub fn hash_reader(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<(String, u64)> {
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let k = match r.read(buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

/// Hashes `files` (relative to `root`) on `threads` threads, each file
/// streamed; a file whose size changed since it was listed is refused.
/// The result is in the order of `files`.
pub fn hash_files(
    root: &Path,
    files: &[(String, u64)],
    threads: usize,
) -> Result<Vec<FileEntry>, Error> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<String>>> = (0..files.len()).map(|_| Mutex::new(None)).collect();
    let first_err: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    let threads = threads.clamp(1, 64).min(files.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut buf = vec![0u8; BUF];
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, size)) = files.get(i) else {
                        return;
                    };
                    let p = root.join(rel);
                    let r = open_nofollow(&p)
                        .and_then(|mut f| hash_reader(&mut f, &mut buf))
                        .map_err(|e| io(&p, e))
                        .and_then(|(h, n)| {
                            if n == *size {
                                Ok(h)
                            } else {
                                Err(Error::Changed {
                                    path: rel.clone(),
                                    expected: *size,
                                    found: n,
                                })
                            }
                        });
                    match r {
                        Ok(h) => *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            let mut g = first_err.lock().unwrap_or_else(|e| e.into_inner());
                            if g.as_ref().is_none_or(|(j, _)| i < *j) {
                                *g = Some((i, e));
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some((_, e)) = first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    Ok(files
        .iter()
        .zip(slots)
        .map(|((path, size), h)| FileEntry {
            path: path.clone(),
            size: *size,
            sha256: h
                .into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or_default(),
        })
        .collect())
}

/// Threads to hash with by default: the machine's cores, at most 16.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get().min(16))
}

/// The manifest of the tree at `root`, its files hashed on `threads`
/// threads.
pub fn hash_tree(root: &Path, threads: usize) -> Result<Manifest, Error> {
    let files = list_tree(root)?;
    Manifest::new(hash_files(root, &files, threads)?)
}

/// What [`verify_tree`] found wrong with one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub path: String,
    /// `corrupt` (another sha256), `resized`, `missing`, `extra`, or
    /// `unreadable`.
    pub kind: String,
    pub detail: String,
}

/// Hashes the tree at `root` again against `m`: every file that differs,
/// is missing, or is not in the manifest (none: intact).
pub fn verify_tree(root: &Path, m: &Manifest, threads: usize) -> Result<Vec<Problem>, Error> {
    let mut problems = Vec::new();
    let present: Vec<(String, u64)> = match list_tree(root) {
        Ok(v) => v,
        Err(Error::Empty) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut want = std::collections::BTreeMap::new();
    for f in &m.files {
        want.insert(f.path.as_str(), f);
    }
    let mut to_hash = Vec::new();
    for (p, size) in &present {
        match want.remove(p.as_str()) {
            None => problems.push(Problem {
                path: p.clone(),
                kind: "extra".into(),
                detail: format!("{size} bytes, not in the manifest"),
            }),
            Some(f) if f.size != *size => problems.push(Problem {
                path: p.clone(),
                kind: "resized".into(),
                detail: format!("{size} bytes, the manifest says {}", f.size),
            }),
            Some(f) => to_hash.push((p.clone(), *size, f.sha256.clone())),
        }
    }
    for f in want.values() {
        problems.push(Problem {
            path: f.path.clone(),
            kind: "missing".into(),
            detail: format!("{} bytes", f.size),
        });
    }
    let list: Vec<(String, u64)> = to_hash.iter().map(|t| (t.0.clone(), t.1)).collect();
    // hash one at a time on failure, so that one bad file does not hide the others
    match hash_files(root, &list, threads) {
        Ok(got) => {
            for (g, t) in got.iter().zip(&to_hash) {
                if g.sha256 != t.2 {
                    problems.push(Problem {
                        path: t.0.clone(),
                        kind: "corrupt".into(),
                        detail: format!("sha256 {}, the manifest says {}", g.sha256, t.2),
                    });
                }
            }
        }
        Err(_) => {
            for (p, size, sha) in &to_hash {
                match hash_files(root, &[(p.clone(), *size)], 1) {
                    Ok(g) if g[0].sha256 != *sha => problems.push(Problem {
                        path: p.clone(),
                        kind: "corrupt".into(),
                        detail: format!("sha256 {}, the manifest says {sha}", g[0].sha256),
                    }),
                    Ok(_) => {}
                    Err(e) => problems.push(Problem {
                        path: p.clone(),
                        kind: "unreadable".into(),
                        detail: e.to_string(),
                    }),
                }
            }
        }
    }
    problems.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_a_tree_refuses_a_file_still_open_for_writing() {
        let d = tmp("take-writer");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/w"), "x").unwrap();
        // a process of the job's account kept it open (or mapped) to write
        // after the hash
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("sub/w"))
            .unwrap();
        match take_tree(&d) {
            Err(Error::OpenForWriting(p)) => assert!(p.ends_with("sub/w"), "{p}"),
            other => panic!("{other:?}"),
        }
        drop(writer);
        assert_eq!(take_tree(&d).unwrap(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("sub/w"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn taking_a_tree_holds_one_descriptor_a_level_and_refuses_depth() {
        let d = tmp("take-deep");
        // wide: many sibling directories (no descriptor kept for each)
        for i in 0..3000 {
            std::fs::create_dir_all(d.join(format!("w/d{i}"))).unwrap();
        }
        std::fs::write(d.join("w/d7/f"), "x").unwrap();
        assert_eq!(take_tree(&d).unwrap(), 1);
        let _ = std::fs::remove_dir_all(&d);
        let mut deep = d.clone();
        for _ in 0..MAX_DEPTH + 1 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        assert!(matches!(take_tree(&d), Err(Error::TooDeep)));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "gigafab-catalog-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tree(tag: &str) -> PathBuf {
        let d = tmp(tag);
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::write(d.join("a.txt"), b"hello\n").unwrap();
        std::fs::write(d.join("sub/b.bin"), vec![7u8; 3 * BUF + 5]).unwrap();
        std::fs::write(d.join("sub/deeper/empty"), b"").unwrap();
        d
    }

    #[test]
    fn hashes_match_sha256sum_and_pin_the_tree() {
        let d = tree("hash");
        let m = hash_tree(&d, 3).unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.txt", "sub/b.bin", "sub/deeper/empty"]);
        // known digests: sha256("hello\n") and of the empty string
        assert_eq!(
            m.files[0].sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        assert_eq!(
            m.files[2].sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let big = hex::encode(Sha256::digest(vec![7u8; 3 * BUF + 5]));
        assert_eq!(m.files[1].sha256, big);
        assert_eq!(m.bytes, 6 + 3 * BUF as u64 + 5);
        // the manifest hash is of the canonical text, the same on one thread
        assert_eq!(
            m.hash,
            hex::encode(Sha256::digest(m.canonical().as_bytes()))
        );
        assert_eq!(hash_tree(&d, 1).unwrap(), m);
        // one byte changed: another version
        std::fs::write(d.join("a.txt"), b"hellO\n").unwrap();
        assert_ne!(hash_tree(&d, 2).unwrap().hash, m.hash);
    }

    #[test]
    fn verify_reports_each_corrupt_missing_and_extra_file() {
        let d = tree("verify");
        let m = hash_tree(&d, 2).unwrap();
        assert!(verify_tree(&d, &m, 2).unwrap().is_empty());
        // same size, other bytes; a file removed; one added; one resized
        let mut b = std::fs::read(d.join("sub/b.bin")).unwrap();
        b[BUF + 1] ^= 1;
        std::fs::write(d.join("sub/b.bin"), b).unwrap();
        std::fs::remove_file(d.join("sub/deeper/empty")).unwrap();
        std::fs::write(d.join("new"), b"x").unwrap();
        std::fs::write(d.join("a.txt"), b"hello, world\n").unwrap();
        let p = verify_tree(&d, &m, 2).unwrap();
        let got: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.path.as_str(), p.kind.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("a.txt", "resized"),
                ("new", "extra"),
                ("sub/b.bin", "corrupt"),
                ("sub/deeper/empty", "missing")
            ]
        );
    }

    #[test]
    fn symlinks_special_files_and_bad_names_are_refused() {
        let d = tree("refuse");
        std::os::unix::fs::symlink("/etc/passwd", d.join("sub/out")).unwrap();
        let e = hash_tree(&d, 2).unwrap_err();
        assert!(
            matches!(&e, Error::Symlink { path, out_of_tree: true } if path == "sub/out"),
            "{e}"
        );
        assert!(e.to_string().contains("pointing out of the tree"), "{e}");
        std::fs::remove_file(d.join("sub/out")).unwrap();
        std::os::unix::fs::symlink("../a.txt", d.join("sub/in")).unwrap();
        let e = hash_tree(&d, 2).unwrap_err();
        assert!(
            matches!(
                &e,
                Error::Symlink {
                    out_of_tree: false,
                    ..
                }
            ),
            "{e}"
        );
        std::fs::remove_file(d.join("sub/in")).unwrap();
        let fifo = std::ffi::CString::new(d.join("pipe").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(hash_tree(&d, 2), Err(Error::SpecialFile(p)) if p == "pipe"));
        std::fs::remove_file(d.join("pipe")).unwrap();
        std::fs::write(d.join("line\nbreak"), b"").unwrap();
        assert!(matches!(hash_tree(&d, 2), Err(Error::BadName { .. })));
        std::fs::remove_file(d.join("line\nbreak")).unwrap();
        // the root itself
        assert!(matches!(
            hash_tree(&d.join("nope"), 1),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            hash_tree(&d.join("a.txt"), 1),
            Err(Error::NotADirectory(_))
        ));
        let e = tmp("empty");
        assert!(matches!(hash_tree(&e, 1), Err(Error::Empty)));
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a\\b",
            "",
            "a/.",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in ["a", "a/b.c", "ünïcode/名前", "..a/b..", ".hidden"] {
            check_path(good).unwrap();
        }
    }

    #[test]
    fn a_manifest_refuses_duplicates_and_bad_digests() {
        let f = |p: &str| FileEntry {
            path: p.into(),
            size: 1,
            sha256: "0".repeat(64),
        };
        assert!(Manifest::new(vec![f("a"), f("b")]).is_ok());
        assert!(matches!(
            Manifest::new(vec![f("a"), f("a")]),
            Err(Error::BadName {
                why: "given twice",
                ..
            })
        ));
        assert!(Manifest::new(vec![f("a"), f("a/b")]).is_err());
        // not neighbours once sorted: `a-x` sorts between them
        assert!(Manifest::new(vec![f("a"), f("a-x"), f("a/b")]).is_err());
        assert!(Manifest::new(vec![f("a/b/c"), f("a-x"), f("a/b")]).is_err());
        assert!(Manifest::new(vec![f("ab"), f("a/b")]).is_ok());
        let mut huge = f("x");
        huge.size = u64::MAX;
        assert!(
            Manifest::new(vec![huge, f("y")]).is_err(),
            "an overflowing total"
        );
        assert!(Manifest::new(vec![f("../a")]).is_err());
        let mut g = f("a");
        g.sha256 = "A".repeat(64);
        assert!(Manifest::new(vec![g]).is_err());
        assert!(matches!(Manifest::new(vec![]), Err(Error::Empty)));
    }
}
