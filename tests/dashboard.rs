//! The dashboard: its event stream (`GET /api/v1/events`) spoken to
//! directly, its static files, and its user stories in a real headless
//! Chromium (tests/ui/dashboard.py, Playwright with Debian's
//! `/usr/bin/chromium`) against real Chroma, moto S3 and the daemon.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const ADMIN: &str = "token-admin";
const TEAM: &str = "token-team";

/// Test config, plus: a job whose Chroma is down keeps retrying (until
/// cancelled); an admin token named `admin`, a team token limited to the
/// database `team`; two event streams at most.
fn config() -> String {
    format!(
        "{}\n[api]\nmax_event_streams = 2\n[[api.tokens]]\nsha256 = \"{}\"\nname = \"admin\"\n\
         [[api.tokens]]\nsha256 = \"{}\"\nname = \"team\"\ndatabases = [\"team\"]\n",
        TEST_CONFIG.replace("max_attempts = 3", "max_attempts = 1000"),
        sha256_hex(ADMIN),
        sha256_hex(TEAM)
    )
}

/// A `text/event-stream` response read event by event.
struct Events {
    lines: BufReader<reqwest::blocking::Response>,
}

impl Events {
    fn open(daemon: &Daemon, token: Option<&str>) -> Result<Events, (u16, Value)> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let mut request = client.get(format!("{}/api/v1/events", daemon.url()));
        if let Some(token) = token {
            request = request.header("x-chroma-token", token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            let retry_after = response.headers().get("retry-after").is_some();
            let mut body: Value = response.json().unwrap_or(Value::Null);
            body["retry_after_header"] = json!(retry_after);
            return Err((status, body));
        }
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Ok(Events {
            lines: BufReader::new(response),
        })
    }

    /// The next event (name, data); `None` when the stream ended.
    fn next(&mut self) -> Option<(String, String)> {
        let (mut name, mut data) = (String::from("message"), Vec::new());
        loop {
            let mut line = String::new();
            if self.lines.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return Some((name, data.join("\n")));
                }
            } else if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.trim_start().to_string());
            }
        }
    }

    /// Invocation events until `done` says so; every one seen, in order.
    fn until(&mut self, limit: Duration, mut done: impl FnMut(&Value) -> bool) -> Vec<Value> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < limit {
            let Some((name, data)) = self.next() else {
                panic!("the stream ended early; saw {seen:?}");
            };
            if name != "invocation" {
                continue;
            }
            let job: Value = serde_json::from_str(&data).unwrap();
            let finished = done(&job);
            seen.push(job);
            if finished {
                return seen;
            }
        }
        panic!("timed out after {limit:?}; saw {seen:?}");
    }
}

fn s3_source_in(s3: &S3, database: &str, collection: &str) -> Value {
    let mut source = s3_source(s3, "dash", collection, None);
    source["database_name"] = json!(database);
    source
}

#[test]
fn event_stream_follows_invocations_within_the_tokens_databases() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("dash");
    s3.put(
        "dash",
        "docs/a.md",
        "# A\n\nAlpha text for the stream.\n",
        None,
    );
    let mut daemon = Daemon::start_with(
        &chroma.url(),
        &config(),
        &[("CHROMA_SYNCD_API_TOKENS", ADMIN)],
    );
    let own = daemon.create_source(s3_source_in(&s3, "testdb", "events"));
    let team = daemon.create_source(s3_source_in(&s3, "team", "events"));

    // Authenticated like the rest of the API.
    let (status, body) = Events::open(&daemon, None).err().expect("refused");
    assert_eq!(status, 401, "{body}");
    let (status, body) = Events::open(&daemon, Some("wrong")).err().expect("refused");
    assert_eq!(status, 401, "{body}");

    let mut admin = Events::open(&daemon, Some(ADMIN)).ok().unwrap();
    let mut limited = Events::open(&daemon, Some(TEAM)).ok().unwrap();
    // Both wait for their first round, then say `ready`.
    for events in [&mut admin, &mut limited] {
        let (name, _) = events.next().expect("an event");
        assert_eq!(name, "ready");
    }
    // At the cap (2) a third stream is a 429 with Retry-After.
    let (status, body) = Events::open(&daemon, Some(ADMIN)).err().expect("capped");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "too_many_event_streams");
    assert_eq!(body["retry_after_header"], true);

    let own_job = daemon.invoke(&own, json!({"object_key": "docs/a.md"}));
    let team_job = daemon.invoke(&team, json!({"object_key": "docs/a.md"}));
    let seen = admin.until(Duration::from_secs(300), |job| {
        job["id"] == own_job.as_str() && job["status"]["complete"].is_object()
    });
    let last = seen.last().unwrap();
    assert!(
        last["stats"]["chunks_upserted"].as_u64().unwrap() > 0,
        "{last}"
    );
    // The admin stream shows every database.
    let seen_limited = limited.until(Duration::from_secs(300), |job| {
        job["id"] == team_job.as_str() && job["status"]["complete"].is_object()
    });
    // The team token's stream never carries another database's job.
    for job in &seen_limited {
        assert_eq!(job["metadata"]["database_name"], "team", "{job}");
        assert_ne!(job["id"], own_job.as_str());
    }
    // Each event is the Job JSON the API answers for it.
    assert_eq!(*seen_limited.last().unwrap(), daemon.job(&team_job));

    // A closed stream frees its slot.
    drop(limited);
    let reopened = wait_until("a freed stream slot", Duration::from_secs(10), || {
        Events::open(&daemon, Some(ADMIN)).ok()
    });
    // Streams end when the daemon stops, and do not hold its drain.
    daemon.terminate_within(Duration::from_secs(20));
    for mut events in [admin, reopened] {
        let start = Instant::now();
        while events.next().is_some() {
            assert!(start.elapsed() < Duration::from_secs(20), "still streaming");
        }
    }
}

