//! What a listing already says: a whole-source sync of a kind that makes
//! one job per document (S3) leaves out, before any job exists, every
//! document the collection already holds at the version the listing gives.
//!
//! A job would fetch the object, chunk it and compare each chunk with what
//! is stored, to find nothing to do; an unchanged nightly re-sync of a
//! bucket was a job, a GET and a Chroma read per object. Here it is one
//! paged read of the source's first chunks (what is gone, and what may be
//! unchanged), then one read of chunk metadata per few hundred of the
//! documents that may be.
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

/// Listed keys asked of Chroma at once (`document_key` `$in` the batch).
///
/// A read by keys costs in proportion to the chunks it returns, not to
/// the source: measured on the real server holding 300,000 records (Intel
/// Xeon, `bench/chroma_pages.py --fill`), 10 keys cost 100 ms for 100
/// chunks, 100 keys 248 ms for 1,000, 300 keys 278 ms for 3,000 and 1,000
/// keys 1,106 ms for 10,000. Past a few hundred keys a batch gains nothing
/// and its request grows (a key may be 1 KB).
const KEYS_PER_READ: usize = 300;

/// The documents of `listing` the collection holds at their listed version
/// and identity, and (for a complete listing) the stored documents it
/// lacks.
///
/// Reads only chunk metadata, and never every chunk of the source page by
/// page: a `where` that meets the whole source costs, on every page, time
/// in proportion to the source (a quadratic read: 305 pages and 424 s at
/// 305,000 chunks, `bench/results/memory.md`). For a complete listing the
/// source's first chunks, one per document, say what is gone and which
/// listed documents may be unchanged; only those are read whole, by key,
/// [`KEYS_PER_READ`] at a time (a listing of named keys reads them all so).
/// Memory holds a page of records, and a few bytes per listed and per
/// stored document.
///
/// A document none of whose chunks is a first chunk (a job that wrote part
/// of a new document, then stopped) is not found gone here; the job's retry
/// finds it gone at the source and removes what it wrote.
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
    // A complete listing: the source's first chunks say what is gone, and
    // which listed documents may be unchanged (a first chunk at the listed
    // version, with the identity a job would write). Only those are read
    // whole: a first sync reads no chunk by key, a re-sync of changed
    // objects few.
    let (candidates, gone, stored) = match &listing.complete {
        Some(listed) => {
            let mut candidates: Vec<&str> = Vec::new();
            let mut gone = Vec::new();
            let mut stored = 0;
            services
                .chroma
                .scan(
                    &collection,
                    &Filter::first_chunks(scope.source_id),
                    true,
                    &doing,
                    |page| {
                        for (_, metadata) in &page {
                            let Some(key) = Stored(metadata).document_key() else {
                                continue;
                            };
                            stored += 1;
                            if !listed.contains(key) {
                                gone.push(key.to_string());
                            } else if let Some((key, version)) = listing.versions.get_key_value(key)
                                && Stored(metadata).version_key() == Some(version.as_str())
                                && is_same_identity(scope, listing, key, version, metadata)
                            {
                                candidates.push(key.as_str());
                            }
                        }
                        true
                    },
                )
                .await?;
            gone.sort();
            gone.dedup();
            candidates.sort_unstable();
            candidates.dedup();
            (candidates, gone, Some(stored))
        }
        None => (
            listing.versions.keys().map(String::as_str).collect(),
            Vec::new(),
            None,
        ),
    };
    let mut seen: HashMap<&str, Seen> = HashMap::new();
    for batch in candidates.chunks(KEYS_PER_READ) {
        services
            .chroma
            .scan(
                &collection,
                &Filter::documents(scope.source_id, batch),
                true,
                &doing,
                |page| {
                    for (_, metadata) in &page {
                        see(scope, listing, &mut seen, metadata);
                    }
                    true
                },
            )
            .await?;
    }
    let held = seen.len();
    let mut unchanged = Unchanged::default();
    for (key, seen) in seen {
        if !seen.stale && seen.identity && seen.max_index.checked_add(1) == Some(seen.chunks) {
            unchanged.documents.insert(key.to_string(), seen.chunks);
        }
    }
    Ok(Comparison {
        unchanged,
        gone,
        stored: stored.unwrap_or(held),
    })
}

/// Counts one stored chunk of a listed document towards what is seen of it.
fn see<'l>(
    scope: &Scope<'_>,
    listing: &'l Listing,
    seen: &mut HashMap<&'l str, Seen>,
    metadata: &Map<String, Value>,
) {
    let chunk = Stored(metadata);
    let Some(document) = chunk.document_key() else {
        return;
    };
    let Some((key, listed)) = listing.versions.get_key_value(document) else {
        return;
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
