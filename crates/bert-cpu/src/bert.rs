//! The BERT encoder forward pass with mean pooling, on packed sequences.
//!
//! Sequences are concatenated into one `[tokens, hidden]` matrix — no
//! padding, so no attention mask and no wasted FLOPs — and every dense layer
//! (fused QKV, attention output, FFN up and down) is a single GEMM over all
//! tokens. Attention is computed per sequence and head (scores = Q·Kᵀ,
//! softmax, ·V) with the same GEMM on small packed operands. With several
//! threads, the sequences are split into groups of about equal token counts
//! and each thread runs the whole forward pass on its group: no
//! synchronisation between layers, and each core keeps its own caches warm.

use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::bf16::{Packed, Precision, bf16_supported};
use crate::isa::Isa;
use crate::kernels::{gelu, layer_norm, softmax_rows};

/// What went wrong loading or running the model, as a sentence.
#[derive(Debug)]
pub struct BertError(pub String);

impl std::error::Error for BertError {}

impl std::fmt::Display for BertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(message: impl Into<String>) -> BertError {
    BertError(message.into())
}

/// The fields of a Hugging Face `config.json` that the forward pass uses.
#[derive(Clone, Debug, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_embedding_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab_size() -> usize {
    2
}
fn default_layer_norm_eps() -> f64 {
    1e-12
}
fn default_hidden_act() -> String {
    "gelu".to_string()
}
fn default_position_embedding_type() -> String {
    "absolute".to_string()
}

/// How a sequence's token states become one vector (sentence-transformers'
/// `pooling_mode_mean_tokens` / `pooling_mode_cls_token`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over every token, special tokens included.
    Mean,
    /// The first token's (`[CLS]`) state.
    Cls,
}

/// What the forward pass hands back per sequence.
#[derive(Clone, Copy)]
struct Pool {
    pooling: Pooling,
    normalize: bool,
    /// Every token's state instead (`tokens × hidden`), for heads that
    /// read them all (SPLADE).
    tokens: bool,
}

