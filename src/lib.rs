//! chroma-syncd: keeps Chroma collections in step with content people already
//! have: S3 buckets, GitHub repositories, websites and local directories.
//!
//! Layout — the tree is the data flow (ARCHITECTURE.md has the map and its
//! invariants; `tests/architecture.rs` holds the layering):
//!
//! - [`api`]: the HTTP API (axum), wire-compatible with Chroma Sync, and the
//!   dashboard. Validates and enqueues; never runs jobs.
//! - [`domain`]: what every way of creating work shares: a source validated
//!   and an invocation planned into jobs ([`domain::plan`]); the registry
//!   of source kinds, one line each ([`domain::registry`]); uploads
//!   ([`domain::upload`]); cron schedules and the loop that fires them
//!   ([`domain::schedule`]); webhooks' rules, signing and the loop that
//!   delivers them ([`domain::webhook`]).
//! - [`sources`]: the source seam ([`sources::SourceKind`]) and the kinds,
//!   one folder each (`s3`, `github`, `web`, `filesystem`, with their
//!   settings, config sections, job drivers and auto-sync: S3 event
//!   notifications from SQS, directory watches); below the domain.
//! - [`queue`]: the durable queue (SQLite by default, PostgreSQL to scale
//!   out) — the only state the API and the workers share. Leases,
//!   heartbeats, retries, cancel, fencing.
//! - [`worker`]: claims jobs, keeps leases alive, records outcomes.
//! - [`pipeline`]: one job's stages: source → extract → chunk → embed → sink.
//! - [`extract`]: bytes → text (HTML → markdown, documents converted in a
//!   confined child process, binary skipped).
//! - [`chunk`]: text → chunks with line ranges (text-splitter). Pure.
//! - [`nesting`]: linear nesting measures that keep hostile documents away
//!   from the recursive converters. Pure.
//! - [`embed`]: chunks → vectors (all-MiniLM-L6-v2 in-process, any
//!   configured model, or an OpenAI-compatible endpoint).
//! - [`sink`]: chunk IDs and metadata (`records`), Chroma writes (`chroma`).
//! - [`vision`]: pictures → descriptions from an OpenAI-compatible
//!   chat-completions model (`[extract.vision]`), asked by the daemon.
//! - [`model`]: the wire types; [`config`]: settings and env overrides;
//!   [`net`]: the outbound address policy (SSRF guard, allowed endpoints);
//!   [`app`]: wiring for `serve`, `worker` and `run`; [`client`]: the CLI's API client;
//!   [`service`]: systemd readiness, watchdog and stopping notifications;
//!   [`metrics`]: Prometheus counters and histograms for `GET /metrics`;
//!   [`progress`]: a one-shot run's progress bar or log lines;
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
pub mod secrets;
pub mod service;
pub mod sink;
pub mod sources;
pub mod vision;
pub mod worker;
