//! `auto_sync: "direct"`: watching a root for changes (the `notify` crate:
//! inotify on Linux, FSEvents on macOS) and handing them over in batches.
//!
//! notify calls us on its own thread. That thread must never block (the
//! kernel's event queue would overflow behind it) and what it hands over
//! must never grow without bound, so events go through a bounded channel
//! with `try_send`; when it is full the event is dropped and a flag is set,
//! and the next batch is a [`Batch::Rescan`]: a full sync of the root
//! converges whatever was lost. The kernel's own overflow and watcher
//! errors become a rescan the same way.
//!
//! Debounce: a batch collects changes until none has come for the debounce
//! time (or for at most ten times that since its first change, so a file
//! written to continuously still gets synced), each path once.
//!
//! What is reported, per path, relative to the root:
//! - a file created, modified, removed, or either side of a rename: its
//!   path; the caller reads it, and a path with nothing there was removed;
//! - a directory that appears (created, or moved in with its files): a
//!   rescan, because files that arrive with a directory, or before its
//!   watch is set up, report no events of their own;
//! - a directory that disappears (removed, moved away): its path, like a
//!   removed file; a directory moved out of the root reports nothing for
//!   its files, so **the caller removes the documents at a missing path
//!   and under `path/`**;
//! - other directory events (metadata), reads, the root's own name, paths
//!   outside the root or that cannot be document keys: dropped.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::{EventKind, ModifyKind};
use notify::{Event, PollWatcher, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;

use super::root::Root;

/// Events held between notify's thread and the batcher. Beyond it events
/// are dropped and the next batch is a rescan; sized for a `git checkout`
/// of a few thousand files within one batch.
pub const CHANNEL_CAPACITY: usize = 4096;
/// Distinct paths in one batch at most; more become a rescan, which is
/// cheaper than thousands of one-file invocations and bounds memory.
pub const MAX_BATCH_PATHS: usize = 10_000;
/// A batch is handed over at the latest this many debounce times after its
/// first change.
pub const MAX_WAIT_FACTOR: u32 = 10;

/// What changed under a root since the last batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Batch {
    /// Relative, `/`-separated paths that changed, sorted, each once.
    /// Read each: a path with nothing there was removed, and it may have
    /// been a directory, so remove the documents at it and under `path/`.
    Paths(Vec<String>),
    /// Changes were lost or cannot be told file by file: sync the whole root.
    Rescan {
        /// Why, for the job's log and stats.
        reason: String,
    },
}

/// How a [`Watcher`] learns of changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// The kernel's events (inotify on Linux).
    Events,
    /// notify's polling watcher: the tree is walked every period and
    /// compared with the previous walk (file metadata, not contents). For
    /// file systems whose changes raise no events (NFS, SMB, some
    /// container mounts), and where events cannot be set up.
    Poll(Duration),
}

/// A running watch of one root. Dropping it stops the watch.
pub struct Watcher {
    /// Kept alive for its thread: dropping it stops watching and closes
    /// the channel.
    _watcher: Box<dyn notify::Watcher + Send>,
    batcher: Batcher,
    mechanism: Mechanism,
}

impl Watcher {
    /// Starts watching `root` recursively, without following symbolic links
    /// (a link to `/` must not put the whole machine under watch).
    ///
    /// Blocking: setting up the watch visits every directory (one inotify
    /// watch each; a polling watcher's first walk), so call it on a
    /// blocking thread for large roots. Fails when the watcher cannot be
    /// set up (e.g. the inotify watch limit, `fs.inotify.max_user_watches`,
    /// is reached).
    pub fn start(root: &Root, debounce: Duration) -> Result<Watcher, String> {
        Self::start_with(root, debounce, Mechanism::Events)
    }

