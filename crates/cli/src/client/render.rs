//! Table views of the server's objects (pure: JSON in, text out).

use super::duration::format_duration;
use super::fmt::{
    Table, accel, hours, job_label, job_reason, percent, shell_join, short_time, text, truncate,
};
use serde_json::Value;

/// Widest NAME/COMMAND cell of the jobs table.
const LABEL_WIDTH: usize = 32;
/// Widest REASON cell of the jobs table.
const REASON_WIDTH: usize = 60;
/// Widest JOBS cell of the fleet table.
const NODE_JOBS_WIDTH: usize = 40;

/// `gigafab org list`.
pub fn orgs(items: &[Value]) -> String {
    let mut t = Table::new(&["ID", "NAME", "CATEGORY", "CREATED"]).right_align(&[0]);
    for o in items {
        t.row([
            text(&o["id"]),
            text(&o["name"]),
            text(&o["category"]),
            short_time(&o["created_at"]),
        ]);
    }
    t.render()
}

/// `gigafab project list`.
pub fn projects(items: &[Value]) -> String {
    let mut t = Table::new(&["ID", "ORG", "NAME", "MEMBERS"]).right_align(&[0]);
    for p in items {
        let members: Vec<String> = p["members"]
            .as_array()
            .map(|m| m.iter().map(text).collect())
            .unwrap_or_default();
        t.row([
            text(&p["id"]),
            text(&p["org"]),
            text(&p["name"]),
            if members.is_empty() {
                "(any member)".into()
            } else {
                members.join(",")
            },
        ]);
    }
    t.render()
}

/// `gigafab user list`.
pub fn users(items: &[Value]) -> String {
    let mut t = Table::new(&["ID", "NAME", "ORG", "ROLE"]).right_align(&[0]);
    for u in items {
        t.row([
            text(&u["id"]),
            text(&u["name"]),
            text(&u["org"]),
            text(&u["role"]),
        ]);
    }
    t.render()
}

/// `gigafab alloc list`.
pub fn allocations(items: &[Value]) -> String {
    let mut t = Table::new(&[
        "ID",
        "ORG",
        "NAME",
        "GRANTED (GPU-h)",
        "USED (GPU-h)",
        "USED%",
        "QOS",
        "VALID FROM",
        "VALID UNTIL",
        "STATE",
    ])
    .right_align(&[0, 3, 4, 5, 6]);
    for a in items {
        t.row([
            text(&a["id"]),
            text(&a["org"]),
            text(&a["name"]),
            hours(&a["granted_gpu_hours"]),
            hours(&a["used_gpu_hours"]),
            percent(&a["used_gpu_hours"], &a["granted_gpu_hours"]),
            text(&a["qos_priority"]),
            short_time(&a["valid_from"]),
            short_time(&a["valid_until"]),
            text(&a["state"]),
        ]);
    }
    t.render()
}

/// One allocation in a sentence, for messages: `3 acme-2026 (org acme,
/// active, 987.5 of 1000.0 GPU-h left)`.
pub fn allocation_brief(a: &Value) -> String {
    let left = match (
        a["granted_gpu_hours"].as_f64(),
        a["used_gpu_hours"].as_f64(),
    ) {
        (Some(g), Some(u)) => format!(", {:.1} of {:.1} GPU-h left", (g - u).max(0.0), g),
        _ => String::new(),
    };
    format!(
        "{} {} (org {}, {}{left})",
        text(&a["id"]),
        text(&a["name"]),
        text(&a["org"]),
        text(&a["state"])
    )
}

/// `gigafab jobs`.
pub fn jobs(items: &[Value]) -> String {
    jobs_table(items).render()
}

/// The rows of `gigafab jobs` (a page of them, for `--all`).
pub fn jobs_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "STATE",
        "GPUS",
        "ACCEL",
        "ALLOC",
        "USER",
        "SUBMITTED",
        "NAME/COMMAND",
        "REASON",
    ])
    .right_align(&[0, 2, 4]);
    for j in items {
        t.row([
            text(&j["id"]),
            text(&j["state"]),
            text(&j["gpus"]),
            accel(j),
            text(&j["allocation"]),
            text(&j["user"]),
            short_time(&j["submitted_at"]),
            truncate(&job_label(j), LABEL_WIDTH),
            truncate(&job_reason(j), REASON_WIDTH),
        ]);
    }
    t
}

