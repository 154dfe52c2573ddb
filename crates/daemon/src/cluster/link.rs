//! The I/O side of a cluster peer: its connection, its requests, and the
//! monitor task that sends heartbeats and feeds their outcomes to the
//! peer's [`Health`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netproto_crypto::PublicKey;
use netproto_dispatch::Correlator;
use netproto_transport::sync::lock;
use netproto_wire::Message;
use tokio::sync::{Notify, watch};

use super::health::{Health, PeerState, Step, Transition};
use super::{MembershipEvent, PeerId, PeerView, Shared};
use crate::backoff::Backoff;
use crate::client::Dialer;
use crate::{Error, Result};

/// A peer's health, and its key once known.
#[derive(Debug)]
struct Status {
    health: Health,
    key: Option<PublicKey>,
}

/// The current connection to a peer. Dropping it (when the connection is
/// lost or the peer is declared dead) fails the requests in flight on it.
#[derive(Debug)]
struct Live {
    correlator: Arc<Correlator>,
    /// Never sent: requests watch for it to be dropped.
    gone: watch::Sender<()>,
}

/// How a connection ended.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The peer sent a goaway: requests below its last id still complete.
    Graceful,
    /// The connection failed.
    Abrupt,
}

/// The outcome of one heartbeat.
enum Beat {
    /// Answered, after this round trip.
    Answered(Duration),
    /// No answer within the interval, or the connection attempt failed.
    Missed,
    /// The connection ended.
    Lost,
}

/// One peer: its connection, its health, its monitor's wake-up.
pub(crate) struct Link {
    id: PeerId,
    address: String,
    dialer: Dialer,
    shared: Arc<Shared>,
    status: Mutex<Status>,
    live: Mutex<Option<Live>>,
    in_flight: AtomicUsize,
    /// Wakes the monitor when a request saw the connection end.
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
    /// Peer `id` at `address`, joining, not connected yet.
    pub(super) fn new(id: PeerId, address: String, dialer: Dialer, shared: Arc<Shared>) -> Self {
        let health = Health::new(
            Instant::now(),
            shared.settings.suspect_after,
            shared.settings.dead_after,
        );
        Self {
            id,
            address,
            dialer,
            shared,
            status: Mutex::new(Status { health, key: None }),
            live: Mutex::new(None),
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    pub(crate) fn state(&self) -> PeerState {
        lock(&self.status).health.state()
    }

    /// The configured address (without the pinned key).
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

    /// Alive with a connection: may take new balanced requests.
    pub(crate) fn usable(&self) -> bool {
        self.state() == PeerState::Alive && lock(&self.live).is_some()
    }

    pub(super) fn view(&self) -> PeerView {
        let status = lock(&self.status);
        let health = &status.health;
        PeerView {
            id: self.id,
            address: self.address.clone(),
            state: health.state(),
            since: health.since(),
            last_seen: health.last_seen(),
            rtt: health.rtt(),
            missed: health.missed(),
            in_flight: self.in_flight(),
            key: status.key,
        }
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
            Ok(answer) => {
                self.seen();
                Ok(answer)
            }
            Err(remote @ netproto_dispatch::Error::Remote { .. }) => {
                self.seen();
                Err(remote.into())
            }
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
                // Not processed: the peer said so. Reconnect.
                self.lost(&correlator, Ending::Graceful);
                Err(going.into())
            }
            Err(other) => Err(other.into()),
        }
    }

    fn seen(&self) {
        lock(&self.status).health.seen(Instant::now());
    }

