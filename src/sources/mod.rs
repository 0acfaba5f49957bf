//! The source seam: every source type (S3, GitHub, websites, local
//! directories) lives in its own folder — its settings on the wire
//! (`settings.rs`), its [`SourceKind`] impl, its client or reader, its job,
//! its auto-sync and what it remembers — and is registered by one line of
//! the domain's `registry!` call (`domain/registry/mod.rs`). The rest of
//! the daemon knows only `SourceSpec` (a source's parsed kind) and
//! `Sources` (the registry, built once per process, holding each kind's
//! clients); both are written by the macro (`domain/registry/generate.rs`
//! says why a macro and not trait objects). Nothing here imports the
//! domain: what a kind answers in (`DomainError`, `Planned`, `RunTarget`,
//! the name checks) is defined here.
//!
//! Adding a source: a folder here with its settings type and a
//! [`SourceKind`] impl, and its line in `registry!`. What the kind tells of
//! itself (title, description, invocation fields, defaults, the schema of
//! its settings) lives on its impl: the API's `GET /api/v1/source-types`,
//! the OpenAPI document and the dashboard read it from there.

pub mod error;
pub mod filesystem;
pub mod github;
pub mod globs;
pub mod names;
pub mod s3;
pub mod spec;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret, sha256_hex};
use crate::model::{
    CreateJobPayload, CreateSourcePayload, IndexJobMetadata, JobKind, SourceSchedule, SourceType,
    Trigger, canonical_json,
};
use crate::pipeline::listing::Listing;
use crate::pipeline::{JobError, JobRun};
use crate::queue::{NewJob, Queue, SourceRecord};
pub use error::DomainError;

/// What a one-shot `run` (or a schedule slot) syncs of its source.
#[derive(Debug, Default, Clone)]
pub struct RunTarget {
    /// The collection to write (required where the source has no default).
    pub collection: Option<String>,
    /// What only some kinds take, by the name of the kind's [`RunField`],
    /// as JSON: the `run` flags the kinds declare (S3's `object_keys` and
    /// `meta_json`, GitHub's `git_ref`), and a schedule's branch. A kind is
    /// never handed a field it does not declare (`Sources::whole_source`).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl RunTarget {
    /// Field `name` as a `T`, if given; a value of another shape is refused.
    pub fn field<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, DomainError> {
        self.fields
            .get(name)
            .map(|value| {
                serde_json::from_value(value.clone())
                    .map_err(|e| DomainError::invalid(format!("{name}: {e}")))
            })
            .transpose()
    }
}

/// A field of [`RunTarget`] a kind takes, with the `run` flags that set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunField {
    /// Its name in [`RunTarget::fields`].
    pub name: &'static str,
    pub flags: &'static [Flag],
}

/// The invocations that sync a whole source.
#[derive(Debug, Default)]
pub struct WholeSource {
    pub payloads: Vec<CreateJobPayload>,
    /// Kinds with one job per document whose listing tells each document's
    /// stored version (S3's ETags), keyed by `object_key`: the documents
    /// the collection holds at that version need no job
    /// ([`crate::pipeline::listing`]).
    pub listing: Option<Listing>,
}

impl From<Vec<CreateJobPayload>> for WholeSource {
    fn from(payloads: Vec<CreateJobPayload>) -> Self {
        WholeSource {
            payloads,
            listing: None,
        }
    }
}

/// A whole-source comparison that enqueues only what changed and what is
/// gone: what a watch or event consumer runs when it starts, to catch up
/// with changes no event told of. Planning lives above the sources
/// (`domain::plan::Reconciler`), so it is handed to them as this seam.
pub trait Reconcile: Send + Sync {
    /// A summary of what was enqueued, for the log.
    fn reconcile<'a>(
        &'a self,
        record: &'a SourceRecord,
    ) -> futures::future::BoxFuture<'a, Result<String, DomainError>>;
}

/// What every source type provides. One implementation per source folder;
/// `Sources` dispatches to them on `SourceSpec`.
pub trait SourceKind: Send + Sync {
    /// The kind's settings, as the create payload gives them. Its schema
    /// (`ToSchema`) is what `GET /api/v1/source-types` shows of them.
    type Config: std::fmt::Debug
        + Clone
        + PartialEq
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + utoipa::ToSchema;

    /// The kind's section of the daemon's config (`[s3]`, …), defined in
    /// its folder (`section.rs`).
    type Settings: crate::config::KindSection;

