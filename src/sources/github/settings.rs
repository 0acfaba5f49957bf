//! The kind's settings on the wire: the `github` field of a source's
//! create payload and of the `Source` the API answers with. Defined here,
//! with the kind, so the wire model names no kind (`model::KindSettings`
//! carries it untyped; the registry parses it into this type).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A GitHub repository source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GithubSourceConfig {
    /// `owner/name`.
    pub repository: String,
    /// A GitHub App of the daemon's config (`[github.apps.<id>]`) to read
    /// the repository as; none means the daemon's GitHub token if it has
    /// one, else anonymous access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// Only paths matching one of these are synced (`src/**/*.rs`; a glob
    /// without `/` matches file names anywhere, e.g. `*.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_globs: Option<Vec<String>>,
    /// Extension: paths matching one of these are never synced. With neither
    /// list given, vendored and generated trees (`node_modules/`, lockfiles, …) are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_globs: Option<Vec<String>>,
}

/// A job's `github` metadata (seed 001): the ref it syncs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct GithubJobMetadata {
    pub git_ref_identifier: crate::model::GitRefIdentifier,
}
