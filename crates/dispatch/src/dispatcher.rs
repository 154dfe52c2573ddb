//! The handler registry and the routing of one message.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use netproto_transport::sync;

use netproto_wire::{Envelope, ErrorCode, ErrorFrame, Frame, Headers, MAX_TYPE_LEN, Message};
use tokio::time::Instant;
use tracing::Instrument;

use crate::RequestContext;
use crate::context::deadline_of;
use crate::handler::{BoxFuture, Handler, HandlerError, call_catching, run_catching, truncate};
use crate::trace::dispatch_span;

/// What dispatching one message produced.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The reply to a request, carrying the request's id.
    Reply(Envelope),
    /// An error frame answering a request: no handler, a failed or panicking
    /// handler, or a payload that does not decode.
    Error(ErrorFrame),
    /// Nothing to send: the message was one-way (request id 0).
    NoReply,
}

impl Outcome {
    /// The frame to send back, if any.
    pub fn into_frame(self) -> Option<Frame> {
        match self {
            Self::Reply(envelope) => Some(envelope.to_frame()),
            Self::Error(error) => Some(Frame::Error(error)),
            Self::NoReply => None,
        }
    }

    /// An error outcome for `request_id`, or nothing for a one-way message.
    pub(crate) fn error(request_id: u64, code: ErrorCode, message: String) -> Self {
        if request_id == 0 {
            Self::NoReply
        } else {
            Self::Error(ErrorFrame::new(request_id, code, truncate(message)))
        }
    }

    fn from_result(request_id: u64, result: Result<Envelope, HandlerError>) -> Self {
        match result {
            Ok(mut reply) if request_id != 0 => {
                reply.request_id = request_id;
                Self::Reply(reply)
            }
            Ok(_) => Self::NoReply,
            Err(error) => {
                if request_id == 0 {
                    tracing::debug!(%error, "one-way message handler failed");
                }
                let (code, message) = error.into_parts();
                Self::error(request_id, code, message)
            }
        }
    }
}

/// How [`Dispatcher::start`] left a message.
pub(crate) enum Started {
    /// Handled already (a sync handler, no handler, or a bad payload).
    Done(Outcome),
    /// An async handler is to be run to completion.
    Pending(BoxFuture<Outcome>),
}

/// Routes messages to the handlers registered for their type name.
///
/// Handlers are registered through `&self`, so one dispatcher is built once,
/// shared as an `Arc<Dispatcher>` by every connection, and may gain handlers
/// while serving. There are three kinds:
///
/// - [`register`](Self::register): a closure over `&Message`, run inline on
///   the connection's task. Keep it short: it is not preempted, and the
///   per-request timeout cannot interrupt it.
/// - [`register_async`](Self::register_async): a closure returning a future;
///   [`serve`](Self::serve) runs many of them concurrently per connection,
///   each bounded by the request timeout.
/// - [`register_envelope`](Self::register_envelope): like `register_async`,
///   but given the raw [`Envelope`], whose payload is a zero-copy slice of the
///   received frame.
///
/// Nothing is registered by default: a `PING` or `ECHO` request is answered
/// with [`ErrorCode::NO_HANDLER`] unless a handler is registered for it.
///
/// A panicking handler never takes the connection down: the panic becomes a
/// [`ErrorCode::HANDLER_FAILED`] error reply.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use netproto_dispatch::{Dispatcher, Outcome};
/// use netproto_wire::Message;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let dispatcher = Arc::new(Dispatcher::default());
/// dispatcher.register("PING", |_| Ok(Message::Pong));
/// dispatcher.register("ECHO", |msg| Ok(msg.clone()));
///
/// let Outcome::Reply(reply) = dispatcher.dispatch(Message::Ping.to_envelope(7)).await else {
///     panic!("a registered request gets a reply");
/// };
/// assert_eq!(reply.request_id, 7);
/// assert_eq!(Message::try_from(reply).unwrap(), Message::Pong);
/// # }
/// ```
#[derive(Default)]
pub struct Dispatcher {
    handlers: RwLock<HashMap<Box<str>, Handler>>,
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let handlers = sync::read(&self.handlers);
        let mut names: Vec<(&str, &str)> = handlers
            .iter()
            .map(|(name, handler)| (&**name, handler.kind()))
            .collect();
        names.sort_unstable();
        f.debug_struct("Dispatcher")
            .field("handlers", &names)
            .finish()
    }
}

