//! Configuration: one serde struct tree, defaults in code, a documented example
//! in `config/chroma-syncd.toml`, and `CHROMA_SYNCD_*` / `CHROMA_*` environment
//! overrides applied last.
//!
//! Secrets (API tokens, AWS keys, the Chroma API key) come from the
//! environment or from files named here, never from the command line, and the
//! types that hold them print as `***`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::net::AllowedOrigins;

/// Everything the daemon can be told.
/// Every key is checked: a section no module reads is refused, here
/// (`deny_unknown_fields` of each section type) or, for a top-level name
/// that is not a section of this struct, when the source kinds are built
/// (`domain::Sources::new`: it must be a kind's section).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address of the HTTP API. Env: `CHROMA_SYNCD_LISTEN`.
    pub listen: SocketAddr,
    /// Queue database and other state. Env: `CHROMA_SYNCD_STATE_DIR`.
    pub state_dir: PathBuf,
    /// Jobs processed at once by this process. Env: `CHROMA_SYNCD_WORKERS`.
    pub workers: usize,
    /// On SIGTERM, in-flight jobs get this long to finish before they are
    /// released to `pending` for another process (no new jobs are claimed
    /// meanwhile). Keep it below the supervisor's stop timeout (systemd
    /// `TimeoutStopSec`, Docker's `stop_grace_period`).
    /// Env: `CHROMA_SYNCD_SHUTDOWN_GRACE_SECONDS`.
    pub shutdown_grace_seconds: f64,
    pub chroma: ChromaConfig,
    pub embedding: EmbeddingSettings,
    pub queue: QueueSettings,
    pub api: ApiSettings,
    pub extract: ExtractSettings,
    pub webhooks: WebhookSettings,
    pub uploads: UploadSettings,
    /// AWS credentials that S3 sources refer to by `aws_credential_id`.
    /// Id `0` is reserved for the standard AWS credential chain.
    pub aws_credentials: BTreeMap<String, AwsCredentialConfig>,
    /// The source kinds' sections (`[s3]`, `[github]`, `[web]`,
    /// `[filesystem]`, …) by name, untyped: each kind defines its section's
    /// type in its folder ([`KindSection`]) and reads it when it is built
    /// ([`Config::section`]), so this module names no kind.
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
}

