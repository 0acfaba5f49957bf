-- Sources and invocations ("jobs"). Times are Unix milliseconds (UTC).
CREATE TABLE sources (
    id            TEXT PRIMARY KEY,
    source_type   TEXT NOT NULL,
    database_name TEXT NOT NULL,
    payload       TEXT NOT NULL,
    -- sha256 of the canonical payload: an identical source is a 409.
    dedupe_key    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);
CREATE INDEX sources_database ON sources (database_name, created_at);

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    source_id           TEXT,
    source_type         TEXT NOT NULL,
    database_name       TEXT NOT NULL,
    object_key          TEXT,
    payload             TEXT NOT NULL,
    metadata            TEXT NOT NULL,
    trigger_kind        TEXT NOT NULL,
    state               TEXT NOT NULL
        CHECK (state IN ('pending', 'processing', 'complete', 'failed', 'cancelled')),
    concurrency_key     TEXT NOT NULL,
    dedupe_key          TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    run_after           INTEGER NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_expires_at    INTEGER,
    started_at          INTEGER,
    last_heartbeat_at   INTEGER,
    finished_at         INTEGER,
    duration_ms         INTEGER,
    error               TEXT,
    last_error          TEXT,
    cancel_requested_at INTEGER,
    progress            TEXT,
    stats               TEXT
);
-- At most one live (pending or processing) job per dedupe key: the 409 is atomic.
CREATE UNIQUE INDEX jobs_live_dedupe ON jobs (dedupe_key) WHERE state IN ('pending', 'processing');
CREATE INDEX jobs_runnable ON jobs (state, run_after);
CREATE INDEX jobs_by_source ON jobs (source_id, created_at);
CREATE INDEX jobs_by_database ON jobs (database_name, created_at);
CREATE INDEX jobs_by_object ON jobs (source_id, object_key, created_at);
CREATE INDEX jobs_by_concurrency ON jobs (concurrency_key, state);
