//! `x-chroma-token` authentication and per-database authorisation.
//!
//! Tokens are kept as SHA-256 digests only. With no token configured the API
//! is open, but only to clients on loopback: the daemon says so at start, and
//! a request from any other address gets a 401 explaining why.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, AppState};
use crate::config::{ApiToken, sha256_hex};

pub struct Authenticator {
    tokens: Vec<ApiToken>,
}

/// Who is calling: the databases they may touch (`None` = all) and, for
/// the audit fields, the name their token was given.
#[derive(Debug, Clone)]
pub struct Principal {
    databases: Option<Vec<String>>,
    name: Option<String>,
    /// The SHA-256 digest of the caller's token (`None`: a loopback caller
    /// of an API without tokens): what per-token caps count by.
    token: Option<String>,
}

impl Principal {
    pub fn check_database(&self, database: &str) -> Result<(), ApiError> {
        match &self.databases {
            Some(allowed) if !allowed.iter().any(|d| d == database) => Err(ApiError::forbidden(
                format!("this token has no access to database `{database}`"),
            )),
            _ => Ok(()),
        }
    }

    /// The databases this caller is limited to; `None` = all.
    pub fn databases(&self) -> Option<Vec<String>> {
        self.databases.clone()
    }

    /// The `name` of the caller's token (`[[api.tokens]] name`); `None` for
    /// unnamed tokens and loopback callers of an open API.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// What identifies the caller's token for per-token caps ([`super::quota`]).
    pub fn token_key(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A loopback caller of an API without tokens.
    pub fn loopback() -> Principal {
        Principal {
            databases: None,
            name: None,
            token: None,
        }
    }

    /// A caller with every database, known by its token's digest (tests).
    #[cfg(test)]
    pub fn for_token(digest: &str) -> Principal {
        Principal {
            databases: None,
            name: None,
            token: Some(digest.to_string()),
        }
    }
}

impl Authenticator {
    pub fn new(tokens: Vec<ApiToken>) -> Self {
        Authenticator { tokens }
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    pub(crate) fn authenticate(
        &self,
        token: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<Principal, ApiError> {
        if self.tokens.is_empty() {
            return match peer {
                Some(peer) if peer.ip().is_loopback() => Ok(Principal::loopback()),
                _ => Err(ApiError::unauthorized(
                    "no API tokens are configured (CHROMA_SYNCD_API_TOKENS), so only loopback \
                     clients are accepted",
                )),
            };
        }
        let Some(token) = token else {
            return Err(ApiError::unauthorized("missing x-chroma-token header"));
        };
        let digest = sha256_hex(token.as_bytes());
        let entry = self
            .tokens
            .iter()
            .find(|t| t.sha256.eq_ignore_ascii_case(&digest))
            .ok_or_else(|| ApiError::unauthorized("unknown x-chroma-token"))?;
        let all = entry.databases.iter().any(|d| d == "*");
        Ok(Principal {
            databases: (!all).then(|| entry.databases.clone()),
            name: entry.name.clone(),
            token: Some(entry.sha256.to_ascii_lowercase()),
        })
    }
}

pub async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let token = request
        .headers()
        .get("x-chroma-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match state.auth.authenticate(token.as_deref(), peer) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => error.into_response(),
    }
}
