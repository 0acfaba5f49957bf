//! Bounds on what a multipart body can make the daemon hold before it
//! yields any field data.
//!
//! **Why.** The multipart parser (multer, under axum's `Multipart`) keeps
//! everything before the first boundary, and a part's whole header block,
//! in memory until it finds their end. A body that never sends a boundary
//! (`x-upload-content-length: 1`, then 200 MiB of anything) cost 200 MiB
//! per upload slot. This guard sits between the socket and the parser:
//!
//! - **No progress, no more input**: once [`FRAMING_BOUND`] bytes have been
//!   read since the handler last received a field or a piece of one, the
//!   parser gets no more input until it hands something over. The parser
//!   drains whatever input is ready before it parses, so the guard first
//!   answers "not yet" (and wakes the task at once); a parser that then
//!   still has nothing to hand over and asks again is stuck in a preamble
//!   or a header block longer than the bound, and the body is refused
//!   (400). Input goes to the parser in pieces of at most [`PIECE`] bytes,
//!   so it holds at most the bound plus one piece of framing.
//! - **The body is the declared file plus a margin**: more than
//!   `x-upload-content-length` + [`FIELDS_MARGIN`] bytes is refused (413).
//!
//! The handler reads fields through [`GuardedMultipart`], which reports its
//! progress to the guard and turns a tripped guard into its own error.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::StatusCode;
use futures::Stream;

use super::ApiError;

/// Bytes read without any field data reaching the handler before the body
/// is refused: room for a preamble, part headers and boundaries.
pub const FRAMING_BOUND: usize = 64 * 1024;
/// The largest piece handed to the parser at once.
const PIECE: usize = 16 * 1024;
/// Room in a body, beyond the declared file, for the other fields (each at
/// most 64 KiB, metadata 16 KiB) and the framing.
pub const FIELDS_MARGIN: u64 = 512 * 1024;

/// What the body stream and the handler share.
#[derive(Debug, Default)]
struct State {
    since_progress: AtomicUsize,
    /// Set when the stream held input back at the bound; cleared by
    /// progress. Held back twice without progress: the body is refused.
    held: AtomicBool,
    total: AtomicU64,
    /// Set once, by the stream, when a bound is passed.
    tripped: Mutex<Option<ApiError>>,
}

impl State {
    fn progress(&self) {
        self.since_progress.store(0, Ordering::SeqCst);
        self.held.store(false, Ordering::SeqCst);
    }

    fn trip(&self, error: ApiError) -> std::io::Error {
        let message = error.message.clone();
        self.tripped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(error);
        std::io::Error::other(message)
    }

    fn tripped(&self) -> Option<ApiError> {
        self.tripped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A multipart body behind the guard.
pub struct GuardedMultipart {
    inner: Multipart,
    state: Arc<State>,
}

/// One field of a [`GuardedMultipart`].
pub struct GuardedField<'a> {
    inner: Field<'a>,
    state: Arc<State>,
}

impl GuardedMultipart {
    /// Reads `request`'s body as multipart through the guard; the body may
    /// be at most `declared` + [`FIELDS_MARGIN`] bytes.
    pub async fn from_request<S: Send + Sync>(
        request: Request,
        declared: u64,
        state: &S,
    ) -> Result<GuardedMultipart, ApiError> {
        let shared = Arc::new(State::default());
        let limit = declared.saturating_add(FIELDS_MARGIN);
        let (parts, body) = request.into_parts();
        let pieces = Guarded {
            inner: body.into_data_stream(),
            rest: Bytes::new(),
            state: Arc::clone(&shared),
            limit,
        };
        let request = Request::from_parts(parts, Body::from_stream(pieces));
        let inner = Multipart::from_request(request, state).await.map_err(|e| {
            ApiError::bad_request(format!("expected a multipart/form-data body: {e}"))
        })?;
        Ok(GuardedMultipart {
            inner,
            state: shared,
        })
    }

    /// The next field; a tripped guard's error rather than the parser's.
    pub async fn next_field(&mut self) -> Result<Option<GuardedField<'_>>, ApiError> {
        let next = self.inner.next_field().await;
        let state = &self.state;
        match next {
            Ok(Some(inner)) => {
                state.progress();
                Ok(Some(GuardedField {
                    inner,
                    state: Arc::clone(state),
                }))
            }
            Ok(None) => Ok(None),
            Err(error) => Err(state.tripped().unwrap_or_else(|| parse_error(error))),
        }
    }
}

impl GuardedField<'_> {
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    pub fn file_name(&self) -> Option<&str> {
        self.inner.file_name()
    }

    pub fn content_type(&self) -> Option<&str> {
        self.inner.content_type()
    }

    /// The next piece of the field's data.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ApiError> {
        match self.inner.chunk().await {
            Ok(piece) => {
                self.state.progress();
                Ok(piece)
            }
            Err(error) => Err(self.state.tripped().unwrap_or_else(|| parse_error(error))),
        }
    }
}

/// The body as the parser reads it: in pieces, within both bounds.
struct Guarded {
    inner: axum::body::BodyDataStream,
    /// What is left of the last chunk read.
    rest: Bytes,
    state: Arc<State>,
    limit: u64,
}

impl Stream for Guarded {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if !self.rest.is_empty() {
                let state = Arc::clone(&self.state);
                if state.since_progress.load(Ordering::SeqCst) >= FRAMING_BOUND {
                    if state.held.swap(true, Ordering::SeqCst) {
                        // Held back, parsed, and still nothing to hand over.
                        return Poll::Ready(Some(Err(state.trip(ApiError::bad_request(format!(
                            "no multipart boundary or end of a part's headers within {} KiB; \
                             is the body multipart/form-data with the boundary its \
                             Content-Type names?",
                            FRAMING_BOUND / 1024
                        ))))));
                    }
                    // Let the parser work through what it holds first.
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                let take = PIECE.min(self.rest.len());
                let piece = self.rest.split_to(take);
                let total = state.total.fetch_add(take as u64, Ordering::SeqCst) + take as u64;
                if total > self.limit {
                    return Poll::Ready(Some(Err(state.trip(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "file_too_large",
                        format!(
                            "the body is longer than the declared file ({} bytes) and its \
                             fields; send x-upload-content-length as the file's exact size",
                            self.limit - FIELDS_MARGIN
                        ),
                    )))));
                }
                state.since_progress.fetch_add(take, Ordering::SeqCst);
                return Poll::Ready(Some(Ok(piece)));
            }
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => self.rest = bytes,
                Poll::Ready(Some(Err(error))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(error))));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// A malformed or cut-off body; a body over the route's limit is a 413.
fn parse_error(error: MultipartError) -> ApiError {
    let status = error.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(status, "file_too_large", error.body_text());
    }
    ApiError::bad_request(format!("reading the multipart body: {}", error.body_text()))
}
