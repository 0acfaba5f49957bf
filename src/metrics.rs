//! Prometheus metrics of this process, served at `GET /metrics` (text format).
//!
//! Counters and histograms are process-wide (a `LazyLock` registry): the
//! workers and the pipeline record into them; the queue depth is read from
//! the queue when scraped. Each process exposes its own work; a scraper sums
//! over processes.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::JobStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source_type: String,
}

pub struct Metrics {
    registry: Registry,
    jobs_finished: Family<OutcomeLabel, Counter>,
    job_duration: Family<SourceLabel, Histogram>,
    documents: Family<SourceLabel, Counter>,
    chunks_upserted: Family<SourceLabel, Counter>,
    chunks_deleted: Family<SourceLabel, Counter>,
    bytes: Family<SourceLabel, Counter>,
    embed_batch: Histogram,
    queue_pending: Gauge,
    schedule_slots: Family<OutcomeLabel, Counter>,
    request_errors: Family<RequestErrorLabel, Counter>,
    embedding_requests: Family<EmbeddingRequestLabel, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EmbeddingRequestLabel {
    /// The model's name, as sources use it.
    pub model: String,
    /// `ok`, `retry` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestErrorLabel {
    /// `chroma`, `s3`, `github` or `web`.
    pub service: String,
    /// `timeout`, `connect`, `throttled`, `status_4xx`, `status_5xx` or `other`.
    pub kind: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 18))
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("chroma_syncd");
    let jobs_finished = Family::<OutcomeLabel, Counter>::default();
    registry.register(
        "jobs_finished",
        "Job attempts ended, by outcome (complete, failed, retry, cancelled, released)",
        jobs_finished.clone(),
    );
    let job_duration =
        Family::<SourceLabel, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
    registry.register(
        "job_duration_seconds",
        "Wall time of job attempts",
        job_duration.clone(),
    );
    let documents = Family::<SourceLabel, Counter>::default();
    registry.register("documents", "Documents processed", documents.clone());
    let chunks_upserted = Family::<SourceLabel, Counter>::default();
    registry.register(
        "chunks_upserted",
        "Chunks embedded and written to Chroma",
        chunks_upserted.clone(),
    );
    let chunks_deleted = Family::<SourceLabel, Counter>::default();
    registry.register(
        "chunks_deleted",
        "Stale chunks deleted",
        chunks_deleted.clone(),
    );
    let bytes = Family::<SourceLabel, Counter>::default();
    registry.register("source_bytes", "Bytes read from sources", bytes.clone());
    let embed_batch = Histogram::new(exponential_buckets(0.005, 2.0, 14));
    registry.register(
        "embed_batch_seconds",
        "Time to embed one batch of chunks",
        embed_batch.clone(),
    );
    let queue_pending = Gauge::default();
    registry.register(
        "queue_pending_jobs",
        "Jobs waiting in the queue (read when scraped)",
        queue_pending.clone(),
    );
    let schedule_slots = Family::<OutcomeLabel, Counter>::default();
    registry.register(
        "schedule_slots",
        "Schedule slots this process handled, by outcome (enqueued, skipped, failed)",
        schedule_slots.clone(),
    );
    let request_errors = Family::<RequestErrorLabel, Counter>::default();
    registry.register(
        "request_errors",
        "Failed requests to Chroma, S3, GitHub and websites, by kind",
        request_errors.clone(),
    );
    let embedding_requests = Family::<EmbeddingRequestLabel, Histogram>::new_with_constructor(
        (|| Histogram::new(exponential_buckets(0.005, 2.0, 16))) as fn() -> _,
    );
    registry.register(
        "embedding_request_seconds",
        "Requests to OpenAI-compatible embedding endpoints, by model and outcome",
        embedding_requests.clone(),
    );
    Metrics {
        registry,
        embedding_requests,
        schedule_slots,
        request_errors,
        jobs_finished,
        job_duration,
        documents,
        chunks_upserted,
        chunks_deleted,
        bytes,
        embed_batch,
        queue_pending,
    }
});

/// Records the end of a job attempt.
pub fn job_finished(source_type: &str, outcome: &str, seconds: f64, stats: &JobStats) {
    let metrics = &*METRICS;
    let source = SourceLabel {
        source_type: source_type.to_string(),
    };
    metrics
        .jobs_finished
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .inc();
    metrics.job_duration.get_or_create(&source).observe(seconds);
    metrics
        .documents
        .get_or_create(&source)
        .inc_by(stats.documents);
    metrics
        .chunks_upserted
        .get_or_create(&source)
        .inc_by(stats.chunks_upserted);
    metrics
        .chunks_deleted
        .get_or_create(&source)
        .inc_by(stats.chunks_deleted);
    metrics.bytes.get_or_create(&source).inc_by(stats.bytes);
}

pub fn schedule_slot(outcome: &str) {
    METRICS
        .schedule_slots
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .inc();
}

/// Counts a failed request to `service` (`chroma`, `s3`, `github`, `web`).
pub fn request_error(service: &str, kind: &str) {
    METRICS
        .request_errors
        .get_or_create(&RequestErrorLabel {
            service: service.to_string(),
            kind: kind.to_string(),
        })
        .inc();
}

/// The `kind` label for an HTTP status.
pub fn status_kind(status: u16) -> &'static str {
    match status {
        429 => "throttled",
        400..=499 => "status_4xx",
        500..=599 => "status_5xx",
        _ => "other",
    }
}

/// One request to an embedding endpoint and how it ended.
pub fn embedding_request(model: &str, outcome: &str, seconds: f64) {
    METRICS
        .embedding_requests
        .get_or_create(&EmbeddingRequestLabel {
            model: model.to_string(),
            outcome: outcome.to_string(),
        })
        .observe(seconds);
}

pub fn embed_batch(seconds: f64) {
    METRICS.embed_batch.observe(seconds);
}

/// The text exposition, with the queue depth as of now.
pub fn render(pending_jobs: Option<u64>) -> String {
    if let Some(pending) = pending_jobs {
        METRICS
            .queue_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &METRICS.registry)
        .expect("writing to a String");
    text
}
