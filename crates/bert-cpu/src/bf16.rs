//! Dense-layer weights and their GEMM: bfloat16 where the CPU has
//! AVX-512 BF16, f32 elsewhere.
//!
//! **Why bf16.** The four dense layers are ~90% of the model's FLOPs. One
//! `vdpbf16ps` does 32 multiply-adds (pairs of bf16, summed into 16 f32
//! lanes) where `vfmadd…ps` does 16: on AMD Zen 4 we measured 155 vs 65
//! GFLOP/s per core in a register-bound loop, and the weights take half the
//! cache. Products are exact and sums stay f32; only the operands are
//! rounded to 8 bits of mantissa, which moves the sentence embeddings by a
//! cosine of ~1e-5 (the accuracy test's bar is 1e-3). Attention's own small
//! GEMMs, softmax, LayerNorm and pooling stay f32.
//!
//! **Layout.** [`PackedBf16`] keeps B in 32-column panels like
//! [`PackedB`], but k-major by *pairs*: per pair of k-steps 64 bf16 — for
//! columns 0..16 then 16..32, each column's two k values side by side, the
//! operand `vdpbf16ps` wants. A is converted once per call into a row-major
//! bf16 copy (a thread-local scratch), whose pairs the micro-kernel
//! broadcasts as u32.
//!
//! `BERT_CPU_F32=1` keeps the weights f32 (comparisons, benchmarks), as does
//! any `BERT_CPU_ISA` other than `avx512bf16`.

// The bf16 kernel is x86-64 only (`vdpbf16ps`); elsewhere its types are
// built but never multiplied (`bf16_supported` is false, so no model loads
// in bf16), and the compiler would call them unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]

use std::sync::OnceLock;

use crate::isa::Isa;
use crate::kernels::{Aligned, Init, MR, NR, PackedB, gemm, prepare};

/// k-steps per block (pairs: half that). A block's panel slab for the
/// widest layer (1536 columns) is 768 KiB of bf16, inside a 1 MiB L2.
const KC: usize = 256;

/// The operands' precision in the model's GEMMs (sums are f32 either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// Everything f32: the reference computation.
    F32,
    /// Dense weights and attention operands rounded to bf16 (AVX-512 BF16).
    Bf16,
}

impl Precision {
    /// [`Precision::Bf16`] where [`bf16_enabled`], else [`Precision::F32`].
    pub fn best() -> Precision {
        if bf16_enabled() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Whether [`Precision::best`] is bf16 here: the `avx512bf16` path is in
/// use ([`Isa::active`]) and `BERT_CPU_F32` is not set (to a non-empty value
/// other than `0`).
pub fn bf16_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        let forced_f32 = std::env::var("BERT_CPU_F32").is_ok_and(|v| !v.is_empty() && v != "0");
        !forced_f32 && bf16_allowed()
    })
}

/// Whether the active path may run bf16 GEMMs: only `avx512bf16` (a path
/// forced to `avx512` or `avx2` means f32, even on a CPU that has BF16).
pub fn bf16_allowed() -> bool {
    Isa::active() == Isa::Avx512Bf16
}

/// Whether this CPU can run the bf16 kernel at all.
pub fn bf16_supported() -> bool {
    Isa::Avx512Bf16.supported()
}

/// f32 → bf16, rounding to nearest even (what `vcvtne2ps2bf16` does).
/// The model's values are finite; NaN is not special-cased.
fn to_bf16(value: f32) -> u16 {
    let bits = value.to_bits();
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// bf16 → f32 (exact).
pub fn from_bf16(value: u16) -> f32 {
    f32::from_bits(u32::from(value) << 16)
}

/// The right-hand operand of [`gemm_bf16`]: B in bf16, packed by pairs of
/// k-steps into 32-column panels (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct PackedBf16 {
    n: usize,
    k: usize,
    storage: Aligned<u16>,
}

