//! Table views of the server's objects (pure: the API contract's typed
//! answers in, text out).

use std::fmt::Display;

use gigafab_api as t;

use super::duration::format_duration;
use super::fmt::{Table, shell_join_words, short_time_str, truncate};

/// Widest NAME/COMMAND cell of the jobs table.
const LABEL_WIDTH: usize = 32;
/// Widest REASON cell of the jobs table.
const REASON_WIDTH: usize = 60;
/// Widest JOBS cell of the fleet table.
const NODE_JOBS_WIDTH: usize = 40;

/// A cell of what may be absent: `-` then.
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |x| x.to_string())
}

/// A list as a cell: comma-joined, `-` when empty.
fn list<T: Display>(v: &[T]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A GPU-hour figure with one decimal.
fn hours(h: f64) -> String {
    format!("{h:.1}")
}

/// `used` as a percentage of `granted` (`12.5%`), `-` when not computable.
fn percent(used: f64, granted: f64) -> String {
    if granted > 0.0 {
        format!("{:.1}%", used / granted * 100.0)
    } else {
        "-".into()
    }
}

/// A state as its API word (`running`, `powered_down`).
pub fn word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => "?".into(),
    }
}

/// A job's accelerator request: its types, else its vendor, else `any`,
/// with `≥NGB` when a minimum memory is asked.
fn accel(a: &t::AcceleratorFilter) -> String {
    let base = if !a.types.is_empty() {
        a.types.join(",")
    } else if let Some(v) = &a.vendor {
        v.clone()
    } else {
        "any".to_string()
    };
    match a.min_memory_gb {
        None => base,
        Some(m) if base == "any" => format!("≥{m}GB"),
        Some(m) => format!("{base} ≥{m}GB"),
    }
}

/// A job's label in listings: its name, else its command line.
fn job_label(j: &t::Job) -> String {
    if !j.name.is_empty() {
        j.name.clone()
    } else if j.command.is_empty() {
        "-".into()
    } else {
        shell_join_words(&j.command)
    }
}

/// Why a job is where it is: the server's reason, else its exit code.
fn job_reason(j: &t::Job) -> String {
    match (&j.reason, j.exit_code) {
        (Some(r), _) if !r.is_empty() => r.clone(),
        (_, Some(code)) => format!("exit {code}"),
        _ => String::new(),
    }
}

/// `gigafab org list`.
pub fn orgs(items: &[t::Org]) -> String {
    let mut tb = Table::new(&["ID", "NAME", "CATEGORY", "CREATED"]).right_align(&[0]);
    for o in items {
        tb.row([
            o.id.to_string(),
            o.name.clone(),
            o.category.clone(),
            short_time_str(&o.created_at),
        ]);
    }
    tb.render()
}

/// `gigafab project list`.
pub fn projects(items: &[t::Project]) -> String {
    let mut tb = Table::new(&["ID", "ORG", "NAME", "MEMBERS"]).right_align(&[0]);
    for p in items {
        tb.row([
            p.id.to_string(),
            p.org.clone(),
            p.name.clone(),
            if p.members.is_empty() {
                "(any member)".into()
            } else {
                p.members.join(",")
            },
        ]);
    }
    tb.render()
}

/// `gigafab user list`.
pub fn users(items: &[t::User]) -> String {
    let mut tb = Table::new(&["ID", "NAME", "ORG", "ROLE"]).right_align(&[0]);
    for u in items {
        tb.row([
            u.id.to_string(),
            u.name.clone(),
            opt(u.org.as_ref()),
            u.role.clone(),
        ]);
    }
    tb.render()
}

