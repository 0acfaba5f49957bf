//! Planning: a create payload becomes a checked [`SourceSpec`]; an
//! invocation of a stored source becomes a [`NewJob`]. The API, schedules,
//! auto-sync and one-shot runs all go through here, so every way a job is
//! created is held to the same checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::DomainError;
use super::names::validate_chroma_name;
/// Where `api/upload.rs` finds it (it lives with the other names).
pub use super::names::validate_custom_id;
use super::{Reconcile, RunTarget, SourceSpec, Sources, WholeSource};
use crate::model::{
    BM25_MODEL, ChunkingConfig, CreateJobPayload, CreateSourcePayload, DEFAULT_EMBEDDING_MODEL,
    EmbeddingConfig, EmbeddingModel, KindSettings, SPLADE_MODEL, Source, SourceOcrConfig, Trigger,
};
use crate::pipeline::listing::{Comparison, Listing, Scope, Unchanged};
use crate::pipeline::{
    DEFAULT_MAX_REMOVAL_FRACTION, JobEmbedding, JobError, RemovalPolicy, Services,
};
use crate::queue::{NewJob, Queue, QueueError, SourceRecord};

/// Bounds on what a source may ask of the daemon (`[api]` in the config)
/// and what it may choose from (`[embedding.models]`).
#[derive(Debug, Clone)]
pub struct SourceLimits {
    /// Cron schedules may not fire more often than this.
    pub min_schedule_interval: Duration,
    /// The embedding models sources may name: the built-in and the config's.
    pub models: Arc<Vec<String>>,
    /// The SPLADE models the config defines (`kind = "splade"`).
    pub sparse_models: Arc<Vec<String>>,
    /// The directory converters read OCR models (`<language>.traineddata`)
    /// from, which a source's `ocr.languages` are checked against; or why
    /// OCR is off (then a source cannot name languages).
    pub ocr_models: Result<PathBuf, String>,
}

/// Most languages a source's OCR reads together: Tesseract loads a model
/// per language per OCR thread, and each costs tens of MB.
const MAX_OCR_LANGUAGES: usize = 8;

/// Longest task name and prompt accepted.
const MAX_TASK_NAME_CHARS: usize = 128;
const MAX_PROMPT_BYTES: usize = 1024;

/// How many upcoming slots of a cron schedule are checked against
/// `[api] min_schedule_interval_seconds` (over a day of a per-minute cron).
const SCHEDULE_FIRINGS_CHECKED: usize = 1500;

/// Checks a source completely; returns its kind. It compiles the source's
/// path patterns and walks its schedule, which can take milliseconds:
/// callers on the async runtime run it on a blocking thread.
pub fn validate_source(
    sources: &Sources,
    limits: &SourceLimits,
    payload: &CreateSourcePayload,
) -> Result<SourceSpec, DomainError> {
    let spec = SourceSpec::from_payload(payload)?;
    validate_chroma_name("database_name", &payload.database_name)?;
    sources.validate(&spec)?;
    if let Some(schedule) = &payload.schedule {
        let parsed =
            super::schedule::ParsedSchedule::parse(schedule).map_err(DomainError::Invalid)?;
        let minimum = limits.min_schedule_interval;
        if let Some(shortest) = parsed
            .shortest_interval(chrono::Utc::now(), SCHEDULE_FIRINGS_CHECKED)
            .filter(|shortest| *shortest < minimum)
        {
            return Err(DomainError::invalid(format!(
                "schedule.cron `{}` fires {} s apart; this daemon runs schedules at most once \
                 every {} s ([api] min_schedule_interval_seconds)",
                schedule.cron,
                shortest.as_secs(),
                minimum.as_secs()
            )));
        }
        if let Some(name) = &schedule.target_collection_name {
            validate_chroma_name("schedule.target_collection_name", name)?;
        }
        sources.check_schedule(&spec, schedule)?;
    }
    if let Some(chunking) = &payload.chunking {
        validate_chunking(chunking)?;
    }
    validate_embedding(
        limits,
        payload.embedding.as_ref(),
        payload.embedding_model.as_ref(),
    )?;
    if let Some(webhook) = &payload.webhook {
        super::webhook::validate(webhook)?;
    }
    if let Some(fraction) = payload.max_removal_fraction
        && !(0.0..=1.0).contains(&fraction)
    {
        return Err(DomainError::invalid(format!(
            "max_removal_fraction must be between 0 and 1 (the share of stored documents one \
             sync may remove), not {fraction}"
        )));
    }
    if let Some(ocr) = &payload.ocr {
        validate_ocr(limits, ocr)?;
    }
    Ok(spec)
}

