//! Local directories (wired in the next commit).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Planned, SourceKind};
use crate::config::Config;
use crate::domain::{DomainError, RunTarget};
use crate::model::{CreateJobPayload, FilesystemSourceConfig};
use crate::pipeline::{JobError, JobRun};
use crate::queue::{Queue, SourceRecord};

pub struct FilesystemSource;

impl FilesystemSource {
    pub fn new(_config: &Config) -> Self {
        FilesystemSource
    }

    pub fn start_auto_sync(&self, _: &Arc<dyn Queue>, _: &Arc<Notify>, _: &CancellationToken) {}
}

impl SourceKind for FilesystemSource {
    type Config = FilesystemSourceConfig;

    fn validate(&self, _: &FilesystemSourceConfig) -> Result<(), DomainError> {
        Err(DomainError::invalid(
            "filesystem sources are not available yet",
        ))
    }

    fn default_collection(config: &FilesystemSourceConfig) -> Option<&str> {
        Some(&config.collection_name)
    }

    fn plan(
        &self,
        _: &SourceRecord,
        _: &FilesystemSourceConfig,
        _: &CreateJobPayload,
    ) -> Result<Planned, DomainError> {
        Err(DomainError::invalid(
            "filesystem sources are not available yet",
        ))
    }

    async fn whole_source(
        &self,
        _: &SourceRecord,
        _: &FilesystemSourceConfig,
        _: RunTarget,
    ) -> Result<Vec<CreateJobPayload>, DomainError> {
        Ok(Vec::new())
    }

    async fn run_job(&self, _: &JobRun<'_>, _: &FilesystemSourceConfig) -> Result<(), JobError> {
        Err(JobError::Permanent(
            "filesystem sources are not available yet".into(),
        ))
    }
}
