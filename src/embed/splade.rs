//! SPLADE sparse vectors (e.g. `prithivida/Splade_PP_en_v1`) on our CPU
//! kernels: the BERT encoder's token states through the checkpoint's
//! masked-language-model head, then for each vocabulary entry the maximum
//! over the text's tokens of log(1 + ReLU(logit)) — what
//! sentence-transformers' `SparseEncoder` (MLMTransformer + SpladePooling
//! "max") computes. The vector's indices are vocabulary ids.

use std::path::Path;
use std::sync::Mutex;

use bert_cpu::{Bert, BertConfig, MaskedLmHead, Precision};
use tokenizers::{Tokenizer, TruncationParams};

use super::EmbedError;
use super::bm25::SparseVector;

/// The window when the model directory names none (SPLADE models are
/// trained on 256–512 tokens).
const DEFAULT_MAX_TOKENS: usize = 512;

pub struct Splade {
    name: String,
    bert: Bert,
    head: MaskedLmHead,
    tokenizer: Tokenizer,
    /// Texts per forward pass: a pass holds every token's state of its
    /// texts, so a whole write batch at once could take gigabytes.
    batch_size: usize,
    threads: usize,
    /// One forward pass at a time: each already uses every core.
    forward_pass: Mutex<()>,
}

impl Splade {
    /// Loads `config.json`, `tokenizer.json` and `model.safetensors` (a
    /// `BertForMaskedLM` checkpoint) from `dir`, known to sources as `name`.
    pub fn load(
        name: &str,
        dir: &Path,
        batch_size: usize,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        let fail = |message: String| EmbedError::Load {
            dir: dir.display().to_string(),
            message,
        };
        let config: BertConfig = serde_json::from_str(
            &std::fs::read_to_string(dir.join("config.json"))
                .map_err(|e| fail(format!("reading config.json: {e}")))?,
        )
        .map_err(|e| fail(format!("parsing config.json: {e}")))?;
        let window = std::fs::read_to_string(dir.join("sentence_bert_config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|config| config.get("max_seq_length")?.as_u64())
            .map_or(DEFAULT_MAX_TOKENS, |length| length as usize)
            .min(config.max_position_embeddings);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("reading tokenizer.json: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: window,
                ..TruncationParams::default()
            }))
            .map_err(|e| fail(format!("configuring truncation: {e}")))?;
        let weights = std::fs::read(dir.join("model.safetensors"))
            .map_err(|e| fail(format!("reading model.safetensors: {e}")))?;
        let head = MaskedLmHead::from_safetensors_in(&config, &weights, precision)
            .map_err(|e| fail(format!("the masked-LM head: {e}")))?;
        let bert = Bert::from_safetensors_in(config, &weights, precision)
            .map_err(|e| fail(format!("building the BERT model: {e}")))?;
        Ok(Splade {
            name: name.to_string(),
            bert,
            head,
            tokenizer,
            batch_size: batch_size.max(1),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            forward_pass: Mutex::new(()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One sparse vector per text, in order, `batch_size` texts per
    /// forward pass. Blocking.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<SparseVector>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            vectors.extend(self.embed_batch(batch)?);
        }
        Ok(vectors)
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<SparseVector>, EmbedError> {
        let fail = |message: String| EmbedError::Inference {
            batch: texts.len(),
            message,
        };
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| fail(format!("tokenizing: {e}")))?;
        let sequences: Vec<&[u32]> = encodings.iter().map(|e| e.get_ids()).collect();
        let states = {
            let _turn = self
                .forward_pass
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            self.bert
                .token_states(&sequences, self.threads)
                .map_err(|e| fail(e.to_string()))?
        };
        Ok(states
            .iter()
            .map(|states| {
                let (indices, values) = self
                    .head
                    .splade(states)
                    .into_iter()
                    .map(|(index, value)| (index, f64::from(value)))
                    .unzip();
                SparseVector { indices, values }
            })
            .collect())
    }
}