/// A source's OCR languages are ones this daemon has models for: a typo
/// (`"ger"`) is a 400 naming what is installed, not a job whose every
/// image fails.
fn validate_ocr(limits: &SourceLimits, ocr: &SourceOcrConfig) -> Result<(), DomainError> {
    let tessdata = limits.ocr_models.as_ref().map_err(|why| {
        DomainError::invalid(format!(
            "ocr.languages: OCR is off on this daemon, so a source cannot choose its languages \
             ({why})"
        ))
    })?;
    let installed = crate::config::installed_languages(tessdata);
    let listed = || {
        if installed.is_empty() {
            "none".to_string()
        } else {
            installed.join(", ")
        }
    };
    if ocr.languages.is_empty() || ocr.languages.len() > MAX_OCR_LANGUAGES {
        return Err(DomainError::invalid(format!(
            "ocr.languages names 1 to {MAX_OCR_LANGUAGES} Tesseract languages, not {} \
             (installed: {})",
            ocr.languages.len(),
            listed()
        )));
    }
    for (index, language) in ocr.languages.iter().enumerate() {
        if ocr.languages[..index].contains(language) {
            return Err(DomainError::invalid(format!(
                "ocr.languages names `{language}` twice"
            )));
        }
    }
    // Only names read from the models directory match: `../x` or `eng+deu`
    // never reach Tesseract.
    let missing: Vec<String> = ocr
        .languages
        .iter()
        .filter(|language| !installed.contains(language))
        .map(|language| format!("`{}`", language.chars().take(64).collect::<String>()))
        .collect();
    if !missing.is_empty() {
        return Err(DomainError::invalid(format!(
            "ocr.languages: {} not installed on this daemon (installed: {}; an operator adds \
             one with its tesseract-ocr-<language> package)",
            missing.join(", "),
            listed()
        )));
    }
    Ok(())
}

/// The `chunking` and `embedding` of something that is not a stored source
/// (an uploaded file), checked as a source's are.
pub fn validate_settings(
    limits: &SourceLimits,
    chunking: Option<&ChunkingConfig>,
    embedding: Option<&EmbeddingConfig>,
) -> Result<(), DomainError> {
    if let Some(chunking) = chunking {
        validate_chunking(chunking)?;
    }
    validate_embedding(limits, embedding, None)
}

