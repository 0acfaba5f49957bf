//! User stories: a team outgrows the built-in model. The operator defines
//! models in the config — one served by a GPU pool behind an
//! OpenAI-compatible endpoint, one local BERT-family directory — and
//! sources name them with Chroma Sync's `embedding_model`/`embedding`
//! fields. The vectors stored are the model's; the collection records how
//! to embed queries, so a Python client finds the right document; a
//! refused key fails the job with the endpoint's reason and leaks nowhere;
//! a model the daemon does not define, a collection made for another model
//! or dimension, and sparse indexes on single-node Chroma are refused with
//! the reason, before anything is written.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chroma_syncd::embed::MiniLm;
use common::openai::{EmbeddingServer, Fault, Vectors};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const KEY: &str = "sk-gpu-pool-key-that-must-not-leak-17";
const ENDPOINT_MODEL: &str = "Qwen/Qwen3-Embedding-0.6B";
const LOCAL_MODEL: &str = "acme/small-bert";
const ALLOWED_ROOTS: &str = "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS";

/// A handful of documents on different subjects.
const DOCUMENTS: &[(&str, &str)] = &[
    (
        "kitchen.md",
        "# Baking bread\n\nKnead the dough for ten minutes, let it rise for an hour, and bake \
         the loaf at 220 degrees until the crust is brown.\n",
    ),
    (
        "space.md",
        "# Orbital mechanics\n\nA satellite in low earth orbit circles the planet every ninety \
         minutes; raising its orbit takes a burn at perigee.\n",
    ),
    (
        "garden.md",
        "# Pruning roses\n\nCut rose canes just above an outward-facing bud in late winter, and \
         remove dead wood first.\n",
    ),
];

fn write_documents(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    for (name, text) in DOCUMENTS {
        std::fs::write(root.join(name), text).unwrap();
    }
}

fn model_server() -> Arc<EmbeddingServer> {
    let model = MiniLm::load(&model_dir(), 8).expect("model installed");
    EmbeddingServer::start(KEY, Vectors::Model(Box::new(model)))
}

/// A daemon defining the endpoint model (keyed `KEY` from the environment
/// unless `key` says otherwise) and, given a directory, the local model.
fn daemon(chroma: &Chroma, allowed: &Path, server: &EmbeddingServer, key: &str) -> Daemon {
    daemon_with(chroma, allowed, server, key, None)
}

fn daemon_with(
    chroma: &Chroma,
    allowed: &Path,
    server: &EmbeddingServer,
    key: &str,
    local: Option<&Path>,
) -> Daemon {
    let mut config = format!(
        "{TEST_CONFIG}\n[embedding.models.\"{ENDPOINT_MODEL}\"]\nkind = \"openai\"\n\
         url = \"{}\"\napi_model = \"qwen3-embedding\"\napi_key_env = \"GPU_POOL_KEY\"\n\
         max_batch = 2\nmax_concurrency = 2\nmax_input_tokens = 512\nmax_retries = 4\n",
        server.url
    );
    if let Some(dir) = local {
        config.push_str(&format!(
            "\n[embedding.models.\"{LOCAL_MODEL}\"]\nkind = \"local\"\npath = \"{}\"\n",
            dir.display()
        ));
    }
    Daemon::start_with(
        &chroma.url(),
        &config,
        &[
            (ALLOWED_ROOTS, allowed.to_str().unwrap()),
            ("GPU_POOL_KEY", key),
            // Exact f32 GEMMs, so the local model's vectors can be compared
            // with the numpy reference tightly.
            ("CHROMA_SYNCD_EMBEDDING_PRECISION", "f32"),
        ],
    )
}

