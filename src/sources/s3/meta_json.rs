//! `.meta.json` files: an object whose key ends in `.meta.json` names
//! another object of the bucket to sync, under a custom ID, with metadata,
//! into a collection (Chroma Sync's auto-sync `metadata` mode):
//!
//! ```json
//! {"version": "chroma-v1", "id": "report-2024", "path": "docs/report.pdf",
//!  "target_collection_name": "reports", "metadata": {"year": 2024}}
//! ```
//!
//! `path` is a full object key of the bucket (as the hosted service
//! documents it: "Full S3 object key of the document to index"), not a path
//! relative to the metadata file's folder, and it must lie under the
//! source's `path_prefix` like every synced key. Without
//! `target_collection_name` the document goes where an invocation of the
//! metadata file goes (its `target_collection_name`, else the source's
//! `collection_name`). `id` and `metadata` are held to the same rules as an
//! invocation's `custom_id` and `metadata`.
//!
//! Where the file is read: in the job, not in the SQS consumer. The job of a
//! metadata file reads it (at most [`MAX_META_JSON_BYTES`], streamed and
//! capped), checks it, then syncs `path` — so a bad file is a failed
//! invocation with the reason (nothing is dropped silently), a slow or
//! failing S3 read is retried with the worker's backoff instead of holding
//! up the consumer, and `run` and the API process metadata files exactly as
//! events do. The consumer stays a thin event → invocation translator.
//!
//! How a removed metadata file finds its document: the removal event has no
//! body, so the queue remembers, per metadata file, which custom ID in which
//! collection it synced ([`MetaJsonDocument`], in the queue's source state:
//! [`super::synced`]).
//! The row is written before the document's first chunk and removed after
//! its chunks are deleted (by `source_id` + `custom_id`, whatever object
//! they came from), so a crash at any point leaves every written chunk
//! reachable. A metadata file that changes its `id` or collection retires
//! the old document the same way once the new one is written. A document
//! that another metadata file of the source also names is kept until the
//! last one goes. The alternative, a standard chunk metadata field holding
//! the metadata file's key, would take a key from every invocation's
//! metadata allowance (32 keys in all, an interface limit), and would still
//! not say which collection to look in once the file is gone.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::S3Source;
use super::client::{Opened, S3Object, read_small};
use super::settings::S3SourceConfig;
use super::synced::{MetaJsonDocument, MetaJsonMemory};
use crate::model::{CreateJobPayload, JobStatus, Trigger};
use crate::pipeline::{JobError, JobRun, SourceError, elapsed_ms};
use crate::sources::SourceKind;

/// What marks a metadata file.
pub const META_JSON_SUFFIX: &str = ".meta.json";
/// Largest metadata file read; larger ones fail their invocation unread.
/// Its `metadata` is capped at 16 KiB like an invocation's; the rest is room
/// for the ID, the path and JSON whitespace.
pub const MAX_META_JSON_BYTES: u64 = 64 * 1024;
/// The only format version there is.
const VERSION: &str = "chroma-v1";

/// Whether an object key is a metadata file.
pub fn is_meta_json(key: &str) -> bool {
    key.ends_with(META_JSON_SUFFIX)
}

/// A metadata file as written; [`MetaJson::parse`] checks it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    version: Option<Value>,
    id: Option<Value>,
    path: Option<Value>,
    #[serde(default)]
    target_collection_name: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// A checked metadata file.
#[derive(Debug, Clone, PartialEq)]
pub struct MetaJson {
    pub id: String,
    pub path: String,
    pub target_collection_name: Option<String>,
    pub metadata: Option<Map<String, Value>>,
}

