//! User story: a team wants its GitHub repositories searchable in Chroma. They
//! point the daemon at GitHub (here: an emulator serving real git repositories
//! built with the `git` CLI), create a GitHub source, and sync branches and
//! commits; later syncs only redo what changed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::github::{GitHubEmulator, GitRepo, RateLimit, raw_tarball, rsa_private_key_pem};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const PAT: &str = "ghp_pat_value_that_must_never_leak_0123";

/// The test config plus GitHub limits small enough to exercise: files over
/// 20 kB are skipped, and more than two changed files stream the archive.
fn config() -> String {
    format!("{TEST_CONFIG}\n[github]\nmax_file_bytes = 20000\nmax_blob_fetches = 2\n")
}

fn start(chroma: &Chroma, github: &GitHubEmulator, extra: &str, env: &[(&str, &str)]) -> Daemon {
    let mut env = env.to_vec();
    env.push(("CHROMA_SYNCD_GITHUB_API_URL", &github.url));
    Daemon::start_with(&chroma.url(), &format!("{}{extra}", config()), &env)
}

fn rust_source(functions: usize, salt: &str) -> String {
    (0..functions)
        .map(|i| {
            format!(
                "/// Returns {salt} number {i}.\npub fn value_{i}() -> u32 {{\n    let base = {i};\n    base * 2 + 1\n}}\n\n"
            )
        })
        .collect()
}

fn python_source() -> String {
    (0..6)
        .map(|i| format!("def handler_{i}(event):\n    \"\"\"Handle event kind {i}.\"\"\"\n    return event.get('kind') == {i}\n\n\n"))
        .collect()
}

fn markdown(title: &str, paragraphs: usize) -> String {
    let mut text = format!("# {title}\n\n");
    for i in 0..paragraphs {
        text.push_str(&format!(
            "## Part {i}\n\nThis part of {title} explains step {i} in enough words to be a chunk.\n\n"
        ));
    }
    text
}

fn keys(records: &Records) -> BTreeSet<String> {
    records.document_keys()
}

fn github_source(repository: &str) -> Value {
    json!({"database_name": "testdb", "github": {"repository": repository}})
}

#[test]
fn branches_and_commits_sync_with_code_aware_chunks_and_commit_metadata() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("src/lib.rs", rust_source(12, "lib"));
    repo.write("app.py", python_source());
    repo.write("README.md", "# Widgets\n\nThe first readme.\n");
    repo.write("logo.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR binary");
    repo.write("node_modules/dep/index.js", "module.exports = 1;\n");
    repo.write("big.txt", "a line of filler text\n".repeat(2000));
    let first = repo.commit("first");
    repo.write("README.md", "# Widgets\n\nThe second readme.\n");
    let second = repo.commit("second");
    github.add_repo("acme/widgets", &repo);
    let daemon = start(&chroma, &github, "", &[]);
    let source = daemon.create_source(github_source("acme/widgets"));

    // No ref: the default branch, recorded on the job.
    let job = daemon.invoke(&source, json!({"target_collection_name": "widgets-main"}));
    let done = daemon.wait_complete(&job);
    assert_eq!(
        done["metadata"]["github"]["git_ref_identifier"],
        json!({"branch": "main"})
    );
    assert_matches("Job", &done);
    assert_eq!(done["stats"]["commit_sha"], second.as_str());
    assert_eq!(done["stats"]["sync_mode"], "full");
    let reasons = &done["stats"]["skipped_reasons"];
    assert!(
        // Images are documents read by OCR: this one is cut short.
        reasons["logo.png"].as_str().unwrap().contains("image"),
        "{reasons}"
    );
    assert!(
        reasons["big.txt"].as_str().unwrap().contains("limit"),
        "{reasons}"
    );

    let records = chroma.records("testdb", "widgets-main");
    assert_eq!(
        keys(&records),
        BTreeSet::from(["README.md".into(), "app.py".into(), "src/lib.rs".into()]),
        "binary, oversized and node_modules files stay out"
    );
    for record in &records.rows {
        let path = record.metadata["document_key"].as_str().unwrap();
        let key_sha = sha256_hex(path);
        assert!(
            record.id.starts_with(&format!("{key_sha}-")),
            "{}",
            record.id
        );
        assert_eq!(record.metadata["document_key_sha256"], key_sha.as_str());
        assert_eq!(record.metadata["version_key"], second.as_str());
        assert_eq!(record.metadata["commit_sha"], second.as_str());
        assert_eq!(record.metadata["ref"], "main");
        assert_eq!(record.metadata["repository"], "acme/widgets");
        assert_eq!(record.metadata["source_type"], "github");
        assert!(record.metadata["start_line"].as_u64().unwrap() >= 1);
        assert!(record.metadata["end_line"].as_u64() >= record.metadata["start_line"].as_u64());
    }
    let lib = records.of_key("src/lib.rs");
    assert!(lib.len() > 1, "the Rust file is split into several chunks");
    for chunk in &lib {
        assert_eq!(chunk.metadata["language"], "rust");
        assert_eq!(chunk.metadata["chunk_strategy"], "tree_sitter");
    }
    assert_eq!(records.of_key("app.py")[0].metadata["language"], "python");
    assert!(
        records.of_key("README.md")[0]
            .document
            .contains("second readme")
    );

    // A commit by (abbreviated) sha, into another collection.
    let job = daemon.invoke(
        &source,
        json!({"target_collection_name": "widgets-first", "ref_identifier": {"sha": &first[..12]}}),
    );
    let done = daemon.wait_complete(&job);
    assert_eq!(done["stats"]["commit_sha"], first.as_str());
    let records = chroma.records("testdb", "widgets-first");
    let readme = records.of_key("README.md");
    assert!(readme[0].document.contains("first readme"));
    assert_eq!(readme[0].metadata["version_key"], first.as_str());
    assert_eq!(readme[0].metadata["ref"], &first[..12]);

    // A branch by name.
    repo.git(&["checkout", "-q", "-b", "feature/docs"]);
    repo.write("docs/feature.md", markdown("Feature", 2));
    let feature = repo.commit("feature");
    let job = daemon.invoke(
        &source,
        json!({"target_collection_name": "widgets-feature", "ref_identifier": {"branch": "feature/docs"}}),
    );
    let done = daemon.wait_complete(&job);
    assert_eq!(done["stats"]["commit_sha"], feature.as_str());
    let records = chroma.records("testdb", "widgets-feature");
    assert!(keys(&records).contains("docs/feature.md"));
    assert_eq!(records.rows[0].metadata["ref"], "feature/docs");
}

