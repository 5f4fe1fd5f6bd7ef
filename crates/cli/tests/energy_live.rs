//! Energy live: `gigafab serve` powers idle nodes down and up through the
//! factory's programs (real child processes), runs a job on a resumed node
//! once it is up, and follows a grid series that changes while it runs
//! (carbon-aware site choice, the sites API, `/metrics`).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// A grid file of `g` gCO2e/kWh every hour from two days ago to two days
/// ahead.
fn write_grid(path: &Path, g: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let start = (now / 3600 - 48) * 3600;
    let mut s = String::from("time,g_per_kwh\n");
    for h in 0..96 {
        s.push_str(&format!("{},{g}\n", start + h * 3600));
    }
    // written beside, then renamed: the server never reads half a file
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, s).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn factory(dir: &Path, log: &Path) -> std::path::PathBuf {
    let prog = |word: &str| {
        format!(
            "[\"sh\", \"-c\", \"echo {word} \\\"$@\\\" >> {}\", \"power\"]",
            log.display()
        )
    };
    let mut f = String::from("name = \"live-energy\"\n");
    for site in ["east", "west"] {
        f.push_str(&format!(
            "[[sites]]\nname = \"{site}\"\ngrid = \"{site}.csv\"\nsuspend_program = {}\nresume_program = {}\n[[sites.pools]]\nname = \"{site}\"\naccelerator = \"h100\"\nnodes = 2\naccelerators_per_node = 1\n",
            prog("down"),
            prog("up")
        ));
    }
    let p = dir.join("factory.toml");
    std::fs::write(&p, f).unwrap();
    p
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let t = Instant::now();
    while !f().await {
        assert!(t.elapsed() < Duration::from_secs(20), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn site<'a>(sites: &'a Value, name: &str) -> &'a Value {
    sites["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[tokio::test]
async fn idle_nodes_power_down_a_job_resumes_one_and_the_grid_is_followed() {
    let dir = fresh_dir("energy-live");
    let log = dir.join("power.log");
    write_grid(&dir.join("east.csv"), 400.0);
    write_grid(&dir.join("west.csv"), 30.0);
    let f = factory(&dir, &log);
    let data = dir.join("data");
    let mut args = strs(&base_args(&data))
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    args.extend(
        [
            "--factory",
            f.to_str().unwrap(),
            "--power-down-after",
            "1",
            "--resume-time",
            "1",
            "--warm-nodes",
            "0",
            "--carbon-aware",
            "--grid-refresh",
            "0.2",
        ]
        .map(String::from),
    );
    let s = Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]).unwrap();
    let power_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // every node is taken as up at start (powered up once), then the idle
    // ones go down after a second
    wait_for("idle power-down", async || {
        let sites = s.json("GET", "/api/v1/sites", TOKEN, None).await;
        site(&sites, "east")["nodes_powered_down"] == 2
            && site(&sites, "west")["nodes_powered_down"] == 2
    })
    .await;
    wait_for("the suspend programs", async || {
        power_log().matches("down").count() == 2
    })
    .await;
    let lines = power_log();
    assert!(lines.contains("up east-0 east-1"), "{lines}");
    assert!(lines.contains("down east-0 east-1"), "{lines}");
    assert!(lines.contains("down west-0 west-1"), "{lines}");
    let fleet = s.json("GET", "/api/v1/fleet", TOKEN, None).await;
    assert!(
        fleet["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "powered_down"),
        "{fleet:#}"
    );
    let (_, metrics) = s.call("GET", "/metrics", Some(TOKEN), None).await;
    assert!(
        metrics.contains("gigafab_accelerators{pool=\"east\",state=\"powered_down\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gigafab_node_power_downs_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gigafab_site_carbon_intensity_grams_per_kwh{site=\"east\"} 400"),
        "{metrics}"
    );

    // the sites API: the intensity now and the 24 hours ahead
    let sites = s.json("GET", "/api/v1/sites", TOKEN, None).await;
    let east = site(&sites, "east");
    assert_eq!(east["intensity_g_per_kwh"], 400.0);
    assert_eq!(east["forecast_g_per_kwh"].as_array().unwrap().len(), 24);
    assert_eq!(east["forecast"], "daily");
    assert!(east["grid_source"].as_str().unwrap().ends_with("east.csv"));
    // the sites' energy counts from the server's start (seconds of idle
    // power, not decades)
    let kwh = east["energy_kwh"].as_f64().unwrap();
    assert!(kwh > 0.0 && kwh < 0.1, "{kwh} kWh");

    // a job: the cleaner site (west), on a node resumed for it; its run
    // begins once the node is up
    let body = json!({"allocation": 1, "gpus": 1, "command": ["true"]});
    let j = s
        .json("POST", "/api/v1/jobs", TOKEN, Some(body.clone()))
        .await;
    let id = j["id"].as_i64().unwrap();
    let done = s.wait_state(TOKEN, id, &["completed"]).await;
    let acc = done["accelerators"].to_string();
    assert!(acc.contains("west-"), "the clean site: {acc}");
    let events = s
        .json("GET", &format!("/api/v1/jobs/{id}"), TOKEN, None)
        .await["events"]
        .to_string();
    assert!(
        events.contains("its run begins once they are up"),
        "{events}"
    );
    assert!(power_log().contains("up west-0"), "{}", power_log());

    // once the nodes are down again, a job cancelled while its node boots
    // never runs
    wait_for("west powered down again", async || {
        let sites = s.json("GET", "/api/v1/sites", TOKEN, None).await;
        site(&sites, "west")["nodes_powered_down"] == 2
    })
    .await;
    let ran = dir.join("ran");
    let touch = json!({"allocation": 1, "gpus": 1, "command": ["touch", ran.to_str().unwrap()]});
    let j = s.json("POST", "/api/v1/jobs", TOKEN, Some(touch)).await;
    let id = j["id"].as_i64().unwrap();
    s.wait_state(TOKEN, id, &["running"]).await;
    let c = s
        .json("DELETE", &format!("/api/v1/jobs/{id}"), TOKEN, None)
        .await;
    assert_eq!(c["state"], "cancelled", "{c:#}");
    assert!(
        c["reason"]
            .as_str()
            .unwrap()
            .contains("before its run began"),
        "{c:#}"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!ran.exists(), "the cancelled job ran");

    // the grid changes while the server runs: east becomes the clean one
    write_grid(&dir.join("east.csv"), 20.0);
    write_grid(&dir.join("west.csv"), 500.0);
    wait_for("the grid read again", async || {
        let sites = s.json("GET", "/api/v1/sites", TOKEN, None).await;
        site(&sites, "east")["intensity_g_per_kwh"] == 20.0
            && site(&sites, "west")["intensity_g_per_kwh"] == 500.0
    })
    .await;
    let j = s.json("POST", "/api/v1/jobs", TOKEN, Some(body)).await;
    let id = j["id"].as_i64().unwrap();
    let done = s.wait_state(TOKEN, id, &["completed"]).await;
    let acc = done["accelerators"].to_string();
    assert!(acc.contains("east-"), "the clean site now: {acc}");
    assert!(
        s.stderr().contains("grid series read again"),
        "{}",
        s.stderr()
    );
}

#[tokio::test]
async fn power_down_without_a_way_to_power_nodes_is_refused() {
    let dir = fresh_dir("energy-refused");
    let data = dir.join("data");
    let mut args = strs(&base_args(&data))
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>();
    args.extend(["--power-down-after", "60"].map(String::from));
    let e = match Server::start(&dir, &strs(&args), &[("GIGAFAB_BOOTSTRAP_TOKEN", TOKEN)]) {
        Err(e) => e,
        Ok(_) => panic!("started without a way to power nodes"),
    };
    assert!(
        e.contains("--power-down-after") && e.contains("suspend_program"),
        "{e}"
    );
}
