//! Factory specification (a TOML file): sites, pools of identical nodes, and
//! network topology.
//!
//! ```toml
//! name = "mixed-small"
//!
//! [[accelerators]]          # optional: add or override catalog entries
//! id = "x1"
//! vendor = "other"
//! memory_gb = 64
//! idle_watts = 50
//! peak_watts = 400
//! billing_weight = 0.5
//!
//! [[sites]]
//! name = "paris"
//! pue = 1.2                 # default 1.2
//! power_budget_mw = 4.2     # facility power budget (optional)
//! grid = "fr.csv"           # carbon-intensity series, relative to this file
//!                           # (or carbon_g_per_kwh = 56; optional)
//! suspend_program = ["/usr/local/sbin/node-power", "off"]  # serve's idle
//! resume_program = ["/usr/local/sbin/node-power", "on"]    # power-down off Slurm
//! preflight_program = ["dcgmi", "diag", "-r", "1"]  # before large gangs (serve)
//!
//! [[sites.pools]]
//! name = "h100"
//! accelerator = "h100"
//! nodes = 16
//! accelerators_per_node = 8
//! cpus_per_node = 112
//! memory_gb_per_node = 2048
//! scale_up_domain = 8       # accelerators per NVLink/xGMI island
//! nodes_per_leaf = 8        # nodes per leaf switch
//! node_watts = 5600         # node power besides accelerators (default: half their peak)
//! resume_s = 300            # a powered-down node takes this to come back
//!                           # (default: the scheduler's resume_s)
//! warm_nodes = 2            # idle nodes kept powered up (default: the scheduler's)
//! # slices = "1g.10gb"      # share each accelerator: a MIG profile or AMD
//! #                         # partition (cpx, qpx, dpx), a fixed layout; or
//! # fractions = 4           # N clients per accelerator,
//! # share = "mps"           # by MPS or "time-slicing" (the default)
//!
//! [scheduler]               # optional: see crate::profile
//! policy = "fairshare"
//! ```

use crate::catalog::{AcceleratorType, Catalog, TypeIdx};
use serde::Deserialize;
use std::path::Path;
use toml::Spanned;

