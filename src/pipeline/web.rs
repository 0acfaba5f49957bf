//! A web-scrape job: crawl the site, write what changed, keep what did not,
//! and remove pages that are gone (404/410) or no longer in the crawl.
//!
//! What the collection already holds (each page's version, ETag and
//! Last-Modified, from its first chunk's metadata) is read first; the crawler
//! uses it for conditional requests and to report unchanged pages, which cost
//! no embedding.

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
    while let Some(page) = context.next_from(&mut pages).await {
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let page = page?;
        if !matches!(page, Fetched::Gone { .. }) {
            seen.insert(page.key().to_string());
        }
        context.process(page).await?;
    }
    if cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    if incomplete.load(std::sync::atomic::Ordering::Relaxed) {
        // Some pages could not be read: what they lead to is unknown, so
        // nothing is taken for gone this time (404/410 pages still went).
        tracing::warn!("the crawl could not read every page; keeping pages it did not reach");
    } else {
        state.set_progress(3, 3, "removing pages no longer in the crawl".into());
        for key in known.keys().filter(|key| !seen.contains(*key)) {
            context.write(key, Vec::new()).await?;
        }
    }
    services.chroma.mark_finished_ingest(&collection).await?;
    Ok(())
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
