//! Webhook deliveries: every `serve` and `worker` process runs
//! [`webhook_loop`], which never blocks a worker.
//!
//! Durability comes from the queue, in two steps:
//! 1. A job of a source with a `webhook` is enqueued with `notify = 1`.
//!    Once it has finished (by a worker, a cancel, or the sweep of a dead
//!    worker's lease) the loop turns it into a `webhook_deliveries` row
//!    holding the Job JSON, and marks it announced (`notify = 2`) in the
//!    same transaction. A process dying between the two finds the job
//!    again; the row is unique per (job, event), so it is stored once.
//! 2. Due deliveries are claimed with a lease (fenced by their attempt
//!    count, as jobs are), POSTed, and their answer recorded: 2xx is
//!    `delivered`; anything else is retried with exponential backoff until
//!    `[webhooks] retry_for_seconds` after the job finished, then `failed`.
//!    A process dying mid-attempt leaves a lease that runs out, and another
//!    takes the delivery over.
//!
//! So a delivery may arrive more than once (at least once): receivers
//! de-duplicate by `X-Chroma-Syncd-Delivery`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::WebhookSettings;
use crate::domain::Sources;
use crate::model::WebhookEvent;
use crate::queue::{DeliveryResult, NewDelivery, Queue, QueueError, SourceRecord};

/// How often the loop looks for finished jobs and due deliveries.
const TICK: Duration = Duration::from_millis(500);
/// Finished jobs announced per look.
const ANNOUNCE_BATCH: u32 = 100;

/// Announces finished jobs and sends due deliveries until `shutdown`.
pub async fn webhook_loop(
    queue: Arc<dyn Queue>,
    sources: Arc<Sources>,
    settings: WebhookSettings,
    shutdown: CancellationToken,
) {
    let mut in_flight = JoinSet::new();
    let capacity = settings.max_concurrent.max(1);
    // An attempt holds its delivery this long: its timeout, and a margin.
    let lease = settings.timeout() + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
        while in_flight.try_join_next().is_some() {}
        if let Err(error) = announce(queue.as_ref(), &settings).await {
            tracing::warn!(%error, "announcing finished jobs to webhooks failed");
        }
        while in_flight.len() < capacity {
            match queue.claim_delivery(lease).await {
                Ok(Some(delivery)) => {
                    let (queue, sources) = (Arc::clone(&queue), Arc::clone(&sources));
                    let settings = settings.clone();
                    in_flight.spawn(async move {
                        // Read per attempt: a rotated secret signs the next
                        // attempt. A failed read is a failed attempt
                        // (retried), never an unsigned delivery.
                        let answer = match queue.webhook_secret(delivery.source_id).await {
                            Ok(secret) => {
                                sources
                                    .webhooks
                                    .send(
                                        &delivery.url,
                                        delivery.event.as_str(),
                                        &delivery.id.to_string(),
                                        delivery.body.clone(),
                                        secret.as_deref(),
                                    )
                                    .await
                            }
                            Err(error) => super::Answer {
                                status: None,
                                error: Some(format!("reading the source's webhook secret: {error}")),
                            },
                        };
                        let delivered = answer.delivered();
                        tracing::info!(
                            delivery = %delivery.id,
                            job_id = %delivery.job_id,
                            attempt = delivery.attempts,
                            status = ?answer.status,
                            error = ?answer.error,
                            "webhook delivery attempt"
                        );
                        if !delivered {
                            let kind = answer.status.map_or("connect", crate::metrics::status_kind);
                            crate::metrics::request_error("webhook", kind);
                        }
                        let result = DeliveryResult {
                            status: answer.status,
                            error: answer.error.map(|e| crate::secrets::scrub(&e).into_owned()),
                            retry_after: (!delivered).then(|| settings.backoff(delivery.attempts)),
                        };
                        if let Err(error) = queue.record_delivery(&delivery, result).await {
                            // The lease runs out and the attempt is made again.
                            tracing::warn!(%error, delivery = %delivery.id, "recording a delivery failed");
                        }
                    });
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "claiming a webhook delivery failed");
                    break;
                }
            }
        }
    }
    // Attempts in flight are dropped; their leases run out and they are
    // made again (at least once).
    in_flight.abort_all();
}

/// Turns finished jobs that owe a delivery into delivery rows.
async fn announce(queue: &dyn Queue, settings: &WebhookSettings) -> Result<(), QueueError> {
    let jobs = queue.unannounced_jobs(ANNOUNCE_BATCH).await?;
    let mut sources: HashMap<Uuid, Option<SourceRecord>> = HashMap::new();
    for job in jobs {
        let Some(source_id) = job.source_id else {
            queue.announce(job.id, None).await?;
            continue;
        };
        let record = match sources.entry(source_id) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                new.insert(queue.get_source(source_id).await?)
            }
        };
        let webhook = record
            .as_ref()
            .and_then(|record| record.payload.webhook.as_ref());
        let event = WebhookEvent::of(&job.status);
        let delivery = match (webhook, event) {
            (Some(webhook), Some(event)) if webhook.wants(event) => Some(NewDelivery {
                source_id,
                event,
                url: webhook.url.clone(),
                body: serde_json::to_string(&job)
                    .map_err(|e| QueueError::Corrupt(format!("job {}: {e}", job.id)))?,
                retry_for: settings.retry_for(),
            }),
            _ => None,
        };
        queue.announce(job.id, delivery).await?;
    }
    Ok(())
}
