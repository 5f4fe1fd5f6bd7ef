//! Model endpoints (docs/endpoints.md): a catalog model served by
//! replicas, which are jobs of the endpoint's allocation. Handlers on the
//! store; the replicas' life is `manager`'s, the requests' the gateway's
//! (`crate::gateway`); what both share is in `registry`.

pub mod manager;
pub mod registry;
pub mod remote;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use gigafab_core::serving::ScalePolicy;
use tokio::sync::Mutex;

use crate::auth::{Principal, Role, hash_token, new_token};
use crate::error::ApiError;
use crate::state::Shared;
use crate::store::endpoints::{self as st, EndpointRow, KeyRow, Table};
use crate::time::Ms;
use registry::{Endpoint, Key, Settings};

/// Serialises the endpoints' writes (ids come from the store's highest).
static WRITES: Mutex<()> = Mutex::const_new(());

/// The variable holding a replica's own key (also `{api_key}`).
pub const REPLICA_KEY_VAR: &str = "GIGAFAB_REPLICA_KEY";

/// Most replicas an endpoint may have.
pub const MAX_REPLICAS: u32 = 64;
/// Most accelerators per replica.
pub const MAX_REPLICA_GPUS: i64 = 64;
/// Longest a request waits for a ready replica, s.
pub const MAX_HOLD_S: i64 = 600;
/// Most requests an endpoint holds.
pub const MAX_QUEUE: u32 = 10_000;
/// Default days of a key.
pub const DEFAULT_KEY_DAYS: f64 = 90.0;
/// Longest a key may live, days.
pub const MAX_KEY_DAYS: f64 = 3650.0;

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("endpoint_not_found", format!("endpoint `{name}` not found"))
}

/// An endpoint's name: 1 to 63 of `a-z 0-9 -`, starting with a letter,
/// not ending with `-` (it is a path segment and a job name).
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: `{name}` must be 1 to 63 of a-z, 0-9 and `-`, starting with a letter"
        )))
    }
}

/// The endpoint `name`, if `who` may see it.
pub fn visible(s: &Shared, who: &Principal, name: &str) -> Result<Arc<Endpoint>, ApiError> {
    s.serving
        .get(name)
        .filter(|e| who.sees_org(e.org_id))
        .ok_or_else(|| not_found(name))
}

/// `who` may change it: its organisation's owners and members, admins.
fn may_manage(who: &Principal, e: &Endpoint) -> Result<(), ApiError> {
    if who.role == Role::Admin || (who.role.in_org() && who.org_id == Some(e.org_id)) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "only the endpoint's organisation and admins change it",
        ))
    }
}

/// Reads the live endpoints, their keys and their replicas' jobs from the
/// store into `s.serving` (at start).
pub async fn load(s: &Shared) -> Result<(), sqlx::Error> {
    let pool = &s.store.pool;
    for r in st::live(pool).await? {
        let Ok(settings) = serde_json::from_str::<Settings>(&r.spec) else {
            tracing::error!(
                "endpoint {} ({}): unreadable settings; not served",
                r.id,
                r.name
            );
            continue;
        };
        let e = Arc::new(Endpoint::new(
            r.id,
            (r.name.clone(), s.tenancy.org_name(r.org_id)),
            (r.org_id, r.user_id, r.alloc_id),
            r.project.clone(),
            r.created_ms.0,
            settings,
            s.metrics.endpoint(&r.name),
        ));
        for job in st::replica_jobs(pool, r.id).await? {
            if let Some(row) = crate::store::jobs::get(pool, job).await? {
                let spec: crate::model::StoredSpec =
                    serde_json::from_str(&row.spec).unwrap_or_default();
                let port = spec
                    .env
                    .get("PORT")
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let secret = spec.env.get(REPLICA_KEY_VAR).cloned().unwrap_or_default();
                let mut r = registry::Replica::new(job, port, secret);
                r.kept = !spec.preemptible;
                e.replicas
                    .write()
                    .map_err(|_| sqlx::Error::PoolClosed)?
                    .push(Arc::new(r));
            }
        }
        let n = e.replicas().len() as u32;
        if let Ok(mut sc) = e.scale.lock() {
            sc.replicas = n;
        }
        s.serving.insert(e);
    }
    let now = s.clock.now().0;
    for k in st::keys(pool).await? {
        let Some(e) = s.serving.by_id(k.endpoint_id) else {
            continue;
        };
        let key = Key::new(
            k.id,
            k.endpoint_id,
            k.expires_ms.map(|m| m.0),
            e.settings().key_rate_per_s,
        );
        if k.revoked_ms.is_some() || k.expires_ms.is_some_and(|x| x.0 <= now) {
            key.revoked.store(true, Ordering::Release);
        }
        s.serving.insert_key(k.hash, Arc::new(key));
    }
    Ok(())
}

