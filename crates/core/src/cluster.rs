//! Free-capacity bookkeeping and topology-aware gang placement.
//!
//! Each pool keeps, per node, its usable accelerators (`cap`, lowered while an
//! accelerator is down) and its free ones; nodes are bucketed by free count so
//! a best-fit node is found in O(accelerators per node), and whole free nodes
//! are counted per scale-up domain and per leaf switch so a large gang is
//! placed by scanning domains and leaves, never all nodes, unless it fits.

use crate::factory::{Factory, PoolIdx};

/// Global node index (factory-wide numbering).
pub type NodeIdx = u32;

/// Where a gang runs: (node, accelerators on that node).
pub type Placement = Vec<(NodeIdx, u16)>;

#[derive(Debug, Clone)]
pub struct PoolState {
    pub per_node: u16,
    pub nodes: u32,
    pub first_node: u32,
    pub domain_nodes: u32,
    pub leaf_nodes: u32,
    cap: Vec<u16>,
    free: Vec<u16>,
    buckets: Vec<Vec<u32>>,
    pos: Vec<u32>,
    whole_in_domain: Vec<u32>,
    whole_in_leaf: Vec<u32>,
    /// Free accelerators on up nodes.
    pub free_total: u64,
    /// Usable (not down) accelerators.
    pub cap_total: u64,
    /// Nodes with every accelerator free.
    pub whole_nodes: u32,
    scratch: Vec<(u32, u32)>,
    /// Local nodes that became whole (every usable accelerator free) since
    /// the buffer was last taken, when tracked (idle power-down).
    pub(crate) became_whole: Option<Vec<u32>>,
}

impl PoolState {
    fn new(nodes: u32, per_node: u32, first_node: u32, domain_nodes: u32, leaf_nodes: u32) -> Self {
        let per = per_node as u16;
        let mut buckets = vec![Vec::new(); per as usize + 1];
        buckets[per as usize] = (0..nodes).collect();
        let domains = nodes.div_ceil(domain_nodes) as usize;
        let leaves = nodes.div_ceil(leaf_nodes) as usize;
        let mut whole_in_domain = vec![0u32; domains];
        let mut whole_in_leaf = vec![0u32; leaves];
        for n in 0..nodes {
            whole_in_domain[(n / domain_nodes) as usize] += 1;
            whole_in_leaf[(n / leaf_nodes) as usize] += 1;
        }
        PoolState {
            per_node: per,
            nodes,
            first_node,
            domain_nodes,
            leaf_nodes,
            cap: vec![per; nodes as usize],
            free: vec![per; nodes as usize],
            buckets,
            pos: (0..nodes).collect(),
            whole_in_domain,
            whole_in_leaf,
            free_total: nodes as u64 * per_node as u64,
            cap_total: nodes as u64 * per_node as u64,
            whole_nodes: nodes,
            scratch: Vec::new(),
            became_whole: None,
        }
    }

    pub fn accelerators(&self) -> u64 {
        self.nodes as u64 * self.per_node as u64
    }

    /// Free accelerators on a local node.
    pub fn free_on(&self, local: u32) -> u16 {
        self.free[local as usize]
    }

    /// Usable accelerators on a local node.
    pub fn cap_on(&self, local: u32) -> u16 {
        self.cap[local as usize]
    }

    fn is_whole(&self, n: u32) -> bool {
        self.free[n as usize] == self.per_node
    }

    fn set_free(&mut self, n: u32, new_free: u16) {
        let old = self.free[n as usize];
        if old == new_free {
            return;
        }
        let was_whole = old == self.per_node;
        // remove from old bucket
        let b = &mut self.buckets[old as usize];
        let p = self.pos[n as usize] as usize;
        let last = *b.last().expect("node in bucket");
        b.swap_remove(p);
        if last != n {
            self.pos[last as usize] = p as u32;
        }
        let nb = &mut self.buckets[new_free as usize];
        self.pos[n as usize] = nb.len() as u32;
        nb.push(n);
        self.free[n as usize] = new_free;
        let is_whole = new_free == self.per_node;
        if was_whole != is_whole {
            let d = (n / self.domain_nodes) as usize;
            let l = (n / self.leaf_nodes) as usize;
            if is_whole {
                self.whole_in_domain[d] += 1;
                self.whole_in_leaf[l] += 1;
                self.whole_nodes += 1;
                if let Some(b) = self.became_whole.as_mut() {
                    b.push(n);
                }
            } else {
                self.whole_in_domain[d] -= 1;
                self.whole_in_leaf[l] -= 1;
                self.whole_nodes -= 1;
            }
        }
    }

