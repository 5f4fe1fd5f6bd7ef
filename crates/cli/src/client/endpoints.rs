//! `gigafab endpoint`: model endpoints, their API keys and events
//! (docs/endpoints.md).

use super::fmt::Table;
use super::*;

/// `gigafab endpoint ...`.
#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Create an endpoint serving a catalog model:
    /// `gigafab endpoint create chat --model tiny@1 -- python3 -m llama_cpp.server --model '{model_dir}/model.gguf' --port '{port}'`.
    Create(Box<CreateArgs>),
    /// List the endpoints you see.
    Ls(ListArgs),
    /// Show one endpoint: its replicas, scaling and usage.
    Show {
        /// The endpoint's name.
        name: String,
        #[command(flatten)]
        g: Global,
    },
    /// Change an endpoint's replica bounds.
    Scale {
        /// The endpoint's name.
        name: String,
        /// Replicas kept whatever the load (0: scales to zero).
        #[arg(long)]
        min: Option<u32>,
        /// Most replicas.
        #[arg(long)]
        max: Option<u32>,
        #[command(flatten)]
        g: Global,
    },
    /// Delete an endpoint: its keys stop working and its replicas stop.
    Delete {
        /// The endpoint's name.
        name: String,
        #[command(flatten)]
        g: Global,
    },
    /// Create, list and revoke an endpoint's API keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// The autoscaler's decisions and the replicas' changes, newest first.
    Events {
        /// The endpoint's name.
        name: String,
        #[command(flatten)]
        g: Global,
    },
}

/// `gigafab endpoint create`.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Its name (the gateway serves it under /v1/endpoints/NAME/).
    name: String,
    /// The catalog model: NAME@VERSION or NAME@ALIAS (pinned now).
    #[arg(long)]
    model: String,
    /// Allocation charged [default: your only active one].
    #[arg(long)]
    allocation: Option<i64>,
    /// Accelerators per replica, or a share of one below 1 (`0.5`): each
    /// replica on a slice of a shared pool.
    #[arg(long, default_value = "1", value_parser = super::directives::parse_gpus)]
    gpus: super::directives::Gpus,
    /// Each replica on a named slice: 1g.10gb, cpx, mps-4.
    #[arg(long = "gpu-profile", value_name = "NAME")]
    gpu_profile: Option<String>,
    /// Accelerator type a replica may use (repeatable).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Replicas kept whatever the load (0: scales to zero).
    #[arg(long, default_value_t = 0)]
    min: u32,
    /// Most replicas.
    #[arg(long, default_value_t = 1)]
    max: u32,
    /// Requests in flight per replica the autoscaler aims at.
    #[arg(long)]
    target_inflight: Option<f64>,
    /// Seconds without a request before the last replica goes.
    #[arg(long)]
    idle_to_zero: Option<f64>,
    /// Seconds the load must stay lower before replicas go.
    #[arg(long)]
    scale_down_delay: Option<f64>,
    /// Priority class of its replicas.
    #[arg(long)]
    priority: Option<i64>,
    /// Environment of its replicas: NAME=VALUE (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Path asked to know a replica is ready [default: /v1/models].
    #[arg(long)]
    ready_path: Option<String>,
    /// Seconds a replica may take to become ready [default: 900].
    #[arg(long)]
    startup_timeout: Option<i64>,
    /// Seconds a request waits for a ready replica [default: 300].
    #[arg(long)]
    hold_timeout: Option<i64>,
    /// Most requests waiting for a ready replica [default: 256].
    #[arg(long)]
    queue_limit: Option<u32>,
    /// Requests a second one API key may make [default: 50].
    #[arg(long)]
    key_rate: Option<f64>,
    /// Project of its replicas.
    #[arg(long)]
    project: Option<String>,
    #[command(flatten)]
    g: Global,
    /// The serving command: `{port}`, `{host}` and `{model_dir}` are
    /// filled in for each replica.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// `gigafab endpoint keys ...`.
#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create an API key (printed once).
    Create {
        /// The endpoint's name.
        endpoint: String,
        /// A label for the key.
        #[arg(long)]
        name: Option<String>,
        /// Days until it stops working [default: 90].
        #[arg(long)]
        days: Option<f64>,
        #[command(flatten)]
        g: Global,
    },
    /// List an endpoint's keys (never the keys themselves).
    Ls {
        /// The endpoint's name.
        endpoint: String,
        #[command(flatten)]
        g: Global,
    },
    /// Revoke a key: it stops working at once.
    Revoke {
        /// The endpoint's name.
        endpoint: String,
        /// The key's id.
        id: i64,
        #[command(flatten)]
        g: Global,
    },
}

