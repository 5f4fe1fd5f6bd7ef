//! The audit log's writes.

use super::commit::{Arg, Op, op};

pub(crate) const AUDIT_INSERT: &str = "INSERT INTO audit (id, at_ms, user_id, user_name, action, object, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// One line of the audit log: who did what to which object.
pub fn insert(
    id: i64,
    at_ms: i64,
    user_id: i64,
    user_name: String,
    action: &str,
    object: &str,
    detail: String,
) -> Op {
    op(
        AUDIT_INSERT,
        vec![
            Arg::I(id),
            Arg::I(at_ms),
            Arg::OI(Some(user_id)),
            Arg::S(user_name),
            Arg::S(action.into()),
            Arg::S(object.into()),
            Arg::S(detail),
        ],
    )
}
