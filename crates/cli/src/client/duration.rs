//! Parsing and printing of job time limits (`--time`).

/// The longest time limit the server accepts: 30 days.
pub const MAX_TIME_LIMIT_S: u64 = 30 * 86_400;

/// Parses a duration into seconds, with Slurm's meaning for Slurm's forms.
///
/// Accepted forms:
/// - Slurm's (`sbatch --time`): `MM` (a bare number is **minutes**, as in
///   Slurm), `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`;
/// - numbers with units, largest first, each unit at most once:
///   `90s`, `30m`, `2h`, `1d`, `1h30m`, `1d12h`, `2h30m15s` (units `d`, `h`,
///   `m`, `s`, either case).
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration; use e.g. 90s, 30m, 2h, 1h30m or HH:MM:SS".into());
    }
    if t.starts_with('-') {
        return Err(format!("duration '{t}' is negative"));
    }
    if t.contains(':') || t.contains('-') || t.bytes().all(|b| b.is_ascii_digit()) {
        return parse_clock(t);
    }
    parse_units(t)
}

/// Parses a `--time` value: a [`parse_duration`] that is positive and at most
/// 30 days.
pub fn parse_time_limit(s: &str) -> Result<u64, String> {
    let secs = parse_duration(s)?;
    if secs == 0 {
        return Err(format!("time limit '{s}' is zero; it must be positive"));
    }
    if secs > MAX_TIME_LIMIT_S {
        return Err(format!(
            "time limit '{s}' is {}, longer than the maximum of 30 days",
            format_duration(secs)
        ));
    }
    Ok(secs)
}

/// Formats seconds compactly, largest unit first: `1h30m`, `2d`, `45s`, `0s`.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = secs;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        let n = rest / size;
        rest %= size;
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

fn number(digits: &str, whole: &str) -> Result<u64, String> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "'{digits}' in duration '{whole}' is not a whole number"
        ));
    }
    digits
        .parse::<u64>()
        .map_err(|_| format!("duration '{whole}' is too long"))
}

fn parse_units(t: &str) -> Result<u64, String> {
    let mut total: u64 = 0;
    let mut last_rank: Option<usize> = None;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let (rank, size) = match c.to_ascii_lowercase() {
            'd' => (0, 86_400),
            'h' => (1, 3_600),
            'm' => (2, 60),
            's' => (3, 1),
            other => {
                return Err(format!(
                    "unknown unit '{other}' in duration '{t}'; use d, h, m or s (e.g. 1h30m) \
                     or HH:MM:SS"
                ));
            }
        };
        if digits.is_empty() {
            return Err(format!(
                "unit '{c}' without a number in duration '{t}'; write e.g. 2h or 1h30m"
            ));
        }
        if let Some(last) = last_rank
            && rank <= last
        {
            return Err(format!(
                "units in duration '{t}' must go from largest to smallest, each once \
                 (e.g. 1d2h30m)"
            ));
        }
        last_rank = Some(rank);
        let n = number(&digits, t)?;
        digits.clear();
        total = n
            .checked_mul(size)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration '{t}' is too long"))?;
    }
    if !digits.is_empty() {
        return Err(format!(
            "number {digits} at the end of duration '{t}' has no unit; add d, h, m or s"
        ));
    }
    Ok(total)
}

