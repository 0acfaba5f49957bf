//! A fault-injecting HTTP proxy: forwards to an upstream server (here the S3
//! server) and, on request, answers the next requests with an error status
//! or holds them past the client's timeout. Logs what it did.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::runtime;

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Answer with this status and an S3-style XML error.
    Status(u16),
    /// Wait this long before forwarding (past the client's timeout).
    Delay(Duration),
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    faults: Mutex<Vec<Fault>>,
    /// Whether object reads (GET) only are faulted; other calls pass.
    log: Mutex<Vec<String>>,
}

pub struct FaultProxy {
    pub url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let state = Arc::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        // It stands in for an S3 server the operator trusts (see `allow_endpoint`).
        super::allow_endpoint(&url);
        let app = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        let task = runtime().spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        FaultProxy { url, state, task }
    }

    /// The next GET requests meet these faults, one each, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.state.faults.lock().unwrap().extend_from_slice(faults);
    }

    pub fn clear(&self) {
        self.state.faults.lock().unwrap().clear();
    }

    /// One line per GET: `fault <status>`, `delayed`, or `passed <status>`.
    pub fn log(&self) -> Vec<String> {
        self.state.log.lock().unwrap().clone()
    }
}

fn s3_error(status: u16) -> Response {
    let code = match status {
        503 => "SlowDown",
        _ => "InternalError",
    };
    (
        StatusCode::from_u16(status).unwrap(),
        [(header::CONTENT_TYPE, "application/xml")],
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
             <Message>injected fault</Message><RequestId>fault</RequestId></Error>"
        ),
    )
        .into_response()
}

async fn forward(State(state): State<Arc<ProxyState>>, request: Request) -> Response {
    let is_get = request.method() == axum::http::Method::GET;
    let fault = if is_get {
        let mut faults = state.faults.lock().unwrap();
        (!faults.is_empty()).then(|| faults.remove(0))
    } else {
        None
    };
    match fault {
        Some(Fault::Status(status)) => {
            state.log.lock().unwrap().push(format!("fault {status}"));
            return s3_error(status);
        }
        Some(Fault::Delay(delay)) => {
            state.log.lock().unwrap().push("delayed".to_string());
            tokio::time::sleep(delay).await;
        }
        None => {}
    }
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 256 * 1024 * 1024).await.unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = state
        .client
        .request(parts.method.clone(), format!("{}{path}", state.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != HeaderName::from_static("content-length") {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(response) = upstream.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = response.status();
    if is_get {
        state
            .log
            .lock()
            .unwrap()
            .push(format!("passed {}", status.as_u16()));
    }
    let mut builder = Response::builder().status(status.as_u16());
    for (name, value) in response.headers() {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
            builder = builder.header(name.as_str(), value.as_bytes());
        }
    }
    let bytes = response.bytes().await.unwrap_or_default();
    builder.body(Body::from(bytes)).unwrap()
}
