//! PostgreSQL queue: many `serve` / `worker` processes, on many machines,
//! share one queue (`CHROMA_SYNCD_QUEUE_URL=postgres://…`).
//!
//! A claim is one statement: the oldest runnable row is picked with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other
//! nor take the same job. Jobs that share a `concurrency_key` (one S3
//! object, one source's sync of a collection) must never run at once;
//! PostgreSQL does not serialise writers the way SQLite does, so a unique
//! index on the keys of processing jobs enforces it, and a claim that loses
//! that race simply tries the next job. Expired leases go back to pending in
//! a sweep (at most once a second per process).
//! Migrations run at start under sqlx's migration lock, so processes starting
//! together do not race.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
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

/// Claims retried after losing a same-key race, before giving up for this round.
const CLAIM_ATTEMPTS: usize = 4;
/// Longest wait for a pooled connection (a new one included).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Expired leases are settled at most this often per process.
const SWEEP_INTERVAL_MS: i64 = 1000;

pub struct PostgresQueue {
    pool: PgPool,
    max_attempts: u32,
    last_sweep: AtomicI64,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The database server's clock in Unix milliseconds (`now()`: one instant
/// for the whole statement).
const DB_NOW_MS: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

/// `sql` with each `NOW_MS` read from the server's clock: leases are granted,
/// renewed, compared and settled on the one clock every process shares, never
/// on a timestamp a worker computed (its clock may be skewed). Only static
/// text is spliced in.
fn clocked(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(
        sql.replace("LEASE_EXPIRED_ERROR", super::LEASE_EXPIRED_ERROR)
            .replace("NOW_MS", DB_NOW_MS),
    )
}

/// A lease length in milliseconds, for adding to the server's clock.
fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

fn push_databases(query: &mut QueryBuilder<Postgres>, databases: Option<&[String]>) {
    let Some(databases) = databases else { return };
    if databases.is_empty() {
        query.push(" AND FALSE");
        return;
    }
    query.push(" AND database_name IN (");
    let mut list = query.separated(", ");
    for database in databases {
        list.push_bind(database.clone());
    }
    list.push_unseparated(")");
}

fn push_page(query: &mut QueryBuilder<Postgres>, ascending: bool, limit: u32, offset: u32) {
    let order = if ascending { "ASC" } else { "DESC" };
    query.push(format!(" ORDER BY created_at {order}, seq {order} LIMIT "));
    query.push_bind(i64::from(limit));
    query.push(" OFFSET ").push_bind(i64::from(offset));
}

impl PostgresQueue {
    /// Connects and runs the migrations (safe when several processes start at once).
    pub async fn open(url: &str, max_attempts: u32) -> Result<Self, QueueError> {
        // No queue statement may hang: the server cancels one past
        // `statement_timeout`, ends a session idle inside a transaction, and
        // probes idle connections with TCP keepalives (a worker that died or
        // vanished from the network gives up its connections and row locks
        // in seconds, not at the OS's two hours). Getting a connection from
        // the pool (connecting included) is bounded too. Workers also put
        // their own timeouts on renewals and outcome writes (worker.rs):
        // sqlx offers no client-side keepalive, and a silently dropped
        // network path is noticed there.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.options([
            ("statement_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "60s"),
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresQueue {
            pool,
            max_attempts: max_attempts.max(1),
            last_sweep: AtomicI64::new(0),
        })
    }

    async fn try_cancel(&self, id: Uuid) -> Result<CancelOutcome, QueueError> {
        let now = now_ms();
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = $1 WHERE id = $2 AND state = 'pending'",
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
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $1)
             WHERE id = $2 AND state = 'processing'",
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

    /// Settles jobs whose worker died (see the SQLite backend): cancelled if
    /// a cancel was asked, failed after their last allowed attempt (saying
    /// so), else back to pending with the reason recorded. Expiry is judged
    /// on the server's clock; only how often this runs uses the local one.
    async fn sweep_expired_leases(&self) -> Result<(), QueueError> {
        let now = now_ms();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if (now - last).abs() < SWEEP_INTERVAL_MS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Ok(());
        }
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

