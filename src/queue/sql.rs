//! The queue, written once for every SQL database that has a [`Dialect`].
//!
//! Everything the queue promises lives here: deduplication and
//! idempotency keys, claims with leases on the database's clock, fencing
//! of every write by the attempt that holds the lease, cancellation,
//! settling the jobs of workers that died, paging, retention, schedule
//! slots, and the links web crawls remember of their pages. What a
//! database does differently (its clock, how a claim keeps concurrent
//! claims apart) is its dialect's; what it promises about durability is
//! its constructor's (`sqlite.rs`, `postgres.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Pool;
use uuid::Uuid;

use super::dialect::{Dialect, Param, QueueRow, Sql};
use super::rows::{
    claimed_from_row, corrupt, delivery_from_row, job_from_row, pending_delivery_from_row,
    slot_from_row, source_from_row, to_time,
};
use super::{
    CancelOutcome, ClaimedJob, DeliveryResult, HeartbeatOutcome, JobFilter, NewDelivery, NewJob,
    Outcome, PendingDelivery, Queue, QueueError, SourceFilter, SourceRecord, StateChange,
    StateEntry,
};
use crate::config::sha256_hex;
use crate::model::{
    CreateSourcePayload, DeliveryAttempt, Job, JobStats, Progress, ScheduleSlot, SlotOutcome,
    SourceType, WebhookDelivery, canonical_json,
};

/// Claims retried after losing a same-key race, before giving up for this
/// round. Only PostgreSQL can lose one (its unique index on processing
/// keys refuses the second claim); SQLite serialises writers.
const CLAIM_ATTEMPTS: usize = 4;
/// Object keys looked up per statement by `latest_by_keys` (well under
/// either database's limit on bound parameters).
const KEYS_PER_LOOKUP: usize = 500;
/// Rows of source state written per `INSERT` (5 values each).
const STATE_PER_INSERT: usize = 100;

/// The queue on database `D`: [`super::SqliteQueue`] or [`super::PostgresQueue`].
pub struct SqlQueue<D: Dialect> {
    pool: Pool<D>,
    max_attempts: u32,
    /// When this process last settled expired leases (local clock, Unix
    /// ms; only paces the sweep, never judges a lease).
    last_sweep: AtomicI64,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A lease length in milliseconds, for adding to the database's clock.
fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

/// `true` when `error` is a unique index refusing a row.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

/// `AND database_name IN (…)` when the caller may see only some databases.
fn push_databases<D: Dialect>(query: &mut Sql<D>, databases: Option<&[String]>) {
    let Some(databases) = databases else { return };
    if databases.is_empty() {
        query.push(" AND 1 = 0");
        return;
    }
    query
        .push(" AND database_name IN ")
        .bind_list(databases.iter().map(String::as_str));
}

/// Newest (or oldest) first, then one page.
fn push_page<D: Dialect>(query: &mut Sql<D>, ascending: bool, limit: u32, offset: u32) {
    query.push(" ORDER BY created_at ");
    push_direction(query, ascending);
    query.push(", ").push(D::INSERTION_ORDER).push(" ");
    push_direction(query, ascending);
    query.push(" LIMIT ").bind(i64::from(limit));
    query.push(" OFFSET ").bind(i64::from(offset));
}

fn push_direction<D: Dialect>(query: &mut Sql<D>, ascending: bool) {
    query.push(if ascending { "ASC" } else { "DESC" });
}

/// `UPDATE jobs SET <set> WHERE id = ? AND attempt = ? AND state = 'processing'`:
/// the fence every write of an attempt's outcome passes.
fn push_fence<D: Dialect>(query: &mut Sql<D>, id: Uuid, attempt: u32) {
    query
        .push(" WHERE id = ")
        .bind(id.to_string())
        .push(" AND attempt = ")
        .bind(i64::from(attempt))
        .push(" AND state = 'processing'");
}

impl<D: Dialect> SqlQueue<D> {
    /// A queue on `pool`, whose migrations have run.
    pub(super) fn new(pool: Pool<D>, max_attempts: u32) -> Self {
        SqlQueue {
            pool,
            max_attempts: max_attempts.max(1),
            last_sweep: AtomicI64::new(0),
        }
    }

    async fn execute(&self, query: Sql<D>) -> Result<u64, QueueError> {
        Ok(D::execute(&self.pool, query).await?)
    }

    async fn fetch_optional(&self, query: Sql<D>) -> Result<Option<D::Row>, QueueError> {
        Ok(D::fetch_optional(&self.pool, query).await?)
    }

    async fn fetch_all(&self, query: Sql<D>) -> Result<Vec<D::Row>, QueueError> {
        Ok(D::fetch_all(&self.pool, query).await?)
    }

