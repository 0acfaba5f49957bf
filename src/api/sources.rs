//! `/api/v1/sources`: create, list, get, delete.
//!
//! A source is validated completely here, so a bad source is a 400 at
//! creation rather than a failed job later.

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
use super::{ApiError, ApiLimits, AppState};
use crate::model::{
    AutoSync, ChunkingConfig, CreateSourcePayload, CreateSourceResponse, DEFAULT_EMBEDDING_MODEL,
    EmbeddingConfig, EmbeddingModel, ErrorResponse, GithubSourceConfig, S3SourceConfig,
    ScheduleSlots, Source, SourceType, WebScrapeSourceConfig,
};
use crate::queue::{SourceFilter, SourceRecord};
use crate::source::github::{GitHubClients, PathFilter, split_repository};
use crate::source::s3::S3Clients;
use crate::source::web::PathRules;

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

/// Chroma's rule for database and collection names.
pub fn validate_chroma_name(what: &str, name: &str) -> Result<(), ApiError> {
    let ok_len = (3..=512).contains(&name.len());
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let ok_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{what} `{name}` must be 3-512 characters from [a-zA-Z0-9._-], starting and ending \
             with a letter or digit"
        )))
    }
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
            SourceType::parse(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "source_type must be github, web_scrape or s3, not `{v}`"
                ))
            })
        })
        .transpose()
}

/// How many upcoming slots of a cron schedule are checked against
/// `[api] min_schedule_interval_seconds` (over a day of a per-minute cron).
const SCHEDULE_FIRINGS_CHECKED: usize = 1500;

/// Checks a source completely; returns its type. It compiles the source's
/// path patterns and walks its schedule, which can take milliseconds:
/// callers on the async runtime run it on a blocking thread.
pub fn validate(
    s3_clients: &S3Clients,
    github_clients: &GitHubClients,
    limits: &ApiLimits,
    payload: &CreateSourcePayload,
) -> Result<SourceType, ApiError> {
    let given = [
        payload.github.is_some(),
        payload.web_scrape.is_some(),
        payload.s3.is_some(),
    ];
    let source_type = match given {
        [false, false, true] => SourceType::S3,
        [true, false, false] => SourceType::Github,
        [false, true, false] => SourceType::WebScrape,
        [false, false, false] => {
            return Err(ApiError::bad_request(
                "a source needs exactly one of `github`, `web_scrape` or `s3`",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "a source takes exactly one of `github`, `web_scrape` or `s3`, not several",
            ));
        }
    };
    validate_chroma_name("database_name", &payload.database_name)?;
    if let Some(s3) = &payload.s3 {
        validate_s3(s3_clients, s3)?;
    }
    if let Some(github) = &payload.github {
        validate_github(github_clients, github)?;
    }
    if let Some(web) = &payload.web_scrape {
        validate_web(web)?;
    }
    if let Some(schedule) = &payload.schedule {
        let parsed =
            crate::schedule::ParsedSchedule::parse(schedule).map_err(ApiError::bad_request)?;
        let minimum = limits.min_schedule_interval;
        if let Some(shortest) = parsed
            .shortest_interval(chrono::Utc::now(), SCHEDULE_FIRINGS_CHECKED)
            .filter(|shortest| *shortest < minimum)
        {
            return Err(ApiError::bad_request(format!(
                "schedule.cron `{}` fires {} s apart; this daemon runs schedules at most once \
                 every {} s ([api] min_schedule_interval_seconds)",
                schedule.cron,
                shortest.as_secs(),
                minimum.as_secs()
            )));
        }
        match &schedule.target_collection_name {
            Some(name) => validate_chroma_name("schedule.target_collection_name", name)?,
            None if source_type != SourceType::S3 => {
                return Err(ApiError::bad_request(
                    "schedule.target_collection_name is required for GitHub and web sources",
                ));
            }
            None => {}
        }
        if schedule.branch.is_some() && source_type != SourceType::Github {
            return Err(ApiError::bad_request(
                "schedule.branch applies to GitHub sources only",
            ));
        }
    }
    if let Some(chunking) = &payload.chunking {
        let (lines, bytes) = match chunking {
            ChunkingConfig::TreeSitter { max_size_bytes } => (None, *max_size_bytes),
            ChunkingConfig::Lines {
                max_lines,
                max_size_bytes,
            } => (*max_lines, *max_size_bytes),
        };
        if lines == Some(0) {
            return Err(ApiError::bad_request(
                "chunking.max_lines must be at least 1",
            ));
        }
        if bytes.is_some_and(|b| !(64..=16 * 1024).contains(&b)) {
            return Err(ApiError::bad_request(
                "chunking.max_size_bytes must be between 64 and 16384 (Chroma's document limit)",
            ));
        }
    }
    let models = payload
        .embedding
        .iter()
        .map(|e| &e.dense.model)
        .chain(payload.embedding_model.iter().map(|m| &m.model));
    for model in models {
        if model != DEFAULT_EMBEDDING_MODEL {
            return Err(ApiError::bad_request(format!(
                "embedding model `{model}` is not available on this daemon; use \
                 `{DEFAULT_EMBEDDING_MODEL}`"
            )));
        }
    }
    if payload
        .embedding
        .as_ref()
        .is_some_and(|e| e.sparse.is_some())
    {
        return Err(ApiError::bad_request(
            "sparse embeddings are not supported by this version of chroma-syncd yet",
        ));
    }
    Ok(source_type)
}

