//! User story: a team keeps its runbooks in a directory shared with the
//! daemon (a volume beside a sidecar, or a laptop backfilling). They allow
//! the directory in the daemon's config, create a `filesystem` source, sync
//! it, edit, rename and delete files, and later let the daemon watch it.
//! Nothing outside the allowed directory can be read.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ALLOWED_ROOTS: &str = "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS";

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn runbook(title: &str, steps: usize) -> String {
    let mut text = format!("# {title}\n\n");
    for i in 0..steps {
        text.push_str(&format!(
            "## Step {i}\n\nDuring {title}, step {i} tells the on-call engineer what to check.\n\n"
        ));
    }
    text
}

fn keys(records: &Records) -> BTreeSet<String> {
    records.document_keys()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A daemon allowed to read `allowed` (and nothing else).
fn daemon_for(chroma: &Chroma, allowed: &Path) -> Daemon {
    Daemon::start_with(
        &chroma.url(),
        &format!("{TEST_CONFIG}\n[filesystem]\nwatch_debounce_ms = 200\n"),
        &[(ALLOWED_ROOTS, allowed.to_str().unwrap())],
    )
}

fn filesystem_source(root: &Path, collection: &str, extra: Value) -> Value {
    let mut config = json!({"root": root.to_str().unwrap(), "collection_name": collection});
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    json!({"database_name": "testdb", "filesystem": config})
}

#[test]
fn a_directory_syncs_then_only_what_changed_is_rewritten() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("runbooks");
    write(&root, "disk-full.md", &runbook("Disk full", 3));
    write(&root, "network/dns.md", &runbook("DNS outage", 4));
    write(&root, "network/old.md", &runbook("Old router", 1));
    write(&root, "node_modules/dep/index.js", "module.exports = 1;\n");
    std::fs::write(root.join("diagram.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let daemon = daemon_for(&chroma, allowed.path());
    let source = daemon.create_source(filesystem_source(&root, "runbooks", json!({})));

    // No path and no collection: the whole root into the source's collection.
    let first = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(first["metadata"]["filesystem"], json!({"path": null}));
    assert_eq!(first["metadata"]["collection_name"], "runbooks");
    assert!(
        // Images are documents read by OCR: this one is cut short.
        first["stats"]["skipped_reasons"]["diagram.png"]
            .as_str()
            .unwrap()
            .contains("image"),
        "{}",
        first["stats"]
    );
    let records = chroma.records("testdb", "runbooks");
    assert_eq!(
        keys(&records),
        set(&["disk-full.md", "network/dns.md", "network/old.md"]),
        "binaries and vendored trees stay out"
    );
    for record in &records.rows {
        let path = record.metadata["document_key"].as_str().unwrap();
        assert!(record.id.starts_with(&format!("{}-", sha256_hex(path))));
        let content = std::fs::read_to_string(root.join(path)).unwrap();
        assert_eq!(
            record.metadata["version_key"],
            sha256_hex(&content).as_str()
        );
        assert_eq!(record.metadata["source_type"], "filesystem");
        assert_eq!(record.metadata["source_id"], source.as_str());
    }
    let dns_before = records.of_key("network/dns.md").len();
    assert!(dns_before >= 1);

    // Edit one file, rename another, delete a third, add a fourth.
    write(&root, "disk-full.md", &runbook("Disk full (revised)", 3));
    std::fs::rename(
        root.join("network/dns.md"),
        root.join("network/name-resolution.md"),
    )
    .unwrap();
    std::fs::remove_file(root.join("network/old.md")).unwrap();
    write(&root, "certificates.md", &runbook("Expired certificate", 2));
    let second = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    let records = chroma.records("testdb", "runbooks");
    assert_eq!(
        keys(&records),
        set(&[
            "certificates.md",
            "disk-full.md",
            "network/name-resolution.md"
        ])
    );
    assert!(
        records.of_key("disk-full.md")[0]
            .document
            .contains("revised")
    );
    assert!(second["stats"]["chunks_deleted"].as_u64().unwrap() > dns_before as u64);

    // Nothing changed: nothing is embedded or written, every file is unchanged.
    let third = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(third["stats"]["chunks_upserted"], 0, "{}", third["stats"]);
    assert_eq!(third["stats"]["unchanged"], 3, "{}", third["stats"]);
    assert_eq!(chroma.records("testdb", "runbooks").ids(), records.ids());

    // One file by path: only it is read.
    write(
        &root,
        "certificates.md",
        &runbook("Expired certificate (v2)", 2),
    );
    let one = daemon.wait_complete(&daemon.invoke(&source, json!({"path": "certificates.md"})));
    assert_eq!(one["stats"]["documents"], 1, "{}", one["stats"]);
    assert!(
        chroma
            .records("testdb", "runbooks")
            .of_key("certificates.md")[0]
            .document
            .contains("(v2)")
    );

    // A path that is gone: its chunks go, and asking for it by name says so.
    std::fs::remove_file(root.join("certificates.md")).unwrap();
    let job = daemon.invoke(&source, json!({"path": "certificates.md"}));
    let (_, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(
        keys(&chroma.records("testdb", "runbooks")),
        set(&["disk-full.md", "network/name-resolution.md"])
    );

    // An emptied root (an unmounted volume looks like this) removes nothing.
    let kept = chroma.records("testdb", "runbooks").ids();
    std::fs::remove_dir_all(&root).unwrap();
    std::fs::create_dir(&root).unwrap();
    let job = daemon.invoke(&source, json!({}));
    let (_, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("refusing to remove"), "{error}");
    assert_eq!(chroma.records("testdb", "runbooks").ids(), kept);
}

/// Waits until files written now are older than the daemon's margin for
/// racy writes (`sources::filesystem::stat::SETTLE`, two seconds): only
/// then does a file's stat vouch for its content.
fn let_files_settle() {
    std::thread::sleep(Duration::from_millis(2_500));
}

fn file_stats(records: &Records) -> std::collections::BTreeMap<String, Value> {
    records
        .rows
        .iter()
        .map(|r| {
            (
                r.metadata["document_key"].as_str().unwrap().to_string(),
                r.metadata["file_stat"].clone(),
            )
        })
        .collect()
}

#[test]
fn an_unchanged_file_is_not_read_again_and_a_touched_one_is_only_re_stamped() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("runbooks");
    write(&root, "disk-full.md", &runbook("Disk full", 3));
    write(&root, "dns.md", &runbook("DNS outage", 4));
    write(&root, "tls.md", &runbook("Expired certificate", 2));
    let_files_settle();
    let daemon = daemon_for(&chroma, allowed.path());
    let source = daemon.create_source(filesystem_source(&root, "runbooks", json!({})));

    // Every chunk carries its file's stat: size first.
    let first = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(first["stats"]["documents"], 3, "{}", first["stats"]);
    let records = chroma.records("testdb", "runbooks");
    for record in &records.rows {
        let path = record.metadata["document_key"].as_str().unwrap();
        let size = std::fs::metadata(root.join(path)).unwrap().len();
        let stat = record.metadata["file_stat"].as_str().unwrap();
        assert!(stat.starts_with(&format!("{size}:")), "{path}: {stat}");
    }

    // Nothing changed: no file is even read.
    let again = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(again["stats"]["unchanged"], 3, "{}", again["stats"]);
    assert_eq!(again["stats"]["unchanged_unread"], 3, "{}", again["stats"]);
    assert_eq!(again["stats"]["chunks_upserted"], 0, "{}", again["stats"]);
    assert_eq!(chroma.records("testdb", "runbooks").ids(), records.ids());

    // One file touched (same content, new modification time); another
    // rewritten with its size and modification time kept, as `cp -p` or
    // `rsync -t` would. The first is re-stamped, the second re-embedded.
    let touched = std::fs::File::options()
        .write(true)
        .open(root.join("dns.md"))
        .unwrap();
    touched
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    let tls = root.join("tls.md");
    let old = std::fs::metadata(&tls).unwrap();
    let same_size = runbook("Expired certificaTE", 2);
    assert_eq!(same_size.len() as u64, old.len());
    std::fs::write(&tls, &same_size).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tls)
        .unwrap()
        .set_modified(old.modified().unwrap())
        .unwrap();
    let_files_settle();
    let third = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(third["stats"]["unchanged_unread"], 1, "{}", third["stats"]);
    assert_eq!(third["stats"]["documents"], 2, "{}", third["stats"]);
    let after = chroma.records("testdb", "runbooks");
    assert!(
        after.of_key("tls.md")[0].document.contains("certificaTE"),
        "the rewritten file is stored as rewritten"
    );
    let dns_chunks = records.of_key("dns.md").len() as u64;
    assert!(
        third["stats"]["chunks_restamped"].as_u64().unwrap() >= dns_chunks,
        "{}",
        third["stats"]
    );
    let (before, now) = (file_stats(&records), file_stats(&after));
    assert_eq!(before["disk-full.md"], now["disk-full.md"]);
    assert_ne!(
        before["dns.md"], now["dns.md"],
        "re-stamped with its new stat"
    );
    assert_eq!(
        records
            .of_key("dns.md")
            .iter()
            .map(|r| &r.embedding)
            .collect::<Vec<_>>(),
        after
            .of_key("dns.md")
            .iter()
            .map(|r| &r.embedding)
            .collect::<Vec<_>>(),
        "a touched file keeps its vectors"
    );

    // And from then on none is read.
    let fourth = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(
        fourth["stats"]["unchanged_unread"], 3,
        "{}",
        fourth["stats"]
    );
    assert_eq!(fourth["stats"]["chunks_upserted"], 0, "{}", fourth["stats"]);
}

#[test]
fn nothing_outside_the_allowed_roots_can_be_read() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.txt", "the launch codes\n");
    let root = allowed.path().join("docs");
    write(&root, "readme.md", "# Readme\n");
    #[cfg(unix)]
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), root.join("link.txt")).unwrap();
    let daemon = daemon_for(&chroma, allowed.path());

    let refused = |body: Value, needle: &str| {
        let (status, error) = daemon.request(Method::POST, "/api/v1/sources", Some(body));
        assert_eq!(status, 400, "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message}");
    };
    refused(
        filesystem_source(outside.path(), "docs", json!({})),
        "filesystem.root",
    );
    refused(
        filesystem_source(&root.join("../../"), "docs", json!({})),
        "filesystem.root",
    );
    refused(
        filesystem_source(&root.join("missing"), "docs", json!({})),
        "filesystem.root",
    );

    let source = daemon.create_source(filesystem_source(&root, "docs", json!({})));
    for path in ["../secret.txt", "/etc/passwd", "link.txt", "a/../../x"] {
        let (status, error) = daemon.request(
            Method::POST,
            &format!("/api/v1/sources/{source}/invocations"),
            Some(json!({"path": path})),
        );
        assert_eq!(status, 400, "{path}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains("path"),
            "{error}"
        );
    }
    // A whole-root sync reads the readme and records why the link was not followed.
    let done = daemon.wait_complete(&daemon.invoke(&source, json!({})));
    assert_eq!(keys(&chroma.records("testdb", "docs")), set(&["readme.md"]));
    assert!(
        done["stats"]["skipped_reasons"]["link.txt"].is_string(),
        "{}",
        done["stats"]
    );
    assert!(!daemon.log().contains("launch codes"));

    // Without allowed roots the source type is off.
    let closed = Daemon::start(&chroma.url());
    let (status, error) = closed.request(
        Method::POST,
        "/api/v1/sources",
        Some(filesystem_source(&root, "docs", json!({}))),
    );
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains(ALLOWED_ROOTS),
        "{error}"
    );
}

