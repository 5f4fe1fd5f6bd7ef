//! The executor, off the controller's loop: launches, cancels and polls
//! run on tokio's blocking threads (an `sbatch` or a `squeue` takes ~0.1 s,
//! a loop turn must not), and what they found comes back to the loop as
//! [`Done`] events. The loop never waits for an engine; the engine's
//! answers are applied in the turn after they arrive, matched by run handle
//! so that a late answer about a run the controller has moved on from
//! (preempted, cancelled) changes nothing.

use std::collections::HashSet;
use std::sync::Arc;

use gigafab_exec::{ExecError, Executor, LaunchSpec, RunStatus};
use tokio::sync::{Semaphore, mpsc};

/// Launches under way at once per server (several `sbatch` in parallel).
pub const MAX_LAUNCHES: usize = 8;

/// Most nodes named in one power call (an argument list stays short).
pub const POWER_BATCH: usize = 500;

/// Tries at making an allocation's engine account before a warning (the
/// waits between them grow from 1 s to 30 s: about three minutes in all).
const PROVISION_TRIES: u32 = 11;

/// A power order: who carries it out, the nodes, up or down.
type PowerOrder = (Arc<dyn gigafab_exec::power::NodePower>, Vec<String>, bool);

/// What an engine call found.
pub enum Done {
    Launched {
        job: i64,
        /// Which start of the job it launched ([`Driver::launch`]).
        start: u32,
        result: Result<String, ExecError>,
    },
    Polled {
        runs: Vec<(i64, String)>,
        states: Vec<Result<RunStatus, ExecError>>,
    },
    /// A pre-flight check of a start of a job: the nodes that failed it,
    /// with what went wrong.
    Preflight {
        job: i64,
        start: u32,
        failed: Vec<(u32, String)>,
    },
}

/// Sends engine calls to blocking threads and collects their results.
pub struct Driver {
    exec: Arc<dyn Executor>,
    tx: mpsc::UnboundedSender<Done>,
    pub rx: mpsc::UnboundedReceiver<Done>,
    launch_slots: Arc<Semaphore>,
    /// Jobs whose launch was sent and has not come back.
    pub in_flight: HashSet<i64>,
    /// Whether a poll was sent and has not come back.
    pub polling: bool,
    /// Pre-flight checks under way (jobs).
    pub preflights: HashSet<i64>,
    /// Per site: the queue of its power orders.
    power_tx: std::collections::HashMap<String, std::sync::mpsc::Sender<PowerOrder>>,
}

impl Driver {
    pub fn new(exec: Arc<dyn Executor>) -> Driver {
        let (tx, rx) = mpsc::unbounded_channel();
        Driver {
            exec,
            tx,
            rx,
            launch_slots: Arc::new(Semaphore::new(MAX_LAUNCHES)),
            in_flight: HashSet::new(),
            polling: false,
            preflights: HashSet::new(),
            power_tx: std::collections::HashMap::new(),
        }
    }

    /// Whether an answer is still to come.
    pub fn busy(&self) -> bool {
        self.polling || !self.in_flight.is_empty() || !self.preflights.is_empty()
    }

    /// Runs `program NODE` on each of `nodes` (index, name) at once, each
    /// stopped after `timeout`; answers with the nodes that failed.
    pub fn preflight(
        &mut self,
        job: i64,
        start: u32,
        program: Vec<String>,
        nodes: Vec<(u32, String)>,
        timeout: std::time::Duration,
    ) {
        self.preflights.insert(job);
        let tx = self.tx.clone();
        // at most 64 checks at once: a large gang does not take every
        // blocking thread (launches and polls run there too)
        let slots = Arc::new(Semaphore::new(64));
        tokio::spawn(async move {
            let mut checks = Vec::new();
            for (n, name) in nodes {
                let program = program.clone();
                let slots = slots.clone();
                checks.push(tokio::spawn(async move {
                    let _slot = slots.acquire_owned().await;
                    tokio::task::spawn_blocking(move || {
                        match gigafab_exec::power::run_program(
                            &program,
                            std::slice::from_ref(&name),
                            timeout,
                        ) {
                            Ok(()) => None,
                            Err(e) if e.ran => Some((n, e.message)),
                            // the check itself failed to run or to answer
                            Err(e) => {
                                Some((n, format!("{}{}", super::health::CHECK_BROKEN, e.message)))
                            }
                        }
                    })
                    .await
                    .ok()
                    .flatten()
                }));
            }
            let mut failed = Vec::new();
            for c in checks {
                match c.await {
                    Ok(Some(f)) => failed.push(f),
                    Ok(None) => {}
                    Err(e) => {
                        failed.push((u32::MAX, format!("{}{e}", super::health::CHECK_BROKEN)))
                    }
                }
            }
            let _ = tx.send(Done::Preflight { job, start, failed });
        });
    }

