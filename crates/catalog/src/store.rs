//! Where a site keeps catalog versions: a directory on its file system
//! ([`Blobs::Dir`], the files under their own names, read-only, so that
//! jobs read them in place) or an object store ([`Blobs::Object`], any
//! `object_store::ObjectStore`: S3 in production, the in-memory one in
//! unit tests), whose versions are fetched, verified, into a node's cache
//! before a job reads them.
//!
//! A version is kept under a key the server chooses (`v/<random>`), each
//! file at `<key>/<path>`. Every copy is hashed as it is made and checked
//! against the manifest: a file that changed after it was hashed is never
//! stored as the version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::ObjectStore;
use object_store::ObjectStoreExt as _;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{check_path, io, verify_tree, Error, Manifest, Problem};

/// A site's catalog store.
#[derive(Clone)]
pub enum Blobs {
    /// A directory: versions at `<root>/<key>/`.
    Dir(PathBuf),
    /// An object store; `cache` is where versions are fetched for jobs.
    Object {
        store: Arc<dyn ObjectStore>,
        cache: PathBuf,
        /// How it is named in messages (`s3://bucket`).
        name: String,
    },
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::Store(e.to_string())
}

/// The key a version is kept under must be plain: `v/` and hex.
fn check_key(key: &str) -> Result<(), Error> {
    check_path(key)?;
    if !key.starts_with("v/") || !key[2..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::BadName {
            path: key.into(),
            why: "a store key is `v/` and hex digits",
        });
    }
    Ok(())
}

fn obj_path(key: &str, rel: &str) -> Result<ObjPath, Error> {
    ObjPath::parse(format!("{key}/{rel}")).map_err(store_err)
}

/// A new random store key (`v/` and 32 hex digits).
pub fn new_key() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    format!("v/{}", hex::encode(b))
}