/// Creates an endpoint of `who`'s organisation.
pub async fn create(
    s: &Shared,
    who: &Principal,
    req: gigafab_api::CreateEndpoint,
) -> Result<gigafab_api::Endpoint, ApiError> {
    if !who.role.in_org() && who.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only an organisation's owners and members create endpoints",
        ));
    }
    check_name(&req.name)?;
    let gpus = req.gpus.unwrap_or(1);
    if !(1..=MAX_REPLICA_GPUS).contains(&gpus) {
        return Err(ApiError::invalid(format!(
            "gpus: {gpus} is not within 1..={MAX_REPLICA_GPUS}"
        )));
    }
    let scaling = ScalePolicy {
        min_replicas: req.min_replicas.unwrap_or(0),
        max_replicas: req.max_replicas.unwrap_or(1),
        target_inflight: req.target_inflight.unwrap_or(8.0),
        idle_to_zero_s: req.idle_to_zero_s.unwrap_or(600.0),
        scale_down_delay_s: req.scale_down_delay_s.unwrap_or(120.0),
    };
    check_scaling(&scaling)?;
    check_kept(who, scaling.min_replicas, gpus)?;
    if req.command.iter().any(|a| a.contains("{api_key}")) {
        return Err(ApiError::invalid(
            "command: `{api_key}` goes in env (API_KEY={api_key}): a command line is readable by every user of the node",
        ));
    }
    let ready_path = req
        .ready_path
        .clone()
        .unwrap_or_else(|| "/v1/models".into());
    if !ready_path.starts_with('/')
        || ready_path.len() > 256
        || !ready_path.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::invalid(
            "ready_path: an absolute path of visible ASCII characters (`/health`)",
        ));
    }
    let startup_timeout_s = req.startup_timeout_s.unwrap_or(900);
    let hold_timeout_s = req.hold_timeout_s.unwrap_or(300);
    let queue_limit = req.queue_limit.unwrap_or(256);
    let key_rate_per_s = req.key_rate_per_s.unwrap_or(50.0);
    if !(1..=86_400).contains(&startup_timeout_s) {
        return Err(ApiError::invalid("startup_timeout_s: within 1..=86400"));
    }
    if !(1..=MAX_HOLD_S).contains(&hold_timeout_s) {
        return Err(ApiError::invalid(format!(
            "hold_timeout_s: within 1..={MAX_HOLD_S}"
        )));
    }
    if queue_limit > MAX_QUEUE {
        return Err(ApiError::invalid(format!(
            "queue_limit: at most {MAX_QUEUE}"
        )));
    }
    if !(key_rate_per_s.is_finite() && key_rate_per_s > 0.0 && key_rate_per_s <= 1e6) {
        return Err(ApiError::invalid(
            "key_rate_per_s: above 0, at most 1000000",
        ));
    }
    // the replica's own fields, checked as a job's would be
    let slice = (req.gpu_share.is_some() || req.gpu_profile.is_some())
        .then(|| (req.gpu_share, req.gpu_profile.clone()));
    let probe = replica_request(
        &req.command,
        req.allocation.id().unwrap_or(0),
        gpus,
        (&req.types, &req.vendor, req.min_memory_gb),
        &slice,
        (req.priority.unwrap_or(0), false),
        (&req.env, req.project.clone()),
    );
    let valid = crate::submission::validate(who, probe, &s.factory)?;
    let priority = valid.priority;
    let alloc_id = valid.alloc_id;
    // the model: readable by the caller, pinned to its version now
    let inputs = crate::catalog::resolve_inputs(s, who, std::slice::from_ref(&req.model))
        .await
        .map_err(|e| ApiError {
            message: format!("model: {}", e.message),
            ..e
        })?;
    let model = inputs[0].reference.clone();
    if !model.starts_with("model:") {
        return Err(ApiError::invalid(format!(
            "model: `{}` is not a model",
            req.model
        )));
    }
    // the allocation: the caller's organisation's (an admin's: any), whose
    // organisation owns the endpoint
    let org_id = match crate::store::allocs::org_of(&s.store.pool, alloc_id).await? {
        Some(o) if who.role == Role::Admin || who.org_id == Some(o) => o,
        _ => {
            return Err(ApiError::not_found(
                "allocation_not_found",
                format!("allocation {alloc_id} not found in your organisation"),
            ));
        }
    };
    let settings = Settings {
        model,
        command: req.command.clone(),
        gpus,
        types: valid.types.clone(),
        vendor: valid.vendor.clone(),
        min_memory_gb: req.min_memory_gb,
        slice,
        priority,
        scaling,
        env: valid.env.clone(),
        ready_path,
        startup_timeout_s,
        hold_timeout_s,
        queue_limit,
        key_rate_per_s,
    };
    let _w = WRITES.lock().await;
    if s.serving.get(&req.name).is_some() {
        return Err(ApiError::conflict(
            "endpoint_exists",
            format!("an endpoint named `{}` exists", req.name),
        ));
    }
    let now = s.clock.now();
    let id = st::max_id(&s.store.pool, Table::Endpoints).await? + 1;
    let row = EndpointRow {
        id,
        name: req.name.clone(),
        org_id,
        user_id: who.user_id,
        alloc_id,
        project: req.project.clone(),
        spec: serde_json::to_string(&settings).unwrap_or_default(),
        created_ms: now,
    };
    s.store
        .write(vec![
            st::insert(&row),
            s.audit_op(
                who,
                now,
                "create_endpoint",
                &format!("endpoint:{}", req.name),
                format!("{} on allocation {alloc_id}", settings.model),
            ),
        ])
        .await?;
    let e = Arc::new(Endpoint::new(
        id,
        (req.name.clone(), s.tenancy.org_name(org_id)),
        (org_id, who.user_id, alloc_id),
        req.project.clone(),
        now.0,
        settings,
        s.metrics.endpoint(&req.name),
    ));
    s.serving.insert(e.clone());
    s.serving.wake.notify_one();
    view(s, &e).await
}