/// Where B[kk][j] goes in a [`PackedBf16`] of `pairs` k-pairs: per panel
/// and pair, a slab of 64 bf16 holding each of the 32 columns' two k values
/// side by side (column c at 2c, 2c + 1 — columns 0..16 then 16..32, the
/// two `vdpbf16ps` operands). The packers below write this layout in
/// output order; this is its definition, which the tests check them by.
#[cfg(test)]
fn packed_index(pairs: usize, kk: usize, j: usize) -> usize {
    let (panel, column) = (j / NR, j % NR);
    (panel * pairs + kk / 2) * 2 * NR + (column / 16) * 32 + (column % 16) * 2 + kk % 2
}

impl PackedBf16 {
    /// Packs `B = Wᵀ` from a row-major `[n, k]` matrix `w` (row stride `ld`),
    /// rounding every weight to bf16.
    pub fn from_rows(w: &[f32], n: usize, k: usize, ld: usize) -> PackedBf16 {
        let mut packed = PackedBf16::default();
        packed.pack_rows(w, n, k, ld);
        packed
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn k(&self) -> usize {
        self.k
    }

    fn reset(&mut self, n: usize, k: usize) {
        self.n = n;
        self.k = k;
        self.storage.reset(n.div_ceil(NR) * k.div_ceil(2) * 2 * NR);
    }

    fn panels(&self) -> &[u16] {
        self.storage.as_slice()
    }

    fn panels_mut(&mut self) -> &mut [u16] {
        self.storage.as_mut_slice()
    }

    /// Re-packs (reusing the allocation) `B = Wᵀ` from a row-major `[n, k]`
    /// matrix with row stride `ld`: attention's keys, per head.
    pub fn pack_rows(&mut self, w: &[f32], n: usize, k: usize, ld: usize) {
        assert!(ld >= k, "row stride {ld} < k {k}");
        assert!(n == 0 || w.len() >= (n - 1) * ld + k, "w too short");
        self.reset(n, k);
        let pairs = k.div_ceil(2);
        let data = self.panels_mut();
        for j in 0..n {
            // Column j's pair p is at `first + p * 2 * NR`, its two values
            // adjacent: a row's pairs are strided copies, no index math.
            let first = (j / NR) * pairs * 2 * NR + (j % NR) * 2;
            let row = &w[j * ld..j * ld + k];
            let mut row_pairs = row.chunks_exact(2);
            for (p, pair) in (&mut row_pairs).enumerate() {
                let at = first + p * 2 * NR;
                data[at] = to_bf16(pair[0]);
                data[at + 1] = to_bf16(pair[1]);
            }
            if let [last] = row_pairs.remainder() {
                data[first + (pairs - 1) * 2 * NR] = to_bf16(*last);
            }
        }
    }

    /// Re-packs (reusing the allocation) B from a row-major `[k, n]` matrix
    /// with row stride `ld`: attention's values, per head.
    pub fn pack_cols(&mut self, b: &[f32], k: usize, n: usize, ld: usize) {
        assert!(ld >= n, "row stride {ld} < n {n}");
        assert!(k == 0 || b.len() >= (k - 1) * ld + n, "b too short");
        self.reset(n, k);
        let pairs = k.div_ceil(2);
        let data = self.panels_mut();
        for p in 0..pairs {
            // Rows 2p and 2p + 1 of B interleave into each panel's slab for
            // pair p (a last, unpaired row leaves the odd halves zero): one
            // u32 per column, even value low. Whole u32s, so the loop
            // vectorises (bf16 rounding is integer arithmetic).
            let even = &b[2 * p * ld..2 * p * ld + n];
            let odd = (2 * p + 1 < k).then(|| &b[(2 * p + 1) * ld..(2 * p + 1) * ld + n]);
            for (panel, evens) in even.chunks(NR).enumerate() {
                let slab =
                    &mut data[(panel * pairs + p) * 2 * NR..(panel * pairs + p + 1) * 2 * NR];
                // SAFETY: every bit pattern is a valid u16 and u32; the
                // storage is 64-byte aligned and slabs are 128 bytes, so the
                // prefix is empty (asserted) and the cast covers the slab.
                let (prefix, slab, _) = unsafe { slab.align_to_mut::<u32>() };
                assert!(prefix.is_empty(), "bf16 panels are 64-byte aligned");
                match odd {
                    Some(odd) => {
                        let odds = &odd[panel * NR..panel * NR + evens.len()];
                        for ((out, &e), &o) in slab.iter_mut().zip(evens).zip(odds) {
                            *out = u32::from(to_bf16(e)) | (u32::from(to_bf16(o)) << 16);
                        }
                    }
                    None => {
                        for (out, &e) in slab.iter_mut().zip(evens) {
                            *out = u32::from(to_bf16(e));
                        }
                    }
                }
            }
        }
    }
}

/// A packed right-hand operand in a given [`Precision`]: the dense layers'
/// weights, and attention's keys and values per head.
#[derive(Clone, Debug)]
pub enum Packed {
    F32(PackedB),
    Bf16(PackedBf16),
}

impl Packed {
    /// An empty operand to [`Packed::pack_rows`] / [`Packed::pack_cols`] into.
    pub fn new(precision: Precision) -> Packed {
        match precision {
            Precision::F32 => Packed::F32(PackedB::default()),
            Precision::Bf16 => Packed::Bf16(PackedBf16::default()),
        }
    }

