//! Energy, power and carbon in the twin, on the two-site example factory
//! and the real 2023 grid series of France and Germany.

use gigafab_core::{Factory, Policy, PolicyKind, Throughputs};
use gigafab_twin::workload::synth;
use gigafab_twin::{Report, SimConfig, simulate};
use std::path::Path;

const PHILLY: &str = "../../data/traces/philly_job_distribution.csv";

fn two_sites() -> Factory {
    gigafab_twin::files::load_factory(Path::new("../../examples/factories/two-sites-fr-de.toml"))
        .unwrap()
}

fn workload(
    f: &Factory,
    n: usize,
    load: f64,
    flexible: f64,
    seed: u64,
) -> Vec<gigafab_core::JobSpec> {
    let philly = synth::load_philly(Path::new(PHILLY)).unwrap();
    let mut p = synth::SynthParams::new(synth::Profile::Philly, n, 1.0, seed);
    let mean = synth::mean_gpu_seconds(&p, Some(&philly));
    p.rate_per_hour = load * f.accelerators() as f64 * 3600.0 / mean;
    let mut jobs = synth::generate(&p, None, Some(&philly)).unwrap();
    synth::add_deadlines(&mut jobs, flexible, 24.0 * 3600.0, seed);
    synth::assign_home_sites(&mut jobs, &["paris".into(), "frankfurt".into()], seed);
    jobs
}

fn run(f: &Factory, jobs: Vec<gigafab_core::JobSpec>, carbon: bool, capping: bool) -> Report {
    let mut p = Policy::new(PolicyKind::Fairshare);
    p.carbon_aware = carbon;
    p.power_capping = capping;
    p.calendar_start_s = 1_672_531_200.0; // 2023-01-01T00:00Z
    let cfg = SimConfig {
        failures: None,
        ..SimConfig::default()
    };
    simulate(
        f.clone(),
        p,
        Throughputs::new(),
        jobs,
        &[],
        &cfg,
        &mut |_, _| {},
    )
    .unwrap()
    .report
}

#[test]
fn carbon_awareness_cuts_the_jobs_carbon_without_missing_deadlines() {
    let f = two_sites();
    let jobs = workload(&f, 3000, 0.6, 0.3, 3);
    let agnostic = run(&f, jobs.clone(), false, false);
    let aware = run(&f, jobs, true, false);
    assert_eq!(agnostic.flexible_jobs, aware.flexible_jobs);
    assert!(aware.flexible_jobs > 700, "{}", aware.flexible_jobs);
    assert_eq!(aware.deadline_misses, 0);
    assert_eq!(agnostic.carbon_deferrals, 0);
    assert!(aware.carbon_deferrals > 0);
    let saved = 1.0 - aware.jobs_carbon_t.unwrap() / agnostic.jobs_carbon_t.unwrap();
    assert!(saved > 0.15, "saved {:.1}%", saved * 100.0);
    // the same work, the same energy; only where and when changed
    assert!(
        (aware.jobs_energy_mwh - agnostic.jobs_energy_mwh).abs() < 1e-6 * agnostic.jobs_energy_mwh
    );
    assert!(aware.carbon_t.unwrap() < agnostic.carbon_t.unwrap());
    // inflexible jobs are not slowed down by more than a few percent
    let slower = aware.avg_jct_inflexible_s / agnostic.avg_jct_inflexible_s - 1.0;
    assert!(slower < 0.05, "inflexible JCT +{:.1}%", slower * 100.0);
    // the real series: Paris far cleaner than Frankfurt
    let g = |r: &Report, s: &str| r.sites[s].grid_g_per_kwh.unwrap();
    assert!(g(&aware, "paris") < 80.0 && g(&aware, "frankfurt") > 200.0);
}