/// Errors reading a factory file.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}:{line}: {location}: {message}")]
    Invalid {
        path: String,
        /// Line of the table the error is in (0: the whole file).
        line: usize,
        location: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FactoryFile {
    name: Option<String>,
    #[serde(default)]
    accelerators: Vec<Spanned<AcceleratorType>>,
    #[serde(default)]
    sites: Vec<Spanned<SiteFile>>,
    /// How the factory is scheduled, in the twin and live alike.
    scheduler: Option<Spanned<crate::profile::SchedulerProfile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    name: String,
    /// Power usage effectiveness (facility power / IT power).
    pue: Option<f64>,
    /// Facility power budget, MW (including PUE).
    power_budget_mw: Option<f64>,
    /// Grid carbon-intensity series (CSV), relative to the factory file.
    grid: Option<Spanned<String>>,
    /// Constant grid carbon intensity, gCO2e/kWh (instead of `grid`).
    carbon_g_per_kwh: Option<f64>,
    /// Where `gigafab serve` runs this site's jobs: the name of one of
    /// `gigafab_exec::engines::ENGINES` (checked where executors are built).
    executor: Option<String>,
    /// Slurm partition of this site's jobs.
    slurm_partition: Option<String>,
    /// Idle power-down in `gigafab serve` on sites not run by Slurm: the
    /// program (and its first arguments) that powers nodes down, and the
    /// one that powers them up, each run with the node names as arguments.
    suspend_program: Option<Vec<String>>,
    resume_program: Option<Vec<String>>,
    /// A quick check run on each node of a large gang before it starts in
    /// `gigafab serve` (the node name appended), e.g. a DCGM diagnostic.
    preflight_program: Option<Vec<String>>,
    #[serde(default)]
    pools: Vec<Spanned<PoolFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    name: String,
    accelerator: Spanned<String>,
    nodes: u32,
    accelerators_per_node: u32,
    #[serde(default)]
    cpus_per_node: u32,
    #[serde(default)]
    memory_gb_per_node: f64,
    /// Accelerators per scale-up domain; default: one node.
    scale_up_domain: Option<u32>,
    /// Nodes per leaf switch; default: 32 (or the domain size if larger).
    nodes_per_leaf: Option<u32>,
    /// Power of a node besides its accelerators (CPUs, memory, NICs, fans),
    /// W, drawn whenever the node is on; default: half the accelerators' peak.
    node_watts: Option<f64>,
    /// Seconds a powered-down node takes to come back; default: the
    /// scheduler profile's `resume_s`.
    resume_s: Option<f64>,
    /// Idle nodes kept powered up under idle power-down; default: the
    /// scheduler profile's `warm_nodes`.
    warm_nodes: Option<u32>,
    /// Sharing with a fixed layout: every accelerator split into slices of
    /// this MIG profile (`1g.10gb`) or AMD partition mode (`cpx`).
    slices: Option<String>,
    /// Sharing by time: this many clients per accelerator (2..=64), each
    /// with an equal share of its memory.
    fractions: Option<u32>,
    /// With `fractions`: `time-slicing` (default) or `mps`.
    share: Option<String>,
}

/// The slice type of a shared pool (added to `catalog` once) and the
/// slices per accelerator; `(accel, 1)` for a pool of whole accelerators.
fn share_type(
    catalog: &mut Catalog,
    accel: TypeIdx,
    p: &PoolFile,
) -> Result<(TypeIdx, u32), String> {
    use crate::catalog::{SliceKind, SliceOf};
    let parent = catalog.get(accel).clone();
    let (name, per, milli, memory_gb, kind) = match (&p.slices, p.fractions, &p.share) {
        (None, None, None) => return Ok((accel, 1)),
        (Some(_), Some(_), _) => {
            return Err("a pool is shared by `slices` or by `fractions`, not both".into());
        }
        (Some(_), None, Some(_)) => {
            return Err("`share` goes with `fractions` (slices are MIG or AMD partitions)".into());
        }
        (None, None, Some(_)) => return Err("`share` needs `fractions`".into()),
        (Some(name), None, None) => {
            let prof = crate::share::profiles::find(&parent.id, name).ok_or_else(|| {
                let known: Vec<&str> = crate::share::profiles::of_type(&parent.id)
                    .iter()
                    .map(|p| p.name)
                    .collect();
                if known.is_empty() {
                    format!(
                        "`{}` cannot be split into slices (MIG: a100, a100-40, h100, h200, gh200, b200; partitions: mi300x, mi325x, mi355x); share it with `fractions`",
                        parent.id
                    )
                } else {
                    format!("`{name}` is not a slice of {} (known: {})", parent.id, known.join(", "))
                }
            })?;
            let kind = if prof.of == 7 {
                SliceKind::Mig
            } else {
                SliceKind::Partition
            };
            (
                prof.name.to_string(),
                prof.max_per_gpu as u32,
                prof.milli(),
                prof.memory_gb,
                kind,
            )
        }
        (None, Some(k), share) => {
            if !(2..=64).contains(&k) {
                return Err(format!("fractions must be in 2..=64, got {k}"));
            }
            let kind = match share.as_deref().unwrap_or("time-slicing") {
                "time-slicing" => SliceKind::TimeSliced,
                "mps" if parent.vendor == crate::catalog::Vendor::Nvidia => SliceKind::Mps,
                "mps" => return Err(format!("MPS is NVIDIA's; `{}` is not", parent.id)),
                other => {
                    return Err(format!("unknown share `{other}` (time-slicing or mps)"));
                }
            };
            let prefix = if kind == SliceKind::Mps { "mps" } else { "ts" };
            (
                format!("{prefix}-{k}"),
                k,
                (crate::share::MILLI as u32).div_ceil(k) as u16,
                parent.memory_gb / k as f64,
                kind,
            )
        }
    };
    if p.accelerators_per_node * per > MAX_PER_NODE {
        return Err(format!(
            "{} accelerators × {per} slices exceed {MAX_PER_NODE} per node",
            p.accelerators_per_node
        ));
    }
    // each slice is charged and draws its part of the accelerator
    let share = 1.0 / per as f64;
    let id = format!("{}-{name}", parent.id);
    if let Some(i) = catalog.index(&id) {
        return Ok((i, per));
    }
    let t = AcceleratorType {
        id,
        vendor: parent.vendor,
        memory_gb,
        idle_watts: parent.idle_watts * share,
        peak_watts: parent.peak_watts * share,
        billing_weight: parent.billing_weight * share,
        slice: Some(SliceOf {
            parent: parent.id.clone(),
            name,
            milli,
            per_accel: per,
            kind,
        }),
    };
    Ok((catalog.upsert(t)?, per))
}

/// Default power usage effectiveness of a site.
pub const DEFAULT_PUE: f64 = 1.2;

/// A site of the factory.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub name: String,
    /// Facility power / IT power.
    pub pue: f64,
    /// Facility power budget, W (never exceeded by the scheduler).
    pub power_budget_w: Option<f64>,
    /// Grid carbon intensity; none: carbon is not accounted.
    pub carbon: Option<std::sync::Arc<crate::carbon::CarbonSeries>>,
    /// Executor of the site's jobs in `gigafab serve` (a name of
    /// `gigafab_exec::engines::ENGINES`, checked where executors are built); none:
    /// the server's default.
    pub executor: Option<String>,
    /// Slurm partition of the site's jobs.
    pub slurm_partition: Option<String>,
    /// The grid file the carbon series was read from (`gigafab serve`
    /// reads it again when it changes); None for a constant or builtin.
    pub grid_path: Option<std::path::PathBuf>,
    /// Programs that power the site's nodes down and up (idle power-down
    /// in `gigafab serve` off Slurm).
    pub suspend_program: Option<Vec<String>>,
    pub resume_program: Option<Vec<String>>,
    /// A check run on each node of a large gang before it starts (the node
    /// name appended); a node that fails it is drained.
    pub preflight_program: Option<Vec<String>>,
}

