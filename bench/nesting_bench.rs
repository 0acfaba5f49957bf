//! Hostile nesting: how long extracting and chunking one document takes, per
//! shape and depth, on a thread with a 2 MiB stack (the daemon's have 16 MiB).
//! Not a test: run it with
//! `cargo test --release --test nesting_bench -- --ignored --nocapture`.
//! Before the bounds of `src/nesting.rs`, 4,000 nested brackets in a `.py`
//! file took 411 s here, 3,000 nested Rust blocks and a 100,000-term `1 + …`
//! chain over 20 s each, and 150,000 nested `<div>`s overflowed the stack.

use std::time::Instant;

use chroma_syncd::chunk::Chunker;
use chroma_syncd::extract::extract;

fn document(shape: &str, depth: usize) -> (&'static str, String) {
    let wrap = |open: &str, close: &str, inner: &str| {
        format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
    };
    match shape {
        "html-divs" => ("a.html", wrap("<div>", "</div>", "x")),
        "html-unclosed" => ("b.html", format!("{}x", "<span><em>".repeat(depth))),
        "html-tables" => ("c.html", wrap("<table><tr><td>", "</td></tr></table>", "x")),
        "py-brackets" => ("d.py", format!("x = {}", wrap("[", "]", "1"))),
        "js-parens" => ("e.js", format!("f{}", wrap("(", ")", "0"))),
        "rs-blocks" => ("f.rs", format!("fn f() {{ {} }}", wrap("{", "}", ""))),
        "rs-chain" => (
            "g.rs",
            format!("fn f() -> u32 {{ {}1 }}", "1 + ".repeat(depth)),
        ),
        "md-quotes" => ("h.md", format!("{} q", ">".repeat(depth))),
        "md-lists" => ("i.md", format!("{}x", "- ".repeat(depth))),
        // Wide rather than deep: `depth` lines of flat code.
        "py-wide" => ("j.py", "x = 1\n".repeat(depth)),
        _ => unreachable!(),
    }
}

#[test]
#[ignore]
fn nesting_bench() {
    let shapes = [
        "html-divs",
        "html-unclosed",
        "html-tables",
        "py-brackets",
        "js-parens",
        "rs-blocks",
        "rs-chain",
        "md-quotes",
        "md-lists",
        "py-wide",
    ];
    println!("| shape | depth | bytes | chunks | ms |\n|---|---|---|---|---|");
    for shape in shapes {
        for depth in [500, 4_000, 150_000] {
            let (key, text) = document(shape, depth);
            let bytes = text.len();
            let (chunks, ms) = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let started = Instant::now();
                    let chunker = Chunker::new(None, 256);
                    let chunks = extract(key, None, text.as_bytes())
                        .map(|e| chunker.chunk(&e, None).chunks.len())
                        .unwrap_or(0);
                    (chunks, started.elapsed().as_secs_f64() * 1e3)
                })
                .unwrap()
                .join()
                .unwrap();
            println!("| {shape} | {depth} | {bytes} | {chunks} | {ms:.1} |");
        }
    }
}
