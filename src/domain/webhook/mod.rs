//! A source's `webhook`: which URLs it may name, and how a delivery is
//! signed and sent. Storing, retrying and listing deliveries is the
//! queue's (`webhook_deliveries`); the loop that announces finished jobs
//! and sends their deliveries is [`webhook_loop`] (`delivery.rs`).
//!
//! **Signatures (Standard Webhooks, standardwebhooks.com).** Each source
//! with a webhook has a secret of its own, `whsec_` + base64 of 32 random
//! bytes ([`new_secret`]), returned once when the source is created (and by
//! `POST /api/v1/sources/{id}/webhook/rotate-secret`), never in reads.
//! Every delivery carries `webhook-id` (the delivery id, the same on every
//! retry), `webhook-timestamp` (unix seconds of the attempt) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! keyed by the secret's decoded bytes, so receivers verify with any
//! Standard Webhooks library, reject replays by the timestamp, and one
//! team cannot forge deliveries to another's receiver. A daemon-wide key
//! (`[webhooks] signing_secret_env`) is optional: when set, deliveries also
//! carry the older `X-Chroma-Syncd-Signature` (compatibility).
//!
//! Webhook URLs are chosen by API callers, so they pass the same outbound
//! rules as S3 endpoints: public addresses only, checked at creation and
//! again on every connection (DNS can change), unless their origin is in
//! `[webhooks] allowed_origins`.

mod delivery;

pub use delivery::webhook_loop;

use std::time::Duration;

use hmac::{KeyInit, Mac};
use url::Url;

use super::DomainError;
use crate::config::{Secret, WebhookSettings};
use crate::model::WebhookConfig;
use crate::net::{
    AllowedOrigins, PublicOnlyResolver, ResolveError, forbidden_address, literal_ip, resolve_public,
};

/// Longest webhook URL accepted.
const MAX_URL_BYTES: usize = 2048;
/// The receiver's answer is read at most this far (it is only logged).
const MAX_ANSWER_BYTES: usize = 1024;

/// Delivery headers (interface contract).
pub const EVENT_HEADER: &str = "x-chroma-syncd-event";
pub const DELIVERY_HEADER: &str = "x-chroma-syncd-delivery";
pub const SIGNATURE_HEADER: &str = "x-chroma-syncd-signature";
/// Standard Webhooks headers (interface contract).
pub const STANDARD_ID_HEADER: &str = "webhook-id";
pub const STANDARD_TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const STANDARD_SIGNATURE_HEADER: &str = "webhook-signature";
/// Prefix of a per-source secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a per-source secret (Standard Webhooks asks for 24–64).
const SECRET_BYTES: usize = 32;

/// A new per-source secret: `whsec_` + base64 of random bytes from the OS.
pub fn new_secret() -> Result<Secret, String> {
    use base64::Engine;
    let mut bytes = [0u8; SECRET_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a webhook secret: {e}"))?;
    Ok(Secret::new(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )))
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed by the
/// secret's bytes (the base64 after `whsec_`); `None` for a secret that is
/// not of that form.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = engine.decode(secret.strip_prefix(SECRET_PREFIX)?).ok()?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    Some(format!("v1,{}", engine.encode(mac.finalize().into_bytes())))
}

/// The outbound rules and the signing key, built once from `[webhooks]`.
pub struct WebhookRules {
    allowed: AllowedOrigins,
    /// The daemon-wide key (`signing_secret_env`), optional: when set,
    /// deliveries also carry `X-Chroma-Syncd-Signature`.
    secret: Option<Secret>,
    /// Connects to public addresses only, on every connection.
    guarded: reqwest::Client,
    /// For allowlisted origins only.
    trusted: reqwest::Client,
}

/// How one attempt went: the receiver's status, or why there was none.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl Answer {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

