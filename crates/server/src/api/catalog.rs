//! The data and model catalog: handlers on the store ([`crate::catalog`]).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Body_, Caller, Route, created, list};
use crate::catalog;

macro_rules! route {
    ($m:literal, $p:literal, $who:literal, $sum:literal, $op:literal, $body:expr, $status:literal, $ans:expr) => {
        Route {
            method: $m,
            path: $p,
            who: $who,
            summary: $sum,
            operation_id: $op,
            body: $body,
            status: $status,
            answer: $ans,
            replay: false,
            query: None,
        }
    };
}

pub(super) const ROUTES: &[Route] = &[
    route!(
        "post",
        "/api/v1/catalog",
        "owner, member (their organisation's), admin",
        "Create a catalog entry {name, kind, licence, access?, card?, residency?, org?}",
        "create_catalog_entry",
        Some("CreateEntry"),
        201,
        Answer::Json("CatalogEntry")
    ),
    route!(
        "get",
        "/api/v1/catalog",
        "any token",
        "List the catalog entries you may see (gated ones are listed to all)",
        "list_catalog",
        None,
        200,
        Answer::Json("CatalogPage")
    ),
    route!(
        "get",
        "/api/v1/catalog/{name}",
        "any token that sees it",
        "One entry with its versions and aliases (its grants and requests for its owners)",
        "get_catalog_entry",
        None,
        200,
        Answer::Json("CatalogEntry")
    ),
    route!(
        "get",
        "/api/v1/catalog/{name}/versions/{version}",
        "its readers",
        "One version (a number or an alias); ?files=true: its manifest",
        "get_catalog_version",
        None,
        200,
        Answer::Json("CatalogVersion")
    ),
    route!(
        "post",
        "/api/v1/catalog/{name}/versions",
        "admin",
        "Register a directory of the site's file system in place {path, aliases?, base?, datasets?}",
        "register_catalog_version",
        Some("RegisterInPlace"),
        201,
        Answer::Json("CatalogVersion")
    ),
    route!(
        "post",
        "/api/v1/catalog/{name}/uploads",
        "its organisation",
        "Start uploading a version: its manifest {files: [{path, size, sha256}]}",
        "start_catalog_upload",
        Some("StartUpload"),
        201,
        Answer::Json("Upload")
    ),
    route!(
        "put",
        "/api/v1/catalog/uploads/{id}/files/{path}",
        "the upload's user",
        "One file's bytes (application/octet-stream), checked against the manifest",
        "put_catalog_file",
        None,
        200,
        Answer::Json("Upload")
    ),
    route!(
        "post",
        "/api/v1/catalog/uploads/{id}/commit",
        "the upload's user",
        "Store the uploaded version and record it {aliases?, base?, datasets?}",
        "commit_catalog_upload",
        Some("CommitUpload"),
        201,
        Answer::Json("CatalogVersion")
    ),
    route!(
        "put",
        "/api/v1/catalog/{name}/aliases/{alias}",
        "its organisation",
        "Point an alias at a version {version}",
        "set_catalog_alias",
        Some("SetAlias"),
        200,
        Answer::Json("CatalogEntry")
    ),
    route!(
        "post",
        "/api/v1/catalog/{name}/grants",
        "its owners, admin",
        "Grant a gated entry to an organisation {org, days?}",
        "grant_catalog_entry",
        Some("GrantEntry"),
        201,
        Answer::Json("CatalogEntry")
    ),
    route!(
        "delete",
        "/api/v1/catalog/{name}/grants/{org}",
        "its owners, admin",
        "Revoke an organisation's grant",
        "revoke_catalog_entry",
        None,
        200,
        Answer::Json("CatalogEntry")
    ),
    route!(
        "post",
        "/api/v1/catalog/{name}/access-requests",
        "owner, member of another organisation",
        "Ask for a gated entry {reason}",
        "request_catalog_access",
        Some("RequestEntryAccess"),
        201,
        Answer::Json("CatalogEntry")
    ),
    route!(
        "post",
        "/api/v1/catalog/{name}/verify/{version}",
        "its organisation, admin, operator",
        "Hash a version again where it lies: each corrupt, missing or extra file",
        "verify_catalog_version",
        None,
        200,
        Answer::Json("VerifyReport")
    ),
    route!(
        "get",
        "/api/v1/catalog/{name}/lineage/{version}",
        "its readers",
        "A version's ancestors: base models, datasets, the job that made it",
        "catalog_lineage",
        None,
        200,
        Answer::Json("LineageGraph")
    ),
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/catalog", post(create_entry).get(list_entries))
        .route("/api/v1/catalog/{name}", get(get_entry))
        .route("/api/v1/catalog/{name}/versions", post(register))
        .route(
            "/api/v1/catalog/{name}/versions/{version}",
            get(get_version),
        )
        .route("/api/v1/catalog/{name}/uploads", post(start_upload))
        .route("/api/v1/catalog/uploads/{id}/files/{*path}", put(put_file))
        .route("/api/v1/catalog/uploads/{id}/commit", post(commit))
        .route("/api/v1/catalog/{name}/aliases/{alias}", put(set_alias))
        .route("/api/v1/catalog/{name}/grants", post(grant))
        .route(
            "/api/v1/catalog/{name}/grants/{org}",
            axum::routing::delete(revoke),
        )
        .route(
            "/api/v1/catalog/{name}/access-requests",
            post(request_access),
        )
        .route("/api/v1/catalog/{name}/verify/{version}", post(verify))
        .route("/api/v1/catalog/{name}/lineage/{version}", get(lineage))
}

