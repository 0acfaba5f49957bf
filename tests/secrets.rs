//! User story: an operator shares one daemon between teams. Its secrets —
//! Chroma's API key, credentials inside URLs — must never reach a log line,
//! a stored job error, or an unauthenticated caller of `/health`.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

const CHROMA_KEY: &str = "chroma-key-S3CRET-5678";
const URL_PASSWORD: &str = "hunter2-url-password";
const TOKEN: &str = "team-token-1234";

#[test]
fn secrets_stay_out_of_logs_job_errors_and_health_answers() {
    let mut chroma = Chroma::start();
    let mut daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[
            ("CHROMA_SYNCD_API_TOKENS", TOKEN),
            ("CHROMA_API_KEY", CHROMA_KEY),
            ("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS", "true"),
        ],
    );

    // A crawl of a URL with a password in it fails (nothing listens there);
    // neither its error nor the log quotes the password.
    let site = format!(
        "http://crawler:{URL_PASSWORD}@127.0.0.1:{}/docs/",
        free_port()
    );
    let source = daemon.create_source(json!({"database_name": "testdb",
        "web_scrape": {"starting_url": site}}));
    let job = daemon.invoke(&source, json!({"target_collection_name": "site"}));
    let (job, error) = daemon.wait_failed(&job, std::time::Duration::from_secs(120));
    assert!(
        error.contains("127.0.0.1"),
        "the error names the site: {error}"
    );
    assert!(!error.contains(URL_PASSWORD), "{job}");
    assert!(!job.to_string().contains(CHROMA_KEY), "{job}");

    // Chroma goes down: health checks fail, and their errors are where
    // a secret could leak.
    chroma.stop();
    // Unauthenticated callers learn that Chroma is down, not why.
    let (status, health) = daemon.request_with_token(Method::GET, "/health", None, None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["chroma"], "unavailable", "{health}");
    // A caller with a token sees the detail.
    let (status, health) = daemon.request(Method::GET, "/health", None);
    assert_eq!(status, 503);
    let detail = health["chroma"].as_str().unwrap();
    assert!(detail.starts_with("unavailable: "), "{health}");
    assert!(!detail.contains(CHROMA_KEY), "{health}");

    daemon.terminate();
    let log = daemon.log();
    assert!(!log.is_empty());
    assert!(
        !log.contains(CHROMA_KEY),
        "Chroma's API key reached the log"
    );
    assert!(
        !log.contains(URL_PASSWORD),
        "a URL password reached the log"
    );
    assert!(!log.contains(TOKEN), "an API token reached the log");
}