fn source(root: &Path, collection: &str, embedding: Value) -> Value {
    let mut body = json!({
        "database_name": "testdb",
        "filesystem": {"root": root.to_str().unwrap(), "collection_name": collection},
    });
    for (key, value) in embedding.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

fn retrieval_task() -> Value {
    json!({"task_name": "retrieval", "document_prompt": "passage: ", "query_prompt": "query: "})
}

#[test]
fn an_endpoint_model_embeds_a_directory_and_a_python_client_queries_it() {
    let chroma = Chroma::start();
    let server = model_server();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("notes");
    write_documents(&root);
    let daemon = daemon(&chroma, allowed.path(), &server, KEY);
    let source_id = daemon.create_source(source(
        &root,
        "notes",
        json!({"embedding_model": {"model": ENDPOINT_MODEL, "task": retrieval_task()}}),
    ));
    // The pool is busy, then hiccups: the daemon waits and retries.
    server.fail_next(&[Fault::Busy, Fault::Broken]);
    let job = daemon.wait_complete(&daemon.invoke(&source_id, json!({})));
    assert_eq!(job["stats"]["documents"], 3, "{job}");

    // The vectors are the endpoint's, computed from prompt + chunk text.
    let records = chroma.records("testdb", "notes");
    assert_eq!(records.rows.len(), 3);
    let MiniLmVectors(reference) = MiniLmVectors::of(
        &records
            .rows
            .iter()
            .map(|r| format!("passage: {}", r.document))
            .collect::<Vec<_>>(),
    );
    for (record, expected) in records.rows.iter().zip(&reference) {
        assert!(
            cosine(&record.embedding, expected) > 0.99999,
            "{}",
            record.id
        );
        assert_eq!(record.metadata["embedding_model"], ENDPOINT_MODEL);
        assert!(
            !record.document.starts_with("passage: "),
            "the prompt is not stored"
        );
    }
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|s| s.authorization == format!("Bearer {KEY}")
                && s.model == "qwen3-embedding"
                && s.inputs.len() <= 2),
        "{seen:?}"
    );
    // Each chunk embedded once (in batches of at most two, whichever
    // documents they came from), after the dimension probe that was
    // refused twice.
    let passages: Vec<&String> = seen
        .iter()
        .flat_map(|s| &s.inputs)
        .filter(|input| input.starts_with("passage: "))
        .collect();
    assert_eq!(passages.len(), 3, "{seen:?}");
    let probes = seen
        .iter()
        .filter(|s| s.inputs == ["dimension probe"])
        .count();
    assert_eq!(probes, 3, "two retries: {seen:?}");
    assert!(!daemon.log().contains(KEY), "the key is never logged");

    // The collection says how to embed queries.
    let collection = chroma.collection("testdb", "notes").unwrap();
    let function = &collection["configuration_json"]["embedding_function"];
    assert_eq!(function["name"], "openai", "{collection}");
    assert_eq!(function["config"]["model_name"], "qwen3-embedding");
    assert_eq!(function["config"]["api_base"], server.url.as_str());
    assert_eq!(function["config"]["api_key_env_var"], "GPU_POOL_KEY");
    assert_eq!(collection["metadata"]["embedding_query_prompt"], "query: ");
    assert_eq!(
        collection["metadata"]["embedding_document_prompt"],
        "passage: "
    );
    assert_eq!(collection["metadata"]["embedding_task"], "retrieval");

    // A Python client builds the recorded embedding function and queries
    // through the same endpoint.
    let script = format!(
        r#"
import chromadb, json, sys
host, port = "{host}", {port}
client = chromadb.HttpClient(host=host, port=port, database="testdb")
collection = client.get_collection("notes")
prompt = collection.metadata.get("embedding_query_prompt", "")
result = collection.query(query_texts=[prompt + "how long should dough rise before baking"], n_results=1)
print(json.dumps(result["metadatas"][0][0]["document_key"]))
"#,
        host = "127.0.0.1",
        port = chroma.url().rsplit(':').next().unwrap(),
    );
    let output = std::process::Command::new(venv().join("bin/python"))
        .args(["-c", &script])
        .env("GPU_POOL_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "\"kitchen.md\""
    );
    assert!(
        server
            .inputs()
            .contains(&"query: how long should dough rise before baking".to_string()),
        "the query went to the endpoint"
    );

    // Re-syncing unchanged files embeds nothing; a source with another
    // document prompt writing the same files re-embeds them.
    let before = server.seen().len();
    let again = daemon.wait_complete(&daemon.invoke(&source_id, json!({})));
    assert_eq!(server.seen().len(), before, "{again}");
    let reworded = daemon.create_source(source(
        &root,
        "notes",
        json!({"embedding_model": {"model": ENDPOINT_MODEL, "task": {
            "task_name": "retrieval", "document_prompt": "document: ", "query_prompt": "query: "}}}),
    ));
    let job = daemon.wait_complete(&daemon.invoke(&reworded, json!({})));
    assert_eq!(job["stats"]["chunks_upserted"], 3, "{job}");
    assert!(
        server.inputs().iter().any(|i| i.starts_with("document: ")),
        "re-embedded with the new prompt"
    );
}

