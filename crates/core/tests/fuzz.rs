//! Property tests of every parser of the core: arbitrary input is an error
//! or a value, never a panic, and errors quote a bounded excerpt.

use gigafab_core::Factory;
use gigafab_core::carbon::CarbonSeries;
use gigafab_core::time::{parse_rfc3339, parse_utc, rfc3339};
use proptest::prelude::*;

const FACTORY: &str = include_str!("../../../examples/factories/mixed-small.toml");

fn cfg() -> ProptestConfig {
    ProptestConfig::with_cases(3000)
}

/// Text near a valid input: a valid one with a slice replaced by arbitrary
/// characters (multi-byte ones included).
fn mutated(base: &'static str) -> impl Strategy<Value = String> {
    (0..base.len(), 0usize..40, "\\PC{0,40}").prop_map(move |(at, len, junk)| {
        let mut at = at;
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}{}", &base[..at], junk, &base[end..])
    })
}

proptest! {
    #![proptest_config(cfg())]

    #[test]
    fn time_parser_never_panics(s in "\\PC{0,64}") {
        let _ = parse_rfc3339(&s);
        if let Err(e) = parse_utc(&s) {
            prop_assert!(e.len() < 300);
        }
    }

    #[test]
    fn time_parser_near_valid_times(s in mutated("2026-11-21T09:30:00.123+01:00")) {
        let _ = parse_rfc3339(&s);
        let _ = parse_utc(&s);
    }

    #[test]
    fn times_round_trip(ms in -62_000_000_000_000i64..250_000_000_000_000i64) {
        prop_assert_eq!(parse_rfc3339(&rfc3339(ms)), Ok(ms));
    }

    #[test]
    fn factory_reader_never_panics(s in mutated(FACTORY)) {
        if let Err(e) = Factory::parse(&s, "f.toml") {
            prop_assert!(e.to_string().len() < 4096, "{}", e);
        }
    }

    #[test]
    fn factory_reader_on_arbitrary_text(s in "\\PC{0,200}") {
        let _ = Factory::parse(&s, "f.toml");
    }

    #[test]
    fn carbon_reader_never_panics(s in mutated("time,g_per_kwh\n2023-01-01T00:00:00Z,30\n2023-01-01T01:00:00Z,31.5\n2023-01-01T02:00:00Z,29\n")) {
        if let Err(e) = CarbonSeries::parse(&s, "g.csv") {
            prop_assert!(e.to_string().len() < 4096, "{}", e);
        }
    }
}
