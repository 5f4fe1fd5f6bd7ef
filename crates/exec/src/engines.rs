//! The engines an executor can be built for, by name: `--executor`, and a
//! site's `executor` in a factory file. A new engine is one module of this
//! crate and one line of [`ENGINES`]; the server and the command line only
//! name it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::{DeviceFiles, Executor, LocalExecutor, SlurmExecutor};

/// What building an engine may use: the server's settings, each engine
/// taking the ones it knows.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Where job directories go (logs, outputs, the supervisor's record).
    pub jobs_dir: PathBuf,
    /// This server's id (Slurm job names, cgroup names carry it).
    pub instance: String,
    /// The program and arguments that supervise one local run.
    pub supervisor: Vec<String>,
    /// Time between SIGTERM and SIGKILL of a local run.
    pub kill_grace: Duration,
    /// Limits of a local job (0: none): disk, file size, processes.
    pub max_disk_bytes: u64,
    pub max_file_bytes: u64,
    pub max_pids: u64,
    /// Local jobs get a network of their own (loopback only).
    pub private_network: bool,
    /// Device files a local job may see of its own accelerators only (a
    /// root server).
    pub devices: Option<DeviceFiles>,
    /// The cgroup under which each local job gets its own (a root server
    /// with a writable cgroup v2 hierarchy).
    pub cgroup: Option<PathBuf>,
    /// Slurm partition [default: Slurm's default].
    pub partition: Option<String>,
}

/// An engine: its name, what it needs of the server, and how to build it.
pub struct Engine {
    pub name: &'static str,
    /// Its nodes are powered through Slurm's power saving (idle
    /// power-down), not the factory's programs.
    pub slurm_power: bool,
    /// It runs jobs as processes of this machine: a root server gives it
    /// device isolation and a cgroup ([`Settings::devices`],
    /// [`Settings::cgroup`]).
    pub local_processes: bool,
    pub build: fn(&Settings) -> Result<Arc<dyn Executor>, String>,
}

/// Every engine, by name.
pub const ENGINES: &[Engine] = &[
    Engine {
        name: "local",
        slurm_power: false,
        local_processes: true,
        build: local,
    },
    Engine {
        name: "slurm",
        slurm_power: true,
        local_processes: false,
        build: slurm,
    },
];

/// The engine named `name`, or what the names are.
pub fn engine(name: &str) -> Result<&'static Engine, String> {
    ENGINES.iter().find(|e| e.name == name).ok_or_else(|| {
        format!(
            "`{name}` is not an executor (one of: {})",
            ENGINES
                .iter()
                .map(|e| e.name)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Builds engine `name` with `s`.
pub fn build(name: &str, s: &Settings) -> Result<Arc<dyn Executor>, String> {
    (engine(name)?.build)(s)
}

fn local(s: &Settings) -> Result<Arc<dyn Executor>, String> {
    if s.supervisor.is_empty() {
        return Err("executor local: no supervisor program".into());
    }
    let mut e = LocalExecutor::new(s.jobs_dir.clone(), s.supervisor.clone(), s.kill_grace)
        .with_private_network(s.private_network);
    if s.max_disk_bytes > 0 {
        e = e.with_max_disk_bytes(s.max_disk_bytes);
    }
    if s.max_pids > 0 {
        e = e.with_max_pids(s.max_pids);
    }
    if s.max_file_bytes > 0 {
        e = e.with_max_file_bytes(s.max_file_bytes);
    }
    if let Some(d) = &s.devices {
        e = e.with_device_isolation(d.clone());
    }
    if let Some(cg) = &s.cgroup {
        e = e.with_cgroups(cg.clone());
    }
    Ok(Arc::new(e))
}

fn slurm(s: &Settings) -> Result<Arc<dyn Executor>, String> {
    if !crate::slurm::has_slurm(None) {
        return Err(
            "executor slurm: `sinfo --version` failed; are Slurm's commands on PATH?".into(),
        );
    }
    Ok(Arc::new(SlurmExecutor::new(
        Box::new(crate::slurm::RealSlurm::default()),
        s.jobs_dir.clone(),
        s.partition.clone(),
        s.instance.clone(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_errors() {
        assert!(engine("local").is_ok());
        assert!(engine("slurm").unwrap().slurm_power);
        let e = engine("kubernetes").err().unwrap();
        assert_eq!(e, "`kubernetes` is not an executor (one of: local, slurm)");
        let e = build("local", &Settings::default()).err().unwrap();
        assert!(e.contains("no supervisor"), "{e}");
        let dir = std::env::temp_dir().join(format!("gigafab-engines-{}", std::process::id()));
        let x = build(
            "local",
            &Settings {
                jobs_dir: dir.clone(),
                supervisor: vec!["/bin/true".into()],
                ..Settings::default()
            },
        )
        .unwrap();
        assert_eq!(x.name(), "local");
        let _ = std::fs::remove_dir_all(dir);
    }
}
