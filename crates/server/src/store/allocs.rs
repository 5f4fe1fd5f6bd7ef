//! The allocations aggregate's writes.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, op};
use crate::time::Ms;

/// A new allocation.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    id: i64,
    org: i64,
    name: &str,
    granted_gpu_s: f64,
    used_gpu_s: f64,
    valid_from_ms: Ms,
    valid_until_ms: Ms,
    qos: i64,
    project: Option<i64>,
    created_ms: Ms,
) -> Op {
    op(
        "INSERT INTO allocations (id, org_id, name, granted_gpu_s, used_gpu_s, valid_from_ms, valid_until_ms, qos_priority, created_ms, project_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        vec![
            Arg::I(id),
            Arg::I(org),
            Arg::S(name.into()),
            Arg::F(granted_gpu_s),
            Arg::F(used_gpu_s),
            Arg::I(valid_from_ms.0),
            Arg::I(valid_until_ms.0),
            Arg::I(qos),
            Arg::I(created_ms.0),
            Arg::OI(project),
        ],
    )
}

/// An extension applied to allocation `id` for access request `request`:
/// its new grant and end, recorded with the request (at most once: the
/// request is the key).
pub fn extend(
    id: i64,
    request: i64,
    granted_gpu_s: f64,
    valid_until_ms: Ms,
    added_gpu_s: f64,
    days: f64,
    at: Ms,
) -> Vec<Op> {
    vec![
        op(
            "UPDATE allocations SET granted_gpu_s = $2, valid_until_ms = $3, expiry_noted_ms = NULL WHERE id = $1",
            vec![Arg::I(id), Arg::F(granted_gpu_s), Arg::I(valid_until_ms.0)],
        ),
        op(
            "INSERT INTO allocation_extensions (request_id, allocation_id, gpu_s, days, at_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![
                Arg::I(request),
                Arg::I(id),
                Arg::F(added_gpu_s),
                Arg::F(days),
                Arg::I(at.0),
            ],
        ),
    ]
}

/// What an allocation has used: accelerator-seconds, energy (J), carbon (g).
pub fn usage(id: i64, used_gpu_s: f64, energy_j: f64, carbon_g: f64) -> Op {
    op(
        "UPDATE allocations SET used_gpu_s = $2, energy_j = $3, carbon_g = $4 WHERE id = $1",
        vec![
            Arg::I(id),
            Arg::F(used_gpu_s),
            Arg::F(energy_j),
            Arg::F(carbon_g),
        ],
    )
}

/// Its owners were told allocation `id` expires within a week.
pub fn expiry_noted(id: i64, at: Ms) -> Op {
    op(
        "UPDATE allocations SET expiry_noted_ms = $2 WHERE id = $1",
        vec![Arg::I(id), Arg::I(at.0)],
    )
}

/// An allocation as stored.
#[derive(Debug, Clone)]
pub struct AllocRow {
    pub id: i64,
    pub org_id: i64,
    /// Its organisation's name and category.
    pub org_name: String,
    pub org_category: String,
    pub name: String,
    pub granted_gpu_s: f64,
    pub used_gpu_s: f64,
    pub valid_from_ms: Ms,
    pub valid_until_ms: Ms,
    pub qos: i64,
    pub energy_j: f64,
    pub carbon_g: f64,
    /// Its owners were told it expires within a week.
    pub expiry_noted: bool,
    /// The project it is granted to.
    pub project_id: Option<i64>,
}

/// The organisation of allocation `id` (None: no such allocation).
pub async fn org_of(pool: &AnyPool, id: i64) -> Result<Option<i64>, sqlx::Error> {
    let r = sqlx::query("SELECT org_id FROM allocations WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    r.map(|r| r.try_get(0)).transpose()
}

pub async fn all(pool: &AnyPool) -> Result<Vec<AllocRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.id, a.org_id, a.name, a.granted_gpu_s, a.used_gpu_s, a.valid_from_ms, \
         a.valid_until_ms, a.qos_priority, a.energy_j, a.carbon_g, o.name, o.category, \
         a.expiry_noted_ms, a.project_id FROM allocations a JOIN orgs o ON o.id = a.org_id ORDER BY a.id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AllocRow {
                id: r.try_get(0)?,
                org_id: r.try_get(1)?,
                name: r.try_get(2)?,
                granted_gpu_s: r.try_get(3)?,
                used_gpu_s: r.try_get(4)?,
                valid_from_ms: Ms(r.try_get(5)?),
                valid_until_ms: Ms(r.try_get(6)?),
                qos: r.try_get(7)?,
                energy_j: r.try_get(8)?,
                carbon_g: r.try_get(9)?,
                org_name: r.try_get(10)?,
                org_category: r.try_get(11)?,
                expiry_noted: r.try_get::<Option<i64>, _>(12)?.is_some(),
                project_id: r.try_get(13)?,
            })
        })
        .collect()
}
