//! `POST /api/v1/add-file` (the hosted Chroma Sync contract): a multipart
//! upload of one file, synced by an invocation like any other.
//!
//! Everything a caller controls is checked before it costs anything: the
//! declared size (`x-upload-content-length`) before the body is read, the
//! database and collection (which must come before the file part) before
//! the file is stored, and the rest before the job is. The file streams to
//! the [`crate::domain::upload::UploadStore`] piece by piece; an upload
//! that fails or is abandoned midway leaves nothing behind.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use uuid::Uuid;

use super::auth::Principal;
use super::multipart_guard::{GuardedField, GuardedMultipart};
use super::{ApiError, AppState};
use crate::config::sha256_hex;
use crate::domain::plan::validate_custom_id;
use crate::domain::validate_settings;
use crate::model::{
    AddFileResponse, ChunkingConfig, CreateJobPayload, EmbeddingConfig, ErrorResponse,
    FILE_JOB_FIELD, FileJobMetadata, IndexJobMetadata, JobKind, SourceType, Trigger, UploadSpec,
};
use crate::queue::NewJob;
use crate::sink::records::validate_user_metadata;
use crate::sources::names::validate_chroma_name;

/// The required header: the file's size in bytes.
pub const LENGTH_HEADER: &str = "x-upload-content-length";
/// Longest value of a text field (metadata has its own, smaller bound).
const MAX_FIELD_BYTES: usize = 64 * 1024;
/// Largest `metadata` JSON.
const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest filename (the document's key).
const MAX_FILENAME_BYTES: usize = 1024;
/// Longest `content_type`.
const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Seconds a client is asked to wait when uploads are at their cap.
const BUSY_RETRY_AFTER: &str = "5";

/// The fields as they arrived.
#[derive(Default)]
struct Fields {
    database: Option<String>,
    collection: Option<String>,
    custom_id: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    embedding: Option<EmbeddingConfig>,
    chunking: Option<ChunkingConfig>,
    content_type: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/add-file", tag = "Invocation",
    operation_id = "add_file", summary = "Upload a file",
    description = "Multipart upload of one file, synced into a collection by a new invocation. \
        Fields: `database_name` and `collection_name` (before `file`), `file`, and optionally \
        `custom_id`, `metadata`, `embedding`, `chunking`, `content_type`.",
    params(("x-upload-content-length" = u64, Header, description = "The file's size in bytes")),
    responses(
        (status = 201, description = "The file is stored and its invocation created", body = AddFileResponse),
        (status = 400, description = "Bad request", body = ErrorResponse),
        (status = 401, description = "Unauthorized", body = ErrorResponse),
        (status = 403, description = "Forbidden", body = ErrorResponse),
        (status = 413, description = "The file is larger than [uploads] max_file_bytes", body = ErrorResponse),
        (status = 429, description = "Too many uploads at once (in all, or from this token), the queue is full, or [uploads] max_pending_bytes of uploads wait to be processed; retry after `Retry-After` seconds", body = ErrorResponse),
        (status = 507, description = "The daemon's storage would keep less than [uploads] min_free_bytes free", body = ErrorResponse),
        (status = 500, description = "Server error", body = ErrorResponse)),
    security(("x-chroma-token" = [])))]
