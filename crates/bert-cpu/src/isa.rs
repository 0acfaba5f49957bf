//! Which instruction set the kernels use, chosen once at start.
//!
//! [`Isa::detect`] picks the widest path this CPU has. Widest is not always
//! fastest (AVX-512 BF16 on an Intel Xeon without AMX is slower than f32
//! AVX-512), so a program may measure the paths ([`crate::tune`]) and
//! [`Isa::select`] the winner before the kernels first run. `BERT_CPU_ISA`
//! (`portable`, `avx2`, `avx512`, `avx512bf16`, `neon`) forces one, so that
//! every path can be tested and measured on one machine, and wins over a
//! selection; naming a path this CPU lacks is an error ([`Isa::configured`]),
//! not a silent fallback, so a benchmark or test never measures a different
//! path than it names.
//!
//! The paths, fastest first on the CPUs that have them:
//! - `avx512bf16`: dense GEMMs in bf16 (`vdpbf16ps`), everything else on the
//!   AVX-512 f32 kernels (AMD Zen 4+, Intel Sapphire Rapids+).
//! - `avx512`: the AVX-512 f32 kernels (Skylake-SP, Cascade Lake, Ice Lake).
//! - `avx2`: AVX2 + FMA (every x86-64 since Haswell / Zen 1).
//! - `neon`: aarch64 Advanced SIMD (Graviton, Apple silicon, Ampere).
//! - `portable`: plain Rust, auto-vectorised for the build's baseline.
//!
//! `BERT_CPU_PORTABLE=1`, the variable this one replaced, is still read as
//! `BERT_CPU_ISA=portable` when `BERT_CPU_ISA` is unset.

use std::fmt;
use std::sync::OnceLock;

/// An instruction-set path of the kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
    Avx512Bf16,
    Neon,
}

/// A `BERT_CPU_ISA` this process cannot honour.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error(
        "BERT_CPU_ISA={0} is not a known path (expected one of: portable, avx2, avx512, avx512bf16, neon)"
    )]
    Unknown(String),
    #[error(
        "BERT_CPU_ISA={name} needs {needs}, which this CPU does not have (it can run: {available})"
    )]
    Unsupported {
        name: &'static str,
        needs: &'static str,
        available: String,
    },
}

impl Isa {
    /// Every path, fastest first.
    pub const ALL: [Isa; 5] = [
        Isa::Avx512Bf16,
        Isa::Avx512,
        Isa::Avx2,
        Isa::Neon,
        Isa::Portable,
    ];

    /// The name `BERT_CPU_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Neon => "neon",
        }
    }

    /// What the CPU must have for this path.
    pub fn needs(self) -> &'static str {
        match self {
            Isa::Portable => "nothing",
            Isa::Avx2 => "an x86-64 CPU with AVX2 and FMA",
            Isa::Avx512 => "an x86-64 CPU with AVX-512F",
            Isa::Avx512Bf16 => "an x86-64 CPU with AVX-512F and AVX-512 BF16",
            Isa::Neon => "an aarch64 CPU with NEON",
        }
    }

    /// Parses a `BERT_CPU_ISA` value (case and surrounding blanks ignored).
    pub fn parse(value: &str) -> Result<Isa, IsaError> {
        let wanted = value.trim().to_ascii_lowercase();
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == wanted)
            .ok_or_else(|| IsaError::Unknown(value.to_string()))
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The paths this CPU can run, fastest first (`portable` last).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.supported()).collect()
    }

    /// The fastest path this CPU has.
    pub fn detect() -> Isa {
        Isa::available()[0]
    }

    /// The path from a `BERT_CPU_ISA` value (`None`: unset), checked against
    /// this CPU.
    pub fn choose(requested: Option<&str>) -> Result<Isa, IsaError> {
        let Some(value) = requested.filter(|v| !v.trim().is_empty()) else {
            return Ok(Isa::detect());
        };
        let isa = Isa::parse(value)?;
        if !isa.supported() {
            return Err(IsaError::Unsupported {
                name: isa.name(),
                needs: isa.needs(),
                available: Isa::available()
                    .iter()
                    .map(|isa| isa.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(isa)
    }

    /// What the environment forces: `BERT_CPU_ISA`, or the legacy
    /// `BERT_CPU_PORTABLE=1` as `portable`; `None` when neither is set (an
    /// empty `BERT_CPU_ISA` counts as unset).
    pub fn requested() -> Option<String> {
        std::env::var("BERT_CPU_ISA")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| {
                std::env::var("BERT_CPU_PORTABLE")
                    .is_ok_and(|v| !v.is_empty() && v != "0")
                    .then(|| "portable".to_string())
            })
    }

    /// The path this process runs, fixed at first use: [`Isa::requested`]
    /// when set, else the path given to [`Isa::select`] before first use,
    /// else [`Isa::detect`]. Loading a model fails with this error; the
    /// daemon checks [`Isa::requested`] at start.
    pub fn configured() -> Result<Isa, IsaError> {
        CONFIGURED
            .get_or_init(|| Isa::choose(Isa::requested().as_deref()))
            .clone()
    }

    /// Makes `isa` this process's path, unless `BERT_CPU_ISA` forces one or
    /// the path is already fixed (a kernel ran, or an earlier call): the
    /// kernels cache their dispatch at first use, so a later change could
    /// not take effect everywhere. Returns the path in effect, which callers
    /// compare with what they asked for.
    pub fn select(isa: Isa) -> Result<Isa, IsaError> {
        CONFIGURED
            .get_or_init(|| match Isa::requested() {
                Some(requested) => Isa::choose(Some(&requested)),
                None => Isa::choose(Some(isa.name())),
            })
            .clone()
    }

    /// [`Isa::configured`], or — when that is an error, which model loading
    /// reports — the portable path, which every CPU runs.
    pub fn active() -> Isa {
        Isa::configured().unwrap_or(Isa::Portable)
    }
}

/// The path in effect, once fixed ([`Isa::configured`], [`Isa::select`]).
static CONFIGURED: OnceLock<Result<Isa, IsaError>> = OnceLock::new();

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
            assert_eq!(
                Isa::parse(&format!(" {} ", isa.name().to_uppercase())),
                Ok(isa)
            );
        }
        assert_eq!(
            Isa::parse("sse4"),
            Err(IsaError::Unknown("sse4".to_string()))
        );
    }

    #[test]
    fn unset_means_the_fastest_path_and_portable_always_runs() {
        assert_eq!(Isa::choose(None), Ok(Isa::detect()));
        assert_eq!(Isa::choose(Some("")), Ok(Isa::detect()));
        assert_eq!(Isa::choose(Some("portable")), Ok(Isa::Portable));
        assert_eq!(*Isa::available().last().unwrap(), Isa::Portable);
    }

    /// Every aarch64 CPU has NEON (it is in the baseline): the fast path
    /// must be found, under qemu-user in CI too.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn aarch64_runs_the_neon_path() {
        assert_eq!(Isa::detect(), Isa::Neon);
    }

    #[test]
    fn a_path_this_cpu_lacks_is_a_clear_error() {
        // No CPU is both x86-64 and aarch64: one of these is always missing.
        let missing = if cfg!(target_arch = "aarch64") {
            "avx2"
        } else {
            "neon"
        };
        let error = Isa::choose(Some(missing)).unwrap_err().to_string();
        assert!(
            error.contains(&format!("BERT_CPU_ISA={missing}")),
            "{error}"
        );
        assert!(error.contains("this CPU does not have"), "{error}");
        assert!(error.contains("portable"), "{error}");
    }
}