#[test]
fn budgets_hold_and_capping_shortens_the_wait() {
    let mut f = two_sites();
    let jobs = workload(&f, 3000, 0.9, 0.0, 4);
    // demand without a budget
    for s in &mut f.sites {
        s.power_budget_w = None;
    }
    let free = run(&f, jobs.clone(), false, false);
    assert!(free.power_budget_mw.is_none());
    // budgets at 80% of each site's peak demand
    for s in &mut f.sites {
        s.power_budget_w = Some(0.8 * free.sites[&s.name].peak_power_mw * 1e6);
    }
    let plain = run(&f, jobs.clone(), false, false);
    let capped = run(&f, jobs, false, true);
    for r in [&plain, &capped] {
        for (name, s) in &r.sites {
            let b = s.power_budget_mw.unwrap();
            assert!(
                s.peak_power_mw <= b * (1.0 + 1e-9),
                "{name}: {} > {b}",
                s.peak_power_mw
            );
        }
        assert_eq!(r.jobs_completed, r.jobs_submitted);
    }
    assert_eq!(plain.capped_runs, 0);
    assert!(capped.capped_runs > 0);
    assert!(
        plain.avg_jct_s > free.avg_jct_s,
        "the budget slows work down"
    );
    assert!(
        capped.avg_wait_s < plain.avg_wait_s,
        "capping lets work start sooner"
    );
    // capped runs are more energy-efficient per unit of work
    assert!(capped.jobs_energy_mwh < plain.jobs_energy_mwh);
}

fn small_jobs() -> Vec<gigafab_core::JobSpec> {
    (0..6)
        .map(|i| gigafab_core::JobSpec::simple(format!("j{i}"), i as f64 * 600.0, 8, 3600.0))
        .collect()
}

#[test]
fn carbon_without_a_grid_intensity_is_not_accounted_rather_than_zero() {
    // mixed-small: one site, no grid series, no constant intensity
    let f =
        gigafab_twin::files::load_factory(Path::new("../../examples/factories/mixed-small.toml"))
            .unwrap();
    assert!(f.sites.iter().all(|s| s.carbon.is_none()));
    let r = run(&f, small_jobs(), false, false);
    assert!(r.energy_mwh > 0.0);
    assert_eq!(r.carbon_t, None);
    assert_eq!(r.jobs_carbon_t, None);
    assert!(r.sites.values().all(|s| s.carbon_t.is_none()));
    assert!(r.categories.values().all(|c| c.carbon_t.is_none()));
    let v = serde_json::to_value(&r).unwrap();
    assert!(
        v["carbon_t"].is_null() && v["jobs_carbon_t"].is_null(),
        "{v}"
    );
    assert!(v["sites"]["paris"]["carbon_t"].is_null(), "{v}");
    assert!(v["categories"]["academia"]["carbon_t"].is_null(), "{v}");
    let table = r.table();
    assert!(table.contains("not accounted (no grid series)"), "{table}");
    assert!(!table.contains("tCO2e;"), "{table}");
    assert!(!table.contains("0.000 tCO2e"), "{table}");

    // a constant intensity (`carbon_g_per_kwh`) is accounted: 100 g/kWh
    let mut g = f.clone();
    assert!(g.set_carbon(
        "paris",
        gigafab_core::carbon::CarbonSeries::constant("paris", 100.0)
    ));
    let r = run(&g, small_jobs(), false, false);
    let c = r.carbon_t.unwrap();
    assert!(
        (c - r.energy_mwh * 0.1).abs() < 1e-9 * c,
        "{c} {}",
        r.energy_mwh
    );
    // the jobs' energy is before PUE, their carbon with it
    let jc = r.jobs_carbon_t.unwrap();
    let pue = g.sites[0].pue;
    assert!(
        (jc - r.jobs_energy_mwh * pue * 0.1).abs() < 1e-9 * jc,
        "{jc}"
    );
    assert_eq!(r.sites["paris"].carbon_t, Some(c));
    assert!(r.categories["academia"].carbon_t.unwrap() > 0.0);
    assert!(r.table().contains(&format!("{c:.3} tCO2e")));
    assert!(!r.table().contains("not accounted"));

    // two sites, one without a series: the site shows null, the facility
    // sums the other
    let mut two = two_sites();
    two.sites[1].carbon = None;
    let r = run(&two, workload(&two, 200, 0.5, 0.0, 1), false, false);
    let (paris, frankfurt) = (&r.sites["paris"], &r.sites["frankfurt"]);
    assert_eq!(frankfurt.carbon_t, None);
    assert!(frankfurt.energy_mwh > 0.0);
    assert_eq!(r.carbon_t, paris.carbon_t);
    assert!(r.carbon_t.unwrap() > 0.0);
}

