//! User story: a collection's sparse vectors are only useful if a Chroma
//! client embedding its query with `ChromaBm25EmbeddingFunction` lands in
//! the same space. Our BM25 must give chromadb's indices exactly and its
//! values within 1e-6, on text of every kind: punctuation, stopwords,
//! repeated and very long tokens, accents, other scripts, numbers of every
//! sort, emoji.

mod common;

use std::path::Path;

use chroma_syncd::embed::bm25::Bm25;
use common::*;
use serde_json::Value;

/// A few hundred varied texts, made deterministically.
fn texts() -> Vec<String> {
    let pieces = [
        "The quick brown fox jumps over the lazy dog.",
        "don't STOP the Running dogs dogs dogs",
        "Usain Bolt's top speed reached ~27.8 mph (44.72 km/h)",
        "snake_case_identifiers and CamelCaseNames in code_blocks",
        "naïve café résumé coöperate Ångström façade",
        "Ελληνικά κείμενα με τόνους και σίγμα τελικό ς",
        "Русский текст: бегущие собаки, быстрые лисы!",
        "中文文本没有空格分隔词语",
        "हिन्दी पाठ में मात्राएँ होती हैं",
        "العربية نص مع علامات",
        "numbers ² ³ ½ Ⅻ ٣ 42 3.14159 1e-9",
        "emoji 🚀🔥 mixed👍text ❤️ end",
        "tabs\tand\nnewlines\r\nand\u{a0}no-break\u{2003}spaces",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        "a-very-long-hyphenated-compound-word-that-keeps-going-and-going-on",
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx (42 x's: over the limit)",
        "added paste evening organization emergency meteorologist interval",
        "İstanbul ǅemal ẞtraße Final Σίσυφος ΟΔΟΣ",
        "!!! ??? ... --- *** ((( )))",
        "",
        "the of and a an to in is it",
        "URLs like https://example.com/path?q=1&r=2 and emails a.b@c.org",
        "# Heading\n\n- list item one\n- list item two\n\n```rust\nfn main() {}\n```",
    ];
    let mut out: Vec<String> = pieces.iter().map(|p| p.to_string()).collect();
    // Pairs and triples of pieces, repeated words: lengths vary, so does n.
    for i in 0..pieces.len() {
        for j in 0..pieces.len() {
            if (i * 7 + j * 3) % 2 == 0 {
                out.push(format!("{} {}", pieces[i], pieces[j]));
            }
        }
        out.push(pieces[i].repeat(i % 5 + 1));
    }
    out
}

#[test]
fn our_bm25_vectors_are_chromadbs() {
    let texts = texts();
    assert!(texts.len() >= 250, "{}", texts.len());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.json");
    std::fs::write(&input, serde_json::to_vec(&texts).unwrap()).unwrap();
    let output = std::process::Command::new(venv().join("bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bm25.py"))
        .arg(&input)
        .output()
        .expect("running chromadb's BM25");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(theirs.len(), texts.len());
    let bm25 = Bm25::default();
    let mut nonempty = 0;
    for (text, their) in texts.iter().zip(&theirs) {
        let ours = bm25.embed(text);
        let indices: Vec<u32> = serde_json::from_value(their["indices"].clone()).unwrap();
        let values: Vec<f64> = serde_json::from_value(their["values"].clone()).unwrap();
        assert_eq!(ours.indices, indices, "indices of {text:?}");
        assert_eq!(ours.values.len(), values.len());
        for (a, b) in ours.values.iter().zip(&values) {
            assert!((a - b).abs() <= 1e-6, "value of {text:?}: {a} vs {b}");
        }
        nonempty += usize::from(!indices.is_empty());
    }
    assert!(nonempty > texts.len() / 2, "most texts have terms");
}
