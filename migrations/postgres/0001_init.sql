-- Sources and invocations ("jobs") for the shared PostgreSQL queue.
-- Times are Unix milliseconds (UTC), as in the SQLite schema.
CREATE TABLE sources (
    id            TEXT PRIMARY KEY,
    source_type   TEXT NOT NULL,
    database_name TEXT NOT NULL,
    payload       TEXT NOT NULL,
    -- sha256 of the canonical payload: an identical source is a 409.
    dedupe_key    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    seq           BIGSERIAL NOT NULL
);
CREATE INDEX sources_database ON sources (database_name, created_at);

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    seq                 BIGSERIAL NOT NULL,
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
    created_at          BIGINT NOT NULL,
    run_after           BIGINT NOT NULL,
    attempt             BIGINT NOT NULL DEFAULT 0,
    max_attempts        BIGINT NOT NULL,
    lease_owner         TEXT,
    lease_expires_at    BIGINT,
    started_at          BIGINT,
    last_heartbeat_at   BIGINT,
    finished_at         BIGINT,
    duration_ms         BIGINT,
    error               TEXT,
    last_error          TEXT,
    cancel_requested_at BIGINT,
    progress            TEXT,
    stats               TEXT
);
-- At most one live (pending or processing) job per dedupe key: the 409 is atomic.
CREATE UNIQUE INDEX jobs_live_dedupe ON jobs (dedupe_key) WHERE state IN ('pending', 'processing');
CREATE INDEX jobs_runnable ON jobs (run_after, seq) WHERE state = 'pending';
CREATE INDEX jobs_processing ON jobs (concurrency_key, lease_expires_at) WHERE state = 'processing';
CREATE INDEX jobs_by_source ON jobs (source_id, created_at);
CREATE INDEX jobs_by_database ON jobs (database_name, created_at);
CREATE INDEX jobs_by_object ON jobs (source_id, object_key, created_at);
