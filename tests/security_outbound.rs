//! An API user cannot point the daemon's S3 or SQS clients at an internal
//! service (SSRF): endpoints outside `[s3] allowed_endpoints` must reach
//! public addresses only, checked when the source is created and again on
//! every connection. Operators allowlist their own S3-compatible servers.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Chroma, Daemon, S3, s3_source};
use reqwest::Method;
use serde_json::{Value, json};

/// An internal HTTP service on loopback (an admin console, a metadata
/// endpoint) that counts every connection made to it.
struct InternalService {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl InternalService {
    fn start() -> InternalService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&connections);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer);
                let body = "<secret>internal admin data</secret>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        InternalService { port, connections }
    }

    fn origin(&self, host: &str) -> String {
        format!("http://{host}:{}", self.port)
    }

    fn reached(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn sources(daemon: &Daemon) -> Vec<Value> {
    let (status, list) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().clone()
}

/// A 400 `{error, message}` whose message names `address`; the message.
fn assert_refused(daemon: &Daemon, source: Value, address: &str) -> String {
    let (status, body) = daemon.request(Method::POST, "/api/v1/sources", Some(source));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let message = body["message"].as_str().unwrap().to_string();
    assert!(message.contains(address), "{message}");
    assert!(
        message.contains("allowed_endpoints"),
        "says what to change: {message}"
    );
    message
}

#[test]
fn an_internal_service_named_as_an_s3_or_sqs_endpoint_is_refused_and_never_reached() {
    let internal = InternalService::start();
    let s3 = S3::start();
    let daemon = Daemon::start_with(
        "http://127.0.0.1:9",
        common::TEST_CONFIG,
        &[("CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS", &s3.endpoint())],
    );

    // An S3 "endpoint" that is really an internal service on loopback.
    let mut source = s3_source(&s3, "bucket", "stolen", None);
    source["s3"]["endpoint_url"] = json!(internal.origin("127.0.0.1"));
    let message = assert_refused(&daemon, source.clone(), "127.0.0.1");
    assert!(message.contains("loopback"), "{message}");

    // The cloud metadata address, by literal.
    source["s3"]["endpoint_url"] = json!("http://169.254.169.254");
    let message = assert_refused(&daemon, source.clone(), "169.254.169.254");
    assert!(message.contains("metadata"), "{message}");

    // A host name whose DNS answer is loopback.
    source["s3"]["endpoint_url"] = json!(internal.origin("localhost"));
    let message = assert_refused(&daemon, source.clone(), "localhost");
    assert!(message.contains("loopback"), "{message}");
    // What an internal name resolves to is not the caller's business.
    assert!(
        !message.contains("127.0.0.1") && !message.contains("::1"),
        "{message}"
    );

    // An AWS bucket whose event queue "lives" on the internal service.
    let mut source = s3_source(&s3, "bucket", "stolen", None);
    source["s3"].as_object_mut().unwrap().remove("endpoint_url");
    source["s3"]["auto_sync"] = json!("direct");
    source["s3"]["sqs_queue_url"] = json!(format!(
        "{}/123456789012/events",
        internal.origin("127.0.0.1")
    ));
    assert_refused(&daemon, source, "127.0.0.1");

    assert!(sources(&daemon).is_empty(), "nothing was stored");
    assert_eq!(internal.reached(), 0, "the internal service was contacted");
}

#[test]
fn an_endpoint_that_stopped_being_allowed_fails_at_connection_time() {
    let internal = InternalService::start();
    let chroma = Chroma::start();
    let s3 = S3::start();
    // The operator once trusted the service (by address and by name)...
    let allowed = format!(
        "{},{},{}",
        s3.endpoint(),
        internal.origin("127.0.0.1"),
        internal.origin("localhost")
    );
    let mut daemon = Daemon::start_with(
        &chroma.url(),
        common::TEST_CONFIG,
        &[("CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS", &allowed)],
    );
    let mut by_address = s3_source(&s3, "bucket", "by-address", None);
    by_address["s3"]["endpoint_url"] = json!(internal.origin("127.0.0.1"));
    let by_address = daemon.create_source(by_address);
    // A name is resolved on every connection: when its answer becomes
    // private after the source was created, the connection is refused.
    let mut by_name = s3_source(&s3, "bucket", "by-name", None);
    by_name["s3"]["endpoint_url"] = json!(internal.origin("localhost"));
    let by_name = daemon.create_source(by_name);

    // ...then took it off the list.
    daemon.extra_env = vec![(
        "CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS".to_string(),
        s3.endpoint(),
    )];
    daemon.terminate();
    daemon.restart();

    for (source, address) in [(&by_address, "127.0.0.1"), (&by_name, "localhost")] {
        let job = daemon.invoke(source, json!({"object_key": "admin.md"}));
        let (_, error) = daemon.wait_failed(&job, Duration::from_secs(60));
        assert!(error.contains(address), "{error}");
        assert!(error.contains("loopback"), "{error}");
        if address == "localhost" {
            assert!(!error.contains("127.0.0.1"), "{error}");
        }
    }
    assert_eq!(internal.reached(), 0, "the internal service was contacted");
}

#[test]
fn an_allowlisted_s3_compatible_server_syncs_end_to_end() {
    let chroma = Chroma::start();
    let s3 = S3::start();
    s3.create_bucket("internal-docs");
    s3.put(
        "internal-docs",
        "runbook.md",
        "# Runbook\n\nRestart the service with systemctl.\n",
        None,
    );
    let daemon = Daemon::start_with(
        &chroma.url(),
        common::TEST_CONFIG,
        &[("CHROMA_SYNCD_S3_ALLOWED_ENDPOINTS", &s3.endpoint())],
    );
    let source = daemon.create_source(s3_source(&s3, "internal-docs", "runbooks", None));
    let job = daemon.invoke(&source, json!({"object_key": "runbook.md"}));
    daemon.wait_complete(&job);
    let records = chroma.records("testdb", "runbooks");
    let chunks = records.of_key("runbook.md");
    assert!(!chunks.is_empty());
    assert!(chunks.iter().any(|c| c.document.contains("systemctl")));
}
