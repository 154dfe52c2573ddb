//! One member as this one reaches it: its connection (dialed when a
//! packet is to be sent, or when the member comes up), the membership
//! packets carried on it, the requests sent on it, and its state as SWIM
//! last said.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use netproto_crypto::PublicKey;
use netproto_dispatch::Correlator;
use netproto_transport::sync::lock;
use netproto_wire::Message;
use tokio::sync::{Notify, mpsc, watch};

use super::swim::Peer;
use super::{Events, MembershipEvent, PeerId, PeerState, PeerView};
use crate::client::Dialer;
use crate::{Error, Result};

/// The message type membership packets travel under (one-way).
pub(super) const SWIM_TYPE: &str = "netproto.swim.v1";

/// Membership packets waiting for a member's connection; more are dropped
/// (SWIM takes losses).
pub(super) const PACKETS: usize = 64;

/// What SWIM last said of the member, and whether it was ever reached.
#[derive(Debug)]
struct Status {
    swim: PeerState,
    reached: bool,
    since: Instant,
    last_seen: Option<Instant>,
    rtt: Option<Duration>,
    incarnation: u16,
    key: Option<PublicKey>,
}

impl Status {
    /// The state shown: alive only once reached.
    fn state(&self) -> PeerState {
        match self.swim {
            PeerState::Alive if !self.reached => PeerState::Joining,
            state => state,
        }
    }
}

/// The current connection to a member. Dropping it (when the connection is
/// lost or the member declared dead) fails the requests in flight on it.
#[derive(Debug)]
struct Live {
    correlator: Arc<Correlator>,
    /// Never sent: requests watch for it to be dropped.
    gone: watch::Sender<()>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The member sent a goaway or left: requests in flight still complete.
    Graceful,
    /// The connection failed.
    Abrupt,
}

/// One member: its connection, its state, its packets.
pub(crate) struct Link {
    id: PeerId,
    address: String,
    dialer: Dialer,
    events: Arc<Events>,
    status: Mutex<Status>,
    live: Mutex<Option<Live>>,
    in_flight: AtomicUsize,
    packets: mpsc::Sender<Bytes>,
    /// Asks the carrier to connect now.
    wake: Notify,
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("id", &self.id)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// Member `id` at `address`, joining, not connected; the receiver goes
    /// to [`carry`](Self::carry).
    pub(super) fn new(
        id: PeerId,
        address: String,
        dialer: Dialer,
        events: Arc<Events>,
    ) -> (Self, mpsc::Receiver<Bytes>) {
        let (packets, queue) = mpsc::channel(PACKETS);
        let status = Status {
            swim: PeerState::Joining,
            reached: false,
            since: Instant::now(),
            last_seen: None,
            rtt: None,
            incarnation: 0,
            key: None,
        };
        let link = Self {
            id,
            address,
            dialer,
            events,
            status: Mutex::new(status),
            live: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            packets,
            wake: Notify::new(),
        };
        (link, queue)
    }

    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    pub(crate) fn state(&self) -> PeerState {
        lock(&self.status).state()
    }

    /// The member's address (without the pinned key).
    pub(super) fn address(&self) -> &str {
        &self.address
    }

