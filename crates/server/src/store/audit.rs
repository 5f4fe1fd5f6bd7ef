//! The audit log's writes.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, foldable};
use crate::time::Ms;
use crate::time::rfc3339;

const AUDIT_INSERT: &str = "INSERT INTO audit (id, at_ms, user_id, user_name, action, object, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// One line of the audit log: who did what to which object.
pub fn insert(
    id: i64,
    at_ms: Ms,
    user_id: i64,
    user_name: String,
    action: &str,
    object: &str,
    detail: String,
) -> Op {
    foldable(
        AUDIT_INSERT,
        vec![
            Arg::I(id),
            Arg::I(at_ms.0),
            Arg::OI(Some(user_id)),
            Arg::S(user_name),
            Arg::S(action.into()),
            Arg::S(object.into()),
            Arg::S(detail),
        ],
    )
}

/// Up to `limit` lines of the audit log below id `before` (the page
/// cursor), newest first.
pub async fn list(
    pool: &AnyPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<gigafab_api::AuditEntry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at_ms, user_name, action, object, detail FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(gigafab_api::AuditEntry {
                id: r.try_get(0)?,
                at: rfc3339(r.try_get(1)?),
                user: r.try_get(2)?,
                action: r.try_get(3)?,
                object: r.try_get(4)?,
                detail: r.try_get(5)?,
            })
        })
        .collect()
}

/// The highest id of the audit log (0 when empty).
pub async fn max_id(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COALESCE(MAX(id), 0) FROM audit")
        .fetch_one(pool)
        .await?
        .try_get(0)
}