/// Index of a pool in a [`Factory`].
pub type PoolIdx = u32;

/// A pool of identical nodes. Nodes `first_node .. first_node + nodes` in the
/// factory-wide node numbering; consecutive `domain_nodes` nodes form a
/// scale-up domain and consecutive `leaf_nodes` nodes hang off one leaf
/// switch (a leaf holds whole domains).
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub site: usize,
    pub accel: TypeIdx,
    pub nodes: u32,
    pub per_node: u32,
    pub cpus_per_node: u32,
    pub memory_gb_per_node: f64,
    pub domain_nodes: u32,
    pub leaf_nodes: u32,
    pub first_node: u32,
    /// Power of a node besides its accelerators, W.
    pub node_watts: f64,
    /// Seconds a powered-down node takes to come back (None: the policy's).
    pub resume_s: Option<f64>,
    /// Idle nodes kept powered up (None: the policy's).
    pub warm_nodes: Option<u32>,
    /// Slices per physical accelerator when the pool is shared (its type
    /// is then a slice type, `accel`'s `slice` says of what); 1 otherwise.
    pub slices_per_accel: u32,
}

impl Pool {
    pub fn accelerators(&self) -> u64 {
        self.nodes as u64 * self.per_node as u64
    }
}

/// A validated factory.
#[derive(Debug, Clone, PartialEq)]
pub struct Factory {
    pub name: String,
    pub catalog: Catalog,
    pub sites: Vec<Site>,
    pub pools: Vec<Pool>,
    /// The file's `[scheduler]` section (throughputs resolved against the
    /// file's directory); empty when it has none.
    pub scheduler: crate::profile::SchedulerProfile,
}