impl Blobs {
    /// A store from its URL: a path or `file://PATH` (a directory), or
    /// `s3://BUCKET` (credentials, region and endpoint from the
    /// environment, as the AWS tools read them: `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
    /// `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint); `cache` is where
    /// an object store's versions are fetched for jobs.
    pub fn open(url: &str, cache: &Path) -> Result<Blobs, Error> {
        if let Some(bucket) = url.strip_prefix("s3://") {
            let bucket = bucket.trim_end_matches('/');
            if bucket.is_empty() || bucket.contains('/') {
                return Err(Error::Store(format!(
                    "`{url}`: expected s3://BUCKET (no prefix)"
                )));
            }
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
                b = b.with_endpoint(e);
            }
            let s = b.build().map_err(store_err)?;
            return Ok(Blobs::Object {
                store: Arc::new(s),
                cache: cache.to_path_buf(),
                name: format!("s3://{bucket}"),
            });
        }
        let dir = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        if !dir.is_absolute() {
            return Err(Error::Store(format!(
                "`{url}`: a directory store needs an absolute path"
            )));
        }
        std::fs::create_dir_all(dir.join("v")).map_err(|e| io(&dir, e))?;
        // versions are reached by their random keys, never listed: a job
        // given one input cannot find the others
        set_mode(&dir.join("v"), 0o711)?;
        Ok(Blobs::Dir(dir))
    }

    /// Its name in messages.
    pub fn name(&self) -> String {
        match self {
            Blobs::Dir(d) => d.display().to_string(),
            Blobs::Object { name, .. } => name.clone(),
        }
    }

    /// Copies the tree at `root` into the store under `key`, each file
    /// hashed as it is copied and checked against `m` (a file that
    /// changed since is refused, and nothing of the version is left).
    pub async fn put_tree(&self, root: &Path, m: &Manifest, key: &str) -> Result<(), Error> {
        check_key(key)?;
        let r = self.put_files(root, m, key).await;
        if r.is_err() {
            let _ = self.remove(key).await;
        }
        r
    }

    async fn put_files(&self, root: &Path, m: &Manifest, key: &str) -> Result<(), Error> {
        let mut buf = vec![0u8; 1 << 20];
        match self {
            Blobs::Dir(dir) => {
                let tmp = dir.join(format!("{key}.partial"));
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                for f in &m.files {
                    let to = tmp.join(&f.path);
                    if let Some(parent) = to.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|e| io(parent, e))?;
                    }
                    let from = root.join(&f.path);
                    let src = crate::open_nofollow(&from).map_err(|e| io(&from, e))?;
                    let mut src = tokio::fs::File::from_std(src);
                    let mut dst = tokio::fs::File::create(&to).await.map_err(|e| io(&to, e))?;
                    let mut h = Sha256::new();
                    let mut n = 0u64;
                    loop {
                        let k = src.read(&mut buf).await.map_err(|e| io(&from, e))?;
                        if k == 0 {
                            break;
                        }
                        h.update(&buf[..k]);
                        n += k as u64;
                        dst.write_all(&buf[..k]).await.map_err(|e| io(&to, e))?;
                    }
                    dst.sync_all().await.map_err(|e| io(&to, e))?;
                    check_copy(&f.path, &f.sha256, f.size, &hex::encode(h.finalize()), n)?;
                    set_mode(&to, 0o444)?;
                }
                seal_dirs(&tmp)?;
                let dest = dir.join(key);
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|e| io(&dest, e))?;
                Ok(())
            }
            Blobs::Object { store, .. } => {
                for f in &m.files {
                    let from = root.join(&f.path);
                    let src = crate::open_nofollow(&from).map_err(|e| io(&from, e))?;
                    let mut src = tokio::fs::File::from_std(src);
                    let mut w = object_store::buffered::BufWriter::new(
                        store.clone(),
                        obj_path(key, &f.path)?,
                    );
                    let mut h = Sha256::new();
                    let mut n = 0u64;
                    loop {
                        let k = src.read(&mut buf).await.map_err(|e| io(&from, e))?;
                        if k == 0 {
                            break;
                        }
                        h.update(&buf[..k]);
                        n += k as u64;
                        w.write_all(&buf[..k]).await.map_err(store_err)?;
                    }
                    let got = hex::encode(h.finalize());
                    if let Err(e) = check_copy(&f.path, &f.sha256, f.size, &got, n) {
                        let _ = w.abort().await;
                        return Err(e);
                    }
                    w.shutdown().await.map_err(store_err)?;
                }
                Ok(())
            }
        }
    }

    /// Makes the tree at `root`, whose files this process hashed already
    /// (they match `m`), version `key`, consuming `root`: a directory store
    /// on the same file system takes the tree by renaming it, once its
    /// listing is checked against `m` (paths and sizes) and it is synced;
    /// otherwise it is copied as [`Blobs::put_tree`] does.
    pub async fn adopt_tree(&self, root: &Path, m: &Manifest, key: &str) -> Result<(), Error> {
        check_key(key)?;
        let Blobs::Dir(dir) = self else {
            return self.put_tree(root, m, key).await;
        };
        let (root_c, m_c) = (root.to_path_buf(), m.clone());
        let listed = tokio::task::spawn_blocking(move || {
            let l = crate::list_tree(&root_c)?;
            let ok = l.len() == m_c.files.len()
                && l.iter()
                    .zip(&m_c.files)
                    .all(|((p, s), f)| *p == f.path && *s == f.size);
            if ok {
                // the server's own from now on (a job's output was its
                // account's), read-only
                let owner = (unsafe { libc::geteuid() }, unsafe { libc::getegid() });
                // through descriptors that never follow a link
                for (p, _) in &l {
                    let f = root_c.join(p);
                    let file = crate::open_nofollow(&f).map_err(|e| io(&f, e))?;
                    std::os::unix::fs::fchown(&file, Some(owner.0), Some(owner.1))
                        .map_err(|e| io(&f, e))?;
                    use std::os::unix::fs::PermissionsExt;
                    file.set_permissions(std::fs::Permissions::from_mode(0o444))
                        .map_err(|e| io(&f, e))?;
                }
                own_dirs(&root_c, owner)?;
                seal_dirs(&root_c)?;
                sync_fs(&root_c)?;
            }
            Ok::<bool, Error>(ok)
        })
        .await
        .map_err(store_err)??;
        if !listed {
            return Err(Error::Mismatch {
                path: root.display().to_string(),
                why: "its files are not the manifest's".into(),
            });
        }
        let dest = dir.join(key);
        match tokio::fs::rename(root, &dest).await {
            Ok(()) => Ok(()),
            // another file system: a copy (hashed again)
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                unseal(root);
                self.put_tree(root, m, key).await
            }
            Err(e) => Err(io(&dest, e)),
        }
    }

    /// Removes version `key` (nothing if it is not there).
    pub async fn remove(&self, key: &str) -> Result<(), Error> {
        check_key(key)?;
        match self {
            Blobs::Dir(dir) => {
                for d in [dir.join(key), dir.join(format!("{key}.partial"))] {
                    if d.exists() {
                        unseal(&d);
                        tokio::fs::remove_dir_all(&d).await.map_err(|e| io(&d, e))?;
                    }
                }
                Ok(())
            }
            Blobs::Object { store, .. } => {
                let prefix = ObjPath::parse(key).map_err(store_err)?;
                let mut list = store.list(Some(&prefix));
                while let Some(o) = list.next().await {
                    let o = o.map_err(store_err)?;
                    store.delete(&o.location).await.map_err(store_err)?;
                }
                Ok(())
            }
        }
    }

    /// Hashes version `key` in the store again against `m`: each corrupt,
    /// missing or extra file (none: intact).
    pub async fn verify(
        &self,
        key: &str,
        m: &Manifest,
        threads: usize,
    ) -> Result<Vec<Problem>, Error> {
        check_key(key)?;
        match self {
            Blobs::Dir(dir) => {
                let root = dir.join(key);
                if !root.exists() {
                    return Ok(m
                        .files
                        .iter()
                        .map(|f| Problem {
                            path: f.path.clone(),
                            kind: "missing".into(),
                            detail: format!("{} bytes", f.size),
                        })
                        .collect());
                }
                let m = m.clone();
                tokio::task::spawn_blocking(move || verify_tree(&root, &m, threads))
                    .await
                    .map_err(store_err)?
            }
            Blobs::Object { store, .. } => {
                let prefix = ObjPath::parse(key).map_err(store_err)?;
                let mut present = std::collections::BTreeMap::new();
                let mut list = store.list(Some(&prefix));
                while let Some(o) = list.next().await {
                    let o = o.map_err(store_err)?;
                    let rel = o
                        .location
                        .as_ref()
                        .strip_prefix(&format!("{key}/"))
                        .unwrap_or(o.location.as_ref())
                        .to_string();
                    present.insert(rel, o.size);
                }
                let mut problems = Vec::new();
                for f in &m.files {
                    let Some(size) = present.remove(&f.path) else {
                        problems.push(Problem {
                            path: f.path.clone(),
                            kind: "missing".into(),
                            detail: format!("{} bytes", f.size),
                        });
                        continue;
                    };
                    if size != f.size {
                        problems.push(Problem {
                            path: f.path.clone(),
                            kind: "resized".into(),
                            detail: format!("{size} bytes, the manifest says {}", f.size),
                        });
                        continue;
                    }
                    let (got, _) = self.hash_object(store, key, &f.path, None).await?;
                    if got != f.sha256 {
                        problems.push(Problem {
                            path: f.path.clone(),
                            kind: "corrupt".into(),
                            detail: format!("sha256 {got}, the manifest says {}", f.sha256),
                        });
                    }
                }
                for (p, size) in present {
                    problems.push(Problem {
                        path: p,
                        kind: "extra".into(),
                        detail: format!("{size} bytes, not in the manifest"),
                    });
                }
                problems.sort_by(|a, b| a.path.cmp(&b.path));
                Ok(problems)
            }
        }
    }

    /// Streams object `<key>/<rel>` through sha256, writing it to `to`
    /// if given: its hash and length.
    async fn hash_object(
        &self,
        store: &Arc<dyn ObjectStore>,
        key: &str,
        rel: &str,
        mut to: Option<&mut tokio::fs::File>,
    ) -> Result<(String, u64), Error> {
        let mut s = store
            .get(&obj_path(key, rel)?)
            .await
            .map_err(store_err)?
            .into_stream();
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(b) = s.next().await {
            let b = b.map_err(store_err)?;
            h.update(&b);
            n += b.len() as u64;
            if let Some(f) = to.as_mut() {
                f.write_all(&b)
                    .await
                    .map_err(|e| Error::Store(e.to_string()))?;
            }
        }
        Ok((hex::encode(h.finalize()), n))
    }

    /// A local directory with version `key`'s files, read-only, for a
    /// job: the store's own for a directory store; for an object store,
    /// `<cache>/<key>`, fetched now (each file checked against `m`) unless
    /// a complete copy is there already.
    pub async fn local_tree(&self, key: &str, m: &Manifest) -> Result<PathBuf, Error> {
        check_key(key)?;
        match self {
            Blobs::Dir(dir) => Ok(dir.join(key)),
            Blobs::Object { store, cache, .. } => {
                let dest = cache.join(key);
                if dest.is_dir() {
                    return Ok(dest);
                }
                // a directory of its own: two fetches of one version do
                // not write into each other's
                let tmp = cache.join(format!("{key}.partial-{}", &new_key()[2..]));
                let v = cache.join("v");
                tokio::fs::create_dir_all(&v).await.map_err(|e| io(&v, e))?;
                set_mode(&v, 0o711)?;
                if tmp.exists() {
                    unseal(&tmp);
                    let _ = tokio::fs::remove_dir_all(&tmp).await;
                }
                for f in &m.files {
                    let to = tmp.join(&f.path);
                    if let Some(parent) = to.parent() {
                        tokio::fs::create_dir_all(parent)
                            .await
                            .map_err(|e| io(parent, e))?;
                    }
                    let mut out = tokio::fs::File::create(&to).await.map_err(|e| io(&to, e))?;
                    let (got, n) = self
                        .hash_object(store, key, &f.path, Some(&mut out))
                        .await?;
                    out.sync_all().await.map_err(|e| io(&to, e))?;
                    if let Err(e) = check_copy(&f.path, &f.sha256, f.size, &got, n) {
                        unseal(&tmp);
                        let _ = tokio::fs::remove_dir_all(&tmp).await;
                        return Err(e);
                    }
                    set_mode(&to, 0o444)?;
                }
                seal_dirs(&tmp)?;
                if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
                    // another fetch of it finished first: its copy stands
                    remove_tree(&tmp);
                    if !dest.is_dir() {
                        return Err(io(&dest, e));
                    }
                }
                Ok(dest)
            }
        }
    }
}