/// A dense layer with its weight packed (bf16 or f32, see [`crate::bf16`]).
struct Linear {
    weight: Packed,
    bias: Vec<f32>,
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value as one `[3·hidden, hidden]` weight.
    qkv: Linear,
    attention_output: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// A loaded BERT encoder.
pub struct Bert {
    config: BertConfig,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    /// Row 0 of the token-type embeddings (every token is type 0).
    token_type_embedding: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    eps: f32,
    precision: Precision,
}

/// Reads tensors by name, accepting an optional `bert.` prefix.
struct Weights<'a> {
    tensors: SafeTensors<'a>,
    prefix: &'static str,
    precision: Precision,
}

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, BertError> {
        let full = format!("{}{name}", self.prefix);
        let view = self
            .tensors
            .tensor(&full)
            .map_err(|e| error(format!("tensor {full}: {e}")))?;
        if view.shape() != shape {
            return Err(error(format!(
                "tensor {full}: shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        let data = view.data();
        match view.dtype() {
            Dtype::F32 => Ok(data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()),
            Dtype::F16 => Ok(data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            Dtype::BF16 => Ok(data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect()),
            other => Err(error(format!(
                "tensor {full}: dtype {other:?}, expected F32, F16 or BF16"
            ))),
        }
    }

    fn norm(&self, name: &str, width: usize) -> Result<Norm, BertError> {
        Ok(Norm {
            gamma: self.get(&format!("{name}.weight"), &[width])?,
            beta: self.get(&format!("{name}.bias"), &[width])?,
        })
    }

    fn linear(&self, names: &[&str], outputs: usize, inputs: usize) -> Result<Linear, BertError> {
        let mut weight = Vec::with_capacity(names.len() * outputs * inputs);
        let mut bias = Vec::with_capacity(names.len() * outputs);
        for name in names {
            weight.extend(self.get(&format!("{name}.weight"), &[outputs, inputs])?);
            bias.extend(self.get(&format!("{name}.bias"), &[outputs])?);
        }
        Ok(Linear {
            weight: Packed::from_rows(&weight, bias.len(), inputs, inputs, self.precision),
            bias,
        })
    }
}

impl Bert {
    /// Loads a `config.json` and `model.safetensors` pair.
    pub fn load(config: &Path, weights: &Path) -> Result<Bert, BertError> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| error(format!("reading {}: {e}", config.display())))?;
        let config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| error(format!("parsing {}: {e}", config.display())))?;
        let bytes = std::fs::read(weights)
            .map_err(|e| error(format!("reading {}: {e}", weights.display())))?;
        Bert::from_safetensors(config, &bytes)
    }

    /// Builds the model from the bytes of a safetensors file, in the
    /// fastest precision this CPU has ([`Precision::best`]).
    pub fn from_safetensors(config: BertConfig, bytes: &[u8]) -> Result<Bert, BertError> {
        Bert::from_safetensors_in(config, bytes, Precision::best())
    }

    /// [`Bert::from_safetensors`] in a chosen precision; bf16 needs a CPU
    /// with AVX-512 BF16.
    pub fn from_safetensors_in(
        config: BertConfig,
        bytes: &[u8],
        precision: Precision,
    ) -> Result<Bert, BertError> {
        let isa = Isa::configured().map_err(|e| error(e.to_string()))?;
        if precision == Precision::Bf16 && !bf16_supported() {
            return Err(error("bf16 precision needs a CPU with AVX-512 BF16"));
        }
        if precision == Precision::Bf16 && isa != Isa::Avx512Bf16 {
            return Err(error(format!(
                "bf16 precision needs the avx512bf16 path, but BERT_CPU_ISA={isa} is in effect"
            )));
        }
        if config.hidden_act != "gelu" {
            return Err(error(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                config.hidden_act
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(error(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                config.position_embedding_type
            )));
        }
        let (hidden, heads) = (config.hidden_size, config.num_attention_heads);
        if heads == 0 || !hidden.is_multiple_of(heads) {
            return Err(error(format!(
                "hidden_size {hidden} is not a multiple of {heads} heads"
            )));
        }
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| error(format!("reading safetensors: {e}")))?;
        let prefix = if tensors.names().iter().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        let weights = Weights {
            tensors,
            prefix,
            precision,
        };
        let word_embeddings = weights.get(
            "embeddings.word_embeddings.weight",
            &[config.vocab_size, hidden],
        )?;
        let position_embeddings = weights.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, hidden],
        )?;
        let token_types = weights.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, hidden],
        )?;
        let embedding_norm = weights.norm("embeddings.LayerNorm", hidden)?;
        let intermediate = config.intermediate_size;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let p = format!("encoder.layer.{i}");
                Ok(Layer {
                    qkv: weights.linear(
                        &[
                            &format!("{p}.attention.self.query"),
                            &format!("{p}.attention.self.key"),
                            &format!("{p}.attention.self.value"),
                        ],
                        hidden,
                        hidden,
                    )?,
                    attention_output: weights.linear(
                        &[&format!("{p}.attention.output.dense")],
                        hidden,
                        hidden,
                    )?,
                    attention_norm: weights
                        .norm(&format!("{p}.attention.output.LayerNorm"), hidden)?,
                    intermediate: weights.linear(
                        &[&format!("{p}.intermediate.dense")],
                        intermediate,
                        hidden,
                    )?,
                    output: weights.linear(
                        &[&format!("{p}.output.dense")],
                        hidden,
                        intermediate,
                    )?,
                    output_norm: weights.norm(&format!("{p}.output.LayerNorm"), hidden)?,
                })
            })
            .collect::<Result<Vec<_>, BertError>>()?;
        Ok(Bert {
            eps: config.layer_norm_eps as f32,
            token_type_embedding: token_types[..hidden].to_vec(),
            config,
            word_embeddings,
            position_embeddings,
            embedding_norm,
            layers,
            precision,
        })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// The precision the GEMMs' operands are in.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Mean-pooled (over all tokens of each sequence, special tokens
    /// included) and L2-normalised sentence embeddings, one per sequence of
    /// token ids, using up to `threads` threads.
    pub fn embed(&self, sequences: &[&[u32]], threads: usize) -> Result<Vec<Vec<f32>>, BertError> {
        self.embed_pooled(sequences, threads, Pooling::Mean, true)
    }

    /// Sentence embeddings pooled as `pooling` says, L2-normalised when
    /// `normalize` (what a sentence-transformers model's `Pooling` and
    /// `Normalize` modules do), using up to `threads` threads.
    pub fn embed_pooled(
        &self,
        sequences: &[&[u32]],
        threads: usize,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<Vec<f32>>, BertError> {
        self.run(
            sequences,
            threads,
            Pool {
                pooling,
                normalize,
                tokens: false,
            },
        )
    }

    /// Every token's final hidden state, per sequence (`tokens × hidden`,
    /// row-major), using up to `threads` threads.
    pub fn token_states(
        &self,
        sequences: &[&[u32]],
        threads: usize,
    ) -> Result<Vec<Vec<f32>>, BertError> {
        self.run(
            sequences,
            threads,
            Pool {
                pooling: Pooling::Mean,
                normalize: false,
                tokens: true,
            },
        )
    }

    fn run(
        &self,
        sequences: &[&[u32]],
        threads: usize,
        pool: Pool,
    ) -> Result<Vec<Vec<f32>>, BertError> {
        for (i, ids) in sequences.iter().enumerate() {
            if ids.is_empty() {
                return Err(error(format!("sequence {i} is empty")));
            }
            if ids.len() > self.config.max_position_embeddings {
                return Err(error(format!(
                    "sequence {i} has {} tokens, more than the model's {}",
                    ids.len(),
                    self.config.max_position_embeddings
                )));
            }
            if let Some(id) = ids
                .iter()
                .find(|&&id| id as usize >= self.config.vocab_size)
            {
                return Err(error(format!(
                    "sequence {i}: token id {id} out of vocabulary"
                )));
            }
        }
        let threads = threads.clamp(1, sequences.len().max(1));
        if threads == 1 {
            return Ok(self.forward(sequences, pool));
        }
        // Longest first onto the least-loaded thread: groups of about equal
        // token counts.
        let mut order: Vec<usize> = (0..sequences.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sequences[i].len()));
        let mut groups: Vec<(usize, Vec<usize>)> = vec![(0, Vec::new()); threads];
        for i in order {
            let lightest = groups
                .iter_mut()
                .min_by_key(|(tokens, _)| *tokens)
                .expect("threads ≥ 1");
            lightest.0 += sequences[i].len();
            lightest.1.push(i);
        }
        let mut vectors = vec![Vec::new(); sequences.len()];
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            let mut jobs = groups.into_iter().map(|(_, members)| members);
            let own = jobs.next().unwrap_or_default();
            for members in jobs {
                handles.push(scope.spawn(move || {
                    let group: Vec<&[u32]> = members.iter().map(|&i| sequences[i]).collect();
                    (members, self.forward(&group, pool))
                }));
            }
            let group: Vec<&[u32]> = own.iter().map(|&i| sequences[i]).collect();
            let mut results = vec![(own.clone(), self.forward(&group, pool))];
            for handle in handles {
                match handle.join() {
                    Ok(result) => results.push(result),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            for (members, group_vectors) in results {
                for (i, vector) in members.into_iter().zip(group_vectors) {
                    vectors[i] = vector;
                }
            }
        });
        Ok(vectors)
    }

    /// The forward pass on one thread. Inputs are validated by `embed`.
    fn forward(&self, sequences: &[&[u32]], pool: Pool) -> Vec<Vec<f32>> {
        let hidden = self.config.hidden_size;
        let heads = self.config.num_attention_heads;
        let head_dim = hidden / heads;
        let intermediate = self.config.intermediate_size;
        let tokens: usize = sequences.iter().map(|s| s.len()).sum();
        if tokens == 0 {
            return Vec::new();
        }

        // Embeddings: word + position + token type 0, then LayerNorm.
        let mut x = vec![0.0f32; tokens * hidden];
        let mut rows = x.chunks_exact_mut(hidden);
        for ids in sequences {
            for (position, &id) in ids.iter().enumerate() {
                let row = rows.next().expect("one row per token");
                let word = &self.word_embeddings[id as usize * hidden..(id as usize + 1) * hidden];
                let place = &self.position_embeddings[position * hidden..(position + 1) * hidden];
                for (((value, &w), &p), &t) in row
                    .iter_mut()
                    .zip(word)
                    .zip(place)
                    .zip(&self.token_type_embedding)
                {
                    *value = w + p + t;
                }
            }
        }
        let eps = self.eps;
        let norm = &self.embedding_norm;
        layer_norm(&mut x, None, &norm.gamma, &norm.beta, eps);

        let mut qkv = vec![0.0f32; tokens * 3 * hidden];
        let mut context = vec![0.0f32; tokens * hidden];
        let mut branch = vec![0.0f32; tokens * hidden];
        let mut inner = vec![0.0f32; tokens * intermediate];
        let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut scores = vec![0.0f32; longest * longest];
        let mut keys = Packed::new(self.precision);
        let mut values = Packed::new(self.precision);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let qkv_width = 3 * hidden;

        for layer in &self.layers {
            layer.qkv.weight.gemm(
                tokens,
                &x,
                hidden,
                Some(&layer.qkv.bias),
                &mut qkv,
                qkv_width,
            );
            let mut start = 0;
            for ids in sequences {
                let length = ids.len();
                let block = &qkv[start * qkv_width..(start + length) * qkv_width];
                let scores = &mut scores[..length * length];
                for head in 0..heads {
                    let column = head * head_dim;
                    keys.pack_rows(&block[hidden + column..], length, head_dim, qkv_width);
                    keys.gemm(length, &block[column..], qkv_width, None, scores, length);
                    softmax_rows(scores, length, scale);
                    values.pack_cols(&block[2 * hidden + column..], length, head_dim, qkv_width);
                    values.gemm(
                        length,
                        scores,
                        length,
                        None,
                        &mut context[start * hidden + column..],
                        hidden,
                    );
                }
                start += length;
            }
            let dense = &layer.attention_output;
            dense.weight.gemm(
                tokens,
                &context,
                hidden,
                Some(&dense.bias),
                &mut branch,
                hidden,
            );
            let norm = &layer.attention_norm;
            layer_norm(&mut x, Some(&branch), &norm.gamma, &norm.beta, eps);

            let up = &layer.intermediate;
            up.weight
                .gemm(tokens, &x, hidden, Some(&up.bias), &mut inner, intermediate);
            gelu(&mut inner);
            let down = &layer.output;
            down.weight.gemm(
                tokens,
                &inner,
                intermediate,
                Some(&down.bias),
                &mut branch,
                hidden,
            );
            let norm = &layer.output_norm;
            layer_norm(&mut x, Some(&branch), &norm.gamma, &norm.beta, eps);
        }

        // Pooling over each sequence's tokens, then L2 normalisation.
        let mut start = 0;
        sequences
            .iter()
            .map(|ids| {
                let rows = &x[start * hidden..(start + ids.len()) * hidden];
                start += ids.len();
                if pool.tokens {
                    return rows.to_vec();
                }
                let mut pooled = match pool.pooling {
                    Pooling::Cls => rows[..hidden].to_vec(),
                    Pooling::Mean => {
                        let mut mean = vec![0.0f32; hidden];
                        for row in rows.chunks_exact(hidden) {
                            for (sum, &value) in mean.iter_mut().zip(row) {
                                *sum += value;
                            }
                        }
                        let count = ids.len() as f32;
                        mean.iter_mut().for_each(|v| *v /= count);
                        mean
                    }
                };
                if pool.normalize {
                    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    pooled.iter_mut().for_each(|v| *v /= norm);
                }
                pooled
            })
            .collect()
    }
}

