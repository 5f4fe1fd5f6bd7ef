//! The server itself and the answers that carry a secret once.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{JobId, TokenId, User, UserId};

/// Whether the server serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Ok,
    /// The controller stopped (the server is exiting): a 503.
    ControllerStopped,
}

/// The scheduler's loop, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LoopHealth {
    pub passes: u64,
    pub commits: u64,
    pub queued: Option<u64>,
    pub running: Option<u64>,
    pub last_pass_us: Option<u64>,
    pub last_commit_us: Option<u64>,
}

/// `GET /api/v1/health` (no token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    pub version: String,
    /// `sqlite` or `postgres` (none once the controller stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<LoopHealth>,
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Operator,
    Owner,
    Member,
}

/// `GET /api/v1/whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    pub id: UserId,
    pub user: String,
    pub role: Role,
    pub org: Option<String>,
}

/// A user just made, with its first token's secret (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewUser {
    pub id: UserId,
    pub name: String,
    pub org: Option<String>,
    #[schema(value_type = Role)]
    pub role: String,
    pub email: Option<String>,
    pub oidc_subject: Option<String>,
    /// The secret of its first token: shown once, never stored.
    pub token: String,
}

impl NewUser {
    pub fn new(u: User, token: String) -> NewUser {
        NewUser {
            id: u.id,
            name: u.name,
            org: u.org,
            role: u.role,
            email: u.email,
            oidc_subject: u.oidc_subject,
            token,
        }
    }
}

/// A token just made, with its secret (shown once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NewToken {
    pub id: TokenId,
    pub user: UserId,
    /// The secret: shown once, never stored.
    pub token: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// `DELETE /api/v1/tokens/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevokedToken {
    pub id: TokenId,
    /// Always true.
    pub revoked: bool,
}

/// `POST /api/v1/users/{id}/disable`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DisabledUser {
    pub id: UserId,
    /// Always true.
    pub disabled: bool,
    pub tokens_revoked: u64,
    /// Its queued jobs, cancelled (its running ones run to their end).
    pub queued_jobs_cancelled: Vec<JobId>,
}
