//! `gigafab alloc`: allocations, and the one a submission charges when none is named.

use super::*;

pub(super) async fn alloc(c: AllocCmd) -> Result<()> {
    match c {
        AllocCmd::Create {
            org,
            gpu_hours,
            days,
            valid_from,
            qos_priority,
            name,
            g,
        } => {
            let body = gigafab_api::CreateAllocation {
                org,
                gpu_hours,
                days: days.map(f64::from),
                valid_from,
                qos_priority,
                name,
                project: None,
            };
            let r = g
                .conn
                .api()?
                .post_idempotent(&["allocations"], &body)
                .await?;
            if g.output == Format::Table {
                let a: gigafab_api::Allocation = typed(&r.value)?;
                note(&format!(
                    "created allocation {} for org {}: {:.1} GPU-h, valid {} to {} ({})",
                    a.name, a.org, a.granted_gpu_hours, a.valid_from, a.valid_until, a.state,
                ));
            }
            show_as(&g, &r, |a: &gigafab_api::Allocation| format!("{}\n", a.id))
        }
        AllocCmd::List(a) => {
            let r =
                a.g.conn
                    .api()?
                    .get_list(&["allocations"], &[], true)
                    .await?;
            show_as(
                &a.g,
                &r,
                |p: &gigafab_api::Page<gigafab_api::Allocation>| render::allocations(&p.items),
            )
        }
    }
}

/// The allocation to charge when `--allocation` is absent: the only active
/// one; none or several is an error that lists them.
pub(super) fn pick_allocation(
    allocs: &[gigafab_api::Allocation],
) -> Result<&gigafab_api::Allocation> {
    let active: Vec<&gigafab_api::Allocation> =
        allocs.iter().filter(|a| a.state == "active").collect();
    let list = |v: &[&gigafab_api::Allocation]| {
        v.iter()
            .map(|a| format!("\n  {}", render::allocation_brief(a)))
            .collect::<String>()
    };
    match active.as_slice() {
        [one] => Ok(one),
        [] if allocs.is_empty() => bail!(
            "no allocation to charge: you have none; an admin grants one with \
             `gigafab alloc create`"
        ),
        [] => bail!(
            "no active allocation to charge; pass --allocation ID. Your allocations:{}",
            list(&allocs.iter().collect::<Vec<_>>())
        ),
        several => bail!(
            "{} active allocations; pick one with --allocation ID:{}",
            several.len(),
            list(several)
        ),
    }
}
