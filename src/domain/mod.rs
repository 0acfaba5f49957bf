//! The domain layer: what a source is, what an invocation of it becomes, and
//! how each source type fetches and syncs its documents.
//!
//! Layering (each layer uses only those below it; `tests/architecture.rs`
//! checks there is no cycle, between top-level modules or between files):
//!
//! ```text
//! main → app → api, worker                  (edges: HTTP, job loop)
//!            → domain                       (this: plan, validate, sources,
//!                                            schedules, webhooks)
//!            → pipeline                     (one document: extract → chunk → embed → sink)
//!            → queue, sink, extract, chunk, embed, model, config
//! ```
//!
//! The API, the scheduler ([`schedule`]), auto-sync and the one-shot `run`
//! all plan jobs here and get a [`DomainError`]; only `api/` turns it into
//! a status code and `{error, message}`. A concept is one module: a
//! schedule's parsing and its firing loop live in [`schedule`], a webhook's
//! rules, signing and delivery loop in [`webhook`]; `app` starts the loops.

pub mod names;
pub mod plan;
pub mod schedule;
pub mod sources;
pub mod upload;
pub mod webhook;

pub use plan::{
    Enqueued, Reconciler, SourceLimits, WholeSourcePlan, authorize_source, effective,
    enqueue_whole_source, plan_job, spec_of, validate_settings, validate_source, whole_source,
};
pub use sources::{Reconcile, RunTarget, SourceSpec, Sources, WholeSource};

use tokio_util::sync::CancellationToken;

use crate::pipeline::{JobEmbedding, JobError, JobRun, JobState, Services};
use crate::queue::{ClaimedJob, QueueError};

/// Why a source or an invocation was refused, or could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller's input is wrong (400 over the API).
    #[error("{0}")]
    Invalid(String),
    /// The input is well formed but the source may not use what it names:
    /// a credential bound to other databases (403).
    #[error("{0}")]
    Forbidden(String),
    /// Something the plan depends on did not answer in time; retrying may
    /// help (503 with `code`).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Listing or reading the source failed (a bucket that cannot be listed).
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl DomainError {
    pub fn invalid(message: impl Into<String>) -> Self {
        DomainError::Invalid(message.into())
    }
}

/// Runs one claimed job to its end (or to the first error) with its
/// source's driver.
pub async fn run_job(
    sources: &Sources,
    services: &Services,
    claimed: &ClaimedJob,
    state: &JobState,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    if let Some(upload) = &claimed.upload {
        let embedding =
            JobEmbedding::for_source(&services.models, upload.embedding.as_ref(), None)?;
        let job = JobRun::new(
            services,
            claimed,
            state,
            cancel,
            upload.chunking.as_ref(),
            embedding,
        );
        return upload::run(&sources.uploads, &job, upload).await;
    }
    let source_id = claimed
        .job
        .source_id
        .ok_or_else(|| JobError::Permanent("invocation has no source".into()))?;
    let source = services
        .queue
        .get_source(source_id)
        .await
        .map_err(|e| JobError::Transient(format!("loading source {source_id}: {e}")))?
        .ok_or_else(|| JobError::Permanent(format!("source {source_id} was deleted")))?;
    let spec = plan::spec_of(&source).map_err(|e| JobError::Permanent(e.to_string()))?;
    let embedding = JobEmbedding::for_source(
        &services.models,
        source.payload.embedding.as_ref(),
        source.payload.embedding_model.as_ref(),
    )?;
    let mut job = JobRun::new(
        services,
        claimed,
        state,
        cancel,
        source.payload.chunking.as_ref(),
        embedding,
    );
    job.max_removal_fraction = source.payload.max_removal_fraction;
    job.ocr_languages = source.payload.ocr.as_ref().map(|ocr| ocr.languages.clone());
    sources.run_job(&job, &spec).await
}
