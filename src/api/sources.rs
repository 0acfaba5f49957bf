//! `/api/v1/sources`: create, list, get, delete.
//!
//! A source is validated completely (by the domain layer) before it is
//! stored, so a bad source is a 400 at creation rather than a failed job later.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Principal;
use super::error::{ApiJson, ApiPath, ApiQuery};
use super::{ApiError, AppState};
use crate::domain::{SourceSpec, authorize_source, effective, validate_source};
use crate::model::{
    CreateSourcePayload, CreateSourceResponse, ErrorResponse, ScheduleSlots, Source, SourceType,
    WebhookDeliveries, WebhookSecret,
};
use crate::queue::{SourceFilter, SourceRecord};
use crate::sources::spec::either;

/// How many of a source's schedule slots to list (newest first).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScheduleSlotsQuery {
    /// 1 to 1000; 100 when absent.
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListSourcesQuery {
    pub database_name: Option<String>,
    pub source_type: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// `DESC` (default, newest first) or `ASC`.
    pub order_by: Option<String>,
}

pub fn parse_order(order_by: Option<&str>) -> Result<bool, ApiError> {
    match order_by.map(str::to_ascii_uppercase).as_deref() {
        None | Some("DESC") => Ok(false),
        Some("ASC") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "order_by must be ASC or DESC, not `{other}`"
        ))),
    }
}

pub fn parse_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and 1000, not {n}"
        ))),
    }
}

pub fn parse_source_type(value: Option<&str>) -> Result<Option<SourceType>, ApiError> {
    value
        .map(|v| {
            SourceSpec::source_type_named(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "source_type must be {}, not `{v}`",
                    either(&SourceSpec::kind_fields())
                ))
            })
        })
        .transpose()
}

/// Loads a source the caller may see, or the right 404/403.
pub async fn load_source(
    state: &AppState,
    principal: &Principal,
    id: Uuid,
) -> Result<SourceRecord, ApiError> {
    let record = state
        .queue
        .get_source(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("source {id} not found")))?;
    principal.check_database(&record.payload.database_name)?;
    Ok(record)
}

#[utoipa::path(post, path = "/api/v1/sources", tag = "Source", operation_id = "create_source",
    request_body = CreateSourcePayload,
    responses(
        (status = 201, description = "Source created", body = CreateSourceResponse),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 409, description = "Source exists", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(payload): ApiJson<CreateSourcePayload>,
) -> Result<Response, ApiError> {
    principal.check_database(&payload.database_name)?;
    let (spec, payload) = tokio::task::spawn_blocking({
        let (sources, limits) = (Arc::clone(&state.sources), state.limits.sources());
        move || validate_source(&sources, &limits, &payload).map(|spec| (spec, payload))
    })
    .await
    .map_err(|e| ApiError::internal(format!("validating the source failed: {e}")))??;
    authorize_source(&state.sources, &payload, &spec).await?;
    let source_type = spec.source_type();
    // The secret is made before the source is stored, so a source with a
    // webhook is never stored without a way to sign its deliveries.
    let secret = match payload.webhook {
        Some(_) => Some(crate::domain::webhook::new_secret().map_err(ApiError::internal)?),
        None => None,
    };
    let record = state.queue.create_source(source_type, &payload).await?;
    if let Some(secret) = &secret {
        state
            .queue
            .set_webhook_secret(record.id, secret.expose())
            .await?;
    }
    tracing::info!(source_id = %record.id, source_type = source_type.as_str(), "source created");
    Ok((
        StatusCode::CREATED,
        Json(CreateSourceResponse {
            source_id: record.id,
            webhook: secret.map(|secret| WebhookSecret {
                secret: secret.expose().to_string(),
            }),
        }),
    )
        .into_response())
}

