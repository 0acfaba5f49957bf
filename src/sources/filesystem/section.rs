//! The kind's `[filesystem]` section of the daemon's config: defined here,
//! with the kind, and read when the kind is built (`Config::section`), so
//! the config module names no kind.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, DEFAULT_MAX_DOCUMENT_BYTES, KindSection};

/// One `[filesystem] allowed_roots` entry: a directory, and the databases
/// whose sources may read under it (`None`: every database), as
/// credentials are bound to databases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedRoot {
    pub path: PathBuf,
    pub databases: Option<Vec<String>>,
}

impl AllowedRoot {
    /// Whether sources of `database` may read under this root.
    pub fn serves(&self, database: &str) -> bool {
        self.databases
            .as_ref()
            .is_none_or(|databases| databases.iter().any(|d| d == database || d == "*"))
    }
}

impl From<PathBuf> for AllowedRoot {
    fn from(path: PathBuf) -> Self {
        AllowedRoot {
            path,
            databases: None,
        }
    }
}

/// A plain entry compares with its path (config tests, and callers that
/// list paths).
impl PartialEq<PathBuf> for AllowedRoot {
    fn eq(&self, other: &PathBuf) -> bool {
        self.databases.is_none() && self.path == *other
    }
}

impl<'de> Deserialize<'de> for AllowedRoot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Bound {
            path: PathBuf,
            databases: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a path, or a table { path, databases }")]
        enum Entry {
            Path(PathBuf),
            Bound(Bound),
        }
        Ok(match Entry::deserialize(deserializer)? {
            Entry::Path(path) => AllowedRoot::from(path),
            Entry::Bound(bound) => AllowedRoot {
                path: bound.path,
                databases: Some(bound.databases),
            },
        })
    }
}

/// Local directories as sources (`filesystem`). The daemon reads with its
/// own permissions, so only directories an operator lists here can be
/// named by API callers: without this list any caller could index
/// `/etc` or another team's files.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilesystemSettings {
    /// A source's `root` must be one of these directories or lie inside
    /// one (compared after resolving symbolic links). Empty (the default)
    /// disables the `filesystem` source type. An entry is a path (every
    /// database's sources may use it) or `{ path = "/srv/a", databases =
    /// ["team_a"] }` (only those databases' sources may).
    /// Env: `CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS` (comma-separated paths,
    /// every database; replaces the file's list).
    pub allowed_roots: Vec<AllowedRoot>,
    /// Files larger than this are skipped with a recorded reason, never read.
    pub max_file_bytes: u64,
    /// The same for documents converted in the child (PDF, Office, EPUB,
    /// spreadsheets, notebooks), which are rarely under a megabyte.
    pub max_document_bytes: u64,
    /// A walk of a root that finds more files than this fails the job
    /// instead of holding an unbounded listing in memory.
    pub max_files: usize,
    /// With `auto_sync: "direct"`, changes are gathered until the root has
    /// been quiet this long, so an editor's save or a `git checkout`
    /// becomes one batch of invocations rather than one per event.
    pub watch_debounce_ms: u64,
    /// How `auto_sync: "direct"` sees changes: `"auto"` (the kernel's
    /// events — inotify — falling back to polling when they cannot be set
    /// up, e.g. at the inotify watch limit), `"events"` (events only) or
    /// `"poll"` (rescan the tree every `watch_poll_interval_ms`; for NFS,
    /// SMB and container mounts whose changes raise no inotify events).
    /// Env: `CHROMA_SYNCD_FILESYSTEM_WATCH`.
    pub watch: WatchMode,
    /// How often the polling watcher compares the tree with what it saw.
    pub watch_poll_interval_ms: u64,
}

/// How a watched root reports its changes ([`FilesystemSettings::watch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchMode {
    #[default]
    Auto,
    Events,
    Poll,
}

impl std::str::FromStr for WatchMode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(WatchMode::Auto),
            "events" => Ok(WatchMode::Events),
            "poll" => Ok(WatchMode::Poll),
            other => Err(format!("`{other}` is not auto, events or poll")),
        }
    }
}

