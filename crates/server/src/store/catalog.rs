//! The catalog aggregate's reads and writes.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

#[derive(Debug, Clone)]
pub struct EntryRow {
    pub id: i64,
    pub name: String,
    pub org_id: i64,
    pub kind: String,
    pub access: String,
    pub licence: String,
    /// JSON card.
    pub card: String,
    /// JSON array of site names.
    pub residency: String,
    pub created_ms: Ms,
}

#[derive(Debug, Clone)]
pub struct VersionRow {
    pub entry_id: i64,
    pub version: i64,
    pub manifest_hash: String,
    pub files: i64,
    pub bytes: i64,
    pub location: String,
    pub in_place: bool,
    /// JSON lineage.
    pub lineage: String,
    pub user: String,
    pub created_ms: Ms,
}

const ENTRY: &str = "SELECT id, name, org_id, kind, access, licence, card, residency, created_ms FROM catalog_entries";

fn entry_of(r: &sqlx::any::AnyRow) -> Result<EntryRow, sqlx::Error> {
    Ok(EntryRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        org_id: r.try_get(2)?,
        kind: r.try_get(3)?,
        access: r.try_get(4)?,
        licence: r.try_get(5)?,
        card: r.try_get(6)?,
        residency: r.try_get(7)?,
        created_ms: Ms(r.try_get(8)?),
    })
}

pub async fn entries(pool: &AnyPool) -> Result<Vec<EntryRow>, sqlx::Error> {
    let rows = sqlx::query(&format!("{ENTRY} ORDER BY name"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(entry_of).collect()
}

pub async fn entry(pool: &AnyPool, name: &str) -> Result<Option<EntryRow>, sqlx::Error> {
    sqlx::query(&format!("{ENTRY} WHERE name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(entry_of)
        .transpose()
}

const VERSION: &str = "SELECT v.entry_id, v.version, v.manifest_hash, v.files, v.bytes, v.location, v.in_place, v.lineage, u.name, v.created_ms FROM catalog_versions v JOIN users u ON u.id = v.user_id";

fn version_of(r: &sqlx::any::AnyRow) -> Result<VersionRow, sqlx::Error> {
    Ok(VersionRow {
        entry_id: r.try_get(0)?,
        version: r.try_get(1)?,
        manifest_hash: r.try_get(2)?,
        files: r.try_get(3)?,
        bytes: r.try_get(4)?,
        location: r.try_get(5)?,
        in_place: r.try_get::<i64, _>(6)? != 0,
        lineage: r.try_get(7)?,
        user: r.try_get(8)?,
        created_ms: Ms(r.try_get(9)?),
    })
}

/// The versions of entry `id`, oldest first.
pub async fn versions(pool: &AnyPool, id: i64) -> Result<Vec<VersionRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "{VERSION} WHERE v.entry_id = $1 ORDER BY v.version"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter().map(version_of).collect()
}

pub async fn version(pool: &AnyPool, id: i64, v: i64) -> Result<Option<VersionRow>, sqlx::Error> {
    sqlx::query(&format!(
        "{VERSION} WHERE v.entry_id = $1 AND v.version = $2"
    ))
    .bind(id)
    .bind(v)
    .fetch_optional(pool)
    .await?
    .as_ref()
    .map(version_of)
    .transpose()
}

/// The version of entry `id` with manifest `hash`, if one has it.
pub async fn version_with_hash(
    pool: &AnyPool,
    id: i64,
    hash: &str,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT version FROM catalog_versions WHERE entry_id = $1 AND manifest_hash = $2",
    )
    .bind(id)
    .bind(hash)
    .fetch_optional(pool)
    .await
}

/// Version `v`'s manifest (JSON).
pub async fn manifest(pool: &AnyPool, id: i64, v: i64) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT manifest FROM catalog_versions WHERE entry_id = $1 AND version = $2")
        .bind(id)
        .bind(v)
        .fetch_optional(pool)
        .await
}

pub async fn aliases(pool: &AnyPool, id: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT alias, version FROM catalog_aliases WHERE entry_id = $1 ORDER BY alias",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Grants of entry `id`: (organisation, expiry).
pub async fn grants(pool: &AnyPool, id: i64) -> Result<Vec<(i64, Option<Ms>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT org_id, expires_ms FROM catalog_grants WHERE entry_id = $1 ORDER BY org_id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get::<Option<i64>, _>(1)?.map(Ms))))
        .collect()
}

/// Every grant: (entry, organisation, expiry), for a listing.
pub async fn all_grants(pool: &AnyPool) -> Result<Vec<(i64, i64, Option<Ms>)>, sqlx::Error> {
    let rows = sqlx::query("SELECT entry_id, org_id, expires_ms FROM catalog_grants")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get::<Option<i64>, _>(2)?.map(Ms),
            ))
        })
        .collect()
}

/// Pending access requests of entry `id`: (organisation, user name, reason, at).
pub async fn access_requests(
    pool: &AnyPool,
    id: i64,
) -> Result<Vec<(i64, String, String, Ms)>, sqlx::Error> {
    let rows = sqlx::query("SELECT a.org_id, u.name, a.reason, a.at_ms FROM catalog_access_requests a JOIN users u ON u.id = a.user_id WHERE a.entry_id = $1 ORDER BY a.at_ms")
        .bind(id)
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                Ms(r.try_get(3)?),
            ))
        })
        .collect()
}

pub async fn max_entry_id(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COALESCE(MAX(id), 0) FROM catalog_entries")
        .fetch_one(pool)
        .await?
        .try_get(0)
}

pub async fn max_version(pool: &AnyPool, id: i64) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COALESCE(MAX(version), 0) FROM catalog_versions WHERE entry_id = $1")
        .bind(id)
        .fetch_one(pool)
        .await?
        .try_get(0)
}

