//! Model endpoints in the twin: request streams served by replicas that
//! the scheduler places like any job, scaled by the autoscaler the live
//! server uses (`gigafab_core::serving::decide`).
//!
//! An endpoints file (`gigafab sim --endpoints FILE`) is TOML, one
//! `[[endpoint]]` table each (docs/endpoints.md lists the keys). Each
//! endpoint's requests come from a request trace (Azure's 2023 LLM
//! inference traces are embedded as `builtin:azure-conv` and
//! `builtin:azure-code`), replayed as they are or, with `diurnal`, its
//! hour repeated over `days` days following a daily curve.
//!
//! How a request is served: the gateway sends it to the ready replica
//! with the fewest requests in flight that has room in its batch; when
//! none has, it waits in the endpoint's queue (bounded; a request that
//! waits past `queue_timeout_s` fails). A replica serves a request in the
//! time of `gigafab_core::serving::ReplicaPerf` for its accelerator type,
//! decoded in a batch of the requests it has in flight when the request is
//! admitted. A replica that is preempted or fails sends its requests back
//! to the queue (they count as retried).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;

use gigafab_core::serving::{
    self, ReplicaPerf, ScaleDecision, ScalePolicy, ScaleReason, ScaleState,
};
use gigafab_core::{AllocIdx, Category, JobIdx, JobSpec, JobState, Rng, SchedCore, TypeFilter};
use serde::{Deserialize, Serialize};

use crate::workload::requests::{self, Request};

/// One endpoint as an endpoints file describes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Its name (unique in the file).
    pub name: String,
    /// Tenant organisation it is charged to (default `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub category: Option<Category>,
    /// Size of the model served, billions of parameters (16-bit weights).
    pub model_params_b: f64,
    /// Accelerators per replica.
    #[serde(default = "one")]
    pub gpus: u32,
    /// Accelerators accepted, in the workload files' `types` form
    /// (`h100|mi300x`, `vendor:amd`, `site:paris`); types too small for
    /// the weights are left out by themselves.
    #[serde(default)]
    pub types: String,
    /// Priority class (as jobs'); see `serving::replica_rank`.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub min_replicas: u32,
    #[serde(default = "four")]
    pub max_replicas: u32,
    /// Requests in flight per replica the autoscaler aims at.
    #[serde(default = "eight")]
    pub target_inflight: f64,
    /// Most requests one replica serves at once (its batch).
    #[serde(default = "max_batch")]
    pub max_batch: u32,
    #[serde(default = "idle_to_zero")]
    pub idle_to_zero_s: f64,
    #[serde(default = "scale_down_delay")]
    pub scale_down_delay_s: f64,
    /// Seconds from a replica's start to its first answer (loading the
    /// weights, warming up).
    #[serde(default = "cold_start")]
    pub cold_start_s: f64,
    /// Most requests held while no replica has room.
    #[serde(default = "queue_limit")]
    pub queue_limit: u32,
    /// Seconds a held request waits before it fails.
    #[serde(default = "queue_timeout")]
    pub queue_timeout_s: f64,
    /// Seconds between two decisions of the autoscaler.
    #[serde(default = "tick")]
    pub tick_s: f64,
    /// The request trace (`builtin:azure-conv`, `builtin:azure-code`, or
    /// a file).
    pub requests: String,
    /// Multiplies the trace's request rate.
    #[serde(default = "one_f")]
    pub rate: f64,
    /// Repeat the trace's first hour over `days` days, its rate following
    /// a daily curve (a tenth of the peak at 04:00, the peak at 16:00).
    #[serde(default)]
    pub diurnal: bool,
    #[serde(default = "one")]
    pub days: u32,
    /// When the endpoint is created (its minimum replicas start then) and
    /// its trace begins, s after the workload's start.
    #[serde(default)]
    pub start_s: f64,
}

fn one() -> u32 {
    1
}
fn four() -> u32 {
    4
}
fn eight() -> f64 {
    8.0
}
fn one_f() -> f64 {
    1.0
}
fn max_batch() -> u32 {
    32
}
fn idle_to_zero() -> f64 {
    600.0
}
fn scale_down_delay() -> f64 {
    120.0
}
fn cold_start() -> f64 {
    60.0
}
fn queue_limit() -> u32 {
    1000
}
fn queue_timeout() -> f64 {
    60.0
}
fn tick() -> f64 {
    10.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointsFile {
    #[serde(default)]
    endpoint: Vec<EndpointSpec>,
}

/// An endpoints file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: endpoint `{name}`: {message}")]
    Endpoint {
        file: String,
        name: String,
        message: String,
    },
}

