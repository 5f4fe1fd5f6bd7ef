//! The fleet's writes: drained nodes.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

pub fn drain(node: &str, at_ms: Ms) -> Op {
    op(
        "INSERT INTO drained_nodes (name, at_ms) VALUES ($1, $2)",
        vec![Arg::S(node.into()), Arg::I(at_ms.0)],
    )
}

pub fn resume(node: &str) -> Op {
    op(
        "DELETE FROM drained_nodes WHERE name = $1",
        vec![Arg::S(node.into())],
    )
}

/// The names of the drained nodes.
pub async fn drained(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT name FROM drained_nodes")
        .fetch_all(pool)
        .await?;
    rows.iter().map(|r| r.try_get(0)).collect()
}
