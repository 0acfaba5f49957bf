//! S3 (and S3-compatible) objects via `aws-sdk-s3`.
//!
//! Credentials: `aws_credential_id = 0` uses the standard AWS chain of the
//! daemon's environment; any other id names `[aws_credentials.<id>]` in the
//! config, whose keys come from env vars or files. Keys never reach logs,
//! errors or job JSON: errors carry S3's error code and message only. A
//! configured credential may be bound to databases (`databases = [...]`):
//! a source of another database cannot use it, checked at creation (403)
//! and again whenever a client is built for a job.
//!
//! SSRF guard: an `endpoint_url` or `sqs_queue_url` whose origin is not in
//! `[s3] allowed_endpoints` may only reach public addresses. An IP literal is
//! checked when the client is built (connectors skip DNS for literals); a
//! host name goes through [`PublicOnlyDns`] on every connection, so a DNS
//! answer that changes after the source was created is caught too. Such
//! clients use no proxy (a proxy would resolve the name past our check).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDns, ResolveDnsError};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use bytes::{Bytes, BytesMut};
use tokio::sync::OnceCell;
use url::Url;

use super::S3Settings;
use super::settings::S3SourceConfig;
use crate::config::{AwsCredentialConfig, Secret};
use crate::net::{ResolveError, forbidden_address, literal_ip, resolve_public};
use crate::pipeline::segments::Segments;
use crate::pipeline::{Document, Fetched, SegmentedDocument, SourceError};

/// Builds S3 clients for sources; caches the environment's default config.
pub struct S3Clients {
    credentials: BTreeMap<String, AwsCredentialConfig>,
    settings: S3Settings,
    environment: OnceCell<aws_config::SdkConfig>,
    /// The HTTP client for endpoints not on the allowlist: DNS through
    /// [`PublicOnlyDns`], no proxy. One instance, so connections are pooled.
    guarded_http: SharedHttpClient,
}

/// The DNS resolver of clients whose endpoint an API user named: refuses an
/// answer holding any loopback, private, link-local or metadata address.
#[derive(Debug, Clone)]
pub struct PublicOnlyDns;

impl ResolveDns for PublicOnlyDns {
    fn resolve_dns<'a>(&'a self, name: &'a str) -> DnsFuture<'a> {
        DnsFuture::new(async move {
            resolve_public(name)
                .await
                .map(|addresses| addresses.iter().map(|a| a.ip()).collect())
                .map_err(ResolveDnsError::new)
        })
    }
}

/// What to tell an operator whose endpoint was refused.
fn allowlist_hint(url: &Url) -> String {
    format!(
        "if it is a trusted S3-compatible server, add {} to [s3] allowed_endpoints \
         (CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS) in the daemon's config",
        url.origin().ascii_serialization()
    )
}

/// The endpoint an `sqs_queue_url` makes the SQS client connect to; `None`
/// for AWS's own queues, whose endpoint the SDK derives from the region.
fn sqs_endpoint(queue_url: &Url) -> Option<Url> {
    let aws = queue_url
        .host_str()
        .is_some_and(|host| host.ends_with(".amazonaws.com"));
    (!aws).then(|| queue_url.clone())
}

impl S3Clients {
    pub fn new(credentials: BTreeMap<String, AwsCredentialConfig>, settings: S3Settings) -> Self {
        let guarded_http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_with_resolver(PublicOnlyDns);
        S3Clients {
            credentials,
            settings,
            environment: OnceCell::new(),
            guarded_http,
        }
    }

    /// Whether `aws_credential_id` can be used (checked when a source is created).
    pub fn knows_credential(&self, id: i64) -> bool {
        id == 0 || self.credentials.contains_key(&id.to_string())
    }