fn string_field(name: &str, value: Option<Value>) -> Result<Option<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(format!(
            "`{name}` must be a string, not {}",
            json_type(&other)
        )),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl MetaJson {
    /// Reads a metadata file's bytes: JSON, version `chroma-v1`, `id` and
    /// `path` present, no unknown fields, `path` under `prefix` and not a
    /// metadata file itself. The `id`, `metadata` and collection checks an
    /// invocation gets come after, in [`super::check_object`].
    pub fn parse(bytes: &[u8], prefix: &str) -> Result<MetaJson, String> {
        let wire: Wire =
            serde_json::from_slice(bytes).map_err(|e| format!("not a valid metadata file: {e}"))?;
        match string_field("version", wire.version)? {
            Some(version) if version == VERSION => {}
            Some(version) => {
                return Err(format!(
                    "`version` is `{version}`; the only supported version is `{VERSION}`"
                ));
            }
            None => return Err(format!("`version` is missing (it must be `{VERSION}`)")),
        }
        let id = string_field("id", wire.id)?.ok_or("`id` is missing")?;
        if id.is_empty() {
            return Err("`id` is empty".into());
        }
        let path = string_field("path", wire.path)?.ok_or("`path` is missing")?;
        if path.is_empty() {
            return Err("`path` is empty".into());
        }
        if !path.starts_with(prefix) {
            return Err(format!(
                "`path` `{path}` is outside the source's path_prefix `{prefix}` (it is a full \
                 object key of the bucket)"
            ));
        }
        if super::has_dot_segment(&path) {
            return Err(format!(
                "`path` `{path}` has a `.` or `..` segment; name the object without them"
            ));
        }
        if is_meta_json(&path) {
            return Err(format!(
                "`path` `{path}` names a metadata file; it must name the document to sync"
            ));
        }
        let target_collection_name =
            string_field("target_collection_name", wire.target_collection_name)?;
        let metadata = match wire.metadata {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(format!(
                    "`metadata` must be an object, not {}",
                    json_type(&other)
                ));
            }
        };
        Ok(MetaJson {
            id,
            path,
            target_collection_name,
            metadata,
        })
    }

    /// The invocation this file stands for, its collection defaulting to
    /// `collection` (where an invocation of the metadata file goes).
    fn payload(&self, collection: &str) -> CreateJobPayload {
        CreateJobPayload {
            object_key: Some(self.path.clone()),
            custom_id: Some(self.id.clone()),
            metadata: self.metadata.clone(),
            target_collection_name: Some(
                self.target_collection_name
                    .clone()
                    .unwrap_or_else(|| collection.to_string()),
            ),
            ..CreateJobPayload::default()
        }
    }
}

