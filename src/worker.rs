//! Workers: claim jobs, keep their leases alive, record how they end.
//!
//! Each worker is a loop: claim → run the pipeline while a heartbeat task
//! renews the lease and reports progress → write the outcome, fenced by the
//! attempt number. Shutdown (the `shutdown` token) stops claiming at once;
//! in-flight jobs get a grace period to finish, then are cancelled and
//! released back to `pending` so another process takes them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{QueueSettings, Secret};
use crate::pipeline::{JobError, JobState, Services, run_job};
use crate::queue::{ClaimedJob, HeartbeatOutcome, Outcome, Queue};

/// Runs `count` workers until `shutdown` is cancelled; returns when all have
/// stopped: their jobs finished within `grace`, or released after it.
pub async fn run_workers(
    services: Arc<Services>,
    settings: QueueSettings,
    secrets: Arc<Vec<Secret>>,
    count: usize,
    grace: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    // Cancelled `grace` after `shutdown`: in-flight jobs stop and are released.
    let abort = CancellationToken::new();
    let deadline = tokio::spawn({
        let abort = abort.clone();
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tracing::info!(grace = ?grace, "draining: in-flight jobs may finish within the grace period");
            tokio::time::sleep(grace).await;
            abort.cancel();
        }
    });
    let process = format!("{}-{}", hostname(), std::process::id());
    for index in 0..count.max(1) {
        let worker = Worker {
            name: format!("{process}-w{index}"),
            services: Arc::clone(&services),
            settings: settings.clone(),
            secrets: Arc::clone(&secrets),
            wake: Arc::clone(&wake),
            shutdown: shutdown.clone(),
            abort: abort.clone(),
        };
        tracker.spawn(async move { worker.run().await });
    }
    tracker.close();
    tracker.wait().await;
    deadline.abort();
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string())
}

struct Worker {
    name: String,
    services: Arc<Services>,
    settings: QueueSettings,
    secrets: Arc<Vec<Secret>>,
    wake: Arc<Notify>,
    /// Stop claiming.
    shutdown: CancellationToken,
    /// Stop the job in hand (the drain grace period is over).
    abort: CancellationToken,
}

impl Worker {
    async fn run(self) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms.max(10));
        let mut failures = 0u32;
        while !self.shutdown.is_cancelled() {
            match self
                .services
                .queue
                .claim(&self.name, self.settings.lease())
                .await
            {
                Ok(Some(claimed)) => {
                    failures = 0;
                    let span = tracing::info_span!(
                        "job",
                        job_id = %claimed.job.id,
                        source_id = ?claimed.job.source_id,
                        attempt = claimed.attempt,
                    );
                    self.execute(claimed).instrument(span).await;
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    // The queue itself is failing: back off, capped, and keep trying.
                    failures = failures.saturating_add(1);
                    let delay = poll * 2u32.saturating_pow(failures.min(6));
                    tracing::warn!(%error, ?delay, "claiming a job failed");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    async fn execute(&self, claimed: ClaimedJob) {
        let id = claimed.job.id;
        let attempt = claimed.attempt;
        tracing::info!(object_key = ?claimed.payload.object_key, "job started");
        let state = Arc::new(JobState::default());
        let started = std::time::Instant::now();
        let cancel = self.abort.child_token();
        let stop_heartbeat = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(
            Arc::clone(&self.services),
            self.settings.clone(),
            id,
            attempt,
            Arc::clone(&state),
            cancel.clone(),
            stop_heartbeat.clone(),
        ));
        // The job runs in its own task so that a panic inside it ends as a
        // failed job instead of a worker whose heartbeat renews a dead lease forever.
        let job_task = tokio::spawn({
            let services = Arc::clone(&self.services);
            let claimed = claimed.clone();
            let state = Arc::clone(&state);
            let cancel = cancel.clone();
            async move { run_job(&services, &claimed, &state, &cancel).await }
        });
        // A job that outlives its time limit is stopped (its task aborted,
        // so it writes nothing more) and fails, saying so.
        let limit = self.settings.job_timeout();
        let abort = job_task.abort_handle();
        let result = match tokio::time::timeout(limit, job_task).await {
            Ok(joined) => joined.unwrap_or_else(|e| {
                Err(JobError::Permanent(format!("the job's task failed: {e}")))
            }),
            Err(_) => {
                abort.abort();
                Err(JobError::TimedOut(format!(
                    "timed out after {}s (queue.job_timeout_seconds)",
                    limit.as_secs()
                )))
            }
        };
        stop_heartbeat.cancel();
        let signal = heartbeat.await.unwrap_or(HeartbeatOutcome::Continue);

        let outcome = match (result, signal) {
            (_, HeartbeatOutcome::LeaseLost) => {
                tracing::warn!("lease lost to another attempt; dropping this attempt's outcome");
                return;
            }
            (Ok(()), _) => Outcome::Complete,
            (Err(_), HeartbeatOutcome::CancelRequested) => Outcome::Cancelled,
            (Err(_), _) if self.abort.is_cancelled() => Outcome::Released,
            (Err(JobError::Cancelled), _) => Outcome::Cancelled,
            (Err(JobError::Transient(message)), _) if attempt < claimed.max_attempts => {
                Outcome::Retry {
                    error: redact(&message, &self.secrets),
                    after: self.settings.retry_delay(attempt),
                }
            }
            (Err(JobError::Transient(message)), _) => Outcome::Failed(format!(
                "{} (gave up after {attempt} attempts)",
                redact(&message, &self.secrets)
            )),
            (Err(JobError::Permanent(message) | JobError::TimedOut(message)), _) => {
                Outcome::Failed(redact(&message, &self.secrets))
            }
        };
        match &outcome {
            Outcome::Complete => tracing::info!("job complete"),
            Outcome::Retry { error, after } => {
                tracing::warn!(%error, retry_in = ?after, "job failed transiently; will retry")
            }
            Outcome::Failed(error) => tracing::error!(%error, "job failed"),
            Outcome::Cancelled => tracing::info!("job cancelled"),
            Outcome::Released => tracing::info!("job released for another worker (shutdown)"),
        }
        let stats = state.stats.lock().expect("stats lock").clone();
        let outcome_name = match &outcome {
            Outcome::Complete => "complete",
            Outcome::Failed(_) => "failed",
            Outcome::Retry { .. } => "retry",
            Outcome::Cancelled => "cancelled",
            Outcome::Released => "released",
        };
        crate::metrics::job_finished(
            claimed.source_type.as_str(),
            outcome_name,
            started.elapsed().as_secs_f64(),
            &stats,
        );
        match self
            .services
            .queue
            .finish(id, attempt, outcome, &stats)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!("outcome not recorded: the job moved on without us"),
            // The lease will expire and another attempt will redo the job.
            Err(error) => tracing::error!(%error, "recording the job outcome failed"),
        }
    }
}

