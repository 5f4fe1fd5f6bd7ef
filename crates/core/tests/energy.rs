//! Power budgets, power capping, energy and carbon accounting, and
//! carbon-aware starts, through the scheduler API.

use gigafab_core::carbon::CarbonSeries;
use gigafab_core::{
    AllocationSpec, Category, Factory, JobSpec, JobState, Policy, PolicyKind, SchedCore,
    Throughputs,
};

/// One site per entry: (name, pue, budget MW or none, node_watts); each
/// site has one pool `p<i>` of 2 nodes × 4 H100.
fn factory(sites: &[(&str, f64, Option<f64>, f64)]) -> Factory {
    let mut s = String::from("name = \"e\"\n");
    for (i, (name, pue, budget, node_w)) in sites.iter().enumerate() {
        s.push_str(&format!("[[sites]]\nname = \"{name}\"\npue = {pue}\n"));
        if let Some(b) = budget {
            s.push_str(&format!("power_budget_mw = {b}\n"));
        }
        s.push_str(&format!(
            "[[sites.pools]]\nname = \"p{i}\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 4\nnode_watts = {node_w}\n"
        ));
    }
    Factory::parse(&s, "e.toml").unwrap()
}

fn core(f: Factory, capping: bool, carbon: bool) -> SchedCore {
    let mut p = Policy::new(PolicyKind::Backfill);
    p.backfill_interval_s = 0.0;
    p.power_capping = capping;
    p.carbon_aware = carbon;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c
}

const JOB_W: f64 = 542.5; // H100 at the model's job utilisation
const IDLE_W: f64 = 70.0;

#[test]
fn a_budget_is_never_exceeded() {
    // idle 8 × 70 W; room for exactly five 1-GPU jobs
    let budget_w = 8.0 * IDLE_W + 5.0 * (JOB_W - IDLE_W);
    let mut c = core(
        factory(&[("s", 1.0, Some(budget_w / 1e6), 0.0)]),
        false,
        false,
    );
    for i in 0..8 {
        c.submit(&JobSpec::simple(format!("j{i}"), 0.0, 1, 100.0), 0, 0.0);
    }
    assert_eq!(c.schedule(0.0).started.len(), 5);
    let e = c.site_energy(0.0);
    assert!((e[0].power_w - budget_w).abs() < 1e-6);
    assert!(e[0].peak_w <= budget_w + 1e-6);
    assert!(c.power_waits > 0);
    // one ends: one more starts
    c.end_run(0, 100.0, JobState::Completed);
    assert_eq!(c.schedule(100.0).started.len(), 1);
    assert!(c.site_energy(100.0)[0].peak_w <= budget_w + 1e-6);
}

#[test]
fn capping_fits_more_work_under_the_budget_at_a_known_speed() {
    // three 2-GPU jobs uncapped, then 560 W of headroom: a fourth fits at
    // 70 + 560/2 = 350 W per accelerator, the lowest cap allowed
    let budget_w = 8.0 * IDLE_W + 3.0 * 2.0 * (JOB_W - IDLE_W) + 560.0;
    for capping in [false, true] {
        let mut c = core(
            factory(&[("s", 1.0, Some(budget_w / 1e6), 0.0)]),
            capping,
            false,
        );
        for i in 0..4 {
            c.submit(&JobSpec::simple(format!("j{i}"), 0.0, 2, 1000.0), 0, 0.0);
        }
        let started = c.schedule(0.0).started.clone();
        assert_eq!(started.len(), if capping { 4 } else { 3 });
        if capping {
            let j = &c.jobs[3];
            assert!((j.power_w - 350.0).abs() < 1e-6);
            let speed = (350.0f64 / JOB_W).powf(0.22);
            assert!((j.speed - speed).abs() < 1e-9);
            assert!(
                (j.run_full - 1000.0 / speed).abs() < 1e-6,
                "a capped job runs longer"
            );
            assert_eq!(j.capped_runs, 1);
        }
        assert!(c.site_energy(0.0)[0].peak_w <= budget_w + 1e-6);
    }
}

