//! How one job embeds: its source's dense model (looked up by name in the
//! shared [`Models`]), the task's prompts, the sparse function, and the
//! chunker sized for that model with room for the document prompt.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::JobError;
use crate::chunk::Chunker;
use crate::embed::bm25::Bm25;
use crate::embed::{DenseModel, EmbedError, Models};
use crate::model::{DEFAULT_EMBEDDING_MODEL, EmbeddingConfig, EmbeddingModel};
use crate::sink::chroma::{EmbeddingSpec, SparseIndex};
use crate::sink::records::EmbeddedWith;

/// A source's sparse vectors: Chroma/BM25 under `key`.
pub struct SparseEmbedding {
    pub key: String,
    pub bm25: Bm25,
}

pub struct JobEmbedding {
    pub model: Arc<DenseModel>,
    task_name: Option<String>,
    /// The task's prompt, else the model's own.
    document_prompt: Option<String>,
    query_prompt: Option<String>,
    pub sparse: Option<SparseEmbedding>,
    /// Sized for the model, leaving room for the document prompt.
    pub chunker: Chunker,
}

impl JobEmbedding {
    /// The embedding a source asks for (`embedding`, else `embedding_model`,
    /// else the built-in).
    pub fn for_source(
        models: &Models,
        embedding: Option<&EmbeddingConfig>,
        embedding_model: Option<&EmbeddingModel>,
    ) -> Result<Self, JobError> {
        let dense = embedding.map(|e| &e.dense).or(embedding_model);
        let name = dense.map_or(DEFAULT_EMBEDDING_MODEL, |d| d.model.as_str());
        let model = models.get(name).ok_or_else(|| {
            JobError::Permanent(format!(
                "the source's embedding model `{name}` is no longer defined in this daemon's \
                 [embedding.models]"
            ))
        })?;
        let task = dense.and_then(|d| d.task.as_ref());
        let document_prompt = task
            .and_then(|t| t.document_prompt.clone())
            .or_else(|| model.prompts().document.clone())
            .filter(|p| !p.is_empty());
        let query_prompt = task
            .and_then(|t| t.query_prompt.clone())
            .or_else(|| model.prompts().query.clone())
            .filter(|p| !p.is_empty());
        let sparse = embedding
            .and_then(|e| e.sparse.as_ref())
            .map(|sparse| SparseEmbedding {
                key: sparse.key.clone(),
                bm25: Bm25::default(),
            });
        Ok(JobEmbedding {
            chunker: model.chunker(document_prompt.as_deref()),
            task_name: task.map(|t| t.task_name.clone()),
            document_prompt,
            query_prompt,
            sparse,
            model,
        })
    }

    /// What the records of this job say about how they were embedded.
    pub fn embedded_with(&self) -> EmbeddedWith<'_> {
        EmbeddedWith {
            model: self.model.name(),
            document_prompt: self.document_prompt.as_deref(),
            sparse_key: self.sparse.as_ref().map(|s| s.key.as_str()),
        }
    }

    /// How the collection must be (or is created) for this job's vectors.
    /// Asks an endpoint model for its dimension if the config does not say.
    pub async fn collection_spec(&self) -> Result<EmbeddingSpec<'_>, JobError> {
        let dimension = self.model.dimension().await.map_err(embed_error)?;
        let mut metadata = Map::new();
        metadata.insert("embedding_model".into(), self.model.name().into());
        let mut put = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                metadata.insert(name.into(), Value::from(value.as_str()));
            }
        };
        put("embedding_task", &self.task_name);
        put("embedding_document_prompt", &self.document_prompt);
        put("embedding_query_prompt", &self.query_prompt);
        Ok(EmbeddingSpec {
            model: self.model.name(),
            dimension,
            function: self.model.embedding_function(),
            metadata,
            sparse: self.sparse.as_ref().map(|sparse| SparseIndex {
                key: &sparse.key,
                config: sparse.bm25.config(),
            }),
        })
    }
}

/// An embedding failure as the job sees it: an endpoint that was busy or
/// down is retried later; anything else fails the job with the reason.
pub fn embed_error(error: EmbedError) -> JobError {
    if error.is_transient() {
        JobError::Transient(error.to_string())
    } else {
        JobError::Permanent(error.to_string())
    }
}
