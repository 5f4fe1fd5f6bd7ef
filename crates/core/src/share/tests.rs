use super::*;

fn node(gpus: u8) -> NodeRes {
    NodeRes::new(0, 64_000, 256 * 1024, gpus)
}

fn frac(milli: u16) -> Demand {
    Demand::new(1_000, 1024, 1, milli, Models::ANY)
}

fn whole(gpus: u8) -> Demand {
    Demand::new(1_000, 1024, gpus, 1000, Models::ANY)
}

#[test]
fn demands_are_normalised() {
    assert_eq!(Demand::new(0, 0, 4, 300, Models::ANY).milli, 1000);
    assert_eq!(Demand::new(0, 0, 0, 300, Models::ANY).milli, 0);
    assert_eq!(Demand::new(0, 0, 1, 0, Models::ANY).milli, 1);
    assert!(frac(500).is_fraction());
    assert!(!whole(1).is_fraction());
    assert_eq!(whole(4).gpu_milli_total(), 4000);
}

#[test]
fn fits_checks_cpu_memory_model_and_accelerators() {
    let mut n = node(2);
    assert!(n.fits(&whole(2)));
    assert!(!n.fits(&whole(3)));
    n.left[0] = 400;
    assert!(!n.fits(&whole(2)), "a shared accelerator is not whole");
    assert!(n.fits(&frac(400)));
    n.left[1] = 300;
    assert!(!n.fits(&frac(500)));
    assert!(!n.fits(&Demand::new(65_000, 0, 0, 0, Models::ANY)));
    assert!(!n.fits(&Demand::new(0, 300 * 1024, 0, 0, Models::ANY)));
    let m = NodeRes::new(3, 64_000, 1024, 1);
    assert!(!m.fits(&Demand::new(0, 0, 1, 1000, Models(1 << 2))));
    assert!(m.fits(&Demand::new(0, 0, 1, 1000, Models(1 << 3))));
}

#[test]
fn with_and_without_are_inverse() {
    let n = node(4);
    let d = whole(2);
    let after = n.with(&d, None);
    assert_eq!(after.gpus(), &[0, 0, 1000, 1000]);
    let mut held = Vec::new();
    held_gpus(&n, &d, &Choice { node: 0, gpu: None }, &mut held);
    assert_eq!(held, vec![0, 1]);
    assert_eq!(after.without(&d, &held), n);
    let f = frac(250);
    let a2 = after.with(&f, Some(3));
    assert_eq!(a2.gpus(), &[0, 0, 1000, 750]);
    assert_eq!(a2.without(&f, &[3]), after);
}

#[test]
fn fragmentation_follows_the_paper() {
    // typical: half 1-GPU whole demands, half 0.5-GPU fractions
    let typical = Typical::of(&[whole(1), frac(500)]);
    assert_eq!(typical.len(), 2);
    let mut n = node(2);
    assert_eq!(
        node_frag(&n, &typical),
        0.0,
        "an empty node has no fragment"
    );
    n.left[0] = 300; // 300 free on GPU 0, GPU 1 whole
    // whole(1): GPU 0's 300 is a fragment; frac(500): GPU 0's 300 too
    assert!((node_frag(&n, &typical) - 300.0).abs() < 1e-9);
    n.left[1] = 600;
    // whole(1) no longer fits anywhere: all 900 free is a fragment;
    // frac(500) fits on GPU 1: GPU 0's 300
    assert!((node_frag(&n, &typical) - 600.0).abs() < 1e-9);
    // no CPU left: everything is a fragment for every demand
    n.cpu_milli = 0;
    assert!((node_frag(&n, &typical) - 900.0).abs() < 1e-9);
    let mut cache = FragCache::new(typical.clone());
    let mut swapped = n;
    swapped.left.swap(0, 1);
    assert_eq!(cache.frag(&n), cache.frag(&swapped));
    assert_eq!(cache.len(), 1, "accelerator order does not matter");
}

fn run(policy: Placement, nodes: &mut [NodeRes], demands: &[Demand], seed: u64) -> usize {
    let typical = Typical::of(demands);
    let mut cache = FragCache::new(typical);
    let mut frags: Vec<f64> = nodes.iter().map(|n| cache.frag(n)).collect();
    let max = MaxSpec::of(nodes);
    let mut rng = Rng::new(seed);
    let mut placed = 0;
    for d in demands {
        if let Some(c) = place(nodes, &frags, d, policy, &mut cache, max, &mut rng) {
            let i = c.node as usize;
            nodes[i] = nodes[i].with(d, c.gpu);
            frags[i] = cache.frag(&nodes[i]);
            placed += 1;
        }
    }
    placed
}

#[test]
fn fgd_keeps_room_that_random_wastes() {
    // Two 1-GPU nodes; a 0.5 fraction, then a whole GPU, then a 0.5 fraction.
    // Packing the fractions together leaves room for the whole GPU.
    let demands = [frac(500), frac(500), whole(1)];
    for policy in [Placement::Gigafab, Placement::Fgd, Placement::BestFit] {
        let mut nodes = vec![node(1), node(1)];
        assert_eq!(run(policy, &mut nodes, &demands, 7), 3, "{policy:?}");
    }
    // random scatters the fractions on some seeds
    let lost = (0..32)
        .filter(|&s| {
            let mut nodes = vec![node(1), node(1)];
            run(Placement::Random, &mut nodes, &demands, s) < 3
        })
        .count();
    assert!(lost > 0, "random never scattered");
}

