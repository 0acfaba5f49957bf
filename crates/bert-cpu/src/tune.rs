//! Which kernel path runs by default, chosen by timing the paths here.
//!
//! **Why.** The widest path is not the fastest on every CPU. On AMD Zen 4/5,
//! AVX-512 BF16 (`vdpbf16ps`, two multiply-adds per lane) is the fastest;
//! on Intel Xeons without AMX the same instruction brings no more
//! multiply-adds per cycle than an f32 FMA, so the bf16 path only adds
//! conversion work (issue 29: 25.5 chunks/s on the bf16 path against 41.9 on
//! f32 AVX-512, Emerald Rapids). A fixed order would be wrong on one of
//! them, so the default is decided by measurement on the machine it runs on.
//!
//! **The workload.** The four dense GEMMs of one all-MiniLM-L6-v2 encoder
//! layer — 384→1152 (query, key, value), 384→384 (attention output),
//! 384→1536 and 1536→384 — over [`TOKENS`] tokens: ~450 MFLOP, the kind of
//! work that takes ~90% of a forward pass. Each path runs it once to warm up
//! and check its result; then [`ROUNDS`] rounds time every path once each,
//! in an order that rotates from round to round, and a path's figure is its
//! fastest run (the one least disturbed by other work on the machine).
//! Interleaved, not one path after another: a clock that ramps up or down,
//! or a neighbour's burst, then touches every path alike instead of
//! deciding the race (measured on an Intel Xeon, family 6 model 167: timed
//! one after another, f32 AVX-512 read 5.8 ms in one process and 3.8–4.3 ms
//! in the next three, which flipped the choice to the bf16 path at 5.1 ms).
//! A path already three times slower than the best stops being timed: it
//! cannot win, and the portable path would take most of the budget. One thread:
//! the forward pass splits a batch's rows across cores, so per-core speed
//! orders the paths. The portable path is timed too (it is what a CPU
//! without SIMD runs, and it makes the choice testable on a CPU with one
//! SIMD path).
//!
//! **Accuracy.** Every path's result is compared with a float64 product on a
//! few rows; a path whose error exceeds its precision's bound (f32: 1e-4,
//! bf16: 2e-2, relative to the rows' magnitude) is reported and never
//! chosen. The model-level accuracy of each precision is held by the tests
//! (`tests/embedding.rs`: cosine ≥ 0.999 against sentence-transformers); this
//! check guards against a kernel that misbehaves on a CPU nobody tested.
//!
//! **Testing the choice.** `BERT_CPU_TUNE_SLOW` names paths (comma-separated)
//! to make slow on purpose: they are timed after the others, and each of
//! their timed runs also sleeps [`SLOWDOWN`] or twice the slowest other
//! path's time, whichever is longer, so the selection can be shown to follow
//! the measurement on any machine and build (in an unoptimised build every
//! path takes seconds and a fixed sleep would drown in the noise between
//! them).

use std::time::{Duration, Instant};

use crate::bf16::{PackedBf16, Precision, gemm_bf16};
use crate::isa::Isa;
use crate::kernels::{Backend, PackedB, gemm};

/// Rows (tokens) of the timed GEMMs.
pub const TOKENS: usize = 128;
/// Timed rounds (one run of every path each), after one warm-up run each.
pub const ROUNDS: usize = 5;
/// How the race is run; part of [`cpu_identity`], so a choice remembered
/// from an older way of measuring (2: interleaved rounds; 1: one path after
/// another, which noise could flip) is measured again.
const METHOD: u32 = 2;
/// A path whose best is this many times the best of all is not timed in
/// later rounds.
const HOPELESS: f64 = 3.0;
/// The least added to each timed run of a path named in `BERT_CPU_TUNE_SLOW`.
pub const SLOWDOWN: Duration = Duration::from_millis(250);

/// (outputs, inputs) of one encoder layer's dense GEMMs.
const SHAPES: [(usize, usize); 4] = [(1152, 384), (384, 384), (1536, 384), (384, 1536)];

/// Rows of each product checked against float64.
const CHECKED_ROWS: [usize; 3] = [0, TOKENS / 2, TOKENS - 1];

/// One path's figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub isa: Isa,
    /// The operand precision this path runs the model in.
    pub precision: Precision,
    /// The fastest timed run, in seconds.
    pub seconds: f64,
    /// Largest error against float64, relative to the row's magnitude.
    pub error: f64,
    /// `error` within the precision's bound.
    pub accurate: bool,
}