    /// The connection `dead` ended: forget it (if it is still the current
    /// one), suspect the peer and wake the monitor to reconnect.
    ///
    /// After a goaway, the requests the peer still answers keep the old
    /// connection until they complete; after an abrupt end, every request
    /// in flight on it fails at once.
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
        if let Some(live) = forgotten {
            if let Ending::Graceful = ending {
                tokio::spawn(async move {
                    // Waits for the requests the peer still answers.
                    let _ = live.correlator.close().await;
                    drop(live);
                });
            }
            let transition = lock(&self.status).health.connection_lost(Instant::now());
            self.publish(transition);
            self.wake.notify_one();
        }
    }

    /// Tells subscribers about a change of state, and logs it.
    fn publish(&self, transition: Option<Transition>) {
        let Some(Transition { to, .. }) = transition else {
            return;
        };
        let (address, peer) = (self.address.clone(), self.id);
        let (missed, rtt) = {
            let status = lock(&self.status);
            (status.health.missed(), status.health.rtt())
        };
        let event = match to {
            PeerState::Alive => {
                tracing::info!(peer = %address, ?rtt, "peer up");
                MembershipEvent::PeerUp { peer, address }
            }
            PeerState::Suspect => {
                tracing::info!(peer = %address, missed, "peer suspect");
                MembershipEvent::Suspect { peer, address }
            }
            PeerState::Dead | PeerState::Joining => {
                tracing::warn!(peer = %address, missed, "peer down");
                MembershipEvent::PeerDown { peer, address }
            }
        };
        // No subscriber is fine.
        let _ = self.shared.events.send(event);
        self.shared.changed.send_modify(|version| *version += 1);
    }

    fn current(&self) -> Option<Arc<Correlator>> {
        lock(&self.live).as_ref().map(|l| l.correlator.clone())
    }

    /// One heartbeat: a ping request on `correlator`, answered within one
    /// interval.
    async fn ping(&self, correlator: &Arc<Correlator>) -> Beat {
        let interval = self.shared.settings.heartbeat_interval;
        let start = Instant::now();
        match correlator
            .request_with_timeout(&Message::Ping, interval)
            .await
        {
            // An error frame (say, no PING handler) is a sign of life too.
            Ok(_)
            | Err(netproto_dispatch::Error::Remote { .. } | netproto_dispatch::Error::Wire(_)) => {
                Beat::Answered(start.elapsed())
            }
            Err(netproto_dispatch::Error::Disconnected(_) | netproto_dispatch::Error::Closed) => {
                self.lost(correlator, Ending::Abrupt);
                Beat::Lost
            }
            Err(netproto_dispatch::Error::GoingAway { .. }) => {
                self.lost(correlator, Ending::Graceful);
                Beat::Lost
            }
            Err(error) => {
                tracing::debug!(peer = %self.address, %error, "heartbeat missed");
                Beat::Missed
            }
        }
    }

    /// One connection attempt, then a first heartbeat on it.
    async fn connect(&self) -> Beat {
        match self.dialer.dial(&self.address).await {
            Ok((correlator, key)) => {
                let correlator = Arc::new(correlator);
                lock(&self.status).key = key;
                *lock(&self.live) = Some(Live {
                    correlator: correlator.clone(),
                    gone: watch::channel(()).0,
                });
                self.ping(&correlator).await
            }
            Err(error @ Error::KeyChanged { .. }) => {
                tracing::warn!(peer = %self.address, %error, "peer refused");
                Beat::Missed
            }
            Err(error) => {
                tracing::debug!(peer = %self.address, %error, "connection attempt failed");
                Beat::Missed
            }
        }
    }

    /// Drops the connection: requests in flight on it fail.
    fn disconnect(&self) {
        let live = lock(&self.live).take();
        drop(live);
    }

    /// Heartbeats, state changes and reconnections, until the cluster is
    /// dropped. Dead peers are probed with backoff, from
    /// `cluster.heartbeat_interval` up to `cluster.max_probe_delay`.
    pub(super) async fn monitor(self: Arc<Self>) {
        let settings = &self.shared.settings;
        let interval = settings.heartbeat_interval;
        let mut probes = Backoff::new(interval, settings.max_probe_delay, 4);
        loop {
            let started = Instant::now();
            let beat = match self.current() {
                Some(correlator) => self.ping(&correlator).await,
                None => self.connect().await,
            };
            let mut wait = interval.saturating_sub(started.elapsed());
            let connected = self.current().is_some();
            let now = Instant::now();
            let step: Step = {
                let health = &mut lock(&self.status).health;
                match beat {
                    Beat::Answered(rtt) => health.heartbeat_ok(now, rtt),
                    Beat::Missed | Beat::Lost => health.heartbeat_missed(now, connected),
                }
            };
            match beat {
                Beat::Answered(_) => probes.reset(),
                // Reconnect at once; a failed attempt is the next miss.
                Beat::Lost => wait = Duration::ZERO,
                Beat::Missed => {}
            }
            if step.dead {
                self.disconnect();
                wait = probes.next_wait();
            }
            self.publish(step.transition);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
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