    /// Takes `count` accelerators on local node `n`.
    fn take(&mut self, n: u32, count: u16) {
        let f = self.free[n as usize];
        debug_assert!(f >= count);
        self.set_free(n, f - count);
        self.free_total -= count as u64;
    }

    /// Gives back `count` accelerators on local node `n`.
    fn give(&mut self, n: u32, count: u16) {
        let f = self.free[n as usize];
        debug_assert!(f + count <= self.cap[n as usize]);
        self.set_free(n, f + count);
        self.free_total += count as u64;
    }

    /// Marks one free accelerator of local node `n` down.
    fn down(&mut self, n: u32) -> bool {
        if self.free[n as usize] == 0 {
            return false;
        }
        self.take(n, 1);
        self.cap[n as usize] -= 1;
        self.cap_total -= 1;
        true
    }

    /// Brings one accelerator of local node `n` back up.
    fn up(&mut self, n: u32) -> bool {
        if self.cap[n as usize] >= self.per_node {
            return false;
        }
        self.cap[n as usize] += 1;
        self.cap_total += 1;
        self.give(n, 1);
        true
    }

    /// Quick necessary condition for `gpus` to fit now.
    /// Checks the pool's own bookkeeping (free counts, buckets, whole
    /// nodes); says what is wrong.
    pub fn check(&self) -> Result<(), String> {
        let mut whole = 0;
        let mut free = 0u64;
        for n in 0..self.nodes {
            let f = self.free[n as usize];
            if f > self.cap[n as usize] {
                return Err(format!(
                    "node {n}: {f} free of {} usable",
                    self.cap[n as usize]
                ));
            }
            if self.buckets[f as usize].get(self.pos[n as usize] as usize) != Some(&n) {
                return Err(format!("node {n}: not in the bucket of its free count {f}"));
            }
            free += f as u64;
            whole += u32::from(f == self.per_node);
        }
        if (whole, free) != (self.whole_nodes, self.free_total) {
            return Err(format!(
                "whole nodes {whole} / free {free} counted as {} / {}",
                self.whole_nodes, self.free_total
            ));
        }
        if self.whole_in_leaf.iter().sum::<u32>() != whole
            || self.whole_in_domain.iter().sum::<u32>() != whole
        {
            return Err("whole nodes per leaf or domain do not add up".into());
        }
        Ok(())
    }

    /// Whether some node has exactly `f` free accelerators.
    pub(crate) fn has_free_exactly(&self, f: u16) -> bool {
        self.buckets.get(f as usize).is_some_and(|b| !b.is_empty())
    }

    pub fn may_fit(&self, gpus: u32) -> bool {
        if gpus as u64 > self.free_total {
            return false;
        }
        let per = self.per_node as u32;
        if gpus <= per {
            return (gpus as usize..=per as usize).any(|k| !self.buckets[k].is_empty());
        }
        let k = gpus / per;
        let r = gpus % per;
        if self.whole_nodes < k {
            return false;
        }
        if r == 0 || self.whole_nodes > k {
            return true;
        }
        (r as usize..per as usize).any(|k| !self.buckets[k].is_empty())
    }

    /// Finds a placement for `gpus` accelerators and takes them; `out` gets
    /// (local node, count) pairs. Fewest nodes first, then one scale-up
    /// domain, then one leaf switch; single-node gangs go best-fit.
    fn place(&mut self, gpus: u32, out: &mut Vec<(u32, u16)>) -> bool {
        out.clear();
        if gpus == 0 || !self.may_fit(gpus) {
            return false;
        }
        let per = self.per_node as u32;
        if gpus <= per {
            for k in gpus as usize..=per as usize {
                if let Some(&n) = self.buckets[k].last() {
                    out.push((n, gpus as u16));
                    self.take(n, gpus as u16);
                    return true;
                }
            }
            return false;
        }
        let k = gpus / per;
        let r = gpus % per;
        // Remainder on the best-fitting partial node, else on one more whole node.
        let mut rem_node = None;
        if r > 0 {
            for b in r as usize..per as usize {
                if let Some(&n) = self.buckets[b].last() {
                    rem_node = Some(n);
                    break;
                }
            }
        }
        let kw = k + u32::from(r > 0 && rem_node.is_none());
        if self.whole_nodes < kw {
            return false;
        }
        self.pick_whole(kw, out);
        if let Some(n) = rem_node {
            out.push((n, r as u16));
        } else if r > 0 {
            // the last whole node picked carries the remainder
            if let Some(last) = out.last_mut() {
                last.1 = r as u16;
            }
        }
        for &(n, c) in out.iter() {
            self.take(n, c);
        }
        true
    }