#[utoipa::path(post, path = "/api/v1/sources/{source_id}/webhook/rotate-secret", tag = "Source",
    operation_id = "rotate_webhook_secret",
    description = "Extension: replaces the secret the source's webhook deliveries are signed with \
        (Standard Webhooks), returning the new one once. The next delivery attempt is signed with it.",
    params(("source_id" = Uuid, Path, description = "Source ID")),
    responses(
        (status = 200, description = "The new secret", body = WebhookSecret),
        (status = 400, description = "The source has no webhook", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn rotate_webhook_secret(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<WebhookSecret>, ApiError> {
    let record = load_source(&state, &principal, id).await?;
    if record.payload.webhook.is_none() {
        return Err(ApiError::bad_request(format!(
            "source {id} has no webhook, so it has no webhook secret"
        )));
    }
    let secret = crate::domain::webhook::new_secret().map_err(ApiError::internal)?;
    if !state
        .queue
        .set_webhook_secret(record.id, secret.expose())
        .await?
    {
        return Err(ApiError::not_found(format!("source {id} not found")));
    }
    tracing::info!(source_id = %record.id, "webhook secret rotated");
    Ok(Json(WebhookSecret {
        secret: secret.expose().to_string(),
    }))
}

#[utoipa::path(get, path = "/api/v1/sources", tag = "Source", operation_id = "list_sources",
    params(ListSourcesQuery),
    responses(
        (status = 200, description = "Sources", body = Vec<Source>),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListSourcesQuery>,
) -> Result<Json<Vec<Source>>, ApiError> {
    if let Some(database) = &query.database_name {
        principal.check_database(database)?;
    }
    let filter = SourceFilter {
        database_name: query.database_name.clone(),
        databases: principal.databases(),
        source_type: parse_source_type(query.source_type.as_deref())?,
        limit: parse_limit(query.limit)?,
        offset: query.offset.unwrap_or(0),
        ascending: parse_order(query.order_by.as_deref())?,
    };
    let records = state.queue.list_sources(&filter).await?;
    Ok(Json(records.iter().map(effective).collect()))
}

#[utoipa::path(get, path = "/api/v1/sources/{source_id}", tag = "Source", operation_id = "get_source",
    params(("source_id" = Uuid, Path, description = "Source ID")),
    responses(
        (status = 200, description = "Source", body = Source),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Source>, ApiError> {
    let record = load_source(&state, &principal, id).await?;
    Ok(Json(effective(&record)))
}

#[utoipa::path(delete, path = "/api/v1/sources/{source_id}", tag = "Source", operation_id = "delete_source",
    params(("source_id" = Uuid, Path, description = "Source ID")),
    responses(
        (status = 204, description = "Source deleted; its pending invocations are cancelled"),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    load_source(&state, &principal, id).await?;
    if state.queue.delete_source(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("source {id} not found")))
    }
}

#[utoipa::path(get, path = "/api/v1/sources/{source_id}/schedule/slots", tag = "Source",
    operation_id = "list_schedule_slots",
    params(("source_id" = Uuid, Path, description = "Source ID"), ScheduleSlotsQuery),
    responses(
        (status = 200, description = "The source's latest schedule slots, newest first (extension)", body = ScheduleSlots),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn schedule_slots(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ScheduleSlotsQuery>,
) -> Result<Json<ScheduleSlots>, ApiError> {
    let limit = parse_limit(query.limit)?;
    let record = load_source(&state, &principal, id).await?;
    let slots = state.queue.schedule_slots(record.id, limit).await?;
    Ok(Json(ScheduleSlots { slots }))
}

#[utoipa::path(get, path = "/api/v1/sources/{source_id}/webhook/deliveries", tag = "Source",
    operation_id = "list_webhook_deliveries",
    params(("source_id" = Uuid, Path, description = "Source ID"), ScheduleSlotsQuery),
    responses(
        (status = 200, description = "The source's latest webhook deliveries, newest first, with each attempt's status code (extension)", body = WebhookDeliveries),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn webhook_deliveries(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ScheduleSlotsQuery>,
) -> Result<Json<WebhookDeliveries>, ApiError> {
    let limit = parse_limit(query.limit)?;
    let record = load_source(&state, &principal, id).await?;
    let deliveries = state.queue.list_deliveries(record.id, limit).await?;
    Ok(Json(WebhookDeliveries { deliveries }))
}
