//! `.meta.json` files (Chroma Sync's auto-sync `metadata` mode): a metadata
//! file names an object of the bucket to sync under a custom ID, with
//! metadata, into a collection. Driven end to end by moto's S3 event
//! notifications through SQS, and by `chroma-syncd run --meta-json`.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const REPORT: &str = "# Quarterly report\n\nRevenue grew in every region. The ledger team closed the \
books early.\n\n## Outlook\n\nHiring continues in the second half.\n";
const NOTES: &str = "# Meeting notes\n\nThe team agreed to ship the release on Friday.\n";

fn meta(id: &str, path: &str, extra: Value) -> String {
    let mut file = json!({"version": "chroma-v1", "id": id, "path": path});
    for (key, value) in extra.as_object().unwrap() {
        file[key] = value.clone();
    }
    file.to_string()
}

/// Chroma's answer to a `get` with `where` on a collection of `testdb`.
fn find(chroma: &Chroma, collection: &str, filter: Value) -> Vec<String> {
    let id = chroma.collection("testdb", collection).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let found: Value = http()
        .post(format!(
            "{}/api/v2/tenants/default_tenant/databases/testdb/collections/{id}/get",
            chroma.url()
        ))
        .json(&json!({"where": filter}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    found["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("Chroma's get answered {found}"))
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

/// The IDs `<id>-0` … `<id>-<n-1>`, sorted as the harness sorts records.
fn custom_ids(id: &str, n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|i| format!("{id}-{i}")).collect();
    ids.sort();
    ids
}

/// The newest invocation of each key, once every key has one.
fn latest_jobs(daemon: &Daemon, source_id: &str, keys: &[&str]) -> Value {
    wait_until(
        "an invocation of every key",
        Duration::from_secs(120),
        || {
            let (status, body) = daemon.request(
                Method::POST,
                &format!("/api/v1/sources/{source_id}/invocations/latest-by-keys"),
                Some(json!({"object_keys": keys})),
            );
            assert_eq!(status, 200, "{body}");
            keys.iter()
                .all(|key| body[*key]["id"].is_string())
                .then_some(body)
        },
    )
}

/// Waits until the SQS queue holds no message, visible or in flight:
/// every event sent so far has been consumed.
fn wait_drained(s3: &S3, queue_url: &str) {
    use aws_sdk_sqs::types::QueueAttributeName;
    let sqs = s3.sqs_client();
    wait_until("the event queue to drain", Duration::from_secs(120), || {
        let attributes = runtime().block_on(async {
            sqs.get_queue_attributes()
                .queue_url(queue_url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                .send()
                .await
                .unwrap()
        });
        let attributes = attributes.attributes().cloned().unwrap_or_default();
        let count = |name| {
            attributes
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        (count(QueueAttributeName::ApproximateNumberOfMessages) == 0
            && count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible) == 0)
            .then_some(())
    });
}

#[test]
fn metadata_mode_syncs_only_what_meta_json_files_name_and_a_removed_file_removes_its_document() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("meta");
    let queue_url = s3.event_queue("meta-events", &["meta"]);
    let daemon = Daemon::start(&chroma.url());

    let mut source = s3_source(&s3, "meta", "meta-default", Some("docs/"));
    source["s3"]["auto_sync"] = json!("metadata");
    // Like `direct`, `metadata` needs to know where the events go.
    let (status, body) = daemon.request(Method::POST, "/api/v1/sources", Some(source.clone()));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("sqs_queue_url"),
        "{body}"
    );
    source["s3"]["sqs_queue_url"] = json!(queue_url);
    let id = daemon.create_source(source);

    // A plain upload syncs nothing in this mode.
    s3.put(
        "meta",
        "docs/plain.md",
        "# Plain\n\nNobody names me.\n",
        None,
    );
    s3.put("meta", "docs/report.md", REPORT, None);
    s3.put("meta", "docs/notes.md", NOTES, None);
    // Then the metadata files: one with its own collection and metadata, one
    // in a subfolder taking the source's collection; `path` is a bucket key.
    s3.put(
        "meta",
        "docs/report.meta.json",
        meta(
            "report-2024",
            "docs/report.md",
            json!({"target_collection_name": "reports",
                   "metadata": {"year": 2024, "team": "ledger", "tags": ["finance", "q4"]}}),
        ),
        None,
    );
    s3.put(
        "meta",
        "docs/minutes/notes.meta.json",
        meta("notes-7", "docs/notes.md", json!({})),
        None,
    );
    wait_until(
        "both named documents to be synced",
        Duration::from_secs(180),
        || {
            chroma.collection("testdb", "reports")?;
            chroma.collection("testdb", "meta-default")?;
            let reports = chroma.records("testdb", "reports");
            let default = chroma.records("testdb", "meta-default");
            (!reports.of_key("docs/report.md").is_empty()
                && !default.of_key("docs/notes.md").is_empty())
            .then_some(())
        },
    );
    wait_drained(&s3, &queue_url);

    let reports = chroma.records("testdb", "reports");
    assert_eq!(
        reports.ids(),
        custom_ids("report-2024", reports.rows.len()),
        "chunk IDs are <id>-<n>"
    );
    for record in &reports.rows {
        assert_eq!(record.metadata["custom_id"], "report-2024");
        assert_eq!(record.metadata["document_key"], "docs/report.md");
        assert_eq!(record.metadata["year"], 2024);
        assert_eq!(record.metadata["team"], "ledger");
        assert_eq!(record.metadata["tags"], json!(["finance", "q4"]));
    }
    // The file's metadata is queryable, arrays included.
    assert_eq!(
        find(
            &chroma,
            "reports",
            json!({"tags": {"$contains": "finance"}})
        ),
        reports.ids()
    );
    assert_eq!(
        find(&chroma, "reports", json!({"year": 2024})),
        reports.ids()
    );
    let default = chroma.records("testdb", "meta-default");
    assert_eq!(
        default.ids(),
        custom_ids("notes-7", default.rows.len()),
        "{:?}",
        default.ids()
    );
    // Neither the plain upload nor the metadata files themselves were indexed,
    // though every event has been consumed.
    assert_eq!(
        default.document_keys().into_iter().collect::<Vec<_>>(),
        ["docs/notes.md"]
    );
    assert_eq!(
        reports.document_keys().into_iter().collect::<Vec<_>>(),
        ["docs/report.md"]
    );
    let (_, jobs) = daemon.request(
        Method::GET,
        &format!("/api/v1/invocations?source_id={id}&limit=100"),
        None,
    );
    let jobs = jobs.as_array().unwrap();
    let keys: Vec<&str> = jobs
        .iter()
        .map(|j| j["metadata"]["s3"]["object_key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|key| key.ends_with(".meta.json")),
        "{keys:?}"
    );
    assert!(jobs.iter().all(|j| j["trigger"] == "auto_sync"), "{jobs:?}");

    // A removed metadata file removes its document's chunks, and only those.
    s3.delete("meta", "docs/report.meta.json");
    wait_until(
        "the removed file's document to go",
        Duration::from_secs(120),
        || {
            chroma
                .records("testdb", "reports")
                .rows
                .is_empty()
                .then_some(())
        },
    );
    let default = chroma.records("testdb", "meta-default");
    assert!(!default.of_key("docs/notes.md").is_empty());
    // The removal ends complete, not failed: deleting was the sync.
    let latest = latest_jobs(&daemon, &id, &["docs/report.meta.json"]);
    let removal = latest["docs/report.meta.json"]["id"].as_str().unwrap();
    daemon.wait_complete(removal);
}

#[test]
fn in_direct_mode_meta_json_files_sync_what_they_name_and_bad_ones_fail_with_the_reason() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("mixed");
    // There before the bucket sends events: only its metadata file syncs it
    // (a direct job of it would race the metadata file's, see README).
    s3.put("mixed", "kb/shared/report.txt", REPORT, None);
    let queue_url = s3.event_queue("mixed-events", &["mixed"]);
    let daemon = Daemon::start(&chroma.url());
    let mut source = s3_source(&s3, "mixed", "mixed-docs", Some("kb/"));
    source["s3"]["auto_sync"] = json!("direct");
    source["s3"]["sqs_queue_url"] = json!(queue_url);
    let id = daemon.create_source(source);

    // Other uploads sync directly; a metadata file syncs what it names.
    s3.put(
        "mixed",
        "kb/plain.md",
        "# Plain\n\nSynced directly.\n",
        None,
    );
    s3.put("mixed", "other/notes.md", NOTES, None);
    // Named by a metadata file, outside the prefix: refused.
    s3.put(
        "mixed",
        "kb/outside.meta.json",
        meta("outside", "other/notes.md", json!({})),
        None,
    );
    s3.put(
        "mixed",
        "kb/index/report.meta.json",
        meta(
            "rep-1",
            "kb/shared/report.txt",
            json!({"metadata": {"owner": "ops"}}),
        ),
        None,
    );
    // And the bad ones.
    s3.put(
        "mixed",
        "kb/old.meta.json",
        json!({"version": "chroma-v0", "id": "x", "path": "kb/plain.md"}).to_string(),
        None,
    );
    s3.put("mixed", "kb/broken.meta.json", "{\"version\": ", None);
    s3.put(
        "mixed",
        "kb/reserved.meta.json",
        meta(
            "r",
            "kb/plain.md",
            json!({"metadata": {"chroma_internal": true}}),
        ),
        None,
    );
    s3.put(
        "mixed",
        "kb/no-id.meta.json",
        json!({"version": "chroma-v1", "path": "kb/plain.md"}).to_string(),
        None,
    );
    let padding = "x".repeat(70 * 1024);
    s3.put(
        "mixed",
        "kb/huge.meta.json",
        meta(
            "h",
            "kb/plain.md",
            json!({"metadata": {"padding": padding}}),
        ),
        None,
    );

    let bad = [
        ("kb/outside.meta.json", "outside the source's path_prefix"),
        ("kb/old.meta.json", "only supported version is `chroma-v1`"),
        ("kb/broken.meta.json", "not a valid metadata file"),
        ("kb/reserved.meta.json", "reserved prefix"),
        ("kb/no-id.meta.json", "`id` is missing"),
        ("kb/huge.meta.json", "at most 65536 bytes are read"),
    ];
    let keys: Vec<&str> = bad.iter().map(|(key, _)| *key).collect();
    let latest = latest_jobs(&daemon, &id, &keys);
    for (key, reason) in bad {
        let job = latest[key]["id"].as_str().unwrap();
        let (job, error) = daemon.wait_failed(job, Duration::from_secs(120));
        assert_eq!(job["trigger"], "auto_sync", "{job}");
        assert!(
            error.contains("bad .meta.json file") && error.contains(key),
            "{key}: {error}"
        );
        assert!(error.contains(reason), "{key}: {error}");
    }

    let latest = latest_jobs(&daemon, &id, &["kb/plain.md", "kb/index/report.meta.json"]);
    for key in ["kb/plain.md", "kb/index/report.meta.json"] {
        daemon.wait_complete(latest[key]["id"].as_str().unwrap());
    }
    let records = chroma.records("testdb", "mixed-docs");
    let plain = records.of_key("kb/plain.md");
    assert_eq!(plain.len(), 1);
    assert_eq!(plain[0].id, format!("{}-0", sha256_hex("kb/plain.md")));
    let report = records.of_key("kb/shared/report.txt");
    assert!(!report.is_empty());
    for record in &report {
        assert!(record.id.starts_with("rep-1-"), "{}", record.id);
        assert_eq!(record.metadata["owner"], "ops");
    }
    // Nothing bad got in: not the bad files' targets under their IDs, not
    // the files themselves, not the object outside the prefix.
    assert_eq!(
        records.document_keys().into_iter().collect::<Vec<_>>(),
        ["kb/plain.md", "kb/shared/report.txt"]
    );

    // A metadata file changed to another ID moves the document.
    s3.put(
        "mixed",
        "kb/index/report.meta.json",
        meta(
            "rep-2",
            "kb/shared/report.txt",
            json!({"metadata": {"owner": "finance"}}),
        ),
        None,
    );
    wait_until(
        "the document to move to its new ID",
        Duration::from_secs(120),
        || {
            let records = chroma.records("testdb", "mixed-docs");
            let report = records.of_key("kb/shared/report.txt");
            (!report.is_empty() && report.iter().all(|r| r.id.starts_with("rep-2-"))).then_some(())
        },
    );
    let records = chroma.records("testdb", "mixed-docs");
    assert!(
        records
            .of_key("kb/shared/report.txt")
            .iter()
            .all(|r| r.metadata["owner"] == "finance")
    );
    assert!(records.rows.iter().all(|r| !r.id.starts_with("rep-1-")));

    // The document re-uploaded on its own: its upload event's job syncs it
    // through the metadata file that names it, so it keeps that file's ID
    // and metadata rather than becoming a `<sha256>-<n>` document.
    s3.put(
        "mixed",
        "kb/shared/report.txt",
        format!("{REPORT}\n\nAddendum: the kestrel audit closed.\n"),
        None,
    );
    wait_until(
        "the re-uploaded document to be synced",
        Duration::from_secs(120),
        || {
            let records = chroma.records("testdb", "mixed-docs");
            let report = records.of_key("kb/shared/report.txt");
            report
                .iter()
                .any(|r| r.document.contains("kestrel audit closed"))
                .then_some(())
        },
    );
    let records = chroma.records("testdb", "mixed-docs");
    for record in records.of_key("kb/shared/report.txt") {
        assert!(record.id.starts_with("rep-2-"), "{}", record.id);
        assert_eq!(record.metadata["owner"], "finance");
    }
    assert!(
        daemon
            .log()
            .contains("object synced through its metadata file")
    );
}

#[test]
fn run_with_meta_json_backfills_what_the_prefix_meta_json_files_name() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("backfill");
    s3.put("backfill", "lib/report.md", REPORT, None);
    s3.put("backfill", "lib/notes.md", NOTES, None);
    s3.put(
        "backfill",
        "lib/cards/report.meta.json",
        meta(
            "card-report",
            "lib/report.md",
            json!({"metadata": {"shelf": 3, "genres": ["finance"]}}),
        ),
        None,
    );
    let state = tempfile::tempdir().unwrap();
    let source = s3_source(&s3, "backfill", "library", Some("lib/"));
    let source_file = state.path().join("source.json");
    std::fs::write(&source_file, source.to_string()).unwrap();
    let run = |extra: &[&str]| {
        binary(&chroma.url(), state.path())
            .args(["run", "--source"])
            .arg(format!("@{}", source_file.display()))
            .args(extra)
            .output()
            .unwrap()
    };
    let describe = |output: &std::process::Output| {
        format!(
            "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    };

    let output = run(&["--meta-json"]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("synced 1 documents"),
        "{}",
        describe(&output)
    );
    let records = chroma.records("testdb", "library");
    // Only the named object, under its ID and metadata; the unnamed one and
    // the metadata file were not synced.
    assert_eq!(
        records.document_keys().into_iter().collect::<Vec<_>>(),
        ["lib/report.md"]
    );
    assert_eq!(records.ids(), custom_ids("card-report", records.rows.len()));
    for record in &records.rows {
        assert_eq!(record.metadata["shelf"], 3);
        assert_eq!(record.metadata["genres"], json!(["finance"]));
    }

    // A bad file fails the run, naming it and why; the good one is unchanged.
    s3.put(
        "backfill",
        "lib/cards/bad.meta.json",
        meta("bad", "elsewhere/x.md", json!({})),
        None,
    );
    let output = run(&["--meta-json", "--keep-going"]);
    assert!(!output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("failed: lib/cards/bad.meta.json")
            && stdout.contains("outside the source's path_prefix"),
        "{}",
        describe(&output)
    );
    let again = chroma.records("testdb", "library");
    assert_eq!(again.ids(), records.ids());
    for (before, after) in records.rows.iter().zip(&again.rows) {
        assert_eq!(before.embedding, after.embedding);
    }
}
