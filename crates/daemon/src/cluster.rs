//! SWIM membership of daemons that know each other: see [`Cluster`].

mod link;
mod node;
mod swim;

use std::fmt;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use netproto_crypto::PublicKey;
use netproto_transport::sync::{lock, read};
use netproto_wire::Message;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

pub(crate) use link::Link;

use crate::{Error, NetworkConfig, Result, Server};

/// A member of a [`Cluster`]: its place in the member table (the
/// configured peers first, in order and without this member itself, then
/// the others in the order they were heard of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(usize);

impl PeerId {
    /// The member's place in the table, from 0.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer {}", self.0)
    }
}

/// What this member knows of another.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Not reached yet: a configured peer not heard from, or a member this
    /// one has not connected to yet.
    Joining,
    /// A member in good standing, connected to at least once.
    Alive,
    /// A probe of it went unanswered, directly and through other members:
    /// left out of [`Cluster::broadcast`] until it refutes the suspicion.
    Suspect,
    /// Declared dead: suspect for `suspect_timeout` without refuting it.
    /// Its connection is dropped; it comes back by itself when it rejoins.
    Dead,
    /// Left the cluster on purpose ([`Cluster::leave`]).
    Left,
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Joining => "joining",
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
            Self::Left => "left",
        })
    }
}

/// A change of a member's state, from [`Cluster::subscribe`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipEvent {
    /// The member became [`Alive`](PeerState::Alive): joined, refuted a
    /// suspicion, or came back (restarted, or rejoined after being declared
    /// dead).
    PeerUp {
        /// The member.
        peer: PeerId,
        /// Its address.
        address: String,
    },
    /// The member became [`Suspect`](PeerState::Suspect).
    Suspect {
        /// The member.
        peer: PeerId,
        /// Its address.
        address: String,
    },
    /// The member became [`Dead`](PeerState::Dead).
    PeerDown {
        /// The member.
        peer: PeerId,
        /// Its address.
        address: String,
    },
    /// The member [`Left`](PeerState::Left).
    PeerLeft {
        /// The member.
        peer: PeerId,
        /// Its address.
        address: String,
    },
}

impl MembershipEvent {
    /// The member the event is about.
    pub fn peer(&self) -> PeerId {
        match self {
            Self::PeerUp { peer, .. }
            | Self::Suspect { peer, .. }
            | Self::PeerDown { peer, .. }
            | Self::PeerLeft { peer, .. } => *peer,
        }
    }

    /// The address of the member the event is about.
    pub fn address(&self) -> &str {
        match self {
            Self::PeerUp { address, .. }
            | Self::Suspect { address, .. }
            | Self::PeerDown { address, .. }
            | Self::PeerLeft { address, .. } => address,
        }
    }
}

/// One member as [`Cluster::view`] shows it to operators.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    /// The member.
    pub id: PeerId,
    /// Its address (without the pinned key).
    pub address: String,
    /// Its state.
    pub state: PeerState,
    /// When it entered this state.
    pub since: Instant,
    /// When a membership packet from it last arrived.
    pub last_seen: Option<Instant>,
    /// The round trip of its last acknowledged direct probe.
    pub rtt: Option<Duration>,
    /// Its SWIM incarnation: raised each time it refuted a suspicion.
    pub incarnation: u16,
    /// Requests in flight to it now.
    pub in_flight: usize,
    /// Its Noise public key, once connected in Noise mode.
    pub key: Option<PublicKey>,
}

/// This process as a member of a cluster of daemons, with SWIM failure
/// detection ([`foca`]), a connection to each member, and membership
/// events.
///
/// A member joins through the configured `[cluster] peers`, learns the
/// others from them, and probes one member every `probe_period`: a direct
/// ping, then pings through `indirect_probes` other members; a member that
/// answers none of them is [`Suspect`](PeerState::Suspect), told to all,
/// and [`Dead`](PeerState::Dead) unless it refutes within
/// `suspect_timeout`. Membership packets are one-way `netproto.swim.v1`
/// messages on the members' secured connections (Noise by default), the
/// same connections that [`send_to`](Self::send_to) and
/// [`broadcast`](Self::broadcast) use. A member declared dead, or restarted, rejoins by itself under a
/// new generation. [`leave`](Self::leave) departs on purpose
/// ([`Left`](PeerState::Left)); dropping the cluster stops at once, as a
/// crash would.
///
/// Membership trusts every peer that can connect, unless
/// `cluster.allowed_members` lists the members' Noise keys: then packets
/// from any other key are dropped.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use netproto_daemon::{Cluster, MembershipEvent, NetworkConfig, Server};
/// use netproto_dispatch::Dispatcher;
/// use netproto_wire::Message;
///
/// # async fn run() -> netproto_daemon::Result<()> {
/// let mut config = NetworkConfig::default();
/// config.server.address = "10.0.0.1:9000".into();
/// config.cluster.peers = vec!["10.0.0.2:9000".parse()?, "10.0.0.3:9000".parse()?];
/// let server = Server::bind(config.clone(), Arc::new(Dispatcher::default())).await?;
/// let cluster = Cluster::join(config, &server)?;
/// tokio::spawn(server.run());
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
/// cluster.leave().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    inbox: mpsc::Sender<node::Input>,
}

