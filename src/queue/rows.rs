//! Rows → wire types, shared by both queue backends (their columns match).

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{ColumnIndex, Decode, Row, Type};
use uuid::Uuid;

use super::{QueueError, SourceRecord};
use crate::model::{Job, JobStats, JobStatus, Progress, ScheduleSlot, SourceType, Trigger};

pub(super) fn to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub(super) fn corrupt(what: &str, err: impl std::fmt::Display) -> QueueError {
    QueueError::Corrupt(format!("{what}: {err}"))
}

pub(super) fn source_from_row<R>(row: &R) -> Result<SourceRecord, QueueError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let source_type: String = row.try_get("source_type")?;
    let payload: String = row.try_get("payload")?;
    Ok(SourceRecord {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("source id", e))?,
        source_type: SourceType::parse(&source_type)
            .ok_or_else(|| corrupt("source type", &source_type))?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("source payload", e))?,
        created_at: to_time(row.try_get("created_at")?),
    })
}

pub(super) fn job_from_row<R>(row: &R) -> Result<Job, QueueError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let id: String = row.try_get("id")?;
    let source_id: Option<String> = row.try_get("source_id")?;
    let state: String = row.try_get("state")?;
    let metadata: String = row.try_get("metadata")?;
    let progress: Option<String> = row.try_get("progress")?;
    let stats: Option<String> = row.try_get("stats")?;
    let trigger: String = row.try_get("trigger_kind")?;
    let opt_time = |name: &str| -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(row.try_get::<Option<i64>, _>(name)?.map(to_time))
    };
    let status = match state.as_str() {
        "pending" => JobStatus::Pending,
        "processing" => JobStatus::Processing,
        "complete" => JobStatus::Complete {
            finished_at: opt_time("finished_at")?.unwrap_or_else(Utc::now),
            duration_ms: row.try_get::<Option<i64>, _>("duration_ms")?.unwrap_or(0),
        },
        "failed" => JobStatus::Failed {
            error: row
                .try_get::<Option<String>, _>("error")?
                .unwrap_or_default(),
        },
        "cancelled" => JobStatus::Cancelled,
        other => return Err(corrupt("job state", other)),
    };
    Ok(Job {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("job id", e))?,
        status,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("job metadata", e))?,
        created_at: to_time(row.try_get("created_at")?),
        source_id: source_id
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|e| corrupt("job source id", e))?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        started_at: opt_time("started_at")?,
        last_heartbeat_at: opt_time("last_heartbeat_at")?,
        cancel_requested_at: opt_time("cancel_requested_at")?,
        progress: progress
            .map(|p| serde_json::from_str::<Progress>(&p))
            .transpose()
            .map_err(|e| corrupt("job progress", e))?,
        stats: stats
            .map(|s| serde_json::from_str::<JobStats>(&s))
            .transpose()
            .map_err(|e| corrupt("job stats", e))?
            .unwrap_or_default(),
        last_error: row.try_get("last_error")?,
        trigger: Trigger::parse(&trigger),
    })
}

pub(super) fn slot_from_row<R>(row: &R) -> Result<ScheduleSlot, QueueError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Option<String>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i32: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    let jobs: i32 = row.try_get("jobs")?;
    Ok(ScheduleSlot {
        slot: to_time(row.try_get("slot_at")?),
        outcome: row.try_get("outcome")?,
        jobs: u32::try_from(jobs).unwrap_or(0),
        message: row.try_get("message")?,
        recorded_at: to_time(row.try_get("recorded_at")?),
    })
}