    /// Whether a source of `database` may use its `aws_credential_id`; the
    /// refusal says which credential and database. Id 0 (the daemon's own
    /// AWS chain) and unknown ids (refused elsewhere) pass.
    pub fn authorize(&self, database: &str, source: &S3SourceConfig) -> Result<(), String> {
        let id = source.aws_credential_id.to_string();
        match self.credentials.get(&id) {
            Some(credential)
                if !crate::config::binds(credential.databases.as_deref(), database) =>
            {
                Err(format!(
                    "aws_credential_id {id} may not be used by database `{database}`: \
                     [aws_credentials.{id}] databases does not list it"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Checks a new source's `endpoint_url` and `sqs_queue_url` against the
    /// SSRF guard; the refusal names the address. A name that does not
    /// resolve now passes: it is checked again on every connection.
    pub async fn check_endpoints(&self, source: &S3SourceConfig) -> Result<(), String> {
        let endpoints = [
            ("s3.endpoint_url", source.endpoint_url.as_deref()),
            ("s3.sqs_queue_url", source.sqs_queue_url.as_deref()),
        ];
        for (field, value) in endpoints {
            let Some(url) = value.and_then(|v| Url::parse(v).ok()) else {
                continue;
            };
            let url = match field {
                "s3.sqs_queue_url" => match sqs_endpoint(&url) {
                    Some(url) => url,
                    None => continue,
                },
                _ => url,
            };
            if !self.guarded(field, &url)? {
                continue;
            }
            let Some(host) = url.host_str().filter(|_| literal_ip(&url).is_none()) else {
                continue;
            };
            match resolve_public(host).await {
                Err(refused @ ResolveError::Forbidden { .. }) => {
                    return Err(format!(
                        "{field} {} is refused: {refused}; {}",
                        url.origin().ascii_serialization(),
                        allowlist_hint(&url)
                    ));
                }
                Err(ResolveError::Lookup(error)) => {
                    tracing::debug!(field, %error, "endpoint does not resolve yet");
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Whether the client for `url` must use the guarded HTTP client: `false`
    /// for an allowlisted origin; an IP literal in a forbidden range is
    /// refused here, since connectors never ask a resolver about literals.
    fn guarded(&self, field: &str, url: &Url) -> Result<bool, String> {
        if self.settings.allowed_endpoints.contains(url) {
            return Ok(false);
        }
        if let Some(ip) = literal_ip(url)
            && let Some(why) = forbidden_address(ip)
        {
            return Err(format!(
                "{field} {} is refused: {ip} is a {why}; {}",
                url.origin().ascii_serialization(),
                allowlist_hint(url)
            ));
        }
        Ok(true)
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
    /// Re-checks the database binding: the config may have changed since the
    /// source was created.
    fn credentials(
        &self,
        database: &str,
        source: &S3SourceConfig,
    ) -> Result<Option<Credentials>, SourceError> {
        self.authorize(database, source)
            .map_err(SourceError::Permanent)?;
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

    /// An S3 client for a source of `database`.
    pub async fn client(
        &self,
        database: &str,
        source: &S3SourceConfig,
    ) -> Result<Client, SourceError> {
        let credentials = self.credentials(database, source)?;
        let mut builder = aws_sdk_s3::config::Builder::from(self.environment().await)
            .region(Region::new(source.region.clone()))
            .force_path_style(source.force_path_style.unwrap_or(false));
        if let Some(endpoint) = &source.endpoint_url {
            let url = Url::parse(endpoint)
                .map_err(|e| SourceError::Permanent(format!("s3.endpoint_url: {e}")))?;
            if self
                .guarded("s3.endpoint_url", &url)
                .map_err(SourceError::Permanent)?
            {
                builder = builder.http_client(self.guarded_http.clone());
            }
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(credentials) = credentials {
            builder = builder.credentials_provider(credentials);
        }
        Ok(Client::from_conf(builder.build()))
    }

    /// An SQS client for the source's `sqs_queue_url`, with the source's
    /// region and credentials. A queue URL that is not on amazonaws.com
    /// (an SQS-compatible server) is also the client's endpoint.
    pub async fn sqs_client(
        &self,
        database: &str,
        source: &S3SourceConfig,
        queue_url: &str,
    ) -> Result<aws_sdk_sqs::Client, SourceError> {
        let credentials = self.credentials(database, source)?;
        let mut builder = aws_sdk_sqs::config::Builder::from(self.environment().await)
            .region(Region::new(source.region.clone()));
        let url = Url::parse(queue_url)
            .map_err(|e| SourceError::Permanent(format!("sqs_queue_url: {e}")))?;
        if let Some(endpoint) = sqs_endpoint(&url) {
            if self
                .guarded("s3.sqs_queue_url", &endpoint)
                .map_err(SourceError::Permanent)?
            {
                builder = builder.http_client(self.guarded_http.clone());
            }
            builder = builder.endpoint_url(endpoint.origin().ascii_serialization());
        }
        if let Some(credentials) = credentials {
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
    segments: Segments,
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
        while !self.finished && self.segments.wants_more() {
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
                    self.segments.push(&piece);
                }
                None => self.finished = true,
            }
        }
        Ok(self.segments.cut())
    }
}

impl SegmentedDocument for StreamedObject {
    fn key(&self) -> &str {
        &self.key
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn content_type(&self) -> Option<String> {
        self.content_type.clone()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn source_fields(&self) -> Vec<(String, serde_json::Value)> {
        source_fields(&self.bucket)
    }
    async fn next_segment(&mut self) -> Result<Option<Bytes>, SourceError> {
        StreamedObject::next_segment(self).await
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
                segments: Segments::new(self.segment_bytes),
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
            metadata: source_fields(&self.bucket),
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
            if let Some(refused) = failure.as_connector_error().and_then(|e| refusal(e)) {
                return SourceError::Permanent(format!("{doing}: {refused}"));
            }
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

/// The SSRF guard's refusal somewhere in an error's causes: a connection
/// refused by [`PublicOnlyDns`] is permanent, and says why.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refused @ ResolveError::Forbidden { .. }) = error.downcast_ref::<ResolveError>()
        {
            return Some(format!(
                "connection refused by the SSRF guard: {refused} (add the endpoint's origin to \
                 [s3] allowed_endpoints / CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS if it is trusted)"
            ));
        }
        cause = error.source();
    }
    None
}

/// A small object read whole, for a file the daemon interprets (an S3
/// `.meta.json`): one whose declared length is above `max_bytes` is refused
/// unread, and reading stops past `max_bytes` whatever the length said, so
/// memory never holds more than the cap. `Ok(Err(reason))`: too big.
pub async fn read_small(
    client: &Client,
    bucket: &str,
    key: &str,
    max_bytes: u64,
) -> Result<Result<Bytes, String>, SourceError> {
    let location = format!("s3://{bucket}/{key}");
    let too_big =
        |size: String| format!("the file is {size} bytes; at most {max_bytes} bytes are read");
    let response = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| classify(&format!("fetching {location}"), e))?;
    let declared = response.content_length().unwrap_or(0).max(0) as u64;
    if declared > max_bytes {
        return Ok(Err(too_big(declared.to_string())));
    }
    let mut body = response.body;
    let mut bytes = BytesMut::with_capacity(declared as usize);
    while let Some(piece) = body.next().await {
        let piece = piece
            .map_err(|e| SourceError::Transient(format!("reading body of {location}: {e}")))?;
        if (bytes.len() + piece.len()) as u64 > max_bytes {
            return Ok(Err(too_big(format!("more than {max_bytes}"))));
        }
        bytes.extend_from_slice(&piece);
    }
    Ok(Ok(bytes.freeze()))
}

/// Every object key under `prefix`, following `ListObjectsV2` pagination.
/// What every chunk of an object says about where it came from.
pub fn source_fields(bucket: &str) -> Vec<(String, serde_json::Value)> {
    vec![("bucket".to_string(), bucket.into())]
}

/// An object as `ListObjectsV2` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListedObject {
    pub key: String,
    /// The ETag without its quotes: what a GET of an unversioned object
    /// answers, and so the version a job stores for it.
    pub etag: Option<String>,
    pub size: u64,
}

/// Every object under `prefix` (folder markers, keys ending in `/`, left
/// out), a page of 1,000 at a time.
pub async fn list_objects(
    client: &Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<ListedObject>, SourceError> {
    let mut objects = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| classify(&format!("listing s3://{bucket}/{prefix}"), e))?;
        objects.extend(
            page.contents()
                .iter()
                .filter_map(|object| {
                    Some(ListedObject {
                        key: object.key()?.to_string(),
                        etag: object
                            .e_tag()
                            .map(|tag| tag.trim_matches('"').to_string())
                            .filter(|tag| !tag.is_empty()),
                        size: object.size().unwrap_or(0).max(0) as u64,
                    })
                })
                .filter(|object| !object.key.ends_with('/')),
        );
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::{PublicOnlyDns, ResolveDns, refusal};

    #[tokio::test]
    async fn the_guarded_resolver_refuses_names_that_answer_inside() {
        let error = PublicOnlyDns.resolve_dns("localhost").await.unwrap_err();
        // The SDK wraps it; the job's error still says what was refused.
        let message = refusal(&error).expect("a refusal in the causes");
        assert!(
            message.contains("localhost") && message.contains("loopback"),
            "{message}"
        );
        assert!(message.contains("allowed_endpoints"), "{message}");
    }
}
