//! HTTP API (axum), wire-compatible with Chroma Sync.
//!
//! Architecture invariant: handlers validate and talk to the [`Queue`] only;
//! they never run jobs or call Chroma (except `/health`, which checks that
//! Chroma answers). Every error leaves as `{"error", "message"}` with the
//! status code the seeds give for it.

mod auth;
mod error;
pub mod invocations;
pub mod openapi;
pub mod sources;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use tokio::sync::Notify;

pub use auth::Authenticator;
pub use error::ApiError;

use crate::model::HealthResponse;
use crate::queue::Queue;
use crate::sink::chroma::ChromaClient;
use crate::source::github::GitHubClients;
use crate::source::s3::S3Clients;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub queue: Arc<dyn Queue>,
    pub chroma: ChromaClient,
    pub auth: Arc<Authenticator>,
    pub s3: Arc<S3Clients>,
    pub github: Arc<GitHubClients>,
    /// Backpressure: creating an invocation beyond this many pending answers 429.
    pub max_pending_jobs: u64,
    /// Wakes idle workers of this process when a job is enqueued.
    pub wake: Arc<Notify>,
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/sources", post(sources::create).get(sources::list))
        .route(
            "/sources/{source_id}",
            get(sources::get).delete(sources::delete),
        )
        .route(
            "/sources/{source_id}/schedule/slots",
            get(sources::schedule_slots),
        )
        .route(
            "/sources/{source_id}/invocations",
            post(invocations::create),
        )
        .route(
            "/sources/{source_id}/invocations/latest-by-keys",
            post(invocations::latest_by_keys),
        )
        .route("/invocations", get(invocations::list))
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
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
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
#[utoipa::path(get, path = "/health", tag = "System", operation_id = "health",
    responses((status = 200, body = HealthResponse), (status = 503, body = HealthResponse)))]
async fn health(State(state): State<AppState>) -> Response {
    let queue = match state.queue.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("unavailable: {e}"),
    };
    let chroma = match state.chroma.heartbeat().await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("unavailable: {e}"),
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