/// The masked-language-model head of a `BertForMaskedLM` checkpoint
/// (`cls.predictions.*`): dense + GELU + LayerNorm, then the decoder onto
/// the vocabulary (tied to the word embeddings unless the checkpoint has
/// its own). SPLADE models read their term weights from it.
pub struct MaskedLmHead {
    transform: Linear,
    norm: Norm,
    decoder: Packed,
    decoder_bias: Vec<f32>,
    hidden: usize,
    vocab: usize,
    eps: f32,
}

impl MaskedLmHead {
    /// The head from the same safetensors bytes as the encoder.
    pub fn from_safetensors_in(
        config: &BertConfig,
        bytes: &[u8],
        precision: Precision,
    ) -> Result<Self, BertError> {
        let tensors = SafeTensors::deserialize(bytes)
            .map_err(|e| error(format!("reading safetensors: {e}")))?;
        let names = tensors.names();
        let has = |name: &str| names.contains(&name);
        let encoder_prefix = if names.iter().any(|n| n.starts_with("bert.")) {
            "bert."
        } else {
            ""
        };
        let decoder_name = if has("cls.predictions.decoder.weight") {
            "cls.predictions.decoder.weight".to_string()
        } else {
            format!("{encoder_prefix}embeddings.word_embeddings.weight")
        };
        let bias_name = if has("cls.predictions.bias") {
            "cls.predictions.bias"
        } else {
            "cls.predictions.decoder.bias"
        };
        let weights = Weights {
            tensors,
            prefix: "",
            precision,
        };
        let (hidden, vocab) = (config.hidden_size, config.vocab_size);
        let transform = weights.linear(&["cls.predictions.transform.dense"], hidden, hidden)?;
        let norm = weights.norm("cls.predictions.transform.LayerNorm", hidden)?;
        let decoder = weights.get(&decoder_name, &[vocab, hidden])?;
        let decoder_bias = weights.get(bias_name, &[vocab])?;
        Ok(MaskedLmHead {
            transform,
            norm,
            decoder: Packed::from_rows(&decoder, vocab, hidden, hidden, precision),
            decoder_bias,
            hidden,
            vocab,
            eps: config.layer_norm_eps as f32,
        })
    }

