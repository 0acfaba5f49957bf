//! chroma-syncd: keeps Chroma collections in step with content people already
//! have: S3 buckets, GitHub repositories and websites.
//!
//! Layout — the tree is the data flow:
//!
//! - [`api`]: the HTTP API (axum), wire-compatible with Chroma Sync. Validates
//!   and enqueues; never runs jobs.
//! - [`queue`]: the durable queue (SQLite by default, PostgreSQL to scale out) — the only state the API
//!   and the workers share. Leases, heartbeats, retries, cancel, fencing.
//! - [`worker`]: claims jobs, keeps leases alive, records outcomes.
//! - [`pipeline`]: one job's stages: source → extract → chunk → embed → sink.
//! - [`source`]: where documents come from (`s3`, `github`, `web`).
//! - [`extract`]: bytes → text (HTML → markdown, binary skipped). Pure.
//! - [`chunk`]: text → chunks with line ranges (text-splitter). Pure.
//! - [`nesting`]: linear nesting measures that keep hostile documents away
//!   from the recursive converters. Pure.
//! - [`embed`]: chunks → vectors (all-MiniLM-L6-v2 in-process).
//! - [`sink`]: chunk IDs and metadata (`records`), Chroma writes (`chroma`).
//! - [`model`]: the wire types; [`config`]: settings and env overrides;
//!   [`app`]: wiring for `serve`, `worker` and `run`; [`client`]: the CLI's API client;
//!   [`service`]: systemd readiness, watchdog and stopping notifications;
//!   [`metrics`]: Prometheus counters and histograms for `GET /metrics`;
//!   [`progress`]: a one-shot run's progress bar or log lines;
//!   [`schedule`]: cron schedules of sources (`trigger: scheduled`);
//!   [`webhooks`]: signed, durable deliveries of finished invocations;
//!   [`autosync`]: S3 event notifications from SQS (`auto_sync: "direct"` / `"metadata"`);
//!   [`secrets`]: secrets scrubbed from every log line and stored message.

pub mod api;
pub mod app;
pub mod chunk;
pub mod client;
pub mod config;
pub mod domain;
pub mod embed;
pub mod extract;
pub mod metrics;
pub mod model;
pub mod nesting;
pub mod net;
pub mod pipeline;
pub mod progress;
pub mod queue;
pub mod schedule;
pub mod secrets;
pub mod service;
pub mod sink;
pub mod webhooks;
pub mod worker;
