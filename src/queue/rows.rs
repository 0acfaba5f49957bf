//! Rows → wire types, the same for every database (their columns match).

use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

use super::PendingDelivery;
use super::dialect::QueueRow;
use super::{ClaimedJob, QueueError, SourceRecord};
use crate::model::{
    CreateJobPayload, DeliveryAttempt, DeliveryState, Job, JobState, JobStats, JobStatus, Progress,
    ScheduleSlot, SlotOutcome, SourceType, Trigger, UploadSpec, WebhookDelivery, WebhookEvent,
};

pub(super) fn to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

pub(super) fn corrupt(what: &str, err: impl std::fmt::Display) -> QueueError {
    QueueError::Corrupt(format!("{what}: {err}"))
}

pub(super) fn source_from_row(row: &impl QueueRow) -> Result<SourceRecord, QueueError> {
    let id = row.text("id")?;
    let source_type = row.text("source_type")?;
    let payload = row.text("payload")?;
    Ok(SourceRecord {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("source id", e))?,
        source_type: SourceType::parse(&source_type)
            .ok_or_else(|| corrupt("source type", &source_type))?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("source payload", e))?,
        created_at: to_time(row.int("created_at")?),
    })
}

pub(super) fn job_from_row(row: &impl QueueRow) -> Result<Job, QueueError> {
    let id = row.text("id")?;
    let source_id = row.optional_text("source_id")?;
    let state = row.text("state")?;
    let metadata = row.text("metadata")?;
    let progress = row.optional_text("progress")?;
    let stats = row.optional_text("stats")?;
    let trigger = row.text("trigger_kind")?;
    let opt_time = |name: &str| -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(row.optional_int(name)?.map(to_time))
    };
    let status = match JobState::parse(&state).ok_or_else(|| corrupt("job state", &state))? {
        JobState::Pending => JobStatus::Pending,
        JobState::Processing => JobStatus::Processing,
        JobState::Complete => JobStatus::Complete {
            finished_at: opt_time("finished_at")?.unwrap_or_else(Utc::now),
            duration_ms: row.optional_int("duration_ms")?.unwrap_or(0),
        },
        JobState::Failed => JobStatus::Failed {
            error: row.optional_text("error")?.unwrap_or_default(),
        },
        JobState::Cancelled => JobStatus::Cancelled,
    };
    Ok(Job {
        id: Uuid::parse_str(&id).map_err(|e| corrupt("job id", e))?,
        status,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("job metadata", e))?,
        created_at: to_time(row.int("created_at")?),
        source_id: source_id
            .map(|s| Uuid::parse_str(&s))
            .transpose()
            .map_err(|e| corrupt("job source id", e))?,
        attempt: row.int("attempt")? as u32,
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
        last_error: row.optional_text("last_error")?,
        trigger: Trigger::parse(&trigger).ok_or_else(|| corrupt("job trigger", &trigger))?,
        created_by: row.optional_text("created_by")?,
        cancel_requested_by: row.optional_text("cancel_requested_by")?,
    })
}

/// A row a claim returned, as the worker receives it.
pub(super) fn claimed_from_row(row: &impl QueueRow) -> Result<ClaimedJob, QueueError> {
    let job = job_from_row(row)?;
    let payload = row.text("payload")?;
    let mut payload: serde_json::Value =
        serde_json::from_str(&payload).map_err(|e| corrupt("job payload", e))?;
    let upload = payload
        .as_object_mut()
        .and_then(|fields| fields.remove("upload"))
        .map(serde_json::from_value::<UploadSpec>)
        .transpose()
        .map_err(|e| corrupt("upload job", e))?;
    let payload: CreateJobPayload =
        serde_json::from_value(payload).map_err(|e| corrupt("job payload", e))?;
    let source_type = row.text("source_type")?;
    let max_attempts = row.int("max_attempts")?;
    Ok(ClaimedJob {
        attempt: job.attempt,
        job,
        payload,
        upload,
        source_type: SourceType::parse(&source_type)
            .ok_or_else(|| corrupt("job source type", &source_type))?,
        max_attempts: max_attempts as u32,
    })
}

pub(super) fn slot_from_row(row: &impl QueueRow) -> Result<ScheduleSlot, QueueError> {
    let jobs = row.int32("jobs")?;
    let outcome = row.text("outcome")?;
    Ok(ScheduleSlot {
        slot: to_time(row.int("slot_at")?),
        outcome: SlotOutcome::parse(&outcome)
            .ok_or_else(|| corrupt("schedule slot outcome", &outcome))?,
        jobs: u32::try_from(jobs).unwrap_or(0),
        message: row.optional_text("message")?,
        recorded_at: to_time(row.int("recorded_at")?),
    })
}

fn event_from_row(row: &impl QueueRow) -> Result<WebhookEvent, QueueError> {
    let event = row.text("event")?;
    serde_json::from_value(serde_json::Value::String(event.clone()))
        .map_err(|_| corrupt("webhook event", &event))
}

fn uuid_column(row: &impl QueueRow, column: &str) -> Result<Uuid, QueueError> {
    let text = row.text(column)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(column, e))
}

pub(super) fn responses_from_row(row: &impl QueueRow) -> Result<Vec<DeliveryAttempt>, QueueError> {
    serde_json::from_str(&row.text("responses")?).map_err(|e| corrupt("delivery responses", e))
}

/// A delivery row as the API lists it.
pub(super) fn delivery_from_row(row: &impl QueueRow) -> Result<WebhookDelivery, QueueError> {
    let state = row.text("state")?;
    let state = DeliveryState::parse(&state).ok_or_else(|| corrupt("delivery state", &state))?;
    let waiting = state == DeliveryState::Pending;
    Ok(WebhookDelivery {
        id: uuid_column(row, "id")?,
        invocation_id: uuid_column(row, "job_id")?,
        event: event_from_row(row)?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(0),
        last_status: row
            .optional_int("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: row.optional_text("last_error")?,
        responses: responses_from_row(row)?,
        created_at: to_time(row.int("created_at")?),
        next_attempt_at: waiting
            .then(|| row.int("next_attempt_at").map(to_time))
            .transpose()?,
        delivered_at: row.optional_int("delivered_at")?.map(to_time),
        state,
    })
}

/// A claimed delivery, as the dispatcher sends it.
pub(super) fn pending_delivery_from_row(
    row: &impl QueueRow,
) -> Result<PendingDelivery, QueueError> {
    Ok(PendingDelivery {
        id: uuid_column(row, "id")?,
        source_id: uuid_column(row, "source_id")?,
        job_id: uuid_column(row, "job_id")?,
        event: event_from_row(row)?,
        url: row.text("url")?,
        body: row.text("body")?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(0),
        responses: responses_from_row(row)?,
    })
}
