//! Prometheus metrics (`GET /metrics`, text exposition format).
//!
//! Counters and latency histograms live in [`Metrics`] and are updated where
//! things happen; the gauges (queues, accelerators, power, allocations) are
//! read from the controller's state at scrape time ([`Snapshot`]), so the
//! scheduling loop pays nothing for them. Names and labels are documented
//! in docs/operations.md and used by `deploy/grafana-dashboard.json`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type FGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

/// An Xid of one accelerator (`node/gpu`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XidLabel {
    pub node: String,
    pub gpu: String,
    pub xid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    pub method: String,
    pub code: String,
}

/// An endpoint's answers by status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointCodeLabel {
    pub endpoint: String,
    pub code: String,
}

/// An endpoint's tokens by kind (prompt, completion).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointTokenLabel {
    pub endpoint: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabel {
    pool: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolStateLabel {
    pool: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AllocLabel {
    id: String,
    allocation: String,
    org: String,
}

/// What is counted as it happens.
#[derive(Debug)]
pub struct Metrics {
    pub jobs_submitted: Counter,
    pub jobs_started: Counter,
    pub jobs_preempted: Counter,
    pub jobs_finished: Family<StateLabel, Counter>,
    pub schedule_pass_seconds: Histogram,
    pub commit_seconds: Histogram,
    pub http_requests: Family<HttpLabel, Counter>,
    /// Nodes handed to be powered down (idle) and up.
    pub node_power_downs: Counter,
    pub node_resumes: Counter,
    /// Health: transitions by the state entered, Xid events by accelerator.
    pub health_transitions: Family<StateLabel, Counter>,
    pub xid_errors: Family<XidLabel, Counter>,
    /// The gateway: answers by endpoint and status, tokens, time to the
    /// first byte and to the last.
    pub endpoint_requests: Family<EndpointCodeLabel, Counter>,
    pub endpoint_tokens: Family<EndpointTokenLabel, Counter>,
    pub endpoint_ttft_seconds: Family<EndpointLabel, Histogram>,
    pub endpoint_latency_seconds: Family<EndpointLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            jobs_submitted: Counter::default(),
            jobs_started: Counter::default(),
            jobs_preempted: Counter::default(),
            jobs_finished: Family::default(),
            // 10 µs .. ~5 s
            schedule_pass_seconds: Histogram::new(exponential_buckets(1e-5, 2.0, 20)),
            // 100 µs .. ~50 s
            commit_seconds: Histogram::new(exponential_buckets(1e-4, 2.0, 20)),
            http_requests: Family::default(),
            node_power_downs: Counter::default(),
            node_resumes: Counter::default(),
            health_transitions: Family::default(),
            xid_errors: Family::default(),
            endpoint_requests: Family::default(),
            endpoint_tokens: Family::default(),
            // 1 ms .. ~500 s
            endpoint_ttft_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-3, 2.0, 20))
            }),
            endpoint_latency_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-3, 2.0, 20))
            }),
        }
    }
}

impl Metrics {
    /// The gateway's handles of endpoint `name`'s metrics (made once:
    /// a request pays no label lookup for a 200).
    pub fn endpoint(&self, name: &str) -> EndpointMetrics {
        let token = |kind: &str| {
            self.endpoint_tokens
                .get_or_create(&EndpointTokenLabel {
                    endpoint: name.to_string(),
                    kind: kind.into(),
                })
                .clone()
        };
        let l = EndpointLabel {
            endpoint: name.to_string(),
        };
        EndpointMetrics {
            name: name.to_string(),
            requests: self.endpoint_requests.clone(),
            ok: self
                .endpoint_requests
                .get_or_create(&EndpointCodeLabel {
                    endpoint: name.to_string(),
                    code: "200".into(),
                })
                .clone(),
            prompt: token("prompt"),
            completion: token("completion"),
            ttft: self.endpoint_ttft_seconds.get_or_create(&l).clone(),
            latency: self.endpoint_latency_seconds.get_or_create(&l).clone(),
        }
    }

    /// A job ended in `state` (completed, failed, timeout, cancelled).
    pub fn finished(&self, state: &str) {
        self.jobs_finished
            .get_or_create(&StateLabel {
                state: state.to_string(),
            })
            .inc();
    }
}

/// One endpoint's metrics, as the gateway updates them.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    name: String,
    requests: Family<EndpointCodeLabel, Counter>,
    ok: Counter,
    prompt: Counter,
    completion: Counter,
    ttft: Histogram,
    latency: Histogram,
}