/// Most accelerators an organisation's endpoint keeps whatever the load
/// (its minimum replicas, which are never preempted and preempt
/// preemptible training): more is an admin's to set.
pub const MAX_KEPT_GPUS: i64 = 16;

fn check_kept(who: &Principal, min_replicas: u32, gpus: i64) -> Result<(), ApiError> {
    let kept = min_replicas as i64 * gpus;
    if who.role != Role::Admin && kept > MAX_KEPT_GPUS {
        return Err(ApiError::invalid(format!(
            "min_replicas: {min_replicas} replicas of {gpus} accelerators keep {kept}, more than the {MAX_KEPT_GPUS} an organisation may keep; ask an admin"
        )));
    }
    Ok(())
}

fn check_scaling(p: &ScalePolicy) -> Result<(), ApiError> {
    p.check().map_err(ApiError::invalid)?;
    if p.max_replicas > MAX_REPLICAS {
        return Err(ApiError::invalid(format!(
            "max_replicas: at most {MAX_REPLICAS}"
        )));
    }
    Ok(())
}

/// The job request of a replica: `command` with `{port}`, `{host}` and
/// `{model_dir}` left for the manager to fill in.
pub(crate) fn replica_request(
    command: &[String],
    alloc: i64,
    gpus: i64,
    (types, vendor, min_memory_gb): (&Option<Vec<String>>, &Option<String>, Option<f64>),
    slice: &Option<(Option<f64>, Option<String>)>,
    (priority, preemptible): (i64, bool),
    (env, project): (
        &Option<std::collections::BTreeMap<String, String>>,
        Option<String>,
    ),
) -> gigafab_api::SubmitJob {
    let mut r = gigafab_api::SubmitJob::new(alloc, gpus, command.to_vec());
    r.types = types.clone();
    r.vendor = vendor.clone();
    r.min_memory_gb = min_memory_gb;
    if let Some((share, profile)) = slice {
        r.gpu_share = *share;
        r.gpu_profile = profile.clone();
    }
    r.priority = Some(priority);
    r.preemptible = Some(preemptible);
    r.env = env.clone();
    r.project = project;
    r
}

