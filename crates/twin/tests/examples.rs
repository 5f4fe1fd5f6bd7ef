//! The example factories under `examples/factories/` load and have the
//! advertised sizes.

use gigafab_core::Vendor;
use gigafab_core::factory::Factory;
use std::collections::HashSet;
use std::path::Path;

fn load(name: &str) -> Factory {
    let path = format!("../../examples/factories/{name}.toml");
    gigafab_twin::files::load_factory(Path::new(&path)).unwrap_or_else(|e| panic!("{e}"))
}

fn count(f: &Factory, accel: &str) -> u64 {
    f.pools
        .iter()
        .filter(|p| f.catalog.get(p.accel).id == accel)
        .map(|p| p.accelerators())
        .sum()
}

#[test]
fn mixed_small() {
    let f = load("mixed-small");
    assert_eq!(f.name, "mixed-small");
    assert_eq!(f.accelerators(), 128);
    assert_eq!(count(&f, "h100"), 64);
    assert_eq!(count(&f, "mi300x"), 64);
    assert_eq!(f.nodes(), 16);
    assert!(
        f.pools
            .iter()
            .all(|p| p.leaf_nodes == 4 && p.domain_nodes == 1)
    );
}

#[test]
fn gavel_108() {
    let f = load("gavel-108");
    assert_eq!(f.accelerators(), 108);
    for t in ["k80", "p100", "v100"] {
        assert_eq!(count(&f, t), 36, "{t}");
    }
    assert!(f.pools.iter().all(|p| p.nodes == 9 && p.per_node == 4));
}

#[test]
fn gigafactory_100k() {
    let f = load("gigafactory-100k");
    assert_eq!(f.accelerators(), 100_000);
    assert!(f.sites.len() >= 3);
    assert!(
        f.pools.iter().all(|p| p.accelerators() >= 16_384),
        "a 16,384 gang fits in every pool"
    );
    assert_eq!(count(&f, "b200"), 24_480);
    assert_eq!(count(&f, "h200"), 16_384);
    assert_eq!(count(&f, "h100"), 18_432);
    assert_eq!(count(&f, "mi300x"), 16_384);
    assert_eq!(count(&f, "mi355x"), 24_320);
    let vendors: HashSet<Vendor> = f
        .pools
        .iter()
        .map(|p| f.catalog.get(p.accel).vendor)
        .collect();
    assert!(vendors.contains(&Vendor::Nvidia) && vendors.contains(&Vendor::Amd));
    let b200 = f.pools.iter().find(|p| p.name == "b200").unwrap();
    assert_eq!(b200.domain_nodes, 18);
    assert_eq!(b200.nodes % b200.leaf_nodes, 0);
    // Every pool is made of whole leaves.
    assert!(f.pools.iter().all(|p| p.nodes % p.leaf_nodes == 0));
}

#[test]
fn campus_500k() {
    let f = load("campus-500k");
    assert_eq!(f.accelerators(), 500_000);
    assert_eq!(count(&f, "b200"), 122_400);
    assert_eq!(count(&f, "h200"), 81_920);
    assert_eq!(count(&f, "h100"), 92_160);
    assert_eq!(count(&f, "mi300x"), 81_920);
    assert_eq!(count(&f, "mi355x"), 121_600);
    assert!(f.pools.iter().all(|p| p.nodes % p.leaf_nodes == 0));
    // and the embedded copy is the same factory
    let b = gigafab_twin::files::load_factory(Path::new("builtin:campus-500k")).unwrap();
    assert_eq!(b.accelerators(), f.accelerators());
}