/// Latest an endpoint may start or wait, s (the engine's bound on a
/// workload's times, ~31.7 years).
pub const MAX_TIME_S: f64 = 1e9;

/// Most days of requests an endpoint may ask for.
pub const MAX_DAYS: u32 = 366;

impl EndpointSpec {
    /// The autoscaler's policy of this endpoint.
    pub fn scale_policy(&self) -> ScalePolicy {
        ScalePolicy {
            min_replicas: self.min_replicas,
            max_replicas: self.max_replicas,
            target_inflight: self.target_inflight,
            idle_to_zero_s: self.idle_to_zero_s,
            scale_down_delay_s: self.scale_down_delay_s,
        }
    }

    /// `Err` with what is wrong.
    pub fn check(&self) -> Result<(), String> {
        check_name(&self.name)?;
        self.scale_policy().check()?;
        TypeFilter::parse(&self.types).map_err(|m| format!("types: {m}"))?;
        if !(self.model_params_b.is_finite() && self.model_params_b > 0.0) {
            return Err("model_params_b must be a positive number".into());
        }
        if self.gpus == 0 || self.gpus > 4096 {
            return Err("gpus must be 1 to 4096".into());
        }
        if self.max_batch == 0 {
            return Err("max_batch must be at least 1".into());
        }
        for (k, v) in [
            ("cold_start_s", self.cold_start_s),
            ("queue_timeout_s", self.queue_timeout_s),
            ("start_s", self.start_s),
        ] {
            if !(v.is_finite() && (0.0..=MAX_TIME_S).contains(&v)) {
                return Err(format!("{k} must be finite and >= 0"));
            }
        }
        if !(self.tick_s.is_finite() && self.tick_s >= 0.1) {
            return Err("tick_s must be at least 0.1".into());
        }
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1000.0) {
            return Err("rate must be above 0 and at most 1000".into());
        }
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(format!("days must be 1 to {MAX_DAYS}"));
        }
        Ok(())
    }

    /// Its type filter, with types too small for the weights left out.
    pub fn filter(&self) -> TypeFilter {
        let mut f = TypeFilter::parse(&self.types).unwrap_or_default();
        let need = self.model_params_b * 2.0 / (self.gpus as f64 * serving::WEIGHT_MEMORY_SHARE);
        f.min_memory_gb = Some(f.min_memory_gb.unwrap_or(0.0).max(need));
        f
    }
}

/// An endpoint's name: 1 to 63 lower-case letters, digits, `-`, `_` or
/// `.`, starting with a letter or digit (as the server's names).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad name `{name}`: 1 to 63 lower-case letters, digits, `-`, `_` or `.`, starting with a letter or digit"
        ))
    }
}

