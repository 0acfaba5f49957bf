//! A web-scrape job: crawl the site, write what changed, keep what did not,
//! and remove pages that are gone (404/410) or no longer in the crawl.
//!
//! What the collection already holds (each page's version, ETag and
//! Last-Modified, from its first chunk's metadata) is read first; the crawler
//! uses it for conditional requests and to report unchanged pages, which cost
//! no embedding.
//!
//! Removals wait for the end of the crawl: a crawl that did not finish, or
//! that would remove more than `[web] max_removal_fraction` of the stored
//! pages, removes none (see [`check_removals`]).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{DocumentContext, JobError, JobState, Services, open_collection, source_id_of};
use crate::model::{CreateSourcePayload, SourceType};
use crate::queue::ClaimedJob;
use crate::sink::chroma::CollectionHandle;
use crate::source::Fetched;
use crate::source::web::{Crawl, KnownPage};

pub(super) async fn run(
    services: &Services,
    claimed: &ClaimedJob,
    source: &CreateSourcePayload,
    state: &JobState,
    cancel: &CancellationToken,
) -> Result<(), JobError> {
    let web = source
        .web_scrape
        .as_ref()
        .ok_or_else(|| JobError::Permanent("source is not a web_scrape source".into()))?;
    let collection = open_collection(services, claimed).await?;
    let source_id = source_id_of(claimed);
    state.set_progress(1, 3, "reading what the collection holds".into());
    let known = known_pages(services, &collection, &source_id).await?;
    let crawl = Crawl::new(&services.web, web, known.clone(), cancel.clone())?;
    let context = DocumentContext {
        services,
        collection: &collection,
        state,
        cancel,
        source_id: &source_id,
        source_type: SourceType::WebScrape,
        custom_id: None,
        user_metadata: None,
        chunking: source.chunking.as_ref(),
    };
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
        services.web.max_removal_fraction,
    )?;
    state.set_progress(3, 3, "removing pages no longer in the crawl".into());
    for page in removals {
        context.process(page).await?;
    }
    for key in unreached {
        context.write(key, Vec::new()).await?;
    }
    services.chroma.mark_finished_ingest(&collection).await?;
    Ok(())
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
    services: &Services,
    collection: &CollectionHandle,
    source_id: &str,
) -> Result<HashMap<String, KnownPage>, JobError> {
    let filter = json!({"$and": [{"source_id": source_id}, {"chunk_index": 0}]});
    let text = |metadata: &serde_json::Map<String, Value>, name: &str| {
        metadata
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let mut known = HashMap::new();
    let pages = services
        .chroma
        .scan_all(collection, &filter, "listing stored pages")
        .await?;
    for (_, metadata) in pages {
        if let Some(key) = text(&metadata, "document_key") {
            known.insert(
                key,
                KnownPage {
                    version: text(&metadata, "version_key").unwrap_or_default(),
                    etag: text(&metadata, "http_etag"),
                    last_modified: text(&metadata, "http_last_modified"),
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
