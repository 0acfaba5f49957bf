//! The queue's guarantees, driven directly, on every database it runs on:
//! leases and their expiry on the database's clock, fencing of stale
//! attempts, retries, cancel, deduplication, idempotency keys, per-key
//! exclusion, paging and filters, retention, schedule slots and the page
//! links web crawls remember.
//!
//! Each case is one async fn taking a [`Backend`]; [`conformance!`] runs
//! it as `sqlite::<case>` (a queue file in a temporary directory) and
//! `postgres::<case>` (a database of its own on the test server, see
//! `common::PgDatabase`). Nothing asserts on durations: waits for a lease
//! or a backoff to run out are bounded polling loops, since PostgreSQL
//! settles expired leases at most once a second per process.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chroma_syncd::model::{
    CreateJobPayload, CreateSourcePayload, IndexJobMetadata, JobKind, JobStats, JobStatus,
    KindSettings, SourceType, Trigger, WebhookEvent,
};
use chroma_syncd::queue::{
    CancelOutcome, ClaimedJob, DeliveryResult, HeartbeatOutcome, IdempotencyKey, JobFilter,
    JobState, NewDelivery, NewJob, Outcome, PostgresQueue, Queue, QueueError, SlotOutcome,
    SourceFilter, SourceRecord, SqliteQueue,
};
use chroma_syncd::sources::s3::synced::{MetaJsonDocument, MetaJsonMemory};
use chroma_syncd::sources::s3::{S3JobMetadata, S3SourceConfig};
use chroma_syncd::sources::web::links::{LinkMemory, PageLinks};
use chrono::{DateTime, TimeZone, Utc};
use uuid::Uuid;

// ------------------------------------------------------------ the backends

/// Where a case's queue lives; [`Backend::open`] opens it (again).
#[derive(Clone)]
enum Backend {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Backend {
    async fn open(&self) -> Box<dyn Queue> {
        match self {
            Backend::Sqlite(path) => Box::new(SqliteQueue::open(path, 3).await.unwrap()),
            Backend::Postgres(url) => Box::new(PostgresQueue::open(url, 3).await.unwrap()),
        }
    }

    /// A fresh queue holding one S3 source.
    async fn with_source(&self) -> (Box<dyn Queue>, SourceRecord) {
        let queue = self.open().await;
        let source = queue.create_source(S3, &s3_source("db1")).await.unwrap();
        (queue, source)
    }

    /// Milliseconds left on a job's lease by the database's clock, read
    /// over a connection of the test's own.
    async fn lease_left_ms(&self, id: Uuid) -> i64 {
        use sqlx::Connection;
        match self {
            Backend::Sqlite(path) => {
                let mut db = sqlx::SqliteConnection::connect(&sqlite_url(path))
                    .await
                    .unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT lease_expires_at - {SQLITE_NOW} FROM jobs WHERE id = ?"
                )))
                .bind(id.to_string())
                .fetch_one(&mut db)
                .await
                .unwrap()
            }
            Backend::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT lease_expires_at - {POSTGRES_NOW} FROM jobs WHERE id = $1"
                )))
                .bind(id.to_string())
                .fetch_one(&mut db)
                .await
                .unwrap()
            }
        }
    }

    /// Creates the queue's database as a daemon before migration
    /// `version` left it, then runs each of `statements` on it.
    async fn as_before_migration(&self, version: i64, statements: &[&str]) {
        use sqlx::Connection;
        let dir = match self {
            Backend::Sqlite(_) => "migrations/sqlite",
            Backend::Postgres(_) => "migrations/postgres",
        };
        let migrator = sqlx::migrate::Migrator::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        )
        .await
        .unwrap();
        let before = migrator
            .iter()
            .map(|migration| migration.version)
            .filter(|&v| v < version)
            .max()
            .unwrap();
        match self {
            Backend::Sqlite(path) => {
                let mut db =
                    sqlx::SqliteConnection::connect(&format!("{}?mode=rwc", sqlite_url(path)))
                        .await
                        .unwrap();
                migrator.run_to(before, &mut db).await.unwrap();
                for statement in statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                        .execute(&mut db)
                        .await
                        .unwrap();
                }
            }
            Backend::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                migrator.run_to(before, &mut db).await.unwrap();
                for statement in statements {
                    sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
                        .execute(&mut db)
                        .await
                        .unwrap();
                }
            }
        }
    }

    /// Moves a job's lease to end `offset_ms` from the database's now.
    async fn set_lease(&self, id: Uuid, offset_ms: i64) {
        use sqlx::Connection;
        match self {
            Backend::Sqlite(path) => {
                let mut db = sqlx::SqliteConnection::connect(&sqlite_url(path))
                    .await
                    .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE jobs SET lease_expires_at = {SQLITE_NOW} + ({offset_ms}) WHERE id = ?"
                )))
                .bind(id.to_string())
                .execute(&mut db)
                .await
                .unwrap();
            }
            Backend::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE jobs SET lease_expires_at = {POSTGRES_NOW} + ({offset_ms}) WHERE id = $1"
                )))
                .bind(id.to_string())
                .execute(&mut db)
                .await
                .unwrap();
            }
        }
    }
}

impl Backend {
    /// Stores `value` in a job's `trigger_kind` behind the queue's back (a
    /// row written by another version, or by hand).
    async fn store_trigger(&self, id: Uuid, value: &str) {
        use sqlx::Connection;
        match self {
            Backend::Sqlite(path) => {
                let mut db = sqlx::SqliteConnection::connect(&sqlite_url(path))
                    .await
                    .unwrap();
                sqlx::query("UPDATE jobs SET trigger_kind = ? WHERE id = ?")
                    .bind(value)
                    .bind(id.to_string())
                    .execute(&mut db)
                    .await
                    .unwrap();
            }
            Backend::Postgres(url) => {
                let mut db = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query("UPDATE jobs SET trigger_kind = $1 WHERE id = $2")
                    .bind(value)
                    .bind(id.to_string())
                    .execute(&mut db)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Each database's clock in Unix milliseconds, written out here rather
/// than taken from the crate, so the tests check the queue's choice.
const SQLITE_NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
const POSTGRES_NOW: &str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";

fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite://{}", path.display())
}

/// Runs `case` on a fresh SQLite queue file.
fn on_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::Sqlite(dir.path().join("queue.sqlite3"));
    runtime().block_on(case(backend));
}

/// Runs `case` on a fresh PostgreSQL database (dropped afterwards, outside
/// the case's runtime).
fn on_postgres<F, Fut>(case: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let database = common::PgDatabase::create();
    let backend = Backend::Postgres(database.url.clone());
    runtime().block_on(case(backend));
    drop(database);
}

/// One runtime per case, like `#[tokio::test]`'s.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every case, once per database: `sqlite::<case>` and `postgres::<case>`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $case() {
                super::on_sqlite(super::$case);
            })*
        }
        mod postgres {
            $(#[test]
            fn $case() {
                super::on_postgres(super::$case);
            })*
        }
    };
}

