//! User story: a bucket holds documents nobody vetted — generated HTML nested
//! a hundred thousand elements deep, minified code of bracket after bracket,
//! markdown quoted inside itself. The daemon indexes what it can of each, or
//! skips it with a reason, and the process that read them is the process
//! still serving afterwards: no document can take the daemon down.

mod common;

use common::*;
use serde_json::json;

/// The hostile documents, each with a sentence that must survive if the
/// document is indexed at all.
fn hostile_documents() -> Vec<(&'static str, String, &'static str)> {
    let deep = 150_000;
    vec![
        (
            "deep/divs.html",
            format!(
                "<html><body>{}<p>needle in nested divs</p>{}</body></html>",
                "<div>".repeat(deep),
                "</div>".repeat(deep)
            ),
            "text/html",
        ),
        (
            "deep/selfclosed.html",
            format!("<p>needle in self-closed divs</p>{}", "<div/>".repeat(deep)),
            "text/html",
        ),
        (
            "deep/unclosed.html",
            format!("<b>needle in unclosed tags {}", "<span><i>".repeat(deep)),
            "text/html",
        ),
        (
            "deep/brackets.py",
            format!(
                "# needle in python\nx = {}1{}\n",
                "[".repeat(60_000),
                "]".repeat(60_000)
            ),
            "text/x-python",
        ),
        (
            "deep/parens.js",
            format!(
                "// needle in javascript\nconst x = {}1{};\n",
                "(".repeat(60_000),
                ")".repeat(60_000)
            ),
            "application/javascript",
        ),
        (
            "deep/chain.rs",
            format!(
                "// needle in rust\nfn f() -> u32 {{ {}1 }}\n",
                "1 + ".repeat(100_000)
            ),
            "text/plain",
        ),
        (
            "deep/quotes.md",
            format!(
                "# needle in markdown\n\n{} deep quote\n",
                ">".repeat(100_000)
            ),
            "text/markdown",
        ),
        (
            "deep/lists.md",
            (0..1_000)
                .map(|i| format!("{}- needle item {i}\n", "  ".repeat(i)))
                .collect(),
            "text/markdown",
        ),
        (
            "deep/arrays.json",
            format!(
                "{}\"needle in json\"{}",
                "[".repeat(100_000),
                "]".repeat(100_000)
            ),
            "application/json",
        ),
    ]
}

#[test]
fn hostile_documents_end_in_chunks_or_a_reason_and_the_daemon_survives() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    let mut daemon = Daemon::start(&chroma.url());
    let pid = daemon.pid().expect("the daemon runs");

    s3.create_bucket("untrusted");
    let documents = hostile_documents();
    for (key, body, content_type) in &documents {
        s3.put("untrusted", key, body.clone(), Some(*content_type));
    }
    s3.put(
        "untrusted",
        "deep/plain.md",
        "# A normal guide\n\nThe normal guide survives its neighbours.\n",
        Some("text/markdown"),
    );
    let source_id = daemon.create_source(s3_source(&s3, "untrusted", "hostile", Some("deep/")));

    let mut jobs = Vec::new();
    for (key, _, _) in &documents {
        jobs.push((*key, daemon.invoke(&source_id, json!({"object_key": key}))));
    }
    let plain = daemon.invoke(&source_id, json!({"object_key": "deep/plain.md"}));

    for (key, job) in &jobs {
        let job = daemon.wait_complete(job);
        let upserted = job["stats"]["chunks_upserted"].as_u64().unwrap_or(0);
        let skipped = job["stats"]["skipped_reasons"].to_string();
        assert!(
            upserted > 0 || skipped.contains(key),
            "{key}: neither chunks nor a reason: {job}"
        );
        // One attempt: the document did not kill a process and get retried.
        assert_eq!(job["attempt"], 1, "{key}: {job}");
    }
    daemon.wait_complete(&plain);

    let records = chroma.records("testdb", "hostile");
    for (key, _, _) in &documents {
        let chunks = records.of_key(key);
        if chunks.is_empty() {
            continue; // skipped with its reason (checked above)
        }
        assert!(
            chunks.iter().any(|r| r.document.contains("needle")),
            "{key}: its text was lost"
        );
    }
    assert!(
        records
            .of_key("deep/plain.md")
            .iter()
            .any(|r| r.document.contains("survives its neighbours"))
    );
    assert!(daemon.is_running(), "the daemon process died");
    assert_eq!(daemon.pid(), Some(pid), "the daemon is the same process");
}

