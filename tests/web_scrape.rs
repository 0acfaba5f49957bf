//! User story: a team points the daemon at its documentation site and gets
//! clean markdown chunks with titles and URLs; re-crawls only re-embed what
//! changed, and a default configuration refuses to crawl internal addresses.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::web::FixtureSite;
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// Private networks allowed (the fixture site is on loopback), a 1 s request
/// timeout (the slow page misses it), a 200 kB page cap (the huge page is over).
fn crawl_config() -> String {
    format!(
        "{TEST_CONFIG}\n[web]\ntimeout_seconds = 1\nmax_page_bytes = 200000\n\
         requests_per_second = 200.0\nmax_concurrency_per_host = 2\n"
    )
}

fn start(chroma: &Chroma) -> Daemon {
    Daemon::start_with(
        &chroma.url(),
        &crawl_config(),
        &[("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS", "true")],
    )
}

fn web_source(site: &FixtureSite, extra: Value) -> Value {
    let mut config = json!({"starting_url": site.url("/")});
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    json!({"database_name": "testdb", "web_scrape": config})
}

fn crawl(daemon: &Daemon, source: &str, collection: &str) -> Value {
    let job = daemon.invoke(source, json!({"target_collection_name": collection}));
    daemon.wait_complete(&job)
}

fn pages(chroma: &Chroma, collection: &str) -> BTreeSet<String> {
    chroma
        .records("testdb", collection)
        .rows
        .iter()
        .map(|r| r.metadata["document_key"].as_str().unwrap().to_string())
        .collect()
}

fn urls(site: &FixtureSite, paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| site.url(p)).collect()
}

#[test]
fn depth_limit_and_path_rules_decide_exactly_which_pages_are_stored() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = start(&chroma);

    let depth_one = [
        "/",
        "/docs",
        "/about.html",
        "/orphan.html",
        "/docs/guide.html",
    ];
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"max_depth": 0}), vec!["/"]),
        (json!({"max_depth": 1}), depth_one.to_vec()),
        // /redirect-in lands on the guide at depth 1, so its link to the
        // deep dive is depth 2.
        (
            json!({"max_depth": 2}),
            [
                &depth_one[..],
                &["/docs/api.html", "/docs/deep/level3.html"],
            ]
            .concat(),
        ),
        (
            json!({"max_depth": 4}),
            [
                &depth_one[..],
                &[
                    "/docs/api.html",
                    "/docs/deep/level3.html",
                    "/docs/deep/level4.html",
                ],
            ]
            .concat(),
        ),
        (
            json!({"max_depth": 4, "page_limit": 3}),
            vec!["/", "/docs", "/about.html"],
        ),
        // The starting page is fetched for its links, but stored only if
        // the rules allow it.
        (
            json!({"max_depth": 3, "include_path_regexes": ["^/docs"]}),
            vec![
                "/docs",
                "/docs/guide.html",
                "/docs/api.html",
                "/docs/deep/level3.html",
            ],
        ),
        (
            json!({"max_depth": 4, "exclude_path_regexes": ["/deep/", "api"]}),
            depth_one.to_vec(),
        ),
    ];
    for (index, (settings, expected)) in cases.into_iter().enumerate() {
        let source = daemon.create_source(web_source(&site, settings.clone()));
        site.clear_hits();
        let collection = format!("crawl-{index}");
        let job = crawl(&daemon, &source, &collection);
        assert_eq!(
            pages(&chroma, &collection),
            urls(&site, &expected),
            "{settings}: {job}"
        );
        let hits = site.hits();
        assert!(
            !hits.iter().any(|h| h.path.starts_with("/private/")),
            "robots.txt disallows /private/: {hits:?}"
        );
        assert!(
            !hits.iter().any(|h| h.path.contains("utm_source")),
            "{hits:?}"
        );
        let about = hits.iter().filter(|h| h.path == "/about.html").count();
        assert!(about <= 1, "/about.html fetched {about} times");
    }
}

