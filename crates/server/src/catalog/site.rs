//! The site's catalog store: its blobs, and the uploads waiting for their
//! commit. The application state holds it; the handlers ([`super`]) use it.

use std::collections::HashMap;
use std::path::PathBuf;

use gigafab_catalog::Manifest;
use gigafab_catalog::store::Blobs;

use crate::time::Ms;

/// The site's catalog store, and where uploads wait for their commit.
pub struct Site {
    pub blobs: Blobs,
    /// Uploads in progress, one directory each (made 0700).
    pub staging: PathBuf,
    /// The factory site the store is at (residency is checked against it).
    pub site: String,
    /// Threads hashing in place and verifying.
    pub threads: usize,
    pub(super) uploads: std::sync::Mutex<HashMap<String, UploadState>>,
    pub(super) writes: tokio::sync::Mutex<()>,
    /// Every job up to this id has ended and had its output taken: the
    /// scan for outputs starts above it.
    pub(super) outputs_floor: std::sync::atomic::AtomicI64,
}

pub(super) struct UploadState {
    pub(super) entry: i64,
    pub(super) entry_name: String,
    pub(super) user: i64,
    /// The uploader's organisation (0: none, an admin).
    pub(super) org: i64,
    pub(super) manifest: Manifest,
    pub(super) by_path: HashMap<String, usize>,
    pub(super) received: Vec<bool>,
    /// A file of it is being received now.
    pub(super) busy: Vec<bool>,
    pub(super) created: Ms,
}

impl Site {
    /// A site's catalog: `staging` is emptied (uploads do not outlive a
    /// restart).
    pub fn new(blobs: Blobs, staging: PathBuf, site: String) -> std::io::Result<Site> {
        use std::os::unix::fs::PermissionsExt;
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(&staging)?;
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))?;
        Ok(Site {
            blobs,
            staging,
            site,
            threads: gigafab_catalog::default_threads(),
            uploads: Default::default(),
            writes: Default::default(),
            outputs_floor: Default::default(),
        })
    }
}
