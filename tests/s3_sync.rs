//! User story: a team keeps its docs and code in an S3 bucket and wants them
//! searchable in Chroma. They start the daemon, create an S3 source, create
//! invocations for objects, and read the result back from Chroma.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// A guide of several sections, each too long to share a 256-token chunk.
fn guide_v1() -> String {
    let mut text = String::from("# Install guide\n\n");
    for (title, topic) in [
        ("Download", "binary"),
        ("Configure", "config file"),
        ("Run", "daemon"),
        ("Troubleshoot", "logs"),
    ] {
        text.push_str(&format!("## {title}\n\n"));
        for sentence in 0..12 {
            text.push_str(&format!(
                "Step {sentence} explains how the {topic} behaves when you follow the {title} section carefully. "
            ));
        }
        text.push_str("\n\n");
    }
    text
}

const GUIDE_V2: &str = "# Install guide\n\nDownload the binary.\n";

fn rust_code() -> String {
    (0..30)
        .map(|i| {
            format!(
                "/// Adds {i} to the input.\npub fn add_{i}(x: u64) -> u64 {{\n    let offset = {i};\n    x + offset\n}}\n\n"
            )
        })
        .collect()
}

fn chunk_indices(records: &[&Record]) -> Vec<u64> {
    let mut indices: Vec<u64> = records
        .iter()
        .map(|r| r.metadata["chunk_index"].as_u64().unwrap())
        .collect();
    indices.sort();
    indices
}

