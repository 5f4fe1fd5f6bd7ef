//! LLM inference request traces: one request a line, with its arrival
//! time and its prompt and output token counts, as Azure's 2023 traces
//! (`data/traces/AzureLLMInferenceTrace_{conv,code}.csv`, CC-BY-4.0: the
//! Splitwise paper, ISCA'24) give them: `TIMESTAMP,ContextTokens,
//! GeneratedTokens` (any order, names matched without case; extra columns
//! are ignored). `TIMESTAMP` is UTC, `YYYY-MM-DD HH:MM:SS[.fraction]`
//! (a `T` for the space and a final `Z` are accepted). The requests come
//! back sorted by arrival (stable for ties), their times in seconds after
//! the first one: what a model endpoint's load is made of in the twin.

use super::WorkloadError;
use super::native::read_text;
use std::path::Path;

/// Columns the reader needs.
pub const REQUIRED_COLUMNS: [&str; 3] = ["timestamp", "contexttokens", "generatedtokens"];

/// Most tokens one request may carry in a field.
pub const MAX_TOKENS: u32 = 10_000_000;

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Seconds after the trace's first request.
    pub t_s: f64,
    pub prompt_tokens: u32,
    pub output_tokens: u32,
}

/// A request trace: its requests and when its first one arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Unix time (s) of the first request.
    pub start_unix_s: f64,
    pub requests: Vec<Request>,
}

/// Token counts of a trace's requests: mean, median, p99 and largest.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TokenStats {
    pub mean: f64,
    pub p50: u32,
    pub p99: u32,
    pub max: u32,
}

/// What a request trace holds (`gigafab workload requests`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    pub requests: usize,
    /// Seconds from the first request to the last.
    pub span_s: f64,
    /// Requests a second over the span.
    pub rate_per_s: f64,
    /// Largest number of requests in one second.
    pub peak_per_s: usize,
    pub prompt_tokens: TokenStats,
    pub output_tokens: TokenStats,
}

impl Trace {
    /// Its figures (zeros for an empty trace).
    pub fn summary(&self) -> Summary {
        let stats = |f: fn(&Request) -> u32| {
            let mut v: Vec<u32> = self.requests.iter().map(f).collect();
            v.sort_unstable();
            let at = |q: f64| {
                v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
                    .copied()
                    .unwrap_or(0)
            };
            TokenStats {
                mean: if v.is_empty() {
                    0.0
                } else {
                    v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
                },
                p50: at(0.5),
                p99: at(0.99),
                max: v.last().copied().unwrap_or(0),
            }
        };
        let span = self.requests.last().map_or(0.0, |r| r.t_s);
        let mut peak = 0;
        let mut from = 0;
        for (i, r) in self.requests.iter().enumerate() {
            while self.requests[from].t_s <= r.t_s - 1.0 {
                from += 1;
            }
            peak = peak.max(i + 1 - from);
        }
        Summary {
            requests: self.requests.len(),
            span_s: span,
            rate_per_s: if span > 0.0 {
                self.requests.len() as f64 / span
            } else {
                0.0
            },
            peak_per_s: peak,
            prompt_tokens: stats(|r| r.prompt_tokens),
            output_tokens: stats(|r| r.output_tokens),
        }
    }
}

/// Reads a request trace.
pub fn read(path: &Path) -> Result<Trace, WorkloadError> {
    let text = read_text(path)?;
    parse(&text, &path.display().to_string())
}