impl Dispatcher {
    /// An empty dispatcher (same as `Default`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a synchronous handler for `msg_type`, replacing any handler
    /// already registered for it.
    ///
    /// The handler gets the decoded [`Message`] and returns the reply (any
    /// message; it travels back under the request's id). It runs inline on
    /// the connection's task, so it should be quick; use
    /// [`register_async`](Self::register_async) for slow work.
    ///
    /// A type name that is empty or longer than 255 bytes can never arrive:
    /// such a handler is never called (and a warning is logged).
    pub fn register<F>(&self, msg_type: &str, handler: F)
    where
        F: Fn(&Message) -> Result<Message, HandlerError> + Send + Sync + 'static,
    {
        self.insert(msg_type, Handler::Sync(Arc::new(handler)));
    }

    /// Registers an asynchronous handler for `msg_type`, replacing any
    /// handler already registered for it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use netproto_dispatch::Dispatcher;
    /// # use netproto_wire::Message;
    /// let dispatcher = Dispatcher::default();
    /// dispatcher.register_async("SLOW_ECHO", |msg: Message| async move {
    ///     tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    ///     Ok(msg)
    /// });
    /// ```
    pub fn register_async<F, Fut>(&self, msg_type: &str, handler: F)
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Message, HandlerError>> + Send + 'static,
    {
        let handler = move |msg: Message| -> BoxFuture<Result<Message, HandlerError>> {
            Box::pin(handler(msg))
        };
        self.insert(msg_type, Handler::Async(Arc::new(handler)));
    }

