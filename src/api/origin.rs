//! `Host` and `Origin` checks: the defence against DNS rebinding.
//!
//! **Why.** With no tokens configured, the API trusts every loopback peer.
//! A web page whose host name an attacker re-points at 127.0.0.1 runs in
//! the developer's browser *as* a loopback peer, and its requests carry the
//! attacker's name in `Host`. Without this check such a page could list and
//! create sources (filesystem roots, S3 with the laptop's AWS chain,
//! webhooks to the attacker). A browser cannot forge `Host`, and it sends
//! `Origin` on every cross-origin state-changing request, so:
//!
//! - a request whose `Host` is neither a loopback name/address
//!   (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`) nor listed in
//!   `[api] allowed_hosts` (`CHROMA_SYNCD_ALLOWED_HOSTS`) is refused (403);
//! - a state-changing request (not GET/HEAD/OPTIONS) whose `Origin` is
//!   present and is not the daemon's own (`http://` or `https://` + the
//!   request's `Host`) is refused (403).
//!
//! The rule is the same with tokens configured or not. The container
//! probes `/healthz` and `/readyz` are exempt (an orchestrator probes by IP
//! address; they change nothing). `allowed_hosts = ["*"]` turns the `Host`
//! check off for operators whose proxy checks it.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// Paths served whatever the `Host`: probes that read and change nothing.
const EXEMPT: [&str; 2] = ["/healthz", "/readyz"];

/// The host names (without port) the API answers to besides loopback;
/// lower case. `*` alone allows any.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts(Arc<Vec<String>>);

impl AllowedHosts {
    pub fn new(hosts: &[String]) -> Self {
        AllowedHosts(Arc::new(
            hosts
                .iter()
                .map(|h| host_name(h.trim()).to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
        ))
    }

    /// Whether a request naming `host` (a `Host` header value) is served.
    pub fn allows(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        is_loopback_name(&name)
            || self
                .0
                .iter()
                .any(|allowed| allowed == "*" || *allowed == name)
    }
}

/// The host part of a `Host` value: `[::1]:8420` → `::1`, `a.b:80` → `a.b`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        // One colon: name:port. More: a bare IPv6 address.
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The middleware (see the module doc).
pub async fn check(State(allowed): State<AllowedHosts>, request: Request, next: Next) -> Response {
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}").to_string())
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    // HTTP/1.1 requires `Host`; a client without one is not a browser.
    if let Some(host) = &host
        && !allowed.allows(host)
    {
        return ApiError::forbidden(
            "this request's Host header is not a loopback name or address, nor listed in \
             [api] allowed_hosts (CHROMA_SYNCD_ALLOWED_HOSTS); requests under other names are \
             refused to stop DNS rebinding",
        )
        .into_response();
    }
    let changes_state = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if changes_state && let Some(origin) = request.headers().get(header::ORIGIN) {
        let own = host.as_deref().is_some_and(|host| {
            let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
            let host = host.to_ascii_lowercase();
            origin == format!("http://{host}") || origin == format!("https://{host}")
        });
        if !own {
            return ApiError::forbidden(
                "a request that changes state from another origin (its Origin header is not \
                 this daemon's) is refused",
            )
            .into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_listed_hosts_are_served_others_are_not() {
        let none = AllowedHosts::new(&[]);
        for host in [
            "127.0.0.1:8420",
            "127.1.2.3",
            "localhost:8420",
            "LOCALHOST",
            "app.localhost:80",
            "[::1]:8420",
            "::1",
        ] {
            assert!(none.allows(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8420",
            "localhost.attacker.example",
            "10.0.0.5:8420",
            "[::2]:8420",
            "",
        ] {
            assert!(!none.allows(host), "{host}");
        }
        let listed = AllowedHosts::new(&["Syncd.Internal".into(), "10.0.0.5:8420".into()]);
        assert!(listed.allows("syncd.internal:8420"));
        assert!(listed.allows("10.0.0.5"));
        assert!(!listed.allows("other.internal"));
        assert!(AllowedHosts::new(&["*".into()]).allows("anything.example"));
    }
}
