//! S3 (and S3-compatible) objects via `aws-sdk-s3`.
//!
//! Credentials: `aws_credential_id = 0` uses the standard AWS chain of the
//! daemon's environment; any other id names `[aws_credentials.<id>]` in the
//! config, whose keys come from env vars or files. Keys never reach logs,
//! errors or job JSON: errors carry S3's error code and message only.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::{Bytes, BytesMut};
use tokio::sync::OnceCell;

use super::{Document, Fetched, SourceError};
use crate::config::{AwsCredentialConfig, S3Settings, Secret};
use crate::model::S3SourceConfig;

/// Builds S3 clients for sources; caches the environment's default config.
pub struct S3Clients {
    credentials: BTreeMap<String, AwsCredentialConfig>,
    settings: S3Settings,
    environment: OnceCell<aws_config::SdkConfig>,
}

impl S3Clients {
    pub fn new(credentials: BTreeMap<String, AwsCredentialConfig>, settings: S3Settings) -> Self {
        S3Clients {
            credentials,
            settings,
            environment: OnceCell::new(),
        }
    }

    /// Whether `aws_credential_id` can be used (checked when a source is created).
    pub fn knows_credential(&self, id: i64) -> bool {
        id == 0 || self.credentials.contains_key(&id.to_string())
    }

    /// Every configured secret value, so error text can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<Secret> {
        let mut secrets = Vec::new();
        for (id, credential) in &self.credentials {
            if let Ok((access, secret, session)) = credential.resolve(id) {
                secrets.push(access);
                secrets.push(secret);
                secrets.extend(session);
            }
        }
        secrets
    }

    /// The environment's AWS config (region chain, timeouts), loaded once.
    async fn environment(&self) -> &aws_config::SdkConfig {
        self.environment
            .get_or_init(|| async {
                aws_config::defaults(BehaviorVersion::latest())
                    .timeout_config(
                        TimeoutConfig::builder()
                            .operation_attempt_timeout(Duration::from_secs(
                                self.settings.timeout_seconds.max(1),
                            ))
                            .connect_timeout(Duration::from_secs(10))
                            .build(),
                    )
                    .load()
                    .await
            })
            .await
    }

    /// The source's configured keys; `None` for the environment's chain (id 0).
    fn credentials(&self, source: &S3SourceConfig) -> Result<Option<Credentials>, SourceError> {
        if source.aws_credential_id == 0 {
            return Ok(None);
        }
        let id = source.aws_credential_id.to_string();
        let credential = self.credentials.get(&id).ok_or_else(|| {
            SourceError::Permanent(format!(
                "aws_credential_id {id} is not configured on this daemon"
            ))
        })?;
        let (access, secret, session) = credential
            .resolve(&id)
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        Ok(Some(Credentials::new(
            access.expose(),
            secret.expose(),
            session.map(|s| s.expose().to_string()),
            None,
            "chroma-syncd-config",
        )))
    }

    pub async fn client(&self, source: &S3SourceConfig) -> Result<Client, SourceError> {
        let mut builder = aws_sdk_s3::config::Builder::from(self.environment().await)
            .region(Region::new(source.region.clone()))
            .force_path_style(source.force_path_style.unwrap_or(false));
        if let Some(endpoint) = &source.endpoint_url {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(credentials) = self.credentials(source)? {
            builder = builder.credentials_provider(credentials);
        }
        Ok(Client::from_conf(builder.build()))
    }

    /// An SQS client for the source's `sqs_queue_url`, with the source's
    /// region and credentials. A queue URL that is not on amazonaws.com
    /// (an SQS-compatible server) is also the client's endpoint.
    pub async fn sqs_client(
        &self,
        source: &S3SourceConfig,
        queue_url: &str,
    ) -> Result<aws_sdk_sqs::Client, SourceError> {
        let mut builder = aws_sdk_sqs::config::Builder::from(self.environment().await)
            .region(Region::new(source.region.clone()));
        let url = url::Url::parse(queue_url)
            .map_err(|e| SourceError::Permanent(format!("sqs_queue_url: {e}")))?;
        if !url
            .host_str()
            .is_some_and(|host| host.ends_with(".amazonaws.com"))
        {
            builder = builder.endpoint_url(url.origin().ascii_serialization());
        }
        if let Some(credentials) = self.credentials(source)? {
            builder = builder.credentials_provider(credentials);
        }
        Ok(aws_sdk_sqs::Client::from_conf(builder.build()))
    }
}

