//! Energy live: idle power-down carried out on the machines, grid series
//! refreshed while the server runs, and the sites' power and carbon.
//!
//! The core decides (the same `idle.rs` as the twin); after each pass the
//! nodes whose power state changed are handed to their site's
//! [`NodePower`] off the loop. A grid or forecast file is a
//! [`GridSource`]: read again when it changes, so an operator's feed (a
//! grid operator's day-ahead forecast, Electricity Maps) only has to keep
//! a file up to date, or implement the trait.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use gigafab_core::carbon::CarbonSeries;
use gigafab_exec::power::NodePower;

use super::Controller;
use crate::time::Ms;

/// Where a site's grid carbon series comes from.
pub trait GridSource: Send {
    /// What it reads, for logs and the API.
    fn describe(&self) -> String;
    /// The series if it changed since the last call (None: unchanged).
    fn poll(&mut self) -> Result<Option<CarbonSeries>, String>;
}

/// A CSV file (as a factory's `grid`), read again when its modification
/// time changes.
pub struct FileGridSource {
    path: PathBuf,
    mtime: Option<SystemTime>,
}

impl FileGridSource {
    /// A source for `path`, read at its first poll (a reload of the
    /// controller takes the file as it is then, not as the factory was).
    pub fn new(path: PathBuf) -> FileGridSource {
        FileGridSource { path, mtime: None }
    }
}

impl GridSource for FileGridSource {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn poll(&mut self) -> Result<Option<CarbonSeries>, String> {
        let m = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        if Some(m) == self.mtime {
            return Ok(None);
        }
        let series = CarbonSeries::load_with(&self.path, &mut |p| std::fs::read_to_string(p))
            .map_err(|e| e.to_string())?;
        self.mtime = Some(m);
        Ok(Some(series))
    }
}

/// Live energy state of the controller.
pub(super) struct PowerState {
    /// Per node: powered down as last handed to the machines.
    off: Vec<bool>,
    /// The core's power-downs + resumes when last compared.
    seen: u64,
    /// Per site: its grid source.
    grids: Vec<Option<Box<dyn GridSource>>>,
    next_grid: Ms,
}

impl PowerState {
    pub(super) fn new(factory: &gigafab_core::Factory) -> PowerState {
        PowerState {
            off: vec![false; factory.nodes() as usize],
            seen: 0,
            grids: factory
                .sites
                .iter()
                .map(|s| {
                    s.grid_path
                        .clone()
                        .map(|p| Box::new(FileGridSource::new(p)) as Box<dyn GridSource>)
                })
                .collect(),
            next_grid: Ms(0),
        }
    }
}

impl Controller {
    /// Hands the nodes whose power state the last pass changed to their
    /// site's [`NodePower`], one call per site and direction.
    pub(super) fn apply_power(&mut self, now: Ms) {
        let st = self.core.power_down_stats();
        let version = st.power_downs + st.resumes;
        if version == self.power.seen {
            return;
        }
        self.power.seen = version;
        let sites = self.cfg.factory.sites.len();
        let mut changes: Vec<(Vec<String>, Vec<String>)> = vec![(Vec::new(), Vec::new()); sites];
        for n in 0..self.node_names.len() as u32 {
            let off = self.core.is_powered_down(n);
            if off == self.power.off[n as usize] {
                continue;
            }
            self.power.off[n as usize] = off;
            let site = self.cfg.factory.pools[self.core.cluster.pool_of(n) as usize].site;
            let name = self.node_names[n as usize].clone();
            if off {
                changes[site].0.push(name);
            } else {
                changes[site].1.push(name);
            }
        }
        for (site, (down, up)) in changes.into_iter().enumerate() {
            let Some(p) = self.cfg.node_power.get(site).cloned().flatten() else {
                continue;
            };
            let name = self.cfg.factory.sites[site].name.clone();
            if !down.is_empty() {
                self.shared
                    .metrics
                    .node_power_downs
                    .inc_by(down.len() as u64);
                tracing::info!("site {name}: powering down {} (idle)", down.join(", "));
                self.driver.power(p.clone(), name.clone(), down, false);
            }
            if !up.is_empty() {
                self.shared.metrics.node_resumes.inc_by(up.len() as u64);
                tracing::info!("site {name}: powering up {}", up.join(", "));
                self.driver.power(p, name, up, true);
            }
        }
        let _ = now;
    }

    /// At start: every node is taken as up, so the nodes an earlier run
    /// powered down are powered up (once, per site).
    pub(super) fn power_up_all(&mut self, now: Ms) {
        if self.cfg.policy.power_down_after_s.is_none() || self.cfg.node_power.is_empty() {
            return;
        }
        // they boot: a job placed on one now begins once it is up
        self.core.assume_booting(now.core_s());
        for (site, s) in self.cfg.factory.sites.iter().enumerate() {
            let Some(p) = self.cfg.node_power.get(site).cloned().flatten() else {
                continue;
            };
            let nodes: Vec<String> = self
                .cfg
                .factory
                .pools
                .iter()
                .filter(|p| p.site == site)
                .flat_map(|p| p.first_node..p.first_node + p.nodes)
                .map(|n| self.node_names[n as usize].clone())
                .collect();
            self.driver.power(p, s.name.clone(), nodes, true);
        }
    }

