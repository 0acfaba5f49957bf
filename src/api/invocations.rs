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
use super::sources::{
    load_source, parse_limit, parse_order, parse_source_type, validate_chroma_name,
};
use super::{ApiError, AppState};
use crate::config::sha256_hex;
use crate::model::{
    CancelJobResponse, CreateJobPayload, CreateJobResponse, ErrorResponse, GitRefIdentifier,
    IndexJobMetadata, Job, JobKind, LatestByKeysRequest, S3JobMetadata, SourceType, Trigger,
    canonical_json,
};
use crate::queue::{CancelOutcome, IdempotencyKey, JobFilter, JobState, NewJob, SourceRecord};
use crate::sink::records::validate_user_metadata;
use crate::source::SourceError;
use crate::source::github::GitHubClients;
use tokio_util::sync::CancellationToken;

/// Longest custom_id (seed 002); with `-<n>` it stays within Chroma's 128-byte IDs.
const MAX_CUSTOM_ID: usize = 120;
/// S3's own limit on key length.
const MAX_OBJECT_KEY_BYTES: usize = 1024;
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

/// Checks `payload` against the source and works out the job to enqueue.
/// GitHub invocations must have their `ref_identifier` filled in first
/// ([`fill_default_ref`]).
pub fn plan_job(source: &SourceRecord, payload: CreateJobPayload) -> Result<NewJob, ApiError> {
    if source.payload.github.is_some() || source.payload.web_scrape.is_some() {
        return plan_collection_job(source, payload);
    }
    let Some(s3) = source.payload.s3.as_ref() else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_source_type",
            format!(
                "{} sources are not supported by this version of chroma-syncd yet",
                source.source_type.as_str()
            ),
        ));
    };
    if payload.ref_identifier.is_some() {
        return Err(ApiError::bad_request(
            "ref_identifier is only allowed for GitHub sources",
        ));
    }
    let Some(object_key) = payload.object_key.as_deref() else {
        return Err(ApiError::bad_request(
            "object_key is required for S3 sources",
        ));
    };
    if object_key.is_empty() || object_key.len() > MAX_OBJECT_KEY_BYTES {
        return Err(ApiError::bad_request(format!(
            "object_key must be 1 to {MAX_OBJECT_KEY_BYTES} bytes long"
        )));
    }
    let prefix = s3.path_prefix.as_deref().unwrap_or("");
    if !object_key.starts_with(prefix) {
        return Err(ApiError::bad_request(format!(
            "object_key `{object_key}` is not under the source's path_prefix `{prefix}`"
        )));
    }
    if let Some(custom_id) = &payload.custom_id {
        if custom_id.is_empty() || custom_id.chars().count() > MAX_CUSTOM_ID {
            return Err(ApiError::bad_request(format!(
                "custom_id must be 1 to {MAX_CUSTOM_ID} characters long"
            )));
        }
        if custom_id.len() > MAX_CUSTOM_ID {
            return Err(ApiError::bad_request(format!(
                "custom_id must be at most {MAX_CUSTOM_ID} bytes in UTF-8, to keep record IDs \
                 within Chroma's 128 bytes"
            )));
        }
    }
    if let Some(metadata) = &payload.metadata {
        validate_user_metadata(metadata).map_err(ApiError::bad_request)?;
    }
    let collection = payload
        .target_collection_name
        .clone()
        .unwrap_or_else(|| s3.collection_name.clone());
    validate_chroma_name("target_collection_name", &collection)?;

    let metadata = IndexJobMetadata {
        kind: JobKind::S3(S3JobMetadata {
            bucket_name: s3.bucket_name.clone(),
            object_key: Some(object_key.to_string()),
            custom_id: payload.custom_id.clone(),
            additional_metadata: payload.metadata.clone(),
        }),
        database_name: source.payload.database_name.clone(),
        collection_name: collection.clone(),
    };
    let canonical = serde_json::to_value(&payload)
        .map(|v| canonical_json(&v))
        .unwrap_or_default();
    Ok(NewJob {
        source_id: source.id,
        source_type: SourceType::S3,
        concurrency_key: format!("s3:{}:{collection}:{object_key}", source.id),
        dedupe_key: sha256_hex(format!("{}:{collection}:{canonical}", source.id).as_bytes()),
        payload,
        metadata,
        trigger: Trigger::Manual,
        idempotency: None,
    })
}

/// How long creating an invocation may wait for GitHub to name the default branch.
const DEFAULT_BRANCH_LOOKUP: std::time::Duration = std::time::Duration::from_secs(20);

/// Longest branch name we pass on (git allows more, GitHub does not).
const MAX_REF_BYTES: usize = 255;