/// A source kind's section of the config (`[<kind>]`), defined in the
/// kind's folder and read with [`Config::section`]: its keys (serde, with
/// `deny_unknown_fields`), its environment overrides and its checks.
pub trait KindSection: serde::de::DeserializeOwned + Default {
    /// Applies the section's `CHROMA_SYNCD_<KIND>_*` overrides read
    /// through `get`.
    fn apply_env(
        &mut self,
        _get: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Checks values the types alone do not bound.
    fn check(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChromaConfig {
    /// Base URL of the Chroma server. Env: `CHROMA_URL`.
    pub url: String,
    /// Env: `CHROMA_TENANT`.
    pub tenant: String,
    /// Upper bound on records per write, below the server's own limit
    /// (Chroma Cloud accepts at most 300). The server's pre-flight limit wins
    /// when it is lower.
    pub max_batch_size: usize,
    /// Records per page of a paged read (`get` with `limit` and `offset`).
    /// Chroma has no cursor and the local server evaluates a read's `where`
    /// anew for every page, so large pages make long reads cheaper
    /// ([`DEFAULT_READ_PAGE_SIZE`], the default); Chroma Cloud returns at
    /// most 300 records a read.
    pub read_page_size: usize,
    /// Per-request timeout.
    pub timeout_seconds: u64,
    /// Sent as `x-chroma-token` (Chroma Cloud). Env only: `CHROMA_API_KEY`.
    #[serde(skip)]
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddingSettings {
    /// Directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors` of all-MiniLM-L6-v2. Env: `CHROMA_SYNCD_MODEL_DIR`.
    pub model_dir: PathBuf,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// The forward pass's operand precision. Env:
    /// `CHROMA_SYNCD_EMBEDDING_PRECISION`.
    pub precision: EmbeddingPrecision,
    /// Reuse vectors of identical inputs instead of embedding them again
    /// (a duplicate chunk in a batch, a recent job's, or one stored in the
    /// target collection; see `pipeline::reuse`).
    pub reuse_vectors: bool,
    /// Vectors the process-wide reuse cache holds (oldest out first).
    pub reuse_cache_vectors: usize,
    /// Models sources may name besides the built-in all-MiniLM-L6-v2, keyed
    /// by the name sources use (`embedding_model.model`,
    /// `embedding.dense.model`).
    pub models: BTreeMap<String, ModelConfig>,
}

/// One `[embedding.models."NAME"]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Any OpenAI-compatible `/v1/embeddings` endpoint.
    Openai(OpenAiModelConfig),
    /// A BERT-family model directory run in-process.
    Local(LocalModelConfig),
    /// A SPLADE model directory (a `BertForMaskedLM` checkpoint, e.g.
    /// `prithivida/Splade_PP_en_v1`) for sparse vectors, run in-process.
    Splade(LocalModelConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiModelConfig {
    /// Base URL up to `/v1`; requests go to `{url}/embeddings`.
    pub url: String,
    /// The name the endpoint knows; defaults to the table's key.
    #[serde(default)]
    pub api_model: Option<String>,
    /// Environment variable holding the API key (sent as a Bearer token).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Sent when set (models that can shorten their vectors).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Inputs per request.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Input tokens per request at most (counted as bytes, an upper bound),
    /// for endpoints that cap a request's total (OpenAI: 300,000).
    #[serde(default)]
    pub max_batch_tokens: Option<usize>,
    /// Requests in flight at once (for all jobs together).
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// The model's window: chunks are sized so they fit, prompt included.
    #[serde(default = "default_max_input_tokens")]
    pub max_input_tokens: usize,
    /// A `tokenizer.json` for sizing chunks exactly; without it a chunk has
    /// at most `max_input_tokens` bytes (no token is shorter than a byte).
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Per request.
    #[serde(default = "default_endpoint_timeout")]
    pub timeout_seconds: f64,
    /// Retries of one request after 429, 5xx, timeouts and dropped connections.
    #[serde(default = "default_endpoint_retries")]
    pub max_retries: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalModelConfig {
    /// `config.json`, `tokenizer.json`, `model.safetensors`, and the
    /// sentence-transformers files (`modules.json`, `1_Pooling/config.json`,
    /// `sentence_bert_config.json`, `config_sentence_transformers.json`)
    /// when the model has them.
    pub path: PathBuf,
    /// Texts per forward pass (default: `[embedding] batch_size`).
    #[serde(default)]
    pub batch_size: Option<usize>,
}

fn default_max_batch() -> usize {
    64
}
fn default_max_concurrency() -> usize {
    4
}
fn default_max_input_tokens() -> usize {
    8192
}
fn default_endpoint_timeout() -> f64 {
    60.0
}
fn default_endpoint_retries() -> u32 {
    5
}

impl EmbeddingSettings {
    /// The dense model names sources may use: the built-in model, then the
    /// config's.
    pub fn model_names(&self) -> Vec<String> {
        std::iter::once(crate::model::DEFAULT_EMBEDDING_MODEL.to_string())
            .chain(
                self.models
                    .iter()
                    .filter(|(_, model)| !matches!(model, ModelConfig::Splade(_)))
                    .map(|(name, _)| name.clone()),
            )
            .collect()
    }

    /// The sparse models (`kind = "splade"`) sources may name in
    /// `embedding.sparse.model`, besides `Chroma/BM25`.
    pub fn sparse_model_names(&self) -> Vec<String> {
        self.models
            .iter()
            .filter(|(_, model)| matches!(model, ModelConfig::Splade(_)))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

impl OpenAiModelConfig {
    /// The API key from `api_key_env`, if one is named. An empty or unset
    /// variable is an error rather than an unauthenticated endpoint.
    pub fn resolve_key(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        resolve_key_env(
            self.api_key_env.as_deref(),
            &format!("embedding.models.\"{name}\""),
        )
    }
}

/// The API key in the environment variable `variable` names, if one is
/// named; `id` is the config table errors name.
fn resolve_key_env(variable: Option<&str>, id: &str) -> Result<Option<Secret>, ConfigError> {
    let Some(variable) = variable else {
        return Ok(None);
    };
    match std::env::var(variable) {
        Ok(key) if !key.trim().is_empty() => Ok(Some(Secret::new(key.trim()))),
        _ => Err(ConfigError::Credential {
            id: id.to_string(),
            message: format!("api_key_env names {variable}, which is not set"),
        }),
    }
}

/// `auto` runs bf16 GEMMs on CPUs with AVX-512 BF16 (≈3× the f32 speed there,
/// cosine ≥ 0.9999 to the f32 vectors) and f32 elsewhere; `f32` always
/// computes the reference way; `bf16` refuses to start without the CPU support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingPrecision {
    #[default]
    Auto,
    F32,
    Bf16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// A claimed job is handed to another worker when its lease runs out
    /// without a heartbeat.
    pub lease_seconds: u64,
    /// How often a running job renews its lease and reports progress.
    pub heartbeat_seconds: u64,
    /// Attempts before a job that keeps failing transiently is `failed`.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt up to `retry_max_seconds`.
    pub retry_base_seconds: f64,
    pub retry_max_seconds: f64,
    /// How often idle workers look for work (the API also wakes them).
    pub poll_interval_ms: u64,
    /// A job running longer than this is stopped and `failed` ("timed out after …").
    pub job_timeout_seconds: u64,
    /// Pending jobs at most; beyond, creating an invocation answers 429 with
    /// `Retry-After` (backpressure instead of an ever-growing queue).
    pub max_pending_jobs: u64,
    /// Finished jobs (complete, failed, cancelled) are pruned after this many days.
    pub retention_days: u64,
    /// `postgres://…` shares one queue between processes and machines; unset,
    /// the queue is SQLite in the state directory. Env: `CHROMA_SYNCD_QUEUE_URL`
    /// (preferred: the URL may hold a password).
    #[serde(skip)]
    pub url: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Accepted `x-chroma-token` values, stored as SHA-256 hex digests.
    /// Tokens from `CHROMA_SYNCD_API_TOKENS` are added with access to every database.
    pub tokens: Vec<ApiToken>,
    /// A request's headers must arrive within this many seconds of the
    /// connection opening (or of a later request's first byte).
    pub header_read_timeout_seconds: f64,
    /// A request, its body included, must be answered within this; else 408.
    pub request_timeout_seconds: f64,
    /// A connection with no request in a handler this long (a client that
    /// stopped reading, say) is closed, and dropped 5 s later if it lingers.
    pub idle_timeout_seconds: f64,
    /// Connections served at once; beyond it new ones wait to be accepted.
    pub max_connections: usize,
    /// Cron schedules may not fire more often than this (a 400 at creation).
    pub min_schedule_interval_seconds: u64,
    /// `GET /api/v1/events` streams open at once (the dashboard holds one
    /// per open page); beyond it, 429.
    pub max_event_streams: usize,
    /// Event streams one API token may hold at once (below
    /// `max_event_streams`, so one team cannot take every slot).
    pub max_event_streams_per_token: usize,
    /// Host names (or addresses) the API answers to besides loopback ones;
    /// requests naming any other `Host` are refused (DNS rebinding). `*`
    /// allows any. Env: `CHROMA_SYNCD_ALLOWED_HOSTS` (comma-separated).
    pub allowed_hosts: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            tokens: Vec::new(),
            header_read_timeout_seconds: 10.0,
            request_timeout_seconds: 60.0,
            idle_timeout_seconds: 60.0,
            max_connections: 512,
            min_schedule_interval_seconds: 60,
            max_event_streams: 16,
            max_event_streams_per_token: 4,
            allowed_hosts: Vec::new(),
        }
    }
}

impl ApiSettings {
    /// `request_timeout_seconds` as a duration.
    pub fn request_timeout(&self) -> std::time::Duration {
        seconds(self.request_timeout_seconds)
    }

    /// `header_read_timeout_seconds` as a duration.
    pub fn header_read_timeout(&self) -> std::time::Duration {
        seconds(self.header_read_timeout_seconds)
    }

    /// `idle_timeout_seconds` as a duration.
    pub fn idle_timeout(&self) -> std::time::Duration {
        seconds(self.idle_timeout_seconds)
    }

    /// `min_schedule_interval_seconds` as a duration.
    pub fn min_schedule_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.min_schedule_interval_seconds)
    }
}

/// A duration from a config value in seconds; invalid values (negative, NaN)
/// become the smallest useful bound rather than a panic.
fn seconds(value: f64) -> std::time::Duration {
    std::time::Duration::try_from_secs_f64(value.max(0.1)).unwrap_or(std::time::Duration::MAX)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    /// Hex SHA-256 of the token (`printf %s TOKEN | sha256sum`).
    pub sha256: String,
    /// Who holds the token (`team-search`): recorded as `created_by` and
    /// `cancel_requested_by` on the invocations it creates or cancels.
    #[serde(default)]
    pub name: Option<String>,
    /// Databases this token may use; `["*"]` (the default) means all.
    #[serde(default = "all_databases")]
    pub databases: Vec<String>,
}

fn all_databases() -> Vec<String> {
    vec!["*".to_string()]
}

/// Document conversion (PDF, office files, spreadsheets, EPUB, notebooks).
/// Each document is converted by a child process with these limits; a
/// document that breaks one is skipped with the reason, and the daemon
/// carries on.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractSettings {
    /// Wall-clock time one document's conversion may take.
    pub max_seconds_per_document: f64,
    /// Text one document may produce (a decompression bomb ends here).
    pub max_extracted_bytes: u64,
    /// Address space of a converter child (`RLIMIT_AS`).
    pub max_memory_bytes: u64,
    /// Converter children at once across all jobs; `0`: one per CPU.
    pub max_concurrent: usize,
    /// The PDFium shared library PDFs are read with (`scripts/install-pdfium`
    /// puts the one from the `pypdfium2` wheel here). Without it, PDFs are
    /// skipped with the reason. Env: `CHROMA_SYNCD_PDFIUM_LIBRARY`.
    pub pdfium_library: PathBuf,
    /// Confine converter children (Landlock: no file opened; seccomp: no
    /// sockets, exec or ptrace; no new privileges). On by default; a
    /// kernel without Landlock or seccomp gets a warning, not a refusal.
    pub sandbox: bool,
    /// OCR of image files and of PDF pages without a text layer.
    pub ocr: OcrConfig,
    /// Descriptions of pictures by a vision model; unset: pictures are
    /// never sent anywhere.
    pub vision: Option<VisionConfig>,
}

/// `[extract.vision]`: an OpenAI-compatible chat-completions model that
/// describes pictures — image files (after their OCR'd text) and figures
/// inside PDF pages — so that what they show is searchable. Operator
/// configured, like `[embedding.models]` endpoints; the picture is sent
/// as a base64 PNG data URL in the message content.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionConfig {
    /// `"openai"`: the one protocol spoken.
    pub kind: VisionKind,
    /// Base URL up to `/v1` (requests go to `{url}/chat/completions`), or
    /// the full `…/chat/completions` URL.
    pub url: String,
    /// The model name the endpoint knows.
    pub api_model: String,
    /// Environment variable holding the API key (sent as a Bearer token).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Requests in flight at once, for all jobs together.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// What the model is asked about each picture.
    #[serde(default = "default_vision_prompt")]
    pub prompt: String,
    /// Smallest picture described, in pixels (width × height; 128 × 128
    /// by default): icons, bullets and rules are not worth a request.
    #[serde(default = "default_vision_min_pixels")]
    pub min_pixels: u64,
    /// Longest side of a picture as sent; larger ones are downscaled.
    #[serde(default = "default_vision_max_side")]
    pub max_side: u32,
    /// Pictures described per document at most; later ones are noted as
    /// omitted.
    #[serde(default = "default_vision_max_figures")]
    pub max_figures_per_document: usize,
    /// Per request.
    #[serde(default = "default_endpoint_timeout")]
    pub timeout_seconds: f64,
    /// Retries of one request after 429, 5xx, timeouts and dropped
    /// connections.
    #[serde(default = "default_endpoint_retries")]
    pub max_retries: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VisionKind {
    Openai,
}

fn default_vision_prompt() -> String {
    "Describe this image for search: what it shows and any text in it.".to_string()
}
fn default_vision_min_pixels() -> u64 {
    128 * 128
}
fn default_vision_max_side() -> u32 {
    1024
}
fn default_vision_max_figures() -> usize {
    32
}

impl VisionConfig {
    /// The API key from `api_key_env`, if one is named; an empty or unset
    /// variable is an error rather than an unauthenticated endpoint.
    pub fn resolve_key(&self) -> Result<Option<Secret>, ConfigError> {
        resolve_key_env(self.api_key_env.as_deref(), "extract.vision")
    }

    /// What converter children collect for it; the nonce is drawn per
    /// conversion.
    pub fn figures(&self) -> crate::extract::FigureSettings {
        crate::extract::FigureSettings {
            min_pixels: self.min_pixels,
            max_side: self.max_side.clamp(64, 4096),
            max_count: self.max_figures_per_document.min(1000),
            // A 1024-pixel PNG of a photograph is 1–2 MB.
            max_bytes: 64 << 20,
            nonce: String::new(),
        }
    }
}

/// `[extract.ocr]`: Tesseract, loaded at run time by the converter child.
/// Image files (png, jpg, webp, gif, tiff, bmp) and PDF pages without a
/// text layer are read with it; without it, images are skipped and such
/// pages omitted, each with the reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OcrConfig {
    /// `true` or `false`; unset: on when Tesseract and the languages'
    /// models are installed (the daemon logs at start which it is).
    /// Env: `CHROMA_SYNCD_OCR` (`true`/`false`).
    pub enabled: Option<bool>,
    /// The Tesseract shared library: a file name the dynamic loader finds
    /// (Debian's `libtesseract5`) or a path.
    pub library: PathBuf,
    /// The directory holding `<language>.traineddata`; unset: the first
    /// of Debian's and Tesseract's default directories that has models.
    pub tessdata_dir: Option<PathBuf>,
    /// Tesseract language codes, read together (`["deu", "eng"]`); each
    /// needs its models installed (`apt-get install tesseract-ocr-deu`).
    pub languages: Vec<String>,
    /// Resolution PDF pages are rendered at for OCR (or the resolution of
    /// the scan on the page, when lower; not below 150).
    pub dpi: u32,
    /// Largest page image in pixels: PDF pages are rendered at a lower
    /// resolution to fit; larger image files are skipped without being
    /// decoded (decompression bombs).
    pub max_pixels_per_page: u64,
    /// Time OCR may spend on one page; a slower page is left out with
    /// that reason.
    pub max_seconds_per_page: f64,
    /// Pages OCR'd per document at most (PDF pages without a text layer,
    /// TIFF pages); the rest are listed as omitted.
    pub max_pages: u32,
    /// OCR threads in one converter child; `0`: one per CPU.
    pub threads: usize,
}

impl Default for OcrConfig {
    fn default() -> Self {
        OcrConfig {
            enabled: None,
            library: PathBuf::from("libtesseract.so.5"),
            tessdata_dir: None,
            languages: vec!["eng".to_string()],
            dpi: 300,
            max_pixels_per_page: 40_000_000,
            max_seconds_per_page: 60.0,
            max_pages: 100,
            threads: 0,
        }
    }
}

/// Where Debian (`tesseract-ocr-*`) and Tesseract's own `make install`
/// put language models.
const TESSDATA_DIRS: &[&str] = &[
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
];

impl OcrConfig {
    /// The models directory: the configured one, else the first default
    /// one holding a `.traineddata` file.
    pub fn tessdata(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.tessdata_dir {
            return Some(dir.clone());
        }
        TESSDATA_DIRS
            .iter()
            .map(PathBuf::from)
            .find(|dir| !installed_languages(dir).is_empty())
    }

