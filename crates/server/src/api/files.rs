//! Files, as an account sees them (the portal's file browser): a job's
//! working directory and the caller's organisation's project space. List
//! a directory, download a file, upload one. Only the job's own user
//! reaches a job's files (anyone else: `job_not_found`), only members of
//! an organisation its space; every operation runs with the account's
//! rights (the job's; the caller's in a space), beneath the directory,
//! following no link ([`gigafab_exec::files`]).

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Caller, Route, parse_id};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::Shared;
use gigafab_exec::files::{self, FilesRoot};

/// Largest file downloaded through the server, bytes.
pub const MAX_DOWNLOAD: u64 = 64 << 20;
/// Largest upload, bytes.
pub const MAX_UPLOAD: usize = 64 << 20;

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    operation_id: &'static str,
    status: u16,
    answer: Answer,
) -> Route {
    Route {
        method,
        path,
        who: "the job's own user",
        summary,
        operation_id,
        body: None,
        status,
        answer,
        replay: false,
        query: Some(gigafab_api::query_params::<gigafab_api::FilePath>),
    }
}

const fn space_route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    operation_id: &'static str,
    status: u16,
    answer: Answer,
) -> Route {
    Route {
        who: "a member of the organisation",
        ..route(method, path, summary, operation_id, status, answer)
    }
}

pub(super) const ROUTES: &[Route] = &[
    route(
        "get",
        "/api/v1/jobs/{id}/files",
        "A directory of the job's working directory, as its account sees it",
        "list_job_files",
        200,
        Answer::Json("JobFiles"),
    ),
    route(
        "get",
        "/api/v1/jobs/{id}/files/content",
        "A file of the job's working directory (at most 64 MiB), as its account reads it",
        "get_job_file",
        200,
        Answer::Text("application/octet-stream"),
    ),
    route(
        "put",
        "/api/v1/jobs/{id}/files/content",
        "Writes a file into the job's working directory as its account (the body, at most 64 MiB, within the job's disk limit)",
        "put_job_file",
        200,
        Answer::Json("FileEntry"),
    ),
    space_route(
        "get",
        "/api/v1/space/files",
        "A directory of the caller's organisation's project space, as the caller's account sees it",
        "list_space_files",
        200,
        Answer::Json("SpaceFiles"),
    ),
    space_route(
        "get",
        "/api/v1/space/files/content",
        "A file of the project space (at most 64 MiB), as the caller's account reads it",
        "get_space_file",
        200,
        Answer::Text("application/octet-stream"),
    ),
    space_route(
        "put",
        "/api/v1/space/files/content",
        "Writes a file into the project space as the caller's account (the body, at most 64 MiB, within the space's limit; made group-readable and writable)",
        "put_space_file",
        200,
        Answer::Json("FileEntry"),
    ),
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs/{id}/files", get(list))
        .route(
            "/api/v1/jobs/{id}/files/content",
            get(download)
                .put(upload)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD)),
        )
        .route("/api/v1/space/files", get(space_list))
        .route(
            "/api/v1/space/files/content",
            get(space_download)
                .put(space_upload)
                .layer(axum::extract::DefaultBodyLimit::max(MAX_UPLOAD)),
        )
}

/// Where a request's files are, and as whom they are reached.
struct Place {
    root: FilesRoot,
    who: Option<gigafab_exec::posix::Account>,
    /// Whose they are, in messages (`job 3`, `acme's project space`).
    what: String,
    /// Most bytes the place may take (None: not counted here).
    limit: Option<u64>,
}

/// The caller's organisation's project space.
async fn space_of(s: &Shared, p: &Principal) -> Result<(Place, i64), ApiError> {
    let Some(org) = p.org_id else {
        return Err(ApiError::not_found(
            "no_project_space",
            "project spaces are organisations': you belong to none",
        ));
    };
    let dir = crate::spaces::ensure(s, org).await?;
    let account = s.tenancy.account_of(p.user_id, org);
    let who = match account {
        Some(a) => Some(
            gigafab_exec::posix::lookup(&a)
                .map_err(|e| ApiError::unavailable(format!("your account: {e}")))?,
        ),
        None => None,
    };
    Ok((
        Place {
            root: FilesRoot {
                dir,
                writable: true,
                counted: false,
            },
            who,
            what: format!("{}'s project space", s.tenancy.org_name(org)),
            limit: s.spaces.as_ref().and_then(|x| x.max_bytes),
        },
        org,
    ))
}

