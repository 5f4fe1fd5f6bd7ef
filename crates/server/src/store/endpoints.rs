//! Model endpoints' SQL: the endpoints, their API keys (hashed) with what
//! each served, and their autoscaler's events.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

/// An endpoint as the `endpoints` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointRow {
    pub id: i64,
    pub name: String,
    pub org_id: i64,
    pub user_id: i64,
    pub alloc_id: i64,
    pub project: Option<String>,
    /// JSON of `endpoints::Settings`.
    pub spec: String,
    pub created_ms: Ms,
}

/// An API key as `endpoint_keys` holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRow {
    pub id: i64,
    pub endpoint_id: i64,
    pub name: Option<String>,
    pub prefix: String,
    pub hash: String,
    pub created_ms: Ms,
    pub expires_ms: Option<Ms>,
    pub revoked_ms: Option<Ms>,
    pub requests: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

pub fn insert(r: &EndpointRow) -> Op {
    op(
        "INSERT INTO endpoints (id, name, org_id, user_id, alloc_id, project, spec, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            Arg::I(r.id),
            Arg::S(r.name.clone()),
            Arg::I(r.org_id),
            Arg::I(r.user_id),
            Arg::I(r.alloc_id),
            Arg::OS(r.project.clone()),
            Arg::S(r.spec.clone()),
            Arg::I(r.created_ms.0),
        ],
    )
}

/// New settings of endpoint `id`.
pub fn update_spec(id: i64, spec: String) -> Op {
    op(
        "UPDATE endpoints SET spec = $1 WHERE id = $2",
        vec![Arg::S(spec), Arg::I(id)],
    )
}

/// Endpoint `id` is deleted (its name free again); its keys stop working.
pub fn delete(id: i64, now: Ms) -> Vec<Op> {
    vec![
        op(
            "UPDATE endpoints SET deleted_ms = $1 WHERE id = $2 AND deleted_ms IS NULL",
            vec![Arg::I(now.0), Arg::I(id)],
        ),
        op(
            "UPDATE endpoint_keys SET revoked_ms = $1 WHERE endpoint_id = $2 AND revoked_ms IS NULL",
            vec![Arg::I(now.0), Arg::I(id)],
        ),
    ]
}

const COLUMNS: &str = "id, name, org_id, user_id, alloc_id, project, spec, created_ms";

fn row(r: &sqlx::any::AnyRow) -> Result<EndpointRow, sqlx::Error> {
    Ok(EndpointRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        org_id: r.try_get(2)?,
        user_id: r.try_get(3)?,
        alloc_id: r.try_get(4)?,
        project: r.try_get(5)?,
        spec: r.try_get(6)?,
        created_ms: Ms(r.try_get(7)?),
    })
}

/// Every live endpoint, oldest first.
pub async fn live(pool: &AnyPool) -> Result<Vec<EndpointRow>, sqlx::Error> {
    let q = format!("SELECT {COLUMNS} FROM endpoints WHERE deleted_ms IS NULL ORDER BY id");
    sqlx::query(&q)
        .fetch_all(pool)
        .await?
        .iter()
        .map(row)
        .collect()
}

/// The highest id of `table` (0 when empty): endpoints, keys, events.
pub async fn max_id(pool: &AnyPool, table: Table) -> Result<i64, sqlx::Error> {
    let q = match table {
        Table::Endpoints => "SELECT COALESCE(MAX(id), 0) FROM endpoints",
        Table::Keys => "SELECT COALESCE(MAX(id), 0) FROM endpoint_keys",
        Table::Events => "SELECT COALESCE(MAX(id), 0) FROM endpoint_events",
    };
    sqlx::query(q).fetch_one(pool).await?.try_get(0)
}

/// The tables whose ids the server hands out.
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Endpoints,
    Keys,
    Events,
}

pub fn insert_key(k: &KeyRow, created_by: i64) -> Op {
    op(
        "INSERT INTO endpoint_keys (id, endpoint_id, name, prefix, hash, created_by, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            Arg::I(k.id),
            Arg::I(k.endpoint_id),
            Arg::OS(k.name.clone()),
            Arg::S(k.prefix.clone()),
            Arg::S(k.hash.clone()),
            Arg::I(created_by),
            Arg::I(k.created_ms.0),
            Arg::OI(k.expires_ms.map(|m| m.0)),
        ],
    )
}

pub fn revoke_key(id: i64, now: Ms) -> Op {
    op(
        "UPDATE endpoint_keys SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
        vec![Arg::I(now.0), Arg::I(id)],
    )
}

