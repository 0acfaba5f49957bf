//! Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint: vLLM,
//! Hugging Face TEI, Ollama, OpenAI itself — the way to a GPU fleet.
//!
//! Inputs from every job go through one queue per model; each request
//! takes up to `max_batch` of them when one of `max_concurrency` slots is
//! free (so one slow endpoint holds only its own slots); answers go back
//! to their callers in order. A
//! 429 or 5xx, a timeout or a dropped connection is retried with doubling
//! backoff, honouring `Retry-After`; 400/401/403/404/413/422 are permanent
//! and the error names the model and says what the endpoint said. The API
//! key is sent as a Bearer token and never appears in an error or a log.
//!
//! One client per configured model, shared by every job that uses it
//! ([`super::registry`]): its `max_concurrency` bounds the model's requests
//! across jobs, and a job waiting on a slow endpoint holds no CPU or other
//! model's slots.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::Secret;

/// One endpoint model, as `[embedding.models."NAME"] kind = "openai"` says.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// The name sources use (and errors say).
    pub name: String,
    /// Base URL up to `/v1`: requests go to `{url}/embeddings`.
    pub url: String,
    /// The model name the endpoint knows.
    pub api_model: String,
    pub api_key: Option<Secret>,
    /// Sent when set (models that can shorten their vectors).
    pub dimensions: Option<usize>,
    pub max_batch: usize,
    /// Tokens per request at most (counted as bytes, an upper bound), for
    /// endpoints that limit a request's total input; an input alone may
    /// still exceed it (it is then sent by itself).
    pub max_batch_tokens: Option<usize>,
    pub max_concurrency: usize,
    pub timeout: Duration,
    /// Retries of one request after transient failures.
    pub max_retries: u32,
    /// Longest `Retry-After` honoured (longer ones wait this long).
    pub max_retry_after: Duration,
    /// First backoff; doubles per retry.
    pub backoff: Duration,
}

