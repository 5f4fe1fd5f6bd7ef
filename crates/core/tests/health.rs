//! The health model: the Xid table, the state machine, lemon nodes.

use gigafab_core::health::{
    HealthModel, HealthPolicy, HealthState, Signal, XID_TABLE, XidAction, xid,
};

fn model() -> HealthModel {
    HealthModel::new(4, HealthPolicy::default())
}

#[test]
fn the_whole_xid_table_is_acted_on_as_it_says() {
    // ascending and unique (the lookup is a binary search)
    assert!(XID_TABLE.windows(2).all(|w| w[0].code < w[1].code));
    for e in XID_TABLE {
        assert_eq!(xid(e.code), Some(e), "lookup of {}", e.code);
        let mut m = model();
        let t = m.observe(
            1,
            &Signal::Xid {
                gpu: 3,
                code: e.code,
            },
            10.0,
        );
        if e.action.drains() {
            let t = t.unwrap_or_else(|| panic!("xid {} must drain", e.code));
            assert_eq!(t.to, HealthState::Draining, "xid {}", e.code);
            assert!(
                t.reason.contains(&format!("xid {} on gpu 3", e.code)),
                "{}",
                t.reason
            );
            assert!(t.reason.contains(e.action.name()), "{}", t.reason);
            assert_eq!(m.node(1).unwrap().action, Some(e.action));
        } else {
            assert_eq!(t, None, "xid {} ({}) must not drain", e.code, e.name);
            assert_eq!(m.state(1), HealthState::Healthy);
        }
    }
    // application faults never take a node out
    for code in [13, 31, 43] {
        assert_eq!(xid(code).unwrap().action, XidAction::RestartApp);
    }
    assert_eq!(xid(48).unwrap().action, XidAction::ResetGpu);
    assert_eq!(xid(74).unwrap().action, XidAction::ResetGpu);
    assert_eq!(xid(79).unwrap().action, XidAction::RebootNode);
    assert_eq!(xid(95).unwrap().action, XidAction::ResetGpu);
    // an Xid outside the table: watched (suspect), not drained
    assert!(xid(9999).is_none());
    let mut m = model();
    let t = m
        .observe(0, &Signal::Xid { gpu: 0, code: 9999 }, 1.0)
        .unwrap();
    assert_eq!(t.to, HealthState::Suspect);
}

#[test]
fn a_node_goes_through_its_states_with_reasons_and_evidence() {
    let mut m = model();
    // mild signals below the thresholds: nothing
    assert_eq!(
        m.observe(2, &Signal::EccCorrectable { gpu: 0, count: 5 }, 1.0),
        None
    );
    assert!(m.node(2).unwrap().evidence.is_empty());
    // heat: suspect
    let t = m
        .observe(
            2,
            &Signal::Thermal {
                gpu: 1,
                celsius: 85.0,
                throttled: true,
            },
            2.0,
        )
        .unwrap();
    assert_eq!((t.from, t.to), (HealthState::Healthy, HealthState::Suspect));
    assert!(t.reason.contains("thermal throttling"));
    assert!(m.state(2).in_service());
    // more suspicion: no new transition, more evidence
    assert_eq!(
        m.observe(2, &Signal::LinkErrors { gpu: 1, count: 50 }, 3.0),
        None
    );
    assert_eq!(m.node(2).unwrap().evidence.len(), 2);
    // a double-bit ECC error: draining, the GPU to reset
    let t = m
        .observe(2, &Signal::EccUncorrectable { gpu: 1, count: 1 }, 4.0)
        .unwrap();
    assert_eq!(
        (t.from, t.to),
        (HealthState::Suspect, HealthState::Draining)
    );
    assert!(!m.state(2).in_service());
    assert_eq!(m.node(2).unwrap().action, Some(XidAction::ResetGpu));
    // while draining, a worse signal makes the repair stronger, no transition
    assert_eq!(m.observe(2, &Signal::Xid { gpu: 1, code: 79 }, 5.0), None);
    assert_eq!(m.node(2).unwrap().action, Some(XidAction::RebootNode));
    // only the right steps, in order
    assert_eq!(m.repaired(2, 6.0), None, "not in repair yet");
    assert_eq!(m.repair_started(2, 6.0), None, "not drained yet");
    assert_eq!(m.emptied(2, 7.0).unwrap().to, HealthState::Drained);
    assert_eq!(m.repair_started(2, 8.0).unwrap().to, HealthState::InRepair);
    let t = m.repaired(2, 9.0).unwrap();
    assert_eq!(
        (t.from, t.to),
        (HealthState::InRepair, HealthState::Healthy)
    );
    let h = m.node(2).unwrap();
    assert_eq!((h.action, h.reason.clone()), (None, None));
    // the evidence stays, bounded
    for i in 0..40 {
        m.observe(
            2,
            &Signal::PcieReplays {
                gpu: 0,
                count: 1000,
            },
            10.0 + i as f64,
        );
    }
    assert_eq!(
        m.node(2).unwrap().evidence.len(),
        HealthPolicy::default().max_evidence
    );
    assert_eq!(m.emptied(3, 1.0), None, "a healthy node is not emptied");
}

