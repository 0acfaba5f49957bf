//! Wire types: the JSON that crosses the HTTP API.
//!
//! These types *are* the API contract. The invocation endpoints follow Chroma
//! Sync's published OpenAPI documents exactly (`shared/seeds/000…002`); the
//! source endpoints follow its `sync.openapi.json`. Anything we add is an extra
//! optional field, never a change to an upstream field, so every upstream
//! client keeps working.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// The default (and, in-process, the only) dense embedding model.
pub const DEFAULT_EMBEDDING_MODEL: &str = "sentence-transformers/all-MiniLM-L6-v2";
/// The sparse function computed without a model directory: Chroma's BM25.
pub const BM25_MODEL: &str = "Chroma/BM25";
/// The SPLADE model Chroma Sync names; ours runs when the config defines its
/// directory (`kind = "splade"`).
pub const SPLADE_MODEL: &str = "prithivida/Splade_PP_en_v1";

/// JSON with every object's keys sorted, so equal values hash equally
/// whatever key order a client sent (serde_json may preserve insertion order).
pub fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.clone(), sorted(value)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// `{"error": "<machine_code>", "message": "<human text>"}` — every non-2xx body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorResponse {
    pub error: String,
    pub message: String,
}

// ---------------------------------------------------------------- sources

/// Body of `POST /api/v1/sources`: exactly one field naming the source's
/// kind (`github`, `web_scrape`, `s3`, `filesystem`: whatever kinds the
/// registry has) with its settings, and the settings every kind shares.
///
/// The kind's field is carried untyped ([`KindSettings`]): the registry
/// (`domain::SourceSpec`) parses it into the kind's own settings
/// type, defined in the kind's folder, and gives "none given", "two given"
/// and an unknown field their precise 400 messages. So this layer names no
/// kind, and adding one touches nothing here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CreateSourcePayload {
    /// Every field not declared below: the kind's settings (and anything
    /// unknown, which the registry refuses before anything is stored).
    #[serde(flatten)]
    #[schema(ignore)]
    pub kind: KindSettings,
    /// Chroma database the source's collections live in.
    pub database_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<ChunkingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
    /// Older single-model form of `embedding.dense`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<EmbeddingModel>,
    /// Extension (seed 004): invoke this source on a cron schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<SourceSchedule>,
    /// Extension: POST each finished invocation's Job JSON to this URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Extension: a sync of this source refuses to remove more than this
    /// share (0–1) of its stored documents at once; default 0.9 (web
    /// sources: `[web] max_removal_fraction`). A listing that finds
    /// nothing never removes everything, whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removal_fraction: Option<f64>,
    /// Extension: how OCR reads this source's image files and scanned
    /// pages (its languages), instead of `[extract.ocr]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr: Option<SourceOcrConfig>,
}

/// A source's kind and its settings as the wire carries them: the one
/// field named for the kind (`"s3": {…}`), untyped. Only the registry
/// (`domain::registry`) reads or writes it, with the kind's settings type.
///
/// Values are [`OrderedJson`] rather than `serde_json::Value`, whose
/// objects sort their keys: the registry writes a kind's settings from its
/// typed struct, so `GET /sources` keeps the fields in the struct's order,
/// byte for byte as when the field was typed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindSettings(pub Vec<(String, OrderedJson)>);

impl KindSettings {
    /// One kind's field holding `settings`.
    pub fn of(field: &str, settings: &impl Serialize) -> serde_json::Result<Self> {
        let value = serde_json::from_str(&serde_json::to_string(settings)?)?;
        Ok(KindSettings(vec![(field.to_string(), value)]))
    }

    /// The value of the field named `field`, if present.
    pub fn get(&self, field: &str) -> Option<&OrderedJson> {
        self.0
            .iter()
            .find(|(name, _)| name == field)
            .map(|(_, value)| value)
    }
}

impl Serialize for KindSettings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_entries(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for KindSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match OrderedJson::deserialize(deserializer)? {
            OrderedJson::Object(fields) => Ok(KindSettings(fields)),
            _ => Err(serde::de::Error::custom("expected an object")),
        }
    }
}