#[test]
fn unknown_repositories_refs_and_bad_invocations_get_clear_errors() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("README.md", "# Hello\n");
    repo.commit("init");
    github.add_repo("acme/real", &repo);
    let daemon = start(&chroma, &github, "", &[]);

    // Source validation.
    for (body, needle) in [
        (
            json!({"database_name": "testdb", "github": {"repository": "no-slash"}}),
            "owner/name",
        ),
        (
            json!({"database_name": "testdb", "github": {"repository": "a/b", "include_globs": ["["]}}),
            "glob",
        ),
        (
            json!({"database_name": "testdb", "github": {"repository": "a/b", "app_id": "77"}}),
            "app_id 77",
        ),
    ] {
        let (status, error) = daemon.request(Method::POST, "/api/v1/sources", Some(body));
        assert_eq!(status, 400, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }

    let real = daemon.create_source(github_source("acme/real"));
    let missing = daemon.create_source(github_source("acme/missing"));
    let invoke = |source: &str, body: Value| {
        daemon.request(
            Method::POST,
            &format!("/api/v1/sources/{source}/invocations"),
            Some(body),
        )
    };
    for (body, needle) in [
        (json!({}), "target_collection_name"),
        (
            json!({"target_collection_name": "col1", "object_key": "x"}),
            "object_key",
        ),
        (
            json!({"target_collection_name": "col1", "ref_identifier": {"sha": "not-hex"}}),
            "sha",
        ),
        (
            json!({"target_collection_name": "col1", "ref_identifier": {"branch": "a..b"}}),
            "branch",
        ),
    ] {
        let (status, error) = invoke(&real, body);
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"], "invalid_request");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    // The default branch of a missing repository cannot be looked up.
    let (status, error) = invoke(&missing, json!({"target_collection_name": "col1"}));
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("acme/missing"),
        "{error}"
    );

    // With an explicit ref, the job itself fails, saying what is missing.
    let job = daemon.invoke(
        &missing,
        json!({"target_collection_name": "col1", "ref_identifier": {"branch": "main"}}),
    );
    let (_, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("not found"), "{error}");
    let job = daemon.invoke(
        &real,
        json!({"target_collection_name": "col1", "ref_identifier": {"branch": "nope"}}),
    );
    let (_, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("branch `nope`"), "{error}");
    let job = daemon.invoke(
        &real,
        json!({"target_collection_name": "col1", "ref_identifier": {"sha": "0123456789abcdef"}}),
    );
    let (job, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("0123456789abcdef"), "{error}");
    assert_eq!(job["attempt"], 1, "a missing commit is not retried");
}

