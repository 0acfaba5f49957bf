//! Never the same text embedded twice (issue 33): a corpus full of copies
//! (the same handbook under two folders, a license header in every file)
//! costs the embedding endpoint only its distinct chunks, and the vectors
//! stored are the ones embedding every chunk would have stored, byte for
//! byte. A copy added after a restart reuses the collection's own vectors.

mod common;

use std::path::Path;
use std::time::Duration;

use common::openai::{EmbeddingServer, Vectors};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "sk-reuse-test-key";
const MODEL: &str = "test/hashed-embedder";

fn daemon(chroma: &Chroma, root: &Path, server: &EmbeddingServer, reuse: bool) -> Daemon {
    let config = format!(
        "{TEST_CONFIG}\n[embedding.models.\"{MODEL}\"]\nkind = \"openai\"\nurl = \"{}\"\n\
         api_model = \"hashed\"\napi_key_env = \"ENDPOINT_KEY\"\nmax_batch = 16\n",
        server.url
    );
    Daemon::start_with(
        &chroma.url(),
        &config,
        &[
            (
                "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
                root.to_str().unwrap(),
            ),
            ("ENDPOINT_KEY", KEY),
            (
                "CHROMA_SYNCD_EMBEDDING_REUSE",
                if reuse { "true" } else { "false" },
            ),
        ],
    )
}

/// Writes `copies` copies of a small handbook (each page with the same
/// license footer) under `root/copy-<n>/`.
fn handbook(root: &Path, copies: usize) {
    for copy in 0..copies {
        let dir = root.join(format!("copy-{copy}"));
        std::fs::create_dir_all(&dir).unwrap();
        for page in 0..4 {
            std::fs::write(
                dir.join(format!("page-{page}.md")),
                format!(
                    "# Page {page}\n\nThe keeper of lighthouse {page} logs every storm, \
                     every ship and every repair of the lamp.\n\n## License\n\nThis handbook \
                     is licensed to the harbour authority; copies must keep this notice.\n"
                ),
            )
            .unwrap();
        }
    }
}

/// What the endpoint was asked to embed, without the daemon's one-off
/// dimension probe.
fn chunk_inputs(server: &EmbeddingServer) -> Vec<String> {
    server
        .inputs()
        .into_iter()
        .filter(|input| input != "dimension probe")
        .collect()
}

fn sync(daemon: &Daemon, root: &Path, collection: &str) -> Value {
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "filesystem": {"root": root.to_str().unwrap(), "collection_name": collection},
        "embedding": {"dense": {"model": MODEL}},
    }));
    daemon.wait_complete(&daemon.invoke(&source, json!({})))
}

#[test]
fn duplicate_chunks_are_embedded_once_with_the_same_vectors() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("docs");
    handbook(&root, 3);

    // Every chunk embedded: the reference.
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let plain = daemon(&chroma, allowed.path(), &server, false);
    let job = sync(&plain, &root, "every-chunk");
    let every = chunk_inputs(&server).len();
    let upserted = job["stats"]["chunks_upserted"].as_u64().unwrap() as usize;
    assert_eq!(every, upserted, "{job}");
    drop(plain);

    // With reuse: each distinct input once.
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let daemon_ = daemon(&chroma, allowed.path(), &server, true);
    let job = sync(&daemon_, &root, "reused");
    let inputs = chunk_inputs(&server);
    let distinct: std::collections::BTreeSet<&String> = inputs.iter().collect();
    assert_eq!(
        inputs.len(),
        distinct.len(),
        "an input was embedded twice: {job} {inputs:?}"
    );
    assert!(
        inputs.len() * 3 <= every + 2,
        "three copies should cost one: {} inputs for {every} chunks",
        inputs.len()
    );
    assert_eq!(
        job["stats"]["chunks_embedding_reused"].as_u64().unwrap() as usize,
        upserted - inputs.len(),
        "{job}"
    );

    // The same records, the same vectors, byte for byte.
    let bits = |records: &Records| {
        records
            .rows
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.embedding.iter().map(|x| x.to_bits()).collect(),
                )
            })
            .collect::<std::collections::BTreeMap<String, Vec<u32>>>()
    };
    let reference = bits(&chroma.records("testdb", "every-chunk"));
    assert_eq!(reference.len(), upserted);
    assert_eq!(reference, bits(&chroma.records("testdb", "reused")));

    // After a restart (the cache is empty) a fourth copy is found in the
    // collection: nothing new reaches the endpoint.
    let mut daemon_ = daemon_;
    daemon_.terminate();
    daemon_.restart();
    handbook(&root, 4);
    let before = chunk_inputs(&server).len();
    let source = daemon_.create_source(json!({
        "database_name": "testdb",
        "filesystem": {"root": root.join("copy-3").to_str().unwrap(), "collection_name": "reused"},
        "embedding": {"dense": {"model": MODEL}},
    }));
    let job = daemon_.wait_finished(
        &daemon_.invoke(&source, json!({})),
        Duration::from_secs(120),
    );
    assert!(job["status"]["complete"].is_object(), "{job}");
    assert_eq!(
        chunk_inputs(&server).len(),
        before,
        "a stored vector was not reused: {job}"
    );
    assert!(
        job["stats"]["chunks_embedding_reused"].as_u64().unwrap() > 0,
        "{job}"
    );
}
