//! `/openapi.json`, generated from the handlers' and wire types' annotations.

use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Object, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::source_types::{SourceTypeInfo, SourceTypes};
use crate::domain::{SourceSpec, Sources};
use crate::model::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Chroma Sync Service",
        description = "chroma-syncd: a self-hosted, wire-compatible implementation of Chroma Sync's API.",
        version = "0.1.0"
    ),
    paths(
        super::sources::create,
        super::sources::list,
        super::sources::get,
        super::sources::delete,
        super::sources::schedule_slots,
        super::sources::webhook_deliveries,
        super::source_types::list,
        super::sources::rotate_webhook_secret,
        super::upload::add_file,
        super::invocations::create,
        super::invocations::get,
        super::invocations::cancel,
        super::invocations::list,
        super::invocations::latest_by_keys,
        super::events::stream,
        super::health,
    ),
    components(schemas(
        ErrorResponse, CreateSourcePayload, CreateSourceResponse, Source, AutoSync, ChunkingConfig,
        EmbeddingConfig,
        EmbeddingModel, SparseEmbedding, CreateJobPayload, CreateJobResponse, CancelJobResponse,
        GitRefIdentifier, Job, JobStatus, IndexJobMetadata, Progress,
        JobStats, Trigger, LatestByKeysRequest, HealthResponse, SourceSchedule, ScheduleSlot,
        ScheduleSlots, WebhookConfig, WebhookEvent, WebhookDelivery, DeliveryAttempt,
        WebhookDeliveries, FileJobMetadata, AddFileResponse, WebhookSecret, SourceTypes,
        SourceTypeInfo, SourceType, SourceOcrConfig,
    )),
    modifiers(&TokenScheme, &KindSettingsSchemas),
)]
struct ApiDoc;

struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "x-chroma-token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-chroma-token"))),
        );
    }
}

/// Each kind's settings type (defined in the kind's folder, carried
/// untyped by the wire model) in the document: its schema among the
/// components, and an optional property of `CreateSourcePayload` and
/// `Source` named for the kind, as a typed field would have been; and the
/// kinds' names as `SourceType`'s values.
struct KindSettingsSchemas;

impl Modify for KindSettingsSchemas {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        if let Some(RefOr::T(Schema::Object(payload))) =
            components.schemas.get_mut("CreateSourcePayload")
        {
            // What a typed field per kind said: no other field is taken.
            payload.additional_properties = Some(Box::new(AdditionalProperties::FreeForm(false)));
        }
        let mut job_kinds = OneOfBuilder::new();
        for kind in Sources::settings_schemas() {
            for (name, schema) in kind.schemas.into_iter().chain(kind.job_schemas) {
                components.schemas.entry(name).or_insert(schema);
            }
            job_kinds = job_kinds.item(job_kind(&kind.field, &kind.job_name, None));
            components
                .schemas
                .entry(kind.name.clone())
                .or_insert(kind.schema);
            for holder in ["CreateSourcePayload", "Source"] {
                let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(holder)
                else {
                    continue;
                };
                let mut settings = Ref::from_schema_name(kind.name.clone());
                if let Some(doc) = kind.field_doc.filter(|_| holder == "CreateSourcePayload") {
                    settings.description = doc.to_string();
                }
                let optional = OneOfBuilder::new()
                    .item(settings)
                    .item(Object::with_type(Type::Null))
                    .build();
                object
                    .properties
                    .insert(kind.field.to_string(), Schema::OneOf(optional).into());
            }
        }
        // Seed 001's `IndexJobMetadata`: one of the kinds' job metadata (or
        // an upload's), merged with database and collection.
        job_kinds = job_kinds.item(job_kind(
            FILE_JOB_FIELD,
            "FileJobMetadata",
            Some("A file sent to `POST /api/v1/add-file`."),
        ));
        components.schemas.insert(
            "JobKind".to_string(),
            Schema::OneOf(job_kinds.build()).into(),
        );
        if let Some(RefOr::T(Schema::Object(mut fields))) =
            components.schemas.remove("IndexJobMetadata")
        {
            let description = fields.description.take();
            let merged = AllOfBuilder::new()
                .item(Ref::from_schema_name("JobKind"))
                .item(fields)
                .description(description)
                .build();
            components
                .schemas
                .insert("IndexJobMetadata".to_string(), Schema::AllOf(merged).into());
        }
        // `SourceType`'s values: the kinds' names, and `upload`.
        if let Some(RefOr::T(Schema::Object(source_type))) =
            components.schemas.get_mut("SourceType")
        {
            let names = SourceSpec::source_types()
                .into_iter()
                .chain([SourceType::UPLOAD])
                .map(|kind| kind.as_str().into());
            source_type.enum_values = Some(names.collect());
        }
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// One of `JobKind`'s shapes: an object whose one field, `field`, holds the
/// schema named `name`.
fn job_kind(field: &str, name: &str, description: Option<&str>) -> Object {
    ObjectBuilder::new()
        .description(description)
        .property(field, Ref::from_schema_name(name))
        .required(field)
        .build()
}
