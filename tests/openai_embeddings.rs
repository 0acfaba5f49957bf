//! User story: an operator points the daemon at an OpenAI-compatible
//! embedding server (vLLM, TEI, Ollama). The vectors stored are the
//! server's, in order however the inputs were batched; the API key reaches
//! the server and no error; a busy server (429 + Retry-After, 5xx) is
//! waited for; a refusal (401) fails at once, saying what the server said.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::post};
use chroma_syncd::config::Secret;
use chroma_syncd::embed::openai::{OpenAiEmbedder, OpenAiSettings, RemoteError};
use common::*;
use serde_json::{Value, json};

const KEY: &str = "sk-test-key-that-must-not-leak-42";

/// What the test server answers before it serves vectors again.
#[derive(Clone, Copy)]
enum Fault {
    Busy,
    Broken,
}

#[derive(Default)]
struct Server {
    faults: Mutex<Vec<Fault>>,
    /// Every request: its Authorization header and how many inputs.
    seen: Mutex<Vec<(String, usize)>>,
}

/// The server's vector for a text: a deterministic function of its bytes.
fn vector_of(text: &str) -> Vec<f32> {
    (0..8u32)
        .map(|i| {
            let sum: u32 = text.bytes().map(|b| u32::from(b) * (i + 1)).sum();
            (sum % 97) as f32 / 97.0
        })
        .collect()
}

async fn embeddings(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let inputs: Vec<String> = serde_json::from_value(body["input"].clone()).unwrap_or_default();
    server
        .seen
        .lock()
        .unwrap()
        .push((auth.clone(), inputs.len()));
    if auth != format!("Bearer {KEY}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "invalid API key", "type": "auth"}})),
        )
            .into_response();
    }
    let fault = {
        let mut faults = server.faults.lock().unwrap();
        (!faults.is_empty()).then(|| faults.remove(0))
    };
    match fault {
        Some(Fault::Busy) => {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
                Json(json!({"error": {"message": "slow down"}})),
            )
                .into_response();
        }
        Some(Fault::Broken) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response();
        }
        None => {}
    }
    // Answered out of order, with indices, as servers may.
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"index": index, "embedding": vector_of(text), "object": "embedding"}))
        .collect();
    data.reverse();
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}

fn start_server() -> (String, Arc<Server>) {
    let server = Arc::new(Server::default());
    let app = Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(Arc::clone(&server));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    (url, server)
}

fn embedder(url: &str, key: &str) -> OpenAiEmbedder {
    let mut settings = OpenAiSettings::new("Qwen/Qwen3-Embedding-0.6B", url);
    settings.api_key = Some(Secret::new(key));
    settings.max_batch = 7;
    settings.max_concurrency = 3;
    settings.max_retries = 3;
    settings.backoff = Duration::from_millis(10);
    OpenAiEmbedder::new(settings).unwrap()
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("chunk number {i} of the corpus"))
        .collect()
}

#[test]
fn vectors_are_the_servers_in_order_and_the_key_is_sent() {
    let (url, server) = start_server();
    let texts = texts(30);
    let vectors = runtime()
        .block_on(embedder(&url, KEY).embed(&texts))
        .unwrap();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| vector_of(t)).collect();
    assert_eq!(vectors, expected);
    let seen = server.seen.lock().unwrap();
    assert_eq!(seen.len(), 5, "30 inputs in batches of 7");
    assert!(
        seen.iter()
            .all(|(auth, n)| auth == &format!("Bearer {KEY}") && *n <= 7)
    );
}

#[test]
fn a_busy_or_broken_server_is_waited_for() {
    let (url, server) = start_server();
    *server.faults.lock().unwrap() = vec![Fault::Busy, Fault::Broken];
    let texts = texts(5);
    let vectors = runtime()
        .block_on(embedder(&url, KEY).embed(&texts))
        .unwrap();
    assert_eq!(vectors.len(), 5);
    assert_eq!(
        server.seen.lock().unwrap().len(),
        3,
        "two retries, then vectors"
    );

    // A server that stays broken: the error is transient, after the retries.
    *server.faults.lock().unwrap() = vec![Fault::Broken; 10];
    let error = runtime()
        .block_on(embedder(&url, KEY).embed(&texts))
        .unwrap_err();
    assert!(
        matches!(error, RemoteError::Transient { attempts: 4, .. }),
        "{error:?}"
    );
}

#[test]
fn a_refused_key_fails_at_once_with_the_servers_words_and_not_the_key() {
    let (url, server) = start_server();
    let wrong = "sk-wrong-key-also-secret-7";
    let error = runtime()
        .block_on(embedder(&url, wrong).embed(&texts(3)))
        .unwrap_err();
    assert_eq!(
        error,
        RemoteError::Permanent {
            model: "Qwen/Qwen3-Embedding-0.6B".into(),
            status: 401,
            message: "invalid API key".into(),
        }
    );
    assert_eq!(server.seen.lock().unwrap().len(), 1, "not retried");
    let said = format!("{error} {error:?}");
    assert!(!said.contains(wrong) && !said.contains(KEY), "{said}");
}