#[test]
fn a_watched_directory_syncs_edits_renames_and_deletions_on_its_own() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("notes");
    write(&root, "start.md", &runbook("Start", 1));
    // A vendored tree that exists before the watch starts, so a file
    // written into it later is reported as that file.
    std::fs::create_dir_all(root.join("node_modules/dep")).unwrap();
    let daemon = daemon_for(&chroma, allowed.path());
    let source = daemon.create_source(filesystem_source(
        &root,
        "notes",
        json!({"auto_sync": "direct"}),
    ));
    // The first sync is asked for; what follows comes from the watch.
    daemon.wait_complete(&daemon.invoke(&source, json!({})));
    let holds = |wanted: &[&str], text: Option<(&str, &str)>| {
        wait_until(
            "the watch to sync the change",
            Duration::from_secs(60),
            || {
                let records = chroma.records("testdb", "notes");
                let right_keys = keys(&records) == set(wanted);
                let right_text = text.is_none_or(|(key, needle)| {
                    records
                        .of_key(key)
                        .first()
                        .is_some_and(|r| r.document.contains(needle))
                });
                (right_keys && right_text).then_some(())
            },
        )
    };
    // Give the watcher a moment to start (it is set up within a refresh).
    wait_until("the watcher to start", Duration::from_secs(30), || {
        daemon.log().contains("auto-sync: watching").then_some(())
    });
    // A file the globs exclude (a vendored tree) is not worth a job.
    write(&root, "node_modules/dep/index.js", "module.exports = 1;\n");
    write(&root, "pager.md", &runbook("Pager rotation", 2));
    holds(
        &["pager.md", "start.md"],
        Some(("pager.md", "Pager rotation")),
    );
    write(&root, "pager.md", &runbook("Pager rotation, weekly", 2));
    holds(&["pager.md", "start.md"], Some(("pager.md", "weekly")));
    std::fs::create_dir_all(root.join("oncall")).unwrap();
    std::fs::rename(root.join("pager.md"), root.join("oncall/pager.md")).unwrap();
    holds(
        &["oncall/pager.md", "start.md"],
        Some(("oncall/pager.md", "weekly")),
    );
    std::fs::remove_file(root.join("start.md")).unwrap();
    holds(&["oncall/pager.md"], None);
    let jobs = daemon.request(
        Method::GET,
        &format!("/api/v1/invocations?source_id={source}&limit=100"),
        None,
    );
    let auto: Vec<&Value> = jobs
        .1
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["trigger"] == "auto_sync")
        .collect();
    assert!(auto.len() >= 3, "{}", jobs.1);
    assert!(
        auto.iter().all(|j| !j["metadata"]["filesystem"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("node_modules"))),
        "{}",
        jobs.1
    );
}

