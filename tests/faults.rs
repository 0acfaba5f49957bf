//! Faults end in a retry or a clean `failed` — never a lost job, never a
//! stuck one, never a half-written collection.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A markdown document big enough to take several seconds to sync.
fn big_markdown(sections: usize) -> String {
    (0..sections)
        .map(|i| {
            let words: String = (0..90)
                .map(|w| format!("word{} ", (i * 7 + w) % 500))
                .collect();
            format!("## Section {i}\n\n{words}\n\n")
        })
        .collect()
}

/// Waits until the job is processing and has upserted at least one batch.
fn wait_mid_job(daemon: &Daemon, id: &str) {
    wait_until(
        "the job to be part-way through",
        Duration::from_secs(120),
        || {
            let job = daemon.job(id);
            assert!(
                !job["status"].is_object(),
                "job finished before the fault: {job}"
            );
            (job["status"] == "processing"
                && job["stats"]["chunks_upserted"].as_u64().unwrap_or(0) > 0)
                .then_some(())
        },
    );
}

/// A bucket holding one big markdown object and a source writing it to `collection`.
fn big_object_source(daemon: &Daemon, s3: &S3, collection: &str) -> String {
    s3.create_bucket("bulk");
    s3.put("bulk", "big.md", big_markdown(120), None);
    daemon.create_source(s3_source(s3, "bulk", collection, None))
}

/// Like [`big_object_source`], with an object a few batches long: one that
/// finishes well within a shutdown grace period.
fn medium_object_source(daemon: &Daemon, s3: &S3, collection: &str) -> String {
    s3.create_bucket("bulk");
    s3.put("bulk", "big.md", big_markdown(70), None);
    daemon.create_source(s3_source(s3, "bulk", collection, None))
}

/// Syncs the same object into collection `clean` and asserts that `collection`
/// holds exactly what that clean run wrote.
fn assert_same_as_clean_run(daemon: &Daemon, chroma: &Chroma, source: &str, collection: &str) {
    let clean = daemon.invoke(
        source,
        json!({"object_key": "big.md", "target_collection_name": "clean"}),
    );
    daemon.wait_complete(&clean);
    let synced = contents(chroma, collection);
    assert!(synced.len() > 50);
    assert_eq!(
        synced,
        contents(chroma, "clean"),
        "same IDs, documents and metadata as a clean run"
    );
}

/// IDs and documents of a collection, for comparing with a clean run.
fn contents(chroma: &Chroma, collection: &str) -> Vec<(String, String, Value)> {
    chroma
        .records("testdb", collection)
        .rows
        .into_iter()
        .map(|r| {
            let mut meta = r.metadata.clone();
            meta.as_object_mut().unwrap().remove("source_id");
            (r.id, r.document, meta)
        })
        .collect()
}

#[test]
fn a_job_survives_kill_9_of_the_daemon_and_finishes_after_restart() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let mut daemon = Daemon::start(&chroma.url());
    let source = big_object_source(&daemon, &s3, "crashy");

    let id = daemon.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&daemon, &id);
    daemon.kill9();
    daemon.restart();

    // The new process re-claims the job once the dead one's lease expires.
    let job = daemon.wait_complete(&id);
    assert_eq!(job["attempt"], 2, "{job}");

    assert_same_as_clean_run(&daemon, &chroma, &source, "crashy");
}

#[test]
fn chroma_down_mid_job_retries_and_completes_when_it_returns() {
    let mut chroma = Chroma::start();
    let s3 = S3::start();
    // Enough attempts to outlast Chroma's restart on a slow machine.
    let config = TEST_CONFIG.replace("max_attempts = 3", "max_attempts = 30");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let source = big_object_source(&daemon, &s3, "flaky");

    let id = daemon.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&daemon, &id);
    chroma.stop();
    // The attempt fails transiently and the job waits for a retry, saying why.
    let pending = wait_until("a retry to be scheduled", Duration::from_secs(60), || {
        let job = daemon.job(&id);
        job["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("Chroma"))
            .then_some(job)
    });
    assert!(
        !pending["status"].is_object(),
        "not finished yet: {pending}"
    );
    chroma.restart();

    let job = daemon.wait_complete(&id);
    assert!(job["attempt"].as_u64().unwrap() >= 2, "{job}");
    assert_same_as_clean_run(&daemon, &chroma, &source, "flaky");
}