    /// Reads the grid sources that changed (at most once per
    /// `grid_refresh`) into the core.
    pub(super) fn refresh_grids(&mut self, now: Ms) {
        if now < self.power.next_grid {
            return;
        }
        self.power.next_grid = now.plus(self.cfg.grid_refresh);
        for s in 0..self.power.grids.len() {
            let Some(src) = self.power.grids[s].as_mut() else {
                continue;
            };
            match src.poll() {
                Ok(None) => {}
                Ok(Some(series)) => {
                    tracing::info!(
                        "site {}: grid series read again from {} ({} values)",
                        self.cfg.factory.sites[s].name,
                        src.describe(),
                        series.len()
                    );
                    let series = Arc::new(series);
                    self.core.set_site_carbon(s, series.clone(), now.core_s());
                    // the jobs' carbon at their end reads the same series
                    self.cfg.factory.sites[s].carbon = Some(series);
                    self.dirty = true;
                }
                Err(e) => tracing::warn!(
                    "site {}: grid series not refreshed, the last one stays: {e}",
                    self.cfg.factory.sites[s].name
                ),
            }
        }
    }

    /// The sites now: power, energy, carbon, grid intensity and its
    /// forecast for the next 24 hours (what carbon-aware decisions see),
    /// powered-down nodes.
    pub(super) fn sites_json(
        &mut self,
        now: Ms,
        who: &crate::auth::Principal,
    ) -> gigafab_api::Sites {
        let operator = who.global();
        let t = now.core_s();
        let energy = self.core.site_energy(t);
        let sites: Vec<gigafab_api::SiteStatus> = self
            .cfg
            .factory
            .sites
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let e = energy[i];
                let nodes = self
                    .cfg
                    .factory
                    .pools
                    .iter()
                    .filter(|p| p.site == i)
                    .flat_map(|p| p.first_node..p.first_node + p.nodes);
                let (mut total, mut off, mut booting) = (0u32, 0u32, 0u32);
                for n in nodes {
                    total += 1;
                    off += u32::from(self.core.is_powered_down(n));
                    booting += u32::from(self.core.booting_until(n, t).is_some());
                }
                gigafab_api::SiteStatus {
                    name: s.name.clone(),
                    pue: s.pue,
                    power_w: e.power_w,
                    peak_w: e.peak_w,
                    power_budget_w: e.budget_w,
                    energy_kwh: e.energy_j / 3.6e6,
                    carbon_kg: s.carbon.as_ref().map(|_| e.carbon_g / 1e3),
                    intensity_g_per_kwh: self.core.intensity(i, t),
                    forecast_g_per_kwh: self.core.intensity_forecast(i, t, 24),
                    forecast: self.cfg.policy.carbon_forecast.name().to_string(),
                    // where the server reads files: operators only
                    grid_source: if operator {
                        self.power.grids[i].as_ref().map(|g| g.describe())
                    } else {
                        None
                    },
                    nodes: total,
                    nodes_powered_down: off,
                    nodes_booting: booting,
                }
            })
            .collect();
        gigafab_api::Sites { sites }
    }
}

/// Each site's way to power nodes, for `gigafab serve` with idle
/// power-down: Slurm's power saving where Slurm runs the site, else the
/// factory's programs; an error names a site with neither.
pub fn node_power_of(
    factory: &gigafab_core::Factory,
    slurm_sites: &[bool],
) -> Result<Vec<Option<Arc<dyn NodePower>>>, String> {
    // node names (POOL-INDEX) reach scontrol and the programs as
    // arguments: no option-like or list-like names
    for p in &factory.pools {
        if p.name.starts_with('-')
            || !p
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(format!(
                "pool `{}`: idle power-down names nodes after their pool; a pool name must be letters, digits, `_`, `.` or `-`, not starting with `-`",
                p.name
            ));
        }
    }
    factory
        .sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            match (&s.suspend_program, &s.resume_program) {
                (Some(d), Some(u)) => Ok(Some(Arc::new(
                    gigafab_exec::power::CommandPower::new(d.clone(), u.clone())?,
                ) as Arc<dyn NodePower>)),
                _ if slurm_sites.get(i).copied().unwrap_or(false) => Ok(Some(Arc::new(
                    gigafab_exec::power::SlurmPower::new(Box::new(
                        gigafab_exec::slurm::RealSlurm::default(),
                    )),
                ) as Arc<dyn NodePower>)),
                _ => Err(format!(
                    "site `{}`: idle power-down needs a way to power its nodes: run the site on Slurm (executor = \"slurm\", which uses its power saving) or set suspend_program and resume_program in the factory",
                    s.name
                )),
            }
        })
        .collect()
}
