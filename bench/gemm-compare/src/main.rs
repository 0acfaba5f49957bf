//! GFLOP/s per CPU-second of this thread: ours (each backend this CPU has)
//! against `gemm` and `matrixmultiply`, on the shapes the forward pass runs.
use bert_cpu::kernels::{Backend, PackedB, gemm};

fn thread_cpu_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn time(flops: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = thread_cpu_ns();
        let mut rounds = 0;
        while thread_cpu_ns() - start < 2e8 {
            f();
            rounds += 1;
        }
        best = best.min((thread_cpu_ns() - start) / rounds as f64);
    }
    flops / best
}

fn main() {
    // (label, m, n, k): dense layers on 1600 tokens (a batch of ~8 chunks),
    // and one head of attention on a 256-token sequence (scores, context).
    let shapes = [
        ("qkv", 1600, 1152, 384),
        ("attn-out", 1600, 384, 384),
        ("up", 1600, 1536, 384),
        ("down", 1600, 384, 1536),
        ("scores", 256, 256, 32),
        ("context", 256, 32, 256),
    ];
    let backends = Backend::available();
    println!(
        "| shape (m×n×k) | {} | gemm::gemm (auto) | matrixmultiply |",
        backends
            .iter()
            .map(|b| format!("bert-cpu {b:?}"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for (label, m, n, k) in shapes {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7) % 13) as f32 * 0.1 - 0.6)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5) % 11) as f32 * 0.1 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let flops = 2.0 * (m * n * k) as f64;
        let mut row = format!("| {label} ({m}×{n}×{k}) |");
        let mut reference = vec![0.0f32; m * n];
        let mut packed = PackedB::for_backend(Backend::Portable);
        packed.pack_rows(&w, n, k, k);
        gemm(m, &a, k, &packed, Some(&bias), &mut reference, n);
        for &backend in &backends {
            let mut c = vec![0.0f32; m * n];
            // Attention packs its operand per head: count that too.
            let attention = m <= 256;
            let mut packed = PackedB::for_backend(backend);
            packed.pack_rows(&w, n, k, k);
            let g = time(flops, || {
                if attention {
                    packed.pack_rows(&w, n, k, k);
                }
                gemm(m, &a, k, &packed, Some(&bias), &mut c, n)
            });
            check(&c, &reference, "bert-cpu");
            row += &format!(" {g:.1} |");
        }
        // Both crates add A · Wᵀ (Wᵀ read through strides) to C, which is
        // set to the bias first, as bert-cpu's GEMM does.
        let crates: [(&str, &dyn Fn(*mut f32)); 2] = [
            ("gemm", &|c| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c,
                    1,
                    n as isize,
                    true,
                    a.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }),
            ("matrixmultiply", &|c| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    w.as_ptr(),
                    1,
                    k as isize,
                    1.0,
                    c,
                    n as isize,
                    1,
                )
            }),
        ];
        for (name, multiply) in crates {
            let mut c = vec![0.0f32; m * n];
            let g = time(flops, || {
                for r in c.chunks_exact_mut(n) {
                    r.copy_from_slice(&bias);
                }
                multiply(c.as_mut_ptr())
            });
            check(&c, &reference, name);
            row += &format!(" {g:.1} |");
        }
        println!("{row}");
    }
}

fn check(got: &[f32], want: &[f32], name: &str) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-3 * w.abs().max(1.0),
            "{name}: {g} vs {w}"
        );
    }
}
