//! The data and model catalog: entries, their content-pinned versions,
//! aliases, access (public, organisation-only, gated with grants that
//! expire) and residency. Ordinary transactional handlers on the store,
//! each write one transaction with its audit line; the content side
//! (hashing, the site's store) is `gigafab-catalog`'s.
//!
//! A version reaches the site's store by upload: the client sends the
//! manifest, then each file, which the server hashes as it arrives and
//! refuses unless it matches; the commit copies the checked files into
//! the store, hashing them once more, and records the version in one
//! transaction. Nothing a client says of a file is taken on trust, and a
//! push that fails leaves no version behind. An administrator may also
//! register a directory of the site's file system where it lies.
//!
//! Jobs name versions as inputs ([`resolve_inputs`]): each must be
//! readable by the submitter, aliases resolve at submission, and the job
//! may run only at the sites every input's residency allows.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use axum::http::StatusCode;
use futures_util::StreamExt;
use gigafab_api as t;
use gigafab_catalog::{FileEntry, Manifest};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
pub use crate::model::Input;
use crate::names::valid_name;
use crate::state::Shared;
use crate::store::{self, catalog::EntryRow, catalog::VersionRow};
use crate::time::Ms;
pub use site::Site;
use site::UploadState;

/// Most uploads in progress on a server, and how long one may stay open.
pub const MAX_UPLOADS: usize = 64;
/// Most uploads in progress of one organisation (its users together), and
/// most bytes they declare: no organisation holds the server's slots.
pub const MAX_UPLOADS_PER_ORG: usize = 8;
pub const MAX_UPLOAD_BYTES_PER_ORG: u64 = 1 << 40;
pub const UPLOAD_TTL_MS: i64 = 24 * 3_600_000;

fn site(s: &Shared) -> Result<&Site, ApiError> {
    s.catalog.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "catalog_disabled",
            "this server has no catalog store (--catalog-store)",
        )
    })
}

fn catalog_err(e: gigafab_catalog::Error) -> ApiError {
    use gigafab_catalog::Error as E;
    match e {
        E::Store(m) => ApiError::store(format!("catalog store: {m}")),
        E::Io { .. } => ApiError::store(e.to_string()),
        E::Mismatch { .. } | E::Changed { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
            e.to_string(),
        ),
        _ => ApiError::invalid(e.to_string()),
    }
}

fn unprocessable(code: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, msg)
}

fn entry_not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "entry_not_found",
        format!(
            "catalog entry `{}` not found",
            name.chars().take(128).collect::<String>()
        ),
    )
}

const KINDS: [&str; 2] = ["dataset", "model"];
const ACCESS: [&str; 3] = ["public", "org", "gated"];

/// An SPDX licence expression as the catalog takes it: identifiers
/// (`Apache-2.0`, `LicenseRef-site-1`), `AND`, `OR`, `WITH`, parentheses.
fn valid_licence(l: &str) -> Result<(), ApiError> {
    let ok = !l.is_empty()
        && l.len() <= 200
        && l.split([' ', '(', ')']).filter(|w| !w.is_empty()).all(|w| {
            matches!(w, "AND" | "OR" | "WITH")
                || w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '+')
        });
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "licence: `{}` is not an SPDX expression (e.g. Apache-2.0, CC-BY-4.0 OR MIT)",
            l.chars().take(64).collect::<String>()
        )))
    }
}

/// An alias: 1 to 64 of `[a-z0-9._-]`, starting with a letter (a number
/// is a version).
fn valid_alias(a: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&a.len())
        && a.starts_with(|c: char| c.is_ascii_lowercase())
        && a.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "alias: `{}` must be 1 to 64 of a-z, 0-9, `.`, `_`, `-`, starting with a letter",
            a.chars().take(64).collect::<String>()
        )))
    }
}

/// What the caller may do with an entry.
struct Rights {
    /// Read its versions (and run jobs on them).
    read: bool,
    /// Push versions, move aliases.
    write: bool,
    /// Grant, revoke, see grants and requests.
    own: bool,
    /// Know it exists.
    see: bool,
}