/// One S3 object, fetched with a streamed `GetObject`.
pub struct S3Object {
    pub client: Client,
    pub bucket: String,
    pub key: String,
    pub max_bytes: u64,
    /// Text objects larger than this are read a segment of about this size
    /// at a time instead of whole (see [`Opened::Streamed`]).
    pub segment_bytes: u64,
}

/// An object as opened: read whole, or to be read in segments.
pub enum Opened {
    Whole(Fetched),
    /// A text object too large to hold whole: memory holds one segment.
    Streamed(StreamedObject),
}

/// A large text object's body, handed out in segments that end at a line
/// break (a paragraph break where one is near), so no chunk spans two
/// segments and no character is split.
pub struct StreamedObject {
    pub bucket: String,
    pub key: String,
    pub version: String,
    pub content_type: Option<String>,
    pub size: u64,
    location: String,
    body: ByteStream,
    buffer: BytesMut,
    segment_bytes: usize,
    max_bytes: u64,
    read: u64,
    finished: bool,
}

impl StreamedObject {
    /// The next segment, or `None` once the whole body was handed out.
    pub async fn next_segment(&mut self) -> Result<Option<Bytes>, SourceError> {
        // Read until more than a segment is buffered (or the body ended), then
        // cut within the first `segment_bytes`: where segments end depends on
        // the object alone, never on how the network split the body, so an
        // unchanged object gives the same chunks (and IDs) every time.
        while !self.finished && self.buffer.len() <= self.segment_bytes {
            match self.body.next().await {
                Some(piece) => {
                    let piece = piece.map_err(|e| {
                        SourceError::Transient(format!("reading body of {}: {e}", self.location))
                    })?;
                    self.read += piece.len() as u64;
                    if self.read > self.max_bytes {
                        return Err(SourceError::Permanent(format!(
                            "{} grew past the max_object_bytes limit of {} while being read",
                            self.location, self.max_bytes
                        )));
                    }
                    self.buffer.extend_from_slice(&piece);
                }
                None => self.finished = true,
            }
        }
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let cut = if self.buffer.len() > self.segment_bytes {
            segment_end(&self.buffer[..self.segment_bytes])
        } else {
            self.buffer.len()
        };
        Ok(Some(self.buffer.split_to(cut).freeze()))
    }
}

/// Where a full buffer is cut: after its last paragraph break in the second
/// half, else after its last line break there, else at the last character
/// boundary (a single line longer than a segment).
fn segment_end(buffer: &[u8]) -> usize {
    let half = buffer.len() / 2;
    let tail = &buffer[half..];
    if let Some(at) = tail.windows(2).rposition(|w| w == b"\n\n") {
        return half + at + 2;
    }
    if let Some(at) = tail.iter().rposition(|b| *b == b'\n') {
        return half + at + 1;
    }
    // UTF-8 continuation bytes are 0b10xx_xxxx: back up to a leading byte.
    let mut end = buffer.len();
    while end > 1 && buffer[end - 1] & 0b1100_0000 == 0b1000_0000 {
        end -= 1;
    }
    if end > 1 && buffer[end - 1] >= 0b1100_0000 {
        end - 1
    } else {
        buffer.len()
    }
}

