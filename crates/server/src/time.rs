//! Wall-clock helpers: milliseconds since the Unix epoch; RFC 3339 from
//! the core.

pub use gigafab_core::time::{parse_rfc3339, rfc3339};

/// Now, milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An instant of the control plane: milliseconds since the Unix epoch, as
/// the store keeps it. The scheduler core counts seconds (`f64`); the
/// conversions between the two are here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ms(pub i64);

impl Ms {
    /// The instant in the core's unit: seconds since the epoch.
    pub fn core_s(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// A core time as an instant, rounded up to the millisecond: never
    /// before the time the core asked for (a pass a fraction of a
    /// millisecond early finds nothing to do).
    pub fn from_core_s(s: f64) -> Ms {
        Ms((s * 1000.0).ceil() as i64)
    }

    /// Seconds from `earlier` to this instant (0 when `earlier` is later).
    pub fn secs_since(self, earlier: Ms) -> f64 {
        (self.0 - earlier.0).max(0) as f64 / 1000.0
    }

    /// This instant plus `d`.
    pub fn plus(self, d: std::time::Duration) -> Ms {
        Ms(self
            .0
            .saturating_add(d.as_millis().min(i64::MAX as u128) as i64))
    }

    /// This instant plus `days` (fractions allowed).
    pub fn plus_days(self, days: f64) -> Ms {
        Ms(self.0.saturating_add((days * 86_400_000.0) as i64))
    }

    /// RFC 3339, UTC, to the millisecond.
    pub fn rfc3339(self) -> String {
        rfc3339(self.0)
    }
}

/// Where the controller and the API read the time: the system's clock in
/// the server, a [`ManualClock`] in tests (time moves only when told).
pub trait Clock: Send + Sync {
    /// Now, milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Now, as an instant.
    fn now(&self) -> Ms {
        Ms(self.now_ms())
    }
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that stands still until set or advanced (controller tests:
/// deterministic times, no waiting for time to pass).
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> ManualClock {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_convert_to_the_cores_seconds_and_back() {
        let t = Ms(1_767_225_600_123);
        assert_eq!(t.core_s(), 1_767_225_600.123);
        assert_eq!(Ms::from_core_s(t.core_s()), t);
        // a wake-up between two milliseconds comes after, never before
        assert_eq!(Ms::from_core_s(1.0005), Ms(1001));
        assert_eq!(Ms(5_000).secs_since(Ms(2_500)), 2.5);
        assert_eq!(Ms(2_500).secs_since(Ms(5_000)), 0.0);
        assert_eq!(Ms(0).plus_days(1.5), Ms(129_600_000));
        assert_eq!(Ms(0).plus(std::time::Duration::from_secs(2)), Ms(2_000));
        assert_eq!(Ms(0).rfc3339(), "1970-01-01T00:00:00.000Z");
    }
}