#[test]
fn include_and_exclude_globs_choose_the_files() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("README.md", markdown("Readme", 1));
    repo.write("docs/guide.md", markdown("Guide", 1));
    repo.write("docs/private/secret.md", markdown("Secret", 1));
    repo.write("src/lib.rs", rust_source(2, "x"));
    repo.write("app.py", python_source());
    repo.commit("init");
    github.add_repo("acme/globs", &repo);
    let daemon = start(&chroma, &github, "", &[]);
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "github": {
            "repository": "acme/globs",
            "include_globs": ["*.md", "src/**"],
            "exclude_globs": ["docs/private/**"],
        }
    }));
    let job = daemon.invoke(&source, json!({"target_collection_name": "globbed"}));
    daemon.wait_complete(&job);
    assert_eq!(
        keys(&chroma.records("testdb", "globbed")),
        BTreeSet::from([
            "README.md".into(),
            "docs/guide.md".into(),
            "src/lib.rs".into()
        ])
    );
}

/// Sorted (id, document, metadata, embedding) rows, for comparing collections.
fn comparable(records: &Records) -> Vec<(String, String, Value, Vec<f32>)> {
    records
        .rows
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.document.clone(),
                r.metadata.clone(),
                r.embedding.clone(),
            )
        })
        .collect()
}

fn assert_same_collection(left: &Records, right: &Records) {
    let (left, right) = (comparable(left), comparable(right));
    assert_eq!(left.len(), right.len());
    for (l, r) in left.iter().zip(&right) {
        assert_eq!((&l.0, &l.1, &l.2), (&r.0, &r.1, &r.2));
        let close = l.3.iter().zip(&r.3).all(|(a, b)| (a - b).abs() < 1e-5);
        assert!(close, "embeddings of {} differ", l.0);
    }
}

fn chunks_of(records: &Records, paths: &[&str]) -> u64 {
    paths.iter().map(|p| records.of_key(p).len() as u64).sum()
}

#[test]
fn incremental_resync_embeds_only_changed_files_and_matches_a_full_sync() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("a.md", markdown("Alpha", 2));
    repo.write("b.rs", rust_source(4, "b"));
    repo.write("c.py", python_source());
    repo.write("d.md", markdown("Delta", 2));
    repo.write("e.txt", "plain text file\nwith two lines\n");
    let base = repo.commit("base");
    github.add_repo("acme/inc", &repo);
    let daemon = start(&chroma, &github, "", &[]);
    let source = daemon.create_source(github_source("acme/inc"));
    let sync = |collection: &str| {
        let job = daemon.invoke(
            &source,
            json!({"target_collection_name": collection, "ref_identifier": {"branch": "main"}}),
        );
        daemon.wait_complete(&job)
    };
    let first = sync("inc");
    assert_eq!(first["stats"]["sync_mode"], "full");

    // Edit, add, delete and rename (content unchanged): three changed paths,
    // more than max_blob_fetches, so the archive is streamed for them.
    repo.write("b.rs", rust_source(5, "b2"));
    repo.write("new.md", markdown("New", 1));
    repo.remove("c.py");
    repo.rename("d.md", "moved/d.md");
    let second_sha = repo.commit("change");
    let second = sync("inc");
    let stats = &second["stats"];
    assert_eq!(stats["sync_mode"], "incremental", "{stats}");
    assert_eq!(stats["base_commit_sha"], base.as_str());
    assert_eq!(stats["commit_sha"], second_sha.as_str());
    let records = chroma.records("testdb", "inc");
    assert_eq!(
        keys(&records),
        BTreeSet::from([
            "a.md".into(),
            "b.rs".into(),
            "e.txt".into(),
            "moved/d.md".into(),
            "new.md".into()
        ])
    );
    assert_eq!(
        stats["chunks_upserted"].as_u64().unwrap(),
        chunks_of(&records, &["b.rs", "new.md", "moved/d.md"]),
        "only changed files are embedded: {stats}"
    );
    assert_eq!(
        stats["chunks_restamped"].as_u64().unwrap(),
        chunks_of(&records, &["a.md", "e.txt"]),
        "unchanged files are re-stamped, not re-embedded: {stats}"
    );
    assert!(stats["chunks_deleted"].as_u64().unwrap() > 0);

    // One edited file: fetched as a single blob, no archive.
    github.clear_log();
    repo.write("a.md", markdown("Alpha", 3));
    repo.commit("edit a");
    let third = sync("inc");
    assert_eq!(third["stats"]["sync_mode"], "incremental");
    let incremental = chroma.records("testdb", "inc");
    assert_eq!(
        third["stats"]["chunks_upserted"].as_u64().unwrap(),
        chunks_of(&incremental, &["a.md"])
    );
    let served = github.served();
    assert_eq!(
        served
            .iter()
            .filter(|s| s.path.contains("/git/blobs/"))
            .count(),
        1
    );
    assert!(
        !served.iter().any(|s| s.path.contains("tarball")),
        "{served:?}"
    );

    // Nothing changed: nothing embedded.
    let again = sync("inc");
    assert_eq!(again["stats"]["chunks_upserted"], 0);

    // A full sync of the same commit into a fresh collection gives the same records.
    let full = sync("inc-full");
    assert_eq!(full["stats"]["sync_mode"], "full");
    assert_same_collection(&incremental, &chroma.records("testdb", "inc-full"));
}

