//! Idempotency keys: what a user's creating request with an
//! `Idempotency-Key` made (a job, an allocation, an access request),
//! written in the same commit as the object itself.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

/// How long a key names its object.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;

/// What a key can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Job,
    Allocation,
    Request,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Allocation => "allocation",
            Kind::Request => "request",
        }
    }
}

/// `key` of `user` names object `id` of `kind`.
pub fn insert(user: i64, key: &str, kind: Kind, id: i64, now: Ms) -> Op {
    op(
        "INSERT INTO idempotency_keys (user_id, key, kind, object_id, created_ms) VALUES ($1, $2, $3, $4, $5)",
        vec![
            Arg::I(user),
            Arg::S(key.to_string()),
            Arg::S(kind.as_str().to_string()),
            Arg::I(id),
            Arg::I(now.0),
        ],
    )
}

/// Forgets the keys older than [`KEEP_MS`].
pub fn expire(now: Ms) -> Op {
    op(
        "DELETE FROM idempotency_keys WHERE created_ms < $1",
        vec![Arg::I(now.0 - KEEP_MS)],
    )
}

/// What `key` of `user` named within [`KEEP_MS`]: its kind and id.
pub async fn get(
    pool: &AnyPool,
    user: i64,
    key: &str,
    now: Ms,
) -> Result<Option<(String, i64)>, sqlx::Error> {
    let r = sqlx::query(
        "SELECT kind, object_id FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND created_ms >= $3",
    )
    .bind(user)
    .bind(key)
    .bind(now.0 - KEEP_MS)
    .fetch_optional(pool)
    .await?;
    r.map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .transpose()
}
