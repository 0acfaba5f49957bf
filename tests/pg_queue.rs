//! User story: an operator scales out. Several `worker` processes (and the
//! `serve` process) share one PostgreSQL queue; every invocation runs exactly
//! once, and a worker killed with SIGKILL mid-job loses nothing: its job is
//! leased again and the collection ends up as a clean run would leave it.

mod common;

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Leases long enough that eight model instances on two cores never miss one.
fn config() -> String {
    TEST_CONFIG.replace("lease_seconds = 4", "lease_seconds = 10")
}

fn worker(
    chroma: &Chroma,
    state: &std::path::Path,
    config: &std::path::Path,
    queue: &str,
) -> Guard {
    Guard(Some(
        binary(&chroma.url(), state)
            .args(["worker", "--config"])
            .arg(config)
            .env("CHROMA_SYNCD_QUEUE_URL", queue)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a worker"),
    ))
}

/// A document of `paragraphs` paragraphs: more paragraphs, more chunks, longer jobs.
fn document(key: usize, paragraphs: usize) -> String {
    let mut text = format!("# Document {key}\n\n");
    for p in 0..paragraphs {
        text.push_str(&format!(
            "Paragraph {p} of document {key} describes a queue that many workers share, \
             and how a lease that is not renewed hands the job to another worker.\n\n"
        ));
    }
    text
}

#[test]
fn workers_on_one_postgres_queue_run_each_job_once_and_survive_kill_9() {
    let database = PgDatabase::create();
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("shared-queue");
    let small: Vec<String> = (0..200).map(|i| format!("small/{i:03}.md")).collect();
    for (i, key) in small.iter().enumerate() {
        s3.put("shared-queue", key, document(i, 1), None);
    }
    let large: Vec<String> = (0..12).map(|i| format!("large/{i:02}.md")).collect();
    for (i, key) in large.iter().enumerate() {
        s3.put("shared-queue", key, document(i, 60), None);
    }

    // The API process also works; three worker processes join it.
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config(),
        &[("CHROMA_SYNCD_QUEUE_URL", &database.url)],
    );
    let config_path = daemon.state.path().join("worker.toml");
    std::fs::write(&config_path, config()).unwrap();
    let states: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut workers: Vec<Guard> = states
        .iter()
        .map(|state| worker(&chroma, state.path(), &config_path, &database.url))
        .collect();

    let source = daemon.create_source(s3_source(&s3, "shared-queue", "shared", None));
    let ids: Vec<String> = small
        .iter()
        .map(|key| daemon.invoke(&source, json!({"object_key": key})))
        .collect();
    for id in &ids {
        let job = daemon.wait_complete(id);
        assert_eq!(job["attempt"], 1, "claimed more than once: {job}");
    }

    // Long jobs; one worker is killed while it holds some of them.
    let ids: Vec<String> = large
        .iter()
        .map(|key| daemon.invoke(&source, json!({"object_key": key})))
        .collect();
    // Kill -9 a worker process while it holds a job.
    let victim = wait_until(
        "a worker process to hold a job",
        Duration::from_secs(120),
        || {
            let owners: Vec<String> = runtime().block_on(async {
            use sqlx::Connection;
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query_scalar(
                "SELECT lease_owner FROM jobs WHERE state = 'processing' AND lease_owner IS NOT NULL",
            )
            .fetch_all(&mut connection)
            .await
            .unwrap()
        });
            workers.iter().position(|w| {
                let pid = w.0.as_ref().unwrap().id();
                owners.iter().any(|o| o.contains(&format!("-{pid}-")))
            })
        },
    );
    workers[victim].kill();
    let mut retried = 0;
    for id in &ids {
        let job = daemon.wait_finished(id, Duration::from_secs(600));
        assert!(
            job["status"]["complete"].is_object(),
            "{job}\n{}",
            daemon.log()
        );
        if job["attempt"].as_u64().unwrap() > 1 {
            retried += 1;
        }
    }
    drop(workers);
    assert!(retried >= 1, "the killed worker's job was leased again");

    // The collection holds exactly what a clean run writes: every chunk of
    // every document once, nothing else.
    let records = chroma.records("testdb", "shared");
    let keys: BTreeSet<&str> = records
        .rows
        .iter()
        .map(|r| r.metadata["document_key"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = small.iter().chain(&large).map(String::as_str).collect();
    assert_eq!(keys, expected);
    for key in &expected {
        let chunks = records.of_key(key);
        let mut indices: Vec<u64> = chunks
            .iter()
            .map(|r| r.metadata["chunk_index"].as_u64().unwrap())
            .collect();
        indices.sort();
        assert_eq!(
            indices,
            (0..chunks.len() as u64).collect::<Vec<_>>(),
            "{key}"
        );
        for chunk in chunks {
            assert_eq!(
                chunk.id,
                format!("{}-{}", sha256_hex(key), chunk.metadata["chunk_index"])
            );
        }
    }
    eprintln!("jobs retried after the kill: {retried}");
}

#[test]
fn processes_starting_together_share_one_migrated_queue() {
    let database = PgDatabase::create();
    let chroma = Chroma::start();
    let state = tempfile::tempdir().unwrap();
    let config_path = state.path().join("worker.toml");
    std::fs::write(&config_path, config()).unwrap();
    // Four processes race to migrate the empty database.
    let mut workers: Vec<Guard> = (0..4)
        .map(|_| worker(&chroma, state.path(), &config_path, &database.url))
        .collect();
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config(),
        &[("CHROMA_SYNCD_QUEUE_URL", &database.url)],
    );
    let (status, _) = daemon.request(reqwest::Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200);
    for worker in &mut workers {
        let child = worker.0.as_mut().unwrap();
        assert!(
            child.try_wait().unwrap().is_none(),
            "a worker exited: migrations raced"
        );
    }
}

