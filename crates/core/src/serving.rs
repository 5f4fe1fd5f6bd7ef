//! Model endpoints: the autoscaler, how replicas rank against training,
//! and how fast a replica serves requests.
//!
//! Everything here is a pure function of its inputs and `now`: the twin
//! and the live server call the same [`decide`] with the state they keep,
//! so an endpoint scales alike in both.

use serde::{Deserialize, Serialize};

/// How an endpoint scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalePolicy {
    /// Replicas kept whatever the load (0: the endpoint may scale to zero).
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Requests in flight (being served or held) one replica is meant to
    /// carry: the load over this is the replica count wanted.
    pub target_inflight: f64,
    /// Seconds without a request before an endpoint with `min_replicas`
    /// 0 gives back its last replica.
    pub idle_to_zero_s: f64,
    /// Seconds the load must stay below the replicas held before they
    /// are reduced (to the most the load asked for in that time).
    pub scale_down_delay_s: f64,
}

impl Default for ScalePolicy {
    fn default() -> Self {
        ScalePolicy {
            min_replicas: 0,
            max_replicas: 4,
            target_inflight: 8.0,
            idle_to_zero_s: 600.0,
            scale_down_delay_s: 120.0,
        }
    }
}

impl ScalePolicy {
    /// `Err` naming the field that is out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.max_replicas == 0 {
            return Err("max_replicas must be at least 1".into());
        }
        if self.min_replicas > self.max_replicas {
            return Err(format!(
                "min_replicas ({}) is above max_replicas ({})",
                self.min_replicas, self.max_replicas
            ));
        }
        if !(self.target_inflight.is_finite() && self.target_inflight > 0.0) {
            return Err("target_inflight must be a positive number".into());
        }
        for (name, v) in [
            ("idle_to_zero_s", self.idle_to_zero_s),
            ("scale_down_delay_s", self.scale_down_delay_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{name} must be finite and >= 0"));
            }
        }
        Ok(())
    }
}

/// What the autoscaler sees of an endpoint, and what it remembers between
/// decisions (`below_since`, `window_peak`: carried from the last
/// [`ScaleDecision`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ScaleState {
    /// Replicas asked for (ready, starting or waiting to be placed).
    pub replicas: u32,
    /// Requests being served.
    pub in_flight: u32,
    /// Requests held at the gateway for want of a ready replica.
    pub queued: u32,
    /// When the last request arrived.
    pub last_request_s: Option<f64>,
    /// Since when the load has asked for fewer replicas than held.
    pub below_since: Option<f64>,
    /// The most replicas the load asked for since `below_since`.
    pub window_peak: u32,
}

/// Why the autoscaler chose its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleReason {
    /// The load asks for more replicas than held.
    Load,
    /// Requests wait at zero replicas: the first replica starts.
    ColdStart,
    /// The load has stayed lower for the whole delay: fewer replicas.
    LoadFell,
    /// No request for `idle_to_zero_s`: the last replica goes.
    Idle,
    /// Held up to `min_replicas`.
    MinReplicas,
    /// Capped at `max_replicas`.
    MaxReplicas,
    /// The load is lower, but not for long enough yet.
    ScaleDownDelay,
    /// Nothing to change.
    Steady,
}

impl ScaleReason {
    /// The snake_case code of the reason (events and the API).
    pub fn code(self) -> &'static str {
        match self {
            ScaleReason::Load => "load",
            ScaleReason::ColdStart => "cold_start",
            ScaleReason::LoadFell => "load_fell",
            ScaleReason::Idle => "idle",
            ScaleReason::MinReplicas => "min_replicas",
            ScaleReason::MaxReplicas => "max_replicas",
            ScaleReason::ScaleDownDelay => "scale_down_delay",
            ScaleReason::Steady => "steady",
        }
    }
}

/// The replica count wanted now, why, and what to remember.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScaleDecision {
    pub replicas: u32,
    pub reason: ScaleReason,
    pub below_since: Option<f64>,
    pub window_peak: u32,
}

impl ScaleDecision {
    /// Whether the count changes.
    pub fn changes(&self, state: &ScaleState) -> bool {
        self.replicas != state.replicas
    }

    /// `state` as the next decision should see it (the count applied).
    pub fn apply(&self, state: &ScaleState) -> ScaleState {
        ScaleState {
            replicas: self.replicas,
            below_since: self.below_since,
            window_peak: self.window_peak,
            ..*state
        }
    }
}

