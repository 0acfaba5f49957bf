//! The CLI's HTTP client for the daemon's API (`source …`, `invocation …`).
//!
//! Every method speaks the wire types of [`crate::model`], so the CLI sends
//! and reads exactly what the server's handlers do. URLs are built by the URL
//! library, never by string formatting: path segments come from typed IDs and
//! query values are percent-encoded, so a value holding `&`, `+` or a space
//! reaches the server as the user typed it.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Url};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::model::{
    CancelJobResponse, CreateJobPayload, CreateJobResponse, CreateSourcePayload,
    CreateSourceResponse, ErrorResponse, Job, Source,
};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the API URL `{url}` is not an http(s) base URL: {message}")]
    InvalidUrl { url: String, message: String },
    #[error("cannot reach the chroma-syncd API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("HTTP {status}: {error}: {message}")]
    Api {
        status: u16,
        error: String,
        message: String,
    },
    /// A 2xx answer that is not the wire type the endpoint promises (a
    /// daemon of another version, or not a chroma-syncd at all).
    #[error("unexpected answer to {request}: {message}")]
    Decode { request: String, message: String },
}

/// The fields of `POST /api/v1/add-file` besides the file.
#[derive(Debug, Clone, Default)]
pub struct UploadFields {
    pub database_name: String,
    pub collection_name: String,
    pub custom_id: Option<String>,
    /// A JSON object, as text.
    pub metadata: Option<String>,
    pub content_type: Option<String>,
}

/// How long an upload may take: a large file on a slow link.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

/// Filters of `GET /api/v1/sources`; `None` leaves a filter out.
#[derive(Debug, Clone, Default)]
pub struct ListSources {
    pub database_name: Option<String>,
}

/// Filters of `GET /api/v1/invocations`; `None` leaves a filter out.
#[derive(Debug, Clone, Default)]
pub struct ListInvocations {
    pub source_id: Option<Uuid>,
    /// Sent as given: the API checks it, and its 400 names a value it does not know.
    pub status: Option<String>,
}

pub struct ApiClient {
    http: reqwest::Client,
    /// The API's base URL; every request appends its path segments to it,
    /// so a base with a path (behind a reverse proxy) keeps that path.
    base: Url,
    token: Option<String>,
}