#[test]
fn hostile_tarball_entries_are_rejected() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("ok.md", "# placeholder\n");
    repo.commit("init");
    github.add_repo("acme/evil", &repo);
    github.override_tarball(
        "acme/evil",
        raw_tarball(&[
            ("acme-evil-1234567/ok.md", b"# Fine\n\nA normal file.\n"),
            ("acme-evil-1234567/../../escape.md", b"# Escaped\n"),
            ("/etc/passwd.md", b"# Absolute\n"),
        ]),
    );
    let daemon = start(&chroma, &github, "", &[]);
    let source = daemon.create_source(github_source("acme/evil"));
    let job = daemon.invoke(&source, json!({"target_collection_name": "evil"}));
    let done = daemon.wait_complete(&job);
    let records = chroma.records("testdb", "evil");
    assert_eq!(keys(&records), BTreeSet::from(["ok.md".into()]));
    let reasons = done["stats"]["skipped_reasons"].as_object().unwrap();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .values()
            .all(|r| r.as_str().unwrap().contains("escapes"))
    );
}

#[test]
fn rate_limits_are_waited_out() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("README.md", markdown("Limits", 1));
    repo.commit("init");
    github.add_repo("acme/limits", &repo);
    let daemon = start(&chroma, &github, "", &[]);
    let source = daemon.create_source(github_source("acme/limits"));
    github.clear_log();
    github.rate_limit_next(&[
        RateLimit::Primary { seconds: 1 },
        RateLimit::Secondary { seconds: 1 },
    ]);
    let job = daemon.invoke(
        &source,
        json!({"target_collection_name": "limits", "ref_identifier": {"branch": "main"}}),
    );
    let done = daemon.wait_complete(&job);
    assert_eq!(done["attempt"], 1, "waited within the attempt: {done}");
    let served = github.served();
    let statuses: Vec<u16> = served.iter().take(3).map(|s| s.status).collect();
    assert_eq!(statuses, vec![403, 429, 200], "{served:?}");
    assert!(
        served.iter().take(3).all(|s| s.path == served[0].path),
        "the same request was retried: {served:?}"
    );
    assert!(keys(&chroma.records("testdb", "limits")).contains("README.md"));
}

#[test]
fn private_repositories_need_a_token_or_an_app_installation_and_secrets_never_leak() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("README.md", markdown("Private", 1));
    repo.commit("init");
    github.add_repo("acme/private", &repo);
    github.make_private("acme/private");
    github.install_app("4242", 99);
    let keys_dir = tempfile::tempdir().unwrap();
    let key = rsa_private_key_pem(keys_dir.path());
    let apps = format!(
        "\n[github.apps.4242]\nprivate_key_file = \"{}\"\n",
        key.display()
    );
    let daemon = start(
        &chroma,
        &github,
        &apps,
        &[("CHROMA_SYNCD_GITHUB_TOKEN", PAT)],
    );
    let by_token = daemon.create_source(github_source("acme/private"));
    let by_app = daemon.create_source(json!({
        "database_name": "testdb",
        "github": {"repository": "acme/private", "app_id": "4242"}
    }));
    let main = json!({"target_collection_name": "private", "ref_identifier": {"branch": "main"}});

    // GitHub does not accept the token (yet): the repository is invisible.
    let job = daemon.invoke(&by_token, main.clone());
    let (failed, error) = daemon.wait_failed(&job, Duration::from_secs(60));
    assert!(error.contains("not visible"), "{error}");
    assert!(!failed.to_string().contains(PAT));

    // As the GitHub App's installation.
    let job = daemon.invoke(&by_app, main.clone());
    daemon.wait_complete(&job);
    assert!(github.tokens_minted() >= 1);
    assert!(keys(&chroma.records("testdb", "private")).contains("README.md"));

    // With the token accepted.
    github.accept_token(PAT);
    let job = daemon.invoke(
        &by_token,
        json!({"target_collection_name": "private-pat", "ref_identifier": {"branch": "main"}}),
    );
    let done = daemon.wait_complete(&job);
    assert!(!done.to_string().contains(PAT));
    assert!(!daemon.log().contains(PAT), "the token reached the log");
    let pem = std::fs::read_to_string(&key).unwrap();
    let pem_body = pem.lines().nth(1).unwrap();
    assert!(
        !daemon.log().contains(pem_body),
        "the app key reached the log"
    );
}

