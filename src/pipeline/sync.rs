//! What every kind's sync shares, written once: documents kept moving
//! through the pipeline a bounded number at a time, one rule for removing
//! what a source no longer has, and re-stamping unchanged chunks.
//!
//! A source's job lists and fetches; it hands the pipeline a stream of
//! [`Fetched`] items ([`DocumentContext::process_all`]) and, when its
//! listing was complete, the keys it saw ([`DocumentContext::remove_unseen`]).
//! Sources never talk to Chroma themselves (`tests/architecture.rs`).

use std::collections::HashSet;
use std::pin::Pin;
use std::task::Poll;
use std::time::Instant;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use serde_json::Value;

use super::{DOCUMENTS_IN_FLIGHT, DocumentContext, Fetched, JobError, SourceError, elapsed_ms};
use crate::sink::records::{Filter, version_fields};

/// The share of a source's stored documents a sync removes at most when a
/// source sets no `max_removal_fraction` and its kind has no setting of
/// its own (web: `[web] max_removal_fraction`). A listing that suddenly
/// lacks nearly everything — an unmounted volume, a force-pushed empty
/// branch, a bucket policy hiding a prefix — is far likelier a fault than
/// the truth.
pub const DEFAULT_MAX_REMOVAL_FRACTION: f64 = 0.9;

/// When a sync may remove stored documents its listing no longer has.
/// One rule for every kind:
/// - a listing that found nothing while documents are stored removes none
///   (an unmounted volume looks like an empty directory);
/// - more than `max_fraction` of the stored documents removed at once is
///   refused; nothing has been removed when it is, what changed has been
///   written.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovalPolicy {
    pub max_fraction: f64,
    /// Where `max_fraction` came from, named in the refusal so the
    /// operator knows what to raise.
    pub setting: String,
}

impl RemovalPolicy {
    pub fn new(max_fraction: f64, setting: impl Into<String>) -> Self {
        RemovalPolicy {
            max_fraction,
            setting: setting.into(),
        }
    }

    /// A source's rule: its own `max_removal_fraction` if it sets one,
    /// else its kind's (`default`, from the setting `setting`).
    pub fn of_source(own: Option<f64>, default: f64, setting: &str) -> Self {
        match own {
            Some(fraction) => RemovalPolicy::new(fraction, "the source's max_removal_fraction"),
            None => RemovalPolicy::new(default, setting),
        }
    }

    /// Refuses removing `removing` of the `stored` documents (`noun`: what
    /// the source calls them) when the listing found `listed`.
    pub fn check(
        &self,
        removing: usize,
        stored: usize,
        listed: usize,
        noun: &str,
    ) -> Result<(), JobError> {
        if removing == 0 || stored == 0 {
            return Ok(());
        }
        if listed == 0 && removing >= stored {
            return Err(JobError::Permanent(format!(
                "the source lists no {noun} now; refusing to remove all {stored} stored {noun} \
                 (is it reachable, mounted, the right branch?). Delete the collection to start \
                 over"
            )));
        }
        if removing as f64 <= self.max_fraction * stored as f64 {
            return Ok(());
        }
        Err(JobError::Permanent(format!(
            "the sync would remove {removing} of the {stored} {noun} stored for this source \
             ({:.0}%, more than {} = {}); removed none. If the source really shrank, raise {} \
             for this sync",
            100.0 * removing as f64 / stored as f64,
            self.setting,
            self.max_fraction,
            self.setting,
        )))
    }
}

/// What [`DocumentContext::process_all`] saw.
#[derive(Debug, Default)]
pub struct Processed {
    /// Keys of the items that were not gone: documents the source has.
    pub seen: HashSet<String>,
    /// The items the caller asked to hold back (see `hold`), in order.
    pub held: Vec<Fetched>,
}

