//! Sending one server stream (PROTOCOL.md Part III §4): items within the
//! requester's credit, then an end or an error frame.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use netproto_transport::Sender;
use netproto_wire::{DataFlags, Envelope, ErrorCode, Frame};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use crate::answer::{Counters, Limits, send_outcome};
use crate::dispatcher::{Outcome, Producer};
use crate::handler::{BoxStream, HandlerError, panicked};

/// The credit of one server stream: items the requester has granted and
/// the responder has not spent yet. The serve loop adds what credit frames
/// grant; the stream's task takes it all at once and spends it locally, so
/// an item costs no atomic operation while credit lasts.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    items: AtomicU32,
    granted: Notify,
}

impl Credit {
    pub(crate) fn new(items: u32) -> Self {
        Self {
            items: AtomicU32::new(items),
            granted: Notify::new(),
        }
    }

    /// Adds `items` (the sum saturates at `u32::MAX`) and wakes the stream.
    pub(crate) fn grant(&self, items: u32) {
        let _ = self
            .items
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(items))
            });
        // Stores a permit when the stream is not waiting: no grant is lost.
        self.granted.notify_one();
    }

    /// Takes all the credit there is, waiting while there is none.
    async fn take(&self) -> u32 {
        loop {
            let items = self.items.swap(0, Ordering::AcqRel);
            if items > 0 {
                return items;
            }
            self.granted.notified().await;
        }
    }
}

/// Why a stream stopped before its end.
enum Stopped {
    /// The handler yielded an error item.
    Failed(HandlerError),
    /// The handler took longer than this to yield its next item.
    Idle(Duration),
    /// The connection takes nothing more.
    Unsent,
}

/// Sends the stream of request `request_id` under its deadline, then its
/// end or error frame, and counts it (an end as a reply). Returns the
/// request's id.
pub(crate) async fn run_stream(
    request_id: u64,
    producer: Producer,
    credit: Arc<Credit>,
    limits: Limits,
    sender: Sender,
    counters: Arc<Counters>,
    permit: Option<OwnedSemaphorePermit>,
) -> u64 {
    let Producer {
        msg_type, items, ..
    } = producer;
    let sending = send_items(
        request_id,
        &msg_type,
        items,
        &credit,
        limits.timeout,
        &sender,
    );
    let finished = match limits.deadline {
        None => Ok(sending.await),
        Some(deadline) => tokio::time::timeout_at(deadline, sending).await,
    };
    let outcome = match finished {
        Ok(Ok(())) => match sender.send_frame(Frame::End(request_id)).await {
            Ok(()) => {
                Counters::add(&counters.replies);
                counters.metrics.replies.increment(1);
                Outcome::NoReply
            }
            Err(error) => {
                tracing::debug!(%error, "end frame not sent");
                Outcome::NoReply
            }
        },
        Ok(Err(Stopped::Failed(error))) => {
            let (code, message) = error.into_parts();
            Outcome::error(request_id, code, message)
        }
        Ok(Err(Stopped::Idle(timeout))) => {
            tracing::debug!(?timeout, "stream handler timed out");
            Outcome::error(
                request_id,
                ErrorCode::TIMEOUT,
                format!("stream handler yielded no item within {timeout:?}"),
            )
        }
        Ok(Err(Stopped::Unsent)) => Outcome::NoReply,
        Err(_) => counters.deadline_exceeded(request_id, "before the stream's end"),
    };
    send_outcome(&sender, outcome, &counters).await;
    drop(permit);
    request_id
}

/// Sends every item of `items`, each within the credit, until the stream
/// ends.
async fn send_items(
    request_id: u64,
    msg_type: &netproto_wire::MessageType,
    mut items: BoxStream<Result<bytes::Bytes, HandlerError>>,
    credit: &Credit,
    timeout: Duration,
    sender: &Sender,
) -> Result<(), Stopped> {
    let mut left = 0_u32;
    loop {
        if left == 0 {
            left = credit.take().await;
        }
        // The producer is polled only with credit in hand: a requester that
        // stops reading stops it. A timer is armed only when it makes us wait.
        let mut next = std::pin::pin!(std::future::poll_fn(|cx| {
            catch_unwind(AssertUnwindSafe(|| items.as_mut().poll_next(cx)))
                .unwrap_or_else(|payload| Poll::Ready(Some(Err(panicked(payload.as_ref())))))
        }));
        let ready = std::future::poll_fn(|cx| Poll::Ready(next.as_mut().poll(cx))).await;
        let next = match ready {
            Poll::Ready(next) => next,
            Poll::Pending => tokio::time::timeout(timeout, next)
                .await
                .map_err(|_| Stopped::Idle(timeout))?,
        };
        let item = match next {
            Some(Ok(item)) => item,
            Some(Err(error)) => return Err(Stopped::Failed(error)),
            None => return Ok(()),
        };
        let envelope =
            Envelope::new(request_id, msg_type.clone(), item).with_flags(DataFlags::STREAM);
        match sender.send(envelope).await {
            Ok(()) => left = left.saturating_sub(1),
            Err(netproto_transport::Error::Protocol(error)) => {
                tracing::debug!(%error, "stream item too large for the peer");
                return Err(Stopped::Failed(HandlerError::new(
                    ErrorCode::TOO_LARGE,
                    "stream item exceeds the peer's frame limit",
                )));
            }
            Err(error) => {
                tracing::debug!(%error, "stream item not sent");
                return Err(Stopped::Unsent);
            }
        }
    }
}