/// all-MiniLM-L6-v2 vectors of texts, computed here (the server's model).
struct MiniLmVectors(Vec<Vec<f32>>);

impl MiniLmVectors {
    fn of(texts: &[String]) -> Self {
        use chroma_syncd::embed::Embedder;
        let model = MiniLm::load(&model_dir(), 8).unwrap();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        MiniLmVectors(model.embed(&texts).unwrap())
    }
}

#[test]
fn a_refused_key_fails_the_job_with_the_endpoints_reason() {
    let chroma = Chroma::start();
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("notes");
    write_documents(&root);
    let wrong = "sk-revoked-key-also-secret-3";
    let daemon = daemon(&chroma, allowed.path(), &server, wrong);
    let source_id = daemon.create_source(source(
        &root,
        "refused",
        json!({"embedding": {"dense": {"model": ENDPOINT_MODEL}}}),
    ));
    let (job, error) = daemon.wait_failed(
        &daemon.invoke(&source_id, json!({})),
        Duration::from_secs(120),
    );
    assert!(error.contains(ENDPOINT_MODEL), "{error}");
    assert!(
        error.contains("401") && error.contains("invalid API key"),
        "{error}"
    );
    assert_eq!(server.seen().len(), 1, "a refusal is not retried: {job}");
    let everything = format!("{job} {}", daemon.log());
    assert!(!everything.contains(wrong), "the key leaked");
    assert!(
        chroma.collection("testdb", "refused").is_none(),
        "nothing was created"
    );
}

