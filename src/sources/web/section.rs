//! The kind's `[web]` section of the daemon's config: defined here, with
//! the kind, and read when the kind is built (`Config::section`), so the
//! config module names no kind.

use serde::Deserialize;

use crate::config::{ConfigError, KindSection};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSettings {
    /// Sent as `User-Agent` and matched against robots.txt groups.
    /// Env: `CHROMA_SYNCD_WEB_USER_AGENT`.
    pub user_agent: String,
    /// Lets crawls reach loopback, private, link-local and metadata
    /// addresses. Off by default (SSRF guard).
    /// Env: `CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS=true`.
    pub allow_private_networks: bool,
    /// Pages larger than this are skipped with a recorded reason.
    pub max_page_bytes: u64,
    /// Per-request timeout.
    pub timeout_seconds: u64,
    /// Requests in flight at once to the crawled host.
    pub max_concurrency_per_host: usize,
    /// Requests started per second on the crawled host; a robots.txt
    /// `Crawl-delay` slows this further, never speeds it up.
    pub requests_per_second: f64,
    /// Longest `Retry-After` honoured on 429/503 before the page is given up for this crawl.
    pub max_retry_after_seconds: u64,
    /// `max_depth` when a source gives none (the starting page is depth 0).
    pub default_max_depth: u32,
    /// `page_limit` when a source gives none.
    pub default_page_limit: u32,
    /// URLs taken from sitemaps at most (sitemap indexes included).
    pub max_sitemap_urls: usize,
    /// A re-crawl that would remove more than this fraction of the pages a
    /// source has stored removes none and fails: a broken site (a start page
    /// without its links, a half-deployed site) must not wipe a collection.
    /// `1.0` turns the check off. Env: `CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION`.
    pub max_removal_fraction: f64,
}

impl Default for WebSettings {
    fn default() -> Self {
        WebSettings {
            user_agent: format!("chroma-syncd/{}", env!("CARGO_PKG_VERSION")),
            allow_private_networks: false,
            max_page_bytes: 5 * 1024 * 1024,
            timeout_seconds: 30,
            max_concurrency_per_host: 2,
            requests_per_second: 4.0,
            max_retry_after_seconds: 60,
            default_max_depth: 5,
            default_page_limit: 1000,
            max_sitemap_urls: 50_000,
            max_removal_fraction: 0.5,
        }
    }
}

impl KindSection for WebSettings {
    fn apply_env(
        &mut self,
        get: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(agent) = get("CHROMA_SYNCD_WEB_USER_AGENT").filter(|a| !a.trim().is_empty()) {
            self.user_agent = agent;
        }
        if let Some(allow) = get("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS") {
            self.allow_private_networks = match allow.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" | "" => false,
                _ => {
                    return Err(ConfigError::Env {
                        name: "CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS",
                        message: format!("`{allow}` is not true or false"),
                    });
                }
            };
        }
        if let Some(fraction) = get("CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION") {
            self.max_removal_fraction = fraction
                .trim()
                .parse()
                .ok()
                .filter(|f: &f64| (0.0..=1.0).contains(f))
                .ok_or_else(|| ConfigError::Env {
                    name: "CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION",
                    message: format!("`{fraction}` is not a fraction between 0 and 1"),
                })?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let fraction = self.max_removal_fraction;
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ConfigError::Invalid {
                key: "web.max_removal_fraction",
                message: format!("{fraction} is not a fraction between 0 and 1"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn section(text: &str) -> Result<WebSettings, ConfigError> {
        Config::section_of_toml(text, "web")
    }

    #[test]
    fn env_overrides_win_over_defaults() {
        let mut config = WebSettings::default();
        let env = |name: &'static str| match name {
            "CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS" => Some("true".to_string()),
            "CHROMA_SYNCD_WEB_USER_AGENT" => Some("docs-bot/1.0".to_string()),
            _ => None,
        };
        assert!(!config.allow_private_networks, "refused by default");
        config.apply_env(&env).unwrap();
        assert!(config.allow_private_networks);
        assert_eq!(config.user_agent, "docs-bot/1.0");
    }

    #[test]
    fn max_removal_fraction_comes_from_the_file_or_the_environment() {
        assert_eq!(WebSettings::default().max_removal_fraction, 0.5);
        let mut config = section("[web]\nmax_removal_fraction = 0.8\n").unwrap();
        assert_eq!(config.max_removal_fraction, 0.8);
        config
            .apply_env(&|name| {
                (name == "CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION").then(|| " 0.25 ".to_string())
            })
            .unwrap();
        assert_eq!(config.max_removal_fraction, 0.25);
        let err = config
            .apply_env(&|name| {
                (name == "CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION").then(|| "half".to_string())
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("CHROMA_SYNCD_WEB_MAX_REMOVAL_FRACTION"),
            "{err}"
        );
        let err = section("[web]\nmax_removal_fraction = 2.0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("web.max_removal_fraction"), "{err}");
    }
}
