//! Queue throughput: claim + complete of no-op jobs, SQLite and PostgreSQL,
//! with 1, 4 and 8 concurrent workers in one process; checks that no job was
//! claimed twice (every job ends `complete` with `attempt` 1).
//!
//! Run: `cargo test --release --test queue_bench -- --ignored --nocapture`
//! (PostgreSQL from `CHROMA_SYNCD_TEST_PG_URL`, default the local server).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chroma_syncd::model::{
    CreateJobPayload, IndexJobMetadata, JobKind, JobStats, SourceType, Trigger,
};
use chroma_syncd::queue::{JobFilter, NewJob, Outcome, PostgresQueue, Queue, SqliteQueue};
use chroma_syncd::sources::s3::S3JobMetadata;
use common::*;

const JOBS: usize = 4000;
const S3: SourceType = SourceType::named("s3");

fn new_job(source: uuid::Uuid, n: usize) -> NewJob {
    let key = format!("bench/{n}");
    NewJob {
        source_id: source,
        source_type: S3,
        payload: CreateJobPayload {
            object_key: Some(key.clone()),
            ..CreateJobPayload::default()
        },
        metadata: IndexJobMetadata {
            kind: JobKind::of(
                "s3",
                &S3JobMetadata {
                    bucket_name: "bench".into(),
                    object_key: Some(key.clone()),
                    custom_id: None,
                    additional_metadata: None,
                },
            )
            .unwrap(),
            database_name: "bench".into(),
            collection_name: "bench".into(),
        },
        trigger: Trigger::Manual,
        concurrency_key: key.clone(),
        dedupe_key: key,
        idempotency: None,
        id: None,
        created_by: None,
        notify: false,
        upload: None,
    }
}

async fn run(queue: Arc<dyn Queue>, workers: usize) -> (f64, usize) {
    let source = uuid::Uuid::new_v4();
    for n in 0..JOBS {
        queue.enqueue(new_job(source, n)).await.unwrap();
    }
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let queue = Arc::clone(&queue);
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let name = format!("bench-{w}");
                while done.load(Ordering::Relaxed) < JOBS {
                    match queue.claim(&name, Duration::from_secs(60)).await.unwrap() {
                        Some(job) => {
                            let finished = queue
                                .finish(
                                    job.job.id,
                                    job.attempt,
                                    Outcome::Complete,
                                    &JobStats::default(),
                                )
                                .await
                                .unwrap();
                            assert!(finished);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        None => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rate = JOBS as f64 / started.elapsed().as_secs_f64();
    // Exactly once: every job complete, none claimed twice.
    let mut doubles = 0;
    for offset in (0..JOBS).step_by(1000) {
        let jobs = queue
            .list_jobs(&JobFilter {
                source_id: Some(source),
                limit: 1000,
                offset: offset as u32,
                ..JobFilter::default()
            })
            .await
            .unwrap();
        for job in jobs {
            assert!(job.status.is_finished(), "{job:?}");
            if job.attempt != 1 {
                doubles += 1;
            }
        }
    }
    (rate, doubles)
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn queue_claim_and_complete_throughput() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    for workers in [1, 4, 8] {
        let dir = tempfile::tempdir().unwrap();
        let (rate, doubles) = rt.block_on(async {
            let queue = SqliteQueue::open(&dir.path().join("queue.sqlite3"), 3)
                .await
                .unwrap();
            run(Arc::new(queue), workers).await
        });
        println!("sqlite   workers={workers}: {rate:.0} jobs/s, {doubles} double claims");
    }
    for workers in [1, 4, 8] {
        let database = PgDatabase::create();
        let (rate, doubles) = rt.block_on(async {
            let queue = PostgresQueue::open(&database.url, 3).await.unwrap();
            run(Arc::new(queue), workers).await
        });
        println!("postgres workers={workers}: {rate:.0} jobs/s, {doubles} double claims");
    }
}
