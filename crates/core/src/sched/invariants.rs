//! [`SchedCore::check_invariants`]: the core's bookkeeping checked from
//! scratch (tests and the twin's debug builds run it after passes).

use super::*;

impl SchedCore {
    /// Checks the core's bookkeeping and says what is wrong: no accelerator
    /// in two runs (nor both free and in a run), every running job placed
    /// on exactly its accelerators and listed once by its end, the running
    /// count, the allocations' running rates, and a queue of waiting jobs
    /// each listed once. Costs what is running and queued plus the nodes:
    /// tests and the twin's debug builds run it after passes.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (pi, p) in self.cluster.pools.iter().enumerate() {
            p.check().map_err(|e| format!("pool {pi}: {e}"))?;
            for local in 0..p.nodes {
                let n = p.first_node + local;
                let held: u32 = self.node_jobs[n as usize]
                    .iter()
                    .map(|&(_, c)| c as u32)
                    .sum();
                if held + p.free_on(local) as u32 > p.per_node as u32 {
                    return Err(format!(
                        "node {n}: {held} accelerators in runs and {} free of {}",
                        p.free_on(local),
                        p.per_node
                    ));
                }
                if self.is_powered_down(n)
                    && (held > 0 || p.cap_on(local) > 0 || p.free_on(local) > 0)
                {
                    return Err(format!(
                        "node {n} is powered down with {held} accelerators in runs and {} usable",
                        p.cap_on(local)
                    ));
                }
                for &(j, _) in &self.node_jobs[n as usize] {
                    if self.jobs[j as usize].state != JobState::Running {
                        return Err(format!("node {n} holds job {j}, which is not running"));
                    }
                }
            }
        }
        let mut running = 0;
        let mut rate = vec![0.0; self.allocs.len()];
        for (pool, set) in self.running_by_end.iter().enumerate() {
            for &(_, j, gpus) in set {
                let job = &self.jobs[j as usize];
                if job.state != JobState::Running || job.run_pool as usize != pool {
                    return Err(format!(
                        "job {j} listed as running in pool {pool}: {:?}",
                        job.state
                    ));
                }
                let placed: u32 = job.placement.iter().map(|&(_, c)| c as u32).sum();
                if placed != gpus || gpus != job.gpus {
                    return Err(format!(
                        "job {j}: {placed} accelerators placed for {}",
                        job.gpus
                    ));
                }
                rate[job.alloc as usize] += gpus as f64 * self.billing(pool as PoolIdx);
                running += 1;
            }
        }
        if running != self.n_running {
            return Err(format!("{running} runs listed, {} counted", self.n_running));
        }
        let movable = (0..self.jobs.len() as JobIdx)
            .filter(|&j| self.jobs[j as usize].state == JobState::Running && self.movable(j))
            .count();
        if movable != self.n_movable {
            return Err(format!(
                "{movable} movable runs, {} counted",
                self.n_movable
            ));
        }
        for (a, (st, r)) in self.allocs.iter().zip(&rate).enumerate() {
            if (st.rate - r).abs() > 1e-6 * r.max(1.0) + 1e-3 {
                return Err(format!("allocation {a}: running rate {} for {r}", st.rate));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for q in self.queue.iter_all() {
            if self.jobs[q.j as usize].state != JobState::Waiting || !seen.insert(q.j) {
                return Err(format!("job {} queued twice or not waiting", q.j));
            }
        }
        if seen.len() != self.queue.len() {
            return Err(format!(
                "{} queued, {} counted",
                seen.len(),
                self.queue.len()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PolicyKind;

    /// The check passes on a consistent core and names each kind of damage.
    #[test]
    fn check_invariants_catches_damaged_bookkeeping() {
        let f = Factory::parse(
            "name = \"t\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 4\n",
            "t.toml",
        )
        .unwrap();
        let fresh = || {
            let mut c =
                SchedCore::new(f.clone(), Policy::new(PolicyKind::Fifo), Throughputs::new());
            let a = c.add_allocation(AllocationSpec::open("a", Category::Academia));
            for (i, g) in [4, 2, 8].into_iter().enumerate() {
                c.submit(&JobSpec::simple(format!("j{i}"), 0.0, g, 100.0), a, 0.0);
            }
            c.schedule(0.0);
            c.check_invariants().unwrap();
            assert_eq!((c.n_running, c.queued()), (2, 1));
            c
        };
        let mut c = fresh();
        c.n_running += 1;
        assert!(c.check_invariants().unwrap_err().contains("counted"));
        let mut c = fresh();
        // an accelerator in two runs
        let (n, k) = c.jobs[0].placement[0];
        c.node_jobs[n as usize].push((1, k));
        assert!(c.check_invariants().unwrap_err().contains("in runs"));
        let mut c = fresh();
        c.allocs[0].rate += 1.0;
        assert!(c.check_invariants().unwrap_err().contains("running rate"));
        let mut c = fresh();
        c.jobs[2].state = JobState::Running;
        assert!(c.check_invariants().unwrap_err().contains("not waiting"));
    }
}