/// The endpoint as the API shows it.
pub async fn view(s: &Shared, e: &Endpoint) -> Result<gigafab_api::Endpoint, ApiError> {
    let set = e.settings();
    let pool = &s.store.pool;
    let org = s.tenancy.org_name(e.org_id);
    let user = s.tenancy.login(e.user_id).unwrap_or_default();
    // what the stored keys counted, plus what is not flushed yet
    let keys = st::keys(pool).await?;
    let mut usage = gigafab_api::EndpointUsage::default();
    for k in keys.iter().filter(|k| k.endpoint_id == e.id) {
        usage.requests += k.requests.max(0) as u64;
        usage.errors += k.errors.max(0) as u64;
        usage.prompt_tokens += k.prompt_tokens.max(0) as u64;
        usage.completion_tokens += k.completion_tokens.max(0) as u64;
    }
    for k in s.serving.keys().iter().filter(|k| k.endpoint_id == e.id) {
        usage.requests += k.served.requests.load(Ordering::Relaxed);
        usage.errors += k.served.errors.load(Ordering::Relaxed);
        usage.prompt_tokens += k.served.prompt_tokens.load(Ordering::Relaxed);
        usage.completion_tokens += k.served.completion_tokens.load(Ordering::Relaxed);
    }
    let (gpu_s, energy_j, carbon_g) = st::replica_totals(pool, e.id).await?;
    let now = s.clock.now();
    let mut running_h = 0.0;
    let mut replicas = Vec::new();
    for r in e.replicas() {
        if let Some(row) = crate::store::jobs::get(pool, r.job).await?
            && row.state == "running"
        {
            // the ended runs are in gpu_s: only the current one here
            running_h += row.gpu_hours(now) - row.gpu_s / 3600.0;
        }
        replicas.push(gigafab_api::EndpointReplica {
            job: gigafab_api::JobId(r.job),
            state: r.state().api(),
            in_flight: r.in_flight.load(Ordering::Relaxed),
            accelerators: r.accelerators.lock().map(|a| a.clone()).unwrap_or_default(),
        });
    }
    usage.gpu_hours = gpu_s / 3600.0 + running_h;
    usage.energy_kwh = energy_j / 3.6e6;
    usage.carbon_kg = carbon_g.map(|g| g / 1e3);
    let desired = e.scale.lock().map(|x| x.replicas).unwrap_or(0);
    Ok(gigafab_api::Endpoint {
        id: gigafab_api::EndpointId(e.id),
        name: e.name.clone(),
        org,
        project: e.project.clone(),
        user,
        model: set.model.clone(),
        command: set.command.clone(),
        allocation: gigafab_api::AllocationId(e.alloc_id),
        gpus: set.gpus,
        accelerator: gigafab_api::AcceleratorFilter {
            types: set.types.clone(),
            vendor: set.vendor.clone(),
            min_memory_gb: set.min_memory_gb,
            slice: set.slice.as_ref().map(|(share, name)| {
                name.clone()
                    .unwrap_or_else(|| share.map_or("any".into(), |x| x.to_string()))
            }),
        },
        priority: set.priority,
        scaling: gigafab_api::EndpointScaling {
            min_replicas: set.scaling.min_replicas,
            max_replicas: set.scaling.max_replicas,
            target_inflight: set.scaling.target_inflight,
            idle_to_zero_s: set.scaling.idle_to_zero_s,
            scale_down_delay_s: set.scaling.scale_down_delay_s,
        },
        desired_replicas: desired,
        replicas,
        queued: e.queued.load(Ordering::Relaxed),
        url: format!("/v1/endpoints/{}", e.name),
        created_at: Ms(e.created_ms).rfc3339(),
        usage,
    })
}

