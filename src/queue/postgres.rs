//! PostgreSQL queue: many `serve` / `worker` processes, on many machines,
//! share one queue (`CHROMA_SYNCD_QUEUE_URL=postgres://…`).
//!
//! A claim is one statement: the oldest runnable row is picked with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other
//! nor take the same job. Jobs that share a `concurrency_key` (one S3
//! object, one source's sync of a collection) must never run at once;
//! PostgreSQL does not serialise writers the way SQLite does, so a unique
//! index on the keys of processing jobs enforces it, and a claim that loses
//! that race simply tries the next job. Expired leases go back to pending in
//! a sweep (at most once a second per process).
//! Migrations run at start under sqlx's migration lock, so processes starting
//! together do not race.

use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::dialect::{Dialect, sqlx_calls};
use super::{QueueError, SqlQueue};

/// Longest wait for a pooled connection (a new one included).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The queue on a PostgreSQL server.
pub type PostgresQueue = SqlQueue<Postgres>;

impl Dialect for Postgres {
    /// The server's clock (`now()`: one instant for the whole statement),
    /// which every process sharing the queue shares.
    const NOW_MS: &'static str = "(EXTRACT(EPOCH FROM now()) * 1000)::BIGINT";
    const INSERTION_ORDER: &'static str = "seq";
    const GREATEST: &'static str = "GREATEST";

    /// Pending and due. Expired leases come back through the sweep only: a
    /// processing row is the unique index's, and stays so until settled.
    const CLAIMABLE: &'static str = "j.state = 'pending' AND j.run_after <= NOW_MS";
    /// Any processing job holds its key, live lease or not: the unique index
    /// on processing keys would refuse the claim until the sweep settles it.
    const KEY_HELD_BY: &'static str = "o.state = 'processing'";
    /// Concurrent claims skip the rows others are taking instead of waiting
    /// for them or taking them too.
    const CLAIM_LOCK: &'static str = "FOR UPDATE SKIP LOCKED";
    /// Many workers poll one server: each process settles expired leases at
    /// most once a second.
    const SWEEP_INTERVAL_MS: Option<i64> = Some(1000);

    sqlx_calls!();
}

impl PostgresQueue {
    /// Connects and runs the migrations (safe when several processes start at once).
    pub async fn open(url: &str, max_attempts: u32) -> Result<Self, QueueError> {
        // No queue statement may hang: the server cancels one past
        // `statement_timeout`, ends a session idle inside a transaction, and
        // probes idle connections with TCP keepalives (a worker that died or
        // vanished from the network gives up its connections and row locks
        // in seconds, not at the OS's two hours). Getting a connection from
        // the pool (connecting included) is bounded too. Workers also put
        // their own timeouts on renewals and outcome writes (worker.rs):
        // sqlx offers no client-side keepalive, and a silently dropped
        // network path is noticed there.
        let options: PgConnectOptions = url.parse::<PgConnectOptions>()?.options([
            ("statement_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "60s"),
            ("tcp_keepalives_idle", "10"),
            ("tcp_keepalives_interval", "5"),
            ("tcp_keepalives_count", "3"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(SqlQueue::new(pool, max_attempts))
    }
}
