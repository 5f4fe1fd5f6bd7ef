//! The queue of waiting jobs, in scheduling order.
//!
//! A pass reads the queue from its head and stops after `max_job_test`
//! jobs, so only a prefix of the order matters to it. Under most policies
//! the whole order is kept as one sorted vector. Under fair share every
//! queued job's key changes at each priority refresh; but within one
//! allocation and priority the order is always by submission (the key
//! differs only by age, which only grows), so the queue is kept as one
//! sorted run per (allocation, priority), and the global order is their
//! merge, materialized only as far as passes read it. A refresh then costs
//! what passes read, not the queue's length (keys of jobs not yet reached
//! are computed when they are, from the refresh's snapshot).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::ids::{AllocIdx, JobIdx};
use crate::policy::FairshareWeights;

/// A queue entry: the job and what a pass reads of it most, side by side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queued {
    /// The queue's order: by key, then submission time, then index.
    pub key: f64,
    pub submit: f64,
    /// The time limit if it has one, else the remaining ideal run time
    /// (to be multiplied by the pool's factor): what a reservation tests.
    pub est: f64,
    /// The run time a reservation on the only candidate pool tests
    /// (`est`, times that pool's factor when it has no time limit).
    pub est1: f64,
    pub j: JobIdx,
    pub gpus: u32,
    pub cl: u32,
    pub alloc: AllocIdx,
    pub prio: i32,
    /// The only candidate pool, if there is one (`u32::MAX` if several).
    pub pool1: u32,
    /// The refresh `key` was computed for (fair share).
    epoch: u32,
    pub limited: bool,
    /// Promoted by the starvation bound (fair share: its own run).
    pub promoted: bool,
}

impl Queued {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        key: f64,
        submit: f64,
        j: JobIdx,
        gpus: u32,
        cl: u32,
        alloc: AllocIdx,
        prio: i32,
        est: f64,
        limited: bool,
        pool1: u32,
        factor1: f64,
    ) -> Queued {
        // the same product the pass computes for a pool's factor
        let est1 = if limited { est } else { est * factor1 };
        Queued {
            key,
            submit,
            est,
            est1,
            j,
            gpus,
            cl,
            alloc,
            prio,
            pool1,
            epoch: 0,
            limited,
            promoted: false,
        }
    }
}

/// The queue's order: key, then submission time, then index.
pub(crate) fn queue_order(a: &Queued, b: &Queued) -> Ordering {
    a.key
        .total_cmp(&b.key)
        .then(a.submit.total_cmp(&b.submit))
        .then(a.j.cmp(&b.j))
}

/// The fair-share key's parameters as of the last refresh.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// Per allocation, its fair-share factor.
    fs: Vec<f64>,
    t: f64,
    weights: FairshareWeights,
}

impl Snapshot {
    fn key(&self, q: &Queued) -> f64 {
        self.weights.key(
            q.prio,
            self.fs[q.alloc as usize],
            q.submit,
            self.t,
            q.promoted,
        )
    }
}

/// A run's first entry not in the prefix, ordered so that a max-heap pops
/// the first in queue order.
#[derive(Debug, Clone, Copy)]
struct Head {
    key: f64,
    submit: f64,
    j: JobIdx,
    run: u32,
}