pub async fn add_file(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let admitted = match admit(&state, &principal, &headers).await {
        Ok(admitted) => admitted,
        Err(refusal) => {
            linger(body).await;
            return refusal;
        }
    };
    let (declared, max) = (admitted.declared, state.limits.max_upload_bytes);
    let request = Request::from_parts(parts, body);
    let mut multipart = GuardedMultipart::from_request(request, declared, &state).await?;

    let id = Uuid::new_v4();
    let mut fields = Fields::default();
    let mut stored = None;
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "file" => {
                if stored.is_some() {
                    return Err(ApiError::bad_request("only one `file` part is accepted"));
                }
                let (Some(database), Some(collection)) = (&fields.database, &fields.collection)
                else {
                    return Err(ApiError::bad_request(
                        "database_name and collection_name must come before the `file` part",
                    ));
                };
                principal.check_database(database)?;
                validate_chroma_name("database_name", database)?;
                validate_chroma_name("collection_name", collection)?;
                stored = Some(receive_file(&state, id, field, declared, max).await?);
            }
            "database_name" => set(&mut fields.database, &name, text(field, &name).await?)?,
            "collection_name" => set(&mut fields.collection, &name, text(field, &name).await?)?,
            "custom_id" => {
                let custom_id = text(field, &name).await?;
                validate_custom_id(&custom_id)?;
                set(&mut fields.custom_id, &name, custom_id)?;
            }
            "content_type" => {
                let value = text(field, &name).await?;
                let valid = value.len() <= MAX_CONTENT_TYPE_BYTES && is_media_type(&value);
                if !valid {
                    return Err(ApiError::bad_request(format!(
                        "content_type `{}` is not a media type like text/markdown",
                        value.chars().take(64).collect::<String>()
                    )));
                }
                set(&mut fields.content_type, &name, value)?;
            }
            "metadata" => {
                let value = capped(field, &name, MAX_METADATA_BYTES).await?;
                let metadata = serde_json::from_str(&value).map_err(|e| {
                    ApiError::bad_request(format!("metadata is not a JSON object: {e}"))
                })?;
                set(&mut fields.metadata, &name, metadata)?;
            }
            "embedding" => {
                let value = text(field, &name).await?;
                let embedding = serde_json::from_str(&value)
                    .map_err(|e| ApiError::bad_request(format!("embedding is not valid: {e}")))?;
                set(&mut fields.embedding, &name, embedding)?;
            }
            "chunking" => {
                let value = text(field, &name).await?;
                let chunking = serde_json::from_str(&value)
                    .map_err(|e| ApiError::bad_request(format!("chunking is not valid: {e}")))?;
                set(&mut fields.chunking, &name, chunking)?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown field `{}`; fields are database_name, collection_name, file, \
                     custom_id, metadata, embedding, chunking, content_type",
                    other.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    let Some((writer, filename, part_type)) = stored else {
        return Err(ApiError::bad_request("the `file` part is missing"));
    };
    // Checks of fields that may follow the file: the stored file is
    // removed (the writer dropped) when one fails.
    let limits = state.limits.sources();
    validate_settings(&limits, fields.chunking.as_ref(), fields.embedding.as_ref())?;
    if let Some(metadata) = &fields.metadata {
        let sparse = fields
            .embedding
            .as_ref()
            .is_some_and(|e| e.sparse.is_some());
        validate_user_metadata(metadata, sparse).map_err(ApiError::bad_request)?;
    }
    if writer.size() != declared {
        return Err(ApiError::bad_request(format!(
            "the file part holds {} bytes but {LENGTH_HEADER} said {declared}",
            writer.size()
        )));
    }
    let (size, sha256) = writer.finish().await.map_err(ApiError::internal)?;
    let (database, collection) = (
        fields.database.unwrap_or_default(),
        fields.collection.unwrap_or_default(),
    );
    let content_type = fields
        .content_type
        .or(part_type.filter(|t| t != "application/octet-stream"));
    let job = NewJob {
        source_id: Uuid::nil(),
        source_type: SourceType::UPLOAD,
        payload: CreateJobPayload {
            custom_id: fields.custom_id.clone(),
            metadata: fields.metadata.clone(),
            target_collection_name: Some(collection.clone()),
            ..CreateJobPayload::default()
        },
        metadata: IndexJobMetadata {
            kind: file_job(FileJobMetadata {
                file_name: filename.clone(),
                size,
                custom_id: fields.custom_id,
                additional_metadata: fields.metadata,
            })?,
            database_name: database.clone(),
            collection_name: collection.clone(),
        },
        trigger: Trigger::Manual,
        // Two uploads of one document into one collection write the same
        // chunk IDs: one at a time, in order.
        concurrency_key: format!(
            "upload:{database}:{collection}:{}",
            sha256_hex(filename.as_bytes())
        ),
        dedupe_key: format!("upload:{id}"),
        idempotency: None,
        id: Some(id),
        created_by: principal.name().map(str::to_string),
        notify: false,
        upload: Some(UploadSpec {
            filename,
            size,
            sha256,
            content_type,
            store: state.sources.uploads.kind(),
            chunking: fields.chunking,
            embedding: fields.embedding,
        }),
    };
    let job = match state.queue.enqueue(job).await {
        Ok(job) => job,
        Err(error) => {
            if let Err(e) = state.sources.uploads.remove(state.queue.as_ref(), id).await {
                tracing::warn!(error = %e, "the janitor will remove the upload");
            }
            return Err(error.into());
        }
    };
    state.wake.notify_waiters();
    tracing::info!(job_id = %job.id, size, "file uploaded; invocation created");
    Ok((
        StatusCode::CREATED,
        Json(AddFileResponse {
            invocation_id: job.id,
        }),
    )
        .into_response())
}

/// What a refused upload may still send before its answer: read and
/// dropped, up to this many bytes …
const LINGER_BYTES: usize = 1 << 20;
/// … for at most this long.
const LINGER_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and drops what a refused upload is sending (bounded by
/// [`LINGER_BYTES`] and [`LINGER_FOR`]) before the refusal goes out. A
/// client that writes its whole body before reading the answer — most do,
/// for a small file — otherwise finds the connection reset under it and
/// never sees the `{error, message}`; a large or slow body is still cut
/// off at the bound.
async fn linger(body: axum::body::Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(LINGER_FOR, async {
        let mut read = 0;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len();
            if read >= LINGER_BYTES {
                break;
            }
        }
    })
    .await;
}

/// An upload let in: what it declared, and the room held for it while it
/// is received (released when this drops).
struct Admitted {
    declared: u64,
    _token_slot: Option<super::quota::TokenSlot>,
    _slot: tokio::sync::OwnedSemaphorePermit,
    _reservation: crate::domain::upload::Reservation,
}

/// The checks an upload passes before any of its body is read: its
/// declared size, the queue's and the store's room, the token's and the
/// daemon's concurrent uploads. A refusal is the answer to send.
async fn admit(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
) -> Result<Admitted, Result<Response, ApiError>> {
    let max = state.limits.max_upload_bytes;
    let declared = headers
        .get(LENGTH_HEADER)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the {LENGTH_HEADER} header (the file's size in bytes) is required"
            ))
        })
        .map_err(Err)?
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            Err(ApiError::bad_request(format!(
                "{LENGTH_HEADER} must be a number of bytes"
            )))
        })?;
    if declared > max {
        return Err(Err(too_large(declared, max)));
    }
    let pending = state
        .queue
        .pending_count()
        .await
        .map_err(|e| Err(e.into()))?;
    if pending >= state.max_pending_jobs {
        return Err(Ok(busy(
            "queue_full",
            format!("{pending} invocations are waiting (queue.max_pending_jobs); retry later"),
        )));
    }
    let Ok(token_slot) = state.uploads_per_token.try_acquire(principal) else {
        return Err(Ok(busy(
            "too_many_uploads",
            format!(
                "this token is sending {} uploads at once, as many as one token may \
                 ([uploads] max_in_flight_per_token); retry later",
                state.uploads_per_token.per_token()
            ),
        )));
    };
    let Ok(slot) = state.uploads_in_flight.clone().try_acquire_owned() else {
        return Err(Ok(busy(
            "too_many_uploads",
            "the daemon is receiving as many uploads as it takes at once ([uploads] \
             max_in_flight); retry later"
                .to_string(),
        )));
    };

    // Room for the file before any of it is stored.
    let reservation = match state
        .sources
        .uploads
        .reserve(state.queue.as_ref(), declared)
        .await
        .map_err(|e| Err(ApiError::internal(e)))?
    {
        Ok(reservation) => reservation,
        Err(full @ crate::domain::upload::StoreFull::Pending { .. }) => {
            return Err(Ok(busy("too_many_pending_upload_bytes", full.to_string())));
        }
        Err(full @ crate::domain::upload::StoreFull::Disk { .. }) => {
            return Err(Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                full.to_string(),
            )));
        }
    };
    Ok(Admitted {
        declared,
        _token_slot: token_slot,
        _slot: slot,
        _reservation: reservation,
    })
}