    /// SPLADE term weights of one sequence from its token states
    /// (`tokens × hidden`, [`Bert::token_states`]): for each vocabulary
    /// entry, the maximum over tokens of log(1 + ReLU(logit)); the non-zero
    /// ones, by ascending index.
    pub fn splade(&self, states: &[f32]) -> Vec<(u32, f32)> {
        let (hidden, vocab) = (self.hidden, self.vocab);
        let tokens = states.len() / hidden;
        if tokens == 0 {
            return Vec::new();
        }
        let mut transformed = vec![0.0f32; tokens * hidden];
        self.transform.weight.gemm(
            tokens,
            states,
            hidden,
            Some(&self.transform.bias),
            &mut transformed,
            hidden,
        );
        gelu(&mut transformed);
        layer_norm(
            &mut transformed,
            None,
            &self.norm.gamma,
            &self.norm.beta,
            self.eps,
        );
        // A few tokens at a time: a token's logits are a vocabulary wide.
        let mut best = vec![0.0f32; vocab];
        let rows = 16usize;
        let mut logits = vec![0.0f32; rows * vocab];
        for start in (0..tokens).step_by(rows) {
            let count = rows.min(tokens - start);
            self.decoder.gemm(
                count,
                &transformed[start * hidden..],
                hidden,
                Some(&self.decoder_bias),
                &mut logits,
                vocab,
            );
            for row in logits[..count * vocab].chunks_exact(vocab) {
                for (best, &logit) in best.iter_mut().zip(row) {
                    if logit > 0.0 {
                        *best = best.max(logit.ln_1p());
                    }
                }
            }
        }
        best.into_iter()
            .enumerate()
            .filter(|(_, value)| *value > 0.0)
            .map(|(index, value)| (index as u32, value))
            .collect()
    }
}

