//! `POST /api/v1/add-file`, end to end: a user uploads a file (the way
//! `curl -F` does), polls its invocation like any other, and finds the
//! chunks in Chroma; hostile or broken uploads get a clear 4xx and leave
//! nothing behind on disk.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::blocking::multipart::{Form, Part};
use serde_json::{Value, json};

/// A daemon taking files of at most 1 MiB, one upload at a time, and
/// syncing text files over 4 KiB a 4 KiB segment at a time.
fn daemon(chroma: &Chroma) -> Daemon {
    Daemon::start_with(
        &chroma.url(),
        &format!(
            "{TEST_CONFIG}\n[uploads]\nmax_file_bytes = 1048576\nmax_in_flight = 1\n\
             [s3]\nstream_segment_bytes = 4096\n"
        ),
        &[],
    )
}

/// Files left in the upload store (finished ones and `.part`s).
fn stored_uploads(daemon: &Daemon) -> Vec<String> {
    match std::fs::read_dir(daemon.state.path().join("uploads")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn upload(daemon: &Daemon, length: Option<usize>, form: Form) -> (u16, Value) {
    let mut request = http()
        .post(format!("{}/api/v1/add-file", daemon.url()))
        .multipart(form);
    if let Some(length) = length {
        request = request.header("x-upload-content-length", length.to_string());
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// Runs `script` in the test venv's Python; returns the file it made.
fn python_made(script: &str, made: &Path) -> Vec<u8> {
    let status = std::process::Command::new(venv().join("bin/python"))
        .args(["-c", script])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(made).unwrap()
}

/// Uploads `bytes` as `filename` into `collection` of `testdb`; waits for
/// its invocation to complete.
fn upload_and_wait(daemon: &Daemon, collection: &str, filename: &str, bytes: Vec<u8>) {
    let length = bytes.len();
    let form = Form::new()
        .text("database_name", "testdb")
        .text("collection_name", collection.to_string())
        .part("file", Part::bytes(bytes).file_name(filename.to_string()));
    let (status, created) = upload(daemon, Some(length), form);
    assert_eq!(status, 201, "{created}");
    daemon.wait_complete(created["invocation_id"].as_str().unwrap());
}

fn runbook() -> String {
    let mut text = String::from("# Disk full runbook\n\n");
    for i in 0..40 {
        text.push_str(&format!(
            "## Step {i}\n\nCheck volume {i} with df -h, then remove the oldest logs of service \
             {i} and confirm the alert clears within five minutes.\n\n"
        ));
    }
    text
}

#[test]
fn an_uploaded_file_is_synced_with_its_custom_id_and_metadata_then_removed() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let text = runbook();
    let form = Form::new()
        .text("database_name", "testdb")
        .text("collection_name", "uploads")
        .part(
            "file",
            Part::bytes(text.clone().into_bytes())
                .file_name("disk-full.md")
                .mime_str("application/octet-stream")
                .unwrap(),
        )
        // Fields other than the names may follow the file.
        .text("custom_id", "runbook-7")
        .text(
            "metadata",
            json!({"team": "sre", "tags": ["disk", "oncall"]}).to_string(),
        );
    let (status, created) = upload(&daemon, Some(text.len()), form);
    assert_eq!(status, 201, "{created}");
    assert_matches("CreateJobResponse", &created);
    let id = created["invocation_id"].as_str().unwrap();
    let job = daemon.wait_complete(id);
    // Seed 001's fields, with the upload's own metadata kind (an extension).
    assert_eq!(job["id"], id);
    assert!(job["source_id"].is_null(), "{job}");
    assert_eq!(job["metadata"]["database_name"], "testdb");
    assert_eq!(job["metadata"]["file"]["file_name"], "disk-full.md");
    assert_eq!(job["metadata"]["collection_name"], "uploads");

    let records = chroma.records("testdb", "uploads");
    assert!(records.ids().len() > 1, "{:?}", records.ids());
    let mut ids = records.ids();
    ids.sort_by_key(|id| id.rsplit('-').next().unwrap().parse::<u32>().unwrap());
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(id, &format!("runbook-7-{n}"));
    }
    let joined: String = records.rows.iter().map(|r| r.document.clone()).collect();
    assert!(joined.contains("remove the oldest logs of service 39"));
    for record in &records.rows {
        assert_eq!(record.metadata["team"], "sre");
        assert_eq!(record.metadata["tags"], json!(["disk", "oncall"]));
        assert_eq!(record.metadata["custom_id"], "runbook-7");
    }
    // Completed: its stored file is gone.
    wait_until(
        "the stored upload to be removed",
        Duration::from_secs(30),
        || stored_uploads(&daemon).is_empty().then_some(()),
    );
}

#[test]
fn an_uploaded_word_document_is_converted_and_keyed_by_its_filename() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let dir = tempfile::tempdir().unwrap();
    let docx = dir.path().join("Quarterly review.docx");
    let script = format!(
        "import docx\nd = docx.Document()\nd.add_heading('Quarterly review', 1)\n\
         d.add_paragraph('The kestrel budget grew by twelve percent this quarter.')\n\
         d.save({:?})\n",
        docx.to_str().unwrap()
    );
    let bytes = python_made(&script, &docx);
    upload_and_wait(&daemon, "reviews", "Quarterly review.docx", bytes);
    let records = chroma.records("testdb", "reviews");
    let prefix = sha256_hex("Quarterly review.docx");
    assert!(!records.ids().is_empty());
    for (id, record) in records.ids().iter().zip(&records.rows) {
        assert!(id.starts_with(&format!("{prefix}-")), "{id}");
        assert_eq!(record.metadata["source_type"], "upload");
    }
    let joined: String = records.rows.iter().map(|r| r.document.clone()).collect();
    assert!(joined.contains("# Quarterly review"), "{joined}");
    assert!(joined.contains("kestrel budget grew by twelve percent"));
}

#[test]
fn bad_uploads_are_refused_before_anything_is_stored() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let file = || Part::bytes(b"# Notes\n\nhello\n".to_vec()).file_name("notes.md");
    let refused = |length: Option<usize>, form: Form, status: u16, expected: &str| {
        let (got, body) = upload(&daemon, length, form);
        assert_eq!(got, status, "{expected}: {body}");
        assert_matches("ErrorResponse", &body);
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expected), "{expected}: {message}");
    };
    let named = || {
        Form::new()
            .text("database_name", "testdb")
            .text("collection_name", "notes")
    };
    refused(
        None,
        named().part("file", file()),
        400,
        "x-upload-content-length",
    );
    refused(
        Some(2 << 20),
        named().part("file", file()),
        413,
        "max_file_bytes",
    );
    // The names must come before the file.
    refused(
        Some(16),
        Form::new()
            .part("file", file())
            .text("database_name", "testdb")
            .text("collection_name", "notes"),
        400,
        "before the `file` part",
    );
    refused(
        Some(16),
        named().part("file", file()).text("metadata", "{not json"),
        400,
        "metadata",
    );
    refused(
        Some(16),
        named()
            .part("file", file())
            .text("metadata", json!({"chroma_x": 1}).to_string()),
        400,
        "chroma_",
    );
    refused(
        Some(16),
        named()
            .part("file", file())
            .text("metadata", json!({"mixed": [1, "a"]}).to_string()),
        400,
        "mixed",
    );
    refused(
        Some(16),
        named()
            .text("custom_id", "x".repeat(121))
            .part("file", file()),
        400,
        "custom_id",
    );
    refused(Some(999), named().part("file", file()), 400, "said 999");
    refused(Some(16), named(), 400, "`file` part is missing");
    refused(
        Some(16),
        named().text("colour", "blue").part("file", file()),
        400,
        "unknown field",
    );
    // A file larger than the limit although its header said it fits.
    refused(
        Some(1 << 20),
        named().part(
            "file",
            Part::bytes(vec![b'a'; (1 << 20) + 10]).file_name("big.txt"),
        ),
        413,
        "max_file_bytes",
    );
    // A token-less caller from another database would be a 403; an
    // invalid collection name is a 400 before the file is read.
    refused(
        Some(16),
        Form::new()
            .text("database_name", "testdb")
            .text("collection_name", "a")
            .part("file", file()),
        400,
        "collection_name",
    );
    assert!(
        stored_uploads(&daemon).is_empty(),
        "{:?}",
        stored_uploads(&daemon)
    );
    let (_, jobs) = daemon.request(reqwest::Method::GET, "/api/v1/invocations", None);
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
}

