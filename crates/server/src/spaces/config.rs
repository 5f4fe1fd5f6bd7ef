//! Where the organisations' project spaces are (`--project-spaces`).

use std::path::PathBuf;

/// The project spaces of a server: a directory per organisation.
#[derive(Debug, Clone)]
pub struct Spaces {
    /// Their parent (the server's, writable by it alone).
    pub root: PathBuf,
    /// Most bytes a space may take for an upload through the server to go
    /// in (None: the file system's own quotas alone).
    pub max_bytes: Option<u64>,
}

impl Spaces {
    /// Organisation `org`'s space.
    pub fn dir(&self, org: &str) -> PathBuf {
        self.root.join(org)
    }
}