#[test]
fn energy_and_carbon_are_accounted_per_job_and_per_site() {
    let mut f = factory(&[("s", 1.5, None, 400.0)]);
    assert!(f.set_carbon("s", CarbonSeries::constant("flat", 100.0)));
    let mut c = core(f, false, false);
    c.submit(&JobSpec::simple("j", 0.0, 1, 100.0), 0, 0.0);
    c.schedule(0.0);
    c.finish(0, 100.0);
    let j = &c.jobs[0];
    // its accelerator plus a quarter of its node's 400 W
    let e = (JOB_W + 100.0) * 100.0;
    assert!((j.energy_j - e).abs() < 1e-6, "{}", j.energy_j);
    assert!((j.carbon_g - e * 1.5 * 100.0 / 3.6e6).abs() < 1e-9);
    let site = c.site_energy(200.0)[0];
    let it_idle = 2.0 * 400.0 + 8.0 * IDLE_W;
    let want = (it_idle + (JOB_W - IDLE_W)) * 1.5 * 100.0 + it_idle * 1.5 * 100.0;
    assert!(
        (site.energy_j - want).abs() < 1e-6,
        "{} vs {want}",
        site.energy_j
    );
    assert!((site.carbon_g - want * 100.0 / 3.6e6).abs() < 1e-6);
    assert!((site.peak_w - (it_idle + JOB_W - IDLE_W) * 1.5).abs() < 1e-6);
}

fn hourly(values: &[f64]) -> CarbonSeries {
    CarbonSeries::new("test", 0.0, 3600.0, values.to_vec())
}

#[test]
fn flexible_jobs_wait_for_a_cleaner_hour_and_still_meet_their_deadline() {
    for aware in [false, true] {
        let mut f = factory(&[("s", 1.0, None, 0.0)]);
        f.set_carbon(
            "s",
            hourly(&[300.0, 300.0, 50.0, 300.0, 300.0, 300.0, 300.0, 300.0]),
        );
        let mut c = core(f, false, aware);
        let mut flex = JobSpec::simple("flex", 0.0, 1, 3600.0);
        flex.deadline_s = Some(5.0 * 3600.0);
        c.submit(&flex, 0, 0.0);
        c.submit(&JobSpec::simple("rigid", 0.0, 1, 3600.0), 0, 0.0);
        let d = c.schedule(0.0).clone();
        if aware {
            assert_eq!(d.started, vec![1], "only the inflexible job starts now");
            // it looks again every half hour until the clean hour
            assert_eq!(d.wakeup, Some(1800.0));
            for t in [1800.0, 3600.0, 5400.0] {
                assert!(c.schedule(t).started.is_empty(), "{t}");
            }
            assert_eq!(c.schedule(7200.0).started, vec![0]);
            assert_eq!(c.deferrals, 4);
        } else {
            assert_eq!(d.started, vec![0, 1]);
        }
        // a deadline too close for any deferral: it goes at once
        let mut tight = JobSpec::simple("tight", 8000.0, 1, 3600.0);
        tight.deadline_s = Some(8000.0 + 3600.0 + 600.0);
        let t = c.submit(&tight, 0, 8000.0);
        assert!(c.schedule(8000.0).started.contains(&t));
    }
}

#[test]
fn flexible_jobs_go_to_the_cleaner_site() {
    let mut f = factory(&[("dirty", 1.0, None, 0.0), ("clean", 1.0, None, 0.0)]);
    f.set_carbon("dirty", CarbonSeries::constant("d", 400.0));
    f.set_carbon("clean", CarbonSeries::constant("c", 30.0));
    let mut c = core(f, false, true);
    let mut flex = JobSpec::simple("flex", 0.0, 4, 3600.0);
    flex.deadline_s = Some(86_400.0);
    let a = c.submit(&flex, 0, 0.0);
    let b = c.submit(&JobSpec::simple("rigid", 0.0, 4, 3600.0), 0, 0.0);
    c.schedule(0.0);
    assert_eq!(
        c.jobs[a as usize].run_pool, 1,
        "flexible job on the clean site"
    );
    assert_eq!(
        c.jobs[b as usize].run_pool, 1,
        "an inflexible job goes to the clean site too while it has room"
    );
    let r = c.submit(&JobSpec::simple("rigid2", 0.0, 4, 3600.0), 0, 0.0);
    c.schedule(0.0);
    assert_eq!(c.jobs[r as usize].run_pool, 0, "then at once elsewhere");
}

