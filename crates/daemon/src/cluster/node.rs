//! The member's task: feeds the SWIM state machine the packets that arrive
//! and the time, hands its packets to the links and its view of the other
//! members to the table.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use netproto_crypto::PublicKey;
use netproto_dispatch::{Dispatcher, HandlerError};
use netproto_transport::sync::{lock, read, write};
use netproto_wire::{Envelope, Message};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::link::{Link, SWIM_TYPE};
use super::swim::{NodeId, Swim};
use super::{Events, PeerId, Shared};
use crate::client::Dialer;
use crate::{ClusterConfig, Error, NetworkConfig, Result};

/// Membership packets waiting for the member's task; more are dropped.
pub(super) const INBOX: usize = 1024;

/// Members a cluster keeps at most (a bound on what gossip can add).
const MAX_MEMBERS: usize = 4096;

/// Time a connection attempt gets at least (if `client.connection_timeout`
/// allows), however short the protocol period.
const MIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What the member's task is given.
#[derive(Debug)]
pub(super) enum Input {
    /// A membership packet arrived.
    Packet(Bytes),
    /// Leave the cluster, then say so.
    Leave(oneshot::Sender<()>),
}

/// Hands the membership packets that arrive through `dispatcher` to the
/// member's task: all of them, or with `cluster.allowed_members` set, those
/// that come on a connection whose Noise key is listed there or in
/// `cluster.peers`.
pub(super) fn listen(
    dispatcher: &Dispatcher,
    settings: &ClusterConfig,
    inbox: mpsc::Sender<Input>,
) {
    let allowed: Option<Arc<BTreeSet<PublicKey>>> =
        (!settings.allowed_members.is_empty()).then(|| {
            let seeds = settings.peers.iter().filter_map(|peer| peer.key);
            Arc::new(
                settings
                    .allowed_members
                    .iter()
                    .copied()
                    .chain(seeds)
                    .collect(),
            )
        });
    dispatcher.register_with_context(SWIM_TYPE, move |context, envelope: Envelope| {
        let taken = match &allowed {
            Some(allowed) => context.peer_key.is_some_and(|key| allowed.contains(&key)),
            None => true,
        };
        let result = if !taken {
            tracing::debug!(peer = ?context.peer_key, "membership packet from a key not allowed");
            Err(HandlerError::permission_denied("not a cluster member"))
        } else {
            if inbox.try_send(Input::Packet(envelope.payload)).is_err() {
                tracing::trace!("membership packet dropped");
            }
            // Membership packets are one-way: a request is answered, and ignored.
            Ok(Message::Pong.to_envelope(envelope.request_id))
        };
        std::future::ready(result)
    });
}

/// The member: its SWIM state machine and the table it fills.
pub(super) struct Node {
    swim: Swim,
    shared: Arc<Shared>,
    /// The link of each of the state machine's peers, at the same index
    /// (its peers are only ever added): `None` where none could be made.
    links: Vec<Option<Arc<Link>>>,
}

impl Node {
    /// A member at `address`, with this Noise key, whose generation is its
    /// start time in milliseconds.
    pub(super) fn new(shared: &Arc<Shared>, address: String, key: Option<&PublicKey>) -> Self {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let me = NodeId {
            address: address.into(),
            key: key.map(|key| *key.as_bytes()),
            generation: started.max(1),
        };
        let swim = Swim::new(me, &shared.config.cluster, rand::random(), Instant::now());
        Self {
            swim,
            shared: shared.clone(),
            links: Vec::new(),
        }
    }

