//! The handler registry and the routing of one message.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use netproto_crypto::PublicKey;
use netproto_transport::sync;

use bytes::Bytes;
use netproto_wire::{
    Envelope, ErrorCode, ErrorFrame, Frame, Headers, MAX_TYPE_LEN, Message, MessageType,
};
use tokio::time::Instant;
use tracing::Instrument;

use crate::RequestContext;
use crate::context::deadline_of;
use crate::handler::{
    BoxFuture, BoxStream, Handler, HandlerError, call_catching, run_catching, truncate,
};
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
    /// A server stream is to be sent, item by item, within its credit.
    Stream(Producer),
}

/// A server stream's producer, as a stream handler returned it, with the
/// request's initial credit (its `stream` header).
pub(crate) struct Producer {
    pub(crate) msg_type: MessageType,
    pub(crate) items: BoxStream<Result<Bytes, HandlerError>>,
    pub(crate) credit: u32,
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

    /// Registers a server-stream handler (PROTOCOL.md Part III §4) for
    /// `msg_type`, replacing any handler registered for it: given the
    /// request's [`RequestContext`] and raw [`Envelope`], it returns a
    /// [`Stream`](futures_core::Stream) of item payloads.
    ///
    /// [`serve`](Self::serve) sends each item as a `STREAM` data frame
    /// under the request's id and type, one credit each: it polls the
    /// stream for the next item only when the requester has granted credit
    /// for it, so a requester that stops reading stops the producer (and
    /// nothing else on the connection). The stream's end is sent as an end
    /// frame; an `Err` item as an error frame, which ends the stream too.
    /// The producer is dropped when the request's deadline passes (answered
    /// [`ErrorCode::DEADLINE_EXCEEDED`]), when the requester cancels, when
    /// it takes longer than the request timeout to yield its next item
    /// (answered [`ErrorCode::TIMEOUT`]; the wait for credit does not
    /// count), or when the connection fails.
    ///
    /// A request without the `stream` header (an untyped or unary
    /// requester) is answered [`ErrorCode::BAD_MESSAGE`] without calling
    /// the handler; [`dispatch`](Self::dispatch), which answers with one
    /// outcome, answers a stream request so too.
    ///
    /// # Examples
    ///
    /// ```
    /// # use netproto_dispatch::{Dispatcher, HandlerError, RequestContext};
    /// # use netproto_wire::Envelope;
    /// use bytes::Bytes;
    ///
    /// let dispatcher = Dispatcher::default();
    /// dispatcher.register_stream("COUNT", |_context: RequestContext, _request: Envelope| {
    ///     let items = (0..3_u8).map(|n| Ok::<_, HandlerError>(Bytes::from(vec![n])));
    ///     futures::stream::iter(items)
    /// });
    /// assert!(dispatcher.is_registered("COUNT"));
    /// ```
    pub fn register_stream<F, S>(&self, msg_type: &str, handler: F)
    where
        F: Fn(RequestContext, Envelope) -> S + Send + Sync + 'static,
        S: futures_core::Stream<Item = Result<Bytes, HandlerError>> + Send + 'static,
    {
        let handler = move |context: RequestContext,
                            envelope: Envelope|
              -> BoxStream<Result<Bytes, HandlerError>> {
            Box::pin(handler(context, envelope))
        };
        self.insert(msg_type, Handler::Stream(Arc::new(handler)));
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
        let request_id = envelope.request_id;
        match span.in_scope(|| self.start(envelope, headers.as_ref(), deadline, None)) {
            Started::Done(outcome) => outcome,
            Started::Pending(future) => future.instrument(span).await,
            Started::Stream(_) => Outcome::error(
                request_id,
                ErrorCode::BAD_MESSAGE,
                "a server stream is answered by serve only".into(),
            ),
        }
    }

    /// Looks the handler up and runs it if it is synchronous; otherwise
    /// returns its future. Call it inside a `dispatch` span, with the
    /// header block already taken off `envelope`, the deadline computed
    /// from it, and the connection's authenticated peer key, if any.
    pub(crate) fn start(
        &self,
        envelope: Envelope,
        headers: Option<&Headers>,
        deadline: Option<Instant>,
        peer_key: Option<PublicKey>,
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
                    peer_key,
                );
                Started::Pending(Box::pin(async move {
                    Outcome::from_result(request_id, run_catching(|| f(context, envelope)).await)
                }))
            }
            Handler::Stream(f) => {
                let Some(credit) = headers.and_then(|headers| headers.stream) else {
                    tracing::debug!("stream method requested without a stream header");
                    return Started::Done(Outcome::error(
                        request_id,
                        ErrorCode::BAD_MESSAGE,
                        format!(
                            "{:?} answers with a server stream: request it with the `stream` header",
                            envelope.msg_type.as_str()
                        ),
                    ));
                };
                let context = RequestContext::from_headers(
                    request_id,
                    envelope.msg_type.clone(),
                    headers,
                    deadline,
                    peer_key,
                );
                let msg_type = envelope.msg_type.clone();
                match call_catching(|| Ok(f(context, envelope))) {
                    Ok(items) => Started::Stream(Producer {
                        msg_type,
                        items,
                        credit,
                    }),
                    Err(error) => {
                        let (code, message) = error.into_parts();
                        Started::Done(Outcome::error(request_id, code, message))
                    }
                }
            }
        }
    }
}