    /// [`Watcher::start`] with the given mechanism.
    pub fn start_with(
        root: &Root,
        debounce: Duration,
        mechanism: Mechanism,
    ) -> Result<Watcher, String> {
        let (sender, signals) = mpsc::channel(CHANNEL_CAPACITY);
        let overflowed = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            root: root.clone(),
            sender,
            overflowed: overflowed.clone(),
        };
        let config = notify::Config::default().with_follow_symlinks(false);
        let failed = |error: notify::Error| format!("watching the root {root}: {error}");
        let mut watcher: Box<dyn notify::Watcher + Send> = match mechanism {
            Mechanism::Events => {
                Box::new(RecommendedWatcher::new(handler, config).map_err(failed)?)
            }
            Mechanism::Poll(period) => Box::new(
                PollWatcher::new(handler, config.with_poll_interval(period)).map_err(failed)?,
            ),
        };
        watcher
            .watch(root.path(), RecursiveMode::Recursive)
            .map_err(failed)?;
        Ok(Watcher {
            _watcher: watcher,
            batcher: Batcher {
                signals,
                overflowed,
                debounce,
            },
            mechanism,
        })
    }

    /// How this watch learns of changes.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The next batch of changes, once they have settled; `None` once the
    /// watcher has stopped (its thread ended).
    pub async fn next_batch(&mut self) -> Option<Batch> {
        self.batcher.next_batch().await
    }
}

/// What notify's thread hands over.
#[derive(Debug)]
enum Signal {
    Changed(String),
    Rescan(String),
}

/// Runs on notify's thread: turns events into signals without blocking.
struct Handler {
    root: Root,
    sender: mpsc::Sender<Signal>,
    overflowed: Arc<AtomicBool>,
}

impl notify::EventHandler for Handler {
    fn handle_event(&mut self, event: notify::Result<Event>) {
        match event {
            Ok(event) => {
                for signal in classify(&self.root, &event) {
                    self.send(signal);
                }
            }
            Err(error) => self.send(Signal::Rescan(format!(
                "the watcher reported an error, so changes may have been missed: {error}"
            ))),
        }
    }
}

impl Handler {
    fn send(&self, signal: Signal) {
        match self.sender.try_send(signal) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.overflowed.store(true, Ordering::Release),
            // The watch is being dropped.
            Err(TrySendError::Closed(_)) => {}
        }
    }
}

/// The signals one event gives; see the module documentation for the rules.
fn classify(root: &Root, event: &Event) -> Vec<Signal> {
    if event.need_rescan() {
        return vec![Signal::Rescan(
            "the kernel's event queue overflowed, so changes were missed".to_string(),
        )];
    }
    if matches!(event.kind, EventKind::Access(_)) {
        return Vec::new();
    }
    let mut signals = Vec::new();
    for path in &event.paths {
        if path == root.path() {
            if matches!(
                event.kind,
                EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
            ) {
                signals.push(Signal::Rescan(format!(
                    "the root {root} itself was moved or removed"
                )));
            }
            continue;
        }
        let Some(relative) = root.relative(path) else {
            continue;
        };
        match std::fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_dir() => {
                let appeared = matches!(
                    event.kind,
                    EventKind::Create(_)
                        | EventKind::Modify(ModifyKind::Name(_))
                        | EventKind::Any
                        | EventKind::Other
                );
                if appeared {
                    signals.push(Signal::Rescan(format!(
                        "directory {relative:?} appeared; files that came with it report no \
                         events of their own"
                    )));
                }
            }
            _ => signals.push(Signal::Changed(relative)),
        }
    }
    signals
}

/// The async side: gathers signals into debounced batches.
struct Batcher {
    signals: mpsc::Receiver<Signal>,
    overflowed: Arc<AtomicBool>,
    debounce: Duration,
}

