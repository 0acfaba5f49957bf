//! Invocations: create (seed 002), get (seed 001), cancel (seed 000), list,
//! and latest-by-keys.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use super::auth::Principal;
use super::error::{ApiJson, ApiPath, ApiQuery};
use super::sources::{load_source, parse_limit, parse_order, parse_source_type};
use super::{ApiError, AppState};
use crate::config::sha256_hex;
use crate::domain::plan_job;
use crate::model::{
    CancelJobResponse, CreateJobPayload, CreateJobResponse, ErrorResponse, Job,
    LatestByKeysRequest, Trigger, canonical_json,
};
use crate::queue::{CancelOutcome, IdempotencyKey, JobFilter, JobState};
const MAX_KEYS_PER_LOOKUP: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Only invocations of this source (not with `database_name`).
    pub source_id: Option<Uuid>,
    /// Only invocations writing to this database (not with `source_id`).
    pub database_name: Option<String>,
    pub source_type: Option<String>,
    /// `pending`, `processing`, `complete`, `failed` or `cancelled`.
    pub status: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
    /// `DESC` (default, newest first) or `ASC`.
    pub order_by: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/sources/{source_id}/invocations", tag = "Invocation",
    operation_id = "create_job", summary = "Create invocation",
    description = "Creates a new invocation for a source.",
    params(
        ("source_id" = Uuid, Path, description = "Source ID"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Extension: a replay with the same key and body returns the original invocation; another body is a 409")),
    request_body = CreateJobPayload,
    responses(
        (status = 201, description = "Invocation creation successful", body = CreateJobResponse),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 409, description = "Invocation exists", body = ErrorResponse),
        (status = 429, description = "Extension: the queue is full; retry after `Retry-After` seconds", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(source_id): ApiPath<Uuid>,
    headers: HeaderMap,
    ApiJson(payload): ApiJson<CreateJobPayload>,
) -> Result<Response, ApiError> {
    let source = load_source(&state, &principal, source_id).await?;
    let idempotency = idempotency_key(&headers, &payload)?;
    if let Some(idempotency) = &idempotency
        && let Some(replayed) = replay(&state, source_id, idempotency).await?
    {
        return Ok(replayed);
    }
    let pending = state.queue.pending_count().await?;
    if pending >= state.max_pending_jobs {
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, QUEUE_FULL_RETRY_AFTER)],
            Json(ErrorResponse {
                error: "queue_full".into(),
                message: format!(
                    "{pending} invocations are waiting (queue.max_pending_jobs); retry later"
                ),
            }),
        )
            .into_response());
    }
    let mut job = plan_job(&state.sources, &source, payload, Trigger::Manual).await?;
    job.idempotency = idempotency.clone();
    job.created_by = principal.name().map(str::to_string);
    let job = match state.queue.enqueue(job).await {
        Ok(job) => job,
        Err(crate::queue::QueueError::Duplicate(_)) => {
            // A concurrent request with the same key may have won the race.
            if let Some(idempotency) = &idempotency
                && let Some(replayed) = replay(&state, source_id, idempotency).await?
            {
                return Ok(replayed);
            }
            return Err(ApiError::conflict(
                "an identical invocation is already pending or processing",
            ));
        }
        Err(other) => return Err(other.into()),
    };
    state.wake.notify_waiters();
    tracing::info!(job_id = %job.id, %source_id, "invocation created");
    Ok(created(job.id))
}

/// Seconds a client is asked to wait when the queue is full.
const QUEUE_FULL_RETRY_AFTER: &str = "5";
/// Longest `Idempotency-Key` accepted.
const MAX_IDEMPOTENCY_KEY: usize = 255;

fn created(id: Uuid) -> Response {
    (
        StatusCode::CREATED,
        Json(CreateJobResponse { invocation_id: id }),
    )
        .into_response()
}

/// The request's `Idempotency-Key` with a hash of the body it came with.
fn idempotency_key(
    headers: &HeaderMap,
    payload: &CreateJobPayload,
) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
            ))
        })?;
    let body = serde_json::to_value(payload)
        .map(|v| canonical_json(&v))
        .unwrap_or_default();
    Ok(Some(IdempotencyKey {
        key: key.to_string(),
        request_sha256: sha256_hex(body.as_bytes()),
    }))
}

