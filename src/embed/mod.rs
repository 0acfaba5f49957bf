//! Embed: chunk texts → vectors.
//!
//! [`Embedder`] is the seam for in-process models: [`local::LocalBert`] runs
//! all-MiniLM-L6-v2 (the built-in: the model Chroma's default embedding
//! function uses, so Chroma clients embed their queries the same way) and
//! any BERT-family model directory on our CPU kernels. In-process embedding
//! is CPU-bound and blocking: callers run it on `spawn_blocking`, never on
//! the async runtime. [`openai::OpenAiEmbedder`] is the async client of
//! OpenAI-compatible endpoints. [`registry::Models`] holds every model the
//! config defines, each loaded once, behind one async [`registry::DenseModel`].
//! [`bm25`] computes Chroma/BM25 sparse vectors; [`splade::Splade`] runs
//! SPLADE models on the same kernels. [`kernels`] decides which kernel path
//! those run on (forced, or measured once per CPU).

use std::time::Duration;

pub mod bm25;
pub mod kernels;
pub mod local;
pub mod openai;
pub mod registry;
pub mod splade;

pub use local::{LocalBert, MiniLm};
pub use registry::{DenseModel, Models};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("loading model from {dir}: {message}")]
    Load { dir: String, message: String },
    #[error("embedding a batch of {batch} texts: {message}")]
    Inference { batch: usize, message: String },
    #[error(transparent)]
    Remote(#[from] openai::RemoteError),
}

impl EmbedError {
    /// Whether trying again later may succeed (an endpoint that was busy or
    /// down), as opposed to a model or request that cannot work.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            EmbedError::Remote(openai::RemoteError::Transient { .. })
        )
    }
}

/// The prompts a model expects before texts (E5's `passage: `/`query: `,
/// a sentence-transformers model's `prompts`), used when a source's task
/// names none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prompts {
    pub document: Option<String>,
    pub query: Option<String>,
}

pub trait Embedder: Send + Sync + 'static {
    /// The model name recorded on collections, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    fn model_name(&self) -> &str;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Longest input in tokens (special tokens included); longer texts are truncated.
    fn max_tokens(&self) -> usize;
    /// The model's own prompts (none by default).
    fn prompts(&self) -> Prompts {
        Prompts::default()
    }
    /// One vector per text, in order (L2-normalised when the model says so). Blocking.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_timed(texts).map(|(vectors, _)| vectors)
    }

    /// [`Embedder::embed`], also telling how long the call computed, as
    /// opposed to waiting its turn for a shared embedder (the job's
    /// `embed_ms` vs `embed_wait_ms`). Blocking.
    fn embed_timed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Duration), EmbedError>;
}
