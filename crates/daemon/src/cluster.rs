//! A peer set with health tracking: see [`Cluster`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use netproto_crypto::PublicKey;
use netproto_dispatch::Correlator;
use netproto_wire::Message;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::{AbortHandle, JoinSet};

use crate::backoff::Backoff;
use crate::client::Dialer;
use crate::{ClusterConfig, Error, NetworkConfig, Result};

/// Membership events kept for a slow subscriber before it lags.
const EVENT_CAPACITY: usize = 256;

/// Time a connection attempt gets at least (if `client.connection_timeout`
/// allows), however short the heartbeat interval.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A peer of a [`Cluster`]: its position in `cluster.peers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(usize);

impl PeerId {
    /// The peer's position in `cluster.peers`, from 0.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
}

/// What the heartbeats say about a peer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Not reached yet since the cluster started.
    Joining,
    /// Connected and answering heartbeats.
    Alive,
    /// Missed `suspect_after` heartbeats in a row, or lost its connection:
    /// no new requests are balanced to it.
    Suspect,
    /// Missed `dead_after` heartbeats in a row: disconnected, probed with
    /// backoff.
    Dead,
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Joining => "joining",
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        })
    }
}

/// A change of a peer's state, from [`Cluster::subscribe`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// The peer became [`Alive`](PeerState::Alive): reached for the first
    /// time, or back from suspect or dead.
    PeerUp {
        /// The peer.
        peer: PeerId,
        /// Its configured address.
        address: String,
    },
    /// The peer became [`Suspect`](PeerState::Suspect).
    Suspect {
        /// The peer.
        peer: PeerId,
        /// Its configured address.
        address: String,
    },
    /// The peer became [`Dead`](PeerState::Dead).
    PeerDown {
        /// The peer.
        peer: PeerId,
        /// Its configured address.
        address: String,
    },
}

impl MembershipEvent {
    /// The peer the event is about.
    pub fn peer(&self) -> PeerId {
        match self {
            Self::PeerUp { peer, .. }
            | Self::Suspect { peer, .. }
            | Self::PeerDown { peer, .. } => *peer,
        }
    }

    /// The configured address of the peer the event is about.
    pub fn address(&self) -> &str {
        match self {
            Self::PeerUp { address, .. }
            | Self::Suspect { address, .. }
            | Self::PeerDown { address, .. } => address,
        }
    }
}

/// One peer as [`Cluster::view`] shows it to operators.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The peer.
    pub id: PeerId,
    /// Its configured address (without the pinned key).
    pub address: String,
    /// Its state.
    pub state: PeerState,
    /// When it entered this state.
    pub since: Instant,
    /// The last sign of life: an answer to a heartbeat or a request.
    pub last_seen: Option<Instant>,
    /// The round trip of the last answered heartbeat.
    pub rtt: Option<Duration>,
    /// Heartbeats missed in a row (connection attempts included).
    pub missed: u32,
    /// Requests in flight to it now.
    pub in_flight: usize,
    /// Its Noise public key, once connected in Noise mode.
    pub key: Option<PublicKey>,
}

/// The peers from `[cluster]`, with real health tracking: one persistent
/// secure connection per peer, heartbeats that measure the round trip, a
/// state per peer, and a stream of membership events.
///
/// Every peer from `[cluster] peers` gets a monitor task. It connects with
/// the `[client]` and `[security]` settings (Noise by default), then sends
/// a `PING` request every `heartbeat_interval` on that connection. Any
/// answer, an error frame included, is a sign of life and gives the round
/// trip; no answer within one interval is a missed heartbeat. A peer is
///
/// - [`Joining`](PeerState::Joining) until it is first reached,
/// - [`Alive`](PeerState::Alive) while it answers,
/// - [`Suspect`](PeerState::Suspect) after `suspect_after` missed
///   heartbeats in a row, or at once when its connection drops (the monitor
///   then reconnects at once; each failed attempt is a missed heartbeat),
/// - [`Dead`](PeerState::Dead) after `dead_after` missed heartbeats: its
///   connection is dropped, requests in flight on it fail with
///   [`Error::EndpointDown`], and it is probed again with exponential
///   backoff (from `heartbeat_interval` to `max_probe_delay`) until it
///   answers and becomes alive again by itself.
///
/// Host names are resolved again on every connection attempt, so a peer
/// that moves to another address is found after its next reconnection.
/// Dropping the cluster stops its monitors and closes its connections.
///
/// # Examples
///
/// ```no_run
/// use netproto_daemon::{Cluster, MembershipEvent, NetworkConfig};
/// use netproto_wire::Message;
///
/// # async fn run() -> netproto_daemon::Result<()> {
/// let mut config = NetworkConfig::default();
/// config.cluster.peers = vec!["10.0.0.2:9000".parse()?, "10.0.0.3:9000".parse()?];
/// let cluster = Cluster::start(config)?;
/// let mut events = cluster.subscribe();
/// tokio::spawn(async move {
///     while let Ok(event) = events.recv().await {
///         if let MembershipEvent::PeerDown { address, .. } = event {
///             eprintln!("{address} is down");
///         }
///     }
/// });
/// for (peer, answer) in cluster.broadcast(&Message::Echo("hello".into())).await {
///     println!("{peer}: {answer:?}");
/// }
/// for peer in cluster.view() {
///     println!("{} {} rtt {:?}", peer.address, peer.state, peer.rtt);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Cluster {
    links: Vec<Arc<Link>>,
    shared: Arc<Shared>,
    monitors: Vec<AbortHandle>,
}