impl S3Object {
    /// Opens the object: small or non-text objects are read whole (up to
    /// `max_bytes`); larger text objects are streamed.
    pub async fn open(&self) -> Result<Opened, SourceError> {
        let location = format!("s3://{}/{}", self.bucket, self.key);
        let response = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .send()
            .await
            .map_err(|e| classify(&format!("fetching {location}"), e))?;
        let size = response.content_length().unwrap_or(0).max(0) as u64;
        if size > self.max_bytes {
            return Ok(Opened::Whole(Fetched::Skipped {
                key: self.key.clone(),
                reason: format!(
                    "object is {size} bytes, above the max_object_bytes limit of {}",
                    self.max_bytes
                ),
            }));
        }
        let version = response
            .version_id()
            .filter(|v| !v.is_empty() && *v != "null")
            .or(response.e_tag())
            .unwrap_or_default()
            .trim_matches('"')
            .to_string();
        let content_type = response.content_type().map(str::to_string);
        if size > self.segment_bytes.max(4096)
            && crate::extract::streamable(&self.key, content_type.as_deref())
        {
            return Ok(Opened::Streamed(StreamedObject {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
                version,
                content_type,
                size,
                location,
                body: response.body,
                buffer: BytesMut::new(),
                // At least a few KiB: a cut must find a line or character boundary.
                segment_bytes: self.segment_bytes.max(4096) as usize,
                max_bytes: self.max_bytes,
                read: 0,
                finished: false,
            }));
        }
        let mut body = response.body;
        let mut bytes = BytesMut::with_capacity(size as usize);
        while let Some(piece) = body.next().await {
            let piece = piece
                .map_err(|e| SourceError::Transient(format!("reading body of {location}: {e}")))?;
            if (bytes.len() + piece.len()) as u64 > self.max_bytes {
                return Ok(Opened::Whole(Fetched::Skipped {
                    key: self.key.clone(),
                    reason: format!(
                        "object is larger than the max_object_bytes limit of {}",
                        self.max_bytes
                    ),
                }));
            }
            bytes.extend_from_slice(&piece);
        }
        Ok(Opened::Whole(Fetched::Document(Document {
            key: self.key.clone(),
            version,
            content_type,
            bytes: bytes.freeze(),
            metadata: vec![("bucket".to_string(), self.bucket.clone().into())],
        })))
    }
}

/// Maps an SDK error to transient/permanent with S3's own code and message.
fn classify<E>(doing: &str, error: SdkError<E, HttpResponse>) -> SourceError
where
    E: ProvideErrorMetadata + std::fmt::Debug,
{
    let kind = match &error {
        SdkError::TimeoutError(_) => "timeout",
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "timeout",
        SdkError::DispatchFailure(_) => "connect",
        SdkError::ServiceError(context) => {
            crate::metrics::status_kind(context.raw().status().as_u16())
        }
        _ => "other",
    };
    // A missing object is an answer, not a failed request.
    if !matches!(&error, SdkError::ServiceError(c) if c.err().code() == Some("NoSuchKey")) {
        crate::metrics::request_error("s3", kind);
    }
    match &error {
        SdkError::TimeoutError(_) => SourceError::Transient(format!("{doing}: timed out")),
        SdkError::DispatchFailure(failure) => {
            let reason = if failure.is_timeout() {
                "timed out".to_string()
            } else if failure.is_io() {
                "connection failed".to_string()
            } else {
                "request could not be sent".to_string()
            };
            SourceError::Transient(format!("{doing}: {reason}"))
        }
        SdkError::ResponseError(_) => {
            SourceError::Transient(format!("{doing}: malformed response from S3"))
        }
        SdkError::ServiceError(context) => {
            let status = context.raw().status().as_u16();
            let code = context.err().code().unwrap_or("Unknown").to_string();
            let message = context.err().message().unwrap_or("").to_string();
            let text = format!("{doing}: {code} (HTTP {status}) {message}")
                .trim_end()
                .to_string();
            let throttled = matches!(code.as_str(), "SlowDown" | "Throttling" | "RequestTimeout");
            if code == "NoSuchKey" {
                SourceError::NotFound(text)
            } else if status >= 500 || status == 429 || throttled {
                SourceError::Transient(text)
            } else {
                SourceError::Permanent(text)
            }
        }
        _ => SourceError::Permanent(format!("{doing}: could not build the S3 request")),
    }
}

/// Every object key under `prefix`, following `ListObjectsV2` pagination.
pub async fn list_keys(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, SourceError> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify(&format!("listing s3://{bucket}/{prefix}"), e))?;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|object| object.key().map(str::to_string))
                .filter(|key| !key.ends_with('/')),
        );
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::segment_end;

    #[test]
    fn segments_end_at_a_paragraph_then_a_line_then_a_character() {
        assert_eq!(segment_end(b"aaaa\n\nbbbb\n\ncc\ndd"), 12);
        assert_eq!(segment_end(b"aaaa\nbbbb\ncc"), 10);
        // No break in the second half: a paragraph break early on is not used.
        assert_eq!(segment_end(b"a\n\nbbbbbbbbbbbbbbbbbb"), 21);
        // One long line: never inside a character (é is 2 bytes, ✓ is 3).
        let text = "xxxxxxxé✓".as_bytes();
        assert_eq!(segment_end(text), 9);
        assert!(std::str::from_utf8(&text[..segment_end(text)]).is_ok());
        assert!(std::str::from_utf8(&text[..segment_end(&text[..11])]).is_ok());
    }
}