#[test]
fn models_the_daemon_does_not_define_and_foreign_collections_are_refused() {
    let chroma = Chroma::start();
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("notes");
    write_documents(&root);
    let daemon = daemon(&chroma, allowed.path(), &server, KEY);

    // An unknown model is a 400 naming the ones defined.
    let (status, body) = daemon.request(
        Method::POST,
        "/api/v1/sources",
        Some(source(
            &root,
            "elsewhere",
            json!({"embedding_model": {"model": "openai/text-embedding-3-large"}}),
        )),
    );
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("text-embedding-3-large")
            && message.contains(ENDPOINT_MODEL)
            && message.contains("sentence-transformers/all-MiniLM-L6-v2"),
        "{message}"
    );
    // SPLADE without its model directory configured.
    let (status, body) = daemon.request(
        Method::POST,
        "/api/v1/sources",
        Some(source(
            &root,
            "elsewhere",
            json!({"embedding": {"dense": {"model": ENDPOINT_MODEL},
                   "sparse": {"key": "sparse", "model": "prithivida/Splade_PP_en_v1"}}}),
        )),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs its model directory"),
        "{body}"
    );
    for (bad, says) in [
        (
            json!({"embedding": {"dense": {"model": ENDPOINT_MODEL}, "sparse": {"key": "sparse", "model": "bm42"}}}),
            "bm42",
        ),
        (
            json!({"embedding": {"dense": {"model": ENDPOINT_MODEL}, "sparse": {"key": "document_key", "model": "Chroma/BM25"}}}),
            "document_key",
        ),
        (
            json!({"embedding_model": {"model": ENDPOINT_MODEL, "task": 7}}),
            "task",
        ),
        (
            json!({"embedding_model": {"model": ENDPOINT_MODEL, "task": {"task_name": ""}}}),
            "task_name",
        ),
    ] {
        let (status, body) = daemon.request(
            Method::POST,
            "/api/v1/sources",
            Some(source(&root, "elsewhere", bad)),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }

    // A collection written with the built-in model refuses the endpoint's
    // 8-dimensional vectors, writing nothing.
    let builtin = daemon.create_source(source(&root, "minilm", json!({})));
    daemon.wait_complete(&daemon.invoke(&builtin, json!({})));
    let before = chroma.records("testdb", "minilm").ids();
    let other = daemon.create_source(source(
        &root,
        "minilm",
        json!({"embedding_model": {"model": ENDPOINT_MODEL}}),
    ));
    let (_, error) =
        daemon.wait_failed(&daemon.invoke(&other, json!({})), Duration::from_secs(120));
    assert!(error.contains("384-dimensional"), "{error}");
    assert_eq!(chroma.records("testdb", "minilm").ids(), before);

    // Collections made by others: one recorded for another model, one
    // holding 3-dimensional vectors and no recorded function.
    let collections = format!(
        "{}/api/v2/tenants/default_tenant/databases/testdb/collections",
        chroma.url()
    );
    let create = |name: &str, function: Value| -> String {
        let created: Value = http()
            .post(&collections)
            .json(&json!({"name": name, "configuration": {"embedding_function": function}}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        created["id"].as_str().unwrap().to_string()
    };
    create(
        "openai-notes",
        json!({"type": "known", "name": "openai",
               "config": {"model_name": "text-embedding-3-small", "api_key_env_var": "K"}}),
    );
    let into_openai = daemon.create_source(source(
        &root,
        "openai-notes",
        json!({"embedding_model": {"model": ENDPOINT_MODEL}}),
    ));
    let (_, error) = daemon.wait_failed(
        &daemon.invoke(&into_openai, json!({})),
        Duration::from_secs(120),
    );
    assert!(
        error.contains("embedding function `openai` (model `text-embedding-3-small`)"),
        "{error}"
    );
    assert!(chroma.records("testdb", "openai-notes").rows.is_empty());

    let id = create("three-dims", json!({"type": "legacy"}));
    http()
        .post(format!("{collections}/{id}/add"))
        .json(&json!({"ids": ["x"], "embeddings": [[0.1, 0.2, 0.3]], "documents": ["x"]}))
        .send()
        .unwrap()
        .error_for_status()
        .unwrap();
    let into_three = daemon.create_source(source(&root, "three-dims", json!({})));
    let (_, error) = daemon.wait_failed(
        &daemon.invoke(&into_three, json!({})),
        Duration::from_secs(120),
    );
    assert!(error.contains("3-dimensional"), "{error}");
    assert_eq!(chroma.records("testdb", "three-dims").rows.len(), 1);

    // Sparse vectors need a Chroma with sparse indexes; single-node Chroma
    // says it has none, and the job fails with its words.
    let sparse = daemon.create_source(source(
        &root,
        "hybrid",
        json!({"embedding": {"dense": {"model": "sentence-transformers/all-MiniLM-L6-v2"},
                             "sparse": {"key": "sparse_embedding", "model": "Chroma/BM25"}}}),
    ));
    let (_, error) =
        daemon.wait_failed(&daemon.invoke(&sparse, json!({})), Duration::from_secs(120));
    assert!(
        error.contains("Sparse vector indexing is not enabled"),
        "{error}"
    );
    assert!(chroma.collection("testdb", "hybrid").is_none());
}

#[test]
fn a_local_bert_model_runs_in_process_as_its_reference_does() {
    let chroma = Chroma::start();
    let server = EmbeddingServer::start(KEY, Vectors::Hashed);
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("notes");
    write_documents(&root);
    let model = tempfile::tempdir().unwrap();
    small_bert(
        &[
            "make",
            model.path().to_str().unwrap(),
            model_dir().to_str().unwrap(),
        ],
        None,
    );
    let daemon = daemon_with(&chroma, allowed.path(), &server, KEY, Some(model.path()));
    // No task: the model's own `passage: ` prompt is used.
    let source_id = daemon.create_source(source(
        &root,
        "small",
        json!({"embedding_model": {"model": LOCAL_MODEL}}),
    ));
    daemon.wait_complete(&daemon.invoke(&source_id, json!({})));
    let records = chroma.records("testdb", "small");
    assert_eq!(records.rows.len(), 3);
    let inputs: Vec<String> = records
        .rows
        .iter()
        .map(|r| format!("passage: {}", r.document))
        .collect();
    let expected: Vec<Vec<f32>> = serde_json::from_value(small_bert(
        &["embed", model.path().to_str().unwrap()],
        Some(&json!(inputs)),
    ))
    .unwrap();
    for (record, expected) in records.rows.iter().zip(&expected) {
        assert_eq!(record.embedding.len(), 32);
        let norm: f32 = record.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() > 1e-3,
            "CLS pooling without Normalize: {norm}"
        );
        let worst = record
            .embedding
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-3, "{}: differs by {worst}", record.id);
        assert_eq!(record.metadata["embedding_model"], LOCAL_MODEL);
    }
    let collection = chroma.collection("testdb", "small").unwrap();
    let function = &collection["configuration_json"]["embedding_function"];
    assert_eq!(function["name"], "sentence_transformer", "{collection}");
    assert_eq!(function["config"]["model_name"], LOCAL_MODEL);
    assert_eq!(collection["metadata"]["embedding_query_prompt"], "query: ");
    assert!(server.seen().is_empty(), "no endpoint involved");
}