impl Ord for Head {
    fn cmp(&self, o: &Head) -> Ordering {
        o.key
            .total_cmp(&self.key)
            .then(o.submit.total_cmp(&self.submit))
            .then(o.j.cmp(&self.j))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Head) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Head {
    fn eq(&self, o: &Head) -> bool {
        self.cmp(o).is_eq()
    }
}

impl Eq for Head {}

#[derive(Debug, Clone, Default)]
struct Run {
    /// Sorted in queue order (by key as of now).
    entries: Vec<Queued>,
    /// How many of its first entries are in the materialized prefix.
    taken: usize,
    /// Whether an entry went in before its end since the last refresh
    /// (then the run may not be in submission order at the next one).
    dirty: bool,
}

/// Waiting jobs in scheduling order (see the module documentation).
#[derive(Debug, Clone, Default)]
pub(crate) struct Queue {
    /// The head of the order (under fair share; all of it otherwise), with
    /// keys as of now.
    /// (A deque: a pass removes what it starts near the head, and the
    /// rest need not move for it.)
    prefix: VecDeque<Queued>,
    /// Fair share: the runs, one per (allocation, priority).
    grouped: bool,
    runs: Vec<Run>,
    run_of: BTreeMap<(AllocIdx, i32, bool), usize>,
    snap: Snapshot,
    epoch: u32,
    len: usize,
    /// Scratch: the merge's heads; the previous prefix's jobs.
    heads: Vec<Head>,
    old: Vec<JobIdx>,
}

/// How many entries a prefix grows by when a pass reaches its end.
const CHUNK: usize = 256;

impl Queue {
    pub fn new(grouped: bool) -> Queue {
        Queue {
            grouped,
            ..Queue::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The materialized head of the order.
    pub fn prefix(&self) -> &VecDeque<Queued> {
        &self.prefix
    }

    /// How many prefix entries from `from` on (at most `max`) satisfy `f`,
    /// one after the other.
    #[inline(always)]
    pub fn count_while(&self, from: usize, max: usize, f: impl Fn(&Queued) -> bool) -> usize {
        let (a, b) = self.prefix.as_slices();
        let mut n = 0;
        let (a, b) = if from < a.len() {
            (&a[from..], b)
        } else {
            (&b[from - a.len()..], &b[..0])
        };
        for q in a.iter().chain(b) {
            if n == max || !f(q) {
                break;
            }
            n += 1;
        }
        n
    }

    /// Every entry, in no particular order.
    pub fn iter_all(&self) -> Box<dyn Iterator<Item = &Queued> + '_> {
        if self.grouped {
            Box::new(self.runs.iter().flat_map(|r| r.entries.iter()))
        } else {
            Box::new(self.prefix.iter())
        }
    }

    /// The key of `q` as of now.
    fn key(&self, q: &Queued) -> f64 {
        if !self.grouped || q.epoch == self.epoch {
            q.key
        } else {
            self.snap.key(q)
        }
    }

    fn order(&self, a: &Queued, b: &Queued) -> Ordering {
        self.key(a)
            .total_cmp(&self.key(b))
            .then(a.submit.total_cmp(&b.submit))
            .then(a.j.cmp(&b.j))
    }

    /// Queues `q` (its key computed now). Returns its position in the
    /// order, or the prefix's length if it lies past the prefix.
    pub fn insert(&mut self, mut q: Queued) -> usize {
        self.len += 1;
        q.epoch = self.epoch;
        if !self.grouped {
            let pos = self.prefix.partition_point(|e| queue_order(e, &q).is_lt());
            self.prefix.insert(pos, q);
            return pos;
        }
        let n = self.runs.len();
        let r = *self
            .run_of
            .entry((q.alloc, q.prio, q.promoted))
            .or_insert(n);
        if r == n {
            self.runs.push(Run::default());
        }
        let run = &self.runs[r];
        let p = run.entries.partition_point(|e| self.order(e, &q).is_lt());
        // entries before `taken` are in the prefix and every entry from
        // `taken` on comes after all of the prefix
        let in_prefix = p < run.taken
            || (p == run.taken
                && self
                    .prefix
                    .back()
                    .is_some_and(|l| queue_order(&q, l).is_lt()));
        // a run stays in submission order if nothing goes in before its end
        // and what ends it was not submitted after `q`
        let dirty = p < run.entries.len()
            || run
                .entries
                .last()
                .is_some_and(|l| l.submit.total_cmp(&q.submit).then(l.j.cmp(&q.j)).is_gt());
        let run = &mut self.runs[r];
        run.dirty |= dirty;
        run.entries.insert(p, q);
        if in_prefix {
            run.taken += 1;
            let pos = self.prefix.partition_point(|e| queue_order(e, &q).is_lt());
            self.prefix.insert(pos, q);
            pos
        } else {
            self.prefix.len()
        }
    }

    /// Grows the prefix by up to `want` entries; false if it holds the
    /// whole queue already.
    pub fn extend(&mut self, want: usize) -> bool {
        if !self.grouped || self.prefix.len() == self.len {
            return false;
        }
        let target = self.prefix.len().saturating_add(want).min(self.len);
        // the runs' heads, first first
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        for (r, run) in self.runs.iter().enumerate() {
            if let Some(e) = run.entries.get(run.taken) {
                heads.push(self.head(e, r));
            }
        }
        let mut heap = BinaryHeap::from(heads);
        while self.prefix.len() < target {
            let Some(best) = heap.pop() else { break };
            let r = best.run as usize;
            let run = &self.runs[r];
            let rest = &run.entries[run.taken..];
            // the stretch of this run that precedes the next head
            let n = match heap.peek() {
                None => rest.len(),
                Some(next) => {
                    1 + rest[1..].partition_point(|e| {
                        self.key(e)
                            .total_cmp(&next.key)
                            .then(e.submit.total_cmp(&next.submit))
                            .then(e.j.cmp(&next.j))
                            .is_lt()
                    })
                }
            };
            let n = n.min(target - self.prefix.len());
            let (from, epoch) = (run.taken, self.epoch);
            for i in from..from + n {
                let mut e = self.runs[r].entries[i];
                e.key = self.key(&e);
                e.epoch = epoch;
                self.runs[r].entries[i] = e;
                self.prefix.push_back(e);
            }
            let run = &mut self.runs[r];
            run.taken += n;
            if let Some(e) = self.runs[r].entries.get(from + n) {
                heap.push(self.head(e, r));
            }
        }
        self.heads = heap.into_vec();
        true
    }

    fn head(&self, e: &Queued, run: usize) -> Head {
        Head {
            key: self.key(e),
            submit: e.submit,
            j: e.j,
            run: run as u32,
        }
    }

    /// Grows the prefix by a chunk (a pass reached its end).
    pub fn extend_chunk(&mut self) -> bool {
        self.extend(CHUNK)
    }

    /// The whole order's jobs (under fair share, merged afresh), without
    /// touching the prefix: what the tests compare with.
    #[cfg(test)]
    pub fn jobs_in_order(&self) -> Vec<JobIdx> {
        if !self.grouped {
            return self.prefix.iter().map(|q| q.j).collect();
        }
        let mut all: Vec<Queued> = self
            .runs
            .iter()
            .flat_map(|r| r.entries.iter())
            .map(|q| Queued {
                key: self.key(q),
                ..*q
            })
            .collect();
        all.sort_by(queue_order);
        all.into_iter().map(|q| q.j).collect()
    }

    /// Drops the prefix's first `end` entries whose job `gone` says left.
    pub fn compact(&mut self, end: usize, gone: impl Fn(JobIdx) -> bool) {
        // what stays moves toward `end`; the gaps left at the head go
        let end = end.min(self.prefix.len());
        let mut w = end;
        for i in (0..end).rev() {
            let q = self.prefix[i];
            if gone(q.j) {
                self.len -= 1;
                if self.grouped {
                    self.drop_from_run(&q);
                }
            } else {
                w -= 1;
                self.prefix[w] = q;
            }
        }
        self.prefix.drain(..w);
    }

    /// Removes a prefix entry's copy from its run.
    fn drop_from_run(&mut self, q: &Queued) {
        let r = self.run_of[&(q.alloc, q.prio, q.promoted)];
        let run = &self.runs[r];
        let p = run.entries[..run.taken].partition_point(|e| self.order(e, q).is_lt());
        let run = &mut self.runs[r];
        debug_assert_eq!(run.entries[p].j, q.j);
        run.entries.remove(p);
        run.taken -= 1;
    }

    /// Removes the entry `q` (as it was queued: key, submission, job);
    /// without a scan where the order is one sorted vector.
    pub fn remove_entry(&mut self, q: &Queued) -> bool {
        if self.grouped {
            return self.remove(q.j, q.alloc, q.prio, q.promoted);
        }
        let i = self.prefix.partition_point(|e| queue_order(e, q).is_lt());
        if self.prefix.get(i).is_some_and(|e| e.j == q.j) {
            self.prefix.remove(i);
            self.len -= 1;
            return true;
        }
        self.remove(q.j, q.alloc, q.prio, q.promoted)
    }

    /// Removes job `j` (queued with `alloc`, `prio` and `promoted`)
    /// wherever it is.
    pub fn remove(&mut self, j: JobIdx, alloc: AllocIdx, prio: i32, promoted: bool) -> bool {
        if let Some(i) = self.prefix.iter().position(|q| q.j == j) {
            let q = self.prefix.remove(i).expect("found");
            self.len -= 1;
            if self.grouped {
                self.drop_from_run(&q);
            }
            return true;
        }
        if !self.grouped {
            return false;
        }
        let Some(&r) = self.run_of.get(&(alloc, prio, promoted)) else {
            return false;
        };
        let run = &mut self.runs[r];
        let Some(i) = run.entries.iter().position(|q| q.j == j) else {
            return false;
        };
        run.entries.remove(i);
        self.len -= 1;
        true
    }

    /// Fair share: new keys for every entry as of `t` (factors `fs` per
    /// allocation). Returns whether the head of the order that passes read
    /// changed.
    pub fn refresh(
        &mut self,
        fs: impl Iterator<Item = f64>,
        t: f64,
        weights: FairshareWeights,
    ) -> bool {
        debug_assert!(self.grouped);
        let mut old = std::mem::take(&mut self.old);
        old.clear();
        old.extend(self.prefix.iter().map(|q| q.j));
        self.snap.fs.clear();
        self.snap.fs.extend(fs);
        self.snap.t = t;
        self.snap.weights = weights;
        self.epoch = self.epoch.wrapping_add(1);
        for run in &mut self.runs {
            run.taken = 0;
            // as of one instant, a run's keys follow submission order
            if run.dirty {
                run.entries
                    .sort_by(|a, b| a.submit.total_cmp(&b.submit).then(a.j.cmp(&b.j)));
                run.dirty = false;
            }
        }
        self.prefix.clear();
        self.extend(old.len().max(CHUNK));
        let changed = !self
            .prefix
            .iter()
            .map(|q| q.j)
            .take(old.len())
            .eq(old.iter().copied());
        self.old = old;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The reference: every key recomputed and the whole queue sorted, as
    /// the fair-share queue was before it was split into runs.
    struct Naive {
        entries: Vec<Queued>,
    }

    impl Naive {
        fn order(&self) -> Vec<JobIdx> {
            let mut e = self.entries.clone();
            e.sort_by(queue_order);
            e.iter().map(|q| q.j).collect()
        }
    }

    fn entry(j: JobIdx, alloc: AllocIdx, prio: i32, submit: f64, key: f64) -> Queued {
        Queued::new(key, submit, j, 1, 0, alloc, prio, 1.0, true, 0, 1.0)
    }

    /// Random submissions (in time order and late, as requeues),
    /// refreshes with new factors, passes that take jobs from the head and
    /// withdrawals: the runs' merge is the fully sorted order at every step,
    /// and the prefix is its head.
    #[test]
    fn runs_merge_to_the_sorted_order() {
        let w = FairshareWeights {
            weight_fairshare: 10_000.0,
            weight_age: 1_000.0,
            max_age_s: 500.0,
        };
        for seed in 0..60 {
            let mut rng = Rng::new(seed);
            let na = 1 + rng.below(5) as usize;
            let mut fs: Vec<f64> = (0..na).map(|_| rng.f64()).collect();
            let mut q = Queue::new(true);
            let mut naive = Naive {
                entries: Vec::new(),
            };
            let mut t = 0.0;
            let mut next_j = 0;
            let mut refreshed = false;
            for step in 0..400 {
                t += rng.uniform(0.0, 60.0);
                match rng.below(10) {
                    0..=4 => {
                        let alloc = rng.below(na as u64) as AllocIdx;
                        let prio = rng.below(2) as i32;
                        // a requeue keeps its old submission time
                        let submit = if rng.below(4) == 0 {
                            t - rng.uniform(0.0, 2000.0)
                        } else {
                            t
                        };
                        let key = w.key(prio, fs[alloc as usize], submit, t, false);
                        let e = entry(next_j, alloc, prio, submit, key);
                        next_j += 1;
                        q.insert(e);
                        naive.entries.push(e);
                    }
                    5 => {
                        for f in fs.iter_mut() {
                            *f = rng.f64();
                        }
                        q.refresh(fs.iter().copied(), t, w);
                        for e in &mut naive.entries {
                            e.key = w.key(e.prio, fs[e.alloc as usize], e.submit, t, e.promoted);
                        }
                        refreshed = true;
                    }
                    6 | 7 => {
                        // a pass: reads some of the head, starts some of it
                        let want = rng.below(12) as usize;
                        while q.prefix().len() < want && q.extend_chunk() {}
                        let reach = want.min(q.prefix().len());
                        let gone: Vec<JobIdx> = q
                            .prefix()
                            .range(..reach)
                            .filter(|_| rng.below(3) == 0)
                            .map(|e| e.j)
                            .collect();
                        q.compact(reach, |j| gone.contains(&j));
                        naive.entries.retain(|e| !gone.contains(&e.j));
                    }
                    8 => {
                        if !naive.entries.is_empty() {
                            let i = rng.below(naive.entries.len() as u64) as usize;
                            let e = naive.entries.remove(i);
                            assert!(
                                q.remove(e.j, e.alloc, e.prio, e.promoted),
                                "seed {seed} step {step}"
                            );
                        }
                    }
                    _ => {
                        q.extend(rng.below(40) as usize);
                    }
                }
                let want = naive.order();
                assert_eq!(q.len(), want.len(), "seed {seed} step {step}");
                assert_eq!(q.jobs_in_order(), want, "seed {seed} step {step}");
                let head: Vec<JobIdx> = q.prefix().iter().map(|e| e.j).collect();
                assert_eq!(head[..], want[..head.len()], "seed {seed} step {step}");
            }
            assert!(refreshed || seed > 50, "seed {seed}: no refresh drawn");
        }
    }

    /// A refresh that keeps the head's order says so; one that swaps two
    /// allocations' jobs says it changed.
    #[test]
    fn refresh_reports_a_changed_head() {
        let w = FairshareWeights {
            weight_fairshare: 10_000.0,
            weight_age: 1.0,
            max_age_s: 1e9,
        };
        let mut q = Queue::new(true);
        let fs = [0.9, 0.1];
        for (j, alloc) in [(0, 0), (1, 1), (2, 0), (3, 1)] {
            q.insert(entry(
                j,
                alloc,
                0,
                j as f64,
                w.key(0, fs[alloc as usize], j as f64, 10.0, false),
            ));
        }
        assert_eq!(q.jobs_in_order(), vec![0, 2, 1, 3]);
        q.extend_chunk();
        assert!(!q.refresh([0.8, 0.2].into_iter(), 20.0, w), "same order");
        assert!(
            q.refresh([0.2, 0.8].into_iter(), 30.0, w),
            "allocation 1 first now"
        );
        assert_eq!(q.jobs_in_order(), vec![1, 3, 0, 2]);
        let head: Vec<JobIdx> = q.prefix().iter().map(|e| e.j).collect();
        assert_eq!(head, vec![1, 3, 0, 2]);
    }
}
