//! The correlator's shared state: pending requests and their deadlines.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use netproto_transport::sync::{lock, wait_until};
use netproto_wire::{Envelope, ErrorCode};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::Error;

pub(super) type Waiter = oneshot::Sender<Result<Envelope, Error>>;

/// A request waiting for its answer.
pub(super) struct Pending {
    pub(super) waiter: Waiter,
    /// When it times out.
    pub(super) deadline: Instant,
    /// Its timeout, for the error.
    pub(super) timeout: Duration,
    /// The request's own deadline, shorter than the request timeout, is
    /// what `deadline` is.
    pub(super) by_deadline: bool,
}

/// Hashes request ids, which this side chooses (sequentially): a
/// multiplicative hash spreads them well, at a fraction of SipHash's cost.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Why new requests cannot be sent.
pub(super) enum Closed {
    /// [`Correlator::close`] was called.
    Locally,
    /// The connection ended, for this reason.
    Lost(Arc<netproto_transport::Error>),
}

#[derive(Default)]
pub(super) struct State {
    /// Requests sent and not yet answered, by id.
    pub(super) pending: HashMap<u64, Pending, BuildHasherDefault<IdHasher>>,
    /// Server streams in flight (not yet ended), by request id.
    pub(super) streams: HashMap<u64, super::stream::Slot, BuildHasherDefault<IdHasher>>,
    /// When the timeout sweeper wakes next: at the latest, the earliest
    /// deadline pending when it last looked (`None`: it waits for a request).
    pub(super) armed: Option<Instant>,
    /// The peer's goaway, once received.
    pub(super) goaway: Option<(u64, ErrorCode)>,
    /// Set once no new request may be sent.
    pub(super) closed: Option<Closed>,
}

pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    /// Notified when the last pending request is answered or forgotten.
    pub(super) idle: Notify,
    /// Wakes the timeout sweeper when a request's deadline comes before
    /// the one it sleeps until.
    pub(super) sweep: Notify,
    pub(super) cancelled: AtomicU64,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Removes the pending request `id`, waking [`Correlator::close`] when
    /// it was the last.
    pub(super) fn take(&self, id: u64) -> Option<Waiter> {
        let mut state = self.lock();
        let waiter = state.pending.remove(&id);
        if waiter.is_some() && state.pending.is_empty() {
            self.idle.notify_waiters();
        }
        waiter.map(|pending| pending.waiter)
    }

    /// Removes every pending request whose id matches `abandon`.
    pub(super) fn take_all(&self, abandon: impl Fn(u64) -> bool) -> Vec<Waiter> {
        let mut state = self.lock();
        let ids: Vec<u64> = state
            .pending
            .keys()
            .copied()
            .filter(|id| abandon(*id))
            .collect();
        let waiters = ids
            .iter()
            .filter_map(|id| state.pending.remove(id))
            .map(|pending| pending.waiter)
            .collect();
        if state.pending.is_empty() {
            self.idle.notify_waiters();
        }
        waiters
    }

    /// Fails every request whose deadline has passed, and re-arms the
    /// sweeper for the earliest deadline left.
    pub(super) fn expire(&self, now: Instant) {
        let expired: Vec<Pending> = {
            let mut state = self.lock();
            let ids: Vec<u64> = state
                .pending
                .iter()
                .filter(|(_, pending)| pending.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired = ids
                .iter()
                .filter_map(|id| state.pending.remove(id))
                .collect();
            state.armed = state.pending.values().map(|p| p.deadline).min();
            if state.pending.is_empty() {
                self.idle.notify_waiters();
            }
            expired
        };
        for pending in expired {
            tracing::debug!("request timed out");
            let error = if pending.by_deadline {
                Error::DeadlineExceeded(pending.timeout)
            } else {
                Error::Timeout(pending.timeout)
            };
            let _ = pending.waiter.send(Err(error));
        }
    }

    /// The timeout sweeper: one sleeping task per connection instead of a
    /// timer per request. It sleeps until the earliest deadline it knows of;
    /// a request answered in time costs it nothing.
    pub(super) async fn sweep(self: Arc<Self>) {
        loop {
            let armed = self.lock().armed;
            // Whoever moves the deadline earlier notifies `sweep`.
            let rearmed = wait_until(&self.sweep, || (self.lock().armed != armed).then_some(()));
            match armed {
                None => rearmed.await,
                Some(at) => {
                    tokio::select! {
                        () = rearmed => {}
                        () = tokio::time::sleep_until(at) => self.expire(Instant::now()),
                    }
                }
            }
        }
    }

    /// Waits until no request is pending.
    pub(super) async fn wait_idle(&self) {
        wait_until(&self.idle, || self.lock().pending.is_empty().then_some(())).await;
    }
}
