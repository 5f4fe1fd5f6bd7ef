//! Organisations' project spaces: a directory per organisation, shared by
//! its members, that every job of theirs finds at `$GIGAFAB_PROJECT_DIR`
//! and the portal's **Files** page browses (docs/portal.md).
//!
//! A space is made when its organisation is (and, for those made before,
//! at the server's start), owned by the organisation's POSIX account, mode
//! 2770, in a directory of the server's that no tenant can write; the
//! server reaches a space only as the caller's account
//! ([`gigafab_exec::files`]).

pub mod config;

pub use config::Spaces;

use std::path::PathBuf;

use crate::error::ApiError;
use crate::state::Shared;

/// Makes organisation `org`'s space unless it exists (blocking: file
/// system calls), and returns its path.
pub fn ensure_blocking(spaces: &Spaces, org: &str, owner: Option<&str>) -> Result<PathBuf, String> {
    let account = match owner {
        Some(a) => Some(gigafab_exec::posix::lookup(a)?),
        None => None,
    };
    gigafab_exec::files::ensure_space(&spaces.root, org, account.as_ref()).map_err(|e| {
        format!(
            "{}: cannot make organisation `{org}`'s project space: {e}",
            spaces.dir(org).display()
        )
    })
}

/// Organisation `org`'s space, made if it is missing.
pub async fn ensure(s: &Shared, org: i64) -> Result<PathBuf, ApiError> {
    let Some(spaces) = s.spaces.clone() else {
        return Err(ApiError::conflict(
            "no_project_space",
            "this server keeps no project spaces",
        ));
    };
    let name = s.tenancy.org_name(org);
    let owner = s
        .tenancy
        .space_account(org)
        .map_err(|e| ApiError::conflict("no_project_space", e))?;
    tokio::task::spawn_blocking(move || ensure_blocking(&spaces, &name, owner.as_deref()))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(ApiError::unavailable)
}

/// Makes the spaces of every organisation that lacks one (at start); a
/// failure is logged, and said again to whoever opens that space.
pub async fn ensure_all(s: &Shared) {
    if s.spaces.is_none() {
        return;
    }
    for org in s.tenancy.org_ids() {
        if s.tenancy.space_account(org).is_err() {
            continue;
        }
        if let Err(e) = ensure(s, org).await {
            tracing::warn!("{}", e.message);
        }
    }
}

/// Where organisation `org`'s jobs find its space (`$GIGAFAB_PROJECT_DIR`),
/// where it has one.
pub fn dir_of(s: &Shared, org: i64) -> Option<PathBuf> {
    let spaces = s.spaces.as_ref()?;
    s.tenancy.space_account(org).ok()?;
    Some(spaces.dir(&s.tenancy.org_name(org)))
}
