//! Shared pools: slice types derived from a pool's `slices` or `fractions`,
//! slice requests placed only on them, and usage charged by the slice's
//! share of an accelerator.

use gigafab_core::catalog::SliceKind;
use gigafab_core::{
    AllocationSpec, Category, Factory, JobSpec, JobState, Policy, PolicyKind, SchedCore,
    Throughputs, TypeFilter,
};

const FACTORY: &str = r#"name = "shared"
[[sites]]
name = "s"
[[sites.pools]]
name = "whole"
accelerator = "h100"
nodes = 1
accelerators_per_node = 2
[[sites.pools]]
name = "mig"
accelerator = "h100"
nodes = 1
accelerators_per_node = 2
slices = "1g.10gb"
[[sites.pools]]
name = "mps"
accelerator = "h100"
nodes = 1
accelerators_per_node = 1
fractions = 4
share = "mps"
"#;

fn core() -> SchedCore {
    let f = Factory::parse(FACTORY, "shared.toml").unwrap();
    let mut p = Policy::new(PolicyKind::Fifo);
    p.backfill_interval_s = 0.0;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c
}

fn job(id: &str, gpus: u32, filter: &str) -> JobSpec {
    let mut s = JobSpec::simple(id, 0.0, gpus, 3600.0);
    s.time_limit_s = Some(3600.0);
    s.types = TypeFilter::parse(filter).unwrap();
    s
}

#[test]
fn a_shared_pool_is_a_pool_of_slices_with_their_share_of_everything() {
    let f = Factory::parse(FACTORY, "shared.toml").unwrap();
    let mig = &f.pools[1];
    assert_eq!((mig.per_node, mig.slices_per_accel), (14, 7));
    let t = f.catalog.get(mig.accel);
    assert_eq!(t.id, "h100-1g.10gb");
    assert_eq!(t.memory_gb, 10.0);
    let s = t.slice.as_ref().unwrap();
    assert_eq!(
        (s.parent.as_str(), s.milli, s.kind),
        ("h100", 143, SliceKind::Mig)
    );
    // one of the 7 slices of each GPU: 1/7 of its price and power
    assert!((t.billing_weight - 1.0 / 7.0).abs() < 1e-9);
    assert!((t.peak_watts - 700.0 / 7.0).abs() < 1e-9);
    let mps = f.catalog.get(f.pools[2].accel);
    assert_eq!(mps.id, "h100-mps-4");
    assert_eq!(mps.memory_gb, 20.0);
    assert_eq!(mps.slice.as_ref().unwrap().kind, SliceKind::Mps);
}

#[test]
fn slice_requests_land_on_slices_and_whole_ones_on_whole_accelerators() {
    let mut c = core();
    let whole = c.submit(&job("whole", 1, ""), 0, 0.0);
    let prof = c.submit(&job("prof", 1, "slice:1g.10gb"), 0, 0.0);
    let quarter = c.submit(&job("quarter", 1, "slice:0.25"), 0, 0.0);
    let mem = c.submit(&job("mem", 1, "slice:any;mem>=15"), 0, 0.0);
    let started = c.schedule(0.0).started.clone();
    assert_eq!(started.len(), 4, "{started:?}");
    let pool = |j| {
        c.factory.pools[c.jobs[j as usize].run_pool as usize]
            .name
            .clone()
    };
    assert_eq!(pool(whole), "whole");
    assert_eq!(pool(prof), "mig");
    // 0.25 is more than a 1g slice (0.143): only the MPS quarters hold it
    assert_eq!(pool(quarter), "mps");
    // 15 GB: more than a 1g.10gb slice
    assert_eq!(pool(mem), "mps");
    // 14 slices of 1g.10gb: 14 jobs run at once, the 15th waits
    let many: Vec<_> = (0..14)
        .map(|i| c.submit(&job(&format!("m{i}"), 1, "slice:1g.10gb"), 0, 0.0))
        .collect();
    let started = c.schedule(0.0).started.clone();
    assert_eq!(started.len(), 13, "one slice was taken by `prof`");
    assert_eq!(c.jobs[many[13] as usize].state, JobState::Waiting);
    // a slice request no pool can hold is unsatisfiable at once
    let big = c.submit(&job("big", 1, "slice:any;mem>=41"), 0, 0.0);
    assert_eq!(c.jobs[big as usize].state, JobState::Cancelled);
}

#[test]
fn a_slice_is_charged_its_share() {
    let mut c = core();
    let j = c.submit(&job("prof", 1, "slice:1g.10gb"), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![j]);
    c.end_run(j, 3600.0, JobState::Completed);
    let used = c.allocs[0].used_at(3600.0);
    // one hour of a 1/7 slice of an H100 (billing weight 1): 1/7 h
    assert!((used - 3600.0 / 7.0).abs() < 1e-6, "{used}");
    // and its attained service (the LAS policy, the twin's GPU-hours) too
    let got = c.jobs[j as usize].attained_gpu_s;
    assert!((got - 3600.0 / 7.0).abs() < 1e-6, "{got}");
    let mut c = core();
    let j = c.submit(&job("whole", 1, ""), 0, 0.0);
    assert_eq!(c.schedule(0.0).started, vec![j]);
    c.end_run(j, 3600.0, JobState::Completed);
    assert!((c.allocs[0].used_at(3600.0) - 3600.0).abs() < 1e-6);
}

