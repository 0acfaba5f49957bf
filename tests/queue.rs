//! The SQLite queue's guarantees, driven directly: leases, fencing, retries,
//! cancel, deduplication and per-key exclusion.

use std::time::Duration;

use chroma_syncd::model::{
    CreateJobPayload, CreateSourcePayload, IndexJobMetadata, JobKind, JobStats, JobStatus,
    S3JobMetadata, S3SourceConfig, SourceType, Trigger,
};
use chroma_syncd::queue::{
    CancelOutcome, HeartbeatOutcome, NewJob, Outcome, Queue, QueueError, SourceRecord, SqliteQueue,
};

async fn queue(dir: &tempfile::TempDir) -> SqliteQueue {
    SqliteQueue::open(&dir.path().join("queue.sqlite3"), 3)
        .await
        .unwrap()
}

fn s3_source() -> CreateSourcePayload {
    CreateSourcePayload {
        github: None,
        web_scrape: None,
        s3: Some(S3SourceConfig {
            bucket_name: "bucket".into(),
            region: "us-east-1".into(),
            collection_name: "coll".into(),
            aws_credential_id: 0,
            path_prefix: None,
            auto_sync: None,
            endpoint_url: None,
            force_path_style: None,
            sqs_queue_url: None,
        }),
        database_name: "db1".into(),
        chunking: None,
        embedding: None,
        embedding_model: None,
        schedule: None,
    }
}

fn job(source_id: uuid::Uuid, key: &str, dedupe: &str) -> NewJob {
    NewJob {
        source_id,
        source_type: SourceType::S3,
        payload: CreateJobPayload {
            object_key: Some(key.into()),
            ..CreateJobPayload::default()
        },
        metadata: IndexJobMetadata {
            kind: JobKind::S3(S3JobMetadata {
                bucket_name: "bucket".into(),
                object_key: Some(key.into()),
                custom_id: None,
                additional_metadata: None,
            }),
            database_name: "db1".into(),
            collection_name: "coll".into(),
        },
        trigger: Trigger::Manual,
        concurrency_key: format!("key:{key}"),
        dedupe_key: dedupe.into(),
        idempotency: None,
    }
}

/// A fresh queue file holding one S3 source. Keep the directory alive.
async fn queue_with_source() -> (tempfile::TempDir, SqliteQueue, SourceRecord) {
    let dir = tempfile::tempdir().unwrap();
    let queue = queue(&dir).await;
    let source = queue
        .create_source(SourceType::S3, &s3_source())
        .await
        .unwrap();
    (dir, queue, source)
}

const SHORT: Duration = Duration::from_millis(200);
const LONG: Duration = Duration::from_secs(60);