    /// Joins through the configured peers and runs until the cluster is
    /// dropped or leaves.
    pub(super) async fn run(mut self, mut inbox: mpsc::Receiver<Input>) {
        let seeds = self
            .shared
            .config
            .cluster
            .peers
            .iter()
            .map(|peer| NodeId {
                address: peer.address.as_str().into(),
                key: peer.key.map(|key| *key.as_bytes()),
                generation: 0,
            })
            .collect();
        tracing::info!(address = %self.swim.identity().address, "joining the cluster");
        if let Err(error) = self.swim.join(seeds, Instant::now()) {
            tracing::debug!(%error, "membership join");
        }
        self.flush();
        loop {
            let wake = self
                .swim
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                input = inbox.recv() => match input {
                    Some(Input::Packet(data)) => {
                        if let Err(error) = self.swim.handle_data(&data, Instant::now()) {
                            tracing::debug!(%error, "membership packet refused");
                        }
                    }
                    Some(Input::Leave(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(wake.into()) => {
                    for error in self.swim.handle_timeout(Instant::now()) {
                        tracing::debug!(%error, "membership timer");
                    }
                }
            }
            self.flush();
        }
    }

    /// Hands the packets to the links, and the peers' states to the table.
    fn flush(&mut self) {
        while let Some((to, packet)) = self.swim.poll_transmit() {
            match self
                .shared
                .link(&to.address, to.key.map(PublicKey::from_bytes))
            {
                Ok(link) => link.send(packet),
                Err(error) => tracing::debug!(peer = %to.address, %error, "no link to member"),
            }
        }
        while self.swim.poll_change().is_some() {}
        // Each input may change any peer; a lookup by address for each of
        // them would cost the square of the members per packet.
        for (at, peer) in self.swim.peers().enumerate() {
            if self.links.len() <= at {
                let key = peer.id.key.map(PublicKey::from_bytes);
                let link = self.shared.link(&peer.id.address, key);
                if let Err(error) = &link {
                    tracing::debug!(peer = %peer.id.address, %error, "no link to member");
                }
                self.links.push(link.ok());
            }
            if let Some(Some(link)) = self.links.get(at) {
                link.update(peer);
            }
        }
    }

    /// Sends the departure to the members foca picked, at once.
    async fn leave(&mut self) {
        if let Err(error) = self.swim.leave(Instant::now()) {
            tracing::debug!(%error, "membership leave");
        }
        let mut sends = Vec::new();
        while let Some((to, packet)) = self.swim.poll_transmit() {
            if let Some(link) = self.shared.find(&to.address) {
                sends.push(async move { link.send_now(packet).await });
            }
        }
        futures::future::join_all(sends).await;
        tracing::info!(address = %self.swim.identity().address, "left the cluster");
    }
}

impl Shared {
    /// The table of a cluster configured so, empty. A connection attempt
    /// takes at most a protocol period (or 1 s). The connections keep the
    /// `[client]` heartbeat: membership packets flow one way on each (the
    /// answers come on the member's own connection), which keeps the
    /// sending side from ever being idle, so a heartbeat as short as a
    /// period would close connections that are fine; SWIM, not the
    /// heartbeat, declares members dead.
    pub(super) fn new(config: &NetworkConfig, inbox: mpsc::Sender<Input>) -> Result<Self> {
        let mut config = config.clone();
        let period = config.cluster.probe_period;
        config.client.connection_timeout = config
            .client
            .connection_timeout
            .min(period.max(MIN_CONNECT_TIMEOUT));
        Ok(Self {
            leave_timeout: config.client.connection_timeout,
            config,
            table: Default::default(),
            events: Arc::new(Events {
                sender: tokio::sync::broadcast::channel(256).0,
                changed: tokio::sync::watch::channel(0).0,
            }),
            tasks: Default::default(),
            inbox,
        })
    }

    /// Where membership packets for the member's task go.
    pub(super) fn inbox(&self) -> mpsc::Sender<Input> {
        self.inbox.clone()
    }

    /// Stops `task` when the cluster is dropped.
    pub(super) fn own(&self, task: AbortHandle) {
        lock(&self.tasks).push(task);
    }

    /// The member at `address`, if known.
    pub(super) fn find(&self, address: &str) -> Option<Arc<Link>> {
        read(&self.table)
            .iter()
            .find(|link| link.address() == address)
            .cloned()
    }

    /// The member at `address`, added (its connections pinning `key`, if
    /// any) when new.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] past [`MAX_MEMBERS`]; security configuration
    /// errors.
    pub(super) fn link(&self, address: &str, key: Option<PublicKey>) -> Result<Arc<Link>> {
        if let Some(link) = self.find(address) {
            return Ok(link);
        }
        let mut table = write(&self.table);
        if let Some(link) = table.iter().find(|link| link.address() == address) {
            return Ok(link.clone());
        }
        if table.len() >= MAX_MEMBERS {
            return Err(Error::Invalid(format!(
                "more than {MAX_MEMBERS} cluster members"
            )));
        }
        let mut security = self.config.security.clone();
        if key.is_some() {
            security.server_key = key;
        }
        let dialer = Dialer::new(
            &self.config.client,
            &self.config.transport,
            &security,
            address,
        )?;
        let (link, queue) = Link::new(
            PeerId(table.len()),
            address.to_owned(),
            dialer,
            self.events.clone(),
        );
        let link = Arc::new(link);
        self.own(tokio::spawn(link.clone().carry(queue)).abort_handle());
        table.push(link.clone());
        Ok(link)
    }
}
