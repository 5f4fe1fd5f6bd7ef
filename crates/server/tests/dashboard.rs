//! `deploy/grafana-dashboard.json` names only metrics (and labels) that
//! `/metrics` really exports: every `gigafab_*` name in its expressions must
//! be a sample name of `gigafab_server::metrics::render`, and every label it
//! selects, groups by or shows in a legend must be a label of one of the
//! metrics its expression names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use gigafab_server::metrics::{
    AllocSnap, HttpLabel, Metrics, PoolSnap, SiteSnap, Snapshot, render,
};
use serde_json::Value;

fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana-dashboard.json")
}

/// Exposition text with at least one sample of every counter, family and
/// histogram, and one pool, one site (with a budget) and one allocation.
fn exposition() -> String {
    let m = Metrics::default();
    m.jobs_submitted.inc();
    m.jobs_started.inc();
    m.finished("completed");
    m.health_transitions
        .get_or_create(&gigafab_server::metrics::StateLabel {
            state: "draining".into(),
        })
        .inc();
    m.xid_errors
        .get_or_create(&gigafab_server::metrics::XidLabel {
            node: "h100-0".into(),
            gpu: "1".into(),
            xid: "79".into(),
        })
        .inc();
    m.endpoint("chat").request(200, 0.1, 0.5, 10, 20);
    m.endpoint("chat").request(429, 0.0, 0.0, 0, 0);
    m.schedule_pass_seconds.observe(0.002);
    m.commit_seconds.observe(0.004);
    m.http_requests
        .get_or_create(&HttpLabel {
            method: "GET".into(),
            code: "200".into(),
        })
        .inc();
    let s = Snapshot {
        pools: vec![PoolSnap {
            name: "h100".into(),
            queued: 2,
            oldest_wait_s: 30.0,
            busy: 3,
            idle: 1,
            drained: 0,
            down: 0,
            powered_down: 0,
        }],
        sites: vec![SiteSnap {
            name: "local".into(),
            power_w: 2500.0,
            budget_w: Some(1e6),
            intensity: Some(56.0),
            carbon_g: Some(1200.0),
        }],
        allocations: vec![AllocSnap {
            id: 1,
            name: "default".into(),
            org: "default".into(),
            queued: 2,
            oldest_wait_s: 30.0,
            used_gpu_hours: 1.5,
            granted_gpu_hours: 100.0,
            energy_kwh: 0.7,
        }],
        queued: 2,
        running: 3,
        health: vec![("healthy".into(), 3), ("draining".into(), 1)],
        devices: vec![gigafab_server::metrics::DeviceSnap {
            node: "h100-0".into(),
            gpu: 1,
            temperature_c: Some(61.0),
            power_w: Some(420.0),
        }],
    };
    render(&m, &s)
}

/// What the exposition text says: sample name → label names, and the
/// metric families declared as histograms.
struct Exported {
    samples: BTreeMap<String, BTreeSet<String>>,
    histograms: BTreeSet<String>,
}

fn exported(text: &str) -> Exported {
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut histograms = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some("histogram")) = (it.next(), it.next()) {
                histograms.insert(name.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = samples.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let close = line.find('}').expect("a label set ends with `}`");
            for (name, _) in selector_labels(&line[end + 1..close]) {
                labels.insert(name);
            }
        }
    }
    Exported {
        samples,
        histograms,
    }
}

/// The `name op "value"` pairs of a label selector's inside (`a="x",b=~"y"`).
fn selector_labels(inside: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = inside.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                .collect();
        if name.is_empty() {
            break;
        }
        while chars
            .next_if(|c| matches!(c, '=' | '!' | '~' | ' '))
            .is_some()
        {}
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        }
        out.push((name, value));
    }
    out
}