impl Timing {
    /// Multiply-adds per second (×2 for FLOP/s).
    pub fn gflops(&self) -> f64 {
        let flops: usize = SHAPES.iter().map(|(n, k)| 2 * TOKENS * n * k).sum();
        flops as f64 / self.seconds / 1e9
    }
}

/// The figures of every path measured, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    pub timings: Vec<Timing>,
}

impl Measurement {
    /// The fastest path whose result met its accuracy bound (`None` only if
    /// none did, or none was measured).
    pub fn fastest(&self) -> Option<&Timing> {
        self.timings
            .iter()
            .filter(|t| t.accurate && t.seconds.is_finite())
            .min_by(|a, b| a.seconds.total_cmp(&b.seconds))
    }

    /// `avx2 4.1 ms (110 GFLOP/s), portable 31.0 ms (14 GFLOP/s)`: for logs.
    pub fn summary(&self) -> String {
        self.timings
            .iter()
            .map(|t| {
                format!(
                    "{}/{} {:.1} ms ({:.0} GFLOP/s){}",
                    t.isa,
                    t.precision.as_str(),
                    t.seconds * 1e3,
                    t.gflops(),
                    if t.accurate { "" } else { " INACCURATE" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The operand precision a path runs the model in: bf16 on `avx512bf16`,
/// f32 elsewhere (as [`Precision::best`] decides once a path is in effect).
pub fn precision_of(isa: Isa) -> Precision {
    if isa == Isa::Avx512Bf16 {
        Precision::Bf16
    } else {
        Precision::F32
    }
}

/// The paths to time on this CPU: every supported one, except that
/// `bf16 = false` (f32 forced) leaves out `avx512bf16`, whose f32 kernels
/// are `avx512`'s.
pub fn candidates(bf16: bool) -> Vec<Isa> {
    Isa::available()
        .into_iter()
        .filter(|isa| bf16 || *isa != Isa::Avx512Bf16)
        .collect()
}

/// Times `paths` (each must be supported), with `BERT_CPU_TUNE_SLOW`'s
/// paths slowed on purpose.
pub fn measure(paths: &[Isa]) -> Measurement {
    let slow: Vec<Isa> = std::env::var("BERT_CPU_TUNE_SLOW")
        .unwrap_or_default()
        .split(',')
        .filter_map(|name| Isa::parse(name).ok())
        .collect();
    measure_slowing(paths, &slow)
}

/// [`measure`] with `slow` given rather than read from the environment.
pub fn measure_slowing(paths: &[Isa], slow: &[Isa]) -> Measurement {
    let workload = Workload::new();
    let (slowed, fair): (Vec<Isa>, Vec<Isa>) = paths.iter().partition(|isa| slow.contains(isa));
    let mut timings = workload.race(&fair, Duration::ZERO);
    // Invariant: a slowed path's every run takes longer than twice the
    // slowest fair path's best, so it cannot win on noise.
    let slowest = timings.iter().map(|t| t.seconds).fold(0.0, f64::max);
    let pause = SLOWDOWN.max(Duration::from_secs_f64(2.0 * slowest));
    timings.extend(workload.race(&slowed, pause));
    timings.sort_by_key(|t| paths.iter().position(|&isa| isa == t.isa));
    Measurement { timings }
}

/// A string naming this CPU closely enough that a choice measured on it
/// holds for it: vendor, model name, family/model/stepping (or the ARM
/// implementer and part), the paths it has, this crate's version (new
/// kernels deserve a new measurement) and the race's method number (so does a
/// better way of measuring).
pub fn cpu_identity() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let first = cpuinfo.split("\n\n").next().unwrap_or_default();
    let field = |name: &str| {
        first.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_string())
        })
    };
    let mut parts: Vec<String> = [
        "vendor_id",
        "model name",
        "cpu family",
        "model",
        "stepping",
        "CPU implementer",
        "CPU part",
        "CPU variant",
    ]
    .iter()
    .filter_map(|name| field(name).map(|value| format!("{name}={value}")))
    .collect();
    if parts.is_empty() {
        parts.push(format!("arch={}", std::env::consts::ARCH));
    }
    let paths: Vec<&str> = Isa::available().iter().map(|isa| isa.name()).collect();
    parts.push(format!("paths={}", paths.join("+")));
    parts.push(format!("bert-cpu={}", env!("CARGO_PKG_VERSION")));
    parts.push(format!("race={METHOD}"));
    parts.join("; ")
}

/// The timed operands: activations and one layer's weights, deterministic.
struct Workload {
    a: Vec<f32>,
    weights: Vec<Vec<f32>>,
}

impl Workload {
    fn new() -> Workload {
        Workload {
            a: values(TOKENS * 1536, 1),
            weights: SHAPES
                .iter()
                .enumerate()
                .map(|(i, (n, k))| values(n * k, 2 + i as u64))
                .collect(),
        }
    }

    /// Warm-up and check of each path, then [`ROUNDS`] interleaved rounds;
    /// `pause` is slept within each timed run (zero but for paths made
    /// slow on purpose).
    fn race(&self, paths: &[Isa], pause: Duration) -> Vec<Timing> {
        let mut entrants: Vec<Entrant> = paths.iter().map(|&isa| self.enter(isa)).collect();
        for round in 0..ROUNDS {
            let best = entrants
                .iter()
                .map(|e| e.timing.seconds)
                .fold(f64::INFINITY, f64::min);
            for turn in 0..entrants.len() {
                let entrant = &mut entrants[(round + turn) % paths.len()];
                if round > 0 && entrant.timing.seconds > HOPELESS * best {
                    continue;
                }
                let start = Instant::now();
                self.run(&entrant.operands, &mut entrant.outputs);
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
                let seconds = start.elapsed().as_secs_f64();
                entrant.timing.seconds = entrant.timing.seconds.min(seconds);
            }
        }
        entrants.into_iter().map(|e| e.timing).collect()
    }

    /// A path packed, warmed up and checked against float64; not timed yet.
    fn enter(&self, isa: Isa) -> Entrant {
        let precision = precision_of(isa);
        let operands: Vec<Operand> = SHAPES
            .iter()
            .zip(&self.weights)
            .map(|(&(n, k), w)| Operand::pack(isa, w, n, k))
            .collect();
        let mut outputs: Vec<Vec<f32>> =
            SHAPES.iter().map(|(n, _)| vec![0.0; TOKENS * n]).collect();
        self.run(&operands, &mut outputs);
        let error = self.error(&outputs);
        let bound = match precision {
            Precision::F32 => 1e-4,
            Precision::Bf16 => 2e-2,
        };
        Entrant {
            operands,
            outputs,
            timing: Timing {
                isa,
                precision,
                seconds: f64::INFINITY,
                error,
                accurate: error.is_finite() && error <= bound,
            },
        }
    }

    fn run(&self, operands: &[Operand], outputs: &mut [Vec<f32>]) {
        for (operand, c) in operands.iter().zip(outputs.iter_mut()) {
            let (n, k) = operand.shape();
            // A's first k columns, row stride 1536: the same activations
            // for every shape.
            operand.gemm(TOKENS, &self.a, 1536, c, n);
            debug_assert_eq!(c.len(), TOKENS * n, "k = {k}");
        }
    }

    /// Largest |C − A·Wᵀ| over the checked rows, relative to Σ|A||W| of the
    /// row (the scale rounding errors grow with).
    fn error(&self, outputs: &[Vec<f32>]) -> f64 {
        let mut worst = 0.0f64;
        for ((&(n, k), w), c) in SHAPES.iter().zip(&self.weights).zip(outputs) {
            for &i in &CHECKED_ROWS {
                let row = &self.a[i * 1536..i * 1536 + k];
                for j in 0..n {
                    let (mut exact, mut scale) = (0.0f64, 0.0f64);
                    for (x, y) in row.iter().zip(&w[j * k..(j + 1) * k]) {
                        exact += f64::from(*x) * f64::from(*y);
                        scale += (f64::from(*x) * f64::from(*y)).abs();
                    }
                    let got = f64::from(c[i * n + j]);
                    let relative = (got - exact).abs() / scale.max(f64::MIN_POSITIVE);
                    // NaN must not hide behind `max`.
                    worst = if relative.is_nan() {
                        f64::NAN
                    } else {
                        worst.max(relative)
                    };
                }
            }
        }
        worst
    }
}

/// A path in a [`Workload::race`]: its operands, its outputs, and its
/// figures so far.
struct Entrant {
    operands: Vec<Operand>,
    outputs: Vec<Vec<f32>>,
    timing: Timing,
}

/// One weight laid out for a path's kernels.
enum Operand {
    F32(PackedB),
    Bf16(PackedBf16),
}

impl Operand {
    fn pack(isa: Isa, w: &[f32], n: usize, k: usize) -> Operand {
        match precision_of(isa) {
            Precision::Bf16 => Operand::Bf16(PackedBf16::from_rows(w, n, k, k)),
            Precision::F32 => {
                let mut packed = PackedB::for_backend(Backend::of(isa));
                packed.pack_rows(w, n, k, k);
                Operand::F32(packed)
            }
        }
    }

    fn shape(&self) -> (usize, usize) {
        match self {
            Operand::F32(b) => (b.n(), b.k()),
            Operand::Bf16(b) => (b.n(), b.k()),
        }
    }

    fn gemm(&self, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize) {
        match self {
            Operand::F32(b) => gemm(m, a, lda, b, None, c, ldc),
            Operand::Bf16(b) => gemm_bf16(m, a, lda, b, None, c, ldc),
        }
    }
}

/// Deterministic values in [-1, 1) (xorshift); the kernels' tests use them too.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(isa: Isa, seconds: f64, accurate: bool) -> Timing {
        Timing {
            isa,
            precision: precision_of(isa),
            seconds,
            error: if accurate { 1e-6 } else { 0.5 },
            accurate,
        }
    }