/// The original invocation of a replayed request, or a 409 when the key was
/// used with another request.
async fn replay(
    state: &AppState,
    source_id: Uuid,
    idempotency: &IdempotencyKey,
) -> Result<Option<Response>, ApiError> {
    match state
        .queue
        .find_idempotent(source_id, &idempotency.key)
        .await?
    {
        Some((job, hash)) if hash == idempotency.request_sha256 => Ok(Some(created(job.id))),
        Some(_) => Err(ApiError::conflict(format!(
            "Idempotency-Key `{}` was already used with a different request",
            idempotency.key
        ))),
        None => Ok(None),
    }
}

async fn load_job(state: &AppState, principal: &Principal, id: Uuid) -> Result<Job, ApiError> {
    let job = state
        .queue
        .get_job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("invocation {id} not found")))?;
    principal.check_database(&job.metadata.database_name)?;
    Ok(job)
}

#[utoipa::path(get, path = "/api/v1/invocations/{invocation_id}", tag = "Invocation",
    operation_id = "get_job", summary = "Get invocation",
    description = "Returns details of an invocation with the provided ID.",
    params(("invocation_id" = Uuid, Path, description = "Invocation ID")),
    responses(
        (status = 200, description = "Found invocation with provided ID", body = Job),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Invocation not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<Job>, ApiError> {
    Ok(Json(load_job(&state, &principal, id).await?))
}

#[utoipa::path(put, path = "/api/v1/invocations/{invocation_id}", tag = "Invocation",
    operation_id = "cancel_pending_job", summary = "Cancel invocation",
    description = "Cancels an invocation.",
    params(("invocation_id" = Uuid, Path, description = "Invocation ID")),
    responses(
        (status = 202, description = "Invocation cancellation successful", body = CancelJobResponse),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Invocation not found", body = ErrorResponse),
        (status = 412, description = "Invocation is not in a cancelable state", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Response, ApiError> {
    load_job(&state, &principal, id).await?;
    match state.queue.cancel(id, principal.name()).await? {
        CancelOutcome::Cancelled | CancelOutcome::Requested => {
            Ok((StatusCode::ACCEPTED, Json(CancelJobResponse {})).into_response())
        }
        CancelOutcome::AlreadyFinished(status) => Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "not_cancelable",
            format!("invocation {id} is already {}", status.name()),
        )),
        CancelOutcome::NotFound => Err(ApiError::not_found(format!("invocation {id} not found"))),
    }
}

#[utoipa::path(get, path = "/api/v1/invocations", tag = "Invocation", operation_id = "list_jobs",
    params(ListJobsQuery),
    responses(
        (status = 200, description = "Invocations", body = Vec<Job>),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<ListJobsQuery>,
) -> Result<Json<Vec<Job>>, ApiError> {
    if query.source_id.is_some() && query.database_name.is_some() {
        return Err(ApiError::bad_request(
            "source_id and database_name are mutually exclusive",
        ));
    }
    if let Some(source_id) = query.source_id {
        load_source(&state, &principal, source_id).await?;
    }
    if let Some(database) = &query.database_name {
        principal.check_database(database)?;
    }
    let status = match &query.status {
        None => None,
        Some(status) => Some(JobState::parse(status).ok_or_else(|| {
            ApiError::bad_request(format!(
                "status must be pending, processing, complete, failed or cancelled, not `{status}`"
            ))
        })?),
    };
    let filter = JobFilter {
        source_id: query.source_id,
        database_name: query.database_name.clone(),
        databases: principal.databases(),
        source_type: parse_source_type(query.source_type.as_deref())?,
        status,
        limit: parse_limit(query.limit)?,
        offset: query.offset.unwrap_or(0),
        ascending: parse_order(query.order_by.as_deref())?,
    };
    Ok(Json(state.queue.list_jobs(&filter).await?))
}

#[utoipa::path(post, path = "/api/v1/sources/{source_id}/invocations/latest-by-keys",
    tag = "Invocation", operation_id = "latest_jobs_by_keys",
    params(("source_id" = Uuid, Path, description = "Source ID")),
    request_body = LatestByKeysRequest,
    responses(
        (status = 200, description = "Newest invocation per object key that has one", body = BTreeMap<String, Job>),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 404, description = "Source not found", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn latest_by_keys(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(source_id): ApiPath<Uuid>,
    ApiJson(request): ApiJson<LatestByKeysRequest>,
) -> Result<Json<BTreeMap<String, Job>>, ApiError> {
    load_source(&state, &principal, source_id).await?;
    if request.object_keys.len() > MAX_KEYS_PER_LOOKUP {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_KEYS_PER_LOOKUP} object_keys per request"
        )));
    }
    let found = state
        .queue
        .latest_by_keys(source_id, &request.object_keys)
        .await?;
    Ok(Json(found.into_iter().collect()))
}