#[cfg(test)]
mod check {
    use super::*;

    /// Accuracy and speed on token ids prepared elsewhere (no tokenizer here):
    /// `BERT_CPU_CHECK=ids.json` with `reference` (id sequences), `expected`
    /// (their sentence-transformers vectors) and `speed` (id sequences to
    /// time, batches of 16); `BERT_CPU_MODEL` the model directory.
    /// `cargo test -p bert-cpu -- --ignored --nocapture model_check`
    #[test]
    #[ignore]
    fn model_check() {
        let Some(path) = std::env::var_os("BERT_CPU_CHECK") else {
            return;
        };
        let dir =
            std::path::PathBuf::from(std::env::var_os("BERT_CPU_MODEL").expect("BERT_CPU_MODEL"));
        let model = Bert::load(&dir.join("config.json"), &dir.join("model.safetensors")).unwrap();
        let data: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let ids =
            |key: &str| -> Vec<Vec<u32>> { serde_json::from_value(data[key].clone()).unwrap() };
        let reference = ids("reference");
        let expected: Vec<Vec<f32>> = serde_json::from_value(data["expected"].clone()).unwrap();
        let sequences: Vec<&[u32]> = reference.iter().map(Vec::as_slice).collect();
        let got = model.embed(&sequences, 2).unwrap();
        let mut worst = f32::MAX;
        for (g, e) in got.iter().zip(&expected) {
            let dot: f32 = g.iter().zip(e).map(|(a, b)| a * b).sum();
            let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            worst = worst.min(dot / norm);
        }
        println!("min cosine vs reference: {worst:.7}");
        let speed = ids("speed");
        let sequences: Vec<&[u32]> = speed.iter().map(Vec::as_slice).collect();
        let cpu = || -> f64 {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = after.split_whitespace().collect();
            fields[11..13]
                .iter()
                .map(|f| f.parse::<f64>().unwrap())
                .sum::<f64>()
                / 100.0
        };
        for threads in [1, 2] {
            let cpu_start = cpu();
            let start = std::time::Instant::now();
            for batch in sequences.chunks(16) {
                model.embed(batch, threads).unwrap();
            }
            let seconds = start.elapsed().as_secs_f64();
            println!(
                "{threads} threads: {:.1} chunks/s wall, {:.1} chunks per CPU-second",
                sequences.len() as f64 / seconds,
                sequences.len() as f64 / (cpu() - cpu_start)
            );
        }
    }
}