#[test]
fn a_client_that_disconnects_mid_upload_leaves_nothing_and_the_cap_answers_429() {
    let chroma = Chroma::start();
    let mut daemon = daemon(&chroma);
    let pid = daemon.pid();
    let stalled = stalled_upload(&daemon, None);
    // The part file exists while the upload is in flight…
    wait_until("the upload to start", Duration::from_secs(30), || {
        (!stored_uploads(&daemon).is_empty()).then_some(())
    });
    // …and takes the only upload slot.
    let (status, body) = upload(
        &daemon,
        Some(5),
        Form::new()
            .text("database_name", "testdb")
            .text("collection_name", "notes")
            .part("file", Part::bytes(b"hello".to_vec()).file_name("a.txt")),
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_uploads");
    // The client goes away mid-file: nothing half-written stays.
    drop(stalled);
    wait_until(
        "the partial upload to be removed",
        Duration::from_secs(30),
        || stored_uploads(&daemon).is_empty().then_some(()),
    );
    assert!(daemon.is_running());
    assert_eq!(daemon.pid(), pid);
    let (_, jobs) = daemon.request(reqwest::Method::GET, "/api/v1/invocations", None);
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");
    // The slot is free again.
    let (status, body) = upload(
        &daemon,
        Some(5),
        Form::new()
            .text("database_name", "testdb")
            .text("collection_name", "notes")
            .part("file", Part::bytes(b"hello".to_vec()).file_name("a.txt")),
    );
    assert_eq!(status, 201, "{body}");
}

#[test]
fn the_cli_uploads_a_file_and_waits_for_it() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("oncall.md");
    std::fs::write(&file, runbook()).unwrap();
    let output = binary(&chroma.url(), daemon.state.path())
        .env("CHROMA_SYNCD_API_URL", daemon.url())
        .args(["upload", file.to_str().unwrap(), "--database", "testdb"])
        .args(["--collection", "cli-uploads", "--custom-id", "oncall"])
        .args(["--metadata", r#"{"team": "sre"}"#, "--wait"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let records = chroma.records("testdb", "cli-uploads");
    assert!(records.ids().iter().all(|id| id.starts_with("oncall-")));
    assert!(!records.ids().is_empty());
    assert!(Path::new(&daemon.state.path().join("uploads")).exists());
    assert!(stored_uploads(&daemon).is_empty());
}

#[test]
fn with_a_shared_postgres_queue_the_file_waits_in_the_queue_database() {
    let chroma = Chroma::start();
    let database = PgDatabase::create();
    let daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[("CHROMA_SYNCD_QUEUE_URL", &database.url)],
    );
    // Larger than a 1 MiB piece, so it is stored and read back in pieces:
    // a Word document carrying a photo-like (incompressible) image.
    let dir = tempfile::tempdir().unwrap();
    let docx = dir.path().join("site-survey.docx");
    let script = format!(
        "import docx, os\nfrom PIL import Image\n\
         Image.frombytes('RGB', (700, 700), os.urandom(700 * 700 * 3)).save({png:?})\n\
         d = docx.Document()\nd.add_paragraph('The survey photo shows the north ridge.')\n\
         d.add_picture({png:?})\n\
         d.add_paragraph('The final marker sentence closes the survey.')\nd.save({out:?})\n",
        png = dir.path().join("photo.png").to_str().unwrap(),
        out = docx.to_str().unwrap()
    );
    let bytes = python_made(&script, &docx);
    assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
    upload_and_wait(&daemon, "shared", "site-survey.docx", bytes);
    let records = chroma.records("testdb", "shared");
    let joined: String = records.rows.iter().map(|r| r.document.clone()).collect();
    assert!(joined.contains("north ridge"), "{joined}");
    assert!(joined.contains("final marker sentence"), "{joined}");
    // Nothing on local disk, and the pieces are gone from the database.
    assert!(stored_uploads(&daemon).is_empty());
    let pieces = runtime().block_on(async {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&database.url).await.unwrap();
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM upload_blobs")
            .fetch_one(&mut db)
            .await
            .unwrap();
        count
    });
    assert_eq!(pieces, 0);
}

