//! Sources: where documents come from.
//!
//! Architecture invariant: sources never talk to Chroma and know nothing of
//! chunk IDs; they produce [`Document`]s and classify their own failures as
//! transient (retry) or permanent (fail now).

pub mod github;
pub mod s3;
pub mod web;

use bytes::Bytes;

/// Most path patterns (globs or regexes) in one list of a source. Each is
/// matched against every path a sync sees, so the count bounds the work per
/// path as well as the work of compiling them.
pub const MAX_PATTERNS: usize = 100;
/// Longest path pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 512;
/// Largest compiled form of one path regex (the `regex` crate's own size
/// limit; its default is 10 MiB): refuses patterns like `(\w{1,100}){1,100}`
/// quickly, at creation, instead of compiling megabytes of automaton.
pub const MAX_COMPILED_PATTERN_BYTES: usize = 256 * 1024;

/// Checks a list of path patterns named `what` against [`MAX_PATTERNS`] and
/// [`MAX_PATTERN_BYTES`]; the error says which limit and which pattern.
pub fn check_pattern_list(what: &str, patterns: &[String]) -> Result<(), String> {
    if patterns.len() > MAX_PATTERNS {
        return Err(format!(
            "{what} has {} patterns; at most {MAX_PATTERNS} are accepted",
            patterns.len()
        ));
    }
    if let Some(long) = patterns.iter().find(|p| p.len() > MAX_PATTERN_BYTES) {
        let head: String = long.chars().take(40).collect();
        return Err(format!(
            "{what}: pattern `{head}…` is {} bytes long; at most {MAX_PATTERN_BYTES} are accepted",
            long.len()
        ));
    }
    Ok(())
}

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