/// JSON that keeps an object's keys in the order they were written (a
/// `serde_json::Value` sorts them): what [`KindSettings`] carries.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderedJson {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<OrderedJson>),
    Object(Vec<(String, OrderedJson)>),
}

impl OrderedJson {
    /// The same JSON as a `serde_json::Value` (keys sorted), to read it
    /// into a typed struct.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

fn serialize_entries<S: serde::Serializer>(
    entries: &[(String, OrderedJson)],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(entries.len()))?;
    for (key, value) in entries {
        map.serialize_entry(key, value)?;
    }
    map.end()
}

impl Serialize for OrderedJson {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            OrderedJson::Null => serializer.serialize_unit(),
            OrderedJson::Bool(value) => serializer.serialize_bool(*value),
            OrderedJson::Number(value) => value.serialize(serializer),
            OrderedJson::String(value) => serializer.serialize_str(value),
            OrderedJson::Array(items) => serializer.collect_seq(items),
            OrderedJson::Object(entries) => serialize_entries(entries, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for OrderedJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedJsonVisitor)
    }
}

struct OrderedJsonVisitor;

impl<'de> serde::de::Visitor<'de> for OrderedJsonVisitor {
    type Value = OrderedJson;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Number(value.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<OrderedJson, E> {
        serde_json::Number::from_f64(value)
            .map(OrderedJson::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, value: &str) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(value.to_string()))
    }

    fn visit_string<E>(self, value: String) -> Result<OrderedJson, E> {
        Ok(OrderedJson::String(value))
    }

    fn visit_unit<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_none<E>(self) -> Result<OrderedJson, E> {
        Ok(OrderedJson::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, inner: D) -> Result<OrderedJson, D::Error> {
        OrderedJson::deserialize(inner)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<OrderedJson, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(OrderedJson::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderedJson, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, OrderedJson>()? {
            entries.push(entry);
        }
        Ok(OrderedJson::Object(entries))
    }
}

/// A source's own OCR settings (issue 32).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SourceOcrConfig {
    /// Tesseract language codes read together (`["deu", "eng"]`), instead
    /// of `[extract.ocr] languages`; each must be installed on the daemon
    /// (`tesseract-ocr-deu`), which a source naming another is refused for.
    pub languages: Vec<String>,
}

/// Where and for which outcomes a source's finished invocations are
/// announced. Deliveries are signed, durable and retried (`[webhooks]`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` (or `http://…`); public addresses only unless its origin
    /// is in `[webhooks] allowed_origins`.
    pub url: String,
    /// Which outcomes are sent; default all three.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<WebhookEvent>>,
}

impl WebhookConfig {
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events
            .as_ref()
            .is_none_or(|events| events.contains(&event))
    }
}

/// A webhook event: how an invocation finished.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum WebhookEvent {
    Complete,
    Failed,
    Cancelled,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Complete => "complete",
            WebhookEvent::Failed => "failed",
            WebhookEvent::Cancelled => "cancelled",
        }
    }

    /// The event of a finished job; `None` while it is pending or processing.
    pub fn of(status: &JobStatus) -> Option<Self> {
        match status {
            JobStatus::Complete { .. } => Some(WebhookEvent::Complete),
            JobStatus::Failed { .. } => Some(WebhookEvent::Failed),
            JobStatus::Cancelled => Some(WebhookEvent::Cancelled),
            JobStatus::Pending | JobStatus::Processing => None,
        }
    }
}

/// One webhook delivery as `GET /api/v1/sources/{id}/webhook/deliveries`
/// lists it (extension).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct WebhookDelivery {
    /// Sent as `X-Chroma-Syncd-Delivery`; the same on every retry.
    pub id: Uuid,
    pub invocation_id: Uuid,
    pub event: WebhookEvent,
    pub state: DeliveryState,
    pub attempts: u32,
    /// The last attempt's HTTP status, if the receiver answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Every attempt's answer, oldest first (the last 20).
    pub responses: Vec<DeliveryAttempt>,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Where a webhook delivery stands; stored (`webhook_deliveries.state`)
