//! The tenancy aggregate's writes: organisations, projects, users, tokens.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

pub fn insert_org(
    id: i64,
    name: &str,
    category: &str,
    country: Option<&str>,
    created_ms: Ms,
) -> Op {
    op(
        "INSERT INTO orgs (id, name, category, created_ms, country) VALUES ($1, $2, $3, $4, $5)",
        vec![
            Arg::I(id),
            Arg::S(name.into()),
            Arg::S(category.into()),
            Arg::I(created_ms.0),
            Arg::OS(country.map(str::to_string)),
        ],
    )
}

pub fn insert_project(id: i64, org: i64, name: &str, created_ms: Ms) -> Op {
    op(
        "INSERT INTO projects (id, org_id, name, created_ms) VALUES ($1, $2, $3, $4)",
        vec![
            Arg::I(id),
            Arg::I(org),
            Arg::S(name.into()),
            Arg::I(created_ms.0),
        ],
    )
}

/// User `user` is a member of project `project` (no-op if already).
pub fn add_member(project: i64, user: i64, at_ms: Ms) -> Op {
    op(
        "INSERT INTO project_members (project_id, user_id, added_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        vec![Arg::I(project), Arg::I(user), Arg::I(at_ms.0)],
    )
}

pub fn remove_member(project: i64, user: i64) -> Op {
    op(
        "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2",
        vec![Arg::I(project), Arg::I(user)],
    )
}

/// Every (project, user) membership.
pub async fn members(pool: &AnyPool) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT project_id, user_id FROM project_members")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// A user; `login` is the stored name (`ORG/NAME` for members).
pub fn insert_user(
    id: i64,
    login: String,
    org: Option<i64>,
    role: &str,
    email: Option<&str>,
    oidc_subject: Option<&str>,
    created_ms: Ms,
) -> Op {
    op(
        "INSERT INTO users (id, name, org_id, role, created_ms, email, oidc_subject) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vec![
            Arg::I(id),
            Arg::S(login),
            Arg::OI(org),
            Arg::S(role.into()),
            Arg::I(created_ms.0),
            Arg::OS(email.map(str::to_string)),
            Arg::OS(oidc_subject.map(str::to_string)),
        ],
    )
}

pub fn disable_user(id: i64, at_ms: Ms) -> Op {
    op(
        "UPDATE users SET disabled_ms = $2 WHERE id = $1",
        vec![Arg::I(id), Arg::I(at_ms.0)],
    )
}

/// A token, by the hash of its secret (the secret is never stored).
pub fn insert_token(id: i64, user: i64, hash: &str, created_ms: Ms, expires_ms: Option<Ms>) -> Op {
    op(
        "INSERT INTO tokens (id, user_id, hash, created_ms, revoked_ms, expires_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Arg::I(id),
            Arg::I(user),
            Arg::S(hash.into()),
            Arg::I(created_ms.0),
            Arg::OI(None),
            Arg::OI(expires_ms.map(|t| t.0)),
        ],
    )
}

pub fn revoke_token(id: i64, at_ms: Ms) -> Op {
    op(
        "UPDATE tokens SET revoked_ms = $2 WHERE id = $1",
        vec![Arg::I(id), Arg::I(at_ms.0)],
    )
}

/// An organisation's name.
pub async fn org_name(pool: &AnyPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    match sqlx::query("SELECT name FROM orgs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
    {
        Some(r) => Ok(Some(r.try_get(0)?)),
        None => Ok(None),
    }
}

/// An organisation as stored.
pub struct OrgRow {
    pub id: i64,
    pub name: String,
    pub category: String,
    pub created_ms: Ms,
    pub country: Option<String>,
}

/// A project as stored.
pub struct ProjectRow {
    pub id: i64,
    pub org_id: i64,
    pub name: String,
}

/// A user as stored (`login`: `ORG/NAME` for members).
pub struct UserRow {
    pub id: i64,
    pub login: String,
    pub org_id: Option<i64>,
    pub role: String,
    pub disabled: bool,
    pub email: Option<String>,
    pub oidc_subject: Option<String>,
}

/// A token as stored (the hash of its secret).
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub hash: String,
    pub revoked: bool,
    pub created_ms: Ms,
    pub expires_ms: Option<Ms>,
}

pub async fn orgs(pool: &AnyPool) -> Result<Vec<OrgRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, name, category, created_ms, country FROM orgs ORDER BY id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(OrgRow {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                category: r.try_get(2)?,
                created_ms: Ms(r.try_get(3)?),
                country: r.try_get(4)?,
            })
        })
        .collect()
}

pub async fn projects(pool: &AnyPool) -> Result<Vec<ProjectRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, org_id, name FROM projects ORDER BY id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(ProjectRow {
                id: r.try_get(0)?,
                org_id: r.try_get(1)?,
                name: r.try_get(2)?,
            })
        })
        .collect()
}

pub async fn users(pool: &AnyPool) -> Result<Vec<UserRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, name, org_id, role, disabled_ms, email, oidc_subject FROM users ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UserRow {
                id: r.try_get(0)?,
                login: r.try_get(1)?,
                org_id: r.try_get(2)?,
                role: r.try_get(3)?,
                disabled: r.try_get::<Option<i64>, _>(4)?.is_some(),
                email: r.try_get(5)?,
                oidc_subject: r.try_get(6)?,
            })
        })
        .collect()
}

pub async fn tokens(pool: &AnyPool) -> Result<Vec<TokenRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, user_id, hash, revoked_ms, created_ms, expires_ms FROM tokens ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(TokenRow {
                id: r.try_get(0)?,
                user_id: r.try_get(1)?,
                hash: r.try_get(2)?,
                revoked: r.try_get::<Option<i64>, _>(3)?.is_some(),
                created_ms: Ms(r.try_get(4)?),
                expires_ms: r.try_get::<Option<i64>, _>(5)?.map(Ms),
            })
        })
        .collect()
}
