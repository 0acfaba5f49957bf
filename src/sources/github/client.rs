//! GitHub repositories via octocrab, against `api.github.com` or a GitHub
//! Enterprise base URL (`CHROMA_SYNCD_GITHUB_API_URL`).
//!
//! What we ask GitHub for, and why:
//! - `branches/{b}` or `commits/{sha}` resolves the job's ref to one commit
//!   first, so every chunk of a sync names the same commit.
//! - `git/trees/{sha}?recursive=1` lists paths with blob shas: comparing two
//!   trees tells an incremental sync exactly which files changed.
//! - `tarball/{sha}` streams a full sync: one request, inflated and read entry
//!   by entry on a blocking thread, never held whole in memory or on disk.
//! - `git/blobs/{sha}` fetches the few changed files of an incremental sync.
//!
//! Requests go through octocrab's `_get` (auth, base URI, redirects, GitHub
//! App token refresh) with octocrab's own retries off: rate limits are
//! handled here, where `Retry-After` / `x-ratelimit-reset` are visible, the
//! wait can be cancelled, and a wait too long for one job becomes a transient
//! failure that the queue retries later.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use http::header::{ACCEPT, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyDataStream, BodyExt, combinators::BoxBody};
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use octocrab::service::middleware::retry::RetryConfig;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Mutex, OnceCell, mpsc};
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::CancellationToken;

use crate::pipeline::{Document, Fetched, SourceError};

use super::GitHubSettings;
use super::settings::GithubSourceConfig;
use crate::config::Secret;
use crate::model::GitRefIdentifier;
pub use crate::sources::globs::{DEFAULT_EXCLUDE_GLOBS, PathFilter};

/// Consecutive 5xx/transport failures of one request before giving up (to the queue's retry).
const MAX_SERVER_ERRORS: u32 = 3;
/// GitHub asks for at least a minute after a secondary rate limit without `Retry-After`.
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Builds authenticated octocrab clients: one for token/anonymous access,
/// one per (GitHub App, repository) installation.
pub struct GitHubClients {
    settings: GitHubSettings,
    token: Option<Secret>,
    default_client: OnceCell<Octocrab>,
    installations: Mutex<BTreeMap<(String, String), Octocrab>>,
}