/// and sent as its lower-case name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// An attempt is being made (the delivery is leased).
    Delivering,
    Delivered,
    /// Gave up after `[webhooks] retry_for_seconds`.
    Failed,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivering,
        DeliveryState::Delivered,
        DeliveryState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// A state equals its name (`state == "delivered"`), as when it was a string.
impl PartialEq<&str> for DeliveryState {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

/// One attempt of a webhook delivery.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// The receiver's status code; absent when it could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /api/v1/sources/{source_id}/webhook/deliveries` (extension).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookDeliveries {
    pub deliveries: Vec<WebhookDelivery>,
}

/// When and how a source is invoked on its own (`trigger: scheduled`). A slot
/// fires once however many daemons share the queue, and is skipped while the
/// source's previous run is still pending or processing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceSchedule {
    /// Five fields (`*/15 * * * *`, minute granularity), six with seconds
    /// first, or an alias such as `@hourly`.
    pub cron: String,
    /// IANA time zone the cron fields are read in. Default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Collection the scheduled invocations write: required for GitHub and
    /// web sources; S3 sources default to their own `collection_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_collection_name: Option<String>,
    /// GitHub: branch to sync at each slot (default: the default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// One fired (or skipped) slot of a source's schedule.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct ScheduleSlot {
    /// The slot's time (UTC).
    pub slot: DateTime<Utc>,
    /// `claimed` (being enqueued), `enqueued`, `skipped` (the previous run
    /// was still going) or `failed` (with `message`).
    pub outcome: SlotOutcome,
    /// Invocations enqueued for the slot.
    pub jobs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// What became of a schedule slot; stored and sent as its lower-case name.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SlotOutcome {
    /// A daemon took the slot and is enqueueing its invocations.
    Claimed,
    Enqueued,
    /// The previous run was still going.
    Skipped,
    /// The invocations could not be enqueued (the slot's `message` says why).
    Failed,
}

impl SlotOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotOutcome::Claimed => "claimed",
            SlotOutcome::Enqueued => "enqueued",
            SlotOutcome::Skipped => "skipped",
            SlotOutcome::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "claimed" => Some(SlotOutcome::Claimed),
            "enqueued" => Some(SlotOutcome::Enqueued),
            "skipped" => Some(SlotOutcome::Skipped),
            "failed" => Some(SlotOutcome::Failed),
            _ => None,
        }
    }
}

/// `GET /api/v1/sources/{source_id}/schedule/slots` (extension).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleSlots {
    pub slots: Vec<ScheduleSlot>,
}

/// `POST /api/v1/sources` → 201.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateSourceResponse {
    pub source_id: Uuid,
    /// Extension: present when the source has a `webhook`; holds the
    /// secret its deliveries are signed with, shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSecret>,
}

/// A source's webhook signing secret (Standard Webhooks: `whsec_…`), shown
/// only when created or rotated. Receivers verify `webhook-signature` with
/// it (e.g. PyPI/npm `standardwebhooks`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WebhookSecret {
    pub secret: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AutoSync {
    None,
    Direct,
    Metadata,
}

/// How documents are split into chunks.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChunkingConfig {
    /// Syntax-aware splitting (tree-sitter for code, markdown structure for
    /// markdown and HTML), each chunk at most `max_size_bytes`.
    TreeSitter {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size_bytes: Option<u32>,
    },
    /// Consecutive lines, at most `max_lines` and `max_size_bytes` per chunk.
    Lines {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_lines: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_size_bytes: Option<u32>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModel {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<EmbeddingTask>,
}

/// What the embeddings are for: `{"task_name", "document_prompt"?,
/// "query_prompt"?}`. The document prompt is prepended to every chunk
/// before it is embedded (the chunk's document stays as it was); both
/// prompts are recorded on the collection so queries can be embedded the
/// same way. A bare string is read as a task name without prompts.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct EmbeddingTask {
    pub task_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_prompt: Option<String>,
}

