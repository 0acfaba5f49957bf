//! Chroma v2 REST client: the few calls a sync needs.
//!
//! Why not the `chromadb` crate (the design's first choice): it cannot pass a
//! collection `configuration` on create, its `version()` calls the removed v1
//! API, it binds one database per client while every source names its own,
//! and its errors do not expose the HTTP status we need to tell a transient
//! failure (5xx, connection refused) from a permanent one (4xx). Each call
//! here is one small JSON request; see ARCHITECTURE.md.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::OnceCell;

use super::group_commit::{GroupCommit, Part, WriteError};
use super::records::{Filter, Record};
use crate::config::{ChromaConfig, Secret};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ChromaError {
    /// Connection refused, reset or timed out: Chroma may come back.
    #[error("Chroma unreachable while {doing}: {message}")]
    Unreachable { doing: String, message: String },
    /// Chroma answered with an error status.
    #[error("Chroma answered HTTP {status} while {doing}: {message}")]
    Status {
        doing: String,
        status: u16,
        message: String,
    },
    /// The collection exists with settings we must not write into.
    #[error("{0}")]
    Incompatible(String),
}

impl ChromaError {
    pub fn is_transient(&self) -> bool {
        match self {
            ChromaError::Unreachable { .. } => true,
            ChromaError::Status { status, .. } => *status >= 500 || *status == 429,
            ChromaError::Incompatible(_) => false,
        }
    }
}

impl WriteError for ChromaError {
    fn is_transient(&self) -> bool {
        ChromaError::is_transient(self)
    }

    fn abandoned(collection: &str) -> Self {
        ChromaError::Unreachable {
            doing: format!("upserting into {collection}"),
            message: "the request this write joined was abandoned; it may be sent again".into(),
        }
    }
}

/// A collection we write to: its UUID is what record routes take.
#[derive(Debug, Clone)]
pub struct CollectionHandle {
    pub id: String,
    pub name: String,
    pub database: String,
    pub metadata: Map<String, Value>,
}

/// What the collection must be embedded with.
#[derive(Debug, Clone)]
pub struct EmbeddingSpec<'a> {
    /// The model's name, for messages.
    pub model: &'a str,
    pub dimension: usize,
    /// The embedding-function record Chroma clients read to embed queries
    /// (`{"type": "known", "name", "config"}`).
    pub function: &'a Value,
    /// Collection metadata set on creation (model, task, prompts).
    pub metadata: Map<String, Value>,
    /// A sparse vector index to declare in the collection's schema.
    pub sparse: Option<SparseIndex<'a>>,
}

/// A sparse vector index on a metadata key, filled by Chroma/BM25 from the
/// documents.
#[derive(Debug, Clone)]
pub struct SparseIndex<'a> {
    pub key: &'a str,
    /// The sparse embedding-function record (`chroma_bm25`,
    /// `huggingface_sparse`).
    pub function: Value,
}

/// A sparse vector as a metadata value in Chroma's JSON.
pub fn sparse_vector_value(vector: &crate::embed::bm25::SparseVector) -> Value {
    json!({
        "#type": "sparse_vector",
        "indices": vector.indices,
        "values": vector.values,
    })
}

#[derive(Clone)]
pub struct ChromaClient {
    http: reqwest::Client,
    base: String,
    tenant: String,
    api_key: Option<Secret>,
    max_batch_size: usize,
    /// Records per page of [`ChromaClient::scan`] (`[chroma] read_page_size`).
    read_page: usize,
    server_batch_size: Arc<OnceCell<usize>>,
    /// Upserts that arrive while one is in flight go together
    /// ([`GroupCommit`]); shared by the client's clones.
    group_commit: GroupCommit<ChromaError>,
}

#[derive(Deserialize)]
struct CollectionJson {
    id: String,
    name: String,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
    #[serde(default)]
    dimension: Option<u64>,
    #[serde(default)]
    configuration_json: Option<Value>,
}