    #[test]
    fn the_fastest_accurate_path_wins() {
        // What issue 29 measured on an Intel Xeon: bf16 slower than f32.
        let intel = Measurement {
            timings: vec![
                timing(Isa::Avx512Bf16, 0.012, true),
                timing(Isa::Avx512, 0.007, true),
                timing(Isa::Avx2, 0.013, true),
            ],
        };
        assert_eq!(intel.fastest().unwrap().isa, Isa::Avx512);
        assert_eq!(precision_of(intel.fastest().unwrap().isa), Precision::F32);
        // And on AMD Zen 5, bf16 faster.
        let zen5 = Measurement {
            timings: vec![
                timing(Isa::Avx512Bf16, 0.004, true),
                timing(Isa::Avx512, 0.007, true),
            ],
        };
        assert_eq!(zen5.fastest().unwrap().isa, Isa::Avx512Bf16);
        // A fast path with a wrong result is never chosen.
        let broken = Measurement {
            timings: vec![
                timing(Isa::Avx512Bf16, 0.001, false),
                timing(Isa::Avx2, 0.013, true),
            ],
        };
        assert_eq!(broken.fastest().unwrap().isa, Isa::Avx2);
        assert!(
            broken.summary().contains("INACCURATE"),
            "{}",
            broken.summary()
        );
        let none = Measurement {
            timings: vec![timing(Isa::Avx2, 0.01, false)],
        };
        assert_eq!(none.fastest(), None);
    }