impl Batcher {
    async fn next_batch(&mut self) -> Option<Batch> {
        let first = self.signals.recv().await?;
        let mut pending = Pending::default();
        pending.add(first);
        let latest = Instant::now() + self.debounce * MAX_WAIT_FACTOR;
        loop {
            let now = Instant::now();
            if now >= latest {
                break;
            }
            let quiet_until = (now + self.debounce).min(latest);
            match tokio::time::timeout_at(quiet_until, self.signals.recv()).await {
                Ok(Some(signal)) => pending.add(signal),
                Ok(None) | Err(_) => break,
            }
        }
        // Read after draining: an overflow during this batch means events
        // between the ones received were lost.
        if self.overflowed.swap(false, Ordering::AcqRel) {
            pending.rescan(format!(
                "more than {CHANNEL_CAPACITY} changes were waiting, so some were dropped"
            ));
        }
        Some(pending.into_batch())
    }
}

/// One batch being gathered; memory bounded by [`MAX_BATCH_PATHS`].
#[derive(Default)]
struct Pending {
    paths: BTreeSet<String>,
    /// The first reason a rescan is needed; once set, paths are not kept.
    rescan: Option<String>,
}

impl Pending {
    fn add(&mut self, signal: Signal) {
        match signal {
            Signal::Rescan(reason) => self.rescan(reason),
            Signal::Changed(_) if self.rescan.is_some() => {}
            Signal::Changed(path) => {
                self.paths.insert(path);
                if self.paths.len() > MAX_BATCH_PATHS {
                    self.rescan(format!("more than {MAX_BATCH_PATHS} paths changed at once"));
                }
            }
        }
    }

    fn rescan(&mut self, reason: String) {
        self.rescan.get_or_insert(reason);
        self.paths = BTreeSet::new();
    }

    fn into_batch(self) -> Batch {
        match self.rescan {
            Some(reason) => Batch::Rescan { reason },
            None => Batch::Paths(self.paths.into_iter().collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::root::tests::open;
    use super::*;
    use notify::EventHandler as _;
    use notify::event::{CreateKind, Flag, RemoveKind};

    /// Batches until `expected` paths have all been reported (or a rescan
    /// comes, if `rescan_ok`); a bounded wait, not a timing assertion.
    async fn wait_for(watcher: &mut Watcher, expected: &[&str]) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !expected.iter().all(|path| seen.contains(*path)) {
            let batch = tokio::time::timeout_at(deadline, watcher.next_batch())
                .await
                .unwrap_or_else(|_| panic!("waited for {expected:?}; saw {seen:?}"))
                .expect("the watcher is running");
            match batch {
                Batch::Paths(paths) => seen.extend(paths),
                Batch::Rescan { reason } => panic!("unexpected rescan: {reason}"),
            }
        }
        seen
    }

    async fn wait_for_rescan(watcher: &mut Watcher) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let batch = tokio::time::timeout_at(deadline, watcher.next_batch())
                .await
                .expect("a rescan within 20 s")
                .expect("the watcher is running");
            if let Batch::Rescan { reason } = batch {
                return reason;
            }
        }
    }