impl OpenAiSettings {
    pub fn new(name: &str, url: &str) -> Self {
        OpenAiSettings {
            name: name.to_string(),
            url: url.trim_end_matches('/').to_string(),
            api_model: name.to_string(),
            api_key: None,
            dimensions: None,
            max_batch: 64,
            max_batch_tokens: None,
            max_concurrency: 4,
            timeout: Duration::from_secs(60),
            max_retries: 5,
            max_retry_after: Duration::from_secs(60),
            backoff: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RemoteError {
    /// Worth trying again later (the job is retried by the queue).
    #[error("embedding model {model}: {message} (gave up after {attempts} attempts)")]
    Transient {
        model: String,
        message: String,
        attempts: u32,
    },
    /// The endpoint refused the request itself: retrying cannot help.
    #[error("embedding model {model}: the endpoint answered {status}: {message}")]
    Permanent {
        model: String,
        status: u16,
        message: String,
    },
    #[error("embedding model {model}: {message}")]
    Invalid { model: String, message: String },
}

/// What happened to one attempt at a request to an OpenAI-compatible
/// endpoint that answers a `T` or fails with an `E`.
pub(crate) enum Attempt<T, E> {
    Done(T),
    Retry {
        message: String,
        after: Option<Duration>,
    },
    Fail(E),
}

/// The endpoint's HTTP side: one request (with its retries) per batch.
struct Client {
    settings: OpenAiSettings,
    http: reqwest::Client,
    slots: Arc<Semaphore>,
}

/// One input waiting for its vector.
struct Pending {
    text: String,
    reply: oneshot::Sender<Result<Vec<f32>, RemoteError>>,
}

/// The client of one endpoint model, shared by every job that uses it.
///
/// Inputs from all callers go through one queue: a dispatcher takes as
/// many as are waiting (up to `max_batch`) when a request slot is free, so
/// requests are full whenever there is work queued — a document of 40
/// chunks does not cost a GPU two half-empty batches — and an input that
/// arrives alone is sent at once, without waiting for company.
pub struct OpenAiEmbedder {
    client: Arc<Client>,
    queue: mpsc::UnboundedSender<Vec<Pending>>,
    /// Taken by the first `embed`, which starts the dispatcher on the
    /// runtime it runs on.
    receiver: std::sync::Mutex<Option<mpsc::UnboundedReceiver<Vec<Pending>>>>,
}

impl OpenAiEmbedder {
    pub fn new(settings: OpenAiSettings) -> Result<Self, RemoteError> {
        let http = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| RemoteError::Invalid {
                model: settings.name.clone(),
                message: format!("building the HTTP client: {e}"),
            })?;
        let slots = Arc::new(Semaphore::new(settings.max_concurrency.max(1)));
        let (queue, receiver) = mpsc::unbounded_channel();
        Ok(OpenAiEmbedder {
            client: Arc::new(Client {
                settings,
                http,
                slots,
            }),
            queue,
            receiver: std::sync::Mutex::new(Some(receiver)),
        })
    }

    pub fn name(&self) -> &str {
        &self.client.settings.name
    }

    /// One vector per text, in order.
    pub async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, RemoteError> {
        let receiver = self
            .receiver
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(receiver) = receiver {
            tokio::spawn(dispatch(Arc::clone(&self.client), receiver));
        }
        // All of a caller's inputs are queued at once, so the dispatcher
        // never sees (and sends) only the first few of them.
        let (inputs, replies): (Vec<Pending>, Vec<_>) = texts
            .iter()
            .map(|text| {
                let (reply, answer) = oneshot::channel();
                let pending = Pending {
                    text: text.clone(),
                    reply,
                };
                (pending, answer)
            })
            .unzip();
        if self.queue.send(inputs).is_err() {
            return Err(self
                .client
                .invalid("the embedding dispatcher stopped".into()));
        }
        let mut vectors = Vec::with_capacity(texts.len());
        for answer in replies {
            let vector = answer.await.map_err(|_| {
                self.client
                    .invalid("the embedding dispatcher stopped".into())
            })??;
            vectors.push(vector);
        }
        if let Some(first) = vectors.first() {
            let dimension = first.len();
            if vectors.iter().any(|v| v.len() != dimension) {
                return Err(self
                    .client
                    .invalid("vectors of different lengths in one answer".into()));
            }
        }
        Ok(vectors)
    }
}

/// Forms batches from the queue and sends each when a request slot is
/// free; ends when the embedder is dropped.
async fn dispatch(client: Arc<Client>, mut queue: mpsc::UnboundedReceiver<Vec<Pending>>) {
    let max_batch = client.settings.max_batch.max(1);
    // Bytes stand for tokens: no token is shorter than a byte, so a batch
    // within the budget in bytes is within it in tokens.
    let max_bytes = client.settings.max_batch_tokens.unwrap_or(usize::MAX);
    let mut waiting: VecDeque<Pending> = VecDeque::new();
    let top_up = |waiting: &mut VecDeque<Pending>, queue: &mut mpsc::UnboundedReceiver<_>| {
        while let Ok(inputs) = queue.try_recv() {
            waiting.extend(inputs);
        }
    };
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(inputs) => waiting.extend(inputs),
                None => break,
            }
        }
        top_up(&mut waiting, &mut queue);
        // Wait for a slot; what queued meanwhile joins this batch.
        let slot = Arc::clone(&client.slots)
            .acquire_owned()
            .await
            .expect("never closed");
        top_up(&mut waiting, &mut queue);
        // At least one input; then as many as fit.
        let mut batch = Vec::new();
        let mut size = 0;
        while let Some(next) = waiting.front() {
            let fits = batch.len() < max_batch && size + next.text.len() <= max_bytes;
            if !batch.is_empty() && !fits {
                break;
            }
            size += next.text.len();
            batch.extend(waiting.pop_front());
        }
        let client = Arc::clone(&client);
        tokio::spawn(async move {
            let texts: Vec<String> = batch.iter().map(|p| p.text.clone()).collect();
            // The request runs in a task of its own: a panic in it (a bug,
            // or a peer's answer we did not foresee) fails this batch with
            // an error, and the dispatcher and later batches go on.
            let request = {
                let client = Arc::clone(&client);
                tokio::spawn(async move { client.embed_batch(&texts, Some(slot)).await })
            };
            let result = match request.await {
                Ok(result) => result,
                Err(join) => {
                    tracing::error!(model = %client.settings.name, error = %join, "an embedding request panicked");
                    Err(client.invalid(
                        "the embedding request failed unexpectedly; see the daemon's log".into(),
                    ))
                }
            };
            match result {
                Ok(vectors) => {
                    for (pending, vector) in batch.into_iter().zip(vectors) {
                        let _ = pending.reply.send(Ok(vector));
                    }
                }
                Err(error) => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}

impl Client {
    /// One batch, retried as its failures allow; `slot` is the request
    /// slot the first attempt was given (retries wait for one again).
    async fn embed_batch(
        &self,
        batch: &[String],
        mut slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<Vec<Vec<f32>>, RemoteError> {
        let mut attempts = 0;
        let mut backoff = Backoff::new(self.settings.backoff, self.settings.max_retry_after);
        loop {
            attempts += 1;
            let attempt = {
                let _slot = match slot.take() {
                    Some(slot) => slot,
                    None => Arc::clone(&self.slots)
                        .acquire_owned()
                        .await
                        .expect("never closed"),
                };
                let started = std::time::Instant::now();
                let attempt = self.attempt(batch).await;
                let outcome = match &attempt {
                    Attempt::Done(_) => "ok",
                    Attempt::Retry { .. } => "retry",
                    Attempt::Fail(_) => "failed",
                };
                crate::metrics::embedding_request(
                    &self.settings.name,
                    outcome,
                    started.elapsed().as_secs_f64(),
                );
                attempt
            };
            match attempt {
                Attempt::Done(vectors) => return Ok(vectors),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { message, after } => {
                    if attempts > self.settings.max_retries {
                        return Err(RemoteError::Transient {
                            model: self.settings.name.clone(),
                            message,
                            attempts,
                        });
                    }
                    crate::metrics::request_error("embedding", "retry");
                    let wait = backoff.wait(after);
                    tracing::warn!(model = %self.settings.name, %message, wait_ms = wait.as_millis() as u64, "embedding request retried");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn attempt(&self, batch: &[String]) -> Attempt<Vec<Vec<f32>>, RemoteError> {
        let mut body = json!({
            "model": self.settings.api_model,
            "input": batch,
            "encoding_format": "float",
        });
        if let Some(dimensions) = self.settings.dimensions {
            body["dimensions"] = dimensions.into();
        }
        let request = Request {
            http: &self.http,
            url: &format!("{}/embeddings", self.settings.url),
            key: self.settings.api_key.as_ref(),
            max_retry_after: self.settings.max_retry_after,
            cap: MAX_ANSWER_BYTES,
        };
        request
            .attempt(
                &body,
                |text| self.parse(text, batch.len()),
                |status, message| RemoteError::Permanent {
                    model: self.settings.name.clone(),
                    status,
                    message,
                },
            )
            .await
    }

    /// `data[].embedding` ordered by `data[].index`, one per input.
    fn parse(&self, text: &str, expected: usize) -> Result<Vec<Vec<f32>>, RemoteError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| self.invalid(format!("the answer is not JSON: {e}")))?;
        let data = value["data"]
            .as_array()
            .ok_or_else(|| self.invalid("the answer has no `data` list".into()))?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for (position, item) in data.iter().enumerate() {
            let index = item["index"].as_u64().map_or(position, |i| i as usize);
            let embedding = item["embedding"]
                .as_array()
                .ok_or_else(|| self.invalid("an item has no `embedding` list".into()))?
                .iter()
                .map(|x| x.as_f64().map(|x| x as f32))
                .collect::<Option<Vec<f32>>>()
                .ok_or_else(|| self.invalid("an embedding holds a non-number".into()))?;
            let slot = vectors
                .get_mut(index)
                .ok_or_else(|| self.invalid(format!("an item's index {index} is out of range")))?;
            *slot = Some(embedding);
        }
        vectors
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                self.invalid(format!(
                    "{} inputs, but the answer has {} embeddings",
                    expected,
                    data.len()
                ))
            })
    }

    fn invalid(&self, message: String) -> RemoteError {
        RemoteError::Invalid {
            model: self.settings.name.clone(),
            message,
        }
    }
}

/// Largest answer read: a batch of 64 vectors of 8,192 dimensions is about
/// 12 MB of JSON; an endpoint sending more is not answering the question.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Waits between attempts: the peer's `Retry-After` when it gives one,
/// else a backoff that doubles; never more than `cap`.
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(first: Duration, cap: Duration) -> Self {
        Backoff { next: first, cap }
    }

    /// How long to wait before the next attempt.
    pub(crate) fn wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let wait = retry_after.unwrap_or(self.next).min(self.cap);
        self.next = (self.next * 2).min(self.cap);
        wait
    }
}

/// Where and how one request to an OpenAI-compatible endpoint goes.
pub(crate) struct Request<'a> {
    pub http: &'a reqwest::Client,
    pub url: &'a str,
    /// Sent as a Bearer token.
    pub key: Option<&'a Secret>,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Largest answer read, in bytes.
    pub cap: usize,
}

impl Request<'_> {
    /// POSTs `body`: a success answer's text `parse`d; 429, 5xx, timeouts,
    /// dropped connections and answers over the cap to retry (with the
    /// peer's `Retry-After`); other statuses `refused` with what the
    /// endpoint said. Messages name the URL only, never a header.
    pub(crate) async fn attempt<T, E>(
        &self,
        body: &Value,
        parse: impl FnOnce(&str) -> Result<T, E>,
        refused: impl FnOnce(u16, String) -> E,
    ) -> Attempt<T, E> {
        let mut request = self.http.post(self.url).json(body);
        if let Some(key) = self.key {
            request = request.bearer_auth(key.expose());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timed out"
                } else {
                    "could not connect"
                };
                return Attempt::Retry {
                    message: format!("{kind} ({})", self.url),
                    after: None,
                };
            }
        };
        let status = response.status();
        let after = retry_after(&response, self.max_retry_after);
        let text = match read_capped(response, self.cap).await {
            Ok(text) => text,
            Err(message) => {
                return Attempt::Retry {
                    message,
                    after: None,
                };
            }
        };
        if status.is_success() {
            return match parse(&text) {
                Ok(answer) => Attempt::Done(answer),
                Err(error) => Attempt::Fail(error),
            };
        }
        let message = endpoint_message(&text);
        if status.as_u16() == 429 || status.is_server_error() {
            return Attempt::Retry {
                message: format!("the endpoint answered {status}: {message}"),
                after,
            };
        }
        Attempt::Fail(refused(status.as_u16(), message))
    }
}

