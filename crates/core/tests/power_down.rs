//! Idle power-down and resume, the warm reserve, the fair (least-loaded)
//! baseline and carbon-aware site choice, through the scheduler API.

use gigafab_core::carbon::CarbonSeries;
use gigafab_core::{
    AllocationSpec, Category, Factory, JobSpec, JobState, Policy, PolicyKind, SchedCore,
    SiteBalance, Throughputs,
};

/// Sites of one pool each, `nodes` nodes × 4 H100 at 1000 W per node
/// besides the accelerators; `extra` is appended to each pool.
fn factory(sites: &[&str], nodes: u32, extra: &str) -> Factory {
    budget_factory(sites, nodes, extra, None)
}

fn budget_factory(sites: &[&str], nodes: u32, extra: &str, budget_w: Option<f64>) -> Factory {
    let mut s = String::from("name = \"pd\"\n");
    let budget = budget_w.map_or(String::new(), |b| {
        format!("power_budget_mw = {}\n", b / 1e6)
    });
    for (i, name) in sites.iter().enumerate() {
        s.push_str(&format!(
            "[[sites]]\nname = \"{name}\"\npue = 1.0\n{budget}[[sites.pools]]\nname = \"p{i}\"\naccelerator = \"h100\"\nnodes = {nodes}\naccelerators_per_node = 4\nnode_watts = 1000\n{extra}"
        ));
    }
    Factory::parse(&s, "pd.toml").unwrap()
}

fn policy(after: Option<f64>) -> Policy {
    let mut p = Policy::new(PolicyKind::Backfill);
    p.backfill_interval_s = 0.0;
    p.power_down_after_s = after;
    p.resume_s = 120.0;
    p.warm_nodes = 1;
    p
}

fn core(f: Factory, p: Policy) -> SchedCore {
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c
}

/// One node's idle power: 1000 W + 4 × 70 W.
const NODE_IDLE_W: f64 = 1280.0;

fn nodes_off(c: &SchedCore) -> usize {
    (0..c.cluster.nodes())
        .filter(|&n| c.is_powered_down(n))
        .count()
}

#[test]
fn idle_nodes_power_down_and_a_job_waits_for_their_resume() {
    let mut c = core(factory(&["s"], 4, ""), policy(Some(600.0)));
    let full = c.site_energy(0.0)[0].power_w;
    assert_eq!(full, 4.0 * NODE_IDLE_W);
    // idle since the first pass: nothing goes down before 600 s
    let d = c.schedule(0.0).clone();
    assert_eq!(d.wakeup, Some(600.0), "woken when the idle nodes are due");
    assert_eq!(nodes_off(&c), 0);
    c.schedule(599.0);
    assert_eq!(nodes_off(&c), 0);
    c.schedule(600.0);
    assert_eq!(nodes_off(&c), 3, "all but the warm reserve");
    assert_eq!(c.site_energy(600.0)[0].power_w, NODE_IDLE_W);
    // 600 s at 4 nodes, then 400 s at one
    let e = c.site_energy(1000.0)[0].energy_j;
    assert!(
        (e - (600.0 * 4.0 + 400.0) * NODE_IDLE_W).abs() < 1e-3,
        "{e}"
    );

    // a 2-node job: the warm node and one resumed; its run begins when
    // the resumed node is up
    let j = c.submit(&JobSpec::simple("big", 1000.0, 8, 3600.0), 0, 1000.0);
    assert_eq!(c.schedule(1000.0).started, vec![j]);
    let job = &c.jobs[j as usize];
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.run_start, 1120.0, "resume latency");
    assert_eq!(job.first_start, Some(1120.0));
    assert_eq!(job.est_end, 1120.0 + 3600.0);
    for &(n, _) in &job.placement {
        assert!(!c.is_powered_down(n));
    }
    // the warm reserve is kept: one more node resumed, booting
    assert_eq!(nodes_off(&c), 1);
    let stats = c.power_down_stats();
    assert_eq!((stats.power_downs, stats.resumes), (3, 2));
    assert_eq!(stats.boot_waits, 1);
    assert_eq!(stats.boot_wait_s, 120.0);
    c.check_invariants().unwrap();
    // it ran from 1120 s: its energy counts from then
    c.finish(j, 1120.0 + 3600.0);
    assert!(c.jobs[j as usize].energy_j > 0.0);
    assert_eq!(c.jobs[j as usize].attained_gpu_s, 8.0 * 3600.0);
}

