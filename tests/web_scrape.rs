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
        (
            json!({"max_depth": 3, "include_path_regexes": ["^/docs"]}),
            vec![
                "/",
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
    // DESIGN.md's form of the web kind (the seed's bare string cannot carry
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
    assert!(reason("/logo.png").contains("image/png"), "{reasons}");
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
        "pages at max_depth are fetched conditionally: {hits:?}"
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
