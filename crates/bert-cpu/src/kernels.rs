//! Dense kernels for the BERT forward pass.
//!
//! **SGEMM.** [`gemm`] computes `C[m×n] = A[m×k] · B[k×n] (+ bias)` where B is
//! a [`PackedB`]: columns grouped into panels of [`NR`] = 32, each panel stored
//! k-major (`panel[kk][0..32]`), padded with zeros. Weights are packed once at
//! load time (`C = A·Wᵀ` for a PyTorch `[out, in]` weight: [`PackedB::pack_rows`]);
//! attention packs its small operands per head. The loops are Goto-style:
//! for each block of [`KC`] k-steps (so the panels' k-slab, ≤ 1.5 MiB for
//! our shapes, stays in L2), for each tile of [`MR`] = 14 rows of A (packed
//! into a 14 KiB L1-resident buffer), run the micro-kernel over every panel.
//! The AVX-512 micro-kernel keeps a 14×32 tile of C in 28 zmm registers and
//! does 28 FMAs per k-step against 2 panel loads and 14 broadcasts.
//!
//! **Dispatch.** [`Backend::best`] picks AVX-512 when the CPU has `avx512f`
//! (detected once at run time), else the portable kernels: the same loops in
//! plain Rust, which the compiler auto-vectorises for the baseline target.
//! `BERT_CPU_PORTABLE=1` forces the portable path (for comparison).
//!
//! **Element-wise ops** (GELU, softmax, LayerNorm) are written branch-free over
//! fixed-width lanes so that the same source vectorises; the AVX-512 variants
//! are that source compiled with the feature enabled. `exp` and `erf` are
//! polynomial approximations (relative error ~1e-7, below f32 rounding of
//! the surrounding sums).

use std::sync::OnceLock;

/// Columns per packed panel (two 16-float AVX-512 vectors).
pub const NR: usize = 32;
/// Rows per micro-tile: 14 × 2 accumulators + 2 panel vectors + 1 broadcast
/// = 31 of the 32 zmm registers.
pub const MR: usize = 14;
/// k-steps per block.
pub const KC: usize = 256;

/// Which kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AVX-512F micro-kernel and element-wise ops compiled for AVX-512.
    Avx512,
    /// Plain Rust, vectorised only as far as the build target allows.
    Portable,
}

impl Backend {
    /// What this CPU supports, without the environment override.
    pub fn detect() -> Backend {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Backend::Avx512;
            }
        }
        Backend::Portable
    }

    /// The backend used by [`gemm`] and the element-wise ops: [`Backend::detect`]
    /// unless `BERT_CPU_PORTABLE` is set to a non-empty value other than `0`.
    pub fn best() -> Backend {
        static BEST: OnceLock<Backend> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced =
                std::env::var("BERT_CPU_PORTABLE").is_ok_and(|v| !v.is_empty() && v != "0");
            if forced {
                Backend::Portable
            } else {
                Backend::detect()
            }
        })
    }
}