/// `gigafab job ID`: the job's fields, then one line per event
/// (`<time>  <kind>  <message>`).
pub fn job_detail(j: &Value) -> String {
    let mut t = Table::bare();
    let mut field = |k: &str, v: String| t.row([format!("{k}:"), v]);
    field("id", text(&j["id"]));
    field("name", text(&j["name"]));
    field("state", text(&j["state"]));
    let reason = job_reason(j);
    if !reason.is_empty() {
        field("reason", reason);
    }
    field("org", text(&j["org"]));
    field("project", text(&j["project"]));
    field("user", text(&j["user"]));
    field("allocation", text(&j["allocation"]));
    field("gpus", text(&j["gpus"]));
    field("accelerator", accel(j));
    field("assigned", text(&j["accelerators"]));
    field(
        "command",
        j["command"]
            .as_array()
            .map(|c| shell_join(c))
            .unwrap_or_else(|| text(&j["command"])),
    );
    field(
        "time limit",
        match j["time_limit_s"].as_u64() {
            Some(s) => format!("{} ({s}s)", format_duration(s)),
            None => text(&j["time_limit_s"]),
        },
    );
    field("priority", text(&j["priority"]));
    field("preemptible", text(&j["preemptible"]));
    field("exit code", text(&j["exit_code"]));
    field("submitted", text(&j["submitted_at"]));
    field("started", text(&j["started_at"]));
    field("ended", text(&j["ended_at"]));
    field("gpu-hours", hours(&j["gpu_hours"]));
    field("energy", energy_line(j));
    if let Some(i) = j["inputs"].as_array().filter(|i| !i.is_empty()) {
        field("inputs", i.iter().map(text).collect::<Vec<_>>().join(", "));
    }
    if !j["output_model"].is_null() {
        field(
            "output",
            match j["output"].as_str() {
                Some(o) => o.to_string(),
                None => format!("{} (once the job completes)", text(&j["output_model"])),
            },
        );
    }
    let mut out = t.render();
    let events = j["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    out.push_str("\nevents:\n");
    if events.is_empty() {
        out.push_str("(none)\n");
    } else {
        let mut ev = Table::bare();
        for e in events {
            ev.row([
                text(&e["at"]),
                text(&e["kind"]),
                e["message"].as_str().unwrap_or("").replace('\n', " "),
            ]);
        }
        out.push_str(&ev.render());
    }
    out
}

/// `gigafab fleet`: one row per node, then the totals.
pub fn fleet(f: &Value) -> String {
    let mut t = Table::new(&[
        "NODE", "POOL", "TYPE", "ACCEL", "FREE", "BUSY", "DOWN", "STATE", "JOBS",
    ])
    .right_align(&[3, 4, 5, 6]);
    let nodes = f["nodes"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    for n in nodes {
        let jobs = match n["jobs"].as_array() {
            Some(j) if !j.is_empty() => truncate(&text(&n["jobs"]), NODE_JOBS_WIDTH),
            _ => String::new(),
        };
        t.row([
            text(&n["name"]),
            text(&n["pool"]),
            text(&n["type"]),
            text(&n["accelerators"]),
            text(&n["free"]),
            text(&n["busy"]),
            text(&n["down"]),
            text(&n["state"]),
            jobs,
        ]);
    }
    let mut out = t.render();
    out.push_str(&format!(
        "{} node{}, {} accelerators: {} free, {} busy\n",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" },
        text(&f["accelerators"]),
        text(&f["free"]),
        text(&f["busy"]),
    ));
    out
}

/// `1.234 kWh, avg 1785 W, 12.3 gCO2e (model)`, or `-` before the end.
fn energy_line(j: &Value) -> String {
    let Some(kwh) = j["energy_kwh"]
        .as_f64()
        .filter(|_| j["energy_source"].is_string())
    else {
        return "-".into();
    };
    let mut s = format!("{kwh:.4} kWh");
    if let Some(w) = j["avg_power_w"].as_f64() {
        s.push_str(&format!(", avg {w:.0} W"));
    }
    match j["carbon_g"].as_f64() {
        Some(g) => s.push_str(&format!(", {g:.1} gCO2e")),
        None => s.push_str(", carbon not accounted (no grid series)"),
    }
    s.push_str(&format!(
        " ({})",
        j["energy_source"].as_str().unwrap_or("?")
    ));
    s
}

fn kwh(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

/// `gigafab usage`.
pub fn usage(items: &[Value]) -> String {
    let mut t = Table::new(&[
        "ALLOC",
        "ORG",
        "GRANTED (GPU-h)",
        "USED (GPU-h)",
        "USED%",
        "RUNNING GPUS",
        "QUEUED",
        "RUNNING",
        "ENDED",
        "ENERGY (kWh)",
        "CO2e (kg)",
    ])
    .right_align(&[0, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    for u in items {
        t.row([
            text(&u["allocation"]),
            text(&u["org"]),
            hours(&u["granted_gpu_hours"]),
            hours(&u["used_gpu_hours"]),
            percent(&u["used_gpu_hours"], &u["granted_gpu_hours"]),
            text(&u["running_gpus"]),
            text(&u["jobs_queued"]),
            text(&u["jobs_running"]),
            text(&u["jobs_ended"]),
            kwh(&u["energy_kwh"]),
            kwh(&u["carbon_kg"]),
        ]);
    }
    t.render()
}

/// The per-organisation part of `gigafab usage`.
pub fn org_usage(orgs: &[Value]) -> String {
    let mut t =
        Table::new(&["ORG", "USED (GPU-h)", "ENERGY (kWh)", "CO2e (kg)"]).right_align(&[1, 2, 3]);
    for o in orgs {
        t.row([
            text(&o["org"]),
            hours(&o["used_gpu_hours"]),
            kwh(&o["energy_kwh"]),
            kwh(&o["carbon_kg"]),
        ]);
    }
    t.render()
}

/// `gigafab whoami`.
pub fn whoami(w: &Value) -> String {
    let mut t = Table::bare();
    t.row(["user:".to_string(), text(&w["user"])]);
    t.row(["role:".to_string(), text(&w["role"])]);
    t.row(["org:".to_string(), text(&w["org"])]);
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> Value {
        json!({
            "id": 12, "name": "train", "org": "acme", "project": null, "user": "alice",
            "allocation": 3, "gpus": 2,
            "accelerator": {"types": ["h100"], "vendor": null, "min_memory_gb": null},
            "command": ["python", "train.py"], "time_limit_s": 5400,
            "priority": 0, "preemptible": false,
            "state": "queued",
            "reason": "waiting: no 2×h100 gang free",
            "exit_code": null,
            "submitted_at": "2026-11-21T09:30:00.123Z", "started_at": null, "ended_at": null,
            "accelerators": [],
            "gpu_hours": 0.0
        })
    }

    #[test]
    fn jobs_table() {
        let mut other = job();
        other["id"] = json!(7);
        other["name"] = Value::Null;
        other["state"] = json!("failed");
        other["reason"] = Value::Null;
        other["exit_code"] = json!(1);
        other["accelerator"] = json!({"types": null, "vendor": "amd", "min_memory_gb": null});
        other["command"] = json!(["bash", "-c", "echo a very long command line that goes on"]);
        let out = jobs(&[job(), other]);
        let want = "\
ID  STATE   GPUS  ACCEL  ALLOC  USER   SUBMITTED             NAME/COMMAND                      REASON
12  queued     2  h100       3  alice  2026-11-21T09:30:00Z  train                             waiting: no 2×h100 gang free
 7  failed     2  amd        3  alice  2026-11-21T09:30:00Z  bash -c 'echo a very long comma…  exit 1
";
        assert_eq!(out, want);
        assert_eq!(
            jobs(&[]),
            "ID  STATE  GPUS  ACCEL  ALLOC  USER  SUBMITTED  NAME/COMMAND  REASON\n"
        );
    }

    #[test]
    fn job_detail_lists_fields_then_events() {
        let mut j = job();
        j["events"] = json!([
            {"at": "2026-11-21T09:30:00.123Z", "kind": "submitted", "message": "by alice"},
            {"at": "2026-11-21T09:30:00.200Z", "kind": "waiting", "message": "no 2×h100 gang free"}
        ]);
        let out = job_detail(&j);
        assert!(
            out.starts_with("id:           12\nname:         train\nstate:        queued\n"),
            "{out}"
        );
        assert!(out.contains("\naccelerator:  h100\n"), "{out}");
        assert!(out.contains("\ncommand:      python train.py\n"), "{out}");
        assert!(out.contains("\ntime limit:   1h30m (5400s)\n"), "{out}");
        assert!(
            out.ends_with(
                "\nevents:\n\
             2026-11-21T09:30:00.123Z  submitted  by alice\n\
             2026-11-21T09:30:00.200Z  waiting    no 2×h100 gang free\n"
            ),
            "{out}"
        );
        j["events"] = json!([]);
        assert!(job_detail(&j).ends_with("events:\n(none)\n"));
    }

    #[test]
    fn fleet_table() {
        let f = json!({"nodes": [
            {"name": "nvidia-0", "pool": "train", "site": "a", "type": "h100", "vendor": "nvidia",
             "accelerators": 8, "free": 6, "busy": 2, "down": 0, "state": "up", "jobs": [12, 13]},
            {"name": "amd-0", "pool": "infer", "site": "a", "type": "mi300x", "vendor": "amd",
             "accelerators": 8, "free": 8, "busy": 0, "down": 0, "state": "drained", "jobs": []}
        ], "accelerators": 16, "free": 14, "busy": 2});
        let want = "\
NODE      POOL   TYPE    ACCEL  FREE  BUSY  DOWN  STATE    JOBS
nvidia-0  train  h100        8     6     2     0  up       12,13
amd-0     infer  mi300x      8     8     0     0  drained
2 nodes, 16 accelerators: 14 free, 2 busy
";
        assert_eq!(fleet(&f), want);
    }

    #[test]
    fn usage_table() {
        let items = [
            json!({"allocation": 3, "org": "acme", "granted_gpu_hours": 1000.0,
            "used_gpu_hours": 12.5, "running_gpus": 2, "jobs_queued": 1, "jobs_running": 1,
            "jobs_ended": 10, "energy_kwh": 1.5, "carbon_kg": 0.25}),
        ];
        let want = "\
ALLOC  ORG   GRANTED (GPU-h)  USED (GPU-h)  USED%  RUNNING GPUS  QUEUED  RUNNING  ENDED  ENERGY (kWh)  CO2e (kg)
    3  acme           1000.0          12.5   1.2%             2       1        1     10         1.500      0.250
";
        assert_eq!(usage(&items), want);
    }

    #[test]
    fn small_tables() {
        let a = json!({"id": 3, "org": "acme", "name": "acme-2026", "granted_gpu_hours": 1000.0,
            "used_gpu_hours": 12.5, "valid_from": "2026-01-01T00:00:00Z",
            "valid_until": "2027-01-01T00:00:00.000Z", "qos_priority": 0, "state": "active"});
        let out = allocations(std::slice::from_ref(&a));
        assert!(
            out.starts_with("ID  ORG   NAME       GRANTED (GPU-h)"),
            "{out}"
        );
        assert!(out.contains("2027-01-01T00:00:00Z  active\n"), "{out}");
        assert_eq!(
            allocation_brief(&a),
            "3 acme-2026 (org acme, active, 987.5 of 1000.0 GPU-h left)"
        );
        assert_eq!(
            orgs(&[json!({"id": 1, "name": "acme", "category": "startup",
                          "created_at": "2026-01-01T00:00:00.5Z"})]),
            "ID  NAME  CATEGORY  CREATED\n 1  acme  startup   2026-01-01T00:00:00Z\n"
        );
        assert_eq!(
            projects(&[
                json!({"id": 2, "org": "acme", "name": "llm"}),
                json!({"id": 3, "org": "acme", "name": "cv", "members": ["ann", "bo"]})
            ]),
            "ID  ORG   NAME  MEMBERS\n 2  acme  llm   (any member)\n 3  acme  cv    ann,bo\n"
        );
        assert_eq!(
            users(&[json!({"id": 4, "name": "root", "org": null, "role": "admin"})]),
            "ID  NAME  ORG  ROLE\n 4  root  -    admin\n"
        );
        assert_eq!(
            whoami(&json!({"user": "alice", "role": "member", "org": "acme"})),
            "user:  alice\nrole:  member\norg:   acme\n"
        );
    }
}
