//! User stories: the documents people keep — PDF reports, Word manuals,
//! slide decks, spreadsheets, ebooks, notebooks — become markdown chunks
//! that keep their structure and say where they came from (page, slide,
//! sheet); and documents nobody vetted end with a reason while the daemon
//! carries on.
//!
//! The files are made by the libraries people make them with (reportlab,
//! python-docx, python-pptx, openpyxl in the test venv) and by hand (EPUB,
//! ODT zips): `tests/fixtures/documents.py`, which also writes what each
//! must contain.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::github::{GitHubEmulator, GitRepo};
use common::web::FixtureSite;
use common::*;
use serde_json::{Value, json};

/// Generates the documents into a fresh directory; with `expected.json`.
fn documents() -> (tempfile::TempDir, Value) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(venv().join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/documents.py"))
        .arg(dir.path())
        .status()
        .expect("running tests/fixtures/documents.py");
    assert!(status.success(), "generating the documents failed");
    let expected =
        serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
    (dir, expected)
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

/// A document's chunks in order, and their text joined.
fn chunks_of<'a>(records: &'a Records, key: &str) -> (Vec<&'a Record>, String) {
    let mut chunks = records.of_key(key);
    chunks.sort_by_key(|r| r.metadata["chunk_index"].as_u64().unwrap());
    let text = chunks
        .iter()
        .map(|r| r.document.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (chunks, text)
}

/// Squeezes whitespace, so a sentence matches across line breaks.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every expected sentence of `key` is in its chunks, in document order;
/// where the sentence has a page, the chunk holding it covers that page.
fn assert_sentences(records: &Records, key: &str, expected: &Value) {
    let (chunks, text) = chunks_of(records, key);
    assert!(!chunks.is_empty(), "{key}: no chunks");
    let joined = squeeze(&text);
    let mut position = 0;
    for sentence in expected["sentences"].as_array().into_iter().flatten() {
        let wanted = sentence["text"].as_str().unwrap();
        let found = joined[position..]
            .find(wanted)
            .unwrap_or_else(|| panic!("{key}: `{wanted}` missing or out of order in:\n{text}"));
        position += found + wanted.len();
        if let Some(page) = sentence["page"].as_u64() {
            let chunk = chunks
                .iter()
                .find(|c| squeeze(&c.document).contains(wanted))
                .unwrap_or_else(|| panic!("{key}: `{wanted}` is split across chunks"));
            let (start, end) = (
                chunk.metadata["page_start"].as_u64().unwrap(),
                chunk.metadata["page_end"].as_u64().unwrap(),
            );
            assert!(
                start <= page && page <= end && end - start <= 1,
                "{key}: `{wanted}` is on page {page}, its chunk says {start}–{end}"
            );
        }
    }
    for present in expected["present"].as_array().into_iter().flatten() {
        let present = present.as_str().unwrap();
        assert!(
            text.contains(present),
            "{key}: `{present}` missing:\n{text}"
        );
    }
    for absent in expected["absent"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(expected["furniture"].as_array().into_iter().flatten())
    {
        let absent = absent.as_str().unwrap();
        assert!(
            !text.contains(absent),
            "{key}: `{absent}` leaked in:\n{text}"
        );
    }
    // Headings came through as markdown headings, tables as tables.
    for heading in expected["headings"].as_array().into_iter().flatten() {
        let heading = heading.as_str().unwrap();
        let is_heading = |line: &str| {
            if heading.starts_with('#') {
                line.trim() == heading
            } else {
                line.starts_with('#') && line.trim_start_matches('#').trim() == heading
            }
        };
        assert!(
            text.lines().any(is_heading),
            "{key}: heading `{heading}` missing:\n{text}"
        );
    }
    if let Some(cells) = expected["table_cells"].as_array() {
        let row = cells
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" | ");
        assert!(
            text.contains(&format!("| {row} |")),
            "{key}: table row `{row}` missing:\n{text}"
        );
    }
    if let Some(title) = expected["title"].as_str() {
        for chunk in &chunks {
            assert_eq!(chunk.metadata["document_title"], title, "{key}");
        }
    }
}

/// Spreadsheet chunks: each under its sheet's header, rows whole, every
/// row exactly once.
fn assert_sheets(records: &Records, key: &str, expected: &Value) {
    let (chunks, _) = chunks_of(records, key);
    for (sheet, wanted) in expected["sheets"].as_object().unwrap() {
        let header = format!(
            "| {} |",
            wanted["header"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let of_sheet: Vec<_> = chunks
            .iter()
            .filter(|c| {
                if sheet.is_empty() {
                    c.metadata.get("sheet").is_none()
                } else {
                    c.metadata["sheet"] == sheet.as_str()
                }
            })
            .collect();
        assert!(!of_sheet.is_empty(), "{key}: no chunks of sheet `{sheet}`");
        let mut rows = Vec::new();
        for chunk in &of_sheet {
            let mut lines = chunk.document.lines();
            assert_eq!(
                lines.next(),
                Some(header.as_str()),
                "{key}/{sheet}: {chunk:?}"
            );
            assert!(lines.next().unwrap().starts_with("| ---"), "{key}/{sheet}");
            for line in lines {
                assert!(
                    line.starts_with("| ") && line.ends_with(" |"),
                    "{key}/{sheet}: a row was split: `{line}`"
                );
                rows.push(line.to_string());
            }
            assert_eq!(chunk.metadata["chunk_strategy"], "table");
        }
        let total = wanted["rows"].as_u64().unwrap() as usize;
        assert_eq!(rows.len(), total, "{key}/{sheet}: every row once");
        let distinct: std::collections::BTreeSet<_> = rows.iter().collect();
        assert_eq!(distinct.len(), total, "{key}/{sheet}: no row twice");
    }
    if let Some(title) = expected["title"].as_str() {
        assert!(chunks.iter().all(|c| c.metadata["document_title"] == title));
    }
}

const MIME: &[(&str, &str)] = &[
    ("survey.pdf", "application/pdf"),
    ("handbook.pdf", "application/pdf"),
    ("open-encrypted.pdf", "application/pdf"),
    (
        "manual.docx",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    (
        "review.pptx",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ),
    (
        "ledger.xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ("tides.csv", "text/csv"),
    ("voyages.epub", "application/epub+zip"),
    ("tides.odt", "application/vnd.oasis.opendocument.text"),
    ("buoys.ipynb", "application/x-ipynb+json"),
];

fn assert_document(records: &Records, key: &str, name: &str, expected: &Value) {
    let want = &expected[name];
    if want.get("sheets").is_some() {
        assert_sheets(records, key, want);
    } else {
        assert_sentences(records, key, want);
    }
    let mime = MIME.iter().find(|(n, _)| *n == name).unwrap().1;
    for chunk in records.of_key(key) {
        assert_eq!(chunk.metadata["content_type"], mime, "{key}");
    }
}

#[test]
fn a_bucket_of_office_documents_becomes_markdown_chunks_that_cite_their_pages() {
    let (dir, expected) = documents();
    let chroma = Chroma::start();
    let s3 = S3::start();
    let daemon = Daemon::start(&chroma.url());
    s3.create_bucket("library");
    // Served as the generic type many uploads get: the name decides.
    for (name, _) in MIME {
        s3.put(
            "library",
            &format!("docs/{name}"),
            read(dir.path(), name),
            Some("application/octet-stream"),
        );
    }
    let source = daemon.create_source(s3_source(&s3, "library", "library", Some("docs/")));
    let jobs: Vec<_> = MIME
        .iter()
        .map(|(name, _)| {
            let key = format!("docs/{name}");
            (
                key.clone(),
                daemon.invoke(&source, json!({ "object_key": key })),
            )
        })
        .collect();
    for (key, job) in &jobs {
        let job = daemon.wait_complete(job);
        assert!(
            job["stats"]["chunks_upserted"].as_u64().unwrap_or(0) > 0,
            "{key}: nothing indexed: {job}"
        );
    }
    let records = chroma.records("testdb", "library");
    for (name, _) in MIME {
        assert_document(&records, &format!("docs/{name}"), name, &expected);
    }
    // Slides are pages: the table slide is slide 3.
    let (chunks, _) = chunks_of(&records, "docs/review.pptx");
    let berth = chunks
        .iter()
        .find(|c| c.document.contains("Berth Table"))
        .unwrap();
    assert_eq!(berth.metadata["page_start"], 3);
    assert_eq!(berth.metadata["page_end"], 3);

    // Re-syncing unchanged documents converts and embeds nothing again.
    let again = daemon.invoke(&source, json!({ "object_key": "docs/survey.pdf" }));
    let again = daemon.wait_complete(&again);
    assert_eq!(again["stats"]["unchanged"], 1, "{again}");
    assert_eq!(again["stats"]["chunks_upserted"].as_u64().unwrap_or(0), 0);
}

/// A hostile file and what its reason must say (any reason will do for
/// files a lenient reader may also partly recover).
const HOSTILE: &[(&str, Option<&str>)] = &[
    ("locked.pdf", Some("password")),
    ("scanned.pdf", Some("no text layer")),
    ("ledger.pdf", Some("max_extracted_bytes")),
    ("truncated.pdf", None),
    ("deep.pdf", None),
    ("noise.pdf", None),
    ("bomb.docx", Some("decompression bomb")),
    ("garbage.pptx", Some("ZIP")),
    ("fake.xlsx", Some("not a valid")),
    ("legacy.doc", Some("legacy binary Word")),
    ("huge.xlsx", Some("out of memory")),
];

#[test]
fn hostile_documents_end_with_a_reason_and_the_daemon_carries_on() {
    let (dir, _) = documents();
    let chroma = Chroma::start();
    let s3 = S3::start();
    // The 10,000-page ledger makes more text than this allows.
    let config = format!(
        "{TEST_CONFIG}\n[extract]\nmax_extracted_bytes = 262144\nmax_memory_bytes = 1073741824\n"
    );
    let mut daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let pid = daemon.pid().unwrap();
    s3.create_bucket("untrusted");
    for (name, _) in HOSTILE {
        s3.put("untrusted", name, read(dir.path(), name), None);
    }
    s3.put(
        "untrusted",
        "survey.pdf",
        read(dir.path(), "survey.pdf"),
        None,
    );
    let source = daemon.create_source(s3_source(&s3, "untrusted", "untrusted", None));
    let jobs: Vec<_> = HOSTILE
        .iter()
        .map(|(name, reason)| {
            let job = daemon.invoke(&source, json!({ "object_key": name }));
            (*name, *reason, job)
        })
        .collect();
    let fine = daemon.invoke(&source, json!({ "object_key": "survey.pdf" }));
    let mut reasons = BTreeMap::new();
    for (name, reason, job) in &jobs {
        let job = daemon.wait_complete(job);
        assert_eq!(job["attempt"], 1, "{name}: retried: {job}");
        let said = job["stats"]["skipped_reasons"][name]
            .as_str()
            .map(str::to_string);
        match (reason, &said) {
            (Some(wanted), Some(said)) => assert!(
                said.contains(wanted),
                "{name}: reason `{said}` does not say `{wanted}`"
            ),
            (Some(wanted), None) => panic!("{name}: not skipped (wanted `{wanted}`): {job}"),
            (None, _) => assert!(
                said.is_some() || job["stats"]["chunks_upserted"].as_u64() > Some(0),
                "{name}: neither chunks nor a reason: {job}"
            ),
        }
        reasons.insert(*name, said);
    }
    daemon.wait_complete(&fine);
    let records = chroma.records("testdb", "untrusted");
    assert!(!records.of_key("survey.pdf").is_empty());
    assert!(daemon.is_running(), "the daemon died");
    assert_eq!(daemon.pid(), Some(pid), "the daemon is the same process");
    println!("reasons: {reasons:#?}");
}

#[test]
fn documents_in_a_directory_are_converted_too() {
    let (dir, expected) = documents();
    let chroma = Chroma::start();
    let root = tempfile::tempdir().unwrap();
    for name in ["survey.pdf", "manual.docx", "ledger.xlsx"] {
        std::fs::copy(dir.path().join(name), root.path().join(name)).unwrap();
    }
    sync_directory(
        &chroma,
        root.path(),
        None,
        "folder",
        Duration::from_secs(300),
    );
    let records = chroma.records("testdb", "folder");
    for name in ["survey.pdf", "manual.docx", "ledger.xlsx"] {
        assert_document(&records, name, name, &expected);
    }
}

/// Issue 32: real PDFs were skipped by default in GitHub and filesystem
/// sources, whose `max_file_bytes` (1 MiB) is a text-file limit. Documents
/// converted in the child have their own, `max_document_bytes`: with the
/// text limit below every file here, the documents still sync and the text
/// file is skipped naming its limit.
#[test]
fn documents_have_their_own_size_limit_apart_from_text_files() {
    let (dir, expected) = documents();
    let chroma = Chroma::start();
    let root = tempfile::tempdir().unwrap();
    for name in ["survey.pdf", "manual.docx"] {
        std::fs::copy(dir.path().join(name), root.path().join(name)).unwrap();
    }
    std::fs::write(root.path().join("notes.md"), "# Notes\n\n".repeat(40)).unwrap();
    let (_daemon, job) = sync_directory(
        &chroma,
        root.path(),
        Some(100),
        "limits",
        Duration::from_secs(300),
    );
    let records = chroma.records("testdb", "limits");
    for name in ["survey.pdf", "manual.docx"] {
        assert_document(&records, name, name, &expected);
    }
    let reason = job["stats"]["skipped_reasons"]["notes.md"]
        .as_str()
        .unwrap_or_default();
    assert!(reason.contains("max_file_bytes"), "{job}");
}

#[test]
fn documents_in_a_repository_are_converted() {
    let (dir, expected) = documents();
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    for name in ["survey.pdf", "review.pptx", "tides.odt"] {
        repo.write(&format!("docs/{name}"), read(dir.path(), name));
    }
    repo.commit("reports");
    github.add_repo("acme/reports", &repo);
    let daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[("CHROMA_SYNCD_GITHUB_API_URL", &github.url)],
    );
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "github": {"repository": "acme/reports"},
    }));
    let job = daemon.invoke(&source, json!({"target_collection_name": "reports"}));
    daemon.wait_complete(&job);
    let records = chroma.records("testdb", "reports");
    for name in ["survey.pdf", "review.pptx", "tides.odt"] {
        assert_document(&records, &format!("docs/{name}"), name, &expected);
    }
}

#[test]
fn documents_a_crawled_site_links_to_are_converted() {
    let (dir, expected) = documents();
    let site_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        site_dir.path().join("index.html"),
        "<html><body><h1>Reports</h1><p>The survey: <a href=\"/survey.pdf\">PDF</a>, \
         the <a href=\"/review.pptx\">deck</a>.</p></body></html>",
    )
    .unwrap();
    for name in ["survey.pdf", "review.pptx"] {
        std::fs::copy(dir.path().join(name), site_dir.path().join(name)).unwrap();
    }
    let site = FixtureSite::serve(site_dir.path());
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS", "true")],
    );
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "web_scrape": {"starting_url": site.url("/")},
    }));
    let job = daemon.invoke(&source, json!({"target_collection_name": "site"}));
    daemon.wait_complete(&job);
    let records = chroma.records("testdb", "site");
    for name in ["survey.pdf", "review.pptx"] {
        assert_document(&records, &site.url(&format!("/{name}")), name, &expected);
    }
}