#[test]
fn a_job_on_warm_nodes_starts_at_once() {
    let mut c = core(factory(&["s"], 4, "warm_nodes = 2\n"), policy(Some(600.0)));
    c.schedule(0.0);
    c.schedule(600.0);
    assert_eq!(nodes_off(&c), 2, "the pool's own reserve: 2");
    let j = c.submit(&JobSpec::simple("small", 700.0, 4, 100.0), 0, 700.0);
    c.schedule(700.0);
    assert_eq!(c.jobs[j as usize].run_start, 700.0, "no resume needed");
    assert_eq!(c.power_down_stats().boot_waits, 0);
    // one warm node left is below the reserve: one resumed
    assert_eq!(nodes_off(&c), 1);
}

#[test]
fn without_power_down_nothing_changes() {
    let mut c = core(factory(&["s"], 4, ""), policy(None));
    c.schedule(0.0);
    assert_eq!(c.schedule(1e6).wakeup, None);
    assert_eq!(nodes_off(&c), 0);
    assert_eq!(c.site_energy(1e6)[0].power_w, 4.0 * NODE_IDLE_W);
}

#[test]
fn a_resume_never_exceeds_the_power_budget() {
    // budget: two nodes, each running a 4-GPU job
    let budget = 2.0 * NODE_IDLE_W + 2.0 * 4.0 * (542.5 - 70.0) + 1.0;
    let mut c = core(
        budget_factory(&["s"], 4, "", Some(budget)),
        policy(Some(600.0)),
    );
    c.schedule(0.0);
    c.schedule(600.0);
    assert_eq!(nodes_off(&c), 3);
    for i in 0..3 {
        c.submit(
            &JobSpec::simple(format!("j{i}"), 700.0, 4, 3600.0),
            0,
            700.0,
        );
    }
    let started = c.schedule(700.0).started.clone();
    // the warm node runs one; a resume for the next is within the budget;
    // a third resume is not, nor one for the warm reserve
    assert_eq!(started.len(), 2, "{started:?}");
    assert!(c.site_energy(700.0)[0].power_w <= budget + 1e-6);
    assert!(c.site_energy(700.0)[0].peak_w <= budget + 1e-6);
    assert_eq!(nodes_off(&c), 2);
    c.check_invariants().unwrap();
}

#[test]
fn runs_never_begin_on_a_powered_down_or_booting_node() {
    // a churn of jobs of every size; after each pass every run is on
    // powered-up nodes and begins once they have booted
    let mut c = core(factory(&["a", "b"], 6, ""), policy(Some(300.0)));
    let mut rng = gigafab_core::Rng::new(7);
    let mut t = 0.0;
    let mut running: Vec<u32> = Vec::new();
    let mut delayed = 0;
    for i in 0..400 {
        t += rng.exp(1.0 / 200.0);
        // ends due by now
        running.retain(|&j| {
            let job = &c.jobs[j as usize];
            if job.state == JobState::Running && job.est_end <= t {
                c.finish(j, job.est_end.max(job.run_start));
                false
            } else {
                job.state == JobState::Running
            }
        });
        let gpus = [1, 2, 4, 8, 12][rng.below(5) as usize];
        let dur = 60.0 + rng.exp(1.0 / 900.0);
        c.submit(&JobSpec::simple(format!("j{i}"), t, gpus, dur), 0, t);
        let started = c.schedule(t).started.clone();
        for &j in &started {
            let job = &c.jobs[j as usize];
            for &(n, _) in &job.placement {
                assert!(!c.is_powered_down(n), "job {j} on powered-down node {n}");
                assert!(
                    c.booting_until(n, job.run_start).is_none(),
                    "job {j} begins at {} on node {n} still booting",
                    job.run_start
                );
            }
            if job.run_start > t {
                delayed += 1;
                assert!(job.run_start <= t + 120.0 + 1e-9);
            }
            running.push(j);
        }
        c.check_invariants().unwrap();
    }
    let s = c.power_down_stats();
    assert!(s.power_downs > 0 && s.resumes > 0, "{s:?}");
    assert_eq!(s.boot_waits, delayed);
    // every pool keeps its warm node whenever it has nodes off
    for p in 0..2u32 {
        let ps = &c.cluster.pools[p as usize];
        let off = (ps.first_node..ps.first_node + ps.nodes)
            .filter(|&n| c.is_powered_down(n))
            .count();
        assert!(off == 0 || ps.whole_nodes >= 1, "pool {p}");
    }
}

