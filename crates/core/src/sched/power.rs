//! Power and carbon: site power against budgets, power-capped starts,
//! carbon-aware deferral and placement, energy accounting.

use super::*;

/// Share of a pool that must stay free for a job to wait there for a
/// cleaner hour rather than start now.
const CARBON_SPARE: f64 = 0.5;

impl SchedCore {
    /// Accrues site `s`'s energy and carbon up to `now`.
    pub(super) fn accrue_site(&mut self, s: usize, now: f64) {
        let cal = self.policy.calendar_start_s;
        let sp = &mut self.sites[s];
        let dt = now - sp.t;
        if dt > 0.0 {
            let w = sp.it_w * sp.pue;
            sp.energy_j += w * dt;
            if let Some(cs) = &sp.carbon {
                sp.carbon_g += w * cs.integral(cal + sp.t, cal + now) / 3.6e6;
            }
            sp.t = now;
        }
    }

    /// Power at which `gpus` accelerators of `pool` may start now, given
    /// `freed_w` of IT power about to be released: (W each, speed kept), or
    /// None when the site's budget does not allow it even capped.
    pub(super) fn power_plan(&self, pool: PoolIdx, gpus: u32, freed_w: f64) -> Option<(f64, f64)> {
        let pp = self.pool_power[pool as usize];
        let want = pp.job_w;
        let sp = &self.sites[pp.site];
        let Some(budget) = sp.budget_w else {
            return Some((want, 1.0));
        };
        let g = gpus as f64;
        let head_it = budget / sp.pue - (sp.it_w - freed_w);
        if g * (want - pp.idle_w) <= head_it + 1e-6 {
            return Some((want, 1.0));
        }
        if !self.policy.power_capping {
            return None;
        }
        let cap = pp.idle_w + head_it / g;
        if cap + 1e-9 < pp.min_cap_w {
            return None;
        }
        Some((cap, crate::energy::capped_speed(cap, want)))
    }

    /// Carbon-aware start of a job with a deadline: defer it to a cleaner
    /// hour, or go now with its candidate pools ordered by the carbon
    /// intensity of their sites over its run (in `site_order`).
    pub(super) fn carbon_plan(&mut self, j: JobIdx, cl: usize, now: f64) -> CarbonPlan {
        let cal = self.policy.calendar_start_s;
        let job = &self.jobs[j as usize];
        let deadline = job.deadline_s;
        if deadline.is_none() && !self.cand_lists[cl].multi_site {
            return CarbonPlan::NoData;
        }
        let pools = &self.cand_lists[cl].pools;
        let run = |f: f64| {
            job.time_limit_s
                .unwrap_or((1.0 - job.done).max(0.0) * job.base * f)
                .max(1.0)
        };
        self.site_order.clear();
        let mut any = false;
        let mut longest: f64 = 0.0;
        for (ci, &(p, f)) in pools.iter().enumerate() {
            let s = self.factory.pools[p as usize].site;
            let r = run(f);
            longest = longest.max(r);
            let key = match &self.sites[s].carbon {
                Some(cs) => {
                    any = true;
                    self.carbon_mean(cs, cal + now, cal + now, cal + now + r)
                }
                None => f64::MAX,
            };
            self.site_order.push((key, ci));
        }
        if !any {
            return CarbonPlan::NoData;
        }
        self.site_order
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        // a job without a deadline is not delayed: it only goes to the
        // cleanest site with room
        let Some(deadline) = deadline else {
            return CarbonPlan::Go;
        };
        // latest start that still meets the deadline, with a margin for
        // waiting on capacity then
        let latest = deadline - longest - (3600.0 + 0.1 * longest);
        if now >= latest {
            return CarbonPlan::Go;
        }
        // the cleanest start possible now: the first pool in carbon order
        // with a free gang and power headroom
        let gpus = job.gpus;
        let mut feasible = f64::INFINITY;
        let mut feasible_pool = None;
        for &(key, ci) in &self.site_order {
            let p = pools[ci].0;
            let resume = self.resume_need(p, gpus);
            if let Some(n) = resume
                && self.power_plan(p, gpus, -self.resume_w(p, n)).is_some()
            {
                feasible = key;
                feasible_pool = Some(p);
                break;
            }
        }
        // room now at the cleanest site in the job's run: waiting for a
        // cleaner hour there risks that room (others take it, and the job
        // ends up at a dirtier site), so it goes unless the site has room
        // to spare
        if let Some(p) = feasible_pool
            && feasible <= self.site_order[0].0 + 1e-9
        {
            let ps = &self.cluster.pools[p as usize];
            let off = self.off_accelerators(p) as f64;
            if (ps.free_total as f64 + off) < CARBON_SPARE * (ps.cap_total as f64 + off) {
                return CarbonPlan::Go;
            }
        }
        // what waiting could give: a cleaner site once it has room, or a
        // cleaner hour anywhere before the latest start
        let mut best = (self.site_order[0].0, now + RECHECK_S);
        let mut h = ((cal + now) / 3600.0).floor() * 3600.0 + 3600.0 - cal;
        let mut steps = 0;
        while h <= latest && steps < 168 {
            for &(p, f) in pools.iter() {
                let s = self.factory.pools[p as usize].site;
                if let Some(cs) = &self.sites[s].carbon {
                    let m = self.carbon_mean(cs, cal + now, cal + h, cal + h + run(f));
                    if m < best.0 {
                        best = (m, h);
                    }
                }
            }
            h += 3600.0;
            steps += 1;
        }
        if best.0 < feasible * (1.0 - self.policy.carbon_threshold) {
            // look again soon: room may free up at a cleaner site first
            CarbonPlan::Defer(best.1.min(now + RECHECK_S).min(latest).max(now + 1.0))
        } else {
            CarbonPlan::Go
        }
    }

