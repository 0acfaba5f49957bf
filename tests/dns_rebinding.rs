//! A web page whose host name rebinds to 127.0.0.1 runs in a developer's
//! browser as a loopback peer. It must not be able to list or create
//! sources: requests under a foreign `Host`, and state-changing requests
//! from a foreign `Origin`, are refused with `{error, message}` and nothing
//! is stored (issue 31, item 1).

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;

/// `method path` with extra headers; (status, JSON body).
fn send(
    daemon: &Daemon,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut request = http().request(method, format!("{}{path}", daemon.url()));
    if let Some(body) = body {
        request = request.json(body);
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().unwrap();
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn sources(daemon: &Daemon) -> Vec<Value> {
    let (status, list) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .or_else(|| list.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no list in {list}"))
}

#[test]
fn a_rebinding_page_can_neither_read_nor_create_sources() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("team-docs");
    let daemon = Daemon::start(&chroma.url());
    let source = s3_source(&s3, "team-docs", "knowledge", None);
    let attacker = format!("attacker.example:{}", daemon.port);

    let (status, body) = send(
        &daemon,
        Method::GET,
        "/api/v1/sources",
        None,
        &[("host", attacker.clone())],
    );
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"], "forbidden");
    assert!(body["message"].as_str().unwrap().contains("Host"), "{body}");

    let (status, body) = send(
        &daemon,
        Method::POST,
        "/api/v1/sources",
        Some(&source),
        &[("host", attacker.clone())],
    );
    assert_eq!(status, 403, "{body}");
    // The dashboard is not served under that name either.
    let (status, _) = send(&daemon, Method::GET, "/ui/", None, &[("host", attacker)]);
    assert_eq!(status, 403);

    // Under the daemon's own name, from another origin: refused too.
    let (status, body) = send(
        &daemon,
        Method::POST,
        "/api/v1/sources",
        Some(&source),
        &[("origin", "http://attacker.example".to_string())],
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("Origin"),
        "{body}"
    );
    assert!(
        sources(&daemon).is_empty(),
        "a refused request stored a source"
    );

    // The daemon's own origin (the dashboard's fetches) and no Origin (the
    // CLI, curl) are served.
    let (status, body) = send(
        &daemon,
        Method::POST,
        "/api/v1/sources",
        Some(&source),
        &[("origin", daemon.url())],
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(
        &daemon,
        Method::GET,
        "/api/v1/sources",
        None,
        &[
            ("host", format!("localhost:{}", daemon.port)),
            ("origin", "http://attacker.example".to_string()),
        ],
    );
    assert_eq!(
        status, 200,
        "a read under a loopback name is served: {body}"
    );
    assert_eq!(sources(&daemon).len(), 1);

    // Container probes answer under any name.
    let (status, _) = send(
        &daemon,
        Method::GET,
        "/healthz",
        None,
        &[("host", "10.1.2.3:8420".to_string())],
    );
    assert_eq!(status, 200);
}

#[test]
fn names_the_operator_lists_are_served() {
    let chroma = Chroma::start();
    let daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[("CHROMA_SYNCD_ALLOWED_HOSTS", "syncd.internal, 10.1.2.3")],
    );
    for host in ["syncd.internal", "10.1.2.3"] {
        let (status, body) = send(
            &daemon,
            Method::GET,
            "/api/v1/sources",
            None,
            &[("host", format!("{host}:{}", daemon.port))],
        );
        assert_eq!(status, 200, "{host}: {body}");
    }
    let (status, _) = send(
        &daemon,
        Method::GET,
        "/api/v1/sources",
        None,
        &[("host", "other.internal".to_string())],
    );
    assert_eq!(status, 403);
}
