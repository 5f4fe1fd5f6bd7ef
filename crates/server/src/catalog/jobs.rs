//! The catalog in jobs: inputs resolved at submission (readable only,
//! pinned, residency), and outputs registered as model versions.

use super::*;

/// A job input as the submission gives it: (kind, name, version or alias).
pub fn parse_ref(r: &str) -> Result<(Option<String>, String, Option<String>), ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "input: `{}` is not [dataset:|model:]NAME[@VERSION|@ALIAS]",
            r.chars().take(128).collect::<String>()
        ))
    };
    let (kind, rest) = match r.split_once(':') {
        Some((k, rest)) if KINDS.contains(&k) => (Some(k.to_string()), rest),
        Some(_) => return Err(bad()),
        None => (None, r),
    };
    let (name, reference) = match rest.split_once('@') {
        Some((n, v)) if !v.is_empty() => (n, Some(v.to_string())),
        Some(_) => return Err(bad()),
        None => (rest, None),
    };
    if valid_name(name, "input").is_err() {
        return Err(bad());
    }
    if let Some(v) = &reference
        && !(v.bytes().all(|b| b.is_ascii_digit()) && v.len() <= 18)
        && valid_alias(v).is_err()
    {
        return Err(bad());
    }
    Ok((kind, name.to_string(), reference))
}

/// The variable naming where a job with an output model writes it.
pub const OUTPUT_VAR: &str = "GIGAFAB_OUTPUT_DIR";

/// Where job `id` writes its output model: `output/` in its directory
/// (beside its logs), which the job makes.
pub fn output_dir(ex: &dyn gigafab_exec::Executor, id: i64) -> PathBuf {
    ex.output_dir(id)
}

/// Checks at submission that `who` may push versions of model `name`.
pub async fn check_output(s: &Shared, who: &Principal, name: &str) -> Result<(), ApiError> {
    let c = site(s)?;
    let (e, r) = find_entry(s, who, name).await?.ok_or_else(|| {
        unprocessable(
            "output_not_found",
            format!(
                "output_model: catalog entry `{}` not found (push a first version, or create it)",
                name.chars().take(128).collect::<String>()
            ),
        )
    })?;
    if e.kind != "model" {
        return Err(ApiError::invalid(format!(
            "output_model: `{}` is a {}",
            e.name, e.kind
        )));
    }
    if !r.write {
        return Err(ApiError::forbidden(format!(
            "output_model: only `{}`'s organisation pushes versions of it",
            e.name
        )));
    }
    residency_allows(c, &e)
}

