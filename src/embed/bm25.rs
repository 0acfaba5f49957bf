//! `Chroma/BM25` sparse vectors, exactly as chromadb's
//! `ChromaBm25EmbeddingFunction` (`"chroma_bm25"`) computes them, so that a
//! Chroma client embedding its query with that function meets our
//! document vectors in the same space.
//!
//! The recipe (chromadb 1.5.9, `utils/embedding_functions/
//! chroma_bm25_embedding_function.py` and `schemas/bm25_tokenizer.py`):
//! every run of characters that are neither word characters (Python's `\w`:
//! Unicode letters, numbers, `_`) nor whitespace becomes a space; the text
//! is lower-cased and split at whitespace; NLTK's 179 English stopwords and
//! tokens longer than 40 characters are dropped; the rest are stemmed with
//! Snowball English; each stem's index is `|murmur3_x86_32(utf8, seed 0)|`
//! taken as a signed 32-bit integer; a stem's value is the BM25 term
//! weight `tf·(k+1) / (tf + k·(1 − b + b·n/avgdl))` with k = 1.2, b = 0.75,
//! the fixed avgdl = 256 and n the document's token count. Indices are
//! ascending and unique (stems whose hashes collide add up).
//!
//! The stemmer is Snowball's 2.x English (`rust-stemmers`), as Chroma's Rust
//! and JS clients use; Python's `snowballstemmer` 3.x changed about 50 of
//! half a million English stems (`added`: `ad` → `add`), and chromadb does
//! not pin it. Values are computed in f64, as Python does.

use std::collections::{BTreeMap, HashSet};

use rust_stemmers::{Algorithm, Stemmer};
use unicode_general_category::{GeneralCategory, get_general_category};

/// The name Chroma records for this embedding function.
pub const NAME: &str = "chroma_bm25";

/// NLTK's English stopwords, chromadb's `DEFAULT_ENGLISH_STOPWORDS`.
/// (The ones with apostrophes can never match: the apostrophe splits them
/// first. They are kept so the list is the same.)
pub const ENGLISH_STOPWORDS: [&str; 179] = [
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "ain",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "aren",
    "aren't",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "couldn",
    "couldn't",
    "d",
    "did",
    "didn",
    "didn't",
    "do",
    "does",
    "doesn",
    "doesn't",
    "doing",
    "don",
    "don't",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "hadn",
    "hadn't",
    "has",
    "hasn",
    "hasn't",
    "have",
    "haven",
    "haven't",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "isn",
    "isn't",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "ll",
    "m",
    "ma",
    "me",
    "mightn",
    "mightn't",
    "more",
    "most",
    "mustn",
    "mustn't",
    "my",
    "myself",
    "needn",
    "needn't",
    "no",
    "nor",
    "not",
    "now",
    "o",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "re",
    "s",
    "same",
    "shan",
    "shan't",
    "she",
    "she's",
    "should",
    "should've",
    "shouldn",
    "shouldn't",
    "so",
    "some",
    "such",
    "t",
    "than",
    "that",
    "that'll",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "ve",
    "very",
    "was",
    "wasn",
    "wasn't",
    "we",
    "were",
    "weren",
    "weren't",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "won",
    "won't",
    "wouldn",
    "wouldn't",
    "y",
    "you",
    "you'd",
    "you'll",
    "you're",
    "you've",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// A sparse vector: ascending, unique indices and their values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f64>,
}

/// The BM25 function with Chroma's parameters (its defaults unless a
/// collection's recorded config says otherwise).
pub struct Bm25 {
    pub k: f64,
    pub b: f64,
    pub avg_doc_length: f64,
    pub token_max_length: usize,
    stopwords: HashSet<String>,
    stemmer: Stemmer,
}

impl Default for Bm25 {
    fn default() -> Self {
        Bm25 {
            k: 1.2,
            b: 0.75,
            avg_doc_length: 256.0,
            token_max_length: 40,
            stopwords: ENGLISH_STOPWORDS.iter().map(|w| w.to_string()).collect(),
            stemmer: Stemmer::create(Algorithm::English),
        }
    }
}

