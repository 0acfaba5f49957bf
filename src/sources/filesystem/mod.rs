//! Local directories (extension): a volume shared with a sidecar, or a
//! backfill from a laptop. One job syncs the whole root, one file or one
//! directory of it into one collection; `auto_sync: "direct"` watches the
//! root and enqueues what changed.
//!
//! Everything the daemon reads must lie inside the root, and every root
//! inside `[filesystem] allowed_roots` (empty: the source type is off):
//! [`root`] resolves each path against the canonical root, so `..`,
//! absolute paths and symbolic links leading out are refused with a reason.

mod job;
pub mod read;
pub mod root;
pub mod section;
pub mod settings;
pub mod stat;
pub mod walk;
pub mod watch;
mod watching;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use self::root::{Root, check_relative};

/// Opens a source's root; the error names the setting for the caller.
fn open_root(
    settings: &FilesystemSettings,
    config: &FilesystemSourceConfig,
) -> Result<Root, String> {
    Root::open(settings, &config.root).map_err(|e| format!("filesystem.root: {e}"))
}
use super::globs::PathFilter;
use super::{DomainError, RunTarget};
use super::{
    Flag, InvocationField, Planned, Reconcile, SourceKind, WholeSource, collection_concurrency_key,
    collection_of,
};
use crate::config::Config;
use crate::model::{AutoSync, CreateJobPayload, SourceType};
use crate::pipeline::{JobError, JobRun};
use crate::queue::{Queue, SourceRecord};
use crate::sources::names::validate_chroma_name;
pub use section::{AllowedRoot, FilesystemSettings, WatchMode};
pub use settings::{FilesystemJobMetadata, FilesystemSourceConfig};

pub struct FilesystemSource {
    settings: Arc<FilesystemSettings>,
}

impl FilesystemSource {
    pub fn new(settings: FilesystemSettings) -> Self {
        FilesystemSource {
            settings: Arc::new(settings),
        }
    }
}

/// The path filter a filesystem source's globs describe.
pub fn path_filter(config: &FilesystemSourceConfig) -> Result<PathFilter, String> {
    PathFilter::new(
        config.include_globs.as_deref(),
        config.exclude_globs.as_deref(),
    )
}

impl SourceKind for FilesystemSource {
    type Config = FilesystemSourceConfig;
    type JobMetadata = FilesystemJobMetadata;
    type Settings = FilesystemSettings;

    const SOURCE_TYPE: SourceType = SourceType::named("filesystem");
    const TITLE: &'static str = "Local directory";
    const DESCRIPTION: &'static str = "A directory on the daemon's host, inside one of its \
        `[filesystem] allowed_roots`: an invocation syncs the whole root, or one file or \
        directory of it, into one collection. With auto-sync the root is watched.";
    const INVOCATION_FIELDS: &'static [InvocationField] = &[
        InvocationField::optional("path")
            .recorded_as("path")
            .flags(&[Flag::text(
                "path",
                "Filesystem: the file or directory (relative to the root) to sync; default: \
                 the whole root.",
            )]),
        InvocationField::optional("target_collection_name"),
    ];
    const CALLED: &'static str = "filesystem";
    const FIELD_DOC: Option<&'static str> = Some("Extension: a directory on the daemon's host.");

    fn build(_: &Config, settings: FilesystemSettings) -> Result<Self, String> {
        Ok(FilesystemSource::new(settings))
    }

    /// Watches the root of every `auto_sync: "direct"` filesystem source
    /// (each watch reconciles its root when it starts, by itself).
    fn start_auto_sync(
        &self,
        queue: &Arc<dyn Queue>,
        wake: &Arc<Notify>,
        shutdown: &CancellationToken,
        _reconcile: Arc<dyn Reconcile>,
    ) {
        if self.settings.allowed_roots.is_empty() {
            return; // the source type is off: no source can name a root
        }
        tokio::spawn(watching::watch_loop(
            Arc::clone(&self.settings),
            Arc::clone(queue),
            Arc::clone(wake),
            shutdown.clone(),
        ));
    }

    fn defaults(&self) -> serde_json::Map<String, serde_json::Value> {
        [("auto_sync".to_string(), serde_json::json!(AutoSync::None))]
            .into_iter()
            .collect()
    }

    fn validate(&self, config: &FilesystemSourceConfig) -> Result<(), DomainError> {
        open_root(&self.settings, config).map_err(DomainError::Invalid)?;
        validate_chroma_name("filesystem.collection_name", &config.collection_name)?;
        path_filter(config).map_err(|e| DomainError::invalid(format!("filesystem: {e}")))?;
        if config.auto_sync == Some(AutoSync::Metadata) {
            return Err(DomainError::invalid(
                "filesystem.auto_sync `metadata` is not supported; use `direct` (watch the root) \
                 or `none`",
            ));
        }
        Ok(())
    }

    /// The root must lie inside an allowed root bound to the source's
    /// database (403 otherwise), as credentials are bound to databases.
    async fn authorize(
        &self,
        database: &str,
        config: &FilesystemSourceConfig,
    ) -> Result<(), DomainError> {
        let root = open_root(&self.settings, config).map_err(DomainError::Invalid)?;
        root.serves(&self.settings, database)
            .map_err(|e| DomainError::Forbidden(format!("filesystem.root: {e}")))
    }

    fn default_collection(config: &FilesystemSourceConfig) -> Option<&str> {
        Some(&config.collection_name)
    }

    fn plan(
        &self,
        record: &SourceRecord,
        config: &FilesystemSourceConfig,
        payload: &CreateJobPayload,
    ) -> Result<Planned, DomainError> {
        plan_path(&self.settings, record, config, payload)
    }

    async fn whole_source(
        &self,
        _: &SourceRecord,
        _: &FilesystemSourceConfig,
        target: RunTarget,
    ) -> Result<WholeSource, DomainError> {
        Ok(vec![CreateJobPayload {
            target_collection_name: target.collection,
            ..CreateJobPayload::default()
        }]
        .into())
    }

    async fn run_job(
        &self,
        run: &JobRun<'_>,
        config: &FilesystemSourceConfig,
    ) -> Result<(), JobError> {
        job::run(&self.settings, run, config).await
    }
}

/// An invocation of a filesystem source: the whole root, or the file or
/// directory `path` names (refused if it would lead out of the root).
fn plan_path(
    settings: &FilesystemSettings,
    record: &SourceRecord,
    config: &FilesystemSourceConfig,
    payload: &CreateJobPayload,
) -> Result<Planned, DomainError> {
    let collection = collection_of(payload, "filesystem", Some(&config.collection_name))?;
    if let Some(path) = &payload.path {
        // Lexical checks (length, `..`, absolute) first: no IO for a bad path.
        check_relative(path).map_err(|e| DomainError::invalid(format!("path: {e}")))?;
        let root = open_root(settings, config).map_err(DomainError::Invalid)?;
        root.resolve(path)
            .map_err(|e| DomainError::invalid(format!("path `{path}`: {e}")))?;
    }
    let metadata = FilesystemJobMetadata {
        path: payload.path.clone(),
    };
    let concurrency_key = collection_concurrency_key(record, &collection);
    Planned::of::<FilesystemSource>(&metadata, collection, concurrency_key)
}