/// Every `gigafab_[a-z_]+` name in `expr`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("gigafab_") {
        let start = i + off;
        let mut end = start + "gigafab_".len();
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        let word_start =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let word_end = end >= b.len() || !b[end].is_ascii_alphanumeric();
        if word_start && word_end && end > start + "gigafab_".len() {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Label names an expression relies on: those of `{...}` selectors and of
/// `by (...)`, `without (...)`, `on (...)`, `ignoring (...)`,
/// `group_left (...)`, `group_right (...)` clauses.
fn label_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .expect("`{` closed");
        for (name, _) in selector_labels(&rest[open + 1..close]) {
            out.insert(name);
        }
        rest = &rest[close + 1..];
    }
    for kw in [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ] {
        let mut rest = expr;
        while let Some(at) = rest.find(kw) {
            let before_ok = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
            let after = rest[at + kw.len()..].trim_start();
            if before_ok && after.starts_with('(') {
                let close = after.find(')').expect("`(` closed");
                for l in after[1..close].split(',') {
                    let l = l.trim();
                    if !l.is_empty() {
                        out.insert(l.to_string());
                    }
                }
            }
            rest = &rest[at + kw.len()..];
        }
    }
    out
}

/// Names in `{{label}}` placeholders of a legend.
fn legend_labels(legend: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = legend;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..]
            .find("}}")
            .map(|c| open + c)
            .expect("`{{` closed");
        out.insert(rest[open + 2..close].trim().to_string());
        rest = &rest[close + 2..];
    }
    out
}

/// Every panel, those inside rows included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(ps: &'a Value, out: &mut Vec<&'a Value>) {
        for p in ps.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The problems of a dashboard against the exported metrics; empty: none.
fn problems(dash: &Value, ex: &Exported) -> Vec<String> {
    let mut bad = Vec::new();
    // a name is known if it is a sample name, or `_bucket`, `_sum`,
    // `_count` of a histogram (a histogram's bare name is no sample)
    let known = |name: &str| -> bool {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && ex.histograms.contains(base)
            {
                return true;
            }
        }
        ex.samples.contains_key(name)
    };
    let labels_of = |names: &BTreeSet<String>| -> BTreeSet<String> {
        names
            .iter()
            .filter_map(|n| ex.samples.get(n))
            .flatten()
            .cloned()
            .collect()
    };
    let check_expr = |bad: &mut Vec<String>, where_: &str, expr: &str, legend: &str| {
        let names = metric_names(expr);
        if names.is_empty() {
            bad.push(format!("{where_}: `{expr}` names no gigafab metric"));
        }
        for n in &names {
            if !known(n) {
                bad.push(format!("{where_}: `{n}` is not exported by /metrics"));
            }
        }
        let have = labels_of(&names);
        for l in label_names(expr).iter().chain(&legend_labels(legend)) {
            // `le` is the bucket label of histograms
            if l == "le" && names.iter().any(|n| n.ends_with("_bucket")) {
                continue;
            }
            if !have.contains(l) {
                bad.push(format!(
                    "{where_}: label `{l}` is not a label of {names:?} (they have {have:?})"
                ));
            }
        }
    };
    for p in panels(dash) {
        let title = p["title"].as_str().unwrap_or("(untitled)");
        if p["type"] == "row" {
            continue;
        }
        let ds = &p["datasource"];
        if !((ds.is_object() && ds["uid"].is_string()) || ds.is_string()) {
            bad.push(format!("panel `{title}`: no datasource"));
        }
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if targets.is_empty() {
            bad.push(format!("panel `{title}`: no target"));
        }
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            let legend = t["legendFormat"].as_str().unwrap_or("");
            check_expr(&mut bad, &format!("panel `{title}`"), expr, legend);
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = match &v["query"] {
            Value::String(s) => s.as_str(),
            q => q["query"].as_str().unwrap_or(""),
        };
        if v["type"] == "query" {
            let name = v["name"].as_str().unwrap_or("?");
            // label_values(metric, label)
            let expr = q
                .trim()
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'))
                .and_then(|s| s.rsplit_once(','))
                .map(|(m, l)| format!("sum by ({}) ({})", l.trim(), m.trim()))
                .unwrap_or_else(|| q.to_string());
            check_expr(&mut bad, &format!("variable `{name}`"), &expr, "");
        }
    }
    bad
}

