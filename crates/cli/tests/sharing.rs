//! Sharing accelerators, live: slice requests run on a shared pool's
//! slices with only their slice in view, are charged their share, and a
//! slice no pool offers is refused with the slices that would hold it.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::Path;

const FACTORY: &str = r#"name = "shared"
[[sites]]
name = "local"
[[sites.pools]]
name = "whole"
accelerator = "h100"
nodes = 1
accelerators_per_node = 2
[[sites.pools]]
name = "mps"
accelerator = "h100"
nodes = 1
accelerators_per_node = 2
fractions = 4
share = "mps"
[[sites.pools]]
name = "cpx"
accelerator = "mi300x"
nodes = 1
accelerators_per_node = 1
slices = "cpx"
[[sites.pools]]
name = "mig"
accelerator = "h100"
nodes = 1
accelerators_per_node = 1
slices = "1g.10gb"
"#;

fn start(dir: &Path, extra: &[String]) -> Server {
    let data = dir.join("data");
    std::fs::write(dir.join("shared.toml"), FACTORY).unwrap();
    let mut args = base_args(&data);
    args.extend([
        "--factory".into(),
        dir.join("shared.toml").display().to_string(),
    ]);
    args.extend(extra.iter().cloned());
    Server::start(dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap()
}

async fn run(s: &Server, body: Value) -> (Value, String) {
    let j = s.json("POST", "/api/v1/jobs", TOKEN, Some(body)).await;
    let id = j["id"].as_i64().unwrap_or_else(|| panic!("{j}"));
    let j = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
    let (_, out) = s
        .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
        .await;
    (j, out)
}

const SHOW: &str = "echo \"$CUDA_VISIBLE_DEVICES|$ROCR_VISIBLE_DEVICES|$GIGAFAB_ACCELERATORS|$GIGAFAB_SLICE|$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT|$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarter_gpu_runs_on_its_slice_and_is_charged_a_quarter() {
    let dir = fresh_dir("sharing");
    let s = start(&dir, &[]);
    // a quarter: an MPS client of an H100, with a quarter of its memory
    let (j, out) = run(
        &s,
        json!({"allocation": 1, "gpus": 1, "gpu_share": 0.25, "time_limit_s": 60,
               "command": ["sh", "-c", format!("{SHOW}; sleep 1")]}),
    )
    .await;
    assert_eq!(j["state"], "completed", "{j:#}\n{}", s.stderr());
    assert_eq!(
        out, "0||mps-0/0:mps-4#0|mps mps-4 20480|0=20480M|25\n",
        "{out}"
    );
    assert_eq!(j["accelerator"]["slice"], "0.25");
    // charged a quarter of the run's accelerator-hours (an H100's weight is 1)
    let secs = {
        let t = |k: &str| chrono_ms(j[k].as_str().unwrap());
        (t("ended_at") - t("started_at")) as f64 / 1000.0
    };
    let hours = j["gpu_hours"].as_f64().unwrap();
    assert!(
        (hours - 0.25 * secs / 3600.0).abs() < 0.25 * 0.5 / 3600.0 + 1e-9,
        "{hours} for {secs} s"
    );
    // four quarters share one accelerator: the fifth and later go to the next
    let ids: Vec<i64> = futures_like_submit(&s, 5).await;
    let mut labels = Vec::new();
    for id in ids {
        let j = s.wait_state(TOKEN, id, &["completed", "failed"]).await;
        assert_eq!(j["state"], "completed", "{j:#}");
        let (_, out) = s
            .call("GET", &format!("/api/v1/jobs/{id}/logs"), Some(TOKEN), None)
            .await;
        labels.push(out.trim().to_string());
    }
    // the device is the accelerator's (slot / 4), never the slot number
    assert!(
        labels
            .iter()
            .all(|l| l.starts_with("0|") || l.starts_with("1|")),
        "{labels:?}"
    );
    let on_gpu0 = labels.iter().filter(|l| l.starts_with("0|")).count();
    assert!(on_gpu0 <= 4, "at most four quarters on one GPU: {labels:?}");
    assert!(on_gpu0 < 5, "the fifth went to the other GPU: {labels:?}");
    // an AMD CPX partition is a device of its own
    let (j, out) = run(
        &s,
        json!({"allocation": 1, "gpus": 1, "gpu_profile": "cpx", "command": ["sh", "-c", SHOW]}),
    )
    .await;
    assert_eq!(j["state"], "completed", "{j:#}");
    assert_eq!(out, "|0|cpx-0/0|partition cpx 24576||\n", "{out}");
    // a whole-GPU job never lands on a slice
    let (j, _) = run(&s, json!({"allocation": 1, "gpus": 2, "command": ["true"]})).await;
    assert_eq!(j["accelerators"], json!(["whole-0/0", "whole-0/1"]));
    // a MIG slice on a machine without MIG instances fails, saying why
    let (j, _) = run(
        &s,
        json!({"allocation": 1, "gpus": 1, "gpu_profile": "1g.10gb", "command": ["true"]}),
    )
    .await;
    assert_eq!(j["state"], "failed", "{j:#}");
    let why = j["reason"].as_str().unwrap_or_default();
    assert!(
        why.contains("no MIG instance") && why.contains("nvidia-smi mig"),
        "{why}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Submits `n` quarter-GPU jobs that print where they run and sleep.
async fn futures_like_submit(s: &Server, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let j = s
            .json(
                "POST",
                "/api/v1/jobs",
                TOKEN,
                Some(json!({"allocation": 1, "gpus": 1, "gpu_share": 0.2,
                    "command": ["sh", "-c", "echo \"$CUDA_VISIBLE_DEVICES|$GIGAFAB_ACCELERATORS\"; sleep 2"]})),
            )
            .await;
        ids.push(j["id"].as_i64().unwrap_or_else(|| panic!("{j}")));
    }
    ids
}

/// Milliseconds since the epoch of an RFC 3339 time (`...Z`).
fn chrono_ms(t: &str) -> i64 {
    gigafab_core::time::parse_rfc3339(t).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_no_pool_offers_is_refused_with_the_slices_that_fit() {
    let dir = fresh_dir("sharing-refuse");
    let s = start(&dir, &[]);
    let (code, body) = s
        .call(
            "POST",
            "/api/v1/jobs",
            Some(TOKEN),
            Some(
                json!({"allocation": 1, "gpus": 1, "gpu_profile": "1g.10gb", "gpu_memory_gb": 30,
                        "command": ["true"]}),
            ),
        )
        .await;
    assert_eq!(code, 422, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "unsatisfiable");
    let m = v["message"].as_str().unwrap();
    assert!(
        m.contains("slice 1g.10gb with 30 GB")
            && m.contains("h100-1g.10gb (1g.10gb, 10 GB")
            && m.contains("h100: 3g.40gb, 4g.40gb, 7g.80gb"),
        "{m}"
    );
    for (body, field) in [
        (
            json!({"allocation": 1, "gpus": 2, "gpu_share": 0.5, "command": ["true"]}),
            "gpus",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "gpu_share": 1.5, "command": ["true"]}),
            "gpu_share",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "gpu_profile": "../x", "command": ["true"]}),
            "gpu_profile",
        ),
        (
            json!({"allocation": 1, "gpus": 1, "gpu_memory_gb": -1, "command": ["true"]}),
            "gpu_memory_gb",
        ),
    ] {
        let (code, out) = s
            .call("POST", "/api/v1/jobs", Some(TOKEN), Some(body))
            .await;
        assert_eq!(code, 422, "{out}");
        assert!(
            out.contains("invalid_request") && out.contains(field),
            "{out}"
        );
    }
    // nothing was recorded
    let jobs = s.json("GET", "/api/v1/jobs", TOKEN, None).await;
    assert_eq!(jobs["items"].as_array().map(Vec::len), Some(0), "{jobs}");
    // a notebook session on a quarter of a GPU: its job asks for the slice
    let (code, out) = s
        .call(
            "POST",
            "/api/v1/sessions",
            Some(TOKEN),
            Some(json!({"app": "terminal", "allocation": 1, "gpu_share": 0.25})),
        )
        .await;
    assert_eq!(code, 201, "{out}");
    let sess: Value = serde_json::from_str(&out).unwrap();
    let job = s
        .json("GET", &format!("/api/v1/jobs/{}", sess["job"]), TOKEN, None)
        .await;
    assert_eq!(job["accelerator"]["slice"], "0.25", "{job:#}");
    assert_eq!(job["gpus"], 1);
    let (code, out) = s
        .call(
            "POST",
            "/api/v1/sessions",
            Some(TOKEN),
            Some(json!({"app": "terminal", "allocation": 1, "gpu_profile": "7g.80gb"})),
        )
        .await;
    assert_eq!(code, 422, "{out}");
    assert!(
        out.contains("no slice of this fleet holds slice 7g.80gb"),
        "{out}"
    );
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