#[test]
fn s3_objects_sync_into_chroma_and_resync_replaces_stale_chunks() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());

    s3.create_bucket("team-docs");
    let guide_text = guide_v1();
    s3.put(
        "team-docs",
        "docs/guide.md",
        guide_text.clone(),
        Some("text/markdown"),
    );
    s3.put("team-docs", "docs/src/lib.rs", rust_code(), None);
    s3.put(
        "team-docs",
        "docs/page.html",
        "<html><head><title>Page</title><script>var secret = 1;</script></head><body>\
         <nav>Home | About</nav><h1>Release notes</h1><p>Version 2 adds S3 sync.</p></body></html>",
        Some("text/html"),
    );
    s3.put(
        "team-docs",
        "docs/hello.txt",
        "hello world",
        Some("text/plain"),
    );
    s3.put(
        "team-docs",
        "docs/logo.png",
        vec![0x89, b'P', b'N', b'G', 0, 0, 1, 2],
        Some("image/png"),
    );

    let source_id = daemon.create_source(s3_source(&s3, "team-docs", "knowledge", Some("docs/")));

    // The source reads back with its effective defaults filled in.
    let (status, source) =
        daemon.request(Method::GET, &format!("/api/v1/sources/{source_id}"), None);
    assert_eq!(status, 200);
    assert_eq!(source["s3"]["path_prefix"], "docs/");
    assert_eq!(
        source["embedding_model"]["model"],
        "sentence-transformers/all-MiniLM-L6-v2"
    );

    let guide = daemon.invoke(
        &source_id,
        json!({"object_key": "docs/guide.md", "metadata": {"team": "search", "priority": 2}}),
    );
    let code = daemon.invoke(
        &source_id,
        json!({"object_key": "docs/src/lib.rs", "custom_id": "lib-main", "target_collection_name": "code"}),
    );
    let page = daemon.invoke(&source_id, json!({"object_key": "docs/page.html"}));
    let hello = daemon.invoke(&source_id, json!({"object_key": "docs/hello.txt"}));
    let logo = daemon.invoke(&source_id, json!({"object_key": "docs/logo.png"}));

    for id in [&guide, &code, &page, &hello] {
        let job = daemon.wait_complete(id);
        assert!(
            job["stats"]["chunks_upserted"].as_u64().unwrap() > 0,
            "{job}"
        );
        assert_eq!(job["attempt"], 1);
    }
    let guide_job = daemon.job(&guide);
    assert_eq!(guide_job["metadata"]["s3"]["bucket_name"], "team-docs");
    assert_eq!(guide_job["metadata"]["s3"]["object_key"], "docs/guide.md");
    assert_eq!(guide_job["metadata"]["collection_name"], "knowledge");
    assert_eq!(guide_job["metadata"]["database_name"], "testdb");
    assert_eq!(
        guide_job["metadata"]["s3"]["additional_metadata"]["team"],
        "search"
    );

    // Binary content completes without chunks, and says why.
    let logo_job = daemon.wait_complete(&logo);
    assert_eq!(logo_job["stats"]["skipped"], 1);
    assert_eq!(logo_job["stats"]["chunks_upserted"], 0);
    assert!(
        // Images are documents read by OCR: this one is cut short.
        logo_job["stats"]["skipped_reasons"]["docs/logo.png"]
            .as_str()
            .unwrap()
            .contains("image")
    );

    // --- the "knowledge" collection: markdown, html and text, sha256 IDs
    let knowledge = chroma.records("testdb", "knowledge");
    let config = &knowledge.collection["configuration_json"]["embedding_function"];
    assert_eq!(
        config["name"], "default",
        "Chroma clients embed queries with the same model"
    );
    assert_eq!(knowledge.collection["metadata"]["finished_ingest"], true);

    let guide_sha = sha256_hex("docs/guide.md");
    let guide_chunks = knowledge.of_key("docs/guide.md");
    assert!(guide_chunks.len() >= 2, "markdown split into sections");
    let expected_ids: Vec<String> = (0..guide_chunks.len())
        .map(|n| format!("{guide_sha}-{n}"))
        .collect();
    let mut ids: Vec<String> = guide_chunks.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut expected_sorted = expected_ids.clone();
    expected_sorted.sort();
    assert_eq!(ids, expected_sorted);
    let etag = runtime().block_on(async {
        s3.client
            .head_object()
            .bucket("team-docs")
            .key("docs/guide.md")
            .send()
            .await
            .unwrap()
    });
    let etag = etag.e_tag().unwrap().trim_matches('"').to_string();
    for record in &guide_chunks {
        let meta = &record.metadata;
        assert_eq!(meta["document_key_sha256"], guide_sha.as_str());
        assert_eq!(meta["version_key"], etag.as_str());
        assert_eq!(meta["version_key_sha256"], sha256_hex(&etag).as_str());
        assert_eq!(meta["chunk_strategy"], "markdown");
        assert_eq!(meta["source_type"], "s3");
        assert_eq!(meta["source_id"], source_id.as_str());
        assert_eq!(meta["bucket"], "team-docs");
        assert_eq!(meta["team"], "search");
        assert_eq!(meta["priority"], 2);
        assert_eq!(
            meta["content_sha256"],
            sha256_hex(&record.document).as_str()
        );
        assert!(
            guide_text.contains(record.document.trim()),
            "chunk text comes from the document"
        );
        assert_eq!(record.embedding.len(), 384);
        let norm: f32 = record.embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "vectors are L2-normalised");
        let start = meta["start_line"].as_u64().unwrap() as usize;
        let first_line = guide_text.lines().nth(start - 1).unwrap();
        let chunk_first_line = record.document.lines().next().unwrap().trim();
        assert!(
            first_line.contains(chunk_first_line),
            "start_line {start} points at the chunk: {first_line:?} vs {chunk_first_line:?}"
        );
    }
    assert_eq!(
        chunk_indices(&guide_chunks),
        (0..guide_chunks.len() as u64).collect::<Vec<_>>()
    );

    let page_chunks = knowledge.of_key("docs/page.html");
    let page_text: String = page_chunks.iter().map(|r| r.document.clone()).collect();
    assert!(page_text.contains("# Release notes"), "{page_text}");
    assert!(
        !page_text.contains('<') && !page_text.contains("secret"),
        "{page_text}"
    );
    assert!(
        !page_text.contains("Home | About"),
        "navigation dropped: {page_text}"
    );

    // The vector of a one-chunk document equals the reference model's vector.
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/embeddings/reference.json").unwrap(),
    )
    .unwrap();
    let hello_reference: Vec<f32> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["text"] == "hello world")
        .unwrap()["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let hello_chunks = knowledge.of_key("docs/hello.txt");
    assert_eq!(hello_chunks.len(), 1);
    assert_eq!(hello_chunks[0].metadata["chunk_strategy"], "lines");
    assert!(cosine(&hello_chunks[0].embedding, &hello_reference) >= 0.999);

    assert!(knowledge.of_key("docs/logo.png").is_empty());

    // --- the "code" collection: custom_id IDs, tree-sitter chunks
    let code_records = chroma.records("testdb", "code");
    assert!(code_records.rows.len() > 1);
    for (n, record) in code_records.rows.iter().enumerate() {
        assert!(record.id.starts_with("lib-main-"), "{}", record.id);
        assert_eq!(record.metadata["custom_id"], "lib-main");
        assert_eq!(record.metadata["language"], "rust");
        assert_eq!(record.metadata["chunk_strategy"], "tree_sitter");
        assert_eq!(record.metadata["document_key"], "docs/src/lib.rs");
        let _ = n;
    }
    let code_chunks: Vec<&Record> = code_records.rows.iter().collect();
    let expected: Vec<u64> = (0..code_chunks.len() as u64).collect();
    assert_eq!(chunk_indices(&code_chunks), expected);

    // --- re-sync after the object shrank, without the extra metadata
    s3.put(
        "team-docs",
        "docs/guide.md",
        GUIDE_V2,
        Some("text/markdown"),
    );
    let resync = daemon.invoke(&source_id, json!({"object_key": "docs/guide.md"}));
    let resync_job = daemon.wait_complete(&resync);
    let after = chroma.records("testdb", "knowledge");
    let guide_after = after.of_key("docs/guide.md");
    assert_eq!(guide_after.len(), 1, "stale chunks are gone");
    assert_eq!(guide_after[0].id, format!("{guide_sha}-0"));
    assert_eq!(guide_after[0].document.trim(), GUIDE_V2.trim());
    assert!(
        guide_after[0].metadata.get("team").is_none(),
        "old invocation metadata does not linger"
    );
    assert_eq!(
        resync_job["stats"]["chunks_deleted"].as_u64().unwrap(),
        guide_chunks.len() as u64 - 1
    );
    // Other documents are untouched.
    assert_eq!(after.of_key("docs/page.html").len(), page_chunks.len());

    // latest-by-keys gives the newest invocation per key.
    let (status, latest) = daemon.request(
        Method::POST,
        &format!("/api/v1/sources/{source_id}/invocations/latest-by-keys"),
        Some(json!({"object_keys": ["docs/guide.md", "docs/none.md"]})),
    );
    assert_eq!(status, 200);
    assert_eq!(latest["docs/guide.md"]["id"], resync.as_str());
    assert!(latest.get("docs/none.md").is_none());

    // Cancelling a finished job is refused with 412.
    let (status, body) = daemon.request(Method::PUT, &format!("/api/v1/invocations/{guide}"), None);
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"], "not_cancelable");

    // Listing by source shows all six, newest first.
    let (status, jobs) = daemon.request(
        Method::GET,
        &format!("/api/v1/invocations?source_id={source_id}"),
        None,
    );
    assert_eq!(status, 200);
    let listed: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 6);
    assert_eq!(listed[0], resync);

    // Secrets appear nowhere.
    assert!(!daemon.log().contains(S3_SECRET));
    assert!(!jobs.to_string().contains(S3_SECRET));
}