impl<'de> Deserialize<'de> for EmbeddingTask {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Spec {
            task_name: String,
            #[serde(default)]
            document_prompt: Option<String>,
            #[serde(default)]
            query_prompt: Option<String>,
        }
        use serde::de::Error;
        match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(task_name) => Ok(EmbeddingTask {
                task_name,
                document_prompt: None,
                query_prompt: None,
            }),
            value @ serde_json::Value::Object(_) => {
                let spec: Spec = serde_json::from_value(value)
                    .map_err(|e| D::Error::custom(format!("task: {e}")))?;
                Ok(EmbeddingTask {
                    task_name: spec.task_name,
                    document_prompt: spec.document_prompt,
                    query_prompt: spec.query_prompt,
                })
            }
            _ => Err(D::Error::custom(
                "task must be an object {\"task_name\", \"document_prompt\"?, \"query_prompt\"?}",
            )),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    pub dense: EmbeddingModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseEmbedding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SparseEmbedding {
    pub key: String,
    pub model: String,
}

/// A stored source, with every optional setting filled with its effective value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Source {
    pub id: Uuid,
    /// The kind's field with its effective settings (see
    /// [`CreateSourcePayload::kind`]); it follows `id` on the wire.
    #[serde(flatten)]
    #[schema(ignore)]
    pub kind: KindSettings,
    pub database_name: String,
    /// `null` means the per-document default (tree-sitter for known code,
    /// markdown-aware for markdown/HTML, else 10 lines / 4096 bytes).
    pub chunking: Option<ChunkingConfig>,
    pub embedding: EmbeddingConfig,
    pub embedding_model: EmbeddingModel,
    pub created_at: DateTime<Utc>,
    /// Extension: the source's schedule, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<SourceSchedule>,
    /// Extension: where finished invocations are announced, if anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookConfig>,
    /// Extension: the share of stored documents one sync may remove, if
    /// the source sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_removal_fraction: Option<f64>,
    /// Extension: the source's own OCR languages, if it sets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ocr: Option<SourceOcrConfig>,
}

/// `source_type` filter values and the `source_type` chunk metadata: a
/// kind's name on the wire, or [`SourceType::UPLOAD`].
///
/// Which names are kinds is the registry's to say (`domain::registry`, from
/// each kind's `SOURCE_TYPE`, and `SourceSpec::source_type_named` for
/// input), so this type names none: it holds any short snake_case name,
/// inline so that it stays `Copy`. [`SourceType::parse`] checks only that
/// shape; it reads back what the daemon itself stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceType {
    len: u8,
    bytes: [u8; SourceType::MAX_LEN],
}

impl SourceType {
    /// The longest name a kind may have.
    pub const MAX_LEN: usize = 23;

    /// Not a source: a file sent to `POST /api/v1/add-file`.
    pub const UPLOAD: SourceType = SourceType::named("upload");

    /// A kind's name, for its `SOURCE_TYPE` constant. A name that is not
    /// 1–23 of `a-z`, `0-9` and `_` fails the build (const evaluation).
    pub const fn named(name: &str) -> Self {
        let source = name.as_bytes();
        assert!(
            !source.is_empty() && source.len() <= Self::MAX_LEN,
            "a source type has 1 to 23 characters"
        );
        let mut bytes = [0u8; Self::MAX_LEN];
        let mut i = 0;
        while i < source.len() {
            let b = source[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
                "a source type is snake_case"
            );
            bytes[i] = b;
            i += 1;
        }
        SourceType {
            len: source.len() as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        // `named` and `parse` admit ASCII only.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or_default()
    }

    /// A name of the right shape (what the daemon stores), not checked
    /// against the registry: input from callers goes through the registry.
    pub fn parse(value: &str) -> Option<Self> {
        let shaped = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        shaped.then(|| SourceType::named(value))
    }
}

impl std::fmt::Debug for SourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceType({})", self.as_str())
    }
}

impl std::fmt::Display for SourceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SourceType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SourceType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        SourceType::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("`{name}` is not a source type")))
    }
}

