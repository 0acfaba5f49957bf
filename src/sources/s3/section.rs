//! The kind's `[s3]` section of the daemon's config: defined here, with
//! the kind, and read when the kind is built (`Config::section`), so the
//! config module names no kind.

use serde::Deserialize;

use crate::config::{ConfigError, KindSection};
use crate::net::AllowedOrigins;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Settings {
    /// Objects larger than this are skipped with a recorded reason.
    pub max_object_bytes: u64,
    /// Text objects (markdown, code, plain text) larger than this are read,
    /// chunked and written a segment of about this size at a time, so memory
    /// does not grow with the object: raise `max_object_bytes` freely.
    pub stream_segment_bytes: u64,
    /// Per-request timeout for S3 calls.
    pub timeout_seconds: u64,
    /// Origins (`http://minio.internal:9000`) a source's `endpoint_url` or
    /// `sqs_queue_url` may name even though they are internal. Any other
    /// endpoint must resolve to public addresses only, checked when the
    /// source is created and on every connection (SSRF guard); sources
    /// without `endpoint_url` (AWS itself) are unaffected.
    /// Env: `CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS` (comma-separated; replaces
    /// the file's list).
    pub allowed_endpoints: AllowedOrigins,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            max_object_bytes: 64 * 1024 * 1024,
            stream_segment_bytes: 8 * 1024 * 1024,
            timeout_seconds: 60,
            allowed_endpoints: AllowedOrigins::default(),
        }
    }
}

impl KindSection for S3Settings {
    fn apply_env(
        &mut self,
        get: &dyn Fn(&'static str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        if let Some(origins) = get("CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS") {
            self.allowed_endpoints =
                AllowedOrigins::parse(origins.split(',')).map_err(|message| ConfigError::Env {
                    name: "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS",
                    message,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn section(text: &str) -> Result<S3Settings, ConfigError> {
        Config::section_of_toml(text, "s3")
    }

    #[test]
    fn s3_allowed_endpoints_come_from_the_file_or_the_environment() {
        let config =
            section("[s3]\nallowed_endpoints = [\"http://minio.internal:9000\"]\n").unwrap();
        let minio = url::Url::parse("http://minio.internal:9000/bucket").unwrap();
        assert!(config.allowed_endpoints.contains(&minio));
        let err = section("[s3]\nallowed_endpoints = [\"minio:9000/x\"]\n").unwrap_err();
        assert!(err.to_string().contains("origin"), "{err}");
        let mut config = S3Settings::default();
        assert!(
            config.allowed_endpoints.is_empty(),
            "nothing allowed by default"
        );
        config
            .apply_env(&|name| {
                (name == "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS")
                    .then(|| "http://127.0.0.1:9000, http://minio.internal:9000".to_string())
            })
            .unwrap();
        assert!(config.allowed_endpoints.contains(&minio));
        let err = config
            .apply_env(&|name| {
                (name == "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS").then(|| "http://a/b".to_string())
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS"),
            "{err}"
        );
    }
}
