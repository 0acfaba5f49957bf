//! The kind's settings on the wire: the `filesystem` field of a source's
//! create payload and of the `Source` the API answers with. Defined here,
//! with the kind, so the wire model names no kind (`model::KindSettings`
//! carries it untyped; the registry parses it into this type).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::AutoSync;

/// Extension: a directory on the daemon's host (a volume shared with a
/// sidecar, a backfill from a laptop). It must sit inside one of the
/// daemon's `[filesystem] allowed_roots`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilesystemSourceConfig {
    /// Absolute path of the directory.
    pub root: String,
    /// Collection written when an invocation names no `target_collection_name`.
    pub collection_name: String,
    /// Only paths (relative to the root) matching one of these are synced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_globs: Option<Vec<String>>,
    /// Paths matching one of these are never synced. With neither list
    /// given, vendored and generated trees (`node_modules/`, lockfiles, …) are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_globs: Option<Vec<String>>,
    /// `direct`: watch the directory and sync changed and removed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_sync: Option<AutoSync>,
}

/// Extension: a job's `filesystem` metadata, `{"path": …}` (`null` path:
/// the whole root).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FilesystemJobMetadata {
    pub path: Option<String>,
}
