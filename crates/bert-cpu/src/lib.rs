//! A BERT encoder (as used by sentence-transformers' all-MiniLM-L6-v2) run on
//! the CPU with our own kernels.
//!
//! - [`kernels`]: a packed, cache-blocked SGEMM (`C = A·B + bias`, B packed
//!   once into 32-column panels) with an AVX-512 micro-kernel selected at run
//!   time and a portable fallback; vectorisable GELU, softmax, LayerNorm.
//! - [`bf16`]: a bf16 GEMM with an AVX-512 BF16 micro-kernel (`vdpbf16ps`,
//!   twice the multiply-adds of an f32 FMA) and [`bf16::Packed`], the
//!   operand type the forward pass uses: bf16 where the CPU has it, else f32.
//! - [`bert`]: weights from safetensors, embeddings, six (or however many)
//!   encoder layers and mean pooling, on *packed* token sequences: the
//!   sequences of a batch are concatenated (no padding) so every dense layer
//!   is one GEMM over all real tokens, and attention runs per sequence.
//!
//! - [`tune`]: times the paths this CPU has on the model's GEMM shapes, so
//!   a program can run the fastest by measurement ([`Isa::select`]).
//!
//! This crate is separate from the daemon so that it can be built optimised
//! even in dev/test profiles (see the workspace `Cargo.toml`): unoptimised
//! kernels would be ~50× slower and the test suite embeds a lot.
//!
//! **Invariant:** no IO beyond reading the weights handed in (and
//! `/proc/cpuinfo` for [`tune::cpu_identity`]); no global state besides the
//! cached CPU feature detection and the path in effect ([`Isa::configured`]).

pub mod bert;
pub mod bf16;
mod crate_gemm;
pub mod isa;
pub mod kernels;
pub mod tune;

pub use bert::{Bert, BertConfig, BertError, MaskedLmHead, Pooling};
pub use bf16::Precision;
pub use isa::{Isa, IsaError};