pub fn insert_entry(e: &EntryRow) -> Op {
    op(
        "INSERT INTO catalog_entries (id, name, org_id, kind, access, licence, card, residency, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            Arg::I(e.id),
            Arg::S(e.name.clone()),
            Arg::I(e.org_id),
            Arg::S(e.kind.clone()),
            Arg::S(e.access.clone()),
            Arg::S(e.licence.clone()),
            Arg::S(e.card.clone()),
            Arg::S(e.residency.clone()),
            Arg::I(e.created_ms.0),
        ],
    )
}

/// A new version (`manifest`: its JSON).
#[allow(clippy::too_many_arguments)]
pub fn insert_version(v: &VersionRow, manifest: String, job: Option<i64>, user: i64) -> Op {
    op(
        "INSERT INTO catalog_versions (entry_id, version, manifest_hash, files, bytes, location, in_place, manifest, lineage, job_id, user_id, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        vec![
            Arg::I(v.entry_id),
            Arg::I(v.version),
            Arg::S(v.manifest_hash.clone()),
            Arg::I(v.files),
            Arg::I(v.bytes),
            Arg::S(v.location.clone()),
            Arg::I(i64::from(v.in_place)),
            Arg::S(manifest),
            Arg::S(v.lineage.clone()),
            Arg::OI(job),
            Arg::I(user),
            Arg::I(v.created_ms.0),
        ],
    )
}

/// Points `alias` of entry `id` at `version` (two statements: portable).
pub fn set_alias(id: i64, alias: &str, version: i64) -> Vec<Op> {
    vec![
        op(
            "DELETE FROM catalog_aliases WHERE entry_id = $1 AND alias = $2",
            vec![Arg::I(id), Arg::S(alias.into())],
        ),
        op(
            "INSERT INTO catalog_aliases (entry_id, alias, version) VALUES ($1, $2, $3)",
            vec![Arg::I(id), Arg::S(alias.into()), Arg::I(version)],
        ),
    ]
}

/// Grants entry `id` to `org` until `expires` (replacing a grant it had;
/// its pending request is answered).
pub fn grant(id: i64, org: i64, expires: Option<Ms>, now: Ms) -> Vec<Op> {
    vec![
        revoke(id, org),
        op(
            "INSERT INTO catalog_grants (entry_id, org_id, expires_ms, at_ms) VALUES ($1, $2, $3, $4)",
            vec![
                Arg::I(id),
                Arg::I(org),
                Arg::OI(expires.map(|m| m.0)),
                Arg::I(now.0),
            ],
        ),
        op(
            "DELETE FROM catalog_access_requests WHERE entry_id = $1 AND org_id = $2",
            vec![Arg::I(id), Arg::I(org)],
        ),
    ]
}

pub fn revoke(id: i64, org: i64) -> Op {
    op(
        "DELETE FROM catalog_grants WHERE entry_id = $1 AND org_id = $2",
        vec![Arg::I(id), Arg::I(org)],
    )
}

/// `org`'s request for entry `id` (replacing one it had).
pub fn request_access(id: i64, org: i64, user: i64, reason: &str, now: Ms) -> Vec<Op> {
    vec![
        op(
            "DELETE FROM catalog_access_requests WHERE entry_id = $1 AND org_id = $2",
            vec![Arg::I(id), Arg::I(org)],
        ),
        op(
            "INSERT INTO catalog_access_requests (entry_id, org_id, user_id, reason, at_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![
                Arg::I(id),
                Arg::I(org),
                Arg::I(user),
                Arg::S(reason.into()),
                Arg::I(now.0),
            ],
        ),
    ]
}

/// Completed jobs above `floor` that name an output model and whose
/// output was not taken yet, 16 at most, by id: (job, spec JSON, user).
pub async fn outputs_due(
    pool: &AnyPool,
    floor: i64,
) -> Result<Vec<(i64, String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT j.id, j.spec, j.user_id FROM jobs j WHERE j.id > $1 AND j.state = 'completed' \
         AND j.spec LIKE '%\"output_model\"%' \
         AND NOT EXISTS (SELECT 1 FROM catalog_outputs o WHERE o.job_id = j.id) ORDER BY j.id LIMIT 16",
    )
    .bind(floor)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

pub fn output_done(
    job: i64,
    entry: Option<i64>,
    version: Option<i64>,
    message: &str,
    now: Ms,
) -> Op {
    op(
        "INSERT INTO catalog_outputs (job_id, entry_id, version, message, at_ms) VALUES ($1, $2, $3, $4, $5)",
        vec![
            Arg::I(job),
            Arg::OI(entry),
            Arg::OI(version),
            Arg::S(message.into()),
            Arg::I(now.0),
        ],
    )
}

/// What came of job `id`'s output: (entry name, version, message).
pub async fn output(
    pool: &AnyPool,
    id: i64,
) -> Result<Option<(String, Option<i64>, String)>, sqlx::Error> {
    sqlx::query("SELECT e.name, o.version, o.message FROM catalog_outputs o LEFT JOIN catalog_entries e ON e.id = o.entry_id WHERE o.job_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .transpose()
}

/// The lowest id of a job not ended yet (none: past the highest).
pub async fn first_open_job(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let open: Option<i64> =
        sqlx::query_scalar("SELECT MIN(id) FROM jobs WHERE state IN ('queued', 'running')")
            .fetch_one(pool)
            .await?;
    match open {
        Some(o) => Ok(o),
        None => Ok(
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM jobs")
                .fetch_one(pool)
                .await?
                .unwrap_or(0)
                + 1,
        ),
    }
}