    /// What a job of this kind syncs, as its `metadata` names it under the
    /// kind's field (seed 001's `IndexJobMetadata`); a unit struct is
    /// `null`. Its schema is one of the OpenAPI document's `JobKind`s.
    type JobMetadata: serde::Serialize + utoipa::ToSchema;

    /// The kind's name on the wire: the `source_type` of its sources and
    /// jobs, and the create payload's field holding its settings.
    const SOURCE_TYPE: SourceType;
    /// A short name for people (the dashboard's kind chooser).
    const TITLE: &'static str;
    /// What a source of this kind syncs, in a sentence or two.
    const DESCRIPTION: &'static str;
    /// The invocation body fields this kind accepts; the planner refuses
    /// the others, for every kind alike (`Sources::refuse_undeclared`).
    const INVOCATION_FIELDS: &'static [InvocationField];
    /// What refusals call the kind: `"{field} is only allowed for {CALLED}
    /// sources"`.
    const CALLED: &'static str;
    /// What the OpenAPI document says of the create payload's field for
    /// the kind, if anything (a kind beyond Chroma Sync's says it is an
    /// extension).
    const FIELD_DOC: Option<&'static str> = None;
    /// What `run` (and a schedule slot) may tell the kind of what to sync
    /// beyond a collection, and the `run` flags that say it; `run` refuses
    /// the other kinds' for it.
    const RUN_FIELDS: &'static [RunField] = &[];

    /// The kind's handler, with its clients, from its `settings` (its
    /// section of the daemon's config, `[<field>]` after its registry line)
    /// and the rest of `config`; an error says what in the config is wrong.
    fn build(config: &Config, settings: Self::Settings) -> Result<Self, String>
    where
        Self: Sized;

    /// Every secret the kind's clients hold, for scrubbing.
    fn secret_values(&self) -> Vec<Secret> {
        Vec::new()
    }

    /// Starts the kind's triggers that enqueue on their own (event
    /// notifications, watches), if it has any; each starts by reconciling.
    fn start_auto_sync(
        &self,
        _queue: &Arc<dyn Queue>,
        _wake: &Arc<Notify>,
        _shutdown: &CancellationToken,
        _reconcile: Arc<dyn Reconcile>,
    ) {
    }

    /// The value each optional setting takes when a source leaves it out,
    /// by field name (shown as the schema's `default`s).
    fn defaults(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// Every check of a config that needs neither credentials nor the
    /// network (shape, patterns, limits). Runs on a blocking thread: it may
    /// compile patterns.
    fn validate(&self, config: &Self::Config) -> Result<(), DomainError>;

    /// The checks that depend on the daemon's credentials and the network:
    /// a credential the source's database may not use is
    /// [`DomainError::Forbidden`]. Jobs check again when they connect.
    fn authorize(
        &self,
        _database: &str,
        _config: &Self::Config,
    ) -> impl Future<Output = Result<(), DomainError>> + Send {
        async { Ok(()) }
    }

    /// The collection invocations write when they name none; `None` means
    /// invocations (and schedules) must name one.
    fn default_collection(config: &Self::Config) -> Option<&str>;

    /// Checks a schedule's settings that depend on the kind. By default a
    /// schedule must name a collection unless the source has a default one,
    /// and may not name a branch.
    fn check_schedule(
        &self,
        config: &Self::Config,
        schedule: &SourceSchedule,
    ) -> Result<(), DomainError> {
        if schedule.target_collection_name.is_none() && Self::default_collection(config).is_none() {
            return Err(DomainError::invalid(
                "schedule.target_collection_name is required for GitHub and web sources",
            ));
        }
        if schedule.branch.is_some() {
            return Err(DomainError::invalid(
                "schedule.branch applies to GitHub sources only",
            ));
        }
        Ok(())
    }

    /// Fills in what an invocation left to the source and that only the
    /// source can tell (GitHub's default branch), before planning.
    fn prepare(
        &self,
        _record: &SourceRecord,
        _config: &Self::Config,
        _payload: &mut CreateJobPayload,
    ) -> impl Future<Output = Result<(), DomainError>> + Send {
        async { Ok(()) }
    }

    /// Checks an invocation against the source and works out its job.
    fn plan(
        &self,
        record: &SourceRecord,
        config: &Self::Config,
        payload: &CreateJobPayload,
    ) -> Result<Planned, DomainError>;

    /// The invocations that sync the whole source (a one-shot `run`, a
    /// schedule slot), and what the kind's listing said of each document
    /// where it tells the version a job would store.
    fn whole_source(
        &self,
        record: &SourceRecord,
        config: &Self::Config,
        target: RunTarget,
    ) -> impl Future<Output = Result<WholeSource, DomainError>> + Send;

    /// Whether a whole-source sync is one job per document (looked up by
    /// document key when an interrupted run is taken over) rather than one
    /// job for the source.
    fn one_job_per_document(&self) -> bool {
        false
    }

    /// Runs one claimed job of a source of this kind.
    fn run_job(
        &self,
        job: &JobRun<'_>,
        config: &Self::Config,
    ) -> impl Future<Output = Result<(), JobError>> + Send;

    /// The config with every optional setting at its effective value.
    fn effective(config: Self::Config) -> Self::Config {
        config
    }
}

/// An invocation body field ([`CreateJobPayload`]) a kind accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationField {
    /// The field's name in the body.
    pub name: &'static str,
    /// Whether an invocation without it is refused.
    pub required: bool,
    /// The field of the job's `metadata.<source type>` that records it, if
    /// any: what a retry of the job reads back. (`target_collection_name`
    /// is recorded as every job's `metadata.collection_name`.)
    pub recorded_as: Option<&'static str>,
    /// The flags of `chroma-syncd invocation create` that set it; none
    /// means one, `--<name>` (dashes for underscores), taking the text.
    pub flags: &'static [Flag],
}

