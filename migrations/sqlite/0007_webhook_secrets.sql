-- Each source with a webhook signs its deliveries with a secret of its own
-- (Standard Webhooks: `whsec_` + base64 of random bytes), returned once at
-- creation and on rotation, never in reads. NULL: no webhook, or a source
-- created before per-source secrets (rotate to get one).
ALTER TABLE sources ADD COLUMN webhook_secret TEXT;
