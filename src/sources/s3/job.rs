//! An S3 job: one object, read whole or (large text) a segment at a time;
//! a `.meta.json` file's job is [`super::meta_json::run`].

use std::time::Instant;

use super::S3Source;
use super::client::{Opened, S3Object};
use super::settings::S3SourceConfig;
use super::synced::MetaJsonMemory;
use crate::model::Trigger;
use crate::pipeline::{JobError, JobRun, SourceError, elapsed_ms};
use crate::sources::SourceKind;

pub(super) async fn run(
    source: &S3Source,
    job: &JobRun<'_>,
    s3: &S3SourceConfig,
) -> Result<(), JobError> {
    let claimed = job.claimed;
    let database = &claimed.job.metadata.database_name;
    let key = claimed
        .payload
        .object_key
        .clone()
        .ok_or_else(|| JobError::Permanent("invocation has no object_key".into()))?;
    if super::meta_json::is_meta_json(&key) {
        return super::meta_json::run(source, job, s3, &key).await;
    }
    job.state
        .set_progress(1, 3, format!("fetching s3://{}/{key}", s3.bucket_name));
    let object = S3Object {
        client: source.clients.client(database, s3).await?,
        bucket: s3.bucket_name.clone(),
        key,
        max_bytes: source.max_object_bytes,
        segment_bytes: source.stream_segment_bytes,
    };
    let collection = job.open_collection().await?;
    let mut context = job.documents(&collection, super::S3Source::SOURCE_TYPE);
    context.custom_id = claimed.payload.custom_id.as_deref();
    context.user_metadata = claimed.payload.metadata.as_ref();
    let started = Instant::now();
    let opened = object.open().await;
    job.state
        .update(|stats| stats.fetch_ms += elapsed_ms(started));
    if job.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    match opened {
        // The object is gone: so are its chunks. Asked for by name, that
        // is an error to report; after an S3 removal event, it is the sync.
        Err(SourceError::NotFound(message)) => {
            let removed = context.write(&object.key, Vec::new()).await?;
            if claimed.job.trigger == Trigger::AutoSync {
                tracing::info!(key = %object.key, removed, "object removed; its chunks deleted");
            } else {
                return Err(JobError::Permanent(format!(
                    "{message}; removed the {removed} chunks it had in collection {}",
                    collection.name
                )));
            }
        }
        Err(error) => return Err(error.into()),
        Ok(opened) => {
            if claimed.payload.custom_id.is_none()
                && let Some(meta_key) =
                    named_by(job, &context, &collection.name, &object.key).await?
            {
                // Stored under the ID a metadata file gave it: synced
                // through that file, whatever order the two jobs ran in.
                tracing::info!(key = %object.key, %meta_key, "object synced through its metadata file");
                drop(opened);
                return super::meta_json::run(source, job, s3, &meta_key).await;
            }
            match opened {
                Opened::Whole(fetched) => context.process(fetched).await?,
                Opened::Streamed(object) => context.process_streamed(object).await?,
            }
        }
    }
    job.finish(&collection).await
}

/// The metadata file of the source that names `key`, if the collection
/// holds `key` under an ID such a file gave it: a direct job (an upload
/// event, a reconciliation) must not replace the file's `<id>-<n>` chunks
/// with `<sha256>-<n>` ones. An ID no metadata file gave (an invocation's
/// `custom_id`) is not a file's: the object syncs directly, as before.
async fn named_by(
    job: &JobRun<'_>,
    context: &crate::pipeline::DocumentContext<'_>,
    collection: &str,
    key: &str,
) -> Result<Option<String>, JobError> {
    let Some(source_id) = job.claimed.job.source_id else {
        return Ok(None);
    };
    let memory = MetaJsonMemory::new(job.services.queue.as_ref(), source_id);
    for custom_id in context.custom_ids_of(key).await? {
        let files = memory
            .files_of(collection, &custom_id)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        if let Some(file) = files.into_iter().next() {
            return Ok(Some(file));
        }
    }
    Ok(None)
}
