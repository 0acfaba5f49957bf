//! A GitHub REST emulator serving real git data.
//!
//! Tests build repositories with the `git` CLI in temp dirs; the emulator
//! answers the REST calls a GitHub client makes (repository, branches,
//! commits, compare, trees, blobs, tarball with its codeload redirect,
//! installation tokens for GitHub Apps) by running `git` on them. The daemon
//! only gets its base URL. Knobs let a test inject rate limits, serve a
//! hand-made tarball, or make a repository private.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};

use super::runtime;

/// A git repository in a temp dir, changed through the `git` CLI.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let repo = GitRepo {
            dir: tempfile::tempdir().unwrap(),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "test@example.com"]);
        repo.git(&["config", "user.name", "Test"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn git(&self, args: &[&str]) -> String {
        git(self.path(), args)
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    pub fn remove(&self, path: &str) {
        self.git(&["rm", "-q", path]);
    }

    pub fn rename(&self, from: &str, to: &str) {
        let target = self.path().join(to);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        self.git(&["mv", from, to]);
    }

    /// Commits everything; returns the new commit's sha.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("running git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn git_bytes(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    output.status.success().then_some(output.stdout)
}

/// What the emulator served, for assertions.
#[derive(Debug, Clone)]
pub struct Served {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Default)]
struct EmulatorState {
    repos: BTreeMap<String, PathBuf>,
    private: HashSet<String>,
    /// Tokens accepted for private repositories.
    tokens: HashSet<String>,
    /// App id → installation id, for repositories the app is installed on.
    apps: HashMap<String, u64>,
    tarball_override: HashMap<String, Vec<u8>>,
    /// Upcoming responses to replace with rate-limit errors, in order.
    rate_limits: Vec<RateLimit>,
    log: Vec<Served>,
    minted: u64,
}

/// A rate-limit response GitHub may send.
#[derive(Debug, Clone, Copy)]
pub enum RateLimit {
    /// 403, `x-ratelimit-remaining: 0`, reset `seconds` from now.
    Primary { seconds: i64 },
    /// 429 with `Retry-After`.
    Secondary { seconds: u64 },
}

pub struct GitHubEmulator {
    pub url: String,
    state: Arc<Mutex<EmulatorState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GitHubEmulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GitHubEmulator {
    pub fn start() -> GitHubEmulator {
        let state = Arc::new(Mutex::new(EmulatorState::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .fallback(handle)
            .with_state((Arc::clone(&state), url.clone()));
        let task = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        GitHubEmulator { url, state, task }
    }

    /// Serves `repo` as `owner/name`.
    pub fn add_repo(&self, full_name: &str, repo: &GitRepo) {
        self.state
            .lock()
            .unwrap()
            .repos
            .insert(full_name.to_string(), repo.path().to_path_buf());
    }

    /// Only requests with one of the accepted tokens see the repository.
    pub fn make_private(&self, full_name: &str) {
        self.state
            .lock()
            .unwrap()
            .private
            .insert(full_name.to_string());
    }

    pub fn accept_token(&self, token: &str) {
        self.state.lock().unwrap().tokens.insert(token.to_string());
    }

    /// Installs GitHub App `app_id` (installation `installation`) on every repository.
    pub fn install_app(&self, app_id: &str, installation: u64) {
        self.state
            .lock()
            .unwrap()
            .apps
            .insert(app_id.to_string(), installation);
    }

    pub fn override_tarball(&self, full_name: &str, tar_gz: Vec<u8>) {
        self.state
            .lock()
            .unwrap()
            .tarball_override
            .insert(full_name.to_string(), tar_gz);
    }

    pub fn rate_limit_next(&self, limits: &[RateLimit]) {
        self.state
            .lock()
            .unwrap()
            .rate_limits
            .extend_from_slice(limits);
    }

    pub fn served(&self) -> Vec<Served> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// Installation tokens minted so far.
    pub fn tokens_minted(&self) -> u64 {
        self.state.lock().unwrap().minted
    }
}

type Shared = (Arc<Mutex<EmulatorState>>, String);

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"message": message, "documentation_url": "https://docs.github.com/rest"})
            .to_string(),
    )
        .into_response()
}

