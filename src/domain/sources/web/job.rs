//! A web-scrape job: crawl the site, write what changed, keep what did not,
//! and remove pages that are gone (404/410) or no longer in the crawl.
//!
//! What the collection already holds (each page's version, ETag and
//! Last-Modified, from its first chunk's metadata) is read first; the crawler
//! uses it for conditional requests and to report unchanged pages, which cost
//! no embedding.
//!
//! The links each fetched page had are remembered in the queue database
//! ([`super::links`]), so the next crawl can request every page
//! conditionally and still follow the links of pages that did not change;
//! a page removed for not being reached is forgotten with its chunks.
//!
//! Removals wait for the end of the crawl: a crawl that did not finish, or
//! that would remove more than `[web] max_removal_fraction` of the stored
//! pages, removes none (see [`check_removals`]).

use std::collections::{HashMap, HashSet};

use super::WebSource;
use super::crawl::{Crawl, HTTP_ETAG, HTTP_LAST_MODIFIED, KnownPage};
use super::links::LinkMemory;
use crate::model::{SourceType, WebScrapeSourceConfig};
use crate::pipeline::{DocumentContext, Fetched, JobError, JobRun};
use crate::sink::records::Stored;

pub(super) async fn run(
    source: &WebSource,
    job: &JobRun<'_>,
    web: &WebScrapeSourceConfig,
) -> Result<(), JobError> {
    let (state, cancel) = (job.state, job.cancel);
    let collection = job.open_collection().await?;
    let context = job.documents(&collection, SourceType::WebScrape);
    state.set_progress(1, 3, "reading what the collection holds".into());
    let known = known_pages(&context).await?;
    let source_id = job
        .claimed
        .job
        .source_id
        .ok_or_else(|| JobError::Permanent("invocation has no source".into()))?;
    let memory = LinkMemory::new(job.services.queue.clone(), source_id);
    let crawl = Crawl::new(
        &source.settings,
        web,
        known.clone(),
        memory.clone(),
        cancel.clone(),
    )?;
    state.set_progress(2, 3, format!("crawling {}", web.starting_url));
    let (mut pages, incomplete) = crawl.run();
    let mut seen = HashSet::new();
    // Stored pages the crawl found gone or skipped: removed only once the
    // crawl has finished and the removal check has passed.
    let mut removals: Vec<Fetched> = Vec::new();
    while let Some(page) = context.next_from(&mut pages).await {
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let page = page?;
        if !matches!(page, Fetched::Gone { .. }) {
            seen.insert(page.key().to_string());
        }
        let removes_stored = matches!(page, Fetched::Gone { .. } | Fetched::Skipped { .. })
            && known.contains_key(page.key());
        if removes_stored {
            removals.push(page);
        } else {
            context.process(page).await?;
        }
    }
    if cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    let unreached: Vec<&String> = if incomplete.load(std::sync::atomic::Ordering::Relaxed) {
        // Some pages could not be read: what they lead to is unknown, so
        // nothing is taken for gone this time (404/410 pages still go).
        tracing::warn!("the crawl could not read every page; keeping pages it did not reach");
        Vec::new()
    } else {
        known.keys().filter(|key| !seen.contains(*key)).collect()
    };
    check_removals(
        removals.len() + unreached.len(),
        known.len(),
        source.settings.max_removal_fraction,
    )?;
    state.set_progress(3, 3, "removing pages no longer in the crawl".into());
    for page in removals {
        context.process(page).await?;
    }
    for key in &unreached {
        context.write(key, Vec::new()).await?;
    }
    let unreached: Vec<String> = unreached.into_iter().cloned().collect();
    memory.store(&[], &unreached).await;
    job.finish(&collection).await
}

/// Refuses a crawl that would remove more than `max_fraction` of the
/// `stored` pages: a site that is broken for the moment (a start page without
/// its links, a half-deployed site) must not wipe the collection. Nothing has
/// been removed when this fails; what changed has been written.
fn check_removals(removing: usize, stored: usize, max_fraction: f64) -> Result<(), JobError> {
    if stored == 0 || removing as f64 <= max_fraction * stored as f64 {
        return Ok(());
    }
    Err(JobError::Permanent(format!(
        "the crawl would remove {removing} of the {stored} pages stored for this source \
         ({:.0}%, more than [web] max_removal_fraction = {max_fraction}); removed none. \
         If the site really shrank, raise max_removal_fraction \
         (env CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION) for this sync",
        100.0 * removing as f64 / stored as f64
    )))
}

/// Each stored page of the source, by its first chunk.
async fn known_pages(
    context: &DocumentContext<'_>,
) -> Result<HashMap<String, KnownPage>, JobError> {
    let mut known = HashMap::new();
    for metadata in &context.first_chunks().await? {
        let stored = Stored(metadata);
        if let Some(key) = stored.document_key() {
            known.insert(
                key.to_string(),
                KnownPage {
                    version: stored.version_key().unwrap_or_default().to_string(),
                    etag: stored.text(HTTP_ETAG).map(str::to_string),
                    last_modified: stored.text(HTTP_LAST_MODIFIED).map(str::to_string),
                },
            );
        }
    }
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::check_removals;

    #[test]
    fn removing_more_than_the_fraction_is_refused_with_the_counts() {
        assert!(check_removals(0, 0, 0.5).is_ok());
        assert!(check_removals(1, 2, 0.5).is_ok(), "exactly half may go");
        assert!(check_removals(4, 4, 1.0).is_ok(), "1.0 turns the check off");
        let error = check_removals(3, 5, 0.5).unwrap_err().to_string();
        assert!(error.contains("remove 3 of the 5 pages"), "{error}");
        assert!(error.contains("max_removal_fraction"), "{error}");
        assert!(error.contains("removed none"), "{error}");
    }
}