/// The checks of a valid source that depend on the daemon's config and the
/// network: the credential it names may be used by its database (403
/// otherwise), and its S3 endpoints pass the SSRF guard (400 naming the
/// address otherwise). Jobs check both again when they connect.
pub async fn authorize(
    s3_clients: &S3Clients,
    github_clients: &GitHubClients,
    payload: &CreateSourcePayload,
) -> Result<(), ApiError> {
    let database = &payload.database_name;
    if let Some(s3) = &payload.s3 {
        s3_clients
            .authorize(database, s3)
            .map_err(ApiError::forbidden)?;
    }
    if let Some(github) = &payload.github {
        github_clients
            .authorize(database, github)
            .map_err(ApiError::forbidden)?;
    }
    if let Some(s3) = &payload.s3 {
        s3_clients
            .check_endpoints(s3)
            .await
            .map_err(ApiError::bad_request)?;
    }
    Ok(())
}

fn validate_github(clients: &GitHubClients, github: &GithubSourceConfig) -> Result<(), ApiError> {
    if split_repository(&github.repository).is_none() {
        return Err(ApiError::bad_request(format!(
            "github.repository `{}` is not of the form owner/name",
            github.repository
        )));
    }
    PathFilter::from_source(github).map_err(|e| ApiError::bad_request(format!("github: {e}")))?;
    if let Some(app_id) = &github.app_id
        && !clients.knows_app(app_id)
    {
        return Err(ApiError::bad_request(format!(
            "github.app_id {app_id} is not configured on this daemon ([github.apps.{app_id}] in \
             its config, with the app's private key)"
        )));
    }
    Ok(())
}

/// Deepest crawl and most pages one source may ask for.
const MAX_CRAWL_DEPTH: u32 = 100;
const MAX_PAGE_LIMIT: u32 = 1_000_000;

fn validate_web(web: &WebScrapeSourceConfig) -> Result<(), ApiError> {
    let valid = reqwest::Url::parse(&web.starting_url)
        .map(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
        .unwrap_or(false);
    if !valid {
        return Err(ApiError::bad_request(format!(
            "web_scrape.starting_url `{}` is not an http(s) URL",
            web.starting_url
        )));
    }
    if web.max_depth.is_some_and(|d| d > MAX_CRAWL_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "web_scrape.max_depth must be at most {MAX_CRAWL_DEPTH}"
        )));
    }
    if web
        .page_limit
        .is_some_and(|l| !(1..=MAX_PAGE_LIMIT).contains(&l))
    {
        return Err(ApiError::bad_request(format!(
            "web_scrape.page_limit must be between 1 and {MAX_PAGE_LIMIT}"
        )));
    }
    PathRules::new(web).map_err(|e| ApiError::bad_request(format!("web_scrape: {e}")))?;
    Ok(())
}