    /// Launches the `start`-th run of a job (a preempted job starts again).
    pub fn launch(&mut self, spec: LaunchSpec, start: u32) {
        let job = spec.job_id;
        self.in_flight.insert(job);
        let (exec, tx, slots) = (
            self.exec.clone(),
            self.tx.clone(),
            self.launch_slots.clone(),
        );
        tokio::spawn(async move {
            let _slot = slots.acquire_owned().await;
            let result = tokio::task::spawn_blocking(move || exec.launch(&spec))
                .await
                .unwrap_or_else(|e| {
                    Err(ExecError::Launch {
                        job,
                        message: format!("the executor failed: {e}"),
                    })
                });
            let _ = tx.send(Done::Launched { job, start, result });
        });
    }

    /// Makes or updates the engines' account of allocation `alloc` (its
    /// grant, its organisation's POSIX accounts); a failure is logged, and
    /// a job's launch tries again for its own account.
    pub fn provision(&self, alloc: i64, grant_gpu_minutes: u64, users: Vec<String>) {
        let exec = self.exec.clone();
        tokio::task::spawn_blocking(move || {
            // sacctmgr fails now and then while slurmdbd is busy or
            // restarting: tries with a growing wait (1, 2, 4, 8, 16, then
            // 30 s), about three minutes in all
            let mut wait = std::time::Duration::from_secs(1);
            for attempt in 1..=PROVISION_TRIES {
                match exec.provision(&alloc.to_string(), grant_gpu_minutes, &users) {
                    Ok(()) => {
                        tracing::debug!(
                            "allocation {alloc}: engine account with {grant_gpu_minutes} GPU-minutes, users {users:?}"
                        );
                        return;
                    }
                    Err(e) if attempt == PROVISION_TRIES => {
                        tracing::warn!("allocation {alloc}: the engine's account: {e}")
                    }
                    Err(e) => {
                        tracing::info!(
                            "allocation {alloc}: the engine's account (try {attempt}, again in {wait:?}): {e}"
                        );
                        std::thread::sleep(wait);
                        wait = (wait * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
        });
    }

    /// Powers `nodes` of `site` down or up (idle power-down). The orders of
    /// a site are carried out one after the other, in the order given, by
    /// a thread of its own (a power-down and the resume right after it must
    /// not cross), in calls of at most [`POWER_BATCH`] nodes; a failed call
    /// is tried again twice, then logged.
    pub fn power(
        &mut self,
        p: Arc<dyn gigafab_exec::power::NodePower>,
        site: String,
        nodes: Vec<String>,
        on: bool,
    ) {
        let tx = self.power_tx.entry(site.clone()).or_insert_with(|| {
            let (tx, rx) = std::sync::mpsc::channel::<PowerOrder>();
            let name = site.clone();
            std::thread::spawn(move || {
                for (p, nodes, on) in rx {
                    for chunk in nodes.chunks(POWER_BATCH) {
                        for attempt in 1..=3 {
                            match p.set(chunk, on) {
                                Ok(()) => break,
                                Err(e) if attempt == 3 => tracing::error!(
                                    "site {name}: powering {} {}: {e}",
                                    if on { "up" } else { "down" },
                                    chunk.join(", ")
                                ),
                                Err(_) => std::thread::sleep(std::time::Duration::from_secs(2)),
                            }
                        }
                    }
                }
            });
            tx
        });
        let _ = tx.send((p, nodes, on));
    }

    /// Drains node `node` of `site` in the engine (or ends its drain); a
    /// failure is logged (gigafab's own drain holds regardless).
    pub fn drain_node(&self, site: String, node: String, reason: String, drain: bool) {
        let exec = self.exec.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = exec.drain_node(Some(&site), &node, &reason, drain) {
                tracing::warn!(
                    "node {node}: the engine's {}: {e}",
                    if drain { "drain" } else { "resume" }
                );
            }
        });
    }

    /// Asks a run to stop; its end shows up in a later poll.
    pub fn cancel(&self, job: i64, handle: String) {
        let exec = self.exec.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = exec.cancel(job, &handle) {
                tracing::warn!("job {job}: cancel: {e}");
            }
        });
    }

    /// Tells the engine of run `handle` its new time limit.
    pub fn set_time_limit(&self, job: i64, handle: String, limit_s: u64) {
        let exec = self.exec.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = exec.extend(job, &handle, limit_s) {
                tracing::warn!("job {job}: new time limit {limit_s} s: {e}");
            }
        });
    }

    /// Asks the engines about `runs`, one batched query per engine.
    pub fn poll(&mut self, runs: Vec<(i64, String)>) {
        self.polling = true;
        let (exec, tx) = (self.exec.clone(), self.tx.clone());
        tokio::spawn(async move {
            let asked = runs.clone();
            let states = tokio::task::spawn_blocking(move || exec.poll_all(&runs))
                .await
                .unwrap_or_else(|e| {
                    asked
                        .iter()
                        .map(|&(job, _)| {
                            Err(ExecError::Transient {
                                job,
                                message: format!("the executor failed: {e}"),
                            })
                        })
                        .collect()
                });
            let _ = tx.send(Done::Polled {
                runs: asked,
                states,
            });
        });
    }
}