/// The converter the daemon runs documents through (a confined child).
fn converter(max_seconds: f64) -> chroma_syncd::extract::isolate::Converter {
    use chroma_syncd::extract::Limits;
    use chroma_syncd::extract::isolate::{Converter, IsolationSettings};
    Converter::new(IsolationSettings {
        program: PathBuf::from(env!("CARGO_BIN_EXE_chroma-syncd")),
        limits: Limits {
            max_extracted_bytes: 64 << 20,
            pdfium_library: Some(home().join(".cache/chroma-syncd/pdfium/libpdfium.so")),
            ocr: None,
            figures: None,
        },
        max_seconds,
        max_memory_bytes: 1 << 30,
        max_concurrent: 1,
        sandbox: true,
        ocr_off: None,
    })
}

/// Issue 32: running-header detection took pages that look alike — each
/// opening with "Chapter N of the handbook" and a paragraph that differs
/// from the other pages' only in its numbers — for furniture, and dropped
/// headings and lines mid-sentence. Only the real running header and
/// footer (the same text but for the page number, at the same place on
/// every page) go; every word of the content comes through, in order.
#[test]
fn pages_alike_but_for_their_numbers_keep_every_word_and_lose_only_their_running_header() {
    let (dir, expected) = documents();
    for name in ["handbook.pdf", "handbook-plain.pdf"] {
        assert_handbook(name, &read(dir.path(), name), &expected[name]);
    }
}