/// A string; the OpenAPI document lists the registry's names as its
/// `enum` (`api::openapi`).
impl utoipa::PartialSchema for SourceType {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "`source_type` filter values and the `source_type` chunk metadata.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for SourceType {}

// ---------------------------------------------------------------- invocations

/// Body of `POST /api/v1/sources/{source_id}/invocations` (seed 002).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct CreateJobPayload {
    /// Custom ID for Chroma object IDs (S3 sources only): chunk IDs become
    /// `custom_id-{chunk}` and each chunk carries `custom_id` metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 120)]
    pub custom_id: Option<String>,
    /// Metadata merged into every chunk's metadata (S3 sources only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// Full S3 object key, including the source's path prefix (S3 only, required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// Git ref for GitHub sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ref_identifier: Option<GitRefIdentifier>,
    /// Optional for S3 and filesystem sources (defaults to the source's
    /// `collection_name`); required otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_collection_name: Option<String>,
    /// Extension, filesystem sources only: the file (relative to the root)
    /// to sync; none syncs the whole root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GitRefIdentifier {
    Sha(String),
    Branch(String),
}

/// What an upload job (`POST /api/v1/add-file`) needs besides the fields
/// of [`CreateJobPayload`]; stored with the job, never accepted from a
/// caller as such.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadSpec {
    /// The part's filename: the document's key (chunk IDs
    /// `sha256(filename)-<n>` without a `custom_id`).
    pub filename: String,
    pub size: u64,
    /// SHA-256 of the file: the document's version.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Where the file waits for its job: `directory` (the state directory)
    /// or `queue` (the queue database, shared by every machine).
    pub store: UploadStoreKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<ChunkingConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingConfig>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UploadStoreKind {
    Directory,
    Queue,
}

/// `POST /api/v1/sources/{source_id}/invocations` → 201.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateJobResponse {
    pub invocation_id: Uuid,
}

/// `PUT /api/v1/invocations/{invocation_id}` → 202 `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CancelJobResponse {}

/// Body of `POST /api/v1/sources/{id}/invocations/latest-by-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatestByKeysRequest {
    pub object_keys: Vec<String>,
}

/// An invocation as seed 001 defines it, plus our optional extensions.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub status: JobStatus,
    pub metadata: IndexJobMetadata,
    pub created_at: DateTime<Utc>,
    pub source_id: Option<Uuid>,
    /// Extension: how many times a worker has started this job.
    pub attempt: u32,
    /// Extension: when the current (or last) attempt started.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Extension: the worker's last sign of life for the current attempt.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    /// Extension: when a cancel was asked for a job already being processed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Extension: what the worker is doing now.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub progress: Option<Progress>,
    /// Extension: counters of the work done.
    #[serde(default)]
    pub stats: JobStats,
    /// Extension: the last transient error, while a retry is scheduled.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
    /// Extension: `manual` (API/CLI), `scheduled` (a source's schedule) or
    /// `auto_sync` (an S3 event notification).
    pub trigger: Trigger,
    /// Extension (audit): the `name` of the API token that created the
    /// invocation; absent for unnamed tokens, loopback callers, schedules
    /// and auto-sync. Never the token itself.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_by: Option<String>,
    /// Extension (audit): the `name` of the API token that asked to cancel it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cancel_requested_by: Option<String>,
}

/// Exactly the five states of seed 001.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Processing,
    Complete {
        finished_at: DateTime<Utc>,
        duration_ms: i64,
    },
    Failed {
        error: String,
    },
    Cancelled,
}

impl JobStatus {
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            JobStatus::Complete { .. } | JobStatus::Failed { .. } | JobStatus::Cancelled
        )
    }

    /// The `status` query filter's value for this state.
    pub fn name(&self) -> &'static str {
        self.state().as_str()
    }

    pub fn state(&self) -> JobState {
        match self {
            JobStatus::Pending => JobState::Pending,
            JobStatus::Processing => JobState::Processing,
            JobStatus::Complete { .. } => JobState::Complete,
            JobStatus::Failed { .. } => JobState::Failed,
            JobStatus::Cancelled => JobState::Cancelled,
        }
    }
}