/// Registers the outputs of completed jobs that name an output model:
/// each once, by the server (the job's files are hashed where it left
/// them; symbolic links, special files and hard links are refused), as
/// the job's user, with the job and its inputs as lineage. What came of
/// each is kept in `catalog_outputs` and the audit log.
pub async fn register_outputs(s: &Shared) -> Result<usize, ApiError> {
    let c = site(s)?;
    let pool = &s.store.pool;
    use std::sync::atomic::Ordering;
    // read before the scan: a job that ends meanwhile is above it
    let open = store::catalog::first_open_job(pool).await?;
    let due = store::catalog::outputs_due(pool, c.outputs_floor.load(Ordering::Relaxed)).await?;
    let last = due.last().map(|d| d.0);
    let full = due.len() == 16;
    let mut n = 0;
    for (job_id, spec_text, user_id) in due {
        let spec: crate::model::StoredSpec = serde_json::from_str(&spec_text).unwrap_or_default();
        let now = s.clock.now();
        // every job the scan finds is taken once, whatever comes of it:
        // one that only mentions the word (in its environment, say) too
        let entry = match &spec.output_model {
            Some(name) => store::catalog::entry(pool, name).await?,
            None => None,
        };
        let (Some(e), Some(who)) = (entry, s.tenancy.user_principal(user_id)) else {
            let why = if spec.output_model.is_none() {
                "no output model"
            } else {
                "not registered: the job's user is disabled"
            };
            s.store
                .write(vec![store::catalog::output_done(
                    job_id, None, None, why, now,
                )])
                .await?;
            n += 1;
            continue;
        };
        // the job has ended and its processes with it: its output moves out
        // of its account's reach (a root-only directory) before it is read,
        // so that nothing can be swapped in under the server's walk; a link
        // put in its place moves as a link and is refused
        let taken = c.staging.join(format!("output-{job_id}"));
        let moved = match std::fs::rename(output_dir(&*s.executor, job_id), &taken) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                Err("not registered: the job wrote nothing in $GIGAFAB_OUTPUT_DIR".to_string())
            }
            Err(err) if err.raw_os_error() == Some(libc::EXDEV) => Err(
                "not registered: the job's output is on another file system than the server's data directory"
                    .to_string(),
            ),
            Err(err) => Err(format!("not registered: {err}")),
        };
        let dir = taken.clone();
        let threads = c.threads;
        let d = dir.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            moved?;
            // out of the job's account's reach first (a process of the
            // account may keep a directory of the tree open), through
            // descriptors that never follow links
            gigafab_catalog::take_tree(&d).map_err(|e| format!("not registered: {e}"))?;
            let m = gigafab_catalog::hash_tree(&d, threads)
                .map_err(|e| format!("not registered: {e}"))?;
            // a hard link could name a file the job does not own
            for f in &m.files {
                use std::os::unix::fs::MetadataExt;
                let md = std::fs::symlink_metadata(d.join(&f.path))
                    .map_err(|e| format!("not registered: `{}`: {e}", f.path))?;
                if md.nlink() > 1 {
                    return Err(format!(
                        "not registered: `{}`: a hard link (an output's files are its own)",
                        f.path
                    ));
                }
            }
            Ok(m)
        })
        .await
        .map_err(|e| ApiError::store(e.to_string()))?;
        let lineage = t::Lineage {
            base: spec
                .inputs
                .iter()
                .find(|i| i.reference.starts_with("model:"))
                .map(|i| i.reference["model:".len()..].to_string()),
            datasets: spec
                .inputs
                .iter()
                .filter(|i| i.reference.starts_with("dataset:"))
                .map(|i| i.reference["dataset:".len()..].to_string())
                .collect(),
            job: Some(t::JobId(job_id)),
        };
        let _w = c.writes.lock().await;
        let result = match hashed {
            Err(err) => Err(err),
            Ok(m) => {
                let key = gigafab_catalog::store::new_key();
                // the tree is the server's now: taken as it is (made the
                // server's own, read-only), or copied to an object store
                match c.blobs.adopt_tree(&dir, &m, &key).await {
                    Err(err) => Err(format!("not registered: {err}")),
                    Ok(()) => match record_version(
                        s,
                        &who,
                        &e,
                        &m,
                        key.clone(),
                        false,
                        lineage,
                        &["latest".to_string()],
                    )
                    .await
                    {
                        Ok(v) => Ok(v.version),
                        Err(err) => {
                            let _ = c.blobs.remove(&key).await;
                            Err(format!("not registered: {}", err.message))
                        }
                    },
                }
            }
        };
        let (version, message) = match &result {
            Ok(v) => (Some(*v), format!("{}@{v}", e.name)),
            Err(m) => (None, m.clone()),
        };
        // what was not taken into the store goes
        if std::fs::symlink_metadata(&taken).is_ok() {
            gigafab_catalog::store::remove_tree(&taken);
        }
        let mut ops = vec![store::catalog::output_done(
            job_id,
            Some(e.id),
            version,
            &message,
            now,
        )];
        if result.is_err() {
            ops.push(s.audit_op(
                &who,
                now,
                "catalog_output_refused",
                &format!("job {job_id}"),
                message.clone(),
            ));
        }
        s.store.write(ops).await?;
        n += 1;
    }
    // every job below the first open one has ended, and those due were
    // taken (all of them, unless the scan was cut at 16)
    let floor = match (full, last) {
        (true, Some(l)) => l.min(open - 1),
        _ => open - 1,
    };
    c.outputs_floor.fetch_max(floor, Ordering::Relaxed);
    Ok(n)
}