fn load() -> Value {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: cannot read: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
}

#[test]
fn dashboard_uses_only_exported_metrics_and_labels() {
    let dash = load();
    let ex = exported(&exposition());
    let bad = problems(&dash, &ex);
    assert!(
        bad.is_empty(),
        "deploy/grafana-dashboard.json:\n  {}\nexported samples: {:?}",
        bad.join("\n  "),
        ex.samples.keys().collect::<Vec<_>>()
    );
}

#[test]
fn dashboard_is_an_importable_grafana_dashboard() {
    let dash = load();
    assert_eq!(dash["schemaVersion"], 39);
    let inputs = dash["__inputs"].as_array().expect("`__inputs`");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "a DS_PROMETHEUS datasource input"
    );
    let ps = panels(&dash);
    assert!(ps.iter().filter(|p| p["type"] != "row").count() >= 10);
    let mut ids = BTreeSet::new();
    for p in &ps {
        let id = p["id"].as_i64().expect("every panel has an id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let g = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(g[k].is_u64(), "panel {id}: gridPos.{k}");
        }
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24);
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {id}: the datasource is the input"
            );
        }
    }
}

#[test]
fn every_exported_metric_is_on_the_dashboard() {
    let dash = load();
    let ex = exported(&exposition());
    let mut used = BTreeSet::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            used.extend(metric_names(t["expr"].as_str().unwrap_or("")));
        }
    }
    let family = |sample: &str| -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix)
                && ex.histograms.contains(base)
            {
                return base.to_string();
            }
        }
        sample.to_string()
    };
    let used: BTreeSet<String> = used.iter().map(|n| family(n)).collect();
    let missing: Vec<String> = ex
        .samples
        .keys()
        .map(|s| family(s))
        .filter(|f| !used.contains(f))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(missing.is_empty(), "not on the dashboard: {missing:?}");
}

#[test]
fn a_misspelt_or_unknown_name_is_caught() {
    let ex = exported(&exposition());
    let ds = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let dash = |expr: &str, legend: &str| {
        serde_json::json!({"panels": [{"id": 1, "title": "t", "type": "timeseries",
            "datasource": ds, "targets": [{"expr": expr, "legendFormat": legend}]}]})
    };
    let ok = |expr: &str, legend: &str| problems(&dash(expr, legend), &ex).is_empty();
    assert!(ok(
        "sum by (state) (rate(gigafab_jobs_finished_total[5m]))",
        "{{state}}"
    ));
    assert!(ok(
        "histogram_quantile(0.99, sum by (le) (rate(gigafab_commit_seconds_bucket[5m])))",
        ""
    ));
    // misspelt, without the counter's `_total`, a histogram's bare name,
    // a gauge with a histogram suffix, a label the metric lacks
    assert!(!ok("gigafab_pool_queue_jobs", ""));
    assert!(!ok("rate(gigafab_jobs_submitted[5m])", ""));
    assert!(!ok("gigafab_schedule_pass_seconds", ""));
    assert!(!ok("gigafab_jobs_queued_count", ""));
    assert!(!ok("sum by (status) (gigafab_http_requests_total)", ""));
    assert!(!ok("gigafab_accelerators", "{{node}}"));
    // a panel without a datasource or without a target
    let no_ds = serde_json::json!({"panels": [{"id": 1, "title": "t", "type": "stat",
        "targets": [{"expr": "gigafab_jobs_running"}]}]});
    assert!(!problems(&no_ds, &ex).is_empty());
    let no_target = serde_json::json!({"panels": [{"id": 1, "title": "t", "type": "stat",
        "datasource": ds, "targets": []}]});
    assert!(!problems(&no_target, &ex).is_empty());
}
