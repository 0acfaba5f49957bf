//! The durable queue: the only state the API and the workers share.
//!
//! It holds sources and invocations ("jobs"), and what source kinds
//! remember between syncs ([`Queue::state`]: one key-value store for every
//! kind, shared by every process like the rest). A worker *claims* a pending job
//! and receives a lease; it renews the lease with heartbeats while it works.
//! A job whose lease runs out (its worker died) can be claimed again, and the
//! claim increments `attempt`. Every write of a job's outcome names the
//! attempt that produced it, so a worker that lost its lease can never
//! overwrite a newer attempt's result (fencing).
//!
//! Layout: the queue is written once, in `sql.rs` ([`SqlQueue`]), over a
//! [`Dialect`] (`dialect.rs`) that says what differs between databases.
//! `sqlite.rs` (the embedded default) and `postgres.rs` (shared by many
//! processes) hold each database's dialect and its `open`, which sets the
//! connection options the durability guarantees rest on and runs the
//! migrations. `rows.rs` turns rows into wire types. Another store would
//! implement [`Queue`].

pub mod dialect;
pub mod postgres;
mod rows;
mod sql;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{
    CreateJobPayload, CreateSourcePayload, DeliveryAttempt, IndexJobMetadata, Job, JobStats,
    JobStatus, Progress, ScheduleSlot, SourceType, Trigger, UploadSpec, WebhookDelivery,
    WebhookEvent,
};
pub use crate::model::{JobState, SlotOutcome};

/// SQL (for every database) of the error an attempt leaves when its lease ran
/// out: its worker stopped renewing it (the process died, or lost the queue)
/// before recording any outcome. It keeps the previous attempt's error, so a
/// job whose attempts keep dying says so when it finally fails.
const LEASE_EXPIRED_ERROR: &str = "'attempt ' || attempt || ' of ' || max_attempts
    || ' ended without a result: the worker stopped renewing its lease \
    (process crashed or was killed)' || COALESCE('; before that: ' || last_error, '')";

pub use dialect::Dialect;
pub use postgres::PostgresQueue;
pub use sql::SqlQueue;
pub use sqlite::SqliteQueue;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("an identical {0} already exists")]
    Duplicate(&'static str),
    #[error("queue database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("queue migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("queue holds malformed data: {0}")]
    Corrupt(String),
}

/// A stored source as the queue keeps it.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub id: Uuid,
    pub source_type: SourceType,
    pub payload: CreateSourcePayload,
    pub created_at: DateTime<Utc>,
}

/// What the API hands the queue to create a job.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// Nil for a job without a source (an upload).
    pub source_id: Uuid,
    pub source_type: SourceType,
    pub payload: CreateJobPayload,
    pub metadata: IndexJobMetadata,
    pub trigger: Trigger,
    /// Jobs with equal keys never run at the same time (same S3 object, or a
    /// whole-source sync of one collection).
    pub concurrency_key: String,
    /// Jobs with equal keys cannot both be pending or processing: a second
    /// identical invocation is refused with 409.
    pub dedupe_key: String,
    /// The request's `Idempotency-Key`, if it had one.
    pub idempotency: Option<IdempotencyKey>,
    /// The job's id when the caller must know it before it is stored (an
    /// upload names its stored file after its job); else a new one.
    pub id: Option<Uuid>,
    /// Audit: the name of the API token that asked for the job.
    pub created_by: Option<String>,
    /// The source has a webhook: once finished, the job owes it a delivery.
    pub notify: bool,
    /// An upload job's file and settings (stored in the payload as `upload`).
    pub upload: Option<UploadSpec>,
}

/// A webhook delivery to store for a finished job.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub source_id: Uuid,
    pub event: WebhookEvent,
    pub url: String,
    /// The Job JSON sent (and signed), fixed when the job finished.
    pub body: String,
    /// Retried until this long after now, then `failed`.
    pub retry_for: Duration,
}

/// A delivery claimed for one attempt (`attempts` counts it and fences
/// the write of its result).
#[derive(Debug, Clone)]
pub struct PendingDelivery {
    pub id: Uuid,
    pub source_id: Uuid,
    pub job_id: Uuid,
    pub event: WebhookEvent,
    pub url: String,
    pub body: String,
    pub attempts: u32,
    pub responses: Vec<DeliveryAttempt>,
}

/// How one delivery attempt went.
#[derive(Debug, Clone)]
pub struct DeliveryResult {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// `None`: delivered. `Some(wait)`: try again after `wait`, unless that
    /// is past the delivery's give-up time (then it is `failed`).
    pub retry_after: Option<Duration>,
}

/// An `Idempotency-Key` and the hash of the request it came with: a replay
/// with the same request gets the original job, another request a 409.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_sha256: String,
}