fn json_response(value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn handle(State((state, base)): State<Shared>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let headers = request.headers().clone();
    let response = {
        let mut guard = state.lock().unwrap();
        if !guard.rate_limits.is_empty() {
            let limit = guard.rate_limits.remove(0);
            rate_limited(limit)
        } else {
            route(&mut guard, &base, &method, &path, &query, &headers)
        }
    };
    state.lock().unwrap().log.push(Served {
        method: method.to_string(),
        path,
        status: response.status().as_u16(),
    });
    response
}

fn rate_limited(limit: RateLimit) -> Response {
    let mut response = match limit {
        RateLimit::Primary { seconds } => {
            let mut response = error(StatusCode::FORBIDDEN, "API rate limit exceeded");
            let reset = chrono::Utc::now().timestamp() + seconds;
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-remaining", "0".parse().unwrap());
            headers.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
            response
        }
        RateLimit::Secondary { seconds } => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "You have exceeded a secondary rate limit",
            );
            response
                .headers_mut()
                .insert("retry-after", seconds.to_string().parse().unwrap());
            response
        }
    };
    response
        .headers_mut()
        .insert("x-ratelimit-limit", "5000".parse().unwrap());
    response
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_string)
}

/// The app id a GitHub App JWT claims (`iss`), if the request carries one.
fn app_of_jwt(headers: &HeaderMap) -> Option<String> {
    let token = bearer(headers)?;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    match &claims["iss"] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn route(
    state: &mut EmulatorState,
    base: &str,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
) -> Response {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // GitHub App: mint an installation token.
    if let ["app", "installations", id, "access_tokens"] = parts.as_slice() {
        if method != Method::POST {
            return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let Some(app) = app_of_jwt(headers) else {
            return error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        };
        if state.apps.get(&app).map(|i| i.to_string()).as_deref() != Some(*id) {
            return error(StatusCode::NOT_FOUND, "Not Found");
        }
        state.minted += 1;
        let token = format!("ghs_emulated{}", state.minted);
        state.tokens.insert(token.clone());
        let expires = chrono::Utc::now() + chrono::Duration::hours(1);
        return (
            StatusCode::CREATED,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "token": token,
                "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "permissions": {"contents": "read", "metadata": "read"},
                "repository_selection": "all",
            })
            .to_string(),
        )
            .into_response();
    }
    // Codeload: the tarball itself.
    if let ["_codeload", owner, name, "legacy.tar.gz", sha] = parts.as_slice() {
        let full = format!("{owner}/{name}");
        if let Some(bytes) = state.tarball_override.get(&full) {
            return tarball(bytes.clone());
        }
        let Some(dir) = state.repos.get(&full) else {
            return error(StatusCode::NOT_FOUND, "Not Found");
        };
        let prefix = format!("--prefix={owner}-{name}-{}/", &sha[..7.min(sha.len())]);
        return match git_bytes(dir, &["archive", "--format=tar.gz", &prefix, sha]) {
            Some(bytes) => tarball(bytes),
            None => error(StatusCode::NOT_FOUND, "Not Found"),
        };
    }
    let ["repos", owner, name, rest @ ..] = parts.as_slice() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let full = format!("{owner}/{name}");
    let Some(dir) = state.repos.get(&full).cloned() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if rest == ["installation"] {
        return match app_of_jwt(headers).and_then(|app| state.apps.get(&app).copied()) {
            Some(id) => json_response(json!({"id": id, "app_id": app_of_jwt(headers)})),
            None => error(StatusCode::NOT_FOUND, "Not Found"),
        };
    }
    if state.private.contains(&full)
        && !bearer(headers).is_some_and(|token| state.tokens.contains(&token))
    {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let resolve = |reference: &str| -> Option<String> {
        let spec = format!("{reference}^{{commit}}");
        git_bytes(&dir, &["rev-parse", "--verify", "--quiet", &spec])
            .map(|out| String::from_utf8_lossy(&out).trim().to_string())
    };
    match rest {
        [] => {
            let head = git(&dir, &["symbolic-ref", "--short", "HEAD"]);
            json_response(json!({
                "full_name": full,
                "name": name,
                "default_branch": head.trim(),
                "private": state.private.contains(&full),
            }))
        }
        ["branches", branch @ ..] => {
            let branch = branch.join("/");
            match resolve(&format!("refs/heads/{branch}")) {
                Some(sha) => json_response(json!({"name": branch, "commit": {"sha": sha}})),
                None => error(StatusCode::NOT_FOUND, "Branch not found"),
            }
        }
        ["commits", reference @ ..] => {
            let reference = reference.join("/");
            match resolve(&reference) {
                Some(sha) => json_response(json!({"sha": sha, "commit": {"message": ""}})),
                None => error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("No commit found for SHA: {reference}"),
                ),
            }
        }
        ["compare", basehead] => {
            let Some((base_ref, head_ref)) = basehead.split_once("...") else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let (Some(base_sha), Some(head_sha)) = (resolve(base_ref), resolve(head_ref)) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let out = git(&dir, &["diff", "--name-status", "-M", &base_sha, &head_sha]);
            let files: Vec<Value> = out
                .lines()
                .map(|line| {
                    let fields: Vec<&str> = line.split('\t').collect();
                    let status = match &fields[0][..1] {
                        "A" => "added",
                        "D" => "removed",
                        "R" => "renamed",
                        _ => "modified",
                    };
                    let mut file = json!({"filename": fields.last().unwrap(), "status": status});
                    if status == "renamed" {
                        file["previous_filename"] = json!(fields[1]);
                    }
                    file
                })
                .collect();
            json_response(json!({"status": "ahead", "files": files}))
        }
        ["git", "trees", sha] => {
            let recursive = query.contains("recursive=");
            let mut args = vec!["ls-tree", "-l", "-z", "--full-tree"];
            if recursive {
                args.push("-r");
            }
            args.push(sha);
            let Some(out) = git_bytes(&dir, &args) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let tree: Vec<Value> = out
                .split(|b| *b == 0)
                .filter(|entry| !entry.is_empty())
                .map(|entry| {
                    let entry = String::from_utf8_lossy(entry);
                    let (meta, path) = entry.split_once('\t').unwrap();
                    let fields: Vec<&str> = meta.split_whitespace().collect();
                    let mut item = json!({
                        "path": path, "mode": fields[0], "type": fields[1], "sha": fields[2],
                    });
                    if let Ok(size) = fields[3].parse::<u64>() {
                        item["size"] = json!(size);
                    }
                    item
                })
                .collect();
            json_response(json!({"sha": sha, "tree": tree, "truncated": false}))
        }
        ["git", "blobs", sha] => {
            let Some(bytes) = git_bytes(&dir, &["cat-file", "blob", sha]) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            let raw = headers
                .get(header::ACCEPT)
                .and_then(|a| a.to_str().ok())
                .is_some_and(|a| a.contains("raw"));
            if raw {
                return (StatusCode::OK, bytes).into_response();
            }
            json_response(json!({
                "sha": sha,
                "size": bytes.len(),
                "encoding": "base64",
                "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
            }))
        }
        ["tarball", reference @ ..] => {
            let reference = reference.join("/");
            match resolve(&reference) {
                Some(sha) => Response::builder()
                    .status(StatusCode::FOUND)
                    .header(
                        header::LOCATION,
                        format!("{base}/_codeload/{full}/legacy.tar.gz/{sha}"),
                    )
                    .body(Body::empty())
                    .unwrap(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ["contents", file @ ..] => {
            let reference = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("ref="))
                .unwrap_or("HEAD");
            let spec = format!("{reference}:{}", file.join("/"));
            match git_bytes(&dir, &["cat-file", "blob", &spec]) {
                Some(bytes) => json_response(json!({
                    "type": "file",
                    "path": file.join("/"),
                    "encoding": "base64",
                    "content": base64::engine::general_purpose::STANDARD.encode(&bytes),
                })),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn tarball(bytes: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-gzip")],
        bytes,
    )
        .into_response()
}

/// A gzipped tarball with the given raw entry names, as a hostile server
/// could send (names are written byte for byte, `..` included).
pub fn raw_tarball(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in entries {
        let mut header = tar::Header::new_old();
        let field = &mut header.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut encoder, &tar).unwrap();
    encoder.finish().unwrap()
}

/// A fresh 2048-bit RSA key in PEM (PKCS#1), made with the `openssl` CLI.
pub fn rsa_private_key_pem(dir: &Path) -> PathBuf {
    let path = dir.join("app.pem");
    let status = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&path)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running openssl");
    assert!(status.success(), "openssl genrsa failed");
    path
}