#[test]
fn one_shot_run_syncs_a_repository_and_exits_non_zero_on_failure() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    repo.write("README.md", markdown("Backfill", 1));
    repo.write("src/main.rs", rust_source(2, "main"));
    repo.commit("init");
    github.add_repo("acme/backfill", &repo);
    let state = tempfile::tempdir().unwrap();
    let source = github_source("acme/backfill").to_string();
    let run = |extra: &[&str]| {
        binary(&chroma.url(), state.path())
            .env("CHROMA_SYNCD_GITHUB_API_URL", &github.url)
            .args(["run", "--source", &source, "--collection", "backfill"])
            .args(extra)
            .output()
            .unwrap()
    };
    let output = run(&[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("synced 2 documents"), "{stdout}");
    assert_eq!(
        keys(&chroma.records("testdb", "backfill")),
        BTreeSet::from(["README.md".into(), "src/main.rs".into()])
    );
    let output = run(&["--branch", "missing"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("branch `missing`"));
}

/// Someone pushes a commit that deletes nearly the whole repository (a bad
/// merge, a script gone wrong). The next sync refuses to remove nearly
/// everything the source holds and says what to raise; every chunk stays.
/// A source that allows it (`max_removal_fraction: 1.0`) follows the
/// repository, as the incremental and the full sync alike.
#[test]
fn a_commit_removing_nearly_everything_is_refused_unless_the_source_allows_it() {
    let chroma = Chroma::start();
    let github = GitHubEmulator::start();
    let repo = GitRepo::new();
    for i in 0..12 {
        repo.write(
            &format!("docs/page-{i:02}.md"),
            format!("# Page {i}\n\nText of page {i}.\n"),
        );
    }
    repo.commit("twelve pages");
    github.add_repo("acme/handbook", &repo);
    let daemon = start(&chroma, &github, "", &[]);
    let guarded = daemon.create_source(github_source("acme/handbook"));
    let mut lenient = github_source("acme/handbook");
    lenient["max_removal_fraction"] = json!(1.0);
    let lenient = daemon.create_source(lenient);
    let main = |collection: &str| json!({"target_collection_name": collection, "ref_identifier": {"branch": "main"}});
    daemon.wait_complete(&daemon.invoke(&guarded, main("guarded")));
    daemon.wait_complete(&daemon.invoke(&lenient, main("lenient")));
    let before = chroma.records("testdb", "guarded");
    assert_eq!(keys(&before).len(), 12);

    for i in 1..12 {
        repo.remove(&format!("docs/page-{i:02}.md"));
    }
    repo.commit("oops");
    let (_, error) = daemon.wait_failed(
        &daemon.invoke(&guarded, main("guarded")),
        Duration::from_secs(120),
    );
    assert!(error.contains("would remove 11 of the 12 files"), "{error}");
    assert!(error.contains("max_removal_fraction"), "{error}");
    assert_eq!(chroma.records("testdb", "guarded").ids(), before.ids());

    daemon.wait_complete(&daemon.invoke(&lenient, main("lenient")));
    assert_eq!(
        keys(&chroma.records("testdb", "lenient")),
        BTreeSet::from(["docs/page-00.md".to_string()])
    );

    // A fraction outside 0..1 is refused before anything is stored.
    let mut bad = github_source("acme/handbook");
    bad["max_removal_fraction"] = json!(1.5);
    let (status, body) = daemon.request(Method::POST, "/api/v1/sources", Some(bad));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_removal_fraction"),
        "{body}"
    );
}