/// The source's dense model is one this daemon defines, its task's prompts
/// are of sane size, and its sparse function is one we compute.
fn validate_embedding(
    limits: &SourceLimits,
    embedding: Option<&EmbeddingConfig>,
    embedding_model: Option<&EmbeddingModel>,
) -> Result<(), DomainError> {
    let dense = embedding.map(|e| &e.dense);
    if let (Some(dense), Some(model)) = (dense, embedding_model)
        && dense != model
    {
        return Err(DomainError::invalid(
            "embedding.dense and embedding_model disagree; give one of them",
        ));
    }
    for model in dense.into_iter().chain(embedding_model) {
        if !limits.models.contains(&model.model) {
            return Err(DomainError::invalid(format!(
                "embedding model `{}` is not defined on this daemon; defined models: {} \
                 (operators add models under [embedding.models.\"NAME\"])",
                model.model,
                limits
                    .models
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if let Some(task) = &model.task {
            if task.task_name.trim().is_empty()
                || task.task_name.chars().count() > MAX_TASK_NAME_CHARS
            {
                return Err(DomainError::invalid(format!(
                    "task.task_name must be 1 to {MAX_TASK_NAME_CHARS} characters"
                )));
            }
            for (name, prompt) in [
                ("document_prompt", &task.document_prompt),
                ("query_prompt", &task.query_prompt),
            ] {
                if prompt.as_ref().is_some_and(|p| p.len() > MAX_PROMPT_BYTES) {
                    return Err(DomainError::invalid(format!(
                        "task.{name} is longer than {MAX_PROMPT_BYTES} bytes"
                    )));
                }
            }
        }
    }
    if let Some(sparse) = embedding.and_then(|e| e.sparse.as_ref()) {
        match sparse.model.as_str() {
            BM25_MODEL => {}
            defined if limits.sparse_models.iter().any(|m| m == defined) => {}
            SPLADE_MODEL => {
                return Err(DomainError::invalid(format!(
                    "sparse model `{SPLADE_MODEL}` needs its model directory, which this \
                     daemon does not define ([embedding.models.\"{SPLADE_MODEL}\"] kind = \
                     \"splade\"); use `{BM25_MODEL}`"
                )));
            }
            other => {
                let mut known = vec![format!("`{BM25_MODEL}`")];
                known.extend(limits.sparse_models.iter().map(|m| format!("`{m}`")));
                return Err(DomainError::invalid(format!(
                    "sparse model `{other}` is unknown; use {}",
                    known.join(" or ")
                )));
            }
        }
        let key = sparse.key.as_str();
        let valid = !key.is_empty()
            && key.len() <= 64
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && !key.starts_with("chroma_");
        if !valid {
            return Err(DomainError::invalid(
                "embedding.sparse.key must be 1 to 64 letters, digits, `_`, `-` or `.`, not \
                 starting with `chroma_`",
            ));
        }
        if crate::sink::records::is_standard_field(key) {
            return Err(DomainError::invalid(format!(
                "embedding.sparse.key `{key}` is a standard chunk metadata field"
            )));
        }
    }
    Ok(())
}

fn validate_chunking(chunking: &ChunkingConfig) -> Result<(), DomainError> {
    let (lines, bytes) = match chunking {
        ChunkingConfig::TreeSitter { max_size_bytes } => (None, *max_size_bytes),
        ChunkingConfig::Lines {
            max_lines,
            max_size_bytes,
        } => (*max_lines, *max_size_bytes),
    };
    if lines == Some(0) {
        return Err(DomainError::invalid(
            "chunking.max_lines must be at least 1",
        ));
    }
    if bytes.is_some_and(|b| !(64..=16 * 1024).contains(&b)) {
        return Err(DomainError::invalid(
            "chunking.max_size_bytes must be between 64 and 16384 (Chroma's document limit)",
        ));
    }
    Ok(())
}

/// The checks of a valid source that depend on the daemon's config and the
/// network: the credential it names may be used by its database
/// ([`DomainError::Forbidden`] otherwise), and the endpoints it names pass
/// the SSRF guard. Jobs check both again when they connect.
pub async fn authorize_source(
    sources: &Sources,
    payload: &CreateSourcePayload,
    spec: &SourceSpec,
) -> Result<(), DomainError> {
    sources.authorize(&payload.database_name, spec).await?;
    if let Some(webhook) = &payload.webhook {
        sources.webhooks.authorize(webhook).await?;
    }
    Ok(())
}

/// The kind of a stored source (stored sources were validated when created).
pub fn spec_of(record: &SourceRecord) -> Result<SourceSpec, DomainError> {
    SourceSpec::from_payload(&record.payload)
}

/// The stored source with every optional setting at its effective value.
pub fn effective(record: &SourceRecord) -> Source {
    let payload = &record.payload;
    let dense = payload
        .embedding
        .as_ref()
        .map(|e| e.dense.clone())
        .or_else(|| payload.embedding_model.clone())
        .unwrap_or(EmbeddingModel {
            model: DEFAULT_EMBEDDING_MODEL.to_string(),
            task: None,
        });
    let mut source = Source {
        id: record.id,
        kind: KindSettings::default(),
        database_name: payload.database_name.clone(),
        chunking: payload.chunking.clone(),
        embedding: payload.embedding.clone().unwrap_or(EmbeddingConfig {
            dense: dense.clone(),
            sparse: None,
        }),
        embedding_model: dense,
        created_at: record.created_at,
        schedule: payload.schedule.clone(),
        webhook: payload.webhook.clone(),
        max_removal_fraction: payload.max_removal_fraction,
        ocr: payload.ocr.clone(),
    };
    if let Ok(spec) = spec_of(record) {
        spec.effective().write_into(&mut source);
    }
    source
}

/// Checks an invocation of `record` and works out the job to enqueue. What
/// the invocation leaves to the source (GitHub's default branch) is asked
/// of the source first.
pub async fn plan_job(
    sources: &Sources,
    record: &SourceRecord,
    mut payload: CreateJobPayload,
    trigger: Trigger,
) -> Result<NewJob, DomainError> {
    let spec = spec_of(record)?;
    sources.refuse_undeclared(&spec, &payload)?;
    sources.prepare(record, &spec, &mut payload).await?;
    let planned = sources.plan(record, &spec, &payload)?;
    Ok(planned.into_job(record, payload, trigger))
}

/// The invocations that sync a whole source (a one-shot run, a schedule
/// slot): one per object for S3 (the given keys, or every key under the
/// prefix), one for a repository at a ref, a site or a directory. Objects
/// the listing shows already stored at their version get none
/// ([`crate::pipeline::listing`]); `unchanged` says which. Failing to tell
/// only costs the saving: every object then gets its job.
pub async fn whole_source(
    sources: &Sources,
    services: &Services,
    record: &SourceRecord,
    target: RunTarget,
) -> Result<WholeSourcePlan, DomainError> {
    let spec = spec_of(record)?;
    let WholeSource { payloads, listing } = sources.whole_source(record, &spec, target).await?;
    let Some(listing) = listing else {
        return Ok(WholeSourcePlan {
            payloads,
            ..WholeSourcePlan::default()
        });
    };
    let comparison = match compared(services, record, &spec, &listing).await {
        Ok(comparison) => comparison,
        Err(error) => {
            tracing::warn!(
                source_id = %record.id,
                %error,
                "could not compare the listing with the collection; syncing every object"
            );
            Comparison::default()
        }
    };
    let unchanged = comparison.unchanged;
    let payloads = payloads
        .into_iter()
        .filter(|payload| {
            payload
                .object_key
                .as_ref()
                .is_none_or(|key| !unchanged.contains(key))
        })
        .collect();
    Ok(WholeSourcePlan {
        payloads,
        unchanged,
        gone: comparison.gone,
        stored: comparison.stored,
        listed: listing.complete.map_or(0, |keys| keys.len()),
        collection: Some(listing.collection),
    })
}

/// What a whole-source sync enqueues, and what it found with nothing to do.
#[derive(Debug, Default)]
pub struct WholeSourcePlan {
    pub payloads: Vec<CreateJobPayload>,
    pub unchanged: Unchanged,
    /// Stored documents a complete listing no longer has (S3: objects
    /// deleted from the prefix), for a sync that removes them
    /// ([`Reconciler`]); empty when the listing was not complete.
    pub gone: Vec<String>,
    /// Documents of the source the collection holds, and how many the
    /// complete listing found: what the removal policy weighs.
    pub stored: usize,
    pub listed: usize,
    /// The collection the listing was compared with.
    pub collection: Option<String>,
}

/// What [`enqueue_whole_source`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Enqueued {
    /// Jobs the queue took (a document whose job is already pending or
    /// running gets no second one: that job reads it as it is now).
    pub enqueued: u32,
    /// Documents stored at their listed version: no job for them.
    pub unchanged: usize,
    /// Removal jobs among `enqueued`'s, for documents gone from the source.
    pub removing: usize,
    /// Why the gone documents were not removed (the removal policy).
    pub kept: Option<String>,
    /// Documents left out because no invocation may name them, and why
    /// the first was.
    pub refused: usize,
    pub first_refusal: Option<String>,
}

/// Plans a whole-source sync and enqueues its jobs with `trigger`. With
/// `remove_gone`, documents a complete listing no longer has get a job
/// each too — which finds the object gone and deletes its chunks — unless
/// the source's removal policy refuses (a listing that suddenly lacks
/// nearly everything is likelier a fault than the truth); then none does.
pub async fn enqueue_whole_source(
    sources: &Sources,
    services: &Services,
    queue: &dyn Queue,
    record: &SourceRecord,
    target: RunTarget,
    trigger: Trigger,
    remove_gone: bool,
) -> Result<Enqueued, DomainError> {
    let plan = whole_source(sources, services, record, target).await?;
    let mut done = Enqueued {
        unchanged: plan.unchanged.documents.len(),
        ..Enqueued::default()
    };
    let mut payloads = plan.payloads;
    if remove_gone && !plan.gone.is_empty() {
        let policy = RemovalPolicy::of_source(
            record.payload.max_removal_fraction,
            DEFAULT_MAX_REMOVAL_FRACTION,
            "max_removal_fraction",
        );
        match policy.check(plan.gone.len(), plan.stored, plan.listed, "documents") {
            Ok(()) => {
                done.removing = plan.gone.len();
                payloads.extend(plan.gone.into_iter().map(|key| CreateJobPayload {
                    object_key: Some(key),
                    target_collection_name: plan.collection.clone(),
                    ..CreateJobPayload::default()
                }));
            }
            Err(refused) => done.kept = Some(refused.to_string()),
        }
    }
    for payload in payloads {
        let job = match plan_job(sources, record, payload, trigger).await {
            Ok(job) => job,
            // A key no invocation could name (a `..` segment, too long):
            // the others still sync.
            Err(DomainError::Invalid(reason)) => {
                tracing::warn!(source_id = %record.id, %reason, "leaving out a document no invocation may name");
                done.refused += 1;
                done.first_refusal.get_or_insert(reason);
                continue;
            }
            Err(error) => return Err(error),
        };
        match queue.enqueue(job).await {
            Ok(_) => done.enqueued += 1,
            Err(QueueError::Duplicate(_)) => {}
            Err(error) => return Err(DomainError::Queue(error)),
        }
    }
    Ok(done)
}

/// Catches an auto-synced source up when its watch or event consumer
/// starts — after the source is created and after every restart: what was
/// written before the events reached us, or while no process listened, or
/// whose events were lost, raises no event. A whole-source comparison
/// that enqueues only what changed, and removes what is gone.
pub struct Reconciler {
    pub sources: Arc<Sources>,
    pub services: Arc<Services>,
    pub queue: Arc<dyn Queue>,
    pub wake: Arc<tokio::sync::Notify>,
}

impl Reconcile for Reconciler {
    fn reconcile<'a>(
        &'a self,
        record: &'a SourceRecord,
    ) -> futures::future::BoxFuture<'a, Result<String, DomainError>> {
        Box::pin(async move {
            let done = enqueue_whole_source(
                &self.sources,
                &self.services,
                self.queue.as_ref(),
                record,
                RunTarget::default(),
                Trigger::AutoSync,
                true,
            )
            .await?;
            if done.enqueued > 0 {
                self.wake.notify_waiters();
            }
            let mut summary = format!(
                "{} jobs enqueued ({} to remove documents gone from the source), {} documents unchanged",
                done.enqueued, done.removing, done.unchanged
            );
            if let Some(kept) = done.kept {
                summary.push_str(&format!("; kept the gone documents: {kept}"));
            }
            if let Some(reason) = done.first_refusal {
                summary.push_str(&format!("; left out {}: {reason}", done.refused));
            }
            Ok(summary)
        })
    }
}

async fn compared(
    services: &Services,
    record: &SourceRecord,
    spec: &SourceSpec,
    listing: &Listing,
) -> Result<Comparison, JobError> {
    let embedding = JobEmbedding::for_source(
        &services.models,
        record.payload.embedding.as_ref(),
        record.payload.embedding_model.as_ref(),
    )?;
    let source_id = record.id.to_string();
    let scope = Scope {
        database: &record.payload.database_name,
        source_id: &source_id,
        source_type: spec.source_type(),
        embedding: &embedding,
    };
    crate::pipeline::listing::compare(services, &scope, listing).await
}
