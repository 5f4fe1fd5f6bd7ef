//! The one recording fake of [`Executor`], for tests and for benchmarks of
//! fleets that cannot run here: every launch succeeds and is recorded
//! (job, handle, the clock's time); a run goes on until the test ends it,
//! until the end planned for its job, or until it is cancelled (at once,
//! or, for [`RecordingExecutor::stopping_slowly`], when the test ends it).
//! Nothing runs and nothing touches the disk.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::{ExecError, Executor, ExitRecord, LaunchSpec, Outcome, RunStatus};

/// One launch, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub job: i64,
    pub handle: String,
    /// The clock's time, ms.
    pub at_ms: i64,
    /// The accelerators it was given (`node/index`).
    pub accelerators: Vec<String>,
}

/// One cancel, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancel {
    pub job: i64,
    pub handle: String,
    pub at_ms: i64,
}

struct Run {
    job: i64,
    ended: Option<ExitRecord>,
    cancelled: bool,
}

#[derive(Default)]
struct Record {
    launches: Vec<Launch>,
    cancels: Vec<Cancel>,
    adopted: Vec<i64>,
    runs: HashMap<String, Run>,
    /// Job -> when its runs end by themselves (ms), completed.
    planned: HashMap<i64, i64>,
}

type Clock = Box<dyn Fn() -> i64 + Send + Sync>;

/// Records every call; see the module's documentation.
pub struct RecordingExecutor {
    clock: Clock,
    logs: PathBuf,
    slow_stop: bool,
    record: Mutex<Record>,
}

impl RecordingExecutor {
    /// A fake whose times are read from `clock` (ms since the epoch).
    pub fn new(clock: impl Fn() -> i64 + Send + Sync + 'static) -> RecordingExecutor {
        RecordingExecutor {
            clock: Box::new(clock),
            logs: PathBuf::from("/nonexistent"),
            slow_stop: false,
            record: Mutex::new(Record::default()),
        }
    }

    /// Log paths under `dir` (which the fake never writes).
    pub fn with_logs(mut self, dir: PathBuf) -> RecordingExecutor {
        self.logs = dir;
        self
    }

    /// A cancel is recorded, and the run goes on until the test ends it
    /// (runs that take their time to stop).
    pub fn stopping_slowly(mut self) -> RecordingExecutor {
        self.slow_stop = true;
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every launch so far, in order.
    pub fn launches(&self) -> Vec<Launch> {
        self.lock().launches.clone()
    }

    /// (job, ms) of every launch so far, in order.
    pub fn launched(&self) -> Vec<(i64, i64)> {
        self.lock()
            .launches
            .iter()
            .map(|l| (l.job, l.at_ms))
            .collect()
    }

    /// Every cancel so far, in order.
    pub fn cancels(&self) -> Vec<Cancel> {
        self.lock().cancels.clone()
    }

    /// The jobs whose runs were adopted after a restart, in order.
    pub fn adopted(&self) -> Vec<i64> {
        self.lock().adopted.clone()
    }

    /// Runs of `job` end by themselves (completed) from `at_ms` on.
    pub fn end_at(&self, job: i64, at_ms: i64) {
        self.lock().planned.insert(job, at_ms);
    }

    /// The earliest planned end after `after_ms` of a run still going (not
    /// cancelled, not ended): when a test's clock should move to next.
    pub fn next_end_after(&self, after_ms: i64) -> Option<i64> {
        let r = self.lock();
        r.runs
            .values()
            .filter(|x| !x.cancelled && x.ended.is_none())
            .filter_map(|x| r.planned.get(&x.job).copied())
            .filter(|&e| e > after_ms)
            .min()
    }

    /// Ends the run `handle` now with `outcome` (a cancelled one as by
    /// SIGTERM).
    pub fn end_run(&self, handle: &str, outcome: Outcome) {
        let now = (self.clock)();
        if let Some(r) = self.lock().runs.get_mut(handle) {
            r.ended = Some(record(outcome, now));
        }
    }

    /// Ends every run of `job` now with `outcome`.
    pub fn end_job(&self, job: i64, outcome: Outcome) {
        let now = (self.clock)();
        for r in self.lock().runs.values_mut().filter(|r| r.job == job) {
            if r.ended.is_none() {
                r.ended = Some(record(outcome, now));
            }
        }
    }
}

fn record(outcome: Outcome, now: i64) -> ExitRecord {
    let (exit_code, signal, message) = match outcome {
        Outcome::Completed => (Some(0), None, "exit code 0"),
        Outcome::Failed => (Some(1), None, "exit code 1"),
        Outcome::TimedOut => (None, Some(15), "time limit reached"),
        Outcome::Cancelled => (None, Some(15), "stopped"),
    };
    ExitRecord {
        outcome,
        exit_code,
        signal,
        message: message.into(),
        ended_at_ms: now,
        elapsed_s: None,
    }
}

impl Executor for RecordingExecutor {
    fn name(&self) -> &'static str {
        "recording"
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<String, ExecError> {
        let now = (self.clock)();
        let mut r = self.lock();
        let handle = format!("run-{}-{}", spec.job_id, r.launches.len() + 1);
        r.launches.push(Launch {
            job: spec.job_id,
            handle: handle.clone(),
            at_ms: now,
            accelerators: spec
                .accelerators
                .iter()
                .map(|a| format!("{}/{}", a.node, a.index))
                .collect(),
        });
        r.runs.insert(
            handle.clone(),
            Run {
                job: spec.job_id,
                ended: None,
                cancelled: false,
            },
        );
        Ok(handle)
    }