impl WebhookRules {
    /// Fails when an HTTP client cannot be built: the guarded client must
    /// never be replaced by one without the guard (fail closed).
    pub fn new(settings: &WebhookSettings) -> Result<Self, String> {
        let secret = std::env::var(&settings.signing_secret_env)
            .ok()
            .filter(|s| !s.is_empty())
            .map(Secret::new);
        let client = |guarded: bool| {
            let mut builder = reqwest::Client::builder()
                .timeout(settings.timeout())
                .connect_timeout(settings.timeout().min(Duration::from_secs(10)))
                // A redirect would leave the URL that was checked.
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("chroma-syncd/", env!("CARGO_PKG_VERSION")));
            if guarded {
                builder = builder.dns_resolver(PublicOnlyResolver).no_proxy();
            }
            builder
                .build()
                .map_err(|e| format!("building the webhook HTTP client: {e}"))
        };
        Ok(WebhookRules {
            allowed: settings.allowed_origins.clone(),
            secret,
            guarded: client(true)?,
            trusted: client(false)?,
        })
    }

    /// The signing key, for scrubbing it from any text.
    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    /// The checks that need the daemon's config and the network: the URL's
    /// host is public or allowlisted. A name that does not resolve now
    /// passes; it is checked again on every connection. (Deliveries are
    /// signed with the source's own secret, so no daemon-wide key is needed.)
    pub async fn authorize(&self, webhook: &WebhookConfig) -> Result<(), DomainError> {
        let url = validate(webhook)?;
        if self.allowed.contains(&url) {
            return Ok(());
        }
        let hint = format!(
            "add {} to [webhooks] allowed_origins / CHROMA_SYNCD_WEBHOOK_ALLOWED_ORIGINS if it \
             is trusted",
            url.origin().ascii_serialization()
        );
        if let Some(ip) = literal_ip(&url) {
            return match forbidden_address(ip) {
                Some(why) => Err(DomainError::invalid(format!(
                    "webhook.url is refused: {ip} is a {why}; {hint}"
                ))),
                None => Ok(()),
            };
        }
        let host = url.host_str().unwrap_or_default();
        match resolve_public(host).await {
            Err(refused @ ResolveError::Forbidden { .. }) => Err(DomainError::invalid(format!(
                "webhook.url is refused: {refused}; {hint}"
            ))),
            Err(ResolveError::Lookup(error)) => {
                tracing::debug!(%error, "webhook host does not resolve yet");
                Ok(())
            }
            Ok(_) => Ok(()),
        }
    }

    /// `sha256=<hex HMAC-SHA256 of body>`, keyed by the signing secret.
    pub fn signature(&self, body: &[u8]) -> Option<String> {
        let secret = self.secret.as_ref()?;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(body);
        Some(format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// Sends one attempt of a delivery, signed with `source_secret` (the
    /// Standard Webhooks headers) and, when the daemon has one, its
    /// daemon-wide key. Never follows redirects; connects to public
    /// addresses only unless the origin is allowlisted.
    pub async fn send(
        &self,
        url: &str,
        event: &str,
        delivery: &str,
        body: String,
        source_secret: Option<&str>,
    ) -> Answer {
        let failed = |error: String| Answer {
            status: None,
            error: Some(error),
        };
        let Ok(parsed) = Url::parse(url) else {
            return failed("the stored URL does not parse".into());
        };
        let client = if self.allowed.contains(&parsed) {
            &self.trusted
        } else {
            if let Some(ip) = literal_ip(&parsed)
                && let Some(why) = forbidden_address(ip)
            {
                return failed(format!("refused: {ip} is a {why}"));
            }
            &self.guarded
        };
        let mut request = client
            .post(parsed)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, event)
            .header(DELIVERY_HEADER, delivery);
        if let Some(signature) = self.signature(body.as_bytes()) {
            request = request.header(SIGNATURE_HEADER, signature);
        }
        if let Some(secret) = source_secret {
            let timestamp = chrono::Utc::now().timestamp();
            let Some(signature) = standard_signature(secret, delivery, timestamp, body.as_bytes())
            else {
                return failed("the source's webhook secret is malformed; rotate it".into());
            };
            request = request
                .header(STANDARD_ID_HEADER, delivery)
                .header(STANDARD_TIMESTAMP_HEADER, timestamp.to_string())
                .header(STANDARD_SIGNATURE_HEADER, signature);
        }
        let sent = request.body(body).send().await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let error = (!status.is_success())
                    .then(|| format!("the receiver answered {}", status.as_u16()));
                // Read a little of the answer so the connection can be reused.
                let mut response = response;
                let mut read = 0;
                while read < MAX_ANSWER_BYTES {
                    match response.chunk().await {
                        Ok(Some(piece)) => read += piece.len(),
                        _ => break,
                    }
                }
                Answer {
                    status: Some(status.as_u16()),
                    error,
                }
            }
            Err(error) => failed(describe(&error)),
        }
    }
}

/// The reason a request failed, with its causes (a refused address says
/// which); never the URL's query, which may hold a receiver's token.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The checks that need nothing but the payload: an absolute http(s) URL
/// without credentials, of sane length, and a non-empty event list.
pub fn validate(webhook: &WebhookConfig) -> Result<Url, DomainError> {
    if webhook.url.len() > MAX_URL_BYTES {
        return Err(DomainError::invalid(format!(
            "webhook.url is longer than {MAX_URL_BYTES} bytes"
        )));
    }
    let url = Url::parse(&webhook.url)
        .map_err(|e| DomainError::invalid(format!("webhook.url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(DomainError::invalid(
            "webhook.url must be an http:// or https:// URL with a host",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::invalid(
            "webhook.url must not hold a user name or password (they would be stored and \
             shown with the source); verify deliveries by their signature instead",
        ));
    }
    if webhook.events.as_ref().is_some_and(Vec::is_empty) {
        return Err(DomainError::invalid(
            "webhook.events is empty; leave it out for every event, or name some of \
             `complete`, `failed`, `cancelled`",
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.to_string(),
            events: None,
        }
    }

    #[test]
    fn urls_are_http_with_a_host_and_no_credentials() {
        assert!(validate(&hook("https://hooks.example.com/x?token=1")).is_ok());
        for bad in [
            "ftp://example.com/",
            "not a url",
            "https://user:pw@example.com/",
            "file:///etc/passwd",
        ] {
            assert!(validate(&hook(bad)).is_err(), "{bad}");
        }
        let mut empty = hook("https://example.com/");
        empty.events = Some(vec![]);
        assert!(validate(&empty).is_err());
    }

    /// The example of the Standard Webhooks specification
    /// (github.com/standard-webhooks/standard-webhooks, spec/standard-webhooks.md).
    #[test]
    fn standard_signatures_match_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(standard_signature("not-a-secret", "id", 1, body), None);
        let fresh = new_secret().unwrap();
        assert!(fresh.expose().starts_with(SECRET_PREFIX));
        assert_ne!(fresh.expose(), new_secret().unwrap().expose());
    }

    #[test]
    fn signatures_are_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        let rules = WebhookRules {
            allowed: AllowedOrigins::default(),
            secret: Some(Secret::new("Jefe")),
            guarded: reqwest::Client::new(),
            trusted: reqwest::Client::new(),
        };
        assert_eq!(
            rules.signature(b"what do ya want for nothing?").unwrap(),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