    #[test]
    fn every_path_here_is_measured_accurate() {
        let measurement = measure_slowing(&Isa::available(), &[]);
        assert_eq!(measurement.timings.len(), Isa::available().len());
        for timing in &measurement.timings {
            assert!(timing.accurate, "{}", measurement.summary());
            assert!(timing.seconds > 0.0 && timing.seconds.is_finite());
        }
    }

    /// Issue 29's test: one candidate made slow on purpose loses, so the
    /// choice follows the measurement, not a fixed order. On a CPU with one
    /// SIMD path, the portable kernels are the other candidate.
    #[test]
    fn a_path_made_slow_on_purpose_is_not_chosen() {
        let paths = Isa::available();
        let fair = measure_slowing(&paths, &[]);
        let winner = fair.fastest().unwrap().isa;
        let slowed = measure_slowing(&paths, &[winner]);
        if paths.len() > 1 {
            let chosen = slowed.fastest().unwrap();
            assert_ne!(chosen.isa, winner, "{}", slowed.summary());
            let slow = slowed.timings.iter().find(|t| t.isa == winner).unwrap();
            assert!(slow.seconds >= SLOWDOWN.as_secs_f64());
        }
    }

    #[test]
    fn candidates_leave_out_bf16_when_f32_is_forced() {
        assert!(!candidates(false).contains(&Isa::Avx512Bf16));
        assert_eq!(candidates(true), Isa::available());
    }

    #[test]
    fn the_cpu_identity_names_the_paths_and_the_kernels_version() {
        let identity = cpu_identity();
        assert!(identity.contains("paths="), "{identity}");
        assert!(identity.contains("bert-cpu="), "{identity}");
        assert_eq!(identity, cpu_identity());
    }
}
