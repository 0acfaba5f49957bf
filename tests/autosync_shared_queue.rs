//! Several auto-synced sources on one SQS queue (one queue per region is
//! the usual setup): whichever consumer receives a message enqueues it for
//! every source it belongs to and deletes it once, so no source loses
//! another's events — not even to a dead-letter queue.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use common::{Chroma, Daemon, S3, runtime, s3_source, wait_until};
use serde_json::json;

/// Creates an auto-synced source on `queue_url` per (bucket, prefix,
/// collection), then waits until every consumer is polling, so none misses
/// the first event.
fn auto_synced_sources(
    daemon: &Daemon,
    s3: &S3,
    queue_url: &str,
    sources: &[(&str, Option<&str>, &str)],
) {
    for (bucket, prefix, collection) in sources {
        let mut source = s3_source(s3, bucket, collection, *prefix);
        source["s3"]["auto_sync"] = json!("direct");
        source["s3"]["sqs_queue_url"] = json!(queue_url);
        daemon.create_source(source);
    }
    wait_until("every consumer to start", Duration::from_secs(30), || {
        (daemon
            .log()
            .matches("auto-sync: consuming S3 events")
            .count()
            >= sources.len())
        .then_some(())
    });
}

#[test]
fn two_sources_sharing_one_queue_both_sync_their_objects() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("handbook");
    s3.create_bucket("blog");
    // Both buckets notify the one regional queue.
    let queue_url = s3.event_queue("region-events", &["handbook", "blog"]);
    let sqs = s3.sqs_client();
    let daemon = Daemon::start(&chroma.url());

    // Two teams' sources: one bucket under two prefixes, and another bucket.
    let sources = [
        ("handbook", Some("guides/"), "guides"),
        ("handbook", Some("policies/"), "policies"),
        ("blog", None, "posts"),
    ];
    auto_synced_sources(&daemon, &s3, &queue_url, &sources);

    let mut expected = Vec::new();
    for i in 0..4 {
        for (bucket, key, collection) in [
            ("handbook", format!("guides/guide-{i}.md"), "guides"),
            ("handbook", format!("policies/policy-{i}.md"), "policies"),
            ("blog", format!("post-{i}.md"), "posts"),
        ] {
            s3.put(
                bucket,
                &key,
                format!("# {key}\n\nThe text of {key}.\n"),
                None,
            );
            expected.push((collection, key));
        }
    }
    // Outside every prefix: nobody's, deleted rather than passed around.
    s3.put("handbook", "drafts/idea.md", "# Idea\n", None);

    wait_until(
        "every object of every source to be synced",
        Duration::from_secs(180),
        || {
            expected
                .iter()
                .all(|(collection, key)| {
                    chroma.collection("testdb", collection).is_some()
                        && !chroma.records("testdb", collection).of_key(key).is_empty()
                })
                .then_some(())
        },
    );
    for collection in ["guides", "policies", "posts"] {
        let records = chroma.records("testdb", collection);
        let foreign: Vec<_> = records
            .rows
            .iter()
            .filter(|r| {
                !expected
                    .iter()
                    .any(|(c, k)| *c == collection && r.metadata["document_key"] == k.as_str())
            })
            .map(|r| r.metadata["document_key"].clone())
            .collect();
        assert!(foreign.is_empty(), "{collection} holds {foreign:?}");
    }
    // The queue drains: handled and unwanted messages are deleted, none is
    // left circulating between the consumers.
    wait_until("the queue to drain", Duration::from_secs(60), || {
        let attributes = runtime().block_on(async {
            sqs.get_queue_attributes()
                .queue_url(&queue_url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
                .send()
                .await
                .unwrap()
        });
        let count = |name| {
            attributes
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        };
        (count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages) == 0
            && count(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
                == 0)
            .then_some(())
    });

    // A team adds a source on the queue and writes at once, before the other
    // consumers have heard of it: they must not delete its first event as
    // nobody's.
    let mut faq = s3_source(&s3, "handbook", "faq", Some("faq/"));
    faq["s3"]["auto_sync"] = json!("direct");
    faq["s3"]["sqs_queue_url"] = json!(queue_url);
    daemon.create_source(faq);
    s3.put(
        "handbook",
        "faq/first.md",
        "# First\n\nThe first answer.\n",
        None,
    );
    wait_until(
        "the new source's first object to be synced",
        Duration::from_secs(120),
        || {
            chroma
                .collection("testdb", "faq")
                .is_some_and(|_| {
                    !chroma
                        .records("testdb", "faq")
                        .of_key("faq/first.md")
                        .is_empty()
                })
                .then_some(())
        },
    );
}

/// Issue 31: releasing another source's message raised its receive count,
/// so with a redrive policy an event could reach the dead-letter queue
/// before its owner saw it. Each message is received once and handled for
/// its owners: with `maxReceiveCount = 1` nothing is dead-lettered and
/// every source syncs its objects.
#[test]
fn a_redrive_policy_never_dead_letters_a_live_sources_event() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("shared");
    let sqs = s3.sqs_client();
    let dead = runtime().block_on(async {
        let url = sqs
            .create_queue()
            .queue_name("events-dlq")
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap();
        let arn = attributes.attributes().unwrap()[&QueueAttributeName::QueueArn].clone();
        (url, arn)
    });
    let policy = format!(
        r#"{{"deadLetterTargetArn": "{}", "maxReceiveCount": "1"}}"#,
        dead.1
    );
    let queue_url = s3.event_queue_with(
        "strict-events",
        &["shared"],
        &[(QueueAttributeName::RedrivePolicy, policy)],
    );
    let daemon = Daemon::start(&chroma.url());
    let teams = [("alpha/", "alpha"), ("beta/", "beta"), ("gamma/", "gamma")];
    let sources = teams.map(|(prefix, collection)| ("shared", Some(prefix), collection));
    auto_synced_sources(&daemon, &s3, &queue_url, &sources);
    let mut expected = Vec::new();
    for i in 0..3 {
        for (prefix, collection) in teams {
            let key = format!("{prefix}note-{i}.md");
            s3.put(
                "shared",
                &key,
                format!("# {key}\n\nWritten by {collection}.\n"),
                None,
            );
            expected.push((collection, key));
        }
    }
    wait_until(
        "every team's objects to be synced",
        Duration::from_secs(180),
        || {
            expected
                .iter()
                .all(|(collection, key)| {
                    chroma.collection("testdb", collection).is_some()
                        && !chroma.records("testdb", collection).of_key(key).is_empty()
                })
                .then_some(())
        },
    );
    let dead_letters = runtime().block_on(async {
        sqs.receive_message()
            .queue_url(&dead.0)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default()
            .len()
    });
    assert_eq!(dead_letters, 0, "live sources' events were dead-lettered");
}
