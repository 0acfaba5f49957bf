//! User stories: what people keep is not only born-digital text. A copier's
//! image-only PDF, a PDF whose second page is a scan, a photographed page
//! (JPEG), a screenshot (PNG), a fax (multi-page TIFF) — from a bucket or a
//! directory — come back as their words, in order, with `ocr = true` on
//! the chunks OCR read; and images nobody vetted (a pixel bomb, a
//! truncated PNG, 10,000-page TIFFs and GIFs) end with a reason while the
//! daemon carries on.
//!
//! The material is made from real text (`tests/fixtures/ocr.py`): reportlab
//! sets it, poppler's `pdftoppm` renders the pages, Pillow turns them by a
//! couple of degrees, blurs and speckles them, and saves them as PDF, PNG,
//! JPEG and TIFF. OCR is Debian's Tesseract (`tesseract-ocr`,
//! `tesseract-ocr-eng`), which `scripts/test` installs.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Generates the material into a fresh directory; with `expected.json`.
fn material() -> (tempfile::TempDir, Value) {
    let dir = generated("tests/fixtures/ocr.py");
    let expected =
        serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    (dir, expected)
}

/// Lower-cased words without the punctuation around them.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Recall of `expected` in `got`, counting only words found in order: the
/// longest common subsequence over the expected words.
fn in_order_recall(expected: &[String], got: &[String]) -> f64 {
    if expected.is_empty() {
        return 1.0;
    }
    let mut row = vec![0usize; got.len() + 1];
    for e in expected {
        let mut diagonal = 0;
        for (j, g) in got.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if e == g {
                diagonal + 1
            } else {
                row[j + 1].max(row[j])
            };
            diagonal = above;
        }
    }
    row[got.len()] as f64 / expected.len() as f64
}

/// A document's chunks in order.
fn chunks_of<'a>(records: &'a Records, key: &str) -> Vec<&'a Record> {
    let mut chunks = records.of_key(key);
    chunks.sort_by_key(|r| r.metadata["chunk_index"].as_u64().unwrap());
    chunks
}

