//! The kind's `[github]` section of the daemon's config: defined here,
//! with the kind, and read when the kind is built (`Config::section`), so
//! the config module names no kind.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::{
    ConfigError, DEFAULT_MAX_DOCUMENT_BYTES, KindSection, Secret, read_secret_file,
};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitHubSettings {
    /// REST base URL; GitHub Enterprise: `https://HOST/api/v3`.
    /// Env: `CHROMA_SYNCD_GITHUB_API_URL`.
    pub api_url: String,
    /// Token for sources without `app_id`. Env only: `CHROMA_SYNCD_GITHUB_TOKEN`
    /// (or `token_file`). Without either, public repositories are read anonymously.
    #[serde(skip)]
    pub token: Option<Secret>,
    /// A file holding the token (e.g. a systemd credential).
    pub token_file: Option<PathBuf>,
    /// Databases whose sources may use the token; absent means every
    /// database. A source of another database is refused (403).
    pub token_databases: Option<Vec<String>>,
    /// GitHub Apps by app id: sources with that `app_id` authenticate as the
    /// app's installation on the repository.
    pub apps: BTreeMap<String, GitHubAppConfig>,
    /// Files larger than this are skipped with a recorded reason.
    pub max_file_bytes: u64,
    /// The same for documents converted in the child (PDF, Office, EPUB,
    /// spreadsheets, notebooks), which are rarely under a megabyte.
    pub max_document_bytes: u64,
    /// A repository archive that inflates beyond this fails the job
    /// (decompression-bomb guard).
    pub max_archive_bytes: u64,
    /// An incremental sync fetches changed files one by one up to this many;
    /// beyond it, streaming the archive once is cheaper.
    pub max_blob_fetches: usize,
    /// Longest rate-limit wait taken inside a job; a longer one ends the
    /// attempt as a transient failure, retried by the queue.
    pub max_rate_limit_wait_seconds: u64,
    /// Per-request timeout.
    pub timeout_seconds: u64,
}

/// One GitHub App: its private key (PEM) from an env var or a file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitHubAppConfig {
    pub private_key_env: Option<String>,
    pub private_key_file: Option<PathBuf>,
    /// Databases whose sources may use this app; absent means every database.
    pub databases: Option<Vec<String>>,
}

impl Default for GitHubSettings {
    fn default() -> Self {
        GitHubSettings {
            api_url: "https://api.github.com".to_string(),
            token: None,
            token_file: None,
            token_databases: None,
            apps: BTreeMap::new(),
            max_file_bytes: 1024 * 1024,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_archive_bytes: 4 * 1024 * 1024 * 1024,
            max_blob_fetches: 200,
            max_rate_limit_wait_seconds: 900,
            timeout_seconds: 60,
        }
    }
}

impl GitHubSettings {
    /// The token for sources without an app: env wins over `token_file`.
    pub fn resolve_token(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.clone()));
        }
        match &self.token_file {
            Some(path) => read_secret_file(path)
                .map(Some)
                .map_err(|message| ConfigError::Env {
                    name: "CHROMA_SYNCD_GITHUB_TOKEN",
                    message,
                }),
            None => Ok(None),
        }
    }
}

impl GitHubAppConfig {
    /// The app's PEM private key.
    pub fn resolve_key(&self, app_id: &str) -> Result<Secret, ConfigError> {
        let error = |message| ConfigError::Credential {
            id: format!("github app {app_id}"),
            message,
        };
        if let Some(name) = &self.private_key_env {
            return std::env::var(name)
                .map(Secret::new)
                .map_err(|_| error(format!("environment variable {name} is not set")));
        }
        match &self.private_key_file {
            Some(path) => read_secret_file(path).map_err(error),
            None => Err(error(
                "neither private_key_env nor private_key_file is given".to_string(),
            )),
        }
    }
}

impl KindSection for GitHubSettings {
    fn apply_env(
        &mut self,
        get: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(url) = get("CHROMA_SYNCD_GITHUB_API_URL").filter(|u| !u.is_empty()) {
            self.api_url = url;
        }
        if let Some(token) = get("CHROMA_SYNCD_GITHUB_TOKEN").filter(|t| !t.is_empty()) {
            self.token = Some(Secret::new(token));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, binds};

    #[test]
    fn credentials_are_bound_to_databases_when_a_list_is_given() {
        let config: Config = toml::from_str(
            "[github]\ntoken_databases = [\"code\"]\n\
             [github.apps.7]\nprivate_key_env = \"K\"\ndatabases = [\"*\"]\n\
             [aws_credentials.1]\naccess_key_id_env = \"A\"\nsecret_access_key_env = \"S\"\n\
             databases = [\"docs\"]\n",
        )
        .unwrap();
        let github: GitHubSettings = config.section_with_env("github", &|_| None).unwrap();
        let aws = config.aws_credentials["1"].databases.as_deref();
        assert!(binds(aws, "docs") && !binds(aws, "code"));
        let token = github.token_databases.as_deref();
        assert!(binds(token, "code") && !binds(token, "docs"));
        assert!(binds(github.apps["7"].databases.as_deref(), "anything"));
        assert!(binds(None, "anything"), "absent means every database");
    }

    #[test]
    fn the_token_and_api_url_come_from_the_environment() {
        let mut github = GitHubSettings::default();
        github
            .apply_env(&|name| match name {
                "CHROMA_SYNCD_GITHUB_API_URL" => Some("https://ghe.internal/api/v3".into()),
                "CHROMA_SYNCD_GITHUB_TOKEN" => Some("ghp-secret".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(github.api_url, "https://ghe.internal/api/v3");
        assert_eq!(
            github.resolve_token().unwrap().unwrap().expose(),
            "ghp-secret"
        );
        assert_eq!(format!("{:?}", github.token), "Some(***)");
    }
}
