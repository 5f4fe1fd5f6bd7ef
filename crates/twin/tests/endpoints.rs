//! Model endpoints in the twin: requests served by replicas that the
//! scheduler places, scaled by the shared autoscaler.

use gigafab_core::{Factory, JobSpec, Policy, PolicyKind, Throughputs};
use gigafab_twin::endpoints::{self, EndpointInput, EndpointReport, EndpointSpec};
use gigafab_twin::workload::requests::Request;
use gigafab_twin::{Report, SimConfig, simulate};

const FACTORY: &str = r#"
name = "serving"
[[sites]]
name = "s"
[[sites.pools]]
name = "h100"
accelerator = "h100"
nodes = 2
accelerators_per_node = 4
"#;

fn factory() -> Factory {
    Factory::parse(FACTORY, "serving.toml").unwrap()
}

fn spec(toml_body: &str) -> EndpointSpec {
    let size = if toml_body.contains("model_params_b") {
        ""
    } else {
        "model_params_b = 8\n"
    };
    let text = format!(
        "[[endpoint]]\nname = \"chat\"\n{size}requests = \"builtin:azure-conv\"\n{toml_body}"
    );
    endpoints::parse(&text, "e.toml").unwrap().remove(0)
}

/// `n` requests a second from `t0` to `t1` (prompt 500, output 100).
fn burst(t0: f64, t1: f64, per_s: f64) -> Vec<Request> {
    let mut v = Vec::new();
    let mut t = t0;
    while t < t1 {
        v.push(Request {
            t_s: t,
            prompt_tokens: 500,
            output_tokens: 100,
        });
        t += 1.0 / per_s;
    }
    v
}

fn run(jobs: Vec<JobSpec>, eps: Vec<EndpointInput>, kind: PolicyKind) -> Report {
    simulate(
        factory(),
        Policy::new(kind),
        Throughputs::default(),
        jobs,
        &[],
        &SimConfig {
            failures: None,
            endpoints: eps,
            ..SimConfig::default()
        },
        &mut |_, _| {},
    )
    .unwrap()
    .report
}

fn only(r: &Report) -> &EndpointReport {
    assert_eq!(r.endpoints.len(), 1);
    &r.endpoints[0]
}

#[test]
fn an_endpoint_scales_from_zero_under_load_and_back_to_zero_when_idle() {
    let s = spec(
        "max_replicas = 4\ntarget_inflight = 4\nidle_to_zero_s = 300\nscale_down_delay_s = 60\ncold_start_s = 30",
    );
    // two bursts 2 h apart: each starts from zero
    let mut reqs = burst(0.0, 600.0, 4.0);
    reqs.extend(burst(7200.0, 7800.0, 4.0));
    let n = reqs.len() as u64;
    let r = run(
        Vec::new(),
        vec![EndpointInput {
            spec: s,
            requests: reqs,
        }],
        PolicyKind::Fifo,
    );
    let e = only(&r);
    assert_eq!(e.requests, n);
    assert_eq!(e.served, n, "{e:?}");
    assert_eq!(e.cold_starts, 2, "{e:?}");
    assert!(e.cold_requests > 0);
    // 4 requests a second of ~1 s each is ~4 in flight: more than one
    // replica at the start (the cold start piles up requests)
    assert!(e.peak_replicas >= 2, "{e:?}");
    assert!(e.scale_events["idle"] >= 2, "{:?}", e.scale_events);
    // the first requests waited for the model to load
    assert!(e.ttft_p99_s >= 15.0, "{e:?}");
    assert!(e.ttft_p50_s < 1.0, "{e:?}");
    // replicas held ~ two bursts and their idle tails, not the 2 h gap
    assert!(e.replica_hours > 0.3 && e.replica_hours < 1.5, "{e:?}");
    assert!(e.energy_kwh > 0.0);
    assert_eq!(e.prompt_tokens, 500 * n);
}

#[test]
fn min_replicas_stay_and_cost_the_whole_time() {
    let reqs = burst(0.0, 600.0, 1.0);
    let mut training = JobSpec::simple("t0", 0.0, 1, 4.0 * 3600.0);
    training.preemptible = true;
    let with_min = run(
        vec![training.clone()],
        vec![EndpointInput {
            spec: spec("min_replicas = 1\ncold_start_s = 10"),
            requests: reqs.clone(),
        }],
        PolicyKind::Fifo,
    );
    let e = only(&with_min);
    assert_eq!(e.cold_starts, 0);
    assert_eq!(e.served, reqs.len() as u64);
    // the replica is held until the training ends, ~4 h
    assert!(e.replica_hours > 3.9, "{e:?}");
    let zero = run(
        vec![training],
        vec![EndpointInput {
            spec: spec("min_replicas = 0\ncold_start_s = 10"),
            requests: reqs,
        }],
        PolicyKind::Fifo,
    );
    let z = only(&zero);
    assert!(z.replica_hours < e.replica_hours / 3.0, "{z:?} vs {e:?}");
    assert_eq!(z.cold_starts, 1);
}