/// Adds what key `id` served since the last flush.
pub fn add_key_usage(id: i64, requests: i64, errors: i64, prompt: i64, completion: i64) -> Op {
    op(
        "UPDATE endpoint_keys SET requests = requests + $1, errors = errors + $2, prompt_tokens = prompt_tokens + $3, completion_tokens = completion_tokens + $4 WHERE id = $5",
        vec![
            Arg::I(requests),
            Arg::I(errors),
            Arg::I(prompt),
            Arg::I(completion),
            Arg::I(id),
        ],
    )
}

/// Every key of the live endpoints (revoked and expired ones included).
pub async fn keys(pool: &AnyPool) -> Result<Vec<KeyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT k.id, k.endpoint_id, k.name, k.prefix, k.hash, k.created_ms, k.expires_ms, k.revoked_ms, k.requests, k.errors, k.prompt_tokens, k.completion_tokens FROM endpoint_keys k JOIN endpoints e ON e.id = k.endpoint_id WHERE e.deleted_ms IS NULL ORDER BY k.id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(KeyRow {
                id: r.try_get(0)?,
                endpoint_id: r.try_get(1)?,
                name: r.try_get(2)?,
                prefix: r.try_get(3)?,
                hash: r.try_get(4)?,
                created_ms: Ms(r.try_get(5)?),
                expires_ms: r.try_get::<Option<i64>, _>(6)?.map(Ms),
                revoked_ms: r.try_get::<Option<i64>, _>(7)?.map(Ms),
                requests: r.try_get(8)?,
                errors: r.try_get(9)?,
                prompt_tokens: r.try_get(10)?,
                completion_tokens: r.try_get(11)?,
            })
        })
        .collect()
}

/// One event of endpoint `endpoint`.
#[allow(clippy::too_many_arguments)]
pub fn event(
    id: i64,
    endpoint: i64,
    at: Ms,
    kind: &str,
    from: u32,
    to: u32,
    reason: &str,
    detail: String,
) -> Op {
    op(
        "INSERT INTO endpoint_events (id, endpoint_id, at_ms, kind, from_replicas, to_replicas, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        vec![
            Arg::I(id),
            Arg::I(endpoint),
            Arg::I(at.0),
            Arg::S(kind.into()),
            Arg::I(from as i64),
            Arg::I(to as i64),
            Arg::S(reason.into()),
            Arg::S(detail),
        ],
    )
}

/// The last `limit` events of endpoint `endpoint`, newest first.
pub async fn events(
    pool: &AnyPool,
    endpoint: i64,
    limit: i64,
) -> Result<Vec<gigafab_api::EndpointEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at_ms, kind, from_replicas, to_replicas, reason, detail FROM endpoint_events WHERE endpoint_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(endpoint)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(gigafab_api::EndpointEvent {
                at: Ms(r.try_get(0)?).rfc3339(),
                kind: r.try_get(1)?,
                from_replicas: r.try_get::<i64, _>(2)?.max(0) as u32,
                to_replicas: r.try_get::<i64, _>(3)?.max(0) as u32,
                reason: r.try_get(4)?,
                detail: r.try_get(5)?,
            })
        })
        .collect()
}

/// Job `job` is a replica of endpoint `endpoint` (in its submission's
/// commit).
pub fn tag_replica(job: i64, endpoint: i64) -> Op {
    op(
        "UPDATE jobs SET endpoint_id = $1 WHERE id = $2",
        vec![Arg::I(endpoint), Arg::I(job)],
    )
}

/// Accelerator-seconds (billing-weighted), energy (J) and carbon (g, None
/// when no run had any) of the ended runs of endpoint `endpoint`'s jobs.
pub async fn replica_totals(
    pool: &AnyPool,
    endpoint: i64,
) -> Result<(f64, f64, Option<f64>), sqlx::Error> {
    let r = sqlx::query(
        "SELECT COALESCE(SUM(gpu_s), 0.0), COALESCE(SUM(energy_j), 0.0), SUM(carbon_g) FROM jobs WHERE endpoint_id = $1",
    )
    .bind(endpoint)
    .fetch_one(pool)
    .await?;
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
}

/// The queued and running jobs of endpoint `endpoint`, oldest first.
pub async fn replica_jobs(pool: &AnyPool, endpoint: i64) -> Result<Vec<i64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id FROM jobs WHERE endpoint_id = $1 AND state IN ('queued', 'running') ORDER BY id",
    )
    .bind(endpoint)
    .fetch_all(pool)
    .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}
