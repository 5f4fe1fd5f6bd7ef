//! Model endpoints: a catalog model served as an OpenAI-compatible,
//! autoscaled service (docs/endpoints.md), its API keys, its scaling
//! events and what it has served.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{AcceleratorFilter, AllocationId, IdRef, JobId};

id_type!(
    /// An endpoint's id.
    EndpointId
);
id_type!(
    /// An endpoint API key's id.
    EndpointKeyId
);

/// Body of `POST /api/v1/endpoints`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    /// Its name, unique on the server: the gateway serves it under
    /// `/v1/endpoints/{name}/` (1 to 63 of `a-z 0-9 -`, starting with a
    /// letter).
    #[schema(max_length = 63)]
    pub name: String,
    /// The catalog model it serves, `NAME@VERSION` or `NAME@ALIAS`: pinned
    /// to its version at creation; its residency limits where replicas run.
    pub model: String,
    /// The serving program and its arguments: any process that serves the
    /// OpenAI API over HTTP. `{port}` in an argument becomes the port the
    /// replica must listen on, `{host}` its address and `{model_dir}` the
    /// model's directory (also in `PORT`, `HOST` and `GIGAFAB_MODEL_DIR`).
    #[schema(min_items = 1)]
    pub command: Vec<String>,
    /// The allocation charged.
    #[schema(value_type = IdRef)]
    pub allocation: IdRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Accelerators per replica [default 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub gpus: Option<i64>,
    /// Accelerator types a replica may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub min_memory_gb: Option<f64>,
    /// Each replica on a slice of one accelerator (`gpus` 1): at least
    /// this share of it, as a job's `gpu_share`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, exclusive_maximum = 1)]
    pub gpu_share: Option<f64>,
    /// Each replica on a named slice (`1g.10gb`, `mps-4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 32)]
    pub gpu_profile: Option<String>,
    /// Replicas kept whatever the load [default 0: scales to zero].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 64)]
    pub min_replicas: Option<u32>,
    /// Most replicas [default 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub max_replicas: Option<u32>,
    /// Requests in flight per replica the autoscaler aims at [default 8].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub target_inflight: Option<f64>,
    /// Seconds without a request before the last replica goes [default 600].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub idle_to_zero_s: Option<f64>,
    /// Seconds the load must stay lower before replicas go [default 120].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0)]
    pub scale_down_delay_s: Option<f64>,
    /// Priority class of its replicas (as jobs'; docs/endpoints.md says
    /// how replicas rank against training) [default 0].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -10000, maximum = 10000)]
    pub priority: Option<i64>,
    /// Extra environment of its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// The path the gateway asks for to know a replica is ready [default
    /// `/v1/models`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_path: Option<String>,
    /// Seconds a replica may take to become ready before it is replaced
    /// [default 900].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub startup_timeout_s: Option<i64>,
    /// Seconds a request waits for a ready replica (while one starts)
    /// before it fails with 503 [default 300].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 600)]
    pub hold_timeout_s: Option<i64>,
    /// Most requests waiting for a ready replica [default 256].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 10000)]
    pub queue_limit: Option<u32>,
    /// Requests a second one API key may make (bursts of 5 s worth)
    /// [default 50].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0)]
    pub key_rate_per_s: Option<f64>,
}

impl CreateEndpoint {
    /// `command` serving `model` on allocation `allocation`, everything
    /// else left to the server's defaults.
    pub fn new(name: &str, model: &str, allocation: i64, command: Vec<String>) -> CreateEndpoint {
        CreateEndpoint {
            name: name.into(),
            model: model.into(),
            command,
            allocation: IdRef::Num(allocation),
            project: None,
            gpus: None,
            types: None,
            vendor: None,
            min_memory_gb: None,
            gpu_share: None,
            gpu_profile: None,
            min_replicas: None,
            max_replicas: None,
            target_inflight: None,
            idle_to_zero_s: None,
            scale_down_delay_s: None,
            priority: None,
            env: None,
            ready_path: None,
            startup_timeout_s: None,
            hold_timeout_s: None,
            queue_limit: None,
            key_rate_per_s: None,
        }
    }
}

/// Body of `POST /api/v1/endpoints/{name}/scale`: new bounds (what is
/// left out stays).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 64)]
    pub min_replicas: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 64)]
    pub max_replicas: Option<u32>,
}

/// How an endpoint scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointScaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub target_inflight: f64,
    pub idle_to_zero_s: f64,
    pub scale_down_delay_s: f64,
}

/// Where a replica is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    /// Its job waits for accelerators.
    Queued,
    /// Running, not answering yet (loading the model).
    Starting,
    /// Answering: the gateway sends it requests.
    Ready,
    /// Taking no new requests; stops after its last answer.
    Draining,
}

/// One replica: a job of the endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointReplica {
    pub job: JobId,
    pub state: ReplicaState,
    /// Requests it is serving.
    pub in_flight: u32,
    /// Its accelerators (`node/index`), once running.
    pub accelerators: Vec<String>,
}

