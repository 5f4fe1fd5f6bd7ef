//! Idle power-down, as Slurm's power saving: a node idle for the policy's
//! `power_down_after_s` is powered down (it draws nothing and offers
//! nothing), a pool keeps `warm_nodes` idle nodes powered up, and a job
//! that needs more than the powered-up nodes offer resumes powered-down
//! ones. A resumed node boots for its pool's `resume_s`: a job placed on
//! it is allocated at once and its run begins when the node is up, so the
//! resume time is part of its wait, of its planned end and of the
//! backfill reservations.
//!
//! Powered-down nodes are kept out of [`crate::cluster::Cluster`] as
//! accelerators down (capacity 0): placement never sees them. Only a
//! healthy idle node (every accelerator usable and free, not drained) is
//! powered down; a failure cannot hit it while it is down.

use super::*;
use std::collections::VecDeque;

/// Idle power-down state.
#[derive(Debug, Clone)]
pub(super) struct PowerDown {
    after_s: f64,
    pools: Vec<PdPool>,
    /// Per node (factory-wide): powered down.
    off: Vec<bool>,
    /// Per node: booting until then (resumed nodes).
    boot_until: Vec<f64>,
    /// Per node: when it last became idle (every accelerator free).
    idle_since: Vec<f64>,
    /// Per node: times powered down.
    cycles: Vec<u32>,
    /// Whether the nodes idle at the first pass are queued yet.
    started: bool,
    /// Nodes resumed for the job being placed (undone if it is not).
    resumed: Vec<NodeIdx>,
}

#[derive(Debug, Clone)]
struct PdPool {
    resume_s: f64,
    warm: u32,
    /// Power of one node when idle (node and accelerators), W.
    node_idle_w: f64,
    /// Nodes that became idle, oldest first: (since, node); an entry is
    /// stale once the node was used again.
    idle_q: VecDeque<(f64, NodeIdx)>,
    /// Powered-down nodes, resumed lowest first.
    off: BTreeSet<NodeIdx>,
    /// Of those, the ones not drained (what a resume can bring back).
    usable_off: u32,
}

/// Idle power-down figures of a run so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PowerDownStats {
    /// Nodes powered down (each power-down of a node counts).
    pub power_downs: u64,
    /// Nodes powered up again.
    pub resumes: u64,
    /// Runs that waited for a node to boot, and the seconds they waited.
    pub boot_waits: u64,
    pub boot_wait_s: f64,
    /// Nodes powered down now.
    pub nodes_off: u32,
    /// Most power-downs of one node.
    pub max_cycles: u32,
}

impl PowerDown {
    pub(super) fn new(factory: &Factory, policy: &Policy) -> Option<PowerDown> {
        let after_s = policy.power_down_after_s?;
        let n = factory.nodes() as usize;
        Some(PowerDown {
            after_s,
            pools: factory
                .pools
                .iter()
                .map(|p| PdPool {
                    resume_s: p.resume_s.unwrap_or(policy.resume_s),
                    warm: p.warm_nodes.unwrap_or(policy.warm_nodes),
                    node_idle_w: p.node_watts
                        + p.per_node as f64 * factory.catalog.get(p.accel).idle_watts,
                    idle_q: VecDeque::new(),
                    off: BTreeSet::new(),
                    usable_off: 0,
                })
                .collect(),
            off: vec![false; n],
            boot_until: vec![f64::NEG_INFINITY; n],
            idle_since: vec![f64::NAN; n],
            cycles: vec![0; n],
            started: false,
            resumed: Vec::new(),
        })
    }
}

impl SchedCore {
    /// Powers down the nodes idle for long enough (beyond each pool's warm
    /// reserve); returns when the next one will be.
    pub(super) fn power_tick(&mut self, now: f64) -> Option<f64> {
        let mut pd = self.pd.take()?;
        if !pd.started {
            pd.started = true;
            for (pi, ps) in self.cluster.pools.iter_mut().enumerate() {
                if let Some(b) = ps.became_whole.as_mut() {
                    b.clear();
                }
                for l in 0..ps.nodes {
                    if ps.free_on(l) == ps.per_node {
                        let g = ps.first_node + l;
                        pd.idle_since[g as usize] = now;
                        pd.pools[pi].idle_q.push_back((now, g));
                    }
                }
            }
        }
        let mut wake: Option<f64> = None;
        for pi in 0..self.cluster.pools.len() {
            {
                let ps = &mut self.cluster.pools[pi];
                let first = ps.first_node;
                if let Some(b) = ps.became_whole.as_mut() {
                    for &l in b.iter() {
                        let g = first + l;
                        if !pd.off[g as usize] {
                            pd.idle_since[g as usize] = now;
                            pd.pools[pi].idle_q.push_back((now, g));
                        }
                    }
                    b.clear();
                }
            }
            while let Some(&(t, g)) = pd.pools[pi].idle_q.front() {
                let ps = &self.cluster.pools[pi];
                let l = g - ps.first_node;
                let valid = !pd.off[g as usize]
                    && pd.idle_since[g as usize] == t
                    && ps.free_on(l) == ps.per_node
                    && !self.is_drained(g);
                if !valid {
                    pd.pools[pi].idle_q.pop_front();
                    continue;
                }
                let due = t.max(pd.boot_until[g as usize]) + pd.after_s;
                if ps.whole_nodes <= pd.pools[pi].warm {
                    break; // the warm reserve: looked at again as nodes free up
                }
                if due > now {
                    wake = Some(wake.map_or(due, |w: f64| w.min(due)));
                    break;
                }
                pd.pools[pi].idle_q.pop_front();
                self.node_power(&mut pd, g, false, now);
                pd.cycles[g as usize] += 1;
                self.power_downs += 1;
            }
        }
        self.pd = Some(pd);
        wake
    }

