//! An OpenAI-compatible `/v1/chat/completions` server on loopback, in the
//! test process, that describes pictures: it checks the Bearer key and the
//! request's shape (the model, the prompt, one picture as a base64 data URL
//! that decodes as an image), records what it saw, answers a description
//! holding a word nobody else writes, and can be told to answer 429 (with
//! `Retry-After`) or 500 first ([`Fault`]).

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::post};
use base64::Engine;
use serde_json::{Value, json};

use super::openai::{Fault, loopback_v1, next_fault, serve};

/// The word every description holds.
pub const DESCRIBED: &str = "quokkalighthouse";

/// One request the server got.
#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: String,
    pub model: String,
    pub prompt: String,
    /// The picture's size, when its data URL decoded as an image.
    pub picture: Option<(u32, u32)>,
    pub answered: u16,
}

pub struct VisionServer {
    /// Base URL up to `/v1`.
    pub url: String,
    pub key: String,
    pub faults: Mutex<Vec<Fault>>,
    pub seen: Mutex<Vec<Seen>>,
}

impl VisionServer {
    pub fn start(key: &str) -> Arc<VisionServer> {
        let (listener, url) = loopback_v1();
        let server = Arc::new(VisionServer {
            url,
            key: key.to_string(),
            faults: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
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
}

/// The picture in a `data:image/png;base64,…` URL, decoded: its size.
fn picture(url: &str) -> Option<(u32, u32)> {
    let data = url
        .strip_prefix("data:image/png;base64,")
        .or_else(|| url.strip_prefix("data:image/jpeg;base64,"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let image = image::load_from_memory(&bytes).ok()?;
    Some((image.width(), image.height()))
}

async fn complete(
    State(server): State<Arc<VisionServer>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let content = &body["messages"][0]["content"];
    let mut seen = Seen {
        authorization: authorization.clone(),
        model: body["model"].as_str().unwrap_or_default().to_string(),
        prompt: content[0]["text"].as_str().unwrap_or_default().to_string(),
        picture: (body["messages"][0]["role"] == "user"
            && content[0]["type"] == "text"
            && content[1]["type"] == "image_url")
            .then(|| picture(content[1]["image_url"]["url"].as_str().unwrap_or("")))
            .flatten(),
        answered: 200,
    };
    let fault = next_fault(&server.faults);
    let response = if authorization != format!("Bearer {}", server.key) {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})),
        )
            .into_response()
    } else if seen.picture.is_none() {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "no decodable picture in the message"}})),
        )
            .into_response()
    } else {
        match fault {
            Some(fault) => fault.response(),
            None => Json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": seen.model,
                "choices": [{
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": format!("A drawing of a red and white {DESCRIBED} above a dark blue sea."),
                    },
                    "finish_reason": "stop",
                }],
            }))
            .into_response(),
        }
    };
    seen.answered = response.status().as_u16();
    server.seen.lock().unwrap().push(seen);
    response
}