mod generated {
    //! Property: whatever nesting a generated document has, extracting and
    //! chunking it on a thread with a 2 MiB stack (the daemon's threads have
    //! `PARSER_STACK_BYTES`, 16 MiB) returns chunks holding its text, and
    //! never overflows the stack (which would abort this test process).

    use chroma_syncd::chunk::Chunker;
    use chroma_syncd::extract::extract;
    use proptest::prelude::*;

    /// A document named `key` whose `depth` levels nest `open`/`close`
    /// around a known word, in one of several shapes.
    fn document(shape: usize, depth: usize) -> (&'static str, String) {
        let wrap = |open: &str, close: &str, inner: &str| {
            format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
        };
        match shape % 17 {
            0 => ("a.html", wrap("<div>", "</div>", "needle")),
            1 => ("b.html", format!("{}needle", "<span><em>".repeat(depth))),
            2 => (
                "c.htm",
                wrap("<table><tr><td>", "</td></tr></table>", "needle"),
            ),
            3 => ("d.py", format!("# needle\nx = {}", wrap("[", "]", "1"))),
            4 => ("e.js", format!("// needle\nf{}", wrap("(", ")", "0"))),
            5 => (
                "f.rs",
                format!("// needle\nfn f() {{ {}1 }}", "1 + ".repeat(depth)),
            ),
            6 => (
                "g.go",
                format!("// needle\nfunc f() {}", wrap("{", "}", "")),
            ),
            7 => ("h.md", format!("# needle\n\n{} q", ">".repeat(depth))),
            8 => ("i.md", format!("needle\n\n{}x", "- ".repeat(depth))),
            9 => ("j.html", wrap("<blockquote>", "</blockquote>", "needle")),
            10 => ("k.html", format!("{}needle", "<ul><li>".repeat(depth))),
            // Markup that looks shallow to a tag count but is not to a parser.
            11 => ("l.html", format!("{}needle", "<div/>".repeat(depth))),
            12 => ("m.html", format!("{}needle", "<div></x>".repeat(depth))),
            13 => ("n.html", format!("<!-->{}needle", "<div>".repeat(depth))),
            14 => (
                "o.html",
                format!("<p>needle</p><svg><title>{}", "<div>".repeat(depth)),
            ),
            // Quotes whose every line the converter re-prefixes per level.
            15 => (
                "p.html",
                format!(
                    "{}{}",
                    "<blockquote>".repeat(depth.min(600)),
                    "<p>needle</p>".repeat(2_000)
                ),
            ),
            _ => ("q.md", format!("needle\n\n{}x", "-\t".repeat(depth))),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        #[test]
        fn any_nesting_ends_in_chunks_without_overflowing_the_stack(
            shape in 0usize..17,
            depth in prop_oneof![0usize..2_000, 400usize..700, 2_000usize..200_000],
        ) {
            let (key, text) = document(shape, depth);
            let outcome = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let chunker = Chunker::new(None, 256);
                    extract(key, None, text.as_bytes())
                        .map(|extracted| chunker.chunk(&extracted, None).chunks)
                })
                .unwrap()
                .join()
                .expect("extraction panicked");
            let chunks = outcome.map_err(|skipped| skipped.0);
            prop_assert!(chunks.is_ok(), "{key} at depth {depth} was skipped: {chunks:?}");
            let chunks = chunks.unwrap();
            prop_assert!(
                chunks.iter().any(|chunk| chunk.text.contains("needle")),
                "{key} at depth {depth}: the text was lost"
            );
        }
    }
}