#[test]
fn suspicion_clears_without_new_evidence_and_operators_override() {
    let mut m = model();
    m.observe(
        0,
        &Signal::PowerExcess {
            gpu: 0,
            watts: 40.0,
        },
        0.0,
    );
    assert_eq!(m.state(0), HealthState::Suspect);
    assert!(m.tick(3600.0).is_empty());
    let t = m.tick(24.0 * 3600.0);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].to, HealthState::Healthy);
    // an operator drains a healthy node, then puts it back
    let t = m
        .override_state(1, HealthState::Draining, "bad fan", 5.0)
        .unwrap();
    assert_eq!(t.reason, "operator: bad fan");
    assert_eq!(
        m.node(1).unwrap().reason.as_deref(),
        Some("operator: bad fan")
    );
    assert!(
        m.override_state(1, HealthState::Draining, "again", 6.0)
            .is_none()
    );
    m.override_state(1, HealthState::Healthy, "fan replaced", 7.0)
        .unwrap();
    assert_eq!(m.state(1), HealthState::Healthy);
    assert_eq!(m.node(1).unwrap().evidence.len(), 3);
    assert_eq!(HealthState::parse("in_repair"), Some(HealthState::InRepair));
    assert_eq!(HealthState::parse("broken"), None);
}

#[test]
fn a_lemon_node_is_drained_without_a_hardware_signal() {
    let mut m = model();
    let day = 24.0 * 3600.0;
    let fail = |j: &str, t: &str| Signal::JobFailure {
        job: j.into(),
        tenant: t.into(),
    };
    // jobs of three tenants fail there, but one outside the window
    assert_eq!(m.observe(0, &fail("a", "acme"), 0.0), None);
    assert_eq!(m.observe(0, &fail("b", "beta"), 1.0), None);
    assert_eq!(m.observe(0, &fail("c", "gamma"), 1.0 + day + 10.0), None);
    assert_eq!(m.state(0), HealthState::Healthy);
    // two more tenants within the window of the third: drained, a lemon,
    // with no job or tenant named in the reason
    assert_eq!(m.observe(0, &fail("d", "delta"), 2.0 * day), None);
    let t = m.observe(0, &fail("e", "eps"), 2.0 * day + 5.0).unwrap();
    assert_eq!(t.to, HealthState::Draining);
    assert_eq!(
        t.reason,
        "lemon node: jobs of 3 tenants failed on it within 24 h"
    );
    assert_eq!(m.node(0).unwrap().action, Some(XidAction::Service));
    // one tenant's failing jobs count once; two tenants, however many
    // jobs, never drain a node
    for i in 0..10 {
        assert_eq!(
            m.observe(1, &fail(&format!("x{i}"), "mallory"), i as f64),
            None
        );
        assert_eq!(
            m.observe(1, &fail(&format!("y{i}"), "trudy"), i as f64),
            None
        );
    }
    assert_eq!(m.state(1), HealthState::Healthy);
    // the thresholds are the policy's
    let mut strict = HealthModel::new(
        1,
        HealthPolicy {
            lemon_failures: 1,
            lemon_tenants: 1,
            ..HealthPolicy::default()
        },
    );
    assert!(strict.observe(0, &fail("x", "acme"), 0.0).is_some());
    // a draining node with no job left is drained
    let mut m = model();
    m.observe(2, &Signal::Xid { gpu: 0, code: 48 }, 0.0);
    assert!(m.settle(|_| false, 1.0).is_empty());
    let t = m.settle(|n| n == 2, 2.0);
    assert_eq!(t.len(), 1);
    assert_eq!(m.state(2), HealthState::Drained);
    assert!(m.drains(&Signal::Xid { gpu: 0, code: 79 }));
    assert!(!m.drains(&Signal::Xid { gpu: 0, code: 13 }));
}

#[test]
fn long_gangs_avoid_suspect_nodes_and_say_so() {
    use gigafab_core::sched::Wait;
    use gigafab_core::{
        AllocationSpec, Category, Factory, JobSpec, Policy, PolicyKind, SchedCore, Throughputs,
    };
    let f = Factory::parse(
        "name = \"h\"\n[[sites]]\nname = \"s\"\n[[sites.pools]]\nname = \"p\"\naccelerator = \"h100\"\nnodes = 4\naccelerators_per_node = 4\n",
        "h.toml",
    )
    .unwrap();
    let mut p = Policy::new(PolicyKind::Backfill);
    p.backfill_interval_s = 0.0;
    let mut c = SchedCore::new(f, p, Throughputs::new());
    c.track_waits(true);
    c.add_allocation(AllocationSpec::open("a", Category::Academia));
    c.set_suspect(0, true);
    c.set_suspect(1, true);
    assert!(c.is_suspect(1) && !c.is_suspect(2));
    let long = |id: &str| JobSpec::simple(id, 0.0, 8, 7200.0);
    let a = c.submit(&long("a"), 0, 0.0);
    let b = c.submit(&long("b"), 0, 0.0);
    c.schedule(0.0);
    let nodes: Vec<u32> = c.jobs[a as usize].placement.iter().map(|x| x.0).collect();
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| !c.is_suspect(*n)), "{nodes:?}");
    assert_eq!(c.wait_of(b), Some(Wait::Suspect));
    // a short gang and a one-node job may use them
    let s = c.submit(&JobSpec::simple("short", 0.0, 8, 600.0), 0, 0.0);
    c.schedule(0.0);
    assert!(
        c.jobs[s as usize]
            .placement
            .iter()
            .all(|x| c.is_suspect(x.0))
    );
    c.check_invariants().unwrap();
    // healthy again: the long gang starts once there is room
    c.finish(s, 600.0);
    c.set_suspect(0, false);
    c.set_suspect(1, false);
    c.schedule(600.0);
    assert_eq!(c.jobs[b as usize].state, gigafab_core::JobState::Running);
    c.check_invariants().unwrap();
}