/// Most nodes a factory may hold (node indexes are `u32`; this bound keeps
/// absurd files from exhausting memory).
pub const MAX_NODES: u64 = 10_000_000;
/// Most accelerators per node.
pub const MAX_PER_NODE: u32 = 1024;

impl Factory {
    /// Parses and validates factory TOML; `path` names the source in
    /// errors. Grid series it names must be embedded (`builtin:NAME`): the
    /// core reads no file ([`Factory::parse_with`] takes a reader).
    pub fn parse(text: &str, path: &str) -> Result<Factory, FactoryError> {
        Factory::parse_with(text, path, &mut crate::builtin::read_only_builtin)
    }

    /// [`Factory::parse`], reading the files the factory names (grid
    /// series, relative to `path`) with `read`.
    pub fn parse_with(
        text: &str,
        path: &str,
        read: &mut dyn FnMut(&Path) -> std::io::Result<String>,
    ) -> Result<Factory, FactoryError> {
        let file: FactoryFile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            FactoryError::Parse {
                path: path.to_string(),
                line,
                column,
                message: e.message().to_string(),
            }
        })?;
        let invalid = |line: usize, location: String, message: String| FactoryError::Invalid {
            path: path.to_string(),
            line,
            location,
            message,
        };
        let mut catalog = Catalog::builtin();
        for (i, a) in file.accelerators.iter().enumerate() {
            let line = line_col(text, a.span().start).0;
            let a = a.get_ref();
            let loc = format!("accelerators[{i}] ({})", a.id);
            if a.id.trim().is_empty() {
                return Err(invalid(line, loc, "id must not be empty".into()));
            }
            for (name, v) in [
                ("memory_gb", a.memory_gb),
                ("idle_watts", a.idle_watts),
                ("peak_watts", a.peak_watts),
                ("billing_weight", a.billing_weight),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(invalid(
                        line,
                        loc,
                        format!("{name} must be a finite number >= 0"),
                    ));
                }
            }
            if a.billing_weight <= 0.0 {
                return Err(invalid(line, loc, "billing_weight must be > 0".into()));
            }
            if a.peak_watts < a.idle_watts {
                return Err(invalid(
                    line,
                    loc,
                    "peak_watts must be >= idle_watts".into(),
                ));
            }
            let mut a = a.clone();
            a.id = a.id.trim().to_ascii_lowercase();
            catalog.upsert(a).map_err(|m| invalid(line, loc, m))?;
        }
        if file.sites.is_empty() {
            return Err(invalid(
                0,
                "sites".into(),
                "a factory needs at least one site".into(),
            ));
        }
        let mut sites = Vec::new();
        let mut pools = Vec::new();
        let mut next_node: u64 = 0;
        for (si, s) in file.sites.iter().enumerate() {
            let line = line_col(text, s.span().start).0;
            let s = s.get_ref();
            let loc = format!("sites[{si}] ({})", s.name);
            let pue = s.pue.unwrap_or(DEFAULT_PUE);
            if !(pue.is_finite() && (1.0..=5.0).contains(&pue)) {
                return Err(invalid(line, loc, "pue must be within 1..=5".into()));
            }
            if let Some(b) = s.power_budget_mw
                && !(b.is_finite() && b > 0.0 && b <= 1e5)
            {
                return Err(invalid(
                    line,
                    loc,
                    "power_budget_mw must be > 0 and at most 100000".into(),
                ));
            }
            if s.preflight_program
                .as_ref()
                .is_some_and(|v| v.is_empty() || v[0].is_empty())
            {
                return Err(invalid(
                    line,
                    loc,
                    "preflight_program: a program and its arguments".into(),
                ));
            }
            if s.suspend_program.is_some() != s.resume_program.is_some()
                || [&s.suspend_program, &s.resume_program]
                    .iter()
                    .any(|p| p.as_ref().is_some_and(|v| v.is_empty() || v[0].is_empty()))
            {
                return Err(invalid(
                    line,
                    loc,
                    "suspend_program and resume_program go together, each a program and its arguments".into(),
                ));
            }
            let mut grid_path = None;
            let carbon = match (&s.grid, s.carbon_g_per_kwh) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        line,
                        loc,
                        "give either grid or carbon_g_per_kwh, not both".into(),
                    ));
                }
                (Some(g), None) => {
                    // `builtin:NAME` or a path relative to this file
                    let file = if g.get_ref().starts_with(crate::builtin::PREFIX) {
                        std::path::PathBuf::from(g.get_ref())
                    } else {
                        let base = Path::new(path).parent().unwrap_or(Path::new("."));
                        base.join(g.get_ref())
                    };
                    if !g.get_ref().starts_with(crate::builtin::PREFIX) {
                        grid_path = Some(file.clone());
                    }
                    let series =
                        crate::carbon::CarbonSeries::load_with(&file, read).map_err(|e| {
                            invalid(
                                line_col(text, g.span().start).0,
                                loc.clone(),
                                format!("grid: {e}"),
                            )
                        })?;
                    Some(std::sync::Arc::new(series))
                }
                (None, Some(c)) => {
                    if !(c.is_finite() && (0.0..10_000.0).contains(&c)) {
                        return Err(invalid(
                            line,
                            loc,
                            "carbon_g_per_kwh must be within 0..10000".into(),
                        ));
                    }
                    Some(std::sync::Arc::new(crate::carbon::CarbonSeries::constant(
                        &s.name, c,
                    )))
                }
                (None, None) => None,
            };
            sites.push(Site {
                executor: s.executor.clone(),
                slurm_partition: s.slurm_partition.clone(),
                name: s.name.clone(),
                pue,
                power_budget_w: s.power_budget_mw.map(|b| b * 1e6),
                carbon,
                grid_path,
                suspend_program: s.suspend_program.clone(),
                resume_program: s.resume_program.clone(),
                preflight_program: s.preflight_program.clone(),
            });
            if s.pools.is_empty() {
                return Err(invalid(
                    line,
                    format!("sites[{si}] ({})", s.name),
                    "a site needs at least one pool".into(),
                ));
            }
            for (pi, p) in s.pools.iter().enumerate() {
                let line = line_col(text, p.span().start).0;
                let p = p.get_ref();
                let loc = format!("sites[{si}].pools[{pi}] ({})", p.name);
                if pools.iter().any(|q: &Pool| q.name == p.name) {
                    return Err(invalid(
                        line,
                        loc,
                        format!("duplicate pool name `{}`", p.name),
                    ));
                }
                let accel = catalog.index(p.accelerator.get_ref()).ok_or_else(|| {
                    invalid(
                        line_col(text, p.accelerator.span().start).0,
                        loc.clone(),
                        format!(
                            "unknown accelerator `{}` (known: {}; add it under [[accelerators]])",
                            p.accelerator.get_ref(),
                            catalog
                                .types()
                                .iter()
                                .map(|t| t.id.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                })?;
                if p.nodes == 0 {
                    return Err(invalid(line, loc, "nodes must be > 0".into()));
                }
                if p.accelerators_per_node == 0 || p.accelerators_per_node > MAX_PER_NODE {
                    return Err(invalid(
                        line,
                        loc,
                        format!("accelerators_per_node must be in 1..={MAX_PER_NODE}"),
                    ));
                }
                let per = p.accelerators_per_node;
                let dom = p.scale_up_domain.unwrap_or(per);
                if dom == 0 || (dom % per != 0 && per % dom != 0) {
                    return Err(invalid(
                        line,
                        loc,
                        format!(
                            "scale_up_domain ({dom}) must be a multiple or a divisor of accelerators_per_node ({per})"
                        ),
                    ));
                }
                let domain_nodes = (dom / per).max(1);
                let leaf_nodes = p.nodes_per_leaf.unwrap_or(32.max(domain_nodes));
                if leaf_nodes == 0 || leaf_nodes % domain_nodes != 0 {
                    return Err(invalid(
                        line,
                        loc,
                        format!(
                            "nodes_per_leaf ({leaf_nodes}) must be a positive multiple of the nodes per scale-up domain ({domain_nodes})"
                        ),
                    ));
                }
                if !(p.memory_gb_per_node.is_finite() && p.memory_gb_per_node >= 0.0) {
                    return Err(invalid(line, loc, "memory_gb_per_node must be >= 0".into()));
                }
                if next_node + p.nodes as u64 > MAX_NODES {
                    return Err(invalid(
                        line,
                        loc,
                        format!("the factory exceeds {MAX_NODES} nodes"),
                    ));
                }
                let peak = catalog.get(accel).peak_watts;
                let node_watts = p.node_watts.unwrap_or(0.5 * peak * per as f64);
                if !(node_watts.is_finite() && (0.0..=1e6).contains(&node_watts)) {
                    return Err(invalid(
                        line,
                        loc,
                        "node_watts must be within 0..=1e6".into(),
                    ));
                }
                if let Some(r) = p.resume_s {
                    crate::profile::check_resume_s(r).map_err(|m| invalid(line, loc.clone(), m))?;
                }
                let (accel, slices_per_accel) = share_type(&mut catalog, accel, p)
                    .map_err(|m| invalid(line, loc.clone(), m))?;
                let per = per * slices_per_accel;
                let domain_nodes = if slices_per_accel > 1 {
                    1
                } else {
                    domain_nodes
                };
                let leaf_nodes = if slices_per_accel > 1 {
                    p.nodes_per_leaf.unwrap_or(32)
                } else {
                    leaf_nodes
                };
                pools.push(Pool {
                    slices_per_accel,
                    node_watts,
                    resume_s: p.resume_s,
                    warm_nodes: p.warm_nodes,
                    name: p.name.clone(),
                    site: si,
                    accel,
                    nodes: p.nodes,
                    per_node: per,
                    cpus_per_node: p.cpus_per_node,
                    memory_gb_per_node: p.memory_gb_per_node,
                    domain_nodes,
                    leaf_nodes,
                    first_node: next_node as u32,
                });
                next_node += p.nodes as u64;
            }
        }
        let scheduler = match file.scheduler {
            None => crate::profile::SchedulerProfile::default(),
            Some(sp) => {
                let start = sp.span().start;
                let mut sp = sp.into_inner();
                sp.policy().map_err(|m| {
                    // the line of the key at fault, within the section
                    let key = m.split(':').next().filter(|k| !k.contains(' '));
                    let key = key.unwrap_or("policy");
                    let at = text[start..]
                        .lines()
                        .scan(start, |off, l| {
                            let here = *off;
                            *off += l.len() + 1;
                            Some((here, l))
                        })
                        .find(|(_, l)| l.trim_start().starts_with(key))
                        .map_or(start, |(o, _)| o);
                    invalid(line_col(text, at).0, "scheduler".into(), m)
                })?;
                if let Some(t) = &sp.throughputs
                    && !t.starts_with(crate::builtin::PREFIX)
                {
                    let base = Path::new(path).parent().unwrap_or(Path::new("."));
                    sp.throughputs = Some(base.join(t).display().to_string());
                }
                sp
            }
        };
        Ok(Factory {
            scheduler,
            name: file.name.unwrap_or_else(|| {
                Path::new(path)
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "factory".into())
            }),
            catalog,
            sites,
            pools,
        })
    }

    /// Total accelerators.
    pub fn accelerators(&self) -> u64 {
        self.pools.iter().map(Pool::accelerators).sum()
    }

    /// Physical accelerators: [`Factory::accelerators`] counts each slice
    /// of a shared pool as one.
    pub fn physical_accelerators(&self) -> u64 {
        self.pools
            .iter()
            .map(|p| p.accelerators() / p.slices_per_accel.max(1) as u64)
            .sum()
    }

    /// The same factory with nothing shared: each shared pool holds its
    /// accelerators whole again (its nodes, CPUs, memory and power as they
    /// are). What sharing is compared against (`gigafab sim
    /// --against-whole`).
    pub fn without_sharing(&self) -> Factory {
        let mut f = self.clone();
        for p in f.pools.iter_mut() {
            let parent = f
                .catalog
                .get(p.accel)
                .slice
                .as_ref()
                .map(|s| s.parent.clone());
            if let Some(i) = parent.and_then(|id| f.catalog.index(&id)) {
                p.accel = i;
                p.per_node /= p.slices_per_accel.max(1);
                p.slices_per_accel = 1;
            }
        }
        f
    }

    /// The same factory with each shared pool's nodes multiplied by
    /// `scale` (rounded), the nodes it gains or gives back taken from or
    /// given to the largest pool of whole accelerators of the same type and
    /// site whose nodes are like its own (accelerators, CPUs, memory,
    /// power): the same machine, shared more or less. A pool the scale
    /// leaves as it is needs no such pool. `scale` 0 is
    /// [`Factory::without_sharing`].
    pub fn with_shared_scaled(&self, scale: f64) -> Result<Factory, String> {
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(format!("a scale must be a number >= 0, got {scale}"));
        }
        if scale == 0.0 {
            return Ok(self.without_sharing());
        }
        let mut f = self.clone();
        for i in 0..f.pools.len() {
            let Some(parent) = f
                .catalog
                .get(f.pools[i].accel)
                .slice
                .as_ref()
                .map(|s| s.parent.clone())
            else {
                continue;
            };
            let p = &f.pools[i];
            let physical = p.per_node / p.slices_per_accel.max(1);
            let whole = f
                .pools
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    f.catalog.get(w.accel).id == parent
                        && w.site == p.site
                        && w.per_node == physical
                        && w.cpus_per_node == p.cpus_per_node
                        && w.memory_gb_per_node == p.memory_gb_per_node
                        && w.node_watts == p.node_watts
                })
                .max_by_key(|(j, w)| (w.nodes, std::cmp::Reverse(*j)))
                .map(|(j, _)| j)
                .ok_or_else(|| {
                    format!(
                        "shared pool `{}`: no pool of whole {parent} at its site with nodes like its own ({physical} accelerators, the same CPUs, memory and power) to trade nodes with",
                        p.name
                    )
                })?;
            let target = ((p.nodes as f64 * scale).round() as u64).max(1);
            if target == p.nodes as u64 {
                continue;
            }
            let total = p.nodes as u64 + f.pools[whole].nodes as u64;
            if target >= total {
                return Err(format!(
                    "shared pool `{}` × {scale}: {target} nodes, where it and `{}` hold {total} together and `{}` keeps one at least",
                    p.name, f.pools[whole].name, f.pools[whole].name
                ));
            }
            f.pools[whole].nodes = (total - target) as u32;
            f.pools[i].nodes = target as u32;
        }
        let mut next = 0u32;
        for p in f.pools.iter_mut() {
            p.first_node = next;
            next += p.nodes;
        }
        Ok(f)
    }

    /// Whether a pool is of slices (a 4g.40gb or SPX layout too, one slice
    /// per accelerator).
    pub fn shares(&self) -> bool {
        self.pools
            .iter()
            .any(|p| self.catalog.get(p.accel).slice.is_some())
    }

    /// Total nodes.
    pub fn nodes(&self) -> u32 {
        self.pools.iter().map(|p| p.nodes).sum()
    }

    /// Replaces the carbon series of site `name`; false if there is no such site.
    pub fn set_carbon(&mut self, name: &str, series: crate::carbon::CarbonSeries) -> bool {
        match self.sites.iter_mut().find(|s| s.name == name) {
            Some(s) => {
                s.carbon = Some(std::sync::Arc::new(series));
                true
            }
            None => false,
        }
    }

    /// Largest accelerator count of any pool (the biggest gang that can run).
    pub fn largest_pool(&self) -> u64 {
        self.pools.iter().map(Pool::accelerators).max().unwrap_or(0)
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
name = "t"
[[sites]]
name = "a"
[[sites.pools]]
name = "h"
accelerator = "h100"
nodes = 4
accelerators_per_node = 8
nodes_per_leaf = 2
[[sites.pools]]
name = "g"
accelerator = "b200"
nodes = 36
accelerators_per_node = 4
scale_up_domain = 72
nodes_per_leaf = 18
"#;

    #[test]
    fn parses_pools_and_topology() {
        let f = Factory::parse(SMALL, "t.toml").unwrap();
        assert_eq!(f.accelerators(), 32 + 144);
        assert_eq!(f.pools[0].domain_nodes, 1);
        assert_eq!(f.pools[1].domain_nodes, 18);
        assert_eq!(f.pools[1].first_node, 4);
        assert_eq!(f.nodes(), 40);
    }

    #[test]
    fn scheduler_section() {
        let f = Factory::parse(SMALL, "t.toml").unwrap();
        assert_eq!(f.scheduler, crate::profile::SchedulerProfile::default());
        let with = format!(
            "{SMALL}[scheduler]\npolicy = \"backfill\"\nbackfill_interval_s = 0\nthroughputs = \"tp.csv\"\n"
        );
        let f = Factory::parse(&with, "dir/t.toml").unwrap();
        assert_eq!(f.scheduler.policy.as_deref(), Some("backfill"));
        assert_eq!(f.scheduler.throughputs.as_deref(), Some("dir/tp.csv"));
        let p = f.scheduler.policy().unwrap();
        assert_eq!(p.backfill_interval_s, 0.0);
        // a bad value or an unknown key is named with its line
        let bad = format!("{SMALL}\n[scheduler]\npolicy = \"lottery\"\n");
        let e = Factory::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("t.toml:20:") && e.contains("unknown policy `lottery`"),
            "{e}"
        );
        let bad = format!("{SMALL}[scheduler]\npreempt = true\n");
        let e = Factory::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `preempt`"), "{e}");
    }

    #[test]
    fn errors_name_the_place() {
        let e = Factory::parse("name = \n", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("x.toml:1:"), "{e}");
        let bad = SMALL.replace("\"b200\"", "\"zz9\"");
        let e = Factory::parse(&bad, "x.toml").unwrap_err().to_string();
        assert!(
            e.contains("sites[0].pools[1] (g)") && e.contains("unknown accelerator `zz9`"),
            "{e}"
        );
        let bad = SMALL.replace("nodes_per_leaf = 18", "nodes_per_leaf = 10");
        let e = Factory::parse(&bad, "x.toml").unwrap_err().to_string();
        assert!(e.contains("nodes_per_leaf"), "{e}");
        let bad = SMALL.replace("nodes = 4", "nodes = 4\nbogus = 1");
        let e = Factory::parse(&bad, "x.toml").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = Factory::parse("name='x'", "x.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one site"), "{e}");
    }

    #[test]
    fn custom_accelerators() {
        let text = format!(
            "[[accelerators]]\nid = \"X9\"\nvendor = \"other\"\nmemory_gb = 10\nidle_watts = 1\npeak_watts = 2\n{}",
            SMALL
                .replace("\"b200\"", "\"x9\"")
                .replace("name = \"t\"", "")
        );
        let f = Factory::parse(&text, "t.toml").unwrap();
        assert_eq!(f.catalog.get(f.pools[1].accel).id, "x9");
    }
}
