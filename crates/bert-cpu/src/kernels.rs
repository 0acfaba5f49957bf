//! Dense kernels for the BERT forward pass.
//!
//! **SGEMM.** [`gemm`] computes `C[m×n] = A[m×k] · B[k×n] (+ bias)` where B is
//! a [`PackedB`], laid out once (weights at load time; attention's small
//! operands per head) for the backend that will multiply it:
//! - AVX2, AVX-512 and NEON run the `gemm` crate's kernels
//!   (the private `crate_gemm` module: measured fastest on AVX2 and AVX-512; on NEON
//!   the only maintained kernels we found, unmeasured for speed here);
//! - the portable path runs our own Goto-style loops: B in panels of [`NR`]
//!   = 32 columns, k-major, blocks of [`KC`] k-steps, tiles of [`MR`] = 14
//!   rows of A packed into an L1-resident buffer, plain Rust that the
//!   compiler vectorises for the baseline target.
//!
//! The bf16 GEMM of the `avx512bf16` path is [`crate::bf16`]'s, on the same
//! panel and tile sizes.
//!
//! **Dispatch.** [`Backend::best`] follows [`Isa::active`]: `BERT_CPU_ISA`,
//! else the fastest path the CPU has (see [`crate::isa`]).
//!
//! **Element-wise ops** (GELU, softmax, LayerNorm) are written branch-free over
//! fixed-width lanes so that the same source vectorises; the AVX-512 and AVX2
//! variants are that source compiled with those features enabled (NEON is in
//! aarch64's baseline). `exp` and `erf` are polynomial approximations
//! (relative error ~1e-7, below f32 rounding of the surrounding sums).

use std::sync::OnceLock;

use crate::crate_gemm;
use crate::isa::Isa;

/// Columns per packed panel (two 16-float AVX-512 vectors).
pub const NR: usize = 32;
/// Rows per micro-tile: in the bf16 kernel, 14 × 2 accumulators + 2 panel
/// vectors + 1 broadcast = 31 of the 32 zmm registers.
pub const MR: usize = 14;
/// k-steps per block.
pub const KC: usize = 256;

/// Which f32 kernels run (the bf16 GEMM is [`crate::bf16`]'s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// AVX-512F micro-kernel and element-wise ops compiled for AVX-512.
    Avx512,
    /// AVX2 + FMA.
    Avx2,
    /// aarch64 Advanced SIMD.
    Neon,
    /// Plain Rust, vectorised only as far as the build target allows.
    Portable,
}

impl Backend {
    /// The f32 kernels of an instruction-set path.
    pub fn of(isa: Isa) -> Backend {
        match isa {
            Isa::Avx512 | Isa::Avx512Bf16 => Backend::Avx512,
            Isa::Avx2 => Backend::Avx2,
            Isa::Neon => Backend::Neon,
            Isa::Portable => Backend::Portable,
        }
    }

    /// The fastest kernels this CPU has, whatever `BERT_CPU_ISA` says.
    pub fn detect() -> Backend {
        Backend::of(Isa::detect())
    }

    /// Every backend this CPU can run, fastest first (tests, benchmarks).
    pub fn available() -> Vec<Backend> {
        let mut backends: Vec<Backend> = Vec::new();
        for isa in Isa::available() {
            let backend = Backend::of(isa);
            if !backends.contains(&backend) {
                backends.push(backend);
            }
        }
        backends
    }

    /// Whether this CPU can run the backend.
    pub fn supported(self) -> bool {
        match self {
            Backend::Portable => true,
            Backend::Avx2 => Isa::Avx2.supported(),
            Backend::Avx512 => Isa::Avx512.supported(),
            Backend::Neon => Isa::Neon.supported(),
        }
    }