impl Default for FilesystemSettings {
    fn default() -> Self {
        FilesystemSettings {
            allowed_roots: Vec::new(),
            max_file_bytes: 1024 * 1024,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            max_files: 1_000_000,
            watch_debounce_ms: 500,
            watch: WatchMode::Auto,
            watch_poll_interval_ms: 10_000,
        }
    }
}

impl FilesystemSettings {
    /// The watcher's quiet time; at least 1 ms, since a zero window would
    /// hand every event over on its own.
    pub fn watch_debounce(&self) -> Duration {
        Duration::from_millis(self.watch_debounce_ms.max(1))
    }

    /// The polling watcher's period; at least 100 ms, since every poll
    /// walks the whole tree.
    pub fn watch_poll_interval(&self) -> Duration {
        Duration::from_millis(self.watch_poll_interval_ms.max(100))
    }
}

/// `CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS`: comma-separated absolute paths;
/// blanks are ignored, so an empty value disables the source type.
fn parse_allowed_roots(value: &str) -> Result<Vec<AllowedRoot>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|root| !root.is_empty())
        .map(|root| {
            let path = PathBuf::from(root);
            if path.is_absolute() {
                Ok(AllowedRoot::from(path))
            } else {
                Err(format!("`{root}` is not an absolute path"))
            }
        })
        .collect()
}

impl KindSection for FilesystemSettings {
    fn apply_env(
        &mut self,
        get: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(roots) = get("CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS") {
            self.allowed_roots =
                parse_allowed_roots(&roots).map_err(|message| ConfigError::Env {
                    name: "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
                    message,
                })?;
        }
        if let Some(mode) = get("CHROMA_SYNCD_FILESYSTEM_WATCH") {
            self.watch = mode.parse().map_err(|message| ConfigError::Env {
                name: "CHROMA_SYNCD_FILESYSTEM_WATCH",
                message,
            })?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        if let Some(relative) = self
            .allowed_roots
            .iter()
            .map(|root| &root.path)
            .find(|root| !root.is_absolute())
        {
            // A relative root would depend on the directory the daemon was
            // started from.
            return Err(ConfigError::Invalid {
                key: "filesystem.allowed_roots",
                message: format!("`{}` is not an absolute path", relative.display()),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn section(text: &str) -> Result<FilesystemSettings, ConfigError> {
        Config::section_of_toml(text, "filesystem")
    }

    #[test]
    fn filesystem_allowed_roots_come_from_the_file_or_the_environment() {
        let config = FilesystemSettings::default();
        assert!(
            config.allowed_roots.is_empty(),
            "the source type is disabled by default"
        );
        assert_eq!(config.max_file_bytes, 1024 * 1024);
        let mut config = section(
            "[filesystem]\nallowed_roots = [\"/srv/docs\"]\nmax_files = 10\nwatch_debounce_ms = 50\n",
        )
        .unwrap();
        assert_eq!(config.allowed_roots, [PathBuf::from("/srv/docs")]);
        assert_eq!(config.max_files, 10);
        assert_eq!(config.watch_debounce(), Duration::from_millis(50));
        config.check().unwrap();
        config
            .apply_env(&|name| {
                (name == "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS")
                    .then(|| " /srv/a , /srv/b,".to_string())
            })
            .unwrap();
        assert_eq!(
            config.allowed_roots,
            [PathBuf::from("/srv/a"), PathBuf::from("/srv/b")],
            "the environment replaces the file's list"
        );
        config
            .apply_env(&|name| (name == "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS").then(String::new))
            .unwrap();
        assert!(config.allowed_roots.is_empty(), "empty disables");
        let err = config
            .apply_env(&|name| {
                (name == "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS").then(|| "docs".to_string())
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS"),
            "{err}"
        );
        let err = section("[filesystem]\nallowed_roots = [\"docs\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("filesystem.allowed_roots"), "{err}");
        assert!(section("[filesystem]\nroots = []\n").is_err());
    }
}