impl GitHubClients {
    pub fn new(settings: GitHubSettings) -> Result<Self, crate::config::ConfigError> {
        let token = settings.resolve_token()?;
        Ok(GitHubClients {
            settings,
            token,
            default_client: OnceCell::new(),
            installations: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn settings(&self) -> &GitHubSettings {
        &self.settings
    }

    /// Whether a source's `app_id` names a configured GitHub App.
    pub fn knows_app(&self, app_id: &str) -> bool {
        self.settings.apps.contains_key(app_id)
    }

    /// Whether a source of `database` may use the credential it would
    /// authenticate with: its `app_id`'s app, else the daemon's token (if
    /// one is configured; anonymous access needs no binding). The refusal
    /// says which credential and database.
    pub fn authorize(&self, database: &str, source: &GithubSourceConfig) -> Result<(), String> {
        let (credential, databases, key) = match &source.app_id {
            Some(app_id) => match self.settings.apps.get(app_id) {
                Some(app) => (
                    format!("GitHub App {app_id}"),
                    app.databases.as_deref(),
                    format!("[github.apps.{app_id}] databases"),
                ),
                None => return Ok(()), // refused elsewhere as unknown
            },
            None if self.token.is_some() => (
                "the daemon's GitHub token".to_string(),
                self.settings.token_databases.as_deref(),
                "[github] token_databases".to_string(),
            ),
            None => return Ok(()),
        };
        if crate::config::binds(databases, database) {
            Ok(())
        } else {
            Err(format!(
                "{credential} may not be used by database `{database}`: {key} does not list it"
            ))
        }
    }

    /// Every configured secret, so error text can be scrubbed of them.
    pub fn secret_values(&self) -> Vec<Secret> {
        let mut secrets: Vec<Secret> = self.token.iter().cloned().collect();
        for (id, app) in &self.settings.apps {
            if let Ok(key) = app.resolve_key(id) {
                secrets.push(key);
            }
        }
        secrets
    }

    fn build(&self, auth: Auth<'_>) -> Result<Octocrab, SourceError> {
        let builder = Octocrab::builder()
            .add_retry_config(RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(
                self.settings.timeout_seconds.max(1),
            )));
        let builder = match auth {
            Auth::Anonymous => builder,
            Auth::Token(token) => builder.personal_token(token.expose().to_string()),
            Auth::App(id, key) => builder.app(id, key),
        };
        builder
            .base_uri(self.settings.api_url.as_str())
            .map_err(|e| {
                SourceError::Permanent(format!(
                    "GitHub API URL `{}` is not usable: {e}",
                    self.settings.api_url
                ))
            })?
            .build()
            .map_err(|e| SourceError::Permanent(format!("building the GitHub client: {e}")))
    }

    /// A client for `source`'s repository, authenticated as the source asks,
    /// if its `database` may use that credential (re-checked here: the
    /// config may have changed since the source was created).
    pub async fn repo(
        &self,
        database: &str,
        source: &GithubSourceConfig,
        cancel: CancellationToken,
    ) -> Result<GitHubRepo, SourceError> {
        self.authorize(database, source)
            .map_err(SourceError::Permanent)?;
        let (owner, name) = split_repository(&source.repository).ok_or_else(|| {
            SourceError::Permanent(format!(
                "repository `{}` is not of the form owner/name",
                source.repository
            ))
        })?;
        let mut repo = GitHubRepo {
            crab: self.default_client().await?,
            owner: owner.to_string(),
            name: name.to_string(),
            settings: self.settings.clone(),
            cancel,
        };
        if let Some(app_id) = &source.app_id {
            repo.crab = self.installation_client(app_id, &repo).await?;
        }
        Ok(repo)
    }

    async fn default_client(&self) -> Result<Octocrab, SourceError> {
        self.default_client
            .get_or_try_init(|| async {
                match &self.token {
                    Some(token) => self.build(Auth::Token(token)),
                    None => self.build(Auth::Anonymous),
                }
            })
            .await
            .cloned()
    }

    /// The app's installation on the repository (`GET /repos/{o}/{r}/installation`,
    /// authenticated with the app's JWT); octocrab mints and refreshes the
    /// installation token before it expires.
    async fn installation_client(
        &self,
        app_id: &str,
        repo: &GitHubRepo,
    ) -> Result<Octocrab, SourceError> {
        let cache_key = (app_id.to_string(), repo.full_name());
        let mut installations = self.installations.lock().await;
        if let Some(client) = installations.get(&cache_key) {
            return Ok(client.clone());
        }
        let app = self.settings.apps.get(app_id).ok_or_else(|| {
            SourceError::Permanent(format!(
                "GitHub App {app_id} is not configured on this daemon ([github.apps.{app_id}])"
            ))
        })?;
        let id: u64 = app_id.parse().map_err(|_| {
            SourceError::Permanent(format!("GitHub App id `{app_id}` is not a number"))
        })?;
        let pem = app
            .resolve_key(app_id)
            .map_err(|e| SourceError::Permanent(e.to_string()))?;
        let key = octocrab::EncodingKey::from_rsa_pem(pem.expose().as_bytes()).map_err(|_| {
            SourceError::Permanent(format!(
                "the private key of GitHub App {app_id} is not an RSA key in PEM form"
            ))
        })?;
        let app_client = self.build(Auth::App(AppId(id), key))?;
        let as_app = GitHubRepo {
            crab: app_client.clone(),
            ..repo.clone()
        };
        #[derive(Deserialize)]
        struct Installation {
            id: u64,
        }
        let installation: Installation = as_app
            .get_json(
                &format!("/repos/{}/installation", repo.full_name()),
                "the GitHub App's installation",
            )
            .await
            .map_err(|e| match e {
                SourceError::NotFound(_) => SourceError::Permanent(format!(
                    "GitHub App {app_id} is not installed on {}",
                    repo.full_name()
                )),
                other => other,
            })?;
        let client = app_client
            .installation(InstallationId(installation.id))
            .map_err(|e| SourceError::Permanent(format!("GitHub App {app_id}: {e}")))?;
        installations.insert(cache_key, client.clone());
        Ok(client)
    }
}

enum Auth<'a> {
    Anonymous,
    Token(&'a Secret),
    App(AppId, octocrab::EncodingKey),
}

/// `owner/name` → (`owner`, `name`), both non-empty and path-safe.
pub fn split_repository(repository: &str) -> Option<(&str, &str)> {
    let (owner, name) = repository.split_once('/')?;
    let safe = |part: &str| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (safe(owner) && safe(name)).then_some((owner, name))
}

/// One entry of a recursive git tree.
#[derive(Debug, Clone, Deserialize)]
pub struct TreeEntry {
    pub path: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sha: String,
    #[serde(default)]
    pub size: Option<u64>,
}

impl TreeEntry {
    pub fn is_symlink(&self) -> bool {
        self.mode == "120000"
    }
    /// Regular files and symlinks; not trees, not submodules (`commit`).
    pub fn is_file(&self) -> bool {
        self.kind == "blob"
    }
}

/// One repository, as seen through one authenticated client.
#[derive(Clone)]
pub struct GitHubRepo {
    crab: Octocrab,
    owner: String,
    name: String,
    settings: GitHubSettings,
    cancel: CancellationToken,
}

impl GitHubRepo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The repository's default branch.
    pub async fn default_branch(&self) -> Result<String, SourceError> {
        #[derive(Deserialize)]
        struct Repository {
            default_branch: String,
        }
        let repo: Repository = self
            .get_json(
                &format!("/repos/{}", self.full_name()),
                &format!("repository {}", self.full_name()),
            )
            .await?;
        Ok(repo.default_branch)
    }

    /// The full commit sha `git_ref` names now.
    pub async fn resolve(&self, git_ref: &GitRefIdentifier) -> Result<String, SourceError> {
        #[derive(Deserialize)]
        struct Commit {
            sha: String,
        }
        #[derive(Deserialize)]
        struct Branch {
            commit: Commit,
        }
        match git_ref {
            GitRefIdentifier::Branch(branch) => {
                let branch: Branch = self
                    .get_json(
                        &format!(
                            "/repos/{}/branches/{}",
                            self.full_name(),
                            encode_path(branch)
                        ),
                        &format!("branch `{branch}` of {}", self.full_name()),
                    )
                    .await?;
                Ok(branch.commit.sha)
            }
            GitRefIdentifier::Sha(sha) => {
                let commit: Commit = self
                    .get_json(
                        &format!("/repos/{}/commits/{}", self.full_name(), encode_path(sha)),
                        &format!("commit `{sha}` of {}", self.full_name()),
                    )
                    .await?;
                Ok(commit.sha)
            }
        }
    }

    /// Every file of commit `sha`, or `None` when GitHub truncated the listing
    /// (very large repositories): the caller then falls back to the archive.
    pub async fn tree(&self, sha: &str) -> Result<Option<Vec<TreeEntry>>, SourceError> {
        #[derive(Deserialize)]
        struct Tree {
            tree: Vec<TreeEntry>,
            #[serde(default)]
            truncated: bool,
        }
        let tree: Tree = self
            .get_json(
                &format!("/repos/{}/git/trees/{sha}?recursive=1", self.full_name()),
                &format!("the tree of commit {sha}"),
            )
            .await?;
        Ok((!tree.truncated).then(|| tree.tree.into_iter().filter(TreeEntry::is_file).collect()))
    }

    /// The raw bytes of one blob.
    pub async fn blob(&self, blob_sha: &str, path: &str) -> Result<Bytes, SourceError> {
        let response = self
            .get(
                &format!("/repos/{}/git/blobs/{blob_sha}", self.full_name()),
                "application/vnd.github.raw+json",
                &format!("{path} (blob {blob_sha})"),
            )
            .await?;
        let (limit, _) = crate::config::file_limit(
            path,
            self.settings.max_file_bytes,
            self.settings.max_document_bytes,
        );
        read_body(response, limit.saturating_add(1)).await
    }

    /// Streams the files of commit `sha` from its tarball: those `filter`
    /// accepts and, when `only` is given, only those paths.
    pub fn archive(
        &self,
        sha: &str,
        labels: DocumentLabels,
        filter: Arc<PathFilter>,
        only: Option<Arc<HashSet<String>>>,
    ) -> BoxStream<'static, Result<Fetched, SourceError>> {
        let (sender, receiver) = mpsc::channel::<Result<Fetched, SourceError>>(8);
        let repo = self.clone();
        let path = format!("/repos/{}/tarball/{sha}", self.full_name());
        let limits = ArchiveLimits {
            max_file_bytes: self.settings.max_file_bytes,
            max_document_bytes: self.settings.max_document_bytes,
            max_archive_bytes: self.settings.max_archive_bytes,
        };
        tokio::spawn(async move {
            let response = match repo
                .get(
                    &path,
                    "application/vnd.github+json",
                    "the repository archive",
                )
                .await
            {
                Ok(response) => response,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let body = BodyDataStream::new(response.into_body())
                .map_err(|e| std::io::Error::other(e.to_string()));
            let reader = SyncIoBridge::new(StreamReader::new(body));
            let errors = sender.clone();
            let read = tokio::task::spawn_blocking(move || {
                read_archive(reader, &limits, &labels, &filter, only.as_deref(), &sender)
            })
            .await;
            let error = match read {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(panic) => {
                    SourceError::Permanent(format!("reading the archive failed: {panic}"))
                }
            };
            let _ = errors.send(Err(error)).await;
        });
        Box::pin(futures::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        ))
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, SourceError> {
        let response = self.get(path, "application/vnd.github+json", what).await?;
        let body = read_body(response, 256 * 1024 * 1024).await?;
        serde_json::from_slice(&body).map_err(|e| {
            SourceError::Permanent(format!("GitHub sent unexpected JSON for {what}: {e}"))
        })
    }

    /// One GET with GitHub's rate limits honoured and 5xx retried with backoff.
    async fn get(
        &self,
        path: &str,
        accept: &'static str,
        what: &str,
    ) -> Result<Response<BoxBody<Bytes, octocrab::Error>>, SourceError> {
        let max_wait = Duration::from_secs(self.settings.max_rate_limit_wait_seconds);
        let mut waited = Duration::ZERO;
        let mut server_errors = 0;
        loop {
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static(accept));
            headers.insert(
                "x-github-api-version",
                HeaderValue::from_static("2022-11-28"),
            );
            let timeout = Duration::from_secs(self.settings.timeout_seconds.max(1));
            let sent =
                tokio::time::timeout(timeout, self.crab._get_with_headers(path, Some(headers)));
            let failure = match sent.await {
                Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                Ok(Ok(response)) => {
                    let status = response.status();
                    crate::metrics::request_error(
                        "github",
                        crate::metrics::status_kind(status.as_u16()),
                    );
                    let headers = response.headers().clone();
                    let body = read_body(response, 64 * 1024).await.unwrap_or_default();
                    let message = github_message(&body);
                    if let Some(wait) = rate_limit_wait(status, &headers, &message) {
                        if waited + wait > max_wait {
                            return Err(SourceError::Transient(format!(
                                "GitHub rate limit reached while fetching {what}: it lifts in \
                                 {}s, longer than this job waits; the queue retries later",
                                wait.as_secs()
                            )));
                        }
                        tracing::warn!(
                            status = status.as_u16(),
                            wait_seconds = wait.as_secs(),
                            "GitHub rate limit; waiting"
                        );
                        self.pause(wait, what).await?;
                        waited += wait;
                        continue;
                    }
                    if !status.is_server_error() {
                        return Err(classify(status, what, &message));
                    }
                    format!("GitHub answered {status} for {what}: {message}")
                }
                Ok(Err(error)) => {
                    crate::metrics::request_error("github", "connect");
                    format!("requesting {what} from GitHub: {error}")
                }
                Err(_) => {
                    crate::metrics::request_error("github", "timeout");
                    format!("requesting {what} from GitHub timed out after {timeout:?}")
                }
            };
            server_errors += 1;
            if server_errors > MAX_SERVER_ERRORS {
                return Err(SourceError::Transient(failure));
            }
            tracing::warn!(error = %failure, "retrying GitHub request");
            self.pause(Duration::from_secs(1 << (server_errors - 1)), what)
                .await?;
        }
    }