/// The replica count an endpoint should have at `now`.
///
/// - The load (requests in flight and held) over `target_inflight`,
///   rounded up, is what it asks for; any load asks for one replica, and
///   so does a request within the last `idle_to_zero_s`.
/// - More than held: up at once (`load`, or `cold_start` from zero).
/// - Fewer: only once the load has asked for fewer for the whole
///   `scale_down_delay_s`, and then to the most it asked for in that time
///   (`load_fell`, or `idle` to zero). Until then `scale_down_delay`.
/// - Always within `min_replicas..=max_replicas`.
pub fn decide(state: &ScaleState, policy: &ScalePolicy, now: f64) -> ScaleDecision {
    let load = state.in_flight as f64 + state.queued as f64;
    let mut want = (load / policy.target_inflight).ceil().min(u32::MAX as f64) as u32;
    let recent = state
        .last_request_s
        .is_some_and(|t| now - t < policy.idle_to_zero_s);
    if want == 0 && (load > 0.0 || recent) {
        want = 1;
    }
    let (lo, hi) = (policy.min_replicas, policy.max_replicas.max(1));
    let clamp = |n: u32, why: ScaleReason| -> (u32, ScaleReason) {
        if n < lo {
            (lo, ScaleReason::MinReplicas)
        } else if n > hi {
            (hi, ScaleReason::MaxReplicas)
        } else {
            (n, why)
        }
    };
    let held = state.replicas;
    let done =
        |(replicas, reason): (u32, ScaleReason), below: Option<f64>, peak: u32| ScaleDecision {
            replicas,
            reason,
            below_since: below,
            window_peak: peak,
        };
    if held < lo || held > hi {
        // out of bounds (the policy changed): back within them at once
        return done(clamp(held, ScaleReason::Steady), None, 0);
    }
    if want > held {
        let why = if held == 0 {
            ScaleReason::ColdStart
        } else {
            ScaleReason::Load
        };
        let (n, r) = clamp(want, why);
        if n > held {
            return done((n, r), None, 0);
        }
        return done((held, r), None, 0);
    }
    if want == held || held == lo {
        let why = if want < held {
            ScaleReason::MinReplicas
        } else {
            ScaleReason::Steady
        };
        return done((held, why), None, 0);
    }
    // the load asks for fewer than held
    let since = state.below_since.unwrap_or(now);
    let peak = if state.below_since.is_some() {
        state.window_peak.max(want)
    } else {
        want
    };
    if now - since >= policy.scale_down_delay_s {
        let why = if peak == 0 {
            ScaleReason::Idle
        } else {
            ScaleReason::LoadFell
        };
        let (n, r) = clamp(peak, why);
        return done((n, r), None, 0);
    }
    done((held, ScaleReason::ScaleDownDelay), Some(since), peak)
}

/// How a replica ranks against training, for replica number `k` (0-based,
/// in the order they were asked for) of an endpoint of priority class
/// `priority` with `min_replicas`: its priority and whether it may be
/// preempted.
///
/// Replicas up to `min_replicas` are never preempted and rank one above
/// their class, so they go before, and may preempt, preemptible training
/// of their class; replicas above `min_replicas` rank at their class and
/// are preemptible by any higher-priority work.
pub fn replica_rank(priority: i32, min_replicas: u32, k: u32) -> (i32, bool) {
    if k < min_replicas {
        (priority.saturating_add(1), false)
    } else {
        (priority, true)
    }
}

/// Memory bandwidth (TB/s) and dense 16-bit tensor throughput (TFLOP/s)
/// of an accelerator type, from the vendors' datasheets; `None` for a type
/// gigafab has no figures for.
pub fn accelerator_perf(type_id: &str) -> Option<(f64, f64)> {
    Some(match type_id.to_ascii_lowercase().as_str() {
        "h100" => (3.35, 989.0),
        "h200" => (4.8, 989.0),
        "gh200" => (4.0, 989.0),
        "b200" => (8.0, 2250.0),
        "mi300x" => (5.3, 1307.0),
        "mi355x" => (8.0, 2500.0),
        "mi250x" => (3.2, 383.0),
        "a100" => (2.0, 312.0),
        "v100" => (0.9, 125.0),
        "a10" => (0.6, 125.0),
        "t4" => (0.32, 65.0),
        "p100" => (0.73, 18.7),
        "k80" => (0.48, 8.7),
        _ => return None,
    })
}

/// Share of the memory bandwidth a decode step reaches (weights streamed
/// once per step).
pub const MEMORY_EFFICIENCY: f64 = 0.6;
/// Share of the tensor throughput a prefill or a large batch reaches.
pub const COMPUTE_EFFICIENCY: f64 = 0.5;
/// Share of accelerator memory the weights may take (the rest is the
/// key-value cache and the runtime).
pub const WEIGHT_MEMORY_SHARE: f64 = 0.9;