/// A job that syncs a whole source (a repository at a ref, a crawl) into one collection.
fn plan_collection_job(
    source: &SourceRecord,
    payload: CreateJobPayload,
) -> Result<NewJob, ApiError> {
    let github = source.payload.github.is_some();
    let kind = if github { "GitHub" } else { "web_scrape" };
    for (given, name) in [
        (payload.object_key.is_some(), "object_key"),
        (payload.custom_id.is_some(), "custom_id"),
        (payload.metadata.is_some(), "metadata"),
    ] {
        if given {
            return Err(ApiError::bad_request(format!(
                "{name} is only allowed for S3 sources"
            )));
        }
    }
    let Some(collection) = payload.target_collection_name.clone() else {
        return Err(ApiError::bad_request(format!(
            "target_collection_name is required for {kind} sources"
        )));
    };
    validate_chroma_name("target_collection_name", &collection)?;
    let kind = if github {
        let git_ref = payload.ref_identifier.clone().ok_or_else(|| {
            ApiError::bad_request(
                "ref_identifier is required (the default branch was not resolved)",
            )
        })?;
        validate_ref(&git_ref)?;
        JobKind::Github {
            git_ref_identifier: git_ref,
        }
    } else {
        if payload.ref_identifier.is_some() {
            return Err(ApiError::bad_request(
                "ref_identifier is only allowed for GitHub sources",
            ));
        }
        JobKind::WebScrape(())
    };
    let source_type = if github {
        SourceType::Github
    } else {
        SourceType::WebScrape
    };
    let metadata = IndexJobMetadata {
        kind,
        database_name: source.payload.database_name.clone(),
        collection_name: collection.clone(),
    };
    let canonical = serde_json::to_value(&payload)
        .map(|v| canonical_json(&v))
        .unwrap_or_default();
    let database = &source.payload.database_name;
    Ok(NewJob {
        source_id: source.id,
        source_type,
        // One sync of a source into one collection at a time: each reads
        // what the previous one left.
        concurrency_key: format!(
            "{}:{}:{database}/{collection}",
            source_type.as_str(),
            source.id
        ),
        dedupe_key: sha256_hex(format!("{}:{collection}:{canonical}", source.id).as_bytes()),
        payload,
        metadata,
        trigger: Trigger::Manual,
        idempotency: None,
    })
}

fn validate_ref(git_ref: &GitRefIdentifier) -> Result<(), ApiError> {
    match git_ref {
        GitRefIdentifier::Sha(sha) => {
            if !(4..=64).contains(&sha.len()) || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::bad_request(format!(
                    "ref_identifier.sha `{sha}` is not a hexadecimal commit sha"
                )));
            }
        }
        GitRefIdentifier::Branch(branch) => {
            let valid = !branch.is_empty()
                && branch.len() <= MAX_REF_BYTES
                && !branch.starts_with('/')
                && !branch.ends_with('/')
                && !branch.contains("..")
                && !branch
                    .chars()
                    .any(|c| c.is_control() || " ~^:?*[\\".contains(c));
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "ref_identifier.branch `{branch}` is not a valid branch name"
                )));
            }
        }
    }
    Ok(())
}

/// A GitHub invocation without `ref_identifier` syncs the repository's
/// default branch: asks GitHub which one that is, so the job records it.
pub async fn fill_default_ref(
    github: &GitHubClients,
    source: &SourceRecord,
    payload: &mut CreateJobPayload,
) -> Result<(), ApiError> {
    let Some(config) = &source.payload.github else {
        return Ok(());
    };
    if payload.ref_identifier.is_some() {
        return Ok(());
    }
    // Asking GitHub uses the source's credential: it must still be its database's.
    github
        .authorize(&source.payload.database_name, config)
        .map_err(ApiError::forbidden)?;
    let branch = async {
        github
            .repo(
                &source.payload.database_name,
                config,
                CancellationToken::new(),
            )
            .await?
            .default_branch()
            .await
    };
    // An API request does not sit out a long rate-limit wait the way a job does.
    let branch = tokio::time::timeout(DEFAULT_BRANCH_LOOKUP, branch)
        .await
        .unwrap_or_else(|_| {
            Err(SourceError::Transient(format!(
                "GitHub did not answer within {}s (rate limited?); retry later or give \
                 ref_identifier",
                DEFAULT_BRANCH_LOOKUP.as_secs()
            )))
        });
    let branch = branch.map_err(|error| match error {
        SourceError::Transient(message) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "github_unavailable",
            format!("cannot look up the default branch: {message}"),
        ),
        SourceError::NotFound(message) | SourceError::Permanent(message) => {
            ApiError::bad_request(format!("cannot look up the default branch: {message}"))
        }
    })?;
    payload.ref_identifier = Some(GitRefIdentifier::Branch(branch));
    Ok(())
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
    let mut payload = payload;
    fill_default_ref(&state.github, &source, &mut payload).await?;
    let mut job = plan_job(&source, payload)?;
    job.idempotency = idempotency.clone();
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
    match state.queue.cancel(id).await? {
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
