//! The inbound queue and the [`Receiver`] that takes from it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::{Incoming, Shared};
use crate::Error;
use crate::sync::{lock, wait_until};

/// The inbound queue: what the reader decoded, waiting for the application.
/// The reader appends everything from one read under one lock.
pub(super) struct Inbound {
    state: Mutex<InState>,
    /// Wakes the receiver when items arrive or the reader ends.
    pub(super) ready: Notify,
    /// Wakes the reader when the queue has room again.
    pub(super) space: Notify,
    pub(super) limit: usize,
}

#[derive(Default)]
pub(super) struct InState {
    pub(super) items: VecDeque<Incoming>,
    /// Items the receiver has taken into its own batch and may not have
    /// consumed yet; they count against the limit until it comes back.
    taken: usize,
    /// The reader waits for room.
    pub(super) reader_waiting: bool,
    /// The reader has ended: no more items will come.
    pub(super) ended: bool,
    /// The receiver was dropped: nobody listens.
    pub(super) receiver_gone: bool,
}

impl Inbound {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(InState::default()),
            ready: Notify::new(),
            space: Notify::new(),
            limit,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, InState> {
        lock(&self.state)
    }
}

impl InState {
    /// Items the application has not consumed yet, as far as the reader knows.
    pub(super) fn held(&self) -> usize {
        self.items.len() + self.taken
    }
}

/// Moves everything from `batch` to the end of `queue`; swaps the two when
/// `queue` is empty, so a receiver that keeps up costs no copying.
pub(super) fn append(queue: &mut VecDeque<Incoming>, batch: &mut VecDeque<Incoming>) {
    if queue.is_empty() {
        std::mem::swap(queue, batch);
    } else {
        queue.append(batch);
    }
}

/// Receives what the peer sends.
pub struct Receiver {
    inbound: Arc<Inbound>,
    shared: Arc<Shared>,
    /// Items taken from the inbound queue in one go, handed out one by one.
    local: VecDeque<Incoming>,
    done: bool,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inbound.lock().receiver_gone = true;
        self.inbound.space.notify_one();
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    pub(super) fn new(inbound: Arc<Inbound>, shared: Arc<Shared>) -> Self {
        Self {
            inbound,
            shared,
            local: VecDeque::new(),
            done: false,
        }
    }

    /// The next message or control frame.
    ///
    /// Returns `Ok(None)` once the peer has closed the connection cleanly
    /// (at a frame boundary), and for every call after the end.
    ///
    /// # Errors
    ///
    /// The reason the connection failed (a timeout, a protocol violation, a
    /// failed record...), once; then `Ok(None)`.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, Error> {
        if let Some(item) = self.local.pop_front() {
            return Ok(Some(item));
        }
        if self.done {
            return Ok(None);
        }
        // Fast path: something is queued; no waiter registration needed.
        if let Some(item) = self.refill() {
            return item;
        }
        let inbound = self.inbound.clone();
        wait_until(&inbound.ready, || self.refill()).await
    }

    /// Takes everything queued into the local batch (one lock for many
    /// items) and returns the first, or the end of the stream; `None` when
    /// nothing is queued yet.
    fn refill(&mut self) -> Option<Result<Option<Incoming>, Error>> {
        let (ended, wake_reader) = {
            let mut state = self.inbound.lock();
            // The previous batch is consumed: what we take now is what we hold.
            std::mem::swap(&mut state.items, &mut self.local);
            state.taken = self.local.len();
            let wake = state.reader_waiting && state.held() < self.inbound.limit;
            if wake {
                state.reader_waiting = false;
            }
            (state.ended, wake)
        };
        if wake_reader {
            self.inbound.space.notify_one();
        }
        if let Some(item) = self.local.pop_front() {
            return Some(Ok(Some(item)));
        }
        if ended {
            self.done = true;
            return Some(match self.shared.take_error() {
                Some(Error::PeerClosed) | None => Ok(None),
                Some(error) => Err(error),
            });
        }
        None
    }
}