fn rights(who: &Principal, e: &EntryRow, grants: &[(i64, Option<Ms>)], now: Ms) -> Rights {
    let admin = who.role == Role::Admin;
    let member = who.org_id == Some(e.org_id) && who.role.in_org();
    let granted = e.access == "gated"
        && who.role.in_org()
        && grants
            .iter()
            .any(|(o, exp)| Some(*o) == who.org_id && exp.is_none_or(|x| now < x));
    let read = admin || member || e.access == "public" || granted;
    Rights {
        read,
        write: admin || member,
        own: admin || (member && who.role == Role::Owner),
        // a gated entry is listed to all, so that they may ask for it;
        // operators see every entry's card
        see: read || e.access == "gated" || who.global(),
    }
}

async fn entry_for(
    s: &Shared,
    who: &Principal,
    name: &str,
) -> Result<(EntryRow, Rights), ApiError> {
    find_entry(s, who, name)
        .await?
        .ok_or_else(|| entry_not_found(name))
}

/// Entry `name` with `who`'s rights on it; None when there is none that
/// `who` may see.
async fn find_entry(
    s: &Shared,
    who: &Principal,
    name: &str,
) -> Result<Option<(EntryRow, Rights)>, ApiError> {
    let Some(e) = store::catalog::entry(&s.store.pool, name).await? else {
        return Ok(None);
    };
    let grants = store::catalog::grants(&s.store.pool, e.id).await?;
    let r = rights(who, &e, &grants, s.clock.now());
    Ok(r.see.then_some((e, r)))
}

