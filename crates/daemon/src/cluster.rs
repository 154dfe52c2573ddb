//! A peer set with health tracking: see [`Cluster`].

mod health;
mod link;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproto_crypto::PublicKey;
use netproto_wire::Message;
use tokio::sync::{broadcast, watch};
use tokio::task::{AbortHandle, JoinSet};

pub use health::PeerState;
pub(crate) use link::Link;

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
            links.push(Arc::new(Link::new(
                PeerId(index),
                peer.address.clone(),
                dialer,
                shared.clone(),
            )));
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
            .find(|link| link.address() == address)
            .map(|link| link.id())
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
        link.request(message, link.response_timeout()).await
    }

    /// Sends `message` as a request to every [`Alive`](PeerState::Alive)
    /// peer at once and returns each answer, in peer order.
    pub async fn broadcast(&self, message: &Message) -> Vec<(PeerId, Result<Message>)> {
        let mut requests = JoinSet::new();
        for link in &self.links {
            if link.state() == PeerState::Alive {
                let (link, message) = (link.clone(), message.clone());
                requests.spawn(async move {
                    let timeout = link.response_timeout();
                    (link.id(), link.request(&message, timeout).await)
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
