//! The CLI's HTTP client for the daemon's API (`source …`, `invocation …`).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the chroma-syncd API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("HTTP {status}: {error}: {message}")]
    Api {
        status: u16,
        error: String,
        message: String,
    },
}

pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        ApiClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("static HTTP client settings are valid"),
            base: base.trim_end_matches('/').to_string(),
            token,
        }
    }

    /// Sends a request; a non-2xx answer becomes [`ClientError::Api`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.header("x-chroma-token", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        })?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() || status == StatusCode::NO_CONTENT {
            return Ok(value);
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            error: value["error"].as_str().unwrap_or("unknown").to_string(),
            message: value["message"].as_str().unwrap_or(&text).to_string(),
        })
    }

    /// Polls an invocation until it finishes; returns its final JSON.
    pub async fn wait(&self, id: &str, interval: Duration) -> Result<Value, ClientError> {
        let mut last_status = String::new();
        loop {
            let job = self
                .call(Method::GET, &format!("/api/v1/invocations/{id}"), None)
                .await?;
            let status = &job["status"];
            let name = match status {
                Value::String(s) => s.clone(),
                Value::Object(map) => map.keys().next().cloned().unwrap_or_default(),
                _ => String::new(),
            };
            if name != last_status {
                eprintln!("invocation {id}: {name}");
                last_status = name.clone();
            }
            if matches!(name.as_str(), "complete" | "failed" | "cancelled") {
                return Ok(job);
            }
            tokio::time::sleep(interval).await;
        }
    }
}
