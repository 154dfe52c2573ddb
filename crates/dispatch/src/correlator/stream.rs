//! The requester's side of server streams (PROTOCOL.md Part III §4): items
//! routed by request id into a bounded buffer per stream, credit granted
//! again as the application consumes them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use netproto_transport::Sender;
use netproto_wire::{Credit, Frame};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use super::state::Shared;
use crate::Error;

/// Largest initial credit [`Correlator::request_stream`](super::Correlator::request_stream)
/// grants: a stream buffers at most this many items.
pub const MAX_STREAM_CREDIT: u32 = 1 << 20;

/// What the reader keeps of a stream in flight.
pub(super) struct Slot {
    /// The stream's buffer: at most its credit in items, and one more
    /// place for the error that ends it.
    items: mpsc::Sender<Result<Bytes, Error>>,
    /// Credit granted so far, in items: the initial credit and every
    /// credit frame, counted before the frame is sent.
    granted: Arc<AtomicU64>,
    /// Items received so far.
    received: u64,
}

/// An item sent beyond the credit its requester granted: a protocol error
/// that ends the connection.
#[derive(Debug)]
pub(super) struct BeyondCredit(pub(super) u64);

impl Shared {
    /// Routes a `STREAM` item for request `id`; an item for no stream in
    /// flight (one cancelled, say) is discarded.
    pub(super) fn stream_item(&self, id: u64, item: Bytes) -> Result<(), BeyondCredit> {
        let mut state = self.lock();
        let Some(slot) = state.streams.get_mut(&id) else {
            tracing::debug!(request_id = id, "stream item for no stream in flight");
            return Ok(());
        };
        if slot.received >= slot.granted.load(Ordering::Acquire) {
            return Err(BeyondCredit(id));
        }
        slot.received += 1;
        // Room is certain: the buffer holds the credit not yet consumed.
        slot.items.try_send(Ok(item)).map_err(|_| BeyondCredit(id))
    }

    /// Ends the stream of request `id` after `last` (a plain answer, or
    /// the error that fails it); false when there is no such stream.
    pub(super) fn stream_end(&self, id: u64, last: Option<Result<Bytes, Error>>) -> bool {
        let Some(slot) = self.lock().streams.remove(&id) else {
            return false;
        };
        if let Some(last) = last {
            // The place kept for the last item: never full.
            let _ = slot.items.try_send(last);
        }
        true
    }

    /// Fails every stream whose id matches `abandon` with `error()`.
    pub(super) fn streams_fail(&self, abandon: impl Fn(u64) -> bool, error: impl Fn() -> Error) {
        let slots: Vec<Slot> = {
            let mut state = self.lock();
            let ids: Vec<u64> = state
                .streams
                .keys()
                .copied()
                .filter(|id| abandon(*id))
                .collect();
            ids.iter()
                .filter_map(|id| state.streams.remove(id))
                .collect()
        };
        for slot in slots {
            let _ = slot.items.try_send(Err(error()));
        }
    }
}

/// A server stream's items as they arrive: what
/// [`Correlator::request_stream`](super::Correlator::request_stream)
/// returns.
///
/// It yields each item's payload in order and ends (`None`) at the
/// responder's end frame; an error frame, a connection lost, or the
/// request's deadline passing yields one `Err` and ends it. It buffers at
/// most the initial credit in items: each time the application has taken
/// half of it, the same number of items is granted again with a credit
/// frame, so a consumer that stops reading stops the responder's producer,
/// and nothing else on the connection. Dropping it before its end sends a
/// cancel frame, and the responder drops its producer.
#[derive(Debug)]
pub struct ServerStream {
    items: mpsc::Receiver<Result<Bytes, Error>>,
    shared: Arc<Shared>,
    sender: Sender,
    id: u64,
    granted: Arc<AtomicU64>,
    /// Items taken since the last grant.
    consumed: u32,
    /// Grant again when this many have been taken.
    regrant: u32,
    granting: Option<Granting>,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    /// The request was queued: the responder may be producing.
    pub(super) sent: bool,
    done: bool,
}

/// A credit frame on its way to the send queue.
struct Granting(Pin<Box<dyn Future<Output = ()> + Send>>);

impl std::fmt::Debug for Granting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Granting")
    }
}

impl ServerStream {
    /// Registers the stream of request `id` with `credit` (at least 1) and
    /// returns its requester's end; the request is not sent yet.
    pub(super) fn open(
        shared: &Arc<Shared>,
        sender: &Sender,
        id: u64,
        credit: u32,
        deadline: Option<Duration>,
    ) -> (Self, Slot) {
        // One more place than the credit, for the error that ends it.
        let capacity = usize::try_from(credit)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        let (tx, rx) = mpsc::channel(capacity);
        let granted = Arc::new(AtomicU64::new(u64::from(credit)));
        let slot = Slot {
            items: tx,
            granted: granted.clone(),
            received: 0,
        };
        let stream = Self {
            items: rx,
            shared: shared.clone(),
            sender: sender.clone(),
            id,
            granted,
            consumed: 0,
            regrant: (credit / 2).max(1),
            granting: None,
            deadline: deadline.map(|budget| (Box::pin(tokio::time::sleep(budget)), budget)),
            sent: false,
            done: false,
        };
        (stream, slot)
    }

    /// The request id of the stream.
    pub fn request_id(&self) -> u64 {
        self.id
    }

    /// Grants the items consumed since the last grant once they reach half
    /// the initial credit, and drives that credit frame to the send queue.
    fn grant(&mut self, cx: &mut Context<'_>) {
        if self.granting.is_none() && self.consumed >= self.regrant {
            let items = std::mem::take(&mut self.consumed);
            // Counted before it is sent: the reader must never see an item
            // the responder was allowed to send as beyond the credit.
            self.granted.fetch_add(u64::from(items), Ordering::AcqRel);
            let (sender, id) = (self.sender.clone(), self.id);
            self.granting = Some(Granting(Box::pin(async move {
                let credit = Frame::Credit(Credit::new(id, items));
                if let Err(error) = sender.send_frame(credit).await {
                    tracing::debug!(request_id = id, %error, "credit not sent");
                }
            })));
        }
        if let Some(granting) = &mut self.granting
            && granting.0.as_mut().poll(cx).is_ready()
        {
            self.granting = None;
        }
    }

    /// Forgets the stream; when the responder may still be producing,
    /// sends it a cancel frame (from a task: this never blocks).
    fn cancel(&mut self) {
        self.done = true;
        if self.shared.lock().streams.remove(&self.id).is_none() || !self.sent {
            return;
        }
        tracing::debug!(request_id = self.id, "stream dropped: cancelling it");
        super::options::send_cancel(&self.shared, &self.sender, self.id);
    }
}

impl futures_core::Stream for ServerStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        this.grant(cx);
        match this.items.poll_recv(cx) {
            Poll::Ready(Some(Ok(item))) => {
                this.consumed += 1;
                return Poll::Ready(Some(Ok(item)));
            }
            Poll::Ready(Some(Err(error))) => {
                this.done = true;
                return Poll::Ready(Some(Err(error)));
            }
            Poll::Ready(None) => {
                this.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if let Some((sleep, budget)) = &mut this.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            let budget = *budget;
            tracing::debug!(request_id = this.id, "stream deadline passed");
            this.cancel();
            return Poll::Ready(Some(Err(Error::DeadlineExceeded(budget))));
        }
        Poll::Pending
    }
}

impl Drop for ServerStream {
    fn drop(&mut self) {
        if !self.done {
            self.cancel();
        }
    }
}
