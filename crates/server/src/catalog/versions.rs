//! Versions reach the store: uploads (the manifest, each file checked as it
//! arrives, the commit) and an admin's registration in place.

use super::*;

/// `POST /catalog/{name}/uploads`: starts the upload of a version.
pub async fn start_upload(
    s: &Shared,
    who: &Principal,
    name: &str,
    req: t::StartUpload,
) -> Result<t::Upload, ApiError> {
    let c = site(s)?;
    let (e, r) = entry_for(s, who, name).await?;
    if !r.write {
        return Err(ApiError::forbidden(format!(
            "only `{}`'s organisation pushes versions of it",
            e.name
        )));
    }
    residency_allows(c, &e)?;
    let files: Vec<FileEntry> = req
        .files
        .into_iter()
        .map(|f| FileEntry {
            path: f.path,
            size: f.size,
            sha256: f.sha256,
        })
        .collect();
    let m = Manifest::new(files).map_err(|e| ApiError::invalid(format!("files: {e}")))?;
    if let Some(v) = store::catalog::version_with_hash(&s.store.pool, e.id, &m.hash).await? {
        return Err(ApiError::conflict(
            "duplicate_version",
            format!(
                "`{}` version {v} has this content already (manifest {})",
                e.name, m.hash
            ),
        ));
    }
    let now = s.clock.now();
    let id = hex::encode(Sha256::digest(format!("{}{}{}", m.hash, now.0, rand_hex())));
    let id = id[..32].to_string();
    let mut ups = c
        .uploads
        .lock()
        .map_err(|_| ApiError::store("uploads lock"))?;
    // expired uploads go, with what they received
    ups.retain(|id, u| {
        let keep = now.0 - u.created.0 < UPLOAD_TTL_MS;
        if !keep {
            let _ = std::fs::remove_dir_all(c.staging.join(id));
        }
        keep
    });
    let org = who.org_id.unwrap_or(0);
    let (held, bytes) = ups
        .values()
        .filter(|u| u.org == org)
        .fold((0usize, 0u64), |(n, b), u| {
            (n + 1, b.saturating_add(u.manifest.bytes))
        });
    if held >= MAX_UPLOADS_PER_ORG {
        return Err(ApiError::rate_limited(
            60,
            format!(
                "your organisation has {held} uploads in progress (at most {MAX_UPLOADS_PER_ORG}); commit or let one expire first"
            ),
        ));
    }
    if bytes.saturating_add(m.bytes) > MAX_UPLOAD_BYTES_PER_ORG {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "upload_quota",
            format!(
                "your organisation's uploads in progress declare {bytes} bytes; with this one's {} that passes its {MAX_UPLOAD_BYTES_PER_ORG} bytes",
                m.bytes
            ),
        ));
    }
    if ups.len() >= MAX_UPLOADS {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_uploads",
            format!("{MAX_UPLOADS} uploads are in progress; try later"),
        ));
    }
    let view = t::Upload {
        id: id.clone(),
        entry: e.name.clone(),
        manifest_hash: m.hash.clone(),
        files: m.files.len() as u64,
        bytes: m.bytes,
        received: 0,
    };
    let n = m.files.len();
    ups.insert(
        id,
        UploadState {
            entry: e.id,
            entry_name: e.name.clone(),
            user: who.user_id,
            org,
            by_path: m
                .files
                .iter()
                .enumerate()
                .map(|(i, f)| (f.path.clone(), i))
                .collect(),
            manifest: m,
            received: vec![false; n],
            busy: vec![false; n],
            created: now,
        },
    );
    Ok(view)
}

fn rand_hex() -> String {
    gigafab_catalog::store::new_key()[2..].to_string()
}

fn upload_not_found(id: &str) -> ApiError {
    ApiError::not_found(
        "upload_not_found",
        format!(
            "upload `{}` not found (expired, committed, or another's)",
            id.chars().take(40).collect::<String>()
        ),
    )
}