async fn entry_view(s: &Shared, e: &EntryRow, r: &Rights) -> Result<t::CatalogEntry, ApiError> {
    let pool = &s.store.pool;
    let (versions, aliases) = if r.read {
        (
            store::catalog::versions(pool, e.id)
                .await?
                .into_iter()
                .map(|v| v.version)
                .collect(),
            store::catalog::aliases(pool, e.id)
                .await?
                .into_iter()
                .collect(),
        )
    } else {
        (Vec::new(), BTreeMap::new())
    };
    let (grants, access_requests) = if r.own {
        (
            store::catalog::grants(pool, e.id)
                .await?
                .into_iter()
                .map(|(o, exp)| t::EntryGrant {
                    org: s.tenancy.org_name(o),
                    expires_at: exp.map(Ms::rfc3339),
                })
                .collect(),
            store::catalog::access_requests(pool, e.id)
                .await?
                .into_iter()
                .map(|(o, u, reason, at)| t::EntryAccessRequest {
                    org: s.tenancy.org_name(o),
                    user: crate::names::short_name(u),
                    reason,
                    at: at.rfc3339(),
                })
                .collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(t::CatalogEntry {
        id: e.id,
        name: e.name.clone(),
        kind: e.kind.clone(),
        org: s.tenancy.org_name(e.org_id),
        access: e.access.clone(),
        licence: e.licence.clone(),
        card: serde_json::from_str(&e.card).unwrap_or_default(),
        residency: serde_json::from_str(&e.residency).unwrap_or_default(),
        readable: r.read,
        versions,
        aliases,
        grants,
        access_requests,
        created_at: e.created_ms.rfc3339(),
    })
}

fn version_view(
    e: &EntryRow,
    v: &VersionRow,
    manifest: Option<Vec<t::ManifestFile>>,
) -> t::CatalogVersion {
    t::CatalogVersion {
        entry: e.name.clone(),
        version: v.version,
        manifest_hash: v.manifest_hash.clone(),
        files: v.files as u64,
        bytes: v.bytes as u64,
        in_place: v.in_place,
        lineage: serde_json::from_str(&v.lineage).unwrap_or_default(),
        user: crate::names::short_name(v.user.clone()),
        created_at: v.created_ms.rfc3339(),
        manifest,
    }
}

/// `POST /catalog`: a new entry, of the caller's organisation (an
/// admin's: of the one named).
pub async fn create_entry(
    s: &Shared,
    who: &Principal,
    req: t::CreateEntry,
) -> Result<t::CatalogEntry, ApiError> {
    let c = site(s)?;
    valid_name(&req.name, "name")?;
    if !KINDS.contains(&req.kind.as_str()) {
        return Err(ApiError::invalid(format!(
            "kind: `{}` is not dataset or model",
            req.kind.chars().take(32).collect::<String>()
        )));
    }
    let access = req.access.clone().unwrap_or_else(|| "org".into());
    if !ACCESS.contains(&access.as_str()) {
        return Err(ApiError::invalid(format!(
            "access: `{}` is not public, org or gated",
            access.chars().take(32).collect::<String>()
        )));
    }
    valid_licence(&req.licence)?;
    let card = req.card.clone().unwrap_or_default();
    for (f, v) in [
        ("description", &card.description),
        ("intended_use", &card.intended_use),
        ("limitations", &card.limitations),
    ] {
        if v.len() > 20_000 {
            return Err(ApiError::invalid(format!("card.{f}: at most 20,000 bytes")));
        }
    }
    let residency = req.residency.clone().unwrap_or_default();
    let sites: Vec<String> = s.site_names();
    for r in &residency {
        if !sites.contains(r) {
            return Err(ApiError::invalid(format!(
                "residency: `{}` is not a site of this factory ({})",
                r.chars().take(64).collect::<String>(),
                sites.join(", ")
            )));
        }
    }
    let org = match (&req.org, who.role) {
        (Some(o), Role::Admin) => {
            s.tenancy
                .org_named(o)
                .ok_or_else(|| ApiError::invalid(format!("org: `{o}` not found")))?
                .id
        }
        (None, Role::Admin) => {
            return Err(ApiError::invalid(
                "org: an admin names the owner organisation",
            ));
        }
        (_, r) if r.in_org() => {
            let own = who.org_id.unwrap_or(-1);
            if req
                .org
                .as_ref()
                .is_some_and(|o| s.tenancy.org_named(o).map(|x| x.id) != Some(own))
            {
                return Err(ApiError::forbidden(
                    "an entry belongs to your own organisation",
                ));
            }
            own
        }
        _ => return Err(ApiError::forbidden("operators do not own catalog entries")),
    };
    let _w = c.writes.lock().await;
    let pool = &s.store.pool;
    if store::catalog::entry(pool, &req.name).await?.is_some() {
        return Err(ApiError::conflict(
            "conflict",
            format!("catalog entry `{}` exists", req.name),
        ));
    }
    let now = s.clock.now();
    let e = EntryRow {
        id: store::catalog::max_entry_id(pool).await? + 1,
        name: req.name.clone(),
        org_id: org,
        kind: req.kind.clone(),
        access,
        licence: req.licence.clone(),
        card: serde_json::to_string(&card).unwrap_or_default(),
        residency: serde_json::to_string(&residency).unwrap_or_default(),
        created_ms: now,
    };
    s.store
        .write(vec![
            store::catalog::insert_entry(&e),
            s.audit_op(
                who,
                now,
                "create_catalog_entry",
                &format!("catalog {}", e.name),
                format!("{} {} {}", e.kind, e.access, e.licence),
            ),
        ])
        .await?;
    let grants = Vec::new();
    entry_view(s, &e, &rights(who, &e, &grants, now)).await
}

/// `GET /catalog`: the entries the caller may see.
pub async fn list_entries(s: &Shared, who: &Principal) -> Result<Vec<t::CatalogEntry>, ApiError> {
    site(s)?;
    let pool = &s.store.pool;
    let now = s.clock.now();
    let mut grants: HashMap<i64, Vec<(i64, Option<Ms>)>> = HashMap::new();
    for (e, o, x) in store::catalog::all_grants(pool).await? {
        grants.entry(e).or_default().push((o, x));
    }
    let mut out = Vec::new();
    for e in store::catalog::entries(pool).await? {
        let r = rights(who, &e, grants.get(&e.id).map_or(&[][..], |v| v), now);
        if r.see {
            out.push(entry_view(s, &e, &r).await?);
        }
    }
    Ok(out)
}

/// `GET /catalog/{name}`.
pub async fn get_entry(
    s: &Shared,
    who: &Principal,
    name: &str,
) -> Result<t::CatalogEntry, ApiError> {
    site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    entry_view(s, &e, &r).await
}

/// The version `reference` (a number or an alias) of `e`.
async fn version_of(s: &Shared, e: &EntryRow, reference: &str) -> Result<VersionRow, ApiError> {
    let pool = &s.store.pool;
    let n = match reference.parse::<i64>() {
        Ok(n) => n,
        Err(_) => store::catalog::aliases(pool, e.id)
            .await?
            .into_iter()
            .find(|(a, _)| a == reference)
            .map(|(_, v)| v)
            .ok_or_else(|| {
                ApiError::not_found(
                    "version_not_found",
                    format!(
                        "`{}` has no version or alias `{}`",
                        e.name,
                        reference.chars().take(64).collect::<String>()
                    ),
                )
            })?,
    };
    store::catalog::version(pool, e.id, n)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "version_not_found",
                format!("`{}` has no version {n}", e.name),
            )
        })
}