    /// Carbon-aware capping: job `j` (with a deadline) about to start on
    /// `pool` at `power` runs capped as low as its deadline (with a margin)
    /// and time limit allow where its site's grid, forecast over its run,
    /// is dirtier than the policy's `carbon_cap_g_per_kwh`.
    pub(super) fn dirty_cap(
        &self,
        j: JobIdx,
        pool: PoolIdx,
        factor: f64,
        resumes: bool,
        now: f64,
        power: (f64, f64),
    ) -> (f64, f64) {
        let (Some(th), Some(deadline)) = (
            self.policy.carbon_cap_g_per_kwh,
            self.jobs[j as usize].deadline_s,
        ) else {
            return power;
        };
        let pp = self.pool_power[pool as usize];
        let Some(cs) = &self.sites[pp.site].carbon else {
            return power;
        };
        let job = &self.jobs[j as usize];
        let run = (1.0 - job.done).max(0.0) * job.base * factor / power.1.max(1e-6);
        let cal = self.policy.calendar_start_s;
        if self.carbon_mean(cs, cal + now, cal + now, cal + now + run) <= th {
            return power;
        }
        let begin = now + if resumes { self.resume_s(pool) } else { 0.0 };
        // the slowest speed that still ends 1 h + 10% early, and within
        // the time limit
        let room = deadline - begin - 3600.0 - 0.1 * run;
        let work = run * power.1; // seconds at full speed
        let mut need = work / room.max(1e-9);
        if let Some(l) = job.time_limit_s {
            need = need.max(work / (l - job.restore_s).max(1e-9));
        }
        if room <= 0.0 || need >= power.1 {
            return power;
        }
        let cap = (pp.job_w * need.powf(1.0 / crate::energy::CAP_EXPONENT))
            .max(pp.min_cap_w)
            .min(power.0);
        (cap, crate::energy::capped_speed(cap, pp.job_w))
    }

    /// Orders the candidate pools of list `cl` in `site_order` by their
    /// share of free accelerators, largest first (powered-down ones count
    /// as free): the fair baseline's site choice.
    pub(super) fn least_loaded_order(&mut self, cl: usize) {
        self.site_order.clear();
        for (ci, &(p, _)) in self.cand_lists[cl].pools.iter().enumerate() {
            let ps = &self.cluster.pools[p as usize];
            let off = self.off_accelerators(p) as f64;
            let total = ps.cap_total as f64 + off;
            let share = if total > 0.0 {
                (ps.free_total as f64 + off) / total
            } else {
                0.0
            };
            self.site_order.push((-share, ci));
        }
        self.site_order
            .sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    }

