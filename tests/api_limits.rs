//! User story: the daemon's API is shared by several teams, and one of them
//! (by mistake or not) sends requests that are too big, too costly or too
//! slow. Each is refused with a 400/408 `{error, message}` that says what to
//! change, nothing is stored, and other callers are still served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn web_source(extra: Value) -> Value {
    let mut source = json!({
        "database_name": "testdb",
        "web_scrape": {"starting_url": "https://docs.example.com/"}
    });
    for (key, value) in extra.as_object().unwrap() {
        source["web_scrape"][key] = value.clone();
    }
    source
}

fn assert_refused(status: u16, body: &Value, expected_in_message: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(expected_in_message),
        "message should say `{expected_in_message}`: {message}"
    );
}

fn source_count(daemon: &Daemon) -> usize {
    let (status, sources) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200);
    sources.as_array().unwrap().len()
}

#[test]
fn oversized_and_costly_requests_are_refused_before_anything_is_stored() {
    let chroma = Chroma::start();
    let config = format!("{TEST_CONFIG}\n[api]\nmin_schedule_interval_seconds = 300\n");
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);

    // Invocation metadata is copied onto every chunk: 13 values of 120 KB
    // are refused (16 KiB in all is the limit), and the job is not stored.
    // (An AWS bucket: nothing is fetched, the invocations are only planned.)
    let source_id = daemon.create_source(json!({"database_name": "testdb",
        "s3": {"bucket_name": "team-docs", "region": "us-east-1",
               "collection_name": "docs", "aws_credential_id": 0}}));
    let big: serde_json::Map<String, Value> = (0..13)
        .map(|i| (format!("field{i}"), json!("x".repeat(120_000))))
        .collect();
    let (status, body) = daemon.request(
        Method::POST,
        &format!("/api/v1/sources/{source_id}/invocations"),
        Some(json!({"object_key": "a.md", "metadata": big})),
    );
    assert_refused(status, &body, "16 KiB");
    let (_, jobs) = daemon.request(
        Method::GET,
        &format!("/api/v1/invocations?source_id={source_id}"),
        None,
    );
    assert_eq!(jobs.as_array().unwrap().len(), 0, "{jobs}");
    // A key under the prefix only lexically (`docs/../payroll.csv`) is
    // refused: a store that normalises paths would serve what is outside.
    let prefixed = daemon.create_source(json!({"database_name": "testdb",
        "s3": {"bucket_name": "team-docs", "region": "us-east-1", "path_prefix": "docs/",
               "collection_name": "docs", "aws_credential_id": 0}}));
    for key in ["docs/../payroll.csv", "docs/./a.md", "docs/a/../../b.md"] {
        let (status, body) = daemon.request(
            Method::POST,
            &format!("/api/v1/sources/{prefixed}/invocations"),
            Some(json!({ "object_key": key })),
        );
        assert_refused(status, &body, "`..` segment");
    }
    // Metadata within the limit is accepted.
    let small: serde_json::Map<String, Value> = (0..4)
        .map(|i| (format!("field{i}"), json!("y".repeat(2_000))))
        .collect();
    daemon.invoke(&source_id, json!({"object_key": "a.md", "metadata": small}));
    let stored = source_count(&daemon);

    // A thousand heavy path regexes: refused by count, at once.
    let heavy: Vec<String> = (0..1000)
        .map(|i| format!("^/(\\w{{1,50}}){{1,50}}/{i}"))
        .collect();
    let (status, body) = daemon.request(
        Method::POST,
        "/api/v1/sources",
        Some(web_source(json!({"include_path_regexes": heavy}))),
    );
    assert_refused(status, &body, "at most 100");
    // One regex whose compiled form is huge: refused by compiled size.
    let (status, body) = daemon.request(
        Method::POST,
        "/api/v1/sources",
        Some(web_source(
            json!({"exclude_path_regexes": ["^/(\\w{1,100}){1,100}$"]}),
        )),
    );
    assert_refused(status, &body, "size limit");
    // An overlong pattern.
    let (status, body) = daemon.request(
        Method::POST,
        "/api/v1/sources",
        Some(web_source(
            json!({"include_path_regexes": ["a".repeat(2_000)]}),
        )),
    );
    assert_refused(status, &body, "bytes long");

    // GitHub globs are bounded the same way.
    let globs: Vec<String> = (0..101).map(|i| format!("dir{i}/**")).collect();
    let (status, body) = daemon.request(
        Method::POST,
        "/api/v1/sources",
        Some(json!({"database_name": "testdb",
            "github": {"repository": "acme/widgets", "include_globs": globs}})),
    );
    assert_refused(status, &body, "include_globs has 101 patterns");

    // Schedules: every minute is more often than this daemon's 300 s
    // minimum, and so is a pattern that fires twice, a minute apart, daily.
    for cron in ["* * * * *", "0,1 9 * * *"] {
        let (status, body) = daemon.request(
            Method::POST,
            "/api/v1/sources",
            Some(json!({"database_name": "testdb",
                "web_scrape": {"starting_url": "https://docs.example.com/"},
                "schedule": {"cron": cron, "target_collection_name": "docs"}})),
        );
        assert_refused(status, &body, "min_schedule_interval_seconds");
    }
    // Every ten minutes is fine.
    daemon.create_source(json!({"database_name": "testdb",
        "web_scrape": {"starting_url": "https://docs.example.com/"},
        "schedule": {"cron": "*/10 * * * *", "target_collection_name": "docs"}}));
    assert_eq!(
        source_count(&daemon),
        stored + 1,
        "only the valid source was stored"
    );
}

