//! What a kind's checks and plans answer with, and so the domain's: why a
//! source or an invocation was refused, or could not be planned. Defined
//! with the kinds (the domain re-exports it) so that they need nothing
//! from the layer above them.

use crate::queue::QueueError;

/// Why a source or an invocation was refused, or could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The caller's input is wrong (400 over the API).
    #[error("{0}")]
    Invalid(String),
    /// The input is well formed but the source may not use what it names:
    /// a credential bound to other databases (403).
    #[error("{0}")]
    Forbidden(String),
    /// Something the plan depends on did not answer in time; retrying may
    /// help (503 with `code`).
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Listing or reading the source failed (a bucket that cannot be listed).
    #[error("{0}")]
    Source(String),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl DomainError {
    pub fn invalid(message: impl Into<String>) -> Self {
        DomainError::Invalid(message.into())
    }
}
