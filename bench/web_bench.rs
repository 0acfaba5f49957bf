//! Crawl throughput on a generated documentation site (31 section pages, 300
//! article pages with headings, lists and code) served on loopback: pages/s
//! and the share of wall time spent fetching, extracting, embedding and
//! writing, from the job's own stats; then a re-crawl with nothing changed.
//! For each crawl, what it cost the site, from the fixture server's log:
//! requests (how many conditional, how many answered 304) and the bytes of
//! the answers' bodies (headers not counted). Results: `bench/results/web.md`.
//!
//! Run: `cargo test --release --test web_bench -- --ignored --nocapture`

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::web::FixtureSite;
use common::*;
use serde_json::{Value, json};

fn generate_site(dir: &std::path::Path, sections: usize, articles: usize) {
    let mut index =
        String::from("<html><head><title>Docs home</title></head><body><main><h1>Docs</h1><ul>");
    for s in 0..sections {
        index.push_str(&format!("<li><a href=\"/s{s}/\">Section {s}</a></li>"));
        let section_dir = dir.join(format!("s{s}"));
        std::fs::create_dir_all(&section_dir).unwrap();
        let mut section = format!(
            "<html><head><title>Section {s}</title></head><body><nav><a href=\"/\">Home</a></nav><main><h1>Section {s}</h1><ul>"
        );
        for a in 0..articles {
            section.push_str(&format!("<li><a href=\"a{a}.html\">Article {a}</a></li>"));
            let mut article = format!(
                "<html><head><title>Article {s}.{a}</title></head><body><nav><a href=\"/\">Home</a> <a href=\"./\">Section</a></nav><main><h1>Article {s}.{a}</h1>"
            );
            for p in 0..4 {
                article.push_str(&format!(
                    "<h2>Topic {p}</h2><p>Section {s} article {a} explains topic {p}: how the daemon claims jobs, \
                     resolves sources, chunks documents and writes them to Chroma, with enough detail that a reader \
                     can follow every step of the pipeline from the queue to the collection.</p>\
                     <ul><li>First point about topic {p}.</li><li>Second point about topic {p}.</li></ul>\
                     <pre><code>chroma-syncd invocation create SOURCE --target-collection-name c{s}{a}{p}\n</code></pre>"
                ));
            }
            article.push_str("</main><footer>footer</footer></body></html>");
            std::fs::write(section_dir.join(format!("a{a}.html")), article).unwrap();
        }
        section.push_str("</ul></main></body></html>");
        std::fs::write(section_dir.join("index.html"), section).unwrap();
    }
    index.push_str("</ul></main></body></html>");
    std::fs::write(dir.join("index.html"), index).unwrap();
}

fn share(stats: &Value, name: &str, total: f64) -> String {
    let ms = stats[name].as_f64().unwrap_or(0.0);
    format!("{name} {:.0} ms ({:.0}%)", ms, 100.0 * ms / total)
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn crawl_a_generated_docs_site() {
    let dir = tempfile::tempdir().unwrap();
    generate_site(dir.path(), 30, 10);
    let site = FixtureSite::serve(dir.path());
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        "workers = 1\n[web]\nrequests_per_second = 1000.0\nmax_concurrency_per_host = 4\n",
        &[("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS", "true")],
    );
    let source = daemon.create_source(json!({
        "database_name": "bench",
        "web_scrape": {"starting_url": site.url("/"), "max_depth": 3}
    }));
    let mut costs = Vec::new();
    for round in ["first crawl", "re-crawl, nothing changed"] {
        site.clear_hits();
        let id = daemon.invoke(&source, json!({"target_collection_name": "bench-site"}));
        let job = daemon.wait_finished(&id, Duration::from_secs(3 * 3600));
        assert!(job["status"]["complete"].is_object(), "{job}");
        let stats = &job["stats"];
        let wall = job["status"]["complete"]["duration_ms"].as_f64().unwrap();
        let pages =
            stats["documents"].as_f64().unwrap() + stats["unchanged"].as_f64().unwrap_or(0.0);
        println!(
            "{round}: {pages} pages ({} embedded, {} unchanged), {} chunks, {:.1} s, {:.1} pages/s; {}, {}, {}, {}",
            stats["documents"],
            stats["unchanged"],
            stats["chunks_upserted"],
            wall / 1000.0,
            pages * 1000.0 / wall,
            share(stats, "fetch_ms", wall),
            share(stats, "extract_ms", wall),
            share(stats, "embed_ms", wall),
            share(stats, "write_ms", wall),
        );
        let hits = site.hits();
        let bytes: u64 = hits.iter().map(|h| h.bytes).sum();
        println!(
            "{round}: {} requests ({} conditional, {} answered 304), {bytes} body bytes",
            hits.len(),
            hits.iter().filter(|h| h.conditional).count(),
            hits.iter().filter(|h| h.status == 304).count(),
        );
        costs.push((hits.len(), bytes));
    }
    let ((first_requests, first_bytes), (again_requests, again_bytes)) = (costs[0], costs[1]);
    println!(
        "re-crawl / first crawl: requests {:.3}, body bytes {:.4}",
        again_requests as f64 / first_requests as f64,
        again_bytes as f64 / first_bytes.max(1) as f64,
    );
}
