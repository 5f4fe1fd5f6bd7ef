//! The fleet's writes: drained nodes.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

pub fn drain(node: &str, at_ms: Ms, reason: Option<&str>) -> Op {
    op(
        "INSERT INTO drained_nodes (name, at_ms, reason) VALUES ($1, $2, $3)",
        vec![
            Arg::S(node.into()),
            Arg::I(at_ms.0),
            Arg::OS(reason.map(str::to_string)),
        ],
    )
}

pub fn resume(node: &str) -> Op {
    op(
        "DELETE FROM drained_nodes WHERE name = $1",
        vec![Arg::S(node.into())],
    )
}

/// The drained nodes and why.
pub async fn drained(pool: &AnyPool) -> Result<Vec<(String, Option<String>)>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, reason FROM drained_nodes")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