#[test]
fn one_shot_run_backfills_a_directory() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("laptop-docs");
    write(&root, "a.md", &runbook("A", 1));
    write(&root, "b/c.md", &runbook("C", 1));
    let state = tempfile::tempdir().unwrap();
    let source_file = state.path().join("dir.json");
    std::fs::write(
        &source_file,
        filesystem_source(&root, "backfill", json!({})).to_string(),
    )
    .unwrap();
    let output = binary(&chroma.url(), state.path())
        .env(ALLOWED_ROOTS, allowed.path())
        .args(["run", "--source", &format!("@{}", source_file.display())])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("synced 2 documents"), "{stdout}");
    assert_eq!(
        keys(&chroma.records("testdb", "backfill")),
        set(&["a.md", "b/c.md"])
    );
}

/// Waits (bounded) until the collection holds exactly `wanted` documents,
/// each named key's first chunk containing its text.
fn wait_for_documents(chroma: &Chroma, collection: &str, wanted: &[(&str, &str)]) {
    let want: BTreeSet<String> = wanted.iter().map(|(key, _)| key.to_string()).collect();
    wait_until(
        "the collection to hold what the directory holds",
        Duration::from_secs(90),
        || {
            chroma.collection("testdb", collection)?;
            let records = chroma.records("testdb", collection);
            let texts_match = wanted.iter().all(|(key, needle)| {
                records
                    .of_key(key)
                    .iter()
                    .any(|record| record.document.contains(needle))
            });
            (keys(&records) == want && texts_match).then_some(())
        },
    );
}

