//! The pipeline of one job: source → extract → chunk → embed → sink.
//!
//! Order of writes for a document, chosen so that a crash or retry at any
//! point converges on the right collection: read what the collection holds
//! for the document, upsert the new chunks batch by batch (deterministic IDs,
//! so a repeated upsert is a no-op), and only then delete the chunks the
//! document no longer has. A retry after a crash repeats the same steps and
//! repairs whatever the crashed attempt left.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

mod document;
mod embedding;
pub mod figures;
pub mod listing;
pub mod reuse;
pub mod segments;
pub mod sync;

pub use document::{Document, Fetched, SegmentedDocument, SourceError};
pub use embedding::{JobEmbedding, SparseEmbedding, SparseFunction, embed_error};
pub use sync::{DEFAULT_MAX_REMOVAL_FRACTION, Processed, RemovalPolicy};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::chunk::Chunked;
use crate::embed::Models;
use crate::extract::isolate::{ConvertOptions, Converter};
use crate::extract::{Skipped, converted_format, document_format, extract};
use crate::model::{ChunkingConfig, JobStats, MAX_SKIPPED_REASONS, Progress, SourceType};
use crate::queue::{ClaimedJob, Queue};
use crate::sink::chroma::{ChromaClient, ChromaError, CollectionHandle, sparse_vector_value};
use crate::sink::records::{
    DocumentIdentity, Filter, Record, Stored, build_records, build_segment_records,
    same_embedding_input, same_identity,
};
use crate::vision::VisionClient;

/// Documents a job's driver may have in the pipeline at once: while one
/// waits for the embedder (or an endpoint's answer), the next are read,
/// converted, chunked and compared with what Chroma holds, so the embedder
/// is not idle between documents. Each holds at most its source's largest
/// document in memory.
pub const DOCUMENTS_IN_FLIGHT: usize = 8;

/// Why a job did not complete.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
    #[error("cancelled")]
    Cancelled,
    /// The job ran past `queue.job_timeout_seconds`.
    #[error("{0}")]
    TimedOut(String),
}

impl From<SourceError> for JobError {
    fn from(error: SourceError) -> Self {
        match error {
            SourceError::Transient(message) => JobError::Transient(message),
            SourceError::Permanent(message) | SourceError::NotFound(message) => {
                JobError::Permanent(message)
            }
        }
    }
}

impl From<ChromaError> for JobError {
    fn from(error: ChromaError) -> Self {
        if error.is_transient() {
            JobError::Transient(error.to_string())
        } else {
            JobError::Permanent(error.to_string())
        }
    }
}

/// What every job needs, whatever its source, shared by all workers of a
/// process. Source clients are not here: each source type holds its own
/// (`sources`), and the pipeline never needs to know which ran.
pub struct Services {
    pub queue: Arc<dyn Queue>,
    pub chroma: ChromaClient,
    /// Every embedding model sources may name, each loaded once.
    pub models: Models,
    /// Converts PDFs, office files and the like in child processes.
    pub converter: Converter,
    /// Recent vectors by embedding identity, shared by every job
    /// ([`reuse`]); `None`: reuse is off (`[embedding] reuse_vectors`).
    pub vectors: Option<Arc<reuse::VectorCache>>,
    /// Describes pictures (`[extract.vision]`); `None`: pictures are
    /// never sent anywhere.
    pub vision: Option<Arc<VisionClient>>,
}

/// Live state of a running job, read by its heartbeat.
#[derive(Default)]
pub struct JobState {
    pub stats: Mutex<JobStats>,
    pub progress: Mutex<Option<Progress>>,
}

impl JobState {
    pub fn set_progress(&self, step: u32, total_steps: u32, message: String) {
        *self.progress.lock().expect("progress lock") = Some(Progress {
            step,
            total_steps,
            message,
        });
    }
    pub fn update(&self, change: impl FnOnce(&mut JobStats)) {
        change(&mut self.stats.lock().expect("stats lock"));
    }
}

