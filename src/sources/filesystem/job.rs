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
use super::stat::FILE_STAT;
use super::walk::{Walk, WalkedFile, walk, walk_under};
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

/// What the collection holds of a file, from its document's first chunk.
struct StoredFile {
    version: String,
    /// [`FILE_STAT`]: absent on documents stored before stats were.
    stat: Option<String>,
}

impl StoredFile {
    /// Whether `document`, just read, is stored as it is: same content and
    /// same stat.
    fn holds(&self, document: &crate::pipeline::Document) -> bool {
        let stat = document
            .metadata
            .iter()
            .find(|(name, _)| name == FILE_STAT)
            .and_then(|(_, value)| value.as_str());
        self.version == document.version && self.stat.as_deref() == stat
    }
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
        let stored = self.stored_files(prefix.as_deref()).await?;
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
                let stored = stored.get(&file.path);
                state.set_progress(2, 3, format!("{} ({} of {total})", file.path, done + 1));
                self.fetch(&file.path, stored, Some(file))
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

    /// Each stored document (under `prefix`, when given) by its first chunk.
    async fn stored_files(
        &self,
        prefix: Option<&str>,
    ) -> Result<HashMap<String, StoredFile>, JobError> {
        let mut stored = HashMap::new();
        self.context
            .visit_first_chunks(|chunk| {
                let Some(key) = chunk.document_key() else {
                    return;
                };
                if prefix.is_none_or(|prefix| key.starts_with(prefix)) {
                    stored.insert(
                        key.to_string(),
                        StoredFile {
                            version: chunk.version_key().unwrap_or_default().to_string(),
                            stat: chunk.text(FILE_STAT).map(str::to_string),
                        },
                    );
                }
            })
            .await?;
        Ok(stored)
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

    /// Syncs one file; `stored` is what the collection holds of it, when
    /// known (an unchanged file is then not even chunked).
    async fn file(&self, path: &str, stored: Option<&StoredFile>) -> Result<(), JobError> {
        let fetched = self.fetch(path, stored, None).await?;
        self.context.process(fetched).await
    }

    /// Reads one file for the pipeline: excluded by the globs, unchanged
    /// since it was stored (`stored`, when known), gone since the walk, or
    /// the document to convert and chunk.
    ///
    /// A file the walk `listed` with the stat its stored document carries
    /// (and within the size limit) is unchanged without being read
    /// ([`super::stat::FileStat::vouches_for`]). One read
    /// whose content hash is the stored version is unchanged too, unless
    /// its stat is not the stored one: then it goes to the pipeline, which
    /// re-stamps the chunks' metadata without embedding anything, so the
    /// next sync need not read it.
    async fn fetch(
        &self,
        path: &str,
        stored: Option<&StoredFile>,
        listed: Option<&WalkedFile>,
    ) -> Result<Fetched, SourceError> {
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
        if let (Some(stored), Some(listed)) = (stored, listed)
            && listed.size <= limit.0
            && listed.stat.vouches_for(stored.stat.as_deref())
        {
            self.context
                .state
                .update(|stats| stats.unchanged_unread += 1);
            return Ok(Fetched::Kept {
                key: path.to_string(),
                reason: None,
            });
        }
        let (root, relative) = (Arc::clone(&self.root), path.to_string());
        let read = tokio::task::spawn_blocking(move || read_document(&root, &relative, limit))
            .await
            .map_err(|e| SourceError::Permanent(format!("reading {path} failed: {e}")))?;
        match read {
            Ok(Fetched::Document(document))
                if stored.is_some_and(|stored| stored.holds(&document)) =>
            {
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
        let stored = self.stored_files(None).await?;
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