    /// Packs `Wᵀ` from a row-major PyTorch `[n, k]` weight (row stride `ld`).
    pub fn from_rows(w: &[f32], n: usize, k: usize, ld: usize, precision: Precision) -> Packed {
        let mut packed = Packed::new(precision);
        packed.pack_rows(w, n, k, ld);
        packed
    }

    /// Re-packs `B = Wᵀ` from a row-major `[n, k]` matrix (row stride `ld`).
    pub fn pack_rows(&mut self, w: &[f32], n: usize, k: usize, ld: usize) {
        match self {
            Packed::F32(b) => b.pack_rows(w, n, k, ld),
            Packed::Bf16(b) => b.pack_rows(w, n, k, ld),
        }
    }

    /// Re-packs B from a row-major `[k, n]` matrix (row stride `ld`).
    pub fn pack_cols(&mut self, b: &[f32], k: usize, n: usize, ld: usize) {
        match self {
            Packed::F32(packed) => packed.pack_cols(b, k, n, ld),
            Packed::Bf16(packed) => packed.pack_cols(b, k, n, ld),
        }
    }

    /// `C = A·B + bias` (see [`gemm`] for the operands' shapes and strides).
    pub fn gemm(
        &self,
        m: usize,
        a: &[f32],
        lda: usize,
        bias: Option<&[f32]>,
        c: &mut [f32],
        ldc: usize,
    ) {
        match self {
            Packed::F32(b) => gemm(m, a, lda, b, bias, c, ldc),
            Packed::Bf16(b) => gemm_bf16(m, a, lda, b, bias, c, ldc),
        }
    }
}

thread_local! {
    /// A in bf16 pairs, row-major, rows padded to a multiple of `MR` with
    /// zeros; reused across calls (the forward pass calls `gemm_bf16` ~100
    /// times per batch with A up to a few MiB).
    static A_PAIRS: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `C[i][j] = Σ_kk bf16(A[i][kk]) · B[kk][j] + bias[j]` with f32 sums, for
/// `i < m`, `j < b.n()`, overwriting C; other columns are left alone.
///
/// # Panics
/// If the CPU lacks AVX-512 BF16 ([`bf16_supported`]); callers go through
/// [`Packed`] or check [`bf16_enabled`].
pub fn gemm_bf16(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedBf16,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    let (n, k) = (b.n, b.k);
    assert!(bf16_supported(), "this CPU has no AVX-512 BF16");
    if !prepare(m, n, k, a, lda, bias, c, ldc) {
        return;
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("bf16_supported() is false off x86-64");
    #[cfg(target_arch = "x86_64")]
    A_PAIRS.with_borrow_mut(|a_pairs| {
        let pairs = k.div_ceil(2);
        let padded_rows = m.div_ceil(MR) * MR;
        a_pairs.clear();
        a_pairs.resize(padded_rows * pairs, 0);
        // SAFETY: AVX-512 BF16 is present (asserted above); rows < m of A
        // are inside `a` (asserted: (m-1)·lda + k).
        unsafe { convert_rows(m, a, lda, k, a_pairs) };
        let panels = n.div_ceil(NR);
        let b_data = b.panels();
        for p0 in (0..pairs).step_by(KC / 2) {
            let pc = (KC / 2).min(pairs - p0);
            for i0 in (0..m).step_by(MR) {
                let rows = MR.min(m - i0);
                let a_block = &a_pairs[i0 * pairs + p0..(i0 + MR - 1) * pairs + p0 + pc];
                for panel in 0..panels {
                    let cols = NR.min(n - panel * NR);
                    let slab =
                        &b_data[(panel * pairs + p0) * 2 * NR..(panel * pairs + p0 + pc) * 2 * NR];
                    let c_offset = i0 * ldc + panel * NR;
                    let c_tile = &mut c[c_offset..c_offset + (rows - 1) * ldc + cols];
                    let init = Init::of_block(p0 == 0, bias, panel, cols);
                    let tile = TileBf16 {
                        pairs: pc,
                        a: a_block,
                        stride: pairs,
                        b: slab,
                        rows,
                        cols,
                        ldc,
                        init,
                    };
                    // SAFETY: as above for the CPU; the slices span the tile
                    // as `tile_bf16` requires (built just above).
                    unsafe { tile_bf16(&tile, c_tile) };
                }
            }
        }
    });
}

/// Converts rows `< m` of A (`k` columns, stride `lda`) into bf16 pairs,
/// `a_pairs[i * pairs + p]` (low half: the even k-step; the odd half of a
/// last, unpaired k-step stays zero). `a_pairs` is zeroed by the caller.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn convert_rows(m: usize, a: &[f32], lda: usize, k: usize, a_pairs: &mut [u32]) {
    use std::arch::x86_64::*;
    let pairs = k.div_ceil(2);
    for (i, out) in a_pairs.chunks_exact_mut(pairs).take(m).enumerate() {
        let row = &a[i * lda..i * lda + k];
        let mut chunks = row.chunks_exact(32);
        let mut outs = out.chunks_exact_mut(16);
        for (chunk, out) in (&mut chunks).zip(&mut outs) {
            // SAFETY: `chunk` holds 32 floats and `out` 16 u32 (64 bytes).
            unsafe {
                let low = _mm512_loadu_ps(chunk.as_ptr());
                let high = _mm512_loadu_ps(chunk.as_ptr().add(16));
                let converted: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(high, low));
                _mm512_storeu_si512(out.as_mut_ptr().cast(), converted);
            }
        }
        let done = row.len() - chunks.remainder().len();
        for (p, pair) in chunks.remainder().chunks(2).enumerate() {
            let even = u32::from(to_bf16(pair[0]));
            let odd = pair.get(1).map_or(0, |&v| u32::from(to_bf16(v)));
            out[done / 2 + p] = even | (odd << 16);
        }
    }
}

/// One bf16 micro-kernel call: `rows × cols` of C from `pairs` k-pairs.
struct TileBf16<'a> {
    pairs: usize,
    /// A's pairs for all `MR` rows: `a[r * stride + p]`.
    a: &'a [u32],
    stride: usize,
    /// Panel slab: 64 bf16 per pair.
    b: &'a [u16],
    rows: usize,
    cols: usize,
    ldc: usize,
    init: Init<'a>,
}