    /// What the converter child gets, before the library is probed: the
    /// settings, or why OCR is off.
    pub fn settings(&self) -> Result<crate::extract::OcrSettings, String> {
        if self.enabled == Some(false) {
            return Err("OCR is disabled ([extract.ocr] enabled = false)".into());
        }
        let tessdata = self.tessdata().ok_or_else(|| {
            format!(
                "no Tesseract language models found in {} (Debian: apt-get install \
                 tesseract-ocr tesseract-ocr-eng; or set [extract.ocr] tessdata_dir)",
                TESSDATA_DIRS.join(", ")
            )
        })?;
        let installed = installed_languages(&tessdata);
        let missing: Vec<&str> = self
            .languages
            .iter()
            .map(String::as_str)
            .filter(|language| !installed.iter().any(|i| i == language))
            .collect();
        if self.languages.is_empty() {
            return Err("[extract.ocr] languages is empty".into());
        }
        if !missing.is_empty() {
            return Err(format!(
                "OCR languages not installed in {}: {} (installed: {})",
                tessdata.display(),
                missing.join(", "),
                installed.join(", ")
            ));
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(crate::extract::OcrSettings {
            library: self.library.clone(),
            tessdata,
            languages: self.languages.clone(),
            dpi: self.dpi.clamp(50, 1200),
            max_pixels_per_page: self.max_pixels_per_page.max(1),
            max_millis_per_page: (self.max_seconds_per_page.max(0.001) * 1000.0) as u64,
            max_pages: self.max_pages.max(1),
            threads: if self.threads == 0 {
                cpus
            } else {
                self.threads
            },
        })
    }
}

/// The language codes whose models `tessdata` holds (`eng`, `osd`), sorted.
pub fn installed_languages(tessdata: &std::path::Path) -> Vec<String> {
    let mut languages: Vec<String> = std::fs::read_dir(tessdata)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            name.strip_suffix(".traineddata").map(str::to_string)
        })
        .collect();
    languages.sort();
    languages
}