#[ignore = "needs root: device files are hidden in the job's mount namespace (cargo test -- --include-ignored, as root)"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_opens_only_its_own_accelerators_device_file() {
    require_root("a_slice_opens_only_its_own_accelerators_device_file");
    let dir = fresh_dir("sharing-devices");
    // stand-ins for /dev/nvidia0..1 and AMD render nodes 128..135
    let devs = dir.join("dev");
    std::fs::create_dir_all(&devs).unwrap();
    for i in 0..2 {
        std::fs::write(devs.join(format!("nv{i}")), format!("nvidia-{i}\n")).unwrap();
    }
    for i in 128..136 {
        std::fs::write(devs.join(format!("render{i}")), format!("render-{i}\n")).unwrap();
    }
    let s = start(
        &dir,
        &[
            "--nvidia-devices".into(),
            devs.join("nv{index}").display().to_string(),
            "--amd-devices".into(),
            devs.join("render{render}").display().to_string(),
        ],
    );
    let d = devs.display().to_string();
    let cat_all = format!("cat {d}/nv0 {d}/nv1 {d}/render128 {d}/render129 2>/dev/null; true");
    // an MPS quarter sees its accelerator's file, not the other GPU's
    let (j, out) = run(
        &s,
        json!({"allocation": 1, "gpus": 1, "gpu_share": 0.25, "command": ["sh", "-c", cat_all.clone()]}),
    )
    .await;
    assert_eq!(j["state"], "completed", "{j:#}");
    assert_eq!(out, "nvidia-0\n", "{out}");
    // a CPX partition sees its own render node only
    let (j, out) = run(
        &s,
        json!({"allocation": 1, "gpus": 1, "gpu_profile": "cpx", "command": ["sh", "-c", cat_all]}),
    )
    .await;
    assert_eq!(j["state"], "completed", "{j:#}");
    assert_eq!(out, "render-128\n", "{out}");
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}
