//! Invocations nobody asks for by hand: a cron schedule (seed 004) that
//! fires once per slot however many daemons share the queue, and S3 event
//! notifications from SQS (`auto_sync: "direct"`) that sync what was
//! created and remove what was deleted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// A markdown document that takes a few seconds to embed.
fn long_document(sections: usize) -> String {
    (0..sections)
        .map(|i| {
            let words: String = (0..90)
                .map(|w| format!("term{} ", (i * 13 + w) % 700))
                .collect();
            format!("## Part {i}\n\n{words}\n\n")
        })
        .collect()
}

fn slots(daemon: &Daemon, source: &str) -> Vec<Value> {
    let (status, body) = daemon.request(
        reqwest::Method::GET,
        &format!("/api/v1/sources/{source}/schedule/slots?limit=1000"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["slots"].as_array().unwrap().clone()
}

#[test]
fn a_schedule_fires_once_per_slot_across_two_daemons_and_skips_while_a_run_is_going() {
    let database = PgDatabase::create();
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("nightly");
    // Big enough (~700 chunks) that the first run — the one that embeds —
    // spans several 2-second slots even with the fastest embedder; later
    // runs re-embed nothing and are quick.
    s3.put("nightly", "report.md", long_document(400), None);
    let env = [("CHROMA_SYNCD_QUEUE_URL", database.url.as_str())];
    // Schedules every two seconds: the operator lowers the one-minute floor.
    let config = format!("{TEST_CONFIG}\n[api]\nmin_schedule_interval_seconds = 1\n");
    let mut first = Daemon::start_with(&chroma.url(), &config, &env);
    let mut second = Daemon::start_with(&chroma.url(), &config, &env);

    // A bad schedule is refused up front.
    let mut source = s3_source(&s3, "nightly", "scheduled", None);
    source["schedule"] = json!({"cron": "*/2 * * * * *", "time_zone": "Atlantis/Nowhere"});
    let (status, body) = first.request(
        reqwest::Method::POST,
        "/api/v1/sources",
        Some(source.clone()),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("time_zone"),
        "{body}"
    );

    // Every two seconds, in a real time zone.
    source["schedule"] = json!({"cron": "*/2 * * * * *", "time_zone": "Europe/Paris"});
    let id = first.create_source(source);
    let (_, got) = second.request(reqwest::Method::GET, &format!("/api/v1/sources/{id}"), None);
    assert_eq!(got["schedule"]["cron"], "*/2 * * * * *", "{got}");

    // Until a run completed after a slot was skipped for it. Slots are
    // remembered across looks, so a slow machine (a long first run, many
    // skipped slots) cannot hide the first enqueued one.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    wait_until(
        "a skipped slot and two runs",
        Duration::from_secs(300),
        || {
            for slot in slots(&first, &id) {
                seen.insert(
                    slot["slot"].as_str().unwrap().to_string(),
                    slot["outcome"].as_str().unwrap().to_string(),
                );
            }
            let enqueued = seen.values().filter(|o| *o == "enqueued").count();
            let skipped = seen.values().filter(|o| *o == "skipped").count();
            (enqueued >= 2 && skipped >= 1).then_some(())
        },
    );
    assert!(first.terminate().success());
    assert!(second.terminate().success());
    first.restart();

    let slots = slots(&first, &id);
    let times: BTreeSet<&str> = slots.iter().map(|s| s["slot"].as_str().unwrap()).collect();
    assert_eq!(
        times.len(),
        slots.len(),
        "no slot recorded twice: {slots:?}"
    );
    for slot in &slots {
        let seconds: u32 = slot["slot"].as_str().unwrap()[17..19].parse().unwrap();
        assert_eq!(seconds % 2, 0, "slots fall on the schedule: {slot}");
    }
    let (_, jobs) = first.request(
        reqwest::Method::GET,
        &format!("/api/v1/invocations?source_id={id}&limit=100"),
        None,
    );
    let jobs = jobs.as_array().unwrap();
    let enqueued: u64 = slots
        .iter()
        .filter(|s| s["outcome"] == "enqueued")
        .map(|s| s["jobs"].as_u64().unwrap())
        .sum();
    // A slot claimed as the daemons stopped may hold its job unrecorded.
    let claimed = slots.iter().filter(|s| s["outcome"] == "claimed").count() as u64;
    let count = jobs.len() as u64;
    assert!(
        enqueued <= count && count <= enqueued + claimed,
        "one invocation per fired slot: {slots:?} {jobs:?}"
    );
    assert!(jobs.iter().all(|j| j["trigger"] == "scheduled"), "{jobs:?}");
    // A slot after the first run finished found report.md stored at the
    // version the bucket lists: it made no job.
    assert!(
        slots.iter().any(|s| s["outcome"] == "enqueued"
            && s["jobs"] == 0
            && s["message"]
                .as_str()
                .is_some_and(|m| m.contains("1 documents unchanged"))),
        "{slots:?}"
    );
    assert!(
        jobs.iter().any(|j| j["status"]["complete"].is_object()),
        "{jobs:?}"
    );
    assert!(
        !chroma
            .records("testdb", "scheduled")
            .of_key("report.md")
            .is_empty()
    );
}

#[test]
fn s3_event_notifications_sync_created_objects_and_remove_deleted_ones() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("live");
    let queue_url = s3.event_queue("live-events", &["live"]);
    let daemon = Daemon::start(&chroma.url());

    // `direct` needs to know where the events go.
    let mut source = s3_source(&s3, "live", "live-docs", Some("docs/"));
    source["s3"]["auto_sync"] = json!("direct");
    let (status, body) = daemon.request(
        reqwest::Method::POST,
        "/api/v1/sources",
        Some(source.clone()),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("sqs_queue_url"),
        "{body}"
    );
    source["s3"]["sqs_queue_url"] = json!(queue_url);
    let id = daemon.create_source(source);

    s3.put(
        "live",
        "docs/hello world.md",
        "# Hello\n\nCreated after the source.\n",
        None,
    );
    s3.put("live", "docs/keep.md", "# Keep\n\nThis one stays.\n", None);
    s3.put("live", "elsewhere/skip.md", "# Outside the prefix\n", None);
    wait_until(
        "both objects to be synced",
        Duration::from_secs(120),
        || {
            chroma.collection("testdb", "live-docs")?;
            let records = chroma.records("testdb", "live-docs");
            (!records.of_key("docs/hello world.md").is_empty()
                && !records.of_key("docs/keep.md").is_empty())
            .then_some(())
        },
    );

    s3.delete("live", "docs/hello world.md");
    wait_until(
        "the deleted object's chunks to go",
        Duration::from_secs(120),
        || {
            chroma
                .records("testdb", "live-docs")
                .of_key("docs/hello world.md")
                .is_empty()
                .then_some(())
        },
    );
    let records = chroma.records("testdb", "live-docs");
    assert!(!records.of_key("docs/keep.md").is_empty());
    assert!(records.of_key("elsewhere/skip.md").is_empty());

    let (_, jobs) = daemon.request(
        reqwest::Method::GET,
        &format!("/api/v1/invocations?source_id={id}&limit=100"),
        None,
    );
    let jobs = jobs.as_array().unwrap();
    assert!(jobs.len() >= 3, "{jobs:?}");
    assert!(jobs.iter().all(|j| j["trigger"] == "auto_sync"), "{jobs:?}");
    // The removal ends complete, not failed: deleting was the sync.
    wait_until(
        "every auto-sync job to finish",
        Duration::from_secs(60),
        || {
            let (_, jobs) = daemon.request(
                reqwest::Method::GET,
                &format!("/api/v1/invocations?source_id={id}&limit=100"),
                None,
            );
            let jobs = jobs.as_array().unwrap().clone();
            jobs.iter()
                .all(|j| j["status"]["complete"].is_object())
                .then_some(())
        },
    );
}

