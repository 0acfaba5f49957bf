//! Descriptions of pictures from an OpenAI-compatible chat-completions
//! model (`[extract.vision]`): vLLM, Ollama, OpenAI itself.
//!
//! One request per picture: the operator's prompt and the picture as a
//! base64 PNG data URL in one user message; the answer is
//! `choices[0].message.content`. Requests from every job share one client,
//! whose `max_concurrency` bounds them; a 429 or 5xx, a timeout or a
//! dropped connection is retried with doubling backoff, honouring a capped
//! `Retry-After`; other 4xx are permanent and the error says what the
//! endpoint said. The API key is a Bearer token and never appears in an
//! error or a log. The endpoint is hostile like any peer: its answer is
//! read up to a bound, its description cut to a bound, and redirects are
//! not followed (the key stays with the configured origin).
//!
//! Only the daemon talks to it: converter children cannot open sockets,
//! so they hand the pictures back ([`crate::extract::figures`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::config::{Secret, VisionConfig};
use crate::embed::openai::{Attempt, Backoff, Request};

/// Largest answer read: a description is a paragraph or two.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Longest description kept, in characters; a model that rambles on is
/// cut here.
pub const MAX_DESCRIPTION_CHARS: usize = 2000;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VisionError {
    /// Still failing after the retries (the endpoint down or overloaded).
    #[error("the vision model {model}: {message} (gave up after {attempts} attempts)")]
    Transient {
        model: String,
        message: String,
        attempts: u32,
    },
    /// The endpoint refused the request (a refused key: 401/403).
    #[error("the vision model {model}: the endpoint answered {status}: {message}")]
    Permanent {
        model: String,
        status: u16,
        message: String,
    },
    #[error("the vision model {model}: {message}")]
    Invalid { model: String, message: String },
}

/// How the client talks to the endpoint.
#[derive(Debug, Clone)]
pub struct VisionSettings {
    /// `…/chat/completions`.
    pub endpoint: String,
    pub api_model: String,
    pub api_key: Option<Secret>,
    pub prompt: String,
    pub max_concurrency: usize,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Longest `Retry-After` honoured (longer ones wait this long).
    pub max_retry_after: Duration,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
}

impl VisionSettings {
    /// From `[extract.vision]`; the key read from its variable.
    pub fn from_config(config: &VisionConfig) -> Result<Self, String> {
        Ok(VisionSettings {
            endpoint: chat_completions_url(&config.url),
            api_model: config.api_model.clone(),
            api_key: config.resolve_key().map_err(|e| e.to_string())?,
            prompt: config.prompt.clone(),
            max_concurrency: config.max_concurrency.max(1),
            timeout: Duration::try_from_secs_f64(config.timeout_seconds)
                .unwrap_or(Duration::from_secs(60)),
            max_retries: config.max_retries,
            max_retry_after: Duration::from_secs(60),
            backoff: Duration::from_millis(500),
        })
    }
}

/// `{url}/chat/completions` for a base URL up to `/v1` (as embedding
/// endpoints are configured), or the URL itself when it names the route.
pub fn chat_completions_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/chat/completions") {
        url.to_string()
    } else {
        format!("{url}/chat/completions")
    }
}

/// The vision model's client, shared by every job.
pub struct VisionClient {
    settings: VisionSettings,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

impl std::fmt::Debug for VisionClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisionClient")
            .field("endpoint", &self.settings.endpoint)
            .field("api_model", &self.settings.api_model)
            .finish_non_exhaustive()
    }
}

impl VisionClient {
    pub fn new(settings: VisionSettings) -> Result<Self, VisionError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| VisionError::Invalid {
                model: settings.api_model.clone(),
                message: format!("building the HTTP client: {e}"),
            })?;
        let slots = Arc::new(Semaphore::new(settings.max_concurrency.max(1)));
        Ok(VisionClient {
            settings,
            http,
            slots,
        })
    }

    /// What the model says `png` (base64) shows, on one line, at most
    /// [`MAX_DESCRIPTION_CHARS`] long.
    pub async fn describe(&self, png_base64: &str) -> Result<String, VisionError> {
        let body = json!({
            "model": self.settings.api_model,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": self.settings.prompt},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png_base64}")}},
                ],
            }],
        });
        let mut attempts = 0;
        let mut backoff = Backoff::new(self.settings.backoff, self.settings.max_retry_after);
        loop {
            attempts += 1;
            let attempt = {
                let _slot = self.slots.acquire().await.expect("never closed");
                self.attempt(&body).await
            };
            match attempt {
                Attempt::Done(text) => return Ok(text),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { message, after } => {
                    if attempts > self.settings.max_retries {
                        return Err(VisionError::Transient {
                            model: self.settings.api_model.clone(),
                            message,
                            attempts,
                        });
                    }
                    let wait = backoff.wait(after);
                    tracing::warn!(model = %self.settings.api_model, %message, wait_ms = wait.as_millis() as u64, "vision request retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, body: &Value) -> Attempt<String, VisionError> {
        let model = &self.settings.api_model;
        let request = Request {
            http: &self.http,
            url: &self.settings.endpoint,
            key: self.settings.api_key.as_ref(),
            max_retry_after: self.settings.max_retry_after,
            cap: MAX_ANSWER_BYTES,
        };
        request
            .attempt(
                body,
                |text| {
                    description(text).ok_or_else(|| VisionError::Invalid {
                        model: model.clone(),
                        message: "the answer has no choices[0].message.content text".into(),
                    })
                },
                |status, message| VisionError::Permanent {
                    model: model.clone(),
                    status,
                    message,
                },
            )
            .await
    }
}

/// `choices[0].message.content` of a chat-completions answer (a string,
/// or a list of text parts), whitespace squeezed to one line and cut to
/// [`MAX_DESCRIPTION_CHARS`]; `None` when there is no text.
fn description(answer: &str) -> Option<String> {
    let value: Value = serde_json::from_str(answer).ok()?;
    let content = &value["choices"][0]["message"]["content"];
    let text = match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => return None,
    };
    let text: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_is_added_to_a_base_url_only() {
        assert_eq!(
            chat_completions_url("http://gpu:8000/v1/"),
            "http://gpu:8000/v1/chat/completions"
        );
        assert_eq!(
            chat_completions_url("http://gpu:8000/v1/chat/completions"),
            "http://gpu:8000/v1/chat/completions"
        );
    }

    #[test]
    fn descriptions_are_one_bounded_line() {
        let answer = json!({"choices": [{"message": {"content": "A  red\n\nlighthouse."}}]});
        assert_eq!(
            description(&answer.to_string()).as_deref(),
            Some("A red lighthouse.")
        );
        let parts =
            json!({"choices": [{"message": {"content": [{"type": "text", "text": "a gull"}]}}]});
        assert_eq!(description(&parts.to_string()).as_deref(), Some("a gull"));
        let long = json!({"choices": [{"message": {"content": "x".repeat(10_000)}}]});
        assert_eq!(
            description(&long.to_string()).unwrap().len(),
            MAX_DESCRIPTION_CHARS
        );
        assert_eq!(description(r#"{"choices": []}"#), None);
        assert_eq!(description("not json"), None);
    }
}