/// A roofline model of one replica: a model of `params_b` billion
/// parameters in 16-bit weights on `gpus` accelerators of one type.
///
/// A decode step reads every weight once and computes two FLOPs per
/// parameter per sequence in the batch: it lasts the longer of the two. A
/// prefill of `p` tokens is one such step with `p` sequences.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaPerf {
    /// Seconds to stream the weights once.
    pub weights_s: f64,
    /// Seconds of compute per token.
    pub token_s: f64,
}

impl ReplicaPerf {
    /// The model of `params_b` billion parameters on `gpus` accelerators
    /// with `bw_tbs` TB/s and `tflops` TFLOP/s each, memory `memory_gb`
    /// each; `Err` when the weights do not fit.
    pub fn new(
        params_b: f64,
        gpus: u32,
        (bw_tbs, tflops): (f64, f64),
        memory_gb: f64,
    ) -> Result<ReplicaPerf, String> {
        if !(params_b.is_finite() && params_b > 0.0) {
            return Err("the model's size must be a positive number of billions".into());
        }
        let g = gpus.max(1) as f64;
        let weights_gb = params_b * 2.0;
        let room = memory_gb * g * WEIGHT_MEMORY_SHARE;
        if weights_gb > room {
            return Err(format!(
                "{weights_gb:.0} GB of weights do not fit in {gpus} × {memory_gb:.0} GB \
                 (at most {room:.0} GB for weights)"
            ));
        }
        Ok(ReplicaPerf {
            weights_s: weights_gb * 1e9 / (bw_tbs * 1e12 * g * MEMORY_EFFICIENCY),
            token_s: 2.0 * params_b * 1e9 / (tflops * 1e12 * g * COMPUTE_EFFICIENCY),
        })
    }

    /// Seconds of one decode step with `batch` sequences.
    pub fn step_s(&self, batch: u32) -> f64 {
        self.weights_s.max(batch.max(1) as f64 * self.token_s)
    }

    /// Seconds to prefill a prompt of `tokens`.
    pub fn prefill_s(&self, tokens: u32) -> f64 {
        self.weights_s.max(tokens.max(1) as f64 * self.token_s)
    }

