//! Websites: a polite, bounded, breadth-first crawler (reqwest + scraper).
//!
//! - Scope: the starting URL's scheme, host and port. Redirects are followed
//!   only within it; a page redirecting elsewhere is skipped with a reason.
//! - Breadth-first by depth (the starting page is depth 0, sitemap pages are
//!   depth 1), `max_depth` and `page_limit` enforced exactly: at most
//!   `page_limit` pages end up in the collection, in discovery order.
//! - URLs are normalised (fragment dropped, default port, trailing slash,
//!   tracking parameters, sorted query) and a page's `rel=canonical` becomes
//!   its key, so each page is fetched and stored once.
//! - Politeness: robots.txt (our user agent's group, `Crawl-delay`), sitemaps,
//!   a per-host concurrency cap and request rate, `Retry-After` on 429/503,
//!   timeouts, a response size cap, HTML/text/markdown only.
//! - SSRF guard: unless allowed by config, every address a request would
//!   reach — IP literals, DNS answers (on every connection, redirects
//!   included) — is checked against loopback, private, link-local,
//!   shared, multicast and metadata ranges (the classification in
//!   [`crate::net`], shared with the S3/SQS clients).
//! - The starting page must answer with a page in scope; a 404, 5xx,
//!   redirect elsewhere or non-page ends the crawl as an error before
//!   anything is reported, so nothing is taken for gone.
//! - Re-crawls: every page whose links the previous crawl remembered
//!   ([`super::links`]) is fetched conditionally (`If-None-Match` /
//!   `If-Modified-Since`), at every depth; a `304` reports it unchanged and
//!   the crawl follows its remembered links. Pages stored without a usable
//!   memory are fetched conditionally at `max_depth` (their links are not
//!   needed there). Any page whose version (ETag, else a hash of its main
//!   content) is unchanged is reported as such: no re-embedding.
//! - `include_path_regexes` / `exclude_path_regexes` decide which pages are
//!   stored, the starting page included: it is always fetched (its links
//!   are followed) but an excluded one is reported skipped, not stored.
//! - Skips by design (too large, not a page, a redirect out of scope for
//!   good) are not failures: only pages that could not be read this time
//!   (timeouts, 5xx, temporary redirects elsewhere) whose links were
//!   needed, and unreadable sitemaps, keep the crawl from taking unreached
//!   pages for gone.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use regex::Regex;
use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, CONTENT_TYPE, ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RETRY_AFTER,
};
use reqwest::redirect;
use scraper::{Html, Selector};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use url::Url;

/// Chunk metadata a page's validators are kept in, for conditional requests.
pub const HTTP_ETAG: &str = "http_etag";
pub const HTTP_LAST_MODIFIED: &str = "http_last_modified";

use super::WebSettings;
use super::links::{self, LinkMemory, PageLinks};
use super::settings::WebScrapeSourceConfig;
use crate::config::sha256_hex;
use crate::net::{first_forbidden, forbidden_address, literal_ip};
use crate::pipeline::{Document, Fetched, SourceError};
use crate::sources::globs::{MAX_COMPILED_PATTERN_BYTES, check_pattern_list};

/// Query parameters that only track visitors: dropped from URLs.
const TRACKING_PARAMETERS: &[&str] = &["fbclid", "gclid", "msclkid", "mc_cid", "mc_eid", "_ga"];
/// Sitemap files read at most (indexes included).
const MAX_SITEMAP_FILES: usize = 20;
/// Redirects followed at most per request.
const MAX_REDIRECTS: usize = 10;
/// Links taken from one page at most.
const MAX_LINKS_PER_PAGE: usize = 5000;
/// Retries of one page after 429/503 with `Retry-After`.
const MAX_PAGE_RETRIES: u32 = 2;
/// Pages of a level whose remembered links are read per query: what the
/// crawl holds of them at once (fetches of a level go a batch at a time).
const RECALL_BATCH: usize = 100;
/// Why an excluded starting page is not stored.
const EXCLUDED_START: &str = "the starting page is excluded by include_path_regexes/exclude_path_regexes \
     (fetched only for its links)";

