//! Workers: claim jobs, keep their leases alive, record how they end.
//!
//! Each worker is a loop: claim → run the pipeline while a heartbeat task
//! renews the lease and reports progress → write the outcome, fenced by the
//! attempt number. Shutdown (the `shutdown` token) stops claiming at once;
//! in-flight jobs get a grace period to finish, then are stopped (their
//! tasks aborted, whatever they wait on) and released back to `pending` so
//! another process takes them; the release itself is bounded in time.
//!
//! Leases run on the queue database's clock. A worker knows only when it
//! *asked* for a renewal, which is before the database set the new expiry,
//! so "renewal started + lease" on the worker's monotonic clock is never
//! later than the real expiry, however the wall clocks differ. A worker that
//! has not renewed by `lease − margin` after its last successful renewal
//! started stops its attempt (the job task is aborted: not one more write)
//! before the lease can pass to another worker. Each renewal has a timeout,
//! so a hung connection costs one try, not the lease.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::{QueueSettings, Secret};
use crate::domain::{Sources, run_job};
use crate::pipeline::{JobError, JobState, Services};
use crate::queue::{ClaimedJob, HeartbeatOutcome, Outcome, Queue};

/// What workers run jobs with: the pipeline's services, and the source
/// kinds whose drivers run each job.
#[derive(Clone)]
pub struct JobRunner {
    pub services: Arc<Services>,
    pub sources: Arc<Sources>,
}

