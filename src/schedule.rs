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

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::app::{RunTarget, whole_source_payloads};
use crate::model::{GitRefIdentifier, SourceSchedule, Trigger};
use crate::queue::{JobFilter, JobState, Queue, QueueError, SlotOutcome, SourceRecord};
use crate::source::github::GitHubClients;
use crate::source::s3::S3Clients;

/// A source's schedule, parsed.
#[derive(Debug, Clone)]
pub struct ParsedSchedule {
    cron: Cron,
    zone: Tz,
}

impl ParsedSchedule {
    /// Parses the cron expression and time zone; the error says which is wrong.
    pub fn parse(schedule: &SourceSchedule) -> Result<Self, String> {
        let cron = Cron::from_str(&schedule.cron)
            .map_err(|e| format!("schedule.cron `{}` is not valid: {e}", schedule.cron))?;
        let zone = match &schedule.time_zone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("schedule.time_zone `{name}` is not an IANA time zone (e.g. Europe/Paris)")
            })?,
        };
        Ok(ParsedSchedule { cron, zone })
    }

    /// The shortest gap between consecutive slots among the next
    /// `firings` after `from`; `None` when fewer than two slots follow.
    /// Cron gaps are irregular (`0,1 9 * * *` fires twice a minute apart,
    /// once a day), so every gap is looked at, not just the first.
    pub fn shortest_interval(&self, from: DateTime<Utc>, firings: usize) -> Option<Duration> {
        let from = from.with_timezone(&self.zone);
        let slots: Vec<_> = self.cron.iter_after(from).take(firings).collect();
        slots
            .windows(2)
            .filter_map(|pair| (pair[1] - pair[0]).to_std().ok())
            .min()
    }

    /// The latest slot in `(after, until]`, if one fell there.
    pub fn latest_due(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let until = until.with_timezone(&self.zone);
        let slot = self
            .cron
            .find_previous_occurrence(&until, true)
            .ok()?
            .with_timezone(&Utc);
        (slot > after).then_some(slot)
    }
}

/// What scheduled invocations need: the queue, and the clients that list a
/// bucket or find a repository's default branch.
pub struct Scheduler {
    pub queue: Arc<dyn Queue>,
    pub s3: Arc<S3Clients>,
    pub github: Arc<GitHubClients>,
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
                Ok(jobs) => (SlotOutcome::Enqueued, jobs, None),
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

    /// Enqueues the slot's invocations; how many. Errors are messages for
    /// the slot's record (a bucket that cannot be listed, a missing branch).
    async fn enqueue(
        &self,
        record: &SourceRecord,
        schedule: &SourceSchedule,
    ) -> Result<u32, String> {
        let target = RunTarget {
            object_keys: Vec::new(),
            collection: schedule.target_collection_name.clone(),
            git_ref: schedule.branch.clone().map(GitRefIdentifier::Branch),
        };
        let payloads = whole_source_payloads(&self.s3, &self.github, record, target)
            .await
            .map_err(|e| e.to_string())?;
        let mut enqueued = 0;
        for payload in payloads {
            let mut job =
                crate::api::invocations::plan_job(record, payload).map_err(|e| e.message)?;
            job.trigger = Trigger::Scheduled;
            match self.queue.enqueue(job).await {
                Ok(_) => enqueued += 1,
                Err(QueueError::Duplicate(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        self.wake.notify_waiters();
        Ok(enqueued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(cron: &str, zone: Option<&str>) -> SourceSchedule {
        SourceSchedule {
            cron: cron.into(),
            time_zone: zone.map(Into::into),
            target_collection_name: None,
            branch: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_latest_slot_in_the_window_is_due_once() {
        let every_15 = ParsedSchedule::parse(&schedule("*/15 * * * *", None)).unwrap();
        let slot = every_15.latest_due(at("2026-01-01T10:14:59Z"), at("2026-01-01T10:15:00Z"));
        assert_eq!(slot, Some(at("2026-01-01T10:15:00Z")));
        // The next window starts where this one ended: the slot is not due again.
        assert_eq!(
            every_15.latest_due(at("2026-01-01T10:15:00Z"), at("2026-01-01T10:16:00Z")),
            None
        );
        // Several slots in one window: only the latest fires.
        assert_eq!(
            every_15.latest_due(at("2026-01-01T09:00:00Z"), at("2026-01-01T10:20:00Z")),
            Some(at("2026-01-01T10:15:00Z"))
        );
    }

    #[test]
    fn cron_fields_are_read_in_the_schedule_time_zone() {
        // 09:00 in Paris is 08:00 UTC in winter.
        let nine_paris =
            ParsedSchedule::parse(&schedule("0 9 * * *", Some("Europe/Paris"))).unwrap();
        assert_eq!(
            nine_paris.latest_due(at("2026-01-15T00:00:00Z"), at("2026-01-15T12:00:00Z")),
            Some(at("2026-01-15T08:00:00Z"))
        );
    }

    #[test]
    fn bad_cron_or_zone_is_a_clear_error() {
        let error = ParsedSchedule::parse(&schedule("61 * * * *", None)).unwrap_err();
        assert!(error.contains("schedule.cron"), "{error}");
        let error =
            ParsedSchedule::parse(&schedule("* * * * *", Some("Mars/Olympus"))).unwrap_err();
        assert!(error.contains("schedule.time_zone"), "{error}");
    }
}
