//! What a crawl remembers of each page it fetched, so that a re-crawl can
//! request every page conditionally (`If-None-Match` / `If-Modified-Since`)
//! — the starting page and every depth, not only pages at `max_depth` —
//! and still follow the links of a page that answers `304 Not Modified`.
//! An unchanged site then re-crawls with bodies of almost no bytes.
//!
//! **Where: the queue database's source state** ([`Queue::state`],
//! namespace [`NAMESPACE`]: the page's normalised URL → a [`PageLinks`] as
//! JSON), one row per source and page, rather than chunk metadata in
//! Chroma:
//! - the queue is already the one state the processes share, on SQLite and
//!   PostgreSQL alike, and deleting the source deletes the rows with it;
//! - in Chroma the links would need a standard metadata key on the page's
//!   chunks, which lowers the cap on user metadata keys (an interface
//!   change), meets Chroma's metadata size limits, and cannot be kept for
//!   pages that are fetched for their links but not stored (a canonical
//!   copy, a `noindex` page, an excluded starting page): they have no chunk.
//!
//! **Why a row can be trusted:** it holds the validators the page answered
//! with and the version the crawl computed from that answer. The crawl
//! sends a row's validators only when the row still describes what the
//! collection holds — the collection has the page at the row's version, or
//! the page is not stored by design — so a 304 means "the page is what the
//! row says". A row that no longer matches (a crash between writing the
//! row and the chunks, a second collection of the same source, a failed
//! write) is not used: the page is fetched in full and its row replaced.
//! Rows are replaced on every full fetch of their page, deleted when it
//! answers 404/410 or is no longer a page, and deleted with the pages a
//! crawl removes for not reaching them.
//!
//! **Bounds:** links come from the site, so they are hostile input. A page
//! is remembered only if its in-scope links (normalised, without
//! duplicates) number at most [`MAX_REMEMBERED_LINKS`] and take at most
//! [`MAX_REMEMBERED_LINK_BYTES`], and its URL at most
//! [`MAX_REMEMBERED_URL_BYTES`]; a page over a bound is simply fetched in
//! full each time (dropping some of its links would lose the pages behind
//! them). Links read back are normalised and checked against the crawl's
//! scope again, then pass the same path rules, robots.txt and visited set
//! as freshly parsed ones (`crawl.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use crate::queue::{Queue, StateChange};

/// The web kind's namespace in the queue's source state.
pub const NAMESPACE: &str = "web.page";

/// What a web crawl remembers of one fetched page, so that the page
/// answering `304 Not Modified` next time still leads the crawl on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageLinks {
    /// The page's normalised URL, as the crawl requested it (the row's
    /// key, not part of its value).
    #[serde(skip)]
    pub url: String,
    /// The validators the page answered with (sent back as `If-None-Match`
    /// and `If-Modified-Since`).
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The version the crawl computed for the page (its ETag, else a hash
    /// of its content): what the collection must hold for a 304 to say it
    /// is current.
    pub version: String,
    /// Why the page itself asks not to be stored (a canonical copy,
    /// noindex), if it does.
    pub skip_reason: Option<String>,
    /// Its outgoing links: normalised URLs in the crawl's scope.
    pub links: Vec<String>,
}

/// In-scope links a remembered page may have.
pub const MAX_REMEMBERED_LINKS: usize = 1000;
/// Bytes those links may take (their URLs' lengths summed).
pub const MAX_REMEMBERED_LINK_BYTES: usize = 64 * 1024;
/// Longest page URL remembered (PostgreSQL's index entries are bounded).
pub const MAX_REMEMBERED_URL_BYTES: usize = 2000;

/// A source's remembered page links, read and written through the queue.
/// Failures to read or write are logged and cost only bytes: a page with
/// no usable row is fetched in full.
#[derive(Clone)]
pub struct LinkMemory {
    queue: Arc<dyn Queue>,
    source_id: Uuid,
}

impl LinkMemory {
    pub fn new(queue: Arc<dyn Queue>, source_id: Uuid) -> Self {
        LinkMemory { queue, source_id }
    }

