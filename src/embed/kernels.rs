//! Which embedding kernels this process runs: forced, or measured once per
//! CPU and remembered in the state directory.
//!
//! The order of precedence:
//! 1. `BERT_CPU_ISA` forces a path (tests, benchmarks, operators who know).
//! 2. `[embedding] precision = "bf16"` needs the `avx512bf16` path.
//! 3. Otherwise the paths this CPU has are timed ([`bert_cpu::tune`]: well
//!    under a second) and the fastest accurate one runs; `precision = "f32"`
//!    (or `BERT_CPU_F32=1`) leaves the bf16 path out of the race. The
//!    figures are logged and the choice is written to
//!    `<state_dir>/kernels.json` under the CPU's identity, so later starts
//!    on the same CPU skip the measurement; a state directory moved to
//!    another CPU model measures again.
//!
//! A cache that cannot be read or written costs a measurement, never a
//! start: the daemon warns and goes on.

use std::collections::BTreeMap;
use std::path::Path;

use bert_cpu::Isa;
use bert_cpu::tune::{self, Measurement};
use serde::{Deserialize, Serialize};

use crate::config::EmbeddingPrecision;

/// The file under the state directory.
pub const CACHE_FILE: &str = "kernels.json";

/// How the path in effect was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    /// `BERT_CPU_ISA` (or `BERT_CPU_PORTABLE`).
    Forced,
    /// `[embedding] precision = "bf16"`.
    Precision,
    /// Timed just now.
    Measured,
    /// Timed on an earlier start on this CPU (`kernels.json`).
    Remembered,
}

impl Decided {
    pub fn as_str(self) -> &'static str {
        match self {
            Decided::Forced => "forced by BERT_CPU_ISA (or fixed earlier in this process)",
            Decided::Precision => "forced by [embedding] precision",
            Decided::Measured => "measured",
            Decided::Remembered => "remembered from an earlier measurement",
        }
    }
}

/// The path in effect and how it was decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelChoice {
    pub isa: Isa,
    pub decided: Decided,
    /// The measurement behind a measured or remembered choice (empty when
    /// forced): each path's time and GFLOP/s on the tuning workload.
    pub figures: String,
}

/// One CPU's remembered choice.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Remembered {
    /// The path's `BERT_CPU_ISA` name.
    isa: String,
    /// Whether bf16 was allowed in the race (`precision = "auto"`).
    bf16_allowed: bool,
    /// The figures behind it, for people reading the file.
    timings: String,
}

/// `kernels.json`: choices keyed by [`tune::cpu_identity`].
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    cpus: BTreeMap<String, Vec<Remembered>>,
}

/// Fixes this process's kernel path (see the module doc). Call before any
/// model is loaded; a path fixed earlier stays, and is reported as forced.
pub fn choose(precision: EmbeddingPrecision, state_dir: &Path) -> Result<KernelChoice, String> {
    if Isa::requested().is_some() {
        let isa = Isa::configured().map_err(|e| e.to_string())?;
        return Ok(KernelChoice {
            isa,
            decided: Decided::Forced,
            figures: String::new(),
        });
    }
    if precision == EmbeddingPrecision::Bf16 {
        let isa = Isa::select(Isa::Avx512Bf16).map_err(|e| e.to_string())?;
        return Ok(KernelChoice {
            isa,
            decided: Decided::Precision,
            figures: String::new(),
        });
    }
    let bf16_allowed = precision == EmbeddingPrecision::Auto && !f32_forced_by_env();
    let path = state_dir.join(CACHE_FILE);
    let identity = tune::cpu_identity();
    let mut cache = read_cache(&path);
    let remembered = cache
        .cpus
        .get(&identity)
        .and_then(|choices| choices.iter().find(|c| c.bf16_allowed == bf16_allowed))
        .and_then(|c| Some((Isa::parse(&c.isa).ok()?, c.timings.clone())))
        .filter(|(isa, _)| tune::candidates(bf16_allowed).contains(isa));
    let (wanted, decided, figures) = match remembered {
        Some((isa, figures)) => (isa, Decided::Remembered, figures),
        None => {
            let measurement = tune::measure(&tune::candidates(bf16_allowed));
            let winner = pick(&measurement)?;
            let figures = measurement.summary();
            tracing::info!(
                cpu = %identity,
                figures = %figures,
                chosen = winner.name(),
                "embedding kernels measured"
            );
            let choices = cache.cpus.entry(identity).or_default();
            choices.retain(|c| c.bf16_allowed != bf16_allowed);
            choices.push(Remembered {
                isa: winner.name().to_string(),
                bf16_allowed,
                timings: figures.clone(),
            });
            if let Err(e) = write_cache(&path, &cache) {
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "could not remember the kernel choice; the next start measures again"
                );
            }
            (winner, Decided::Measured, figures)
        }
    };
    let isa = Isa::select(wanted).map_err(|e| e.to_string())?;
    if isa != wanted {
        // Fixed earlier in this process (a model loaded before): it stays.
        return Ok(KernelChoice {
            isa,
            decided: Decided::Forced,
            figures,
        });
    }
    Ok(KernelChoice {
        isa,
        decided,
        figures,
    })
}

/// Forgets this CPU's remembered choices, so the next [`choose`] measures.
pub fn forget(state_dir: &Path) -> std::io::Result<()> {
    let path = state_dir.join(CACHE_FILE);
    let mut cache = read_cache(&path);
    if cache.cpus.remove(&tune::cpu_identity()).is_some() {
        write_cache(&path, &cache)?;
    }
    Ok(())
}

/// The fastest accurate path, or an error naming what was measured.
fn pick(measurement: &Measurement) -> Result<Isa, String> {
    measurement.fastest().map(|t| t.isa).ok_or_else(|| {
        format!(
            "no embedding kernel path computed correctly on this CPU ({}); \
             set BERT_CPU_ISA=portable to run the plain kernels",
            measurement.summary()
        )
    })
}

/// `BERT_CPU_F32` set to a non-empty value other than `0` (as
/// `bert_cpu::bf16::bf16_enabled` reads it).
fn f32_forced_by_env() -> bool {
    std::env::var("BERT_CPU_F32").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn read_cache(path: &Path) -> Cache {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable kernel choice file");
            Cache::default()
        }),
        Err(_) => Cache::default(),
    }
}

/// Written to a temporary file and renamed, so a reader never sees half.
fn write_cache(path: &Path, cache: &Cache) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_vec_pretty(cache).map_err(std::io::Error::other)?;
    let temporary = path.with_extension(format!("json.{}.tmp", std::process::id()));
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, path)
}