/// Parses an endpoints file; `file` names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<EndpointSpec>, EndpointError> {
    let f: EndpointsFile = toml::from_str(text).map_err(|e| EndpointError::File {
        file: file.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    if f.endpoint.is_empty() {
        return Err(EndpointError::File {
            file: file.into(),
            message: "no [[endpoint]] table".into(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for e in &f.endpoint {
        let bad = |message: String| EndpointError::Endpoint {
            file: file.into(),
            name: e.name.clone(),
            message,
        };
        e.check().map_err(bad)?;
        if !seen.insert(e.name.as_str()) {
            return Err(bad("a second endpoint of that name".into()));
        }
    }
    Ok(f.endpoint)
}

/// Reads an endpoints file (`builtin:` names work too).
pub fn read(path: &Path) -> Result<Vec<EndpointSpec>, EndpointError> {
    let file = path.display().to_string();
    let text = crate::files::read_to_string(path).map_err(|e| EndpointError::File {
        file: file.clone(),
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, &file)
}

/// The daily curve: the share of the peak rate at hour `h` (0..24).
pub fn diurnal_share(h: f64) -> f64 {
    let x = std::f64::consts::PI * (h - 4.0) / 24.0;
    0.1 + 0.9 * x.sin().powi(2)
}

/// The requests of one endpoint, in order: its trace at `rate`, or its
/// trace's first hour over `days` days following [`diurnal_share`].
/// Thinning and copies draw from `rng`.
pub fn expand(spec: &EndpointSpec, trace: &[Request], rng: &mut Rng) -> Vec<Request> {
    let mut out = Vec::new();
    let mut take = |t: f64, r: &Request, share: f64, rng: &mut Rng| {
        let x = share * spec.rate;
        let mut copies = x.floor() as u32;
        if rng.f64() < x - x.floor() {
            copies += 1;
        }
        for c in 0..copies {
            // copies spread over the second they arrive in
            let dt = if c == 0 { 0.0 } else { rng.f64() };
            out.push(Request {
                t_s: spec.start_s + t + dt,
                ..*r
            });
        }
    };
    if !spec.diurnal {
        for r in trace {
            take(r.t_s, r, 1.0, rng);
        }
    } else {
        let hour: Vec<&Request> = trace.iter().take_while(|r| r.t_s < 3600.0).collect();
        for d in 0..spec.days {
            for h in 0..24 {
                let share = diurnal_share(h as f64 + 0.5);
                let base = (d * 24 + h) as f64 * 3600.0;
                for r in &hour {
                    take(base + r.t_s, r, share, rng);
                }
            }
        }
    }
    out.sort_by(|a, b| a.t_s.total_cmp(&b.t_s));
    out
}

/// An endpoint ready to simulate: its description and its requests.
#[derive(Debug, Clone)]
pub struct EndpointInput {
    pub spec: EndpointSpec,
    pub requests: Vec<Request>,
}

/// Reads each endpoint's trace and expands its requests (seeded by
/// `seed`, one stream per endpoint).
pub fn prepare(specs: Vec<EndpointSpec>, seed: u64) -> Result<Vec<EndpointInput>, EndpointError> {
    let mut traces: HashMap<String, Vec<Request>> = HashMap::new();
    let mut rng = Rng::new(seed ^ 0x5e4e_1ce5);
    let mut out = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        if !traces.contains_key(&spec.requests) {
            let t =
                requests::read(Path::new(&spec.requests)).map_err(|e| EndpointError::Endpoint {
                    file: spec.requests.clone(),
                    name: spec.name.clone(),
                    message: e.to_string(),
                })?;
            traces.insert(spec.requests.clone(), t.requests);
        }
        let mut r = rng.fork(i as u64 + 1);
        let requests = expand(&spec, &traces[&spec.requests], &mut r);
        out.push(EndpointInput { spec, requests });
    }
    Ok(out)
}

/// What the twin measured of one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub name: String,
    pub requests: u64,
    pub served: u64,
    /// Refused: the queue was full.
    pub rejected: u64,
    /// Waited in the queue past `queue_timeout_s`.
    pub timed_out: u64,
    /// Sent back to the queue by a replica's preemption or failure.
    pub retried: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// Time to first token of served requests, s (queue wait included).
    pub ttft_p50_s: f64,
    pub ttft_p95_s: f64,
    pub ttft_p99_s: f64,
    /// Time to the last token, s.
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    pub latency_p99_s: f64,
    /// Scale-ups from zero replicas.
    pub cold_starts: u64,
    /// Requests that arrived while no replica was ready.
    pub cold_requests: u64,
    /// Most replicas held at once.
    pub peak_replicas: u32,
    /// Replica-hours held (from each start, cold start included).
    pub replica_hours: f64,
    pub gpu_hours: f64,
    /// Replicas' energy, kWh (site PUE included, as jobs').
    pub energy_kwh: f64,
    /// Replicas' carbon, kg (None where no site has a grid intensity).
    pub carbon_kg: Option<f64>,
    /// Replica runs stopped by preemption.
    pub preempted: u64,
    /// The autoscaler's changes, by reason.
    pub scale_events: BTreeMap<String, u64>,
}

/// An endpoint event in the engine's queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum EpEv {
    /// The request in flight slot `slot` (generation `gen`) is answered.
    Done { slot: u32, generation: u32 },
    /// Replica `rid` of endpoint `ep` (run `epoch`) has loaded its model.
    Ready { ep: u32, rid: u32, epoch: u32 },
    /// The autoscaler looks at endpoint `ep`.
    Tick { ep: u32 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RState {
    /// Asked of the scheduler, not running.
    Waiting,
    /// Running, loading its model.
    Starting,
    Ready,
    Gone,
}

#[derive(Debug, Clone)]
struct Replica {
    job: JobIdx,
    epoch: u32,
    state: RState,
    /// Taking no new requests; stops when its last one is answered.
    draining: bool,
    inflight: u32,
    perf: Option<ReplicaPerf>,
    started_at: f64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    arrival: f64,
    prompt: u32,
    output: u32,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    ep: u32,
    rid: u32,
    generation: u32,
    live: bool,
    held: Held,
    first_token: f64,
}

struct Ep {
    spec: EndpointSpec,
    policy: ScalePolicy,
    filter: TypeFilter,
    alloc: AllocIdx,
    requests: Vec<Request>,
    next: usize,
    replicas: Vec<Replica>,
    /// Replicas not gone.
    active: Vec<u32>,
    queue: VecDeque<Held>,
    scale: ScaleState,
    in_flight: u32,
    ticking: bool,
    // measures
    served: u64,
    rejected: u64,
    timed_out: u64,
    retried: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    ttft: Vec<f32>,
    latency: Vec<f32>,
    cold_starts: u64,
    cold_requests: u64,
    peak: u32,
    replica_s: f64,
    preempted: u64,
    scale_events: BTreeMap<&'static str, u64>,
}

/// Every endpoint of a simulation.
pub(crate) struct Endpoints {
    eps: Vec<Ep>,
    by_job: HashMap<JobIdx, (u32, u32)>,
    flights: Vec<Flight>,
    free: Vec<u32>,
    /// (time, endpoint) of each endpoint's next request, earliest first.
    arrivals: std::collections::BinaryHeap<std::cmp::Reverse<(OrdF64, u32)>>,
    /// The scheduler's state changed (a pass is due).
    pub dirty: bool,
}

#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl Endpoints {
    /// The endpoints of `inputs`, charged to allocations that `alloc`
    /// gives for a tenant and category.
    pub fn new(
        inputs: &[EndpointInput],
        alloc: &mut dyn FnMut(&str, Category) -> AllocIdx,
    ) -> Endpoints {
        let mut eps = Vec::new();
        let mut arrivals = std::collections::BinaryHeap::new();
        for (i, inp) in inputs.iter().enumerate() {
            let s = &inp.spec;
            let a = alloc(
                s.tenant.as_deref().unwrap_or("default"),
                s.category.unwrap_or(Category::Academia),
            );
            if let Some(r) = inp.requests.first() {
                arrivals.push(std::cmp::Reverse((OrdF64(r.t_s), i as u32)));
            }
            eps.push(Ep {
                policy: s.scale_policy(),
                filter: s.filter(),
                alloc: a,
                requests: inp.requests.clone(),
                next: 0,
                replicas: Vec::new(),
                active: Vec::new(),
                queue: VecDeque::new(),
                scale: ScaleState::default(),
                in_flight: 0,
                ticking: false,
                served: 0,
                rejected: 0,
                timed_out: 0,
                retried: 0,
                prompt_tokens: 0,
                output_tokens: 0,
                ttft: Vec::new(),
                latency: Vec::new(),
                cold_starts: 0,
                cold_requests: 0,
                peak: 0,
                replica_s: 0.0,
                preempted: 0,
                scale_events: BTreeMap::new(),
                spec: s.clone(),
            });
        }
        Endpoints {
            eps,
            by_job: HashMap::new(),
            flights: Vec::new(),
            free: Vec::new(),
            arrivals,
            dirty: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.eps.is_empty()
    }

    /// Whether `j` is a replica.
    pub fn is_replica(&self, j: JobIdx) -> bool {
        self.by_job.contains_key(&j)
    }

    /// When the next request arrives.
    pub fn next_arrival(&self) -> Option<f64> {
        self.arrivals.peek().map(|r| r.0.0.0)
    }

    /// Whether every request has arrived and been answered or failed,
    /// and the autoscaler has nothing left to do.
    pub fn quiet(&self) -> bool {
        self.arrivals.is_empty()
            && self
                .eps
                .iter()
                .all(|e| e.in_flight == 0 && e.queue.is_empty() && !e.ticking)
    }

    /// Each endpoint comes at its `start_s` (its minimum replicas then).
    pub fn start(&mut self, now: f64, out: &mut Vec<(f64, EpEv)>) {
        for (ep, e) in self.eps.iter_mut().enumerate() {
            e.ticking = true;
            out.push((e.spec.start_s.max(now), EpEv::Tick { ep: ep as u32 }));
        }
    }

    /// The requests arriving at `now`.
    pub fn arrive(&mut self, core: &mut SchedCore, now: f64, out: &mut Vec<(f64, EpEv)>) {
        while let Some(std::cmp::Reverse((OrdF64(t), ep))) = self.arrivals.peek().copied() {
            if t > now {
                break;
            }
            self.arrivals.pop();
            let e = &mut self.eps[ep as usize];
            let r = e.requests[e.next];
            e.next += 1;
            if let Some(n) = e.requests.get(e.next) {
                self.arrivals.push(std::cmp::Reverse((OrdF64(n.t_s), ep)));
            }
            e.scale.last_request_s = Some(now);
            let held = Held {
                arrival: now,
                prompt: r.prompt_tokens,
                output: r.output_tokens,
            };
            if !e
                .active
                .iter()
                .any(|&r| e.replicas[r as usize].state == RState::Ready)
            {
                e.cold_requests += 1;
            }
            if let Some(rid) = self.route(ep) {
                self.admit(ep, rid, held, now, out);
            } else if self.eps[ep as usize].queue.len()
                < self.eps[ep as usize].spec.queue_limit as usize
            {
                let e = &mut self.eps[ep as usize];
                e.queue.push_back(held);
                if e.scale.replicas == 0 {
                    // at zero: the autoscaler need not wait for its tick
                    self.tick(core, ep, now, out);
                }
            } else {
                self.eps[ep as usize].rejected += 1;
            }
            if !self.eps[ep as usize].ticking {
                self.eps[ep as usize].ticking = true;
                let t = self.eps[ep as usize].spec.tick_s;
                out.push((now + t, EpEv::Tick { ep }));
            }
        }
    }

    /// The ready replica with the fewest requests in flight and room.
    fn route(&self, ep: u32) -> Option<u32> {
        let e = &self.eps[ep as usize];
        let mut best: Option<(u32, u32)> = None;
        for &rid in &e.active {
            let r = &e.replicas[rid as usize];
            if r.state == RState::Ready
                && !r.draining
                && r.inflight < e.spec.max_batch
                && best.is_none_or(|(_, n)| r.inflight < n)
            {
                best = Some((rid, r.inflight));
            }
        }
        best.map(|b| b.0)
    }

    fn admit(&mut self, ep: u32, rid: u32, held: Held, now: f64, out: &mut Vec<(f64, EpEv)>) {
        let e = &mut self.eps[ep as usize];
        let r = &mut e.replicas[rid as usize];
        r.inflight += 1;
        e.in_flight += 1;
        let perf = r.perf.expect("a ready replica has its model");
        let (first, last) = perf.request_s(held.prompt, held.output, r.inflight);
        let f = Flight {
            ep,
            rid,
            generation: 0,
            live: true,
            held,
            first_token: now + first,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                let g = self.flights[s as usize].generation.wrapping_add(1);
                self.flights[s as usize] = Flight { generation: g, ..f };
                s
            }
            None => {
                self.flights.push(f);
                (self.flights.len() - 1) as u32
            }
        };
        let generation = self.flights[slot as usize].generation;
        out.push((now + last, EpEv::Done { slot, generation }));
    }

    /// Sends held requests to replicas with room, oldest first; requests
    /// held too long fail.
    fn dispatch(&mut self, ep: u32, now: f64, out: &mut Vec<(f64, EpEv)>) {
        self.expire(ep, now);
        while !self.eps[ep as usize].queue.is_empty() {
            let Some(rid) = self.route(ep) else { break };
            let h = self.eps[ep as usize].queue.pop_front().expect("not empty");
            self.admit(ep, rid, h, now, out);
        }
    }

    fn expire(&mut self, ep: u32, now: f64) {
        let e = &mut self.eps[ep as usize];
        while e
            .queue
            .front()
            .is_some_and(|h| now - h.arrival > e.spec.queue_timeout_s)
        {
            e.queue.pop_front();
            e.timed_out += 1;
        }
    }

    /// Handles one endpoint event.
    pub fn on_event(
        &mut self,
        core: &mut SchedCore,
        ev: EpEv,
        now: f64,
        out: &mut Vec<(f64, EpEv)>,
    ) {
        match ev {
            EpEv::Done { slot, generation } => {
                let f = self.flights[slot as usize];
                if !f.live || f.generation != generation {
                    return;
                }
                self.flights[slot as usize].live = false;
                self.free.push(slot);
                let e = &mut self.eps[f.ep as usize];
                e.served += 1;
                e.in_flight -= 1;
                e.prompt_tokens += f.held.prompt as u64;
                e.output_tokens += f.held.output as u64;
                e.ttft.push((f.first_token - f.held.arrival) as f32);
                e.latency.push((now - f.held.arrival) as f32);
                let r = &mut e.replicas[f.rid as usize];
                r.inflight -= 1;
                if r.draining && r.inflight == 0 {
                    self.stop(core, f.ep, f.rid, now);
                } else {
                    self.dispatch(f.ep, now, out);
                }
            }
            EpEv::Ready { ep, rid, epoch } => {
                let e = &mut self.eps[ep as usize];
                let r = &mut e.replicas[rid as usize];
                let job = &core.jobs[r.job as usize];
                if r.state != RState::Starting
                    || r.epoch != epoch
                    || job.state != JobState::Running
                    || job.epoch != epoch
                {
                    return;
                }
                r.state = RState::Ready;
                self.dispatch(ep, now, out);
            }
            EpEv::Tick { ep } => {
                self.eps[ep as usize].ticking = false;
                self.tick(core, ep, now, out);
                let e = &mut self.eps[ep as usize];
                // keep looking while requests are to come or in hand
                let more = e.next < e.requests.len()
                    || e.in_flight > 0
                    || !e.queue.is_empty()
                    || e.scale.replicas > e.policy.min_replicas;
                if more {
                    e.ticking = true;
                    out.push((now + e.spec.tick_s, EpEv::Tick { ep }));
                }
            }
        }
    }

    /// One decision of the autoscaler for endpoint `ep`, carried out.
    fn tick(&mut self, core: &mut SchedCore, ep: u32, now: f64, _out: &mut Vec<(f64, EpEv)>) {
        self.expire(ep, now);
        let e = &mut self.eps[ep as usize];
        e.scale.in_flight = e.in_flight;
        e.scale.queued = e.queue.len() as u32;
        let d: ScaleDecision = serving::decide(&e.scale, &e.policy, now);
        let held = e.scale.replicas;
        e.scale = d.apply(&e.scale);
        if d.replicas == held {
            return;
        }
        *e.scale_events.entry(d.reason.code()).or_insert(0) += 1;
        if d.reason == ScaleReason::ColdStart {
            e.cold_starts += 1;
        }
        if d.replicas > held {
            self.grow(core, ep, d.replicas - held, now);
        } else {
            self.shrink(core, ep, held - d.replicas, now);
        }
        let e = &mut self.eps[ep as usize];
        e.peak = e.peak.max(e.scale.replicas);
    }

    fn grow(&mut self, core: &mut SchedCore, ep: u32, mut n: u32, now: f64) {
        let e = &mut self.eps[ep as usize];
        // draining replicas come back first
        for &rid in &e.active {
            if n == 0 {
                break;
            }
            let r = &mut e.replicas[rid as usize];
            if r.draining {
                r.draining = false;
                n -= 1;
            }
        }
        for _ in 0..n {
            let k = e
                .active
                .iter()
                .filter(|&&r| !e.replicas[r as usize].draining)
                .count() as u32;
            let (priority, preemptible) =
                serving::replica_rank(e.spec.priority, e.policy.min_replicas, k);
            let rid = e.replicas.len() as u32;
            let spec = JobSpec {
                priority,
                preemptible,
                types: e.filter.clone(),
                tenant: e.spec.tenant.clone(),
                category: e.spec.category,
                ..JobSpec::simple(
                    format!("{}/replica-{rid}", e.spec.name),
                    now,
                    e.spec.gpus,
                    1.0,
                )
            };
            let j = core.submit_service(&spec, e.alloc, now);
            self.dirty = true;
            let state = if core.jobs[j as usize].state == JobState::Cancelled {
                RState::Gone
            } else {
                RState::Waiting
            };
            e.replicas.push(Replica {
                job: j,
                epoch: 0,
                state,
                draining: false,
                inflight: 0,
                perf: None,
                started_at: now,
            });
            if state == RState::Gone {
                // it can never be placed: counted, not kept
                *e.scale_events.entry("unplaceable").or_insert(0) += 1;
                e.scale.replicas -= 1;
            } else {
                e.active.push(rid);
                self.by_job.insert(j, (ep, rid));
            }
        }
    }

    fn shrink(&mut self, core: &mut SchedCore, ep: u32, n: u32, now: f64) {
        let e = &self.eps[ep as usize];
        // the cheapest to give back first: not placed, loading, then the
        // preemptible (above min), the least busy, the newest
        let mut order: Vec<u32> = e
            .active
            .iter()
            .copied()
            .filter(|&r| !e.replicas[r as usize].draining)
            .collect();
        order.sort_by_key(|&rid| {
            let r = &e.replicas[rid as usize];
            let stage = match r.state {
                RState::Waiting => 0,
                RState::Starting => 1,
                _ => 2,
            };
            let pre = !core.jobs[r.job as usize].preemptible;
            (stage, pre, r.inflight, std::cmp::Reverse(rid))
        });
        for &rid in order.iter().take(n as usize) {
            let r = &mut self.eps[ep as usize].replicas[rid as usize];
            if r.inflight > 0 {
                r.draining = true;
            } else {
                self.stop(core, ep, rid, now);
            }
        }
    }

    /// Gives replica `rid` back to the scheduler.
    fn stop(&mut self, core: &mut SchedCore, ep: u32, rid: u32, now: f64) {
        let e = &mut self.eps[ep as usize];
        let r = &mut e.replicas[rid as usize];
        match r.state {
            RState::Waiting => {
                core.withdraw(r.job, now);
            }
            RState::Starting | RState::Ready => {
                e.replica_s += (now - r.started_at).max(0.0);
                core.end_run(r.job, now, JobState::Completed);
            }
            RState::Gone => return,
        }
        r.state = RState::Gone;
        self.by_job.remove(&r.job);
        e.active.retain(|&x| x != rid);
        self.dirty = true;
    }

    /// A replica's run ended without being asked (preempted, failed):
    /// its requests go back to the queue, first.
    fn lost(&mut self, core: &mut SchedCore, j: JobIdx, now: f64) {
        let Some(&(ep, rid)) = self.by_job.get(&j) else {
            return;
        };
        let e = &mut self.eps[ep as usize];
        let r = &mut e.replicas[rid as usize];
        if !matches!(r.state, RState::Starting | RState::Ready) {
            return;
        }
        e.replica_s += (now - r.started_at).max(0.0);
        r.state = RState::Waiting;
        r.inflight = 0;
        let mut back = Vec::new();
        for (s, f) in self.flights.iter_mut().enumerate() {
            if f.live && f.ep == ep && f.rid == rid {
                f.live = false;
                back.push((f.held, s as u32));
            }
        }
        back.sort_by(|a, b| a.0.arrival.total_cmp(&b.0.arrival));
        for (h, s) in back.into_iter().rev() {
            e.queue.push_front(h);
            e.retried += 1;
            e.in_flight -= 1;
            self.free.push(s);
        }
        if e.replicas[rid as usize].draining {
            // it was on its way out: not run again
            core.withdraw(j, now);
            e.replicas[rid as usize].state = RState::Gone;
            e.active.retain(|&x| x != rid);
            self.by_job.remove(&j);
            self.dirty = true;
        }
    }

    /// After the events at `now`: replicas whose runs a failure or an
    /// alarm stopped.
    pub fn check_runs(&mut self, core: &mut SchedCore, now: f64) {
        let mut lost = Vec::new();
        for e in &self.eps {
            for &rid in &e.active {
                let r = &e.replicas[rid as usize];
                if matches!(r.state, RState::Starting | RState::Ready) {
                    let job = &core.jobs[r.job as usize];
                    if job.state != JobState::Running || job.epoch != r.epoch {
                        lost.push(r.job);
                    }
                }
            }
        }
        for j in lost {
            self.lost(core, j, now);
            self.after_loss(core, j);
        }
    }

    /// A lost replica the scheduler will not run again is gone.
    fn after_loss(&mut self, core: &SchedCore, j: JobIdx) {
        let st = core.jobs[j as usize].state;
        if matches!(st, JobState::Waiting | JobState::Running) {
            return;
        }
        if let Some((ep, rid)) = self.by_job.remove(&j) {
            let e = &mut self.eps[ep as usize];
            let r = &mut e.replicas[rid as usize];
            r.state = RState::Gone;
            e.active.retain(|&x| x != rid);
            if !r.draining {
                e.scale.replicas = e.scale.replicas.saturating_sub(1);
            }
        }
    }

    /// What a scheduling pass did to replicas: started, preempted or
    /// cancelled them.
    pub fn after_pass(
        &mut self,
        core: &mut SchedCore,
        started: &[JobIdx],
        preempted: &[(JobIdx, f64)],
        cancelled: &[JobIdx],
        now: f64,
        out: &mut Vec<(f64, EpEv)>,
    ) {
        for &(j, _) in preempted {
            if let Some(&(ep, _)) = self.by_job.get(&j) {
                self.eps[ep as usize].preempted += 1;
                self.lost(core, j, now);
            }
        }
        for &j in cancelled {
            self.lost(core, j, now);
            self.after_loss(core, j);
        }
        for &j in started {
            let Some(&(ep, rid)) = self.by_job.get(&j) else {
                continue;
            };
            let job = &core.jobs[j as usize];
            let e = &mut self.eps[ep as usize];
            let pool = &core.factory.pools[job.run_pool as usize];
            let t = core.factory.catalog.get(pool.accel);
            let figures = serving::accelerator_perf(&t.id).unwrap_or_else(|| {
                // a type without figures: an H100's, by its billing weight
                let (bw, fl) = serving::accelerator_perf("h100").expect("known");
                (bw * t.billing_weight, fl * t.billing_weight)
            });
            let r = &mut e.replicas[rid as usize];
            r.perf =
                ReplicaPerf::new(e.spec.model_params_b, e.spec.gpus, figures, t.memory_gb).ok();
            let begin = job.run_start.max(now);
            r.state = RState::Starting;
            r.epoch = job.epoch;
            r.started_at = now;
            if r.perf.is_none() {
                // cannot hold the weights (the filter keeps this out)
                continue;
            }
            out.push((
                begin + e.spec.cold_start_s,
                EpEv::Ready {
                    ep,
                    rid,
                    epoch: job.epoch,
                },
            ));
        }
    }

    /// Stops every replica at `now` and reports each endpoint.
    pub fn finish(mut self, core: &mut SchedCore, now: f64) -> Vec<EndpointReport> {
        for ep in 0..self.eps.len() {
            let active = self.eps[ep].active.clone();
            for rid in active {
                self.stop(core, ep as u32, rid, now);
            }
            let e = &mut self.eps[ep];
            e.timed_out += e.queue.len() as u64;
            e.queue.clear();
        }
        let carbon = core.factory.sites.iter().any(|s| s.carbon.is_some());
        self.eps
            .into_iter()
            .map(|mut e| {
                let (mut kwh, mut kg) = (0.0, 0.0);
                for r in &e.replicas {
                    let job = &core.jobs[r.job as usize];
                    kwh += job.energy_j / 3.6e6;
                    kg += job.carbon_g / 1e3;
                }
                let q = |v: &mut Vec<f32>, p: f64| -> f64 {
                    if v.is_empty() {
                        return 0.0;
                    }
                    let k = ((v.len() - 1) as f64 * p).round() as usize;
                    let (_, x, _) = v.select_nth_unstable_by(k, f32::total_cmp);
                    *x as f64
                };
                let mut scale_events: BTreeMap<String, u64> = e
                    .scale_events
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect();
                scale_events.retain(|_, v| *v > 0);
                EndpointReport {
                    requests: e.requests.len() as u64,
                    served: e.served,
                    rejected: e.rejected,
                    timed_out: e.timed_out,
                    retried: e.retried,
                    prompt_tokens: e.prompt_tokens,
                    output_tokens: e.output_tokens,
                    ttft_p50_s: q(&mut e.ttft, 0.5),
                    ttft_p95_s: q(&mut e.ttft, 0.95),
                    ttft_p99_s: q(&mut e.ttft, 0.99),
                    latency_p50_s: q(&mut e.latency, 0.5),
                    latency_p95_s: q(&mut e.latency, 0.95),
                    latency_p99_s: q(&mut e.latency, 0.99),
                    cold_starts: e.cold_starts,
                    cold_requests: e.cold_requests,
                    peak_replicas: e.peak,
                    replica_hours: e.replica_s / 3600.0,
                    gpu_hours: e.replica_s * e.spec.gpus as f64 / 3600.0,
                    energy_kwh: kwh,
                    carbon_kg: carbon.then_some(kg),
                    preempted: e.preempted,
                    scale_events,
                    name: e.spec.name,
                }
            })
            .collect()
    }
}