    #[tokio::test]
    async fn sees_files_created_modified_renamed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("docs")).unwrap();
        let root = open(dir.path());
        let mut watcher = Watcher::start(&root, Duration::from_millis(50)).unwrap();

        std::fs::write(dir.path().join("docs/a.md"), "one").unwrap();
        wait_for(&mut watcher, &["docs/a.md"]).await;

        std::fs::write(dir.path().join("docs/a.md"), "two").unwrap();
        wait_for(&mut watcher, &["docs/a.md"]).await;

        std::fs::rename(dir.path().join("docs/a.md"), dir.path().join("b.md")).unwrap();
        let seen = wait_for(&mut watcher, &["docs/a.md", "b.md"]).await;
        assert!(
            seen.iter().all(|p| p == "docs/a.md" || p == "b.md"),
            "{seen:?}"
        );

        std::fs::remove_file(dir.path().join("b.md")).unwrap();
        wait_for(&mut watcher, &["b.md"]).await;

        // A directory moved out reports only its own name.
        std::fs::write(dir.path().join("docs/c.md"), "c").unwrap();
        wait_for(&mut watcher, &["docs/c.md"]).await;
        let away = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
        std::fs::rename(dir.path().join("docs"), away.path().join("docs")).unwrap();
        wait_for(&mut watcher, &["docs"]).await;
    }

    #[tokio::test]
    async fn a_directory_moved_in_asks_for_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(dir.path());
        let staging = tempfile::tempdir_in(dir.path().parent().unwrap()).unwrap();
        std::fs::create_dir(staging.path().join("tree")).unwrap();
        std::fs::write(staging.path().join("tree/a.md"), "a").unwrap();
        let mut watcher = Watcher::start(&root, Duration::from_millis(50)).unwrap();
        std::fs::rename(staging.path().join("tree"), dir.path().join("tree")).unwrap();
        let reason = wait_for_rescan(&mut watcher).await;
        assert!(reason.contains("\"tree\""), "{reason}");
    }

    /// A handler and batcher joined by a channel of `capacity`, as
    /// [`Watcher::start`] joins them, fed with made-up events.
    fn pair(root: &Root, capacity: usize) -> (Handler, Batcher) {
        let (sender, signals) = mpsc::channel(capacity);
        let overflowed = Arc::new(AtomicBool::new(false));
        let handler = Handler {
            root: root.clone(),
            sender,
            overflowed: overflowed.clone(),
        };
        let batcher = Batcher {
            signals,
            overflowed,
            debounce: Duration::from_millis(10),
        };
        (handler, batcher)
    }

    fn created(root: &Root, relative: &str) -> notify::Result<Event> {
        Ok(Event::new(EventKind::Create(CreateKind::File)).add_path(root.path().join(relative)))
    }

    #[tokio::test]
    async fn changes_are_deduplicated_and_outside_paths_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(dir.path());
        let (mut handler, mut batcher) = pair(&root, 64);
        for path in ["b.md", "a.md", "b.md", "sub/c.md", "a.md"] {
            handler.handle_event(created(&root, path));
        }
        handler.handle_event(Ok(
            Event::new(EventKind::Create(CreateKind::File)).add_path("/etc/passwd".into())
        ));
        handler.handle_event(Ok(Event::new(EventKind::Access(
            notify::event::AccessKind::Any,
        ))
        .add_path(root.path().join("read.md"))));
        handler
            .handle_event(Ok(Event::new(EventKind::Remove(RemoveKind::File))
                .add_path(root.path().join("gone.md"))));
        assert_eq!(
            batcher.next_batch().await,
            Some(Batch::Paths(vec![
                "a.md".to_string(),
                "b.md".to_string(),
                "gone.md".to_string(),
                "sub/c.md".to_string(),
            ]))
        );
        drop(handler);
        assert_eq!(batcher.next_batch().await, None, "the watcher stopped");
    }

    #[tokio::test]
    async fn a_full_channel_never_blocks_and_becomes_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(dir.path());
        let (mut handler, mut batcher) = pair(&root, 2);
        for i in 0..100 {
            handler.handle_event(created(&root, &format!("f{i}.md")));
        }
        let batch = batcher.next_batch().await.unwrap();
        assert!(
            matches!(&batch, Batch::Rescan { reason } if reason.contains("dropped")),
            "{batch:?}"
        );
        handler.handle_event(created(&root, "after.md"));
        assert_eq!(
            batcher.next_batch().await,
            Some(Batch::Paths(vec!["after.md".to_string()])),
            "back to paths once drained"
        );
    }

    #[tokio::test]
    async fn kernel_overflow_and_watcher_errors_become_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let root = open(dir.path());
        let (mut handler, mut batcher) = pair(&root, 64);
        handler.handle_event(created(&root, "a.md"));
        handler.handle_event(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
        let batch = batcher.next_batch().await.unwrap();
        assert!(
            matches!(&batch, Batch::Rescan { reason } if reason.contains("overflowed")),
            "{batch:?}"
        );
        handler.handle_event(Err(notify::Error::generic("inotify broke")));
        let batch = batcher.next_batch().await.unwrap();
        assert!(
            matches!(&batch, Batch::Rescan { reason } if reason.contains("inotify broke")),
            "{batch:?}"
        );
    }
}