    /// The backend used by [`gemm`] and the element-wise ops: that of
    /// [`Isa::active`] (`BERT_CPU_ISA`, else the fastest path).
    pub fn best() -> Backend {
        static BEST: OnceLock<Backend> = OnceLock::new();
        *BEST.get_or_init(|| Backend::of(Isa::active()))
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

/// The right-hand operand of [`gemm`], laid out for one [`Backend`]: the
/// portable kernel's 32-column panels, or, for the `gemm` crate's kernels,
/// Bᵀ row by row (which the crate packs itself, per cache block).
#[derive(Clone, Debug)]
pub struct PackedB {
    n: usize,
    k: usize,
    backend: Backend,
    /// Portable: `storage[(panel * k + kk) * NR + j]` = B[kk][panel * NR + j],
    /// zero past `n`. Otherwise `storage[j * k + kk]` = B[kk][j].
    storage: Aligned<f32>,
}

impl Default for PackedB {
    fn default() -> Self {
        PackedB::for_backend(Backend::best())
    }
}

impl PackedB {
    /// An empty operand for `backend`'s kernels, to pack into.
    pub fn for_backend(backend: Backend) -> PackedB {
        PackedB {
            n: 0,
            k: 0,
            backend,
            storage: Aligned::default(),
        }
    }

    /// Packs `B = Wᵀ` from a row-major `[n, k]` matrix `w` (row stride `ld`):
    /// the layout of a PyTorch `Linear` weight, so `gemm` computes `A·Wᵀ`.
    /// For [`Backend::best`]'s kernels.
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

    /// The kernels this operand is laid out for.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn panelled(&self) -> bool {
        self.backend == Backend::Portable
    }

    fn reset(&mut self, n: usize, k: usize) {
        self.n = n;
        self.k = k;
        let len = if self.panelled() {
            n.div_ceil(NR) * NR * k
        } else {
            n * k
        };
        self.storage.reset(len);
    }

    fn data(&self) -> &[f32] {
        self.storage.as_slice()
    }

    /// Re-packs (reusing the allocation) `B = Wᵀ` from a row-major `[n, k]`
    /// matrix with row stride `ld`.
    pub fn pack_rows(&mut self, w: &[f32], n: usize, k: usize, ld: usize) {
        assert!(ld >= k, "row stride {ld} < k {k}");
        assert!(n == 0 || w.len() >= (n - 1) * ld + k, "w too short");
        self.reset(n, k);
        let panelled = self.panelled();
        let data = self.storage.as_mut_slice();
        for j in 0..n {
            let row = &w[j * ld..j * ld + k];
            if !panelled {
                data[j * k..(j + 1) * k].copy_from_slice(row);
                continue;
            }
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
        let panelled = self.panelled();
        let data = self.storage.as_mut_slice();
        for kk in 0..k {
            let row = &b[kk * ld..kk * ld + n];
            if panelled {
                for (panel, values) in row.chunks(NR).enumerate() {
                    let start = (panel * k + kk) * NR;
                    data[start..start + values.len()].copy_from_slice(values);
                }
            } else {
                for (j, &value) in row.iter().enumerate() {
                    data[j * k + kk] = value;
                }
            }
        }
    }
}

/// `C[i][j] = Σ_kk A[i][kk] · B[kk][j] + bias[j]` for `i < m`, `j < b.n()`,
/// overwriting C, on the kernels `b` was packed for. A is row-major with row
/// stride `lda` (≥ k), C with `ldc` (≥ n); other columns of C are left alone.
pub fn gemm(
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
    let backend = b.backend;
    if backend != Backend::Portable {
        // `for_backend` can lay an operand out for any backend: check the
        // CPU before entering kernels it may lack.
        assert!(
            backend.supported(),
            "{backend:?} kernels on a CPU without them"
        );
        for row in c.chunks_mut(ldc).take(m) {
            match bias {
                Some(bias) => row[..n].copy_from_slice(&bias[..n]),
                None => row[..n].fill(0.0),
            }
        }
        // SAFETY: the backend is supported (asserted) and not portable;
        // `prepare` checked that A spans (m-1)·lda + k floats and C
        // (m-1)·ldc + n, and B holds n·k floats (`reset`).
        unsafe {
            crate_gemm::gemm_add(
                backend,
                m,
                n,
                k,
                a.as_ptr(),
                lda,
                b.data().as_ptr(),
                k,
                c.as_mut_ptr(),
                ldc,
            );
        }
        return;
    }
    let panels = n.div_ceil(NR);
    let b_data = b.data();
    let mut a_tile = [0.0f32; KC * MR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let accumulate = k0 > 0;
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            pack_a(&a[i0 * lda + k0..], lda, rows, kc, &mut a_tile);
            for panel in 0..panels {
                let cols = NR.min(n - panel * NR);
                let b_slab = &b_data[(panel * k + k0) * NR..(panel * k + k0 + kc) * NR];
                let c_offset = i0 * ldc + panel * NR;
                // Rows past the first end at their own column count, so the
                // tile's extent is (rows - 1) * ldc + cols.
                let c_tile = &mut c[c_offset..c_offset + (rows - 1) * ldc + cols];
                let tile = Tile {
                    kc,
                    a: &a_tile[..kc * MR],
                    b: b_slab,
                    rows,
                    cols,
                    ldc,
                    init: Init::of_block(!accumulate, bias, panel, cols),
                };
                tile_portable(&tile, c_tile);
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
    /// Packed A: `a[kk * MR + r]`, rows ≥ `rows` are zero.
    a: &'a [f32],
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

// ---------------------------------------------------------------------------
// Element-wise ops.

/// Lanes of the branch-free element-wise loops (one AVX-512 vector).
const LANES: usize = 16;

/// Runs `$body` (an `#[inline(always)]` fn) through an AVX-512- or
/// AVX2-compiled copy when the backend is one of those, else as is.
macro_rules! dispatch {
    ($avx512:ident, $avx2:ident, $body:ident, ($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            match Backend::best() {
                // SAFETY: `Backend::best` is a backend the CPU supports
                // (`Isa::configured` checked it), so AVX-512F, or AVX2 and
                // FMA, are present for the copy compiled with them.
                Backend::Avx512 => return unsafe { $avx512($($arg),*) },
                Backend::Avx2 => return unsafe { $avx2($($arg),*) },
                _ => {}
            }
        }
        $body($($arg),*)
    }};
}

/// Compiles `$body` with `$features` enabled, as `$name`.
macro_rules! compiled_for {
    ($name:ident, $features:literal, $body:ident, ($($arg:ident: $ty:ty),*)) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        fn $name($($arg: $ty),*) {
            $body($($arg),*)
        }
    };
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

compiled_for!(gelu_avx512, "avx512f", gelu_body, (x: &mut [f32]));
compiled_for!(gelu_avx2, "avx2,fma", gelu_body, (x: &mut [f32]));

/// GELU (erf form) in place.
pub fn gelu(x: &mut [f32]) {
    dispatch!(gelu_avx512, gelu_avx2, gelu_body, (x))
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

compiled_for!(softmax_avx512, "avx512f", softmax_body, (x: &mut [f32], cols: usize, scale: f32));
compiled_for!(softmax_avx2, "avx2,fma", softmax_body, (x: &mut [f32], cols: usize, scale: f32));

/// Row-wise `softmax(scale · row)` over a row-major matrix of `cols` columns
/// (`scale` > 0; for attention 1/√head_dim).
pub fn softmax_rows(x: &mut [f32], cols: usize, scale: f32) {
    assert!(cols > 0 && x.len().is_multiple_of(cols));
    dispatch!(softmax_avx512, softmax_avx2, softmax_body, (x, cols, scale))
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

compiled_for!(layer_norm_avx512, "avx512f", layer_norm_body,
    (x: &mut [f32], delta: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32));
compiled_for!(layer_norm_avx2, "avx2,fma", layer_norm_body,
    (x: &mut [f32], delta: Option<&[f32]>, gamma: &[f32], beta: &[f32], eps: f32));

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
        layer_norm_avx2,
        layer_norm_body,
        (x, delta, gamma, beta, eps)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) (the tuning workload's).
    pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
        crate::tune::values(len, seed)
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

    /// `w` (`[n, k]`, stride `ld`) packed for `backend`.
    pub(crate) fn packed_for(
        backend: Backend,
        w: &[f32],
        n: usize,
        k: usize,
        ld: usize,
    ) -> PackedB {
        let mut packed = PackedB::for_backend(backend);
        packed.pack_rows(w, n, k, ld);
        packed
    }

    fn check_shape(m: usize, n: usize, k: usize, with_bias: bool) {
        // Strides larger than the extents, to catch stride mix-ups.
        let (lda, ldw, ldc) = (k + 3, k + 1, n + 5);
        let a = values(m * lda, 1 + m as u64);
        let w = values(n * ldw, 2 + n as u64);
        let bias = values(n, 3);
        let bias = with_bias.then_some(bias.as_slice());
        let expected = naive(m, n, k, &a, lda, &w, ldw, bias);
        for backend in Backend::available() {
            let packed = packed_for(backend, &w, n, k, ldw);
            let mut c = vec![f32::NAN; m * ldc];
            gemm(m, &a, lda, &packed, bias, &mut c, ldc);
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
        for backend in Backend::available() {
            let packed = packed_for(backend, &[], 3, 0, 0);
            let mut c = vec![9.0; 6];
            gemm(2, &[], 0, &packed, Some(&[1.0, 2.0, 3.0]), &mut c, 3);
            assert_eq!(c, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0], "{backend:?}");
        }
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
        for backend in Backend::available() {
            let mut from_cols = PackedB::for_backend(backend);
            from_cols.pack_cols(&b, k, n, n);
            let from_rows = packed_for(backend, &transposed, n, k, k);
            assert_eq!(from_cols.data(), from_rows.data(), "{backend:?}");
            assert_eq!(from_rows.data().as_ptr() as usize % 64, 0);
        }
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
            let mut c = vec![0.0; m * n];
            for backend in Backend::available() {
                let packed = tests::packed_for(backend, &w, n, k, k);
                gemm(m, &a, k, &packed, None, &mut c, n);
                let rounds = 5;
                let start = thread_cpu_ns();
                for _ in 0..rounds {
                    gemm(m, &a, k, &packed, None, &mut c, n);
                }
                let seconds = (thread_cpu_ns() - start) / 1e9 / rounds as f64;
                let gflops = 2.0 * (m * n * k) as f64 / seconds / 1e9;
                println!("{backend:?} m={m} n={n} k={k}: {gflops:.1} GFLOP/s");
            }
        }
    }
}
