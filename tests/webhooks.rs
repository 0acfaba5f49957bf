//! Webhooks and audit fields, end to end: a team names a receiver on its
//! source; when an invocation finishes, the daemon POSTs the Job JSON,
//! signed, and keeps retrying a receiver that fails until it accepts. The
//! operator sees every attempt's status code. Invocations record which
//! named token created and cancelled them.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use hmac::{KeyInit, Mac};
use reqwest::Method;
use serde_json::{Value, json};

const SECRET: &str = "whsec-test-0123456789";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    event: String,
    delivery: String,
    signature: String,
    /// The Standard Webhooks headers.
    webhook_id: String,
    webhook_timestamp: String,
    webhook_signature: String,
    body: Bytes,
}

#[derive(Default)]
struct ReceiverState {
    /// Statuses to answer, in order; 200 once empty.
    answers: Mutex<VecDeque<u16>>,
    received: Mutex<Vec<Received>>,
}

/// A webhook receiver on loopback that answers the statuses it is told to.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    state.received.lock().unwrap().push(Received {
        event: header("x-chroma-syncd-event"),
        delivery: header("x-chroma-syncd-delivery"),
        signature: header("x-chroma-syncd-signature"),
        webhook_id: header("webhook-id"),
        webhook_timestamp: header("webhook-timestamp"),
        webhook_signature: header("webhook-signature"),
        body,
    });
    let status = state.answers.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    fn start(answers: &[u16]) -> Receiver {
        let state = Arc::new(ReceiverState::default());
        state.answers.lock().unwrap().extend(answers);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(Arc::clone(&state));
        let task = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, state, task }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A daemon with webhooks on (a signing key), quick retries, the receiver's
/// origin allowlisted, two named tokens, one unnamed, and `root` readable.
fn daemon(chroma: &Chroma, receiver: &Receiver, root: &Path) -> Daemon {
    let config = format!(
        "{TEST_CONFIG}
[webhooks]
retry_base_seconds = 0.3
max_retry_interval_seconds = 1.0
retry_for_seconds = 120
[[api.tokens]]
sha256 = \"{}\"
name = \"team-search\"
[[api.tokens]]
sha256 = \"{}\"
name = \"oncall-bot\"
",
        sha256_hex("token-search"),
        sha256_hex("token-oncall")
    );
    Daemon::start_with(
        &chroma.url(),
        &config,
        &[
            ("CHROMA_SYNCD_API_TOKENS", "token-unnamed"),
            ("CHROMA_SYNCD_WEBHOOK_SECRET", SECRET),
            ("CHROMA_SYNCD_WEBHOOK_ALLOWED_ORIGINS", &receiver.url),
            (
                "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
                root.to_str().unwrap(),
            ),
        ],
    )
}

fn folder_source(root: &Path, webhook: Value) -> Value {
    json!({
        "database_name": "testdb",
        "filesystem": {"root": root.to_str().unwrap(), "collection_name": "runbooks"},
        "webhook": webhook,
    })
}

fn deliveries(daemon: &Daemon, source: &str) -> Vec<Value> {
    let (status, body) = daemon.request(
        Method::GET,
        &format!("/api/v1/sources/{source}/webhook/deliveries"),
        None,
    );
    assert_eq!(status, 200, "{body}");
    body["deliveries"].as_array().unwrap().clone()
}