#[tokio::test]
async fn an_expired_lease_is_reclaimed_and_the_old_attempt_is_fenced_out() {
    let (_dir, queue, source) = queue_with_source().await;
    let created = queue.enqueue(job(source.id, "a", "d1")).await.unwrap();

    let first = queue.claim("worker-1", SHORT).await.unwrap().unwrap();
    assert_eq!(first.attempt, 1);
    assert!(
        queue.claim("worker-2", LONG).await.unwrap().is_none(),
        "leased jobs are not handed out twice"
    );

    tokio::time::sleep(SHORT * 2).await;
    let second = queue.claim("worker-2", LONG).await.unwrap().unwrap();
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

#[tokio::test]
async fn transient_failures_wait_for_their_backoff_then_exhaust_attempts() {
    let (_dir, queue, source) = queue_with_source().await;
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
    tokio::time::sleep(SHORT * 2).await;
    let again = queue.claim("w", LONG).await.unwrap().unwrap();
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
    tokio::time::sleep(SHORT * 2).await;
    assert!(queue.claim("w", LONG).await.unwrap().is_none());
    let failed = queue.get_job(created.id).await.unwrap().unwrap();
    match failed.status {
        JobStatus::Failed { error } => assert!(
            error.contains("attempt 3 of 3 ended without a result")
                && error.contains("stopped renewing its lease"),
            "{error}"
        ),
        other => panic!("expected failed, got {other:?}"),
    }
}

#[tokio::test]
async fn cancel_duplicates_and_per_key_exclusion() {
    let (_dir, queue, source) = queue_with_source().await;
    assert!(matches!(
        queue.create_source(SourceType::S3, &s3_source()).await,
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

    let first = queue.claim("w1", LONG).await.unwrap().unwrap();
    assert_eq!(first.job.id, a.id);
    let second = queue.claim("w2", LONG).await.unwrap().unwrap();
    assert_eq!(second.job.id, b.id, "a2 waits while a holds its key");
    assert!(queue.claim("w3", LONG).await.unwrap().is_none());

    // Cancel: a processing job is asked to stop, a pending one stops at once.
    assert_eq!(queue.cancel(a.id).await.unwrap(), CancelOutcome::Requested);
    let stats = JobStats::default();
    assert_eq!(
        queue.heartbeat(a.id, 1, LONG, None, &stats).await.unwrap(),
        HeartbeatOutcome::CancelRequested
    );
    assert_eq!(queue.cancel(a2.id).await.unwrap(), CancelOutcome::Cancelled);
    assert!(
        queue
            .finish(a.id, 1, Outcome::Cancelled, &stats)
            .await
            .unwrap()
    );
    assert!(matches!(
        queue.cancel(a.id).await.unwrap(),
        CancelOutcome::AlreadyFinished(JobStatus::Cancelled)
    ));
    assert_eq!(
        queue.cancel(uuid::Uuid::new_v4()).await.unwrap(),
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

#[tokio::test]
async fn jobs_survive_reopening_the_queue_file() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let queue = queue(&dir).await;
        let source = queue
            .create_source(SourceType::S3, &s3_source())
            .await
            .unwrap();
        queue.enqueue(job(source.id, "a", "d")).await.unwrap().id
    };
    let queue = queue(&dir).await;
    let claimed = queue.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.job.id, id);
    assert_eq!(claimed.payload.object_key.as_deref(), Some("a"));
}

#[tokio::test]
async fn a_cancel_asked_of_a_running_job_is_never_undone_by_release_or_a_dead_worker() {
    let (_dir, queue, source) = queue_with_source().await;
    let stats = JobStats::default();

    // Shutdown releases a job whose cancel was asked: it ends cancelled, not pending.
    let a = queue.enqueue(job(source.id, "a", "d-a")).await.unwrap();
    queue.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(queue.cancel(a.id).await.unwrap(), CancelOutcome::Requested);
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
    assert_eq!(queue.cancel(b.id).await.unwrap(), CancelOutcome::Requested);
    tokio::time::sleep(SHORT * 2).await;
    assert!(queue.claim("w", LONG).await.unwrap().is_none());
    assert_eq!(
        queue.get_job(b.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
}

/// Leases are granted, renewed and judged on the database's clock, never on
/// a time a worker computed: no queue call takes one. A job whose lease is
/// live by the database's clock is not claimable (a worker whose clock runs
/// ahead cannot take it early), and one whose lease ran out by it is (a
/// worker whose clock runs behind cannot hold it past its end).
#[tokio::test]
async fn leases_are_granted_and_judged_on_the_database_clock() {
    use sqlx::Connection;
    const DB_NOW: &str = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
    let (dir, queue, source) = queue_with_source().await;
    let created = queue.enqueue(job(source.id, "a", "d1")).await.unwrap();
    queue.claim("worker-1", LONG).await.unwrap().unwrap();
    let path = dir.path().join("queue.sqlite3");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let id = created.id.to_string();

    // The lease ends LONG after the database's now at the claim.
    let left: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT lease_expires_at - {DB_NOW} FROM jobs WHERE id = ?"
    )))
    .bind(&id)
    .fetch_one(&mut db)
    .await
    .unwrap();
    let long = LONG.as_millis() as i64;
    assert!(left <= long && left > long - 10_000, "{left} ms left");

    // Live for three more seconds by the database's clock: not claimable.
    let set_lease = |offset_ms: i64| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE jobs SET lease_expires_at = {DB_NOW} + ({offset_ms}) WHERE id = ?"
        )))
        .bind(id.clone())
    };
    set_lease(3000).execute(&mut db).await.unwrap();
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

    // Ran out a moment ago by the database's clock: claimable at once, and
    // the attempt that ended without a result says so.
    set_lease(-1).execute(&mut db).await.unwrap();
    let second = queue.claim("worker-2", LONG).await.unwrap().unwrap();
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