    /// Chooses `kw` whole nodes (pushed with count = per_node).
    fn pick_whole(&mut self, kw: u32, out: &mut Vec<(u32, u16)>) {
        let per = self.per_node;
        // 1. one scale-up domain, best fit
        if self.domain_nodes >= kw {
            let mut best: Option<(u32, usize)> = None;
            for (d, &w) in self.whole_in_domain.iter().enumerate() {
                if w >= kw && best.is_none_or(|(bw, _)| w < bw) {
                    best = Some((w, d));
                    if w == kw {
                        break;
                    }
                }
            }
            if let Some((_, d)) = best {
                let start = d as u32 * self.domain_nodes;
                let end = (start + self.domain_nodes).min(self.nodes);
                self.push_whole_range(start, end, kw, out);
                return;
            }
        }
        // 2. one leaf switch, best fit; 3. otherwise the fullest leaves first
        let mut best: Option<(u32, usize)> = None;
        if self.leaf_nodes >= kw {
            for (l, &w) in self.whole_in_leaf.iter().enumerate() {
                if w >= kw && best.is_none_or(|(bw, _)| w < bw) {
                    best = Some((w, l));
                    if w == kw {
                        break;
                    }
                }
            }
        }
        let mut leaves = std::mem::take(&mut self.scratch);
        leaves.clear();
        if let Some((w, l)) = best {
            leaves.push((w, l as u32));
        } else {
            leaves.extend(
                self.whole_in_leaf
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| **w > 0)
                    .map(|(l, &w)| (w, l as u32)),
            );
            leaves.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let mut need = kw;
        let mut doms: Vec<(u32, u32)> = Vec::new();
        for &(_, l) in leaves.iter() {
            if need == 0 {
                break;
            }
            // domains of this leaf, fullest first
            let first_dom = l * self.leaf_nodes / self.domain_nodes;
            let ndom = self.leaf_nodes / self.domain_nodes;
            doms.clear();
            for d in first_dom..first_dom + ndom {
                if let Some(&w) = self.whole_in_domain.get(d as usize)
                    && w > 0
                {
                    doms.push((w, d));
                }
            }
            doms.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            for &(_, d) in &doms {
                if need == 0 {
                    break;
                }
                let start = d * self.domain_nodes;
                let end = (start + self.domain_nodes).min(self.nodes);
                let before = out.len();
                self.push_whole_range(start, end, need, out);
                need -= (out.len() - before) as u32;
            }
        }
        debug_assert_eq!(need, 0);
        let _ = per;
        self.scratch = leaves;
    }

    fn push_whole_range(&self, start: u32, end: u32, max: u32, out: &mut Vec<(u32, u16)>) {
        let mut taken = 0;
        for n in start..end {
            if taken == max {
                break;
            }
            if self.is_whole(n) {
                out.push((n, self.per_node));
                taken += 1;
            }
        }
    }
}

/// Free capacity of the whole factory.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub pools: Vec<PoolState>,
    /// Pool of each global node.
    node_pool: Vec<PoolIdx>,
    local: Vec<(u32, u16)>,
}