/// `gigafab alloc list`.
pub fn allocations(items: &[t::Allocation]) -> String {
    let mut tb = Table::new(&[
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
        tb.row([
            a.id.to_string(),
            a.org.clone(),
            a.name.clone(),
            hours(a.granted_gpu_hours),
            hours(a.used_gpu_hours),
            percent(a.used_gpu_hours, a.granted_gpu_hours),
            a.qos_priority.to_string(),
            short_time_str(&a.valid_from),
            short_time_str(&a.valid_until),
            a.state.clone(),
        ]);
    }
    tb.render()
}

/// One allocation in a sentence, for messages: `3 acme-2026 (org acme,
/// active, 987.5 of 1000.0 GPU-h left)`.
pub fn allocation_brief(a: &t::Allocation) -> String {
    format!(
        "{} {} (org {}, {}, {:.1} of {:.1} GPU-h left)",
        a.id,
        a.name,
        a.org,
        a.state,
        (a.granted_gpu_hours - a.used_gpu_hours).max(0.0),
        a.granted_gpu_hours
    )
}

/// `gigafab jobs`.
pub fn jobs(items: &[t::JobItem]) -> String {
    jobs_table(items).render()
}

/// The rows of `gigafab jobs` (a page of them, for `--all`); a row the
/// store cannot read shows its error.
/// An array's line: its least and greatest task index listed, and how many
/// of its tasks are in each state (in order of first appearance).
type ArrayLine = (i64, i64, Vec<(String, usize)>);

pub fn jobs_table(items: &[t::JobItem]) -> Table {
    let mut tb = Table::new(&[
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
    // an array's tasks make one line: its tasks' index range, and how
    // many are in each state
    let mut arrays: std::collections::BTreeMap<i64, ArrayLine> = Default::default();
    for item in items {
        if let t::JobItem::Job(j) = item
            && let (Some(a), Some(task)) = (j.array_job, j.array_task)
        {
            let e = arrays.entry(a).or_insert((task, task, Vec::new()));
            e.0 = e.0.min(task);
            e.1 = e.1.max(task);
            match e.2.iter_mut().find(|(s, _)| *s == j.state) {
                Some((_, n)) => *n += 1,
                None => e.2.push((j.state.clone(), 1)),
            }
        }
    }
    for item in items {
        match item {
            t::JobItem::Job(j) => {
                // an array's line stands where its first listed task was
                let (id, state) = match j.array_job {
                    Some(a) => {
                        let Some((lo, hi, states)) = arrays.remove(&a) else {
                            continue;
                        };
                        let states: Vec<String> =
                            states.iter().map(|(s, n)| format!("{n} {s}")).collect();
                        (format!("{a}_[{lo}-{hi}]"), states.join(", "))
                    }
                    None => (j.id.to_string(), j.state.clone()),
                };
                tb.row([
                    id,
                    state,
                    j.gpus.to_string(),
                    accel(&j.accelerator),
                    j.allocation.to_string(),
                    j.user.clone(),
                    short_time_str(&j.submitted_at),
                    truncate(&job_label(j), LABEL_WIDTH),
                    truncate(&job_reason(j), REASON_WIDTH),
                ])
            }
            t::JobItem::Unreadable(u) => tb.row([
                opt(u.id),
                u.state.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                truncate(&format!("{}: {}", u.error, u.message), REASON_WIDTH),
            ]),
        }
    }
    tb
}

/// `gigafab job ID`: the job's fields, then one line per event
/// (`<time>  <kind>  <message>`).
pub fn job_detail(j: &t::Job) -> String {
    let mut tb = Table::bare();
    let mut field = |k: &str, v: String| tb.row([format!("{k}:"), v]);
    field("id", j.id.to_string());
    field("name", j.name.clone());
    field("state", j.state.clone());
    let reason = job_reason(j);
    if !reason.is_empty() {
        field("reason", reason);
    }
    field("org", j.org.clone());
    field("project", opt(j.project.as_ref()));
    field("user", j.user.clone());
    field("allocation", j.allocation.to_string());
    field("gpus", j.gpus.to_string());
    field("accelerator", accel(&j.accelerator));
    field("assigned", list(&j.accelerators));
    field("command", shell_join_words(&j.command));
    field(
        "time limit",
        format!(
            "{} ({}s)",
            format_duration(j.time_limit_s.max(0) as u64),
            j.time_limit_s
        ),
    );
    field("priority", j.priority.to_string());
    field("preemptible", j.preemptible.to_string());
    field("exit code", opt(j.exit_code));
    field("submitted", j.submitted_at.clone());
    field("started", opt(j.started_at.as_ref()));
    field("ended", opt(j.ended_at.as_ref()));
    field("gpu-hours", hours(j.gpu_hours));
    field("energy", energy_line(j));
    if !j.inputs.is_empty() {
        field("inputs", j.inputs.join(", "));
    }
    if let Some(m) = &j.output_model {
        field(
            "output",
            match &j.output {
                Some(o) => o.clone(),
                None => format!("{m} (once the job completes)"),
            },
        );
    }
    let mut out = tb.render();
    let events = j.events.as_deref().unwrap_or(&[]);
    out.push_str("\nevents:\n");
    if events.is_empty() {
        out.push_str("(none)\n");
    } else {
        let mut ev = Table::bare();
        for e in events {
            ev.row([e.at.clone(), e.kind.clone(), e.message.replace('\n', " ")]);
        }
        out.push_str(&ev.render());
    }
    out
}

/// `gigafab fleet`: one row per node, then the totals.
pub fn fleet(f: &t::Fleet) -> String {
    let mut tb = Table::new(&[
        "NODE", "POOL", "TYPE", "ACCEL", "FREE", "BUSY", "DOWN", "STATE", "JOBS",
    ])
    .right_align(&[3, 4, 5, 6]);
    for n in &f.nodes {
        let jobs = if n.jobs.is_empty() {
            String::new()
        } else {
            truncate(&list(&n.jobs), NODE_JOBS_WIDTH)
        };
        tb.row([
            n.name.clone(),
            n.pool.clone(),
            n.type_.clone(),
            n.accelerators.to_string(),
            n.free.to_string(),
            n.busy.to_string(),
            n.down.to_string(),
            word(&n.state),
            jobs,
        ]);
    }
    let mut out = tb.render();
    let count = f.nodes.len();
    // slices counted as units, the accelerators they are cut from said
    let units = if f.physical_accelerators > 0 && f.physical_accelerators != f.accelerators {
        format!(
            "{} schedulable units on {} accelerators",
            f.accelerators, f.physical_accelerators
        )
    } else {
        format!("{} accelerators", f.accelerators)
    };
    out.push_str(&format!(
        "{count} node{}, {units}: {} free, {} busy\n",
        if count == 1 { "" } else { "s" },
        f.free,
        f.busy,
    ));
    out
}

/// `1.234 kWh, avg 1785 W, 12.3 gCO2e (model)`, or `-` before the end.
fn energy_line(j: &t::Job) -> String {
    let Some(source) = &j.energy_source else {
        return "-".into();
    };
    let mut s = format!("{:.4} kWh", j.energy_kwh);
    if let Some(w) = j.avg_power_w {
        s.push_str(&format!(", avg {w:.0} W"));
    }
    match j.carbon_g {
        Some(g) => s.push_str(&format!(", {g:.1} gCO2e")),
        None => s.push_str(", carbon not accounted (no grid series)"),
    }
    s.push_str(&format!(" ({source})"));
    s
}

fn kwh(x: f64) -> String {
    format!("{x:.3}")
}

/// `gigafab usage`: per allocation, then per organisation.
pub fn usage(u: &t::Usage) -> String {
    let mut tb = Table::new(&[
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
    for a in &u.items {
        tb.row([
            a.allocation.to_string(),
            a.org.clone(),
            hours(a.granted_gpu_hours),
            hours(a.used_gpu_hours),
            percent(a.used_gpu_hours, a.granted_gpu_hours),
            a.running_gpus.to_string(),
            a.jobs_queued.to_string(),
            a.jobs_running.to_string(),
            a.jobs_ended.to_string(),
            kwh(a.energy_kwh),
            kwh(a.carbon_kg),
        ]);
    }
    let mut out = tb.render();
    if !u.orgs.is_empty() {
        out.push('\n');
        out.push_str(&org_usage(&u.orgs));
    }
    out
}

/// The per-organisation part of `gigafab usage`.
fn org_usage(orgs: &[t::OrgUsage]) -> String {
    let mut tb =
        Table::new(&["ORG", "USED (GPU-h)", "ENERGY (kWh)", "CO2e (kg)"]).right_align(&[1, 2, 3]);
    for o in orgs {
        tb.row([
            o.org.clone(),
            hours(o.used_gpu_hours),
            kwh(o.energy_kwh),
            kwh(o.carbon_kg),
        ]);
    }
    tb.render()
}

/// `gigafab whoami`.
pub fn whoami(w: &t::WhoAmI) -> String {
    let mut tb = Table::bare();
    tb.row(["user:".to_string(), w.user.clone()]);
    tb.row(["role:".to_string(), word(&w.role)]);
    tb.row(["org:".to_string(), opt(w.org.as_ref())]);
    tb.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// The contract's type from JSON as the server writes it.
    fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("a valid answer")
    }

    fn job_json() -> Value {
        json!({
            "id": 12, "name": "train", "org": "acme", "project": null, "user": "alice",
            "allocation": 3, "gpus": 2,
            "accelerator": {"types": ["h100"], "vendor": null, "min_memory_gb": null},
            "job_type": null,
            "command": ["python", "train.py"], "time_limit_s": 5400,
            "priority": 0, "preemptible": false,
            "state": "queued",
            "reason": "waiting: no 2×h100 gang free",
            "exit_code": null,
            "submitted_at": "2026-11-21T09:30:00.123Z", "started_at": null, "ended_at": null,
            "accelerators": [],
            "gpu_hours": 0.0, "energy_kwh": 0.0, "avg_power_w": null, "carbon_g": null,
            "energy_source": null
        })
    }

    fn job() -> t::Job {
        from(job_json())
    }

    #[test]
    fn jobs_table() {
        let mut other = job_json();
        other["id"] = json!(7);
        other["name"] = json!("");
        other["state"] = json!("failed");
        other["reason"] = Value::Null;
        other["exit_code"] = json!(1);
        other["accelerator"] = json!({"types": [], "vendor": "amd", "min_memory_gb": null});
        other["command"] = json!(["bash", "-c", "echo a very long command line that goes on"]);
        let unreadable: t::JobItem = from(json!({"id": 9, "state": "unreadable",
            "error": "store_damaged", "message": "bad spec"}));
        let out = jobs(&[
            t::JobItem::Job(Box::new(job())),
            t::JobItem::Job(Box::new(from(other))),
            unreadable,
        ]);
        let want = "\
ID  STATE       GPUS  ACCEL  ALLOC  USER   SUBMITTED             NAME/COMMAND                      REASON
12  queued         2  h100       3  alice  2026-11-21T09:30:00Z  train                             waiting: no 2×h100 gang free
 7  failed         2  amd        3  alice  2026-11-21T09:30:00Z  bash -c 'echo a very long comma…  exit 1
 9  unreadable     -  -          -  -      -                     -                                 store_damaged: bad spec
";
        assert_eq!(out, want);
        assert_eq!(
            jobs(&[]),
            "ID  STATE  GPUS  ACCEL  ALLOC  USER  SUBMITTED  NAME/COMMAND  REASON\n"
        );
    }

    #[test]
    fn accelerator_requests_and_job_cells() {
        let f = |v: Value| -> t::AcceleratorFilter { from(v) };
        assert_eq!(
            accel(&f(
                json!({"types": ["h100"], "vendor": null, "min_memory_gb": null})
            )),
            "h100"
        );
        assert_eq!(
            accel(&f(
                json!({"types": ["h100", "a100"], "vendor": "nvidia", "min_memory_gb": null})
            )),
            "h100,a100"
        );
        assert_eq!(
            accel(&f(
                json!({"types": [], "vendor": "amd", "min_memory_gb": null})
            )),
            "amd"
        );
        assert_eq!(
            accel(&f(
                json!({"types": [], "vendor": null, "min_memory_gb": null})
            )),
            "any"
        );
        assert_eq!(
            accel(&f(
                json!({"types": [], "vendor": null, "min_memory_gb": 80.0})
            )),
            "≥80GB"
        );
        assert_eq!(
            accel(&f(
                json!({"types": [], "vendor": "amd", "min_memory_gb": 128.0})
            )),
            "amd ≥128GB"
        );
        let mut j = job();
        j.name = String::new();
        j.command = ["python", "train.py", "--lr", "a b", "it's"]
            .map(String::from)
            .to_vec();
        j.reason = None;
        j.exit_code = Some(3);
        assert_eq!(job_label(&j), r"python train.py --lr 'a b' 'it'\''s'");
        assert_eq!(job_reason(&j), "exit 3");
        j.exit_code = None;
        assert_eq!(job_reason(&j), "");
        assert_eq!(shell_join_words(&[String::new()]), "''");
        assert_eq!(percent(12.5, 1000.0), "1.2%");
        assert_eq!(percent(1.0, 0.0), "-");
    }

    #[test]
    fn job_detail_lists_fields_then_events() {
        let mut j = job_json();
        j["events"] = json!([
            {"at": "2026-11-21T09:30:00.123Z", "kind": "submitted", "message": "by alice"},
            {"at": "2026-11-21T09:30:00.200Z", "kind": "waiting", "message": "no 2×h100 gang free"}
        ]);
        let out = job_detail(&from(j.clone()));
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
        assert!(job_detail(&from(j)).ends_with("events:\n(none)\n"));
    }

    #[test]
    fn fleet_table() {
        let f: t::Fleet = from(json!({"nodes": [
            {"name": "nvidia-0", "pool": "train", "site": "a", "type": "h100", "vendor": "nvidia",
             "accelerators": 8, "free": 6, "busy": 2, "down": 0, "state": "up", "reason": null,
             "health": "healthy", "health_reason": null, "jobs": [12, 13]},
            {"name": "amd-0", "pool": "infer", "site": "a", "type": "mi300x", "vendor": "amd",
             "accelerators": 8, "free": 8, "busy": 0, "down": 0, "state": "drained", "reason": null,
             "health": "healthy", "health_reason": null, "jobs": []}
        ], "accelerators": 16, "free": 14, "busy": 2}));
        let want = "\
NODE      POOL   TYPE    ACCEL  FREE  BUSY  DOWN  STATE    JOBS
nvidia-0  train  h100        8     6     2     0  up       12,13
amd-0     infer  mi300x      8     8     0     0  drained
2 nodes, 16 accelerators: 14 free, 2 busy
";
        assert_eq!(fleet(&f), want);
        // a shared pool's slices are units, cut from fewer accelerators
        let mut shared = f.clone();
        shared.accelerators = 22;
        shared.physical_accelerators = 16;
        assert!(
            fleet(&shared)
                .ends_with("2 nodes, 22 schedulable units on 16 accelerators: 14 free, 2 busy\n"),
            "{}",
            fleet(&shared)
        );
    }

    #[test]
    fn usage_table() {
        let u: t::Usage = from(json!({"items": [
            {"allocation": 3, "name": "g", "org": "acme", "granted_gpu_hours": 1000.0,
            "used_gpu_hours": 12.5, "running_gpus": 2.0, "jobs_queued": 1, "jobs_running": 1,
            "jobs_ended": 10, "state": "active", "energy_kwh": 1.5, "carbon_kg": 0.25}],
            "orgs": []}));
        let want = "\
ALLOC  ORG   GRANTED (GPU-h)  USED (GPU-h)  USED%  RUNNING GPUS  QUEUED  RUNNING  ENDED  ENERGY (kWh)  CO2e (kg)
    3  acme           1000.0          12.5   1.2%             2       1        1     10         1.500      0.250
";
        assert_eq!(usage(&u), want);
    }

    #[test]
    fn small_tables() {
        let a: t::Allocation = from(json!({"id": 3, "org": "acme", "name": "acme-2026",
            "granted_gpu_hours": 1000.0, "used_gpu_hours": 12.5,
            "valid_from": "2026-01-01T00:00:00Z", "valid_until": "2027-01-01T00:00:00.000Z",
            "qos_priority": 0, "state": "active"}));
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
            orgs(
                &[from(json!({"id": 1, "name": "acme", "category": "startup",
                          "created_at": "2026-01-01T00:00:00.5Z"}))]
            ),
            "ID  NAME  CATEGORY  CREATED\n 1  acme  startup   2026-01-01T00:00:00Z\n"
        );
        assert_eq!(
            projects(&[
                from(json!({"id": 2, "org": "acme", "name": "llm"})),
                from(json!({"id": 3, "org": "acme", "name": "cv", "members": ["ann", "bo"]}))
            ]),
            "ID  ORG   NAME  MEMBERS\n 2  acme  llm   (any member)\n 3  acme  cv    ann,bo\n"
        );
        assert_eq!(
            users(&[from(
                json!({"id": 4, "name": "root", "org": null, "role": "admin", "email": null})
            )]),
            "ID  NAME  ORG  ROLE\n 4  root  -    admin\n"
        );
        assert_eq!(
            whoami(&from(
                json!({"id": 2, "user": "alice", "role": "member", "org": "acme"})
            )),
            "user:  alice\nrole:  member\norg:   acme\n"
        );
    }
}