#[test]
fn each_site_gets_its_power_series_and_plot_panel() {
    let f = two_sites();
    let jobs = workload(&f, 400, 0.8, 0.0, 5);
    let mut p = Policy::new(PolicyKind::Fairshare);
    p.calendar_start_s = 1_672_531_200.0; // 2023-01-01T00:00Z
    let cfg = SimConfig {
        failures: None,
        timeline_points: Some(200),
        ..SimConfig::default()
    };
    let out = simulate(f, p, Throughputs::new(), jobs, &[], &cfg, &mut |_, _| {}).unwrap();
    let facility = out.power_timeline.as_ref().unwrap().series();
    assert_eq!(out.site_power_timelines.len(), 2);
    let sites: Vec<_> = out
        .site_power_timelines
        .iter()
        .map(|t| t.series())
        .collect();
    let mut busy = [false; 2];
    for (k, s) in sites.iter().enumerate() {
        assert_eq!(s.t, facility.t);
        busy[k] = s.utilization.iter().any(|&w| w > 2.1);
    }
    assert_eq!(busy, [true, true], "both sites run work");
    for i in 0..facility.t.len() {
        let sum = sites[0].utilization[i] + sites[1].utilization[i];
        let total = facility.utilization[i];
        assert!((sum - total).abs() <= 1e-9 * total, "{i}: {sum} vs {total}");
    }
    // each site's peak is its report's
    for (k, name) in ["paris", "frankfurt"].into_iter().enumerate() {
        let peak = sites[k].utilization.iter().copied().fold(0.0, f64::max);
        assert!(peak <= out.report.sites[name].peak_power_mw + 1e-9);
    }

    // the plot: one power panel per site against its own budget, dates on
    // the time axis
    let series = out.plot_series().unwrap();
    let labels: Vec<&str> = series.extra.iter().map(|e| e.label.as_str()).collect();
    assert_eq!(
        labels,
        ["paris power (MW)", "frankfurt power (MW)", "grid gCO2e/kWh"]
    );
    for (k, e) in series.extra[..2].iter().enumerate() {
        assert_eq!(e.lines[0].1, sites[k].utilization);
        assert_eq!(e.limit, Some(("budget 4.20 MW".to_string(), 4.2)));
    }
    assert_eq!(series.calendar_start_s, Some(1_672_531_200.0));
    let svg = gigafab_twin::plot::render_svg(&series, "two sites");
    assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 5);
    assert_eq!(svg.matches(" power (MW)</text>").count(), 2);
    assert_eq!(svg.matches(r#"class="limit""#).count(), 2);
    assert!(svg.contains(">paris power (MW)<") && svg.contains(">frankfurt power (MW)<"));
    assert!(svg.contains(">2023-01-") && svg.contains("date (UTC)"));
    // without a timeline, nothing to plot
    let quiet = simulate(
        two_sites(),
        Policy::new(PolicyKind::Fifo),
        Throughputs::new(),
        workload(&two_sites(), 10, 0.5, 0.0, 1),
        &[],
        &SimConfig::default(),
        &mut |_, _| {},
    )
    .unwrap();
    assert!(quiet.site_power_timelines.is_empty() && quiet.plot_series().is_none());
}
