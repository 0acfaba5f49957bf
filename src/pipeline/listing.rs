//! What a listing already says: a whole-source sync of a kind that makes
//! one job per document (S3) leaves out, before any job exists, every
//! document the collection already holds at the version the listing gives.
//!
//! A job would fetch the object, chunk it and compare each chunk with what
//! is stored, to find nothing to do; an unchanged nightly re-sync of a
//! bucket was a job, a GET and a Chroma read per object. Here it is one
//! paged read of the source's chunk metadata for the whole listing.
//!
//! A document counts as unchanged only when every one of its stored chunks
//! carries the listed version, its chunk indices run 0..n without a gap,
//! and its first chunk holds exactly the identity metadata a job would
//! write now ([`same_identity`]: source, key, version, embedding model and
//! prompt, sparse key, no `custom_id`, no invocation metadata). So a
//! document an interrupted job left half-written (a streamed object whose
//! later segments still carry the old version), one written by an API
//! invocation with its own `custom_id` or metadata, or one embedded by
//! another model still gets its job. Anything that goes wrong here only
//! costs the saving: the caller enqueues every document.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{JobEmbedding, JobError, Services};
use crate::model::SourceType;
use crate::sink::records::{DocumentIdentity, Filter, Stored, same_identity};

/// The documents a listing found, each with the version a job would store
/// for it (S3: the object's ETag, as a GET of it answers).
#[derive(Debug, Default)]
pub struct Listing {
    /// The collection the documents' jobs write.
    pub collection: String,
    /// Document key → version.
    pub versions: HashMap<String, String>,
    /// Every key the source holds now, when the listing saw all of them
    /// (S3: the whole prefix): stored documents missing from it are gone
    /// from the source ([`Comparison::gone`]). `None` (named keys only)
    /// says nothing of what is gone.
    pub complete: Option<HashSet<String>>,
    /// The source's own fields on every chunk (S3: `bucket`).
    pub source_fields: Vec<(String, Value)>,
}

/// The listed documents already stored as a job would store them, each
/// with the chunks it holds (a run reports them as unchanged).
#[derive(Debug, Default, PartialEq)]
pub struct Unchanged {
    pub documents: HashMap<String, u64>,
}

impl Unchanged {
    pub fn contains(&self, key: &str) -> bool {
        self.documents.contains_key(key)
    }

    pub fn chunks(&self) -> u64 {
        self.documents.values().sum()
    }
}

/// What [`compare`] found: the listed documents stored as a job would
/// store them, and the stored ones the source no longer has.
#[derive(Debug, Default, PartialEq)]
pub struct Comparison {
    pub unchanged: Unchanged,
    /// Stored documents a complete listing lacks (empty when the listing
    /// is not complete), sorted.
    pub gone: Vec<String>,
    /// How many documents of the source the collection holds.
    pub stored: usize,
}

/// Whose documents a listing names: the scope of [`compare`].
pub struct Scope<'a> {
    pub database: &'a str,
    pub source_id: &'a str,
    pub source_type: SourceType,
    pub embedding: &'a JobEmbedding,
}

/// The documents of `listing` the collection holds at their listed version
/// and identity, and (for a complete listing) the stored documents it
/// lacks. Reads only chunk metadata, a page at a time; memory holds a few
/// bytes per stored document.
pub async fn compare(
    services: &Services,
    scope: &Scope<'_>,
    listing: &Listing,
) -> Result<Comparison, JobError> {
    if listing.versions.is_empty() && listing.complete.is_none() {
        return Ok(Comparison::default());
    }
    let spec = scope.embedding.collection_spec().await?;
    let collection = services
        .chroma
        .ensure_collection(scope.database, &listing.collection, spec)
        .await?;
    let doing = format!(
        "comparing the listing of source {} with {}",
        scope.source_id, listing.collection
    );
    let mut seen: HashMap<&str, Seen> = HashMap::new();
    let mut stored: HashSet<String> = HashSet::new();
    services
        .chroma
        .scan(
            &collection,
            &Filter::source(scope.source_id),
            true,
            &doing,
            |page| {
                for (_, metadata) in &page {
                    let chunk = Stored(metadata);
                    let Some(document) = chunk.document_key() else {
                        continue;
                    };
                    if !stored.contains(document) {
                        stored.insert(document.to_string());
                    }
                    let Some((key, listed)) = listing.versions.get_key_value(document) else {
                        continue;
                    };
                    let entry = seen.entry(key.as_str()).or_default();
                    entry.chunks += 1;
                    let index = chunk.chunk_index();
                    entry.max_index = entry.max_index.max(index.unwrap_or(u64::MAX));
                    if chunk.version_key() != Some(listed.as_str()) || index.is_none() {
                        entry.stale = true;
                    }
                    if index == Some(0) {
                        entry.identity = is_same_identity(scope, listing, key, listed, metadata);
                    }
                }
                true
            },
        )
        .await?;
    let mut unchanged = Unchanged::default();
    for (key, seen) in seen {
        if !seen.stale && seen.identity && seen.max_index.checked_add(1) == Some(seen.chunks) {
            unchanged.documents.insert(key.to_string(), seen.chunks);
        }
    }
    let mut gone: Vec<String> = match &listing.complete {
        Some(listed) => stored
            .iter()
            .filter(|key| !listed.contains(key.as_str()))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    gone.sort();
    Ok(Comparison {
        unchanged,
        gone,
        stored: stored.len(),
    })
}

/// What the scan found of one listed document.
#[derive(Default)]
struct Seen {
    chunks: u64,
    max_index: u64,
    /// A chunk at another version, or without an index.
    stale: bool,
    /// Its first chunk holds what a job would write now.
    identity: bool,
}

fn is_same_identity(
    scope: &Scope<'_>,
    listing: &Listing,
    key: &str,
    version: &str,
    stored: &Map<String, Value>,
) -> bool {
    let identity = DocumentIdentity {
        source_id: scope.source_id,
        source_type: scope.source_type.as_str(),
        key,
        version,
        custom_id: None,
        source_fields: &listing.source_fields,
        user_metadata: None,
        embedding: scope.embedding.embedded_with(),
    };
    same_identity(&identity, stored)
}