    async fn pause(&self, wait: Duration, what: &str) -> Result<(), SourceError> {
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = self.cancel.cancelled() => Err(SourceError::Transient(format!(
                "cancelled while waiting to fetch {what}"
            ))),
        }
    }
}

/// How long GitHub asks us to wait, if this response is a rate limit.
/// Primary limits say `x-ratelimit-remaining: 0` and when they reset;
/// secondary limits send `Retry-After`, or only say so in the message.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, message: &str) -> Option<Duration> {
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::FORBIDDEN {
        return None;
    }
    let number =
        |name: &str| -> Option<i64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    if let Some(seconds) = number("retry-after") {
        return Some(Duration::from_secs(seconds.max(1) as u64));
    }
    if number("x-ratelimit-remaining") == Some(0)
        && let Some(reset) = number("x-ratelimit-reset")
    {
        let now = chrono::Utc::now().timestamp();
        return Some(Duration::from_secs(
            (reset - now).clamp(1, i64::MAX) as u64 + 1,
        ));
    }
    if status == StatusCode::TOO_MANY_REQUESTS || message.to_lowercase().contains("rate limit") {
        return Some(SECONDARY_LIMIT_WAIT);
    }
    None
}

fn classify(status: StatusCode, what: &str, message: &str) -> SourceError {
    match status {
        StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => SourceError::NotFound(format!(
            "GitHub: {what} not found, or not visible to the configured credentials ({status}: {message})"
        )),
        StatusCode::UNAUTHORIZED => SourceError::Permanent(format!(
            "GitHub rejected the configured credentials while fetching {what} (401: {message})"
        )),
        StatusCode::FORBIDDEN => {
            SourceError::Permanent(format!("GitHub refused access to {what} (403: {message})"))
        }
        StatusCode::REQUEST_TIMEOUT => {
            SourceError::Transient(format!("GitHub timed out serving {what} (408)"))
        }
        _ => SourceError::Permanent(format!("GitHub answered {status} for {what}: {message}")),
    }
}