impl Default for ExtractSettings {
    fn default() -> Self {
        ExtractSettings {
            max_seconds_per_document: 120.0,
            max_extracted_bytes: 32 * 1024 * 1024,
            max_memory_bytes: 2 * 1024 * 1024 * 1024,
            max_concurrent: 0,
            pdfium_library: cache_dir().join("chroma-syncd/pdfium/libpdfium.so"),
            sandbox: true,
            ocr: OcrConfig::default(),
            vision: None,
        }
    }
}

/// Webhooks: sources' `webhook` deliveries of finished invocations.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// The environment variable holding the key deliveries are signed with
    /// (`X-Chroma-Syncd-Signature: sha256=<HMAC-SHA256 of the body>`). While
    /// it is unset or empty, sources with a `webhook` are refused (400).
    pub signing_secret_env: String,
    /// Origins (`http://hooks.internal:8080`) webhook URLs may name even
    /// though they are internal; any other must resolve to public addresses
    /// only, checked at source creation and on every connection.
    /// Env: `CHROMA_SYNCD_WEBHOOK_ALLOWED_ORIGINS` (comma-separated; replaces
    /// the file's list).
    pub allowed_origins: AllowedOrigins,
    /// A delivery that keeps failing is retried for this long, then marked
    /// `failed`.
    pub retry_for_seconds: f64,
    /// The first retry waits this long; each next one twice as long…
    pub retry_base_seconds: f64,
    /// …but never longer than this.
    pub max_retry_interval_seconds: f64,
    /// Per-attempt timeout (connect, send, answer).
    pub timeout_seconds: f64,
    /// Deliveries sent at once by this process.
    pub max_concurrent: usize,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            signing_secret_env: "CHROMA_SYNCD_WEBHOOK_SECRET".to_string(),
            allowed_origins: AllowedOrigins::default(),
            retry_for_seconds: 24.0 * 3600.0,
            retry_base_seconds: 5.0,
            max_retry_interval_seconds: 600.0,
            timeout_seconds: 10.0,
            max_concurrent: 8,
        }
    }
}

impl WebhookSettings {
    pub fn retry_for(&self) -> std::time::Duration {
        seconds(self.retry_for_seconds)
    }
    pub fn timeout(&self) -> std::time::Duration {
        seconds(self.timeout_seconds)
    }
    /// The wait before retry number `attempt` (1 = the first retry).
    pub fn backoff(&self, attempt: u32) -> std::time::Duration {
        let factor = 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        seconds((self.retry_base_seconds * factor).min(self.max_retry_interval_seconds))
    }
}

/// `POST /api/v1/add-file` uploads.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSettings {
    /// Largest file accepted (413 above it).
    pub max_file_bytes: u64,
    /// Uploads being received at once; more get 429 with `Retry-After`.
    pub max_in_flight: usize,
    /// Uploads one API token may have in flight at once (below
    /// `max_in_flight`, so one team cannot take every slot).
    pub max_in_flight_per_token: usize,
    /// Bytes of uploads stored and not yet processed, across the daemon:
    /// an upload that would pass it is refused (429) before its body is
    /// stored.
    pub max_pending_bytes: u64,
    /// An upload is refused (507) when the state directory's filesystem
    /// would have less free space than this after storing it.
    pub min_free_bytes: u64,
    /// An upload request, its body included, must end within this (it
    /// replaces `[api] request_timeout_seconds` for this one route).
    pub request_timeout_seconds: f64,
}