async fn manifest_of(s: &Shared, e: &EntryRow, v: i64) -> Result<Manifest, ApiError> {
    let text = store::catalog::manifest(&s.store.pool, e.id, v)
        .await?
        .ok_or_else(|| ApiError::store("a version without its manifest"))?;
    let files: Vec<FileEntry> = serde_json::from_str(&text)
        .map_err(|e| ApiError::store(format!("a stored manifest does not parse: {e}")))?;
    Manifest::new(files).map_err(|e| ApiError::store(format!("a stored manifest: {e}")))
}

fn unreadable(e: &EntryRow) -> ApiError {
    ApiError::forbidden(format!(
        "you may not read `{}` ({} access){}",
        e.name,
        e.access,
        if e.access == "gated" {
            "; ask its owners: POST /api/v1/catalog/{name}/access-requests"
        } else {
            ""
        }
    ))
}

/// `GET /catalog/{name}/versions/{ref}` (`files`: with the manifest).
pub async fn get_version(
    s: &Shared,
    who: &Principal,
    name: &str,
    reference: &str,
    files: bool,
) -> Result<t::CatalogVersion, ApiError> {
    site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !r.read {
        return Err(unreadable(&e));
    }
    let v = version_of(s, &e, reference).await?;
    let manifest = if files {
        Some(
            manifest_of(s, &e, v.version)
                .await?
                .files
                .into_iter()
                .map(|f| t::ManifestFile {
                    path: f.path,
                    size: f.size,
                    sha256: f.sha256,
                })
                .collect(),
        )
    } else {
        None
    };
    Ok(version_view(&e, &v, manifest))
}

/// Lineage references (`name@version`), each to a readable version.
async fn lineage_refs(
    s: &Shared,
    who: &Principal,
    base: &Option<String>,
    datasets: &[String],
    job: Option<i64>,
) -> Result<t::Lineage, ApiError> {
    if datasets.len() > 100 {
        return Err(ApiError::invalid("datasets: at most 100"));
    }
    let pin = async |r: &str, want: &str, field: &str| -> Result<String, ApiError> {
        let (kind, name, reference) = parse_ref(r)?;
        let reference =
            reference.ok_or_else(|| ApiError::invalid(format!("{field}: `{r}` needs @VERSION")))?;
        let (e, rt) = entry_for(s, who, &name).await?;
        if !rt.read {
            return Err(unreadable(&e));
        }
        if e.kind != want || kind.is_some_and(|k| k != want) {
            return Err(ApiError::invalid(format!(
                "{field}: `{name}` is not a {want}"
            )));
        }
        let v = version_of(s, &e, &reference).await?;
        Ok(format!("{}@{}", e.name, v.version))
    };
    let base = match base {
        Some(b) => Some(pin(b, "model", "base").await?),
        None => None,
    };
    let mut ds = Vec::new();
    for d in datasets {
        ds.push(pin(d, "dataset", "datasets").await?);
    }
    Ok(t::Lineage {
        base,
        datasets: ds,
        job: job.map(t::JobId),
    })
}

/// Checks that the site's store may hold `e` (its residency).
fn residency_allows(c: &Site, e: &EntryRow) -> Result<(), ApiError> {
    let res: Vec<String> = serde_json::from_str(&e.residency).unwrap_or_default();
    if !res.is_empty() && !res.contains(&c.site) {
        return Err(unprocessable(
            "residency_violation",
            format!(
                "`{}` may be stored only at {}; this server's catalog store is at site {}",
                e.name,
                res.join(", "),
                c.site
            ),
        ));
    }
    Ok(())
}

