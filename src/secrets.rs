//! Keeping secrets out of text that leaves the process: log lines, stored
//! job errors, schedule slot messages, health answers.
//!
//! Rather than trusting every call site to remember, the daemon registers
//! every secret it loads (AWS keys, GitHub tokens and App keys, Chroma's API
//! key, the queue URL's password) once at start-up, and two choke points
//! scrub text: [`scrub`] for messages that are stored or answered, and
//! [`ScrubbingWriter`], through which every log line is written. Both also
//! hide the `user:password@` part of any URL, registered or not, since an
//! error from a client library may quote a URL it was given.

use std::borrow::Cow;
use std::io::Write;
use std::sync::{OnceLock, RwLock};

use regex::Regex;

use crate::config::Secret;

/// Shorter values would be scrubbed out of ordinary words.
const MIN_SECRET_LEN: usize = 4;

fn registry() -> &'static RwLock<Vec<String>> {
    static REGISTRY: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    REGISTRY.get_or_init(|| RwLock::new(Vec::new()))
}

fn url_credentials() -> &'static Regex {
    static PATTERN: OnceLock<Regex> = OnceLock::new();
    // scheme://userinfo@ — a password, or a token standing alone
    // (`https://TOKEN@host`).
    PATTERN.get_or_init(|| {
        Regex::new(r#"([A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@"']+@"#).expect("static pattern")
    })
}

/// Adds secret values to scrub from everything written from now on.
pub fn register<'a>(secrets: impl IntoIterator<Item = &'a Secret>) {
    let mut registry = registry()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for secret in secrets {
        let value = secret.expose();
        if value.len() < MIN_SECRET_LEN {
            continue;
        }
        // JSON logs escape quotes, backslashes and newlines (a PEM key):
        // the escaped form is what appears in a line.
        let escaped = serde_json::to_string(value).unwrap_or_default();
        let escaped = escaped[1..escaped.len().saturating_sub(1).max(1)].to_string();
        for form in [value.to_string(), escaped] {
            if !registry.contains(&form) {
                registry.push(form);
            }
        }
    }
    // Longest first, so a secret containing another is replaced whole.
    registry.sort_by_key(|value| std::cmp::Reverse(value.len()));
}

/// `text` with every registered secret replaced by `***` and URL passwords
/// hidden (`https://user:***@host`→ `https://***@host`).
pub fn scrub(text: &str) -> Cow<'_, str> {
    let mut text = Cow::Borrowed(text);
    {
        let registry = registry()
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for secret in registry.iter() {
            if text.contains(secret.as_str()) {
                text = Cow::Owned(text.replace(secret.as_str(), "***"));
            }
        }
    }
    if url_credentials().is_match(&text) {
        text = Cow::Owned(
            url_credentials()
                .replace_all(&text, "${1}***@")
                .into_owned(),
        );
    }
    text
}

/// A `tracing_subscriber` writer that scrubs each formatted log line before
/// it reaches `inner` (standard error in the daemon).
pub struct ScrubbingWriter<W: Write> {
    inner: W,
    line: Vec<u8>,
}

impl<W: Write> ScrubbingWriter<W> {
    pub fn new(inner: W) -> Self {
        ScrubbingWriter {
            inner,
            line: Vec::new(),
        }
    }
}

impl<W: Write> Write for ScrubbingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // The formatter writes one event per writer; buffer it and scrub it
        // whole on flush/drop, so a secret split across writes is still found.
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            let text = String::from_utf8_lossy(&line);
            self.inner.write_all(scrub(&text).as_bytes())?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for ScrubbingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Makes a [`ScrubbingWriter`] over standard error for each log event.
pub fn scrubbed_stderr() -> ScrubbingWriter<std::io::Stderr> {
    ScrubbingWriter::new(std::io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_and_url_passwords_are_hidden() {
        register(&[Secret::new("s3cr3t-value-1"), Secret::new("ab")]);
        let text = "auth failed for s3cr3t-value-1 at postgres://app:hunter2@db:5432/q; ab stays";
        let scrubbed = scrub(text);
        assert_eq!(
            scrubbed,
            "auth failed for *** at postgres://***@db:5432/q; ab stays"
        );
        assert!(matches!(scrub("nothing to hide"), Cow::Borrowed(_)));
        assert_eq!(
            scrub("GET https://ghp_tok3n@host/x"),
            "GET https://***@host/x"
        );
        register(&[Secret::new("-----BEGIN KEY-----\nabc\"def\n")]);
        assert_eq!(
            scrub(r#"{"error":"bad key -----BEGIN KEY-----\nabc\"def\n here"}"#),
            r#"{"error":"bad key *** here"}"#
        );
    }

    #[test]
    fn log_lines_are_scrubbed_whole() {
        register(&[Secret::new("tok-0123456789")]);
        let mut out = Vec::new();
        {
            let mut writer = ScrubbingWriter::new(&mut out);
            writer.write_all(b"token tok-01234").unwrap();
            writer.write_all(b"56789 and https://u:p@h/x\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "token *** and https://***@h/x\n"
        );
    }
}