/// The job's files' root and the account they are reached as.
async fn root_of(
    s: &Shared,
    p: &Principal,
    id: i64,
) -> Result<(FilesRoot, Option<gigafab_exec::posix::Account>, String), ApiError> {
    let job = crate::store::jobs::get(&s.store.pool, id)
        .await?
        .filter(|j| j.user_id == p.user_id)
        .ok_or_else(|| ApiError::not_found("job_not_found", format!("job {id} not found")))?;
    let spec: crate::model::StoredSpec = serde_json::from_str(&job.spec).unwrap_or_default();
    let account = s.tenancy.account_of(job.user_id, job.org_id);
    let root = s
        .executor
        .files_root(
            id,
            job.handle.as_deref(),
            spec.workdir.as_deref(),
            account.is_some(),
        )
        .ok_or_else(|| {
            ApiError::conflict(
                "files_unavailable",
                format!("job {id}'s files are on its engine's machines: reach them there"),
            )
        })?;
    let who = match account {
        Some(a) => Some(
            gigafab_exec::posix::lookup(&a)
                .map_err(|e| ApiError::unavailable(format!("the job's account: {e}")))?,
        ),
        None => None,
    };
    Ok((root, who, job.state))
}

/// An operation's failure, worded for the caller.
fn failed(path: &str, e: std::io::Error) -> ApiError {
    use std::io::ErrorKind as K;
    let code = e.raw_os_error();
    match e.kind() {
        K::NotFound => ApiError::not_found("file_not_found", format!("{path}: not found")),
        K::PermissionDenied => {
            ApiError::forbidden(format!("{path}: the account may not (permission denied)"))
        }
        K::InvalidInput => ApiError::invalid(format!("path: {path}: {e}")),
        _ if code == Some(libc::ELOOP) || code == Some(libc::EXDEV) => ApiError::invalid(format!(
            "path: {path}: a link, or outside the directory (links are not followed)"
        )),
        _ if code == Some(libc::ENOTDIR) => {
            ApiError::invalid(format!("path: {path}: not a directory"))
        }
        _ if code == Some(libc::EISDIR) => ApiError::invalid(format!("path: {path}: a directory")),
        _ if matches!(
            code,
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
        ) =>
        {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("{path}: no room: {e}"),
            )
        }
        _ if code == Some(libc::EROFS) => {
            ApiError::conflict("read_only", format!("{path}: a read-only file system"))
        }
        _ if matches!(
            code,
            Some(libc::ENXIO) | Some(libc::ETXTBSY) | Some(libc::EAGAIN)
        ) =>
        {
            ApiError::invalid(format!("path: {path}: not a regular file: {e}"))
        }
        _ => ApiError::unavailable(format!("{path}: {e}")),
    }
}

fn entry(e: files::Entry) -> gigafab_api::FileEntry {
    gigafab_api::FileEntry {
        name: e.name,
        dir: e.dir,
        size: e.size,
        modified: crate::time::Ms(e.modified_s.saturating_mul(1000)).rfc3339(),
    }
}

async fn list(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(q): Query<gigafab_api::FilePath>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    let (root, who, _state) = root_of(&s, &p, id).await?;
    let path = q.path.unwrap_or_default();
    let writable = root.writable;
    let entries = entries_of(
        &Place {
            root,
            who,
            what: format!("job {id}"),
            limit: None,
        },
        &path,
    )
    .await?;
    Ok(Json(gigafab_api::JobFiles {
        job: gigafab_api::JobId(id),
        path: shown(path),
        writable,
        entries,
    })
    .into_response())
}

async fn space_list(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<gigafab_api::FilePath>,
) -> ApiResult {
    let (place, org) = space_of(&s, &p).await?;
    let path = q.path.unwrap_or_default();
    let entries = entries_of(&place, &path).await?;
    Ok(Json(gigafab_api::SpaceFiles {
        org: s.tenancy.org_name(org),
        dir: place.root.dir.display().to_string(),
        path: shown(path),
        writable: place.root.writable,
        limit_bytes: place.limit,
        entries,
    })
    .into_response())
}

/// A path as an answer shows it.
fn shown(path: String) -> String {
    if path.is_empty() { ".".into() } else { path }
}

async fn entries_of(place: &Place, path: &str) -> Result<Vec<gigafab_api::FileEntry>, ApiError> {
    let (dir, rel, who) = (place.root.dir.clone(), path.to_string(), place.who.clone());
    let entries = tokio::task::spawn_blocking(move || files::list(who.as_ref(), &dir, &rel))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| failed(path, e))?;
    Ok(entries.into_iter().map(entry).collect())
}

async fn download(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(q): Query<gigafab_api::FilePath>,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    let (root, who, _state) = root_of(&s, &p, id).await?;
    let place = Place {
        root,
        who,
        what: format!("job {id}"),
        limit: None,
    };
    content(&place, q).await
}

async fn space_download(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<gigafab_api::FilePath>,
) -> ApiResult {
    let (place, _) = space_of(&s, &p).await?;
    content(&place, q).await
}