/// The job of a metadata file `meta_key`: sync what it names, or, if it is
/// gone, remove what it had synced.
pub(super) async fn run(
    source: &S3Source,
    job: &JobRun<'_>,
    s3: &S3SourceConfig,
    meta_key: &str,
) -> Result<(), JobError> {
    let claimed = job.claimed;
    let database = &claimed.job.metadata.database_name;
    let source_id = claimed
        .job
        .source_id
        .ok_or_else(|| JobError::Permanent("invocation has no source".into()))?;
    let queue = &job.services.queue;
    let queue_error = |e: crate::queue::QueueError| JobError::Transient(e.to_string());
    let client = source.clients.client(database, s3).await?;
    job.state
        .set_progress(1, 3, format!("reading s3://{}/{meta_key}", s3.bucket_name));
    let started = std::time::Instant::now();
    let read = read_small(&client, &s3.bucket_name, meta_key, MAX_META_JSON_BYTES).await;
    job.state
        .update(|stats| stats.fetch_ms += elapsed_ms(started));
    if job.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    let bad = |reason: String| {
        JobError::Permanent(format!(
            "bad .meta.json file s3://{}/{meta_key}: {reason}",
            s3.bucket_name
        ))
    };
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(too_big)) => return Err(bad(too_big)),
        // Gone: so is what it synced. Asked for by name, that is an error
        // to report; after an S3 removal event, it is the sync.
        Err(SourceError::NotFound(message)) => {
            let synced = MetaJsonMemory::new(queue.as_ref(), source_id)
                .documents(meta_key)
                .await
                .map_err(queue_error)?;
            let mut removed = 0;
            for document in &synced {
                removed += retire(job, source_id, meta_key, document).await?;
            }
            if claimed.job.trigger == Trigger::AutoSync {
                tracing::info!(
                    key = meta_key,
                    documents = synced.len(),
                    removed,
                    "metadata file removed; its documents' chunks deleted"
                );
                return Ok(());
            }
            return Err(JobError::Permanent(format!(
                "{message}; removed the {removed} chunks of the {} documents it had synced",
                synced.len()
            )));
        }
        Err(error) => return Err(error.into()),
    };
    let prefix = s3.path_prefix.as_deref().unwrap_or("");
    let meta = MetaJson::parse(&bytes, prefix).map_err(bad)?;
    let payload = meta.payload(&claimed.job.metadata.collection_name);
    let sparse = job.embedding.sparse.is_some();
    let collection_name =
        super::check_object(s3, &payload, sparse).map_err(|e| bad(e.to_string()))?;
    let document = MetaJsonDocument {
        collection_name: collection_name.clone(),
        custom_id: meta.id.clone(),
        object_key: meta.path.clone(),
    };
    let memory = MetaJsonMemory::new(queue.as_ref(), source_id);
    let before = memory.documents(meta_key).await.map_err(queue_error)?;
    // Remembered before anything is written: a removal finds it whatever
    // happens from here on. A direct job of the object that looks after
    // this defers to the file once the file's chunks are written
    // (`job.rs`: `named_by`); one already live is waited for.
    memory.put(meta_key, &document).await.map_err(queue_error)?;
    after_direct_job(job, source_id, &meta.path).await?;

    job.state.set_progress(
        1,
        3,
        format!(
            "fetching s3://{}/{} as {} for {meta_key}",
            s3.bucket_name, meta.path, meta.id
        ),
    );
    let object = S3Object {
        client,
        bucket: s3.bucket_name.clone(),
        key: meta.path.clone(),
        max_bytes: source.max_object_bytes,
        segment_bytes: source.stream_segment_bytes,
    };
    let collection = job.open_collection_named(&collection_name).await?;
    let mut context = job.documents(&collection, super::S3Source::SOURCE_TYPE);
    context.custom_id = Some(&meta.id);
    context.user_metadata = meta.metadata.as_ref();
    let started = std::time::Instant::now();
    let opened = object.open().await;
    job.state
        .update(|stats| stats.fetch_ms += elapsed_ms(started));
    if job.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    match opened {
        // The document it names is not there (yet, or any more): nothing
        // of it may stay under this ID.
        Err(SourceError::NotFound(message)) => {
            let removed = context.remove_custom_document().await?;
            return Err(JobError::Permanent(format!(
                "{meta_key} names `{}`, which does not exist ({message}); removed the {removed} \
                 chunks stored under id `{}`",
                meta.path, meta.id
            )));
        }
        Err(error) => return Err(error.into()),
        Ok(Opened::Whole(fetched)) => context.process(fetched).await?,
        Ok(Opened::Streamed(object)) => context.process_streamed(object).await?,
    }
    // The file named another ID or collection before: that document goes.
    for old in before.iter().filter(|old| {
        (old.collection_name.as_str(), old.custom_id.as_str())
            != (collection_name.as_str(), meta.id.as_str())
    }) {
        retire(job, source_id, meta_key, old).await?;
    }
    job.state.set_progress(
        3,
        3,
        format!(
            "synced s3://{}/{} as {} into {collection_name}",
            s3.bucket_name, meta.path, meta.id
        ),
    );
    job.finish(&collection).await
}

/// How long a metadata file's job waits in place for a direct job of the
/// object it names before it gives the worker back and retries later.
const DIRECT_JOB_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How often it looks again meanwhile.
const DIRECT_JOB_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Waits while a direct job of `object_key` — an upload event's, or a
/// reconciliation's in `direct` mode — is pending or running. The two have
/// different concurrency keys (this job learns the object only from the
/// file), and a direct write running beside this one could leave the
/// object's `<sha256>-<n>` chunks beside its `<id>-<n>` ones. Once it is
/// done, this job's write replaces them (same source, same document key):
/// the metadata file's ID and metadata win. Past [`DIRECT_JOB_WAIT`] the
/// job retries with the worker's backoff rather than hold a worker.
async fn after_direct_job(
    job: &JobRun<'_>,
    source_id: uuid::Uuid,
    object_key: &str,
) -> Result<(), JobError> {
    let keys = [object_key.to_string()];
    let started = std::time::Instant::now();
    loop {
        let latest = job
            .services
            .queue
            .latest_by_keys(source_id, &keys)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let live = latest.iter().any(|(_, other)| {
            other.id != job.claimed.job.id
                && matches!(other.status, JobStatus::Pending | JobStatus::Processing)
        });
        if !live {
            return Ok(());
        }
        if started.elapsed() >= DIRECT_JOB_WAIT {
            return Err(JobError::Transient(format!(
                "waiting for the job syncing {object_key} directly to finish first"
            )));
        }
        job.state.set_progress(
            1,
            3,
            format!("waiting for the job syncing {object_key} directly"),
        );
        tokio::select! {
            _ = job.cancel.cancelled() => return Err(JobError::Cancelled),
            _ = tokio::time::sleep(DIRECT_JOB_POLL) => {}
        }
    }
}