/// Renews the lease every heartbeat interval until `stop`; cancels the job
/// when a cancel is requested or the lease was lost. Returns the last signal.
async fn heartbeat_loop(
    services: Arc<Services>,
    settings: QueueSettings,
    id: uuid::Uuid,
    attempt: u32,
    state: Arc<JobState>,
    cancel: CancellationToken,
    stop: CancellationToken,
) -> HeartbeatOutcome {
    let mut signal = HeartbeatOutcome::Continue;
    let mut last_renewed = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return signal,
            _ = tokio::time::sleep(settings.heartbeat()) => {}
        }
        let progress = state.progress.lock().expect("progress lock").clone();
        let stats = state.stats.lock().expect("stats lock").clone();
        match services
            .queue
            .heartbeat(id, attempt, settings.lease(), progress.as_ref(), &stats)
            .await
        {
            Ok(HeartbeatOutcome::Continue) => last_renewed = std::time::Instant::now(),
            Ok(other) => {
                if signal != other {
                    tracing::info!(signal = ?other, "heartbeat asks the job to stop");
                }
                signal = other;
                cancel.cancel();
            }
            Err(error) => {
                tracing::warn!(%error, "heartbeat failed; will retry");
                // Unrenewed, the lease is about to pass to another worker: stop
                // writing before two attempts write one document at once.
                let margin = settings.heartbeat();
                if last_renewed.elapsed() + margin >= settings.lease() {
                    tracing::warn!("lease could not be renewed in time; stopping this attempt");
                    signal = HeartbeatOutcome::LeaseLost;
                    cancel.cancel();
                }
            }
        }
    }
}

/// Replaces every configured secret value in `text` with `***`, and hides
/// URL passwords (see [`crate::secrets::scrub`]).
pub fn redact(text: &str, secrets: &[Secret]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        if secret.expose().len() >= 4 {
            text = text.replace(secret.expose(), "***");
        }
    }
    crate::secrets::scrub(&text).into_owned()
}

/// How often a process prunes finished jobs past their retention.
const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Deletes finished jobs older than `retention_days`, at start and hourly,
/// until `shutdown`. Every process may run it: the deletes are idempotent.
pub async fn prune_loop(queue: Arc<dyn Queue>, retention_days: u64, shutdown: CancellationToken) {
    loop {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::days(
                i64::try_from(retention_days).unwrap_or(i64::MAX / 86_400_000),
            );
        match queue.prune_finished(cutoff).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "pruned finished jobs past their retention"),
            Err(error) => tracing::warn!(%error, "pruning finished jobs failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_secrets() {
        let secrets = vec![Secret::new("AKIAEXAMPLE"), Secret::new("abc")];
        assert_eq!(
            redact("key AKIAEXAMPLE rejected; abc stays", &secrets),
            "key *** rejected; abc stays"
        );
    }
}