/// GitHub's `{"message": ..}`, or the start of whatever else it sent.
fn github_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
async fn read_body(
    response: Response<BoxBody<Bytes, octocrab::Error>>,
    limit: u64,
) -> Result<Bytes, SourceError> {
    let mut body = response.into_body();
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| SourceError::Transient(format!("reading a GitHub response: {e}")))?;
        if let Ok(data) = frame.into_data() {
            collected.extend_from_slice(&data);
            if collected.len() as u64 > limit {
                return Err(SourceError::Permanent(format!(
                    "a GitHub response exceeded {limit} bytes"
                )));
            }
        }
    }
    Ok(Bytes::from(collected))
}

/// Percent-encodes a ref for use as URL path segments (slashes kept: branch
/// names like `feature/x` are paths to GitHub).
fn encode_path(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The path filter a GitHub source's globs describe.
pub fn path_filter(source: &GithubSourceConfig) -> Result<PathFilter, String> {
    PathFilter::new(
        source.include_globs.as_deref(),
        source.exclude_globs.as_deref(),
    )
}

/// What every document of one sync says about where it came from.
#[derive(Debug, Clone)]
pub struct DocumentLabels {
    pub repository: String,
    /// The ref as the invocation named it (branch name or sha).
    pub git_ref: String,
    pub commit_sha: String,
}

impl DocumentLabels {
    /// The chunk metadata fields that name the synced commit; an incremental
    /// sync re-stamps unchanged chunks with exactly these.
    pub fn commit_fields(&self) -> Vec<(String, serde_json::Value)> {
        vec![
            self.ref_field(),
            ("commit_sha".to_string(), self.commit_sha.clone().into()),
        ]
    }

    /// The `ref` field: the ref as the invocation named it.
    pub fn ref_field(&self) -> (String, serde_json::Value) {
        ("ref".to_string(), self.git_ref.clone().into())
    }

    pub fn document(&self, path: String, bytes: Bytes) -> Document {
        let mut metadata = vec![("repository".to_string(), self.repository.clone().into())];
        metadata.extend(self.commit_fields());
        Document {
            key: path,
            version: self.commit_sha.clone(),
            content_type: None,
            bytes,
            metadata,
        }
    }
}

/// Why a file is not indexed, when the reason is visible before reading it.
pub fn skip_reason(entry_is_symlink: bool, size: u64, max_file_bytes: u64) -> Option<String> {
    if entry_is_symlink {
        return Some("symbolic link (not followed)".to_string());
    }
    (size > max_file_bytes)
        .then(|| format!("file is {size} bytes, over the {max_file_bytes}-byte limit"))
}

/// [`skip_reason`] with the limit for `path`: `[github] max_document_bytes`
/// for a document converted in the child, else `max_file_bytes`.
pub fn skip_reason_for(
    path: &str,
    entry_is_symlink: bool,
    size: u64,
    max_file_bytes: u64,
    max_document_bytes: u64,
) -> Option<String> {
    let (limit, _) = crate::config::file_limit(path, max_file_bytes, max_document_bytes);
    skip_reason(entry_is_symlink, size, limit)
}

struct ArchiveLimits {
    max_file_bytes: u64,
    max_document_bytes: u64,
    max_archive_bytes: u64,
}

/// Counts inflated bytes and fails the read once they pass the limit.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(std::io::Error::other("archive size limit exceeded"));
        }
        Ok(n)
    }
}