#[test]
fn a_configured_credential_is_used_and_a_missing_object_fails_clearly() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    s3.create_bucket("private");
    s3.put(
        "private",
        "notes/a.md",
        "# Notes\n\nSecret plans for the launch.\n",
        None,
    );

    let mut body = s3_source(&s3, "private", "notes", None);
    body["s3"]["aws_credential_id"] = json!(1);
    let source_id = daemon.create_source(body);
    let ok = daemon.invoke(&source_id, json!({"object_key": "notes/a.md"}));
    daemon.wait_complete(&ok);
    assert_eq!(chroma.records("testdb", "notes").rows.len(), 1);

    // The object is deleted from the bucket: a new invocation fails with S3's
    // reason and removes the chunks the object had.
    s3.delete("private", "notes/a.md");
    let gone = daemon.invoke(&source_id, json!({"object_key": "notes/a.md"}));
    let (_, error) = daemon.wait_failed(&gone, std::time::Duration::from_secs(60));
    assert!(
        error.contains("NoSuchKey") && error.contains("removed the 1 chunks"),
        "{error}"
    );
    assert!(chroma.records("testdb", "notes").rows.is_empty());

    // A key that does not exist: failed at once (no retries), with S3's reason.
    let missing = daemon.invoke(&source_id, json!({"object_key": "notes/missing.md"}));
    let (job, error) = daemon.wait_failed(&missing, std::time::Duration::from_secs(60));
    assert!(
        error.contains("NoSuchKey") && error.contains("s3://private/notes/missing.md"),
        "{error}"
    );
    assert_eq!(job["attempt"], 1, "permanent errors are not retried");

    // A bucket that does not exist fails clearly too.
    let nobucket = daemon.create_source(s3_source(&s3, "no-such-bucket", "notes", None));
    let job_id = daemon.invoke(&nobucket, json!({"object_key": "x.md"}));
    let (_, error) = daemon.wait_failed(&job_id, std::time::Duration::from_secs(60));
    assert!(error.contains("NoSuchBucket"), "{error}");
    assert!(!daemon.log().contains(S3_SECRET));
}

