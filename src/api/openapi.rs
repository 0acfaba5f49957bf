//! `/openapi.json`, generated from the handlers' and wire types' annotations.

use utoipa::openapi::schema::{AdditionalProperties, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{Object, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::source_types::{SourceTypeInfo, SourceTypes};
use crate::domain::sources::Sources;
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
        GitRefIdentifier, Job, JobStatus, IndexJobMetadata, JobKind, S3JobMetadata, Progress,
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
/// `Source` named for the kind, as a typed field would have been.
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
        for kind in Sources::settings_schemas() {
            for (name, schema) in kind.schemas {
                components.schemas.entry(name).or_insert(schema);
            }
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
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