async fn create_entry(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<gigafab_api::CreateEntry>,
) -> ApiResult {
    Ok(created(catalog::create_entry(&s, &p, b).await?))
}

async fn list_entries(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(catalog::list_entries(&s, &p).await?))
}

async fn get_entry(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(catalog::get_entry(&s, &p, &name).await?).into_response())
}

#[derive(serde::Deserialize)]
struct FilesQuery {
    #[serde(default)]
    files: bool,
}

async fn get_version(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<FilesQuery>,
) -> ApiResult {
    Ok(Json(catalog::get_version(&s, &p, &name, &version, q.files).await?).into_response())
}

async fn register(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Body_(b): Body_<gigafab_api::RegisterInPlace>,
) -> ApiResult {
    Ok(created(catalog::register_in_place(&s, &p, &name, b).await?))
}

async fn start_upload(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Body_(b): Body_<gigafab_api::StartUpload>,
) -> ApiResult {
    Ok(created(catalog::start_upload(&s, &p, &name, b).await?))
}

async fn put_file(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((id, path)): Path<(String, String)>,
    body: Body,
) -> ApiResult {
    // runs to its end even if the client goes away: the file's state is
    // reset and its partial copy removed
    let v = tokio::spawn(async move { catalog::put_file(&s, &p, &id, &path, body).await })
        .await
        .map_err(|e| crate::error::ApiError::store(format!("the upload stopped: {e}")))??;
    Ok(Json(v).into_response())
}

async fn commit(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::CommitUpload>,
) -> ApiResult {
    let s2 = s.clone();
    // runs to its end even if the client goes away (the copy and the record)
    let v = tokio::spawn(async move { catalog::commit_upload(&s2, &p, &id, b).await })
        .await
        .map_err(|e| crate::error::ApiError::store(format!("the commit stopped: {e}")))??;
    Ok(created(v))
}

async fn set_alias(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((name, alias)): Path<(String, String)>,
    Body_(b): Body_<gigafab_api::SetAlias>,
) -> ApiResult {
    Ok(Json(catalog::set_alias(&s, &p, &name, &alias, b).await?).into_response())
}

async fn grant(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Body_(b): Body_<gigafab_api::GrantEntry>,
) -> ApiResult {
    Ok(created(catalog::grant(&s, &p, &name, b).await?))
}

async fn revoke(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((name, org)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(catalog::revoke(&s, &p, &name, &org).await?).into_response())
}

async fn request_access(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(name): Path<String>,
    Body_(b): Body_<gigafab_api::RequestEntryAccess>,
) -> ApiResult {
    Ok(created(catalog::request_access(&s, &p, &name, b).await?))
}

async fn verify(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(catalog::verify(&s, &p, &name, &version).await?).into_response())
}

async fn lineage(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(catalog::lineage(&s, &p, &name, &version).await?).into_response())
}