/// A zero-filled buffer of `len` values starting on a 64-byte boundary:
/// the packed panels' storage. Unaligned, every 64-byte load of a
/// micro-kernel would straddle two cache lines (measured ~2× slower).
#[derive(Clone, Debug, Default)]
pub(crate) struct Aligned<T> {
    /// Over-allocated by up to 64 bytes; the buffer starts at `offset`.
    storage: Vec<T>,
    offset: usize,
    len: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// Makes the buffer `len` zeros (reusing the allocation).
    pub(crate) fn reset(&mut self, len: usize) {
        let size = std::mem::size_of::<T>();
        self.storage.clear();
        self.storage.resize(len + 64 / size, T::default());
        let misalignment = self.storage.as_ptr() as usize % 64;
        self.offset = (64 - misalignment) % 64 / size;
        self.len = len;
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        &self.storage[self.offset..self.offset + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

/// The right-hand operand of [`gemm`], packed into 32-column panels.
#[derive(Clone, Debug, Default)]
pub struct PackedB {
    n: usize,
    k: usize,
    /// `panels()[(panel * k + kk) * NR + j]` = B[kk][panel * NR + j]; zero
    /// past `n`.
    storage: Aligned<f32>,
}

impl PackedB {
    /// Packs `B = Wᵀ` from a row-major `[n, k]` matrix `w` (row stride `ld`):
    /// the layout of a PyTorch `Linear` weight, so `gemm` computes `A·Wᵀ`.
    pub fn from_rows(w: &[f32], n: usize, k: usize, ld: usize) -> PackedB {
        let mut packed = PackedB::default();
        packed.pack_rows(w, n, k, ld);
        packed
    }

    /// Columns of B (outputs).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows of B (the shared dimension).
    pub fn k(&self) -> usize {
        self.k
    }

    fn reset(&mut self, n: usize, k: usize) {
        self.n = n;
        self.k = k;
        self.storage.reset(n.div_ceil(NR) * NR * k);
    }

    fn panels(&self) -> &[f32] {
        self.storage.as_slice()
    }

    fn panels_mut(&mut self) -> &mut [f32] {
        self.storage.as_mut_slice()
    }

    /// Re-packs (reusing the allocation) `B = Wᵀ` from a row-major `[n, k]`
    /// matrix with row stride `ld`.
    pub fn pack_rows(&mut self, w: &[f32], n: usize, k: usize, ld: usize) {
        assert!(ld >= k, "row stride {ld} < k {k}");
        assert!(n == 0 || w.len() >= (n - 1) * ld + k, "w too short");
        self.reset(n, k);
        let data = self.panels_mut();
        for j in 0..n {
            let row = &w[j * ld..j * ld + k];
            let panel = &mut data[(j / NR) * k * NR..(j / NR + 1) * k * NR];
            for (kk, &value) in row.iter().enumerate() {
                panel[kk * NR + j % NR] = value;
            }
        }
    }

    /// Re-packs (reusing the allocation) B from a row-major `[k, n]` matrix
    /// with row stride `ld`, so `gemm` computes `A·B`.
    pub fn pack_cols(&mut self, b: &[f32], k: usize, n: usize, ld: usize) {
        assert!(ld >= n, "row stride {ld} < n {n}");
        assert!(k == 0 || b.len() >= (k - 1) * ld + n, "b too short");
        self.reset(n, k);
        let data = self.panels_mut();
        for kk in 0..k {
            let row = &b[kk * ld..kk * ld + n];
            for (panel, values) in row.chunks(NR).enumerate() {
                let start = (panel * k + kk) * NR;
                data[start..start + values.len()].copy_from_slice(values);
            }
        }
    }
}

/// `C[i][j] = Σ_kk A[i][kk] · B[kk][j] + bias[j]` for `i < m`, `j < b.n()`,
/// overwriting C. A is row-major with row stride `lda` (≥ k), C with `ldc`
/// (≥ n); other columns of C are left alone.
pub fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    gemm_with(Backend::best(), m, a, lda, b, bias, c, ldc);
}

/// [`gemm`] with an explicit backend (tests and benchmarks). Falls back to the
/// portable kernel if `backend` is not supported by this CPU.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    backend: Backend,
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) {
    let (n, k) = (b.n, b.k);
    if !prepare(m, n, k, a, lda, bias, c, ldc) {
        return;
    }
    let backend = if backend == Backend::Avx512 && Backend::detect() != Backend::Avx512 {
        Backend::Portable
    } else {
        backend
    };
    let panels = n.div_ceil(NR);
    let b_data = b.panels();
    let mut a_tile = [0.0f32; KC * MR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let accumulate = k0 > 0;
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            // Full tiles of the AVX-512 kernel broadcast straight from A (row
            // stride `lda`); packing them would cost ~15% of the dense
            // layers' time. Partial tiles and the portable kernel use the
            // packed copy.
            let direct = backend == Backend::Avx512 && rows == MR;
            let a_block = if direct {
                &a[i0 * lda + k0..i0 * lda + k0 + (MR - 1) * lda + kc]
            } else {
                pack_a(&a[i0 * lda + k0..], lda, rows, kc, &mut a_tile);
                &a_tile[..kc * MR]
            };
            for panel in 0..panels {
                let cols = NR.min(n - panel * NR);
                let b_slab = &b_data[(panel * k + k0) * NR..(panel * k + k0 + kc) * NR];
                let c_offset = i0 * ldc + panel * NR;
                // Rows past the first end at their own column count, so the
                // tile's extent is (rows - 1) * ldc + cols.
                let c_tile = &mut c[c_offset..c_offset + (rows - 1) * ldc + cols];
                let init = Init::of_block(!accumulate, bias, panel, cols);
                let tile = Tile {
                    kc,
                    a: a_block,
                    lda: if direct { lda } else { 0 },
                    b: b_slab,
                    rows,
                    cols,
                    ldc,
                    init,
                };
                match backend {
                    #[cfg(target_arch = "x86_64")]
                    Backend::Avx512 => {
                        // SAFETY: AVX-512F is present (checked above via
                        // `Backend::detect`), and the slices span the tile as
                        // `tile_avx512` requires (built just above).
                        unsafe {
                            if direct {
                                tile_avx512::<true>(&tile, c_tile)
                            } else {
                                tile_avx512::<false>(&tile, c_tile)
                            }
                        }
                    }
                    _ => tile_portable(&tile, c_tile),
                }
            }
        }
    }
}

