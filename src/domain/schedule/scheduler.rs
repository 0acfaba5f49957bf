//! Schedules (seed 004): a source with a `schedule` is invoked on time, with
//! `trigger: scheduled`.
//!
//! Every process (`serve` and `worker`) runs [`schedule_loop`]: once a second
//! it looks for slots that came due since its last look. A due slot is first
//! claimed in the queue — one row per (source, slot), a primary key — so of
//! many daemons sharing a queue exactly one enqueues it. A slot that comes
//! due while the source's previous run is still pending or processing is
//! recorded as `skipped` rather than stacking runs. Slots that passed while
//! no daemon ran are not caught up, as with cron.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::ParsedSchedule;
use crate::domain::{RunTarget, Sources, enqueue_whole_source};
use crate::model::{GitRefIdentifier, SourceSchedule, Trigger};
use crate::pipeline::Services;
use crate::queue::{JobFilter, JobState, Queue, QueueError, SlotOutcome, SourceRecord};

/// What scheduled invocations need: the queue, and the sources (which list
/// a bucket or find a repository's default branch).
pub struct Scheduler {
    pub queue: Arc<dyn Queue>,
    pub sources: Arc<Sources>,
    /// Compares a listing with the collection (S3: unchanged objects get no job).
    pub services: Arc<Services>,
    pub wake: Arc<Notify>,
}

/// How often the loop looks for due slots.
const TICK: Duration = Duration::from_secs(1);

/// Fires due slots until `shutdown`.
pub async fn schedule_loop(scheduler: Scheduler, shutdown: CancellationToken) {
    let mut last_look = Utc::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
        let now = Utc::now();
        match scheduler.fire_due(last_look, now).await {
            Ok(()) => last_look = now,
            // The queue is unreachable: look again (same window) next tick.
            Err(error) => tracing::warn!(%error, "checking schedules failed"),
        }
    }
}

impl Scheduler {
    /// Fires every scheduled source's latest slot in `(after, now]`.
    pub async fn fire_due(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        for record in self.scheduled_sources().await? {
            let Some(schedule) = &record.payload.schedule else {
                continue;
            };
            let parsed = match ParsedSchedule::parse(schedule) {
                Ok(parsed) => parsed,
                Err(error) => {
                    tracing::warn!(source_id = %record.id, %error, "ignoring an invalid schedule");
                    continue;
                }
            };
            if let Some(slot) = parsed.latest_due(after.max(record.created_at), now) {
                self.fire(&record, schedule, slot).await?;
            }
        }
        Ok(())
    }

    async fn scheduled_sources(&self) -> Result<Vec<SourceRecord>, QueueError> {
        let mut sources = crate::queue::all_sources(self.queue.as_ref(), None).await?;
        sources.retain(|r| r.payload.schedule.is_some());
        Ok(sources)
    }

    async fn fire(
        &self,
        record: &SourceRecord,
        schedule: &SourceSchedule,
        slot: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        if !self.queue.claim_schedule_slot(record.id, slot).await? {
            return Ok(()); // another daemon has this slot
        }
        let (outcome, jobs, message) = if self.previous_run_going(record).await? {
            (
                SlotOutcome::Skipped,
                0,
                Some("the previous run was still going".to_string()),
            )
        } else {
            match self.enqueue(record, schedule).await {
                Ok((jobs, message)) => (SlotOutcome::Enqueued, jobs, message),
                // Stored and listed over the API: no secret may be quoted.
                Err(error) => (
                    SlotOutcome::Failed,
                    0,
                    Some(crate::secrets::scrub(&error).into_owned()),
                ),
            }
        };
        match outcome {
            SlotOutcome::Failed => {
                tracing::warn!(source_id = %record.id, %slot, error = ?message, "scheduled run failed to start")
            }
            _ => {
                tracing::info!(source_id = %record.id, %slot, outcome = outcome.as_str(), jobs, "schedule slot")
            }
        }
        crate::metrics::schedule_slot(outcome.as_str());
        self.queue
            .record_schedule_slot(record.id, slot, outcome, jobs, message.as_deref())
            .await
    }

    async fn previous_run_going(&self, record: &SourceRecord) -> Result<bool, QueueError> {
        for status in [JobState::Pending, JobState::Processing] {
            let filter = JobFilter {
                source_id: Some(record.id),
                status: Some(status),
                limit: 1,
                ..JobFilter::default()
            };
            if !self.queue.list_jobs(&filter).await?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Enqueues the slot's invocations: how many, and what the slot's
    /// record says of the documents that needed none. Errors are messages
    /// for the slot's record (a bucket that cannot be listed, a missing
    /// branch).
    async fn enqueue(
        &self,
        record: &SourceRecord,
        schedule: &SourceSchedule,
    ) -> Result<(u32, Option<String>), String> {
        let mut target = RunTarget {
            collection: schedule.target_collection_name.clone(),
            ..RunTarget::default()
        };
        // A schedule's branch is the ref a GitHub sync takes (schedules
        // with one are refused for other kinds: `check_schedule`).
        if let Some(branch) = &schedule.branch {
            let git_ref = GitRefIdentifier::Branch(branch.clone());
            if let Ok(git_ref) = serde_json::to_value(git_ref) {
                target.fields.insert("git_ref".to_string(), git_ref);
            }
        }
        let done = enqueue_whole_source(
            &self.sources,
            &self.services,
            self.queue.as_ref(),
            record,
            target,
            Trigger::Scheduled,
            false,
        )
        .await
        .map_err(|e| e.to_string())?;
        let unchanged = done.unchanged;
        let mut notes = Vec::new();
        if unchanged > 0 {
            notes.push(format!(
                "{unchanged} documents unchanged since they were stored: no job for them"
            ));
        }
        if let Some(reason) = &done.first_refusal {
            notes.push(format!(
                "{} documents left out, no invocation may name them: {reason}",
                done.refused
            ));
        }
        let message = (!notes.is_empty()).then(|| notes.join("; "));
        let enqueued = done.enqueued;
        self.wake.notify_waiters();
        Ok((enqueued, message))
    }
}