impl EndpointMetrics {
    /// The gateway answered a request with `code`: its first byte after
    /// `ttft_s`, its last after `total_s` (both 0 for an answer of its
    /// own), with these tokens.
    pub fn request(&self, code: u16, ttft_s: f64, total_s: f64, prompt: u64, completion: u64) {
        if code == 200 {
            self.ok.inc();
        } else {
            self.requests
                .get_or_create(&EndpointCodeLabel {
                    endpoint: self.name.clone(),
                    code: code.to_string(),
                })
                .inc();
        }
        if prompt > 0 {
            self.prompt.inc_by(prompt);
        }
        if completion > 0 {
            self.completion.inc_by(completion);
        }
        if total_s > 0.0 {
            self.ttft.observe(ttft_s);
            self.latency.observe(total_s);
        }
    }
}

/// One pool's figures at scrape time.
#[derive(Debug, Default, Clone)]
pub struct PoolSnap {
    pub name: String,
    pub queued: u64,
    pub oldest_wait_s: f64,
    pub busy: u64,
    pub idle: u64,
    pub drained: u64,
    pub down: u64,
    /// Accelerators of powered-down nodes (idle power-down).
    pub powered_down: u64,
}

/// One site's power at scrape time.
#[derive(Debug, Default, Clone)]
pub struct SiteSnap {
    pub name: String,
    pub power_w: f64,
    pub budget_w: Option<f64>,
    /// Grid carbon intensity now, gCO2e/kWh (None: no series).
    pub intensity: Option<f64>,
    /// Carbon of the site's energy so far, g (None: no series).
    pub carbon_g: Option<f64>,
}

/// One allocation's figures at scrape time.
#[derive(Debug, Default, Clone)]
pub struct AllocSnap {
    pub id: i64,
    pub name: String,
    pub org: String,
    pub queued: u64,
    pub oldest_wait_s: f64,
    pub used_gpu_hours: f64,
    pub granted_gpu_hours: f64,
    pub energy_kwh: f64,
}

/// The controller's state, read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub pools: Vec<PoolSnap>,
    pub sites: Vec<SiteSnap>,
    pub allocations: Vec<AllocSnap>,
    pub queued: u64,
    pub running: u64,
    /// Nodes per health state (`healthy`, `suspect`, ...).
    pub health: Vec<(String, u64)>,
    /// The accelerators the node agents report on, latest readings.
    pub devices: Vec<DeviceSnap>,
}

/// One accelerator's latest reading at scrape time.
#[derive(Debug, Default, Clone)]
pub struct DeviceSnap {
    pub node: String,
    pub gpu: u32,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

/// An accelerator (`node/gpu`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GpuLabel {
    pub node: String,
    pub gpu: String,
}

fn gauge_family<L, F>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    items: impl IntoIterator<Item = (L, F)>,
) where
    L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    F: Into<f64>,
{
    let fam = Family::<L, FGauge>::default();
    for (l, v) in items {
        fam.get_or_create(&l).set(v.into());
    }
    reg.register(name, help, fam);
}