/// The bf16 micro-kernel: a 14×32 tile of C, 28 `vdpbf16ps` per k-pair
/// against 2 panel loads and 14 broadcasts.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512 BF16; `tile.a` must hold
/// `(MR - 1) * stride + pairs` u32, `tile.b` `pairs * 64` bf16, and `c`
/// span the tile (`(rows - 1) * ldc + cols` floats).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_bf16(tile: &TileBf16, c: &mut [f32]) {
    use std::arch::x86_64::*;
    let (pairs, stride) = (tile.pairs, tile.stride);
    debug_assert!(tile.a.len() >= (MR - 1) * stride + pairs);
    debug_assert!(tile.b.len() >= pairs * 2 * NR);
    debug_assert!(c.len() >= (tile.rows - 1) * tile.ldc + tile.cols);
    let (a, b) = (tile.a.as_ptr(), tile.b.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    // SAFETY: reads stay inside `tile.a` (r * stride + p < (MR - 1) * stride
    // + pairs) and `tile.b` (p * 64 + 63 < pairs * 64); the store is
    // `store_tile_avx512`'s contract, which `c` meets.
    unsafe {
        for p in 0..pairs {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(p * 2 * NR).cast()));
            let b1: __m512bh =
                std::mem::transmute(_mm512_loadu_si512(b.add(p * 2 * NR + NR).cast()));
            for (r, sums) in acc.iter_mut().enumerate() {
                let a_r: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(r * stride + p) as i32));
                sums[0] = _mm512_dpbf16_ps(sums[0], a_r, b0);
                sums[1] = _mm512_dpbf16_ps(sums[1], a_r, b1);
            }
        }
        store_tile_avx512(
            &acc,
            tile.rows,
            tile.cols,
            tile.ldc,
            tile.init,
            c.as_mut_ptr(),
        );
    }
}

