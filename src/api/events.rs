//! `GET /api/v1/events`: server-sent events telling a caller (the dashboard
//! at `/ui/`) when an invocation it may see changes, so a page follows jobs
//! without polling every row.
//!
//! The stream is built from the queue alone, like every other handler
//! (the API never hears from workers directly): a task per stream reads
//! the caller's newest invocations, the processing ones, and those it last
//! saw pending or processing, every [`POLL_EVERY`], and sends an
//! `invocation` event (the Job JSON, as `GET /api/v1/invocations/{id}`
//! answers it) for each one whose JSON differs from what it last sent. The
//! first round sends every invocation it reads (the page merges them), then
//! a `ready` event.
//!
//! Rules the stream keeps:
//!
//! - **Same access as a token**: it is behind the API's `require_token`
//!   layer, and every job read is filtered to `Principal::databases()`
//!   (lists by the queue's `databases` filter, single reads checked), so a
//!   token sees on the stream exactly what `GET /api/v1/invocations` would
//!   show it.
//! - **Bounded**: at most `[api] max_event_streams` streams at once (429
//!   beyond, with `Retry-After`); each reads at most three pages of
//!   [`PAGE`] jobs per round and remembers at most those; each ends by
//!   itself after [`EventStreams::lifetime`], shorter than the server's
//!   `idle_timeout_seconds` (the server counts a connection whose response
//!   head is sent as idle, and closes it past that), and the page
//!   reconnects and gets a fresh first round.
//! - **Ends at shutdown**: the task stops when the API stops, which ends the
//!   response body, so a stream never holds the drain.
//!
//! The request timeout middleware does not cut a stream: it bounds the
//! handler, which answers at once; the body is bounded by the above.
//!
//! A pending invocation older than the newest [`PAGE`] that the stream never
//! saw is reported once it starts processing; if it is cancelled while
//! still pending, the stream does not report it (the page's next reload
//! does).

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::model::{Job, JobState};
use crate::queue::{JobFilter, Queue};

/// How often a stream reads the queue.
pub const POLL_EVERY: Duration = Duration::from_millis(500);
/// Jobs per page a stream reads each round.
const PAGE: u32 = 100;
/// Events waiting for a slow reader before the stream's task waits too.
const BUFFERED: usize = 64;
/// Comment lines keep proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Longest a stream lives when the idle timeout would allow more.
const MAX_LIFETIME: Duration = Duration::from_secs(600);

/// The streams open at once and when they must end; one per API.
#[derive(Clone)]
pub struct EventStreams {
    slots: Arc<Semaphore>,
    max: usize,
    /// `[api] max_event_streams_per_token`.
    per_token: super::quota::PerToken,
    /// A stream ends by itself after this (see the module docs).
    lifetime: Duration,
    /// Cancelled when the API stops.
    shutdown: CancellationToken,
}

impl EventStreams {
    /// `[api] max_event_streams` streams, each ending well within
    /// `idle_timeout_seconds`.
    pub fn from_settings(settings: &crate::config::ApiSettings) -> Self {
        let max = settings.max_event_streams;
        EventStreams {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_token: super::quota::PerToken::new(settings.max_event_streams_per_token),
            lifetime: settings
                .idle_timeout()
                .mul_f64(0.8)
                .clamp(Duration::from_secs(1), MAX_LIFETIME),
            shutdown: CancellationToken::new(),
        }
    }

    /// The same slots, with streams ending when `shutdown` is cancelled.
    pub fn ending_on(self, shutdown: CancellationToken) -> Self {
        EventStreams { shutdown, ..self }
    }

