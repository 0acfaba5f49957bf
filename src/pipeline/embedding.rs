//! How one job embeds: its source's dense model (looked up by name in the
//! shared [`Models`]), the task's prompts, the sparse function, and the
//! chunker sized for that model with room for the document prompt.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::JobError;
use crate::chunk::Chunker;
use crate::embed::bm25::{Bm25, SparseVector};
use crate::embed::splade::Splade;
use crate::embed::{DenseModel, EmbedError, Models};
use crate::model::{BM25_MODEL, DEFAULT_EMBEDDING_MODEL, EmbeddingConfig, EmbeddingModel};
use crate::sink::chroma::{EmbeddingSpec, SparseIndex};
use crate::sink::records::EmbeddedWith;

/// A source's sparse vectors under `key`.
pub struct SparseEmbedding {
    pub key: String,
    pub function: SparseFunction,
}

pub enum SparseFunction {
    /// Chroma/BM25: cheap, computed inline.
    Bm25(Bm25),
    /// A SPLADE model: a forward pass, run on a blocking thread.
    Splade(Arc<Splade>),
}

impl SparseEmbedding {
    /// One sparse vector per text, in order.
    pub async fn vectors(&self, texts: Vec<String>) -> Result<Vec<SparseVector>, JobError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        match &self.function {
            SparseFunction::Bm25(bm25) => Ok(texts.iter().map(|t| bm25.embed(t)).collect()),
            SparseFunction::Splade(model) => {
                let model = Arc::clone(model);
                tokio::task::spawn_blocking(move || {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    model.embed(&texts)
                })
                .await
                .map_err(|e| JobError::Permanent(format!("sparse embedding task failed: {e}")))?
                .map_err(embed_error)
            }
        }
    }

    /// The record of the function, as the collection's schema declares it.
    fn record(&self) -> Value {
        match &self.function {
            SparseFunction::Bm25(bm25) => json!({
                "type": "known", "name": "chroma_bm25", "config": bm25.config(),
            }),
            SparseFunction::Splade(model) => json!({
                "type": "known",
                "name": "huggingface_sparse",
                "config": {
                    "model_name": model.name(),
                    "device": "cpu",
                    "task": "document",
                    "query_config": {"task": "query"},
                    "kwargs": {},
                },
            }),
        }
    }
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
        let sparse = match embedding.and_then(|e| e.sparse.as_ref()) {
            None => None,
            Some(sparse) => {
                let function = if sparse.model == BM25_MODEL {
                    SparseFunction::Bm25(Bm25::default())
                } else {
                    SparseFunction::Splade(models.sparse(&sparse.model).ok_or_else(|| {
                        JobError::Permanent(format!(
                            "the source's sparse model `{}` is no longer defined in this \
                             daemon's [embedding.models]",
                            sparse.model
                        ))
                    })?)
                };
                Some(SparseEmbedding {
                    key: sparse.key.clone(),
                    function,
                })
            }
        };
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
                function: sparse.record(),
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
