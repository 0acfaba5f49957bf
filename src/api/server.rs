//! The API's HTTP/1.1 server: hyper connections with the bounds a service
//! shared by many teams needs, which `axum::serve` does not offer.
//!
//! A client can hold a connection only while it makes progress:
//!
//! - **Header read timeout** (hyper's own): a request's headers must arrive
//!   within `header_read_timeout` of the connection opening, or of the end
//!   of the previous response on a kept-alive connection — so an idle
//!   kept-alive connection is closed after this too.
//! - **Request timeout**: a request — reading its body included, since the
//!   handlers read bodies themselves — is answered within `request_timeout`,
//!   else 408 `{error, message}` (see [`super::router`]).
//! - **Idle timeout**: a connection with no request in a handler for
//!   `idle_timeout` — a client that stopped reading its response, say — is
//!   told to close, and dropped if it has not closed within
//!   [`CLOSE_DEADLINE`] (hyper has no write timeout of its own).
//! - HTTP/1.1 only (the CLI, curl and the clients of Chroma Sync's API speak
//!   it); `axum::serve` also took cleartext HTTP/2 (h2c), which has no
//!   header-read timeout to bound it.
//! - **Connection cap**: at most `max_connections` connections are served at
//!   once; beyond that the listener stops accepting (new clients wait in the
//!   kernel's backlog until a slot frees), so slow clients cannot starve the
//!   process of file descriptors or tasks.
//!
//! On shutdown the listener closes at once, idle connections are closed,
//! requests in flight get `shutdown_timeout` to finish, and then whatever is
//! left is dropped: stopping never waits on a client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long a connection told to close (idle, or shutting down) may take to
/// finish the response it is writing before it is dropped.
pub const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// Bounds on what one client can hold; `[api]` in the config.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// How long requests in flight may run on once shutdown begins.
    pub shutdown_timeout: Duration,
}

impl ServerLimits {
    /// What one connection may hold, as `[api]` sets it; `shutdown_timeout`
    /// bounds how long requests in flight run on once the daemon stops.
    pub fn from_settings(
        settings: &crate::config::ApiSettings,
        shutdown_timeout: std::time::Duration,
    ) -> Self {
        ServerLimits {
            header_read_timeout: settings.header_read_timeout(),
            idle_timeout: settings.idle_timeout(),
            max_connections: settings.max_connections.max(1),
            shutdown_timeout,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then closes
/// every connection within `limits.shutdown_timeout`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let mut accept_errors = 0u32;
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                accept_errors = 0;
                accepted
            }
            Err(error) => {
                // Out of file descriptors and the like: back off rather
                // than spin, and try again.
                accept_errors = (accept_errors + 1).min(6);
                tracing::warn!(%error, "accepting an API connection failed");
                tokio::time::sleep(Duration::from_millis(10 << accept_errors)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            serve_connection(stream, remote, app, limits, shutdown).await;
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    // Connections were told to close (graceful for requests in flight);
    // those still open after the bound are dropped with the runtime.
    if tokio::time::timeout(limits.shutdown_timeout, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "API connections still open after the shutdown timeout: dropping them"
        );
    }
    Ok(())
}

/// When the connection last started or finished a request, and how many it
/// has in flight: what the idle timeout looks at.
struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Activity {
    fn touch(&self) {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Instant::now();
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Acquire) == 0).then(|| {
            self.last
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .elapsed()
        })
    }
}

/// Ends a request's share of [`Activity`] however its future ends
/// (completed, or dropped with the connection).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.touch();
        InFlight(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    limits: ServerLimits,
    shutdown: CancellationToken,
) {
    let activity = Arc::new(Activity {
        in_flight: AtomicUsize::new(0),
        last: Mutex::new(Instant::now()),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // The auth layer tells loopback callers apart by this.
            request.extensions_mut().insert(ConnectInfo(remote));
            let in_flight = InFlight::start(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(in_flight);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let check_every =
        (limits.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    // Set once the connection is told to close: it is dropped at this
    // instant if it has not finished by then.
    let mut close_by: Option<tokio::time::Instant> = None;
    loop {
        let deadline = close_by.unwrap_or_else(|| tokio::time::Instant::now() + check_every);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %remote, "API connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if close_by.is_none() => {
                connection.as_mut().graceful_shutdown();
                close_by = Some(tokio::time::Instant::now() + CLOSE_DEADLINE);
            }
            _ = tokio::time::sleep_until(deadline) => {
                if close_by.is_some() {
                    tracing::debug!(%remote, "dropping an API connection that did not close");
                    return;
                }
                if activity.idle_for().is_some_and(|idle| idle >= limits.idle_timeout) {
                    tracing::debug!(%remote, "closing an idle API connection");
                    connection.as_mut().graceful_shutdown();
                    close_by = Some(tokio::time::Instant::now() + CLOSE_DEADLINE);
                }
            }
        }
    }
}