#[derive(Deserialize)]
struct GetResult {
    ids: Vec<String>,
    #[serde(default)]
    metadatas: Option<Vec<Option<Map<String, Value>>>>,
}

/// The model a recorded embedding function embeds with, where we can tell:
/// Chroma's `default` (and its ONNX and sentence-transformers spellings of
/// all-MiniLM-L6-v2) is the built-in; `openai` and `sentence_transformer`
/// name theirs in `config.model_name`. `None` for anything else.
fn recorded_model(function: &Value) -> Option<String> {
    let name = function.get("name")?.as_str()?;
    let model = function
        .get("config")
        .and_then(|c| c.get("model_name"))
        .and_then(Value::as_str);
    let builtin = || crate::model::DEFAULT_EMBEDDING_MODEL.to_string();
    match name {
        "default" | "onnx_mini_lm_l6_v2" => Some(builtin()),
        "sentence_transformer" => {
            let model = model.unwrap_or("all-MiniLM-L6-v2");
            if model == "all-MiniLM-L6-v2" {
                Some(builtin())
            } else {
                Some(model.to_string())
            }
        }
        _ => model.map(str::to_string),
    }
}

/// Why a collection whose recorded embedding function is `recorded` must
/// not get vectors embedded as `ours` says, if it must not.
fn function_mismatch(recorded: &Value, ours: &Value) -> Option<String> {
    let kind = recorded.get("type").and_then(Value::as_str);
    if kind != Some("known") {
        // `legacy` or none: nothing recorded to disagree with.
        return None;
    }
    let recorded_name = recorded.get("name").and_then(Value::as_str).unwrap_or("?");
    let theirs = recorded_model(recorded);
    if theirs.is_some() && theirs == recorded_model(ours) {
        return None;
    }
    Some(match theirs {
        Some(model) => format!("embedding function `{recorded_name}` (model `{model}`)"),
        None => format!("embedding function `{recorded_name}`"),
    })
}

/// The collection schema for a source with sparse vectors: Chroma refuses a
/// schema beside a non-default `configuration` ("Cannot set both collection
/// config and schema simultaneously"), so the dense index's space and
/// embedding function go in the schema too (`#embedding`), and the sparse
/// index on `sparse.key` is declared with its function (Chroma/BM25 or a
/// SPLADE model).
fn sparse_schema(function: &Value, sparse: &SparseIndex<'_>) -> Value {
    json!({
        "defaults": {},
        "keys": {
            "#embedding": {
                "float_list": {
                    "vector_index": {
                        "enabled": true,
                        "config": {
                            "space": "cosine",
                            "source_key": "#document",
                            "embedding_function": function,
                        },
                    },
                },
            },
            sparse.key: {
                "sparse_vector": {
                    "sparse_vector_index": {
                        "enabled": true,
                        "config": {
                            "embedding_function": sparse.function,
                            "source_key": "#document",
                        },
                    },
                },
            },
        },
    })
}