#[test]
fn energy_aware_placement_prefers_the_lower_energy_to_solution() {
    // MI300X listed first; at equal speed an H100 run takes less energy
    // (542.5 W vs 585 W at the model's utilisation)
    let f = Factory::parse(
        "name = \"x\"\n[[sites]]\nname = \"s\"\n\
         [[sites.pools]]\nname = \"amd\"\naccelerator = \"mi300x\"\nnodes = 1\naccelerators_per_node = 8\n\
         [[sites.pools]]\nname = \"nv\"\naccelerator = \"h100\"\nnodes = 1\naccelerators_per_node = 8\n",
        "x.toml",
    )
    .unwrap();
    for aware in [false, true] {
        let mut p = Policy::new(PolicyKind::Fifo);
        p.energy_aware = aware;
        let mut c = SchedCore::new(f.clone(), p, Throughputs::new());
        c.add_allocation(AllocationSpec::open("a", Category::Academia));
        let j = c.submit(&JobSpec::simple("j", 0.0, 4, 100.0), 0, 0.0);
        c.schedule(0.0);
        assert_eq!(c.jobs[j as usize].run_pool, if aware { 1 } else { 0 });
    }
    // with throughputs, a faster type can win despite drawing more
    let mut t = Throughputs::new();
    t.insert("llm", "mi300x", 4, 2.0);
    t.insert("llm", "h100", 4, 1.0);
    let mut p = Policy::new(PolicyKind::Fifo);
    p.energy_aware = true;
    let mut c = SchedCore::new(f, p, t);
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    let mut spec = JobSpec::simple("j", 0.0, 4, 100.0);
    spec.job_type = Some("llm".into());
    let j = c.submit(&spec, 0, 0.0);
    c.schedule(0.0);
    assert_eq!(
        c.jobs[j as usize].run_pool, 0,
        "twice as fast at 8% more power"
    );
}

/// A carbon-aware decision made with the daily forecast reads only the
/// past: two grids that differ only after `now` give the same decision;
/// the oracle, which reads the future, does not.
#[test]
fn a_forecast_decision_does_not_read_the_future() {
    const DAY: f64 = 86_400.0;
    // days 1 and 2 have a clean hour at 02:00; day 3 has it or not
    let grid = |clean_on_day_3: bool| {
        let mut v = Vec::new();
        for day in 0..3 {
            for h in 0..24 {
                let clean = h == 2 && (day < 2 || clean_on_day_3);
                v.push(if clean { 50.0 } else { 300.0 });
            }
        }
        hourly(&v)
    };
    let decide = |clean_on_day_3: bool, forecast: gigafab_core::CarbonForecast| {
        let mut f = factory(&[("s", 1.0, None, 0.0)]);
        f.set_carbon("s", grid(clean_on_day_3));
        let mut c = core(f, false, true);
        c.policy.carbon_forecast = forecast;
        let now = 2.0 * DAY;
        let mut flex = JobSpec::simple("flex", now, 1, 3600.0);
        flex.deadline_s = Some(now + 12.0 * 3600.0);
        let j = c.submit(&flex, 0, now);
        c.schedule(now).started.contains(&j)
    };
    use gigafab_core::CarbonForecast::{Daily, Oracle};
    // the forecast expects tonight's clean hour from last night: it waits,
    // whatever tonight turns out to be
    assert!(!decide(true, Daily));
    assert!(!decide(false, Daily));
    // the oracle knows: with no clean hour coming it goes now
    assert!(!decide(true, Oracle));
    assert!(decide(false, Oracle));
}

/// Room now at the cleanest site of a busy pool: a flexible job takes it
/// rather than wait for a cleaner hour there (by then others have the room,
/// and it would go to a dirtier site); with room to spare it waits.
#[test]
fn a_flexible_job_keeps_scarce_room_at_the_clean_site() {
    for busy in [2u32, 5] {
        let mut f = factory(&[("s", 1.0, None, 0.0)]);
        f.set_carbon(
            "s",
            hourly(&[300.0, 300.0, 50.0, 300.0, 300.0, 300.0, 300.0, 300.0]),
        );
        let mut c = core(f, false, true);
        c.policy.carbon_forecast = gigafab_core::CarbonForecast::Oracle;
        let r = c.submit(&JobSpec::simple("rigid", 0.0, busy, 36_000.0), 0, 0.0);
        let mut flex = JobSpec::simple("flex", 0.0, 1, 3600.0);
        flex.deadline_s = Some(6.0 * 3600.0);
        let j = c.submit(&flex, 0, 0.0);
        let started = c.schedule(0.0).started.clone();
        assert!(started.contains(&r));
        // 8 accelerators: 6 free of 8 (room to spare) it waits, 3 free it goes
        assert_eq!(started.contains(&j), busy == 5, "{busy} busy");
    }
}