/// `PUT /catalog/{name}/aliases/{alias}`.
pub async fn set_alias(
    s: &Shared,
    who: &Principal,
    name: &str,
    alias: &str,
    req: t::SetAlias,
) -> Result<t::CatalogEntry, ApiError> {
    let c = site(s)?;
    valid_alias(alias)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !r.write {
        return Err(ApiError::forbidden(format!(
            "only `{}`'s organisation moves its aliases",
            e.name
        )));
    }
    let _w = c.writes.lock().await;
    let v = version_of(s, &e, &req.version.to_string()).await?;
    let now = s.clock.now();
    let mut ops = store::catalog::set_alias(e.id, alias, v.version);
    ops.push(s.audit_op(
        who,
        now,
        "set_catalog_alias",
        &format!("catalog {}", e.name),
        format!("{alias} -> {}", v.version),
    ));
    s.store.write(ops).await?;
    entry_view(s, &e, &r).await
}

/// `POST /catalog/{name}/grants` (its owners): a gated entry to an
/// organisation, until `days` from now.
pub async fn grant(
    s: &Shared,
    who: &Principal,
    name: &str,
    req: t::GrantEntry,
) -> Result<t::CatalogEntry, ApiError> {
    let c = site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !r.own {
        return Err(ApiError::forbidden(format!(
            "only `{}`'s owners grant it",
            e.name
        )));
    }
    if e.access != "gated" {
        return Err(unprocessable(
            "not_gated",
            format!(
                "`{}` is {} access: grants are for gated entries",
                e.name, e.access
            ),
        ));
    }
    let org = s.tenancy.org_named(&req.org).ok_or_else(|| {
        ApiError::invalid(format!(
            "org: `{}` not found",
            req.org.chars().take(64).collect::<String>()
        ))
    })?;
    if let Some(d) = req.days
        && !(d.is_finite() && d > 0.0 && d <= 3650.0)
    {
        return Err(ApiError::invalid("days: must be > 0 and at most 3650"));
    }
    let _w = c.writes.lock().await;
    let now = s.clock.now();
    let expires = req.days.map(|d| now.plus_days(d));
    let mut ops = store::catalog::grant(e.id, org.id, expires, now);
    ops.push(s.audit_op(
        who,
        now,
        "grant_catalog_entry",
        &format!("catalog {}", e.name),
        format!(
            "to org {} until {}",
            org.name,
            expires.map_or("revoked".into(), Ms::rfc3339)
        ),
    ));
    s.store.write(ops).await?;
    entry_view(s, &e, &r).await
}

/// `DELETE /catalog/{name}/grants/{org}` (its owners).
pub async fn revoke(
    s: &Shared,
    who: &Principal,
    name: &str,
    org: &str,
) -> Result<t::CatalogEntry, ApiError> {
    let c = site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !r.own {
        return Err(ApiError::forbidden(format!(
            "only `{}`'s owners revoke its grants",
            e.name
        )));
    }
    let o = s.tenancy.org_named(org).ok_or_else(|| {
        ApiError::not_found(
            "org_not_found",
            format!(
                "org `{}` not found",
                org.chars().take(64).collect::<String>()
            ),
        )
    })?;
    let _w = c.writes.lock().await;
    let now = s.clock.now();
    s.store
        .write(vec![
            store::catalog::revoke(e.id, o.id),
            s.audit_op(
                who,
                now,
                "revoke_catalog_entry",
                &format!("catalog {}", e.name),
                format!("from org {}", o.name),
            ),
        ])
        .await?;
    entry_view(s, &e, &r).await
}

/// `POST /catalog/{name}/access-requests`: an organisation asks for a
/// gated entry; its owners see the request with the entry.
pub async fn request_access(
    s: &Shared,
    who: &Principal,
    name: &str,
    req: t::RequestEntryAccess,
) -> Result<t::CatalogEntry, ApiError> {
    let c = site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    let Some(org) = who.org_id.filter(|_| who.role.in_org()) else {
        return Err(ApiError::forbidden(
            "an organisation's owner or member asks for access",
        ));
    };
    if e.access != "gated" {
        return Err(unprocessable(
            "not_gated",
            format!("`{}` is {} access", e.name, e.access),
        ));
    }
    if r.read {
        return Err(ApiError::conflict(
            "conflict",
            format!("your organisation reads `{}` already", e.name),
        ));
    }
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 2000 {
        return Err(ApiError::invalid("reason: 1 to 2,000 bytes"));
    }
    let _w = c.writes.lock().await;
    let now = s.clock.now();
    let mut ops = store::catalog::request_access(e.id, org, who.user_id, reason, now);
    ops.push(s.audit_op(
        who,
        now,
        "request_catalog_access",
        &format!("catalog {}", e.name),
        format!("org {}", s.tenancy.org_name(org)),
    ));
    ops.extend(crate::notify::mails(
        s,
        &s.tenancy.owners_of(e.org_id),
        &format!("[gigafab] access to {} requested by {}", e.name, s.tenancy.org_name(org)),
        &format!(
            "{} ({}) asks to read catalog entry {}:\n\n{}\n\nGrant it: gigafab catalog grant {} --org {} --days N\n",
            who.name,
            s.tenancy.org_name(org),
            e.name,
            reason,
            e.name,
            s.tenancy.org_name(org)
        ),
    ));
    s.store.write(ops).await?;
    entry_view(s, &e, &r).await
}

