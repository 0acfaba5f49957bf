//! A local website for crawler tests: serves a copy of `fixtures/site` (so a
//! test can edit or delete pages between crawls) with ETags and 304s, plus
//! dynamic routes: redirects into and out of scope, a slow page, a huge page.
//! Every request is logged for assertions ("disallowed pages are never
//! fetched", "this re-crawl was answered with 304s"), with whether it was
//! conditional and how many body bytes its answer had.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{runtime, sha256_hex};

/// How long `/slow.html` takes: longer than the tests' request timeout.
pub const SLOW_PAGE_DELAY: Duration = Duration::from_secs(3);
/// Size of `/huge.html`: over the tests' page size cap.
pub const HUGE_PAGE_BYTES: usize = 400_000;

#[derive(Debug, Clone)]
pub struct Hit {
    pub path: String,
    pub status: u16,
    /// The request carried `If-None-Match` or `If-Modified-Since`.
    pub conditional: bool,
    /// Bytes of the answer's body (headers not counted).
    pub bytes: u64,
}

struct SiteState {
    root: PathBuf,
    base: String,
    other_base: String,
    log: Mutex<Vec<Hit>>,
    /// Paths answered with 500 (a site having a bad moment).
    failing: Mutex<Vec<String>>,
    /// Paths answered with a 301 to the given location.
    moved: Mutex<Vec<(String, String)>>,
}

pub struct FixtureSite {
    /// `http://127.0.0.1:PORT`: the crawl's scope.
    pub base: String,
    dir: tempfile::TempDir,
    state: Arc<SiteState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FixtureSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl FixtureSite {
    pub fn start() -> FixtureSite {
        Self::serve(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/site"))
    }

    /// Serves a copy of `site` (any directory of pages).
    pub fn serve(site: &Path) -> FixtureSite {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(site, dir.path());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(SiteState {
            root: dir.path().to_path_buf(),
            base: format!("http://127.0.0.1:{port}"),
            // The same server under another host name: out of the crawl's scope.
            other_base: format!("http://localhost:{port}"),
            log: Mutex::new(Vec::new()),
            failing: Mutex::new(Vec::new()),
            moved: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(serve).with_state(Arc::clone(&state));
        let task = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FixtureSite {
            base: state.base.clone(),
            dir,
            state,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn write(&self, path: &str, content: &str) {
        std::fs::write(self.dir.path().join(path), content).unwrap();
    }

    pub fn delete(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).unwrap();
    }

    /// Answers 500 for `path` from now on.
    pub fn fail(&self, path: &str) {
        self.state.failing.lock().unwrap().push(path.to_string());
    }

    /// Answers `path` with a 301 to `location` from now on.
    pub fn move_to(&self, path: &str, location: &str) {
        self.state
            .moved
            .lock()
            .unwrap()
            .push((path.to_string(), location.to_string()));
    }

    /// Undoes [`FixtureSite::fail`] and [`FixtureSite::move_to`].
    pub fn heal(&self) {
        self.state.failing.lock().unwrap().clear();
        self.state.moved.lock().unwrap().clear();
    }

    /// The same server under another host name (`localhost`): out of scope.
    pub fn other_url(&self, path: &str) -> String {
        format!("{}{path}", self.state.other_base)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn clear_hits(&self) {
        self.state.log.lock().unwrap().clear();
    }
}

async fn serve(State(state): State<Arc<SiteState>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    let logged = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| path.clone());
    let if_none_match = request
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let conditional =
        if_none_match.is_some() || request.headers().contains_key(header::IF_MODIFIED_SINCE);
    let response = respond(&state, &path, if_none_match.as_deref()).await;
    let bytes = axum::body::HttpBody::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    state.log.lock().unwrap().push(Hit {
        path: logged,
        status: response.status().as_u16(),
        conditional,
        bytes,
    });
    response
}

fn redirect(status: StatusCode, location: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .body(Body::empty())
        .unwrap()
}

async fn respond(state: &SiteState, path: &str, if_none_match: Option<&str>) -> Response {
    if state.failing.lock().unwrap().iter().any(|p| p == path) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "having a bad moment").into_response();
    }
    let moved = state.moved.lock().unwrap().clone();
    if let Some((_, location)) = moved.into_iter().find(|(p, _)| p == path) {
        return redirect(StatusCode::MOVED_PERMANENTLY, location);
    }
    match path {
        "/redirect-in" => {
            return redirect(StatusCode::MOVED_PERMANENTLY, "/docs/guide.html".into());
        }
        "/redirect-out" => {
            return redirect(
                StatusCode::FOUND,
                format!("{}/about.html", state.other_base),
            );
        }
        "/slow.html" => {
            tokio::time::sleep(SLOW_PAGE_DELAY).await;
            return page("<html><head><title>Slow</title></head><body>late</body></html>".into());
        }
        "/huge.html" => {
            let body = "<p>filler paragraph of a huge page</p>\n".repeat(HUGE_PAGE_BYTES / 36);
            return page(format!(
                "<html><head><title>Huge</title></head><body>{body}</body></html>"
            ));
        }
        _ => {}
    }
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut file = state.root.join(relative);
    if file.is_dir() {
        if !path.ends_with('/') {
            return redirect(StatusCode::MOVED_PERMANENTLY, format!("{path}/"));
        }
        file = file.join("index.html");
    }
    let Ok(bytes) = std::fs::read(&file) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let extension = file.extension().and_then(|e| e.to_str()).unwrap_or("");
    let content_type = match extension {
        "html" => "text/html; charset=utf-8",
        "xml" => "application/xml",
        "txt" => "text/plain",
        "png" => "image/png",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    };
    let bytes = if matches!(extension, "html" | "xml" | "txt") {
        String::from_utf8(bytes)
            .unwrap()
            .replace("{{BASE}}", &state.base)
            .into_bytes()
    } else {
        bytes
    };
    let etag = format!(
        "\"{}\"",
        &sha256_hex(&String::from_utf8_lossy(&bytes))[..16]
    );
    if if_none_match == Some(etag.as_str()) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .body(Body::empty())
            .unwrap();
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ETAG, etag)
        .body(Body::from(bytes))
        .unwrap()
}

fn page(html: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response()
}