#[test]
fn pages_become_clean_markdown_chunks_with_titles_and_urls() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 1})));
    let job = crawl(&daemon, &source, "site");
    // The original design's form of the web kind (the seed's bare string cannot carry
    // the database and collection beside it).
    assert_eq!(job["metadata"]["web_scrape"], Value::Null);
    assert_eq!(job["metadata"]["collection_name"], "site");

    let records = chroma.records("testdb", "site");
    let guide_url = site.url("/docs/guide.html");
    let guide = records.of_key(&guide_url);
    assert!(!guide.is_empty());
    let text: String = guide.iter().map(|r| r.document.as_str()).collect();
    for kept in [
        "Install guide",
        "## Configure",
        "chroma-syncd serve --config",
        "listen",
        "Create the config file",
    ] {
        assert!(text.contains(kept), "{kept:?} missing from {text}");
    }
    for dropped in [
        "Site header banner",
        "tracking",
        "footer text",
        "color: red",
    ] {
        assert!(!text.contains(dropped), "{dropped:?} kept in {text}");
    }
    for record in &guide {
        assert_eq!(record.metadata["title"], "Install Guide");
        assert_eq!(record.metadata["url"], guide_url.as_str());
        assert_eq!(record.metadata["chunk_strategy"], "markdown");
        assert_eq!(record.metadata["source_type"], "web_scrape");
        assert!(record.id.starts_with(&sha256_hex(&guide_url)));
        assert!(
            record.metadata["version_key"]
                .as_str()
                .unwrap()
                .starts_with('"'),
            "the ETag"
        );
    }
    assert_eq!(
        records.of_key(&site.url("/about.html"))[0].metadata["title"],
        "About the fixture"
    );

    let reasons = &job["stats"]["skipped_reasons"];
    let reason = |path: &str| reasons[site.url(path)].as_str().unwrap_or("").to_string();
    assert!(reason("/huge.html").contains("limit"), "{reasons}");
    // A linked image is a document read by OCR: this one is cut short.
    assert!(reason("/logo.png").contains("image"), "{reasons}");
    assert!(
        reason("/redirect-out").contains("out of scope"),
        "{reasons}"
    );
    assert!(reason("/slow.html").contains("timed out"), "{reasons}");
}

#[test]
fn a_recrawl_re_embeds_only_changed_pages_and_removes_deleted_ones() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 1})));
    crawl(&daemon, &source, "recrawl");
    let before = pages(&chroma, "recrawl");
    assert!(before.contains(&site.url("/orphan.html")));

    site.write(
        "about.html",
        "<html><head><title>About, revised</title></head><body><main><h1>About</h1>\
         <p>The team grew to four people, and this page says so.</p></main></body></html>",
    );
    site.delete("orphan.html");
    site.clear_hits();
    let job = crawl(&daemon, &source, "recrawl");
    let stats = &job["stats"];
    let records = chroma.records("testdb", "recrawl");
    let about = records.of_key(&site.url("/about.html"));
    assert_eq!(about[0].metadata["title"], "About, revised");
    assert_eq!(
        stats["chunks_upserted"].as_u64().unwrap(),
        about.len() as u64,
        "only the changed page is embedded: {stats}"
    );
    assert_eq!(stats["unchanged"], 3, "{stats}");
    assert!(!pages(&chroma, "recrawl").contains(&site.url("/orphan.html")));
    assert!(stats["chunks_deleted"].as_u64().unwrap() >= 1);
    let hits = site.hits();
    assert!(
        hits.iter().any(|h| h.status == 304),
        "unchanged pages are fetched conditionally: {hits:?}"
    );
}

#[test]
fn the_default_config_refuses_internal_addresses() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = Daemon::start(&chroma.url());
    let port = site.base.rsplit(':').next().unwrap();
    for (url, needle) in [
        (site.url("/"), "127.0.0.1"),
        (
            "http://169.254.169.254/latest/meta-data/".to_string(),
            "169.254.169.254",
        ),
        (format!("http://localhost:{port}/"), "refusing to crawl"),
    ] {
        let source = daemon.create_source(json!({
            "database_name": "testdb",
            "web_scrape": {"starting_url": url},
        }));
        let job = daemon.invoke(&source, json!({"target_collection_name": "internal"}));
        let (job, error) = daemon.wait_failed(&job, Duration::from_secs(60));
        assert!(error.contains(needle), "{url}: {error}");
        if url.contains("localhost") {
            // The address a name resolves to is not named.
            assert!(!error.contains("127.0.0.1"), "{url}: {error}");
        }
        assert!(
            error.contains("CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS"),
            "{error}"
        );
        assert_eq!(job["attempt"], 1, "refusals are not retried");
    }
    assert!(
        site.hits().is_empty(),
        "nothing reached the site: {:?}",
        site.hits()
    );
}

