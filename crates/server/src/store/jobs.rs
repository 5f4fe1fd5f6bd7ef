//! The jobs aggregate's writes: a job's row, its events, its wait reasons.

use sqlx::{AnyPool, Row};

use super::commit::{Arg, Op, foldable, op};
use crate::model::{JobEvent, JobRow};
use crate::time::Ms;

const JOB_INSERT: &str = "INSERT INTO jobs (id, org_id, user_id, alloc_id, project_id, name, spec, gpus, time_limit_s, state, reason, exit_code, submitted_ms, started_ms, ended_ms, accelerators, handle, gpu_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";
const JOB_UPDATE: &str = "UPDATE jobs SET state = $2, reason = $3, exit_code = $4, started_ms = $5, ended_ms = $6, accelerators = $7, handle = $8, gpu_s = $9, spec = $10, energy_j = $11, carbon_g = $12, energy_source = $13, stopping_handle = $14, time_limit_s = $15 WHERE id = $1";
const EVENT_INSERT: &str =
    "INSERT INTO job_events (job_id, seq, at_ms, kind, message) VALUES ($1, $2, $3, $4, $5)";

/// A new job, queued (`row` holds its ids, name, spec, size and limit).
pub fn insert(row: &JobRow, project_id: Option<i64>) -> Op {
    foldable(
        JOB_INSERT,
        vec![
            Arg::I(row.id),
            Arg::I(row.org_id),
            Arg::I(row.user_id),
            Arg::I(row.alloc_id),
            Arg::OI(project_id),
            Arg::S(row.name.clone()),
            Arg::S(row.spec.clone()),
            Arg::I(row.gpus),
            Arg::I(row.time_limit_s),
            Arg::S(row.state.clone()),
            Arg::OS(None),
            Arg::OI(None),
            Arg::I(row.submitted_ms.0),
            Arg::OI(None),
            Arg::OI(None),
            Arg::OS(None),
            Arg::OS(None),
            Arg::F(0.0),
        ],
    )
}

/// Everything of a job that changes after its submission (`spec` as JSON).
pub fn update(r: &JobRow, spec: String) -> Op {
    op(
        JOB_UPDATE,
        vec![
            Arg::I(r.id),
            Arg::S(r.state.clone()),
            Arg::OS(r.reason.clone()),
            Arg::OI(r.exit_code),
            Arg::OI(r.started_ms.map(|t| t.0)),
            Arg::OI(r.ended_ms.map(|t| t.0)),
            Arg::OS(r.accelerators.clone()),
            Arg::OS(r.handle.clone()),
            Arg::F(r.gpu_s),
            Arg::S(spec),
            Arg::F(r.energy_j),
            Arg::OF(r.carbon_g),
            Arg::OS(r.energy_source.clone()),
            Arg::OS(r.stopping.clone()),
            Arg::I(r.time_limit_s),
        ],
    )
}

/// One line of a job's history.
pub fn event(job: i64, seq: i64, at_ms: Ms, kind: &str, message: String) -> Op {
    foldable(
        EVENT_INSERT,
        vec![
            Arg::I(job),
            Arg::I(seq),
            Arg::I(at_ms.0),
            Arg::S(kind.into()),
            Arg::S(message),
        ],
    )
}

/// The same wait reason for many jobs: one statement per 1,000 jobs.
pub fn reasons(reason: &str, ids: &[i64]) -> Vec<Op> {
    ids.chunks(1000)
        .map(|chunk| {
            let mut sql = String::from("UPDATE jobs SET reason = $1 WHERE id IN (");
            let mut args = Vec::with_capacity(chunk.len() + 1);
            args.push(Arg::S(reason.to_string()));
            for (k, id) in chunk.iter().enumerate() {
                if k > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("${}", k + 2));
                args.push(Arg::I(*id));
            }
            sql.push(')');
            Op {
                sql: sql.into(),
                args,
                fold: false,
            }
        })
        .collect()
}

/// Columns of a job row joined with names, in [`row_to_job`] order.
pub const JOB_COLUMNS: &str = "j.id, j.org_id, o.name, j.user_id, u.name, j.alloc_id, j.project_id, j.name, j.spec, j.gpus, j.time_limit_s, j.state, j.reason, j.exit_code, j.submitted_ms, j.started_ms, j.ended_ms, j.accelerators, j.handle, j.gpu_s, j.energy_j, j.carbon_g, j.energy_source, j.stopping_handle FROM jobs j JOIN orgs o ON o.id = j.org_id JOIN users u ON u.id = j.user_id";

pub fn row_to_job(r: &sqlx::any::AnyRow) -> Result<JobRow, sqlx::Error> {
    Ok(JobRow {
        id: r.try_get(0)?,
        org_id: r.try_get(1)?,
        org: r.try_get(2)?,
        user_id: r.try_get(3)?,
        user: crate::names::short_name(r.try_get(4)?),
        alloc_id: r.try_get(5)?,
        project_id: r.try_get(6)?,
        name: r.try_get(7)?,
        spec: r.try_get(8)?,
        gpus: r.try_get(9)?,
        time_limit_s: r.try_get(10)?,
        state: r.try_get(11)?,
        reason: r.try_get(12)?,
        exit_code: r.try_get(13)?,
        submitted_ms: Ms(r.try_get(14)?),
        started_ms: r.try_get::<Option<i64>, _>(15)?.map(Ms),
        ended_ms: r.try_get::<Option<i64>, _>(16)?.map(Ms),
        accelerators: r.try_get(17)?,
        handle: r.try_get(18)?,
        gpu_s: r.try_get(19)?,
        energy_j: r.try_get(20)?,
        carbon_g: r.try_get(21)?,
        energy_source: r.try_get(22)?,
        stopping: r.try_get(23)?,
    })
}

