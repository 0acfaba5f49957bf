//! Websites: one job crawls a site from its starting URL into one
//! collection, politely and within bounds.

pub mod crawl;
mod job;
pub mod links;
pub mod section;
pub mod settings;

use self::crawl::PathRules;
use super::{DomainError, RunTarget};
use super::{
    InvocationField, Planned, SourceKind, WholeSource, collection_concurrency_key, collection_of,
};
use crate::config::Config;
use crate::model::{CreateJobPayload, SourceType};
use crate::pipeline::{JobError, JobRun};
use crate::queue::SourceRecord;
pub use section::WebSettings;
pub use settings::WebJobMetadata;
pub use settings::WebScrapeSourceConfig;

/// Deepest crawl and most pages one source may ask for.
const MAX_CRAWL_DEPTH: u32 = 100;
const MAX_PAGE_LIMIT: u32 = 1_000_000;

pub struct WebSource {
    settings: WebSettings,
}

impl WebSource {
    pub fn new(settings: WebSettings) -> Self {
        WebSource { settings }
    }
}

impl SourceKind for WebSource {
    type Config = WebScrapeSourceConfig;
    type JobMetadata = WebJobMetadata;
    type Settings = WebSettings;

    const SOURCE_TYPE: SourceType = SourceType::named("web_scrape");
    const TITLE: &'static str = "Website";
    const DESCRIPTION: &'static str = "A website crawled from its starting URL (and its \
        sitemap), politely and within a depth and a page budget, into one collection; a re-crawl \
        removes the pages that are gone.";
    const INVOCATION_FIELDS: &'static [InvocationField] =
        &[InvocationField::required("target_collection_name")];
    const CALLED: &'static str = "web";

    fn build(_: &Config, settings: WebSettings) -> Result<Self, String> {
        Ok(WebSource::new(settings))
    }

    /// The crawl's bounds come from `[web]` when a source gives none.
    fn defaults(&self) -> serde_json::Map<String, serde_json::Value> {
        [
            ("max_depth", self.settings.default_max_depth),
            ("page_limit", self.settings.default_page_limit),
        ]
        .into_iter()
        .map(|(field, value)| (field.to_string(), value.into()))
        .collect()
    }

    fn validate(&self, web: &WebScrapeSourceConfig) -> Result<(), DomainError> {
        let valid = reqwest::Url::parse(&web.starting_url)
            .map(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .unwrap_or(false);
        if !valid {
            return Err(DomainError::invalid(format!(
                "web_scrape.starting_url `{}` is not an http(s) URL",
                web.starting_url
            )));
        }
        if web.max_depth.is_some_and(|d| d > MAX_CRAWL_DEPTH) {
            return Err(DomainError::invalid(format!(
                "web_scrape.max_depth must be at most {MAX_CRAWL_DEPTH}"
            )));
        }
        if web
            .page_limit
            .is_some_and(|l| !(1..=MAX_PAGE_LIMIT).contains(&l))
        {
            return Err(DomainError::invalid(format!(
                "web_scrape.page_limit must be between 1 and {MAX_PAGE_LIMIT}"
            )));
        }
        PathRules::new(web).map_err(|e| DomainError::invalid(format!("web_scrape: {e}")))?;
        Ok(())
    }

    fn default_collection(_: &WebScrapeSourceConfig) -> Option<&str> {
        None
    }

    fn plan(
        &self,
        record: &SourceRecord,
        _: &WebScrapeSourceConfig,
        payload: &CreateJobPayload,
    ) -> Result<Planned, DomainError> {
        let collection = collection_of(payload, "web_scrape", None)?;
        let concurrency_key = collection_concurrency_key(record, &collection);
        Planned::of::<Self>(&WebJobMetadata, collection, concurrency_key)
    }

    async fn whole_source(
        &self,
        _: &SourceRecord,
        _: &WebScrapeSourceConfig,
        target: RunTarget,
    ) -> Result<WholeSource, DomainError> {
        Ok(vec![CreateJobPayload {
            target_collection_name: target.collection,
            ..CreateJobPayload::default()
        }]
        .into())
    }

    async fn run_job(&self, run: &JobRun<'_>, web: &WebScrapeSourceConfig) -> Result<(), JobError> {
        job::run(self, run, web).await
    }
}