impl InvocationField {
    pub const fn optional(name: &'static str) -> Self {
        InvocationField {
            name,
            required: false,
            recorded_as: None,
            flags: &[],
        }
    }

    pub const fn required(name: &'static str) -> Self {
        InvocationField {
            name,
            required: true,
            recorded_as: None,
            flags: &[],
        }
    }

    pub const fn flags(self, flags: &'static [Flag]) -> Self {
        InvocationField { flags, ..self }
    }

    pub const fn recorded_as(self, field: &'static str) -> Self {
        InvocationField {
            recorded_as: Some(field),
            ..self
        }
    }
}

/// A command-line flag that sets an invocation field
/// ([`InvocationField::flags`]): the CLI builds `invocation create`'s flags
/// from the kinds' declarations, so it names no kind's field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag {
    /// `--<long>`.
    pub long: &'static str,
    /// What `--help` says of it.
    pub help: &'static str,
    pub value: FlagValue,
}

/// How a flag's text becomes its field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagValue {
    /// The text, as a string.
    Text,
    /// A JSON object (inline, or `@file`).
    JsonObject,
    /// A text the flag may be given many times for: a list.
    Many,
    /// No value: `true` when given.
    Switch,
    /// `{"<key>": text}`: one of the field's shapes (a field with several
    /// flags takes one of them).
    Within(&'static str),
}

impl Flag {
    pub const fn text(long: &'static str, help: &'static str) -> Self {
        Flag {
            long,
            help,
            value: FlagValue::Text,
        }
    }

    pub const fn json_object(long: &'static str, help: &'static str) -> Self {
        Flag {
            long,
            help,
            value: FlagValue::JsonObject,
        }
    }

    pub const fn many(long: &'static str, help: &'static str) -> Self {
        Flag {
            long,
            help,
            value: FlagValue::Many,
        }
    }

    pub const fn switch(long: &'static str, help: &'static str) -> Self {
        Flag {
            long,
            help,
            value: FlagValue::Switch,
        }
    }

    pub const fn within(long: &'static str, key: &'static str, help: &'static str) -> Self {
        Flag {
            long,
            help,
            value: FlagValue::Within(key),
        }
    }
}

/// What a kind tells of itself (`Sources::kinds`): the API answers
/// `GET /api/v1/source-types` with it.
#[derive(Clone)]
pub struct KindDescription {
    pub source_type: SourceType,
    pub title: &'static str,
    pub description: &'static str,
    pub invocation_fields: &'static [InvocationField],
    /// See [`SourceKind::CALLED`].
    pub called: &'static str,
    /// See [`SourceKind::defaults`].
    pub defaults: serde_json::Map<String, serde_json::Value>,
    /// The schema of the kind's settings, and the named schemas it refers
    /// to (`#/components/schemas/<name>`).
    pub schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    pub schemas: Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
}

/// What `kind` tells of itself, with its config type's schema.
pub fn describe<K: SourceKind>(kind: &K) -> KindDescription {
    let settings = settings_schema::<K>();
    KindDescription {
        source_type: K::SOURCE_TYPE,
        title: K::TITLE,
        description: K::DESCRIPTION,
        invocation_fields: K::INVOCATION_FIELDS,
        called: K::CALLED,
        defaults: kind.defaults(),
        schema: settings.schema,
        schemas: settings.schemas,
    }
}

