//! S3 buckets (and S3-compatible stores): one job per object key; a bucket
//! is synced whole by listing its keys under the source's `path_prefix`;
//! `auto_sync: "direct"` turns the bucket's event notifications into jobs,
//! `auto_sync: "metadata"` only those of `.meta.json` files. A key ending
//! in `.meta.json` is never indexed itself: its job syncs the object the
//! file names ([`meta_json`]), however the job was created.

pub mod autosync;
pub mod client;
mod job;
pub mod meta_json;
pub mod section;
pub mod settings;
pub mod synced;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::client::{S3Clients, list_objects};
use super::{DomainError, RunTarget};
use super::{Flag, InvocationField, Planned, Reconcile, RunField, SourceKind, WholeSource};
use crate::config::{Config, Secret};
use crate::model::{AutoSync, CreateJobPayload, SourceType};
use crate::pipeline::listing::Listing;
use crate::pipeline::{JobError, JobRun};
use crate::queue::{Queue, SourceRecord};
use crate::sink::records::validate_user_metadata;
use crate::sources::names::validate_chroma_name;
pub use section::S3Settings;
pub use settings::{S3JobMetadata, S3SourceConfig};

/// S3's own limit on key length.
const MAX_OBJECT_KEY_BYTES: usize = 1024;

pub struct S3Source {
    pub clients: Arc<S3Clients>,
    /// Objects above this size are skipped.
    max_object_bytes: u64,
    /// Text objects above this size are read and written a segment at a time.
    stream_segment_bytes: u64,
}

impl S3Source {
    pub fn new(config: &Config, settings: S3Settings) -> Self {
        S3Source {
            max_object_bytes: settings.max_object_bytes,
            stream_segment_bytes: settings.stream_segment_bytes,
            clients: Arc::new(S3Clients::new(config.aws_credentials.clone(), settings)),
        }
    }
}

/// The S3 settings of a stored source, if it is an S3 source.
pub(crate) fn settings(record: &SourceRecord) -> Option<S3SourceConfig> {
    super::settings_of::<S3Source>(&record.payload)
}

impl SourceKind for S3Source {
    type Config = S3SourceConfig;
    type JobMetadata = S3JobMetadata;
    type Settings = S3Settings;

