//! What a typed handler learns about its request besides the value.

use std::fmt;
use std::time::Duration;

use netproto_dispatch::RequestContext;
use netproto_wire::Traceparent;
use tokio::time::Instant;

use crate::Method;

/// The request a typed handler is serving: its id, its method, and (from
/// the request headers of PROTOCOL.md Part III §2) its deadline and trace
/// context.
///
/// Cancellation needs no field: a handler is cancelled by dropping its
/// future, which the dispatcher does when the request times out, the
/// deadline passes or the caller sends a cancel frame. A handler's own
/// calls inherit what is left of the deadline with
/// [`CallOptions::within`](crate::CallOptions::within).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    request_id: u64,
    method: &'static str,
    deadline: Option<Instant>,
    traceparent: Option<Traceparent>,
}

impl Context {
    /// The context of request `request_id` of method `M`, with no deadline
    /// and no trace context (what every request gets today). For calling a
    /// handler or a service directly, as in tests.
    pub fn new<M: Method>(request_id: u64) -> Self {
        Self {
            request_id,
            method: M::NAME,
            deadline: None,
            traceparent: None,
        }
    }

    /// The context of a request of `M` as the dispatcher describes it.
    pub(crate) fn from_request<M: Method>(request: &RequestContext) -> Self {
        Self {
            request_id: request.request_id,
            method: M::NAME,
            deadline: request.deadline,
            traceparent: request.traceparent,
        }
    }

    /// This context with a deadline `budget` from now, as if the caller had
    /// sent it (for calling a handler directly, as in tests).
    #[must_use]
    pub fn with_deadline(mut self, budget: Duration) -> Self {
        self.deadline = Some(Instant::now() + budget);
        self
    }

    /// The request's id on its connection (0 for a one-way message).
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The method's name, [`Method::NAME`].
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// When the caller stops waiting for the answer, if it said (its
    /// `deadline` header, counted from the request's arrival). The
    /// dispatcher drops the handler then; its request timeout still bounds
    /// the handler too.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The time left until the deadline (zero once it has passed); `None`
    /// without one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }

    /// The caller's W3C `traceparent` text, if it sent a well-formed one.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_ref().map(Traceparent::as_str)
    }

    /// The caller's trace context, parsed.
    pub fn trace_context(&self) -> Option<Traceparent> {
        self.traceparent
    }
}

/// A typed request as a [`tower::Service`] handler gets it: the
/// [`Context`] and the value.
pub struct Request<M: Method> {
    context: Context,
    value: M::Request,
}

impl<M: Method> Request<M> {
    /// A request of `value` in `context`.
    pub fn new(context: Context, value: M::Request) -> Self {
        Self { context, value }
    }

    /// The request's context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The request's value.
    pub fn value(&self) -> &M::Request {
        &self.value
    }

    /// The context and the value.
    pub fn into_parts(self) -> (Context, M::Request) {
        (self.context, self.value)
    }
}

impl<M: Method> fmt::Debug for Request<M>
where
    M::Request: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("context", &self.context)
            .field("value", &self.value)
            .finish()
    }
}

impl<M: Method> Clone for Request<M>
where
    M::Request: Clone,
{
    fn clone(&self) -> Self {
        Self {
            context: self.context.clone(),
            value: self.value.clone(),
        }
    }
}