#[test]
fn chroma_staying_down_ends_in_a_clean_failure() {
    let mut chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    s3.create_bucket("bulk");
    s3.put("bulk", "doc.md", "# Doc\n\nSome text.\n", None);
    let source = daemon.create_source(s3_source(&s3, "bulk", "gone", None));
    chroma.stop();

    let id = daemon.invoke(&source, json!({"object_key": "doc.md"}));
    let (job, error) = daemon.wait_failed(&id, Duration::from_secs(120));
    assert!(error.contains("Chroma unreachable"), "{error}");
    assert!(error.contains("gave up after 3 attempts"), "{error}");
    assert_eq!(job["attempt"], 3);
}

#[test]
fn cancel_during_processing_stops_the_job_within_seconds() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    let source = big_object_source(&daemon, &s3, "halted");

    let id = daemon.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&daemon, &id);
    let (status, body) = daemon.request(
        reqwest::Method::PUT,
        &format!("/api/v1/invocations/{id}"),
        None,
    );
    assert_eq!(status, 202, "{body}");
    let job = daemon.wait_finished(&id, Duration::from_secs(30));
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["cancel_requested_at"].is_string());

    // No writes after the cancel took effect: the count stays put.
    let written = chroma.records("testdb", "halted").rows.len();
    assert!(written > 0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(chroma.records("testdb", "halted").rows.len(), written);
    assert_eq!(
        job["stats"]["chunks_upserted"].as_u64().unwrap() as usize,
        written
    );
}

#[test]
fn s3_errors_and_slow_responses_end_in_success_after_retry_or_a_clean_failure() {
    use common::faulty::{Fault, FaultProxy};
    let chroma = Chroma::start();
    let s3 = S3::start();
    let proxy = FaultProxy::start(&s3.endpoint());
    s3.create_bucket("flaky");
    s3.put(
        "flaky",
        "doc.md",
        "# Doc\n\nSome text worth syncing.\n",
        None,
    );
    let config = format!("{TEST_CONFIG}\n[s3]\ntimeout_seconds = 2\n");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let mut source = s3_source(&s3, "flaky", "flaky", None);
    source["s3"]["endpoint_url"] = json!(proxy.url);
    let source = daemon.create_source(source);
    let sync = || daemon.invoke(&source, json!({"object_key": "doc.md"}));

    // More 503/500s than the S3 client's own retries absorb, then recovery.
    let mut faults = vec![Fault::Status(503); 4];
    faults.extend([Fault::Status(500); 2]);
    proxy.inject(&faults);
    let job = daemon.wait_complete(&sync());
    assert!(job["attempt"].as_u64().unwrap() >= 2, "{job}");
    let log = proxy.log();
    assert_eq!(
        log.iter().filter(|l| l.starts_with("fault")).count(),
        6,
        "{log:?}"
    );
    assert_eq!(chroma.records("testdb", "flaky").rows.len(), 1);

    // Responses slower than the timeout, then recovery.
    proxy.inject(&[Fault::Delay(Duration::from_secs(5)); 2]);
    daemon.wait_complete(&sync());
    assert!(proxy.log().iter().any(|l| l == "delayed"));

    // A store that stays broken: a clean `failed` with the reason, not a stuck job.
    proxy.inject(&[Fault::Status(500); 100]);
    let (job, error) = daemon.wait_failed(&sync(), Duration::from_secs(180));
    assert!(
        error.contains("InternalError") || error.contains("500"),
        "{error}"
    );
    assert_eq!(job["attempt"], 3);
    proxy.clear();
    assert_eq!(
        chroma.records("testdb", "flaky").rows.len(),
        1,
        "nothing lost"
    );

    // The failed requests are counted by service and kind.
    let metrics = http()
        .get(format!("{}/metrics", daemon.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let count = |labels: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with("chroma_syncd_request_errors_total{") && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("kind=\"status_5xx\"") >= 3.0, "{metrics}");
}

/// The job's status as the queue holds it, read straight from the stopped
/// daemon's SQLite file.
fn stored_job(daemon: &Daemon, id: &str) -> chroma_syncd::model::Job {
    runtime().block_on(async {
        use chroma_syncd::queue::{Queue, SqliteQueue};
        let queue = SqliteQueue::open(&daemon.state.path().join("queue.sqlite3"), 3)
            .await
            .unwrap();
        queue
            .get_job(id.parse().unwrap())
            .await
            .unwrap()
            .expect("the job is stored")
    })
}

#[test]
fn sigterm_lets_the_in_flight_job_finish_within_the_grace_period_and_exits_0() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    // Top-level keys precede TOML tables: put it first.
    let config = format!("shutdown_grace_seconds = 240\n{TEST_CONFIG}");
    let mut daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let source = medium_object_source(&daemon, &s3, "drained");
    let id = daemon.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&daemon, &id);

    let status = daemon.terminate_within(Duration::from_secs(240));
    assert!(status.success(), "exit 0 after draining: {status:?}");
    let job = stored_job(&daemon, &id);
    assert!(
        matches!(job.status, chroma_syncd::model::JobStatus::Complete { .. }),
        "the in-flight job finished before exit: {:?}",
        job.status
    );
    assert_eq!(job.attempt, 1);
    daemon.restart();
    assert_same_as_clean_run(&daemon, &chroma, &source, "drained");
}