/// Deletes the chunks of a document `meta_key` had synced — unless another
/// metadata file of the source names it too — then forgets it. Returns how
/// many chunks went.
async fn retire(
    job: &JobRun<'_>,
    source_id: uuid::Uuid,
    meta_key: &str,
    document: &MetaJsonDocument,
) -> Result<usize, JobError> {
    let memory = MetaJsonMemory::new(job.services.queue.as_ref(), source_id);
    let queue_error = |e: crate::queue::QueueError| JobError::Transient(e.to_string());
    let holders = memory
        .files_of(&document.collection_name, &document.custom_id)
        .await
        .map_err(queue_error)?;
    let mut removed = 0;
    if holders.iter().all(|holder| holder == meta_key) {
        let collection = job.open_collection_named(&document.collection_name).await?;
        let mut context = job.documents(&collection, super::S3Source::SOURCE_TYPE);
        context.custom_id = Some(&document.custom_id);
        removed = context.remove_custom_document().await?;
        tracing::info!(meta_key, custom_id = %document.custom_id, collection = %document.collection_name, removed, "removed a metadata file's document");
    } else {
        tracing::info!(meta_key, custom_id = %document.custom_id, "another metadata file still names this document; kept");
    }
    memory
        .remove(meta_key, document)
        .await
        .map_err(queue_error)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_file_is_read() {
        let meta = MetaJson::parse(
            br#"{"version": "chroma-v1", "id": "report-2024", "path": "docs/report.pdf",
                 "target_collection_name": "reports",
                 "metadata": {"year": 2024, "tags": ["finance", "q4"]}}"#,
            "docs/",
        )
        .unwrap();
        assert_eq!(meta.id, "report-2024");
        assert_eq!(meta.path, "docs/report.pdf");
        assert_eq!(meta.target_collection_name.as_deref(), Some("reports"));
        assert_eq!(meta.metadata.unwrap()["tags"][1], "q4");
        let minimal =
            MetaJson::parse(br#"{"version":"chroma-v1","id":"a","path":"b.md"}"#, "").unwrap();
        assert_eq!(minimal.target_collection_name, None);
        assert_eq!(minimal.metadata, None);
        let payload = minimal.payload("fallback");
        assert_eq!(payload.target_collection_name.as_deref(), Some("fallback"));
        assert_eq!(payload.custom_id.as_deref(), Some("a"));
        assert_eq!(payload.object_key.as_deref(), Some("b.md"));
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "not a valid metadata file"),
            (br#"["chroma-v1"]"#, "not a valid metadata file"),
            (
                br#"{"version":"chroma-v2","id":"a","path":"docs/a.md"}"#,
                "only supported version is `chroma-v1`",
            ),
            (br#"{"id":"a","path":"docs/a.md"}"#, "`version` is missing"),
            (
                br#"{"version":"chroma-v1","path":"docs/a.md"}"#,
                "`id` is missing",
            ),
            (br#"{"version":"chroma-v1","id":"a"}"#, "`path` is missing"),
            (
                br#"{"version":"chroma-v1","id":7,"path":"docs/a.md"}"#,
                "`id` must be a string, not a number",
            ),
            (
                br#"{"version":"chroma-v1","id":"","path":"docs/a.md"}"#,
                "`id` is empty",
            ),
            (
                br#"{"version":"chroma-v1","id":"a","path":"other/a.md"}"#,
                "outside the source's path_prefix `docs/`",
            ),
            (
                br#"{"version":"chroma-v1","id":"a","path":"docs/b.meta.json"}"#,
                "names a metadata file",
            ),
            (
                br#"{"version":"chroma-v1","id":"a","path":"docs/a.md","metadata":[1]}"#,
                "`metadata` must be an object, not an array",
            ),
            (
                br#"{"version":"chroma-v1","id":"a","path":"docs/a.md","colection":"x"}"#,
                "unknown field `colection`",
            ),
        ];
        for (bytes, expected) in cases {
            let error = MetaJson::parse(bytes, "docs/").unwrap_err();
            assert!(
                error.contains(expected),
                "{}: {error}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn only_the_suffix_marks_a_metadata_file() {
        assert!(is_meta_json("docs/report.meta.json"));
        assert!(is_meta_json(".meta.json"));
        assert!(!is_meta_json("docs/report.json"));
        assert!(!is_meta_json("docs/report.meta.json.bak"));
        assert!(!is_meta_json("docs/report.META.JSON"));
    }
}
