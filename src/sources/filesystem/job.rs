//! A filesystem job: the whole root, one directory or one file. New and
//! changed files are written, unchanged ones (same content hash as stored)
//! cost nothing, and documents whose files are gone are removed — a rename
//! is both. Removals happen only after the walk finished.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;

use super::FilesystemSettings;
use super::read::read_document;
use super::root::{Resolved, Root};
use super::settings::FilesystemSourceConfig;
use super::walk::{Walk, walk, walk_under};
use super::{PathFilter, open_root, path_filter};
use crate::model::Trigger;
use crate::pipeline::{
    DEFAULT_MAX_REMOVAL_FRACTION, DocumentContext, Fetched, JobError, JobRun, RemovalPolicy,
    SourceError,
};
use crate::sources::SourceKind;

pub(super) async fn run(
    settings: &FilesystemSettings,
    job: &JobRun<'_>,
    config: &FilesystemSourceConfig,
) -> Result<(), JobError> {
    let root = Arc::new(open_root(settings, config).map_err(JobError::Permanent)?);
    // Re-checked at every run: the operator may have re-bound the directory.
    root.serves(settings, &job.claimed.job.metadata.database_name)
        .map_err(|e| JobError::Permanent(format!("filesystem.root: {e}")))?;
    let filter = Arc::new(path_filter(config).map_err(JobError::Permanent)?);
    let collection = job.open_collection().await?;
    let context = job.documents(&collection, super::FilesystemSource::SOURCE_TYPE);
    let removal = job.removal_policy(DEFAULT_MAX_REMOVAL_FRACTION, "max_removal_fraction");
    let sync = Sync {
        removal: &removal,
        root,
        filter,
        settings,
        context: &context,
    };
    match job.claimed.payload.path.as_deref() {
        None => sync.tree(None).await?,
        Some(path) => match sync.root.resolve(path) {
            Ok(Resolved::Directory(_)) => sync.tree(Some(path)).await?,
            Ok(Resolved::Missing) => {
                let removed = sync.remove_under(path).await?;
                if job.claimed.job.trigger != Trigger::AutoSync {
                    return Err(JobError::Permanent(format!(
                        "`{path}` does not exist under {}; removed the {removed} documents it \
                         had in collection {}",
                        config.root, collection.name
                    )));
                }
            }
            Ok(Resolved::File(_) | Resolved::Special(_)) => sync.file(path, None).await?,
            Err(reason) => return Err(JobError::Permanent(format!("path `{path}`: {reason}"))),
        },
    }
    job.finish(&collection).await
}

struct Sync<'a> {
    removal: &'a RemovalPolicy,
    root: Arc<Root>,
    filter: Arc<PathFilter>,
    settings: &'a FilesystemSettings,
    context: &'a DocumentContext<'a>,
}

