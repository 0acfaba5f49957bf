//! User stories: an operator points `[extract.vision]` at an
//! OpenAI-compatible vision model, and what pictures show becomes
//! searchable — an image file gets a description after its OCR'd caption,
//! a report's chart (PDF, Word or PowerPoint) gets one between the
//! paragraphs it stands between.
//! The model is a loopback server speaking the real chat-completions
//! protocol (`tests/common/vision.rs`), which checks each request carries
//! the prompt and a decodable PNG data URL. A busy or broken endpoint is
//! waited out; a refused key costs the descriptions, never the documents,
//! and says why. A PDF without pictures costs no request.
//!
//! The pictures are drawn by Pillow and the PDFs set by reportlab
//! (`tests/fixtures/figures.py`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::openai::Fault;
use common::vision::{DESCRIBED, VisionServer};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "sk-vision-test-key-7f3a";
const PROMPT: &str = "Describe this image for search: what it shows and any text in it.";

/// A daemon whose `[extract.vision]` is `server`, its key in the
/// environment as `key`.
fn daemon_for(chroma: &Chroma, server: &VisionServer, key: &str) -> Daemon {
    let config = format!(
        "{TEST_CONFIG}\n[extract.vision]\nkind = \"openai\"\nurl = \"{}\"\n\
         api_model = \"describer-1\"\napi_key_env = \"TEST_VISION_KEY\"\nmax_concurrency = 2\n",
        server.url
    );
    Daemon::start_with(&chroma.url(), &config, &[("TEST_VISION_KEY", key)])
}

/// One story's world (kept whole: the S3 server and the directory must
/// live as long as the test): the pictures in a bucket, a vision model accepting
/// [`KEY`], and a daemon sending it `key`, with an S3 source syncing the
/// bucket into `collection`.
struct World {
    daemon: Daemon,
    server: Arc<VisionServer>,
    source: String,
    chroma: Chroma,
    _s3: S3,
    _dir: tempfile::TempDir,
}

fn world(collection: &str, key: &str) -> World {
    let dir = generated("tests/fixtures/figures.py");
    let chroma = Chroma::start();
    let s3 = S3::start();
    let server = VisionServer::start(KEY);
    let daemon = daemon_for(&chroma, &server, key);
    s3.create_bucket(collection);
    for name in [
        "harbour.png",
        "report.pdf",
        "report.docx",
        "report.pptx",
        "plain.pdf",
    ] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        s3.put(collection, name, bytes, None);
    }
    let source = daemon.create_source(s3_source(&s3, collection, collection, None));
    World {
        daemon,
        server,
        source,
        chroma,
        _s3: s3,
        _dir: dir,
    }
}

fn sync(daemon: &Daemon, source: &str, key: &str) -> Value {
    let job = daemon.wait_finished(
        &daemon.invoke(source, json!({ "object_key": key })),
        Duration::from_secs(300),
    );
    assert!(job["status"]["complete"].is_object(), "{key}: {job}");
    job
}