/// Streams the file part to the store, bounded by the declared size and
/// the configured maximum. Returns the writer (not yet finished), the
/// filename and the part's media type.
async fn receive_file(
    state: &AppState,
    id: Uuid,
    mut field: GuardedField<'_>,
    declared: u64,
    max: u64,
) -> Result<(crate::domain::upload::UploadWriter, String, Option<String>), ApiError> {
    let filename = field
        .file_name()
        .map(str::to_string)
        .filter(|f| !f.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("the `file` part needs a filename"))?;
    if filename.len() > MAX_FILENAME_BYTES || filename.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "the filename must be at most {MAX_FILENAME_BYTES} bytes without control characters"
        )));
    }
    let part_type = field.content_type().map(str::to_string);
    let mut writer = state
        .sources
        .uploads
        .writer(state.queue.clone(), id)
        .await
        .map_err(ApiError::internal)?;
    while let Some(piece) = field.chunk().await? {
        let size = writer.size() + piece.len() as u64;
        if size > max {
            return Err(too_large(size, max));
        }
        if size > declared {
            return Err(ApiError::bad_request(format!(
                "the file part is longer than the {declared} bytes {LENGTH_HEADER} said"
            )));
        }
        writer.write(&piece).await.map_err(ApiError::internal)?;
    }
    Ok((writer, filename, part_type))
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(ApiError::bad_request(format!(
            "field `{name}` was given twice"
        )));
    }
    Ok(())
}

