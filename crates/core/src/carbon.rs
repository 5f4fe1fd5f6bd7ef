//! Grid carbon intensity as a time series (gCO2e per kWh), with O(1)
//! means and integrals over any interval.
//!
//! Read from CSV: an Electricity Maps export (`Datetime (UTC)` and
//! `Carbon Intensity gCO₂eq/kWh (direct)` columns, as in
//! `data/grid/*_2023_hourly.csv`) or a plain two-column file
//! `time,g_per_kwh` (`time` in RFC 3339, `YYYY-MM-DD HH:MM:SS` UTC, or Unix
//! seconds). Rows must be evenly spaced. Outside the series, time wraps
//! around it (a year of data stands for every year), so a long simulation
//! never runs off its end.

use std::path::Path;

/// Errors reading a carbon-intensity series.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CarbonError {
    #[error("{path}: cannot read: {message}")]
    Io { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: String,
        line: usize,
        message: String,
    },
}

/// A carbon-intensity series with evenly spaced values.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonSeries {
    /// Where it was read from (for messages and reports).
    pub name: String,
    /// Unix time of the first value, seconds.
    pub start_s: f64,
    /// Spacing of the values, seconds.
    pub step_s: f64,
    values: Vec<f64>,
    /// prefix[i] = Σ values[..i] × step_s (g/kWh · s).
    prefix: Vec<f64>,
}

fn invalid(path: &str, line: usize, message: impl Into<String>) -> CarbonError {
    CarbonError::Invalid {
        path: path.to_string(),
        line,
        message: message.into(),
    }
}

fn parse_time(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return v.is_finite().then_some(v);
    }
    crate::time::parse_utc(s).ok().map(|ms| ms as f64 / 1000.0)
}

impl CarbonSeries {
    /// A series from values spaced `step_s` apart from `start_s`.
    pub fn new(name: &str, start_s: f64, step_s: f64, values: Vec<f64>) -> CarbonSeries {
        let mut prefix = Vec::with_capacity(values.len() + 1);
        let mut acc = 0.0;
        prefix.push(0.0);
        for v in &values {
            acc += v * step_s;
            prefix.push(acc);
        }
        CarbonSeries {
            name: name.to_string(),
            start_s,
            step_s,
            values,
            prefix,
        }
    }

    /// Reads a CSV file through `read` (see the module documentation).
    pub fn load_with(
        path: &Path,
        read: &mut dyn FnMut(&Path) -> std::io::Result<String>,
    ) -> Result<CarbonSeries, CarbonError> {
        let p = path.display().to_string();
        let text = read(path).map_err(|e| CarbonError::Io {
            path: p.clone(),
            message: e.to_string(),
        })?;
        CarbonSeries::parse(&text, &p)
    }