/// A job by id.
pub async fn get(pool: &AnyPool, id: i64) -> Result<Option<JobRow>, sqlx::Error> {
    let q = format!("SELECT {JOB_COLUMNS} WHERE j.id = $1");
    match sqlx::query(&q).bind(id).fetch_optional(pool).await? {
        Some(r) => Ok(Some(row_to_job(&r)?)),
        None => Ok(None),
    }
}

/// A job's history, oldest first.
pub async fn events(pool: &AnyPool, id: i64) -> Result<Vec<JobEvent>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT at_ms, kind, message FROM job_events WHERE job_id = $1 ORDER BY seq")
            .bind(id)
            .fetch_all(pool)
            .await?;
    rows.iter()
        .map(|r| {
            Ok(JobEvent {
                at_ms: r.try_get(0)?,
                kind: r.try_get(1)?,
                message: r.try_get(2)?,
            })
        })
        .collect()
}

/// A job's state; None when the store has no such job.
pub async fn state(pool: &AnyPool, id: i64) -> Result<Option<String>, sqlx::Error> {
    match sqlx::query("SELECT state FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
    {
        Some(r) => Ok(Some(r.try_get(0)?)),
        None => Ok(None),
    }
}

/// Which jobs a listing shows (all conditions hold).
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only this organisation's (callers who see one organisation).
    pub org_id: Option<i64>,
    pub state: Option<String>,
    pub allocation: Option<i64>,
    /// By organisation name.
    pub org: Option<String>,
    /// `name` (of the job's organisation) or `org/name`.
    pub user: Option<String>,
    /// Ids below this one (the page cursor).
    pub before_id: Option<i64>,
}

/// A row of a listing: the job, or the id (if readable) and why it is not.
pub type Listed = Result<JobRow, (Option<i64>, sqlx::Error)>;

/// Up to `limit` jobs matching `f`, newest first. A damaged row is listed
/// as such, never hides the others.
pub async fn list(pool: &AnyPool, f: &JobFilter, limit: i64) -> Result<Vec<Listed>, sqlx::Error> {
    enum Bind {
        I(i64),
        S(String),
    }
    // conditions and their parameters, numbered in order
    let mut sql = format!("SELECT {JOB_COLUMNS} WHERE 1 = 1");
    let mut binds: Vec<Bind> = Vec::new();
    let mut cond = |sql: &mut String, clause: &str, b: Bind| {
        binds.push(b);
        let n = format!("${}", binds.len());
        *sql += &if clause.contains("$?") {
            format!(" AND {}", clause.replace("$?", &n))
        } else {
            format!(" AND {clause} {n}")
        };
    };
    if let Some(o) = f.org_id {
        cond(&mut sql, "j.org_id =", Bind::I(o));
    }
    if let Some(st) = &f.state {
        cond(&mut sql, "j.state =", Bind::S(st.clone()));
    }
    if let Some(a) = f.allocation {
        cond(&mut sql, "j.alloc_id =", Bind::I(a));
    }
    if let Some(o) = &f.org {
        cond(&mut sql, "o.name =", Bind::S(o.clone()));
    }
    if let Some(u) = &f.user {
        // a member's stored name is `ORG/NAME`: `alice` finds the alice of
        // the job's organisation, `org/alice` that one only
        cond(
            &mut sql,
            "(u.name = $? OR u.name = o.name || '/' || $?)",
            Bind::S(u.clone()),
        );
    }
    if let Some(a) = f.before_id {
        cond(&mut sql, "j.id <", Bind::I(a));
    }
    sql += &format!(" ORDER BY j.id DESC LIMIT ${}", binds.len() + 1);
    let mut query = sqlx::query(&sql);
    for b in binds {
        query = match b {
            Bind::I(v) => query.bind(v),
            Bind::S(t) => query.bind(t),
        };
    }
    let rows = query.bind(limit).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| row_to_job(r).map_err(|e| (r.try_get::<i64, _>(0).ok(), e)))
        .collect())
}

/// The highest job id (0 when none).
pub async fn max_id(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COALESCE(MAX(id), 0) FROM jobs")
        .fetch_one(pool)
        .await?
        .try_get(0)
}

/// Queued and running jobs, oldest first.
pub async fn active(pool: &AnyPool) -> Result<Vec<Listed>, sqlx::Error> {
    let q = format!("SELECT {JOB_COLUMNS} WHERE j.state IN ('queued', 'running') ORDER BY j.id");
    let rows = sqlx::query(&q).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| row_to_job(r).map_err(|e| (r.try_get::<i64, _>(0).ok(), e)))
        .collect())
}

/// The last event number of each queued or running job.
pub async fn last_event_seqs(
    pool: &AnyPool,
) -> Result<std::collections::HashMap<i64, i64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT e.job_id, MAX(e.seq) FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE j.state IN ('queued', 'running') GROUP BY e.job_id",
    )
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}
