//! The access aggregate: calls, their reviewers, requests and reviews.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

/// A call as stored.
#[derive(Debug, Clone)]
pub struct CallRow {
    pub id: i64,
    pub name: String,
    pub mode: String,
    /// JSON array of categories.
    pub categories: String,
    pub envelope_gpu_s: f64,
    pub granted_gpu_s: f64,
    pub opens_ms: Ms,
    pub closes_ms: Option<Ms>,
    /// JSON arrays: eligible countries, offered accelerator types (empty:
    /// any).
    pub countries: String,
    pub types: String,
}

/// A request as stored.
#[derive(Debug, Clone)]
pub struct RequestRow {
    pub id: i64,
    pub call_id: i64,
    pub org_id: i64,
    pub org: String,
    pub user_id: i64,
    pub user: String,
    pub title: String,
    pub summary: String,
    pub project: String,
    pub gpu_s: f64,
    pub days: f64,
    pub state: String,
    pub allocation_id: Option<i64>,
    pub created_ms: Ms,
    pub updated_ms: Ms,
    /// The allocation an extension request extends (None: a new grant).
    pub extends_id: Option<i64>,
    /// JSON: `{"gpu_hours_by_type", "residency", "team"}`.
    pub details: String,
}

/// A review as stored.
#[derive(Debug, Clone)]
pub struct ReviewRow {
    pub reviewer_id: i64,
    pub reviewer: String,
    pub score: i64,
    pub verdict: String,
    pub comment: String,
    pub at_ms: Ms,
}

pub fn insert_call(c: &CallRow, now: Ms) -> Op {
    op(
        "INSERT INTO calls (id, name, mode, categories, envelope_gpu_s, granted_gpu_s, opens_ms, closes_ms, created_ms, countries, types) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        vec![
            Arg::I(c.id),
            Arg::S(c.name.clone()),
            Arg::S(c.mode.clone()),
            Arg::S(c.categories.clone()),
            Arg::F(c.envelope_gpu_s),
            Arg::F(c.granted_gpu_s),
            Arg::I(c.opens_ms.0),
            Arg::OI(c.closes_ms.map(|t| t.0)),
            Arg::I(now.0),
            Arg::S(c.countries.clone()),
            Arg::S(c.types.clone()),
        ],
    )
}

/// What a call has granted so far.
pub fn set_granted(call: i64, granted_gpu_s: f64) -> Op {
    op(
        "UPDATE calls SET granted_gpu_s = $2 WHERE id = $1",
        vec![Arg::I(call), Arg::F(granted_gpu_s)],
    )
}

/// A request's reviews, cleared when it is submitted again after a
/// revision (a new round; earlier rounds stay in the audit log).
pub fn clear_reviews(request: i64) -> Op {
    op(
        "DELETE FROM reviews WHERE request_id = $1",
        vec![Arg::I(request)],
    )
}

pub fn insert_reviewer(call: i64, user: i64) -> Op {
    op(
        "INSERT INTO call_reviewers (call_id, user_id) VALUES ($1, $2)",
        vec![Arg::I(call), Arg::I(user)],
    )
}

pub fn insert_request(r: &RequestRow) -> Op {
    op(
        "INSERT INTO access_requests (id, call_id, org_id, user_id, title, summary, project, gpu_s, days, state, allocation_id, created_ms, updated_ms, extends_id, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        vec![
            Arg::I(r.id),
            Arg::I(r.call_id),
            Arg::I(r.org_id),
            Arg::I(r.user_id),
            Arg::S(r.title.clone()),
            Arg::S(r.summary.clone()),
            Arg::S(r.project.clone()),
            Arg::F(r.gpu_s),
            Arg::F(r.days),
            Arg::S(r.state.clone()),
            Arg::OI(r.allocation_id),
            Arg::I(r.created_ms.0),
            Arg::I(r.updated_ms.0),
            Arg::OI(r.extends_id),
            Arg::S(r.details.clone()),
        ],
    )
}

/// A request's state (and the allocation its approval granted).
pub fn set_state(id: i64, state: &str, allocation: Option<i64>, now: Ms) -> Op {
    op(
        "UPDATE access_requests SET state = $2, allocation_id = $3, updated_ms = $4 WHERE id = $1",
        vec![
            Arg::I(id),
            Arg::S(state.into()),
            Arg::OI(allocation),
            Arg::I(now.0),
        ],
    )
}