/// Writes a micro-tile's accumulators (`acc[r]` = columns 0..16 and 16..32
/// of row r) to C: rows `< rows`, columns `< cols` (masked), starting from
/// `init`.
///
/// # Safety
/// The CPU must support AVX-512F; `c` must point at the tile's first element
/// and the tile (`(rows - 1) * ldc + cols` floats) must be inside one
/// allocation; `init`'s bias must hold `cols` floats.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_tile_avx512(
    acc: &[[std::arch::x86_64::__m512; 2]; MR],
    rows: usize,
    cols: usize,
    ldc: usize,
    init: Init,
    c: *mut f32,
) {
    use std::arch::x86_64::*;
    let low: __mmask16 = if cols >= 16 {
        0xffff
    } else {
        ((1u32 << cols) - 1) as u16
    };
    let high: __mmask16 = if cols >= 32 {
        0xffff
    } else if cols > 16 {
        ((1u32 << (cols - 16)) - 1) as u16
    } else {
        0
    };
    // SAFETY: masked lanes are neither read nor written (and never fault);
    // the unmasked ones are rows < rows, columns < cols of the tile, inside
    // `c` per the contract, and of the bias (cols floats).
    unsafe {
        let (bias0, bias1) = match init {
            Init::Bias(bias) => (
                _mm512_maskz_loadu_ps(low, bias.as_ptr()),
                _mm512_maskz_loadu_ps(high, bias.as_ptr().add(16)),
            ),
            _ => (_mm512_setzero_ps(), _mm512_setzero_ps()),
        };
        for (r, sums) in acc.iter().enumerate().take(rows) {
            let row = c.add(r * ldc);
            let (start0, start1) = match init {
                Init::Accumulate => (
                    _mm512_maskz_loadu_ps(low, row),
                    _mm512_maskz_loadu_ps(high, row.add(16)),
                ),
                _ => (bias0, bias1),
            };
            _mm512_mask_storeu_ps(row, low, _mm512_add_ps(start0, sums[0]));
            _mm512_mask_storeu_ps(row.add(16), high, _mm512_add_ps(start1, sums[1]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::values;

    #[test]
    fn to_bf16_rounds_to_nearest_even() {
        assert_eq!(from_bf16(to_bf16(1.0)), 1.0);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to even (1).
        assert_eq!(from_bf16(to_bf16(1.0 + 1.0 / 256.0)), 1.0);
        // Just above halfway rounds up.
        assert_eq!(
            from_bf16(to_bf16(1.0 + 1.0 / 256.0 + 1.0 / 65536.0)),
            1.0 + 1.0 / 128.0
        );
        for &x in &values(1000, 7) {
            let relative = ((from_bf16(to_bf16(x)) - x) / x).abs();
            assert!(relative <= 1.0 / 256.0, "{x}: {relative}");
        }
    }

    /// Both packers write the layout `packed_index` defines, zeros elsewhere.
    #[test]
    fn packers_follow_the_documented_layout() {
        for &(k, n) in &[(1, 1), (2, 32), (7, 33), (32, 228), (33, 65), (228, 32)] {
            let b = values(k * n, 11);
            let pairs = k.div_ceil(2);
            let mut want = vec![0u16; n.div_ceil(NR) * pairs * 2 * NR];
            for kk in 0..k {
                for j in 0..n {
                    want[packed_index(pairs, kk, j)] = to_bf16(b[kk * n + j]);
                }
            }
            let mut from_cols = PackedBf16::default();
            from_cols.pack_cols(&b, k, n, n);
            assert_eq!(from_cols.panels(), want.as_slice(), "pack_cols k={k} n={n}");
            let mut transposed = vec![0.0; n * k];
            for kk in 0..k {
                for j in 0..n {
                    transposed[j * k + kk] = b[kk * n + j];
                }
            }
            let from_rows = PackedBf16::from_rows(&transposed, n, k, k);
            assert_eq!(from_rows.panels(), want.as_slice(), "pack_rows k={k} n={n}");
        }
    }

    /// The bf16 GEMM against the same products in f64 on the *rounded*
    /// operands: only the f32 summation order may differ.
    #[test]
    fn gemm_bf16_matches_naive_on_odd_shapes() {
        if !bf16_supported() {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 32, 2),
            (13, 31, 7),
            (14, 32, 32),
            (15, 33, 33),
            (29, 65, 100),
            (3, 17, 257),
            (40, 96, 384),
            (17, 50, 600),
        ] {
            for with_bias in [false, true] {
                let (lda, ldw, ldc) = (k + 3, k + 1, n + 5);
                let a = values(m * lda, 1 + m as u64);
                let w = values(n * ldw, 2 + n as u64);
                let bias = values(n, 3);
                let bias = with_bias.then_some(bias.as_slice());
                let packed = PackedBf16::from_rows(&w, n, k, ldw);
                let mut c = vec![f32::NAN; m * ldc];
                gemm_bf16(m, &a, lda, &packed, bias, &mut c, ldc);
                let round = |x: f32| f64::from(from_bf16(to_bf16(x)));
                for i in 0..m {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if j >= n {
                            assert!(got.is_nan(), "wrote outside C at ({i},{j})");
                            continue;
                        }
                        let mut want = bias.map_or(0.0, |b| f64::from(b[j]));
                        for kk in 0..k {
                            want += round(a[i * lda + kk]) * round(w[j * ldw + kk]);
                        }
                        let tolerance = 1e-5 * (k as f64).sqrt().max(1.0);
                        assert!(
                            (f64::from(got) - want).abs() <= tolerance,
                            "m={m} n={n} k={k} ({i},{j}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod throughput {
    use super::*;
    use crate::kernels::throughput::thread_cpu_ns;

    /// GFLOP/s per CPU-second of the dense shapes on 1600 tokens, f32 vs bf16.
    /// `cargo test -p bert-cpu --release -- --ignored --nocapture dense_throughput`
    #[test]
    #[ignore]
    fn dense_throughput() {
        let m = 1600;
        for &(n, k) in &[(1152, 384), (384, 384), (1536, 384), (384, 1536)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0.0; m * n];
            let mut weights = vec![("f32", Packed::F32(PackedB::from_rows(&w, n, k, k)))];
            if bf16_supported() {
                weights.push(("bf16", Packed::Bf16(PackedBf16::from_rows(&w, n, k, k))));
            }
            for (name, weight) in &weights {
                weight.gemm(m, &a, k, None, &mut c, n);
                let rounds = 5;
                let start = thread_cpu_ns();
                for _ in 0..rounds {
                    weight.gemm(m, &a, k, None, &mut c, n);
                }
                let seconds = (thread_cpu_ns() - start) / 1e9 / rounds as f64;
                let gflops = 2.0 * (m * n * k) as f64 / seconds / 1e9;
                println!("{name} m={m} n={n} k={k}: {gflops:.1} GFLOP/s");
            }
        }
    }
}