/// One claimed job as its source's driver runs it.
pub struct JobRun<'a> {
    pub services: &'a Services,
    pub claimed: &'a ClaimedJob,
    pub state: &'a JobState,
    pub cancel: &'a CancellationToken,
    /// The source's `chunking`, if it sets one.
    pub chunking: Option<&'a ChunkingConfig>,
    /// The job's source, as chunk metadata names it.
    pub source_id: String,
    /// The source's model, prompts and sparse function.
    pub embedding: JobEmbedding,
    /// The source's own `max_removal_fraction`, if it sets one.
    pub max_removal_fraction: Option<f64>,
    /// The source's own OCR languages (`ocr.languages`), if it sets them.
    pub ocr_languages: Option<Vec<String>>,
}

impl<'a> JobRun<'a> {
    pub fn new(
        services: &'a Services,
        claimed: &'a ClaimedJob,
        state: &'a JobState,
        cancel: &'a CancellationToken,
        chunking: Option<&'a ChunkingConfig>,
        embedding: JobEmbedding,
    ) -> Self {
        let source_id = claimed
            .job
            .source_id
            .map(|id| id.to_string())
            .unwrap_or_default();
        JobRun {
            services,
            claimed,
            state,
            cancel,
            chunking,
            source_id,
            embedding,
            max_removal_fraction: None,
            ocr_languages: None,
        }
    }

    /// The removal rule of this job: the source's `max_removal_fraction`,
    /// else its kind's (`default`, from the setting `setting`).
    pub fn removal_policy(&self, default: f64, setting: &str) -> RemovalPolicy {
        RemovalPolicy::of_source(self.max_removal_fraction, default, setting)
    }

    /// The job's target collection, created with the source's embedding
    /// configuration when missing; one made for another model or dimension
    /// fails the job before anything is written.
    pub async fn open_collection(&self) -> Result<CollectionHandle, JobError> {
        self.open_collection_named(&self.claimed.job.metadata.collection_name)
            .await
    }

    /// Another collection of the job's database, opened the same way: the
    /// one an S3 `.meta.json` file names, which the job learns only when it
    /// reads the file.
    pub async fn open_collection_named(&self, name: &str) -> Result<CollectionHandle, JobError> {
        let spec = self.embedding.collection_spec().await?;
        Ok(self
            .services
            .chroma
            .ensure_collection(&self.claimed.job.metadata.database_name, name, spec)
            .await?)
    }

    /// The per-document pipeline of this job, writing to `collection`.
    pub fn documents<'b>(
        &'b self,
        collection: &'b CollectionHandle,
        source_type: SourceType,
    ) -> DocumentContext<'b> {
        DocumentContext {
            services: self.services,
            collection,
            state: self.state,
            cancel: self.cancel,
            source_id: &self.source_id,
            source_type,
            custom_id: None,
            user_metadata: None,
            chunking: self.chunking,
            embedding: &self.embedding,
            ocr_languages: self.ocr_languages.as_deref(),
        }
    }

    /// Tells Chroma the job's writes are done.
    pub async fn finish(&self, collection: &CollectionHandle) -> Result<(), JobError> {
        self.services
            .chroma
            .mark_finished_ingest(collection)
            .await?;
        Ok(())
    }
}

pub fn elapsed_ms(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

/// What stays the same for every document of a job.
pub struct DocumentContext<'a> {
    pub services: &'a Services,
    pub collection: &'a CollectionHandle,
    pub state: &'a JobState,
    pub cancel: &'a CancellationToken,
    pub source_id: &'a str,
    pub source_type: SourceType,
    /// S3 invocations: the `custom_id` chunk IDs are built from.
    pub custom_id: Option<&'a str>,
    /// S3 invocations: metadata merged into every chunk's.
    pub user_metadata: Option<&'a serde_json::Map<String, Value>>,
    pub chunking: Option<&'a ChunkingConfig>,
    pub embedding: &'a JobEmbedding,
    /// OCR languages instead of `[extract.ocr] languages` (the source's).
    pub ocr_languages: Option<&'a [String]>,
}

