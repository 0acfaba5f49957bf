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
//! pages (the source's own `max_removal_fraction` wins), removes none
//! ([`crate::pipeline::RemovalPolicy`], the rule every kind follows).

use std::collections::HashMap;

use super::WebSource;
use super::crawl::{Crawl, HTTP_ETAG, HTTP_LAST_MODIFIED, KnownPage};
use super::links::LinkMemory;
use super::settings::WebScrapeSourceConfig;
use crate::pipeline::{DocumentContext, Fetched, JobError, JobRun};
use crate::sources::SourceKind;

pub(super) async fn run(
    source: &WebSource,
    job: &JobRun<'_>,
    web: &WebScrapeSourceConfig,
) -> Result<(), JobError> {
    let (state, cancel) = (job.state, job.cancel);
    let collection = job.open_collection().await?;
    let context = job.documents(&collection, super::WebSource::SOURCE_TYPE);
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
    let (pages, incomplete) = crawl.run();
    // Stored pages the crawl found gone or skipped are held back: removed
    // only once the crawl has finished and the removal rule allows it.
    let crawled = context
        .process_all(pages, &|page| {
            matches!(page, Fetched::Gone { .. } | Fetched::Skipped { .. })
                && known.contains_key(page.key())
        })
        .await?;
    let unreached: Vec<String> = if incomplete.load(std::sync::atomic::Ordering::Relaxed) {
        // Some pages could not be read: what they lead to is unknown, so
        // nothing is taken for gone this time (404/410 pages still go).
        tracing::warn!("the crawl could not read every page; keeping pages it did not reach");
        Vec::new()
    } else {
        known
            .keys()
            .filter(|key| !crawled.seen.contains(*key))
            .cloned()
            .collect()
    };
    let policy = job.removal_policy(
        source.settings.max_removal_fraction,
        "[web] max_removal_fraction (env CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION)",
    );
    // Pages the crawl found and the collection keeps.
    let held: std::collections::HashSet<&str> = crawled.held.iter().map(Fetched::key).collect();
    let listed = crawled
        .seen
        .iter()
        .filter(|key| !held.contains(key.as_str()))
        .count();
    drop(held);
    policy.check(
        crawled.held.len() + unreached.len(),
        known.len(),
        listed,
        "pages",
    )?;
    state.set_progress(3, 3, "removing pages no longer in the crawl".into());
    for page in crawled.held {
        context.process(page).await?;
    }
    context
        .remove_unseen(&unreached, known.len(), listed, &policy, "pages")
        .await?;
    memory.store(&[], &unreached).await;
    job.finish(&collection).await
}

/// Each stored page of the source, by its first chunk.
async fn known_pages(
    context: &DocumentContext<'_>,
) -> Result<HashMap<String, KnownPage>, JobError> {
    let mut known = HashMap::new();
    context
        .visit_first_chunks(|stored| {
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
        })
        .await?;
    Ok(known)
}
