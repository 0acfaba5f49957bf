//! S3 auto-sync (`auto_sync: "direct"` and `"metadata"`): the bucket sends
//! its event notifications to an SQS queue; we turn each created or removed
//! object into an invocation (`trigger: auto_sync`). A removed object's job
//! finds it gone and deletes its chunks. In `metadata` mode only
//! `.meta.json` files are the source's: other objects' events are not its
//! own ([`covers`]), so they are discarded as any event no source wants. A metadata file's invocation is of the file itself; its
//! job reads it and syncs what it names (see [`super::meta_json`]), so the
//! consumer never reads an object body.
//!
//! A consumer starts by reconciling ([`Reconcile`]): objects written
//! before the bucket's events reached the queue (before the source was
//! created), or whose events were lost (past the queue's retention, in a
//! dead-letter queue), raise no event, so one whole-prefix comparison —
//! after creation and after every restart — enqueues what changed and
//! removes what is gone. Objects stored at their listed ETag cost nothing.
//!
//! Every process runs [`autosync_loop`]; SQS hands each message to one
//! consumer at a time. A message is deleted only once its invocations are in
//! our queue, so a crash or a queue outage redelivers it. An event for a key
//! whose previous job is still pending or running is left for redelivery
//! after the visibility timeout: that job may have read the object before
//! this change, and its result must not be the last word.
//!
//! Several sources may share one queue (one queue per region is the usual
//! setup), each with its own consumer. Whichever consumer receives a message
//! handles it whole ([`verdict`]): an invocation for every live source on
//! the queue whose bucket and prefix cover one of its records, each planned
//! from that source's own settings, then one delete. A message no live
//! source on the queue wants (S3's test event, a key under nobody's prefix)
//! is deleted, or it would circulate forever.
//!
//! Why not leave other sources' messages to their own consumers: releasing
//! a message (visibility 0) raises its receive count, so with a redrive
//! policy an event could reach the dead-letter queue before its owner's
//! consumer ever saw it — a silent loss. Handling on receipt costs nothing
//! extra: the invocation is the same whoever enqueues it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::Reconcile;
use super::client::S3Clients;
use super::meta_json::is_meta_json;
use super::settings::S3SourceConfig;
use crate::model::{AutoSync, CreateJobPayload, Trigger};
use crate::queue::{Queue, QueueError, SourceRecord};
use crate::sources::SourceKind;

/// How often the set of auto-synced sources is re-read.
const REFRESH: Duration = Duration::from_secs(5);
/// SQS long-poll wait.
const WAIT_SECONDS: i32 = 5;
/// A message not deleted (its key was busy, or enqueueing failed) comes back after this.
const VISIBILITY_SECONDS: i32 = 10;
/// The longest wait between attempts at a reconciliation that failed.
const RECONCILE_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// One change to an object, from an S3 event notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    pub key: String,
    pub removed: bool,
}

#[derive(Deserialize)]
struct Notification {
    #[serde(rename = "Records", default)]
    records: Vec<EventRecord>,
}

#[derive(Deserialize)]
struct EventRecord {
    #[serde(rename = "eventName")]
    event_name: String,
    s3: EventS3,
}

#[derive(Deserialize)]
struct EventS3 {
    bucket: EventBucket,
    object: EventObject,
}

#[derive(Deserialize)]
struct EventBucket {
    name: String,
}

#[derive(Deserialize)]
struct EventObject {
    key: String,
}

/// The object changes in one SQS message body. S3's test event and other
/// messages hold none. Keys arrive form-encoded (`+` for a space).
pub fn parse_events(body: &str) -> Vec<ObjectEvent> {
    let Ok(notification) = serde_json::from_str::<Notification>(body) else {
        return Vec::new();
    };
    notification
        .records
        .into_iter()
        .filter_map(|record| {
            let removed = record.event_name.starts_with("ObjectRemoved");
            if !removed && !record.event_name.starts_with("ObjectCreated") {
                return None;
            }
            let key: String =
                url::form_urlencoded::parse(format!("k={}", record.s3.object.key).as_bytes())
                    .next()
                    .map(|(_, value)| value.into_owned())?;
            Some(ObjectEvent {
                bucket: record.s3.bucket.name,
                key,
                removed,
            })
        })
        .collect()
}

