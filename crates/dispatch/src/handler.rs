//! Handlers as stored by the dispatcher, and the error a handler returns.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use netproto_wire::{Envelope, ErrorCode, MAX_CONTROL_BODY, Message};

use crate::RequestContext;

/// The longest error text an error frame carries: the control-frame body
/// limit minus the request id and the code.
pub(crate) const MAX_ERROR_TEXT: usize = MAX_CONTROL_BODY as usize - 10;

/// Why a handler could not produce a reply: an error code and a text, sent
/// to the requester in an [`ErrorFrame`](netproto_wire::ErrorFrame).
///
/// Strings convert into it with [`ErrorCode::HANDLER_FAILED`], so a handler
/// can write `Err("it broke".into())`; wire errors convert too, so
/// `Message::custom(..)?` works inside a handler. The common application
/// codes have constructors: `Err(HandlerError::not_found("no key alpha"))`
/// reaches the requester as [`ErrorCode::NOT_FOUND`]; an application's own
/// codes (2000 and up, PROTOCOL.md Part I §4.4) go through [`new`](Self::new).
///
/// The text goes to the peer: put nothing secret in it. Texts longer than
/// an error frame can carry (4086 bytes) are cut at a character boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    code: ErrorCode,
    message: String,
}

impl HandlerError {
    /// An error with this code and text.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A [`ErrorCode::HANDLER_FAILED`] error with this text.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::HANDLER_FAILED, message)
    }

    /// A [`ErrorCode::NOT_FOUND`] error: what the request names does not
    /// exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NOT_FOUND, message)
    }

    /// A [`ErrorCode::INVALID_ARGUMENT`] error: the request's values are
    /// not acceptable.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::INVALID_ARGUMENT, message)
    }

    /// A [`ErrorCode::PERMISSION_DENIED`] error: the requester may not do
    /// this.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PERMISSION_DENIED, message)
    }

    /// A [`ErrorCode::UNAVAILABLE`] error: something the handler needs is
    /// out of reach for now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::UNAVAILABLE, message)
    }

    /// The code sent to the requester.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The text sent to the requester.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code and the text, cut to fit an error frame.
    pub(crate) fn into_parts(self) -> (ErrorCode, String) {
        (self.code, truncate(self.message))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handler error {}: {}", self.code.0, self.message)
    }
}

impl std::error::Error for HandlerError {}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        Self::failed(message)
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        Self::failed(message)
    }
}

impl From<netproto_wire::Error> for HandlerError {
    fn from(error: netproto_wire::Error) -> Self {
        Self::failed(error.to_string())
    }
}

/// Cuts `text` to at most [`MAX_ERROR_TEXT`] bytes, at a character boundary.
pub(crate) fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR_TEXT {
        let mut end = MAX_ERROR_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A boxed, sendable stream of items.
pub(crate) type BoxStream<T> = Pin<Box<dyn futures_core::Stream<Item = T> + Send + 'static>>;

type SyncFn = dyn Fn(&Message) -> Result<Message, HandlerError> + Send + Sync;
type AsyncFn = dyn Fn(Message) -> BoxFuture<Result<Message, HandlerError>> + Send + Sync;
type EnvelopeFn = dyn Fn(Envelope) -> BoxFuture<Result<Envelope, HandlerError>> + Send + Sync;
type ContextFn =
    dyn Fn(RequestContext, Envelope) -> BoxFuture<Result<Envelope, HandlerError>> + Send + Sync;
type StreamFn =
    dyn Fn(RequestContext, Envelope) -> BoxStream<Result<Bytes, HandlerError>> + Send + Sync;

/// A registered handler.
#[derive(Clone)]
pub(crate) enum Handler {
    /// Runs inline on the typed message.
    Sync(Arc<SyncFn>),
    /// Returns a future, given the typed message.
    Async(Arc<AsyncFn>),
    /// Returns a future, given the raw envelope.
    Envelope(Arc<EnvelopeFn>),
    /// Returns a future, given the request's context and raw envelope.
    Context(Arc<ContextFn>),
    /// Returns a stream of items, given the request's context and raw
    /// envelope (PROTOCOL.md Part III §4).
    Stream(Arc<StreamFn>),
}

impl Handler {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Sync(_) => "sync",
            Self::Async(_) => "async",
            Self::Envelope(_) => "envelope",
            Self::Context(_) => "context",
            Self::Stream(_) => "stream",
        }
    }
}

/// The error reported to the requester when a handler panics. The panic
/// message is not sent: it may describe internals.
pub(crate) fn panicked(payload: &(dyn Any + Send)) -> HandlerError {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string payload");
    tracing::debug!(error = %text, "handler panicked");
    HandlerError::failed("handler panicked")
}

/// Calls `f`, turning a panic into a [`HandlerError`].
pub(crate) fn call_catching<T>(
    f: impl FnOnce() -> Result<T, HandlerError>,
) -> Result<T, HandlerError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| Err(panicked(payload.as_ref())))
}

/// Calls `f` to get a future, turning a panic (in `f` or in any poll of the
/// future) into a [`HandlerError`].
pub(crate) async fn run_catching<T>(
    f: impl FnOnce() -> BoxFuture<Result<T, HandlerError>>,
) -> Result<T, HandlerError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(future) => CatchUnwind(future).await,
        Err(payload) => Err(panicked(payload.as_ref())),
    }
}

/// A future that turns a panic in its inner future into an error.
struct CatchUnwind<T>(BoxFuture<Result<T, HandlerError>>);

impl<T> Future for CatchUnwind<T> {
    type Output = Result<T, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.get_mut().0.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panicked(payload.as_ref()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        let text = "é".repeat(MAX_ERROR_TEXT);
        let cut = truncate(text);
        assert!(cut.len() <= MAX_ERROR_TEXT);
        assert!(cut.len() >= MAX_ERROR_TEXT - 1);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short".into()), "short");
    }

    #[test]
    fn conversions_use_handler_failed() {
        let from_str: HandlerError = "nope".into();
        assert_eq!(from_str.code(), ErrorCode::HANDLER_FAILED);
        assert_eq!(from_str.message(), "nope");
        let from_wire: HandlerError = netproto_wire::Error::ReservedTypeName.into();
        assert_eq!(from_wire.code(), ErrorCode::HANDLER_FAILED);
    }

    #[test]
    fn common_codes_have_constructors() {
        let cases = [
            (HandlerError::not_found("a"), ErrorCode::NOT_FOUND),
            (
                HandlerError::invalid_argument("b"),
                ErrorCode::INVALID_ARGUMENT,
            ),
            (
                HandlerError::permission_denied("c"),
                ErrorCode::PERMISSION_DENIED,
            ),
            (HandlerError::unavailable("d"), ErrorCode::UNAVAILABLE),
        ];
        for ((error, code), text) in cases.into_iter().zip(["a", "b", "c", "d"]) {
            assert_eq!((error.code(), error.message()), (code, text));
            assert!(error.code().is_application());
        }
    }
}