impl Default for UploadSettings {
    fn default() -> Self {
        UploadSettings {
            max_file_bytes: 200 * 1024 * 1024,
            max_in_flight: 4,
            max_in_flight_per_token: 2,
            max_pending_bytes: 10 * 1024 * 1024 * 1024,
            min_free_bytes: 1024 * 1024 * 1024,
            request_timeout_seconds: 900.0,
        }
    }
}

impl UploadSettings {
    pub fn request_timeout(&self) -> std::time::Duration {
        seconds(self.request_timeout_seconds)
    }
}

/// Keys for one `aws_credential_id`, each read from an environment variable
/// or a file (e.g. a systemd credential), never written in the config itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentialConfig {
    pub access_key_id_env: Option<String>,
    pub access_key_id_file: Option<PathBuf>,
    pub secret_access_key_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub session_token_env: Option<String>,
    /// Databases whose sources may use these keys; absent means every database.
    pub databases: Option<Vec<String>>,
}

/// Whether a credential bound to `databases` (absent: all; `"*"`: all) may
/// be used by a source of `database`.
pub fn binds(databases: Option<&[String]>, database: &str) -> bool {
    databases.is_none_or(|list| list.iter().any(|d| d == "*" || d == database))
}

/// A secret string that never prints.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    #[error("{id}: {message}")]
    Credential { id: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("config section [{name}]: {message}")]
    Section { name: String, message: String },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8420".parse().expect("valid default address"),
            state_dir: default_state_dir(),
            workers: 2,
            shutdown_grace_seconds: 20.0,
            chroma: ChromaConfig::default(),
            embedding: EmbeddingSettings::default(),
            queue: QueueSettings::default(),
            api: ApiSettings::default(),
            extract: ExtractSettings::default(),
            webhooks: WebhookSettings::default(),
            uploads: UploadSettings::default(),
            aws_credentials: BTreeMap::new(),
            sections: BTreeMap::new(),
        }
    }
}

/// Records per page of a paged read of Chroma (`sink::chroma`'s `scan`)
/// unless `[chroma] read_page_size` says otherwise.
///
/// Chroma has no cursor: every page is a `get` with an `offset`, and the
/// local server evaluates the `where` over every record it meets before it
/// skips to the offset, so a page costs a fixed part in proportion to the
/// records the filter meets plus a part per record returned. Measured on
/// the real server holding 300,000 records (Intel Xeon, `bench/chroma_pages.py
/// --fill`), a page of one source's chunks (270,000 of them) cost 496 ms at
/// 1,000 records, 1,348 ms at 10,000: a whole-source read at 10,000 a
/// page costs a quarter of what it did at 1,000. Larger pages gain little
/// more (2,052 ms at 20,000) and hold more in memory: a page of chunk
/// metadata is a few megabytes at 10,000. (Chroma refuses a page of 50,000
/// outright: "too many SQL variables".)
pub const DEFAULT_READ_PAGE_SIZE: usize = 10_000;

/// The largest `[chroma] read_page_size` accepted: Chroma's local server
/// answered pages of 30,000 and refused 50,000 ("too many SQL variables").
pub const MAX_READ_PAGE_SIZE: usize = 30_000;

impl Default for ChromaConfig {
    fn default() -> Self {
        ChromaConfig {
            url: "http://127.0.0.1:8000".to_string(),
            tenant: "default_tenant".to_string(),
            max_batch_size: 300,
            read_page_size: DEFAULT_READ_PAGE_SIZE,
            timeout_seconds: 60,
            api_key: None,
        }
    }
}

impl Default for EmbeddingSettings {
    fn default() -> Self {
        EmbeddingSettings {
            model_dir: default_model_dir(),
            batch_size: 32,
            precision: EmbeddingPrecision::Auto,
            reuse_vectors: true,
            reuse_cache_vectors: 4096,
            models: BTreeMap::new(),
        }
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            lease_seconds: 45,
            heartbeat_seconds: 5,
            max_attempts: 5,
            retry_base_seconds: 2.0,
            retry_max_seconds: 300.0,
            poll_interval_ms: 500,
            job_timeout_seconds: 6 * 3600,
            max_pending_jobs: 100_000,
            retention_days: 30,
            url: None,
        }
    }
}

/// Largest document (PDF, Office, …) a GitHub or filesystem source reads by
/// default: Chroma Sync takes 200 MB files, and real PDFs are rarely under
/// the 1 MiB text-file limit.
pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 200 * 1024 * 1024;