/// Checks the operands of a GEMM (`C[m×n] = A[m×k]·B + bias`, strides `lda`,
/// `ldc`) and handles the cases without products: returns whether the
/// caller still has products to add (false when C is empty, or k = 0 and C
/// has been set to the bias or zero).
///
/// # Panics
/// If a stride is below its extent or a slice is too short.
#[allow(clippy::too_many_arguments)]
pub(crate) fn prepare(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    bias: Option<&[f32]>,
    c: &mut [f32],
    ldc: usize,
) -> bool {
    if m == 0 || n == 0 {
        return false;
    }
    assert!(lda >= k, "lda {lda} < k {k}");
    assert!(ldc >= n, "ldc {ldc} < n {n}");
    assert!(a.len() >= (m - 1) * lda + k, "A too short");
    assert!(c.len() >= (m - 1) * ldc + n, "C too short");
    if let Some(bias) = bias {
        assert!(bias.len() >= n, "bias too short");
    }
    if k == 0 {
        for i in 0..m {
            let row = &mut c[i * ldc..i * ldc + n];
            match bias {
                Some(bias) => row.copy_from_slice(&bias[..n]),
                None => row.fill(0.0),
            }
        }
        return false;
    }
    true
}

/// How a tile of C starts before the products are added.
#[derive(Clone, Copy)]
pub(crate) enum Init<'a> {
    Zero,
    Bias(&'a [f32]),
    /// Add to what C holds (k-blocks after the first).
    Accumulate,
}

impl<'a> Init<'a> {
    /// The start of the tile in columns `panel * NR..+cols`: the bias (or
    /// zero) in the first k-block, what C holds in later ones.
    pub(crate) fn of_block(
        first: bool,
        bias: Option<&'a [f32]>,
        panel: usize,
        cols: usize,
    ) -> Self {
        match (first, bias) {
            (false, _) => Init::Accumulate,
            (true, Some(bias)) => Init::Bias(&bias[panel * NR..panel * NR + cols]),
            (true, None) => Init::Zero,
        }
    }
}

/// One micro-kernel call: `rows × cols` of C from `kc` k-steps.
struct Tile<'a> {
    kc: usize,
    /// Packed A: `a[kk * MR + r]`, rows ≥ `rows` are zero; or, when `lda`
    /// is non-zero, A itself: `a[r * lda + kk]` for all `MR` rows.
    a: &'a [f32],
    lda: usize,
    /// Panel slab: `b[kk * NR + j]`, columns ≥ `cols` are zero.
    b: &'a [f32],
    rows: usize,
    cols: usize,
    ldc: usize,
    init: Init<'a>,
}

