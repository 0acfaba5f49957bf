//! A GitHub job: resolve the ref to one commit, sync either everything (full)
//! or only what changed since the commit the collection already holds
//! (incremental), then re-stamp unchanged chunks with the new commit.
//!
//! Both paths end with the same collection: every chunk of the source names
//! the synced commit, files that no longer exist (or no longer match the
//! globs) have no chunks, and unchanged files keep their chunks and
//! embeddings untouched except for the commit fields of their metadata.
//!
//! Which commit the collection holds is read from the job history: the
//! newest completed job of this source and collection, unless a later job
//! may have written part of a sync and stopped (failed, cancelled or being
//! retried). It is then confirmed against the collection itself, so a
//! collection deleted or emptied behind our back gets a full sync.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::future::BoxFuture;

use super::GithubSource;
use super::client::{
    DocumentLabels, GitHubRepo, PathFilter, TreeEntry, path_filter, skip_reason_for,
};
use super::settings::GithubSourceConfig;
use crate::model::{GitRefIdentifier, JobStatus};
use crate::pipeline::{
    DEFAULT_MAX_REMOVAL_FRACTION, DocumentContext, Fetched, JobError, JobRun, RemovalPolicy,
    Services, SourceError,
};
use crate::queue::{ClaimedJob, JobFilter};
use crate::sources::SourceKind;

/// Jobs of the source looked at to find the collection's current commit.
const HISTORY: u32 = 200;

pub(super) async fn run(
    source: &GithubSource,
    job: &JobRun<'_>,
    github: &GithubSourceConfig,
) -> Result<(), JobError> {
    let (services, claimed, state, cancel) = (job.services, job.claimed, job.state, job.cancel);
    let git_ref = claimed
        .payload
        .ref_identifier
        .clone()
        .ok_or_else(|| JobError::Permanent("invocation has no ref_identifier".into()))?;
    let filter = Arc::new(path_filter(github).map_err(JobError::Permanent)?);
    let repo = source
        .clients
        .repo(&claimed.job.metadata.database_name, github, cancel.clone())
        .await?;
    let label = match &git_ref {
        GitRefIdentifier::Branch(branch) => branch.clone(),
        GitRefIdentifier::Sha(sha) => sha.clone(),
    };
    state.set_progress(1, 4, format!("resolving `{label}` of {}", repo.full_name()));
    let sha = repo.resolve(&git_ref).await?;
    state.update(|stats| stats.commit_sha = Some(sha.clone()));
    tracing::info!(repository = %repo.full_name(), git_ref = %label, commit = %sha, "resolved");

    let collection = job.open_collection().await?;
    let labels = DocumentLabels {
        repository: repo.full_name(),
        git_ref: label,
        commit_sha: sha.clone(),
    };
    let context = job.documents(&collection, super::GithubSource::SOURCE_TYPE);
    let removal = job.removal_policy(DEFAULT_MAX_REMOVAL_FRACTION, "max_removal_fraction");
    let sync = Sync {
        settings: source.clients.settings(),
        removal: &removal,
        context: &context,
        repo: &repo,
        labels: &labels,
        filter: &filter,
    };

    // A retry (or a job released at shutdown and claimed again) may have
    // written part of a sync towards another commit: only a full sync is safe.
    let retried = claimed.attempt > 1 || claimed.job.stats.commit_sha.is_some();
    let base = if retried {
        None
    } else {
        previous_commit(services, claimed, &context).await?
    };
    let diff = match &base {
        Some(base) => sync.diff(base).await?,
        None => None,
    };
    match diff {
        Some(diff) => {
            state.update(|stats| {
                stats.sync_mode = Some(crate::model::SyncMode::Incremental);
                stats.base_commit_sha = base.clone();
            });
            sync.incremental(diff).await?;
        }
        None => {
            state.update(|stats| stats.sync_mode = Some(crate::model::SyncMode::Full));
            sync.full().await?;
        }
    }
    state.set_progress(4, 4, "re-stamping unchanged chunks".into());
    sync.restamp().await?;
    job.finish(&collection).await
}