    /// The mean intensity of `cs` over `[t0, t1]` (calendar seconds) as
    /// the policy's forecast at `now` gives it.
    fn carbon_mean(&self, cs: &crate::carbon::CarbonSeries, now: f64, t0: f64, t1: f64) -> f64 {
        match self.policy.carbon_forecast {
            crate::policy::CarbonForecast::Daily => cs.forecast_mean(now, t0, t1),
            crate::policy::CarbonForecast::Oracle => cs.mean(t0, t1),
        }
    }

    /// Energy figures of every site, accrued to `now`.
    pub fn site_energy(&mut self, now: f64) -> Vec<SiteEnergy> {
        for s in 0..self.sites.len() {
            self.accrue_site(s, now);
        }
        self.sites
            .iter()
            .map(|sp| SiteEnergy {
                power_w: sp.it_w * sp.pue,
                peak_w: sp.peak_w,
                budget_w: sp.budget_w,
                energy_j: sp.energy_j,
                carbon_g: sp.carbon_g,
            })
            .collect()
    }

    /// Starts the energy clocks of every site at `t` (the twin: its first
    /// submission), before anything runs.
    pub fn set_energy_origin(&mut self, t: f64) {
        for sp in &mut self.sites {
            sp.t = t;
        }
    }

    /// Facility power of all sites now (IT × PUE), W.
    pub fn facility_power_w(&self) -> f64 {
        self.sites.iter().map(|sp| sp.it_w * sp.pue).sum()
    }

    /// Facility power of site `s` now (IT × PUE), W; 0 for no such site.
    pub fn site_power_w(&self, s: usize) -> f64 {
        self.sites.get(s).map_or(0.0, |sp| sp.it_w * sp.pue)
    }

    /// Replaces site `s`'s grid series at `now` (a refreshed grid or
    /// forecast file): what was accrued so far stays as it was.
    pub fn set_site_carbon(
        &mut self,
        s: usize,
        series: std::sync::Arc<crate::carbon::CarbonSeries>,
        now: f64,
    ) {
        if s >= self.sites.len() {
            return;
        }
        self.accrue_site(s, now);
        self.changes += 1;
        self.sites[s].carbon = Some(series.clone());
        self.factory.sites[s].carbon = Some(series);
    }

    /// Site `s`'s intensity at the start of each of the next `hours` hours
    /// from `now` (the current hour first), as the policy's forecast gives
    /// it: what carbon-aware decisions see. None: no series.
    pub fn intensity_forecast(&self, s: usize, now: f64, hours: usize) -> Option<Vec<f64>> {
        let cs = self.sites.get(s)?.carbon.as_ref()?;
        let cal = self.policy.calendar_start_s;
        let t0 = ((cal + now) / 3600.0).floor() * 3600.0;
        Some(
            (0..hours)
                .map(|h| {
                    let t = (t0 + h as f64 * 3600.0).max(cal + now);
                    match self.policy.carbon_forecast {
                        crate::policy::CarbonForecast::Daily => cs.forecast_at(cal + now, t),
                        crate::policy::CarbonForecast::Oracle => cs.at(t),
                    }
                })
                .collect(),
        )
    }

    /// Carbon intensity of site `s` at scheduler time `t` (None: no series).
    pub fn intensity(&self, s: usize, t: f64) -> Option<f64> {
        self.sites[s]
            .carbon
            .as_ref()
            .map(|c| c.at(self.policy.calendar_start_s + t))
    }

    /// Whether a waiting job that fits now on some candidate pool is kept
    /// waiting by the power budgets of all of them.
    pub fn power_blocked(&self, j: JobIdx) -> bool {
        let job = &self.jobs[j as usize];
        let mut fits = false;
        for &(p, _) in &self.cand_lists[job.cands as usize].pools {
            if let Some(n) = self.resume_need(p, job.gpus) {
                fits = true;
                if self.power_plan(p, job.gpus, -self.resume_w(p, n)).is_some() {
                    return false;
                }
            }
        }
        fits
    }
}
