//! Loading the state from the store at start (and after a failed commit),
//! and the first start's default allocation: the store's rows are read
//! into a [`Snapshot`], which the controller restores without I/O.

use super::*;

/// What the controller restores from: the store's allocations, active
/// jobs and drains.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub allocs: Vec<store::allocs::AllocRow>,
    /// The highest job id ever given.
    pub max_job_id: i64,
    pub max_audit_id: i64,
    /// Drained nodes, with the reason given.
    pub drained: Vec<(String, Option<String>)>,
    /// Queued and running jobs, oldest first.
    pub jobs: Vec<JobRow>,
    /// Per job: the last sequence number of its events.
    pub event_seqs: HashMap<i64, i64>,
    /// The states of the ended jobs that active jobs wait for.
    pub dep_states: HashMap<i64, String>,
}

impl Snapshot {
    /// Reads it from the store; a job row that cannot be read is a
    /// damaged store.
    pub async fn read(pool: &sqlx::AnyPool) -> Result<Snapshot, sqlx::Error> {
        let mut jobs = Vec::new();
        for r in store::jobs::active(pool).await? {
            jobs.push(r.map_err(|(id, e)| {
                sqlx::Error::Protocol(format!(
                    "job {} in the store cannot be read ({e}): the store is damaged; restore it from a backup",
                    id.map_or("?".to_string(), |i| i.to_string())
                ))
            })?);
        }
        // the jobs waited for that are not active: their ends decide
        let active: std::collections::HashSet<i64> = jobs.iter().map(|j| j.id).collect();
        let mut dep_states = HashMap::new();
        for j in &jobs {
            let spec: StoredSpec = serde_json::from_str(&j.spec).unwrap_or_default();
            for (_, d) in spec.after {
                if !active.contains(&d)
                    && !dep_states.contains_key(&d)
                    && let Some(r) = store::jobs::get(pool, d).await?
                {
                    dep_states.insert(d, r.state);
                }
            }
        }
        Ok(Snapshot {
            dep_states,
            allocs: store::allocs::all(pool).await?,
            max_job_id: store::jobs::max_id(pool).await?,
            max_audit_id: store::audit::max_id(pool).await?,
            drained: store::fleet::drained(pool).await?,
            jobs,
            event_seqs: store::jobs::last_event_seqs(pool).await?,
        })
    }
}

impl Controller {
    pub(super) async fn load_rows(&mut self) -> Result<(), sqlx::Error> {
        let snap = Snapshot::read(&self.shared.store.pool).await?;
        self.restore(snap);
        Ok(())
    }

    /// Restores the state of `snap` (no I/O): allocations, drains, active
    /// jobs; runs recorded as running are adopted through the executor.
    pub fn restore(&mut self, snap: Snapshot) {
        let now = self.shared.clock.now();
        for r in snap.allocs {
            let id = r.id;
            let org = OrgRef {
                id: r.org_id,
                name: r.org_name,
                category: Category::parse(&r.org_category).unwrap_or(Category::Academia),
            };
            let mut a = self.new_alloc(
                id,
                org,
                r.name,
                r.granted_gpu_s,
                r.valid_from_ms,
                r.valid_until_ms,
                r.qos,
            );
            a.used_gpu_s = r.used_gpu_s;
            a.energy_j = r.energy_j;
            a.carbon_g = r.carbon_g;
            a.expiry_noted = r.expiry_noted;
            a.project = r.project_id;
            self.allocs.insert(id, a);
            self.ids.alloc = self.ids.alloc.max(id);
        }
        self.ids.job = snap.max_job_id;
        self.shared
            .audit_id
            .fetch_max(snap.max_audit_id, std::sync::atomic::Ordering::SeqCst);
        for (name, reason) in snap.drained {
            if let Some(&n) = self.node_by_name.get(&name) {
                self.core.drain(n);
                if let Some(r) = reason {
                    self.drain_reasons.insert(n, r);
                }
            }
        }
        // active jobs, oldest first
        let seqs = snap.event_seqs;
        self.dep_states = snap.dep_states;
        let mut adopt = Vec::new();
        for row in snap.jobs {
            let spec: StoredSpec = serde_json::from_str(&row.spec).unwrap_or_default();
            let next_seq = seqs.get(&row.id).copied().unwrap_or(0) + 1;
            let id = row.id;
            let running = row.state == "running";
            let stopping = row.stopping.clone();
            // started again but not launched yet, waiting for its preempted
            // run to stop: it has no run of its own to adopt (a search by
            // job could only find the old one), it is launched once that
            // run has ended
            let waits_for_stop = running && row.handle.is_none() && stopping.is_some();
            self.restore_job(row, spec, next_seq);
            if waits_for_stop {
                self.launches.push(id);
            } else if running {
                adopt.push(id);
            }
            if let Some(h) = stopping {
                // a preempted run that had not ended: asked again to stop,
                // polled until it has; the job waits for it
                self.driver.cancel(id, h.clone());
                self.stopping.insert(h, id);
            }
        }
        for a in self.allocs.values() {
            self.core.restore_usage(a.core, a.used_at(now));
        }
        for id in adopt {
            self.adopt(id, now);
        }
        // first start: the organisation `default` gets its allocation
        // (every store has one from then on: allocations are never deleted)
        if self.allocs.is_empty()
            && let Some(org) = self.shared.tenancy.org_named("default")
        {
            let aid = self.next_alloc();
            let until = now.plus_days(3650.0);
            let a = self.new_alloc(aid, org, "default".into(), 1e6 * 3600.0, now, until, 0);
            self.insert_alloc_op(&a, now);
            self.allocs.insert(aid, a);
        }
    }
}