conformance!(
    an_expired_lease_is_reclaimed_and_the_old_attempt_is_fenced_out,
    a_stale_attempt_can_write_no_outcome,
    transient_failures_wait_for_their_backoff_then_exhaust_attempts,
    cancel_duplicates_and_per_key_exclusion,
    concurrent_claims_never_run_two_jobs_of_one_key,
    jobs_survive_reopening_the_queue,
    a_cancel_asked_of_a_running_job_is_never_undone_by_release_or_a_dead_worker,
    leases_are_granted_and_judged_on_the_database_clock,
    idempotency_keys_find_the_original_job,
    deleting_a_source_cancels_its_pending_jobs_and_stops_running_ones,
    jobs_and_sources_are_listed_page_by_page_with_filters,
    latest_by_keys_answers_the_newest_job_of_each_key,
    finished_jobs_and_old_slots_are_pruned,
    a_schedule_slot_is_claimed_once_and_records_its_outcome,
    finished_jobs_owe_one_delivery_which_is_leased_retried_and_listed,
    uploaded_pieces_are_stored_read_back_and_swept,
    audit_names_are_recorded_on_create_and_cancel,
    remembered_page_links_are_replaced_forgotten_and_deleted_with_their_source,
    meta_json_documents_are_remembered_per_file_and_go_with_their_source,
    state_in_the_older_per_kind_tables_survives_the_upgrade,
    an_unknown_stored_trigger_is_a_clear_error,
);

// ------------------------------------------------------------- fixtures

fn s3_source(database: &str) -> CreateSourcePayload {
    let s3 = S3SourceConfig {
        bucket_name: "bucket".into(),
        region: "us-east-1".into(),
        collection_name: "coll".into(),
        aws_credential_id: 0,
        path_prefix: None,
        auto_sync: None,
        endpoint_url: None,
        force_path_style: None,
        sqs_queue_url: None,
    };
    CreateSourcePayload {
        kind: KindSettings::of("s3", &s3).unwrap(),
        database_name: database.into(),
        chunking: None,
        embedding: None,
        embedding_model: None,
        schedule: None,
        webhook: None,
        max_removal_fraction: None,
        ocr: None,
    }
}

fn job(source_id: Uuid, key: &str, dedupe: &str) -> NewJob {
    job_in(source_id, "db1", key, dedupe)
}

fn job_in(source_id: Uuid, database: &str, key: &str, dedupe: &str) -> NewJob {
    NewJob {
        source_id,
        source_type: S3,
        payload: CreateJobPayload {
            object_key: Some(key.into()),
            ..CreateJobPayload::default()
        },
        metadata: IndexJobMetadata {
            kind: JobKind::of(
                "s3",
                &S3JobMetadata {
                    bucket_name: "bucket".into(),
                    object_key: Some(key.into()),
                    custom_id: None,
                    additional_metadata: None,
                },
            )
            .unwrap(),
            database_name: database.into(),
            collection_name: "coll".into(),
        },
        trigger: Trigger::Manual,
        concurrency_key: format!("key:{key}"),
        dedupe_key: dedupe.into(),
        idempotency: None,
        id: None,
        created_by: None,
        notify: false,
        upload: None,
    }
}

/// Short enough to wait for, long enough that the next call of a test
/// comes before it ends.
/// Source kinds' names as the queue stores them.
const S3: SourceType = SourceType::named("s3");
const GITHUB: SourceType = SourceType::named("github");

const SHORT: Duration = Duration::from_millis(1000);
const LONG: Duration = Duration::from_secs(60);
/// Polling rounds of [`POLL`] before a wait gives up (about 20 s).
const ROUNDS: usize = 200;
const POLL: Duration = Duration::from_millis(100);