fn assert_handbook(name: &str, pdf: &[u8], want: &Value) {
    use chroma_syncd::extract::DocumentFormat;
    use chroma_syncd::extract::converted::Section;
    let converted = runtime()
        .block_on(converter(120.0).convert(DocumentFormat::Pdf, bytes::Bytes::from(pdf.to_vec())))
        .unwrap();
    let mut text = String::new();
    for section in &converted.sections {
        let Section::Text { markdown, .. } = section else {
            panic!("no tables in the handbook: {section:?}")
        };
        text.push_str(markdown);
        text.push('\n');
    }
    let words: Vec<&str> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let wanted: Vec<&str> = want["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(words, wanted, "{name}: its words, in order, in:\n{text}");
    for heading in want["headings"].as_array().unwrap() {
        let heading = format!("# {}", heading.as_str().unwrap());
        assert!(
            text.lines()
                .any(|line| line.ends_with(&heading) && line.starts_with('#')),
            "{name}: `{heading}` is not a heading in:\n{text}"
        );
    }
    for furniture in want["furniture"].as_array().unwrap() {
        let furniture = furniture.as_str().unwrap();
        assert!(
            !text.contains(furniture),
            "{name}: `{furniture}` leaked in:\n{text}"
        );
    }
}

#[test]
fn a_conversion_past_its_time_is_stopped_and_says_so() {
    use chroma_syncd::extract::DocumentFormat;
    let (dir, _) = documents();
    let ledger = bytes::Bytes::from(read(dir.path(), "ledger.pdf"));
    // Ten thousand pages cannot be read in a millisecond: the child is
    // killed and the document skipped with the limit's name.
    let stopped = runtime()
        .block_on(converter(0.001).convert(DocumentFormat::Pdf, ledger.clone()))
        .unwrap_err();
    assert!(
        stopped.0.contains("max_seconds_per_document"),
        "{stopped:?}"
    );
    // With time enough, the same document converts.
    let converted = runtime()
        .block_on(converter(120.0).convert(DocumentFormat::Pdf, ledger))
        .unwrap();
    assert_eq!(
        converted.sections.len(),
        10_000,
        "one section per page of the ledger"
    );
}