impl ApiClient {
    /// A client of the API at `base` (`http://127.0.0.1:8420`), sending
    /// `token` as `x-chroma-token` when given.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |message: String| ClientError::InvalidUrl {
            url: base.to_string(),
            message,
        };
        let url = Url::parse(base).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid("expected http://host[:port][/path]".into()));
        }
        Ok(ApiClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("static HTTP client settings are valid"),
            base: url,
            token,
        })
    }

    /// `POST /api/v1/sources`.
    pub async fn create_source(
        &self,
        payload: &CreateSourcePayload,
    ) -> Result<CreateSourceResponse, ClientError> {
        let request = self.request(Method::POST, &["sources"], &[]).json(payload);
        self.fetch(request).await
    }

    /// `GET /api/v1/sources`.
    pub async fn list_sources(&self, filter: &ListSources) -> Result<Vec<Source>, ClientError> {
        let mut query = Vec::new();
        if let Some(database_name) = &filter.database_name {
            query.push(("database_name", database_name.clone()));
        }
        self.fetch(self.request(Method::GET, &["sources"], &query))
            .await
    }

    /// `GET /api/v1/sources/{source_id}`.
    pub async fn get_source(&self, id: Uuid) -> Result<Source, ClientError> {
        self.fetch(self.request(Method::GET, &["sources", &id.to_string()], &[]))
            .await
    }

    /// `DELETE /api/v1/sources/{source_id}` (answered with 204, no body).
    pub async fn delete_source(&self, id: Uuid) -> Result<(), ClientError> {
        let request = self.request(Method::DELETE, &["sources", &id.to_string()], &[]);
        self.exchange(request).await.map(drop)
    }

    /// `POST /api/v1/sources/{source_id}/invocations`.
    pub async fn create_invocation(
        &self,
        source_id: Uuid,
        payload: &CreateJobPayload,
    ) -> Result<CreateJobResponse, ClientError> {
        let segments = ["sources", &source_id.to_string(), "invocations"];
        let request = self.request(Method::POST, &segments, &[]).json(payload);
        self.fetch(request).await
    }

    /// `POST /api/v1/add-file`: streams the file at `path` (never read
    /// whole), its fields first as the endpoint requires.
    pub async fn upload_file(
        &self,
        path: &std::path::Path,
        fields: &UploadFields,
    ) -> Result<CreateJobResponse, ClientError> {
        let unreadable = |e: std::io::Error| ClientError::Unreachable {
            url: path.display().to_string(),
            message: format!("reading the file: {e}"),
        };
        let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
        let size = file.metadata().await.map_err(unreadable)?.len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".to_string());
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let mut form = reqwest::multipart::Form::new()
            .text("database_name", fields.database_name.clone())
            .text("collection_name", fields.collection_name.clone());
        for (field, value) in [
            ("custom_id", &fields.custom_id),
            ("metadata", &fields.metadata),
            ("content_type", &fields.content_type),
        ] {
            if let Some(value) = value {
                form = form.text(field, value.clone());
            }
        }
        form = form.part(
            "file",
            reqwest::multipart::Part::stream_with_length(body, size).file_name(name),
        );
        let request = self
            .request(Method::POST, &["add-file"], &[])
            .header("x-upload-content-length", size)
            .timeout(UPLOAD_TIMEOUT)
            .multipart(form);
        self.fetch(request).await
    }

    /// `GET /api/v1/invocations/{invocation_id}`.
    pub async fn get_invocation(&self, id: Uuid) -> Result<Job, ClientError> {
        self.fetch(self.request(Method::GET, &["invocations", &id.to_string()], &[]))
            .await
    }

    /// `GET /api/v1/invocations`.
    pub async fn list_invocations(
        &self,
        filter: &ListInvocations,
    ) -> Result<Vec<Job>, ClientError> {
        let mut query = Vec::new();
        if let Some(source_id) = filter.source_id {
            query.push(("source_id", source_id.to_string()));
        }
        if let Some(status) = &filter.status {
            query.push(("status", status.clone()));
        }
        self.fetch(self.request(Method::GET, &["invocations"], &query))
            .await
    }

    /// `PUT /api/v1/invocations/{invocation_id}`: cancels the invocation.
    pub async fn cancel_invocation(&self, id: Uuid) -> Result<CancelJobResponse, ClientError> {
        self.fetch(self.request(Method::PUT, &["invocations", &id.to_string()], &[]))
            .await
    }

    /// A request to `/api/v1/<segments…>?<query>`, with the token if any.
    /// The URL library percent-encodes each segment and each query pair.
    fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> RequestBuilder {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("new() accepts only base URLs")
            .pop_if_empty()
            .extend(["api", "v1"])
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.header("x-chroma-token", token),
            None => request,
        }
    }

    /// Sends `request` and decodes its 2xx answer as `T`.
    async fn fetch<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let (what, body) = self.exchange(request).await?;
        serde_json::from_str(&body).map_err(|e| ClientError::Decode {
            request: what,
            message: e.to_string(),
        })
    }

    /// Sends `request`; returns `METHOD /path` and the body of a 2xx answer.
    /// Any other answer becomes [`ClientError::Api`] with the API's
    /// `{error, message}` (or the raw body if it is not that).
    async fn exchange(&self, request: RequestBuilder) -> Result<(String, String), ClientError> {
        let unreachable = |message: String| ClientError::Unreachable {
            url: self.base.as_str().trim_end_matches('/').to_string(),
            message,
        };
        let request = request.build().map_err(|e| unreachable(e.to_string()))?;
        let what = format!("{} {}", request.method(), request.url().path());
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|e| unreachable(format!("reading the answer to {what}: {e}")))?;
        if status.is_success() {
            return Ok((what, body));
        }
        let (error, message) = match serde_json::from_str::<ErrorResponse>(&body) {
            Ok(answer) => (answer.error, answer.message),
            Err(_) => ("unknown".to_string(), body),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            error,
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(base: &str, segments: &[&str], query: &[(&str, String)]) -> String {
        let api = ApiClient::new(base, None).unwrap();
        let request = api.request(Method::GET, segments, query).build().unwrap();
        request.url().to_string()
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            url(
                "http://127.0.0.1:8420",
                &["invocations"],
                &[("status", "a&b +c=d".into())]
            ),
            "http://127.0.0.1:8420/api/v1/invocations?status=a%26b+%2Bc%3Dd"
        );
        assert_eq!(
            url("http://127.0.0.1:8420/", &["sources"], &[]),
            "http://127.0.0.1:8420/api/v1/sources"
        );
    }

    #[test]
    fn a_base_path_is_kept_and_segments_are_encoded() {
        assert_eq!(
            url("https://proxy.example/syncd", &["sources", "a/b?c"], &[]),
            "https://proxy.example/syncd/api/v1/sources/a%2Fb%3Fc"
        );
        assert_eq!(
            url("https://proxy.example/syncd/", &["sources"], &[]),
            "https://proxy.example/syncd/api/v1/sources"
        );
    }

    #[test]
    fn a_base_url_must_be_http() {
        for base in ["127.0.0.1:8420", "mailto:ops@example.com", "not a url"] {
            assert!(
                matches!(
                    ApiClient::new(base, None),
                    Err(ClientError::InvalidUrl { .. })
                ),
                "{base}"
            );
        }
    }
}
