//! The Chroma seam against the real server (`chroma run`): what a filter
//! asks Chroma and what it checks on the answer, and upserts that go
//! together while one is in flight.

mod common;

use chroma_syncd::config::ChromaConfig;
use chroma_syncd::sink::chroma::{ChromaClient, CollectionHandle, EmbeddingSpec};
use chroma_syncd::sink::records::{Filter, Record};
use common::{Chroma, runtime};
use serde_json::{Map, Value, json};

fn client(chroma: &Chroma) -> ChromaClient {
    ChromaClient::new(&ChromaConfig {
        url: chroma.url(),
        ..ChromaConfig::default()
    })
    .unwrap()
}

/// A client reading pages of 300 records, the most Chroma Cloud returns.
fn client_with_cloud_pages(chroma: &Chroma) -> ChromaClient {
    ChromaClient::new(&ChromaConfig {
        url: chroma.url(),
        read_page_size: 300,
        ..ChromaConfig::default()
    })
    .unwrap()
}

async fn collection(client: &ChromaClient, name: &str) -> CollectionHandle {
    let function = json!({"type": "known", "name": "openai", "config": {"model_name": "tiny-3"}});
    client
        .ensure_collection(
            "default_database",
            name,
            EmbeddingSpec {
                model: "tiny-3",
                dimension: 3,
                function: &function,
                metadata: Map::new(),
                sparse: None,
            },
        )
        .await
        .unwrap()
}

/// Chunk `index` of `key` as source `source` writes it, embedded by `model`.
fn chunk(source: &str, key: &str, index: usize, model: &str) -> Record {
    let metadata = json!({
        "source_id": source,
        "document_key": key,
        "chunk_index": index,
        "content_sha256": format!("sha-{key}-{index}"),
        "embedding_model": model,
    });
    Record {
        id: format!("{source}/{key}-{index}"),
        document: format!("{key} chunk {index}"),
        metadata: metadata.as_object().unwrap().clone(),
    }
}

fn vectors(records: &[Record]) -> Vec<Vec<f32>> {
    (0..records.len())
        .map(|i| vec![1.0, i as f32, 0.5])
        .collect()
}

async fn write(client: &ChromaClient, collection: &CollectionHandle, records: &[Record]) {
    for batch in records.chunks(300) {
        client
            .upsert(collection, batch, &vectors(batch))
            .await
            .unwrap();
    }
}

fn ids(found: &[(String, Map<String, Value>)]) -> Vec<String> {
    let mut ids: Vec<String> = found.iter().map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids
}

#[test]
fn a_sources_document_is_found_past_pages_of_another_sources_document_of_that_name() {
    let chroma = Chroma::start();
    let client = client_with_cloud_pages(&chroma);
    runtime().block_on(async {
        let shared = collection(&client, "shared").await;
        // Another source wrote README.md first, in more chunks than four
        // pages of answers (300 each, `[chroma] read_page_size`): Chroma is
        // asked for the key alone, so ours come after all of theirs.
        let theirs: Vec<Record> = (0..1205)
            .map(|i| chunk("theirs", "README.md", i, "tiny-3"))
            .collect();
        write(&client, &shared, &theirs).await;
        let ours: Vec<Record> = (0..3)
            .map(|i| chunk("ours", "README.md", i, "tiny-3"))
            .collect();
        write(&client, &shared, &ours).await;

        let document = Filter::document("ours", "README.md", None);
        let found = client
            .find(&shared, &document, 1, "finding ours")
            .await
            .unwrap();
        assert_eq!(found.len(), 1, "one of ours, not one of theirs");
        assert_eq!(found[0].1["source_id"], "ours");
        let all = client.scan_all(&shared, &document, "ours").await.unwrap();
        assert_eq!(
            ids(&all),
            vec!["ours/README.md-0", "ours/README.md-1", "ours/README.md-2"]
        );

        // Removing our chunks from 1 on leaves our first and all of theirs.
        let removed = client
            .delete_matching(
                &shared,
                &Filter::document_from("ours", "README.md", None, 1),
                "trimming ours",
            )
            .await
            .unwrap();
        assert_eq!(removed, 2);
        let left = client
            .scan_all(&shared, &Filter::source("theirs"), "theirs")
            .await
            .unwrap();
        assert_eq!(left.len(), 1205, "another source's chunks are kept");
        let ours_left = client.scan_all(&shared, &document, "ours").await.unwrap();
        assert_eq!(ids(&ours_left), vec!["ours/README.md-0"]);

        // A version lookup pages the same way.
        let at = Filter::document_at("ours", "README.md", None, "none");
        assert!(
            client.find(&shared, &at, 1, "at").await.unwrap().is_empty(),
            "no chunk of ours at a version it never had"
        );
    });
}