    /// Seconds from admission to the first token and to the last one, of
    /// a request of `prompt` and `output` tokens decoded in a batch of
    /// `batch` sequences.
    pub fn request_s(&self, prompt: u32, output: u32, batch: u32) -> (f64, f64) {
        let first = self.prefill_s(prompt);
        (
            first,
            first + output.saturating_sub(1) as f64 * self.step_s(batch),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pol(min: u32, max: u32) -> ScalePolicy {
        ScalePolicy {
            min_replicas: min,
            max_replicas: max,
            target_inflight: 4.0,
            idle_to_zero_s: 300.0,
            scale_down_delay_s: 60.0,
        }
    }

    fn st(replicas: u32, in_flight: u32, queued: u32, last: Option<f64>) -> ScaleState {
        ScaleState {
            replicas,
            in_flight,
            queued,
            last_request_s: last,
            ..ScaleState::default()
        }
    }

    #[test]
    fn a_request_at_zero_starts_one_replica() {
        let d = decide(&st(0, 0, 1, Some(10.0)), &pol(0, 4), 10.0);
        assert_eq!((d.replicas, d.reason), (1, ScaleReason::ColdStart));
    }

    #[test]
    fn load_scales_up_at_once_and_is_capped() {
        let d = decide(&st(1, 9, 0, Some(0.0)), &pol(0, 4), 1.0);
        assert_eq!((d.replicas, d.reason), (3, ScaleReason::Load));
        let d = decide(&st(1, 90, 10, Some(0.0)), &pol(0, 4), 1.0);
        assert_eq!((d.replicas, d.reason), (4, ScaleReason::MaxReplicas));
        let d = decide(&st(4, 90, 10, Some(0.0)), &pol(0, 4), 1.0);
        assert_eq!((d.replicas, d.reason), (4, ScaleReason::MaxReplicas));
        assert!(!d.changes(&st(4, 0, 0, None)));
    }

    #[test]
    fn scale_down_waits_for_the_delay_and_keeps_the_window_peak() {
        let p = pol(0, 8);
        let mut s = st(4, 2, 0, Some(0.0));
        let d = decide(&s, &p, 0.0);
        assert_eq!((d.replicas, d.reason), (4, ScaleReason::ScaleDownDelay));
        s = d.apply(&s);
        s.in_flight = 10; // asks for 3 in the window
        let d = decide(&s, &p, 30.0);
        assert_eq!(
            (d.replicas, d.reason, d.window_peak),
            (4, ScaleReason::ScaleDownDelay, 3)
        );
        s = d.apply(&s);
        s.in_flight = 1;
        let d = decide(&s, &p, 61.0);
        assert_eq!((d.replicas, d.reason), (3, ScaleReason::LoadFell));
        assert_eq!(d.below_since, None);
        // a burst in the window resets it
        let mut s = st(4, 1, 0, Some(0.0));
        s = decide(&s, &p, 0.0).apply(&s);
        s.in_flight = 20;
        let d = decide(&s, &p, 10.0);
        assert_eq!((d.replicas, d.below_since), (5, None));
    }

    #[test]
    fn idle_endpoints_go_to_zero_only_after_the_idle_time() {
        let p = pol(0, 4);
        // no load, but a request 100 s ago: one replica stays
        let d = decide(&st(1, 0, 0, Some(0.0)), &p, 100.0);
        assert_eq!((d.replicas, d.reason), (1, ScaleReason::Steady));
        // idle for 300 s: below from then, gone after the delay
        let s = st(1, 0, 0, Some(0.0));
        let d = decide(&s, &p, 300.0);
        assert_eq!((d.replicas, d.reason), (1, ScaleReason::ScaleDownDelay));
        let d = decide(&d.apply(&s), &p, 360.0);
        assert_eq!((d.replicas, d.reason), (0, ScaleReason::Idle));
        // with a minimum, never below it
        let d = decide(&st(2, 0, 0, None), &pol(2, 4), 1e6);
        assert_eq!((d.replicas, d.reason), (2, ScaleReason::MinReplicas));
        let d = decide(&st(0, 0, 0, None), &pol(2, 4), 0.0);
        assert_eq!((d.replicas, d.reason), (2, ScaleReason::MinReplicas));
    }

    #[test]
    fn a_changed_policy_brings_the_count_back_within_bounds() {
        let d = decide(&st(6, 100, 0, Some(0.0)), &pol(0, 4), 0.0);
        assert_eq!(d.replicas, 4);
        let d = decide(&st(1, 0, 0, None), &pol(3, 4), 0.0);
        assert_eq!(d.replicas, 3);
    }

    #[test]
    fn policies_are_checked() {
        assert!(pol(0, 4).check().is_ok());
        assert!(pol(5, 4).check().unwrap_err().contains("min_replicas"));
        assert!(pol(0, 0).check().unwrap_err().contains("max_replicas"));
        let mut p = pol(0, 1);
        p.target_inflight = 0.0;
        assert!(p.check().unwrap_err().contains("target_inflight"));
        p.target_inflight = 1.0;
        p.idle_to_zero_s = f64::NAN;
        assert!(p.check().unwrap_err().contains("idle_to_zero_s"));
    }

    #[test]
    fn min_replicas_outrank_their_class_and_are_not_preemptible() {
        assert_eq!(replica_rank(0, 2, 0), (1, false));
        assert_eq!(replica_rank(0, 2, 1), (1, false));
        assert_eq!(replica_rank(0, 2, 2), (0, true));
        assert_eq!(replica_rank(i32::MAX, 1, 0), (i32::MAX, false));
    }

    #[test]
    fn the_roofline_is_memory_bound_for_small_batches() {
        let h100 = accelerator_perf("H100").unwrap();
        // 8 B params, 16 GB of weights on one H100
        let r = ReplicaPerf::new(8.0, 1, h100, 80.0).unwrap();
        // ~8 ms per step: ~125 tokens/s for one sequence
        assert!((r.step_s(1) - 16e9 / (3.35e12 * 0.6)).abs() < 1e-12);
        assert_eq!(r.step_s(1), r.step_s(8));
        // a big batch is compute bound
        assert!(r.step_s(1024) > r.step_s(1) * 2.0);
        // a 2,000-token prompt costs more than a step
        assert!(r.prefill_s(2000) > r.step_s(1));
        let (first, last) = r.request_s(100, 11, 1);
        assert!((last - first - 10.0 * r.step_s(1)).abs() < 1e-12);
        // two accelerators halve both
        let r2 = ReplicaPerf::new(8.0, 2, h100, 80.0).unwrap();
        assert!((r2.weights_s * 2.0 - r.weights_s).abs() < 1e-12);
        // 70 B in 16-bit needs two H100s
        let e = ReplicaPerf::new(70.0, 1, h100, 80.0).unwrap_err();
        assert!(e.contains("do not fit"), "{e}");
        assert!(ReplicaPerf::new(70.0, 2, h100, 80.0).is_ok());
        assert!(ReplicaPerf::new(0.0, 1, h100, 80.0).is_err());
        assert_eq!(accelerator_perf("tpu-v9"), None);
    }
}