fn check_copy(path: &str, want: &str, size: u64, got: &str, n: u64) -> Result<(), Error> {
    if n != size {
        return Err(Error::Mismatch {
            path: path.into(),
            why: format!("{n} bytes, the manifest says {size}"),
        });
    }
    if got != want {
        return Err(Error::Mismatch {
            path: path.into(),
            why: format!("sha256 {got}, the manifest says {want}"),
        });
    }
    Ok(())
}

/// Flushes the file system holding `p` to its disk (syncfs): one call for
/// a whole tree written without a sync per file.
fn sync_fs(p: &Path) -> Result<(), Error> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(p).map_err(|e| io(p, e))?;
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io(p, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_mode(p: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|e| io(p, e))
}

/// Makes every directory under `root` (and it) read-only, deepest first.
fn seal_dirs(root: &Path) -> Result<(), Error> {
    let mut dirs = vec![root.to_path_buf()];
    let mut i = 0;
    while i < dirs.len() {
        for e in std::fs::read_dir(&dirs[i]).map_err(|e| io(&dirs[i], e))? {
            let e = e.map_err(|e| io(&dirs[i], e))?;
            if e.file_type().map_err(|x| io(&e.path(), x))?.is_dir() {
                dirs.push(e.path());
            }
        }
        i += 1;
    }
    for d in dirs.iter().rev() {
        set_mode(d, 0o555)?;
    }
    Ok(())
}