#[test]
fn the_least_loaded_baseline_favours_no_site_by_its_place() {
    for (balance, expect) in [
        (SiteBalance::Declared, vec![0, 0, 1, 1]),
        (SiteBalance::LeastLoaded, vec![0, 1, 0, 1]),
    ] {
        let mut p = policy(None);
        p.site_balance = balance;
        let mut c = core(factory(&["first", "second"], 2, ""), p);
        let mut pools = Vec::new();
        for i in 0..4 {
            let j = c.submit(&JobSpec::simple(format!("j{i}"), 0.0, 4, 100.0), 0, 0.0);
            c.schedule(0.0);
            pools.push(c.jobs[j as usize].run_pool);
        }
        assert_eq!(pools, expect, "{balance:?}");
    }
    // a job's own order of sites (its home first) is kept
    let mut p = policy(None);
    p.site_balance = SiteBalance::LeastLoaded;
    let mut c = core(factory(&["first", "second"], 2, ""), p);
    let a = c.submit(&JobSpec::simple("a", 0.0, 4, 100.0), 0, 0.0);
    c.schedule(0.0);
    assert_eq!(c.jobs[a as usize].run_pool, 0);
    let mut s = JobSpec::simple("home-first", 0.0, 4, 100.0);
    s.types.sites = vec!["first".into(), "second".into()];
    let b = c.submit(&s, 0, 0.0);
    c.schedule(0.0);
    assert_eq!(
        c.jobs[b as usize].run_pool, 0,
        "its home, though more loaded"
    );
}

#[test]
fn carbon_aware_sends_inflexible_jobs_to_the_cleaner_site_without_delay() {
    let mut f = factory(&["dirty", "clean"], 1, "");
    f.set_carbon("dirty", CarbonSeries::constant("d", 400.0));
    f.set_carbon("clean", CarbonSeries::constant("c", 30.0));
    let mut p = policy(None);
    p.carbon_aware = true;
    let mut c = core(f, p);
    let a = c.submit(&JobSpec::simple("a", 0.0, 4, 3600.0), 0, 0.0);
    let b = c.submit(&JobSpec::simple("b", 0.0, 4, 3600.0), 0, 0.0);
    let d = c.schedule(0.0).clone();
    assert_eq!(d.started, vec![a, b], "neither waits");
    assert_eq!(c.jobs[a as usize].run_pool, 1, "the clean site first");
    assert_eq!(c.jobs[b as usize].run_pool, 0, "then the other, at once");
    assert_eq!(c.deferrals, 0);
}

