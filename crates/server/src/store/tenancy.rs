//! The tenancy aggregate's writes: organisations, projects, users, tokens.

use super::commit::{Arg, Op, op};

pub fn insert_org(id: i64, name: &str, category: &str, created_ms: i64) -> Op {
    op(
        "INSERT INTO orgs (id, name, category, created_ms) VALUES ($1, $2, $3, $4)",
        vec![
            Arg::I(id),
            Arg::S(name.into()),
            Arg::S(category.into()),
            Arg::I(created_ms),
        ],
    )
}

pub fn insert_project(id: i64, org: i64, name: &str, created_ms: i64) -> Op {
    op(
        "INSERT INTO projects (id, org_id, name, created_ms) VALUES ($1, $2, $3, $4)",
        vec![
            Arg::I(id),
            Arg::I(org),
            Arg::S(name.into()),
            Arg::I(created_ms),
        ],
    )
}

/// A user; `login` is the stored name (`ORG/NAME` for members).
pub fn insert_user(id: i64, login: String, org: Option<i64>, role: &str, created_ms: i64) -> Op {
    op(
        "INSERT INTO users (id, name, org_id, role, created_ms) VALUES ($1, $2, $3, $4, $5)",
        vec![
            Arg::I(id),
            Arg::S(login),
            Arg::OI(org),
            Arg::S(role.into()),
            Arg::I(created_ms),
        ],
    )
}

pub fn disable_user(id: i64, at_ms: i64) -> Op {
    op(
        "UPDATE users SET disabled_ms = $2 WHERE id = $1",
        vec![Arg::I(id), Arg::I(at_ms)],
    )
}

/// A token, by the hash of its secret (the secret is never stored).
pub fn insert_token(
    id: i64,
    user: i64,
    hash: &str,
    created_ms: i64,
    expires_ms: Option<i64>,
) -> Op {
    op(
        "INSERT INTO tokens (id, user_id, hash, created_ms, revoked_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Arg::I(id),
            Arg::I(user),
            Arg::S(hash.into()),
            Arg::I(created_ms),
            Arg::OI(None),
            Arg::OI(expires_ms),
        ],
    )
}

pub fn revoke_token(id: i64, at_ms: i64) -> Op {
    op(
        "UPDATE tokens SET revoked_ms = $2 WHERE id = $1",
        vec![Arg::I(id), Arg::I(at_ms)],
    )
}
