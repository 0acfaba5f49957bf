//! What sources hand the pipeline: [`Document`]s (or why there is none),
//! and errors classified as transient (retry) or permanent (fail now).
//!
//! Architecture invariant: sources never talk to Chroma and know nothing of
//! chunk IDs; they produce these and the pipeline does the rest.

use std::future::Future;

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

/// A document too large to hold whole, handed out in segments that end at
/// line breaks: memory holds one segment at a time (S3's large text objects).
pub trait SegmentedDocument: Send {
    fn key(&self) -> &str;
    fn version(&self) -> &str;
    fn content_type(&self) -> Option<String>;
    /// Whole size in bytes, for progress messages.
    fn size(&self) -> u64;
    /// Source-specific chunk metadata (e.g. `bucket`).
    fn source_fields(&self) -> Vec<(String, serde_json::Value)>;
    /// The next segment, or `None` once the whole body was handed out.
    fn next_segment(&mut self) -> impl Future<Output = Result<Option<Bytes>, SourceError>> + Send;
}