/// A document's text, its chunks in order.
fn text_of(records: &Records, key: &str) -> String {
    let mut chunks = records.of_key(key);
    assert!(!chunks.is_empty(), "{key}: no chunks");
    chunks.sort_by_key(|r| r.metadata["chunk_index"].as_u64().unwrap());
    chunks
        .iter()
        .map(|c| c.document.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn position(text: &str, word: &str) -> usize {
    text.find(word)
        .unwrap_or_else(|| panic!("`{word}` is not in:\n{text}"))
}

#[test]
fn pictures_are_described_where_they_stand() {
    let world = world("pictures", KEY);
    let (daemon, server, source, chroma) =
        (&world.daemon, &world.server, &world.source, &world.chroma);

    for key in ["harbour.png", "report.pdf", "report.docx", "report.pptx"] {
        sync(daemon, source, key);
    }
    let records = chroma.records("testdb", "pictures");
    // The image file: its caption (OCR), then what it shows.
    let harbour = text_of(&records, "harbour.png");
    assert!(
        position(&harbour, "Harbour lights") < position(&harbour, DESCRIBED),
        "{harbour}"
    );
    assert!(
        harbour.contains(&format!("red and white {DESCRIBED}")),
        "{harbour}"
    );
    // The report, as a PDF, a Word document and a slide: the chart's
    // description between the paragraphs above and below it (on the
    // slide: after its text, before its speaker notes).
    for key in ["report.pdf", "report.docx", "report.pptx"] {
        let report = text_of(&records, key);
        let described = position(&report, DESCRIBED);
        assert!(
            position(&report, "harbour master") < described,
            "{key}: {report}"
        );
        assert!(
            described < position(&report, "northern quay"),
            "{key}: {report}"
        );
        assert!(report.contains("](figure)"), "{key}: {report}");
    }
    // Each request was the real protocol: the model, the prompt and a
    // decodable picture no larger than 1024 pixels a side.
    let seen = server.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for request in &seen {
        assert_eq!(request.authorization, format!("Bearer {KEY}"));
        assert_eq!(request.model, "describer-1");
        assert_eq!(request.prompt, PROMPT);
        let (width, height) = request.picture.expect("a decodable picture");
        assert!(width.max(height) <= 1024 && width * height >= 128 * 128);
    }
    // A PDF without pictures costs no request and its chunks carry the
    // metadata they always have.
    sync(daemon, source, "plain.pdf");
    assert_eq!(server.seen().len(), 4, "a PDF without pictures was sent");
    let records = chroma.records("testdb", "pictures");
    let keys_of = |key: &str| -> Vec<String> {
        let metadata = records.of_key(key)[0].metadata.as_object().unwrap();
        metadata.keys().cloned().collect()
    };
    let (plain_keys, report_keys) = (keys_of("plain.pdf"), keys_of("report.pdf"));
    assert_eq!(
        plain_keys, report_keys,
        "a description changed the metadata"
    );
}

#[test]
fn a_busy_or_broken_model_is_waited_out() {
    let world = world("retried", KEY);
    let (daemon, server, source, chroma) =
        (&world.daemon, &world.server, &world.source, &world.chroma);

    server.fail_next(&[Fault::BusyFor("1"), Fault::Broken, Fault::Broken]);
    let job = sync(daemon, source, "harbour.png");
    assert_eq!(job["attempt"], 1, "{job}");
    let answered: Vec<u16> = server.seen().iter().map(|s| s.answered).collect();
    assert_eq!(answered, vec![429, 500, 500, 200]);
    let records = chroma.records("testdb", "retried");
    assert!(text_of(&records, "harbour.png").contains(DESCRIBED));
    assert!(
        job["stats"]["omitted_parts"].get("harbour.png").is_none(),
        "{job}"
    );
}

#[test]
fn a_refused_key_costs_the_descriptions_not_the_documents() {
    let wrong = "sk-wrong-key-91c2";
    let world = world("refused", wrong);
    let (daemon, server, source, chroma) =
        (&world.daemon, &world.server, &world.source, &world.chroma);

    for key in ["harbour.png", "report.pdf"] {
        let job = sync(daemon, source, key);
        assert_eq!(job["attempt"], 1, "{job}");
        let omitted = job["stats"]["omitted_parts"][key]
            .as_str()
            .unwrap_or_default();
        assert!(
            omitted.contains("not described") && omitted.contains("401"),
            "{key}: {job}"
        );
        assert!(
            !job.to_string().contains(wrong),
            "the key is in the job: {job}"
        );
    }
    let records = chroma.records("testdb", "refused");
    let harbour = text_of(&records, "harbour.png");
    assert!(
        harbour.contains("Harbour lights") && !harbour.contains(DESCRIBED),
        "{harbour}"
    );
    let report = text_of(&records, "report.pdf");
    assert!(report.contains("harbour master") && report.contains("northern quay"));
    assert!(!report.contains("figure"), "a marker was left: {report}");
    assert!(!daemon.log().contains(wrong), "the key is in the log");
    // Refused: asked once per picture, not retried.
    assert_eq!(server.seen().len(), 2, "{:?}", server.seen());
}
