//! Several auto-synced sources on one SQS queue (one queue per region is
//! the usual setup): each consumer deletes only the messages it handled, so
//! no source loses another's events.

mod common;

use std::time::Duration;

use common::{Chroma, Daemon, S3, runtime, s3_source, wait_until};
use serde_json::json;

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
    for (bucket, prefix, collection) in sources {
        let mut source = s3_source(&s3, bucket, collection, prefix);
        source["s3"]["auto_sync"] = json!("direct");
        source["s3"]["sqs_queue_url"] = json!(queue_url);
        daemon.create_source(source);
    }
    // Every consumer is polling before the first event arrives.
    wait_until("three consumers to start", Duration::from_secs(30), || {
        (daemon
            .log()
            .matches("auto-sync: consuming S3 events")
            .count()
            >= 3)
            .then_some(())
    });

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