    /// Parses CSV text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<CarbonSeries, CarbonError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
        let (hl, header) = lines
            .next()
            .ok_or_else(|| invalid(path, 1, "empty file: expected a header"))?;
        let cols: Vec<String> = header
            .split(',')
            .map(|c| c.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let tcol = cols
            .iter()
            .position(|c| c.starts_with("datetime") || c == "time" || c == "timestamp");
        // prefer direct (operational) intensity, then any intensity column
        let icol = cols
            .iter()
            .position(|c| c.contains("carbon intensity") && c.contains("direct"))
            .or_else(|| {
                cols.iter().position(|c| {
                    c.contains("intensity") || c.contains("g_per_kwh") || c.contains("gco2")
                })
            });
        let (Some(tcol), Some(icol)) = (tcol, icol) else {
            return Err(invalid(
                path,
                hl + 1,
                "header: expected a time column (`Datetime (UTC)`, `time`) and an intensity column (`Carbon Intensity gCO₂eq/kWh (direct)`, `g_per_kwh`)",
            ));
        };
        let mut start = None;
        let mut step = None;
        let mut last = 0.0;
        let mut values = Vec::new();
        for (i, l) in lines {
            let line = i + 1;
            let f: Vec<&str> = l.split(',').collect();
            let get = |c: usize, what: &str| {
                f.get(c)
                    .copied()
                    .ok_or_else(|| invalid(path, line, format!("missing the {what} field")))
            };
            let t = parse_time(get(tcol, "time")?)
                .ok_or_else(|| invalid(path, line, format!("bad time `{}`", f[tcol].trim())))?;
            let raw = get(icol, "intensity")?.trim();
            let v: f64 = raw
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v < 10_000.0)
                .ok_or_else(|| {
                    invalid(
                        path,
                        line,
                        format!("bad intensity `{raw}` (gCO2e/kWh, 0..10000)"),
                    )
                })?;
            match (start, step) {
                (None, _) => start = Some(t),
                (Some(_), None) => {
                    let d = t - last;
                    if d <= 0.0 {
                        return Err(invalid(path, line, "times must increase"));
                    }
                    step = Some(d);
                }
                (Some(_), Some(d)) => {
                    if ((t - last) - d).abs() > 1e-6 * d.max(1.0) {
                        return Err(invalid(
                            path,
                            line,
                            format!(
                                "uneven spacing: {} s after the previous row, expected {d} s",
                                t - last
                            ),
                        ));
                    }
                }
            }
            last = t;
            values.push(v);
        }
        let start = start.ok_or_else(|| invalid(path, hl + 1, "no data rows"))?;
        Ok(CarbonSeries::new(
            path,
            start,
            step.unwrap_or(3600.0),
            values,
        ))
    }

    /// A constant intensity (a grid without a series).
    pub fn constant(name: &str, g_per_kwh: f64) -> CarbonSeries {
        CarbonSeries::new(name, 0.0, 86_400.0 * 365.0, vec![g_per_kwh])
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn period(&self) -> f64 {
        self.step_s * self.values.len() as f64
    }

    /// ∫ intensity dt from the series start to `t` (periodic extension).
    fn cumulative(&self, t: f64) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let p = self.period();
        let x = t - self.start_s;
        let k = (x / p).floor();
        let r = x - k * p;
        let i = ((r / self.step_s) as usize).min(self.values.len() - 1);
        let within = self.prefix[i] + self.values[i] * (r - i as f64 * self.step_s);
        k * self.prefix[self.values.len()] + within
    }

    /// Intensity at Unix time `t`, gCO2e/kWh.
    pub fn at(&self, t: f64) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let p = self.period();
        let r = (t - self.start_s).rem_euclid(p);
        self.values[((r / self.step_s) as usize).min(self.values.len() - 1)]
    }

    /// ∫ intensity dt over [t0, t1], gCO2e/kWh · s.
    pub fn integral(&self, t0: f64, t1: f64) -> f64 {
        if t1 <= t0 {
            return 0.0;
        }
        self.cumulative(t1) - self.cumulative(t0)
    }

    /// Mean intensity over [t0, t1] (the value at `t0` for an empty span).
    /// The mean intensity over `[t0, t1]` as it could be forecast at
    /// `now` from the past alone: the past as it was, and each future
    /// instant as the same time of day on the last day before `now`
    /// (seasonal persistence, a day-ahead forecast without a model). Nothing
    /// after `now` is read.
    pub fn forecast_mean(&self, now: f64, t0: f64, t1: f64) -> f64 {
        const DAY: f64 = 86_400.0;
        if t1 <= t0 {
            return self.forecast_at(now, t0);
        }
        let mut total = 0.0;
        // the past part: as it was
        if t0 < now {
            total += self.integral(t0, t1.min(now));
        }
        // the future part, a day at a time, mapped onto (now - DAY, now]
        let mut a = t0.max(now);
        while a < t1 {
            let k = ((a - now) / DAY).floor() + 1.0;
            let b = t1.min(now + k * DAY);
            total += self.integral(a - k * DAY, b - k * DAY);
            a = b;
        }
        total / (t1 - t0)
    }

    /// The intensity at `t` as forecast at `now` ([`CarbonSeries::forecast_mean`]).
    pub fn forecast_at(&self, now: f64, t: f64) -> f64 {
        if t <= now {
            return self.at(t);
        }
        let k = ((t - now) / 86_400.0).ceil();
        self.at(t - k * 86_400.0)
    }

    pub fn mean(&self, t0: f64, t1: f64) -> f64 {
        if t1 - t0 <= 1e-9 {
            return self.at(t0);
        }
        self.integral(t0, t1) / (t1 - t0)
    }

    /// Mean of all values.
    pub fn average(&self) -> f64 {
        if self.values.is_empty() {
            0.0
        } else {
            self.prefix[self.values.len()] / self.period()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EM: &str = "Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA)\n\
2023-01-01 00:00:00,France,France,FR,30,50\n\
2023-01-01 01:00:00,France,France,FR,10,20\n\
2023-01-01 02:00:00,France,France,FR,20,30\n";

    #[test]
    fn reads_electricity_maps_exports() {
        let s = CarbonSeries::parse(EM, "fr.csv").unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.start_s, 1_672_531_200.0);
        assert_eq!(s.step_s, 3600.0);
        let t0 = s.start_s;
        assert_eq!(s.at(t0 + 10.0), 30.0);
        assert_eq!(s.at(t0 + 3600.0), 10.0);
        // the mean over the first two hours, and across the wrap-around
        assert!((s.mean(t0, t0 + 7200.0) - 20.0).abs() < 1e-9);
        assert!((s.mean(t0 + 7200.0, t0 + 3.0 * 3600.0 + 3600.0) - 25.0).abs() < 1e-9);
        assert!(
            (s.integral(t0 + 1800.0, t0 + 5400.0) - (30.0 * 1800.0 + 10.0 * 1800.0)).abs() < 1e-6
        );
        assert_eq!(s.at(t0 - 3600.0), 20.0, "before the start wraps to the end");
        assert!((s.average() - 20.0).abs() < 1e-9);
    }

    #[test]
    fn reads_plain_files_and_refuses_bad_ones() {
        let s = CarbonSeries::parse("time,g_per_kwh\n0,100\n900,200\n", "x.csv").unwrap();
        assert_eq!((s.step_s, s.at(950.0)), (900.0, 200.0));
        let bad = [
            ("", 1, "empty"),
            ("a,b\n1,2\n", 1, "header"),
            ("time,g_per_kwh\n0,100\n10,x\n", 3, "bad intensity"),
            ("time,g_per_kwh\n0,100\n10,1\n30,1\n", 4, "uneven"),
            ("time,g_per_kwh\n0,100\n0,1\n", 3, "increase"),
            ("time,g_per_kwh\nnoon,100\n", 2, "bad time"),
            ("time,g_per_kwh\n0,-5\n", 2, "bad intensity"),
            ("time,g_per_kwh\n", 1, "no data"),
        ];
        for (text, line, what) in bad {
            match CarbonSeries::parse(text, "x.csv") {
                Err(CarbonError::Invalid {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{text:?}: {message}");
                    assert!(message.contains(what), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn real_2023_series_have_the_documented_means() {
        let fr = CarbonSeries::parse(include_str!("../../../data/grid/FR_2023_hourly.csv"), "FR")
            .unwrap();
        let de = CarbonSeries::parse(include_str!("../../../data/grid/DE_2023_hourly.csv"), "DE")
            .unwrap();
        assert_eq!(fr.len(), 8760);
        assert!(
            (fr.average() - 30.0).abs() < 5.0,
            "FR mean {}",
            fr.average()
        );
        assert!(
            (de.average() - 330.0).abs() < 40.0,
            "DE mean {}",
            de.average()
        );
    }

    #[test]
    fn a_forecast_reads_only_the_past() {
        // hourly values over three days: day 1 clean at night, day 2 the same,
        // day 3 different (the future the forecast must not see)
        let day = |night: f64| -> Vec<f64> {
            (0..24).map(|h| if h < 6 { night } else { 300.0 }).collect()
        };
        let mut v = day(100.0);
        v.extend(day(100.0));
        let real = CarbonSeries::new("r", 0.0, 3600.0, {
            let mut x = v.clone();
            x.extend(day(500.0));
            x
        });
        let other = CarbonSeries::new("o", 0.0, 3600.0, {
            let mut x = v.clone();
            x.extend(day(20.0));
            x
        });
        let now = 2.0 * 86_400.0; // the start of day 3
        // the next night (day 3, 00:00-06:00) forecast from day 2's night
        let f = real.forecast_mean(now, now, now + 6.0 * 3600.0);
        assert!((f - 100.0).abs() < 1e-9, "{f}");
        assert_eq!(
            f,
            other.forecast_mean(now, now, now + 6.0 * 3600.0),
            "the future does not change it"
        );
        assert!(
            (real.mean(now, now + 6.0 * 3600.0) - 500.0).abs() < 1e-9,
            "the oracle sees it"
        );
        // two days ahead maps onto the same last day
        let f2 = real.forecast_mean(now, now + 86_400.0, now + 86_400.0 + 3600.0);
        assert!((f2 - 100.0).abs() < 1e-9);
        // across now: the past part as it was
        let m = real.forecast_mean(now, now - 3600.0, now + 3600.0);
        assert!((m - (300.0 + 100.0) / 2.0).abs() < 1e-9, "{m}");
        assert_eq!(real.forecast_at(now, now + 7.0 * 3600.0), 300.0);
    }
}