/// `Retry-After` in seconds, at most `cap`, if the answer has one.
fn retry_after(response: &reqwest::Response, cap: Duration) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        // `Retry-After: 1e300` is finite but no Duration: a peer's
        // number must not panic us. Anything past the cap waits the cap.
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .unwrap_or(Duration::MAX)
                .min(cap)
        })
}

/// The answer's body, read up to `cap` bytes (an endpoint sending more is
/// not answering the question).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<String, String> {
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > cap {
                    return Err(format!("the answer is over {cap} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(error) => return Err(format!("reading the answer: {error}")),
        }
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// What an error body says: OpenAI's `{"error": {"message"}}`, TEI's
/// `{"error": "..."}`, else the body's start.
fn endpoint_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let said = parsed.as_ref().and_then(|v| {
        v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .or_else(|| v["message"].as_str())
            .map(str::to_string)
    });
    let message = said.unwrap_or_else(|| body.trim().to_string());
    if message.is_empty() {
        return "(no message)".to_string();
    }
    message.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_each_server_kind_are_read() {
        assert_eq!(
            endpoint_message(r#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(
            endpoint_message(r#"{"error":"Input validation error"}"#),
            "Input validation error"
        );
        assert_eq!(endpoint_message(""), "(no message)");
        assert_eq!(endpoint_message("plain text"), "plain text");
    }
}
