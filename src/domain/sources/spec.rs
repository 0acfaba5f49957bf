//! The one place a source's kind is told apart: the create payload carries
//! one optional field per source type (so "none" and "several" get precise
//! 400s); [`SourceSpec`] is that payload parsed once, at the edge, into the
//! one kind it names. Everything past this point matches on the enum.

use crate::model::{
    CreateSourcePayload, FilesystemSourceConfig, GithubSourceConfig, S3SourceConfig, Source,
    SourceType, WebScrapeSourceConfig,
};

use crate::domain::DomainError;

/// A source's kind and its kind-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    S3(S3SourceConfig),
    Github(GithubSourceConfig),
    WebScrape(WebScrapeSourceConfig),
    Filesystem(FilesystemSourceConfig),
}

/// The payload fields that name a source type, for messages.
const KINDS: &str = "`github`, `web_scrape`, `s3` or `filesystem`";

impl SourceSpec {
    /// The one source type `payload` names, or why it names none or several.
    pub fn from_payload(payload: &CreateSourcePayload) -> Result<Self, DomainError> {
        let given: Vec<SourceSpec> = [
            payload.s3.clone().map(SourceSpec::S3),
            payload.github.clone().map(SourceSpec::Github),
            payload.web_scrape.clone().map(SourceSpec::WebScrape),
            payload.filesystem.clone().map(SourceSpec::Filesystem),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut given = given.into_iter();
        match (given.next(), given.next()) {
            (Some(spec), None) => Ok(spec),
            (None, _) => Err(DomainError::invalid(format!(
                "a source needs exactly one of {KINDS}"
            ))),
            (Some(_), Some(_)) => Err(DomainError::invalid(format!(
                "a source takes exactly one of {KINDS}, not several"
            ))),
        }
    }

    pub fn source_type(&self) -> SourceType {
        match self {
            SourceSpec::S3(_) => SourceType::S3,
            SourceSpec::Github(_) => SourceType::Github,
            SourceSpec::WebScrape(_) => SourceType::WebScrape,
            SourceSpec::Filesystem(_) => SourceType::Filesystem,
        }
    }

    /// Puts this spec into the source's wire form (`GET /sources/{id}`).
    pub fn write_into(self, source: &mut Source) {
        match self {
            SourceSpec::S3(config) => source.s3 = Some(config),
            SourceSpec::Github(config) => source.github = Some(config),
            SourceSpec::WebScrape(config) => source.web_scrape = Some(config),
            SourceSpec::Filesystem(config) => source.filesystem = Some(config),
        }
    }
}
