//! The CLI: a one-shot backfill of a whole prefix, the client commands
//! against a running daemon, and a user querying the result from Python.

mod common;

use std::process::Output;

use common::*;
use serde_json::{Value, json};

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn run_help_names_every_source_kind() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chroma-syncd"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let help = stdout(&output);
    let kinds = help
        .lines()
        .find(|line| line.starts_with("Source kinds"))
        .unwrap_or_else(|| panic!("no list of source kinds in:\n{help}"));
    for kind in chroma_syncd::domain::SourceSpec::source_types() {
        assert!(kinds.contains(kind.as_str()), "{kind:?} missing: {kinds}");
    }
}

/// `invocation create`'s flags come from what the source kinds declare;
/// the words users type stay the same.
#[test]
fn invocation_create_offers_each_kinds_fields_as_flags() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chroma-syncd"))
        .args(["invocation", "create", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let help = stdout(&output);
    for flag in [
        "--object-key",
        "--custom-id",
        "--metadata",
        "--target-collection-name",
        "--branch",
        "--sha",
        "--path",
        "--wait",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(
        help.contains("JSON object merged into every chunk's metadata"),
        "{help}"
    );
    // Two flags setting one field exclude each other.
    let id = "00000000-0000-0000-0000-000000000000";
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chroma-syncd"))
        .args([
            "invocation",
            "create",
            id,
            "--branch",
            "main",
            "--sha",
            "abc",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        describe(&output).contains("cannot be used with"),
        "{}",
        describe(&output)
    );
}

/// `run` takes what each kind declares it may be told (S3's keys and
/// `--meta-json`, GitHub's ref), and refuses it for a kind that does not.
#[test]
fn run_takes_each_kinds_own_flags_and_refuses_another_kinds() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_chroma-syncd"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = stdout(&output);
    for flag in [
        "--object-key",
        "--meta-json",
        "--branch",
        "--sha",
        "--collection",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    let chroma = Chroma::start();
    let state = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.md"), "# Alpha\n").unwrap();
    let root = root.path().canonicalize().unwrap();
    let source = json!({
        "database_name": "testdb",
        "filesystem": {"root": root, "collection_name": "cli-refused"},
    })
    .to_string();
    for (flag, value, refusal) in [
        (
            "--meta-json",
            None,
            "--meta-json applies to S3 sources only",
        ),
        (
            "--object-key",
            Some("a.md"),
            "--object-key applies to S3 sources only",
        ),
        (
            "--sha",
            Some("abc"),
            "--branch/--sha applies to GitHub sources only",
        ),
    ] {
        let mut command = binary(&chroma.url(), state.path());
        command
            .env("CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS", &root)
            .args(["run", "--source", &source, flag]);
        command.args(value);
        let output = command.output().unwrap();
        assert!(!output.status.success(), "{}", describe(&output));
        assert!(describe(&output).contains(refusal), "{}", describe(&output));
    }
    let synced = chroma
        .collection("testdb", "cli-refused")
        .map_or(0, |_| chroma.records("testdb", "cli-refused").rows.len());
    assert_eq!(synced, 0, "nothing synced");
}

/// A filesystem source's one file, synced with `invocation create --path`.
#[test]
fn invocation_create_syncs_one_file_of_a_directory_by_its_path() {
    let chroma = Chroma::start();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.md"), "# Alpha\n\nThe first file.\n").unwrap();
    std::fs::write(root.path().join("b.md"), "# Beta\n\nThe second file.\n").unwrap();
    let root = root.path().canonicalize().unwrap();
    let daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[(
            "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
            root.to_str().unwrap(),
        )],
    );
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "filesystem": {"root": root, "collection_name": "cli-path"},
    }));
    let output = binary(&chroma.url(), daemon.state.path())
        .env("CHROMA_SYNCD_API_URL", daemon.url())
        .args(["invocation", "create", &source, "--path", "a.md", "--wait"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let job: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(job["status"]["complete"].is_object(), "{job}");
    assert_eq!(job["metadata"]["filesystem"]["path"], "a.md", "{job}");
    let records = chroma.records("testdb", "cli-path");
    let keys: std::collections::BTreeSet<_> = records
        .rows
        .iter()
        .map(|row| row.metadata["document_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["a.md"],
        "only the named file"
    );
}

fn seed_bucket(s3: &S3) {
    s3.create_bucket("kb-bucket");
    s3.put(
        "kb-bucket",
        "kb/bread.md",
        "# Baking bread\n\nMix flour, water, salt and yeast. Knead the dough, let it rise, then bake it in a hot oven until the crust is golden.\n",
        None,
    );
    s3.put(
        "kb-bucket",
        "kb/stars.md",
        "# Watching stars\n\nOn a clear night away from city lights, planets and constellations are visible through a small telescope.\n",
        None,
    );
    s3.put(
        "kb-bucket",
        "kb/server.py",
        "def start_server(port):\n    \"\"\"Open a TCP socket and serve HTTP requests.\"\"\"\n    return listen(port)\n",
        None,
    );
    s3.put(
        "kb-bucket",
        "elsewhere/ignored.md",
        "# Not under the prefix\n",
        None,
    );
}

#[test]
fn run_backfills_a_prefix_and_python_clients_find_the_content() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    seed_bucket(&s3);
    let state = tempfile::tempdir().unwrap();
    let source = s3_source(&s3, "kb-bucket", "kb-docs", Some("kb/"));
    let source_file = state.path().join("source.json");
    std::fs::write(&source_file, source.to_string()).unwrap();

    let output = binary(&chroma.url(), state.path())
        .args(["run", "--source"])
        .arg(format!("@{}", source_file.display()))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("synced 3 documents"),
        "{}",
        describe(&output)
    );
    // The stage breakdown names the embedder's busy share of the run.
    let stages = stdout(&output)
        .lines()
        .find(|l| l.starts_with("time by stage"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no stage line: {}", describe(&output)));
    assert!(stages.contains("waiting for the embedder"), "{stages}");
    let share: f64 = stages
        .rsplit_once("embedding computed ")
        .and_then(|(_, rest)| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no embedding share in {stages}"));
    assert!(share > 0.0 && share <= 100.0, "{stages}");

    let records = chroma.records("testdb", "kb-docs");
    for key in ["kb/bread.md", "kb/stars.md", "kb/server.py"] {
        assert_eq!(records.of_key(key).len(), 1, "{key}");
    }
    assert!(records.of_key("elsewhere/ignored.md").is_empty());
    assert_eq!(
        records.of_key("kb/server.py")[0].metadata["language"],
        "python"
    );

    // A failed document makes the run exit non-zero, naming it.
    let output = binary(&chroma.url(), state.path())
        .args(["run", "--source"])
        .arg(format!("@{}", source_file.display()))
        .args(["--object-key", "kb/missing.md"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        stdout(&output).contains("failed: kb/missing.md"),
        "{}",
        describe(&output)
    );
    assert!(!describe(&output).contains(S3_SECRET));

    // A user queries with the official Python client and the same model.
    let output = std::process::Command::new(venv().join("bin/python"))
        .arg("tests/reference/query.py")
        .arg(model_dir())
        .arg(chroma.port.to_string())
        .args([
            "testdb",
            "kb-docs",
            "how long should the loaf stay in the oven?",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let answer: Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(answer["embedding_function"], "default");
    assert_eq!(answer["document_keys"][0], "kb/bread.md", "{answer}");
}

#[test]
fn client_commands_drive_a_running_daemon() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    seed_bucket(&s3);
    let daemon = Daemon::start(&chroma.url());
    let cli = |args: &[&str]| {
        binary(&chroma.url(), daemon.state.path())
            .env("CHROMA_SYNCD_API_URL", daemon.url())
            .args(args)
            .output()
            .unwrap()
    };

    let output = cli(&[
        "source",
        "create",
        &s3_source(&s3, "kb-bucket", "cli", Some("kb/")).to_string(),
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let created: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let source_id = created["source_id"].as_str().unwrap().to_string();

    let output = cli(&["source", "get", &source_id]);
    assert!(output.status.success(), "{}", describe(&output));
    assert!(stdout(&output).contains("\"bucket_name\": \"kb-bucket\""));

    let output = cli(&[
        "invocation",
        "create",
        &source_id,
        "--object-key",
        "kb/stars.md",
        "--custom-id",
        "stars",
        "--metadata",
        r#"{"topic": "astronomy"}"#,
        "--wait",
    ]);
    assert!(output.status.success(), "{}", describe(&output));
    let job: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(job["status"]["complete"].is_object(), "{job}");
    let records = chroma.records("testdb", "cli");
    assert_eq!(records.ids(), vec!["stars-0".to_string()]);
    assert_eq!(records.rows[0].metadata["topic"], "astronomy");

    // --wait on a failing invocation exits non-zero.
    let output = cli(&[
        "invocation",
        "create",
        &source_id,
        "--object-key",
        "kb/nope.md",
        "--wait",
    ]);
    assert!(!output.status.success(), "{}", describe(&output));

    let output = cli(&["invocation", "list", "--source-id", &source_id]);
    assert!(output.status.success(), "{}", describe(&output));
    let jobs: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(jobs.as_array().unwrap().len(), 2);

    // Cancelling a finished invocation: the API's 412 reaches the user.
    let job_id = job["id"].as_str().unwrap();
    let output = cli(&["invocation", "cancel", job_id]);
    assert!(!output.status.success());
    assert!(describe(&output).contains("412"), "{}", describe(&output));

    // Bad input is reported, not sent half-formed.
    let output = cli(&[
        "invocation",
        "create",
        &source_id,
        "--object-key",
        "kb/x.md",
        "--metadata",
        "[1]",
    ]);
    assert!(!output.status.success());
    assert!(describe(&output).contains("--metadata must be a JSON object"));

    let output = cli(&["source", "delete", &source_id]);
    assert!(output.status.success(), "{}", describe(&output));
    let _ = json!(null);
}

/// Filter values reach the API as typed: `&`, `+` and spaces are
/// percent-encoded by the client instead of splitting or altering the query.
#[test]
fn client_commands_send_filter_values_encoded() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    seed_bucket(&s3);
    let daemon = Daemon::start(&chroma.url());
    let cli = |args: &[&str]| {
        binary(&chroma.url(), daemon.state.path())
            .env("CHROMA_SYNCD_API_URL", daemon.url())
            .args(args)
            .output()
            .unwrap()
    };
    let listed = |args: &[&str]| {
        let output = cli(args);
        assert!(output.status.success(), "{}", describe(&output));
        let items: Value = serde_json::from_str(&stdout(&output)).unwrap();
        items.as_array().unwrap().len()
    };

    let output = cli(&[
        "source",
        "create",
        &s3_source(&s3, "kb-bucket", "encoded", Some("kb/")).to_string(),
    ]);
    assert!(output.status.success(), "{}", describe(&output));

    // Unencoded, `&source_type=s3` would become a second filter and the
    // source in `testdb` would be listed.
    assert_eq!(listed(&["source", "list", "--database-name", "testdb"]), 1);
    assert_eq!(
        listed(&["source", "list", "--database-name", "testdb&source_type=s3"]),
        0
    );

    // The API's 400 quotes the status exactly as given.
    let status = "complete & failed+cancelled";
    let output = cli(&["invocation", "list", "--status", status]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        describe(&output).contains(&format!("not `{status}`")),
        "{}",
        describe(&output)
    );

    // IDs are UUIDs before anything is sent.
    let output = cli(&["source", "get", "../invocations"]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        describe(&output).contains("source id `../invocations` is not a UUID"),
        "{}",
        describe(&output)
    );
}

#[test]
fn worker_mode_runs_jobs_from_the_shared_queue_without_an_api() {
    use chroma_syncd::config::Config;
    use chroma_syncd::domain::{Sources, plan_job};
    use chroma_syncd::model::{
        CreateJobPayload, CreateSourcePayload, JobStatus, SourceType, Trigger,
    };
    use chroma_syncd::queue::{Queue, SqliteQueue};

    let chroma = Chroma::start();
    let s3 = S3::start();
    seed_bucket(&s3);
    let state = tempfile::tempdir().unwrap();
    // Another process (here: this test) enqueues into the shared queue file.
    let queue_path = state.path().join("queue.sqlite3");
    let job_id = runtime().block_on(async {
        let queue = SqliteQueue::open(&queue_path, 3).await.unwrap();
        let payload: CreateSourcePayload =
            serde_json::from_value(s3_source(&s3, "kb-bucket", "from-worker", Some("kb/")))
                .unwrap();
        let source = queue
            .create_source(SourceType::named("s3"), &payload)
            .await
            .unwrap();
        let sources = Sources::new(&Config::default()).unwrap();
        let job = plan_job(
            &sources,
            &source,
            CreateJobPayload {
                object_key: Some("kb/bread.md".into()),
                ..CreateJobPayload::default()
            },
            Trigger::Manual,
        )
        .await
        .unwrap();
        queue.enqueue(job).await.unwrap().id
    });

    let config = state.path().join("worker.toml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let mut worker = Guard(Some(
        binary(&chroma.url(), state.path())
            .args(["worker", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let status = wait_until(
        "the worker to finish the job",
        std::time::Duration::from_secs(120),
        || {
            runtime().block_on(async {
                let queue = SqliteQueue::open(&queue_path, 3).await.unwrap();
                let job = queue.get_job(job_id).await.unwrap().unwrap();
                job.status.is_finished().then_some(job.status)
            })
        },
    );
    assert!(matches!(status, JobStatus::Complete { .. }), "{status:?}");
    assert_eq!(
        chroma
            .records("testdb", "from-worker")
            .of_key("kb/bread.md")
            .len(),
        1
    );
    worker.kill();
}

/// The JSON `progress` log lines a run wrote to stderr (not a terminal here).
fn progress_lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("progress:"))
        })
        .collect()
}

/// `N` in "`N` <what>" of the run's summary line.
fn summary_count(output: &Output, what: &str) -> u64 {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|l| l.starts_with("synced "))
        .unwrap_or_else(|| panic!("no summary: {}", describe(output)));
    let words: Vec<&str> = line.split([' ', ',', ';', ':']).collect();
    let at = words
        .windows(2)
        .position(|w| w[1] == what)
        .unwrap_or_else(|| panic!("no `{what}` in {line}"));
    words[at].parse().unwrap()
}

#[test]
fn run_logs_progress_off_a_terminal_keeps_going_on_request_and_never_re_embeds() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    seed_bucket(&s3);
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("run.toml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let source = s3_source(&s3, "kb-bucket", "kb-progress", Some("kb/")).to_string();
    let run = |extra: &[&str]| {
        binary(&chroma.url(), state.path())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--source", &source, "--progress-interval", "0.2"])
            .args(extra)
            .output()
            .unwrap()
    };

    let first = run(&[]);
    assert!(first.status.success(), "{}", describe(&first));
    let lines = progress_lines(&first);
    assert!(
        !lines.is_empty(),
        "progress is logged: {}",
        describe(&first)
    );
    let last = lines.last().unwrap();
    assert_eq!(last["jobs_total"], 3, "{last}");
    assert_eq!(last["jobs_finished"], 3, "{last}");
    assert_eq!(last["documents"], 3, "{last}");
    assert!(last["chunks_upserted"].as_u64().unwrap() >= 3, "{last}");
    assert!(last["bytes"].as_u64().unwrap() > 100, "{last}");
    let embedded = summary_count(&first, "chunks");
    assert!(embedded >= 3);

    // Run again: every chunk is found stored as it is; nothing is re-embedded.
    let again = run(&[]);
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(summary_count(&again, "chunks"), 0, "{}", describe(&again));
    assert_eq!(summary_count(&again, "unchanged"), embedded);
    // The listing said so: not one job, not one object read.
    assert_eq!(summary_count(&again, "jobs"), 0, "{}", describe(&again));
    assert_eq!(
        summary_count(&again, "documents"),
        3,
        "{}",
        describe(&again)
    );

    // A missing object fails the run; --keep-going still runs the others.
    s3.put(
        "kb-bucket",
        "kb/new.md",
        "# New\n\nA page added since.\n",
        None,
    );
    let keys = ["kb/missing.md", "kb/new.md", "kb/bread.md"];
    let mut args = vec!["--keep-going"];
    for key in keys {
        args.extend(["--object-key", key]);
    }
    let kept_going = run(&args);
    assert!(!kept_going.status.success(), "{}", describe(&kept_going));
    assert!(stdout(&kept_going).contains("failed: kb/missing.md"));
    assert_eq!(
        summary_count(&kept_going, "complete"),
        2,
        "{}",
        describe(&kept_going)
    );
    assert_eq!(
        chroma
            .records("testdb", "kb-progress")
            .of_key("kb/new.md")
            .len(),
        1
    );

    // Without it the run stops at the failure; every job is accounted for.
    s3.put(
        "kb-bucket",
        "kb/newer.md",
        "# Newer\n\nAnother page.\n",
        None,
    );
    let stopped = run(&[
        "--object-key",
        "kb/missing.md",
        "--object-key",
        "kb/newer.md",
    ]);
    assert!(!stopped.status.success(), "{}", describe(&stopped));
    assert!(stdout(&stopped).contains("failed: kb/missing.md"));
    assert_eq!(
        summary_count(&stopped, "complete") + summary_count(&stopped, "cancelled") + 1,
        2,
        "{}",
        describe(&stopped)
    );
    assert_eq!(summary_count(&stopped, "unfinished"), 0);
}

#[test]
fn an_interrupted_run_resumes_without_redoing_finished_documents() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("bulk");
    let total = 12;
    for i in 0..total {
        let text: String = (0..40)
            .map(|p| format!("Paragraph {p} of document {i}: the quick brown fox jumps over the lazy dog.\n\n"))
            .collect();
        s3.put("bulk", &format!("docs/{i:02}.md"), text, None);
    }
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("run.toml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let source = s3_source(&s3, "bulk", "resumed", Some("docs/")).to_string();
    let command = || {
        let mut command = binary(&chroma.url(), state.path());
        command
            .args(["run", "--config"])
            .arg(&config)
            .args(["--source", &source]);
        command
    };

    // Interrupted (killed) once some documents are in the collection.
    let mut first = Guard(Some(
        command()
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ));
    wait_until(
        "some documents to be synced",
        std::time::Duration::from_secs(300),
        || {
            chroma.collection("testdb", "resumed")?;
            let records = chroma.records("testdb", "resumed");
            let keys: std::collections::BTreeSet<String> = records
                .rows
                .iter()
                .map(|r| r.metadata["document_key"].as_str().unwrap().to_string())
                .collect();
            (keys.len() >= 2).then_some(())
        },
    );
    first.kill();
    let before = chroma.records("testdb", "resumed").rows.len() as u64;

    let output = command().output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    assert_eq!(summary_count(&output, "documents"), total);
    // What the first run finished is found unchanged, not embedded again.
    assert!(before > 0);
    assert_eq!(
        summary_count(&output, "unchanged"),
        before,
        "{}",
        describe(&output)
    );
    let records = chroma.records("testdb", "resumed");
    for i in 0..total {
        assert!(
            !records.of_key(&format!("docs/{i:02}.md")).is_empty(),
            "{i}"
        );
    }
}

/// A nightly re-sync of a bucket where little changed: the listing's ETags
/// are compared with what the collection holds, and only what changed (or
/// what the collection lost) gets a job.
/// The listing comparison reads the stored documents a few hundred keys at
/// a time (`pipeline::listing::KEYS_PER_READ`, 300): a bucket of more
/// objects than one read holds is compared whole (were the second read
/// left out, its 20 notes would get jobs), and the changed objects get the
/// only jobs.
#[test]
fn a_re_sync_of_more_objects_than_one_read_holds_makes_a_job_only_for_the_changed_one() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("many");
    let note = |i: usize, edition: &str| format!("Note {i} of the archive, {edition} edition.\n");
    for i in 0..320 {
        s3.put("many", &format!("notes/{i:03}.md"), note(i, "first"), None);
    }
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("run.toml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let source = s3_source(&s3, "many", "many", None).to_string();
    let run = || {
        binary(&chroma.url(), state.path())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--source", &source])
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(summary_count(&first, "jobs"), 320, "{}", describe(&first));

    assert_nothing_to_do(&run(), 320);

    // One note in the first read's share, one in the second's.
    for i in [7, 311] {
        s3.put("many", &format!("notes/{i:03}.md"), note(i, "second"), None);
    }
    let third = run();
    assert!(third.status.success(), "{}", describe(&third));
    assert_eq!(summary_count(&third, "jobs"), 2, "{}", describe(&third));
    let records = chroma.records("testdb", "many");
    for i in [7, 311] {
        let stored = records.of_key(&format!("notes/{i:03}.md"));
        assert!(stored[0].document.contains("second edition"), "{stored:?}");
    }
}

#[test]
fn a_re_sync_makes_jobs_only_for_what_changed_or_what_the_collection_lost() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("nightly");
    let page = |i: usize, edition: &str| -> String {
        (0..40)
            .map(|p| format!("Paragraph {p} of page {i}, {edition} edition: the harbour lights come on at dusk.\n\n"))
            .collect()
    };
    for i in 0..6 {
        s3.put("nightly", &format!("kb/{i}.md"), page(i, "first"), None);
    }
    let state = tempfile::tempdir().unwrap();
    let config = state.path().join("run.toml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let source = s3_source(&s3, "nightly", "nightly", Some("kb/")).to_string();
    let run_source = |source: &str| {
        binary(&chroma.url(), state.path())
            .args(["run", "--config"])
            .arg(&config)
            .args(["--source", source])
            .output()
            .unwrap()
    };
    let run = || run_source(&source);
    let first = run();
    assert!(first.status.success(), "{}", describe(&first));
    assert_eq!(summary_count(&first, "jobs"), 6, "{}", describe(&first));
    let stored = chroma.records("testdb", "nightly");

    // One page edited, one added; a third loses a chunk in the middle of
    // its document behind the daemon's back.
    s3.put("nightly", "kb/2.md", page(2, "second"), None);
    s3.put("nightly", "kb/9.md", page(9, "first"), None);
    let damaged = stored.of_key("kb/4.md");
    assert!(damaged.len() >= 3, "a page is several chunks: {damaged:?}");
    let middle = damaged
        .iter()
        .find(|r| r.metadata["chunk_index"] == 1)
        .expect("chunk 1 of kb/4.md");
    chroma.delete_ids("testdb", "nightly", &[middle.id.as_str()]);

    let again = run();
    assert!(again.status.success(), "{}", describe(&again));
    assert_eq!(summary_count(&again, "jobs"), 3, "{}", describe(&again));
    assert_eq!(
        summary_count(&again, "documents"),
        7,
        "{}",
        describe(&again)
    );
    let unchanged_pages: u64 = ["kb/0.md", "kb/1.md", "kb/3.md", "kb/5.md"]
        .iter()
        .map(|key| stored.of_key(key).len() as u64)
        .sum();
    // The damaged page's job finds its other chunks as they are.
    let damaged_kept = damaged.len() as u64 - 1;
    assert_eq!(
        summary_count(&again, "unchanged"),
        unchanged_pages + damaged_kept,
        "{}",
        describe(&again)
    );
    let records = chroma.records("testdb", "nightly");
    assert_eq!(records.of_key("kb/4.md").len(), damaged.len(), "repaired");
    assert!(
        records
            .of_key("kb/2.md")
            .iter()
            .all(|r| r.document.contains("second edition")),
        "the edited page is stored as edited"
    );
    assert!(
        !records.of_key("kb/9.md").is_empty(),
        "the new page is stored"
    );

    // Nothing changed since: no job at all.
    let third = run();
    assert_nothing_to_do(&third, records.rows.len());
    assert_eq!(summary_count(&third, "chunks"), 0, "{}", describe(&third));

    // Another source shares the collection. Each re-sync counts only its
    // own documents and leaves the other's alone.
    s3.create_bucket("neighbour");
    s3.put("neighbour", "notes/a.md", page(20, "neighbour"), None);
    s3.put("neighbour", "notes/b.md", page(21, "neighbour"), None);
    let neighbour = s3_source(&s3, "neighbour", "nightly", None).to_string();
    let run_neighbour = || run_source(&neighbour);
    let theirs = run_neighbour();
    assert!(theirs.status.success(), "{}", describe(&theirs));
    assert_eq!(summary_count(&theirs, "jobs"), 2, "{}", describe(&theirs));
    let neighbours_chunks = |records: &Records| -> Vec<String> {
        ["notes/a.md", "notes/b.md"]
            .iter()
            .flat_map(|key| records.of_key(key))
            .map(|r| r.id.clone())
            .collect()
    };
    let theirs_stored = neighbours_chunks(&chroma.records("testdb", "nightly"));
    assert!(!theirs_stored.is_empty());

    // Only its own chunks count as unchanged.
    assert_nothing_to_do(&run(), records.rows.len());
    assert_eq!(
        neighbours_chunks(&chroma.records("testdb", "nightly")),
        theirs_stored,
        "the neighbour's stay"
    );
    assert_nothing_to_do(&run_neighbour(), theirs_stored.len());
}

/// A run that succeeded with no job, counting `unchanged` chunks as such.
fn assert_nothing_to_do(output: &Output, unchanged: usize) {
    assert!(output.status.success(), "{}", describe(output));
    assert_eq!(summary_count(output, "jobs"), 0, "{}", describe(output));
    assert_eq!(
        summary_count(output, "unchanged"),
        unchanged as u64,
        "{}",
        describe(output)
    );
}