/// The commit the collection holds for this source, when it can be trusted.
async fn previous_commit(
    services: &Services,
    claimed: &ClaimedJob,
    context: &DocumentContext<'_>,
) -> Result<Option<String>, JobError> {
    let jobs = services
        .queue
        .list_jobs(&JobFilter {
            source_id: claimed.job.source_id,
            limit: HISTORY,
            ..JobFilter::default()
        })
        .await
        .map_err(|e| JobError::Transient(format!("reading the job history: {e}")))?;
    let target = &claimed.job.metadata;
    let mut earlier: Vec<_> = jobs
        .iter()
        .filter(|job| {
            job.id != claimed.job.id
                && job.started_at.is_some()
                && job.metadata.database_name == target.database_name
                && job.metadata.collection_name == target.collection_name
        })
        .collect();
    earlier.sort_by_key(|job| Reverse(job.started_at));
    let mut base = None;
    for job in earlier {
        match &job.status {
            JobStatus::Complete { .. } => {
                base = job.stats.commit_sha.clone();
                break;
            }
            // Never got past resolving its ref: it wrote nothing.
            JobStatus::Failed { .. } | JobStatus::Cancelled
                if job.attempt <= 1 && job.stats.commit_sha.is_none() => {}
            // May have written part of another commit: only a full sync is safe.
            _ => {
                tracing::info!(job = %job.id, "an earlier sync did not finish; syncing in full");
                return Ok(None);
            }
        }
    }
    let Some(base) = base else {
        return Ok(None);
    };
    Ok(context.holds_version(&base).await?.then_some(base))
}

/// What changed between the collection's commit and the new one.
#[derive(Debug, Default)]
struct Diff {
    changed: Vec<TreeEntry>,
    removed: Vec<String>,
    /// Files the globs accept in the old and the new tree.
    before: usize,
    after: usize,
}

struct Sync<'a> {
    settings: &'a super::GitHubSettings,
    removal: &'a RemovalPolicy,
    context: &'a DocumentContext<'a>,
    repo: &'a GitHubRepo,
    labels: &'a DocumentLabels,
    filter: &'a Arc<PathFilter>,
}

