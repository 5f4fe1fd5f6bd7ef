//! The audit log (read from the store).

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;

use super::{Answer, ApiResult, AppState, Caller, Route, page, page_limit, query_err};
use crate::error::ApiError;
use crate::store;

pub(super) const ROUTES: &[Route] = &[Route {
    method: "get",
    path: "/api/v1/audit",
    who: "admin, operator",
    summary: "Audit log (?limit, after)",
    operation_id: "list_audit",
    body: None,
    status: 200,
    answer: Answer::Json("AuditPage"),
    replay: false,
    query: Some(gigafab_api::query_params::<gigafab_api::ListPage>),
}];

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(audit))
}

use gigafab_api::ListPage as AuditQuery;

async fn audit(
    State(s): State<AppState>,
    Caller(p): Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(query_err)?;
    if !p.global() {
        return Err(ApiError::forbidden(
            "only an admin or operator reads the audit log",
        ));
    }
    let limit = page_limit(q.limit)?;
    let entries = store::audit::list(&s.store.pool, q.after, limit).await?;
    let last = entries.last().map(|e| e.id);
    Ok(page(entries, last, limit))
}