#[test]
fn a_binary_upload_is_skipped_with_its_reason_and_removed() {
    let chroma = Chroma::start();
    let daemon = daemon(&chroma);
    let bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let form = Form::new()
        .text("database_name", "testdb")
        .text("collection_name", "pictures")
        .part("file", Part::bytes(bytes.clone()).file_name("diagram.png"));
    let (status, created) = upload(&daemon, Some(bytes.len()), form);
    assert_eq!(status, 201, "{created}");
    let job = daemon.wait_complete(created["invocation_id"].as_str().unwrap());
    assert_eq!(job["stats"]["skipped"], 1, "{job}");
    let reason = job["stats"]["skipped_reasons"]["diagram.png"]
        .as_str()
        .unwrap_or_default();
    // Images are documents read by OCR: this one is cut short.
    assert!(reason.contains("image"), "{job}");
    assert_eq!(job["stats"]["chunks_upserted"], 0);
    assert!(stored_uploads(&daemon).is_empty());
}

/// Issue 31: a document replaced or skipped removes only the chunks its own
/// source wrote. A binary upload named `README.md`, skipped, used to delete
/// another source's `README.md` in the same collection.
#[test]
fn a_skipped_upload_does_not_delete_another_sources_document_of_the_same_name() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("shared-docs");
    s3.put(
        "shared-docs",
        "README.md",
        "# Team handbook\n\nThe on-call rota lives in the wiki; page the lead for outages.\n",
        None,
    );
    let daemon = daemon(&chroma);
    let source = daemon.create_source(s3_source(&s3, "shared-docs", "shared", None));
    let job = daemon.invoke(&source, serde_json::json!({"object_key": "README.md"}));
    daemon.wait_complete(&job);
    let before = chroma.records("testdb", "shared").of_key("README.md").len();
    assert!(before > 0);

    let bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    let form = Form::new()
        .text("database_name", "testdb")
        .text("collection_name", "shared")
        .text("content_type", "image/png")
        .part("file", Part::bytes(bytes.clone()).file_name("README.md"));
    let (status, created) = upload(&daemon, Some(bytes.len()), form);
    assert_eq!(status, 201, "{created}");
    let job = daemon.wait_complete(created["invocation_id"].as_str().unwrap());
    assert_eq!(job["stats"]["skipped"], 1, "{job}");
    let records = chroma.records("testdb", "shared");
    let kept = records.of_key("README.md");
    assert_eq!(kept.len(), before, "the S3 source's README.md lost chunks");
    assert!(
        kept.iter()
            .all(|r| r.metadata["source_id"] == source.as_str())
    );
}