#[test]
fn bad_web_sources_and_invocations_are_400s() {
    let chroma = Chroma::start();
    let daemon = Daemon::start(&chroma.url());
    for (web, needle) in [
        (json!({"starting_url": "ftp://example.com/"}), "http(s)"),
        (
            json!({"starting_url": "https://example.com/", "include_path_regexes": ["("]}),
            "regex",
        ),
        (
            json!({"starting_url": "https://example.com/", "page_limit": 0}),
            "page_limit",
        ),
    ] {
        let (status, error) = daemon.request(
            Method::POST,
            "/api/v1/sources",
            Some(json!({"database_name": "testdb", "web_scrape": web})),
        );
        assert_eq!(status, 400, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
    let source = daemon.create_source(json!({
        "database_name": "testdb",
        "web_scrape": {"starting_url": "https://example.com/"},
    }));
    for (body, needle) in [
        (json!({}), "target_collection_name"),
        (
            json!({"target_collection_name": "web1", "object_key": "x"}),
            "object_key",
        ),
        (
            json!({"target_collection_name": "web1", "ref_identifier": {"branch": "main"}}),
            "ref_identifier",
        ),
    ] {
        let (status, error) = daemon.request(
            Method::POST,
            &format!("/api/v1/sources/{source}/invocations"),
            Some(body),
        );
        assert_eq!(status, 400, "{error}");
        assert!(
            error["message"].as_str().unwrap().contains(needle),
            "{error}"
        );
    }
}

#[test]
fn pages_behind_a_failing_page_are_kept_not_taken_for_gone() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 2})));
    crawl(&daemon, &source, "keep");
    let before = pages(&chroma, "keep");
    assert!(before.contains(&site.url("/docs/api.html")));

    // The docs index (the only way to the API page) fails this time.
    site.fail("/docs/");
    let job = crawl(&daemon, &source, "keep");
    assert_eq!(pages(&chroma, "keep"), before, "{job}");
    let reasons = &job["stats"]["skipped_reasons"];
    assert!(
        reasons[site.url("/docs")].as_str().unwrap().contains("500"),
        "{reasons}"
    );
}

/// Each way a starting page can break, on a site whose pages are stored: the
/// re-crawl removes nothing and fails saying why; a start page that is fine
/// but links nowhere would take most of the site for gone, so the removal
/// limit refuses it with the counts. Every stored page keeps its chunks.
#[test]
fn a_broken_starting_page_removes_nothing_and_fails_saying_why() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 2})));
    crawl(&daemon, &source, "guarded");
    let stored = pages(&chroma, "guarded");
    assert_eq!(stored.len(), 7, "{stored:?}");
    let before = chroma.records("testdb", "guarded");
    let home = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/site/index.html"),
    )
    .unwrap();
    let start_key = site.url("/");
    let no_links = "<html><head><title>Rebuilding</title></head><body><main>\
                    <p>We are rebuilding the site; come back soon.</p></main></body></html>";
    let whole_site_count = format!("of the {} pages", stored.len());

    type Breakage<'a> = (&'a str, Box<dyn Fn() + 'a>, Vec<&'a str>);
    let cases: Vec<Breakage> = vec![
        (
            "404",
            Box::new(|| site.delete("index.html")),
            vec!["starting page", "404"],
        ),
        (
            "500",
            Box::new(|| site.fail("/")),
            vec!["starting page", "500"],
        ),
        (
            "redirect to another host",
            Box::new(|| site.move_to("/", &site.other_url("/"))),
            vec!["starting page", "out of scope", "localhost"],
        ),
        (
            "a page without links",
            Box::new(|| site.write("index.html", no_links)),
            vec!["would remove 5", &whole_site_count, "max_removal_fraction"],
        ),
    ];
    for (what, break_start, needles) in cases {
        break_start();
        let job = daemon.invoke(&source, json!({"target_collection_name": "guarded"}));
        let (job, error) = daemon.wait_failed(&job, Duration::from_secs(120));
        for needle in needles {
            assert!(error.contains(needle), "{what}: {needle:?} not in {error}");
        }
        assert_eq!(pages(&chroma, "guarded"), stored, "{what}: {job}");
        let after = chroma.records("testdb", "guarded");
        for key in stored.iter().filter(|key| **key != start_key) {
            let ids = |records: &Records| -> Vec<String> {
                records.of_key(key).iter().map(|r| r.id.clone()).collect()
            };
            assert_eq!(ids(&after), ids(&before), "{what}: {key} kept its chunks");
        }
        if what != "a page without links" {
            assert_eq!(after.ids(), before.ids(), "{what}: nothing changed");
        }
        site.heal();
        site.write("index.html", &home);
    }

    // The site is back: the re-crawl completes and the collection is whole.
    crawl(&daemon, &source, "guarded");
    assert_eq!(pages(&chroma, "guarded"), stored);
}

/// A small site of its own in `dir` (no robots.txt, no sitemap, nothing
/// slow or failing): each page is `(path, links)`.
fn write_site(dir: &std::path::Path, pages: &[(&str, &[&str])]) {
    for (path, links) in pages {
        let file = dir.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, page_html(path, links)).unwrap();
    }
}