/// Every page's words came back, in order (recall ≥ 0.9), each from a chunk
/// that cites the page; chunks of OCR'd pages say `ocr = true`, others not.
fn assert_read(records: &Records, key: &str, name: &str, expected: &Value) {
    let chunks = chunks_of(records, key);
    assert!(!chunks.is_empty(), "{key}: no chunks");
    let want = &expected[name];
    let ocr_pages: Vec<u64> = match want.get("ocr_pages") {
        Some(pages) => pages
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect(),
        None => (1..=want["pages"].as_array().unwrap().len() as u64).collect(),
    };
    let mut all_expected = Vec::new();
    for (index, page) in want["pages"].as_array().unwrap().iter().enumerate() {
        let number = index as u64 + 1;
        let expected: Vec<String> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        let text: String = chunks
            .iter()
            .filter(|c| {
                c.metadata["page_start"].as_u64() <= Some(number)
                    && c.metadata["page_end"].as_u64() >= Some(number)
            })
            .map(|c| c.document.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let recall = in_order_recall(&expected, &words(&text));
        println!("{key} page {number}: in-order word recall {recall:.3}");
        assert!(
            recall >= 0.9,
            "{key} page {number}: in-order word recall {recall:.3} < 0.9 in:\n{text}"
        );
        all_expected.extend(expected);
    }
    // The whole document in order too (pages in page order).
    let whole: String = chunks
        .iter()
        .map(|c| c.document.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let recall = in_order_recall(&all_expected, &words(&whole));
    assert!(recall >= 0.9, "{key}: whole-document recall {recall:.3}");
    for chunk in &chunks {
        let page = chunk.metadata["page_start"].as_u64().unwrap();
        let ocr = ocr_pages.contains(&page);
        assert_eq!(
            chunk.metadata.get("ocr").and_then(Value::as_bool),
            ocr.then_some(true),
            "{key}: chunk of page {page}: {:?}",
            chunk.metadata
        );
    }
}

/// Files read by OCR, with the media type a bucket serves them as.
const SCANNED: &[(&str, &str)] = &[
    ("scanned.pdf", "application/pdf"),
    ("mixed.pdf", "application/pdf"),
    ("page.png", "image/png"),
    ("page.jpg", "image/jpeg"),
    ("pages.tiff", "image/tiff"),
];

#[test]
fn scans_and_images_in_a_bucket_come_back_as_their_words_in_order() {
    let (dir, expected) = material();
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    assert!(
        daemon.log().contains("OCR available"),
        "the daemon does not say OCR is available:\n{}",
        daemon.log()
    );
    s3.create_bucket("scans");
    // Served as the generic type many uploads get: the name decides…
    for (name, _) in SCANNED {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        s3.put("scans", name, bytes, Some("application/octet-stream"));
    }
    // …and for a name without an extension, the bytes.
    let png = std::fs::read(dir.path().join("page.png")).unwrap();
    s3.put(
        "scans",
        "inbox/scan-0001",
        png,
        Some("application/octet-stream"),
    );
    let source = daemon.create_source(s3_source(&s3, "scans", "scans", None));
    let started = Instant::now();
    let keys = SCANNED
        .iter()
        .map(|(name, _)| *name)
        .chain(["inbox/scan-0001"]);
    let jobs: Vec<_> = keys
        .map(|key| (key, daemon.invoke(&source, json!({ "object_key": key }))))
        .collect();
    for (key, job) in &jobs {
        let job = daemon.wait_complete(job);
        assert!(
            job["stats"]["chunks_upserted"].as_u64() > Some(0),
            "{key}: nothing indexed: {job}"
        );
    }
    println!("synced in {:.1} s", started.elapsed().as_secs_f64());
    let records = chroma.records("testdb", "scans");
    for (name, mime) in SCANNED {
        assert_read(&records, name, name, &expected);
        for chunk in records.of_key(name) {
            assert_eq!(chunk.metadata["content_type"], *mime, "{name}");
        }
    }
    assert_read(&records, "inbox/scan-0001", "page.png", &expected);
    for chunk in records.of_key("inbox/scan-0001") {
        assert_eq!(chunk.metadata["content_type"], "image/png");
    }
}

#[test]
fn scans_in_a_directory_are_read_too() {
    let (dir, expected) = material();
    let chroma = Chroma::start();
    let root = tempfile::tempdir().unwrap();
    for name in ["scanned.pdf", "page.jpg", "pages.tiff"] {
        std::fs::copy(dir.path().join(name), root.path().join(name)).unwrap();
    }
    // The text-file limit is below every image: images are documents, with
    // the document limit.
    sync_directory(
        &chroma,
        root.path(),
        Some(1000),
        "folder",
        Duration::from_secs(600),
    );
    let records = chroma.records("testdb", "folder");
    for name in ["scanned.pdf", "page.jpg", "pages.tiff"] {
        assert_read(&records, name, name, &expected);
    }
}

/// A hostile image and what its reason must say.
const HOSTILE: &[(&str, &str)] = &[
    ("bomb.png", "max_pixels_per_page"),
    ("truncated.png", "not a readable PNG"),
    ("many.tiff", "max_pages"),
    ("many.gif", "OCR found no text"),
];

#[test]
fn hostile_images_end_with_a_reason_and_the_daemon_carries_on() {
    let (dir, _) = material();
    let chroma = Chroma::start();
    let s3 = S3::start();
    let config = format!("{TEST_CONFIG}\n[extract]\nmax_memory_bytes = 1073741824\n");
    let mut daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let pid = daemon.pid().unwrap();
    s3.create_bucket("untrusted");
    for (name, _) in HOSTILE {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        s3.put("untrusted", name, bytes, None);
    }
    let page = std::fs::read(dir.path().join("page.png")).unwrap();
    s3.put("untrusted", "fine.png", page, None);
    let source = daemon.create_source(s3_source(&s3, "untrusted", "untrusted", None));
    for (name, wanted) in HOSTILE {
        let started = Instant::now();
        let job = daemon.wait_complete(&daemon.invoke(&source, json!({ "object_key": name })));
        let said = job["stats"]["skipped_reasons"][name]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: not skipped: {job}"));
        println!("{name}: {:.1} s: {said}", started.elapsed().as_secs_f64());
        assert!(
            said.contains(wanted),
            "{name}: `{said}` does not say `{wanted}`"
        );
        assert_eq!(job["attempt"], 1, "{name}: retried: {job}");
    }
    let fine = daemon.wait_complete(&daemon.invoke(&source, json!({ "object_key": "fine.png" })));
    assert!(
        fine["stats"]["chunks_upserted"].as_u64() > Some(0),
        "{fine}"
    );
    assert!(daemon.is_running(), "the daemon died");
    assert_eq!(daemon.pid(), Some(pid), "the daemon is the same process");
    // The bomb was refused from its header: the daemon never held it.
    let rss = daemon.peak_rss_kib().unwrap_or(0);
    assert!(rss < 1_000_000, "daemon peak RSS {rss} KiB");
}

/// Without Tesseract (OCR off), images are skipped with that reason and
/// scanned pages are reported as today; text-layer pages still index.
#[test]
fn without_ocr_images_are_skipped_saying_why() {
    let (dir, _) = material();
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start_with(&chroma.url(), TEST_CONFIG, &[("CHROMA_SYNCD_OCR", "false")]);
    assert!(daemon.log().contains("OCR unavailable"), "{}", daemon.log());
    s3.create_bucket("plain");
    for name in ["page.png", "mixed.pdf"] {
        let bytes = std::fs::read(dir.path().join(name)).unwrap();
        s3.put("plain", name, bytes, None);
    }
    let source = daemon.create_source(s3_source(&s3, "plain", "plain", None));
    let job = daemon.wait_complete(&daemon.invoke(&source, json!({ "object_key": "page.png" })));
    let reason = job["stats"]["skipped_reasons"]["page.png"]
        .as_str()
        .unwrap_or_default();
    assert!(
        reason.contains("OCR") && reason.contains("disabled"),
        "{job}"
    );
    let job = daemon.wait_complete(&daemon.invoke(&source, json!({ "object_key": "mixed.pdf" })));
    let omitted = job["stats"]["omitted_parts"]["mixed.pdf"]
        .as_str()
        .unwrap_or_default();
    assert!(omitted.contains("page 2: no text layer"), "{job}");
    let records = chroma.records("testdb", "plain");
    let chunks = chunks_of(&records, "mixed.pdf");
    assert!(!chunks.is_empty());
    assert!(chunks.iter().all(|c| c.metadata.get("ocr").is_none()));
}

/// A page OCR cannot finish within `max_seconds_per_page` is left out
/// naming that limit; the document's other pages are kept.
#[test]
fn a_page_past_its_time_is_left_out_naming_the_limit() {
    let (dir, _) = material();
    let chroma = Chroma::start();
    let s3 = S3::start();
    let config = format!("{TEST_CONFIG}\n[extract.ocr]\nmax_seconds_per_page = 0.05\n");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    s3.create_bucket("slow");
    let bytes = std::fs::read(dir.path().join("mixed.pdf")).unwrap();
    s3.put("slow", "mixed.pdf", bytes, None);
    let source = daemon.create_source(s3_source(&s3, "slow", "slow", None));
    let job = daemon.wait_complete(&daemon.invoke(&source, json!({ "object_key": "mixed.pdf" })));
    let omitted = job["stats"]["omitted_parts"]["mixed.pdf"]
        .as_str()
        .unwrap_or_default();
    assert!(
        omitted.contains("page 2") && omitted.contains("max_seconds_per_page"),
        "{job}"
    );
    let records = chroma.records("testdb", "slow");
    let chunks = chunks_of(&records, "mixed.pdf");
    assert!(chunks.iter().any(|c| c.document.contains("tide tables")));
}

/// Languages whose models are not installed turn OCR off at start, saying
/// which are missing and which are installed.
#[test]
fn a_language_not_installed_is_named_at_start() {
    let chroma = Chroma::start();
    let config = format!("{TEST_CONFIG}\n[extract.ocr]\nlanguages = [\"eng\", \"qqq\"]\n");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let log = daemon.log();
    assert!(
        log.contains("OCR unavailable") && log.contains("qqq") && log.contains("installed: "),
        "{log}"
    );
}

/// A team whose scans are in another language names it on its source
/// (`"ocr": {"languages": [...]}`) instead of the daemon's
/// `[extract.ocr] languages`. A language the daemon has no model for is
/// refused when the source is created, naming those installed, and nothing
/// is stored. Here the daemon's own default is `osd` (a model that reads
/// no words), so only a source that names `eng` gets the page's words
/// back: the source's languages are the ones its converters read with.
#[test]
fn a_source_reads_its_scans_in_the_languages_it_names() {
    let (dir, expected) = material();
    let chroma = Chroma::start();
    let s3 = S3::start();
    let config = format!("{TEST_CONFIG}\n[extract.ocr]\nlanguages = [\"osd\"]\n");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    s3.create_bucket("languages");
    let png = std::fs::read(dir.path().join("page.png")).unwrap();
    s3.put("languages", "page.png", png, None);

    let mut unknown = s3_source(&s3, "languages", "english", None);
    unknown["ocr"] = json!({"languages": ["xyz"]});
    let (status, error) = daemon.request(reqwest::Method::POST, "/api/v1/sources", Some(unknown));
    assert_eq!(status, 400, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(error["error"].is_string(), "{error}");
    assert!(
        message.contains("xyz") && message.contains("installed: ") && message.contains("eng"),
        "{error}"
    );
    let (_, listed) = daemon.request(reqwest::Method::GET, "/api/v1/sources", None);
    assert_eq!(listed, json!([]), "a refused source was stored");

    let mut english = s3_source(&s3, "languages", "english", None);
    english["ocr"] = json!({"languages": ["eng"]});
    let english = daemon.create_source(english);
    let plain = daemon.create_source(s3_source(&s3, "languages", "default", None));
    let get = |id: &str| {
        let (status, source) =
            daemon.request(reqwest::Method::GET, &format!("/api/v1/sources/{id}"), None);
        assert_eq!(status, 200, "{source}");
        source
    };
    assert_eq!(get(&english)["ocr"], json!({"languages": ["eng"]}));
    // A source without it reads as it always has: no `ocr` key at all.
    assert!(get(&plain).get("ocr").is_none(), "{}", get(&plain));

    for source in [&english, &plain] {
        let job = daemon.wait_complete(&daemon.invoke(source, json!({"object_key": "page.png"})));
        assert_eq!(job["attempt"], 1, "{job}");
    }
    let records = chroma.records("testdb", "english");
    assert_read(&records, "page.png", "page.png", &expected);
    // Read with `osd`, the daemon's default, the same page is not its words.
    let want: Vec<String> = expected["page.png"]["pages"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let default = chroma.records("testdb", "default");
    let text: String = chunks_of(&default, "page.png")
        .iter()
        .map(|c| c.document.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let recall = in_order_recall(&want, &words(&text));
    println!("page.png read with the daemon's `osd`: in-order word recall {recall:.3}");
    assert!(recall < 0.5, "the daemon's languages read the page: {text}");
}

/// A copier stamps its scans with a few characters of real text ("Copy 7"):
/// such a page has a text layer, but only a scrap of one over a
/// page-covering picture. It is read by OCR like any scan — its prose comes
/// back, marked `ocr = true` — rather than indexed as the stamp alone.
#[test]
fn a_scan_with_a_scrap_of_text_layer_is_read_by_ocr() {
    let dir = generated("tests/fixtures/figures.py");
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    s3.create_bucket("stamped");
    let bytes = std::fs::read(dir.path().join("stamped.pdf")).unwrap();
    s3.put("stamped", "stamped.pdf", bytes, None);
    let source = daemon.create_source(s3_source(&s3, "stamped", "stamped", None));
    let job = daemon.wait_complete(&daemon.invoke(&source, json!({"object_key": "stamped.pdf"})));
    assert!(job["stats"]["chunks_upserted"].as_u64() > Some(0), "{job}");
    let records = chroma.records("testdb", "stamped");
    let chunks = chunks_of(&records, "stamped.pdf");
    let text: String = chunks
        .iter()
        .map(|c| c.document.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let expected = words(
        "The harbour master kept a ledger of every vessel that entered the bay, noting its \
         tonnage, its cargo and the hour the tide allowed it to berth.",
    );
    let recall = in_order_recall(&expected, &words(&text));
    assert!(recall >= 0.9, "recall {recall:.3} in:\n{text}");
    assert!(
        chunks.iter().all(|c| c.metadata["ocr"] == json!(true)),
        "{:?}",
        chunks.iter().map(|c| &c.metadata).collect::<Vec<_>>()
    );
}
