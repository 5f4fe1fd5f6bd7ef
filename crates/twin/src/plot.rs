//! Dependency-free SVG plots of a simulation run, and a constant-memory
//! recorder of the series to plot.
//!
//! [`render_svg`] draws two stacked panels sharing the time axis:
//! utilization (%) and queue length (waiting jobs), and any extra panels
//! below. With a calendar start ([`Series::calendar_start_s`]) the time
//! axis shows UTC dates (`2023-01-05`, or `01-05 12:00` when ticks are less
//! than a day apart); without one, hours for spans up to three days, days
//! beyond. Every label lies inside the drawing: long ones are shortened.
//!
//! [`Timeline`] records the state at every simulation event in a fixed
//! number of time buckets: when an event falls past the covered span,
//! adjacent bucket pairs merge and the bucket width doubles. Each bucket
//! keeps the time-weighted mean utilization and the largest queue length
//! held over it. Recording is O(1) amortised and allocates nothing after
//! construction.

use gigafab_core::time::{civil_from_days, days_from_civil};
use std::fmt::Write;

/// A time series to plot: parallel vectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Time, seconds from the start of the run.
    pub t: Vec<f64>,
    /// Fraction of accelerators busy, 0..1.
    pub utilization: Vec<f64>,
    /// Waiting jobs.
    pub queue: Vec<f64>,
    /// More panels below the two standard ones (power, carbon intensity).
    pub extra: Vec<ExtraPanel>,
    /// Unix time (s) of time 0: the time axis then shows dates.
    pub calendar_start_s: Option<f64>,
}

