//! The in-process embedder reproduces all-MiniLM-L6-v2 as sentence-transformers
//! computes it: the fixture's vectors come from an independent numpy
//! implementation (tests/reference/make_reference.py), whose "hello world"
//! matches sentence-transformers' published values.

mod common;

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

#[test]
fn vectors_match_the_reference_model() {
    let model =
        MiniLm::load(&common::model_dir(), 4).expect("model installed by scripts/install-model");
    assert_eq!(model.dimension(), 384);
    let sentences = reference();
    assert!(sentences.len() >= 10);
    let texts: Vec<&str> = sentences.iter().map(|(t, _)| t.as_str()).collect();
    // Batched (4 per batch, mixed lengths, padded) must equal one-by-one.
    let batched = model.embed(&texts).unwrap();
    for ((text, expected), got) in sentences.iter().zip(&batched) {
        let similarity = common::cosine(got, expected);
        assert!(similarity >= 0.999, "{text:?}: cosine {similarity}");
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
        assert!((got - want).abs() < 1e-4, "{got} vs {want}");
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
