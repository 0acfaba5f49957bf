//! Chunking with the model's real tokenizer: skipping the tokenizer for spans
//! that cannot fit (a speed-up) must not move a single chunk boundary, since
//! chunk IDs and re-sync skipping depend on them.

mod common;

use chroma_syncd::chunk::{Chunker, token_floor};
use chroma_syncd::embed::MiniLm;
use chroma_syncd::extract::{CodeLanguage, Extracted, TextKind};
use tokenizers::Tokenizer;

fn tokenizer() -> Tokenizer {
    MiniLm::load(&common::model_dir(), 4)
        .expect("model installed by scripts/install-model")
        .tokenizer()
}

/// The repository's own documents and code: real markdown, Rust and prose.
fn documents() -> Vec<Extracted> {
    let mut documents = Vec::new();
    for path in ["README.md", "ARCHITECTURE.md", "config/chroma-syncd.toml"] {
        let text = std::fs::read_to_string(path).unwrap();
        let kind = if path.ends_with(".md") {
            TextKind::Markdown
        } else {
            TextKind::Plain
        };
        documents.push(Extracted { text, kind });
    }
    for path in ["src/chunk.rs", "src/pipeline/mod.rs", "src/config.rs"] {
        documents.push(Extracted {
            text: std::fs::read_to_string(path).unwrap(),
            kind: TextKind::Code(CodeLanguage::Rust),
        });
    }
    // Python from the benchmark, and one long unbroken paragraph.
    documents.push(Extracted {
        text: std::fs::read_to_string("bench/e2e.py").unwrap(),
        kind: TextKind::Code(CodeLanguage::Python),
    });
    documents.push(Extracted {
        text: "word ".repeat(3000) + &"x".repeat(5000),
        kind: TextKind::Plain,
    });
    documents
}

#[test]
fn the_token_floor_never_exceeds_the_real_token_count() {
    let mut tokenizer = tokenizer();
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None).unwrap();
    let tricky = [
        "plain words, and punctuation!",
        "ab\u{0b}cd\u{0c}ef\u{01}gh", // control characters vanish
        "caf\u{e9} na\u{ef}ve \u{2014} dash", // accents, Unicode punctuation
        "\u{4e2d}\u{6587}\u{5b57} CJK", // one token per ideograph
        "ab\u{a0}cd\u{200b}ef",       // NBSP, zero-width space
        "K\u{212a}elvin",             // Kelvin sign lowercases to k
        "fn main() { let x = a.b::<T>(&c)?; }", // code
        &"supercalifragilistic".repeat(10), // one word past 100 chars: [UNK]
        "   \t\r\n  ",
        "",
    ];
    let mut texts: Vec<String> = tricky.iter().map(|t| t.to_string()).collect();
    for document in documents() {
        // Windows of every document, cut at char boundaries.
        let text = document.text;
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + 1500).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            texts.push(text[start..end].to_string());
            start = end.max(start + 1);
            while start < text.len() && !text.is_char_boundary(start) {
                start += 1;
            }
        }
    }
    for text in &texts {
        let real = tokenizer.encode_fast(text.as_str(), false).unwrap().len();
        let floor = token_floor(text);
        assert!(floor <= real, "floor {floor} > {real} tokens for {text:?}");
    }
    // And it is a useful bound on real text, not trivially zero.
    let readme = std::fs::read_to_string("README.md").unwrap();
    let real = tokenizer.encode_fast(readme.as_str(), false).unwrap().len();
    assert!(
        token_floor(&readme) * 2 > real,
        "{} vs {real}",
        token_floor(&readme)
    );
}

#[test]
fn skipping_spans_that_cannot_fit_changes_no_chunk() {
    let fast = Chunker::new(Some(tokenizer()), 256);
    let exact = fast.clone().without_size_shortcut();
    for document in documents() {
        let ours = fast.chunk(&document, None);
        let reference = exact.chunk(&document, None);
        assert!(!ours.chunks.is_empty());
        assert_eq!(
            ours,
            reference,
            "{:?}",
            &document.text[..60.min(document.text.len())]
        );
    }
}