/// The endpoints `who` sees.
pub async fn list(s: &Shared, who: &Principal) -> Result<Vec<gigafab_api::Endpoint>, ApiError> {
    let mut out = Vec::new();
    for e in s.serving.all().iter().filter(|e| who.sees_org(e.org_id)) {
        out.push(view(s, e).await?);
    }
    Ok(out)
}

/// New replica bounds.
pub async fn scale(
    s: &Shared,
    who: &Principal,
    name: &str,
    req: gigafab_api::ScaleEndpoint,
) -> Result<gigafab_api::Endpoint, ApiError> {
    let e = visible(s, who, name)?;
    may_manage(who, &e)?;
    let _w = WRITES.lock().await;
    let mut set = e.settings();
    let before = (set.scaling.min_replicas, set.scaling.max_replicas);
    if let Some(m) = req.min_replicas {
        set.scaling.min_replicas = m;
    }
    if let Some(m) = req.max_replicas {
        set.scaling.max_replicas = m;
    }
    check_scaling(&set.scaling)?;
    check_kept(who, set.scaling.min_replicas, set.gpus)?;
    let now = s.clock.now();
    let _ids = manager::EVENT_IDS.lock().await;
    let eid = st::max_id(&s.store.pool, Table::Events).await? + 1;
    s.store
        .write(vec![
            st::update_spec(e.id, serde_json::to_string(&set).unwrap_or_default()),
            st::event(
                eid,
                e.id,
                now,
                "bounds",
                before.0,
                set.scaling.min_replicas,
                "scaled",
                format!(
                    "min {}..max {} (was {}..{}) by {}",
                    set.scaling.min_replicas,
                    set.scaling.max_replicas,
                    before.0,
                    before.1,
                    who.login
                ),
            ),
            s.audit_op(
                who,
                now,
                "scale_endpoint",
                &format!("endpoint:{name}"),
                format!(
                    "min {} max {}",
                    set.scaling.min_replicas, set.scaling.max_replicas
                ),
            ),
        ])
        .await?;
    if let Ok(mut w) = e.settings.write() {
        *w = set;
    }
    s.serving.wake.notify_one();
    view(s, &e).await
}

/// Deletes an endpoint: its keys stop working, its replicas are cancelled.
pub async fn delete(
    s: &Shared,
    who: &Principal,
    name: &str,
) -> Result<gigafab_api::Endpoint, ApiError> {
    let e = visible(s, who, name)?;
    may_manage(who, &e)?;
    let v = view(s, &e).await?;
    let _w = WRITES.lock().await;
    let now = s.clock.now();
    let mut ops = st::delete(e.id, now);
    ops.push(s.audit_op(
        who,
        now,
        "delete_endpoint",
        &format!("endpoint:{name}"),
        String::new(),
    ));
    s.store.write(ops).await?;
    s.serving.remove(name);
    for r in e.replicas() {
        manager::cancel_replica(s, &e, r.job).await;
    }
    Ok(v)
}