/// What a PostgreSQL query answers, on a fresh connection.
fn pg_query<T>(url: &str, sql: &'static str) -> T
where
    T: for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send + Unpin,
{
    runtime().block_on(async {
        use sqlx::Connection;
        let mut connection = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .unwrap()
    })
}

/// A worker whose connection to the queue goes silent mid-job (no error,
/// no reset: its renewals just hang) stops its attempt while its lease is
/// still live, so it never writes alongside the worker that takes the job
/// over; the job's result is written once, by the second attempt, and the
/// collection holds what a clean run writes.
#[test]
fn a_worker_whose_heartbeat_hangs_stops_before_another_takes_its_job() {
    use common::stall::StallProxy;
    let database = PgDatabase::create();
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("silent");
    s3.put("silent", "long.md", document(0, 5000), None);
    let proxy = StallProxy::start("127.0.0.1:5432");
    let mut through_proxy = url::Url::parse(&database.url).unwrap();
    through_proxy.set_port(Some(proxy.port)).unwrap();

    // The first daemon reaches PostgreSQL only through the proxy.
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config(),
        &[("CHROMA_SYNCD_QUEUE_URL", through_proxy.as_str())],
    );
    let source = daemon.create_source(s3_source(&s3, "silent", "silent", None));
    let id = daemon.invoke(&source, json!({"object_key": "long.md"}));
    let upserted = "SELECT COALESCE(MAX((stats::json->>'chunks_upserted')::BIGINT), 0) \
                    FROM jobs WHERE state = 'processing'";
    wait_until(
        "the job to be part-way through",
        Duration::from_secs(180),
        || (pg_query::<i64>(&database.url, upserted) > 0).then_some(()),
    );

    // A second worker process, on a healthy connection, waits for work.
    let config_path = daemon.state.path().join("worker.toml");
    std::fs::write(&config_path, config()).unwrap();
    let state = tempfile::tempdir().unwrap();
    let _second = worker(&chroma, state.path(), &config_path, &database.url);

    proxy.stall();
    wait_until(
        "the first worker to stop its attempt",
        Duration::from_secs(60),
        || {
            daemon
                .log()
                .contains("lease could not be renewed in time")
                .then_some(())
        },
    );
    let live: bool = pg_query(
        &database.url,
        "SELECT state = 'processing' AND attempt = 1
                AND lease_expires_at > (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT
         FROM jobs",
    );
    assert!(
        live,
        "the first worker stopped while its lease was still live: nobody else could have the job"
    );

    let finished = wait_until(
        "the second worker to finish the job",
        Duration::from_secs(300),
        || {
            let state: String = pg_query(&database.url, "SELECT state FROM jobs");
            (state != "processing" && state != "pending").then_some(state)
        },
    );
    assert_eq!(finished, "complete");
    let attempt: i64 = pg_query(&database.url, "SELECT attempt::BIGINT FROM jobs");
    assert_eq!(attempt, 2, "written by the second attempt");

    // The network comes back: the first worker's stale attempt writes nothing.
    proxy.resume();
    wait_until(
        "the first daemon's API to answer again",
        Duration::from_secs(60),
        || {
            let (status, job) = daemon.request(
                reqwest::Method::GET,
                &format!("/api/v1/invocations/{id}"),
                None,
            );
            (status == 200 && job["status"]["complete"].is_object()).then_some(())
        },
    );
    assert!(
        daemon
            .log()
            .contains("no longer holds the lease; dropping its outcome"),
        "{}",
        daemon.log()
    );
    let clean = daemon.invoke(
        &source,
        json!({"object_key": "long.md", "target_collection_name": "silent-clean"}),
    );
    daemon.wait_complete(&clean);
    let contents = |collection: &str| -> Vec<(String, String)> {
        chroma
            .records("testdb", collection)
            .rows
            .into_iter()
            .map(|r| (r.id, r.document))
            .collect()
    };
    let synced = contents("silent");
    assert!(synced.len() > 100, "{}", synced.len());
    assert_eq!(synced, contents("silent-clean"));
    assert_eq!(daemon.job(&id)["attempt"], 2);
}