    /// Cancels a pending job, or asks a processing one to stop; times are
    /// this process's (they are reported, never compared with a lease).
    async fn try_cancel(&self, id: Uuid, by: Option<&str>) -> Result<CancelOutcome, QueueError> {
        let now = now_ms();
        let mut cancel = Sql::new("UPDATE jobs SET state = 'cancelled', finished_at = ");
        cancel
            .bind(now)
            .push(", cancel_requested_by = ")
            .bind(by)
            .push(" WHERE id = ")
            .bind(id.to_string())
            .push(" AND state = 'pending'");
        if self.execute(cancel).await? > 0 {
            return Ok(CancelOutcome::Cancelled);
        }
        let mut request =
            Sql::new("UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ");
        request
            .bind(now)
            .push("), cancel_requested_by = COALESCE(cancel_requested_by, ")
            .bind(by)
            .push(") WHERE id = ")
            .bind(id.to_string())
            .push(" AND state = 'processing'");
        if self.execute(request).await? > 0 {
            return Ok(CancelOutcome::Requested);
        }
        Ok(match self.get_job(id).await? {
            Some(job) => CancelOutcome::AlreadyFinished(job.status),
            None => CancelOutcome::NotFound,
        })
    }

    /// `true` when this process should settle expired leases now: always,
    /// or at most once per the dialect's interval (judged on the local
    /// clock, which only paces the sweep; expiry is the database's).
    fn sweep_due(&self) -> bool {
        let Some(interval) = D::SWEEP_INTERVAL_MS else {
            return true;
        };
        let now = now_ms();
        let last = self.last_sweep.load(Ordering::Relaxed);
        (now - last).abs() >= interval
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// Settles jobs whose worker died: cancelled if a cancel was asked,
    /// failed if that was their last allowed attempt (so a job that kills
    /// its worker every time ends `failed`, saying so, instead of looping),
    /// else back to pending with the reason recorded. Expiry is judged on
    /// the database's clock.
    async fn sweep_expired_leases(&self) -> Result<(), QueueError> {
        if !self.sweep_due() {
            return Ok(());
        }
        // A cancel asked of a job whose worker died is honoured now.
        self.execute(Sql::new(
            "UPDATE jobs SET state = 'cancelled', finished_at = NOW_MS, lease_owner = NULL
             WHERE state = 'processing' AND lease_expires_at < NOW_MS
               AND cancel_requested_at IS NOT NULL",
        ))
        .await?;
        self.execute(Sql::new(
            "UPDATE jobs SET state = 'failed', finished_at = NOW_MS, lease_owner = NULL,
                 error = LEASE_EXPIRED_ERROR
             WHERE state = 'processing' AND lease_expires_at < NOW_MS AND attempt >= max_attempts",
        ))
        .await?;
        // The rest go back to pending, to be claimed (attempt + 1) at once;
        // the dead attempt's heartbeats and outcome are fenced out.
        // Each statement reads the clock anew: a lease that expires between
        // them must still meet the two rules above, hence their negation here.
        self.execute(Sql::new(
            "UPDATE jobs SET state = 'pending', run_after = NOW_MS, lease_owner = NULL,
                 lease_expires_at = NULL, last_error = LEASE_EXPIRED_ERROR
             WHERE state = 'processing' AND lease_expires_at < NOW_MS
               AND attempt < max_attempts AND cancel_requested_at IS NULL",
        ))
        .await?;
        Ok(())
    }

    /// The claim: the oldest row the dialect calls claimable whose key no
    /// other row holds, taken in one statement on the database's clock.
    fn claim_statement(worker: &str, lease: Duration) -> Sql<D> {
        let mut claim =
            Sql::new("UPDATE jobs SET state = 'processing', attempt = attempt + 1, lease_owner = ");
        claim
            .bind(worker)
            .push(", lease_expires_at = NOW_MS + ")
            .bind(lease_ms(lease))
            .push(
                ", started_at = NOW_MS, last_heartbeat_at = NOW_MS, progress = NULL
                 WHERE id = (
                     SELECT j.id FROM jobs j WHERE ",
            )
            .push(D::CLAIMABLE)
            .push(
                " AND NOT EXISTS (
                       SELECT 1 FROM jobs o
                       WHERE o.concurrency_key = j.concurrency_key AND ",
            )
            .push(D::KEY_HELD_BY)
            .push(
                ")
                     ORDER BY j.run_after, j.",
            )
            .push(D::INSERTION_ORDER)
            .push(" LIMIT 1 ")
            .push(D::CLAIM_LOCK)
            .push(") RETURNING *");
        claim
    }
}

#[async_trait]
impl<D: Dialect> Queue for SqlQueue<D> {
    async fn ping(&self) -> Result<(), QueueError> {
        self.execute(Sql::new("SELECT 1")).await?;
        Ok(())
    }

    async fn create_source(
        &self,
        source_type: SourceType,
        payload: &CreateSourcePayload,
    ) -> Result<SourceRecord, QueueError> {
        let payload_json = serde_json::to_string(payload).map_err(|e| corrupt("source", e))?;
        let canonical =
            canonical_json(&serde_json::to_value(payload).map_err(|e| corrupt("source", e))?);
        let record = SourceRecord {
            id: Uuid::new_v4(),
            source_type,
            payload: payload.clone(),
            created_at: to_time(now_ms()),
        };
        let mut insert = Sql::new(
            "INSERT INTO sources (id, source_type, database_name, payload, dedupe_key, created_at)
             VALUES (",
        );
        insert
            .bind(record.id.to_string())
            .push(", ")
            .bind(source_type.as_str())
            .push(", ")
            .bind(payload.database_name.as_str())
            .push(", ")
            .bind(payload_json)
            .push(", ")
            .bind(sha256_hex(canonical.as_bytes()))
            .push(", ")
            .bind(record.created_at.timestamp_millis())
            .push(")");
        match D::execute(&self.pool, insert).await {
            Ok(_) => Ok(record),
            Err(e) if is_unique_violation(&e) => Err(QueueError::Duplicate("source")),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_source(&self, id: Uuid) -> Result<Option<SourceRecord>, QueueError> {
        let mut select = Sql::new("SELECT * FROM sources WHERE id = ");
        select.bind(id.to_string());
        let row = self.fetch_optional(select).await?;
        row.as_ref().map(source_from_row).transpose()
    }

    async fn list_sources(&self, filter: &SourceFilter) -> Result<Vec<SourceRecord>, QueueError> {
        let mut query = Sql::new("SELECT * FROM sources WHERE 1 = 1");
        if let Some(database) = &filter.database_name {
            query.push(" AND database_name = ").bind(database.as_str());
        }
        if let Some(source_type) = filter.source_type {
            query.push(" AND source_type = ").bind(source_type.as_str());
        }
        push_databases(&mut query, filter.databases.as_deref());
        push_page(&mut query, filter.ascending, filter.limit, filter.offset);
        let rows = self.fetch_all(query).await?;
        rows.iter().map(source_from_row).collect()
    }

    async fn delete_source(&self, id: Uuid) -> Result<bool, QueueError> {
        let now = now_ms();
        let mut delete = Sql::new("DELETE FROM sources WHERE id = ");
        delete.bind(id.to_string());
        let mut cancel = Sql::new("UPDATE jobs SET state = 'cancelled', finished_at = ");
        cancel
            .bind(now)
            .push(" WHERE source_id = ")
            .bind(id.to_string())
            .push(" AND state = 'pending'");
        let mut request =
            Sql::new("UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ");
        request
            .bind(now)
            .push(") WHERE source_id = ")
            .bind(id.to_string())
            .push(" AND state = 'processing'");
        // What its kind remembered of it goes with it.
        let mut state = Sql::new("DELETE FROM source_state WHERE source_id = ");
        state.bind(id.to_string());
        let changed =
            D::execute_in_transaction(&self.pool, vec![delete, cancel, request, state]).await?;
        Ok(changed.first().is_some_and(|deleted| *deleted > 0))
    }

    async fn enqueue(&self, job: NewJob) -> Result<Job, QueueError> {
        let mut payload = serde_json::to_value(&job.payload).map_err(|e| corrupt("payload", e))?;
        if let (Some(upload), Some(fields)) = (&job.upload, payload.as_object_mut()) {
            let upload = serde_json::to_value(upload).map_err(|e| corrupt("upload", e))?;
            fields.insert("upload".to_string(), upload);
        }
        let payload = payload.to_string();
        let metadata = serde_json::to_string(&job.metadata).map_err(|e| corrupt("metadata", e))?;
        let mut insert = Sql::new(
            "INSERT INTO jobs (id, source_id, source_type, database_name, object_key, payload,
                               metadata, trigger_kind, state, concurrency_key, dedupe_key,
                               created_at, run_after, max_attempts, idempotency_key,
                               request_sha256, created_by, notify)
             VALUES (",
        );
        let idempotency = job.idempotency.as_ref();
        // Jobs without a source (uploads) store NULL.
        let source_id = (!job.source_id.is_nil()).then(|| job.source_id.to_string());
        insert
            .bind(job.id.unwrap_or_else(Uuid::new_v4).to_string())
            .push(", ")
            .bind(source_id)
            .push(", ")
            .bind(job.source_type.as_str())
            .push(", ")
            .bind(job.metadata.database_name.as_str())
            .push(", ")
            .bind(job.payload.object_key.clone())
            .push(", ")
            .bind(payload)
            .push(", ")
            .bind(metadata)
            .push(", ")
            .bind(job.trigger.as_str())
            .push(", 'pending', ")
            .bind(job.concurrency_key.as_str())
            .push(", ")
            .bind(job.dedupe_key.as_str())
            .push(", ")
            .bind(now_ms())
            // Due from the database's clock, on which claims compare it.
            .push(", NOW_MS, ")
            .bind(i64::from(self.max_attempts))
            .push(", ")
            .bind(idempotency.map(|i| i.key.clone()))
            .push(", ")
            .bind(idempotency.map(|i| i.request_sha256.clone()))
            .push(", ")
            .bind(job.created_by.clone())
            .push(", ")
            .bind(i64::from(job.notify))
            .push(") RETURNING *");
        match D::fetch_optional(&self.pool, insert).await {
            Ok(Some(row)) => job_from_row(&row),
            Ok(None) => Err(QueueError::Corrupt("job vanished after insert".into())),
            Err(e) if is_unique_violation(&e) => Err(QueueError::Duplicate("invocation")),
            Err(e) => Err(e.into()),
        }
    }

    async fn find_idempotent(
        &self,
        source_id: Uuid,
        key: &str,
    ) -> Result<Option<(Job, String)>, QueueError> {
        let mut select = Sql::new("SELECT * FROM jobs WHERE source_id = ");
        select
            .bind(source_id.to_string())
            .push(" AND idempotency_key = ")
            .bind(key);
        let row = self.fetch_optional(select).await?;
        row.map(|row| {
            let hash = row.optional_text("request_sha256")?;
            Ok((job_from_row(&row)?, hash.unwrap_or_default()))
        })
        .transpose()
    }

    async fn claim_schedule_slot(
        &self,
        source_id: Uuid,
        slot: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let mut insert = Sql::new(
            "INSERT INTO schedule_slots (source_id, slot_at, outcome, jobs, recorded_at) VALUES (",
        );
        insert
            .bind(source_id.to_string())
            .push(", ")
            .bind(slot.timestamp_millis())
            .push(", ")
            .bind(SlotOutcome::Claimed.as_str())
            .push(", 0, ")
            .bind(now_ms())
            .push(") ON CONFLICT DO NOTHING");
        Ok(self.execute(insert).await? == 1)
    }

    async fn record_schedule_slot(
        &self,
        source_id: Uuid,
        slot: DateTime<Utc>,
        outcome: SlotOutcome,
        jobs: u32,
        message: Option<&str>,
    ) -> Result<(), QueueError> {
        let mut update = Sql::new("UPDATE schedule_slots SET outcome = ");
        update
            .bind(outcome.as_str())
            .push(", jobs = ")
            .bind(i32::try_from(jobs).unwrap_or(i32::MAX))
            .push(", message = ")
            .bind(message)
            .push(", recorded_at = ")
            .bind(now_ms())
            .push(" WHERE source_id = ")
            .bind(source_id.to_string())
            .push(" AND slot_at = ")
            .bind(slot.timestamp_millis());
        self.execute(update).await?;
        Ok(())
    }

    async fn schedule_slots(
        &self,
        source_id: Uuid,
        limit: u32,
    ) -> Result<Vec<ScheduleSlot>, QueueError> {
        let mut select = Sql::new("SELECT * FROM schedule_slots WHERE source_id = ");
        select
            .bind(source_id.to_string())
            .push(" ORDER BY slot_at DESC LIMIT ")
            .bind(i64::from(limit));
        let rows = self.fetch_all(select).await?;
        rows.iter().map(slot_from_row).collect()
    }

    async fn pending_count(&self) -> Result<u64, QueueError> {
        let count = Sql::new("SELECT COUNT(*) AS pending FROM jobs WHERE state = 'pending'");
        let row = self
            .fetch_optional(count)
            .await?
            .ok_or_else(|| QueueError::Corrupt("COUNT(*) returned no row".into()))?;
        Ok(row.int("pending")? as u64)
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        let mut jobs = Sql::new(
            // A job still owing its webhook a delivery row stays.
            "DELETE FROM jobs WHERE state IN ('complete', 'failed', 'cancelled') AND notify <> 1
               AND finished_at < ",
        );
        jobs.bind(before.timestamp_millis());
        let deleted = self.execute(jobs).await?;
        let mut slots = Sql::new("DELETE FROM schedule_slots WHERE recorded_at < ");
        slots.bind(before.timestamp_millis());
        self.execute(slots).await?;
        let mut deliveries = Sql::new(
            "DELETE FROM webhook_deliveries WHERE state IN ('delivered', 'failed') AND created_at < ",
        );
        deliveries.bind(before.timestamp_millis());
        self.execute(deliveries).await?;
        Ok(deleted)
    }

    async fn get_job(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let mut select = Sql::new("SELECT * FROM jobs WHERE id = ");
        select.bind(id.to_string());
        let row = self.fetch_optional(select).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, QueueError> {
        let mut query = Sql::new("SELECT * FROM jobs WHERE 1 = 1");
        if let Some(source_id) = filter.source_id {
            query.push(" AND source_id = ").bind(source_id.to_string());
        }
        if let Some(database) = &filter.database_name {
            query.push(" AND database_name = ").bind(database.as_str());
        }
        if let Some(source_type) = filter.source_type {
            query.push(" AND source_type = ").bind(source_type.as_str());
        }
        if let Some(status) = filter.status {
            query.push(" AND state = ").bind(status.as_str());
        }
        push_databases(&mut query, filter.databases.as_deref());
        push_page(&mut query, filter.ascending, filter.limit, filter.offset);
        let rows = self.fetch_all(query).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// One statement per [`KEYS_PER_LOOKUP`] keys; the answer follows the
    /// order of `keys` (a key asked twice is answered twice).
    async fn latest_by_keys(
        &self,
        source_id: Uuid,
        keys: &[String],
    ) -> Result<Vec<(String, Job)>, QueueError> {
        let mut newest: HashMap<String, Job> = HashMap::new();
        for batch in keys.chunks(KEYS_PER_LOOKUP) {
            let mut select = Sql::new(
                "SELECT * FROM (
                     SELECT jobs.*, ROW_NUMBER() OVER (
                         PARTITION BY object_key ORDER BY created_at DESC, ",
            );
            select
                .push(D::INSERTION_ORDER)
                .push(
                    " DESC) AS newest_first
                     FROM jobs WHERE source_id = ",
                )
                .bind(source_id.to_string())
                .push(" AND object_key IN ")
                .bind_list(batch.iter().map(String::as_str))
                .push(") AS ranked WHERE newest_first = 1");
            for row in self.fetch_all(select).await? {
                newest.insert(row.text("object_key")?, job_from_row(&row)?);
            }
        }
        Ok(keys
            .iter()
            .filter_map(|key| Some((key.clone(), newest.get(key)?.clone())))
            .collect())
    }

    async fn cancel(&self, id: Uuid, by: Option<&str>) -> Result<CancelOutcome, QueueError> {
        // A job may move between the two updates (processing → pending on a
        // retry); go round again rather than answer from a stale state.
        for _ in 0..5 {
            match self.try_cancel(id, by).await? {
                CancelOutcome::AlreadyFinished(status) if !status.is_finished() => continue,
                outcome => return Ok(outcome),
            }
        }
        self.try_cancel(id, by).await
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>, QueueError> {
        self.sweep_expired_leases().await?;
        for _ in 0..CLAIM_ATTEMPTS {
            match D::fetch_optional(&self.pool, Self::claim_statement(worker, lease)).await {
                Ok(Some(row)) => return Ok(Some(claimed_from_row(&row)?)),
                Ok(None) => return Ok(None),
                // Another worker claimed a job of the same key a moment
                // earlier (PostgreSQL's unique index on processing keys said no).
                Err(e) if is_unique_violation(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    async fn heartbeat(
        &self,
        id: Uuid,
        attempt: u32,
        lease: Duration,
        progress: Option<&Progress>,
        stats: &JobStats,
    ) -> Result<HeartbeatOutcome, QueueError> {
        let progress = progress
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt("progress", e))?;
        let stats = serde_json::to_string(stats).map_err(|e| corrupt("stats", e))?;
        let mut renew = Sql::new("UPDATE jobs SET lease_expires_at = NOW_MS + ");
        renew
            .bind(lease_ms(lease))
            .push(", last_heartbeat_at = NOW_MS, progress = COALESCE(")
            .bind(progress)
            .push(", progress), stats = ")
            .bind(stats);
        push_fence(&mut renew, id, attempt);
        renew.push(" RETURNING cancel_requested_at");
        Ok(match self.fetch_optional(renew).await? {
            None => HeartbeatOutcome::LeaseLost,
            Some(row) if row.optional_int("cancel_requested_at")?.is_some() => {
                HeartbeatOutcome::CancelRequested
            }
            Some(_) => HeartbeatOutcome::Continue,
        })
    }

    async fn finish(
        &self,
        id: Uuid,
        attempt: u32,
        outcome: Outcome,
        stats: &JobStats,
    ) -> Result<bool, QueueError> {
        let stats = serde_json::to_string(stats).map_err(|e| corrupt("stats", e))?;
        // Every outcome is one UPDATE fenced by the attempt; the time is the
        // database's (`NOW_MS`), like the lease's.
        let mut update = Sql::new("UPDATE jobs SET ");
        match outcome {
            Outcome::Complete => {
                update
                    .push("state = 'complete', finished_at = NOW_MS, duration_ms = ")
                    .push(D::GREATEST)
                    .push(
                        "(0, NOW_MS - COALESCE(started_at, NOW_MS)),
                         lease_owner = NULL, last_error = NULL,
                         progress = '{\"step\":1,\"total_steps\":1,\"message\":\"done\"}'",
                    );
            }
            Outcome::Failed(error) => {
                update
                    .push("state = 'failed', finished_at = NOW_MS, lease_owner = NULL, error = ")
                    .bind(error);
            }
            Outcome::Cancelled => {
                update.push("state = 'cancelled', finished_at = NOW_MS, lease_owner = NULL");
            }
            Outcome::Retry { error, after } => {
                update
                    .push(
                        "state = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
                         finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE NOW_MS END,
                         lease_owner = NULL, lease_expires_at = NULL, run_after = NOW_MS + ",
                    )
                    .bind(after.as_millis() as i64)
                    .push(", last_error = ")
                    .bind(error);
            }
            Outcome::Released => {
                update.push(
                    "state = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
                     finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE NOW_MS END,
                     attempt = CASE WHEN cancel_requested_at IS NULL THEN attempt - 1 ELSE attempt END,
                     run_after = NOW_MS, lease_owner = NULL, lease_expires_at = NULL",
                );
            }
        }
        update.push(", stats = ").bind(stats);
        push_fence(&mut update, id, attempt);
        Ok(self.execute(update).await? > 0)
    }

    async fn unannounced_jobs(&self, limit: u32) -> Result<Vec<Job>, QueueError> {
        let mut query = Sql::new(
            "SELECT * FROM jobs WHERE notify = 1
               AND state IN ('complete', 'failed', 'cancelled')
             ORDER BY finished_at LIMIT ",
        );
        query.bind(i64::from(limit));
        self.fetch_all(query)
            .await?
            .iter()
            .map(job_from_row)
            .collect()
    }

    async fn announce(
        &self,
        job_id: Uuid,
        delivery: Option<NewDelivery>,
    ) -> Result<(), QueueError> {
        let mut statements = Vec::new();
        if let Some(delivery) = delivery {
            let mut insert = Sql::new(
                "INSERT INTO webhook_deliveries (id, source_id, job_id, event, url, body, state,
                     attempts, next_attempt_at, give_up_at, created_at)
                 VALUES (",
            );
            insert
                .bind(Uuid::new_v4().to_string())
                .push(", ")
                .bind(delivery.source_id.to_string())
                .push(", ")
                .bind(job_id.to_string())
                .push(", ")
                .bind(delivery.event.as_str())
                .push(", ")
                .bind(delivery.url)
                .push(", ")
                .bind(delivery.body)
                .push(", 'pending', 0, NOW_MS, NOW_MS + ")
                .bind(lease_ms(delivery.retry_for))
                .push(", NOW_MS) ON CONFLICT (job_id, event) DO NOTHING");
            statements.push(insert);
        }
        let mut mark = Sql::new("UPDATE jobs SET notify = 2 WHERE id = ");
        mark.bind(job_id.to_string());
        statements.push(mark);
        D::execute_in_transaction(&self.pool, statements).await?;
        Ok(())
    }

    async fn claim_delivery(&self, lease: Duration) -> Result<Option<PendingDelivery>, QueueError> {
        const DUE: &str = "((state = 'pending' AND next_attempt_at <= NOW_MS)
                            OR (state = 'delivering' AND lease_expires_at < NOW_MS))";
        let mut candidates = Sql::new("SELECT id, attempts FROM webhook_deliveries WHERE ");
        candidates
            .push(DUE)
            .push(" ORDER BY next_attempt_at LIMIT 8");
        for row in self.fetch_all(candidates).await? {
            let (id, attempts) = (row.text("id")?, row.int("attempts")?);
            // Taken only if no other process took it since: `attempts`
            // fences the claim as it fences the result.
            let mut claim = Sql::new(
                "UPDATE webhook_deliveries SET state = 'delivering', attempts = attempts + 1,
                     lease_expires_at = NOW_MS + ",
            );
            claim
                .bind(lease_ms(lease))
                .push(" WHERE id = ")
                .bind(id)
                .push(" AND attempts = ")
                .bind(attempts)
                .push(" AND ")
                .push(DUE)
                .push(" RETURNING *");
            if let Some(row) = self.fetch_optional(claim).await? {
                return pending_delivery_from_row(&row).map(Some);
            }
        }
        Ok(None)
    }

    async fn record_delivery(
        &self,
        delivery: &PendingDelivery,
        result: DeliveryResult,
    ) -> Result<(), QueueError> {
        /// Attempts kept in `responses`.
        const KEPT_RESPONSES: usize = 20;
        let mut responses = delivery.responses.clone();
        responses.push(DeliveryAttempt {
            at: Utc::now(),
            status: result.status,
            error: result.error.clone(),
        });
        let excess = responses.len().saturating_sub(KEPT_RESPONSES);
        responses.drain(..excess);
        let responses = serde_json::to_string(&responses).map_err(|e| corrupt("responses", e))?;
        let mut update = Sql::new("UPDATE webhook_deliveries SET lease_expires_at = NULL, ");
        match result.retry_after {
            None => {
                update.push("state = 'delivered', delivered_at = NOW_MS");
            }
            Some(wait) => {
                update
                    .push("state = CASE WHEN NOW_MS + ")
                    .bind(lease_ms(wait))
                    .push(" > give_up_at THEN 'failed' ELSE 'pending' END, next_attempt_at = NOW_MS + ")
                    .bind(lease_ms(wait));
            }
        }
        update
            .push(", last_status = ")
            .bind(result.status.map(i64::from))
            .push(", last_error = ")
            .bind(result.error)
            .push(", responses = ")
            .bind(responses)
            .push(" WHERE id = ")
            .bind(delivery.id.to_string())
            .push(" AND attempts = ")
            .bind(i64::from(delivery.attempts))
            .push(" AND state = 'delivering'");
        self.execute(update).await?;
        Ok(())
    }

    async fn set_webhook_secret(&self, source_id: Uuid, secret: &str) -> Result<bool, QueueError> {
        let mut update = Sql::new("UPDATE sources SET webhook_secret = ");
        update
            .bind(secret.to_string())
            .push(" WHERE id = ")
            .bind(source_id.to_string());
        Ok(self.execute(update).await? > 0)
    }

    async fn webhook_secret(&self, source_id: Uuid) -> Result<Option<String>, QueueError> {
        let mut select = Sql::new("SELECT webhook_secret FROM sources WHERE id = ");
        select.bind(source_id.to_string());
        match self.fetch_optional(select).await? {
            Some(row) => Ok(row.optional_text("webhook_secret")?),
            None => Ok(None),
        }
    }

    async fn list_deliveries(
        &self,
        source_id: Uuid,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, QueueError> {
        let mut query = Sql::new("SELECT * FROM webhook_deliveries WHERE source_id = ");
        query
            .bind(source_id.to_string())
            .push(" ORDER BY created_at DESC, id LIMIT ")
            .bind(i64::from(limit));
        self.fetch_all(query)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    async fn put_upload_piece(
        &self,
        upload: Uuid,
        seq: u32,
        data: &[u8],
    ) -> Result<(), QueueError> {
        let mut insert =
            Sql::new("INSERT INTO upload_blobs (upload_id, seq, data, created_at) VALUES (");
        insert
            .bind(upload.to_string())
            .push(", ")
            .bind(i64::from(seq))
            .push(", ")
            .bind(Param::Bytes(data.to_vec()))
            .push(", ")
            .bind(now_ms())
            .push(")");
        self.execute(insert).await?;
        Ok(())
    }

    async fn upload_piece(&self, upload: Uuid, seq: u32) -> Result<Option<Vec<u8>>, QueueError> {
        let mut query = Sql::new("SELECT data FROM upload_blobs WHERE upload_id = ");
        query
            .bind(upload.to_string())
            .push(" AND seq = ")
            .bind(i64::from(seq));
        Ok(match self.fetch_optional(query).await? {
            Some(row) => Some(row.bytes("data")?),
            None => None,
        })
    }

    async fn delete_upload(&self, upload: Uuid) -> Result<(), QueueError> {
        let mut delete = Sql::new("DELETE FROM upload_blobs WHERE upload_id = ");
        delete.bind(upload.to_string());
        self.execute(delete).await?;
        Ok(())
    }

    async fn upload_bytes(&self) -> Result<u64, QueueError> {
        let row = self
            .fetch_optional(Sql::new(
                "SELECT CAST(COALESCE(SUM(LENGTH(data)), 0) AS BIGINT) AS total FROM upload_blobs",
            ))
            .await?;
        Ok(match row {
            Some(row) => u64::try_from(row.int("total")?).unwrap_or(0),
            None => 0,
        })
    }

    async fn stale_uploads(&self, before: DateTime<Utc>) -> Result<Vec<Uuid>, QueueError> {
        let mut query = Sql::new(
            "SELECT b.upload_id AS id FROM upload_blobs b
               LEFT JOIN jobs j ON j.id = b.upload_id
             WHERE b.seq = 0
               AND (j.state IN ('complete', 'failed', 'cancelled')
                    OR (j.id IS NULL AND b.created_at < ",
        );
        query.bind(before.timestamp_millis()).push(")) LIMIT 100");
        self.fetch_all(query)
            .await?
            .iter()
            .map(|row| {
                let id = row.text("id")?;
                Uuid::parse_str(&id).map_err(|e| corrupt("upload id", e))
            })
            .collect()
    }

    /// One statement per [`KEYS_PER_LOOKUP`] keys.
    async fn state(
        &self,
        source_id: Uuid,
        namespace: &str,
        keys: &[String],
    ) -> Result<Vec<StateEntry>, QueueError> {
        let mut entries = Vec::new();
        for batch in keys.chunks(KEYS_PER_LOOKUP) {
            let mut select = Sql::new("SELECT key, value FROM source_state WHERE source_id = ");
            select
                .bind(source_id.to_string())
                .push(" AND namespace = ")
                .bind(namespace)
                .push(" AND key IN ")
                .bind_list(batch.iter().map(String::as_str));
            for row in self.fetch_all(select).await? {
                entries.push(state_entry(&row)?);
            }
        }
        Ok(entries)
    }

    /// `substr` rather than a range or `LIKE`: the same in both dialects,
    /// whatever the collation, with nothing in the prefix to escape.
    async fn state_with_prefix(
        &self,
        source_id: Uuid,
        namespace: &str,
        prefix: &str,
    ) -> Result<Vec<StateEntry>, QueueError> {
        let mut select = Sql::new("SELECT key, value FROM source_state WHERE source_id = ");
        select
            .bind(source_id.to_string())
            .push(" AND namespace = ")
            .bind(namespace);
        if !prefix.is_empty() {
            select
                .push(" AND substr(key, 1, length(")
                .bind(prefix)
                .push(")) = ")
                .bind(prefix);
        }
        select.push(" ORDER BY updated_at, key");
        let rows = self.fetch_all(select).await?;
        rows.iter().map(state_entry).collect()
    }

    /// Deletes, then upserts [`STATE_PER_INSERT`] rows a statement, all in
    /// one transaction.
    async fn change_state(
        &self,
        source_id: Uuid,
        changes: &[StateChange],
    ) -> Result<(), QueueError> {
        // The last change of each key: a statement may not touch a row twice.
        let mut last: HashMap<(&str, &str), &StateChange> = HashMap::new();
        for change in changes {
            last.insert((change.namespace, change.key.as_str()), change);
        }
        let mut forget: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut put: Vec<&StateChange> = Vec::new();
        for change in last.into_values() {
            match change.value {
                Some(_) => put.push(change),
                None => forget
                    .entry(change.namespace)
                    .or_default()
                    .push(change.key.as_str()),
            }
        }
        let mut statements = Vec::new();
        for (namespace, keys) in forget {
            for batch in keys.chunks(KEYS_PER_LOOKUP) {
                let mut delete = Sql::new("DELETE FROM source_state WHERE source_id = ");
                delete
                    .bind(source_id.to_string())
                    .push(" AND namespace = ")
                    .bind(namespace)
                    .push(" AND key IN ")
                    .bind_list(batch.iter().copied());
                statements.push(delete);
            }
        }
        let now = now_ms();
        for batch in put.chunks(STATE_PER_INSERT) {
            let mut insert = Sql::new(
                "INSERT INTO source_state (source_id, namespace, key, value, updated_at) VALUES ",
            );
            for (i, change) in batch.iter().enumerate() {
                insert
                    .push(if i == 0 { "(" } else { ", (" })
                    .bind(source_id.to_string())
                    .push(", ")
                    .bind(change.namespace)
                    .push(", ")
                    .bind(change.key.as_str())
                    .push(", ")
                    .bind(change.value.clone())
                    .push(", ")
                    .bind(now)
                    .push(")");
            }
            insert.push(
                " ON CONFLICT (source_id, namespace, key) \
                 DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            );
            statements.push(insert);
        }
        if !statements.is_empty() {
            D::execute_in_transaction(&self.pool, statements).await?;
        }
        Ok(())
    }
}

fn state_entry(row: &impl QueueRow) -> Result<StateEntry, QueueError> {
    Ok(StateEntry {
        key: row.text("key")?,
        value: row.text("value")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claim's text, per database: the same statement with the
    /// dialect's fragments, and exactly the two values bound that it names.
    #[test]
    fn the_claim_binds_the_worker_and_the_lease_and_keeps_each_dialects_lock() {
        let sqlite = SqlQueue::<sqlx::Sqlite>::claim_statement("w", Duration::from_secs(1)).text();
        let postgres =
            SqlQueue::<sqlx::Postgres>::claim_statement("w", Duration::from_secs(1)).text();
        assert!(
            sqlite.contains("lease_owner = ?, lease_expires_at = "),
            "{sqlite}"
        );
        assert!(
            !sqlite.contains("?3") && !sqlite.contains("NOW_MS"),
            "{sqlite}"
        );
        assert!(!sqlite.contains("SKIP LOCKED"), "{sqlite}");
        assert!(
            postgres.contains("lease_owner = $1, lease_expires_at = (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT + $2"),
            "{postgres}"
        );
        assert!(!postgres.contains("$3"), "{postgres}");
        assert!(
            postgres.contains("LIMIT 1 FOR UPDATE SKIP LOCKED)"),
            "{postgres}"
        );
    }

    #[test]
    fn the_fence_numbers_its_values_after_those_bound_before_it() {
        let id = Uuid::new_v4();
        let fence = "WHERE id = $4 AND attempt = $5 AND state = 'processing'";
        let mut retry = Sql::<sqlx::Postgres>::new("UPDATE jobs SET ");
        retry
            .push("run_after = NOW_MS + ")
            .bind(5_i64)
            .push(", last_error = ")
            .bind("e")
            .push(", stats = ")
            .bind("{}");
        push_fence(&mut retry, id, 2);
        assert!(retry.text().ends_with(fence), "{}", retry.text());
    }

    #[test]
    fn an_empty_database_list_matches_nothing() {
        let mut query = Sql::<sqlx::Sqlite>::new("SELECT * FROM jobs WHERE 1 = 1");
        push_databases(&mut query, Some(&[]));
        assert!(query.text().ends_with(" AND 1 = 0"));
        let mut query = Sql::<sqlx::Postgres>::new("SELECT * FROM jobs WHERE 1 = 1");
        push_databases(&mut query, Some(&["a".to_string(), "b".to_string()]));
        assert!(query.text().ends_with(" AND database_name IN ($1, $2)"));
    }
}