/// Slurm's time forms: `MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`.
fn parse_clock(t: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "duration '{t}' is not a Slurm time; use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or \
             D-HH:MM:SS (or units: 90s, 30m, 2h)"
        )
    };
    let (days, clock) = match t.split_once('-') {
        Some((d, c)) => (Some(number(d, t)?), c),
        None => (None, t),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let n = |i: usize| number(parts[i], t);
    let (h, m, s) = match (days, parts.len()) {
        (None, 1) => (0, n(0)?, 0),
        (None, 2) => (0, n(0)?, n(1)?),
        (_, 3) => (n(0)?, n(1)?, n(2)?),
        (Some(_), 1) => (n(0)?, 0, 0),
        (Some(_), 2) => (n(0)?, n(1)?, 0),
        _ => return Err(bad()),
    };
    if s >= 60 && parts.len() > 1 {
        return Err(format!("seconds {s} in duration '{t}' must be below 60"));
    }
    if m >= 60 && (parts.len() == 3 || days.is_some()) {
        return Err(format!("minutes {m} in duration '{t}' must be below 60"));
    }
    if days.is_some() && h >= 24 {
        return Err(format!(
            "hours {h} in duration '{t}' must be below 24 after a day count"
        ));
    }
    days.unwrap_or(0)
        .checked_mul(86_400)
        .and_then(|v| h.checked_mul(3_600).and_then(|x| v.checked_add(x)))
        .and_then(|v| m.checked_mul(60).and_then(|x| v.checked_add(x)))
        .and_then(|v| v.checked_add(s))
        .ok_or_else(|| format!("duration '{t}' is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_minutes_as_in_slurm() {
        assert_eq!(parse_duration("30"), Ok(1_800));
        assert_eq!(parse_duration("90"), Ok(5_400));
        assert_eq!(parse_duration(" 0 "), Ok(0));
    }

    #[test]
    fn every_slurm_form_has_slurm_meaning() {
        // sbatch(1): "minutes", "minutes:seconds", "hours:minutes:seconds",
        // "days-hours", "days-hours:minutes" and "days-hours:minutes:seconds"
        assert_eq!(parse_duration("45"), Ok(45 * 60));
        assert_eq!(parse_duration("45:30"), Ok(45 * 60 + 30));
        assert_eq!(parse_duration("2:15:30"), Ok(2 * 3600 + 15 * 60 + 30));
        assert_eq!(parse_duration("2-12"), Ok(2 * 86_400 + 12 * 3600));
        assert_eq!(parse_duration("2-12:30"), Ok(2 * 86_400 + 12 * 3600 + 1800));
        assert_eq!(
            parse_duration("2-12:30:15"),
            Ok(2 * 86_400 + 12 * 3600 + 1800 + 15)
        );
        assert_eq!(parse_duration("0-1"), Ok(3600));
        assert!(parse_duration("1-2:3:4:5").is_err());
        assert!(parse_duration("1-2-3").is_err());
        assert!(
            parse_duration("1-12:60")
                .unwrap_err()
                .contains("minutes 60")
        );
    }

    #[test]
    fn unit_forms() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("2h"), Ok(7_200));
        assert_eq!(parse_duration("1d"), Ok(86_400));
        assert_eq!(parse_duration("1h30m"), Ok(5_400));
        assert_eq!(parse_duration("1d12h"), Ok(129_600));
        assert_eq!(parse_duration("2h30m15s"), Ok(9_015));
        assert_eq!(parse_duration("2H"), Ok(7_200));
        assert_eq!(parse_duration("90m"), Ok(5_400));
    }

    #[test]
    fn clock_forms() {
        assert_eq!(parse_duration("01:30:00"), Ok(5_400));
        assert_eq!(parse_duration("48:00:00"), Ok(172_800));
        assert_eq!(parse_duration("90:30"), Ok(5_430));
        assert_eq!(parse_duration("1-12:00:00"), Ok(129_600));
        assert_eq!(parse_duration("0:00:05"), Ok(5));
    }

    #[test]
    fn errors_are_clear() {
        let e = parse_duration("").unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = parse_duration("2x").unwrap_err();
        assert!(e.contains("unknown unit 'x'"), "{e}");
        let e = parse_duration("1h30").unwrap_err();
        assert!(e.contains("has no unit"), "{e}");
        let e = parse_duration("30m1h").unwrap_err();
        assert!(e.contains("largest to smallest"), "{e}");
        let e = parse_duration("1h1h").unwrap_err();
        assert!(e.contains("largest to smallest"), "{e}");
        let e = parse_duration("h").unwrap_err();
        assert!(e.contains("without a number"), "{e}");
        let e = parse_duration("1.5h").unwrap_err();
        assert!(e.contains("unknown unit '.'"), "{e}");
        let e = parse_duration("-5").unwrap_err();
        assert!(e.contains("negative"), "{e}");
        let e = parse_duration("1:60:00").unwrap_err();
        assert!(e.contains("minutes 60"), "{e}");
        let e = parse_duration("1:00:75").unwrap_err();
        assert!(e.contains("seconds 75"), "{e}");
        let e = parse_duration("1:2:3:4").unwrap_err();
        assert!(e.contains("not a Slurm time"), "{e}");
        let e = parse_duration("1-30:00").unwrap_err();
        assert!(e.contains("below 24"), "{e}");
        let e = parse_duration("1-25:00:00").unwrap_err();
        assert!(e.contains("below 24"), "{e}");
        let e = parse_duration("1::00").unwrap_err();
        assert!(e.contains("not a whole number"), "{e}");
        let e = parse_duration("99999999999999999999999s").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        let e = parse_duration("999999999999999999d").unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn time_limits_are_bounded() {
        assert_eq!(parse_time_limit("30d"), Ok(MAX_TIME_LIMIT_S));
        assert!(parse_time_limit("0").unwrap_err().contains("positive"));
        assert!(parse_time_limit("0h").unwrap_err().contains("positive"));
        let e = parse_time_limit("30d1s").unwrap_err();
        assert!(e.contains("30 days") && e.contains("30d1s"), "{e}");
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(45), "45s");
        assert_eq!(format_duration(3_600), "1h");
        assert_eq!(format_duration(5_400), "1h30m");
        assert_eq!(format_duration(90_061), "1d1h1m1s");
        for s in [1, 59, 60, 61, 3_599, 3_600, 86_399, 86_400, 1_234_567] {
            assert_eq!(parse_duration(&format_duration(s)), Ok(s));
        }
    }
}
