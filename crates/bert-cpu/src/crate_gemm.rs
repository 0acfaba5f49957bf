//! The f32 GEMM of the AVX2, AVX-512 and NEON paths: the `gemm` crate's
//! micro-kernels and cache blocking, entered per instruction set.
//!
//! **Why the crate.** On the model's shapes it beat our hand-written
//! AVX-512 kernel 3× (AMD Zen 5: ~220 vs ~75 GFLOP/s per core) and its AVX2
//! kernels beat `matrixmultiply` by ~20% (bench/results/embedding.md,
//! `bench/gemm-compare`). So the only hand-written GEMMs left are the
//! portable one (every CPU) and the bf16 one (no crate has `vdpbf16ps`).
//! On aarch64 the crate's NEON kernels are checked for correctness under
//! qemu-user, not measured for speed (no ARM machine here).
//!
//! **Why not `gemm::gemm`.** Its entry point picks the widest kernels the CPU
//! has, once, with no override: `BERT_CPU_ISA=avx2` on an AVX-512 machine
//! would silently run AVX-512, and the AVX2 path could never be tested or
//! measured here. So we instantiate the crate's generic driver
//! (`gemm_basic_generic`) with the micro-kernels of the path we chose —
//! exactly what `gemm_common::gemm_def!` does for its own dispatch, with the
//! same constants. That reaches into the crates' public-but-internal
//! modules, so the versions are pinned (`=0.19.0`) and the unit tests compare
//! every path with a float64 product on odd shapes.

use gemm_common::Parallelism;
use gemm_common::simd::MixedSimd;

use crate::kernels::Backend;

/// `C = A · B` added to what C holds: C is `m × n` row-major (stride `ldc`),
/// A `m × k` row-major (stride `lda`), B given as its transpose, `n × k`
/// row-major (stride `ldb`) — a PyTorch weight's layout.
///
/// # Safety
/// The CPU must support `backend` ([`Backend::supported`]), which must not
/// be [`Backend::Portable`]; the pointers must span their matrices.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_add(
    backend: Backend,
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b_t: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
) {
    let run: Kernel = match backend {
        #[cfg(target_arch = "x86_64")]
        Backend::Avx2 => fma,
        #[cfg(target_arch = "x86_64")]
        Backend::Avx512 => avx512,
        #[cfg(target_arch = "aarch64")]
        Backend::Neon => neon,
        _ => unreachable!("no crate kernel for {backend:?} on this target"),
    };
    // The crate's micro-kernels write column-major tiles of C, so (as its
    // own `gemm::gemm` does) we compute the transposed product, Cᵀ = B'·Aᵀ
    // with B' = (Bᵀ): n × k, whose rows are `b_t`'s. Measured: 2–6× faster
    // than handing it the row-major C directly.
    // SAFETY: forwarded from the caller's contract. The crate's strides are
    // (column, row): Cᵀ[j][i] = C[i][j] at c + j + i·ldc; B'[j][kk] at
    // b_t + j·ldb + kk; Aᵀ[kk][i] = A[i][kk] at a + kk + i·lda.
    unsafe {
        run(
            n,
            m,
            k,
            c,
            ldc as isize,
            1,
            b_t,
            1,
            ldb as isize,
            a,
            lda as isize,
            1,
        )
    }
}

type Kernel = unsafe fn(
    usize,
    usize,
    usize,
    *mut f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
    *const f32,
    isize,
    isize,
);

/// One instantiation of the crate's driver (`gemm_common::__inject_mod!`
/// with the arguments `gemm_f32` gives it: f32 lanes `$n`, `$simd` the
/// feature token the driver checks for).
macro_rules! crate_kernel {
    ($name:ident, $module:ident, $n:expr, $simd:ty) => {
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(
            m: usize,
            n: usize,
            k: usize,
            dst: *mut f32,
            dst_cs: isize,
            dst_rs: isize,
            lhs: *const f32,
            lhs_cs: isize,
            lhs_rs: isize,
            rhs: *const f32,
            rhs_cs: isize,
            rhs_rs: isize,
        ) {
            use gemm_f32::microkernel::$module::f32::{H_M, H_N, H_UKR, MR_DIV_N, NR, UKR};
            const N: usize = $n;
            let simd = <$simd as MixedSimd<f32, f32, f32, f32>>::try_new()
                .expect("the caller checked the CPU supports this path");
            // SAFETY: the caller's contract (see `gemm_add`).
            unsafe {
                gemm_common::gemm::gemm_basic_generic::<
                    _,
                    f32,
                    N,
                    { MR_DIV_N * N },
                    NR,
                    MR_DIV_N,
                    H_M,
                    H_N,
                >(
                    simd,
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    true,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    |a, b, c| a * b + c,
                    &UKR,
                    &H_UKR,
                    false,
                    Parallelism::None,
                )
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
crate_kernel!(fma, fma, 8, gemm_common::simd::V3);
#[cfg(target_arch = "x86_64")]
crate_kernel!(avx512, avx512f, 16, gemm_common::simd::V4);
#[cfg(target_arch = "aarch64")]
crate_kernel!(neon, neon, 4, gemm_common::simd::Scalar);
