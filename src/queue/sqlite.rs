//! SQLite queue: the embedded default, one file in the state directory.
//!
//! WAL mode with `synchronous = FULL`: a job acknowledged with 201 is on disk
//! before the client hears about it, and survives `kill -9` and power loss.
//! SQLite serialises writers, so a claim (one `UPDATE … RETURNING`) is atomic
//! without further locking.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::rows::{corrupt, job_from_row, slot_from_row, source_from_row, to_time};
use super::{
    CancelOutcome, ClaimedJob, HeartbeatOutcome, JobFilter, NewJob, Outcome, Queue, QueueError,
    SourceFilter, SourceRecord,
};
use crate::config::sha256_hex;
use crate::model::{
    CreateJobPayload, CreateSourcePayload, Job, JobStats, Progress, ScheduleSlot, SourceType,
    canonical_json,
};

pub struct SqliteQueue {
    pool: SqlitePool,
    max_attempts: u32,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The database's clock in Unix milliseconds. SQLite evaluates `'now'` once
/// per statement step, so every `NOW_MS` of one statement is the same instant.
const DB_NOW_MS: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";

/// `sql` with each `NOW_MS` read from the database's clock. Leases are
/// granted, renewed, compared and settled on this one clock, never on a
/// timestamp a process computed (its clock may be skewed); only static text
/// is spliced in.
fn clocked(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(
        sql.replace("LEASE_EXPIRED_ERROR", super::LEASE_EXPIRED_ERROR)
            .replace("NOW_MS", DB_NOW_MS),
    )
}

/// `AND database_name IN (…)` when the caller may see only some databases.
fn push_databases(query: &mut QueryBuilder<Sqlite>, databases: Option<&[String]>) {
    let Some(databases) = databases else { return };
    if databases.is_empty() {
        query.push(" AND 0");
        return;
    }
    query.push(" AND database_name IN (");
    let mut list = query.separated(", ");
    for database in databases {
        list.push_bind(database.clone());
    }
    list.push_unseparated(")");
}

/// Newest (or oldest) first, then one page.
fn push_page(query: &mut QueryBuilder<Sqlite>, ascending: bool, limit: u32, offset: u32) {
    let order = if ascending { "ASC" } else { "DESC" };
    query.push(format!(
        " ORDER BY created_at {order}, rowid {order} LIMIT "
    ));
    query.push_bind(limit as i64);
    query.push(" OFFSET ").push_bind(offset as i64);
}

/// A lease length in milliseconds, for adding to the database's clock.
fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file and runs migrations.
    pub async fn open(path: &Path, max_attempts: u32) -> Result<Self, QueueError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                QueueError::Corrupt(format!("creating state dir {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqliteQueue {
            pool,
            max_attempts: max_attempts.max(1),
        })
    }

    async fn try_cancel(&self, id: Uuid) -> Result<CancelOutcome, QueueError> {
        let now = now_ms();
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state = 'pending'",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if cancelled > 0 {
            return Ok(CancelOutcome::Cancelled);
        }
        let requested = sqlx::query(
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?)
             WHERE id = ? AND state = 'processing'",
        )
        .bind(now)
        .bind(id.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if requested > 0 {
            return Ok(CancelOutcome::Requested);
        }
        Ok(match self.get_job(id).await? {
            Some(job) => CancelOutcome::AlreadyFinished(job.status),
            None => CancelOutcome::NotFound,
        })
    }

    /// Settles jobs whose worker died: cancelled if a cancel was asked, failed
    /// if that was their last allowed attempt (so a job that kills its worker
    /// every time ends `failed`, saying so, instead of looping), else back to
    /// pending with the reason recorded. Expiry is judged on the database's clock.
    async fn sweep_expired_leases(&self) -> Result<(), QueueError> {
        // A cancel asked of a job whose worker died is honoured now.
        sqlx::query(clocked(
            "UPDATE jobs SET state = 'cancelled', finished_at = NOW_MS, lease_owner = NULL
             WHERE state = 'processing' AND lease_expires_at < NOW_MS
               AND cancel_requested_at IS NOT NULL",
        ))
        .execute(&self.pool)
        .await?;
        sqlx::query(clocked(
            "UPDATE jobs SET state = 'failed', finished_at = NOW_MS, lease_owner = NULL,
                 error = LEASE_EXPIRED_ERROR
             WHERE state = 'processing' AND lease_expires_at < NOW_MS AND attempt >= max_attempts",
        ))
        .execute(&self.pool)
        .await?;
        // The rest go back to pending, to be claimed (attempt + 1) at once.
        // Each statement reads the clock anew: a lease that expires between
        // them must still meet the two rules above, hence their negation here.
        // the dead attempt's heartbeats and outcome are fenced out.
        sqlx::query(clocked(
            "UPDATE jobs SET state = 'pending', run_after = NOW_MS, lease_owner = NULL,
                 lease_expires_at = NULL, last_error = LEASE_EXPIRED_ERROR
             WHERE state = 'processing' AND lease_expires_at < NOW_MS
               AND attempt < max_attempts AND cancel_requested_at IS NULL",
        ))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn ping(&self) -> Result<(), QueueError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
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
        let result = sqlx::query(
            "INSERT INTO sources (id, source_type, database_name, payload, dedupe_key, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(record.id.to_string())
        .bind(source_type.as_str())
        .bind(&payload.database_name)
        .bind(payload_json)
        .bind(sha256_hex(canonical.as_bytes()))
        .bind(record.created_at.timestamp_millis())
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(record),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(QueueError::Duplicate("source"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_source(&self, id: Uuid) -> Result<Option<SourceRecord>, QueueError> {
        let row = sqlx::query("SELECT * FROM sources WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(source_from_row).transpose()
    }

    async fn list_sources(&self, filter: &SourceFilter) -> Result<Vec<SourceRecord>, QueueError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM sources WHERE 1 = 1");
        if let Some(database) = &filter.database_name {
            query
                .push(" AND database_name = ")
                .push_bind(database.clone());
        }
        if let Some(source_type) = filter.source_type {
            query
                .push(" AND source_type = ")
                .push_bind(source_type.as_str());
        }
        push_databases(&mut query, filter.databases.as_deref());
        push_page(&mut query, filter.ascending, filter.limit, filter.offset);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(source_from_row).collect()
    }

    async fn delete_source(&self, id: Uuid) -> Result<bool, QueueError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM sources WHERE id = ?")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE source_id = ? AND state = 'pending'",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?)
             WHERE source_id = ? AND state = 'processing'",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    async fn enqueue(&self, job: NewJob) -> Result<Job, QueueError> {
        let id = Uuid::new_v4();
        let now = now_ms();
        let payload = serde_json::to_string(&job.payload).map_err(|e| corrupt("payload", e))?;
        let metadata = serde_json::to_string(&job.metadata).map_err(|e| corrupt("metadata", e))?;
        // Due from the database's clock, on which claims compare it.
        let result = sqlx::query(clocked(
            "INSERT INTO jobs (id, source_id, source_type, database_name, object_key, payload,
                               metadata, trigger_kind, state, concurrency_key, dedupe_key,
                               created_at, run_after, max_attempts, idempotency_key,
                               request_sha256)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, NOW_MS, ?, ?, ?)",
        ))
        .bind(id.to_string())
        .bind(job.source_id.to_string())
        .bind(job.source_type.as_str())
        .bind(&job.metadata.database_name)
        .bind(job.payload.object_key.clone())
        .bind(payload)
        .bind(metadata)
        .bind(job.trigger.as_str())
        .bind(&job.concurrency_key)
        .bind(&job.dedupe_key)
        .bind(now)
        .bind(self.max_attempts as i64)
        .bind(job.idempotency.as_ref().map(|i| i.key.clone()))
        .bind(job.idempotency.as_ref().map(|i| i.request_sha256.clone()))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(QueueError::Duplicate("invocation"));
            }
            Err(e) => return Err(e.into()),
        }
        self.get_job(id)
            .await?
            .ok_or_else(|| QueueError::Corrupt("job vanished after insert".into()))
    }

    async fn find_idempotent(
        &self,
        source_id: Uuid,
        key: &str,
    ) -> Result<Option<(Job, String)>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE source_id = ? AND idempotency_key = ?")
            .bind(source_id.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let hash: Option<String> = row.try_get("request_sha256")?;
            Ok((job_from_row(&row)?, hash.unwrap_or_default()))
        })
        .transpose()
    }

    async fn claim_schedule_slot(
        &self,
        source_id: Uuid,
        slot: DateTime<Utc>,
    ) -> Result<bool, QueueError> {
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO schedule_slots (source_id, slot_at, outcome, jobs, recorded_at) VALUES (?, ?, 'claimed', 0, ?) ON CONFLICT DO NOTHING",
        )
        .bind(source_id.to_string())
        .bind(slot.timestamp_millis())
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    async fn record_schedule_slot(
        &self,
        source_id: Uuid,
        slot: DateTime<Utc>,
        outcome: &str,
        jobs: u32,
        message: Option<&str>,
    ) -> Result<(), QueueError> {
        sqlx::query(
            "UPDATE schedule_slots SET outcome = ?, jobs = ?, message = ?, recorded_at = ? WHERE source_id = ? AND slot_at = ?",
        )
        .bind(outcome)
        .bind(i32::try_from(jobs).unwrap_or(i32::MAX))
        .bind(message)
        .bind(now_ms())
        .bind(source_id.to_string())
        .bind(slot.timestamp_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn schedule_slots(
        &self,
        source_id: Uuid,
        limit: u32,
    ) -> Result<Vec<ScheduleSlot>, QueueError> {
        let rows = sqlx::query(
            "SELECT * FROM schedule_slots WHERE source_id = ? ORDER BY slot_at DESC LIMIT ?",
        )
        .bind(source_id.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(slot_from_row).collect()
    }

    async fn pending_count(&self) -> Result<u64, QueueError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'pending'")
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }

    async fn prune_finished(&self, before: DateTime<Utc>) -> Result<u64, QueueError> {
        let deleted = sqlx::query(
            "DELETE FROM jobs WHERE state IN ('complete', 'failed', 'cancelled') AND finished_at < ?",
        )
        .bind(before.timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM schedule_slots WHERE recorded_at < ?")
            .bind(before.timestamp_millis())
            .execute(&self.pool)
            .await?;
        Ok(deleted)
    }

    async fn get_job(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, QueueError> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM jobs WHERE 1 = 1");
        if let Some(source_id) = filter.source_id {
            query
                .push(" AND source_id = ")
                .push_bind(source_id.to_string());
        }
        if let Some(database) = &filter.database_name {
            query
                .push(" AND database_name = ")
                .push_bind(database.clone());
        }
        if let Some(source_type) = filter.source_type {
            query
                .push(" AND source_type = ")
                .push_bind(source_type.as_str());
        }
        if let Some(status) = &filter.status {
            query.push(" AND state = ").push_bind(status.clone());
        }
        push_databases(&mut query, filter.databases.as_deref());
        push_page(&mut query, filter.ascending, filter.limit, filter.offset);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn latest_by_keys(
        &self,
        source_id: Uuid,
        keys: &[String],
    ) -> Result<Vec<(String, Job)>, QueueError> {
        let mut found = Vec::new();
        for key in keys {
            let row = sqlx::query(
                "SELECT * FROM jobs WHERE source_id = ? AND object_key = ?
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            )
            .bind(source_id.to_string())
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                found.push((key.clone(), job_from_row(&row)?));
            }
        }
        Ok(found)
    }

    async fn cancel(&self, id: Uuid) -> Result<CancelOutcome, QueueError> {
        // A job may move between the two updates (processing → pending on a
        // retry); go round again rather than answer from a stale state.
        for _ in 0..5 {
            match self.try_cancel(id).await? {
                CancelOutcome::AlreadyFinished(status) if !status.is_finished() => continue,
                outcome => return Ok(outcome),
            }
        }
        self.try_cancel(id).await
    }

    async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<ClaimedJob>, QueueError> {
        self.sweep_expired_leases().await?;
        let row = sqlx::query(clocked(
            "UPDATE jobs SET state = 'processing', attempt = attempt + 1, lease_owner = ?1,
                    lease_expires_at = NOW_MS + ?2, started_at = NOW_MS,
                    last_heartbeat_at = NOW_MS, progress = NULL
             WHERE id = (
                 SELECT j.id FROM jobs j
                 WHERE ((j.state = 'pending' AND j.run_after <= NOW_MS)
                        OR (j.state = 'processing' AND j.lease_expires_at < NOW_MS
                            AND j.attempt < j.max_attempts AND j.cancel_requested_at IS NULL))
                   AND NOT EXISTS (
                       SELECT 1 FROM jobs o
                       WHERE o.concurrency_key = j.concurrency_key AND o.id != j.id
                         AND o.state = 'processing' AND o.lease_expires_at >= NOW_MS)
                 ORDER BY j.run_after, j.rowid
                 LIMIT 1)
             RETURNING *",
        ))
        .bind(worker)
        .bind(lease_ms(lease))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = job_from_row(&row)?;
        let payload: String = row.try_get("payload")?;
        let payload: CreateJobPayload =
            serde_json::from_str(&payload).map_err(|e| corrupt("job payload", e))?;
        let source_type: String = row.try_get("source_type")?;
        let max_attempts: i64 = row.try_get("max_attempts")?;
        Ok(Some(ClaimedJob {
            attempt: job.attempt,
            job,
            payload,
            source_type: SourceType::parse(&source_type)
                .ok_or_else(|| corrupt("job source type", &source_type))?,
            max_attempts: max_attempts as u32,
        }))
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
        let row = sqlx::query(clocked(
            "UPDATE jobs SET lease_expires_at = NOW_MS + ?1, last_heartbeat_at = NOW_MS,
                    progress = COALESCE(?2, progress), stats = ?3
             WHERE id = ?4 AND attempt = ?5 AND state = 'processing'
             RETURNING cancel_requested_at",
        ))
        .bind(lease_ms(lease))
        .bind(progress)
        .bind(stats)
        .bind(id.to_string())
        .bind(attempt as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => HeartbeatOutcome::LeaseLost,
            Some(row)
                if row
                    .try_get::<Option<i64>, _>("cancel_requested_at")?
                    .is_some() =>
            {
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
        let (sql, error, delay_ms): (&'static str, Option<String>, i64) = match outcome {
            Outcome::Complete => (
                "UPDATE jobs SET state = 'complete', finished_at = NOW_MS,
                        duration_ms = MAX(0, NOW_MS - COALESCE(started_at, NOW_MS)), stats = ?1,
                        lease_owner = NULL, last_error = NULL,
                        progress = '{\"step\":1,\"total_steps\":1,\"message\":\"done\"}'
                 WHERE id = ?2 AND attempt = ?3 AND state = 'processing'",
                None,
                0,
            ),
            Outcome::Failed(error) => (
                "UPDATE jobs SET state = 'failed', finished_at = NOW_MS, stats = ?1, lease_owner = NULL,
                        error = ?4
                 WHERE id = ?2 AND attempt = ?3 AND state = 'processing'",
                Some(error),
                0,
            ),
            Outcome::Cancelled => (
                "UPDATE jobs SET state = 'cancelled', finished_at = NOW_MS, stats = ?1, lease_owner = NULL
                 WHERE id = ?2 AND attempt = ?3 AND state = 'processing'",
                None,
                0,
            ),
            Outcome::Retry { error, after } => (
                "UPDATE jobs SET
                        state = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
                        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE NOW_MS END,
                        run_after = NOW_MS + ?5, stats = ?1, lease_owner = NULL, lease_expires_at = NULL,
                        last_error = ?4
                 WHERE id = ?2 AND attempt = ?3 AND state = 'processing'",
                Some(error),
                after.as_millis() as i64,
            ),
            Outcome::Released => (
                "UPDATE jobs SET
                        state = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
                        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE NOW_MS END,
                        attempt = CASE WHEN cancel_requested_at IS NULL THEN attempt - 1 ELSE attempt END,
                        run_after = NOW_MS, stats = ?1, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = ?2 AND attempt = ?3 AND state = 'processing'",
                None,
                0,
            ),
        };
        // Every statement numbers its parameters the same way: ?1 stats, ?2 id,
        // ?3 attempt (the fence), ?4 error, ?5 retry delay; the time is the
        // database's (`NOW_MS`), like the lease's.
        let mut query = sqlx::query(clocked(sql))
            .bind(stats)
            .bind(id.to_string())
            .bind(attempt as i64);
        if sql.contains("?4") {
            query = query.bind(error);
        }
        if sql.contains("?5") {
            query = query.bind(delay_ms);
        }
        let affected = query.execute(&self.pool).await?.rows_affected();
        Ok(affected > 0)
    }
}