#[test]
fn bad_sharing_says_why() {
    let bad = |extra: &str, accel: &str| {
        let t = format!(
            "name = \"b\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"{accel}\"\nnodes = 1\naccelerators_per_node = 8\n{extra}\n"
        );
        Factory::parse(&t, "b.toml").unwrap_err().to_string()
    };
    let e = bad("slices = \"9g.99gb\"", "h100");
    assert!(e.contains("known: 1g.10gb") && e.contains("b.toml:"), "{e}");
    let e = bad("slices = \"1g.10gb\"", "t4");
    assert!(
        e.contains("cannot be split") && e.contains("fractions"),
        "{e}"
    );
    let e = bad("fractions = 1", "t4");
    assert!(e.contains("2..=64"), "{e}");
    let e = bad("fractions = 4\nshare = \"mps\"", "mi300x");
    assert!(e.contains("NVIDIA"), "{e}");
    let e = bad("slices = \"cpx\"\nfractions = 2", "mi300x");
    assert!(e.contains("not both"), "{e}");
    let f = Factory::parse(
        "name = \"a\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"mi300x\"\nnodes = 1\naccelerators_per_node = 8\nslices = \"cpx\"\n",
        "a.toml",
    )
    .unwrap();
    assert_eq!(f.pools[0].per_node, 64);
    assert_eq!(f.catalog.get(f.pools[0].accel).memory_gb, 24.0);
}

#[test]
fn slice_filters_round_trip_and_reject_nonsense() {
    for col in ["slice:0.25", "slice:1g.10gb", "h100;slice:any"] {
        let f = TypeFilter::parse(col).unwrap();
        assert_eq!(TypeFilter::parse(&f.to_column()).unwrap(), f, "{col}");
    }
    assert!(TypeFilter::parse("slice:1.5").is_err());
    assert!(TypeFilter::parse("slice:0").is_err());
    assert!(TypeFilter::parse("slice:a/b").is_err());
}

#[test]
fn without_sharing_the_same_accelerators_are_whole_again() {
    let f = Factory::parse(FACTORY, "shared.toml").unwrap();
    assert!(f.shares());
    let w = f.without_sharing();
    assert!(!w.shares());
    assert_eq!(w.physical_accelerators(), f.physical_accelerators());
    assert_eq!(w.accelerators(), 5, "2 + 2 + 1 whole H100s");
    for p in &w.pools {
        assert_eq!(w.catalog.get(p.accel).id, "h100", "{}", p.name);
        assert_eq!(p.slices_per_accel, 1);
    }
    assert_eq!(w.pools[1].per_node, 2);
    assert_eq!(w.pools[2].per_node, 1);
    // a layout of one slice per GPU (4g.40gb) is sharing too, undone alike
    let one = FACTORY
        .replace("slices = \"1g.10gb\"", "slices = \"4g.40gb\"")
        .replace("fractions = 4\nshare = \"mps\"\n", "");
    let f = Factory::parse(&one, "one.toml").unwrap();
    assert_eq!(f.pools[1].slices_per_accel, 1);
    assert!(f.shares());
    let w = f.without_sharing();
    assert_eq!(w.catalog.get(w.pools[1].accel).id, "h100");
    assert!(!w.shares());
    // nodes, CPUs and power stay as they were
    for (a, b) in f.pools.iter().zip(&w.pools) {
        assert_eq!((a.nodes, a.node_watts), (b.nodes, b.node_watts));
    }
}

#[test]
fn a_shared_pool_grows_and_shrinks_against_its_whole_pool() {
    // 8 whole H100 nodes, 2 in quarters
    let text = r#"name = "scale"
[[sites]]
name = "s"
[[sites.pools]]
name = "whole"
accelerator = "h100"
nodes = 8
accelerators_per_node = 8
[[sites.pools]]
name = "quarters"
accelerator = "h100"
nodes = 2
accelerators_per_node = 8
fractions = 4
"#;
    let f = Factory::parse(text, "scale.toml").unwrap();
    let nodes = |f: &Factory| f.pools.iter().map(|p| p.nodes).collect::<Vec<_>>();
    let up = f.with_shared_scaled(2.0).unwrap();
    assert_eq!(nodes(&up), [6, 4]);
    assert_eq!(up.pools[1].first_node, 6);
    assert_eq!(up.physical_accelerators(), f.physical_accelerators());
    assert_eq!(nodes(&f.with_shared_scaled(0.5).unwrap()), [9, 1]);
    assert_eq!(nodes(&f.with_shared_scaled(1.0).unwrap()), [8, 2]);
    // 0: nothing shared, the same nodes
    let none = f.with_shared_scaled(0.0).unwrap();
    assert!(!none.shares());
    assert_eq!(none.physical_accelerators(), 80);
    // more than the two pools hold, or nonsense
    let e = f.with_shared_scaled(5.0).unwrap_err();
    assert!(
        e.contains("10 nodes, where it and `whole` hold 10 together"),
        "{e}"
    );
    assert!(f.with_shared_scaled(-1.0).is_err());
    assert!(f.with_shared_scaled(f64::NAN).is_err());
}