impl Cluster {
    /// Starts one monitor per peer of `config.cluster.peers`; they connect
    /// in the background (watch [`subscribe`](Self::subscribe) or
    /// [`wait_until`](Self::wait_until)).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when there is no peer or a value is invalid;
    /// security configuration errors (a missing key file).
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the monitors are spawned tasks).
    pub fn start(config: NetworkConfig) -> Result<Self> {
        config.validate()?;
        if config.cluster.peers.is_empty() {
            return Err(Error::Invalid("cluster.peers is empty".into()));
        }
        let settings = config.cluster;
        // The transport's own heartbeat agrees with ours, and one connection
        // attempt takes at most a heartbeat interval (or 1 s, room for a
        // handshake on a busy machine).
        let interval = settings.heartbeat_interval;
        let mut client = config.client;
        client.heartbeat_interval = interval;
        client.connection_timeout = client
            .connection_timeout
            .min(interval.max(MIN_CONNECT_TIMEOUT));
        let mut transport = config.transport;
        transport.heartbeat_misses = settings.dead_after;
        let shared = Arc::new(Shared {
            events: broadcast::channel(EVENT_CAPACITY).0,
            changed: watch::channel(0).0,
            settings,
        });
        let mut links = Vec::with_capacity(shared.settings.peers.len());
        for (index, peer) in shared.settings.peers.iter().enumerate() {
            let mut security = config.security.clone();
            if let Some(key) = peer.key {
                security.server_key = Some(key);
            }
            let dialer = Dialer::new(&client, &transport, &security, &peer.address)?;
            links.push(Arc::new(Link {
                id: PeerId(index),
                address: peer.address.clone(),
                dialer,
                shared: shared.clone(),
                status: Mutex::new(Status::new()),
                live: Mutex::new(None),
                in_flight: AtomicUsize::new(0),
                wake: Notify::new(),
            }));
        }
        let monitors = links
            .iter()
            .map(|link| tokio::spawn(link.clone().monitor()).abort_handle())
            .collect();
        Ok(Self {
            links,
            shared,
            monitors,
        })
    }

    /// Every peer, its state, last sign of life and round trip.
    pub fn view(&self) -> Vec<PeerView> {
        self.links.iter().map(|link| link.view()).collect()
    }

    /// The peer configured with this address (without its pinned key).
    pub fn peer(&self, address: &str) -> Option<PeerId> {
        self.links
            .iter()
            .find(|link| link.address == address)
            .map(|link| link.id)
    }

    /// Membership events from now on. A subscriber that falls more than 256
    /// events behind gets [`broadcast::error::RecvError::Lagged`]; read
    /// [`view`](Self::view) then to catch up.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.subscribe()
    }

    /// Waits until `condition` holds for the [`view`](Self::view), checking
    /// after every change of state.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it does not hold within `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&[PeerView]) -> bool,
    ) -> Result<()> {
        let mut changed = self.shared.changed.subscribe();
        let wait = async {
            loop {
                changed.borrow_and_update();
                if condition(&self.view()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    // The sender lives in `self.shared`: not reached.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout("waiting for the cluster"))
    }

    /// Sends `message` as a request to `peer` and waits for the answer
    /// (within `client.response_timeout`).
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the peer has no connection now (nothing
    /// was sent); [`Error::EndpointDown`] when the connection was lost or
    /// the peer declared dead with the request in flight; [`Error::Dispatch`]
    /// with the peer's error or a timeout; [`Error::Invalid`] for a
    /// [`PeerId`] of another cluster.
    pub async fn send_to(&self, peer: PeerId, message: &Message) -> Result<Message> {
        let link = self.link(peer)?;
        link.request(message, link.dialer.response_timeout()).await
    }

    /// Sends `message` as a request to every [`Alive`](PeerState::Alive)
    /// peer at once and returns each answer, in peer order.
    pub async fn broadcast(&self, message: &Message) -> Vec<(PeerId, Result<Message>)> {
        let mut requests = JoinSet::new();
        for link in &self.links {
            if link.state() == PeerState::Alive {
                let (link, message) = (link.clone(), message.clone());
                requests.spawn(async move {
                    let timeout = link.dialer.response_timeout();
                    (link.id, link.request(&message, timeout).await)
                });
            }
        }
        let mut answers = Vec::with_capacity(requests.len());
        while let Some(joined) = requests.join_next().await {
            match joined {
                Ok(answer) => answers.push(answer),
                // A request task cannot panic or be aborted (the set is ours).
                Err(error) => tracing::debug!(%error, "broadcast request task failed"),
            }
        }
        answers.sort_by_key(|(peer, _)| *peer);
        answers
    }

    pub(crate) fn links(&self) -> &[Arc<Link>] {
        &self.links
    }

    fn link(&self, peer: PeerId) -> Result<&Arc<Link>> {
        self.links
            .get(peer.0)
            .ok_or_else(|| Error::Invalid(format!("{peer} is not in this cluster")))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for monitor in &self.monitors {
            monitor.abort();
        }
    }
}

/// What every link of a cluster shares.
#[derive(Debug)]
struct Shared {
    settings: ClusterConfig,
    events: broadcast::Sender<MembershipEvent>,
    /// Bumped on every change of state, for [`Cluster::wait_until`].
    changed: watch::Sender<u64>,
}

/// A peer's health, as its monitor and its requests record it.
#[derive(Debug)]
struct Status {
    state: PeerState,
    since: Instant,
    last_seen: Option<Instant>,
    rtt: Option<Duration>,
    missed: u32,
    key: Option<PublicKey>,
}

impl Status {
    fn new() -> Self {
        Self {
            state: PeerState::Joining,
            since: Instant::now(),
            last_seen: None,
            rtt: None,
            missed: 0,
            key: None,
        }
    }
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
    /// Answered (the round trip is recorded).
    Answered,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Link {
    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    pub(crate) fn state(&self) -> PeerState {
        lock(&self.status).state
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Alive with a connection: may take new balanced requests.
    pub(crate) fn usable(&self) -> bool {
        self.state() == PeerState::Alive && lock(&self.live).is_some()
    }

    fn view(&self) -> PeerView {
        let status = lock(&self.status);
        PeerView {
            id: self.id,
            address: self.address.clone(),
            state: status.state,
            since: status.since,
            last_seen: status.last_seen,
            rtt: status.rtt,
            missed: status.missed,
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
        lock(&self.status).last_seen = Some(Instant::now());
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
            self.enter(PeerState::Suspect);
            self.wake.notify_one();
        }
    }

    /// Moves to `to` and tells subscribers. Only an alive peer becomes
    /// suspect; a joining or dead one stays so until it answers or dies.
    fn enter(&self, to: PeerState) {
        let address = self.address.clone();
        let peer = self.id;
        let event = {
            let mut status = lock(&self.status);
            let from = status.state;
            if from == to || (to == PeerState::Suspect && from != PeerState::Alive) {
                return;
            }
            status.state = to;
            status.since = Instant::now();
            match to {
                PeerState::Alive => {
                    tracing::info!(peer = %address, rtt = ?status.rtt, "peer up");
                    MembershipEvent::PeerUp { peer, address }
                }
                PeerState::Suspect => {
                    tracing::info!(peer = %address, missed = status.missed, "peer suspect");
                    MembershipEvent::Suspect { peer, address }
                }
                PeerState::Dead | PeerState::Joining => {
                    tracing::warn!(peer = %address, missed = status.missed, "peer down");
                    MembershipEvent::PeerDown { peer, address }
                }
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
                let rtt = start.elapsed();
                let mut status = lock(&self.status);
                status.rtt = Some(rtt);
                status.last_seen = Some(Instant::now());
                Beat::Answered
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
    /// dropped.
    async fn monitor(self: Arc<Self>) {
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
            let missed = {
                let mut status = lock(&self.status);
                match beat {
                    Beat::Answered => status.missed = 0,
                    Beat::Missed | Beat::Lost => status.missed = status.missed.saturating_add(1),
                }
                status.missed
            };
            if let Beat::Lost = beat {
                // Reconnect at once; a failed attempt is the next miss.
                wait = Duration::ZERO;
            }
            if missed == 0 {
                probes.reset();
                self.enter(PeerState::Alive);
            } else if missed >= settings.dead_after {
                self.disconnect();
                self.enter(PeerState::Dead);
                wait = probes.next_wait();
            } else if missed >= settings.suspect_after || self.current().is_none() {
                self.enter(PeerState::Suspect);
            }
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