fn page_html(path: &str, links: &[&str]) -> String {
    let anchors: String = links
        .iter()
        .map(|link| format!("<li><a href=\"{link}\">{link}</a></li>"))
        .collect();
    format!(
        "<html><head><title>Page {path}</title></head><body><main><h1>Page {path}</h1>\
         <p>This is the page served at {path}; it links the pages below.</p>\
         <ul>{anchors}</ul></main></body></html>"
    )
}

/// The log's requests of `path` (its query and fragment-free form).
fn hits_of(site: &FixtureSite, path: &str) -> Vec<common::web::Hit> {
    site.hits().into_iter().filter(|h| h.path == path).collect()
}

/// A re-crawl of an unchanged site asks for every page conditionally — the
/// starting page, depth 1, depth 2 and depth 3 — and every answer is a
/// bodiless 304; the pages only reachable through 304 pages are reached
/// through the links the first crawl remembered, so nothing is removed.
/// Then one page in the middle changes: it is fetched in full, the new page
/// it links is stored, and the page it no longer links is removed (the
/// crawl was complete).
#[test]
fn an_unchanged_site_recrawls_with_304s_at_every_depth_through_remembered_links() {
    let chroma = Chroma::start();
    let dir = tempfile::tempdir().unwrap();
    let chain: &[(&str, &[&str])] = &[
        ("/index.html", &["/a.html"]),
        ("/a.html", &["/b.html", "/"]),
        ("/b.html", &["/c.html"]),
        ("/c.html", &["/"]),
    ];
    write_site(dir.path(), chain);
    let site = FixtureSite::serve(dir.path());
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 3})));
    let by_depth = ["/", "/a.html", "/b.html", "/c.html"];

    crawl(&daemon, &source, "chain");
    assert_eq!(pages(&chroma, "chain"), urls(&site, &by_depth));
    let before = chroma.records("testdb", "chain");

    site.clear_hits();
    let job = crawl(&daemon, &source, "chain");
    let stats = &job["stats"];
    for path in by_depth {
        let hits = hits_of(&site, path);
        assert_eq!(hits.len(), 1, "{path} requested once: {hits:?}");
        assert!(hits[0].conditional, "{path} asked conditionally: {hits:?}");
        assert_eq!(hits[0].status, 304, "{path}: {hits:?}");
        assert_eq!(hits[0].bytes, 0, "{path}: {hits:?}");
    }
    assert_eq!(stats["unchanged"], 4, "{stats}");
    assert_eq!(stats["chunks_upserted"], 0, "{stats}");
    assert_eq!(stats["chunks_deleted"], 0, "{stats}");
    assert_eq!(pages(&chroma, "chain"), urls(&site, &by_depth), "{job}");
    assert_eq!(chroma.records("testdb", "chain").ids(), before.ids());

    // /b.html (depth 2, behind the unchanged /a.html) now links a new page
    // instead of /c.html.
    site.write("b.html", &page_html("/b.html", &["/new.html"]));
    site.write("new.html", &page_html("/new.html", &["/"]));
    site.clear_hits();
    let job = crawl(&daemon, &source, "chain");
    for path in ["/", "/a.html"] {
        let hits = hits_of(&site, path);
        assert_eq!((hits.len(), hits[0].status), (1, 304), "{path}: {hits:?}");
    }
    let changed = hits_of(&site, "/b.html");
    assert_eq!(
        (changed.len(), changed[0].conditional, changed[0].status),
        (1, true, 200),
        "{changed:?}"
    );
    let new = hits_of(&site, "/new.html");
    assert_eq!((new.len(), new[0].status), (1, 200), "{new:?}");
    assert!(hits_of(&site, "/c.html").is_empty(), "no longer linked");
    assert_eq!(
        pages(&chroma, "chain"),
        urls(&site, &["/", "/a.html", "/b.html", "/new.html"]),
        "{job}"
    );
    assert!(
        job["stats"]["chunks_deleted"].as_u64().unwrap() >= 1,
        "{job}"
    );
}

