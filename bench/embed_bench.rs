//! Embedding throughput of the in-process all-MiniLM-L6-v2 embedder on a fixed
//! set of 64 realistic chunks (markdown prose and code, ~200 model tokens each,
//! generated deterministically from a seed), batch size 16 — the shape the
//! daemon embeds.
//!
//! Run: `cargo test --release --test embed_bench -- --ignored --nocapture`
//!
//! - `EMBED_BENCH_DUMP=/path/texts.json` writes the texts (`{"texts": [...]}`)
//!   so `bench/embed_peer.py` can time sentence-transformers on the same input.
//! - `EMBED_BENCH_VECTORS=/path/ours.json` writes our vectors
//!   (`{"vectors": [[...], ...]}`) for the peer to compare by cosine.
//! - `EMBED_BENCH_ROUNDS` (default 5) timed passes over the 64 chunks.
//!
//! Prints chunks/s (wall clock) and chunks per CPU-second (getrusage via
//! `/proc/self/stat`), the latter being the fairer figure when other work
//! shares the machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use chroma_syncd::embed::{Embedder, MiniLm};

const CHUNKS: usize = 64;
const BATCH: usize = 16;

/// Small deterministic generator (64-bit LCG), so every run and the peer see
/// the same texts.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() as usize) % items.len()]
    }
}

const WORDS: &[&str] = &[
    "the",
    "sync",
    "daemon",
    "reads",
    "objects",
    "from",
    "a",
    "bucket",
    "and",
    "splits",
    "them",
    "into",
    "chunks",
    "that",
    "are",
    "embedded",
    "with",
    "model",
    "before",
    "upsert",
    "collection",
    "each",
    "source",
    "has",
    "schedule",
    "worker",
    "claims",
    "job",
    "lease",
    "heartbeat",
    "retry",
    "backoff",
    "when",
    "server",
    "returns",
    "error",
    "configuration",
    "vector",
    "metadata",
    "document",
    "repository",
    "branch",
    "commit",
    "file",
    "page",
    "crawl",
    "sitemap",
    "robots",
    "token",
    "limit",
    "batch",
    "size",
    "latency",
    "throughput",
    "queue",
    "postgres",
    "sqlite",
    "index",
    "query",
    "cosine",
    "similarity",
    "search",
    "results",
    "stale",
    "deleted",
    "hash",
    "content",
    "unchanged",
    "skipped",
    "progress",
    "cancelled",
    "complete",
    "failed",
    "pending",
    "processing",
    "invocation",
    "API",
    "request",
    "response",
    "JSON",
    "HTTP",
    "status",
    "timeout",
    "budget",
    "markdown",
    "HTML",
    "Rust",
    "Python",
    "function",
    "struct",
    "trait",
    "async",
    "runtime",
    "blocking",
    "thread",
    "CPU",
    "memory",
    "cache",
    "disk",
    "network",
    "is",
    "of",
    "to",
    "in",
    "on",
    "for",
    "by",
    "not",
    "only",
    "every",
    "once",
    "again",
    "all",
    "new",
    "old",
    "fast",
];

const IDENTS: &[&str] = &[
    "job",
    "source",
    "chunk",
    "vector",
    "batch",
    "client",
    "queue",
    "lease",
    "retry",
    "config",
    "metadata",
    "document",
    "embedding",
    "collection",
    "hash",
    "offset",
    "limit",
];

fn prose(rng: &mut Lcg, words: usize) -> String {
    let mut text = String::new();
    let mut sentence = 0;
    for i in 0..words {
        let word = rng.pick(WORDS);
        if sentence == 0 {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
        } else {
            text.push_str(word);
        }
        sentence += 1;
        if sentence > 8 && rng.next().is_multiple_of(5) || i + 1 == words {
            text.push_str(". ");
            sentence = 0;
        } else if rng.next().is_multiple_of(11) {
            text.push_str(", ");
        } else {
            text.push(' ');
        }
    }
    text.trim_end().to_string()
}

fn markdown_chunk(rng: &mut Lcg, n: usize) -> String {
    let mut text = format!("## {} {}\n\n", rng.pick(WORDS), n);
    text.push_str(&prose(rng, 70));
    text.push_str("\n\n");
    for _ in 0..3 {
        text.push_str("- ");
        text.push_str(&prose(rng, 12));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&prose(rng, 45));
    text
}

