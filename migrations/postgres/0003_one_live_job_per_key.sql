-- Jobs sharing a concurrency key never run at once, enforced by the database:
-- claims are single statements, and a racing second claim of a key fails here.
CREATE UNIQUE INDEX jobs_one_processing_per_key ON jobs (concurrency_key) WHERE state = 'processing';
