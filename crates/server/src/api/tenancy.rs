//! Organisations, projects, users and tokens: handlers on the store
//! ([`crate::tenancy`]), not commands to the controller.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::{Json, Router};

use super::{Answer, ApiResult, AppState, Body_, Caller, Route, created, list, parse_id};
use crate::model::{OrgReq, ProjectReq, TokenReq, UserReq};
use crate::tenancy;

pub(super) const ROUTES: &[Route] = &[
    Route {
        method: "post",
        path: "/api/v1/orgs",
        who: "admin",
        summary: "Create an organisation {name, category}",
        operation_id: "create_org",
        body: Some("CreateOrg"),
        status: 201,
        answer: Answer::Json("Org"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/orgs",
        who: "any token",
        summary: "List organisations",
        operation_id: "list_orgs",
        body: None,
        status: 200,
        answer: Answer::Json("OrgPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/projects",
        who: "admin, owner",
        summary: "Create a project {org, name, members?}",
        operation_id: "create_project",
        body: Some("CreateProject"),
        status: 201,
        answer: Answer::Json("Project"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/projects",
        who: "any token",
        summary: "List projects",
        operation_id: "list_projects",
        body: None,
        status: 200,
        answer: Answer::Json("ProjectPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/projects/{id}/members",
        who: "admin, owner",
        summary: "Add a member to a project {user}",
        operation_id: "add_project_member",
        body: Some("AddMember"),
        status: 200,
        answer: Answer::Json("Project"),
        replay: false,
        query: None,
    },
    Route {
        method: "delete",
        path: "/api/v1/projects/{id}/members/{user}",
        who: "admin, owner",
        summary: "Remove a member from a project",
        operation_id: "remove_project_member",
        body: None,
        status: 200,
        answer: Answer::Json("Project"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/users",
        who: "admin, owner",
        summary: "Create a user {name, org?, role?}; answers its token once",
        operation_id: "create_user",
        body: Some("CreateUser"),
        status: 201,
        answer: Answer::Json("NewUser"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/users",
        who: "admin, operator, owner",
        summary: "List users",
        operation_id: "list_users",
        body: None,
        status: 200,
        answer: Answer::Json("UserPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/tokens",
        who: "any token",
        summary: "Create a token {user?, expires_in_days?=90}; answers it once, with its id and expiry",
        operation_id: "create_token",
        body: Some("CreateToken"),
        status: 201,
        answer: Answer::Json("NewToken"),
        replay: false,
        query: None,
    },
    Route {
        method: "get",
        path: "/api/v1/tokens",
        who: "any token",
        summary: "List live tokens (yours; an owner: the organisation's; an admin: all), never their secrets",
        operation_id: "list_tokens",
        body: None,
        status: 200,
        answer: Answer::Json("TokenPage"),
        replay: false,
        query: None,
    },
    Route {
        method: "post",
        path: "/api/v1/users/{id}/disable",
        who: "admin, owner of the user's organisation",
        summary: "Disable a user: every token revoked, no new one",
        operation_id: "disable_user",
        body: None,
        status: 200,
        answer: Answer::Json("DisabledUser"),
        replay: false,
        query: None,
    },
    Route {
        method: "delete",
        path: "/api/v1/tokens/{id}",
        who: "admin, the token's user, an owner of the user's organisation",
        summary: "Revoke a token",
        operation_id: "revoke_token",
        body: None,
        status: 200,
        answer: Answer::Json("RevokedToken"),
        replay: false,
        query: None,
    },
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/orgs", post(create_org).get(list_orgs))
        .route("/api/v1/projects", post(create_project).get(list_projects))
        .route("/api/v1/projects/{id}/members", post(add_member))
        .route(
            "/api/v1/projects/{id}/members/{user}",
            delete(remove_member),
        )
        .route("/api/v1/users", post(create_user).get(list_users))
        .route("/api/v1/tokens", post(create_token).get(list_tokens))
        .route("/api/v1/users/{id}/disable", post(disable_user))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
}

async fn create_org(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<OrgReq>,
) -> ApiResult {
    Ok(created(tenancy::create_org(&s, &p, b).await?))
}

async fn create_project(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<ProjectReq>,
) -> ApiResult {
    Ok(created(tenancy::create_project(&s, &p, b).await?))
}

async fn add_member(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
    Body_(b): Body_<gigafab_api::AddMember>,
) -> ApiResult {
    let id = parse_id(&id, "project_not_found")?;
    Ok(Json(tenancy::set_member(&s, &p, id, b.user.0, true).await?).into_response())
}

async fn remove_member(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path((id, user)): Path<(String, String)>,
) -> ApiResult {
    let id = parse_id(&id, "project_not_found")?;
    let user = parse_id(&user, "user_not_found")?;
    Ok(Json(tenancy::set_member(&s, &p, id, user, false).await?).into_response())
}

async fn create_user(
    State(s): State<AppState>,
    Caller(p): Caller,
    Body_(b): Body_<UserReq>,
) -> ApiResult {
    Ok(created(tenancy::create_user(&s, &p, b).await?))
}

async fn create_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    // the body is optional here
    let req = if body.is_empty() {
        TokenReq::default()
    } else {
        super::json_body(&headers, &body)?
    };
    Ok(created(tenancy::create_token(&s, &p, req).await?))
}

async fn list_orgs(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(s.tenancy.list_orgs(&p)?))
}

async fn list_projects(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(s.tenancy.list_projects(&p)?))
}

async fn list_users(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(s.tenancy.list_users(&p)?))
}

async fn list_tokens(State(s): State<AppState>, Caller(p): Caller) -> ApiResult {
    Ok(list(s.tenancy.list_tokens(&p)?))
}

async fn disable_user(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "user_not_found")?;
    let tokens_revoked = tenancy::disable_user(&s, &p, id).await?;
    // its queued jobs never run: cancelled (and audited) at once
    let (_, done) = s.ask(p, crate::ctl::Action::CancelQueuedOf(id)).await?;
    Ok(Json(gigafab_api::DisabledUser {
        id: gigafab_api::UserId(id),
        disabled: true,
        tokens_revoked,
        queued_jobs_cancelled: done.cancelled()?,
    })
    .into_response())
}

async fn revoke_token(
    State(s): State<AppState>,
    Caller(p): Caller,
    Path(id): Path<String>,
) -> ApiResult {
    let id = parse_id(&id, "token_not_found")?;
    Ok(Json(tenancy::revoke_token(&s, &p, id).await?).into_response())
}
