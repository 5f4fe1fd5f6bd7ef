//! Candidates (the filter): which pools a job may run in, at what
//! run-time factor, and whether it can ever run.

use super::*;

impl SchedCore {
    /// Run-time factor of job `j` on `pool` (None if it cannot run there).
    pub fn factor(&self, j: JobIdx, pool: PoolIdx) -> Option<f64> {
        let job = &self.jobs[j as usize];
        self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .find(|(p, _)| *p == pool)
            .map(|x| x.1)
    }

    pub(super) fn type_ok(&self, f: &TypeFilter, t: TypeIdx) -> bool {
        let ty = self.factory.catalog.get(t);
        f.accepts(ty)
    }

    pub(super) fn cand_list(&mut self, spec: &JobSpec, steps: bool) -> Result<u32, Reason> {
        let hash = class_hash(spec, steps);
        if let Some(&(_, i)) = self
            .cand_index
            .get(&hash)
            .and_then(|b| b.iter().find(|(k, _)| k.matches(spec, steps)))
        {
            return Ok(i);
        }
        let jt = spec
            .job_type
            .as_deref()
            .filter(|t| self.throughputs.has_job_type(t));
        if steps && jt.is_none() {
            return Err(Reason::UnknownJobType);
        }
        // throughput per pool (None: not measured)
        let mut pools: Vec<(PoolIdx, Option<f64>)> = Vec::new();
        for (i, p) in self.factory.pools.iter().enumerate() {
            let site_ok = spec.types.sites.is_empty()
                || spec
                    .types
                    .sites
                    .iter()
                    .any(|s| *s == self.factory.sites[p.site].name);
            if !site_ok
                || !self.type_ok(&spec.types, p.accel)
                || spec.gpus as u64 > p.accelerators()
            {
                continue;
            }
            let thr = jt.and_then(|t| {
                self.throughputs
                    .get(t, &self.factory.catalog.get(p.accel).id, spec.gpus)
            });
            if jt.is_some() && !thr.is_some_and(|x| x > 0.0 && x.is_finite()) {
                continue; // cannot run there (or unmeasured)
            }
            pools.push((i as PoolIdx, thr));
        }
        if pools.is_empty() {
            return Err(Reason::Unsatisfiable);
        }
        let best = pools.iter().filter_map(|p| p.1).fold(0.0f64, f64::max);
        let mut list: Vec<(PoolIdx, f64)> = pools
            .iter()
            .map(|&(p, thr)| {
                let f = match (thr, steps) {
                    (Some(t), true) => 1.0 / t,
                    (Some(t), false) => best / t,
                    (None, _) => 1.0,
                };
                (p, f)
            })
            .collect();
        if self.policy.kind.traits().pools == PoolOrder::ThroughputPerCost {
            // best throughput per billing unit first
            let cat = &self.factory.catalog;
            let pools = &self.factory.pools;
            let score = |&(p, f): &(PoolIdx, f64)| {
                1.0 / (f * cat.get(pools[p as usize].accel).billing_weight)
            };
            list.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.0.cmp(&b.0)));
        } else if spec.types.sites.len() > 1 {
            // the sites a job lists come in its order of preference (its
            // home first)
            let sites = &self.factory.sites;
            let pools = &self.factory.pools;
            let rank = |p: PoolIdx| {
                let name = &sites[pools[p as usize].site].name;
                spec.types
                    .sites
                    .iter()
                    .position(|s| s == name)
                    .unwrap_or(usize::MAX)
            };
            list.sort_by_key(|&(p, _)| rank(p));
        }
        if self.policy.energy_aware {
            // lowest energy to solution first: run time × power (stable,
            // so the order above breaks ties)
            let cat = &self.factory.catalog;
            let pools = &self.factory.pools;
            let energy = |&(p, f): &(PoolIdx, f64)| {
                f * crate::energy::job_power_w(cat.get(pools[p as usize].accel))
            };
            list.sort_by(|a, b| energy(a).total_cmp(&energy(b)));
        }
        let i = self.cand_lists.len() as u32;
        let varied = list.iter().any(|x| x.1 != list[0].1);
        let site0 = self.factory.pools[list[0].0 as usize].site;
        let multi_site = list
            .iter()
            .any(|x| self.factory.pools[x.0 as usize].site != site0);
        let balanced = multi_site
            && !varied
            && !self.policy.energy_aware
            && self.policy.kind.traits().pools != PoolOrder::ThroughputPerCost
            && spec.types.sites.len() <= 1;
        self.cand_lists.push(CandList {
            pools: list,
            varied,
            multi_site,
            balanced,
        });
        self.cand_index.entry(hash).or_default().push((
            CandKey {
                types: spec.types.clone(),
                job_type: spec.job_type.clone(),
                gpus: spec.gpus,
                steps,
            },
            i,
        ));
        Ok(i)
    }

    /// Whether a job could ever run here (`Err` gives the reason it would
    /// be refused), without submitting it.
    pub fn check(&mut self, spec: &JobSpec) -> Result<(), Reason> {
        let steps = spec.steps.is_some() && spec.job_type.is_some();
        self.cand_list(spec, steps).map(|_| ())
    }

    /// The highest billing weight among the pools a job may run on (what
    /// its time limit reserves of a grant at the most); `Err` as
    /// [`SchedCore::check`].
    pub fn max_billing(&mut self, spec: &JobSpec) -> Result<f64, Reason> {
        let steps = spec.steps.is_some() && spec.job_type.is_some();
        let cl = self.cand_list(spec, steps)?;
        Ok(self.cand_lists[cl as usize]
            .pools
            .iter()
            .map(|&(p, _)| self.billing(p))
            .fold(0.0, f64::max))
    }

    /// The pools a waiting or running job may run on.
    pub fn candidate_pools(&self, j: JobIdx) -> impl Iterator<Item = PoolIdx> + '_ {
        let job = &self.jobs[j as usize];
        self.cand_lists[job.cands as usize]
            .pools
            .iter()
            .map(|&(p, _)| p)
    }
}