/// `PUT /catalog/uploads/{id}/files/{path}`: one file's bytes, hashed as
/// they arrive; refused (and dropped) unless they match the manifest.
pub async fn put_file(
    s: &Shared,
    who: &Principal,
    id: &str,
    path: &str,
    body: axum::body::Body,
) -> Result<t::Upload, ApiError> {
    let c = site(s)?;
    let (i, want, dir) = {
        let mut ups = c
            .uploads
            .lock()
            .map_err(|_| ApiError::store("uploads lock"))?;
        let u = ups
            .get_mut(id)
            .filter(|u| u.user == who.user_id)
            .ok_or_else(|| upload_not_found(id))?;
        let i = *u.by_path.get(path).ok_or_else(|| {
            ApiError::not_found(
                "file_not_in_manifest",
                format!(
                    "`{}` is not a file of this upload's manifest",
                    path.chars().take(256).collect::<String>()
                ),
            )
        })?;
        if u.busy[i] {
            return Err(ApiError::conflict(
                "conflict",
                format!("`{path}` is being received"),
            ));
        }
        u.busy[i] = true;
        (i, u.manifest.files[i].clone(), c.staging.join(id))
    };
    let r = receive(&dir, &want, body).await;
    let mut ups = c
        .uploads
        .lock()
        .map_err(|_| ApiError::store("uploads lock"))?;
    let u = ups.get_mut(id).ok_or_else(|| upload_not_found(id))?;
    u.busy[i] = false;
    r?;
    u.received[i] = true;
    Ok(t::Upload {
        id: id.to_string(),
        entry: u.entry_name.clone(),
        manifest_hash: u.manifest.hash.clone(),
        files: u.manifest.files.len() as u64,
        bytes: u.manifest.bytes,
        received: u.received.iter().filter(|x| **x).count() as u64,
    })
}

async fn receive(
    dir: &std::path::Path,
    want: &FileEntry,
    body: axum::body::Body,
) -> Result<(), ApiError> {
    let to = dir.join(&want.path);
    let part = dir.join(format!(".part-{}", rand_hex()));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| ApiError::store(format!("staging: {e}")))?;
    // a body comes in small chunks: written through a 1 MiB buffer, not
    // one blocking write each
    let mut f = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(&part)
            .await
            .map_err(|e| ApiError::store(format!("staging: {e}")))?,
    );
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut stream = body.into_data_stream();
    let r: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::invalid(format!("body: {e}")))?;
            n += chunk.len() as u64;
            if n > want.size {
                return Err(unprocessable(
                    "hash_mismatch",
                    format!("`{}`: more than its {} bytes", want.path, want.size),
                ));
            }
            h.update(&chunk);
            f.write_all(&chunk)
                .await
                .map_err(|e| ApiError::store(format!("staging: {e}")))?;
        }
        let got = hex::encode(h.finalize_reset());
        if n != want.size || got != want.sha256 {
            return Err(unprocessable(
                "hash_mismatch",
                format!(
                    "`{}`: {n} bytes with sha256 {got}; the manifest says {} bytes, {}",
                    want.path, want.size, want.sha256
                ),
            ));
        }
        f.flush()
            .await
            .map_err(|e| ApiError::store(format!("staging: {e}")))?;
        if let Some(p) = to.parent() {
            tokio::fs::create_dir_all(p)
                .await
                .map_err(|e| ApiError::store(format!("staging: {e}")))?;
        }
        tokio::fs::rename(&part, &to)
            .await
            .map_err(|e| ApiError::store(format!("staging: {e}")))?;
        Ok(())
    }
    .await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(&part).await;
    }
    r
}

/// Records version `m` of `e` at `location` with its aliases, in one
/// transaction with its audit line.
#[allow(clippy::too_many_arguments)]
pub(super) async fn record_version(
    s: &Shared,
    who: &Principal,
    e: &EntryRow,
    m: &Manifest,
    location: String,
    in_place: bool,
    lineage: t::Lineage,
    aliases: &[String],
) -> Result<t::CatalogVersion, ApiError> {
    let pool = &s.store.pool;
    if let Some(v) = store::catalog::version_with_hash(pool, e.id, &m.hash).await? {
        return Err(ApiError::conflict(
            "duplicate_version",
            format!(
                "`{}` version {v} has this content already (manifest {})",
                e.name, m.hash
            ),
        ));
    }
    let now = s.clock.now();
    let v = VersionRow {
        entry_id: e.id,
        version: store::catalog::max_version(pool, e.id).await? + 1,
        manifest_hash: m.hash.clone(),
        files: m.files.len() as i64,
        bytes: m.bytes as i64,
        location,
        in_place,
        lineage: serde_json::to_string(&lineage).unwrap_or_default(),
        user: who.login.clone(),
        created_ms: now,
    };
    let mut ops = vec![store::catalog::insert_version(
        &v,
        serde_json::to_string(&m.files).unwrap_or_default(),
        lineage.job.map(|j| j.0),
        who.user_id,
    )];
    for a in aliases {
        ops.extend(store::catalog::set_alias(e.id, a, v.version));
    }
    ops.push(s.audit_op(
        who,
        now,
        "push_catalog_version",
        &format!("catalog {}@{}", e.name, v.version),
        format!(
            "manifest {}, {} files, {} bytes{}",
            m.hash,
            m.files.len(),
            m.bytes,
            if in_place { ", in place" } else { "" }
        ),
    ));
    s.store.write(ops).await?;
    Ok(version_view(e, &v, None))
}

