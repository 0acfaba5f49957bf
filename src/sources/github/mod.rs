//! GitHub repositories: one job syncs a repository at a ref (a branch or a
//! commit) into one collection, fully or incrementally.

pub mod client;
mod job;
pub mod section;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use self::client::{GitHubClients, path_filter, split_repository};
use super::{DomainError, RunTarget};
use super::{
    Flag, InvocationField, Planned, RunField, SourceKind, WholeSource, collection_concurrency_key,
    collection_of,
};
use crate::config::{Config, Secret};
use crate::model::{CreateJobPayload, GitRefIdentifier, SourceSchedule, SourceType};
use crate::pipeline::{JobError, JobRun, SourceError};
use crate::queue::SourceRecord;
pub use section::{GitHubAppConfig, GitHubSettings};
pub use settings::{GithubJobMetadata, GithubSourceConfig};

/// How long planning an invocation may wait for GitHub to name the default branch.
const DEFAULT_BRANCH_LOOKUP: Duration = Duration::from_secs(20);
/// Longest branch name we pass on (git allows more, GitHub does not).
const MAX_REF_BYTES: usize = 255;

pub struct GithubSource {
    pub clients: Arc<GitHubClients>,
}

impl GithubSource {
    pub fn new(settings: GitHubSettings) -> Result<Self, String> {
        Ok(GithubSource {
            clients: Arc::new(GitHubClients::new(settings).map_err(|e| e.to_string())?),
        })
    }
}

/// A ref is a branch or a commit, for `invocation create` and for `run`.
const GIT_REF_FLAGS: &[Flag] = &[
    Flag::within(
        "branch",
        "branch",
        "GitHub: branch to sync (default: the repository's default branch).",
    ),
    Flag::within("sha", "sha", "GitHub: commit to sync."),
];

impl SourceKind for GithubSource {
    type Config = GithubSourceConfig;
    type JobMetadata = GithubJobMetadata;
    type Settings = GitHubSettings;