/// `POST /catalog/{name}/verify/{ref}` (its organisation, admins and
/// operators): the version hashed again where it lies.
pub async fn verify(
    s: &Shared,
    who: &Principal,
    name: &str,
    reference: &str,
) -> Result<t::VerifyReport, ApiError> {
    let c = site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !(r.write || who.global()) {
        return Err(ApiError::forbidden(format!(
            "only `{}`'s organisation, admins and operators verify it",
            e.name
        )));
    }
    let v = version_of(s, &e, reference).await?;
    let m = manifest_of(s, &e, v.version).await?;
    let problems = if v.in_place {
        let p = PathBuf::from(&v.location);
        let threads = c.threads;
        tokio::task::spawn_blocking(move || gigafab_catalog::verify_tree(&p, &m, threads))
            .await
            .map_err(|e| ApiError::store(e.to_string()))?
    } else {
        c.blobs.verify(&v.location, &m, c.threads).await
    };
    let problems = match problems {
        Ok(p) => p,
        Err(gigafab_catalog::Error::NotFound(p)) => vec![gigafab_catalog::Problem {
            path: p,
            kind: "missing".into(),
            detail: "the version's directory is gone".into(),
        }],
        Err(e) => return Err(catalog_err(e)),
    };
    Ok(t::VerifyReport {
        entry: e.name.clone(),
        version: v.version,
        intact: problems.is_empty(),
        problems: problems
            .into_iter()
            .map(|p| t::VerifyProblem {
                path: p.path,
                kind: p.kind,
                detail: p.detail,
            })
            .collect(),
    })
}

/// `GET /catalog/{name}/lineage/{ref}`: the version's ancestors (those the
/// caller may read), breadth first.
pub async fn lineage(
    s: &Shared,
    who: &Principal,
    name: &str,
    reference: &str,
) -> Result<t::LineageGraph, ApiError> {
    site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !r.read {
        return Err(unreadable(&e));
    }
    let v = version_of(s, &e, reference).await?;
    let first = format!("{}@{}", e.name, v.version);
    let mut nodes = vec![first.clone()];
    let mut edges = Vec::new();
    let mut queue = std::collections::VecDeque::from([(first, v.lineage.clone())]);
    while let Some((node, lin)) = queue.pop_front() {
        if nodes.len() > 1000 {
            break;
        }
        let l: t::Lineage = serde_json::from_str(&lin).unwrap_or_default();
        if let Some(j) = l.job {
            edges.push((node.clone(), format!("job {j}"), "job".to_string()));
        }
        let parents = l
            .base
            .iter()
            .map(|b| (b.clone(), "base"))
            .chain(l.datasets.iter().map(|d| (d.clone(), "dataset")));
        for (p, rel) in parents {
            // a parent the caller may not see is not named
            let Some((pn, pv)) = p.rsplit_once('@') else {
                continue;
            };
            let Ok(Some(pe)) = store::catalog::entry(&s.store.pool, pn).await else {
                continue;
            };
            let grants = store::catalog::grants(&s.store.pool, pe.id).await?;
            let r = rights(who, &pe, &grants, s.clock.now());
            if !r.see {
                edges.push((node.clone(), "(not visible to you)".into(), rel.to_string()));
                continue;
            }
            edges.push((node.clone(), p.clone(), rel.to_string()));
            if nodes.contains(&p) {
                continue;
            }
            nodes.push(p.clone());
            if !r.read {
                continue;
            }
            if let Ok(pv) = version_of(s, &pe, pv).await {
                queue.push_back((p, pv.lineage));
            }
        }
    }
    Ok(t::LineageGraph { nodes, edges })
}

