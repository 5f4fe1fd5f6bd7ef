//! Interactive sessions' SQL (docs/sessions.md).

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

/// A session as the `sessions` table holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: i64,
    pub job_id: i64,
    pub user_id: i64,
    pub org_id: i64,
    pub app: String,
    pub port: i64,
    /// The app's own secret (the proxy sends it; never shown).
    pub token: String,
    pub idle_timeout_s: i64,
    pub created_ms: Ms,
    pub last_activity_ms: Option<Ms>,
    pub ended_ms: Option<Ms>,
    pub ended_reason: Option<String>,
}

pub fn insert(r: &SessionRow) -> Op {
    op(
        "INSERT INTO sessions (id, job_id, user_id, org_id, app, port, token, idle_timeout_s, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            Arg::I(r.id),
            Arg::I(r.job_id),
            Arg::I(r.user_id),
            Arg::I(r.org_id),
            Arg::S(r.app.clone()),
            Arg::I(r.port),
            Arg::S(r.token.clone()),
            Arg::I(r.idle_timeout_s),
            Arg::I(r.created_ms.0),
        ],
    )
}

/// Session `id` ended at `now`, for `reason`.
pub fn end(id: i64, now: Ms, reason: &str) -> Op {
    op(
        "UPDATE sessions SET ended_ms = $1, ended_reason = $2 WHERE id = $3 AND ended_ms IS NULL",
        vec![Arg::I(now.0), Arg::S(reason.into()), Arg::I(id)],
    )
}

/// Session `id` was last active at `at`.
pub fn touch(id: i64, at: Ms) -> Op {
    op(
        "UPDATE sessions SET last_activity_ms = $1 WHERE id = $2",
        vec![Arg::I(at.0), Arg::I(id)],
    )
}

const COLUMNS: &str = "id, job_id, user_id, org_id, app, port, token, idle_timeout_s, created_ms, last_activity_ms, ended_ms, ended_reason";

fn row(r: &sqlx::any::AnyRow) -> Result<SessionRow, sqlx::Error> {
    Ok(SessionRow {
        id: r.try_get(0)?,
        job_id: r.try_get(1)?,
        user_id: r.try_get(2)?,
        org_id: r.try_get(3)?,
        app: r.try_get(4)?,
        port: r.try_get(5)?,
        token: r.try_get(6)?,
        idle_timeout_s: r.try_get(7)?,
        created_ms: Ms(r.try_get(8)?),
        last_activity_ms: r.try_get::<Option<i64>, _>(9)?.map(Ms),
        ended_ms: r.try_get::<Option<i64>, _>(10)?.map(Ms),
        ended_reason: r.try_get(11)?,
    })
}

/// The sessions that have not ended, oldest first (restored at start).
pub async fn live(pool: &AnyPool) -> Result<Vec<SessionRow>, sqlx::Error> {
    let q = format!("SELECT {COLUMNS} FROM sessions WHERE ended_ms IS NULL ORDER BY id");
    sqlx::query(&q)
        .fetch_all(pool)
        .await?
        .iter()
        .map(row)
        .collect()
}

/// Session `id`.
pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<SessionRow>, sqlx::Error> {
    let q = format!("SELECT {COLUMNS} FROM sessions WHERE id = $1");
    sqlx::query(&q)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(row)
        .transpose()
}

/// The newest `limit` sessions of `user`, newest first.
pub async fn of_user(
    pool: &AnyPool,
    user: i64,
    limit: i64,
) -> Result<Vec<SessionRow>, sqlx::Error> {
    let q = format!("SELECT {COLUMNS} FROM sessions WHERE user_id = $1 ORDER BY id DESC LIMIT $2");
    sqlx::query(&q)
        .bind(user)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(row)
        .collect()
}

/// The highest session id (0 when none).
pub async fn max_id(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COALESCE(MAX(id), 0) FROM sessions")
        .fetch_one(pool)
        .await?
        .try_get(0)
}
