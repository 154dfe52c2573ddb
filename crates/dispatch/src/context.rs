//! What a context handler learns about its request besides the payload.

use std::time::Duration;

use netproto_crypto::PublicKey;
use netproto_wire::{Headers, MessageType, Traceparent};
use tokio::time::Instant;

/// The request a handler registered with
/// [`Dispatcher::register_with_context`](crate::Dispatcher::register_with_context)
/// is serving: its id and type, and what its header block (PROTOCOL.md
/// Part III §2) said.
///
/// Cancellation needs no field: a handler is cancelled by dropping its
/// future, which [`serve`](crate::Dispatcher::serve) does when the request
/// times out, its deadline passes, or the requester sends a cancel frame.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// The request's id on its connection (0 for a one-way message).
    pub request_id: u64,
    /// The request's message type.
    pub msg_type: MessageType,
    /// When the requester stops waiting: the request's arrival plus its
    /// `deadline` header. `None` without one.
    pub deadline: Option<Instant>,
    /// The requester's W3C trace context, if it sent a well-formed one.
    pub traceparent: Option<Traceparent>,
    /// The schema fingerprint the requester expects (typed methods).
    pub fingerprint: Option<u64>,
    /// The requester's static key, authenticated by the Noise handshake of
    /// the connection the request came on; `None` in the other modes, and
    /// for [`dispatch`](crate::Dispatcher::dispatch) outside
    /// [`serve`](crate::Dispatcher::serve).
    pub peer_key: Option<PublicKey>,
}

impl RequestContext {
    /// The context of a request without headers.
    pub fn new(request_id: u64, msg_type: MessageType) -> Self {
        Self {
            request_id,
            msg_type,
            deadline: None,
            traceparent: None,
            fingerprint: None,
            peer_key: None,
        }
    }

    /// The context of a request with `headers`, whose deadline (computed
    /// from them on arrival) is `deadline`, from the peer with `peer_key`.
    pub(crate) fn from_headers(
        request_id: u64,
        msg_type: MessageType,
        headers: Option<&Headers>,
        deadline: Option<Instant>,
        peer_key: Option<PublicKey>,
    ) -> Self {
        let mut context = Self::new(request_id, msg_type);
        context.peer_key = peer_key;
        if let Some(headers) = headers {
            context.deadline = deadline;
            context.traceparent = headers.traceparent;
            context.fingerprint = headers.fingerprint;
        }
        context
    }

    /// The time left until the deadline (zero once it has passed); `None`
    /// without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
    }
}

/// The deadline of a request with `headers` arriving now; `None` without a
/// `deadline` field, or when it is beyond what the clock can represent.
pub(crate) fn deadline_of(headers: Option<&Headers>) -> Option<Instant> {
    let ms = headers?.deadline?;
    Instant::now().checked_add(Duration::from_millis(ms))
}