/// Parses a request trace; `file` names the source in errors.
pub fn parse(text: &str, file: &str) -> Result<Trace, WorkloadError> {
    let mut rdr = super::csv_rows(text);
    let mut record = csv::StringRecord::new();
    let mut columns: Option<(Vec<usize>, usize)> = None;
    let mut rows: Vec<(f64, u32, u32)> = Vec::new();
    while let Some(line) = super::next_row(&mut rdr, &mut record, file)? {
        let Some((cols, width)) = &columns else {
            columns = Some(super::header_columns(
                &record,
                &REQUIRED_COLUMNS,
                file,
                line,
                "a request trace needs TIMESTAMP,ContextTokens,GeneratedTokens",
            )?);
            continue;
        };
        super::check_width(&record, (cols, *width), &REQUIRED_COLUMNS, file, line)?;
        let cell = |k: usize| record[cols[k]].trim();
        let err = |k: usize, msg: String| WorkloadError::new(file, line, REQUIRED_COLUMNS[k], msg);
        let t = parse_timestamp(cell(0)).map_err(|m| err(0, m))?;
        let tokens = |k: usize| -> Result<u32, WorkloadError> {
            let s = cell(k);
            match s.parse::<u64>() {
                Ok(v) if v <= MAX_TOKENS as u64 => Ok(v as u32),
                _ => Err(err(
                    k,
                    format!("expected a whole number of tokens from 0 to {MAX_TOKENS}, got `{s}`"),
                )),
            }
        };
        rows.push((t, tokens(1)?, tokens(2)?));
    }
    if columns.is_none() {
        return Err(WorkloadError::new(
            file,
            0,
            "",
            "empty: a request trace needs a header TIMESTAMP,ContextTokens,GeneratedTokens",
        ));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let start = rows.first().map_or(0.0, |r| r.0);
    Ok(Trace {
        start_unix_s: start,
        requests: rows
            .into_iter()
            .map(|(t, p, o)| Request {
                t_s: t - start,
                prompt_tokens: p,
                output_tokens: o,
            })
            .collect(),
    })
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` (UTC; `T` for the space and a final `Z`
/// accepted) -> Unix seconds.
fn parse_timestamp(s: &str) -> Result<f64, String> {
    let bad = || {
        format!(
            "expected a UTC time YYYY-MM-DD HH:MM:SS[.fraction], got `{}`",
            gigafab_core::time::excerpt(s, 64)
        )
    };
    let t = s.strip_suffix('Z').unwrap_or(s);
    if !t.is_ascii() || t.len() < 19 {
        return Err(bad());
    }
    let (date, rest) = t.split_at(10);
    let sep = rest.as_bytes()[0];
    if sep != b' ' && sep != b'T' {
        return Err(bad());
    }
    let time = &rest[1..];
    let num = |x: &str| -> Result<u32, String> {
        if x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        x.parse::<u32>().map_err(|_| bad())
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let (y, mo, da) = (num(d[0])?, num(d[1])?, num(d[2])?);
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, Some(f)),
        None => (time, None),
    };
    let h: Vec<&str> = hms.split(':').collect();
    if h.len() != 3 || h.iter().any(|x| x.len() != 2) {
        return Err(bad());
    }
    let (hh, mm, ss) = (num(h[0])?, num(h[1])?, num(h[2])?);
    let days_in = |m: u32| match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    };
    if !(1..=12).contains(&mo) || da == 0 || da > days_in(mo) || hh > 23 || mm > 59 || ss > 59 {
        return Err(bad());
    }
    let f = match frac {
        None => 0.0,
        Some(f) => {
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            f.parse::<u64>().map_err(|_| bad())? as f64 / 10f64.powi(f.len() as i32)
        }
    };
    let days = gigafab_core::time::days_from_civil(y as i64, mo, da);
    Ok(days as f64 * 86_400.0 + (hh * 3600 + mm * 60 + ss) as f64 + f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_sorted_and_relative_to_the_first() {
        let t = parse(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 18:15:50.5,396,109\n\
             2023-11-16 18:15:46.25,374,44\n\
             \n\
             2023-11-16T18:16:46Z,1,0\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(t.requests.len(), 3);
        assert_eq!(t.start_unix_s, 1_700_158_546.25);
        assert_eq!(
            t.requests[0],
            Request {
                t_s: 0.0,
                prompt_tokens: 374,
                output_tokens: 44
            }
        );
        assert_eq!(t.requests[1].t_s, 4.25);
        assert_eq!(t.requests[2].t_s, 59.75);
        // columns in any order and case, extra ones ignored
        let t = parse(
            "generatedtokens,extra,timestamp,contexttokens\n7,x,2024-02-29 00:00:00,8\n",
            "t.csv",
        )
        .unwrap();
        assert_eq!(
            (t.requests[0].prompt_tokens, t.requests[0].output_tokens),
            (8, 7)
        );
    }

    #[test]
    fn errors_name_line_and_field() {
        let head = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
        for (body, line, field) in [
            ("2023-11-16 18:15:46,-1,3\n", 2, "contexttokens"),
            ("2023-11-16 18:15:46,1,99999999999\n", 2, "generatedtokens"),
            (
                "2023-11-16 18:15:46,1,2\n2023-02-29 00:00:00,1,2\n",
                3,
                "timestamp",
            ),
            ("2023-11-16 25:00:00,1,2\n", 2, "timestamp"),
            ("16/11/2023 18:15,1,2\n", 2, "timestamp"),
            ("2023-11-16 18:15:46.,1,2\n", 2, "timestamp"),
            ("2023-11-16 18:15:46,1\n", 2, "generatedtokens"),
        ] {
            let e = parse(&format!("{head}{body}"), "t.csv").unwrap_err();
            assert_eq!((e.line, e.field.as_str()), (line, field), "{body:?}: {e}");
            assert!(e.to_string().starts_with("t.csv:"), "{e}");
        }
        let e = parse("time,tokens\n", "t.csv").unwrap_err();
        assert_eq!(e.field, "timestamp");
        assert!(parse("", "t.csv").is_err());
        // non-ASCII or huge input: an error, never a panic
        assert!(parse(&format!("{head}2023-11-16 18:15:4é,1,2\n"), "t.csv").is_err());
        let huge = format!("{head}{},1,2\n", "9".repeat(100_000));
        let e = parse(&huge, "t.csv").unwrap_err();
        assert!(e.message.len() <= super::super::MAX_MESSAGE_CHARS + 8);
    }

    const CODE_REQUESTS: usize = 8_819;

    #[test]
    fn azures_traces_read_whole() {
        for (name, n) in [("conv", 19_366), ("code", CODE_REQUESTS)] {
            let p = format!(
                "{}/../../data/traces/AzureLLMInferenceTrace_{name}.csv",
                env!("CARGO_MANIFEST_DIR")
            );
            let t = read(Path::new(&p)).unwrap();
            assert_eq!(t.requests.len(), n, "{name}");
            // about one hour on 2023-11-16
            let last = t.requests.last().unwrap().t_s;
            assert!((3_000.0..4_000.0).contains(&last), "{name}: {last}");
            assert!(t.requests.windows(2).all(|w| w[0].t_s <= w[1].t_s));
            assert!(t.requests.iter().any(|r| r.prompt_tokens > 1_000));
            let s = t.summary();
            assert_eq!(s.requests, n);
            assert!(s.rate_per_s > 1.0 && s.peak_per_s as f64 >= s.rate_per_s);
            assert!(s.prompt_tokens.p50 <= s.prompt_tokens.p99);
            assert!(s.prompt_tokens.p99 <= s.prompt_tokens.max);
        }
    }

    #[test]
    fn a_summary_counts_what_it_says() {
        let t = parse(
            "TIMESTAMP,ContextTokens,GeneratedTokens\n\
             2023-11-16 00:00:00,10,1\n\
             2023-11-16 00:00:00.5,20,2\n\
             2023-11-16 00:00:00.9,30,3\n\
             2023-11-16 00:00:10,40,4\n",
            "t.csv",
        )
        .unwrap();
        let s = t.summary();
        assert_eq!((s.requests, s.span_s, s.peak_per_s), (4, 10.0, 3));
        assert_eq!(s.rate_per_s, 0.4);
        assert_eq!(s.prompt_tokens.mean, 25.0);
        assert_eq!((s.prompt_tokens.max, s.output_tokens.max), (40, 4));
        let empty = parse("TIMESTAMP,ContextTokens,GeneratedTokens\n", "t.csv").unwrap();
        assert_eq!(empty.summary().requests, 0);
    }
}