/// What a crawl already stored of a page (from its chunks' metadata).
#[derive(Debug, Clone, Default)]
pub struct KnownPage {
    pub version: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

fn refusal(ip: IpAddr, why: &str) -> String {
    format!(
        "refusing to crawl {ip}: {why} (set CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS=true to allow it)"
    )
}

/// Checks a URL whose host is an IP literal; domain names are checked by
/// [`GuardedResolver`] when they are resolved.
fn check_literal(url: &Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let Some(ip) = literal_ip(url) else {
        return Ok(());
    };
    match forbidden_address(ip) {
        Some(why) => Err(refusal(ip, why)),
        None => Ok(()),
    }
}

/// DNS resolution that refuses forbidden addresses, on every connection the
/// client makes (redirects and DNS rebinding included).
struct GuardedResolver;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some((_, why)) = first_forbidden(addresses.iter().map(SocketAddr::ip)) {
                return Err(Box::new(Refused(format!(
                    "{host} resolves to a {why}; refusing to crawl it (set \
                         CHROMA_SYNCD_WEB_ALLOW_PRIVATE_NETWORKS=true to allow it)"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Scheme, host and port of the starting URL: the crawl never leaves them.
#[derive(Debug, Clone)]
pub struct Scope {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Scope {
    pub fn of(url: &Url) -> Scope {
        Scope {
            scheme: url.scheme().to_string(),
            host: url.host_str().unwrap_or_default().to_string(),
            port: url.port_or_known_default(),
        }
    }
    pub fn contains(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == self.port
    }
}

/// The one spelling of a URL we fetch and store: http(s) only, no fragment,
/// no default port, no trailing slash (except the root), no tracking
/// parameters, query parameters sorted.
pub fn normalize(url: &Url) -> Option<Url> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let mut url = url.clone();
    url.set_fragment(None);
    // (`Url` already drops a scheme's default port.)
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let path = url.path().to_string();
    if path.len() > 1 && path.ends_with('/') {
        url.set_path(path.trim_end_matches('/'));
    }
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(name, _)| {
            !name.starts_with("utm_") && !TRACKING_PARAMETERS.contains(&name.as_ref())
        })
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect();
    pairs.sort();
    if pairs.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    Some(url)
}

/// Which URL paths are crawled (the starting page is always fetched).
pub struct PathRules {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl PathRules {
    pub fn new(source: &WebScrapeSourceConfig) -> Result<Self, String> {
        let compile = |what: &str, patterns: &Option<Vec<String>>| {
            let patterns = patterns.as_deref().unwrap_or(&[]);
            check_pattern_list(what, patterns)?;
            patterns
                .iter()
                .map(|p| {
                    regex::RegexBuilder::new(p)
                        .size_limit(MAX_COMPILED_PATTERN_BYTES)
                        .dfa_size_limit(MAX_COMPILED_PATTERN_BYTES)
                        .build()
                        .map_err(|e| format!("path regex `{p}` is not valid: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(PathRules {
            include: compile("include_path_regexes", &source.include_path_regexes)?,
            exclude: compile("exclude_path_regexes", &source.exclude_path_regexes)?,
        })
    }

    pub fn allows(&self, url: &Url) -> bool {
        let path = url.path();
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(path)))
            && !self.exclude.iter().any(|r| r.is_match(path))
    }
}

/// The parts of an HTML page the crawler and the pipeline need.
#[derive(Debug, Default)]
pub struct ParsedPage {
    pub title: Option<String>,
    pub canonical: Option<Url>,
    pub links: Vec<Url>,
    /// The page's main content (`<main>`, `<article>`, `[role=main]`, else
    /// `<body>`), still HTML: extraction turns it into markdown.
    pub content: String,
    pub noindex: bool,
    pub nofollow: bool,
}

/// Parses an HTML page fetched from `url`.
/// A page nested deeper than [`crate::nesting::MAX_HTML_DEPTH`] is not
/// parsed (the parser is quadratic in depth): its links are not followed,
/// and its text is indexed as extraction's plain-text fallback gives it.
pub fn parse_page(html: &str, url: &Url) -> ParsedPage {
    if crate::nesting::html_depth(html) > crate::nesting::MAX_HTML_DEPTH {
        return ParsedPage {
            content: html.to_string(),
            ..ParsedPage::default()
        };
    }
    let document = Html::parse_document(html);
    let select = |css: &str| Selector::parse(css).expect("static selector");
    let base = document
        .select(&select("base[href]"))
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|href| url.join(href).ok())
        .unwrap_or_else(|| url.clone());
    let title = document
        .select(&select("title"))
        .next()
        .map(|t| t.text().collect::<Vec<_>>().join(" "))
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty());
    let canonical = document
        .select(&select("link[rel~=canonical][href]"))
        .next()
        .and_then(|l| l.value().attr("href"))
        .and_then(|href| base.join(href).ok());
    let robots = document
        .select(&select("meta[name=robots][content]"))
        .filter_map(|m| m.value().attr("content"))
        .collect::<Vec<_>>()
        .join(",")
        .to_ascii_lowercase();
    let links = document
        .select(&select("a[href]"))
        .filter(|a| {
            !a.value()
                .attr("rel")
                .is_some_and(|rel| rel.split_whitespace().any(|r| r == "nofollow"))
        })
        .filter_map(|a| a.value().attr("href"))
        .filter_map(|href| base.join(href.trim()).ok())
        .collect();
    let content = ["main", "article", "[role=main]", "body"]
        .iter()
        .find_map(|css| document.select(&select(css)).next())
        .map(|element| element.html())
        .unwrap_or_else(|| html.to_string());
    ParsedPage {
        title,
        canonical,
        links,
        content,
        noindex: robots.contains("noindex") || robots.contains("none"),
        nofollow: robots.contains("nofollow") || robots.contains("none"),
    }
}

/// A remembered page's links as the crawl may follow them: normalised, in
/// `scope` and bounded again, whatever the database holds.
fn remembered_links(row: &PageLinks, scope: &Scope) -> Vec<Url> {
    row.links
        .iter()
        .take(links::MAX_REMEMBERED_LINKS)
        .filter_map(|link| Url::parse(link).ok())
        .filter_map(|link| normalize(&link))
        .filter(|link| scope.contains(link))
        .collect()
}

/// Locations listed by a sitemap (`<urlset>`) or sitemap index (`<sitemapindex>`).
pub fn sitemap_locations(xml: &[u8]) -> (Vec<String>, Vec<String>) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut pages = Vec::new();
    let mut sitemaps = Vec::new();
    let mut location: Option<String> = None;
    let mut in_index = false;
    let mut buffer = Vec::new();
    loop {
        match reader.read_event_into(&mut buffer) {
            Ok(Event::Start(tag)) => match tag.local_name().into_inner() {
                "loc" => location = Some(String::new()),
                "sitemapindex" => in_index = true,
                _ => {}
            },
            Ok(Event::Text(text)) => {
                if let Some(location) = location.as_mut() {
                    location.push_str(&text.xml10_content());
                }
            }
            // `&amp;` and friends arrive as their own events.
            Ok(Event::GeneralRef(reference)) => {
                if let Some(location) = location.as_mut() {
                    let entity = format!("&{};", reference.xml10_content());
                    match quick_xml::escape::unescape(&entity) {
                        Ok(text) => location.push_str(&text),
                        Err(_) => location.push_str(&entity),
                    }
                }
            }
            Ok(Event::End(tag)) if tag.local_name().into_inner() == "loc" => {
                if let Some(done) = location.take() {
                    let done = done.trim().to_string();
                    if in_index {
                        sitemaps.push(done);
                    } else {
                        pages.push(done);
                    }
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buffer.clear();
    }
    (pages, sitemaps)
}

/// Spaces requests to one host: at most one start per interval.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let start = {
            let mut next = self.next.lock().await;
            let start = (*next).max(Instant::now());
            *next = start + self.interval;
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }
}

/// The validators a conditional request sends back.
#[derive(Debug, Clone, Copy, Default)]
struct Validators<'a> {
    etag: Option<&'a str>,
    last_modified: Option<&'a str>,
}

/// How a page of a level is requested, and what a `304` then means.
enum Basis {
    /// Unconditionally: its body is needed, or nothing usable is known.
    Full,
    /// With the collection's validators, at `max_depth` (its links are not
    /// needed): a 304 keeps the stored page.
    Stored,
    /// With the remembered validators: a 304 reports the page as the row
    /// describes it (`skipped`: why it is not stored; else kept) and the
    /// crawl follows the row's links.
    Remembered {
        row: PageLinks,
        skipped: Option<String>,
    },
}

impl Basis {
    fn validators<'a>(&'a self, known: Option<&'a KnownPage>) -> Option<Validators<'a>> {
        match self {
            Basis::Full => None,
            Basis::Stored => known.map(|known| Validators {
                etag: known.etag.as_deref(),
                last_modified: known.last_modified.as_deref(),
            }),
            Basis::Remembered { row, .. } => Some(Validators {
                etag: row.etag.as_deref(),
                last_modified: row.last_modified.as_deref(),
            }),
        }
    }
}

/// What one fetch produced.
enum Response {
    Page {
        url: Url,
        body: Bytes,
        content_type: String,
        etag: Option<String>,
        last_modified: Option<String>,
    },
    NotModified,
    Gone(String),
    /// Not a page we index (wrong type, too large, redirected out of scope).
    Skip(String),
    /// Could not be fetched this time (timeout, 5xx, long Retry-After).
    Failed(String),
}

/// One crawl of one source.
pub struct Crawl {
    settings: WebSettings,
    client: reqwest::Client,
    start: Url,
    scope: Scope,
    rules: PathRules,
    max_depth: u32,
    page_limit: usize,
    known: HashMap<String, KnownPage>,
    /// Each page's outgoing links as the previous crawls saw them.
    memory: LinkMemory,
    pacer: Pacer,
    cancel: CancellationToken,
    /// Set when some part of the site could not be read this time (a page
    /// whose links were needed, a sitemap): then nothing may be taken for gone.
    incomplete: Arc<AtomicBool>,
}

impl Crawl {
    /// Checks the starting URL (scope, SSRF guard) and builds the client.
    pub fn new(
        settings: &WebSettings,
        source: &WebScrapeSourceConfig,
        known: HashMap<String, KnownPage>,
        memory: LinkMemory,
        cancel: CancellationToken,
    ) -> Result<Crawl, SourceError> {
        let start = Url::parse(&source.starting_url)
            .ok()
            .and_then(|url| normalize(&url))
            .ok_or_else(|| {
                SourceError::Permanent(format!(
                    "starting_url `{}` is not an http(s) URL",
                    source.starting_url
                ))
            })?;
        check_literal(&start, settings.allow_private_networks).map_err(SourceError::Permanent)?;
        let scope = Scope::of(&start);
        let policy_scope = scope.clone();
        let allow_private = settings.allow_private_networks;
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            if !policy_scope.contains(attempt.url()) {
                return attempt.stop();
            }
            match check_literal(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            .timeout(Duration::from_secs(settings.timeout_seconds.max(1)))
            .connect_timeout(Duration::from_secs(10))
            .redirect(policy);
        if !settings.allow_private_networks {
            // A proxy would resolve and reach the target itself, past our checks.
            builder = builder.dns_resolver(GuardedResolver).no_proxy();
        }
        let client = builder
            .build()
            .map_err(|e| SourceError::Permanent(format!("building the HTTP client: {e}")))?;
        let rules = PathRules::new(source).map_err(SourceError::Permanent)?;
        let rate = settings.requests_per_second.max(0.01);
        Ok(Crawl {
            settings: settings.clone(),
            client,
            scope,
            rules,
            max_depth: source.max_depth.unwrap_or(settings.default_max_depth),
            page_limit: source.page_limit.unwrap_or(settings.default_page_limit) as usize,
            known,
            memory,
            pacer: Pacer {
                interval: Duration::from_secs_f64(1.0 / rate),
                next: Mutex::new(Instant::now()),
            },
            cancel,
            start,
            incomplete: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Runs the crawl in a task; its results arrive in discovery order. The
    /// flag, read once the stream has ended, says whether some part of the
    /// site could not be read (then nothing may be taken for gone).
    pub fn run(
        self,
    ) -> (
        BoxStream<'static, Result<Fetched, SourceError>>,
        Arc<AtomicBool>,
    ) {
        let incomplete = Arc::clone(&self.incomplete);
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            let crawling = sender.clone();
            let crawl = tokio::spawn(async move { self.crawl(&crawling).await });
            // A crawl that ends without saying so must not look finished: the
            // pipeline would remove every page it did not get to.
            let error = match crawl.await {
                Ok(Ok(())) => return,
                Ok(Err(error)) => error,
                Err(panic) => {
                    SourceError::Transient(format!("the crawl stopped unexpectedly: {panic}"))
                }
            };
            let _ = sender.send(Err(error)).await;
        });
        let stream = Box::pin(futures::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        ));
        (stream, incomplete)
    }

    async fn crawl(
        mut self,
        sender: &mpsc::Sender<Result<Fetched, SourceError>>,
    ) -> Result<(), SourceError> {
        // A first request to the starting URL's host: a refused address is
        // the job's clear failure, not a skipped page.
        let robots = self.robots().await?;
        if let Some(delay) = robots.as_ref().and_then(|r| r.delay) {
            let delay = Duration::from_secs_f64(f64::from(delay).clamp(0.0, 60.0));
            self.pacer.interval = self.pacer.interval.max(delay);
        }
        let allowed = |url: &Url| robots.as_ref().is_none_or(|r| r.allowed(url.as_str()));
        if !allowed(&self.start) {
            return Err(SourceError::Permanent(format!(
                "robots.txt of {} does not allow user agent `{}` to fetch {}",
                self.scope.host, self.settings.user_agent, self.start
            )));
        }

        let mut visited: HashSet<String> = HashSet::new();
        let mut stored: HashSet<String> = HashSet::new();
        let mut level = vec![self.start.clone()];
        visited.insert(self.start.to_string());
        // Pages only a sitemap lists join depth 1, after the starting page's links.
        let mut sitemap = Vec::new();
        if self.max_depth >= 1 {
            let sitemap_roots = robots
                .as_ref()
                .map(|r| r.sitemaps.clone())
                .unwrap_or_default();
            for url in self.sitemap_pages(sitemap_roots).await {
                if self.rules.allows(&url) && allowed(&url) && visited.insert(url.to_string()) {
                    sitemap.push(url);
                }
            }
        }
        let mut depth = 0;
        // Pages that are not stored (404s, duplicates, noindex, …) do not
        // count against page_limit; this bounds the requests they can cost.
        let mut budget = self.page_limit.saturating_mul(10).saturating_add(100);
        while !level.is_empty() && stored.len() < self.page_limit && budget > 0 {
            let mut next_level = Vec::new();
            let at_max_depth = depth >= self.max_depth;
            level.truncate(budget);
            budget -= level.len();
            // What this level's pages answer: rows replaced, rows deleted
            // (written once the level is done).
            let mut remember: Vec<PageLinks> = Vec::new();
            let mut forget: Vec<String> = Vec::new();
            // Remembered links are read a batch of pages at a time, so a
            // level holds only one batch of them at once.
            'level: for batch in level.chunks(RECALL_BATCH) {
                let keys: Vec<String> = batch.iter().map(Url::to_string).collect();
                let mut rows = self.memory.recall(&keys).await;
                let planned: Vec<(Url, Basis)> = batch
                    .iter()
                    .map(|url| {
                        let basis = self.basis(url, rows.remove(url.as_str()), at_max_depth);
                        (url.clone(), basis)
                    })
                    .collect();
                let this = &self;
                let mut fetches =
                    futures::stream::iter(planned.into_iter().map(|(url, basis)| async move {
                        let validators = basis.validators(this.known.get(url.as_str()));
                        let response = this.fetch(&url, validators).await;
                        (url, basis, response)
                    }))
                    .buffered(self.settings.max_concurrency_per_host.max(1));
                while let Some((url, basis, response)) = fetches.next().await {
                    if self.cancel.is_cancelled() {
                        return Ok(());
                    }
                    if stored.len() >= self.page_limit {
                        break 'level;
                    }
                    if depth == 0
                        && let Some(error) = self.start_failure(&response)
                    {
                        return Err(error);
                    }
                    let key = url.to_string();
                    let (item, links) = match response {
                        Response::NotModified => match basis {
                            Basis::Remembered { row, skipped } => {
                                let item = match skipped {
                                    Some(reason) => Fetched::Skipped { key, reason },
                                    None => Fetched::Kept { key, reason: None },
                                };
                                (Some(item), remembered_links(&row, &self.scope))
                            }
                            Basis::Stored => {
                                (Some(Fetched::Kept { key, reason: None }), Vec::new())
                            }
                            Basis::Full => {
                                // Says nothing about the page: as if unreadable.
                                if !at_max_depth {
                                    self.incomplete.store(true, Ordering::Relaxed);
                                }
                                let reason = "answered 304 Not Modified to a request without \
                                          validators"
                                    .to_string();
                                let item = Fetched::Kept {
                                    key,
                                    reason: Some(reason),
                                };
                                (Some(item), Vec::new())
                            }
                        },
                        Response::Gone(reason) => {
                            forget.push(key.clone());
                            (Some(Fetched::Gone { key, reason }), Vec::new())
                        }
                        // Skipped by design (too large, not a page, moved out of
                        // scope): not a failure, so removals still happen.
                        Response::Skip(reason) => {
                            forget.push(key.clone());
                            (Some(Fetched::Skipped { key, reason }), Vec::new())
                        }
                        Response::Failed(reason) => {
                            // Its links are unknown this time: what it leads to
                            // must not be taken for gone.
                            if !at_max_depth {
                                self.incomplete.store(true, Ordering::Relaxed);
                            }
                            let item = Fetched::Kept {
                                key,
                                reason: Some(reason),
                            };
                            (Some(item), Vec::new())
                        }
                        Response::Page {
                            url: final_url,
                            body,
                            content_type,
                            etag,
                            last_modified,
                        } => {
                            let page = self
                                .page(&url, final_url, body, &content_type, etag, last_modified)
                                .await;
                            match page.memory {
                                Some(row) => remember.push(row),
                                None => forget.push(key),
                            }
                            visited.insert(page.own.clone());
                            let item = match page.item {
                                Some(item) if depth == 0 => Some(self.unless_excluded(item)),
                                item => item,
                            };
                            (item, page.links)
                        }
                    };
                    if !at_max_depth {
                        for link in links {
                            if self.rules.allows(&link)
                                && allowed(&link)
                                && visited.insert(link.to_string())
                            {
                                next_level.push(link);
                            }
                        }
                    }
                    let Some(item) = item else { continue };
                    // What counts against page_limit: pages the collection holds
                    // after this crawl. A second URL of a stored page is dropped.
                    let stores = match &item {
                        Fetched::Document(document) => Some(document.key.clone()),
                        Fetched::Kept { key, reason: None } => Some(key.clone()),
                        _ => None,
                    };
                    if let Some(key) = stores
                        && !stored.insert(key)
                    {
                        continue;
                    }
                    if sender.send(Ok(item)).await.is_err() {
                        return Ok(());
                    }
                }
            }
            self.memory.store(&remember, &forget).await;
            if depth == 0 {
                next_level.append(&mut sitemap);
            }
            level = next_level;
            depth += 1;
        }
        Ok(())
    }

    /// How to request `url` this time, given what is remembered of it.
    /// A row is used only while it describes what the collection holds:
    /// the page is not stored by design (its own reason, or an excluded
    /// starting page), or the collection holds it at the row's version.
    fn basis(&self, url: &Url, row: Option<PageLinks>, at_max_depth: bool) -> Basis {
        if let Some(row) = row
            && (row.etag.is_some() || row.last_modified.is_some())
        {
            let skipped = row.skip_reason.clone().or_else(|| {
                (*url == self.start && !self.rules.allows(url)).then(|| EXCLUDED_START.to_string())
            });
            let current = skipped.is_some()
                || self
                    .known
                    .get(url.as_str())
                    .is_some_and(|known| known.version == row.version);
            if current {
                return Basis::Remembered { row, skipped };
            }
        }
        if at_max_depth && self.known.contains_key(url.as_str()) {
            Basis::Stored
        } else {
            Basis::Full
        }
    }

    /// The starting page's item, skipped if the path rules exclude it: it
    /// is fetched for its links, but stored only if they allow it.
    fn unless_excluded(&self, item: Fetched) -> Fetched {
        let stores = matches!(
            item,
            Fetched::Document(_) | Fetched::Kept { reason: None, .. }
        );
        let excluded = Url::parse(item.key()).is_ok_and(|key| !self.rules.allows(&key));
        if stores && excluded {
            Fetched::Skipped {
                key: item.key().to_string(),
                reason: EXCLUDED_START.to_string(),
            }
        } else {
            item
        }
    }

    /// Why the crawl cannot go on from what the starting page answered, if
    /// it cannot. Anything but a page in scope (gone, an error, a redirect
    /// elsewhere, not a page) says nothing about the rest of the site, and a
    /// crawl that went on would reach nothing and take every stored page for
    /// gone: it ends here, before anything is reported (and so removed).
    fn start_failure(&self, response: &Response) -> Option<SourceError> {
        let stopped = "the crawl stopped without removing anything";
        match response {
            Response::Page { .. } | Response::NotModified => None,
            Response::Gone(reason) => Some(SourceError::Permanent(format!(
                "the starting page did not answer with a page: {reason}; {stopped}"
            ))),
            Response::Skip(reason) => Some(SourceError::Permanent(format!(
                "the starting page {} did not answer with a page in scope: {reason}; {stopped}",
                self.start
            ))),
            Response::Failed(reason) => Some(SourceError::Transient(format!(
                "the starting page could not be read: {reason}; {stopped}"
            ))),
        }
    }

    /// robots.txt of the host; `None` when there is none (4xx).
    async fn robots(&self) -> Result<Option<texting_robots::Robot>, SourceError> {
        let mut url = self.start.clone();
        url.set_path("/robots.txt");
        url.set_query(None);
        self.pacer.wait().await;
        let response = self.client.get(url.clone()).send().await.map_err(|e| {
            let message = describe(&e);
            if message.contains("refusing to crawl") {
                SourceError::Permanent(message)
            } else {
                SourceError::Transient(format!("fetching {url}: {message}"))
            }
        })?;
        let status = response.status();
        // RFC 9309: an unavailable robots.txt (4xx) allows everything, but a
        // rate limit is not an answer.
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(SourceError::Transient(format!(
                "{url} answered {status}; not crawling without knowing what it allows"
            )));
        }
        let body = read_capped(response, 512 * 1024)
            .await
            .map_err(|e| SourceError::Transient(format!("reading {url}: {e}")))?;
        // An unparsable robots.txt allows everything, as crawlers treat it.
        Ok(texting_robots::Robot::new(&self.settings.user_agent, &body).ok())
    }

    /// Pages listed by the host's sitemaps (robots.txt `Sitemap:` lines and
    /// `/sitemap.xml`), in scope, normalised, in order, bounded.
    async fn sitemap_pages(&self, mut roots: Vec<String>) -> Vec<Url> {
        let mut default = self.start.clone();
        default.set_path("/sitemap.xml");
        default.set_query(None);
        roots.push(default.to_string());
        let mut pending: Vec<String> = roots;
        let mut read = HashSet::new();
        let mut pages = Vec::new();
        while let Some(location) = pending.pop() {
            if read.len() >= MAX_SITEMAP_FILES || pages.len() >= self.settings.max_sitemap_urls {
                break;
            }
            let Some(url) = Url::parse(&location)
                .ok()
                .filter(|u| self.scope.contains(u))
            else {
                continue;
            };
            if !read.insert(url.to_string()) {
                continue;
            }
            self.pacer.wait().await;
            let Ok(response) = self.client.get(url.clone()).send().await else {
                self.incomplete.store(true, Ordering::Relaxed);
                continue;
            };
            let status = response.status();
            if !status.is_success() {
                if status != StatusCode::NOT_FOUND && status != StatusCode::GONE {
                    self.incomplete.store(true, Ordering::Relaxed);
                }
                continue;
            }
            let Ok(body) = read_capped(response, self.settings.max_page_bytes).await else {
                self.incomplete.store(true, Ordering::Relaxed);
                continue;
            };
            let (locations, indexes) = sitemap_locations(&body);
            pending.extend(indexes.into_iter().rev());
            for location in locations {
                if let Some(page) = Url::parse(&location).ok().and_then(|u| normalize(&u))
                    && self.scope.contains(&page)
                {
                    pages.push(page);
                }
            }
        }
        pages.truncate(self.settings.max_sitemap_urls);
        pages
    }

    /// Requests `url`, conditionally when `validators` are given.
    async fn fetch(&self, url: &Url, validators: Option<Validators<'_>>) -> Response {
        let mut retries = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Response::Failed("cancelled".into());
            }
            self.pacer.wait().await;
            let mut request = self.client.get(url.clone()).header(
                ACCEPT,
                "text/html,application/xhtml+xml,text/markdown;q=0.9,text/plain;q=0.8,*/*;q=0.5",
            );
            if let Some(validators) = validators {
                if let Some(etag) = validators.etag {
                    request = request.header(IF_NONE_MATCH, etag);
                }
                if let Some(modified) = validators.last_modified {
                    request = request.header(IF_MODIFIED_SINCE, modified);
                }
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    crate::metrics::request_error(
                        "web",
                        if error.is_timeout() {
                            "timeout"
                        } else {
                            "connect"
                        },
                    );
                    return Response::Failed(format!("fetching {url}: {}", describe(&error)));
                }
            };
            let status = response.status();
            if status.is_client_error() || status.is_server_error() {
                crate::metrics::request_error("web", crate::metrics::status_kind(status.as_u16()));
            }
            match status {
                StatusCode::NOT_MODIFIED => return Response::NotModified,
                StatusCode::NOT_FOUND | StatusCode::GONE => {
                    return Response::Gone(format!("{url} answered {status}"));
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    let wait = response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(5);
                    if retries >= MAX_PAGE_RETRIES || wait > self.settings.max_retry_after_seconds {
                        return Response::Failed(format!(
                            "{url} answered {status} (Retry-After {wait}s)"
                        ));
                    }
                    retries += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(wait)) => continue,
                        _ = self.cancel.cancelled() => return Response::Failed("cancelled".into()),
                    }
                }
                status if status.is_redirection() => {
                    let target = response
                        .headers()
                        .get(reqwest::header::LOCATION)
                        .and_then(|l| l.to_str().ok())
                        .unwrap_or("elsewhere")
                        .to_string();
                    // Only a permanent move says the page is not ours any more.
                    if matches!(
                        status,
                        StatusCode::MOVED_PERMANENTLY | StatusCode::PERMANENT_REDIRECT
                    ) {
                        return Response::Skip(format!("redirects out of scope to {target}"));
                    }
                    return Response::Failed(format!(
                        "redirects out of scope for now ({status}) to {target}"
                    ));
                }
                status if !status.is_success() => {
                    return Response::Failed(format!("{url} answered {status}"));
                }
                _ => {}
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("text/html")
                .to_ascii_lowercase();
            let essence = content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            // Pages, and documents linked from them (a PDF report, a
            // slide deck): those are converted like any other source's.
            let document = crate::extract::document_format(url.path(), Some(&essence)).is_some();
            if !document
                && !matches!(
                    essence.as_str(),
                    "text/html" | "application/xhtml+xml" | "text/plain" | "text/markdown"
                )
            {
                return Response::Skip(format!("not a page: content type {essence}"));
            }
            let header = |name| {
                response
                    .headers()
                    .get(name)
                    .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                    .map(str::to_string)
            };
            let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
            let final_url = response.url().clone();
            if !self.scope.contains(&final_url) {
                return Response::Skip(format!("redirects out of scope to {final_url}"));
            }
            return match read_capped(response, self.settings.max_page_bytes).await {
                Ok(body) => Response::Page {
                    url: final_url,
                    body,
                    content_type: essence,
                    etag,
                    last_modified,
                },
                Err(ReadError::TooLarge) => Response::Skip(format!(
                    "page is over the {}-byte limit",
                    self.settings.max_page_bytes
                )),
                Err(ReadError::Http(e)) => Response::Failed(format!("reading {url}: {e}")),
            };
        }
    }

    /// Turns a fetched page into the item to report, and its links.
    async fn page(
        &self,
        requested: &Url,
        final_url: Url,
        body: Bytes,
        content_type: &str,
        etag: Option<String>,
        last_modified: Option<String>,
    ) -> PageOutcome {
        let html = content_type == "text/html" || content_type == "application/xhtml+xml";
        let document = crate::extract::document_format(final_url.path(), Some(content_type));
        let parsed = if document.is_some() {
            // A document: no links to follow, its bytes as they are.
            ParsedPage::default()
        } else if html {
            let text = String::from_utf8_lossy(&body).into_owned();
            let base = final_url.clone();
            tokio::task::spawn_blocking(move || parse_page(&text, &base))
                .await
                .unwrap_or_default()
        } else {
            ParsedPage {
                content: String::from_utf8_lossy(&body).into_owned(),
                ..ParsedPage::default()
            }
        };
        let own = normalize(&final_url).unwrap_or_else(|| requested.clone());
        let own_key = own.to_string();
        let canonical = parsed
            .canonical
            .as_ref()
            .and_then(normalize)
            .filter(|c| self.scope.contains(c))
            .filter(|c| c.as_str() != own_key);
        let links = self.outgoing(&parsed, canonical.as_ref());
        // Remembered only when served from the URL it was asked at: next
        // time that URL is requested, and a 304 must be about this page.
        let remember = |version: String, skip_reason: Option<String>| {
            (requested.as_str() == own_key)
                .then(|| {
                    links::remember(
                        &own_key,
                        (etag.clone(), last_modified.clone()),
                        version,
                        skip_reason,
                        &links,
                    )
                })
                .flatten()
        };
        let skip_reason = if let Some(canonical) = &canonical {
            Some(format!("a copy of its canonical page {canonical}"))
        } else if parsed.noindex {
            Some("the page asks not to be indexed (meta robots noindex)".to_string())
        } else {
            None
        };
        if let Some(reason) = skip_reason {
            return PageOutcome {
                memory: remember(String::new(), Some(reason.clone())),
                item: Some(Fetched::Skipped {
                    key: own_key.clone(),
                    reason,
                }),
                links,
                own: own_key,
            };
        }
        let key = own_key.clone();
        let version = etag.clone().unwrap_or_else(|| {
            sha256_hex(if document.is_some() {
                &body
            } else {
                parsed.content.as_bytes()
            })
        });
        let memory = remember(version.clone(), None);
        if self.known.get(&key).is_some_and(|k| k.version == version) {
            return PageOutcome {
                item: Some(Fetched::Kept { key, reason: None }),
                links,
                own: own_key,
                memory,
            };
        }
        let title = parsed.title.unwrap_or_else(|| key.clone());
        let mut metadata = vec![
            ("url".to_string(), key.clone().into()),
            ("title".to_string(), title.into()),
        ];
        if let Some(etag) = etag {
            metadata.push((HTTP_ETAG.to_string(), etag.into()));
        }
        if let Some(modified) = last_modified {
            metadata.push((HTTP_LAST_MODIFIED.to_string(), modified.into()));
        }
        PageOutcome {
            item: Some(Fetched::Document(Document {
                key,
                version,
                content_type: Some(
                    match document {
                        // What the crawl recognised, whatever the server said.
                        Some(format) => format.mime(),
                        None if html => "text/html",
                        None => content_type,
                    }
                    .to_string(),
                ),
                bytes: if document.is_some() {
                    body
                } else {
                    Bytes::from(parsed.content)
                },
                metadata,
            })),
            links,
            own: own_key,
            memory,
        }
    }

    /// The links a page leads the crawl to: its first [`MAX_LINKS_PER_PAGE`]
    /// links (none if it says `nofollow`), then the canonical page it names
    /// (crawled like a link: the page is stored there), normalised, in
    /// scope, each once. Path rules, robots.txt and the visited set are
    /// applied when they are followed, as for remembered links.
    fn outgoing(&self, parsed: &ParsedPage, canonical: Option<&Url>) -> Vec<Url> {
        let links = if parsed.nofollow {
            &[][..]
        } else {
            &parsed.links[..]
        };
        let mut seen = HashSet::new();
        links
            .iter()
            .take(MAX_LINKS_PER_PAGE)
            .chain(canonical)
            .filter_map(normalize)
            .filter(|link| self.scope.contains(link) && seen.insert(link.to_string()))
            .collect()
    }
}

