//! Sources: where documents come from.
//!
//! Architecture invariant: sources never talk to Chroma and know nothing of
//! chunk IDs; they produce [`Document`]s and classify their own failures as
//! transient (retry) or permanent (fail now).

pub mod github;
pub mod s3;
pub mod web;

use bytes::Bytes;

/// One fetched document, before extraction.
#[derive(Debug, Clone)]
pub struct Document {
    /// Identity within the source: S3 object key, repo path or canonical URL.
    pub key: String,
    /// What version of the document this is (ETag, version id, commit sha).
    pub version: String,
    pub content_type: Option<String>,
    pub bytes: Bytes,
    /// Source-specific chunk metadata (e.g. `bucket`).
    pub metadata: Vec<(String, serde_json::Value)>,
}

/// An item of a source's document stream.
#[derive(Debug, Clone)]
pub enum Fetched {
    Document(Document),
    /// The document exists but is not indexed (too large, …); its old chunks
    /// are removed and the reason is recorded in the job stats.
    Skipped {
        key: String,
        reason: String,
    },
    /// The document keeps the chunks it has: unchanged since it was stored
    /// (`reason` is `None`), or not fetchable this time (`reason` says why).
    Kept {
        key: String,
        reason: Option<String>,
    },
    /// The document is gone at the source (404/410): its chunks are removed.
    Gone {
        key: String,
        reason: String,
    },
}

impl Fetched {
    pub fn key(&self) -> &str {
        match self {
            Fetched::Document(document) => &document.key,
            Fetched::Skipped { key, .. }
            | Fetched::Kept { key, .. }
            | Fetched::Gone { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Worth retrying: timeouts, throttling, 5xx, connection failures.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help: missing bucket, access denied, bad config.
    #[error("{0}")]
    Permanent(String),
    /// The document does not exist (any more): its chunks must go.
    #[error("{0}")]
    NotFound(String),
}

impl SourceError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SourceError::Transient(_))
    }
}
