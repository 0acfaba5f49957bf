//! The domain layer: what a source is and what an invocation of it
//! becomes; the kinds, which fetch and sync, are below it (`crate::sources`).
//!
//! Layering (each layer uses only those below it; `tests/architecture.rs`
//! checks there is no cycle, between top-level modules or between files):
//!
//! ```text
//! main → app → api, worker                  (edges: HTTP, job loop)
//!            → domain                       (this: plan, validate, the
//!                                            registry, schedules, webhooks)
//!            → sources                      (the seam and one folder per kind)
//!            → pipeline                     (one document: extract → chunk → embed → sink)
//!            → queue, sink, extract, chunk, embed, model, config
//! ```
//!
//! The API, the scheduler ([`schedule`]), auto-sync and the one-shot `run`
//! all plan jobs here and get a [`DomainError`]; only `api/` turns it into
//! a status code and `{error, message}`. A concept is one module: a
//! schedule's parsing and its firing loop live in [`schedule`], a webhook's
//! rules, signing and delivery loop in [`webhook`]; `app` starts the loops.

pub mod plan;
pub mod registry;
pub mod schedule;
pub mod upload;
pub mod webhook;

pub use crate::sources::{DomainError, Reconcile, RunTarget, WholeSource, names};
pub use plan::{
    Enqueued, Reconciler, SourceLimits, WholeSourcePlan, authorize_source, effective,
    enqueue_whole_source, plan_job, spec_of, validate_settings, validate_source, whole_source,
};
pub use registry::{SourceSpec, Sources};

use tokio_util::sync::CancellationToken;

use crate::pipeline::{JobEmbedding, JobError, JobRun, JobState, Services};
use crate::queue::ClaimedJob;

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