    /// The rows of these pages, by URL. A row that does not parse is
    /// left out (its page is fetched in full, and its row replaced).
    pub async fn recall(&self, urls: &[String]) -> HashMap<String, PageLinks> {
        match self.queue.state(self.source_id, NAMESPACE, urls).await {
            Ok(entries) => entries
                .into_iter()
                .filter_map(|entry| {
                    let mut row: PageLinks = serde_json::from_str(&entry.value)
                        .inspect_err(|error| {
                            tracing::warn!(url = %entry.key, %error, "unreadable remembered page links");
                        })
                        .ok()?;
                    row.url = entry.key;
                    Some((row.url.clone(), row))
                })
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "reading remembered page links; fetching those pages in full");
                HashMap::new()
            }
        }
    }

    /// Replaces the rows of `pages` and deletes those of `forget`, in one
    /// transaction (a page named twice keeps its last row).
    pub async fn store(&self, pages: &[PageLinks], forget: &[String]) {
        if pages.is_empty() && forget.is_empty() {
            return;
        }
        let forgotten = forget.iter().map(|url| StateChange {
            namespace: NAMESPACE,
            key: url.clone(),
            value: None,
        });
        let stored = pages.iter().filter_map(|page| {
            Some(StateChange {
                namespace: NAMESPACE,
                key: page.url.clone(),
                value: Some(serde_json::to_string(page).ok()?),
            })
        });
        let changes: Vec<StateChange> = forgotten.chain(stored).collect();
        if let Err(error) = self.queue.change_state(self.source_id, &changes).await {
            tracing::warn!(%error, "storing remembered page links");
        }
    }
}

/// What to remember of a page fetched from `url` (its normalised URL, not
/// redirected), or `None` when nothing useful fits: no validator to send
/// back, or a bound exceeded.
pub fn remember(
    url: &str,
    validators: (Option<String>, Option<String>),
    version: String,
    skip_reason: Option<String>,
    links: &[Url],
) -> Option<PageLinks> {
    let (etag, last_modified) = validators;
    if etag.is_none() && last_modified.is_none() || url.len() > MAX_REMEMBERED_URL_BYTES {
        return None;
    }
    let bytes: usize = links.iter().map(|link| link.as_str().len()).sum();
    if links.len() > MAX_REMEMBERED_LINKS || bytes > MAX_REMEMBERED_LINK_BYTES {
        return None;
    }
    Some(PageLinks {
        url: url.to_string(),
        etag,
        last_modified,
        version,
        skip_reason,
        links: links.iter().map(Url::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn etag() -> (Option<String>, Option<String>) {
        (Some("\"v1\"".into()), None)
    }

    #[test]
    fn pages_over_a_bound_or_without_validators_are_not_remembered() {
        let links: Vec<Url> = (0..3)
            .map(|i| url(&format!("https://example.com/{i}")))
            .collect();
        let row = remember("https://example.com/", etag(), "v".into(), None, &links).unwrap();
        assert_eq!(row.links.len(), 3);
        assert!(
            remember(
                "https://example.com/",
                (None, None),
                "v".into(),
                None,
                &links
            )
            .is_none()
        );
        let many: Vec<Url> = (0..=MAX_REMEMBERED_LINKS)
            .map(|i| url(&format!("https://example.com/{i}")))
            .collect();
        assert!(remember("https://example.com/", etag(), "v".into(), None, &many).is_none());
        let long = format!(
            "https://example.com/{}",
            "x".repeat(MAX_REMEMBERED_LINK_BYTES)
        );
        assert!(
            remember(
                "https://example.com/",
                etag(),
                "v".into(),
                None,
                &[url(&long)]
            )
            .is_none()
        );
        let long_page = format!(
            "https://example.com/{}",
            "p".repeat(MAX_REMEMBERED_URL_BYTES)
        );
        assert!(remember(&long_page, etag(), "v".into(), None, &links).is_none());
    }
}
