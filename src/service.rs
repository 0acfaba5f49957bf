//! systemd integration (`Type=notify`): `READY=1` once the queue is open, the
//! API listens and the workers run; `WATCHDOG=1` pings while the queue
//! answers; `STOPPING=1` when shutdown begins. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::queue::Queue;

fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "notifying systemd failed");
    }
}

/// The service is up.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown has begun (jobs in flight are being released).
pub fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// When systemd asks for a watchdog (`WatchdogSec=`), pings it at half the
/// interval for as long as the queue answers: a daemon whose queue hangs
/// stops pinging and is restarted.
pub fn spawn_watchdog(queue: Arc<dyn Queue>, shutdown: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let interval = (timeout / 2).max(Duration::from_millis(100));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match tokio::time::timeout(interval, queue.ping()).await {
                Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "queue unreachable; not pinging the watchdog")
                }
                Err(_) => tracing::warn!("queue ping timed out; not pinging the watchdog"),
            }
        }
    });
}