/// The exposition text of the counters and of a snapshot.
pub fn render(m: &Metrics, s: &Snapshot) -> String {
    let mut reg = Registry::default();
    reg.register(
        "gigafab_jobs_submitted",
        "Jobs accepted by the server",
        m.jobs_submitted.clone(),
    );
    reg.register(
        "gigafab_jobs_started",
        "Jobs started on their accelerators",
        m.jobs_started.clone(),
    );
    reg.register(
        "gigafab_jobs_preempted",
        "Runs stopped for a job of higher priority (the job waits to run again)",
        m.jobs_preempted.clone(),
    );
    reg.register(
        "gigafab_jobs_finished",
        "Jobs ended, by state (completed, failed, timeout, cancelled)",
        m.jobs_finished.clone(),
    );
    reg.register(
        "gigafab_schedule_pass_seconds",
        "Duration of a scheduling pass",
        m.schedule_pass_seconds.clone(),
    );
    reg.register(
        "gigafab_commit_seconds",
        "Duration of a group commit to the store",
        m.commit_seconds.clone(),
    );
    reg.register(
        "gigafab_http_requests",
        "HTTP requests answered, by method and status code",
        m.http_requests.clone(),
    );
    reg.register(
        "gigafab_endpoint_requests",
        "Requests answered by the gateway, by endpoint and status code",
        m.endpoint_requests.clone(),
    );
    reg.register(
        "gigafab_endpoint_tokens",
        "Tokens served by endpoint and kind (prompt, completion)",
        m.endpoint_tokens.clone(),
    );
    reg.register(
        "gigafab_endpoint_ttft_seconds",
        "Time from a request's arrival at the gateway to its answer's first byte",
        m.endpoint_ttft_seconds.clone(),
    );
    reg.register(
        "gigafab_endpoint_latency_seconds",
        "Time from a request's arrival at the gateway to its answer's last byte",
        m.endpoint_latency_seconds.clone(),
    );
    let queued = Gauge::<i64>::default();
    queued.set(s.queued as i64);
    reg.register("gigafab_jobs_queued", "Jobs waiting to start", queued);
    let running = Gauge::<i64>::default();
    running.set(s.running as i64);
    reg.register("gigafab_jobs_running", "Jobs running", running);
    let pool = |p: &PoolSnap| PoolLabel {
        pool: p.name.clone(),
    };
    gauge_family(
        &mut reg,
        "gigafab_pool_queued_jobs",
        "Waiting jobs that may run on the pool (a job counts on each of its pools)",
        s.pools.iter().map(|p| (pool(p), p.queued as f64)),
    );
    gauge_family(
        &mut reg,
        "gigafab_pool_oldest_wait_seconds",
        "Wait so far of the oldest waiting job that may run on the pool",
        s.pools.iter().map(|p| (pool(p), p.oldest_wait_s)),
    );
    gauge_family(
        &mut reg,
        "gigafab_accelerators",
        "Accelerators by pool and state (busy, idle, drained, down, powered_down)",
        s.pools.iter().flat_map(|p| {
            [
                ("busy", p.busy),
                ("idle", p.idle),
                ("drained", p.drained),
                ("down", p.down),
                ("powered_down", p.powered_down),
            ]
            .map(|(st, n)| {
                (
                    PoolStateLabel {
                        pool: p.name.clone(),
                        state: st.to_string(),
                    },
                    n as f64,
                )
            })
        }),
    );
    let site = |x: &SiteSnap| SiteLabel {
        site: x.name.clone(),
    };
    gauge_family(
        &mut reg,
        "gigafab_site_power_watts",
        "Facility power of the site now (IT power × PUE; idle accelerators and nodes included), modelled",
        s.sites.iter().map(|x| (site(x), x.power_w)),
    );
    gauge_family(
        &mut reg,
        "gigafab_site_power_budget_watts",
        "Facility power budget of the site (sites with a budget)",
        s.sites
            .iter()
            .filter_map(|x| x.budget_w.map(|b| (site(x), b))),
    );
    gauge_family(
        &mut reg,
        "gigafab_site_carbon_intensity_grams_per_kwh",
        "Grid carbon intensity at the site now, gCO2e/kWh (sites with a grid series)",
        s.sites
            .iter()
            .filter_map(|x| x.intensity.map(|v| (site(x), v))),
    );
    gauge_family(
        &mut reg,
        "gigafab_site_carbon_grams",
        "Carbon of the site's facility energy since the server started, gCO2e, modelled",
        s.sites
            .iter()
            .filter_map(|x| x.carbon_g.map(|v| (site(x), v))),
    );
    reg.register(
        "gigafab_node_health_transitions",
        "Node health transitions, by the state entered (suspect, draining, drained, in_repair, healthy)",
        m.health_transitions.clone(),
    );
    reg.register(
        "gigafab_gpu_xid_errors",
        "NVIDIA Xid events by node, accelerator and Xid (as DCGM's DCGM_FI_DEV_XID_ERRORS, counted)",
        m.xid_errors.clone(),
    );
    gauge_family(
        &mut reg,
        "gigafab_nodes_by_health",
        "Nodes by health state",
        s.health
            .iter()
            .map(|(st, n)| (StateLabel { state: st.clone() }, *n as f64)),
    );
    let gpu = |d: &DeviceSnap| GpuLabel {
        node: d.node.clone(),
        gpu: d.gpu.to_string(),
    };
    gauge_family(
        &mut reg,
        "gigafab_gpu_temperature_celsius",
        "Latest temperature of each accelerator a node agent reports on (as DCGM_FI_DEV_GPU_TEMP)",
        s.devices
            .iter()
            .filter_map(|d| d.temperature_c.map(|t| (gpu(d), t))),
    );
    gauge_family(
        &mut reg,
        "gigafab_gpu_power_watts",
        "Latest power draw of each accelerator a node agent reports on (as DCGM_FI_DEV_POWER_USAGE)",
        s.devices
            .iter()
            .filter_map(|d| d.power_w.map(|w| (gpu(d), w))),
    );
    reg.register(
        "gigafab_node_power_downs",
        "Nodes powered down after being idle (idle power-down)",
        m.node_power_downs.clone(),
    );
    reg.register(
        "gigafab_node_resumes",
        "Powered-down nodes powered up again",
        m.node_resumes.clone(),
    );
    let alloc = |a: &AllocSnap| AllocLabel {
        id: a.id.to_string(),
        allocation: a.name.clone(),
        org: a.org.clone(),
    };
    gauge_family(
        &mut reg,
        "gigafab_allocation_queued_jobs",
        "Waiting jobs of the allocation",
        s.allocations.iter().map(|a| (alloc(a), a.queued as f64)),
    );
    gauge_family(
        &mut reg,
        "gigafab_allocation_oldest_wait_seconds",
        "Wait so far of the allocation's oldest waiting job (0: none waits)",
        s.allocations.iter().map(|a| (alloc(a), a.oldest_wait_s)),
    );
    gauge_family(
        &mut reg,
        "gigafab_allocation_used_gpu_hours",
        "GPU-hours used by the allocation, running jobs included",
        s.allocations.iter().map(|a| (alloc(a), a.used_gpu_hours)),
    );
    gauge_family(
        &mut reg,
        "gigafab_allocation_granted_gpu_hours",
        "GPU-hours granted to the allocation",
        s.allocations
            .iter()
            .map(|a| (alloc(a), a.granted_gpu_hours)),
    );
    gauge_family(
        &mut reg,
        "gigafab_allocation_energy_kwh",
        "Energy of the allocation's ended jobs, kWh",
        s.allocations.iter().map(|a| (alloc(a), a.energy_kwh)),
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges_with_their_labels() {
        let m = Metrics::default();
        m.jobs_submitted.inc();
        m.finished("completed");
        m.finished("completed");
        m.schedule_pass_seconds.observe(0.002);
        let s = Snapshot {
            pools: vec![PoolSnap {
                name: "h100".into(),
                queued: 3,
                oldest_wait_s: 12.5,
                busy: 2,
                idle: 1,
                drained: 1,
                down: 0,
                powered_down: 4,
            }],
            sites: vec![SiteSnap {
                name: "local".into(),
                power_w: 1500.0,
                budget_w: Some(2e6),
                intensity: Some(56.0),
                carbon_g: None,
            }],
            allocations: vec![AllocSnap {
                id: 1,
                name: "default".into(),
                org: "default".into(),
                queued: 3,
                oldest_wait_s: 12.5,
                used_gpu_hours: 0.25,
                granted_gpu_hours: 100.0,
                energy_kwh: 1.5,
            }],
            queued: 3,
            running: 1,
            health: vec![("healthy".into(), 3), ("draining".into(), 1)],
            devices: vec![DeviceSnap {
                node: "h100-0".into(),
                gpu: 1,
                temperature_c: Some(61.0),
                power_w: Some(420.0),
            }],
        };
        let t = render(&m, &s);
        for line in [
            "gigafab_jobs_submitted_total 1",
            "gigafab_jobs_finished_total{state=\"completed\"} 2",
            "gigafab_schedule_pass_seconds_count 1",
            "gigafab_pool_queued_jobs{pool=\"h100\"} 3.0",
            "gigafab_pool_oldest_wait_seconds{pool=\"h100\"} 12.5",
            "gigafab_accelerators{pool=\"h100\",state=\"drained\"} 1.0",
            "gigafab_site_power_watts{site=\"local\"} 1500.0",
            "gigafab_accelerators{pool=\"h100\",state=\"powered_down\"} 4.0",
            "gigafab_site_carbon_intensity_grams_per_kwh{site=\"local\"} 56.0",
            "gigafab_gpu_temperature_celsius{node=\"h100-0\",gpu=\"1\"} 61.0",
            "gigafab_site_power_budget_watts{site=\"local\"} 2000000.0",
            "gigafab_allocation_used_gpu_hours{id=\"1\",allocation=\"default\",org=\"default\"} 0.25",
            "gigafab_jobs_queued 3",
            "gigafab_jobs_running 1",
        ] {
            assert!(t.lines().any(|l| l == line), "missing `{line}` in\n{t}");
        }
        assert!(t.ends_with("# EOF\n"));
    }
}
