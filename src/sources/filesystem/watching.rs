//! `auto_sync: "direct"` for directories: each process watches the root of
//! every such source it can see and turns what changed into invocations
//! (`trigger: auto_sync`). A change to a path whose previous job is still
//! pending or running is held and enqueued again until the queue takes it:
//! that job may have read the file before the change, so it must not be
//! the last word. Lost events (the watcher's queue overflowed) become one
//! sync of the whole root.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::root::{Resolved, Root};
use super::settings::FilesystemSourceConfig;
use super::watch::{Batch, Mechanism, Watcher};
use super::{FilesystemSettings, WatchMode};
use super::{PathFilter, path_filter, plan_path};
use crate::model::{AutoSync, CreateJobPayload, Trigger};
use crate::queue::{Queue, QueueError, SourceRecord};
use crate::sources::SourceKind;

/// How often the set of watched sources is re-read.
const REFRESH: Duration = Duration::from_secs(5);
/// How often held changes are offered to the queue again.
const RETRY: Duration = Duration::from_secs(1);

/// Watches every `auto_sync: "direct"` filesystem source until `shutdown`.
pub(super) async fn watch_loop(
    settings: Arc<FilesystemSettings>,
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut watchers: HashMap<Uuid, (CancellationToken, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    loop {
        match watched_sources(queue.as_ref()).await {
            Ok(sources) => {
                let live: Vec<Uuid> = sources.iter().map(|(r, _)| r.id).collect();
                watchers.retain(|id, (stop, _)| {
                    let keep = live.contains(id);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for (record, config) in sources {
                    watchers.entry(record.id).or_insert_with(|| {
                        let stop = shutdown.child_token();
                        let watch = SourceWatch {
                            settings: Arc::clone(&settings),
                            queue: Arc::clone(&queue),
                            wake: Arc::clone(&wake),
                            record,
                            config,
                        };
                        (stop.clone(), tokio::spawn(watch.run(stop)))
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "listing watched sources failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(REFRESH) => {}
        }
    }
    for (_, (_, handle)) in watchers {
        let _ = handle.await;
    }
}

async fn watched_sources(
    queue: &dyn Queue,
) -> Result<Vec<(SourceRecord, FilesystemSourceConfig)>, QueueError> {
    let sources =
        crate::queue::all_sources(queue, Some(super::FilesystemSource::SOURCE_TYPE)).await?;
    Ok(sources
        .into_iter()
        .filter_map(|record| {
            let config = super::super::settings_of::<super::FilesystemSource>(&record.payload)?;
            (config.auto_sync == Some(AutoSync::Direct)).then_some((record, config))
        })
        .collect())
}

struct SourceWatch {
    settings: Arc<FilesystemSettings>,
    queue: Arc<dyn Queue>,
    wake: Arc<Notify>,
    record: SourceRecord,
    config: FilesystemSourceConfig,
}

impl SourceWatch {
    async fn run(self, stop: CancellationToken) {
        let id = self.record.id;
        let debounce = Duration::from_millis(self.settings.watch_debounce_ms);
        let started = Root::open(&self.settings, &self.config.root).and_then(|root| {
            root.serves(&self.settings, &self.record.payload.database_name)?;
            let filter = path_filter(&self.config)?;
            Ok((
                start_watcher(&self.settings, &root, debounce)?,
                Arc::new(root),
                Arc::new(filter),
            ))
        });
        let (mut watcher, root, filter) = match started {
            Ok(started) => started,
            Err(error) => {
                tracing::error!(source_id = %id, %error, "cannot watch the source's root");
                return;
            }
        };
        tracing::info!(
            source_id = %id,
            root = %self.config.root,
            mechanism = ?watcher.mechanism(),
            "auto-sync: watching"
        );
        // Changes the queue did not take yet (`None`: the whole root).
        // A watch starts by reconciling: files written before it was set
        // up — right after the source was created, or while no process
        // watched (the daemon stopped, restarted) — raise no events, so
        // one sync of the whole root catches them up. Unchanged files cost
        // a read and a hash, nothing more. Enqueued after the watch is up,
        // so every change is either seen by that sync or reported after it.
        let mut held: BTreeSet<Option<String>> = BTreeSet::from([None]);
        held = self.offer(held).await;
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                batch = watcher.next_batch() => batch,
                _ = tokio::time::sleep(RETRY), if !held.is_empty() => Some(Batch::Paths(Vec::new())),
            };
            match batch {
                None => {
                    tracing::warn!(source_id = %id, "the watch of the source's root ended");
                    return;
                }
                Some(Batch::Paths(paths)) if !paths.is_empty() => {
                    match wanted(&root, &filter, paths).await {
                        Some(paths) => held.extend(paths.into_iter().map(Some)),
                        // Could not sort them out: sync everything instead.
                        None => {
                            held.insert(None);
                        }
                    }
                }
                Some(Batch::Paths(_)) => {}
                Some(Batch::Rescan { reason }) => {
                    tracing::info!(source_id = %id, %reason, "auto-sync: syncing the whole root");
                    held.insert(None);
                }
            }
            held = self.offer(held).await;
        }
    }

    /// Enqueues each held change; returns those the queue did not take.
    /// (`wanted` already dropped files the globs exclude.)
    async fn offer(&self, held: BTreeSet<Option<String>>) -> BTreeSet<Option<String>> {
        let mut kept = BTreeSet::new();
        let mut enqueued = false;
        for path in held {
            let payload = CreateJobPayload {
                path: path.clone(),
                ..CreateJobPayload::default()
            };
            let job = match plan_path(&self.settings, &self.record, &self.config, &payload) {
                Ok(planned) => {
                    let mut job = planned.into_job(&self.record, payload, Trigger::AutoSync);
                    // Deduplicated against other watches' jobs (every
                    // process watches), not against a caller's invocation:
                    // a caller's sync of the root must not be refused
                    // because the watch's reconciling sync is pending.
                    // The shared concurrency key still runs them one at a
                    // time.
                    job.dedupe_key = format!("watch:{}", job.dedupe_key);
                    job
                }
                Err(error) => {
                    tracing::warn!(source_id = %self.record.id, ?path, %error, "ignoring a change");
                    continue;
                }
            };
            match self.queue.enqueue(job).await {
                Ok(job) => {
                    tracing::info!(source_id = %self.record.id, ?path, job_id = %job.id, "auto-sync invocation");
                    enqueued = true;
                }
                // Its previous job is still pending or running: offer it again.
                Err(QueueError::Duplicate(_)) => {
                    kept.insert(path);
                }
                Err(error) => {
                    tracing::warn!(%error, "enqueueing an auto-sync invocation failed");
                    kept.insert(path);
                }
            }
        }
        if enqueued {
            self.wake.notify_waiters();
        }
        kept
    }
}

/// Starts the watch the way `[filesystem] watch` asks: `auto` uses the
/// kernel's events and falls back to polling when they cannot be set up.
fn start_watcher(
    settings: &FilesystemSettings,
    root: &Root,
    debounce: Duration,
) -> Result<Watcher, String> {
    let poll = Mechanism::Poll(settings.watch_poll_interval());
    match settings.watch {
        WatchMode::Events => Watcher::start_with(root, debounce, Mechanism::Events),
        WatchMode::Poll => Watcher::start_with(root, debounce, poll),
        WatchMode::Auto => {
            Watcher::start_with(root, debounce, Mechanism::Events).or_else(|error| {
                tracing::warn!(%root, %error, "file events unavailable; polling the root instead");
                Watcher::start_with(root, debounce, poll)
            })
        }
    }
}

/// The changed paths worth a job: files the source's globs exclude are
/// dropped (an `npm install` under the root must not become thousands of
/// jobs); directories and paths with nothing there are kept, since they may
/// hold, or have held, documents the globs accept.
async fn wanted(
    root: &Arc<Root>,
    filter: &Arc<PathFilter>,
    paths: Vec<String>,
) -> Option<Vec<String>> {
    let (root, filter) = (Arc::clone(root), Arc::clone(filter));
    tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .filter(|path| {
                filter.accepts(path) || !matches!(root.resolve(path), Ok(Resolved::File(_)))
            })
            .collect()
    })
    .await
    .ok()
}