#[test]
fn carbon_deferral_never_makes_a_tight_deadline_miss() {
    // dirty now, clean from hour 6: jobs whose deadline leaves no room to
    // wait for it start at once and all meet their deadline
    let mut vals = vec![500.0; 6];
    vals.extend([20.0; 18]);
    let mut f = factory(&["s"], 8, "");
    f.set_carbon("s", CarbonSeries::new("g", 0.0, 3600.0, vals));
    let mut p = policy(Some(600.0));
    p.carbon_aware = true;
    p.carbon_forecast = gigafab_core::CarbonForecast::Oracle;
    let mut c = core(f, p);
    let mut ids = Vec::new();
    for i in 0..8 {
        let run = 1800.0 * (i + 1) as f64;
        let mut s = JobSpec::simple(format!("t{i}"), 0.0, 4, run);
        // slack of 30 min to 2 h: never enough to reach the clean hours
        s.deadline_s = Some(run + 1800.0 * (1 + i % 4) as f64);
        ids.push((c.submit(&s, 0, 0.0), s.deadline_s.unwrap()));
    }
    let mut t = 0.0;
    while ids
        .iter()
        .any(|&(j, _)| c.jobs[j as usize].state == JobState::Waiting)
    {
        let wake = c.schedule(t).wakeup;
        t = wake.unwrap_or(t + 60.0).min(t + 60.0);
        assert!(t < 86_400.0);
    }
    for &(j, deadline) in &ids {
        let job = &c.jobs[j as usize];
        let end = job.run_start + job.base;
        assert!(end <= deadline, "{}: ends {end} after {deadline}", job.id);
    }
}

#[test]
fn in_dirty_hours_a_flexible_job_runs_slower_not_later() {
    let mut f = factory(&["dirty"], 2, "");
    f.set_carbon("dirty", CarbonSeries::constant("d", 400.0));
    let mut p = policy(None);
    p.carbon_aware = true;
    p.carbon_cap_g_per_kwh = Some(200.0);
    let mut c = core(f, p);
    // 10 h of work, 20 h to its deadline: capped, and still early
    let mut s = JobSpec::simple("flex", 0.0, 4, 36_000.0);
    s.deadline_s = Some(72_000.0);
    let j = c.submit(&s, 0, 0.0);
    // no slack at all: not capped
    let mut t = JobSpec::simple("tight", 0.0, 4, 36_000.0);
    t.deadline_s = Some(36_000.0 + 3600.0 + 3600.0);
    let k = c.submit(&t, 0, 0.0);
    let started = c.schedule(0.0).started.clone();
    assert_eq!(started, vec![j, k], "neither waits");
    let job = &c.jobs[j as usize];
    assert!(job.speed < 1.0 && job.power_w < 542.5, "{} W", job.power_w);
    assert!(job.est_end <= 72_000.0 - 3600.0, "ends {}", job.est_end);
    assert_eq!(c.jobs[k as usize].speed, 1.0);
    // energy per unit of work falls
    let per_work = |w: f64, speed: f64| (w + 250.0) / speed;
    assert!(per_work(job.power_w, job.speed) < per_work(542.5, 1.0));
}

#[test]
fn drained_powered_down_nodes_are_not_capacity_and_runs_are_charged_from_their_begin() {
    let mut c = core(factory(&["s"], 4, ""), policy(Some(600.0)));
    c.schedule(0.0);
    c.schedule(600.0);
    let off: Vec<u32> = (0..4).filter(|&n| c.is_powered_down(n)).collect();
    assert_eq!(off.len(), 3);
    // two powered-down nodes drained: the pool can bring back one
    c.drain(off[0]);
    c.drain(off[1]);
    let big = c.submit(&JobSpec::simple("big", 700.0, 12, 3600.0), 0, 700.0);
    assert!(c.schedule(700.0).started.is_empty());
    assert!(!c.fits_now(big), "not room it could resume");
    assert_eq!(
        c.power_down_stats().resumes,
        0,
        "no resume tried and undone"
    );
    // the drain ends: it starts, waiting for two resumes
    c.resume(off[0]);
    // the estimate says when its run begins, after the resume
    let est = c.forecast_starts(800.0, &[big], 100);
    assert_eq!(est, vec![Some(920.0)]);
    assert_eq!(c.schedule(800.0).started, vec![big]);
    assert_eq!(c.jobs[big as usize].run_start, 920.0);
    c.check_invariants().unwrap();
    // its allocation is charged from 920 s, not 800 s
    c.finish(big, 920.0 + 3600.0);
    let used = c.allocs[0].used_total;
    assert!((used - 12.0 * 3600.0).abs() < 1e-6, "{used}");
}