/// What an endpoint has served and cost, since it was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointUsage {
    pub requests: u64,
    /// Answers with a status of 400 or more (the gateway's or the replica's).
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Billing-weighted accelerator-hours of its replicas (charged to its
    /// allocation as jobs are).
    pub gpu_hours: f64,
    pub energy_kwh: f64,
    /// None where no site has a grid intensity.
    pub carbon_kg: Option<f64>,
}

/// `GET /api/v1/endpoints/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    pub id: EndpointId,
    pub name: String,
    pub org: String,
    pub project: Option<String>,
    /// Who created it (its replicas run as this user).
    pub user: String,
    /// The model, pinned: `model:NAME@VERSION`.
    pub model: String,
    pub command: Vec<String>,
    pub allocation: AllocationId,
    pub gpus: i64,
    pub accelerator: AcceleratorFilter,
    pub priority: i64,
    pub scaling: EndpointScaling,
    /// Replicas the autoscaler wants now.
    pub desired_replicas: u32,
    pub replicas: Vec<EndpointReplica>,
    /// Requests waiting for a ready replica now.
    pub queued: u32,
    /// The gateway's base URL path of its OpenAI API
    /// (`/v1/endpoints/{name}`).
    pub url: String,
    pub created_at: String,
    pub usage: EndpointUsage,
}

/// Body of `POST /api/v1/endpoints/{name}/keys`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpointKey {
    /// A label for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub name: Option<String>,
    /// Days until it stops working [default 90, at most 3650].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0, maximum = 3650)]
    pub expires_in_days: Option<f64>,
}

/// An endpoint API key (never the key itself, past its creation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointKey {
    pub id: EndpointKeyId,
    pub endpoint: String,
    pub name: Option<String>,
    /// Its first characters, to recognise it (`gfk_AbCd`).
    pub prefix: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// Requests made with it, and their tokens.
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// A new key: shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewEndpointKey {
    /// The key: `Authorization: Bearer <key>` at the gateway.
    pub key: String,
    #[serde(flatten)]
    pub info: EndpointKey,
}

/// One decision of an endpoint's autoscaler, or another change of its
/// replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointEvent {
    pub at: String,
    /// `scale`, `replica_failed`, `replica_replaced`, `bounds`.
    pub kind: String,
    pub from_replicas: u32,
    pub to_replicas: u32,
    /// The autoscaler's reason (`load`, `cold_start`, `load_fell`, `idle`,
    /// `min_replicas`, `max_replicas`, ...) or what happened.
    pub reason: String,
    pub detail: String,
}

/// `GET /api/v1/endpoints/{name}/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndpointEvents {
    pub items: Vec<EndpointEvent>,
}

/// How a standalone gateway reaches a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaReach {
    /// `host:port` over TCP.
    Tcp(String),
    /// Through its supervisor's socket at this path (a replica in a
    /// network of its own; a gateway on the same machine, as root).
    Socket(String),
}

/// A ready replica, as a gateway routes to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayReplica {
    pub job: JobId,
    pub reach: ReplicaReach,
    /// The key the replica asks of every request.
    pub secret: String,
}

/// An endpoint, as a gateway serves it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayEndpoint {
    pub id: EndpointId,
    pub name: String,
    /// Its organisation's name.
    pub owner: String,
    pub created_ms: i64,
    pub hold_timeout_s: i64,
    pub queue_limit: u32,
    pub key_rate_per_s: f64,
    /// Its ready replicas.
    pub replicas: Vec<GatewayReplica>,
    /// Replicas that ended unasked so far, and how the last one did
    /// (requests held for a replica give up when one fails).
    pub failures: u64,
    pub last_failure: String,
}

/// A live key, as a gateway checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayKey {
    pub id: EndpointKeyId,
    pub endpoint: EndpointId,
    /// Hex SHA-256 of the key.
    pub hash: String,
    pub expires_ms: Option<i64>,
}

/// What a gateway's requests do to one endpoint now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayLoad {
    pub endpoint: EndpointId,
    /// Requests being served, and waiting for a ready replica.
    pub in_flight: u32,
    pub queued: u32,
    /// Its last request, ms since the epoch (0: none yet).
    pub last_request_ms: i64,
    /// Requests in flight per replica (a draining replica stops when no
    /// gateway has any).
    pub replicas: Vec<GatewayReplicaLoad>,
}

/// Requests a gateway has in flight on one replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayReplicaLoad {
    pub job: JobId,
    pub in_flight: u32,
}

/// What one key served through a gateway since its last report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayKeyUsage {
    pub key: EndpointKeyId,
    pub requests: u64,
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Body of `POST /api/v1/gateway/sync`: a standalone gateway's report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySync {
    /// The gateway's name (its reports replace its earlier ones).
    #[schema(max_length = 128)]
    pub gateway: String,
    /// The report's number, growing (0: none). A report resent after its
    /// answer was lost keeps its number, and its usage is not counted
    /// again.
    #[serde(default)]
    pub seq: u64,
    pub load: Vec<GatewayLoad>,
    pub usage: Vec<GatewayKeyUsage>,
}

/// Answer of `POST /api/v1/gateway/sync`: everything a gateway serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GatewayRoutes {
    pub endpoints: Vec<GatewayEndpoint>,
    pub keys: Vec<GatewayKey>,
}