/// A user creates a watched source and drops a file in at once, before any
/// process has set its watch up (issue 30: such a file never arrived). No
/// one asks for a sync: the watch's first act is to reconcile.
#[test]
fn a_file_written_right_after_a_watched_source_is_created_is_synced() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("inbox");
    write(&root, "before.md", &runbook("Written before creation", 1));
    let daemon = daemon_for(&chroma, allowed.path());
    daemon.create_source(filesystem_source(
        &root,
        "inbox",
        json!({"auto_sync": "direct"}),
    ));
    write(&root, "right-after.md", &runbook("Written right after", 1));
    wait_for_documents(
        &chroma,
        "inbox",
        &[
            ("before.md", "Written before creation"),
            ("right-after.md", "Written right after"),
        ],
    );
}

/// The daemon is stopped for maintenance while people keep editing: a file
/// is added, one edited, one deleted. When it starts again, the watch
/// catches up without anyone invoking a sync.
#[test]
fn a_watched_directory_catches_up_on_what_changed_while_the_daemon_was_stopped() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("handbook");
    write(&root, "keep.md", &runbook("Kept as it was", 1));
    write(&root, "edit.md", &runbook("First draft", 1));
    write(&root, "delete.md", &runbook("Soon deleted", 1));
    let mut daemon = daemon_for(&chroma, allowed.path());
    daemon.create_source(filesystem_source(
        &root,
        "handbook",
        json!({"auto_sync": "direct"}),
    ));
    wait_for_documents(
        &chroma,
        "handbook",
        &[
            ("delete.md", "Soon deleted"),
            ("edit.md", "First draft"),
            ("keep.md", "Kept as it was"),
        ],
    );
    assert!(daemon.terminate().success());

    write(&root, "edit.md", &runbook("Second draft", 1));
    write(
        &root,
        "added/while-down.md",
        &runbook("Added while down", 1),
    );
    std::fs::remove_file(root.join("delete.md")).unwrap();

    daemon.restart();
    wait_for_documents(
        &chroma,
        "handbook",
        &[
            ("added/while-down.md", "Added while down"),
            ("edit.md", "Second draft"),
            ("keep.md", "Kept as it was"),
        ],
    );
}