/// Claims until a job is handed out: a lease or a backoff running out on
/// the database's clock.
async fn claim_when_due(queue: &dyn Queue, worker: &str, lease: Duration) -> ClaimedJob {
    for _ in 0..ROUNDS {
        if let Some(claimed) = queue.claim(worker, lease).await.unwrap() {
            return claimed;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("no job became claimable");
}

/// Claims (finding nothing each time) until job `id` is `state`: the
/// queue settling a lease that ran out.
async fn settled_without_a_claim(queue: &dyn Queue, id: Uuid, state: JobState) -> JobStatus {
    for _ in 0..ROUNDS {
        assert!(
            queue.claim("w", LONG).await.unwrap().is_none(),
            "nothing may be claimed while the job is settled"
        );
        let status = queue.get_job(id).await.unwrap().unwrap().status;
        if status.state() == state {
            return status;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("job {id} never became {}", state.as_str());
}

// ----------------------------------------------------- leases and fencing

async fn an_expired_lease_is_reclaimed_and_the_old_attempt_is_fenced_out(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let created = queue.enqueue(job(source.id, "a", "d1")).await.unwrap();

    let first = queue.claim("worker-1", SHORT).await.unwrap().unwrap();
    assert_eq!(first.attempt, 1);
    assert!(
        queue.claim("worker-2", LONG).await.unwrap().is_none(),
        "leased jobs are not handed out twice"
    );

    let second = claim_when_due(queue.as_ref(), "worker-2", LONG).await;
    assert_eq!(second.job.id, created.id);
    assert_eq!(second.attempt, 2);

    // The first worker wakes up: its heartbeat and outcome are refused.
    let stats = JobStats::default();
    assert_eq!(
        queue
            .heartbeat(created.id, 1, LONG, None, &stats)
            .await
            .unwrap(),
        HeartbeatOutcome::LeaseLost
    );
    assert!(
        !queue
            .finish(created.id, 1, Outcome::Failed("stale".into()), &stats)
            .await
            .unwrap()
    );
    assert!(
        queue
            .finish(created.id, 2, Outcome::Complete, &stats)
            .await
            .unwrap()
    );
    let done = queue.get_job(created.id).await.unwrap().unwrap();
    assert!(
        matches!(done.status, JobStatus::Complete { .. }),
        "{:?}",
        done.status
    );
}

/// Whatever outcome a stale attempt reports, nothing is written: the job
/// stays the newer attempt's.
async fn a_stale_attempt_can_write_no_outcome(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let created = queue.enqueue(job(source.id, "a", "d1")).await.unwrap();
    queue.claim("worker-1", SHORT).await.unwrap().unwrap();
    let second = claim_when_due(queue.as_ref(), "worker-2", LONG).await;
    assert_eq!(second.attempt, 2);

    let stats = JobStats {
        chunks_upserted: 7,
        ..JobStats::default()
    };
    let stale = [
        Outcome::Complete,
        Outcome::Failed("stale".into()),
        Outcome::Cancelled,
        Outcome::Retry {
            error: "stale".into(),
            after: Duration::ZERO,
        },
        Outcome::Released,
    ];
    for outcome in stale {
        let what = format!("{outcome:?}");
        assert!(
            !queue.finish(created.id, 1, outcome, &stats).await.unwrap(),
            "{what} of attempt 1 was written"
        );
    }
    let job = queue.get_job(created.id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Processing);
    assert_eq!(job.attempt, 2);
    assert_eq!(job.stats, JobStats::default(), "no stale stats either");
    assert_eq!(
        queue
            .heartbeat(created.id, 2, LONG, None, &JobStats::default())
            .await
            .unwrap(),
        HeartbeatOutcome::Continue
    );
}

async fn transient_failures_wait_for_their_backoff_then_exhaust_attempts(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let created = queue.enqueue(job(source.id, "a", "d1")).await.unwrap();
    let stats = JobStats::default();

    let claimed = queue.claim("w", LONG).await.unwrap().unwrap();
    let retry = Outcome::Retry {
        error: "Chroma unreachable".into(),
        after: SHORT,
    };
    assert!(
        queue
            .finish(created.id, claimed.attempt, retry, &stats)
            .await
            .unwrap()
    );
    let waiting = queue.get_job(created.id).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Pending);
    assert_eq!(waiting.last_error.as_deref(), Some("Chroma unreachable"));
    assert!(
        queue.claim("w", LONG).await.unwrap().is_none(),
        "not before the backoff has passed"
    );
    let again = claim_when_due(queue.as_ref(), "w", LONG).await;
    assert_eq!(again.attempt, 2);

    // A worker that dies on the last allowed attempt leaves a failed job, not a loop.
    queue
        .finish(
            created.id,
            2,
            Outcome::Retry {
                error: "x".into(),
                after: Duration::ZERO,
            },
            &stats,
        )
        .await
        .unwrap();
    let last = queue.claim("w", SHORT).await.unwrap().unwrap();
    assert_eq!(last.attempt, 3);
    match settled_without_a_claim(queue.as_ref(), created.id, JobState::Failed).await {
        JobStatus::Failed { error } => assert!(
            error.contains("attempt 3 of 3 ended without a result")
                && error.contains("stopped renewing its lease"),
            "{error}"
        ),
        other => panic!("expected failed, got {other:?}"),
    }
}

async fn cancel_duplicates_and_per_key_exclusion(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    assert!(matches!(
        queue.create_source(S3, &s3_source("db1")).await,
        Err(QueueError::Duplicate(_))
    ));

    let a = queue.enqueue(job(source.id, "a", "d-a")).await.unwrap();
    assert!(matches!(
        queue.enqueue(job(source.id, "a", "d-a")).await,
        Err(QueueError::Duplicate(_))
    ));
    // Same object key, different invocation (another dedupe key): allowed, but never run alongside.
    let a2 = queue.enqueue(job(source.id, "a", "d-a2")).await.unwrap();
    let b = queue.enqueue(job(source.id, "b", "d-b")).await.unwrap();
    assert_eq!(queue.pending_count().await.unwrap(), 3);

    let first = queue.claim("w1", LONG).await.unwrap().unwrap();
    assert_eq!(first.job.id, a.id);
    let second = queue.claim("w2", LONG).await.unwrap().unwrap();
    assert_eq!(second.job.id, b.id, "a2 waits while a holds its key");
    assert!(queue.claim("w3", LONG).await.unwrap().is_none());
    assert_eq!(queue.pending_count().await.unwrap(), 1);

    // Cancel: a processing job is asked to stop, a pending one stops at once.
    assert_eq!(
        queue.cancel(a.id, None).await.unwrap(),
        CancelOutcome::Requested
    );
    let stats = JobStats::default();
    assert_eq!(
        queue.heartbeat(a.id, 1, LONG, None, &stats).await.unwrap(),
        HeartbeatOutcome::CancelRequested
    );
    assert_eq!(
        queue.cancel(a2.id, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(
        queue
            .finish(a.id, 1, Outcome::Cancelled, &stats)
            .await
            .unwrap()
    );
    assert!(matches!(
        queue.cancel(a.id, None).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobStatus::Cancelled)
    ));
    assert_eq!(
        queue.cancel(Uuid::new_v4(), None).await.unwrap(),
        CancelOutcome::NotFound
    );

    // Once finished, an identical invocation is accepted again.
    queue.enqueue(job(source.id, "a", "d-a")).await.unwrap();

    // Released on shutdown: back to pending, the attempt not counted.
    assert!(
        queue
            .finish(b.id, 1, Outcome::Released, &stats)
            .await
            .unwrap()
    );
    let released = queue.get_job(b.id).await.unwrap().unwrap();
    assert_eq!(released.status, JobStatus::Pending);
    assert_eq!(released.attempt, 0);
}

/// Many claims at once (on PostgreSQL, on many connections): no job is
/// handed out twice and no two jobs of one key run together; the jobs a
/// busy round left are claimed afterwards, one per key.
async fn concurrent_claims_never_run_two_jobs_of_one_key(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    for i in 0..4 {
        let mut shared = job(source.id, &format!("shared-{i}"), &format!("d-shared-{i}"));
        shared.concurrency_key = "key:shared".into();
        queue.enqueue(shared).await.unwrap();
    }
    for i in 0..4 {
        queue
            .enqueue(job(source.id, &format!("own-{i}"), &format!("d-own-{i}")))
            .await
            .unwrap();
    }
    let workers: Vec<String> = (0..10).map(|i| format!("w{i}")).collect();
    let round =
        futures::future::join_all(workers.iter().map(|worker| queue.claim(worker, LONG))).await;
    let mut claimed: Vec<ClaimedJob> = round.into_iter().filter_map(|c| c.unwrap()).collect();
    while let Some(more) = queue.claim("late", LONG).await.unwrap() {
        claimed.push(more);
        assert!(claimed.len() <= 8, "more claims than jobs");
    }
    let mut ids: Vec<Uuid> = claimed.iter().map(|c| c.job.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), claimed.len(), "a job was handed out twice");
    let shared = claimed
        .iter()
        .filter(|c| {
            c.payload
                .object_key
                .as_deref()
                .is_some_and(|k| k.starts_with("shared-"))
        })
        .count();
    assert_eq!(shared, 1, "exactly one job of the shared key runs");
    assert_eq!(claimed.len(), 5, "one shared job and the four others");
    let processing = queue
        .list_jobs(&JobFilter {
            status: Some(JobState::Processing),
            limit: 100,
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(processing.len(), 5);
    assert_eq!(queue.pending_count().await.unwrap(), 3);
}

async fn jobs_survive_reopening_the_queue(backend: Backend) {
    let id = {
        let queue = backend.open().await;
        let source = queue.create_source(S3, &s3_source("db1")).await.unwrap();
        queue.enqueue(job(source.id, "a", "d")).await.unwrap().id
    };
    let queue = backend.open().await;
    let claimed = queue.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, id);
    assert_eq!(claimed.payload.object_key.as_deref(), Some("a"));
}

async fn a_cancel_asked_of_a_running_job_is_never_undone_by_release_or_a_dead_worker(
    backend: Backend,
) {
    let (queue, source) = backend.with_source().await;
    let stats = JobStats::default();

    // Shutdown releases a job whose cancel was asked: it ends cancelled, not pending.
    let a = queue.enqueue(job(source.id, "a", "d-a")).await.unwrap();
    queue.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(
        queue.cancel(a.id, None).await.unwrap(),
        CancelOutcome::Requested
    );
    assert!(
        queue
            .finish(a.id, 1, Outcome::Released, &stats)
            .await
            .unwrap()
    );
    assert_eq!(
        queue.get_job(a.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );

    // A worker dies after the cancel was asked: the job ends cancelled, never re-runs.
    let b = queue.enqueue(job(source.id, "b", "d-b")).await.unwrap();
    queue.claim("w", SHORT).await.unwrap().unwrap();
    assert_eq!(
        queue.cancel(b.id, None).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        settled_without_a_claim(queue.as_ref(), b.id, JobState::Cancelled).await,
        JobStatus::Cancelled
    );
}

/// Leases are granted, renewed and judged on the database's clock, never on
/// a time a worker computed: no queue call takes one. A job whose lease is
/// live by the database's clock is not claimable (a worker whose clock runs
/// ahead cannot take it early), and one whose lease ran out by it is (a
/// worker whose clock runs behind cannot hold it past its end).
async fn leases_are_granted_and_judged_on_the_database_clock(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let created = queue.enqueue(job(source.id, "a", "d1")).await.unwrap();
    queue.claim("worker-1", LONG).await.unwrap().unwrap();

    // The lease ends LONG after the database's now at the claim.
    let left = backend.lease_left_ms(created.id).await;
    let long = LONG.as_millis() as i64;
    assert!(left <= long && left > long - 10_000, "{left} ms left");

    // Live for three more seconds by the database's clock: not claimable.
    backend.set_lease(created.id, 3000).await;
    assert!(queue.claim("worker-2", LONG).await.unwrap().is_none());
    let stats = JobStats::default();
    assert_eq!(
        queue
            .heartbeat(created.id, 1, LONG, None, &stats)
            .await
            .unwrap(),
        HeartbeatOutcome::Continue,
        "the holder renews it"
    );

    // Ran out a moment ago by the database's clock: claimable (at once on
    // SQLite; PostgreSQL settles expired leases at most once a second per
    // process), and the attempt that ended without a result says so.
    backend.set_lease(created.id, -1).await;
    let second = claim_when_due(queue.as_ref(), "worker-2", LONG).await;
    assert_eq!(second.attempt, 2);
    let stored = queue.get_job(created.id).await.unwrap().unwrap();
    assert!(
        stored
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("attempt 1 of 3 ended without a result")),
        "{:?}",
        stored.last_error
    );
    assert_eq!(
        queue
            .heartbeat(created.id, 1, LONG, None, &stats)
            .await
            .unwrap(),
        HeartbeatOutcome::LeaseLost,
        "the old attempt is fenced out"
    );
}

// ------------------------------------------------ keys, sources and lists

/// An `Idempotency-Key` names one job of a source for good: the job and
/// its request's hash are found by it, and no second job can take it,
/// even after the first finished.
async fn idempotency_keys_find_the_original_job(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let other = queue.create_source(S3, &s3_source("db2")).await.unwrap();
    let keyed = |source_id: Uuid, dedupe: &str, key: &str, hash: &str| {
        let mut new = job(source_id, "a", dedupe);
        new.idempotency = Some(IdempotencyKey {
            key: key.into(),
            request_sha256: hash.into(),
        });
        new
    };
    assert!(
        queue
            .find_idempotent(source.id, "k1")
            .await
            .unwrap()
            .is_none()
    );
    let original = queue
        .enqueue(keyed(source.id, "d1", "k1", "hash-1"))
        .await
        .unwrap();
    let (found, hash) = queue
        .find_idempotent(source.id, "k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, original.id);
    assert_eq!(hash, "hash-1");
    assert!(
        queue
            .find_idempotent(source.id, "k2")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        queue
            .find_idempotent(other.id, "k1")
            .await
            .unwrap()
            .is_none()
    );

    // Another job under the same key: refused, before and after the first finishes.
    assert!(matches!(
        queue.enqueue(keyed(source.id, "d2", "k1", "hash-2")).await,
        Err(QueueError::Duplicate(_))
    ));
    assert_eq!(
        queue.cancel(original.id, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert!(matches!(
        queue.enqueue(keyed(source.id, "d3", "k1", "hash-3")).await,
        Err(QueueError::Duplicate(_))
    ));
    // The same key on another source is another key.
    let elsewhere = queue
        .enqueue(keyed(other.id, "d4", "k1", "hash-4"))
        .await
        .unwrap();
    let (found, hash) = queue
        .find_idempotent(other.id, "k1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((found.id, hash.as_str()), (elsewhere.id, "hash-4"));
    // Jobs without a key never collide on it.
    queue.enqueue(job(source.id, "b", "d5")).await.unwrap();
    queue.enqueue(job(source.id, "c", "d6")).await.unwrap();
}

async fn deleting_a_source_cancels_its_pending_jobs_and_stops_running_ones(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let running = queue.enqueue(job(source.id, "a", "d-a")).await.unwrap();
    let waiting = queue.enqueue(job(source.id, "b", "d-b")).await.unwrap();
    assert_eq!(
        queue.claim("w", LONG).await.unwrap().unwrap().job.id,
        running.id
    );
    assert_eq!(
        queue.get_source(source.id).await.unwrap().unwrap().payload,
        s3_source("db1")
    );

    assert!(queue.delete_source(source.id).await.unwrap());
    assert!(queue.get_source(source.id).await.unwrap().is_none());
    assert_eq!(
        queue.get_job(waiting.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert_eq!(
        queue
            .heartbeat(running.id, 1, LONG, None, &JobStats::default())
            .await
            .unwrap(),
        HeartbeatOutcome::CancelRequested
    );
    assert!(!queue.delete_source(source.id).await.unwrap());
    // The identical source can be created again.
    queue.create_source(S3, &s3_source("db1")).await.unwrap();
}

async fn jobs_and_sources_are_listed_page_by_page_with_filters(backend: Backend) {
    let queue = backend.open().await;
    let one = queue.create_source(S3, &s3_source("db1")).await.unwrap();
    let two = queue.create_source(S3, &s3_source("db2")).await.unwrap();
    let mut created = Vec::new();
    for i in 0..5 {
        let new = job_in(one.id, "db1", &format!("k{i}"), &format!("d{i}"));
        created.push(queue.enqueue(new).await.unwrap().id);
    }
    let in_two = queue
        .enqueue(job_in(two.id, "db2", "x", "dx"))
        .await
        .unwrap();
    let claimed = queue.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, created[0]);

    let ids = |jobs: Vec<chroma_syncd::model::Job>| -> Vec<Uuid> {
        jobs.into_iter().map(|j| j.id).collect()
    };
    let list = |filter: JobFilter| {
        let queue = &queue;
        async move { ids(queue.list_jobs(&filter).await.unwrap()) }
    };
    let of_one = |limit: u32, offset: u32, ascending: bool| JobFilter {
        source_id: Some(one.id),
        limit,
        offset,
        ascending,
        ..JobFilter::default()
    };

    // Oldest first, page by page; newest first is the reverse.
    assert_eq!(list(of_one(2, 0, true)).await, created[0..2].to_vec());
    assert_eq!(list(of_one(2, 2, true)).await, created[2..4].to_vec());
    assert_eq!(list(of_one(2, 4, true)).await, created[4..5].to_vec());
    assert!(list(of_one(2, 6, true)).await.is_empty());
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(list(of_one(10, 0, false)).await, newest_first);

    // Filters: state, database, the databases a caller may see, type.
    let by_state = |state: JobState| JobFilter {
        status: Some(state),
        limit: 10,
        ascending: true,
        ..JobFilter::default()
    };
    assert_eq!(list(by_state(JobState::Processing)).await, vec![created[0]]);
    let mut pending = created[1..].to_vec();
    pending.push(in_two.id);
    assert_eq!(list(by_state(JobState::Pending)).await, pending);
    assert!(list(by_state(JobState::Complete)).await.is_empty());
    assert_eq!(queue.pending_count().await.unwrap(), 5);
    let in_database = JobFilter {
        database_name: Some("db2".into()),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(list(in_database).await, vec![in_two.id]);
    let visible = |databases: &[&str]| JobFilter {
        databases: Some(databases.iter().map(|d| d.to_string()).collect()),
        limit: 10,
        ..JobFilter::default()
    };
    assert!(list(visible(&[])).await.is_empty(), "no database, no jobs");
    assert_eq!(list(visible(&["db2", "db3"])).await, vec![in_two.id]);
    assert_eq!(list(visible(&["db1", "db2"])).await.len(), 6);
    let of_type = |source_type: SourceType| JobFilter {
        source_type: Some(source_type),
        limit: 10,
        ..JobFilter::default()
    };
    assert_eq!(list(of_type(S3)).await.len(), 6);
    assert!(list(of_type(GITHUB)).await.is_empty());

    // Sources: the same paging and filters.
    let sources = |filter: SourceFilter| {
        let queue = &queue;
        async move {
            queue
                .list_sources(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|s| s.id)
                .collect::<Vec<_>>()
        }
    };
    let page = |limit: u32, offset: u32, ascending: bool| SourceFilter {
        limit,
        offset,
        ascending,
        ..SourceFilter::default()
    };
    assert_eq!(sources(page(10, 0, true)).await, vec![one.id, two.id]);
    assert_eq!(sources(page(10, 0, false)).await, vec![two.id, one.id]);
    assert_eq!(sources(page(1, 1, true)).await, vec![two.id]);
    let in_db = SourceFilter {
        database_name: Some("db1".into()),
        limit: 10,
        ..SourceFilter::default()
    };
    assert_eq!(sources(in_db).await, vec![one.id]);
    let visible_sources = SourceFilter {
        databases: Some(vec!["db2".into()]),
        limit: 10,
        ..SourceFilter::default()
    };
    assert_eq!(sources(visible_sources).await, vec![two.id]);
    let no_sources = SourceFilter {
        databases: Some(Vec::new()),
        limit: 10,
        ..SourceFilter::default()
    };
    assert!(sources(no_sources).await.is_empty());
    let github = SourceFilter {
        source_type: Some(GITHUB),
        limit: 10,
        ..SourceFilter::default()
    };
    assert!(sources(github).await.is_empty());
    let all = chroma_syncd::queue::all_sources(queue.as_ref(), Some(S3))
        .await
        .unwrap();
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![one.id, two.id]
    );
}

/// The newest job of each object key asked about, in the order asked;
/// keys without a job are left out.
async fn latest_by_keys_answers_the_newest_job_of_each_key(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let old_a = queue.enqueue(job(source.id, "a", "d-a1")).await.unwrap();
    assert_eq!(
        queue.cancel(old_a.id, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let new_a = queue.enqueue(job(source.id, "a", "d-a2")).await.unwrap();
    let b = queue.enqueue(job(source.id, "b", "d-b")).await.unwrap();
    let other = queue.create_source(S3, &s3_source("db2")).await.unwrap();
    queue.enqueue(job(other.id, "c", "d-c")).await.unwrap();

    let keys: Vec<String> = ["b", "missing", "a", "c"].map(String::from).to_vec();
    let found = queue.latest_by_keys(source.id, &keys).await.unwrap();
    let found: Vec<(&str, Uuid, JobState)> = found
        .iter()
        .map(|(key, job)| (key.as_str(), job.id, job.status.state()))
        .collect();
    assert_eq!(
        found,
        vec![
            ("b", b.id, JobState::Pending),
            ("a", new_a.id, JobState::Pending)
        ]
    );
    assert!(
        queue
            .latest_by_keys(source.id, &[])
            .await
            .unwrap()
            .is_empty()
    );

    // More keys than one statement binds.
    let many: Vec<String> = (0..1200).map(|i| format!("k{i:04}")).collect();
    for key in ["k0000", "k0777", "k1199"] {
        queue
            .enqueue(job(source.id, key, &format!("d-{key}")))
            .await
            .unwrap();
    }
    let found = queue.latest_by_keys(source.id, &many).await.unwrap();
    let keys: Vec<&str> = found.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["k0000", "k0777", "k1199"]);
}

// ------------------------------------------------ retention and schedules

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

/// Finished jobs and recorded slots older than the cut-off go; live jobs
/// stay whatever their age.
async fn finished_jobs_and_old_slots_are_pruned(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let stats = JobStats::default();
    let complete = queue.enqueue(job(source.id, "a", "d-a")).await.unwrap();
    let cancelled = queue.enqueue(job(source.id, "b", "d-b")).await.unwrap();
    let failed = queue.enqueue(job(source.id, "c", "d-c")).await.unwrap();
    let claimed = queue.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, complete.id);
    assert!(
        queue
            .finish(complete.id, 1, Outcome::Complete, &stats)
            .await
            .unwrap()
    );
    assert_eq!(
        queue.cancel(cancelled.id, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        queue.claim("w", LONG).await.unwrap().unwrap().job.id,
        failed.id
    );
    assert!(
        queue
            .finish(failed.id, 1, Outcome::Failed("no".into()), &stats)
            .await
            .unwrap()
    );
    let running = queue.enqueue(job(source.id, "d", "d-d")).await.unwrap();
    queue.claim("w", LONG).await.unwrap().unwrap();
    let waiting = queue.enqueue(job(source.id, "e", "d-e")).await.unwrap();
    assert!(queue.claim_schedule_slot(source.id, at(0)).await.unwrap());

    // Nothing finished before an hour ago.
    let hour = chrono::Duration::hours(1);
    assert_eq!(queue.prune_finished(Utc::now() - hour).await.unwrap(), 0);
    assert_eq!(queue.schedule_slots(source.id, 10).await.unwrap().len(), 1);

    // Everything finished before an hour from now.
    assert_eq!(queue.prune_finished(Utc::now() + hour).await.unwrap(), 3);
    for gone in [complete.id, cancelled.id, failed.id] {
        assert!(queue.get_job(gone).await.unwrap().is_none());
    }
    assert_eq!(
        queue.get_job(running.id).await.unwrap().unwrap().status,
        JobStatus::Processing
    );
    assert_eq!(
        queue.get_job(waiting.id).await.unwrap().unwrap().status,
        JobStatus::Pending
    );
    assert!(
        queue
            .schedule_slots(source.id, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A slot fires once however many queues (daemons) ask; its record says
/// what became of it; slots list newest first.
async fn a_schedule_slot_is_claimed_once_and_records_its_outcome(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let other_daemon = backend.open().await;
    assert!(queue.claim_schedule_slot(source.id, at(60)).await.unwrap());
    assert!(!queue.claim_schedule_slot(source.id, at(60)).await.unwrap());
    assert!(
        !other_daemon
            .claim_schedule_slot(source.id, at(60))
            .await
            .unwrap()
    );
    let other = queue.create_source(S3, &s3_source("db2")).await.unwrap();
    assert!(
        other_daemon
            .claim_schedule_slot(other.id, at(60))
            .await
            .unwrap(),
        "slots are per source"
    );

    // Claimed, not yet recorded.
    let slots = queue.schedule_slots(source.id, 10).await.unwrap();
    assert_eq!(slots.len(), 1);
    assert_eq!(
        (slots[0].slot, slots[0].outcome, slots[0].jobs),
        (at(60), SlotOutcome::Claimed, 0)
    );

    queue
        .record_schedule_slot(source.id, at(60), SlotOutcome::Enqueued, 3, None)
        .await
        .unwrap();
    assert!(queue.claim_schedule_slot(source.id, at(120)).await.unwrap());
    queue
        .record_schedule_slot(
            source.id,
            at(120),
            SlotOutcome::Failed,
            0,
            Some("bucket cannot be listed"),
        )
        .await
        .unwrap();
    assert!(queue.claim_schedule_slot(source.id, at(0)).await.unwrap());
    queue
        .record_schedule_slot(
            source.id,
            at(0),
            SlotOutcome::Skipped,
            0,
            Some("the previous run was still going"),
        )
        .await
        .unwrap();

    let slots = queue.schedule_slots(source.id, 10).await.unwrap();
    let listed: Vec<(DateTime<Utc>, SlotOutcome, u32, Option<&str>)> = slots
        .iter()
        .map(|s| (s.slot, s.outcome, s.jobs, s.message.as_deref()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (
                at(120),
                SlotOutcome::Failed,
                0,
                Some("bucket cannot be listed")
            ),
            (at(60), SlotOutcome::Enqueued, 3, None),
            (
                at(0),
                SlotOutcome::Skipped,
                0,
                Some("the previous run was still going")
            ),
        ]
    );
    let newest = queue.schedule_slots(source.id, 1).await.unwrap();
    assert_eq!(newest.len(), 1);
    assert_eq!(newest[0].slot, at(120));
    assert_eq!(
        serde_json::to_value(&newest[0]).unwrap()["outcome"],
        "failed",
        "sent as the lower-case name"
    );
    assert_eq!(
        other_daemon.schedule_slots(other.id, 10).await.unwrap()[0].outcome,
        SlotOutcome::Claimed
    );
}

async fn finished_jobs_owe_one_delivery_which_is_leased_retried_and_listed(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let mut owing = job(source.id, "a", "d-a");
    owing.notify = true;
    let owing = queue.enqueue(owing).await.unwrap();
    let quiet = queue.enqueue(job(source.id, "b", "d-b")).await.unwrap();
    // Pending jobs owe nothing yet.
    assert!(queue.unannounced_jobs(10).await.unwrap().is_empty());
    assert_eq!(
        queue.cancel(owing.id, Some("ops")).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        queue.cancel(quiet.id, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let due = queue.unannounced_jobs(10).await.unwrap();
    assert_eq!(due.iter().map(|j| j.id).collect::<Vec<_>>(), vec![owing.id]);

    let delivery = || NewDelivery {
        source_id: source.id,
        event: WebhookEvent::Cancelled,
        url: "https://hooks.example.com/x".into(),
        body: "{\"id\": 1}".into(),
        retry_for: Duration::from_secs(3600),
    };
    queue.announce(owing.id, Some(delivery())).await.unwrap();
    // Announced once: a second announcement (a process that died before
    // marking the job) stores no second row.
    assert!(queue.unannounced_jobs(10).await.unwrap().is_empty());
    queue.announce(owing.id, Some(delivery())).await.unwrap();
    assert_eq!(queue.list_deliveries(source.id, 10).await.unwrap().len(), 1);

    let first = queue.claim_delivery(SHORT).await.unwrap().unwrap();
    assert_eq!((first.job_id, first.attempts), (owing.id, 1));
    assert_eq!(first.body, "{\"id\": 1}");
    assert!(
        queue.claim_delivery(SHORT).await.unwrap().is_none(),
        "leased"
    );
    // The attempt's process dies: once its lease ran out, another takes it.
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    let second = queue.claim_delivery(LONG).await.unwrap().unwrap();
    assert_eq!((second.id, second.attempts), (first.id, 2));
    // The dead attempt's late answer is fenced out.
    let answered = |status, retry_after| DeliveryResult {
        status: Some(status),
        error: None,
        retry_after,
    };
    queue
        .record_delivery(&first, answered(200, None))
        .await
        .unwrap();
    assert_eq!(
        queue.list_deliveries(source.id, 10).await.unwrap()[0].state,
        "delivering"
    );
    queue
        .record_delivery(&second, answered(500, Some(Duration::ZERO)))
        .await
        .unwrap();
    let third = queue.claim_delivery(LONG).await.unwrap().unwrap();
    assert_eq!(third.attempts, 3);
    queue
        .record_delivery(&third, answered(204, None))
        .await
        .unwrap();
    let listed = &queue.list_deliveries(source.id, 10).await.unwrap()[0];
    assert_eq!(listed.state, "delivered");
    assert_eq!(listed.attempts, 3);
    assert_eq!(listed.last_status, Some(204));
    let statuses: Vec<_> = listed.responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(204)]);
    assert!(queue.claim_delivery(LONG).await.unwrap().is_none());

    // Past its give-up time a failing delivery is failed, not retried.
    let mut short = job(source.id, "c", "d-c");
    short.notify = true;
    let short = queue.enqueue(short).await.unwrap();
    queue.cancel(short.id, None).await.unwrap();
    let mut brief = delivery();
    brief.retry_for = Duration::from_millis(100);
    queue.announce(short.id, Some(brief)).await.unwrap();
    let attempt = queue.claim_delivery(LONG).await.unwrap().unwrap();
    queue
        .record_delivery(&attempt, answered(500, Some(Duration::from_secs(1))))
        .await
        .unwrap();
    let failed = queue.list_deliveries(source.id, 10).await.unwrap();
    let failed = failed.iter().find(|d| d.invocation_id == short.id).unwrap();
    assert_eq!(failed.state, "failed");
}

async fn uploaded_pieces_are_stored_read_back_and_swept(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let upload = Uuid::new_v4();
    let piece: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    queue.put_upload_piece(upload, 0, &piece).await.unwrap();
    queue.put_upload_piece(upload, 1, b"tail").await.unwrap();
    assert_eq!(queue.upload_piece(upload, 0).await.unwrap().unwrap(), piece);
    assert_eq!(
        queue.upload_piece(upload, 1).await.unwrap().unwrap(),
        b"tail"
    );
    assert!(queue.upload_piece(upload, 2).await.unwrap().is_none());
    // No job yet: only old enough orphans are stale.
    let past = chrono::Utc::now() - chrono::Duration::hours(1);
    let future = chrono::Utc::now() + chrono::Duration::hours(1);
    assert!(queue.stale_uploads(past).await.unwrap().is_empty());
    assert_eq!(queue.stale_uploads(future).await.unwrap(), vec![upload]);
    // With a job: stale once the job has finished, however new.
    let mut owned = job(source.id, "u", "d-u");
    owned.id = Some(upload);
    let owned = queue.enqueue(owned).await.unwrap();
    assert_eq!(owned.id, upload);
    assert!(queue.stale_uploads(future).await.unwrap().is_empty());
    queue.cancel(upload, None).await.unwrap();
    assert_eq!(queue.stale_uploads(past).await.unwrap(), vec![upload]);
    queue.delete_upload(upload).await.unwrap();
    assert!(queue.upload_piece(upload, 0).await.unwrap().is_none());
}

async fn audit_names_are_recorded_on_create_and_cancel(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let mut named = job(source.id, "a", "d-a");
    named.created_by = Some("team-a".into());
    let named = queue.enqueue(named).await.unwrap();
    assert_eq!(named.created_by.as_deref(), Some("team-a"));
    let running = queue.claim("w1", LONG).await.unwrap().unwrap();
    assert_eq!(
        queue.cancel(running.job.id, Some("ops")).await.unwrap(),
        CancelOutcome::Requested
    );
    // A second request does not overwrite who asked first.
    queue.cancel(running.job.id, Some("other")).await.unwrap();
    let job = queue.get_job(named.id).await.unwrap().unwrap();
    assert_eq!(job.cancel_requested_by.as_deref(), Some("ops"));
    assert_eq!(job.created_by.as_deref(), Some("team-a"));
}

fn page_links(url: &str, version: &str, links: &[&str]) -> PageLinks {
    PageLinks {
        url: url.to_string(),
        etag: Some(format!("\"{version}\"")),
        last_modified: None,
        version: version.to_string(),
        skip_reason: None,
        links: links.iter().map(|l| l.to_string()).collect(),
    }
}

/// Sorted by URL, for comparing answers given in no particular order.
async fn remembered(queue: &Arc<dyn Queue>, source: Uuid, urls: &[&str]) -> Vec<PageLinks> {
    let urls: Vec<String> = urls.iter().map(|u| u.to_string()).collect();
    let mut rows: Vec<PageLinks> = links(queue, source)
        .recall(&urls)
        .await
        .into_values()
        .collect();
    rows.sort_by(|a, b| a.url.cmp(&b.url));
    rows
}

/// The web kind's page memory of `source`, in the queue's source state.
fn links(queue: &Arc<dyn Queue>, source: Uuid) -> LinkMemory {
    LinkMemory::new(Arc::clone(queue), source)
}

async fn remembered_page_links_are_replaced_forgotten_and_deleted_with_their_source(
    backend: Backend,
) {
    let (queue, source) = backend.with_source().await;
    let queue: Arc<dyn Queue> = Arc::from(queue);
    let other = queue.create_source(S3, &s3_source("db2")).await.unwrap();
    let (a, b, c) = ("https://x.test/a", "https://x.test/b", "https://x.test/c");
    let first_a = page_links(a, "1", &[b, c]);
    let mut skipped_b = page_links(b, "1", &[]);
    skipped_b.skip_reason = Some("noindex".into());
    skipped_b.etag = None;
    skipped_b.last_modified = Some("Tue, 01 Dec 2026 10:00:00 GMT".into());
    links(&queue, source.id)
        .store(&[first_a.clone(), skipped_b.clone()], &[])
        .await;
    links(&queue, other.id)
        .store(&[page_links(a, "9", &[])], &[])
        .await;
    assert_eq!(
        remembered(&queue, source.id, &[a, b, c]).await,
        vec![first_a, skipped_b.clone()]
    );

    // A new fetch replaces a row (the last of a URL named twice wins); a
    // forgotten page loses its row; other sources keep theirs.
    let second_a = page_links(a, "2", &[c]);
    links(&queue, source.id)
        .store(
            &[page_links(a, "1.5", &[]), second_a.clone()],
            &[b.to_string()],
        )
        .await;
    assert_eq!(
        remembered(&queue, source.id, &[a, b, c]).await,
        vec![second_a]
    );
    assert_eq!(
        remembered(&queue, other.id, &[a]).await,
        vec![page_links(a, "9", &[])]
    );

    // Many pages at once (more than one statement's worth of each).
    let many: Vec<PageLinks> = (0..1200)
        .map(|i| page_links(&format!("https://x.test/p{i}"), "1", &[a]))
        .collect();
    links(&queue, source.id).store(&many, &[]).await;
    let urls: Vec<String> = many.iter().map(|p| p.url.clone()).collect();
    assert_eq!(links(&queue, source.id).recall(&urls).await.len(), 1200);

    assert!(queue.delete_source(source.id).await.unwrap());
    assert!(links(&queue, source.id).recall(&urls).await.is_empty());
    assert!(remembered(&queue, source.id, &[a]).await.is_empty());
    assert_eq!(remembered(&queue, other.id, &[a]).await.len(), 1);
}

/// What a metadata file synced: `id` in `collection`, read from `key`.
fn document(collection: &str, id: &str, key: &str) -> MetaJsonDocument {
    MetaJsonDocument {
        collection_name: collection.into(),
        custom_id: id.into(),
        object_key: key.into(),
    }
}

async fn meta_json_documents_are_remembered_per_file_and_go_with_their_source(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let file = "docs/report.meta.json";
    assert!(
        MetaJsonMemory::new(&*queue, source.id)
            .documents(file)
            .await
            .unwrap()
            .is_empty()
    );
    MetaJsonMemory::new(&*queue, source.id)
        .put(file, &document("c", "r1", "docs/a.pdf"))
        .await
        .unwrap();
    // The same document again takes the new object key, no second row.
    MetaJsonMemory::new(&*queue, source.id)
        .put(file, &document("c", "r1", "docs/b.pdf"))
        .await
        .unwrap();
    MetaJsonMemory::new(&*queue, source.id)
        .put(file, &document("reports", "r2", "docs/b.pdf"))
        .await
        .unwrap();
    let other = "docs/copy.meta.json";
    MetaJsonMemory::new(&*queue, source.id)
        .put(other, &document("c", "r1", "docs/b.pdf"))
        .await
        .unwrap();
    // Another daemon on the same queue sees them.
    let other_daemon = backend.open().await;
    let mut listed = MetaJsonMemory::new(&*other_daemon, source.id)
        .documents(file)
        .await
        .unwrap();
    listed.sort_by(|a, b| a.custom_id.cmp(&b.custom_id));
    assert_eq!(
        listed,
        vec![
            document("c", "r1", "docs/b.pdf"),
            document("reports", "r2", "docs/b.pdf")
        ]
    );
    assert_eq!(
        MetaJsonMemory::new(&*queue, source.id)
            .files_of("c", "r1")
            .await
            .unwrap(),
        vec![other.to_string(), file.to_string()]
    );
    assert!(
        MetaJsonMemory::new(&*queue, source.id)
            .files_of("reports", "r1")
            .await
            .unwrap()
            .is_empty(),
        "per collection"
    );

    MetaJsonMemory::new(&*queue, source.id)
        .remove(file, &document("c", "r1", "ignored"))
        .await
        .unwrap();
    assert_eq!(
        MetaJsonMemory::new(&*queue, source.id)
            .documents(file)
            .await
            .unwrap(),
        vec![document("reports", "r2", "docs/b.pdf")]
    );
    assert_eq!(
        MetaJsonMemory::new(&*queue, source.id)
            .files_of("c", "r1")
            .await
            .unwrap(),
        vec![other.to_string()]
    );

    // Per source, and deleted with it.
    let second = queue.create_source(S3, &s3_source("db2")).await.unwrap();
    MetaJsonMemory::new(&*queue, second.id)
        .put(file, &document("c", "r9", "docs/z.md"))
        .await
        .unwrap();
    assert!(queue.delete_source(source.id).await.unwrap());
    assert!(
        MetaJsonMemory::new(&*queue, source.id)
            .documents(file)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        MetaJsonMemory::new(&*queue, source.id)
            .files_of("c", "r1")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        MetaJsonMemory::new(&*queue, second.id)
            .documents(file)
            .await
            .unwrap(),
        vec![document("c", "r9", "docs/z.md")]
    );
}

/// Issue 30: per-kind state moved from a table (and queue methods) per kind
/// into one key-value store; a queue written by an older daemon upgrades
/// in place and its kinds find what they remembered.
async fn state_in_the_older_per_kind_tables_survives_the_upgrade(backend: Backend) {
    let source = Uuid::new_v4();
    let web = format!(
        "INSERT INTO web_page_links (source_id, page_url, etag, last_modified, version, \
         skip_reason, links, recorded_at) VALUES ('{source}', 'https://x.test/a', '\"v1\"', \
         NULL, 'v1', 'noindex', '[\"https://x.test/b\",\"https://x.test/c\"]', 5)"
    );
    let meta = |file: &str, collection: &str, id: &str, key: &str| {
        format!(
            "INSERT INTO meta_json_documents (source_id, meta_key, collection_name, custom_id, \
             object_key, updated_at) VALUES ('{source}', '{file}', '{collection}', '{id}', \
             '{key}', 7)"
        )
    };
    let first = meta("docs/é.meta.json", "c", "r1", "docs/a.pdf");
    let second = meta("docs/é.meta.json", "reports", "r2:x", "docs/b.pdf");
    let copy = meta("docs/copy.meta.json", "c", "r1", "docs/a.pdf");
    backend
        .as_before_migration(9, &[&web, &first, &second, &copy])
        .await;
    let queue: Arc<dyn Queue> = Arc::from(backend.open().await);
    let mut expected = page_links(
        "https://x.test/a",
        "v1",
        &["https://x.test/b", "https://x.test/c"],
    );
    expected.skip_reason = Some("noindex".into());
    assert_eq!(
        remembered(&queue, source, &["https://x.test/a"]).await,
        vec![expected]
    );
    let memory = MetaJsonMemory::new(&*queue, source);
    let mut synced = memory.documents("docs/é.meta.json").await.unwrap();
    synced.sort_by(|a, b| a.custom_id.cmp(&b.custom_id));
    assert_eq!(
        synced,
        vec![
            document("c", "r1", "docs/a.pdf"),
            document("reports", "r2:x", "docs/b.pdf")
        ]
    );
    assert_eq!(
        memory.files_of("c", "r1").await.unwrap(),
        vec![
            "docs/copy.meta.json".to_string(),
            "docs/é.meta.json".to_string()
        ]
    );
    assert_eq!(
        memory.files_of("reports", "r2:x").await.unwrap(),
        vec!["docs/é.meta.json".to_string()]
    );
}

async fn an_unknown_stored_trigger_is_a_clear_error(backend: Backend) {
    let (queue, source) = backend.with_source().await;
    let id = queue.enqueue(job(source.id, "a", "d")).await.unwrap().id;
    for trigger in Trigger::ALL {
        backend.store_trigger(id, trigger.as_str()).await;
        let stored = queue.get_job(id).await.unwrap().unwrap();
        assert_eq!(stored.trigger, trigger);
    }
    // Once any text but a trigger's name read as `manual`.
    backend.store_trigger(id, "cron").await;
    match queue.get_job(id).await {
        Err(QueueError::Corrupt(message)) => {
            assert_eq!(message, "job trigger: cron");
        }
        other => panic!("an unknown trigger was read as {other:?}"),
    }
}