impl ChromaClient {
    pub fn new(config: &ChromaConfig) -> Result<Self, ChromaError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_seconds.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ChromaError::Unreachable {
                doing: "building the HTTP client".into(),
                message: e.to_string(),
            })?;
        Ok(ChromaClient {
            http,
            base: config.url.trim_end_matches('/').to_string(),
            tenant: config.tenant.clone(),
            api_key: config.api_key.clone(),
            max_batch_size: config.max_batch_size.max(1),
            read_page: config.read_page_size.max(1),
            server_batch_size: Arc::new(OnceCell::new()),
            group_commit: GroupCommit::default(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        doing: &str,
    ) -> Result<(StatusCode, Value), ChromaError> {
        let url = format!("{}/api/v2{}", self.base, path);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.api_key {
            request = request.header("x-chroma-token", key.expose());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ChromaError::Unreachable {
            doing: doing.to_string(),
            message: describe_reqwest(&e),
        })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| ChromaError::Unreachable {
                doing: doing.to_string(),
                message: describe_reqwest(&e),
            })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    async fn call_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        doing: &str,
    ) -> Result<Value, ChromaError> {
        let (status, value) = self.call(method, path, body, doing).await?;
        if status.is_success() {
            return Ok(value);
        }
        Err(status_error(doing, status, &value))
    }

    fn database_path(&self, database: &str) -> String {
        format!("/tenants/{}/databases/{}", self.tenant, database)
    }

    pub async fn heartbeat(&self) -> Result<(), ChromaError> {
        self.call_ok(Method::GET, "/heartbeat", None, "checking the heartbeat")
            .await
            .map(|_| ())
    }

    /// Records per write: our configured bound, lowered to the server's
    /// pre-flight `max_batch_size` when that is smaller (asked once).
    pub async fn batch_size(&self) -> Result<usize, ChromaError> {
        let server = self
            .server_batch_size
            .get_or_try_init(|| async {
                let value = self
                    .call_ok(
                        Method::GET,
                        "/pre-flight-checks",
                        None,
                        "asking the max batch size",
                    )
                    .await?;
                Ok::<usize, ChromaError>(
                    value
                        .get("max_batch_size")
                        .and_then(Value::as_u64)
                        .map_or(usize::MAX, |n| n as usize),
                )
            })
            .await?;
        Ok(self.max_batch_size.min(*server).max(1))
    }

    /// Creates the database if needed; 409 (already there) is success.
    async fn ensure_database(&self, database: &str) -> Result<(), ChromaError> {
        let doing = format!("checking database {database}");
        let (status, value) = self
            .call(Method::GET, &self.database_path(database), None, &doing)
            .await?;
        if status.is_success() {
            return Ok(());
        }
        if status != StatusCode::NOT_FOUND {
            return Err(status_error(&doing, status, &value));
        }
        let doing = format!("creating database {database}");
        let (status, value) = self
            .call(
                Method::POST,
                &format!("/tenants/{}/databases", self.tenant),
                Some(&json!({"name": database})),
                &doing,
            )
            .await?;
        if status.is_success() || status == StatusCode::CONFLICT {
            return Ok(());
        }
        Err(status_error(&doing, status, &value))
    }

    /// Gets or creates `name` in `database`, recording our embedding function
    /// on creation. An existing collection embedded with another model or
    /// dimension is refused, never polluted.
    pub async fn ensure_collection(
        &self,
        database: &str,
        name: &str,
        embedding: EmbeddingSpec<'_>,
    ) -> Result<CollectionHandle, ChromaError> {
        self.ensure_database(database).await?;
        let mut body = json!({
            "name": name,
            "get_or_create": true,
            "configuration": {
                "hnsw": {"space": "cosine"},
                "embedding_function": embedding.function,
            },
        });
        if !embedding.metadata.is_empty() {
            body["metadata"] = Value::Object(embedding.metadata.clone());
        }
        if let Some(sparse) = &embedding.sparse {
            body["schema"] = sparse_schema(embedding.function, sparse);
            if let Some(fields) = body.as_object_mut() {
                fields.remove("configuration");
            }
        }
        let doing = format!("opening collection {database}/{name}");
        let value = self
            .call_ok(
                Method::POST,
                &format!("{}/collections", self.database_path(database)),
                Some(&body),
                &doing,
            )
            .await?;
        let collection: CollectionJson =
            serde_json::from_value(value).map_err(|e| ChromaError::Status {
                doing: doing.clone(),
                status: 200,
                message: format!("unexpected collection JSON: {e}"),
            })?;
        if let Some(dimension) = collection.dimension
            && dimension as usize != embedding.dimension
        {
            return Err(ChromaError::Incompatible(format!(
                "collection {database}/{name} holds {dimension}-dimensional embeddings; \
                 {} makes {}-dimensional ones",
                embedding.model, embedding.dimension
            )));
        }
        let recorded = collection
            .configuration_json
            .as_ref()
            .and_then(|c| c.get("embedding_function"));
        if let Some(recorded) = recorded
            && let Some(theirs) = function_mismatch(recorded, embedding.function)
        {
            return Err(ChromaError::Incompatible(format!(
                "collection {database}/{name} is configured for {theirs}, not {}; write to \
                 another collection or give the source that collection's model",
                embedding.model
            )));
        }
        Ok(CollectionHandle {
            id: collection.id,
            name: collection.name,
            database: database.to_string(),
            metadata: collection.metadata.unwrap_or_default(),
        })
    }

    fn collection_path(&self, collection: &CollectionHandle) -> String {
        format!(
            "{}/collections/{}",
            self.database_path(&collection.database),
            collection.id
        )
    }

    /// Upserts one batch (the caller keeps batches within [`Self::batch_size`]).
    /// Batches other writers upsert into the same collection meanwhile may
    /// go in the same request ([`GroupCommit`]); this batch is written when
    /// this returns `Ok`.
    pub async fn upsert(
        &self,
        collection: &CollectionHandle,
        records: &[Record],
        embeddings: &[Vec<f32>],
    ) -> Result<(), ChromaError> {
        let part = Part {
            ids: records.iter().map(|r| r.id.clone()).collect(),
            documents: records.iter().map(|r| r.document.clone()).collect(),
            metadatas: records.iter().map(|r| r.metadata.clone()).collect(),
            embeddings: embeddings.to_vec(),
        };
        let path = self.collection_path(collection);
        let max_records = self.batch_size().await?;
        let upsert = format!("{path}/upsert");
        self.group_commit
            .write(&path, part, max_records, |parts| {
                let body = json!({
                    "ids": parts.iter().flat_map(|p| &p.ids).collect::<Vec<_>>(),
                    "documents": parts.iter().flat_map(|p| &p.documents).collect::<Vec<_>>(),
                    "metadatas": parts.iter().flat_map(|p| &p.metadatas).collect::<Vec<_>>(),
                    "embeddings": parts.iter().flat_map(|p| &p.embeddings).collect::<Vec<_>>(),
                });
                let doing = format!(
                    "upserting {} records into {}/{}",
                    parts.iter().map(|p| p.len()).sum::<usize>(),
                    collection.database,
                    collection.name
                );
                let upsert = &upsert;
                async move {
                    self.call_ok(Method::POST, upsert, Some(&body), &doing)
                        .await
                        .map(|_| ())
                }
            })
            .await
    }

    /// IDs and metadata of those of `ids` the collection holds.
    pub async fn records_by_id(
        &self,
        collection: &CollectionHandle,
        ids: &[String],
    ) -> Result<Vec<(String, Map<String, Value>)>, ChromaError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let doing = format!("reading {} records of {}", ids.len(), collection.name);
        let value = self
            .call_ok(
                Method::POST,
                &format!("{}/get", self.collection_path(collection)),
                Some(&json!({"ids": ids, "include": ["metadatas"]})),
                &doing,
            )
            .await?;
        get_result(value, &doing)
    }

    /// Up to `limit` records matching `filter`: their metadata and stored
    /// embeddings.
    pub async fn embeddings_matching(
        &self,
        collection: &CollectionHandle,
        filter: &Filter,
        limit: usize,
        doing: &str,
    ) -> Result<Vec<(Map<String, Value>, Vec<f32>)>, ChromaError> {
        let page = limit.max(1);
        let mut found = Vec::new();
        for offset in (0..).step_by(page) {
            let body = json!({
                "where": filter.to_where(),
                "include": ["metadatas", "embeddings"],
                "limit": page,
                "offset": offset,
            });
            let value = self.get(collection, &body, doing).await?;
            // An answer without the arrays reuses nothing: the chunks are
            // embedded as if nothing were stored.
            let empty = Vec::new();
            let metadatas = value
                .get("metadatas")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            let embeddings = value
                .get("embeddings")
                .and_then(Value::as_array)
                .unwrap_or(&empty);
            let count = metadatas.len();
            found.extend(
                metadatas
                    .iter()
                    .zip(embeddings)
                    .filter_map(|(metadata, embedding)| {
                        let metadata = metadata.as_object()?;
                        if !filter.admits(metadata) {
                            return None;
                        }
                        let vector: Vec<f32> = serde_json::from_value(embedding.clone()).ok()?;
                        Some((metadata.clone(), vector))
                    }),
            );
            if filter.is_exact() || found.len() >= limit || count < page {
                break;
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Deletes every record matching `filter`; how many there were.
    pub async fn delete_matching(
        &self,
        collection: &CollectionHandle,
        filter: &Filter,
        doing: &str,
    ) -> Result<usize, ChromaError> {
        let mut stale = Vec::new();
        self.scan(collection, filter, false, doing, |page| {
            stale.extend(page.into_iter().map(|(id, _)| id));
            true
        })
        .await?;
        for batch in stale.chunks(self.batch_size().await?) {
            self.delete(collection, batch).await?;
        }
        Ok(stale.len())
    }

    /// Every record matching `filter`, with its metadata (for small result
    /// sets, such as one record per document).
    pub async fn scan_all(
        &self,
        collection: &CollectionHandle,
        filter: &Filter,
        doing: &str,
    ) -> Result<Vec<(String, Map<String, Value>)>, ChromaError> {
        let mut found = Vec::new();
        self.scan(collection, filter, true, doing, |page| {
            found.extend(page);
            true
        })
        .await?;
        Ok(found)
    }

    /// Up to `limit` records matching `filter`, with their metadata.
    pub async fn find(
        &self,
        collection: &CollectionHandle,
        filter: &Filter,
        limit: usize,
        doing: &str,
    ) -> Result<Vec<(String, Map<String, Value>)>, ChromaError> {
        if filter.is_exact() {
            return self
                .get_page(collection, filter.to_where(), true, limit, 0, doing)
                .await;
        }
        let mut found = Vec::new();
        self.scan(collection, filter, true, doing, |page| {
            found.extend(page);
            found.len() < limit
        })
        .await?;
        found.truncate(limit);
        Ok(found)
    }

    /// Pages through every record matching `filter`, handing each page (of
    /// the records [`Filter::admits`]) to `visit` until it returns false.
    /// Memory holds one page at a time (`[chroma] read_page_size` records,
    /// [`crate::config::DEFAULT_READ_PAGE_SIZE`] by default).
    pub async fn scan(
        &self,
        collection: &CollectionHandle,
        filter: &Filter,
        with_metadata: bool,
        doing: &str,
        mut visit: impl FnMut(Vec<(String, Map<String, Value>)>) -> bool,
    ) -> Result<(), ChromaError> {
        let page = self.read_page;
        // A check reads the metadata, whether or not the caller wants it.
        let with_metadata = with_metadata || !filter.is_exact();
        for offset in (0..).step_by(page) {
            let found = self
                .get_page(
                    collection,
                    filter.to_where(),
                    with_metadata,
                    page,
                    offset,
                    doing,
                )
                .await?;
            let count = found.len();
            let admitted = found
                .into_iter()
                .filter(|(_, metadata)| filter.admits(metadata))
                .collect();
            if !visit(admitted) || count < page {
                break;
            }
        }
        Ok(())
    }

    async fn get_page(
        &self,
        collection: &CollectionHandle,
        filter: &Value,
        with_metadata: bool,
        limit: usize,
        offset: usize,
        doing: &str,
    ) -> Result<Vec<(String, Map<String, Value>)>, ChromaError> {
        let include: &[&str] = if with_metadata { &["metadatas"] } else { &[] };
        let body = json!({
            "where": filter,
            "include": include,
            "limit": limit,
            "offset": offset,
        });
        let value = self.get(collection, &body, doing).await?;
        get_result(value, doing)
    }

    /// `POST …/get` with `body`: Chroma's answer as JSON.
    async fn get(
        &self,
        collection: &CollectionHandle,
        body: &Value,
        doing: &str,
    ) -> Result<Value, ChromaError> {
        self.call_ok(
            Method::POST,
            &format!("{}/get", self.collection_path(collection)),
            Some(body),
            doing,
        )
        .await
    }

    /// Merges `metadatas` into existing records' metadata without touching
    /// their documents or embeddings (nothing is re-embedded).
    pub async fn update_metadata(
        &self,
        collection: &CollectionHandle,
        ids: &[String],
        metadatas: &[Map<String, Value>],
    ) -> Result<(), ChromaError> {
        if ids.is_empty() {
            return Ok(());
        }
        let doing = format!(
            "updating metadata of {} records in {}",
            ids.len(),
            collection.name
        );
        self.call_ok(
            Method::POST,
            &format!("{}/update", self.collection_path(collection)),
            Some(&json!({"ids": ids, "metadatas": metadatas})),
            &doing,
        )
        .await
        .map(|_| ())
    }

    pub async fn delete(
        &self,
        collection: &CollectionHandle,
        ids: &[String],
    ) -> Result<(), ChromaError> {
        if ids.is_empty() {
            return Ok(());
        }
        let doing = format!(
            "deleting {} stale records from {}",
            ids.len(),
            collection.name
        );
        self.call_ok(
            Method::POST,
            &format!("{}/delete", self.collection_path(collection)),
            Some(&json!({"ids": ids})),
            &doing,
        )
        .await
        .map(|_| ())
    }

    /// Sets `finished_ingest: true`, keeping the collection's other metadata
    /// (Chroma replaces the whole map on update).
    pub async fn mark_finished_ingest(
        &self,
        collection: &CollectionHandle,
    ) -> Result<(), ChromaError> {
        if collection.metadata.get("finished_ingest") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        let mut metadata = collection.metadata.clone();
        metadata.insert("finished_ingest".into(), Value::Bool(true));
        let doing = format!("marking {} as ingested", collection.name);
        self.call_ok(
            Method::PUT,
            &self.collection_path(collection),
            Some(&json!({"new_metadata": metadata})),
            &doing,
        )
        .await
        .map(|_| ())
    }
}

fn status_error(doing: &str, status: StatusCode, body: &Value) -> ChromaError {
    crate::metrics::request_error("chroma", crate::metrics::status_kind(status.as_u16()));
    let message = match body {
        Value::Object(map) => map
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| body.to_string()),
        Value::String(text) => text.chars().take(300).collect(),
        other => other.to_string(),
    };
    ChromaError::Status {
        doing: doing.to_string(),
        status: status.as_u16(),
        message,
    }
}

/// reqwest's Display includes the URL; keep the cause, which is what helps.
/// (Only called for failed Chroma requests, which it also counts.)
fn describe_reqwest(error: &reqwest::Error) -> String {
    let (kind, label) = if error.is_timeout() {
        ("timed out", "timeout")
    } else if error.is_connect() {
        ("connection failed", "connect")
    } else {
        ("request failed", "other")
    };
    crate::metrics::request_error("chroma", label);
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {cause}")
    }
}

/// Records as `get` returns them: ID and metadata.
type IdsAndMetadata = Vec<(String, Map<String, Value>)>;

/// IDs and metadata out of a `get` answer.
fn get_result(value: Value, doing: &str) -> Result<IdsAndMetadata, ChromaError> {
    let result: GetResult = serde_json::from_value(value).map_err(|e| ChromaError::Status {
        doing: doing.to_string(),
        status: 200,
        message: format!("unexpected get JSON: {e}"),
    })?;
    let metadatas = result.metadatas.unwrap_or_default();
    Ok(result
        .ids
        .into_iter()
        .enumerate()
        .map(|(index, id)| {
            let metadata = metadatas.get(index).cloned().flatten().unwrap_or_default();
            (id, metadata)
        })
        .collect())
}