/// Runs `count` workers until `shutdown` is cancelled; returns when all have
/// stopped: their jobs finished within `grace`, or released after it.
pub async fn run_workers(
    runner: JobRunner,
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
            services: Arc::clone(&runner.services),
            sources: Arc::clone(&runner.sources),
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
    sources: Arc<Sources>,
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
            // The lease runs from a moment after this: see the module docs.
            let claim_started = tokio::time::Instant::now();
            let claim = tokio::time::timeout(
                self.settings.lease(),
                self.services.queue.claim(&self.name, self.settings.lease()),
            );
            tokio::pin!(claim);
            let claimed = tokio::select! {
                claimed = &mut claim => claimed,
                _ = self.shutdown.cancelled() => {
                    // The claim may have taken a job already: let it answer
                    // briefly and hand such a job straight back, so shutdown
                    // never costs a job an attempt.
                    let answer = tokio::time::timeout(self.settings.renewal_timeout(), &mut claim);
                    if let Ok(Ok(Ok(Some(claimed)))) = answer.await {
                        self.release_unstarted(&claimed).await;
                    }
                    break;
                }
            };
            let claimed = match claimed {
                Ok(claimed) => claimed,
                Err(_) => {
                    tracing::warn!("claiming a job timed out; trying again");
                    continue;
                }
            };
            match claimed {
                Ok(Some(claimed)) => {
                    failures = 0;
                    let span = tracing::info_span!(
                        "job",
                        job_id = %claimed.job.id,
                        source_id = ?claimed.job.source_id,
                        attempt = claimed.attempt,
                    );
                    self.execute(claimed, claim_started).instrument(span).await;
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

    /// Releases a job claimed as shutdown began, before it ran.
    async fn release_unstarted(&self, claimed: &ClaimedJob) {
        let release = self.services.queue.finish(
            claimed.job.id,
            claimed.attempt,
            Outcome::Released,
            &claimed.job.stats,
        );
        match tokio::time::timeout(self.settings.renewal_timeout(), release).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "releasing a job claimed at shutdown failed"),
            Err(_) => tracing::warn!("releasing a job claimed at shutdown timed out"),
        }
    }

    async fn execute(&self, claimed: ClaimedJob, leased_at: tokio::time::Instant) {
        let id = claimed.job.id;
        let attempt = claimed.attempt;
        tracing::info!(object_key = ?claimed.payload.object_key, "job started");
        let state = Arc::new(JobState::default());
        let started = std::time::Instant::now();
        let cancel = self.abort.child_token();
        let stop_heartbeat = CancellationToken::new();
        // Cancelled when this attempt no longer holds the lease (or cannot
        // know that it does): the job must stop writing at once.
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat_loop(
            Arc::clone(&self.services),
            self.settings.clone(),
            Lease {
                id,
                attempt,
                leased_at,
            },
            Arc::clone(&state),
            cancel.clone(),
            lost.clone(),
            stop_heartbeat.clone(),
        ));
        // The job runs in its own task so that a panic inside it ends as a
        // failed job instead of a worker whose heartbeat renews a dead lease forever.
        let mut job_task = tokio::spawn({
            let services = Arc::clone(&self.services);
            let sources = Arc::clone(&self.sources);
            let claimed = claimed.clone();
            let state = Arc::clone(&state);
            let cancel = cancel.clone();
            async move { run_job(&sources, &services, &claimed, &state, &cancel).await }
        });
        // A job that outlives its time limit is stopped (its task aborted,
        // so it writes nothing more) and fails, saying so.
        let limit = self.settings.job_timeout();
        let abort = job_task.abort_handle();
        let result = tokio::select! {
            biased;
            joined = tokio::time::timeout(limit, &mut job_task) => match joined {
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
            },
            // The lease is lost or could not be renewed in time: not one
            // more write from this attempt.
            _ = lost.cancelled() => {
                abort.abort();
                Err(JobError::Cancelled)
            }
            // The shutdown grace is over: the job stops now, whatever it is
            // waiting on (a hung Chroma, S3 or GitHub call must not hold the
            // process); it is released below.
            _ = self.abort.cancelled() => {
                abort.abort();
                Err(JobError::Cancelled)
            }
        };
        stop_heartbeat.cancel();
        let signal = heartbeat.await.unwrap_or(HeartbeatOutcome::Continue);

        let outcome = match (result, signal) {
            (_, HeartbeatOutcome::LeaseLost) => {
                tracing::warn!("this attempt no longer holds the lease; dropping its outcome");
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
        // Bounded: past the lease the write is pointless (the job is retried
        // anyway), and at shutdown a hung queue must not hold the process.
        let write_limit = if self.abort.is_cancelled() {
            self.settings.renewal_timeout()
        } else {
            self.settings.lease()
        };
        let write = self.services.queue.finish(id, attempt, outcome, &stats);
        match tokio::time::timeout(write_limit, write).await {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => tracing::warn!("outcome not recorded: the job moved on without us"),
            // The lease will expire and another attempt will redo the job.
            Ok(Err(error)) => tracing::error!(%error, "recording the job outcome failed"),
            Err(_) => tracing::error!(
                timeout = ?write_limit,
                "recording the job outcome timed out; the lease will expire and the job be retried"
            ),
        }
    }
}

/// The lease an attempt holds.
struct Lease {
    id: uuid::Uuid,
    attempt: u32,
    /// When the request that granted the lease started (monotonic clock).
    leased_at: tokio::time::Instant,
}

/// Renews the lease every heartbeat interval until `stop`; cancels the job
/// when a cancel is requested, and cancels `lost` (and the job) when the
/// lease was lost or could not be renewed before `lease − margin` after the
/// last successful renewal *started*. Each renewal is given
/// `renewal_timeout`; the deadline is watched while it runs, so a renewal
/// that hangs cannot carry the worker past it. Returns the last signal.
#[allow(clippy::too_many_arguments)]
async fn heartbeat_loop(
    services: Arc<Services>,
    settings: QueueSettings,
    lease: Lease,
    state: Arc<JobState>,
    cancel: CancellationToken,
    lost: CancellationToken,
    stop: CancellationToken,
) -> HeartbeatOutcome {
    let keep = settings.lease() - settings.lease_margin();
    let mut deadline = lease.leased_at + keep;
    let mut signal = HeartbeatOutcome::Continue;
    let give_up = |why: &str| {
        tracing::warn!(
            reason = why,
            "lease could not be renewed in time; stopping this attempt before another worker takes the job"
        );
        cancel.cancel();
        lost.cancel();
        HeartbeatOutcome::LeaseLost
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return signal,
            _ = tokio::time::sleep_until(deadline) => return give_up("no renewal succeeded"),
            _ = tokio::time::sleep(settings.heartbeat()) => {}
        }
        let progress = state.progress.lock().expect("progress lock").clone();
        let stats = state.stats.lock().expect("stats lock").clone();
        let started = tokio::time::Instant::now();
        let renewal = tokio::time::timeout(
            settings.renewal_timeout(),
            services.queue.heartbeat(
                lease.id,
                lease.attempt,
                settings.lease(),
                progress.as_ref(),
                &stats,
            ),
        );
        let renewed = tokio::select! {
            _ = stop.cancelled() => return signal,
            _ = tokio::time::sleep_until(deadline) => return give_up("the renewal did not answer"),
            renewed = renewal => renewed,
        };
        match renewed {
            Ok(Ok(HeartbeatOutcome::Continue)) => deadline = started + keep,
            Ok(Ok(HeartbeatOutcome::LeaseLost)) => {
                tracing::warn!("another attempt owns the job now; stopping this one");
                cancel.cancel();
                lost.cancel();
                return HeartbeatOutcome::LeaseLost;
            }
            Ok(Ok(other)) => {
                // Renewed; the job is asked to stop (cancel requested).
                deadline = started + keep;
                if signal != other {
                    tracing::info!(signal = ?other, "heartbeat asks the job to stop");
                }
                signal = other;
                cancel.cancel();
            }
            Ok(Err(error)) => tracing::warn!(%error, "renewing the lease failed; will retry"),
            Err(_) => tracing::warn!(
                timeout = ?settings.renewal_timeout(),
                "renewing the lease timed out; will retry"
            ),
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
