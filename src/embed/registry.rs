//! Every dense model this daemon can embed with, loaded once and shared by
//! all jobs: the built-in all-MiniLM-L6-v2 and each
//! `[embedding.models."NAME"]` of the config. A job looks its source's
//! model up by name; sources naming a model that is not here were refused
//! when they were created (`domain::plan`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokenizers::Tokenizer;
use tokio::sync::OnceCell;

use super::openai::{OpenAiEmbedder, OpenAiSettings};
use super::splade::Splade;
use super::{EmbedError, Embedder, LocalBert, Prompts};
use crate::chunk::Chunker;
use crate::config::{EmbeddingSettings, ModelConfig};
use crate::model::DEFAULT_EMBEDDING_MODEL;

enum Backend {
    /// In-process, blocking: run on `spawn_blocking`.
    Local(Arc<dyn Embedder>),
    /// An OpenAI-compatible endpoint.
    Remote(OpenAiEmbedder),
}

/// One model as jobs use it: how to embed, how to size chunks for it, and
/// how a Chroma client embeds queries the same way.
pub struct DenseModel {
    name: String,
    backend: Backend,
    chunker: Chunker,
    /// Counts tokens of prompts (when the model's tokenizer is known).
    tokenizer: Option<Tokenizer>,
    prompts: Prompts,
    /// Known up front (local models, `dimensions` set) or learned from the
    /// endpoint's first answer.
    dimension: OnceCell<usize>,
    /// The embedding-function record Chroma clients read (`configuration_json`).
    function: Value,
}

impl DenseModel {
    /// An in-process model (the built-in or a local directory).
    pub fn local(model: Arc<dyn Embedder>, tokenizer: Option<Tokenizer>, function: Value) -> Self {
        let chunker = Chunker::new(tokenizer.clone(), model.max_tokens());
        DenseModel {
            name: model.model_name().to_string(),
            chunker,
            tokenizer,
            prompts: model.prompts(),
            dimension: OnceCell::new_with(Some(model.dimension())),
            function,
            backend: Backend::Local(model),
        }
    }

