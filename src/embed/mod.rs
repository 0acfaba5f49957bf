//! Embed: chunk texts → vectors.
//!
//! [`Embedder`] is the seam; [`minilm::MiniLm`] runs all-MiniLM-L6-v2
//! in-process (the model Chroma's default embedding function uses, so Chroma
//! clients embed their queries the same way). Embedding is CPU-bound and
//! blocking: callers run it on `spawn_blocking`, never on the async runtime.

use std::time::Duration;

pub mod bm25;
pub mod minilm;
pub mod openai;

pub use minilm::MiniLm;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("loading model from {dir}: {message}")]
    Load { dir: String, message: String },
    #[error("embedding a batch of {batch} texts: {message}")]
    Inference { batch: usize, message: String },
}

pub trait Embedder: Send + Sync + 'static {
    /// The model name recorded on collections, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    fn model_name(&self) -> &str;
    /// Length of every vector.
    fn dimension(&self) -> usize;
    /// Longest input in tokens (special tokens included); longer texts are truncated.
    fn max_tokens(&self) -> usize;
    /// One L2-normalised vector per text, in order. Blocking.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_timed(texts).map(|(vectors, _)| vectors)
    }

    /// [`Embedder::embed`], also telling how long the call computed, as
    /// opposed to waiting its turn for a shared embedder (the job's
    /// `embed_ms` vs `embed_wait_ms`). Blocking.
    fn embed_timed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Duration), EmbedError>;
}
