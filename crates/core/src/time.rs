//! Calendar time without a clock: RFC 3339 formatting and parsing of
//! milliseconds since the Unix epoch (UTC, proleptic Gregorian).

/// Days since 1970-01-01 -> (year, month, day) (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month 1..=12, day) -> days since 1970-01-01 (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-21T09:30:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, frac) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:03}Z")
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    parse(s, false)
}

/// Like [`parse_rfc3339`], and a time without a zone (`2023-01-01 00:00:00`)
/// is UTC.
pub fn parse_utc(s: &str) -> Result<i64, String> {
    parse(s, true)
}

/// At most `max` characters of `s` (cut on a character boundary, `…` added),
/// for quoting untrusted input in error messages.
pub fn excerpt(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn parse(s: &str, naive_utc: bool) -> Result<i64, String> {
    let bad = || {
        format!(
            "`{}` is not an RFC 3339 time (e.g. 2026-11-21T09:30:00Z)",
            excerpt(s, 40)
        )
    };
    if !s.is_ascii() {
        return Err(bad());
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = s.get(r).ok_or_else(bad)?;
        if t.is_empty() || !t.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<i64>().map_err(|_| bad())
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut ms = days_from_civil(y, mo as u32, d as u32) * 86_400_000;
    if b.len() == 10 {
        return Ok(ms);
    }
    if b.len() < 19
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    ms += (h * 3600 + mi * 60 + sec) * 1000;
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let frac = &s[start..i.min(start + 3)];
        let f: i64 = frac.parse().map_err(|_| bad())?;
        ms += f * 10i64.pow(3 - frac.len() as u32);
    }
    match &s[i..] {
        "Z" | "z" => Ok(ms),
        "" if naive_utc => Ok(ms),
        tz if tz.len() == 6
            && (tz.starts_with('+') || tz.starts_with('-'))
            && tz.as_bytes()[3] == b':' =>
        {
            let off = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) * 60_000;
            Ok(if tz.starts_with('+') {
                ms - off
            } else {
                ms + off
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        // once sliced inside the `é` and panicked the controller
        for s in [
            "2026-01-01T00:00:00+0é00",
            "2026-01-01T00:00:00+0\u{e9}0",
            "2026-é1-01",
            "é",
            "2026-01-01T00:00:00.1é",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
            assert!(parse_utc(s).is_err(), "{s}");
        }
        let long = "9".repeat(100_000);
        let e = parse_rfc3339(&long).unwrap_err();
        assert!(e.len() < 200, "a bounded excerpt: {} bytes", e.len());
    }

    #[test]
    fn round_trip() {
        for ms in [0, 1_795_000_000_123, 951_782_400_000, -86_400_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)).unwrap(), ms, "{}", rfc3339(ms));
        }
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn parses_forms_and_refuses_junk() {
        assert_eq!(parse_rfc3339("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00").unwrap(), 0);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z").unwrap(), 1500);
        assert_eq!(parse_utc("2023-01-01 00:00:00").unwrap(), 1_672_531_200_000);
        assert!(parse_rfc3339("2023-01-01 00:00:00").is_err());
        for s in [
            "",
            "2026",
            "2026-13-01",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00",
            "x026-01-01",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
        }
    }
}