#[test]
fn metrics_count_finished_jobs_and_their_work() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("metered");
    s3.put("metered", "a.md", guide_v1(), None);
    let daemon = Daemon::start(&chroma.url());
    let source = daemon.create_source(s3_source(&s3, "metered", "metered", None));
    let id = daemon.invoke(&source, json!({"object_key": "a.md"}));
    let job = daemon.wait_complete(&id);
    let text = http()
        .get(format!("{}/metrics", daemon.url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
    };
    assert_eq!(
        value("chroma_syncd_jobs_finished_total{outcome=\"complete\"}"),
        1.0
    );
    assert_eq!(
        value("chroma_syncd_chunks_upserted_total{source_type=\"s3\"}"),
        job["stats"]["chunks_upserted"].as_f64().unwrap()
    );
    assert_eq!(
        value("chroma_syncd_documents_total{source_type=\"s3\"}"),
        1.0
    );
    assert!(
        value("chroma_syncd_embed_batch_seconds_count") >= 1.0,
        "{text}"
    );
    assert_eq!(value("chroma_syncd_queue_pending_jobs"), 0.0);
}

/// A long markdown runbook: `sections` numbered sections of a few hundred
/// bytes each, every one different.
fn runbook(sections: usize, edition: &str) -> String {
    let mut text = String::from("# Runbook\n\n");
    for i in 0..sections {
        text.push_str(&format!("## Step {i} ({edition})\n\n"));
        for sentence in 0..4 {
            text.push_str(&format!(
                "When alert {i} fires, check gauge {sentence} on host {} before paging anyone. ",
                (i * 7 + sentence) % 31
            ));
        }
        text.push_str("\n\n");
    }
    text
}

