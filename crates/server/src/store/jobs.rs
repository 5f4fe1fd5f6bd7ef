//! The jobs aggregate's writes: a job's row, its events, its wait reasons.

use super::commit::{Arg, Op, op};
use crate::model::JobRow;

pub(crate) const JOB_INSERT: &str = "INSERT INTO jobs (id, org_id, user_id, alloc_id, project_id, name, spec, gpus, time_limit_s, state, reason, exit_code, submitted_ms, started_ms, ended_ms, accelerators, handle, gpu_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)";
const JOB_UPDATE: &str = "UPDATE jobs SET state = $2, reason = $3, exit_code = $4, started_ms = $5, ended_ms = $6, accelerators = $7, handle = $8, gpu_s = $9, spec = $10, energy_j = $11, carbon_g = $12, energy_source = $13 WHERE id = $1";
pub(crate) const EVENT_INSERT: &str =
    "INSERT INTO job_events (job_id, seq, at_ms, kind, message) VALUES ($1, $2, $3, $4, $5)";

/// A new job, queued (`row` holds its ids, name, spec, size and limit).
pub fn insert(row: &JobRow, project_id: Option<i64>) -> Op {
    op(
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
            Arg::I(row.submitted_ms),
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
            Arg::OI(r.started_ms),
            Arg::OI(r.ended_ms),
            Arg::OS(r.accelerators.clone()),
            Arg::OS(r.handle.clone()),
            Arg::F(r.gpu_s),
            Arg::S(spec),
            Arg::F(r.energy_j),
            Arg::OF(r.carbon_g),
            Arg::OS(r.energy_source.clone()),
        ],
    )
}

/// One line of a job's history.
pub fn event(job: i64, seq: i64, at_ms: i64, kind: &str, message: String) -> Op {
    op(
        EVENT_INSERT,
        vec![
            Arg::I(job),
            Arg::I(seq),
            Arg::I(at_ms),
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
            }
        })
        .collect()
}