#[test]
fn gigafab_picks_the_accelerator_that_leaves_usable_room() {
    // GPU 0 has 600 free, GPU 1 has 400: a 400 fraction goes on GPU 1,
    // filling it, so GPU 0's 600 still takes a 0.5 fraction.
    let mut n = node(2);
    n.left = [600, 400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let typical = Typical::of(&[frac(400), frac(500)]);
    let mut cache = FragCache::new(typical);
    let frags = vec![cache.frag(&n)];
    let c = place(
        &[n],
        &frags,
        &frac(400),
        Placement::Gigafab,
        &mut cache,
        MaxSpec::of(&[n]),
        &mut Rng::new(1),
    )
    .unwrap();
    assert_eq!(c.gpu, Some(1));
}

#[test]
fn nothing_fits_is_none() {
    let nodes = [node(1)];
    let mut cache = FragCache::new(Vec::new());
    for policy in Placement::ALL {
        assert!(
            place(
                &nodes,
                &[0.0],
                &whole(2),
                policy,
                &mut cache,
                MaxSpec::of(&nodes),
                &mut Rng::new(1)
            )
            .is_none()
        );
    }
    assert_eq!(Placement::parse("Best-Fit"), Some(Placement::BestFit));
    assert_eq!(Placement::parse("tetris"), None);
}

#[test]
fn profiles_charge_their_compute_share_and_list_what_fits() {
    let p = profiles::find("h100", "1g.10gb").unwrap();
    assert_eq!(p.milli(), 143, "1/7 of a GPU, rounded up");
    assert_eq!(profiles::find("mi300x", "CPX").unwrap().milli(), 125);
    // charged as one of the slices a pool's layout makes of a GPU: four
    // 1g.20gb fit, two 3g.40gb, one 4g.40gb; matched by compute share
    let p = |n| profiles::find("h100", n).unwrap();
    assert_eq!(
        (p("1g.20gb").milli(), p("1g.20gb").charge_milli()),
        (143, 250)
    );
    assert_eq!(
        (p("3g.40gb").milli(), p("3g.40gb").charge_milli()),
        (429, 500)
    );
    assert_eq!(p("4g.40gb").charge_milli(), 1000);
    assert_eq!(profiles::find("gh200", "7g.96gb").unwrap().memory_gb, 96.0);
    let fit: Vec<&str> = profiles::fitting("h100", 30.0, 0)
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(fit, vec!["3g.40gb", "4g.40gb", "7g.80gb"]);
    // a quarter of the compute: 2g (2/7) is the smallest, not 1g.20gb
    let fit: Vec<&str> = profiles::fitting("h100", 0.0, 250)
        .iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(fit[0], "2g.20gb");
    assert!(profiles::fitting("h100", 81.0, 0).is_empty());
    assert!(profiles::of_type("t4").is_empty());
    profiles::layout_fits("h100", &["3g.40gb", "4g.40gb"]).unwrap();
    profiles::layout_fits("h100", &["1g.10gb"; 7]).unwrap();
    let e = profiles::layout_fits("h100", &["4g.40gb", "4g.40gb"]).unwrap_err();
    assert!(e.contains("at most 1"), "{e}");
    let e = profiles::layout_fits("h100", &["3g.40gb", "3g.40gb", "2g.20gb"]).unwrap_err();
    assert!(e.contains("8 of"), "{e}");
    let e = profiles::layout_fits("mi300x", &["dpx", "qpx"]).unwrap_err();
    assert!(e.contains("one partition mode"), "{e}");
    let e = profiles::layout_fits("h100", &["9g.99gb"]).unwrap_err();
    assert!(e.contains("known: 1g.10gb"), "{e}");
}

#[test]
fn cpu_aware_fragmentation_counts_what_cpu_cannot_feed() {
    // 4 whole accelerators free, CPU for one 1-GPU demand of 16 cores
    let mut n = NodeRes::new(0, 16_000, 1 << 20, 4);
    let d = Demand::new(16_000, 1024, 1, 1000, Models::ANY);
    let typical = Typical::of(&[d]);
    assert_eq!(
        node_frag(&n, &typical),
        0.0,
        "the paper's measure sees none"
    );
    let mut aware = FragCache::cpu_aware(typical.clone());
    assert!(
        (aware.frag(&n) - 3000.0).abs() < 1e-9,
        "three accelerators unfed"
    );
    n.cpu_milli = 64_000;
    assert_eq!(aware.frag(&n), 0.0);
    // a fraction: 0.25 each, 4 per accelerator, 16 copies; CPU for 8
    let q = Demand::new(8_000, 0, 1, 250, Models::ANY);
    let mut aware = FragCache::cpu_aware(Typical::of(&[q]));
    assert!((aware.frag(&n) - 8.0 * 250.0).abs() < 1e-9);
}