#[test]
fn a_finished_invocation_is_delivered_signed_to_a_receiver_that_fails_twice_first() {
    let chroma = Chroma::start();
    let receiver = Receiver::start(&[500, 503]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("disk.md"),
        "# Disk full\n\nFree space first.\n",
    )
    .unwrap();
    let daemon = daemon(&chroma, &receiver, dir.path());
    let hook = format!("{}/hook", receiver.url);
    let source = daemon.create_source(folder_source(dir.path(), json!({"url": hook})));

    let (status, got) = daemon.request(Method::GET, &format!("/api/v1/sources/{source}"), None);
    assert_eq!(status, 200);
    assert_eq!(got["webhook"]["url"], hook.as_str());
    // The source's own secret (rotated here to learn it): every attempt
    // also carries the Standard Webhooks headers.
    let (status, rotated) = daemon.request(
        Method::POST,
        &format!("/api/v1/sources/{source}/webhook/rotate-secret"),
        None,
    );
    assert_eq!(status, 200, "{rotated}");
    let source_secret = rotated["secret"].as_str().unwrap().to_string();

    let job = daemon.invoke(&source, json!({}));
    daemon.wait_complete(&job);

    // Two failures, then the receiver accepts: three attempts of one delivery.
    let received = wait_until("three delivery attempts", Duration::from_secs(60), || {
        let received = receiver.received();
        (received.len() >= 3).then_some(received)
    });
    let delivered = wait_until(
        "the delivery to be recorded",
        Duration::from_secs(30),
        || {
            let list = deliveries(&daemon, &source);
            (list.len() == 1 && list[0]["state"] == "delivered").then(|| list[0].clone())
        },
    );
    assert_eq!(received.len(), 3, "no attempt after the receiver accepted");
    assert_eq!(
        verified_by_standardwebhooks(&source_secret, &received),
        vec![true; 3]
    );
    assert!(
        received
            .iter()
            .all(|r| r.webhook_id == received[0].delivery)
    );
    for attempt in &received {
        assert_eq!(attempt.event, "complete");
        assert_eq!(attempt.delivery, received[0].delivery, "one delivery id");
        assert_eq!(
            attempt.signature,
            sign(&attempt.body),
            "signed with the key"
        );
        let body: Value = serde_json::from_slice(&attempt.body).unwrap();
        assert_eq!(body["id"], job.as_str());
        assert!(body["status"]["complete"].is_object(), "{body}");
        assert_eq!(body["metadata"]["collection_name"], "runbooks");
    }
    assert_eq!(delivered["id"], received[0].delivery.as_str());
    assert_eq!(delivered["invocation_id"], job.as_str());
    assert_eq!(delivered["attempts"], 3);
    assert_eq!(delivered["last_status"], 200);
    let statuses: Vec<Value> = delivered["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(500), json!(503), json!(200)]);
    assert!(!daemon.log().contains(SECRET), "the signing key was logged");
}

#[test]
fn events_filter_deliveries_and_tokens_are_recorded_by_name() {
    let chroma = Chroma::start();
    let receiver = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.md"), "# A\n\nText.\n").unwrap();
    let daemon = daemon(&chroma, &receiver, dir.path());
    let hook = format!("{}/hook", receiver.url);
    let source = daemon.create_source(folder_source(
        dir.path(),
        json!({"url": hook, "events": ["cancelled"]}),
    ));

    // Created by a named token: `created_by` is its name, never the token.
    let (status, created) = daemon.request_with_token(
        Method::POST,
        &format!("/api/v1/sources/{source}/invocations"),
        Some(json!({})),
        Some("token-search"),
    );
    assert_eq!(status, 201, "{created}");
    let completed = created["invocation_id"].as_str().unwrap().to_string();
    let job = daemon.wait_complete(&completed);
    assert_eq!(job["created_by"], "team-search");
    assert!(job.get("cancel_requested_by").is_none(), "{job}");
    assert!(!job.to_string().contains("token-search"));

    // With Chroma down an invocation cannot complete (it retries): an
    // unnamed token creates it (no name recorded), a named one cancels it.
    let mut chroma = chroma;
    chroma.stop();
    let (status, created) = daemon.request_with_token(
        Method::POST,
        &format!("/api/v1/sources/{source}/invocations"),
        Some(json!({})),
        Some("token-unnamed"),
    );
    assert_eq!(status, 201, "{created}");
    let cancelled = created["invocation_id"].as_str().unwrap().to_string();
    let (status, body) = daemon.request_with_token(
        Method::PUT,
        &format!("/api/v1/invocations/{cancelled}"),
        None,
        Some("token-oncall"),
    );
    assert_eq!(status, 202, "{body}");
    let job = daemon.wait_finished(&cancelled, Duration::from_secs(60));
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job.get("created_by").is_none(), "{job}");
    assert_eq!(job["cancel_requested_by"], "oncall-bot");
    // Only the `cancelled` event is wanted: exactly one delivery, of it.
    let list = wait_until("the cancelled delivery", Duration::from_secs(30), || {
        let list = deliveries(&daemon, &source);
        (!list.is_empty() && list[0]["state"] == "delivered").then_some(list)
    });
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["event"], "cancelled");
    assert_eq!(list[0]["invocation_id"], cancelled.as_str());
    let body: Value = serde_json::from_slice(&receiver.received()[0].body).unwrap();
    assert_eq!(body["cancel_requested_by"], "oncall-bot");
    // The completed invocation was not wanted: never delivered.
    assert!(
        receiver.received().iter().all(|r| r.event == "cancelled"),
        "a complete event was delivered although only cancelled was asked for"
    );
}

#[test]
fn webhook_urls_pass_the_outbound_rules() {
    let chroma = Chroma::start();
    let receiver = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let daemon = daemon(&chroma, &receiver, dir.path());
    let refused = |webhook: Value, expected: &str| {
        let (status, body) = daemon.request(
            Method::POST,
            "/api/v1/sources",
            Some(folder_source(dir.path(), webhook)),
        );
        assert_eq!(status, 400, "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{expected}: {message}");
    };
    // Loopback and metadata addresses not on the allowlist.
    refused(json!({"url": "http://127.0.0.1:9/hook"}), "loopback");
    refused(
        json!({"url": "http://169.254.169.254/latest"}),
        "cloud metadata",
    );
    refused(json!({"url": "http://localhost:9/hook"}), "loopback");
    refused(json!({"url": "ftp://example.com/"}), "http");
    refused(json!({"url": "https://u:p@example.com/"}), "password");
    refused(
        json!({"url": format!("{}/hook", receiver.url), "events": []}),
        "events",
    );
    refused(
        json!({"url": "https://example.com/", "events": ["done"]}),
        "",
    );
    // Nothing was stored.
    let (_, list) = daemon.request(Method::GET, "/api/v1/sources", None);
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
}