/// Issue 31: a body that never sends a multipart boundary was buffered by
/// the parser until the file limit (200 MiB per upload slot). Now 64 KiB
/// without a boundary or the end of a part's headers is a 400 at once, and
/// the body may not run past the declared file plus a small margin.
#[test]
fn a_body_without_boundaries_is_refused_early() {
    let chroma = Chroma::start();
    let mut daemon = daemon(&chroma);
    let pid = daemon.pid();
    let send = |head: &str, filler: usize, length: usize, declared: usize| {
        let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        write!(
            stream,
            "POST /api/v1/add-file HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: \
             multipart/form-data; boundary=XBOUNDARYX\r\nContent-Length: {length}\r\n\
             x-upload-content-length: {declared}\r\nConnection: close\r\n\r\n{head}"
        )
        .unwrap();
        // Send until the daemon answers and closes (a refused body is not
        // read to its end); the answer is whatever it said.
        let piece = vec![b'z'; 64 * 1024];
        let mut sent = 0;
        while sent < filler && stream.write_all(&piece).is_ok() {
            sent += piece.len();
        }
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
        (answer, sent)
    };
    // 8 MiB of preamble with no boundary, declared as a 1-byte file.
    let (answer, sent) = send("", 8 << 20, (8 << 20) + 100, 1);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("boundary"), "{answer}");
    assert!(
        sent < 8 << 20,
        "the daemon read the whole body ({sent} bytes)"
    );
    // A part whose header block never ends.
    let (answer, _) = send(
        "--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"database_name\"\r\nX-Pad: ",
        8 << 20,
        (8 << 20) + 200,
        1,
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("boundary"), "{answer}");
    assert!(daemon.is_running());
    assert_eq!(daemon.pid(), pid);
    // Nothing was stored; a proper upload still works.
    assert!(stored_uploads(&daemon).is_empty());
    upload_and_wait(
        &daemon,
        "after",
        "ok.txt",
        b"still serving uploads".to_vec(),
    );
}