    /// Registers an asynchronous handler that works on the raw [`Envelope`]
    /// (its payload is a zero-copy slice of the received frame, and built-in
    /// types are not decoded), replacing any handler registered for
    /// `msg_type`.
    ///
    /// The reply envelope's `request_id` is ignored: the reply always travels
    /// under the request's id.
    pub fn register_envelope<F, Fut>(&self, msg_type: &str, handler: F)
    where
        F: Fn(Envelope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Envelope, HandlerError>> + Send + 'static,
    {
        let handler = move |envelope: Envelope| -> BoxFuture<Result<Envelope, HandlerError>> {
            Box::pin(handler(envelope))
        };
        self.insert(msg_type, Handler::Envelope(Arc::new(handler)));
    }

    /// Registers an asynchronous handler that gets the request's
    /// [`RequestContext`] (its deadline, trace context and fingerprint, from
    /// its header block) with the raw [`Envelope`] (its payload without the
    /// header block), replacing any handler registered for `msg_type`.
    ///
    /// The handler need not watch the deadline itself: [`serve`](Self::serve)
    /// drops its future when the deadline passes (answering
    /// [`ErrorCode::DEADLINE_EXCEEDED`]) or the requester cancels. The reply
    /// envelope's `request_id` is ignored, as for
    /// [`register_envelope`](Self::register_envelope).
    ///
    /// # Examples
    ///
    /// ```
    /// # use netproto_dispatch::{Dispatcher, HandlerError, RequestContext};
    /// # use netproto_wire::Envelope;
    /// let dispatcher = Dispatcher::default();
    /// dispatcher.register_with_context("TRACED", |context: RequestContext, envelope: Envelope| async move {
    ///     if let Some(traceparent) = context.traceparent {
    ///         tracing::info!(%traceparent, "serving a traced request");
    ///     }
    ///     Ok::<_, HandlerError>(envelope)
    /// });
    /// ```
    pub fn register_with_context<F, Fut>(&self, msg_type: &str, handler: F)
    where
        F: Fn(RequestContext, Envelope) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Envelope, HandlerError>> + Send + 'static,
    {
        let handler = move |context: RequestContext,
                            envelope: Envelope|
              -> BoxFuture<Result<Envelope, HandlerError>> {
            Box::pin(handler(context, envelope))
        };
        self.insert(msg_type, Handler::Context(Arc::new(handler)));
    }

    /// Removes the handler for `msg_type`; returns whether there was one.
    pub fn unregister(&self, msg_type: &str) -> bool {
        sync::write(&self.handlers).remove(msg_type).is_some()
    }

    /// Whether a handler is registered for `msg_type`.
    pub fn is_registered(&self, msg_type: &str) -> bool {
        sync::read(&self.handlers).contains_key(msg_type)
    }

    fn insert(&self, msg_type: &str, handler: Handler) {
        if msg_type.is_empty() || msg_type.len() > MAX_TYPE_LEN {
            tracing::warn!(
                len = msg_type.len(),
                "handler registered for a type name that cannot arrive"
            );
        }
        sync::write(&self.handlers).insert(msg_type.into(), handler);
    }

    fn lookup(&self, msg_type: &str) -> Option<Handler> {
        sync::read(&self.handlers).get(msg_type).cloned()
    }

    /// Runs the handler for `envelope` and returns what to send back.
    ///
    /// For a request (`request_id != 0`) the outcome is always an answer:
    /// the reply under the same id, or an error frame with
    /// [`ErrorCode::NO_HANDLER`] (no handler for the type),
    /// [`ErrorCode::BAD_MESSAGE`] (a built-in type whose payload does not
    /// decode, such as an `ECHO` that is not UTF-8) or
    /// [`ErrorCode::HANDLER_FAILED`] (the handler returned an error or
    /// panicked; a [`HandlerError`] may carry another code). A one-way
    /// message (id 0) gives [`Outcome::NoReply`] whatever happens.
    ///
    /// A header block ([`DataFlags::HEADERS`](netproto_wire::DataFlags::HEADERS))
    /// is taken off the payload first and given to a context handler; a
    /// malformed one is answered [`ErrorCode::BAD_MESSAGE`]. No timeout or
    /// deadline applies here; [`serve`](Self::serve) enforces both.
    pub async fn dispatch(&self, mut envelope: Envelope) -> Outcome {
        let headers = match envelope.take_headers() {
            Ok(headers) => headers,
            Err(error) => {
                return Outcome::error(
                    envelope.request_id,
                    ErrorCode::BAD_MESSAGE,
                    error.to_string(),
                );
            }
        };
        let span = dispatch_span(envelope.request_id, &envelope.msg_type, headers.as_ref());
        let deadline = deadline_of(headers.as_ref());
        match span.in_scope(|| self.start(envelope, headers.as_ref(), deadline)) {
            Started::Done(outcome) => outcome,
            Started::Pending(future) => future.instrument(span).await,
        }
    }

    /// Looks the handler up and runs it if it is synchronous; otherwise
    /// returns its future. Call it inside a `dispatch` span, with the
    /// header block already taken off `envelope` and the deadline computed
    /// from it.
    pub(crate) fn start(
        &self,
        envelope: Envelope,
        headers: Option<&Headers>,
        deadline: Option<Instant>,
    ) -> Started {
        let request_id = envelope.request_id;
        let Some(handler) = self.lookup(envelope.msg_type.as_str()) else {
            tracing::debug!("no handler for message type");
            return Started::Done(Outcome::error(
                request_id,
                ErrorCode::NO_HANDLER,
                format!(
                    "no handler for message type {:?}",
                    envelope.msg_type.as_str()
                ),
            ));
        };
        let decode = |envelope: Envelope| {
            Message::try_from(envelope).map_err(|error| {
                tracing::debug!(%error, "undecodable message");
                Outcome::error(request_id, ErrorCode::BAD_MESSAGE, error.to_string())
            })
        };
        match handler {
            Handler::Sync(f) => {
                let message = match decode(envelope) {
                    Ok(message) => message,
                    Err(outcome) => return Started::Done(outcome),
                };
                let result = call_catching(|| f(&message));
                Started::Done(Outcome::from_result(
                    request_id,
                    result.map(|reply| reply.to_envelope(request_id)),
                ))
            }
            Handler::Async(f) => {
                let message = match decode(envelope) {
                    Ok(message) => message,
                    Err(outcome) => return Started::Done(outcome),
                };
                Started::Pending(Box::pin(async move {
                    let result = run_catching(|| f(message)).await;
                    Outcome::from_result(
                        request_id,
                        result.map(|reply| reply.to_envelope(request_id)),
                    )
                }))
            }
            Handler::Envelope(f) => Started::Pending(Box::pin(async move {
                Outcome::from_result(request_id, run_catching(|| f(envelope)).await)
            })),
            Handler::Context(f) => {
                let context = RequestContext::from_headers(
                    request_id,
                    envelope.msg_type.clone(),
                    headers,
                    deadline,
                );
                Started::Pending(Box::pin(async move {
                    Outcome::from_result(request_id, run_catching(|| f(context, envelope)).await)
                }))
            }
        }
    }
}
