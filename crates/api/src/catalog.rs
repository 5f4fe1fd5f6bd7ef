//! The data and model catalog's bodies and answers (`/api/v1/catalog`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::JobId;

/// A catalog entry's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Dataset,
    Model,
}

/// Who may read a catalog entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryAccess {
    Public,
    Org,
    Gated,
}

/// What `verify` found wrong with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Corrupt,
    Resized,
    Missing,
    Extra,
    Unreadable,
}

/// An entry's card: what it is, what it is for, what it is not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Card {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub intended_use: String,
    #[serde(default)]
    pub limitations: String,
}

/// Body of `POST /api/v1/catalog`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEntry {
    /// Unique on the site: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// `dataset` or `model`.
    pub kind: String,
    /// The owner organisation [default: the caller's; admins name one].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// `public`, `org` (its organisation only) or `gated` (organisations
    /// the owner grants, until the grant expires) [default `org`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// SPDX licence expression (`Apache-2.0`, `CC-BY-4.0`, `LicenseRef-x`).
    pub licence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    /// The sites where it may be stored and processed [default: any].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residency: Option<Vec<String>>,
}

/// A catalog entry, with its versions and aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogEntry {
    pub id: i64,
    pub name: String,
    #[schema(value_type = EntryKind)]
    pub kind: String,
    pub org: String,
    #[schema(value_type = EntryAccess)]
    pub access: String,
    pub licence: String,
    pub card: Card,
    /// Sites where it may be stored and processed (empty: any).
    pub residency: Vec<String>,
    /// Whether the caller may read its versions (and run jobs on them).
    pub readable: bool,
    /// Version numbers, oldest first (empty for one who may not read it).
    pub versions: Vec<i64>,
    /// Alias to version.
    pub aliases: BTreeMap<String, i64>,
    /// Organisations granted a gated entry (shown to its owners).
    #[serde(default)]
    pub grants: Vec<EntryGrant>,
    /// Pending access requests (shown to its owners).
    #[serde(default)]
    pub access_requests: Vec<EntryAccessRequest>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A grant of a gated entry to an organisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EntryGrant {
    pub org: String,
    /// RFC 3339; none: until revoked.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
}

/// A request for access to a gated entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EntryAccessRequest {
    pub org: String,
    pub user: String,
    pub reason: String,
    #[schema(format = DateTime)]
    pub at: String,
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
}

/// Where a version comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lineage {
    /// The model it was trained from (`name@version`).
    #[serde(default)]
    pub base: Option<String>,
    /// The datasets it was trained on (`name@version`).
    #[serde(default)]
    pub datasets: Vec<String>,
    /// The job that produced it.
    #[serde(default)]
    pub job: Option<JobId>,
}

/// A version: immutable, pinned by its manifest's hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CatalogVersion {
    pub entry: String,
    pub version: i64,
    /// sha256 of the manifest's canonical text.
    pub manifest_hash: String,
    pub files: u64,
    pub bytes: u64,
    /// Registered where it lies (an administrator's path), not copied into
    /// the site's store.
    pub in_place: bool,
    pub lineage: Lineage,
    pub user: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Its files (`?files=true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Vec<ManifestFile>>,
}

/// Body of `POST /api/v1/catalog/{name}/uploads`: the manifest of the
/// version to upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartUpload {
    pub files: Vec<ManifestFile>,
}

/// An upload in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Upload {
    pub id: String,
    pub entry: String,
    pub manifest_hash: String,
    pub files: u64,
    pub bytes: u64,
    /// Files received and checked so far.
    pub received: u64,
}

/// Body of `POST /api/v1/catalog/uploads/{id}/commit` and part of
/// `POST /api/v1/catalog/{name}/versions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitUpload {
    /// Aliases to point at the new version (`latest`, `prod`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// `name@version` of the base model.
    #[serde(default)]
    pub base: Option<String>,
    /// `name@version` of each training dataset.
    #[serde(default)]
    pub datasets: Vec<String>,
}

/// Body of `POST /api/v1/catalog/{name}/versions` (admin): a directory on
/// the site's file system registered where it lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterInPlace {
    /// Absolute path of the directory.
    pub path: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub base: Option<String>,
    #[serde(default)]
    pub datasets: Vec<String>,
}

/// Body of `PUT /api/v1/catalog/{name}/aliases/{alias}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAlias {
    pub version: i64,
}

/// Body of `POST /api/v1/catalog/{name}/grants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantEntry {
    pub org: String,
    /// Days it lasts [default: until revoked].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<f64>,
}

/// Body of `POST /api/v1/catalog/{name}/access-requests`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestEntryAccess {
    /// Why (at most 2,000 bytes).
    pub reason: String,
}

/// One problem `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyProblem {
    pub path: String,
    /// `corrupt`, `resized`, `missing`, `extra` or `unreadable`.
    #[schema(value_type = ProblemKind)]
    pub kind: String,
    pub detail: String,
}

/// What `POST /api/v1/catalog/{name}/verify/{version}` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    pub entry: String,
    pub version: i64,
    pub intact: bool,
    pub problems: Vec<VerifyProblem>,
}

/// A version's lineage as a graph (`GET .../lineage/{version}`): its
/// ancestors, nearest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LineageGraph {
    /// `name@version` of each node, the asked one first.
    pub nodes: Vec<String>,
    /// (child, parent, relation): `base`, `dataset` or `job`.
    pub edges: Vec<(String, String, String)>,
}
