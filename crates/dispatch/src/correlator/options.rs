//! Per-request options: the header block of PROTOCOL.md Part III §2, and
//! the cancel frame sent for a request its caller stopped waiting for.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netproto_transport::Sender;
use netproto_wire::{DataFlags, Envelope, Frame, Headers, MessageType, Traceparent};

use super::state::Shared;

/// What a request carries besides its payload, in its header block
/// (PROTOCOL.md Part III §2), for
/// [`Correlator::request_raw_with`](super::Correlator::request_raw_with).
///
/// A request with no option set is sent without a header block, exactly as
/// [`request_raw`](super::Correlator::request_raw) sends it.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use netproto_dispatch::RequestOptions;
///
/// let options = RequestOptions::default()
///     .deadline(Duration::from_millis(250))
///     .fingerprint(0xa3ed_a7f4_e8b9_0757);
/// assert_eq!(options.deadline, Some(Duration::from_millis(250)));
/// assert!(!options.is_empty());
/// assert!(RequestOptions::default().is_empty());
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// The time the request has: sent as its `deadline` (in whole
    /// milliseconds, rounded down, so that the server's deadline is never
    /// later than the caller's), and the local timeout when it is shorter
    /// than the correlator's.
    pub deadline: Option<Duration>,
    /// The W3C trace context the request belongs to.
    pub traceparent: Option<Traceparent>,
    /// The schema fingerprint of the method's types (typed methods).
    pub fingerprint: Option<u64>,
}

impl RequestOptions {
    /// These options with a deadline `budget` from now.
    #[must_use]
    pub fn deadline(mut self, budget: Duration) -> Self {
        self.deadline = Some(budget);
        self
    }

    /// These options with a trace context.
    #[must_use]
    pub fn traceparent(mut self, traceparent: Traceparent) -> Self {
        self.traceparent = Some(traceparent);
        self
    }

    /// These options with a schema fingerprint.
    #[must_use]
    pub fn fingerprint(mut self, fingerprint: u64) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    /// Whether no option is set: the request goes without a header block.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The request envelope: with a header block in front of `payload`
    /// (a copy) and the `HEADERS` flag when an option is set or a `stream`
    /// credit is asked, as it is otherwise. `budget` is the deadline left now.
    pub(super) fn envelope(
        &self,
        id: u64,
        msg_type: MessageType,
        payload: Bytes,
        budget: Option<Duration>,
        stream: Option<u32>,
    ) -> Envelope {
        if self.is_empty() && stream.is_none() {
            return Envelope::new(id, msg_type, payload);
        }
        let mut headers = Headers::default();
        headers.stream = stream;
        headers.deadline = budget.map(|left| u64::try_from(left.as_millis()).unwrap_or(u64::MAX));
        headers.traceparent = self.traceparent;
        headers.fingerprint = self.fingerprint;
        let mut body = BytesMut::with_capacity(headers.encoded_len() + payload.len());
        headers.encode(&mut body);
        body.extend_from_slice(&payload);
        Envelope::new(id, msg_type, body.freeze()).with_flags(DataFlags::HEADERS)
    }
}

/// Sends the peer a cancel frame for request `id` and counts it, from a
/// task of its own: a drop never blocks.
pub(super) fn send_cancel(shared: &Shared, sender: &Sender, id: u64) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    shared.cancelled.fetch_add(1, Ordering::Relaxed);
    let sender = sender.clone();
    runtime.spawn(async move {
        if let Err(error) = sender.send_frame(Frame::Cancel(id)).await {
            tracing::debug!(request_id = id, %error, "cancel not sent");
        }
    });
}

/// Forgets a pending request when its caller stops waiting, and tells the
/// peer with a cancel frame when the request had been sent.
pub(super) struct Forget<'a> {
    pub(super) shared: &'a Shared,
    pub(super) sender: &'a Sender,
    pub(super) id: u64,
    /// The request still waits for its answer.
    pub(super) armed: bool,
    /// The request was queued: the peer may be working on it.
    pub(super) sent: bool,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        if !self.armed || self.shared.take(self.id).is_none() || !self.sent {
            return;
        }
        tracing::debug!(request_id = self.id, "request dropped: cancelling it");
        send_cancel(self.shared, self.sender, self.id);
    }
}