impl Bm25 {
    /// The stems of `text` that count, in order.
    pub fn tokens(&self, text: &str) -> Vec<String> {
        let cleaned: String = text
            .chars()
            .map(|c| {
                if is_word(c) || c.is_whitespace() {
                    c
                } else {
                    ' '
                }
            })
            .collect();
        cleaned
            .to_lowercase()
            .split_whitespace()
            .filter(|token| !self.stopwords.contains(*token))
            .filter(|token| token.chars().count() <= self.token_max_length)
            .map(|token| self.stemmer.stem(token).trim().to_string())
            .filter(|stem| !stem.is_empty())
            .collect()
    }

    pub fn embed(&self, text: &str) -> SparseVector {
        let tokens = self.tokens(text);
        let length = tokens.len() as f64;
        let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
        for token in &tokens {
            *counts.entry(index_of(token)).or_default() += 1;
        }
        let norm = self.k * (1.0 - self.b + self.b * length / self.avg_doc_length);
        let (indices, values) = counts
            .into_iter()
            .map(|(index, tf)| {
                let tf = f64::from(tf);
                (index, tf * (self.k + 1.0) / (tf + norm))
            })
            .unzip();
        SparseVector { indices, values }
    }

    /// The config Chroma records for the function (its `get_config()`).
    pub fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "k": self.k,
            "b": self.b,
            "avg_doc_length": self.avg_doc_length,
            "token_max_length": self.token_max_length,
            "include_tokens": false,
        })
    }
}

/// Python's `\w` for `str` patterns: general categories L* and N*, and `_`.
fn is_word(c: char) -> bool {
    c == '_'
        || matches!(
            get_general_category(c),
            GeneralCategory::UppercaseLetter
                | GeneralCategory::LowercaseLetter
                | GeneralCategory::TitlecaseLetter
                | GeneralCategory::ModifierLetter
                | GeneralCategory::OtherLetter
                | GeneralCategory::DecimalNumber
                | GeneralCategory::LetterNumber
                | GeneralCategory::OtherNumber
        )
}

/// `abs(mmh3.hash(token, seed=0))`: MurmurHash3 x86_32 of the UTF-8 bytes
/// as a signed integer, made positive (−2³¹ becomes 2³¹).
fn index_of(token: &str) -> u32 {
    let hash = murmur3::murmur3_32(&mut token.as_bytes(), 0).expect("reading a byte slice");
    (hash as i32).unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// chromadb's own test vectors (`test_chroma_bm25_embedding_function.py`)
    /// and two more computed by its Python function.
    #[test]
    fn vectors_match_chromadbs() {
        let bm25 = Bm25::default();
        let cases: &[(&str, &[u32], &[f64])] = &[
            (
                "Usain Bolt's top speed reached ~27.8 mph (44.72 km/h)",
                &[
                    230246813, 395514983, 458027949, 488165615, 729632045, 734978415, 997512866,
                    1114505193, 1381820790, 1501587190, 1649421877, 1837285388,
                ],
                &[1.6391152502910362; 12],
            ),
            (
                "The   space-time   continuum   WARPS   near   massive   objects...",
                &[
                    90097469, 519064992, 737893654, 1110755108, 1950894484, 2031641008, 2058513491,
                ],
                &[1.6608670008846949; 7],
            ),
            (
                "don't STOP the Running dogs dogs",
                &[243905464, 1312749093, 1459505690],
                &[1.6741973840665876, 1.9014179608372723, 1.6741973840665876],
            ),
        ];
        for (text, indices, values) in cases {
            let vector = bm25.embed(text);
            assert_eq!(vector.indices, *indices, "{text}");
            for (got, want) in vector.values.iter().zip(values.iter()) {
                assert!((got - want).abs() < 1e-12, "{text}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn an_index_is_the_absolute_signed_hash() {
        // mmh3.hash('add') == -953378023
        assert_eq!(index_of("add"), 953378023);
        assert!(Bm25::default().embed("the of and").indices.is_empty());
    }
}