    /// An endpoint model: chunks are sized by `tokenizer` when given, else
    /// by bytes (no token is shorter than a byte, so a chunk of at most
    /// `max_input_tokens` bytes always fits).
    pub fn remote(
        settings: OpenAiSettings,
        max_input_tokens: usize,
        tokenizer: Option<Tokenizer>,
        api_key_env: Option<&str>,
    ) -> Result<Self, EmbedError> {
        let chunker = match &tokenizer {
            Some(tokenizer) => Chunker::new(Some(tokenizer.clone()), max_input_tokens),
            None => Chunker::new(None, max_input_tokens).with_max_bytes(max_input_tokens),
        };
        let mut config = json!({
            "model_name": settings.api_model,
            "api_base": settings.url,
            // Chroma's clients read the key from this variable; ours is the
            // same variable the daemon reads, or Chroma's usual one.
            "api_key_env_var": api_key_env.unwrap_or("CHROMA_OPENAI_API_KEY"),
        });
        if let Some(dimensions) = settings.dimensions {
            config["dimensions"] = dimensions.into();
        }
        Ok(DenseModel {
            name: settings.name.clone(),
            chunker,
            tokenizer,
            prompts: Prompts::default(),
            dimension: OnceCell::new_with(settings.dimensions),
            function: json!({"type": "known", "name": "openai", "config": config}),
            backend: Backend::Remote(OpenAiEmbedder::new(settings)?),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's own prompts (used when a source's task sets none).
    pub fn prompts(&self) -> &Prompts {
        &self.prompts
    }

    /// The embedding-function record for collections written with this model.
    pub fn embedding_function(&self) -> &Value {
        &self.function
    }

    /// The chunker for this model with room left for `prompt`, which is
    /// prepended to every chunk before it is embedded.
    pub fn chunker(&self, prompt: Option<&str>) -> Chunker {
        let Some(prompt) = prompt.filter(|p| !p.is_empty()) else {
            return self.chunker.clone();
        };
        let tokens = match &self.tokenizer {
            Some(tokenizer) => tokenizer
                .encode_fast(prompt, false)
                .map_or(prompt.len(), |encoding| encoding.len()),
            None => prompt.len(),
        };
        self.chunker.reserving(tokens, self.tokenizer.is_none())
    }

    /// The length of this model's vectors: asks the endpoint once when the
    /// config does not say.
    pub async fn dimension(&self) -> Result<usize, EmbedError> {
        self.dimension
            .get_or_try_init(|| async {
                let (vectors, _) = self.embed(vec!["dimension probe".to_string()]).await?;
                Ok(vectors.first().map_or(0, Vec::len))
            })
            .await
            .copied()
    }

    /// One vector per text, in order, and how long the model computed (an
    /// endpoint's round trips count as computing).
    pub async fn embed(&self, texts: Vec<String>) -> Result<(Vec<Vec<f32>>, Duration), EmbedError> {
        match &self.backend {
            Backend::Local(model) => {
                let model = Arc::clone(model);
                tokio::task::spawn_blocking(move || {
                    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                    model.embed_timed(&texts)
                })
                .await
                .map_err(|e| EmbedError::Inference {
                    batch: 0,
                    message: format!("embedding task failed: {e}"),
                })?
            }
            Backend::Remote(client) => {
                let started = Instant::now();
                let vectors = client.embed(&texts).await?;
                if let Some(&expected) = self.dimension.get()
                    && let Some(wrong) = vectors.iter().find(|v| v.len() != expected)
                {
                    return Err(EmbedError::Inference {
                        batch: texts.len(),
                        message: format!(
                            "{} answered a {}-dimensional vector; the model makes {expected}",
                            self.name,
                            wrong.len()
                        ),
                    });
                }
                Ok((vectors, started.elapsed()))
            }
        }
    }
}

/// The models jobs may use, by the names sources give.
pub struct Models {
    models: BTreeMap<String, Arc<DenseModel>>,
    /// SPLADE models for sparse vectors.
    sparse: BTreeMap<String, Arc<Splade>>,
}

impl Models {
    /// The built-in model (already loaded) and every model of `settings`:
    /// local directories are loaded now, endpoint clients built (no request
    /// is made until a job embeds).
    pub fn load(
        settings: &EmbeddingSettings,
        builtin: Arc<LocalBert>,
        precision: bert_cpu::Precision,
    ) -> Result<Self, String> {
        let mut models = BTreeMap::new();
        let mut sparse = BTreeMap::new();
        let tokenizer = builtin.tokenizer();
        models.insert(
            DEFAULT_EMBEDDING_MODEL.to_string(),
            Arc::new(DenseModel::local(
                builtin,
                Some(tokenizer),
                json!({"type": "known", "name": "default", "config": {}}),
            )),
        );
        for (name, config) in &settings.models {
            let model = match config {
                ModelConfig::Splade(local) => {
                    let batch = local.batch_size.unwrap_or(settings.batch_size);
                    let model = Splade::load(name, &local.path, batch, precision)
                        .map_err(|e| format!("embedding model {name}: {e}"))?;
                    sparse.insert(name.clone(), Arc::new(model));
                    continue;
                }
                ModelConfig::Local(local) => {
                    let batch = local.batch_size.unwrap_or(settings.batch_size);
                    let model = LocalBert::load_named(name, &local.path, batch, precision)
                        .map_err(|e| format!("embedding model {name}: {e}"))?;
                    let tokenizer = model.tokenizer();
                    let function = json!({
                        "type": "known",
                        "name": "sentence_transformer",
                        "config": {
                            "model_name": name,
                            "device": "cpu",
                            "normalize_embeddings": model.normalizes(),
                            "kwargs": {},
                        },
                    });
                    DenseModel::local(Arc::new(model), Some(tokenizer), function)
                }
                ModelConfig::Openai(endpoint) => {
                    let mut client = OpenAiSettings::new(name, &endpoint.url);
                    if let Some(api_model) = &endpoint.api_model {
                        client.api_model = api_model.clone();
                    }
                    client.api_key = endpoint.resolve_key(name).map_err(|e| e.to_string())?;
                    client.dimensions = endpoint.dimensions;
                    client.max_batch = endpoint.max_batch;
                    client.max_batch_tokens = endpoint.max_batch_tokens;
                    client.max_concurrency = endpoint.max_concurrency;
                    client.timeout = Duration::from_secs_f64(endpoint.timeout_seconds);
                    client.max_retries = endpoint.max_retries;
                    let tokenizer = match &endpoint.tokenizer {
                        Some(path) => Some(Tokenizer::from_file(path).map_err(|e| {
                            format!("embedding model {name}: tokenizer {}: {e}", path.display())
                        })?),
                        None => None,
                    };
                    DenseModel::remote(
                        client,
                        endpoint.max_input_tokens,
                        tokenizer,
                        endpoint.api_key_env.as_deref(),
                    )
                    .map_err(|e| e.to_string())?
                }
            };
            models.insert(name.clone(), Arc::new(model));
        }
        Ok(Models { models, sparse })
    }

    /// Models from ready-made parts (tests, benchmarks).
    pub fn from_models(models: impl IntoIterator<Item = DenseModel>) -> Self {
        Models {
            models: models
                .into_iter()
                .map(|model| (model.name.clone(), Arc::new(model)))
                .collect(),
            sparse: BTreeMap::new(),
        }
    }

    /// A SPLADE model the config defines.
    pub fn sparse(&self, name: &str) -> Option<Arc<Splade>> {
        self.sparse.get(name).cloned()
    }

    pub fn get(&self, name: &str) -> Option<Arc<DenseModel>> {
        self.models.get(name).cloned()
    }

    /// The built-in model.
    pub fn builtin(&self) -> Arc<DenseModel> {
        self.get(DEFAULT_EMBEDDING_MODEL)
            .expect("the built-in model is always loaded")
    }
}