/// Which of `received` the Standard Webhooks reference verifier (PyPI
/// `standardwebhooks`, in the test venv) accepts with `secret`: one bool
/// per delivery, in order.
fn verified_by_standardwebhooks(secret: &str, received: &[Received]) -> Vec<bool> {
    let messages: Vec<Value> = received
        .iter()
        .map(|r| {
            json!({
                "body": String::from_utf8(r.body.to_vec()).unwrap(),
                "headers": {
                    "webhook-id": r.webhook_id,
                    "webhook-timestamp": r.webhook_timestamp,
                    "webhook-signature": r.webhook_signature,
                },
            })
        })
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
secret, messages = sys.argv[1], json.load(sys.stdin)
results = []
for m in messages:
    try:
        Webhook(secret).verify(m["body"].encode(), m["headers"])
        results.append(True)
    except WebhookVerificationError:
        results.append(False)
print(json.dumps(results))
"#;
    let mut child = std::process::Command::new(venv().join("bin/python"))
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        Value::Array(messages).to_string().as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Issue 31: each source signs its deliveries with a secret of its own, the
/// Standard Webhooks way. No daemon-wide key is needed; the secret is shown
/// once (at creation, or rotation) and never in reads; a receiver verifies
/// with the reference library, and another source's secret does not verify.
#[test]
fn without_a_daemon_key_deliveries_are_signed_per_source_the_standard_way() {
    let chroma = Chroma::start();
    let receiver = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.md"), "# Alpha\n\nFirst page.\n").unwrap();
    let daemon = Daemon::start_with(
        &chroma.url(),
        TEST_CONFIG,
        &[
            ("CHROMA_SYNCD_WEBHOOK_ALLOWED_ORIGINS", &receiver.url),
            (
                "CHROMA_SYNCD_FILESYSTEM_ALLOWED_ROOTS",
                dir.path().to_str().unwrap(),
            ),
        ],
    );
    let hook = json!({"url": format!("{}/hook", receiver.url)});
    let create = |body: Value| {
        let (status, created) = daemon.request(Method::POST, "/api/v1/sources", Some(body));
        assert_eq!(status, 201, "{created}");
        created
    };
    let created = create(folder_source(dir.path(), hook.clone()));
    let source = created["source_id"].as_str().unwrap().to_string();
    let secret = created["webhook"]["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{created}");
    // Another team's source, with a secret of its own.
    let mut other_body = folder_source(dir.path(), hook);
    other_body["filesystem"]["collection_name"] = json!("other");
    let other = create(other_body);
    let other_secret = other["webhook"]["secret"].as_str().unwrap().to_string();
    assert_ne!(secret, other_secret);
    // A source without a webhook has no secret to show.
    let plain = create(folder_source(dir.path(), Value::Null));
    assert!(plain.get("webhook").is_none(), "{plain}");
    // Never shown again: not in the source, not in the list.
    for path in [
        format!("/api/v1/sources/{source}"),
        "/api/v1/sources".into(),
    ] {
        let (status, body) = daemon.request(Method::GET, &path, None);
        assert_eq!(status, 200);
        assert!(
            !body.to_string().contains(&secret),
            "{path} shows the secret"
        );
    }

    let job = daemon.invoke(&source, json!({}));
    daemon.wait_complete(&job);
    let first = wait_until("a delivery", Duration::from_secs(60), || {
        receiver.received().first().cloned()
    });
    assert_eq!(
        first.webhook_id, first.delivery,
        "webhook-id is the delivery id"
    );
    assert!(first.webhook_signature.starts_with("v1,"), "{first:?}");
    assert!(
        first.signature.is_empty(),
        "no daemon key, no legacy signature"
    );
    assert_eq!(
        verified_by_standardwebhooks(&secret, std::slice::from_ref(&first)),
        vec![true]
    );
    assert_eq!(
        verified_by_standardwebhooks(&other_secret, std::slice::from_ref(&first)),
        vec![false],
        "another source's secret verifies this source's delivery"
    );

    // Rotation: a new secret, returned once; the next delivery is signed
    // with it, and the old one no longer verifies.
    let (status, rotated) = daemon.request(
        Method::POST,
        &format!("/api/v1/sources/{source}/webhook/rotate-secret"),
        None,
    );
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    let (status, body) = daemon.request(
        Method::POST,
        &format!(
            "/api/v1/sources/{}/webhook/rotate-secret",
            plain["source_id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(status, 400, "{body}");
    std::fs::write(dir.path().join("b.md"), "# Beta\n\nSecond page.\n").unwrap();
    let job = daemon.invoke(&source, json!({}));
    daemon.wait_complete(&job);
    let second = wait_until("a second delivery", Duration::from_secs(60), || {
        receiver.received().get(1).cloned()
    });
    assert_eq!(
        verified_by_standardwebhooks(&new_secret, std::slice::from_ref(&second)),
        vec![true]
    );
    assert_eq!(
        verified_by_standardwebhooks(&secret, &[second]),
        vec![false]
    );
    assert!(
        !daemon.log().contains(&secret),
        "a webhook secret was logged"
    );
}