pub fn insert_review(
    request: i64,
    reviewer: i64,
    score: i64,
    verdict: &str,
    comment: &str,
    now: Ms,
) -> Op {
    op(
        "INSERT INTO reviews (request_id, reviewer_id, score, verdict, comment, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Arg::I(request),
            Arg::I(reviewer),
            Arg::I(score),
            Arg::S(verdict.into()),
            Arg::S(comment.into()),
            Arg::I(now.0),
        ],
    )
}

fn call_of(r: &sqlx::any::AnyRow) -> Result<CallRow, sqlx::Error> {
    Ok(CallRow {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        mode: r.try_get(2)?,
        categories: r.try_get(3)?,
        envelope_gpu_s: r.try_get(4)?,
        granted_gpu_s: r.try_get(5)?,
        opens_ms: Ms(r.try_get(6)?),
        closes_ms: r.try_get::<Option<i64>, _>(7)?.map(Ms),
        countries: r.try_get(8)?,
        types: r.try_get(9)?,
    })
}

const CALL_COLUMNS: &str = "SELECT id, name, mode, categories, envelope_gpu_s, granted_gpu_s, opens_ms, closes_ms, countries, types FROM calls";

pub async fn calls(pool: &AnyPool) -> Result<Vec<CallRow>, sqlx::Error> {
    let rows = sqlx::query(&format!("{CALL_COLUMNS} ORDER BY id"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(call_of).collect()
}

pub async fn call(pool: &AnyPool, id: i64) -> Result<Option<CallRow>, sqlx::Error> {
    sqlx::query(&format!("{CALL_COLUMNS} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(call_of)
        .transpose()
}

pub async fn call_by_name(pool: &AnyPool, name: &str) -> Result<Option<CallRow>, sqlx::Error> {
    sqlx::query(&format!("{CALL_COLUMNS} WHERE name = $1"))
        .bind(name)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(call_of)
        .transpose()
}

/// The reviewers of every call: (call, user).
pub async fn reviewers(pool: &AnyPool) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT call_id, user_id FROM call_reviewers ORDER BY call_id, user_id")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

fn request_of(r: &sqlx::any::AnyRow) -> Result<RequestRow, sqlx::Error> {
    Ok(RequestRow {
        id: r.try_get(0)?,
        call_id: r.try_get(1)?,
        org_id: r.try_get(2)?,
        org: r.try_get(3)?,
        user_id: r.try_get(4)?,
        user: crate::names::short_name(r.try_get(5)?),
        title: r.try_get(6)?,
        summary: r.try_get(7)?,
        project: r.try_get(8)?,
        gpu_s: r.try_get(9)?,
        days: r.try_get(10)?,
        state: r.try_get(11)?,
        allocation_id: r.try_get(12)?,
        created_ms: Ms(r.try_get(13)?),
        updated_ms: Ms(r.try_get(14)?),
        extends_id: r.try_get(15)?,
        details: r.try_get(16)?,
    })
}

const REQUEST_COLUMNS: &str = "SELECT q.id, q.call_id, q.org_id, o.name, q.user_id, u.name, q.title, q.summary, q.project, q.gpu_s, q.days, q.state, q.allocation_id, q.created_ms, q.updated_ms, q.extends_id, q.details FROM access_requests q JOIN orgs o ON o.id = q.org_id JOIN users u ON u.id = q.user_id";

pub async fn requests(pool: &AnyPool) -> Result<Vec<RequestRow>, sqlx::Error> {
    let rows = sqlx::query(&format!("{REQUEST_COLUMNS} ORDER BY q.id"))
        .fetch_all(pool)
        .await?;
    rows.iter().map(request_of).collect()
}

/// The requests `user` may see: all (`all`), else those of organisation
/// `org` and of the calls the user reviews.
pub async fn visible_requests(
    pool: &AnyPool,
    all: bool,
    org: Option<i64>,
    user: i64,
) -> Result<Vec<RequestRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "{REQUEST_COLUMNS} WHERE $1 = 1 OR q.org_id = $2 OR (q.state <> 'draft' AND q.call_id IN \
         (SELECT call_id FROM call_reviewers WHERE user_id = $3)) ORDER BY q.id"
    ))
    .bind(i64::from(all))
    .bind(org.unwrap_or(-1))
    .bind(user)
    .fetch_all(pool)
    .await?;
    rows.iter().map(request_of).collect()
}

/// The reviews of the requests [`visible_requests`] lists, by request
/// (one query for a listing).
pub async fn visible_reviews(
    pool: &AnyPool,
    all: bool,
    org: Option<i64>,
    user: i64,
) -> Result<Vec<(i64, ReviewRow)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.request_id, r.reviewer_id, u.name, r.score, r.verdict, r.comment, r.at_ms \
         FROM reviews r JOIN users u ON u.id = r.reviewer_id \
         JOIN access_requests q ON q.id = r.request_id \
         WHERE $1 = 1 OR q.org_id = $2 OR (q.state <> 'draft' AND q.call_id IN \
         (SELECT call_id FROM call_reviewers WHERE user_id = $3)) \
         ORDER BY r.request_id, r.at_ms, r.reviewer_id",
    )
    .bind(i64::from(all))
    .bind(org.unwrap_or(-1))
    .bind(user)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                ReviewRow {
                    reviewer_id: r.try_get(1)?,
                    reviewer: r.try_get(2)?,
                    score: r.try_get(3)?,
                    verdict: r.try_get(4)?,
                    comment: r.try_get(5)?,
                    at_ms: Ms(r.try_get(6)?),
                },
            ))
        })
        .collect()
}