/// On a mount whose changes raise no inotify events (NFS, SMB), the
/// operator sets `watch = "poll"`: changes are found by walking the tree.
#[test]
fn a_polled_directory_syncs_changes_without_file_events() {
    let chroma = Chroma::start();
    let allowed = tempfile::tempdir().unwrap();
    let root = allowed.path().join("share");
    write(&root, "first.md", &runbook("First on the share", 1));
    let daemon = Daemon::start_with(
        &chroma.url(),
        &format!(
            "{TEST_CONFIG}\n[filesystem]\nwatch_debounce_ms = 200\nwatch = \"poll\"\n\
             watch_poll_interval_ms = 300\n"
        ),
        &[(ALLOWED_ROOTS, allowed.path().to_str().unwrap())],
    );
    daemon.create_source(filesystem_source(
        &root,
        "share",
        json!({"auto_sync": "direct"}),
    ));
    wait_for_documents(&chroma, "share", &[("first.md", "First on the share")]);
    assert!(
        daemon.log().contains("Poll("),
        "the watch says it polls: {}",
        daemon.log()
    );
    write(&root, "second.md", &runbook("Second on the share", 1));
    std::fs::remove_file(root.join("first.md")).unwrap();
    wait_for_documents(&chroma, "share", &[("second.md", "Second on the share")]);
}