/// A kind's wire settings type, by the create payload's field naming it
/// (`Sources::settings_schemas`).
pub struct SettingsSchema {
    /// The payload's field (the kind's `source_type`).
    pub field: String,
    /// The settings type's name in the OpenAPI document's schemas.
    pub name: String,
    /// See [`SourceKind::FIELD_DOC`].
    pub field_doc: Option<&'static str>,
    pub schema: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    /// The named schemas it refers to.
    pub schemas: Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
    /// The name of the kind's job metadata type (one of `JobKind`'s).
    pub job_name: String,
    /// That type's schema, and the named schemas it refers to.
    pub job_schemas: Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
}

pub fn settings_schema<K: SourceKind>() -> SettingsSchema {
    use utoipa::{PartialSchema, ToSchema};
    let mut schemas = Vec::new();
    K::Config::schemas(&mut schemas);
    let mut job_schemas = vec![(
        K::JobMetadata::name().into_owned(),
        K::JobMetadata::schema(),
    )];
    K::JobMetadata::schemas(&mut job_schemas);
    SettingsSchema {
        field: K::SOURCE_TYPE.as_str().to_string(),
        name: K::Config::name().into_owned(),
        field_doc: K::FIELD_DOC,
        schema: K::Config::schema(),
        schemas,
        job_name: K::JobMetadata::name().into_owned(),
        job_schemas,
    }
}

/// The settings of kind `K` a stored source holds, if it is of that kind
/// (stored sources were checked when created, so `None` means another
/// kind).
pub fn settings_of<K: SourceKind>(payload: &CreateSourcePayload) -> Option<K::Config> {
    let kind = K::SOURCE_TYPE;
    spec::settings_of(kind.as_str(), payload.kind.get(kind.as_str())?).ok()
}

/// What a source type decides about one invocation; [`Planned::into_job`]
/// adds what every job has.
#[derive(Debug)]
pub struct Planned {
    pub kind: JobKind,
    pub collection: String,
    /// Jobs with the same key never run at once (one object, or one sync of
    /// a source into a collection: each reads what the previous one left).
    pub concurrency_key: String,
}

impl Planned {
    /// A job of kind `K` that syncs what `metadata` names into `collection`.
    pub fn of<K: SourceKind>(
        metadata: &K::JobMetadata,
        collection: String,
        concurrency_key: String,
    ) -> Result<Self, DomainError> {
        let kind = K::SOURCE_TYPE;
        // Plain data always serializes; were it not to, the plan fails
        // rather than storing a job that says nothing of what it syncs.
        let kind = JobKind::of(kind.as_str(), metadata)
            .map_err(|e| DomainError::Source(format!("job metadata: {e}")))?;
        Ok(Planned {
            kind,
            collection,
            concurrency_key,
        })
    }

    pub fn into_job(
        self,
        record: &SourceRecord,
        payload: CreateJobPayload,
        trigger: Trigger,
    ) -> NewJob {
        let canonical = serde_json::to_value(&payload)
            .map(|v| canonical_json(&v))
            .unwrap_or_default();
        let collection = self.collection;
        NewJob {
            source_id: record.id,
            source_type: record.source_type,
            concurrency_key: self.concurrency_key,
            dedupe_key: sha256_hex(format!("{}:{collection}:{canonical}", record.id).as_bytes()),
            payload,
            metadata: IndexJobMetadata {
                kind: self.kind,
                database_name: record.payload.database_name.clone(),
                collection_name: collection,
            },
            trigger,
            idempotency: None,
            id: None,
            created_by: None,
            notify: record.payload.webhook.is_some(),
            upload: None,
        }
    }
}

/// The collection a whole-source job (a repository at a ref, a crawl, a
/// directory) writes: `target_collection_name`, or `default` when the
/// source has one.
pub(crate) fn collection_of(
    payload: &CreateJobPayload,
    kind: &str,
    default: Option<&str>,
) -> Result<String, DomainError> {
    let collection = match (&payload.target_collection_name, default) {
        (Some(name), _) => name.clone(),
        (None, Some(default)) => default.to_string(),
        (None, None) => {
            return Err(DomainError::invalid(format!(
                "target_collection_name is required for {kind} sources"
            )));
        }
    };
    names::validate_chroma_name("target_collection_name", &collection)?;
    Ok(collection)
}

/// One sync of a source into one collection at a time: each reads what the
/// previous one left.
pub(crate) fn collection_concurrency_key(record: &SourceRecord, collection: &str) -> String {
    format!(
        "{}:{}:{}/{collection}",
        record.source_type.as_str(),
        record.id,
        record.payload.database_name
    )
}