#[test]
fn min_replicas_preempt_training_and_replicas_above_min_yield_to_it() {
    // the fleet (8 accelerators) is full of preemptible training
    let mut jobs: Vec<JobSpec> = (0..2)
        .map(|i| {
            let mut j = JobSpec::simple(format!("train{i}"), 0.0, 4, 3600.0);
            j.preemptible = true;
            j.checkpoint_s = Some(60.0);
            j
        })
        .collect();
    let reqs = burst(100.0, 700.0, 2.0);
    let r = run(
        jobs.clone(),
        vec![EndpointInput {
            spec: spec("min_replicas = 1\nmax_replicas = 1\ncold_start_s = 10\nstart_s = 100"),
            requests: reqs.clone(),
        }],
        PolicyKind::Fifo,
    );
    let e = only(&r);
    // the min replica took its accelerator from training at once
    assert_eq!(r.preemptions, 1, "{r:?}");
    assert_eq!(e.served, reqs.len() as u64);
    assert!(e.ttft_p99_s < 5.0, "{e:?}");
    // a replica above min does not preempt training...
    let r = run(
        jobs.clone(),
        vec![EndpointInput {
            spec: spec(
                "min_replicas = 0\nmax_replicas = 1\ncold_start_s = 10\nqueue_timeout_s = 30\nstart_s = 100",
            ),
            requests: reqs.clone(),
        }],
        PolicyKind::Fifo,
    );
    let e = only(&r);
    assert_eq!(r.preemptions, 0);
    assert_eq!(e.served, 0, "{e:?}");
    assert_eq!(e.timed_out, reqs.len() as u64, "{e:?}");
    // ...and higher-priority training preempts it
    for j in &mut jobs {
        j.submit_s = 300.0;
        j.priority = 5;
    }
    let r = run(
        jobs,
        vec![EndpointInput {
            spec: spec("min_replicas = 0\nmax_replicas = 1\ncold_start_s = 10"),
            requests: burst(0.0, 600.0, 2.0),
        }],
        PolicyKind::Fifo,
    );
    let e = only(&r);
    assert_eq!(e.preempted, 1, "{e:?}");
    assert!(e.retried > 0 || e.timed_out > 0, "{e:?}");
}

#[test]
fn a_day_of_the_azure_trace_follows_the_daily_curve() {
    let text = "[[endpoint]]\nname = \"conv\"\nmodel_params_b = 8\nrequests = \"builtin:azure-conv\"\ndiurnal = true\nmax_replicas = 64\n";
    let specs = endpoints::parse(text, "e.toml").unwrap();
    let eps = endpoints::prepare(specs.clone(), 7).unwrap();
    let reqs = &eps[0].requests;
    let hour = gigafab_twin::workload::requests::read(std::path::Path::new("builtin:azure-conv"))
        .unwrap()
        .requests
        .iter()
        .filter(|r| r.t_s < 3600.0)
        .count() as f64;
    let expect: f64 = (0..24)
        .map(|h| endpoints::diurnal_share(h as f64 + 0.5) * hour)
        .sum();
    let got = reqs.len() as f64;
    assert!((got - expect).abs() / expect < 0.02, "{got} vs {expect}");
    // night (04:00) is a tenth of the afternoon's peak
    let at = |h: f64| {
        reqs.iter()
            .filter(|r| r.t_s >= h * 3600.0 && r.t_s < (h + 1.0) * 3600.0)
            .count() as f64
    };
    assert!(at(4.0) < at(16.0) / 5.0);
    // same seed, same requests; another seed, others
    assert_eq!(
        endpoints::prepare(specs.clone(), 7).unwrap()[0].requests,
        *reqs
    );
    assert_ne!(endpoints::prepare(specs, 8).unwrap()[0].requests, *reqs);
}

#[test]
fn endpoints_files_are_checked_with_their_location() {
    let bad = |body: &str| endpoints::parse(body, "eps.toml").unwrap_err().to_string();
    let e = bad(
        "[[endpoint]]\nname = \"a\"\nmodel_params_b = 8\nrequests = \"x\"\nmax_replicass = 3\n",
    );
    assert!(
        e.contains("eps.toml") && e.contains("max_replicass") && e.contains("line 5"),
        "{e}"
    );
    let e = bad(
        "[[endpoint]]\nname = \"a\"\nmodel_params_b = 8\nrequests = \"x\"\nmin_replicas = 5\nmax_replicas = 2\n",
    );
    assert!(
        e.contains("endpoint `a`") && e.contains("min_replicas"),
        "{e}"
    );
    let e = bad("[[endpoint]]\nname = \"A b\"\nmodel_params_b = 8\nrequests = \"x\"\n");
    assert!(e.contains("bad name"), "{e}");
    let e = bad(
        "[[endpoint]]\nname = \"a\"\nmodel_params_b = 8\nrequests = \"x\"\n[[endpoint]]\nname = \"a\"\nmodel_params_b = 8\nrequests = \"x\"\n",
    );
    assert!(e.contains("second endpoint"), "{e}");
    let e = bad("");
    assert!(e.contains("no [[endpoint]]"), "{e}");
    let e = endpoints::prepare(
        endpoints::parse(
            "[[endpoint]]\nname = \"a\"\nmodel_params_b = 8\nrequests = \"no/such.csv\"\n",
            "e",
        )
        .unwrap(),
        1,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("no/such.csv"), "{e}");
}

#[test]
fn a_model_too_big_for_every_type_is_never_placed() {
    // 400 B parameters in 16 bit: 800 GB, more than 1 × H100
    let r = run(
        Vec::new(),
        vec![EndpointInput {
            spec: spec("model_params_b = 400\nqueue_timeout_s = 5"),
            requests: burst(0.0, 10.0, 1.0),
        }],
        PolicyKind::Fifo,
    );
    let e = only(&r);
    assert_eq!(e.served, 0);
    assert!(
        e.scale_events.get("unplaceable").is_some_and(|&n| n > 0),
        "{e:?}"
    );
}