/// Copies `rows` rows × `kc` columns of A (stride `lda`) into `a_tile`
/// k-major (`a_tile[kk * MR + r]`), zero-filling rows `rows..MR`.
fn pack_a(a: &[f32], lda: usize, rows: usize, kc: usize, a_tile: &mut [f32; KC * MR]) {
    for r in 0..MR {
        if r < rows {
            let row = &a[r * lda..r * lda + kc];
            for (kk, &value) in row.iter().enumerate() {
                a_tile[kk * MR + r] = value;
            }
        } else {
            for kk in 0..kc {
                a_tile[kk * MR + r] = 0.0;
            }
        }
    }
}

fn tile_portable(tile: &Tile, c: &mut [f32]) {
    let mut acc = [[0.0f32; NR]; MR];
    for kk in 0..tile.kc {
        let b: &[f32; NR] = tile.b[kk * NR..kk * NR + NR].try_into().expect("NR floats");
        let a = &tile.a[kk * MR..kk * MR + MR];
        for (row, &a) in acc.iter_mut().zip(a) {
            for (sum, &b) in row.iter_mut().zip(b) {
                *sum += a * b;
            }
        }
    }
    for (r, sums) in acc.iter().enumerate().take(tile.rows) {
        let row = &mut c[r * tile.ldc..r * tile.ldc + tile.cols];
        for (j, value) in row.iter_mut().enumerate() {
            let start = match tile.init {
                Init::Zero => 0.0,
                Init::Bias(bias) => bias[j],
                Init::Accumulate => *value,
            };
            *value = start + sums[j];
        }
    }
}

/// `DIRECT`: A is read in place (`tile.a[r * tile.lda + kk]`, all `MR` rows)
/// instead of from the packed buffer (`tile.a[kk * MR + r]`).
///
/// # Safety
/// The CPU must support AVX-512F. `c` must span the tile
/// (`(rows - 1) * ldc + cols` floats), `tile.a` `kc * MR` floats (packed) or
/// `(MR - 1) * lda + kc` (direct), and `tile.b` `kc * NR` floats —
/// `gemm_with` slices them so.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const DIRECT: bool>(tile: &Tile, c: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(tile.b.len() >= tile.kc * NR);
    debug_assert!(if DIRECT {
        tile.rows == MR && tile.a.len() >= (MR - 1) * tile.lda + tile.kc
    } else {
        tile.a.len() >= tile.kc * MR
    });
    debug_assert!(c.len() >= (tile.rows - 1) * tile.ldc + tile.cols);
    let a = tile.a.as_ptr();
    let b = tile.b.as_ptr();
    let c = c.as_mut_ptr();
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let lda = tile.lda;
    // SAFETY: every read is inside `tile.a` (kk * MR + r < kc * MR, or
    // r * lda + kk < (MR - 1) * lda + kc) or
    // `tile.b` (kk * NR + 31 < kc * NR); every C access is row r < rows at
    // r * ldc + j with j < cols (masked lanes are neither read nor written,
    // and masked-off lanes never fault), which is inside `c` per the contract.
    unsafe {
        for kk in 0..tile.kc {
            let b0 = _mm512_loadu_ps(b.add(kk * NR));
            let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
            for (r, sums) in acc.iter_mut().enumerate() {
                let index = if DIRECT { r * lda + kk } else { kk * MR + r };
                let a_r = _mm512_set1_ps(*a.add(index));
                sums[0] = _mm512_fmadd_ps(a_r, b0, sums[0]);
                sums[1] = _mm512_fmadd_ps(a_r, b1, sums[1]);
            }
        }
        store_tile_avx512(&acc, tile.rows, tile.cols, tile.ldc, tile.init, c);
    }
}

/// Writes a micro-tile's accumulators (`acc[r]` = columns 0..16 and 16..32
/// of row r) to C: rows `< rows`, columns `< cols` (masked), starting from
/// `init`. Shared by the f32 and bf16 micro-kernels.
///
/// # Safety
/// The CPU must support AVX-512F; `c` must point at the tile's first element
/// and the tile (`(rows - 1) * ldc + cols` floats) must be inside one
/// allocation; `init`'s bias must hold `cols` floats.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn store_tile_avx512(
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