    /// Powers node `g` down (`on` false) or up, with its site's power.
    fn node_power(&mut self, pd: &mut PowerDown, g: NodeIdx, on: bool, now: f64) {
        self.changes += 1;
        let pi = self.cluster.pool_of(g) as usize;
        let per = self.cluster.pools[pi].per_node;
        let site = self.pool_power[pi].site;
        self.accrue_site(site, now);
        let w = pd.pools[pi].node_idle_w;
        let sp = &mut self.sites[site];
        if on {
            for _ in 0..per {
                self.cluster.up(g);
            }
            sp.it_w += w;
            sp.peak_w = sp.peak_w.max(sp.it_w * sp.pue);
            pd.pools[pi].off.remove(&g);
            if !self.is_drained(g) {
                pd.pools[pi].usable_off -= 1;
            }
        } else {
            for _ in 0..per {
                self.cluster.down(g);
            }
            sp.it_w = (sp.it_w - w).max(0.0);
            pd.pools[pi].off.insert(g);
            if !self.is_drained(g) {
                pd.pools[pi].usable_off += 1;
            }
        }
        pd.off[g as usize] = !on;
    }

    /// Nodes of pool `p` to resume for `gpus` to fit there: Some(0) when
    /// they fit now, None when they do not even with every powered-down
    /// node (or power-down is off).
    pub(super) fn resume_need(&self, p: PoolIdx, gpus: u32) -> Option<u32> {
        let ps = &self.cluster.pools[p as usize];
        if ps.may_fit(gpus) {
            return Some(0);
        }
        let pd = self.pd.as_ref()?;
        let off = pd.pools[p as usize].usable_off;
        if off == 0 {
            return None;
        }
        let per = ps.per_node as u32;
        // resumed nodes come up whole: enough whole nodes for the gang
        // (its remainder on a partial node if one has room)
        let k = gpus / per;
        let r = gpus % per;
        let partial = r > 0 && (r as u16..ps.per_node).any(|f| ps.has_free_exactly(f));
        let whole = k + u32::from(r > 0 && !partial);
        let need = whole.saturating_sub(ps.whole_nodes).max(1);
        (need <= off).then_some(need)
    }

    /// Accelerators of pool `p` powered down now.
    pub(super) fn off_accelerators(&self, p: PoolIdx) -> u64 {
        self.pd.as_ref().map_or(0, |pd| {
            pd.pools[p as usize].usable_off as u64 * self.cluster.pools[p as usize].per_node as u64
        })
    }

    /// Idle power of `n` nodes of pool `p`, W (what resuming them adds).
    pub(super) fn resume_w(&self, p: PoolIdx, n: u32) -> f64 {
        self.pd
            .as_ref()
            .map_or(0.0, |pd| n as f64 * pd.pools[p as usize].node_idle_w)
    }

    /// Seconds a powered-down node of pool `p` takes to come back.
    pub fn resume_s(&self, p: PoolIdx) -> f64 {
        self.pd
            .as_ref()
            .map_or(0.0, |pd| pd.pools[p as usize].resume_s)
    }

    /// Resumes `n` powered-down nodes of pool `p` (the lowest numbered,
    /// not drained) for a job about to be placed; they boot until
    /// `now + resume_s`.
    pub(super) fn resume_nodes(&mut self, p: PoolIdx, n: u32, now: f64) {
        let Some(mut pd) = self.pd.take() else {
            return;
        };
        pd.resumed.clear();
        let boot = now + pd.pools[p as usize].resume_s;
        let picks: Vec<NodeIdx> = pd.pools[p as usize]
            .off
            .iter()
            .copied()
            .filter(|&g| !self.is_drained(g))
            .take(n as usize)
            .collect();
        for g in picks {
            self.node_power(&mut pd, g, true, now);
            pd.boot_until[g as usize] = boot;
            pd.resumed.push(g);
            self.resumes += 1;
        }
        self.pd = Some(pd);
    }