impl DocumentContext<'_> {
    pub async fn process(&self, fetched: Fetched) -> Result<(), JobError> {
        let document = match fetched {
            Fetched::Document(document) => document,
            Fetched::Skipped { key, reason } => return self.skip(&key, reason).await,
            Fetched::Kept { key, reason } => {
                self.state.update(|stats| match reason {
                    None => stats.unchanged += 1,
                    Some(reason) => {
                        tracing::warn!(document = key, %reason, "keeping the stored version");
                        stats.skipped += 1;
                        if stats.skipped_reasons.len() < MAX_SKIPPED_REASONS {
                            stats
                                .skipped_reasons
                                .insert(key, format!("kept stored version: {reason}"));
                        }
                    }
                });
                return Ok(());
            }
            Fetched::Gone { key, reason } => {
                tracing::info!(document = key, %reason, "document gone; removing its chunks");
                self.write(&key, Vec::new()).await?;
                return Ok(());
            }
        };
        let Document {
            key,
            version,
            content_type,
            bytes,
            metadata: source_fields,
        } = document;
        let identity = DocumentIdentity {
            source_id: self.source_id,
            source_type: self.source_type.as_str(),
            key: &key,
            version: &version,
            custom_id: self.custom_id,
            source_fields: &source_fields,
            user_metadata: self.user_metadata,
            embedding: self.embedding.embedded_with(),
        };
        // Documents cost a conversion: one already stored at this version,
        // as this invocation would store it, is left alone.
        if document_format(&key, content_type.as_deref()).is_some()
            && self.stored_as(&identity).await?
        {
            self.state.update(|stats| stats.unchanged += 1);
            return Ok(());
        }
        self.state.update(|stats| {
            stats.documents += 1;
            stats.bytes += bytes.len() as u64;
        });
        self.state.set_progress(2, 3, format!("chunking {key}"));
        let (chunked, _) = match self.extract_and_chunk(&key, content_type, bytes).await? {
            Ok(extracted) => extracted,
            Err(skipped) => return self.skip(&key, skipped.0).await,
        };
        let records = build_records(&identity, &chunked);
        self.write(&key, records).await.map(|_| ())
    }

    /// The distinct documents of this job's source the collection holds:
    /// what a full sync compares against to find documents that
    /// disappeared. Memory holds one page of records and the keys.
    pub async fn stored_documents(&self) -> Result<BTreeSet<String>, JobError> {
        let doing = format!(
            "listing documents of source {} in {}",
            self.source_id, self.collection.name
        );
        let mut keys = BTreeSet::new();
        self.services
            .chroma
            .scan(
                self.collection,
                &Filter::source(self.source_id),
                true,
                &doing,
                |page| {
                    keys.extend(
                        page.iter()
                            .filter_map(|(_, metadata)| Stored(metadata).document_key())
                            .map(str::to_string),
                    );
                    true
                },
            )
            .await?;
        Ok(keys)
    }

    /// The IDs under which the collection holds document `key` of this
    /// job's source (chunks an invocation or an S3 `.meta.json` file wrote
    /// with a `custom_id`), sorted; empty when it holds it under none.
    pub async fn custom_ids_of(&self, key: &str) -> Result<Vec<String>, JobError> {
        let doing = format!("reading the IDs of {key} in {}", self.collection.name);
        let chunks = self
            .services
            .chroma
            .scan_all(
                self.collection,
                &Filter::document(self.source_id, key, None),
                &doing,
            )
            .await?;
        let mut ids: Vec<String> = chunks
            .iter()
            .filter_map(|(_, metadata)| Stored(metadata).custom_id().map(str::to_string))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Hands `visit` the metadata of the first chunk of each document of
    /// this job's source: one record per document, which carries what the
    /// source stored about it (version, validators). Memory holds one page.
    pub async fn visit_first_chunks(
        &self,
        mut visit: impl FnMut(Stored<'_>),
    ) -> Result<(), JobError> {
        let doing = format!("listing stored documents in {}", self.collection.name);
        self.services
            .chroma
            .scan(
                self.collection,
                &Filter::first_chunks(self.source_id),
                true,
                &doing,
                |page| {
                    for (_, metadata) in &page {
                        visit(Stored(metadata));
                    }
                    true
                },
            )
            .await?;
        Ok(())
    }

    /// Whether the collection holds the document at `identity`'s version
    /// with the same identity metadata ([`same_identity`]).
    async fn stored_as(&self, identity: &DocumentIdentity<'_>) -> Result<bool, JobError> {
        let doing = format!("looking up {} in {}", identity.key, self.collection.name);
        let found = self
            .services
            .chroma
            .find(
                self.collection,
                &Filter::document_at(
                    self.source_id,
                    identity.key,
                    identity.custom_id,
                    identity.version,
                ),
                1,
                &doing,
            )
            .await?;
        Ok(found
            .first()
            .is_some_and(|(_, stored)| same_identity(identity, stored)))
    }

    /// A skipped document keeps no chunks: whatever an older version left is removed.
    pub async fn skip(&self, key: &str, reason: String) -> Result<(), JobError> {
        tracing::info!(document = key, %reason, "skipping document");
        self.state.update(|stats| {
            stats.skipped += 1;
            if stats.skipped_reasons.len() < MAX_SKIPPED_REASONS {
                stats.skipped_reasons.insert(key.to_string(), reason);
            }
        });
        self.write(key, Vec::new()).await.map(|_| ())
    }

    /// Makes the collection hold exactly `records` for document `key` (and
    /// for the invocation's `custom_id`, whose IDs belong to one document).
    /// Returns how many stale chunks were deleted.
    pub async fn write(&self, key: &str, records: Vec<Record>) -> Result<usize, JobError> {
        let chroma = &self.services.chroma;
        let doing = format!("listing chunks of {key} in {}", self.collection.name);
        let existing: HashMap<String, serde_json::Map<String, Value>> = chroma
            .scan_all(
                self.collection,
                &Filter::document(self.source_id, key, self.custom_id),
                &doing,
            )
            .await?
            .into_iter()
            .collect();
        let wanted: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
        self.store(key, records, &existing).await?;
        let stale: Vec<String> = existing
            .into_keys()
            .filter(|id| !wanted.contains(id))
            .collect();
        let batch_size = chroma.batch_size().await?;
        for batch in stale.chunks(batch_size) {
            chroma.delete(self.collection, batch).await?;
            self.state
                .update(|stats| stats.chunks_deleted += batch.len() as u64);
        }
        Ok(stale.len())
    }

    /// Deletes every chunk this job's source wrote under `custom_id` (the
    /// context's, which must be set): the document an S3 `.meta.json` file
    /// named, whichever object it was read from. Returns how many went.
    pub async fn remove_custom_document(&self) -> Result<usize, JobError> {
        let Some(custom_id) = self.custom_id else {
            return Ok(0);
        };
        let doing = format!(
            "deleting the chunks of custom_id {custom_id} in {}",
            self.collection.name
        );
        let removed = self
            .services
            .chroma
            .delete_matching(
                self.collection,
                &Filter::custom_document(self.source_id, custom_id),
                &doing,
            )
            .await?;
        self.state
            .update(|stats| stats.chunks_deleted += removed as u64);
        Ok(removed)
    }

    /// A document too large to hold whole, read, chunked and written one
    /// segment at a time: memory holds one segment and its chunks, never the
    /// document. Chunk indices and line numbers run on across segments, and
    /// each segment is compared with what the collection holds under the
    /// same IDs, so unchanged chunks are not re-embedded. Chunks past the new
    /// end (the document shrank) are deleted last.
    pub async fn process_streamed(
        &self,
        mut object: impl SegmentedDocument,
    ) -> Result<(), JobError> {
        self.state.update(|stats| stats.documents += 1);
        let source_fields = object.source_fields();
        let (key, version, size) = (
            object.key().to_string(),
            object.version().to_string(),
            object.size(),
        );
        let content_type = object.content_type();
        let mut next_index = 0usize;
        let mut lines_before = 0u32;
        let mut segment_number = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            let started = Instant::now();
            let segment = object.next_segment().await?;
            self.state
                .update(|stats| stats.fetch_ms += elapsed_ms(started));
            let Some(segment) = segment else { break };
            segment_number += 1;
            self.state
                .update(|stats| stats.bytes += segment.len() as u64);
            self.state.set_progress(
                2,
                3,
                format!("segment {segment_number} of {} ({} bytes)", key, size),
            );
            let extracted = self
                .extract_and_chunk(&key, content_type.clone(), segment)
                .await?;
            let (chunked, lines) = match extracted {
                Ok(extracted) => extracted,
                // Binary past the first segment: the document is not text
                // after all, and keeps no chunks.
                Err(skipped) => {
                    let reason = format!("segment {segment_number}: {}", skipped.0);
                    return self.skip(&key, reason).await;
                }
            };
            let identity = DocumentIdentity {
                source_id: self.source_id,
                source_type: self.source_type.as_str(),
                key: &key,
                version: &version,
                custom_id: self.custom_id,
                source_fields: &source_fields,
                user_metadata: self.user_metadata,
                embedding: self.embedding.embedded_with(),
            };
            let records = build_segment_records(&identity, &chunked, next_index, lines_before);
            next_index += records.len();
            lines_before += lines;
            let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
            let existing: HashMap<String, serde_json::Map<String, Value>> = self
                .services
                .chroma
                .records_by_id(self.collection, &ids)
                .await?
                .into_iter()
                .collect();
            self.store(&key, records, &existing).await?;
        }
        let doing = format!(
            "deleting chunks of {key} past {next_index} in {}",
            self.collection.name
        );
        let removed = self
            .services
            .chroma
            .delete_matching(
                self.collection,
                &Filter::document_from(self.source_id, &key, self.custom_id, next_index),
                &doing,
            )
            .await?;
        self.state
            .update(|stats| stats.chunks_deleted += removed as u64);
        Ok(())
    }

    /// Writes `records` given what the collection `existing`ly holds under
    /// their IDs: unchanged chunks are left alone, chunks whose text is the
    /// same get their metadata updated, the rest are embedded and upserted.
    async fn store(
        &self,
        key: &str,
        mut records: Vec<Record>,
        existing: &HashMap<String, serde_json::Map<String, Value>>,
    ) -> Result<(), JobError> {
        let chroma = &self.services.chroma;
        // Chroma merges metadata on upsert: keys an older version had and this
        // one lacks must be sent as null, or they would linger.
        for record in &mut records {
            if let Some(old) = existing.get(&record.id) {
                for name in old.keys() {
                    if !record.metadata.contains_key(name) {
                        record.metadata.insert(name.clone(), Value::Null);
                    }
                }
            }
        }
        let batch_size = chroma.batch_size().await?;
        let wanted = records.len();
        // Content-hash skipping: a chunk stored from the same input
        // (`content_sha256`: prompt + text) by the same model keeps its
        // embedding. If its metadata is the same too there is nothing to
        // write; otherwise only the metadata changes.
        let sparse_key = self.embedding.sparse.as_ref().map(|s| s.key.as_str());
        let (mut records, mut restamp) = split_unchanged(records, existing, sparse_key);
        // Sparse vectors only for what is written (a SPLADE pass is not
        // cheap): new or changed chunks, and re-stamped ones.
        if let Some(sparse) = &self.embedding.sparse {
            for written in [&mut records, &mut restamp] {
                let texts = written.iter().map(|r| r.document.clone()).collect();
                for (record, vector) in written.iter_mut().zip(sparse.vectors(texts).await?) {
                    record
                        .metadata
                        .insert(sparse.key.clone(), sparse_vector_value(&vector));
                }
            }
        }
        // The first chunk is written last, after every other chunk of the
        // document: a first chunk at a version means the document was
        // stored whole at that version, which is what a whole-source sync
        // compares a listing with ([`listing`]) to leave it without a job.
        if let Some(at) = records.iter().position(is_first_chunk) {
            let first = records.remove(at);
            records.push(first);
        }
        let first_restamp = restamp
            .iter()
            .position(is_first_chunk)
            .map(|at| restamp.remove(at));
        let unchanged_chunks =
            wanted - records.len() - restamp.len() - usize::from(first_restamp.is_some());
        if unchanged_chunks > 0 || !restamp.is_empty() || first_restamp.is_some() {
            self.state.update(|stats| {
                stats.chunks_unchanged += unchanged_chunks as u64;
                stats.chunks_restamped +=
                    (restamp.len() + usize::from(first_restamp.is_some())) as u64;
            });
        }
        for batch in restamp.chunks(batch_size) {
            let ids: Vec<String> = batch.iter().map(|r| r.id.clone()).collect();
            let metadatas: Vec<_> = batch.iter().map(|r| r.metadata.clone()).collect();
            chroma
                .update_metadata(self.collection, &ids, &metadatas)
                .await?;
        }
        let total = records.len();
        // Embedding batch i+1 overlaps the upsert of batch i, so the embedder
        // (CPU) is not idle while Chroma (network) writes. At most one upsert
        // is in flight, and they complete in order.
        let mut in_flight: Option<futures::future::BoxFuture<'_, Result<(), JobError>>> = None;
        for (index, batch) in records.chunks(batch_size).enumerate() {
            if self.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            self.state.set_progress(
                3,
                3,
                format!(
                    "embedding and upserting {key}: {} of {total} chunks",
                    index * batch_size
                ),
            );
            let embeddings = match in_flight.take() {
                Some(upsert) => {
                    let (embedded, written) = tokio::join!(self.embed(batch), upsert);
                    written?;
                    embedded?
                }
                None => self.embed(batch).await?,
            };
            in_flight = Some(Box::pin(self.upsert(batch, embeddings)));
        }
        if let Some(upsert) = in_flight {
            upsert.await?;
        }
        if let Some(first) = first_restamp {
            chroma
                .update_metadata(
                    self.collection,
                    std::slice::from_ref(&first.id),
                    std::slice::from_ref(&first.metadata),
                )
                .await?;
        }
        Ok(())
    }

    /// Extracts and chunks `bytes` on a blocking thread (documents are
    /// converted in a child process first), timing it into
    /// `stats.extract_ms`: the chunks and how many lines the text has, or
    /// why it is not indexed.
    async fn extract_and_chunk(
        &self,
        key: &str,
        content_type: Option<String>,
        bytes: bytes::Bytes,
    ) -> Result<Result<(Chunked, u32), Skipped>, JobError> {
        let chunker = self.embedding.chunker.clone();
        let chunking = self.chunking.cloned();
        let started = Instant::now();
        let format = converted_format(key, content_type.as_deref(), &bytes);
        let extracted = if let Some(format) = format {
            // Markers of pictures carry a nonce the document cannot know.
            let nonce = self
                .services
                .vision
                .as_ref()
                .map(|_| uuid::Uuid::new_v4().simple().to_string());
            let converted = self
                .services
                .converter
                .convert_with(
                    format,
                    bytes,
                    &ConvertOptions {
                        ocr_languages: self.ocr_languages,
                        figure_nonce: nonce.as_deref(),
                    },
                )
                .await;
            let converted = match (converted, &self.services.vision, &nonce) {
                (Ok(converted), Some(vision), Some(nonce)) if !converted.figures.is_empty() => {
                    self.state
                        .set_progress(2, 3, format!("describing the pictures of {key}"));
                    // Descriptions can take a while (retries): a cancel
                    // does not wait for them.
                    tokio::select! {
                        described = figures::describe(vision, nonce, converted) => described,
                        () = self.cancel.cancelled() => return Err(JobError::Cancelled),
                    }
                }
                (converted, _, _) => converted,
            };
            match converted {
                Ok(converted) => {
                    if !converted.omitted.is_empty() {
                        let omitted = converted.omitted.join("; ");
                        tracing::info!(document = key, %omitted, "indexed without some parts");
                        let key = key.to_string();
                        self.state.update(|stats| {
                            if stats.omitted_parts.len() < MAX_SKIPPED_REASONS {
                                stats.omitted_parts.insert(key, omitted);
                            }
                        });
                    }
                    tokio::task::spawn_blocking(move || {
                        let chunked = chunker.chunk_converted(&converted, chunking.as_ref());
                        let lines = chunked.chunks.last().map_or(0, |c| c.end_line);
                        Ok((chunked, lines))
                    })
                    .await
                    .map_err(|e| JobError::Permanent(format!("chunking task failed: {e}")))?
                }
                Err(skipped) => Err(skipped),
            }
        } else {
            let key = key.to_string();
            tokio::task::spawn_blocking(move || {
                extract(&key, content_type.as_deref(), &bytes).map(|text| {
                    let lines = text.text.bytes().filter(|b| *b == b'\n').count() as u32;
                    (chunker.chunk(&text, chunking.as_ref()), lines)
                })
            })
            .await
            .map_err(|e| JobError::Permanent(format!("chunking task failed: {e}")))?
        };
        self.state
            .update(|stats| stats.extract_ms += elapsed_ms(started));
        Ok(extracted)
    }

    /// The vectors of one batch: reused where a chunk of the same input
    /// and model was embedded before ([`reuse`]), computed otherwise.
    async fn embed(&self, batch: &[Record]) -> Result<Vec<Vec<f32>>, JobError> {
        let Some(cache) = &self.services.vectors else {
            let texts: Vec<&Record> = batch.iter().collect();
            return self.compute(&texts).await;
        };
        // Issue 33: each identity (model + `content_sha256`) is embedded at
        // most once; see `reuse`.
        let model = self.embedding.embedded_with().model.to_string();
        let keys: Vec<Option<String>> = batch
            .iter()
            .map(|r| Stored(&r.metadata).content_sha256().map(str::to_string))
            .collect();
        let mut known: HashMap<String, Vec<f32>> = HashMap::new();
        for key in keys.iter().flatten() {
            if let Some(vector) = cache.get(&model, key) {
                known.insert(key.clone(), vector);
            }
        }
        let missing: Vec<String> = keys
            .iter()
            .flatten()
            .filter(|key| !known.contains_key(*key))
            .cloned()
            .collect::<BTreeSet<String>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let doing = format!("looking up stored vectors in {}", self.collection.name);
            let found = self
                .services
                .chroma
                .embeddings_matching(
                    self.collection,
                    &Filter::same_input(&model, &missing),
                    missing.len(),
                    &doing,
                )
                .await
                // The lookup only saves work: when Chroma cannot answer it
                // (seen: a collection whose vector segment is not on disk
                // yet answers 500 "Nothing found on disk"), the chunks are
                // embedded as if nothing were stored. A Chroma that is
                // really down fails the write that follows, with retries.
                .unwrap_or_else(|error| {
                    tracing::warn!(
                        collection = %self.collection.name,
                        %error,
                        "stored-vector lookup failed; embedding these chunks instead"
                    );
                    Vec::new()
                });
            for (metadata, vector) in found {
                if let Some(key) = Stored(&metadata).content_sha256() {
                    cache.put(&model, key, &vector);
                    known.insert(key.to_string(), vector);
                }
            }
        }
        // Claim what is still missing: another batch may be embedding it.
        let mut tickets: HashMap<String, reuse::Ticket> = HashMap::new();
        let mut waiting: Vec<(String, reuse::Pending)> = Vec::new();
        for key in &missing {
            if known.contains_key(key) {
                continue;
            }
            match cache.claim(&model, key) {
                reuse::Claim::Known(vector) => {
                    known.insert(key.clone(), vector);
                }
                reuse::Claim::Mine(ticket) => {
                    tickets.insert(key.clone(), ticket);
                }
                reuse::Claim::Theirs(pending) => waiting.push((key.clone(), pending)),
            }
        }
        // Embed the first chunk of each identity this batch owns, and every
        // chunk without one.
        let mut inputs: Vec<&Record> = Vec::new();
        let mut slot_of: HashMap<&str, usize> = HashMap::new();
        let mut unkeyed: Vec<Option<usize>> = vec![None; batch.len()];
        for (index, key) in keys.iter().enumerate() {
            match key {
                Some(key) if tickets.contains_key(key) => {
                    slot_of.entry(key.as_str()).or_insert_with(|| {
                        inputs.push(&batch[index]);
                        inputs.len() - 1
                    });
                }
                Some(_) => {}
                None => {
                    inputs.push(&batch[index]);
                    unkeyed[index] = Some(inputs.len() - 1);
                }
            }
        }
        let computed = self.compute(&inputs).await?;
        for (key, slot) in &slot_of {
            if let Some(ticket) = tickets.remove(*key) {
                ticket.fulfil(&computed[*slot]);
            }
            known.insert(key.to_string(), computed[*slot].clone());
        }
        // Then what other batches were embedding; if one failed, embed its
        // identities here.
        let mut fallback: Vec<&Record> = Vec::new();
        let mut fallback_keys: Vec<String> = Vec::new();
        for (key, pending) in waiting {
            match reuse::wait(pending).await {
                Some(vector) => {
                    known.insert(key, vector);
                }
                None => {
                    if let Some(index) = keys.iter().position(|k| k.as_deref() == Some(&key)) {
                        fallback.push(&batch[index]);
                        fallback_keys.push(key);
                    }
                }
            }
        }
        if !fallback.is_empty() {
            let vectors = self.compute(&fallback).await?;
            for (key, vector) in fallback_keys.into_iter().zip(vectors) {
                cache.put(&model, &key, &vector);
                known.insert(key, vector);
            }
        }
        let embedded = inputs.len() + fallback.len();
        let reused = batch.len().saturating_sub(embedded);
        if reused > 0 {
            self.state
                .update(|stats| stats.chunks_embedding_reused += reused as u64);
        }
        keys.iter()
            .zip(unkeyed)
            .map(|(key, slot)| match (slot, key) {
                (Some(slot), _) => Ok(computed[slot].clone()),
                (None, Some(key)) => known.get(key).cloned().ok_or_else(|| {
                    JobError::Permanent(format!("no vector for chunk input {key} (a bug)"))
                }),
                (None, None) => Err(JobError::Permanent(
                    "a chunk without an identity was not embedded (a bug)".into(),
                )),
            })
            .collect()
    }

    /// Embeds `batch` (with the document prompt before each chunk), timing
    /// it into `stats.embed_ms` (computing, or an endpoint's round trips)
    /// and `stats.embed_wait_ms` (waiting for the shared embedder while
    /// other jobs' batches ran).
    async fn compute(&self, batch: &[&Record]) -> Result<Vec<Vec<f32>>, JobError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let with = self.embedding.embedded_with();
        let texts: Vec<String> = batch.iter().map(|r| with.input(&r.document)).collect();
        let started = Instant::now();
        let (embedded, computing) = self
            .embedding
            .model
            .embed(texts)
            .await
            .map_err(embed_error)?;
        let elapsed = started.elapsed();
        crate::metrics::embed_batch(computing.as_secs_f64());
        let waiting = elapsed.saturating_sub(computing);
        self.state.update(|stats| {
            stats.embed_ms += computing.as_millis() as u64;
            stats.embed_wait_ms += waiting.as_millis() as u64;
        });
        Ok(embedded)
    }

    /// Upserts one embedded batch, timing it into `stats.write_ms`.
    async fn upsert(&self, batch: &[Record], embeddings: Vec<Vec<f32>>) -> Result<(), JobError> {
        let started = Instant::now();
        self.services
            .chroma
            .upsert(self.collection, batch, &embeddings)
            .await?;
        self.state.update(|stats| {
            stats.write_ms += elapsed_ms(started);
            stats.chunks_upserted += batch.len() as u64;
        });
        Ok(())
    }
}