/// Runs [`register_outputs`] every second until `stop`.
pub fn spawn_outputs(s: std::sync::Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    if s.catalog.is_none() {
        return;
    }
    tokio::spawn(async move {
        loop {
            if let Err(e) = register_outputs(&s).await {
                tracing::error!("catalog outputs: {e}");
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// What came of job `id`'s output model: (entry, version, message).
pub async fn output_of(
    s: &Shared,
    id: i64,
) -> Result<Option<(String, Option<i64>, String)>, ApiError> {
    Ok(store::catalog::output(&s.store.pool, id).await?)
}

/// The variable a job finds input `name` in: `GIGAFAB_INPUT_` and the
/// name in upper case, other characters than letters and digits as `_`.
pub fn input_var(name: &str) -> String {
    let mut v = String::from("GIGAFAB_INPUT_");
    v.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    v
}

/// Resolves a submission's inputs for `who`: each readable, an alias (or
/// none: `latest`, else the newest version) pinned to its version, its
/// files local (an object store's fetched, checked, into the cache).
pub async fn resolve_inputs(
    s: &Shared,
    who: &Principal,
    refs: &[String],
) -> Result<Vec<Input>, ApiError> {
    if refs.is_empty() {
        return Ok(Vec::new());
    }
    let c = site(s)?;
    if refs.len() > 32 {
        return Err(ApiError::invalid("inputs: at most 32"));
    }
    let mut out: Vec<Input> = Vec::new();
    for r in refs {
        let (kind, name, reference) = parse_ref(r)?;
        let (e, rt) = find_entry(s, who, &name).await?.ok_or_else(|| {
            unprocessable(
                "input_not_found",
                format!("input: catalog entry `{name}` not found"),
            )
        })?;
        if !rt.read {
            return Err(unreadable(&e));
        }
        if let Some(k) = kind
            && k != e.kind
        {
            return Err(ApiError::invalid(format!(
                "input: `{name}` is a {}, not a {k}",
                e.kind
            )));
        }
        let v = match reference {
            Some(x) => version_of(s, &e, &x).await?,
            None => {
                let latest = store::catalog::aliases(&s.store.pool, e.id)
                    .await?
                    .into_iter()
                    .find(|(a, _)| a == "latest")
                    .map(|(_, v)| v)
                    .or(store::catalog::versions(&s.store.pool, e.id)
                        .await?
                        .last()
                        .map(|v| v.version))
                    .ok_or_else(|| {
                        unprocessable(
                            "version_not_found",
                            format!("input: `{name}` has no version yet"),
                        )
                    })?;
                version_of(s, &e, &latest.to_string()).await?
            }
        };
        let path = if v.in_place {
            PathBuf::from(&v.location)
        } else {
            let m = manifest_of(s, &e, v.version).await?;
            c.blobs
                .local_tree(&v.location, &m)
                .await
                .map_err(catalog_err)?
        };
        let var = input_var(&e.name);
        if out.iter().any(|i| i.var == var) {
            return Err(ApiError::invalid(format!(
                "inputs: `{}` given twice",
                e.name
            )));
        }
        out.push(Input {
            reference: format!("{}:{}@{}", e.kind, e.name, v.version),
            var,
            path: path.display().to_string(),
            manifest_hash: v.manifest_hash.clone(),
            residency: serde_json::from_str(&e.residency).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The sites every input allows (None: any site; Some(empty): none).
pub fn allowed_sites(inputs: &[Input]) -> Option<Vec<String>> {
    let mut allowed: Option<Vec<String>> = None;
    for i in inputs.iter().filter(|i| !i.residency.is_empty()) {
        allowed = Some(match allowed {
            None => i.residency.clone(),
            Some(a) => a.into_iter().filter(|s| i.residency.contains(s)).collect(),
        });
    }
    allowed
}