#[test]
fn dashboard_files_are_served_with_their_security_headers() {
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config(),
        &[("CHROMA_SYNCD_API_TOKENS", ADMIN)],
    );
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        // No token needed: the files hold no data.
        let response = http()
            .get(format!("{}{path}", daemon.url()))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("script-src 'self'"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
    }
    let response = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}/ui", daemon.url()))
        .send()
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/ui/");
    // The API behind it still wants a token.
    let (status, _) = daemon.request_with_token(Method::GET, "/api/v1/sources", None, None);
    assert_eq!(status, 401);
}

/// Where screenshots go: under the build directory, kept as CI artifacts.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("ui-screenshots")
}

fn run_stories(daemon: &Daemon, s3: &S3, phase: &str, shots: &std::path::Path) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/ui/dashboard.py");
    let child = Command::new(venv().join("bin/python"))
        .arg(&script)
        .env("DASH_URL", daemon.url())
        .env("DASH_S3_ENDPOINT", s3.endpoint())
        .env("DASH_BUCKET", "dash")
        .env("DASH_S3_KEY_ID", S3_KEY_ID)
        .env("DASH_S3_SECRET", S3_SECRET)
        .env("DASH_ADMIN_TOKEN", ADMIN)
        .env("DASH_TEAM_TOKEN", TEAM)
        .env("DASH_SHOTS", shots)
        .env("DASH_PHASE", phase)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running tests/ui/dashboard.py with the test venv's python");
    let output = wait_with_timeout(child, Duration::from_secs(900));
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the {phase} stories failed:\n{stdout}\n{}\n--- daemon log ---\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    assert!(stdout.contains(&format!("dashboard {phase} stories passed")));
}

/// Sign in (and be refused with a wrong token), create a source from the
/// form, sync an object and watch it complete without reloading, retry a
/// failed invocation, see another database hidden from a limited token;
/// then, with Chroma down, cancel a job that cannot complete. Fails (does
/// not skip) without Chromium.
#[test]
fn dashboard_user_stories_in_chromium() {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: the dashboard's browser tests need Debian's chromium \
         package (.ci/run installs it: apt-get install chromium)"
    );
    let mut chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("dash");
    s3.put(
        "dash",
        "docs/a.md",
        "# A\n\nAlpha text the dashboard syncs.\n",
        None,
    );
    let daemon = Daemon::start_with(
        &chroma.url(),
        &config(),
        &[("CHROMA_SYNCD_API_TOKENS", ADMIN)],
    );
    daemon.create_source(s3_source_in(&s3, "team", "team-docs"));
    let shots = screenshot_dir();
    std::fs::create_dir_all(&shots).unwrap();

    run_stories(&daemon, &s3, "main", &shots);
    chroma.stop();
    run_stories(&daemon, &s3, "cancel", &shots);
    let (_, jobs) = daemon.request(Method::GET, "/api/v1/invocations?status=cancelled", None);
    let cancelled = jobs.as_array().unwrap();
    assert_eq!(cancelled.len(), 1, "{jobs}");
    assert_eq!(cancelled[0]["cancel_requested_by"], "admin", "{jobs}");
    println!("dashboard screenshots: {}", shots.display());
}