async fn text(field: GuardedField<'_>, name: &str) -> Result<String, ApiError> {
    capped(field, name, MAX_FIELD_BYTES).await
}

/// A text field, read at most `limit` bytes far: a field is not a way to
/// make the daemon buffer a file.
async fn capped(mut field: GuardedField<'_>, name: &str, limit: usize) -> Result<String, ApiError> {
    let mut value = Vec::new();
    while let Some(piece) = field.chunk().await? {
        if value.len() + piece.len() > limit {
            return Err(ApiError::bad_request(format!(
                "field `{name}` is longer than {limit} bytes"
            )));
        }
        value.extend_from_slice(&piece);
    }
    String::from_utf8(value)
        .map_err(|_| ApiError::bad_request(format!("field `{name}` is not UTF-8 text")))
}

/// `type/subtype`, optionally with `; parameters`, in RFC 6838's characters.
fn is_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or_default().trim();
    let token = |t: &str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$&^_.+-".contains(c))
    };
    matches!(essence.split_once('/'), Some((kind, sub)) if token(kind) && token(sub))
}

fn too_large(size: u64, max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "file_too_large",
        format!(
            "the file is {size} bytes; this daemon takes at most {max} ([uploads] max_file_bytes)"
        ),
    )
}

fn busy(code: &str, message: String) -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, BUSY_RETRY_AFTER)],
        Json(ErrorResponse {
            error: code.into(),
            message,
        }),
    )
        .into_response()
}

/// An upload's job metadata: `"file": {…}`.
fn file_job(metadata: FileJobMetadata) -> Result<JobKind, ApiError> {
    JobKind::of(FILE_JOB_FIELD, &metadata)
        .map_err(|e| ApiError::internal(format!("job metadata: {e}")))
}