    const SOURCE_TYPE: SourceType = SourceType::named("s3");
    const TITLE: &'static str = "S3 bucket";
    const DESCRIPTION: &'static str = "The objects of an S3 bucket (or an S3-compatible store: \
        MinIO, R2, …) under a path prefix, one job per object key. With auto-sync, the bucket's \
        event notifications sync each upload and removal as it happens.";
    const INVOCATION_FIELDS: &'static [InvocationField] = &[
        InvocationField::required("object_key").recorded_as("object_key"),
        InvocationField::optional("custom_id").recorded_as("custom_id"),
        InvocationField::optional("metadata")
            .recorded_as("additional_metadata")
            .flags(&[Flag::json_object(
                "metadata",
                "JSON object merged into every chunk's metadata.",
            )]),
        InvocationField::optional("target_collection_name"),
    ];
    const CALLED: &'static str = "S3";
    const RUN_FIELDS: &'static [RunField] = &[
        RunField {
            name: "object_keys",
            flags: &[Flag::many(
                "object-key",
                "S3: object keys to sync; default: every key under the source's `path_prefix`.",
            )],
        },
        RunField {
            name: "meta_json",
            flags: &[Flag::switch(
                "meta-json",
                "S3: sync only the `.meta.json` files under the prefix, each syncing the object \
                 it names with its id, metadata and collection (a backfill of `auto_sync: \
                 \"metadata\"`; always so for a source in that mode). Without it every object \
                 is synced, and `.meta.json` files are processed as they are in `direct` mode.",
            )],
        },
    ];

    fn build(config: &Config, settings: S3Settings) -> Result<Self, String> {
        Ok(S3Source::new(config, settings))
    }

    fn secret_values(&self) -> Vec<Secret> {
        self.clients.secret_values()
    }

    /// Consumes the SQS queues of every `auto_sync: "direct"` or `"metadata"` S3 source.
    fn start_auto_sync(
        &self,
        queue: &Arc<dyn Queue>,
        wake: &Arc<Notify>,
        shutdown: &CancellationToken,
        reconcile: Arc<dyn Reconcile>,
    ) {
        tokio::spawn(autosync::autosync_loop(
            Arc::clone(queue),
            Arc::clone(&self.clients),
            Arc::clone(wake),
            shutdown.clone(),
            reconcile,
        ));
    }

    fn defaults(&self) -> serde_json::Map<String, serde_json::Value> {
        // What `effective` fills in.
        [
            ("path_prefix", serde_json::json!("")),
            ("auto_sync", serde_json::json!(AutoSync::None)),
            ("force_path_style", serde_json::json!(false)),
        ]
        .into_iter()
        .map(|(field, value)| (field.to_string(), value))
        .collect()
    }

    fn validate(&self, s3: &S3SourceConfig) -> Result<(), DomainError> {
        if s3.bucket_name.trim().is_empty() || s3.region.trim().is_empty() {
            return Err(DomainError::invalid(
                "s3.bucket_name and s3.region must not be empty",
            ));
        }
        validate_chroma_name("s3.collection_name", &s3.collection_name)?;
        if !self.clients.knows_credential(s3.aws_credential_id) {
            return Err(DomainError::invalid(format!(
                "aws_credential_id {} is not configured on this daemon ([aws_credentials.{}] in \
                 its config; 0 means the daemon's own AWS credential chain)",
                s3.aws_credential_id, s3.aws_credential_id
            )));
        }
        if let Some(endpoint) = &s3.endpoint_url {
            let valid = reqwest::Url::parse(endpoint)
                .map(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
                .unwrap_or(false);
            if !valid {
                return Err(DomainError::invalid(format!(
                    "s3.endpoint_url `{endpoint}` is not an http(s) URL"
                )));
            }
        }
        match (&s3.auto_sync, &s3.sqs_queue_url) {
            (Some(mode @ (AutoSync::Direct | AutoSync::Metadata)), None) => {
                let mode = if *mode == AutoSync::Direct {
                    "direct"
                } else {
                    "metadata"
                };
                return Err(DomainError::invalid(format!(
                    "s3.auto_sync `{mode}` needs s3.sqs_queue_url: the SQS queue the bucket \
                     sends its event notifications to"
                )));
            }
            (Some(AutoSync::Direct | AutoSync::Metadata), Some(url)) => {
                let parsed = url::Url::parse(url).map_err(|e| {
                    DomainError::invalid(format!("s3.sqs_queue_url `{url}` is not a URL: {e}"))
                })?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.path().len() < 2 {
                    return Err(DomainError::invalid(format!(
                        "s3.sqs_queue_url `{url}` is not an SQS queue URL \
                         (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
                    )));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn authorize(&self, database: &str, s3: &S3SourceConfig) -> Result<(), DomainError> {
        self.clients
            .authorize(database, s3)
            .map_err(DomainError::Forbidden)?;
        self.clients
            .check_endpoints(s3)
            .await
            .map_err(DomainError::Invalid)
    }

    fn default_collection(s3: &S3SourceConfig) -> Option<&str> {
        Some(&s3.collection_name)
    }

    fn plan(
        &self,
        record: &SourceRecord,
        s3: &S3SourceConfig,
        payload: &CreateJobPayload,
    ) -> Result<Planned, DomainError> {
        plan_object(record, s3, payload)
    }

    async fn whole_source(
        &self,
        record: &SourceRecord,
        s3: &S3SourceConfig,
        target: RunTarget,
    ) -> Result<WholeSource, DomainError> {
        let object_keys: Vec<String> = target.field("object_keys")?.unwrap_or_default();
        let meta_json = target.field("meta_json")?.unwrap_or(false);
        if !object_keys.is_empty() {
            // Named keys are synced as asked, each by its job.
            return Ok(payloads(object_keys, &target.collection).into());
        }
        let client = self
            .clients
            .client(&record.payload.database_name, s3)
            .await
            .map_err(|e| DomainError::Source(e.to_string()))?;
        let prefix = s3.path_prefix.clone().unwrap_or_default();
        let mut objects = list_objects(&client, &s3.bucket_name, &prefix)
            .await
            .map_err(|e| DomainError::Source(e.to_string()))?;
        // As `metadata` auto-sync does: only what metadata files name. Their
        // jobs read the file first, so the listing says nothing about what
        // is stored.
        if meta_json || s3.auto_sync == Some(AutoSync::Metadata) {
            objects.retain(|object| meta_json::is_meta_json(&object.key));
            let keys = objects.into_iter().map(|object| object.key).collect();
            return Ok(payloads(keys, &target.collection).into());
        }
        // Objects read a segment at a time are left to their jobs: their
        // segments are written one after another, so what is stored says
        // less about whether the last attempt finished.
        let whole = self.stream_segment_bytes.max(4096);
        let versions = objects
            .iter()
            .filter(|object| object.size <= whole)
            .filter_map(|object| Some((object.key.clone(), object.etag.clone()?)))
            .collect();
        let keys: Vec<String> = objects.into_iter().map(|object| object.key).collect();
        let complete = keys.iter().cloned().collect();
        Ok(WholeSource {
            payloads: payloads(keys, &target.collection),
            listing: Some(Listing {
                complete: Some(complete),
                collection: target
                    .collection
                    .clone()
                    .unwrap_or_else(|| s3.collection_name.clone()),
                versions,
                source_fields: client::source_fields(&s3.bucket_name),
            }),
        })
    }

    fn one_job_per_document(&self) -> bool {
        true
    }

    async fn run_job(&self, job: &JobRun<'_>, s3: &S3SourceConfig) -> Result<(), JobError> {
        job::run(self, job, s3).await
    }

    fn effective(mut s3: S3SourceConfig) -> S3SourceConfig {
        s3.path_prefix.get_or_insert_with(String::new);
        s3.auto_sync.get_or_insert(AutoSync::None);
        s3.force_path_style.get_or_insert(false);
        s3
    }
}

/// One invocation per key, writing `collection` (else the source's).
fn payloads(keys: Vec<String>, collection: &Option<String>) -> Vec<CreateJobPayload> {
    keys.into_iter()
        .map(|key| CreateJobPayload {
            object_key: Some(key),
            target_collection_name: collection.clone(),
            ..CreateJobPayload::default()
        })
        .collect()
}

/// An invocation of one object of an S3 source (from the API or an event).
pub fn plan_object(
    record: &SourceRecord,
    s3: &S3SourceConfig,
    payload: &CreateJobPayload,
) -> Result<Planned, DomainError> {
    let Some(object_key) = payload.object_key.as_deref() else {
        return Err(DomainError::invalid(
            "object_key is required for S3 sources",
        ));
    };
    let sparse = record
        .payload
        .embedding
        .as_ref()
        .is_some_and(|e| e.sparse.is_some());
    let collection = check_object(s3, payload, sparse)?;
    if meta_json::is_meta_json(object_key)
        && (payload.custom_id.is_some() || payload.metadata.is_some())
    {
        return Err(DomainError::invalid(format!(
            "object_key `{object_key}` is a .meta.json file, whose own `id` and `metadata` \
             apply; custom_id and metadata cannot be given with it"
        )));
    }
    let metadata = S3JobMetadata {
        bucket_name: s3.bucket_name.clone(),
        object_key: Some(object_key.to_string()),
        custom_id: payload.custom_id.clone(),
        additional_metadata: payload.metadata.clone(),
    };
    let concurrency_key = format!("s3:{}:{collection}:{object_key}", record.id);
    Planned::of::<S3Source>(&metadata, collection, concurrency_key)
}

/// Whether a key has a `.` or `..` segment. The prefix check is lexical:
/// `docs/../payroll.csv` starts with `docs/`, and an S3-compatible store
/// that normalises paths (as HTTP servers do) would serve `payroll.csv`.
pub fn has_dot_segment(key: &str) -> bool {
    key.split('/')
        .any(|segment| segment == "." || segment == "..")
}

/// The checks of an object invocation that depend only on the source's
/// settings: key under the prefix, `custom_id` and `metadata` within their
/// limits (`sparse`: the source writes a sparse vector, one metadata key
/// fewer), a valid collection name. Returns the collection it writes. A
/// `.meta.json` file's contents are held to the same checks.
pub fn check_object(
    s3: &S3SourceConfig,
    payload: &CreateJobPayload,
    sparse: bool,
) -> Result<String, DomainError> {
    let object_key = payload.object_key.as_deref().unwrap_or_default();
    if object_key.is_empty() || object_key.len() > MAX_OBJECT_KEY_BYTES {
        return Err(DomainError::invalid(format!(
            "object_key must be 1 to {MAX_OBJECT_KEY_BYTES} bytes long"
        )));
    }
    let prefix = s3.path_prefix.as_deref().unwrap_or("");
    if !object_key.starts_with(prefix) {
        return Err(DomainError::invalid(format!(
            "object_key `{object_key}` is not under the source's path_prefix `{prefix}`"
        )));
    }
    if has_dot_segment(object_key) {
        return Err(DomainError::invalid(format!(
            "object_key `{object_key}` has a `.` or `..` segment; name the object without them"
        )));
    }
    if let Some(custom_id) = &payload.custom_id {
        crate::sources::names::validate_custom_id(custom_id)?;
    }
    if let Some(metadata) = &payload.metadata {
        validate_user_metadata(metadata, sparse).map_err(DomainError::Invalid)?;
    }
    let collection = payload
        .target_collection_name
        .clone()
        .unwrap_or_else(|| s3.collection_name.clone());
    validate_chroma_name("target_collection_name", &collection)?;
    Ok(collection)
}