#[test]
fn a_text_object_larger_than_a_segment_is_streamed_and_resynced_in_place() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    // Segments of 6 KB: the 80-section runbook (about 23 KB) is read,
    // chunked and written in several pieces, never whole.
    let config =
        format!("{TEST_CONFIG}[s3]\nmax_object_bytes = 200000\nstream_segment_bytes = 6000\n");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    s3.create_bucket("ops");
    let first = runbook(80, "first");
    assert!(first.len() > 3 * 6000, "{}", first.len());
    s3.put("ops", "runbook.md", first.clone(), Some("text/markdown"));
    let source = daemon.create_source(s3_source(&s3, "ops", "runbook", None));
    let sync =
        || daemon.wait_complete(&daemon.invoke(&source, json!({"object_key": "runbook.md"})));

    let job = sync();
    assert_eq!(job["stats"]["documents"], 1, "{job}");
    assert_eq!(job["stats"]["bytes"], first.len() as u64, "{job}");
    let records = chroma.records("testdb", "runbook");
    let chunks = records.of_key("runbook.md");
    let count = chunks.len() as u64;
    // One run of chunk numbers across segments, with the usual IDs.
    assert_eq!(chunk_indices(&chunks), (0..count).collect::<Vec<_>>());
    let key_sha = sha256_hex("runbook.md");
    for chunk in &chunks {
        let index = chunk.metadata["chunk_index"].as_u64().unwrap();
        assert_eq!(chunk.id, format!("{key_sha}-{index}"));
        // Line numbers are the object's, not the segment's.
        let start = chunk.metadata["start_line"].as_u64().unwrap() as usize;
        let end = chunk.metadata["end_line"].as_u64().unwrap() as usize;
        let lines: Vec<&str> = first.lines().collect();
        let span = lines[start - 1..end].join("\n");
        assert!(
            span.contains(chunk.document.trim()),
            "chunk {index} is not lines {start}-{end}: {:?} vs {span:?}",
            chunk.document
        );
    }
    // Nothing lost at segment edges: every step is in some chunk.
    for i in 0..80 {
        let heading = format!("## Step {i} (first)");
        assert!(
            chunks.iter().any(|c| c.document.contains(&heading)),
            "{heading} is missing"
        );
    }

    // The runbook shrinks and its tail changes: the unchanged head keeps its
    // embeddings, the changed tail is re-embedded, the rest is deleted.
    let second = format!("{}{}", runbook(50, "first"), runbook(5, "second"));
    s3.put("ops", "runbook.md", second.clone(), Some("text/markdown"));
    let job = sync();
    let stats = &job["stats"];
    let after = chroma.records("testdb", "runbook");
    let chunks = after.of_key("runbook.md");
    let count_after = chunks.len() as u64;
    assert!(count_after < count, "{count_after} vs {count}");
    assert_eq!(chunk_indices(&chunks), (0..count_after).collect::<Vec<_>>());
    // The head's text is unchanged but its version (ETag) is new: those
    // chunks get their metadata updated, not a new embedding.
    assert!(
        stats["chunks_restamped"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(
        stats["chunks_upserted"].as_u64().unwrap() < count_after,
        "{stats}"
    );
    assert!(stats["chunks_deleted"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        chunks
            .iter()
            .any(|c| c.document.contains("## Step 4 (second)"))
    );
    assert!(
        !chunks
            .iter()
            .any(|c| c.document.contains("## Step 60 (first)"))
    );

    // max_object_bytes still bounds what is indexed at all.
    let huge = runbook(800, "huge");
    assert!(huge.len() > 200_000, "{}", huge.len());
    s3.put("ops", "runbook.md", huge, Some("text/markdown"));
    let job = sync();
    let reason = job["stats"]["skipped_reasons"]["runbook.md"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("max_object_bytes"), "{job}");
    assert!(
        chroma
            .records("testdb", "runbook")
            .of_key("runbook.md")
            .is_empty()
    );
}

/// User story: a team tags its reports with several labels at once and
/// filters on any one of them.
#[test]
fn array_metadata_is_stored_and_found_with_contains() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    s3.create_bucket("reports");
    s3.put(
        "reports",
        "q3.md",
        "# Q3 report\n\nRevenue grew in every region.\n",
        Some("text/markdown"),
    );
    let source_id = daemon.create_source(s3_source(&s3, "reports", "reports", None));
    let job = daemon.invoke(
        &source_id,
        json!({"object_key": "q3.md", "metadata": {
            "tags": ["quarterly", "finance"], "years": [2025, 2026], "weights": [0.5, 1.5],
        }}),
    );
    daemon.wait_complete(&job);
    let records = chroma.records("testdb", "reports");
    assert!(!records.rows.is_empty());
    for record in &records.rows {
        assert_eq!(record.metadata["tags"], json!(["quarterly", "finance"]));
        assert_eq!(record.metadata["years"], json!([2025, 2026]));
    }
    // Chroma finds them by one element.
    let id = records.collection["id"].as_str().unwrap();
    let found: Value = http()
        .post(format!(
            "{}/api/v2/tenants/default_tenant/databases/testdb/collections/{id}/get",
            chroma.url()
        ))
        .json(&json!({"where": {"tags": {"$contains": "finance"}}}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        found["ids"].as_array().map(Vec::len),
        Some(records.rows.len()),
        "{found}"
    );

    // Mixed, nested and empty arrays are refused before anything is stored.
    for bad in [json!(["a", 1]), json!([["a"]]), json!([]), json!([1, 2.5])] {
        let (status, body) = daemon.request(
            Method::POST,
            &format!("/api/v1/sources/{source_id}/invocations"),
            Some(json!({"object_key": "q3.md", "metadata": {"tags": bad}})),
        );
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains("tags"), "{body}");
    }
}
