//! One executor per site: jobs of a site run on that site's engine (its
//! Slurm, or local processes), the others on the default one. Handles carry
//! the site (`<site>|<handle>`), so polls, cancels and adoptions after a
//! restart reach the engine that runs the job.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::{ExecError, Executor, LaunchSpec, RunStatus};

/// Routes each job to its site's executor.
pub struct RoutedExecutor {
    default: Arc<dyn Executor>,
    sites: BTreeMap<String, Arc<dyn Executor>>,
}

impl RoutedExecutor {
    pub fn new(
        default: Arc<dyn Executor>,
        sites: BTreeMap<String, Arc<dyn Executor>>,
    ) -> RoutedExecutor {
        RoutedExecutor { default, sites }
    }

    /// The executor and inner handle of a stored handle.
    fn route<'a>(&self, handle: &'a str) -> (&Arc<dyn Executor>, &'a str) {
        match handle.split_once('|') {
            Some((site, inner)) => (self.sites.get(site).unwrap_or(&self.default), inner),
            None => (&self.default, handle),
        }
    }
}

impl Executor for RoutedExecutor {
    fn name(&self) -> &'static str {
        "routed"
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecError> {
        match spec
            .site
            .as_deref()
            .and_then(|s| self.sites.get(s).map(|e| (s, e)))
        {
            Some((site, e)) => e.launch(spec).map(|h| format!("{site}|{h}")),
            None => self.default.launch(spec),
        }
    }

    fn poll(&self, job_id: i64, handle: &str) -> Result<RunStatus, ExecError> {
        let (e, h) = self.route(handle);
        e.poll(job_id, h)
    }