// ---------------------------------------------------------------------------
// Element-wise ops.

/// Lanes of the branch-free element-wise loops (one AVX-512 vector).
const LANES: usize = 16;

/// Runs `$body` (an `#[inline(always)]` fn) through an AVX-512-compiled copy
/// when the backend allows, else as is.
macro_rules! dispatch {
    ($avx:ident, $body:ident, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if Backend::best() == Backend::Avx512 {
                // SAFETY: `Backend::best` returns Avx512 only when the CPU
                // supports AVX-512F, the feature `$avx` is compiled for.
                return unsafe { $avx($($arg),*) };
            }
        }
        $body($($arg),*)
    }};
}

/// e^x, |relative error| ≲ 2e-7 for x in [-87, 88]; inputs are clamped there.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer
    // without a libm call, so the loop vectorises on any target.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Cephes expf polynomial on [-ln2/2, ln2/2].
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_2e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n straight from the bits of `shifted` (= 0x4B40_0000 + n): no
    // float-to-int conversion, which compilers scalarise (saturating `as`).
    let scale = f32::from_bits(
        shifted
            .to_bits()
            .wrapping_sub(0x4B40_0000)
            .wrapping_add(127)
            << 23,
    );
    y * scale
}

/// erf(x), |absolute error| ≤ 1.5e-7 (Abramowitz & Stegun 7.1.26) plus f32
/// rounding: ≲ 4e-7 in all.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let magnitude = 1.0 - poly * exp(-z * z);
    magnitude.copysign(x)
}

/// Exact (erf) GELU, as BERT uses: `x · Φ(x)`.
#[inline(always)]
fn gelu_one(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn gelu_body(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for value in chunk.iter_mut() {
            *value = gelu_one(*value);
        }
    }
    for value in chunks.into_remainder() {
        *value = gelu_one(*value);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gelu_avx512(x: &mut [f32]) {
    gelu_body(x)
}

/// GELU (erf form) in place.
pub fn gelu(x: &mut [f32]) {
    dispatch!(gelu_avx512, gelu_body, (x))
}

#[inline(always)]
fn lane_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(value);
        }
    }
    let mut max = lanes.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for &value in chunks.remainder() {
        max = max.max(value);
    }
    max
}