    fn claimed(row: &PgRow) -> Result<ClaimedJob, QueueError> {
        let job = job_from_row(row)?;
        let payload: String = row.try_get("payload")?;
        let payload: CreateJobPayload =
            serde_json::from_str(&payload).map_err(|e| corrupt("job payload", e))?;
        let source_type: String = row.try_get("source_type")?;
        let max_attempts: i64 = row.try_get("max_attempts")?;
        Ok(ClaimedJob {
            attempt: job.attempt,
            job,
            payload,
            source_type: SourceType::parse(&source_type)
                .ok_or_else(|| corrupt("job source type", &source_type))?,
            max_attempts: max_attempts as u32,
        })
    }
}

#[async_trait]
impl Queue for PostgresQueue {
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
             VALUES ($1, $2, $3, $4, $5, $6)",
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
        let row = sqlx::query("SELECT * FROM sources WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(source_from_row).transpose()
    }

    async fn list_sources(&self, filter: &SourceFilter) -> Result<Vec<SourceRecord>, QueueError> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM sources WHERE TRUE");
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
        let deleted = sqlx::query("DELETE FROM sources WHERE id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at = $1
             WHERE source_id = $2 AND state = 'pending'",
        )
        .bind(now_ms())
        .bind(id.to_string())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $1)
             WHERE source_id = $2 AND state = 'processing'",
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
        // Due from the server's clock, on which claims compare it.
        let result = sqlx::query(clocked(
            "INSERT INTO jobs (id, source_id, source_type, database_name, object_key, payload,
                               metadata, trigger_kind, state, concurrency_key, dedupe_key,
                               created_at, run_after, max_attempts, idempotency_key,
                               request_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, NOW_MS, $12, $13, $14)
             RETURNING *",
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
        .bind(i64::from(self.max_attempts))
        .bind(job.idempotency.as_ref().map(|i| i.key.clone()))
        .bind(job.idempotency.as_ref().map(|i| i.request_sha256.clone()))
        .fetch_one(&self.pool)
        .await;
        match result {
            Ok(row) => job_from_row(&row),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(QueueError::Duplicate("invocation"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find_idempotent(
        &self,
        source_id: Uuid,
        key: &str,
    ) -> Result<Option<(Job, String)>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE source_id = $1 AND idempotency_key = $2")
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
            "INSERT INTO schedule_slots (source_id, slot_at, outcome, jobs, recorded_at) VALUES ($1, $2, 'claimed', 0, $3) ON CONFLICT DO NOTHING",
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
            "UPDATE schedule_slots SET outcome = $1, jobs = $2, message = $3, recorded_at = $4 WHERE source_id = $5 AND slot_at = $6",
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
            "SELECT * FROM schedule_slots WHERE source_id = $1 ORDER BY slot_at DESC LIMIT $2",
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

    async fn prune_finished(
        &self,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, QueueError> {
        let deleted = sqlx::query(
            "DELETE FROM jobs WHERE state IN ('complete', 'failed', 'cancelled') AND finished_at < $1",
        )
        .bind(before.timestamp_millis())
        .execute(&self.pool)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM schedule_slots WHERE recorded_at < $1")
            .bind(before.timestamp_millis())
            .execute(&self.pool)
            .await?;
        Ok(deleted)
    }

    async fn get_job(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, QueueError> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT * FROM jobs WHERE TRUE");
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
        let rows = sqlx::query(
            "SELECT DISTINCT ON (object_key) * FROM jobs
             WHERE source_id = $1 AND object_key = ANY($2)
             ORDER BY object_key, created_at DESC, seq DESC",
        )
        .bind(source_id.to_string())
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let key: String = row.try_get("object_key")?;
                Ok((key, job_from_row(row)?))
            })
            .collect()
    }

    async fn cancel(&self, id: Uuid) -> Result<CancelOutcome, QueueError> {
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
        for _ in 0..CLAIM_ATTEMPTS {
            let claimed = sqlx::query(clocked(
                "UPDATE jobs SET state = 'processing', attempt = attempt + 1, lease_owner = $1,
                        lease_expires_at = NOW_MS + $2, started_at = NOW_MS,
                        last_heartbeat_at = NOW_MS, progress = NULL
                 WHERE id = (
                     SELECT j.id FROM jobs j
                     WHERE j.state = 'pending' AND j.run_after <= NOW_MS
                       AND NOT EXISTS (
                           SELECT 1 FROM jobs o
                           WHERE o.concurrency_key = j.concurrency_key AND o.state = 'processing')
                     ORDER BY j.run_after, j.seq
                     LIMIT 1
                     FOR UPDATE SKIP LOCKED)
                 RETURNING *",
            ))
            .bind(worker)
            .bind(lease_ms(lease))
            .fetch_optional(&self.pool)
            .await;
            match claimed {
                Ok(Some(row)) => return Ok(Some(Self::claimed(&row)?)),
                Ok(None) => return Ok(None),
                // Another worker claimed a job of the same key a moment
                // earlier (the unique index on processing keys said no).
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
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
        let row = sqlx::query(clocked(
            "UPDATE jobs SET lease_expires_at = NOW_MS + $1, last_heartbeat_at = NOW_MS,
                    progress = COALESCE($2, progress), stats = $3
             WHERE id = $4 AND attempt = $5 AND state = 'processing'
             RETURNING cancel_requested_at",
        ))
        .bind(lease_ms(lease))
        .bind(progress)
        .bind(stats)
        .bind(id.to_string())
        .bind(i64::from(attempt))
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
        // Parameters: $1 stats, $2 id, $3 attempt (the fence), $4 error, $5
        // retry delay ($4 and $5 bound where a statement uses them); the time
        // is the server's (`NOW_MS`), like the lease's.
        let (sql, error, delay_ms): (&str, Option<String>, i64) = match outcome {
            Outcome::Complete => (
                "UPDATE jobs SET state = 'complete', finished_at = NOW_MS,
                        duration_ms = GREATEST(0, NOW_MS - COALESCE(started_at, NOW_MS)), stats = $1,
                        lease_owner = NULL, last_error = NULL,
                        progress = '{\"step\":1,\"total_steps\":1,\"message\":\"done\"}'
                 WHERE id = $2 AND attempt = $3 AND state = 'processing'",
                None,
                0,
            ),
            Outcome::Failed(error) => (
                "UPDATE jobs SET state = 'failed', finished_at = NOW_MS, stats = $1,
                        lease_owner = NULL, error = $4
                 WHERE id = $2 AND attempt = $3 AND state = 'processing'",
                Some(error),
                0,
            ),
            Outcome::Cancelled => (
                "UPDATE jobs SET state = 'cancelled', finished_at = NOW_MS, stats = $1,
                        lease_owner = NULL
                 WHERE id = $2 AND attempt = $3 AND state = 'processing'",
                None,
                0,
            ),
            Outcome::Retry { error, after } => (
                "UPDATE jobs SET
                        state = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
                        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE NOW_MS END,
                        run_after = NOW_MS + $5, stats = $1, lease_owner = NULL,
                        lease_expires_at = NULL, last_error = $4
                 WHERE id = $2 AND attempt = $3 AND state = 'processing'",
                Some(error),
                after.as_millis() as i64,
            ),
            Outcome::Released => (
                "UPDATE jobs SET
                        state = CASE WHEN cancel_requested_at IS NULL THEN 'pending' ELSE 'cancelled' END,
                        finished_at = CASE WHEN cancel_requested_at IS NULL THEN NULL ELSE NOW_MS END,
                        attempt = CASE WHEN cancel_requested_at IS NULL THEN attempt - 1 ELSE attempt END,
                        run_after = NOW_MS, stats = $1, lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $2 AND attempt = $3 AND state = 'processing'",
                None,
                0,
            ),
        };
        let mut query = sqlx::query(clocked(sql))
            .bind(stats)
            .bind(id.to_string())
            .bind(i64::from(attempt));
        if sql.contains("$4") {
            query = query.bind(error);
        }
        if sql.contains("$5") {
            query = query.bind(delay_ms);
        }
        let affected = query.execute(&self.pool).await?.rows_affected();
        Ok(affected > 0)
    }
}
