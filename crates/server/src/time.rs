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
