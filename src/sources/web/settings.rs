//! The kind's settings on the wire: the `web_scrape` field of a source's
//! create payload and of the `Source` the API answers with. Defined here,
//! with the kind, so the wire model names no kind (`model::KindSettings`
//! carries it untyped; the registry parses it into this type).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A website crawl source.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebScrapeSourceConfig {
    /// The `http(s)` page the crawl starts from; the crawl stays on its
    /// scheme, host and port.
    pub starting_url: String,
    /// How many links away from the starting page the crawl goes (the
    /// starting page is depth 0, sitemap pages depth 1); at most 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u32>,
    /// Most pages the collection holds (1 to 1,000,000), in discovery order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_limit: Option<u32>,
    /// Only pages whose URL path matches one of these regexes are stored
    /// (the starting page is always fetched and its links followed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_path_regexes: Option<Vec<String>>,
    /// Pages whose URL path matches one of these regexes are not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exclude_path_regexes: Option<Vec<String>>,
}

/// A job's `web_scrape` metadata: `null` (seed 001), as a crawl is the
/// whole site.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct WebJobMetadata;