impl Cluster {
    pub fn new(f: &Factory) -> Cluster {
        let mut node_pool = Vec::with_capacity(f.nodes() as usize);
        let pools = f
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| {
                node_pool.extend(std::iter::repeat_n(i as PoolIdx, p.nodes as usize));
                PoolState::new(
                    p.nodes,
                    p.per_node,
                    p.first_node,
                    p.domain_nodes,
                    p.leaf_nodes,
                )
            })
            .collect();
        Cluster {
            pools,
            node_pool,
            local: Vec::new(),
        }
    }

    pub fn pool_of(&self, node: NodeIdx) -> PoolIdx {
        self.node_pool[node as usize]
    }

    pub fn nodes(&self) -> u32 {
        self.node_pool.len() as u32
    }

    /// Places a gang in `pool`, taking the accelerators; `out` gets global nodes.
    pub fn place(&mut self, pool: PoolIdx, gpus: u32, out: &mut Placement) -> bool {
        let p = &mut self.pools[pool as usize];
        let mut local = std::mem::take(&mut self.local);
        let ok = p.place(gpus, &mut local);
        out.clear();
        if ok {
            out.extend(local.iter().map(|&(n, c)| (n + p.first_node, c)));
        }
        self.local = local;
        ok
    }

    /// Takes exactly this placement (used to undo a tentative release).
    pub fn take_exact(&mut self, placement: &[(NodeIdx, u16)]) {
        for &(n, c) in placement {
            let p = &mut self.pools[self.node_pool[n as usize] as usize];
            p.take(n - p.first_node, c);
        }
    }

    /// Gives a placement back.
    pub fn release(&mut self, placement: &[(NodeIdx, u16)]) {
        for &(n, c) in placement {
            let p = &mut self.pools[self.node_pool[n as usize] as usize];
            p.give(n - p.first_node, c);
        }
    }

    /// Marks one free accelerator of `node` down; false if none is free.
    pub fn down(&mut self, node: NodeIdx) -> bool {
        let p = &mut self.pools[self.node_pool[node as usize] as usize];
        p.down(node - p.first_node)
    }

    /// Brings one accelerator of `node` back; false if none was down.
    pub fn up(&mut self, node: NodeIdx) -> bool {
        let p = &mut self.pools[self.node_pool[node as usize] as usize];
        p.up(node - p.first_node)
    }

    /// (usable, free) accelerators on `node`.
    pub fn node_state(&self, node: NodeIdx) -> (u16, u16) {
        let p = &self.pools[self.node_pool[node as usize] as usize];
        let l = node - p.first_node;
        (p.cap_on(l), p.free_on(l))
    }

    pub fn free_total(&self) -> u64 {
        self.pools.iter().map(|p| p.free_total).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(nodes: u32, per: u32, dom: u32, leaf: u32) -> PoolState {
        PoolState::new(nodes, per, 0, dom, leaf)
    }

    fn check_invariants(p: &PoolState) {
        p.check().unwrap();
    }

    #[test]
    fn single_node_best_fit() {
        let mut p = pool(4, 8, 1, 2);
        let mut out = Vec::new();
        assert!(p.place(6, &mut out));
        let n6 = out[0].0;
        // a 2-GPU job goes to the node with exactly 2 free
        assert!(p.place(2, &mut out));
        assert_eq!(out, vec![(n6, 2)]);
        assert!(p.place(8, &mut out));
        assert!(!p.place(9 * 8, &mut out));
        check_invariants(&p);
    }

    #[test]
    fn gang_prefers_one_domain_then_one_leaf() {
        // 72-accelerator domains of 18 nodes x 4; leaves of 36 nodes.
        let mut p = pool(72, 4, 18, 36);
        let mut out = Vec::new();
        // occupy one node in domain 0 so domain 1 is the only whole domain in leaf 0
        assert!(p.place(4, &mut out));
        let first = out[0].0;
        assert!(p.place(72, &mut out));
        assert_eq!(out.len(), 18);
        let d = out[0].0 / 18;
        assert!(out.iter().all(|(n, c)| n / 18 == d && *c == 4));
        assert_ne!(first / 18, d);
        // a gang of 100 (25 nodes) cannot fit a domain: it must use one leaf
        assert!(p.place(100, &mut out));
        let leaf = out[0].0 / 36;
        assert!(out.iter().all(|(n, _)| n / 36 == leaf), "{out:?}");
        check_invariants(&p);
    }

    #[test]
    fn gang_remainder_uses_partial_node_and_spans_leaves() {
        let mut p = pool(8, 8, 1, 2);
        let mut out = Vec::new();
        assert!(p.place(3, &mut out)); // one partial node with 5 free
        let partial = out[0].0;
        assert!(p.place(8 * 3 + 5, &mut out));
        assert_eq!(out.len(), 4);
        assert!(out.contains(&(partial, 5)));
        assert_eq!(out.iter().map(|x| x.1 as u32).sum::<u32>(), 29);
        check_invariants(&p);
        // 4 whole nodes left; a 33-GPU gang needs 5 nodes: no
        assert!(!p.may_fit(33));
        assert!(!p.place(33, &mut out));
        assert!(p.place(32, &mut out));
        assert_eq!(p.free_total, 0);
        check_invariants(&p);
    }

    #[test]
    fn release_down_up_roundtrip() {
        let mut p = pool(4, 8, 1, 4);
        let mut out = Vec::new();
        assert!(p.place(20, &mut out));
        let saved = out.clone();
        for &(n, c) in &saved {
            p.give(n, c);
        }
        assert_eq!(p.free_total, 32);
        assert!(p.down(0));
        assert_eq!(p.whole_nodes, 3);
        assert!(!p.may_fit(32));
        assert!(p.may_fit(31) && !p.may_fit(32));
        assert!(p.up(0));
        assert!(!p.up(0));
        assert_eq!(p.whole_nodes, 4);
        check_invariants(&p);
    }
}