#[test]
fn sigterm_past_the_grace_period_releases_the_job_for_the_next_process() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let config = format!("shutdown_grace_seconds = 0\n{TEST_CONFIG}");
    let mut daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let source = big_object_source(&daemon, &s3, "released");
    let id = daemon.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&daemon, &id);

    let status = daemon.terminate();
    assert!(status.success(), "exit 0 after releasing: {status:?}");
    let job = stored_job(&daemon, &id);
    assert_eq!(
        job.status,
        chroma_syncd::model::JobStatus::Pending,
        "released, not failed"
    );
    assert_eq!(job.attempt, 0, "a release does not use up an attempt");

    // The next process takes it at once (no lease to wait out) and finishes it.
    daemon.restart();
    let finished = daemon.wait_complete(&id);
    assert_eq!(finished["attempt"], 1, "{finished}");
    assert_same_as_clean_run(&daemon, &chroma, &source, "released");
}

/// A job whose attempts keep ending with the process dying (SIGKILL, an
/// abort, the OOM killer) ends `failed` with a reason that says so; while
/// attempts remain it goes back to pending and its `last_error` says why.
#[test]
fn a_job_whose_process_keeps_dying_ends_failed_saying_so() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let config = TEST_CONFIG.replace("max_attempts = 3", "max_attempts = 2");
    let mut daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let source = big_object_source(&daemon, &s3, "doomed");
    let id = daemon.invoke(&source, json!({"object_key": "big.md"}));

    wait_mid_job(&daemon, &id);
    daemon.kill9();
    daemon.restart();
    // The dead attempt's lease runs out; the job is retried, saying why.
    let retried = wait_until(
        "the second attempt to run",
        Duration::from_secs(120),
        || {
            let job = daemon.job(&id);
            (job["status"] == "processing" && job["attempt"] == 2).then_some(job)
        },
    );
    let first = retried["last_error"].as_str().unwrap_or_default();
    assert!(
        first.contains("attempt 1 of 2 ended without a result")
            && first.contains("process crashed or was killed"),
        "{retried}"
    );
    daemon.kill9();
    daemon.restart();

    let (job, error) = daemon.wait_failed(&id, Duration::from_secs(120));
    assert!(
        error.contains("attempt 2 of 2 ended without a result: the worker stopped renewing its lease (process crashed or was killed)"),
        "{error}"
    );
    assert!(error.contains("before that: attempt 1 of 2"), "{error}");
    assert_eq!(job["attempt"], 2, "not retried past max_attempts: {job}");
}

/// SIGTERM ends the daemon within `shutdown_grace_seconds` + 10 s whatever
/// Chroma does: here it stops answering mid-job (requests hang, no error),
/// and in a second daemon it is gone (connections refused). The job in
/// flight is released for the next process.
#[test]
fn sigterm_ends_the_process_within_the_grace_plus_ten_seconds_whatever_chroma_does() {
    use common::stall::StallProxy;
    let mut chroma = Chroma::start();
    let s3 = S3::start();
    let proxy = StallProxy::start(&format!("127.0.0.1:{}", chroma.port));
    let grace = 2;
    // A Chroma client that would wait two minutes for an answer.
    let config = format!("shutdown_grace_seconds = {grace}\n{TEST_CONFIG}")
        .replace("timeout_seconds = 10", "timeout_seconds = 120");
    let bound = Duration::from_secs(grace + 10);

    let mut hung = Daemon::start_with(&format!("http://127.0.0.1:{}", proxy.port), &config, &[]);
    let source = big_object_source(&hung, &s3, "hung");
    let id = hung.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&hung, &id);
    proxy.stall();
    hung.terminate_within(bound);
    let job = stored_job(&hung, &id);
    assert_eq!(
        job.status,
        chroma_syncd::model::JobStatus::Pending,
        "released for the next process"
    );

    let mut orphaned = Daemon::start_with(&chroma.url(), &config, &[]);
    let source = orphaned.create_source(s3_source(&s3, "bulk", "orphaned", None));
    let id = orphaned.invoke(&source, json!({"object_key": "big.md"}));
    wait_mid_job(&orphaned, &id);
    chroma.stop();
    orphaned.terminate_within(bound);
}