#[inline(always)]
fn lane_sum(row: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += value;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[inline(always)]
fn softmax_body(x: &mut [f32], cols: usize, scale: f32) {
    for row in x.chunks_exact_mut(cols) {
        let max = lane_max(row);
        for value in row.iter_mut() {
            *value = exp((*value - max) * scale);
        }
        let inverse = 1.0 / lane_sum(row);
        for value in row.iter_mut() {
            *value *= inverse;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn softmax_avx512(x: &mut [f32], cols: usize, scale: f32) {
    softmax_body(x, cols, scale)
}

/// Row-wise `softmax(scale · row)` over a row-major matrix of `cols` columns
/// (`scale` > 0; for attention 1/√head_dim).
pub fn softmax_rows(x: &mut [f32], cols: usize, scale: f32) {
    assert!(cols > 0 && x.len().is_multiple_of(cols));
    dispatch!(softmax_avx512, softmax_body, (x, cols, scale))
}

#[inline(always)]
fn layer_norm_body(x: &mut [f32], delta: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    for (i, row) in x.chunks_exact_mut(width).enumerate() {
        if let Some(delta) = delta {
            for (value, &d) in row.iter_mut().zip(&delta[i * width..(i + 1) * width]) {
                *value += d;
            }
        }
        let mean = lane_sum(row) / width as f32;
        let mut lanes = [0.0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (lane, &value) in lanes.iter_mut().zip(chunk) {
                *lane += (value - mean) * (value - mean);
            }
        }
        let tail: f32 = chunks
            .remainder()
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum();
        let variance = (lanes.iter().sum::<f32>() + tail) / width as f32;
        let inverse = 1.0 / (variance + eps).sqrt();
        for ((value, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
            *value = (*value - mean) * inverse * g + b;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn layer_norm_avx512(x: &mut [f32], delta: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    layer_norm_body(x, delta, gamma, beta, eps)
}

/// Row-wise LayerNorm in place over rows of `gamma.len()` values, after adding
/// `delta` (the residual branch) when given: `x = LN(x + delta)`.
pub fn layer_norm(x: &mut [f32], delta: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32) {
    let width = gamma.len();
    assert!(width > 0 && beta.len() == width && x.len().is_multiple_of(width));
    if let Some(delta) = delta {
        assert_eq!(delta.len(), x.len());
    }
    dispatch!(
        layer_norm_avx512,
        layer_norm_body,
        (x, delta, gamma, beta, eps)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// C = A · Wᵀ + bias, in f64.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        lda: usize,
        w: &[f32],
        ldw: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut sum = bias.map_or(0.0, |b| f64::from(b[j]));
                for kk in 0..k {
                    sum += f64::from(a[i * lda + kk]) * f64::from(w[j * ldw + kk]);
                }
                c[i * n + j] = sum as f32;
            }
        }
        c
    }

    fn backends() -> Vec<Backend> {
        let mut backends = vec![Backend::Portable];
        if Backend::detect() == Backend::Avx512 {
            backends.push(Backend::Avx512);
        }
        backends
    }

    fn check_shape(m: usize, n: usize, k: usize, with_bias: bool) {
        // Strides larger than the extents, to catch stride mix-ups.
        let (lda, ldw, ldc) = (k + 3, k + 1, n + 5);
        let a = values(m * lda, 1 + m as u64);
        let w = values(n * ldw, 2 + n as u64);
        let bias = values(n, 3);
        let bias = with_bias.then_some(bias.as_slice());
        let expected = naive(m, n, k, &a, lda, &w, ldw, bias);
        let packed = PackedB::from_rows(&w, n, k, ldw);
        for backend in backends() {
            let mut c = vec![f32::NAN; m * ldc];
            gemm_with(backend, m, &a, lda, &packed, bias, &mut c, ldc);
            for i in 0..m {
                for j in 0..ldc {
                    let got = c[i * ldc + j];
                    if j < n {
                        let want = expected[i * n + j];
                        let tolerance = 1e-5 * (k as f32).sqrt().max(1.0);
                        assert!(
                            (got - want).abs() <= tolerance,
                            "{backend:?} m={m} n={n} k={k} ({i},{j}): {got} vs {want}"
                        );
                    } else {
                        assert!(got.is_nan(), "{backend:?}: wrote outside C at ({i},{j})");
                    }
                }
            }
        }
    }

    #[test]
    fn gemm_matches_naive_on_odd_shapes() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (1, 32, 1),
            (13, 31, 7),
            (14, 32, 32),
            (15, 33, 33),
            (29, 65, 100),
            (3, 17, 257),
            (40, 96, 384),
            (17, 50, 600),
        ] {
            check_shape(m, n, k, true);
            check_shape(m, n, k, false);
        }
    }

    #[test]
    fn gemm_with_empty_k_writes_bias() {
        let packed = PackedB::from_rows(&[], 3, 0, 0);
        let mut c = vec![9.0; 6];
        gemm_with(
            Backend::Portable,
            2,
            &[],
            0,
            &packed,
            Some(&[1.0, 2.0, 3.0]),
            &mut c,
            3,
        );
        assert_eq!(c, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn pack_cols_is_the_transpose_of_pack_rows() {
        let (k, n) = (37, 45);
        let b = values(k * n, 9);
        let mut transposed = vec![0.0; n * k];
        for kk in 0..k {
            for j in 0..n {
                transposed[j * k + kk] = b[kk * n + j];
            }
        }
        let mut from_cols = PackedB::default();
        from_cols.pack_cols(&b, k, n, n);
        let from_rows = PackedB::from_rows(&transposed, n, k, k);
        assert_eq!(from_cols.panels(), from_rows.panels());
        assert_eq!(from_rows.panels().as_ptr() as usize % 64, 0);
    }

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 5e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        // erf against a high-precision series: erf(x) = 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
        for i in -400..=400 {
            let x = f64::from(i) / 100.0;
            let (mut term, mut sum) = (x, x);
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            let want = sum * 2.0 / std::f64::consts::PI.sqrt();
            let got = f64::from(erf(x as f32));
            assert!((got - want).abs() < 5e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn element_wise_ops_agree_across_backends_and_with_f64() {
        let x = values(16 * 7 + 5, 4)
            .iter()
            .map(|v| v * 6.0)
            .collect::<Vec<_>>();
        let mut gelu_x = x.clone();
        gelu(&mut gelu_x);
        let mut portable = x.clone();
        gelu_body(&mut portable);
        for ((&v, &got), &p) in x.iter().zip(&gelu_x).zip(&portable) {
            let phi = 0.5 * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
            assert!((got - v * phi).abs() < 1e-6 && (got - p).abs() < 1e-6);
        }

        let cols = 21;
        let mut soft = values(cols * 5, 5);
        let original = soft.clone();
        softmax_rows(&mut soft, cols, 0.5);
        for (row, input) in soft.chunks(cols).zip(original.chunks(cols)) {
            let max = input.iter().cloned().fold(f32::MIN, f32::max);
            let total: f64 = input
                .iter()
                .map(|&v| (f64::from(v - max) * 0.5).exp())
                .sum();
            for (&got, &v) in row.iter().zip(input) {
                let want = (f64::from(v - max) * 0.5).exp() / total;
                assert!((f64::from(got) - want).abs() < 1e-6);
            }
        }

        let width = 40;
        let gamma = values(width, 6);
        let beta = values(width, 7);
        let delta = values(width * 3, 8);
        let mut normed = values(width * 3, 9);
        let input = normed.clone();
        layer_norm(&mut normed, Some(&delta), &gamma, &beta, 1e-12);
        for (i, row) in normed.chunks(width).enumerate() {
            let sum: Vec<f64> = (0..width)
                .map(|j| f64::from(input[i * width + j]) + f64::from(delta[i * width + j]))
                .collect();
            let mean = sum.iter().sum::<f64>() / width as f64;
            let var = sum.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
            for j in 0..width {
                let want = (sum[j] - mean) / (var + 1e-12).sqrt() * f64::from(gamma[j])
                    + f64::from(beta[j]);
                assert!(
                    (f64::from(row[j]) - want).abs() < 1e-5,
                    "{} vs {want}",
                    row[j]
                );
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod throughput {
    use super::*;

    /// Nanoseconds this thread has run on a CPU (Linux), so that other load
    /// on the machine does not distort the figures.
    pub(crate) fn thread_cpu_ns() -> f64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// GFLOP/s (per CPU-second of this thread) of the dense shapes of
    /// all-MiniLM-L6-v2 on 1600 tokens.
    /// `cargo test -p bert-cpu --release -- --ignored --nocapture gemm_throughput`
    #[test]
    #[ignore]
    fn gemm_throughput() {
        let m = 1600;
        for &(n, k) in &[(1152, 384), (384, 384), (1536, 384), (384, 1536)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
            let packed = PackedB::from_rows(&w, n, k, k);
            let mut c = vec![0.0; m * n];
            for backend in [Backend::detect(), Backend::Portable] {
                gemm_with(backend, m, &a, k, &packed, None, &mut c, n);
                let rounds = 5;
                let start = thread_cpu_ns();
                for _ in 0..rounds {
                    gemm_with(backend, m, &a, k, &packed, None, &mut c, n);
                }
                let seconds = (thread_cpu_ns() - start) / 1e9 / rounds as f64;
                let gflops = 2.0 * (m * n * k) as f64 / seconds / 1e9;
                println!("{backend:?} m={m} n={n} k={k}: {gflops:.1} GFLOP/s");
            }
        }
    }
}
