//! HTTP API (axum), wire-compatible with Chroma Sync.
//!
//! Architecture invariant: handlers validate and talk to the [`Queue`] only;
//! they never run jobs or call Chroma (except `/health`, which checks that
//! Chroma answers). Every error leaves as `{"error", "message"}` with the
//! status code the seeds give for it.

mod auth;
mod error;
pub mod events;
pub mod invocations;
pub mod multipart_guard;
pub mod openapi;
pub mod origin;
pub mod quota;
pub mod server;
pub mod source_types;
pub mod sources;
pub mod ui;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use auth::Authenticator;
pub use error::ApiError;

use crate::domain::{SourceLimits, Sources};
use crate::model::HealthResponse;
use crate::queue::Queue;
use crate::sink::chroma::ChromaClient;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<dyn Queue>,
    pub chroma: ChromaClient,
    pub auth: Arc<Authenticator>,
    /// Every source kind, to validate sources and plan invocations.
    pub sources: Arc<Sources>,
    /// Backpressure: creating an invocation beyond this many pending answers 429.
    pub max_pending_jobs: u64,
    /// Wakes idle workers of this process when a job is enqueued.
    pub wake: Arc<Notify>,
    /// What callers may ask for (`[api]` in the config).
    pub limits: ApiLimits,
    /// Uploads being received; at `[uploads] max_in_flight` more get 429.
    pub uploads_in_flight: Arc<tokio::sync::Semaphore>,
    /// Uploads being received per token; at `[uploads]
    /// max_in_flight_per_token` that token's next gets 429.
    pub uploads_per_token: quota::PerToken,
    /// `GET /api/v1/events` streams: their cap and their end at shutdown.
    pub events: events::EventStreams,
}

/// Bounds on what one API caller may ask of the daemon; each is checked
/// before anything is stored.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// A request (its body included) is answered within this, else 408.
    pub request_timeout: Duration,
    /// Cron schedules may not fire more often than this.
    pub min_schedule_interval: Duration,
    /// The embedding models sources may name.
    pub models: Arc<Vec<String>>,
    /// The sparse models (SPLADE) sources may name.
    pub sparse_models: Arc<Vec<String>>,
    /// Where sources' OCR languages are checked, or why OCR is off
    /// (`SourceLimits::ocr_models`).
    pub ocr_models: Result<std::path::PathBuf, String>,
    /// Largest file `POST /api/v1/add-file` takes.
    pub max_upload_bytes: u64,
    /// `request_timeout` of the upload route.
    pub upload_timeout: Duration,
    /// Host names served besides loopback ones ([`origin`]).
    pub allowed_hosts: origin::AllowedHosts,
}

impl ApiLimits {
    /// What API callers may ask for, as `[api]` and `[embedding]` set it.
    pub fn from_config(config: &crate::config::Config) -> Self {
        ApiLimits {
            request_timeout: config.api.request_timeout(),
            min_schedule_interval: config.api.min_schedule_interval(),
            models: Arc::new(config.embedding.model_names()),
            sparse_models: Arc::new(config.embedding.sparse_model_names()),
            ocr_models: config.extract.ocr.settings().map(|ocr| ocr.tessdata),
            max_upload_bytes: config.uploads.max_file_bytes,
            upload_timeout: config.uploads.request_timeout(),
            allowed_hosts: origin::AllowedHosts::new(&config.api.allowed_hosts),
        }
    }