impl Sync<'_> {
    /// Syncs every file of the root (or of its directory `under`), then
    /// removes the stored documents there whose files are gone.
    async fn tree(&self, under: Option<&str>) -> Result<(), JobError> {
        let state = self.context.state;
        state.set_progress(
            1,
            3,
            format!("listing {}", under.unwrap_or(self.root.given())),
        );
        let walked = self.walk(under).await?;
        let prefix = under.map(|dir| format!("{}/", dir.trim_end_matches('/')));
        let stored: HashMap<String, String> = self
            .context
            .stored_versions()
            .await?
            .into_iter()
            .filter(|(key, _)| prefix.as_ref().is_none_or(|p| key.starts_with(p.as_str())))
            .collect();
        if walked.files.is_empty() && walked.skipped.is_empty() && !stored.is_empty() {
            // An unmounted volume looks like an empty directory.
            return Err(JobError::Permanent(format!(
                "{} holds no files now; refusing to remove all {} stored documents (is the \
                 volume mounted?). Delete the collection to start over",
                under.unwrap_or(self.root.given()),
                stored.len()
            )));
        }
        let total = walked.files.len();
        // The pipeline's loop, as every kind's: several files in flight
        // (`pipeline::DOCUMENTS_IN_FLIGHT`), the next one read (on a blocking thread)
        // when a slot frees, so no more documents are held than that. The
        // first error stops the rest.
        // (By index: a closure over `&WalkedFile` items would make the
        // future generic over that borrow, which a `Send` job cannot be.)
        let files = futures::stream::iter(0..total)
            .then(|done| {
                let file = &walked.files[done];
                let stored = stored.get(&file.path).map(String::as_str);
                state.set_progress(2, 3, format!("{} ({} of {total})", file.path, done + 1));
                self.fetch(&file.path, stored)
            })
            .boxed();
        self.context.process_all(files, &|_| false).await?;
        for skipped in &walked.skipped {
            self.context
                .skip(&skipped.path, skipped.reason.clone())
                .await?;
        }
        let seen: std::collections::HashSet<&str> = walked
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(walked.skipped.iter().map(|s| s.path.as_str()))
            .collect();
        state.set_progress(3, 3, "removing documents whose files are gone".into());
        let gone: Vec<String> = stored
            .keys()
            .filter(|key| !seen.contains(key.as_str()))
            .cloned()
            .collect();
        self.context
            .remove_unseen(&gone, stored.len(), seen.len(), self.removal, "files")
            .await?;
        Ok(())
    }

    async fn walk(&self, under: Option<&str>) -> Result<Walk, JobError> {
        let (root, filter, max_files) = (
            Arc::clone(&self.root),
            Arc::clone(&self.filter),
            self.settings.max_files,
        );
        let under = under.map(str::to_string);
        tokio::task::spawn_blocking(move || match under {
            None => walk(&root, &filter, max_files),
            Some(dir) => walk_under(&root, &dir, &filter, max_files),
        })
        .await
        .map_err(|e| JobError::Permanent(format!("walking the root failed: {e}")))?
        .map_err(JobError::Permanent)
    }

    /// Syncs one file; `stored` is the version the collection holds, when
    /// known (an unchanged file is then not even chunked).
    async fn file(&self, path: &str, stored: Option<&str>) -> Result<(), JobError> {
        let fetched = self.fetch(path, stored).await?;
        self.context.process(fetched).await
    }

    /// Reads one file for the pipeline: excluded by the globs, unchanged
    /// since it was stored (`stored`, when known), gone since the walk, or
    /// the document to convert and chunk.
    async fn fetch(&self, path: &str, stored: Option<&str>) -> Result<Fetched, SourceError> {
        if !self.filter.accepts(path) {
            return Ok(Fetched::Skipped {
                key: path.to_string(),
                reason: "excluded by the source's globs".into(),
            });
        }
        let limit = crate::config::file_limit(
            path,
            self.settings.max_file_bytes,
            self.settings.max_document_bytes,
        );
        let (root, relative) = (Arc::clone(&self.root), path.to_string());
        let read = tokio::task::spawn_blocking(move || read_document(&root, &relative, limit))
            .await
            .map_err(|e| SourceError::Permanent(format!("reading {path} failed: {e}")))?;
        match read {
            Ok(Fetched::Document(document)) if stored == Some(document.version.as_str()) => {
                Ok(Fetched::Kept {
                    key: document.key,
                    reason: None,
                })
            }
            Ok(fetched) => Ok(fetched),
            // Gone between the walk and the read: so are its chunks.
            Err(SourceError::NotFound(reason)) => Ok(Fetched::Gone {
                key: path.to_string(),
                reason,
            }),
            Err(error) => Err(error),
        }
    }

    /// Removes the document `path` and every stored document under
    /// `path/` (a removed directory); how many.
    async fn remove_under(&self, path: &str) -> Result<usize, JobError> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        let stored = self.context.stored_versions().await?;
        let mut removed = 0;
        for key in stored
            .keys()
            .filter(|key| key.as_str() == path || key.starts_with(&prefix))
        {
            self.context.write(key, Vec::new()).await?;
            removed += 1;
        }
        if removed == 0 {
            // Not stored as a first chunk (or never synced): still make sure.
            self.context.write(path, Vec::new()).await?;
        }
        Ok(removed)
    }
}