/// A job handed to a worker, with the attempt number that fences its writes.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub job: Job,
    pub payload: CreateJobPayload,
    /// Upload jobs: the file and its settings.
    pub upload: Option<UploadSpec>,
    pub source_type: SourceType,
    pub attempt: u32,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub source_id: Option<Uuid>,
    pub database_name: Option<String>,
    /// Only these databases (what the caller may see); `None` = all.
    pub databases: Option<Vec<String>>,
    pub source_type: Option<SourceType>,
    pub status: Option<JobState>,
    pub limit: u32,
    pub offset: u32,
    pub ascending: bool,
}

#[derive(Debug, Clone, Default)]
pub struct SourceFilter {
    pub database_name: Option<String>,
    /// Only these databases (what the caller may see); `None` = all.
    pub databases: Option<Vec<String>>,
    pub source_type: Option<SourceType>,
    pub limit: u32,
    pub offset: u32,
    pub ascending: bool,
}

/// One value of a source's durable state ([`Queue::state`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key: String,
    pub value: String,
}

/// A change to a source's durable state: `value` stored under `key` in
/// `namespace`, or (`None`) the key forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    pub namespace: &'static str,
    pub key: String,
    pub value: Option<String>,
}

/// Result of a cancel request.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The job was pending and is now `cancelled`.
    Cancelled,
    /// The job is processing; its worker will stop at the next check.
    Requested,
    /// The job already finished; carries its status.
    AlreadyFinished(JobStatus),
    NotFound,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    Continue,
    CancelRequested,
    /// Another attempt owns the job now (our lease expired): stop writing.
    LeaseLost,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Complete,
    Failed(String),
    /// Transient failure: back to `pending` until `after` has passed.
    Retry {
        error: String,
        after: Duration,
    },
    Cancelled,
    /// Shutdown: back to `pending` at once, this attempt not counted.
    Released,
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Cheap round trip, for health checks.
    async fn ping(&self) -> Result<(), QueueError>;

    async fn create_source(
        &self,
        source_type: SourceType,
        payload: &CreateSourcePayload,
    ) -> Result<SourceRecord, QueueError>;
    async fn get_source(&self, id: Uuid) -> Result<Option<SourceRecord>, QueueError>;
    async fn list_sources(&self, filter: &SourceFilter) -> Result<Vec<SourceRecord>, QueueError>;
    /// Deletes the source and cancels its pending jobs. `false` if unknown.
    async fn delete_source(&self, id: Uuid) -> Result<bool, QueueError>;

    async fn enqueue(&self, job: NewJob) -> Result<Job, QueueError>;
    /// The job created by an earlier request with this `Idempotency-Key`,
    /// and that request's hash.
    async fn find_idempotent(
        &self,
        source_id: Uuid,
        key: &str,
    ) -> Result<Option<(Job, String)>, QueueError>;
    /// Jobs waiting to run (for backpressure).
    async fn pending_count(&self) -> Result<u64, QueueError>;
    /// Deletes finished jobs that finished before `before`; returns how many.
    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError>;
    async fn get_job(&self, id: Uuid) -> Result<Option<Job>, QueueError>;
    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, QueueError>;
    /// The newest job per S3 object key of a source, in the order of `keys`;
    /// keys without a job are left out.
    async fn latest_by_keys(
        &self,
        source_id: Uuid,
        keys: &[String],
    ) -> Result<Vec<(String, Job)>, QueueError>;
    /// Cancels a pending job or asks a processing one to stop; `by` is the
    /// caller's token name, recorded as `cancel_requested_by`.
    async fn cancel(&self, id: Uuid, by: Option<&str>) -> Result<CancelOutcome, QueueError>;

    /// Claims a slot of a source's schedule: `true` for exactly one caller
    /// per (source, slot), however many daemons ask.
    async fn claim_schedule_slot(
        &self,
        source_id: Uuid,
        slot: DateTime<Utc>,
    ) -> Result<bool, QueueError>;
    /// Records what became of a claimed slot.
    async fn record_schedule_slot(
        &self,
        source_id: Uuid,
        slot: DateTime<Utc>,
        outcome: SlotOutcome,
        jobs: u32,
        message: Option<&str>,
    ) -> Result<(), QueueError>;
    /// A source's most recent slots, newest first.
    async fn schedule_slots(
        &self,
        source_id: Uuid,
        limit: u32,
    ) -> Result<Vec<ScheduleSlot>, QueueError>;

    /// Takes the oldest runnable job: pending and due, or processing with an
    /// expired lease; never one whose concurrency key is held by a live lease.
    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>, QueueError>;
    /// Renews the lease and records progress and stats.
    async fn heartbeat(
        &self,
        id: Uuid,
        attempt: u32,
        lease: Duration,
        progress: Option<&Progress>,
        stats: &JobStats,
    ) -> Result<HeartbeatOutcome, QueueError>;
    /// Records how the attempt ended. `false` when the attempt no longer owns
    /// the job (fenced out), in which case nothing was written.
    async fn finish(
        &self,
        id: Uuid,
        attempt: u32,
        outcome: Outcome,
        stats: &JobStats,
    ) -> Result<bool, QueueError>;

    // ------------------------------------------------------------ webhooks

    /// Finished jobs (oldest first) that still owe their source's webhook a
    /// delivery row.
    async fn unannounced_jobs(&self, limit: u32) -> Result<Vec<Job>, QueueError>;
    /// Stores the delivery of a finished job (at most one per job and
    /// event) and marks the job announced; `None` marks it announced only
    /// (its source is gone, or does not want the event).
    async fn announce(&self, job_id: Uuid, delivery: Option<NewDelivery>)
    -> Result<(), QueueError>;
    /// Takes the delivery due first (pending and due, or an attempt whose
    /// lease ran out) for one attempt of at most `lease`.
    async fn claim_delivery(&self, lease: Duration) -> Result<Option<PendingDelivery>, QueueError>;
    /// Records an attempt's result; nothing when another attempt took over.
    async fn record_delivery(
        &self,
        delivery: &PendingDelivery,
        result: DeliveryResult,
    ) -> Result<(), QueueError>;
    /// Stores the secret a source's webhook deliveries are signed with
    /// (replacing any); false when the source does not exist.
    async fn set_webhook_secret(&self, source_id: Uuid, secret: &str) -> Result<bool, QueueError>;
    /// The secret a source's webhook deliveries are signed with, if it has
    /// one (sources created before per-source secrets have none).
    async fn webhook_secret(&self, source_id: Uuid) -> Result<Option<String>, QueueError>;
    /// A source's deliveries, newest first.
    async fn list_deliveries(
        &self,
        source_id: Uuid,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, QueueError>;

    // ------------------------------------------------------------- uploads

    /// Stores piece `seq` of an uploaded file (the blob store used when
    /// several machines share the queue).
    async fn put_upload_piece(&self, upload: Uuid, seq: u32, data: &[u8])
    -> Result<(), QueueError>;
    /// Piece `seq` of an uploaded file; `None` past its end.
    async fn upload_piece(&self, upload: Uuid, seq: u32) -> Result<Option<Vec<u8>>, QueueError>;
    async fn delete_upload(&self, upload: Uuid) -> Result<(), QueueError>;
    /// Bytes of every uploaded file stored in the queue (finished or not).
    async fn upload_bytes(&self) -> Result<u64, QueueError>;
    /// Uploads whose job has finished, or that were stored before `before`
    /// and have no job (a request that failed after the file): the
    /// janitor's list.
    async fn stale_uploads(&self, before: DateTime<Utc>) -> Result<Vec<Uuid>, QueueError>;

    // ------------------------------------------------------ source state

    /// What source kinds remember between syncs, one store for all kinds
    /// (a web crawl's page validators and links, what S3 `.meta.json` files
    /// synced): the values of `keys` in the source's `namespace`, those it
    /// has, in no particular order. What a value holds is the kind's
    /// business; deleting the source forgets all of it.
    async fn state(
        &self,
        source_id: Uuid,
        namespace: &str,
        keys: &[String],
    ) -> Result<Vec<StateEntry>, QueueError>;
    /// Every value in the source's `namespace` whose key starts with
    /// `prefix`, oldest change first.
    async fn state_with_prefix(
        &self,
        source_id: Uuid,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<StateEntry>, QueueError>;
    /// Applies `changes` in one transaction (of a key changed twice, the
    /// last change counts).
    async fn change_state(
        &self,
        source_id: Uuid,
        changes: &[StateChange],
    ) -> Result<(), QueueError>;
}

/// Every source (of `source_type`, if given), read page by page: for the
/// loops that look at all sources (schedules, auto-sync).
pub async fn all_sources(
    queue: &dyn Queue,
    source_type: Option<SourceType>,
) -> Result<Vec<SourceRecord>, QueueError> {
    const PAGE: u32 = 500;
    let mut sources = Vec::new();
    for page in 0.. {
        let records = queue
            .list_sources(&SourceFilter {
                source_type,
                limit: PAGE,
                offset: page * PAGE,
                ascending: true,
                ..SourceFilter::default()
            })
            .await?;
        let last_page = records.len() < PAGE as usize;
        sources.extend(records);
        if last_page {
            break;
        }
    }
    Ok(sources)
}