/// Runs the fixture script with `args`, `input` as JSON on stdin; its JSON output.
fn small_bert(args: &[&str], input: Option<&Value>) -> Value {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small_bert.py");
    // The answer can be megabytes: into a file, not a pipe nobody reads
    // while the child runs.
    let answer = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(venv().join("bin/python"))
        .arg(&fixture)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(answer.reopen().unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        if let Some(input) = input {
            stdin.write_all(input.to_string().as_bytes()).unwrap();
        }
    }
    let output = wait_with_timeout(child, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(answer.path()).unwrap()).unwrap_or(Value::Null)
}

#[test]
fn a_splade_model_weighs_terms_as_its_reference_does() {
    use chroma_syncd::embed::splade::Splade;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap();
    small_bert(&["make-mlm", path, model_dir().to_str().unwrap()], None);
    let model = Splade::load(
        "prithivida/Splade_PP_en_v1",
        dir.path(),
        2,
        bert_cpu::Precision::F32,
    )
    .unwrap();
    let texts: Vec<String> = DOCUMENTS.iter().map(|(_, text)| text.to_string()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = model.embed(&refs).unwrap();
    let reference = small_bert(&["splade", path], Some(&json!(texts)));
    for (ours, expected) in ours.iter().zip(reference.as_array().unwrap()) {
        let expected: std::collections::BTreeMap<u32, f64> = expected
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v.as_f64().unwrap()))
            .collect();
        assert!(expected.len() > 100, "a vocabulary-wide vector");
        let got: std::collections::BTreeMap<u32, f64> = ours
            .indices
            .iter()
            .copied()
            .zip(ours.values.iter().copied())
            .collect();
        // Every weight agrees (absent = 0), so every clearly non-zero
        // term is present on both sides.
        for index in expected.keys().chain(got.keys()) {
            let (e, g) = (
                expected.get(index).copied().unwrap_or(0.0),
                got.get(index).copied().unwrap_or(0.0),
            );
            assert!(
                (e - g).abs() < 1e-3,
                "term {index}: ours {g}, reference {e}"
            );
        }
        assert!(
            ours.indices.windows(2).all(|w| w[0] < w[1]),
            "ascending indices"
        );
    }

    // Defined in the config, sources may name it; single-node Chroma then
    // refuses the sparse index, and the job says so.
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("notes");
    write_documents(&root);
    let daemon = Daemon::start_with(
        &chroma.url(),
        &format!(
            "{TEST_CONFIG}\n[embedding.models.\"prithivida/Splade_PP_en_v1\"]\n\
             kind = \"splade\"\npath = \"{path}\"\n"
        ),
        &[(ALLOWED_ROOTS, allowed.path().to_str().unwrap())],
    );
    let source_id = daemon.create_source(source(
        &root,
        "splade",
        json!({"embedding": {"dense": {"model": "sentence-transformers/all-MiniLM-L6-v2"},
               "sparse": {"key": "splade_terms", "model": "prithivida/Splade_PP_en_v1"}}}),
    ));
    let (_, error) = daemon.wait_failed(
        &daemon.invoke(&source_id, json!({})),
        Duration::from_secs(120),
    );
    assert!(
        error.contains("Sparse vector indexing is not enabled"),
        "{error}"
    );
}