    /// Powers back down the nodes just resumed for a job that was not
    /// placed after all (no cycle counted).
    pub(super) fn undo_resume(&mut self, now: f64) {
        let Some(mut pd) = self.pd.take() else {
            return;
        };
        let nodes = std::mem::take(&mut pd.resumed);
        for &g in &nodes {
            self.node_power(&mut pd, g, false, now);
            pd.boot_until[g as usize] = f64::NEG_INFINITY;
            self.resumes -= 1;
        }
        pd.resumed = nodes;
        pd.resumed.clear();
        self.pd = Some(pd);
    }

    /// Seconds from `now` until every node of `placement` is up.
    pub(super) fn boot_delay(&self, placement: &[(NodeIdx, u16)], now: f64) -> f64 {
        let Some(pd) = self.pd.as_ref() else {
            return 0.0;
        };
        placement
            .iter()
            .map(|&(n, _)| pd.boot_until[n as usize] - now)
            .fold(0.0, f64::max)
    }

    /// Resumes nodes where a pool's idle powered-up nodes fell below its
    /// warm reserve.
    pub(super) fn keep_warm(&mut self, now: f64) {
        if self.pd.is_none() {
            return;
        }
        for pi in 0..self.cluster.pools.len() {
            let Some(pd) = self.pd.as_ref() else {
                return;
            };
            let warm = pd.pools[pi].warm;
            let whole = self.cluster.pools[pi].whole_nodes;
            if whole < warm && pd.pools[pi].usable_off > 0 {
                let p = pi as PoolIdx;
                let n = warm - whole;
                if self.power_plan_nodes(p, n) {
                    self.resume_nodes(p, n, now);
                }
            }
        }
    }

    /// Whether `n` more idle nodes of pool `p` fit in its site's budget.
    fn power_plan_nodes(&self, p: PoolIdx, n: u32) -> bool {
        let sp = &self.sites[self.pool_power[p as usize].site];
        sp.budget_w
            .is_none_or(|b| (sp.it_w + self.resume_w(p, n)) * sp.pue <= b + 1e-6)
    }

    /// Node `g` was drained (`on`) or its drain ended: a powered-down
    /// node drained is not capacity a resume can bring back.
    pub(super) fn pd_drain_changed(&mut self, g: NodeIdx, on: bool) {
        let pi = self.cluster.pool_of(g) as usize;
        if let Some(pd) = self.pd.as_mut()
            && pd.off.get(g as usize).copied().unwrap_or(false)
        {
            let u = &mut pd.pools[pi].usable_off;
            if on {
                *u = u.saturating_sub(1);
            } else {
                *u += 1;
            }
        }
    }

    /// Every powered-up node boots until `now` + its pool's resume time (a
    /// restarted server powers all nodes up): a run placed there begins
    /// once they are up.
    pub fn assume_booting(&mut self, now: f64) {
        let Some(pd) = self.pd.as_mut() else {
            return;
        };
        for (pi, ps) in self.cluster.pools.iter().enumerate() {
            let boot = now + pd.pools[pi].resume_s;
            for g in ps.first_node..ps.first_node + ps.nodes {
                if !pd.off[g as usize] {
                    pd.boot_until[g as usize] = boot;
                }
            }
        }
    }

    /// Whether node `g` is powered down.
    pub fn is_powered_down(&self, g: NodeIdx) -> bool {
        self.pd
            .as_ref()
            .is_some_and(|pd| pd.off.get(g as usize).copied().unwrap_or(false))
    }

    /// The time until which node `g` boots (None: it is not booting at `now`).
    pub fn booting_until(&self, g: NodeIdx, now: f64) -> Option<f64> {
        self.pd
            .as_ref()
            .and_then(|pd| pd.boot_until.get(g as usize).copied())
            .filter(|&t| t > now)
    }

    /// Power-downs of each node so far (empty when power-down is off).
    pub fn power_cycles(&self) -> &[u32] {
        self.pd.as_ref().map_or(&[], |pd| &pd.cycles)
    }

    /// Idle power-down figures so far.
    pub fn power_down_stats(&self) -> PowerDownStats {
        PowerDownStats {
            power_downs: self.power_downs,
            resumes: self.resumes,
            boot_waits: self.boot_waits,
            boot_wait_s: self.boot_wait_s,
            nodes_off: self
                .pd
                .as_ref()
                .map_or(0, |pd| pd.pools.iter().map(|p| p.off.len() as u32).sum()),
            max_cycles: self.power_cycles().iter().copied().max().unwrap_or(0),
        }
    }
}
