-- Audit: the name of the API token that created or cancelled a job.
ALTER TABLE jobs ADD COLUMN created_by TEXT;
ALTER TABLE jobs ADD COLUMN cancel_requested_by TEXT;
-- 1 while a finished job still owes its source's webhook a delivery row
-- (set at enqueue for sources with a webhook), 2 once the row exists.
ALTER TABLE jobs ADD COLUMN notify BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_notify ON jobs (notify, state) WHERE notify = 1;

-- Webhook deliveries: durable, at least once. One row per (job, event).
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    source_id       TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    state           TEXT NOT NULL
        CHECK (state IN ('pending', 'delivering', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_expires_at BIGINT,
    give_up_at      BIGINT NOT NULL,
    last_status     BIGINT,
    last_error      TEXT,
    responses       TEXT NOT NULL DEFAULT '[]',
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);
CREATE UNIQUE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, event);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt_at);
CREATE INDEX webhook_deliveries_by_source ON webhook_deliveries (source_id, created_at);

-- Uploaded files (POST /api/v1/add-file) kept in the queue database, in
-- pieces, when several machines share it; removed when the job finishes.
CREATE TABLE upload_blobs (
    upload_id  TEXT NOT NULL,
    seq        BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (upload_id, seq)
);