mod jobs;
pub mod site;
mod versions;
pub use jobs::*;
pub use versions::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn input(res: &[&str]) -> Input {
        Input {
            reference: "dataset:x@1".into(),
            var: "GIGAFAB_INPUT_X".into(),
            path: "/x".into(),
            manifest_hash: String::new(),
            residency: res.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn entry(access: &str) -> EntryRow {
        EntryRow {
            id: 1,
            name: "e".into(),
            org_id: 10,
            kind: "dataset".into(),
            access: access.into(),
            licence: "MIT".into(),
            card: "{}".into(),
            residency: "[]".into(),
            created_ms: Ms(0),
        }
    }

    fn who(role: Role, org: Option<i64>) -> Principal {
        Principal {
            user_id: 5,
            name: "u".into(),
            login: "u".into(),
            role,
            org_id: org,
            token_id: 1,
            expires_ms: None,
        }
    }

    #[test]
    fn who_reads_what() {
        let (now, soon, past) = (Ms(1_000), Ms(2_000), Ms(500));
        let other = who(Role::Member, Some(20));
        let gated = entry("gated");
        // gated: seen by all, read by its organisation and by grants not expired
        let r = rights(&other, &gated, &[], now);
        assert!(r.see && !r.read && !r.write && !r.own);
        assert!(rights(&other, &gated, &[(20, Some(soon))], now).read);
        assert!(rights(&other, &gated, &[(20, None)], now).read);
        assert!(
            !rights(&other, &gated, &[(20, Some(past))], now).read,
            "an expired grant"
        );
        assert!(
            !rights(&other, &gated, &[(30, None)], now).read,
            "another's grant"
        );
        // org: not even seen by others; operators see its card only
        let org = entry("org");
        assert!(
            !rights(&other, &org, &[(20, None)], now).see,
            "grants are for gated entries"
        );
        let op = rights(&who(Role::Operator, None), &org, &[], now);
        assert!(op.see && !op.read && !op.write);
        // its organisation: members read and write, owners own
        let m = rights(&who(Role::Member, Some(10)), &org, &[], now);
        assert!(m.read && m.write && !m.own);
        assert!(rights(&who(Role::Owner, Some(10)), &org, &[], now).own);
        assert!(rights(&other, &entry("public"), &[], now).read);
        assert!(!rights(&other, &entry("public"), &[], now).write);
    }

    #[test]
    fn references_parse() {
        assert_eq!(
            parse_ref("dataset:imagenet@3").unwrap(),
            (Some("dataset".into()), "imagenet".into(), Some("3".into()))
        );
        assert_eq!(
            parse_ref("llama@prod").unwrap(),
            (None, "llama".into(), Some("prod".into()))
        );
        assert_eq!(parse_ref("llama").unwrap(), (None, "llama".into(), None));
        for bad in ["table:x@1", "x@", "../x@1", "a b@1", "dataset:@1"] {
            assert!(parse_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn residency_intersects() {
        assert_eq!(allowed_sites(&[]), None);
        assert_eq!(allowed_sites(&[input(&[])]), None);
        assert_eq!(
            allowed_sites(&[input(&["paris", "lyon"]), input(&[]), input(&["lyon"])]),
            Some(vec!["lyon".to_string()])
        );
        assert_eq!(
            allowed_sites(&[input(&["paris"]), input(&["lyon"])]),
            Some(vec![])
        );
    }

    #[test]
    fn names_and_licences() {
        assert_eq!(input_var("imagenet-1k.v2"), "GIGAFAB_INPUT_IMAGENET_1K_V2");
        for ok in [
            "Apache-2.0",
            "CC-BY-4.0 OR MIT",
            "(MIT AND BSD-3-Clause)",
            "GPL-2.0+ WITH Classpath-exception-2.0",
        ] {
            valid_licence(ok).unwrap();
        }
        for bad in ["", "MIT; rm -rf", "<b>"] {
            assert!(valid_licence(bad).is_err(), "{bad}");
        }
        valid_alias("latest").unwrap();
        for bad in ["1", "Prod", "", "a b"] {
            assert!(valid_alias(bad).is_err(), "{bad}");
        }
    }
}