pub(super) async fn run(c: EndpointCmd) -> Result<()> {
    match c {
        EndpointCmd::Create(a) => create(*a).await,
        EndpointCmd::Ls(a) => {
            let r = a.g.conn.api()?.get(&["endpoints"], &[]).await?;
            show_as(&a.g, &r, |p: &gigafab_api::Page<gigafab_api::Endpoint>| {
                endpoints(&p.items)
            })
        }
        EndpointCmd::Show { name, g } => {
            let r = g.conn.api()?.get(&["endpoints", &name], &[]).await?;
            show_as(&g, &r, endpoint)
        }
        EndpointCmd::Scale { name, min, max, g } => {
            if min.is_none() && max.is_none() {
                bail!("give --min, --max or both");
            }
            let body = gigafab_api::ScaleEndpoint {
                min_replicas: min,
                max_replicas: max,
            };
            let r = g
                .conn
                .api()?
                .post(&["endpoints", &name, "scale"], Some(&body))
                .await?;
            show_as(&g, &r, endpoint)
        }
        EndpointCmd::Delete { name, g } => {
            let r = g.conn.api()?.delete(&["endpoints", &name]).await?;
            if g.output == Format::Table {
                note(&format!("deleted endpoint {name}: its replicas stop"));
            }
            show_as(&g, &r, |e: &gigafab_api::Endpoint| format!("{}\n", e.id))
        }
        EndpointCmd::Keys(k) => keys(k).await,
        EndpointCmd::Events { name, g } => {
            let r = g
                .conn
                .api()?
                .get(&["endpoints", &name, "events"], &[])
                .await?;
            show_as(&g, &r, |ev: &gigafab_api::EndpointEvents| events(&ev.items))
        }
    }
}

async fn create(a: CreateArgs) -> Result<()> {
    let api = a.g.conn.api()?;
    let allocation = match a.allocation {
        Some(x) => x,
        None => {
            let r = api.get_list(&["allocations"], &[], true).await?;
            let page: gigafab_api::Page<gigafab_api::Allocation> = typed(&r.value)?;
            pick_allocation(&page.items)?.id.0
        }
    };
    let mut env = std::collections::BTreeMap::new();
    for kv in &a.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv}: expected NAME=VALUE"))?;
        env.insert(k.to_string(), v.to_string());
    }
    let mut body = gigafab_api::CreateEndpoint::new(&a.name, &a.model, allocation, a.command);
    match a.gpus {
        super::directives::Gpus::Count(n) => body.gpus = Some(n as i64),
        super::directives::Gpus::Share(x) => {
            body.gpus = Some(1);
            body.gpu_share = Some(x);
        }
    }
    body.gpu_profile = a.gpu_profile;
    body.types = (!a.types.is_empty()).then_some(a.types);
    body.min_replicas = Some(a.min);
    body.max_replicas = Some(a.max);
    body.target_inflight = a.target_inflight;
    body.idle_to_zero_s = a.idle_to_zero;
    body.scale_down_delay_s = a.scale_down_delay;
    body.priority = a.priority;
    body.env = (!env.is_empty()).then_some(env);
    body.ready_path = a.ready_path;
    body.startup_timeout_s = a.startup_timeout;
    body.hold_timeout_s = a.hold_timeout;
    body.queue_limit = a.queue_limit;
    body.key_rate_per_s = a.key_rate;
    body.project = a.project;
    let r = api.post(&["endpoints"], Some(&body)).await?;
    if a.g.output == Format::Table {
        let e: gigafab_api::Endpoint = typed(&r.value)?;
        note(&format!(
            "created endpoint {} serving {} ({}..{} replicas); make a key with `gigafab endpoint keys create {}`",
            e.name, e.model, e.scaling.min_replicas, e.scaling.max_replicas, e.name
        ));
    }
    show_as(&a.g, &r, endpoint)
}

async fn keys(k: KeysCmd) -> Result<()> {
    match k {
        KeysCmd::Create {
            endpoint,
            name,
            days,
            g,
        } => {
            let body = gigafab_api::CreateEndpointKey {
                name,
                expires_in_days: days,
            };
            let r = g
                .conn
                .api()?
                .post(&["endpoints", &endpoint, "keys"], Some(&body))
                .await?;
            if g.output == Format::Table {
                let k: gigafab_api::NewEndpointKey = typed(&r.value)?;
                note(&format!(
                    "key {} of {endpoint}, valid until {}; it is shown only now:",
                    k.info.id,
                    k.info.expires_at.as_deref().unwrap_or("-")
                ));
            }
            show_as(&g, &r, |k: &gigafab_api::NewEndpointKey| {
                format!("{}\n", k.key)
            })
        }
        KeysCmd::Ls { endpoint, g } => {
            let r = g
                .conn
                .api()?
                .get(&["endpoints", &endpoint, "keys"], &[])
                .await?;
            show_as(&g, &r, |p: &gigafab_api::Page<gigafab_api::EndpointKey>| {
                key_table(&p.items)
            })
        }
        KeysCmd::Revoke { endpoint, id, g } => {
            let r = g
                .conn
                .api()?
                .delete(&["endpoints", &endpoint, "keys", &id.to_string()])
                .await?;
            show_as(&g, &r, |k: &gigafab_api::EndpointKey| {
                key_table(std::slice::from_ref(k))
            })
        }
    }
}