/// Gives every directory under `root` (and it) to `owner`, links not
/// followed.
fn own_dirs(root: &Path, owner: (u32, u32)) -> Result<(), Error> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        std::os::unix::fs::lchown(&d, Some(owner.0), Some(owner.1)).map_err(|e| io(&d, e))?;
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))? {
            let e = e.map_err(|x| io(&d, x))?;
            if e.file_type().map_err(|x| io(&e.path(), x))?.is_dir() {
                dirs.push(e.path());
            }
        }
    }
    Ok(())
}

/// Removes a tree the server made read-only (or any tree: links are
/// removed, never followed).
pub fn remove_tree(root: &Path) {
    if std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        unseal(root);
    }
    let _ = std::fs::remove_dir_all(root).or_else(|_| std::fs::remove_file(root));
}

/// Makes the directories under `root` writable again, to remove them.
fn unseal(root: &Path) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let _ = set_mode(&d, 0o755);
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash_tree;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gigafab-blobs-{tag}-{}", std::process::id()));
        unseal(&d);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn tree(d: &Path) {
        std::fs::create_dir_all(d.join("w/x")).unwrap();
        std::fs::write(d.join("config.json"), b"{}").unwrap();
        std::fs::write(d.join("w/x/shard-0"), vec![1u8; 3_000_000]).unwrap();
        std::fs::write(d.join("w/odd name %#?.txt"), b"odd").unwrap();
    }

    async fn round_trip(b: Blobs, tag: &str) {
        let src = tmp(&format!("{tag}-src"));
        tree(&src);
        let m = hash_tree(&src, 2).unwrap();
        let key = new_key();
        b.put_tree(&src, &m, &key).await.unwrap();
        assert!(b.verify(&key, &m, 2).await.unwrap().is_empty());
        let local = b.local_tree(&key, &m).await.unwrap();
        assert_eq!(hash_tree(&local, 2).unwrap(), m);
        assert_eq!(
            std::fs::read(local.join("w/odd name %#?.txt")).unwrap(),
            b"odd",
            "names are kept as they are"
        );
        // read-only for those who read it
        assert!(std::fs::metadata(local.join("config.json"))
            .unwrap()
            .permissions()
            .readonly());
        // a file changed after it was hashed is not stored, nor any of it
        std::fs::write(src.join("config.json"), b"{\"x\":1}").unwrap();
        let key2 = new_key();
        let e = b.put_tree(&src, &m, &key2).await.unwrap_err();
        assert!(
            matches!(&e, Error::Mismatch { path, .. } if path == "config.json"),
            "{e}"
        );
        if let Blobs::Dir(d) = &b {
            assert!(!d.join(&key2).exists() && !d.join(format!("{key2}.partial")).exists());
        }
        b.remove(&key).await.unwrap();
        assert!(!b.verify(&key, &m, 1).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_directory_store_keeps_versions_read_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmp("dir");
        Blobs::open(d.to_str().unwrap(), &d.join("cache")).unwrap();
        let mode = std::fs::metadata(d.join("v")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711, "versions are not listed");
        round_trip(
            Blobs::open(d.to_str().unwrap(), &d.join("cache")).unwrap(),
            "dir",
        )
        .await;
        assert!(Blobs::open("relative/dir", &d).is_err());
        assert!(Blobs::open("s3://bucket/prefix", &d).is_err());
    }

    #[tokio::test]
    async fn an_object_store_keeps_versions_and_fetches_them_verified() {
        let cache = tmp("obj-cache");
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let b = Blobs::Object {
            store: store.clone(),
            cache: cache.clone(),
            name: "memory".into(),
        };
        round_trip(b.clone(), "obj").await;
        // corruption in the store: verify names the file, a fetch refuses it
        let src = tmp("obj-src2");
        tree(&src);
        let m = hash_tree(&src, 2).unwrap();
        let key = new_key();
        b.put_tree(&src, &m, &key).await.unwrap();
        store
            .put(
                &obj_path(&key, "config.json").unwrap(),
                bytes::Bytes::from_static(b"[]").into(),
            )
            .await
            .unwrap();
        let p = b.verify(&key, &m, 1).await.unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(
            (p[0].path.as_str(), p[0].kind.as_str()),
            ("config.json", "corrupt")
        );
        let e = b.local_tree(&key, &m).await.unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        assert!(!cache.join(&key).exists());
    }

    #[tokio::test]
    async fn a_directory_store_adopts_a_checked_tree() {
        let d = tmp("adopt");
        let b = Blobs::open(d.join("store").to_str().unwrap(), &d.join("cache")).unwrap();
        let src = d.join("staging");
        tree(&src);
        let m = hash_tree(&src, 2).unwrap();
        // a tree that is not the manifest's is refused and left in place
        std::fs::write(src.join("extra"), b"x").unwrap();
        let key = new_key();
        assert!(matches!(
            b.adopt_tree(&src, &m, &key).await,
            Err(Error::Mismatch { .. })
        ));
        std::fs::remove_file(src.join("extra")).unwrap();
        unseal(&src);
        b.adopt_tree(&src, &m, &key).await.unwrap();
        assert!(!src.exists(), "renamed, not copied");
        let local = b.local_tree(&key, &m).await.unwrap();
        assert_eq!(hash_tree(&local, 2).unwrap(), m);
        assert!(std::fs::metadata(local.join("w/x/shard-0"))
            .unwrap()
            .permissions()
            .readonly());
        assert!(b.verify(&key, &m, 2).await.unwrap().is_empty());
    }

    #[test]
    fn keys_are_plain() {
        assert!(check_key(&new_key()).is_ok());
        for bad in ["v/../x", "/v/ab", "x/ab", "v/ab/c", "v/zz"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
    }
}
