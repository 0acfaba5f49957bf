//! SQLite queue: the embedded default, one file in the state directory.
//!
//! WAL mode with `synchronous = FULL`: a job acknowledged with 201 is on disk
//! before the client hears about it, and survives `kill -9` and power loss.
//! SQLite serialises writers, so a claim (one `UPDATE … RETURNING`) is atomic
//! without further locking.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::dialect::{Dialect, sqlx_calls};
use super::{QueueError, SqlQueue};

/// The queue in a SQLite file.
pub type SqliteQueue = SqlQueue<Sqlite>;

impl Dialect for Sqlite {
    /// SQLite evaluates `'now'` once per statement step, so every `NOW_MS`
    /// of one statement is the same instant.
    const NOW_MS: &'static str =
        "CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)";
    const INSERTION_ORDER: &'static str = "rowid";
    const GREATEST: &'static str = "MAX";

    /// Pending and due, or processing with a lease that ran out since the
    /// sweep that precedes every claim (its attempts left and no cancel
    /// asked: what that sweep would have put back to pending).
    const CLAIMABLE: &'static str = "((j.state = 'pending' AND j.run_after <= NOW_MS)
        OR (j.state = 'processing' AND j.lease_expires_at < NOW_MS
            AND j.attempt < j.max_attempts AND j.cancel_requested_at IS NULL))";
    /// Another job holds the key while its lease is live.
    const KEY_HELD_BY: &'static str =
        "o.id != j.id AND o.state = 'processing' AND o.lease_expires_at >= NOW_MS";
    /// None needed: SQLite runs one writer at a time, so the statement that
    /// chooses the row also takes it before anyone else can look.
    const CLAIM_LOCK: &'static str = "";
    /// Settled before every claim: one process owns the file, and the sweep
    /// is three indexed updates of a local file.
    const SWEEP_INTERVAL_MS: Option<i64> = None;

    sqlx_calls!();
}

impl SqliteQueue {
    /// Opens (creating if needed) the queue file and runs migrations.
    pub async fn open(path: &Path, max_attempts: u32) -> Result<Self, QueueError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| {
                QueueError::Corrupt(format!("creating state dir {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqlQueue::new(pool, max_attempts))
    }
}
