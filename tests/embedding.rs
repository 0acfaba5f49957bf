//! The in-process embedder reproduces all-MiniLM-L6-v2 as sentence-transformers
//! computes it: the fixture's vectors come from an independent numpy
//! implementation (tests/reference/make_reference.py), whose "hello world"
//! matches sentence-transformers' published values.

mod common;

use bert_cpu::{Isa, Precision};
use chroma_syncd::embed::{Embedder, MiniLm};
use serde_json::Value;

fn reference() -> Vec<(String, Vec<f32>)> {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/embeddings/reference.json").unwrap(),
    )
    .unwrap();
    fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let vector = s["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32);
            (s["text"].as_str().unwrap().to_string(), vector.collect())
        })
        .collect()
}

/// Batched vectors of the reference sentences, checked against the fixture
/// (cosine ≥ `min_cosine`) and sentence-transformers' published values for
/// "hello world" (within `published_tolerance` per component).
fn check_against_reference(
    model: &MiniLm,
    min_cosine: f32,
    published_tolerance: f32,
) -> Vec<Vec<f32>> {
    assert_eq!(model.dimension(), 384);
    let sentences = reference();
    assert!(sentences.len() >= 10);
    let texts: Vec<&str> = sentences.iter().map(|(t, _)| t.as_str()).collect();
    // Batched (4 per batch, mixed lengths, packed) must equal one-by-one.
    let batched = model.embed(&texts).unwrap();
    for ((text, expected), got) in sentences.iter().zip(&batched) {
        let similarity = common::cosine(got, expected);
        assert!(similarity >= min_cosine, "{text:?}: cosine {similarity}");
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{text:?}: norm {norm}");
    }
    let single = model.embed(&texts[..1]).unwrap();
    assert!(common::cosine(&single[0], &batched[0]) > 0.99999);

    // sentence-transformers' own published values for "hello world".
    let hello = &batched[texts.iter().position(|t| *t == "hello world").unwrap()];
    let published = [
        -0.0344773, 0.0310233, 0.0067349, 0.0261089, -0.0393620, -0.1603025,
    ];
    for (got, want) in hello.iter().zip(published) {
        assert!((got - want).abs() < published_tolerance, "{got} vs {want}");
    }
    batched
}

/// The reference computation: f32 throughout, as sentence-transformers.
#[test]
fn f32_vectors_match_the_reference_model() {
    let model = MiniLm::load_in(&common::model_dir(), 4, Precision::F32)
        .expect("model installed by scripts/install-model");
    assert_eq!(model.precision(), Precision::F32);
    check_against_reference(&model, 0.99999, 1e-4);
}

/// What the daemon runs by default: bf16 GEMMs where the CPU has AVX-512
/// BF16. The bar is a cosine of 0.999 to the reference; bf16 must
/// also stay within 0.9999 of the f32 vectors, sentence by sentence.
#[test]
fn default_precision_vectors_match_the_reference_model() {
    let model = MiniLm::load(&common::model_dir(), 4).expect("model installed");
    assert_eq!(model.precision(), Precision::best());
    // bf16 rounds operands to 8 mantissa bits: components move by ~2e-4.
    let tolerance = match model.precision() {
        Precision::F32 => 1e-4,
        Precision::Bf16 => 1e-3,
    };
    let ours = check_against_reference(&model, 0.999, tolerance);
    let f32_model = MiniLm::load_in(&common::model_dir(), 4, Precision::F32).unwrap();
    let texts: Vec<String> = reference().into_iter().map(|(t, _)| t).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let exact = f32_model.embed(&texts).unwrap();
    for ((text, a), b) in texts.iter().zip(&ours).zip(&exact) {
        let similarity = common::cosine(a, b);
        assert!(similarity >= 0.9999, "{text:?}: cosine to f32 {similarity}");
    }
}

/// Asking for bf16 on a CPU without it, or on a forced path other than
/// `avx512bf16`, is a clear error, not a crash or a silent f32.
#[test]
fn bf16_precision_is_refused_without_cpu_support() {
    let result = MiniLm::load_in(&common::model_dir(), 4, Precision::Bf16);
    if Isa::active() == Isa::Avx512Bf16 {
        assert_eq!(result.unwrap().precision(), Precision::Bf16);
    } else {
        let error = result.err().expect("refused").to_string();
        assert!(
            error.contains("AVX-512 BF16") || error.contains("needs the avx512bf16 path"),
            "{error}"
        );
    }
}

/// CI runs this file once per forced path (`BERT_CPU_ISA`): each run must
/// really be on the path it names, or the per-path runs prove nothing.
#[test]
fn the_forced_kernel_path_is_the_one_that_runs() {
    let model = MiniLm::load(&common::model_dir(), 4).expect("model installed");
    match std::env::var("BERT_CPU_ISA") {
        Ok(name) if !name.is_empty() => {
            assert_eq!(Isa::active().name(), name);
            let want = if name == "avx512bf16" {
                Precision::Bf16
            } else {
                Precision::F32
            };
            assert_eq!(model.precision(), want, "BERT_CPU_ISA={name}");
        }
        _ => assert_eq!(Isa::active(), Isa::detect()),
    }
}

/// A path this CPU lacks, or a name that is no path, stops the daemon at
/// start with a message that names the variable and the paths it can run.
#[test]
fn the_daemon_refuses_to_start_on_a_kernel_path_the_cpu_lacks() {
    let missing = Isa::ALL
        .into_iter()
        .find(|isa| !isa.supported())
        .expect("no CPU has both x86 and ARM paths");
    for (value, expected) in [
        (missing.name(), "this CPU does not have"),
        ("sse9", "is not a known path"),
    ] {
        let state = tempfile::tempdir().unwrap();
        let mut command = common::binary("http://127.0.0.1:9", state.path());
        command
            .arg("serve")
            .env(
                "CHROMA_SYNCD_LISTEN",
                format!("127.0.0.1:{}", common::free_port()),
            )
            .env("BERT_CPU_ISA", value)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = command.spawn().unwrap();
        let output = common::wait_with_timeout(child, std::time::Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "BERT_CPU_ISA={value} started: {stderr}"
        );
        assert!(
            stderr.contains(&format!("BERT_CPU_ISA={value}")),
            "{stderr}"
        );
        assert!(stderr.contains(expected), "{stderr}");
        assert!(stderr.contains("portable"), "{stderr}");
    }
}

#[test]
fn a_missing_model_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let error = MiniLm::load(dir.path(), 8)
        .err()
        .expect("loading fails")
        .to_string();
    assert!(error.contains("config.json is missing"), "{error}");
    assert!(error.contains("CHROMA_SYNCD_MODEL_DIR"), "{error}");
}
