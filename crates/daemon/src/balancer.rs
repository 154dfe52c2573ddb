//! A client-side balancer with failover: see [`Balancer`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use netproto_wire::Message;
use tokio::sync::broadcast;

use crate::cluster::Link;
use crate::{Cluster, Error, MembershipEvent, NetworkConfig, PeerId, PeerState, PeerView, Result};

/// How one balanced request is sent.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// The request may be processed twice without harm: when its endpoint
    /// goes down with it in flight, send it again on another one.
    pub idempotent: bool,
    /// Time allowed for the answer on one endpoint; `client.response_timeout`
    /// when `None`.
    pub timeout: Option<Duration>,
}

impl RequestOptions {
    /// Options for an idempotent request.
    pub fn idempotent() -> Self {
        Self {
            idempotent: true,
            timeout: None,
        }
    }
}

/// A client-side balancer over several servers, with failover.
///
/// The endpoints are the peers of `[cluster]`, watched by a [`Cluster`]:
/// one connection each, heartbeats, states, reconnection with backoff.
/// Each request goes to the [`Alive`](crate::PeerState::Alive) endpoint
/// with the fewest requests in flight (ties taken in turn). An endpoint
/// leaves the rotation as soon as its connection drops, or once it is
/// suspect after missed heartbeats, and comes back by itself when it
/// answers again.
///
/// No request is silently dropped: each one returns an answer or an error.
/// When its endpoint goes down with it in flight, the request fails with
/// [`Error::EndpointDown`] naming the endpoint, unless the caller marked it
/// idempotent ([`Balancer::request_idempotent`]): then it is sent again on
/// another alive endpoint, each endpoint at most once. A request that was
/// certainly not processed (no connection when it was to be sent, or
/// refused by a server going away) is sent elsewhere in any case.
///
/// # Examples
///
/// ```no_run
/// use netproto_daemon::{Balancer, Error, NetworkConfig};
/// use netproto_wire::Message;
///
/// # async fn run() -> netproto_daemon::Result<()> {
/// let mut config = NetworkConfig::default();
/// config.cluster.peers = vec![
///     "10.0.0.1:9000".parse()?,
///     "10.0.0.2:9000".parse()?,
///     "10.0.0.3:9000".parse()?,
/// ];
/// let balancer = Balancer::connect(config).await?;
/// // Safe to repeat: retried elsewhere if its server dies meanwhile.
/// let pong = balancer.request_idempotent(&Message::Ping).await?;
/// // Not safe to repeat: the caller learns which server failed.
/// match balancer.request(&Message::custom("PAY", &b"42"[..])?).await {
///     Err(Error::EndpointDown { endpoint, .. }) => eprintln!("{endpoint} died; check the payment"),
///     other => println!("{other:?}"),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Balancer {
    cluster: Cluster,
    /// Where the search for the least loaded endpoint starts: turns ties
    /// into a rotation.
    next: AtomicUsize,
    response_timeout: Duration,
}

impl Balancer {
    /// Starts watching the endpoints (`config.cluster.peers`) and waits
    /// until one is alive, or each has had a connection attempt.
    ///
    /// # Errors
    ///
    /// As [`Cluster::start`]; [`Error::NoHealthyEndpoint`] when no endpoint
    /// answered within `client.connection_timeout`.
    pub async fn connect(config: NetworkConfig) -> Result<Self> {
        let response_timeout = config.client.response_timeout;
        let wait = config.client.connection_timeout;
        let cluster = Cluster::start(config)?;
        let endpoints = cluster.links().len();
        let settled = cluster
            .wait_until(wait, |peers| {
                peers.iter().any(|p| p.state == PeerState::Alive)
                    || peers.iter().all(|p| p.state != PeerState::Joining)
            })
            .await;
        let balancer = Self {
            cluster,
            next: AtomicUsize::new(0),
            response_timeout,
        };
        match settled {
            Ok(()) if balancer.alive() > 0 => Ok(balancer),
            _ => Err(Error::NoHealthyEndpoint { endpoints }),
        }
    }

    /// Sends a request that must not be repeated and waits for the answer.
    ///
    /// # Errors
    ///
    /// [`Error::EndpointDown`] naming the endpoint that went down with the
    /// request in flight (it may or may not have been processed);
    /// [`Error::NoHealthyEndpoint`]; [`Error::Dispatch`] with the server's
    /// error or a timeout.
    pub async fn request(&self, message: &Message) -> Result<Message> {
        self.request_with(message, RequestOptions::default()).await
    }

    /// Sends a request that may safely be processed twice: if its endpoint
    /// goes down with it in flight, it is sent again on another one.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request); [`Error::EndpointDown`] only when
    /// every alive endpoint went down while it was tried.
    pub async fn request_idempotent(&self, message: &Message) -> Result<Message> {
        self.request_with(message, RequestOptions::idempotent())
            .await
    }

    /// Sends a request with these options.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_with(
        &self,
        message: &Message,
        options: RequestOptions,
    ) -> Result<Message> {
        let timeout = options.timeout.unwrap_or(self.response_timeout);
        let mut tried: Vec<PeerId> = Vec::new();
        let mut last_error = None;
        while let Some(link) = self.pick(&tried) {
            tried.push(link.id());
            let error = match link.request(message, timeout).await {
                Ok(answer) => return Ok(answer),
                Err(error) => error,
            };
            let retry = match &error {
                // Certainly not processed.
                Error::Unavailable { .. } => true,
                Error::Dispatch(error) => error.is_unprocessed(),
                Error::EndpointDown { .. } => options.idempotent,
                _ => false,
            };
            if !retry {
                return Err(error);
            }
            tracing::debug!(%error, idempotent = options.idempotent, "request failed over to another endpoint");
            last_error = Some(error);
        }
        Err(last_error.unwrap_or(Error::NoHealthyEndpoint {
            endpoints: self.cluster.links().len(),
        }))
    }

    /// The endpoints, their states and loads.
    pub fn view(&self) -> Vec<PeerView> {
        self.cluster.view()
    }

    /// Membership events of the endpoints.
    pub fn subscribe(&self) -> broadcast::Receiver<MembershipEvent> {
        self.cluster.subscribe()
    }

    /// The cluster of endpoints behind the balancer.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Endpoints taking requests now.
    fn alive(&self) -> usize {
        self.cluster.links().iter().filter(|l| l.usable()).count()
    }

    /// The usable endpoint not yet tried with the fewest requests in
    /// flight; among equals, the first from a start that moves each time.
    fn pick(&self, tried: &[PeerId]) -> Option<&Arc<Link>> {
        let links = self.cluster.links();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(&Arc<Link>, usize)> = None;
        for offset in 0..links.len() {
            let Some(link) = links.get(start.wrapping_add(offset) % links.len()) else {
                continue;
            };
            if tried.contains(&link.id()) || !link.usable() {
                continue;
            }
            let load = link.in_flight();
            if best.is_none_or(|(_, least)| load < least) {
                best = Some((link, load));
            }
        }
        best.map(|(link, _)| link)
    }
}