/// Reads from `stream` until the server closes it (EOF or reset) or
/// `limit` passes; whether it was closed, and what was read.
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> (bool, String) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut buffer) {
            Ok(0) => return (true, String::from_utf8_lossy(&received).into_owned()),
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, String::from_utf8_lossy(&received).into_owned()),
        }
    }
    (false, String::from_utf8_lossy(&received).into_owned())
}

#[test]
fn slow_clients_cannot_hold_the_api() {
    let chroma = Chroma::start();
    let config = format!(
        "{TEST_CONFIG}\n[api]\nheader_read_timeout_seconds = 1\nrequest_timeout_seconds = 2\n\
         idle_timeout_seconds = 1\nmax_connections = 4\n"
    );
    let daemon = Daemon::start_with(&chroma.url(), &config, &[]);
    let address = format!("127.0.0.1:{}", daemon.port);

    // Slowloris: as many connections as the cap, each sending half a header
    // line and then nothing. Each is closed by the header read timeout.
    let mut slow: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();
    // Meanwhile another caller is still answered (once a slot frees).
    let (status, _) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200);
    for stream in &mut slow {
        let (closed, _) = closed_by_server(stream, Duration::from_secs(30));
        assert!(
            closed,
            "a connection that never finished its headers was kept open"
        );
    }

    // A connection that opens and sends nothing at all is closed too.
    let mut silent = TcpStream::connect(&address).unwrap();
    assert!(closed_by_server(&mut silent, Duration::from_secs(30)).0);

    // A kept-alive connection that goes idle after a request is closed.
    let mut idle = TcpStream::connect(&address).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (closed, answer) = closed_by_server(&mut idle, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle kept-alive connection was kept open");

    // A body trickled slower than the request timeout: 408 {error, message}.
    let mut trickle = TcpStream::connect(&address).unwrap();
    trickle
        .write_all(
            b"POST /api/v1/sources HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
              Content-Length: 1000\r\n\r\n{\"database_name\"",
        )
        .unwrap();
    let (_, answer) = closed_by_server(&mut trickle, Duration::from_secs(30));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout_seconds"), "{answer}");

    // Clients that pipeline requests and never read the answers fill every
    // connection slot; once their writes stall they are cut off, and the
    // API serves others again.
    let _stalled: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream = TcpStream::connect(&address).unwrap();
            let requests = "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(3_000);
            stream.write_all(requests.as_bytes()).unwrap();
            stream
        })
        .collect();
    let (status, _) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(
        status, 200,
        "the API is held by clients that stopped reading"
    );

    // And the daemon serves normally afterwards.
    let (status, _) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200);
}