/// A job's state without its details: the queue's `state` column and the
/// `status` filter of the invocation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Pending,
    Processing,
    Complete,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Pending,
        JobState::Processing,
        JobState::Complete,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Processing => "processing",
            JobState::Complete => "complete",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// Seed 001's `IndexJobMetadata`: the kind merged with database and collection.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct IndexJobMetadata {
    /// Its schema is the kinds' (`api::openapi`).
    #[serde(flatten)]
    #[schema(ignore)]
    pub kind: JobKind,
    pub database_name: String,
    pub collection_name: String,
}

/// A job's kind and what it syncs: one field named for the kind
/// (`"s3": {…}`, `"github": {…}`, `"web_scrape": null`, or `"file": {…}`
/// for an upload), carried untyped like a source's settings. Each kind
/// defines its job metadata type in its folder (`SourceKind::JobMetadata`)
/// and writes it with [`KindSettings::of`]; only the API reads it back.
pub type JobKind = KindSettings;

/// The job metadata field of a file sent to `POST /api/v1/add-file`.
pub const FILE_JOB_FIELD: &str = "file";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct FileJobMetadata {
    /// The uploaded part's filename (the document's key).
    pub file_name: String,
    /// Size in bytes.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /api/v1/add-file` → 201.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AddFileResponse {
    pub invocation_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Progress {
    pub step: u32,
    pub total_steps: u32,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct JobStats {
    pub documents: u64,
    pub skipped: u64,
    pub chunks_upserted: u64,
    pub chunks_deleted: u64,
    pub bytes: u64,
    /// Why documents were skipped (e.g. `binary content (image/png)`), keyed
    /// by document; the first [`MAX_SKIPPED_REASONS`] only (`skipped` counts all).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped_reasons: BTreeMap<String, String>,
    /// Documents indexed without some of their parts, keyed by document:
    /// what was left out and why (`page 4: no text layer (OCR not
    /// enabled)`). The first [`MAX_SKIPPED_REASONS`] documents only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub omitted_parts: BTreeMap<String, String>,
    /// Chunks whose metadata was updated in place, without re-embedding
    /// (an incremental GitHub sync re-stamps unchanged files with the new commit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks_restamped: u64,
    /// Chunks stored with the same text and metadata: not re-embedded, not rewritten.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks_unchanged: u64,
    /// Chunks written with a vector reused from an identical input (same
    /// model, same prompt and text) rather than embedded again: a duplicate
    /// in the same batch, a recent job's, or one stored in the collection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks_embedding_reused: u64,
    /// Documents found unchanged (same version as stored): nothing re-embedded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged: u64,
    /// Of `unchanged`, documents known unchanged without being read
    /// (filesystem: the file's stat is the one stored with it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unchanged_unread: u64,
    /// Wall time spent waiting for the source (fetching), extracting and
    /// chunking, embedding, and writing to Chroma, in milliseconds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fetch_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub extract_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub embed_ms: u64,
    /// Time this job's batches waited for the embedder, which runs one
    /// forward pass at a time across all jobs (high: embedding is the
    /// bottleneck and more workers will not help).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub embed_wait_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub write_ms: u64,
    /// GitHub: the commit the job's ref resolved to, the version every chunk names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_sha: Option<String>,
    /// GitHub: `full` or `incremental` (changes since `base_commit_sha` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_mode: Option<SyncMode>,
    /// GitHub: the commit an incremental sync started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit_sha: Option<String>,
}

/// How a GitHub job synced its commit (`stats.sync_mode`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Every file of the commit.
    Full,
    /// Only the files changed since `base_commit_sha`.
    Incremental,
}

/// Bound on `stats.skipped_reasons`, so a repository of many binaries keeps
/// job JSON small.
pub const MAX_SKIPPED_REASONS: usize = 200;

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    #[default]
    Manual,
    Scheduled,
    /// An S3 event notification (`auto_sync: "direct"` or `"metadata"`).
    AutoSync,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "manual",
            Trigger::Scheduled => "scheduled",
            Trigger::AutoSync => "auto_sync",
        }
    }

    pub const ALL: [Trigger; 3] = [Trigger::Manual, Trigger::Scheduled, Trigger::AutoSync];

    /// The trigger named `text`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.as_str() == text)
    }
}