/// How long a list of sources read for a message nobody seemed to want is
/// used for the next such messages (only for messages sent before it was
/// read: [`read_after`]).
const FRESH_FOR: Duration = Duration::from_secs(1);
/// How far SQS's clock may be from ours when telling whether a list of
/// sources was read after a message was sent.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// When SQS says `message` was sent (`SentTimestamp`, ms since the epoch).
fn sent_at(message: &aws_sdk_sqs::types::Message) -> Option<SystemTime> {
    let millis: u64 = message
        .attributes()?
        .get(&aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(millis))
}

/// Whether a list of sources read at `read_at` already holds every source
/// created before a message sent at `sent` (and so before its upload):
/// only when it was read clearly after the message was sent. Unknown send
/// times never qualify.
fn read_after(read_at: SystemTime, sent: Option<SystemTime>) -> bool {
    sent.is_some_and(|sent| read_at > sent + CLOCK_SKEW)
}

/// Consumes the SQS queues of every auto-synced S3 source until `shutdown`.
pub async fn autosync_loop(
    queue: Arc<dyn Queue>,
    s3: Arc<S3Clients>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    reconcile: Arc<dyn Reconcile>,
) {
    let mut consumers: HashMap<Uuid, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    // Every consumer sees every auto-synced source, to tell whose a message is.
    let (live_sources, _) = watch::channel(Arc::new(Vec::<SourceRecord>::new()));
    loop {
        match autosynced_sources(queue.as_ref()).await {
            Ok(sources) => {
                live_sources.send_replace(Arc::new(sources.clone()));
                let live: Vec<Uuid> = sources.iter().map(|r| r.id).collect();
                consumers.retain(|id, (stop, _)| {
                    let keep = live.contains(id);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for record in sources {
                    let Some(config) = super::settings(&record) else {
                        continue;
                    };
                    consumers.entry(record.id).or_insert_with(|| {
                        let stop = shutdown.child_token();
                        tokio::spawn(reconciled(
                            Arc::clone(&reconcile),
                            record.clone(),
                            stop.clone(),
                        ));
                        let consumer = Consumer {
                            queue: Arc::clone(&queue),
                            s3: Arc::clone(&s3),
                            wake: Arc::clone(&wake),
                            record,
                            config,
                            live: live_sources.subscribe(),
                        };
                        (stop.clone(), tokio::spawn(consumer.run(stop)))
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "listing auto-synced sources failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
    for (_, (_, handle)) in consumers {
        let _ = handle.await;
    }
}

/// Reconciles a source whose consumer just started, retrying (with a
/// growing pause) until it succeeds or the consumer stops: a bucket or
/// collection that does not answer now must not leave the source stale.
/// Runs beside the consumer: events are held by SQS, and an event for a
/// key the reconciliation also enqueued finds its job pending and waits.
async fn reconciled(reconcile: Arc<dyn Reconcile>, record: SourceRecord, stop: CancellationToken) {
    let mut pause = Duration::from_secs(1);
    loop {
        match reconcile.reconcile(&record).await {
            Ok(summary) => {
                tracing::info!(source_id = %record.id, %summary, "auto-sync: reconciled with the bucket");
                return;
            }
            Err(error) => {
                tracing::warn!(source_id = %record.id, %error, ?pause, "auto-sync: reconciling with the bucket failed; trying again");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECONCILE_BACKOFF_MAX);
    }
}

async fn autosynced_sources(queue: &dyn Queue) -> Result<Vec<SourceRecord>, QueueError> {
    let mut sources = crate::queue::all_sources(queue, Some(super::S3Source::SOURCE_TYPE)).await?;
    sources.retain(|r| {
        super::settings(r).is_some_and(|s3| {
            matches!(s3.auto_sync, Some(AutoSync::Direct | AutoSync::Metadata))
                && s3.sqs_queue_url.is_some()
        })
    });
    Ok(sources)
}

struct Consumer {
    queue: Arc<dyn Queue>,
    s3: Arc<S3Clients>,
    wake: Arc<Notify>,
    record: SourceRecord,
    /// `record`'s settings.
    config: S3SourceConfig,
    /// Every auto-synced source, refreshed by [`autosync_loop`].
    live: watch::Receiver<Arc<Vec<SourceRecord>>>,
}

/// What a consumer does with one SQS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enqueue these (owner index into the sources given, event) and, once
    /// all are stored, delete the message, whichever sources own them.
    Handle(Vec<(usize, ObjectEvent)>),
    /// No source on the queue wants it: delete it.
    Discard,
}

/// Whether a source's bucket and prefix cover an event — and, in
/// `metadata` mode, whether it is a `.meta.json` file's (the only objects
/// whose uploads and removals sync anything there).
fn covers(source: &S3SourceConfig, event: &ObjectEvent) -> bool {
    event.bucket == source.bucket_name
        && event
            .key
            .starts_with(source.path_prefix.as_deref().unwrap_or_default())
        && (source.auto_sync != Some(AutoSync::Metadata) || is_meta_json(&event.key))
}

/// Decides a message's fate for whichever consumer received it; `sources`
/// are the live auto-synced sources on the same queue, its own included.
pub fn verdict(events: &[ObjectEvent], sources: &[&S3SourceConfig]) -> Verdict {
    let owned: Vec<(usize, ObjectEvent)> = events
        .iter()
        .flat_map(|event| {
            sources
                .iter()
                .enumerate()
                .filter(|(_, source)| covers(source, event))
                .map(move |(owner, _)| (owner, event.clone()))
        })
        .collect();
    if owned.is_empty() {
        Verdict::Discard
    } else {
        Verdict::Handle(owned)
    }
}

impl Consumer {
    fn config(&self) -> (&S3SourceConfig, &str) {
        let s3 = &self.config;
        (s3, s3.sqs_queue_url.as_deref().expect("a queue URL"))
    }

    async fn run(self, stop: CancellationToken) {
        let (s3, queue_url) = self.config();
        let client = match self
            .s3
            .sqs_client(&self.record.payload.database_name, s3, queue_url)
            .await
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(source_id = %self.record.id, %error, "cannot consume the SQS queue");
                return;
            }
        };
        tracing::info!(source_id = %self.record.id, queue_url, "auto-sync: consuming S3 events");
        let mut failures = 0u32;
        // The sources last read for a message nobody seemed to want.
        // (When, on the monotonic clock and the wall clock, and what.)
        let mut fresh: Option<(std::time::Instant, SystemTime, Arc<Vec<SourceRecord>>)> = None;
        while !stop.is_cancelled() {
            let received = tokio::select! {
                _ = stop.cancelled() => break,
                received = client
                    .receive_message()
                    .queue_url(queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(WAIT_SECONDS)
                    .visibility_timeout(VISIBILITY_SECONDS)
                    .message_system_attribute_names(
                        aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp,
                    )
                    .send() => received,
            };
            let messages = match received {
                Ok(output) => {
                    failures = 0;
                    output.messages.unwrap_or_default()
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    crate::metrics::request_error("sqs", "receive");
                    let delay = Duration::from_secs(1 << failures.min(5));
                    tracing::warn!(source_id = %self.record.id, error = %aws_sdk_sqs::error::DisplayErrorContext(&error), ?delay, "receiving S3 events failed");
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    continue;
                }
            };
            for message in messages {
                let events = parse_events(message.body().unwrap_or_default());
                let mut live = Arc::clone(&self.live.borrow());
                // "Nobody's" messages are deleted; the list of sources may be
                // up to a refresh old, so a source created since must not
                // lose its first events: look again before deleting.
                // (At most one such look a second, however many messages —
                // but a look older than the message cannot speak for it: a
                // source created just before its first upload would be
                // missing from it, and its event deleted as nobody's.)
                if !events.is_empty() && self.nobody_wants(&events, &live, queue_url) {
                    let sent = sent_at(&message);
                    match &fresh {
                        Some((at, read_at, sources))
                            if at.elapsed() < FRESH_FOR && read_after(*read_at, sent) =>
                        {
                            live = Arc::clone(sources);
                        }
                        _ => match autosynced_sources(self.queue.as_ref()).await {
                            Ok(sources) => {
                                live = Arc::new(sources);
                                fresh = Some((
                                    std::time::Instant::now(),
                                    SystemTime::now(),
                                    Arc::clone(&live),
                                ));
                            }
                            Err(error) => {
                                tracing::warn!(%error, "listing auto-synced sources failed");
                                continue; // comes back after the visibility timeout
                            }
                        },
                    }
                }
                let mut sharing: Vec<&SourceRecord> = live
                    .iter()
                    .filter(|r| {
                        r.id != self.record.id
                            && queue_of(r).as_deref().and_then(queue_identity)
                                == queue_identity(queue_url)
                    })
                    .collect();
                sharing.insert(0, &self.record);
                let parsed: Vec<S3SourceConfig> =
                    sharing.iter().filter_map(|r| super::settings(r)).collect();
                let configs: Vec<&S3SourceConfig> = parsed.iter().collect();
                let Some(handle) = message.receipt_handle() else {
                    continue;
                };
                match verdict(&events, &configs) {
                    Verdict::Handle(owned) => {
                        if !self.enqueue_all(&sharing, &owned).await {
                            continue; // comes back after the visibility timeout
                        }
                    }
                    Verdict::Discard => {
                        tracing::debug!(source_id = %self.record.id, "deleting an SQS message no source wants");
                    }
                }
                if let Err(error) = client
                    .delete_message()
                    .queue_url(queue_url)
                    .receipt_handle(handle)
                    .send()
                    .await
                {
                    // Redelivered later: a repeat invocation, harmless.
                    tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&error), "deleting an SQS message failed");
                }
            }
        }
    }

    /// Whether no source in `live` on this queue covers any of `events`.
    fn nobody_wants(&self, events: &[ObjectEvent], live: &[SourceRecord], queue_url: &str) -> bool {
        let here = queue_identity(queue_url);
        let parsed: Vec<S3SourceConfig> = std::iter::once(&self.record)
            .chain(live.iter().filter(|r| {
                r.id != self.record.id && queue_of(r).as_deref().and_then(queue_identity) == here
            }))
            .filter_map(super::settings)
            .collect();
        let configs: Vec<&S3SourceConfig> = parsed.iter().collect();
        verdict(events, &configs) == Verdict::Discard
    }

    /// Enqueues one invocation per owned event, each for its owning source;
    /// `false` when one could not be (the message must come back).
    async fn enqueue_all(&self, sources: &[&SourceRecord], owned: &[(usize, ObjectEvent)]) -> bool {
        let mut all = true;
        for (owner, event) in owned {
            let record = sources[*owner];
            let payload = CreateJobPayload {
                object_key: Some(event.key.clone()),
                ..CreateJobPayload::default()
            };
            let Some(s3) = super::settings(record) else {
                continue;
            };
            let job = match super::plan_object(record, &s3, &payload) {
                Ok(planned) => planned.into_job(record, payload, Trigger::AutoSync),
                Err(error) => {
                    tracing::warn!(key = %event.key, %error, "ignoring an S3 event");
                    continue;
                }
            };
            match self.queue.enqueue(job).await {
                Ok(job) => {
                    tracing::info!(source_id = %record.id, key = %event.key, removed = event.removed, job_id = %job.id, "auto-sync invocation");
                    self.wake.notify_waiters();
                }
                Err(QueueError::Duplicate(_)) => all = false,
                Err(error) => {
                    tracing::warn!(%error, "enqueueing an auto-sync invocation failed");
                    all = false;
                }
            }
        }
        all
    }
}

/// The SQS queue an auto-synced source consumes.
/// What names one SQS queue however its URL is spelled: host (lower-cased
/// by the URL parser), port and path without a trailing slash. Two sources
/// whose URLs differ only in spelling must see each other's events as
/// "another source's", never as "nobody's" (which are deleted).
fn queue_identity(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!(
        "{}:{}{}",
        url.host_str()?,
        url.port_or_known_default().unwrap_or(0),
        url.path().trim_end_matches('/')
    ))
}

fn queue_of(record: &SourceRecord) -> Option<String> {
    super::settings(record).and_then(|s3| s3.sqs_queue_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_sources_speaks_only_for_messages_sent_well_before_it_was_read() {
        let read = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(read_after(read, Some(read - Duration::from_secs(60))));
        // Sent just before or after the read (or within the clock skew):
        // the source it is for may be missing from the list.
        assert!(!read_after(read, Some(read - Duration::from_secs(1))));
        assert!(!read_after(read, Some(read + Duration::from_secs(1))));
        assert!(
            !read_after(read, None),
            "an unknown send time never qualifies"
        );
    }

    #[test]
    fn one_queue_spelled_two_ways_is_one_queue() {
        assert_eq!(
            queue_identity("https://SQS.us-east-1.amazonaws.com/123456789012/events/"),
            queue_identity("https://sqs.us-east-1.amazonaws.com:443/123456789012/events")
        );
        assert_ne!(
            queue_identity("https://sqs.us-east-1.amazonaws.com/123456789012/events"),
            queue_identity("https://sqs.eu-west-1.amazonaws.com/123456789012/events")
        );
    }

    #[test]
    fn created_and_removed_objects_are_read_from_a_notification() {
        let body = r#"{"Records":[
            {"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"docs"},"object":{"key":"guides/getting+started%21.md","size":12}}},
            {"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"docs"},"object":{"key":"old.md"}}},
            {"eventName":"ObjectRestore:Completed","s3":{"bucket":{"name":"docs"},"object":{"key":"cold.md"}}}
        ]}"#;
        assert_eq!(
            parse_events(body),
            vec![
                ObjectEvent {
                    bucket: "docs".into(),
                    key: "guides/getting started!.md".into(),
                    removed: false
                },
                ObjectEvent {
                    bucket: "docs".into(),
                    key: "old.md".into(),
                    removed: true
                },
            ]
        );
    }

    #[test]
    fn the_test_event_and_junk_hold_no_changes() {
        assert!(
            parse_events(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"docs"}"#)
                .is_empty()
        );
        assert!(parse_events("not json").is_empty());
    }

    fn source(bucket: &str, prefix: &str) -> S3SourceConfig {
        serde_json::from_value(serde_json::json!({
            "bucket_name": bucket,
            "region": "us-east-1",
            "collection_name": "c",
            "aws_credential_id": 0,
            "path_prefix": prefix,
        }))
        .unwrap()
    }

    fn event(bucket: &str, key: &str) -> ObjectEvent {
        ObjectEvent {
            bucket: bucket.into(),
            key: key.into(),
            removed: false,
        }
    }

    #[test]
    fn a_message_is_handled_for_its_owners_by_whoever_receives_it() {
        let docs = source("b", "docs/");
        let blog = source("b", "blog/");
        // The consumer of `blog` received `docs`'s event: it enqueues for
        // `docs` (never releases it: that would raise its receive count).
        let mine = [event("b", "docs/a.md")];
        assert_eq!(
            verdict(&mine, &[&blog, &docs]),
            Verdict::Handle(vec![(1, mine[0].clone())])
        );
        let sources = [&docs, &blog];
        // Nobody's: S3's test event, another bucket, a key outside every prefix.
        assert_eq!(verdict(&[], &sources), Verdict::Discard);
        assert_eq!(
            verdict(&[event("other", "docs/a.md"), event("b", "x.md")], &sources),
            Verdict::Discard
        );
    }

    #[test]
    fn a_metadata_mode_source_owns_only_its_metadata_files() {
        let mut meta = source("b", "docs/");
        meta.auto_sync = Some(AutoSync::Metadata);
        let direct = source("b", "docs/");
        let upload = [event("b", "docs/report.pdf")];
        let file = [event("b", "docs/report.meta.json")];
        // Alone on the queue, a plain upload is nobody's.
        assert_eq!(verdict(&upload, &[&meta]), Verdict::Discard);
        assert_eq!(
            verdict(&file, &[&meta]),
            Verdict::Handle(vec![(0, file[0].clone())])
        );
        // Beside a `direct` source of the same prefix, it is that source's.
        assert_eq!(
            verdict(&upload, &[&meta, &direct]),
            Verdict::Handle(vec![(1, upload[0].clone())])
        );
        assert_eq!(
            verdict(&file, &[&meta, &direct]),
            Verdict::Handle(vec![(0, file[0].clone()), (1, file[0].clone())])
        );
    }

    #[test]
    fn a_message_for_several_sources_is_handled_whole_for_each_owner() {
        let docs = source("b", "docs/");
        let all = source("b", "");
        let blog = source("b", "blog/");
        let sources = [&docs, &all, &blog];
        let events = [event("b", "docs/a.md"), event("b", "blog/p.md")];
        let expected = vec![
            (0, events[0].clone()),
            (1, events[0].clone()),
            (1, events[1].clone()),
            (2, events[1].clone()),
        ];
        assert_eq!(verdict(&events, &sources), Verdict::Handle(expected));
    }
}