impl Cluster {
    /// Joins as a member with a membership listener of its own, on
    /// `cluster.bind` with the `[server]` and `[security]` settings: for a
    /// process that serves nothing else, such as an observer of the
    /// daemons. It binds and joins in the background
    /// (watch [`subscribe`](Self::subscribe) or
    /// [`wait_until`](Self::wait_until)); a failure to bind is logged.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when there is no peer or a value is invalid.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the member is a task).
    pub fn start(config: NetworkConfig) -> Result<Self> {
        if config.cluster.peers.is_empty() {
            return Err(Error::Invalid("cluster.peers is empty".into()));
        }
        let (cluster, inbox) = Self::prepare(&config, config.cluster.advertise.as_deref())?;
        let shared = cluster.shared.clone();
        let mut server_config = config;
        server_config
            .server
            .address
            .clone_from(&server_config.cluster.bind);
        let task = tokio::spawn(async move {
            let dispatcher = Arc::new(netproto_dispatch::Dispatcher::default());
            dispatcher.register("PING", |_| Ok(Message::Pong));
            let server = match Server::bind(server_config.clone(), dispatcher).await {
                Ok(server) => server,
                Err(error) => {
                    tracing::error!(%error, address = %server_config.cluster.bind, "membership listener failed to bind");
                    return;
                }
            };
            let advertise = server_config.cluster.advertise.clone();
            let address = advertise.unwrap_or_else(|| server.local_addr());
            node::listen(server.dispatcher(), &server_config.cluster, shared.inbox());
            let node = node::Node::new(&shared, address, server.public_key());
            let served = tokio::spawn(server.run());
            shared.own(served.abort_handle());
            node.run(inbox).await;
        });
        cluster.shared.own(task.abort_handle());
        Ok(cluster)
    }

    /// Joins as the member that `server` is: membership packets arrive
    /// through the server's dispatcher, and the others reach this member at
    /// `cluster.advertise`, or else the server's address. With no
    /// `cluster.peers`, it is the first member, that others join through.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when a value is invalid.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the member is a task).
    pub fn join(config: NetworkConfig, server: &Server) -> Result<Self> {
        let address = config
            .cluster
            .advertise
            .clone()
            .unwrap_or_else(|| server.local_addr());
        let (cluster, inbox) = Self::prepare(&config, Some(&address))?;
        node::listen(server.dispatcher(), &config.cluster, cluster.shared.inbox());
        let node = node::Node::new(&cluster.shared, address, server.public_key());
        let task = tokio::spawn(node.run(inbox));
        cluster.shared.own(task.abort_handle());
        Ok(cluster)
    }

    fn prepare(
        config: &NetworkConfig,
        own: Option<&str>,
    ) -> Result<(Self, mpsc::Receiver<node::Input>)> {
        config.validate()?;
        let (inbox, packets) = mpsc::channel(node::INBOX);
        let shared = Arc::new(Shared::new(config, inbox.clone())?);
        // The configured peers are the first entries of the table.
        for peer in &config.cluster.peers {
            if own != Some(peer.address.as_str()) {
                shared.link(&peer.address, peer.key)?;
            }
        }
        let cluster = Self { shared, inbox };
        Ok((cluster, packets))
    }

    /// Every member heard of (this one excepted), its state, last sign of
    /// life and round trip.
    pub fn view(&self) -> Vec<PeerView> {
        read(&self.shared.table).iter().map(|l| l.view()).collect()
    }

    /// The member with this address (without its pinned key).
    pub fn peer(&self, address: &str) -> Option<PeerId> {
        self.shared.find(address).map(|link| link.id())
    }

    /// Membership events from now on. A subscriber that falls more than 256
    /// events behind gets [`broadcast::error::RecvError::Lagged`]; read
    /// [`view`](Self::view) then to catch up.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.shared.events.sender.subscribe()
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
        let mut changed = self.shared.events.changed.subscribe();
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
    /// [`Error::Unavailable`] when the member has no connection now
    /// (nothing was sent); [`Error::EndpointDown`] when the connection was
    /// lost or the member declared dead with the request in flight;
    /// [`Error::Dispatch`] with the member's error or a timeout;
    /// [`Error::Invalid`] for a [`PeerId`] of another cluster.
    pub async fn send_to(&self, peer: PeerId, message: &Message) -> Result<Message> {
        let link = read(&self.shared.table)
            .get(peer.0)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("{peer} is not in this cluster")))?;
        link.request(message, link.response_timeout()).await
    }

    /// Sends `message` as a request to every [`Alive`](PeerState::Alive)
    /// member at once and returns each answer, in member order.
    pub async fn broadcast(&self, message: &Message) -> Vec<(PeerId, Result<Message>)> {
        let mut requests = JoinSet::new();
        for link in read(&self.shared.table).iter() {
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

    /// Leaves the cluster on purpose: a few members are told at once and
    /// pass it on, so that the others see this member
    /// [`Left`](PeerState::Left) rather than dead. Membership stops; the
    /// connections stay for requests in flight until the cluster is
    /// dropped. Waits at most `client.connection_timeout` for the notices
    /// to be sent.
    pub async fn leave(&self) {
        let (done, sent) = oneshot::channel();
        if self.inbox.send(node::Input::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(self.shared.leave_timeout, sent).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in lock(&self.shared.tasks).drain(..) {
            task.abort();
        }
    }
}

/// What a cluster's member table, tasks and links share.
#[derive(Debug)]
struct Shared {
    config: NetworkConfig,
    /// Every member heard of, by [`PeerId`].
    table: RwLock<Vec<Arc<Link>>>,
    events: Arc<Events>,
    /// The member's task, its listener's, and each link's.
    tasks: Mutex<Vec<AbortHandle>>,
    inbox: mpsc::Sender<node::Input>,
    leave_timeout: Duration,
}

/// Where links publish changes of state.
#[derive(Debug)]
struct Events {
    sender: broadcast::Sender<MembershipEvent>,
    /// Bumped on every change of state, for [`Cluster::wait_until`].
    changed: watch::Sender<u64>,
}