#[test]
fn stored_vectors_are_reused_only_from_the_same_model() {
    let chroma = Chroma::start();
    let client = client(&chroma);
    runtime().block_on(async {
        let shared = collection(&client, "models").await;
        // The same input embedded by another model first, then by ours.
        let other = vec![chunk("a", "x.md", 0, "other-model")];
        write(&client, &shared, &other).await;
        let ours = vec![chunk("b", "x.md", 0, "tiny-3")];
        write(&client, &shared, &ours).await;
        let same = Filter::same_input("tiny-3", &["sha-x.md-0".to_string()]);
        let found = client
            .embeddings_matching(&shared, &same, 1, "reuse")
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0["embedding_model"], "tiny-3");
        let none = Filter::same_input("third-model", &["sha-x.md-0".to_string()]);
        assert!(
            client
                .embeddings_matching(&shared, &none, 1, "reuse")
                .await
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn documents_written_at_once_are_all_stored_whether_or_not_they_went_together() {
    let chroma = Chroma::start();
    let client = client(&chroma);
    runtime().block_on(async {
        let target = collection(&client, "together").await;
        // Forty documents of ten chunks, written by forty tasks at once:
        // writes that queue behind one in flight share a request.
        let writes = (0..40).map(|d| {
            let client = client.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let key = format!("doc-{d}.md");
                let records: Vec<Record> = (0..10).map(|i| chunk("s", &key, i, "tiny-3")).collect();
                client.upsert(&target, &records, &vectors(&records)).await
            })
        });
        for write in futures::future::join_all(writes).await {
            write.unwrap().unwrap();
        }
        let stored = client
            .scan_all(&target, &Filter::source("s"), "all")
            .await
            .unwrap();
        assert_eq!(stored.len(), 400);
        for d in 0..40 {
            let key = format!("doc-{d}.md");
            let found = client
                .scan_all(&target, &Filter::document("s", &key, None), "one")
                .await
                .unwrap();
            assert_eq!(found.len(), 10, "{key}");
            // Each record kept its own text and metadata.
            for (id, metadata) in &found {
                assert_eq!(metadata["document_key"], key.as_str(), "{id}");
            }
        }

        // A write Chroma refuses (here: a metadata value it cannot store)
        // fails alone; the writes that went with it are stored.
        let mut bad = chunk("s", "bad.md", 0, "tiny-3");
        bad.metadata
            .insert("nested".into(), json!({"not": "allowed"}));
        let good: Vec<Vec<Record>> = (0..6)
            .map(|d| vec![chunk("s", &format!("good-{d}.md"), 0, "tiny-3")])
            .collect();
        let mut writes: Vec<_> = good
            .iter()
            .map(|records| {
                let client = client.clone();
                let target = target.clone();
                let records = records.clone();
                tokio::spawn(
                    async move { client.upsert(&target, &records, &vectors(&records)).await },
                )
            })
            .collect();
        let bad_write = {
            let client = client.clone();
            let target = target.clone();
            tokio::spawn(async move {
                client
                    .upsert(
                        &target,
                        std::slice::from_ref(&bad),
                        &vectors(&[bad.clone()]),
                    )
                    .await
            })
        };
        writes.insert(3, bad_write);
        let results: Vec<_> = futures::future::join_all(writes)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert!(results[3].is_err(), "the refused write fails");
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 6);
        for d in 0..6 {
            let found = client
                .scan_all(
                    &target,
                    &Filter::document("s", &format!("good-{d}.md"), None),
                    "good",
                )
                .await
                .unwrap();
            assert_eq!(found.len(), 1, "good-{d}.md is stored");
        }
    });
}