pub async fn request(pool: &AnyPool, id: i64) -> Result<Option<RequestRow>, sqlx::Error> {
    sqlx::query(&format!("{REQUEST_COLUMNS} WHERE q.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(request_of)
        .transpose()
}

pub async fn reviews(pool: &AnyPool, request: i64) -> Result<Vec<ReviewRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT r.reviewer_id, u.name, r.score, r.verdict, r.comment, r.at_ms FROM reviews r JOIN users u ON u.id = r.reviewer_id WHERE r.request_id = $1 ORDER BY r.at_ms, r.reviewer_id",
    )
    .bind(request)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ReviewRow {
                reviewer_id: r.try_get(0)?,
                reviewer: r.try_get(1)?,
                score: r.try_get(2)?,
                verdict: r.try_get(3)?,
                comment: r.try_get(4)?,
                at_ms: Ms(r.try_get(5)?),
            })
        })
        .collect()
}

/// A comment on a request.
#[derive(Debug, Clone)]
pub struct CommentRow {
    pub user: String,
    pub side: String,
    pub body: String,
    pub at_ms: Ms,
}

pub fn insert_comment(id: i64, request: i64, user: i64, side: &str, body: &str, now: Ms) -> Op {
    op(
        "INSERT INTO request_comments (id, request_id, user_id, side, body, at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        vec![
            Arg::I(id),
            Arg::I(request),
            Arg::I(user),
            Arg::S(side.into()),
            Arg::S(body.into()),
            Arg::I(now.0),
        ],
    )
}

/// The comments on the requests `who` sees (every request: `all`), by
/// request, oldest first; `request`: only that one's.
pub async fn comments(
    pool: &AnyPool,
    request: Option<i64>,
    all: bool,
    org: Option<i64>,
    user: i64,
) -> Result<Vec<(i64, CommentRow)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.request_id, u.name, c.side, c.body, c.at_ms \
         FROM request_comments c JOIN users u ON u.id = c.user_id \
         JOIN access_requests q ON q.id = c.request_id \
         WHERE ($4 < 0 OR c.request_id = $4) AND ($1 = 1 OR q.org_id = $2 OR (q.state <> 'draft' AND q.call_id IN \
         (SELECT call_id FROM call_reviewers WHERE user_id = $3))) \
         ORDER BY c.request_id, c.id",
    )
    .bind(i64::from(all))
    .bind(org.unwrap_or(-1))
    .bind(user)
    .bind(request.unwrap_or(-1))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                CommentRow {
                    user: r.try_get(1)?,
                    side: r.try_get(2)?,
                    body: r.try_get(3)?,
                    at_ms: Ms(r.try_get(4)?),
                },
            ))
        })
        .collect()
}

/// The highest id of `table` (calls, access_requests or request_comments;
/// 0 when empty).
pub async fn max_id(pool: &AnyPool, table: &'static str) -> Result<i64, sqlx::Error> {
    let sql = match table {
        "calls" => "SELECT COALESCE(MAX(id), 0) FROM calls",
        "request_comments" => "SELECT COALESCE(MAX(id), 0) FROM request_comments",
        _ => "SELECT COALESCE(MAX(id), 0) FROM access_requests",
    };
    sqlx::query(sql).fetch_one(pool).await?.try_get(0)
}

/// Whether the extension of request `id` was applied (see
/// `allocation_extensions`).
pub async fn extension_applied(pool: &AnyPool, id: i64) -> Result<bool, sqlx::Error> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM allocation_extensions WHERE request_id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
    Ok(n > 0)
}