fn key_view(k: &KeyRow, endpoint: &str, live: Option<&Key>) -> gigafab_api::EndpointKey {
    let extra = |f: fn(&registry::Served) -> u64| live.map_or(0, |k| f(&k.served));
    gigafab_api::EndpointKey {
        id: gigafab_api::EndpointKeyId(k.id),
        endpoint: endpoint.to_string(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        created_at: k.created_ms.rfc3339(),
        expires_at: k.expires_ms.map(Ms::rfc3339),
        revoked_at: k.revoked_ms.map(Ms::rfc3339),
        requests: k.requests.max(0) as u64 + extra(|s| s.requests.load(Ordering::Relaxed)),
        prompt_tokens: k.prompt_tokens.max(0) as u64
            + extra(|s| s.prompt_tokens.load(Ordering::Relaxed)),
        completion_tokens: k.completion_tokens.max(0) as u64
            + extra(|s| s.completion_tokens.load(Ordering::Relaxed)),
    }
}

/// A new API key of endpoint `name` (shown once).
pub async fn create_key(
    s: &Shared,
    who: &Principal,
    name: &str,
    req: gigafab_api::CreateEndpointKey,
) -> Result<gigafab_api::NewEndpointKey, ApiError> {
    let e = visible(s, who, name)?;
    may_manage(who, &e)?;
    let days = req.expires_in_days.unwrap_or(DEFAULT_KEY_DAYS);
    if !(days.is_finite() && days > 0.0 && days <= MAX_KEY_DAYS) {
        return Err(ApiError::invalid(format!(
            "expires_in_days: above 0, at most {MAX_KEY_DAYS}"
        )));
    }
    if let Some(n) = &req.name
        && (n.len() > 64 || n.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "name: at most 64 characters, no control characters",
        ));
    }
    let key = format!("gfk_{}", &new_token()[3..]);
    let _w = WRITES.lock().await;
    let now = s.clock.now();
    let row = KeyRow {
        id: st::max_id(&s.store.pool, Table::Keys).await? + 1,
        endpoint_id: e.id,
        name: req.name.clone(),
        prefix: key[..8].to_string(),
        hash: hash_token(&key),
        created_ms: now,
        expires_ms: Some(now.plus_days(days)),
        revoked_ms: None,
        requests: 0,
        errors: 0,
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    s.store
        .write(vec![
            st::insert_key(&row, who.user_id),
            s.audit_op(
                who,
                now,
                "create_endpoint_key",
                &format!("endpoint:{name}"),
                format!("key {} ({})", row.id, row.prefix),
            ),
        ])
        .await?;
    s.serving.insert_key(
        row.hash.clone(),
        Arc::new(Key::new(
            row.id,
            e.id,
            row.expires_ms.map(|m| m.0),
            e.settings().key_rate_per_s,
        )),
    );
    Ok(gigafab_api::NewEndpointKey {
        key,
        info: key_view(&row, name, None),
    })
}

/// The keys of endpoint `name`.
pub async fn list_keys(
    s: &Shared,
    who: &Principal,
    name: &str,
) -> Result<Vec<gigafab_api::EndpointKey>, ApiError> {
    let e = visible(s, who, name)?;
    may_manage(who, &e)?;
    let live = s.serving.keys();
    Ok(st::keys(&s.store.pool)
        .await?
        .iter()
        .filter(|k| k.endpoint_id == e.id)
        .map(|k| key_view(k, name, live.iter().find(|l| l.id == k.id).map(|a| &**a)))
        .collect())
}

/// Revokes key `id` of endpoint `name`: it stops working at once.
pub async fn revoke_key(
    s: &Shared,
    who: &Principal,
    name: &str,
    id: i64,
) -> Result<gigafab_api::EndpointKey, ApiError> {
    let e = visible(s, who, name)?;
    may_manage(who, &e)?;
    let _w = WRITES.lock().await;
    let keys = st::keys(&s.store.pool).await?;
    let k = keys
        .iter()
        .find(|k| k.id == id && k.endpoint_id == e.id)
        .ok_or_else(|| {
            ApiError::not_found("key_not_found", format!("key {id} of `{name}` not found"))
        })?;
    let now = s.clock.now();
    if k.revoked_ms.is_none() {
        s.store
            .write(vec![
                st::revoke_key(id, now),
                s.audit_op(
                    who,
                    now,
                    "revoke_endpoint_key",
                    &format!("endpoint:{name}"),
                    format!("key {id} ({})", k.prefix),
                ),
            ])
            .await?;
    }
    s.serving.revoke_key(id);
    let mut row = k.clone();
    row.revoked_ms.get_or_insert(now);
    Ok(key_view(&row, name, None))
}

/// The last events of endpoint `name`, newest first.
pub async fn events(
    s: &Shared,
    who: &Principal,
    name: &str,
) -> Result<gigafab_api::EndpointEvents, ApiError> {
    let e = visible(s, who, name)?;
    Ok(gigafab_api::EndpointEvents {
        items: st::events(&s.store.pool, e.id, 200).await?,
    })
}

/// 409 for a request that names an endpoint being deleted.
pub fn gone(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "endpoint_deleted",
        format!("endpoint `{name}` was deleted"),
    )
}