    /// Time allowed for the answer to one request (`client.response_timeout`).
    pub(super) fn response_timeout(&self) -> Duration {
        self.dialer.response_timeout()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn view(&self) -> PeerView {
        let status = lock(&self.status);
        PeerView {
            id: self.id,
            address: self.address.clone(),
            state: status.state(),
            since: status.since,
            last_seen: status.last_seen,
            rtt: status.rtt,
            incarnation: status.incarnation,
            in_flight: self.in_flight(),
            key: status.key,
        }
    }

    /// Queues a membership packet for the member; dropped when the queue is
    /// full.
    pub(super) fn send(&self, packet: Bytes) {
        if self.packets.try_send(packet).is_err() {
            tracing::trace!(peer = %self.address, "membership packet dropped");
        }
    }

    /// Sends a membership packet now, connecting first if needed (for a
    /// departure, sent just before membership stops).
    pub(super) async fn send_now(&self, packet: Bytes) {
        let correlator = match self.current() {
            Some(correlator) => Some(correlator),
            None => self.connect().await,
        };
        if let (Some(correlator), Ok(message)) = (correlator, Message::custom(SWIM_TYPE, packet)) {
            let _ = correlator.send_oneway(&message).await;
        }
    }

    /// Takes what SWIM says of the member: its state (published on a
    /// change), last sign of life and round trip.
    pub(super) fn update(&self, peer: &Peer) {
        let (before, after, changed) = {
            let mut status = lock(&self.status);
            let before = status.state();
            let changed = status.swim != peer.state;
            if changed {
                status.swim = peer.state;
                status.since = peer.since;
            }
            status.last_seen = peer.last_seen;
            status.rtt = peer.rtt.or(status.rtt);
            status.incarnation = peer.incarnation;
            (before, status.state(), changed)
        };
        if changed {
            // Gone: it must be reached again to be shown alive.
            if matches!(peer.state, PeerState::Dead | PeerState::Left) {
                lock(&self.status).reached = false;
            }
            match peer.state {
                PeerState::Dead => self.disconnect(),
                PeerState::Left => {
                    if let Some(correlator) = self.current() {
                        self.lost(&correlator, Ending::Graceful);
                    }
                }
                PeerState::Alive if lock(&self.live).is_none() => self.wake.notify_one(),
                _ => {}
            }
        }
        self.publish(before, after);
    }

    /// Sends one request on the current connection.
    pub(crate) async fn request(&self, message: &Message, timeout: Duration) -> Result<Message> {
        let (correlator, mut gone) = match lock(&self.live).as_ref() {
            Some(live) => (live.correlator.clone(), live.gone.subscribe()),
            None => {
                return Err(Error::Unavailable {
                    endpoint: self.address.clone(),
                    state: self.state(),
                });
            }
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _in_flight = InFlight(&self.in_flight);
        let result = tokio::select! {
            // An answer that has arrived wins over the end of the connection.
            biased;
            result = correlator.request_with_timeout(message, timeout) => result,
            // The sender is never used: this returns when it is dropped.
            _ = gone.changed() => {
                return Err(Error::EndpointDown { endpoint: self.address.clone(), cause: None });
            }
        };
        match result {
            Ok(answer) => Ok(answer),
            Err(remote @ netproto_dispatch::Error::Remote { .. }) => Err(remote.into()),
            // Closed only by us, after a goaway, and refused before sending.
            Err(netproto_dispatch::Error::Closed) => Err(Error::Unavailable {
                endpoint: self.address.clone(),
                state: self.state(),
            }),
            Err(cause @ netproto_dispatch::Error::Disconnected(_)) => {
                self.lost(&correlator, Ending::Abrupt);
                Err(Error::EndpointDown {
                    endpoint: self.address.clone(),
                    cause: Some(cause),
                })
            }
            Err(going @ netproto_dispatch::Error::GoingAway { .. }) => {
                // Not processed: the member said so. Reconnect.
                self.lost(&correlator, Ending::Graceful);
                Err(going.into())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// The connection `dead` ended: forget it, if it is still the current
    /// one. After a goaway, the requests the member still answers keep the
    /// old connection until they complete; after an abrupt end, every
    /// request in flight on it fails at once. The next packet reconnects.
    fn lost(&self, dead: &Arc<Correlator>, ending: Ending) {
        let forgotten = {
            let mut live = lock(&self.live);
            if live
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(&l.correlator, dead))
            {
                live.take()
            } else {
                None
            }
        };
        if let (Some(live), Ending::Graceful) = (forgotten, ending) {
            tokio::spawn(async move {
                // Waits for the requests the member still answers.
                let _ = live.correlator.close().await;
                drop(live);
            });
        }
    }

    /// Tells subscribers about a change of the state shown, and logs it.
    fn publish(&self, before: PeerState, after: PeerState) {
        if before == after {
            return;
        }
        let (address, peer) = (self.address.clone(), self.id);
        let event = match after {
            PeerState::Alive => {
                tracing::info!(peer = %address, "member up");
                MembershipEvent::PeerUp { peer, address }
            }
            PeerState::Suspect => {
                tracing::info!(peer = %address, "member suspect");
                MembershipEvent::Suspect { peer, address }
            }
            PeerState::Dead => {
                tracing::warn!(peer = %address, "member down");
                MembershipEvent::PeerDown { peer, address }
            }
            PeerState::Left => {
                tracing::info!(peer = %address, "member left");
                MembershipEvent::PeerLeft { peer, address }
            }
            PeerState::Joining => {
                self.events.changed.send_modify(|version| *version += 1);
                return;
            }
        };
        // No subscriber is fine.
        let _ = self.events.sender.send(event);
        self.events.changed.send_modify(|version| *version += 1);
    }

    fn current(&self) -> Option<Arc<Correlator>> {
        lock(&self.live).as_ref().map(|l| l.correlator.clone())
    }

    /// One connection attempt; a success marks the member reached.
    async fn connect(&self) -> Option<Arc<Correlator>> {
        match self.dialer.dial(&self.address).await {
            Ok((correlator, key)) => {
                let correlator = Arc::new(correlator);
                *lock(&self.live) = Some(Live {
                    correlator: correlator.clone(),
                    gone: watch::channel(()).0,
                });
                let (before, after) = {
                    let mut status = lock(&self.status);
                    let before = status.state();
                    status.key = key;
                    status.reached = true;
                    (before, status.state())
                };
                self.publish(before, after);
                Some(correlator)
            }
            Err(error) => {
                tracing::debug!(peer = %self.address, %error, "connection attempt failed");
                None
            }
        }
    }

    /// Drops the connection: requests in flight on it fail.
    fn disconnect(&self) {
        let live = lock(&self.live).take();
        drop(live);
    }

    /// Carries membership packets to the member until the cluster stops,
    /// connecting when one is to be sent (or when asked to). The packets
    /// queued while a connection attempt failed are dropped with it.
    pub(super) async fn carry(self: Arc<Self>, mut queue: mpsc::Receiver<Bytes>) {
        loop {
            let packet = tokio::select! {
                packet = queue.recv() => match packet {
                    Some(packet) => Some(packet),
                    None => return,
                },
                () = self.wake.notified() => None,
            };
            let correlator = match self.current() {
                Some(correlator) => correlator,
                None => match self.connect().await {
                    Some(correlator) => correlator,
                    None => {
                        while queue.try_recv().is_ok() {}
                        continue;
                    }
                },
            };
            let Some(message) = packet.and_then(|p| Message::custom(SWIM_TYPE, p).ok()) else {
                continue;
            };
            if let Err(error) = correlator.send_oneway(&message).await {
                tracing::debug!(peer = %self.address, %error, "membership packet not sent");
                self.lost(&correlator, Ending::Abrupt);
            }
        }
    }
}

/// Counts one request in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