/// Whether `record` is its document's first chunk (written last: see
/// `store`).
fn is_first_chunk(record: &Record) -> bool {
    Stored(&record.metadata).chunk_index() == Some(0)
}

/// Splits `records` into those to embed and upsert, and those whose stored
/// chunk was embedded from the same input by the same model but has other
/// metadata (to update in place). Records stored exactly as they are are
/// dropped: nothing to do. The sparse vector (under `sparse_key`) follows
/// from the text, so it is compared by presence only: Chroma hands it back
/// in its own float precision.
fn split_unchanged(
    records: Vec<Record>,
    existing: &HashMap<String, serde_json::Map<String, Value>>,
    sparse_key: Option<&str>,
) -> (Vec<Record>, Vec<Record>) {
    let mut changed = Vec::with_capacity(records.len());
    let mut restamp = Vec::new();
    for record in records {
        let Some(stored) = existing.get(&record.id) else {
            changed.push(record);
            continue;
        };
        if !same_embedding_input(stored, &record.metadata) {
            changed.push(record);
            continue;
        }
        let without_sparse = |metadata: &serde_json::Map<String, Value>| {
            let mut metadata = metadata.clone();
            if let Some(key) = sparse_key {
                metadata.remove(key);
            }
            metadata
        };
        let has_sparse = sparse_key.is_none_or(|key| stored.get(key).is_some_and(|v| !v.is_null()));
        if !has_sparse || !same_metadata(&without_sparse(stored), &without_sparse(&record.metadata))
        {
            restamp.push(record);
        }
    }
    (changed, restamp)
}

/// Equal as Chroma holds them: a key set to null on our side is absent there.
fn same_metadata(
    stored: &serde_json::Map<String, Value>,
    new: &serde_json::Map<String, Value>,
) -> bool {
    let present = |m: &serde_json::Map<String, Value>| {
        m.iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    present(stored) == present(new)
}
