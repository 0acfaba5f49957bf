//! An OpenAI-compatible `/v1/embeddings` server on loopback, in the test
//! process: it serves the vectors of a real model (all-MiniLM-L6-v2,
//! computed in-process) or a deterministic function of the text, checks the
//! Bearer key, records what it was asked, and can be told to answer 429
//! (with `Retry-After`) or 500 first.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::post};
use chroma_syncd::embed::{Embedder, MiniLm};
use serde_json::{Value, json};

use super::runtime;

/// What the server answers before it serves vectors again.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// 429 with `Retry-After: 0`.
    Busy,
    /// 500.
    Broken,
    /// 429 with this `Retry-After` value (hostile ones included).
    BusyFor(&'static str),
}

impl Fault {
    /// What the server answers for this fault.
    pub fn response(self) -> Response {
        let busy = |after: &'static str| {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", after)],
                Json(json!({"error": {"message": "slow down"}})),
            )
                .into_response()
        };
        match self {
            Fault::Busy => busy("0"),
            Fault::BusyFor(after) => busy(after),
            Fault::Broken => {
                (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded").into_response()
            }
        }
    }
}

/// The first of the faults a server was told to answer, taken.
pub fn next_fault(faults: &Mutex<Vec<Fault>>) -> Option<Fault> {
    let mut faults = faults.lock().unwrap();
    (!faults.is_empty()).then(|| faults.remove(0))
}

/// A loopback listener for a server in the test process, and its base
/// URL up to `/v1`.
pub fn loopback_v1() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    (listener, url)
}

/// Serves `app` on `listener` from the tests' runtime.
pub fn serve(listener: std::net::TcpListener, app: Router) {
    runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
}

/// How the server computes vectors.
pub enum Vectors {
    /// 8 numbers from the text's bytes.
    Hashed,
    /// all-MiniLM-L6-v2's.
    Model(Box<MiniLm>),
}

impl Vectors {
    pub fn of(&self, texts: &[String]) -> Vec<Vec<f32>> {
        match self {
            Vectors::Hashed => texts.iter().map(|t| hashed(t)).collect(),
            Vectors::Model(model) => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                model.embed(&texts).expect("the test model embeds")
            }
        }
    }
}

/// The `Hashed` vector of a text.
pub fn hashed(text: &str) -> Vec<f32> {
    (0..8u32)
        .map(|i| {
            let sum: u32 = text.bytes().map(|b| u32::from(b) * (i + 1)).sum();
            (sum % 97) as f32 / 97.0
        })
        .collect()
}

/// One request the server got.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When the request arrived.
    pub arrived: std::time::Instant,
    pub authorization: String,
    pub model: String,
    pub inputs: Vec<String>,
}

pub struct EmbeddingServer {
    pub url: String,
    pub key: String,
    pub vectors: Vectors,
    pub faults: Mutex<Vec<Fault>>,
    pub seen: Mutex<Vec<Seen>>,
    /// A GPU-like endpoint: each request takes this long (waiting, not
    /// computing), at most `capacity` at once.
    pub latency: Option<(Duration, tokio::sync::Semaphore)>,
    /// When each answer with vectors was sent.
    pub answered: Mutex<Vec<std::time::Instant>>,
}

impl EmbeddingServer {
    /// Starts a server that accepts `key` and serves `vectors`; its base
    /// URL (up to `/v1`) is `url`.
    pub fn start(key: &str, vectors: Vectors) -> Arc<EmbeddingServer> {
        Self::start_with(key, vectors, None)
    }

    /// A server whose every request takes `latency` (a sleep, not CPU) with
    /// at most `capacity` served at once: a remote GPU's behaviour, whose
    /// throughput does not depend on this machine's CPUs.
    pub fn start_with(
        key: &str,
        vectors: Vectors,
        latency: Option<(Duration, usize)>,
    ) -> Arc<EmbeddingServer> {
        let (listener, url) = loopback_v1();
        let server = Arc::new(EmbeddingServer {
            url,
            key: key.to_string(),
            vectors,
            faults: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
            answered: Mutex::new(Vec::new()),
            latency: latency
                .map(|(latency, capacity)| (latency, tokio::sync::Semaphore::new(capacity))),
        });
        let app = Router::new()
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&server));
        serve(listener, app);
        server
    }

    pub fn fail_next(&self, faults: &[Fault]) {
        self.faults.lock().unwrap().extend_from_slice(faults);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Every input it was asked to embed, in order.
    pub fn inputs(&self) -> Vec<String> {
        self.seen().into_iter().flat_map(|s| s.inputs).collect()
    }
}

async fn embeddings(
    State(server): State<Arc<EmbeddingServer>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // A string or a list of strings, as the API allows.
    let inputs: Vec<String> = match &body["input"] {
        Value::String(text) => vec![text.clone()],
        other => serde_json::from_value(other.clone()).unwrap_or_default(),
    };
    server.seen.lock().unwrap().push(Seen {
        arrived: std::time::Instant::now(),
        authorization: authorization.clone(),
        model: body["model"].as_str().unwrap_or_default().to_string(),
        inputs: inputs.clone(),
    });
    if authorization != format!("Bearer {}", server.key) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "invalid API key", "type": "auth"}})),
        )
            .into_response();
    }
    if let Some(fault) = next_fault(&server.faults) {
        return fault.response();
    }
    let _slot = match &server.latency {
        Some((latency, capacity)) => {
            let slot = capacity.acquire().await.expect("never closed");
            tokio::time::sleep(*latency).await;
            Some(slot)
        }
        None => None,
    };
    let computing = Arc::clone(&server);
    let vectors = tokio::task::spawn_blocking(move || computing.vectors.of(&inputs))
        .await
        .unwrap();
    // Answered out of order, with indices, as servers may; as floats or,
    // when asked, base64 little-endian f32 (the Python client asks).
    let base64 = body["encoding_format"] == "base64";
    let mut data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                use base64::Engine;
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::from(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"index": index, "embedding": embedding, "object": "embedding"})
        })
        .collect();
    data.reverse();
    server
        .answered
        .lock()
        .unwrap()
        .push(std::time::Instant::now());
    Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
}