    fn poll(&self, _job: i64, handle: &str) -> Result<RunStatus, ExecError> {
        let now = (self.clock)();
        let r = self.lock();
        let Some(run) = r.runs.get(handle) else {
            return Ok(RunStatus::Lost {
                message: format!("no run {handle}"),
            });
        };
        if let Some(e) = &run.ended {
            return Ok(RunStatus::Exited(e.clone()));
        }
        if run.cancelled && !self.slow_stop {
            return Ok(RunStatus::Exited(record(Outcome::Cancelled, now)));
        }
        match r.planned.get(&run.job) {
            Some(&end) if now >= end => Ok(RunStatus::Exited(record(Outcome::Completed, now))),
            _ => Ok(RunStatus::Running),
        }
    }

    fn cancel(&self, job: i64, handle: &str) -> Result<(), ExecError> {
        let now = (self.clock)();
        let mut r = self.lock();
        if let Some(run) = r.runs.get_mut(handle) {
            run.cancelled = true;
        }
        r.cancels.push(Cancel {
            job,
            handle: handle.to_string(),
            at_ms: now,
        });
        Ok(())
    }

    fn adopt(
        &self,
        job: i64,
        handle: Option<&str>,
    ) -> Result<(Option<String>, RunStatus), ExecError> {
        let mut r = self.lock();
        r.adopted.push(job);
        let Some(h) = handle else {
            // no launch recorded before the stop: nothing to adopt
            return Ok((
                None,
                RunStatus::Lost {
                    message: "no launch recorded".into(),
                },
            ));
        };
        r.runs.entry(h.to_string()).or_insert(Run {
            job,
            ended: None,
            cancelled: false,
        });
        drop(r);
        Ok((Some(h.to_string()), self.poll(job, h)?))
    }

    fn log_paths(&self, job: i64) -> (PathBuf, PathBuf) {
        (
            self.logs.join(format!("{job}.out")),
            self.logs.join(format!("{job}.err")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn spec(job: i64) -> LaunchSpec {
        LaunchSpec::new(job, vec!["true".into()])
    }

    #[test]
    fn records_and_ends_runs() {
        let t = Arc::new(AtomicI64::new(1_000));
        let c = t.clone();
        let x = RecordingExecutor::new(move || c.load(Ordering::SeqCst));
        let h = x.launch(&spec(7)).unwrap();
        assert_eq!(x.launched(), vec![(7, 1_000)]);
        assert!(matches!(x.poll(7, &h).unwrap(), RunStatus::Running));
        x.end_at(7, 2_000);
        t.store(2_000, Ordering::SeqCst);
        match x.poll(7, &h).unwrap() {
            RunStatus::Exited(e) => assert_eq!(e.outcome, Outcome::Completed),
            s => panic!("{s:?}"),
        }
        assert!(matches!(x.poll(7, "nope").unwrap(), RunStatus::Lost { .. }));
    }

    #[test]
    fn cancels_at_once_or_slowly() {
        let x = RecordingExecutor::new(|| 5);
        let h = x.launch(&spec(1)).unwrap();
        x.cancel(1, &h).unwrap();
        assert!(matches!(x.poll(1, &h).unwrap(), RunStatus::Exited(_)));
        let slow = RecordingExecutor::new(|| 5).stopping_slowly();
        let h = slow.launch(&spec(2)).unwrap();
        slow.cancel(2, &h).unwrap();
        assert!(matches!(slow.poll(2, &h).unwrap(), RunStatus::Running));
        slow.end_run(&h, Outcome::Cancelled);
        match slow.poll(2, &h).unwrap() {
            RunStatus::Exited(e) => assert_eq!(e.signal, Some(15)),
            s => panic!("{s:?}"),
        }
        assert_eq!(slow.cancels().len(), 1);
    }
}
