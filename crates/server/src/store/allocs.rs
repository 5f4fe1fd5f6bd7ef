//! The allocations aggregate's writes.

use super::commit::{Arg, Op, op};

/// A new allocation.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    id: i64,
    org: i64,
    name: &str,
    granted_gpu_s: f64,
    used_gpu_s: f64,
    valid_from_ms: i64,
    valid_until_ms: i64,
    qos: i64,
    created_ms: i64,
) -> Op {
    op(
        "INSERT INTO allocations (id, org_id, name, granted_gpu_s, used_gpu_s, valid_from_ms, valid_until_ms, qos_priority, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        vec![
            Arg::I(id),
            Arg::I(org),
            Arg::S(name.into()),
            Arg::F(granted_gpu_s),
            Arg::F(used_gpu_s),
            Arg::I(valid_from_ms),
            Arg::I(valid_until_ms),
            Arg::I(qos),
            Arg::I(created_ms),
        ],
    )
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
