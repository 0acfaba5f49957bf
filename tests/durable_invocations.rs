//! User story: a client that retries requests, a queue that must not grow
//! without bound, jobs that must not run forever, and a history that must
//! not keep every job forever.

mod common;

use std::time::Duration;

use common::github::{GitHubEmulator, GitRepo, RateLimit};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn post_with_key(daemon: &Daemon, source: &str, key: &str, body: Value) -> (u16, Value) {
    let response = http()
        .post(format!(
            "{}/api/v1/sources/{source}/invocations",
            daemon.url()
        ))
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

#[test]
fn an_idempotency_key_replays_the_original_invocation() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("replays");
    s3.put("replays", "a.md", "# A\n\nFirst document.\n", None);
    s3.put("replays", "b.md", "# B\n\nSecond document.\n", None);
    let daemon = Daemon::start(&chroma.url());
    let source = daemon.create_source(s3_source(&s3, "replays", "replays", None));
    let other = daemon.create_source(s3_source(&s3, "replays", "replays-two", None));

    let (status, first) = post_with_key(&daemon, &source, "req-1", json!({"object_key": "a.md"}));
    assert_eq!(status, 201, "{first}");
    let id = first["invocation_id"].as_str().unwrap().to_string();
    // Replayed while pending or processing, and after completion: same invocation.
    let (status, again) = post_with_key(&daemon, &source, "req-1", json!({"object_key": "a.md"}));
    assert_eq!(
        (status, again["invocation_id"].as_str()),
        (201, Some(id.as_str()))
    );
    daemon.wait_complete(&id);
    let (status, again) = post_with_key(&daemon, &source, "req-1", json!({"object_key": "a.md"}));
    assert_eq!(
        (status, again["invocation_id"].as_str()),
        (201, Some(id.as_str()))
    );
    let (_, jobs) = daemon.request(
        Method::GET,
        &format!("/api/v1/invocations?source_id={source}"),
        None,
    );
    assert_eq!(jobs.as_array().unwrap().len(), 1, "replays create nothing");

    // The same key with another body is a conflict; keys are per source.
    let (status, error) = post_with_key(&daemon, &source, "req-1", json!({"object_key": "b.md"}));
    assert_eq!(status, 409, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    let (status, fresh) = post_with_key(&daemon, &other, "req-1", json!({"object_key": "a.md"}));
    assert_eq!(status, 201);
    assert_ne!(fresh["invocation_id"].as_str(), Some(id.as_str()));
    let (status, _) = post_with_key(&daemon, &source, " ", json!({"object_key": "a.md"}));
    assert_eq!(status, 400);
}

/// A GitHub job that sits in a long rate-limit wait keeps the only worker busy.
/// Keep the returned repository alive for the test's length.
fn blocking_github(github: &GitHubEmulator) -> GitRepo {
    let repo = GitRepo::new();
    repo.write("README.md", "# Busy\n");
    repo.commit("init");
    github.add_repo("acme/busy", &repo);
    github.rate_limit_next(&[RateLimit::Secondary { seconds: 60 }]);
    repo
}

#[test]
fn a_full_queue_answers_429_and_a_job_past_its_time_limit_fails() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("pressure");
    let github = GitHubEmulator::start();
    let _repo = blocking_github(&github);
    let config = format!(
        "{}\n",
        TEST_CONFIG.replace("workers = 2", "workers = 1").replace(
            "poll_interval_ms = 100",
            "poll_interval_ms = 100\nmax_pending_jobs = 2\njob_timeout_seconds = 3"
        )
    );
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config,
        &[("CHROMA_SYNCD_GITHUB_API_URL", &github.url)],
    );
    let busy = daemon
        .create_source(json!({"database_name": "testdb", "github": {"repository": "acme/busy"}}));
    let stuck = daemon.invoke(
        &busy,
        json!({"target_collection_name": "busy", "ref_identifier": {"branch": "main"}}),
    );
    wait_until("the GitHub job to start", Duration::from_secs(30), || {
        (daemon.job(&stuck)["status"] == "processing").then_some(())
    });

    let source = daemon.create_source(s3_source(&s3, "pressure", "pressure", None));
    for key in ["one.md", "two.md"] {
        daemon.invoke(&source, json!({"object_key": key}));
    }
    let response = http()
        .post(format!(
            "{}/api/v1/sources/{source}/invocations",
            daemon.url()
        ))
        .json(&json!({"object_key": "three.md"}))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "5");
    let error: Value = response.json().unwrap();
    assert_matches("ErrorResponse", &error);
    assert_eq!(error["error"], "queue_full");

    // The rate-limit wait (60 s) outlasts job_timeout_seconds (3 s).
    let (job, error) = daemon.wait_failed(&stuck, Duration::from_secs(60));
    assert!(error.contains("timed out after 3s"), "{error}");
    assert_eq!(job["attempt"], 1);
}

#[test]
fn finished_jobs_are_pruned_after_their_retention() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("history");
    s3.put("history", "a.md", "# A\n\nKept a while.\n", None);
    let mut daemon = Daemon::start(&chroma.url());
    let source = daemon.create_source(s3_source(&s3, "history", "history", None));
    let id = daemon.invoke(&source, json!({"object_key": "a.md"}));
    daemon.wait_complete(&id);
    assert_eq!(
        daemon
            .request(Method::GET, &format!("/api/v1/invocations/{id}"), None)
            .0,
        200
    );
    // Retention 0 days: the next pruning pass (at start) removes it.
    let config = TEST_CONFIG.replace(
        "poll_interval_ms = 100",
        "poll_interval_ms = 100\nretention_days = 0",
    );
    std::fs::write(&daemon.config_path, config).unwrap();
    daemon.restart();
    wait_until(
        "the finished job to be pruned",
        Duration::from_secs(30),
        || {
            let (status, _) =
                daemon.request(Method::GET, &format!("/api/v1/invocations/{id}"), None);
            (status == 404).then_some(())
        },
    );
    assert_eq!(
        daemon
            .request(Method::GET, &format!("/api/v1/sources/{source}"), None)
            .0,
        200
    );
}