fn replicas_cell(e: &gigafab_api::Endpoint) -> String {
    let ready = e
        .replicas
        .iter()
        .filter(|r| r.state == gigafab_api::ReplicaState::Ready)
        .count();
    format!(
        "{ready}/{} ({}..{})",
        e.replicas.len(),
        e.scaling.min_replicas,
        e.scaling.max_replicas
    )
}

fn endpoints(items: &[gigafab_api::Endpoint]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "ORG",
        "MODEL",
        "READY/REPLICAS",
        "GPUS",
        "REQUESTS",
        "TOKENS",
        "GPU-H",
    ])
    .right_align(&[4, 5, 6, 7]);
    for e in items {
        t.row([
            e.name.clone(),
            e.org.clone(),
            e.model.clone(),
            replicas_cell(e),
            e.gpus.to_string(),
            e.usage.requests.to_string(),
            (e.usage.prompt_tokens + e.usage.completion_tokens).to_string(),
            format!("{:.3}", e.usage.gpu_hours),
        ]);
    }
    t.render()
}

fn endpoint(e: &gigafab_api::Endpoint) -> String {
    let mut t = Table::bare();
    let u = &e.usage;
    t.row(["name".to_string(), e.name.clone()]);
    t.row(["url".to_string(), e.url.clone()]);
    t.row(["org".to_string(), e.org.clone()]);
    t.row(["model".to_string(), e.model.clone()]);
    t.row(["command".to_string(), e.command.join(" ")]);
    t.row(["allocation".to_string(), e.allocation.to_string()]);
    t.row(["gpus per replica".to_string(), e.gpus.to_string()]);
    t.row([
        "replicas".to_string(),
        format!(
            "{} (wanted {}, {} waiting requests)",
            replicas_cell(e),
            e.desired_replicas,
            e.queued
        ),
    ]);
    t.row([
        "scaling".to_string(),
        format!(
            "{} in flight a replica, idle to zero {} s, scale-down delay {} s",
            e.scaling.target_inflight, e.scaling.idle_to_zero_s, e.scaling.scale_down_delay_s
        ),
    ]);
    t.row([
        "served".to_string(),
        format!(
            "{} requests ({} errors), {} prompt + {} completion tokens",
            u.requests, u.errors, u.prompt_tokens, u.completion_tokens
        ),
    ]);
    t.row([
        "cost".to_string(),
        format!(
            "{:.3} GPU-h, {:.3} kWh{}",
            u.gpu_hours,
            u.energy_kwh,
            u.carbon_kg
                .map_or(String::new(), |c| format!(", {c:.3} kgCO2e"))
        ),
    ]);
    let mut s = t.render();
    if !e.replicas.is_empty() {
        let mut r = Table::new(&["JOB", "STATE", "IN FLIGHT", "ACCELERATORS"]).right_align(&[0, 2]);
        for x in &e.replicas {
            r.row([
                x.job.to_string(),
                serde_json::to_value(x.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                x.in_flight.to_string(),
                x.accelerators.join(","),
            ]);
        }
        s.push('\n');
        s.push_str(&r.render());
    }
    s
}

fn key_table(items: &[gigafab_api::EndpointKey]) -> String {
    let mut t = Table::new(&[
        "ID", "PREFIX", "NAME", "CREATED", "EXPIRES", "REVOKED", "REQUESTS", "TOKENS",
    ])
    .right_align(&[0, 6, 7]);
    for k in items {
        t.row([
            k.id.to_string(),
            k.prefix.clone(),
            k.name.clone().unwrap_or_default(),
            k.created_at.clone(),
            k.expires_at.clone().unwrap_or_default(),
            k.revoked_at.clone().unwrap_or_default(),
            k.requests.to_string(),
            (k.prompt_tokens + k.completion_tokens).to_string(),
        ]);
    }
    t.render()
}

fn events(items: &[gigafab_api::EndpointEvent]) -> String {
    let mut t = Table::new(&["AT", "KIND", "REPLICAS", "REASON", "DETAIL"]);
    for e in items {
        t.row([
            e.at.clone(),
            e.kind.clone(),
            if e.kind == "scale" {
                format!("{} -> {}", e.from_replicas, e.to_replicas)
            } else {
                String::new()
            },
            e.reason.clone(),
            e.detail.clone(),
        ]);
    }
    t.render()
}