impl DocumentContext<'_> {
    /// Runs every item of `items` through [`DocumentContext::process`],
    /// up to [`DOCUMENTS_IN_FLIGHT`] at once: while one waits for the
    /// embedder (or an endpoint's answer) the next are fetched, converted,
    /// chunked and compared with what Chroma holds, whatever the kind.
    /// Items for which `hold` answers true are not processed but returned
    /// (a crawl defers removals until it knows the whole site). The first
    /// error stops the rest; cancellation is checked between items. Time
    /// spent waiting on `items` counts as `fetch_ms`.
    ///
    /// Invariant: a stream yields each key at most once (two items of one
    /// key in flight together could write in either order).
    ///
    /// (Type-erased stream and predicate: generic ones, borrowed by the
    /// job's future, trip the compiler's `Send` check of that future.)
    pub async fn process_all(
        &self,
        items: BoxStream<'_, Result<Fetched, SourceError>>,
        hold: &(dyn Fn(&Fetched) -> bool + Sync),
    ) -> Result<Processed, JobError> {
        let timed = timed(items, |ms| self.state.update(|stats| stats.fetch_ms += ms));
        let mut processed = Processed::default();
        let mut work = timed
            .map(|item| {
                let item = item.map_err(JobError::from);
                let held = match &item {
                    Ok(fetched) => hold(fetched),
                    Err(_) => false,
                };
                let key = item
                    .as_ref()
                    .ok()
                    .filter(|fetched| !matches!(fetched, Fetched::Gone { .. }))
                    .map(|fetched| fetched.key().to_string());
                async move {
                    if self.cancel.is_cancelled() {
                        return Err(JobError::Cancelled);
                    }
                    let fetched = item?;
                    if held {
                        return Ok((key, Some(fetched)));
                    }
                    self.process(fetched).await?;
                    Ok((key, None))
                }
            })
            .buffer_unordered(DOCUMENTS_IN_FLIGHT);
        while let Some((key, held)) = work.try_next().await? {
            processed.seen.extend(key);
            processed.held.extend(held);
        }
        if self.cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        Ok(processed)
    }

    /// Removes each stored document in `gone` (keys the complete listing
    /// did not have), after `policy` allowed it for the `stored` documents
    /// the source holds and the `listed` ones its listing found. Returns
    /// how many went.
    pub async fn remove_unseen(
        &self,
        gone: &[String],
        stored: usize,
        listed: usize,
        policy: &RemovalPolicy,
        noun: &str,
    ) -> Result<usize, JobError> {
        policy.check(gone.len(), stored, listed, noun)?;
        for key in gone {
            if self.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            tracing::info!(document = %key, "gone from the source; removing its chunks");
            self.write(key, Vec::new()).await?;
        }
        Ok(gone.len())
    }

    /// Whether the collection holds a chunk of this source at `version`
    /// (a GitHub commit): what an incremental sync starts from.
    pub async fn holds_version(&self, version: &str) -> Result<bool, JobError> {
        let found = self
            .services
            .chroma
            .find(
                self.collection,
                &Filter::source_version(self.source_id, version),
                1,
                "checking the collection's version",
            )
            .await?;
        Ok(!found.is_empty())
    }

    /// Points every chunk of this source that does not carry `version` (or
    /// differs from one of the `compared` fields) at it, with `fields` as its metadata:
    /// a new commit's unchanged files keep their chunks and embeddings,
    /// only their metadata moves. Returns how many chunks changed.
    pub async fn restamp(
        &self,
        version: &str,
        fields: Vec<(String, Value)>,
        compared: &[(String, Value)],
    ) -> Result<u64, JobError> {
        let chroma = &self.services.chroma;
        let filter = Filter::source_not_at(self.source_id, version, compared);
        let mut metadata = version_fields(version);
        for (name, value) in fields {
            metadata.insert(name, value);
        }
        let batch = chroma.batch_size().await?;
        let mut last_first: Option<String> = None;
        let mut restamped = 0u64;
        loop {
            if self.cancel.is_cancelled() {
                return Err(JobError::Cancelled);
            }
            let page = chroma
                .find(
                    self.collection,
                    &filter,
                    batch,
                    "finding chunks to re-stamp",
                )
                .await?;
            let Some((first, _)) = page.first() else {
                return Ok(restamped);
            };
            if last_first.as_ref() == Some(first) {
                return Err(JobError::Transient(format!(
                    "re-stamping chunks in {} made no progress",
                    self.collection.name
                )));
            }
            last_first = Some(first.clone());
            let ids: Vec<String> = page.into_iter().map(|(id, _)| id).collect();
            let metadatas = vec![metadata.clone(); ids.len()];
            chroma
                .update_metadata(self.collection, &ids, &metadatas)
                .await?;
            restamped += ids.len() as u64;
            self.state
                .update(|stats| stats.chunks_restamped += ids.len() as u64);
        }
    }
}

/// `items`, with the time spent waiting for each item reported to `spent`
/// (in ms): the time a source took to list or fetch, apart from the
/// pipeline's own.
fn timed<S>(mut items: S, spent: impl Fn(u64)) -> impl Stream<Item = S::Item>
where
    S: Stream + Unpin,
{
    let mut waiting_since: Option<Instant> = None;
    futures::stream::poll_fn(move |context| {
        let started = *waiting_since.get_or_insert_with(Instant::now);
        match Pin::new(&mut items).poll_next(context) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(item) => {
                waiting_since = None;
                spent(elapsed_ms(started));
                Poll::Ready(item)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::RemovalPolicy;

    fn web() -> RemovalPolicy {
        RemovalPolicy::new(0.5, "[web] max_removal_fraction")
    }

    #[test]
    fn removing_more_than_the_fraction_is_refused_with_the_counts() {
        assert!(web().check(0, 0, 0, "pages").is_ok());
        assert!(web().check(1, 2, 1, "pages").is_ok(), "exactly half may go");
        assert!(
            RemovalPolicy::new(1.0, "x").check(4, 4, 1, "pages").is_ok(),
            "1.0 turns the fraction check off"
        );
        let error = web().check(3, 5, 2, "pages").unwrap_err().to_string();
        assert!(error.contains("remove 3 of the 5 pages"), "{error}");
        assert!(error.contains("max_removal_fraction"), "{error}");
        assert!(error.contains("removed none"), "{error}");
    }

    #[test]
    fn a_listing_that_found_nothing_removes_nothing_whatever_the_fraction() {
        let off = RemovalPolicy::new(1.0, "max_removal_fraction");
        let error = off.check(4, 4, 0, "files").unwrap_err().to_string();
        assert!(error.contains("lists no files now"), "{error}");
        assert!(error.contains("all 4 stored files"), "{error}");
        assert!(off.check(0, 4, 0, "files").is_ok(), "nothing to remove");
        assert!(off.check(1, 0, 0, "files").is_ok(), "nothing stored");
    }

    #[test]
    fn the_default_allows_large_changes_but_not_nearly_everything() {
        let default = RemovalPolicy::new(super::DEFAULT_MAX_REMOVAL_FRACTION, "max");
        assert!(default.check(2, 3, 1, "files").is_ok());
        assert!(default.check(9, 10, 1, "files").is_ok());
        assert!(default.check(95, 100, 5, "files").is_err());
    }
}