/// Issue 31: uploads cannot fill the disk: one that would pass `[uploads]
/// max_pending_bytes` is a 429, and one that would leave the state
/// directory's filesystem with less than `min_free_bytes` a 507 — both
/// before anything is stored.
#[test]
fn uploads_past_the_pending_budget_or_the_free_space_margin_are_refused() {
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        &format!("{TEST_CONFIG}\n[uploads]\nmax_pending_bytes = 1000\n"),
        &[],
    );
    let form = |bytes: Vec<u8>| {
        Form::new()
            .text("database_name", "testdb")
            .text("collection_name", "budget")
            .part("file", Part::bytes(bytes).file_name("big.txt"))
    };
    let (status, body) = upload(&daemon, Some(1001), form(vec![b'a'; 1001]));
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_pending_upload_bytes");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_pending_bytes")
    );
    let (status, body) = upload(&daemon, Some(900), form(vec![b'a'; 900]));
    assert_eq!(status, 201, "{body}");
    assert!(
        stored_uploads(&daemon)
            .iter()
            .all(|f| !f.ends_with(".part"))
    );

    let tight = Daemon::start_with(
        &chroma.url(),
        &format!("{TEST_CONFIG}\n[uploads]\nmin_free_bytes = 1125899906842624000\n"),
        &[],
    );
    let (status, body) = upload(&tight, Some(5), form(b"hello".to_vec()));
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"], "insufficient_storage");
    assert!(stored_uploads(&tight).is_empty());
}

/// Issue 31: a big HTML document is not parsed in the daemon. A 24 MiB page
/// of empty elements (whose DOM is tens of times its size) goes to the
/// converter child, under its limits: the daemon's memory barely moves and
/// the page's text is indexed (or the page skipped with the limit named).
#[test]
fn a_big_html_upload_is_converted_outside_the_daemon() {
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        &format!("{TEST_CONFIG}\n[uploads]\nmax_file_bytes = 67108864\n"),
        &[],
    );
    let mut html = String::from("<html><body><h1>Quarterly lighthouse report</h1>");
    html.push_str("<p>The keeper logged every storm on the northern cape.</p>");
    let filler = "<div><span></span></div>";
    while html.len() < 24 << 20 {
        html.push_str(filler);
    }
    html.push_str("</body></html>");
    let before = daemon.peak_rss_kib().unwrap();
    let bytes = html.into_bytes();
    let length = bytes.len();
    let form = Form::new()
        .text("database_name", "testdb")
        .text("collection_name", "pages")
        .part("file", Part::bytes(bytes).file_name("report.html"));
    let (status, created) = upload(&daemon, Some(length), form);
    assert_eq!(status, 201, "{created}");
    let job = daemon.wait_finished(
        created["invocation_id"].as_str().unwrap(),
        Duration::from_secs(300),
    );
    let after = daemon.peak_rss_kib().unwrap();
    // Parsed in the daemon, this page cost hundreds of MB; converted in the
    // child, the daemon holds its bytes a few times at most.
    assert!(
        after.saturating_sub(before) < 200 * 1024,
        "the daemon's peak memory rose {} MiB: {job}",
        after.saturating_sub(before) / 1024
    );
    assert!(job["status"]["complete"].is_object(), "{job}");
    let chunks = chroma.records("testdb", "pages");
    let indexed = chunks
        .rows
        .iter()
        .any(|r| r.document.contains("northern cape"));
    let skipped = job["stats"]["skipped_reasons"]["report.html"].as_str();
    assert!(indexed || skipped.is_some(), "{job}");
}