/// Every job of `source` so far.
fn jobs_of(daemon: &Daemon, source: &str) -> Vec<Value> {
    let (_, jobs) = daemon.request(
        reqwest::Method::GET,
        &format!("/api/v1/invocations?source_id={source}&limit=200"),
        None,
    );
    jobs.as_array().unwrap().clone()
}

/// The text a key's chunks hold now.
fn text_of(chroma: &Chroma, collection: &str, key: &str) -> String {
    chroma
        .records("testdb", collection)
        .of_key(key)
        .iter()
        .map(|record| record.document.clone())
        .collect()
}

/// Issue 30: an event consumer reconciles when it starts. Objects written
/// before the bucket sent events raise none; nor do changes whose events
/// were lost while no daemon listened (here: drained, as a queue's
/// retention or a dead-letter queue would). After creation and after a
/// restart the source catches up anyway — new and edited objects synced,
/// deleted ones removed — and what did not change gets no job. A bucket
/// that suddenly lists nothing removes nothing.
#[test]
fn s3_auto_sync_catches_up_with_what_changed_before_the_source_and_while_no_daemon_listened() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("catchup");
    s3.put(
        "catchup",
        "docs/before.md",
        "# Before\n\nThere before the source.\n",
        None,
    );
    s3.put(
        "catchup",
        "docs/doomed.md",
        "# Doomed\n\nDeleted while down.\n",
        None,
    );
    s3.put(
        "catchup",
        "docs/edited.md",
        "# Edited\n\nThe first version.\n",
        None,
    );
    // A key no invocation may name: left out, and the rest still syncs.
    s3.put("catchup", "docs/../escape.md", "# Escape\n", None);
    // Set up after the uploads: none of them is an event.
    let queue_url = s3.event_queue("catchup-events", &["catchup"]);
    let mut daemon = Daemon::start(&chroma.url());
    let mut source = s3_source(&s3, "catchup", "catchup-docs", Some("docs/"));
    source["s3"]["auto_sync"] = json!("direct");
    source["s3"]["sqs_queue_url"] = json!(queue_url);
    let id = daemon.create_source(source);
    let keys = ["docs/before.md", "docs/doomed.md", "docs/edited.md"];
    wait_until(
        "the objects there before the source to be synced",
        Duration::from_secs(120),
        || {
            chroma.collection("testdb", "catchup-docs")?;
            let records = chroma.records("testdb", "catchup-docs");
            keys.iter()
                .all(|key| !records.of_key(key).is_empty())
                .then_some(())
        },
    );
    assert!(
        jobs_of(&daemon, &id)
            .iter()
            .all(|job| job["trigger"] == "auto_sync")
    );
    assert!(
        daemon
            .log()
            .contains("left out 1: object_key `docs/../escape.md` has a `.` or `..` segment"),
        "{}",
        daemon.log()
    );

    // Down: one object edited, one deleted, one created; their events lost.
    daemon.terminate();
    s3.put(
        "catchup",
        "docs/edited.md",
        "# Edited\n\nThe second version.\n",
        None,
    );
    s3.delete("catchup", "docs/doomed.md");
    s3.put(
        "catchup",
        "docs/new.md",
        "# New\n\nWritten while down.\n",
        None,
    );
    assert!(s3.drain(&queue_url) > 0, "the changes' events, lost");
    daemon.restart();
    wait_until(
        "the restarted daemon to catch up",
        Duration::from_secs(120),
        || {
            let records = chroma.records("testdb", "catchup-docs");
            (records.of_key("docs/doomed.md").is_empty()
                && !records.of_key("docs/new.md").is_empty()
                && text_of(&chroma, "catchup-docs", "docs/edited.md").contains("second version"))
            .then_some(())
        },
    );
    assert!(
        !chroma
            .records("testdb", "catchup-docs")
            .of_key("docs/before.md")
            .is_empty()
    );
    wait_until("every job to finish", Duration::from_secs(60), || {
        jobs_of(&daemon, &id)
            .iter()
            .all(|job| job["status"]["complete"].is_object())
            .then_some(())
    });
    // The reconciliation did it, not events: a job per change, one of them
    // a removal, and none for what did not change.
    assert!(
        daemon.log().contains(
            "3 jobs enqueued (1 to remove documents gone from the source), 1 documents unchanged"
        ),
        "{}",
        daemon.log()
    );
    // Unchanged since it was stored: one job ever, the first one.
    let jobs = jobs_of(&daemon, &id);
    let before = jobs
        .iter()
        .filter(|job| job["metadata"]["s3"]["object_key"] == "docs/before.md")
        .count();
    assert_eq!(before, 1, "{jobs:#?}");

    // A bucket that suddenly lists nothing (a policy hiding the prefix, a
    // wrong account) is likelier a fault than the truth: nothing removed.
    daemon.terminate();
    for key in [
        "docs/before.md",
        "docs/edited.md",
        "docs/new.md",
        "docs/../escape.md",
    ] {
        s3.delete("catchup", key);
    }
    assert!(s3.drain(&queue_url) > 0);
    daemon.restart();
    wait_until(
        "the refused removal to be logged",
        Duration::from_secs(120),
        || {
            daemon
                .log()
                .contains("kept the gone documents")
                .then_some(())
        },
    );
    let records = chroma.records("testdb", "catchup-docs");
    for key in ["docs/before.md", "docs/edited.md", "docs/new.md"] {
        assert!(!records.of_key(key).is_empty(), "{key} was removed");
    }
}