    /// What the domain layer checks of a source.
    pub fn sources(&self) -> SourceLimits {
        SourceLimits {
            min_schedule_interval: self.min_schedule_interval,
            models: Arc::clone(&self.models),
            sparse_models: Arc::clone(&self.sparse_models),
            ocr_models: self.ocr_models.clone(),
        }
    }
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits::from_config(&crate::config::Config::default())
    }
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/sources", post(sources::create).get(sources::list))
        .route("/source-types", get(source_types::list))
        .route(
            "/sources/{source_id}",
            get(sources::get).delete(sources::delete),
        )
        .route(
            "/sources/{source_id}/schedule/slots",
            get(sources::schedule_slots),
        )
        .route(
            "/sources/{source_id}/webhook/deliveries",
            get(sources::webhook_deliveries),
        )
        .route(
            "/sources/{source_id}/webhook/rotate-secret",
            post(sources::rotate_webhook_secret),
        )
        .route(
            "/sources/{source_id}/invocations",
            post(invocations::create),
        )
        .route(
            "/sources/{source_id}/invocations/latest-by-keys",
            post(invocations::latest_by_keys),
        )
        .route(
            "/add-file",
            // The file streams to disk: the body may be as large as a file
            // (and its fields); `add_file` bounds the file itself.
            post(upload::add_file).layer(DefaultBodyLimit::max(
                usize::try_from(state.limits.max_upload_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_add(UPLOAD_FIELDS_BYTES),
            )),
        )
        .route("/invocations", get(invocations::list))
        .route("/events", get(events::stream))
        .route(
            "/invocations/{invocation_id}",
            get(invocations::get).put(invocations::cancel),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(health))
        .route("/readyz", get(health))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "alive"})) }),
        )
        .route("/openapi.json", get(|| async { Json(openapi::spec()) }))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(middleware::from_fn_with_state(
            (state.limits.request_timeout, state.limits.upload_timeout),
            request_timeout,
        ))
        // Outermost: a request under a rebinding name reaches nothing.
        .layer(middleware::from_fn_with_state(
            state.limits.allowed_hosts.clone(),
            origin::check,
        ))
        .with_state(state)
}

/// Room in an upload's body for its fields and multipart framing.
const UPLOAD_FIELDS_BYTES: usize = 1024 * 1024;

/// Answers 408 when a request, reading its body included, takes longer than
/// `[api] request_timeout_seconds` (`[uploads] request_timeout_seconds` for
/// an upload): a client trickling its body cannot hold a handler (and a
/// connection) forever. It bounds producing the response head: the event
/// stream (`/api/v1/events`) answers at once and bounds its body itself
/// (see [`events`]).
async fn request_timeout(
    State((api_limit, upload_limit)): State<(Duration, Duration)>,
    request: Request,
    next: middleware::Next,
) -> Response {
    let upload = request.uri().path() == "/api/v1/add-file";
    let limit = if upload { upload_limit } else { api_limit };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request was not completed within {} s ({}); send the body promptly and \
                 try again",
                limit.as_secs_f64(),
                if upload {
                    "[uploads] request_timeout_seconds"
                } else {
                    "[api] request_timeout_seconds"
                }
            ),
        )
        .into_response(),
    }
}

/// Serves the API on `listener` until `shutdown` is cancelled, within the
/// bounds of `limits` (see [`server`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: server::ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = AppState {
        events: state.events.ending_on(shutdown.child_token()),
        ..state
    };
    server::serve(listener, router(state), limits, shutdown).await
}

/// Prometheus text exposition (no token needed, like the health endpoints:
/// it holds counts, never content or secrets).
async fn metrics(State(state): State<AppState>) -> Response {
    let pending = state.queue.pending_count().await.ok();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(pending),
    )
        .into_response()
}

/// 200 when the queue and Chroma both answer, else 503 naming what is down.
/// Why it is down (the dependency's own error, which can name internal hosts)
/// is shown only to callers the API would accept; others see `unavailable`,
/// and the log has the detail.
#[utoipa::path(get, path = "/health", tag = "System", operation_id = "health",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
async fn health(State(state): State<AppState>, request: Request) -> Response {
    let token = request
        .headers()
        .get("x-chroma-token")
        .and_then(|value| value.to_str().ok());
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|axum::extract::ConnectInfo(peer)| *peer);
    let trusted = state.auth.authenticate(token, peer).is_ok();
    let describe = |what: &str, error: String| {
        tracing::warn!(dependency = what, error = %error, "health check failed");
        if trusted {
            format!("unavailable: {}", crate::secrets::scrub(&error))
        } else {
            "unavailable".to_string()
        }
    };
    let queue = match state.queue.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => describe("queue", e.to_string()),
    };
    let chroma = match state.chroma.heartbeat().await {
        Ok(()) => "ok".to_string(),
        Err(e) => describe("chroma", e.to_string()),
    };
    let healthy = queue == "ok" && chroma == "ok";
    let body = HealthResponse {
        status: if healthy { "ok" } else { "unavailable" }.to_string(),
        queue,
        chroma,
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