/// The repository path of an archive entry: the archive's top directory
/// (`owner-repo-sha/`) stripped. `Err` for names that escape the tree.
fn repo_path(raw: &[u8]) -> Result<Option<String>, String> {
    let name = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8".to_string())?;
    if name.starts_with('/') || name.split('/').any(|part| part == "..") {
        return Err("path escapes the repository (absolute or `..`)".to_string());
    }
    let mut parts = name.split('/').filter(|p| !p.is_empty() && *p != ".");
    parts.next();
    let path = parts.collect::<Vec<_>>().join("/");
    Ok((!path.is_empty()).then_some(path))
}

/// Reads a gzipped tarball entry by entry (blocking), sending each selected
/// file down `sender`. Holds one file at a time.
fn read_archive(
    reader: impl Read,
    limits: &ArchiveLimits,
    labels: &DocumentLabels,
    filter: &PathFilter,
    only: Option<&HashSet<String>>,
    sender: &mpsc::Sender<Result<Fetched, SourceError>>,
) -> Result<(), SourceError> {
    let exceeded = Arc::new(AtomicBool::new(false));
    let inflated = Capped {
        inner: flate2::read::GzDecoder::new(reader),
        read: 0,
        limit: limits.max_archive_bytes,
        exceeded: Arc::clone(&exceeded),
    };
    let failed = |error: std::io::Error| {
        if exceeded.load(Ordering::Relaxed) {
            SourceError::Permanent(format!(
                "the repository archive inflates beyond {} bytes (github.max_archive_bytes); \
                 refusing it as a possible decompression bomb",
                limits.max_archive_bytes
            ))
        } else {
            SourceError::Transient(format!("reading the repository archive: {error}"))
        }
    };
    let send = |item: Fetched| sender.blocking_send(Ok(item)).is_ok();
    let mut archive = tar::Archive::new(inflated);
    for entry in archive.entries().map_err(failed)? {
        let mut entry = entry.map_err(failed)?;
        let kind = entry.header().entry_type();
        let raw = entry.path_bytes().into_owned();
        let path = match repo_path(&raw) {
            Ok(Some(path)) => path,
            Ok(None) => continue,
            Err(reason) => {
                if !send(Fetched::Skipped {
                    key: String::from_utf8_lossy(&raw).into_owned(),
                    reason,
                }) {
                    return Ok(());
                }
                continue;
            }
        };
        let symlink = kind.is_symlink() || kind.is_hard_link();
        if !(kind.is_file() || symlink) {
            continue;
        }
        if !filter.accepts(&path) || only.is_some_and(|only| !only.contains(&path)) {
            continue;
        }
        let size = entry.header().size().map_err(failed)?;
        let item = match skip_reason_for(
            &path,
            symlink,
            size,
            limits.max_file_bytes,
            limits.max_document_bytes,
        ) {
            Some(reason) => Fetched::Skipped { key: path, reason },
            None => {
                let mut bytes = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut bytes).map_err(failed)?;
                Fetched::Document(labels.document(path, Bytes::from(bytes)))
            }
        };
        // The receiver is gone (job cancelled or failed): stop reading.
        if !send(item) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_lose_their_top_directory_and_never_escape() {
        assert_eq!(
            repo_path(b"o-r-abc/src/lib.rs"),
            Ok(Some("src/lib.rs".into()))
        );
        assert_eq!(repo_path(b"o-r-abc/"), Ok(None));
        assert!(repo_path(b"o-r-abc/../../etc/passwd").is_err());
        assert!(repo_path(b"/etc/passwd").is_err());
        assert!(repo_path(b"../x").is_err());
    }

    #[test]
    fn globs_match_whole_paths_and_bare_names_anywhere() {
        let filter = PathFilter::new(Some(&["src/**/*.rs".into(), "*.md".into()]), None).unwrap();
        assert!(filter.accepts("src/a/b.rs"));
        assert!(filter.accepts("src/b.rs"));
        assert!(!filter.accepts("tests/b.rs"));
        assert!(filter.accepts("docs/deep/readme.md"));
        assert!(filter.accepts("README.md"));
        let filter = PathFilter::new(None, Some(&["docs/**".into()])).unwrap();
        assert!(!filter.accepts("docs/a.md"));
        // User globs replace the defaults.
        assert!(filter.accepts("node_modules/x/index.js"));
    }

    #[test]
    fn defaults_skip_vendored_and_generated_files_only_without_user_globs() {
        let filter = PathFilter::new(None, None).unwrap();
        assert!(!filter.accepts("node_modules/x/index.js"));
        assert!(!filter.accepts("web/node_modules/x/index.js"));
        assert!(!filter.accepts("Cargo.lock"));
        assert!(!filter.accepts(".git/config"));
        assert!(filter.accepts("src/main.rs"));
        assert!(PathFilter::new(Some(&["[".into()]), None).is_err());
    }

    #[test]
    fn rate_limits_are_read_from_retry_after_and_reset_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &headers, ""),
            Some(Duration::from_secs(3))
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        let reset = (chrono::Utc::now().timestamp() + 10).to_string();
        headers.insert("x-ratelimit-reset", HeaderValue::from_str(&reset).unwrap());
        let wait = rate_limit_wait(StatusCode::FORBIDDEN, &headers, "").unwrap();
        assert!((9..=12).contains(&wait.as_secs()), "{wait:?}");
        // A plain 403 is a permission problem, not a limit.
        assert_eq!(
            rate_limit_wait(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "Resource not accessible"
            ),
            None
        );
        assert_eq!(
            rate_limit_wait(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                "You have exceeded a secondary rate limit"
            ),
            Some(SECONDARY_LIMIT_WAIT)
        );
    }

    #[test]
    fn repository_names_are_owner_slash_name() {
        assert_eq!(
            split_repository("rust-lang/cargo"),
            Some(("rust-lang", "cargo"))
        );
        assert_eq!(split_repository("a/b/c"), None);
        assert_eq!(split_repository("../b"), None);
        assert_eq!(split_repository("nobody"), None);
    }
}