/// A panel of one or more named lines on the time axis of a [`Series`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtraPanel {
    /// Y-axis label.
    pub label: String,
    /// (name, values parallel to `Series::t`).
    pub lines: Vec<(String, Vec<f64>)>,
    /// A horizontal reference line: (name, value), e.g. a power budget.
    pub limit: Option<(String, f64)>,
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 80.0;
/// Room right of the plot: half of a date label ("01-05 12:00") and more.
const RIGHT: f64 = 50.0;
/// Top of the first panel, below the title.
const TOP: f64 = 60.0;
/// Vertical extent of a panel, and the space from one panel's top to the next.
const PANEL_H: f64 = 230.0;
const PANEL_STEP: f64 = 290.0;
/// Below the last panel: tick labels and the axis title.
const BOTTOM: f64 = 50.0;
/// Font size of labels, px, and the width of a character at that size
/// assumed to keep labels inside the drawing.
const FONT: f64 = 12.0;
const CHAR_W: f64 = 7.0;
const TITLE_FONT: f64 = 16.0;
/// Legend entries per row, and their spacing.
const LEGEND_PER_ROW: usize = 7;
const LEGEND_STEP: f64 = 120.0;
const COLOURS: [&str; 6] = [
    "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for XML content and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `s` shortened with an ellipsis to at most `max_px` wide at `font` px.
fn fit(s: &str, max_px: f64, font: f64) -> String {
    let max = (max_px / (CHAR_W * font / FONT)).floor().max(1.0) as usize;
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// Width of a label, px (see [`CHAR_W`]).
fn text_w(s: &str, font: f64) -> f64 {
    s.chars().count() as f64 * CHAR_W * font / FONT
}

/// Calendar ticks in [lo, hi] (Unix seconds), about `target` intervals
/// apart, on round times: minutes, hours, days, weeks, then month starts.
/// Labels are `MM-DD HH:MM` for steps under a day, else `YYYY-MM-DD`.
fn calendar_ticks(lo: f64, hi: f64, target: usize) -> Vec<(f64, String)> {
    const STEPS: [f64; 14] = [
        60.0,
        300.0,
        600.0,
        900.0,
        1800.0,
        3600.0,
        7200.0,
        10_800.0,
        21_600.0,
        43_200.0,
        86_400.0,
        172_800.0,
        604_800.0,
        1_209_600.0,
    ];
    const MONTHS: [i64; 7] = [1, 2, 3, 6, 12, 60, 120];
    let mut out = Vec::new();
    if !(lo.is_finite() && hi.is_finite() && hi >= lo) {
        return out;
    }
    let span = hi - lo;
    let target = target.max(1) as f64;
    let label = |t: f64, short: bool| {
        let day = (t / 86_400.0).floor() as i64;
        let (y, m, d) = civil_from_days(day);
        let sec = (t - day as f64 * 86_400.0).round() as i64;
        if short {
            format!("{m:02}-{d:02} {:02}:{:02}", sec / 3600, sec / 60 % 60)
        } else {
            format!("{y:04}-{m:02}-{d:02}")
        }
    };
    if let Some(&step) = STEPS.iter().find(|&&st| span / st <= target) {
        let mut k = (lo / step).ceil();
        while out.len() < 100 {
            let t = k * step;
            if t > hi + 1e-6 {
                break;
            }
            out.push((t, label(t, step < 86_400.0)));
            k += 1.0;
        }
        return out;
    }
    // month starts, every `every` months (counted from year 0)
    let months_span = span / (30.44 * 86_400.0);
    let every = MONTHS
        .iter()
        .copied()
        .find(|&k| months_span / k as f64 <= target)
        .unwrap_or_else(|| ((months_span / target / 120.0).ceil() as i64).max(1) * 120);
    let (y, m, _) = civil_from_days((lo / 86_400.0).floor() as i64);
    let mut idx = y * 12 + (m as i64 - 1);
    idx = idx.div_euclid(every) * every;
    while out.len() < 100 {
        let (y, m) = (idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1);
        let t = days_from_civil(y, m, 1) as f64 * 86_400.0;
        if t > hi + 1e-6 {
            break;
        }
        if t >= lo - 1e-6 {
            out.push((t, label(t, false)));
        }
        idx += every;
    }
    out
}

/// The "nice" step (1, 2 or 5 × 10^k) nearest to `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f < 1.5 {
        1.0
    } else if f < 3.0 {
        2.0
    } else if f < 7.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// Tick values in [lo, hi] with about `target` intervals.
fn ticks(lo: f64, hi: f64, target: usize) -> Vec<f64> {
    let step = nice_step((hi - lo) / target.max(1) as f64);
    let mut v = Vec::new();
    let mut k = (lo / step).ceil();
    while v.len() < 100 {
        let x = k * step;
        if x > hi + step * 1e-9 {
            break;
        }
        v.push(x);
        k += 1.0;
    }
    v
}

/// Formats a tick value without trailing zeros.
fn num(v: f64) -> String {
    let r = (v * 1000.0).round() / 1000.0;
    let s = format!("{r:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_string() }
}

/// Renders the series as an SVG document: utilization (%) over time above
/// queue length over time, with axes, tick labels and the (escaped) title.
/// Points with a non-finite coordinate are skipped.
pub fn render_svg(s: &Series, title: &str) -> String {
    let n = s.t.len().min(s.utilization.len()).min(s.queue.len());
    let finite_t = s.t[..n].iter().copied().filter(|x| x.is_finite());
    let (t_lo, t_hi) = finite_t.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let have_data = t_lo.is_finite();
    let (t_lo, t_hi) = if have_data {
        (t_lo, t_hi)
    } else {
        (0.0, 3600.0)
    };
    let (unit, unit_name) = if t_hi - t_lo <= 3.0 * 86_400.0 {
        (3600.0, "hours")
    } else {
        (86_400.0, "days")
    };
    let x_lo = t_lo / unit;
    let mut x_hi = t_hi / unit;
    if x_hi - x_lo < 1e-9 {
        x_hi = x_lo + 1.0;
    }
    let plot_w = WIDTH - LEFT - RIGHT;
    let xpos = |t: f64| LEFT + (t / unit - x_lo) / (x_hi - x_lo) * plot_w;
    // x ticks: (time of the run, label)
    let cal = s.calendar_start_s.filter(|c| c.is_finite());
    let (x_ticks, axis_name): (Vec<(f64, String)>, String) = match cal {
        Some(c) => (
            calendar_ticks(c + x_lo * unit, c + x_hi * unit, 8)
                .into_iter()
                .map(|(t, l)| (t - c, l))
                .collect(),
            "date (UTC)".into(),
        ),
        None => (
            ticks(x_lo, x_hi, 8)
                .into_iter()
                .map(|v| (v * unit, num(v)))
                .collect(),
            format!("time ({unit_name})"),
        ),
    };

    let q_max = s.queue[..n]
        .iter()
        .copied()
        .filter(|q| q.is_finite())
        .fold(0.0f64, f64::max);
    let q_step = nice_step(q_max.max(1.0) / 5.0);
    let q_top = (q_max.max(1.0) / q_step).ceil() * q_step;

    let n_panels = 2 + s.extra.len();
    let height = TOP + (n_panels - 1) as f64 * PANEL_STEP + PANEL_H + BOTTOM;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        o,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(
        o,
        r#"<text x="{}" y="30" text-anchor="middle" font-size="{TITLE_FONT}" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(&fit(title, WIDTH - 20.0, TITLE_FONT))
    );

    struct Panel<'a> {
        label: &'a str,
        y_top: f64,
        y_ticks: Vec<f64>,
        lines: Vec<(&'a str, &'a [f64], &'a str)>,
        scale: f64,
        limit: Option<(&'a str, f64)>,
    }
    let mut panels = vec![
        Panel {
            label: "utilization (%)",
            y_top: 100.0,
            y_ticks: ticks(0.0, 100.0, 5),
            lines: vec![("", &s.utilization[..n], "#1f77b4")],
            scale: 100.0,
            limit: None,
        },
        Panel {
            label: "waiting jobs",
            y_top: q_top,
            y_ticks: ticks(0.0, q_top, 5),
            lines: vec![("", &s.queue[..n], "#d62728")],
            scale: 1.0,
            limit: None,
        },
    ];
    for e in &s.extra {
        let mut hi = e
            .lines
            .iter()
            .flat_map(|(_, v)| v.iter().take(n))
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        if let Some((_, l)) = e.limit
            && l.is_finite()
        {
            hi = hi.max(l);
        }
        let step = nice_step(hi.max(1e-9) / 5.0);
        let top = ((hi.max(1e-9) * 1.05) / step).ceil() * step;
        panels.push(Panel {
            label: &e.label,
            y_top: top,
            y_ticks: ticks(0.0, top, 5),
            lines: e
                .lines
                .iter()
                .enumerate()
                .map(|(i, (name, v))| {
                    (
                        name.as_str(),
                        &v[..n.min(v.len())],
                        COLOURS[i % COLOURS.len()],
                    )
                })
                .collect(),
            scale: 1.0,
            limit: e.limit.as_ref().map(|(name, v)| (name.as_str(), *v)),
        });
    }
    for (pi, panel) in panels.iter().enumerate() {
        let Panel {
            label,
            y_top,
            y_ticks,
            lines,
            scale,
            limit,
        } = panel;
        let top = TOP + pi as f64 * PANEL_STEP;
        let bottom = top + PANEL_H;
        let ypos = |v: f64| bottom - (v / y_top).clamp(0.0, 1.0) * (bottom - top);
        let _ = writeln!(o, r#"<g class="panel">"#);
        // Grid and y ticks.
        for &v in y_ticks {
            let y = ypos(v);
            let _ = writeln!(
                o,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##,
                WIDTH - RIGHT
            );
            let _ = writeln!(
                o,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y + 4.0,
                fit(&num(v), LEFT - 8.0, FONT)
            );
        }
        // x ticks: a label centred on its tick, moved in if it would
        // stick out of the drawing.
        for (t, l) in &x_ticks {
            let x = xpos(*t);
            let _ = writeln!(
                o,
                r##"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{:.1}" stroke="#000"/>"##,
                bottom + 5.0
            );
            let half = text_w(l, FONT) / 2.0;
            let lx = x.clamp(half + 2.0, WIDTH - half - 2.0);
            let _ = writeln!(
                o,
                r#"<text x="{lx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                bottom + 18.0,
                escape(l)
            );
        }
        // Axes.
        let _ = writeln!(
            o,
            r##"<polyline fill="none" stroke="#000" points="{LEFT},{top} {LEFT},{bottom} {:.1},{bottom}"/>"##,
            WIDTH - RIGHT
        );
        let _ = writeln!(
            o,
            r#"<text x="20" y="{0:.1}" text-anchor="middle" transform="rotate(-90 20 {0:.1})">{1}</text>"#,
            (top + bottom) / 2.0,
            escape(&fit(label, PANEL_H, FONT))
        );
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{axis_name}</text>"#,
            LEFT + plot_w / 2.0,
            bottom + 34.0
        );
        if let Some((name, v)) = limit
            && v.is_finite()
        {
            let y = ypos(*v);
            let _ = writeln!(
                o,
                r##"<line class="limit" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#d62728" stroke-dasharray="6 4"/>"##,
                WIDTH - RIGHT
            );
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#d62728">{}</text>"##,
                WIDTH - RIGHT - 4.0,
                (y - 4.0).max(FONT),
                escape(&fit(name, plot_w - 8.0, FONT))
            );
        }
        // Data.
        if have_data {
            for (li, (name, values, colour)) in lines.iter().enumerate() {
                let mut pts = String::new();
                for i in 0..values.len().min(n) {
                    let (t, v) = (s.t[i], values[i] * scale);
                    if t.is_finite() && v.is_finite() {
                        if !pts.is_empty() {
                            pts.push(' ');
                        }
                        let _ = write!(pts, "{:.1},{:.1}", xpos(t), ypos(v));
                    }
                }
                let _ = writeln!(
                    o,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{pts}"/>"#
                );
                if !name.is_empty() {
                    let (col, row) = (li % LEGEND_PER_ROW, li / LEGEND_PER_ROW);
                    let _ = writeln!(
                        o,
                        r#"<text x="{:.1}" y="{:.1}" fill="{colour}">{}</text>"#,
                        LEFT + 8.0 + col as f64 * LEGEND_STEP,
                        top + 14.0 + row as f64 * 16.0,
                        escape(&fit(name, LEGEND_STEP - 8.0, FONT))
                    );
                }
            }
        } else {
            let _ = writeln!(
                o,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
                LEFT + plot_w / 2.0,
                (top + bottom) / 2.0
            );
        }
        let _ = writeln!(o, "</g>");
    }
    o.push_str("</svg>\n");
    o
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// ∫ utilization dt over the covered part.
    util_integral: f64,
    /// Covered time.
    covered: f64,
    /// Largest queue held for a positive time in the bucket.
    max_queue: usize,
}

impl Bucket {
    fn merge(a: Bucket, b: Bucket) -> Bucket {
        Bucket {
            util_integral: a.util_integral + b.util_integral,
            covered: a.covered + b.covered,
            max_queue: a.max_queue.max(b.max_queue),
        }
    }
}

/// Constant-memory recorder of utilization and queue length over time.
///
/// The state given to [`Timeline::record`] holds from its time until the
/// next record (a step function). Buckets start at the first record's time
/// with a width of one second (see [`Timeline::with_initial_width`]).
#[derive(Debug, Clone)]
pub struct Timeline {
    buckets: Vec<Bucket>,
    width: f64,
    t0: f64,
    /// Last record: time, utilization, queue; `None` before the first.
    last: Option<(f64, f64, usize)>,
}

impl Timeline {
    /// A recorder keeping at most `max_points` buckets (at least 2; an odd
    /// count is rounded down to even).
    pub fn new(max_points: usize) -> Timeline {
        Timeline::with_initial_width(max_points, 1.0)
    }

    /// As [`Timeline::new`], with the initial bucket width in seconds (the
    /// finest resolution; a non-positive or non-finite width means 1 s).
    pub fn with_initial_width(max_points: usize, width_s: f64) -> Timeline {
        let n = (max_points.max(2) / 2) * 2;
        Timeline {
            buckets: vec![Bucket::default(); n],
            width: if width_s.is_finite() && width_s > 0.0 {
                width_s
            } else {
                1.0
            },
            t0: 0.0,
            last: None,
        }
    }

    fn index(&self, t: f64) -> usize {
        let i = ((t - self.t0) / self.width).floor();
        if i > 0.0 { i as usize } else { 0 }
    }

    /// Halves the bucket count in use by merging adjacent pairs; the width
    /// doubles.
    fn coarsen(&mut self) {
        let half = self.buckets.len() / 2;
        for i in 0..half {
            self.buckets[i] = Bucket::merge(self.buckets[2 * i], self.buckets[2 * i + 1]);
        }
        for b in &mut self.buckets[half..] {
            *b = Bucket::default();
        }
        self.width *= 2.0;
    }

    /// Records the state from time `t` on. Times must not decrease (an
    /// earlier time is treated as the last one); a non-finite time is
    /// ignored; a non-finite utilization counts as 0.
    pub fn record(&mut self, t: f64, utilization: f64, queue: usize) {
        if !t.is_finite() {
            return;
        }
        let u = if utilization.is_finite() {
            utilization
        } else {
            0.0
        };
        let Some((tp, up, qp)) = self.last else {
            self.t0 = t;
            self.last = Some((t, u, queue));
            return;
        };
        let t = t.max(tp);
        if t > tp {
            while self.index(t) >= self.buckets.len() {
                self.coarsen();
            }
            let last = self.index(t);
            let mut cur = tp;
            for k in self.index(tp)..=last {
                let end = if k == last {
                    t
                } else {
                    (self.t0 + (k + 1) as f64 * self.width).clamp(cur, t)
                };
                let dt = end - cur;
                if dt > 0.0 {
                    let b = &mut self.buckets[k];
                    b.util_integral += up * dt;
                    b.covered += dt;
                    b.max_queue = b.max_queue.max(qp);
                }
                cur = end;
            }
        }
        self.last = Some((t, u, queue));
    }

    /// Current bucket width in seconds.
    pub fn bucket_width(&self) -> f64 {
        self.width
    }

    /// Buckets in use (what [`Timeline::series`] returns).
    pub fn len(&self) -> usize {
        match self.last {
            None => 0,
            Some((t, _, _)) => self.index(t).min(self.buckets.len() - 1) + 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// Time-weighted mean utilization from the first to the last record
    /// (the last utilization when they coincide; 0 when empty).
    pub fn mean_utilization(&self) -> f64 {
        let (integral, covered) = self
            .buckets
            .iter()
            .fold((0.0, 0.0), |(i, c), b| (i + b.util_integral, c + b.covered));
        match self.last {
            None => 0.0,
            Some((_, u, _)) if covered <= 0.0 => u,
            Some(_) => integral / covered,
        }
    }

    /// One point per bucket in use: the midpoint of its covered time, the
    /// time-weighted mean utilization and the largest queue held over it.
    /// The state of the last record counts once it has been held for some
    /// time, except in a bucket that nothing covers yet (the last one, just
    /// begun), which shows that state at its time.
    pub fn series(&self) -> Series {
        let mut s = Series::default();
        let Some((t_last, u_last, q_last)) = self.last else {
            return s;
        };
        let n = self.len();
        for (k, b) in self.buckets[..n].iter().enumerate() {
            let start = self.t0 + k as f64 * self.width;
            let end = (start + self.width).min(t_last);
            if b.covered > 0.0 {
                s.t.push((start + end.max(start)) / 2.0);
                s.utilization.push(b.util_integral / b.covered);
                s.queue.push(b.max_queue as f64);
            } else {
                // Only the last bucket can be uncovered: it has just begun.
                s.t.push(t_last);
                s.utilization.push(u_last);
                s.queue.push(q_last as f64);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that tags balance and that `&` only starts an entity.
    fn well_formed(svg: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(i) = rest.find('<') {
            let text = &rest[..i];
            for (j, _) in text.match_indices('&') {
                let ent = &text[j..];
                if !["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                    .iter()
                    .any(|e| ent.starts_with(e))
                {
                    return Err(format!("bare & in {text:?}"));
                }
            }
            let close = rest[i..].find('>').ok_or("unterminated tag")? + i;
            let tag = &rest[i + 1..close];
            if tag.contains('<') {
                return Err(format!("< inside tag {tag:?}"));
            }
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("stray </{name}>"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().ok_or("empty tag")?;
                stack.push(name.to_string());
            }
            // Quotes in attributes must balance.
            if tag.matches('"').count() & 1 == 1 {
                return Err(format!("unbalanced quotes in {tag:?}"));
            }
            rest = &rest[close + 1..];
        }
        if stack.is_empty() {
            Ok(())
        } else {
            Err(format!("unclosed {stack:?}"))
        }
    }

    fn sample(hours: f64) -> Series {
        let n = 50;
        let mut s = Series::default();
        for i in 0..n {
            let t = i as f64 / (n - 1) as f64 * hours * 3600.0;
            s.t.push(t);
            s.utilization.push((i as f64 / 10.0).sin().abs());
            s.queue.push((i * 3 % 17) as f64);
        }
        s
    }

    #[test]
    fn svg_is_well_formed_and_escaped() {
        let svg = render_svg(&sample(10.0), "run <a> & \"b\" 'c'");
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        well_formed(&svg).unwrap();
        assert!(svg.contains("run &lt;a&gt; &amp; &quot;b&quot; &apos;c&apos;"));
        assert_eq!(svg.matches("stroke-width=\"1.5\" points=\"").count(), 2);
        assert!(svg.contains("time (hours)"));
        assert!(svg.contains("utilization (%)") && svg.contains("waiting jobs"));
        // A data polyline has one point per sample.
        let line = svg
            .lines()
            .find(|l| l.contains("#1f77b4"))
            .unwrap()
            .split("points=\"")
            .nth(1)
            .unwrap();
        assert_eq!(line.split(' ').count(), 50);
    }

    #[test]
    fn svg_uses_days_for_long_runs_and_handles_edge_cases() {
        let svg = render_svg(&sample(24.0 * 30.0), "month");
        assert!(svg.contains("time (days)"));
        well_formed(&svg).unwrap();
        let empty = render_svg(&Series::default(), "");
        well_formed(&empty).unwrap();
        assert!(empty.contains("no data"));
        let one = Series {
            t: vec![5.0, f64::NAN],
            utilization: vec![0.5, 0.2],
            queue: vec![0.0, f64::INFINITY],
            ..Series::default()
        };
        let svg = render_svg(&one, "x");
        well_formed(&svg).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // extra panels: power against a budget, two intensity lines
        let mut e = sample(48.0);
        let n = e.t.len();
        e.extra.push(ExtraPanel {
            label: "power (MW)".into(),
            lines: vec![("facility".into(), vec![3.0; n])],
            limit: Some(("budget 3.5 MW".into(), 3.5)),
        });
        e.extra.push(ExtraPanel {
            label: "grid gCO2e/kWh".into(),
            lines: vec![
                ("FR".into(), vec![30.0; n]),
                ("DE".into(), vec![f64::NAN; n]),
            ],
            limit: None,
        });
        let svg = render_svg(&e, "energy");
        well_formed(&svg).unwrap();
        assert_eq!(svg.matches(r#"<g class="panel">"#).count(), 4);
        assert_eq!(svg.matches(r#"class="limit""#).count(), 1);
        assert!(svg.contains(">budget 3.5 MW<") && svg.contains(">FR<") && svg.contains(">DE<"));
        assert!(!svg.contains("NaN"));
    }

    /// Checks that every `<text>` lies inside the drawing's width × height,
    /// given its anchor, font size and rotation, at [`CHAR_W`] px per
    /// character at 12 px (ascent 0.8, descent 0.25 of the font size).
    fn labels_inside(svg: &str) -> Result<usize, String> {
        let attr = |tag: &str, name: &str| -> Option<String> {
            let k = format!(" {name}=\"");
            let i = tag.find(&k)? + k.len();
            Some(tag[i..i + tag[i..].find('"')?].to_string())
        };
        let num = |v: Option<String>, what: &str| -> Result<f64, String> {
            v.ok_or(format!("no {what}"))?
                .parse::<f64>()
                .map_err(|e| format!("{what}: {e}"))
        };
        let head = &svg[..svg.find('>').ok_or("no svg tag")?];
        let (w, h) = (
            num(attr(head, "width"), "width")?,
            num(attr(head, "height"), "height")?,
        );
        let view = attr(head, "viewBox").ok_or("no viewBox")?;
        assert_eq!(view, format!("0 0 {w} {h}"));
        let mut n = 0;
        let mut rest = svg;
        while let Some(i) = rest.find("<text") {
            let end = rest[i..].find('>').ok_or("unterminated text")? + i;
            let tag = &rest[i..end];
            let close = rest[end..].find("</text>").ok_or("unclosed text")? + end;
            let content = rest[end + 1..close]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'");
            rest = &rest[close..];
            let x = num(attr(tag, "x"), "x")?;
            let y = num(attr(tag, "y"), "y")?;
            let font = attr(tag, "font-size").map_or(Ok(FONT), |f| num(Some(f), "font-size"))?;
            let len = content.chars().count() as f64 * CHAR_W * font / 12.0;
            let before = match attr(tag, "text-anchor").as_deref() {
                Some("middle") => len / 2.0,
                Some("end") => len,
                _ => 0.0,
            };
            // (left, right, top, bottom)
            let bbox = if attr(tag, "transform").is_some_and(|t| t.starts_with("rotate(-90")) {
                // reads upwards from (x, y)
                (
                    x - 0.8 * font,
                    x + 0.25 * font,
                    y - (len - before),
                    y + before,
                )
            } else {
                (
                    x - before,
                    x + len - before,
                    y - 0.8 * font,
                    y + 0.25 * font,
                )
            };
            if bbox.0 < 0.0 || bbox.1 > w || bbox.2 < 0.0 || bbox.3 > h {
                return Err(format!("{content:?} at {bbox:?} outside {w} x {h}: {tag}"));
            }
            n += 1;
        }
        Ok(n)
    }

    #[test]
    fn every_label_lies_inside_the_drawing() {
        let mut cases = vec![
            (sample(10.0), "ten hours".to_string()),
            (sample(24.0 * 30.0), "a month".to_string()),
            (sample(24.0 * 1000.0), "x".repeat(300)),
            (Series::default(), String::new()),
        ];
        for hours in [0.2, 10.0, 80.0, 24.0 * 30.0, 24.0 * 400.0, 24.0 * 4000.0] {
            let mut s = sample(hours);
            s.calendar_start_s = Some(1_672_531_200.0);
            cases.push((s, format!("calendar {hours} h")));
        }
        let mut e = sample(48.0);
        let n = e.t.len();
        e.extra.push(ExtraPanel {
            label: "a very long y-axis label that cannot fit along one panel of the plot".into(),
            lines: (0..9)
                .map(|i| (format!("line number {i} with a long name"), vec![i as f64; n]))
                .collect(),
            limit: Some(("a limit line with a name far longer than the plot is wide, repeated: a limit line with a name far longer than the plot is wide".into(), 100.0)),
        });
        e.queue[3] = 123_456_789_012.0;
        cases.push((e, "extra".into()));
        for (s, title) in &cases {
            let svg = render_svg(s, title);
            well_formed(&svg).unwrap();
            let n = labels_inside(&svg).unwrap_or_else(|e| panic!("{title}: {e}"));
            assert!(n > 3, "{title}: {n} labels");
        }
    }

    #[test]
    fn calendar_start_labels_the_axis_with_dates() {
        let at = |hours: f64| {
            let mut s = sample(hours);
            s.calendar_start_s = Some(1_672_531_200.0); // 2023-01-01T00:00Z
            render_svg(&s, "dates")
        };
        // 30 days: weekly ticks on dates
        let svg = at(24.0 * 30.0);
        assert!(svg.contains("date (UTC)") && !svg.contains("time (days)"));
        assert!(
            svg.contains(">2023-01-05<") && svg.contains(">2023-01-26<"),
            "{svg}"
        );
        // 10 hours: two-hourly ticks with the time of day
        let svg = at(10.0);
        assert!(
            svg.contains(">01-01 00:00<") && svg.contains(">01-01 10:00<"),
            "{svg}"
        );
        assert!(!svg.contains("time (hours)"));
        // 400 days: month starts
        let svg = at(24.0 * 400.0);
        assert!(
            svg.contains(">2023-03-01<") && svg.contains(">2024-01-01<"),
            "{svg}"
        );
        // without a calendar start: hours
        assert!(render_svg(&sample(10.0), "").contains("time (hours)"));
    }

    #[test]
    fn calendar_ticks_fall_on_round_times() {
        let d = 86_400.0;
        let c = 1_672_531_200.0; // 2023-01-01
        let t = calendar_ticks(c + 0.5 * d, c + 2.6 * d, 8);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "01-01 12:00",
                "01-02 00:00",
                "01-02 12:00",
                "01-03 00:00",
                "01-03 12:00"
            ]
        );
        assert!(t.iter().all(|(x, _)| x.rem_euclid(43_200.0) == 0.0));
        // a leap year's February
        let t = calendar_ticks(c + 400.0 * d, c + 480.0 * d, 8);
        assert!(t.iter().any(|(_, l)| l == "2024-02-29"), "{t:?}");
        let t = calendar_ticks(c, c + 3.0 * 365.0 * d, 8);
        assert_eq!(t[0].1, "2023-01-01");
        assert_eq!(t[1].1, "2023-07-01");
        assert!(calendar_ticks(f64::NAN, c, 8).is_empty());
        assert!(calendar_ticks(c, c - 1.0, 8).is_empty());
    }

    #[test]
    fn ticks_are_nice() {
        assert_eq!(
            ticks(0.0, 100.0, 5),
            vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        assert_eq!(ticks(0.3, 2.9, 4), vec![0.5, 1.0, 1.5, 2.0, 2.5]);
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(20.0), "20");
        assert_eq!(num(-0.0001), "0");
    }

    #[test]
    fn timeline_keeps_bounded_buckets_and_exact_means() {
        let max_points = 1000;
        let mut tl = Timeline::new(max_points);
        let n = 10_000_000u64;
        let step = 250_000.0;
        for i in 0..n {
            let t = i as f64 * 0.1;
            let u = if t < step { 1.0 } else { 0.25 };
            tl.record(t, u, (i % 100) as usize);
        }
        let t_end = (n - 1) as f64 * 0.1;
        assert!(tl.len() <= max_points && tl.len() > max_points / 4);
        let expect = (step + 0.25 * (t_end - step)) / t_end;
        assert!(
            (tl.mean_utilization() - expect).abs() < 1e-9,
            "{}",
            tl.mean_utilization()
        );
        let s = tl.series();
        assert_eq!(s.t.len(), tl.len());
        assert!(s.t.windows(2).all(|w| w[0] < w[1]));
        let w = tl.bucket_width();
        for i in 0..s.t.len() {
            let start = i as f64 * w;
            if start + w <= step {
                assert!((s.utilization[i] - 1.0).abs() < 1e-9);
            } else if start >= step {
                assert!((s.utilization[i] - 0.25).abs() < 1e-9);
            } else {
                assert!(s.utilization[i] > 0.25 && s.utilization[i] < 1.0);
            }
            assert_eq!(s.queue[i], 99.0);
        }
    }

    #[test]
    fn timeline_spreads_long_steps_and_tracks_held_queues() {
        let mut tl = Timeline::new(8);
        assert!(tl.is_empty() && tl.series().t.is_empty());
        tl.record(100.0, 0.5, 3);
        assert_eq!(tl.len(), 1);
        assert_eq!(tl.mean_utilization(), 0.5);
        // A bucket not yet covered shows the current state.
        let s = tl.series();
        assert_eq!((s.t[0], s.utilization[0], s.queue[0]), (100.0, 0.5, 3.0));
        // A transient queue of 50 at one instant is not held.
        tl.record(100.0, 0.5, 50);
        tl.record(100.0, 0.5, 3);
        tl.record(10_000.0, 0.0, 0);
        tl.record(20_000.0, 1.0, 1);
        assert!(tl.len() <= 8);
        let s = tl.series();
        assert!((tl.mean_utilization() - 4950.0 / 19_900.0).abs() < 1e-12);
        assert!(s.queue.iter().all(|&q| q <= 3.0));
        assert_eq!(s.queue[0], 3.0);
        // The last state has been held for no time yet: the last bucket
        // shows what was held over it.
        assert_eq!(*s.utilization.last().unwrap(), 0.0);
        assert_eq!(*s.queue.last().unwrap(), 0.0);
        assert!(*s.t.last().unwrap() < 20_000.0);
        // Out-of-order and non-finite records are tolerated.
        tl.record(f64::NAN, 1.0, 9);
        tl.record(5.0, f64::NAN, 1);
        assert!((tl.mean_utilization() - 4950.0 / 19_900.0).abs() < 1e-12);
        let svg = render_svg(&tl.series(), "t");
        well_formed(&svg).unwrap();
    }
}