struct PageOutcome {
    item: Option<Fetched>,
    /// Where the page leads ([`Crawl::outgoing`]).
    links: Vec<Url>,
    /// The normalised URL the page was served from (after redirects).
    own: String,
    /// What to remember of the page; `None` to forget what was.
    memory: Option<PageLinks>,
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("response over the size limit")]
    TooLarge,
    #[error("{0}")]
    Http(String),
}

async fn read_capped(response: reqwest::Response, limit: u64) -> Result<Bytes, ReadError> {
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ReadError::Http(describe(&e)))?;
        body.extend_from_slice(&chunk);
        if body.len() as u64 > limit {
            return Err(ReadError::TooLarge);
        }
    }
    Ok(Bytes::from(body))
}

/// A reqwest error with its causes (where our resolver's refusal lives).
fn describe(error: &reqwest::Error) -> String {
    let mut message = if error.is_timeout() {
        "timed out".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn urls_normalise_to_one_spelling() {
        let n = |s: &str| normalize(&url(s)).unwrap().to_string();
        assert_eq!(
            n("http://Example.com:80/docs/#intro"),
            "http://example.com/docs"
        );
        assert_eq!(n("https://example.com:443/"), "https://example.com/");
        assert_eq!(n("http://127.0.0.1:8080/a/"), "http://127.0.0.1:8080/a");
        assert_eq!(
            n("https://example.com/a?utm_source=x&b=2&a=1&fbclid=z"),
            "https://example.com/a?a=1&b=2"
        );
        assert_eq!(
            n("https://example.com/a?utm_medium=y"),
            "https://example.com/a"
        );
        assert!(normalize(&url("mailto:a@example.com")).is_none());
        assert!(normalize(&url("ftp://example.com/x")).is_none());
    }

    #[test]
    fn private_and_metadata_literals_are_refused_unless_allowed() {
        let refused = check_literal(&url("http://169.254.169.254/latest"), false).unwrap_err();
        assert!(refused.contains("169.254.169.254") && refused.contains("metadata"));
        assert!(check_literal(&url("http://127.0.0.1/"), true).is_ok());
    }

    #[test]
    fn pages_yield_title_canonical_links_and_main_content() {
        let html = r#"<html><head><title> Install
            Guide </title><link rel="canonical" href="/docs/install"></head>
            <body><nav><a href="/nav">Nav</a></nav><main><h1>Install</h1>
            <p>Run it. <a href="step2.html#top">Next</a> <a rel="nofollow" href="/ads">x</a></p></main>
            <footer>(c)</footer></body></html>"#;
        let page = parse_page(html, &url("https://example.com/docs/install.html"));
        assert_eq!(page.title.as_deref(), Some("Install Guide"));
        assert_eq!(
            page.canonical.unwrap().as_str(),
            "https://example.com/docs/install"
        );
        let links: Vec<String> = page.links.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            links,
            vec![
                "https://example.com/nav",
                "https://example.com/docs/step2.html#top"
            ]
        );
        assert!(page.content.contains("<h1>Install</h1>"));
        assert!(!page.content.contains("(c)"));
        assert!(!page.noindex);
    }

    #[test]
    fn remembered_links_are_normalised_and_kept_in_scope_again() {
        let row = PageLinks {
            url: "https://example.com/".into(),
            etag: Some("\"v1\"".into()),
            last_modified: None,
            version: "\"v1\"".into(),
            skip_reason: None,
            links: vec![
                "https://example.com/a/#top".into(),
                "https://elsewhere.example/b".into(),
                "http://example.com/c".into(),
                "javascript:alert(1)".into(),
                "not a url".into(),
            ],
        };
        let scope = Scope::of(&url("https://example.com/"));
        let links: Vec<String> = remembered_links(&row, &scope)
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(links, vec!["https://example.com/a"]);
    }

    #[test]
    fn sitemaps_and_indexes_list_locations() {
        let (pages, indexes) = sitemap_locations(
            br#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
            <url><loc> https://example.com/a </loc></url><url><loc>https://example.com/b?x=1&amp;y=2</loc></url></urlset>"#,
        );
        assert_eq!(
            pages,
            vec!["https://example.com/a", "https://example.com/b?x=1&y=2"]
        );
        assert!(indexes.is_empty());
        let (pages, indexes) = sitemap_locations(
            br#"<sitemapindex><sitemap><loc>https://example.com/s1.xml</loc></sitemap></sitemapindex>"#,
        );
        assert!(pages.is_empty());
        assert_eq!(indexes, vec!["https://example.com/s1.xml"]);
    }

    #[test]
    fn path_rules_filter_on_the_path() {
        let rules = PathRules::new(&WebScrapeSourceConfig {
            starting_url: "https://example.com/".into(),
            max_depth: None,
            page_limit: None,
            include_path_regexes: Some(vec!["^/docs/".into()]),
            exclude_path_regexes: Some(vec!["/internal/".into()]),
        })
        .unwrap();
        assert!(rules.allows(&url("https://example.com/docs/a")));
        assert!(!rules.allows(&url("https://example.com/blog/a")));
        assert!(!rules.allows(&url("https://example.com/docs/internal/a")));
    }
}