/// `POST /catalog/uploads/{id}/commit`: every file received and checked,
/// the version is copied into the store and recorded.
pub async fn commit_upload(
    s: &Shared,
    who: &Principal,
    id: &str,
    req: t::CommitUpload,
) -> Result<t::CatalogVersion, ApiError> {
    let c = site(s)?;
    for a in &req.aliases {
        valid_alias(a)?;
    }
    // the upload is taken out of reach as the commit starts: no file can
    // be sent to it, nor a second commit made, meanwhile (a failed commit
    // leaves nothing: the client pushes again)
    let (entry, m) = {
        let mut ups = c
            .uploads
            .lock()
            .map_err(|_| ApiError::store("uploads lock"))?;
        let u = ups
            .get(id)
            .filter(|u| u.user == who.user_id)
            .ok_or_else(|| upload_not_found(id))?;
        if let Some(i) = u.received.iter().position(|r| !r) {
            return Err(ApiError::conflict(
                "upload_incomplete",
                format!(
                    "{} of {} files received; `{}` is missing",
                    u.received.iter().filter(|r| **r).count(),
                    u.received.len(),
                    u.manifest.files[i].path
                ),
            ));
        }
        if u.busy.iter().any(|b| *b) {
            return Err(ApiError::conflict("conflict", "a file is being received"));
        }
        let taken = (u.entry, u.manifest.clone());
        ups.remove(id);
        taken
    };
    let dir = c.staging.join(id);
    let r = commit_taken(s, who, id, &dir, entry, &m, req).await;
    if r.is_err() {
        gigafab_catalog::store::remove_tree(&dir);
    }
    r
}

async fn commit_taken(
    s: &Shared,
    who: &Principal,
    id: &str,
    dir: &std::path::Path,
    entry: i64,
    m: &Manifest,
    req: t::CommitUpload,
) -> Result<t::CatalogVersion, ApiError> {
    let c = site(s)?;
    let m = m.clone();
    let lineage = lineage_refs(s, who, &req.base, &req.datasets, None).await?;
    let _w = c.writes.lock().await;
    let e = store::catalog::entries(&s.store.pool)
        .await?
        .into_iter()
        .find(|x| x.id == entry)
        .ok_or_else(|| upload_not_found(id))?;
    let key = gigafab_catalog::store::new_key();
    // the files were hashed by this server as they arrived: a directory
    // store takes them as they are (renamed), an object store gets a copy
    c.blobs
        .adopt_tree(dir, &m, &key)
        .await
        .map_err(catalog_err)?;
    let r = record_version(s, who, &e, &m, key.clone(), false, lineage, &req.aliases).await;
    if r.is_err() {
        let _ = c.blobs.remove(&key).await;
    } else {
        gigafab_catalog::store::remove_tree(dir);
    }
    r
}

/// `POST /catalog/{name}/versions` (admin): a directory of the site's file
/// system, hashed by the server where it lies.
pub async fn register_in_place(
    s: &Shared,
    who: &Principal,
    name: &str,
    req: t::RegisterInPlace,
) -> Result<t::CatalogVersion, ApiError> {
    let c = site(s)?;
    if who.role != Role::Admin {
        return Err(ApiError::forbidden(
            "only an admin registers a directory in place (others push)",
        ));
    }
    for a in &req.aliases {
        valid_alias(a)?;
    }
    let (e, _) = entry_for(s, who, name).await?;
    residency_allows(c, &e)?;
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() || req.path.contains('\0') {
        return Err(ApiError::invalid("path: must be an absolute path"));
    }
    let threads = c.threads;
    let p = path.clone();
    let m = tokio::task::spawn_blocking(move || gigafab_catalog::hash_tree(&p, threads))
        .await
        .map_err(|e| ApiError::store(e.to_string()))?
        .map_err(catalog_err)?;
    let lineage = lineage_refs(s, who, &req.base, &req.datasets, None).await?;
    let _w = c.writes.lock().await;
    record_version(
        s,
        who,
        &e,
        &m,
        req.path.clone(),
        true,
        lineage,
        &req.aliases,
    )
    .await
}