/// include/exclude regexes decide which pages are stored, the starting page
/// included: an excluded one is fetched (its links lead the crawl) but not
/// stored, on the first crawl and on a re-crawl where it answers 304.
#[test]
fn an_excluded_starting_page_is_not_stored_but_its_links_are_followed() {
    let chroma = Chroma::start();
    let dir = tempfile::tempdir().unwrap();
    write_site(
        dir.path(),
        &[
            ("/index.html", &["/docs/a.html", "/blog/post.html"]),
            ("/docs/a.html", &["/docs/b.html", "/"]),
            ("/docs/b.html", &[]),
            ("/blog/post.html", &[]),
        ],
    );
    let site = FixtureSite::serve(dir.path());
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(
        &site,
        json!({"max_depth": 2, "include_path_regexes": ["^/docs/"]}),
    ));
    let expected = urls(&site, &["/docs/a.html", "/docs/b.html"]);
    for round in ["first crawl", "re-crawl"] {
        site.clear_hits();
        let job = crawl(&daemon, &source, "docs-only");
        assert_eq!(pages(&chroma, "docs-only"), expected, "{round}: {job}");
        let reason = job["stats"]["skipped_reasons"][site.url("/")]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(reason.contains("excluded"), "{round}: {job}");
        let start_hits = hits_of(&site, "/");
        assert_eq!(start_hits.len(), 1, "{round}: {start_hits:?}");
        if round == "re-crawl" {
            assert_eq!(start_hits[0].status, 304, "{start_hits:?}");
        }
        assert!(hits_of(&site, "/blog/post.html").is_empty(), "{round}");
    }
}

/// Pages skipped by design (over the size cap, not a page) are not fetch
/// failures: a page that left the site is still removed. A page whose
/// links were needed and that failed (a 500) does stop removals.
#[test]
fn skips_by_design_do_not_stop_removals_but_fetch_failures_do() {
    let chroma = Chroma::start();
    let dir = tempfile::tempdir().unwrap();
    let home: &[&str] = &["/a.html", "/b.html", "/big.html", "/data.bin"];
    write_site(
        dir.path(),
        &[("/index.html", home), ("/a.html", &[]), ("/b.html", &[])],
    );
    let filler = "<p>filler paragraph of a page over the size cap</p>\n".repeat(6000);
    std::fs::write(
        dir.path().join("big.html"),
        format!("<html><body>{filler}</body></html>"),
    )
    .unwrap();
    std::fs::write(dir.path().join("data.bin"), [0u8, 1, 2, 3]).unwrap();
    let site = FixtureSite::serve(dir.path());
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 2})));
    let job = crawl(&daemon, &source, "skips");
    assert_eq!(
        pages(&chroma, "skips"),
        urls(&site, &["/", "/a.html", "/b.html"]),
        "{job}"
    );
    let reasons = &job["stats"]["skipped_reasons"];
    assert!(
        reasons[site.url("/big.html")]
            .as_str()
            .unwrap()
            .contains("limit"),
        "{reasons}"
    );
    assert!(
        reasons[site.url("/data.bin")]
            .as_str()
            .unwrap()
            .contains("content type"),
        "{reasons}"
    );

    // /b.html leaves the site's links while /a.html (depth 1, its links
    // needed) fails: what /a.html leads to is unknown, so nothing goes.
    site.write(
        "index.html",
        &page_html("/", &["/a.html", "/big.html", "/data.bin"]),
    );
    site.fail("/a.html");
    let job = crawl(&daemon, &source, "skips");
    assert_eq!(
        pages(&chroma, "skips"),
        urls(&site, &["/", "/a.html", "/b.html"]),
        "a failure keeps unreached pages: {job}"
    );

    // /a.html answers again: only by-design skips are left, and /b.html goes.
    site.heal();
    let job = crawl(&daemon, &source, "skips");
    assert_eq!(
        pages(&chroma, "skips"),
        urls(&site, &["/", "/a.html"]),
        "{job}"
    );
}

/// A page the site stops listing in its sitemap and links from nowhere is
/// gone from the site's point of view, even though the server still
/// answers for it: a re-crawl reaches pages the way a first crawl would
/// (start page, sitemap, links), so it drops the page's chunks.
#[test]
fn a_page_dropped_from_the_sitemap_and_linked_from_nowhere_is_removed() {
    let chroma = Chroma::start();
    let site = FixtureSite::start();
    let daemon = start(&chroma);
    let source = daemon.create_source(web_source(&site, json!({"max_depth": 1})));
    crawl(&daemon, &source, "unlisted");
    let orphan = site.url("/orphan.html");
    assert!(pages(&chroma, "unlisted").contains(&orphan));

    site.write(
        "sitemap.xml",
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n\
           <url><loc>{{BASE}}/</loc></url>\n\
         </urlset>\n",
    );
    let job = crawl(&daemon, &source, "unlisted");
    let after = pages(&chroma, "unlisted");
    assert!(!after.contains(&orphan), "{after:?} {job}");
    assert!(
        after.contains(&site.url("/about.html")),
        "linked pages stay: {after:?}"
    );
    let served = reqwest::blocking::get(&orphan).unwrap();
    assert!(served.status().is_success(), "the server still answers");
}