    const SOURCE_TYPE: SourceType = SourceType::named("github");
    const TITLE: &'static str = "GitHub repository";
    const DESCRIPTION: &'static str = "A GitHub repository at a branch or a commit, synced into \
        one collection: fully the first time, then only what changed since the last synced \
        commit.";
    const INVOCATION_FIELDS: &'static [InvocationField] = &[
        InvocationField::required("target_collection_name"),
        InvocationField::optional("ref_identifier")
            .recorded_as("git_ref_identifier")
            .flags(GIT_REF_FLAGS),
    ];
    const CALLED: &'static str = "GitHub";
    /// A schedule's `branch` is this field too.
    const RUN_FIELDS: &'static [RunField] = &[RunField {
        name: "git_ref",
        flags: GIT_REF_FLAGS,
    }];

    fn build(_: &Config, settings: GitHubSettings) -> Result<Self, String> {
        GithubSource::new(settings)
    }

    fn secret_values(&self) -> Vec<Secret> {
        self.clients.secret_values()
    }

    fn validate(&self, github: &GithubSourceConfig) -> Result<(), DomainError> {
        if split_repository(&github.repository).is_none() {
            return Err(DomainError::invalid(format!(
                "github.repository `{}` is not of the form owner/name",
                github.repository
            )));
        }
        path_filter(github).map_err(|e| DomainError::invalid(format!("github: {e}")))?;
        if let Some(app_id) = &github.app_id
            && !self.clients.knows_app(app_id)
        {
            return Err(DomainError::invalid(format!(
                "github.app_id {app_id} is not configured on this daemon ([github.apps.{app_id}] \
                 in its config, with the app's private key)"
            )));
        }
        Ok(())
    }

    async fn authorize(
        &self,
        database: &str,
        github: &GithubSourceConfig,
    ) -> Result<(), DomainError> {
        self.clients
            .authorize(database, github)
            .map_err(DomainError::Forbidden)
    }

    fn default_collection(_: &GithubSourceConfig) -> Option<&str> {
        None
    }

    fn check_schedule(
        &self,
        _: &GithubSourceConfig,
        schedule: &SourceSchedule,
    ) -> Result<(), DomainError> {
        match &schedule.target_collection_name {
            Some(_) => Ok(()),
            None => Err(DomainError::invalid(
                "schedule.target_collection_name is required for GitHub and web sources",
            )),
        }
    }

    /// An invocation without `ref_identifier` syncs the repository's
    /// default branch: asks GitHub which one that is, so the job records it.
    async fn prepare(
        &self,
        record: &SourceRecord,
        config: &GithubSourceConfig,
        payload: &mut CreateJobPayload,
    ) -> Result<(), DomainError> {
        if payload.ref_identifier.is_some() {
            return Ok(());
        }
        let database = &record.payload.database_name;
        // Asking GitHub uses the source's credential: it must still be its database's.
        self.clients
            .authorize(database, config)
            .map_err(DomainError::Forbidden)?;
        let branch = async {
            self.clients
                .repo(database, config, CancellationToken::new())
                .await?
                .default_branch()
                .await
        };
        // Planning does not sit out a long rate-limit wait the way a job does.
        let branch = tokio::time::timeout(DEFAULT_BRANCH_LOOKUP, branch)
            .await
            .unwrap_or_else(|_| {
                Err(SourceError::Transient(format!(
                    "GitHub did not answer within {}s (rate limited?); retry later or give \
                     ref_identifier",
                    DEFAULT_BRANCH_LOOKUP.as_secs()
                )))
            });
        let branch = branch.map_err(|error| match error {
            SourceError::Transient(message) => DomainError::Unavailable {
                code: "github_unavailable",
                message: format!("cannot look up the default branch: {message}"),
            },
            SourceError::NotFound(message) | SourceError::Permanent(message) => {
                DomainError::invalid(format!("cannot look up the default branch: {message}"))
            }
        })?;
        payload.ref_identifier = Some(GitRefIdentifier::Branch(branch));
        Ok(())
    }

    fn plan(
        &self,
        record: &SourceRecord,
        _: &GithubSourceConfig,
        payload: &CreateJobPayload,
    ) -> Result<Planned, DomainError> {
        let collection = collection_of(payload, "GitHub", None)?;
        let git_ref = payload.ref_identifier.clone().ok_or_else(|| {
            DomainError::invalid("ref_identifier is required (the default branch was not resolved)")
        })?;
        validate_ref(&git_ref)?;
        let metadata = GithubJobMetadata {
            git_ref_identifier: git_ref,
        };
        let concurrency_key = collection_concurrency_key(record, &collection);
        Planned::of::<Self>(&metadata, collection, concurrency_key)
    }

    async fn whole_source(
        &self,
        record: &SourceRecord,
        config: &GithubSourceConfig,
        target: RunTarget,
    ) -> Result<WholeSource, DomainError> {
        let mut payload = CreateJobPayload {
            ref_identifier: target.field("git_ref")?,
            target_collection_name: target.collection,
            ..CreateJobPayload::default()
        };
        self.prepare(record, config, &mut payload).await?;
        Ok(vec![payload].into())
    }

    async fn run_job(&self, run: &JobRun<'_>, github: &GithubSourceConfig) -> Result<(), JobError> {
        job::run(self, run, github).await
    }
}

fn validate_ref(git_ref: &GitRefIdentifier) -> Result<(), DomainError> {
    match git_ref {
        GitRefIdentifier::Sha(sha) => {
            if !(4..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(DomainError::invalid(format!(
                    "ref_identifier.sha `{sha}` is not a hexadecimal commit sha"
                )));
            }
        }
        GitRefIdentifier::Branch(branch) => {
            let valid = !branch.is_empty()
                && branch.len() <= MAX_REF_BYTES
                && !branch.starts_with('/')
                && !branch.ends_with('/')
                && !branch.contains("..")
                && !branch
                    .chars()
                    .any(|c| c.is_control() || " ~^:?*[\\".contains(c));
            if !valid {
                return Err(DomainError::invalid(format!(
                    "ref_identifier.branch `{branch}` is not a valid branch name"
                )));
            }
        }
    }
    Ok(())
}
