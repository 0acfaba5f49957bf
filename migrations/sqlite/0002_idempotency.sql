-- Idempotency-Key of create-invocation requests: a replay returns the original job.
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN request_sha256 TEXT;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (source_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('complete', 'failed', 'cancelled');
