//! The kind's settings on the wire: the `s3` field of a source's
//! create payload and of the `Source` the API answers with. Defined here,
//! with the kind, so the wire model names no kind (`model::KindSettings`
//! carries it untyped; the registry parses it into this type).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::model::AutoSync;

/// An S3 bucket (or S3-compatible store) source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// The bucket's name.
    pub bucket_name: String,
    /// The bucket's region (`us-east-1`, …).
    pub region: String,
    /// Collection written when an invocation names no `target_collection_name`.
    pub collection_name: String,
    /// Names a credential of the daemon's config; `0` means the standard AWS
    /// credential chain of the daemon's environment. Keys never travel over the API.
    pub aws_credential_id: i64,
    /// Every synced object key must start with this prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// `direct`: every upload under the prefix syncs (and a `.meta.json`
    /// file syncs what it names); `metadata`: only `.meta.json` files do.
    /// Both need `sqs_queue_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_sync: Option<AutoSync>,
    /// Extension: endpoint of an S3-compatible store (MinIO, R2, moto, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Extension: address buckets as `endpoint/bucket` instead of `bucket.endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Extension, for `auto_sync: "direct"` or `"metadata"`: the SQS queue the bucket sends
    /// its `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` notifications to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqs_queue_url: Option<String>,
}

/// A job's `s3` metadata (seed 001): the object it syncs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct S3JobMetadata {
    pub bucket_name: String,
    pub object_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}