fn validate_s3(s3_clients: &S3Clients, s3: &S3SourceConfig) -> Result<(), ApiError> {
    if s3.bucket_name.trim().is_empty() || s3.region.trim().is_empty() {
        return Err(ApiError::bad_request(
            "s3.bucket_name and s3.region must not be empty",
        ));
    }
    validate_chroma_name("s3.collection_name", &s3.collection_name)?;
    if !s3_clients.knows_credential(s3.aws_credential_id) {
        return Err(ApiError::bad_request(format!(
            "aws_credential_id {} is not configured on this daemon ([aws_credentials.{}] in its \
             config; 0 means the daemon's own AWS credential chain)",
            s3.aws_credential_id, s3.aws_credential_id
        )));
    }
    if let Some(endpoint) = &s3.endpoint_url {
        let valid = reqwest::Url::parse(endpoint)
            .map(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
            .unwrap_or(false);
        if !valid {
            return Err(ApiError::bad_request(format!(
                "s3.endpoint_url `{endpoint}` is not an http(s) URL"
            )));
        }
    }
    match (&s3.auto_sync, &s3.sqs_queue_url) {
        (Some(AutoSync::Metadata), _) => {
            return Err(ApiError::bad_request(
                "s3.auto_sync `metadata` is not supported by this version of chroma-syncd yet",
            ));
        }
        (Some(AutoSync::Direct), None) => {
            return Err(ApiError::bad_request(
                "s3.auto_sync `direct` needs s3.sqs_queue_url: the SQS queue the bucket sends \
                 its event notifications to",
            ));
        }
        (Some(AutoSync::Direct), Some(url)) => {
            let parsed = url::Url::parse(url).map_err(|e| {
                ApiError::bad_request(format!("s3.sqs_queue_url `{url}` is not a URL: {e}"))
            })?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.path().len() < 2 {
                return Err(ApiError::bad_request(format!(
                    "s3.sqs_queue_url `{url}` is not an SQS queue URL \
                     (https://sqs.<region>.amazonaws.com/<account>/<queue>)"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The stored source with every optional setting at its effective value.
pub fn effective(record: &SourceRecord) -> Source {
    let payload = &record.payload;
    let dense = payload
        .embedding
        .as_ref()
        .map(|e| e.dense.clone())
        .or_else(|| payload.embedding_model.clone())
        .unwrap_or(EmbeddingModel {
            model: DEFAULT_EMBEDDING_MODEL.to_string(),
            task: None,
        });
    let s3 = payload.s3.clone().map(|mut s3| {
        s3.path_prefix.get_or_insert_with(String::new);
        s3.auto_sync.get_or_insert(AutoSync::None);
        s3.force_path_style.get_or_insert(false);
        s3
    });
    Source {
        id: record.id,
        github: payload.github.clone(),
        web_scrape: payload.web_scrape.clone(),
        s3,
        database_name: payload.database_name.clone(),
        chunking: payload.chunking.clone(),
        embedding: payload.embedding.clone().unwrap_or(EmbeddingConfig {
            dense: dense.clone(),
            sparse: None,
        }),
        embedding_model: dense,
        created_at: record.created_at,
        schedule: payload.schedule.clone(),
    }
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
    let (source_type, payload) = tokio::task::spawn_blocking({
        let (s3, github, limits) = (
            Arc::clone(&state.s3),
            Arc::clone(&state.github),
            state.limits,
        );
        move || validate(&s3, &github, &limits, &payload).map(|source_type| (source_type, payload))
    })
    .await
    .map_err(|e| ApiError::internal(format!("validating the source failed: {e}")))??;
    authorize(&state.s3, &state.github, &payload).await?;
    let record = state.queue.create_source(source_type, &payload).await?;
    tracing::info!(source_id = %record.id, source_type = source_type.as_str(), "source created");
    Ok((
        StatusCode::CREATED,
        Json(CreateSourceResponse {
            source_id: record.id,
        }),
    )
        .into_response())
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