/// A file of `place`: its start (a preview, `max`), or the whole of it.
async fn content(place: &Place, q: gigafab_api::FilePath) -> ApiResult {
    let path = q.path.unwrap_or_default();
    let (dir, rel, who) = (place.root.dir.clone(), path.clone(), place.who.clone());
    // a preview reads the beginning of any file; a download, a whole file
    // of at most MAX_DOWNLOAD, or nothing
    let preview = q.max.map(|m| m.min(MAX_DOWNLOAD));
    let (data, size) = tokio::task::spawn_blocking(move || match preview {
        Some(m) => files::read_start(who.as_ref(), &dir, &rel, m),
        None => files::read(who.as_ref(), &dir, &rel, MAX_DOWNLOAD),
    })
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))?
    .map_err(|e| failed(&path, e))?;
    if preview.is_none() && size > MAX_DOWNLOAD {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{path}: {size} bytes, more than the {MAX_DOWNLOAD} a download through the server takes"
            ),
        ));
    }
    let name = path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .replace(['"', '\\', '\r', '\n'], "_");
    let mut r = Bytes::from(data).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r.headers_mut()
        .insert("x-file-size", HeaderValue::from(size));
    Ok(r)
}

async fn upload(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Query(q): Query<gigafab_api::FilePath>,
    body: Bytes,
) -> ApiResult {
    let id = parse_id(&id, "job_not_found")?;
    let (root, who, state) = root_of(&s, &p, id).await?;
    if !root.writable {
        return Err(ApiError::conflict(
            "read_only",
            format!(
                "job {id}'s files are read only here: jobs run under one account for all (--single-user)"
            ),
        ));
    }
    if crate::model::TERMINAL.contains(&state.as_str()) {
        return Err(ApiError::conflict(
            "job_ended",
            format!("job {id} has ended ({state}): uploads go to a job that has not"),
        ));
    }
    let counted = root.counted;
    let place = Place {
        root,
        who,
        what: format!("job {id}"),
        limit: None,
    };
    let exec = s.executor.clone();
    // the job's own directory: what its disk limit leaves
    let room = move || Ok(counted.then(|| exec.files_room(id)).flatten());
    put(&s, &p, &place, q, body, 0o644, room).await
}

async fn space_upload(
    State(s): State<AppState>,
    Caller(p): Caller,
    Query(q): Query<gigafab_api::FilePath>,
    body: Bytes,
) -> ApiResult {
    let (place, _) = space_of(&s, &p).await?;
    let (dir, limit) = (place.root.dir.clone(), place.limit);
    let what = place.what.clone();
    let room = move || match limit {
        None => Ok(None),
        Some(max) => match gigafab_exec::local::disk_size_within(&dir, max, SPACE_WALK_ENTRIES) {
            Some(used) => Ok(Some(max.saturating_sub(used))),
            None => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "{what} holds more than {SPACE_WALK_ENTRIES} files and directories: too many to measure against its limit; remove some (or ask for the file system's quotas instead)"
                ),
            )),
        },
    };
    // the organisation's group reads and writes what its members put there
    put(&s, &p, &place, q, body, 0o660, room).await
}

/// Most entries of a project space measured against its limit.
const SPACE_WALK_ENTRIES: usize = 1_000_000;

/// The turn of uploads into `dir`: one at a time there (each sees the room
/// the last one left), any number elsewhere.
fn turn_of(dir: &std::path::Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static TURNS: Mutex<Option<HashMap<std::path::PathBuf, Arc<tokio::sync::Mutex<()>>>>> =
        Mutex::new(None);
    let mut t = TURNS.lock().unwrap_or_else(|e| e.into_inner());
    let t = t.get_or_insert_with(HashMap::new);
    // the turns no upload holds or waits for go
    t.retain(|_, m| Arc::strong_count(m) > 1);
    t.entry(dir.to_path_buf()).or_default().clone()
}

/// Writes `body` at the query's path of `place`, if `room` (blocking: a
/// walk of the place; None: not counted; an error: not measured) leaves
/// space for it.
async fn put(
    s: &Shared,
    p: &Principal,
    place: &Place,
    q: gigafab_api::FilePath,
    body: Bytes,
    mode: u32,
    room: impl FnOnce() -> Result<Option<u64>, ApiError> + Send + 'static,
) -> ApiResult {
    let path = q.path.unwrap_or_default();
    let turn = turn_of(&place.root.dir);
    let _turn = turn.lock().await;
    let room = tokio::task::spawn_blocking(room)
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))??;
    if let Some(room) = room
        && body.len() as u64 > room
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "{path}: {} bytes, more than the {room} left under {}'s limit",
                body.len(),
                place.what
            ),
        ));
    }
    let (dir, rel, len, who) = (
        place.root.dir.clone(),
        path.clone(),
        body.len(),
        place.who.clone(),
    );
    tokio::task::spawn_blocking(move || files::write(who.as_ref(), &dir, &rel, &body, mode))
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| failed(&path, e))?;
    s.store
        .write(vec![s.audit_op(
            p,
            s.clock.now(),
            "upload_file",
            &place.what,
            format!("{path}, {len} bytes"),
        )])
        .await?;
    Ok(Json(gigafab_api::FileEntry {
        name: path.rsplit('/').next().unwrap_or_default().to_string(),
        dir: false,
        size: len as u64,
        modified: s.clock.now().rfc3339(),
    })
    .into_response())
}