    /// How long one stream lives before the client must reconnect.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// `GET /api/v1/events` (extension): `text/event-stream` of `invocation`
/// events (Job JSON) for the caller's databases; see the module docs.
#[utoipa::path(get, path = "/api/v1/events", tag = "Invocation", operation_id = "invocation_events",
    description = "Extension: server-sent events. `invocation` (data: the Job JSON) whenever an \
        invocation the token may see changes, every readable one first, then `ready`. The stream \
        ends by itself after a while (shorter than the server's idle timeout): reconnect.",
    responses(
        (status = 200, description = "Extension: an event stream", content_type = "text/event-stream"),
        (status = 401, description = "Unauthorized", body = crate::model::ErrorResponse),
        (status = 429, description = "Extension: `[api] max_event_streams` streams are open; retry after `Retry-After` seconds", body = crate::model::ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, ApiError> {
    let streams = &state.events;
    let token_slot = streams.per_token.try_acquire(&principal).map_err(|()| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_event_streams",
            format!(
                "this token holds {} event streams, as many as one token may ([api] \
                 max_event_streams_per_token); close one or retry later",
                streams.per_token.per_token()
            ),
        )
    });
    let permit = token_slot.and_then(|token_slot| {
        Arc::clone(&streams.slots)
            .try_acquire_owned()
            .map(|permit| (permit, token_slot))
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_event_streams",
                    format!(
                        "{} event streams are open ([api] max_event_streams); close one or \
                         retry later",
                        streams.max
                    ),
                )
            })
    });
    let permit = match permit {
        Ok(permit) => permit,
        Err(error) => {
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Ok(response);
        }
    };
    let (sender, receiver) = mpsc::channel(BUFFERED);
    tokio::spawn(follow(
        Arc::clone(&state.queue),
        principal.databases(),
        streams.lifetime,
        streams.shutdown.clone(),
        sender,
        permit,
    ));
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        let event = receiver.recv().await?;
        Some((Ok::<Event, Infallible>(event), receiver))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Reverse proxies (nginx) would otherwise hold events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// What a stream last sent of a job: its JSON's hash, and whether it was
/// pending or processing then (such jobs are read again until they end).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Seen {
    fingerprint: u64,
    live: bool,
}

/// The stream's task: reads, compares, sends; ends when the client goes,
/// the lifetime is up, or the API stops. Holds the stream's slot.
async fn follow(
    queue: Arc<dyn Queue>,
    databases: Option<Vec<String>>,
    lifetime: Duration,
    shutdown: CancellationToken,
    sender: mpsc::Sender<Event>,
    _slot: (OwnedSemaphorePermit, Option<super::quota::TokenSlot>),
) {
    let deadline = tokio::time::Instant::now() + lifetime;
    let mut seen: HashMap<Uuid, Seen> = HashMap::new();
    let mut first = true;
    loop {
        match read_round(&*queue, databases.as_deref(), &seen).await {
            Ok(jobs) => {
                let mut next = HashMap::with_capacity(jobs.len());
                for job in jobs {
                    let now = Seen {
                        fingerprint: fingerprint(&job),
                        live: !job.status.is_finished(),
                    };
                    let changed = seen.get(&job.id) != Some(&now);
                    next.insert(job.id, now);
                    if changed {
                        let Ok(event) = Event::default().event("invocation").json_data(&job) else {
                            continue;
                        };
                        if sender.send(event).await.is_err() {
                            return;
                        }
                    }
                }
                seen = next;
            }
            Err(error) => {
                tracing::warn!(%error, "an event stream could not read the queue");
                let event = Event::default()
                    .event("error")
                    .data("the queue could not be read; retrying");
                if sender.send(event).await.is_err() {
                    return;
                }
            }
        }
        if first {
            first = false;
            if sender
                .send(Event::default().event("ready").data("{}"))
                .await
                .is_err()
            {
                return;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = sender.closed() => return,
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// This round's jobs the caller may see: the newest page, the processing
/// page, and whatever was live last round and is in neither (to see it end).
async fn read_round(
    queue: &dyn Queue,
    databases: Option<&[String]>,
    seen: &HashMap<Uuid, Seen>,
) -> Result<Vec<Job>, crate::queue::QueueError> {
    let filter = |status: Option<JobState>| JobFilter {
        databases: databases.map(<[String]>::to_vec),
        status,
        limit: PAGE,
        ..JobFilter::default()
    };
    let mut jobs = queue.list_jobs(&filter(None)).await?;
    let mut ids: std::collections::HashSet<Uuid> = jobs.iter().map(|job| job.id).collect();
    for job in queue.list_jobs(&filter(Some(JobState::Processing))).await? {
        if ids.insert(job.id) {
            jobs.push(job);
        }
    }
    let vanished: Vec<Uuid> = seen
        .iter()
        .filter(|(id, seen)| seen.live && !ids.contains(id))
        .map(|(id, _)| *id)
        .take(PAGE as usize)
        .collect();
    for id in vanished {
        if let Some(job) = queue.get_job(id).await?
            && databases.is_none_or(|allowed| allowed.contains(&job.metadata.database_name))
        {
            jobs.push(job);
        }
    }
    Ok(jobs)
}

/// A hash of the job's JSON: any change a reader could see changes it.
fn fingerprint(job: &Job) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(job)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}