/// `GET /health` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HealthResponse {
    pub status: String,
    pub queue: String,
    pub chroma: String,
}

#[cfg(test)]
mod tests {

    /// The kind field is carried untyped, yet a source's settings leave in
    /// the order their type declares them, and a payload reads back equal.
    #[test]
    fn a_kinds_settings_keep_their_order_and_read_back_equal() {
        #[derive(Serialize)]
        struct Settings {
            root: &'static str,
            collection_name: &'static str,
        }
        let settings = Settings {
            root: "/srv",
            collection_name: "docs",
        };
        let kind = KindSettings::of("filesystem", &settings).unwrap();
        assert_eq!(
            serde_json::to_string(&kind).unwrap(),
            r#"{"filesystem":{"root":"/srv","collection_name":"docs"}}"#
        );
        let body = r#"{"filesystem":{"root":"/srv","collection_name":"docs"},"database_name":"db","zz":1}"#;
        let payload: CreateSourcePayload = serde_json::from_str(body).unwrap();
        assert_eq!(payload.database_name, "db");
        let fields: Vec<&str> = payload.kind.0.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["filesystem", "zz"],
            "unknown fields are kept for the registry to refuse"
        );
        let again: CreateSourcePayload =
            serde_json::from_str(&serde_json::to_string(&payload).unwrap()).unwrap();
        assert_eq!(again, payload);
    }
    use super::*;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": 2, "x": [3, {"q": 1, "p": 2}]}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"x": [3, {"p": 2, "q": 1}], "y": 2}, "b": 1}"#).unwrap();
        assert_eq!(canonical_json(&a), canonical_json(&b));
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":[3,{"p":2,"q":1}],"y":2},"b":1}"#
        );
    }

    /// The slot outcome is sent and stored as the lower-case strings it was
    /// before it became an enum; a job state's name is its status's.
    #[test]
    fn states_and_slot_outcomes_keep_their_strings() {
        for (outcome, text) in [
            (SlotOutcome::Claimed, "claimed"),
            (SlotOutcome::Enqueued, "enqueued"),
            (SlotOutcome::Skipped, "skipped"),
            (SlotOutcome::Failed, "failed"),
        ] {
            assert_eq!(outcome.as_str(), text);
            assert_eq!(SlotOutcome::parse(text), Some(outcome));
            assert_eq!(serde_json::to_value(outcome).unwrap(), text);
        }
        let slot = ScheduleSlot {
            slot: DateTime::<Utc>::UNIX_EPOCH,
            outcome: SlotOutcome::Enqueued,
            jobs: 2,
            message: None,
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        assert_eq!(
            serde_json::to_string(&slot).unwrap(),
            r#"{"slot":"1970-01-01T00:00:00Z","outcome":"enqueued","jobs":2,"recorded_at":"1970-01-01T00:00:00Z"}"#
        );
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        assert_eq!(JobState::parse("done"), None);
        assert_eq!(SlotOutcome::parse("Enqueued"), None);
        assert_eq!(JobStatus::Cancelled.name(), "cancelled");
        assert_eq!(
            JobStatus::Failed { error: "x".into() }.state(),
            JobState::Failed
        );
    }

    /// `WebhookDelivery.state`, `stats.sync_mode` and `trigger` were strings
    /// before they became enums: the same names, stored and sent.
    #[test]
    fn delivery_states_sync_modes_and_triggers_keep_their_strings() {
        for (state, text) in [
            (DeliveryState::Pending, "pending"),
            (DeliveryState::Delivering, "delivering"),
            (DeliveryState::Delivered, "delivered"),
            (DeliveryState::Failed, "failed"),
        ] {
            assert_eq!(state.as_str(), text);
            assert_eq!(DeliveryState::parse(text), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
        assert_eq!(DeliveryState::parse("sent"), None);
        let delivery = WebhookDelivery {
            id: Uuid::nil(),
            invocation_id: Uuid::nil(),
            event: WebhookEvent::Complete,
            state: DeliveryState::Delivered,
            attempts: 1,
            last_status: Some(200),
            last_error: None,
            responses: Vec::new(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            next_attempt_at: None,
            delivered_at: None,
        };
        assert_eq!(
            serde_json::to_string(&delivery).unwrap(),
            r#"{"id":"00000000-0000-0000-0000-000000000000","invocation_id":"00000000-0000-0000-0000-000000000000","event":"complete","state":"delivered","attempts":1,"last_status":200,"responses":[],"created_at":"1970-01-01T00:00:00Z"}"#
        );

        for (mode, text) in [
            (SyncMode::Full, "full"),
            (SyncMode::Incremental, "incremental"),
        ] {
            let stats = JobStats {
                sync_mode: Some(mode),
                ..JobStats::default()
            };
            let json = serde_json::to_string(&stats).unwrap();
            assert_eq!(
                json,
                format!(
                    r#"{{"documents":0,"skipped":0,"chunks_upserted":0,"chunks_deleted":0,"bytes":0,"sync_mode":"{text}"}}"#
                )
            );
            assert_eq!(serde_json::from_str::<JobStats>(&json).unwrap(), stats);
        }
        let none = serde_json::to_string(&JobStats::default()).unwrap();
        assert!(!none.contains("sync_mode"), "{none}");
        assert!(serde_json::from_str::<JobStats>(r#"{"documents":0,"skipped":0,"chunks_upserted":0,"chunks_deleted":0,"bytes":0,"sync_mode":"partial"}"#).is_err());

        for (trigger, text) in [
            (Trigger::Manual, "manual"),
            (Trigger::Scheduled, "scheduled"),
            (Trigger::AutoSync, "auto_sync"),
        ] {
            assert_eq!(trigger.as_str(), text);
            assert_eq!(Trigger::parse(text), Some(trigger));
            assert_eq!(serde_json::to_value(trigger).unwrap(), text);
        }
        // Unknown text is refused, not taken for `manual`.
        assert_eq!(Trigger::parse("cron"), None);
        assert_eq!(Trigger::parse(""), None);
    }

    #[test]
    fn a_source_type_reads_back_what_it_wrote_and_refuses_other_shapes() {
        for name in ["s3", "web_scrape", "upload", "a2_b"] {
            let kind = SourceType::parse(name).unwrap();
            assert_eq!(kind.as_str(), name);
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
            let back: SourceType = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(back, kind);
        }
        assert_eq!(SourceType::parse("upload"), Some(SourceType::UPLOAD));
        let longest = "a".repeat(SourceType::MAX_LEN);
        assert_eq!(SourceType::parse(&longest).unwrap().as_str(), longest);
        for bad in [
            "",
            "S3",
            "web-scrape",
            "s3 ",
            "ü",
            &"a".repeat(SourceType::MAX_LEN + 1),
        ] {
            assert_eq!(SourceType::parse(bad), None, "{bad:?}");
            assert!(serde_json::from_value::<SourceType>(serde_json::json!(bad)).is_err());
        }
    }

    #[test]
    fn job_status_has_the_seed_shapes() {
        assert_eq!(serde_json::to_value(JobStatus::Pending).unwrap(), "pending");
        assert_eq!(
            serde_json::to_value(JobStatus::Cancelled).unwrap(),
            "cancelled"
        );
        let failed = serde_json::to_value(JobStatus::Failed { error: "x".into() }).unwrap();
        assert_eq!(failed, serde_json::json!({"failed": {"error": "x"}}));
        let web = IndexJobMetadata {
            kind: JobKind::of("web_scrape", &()).unwrap(),
            database_name: "d".into(),
            collection_name: "c".into(),
        };
        assert_eq!(
            serde_json::to_value(web).unwrap(),
            serde_json::json!({"web_scrape": null, "database_name": "d", "collection_name": "c"})
        );
    }
}
