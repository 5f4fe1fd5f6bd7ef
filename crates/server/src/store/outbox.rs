//! The outbox: notifications written with the transition that causes
//! them, sent later by the mailer.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

/// A notification to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub id: i64,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub attempts: i64,
}

pub fn insert(id: i64, at: Ms, recipient: &str, subject: &str, body: &str) -> Op {
    op(
        "INSERT INTO outbox (id, at_ms, recipient, subject, body, sent_ms, attempts, last_error) VALUES ($1, $2, $3, $4, $5, NULL, 0, NULL)",
        vec![
            Arg::I(id),
            Arg::I(at.0),
            Arg::S(recipient.into()),
            Arg::S(subject.into()),
            Arg::S(body.into()),
        ],
    )
}

pub fn sent(id: i64, at: Ms) -> Op {
    op(
        "UPDATE outbox SET sent_ms = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1",
        vec![Arg::I(id), Arg::I(at.0)],
    )
}

pub fn failed(id: i64, error: &str) -> Op {
    op(
        "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = $1",
        vec![Arg::I(id), Arg::S(error.into())],
    )
}

/// Up to `limit` unsent mails tried fewer than `max_attempts` times, oldest first.
pub async fn unsent(
    pool: &AnyPool,
    max_attempts: i64,
    limit: i64,
) -> Result<Vec<Mail>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, recipient, subject, body, attempts FROM outbox WHERE sent_ms IS NULL AND attempts < $1 ORDER BY id LIMIT $2",
    )
    .bind(max_attempts)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Mail {
                id: r.try_get(0)?,
                recipient: r.try_get(1)?,
                subject: r.try_get(2)?,
                body: r.try_get(3)?,
                attempts: r.try_get(4)?,
            })
        })
        .collect()
}

/// The highest id of the outbox (0 when empty).
pub async fn max_id(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COALESCE(MAX(id), 0) FROM outbox")
        .fetch_one(pool)
        .await?
        .try_get(0)
}