fn code_chunk(rng: &mut Lcg, n: usize) -> String {
    let name = format!("{}_{}_{n}", rng.pick(IDENTS), rng.pick(IDENTS));
    let mut text = format!(
        "/// {}\npub fn {name}(input: &[{}], limit: usize) -> Result<Vec<u64>, Error> {{\n",
        prose(rng, 14),
        rng.pick(&["u8", "String", "Job", "Chunk"])
    );
    text.push_str("    let mut out = Vec::with_capacity(limit);\n");
    for i in 0..7 {
        let a = rng.pick(IDENTS);
        let b = rng.pick(IDENTS);
        text.push_str(&format!(
            "    let {a}_{i} = input.iter().filter(|x| x.{b}() > {}).count();\n",
            rng.next() % 1000
        ));
        text.push_str(&format!(
            "    if {a}_{i} >= limit {{ return Err(Error::{}({a}_{i})); }}\n",
            rng.pick(&["TooMany", "Invalid", "Timeout"])
        ));
        text.push_str(&format!("    out.push({a}_{i} as u64 * {});\n", i + 1));
    }
    text.push_str("    Ok(out)\n}");
    text
}

fn bench_texts() -> Vec<String> {
    let mut rng = Lcg(0x5eed_cafe);
    (0..CHUNKS)
        .map(|n| {
            if n % 3 == 2 {
                code_chunk(&mut rng, n)
            } else {
                markdown_chunk(&mut rng, n)
            }
        })
        .collect()
}

/// User + system CPU seconds of this process (all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the
    // 12th and stime the 13th of those (fields 14 and 15 overall).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

#[test]
#[ignore]
fn embed_throughput() {
    let texts = bench_texts();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    if let Some(path) = std::env::var_os("EMBED_BENCH_DUMP") {
        let json = serde_json::json!({ "texts": texts, "batch_size": BATCH });
        std::fs::write(&path, json.to_string()).unwrap();
        println!("texts written to {}", path.to_string_lossy());
    }
    // The daemon's default: BERT_CPU_ISA when set, else the path measured
    // fastest here (embed::kernels), as `serve` and `run` choose it.
    let state = tempfile::tempdir().unwrap();
    let choice = chroma_syncd::embed::kernels::choose(
        chroma_syncd::config::EmbeddingPrecision::Auto,
        state.path(),
    )
    .expect("choosing the kernels");
    println!(
        "kernels: {} ({}; {}) on {}",
        choice.isa,
        choice.decided.as_str(),
        choice.figures,
        bert_cpu::tune::cpu_identity()
    );
    let model = MiniLm::load(&common::model_dir(), BATCH).expect("model installed");
    let tokenizer = model.tokenizer();
    let lengths: Vec<usize> = refs
        .iter()
        .map(|t| tokenizer.encode(*t, true).unwrap().get_ids().len())
        .collect();
    let tokens: usize = lengths.iter().sum();
    println!(
        "{CHUNKS} chunks, {:.1} tokens/chunk on average (truncated at {}), batch {BATCH}",
        tokens as f64 / CHUNKS as f64,
        model.max_tokens()
    );
    // Issue 29: what share of a padded forward pass would be padding. Ours
    // packs each batch's sequences end to end, so its dense layers multiply
    // real tokens only; a padded batch is `batch × its longest sequence`.
    let padded = |lengths: &[usize]| -> usize {
        lengths
            .chunks(BATCH)
            .map(|batch| batch.len() * batch.iter().max().copied().unwrap_or(0))
            .sum()
    };
    let mut sorted = lengths.clone();
    sorted.sort_unstable();
    println!(
        "padding: {tokens} real tokens; padded to each batch's longest: {} in arrival order          ({:.1}% padding), {} sorted by length as sentence-transformers does ({:.1}% padding);          ours packs: 0% of dense-layer work on padding",
        padded(&lengths),
        100.0 * (1.0 - tokens as f64 / padded(&lengths) as f64),
        padded(&sorted),
        100.0 * (1.0 - tokens as f64 / padded(&sorted) as f64),
    );

    // Warm-up: page the weights in, size allocations, wake the CPU.
    let vectors = model.embed(&refs).unwrap();
    if let Some(path) = std::env::var_os("EMBED_BENCH_VECTORS") {
        let json = serde_json::json!({ "vectors": vectors });
        std::fs::write(&path, json.to_string()).unwrap();
        println!("vectors written to {}", path.to_string_lossy());
    }

    let rounds: usize = std::env::var("EMBED_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let mut best = f64::MAX;
    let cpu_start = cpu_seconds();
    let started = Instant::now();
    for _ in 0..rounds {
        let round = Instant::now();
        let again = model.embed(&refs).unwrap();
        best = best.min(round.elapsed().as_secs_f64());
        assert_eq!(again.len(), CHUNKS);
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_start;
    let chunks = (rounds * CHUNKS) as f64;
    println!(
        "ours: {:.1} chunks/s (mean over {rounds} rounds), {:.1} chunks/s (best round), \
         {:.1} chunks per CPU-second ({cpu:.2} CPU-s in {wall:.2} s wall)",
        chunks / wall,
        CHUNKS as f64 / best,
        chunks / cpu.max(1e-9)
    );
}