impl Sync<'_> {
    /// Compares the two commits' trees, or `None` when that is impossible
    /// (base commit gone after a force-push, listing truncated).
    async fn diff(&self, base: &str) -> Result<Option<Diff>, JobError> {
        let head = &self.labels.commit_sha;
        if base == head {
            return Ok(Some(Diff::default()));
        }
        self.context
            .state
            .set_progress(2, 4, format!("comparing {base} with {head}"));
        let listed = |sha: &str| {
            let sha = sha.to_string();
            async move {
                match self.repo.tree(&sha).await {
                    Ok(tree) => Ok(tree),
                    Err(SourceError::NotFound(message)) => {
                        tracing::info!(%message, "base commit unavailable; syncing in full");
                        Ok(None)
                    }
                    Err(error) => Err(JobError::from(error)),
                }
            }
        };
        let (Some(old), Some(new)) = (listed(base).await?, listed(head).await?) else {
            return Ok(None);
        };
        let old: HashMap<String, (String, String)> = old
            .into_iter()
            .filter(|entry| self.filter.accepts(&entry.path))
            .map(|entry| (entry.path, (entry.sha, entry.mode)))
            .collect();
        let mut diff = Diff::default();
        let mut present = HashSet::new();
        for entry in new {
            if !self.filter.accepts(&entry.path) {
                continue;
            }
            present.insert(entry.path.clone());
            let unchanged = old
                .get(&entry.path)
                .is_some_and(|(sha, mode)| *sha == entry.sha && *mode == entry.mode);
            if !unchanged {
                diff.changed.push(entry);
            }
        }
        diff.before = old.len();
        diff.after = present.len();
        diff.removed = old
            .into_keys()
            .filter(|path| !present.contains(path))
            .collect();
        diff.removed.sort();
        tracing::info!(
            changed = diff.changed.len(),
            removed = diff.removed.len(),
            "incremental sync"
        );
        Ok(Some(diff))
    }

    async fn incremental(&self, diff: Diff) -> Result<(), JobError> {
        self.context
            .state
            .set_progress(3, 4, format!("removing {} files", diff.removed.len()));
        self.context
            .remove_unseen(
                &diff.removed,
                diff.before,
                diff.after,
                self.removal,
                "files",
            )
            .await?;
        if diff.changed.len() > self.repo_settings().max_blob_fetches {
            let only: HashSet<String> = diff.changed.iter().map(|e| e.path.clone()).collect();
            let seen = self.stream_archive(Some(Arc::new(only))).await?;
            let missing = diff
                .changed
                .into_iter()
                .filter(|entry| !seen.contains(&entry.path))
                .collect();
            return self.fetch_blobs(missing).await;
        }
        self.fetch_blobs(diff.changed).await
    }

    /// Syncs files one blob at a time, the pipeline keeping several in
    /// flight. Also repairs what an archive left out (`export-ignore`
    /// attributes apply to archives, not to trees): the tree is what a sync
    /// mirrors, in both modes.
    async fn fetch_blobs(&self, entries: Vec<TreeEntry>) -> Result<(), JobError> {
        let total = entries.len();
        let blobs = futures::stream::iter(entries.into_iter().enumerate())
            .then(move |(done, entry)| self.fetch_blob(entry, done, total))
            .boxed();
        self.context
            .process_all(blobs, &|_| false)
            .await
            .map(|_| ())
    }

    /// One tree entry as an item: skipped with the reason (a link, binary,
    /// over a size limit) or its blob fetched. (A method returning a boxed
    /// future: an `async` block borrowing `self` inside the stream's
    /// closure would make the job's future fail its `Send` check.)
    fn fetch_blob(
        &self,
        entry: TreeEntry,
        done: usize,
        total: usize,
    ) -> BoxFuture<'_, Result<Fetched, SourceError>> {
        Box::pin(async move {
            let settings = self.repo_settings();
            let reason = skip_reason_for(
                &entry.path,
                entry.is_symlink(),
                entry.size.unwrap_or(0),
                settings.max_file_bytes,
                settings.max_document_bytes,
            );
            if let Some(reason) = reason {
                return Ok(Fetched::Skipped {
                    key: entry.path,
                    reason,
                });
            }
            self.context.state.set_progress(
                3,
                4,
                format!("fetching {} ({} of {total})", entry.path, done + 1),
            );
            let bytes = self.repo.blob(&entry.sha, &entry.path).await?;
            Ok(Fetched::Document(self.labels.document(entry.path, bytes)))
        })
    }

    /// Every file of the commit from its archive; then the documents the
    /// collection holds for this source that the commit no longer has go.
    async fn full(&self) -> Result<(), JobError> {
        let mut seen = self.stream_archive(None).await?;
        if let Some(tree) = self.repo.tree(&self.labels.commit_sha).await? {
            let missing: Vec<TreeEntry> = tree
                .into_iter()
                .filter(|entry| self.filter.accepts(&entry.path) && !seen.contains(&entry.path))
                .collect();
            seen.extend(missing.iter().map(|entry| entry.path.clone()));
            self.fetch_blobs(missing).await?;
        }
        let stored = self.context.stored_documents().await?;
        let gone: Vec<String> = stored
            .iter()
            .filter(|key| !seen.contains(*key))
            .cloned()
            .collect();
        self.context
            .state
            .set_progress(3, 4, format!("removing {} files", gone.len()));
        self.context
            .remove_unseen(&gone, stored.len(), seen.len(), self.removal, "files")
            .await?;
        Ok(())
    }

    /// Processes the archive's files (only `only`, when given); returns the
    /// paths it saw.
    async fn stream_archive(
        &self,
        only: Option<Arc<HashSet<String>>>,
    ) -> Result<HashSet<String>, JobError> {
        self.context
            .state
            .set_progress(3, 4, format!("streaming {}", self.repo.full_name()));
        let files = self.repo.archive(
            &self.labels.commit_sha,
            self.labels.clone(),
            Arc::clone(self.filter),
            only,
        );
        Ok(self.context.process_all(files, &|_| false).await?.seen)
    }

    /// Points every chunk of the source that still names another commit at
    /// the synced one: metadata only, nothing re-embedded.
    async fn restamp(&self) -> Result<(), JobError> {
        // Chunks naming another commit, or this commit under another ref label.
        self.context
            .restamp(
                &self.labels.commit_sha,
                self.labels.commit_fields(),
                &[self.labels.ref_field()],
            )
            .await
            .map(|_| ())
    }

    fn repo_settings(&self) -> &super::GitHubSettings {
        self.settings
    }
}