    fn poll_all(&self, runs: &[(i64, String)]) -> Vec<Result<RunStatus, ExecError>> {
        // each engine is asked once, for its own runs
        // per engine: the positions of its runs in `runs`, and its runs
        type Group<'a> = (&'a Arc<dyn Executor>, Vec<usize>, Vec<(i64, String)>);
        let mut groups: Vec<Group> = Vec::new();
        for (i, (id, handle)) in runs.iter().enumerate() {
            let (e, h) = self.route(handle);
            let g = match groups.iter().position(|g| Arc::ptr_eq(g.0, e)) {
                Some(g) => g,
                None => {
                    groups.push((e, Vec::new(), Vec::new()));
                    groups.len() - 1
                }
            };
            groups[g].1.push(i);
            groups[g].2.push((*id, h.to_string()));
        }
        let mut out: Vec<Option<Result<RunStatus, ExecError>>> =
            runs.iter().map(|_| None).collect();
        for (e, idx, sub) in groups {
            for (i, r) in idx.into_iter().zip(e.poll_all(&sub)) {
                out[i] = Some(r);
            }
        }
        out.into_iter()
            .map(|r| r.expect("every run is in one group"))
            .collect()
    }

    fn cancel(&self, job_id: i64, handle: &str) -> Result<(), ExecError> {
        let (e, h) = self.route(handle);
        e.cancel(job_id, h)
    }

    fn adopt(
        &self,
        job_id: i64,
        handle: Option<&str>,
    ) -> Result<(Option<String>, RunStatus), ExecError> {
        if let Some(h) = handle {
            let site = h.split_once('|').map(|(s, _)| s.to_string());
            let (e, inner) = self.route(h);
            let (found, st) = e.adopt(job_id, Some(inner))?;
            let found = found.map(|f| match &site {
                Some(s) => format!("{s}|{f}"),
                None => f,
            });
            return Ok((found, st));
        }
        // no handle recorded: ask every engine, the default last
        for (site, e) in &self.sites {
            let (found, st) = e.adopt(job_id, None)?;
            if !matches!(st, RunStatus::Lost { .. }) {
                return Ok((found.map(|f| format!("{site}|{f}")), st));
            }
        }
        self.default.adopt(job_id, None)
    }

    fn reach(&self, job_id: i64, handle: &str, port: u16) -> Result<crate::Reach, ExecError> {
        let (e, h) = self.route(handle);
        e.reach(job_id, h, port)
    }

    fn attach(
        &self,
        job_id: i64,
        handle: &str,
        rows: u16,
        cols: u16,
    ) -> Result<std::os::fd::OwnedFd, ExecError> {
        let (e, h) = self.route(handle);
        e.attach(job_id, h, rows, cols)
    }

    fn files_root(
        &self,
        job_id: i64,
        handle: Option<&str>,
        workdir: Option<&str>,
        as_account: bool,
    ) -> Option<crate::files::FilesRoot> {
        // the engine that ran it (one never launched: the default's)
        let (e, h) = match handle {
            Some(h) => {
                let (e, inner) = self.route(h);
                (e, Some(inner))
            }
            None => (&self.default, None),
        };
        e.files_root(job_id, h, workdir, as_account)
    }

    fn files_room(&self, job_id: i64) -> Option<u64> {
        self.default.files_room(job_id)
    }

    fn extend(&self, job_id: i64, handle: &str, limit_s: u64) -> Result<(), ExecError> {
        let (e, h) = self.route(handle);
        e.extend(job_id, h, limit_s)
    }

    fn check_workdir(&self, account: Option<&str>, dir: &std::path::Path) -> Result<(), String> {
        // the site is chosen later: refused only where no engine can run it
        let mut first_err = None;
        for e in std::iter::once(&self.default).chain(self.sites.values()) {
            match e.check_workdir(account, dir) {
                Ok(()) => return Ok(()),
                Err(x) => {
                    first_err.get_or_insert(x);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn serve_host(&self, spec: &LaunchSpec) -> &'static str {
        spec.site
            .as_deref()
            .and_then(|s| self.sites.get(s))
            .unwrap_or(&self.default)
            .serve_host(spec)
    }

    fn log_paths(&self, job_id: i64) -> (PathBuf, PathBuf) {
        self.default.log_paths(job_id)
    }

    fn output_dir(&self, job_id: i64) -> PathBuf {
        self.default.output_dir(job_id)
    }

    fn drain_node(
        &self,
        site: Option<&str>,
        node: &str,
        reason: &str,
        drain: bool,
    ) -> Result<(), ExecError> {
        site.and_then(|s| self.sites.get(s))
            .unwrap_or(&self.default)
            .drain_node(site, node, reason, drain)
    }

    fn provision(&self, alloc: &str, grant: u64, users: &[String]) -> Result<(), ExecError> {
        // an allocation may run at any site: every engine gets its account
        let mut first_err = None;
        for e in std::iter::once(&self.default).chain(self.sites.values()) {
            if let Err(x) = e.provision(alloc, grant, users) {
                first_err.get_or_insert(x);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what it was asked; answers Running.
    struct Probe(&'static str, Mutex<Vec<String>>);

    impl Executor for Probe {
        fn name(&self) -> &'static str {
            self.0
        }
        fn launch(&self, s: &LaunchSpec) -> Result<String, ExecError> {
            self.1.lock().unwrap().push(format!("launch {}", s.job_id));
            Ok(format!("{}-{}", self.0, s.job_id))
        }
        fn poll(&self, _: i64, h: &str) -> Result<RunStatus, ExecError> {
            self.1.lock().unwrap().push(format!("poll {h}"));
            Ok(RunStatus::Running)
        }
        fn poll_all(&self, runs: &[(i64, String)]) -> Vec<Result<RunStatus, ExecError>> {
            let hs: Vec<&str> = runs.iter().map(|r| r.1.as_str()).collect();
            self.1
                .lock()
                .unwrap()
                .push(format!("poll_all {}", hs.join(",")));
            runs.iter()
                .map(|r| {
                    Ok(RunStatus::Lost {
                        message: r.1.clone(),
                    })
                })
                .collect()
        }
        fn cancel(&self, _: i64, h: &str) -> Result<(), ExecError> {
            self.1.lock().unwrap().push(format!("cancel {h}"));
            Ok(())
        }
        fn adopt(&self, j: i64, h: Option<&str>) -> Result<(Option<String>, RunStatus), ExecError> {
            self.1.lock().unwrap().push(format!("adopt {h:?}"));
            if self.0 == "slurm" && h.is_none() {
                return Ok((Some(format!("slurm-{j}")), RunStatus::Running));
            }
            Ok((h.map(str::to_string), RunStatus::Running))
        }
        fn log_paths(&self, _: i64) -> (PathBuf, PathBuf) {
            ("o".into(), "e".into())
        }
    }

    fn spec(id: i64, site: Option<&str>) -> LaunchSpec {
        LaunchSpec {
            gpus: 1,
            per_node: 1,
            site: site.map(str::to_string),
            ..LaunchSpec::new(id, vec!["true".into()])
        }
    }

    #[test]
    fn jobs_reach_their_site_engine() {
        let local = Arc::new(Probe("local", Mutex::default()));
        let slurm = Arc::new(Probe("slurm", Mutex::default()));
        let mut sites: BTreeMap<String, Arc<dyn Executor>> = BTreeMap::new();
        sites.insert("hpc".into(), slurm.clone());
        let r = RoutedExecutor::new(local.clone(), sites);
        let h1 = r.launch(&spec(1, Some("hpc"))).unwrap();
        let h2 = r.launch(&spec(2, Some("lab"))).unwrap();
        assert_eq!((h1.as_str(), h2.as_str()), ("hpc|slurm-1", "local-2"));
        r.poll(1, &h1).unwrap();
        r.cancel(2, &h2).unwrap();
        assert_eq!(
            r.adopt(1, Some(&h1)).unwrap().0.as_deref(),
            Some("hpc|slurm-1")
        );
        assert_eq!(r.adopt(3, None).unwrap().0.as_deref(), Some("hpc|slurm-3"));
        assert_eq!(
            *slurm.1.lock().unwrap(),
            [
                "launch 1",
                "poll slurm-1",
                "adopt Some(\"slurm-1\")",
                "adopt None"
            ]
        );
        assert_eq!(*local.1.lock().unwrap(), ["launch 2", "cancel local-2"]);
    }

    /// Each engine is asked once for all its runs, and the answers come
    /// back in the order of the runs given.
    #[test]
    fn runs_are_polled_together_per_engine() {
        let local = Arc::new(Probe("local", Mutex::default()));
        let slurm = Arc::new(Probe("slurm", Mutex::default()));
        let mut sites: BTreeMap<String, Arc<dyn Executor>> = BTreeMap::new();
        sites.insert("hpc".into(), slurm.clone());
        let r = RoutedExecutor::new(local.clone(), sites);
        let runs: Vec<(i64, String)> = ["hpc|s1", "l2", "hpc|s3", "l4"]
            .iter()
            .enumerate()
            .map(|(i, h)| (i as i64, h.to_string()))
            .collect();
        let got: Vec<String> = r
            .poll_all(&runs)
            .into_iter()
            .map(|st| match st.unwrap() {
                RunStatus::Lost { message } => message,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(got, ["s1", "l2", "s3", "l4"]);
        assert_eq!(*slurm.1.lock().unwrap(), ["poll_all s1,s3"]);
        assert_eq!(*local.1.lock().unwrap(), ["poll_all l2,l4"]);
    }
}