/// The size limit for a file named `path`: `max_document_bytes` for a
/// document converted in the child, else `max_file_bytes`; with the
/// setting's name, for skip reasons.
pub fn file_limit(path: &str, max_file_bytes: u64, max_document_bytes: u64) -> (u64, &'static str) {
    if crate::extract::document_format(path, None).is_some() {
        (max_document_bytes, "max_document_bytes")
    } else {
        (max_file_bytes, "max_file_bytes")
    }
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$XDG_STATE_HOME/chroma-syncd`, else `~/.local/state/chroma-syncd`.
fn default_state_dir() -> PathBuf {
    match std::env::var_os("XDG_STATE_HOME") {
        Some(dir) => PathBuf::from(dir).join("chroma-syncd"),
        None => home_dir().join(".local/state/chroma-syncd"),
    }
}

/// `$XDG_CACHE_HOME/chroma-syncd/models/all-MiniLM-L6-v2`, else under `~/.cache`:
/// where `scripts/install-model` unpacks the model.
fn default_model_dir() -> PathBuf {
    cache_dir().join("chroma-syncd/models/all-MiniLM-L6-v2")
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
fn cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => home_dir().join(".cache"),
    }
}

impl Config {
    /// Reads `path` (or the embedded defaults when `None`), then applies the
    /// environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_path_buf(),
                    source: Box::new(source),
                })?
            }
            None => Config::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.check()?;
        Ok(config)
    }

    /// Applies `CHROMA_SYNCD_*` and `CHROMA_*` overrides read through `get`.
    pub fn apply_env(
        &mut self,
        get: impl Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(listen) = get("CHROMA_SYNCD_LISTEN") {
            self.listen = listen.parse().map_err(|_| ConfigError::Env {
                name: "CHROMA_SYNCD_LISTEN",
                message: format!("`{listen}` is not a host:port socket address"),
            })?;
        }
        if let Some(dir) = get("CHROMA_SYNCD_STATE_DIR") {
            self.state_dir = PathBuf::from(dir);
        }
        if let Some(tokens) = get("CHROMA_SYNCD_API_TOKENS") {
            for token in tokens.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                self.api.tokens.push(ApiToken {
                    sha256: sha256_hex(token.as_bytes()),
                    name: None,
                    databases: all_databases(),
                });
            }
        }
        if let Some(hosts) = get("CHROMA_SYNCD_ALLOWED_HOSTS") {
            self.api.allowed_hosts = hosts
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(str::to_string)
                .collect();
        }
        if let Some(url) = get("CHROMA_URL") {
            self.chroma.url = url;
        }
        if let Some(tenant) = get("CHROMA_TENANT") {
            self.chroma.tenant = tenant;
        }
        if let Some(key) = get("CHROMA_API_KEY").filter(|k| !k.is_empty()) {
            self.chroma.api_key = Some(Secret::new(key));
        }
        if let Some(dir) = get("CHROMA_SYNCD_MODEL_DIR") {
            self.embedding.model_dir = PathBuf::from(dir);
        }
        if let Some(reuse) = get("CHROMA_SYNCD_EMBEDDING_REUSE") {
            self.embedding.reuse_vectors = match reuse.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CHROMA_SYNCD_EMBEDDING_REUSE",
                        message: format!("`{reuse}` is not true or false"),
                    });
                }
            };
        }
        if let Some(precision) = get("CHROMA_SYNCD_EMBEDDING_PRECISION") {
            self.embedding.precision = match precision.trim().to_ascii_lowercase().as_str() {
                "auto" | "" => EmbeddingPrecision::Auto,
                "f32" => EmbeddingPrecision::F32,
                "bf16" => EmbeddingPrecision::Bf16,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CHROMA_SYNCD_EMBEDDING_PRECISION",
                        message: format!("`{precision}` is not auto, f32 or bf16"),
                    });
                }
            };
        }
        if let Some(library) = get("CHROMA_SYNCD_PDFIUM_LIBRARY").filter(|l| !l.is_empty()) {
            self.extract.pdfium_library = PathBuf::from(library);
        }
        if let Some(ocr) = get("CHROMA_SYNCD_OCR").filter(|v| !v.trim().is_empty()) {
            self.extract.ocr.enabled = Some(match ocr.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                other => {
                    return Err(ConfigError::Env {
                        name: "CHROMA_SYNCD_OCR",
                        message: format!("`{other}` is not true or false"),
                    });
                }
            });
        }
        if let Some(origins) = get("CHROMA_SYNCD_WEBHOOK_ALLOWED_ORIGINS") {
            self.webhooks.allowed_origins =
                AllowedOrigins::parse(origins.split(',')).map_err(|message| ConfigError::Env {
                    name: "CHROMA_SYNCD_WEBHOOK_ALLOWED_ORIGINS",
                    message,
                })?;
        }
        if let Some(url) = get("CHROMA_SYNCD_QUEUE_URL").filter(|u| !u.trim().is_empty()) {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(ConfigError::Env {
                    name: "CHROMA_SYNCD_QUEUE_URL",
                    message: "only postgres:// URLs are supported (unset it for SQLite)".into(),
                });
            }
            self.queue.url = Some(Secret::new(url));
        }
        if let Some(grace) = get("CHROMA_SYNCD_SHUTDOWN_GRACE_SECONDS") {
            self.shutdown_grace_seconds = grace
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| ConfigError::Env {
                    name: "CHROMA_SYNCD_SHUTDOWN_GRACE_SECONDS",
                    message: format!("`{grace}` is not a number of seconds"),
                })?;
        }
        if let Some(workers) = get("CHROMA_SYNCD_WORKERS") {
            self.workers = workers
                .parse()
                .ok()
                .filter(|n: &usize| *n > 0)
                .ok_or_else(|| ConfigError::Env {
                    name: "CHROMA_SYNCD_WORKERS",
                    message: format!("`{workers}` is not a positive integer"),
                })?;
        }
        Ok(())
    }

    /// Checks values the types alone do not bound.
    pub fn check(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_READ_PAGE_SIZE).contains(&self.chroma.read_page_size) {
            return Err(ConfigError::Invalid {
                key: "chroma.read_page_size",
                message: format!(
                    "{} is not between 1 and {MAX_READ_PAGE_SIZE} records (Chroma's local server \
                     refuses larger pages; Chroma Cloud returns at most 300)",
                    self.chroma.read_page_size
                ),
            });
        }
        let seconds = self.extract.max_seconds_per_document;
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(ConfigError::Invalid {
                key: "extract.max_seconds_per_document",
                message: format!("{seconds} is not a positive number of seconds"),
            });
        }
        if self.extract.max_memory_bytes < 64 * 1024 * 1024 {
            // The converter binary itself maps more than this.
            return Err(ConfigError::Invalid {
                key: "extract.max_memory_bytes",
                message: "must be at least 64 MiB (67108864)".to_string(),
            });
        }
        for (name, model) in &self.embedding.models {
            let invalid = |message: String| ConfigError::Credential {
                id: format!("embedding.models.\"{name}\""),
                message,
            };
            if name == crate::model::DEFAULT_EMBEDDING_MODEL {
                return Err(invalid(
                    "is the built-in model; use [embedding] model_dir".into(),
                ));
            }
            if name.trim().is_empty() || name.len() > 256 {
                return Err(invalid("a model name has 1 to 256 characters".into()));
            }
            if let ModelConfig::Openai(endpoint) = model {
                let url = url::Url::parse(&endpoint.url)
                    .map_err(|e| invalid(format!("url `{}`: {e}", endpoint.url)))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(format!("url `{}` is not http(s)", endpoint.url)));
                }
                if endpoint.max_batch == 0 || endpoint.max_concurrency == 0 {
                    return Err(invalid(
                        "max_batch and max_concurrency must be positive".into(),
                    ));
                }
                if endpoint.max_input_tokens < 16 {
                    return Err(invalid("max_input_tokens must be at least 16".into()));
                }
                if !(endpoint.timeout_seconds.is_finite() && endpoint.timeout_seconds > 0.0) {
                    return Err(invalid("timeout_seconds must be positive".into()));
                }
            }
        }
        if let Some(vision) = &self.extract.vision {
            let invalid = |message: String| ConfigError::Credential {
                id: "extract.vision".into(),
                message,
            };
            let url = url::Url::parse(&vision.url)
                .map_err(|e| invalid(format!("url `{}`: {e}", vision.url)))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(invalid(format!("url `{}` is not http(s)", vision.url)));
            }
            if vision.max_concurrency == 0 || vision.api_model.trim().is_empty() {
                return Err(invalid(
                    "max_concurrency must be positive and api_model named".into(),
                ));
            }
            if !(vision.timeout_seconds.is_finite() && vision.timeout_seconds > 0.0) {
                return Err(invalid("timeout_seconds must be positive".into()));
            }
            if vision.prompt.trim().is_empty() || vision.prompt.len() > 4096 {
                return Err(invalid("prompt has 1 to 4096 bytes".into()));
            }
        }
        for token in &self.api.tokens {
            if let Some(name) = &token.name
                && (name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c)))
            {
                return Err(ConfigError::Invalid {
                    key: "api.tokens.name",
                    message: format!(
                        "`{name}`: a token name has 1 to 64 letters, digits or `-_.@:`"
                    ),
                });
            }
        }
        if self.uploads.max_in_flight == 0 || self.uploads.max_file_bytes == 0 {
            return Err(ConfigError::Invalid {
                key: "uploads",
                message: "max_file_bytes and max_in_flight must be positive".to_string(),
            });
        }
        // A worker stops its attempt when it has not renewed by the lease
        // minus a margin; a heartbeat that comes later than that (plus one
        // renewal's time) would stop every job that runs longer.
        let queue = &self.queue;
        let keep = queue.lease() - queue.lease_margin();
        if queue.heartbeat() + queue.renewal_timeout() >= keep {
            let most = keep.saturating_sub(queue.renewal_timeout());
            return Err(ConfigError::Invalid {
                key: "queue.heartbeat_seconds",
                message: format!(
                    "a heartbeat every {} s cannot renew a {} s lease in time; use at most {:.1} \
                     s, or a longer queue.lease_seconds",
                    queue.heartbeat_seconds,
                    queue.lease_seconds,
                    most.as_secs_f64()
                ),
            });
        }
        Ok(())
    }

    /// How long in-flight jobs may run on after a shutdown signal.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.shutdown_grace_seconds).unwrap_or(Duration::ZERO)
    }

    pub fn queue_path(&self) -> PathBuf {
        self.state_dir.join("queue.sqlite3")
    }

    /// Source kind section `name` as the file gives it (defaults for what
    /// it leaves out), with the process environment's overrides, checked.
    pub fn section<T: KindSection>(&self, name: &str) -> Result<T, ConfigError> {
        self.section_with_env(name, &|variable| std::env::var(variable).ok())
    }

    /// Section `name` of a config file's `text`, without the environment:
    /// what the kinds' tests of their sections read.
    #[cfg(test)]
    pub(crate) fn section_of_toml<T: KindSection>(
        text: &str,
        name: &str,
    ) -> Result<T, ConfigError> {
        let config: Config = toml::from_str(text).expect("the TOML of a config");
        config.section_with_env(name, &|_| None)
    }

    /// [`Config::section`] with the environment read through `get`.
    pub fn section_with_env<T: KindSection>(
        &self,
        name: &str,
        get: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<T, ConfigError> {
        let mut section = match self.sections.get(name) {
            None => T::default(),
            Some(value) => {
                value
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| ConfigError::Section {
                        name: name.to_string(),
                        message: e.message().to_string(),
                    })?
            }
        };
        section.apply_env(get)?;
        section.check()?;
        Ok(section)
    }
}

impl ExtractSettings {
    /// How the daemon runs converters: `program` is its own executable;
    /// `ocr` the OCR settings the children get, or why OCR is off
    /// ([`OcrConfig::settings`], then probed by
    /// [`crate::extract::isolate::probe_ocr`]).
    pub fn isolation(
        &self,
        program: PathBuf,
        ocr: Result<crate::extract::OcrSettings, String>,
    ) -> crate::extract::isolate::IsolationSettings {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (ocr, ocr_off) = match ocr {
            Ok(settings) => (Some(settings), None),
            Err(why) => (
                None,
                Some(format!("image files are read by OCR, which is off: {why}")),
            ),
        };
        crate::extract::isolate::IsolationSettings {
            program,
            ocr_off,
            limits: crate::extract::Limits {
                max_extracted_bytes: usize::try_from(self.max_extracted_bytes)
                    .unwrap_or(usize::MAX),
                pdfium_library: Some(self.pdfium_library.clone()),
                ocr,
                figures: self.vision.as_ref().map(VisionConfig::figures),
            },
            max_seconds: self.max_seconds_per_document,
            max_memory_bytes: self.max_memory_bytes,
            max_concurrent: if self.max_concurrent == 0 {
                cpus
            } else {
                self.max_concurrent
            },
            sandbox: self.sandbox,
        }
    }
}

impl QueueSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(1))
    }
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds.max(1))
    }
    /// How long before its lease could end a worker that has not renewed it
    /// stops its attempt: a fifth of the lease, at least a second (a lease of
    /// a second or less gets half of it).
    pub fn lease_margin(&self) -> Duration {
        let lease = self.lease();
        (lease / 5).max(Duration::from_secs(1)).min(lease / 2)
    }
    /// How long one renewal (or outcome write) may take before it is given
    /// up and tried again: half of what is left of the lease after the
    /// margin, so at least two tries fit before the worker must stop.
    pub fn renewal_timeout(&self) -> Duration {
        (self.lease() - self.lease_margin()) / 2
    }
    pub fn job_timeout(&self) -> Duration {
        Duration::from_secs(self.job_timeout_seconds.max(1))
    }
    /// Delay before retry number `attempt` (1-based): base·2^(attempt-1), capped.
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30) as i32;
        let seconds = (self.retry_base_seconds * 2f64.powi(exponent)).min(self.retry_max_seconds);
        Duration::from_secs_f64(seconds.max(0.0))
    }
}

pub(crate) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim().to_string()))
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

impl AwsCredentialConfig {
    /// Reads the keys from their env vars or files.
    pub fn resolve(&self, id: &str) -> Result<(Secret, Secret, Option<Secret>), ConfigError> {
        let read = |env: &Option<String>, file: &Option<PathBuf>, what: &str| {
            if let Some(name) = env {
                return std::env::var(name)
                    .map(Secret::new)
                    .map_err(|_| ConfigError::Credential {
                        id: format!("aws credential {id}"),
                        message: format!("{what}: environment variable {name} is not set"),
                    });
            }
            if let Some(path) = file {
                return read_secret_file(path).map_err(|e| ConfigError::Credential {
                    id: format!("aws credential {id}"),
                    message: format!("{what}: {e}"),
                });
            }
            Err(ConfigError::Credential {
                id: format!("aws credential {id}"),
                message: format!("{what}: neither an _env nor a _file setting is given"),
            })
        };
        let access = read(
            &self.access_key_id_env,
            &self.access_key_id_file,
            "access key id",
        )?;
        let secret = read(
            &self.secret_access_key_env,
            &self.secret_access_key_file,
            "secret access key",
        )?;
        let session = self
            .session_token_env
            .as_ref()
            .and_then(|name| std::env::var(name).ok())
            .map(Secret::new);
        Ok((access, secret, session))
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_win_over_defaults() {
        let mut config = Config::default();
        let env = |name: &'static str| match name {
            "CHROMA_SYNCD_LISTEN" => Some("0.0.0.0:9999".to_string()),
            "CHROMA_SYNCD_WORKERS" => Some("7".to_string()),
            "CHROMA_SYNCD_API_TOKENS" => Some("a, b".to_string()),
            "CHROMA_API_KEY" => Some("ck-secret".to_string()),
            _ => None,
        };
        config.apply_env(env).unwrap();
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.workers, 7);
        assert_eq!(config.api.tokens.len(), 2);
        assert_eq!(config.api.tokens[0].sha256, sha256_hex(b"a"));
        assert_eq!(format!("{:?}", config.chroma.api_key), "Some(***)");
    }

    #[test]
    fn a_read_page_chroma_would_refuse_is_a_clear_error() {
        let mut config = Config::default();
        config.check().unwrap();
        for refused in [0, MAX_READ_PAGE_SIZE + 1] {
            config.chroma.read_page_size = refused;
            let err = config.check().unwrap_err().to_string();
            assert!(err.contains("chroma.read_page_size"), "{err}");
        }
        config.chroma.read_page_size = 300;
        config.check().unwrap();
    }

    #[test]
    fn bad_worker_count_is_a_clear_error() {
        let mut config = Config::default();
        let err = config
            .apply_env(|name| (name == "CHROMA_SYNCD_WORKERS").then(|| "zero".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("CHROMA_SYNCD_WORKERS"));
    }

    #[test]
    fn embedding_models_are_named_tables_of_a_kind() {
        let config: Config = toml::from_str(
            "[embedding.models.\"Qwen/Qwen3-Embedding-0.6B\"]\nkind = \"openai\"\n\
             url = \"http://gpu-pool:8000/v1\"\napi_key_env = \"K\"\ndimensions = 1024\n\
             [embedding.models.\"BAAI/bge-small-en-v1.5\"]\nkind = \"local\"\n\
             path = \"/models/bge\"\n",
        )
        .unwrap();
        config.check().unwrap();
        match &config.embedding.models["Qwen/Qwen3-Embedding-0.6B"] {
            ModelConfig::Openai(endpoint) => {
                assert_eq!(endpoint.dimensions, Some(1024));
                assert_eq!(endpoint.max_batch, 64);
                assert_eq!(endpoint.max_input_tokens, 8192);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            config.embedding.models["BAAI/bge-small-en-v1.5"],
            ModelConfig::Local(_)
        ));
        for bad in [
            "[embedding.models.m]\nkind = \"gpu\"\n",
            "[embedding.models.m]\nkind = \"openai\"\nurl = \"http://x/v1\"\nspeed = 1\n",
            "[embedding.models.m]\nkind = \"local\"\n",
        ] {
            assert!(toml::from_str::<Config>(bad).is_err(), "{bad}");
        }
        let config: Config =
            toml::from_str("[embedding.models.m]\nkind = \"openai\"\nurl = \"file:///x\"\n")
                .unwrap();
        assert!(config.check().is_err());
    }

    #[test]
    fn embedding_precision_comes_from_the_file_or_the_environment() {
        let config: Config = toml::from_str("[embedding]\nprecision = \"f32\"\n").unwrap();
        assert_eq!(config.embedding.precision, EmbeddingPrecision::F32);
        assert!(toml::from_str::<Config>("[embedding]\nprecision = \"fp8\"\n").is_err());
        let mut config = Config::default();
        assert_eq!(config.embedding.precision, EmbeddingPrecision::Auto);
        config
            .apply_env(|name| {
                (name == "CHROMA_SYNCD_EMBEDDING_PRECISION").then(|| " BF16 ".to_string())
            })
            .unwrap();
        assert_eq!(config.embedding.precision, EmbeddingPrecision::Bf16);
        let err = config
            .apply_env(|name| {
                (name == "CHROMA_SYNCD_EMBEDDING_PRECISION").then(|| "int4".to_string())
            })
            .unwrap_err();
        assert!(
            err.to_string().contains("CHROMA_SYNCD_EMBEDDING_PRECISION"),
            "{err}"
        );
        assert!(err.to_string().contains("auto, f32 or bf16"), "{err}");
    }

    #[test]
    fn a_heartbeat_too_slow_for_its_lease_is_refused() {
        let config: Config =
            toml::from_str("[queue]\nlease_seconds = 10\nheartbeat_seconds = 10\n").unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains("queue.heartbeat_seconds"), "{err}");
        Config::default().check().unwrap();
        let config: Config =
            toml::from_str("[queue]\nlease_seconds = 4\nheartbeat_seconds = 1\n").unwrap();
        config.check().unwrap();
    }

    #[test]
    fn a_renewal_times_out_and_the_worker_stops_within_the_lease() {
        for (lease, heartbeat) in [(1, 1), (4, 1), (10, 1), (45, 5), (600, 30)] {
            let settings = QueueSettings {
                lease_seconds: lease,
                heartbeat_seconds: heartbeat,
                ..QueueSettings::default()
            };
            let (lease, margin) = (settings.lease(), settings.lease_margin());
            assert!(margin > Duration::ZERO && margin <= lease / 2, "{lease:?}");
            assert!(
                settings.renewal_timeout() * 2 + margin <= lease,
                "{lease:?}"
            );
        }
    }

    #[test]
    fn retry_delay_doubles_and_caps() {
        let settings = QueueSettings {
            retry_base_seconds: 1.0,
            retry_max_seconds: 5.0,
            ..QueueSettings::default()
        };
        assert_eq!(settings.retry_delay(1), Duration::from_secs(1));
        assert_eq!(settings.retry_delay(2), Duration::from_secs(2));
        assert_eq!(settings.retry_delay(3), Duration::from_secs(4));
        assert_eq!(settings.retry_delay(9), Duration::from_secs(5));
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/chroma-syncd.toml");
        let config = Config::load(Some(&path)).expect("example config parses");
        assert!(config.workers > 0);
    }
}
