//! The fleet seen by the scheduler: drained nodes, usable and busy
//! accelerators.

use super::*;

impl SchedCore {
    /// Whether a waiting job would find a free gang now on one of its
    /// candidate pools (ignoring queue order and reservations): tells
    /// "waits for capacity" from "waits for its turn".
    pub fn fits_now(&self, j: JobIdx) -> bool {
        let job = &self.jobs[j as usize];
        self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .any(|&(p, _)| self.resume_need(p, job.gpus).is_some())
    }

    /// Drains `node`: its free accelerators go down now and each one freed
    /// later by a job goes down too, until [`SchedCore::resume`]. Returns
    /// the accelerators taken down now.
    pub fn drain(&mut self, node: NodeIdx) -> u16 {
        self.changes += 1;
        let n = node as usize;
        if self.drained.len() <= n {
            self.drained.resize(n + 1, 0);
        }
        let mut c = 0;
        while self.cluster.down(node) {
            c += 1;
        }
        if self.drained[n] & DRAIN_FLAG == 0 {
            self.pd_drain_changed(node, true);
            let p = self.cluster.pool_of(node) as usize;
            if self.pool_drained.len() <= p {
                self.pool_drained.resize(p + 1, 0);
            }
            self.pool_drained[p] += 1;
        }
        self.drained[n] = self.drained[n].saturating_add(c) | DRAIN_FLAG;
        c
    }

    /// Drained nodes of pool `p`.
    pub fn drained_nodes_in(&self, p: PoolIdx) -> u32 {
        self.pool_drained.get(p as usize).copied().unwrap_or(0)
    }

    /// Whether a waiting job that finds no free gang has drained nodes on
    /// one of its pools (it may be waiting for them).
    pub fn waits_on_drained(&self, j: JobIdx) -> bool {
        self.candidate_pools(j)
            .any(|p| self.drained_nodes_in(p) > 0)
    }

    /// Ends a drain: the accelerators it took down come back.
    pub fn resume(&mut self, node: NodeIdx) -> u16 {
        self.changes += 1;
        let n = node as usize;
        let Some(d) = self.drained.get_mut(n) else {
            return 0;
        };
        let c = *d & !DRAIN_FLAG;
        let was = *d & DRAIN_FLAG != 0;
        *d = 0;
        if was {
            let p = self.cluster.pool_of(node) as usize;
            if let Some(x) = self.pool_drained.get_mut(p) {
                *x = x.saturating_sub(1);
            }
            self.pd_drain_changed(node, false);
        }
        for _ in 0..c {
            self.cluster.up(node);
        }
        c
    }

    /// Accelerators of `node` held down by its drain (0 when not drained).
    pub fn drained_accelerators(&self, node: NodeIdx) -> u16 {
        self.drained
            .get(node as usize)
            .map_or(0, |d| d & !DRAIN_FLAG)
    }

    /// Whether `node` is drained.
    pub fn is_drained(&self, node: NodeIdx) -> bool {
        self.drained
            .get(node as usize)
            .is_some_and(|d| d & DRAIN_FLAG != 0)
    }

    /// Marks node `node` suspect (health): long gangs
    /// ([`crate::Policy::suspect_avoid_s`]) are not placed on it.
    pub fn set_suspect(&mut self, node: NodeIdx, on: bool) {
        self.changes += 1;
        if on {
            self.suspect.insert(node);
        } else {
            self.suspect.remove(&node);
        }
    }

    /// Whether `node` is suspect.
    pub fn is_suspect(&self, node: NodeIdx) -> bool {
        self.suspect.contains(&node)
    }

    /// Takes the free accelerators of pool `p`'s suspect nodes out of
    /// placement (until [`SchedCore::unhide_suspects`]); false if none was.
    pub(super) fn hide_suspects(&mut self, p: PoolIdx) -> bool {
        self.hidden.clear();
        let ps = &self.cluster.pools[p as usize];
        let (lo, hi) = (ps.first_node, ps.first_node + ps.nodes);
        // the suspect set and the cluster are separate fields: no list of
        // nodes is made on the way
        for &n in self.suspect.range(lo..hi) {
            let mut c = 0u16;
            while self.cluster.down(n) {
                c += 1;
            }
            if c > 0 {
                self.hidden.push((n, c));
            }
        }
        !self.hidden.is_empty()
    }

    /// Gives back what [`SchedCore::hide_suspects`] took.
    pub(super) fn unhide_suspects(&mut self) {
        for &(n, c) in &self.hidden {
            let p = self.cluster.pool_of(n) as usize;
            // not newly idle: a node hidden while idle keeps its idle clock
            let before = self.cluster.pools[p].became_whole.as_ref().map(Vec::len);
            for _ in 0..c {
                self.cluster.up(n);
            }
            if let (Some(b), Some(len)) = (self.cluster.pools[p].became_whole.as_mut(), before) {
                b.truncate(len);
            }
        }
        self.hidden.clear();
    }

    /// Accelerators usable now (total minus down).
    pub fn usable_accelerators(&self) -> u64 {
        self.cluster.pools.iter().map(|p| p.cap_total).sum()
    }

    /// Accelerators busy now.
    pub fn busy_accelerators(&self) -> u64 {
        self.cluster
            .pools
            .iter()
            .map(|p| p.cap_total - p.free_total)
            .sum()
    }
}
