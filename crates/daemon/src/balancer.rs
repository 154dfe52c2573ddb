//! A client-side balancer with failover: see [`Balancer`].

mod endpoint;
mod registry;

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use futures::future::BoxFuture;
use netproto_crypto::PublicKey;
use netproto_service::Method;
use netproto_wire::Message;
use tokio::task::AbortHandle;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::buffer::error::{Closed, ServiceError};
use tower::discover::Change;
use tower::retry::{Policy, Retry};
use tower::{BoxError, ServiceExt};

use self::endpoint::{Attempt, EndpointError, Exchange, Settings};
use self::registry::{Factory, Registry};
use crate::discovery::{self, DnsQuery};
use crate::service::CallError;
use crate::{Discovery, Error, NetworkConfig, PeerAddress, PeerState, Result};

/// Requests waiting for the balance at most, from all callers; more wait
/// for room.
const QUEUE: usize = 1024;

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

/// One endpoint of a [`Balancer`], as [`Balancer::endpoints`] shows it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointView {
    /// The address it was discovered with (without a pinned key).
    pub address: String,
    /// [`Joining`](PeerState::Joining) until its first connection attempt
    /// ends, [`Alive`](PeerState::Alive) while connected and answering
    /// (it takes new requests), [`Suspect`](PeerState::Suspect) after
    /// `balancer.suspect_after` unanswered pings (its connection is kept,
    /// no new requests), [`Dead`](PeerState::Dead) while not connected.
    pub state: PeerState,
    /// When it entered this state.
    pub since: Instant,
    /// Requests in flight on it from this balancer.
    pub in_flight: usize,
    /// Its Noise public key, once connected in Noise mode.
    pub key: Option<PublicKey>,
}

/// A balanced tower service: `Req` in, `Res` out, over every endpoint of a
/// [`Balancer`] (see [`Balancer::method`]).
pub type Balanced<Req, Res> = Buffer<Req, BoxFuture<'static, Result<Res, BoxError>>>;

/// A client-side balancer over several servers, with failover, on tower's
/// engines.
///
/// - **Discovery** says which endpoints exist: the `[balancer]` section
///   (a static list, or a DNS name resolved again on an interval), or any
///   stream of tower [`Change`]s ([`with_discovery`](Self::with_discovery),
///   see [`discovery`]).
/// - **Health**: each endpoint has one connection, pinged every
///   `balancer.heartbeat_interval`, reconnected with backoff when lost.
///   An endpoint is ready for new requests only while connected and
///   answering: it leaves the rotation as soon as its connection drops or
///   after `balancer.suspect_after` unanswered pings, and comes back by
///   itself when it answers again.
/// - **Balancing**: [`tower::balance::p2c::Balance`], the power of two
///   choices over the ready endpoints, by requests in flight
///   ([`tower::load::PendingRequests`]).
/// - **Failover**: a [`tower::retry`] policy above the balance.
///
/// No request is silently dropped: each one returns an answer or an error.
/// When its endpoint goes down with it in flight, the request fails with
/// [`Error::EndpointDown`] naming the endpoint, unless the caller marked it
/// idempotent ([`Balancer::request_idempotent`]): then it is sent again on
/// another ready endpoint. A request that was certainly not processed (no
/// connection when it was to be sent, its connection ending before it was
/// queued, or refused by a server going away) is sent elsewhere in any
/// case. A request makes at most as many attempts
/// as there are endpoints, and a retry never goes back to the endpoint
/// that failed before it has reconnected and answered a ping. A request
/// that is not idempotent is never sent twice unless the first attempt was
/// certainly not processed.
///
/// # Examples
///
/// ```no_run
/// use netproto_daemon::{Balancer, Error, NetworkConfig};
/// use netproto_wire::Message;
///
/// # async fn run() -> netproto_daemon::Result<()> {
/// let mut config = NetworkConfig::default();
/// config.balancer.endpoints = vec![
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
pub struct Balancer {
    service: Balanced<Attempt, Message>,
    registry: Arc<Registry>,
    discovery: AbortHandle,
    response_timeout: Duration,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer")
            .field("endpoints", &self.registry.views())
            .finish_non_exhaustive()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.discovery.abort();
    }
}

impl Balancer {
    /// Finds the endpoints as `[balancer]` says (`discovery`), and waits
    /// until one is ready, or each has had a connection attempt.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an invalid configuration, an empty
    /// `balancer.endpoints` with static discovery, or a DNS configuration
    /// that cannot be read; [`Error::NoHealthyEndpoint`] when no endpoint
    /// answered within `client.connection_timeout`.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn connect(config: NetworkConfig) -> Result<Self> {
        config.validate()?;
        let b = config.balancer.clone();
        let name = b.dns_name.clone().unwrap_or_default();
        match b.discovery {
            Discovery::Dns | Discovery::Srv => {
                let resolver = discovery::resolver(&b.dns_servers)?;
                let query = match b.dns_port {
                    Some(port) if b.discovery == Discovery::Dns => DnsQuery::Host { name, port },
                    _ => DnsQuery::Srv { name },
                };
                let changes = discovery::dns(resolver, query, b.dns_interval);
                Self::with_discovery(config, changes).await
            }
            _ if b.endpoints.is_empty() => Err(Error::Invalid(
                "balancer.endpoints is empty: list the endpoints, or set balancer.discovery to \"dns\" or \"srv\"".into(),
            )),
            _ => Self::with_discovery(config, discovery::list(b.endpoints)).await,
        }
    }

    /// Balances over the endpoints that `discovery` inserts and removes
    /// (the `[balancer]` discovery keys are not used; its health keys
    /// are), and waits until one is ready, or each has had a connection
    /// attempt.
    ///
    /// An endpoint inserted under a key already present replaces the
    /// endpoint under it. A removed endpoint takes no new requests; its
    /// requests in flight finish. Errors of the stream are logged and
    /// skipped; when it ends, the endpoints known then stay.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for an invalid configuration;
    /// [`Error::NoHealthyEndpoint`] when no endpoint was ready within
    /// `client.connection_timeout`.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub async fn with_discovery<K, E, D>(config: NetworkConfig, discovery: D) -> Result<Self>
    where
        D: Stream<Item = Result<Change<K, PeerAddress>, E>> + Send + 'static,
        K: Hash + Eq + Send + 'static,
        E: Into<BoxError> + Send + 'static,
    {
        config.validate()?;
        let b = &config.balancer;
        let mut client = config.client.clone();
        client.heartbeat_interval = b.heartbeat_interval;
        let mut transport = config.transport.clone();
        transport.heartbeat_misses = b.dead_after;
        let factory = Factory {
            settings: Settings {
                heartbeat_interval: b.heartbeat_interval,
                suspect_after: b.suspect_after,
                reconnect_delay: client.reconnect_delay,
                max_reconnect_delay: b.max_reconnect_delay.max(client.reconnect_delay),
            },
            client,
            transport,
            security: config.security.clone(),
        };
        let registry = Arc::new(Registry::new());
        let task = tokio::spawn(registry::follow(discovery, registry.clone(), factory));
        let balance = Balance::new(registry.changes(Exchange::make));
        let balancer = Self {
            service: Buffer::new(balance.map_future(boxed), QUEUE),
            registry,
            discovery: task.abort_handle(),
            response_timeout: config.client.response_timeout,
        };
        let settled = |endpoints: &[EndpointView]| {
            endpoints.iter().any(|e| e.state == PeerState::Alive)
                || (!endpoints.is_empty()
                    && endpoints.iter().all(|e| e.state != PeerState::Joining))
        };
        // Not settled in time: the check below says what is wrong.
        let _ = balancer
            .wait_until(config.client.connection_timeout, settled)
            .await;
        if balancer.registry.ready() == 0 {
            return Err(Error::NoHealthyEndpoint {
                endpoints: balancer.registry.len(),
            });
        }
        Ok(balancer)
    }

    /// Sends a request that must not be repeated and waits for the answer.
    ///
    /// # Errors
    ///
    /// [`Error::EndpointDown`] naming the endpoint that went down with the
    /// request in flight (it may or may not have been processed);
    /// [`Error::NoHealthyEndpoint`]; [`Error::Dispatch`] with the server's
    /// error or a timeout; [`Error::BalancerStopped`] when the runtime the
    /// balancer was created on has shut down.
    pub async fn request(&self, message: &Message) -> Result<Message> {
        self.request_with(message, RequestOptions::default()).await
    }

    /// Sends a request that may safely be processed twice: if its endpoint
    /// goes down with it in flight, it is sent again on another one.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request); [`Error::EndpointDown`] only when no
    /// other endpoint was ready to take it again.
    pub async fn request_idempotent(&self, message: &Message) -> Result<Message> {
        self.request_with(message, RequestOptions::idempotent())
            .await
    }

    /// Sends a request with these options. It takes at most its timeout
    /// per attempt, waiting for a ready endpoint included.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_with(
        &self,
        message: &Message,
        options: RequestOptions,
    ) -> Result<Message> {
        let endpoints = self.registry.len();
        if self.registry.ready() == 0 {
            return Err(Error::NoHealthyEndpoint { endpoints });
        }
        let timeout = options.timeout.unwrap_or(self.response_timeout);
        let policy = self.failover(options.idempotent);
        let attempt = Attempt {
            message: Arc::new(message.clone()),
            timeout,
        };
        let attempts = u32::try_from(endpoints.max(1)).unwrap_or(u32::MAX);
        let limit = timeout.saturating_mul(attempts);
        match tokio::time::timeout(limit, self.send(attempt, policy)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(match error.downcast::<Error>() {
                Ok(error) => *error,
                // The buffer's worker is gone: its runtime has shut down.
                Err(other) if other.is::<Closed>() || other.is::<ServiceError>() => {
                    tracing::debug!(error = %other, "balancer stopped");
                    Error::BalancerStopped
                }
                Err(other) => Error::Io(std::io::Error::other(other)),
            }),
            Err(_) => Err(netproto_dispatch::Error::Timeout(limit).into()),
        }
    }

    /// The attempts of one request through the retry policy and the
    /// balance, as a boxed future that borrows nothing (so that the
    /// futures of callers stay `Send`).
    fn send(
        &self,
        attempt: Attempt,
        policy: Failover,
    ) -> BoxFuture<'static, Result<Message, BoxError>> {
        Box::pin(Retry::new(policy, self.service.clone()).oneshot(attempt))
    }

    /// A balanced tower service calling method `M` over the same endpoints
    /// and connections: the power of two choices over the ready endpoints
    /// by calls in flight, each endpoint a
    /// [`MethodClient`](crate::service::MethodClient) on its connection.
    /// Errors are the [`CallError`](crate::service::CallError)s of the
    /// typed client, boxed. There is no failover here: see
    /// [`method_with_failover`](Self::method_with_failover). It stops
    /// finding endpoints when the balancer is dropped.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn method<M: Method>(&self) -> Balanced<M::Request, M::Response> {
        let balance = Balance::new(self.registry.changes(endpoint::typed::<M>));
        Buffer::new(balance.map_future(boxed), QUEUE)
    }

    /// [`method`](Self::method) with the balancer's [`Failover`]: a call
    /// that certainly was not processed is sent again to another endpoint,
    /// and so is one in flight on a lost connection when `idempotent` (say
    /// so only of a method that may run twice). A non-idempotent call is
    /// never sent twice.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use netproto_daemon::{Balancer, NetworkConfig};
    /// use netproto_daemon::service::Method;
    /// use tower::ServiceExt;
    ///
    /// struct Get;
    /// impl Method for Get {
    ///     const NAME: &'static str = "kv.get.v1";
    ///     type Request = String;
    ///     type Response = Option<String>;
    /// }
    ///
    /// # async fn run(config: NetworkConfig) -> netproto_daemon::Result<()> {
    /// let balancer = Balancer::connect(config).await?;
    /// let get = balancer.method_with_failover::<Get>(true);
    /// let value = get.oneshot("colour".to_owned()).await;
    /// # let _ = value;
    /// # Ok(())
    /// # }
    /// ```
    pub fn method_with_failover<M: Method>(
        &self,
        idempotent: bool,
    ) -> Retry<Failover, Balanced<M::Request, M::Response>>
    where
        M::Request: Clone,
    {
        Retry::new(self.failover(idempotent), self.method::<M>())
    }

    fn failover(&self, idempotent: bool) -> Failover {
        Failover {
            idempotent,
            retried: 0,
            registry: self.registry.clone(),
        }
    }

    /// The endpoints, their states and loads, in the order they were
    /// discovered.
    pub fn endpoints(&self) -> Vec<EndpointView> {
        self.registry.views()
    }

    /// Waits until `condition` holds for the [`endpoints`](Self::endpoints),
    /// checking after every change of an endpoint's state and of the set.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when it does not hold within `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&[EndpointView]) -> bool,
    ) -> Result<()> {
        let mut changed = self.registry.subscribe_changes();
        let wait = async {
            loop {
                changed.borrow_and_update();
                if condition(&self.endpoints()) {
                    return;
                }
                if changed.changed().await.is_err() {
                    // The sender lives in the registry, which self holds.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::Timeout("waiting for the balancer's endpoints"))
    }
}

/// Boxes a response future, so that the buffer's type can be named.
fn boxed<F, T>(future: F) -> BoxFuture<'static, Result<T, BoxError>>
where
    F: Future<Output = Result<T, BoxError>> + Send + 'static,
{
    Box::pin(future)
}

/// The balancer's failover as a [`tower::retry`] policy: a call that
/// failed is sent again to another endpoint (the balance picks it among
/// those ready) when it certainly was not processed (no connection, the
/// connection ending before the send, refused by a server going away), or
/// when it is idempotent and was in flight on a connection that was lost;
/// never after a timeout or an answer of the server. A call is sent at most
/// once per endpoint known, and not again when none is ready.
///
/// [`Balancer::request_with`] applies it to untyped requests, and
/// [`Balancer::method_with_failover`] to typed calls.
#[derive(Debug, Clone)]
pub struct Failover {
    idempotent: bool,
    retried: usize,
    registry: Arc<Registry>,
}

impl<Req: Clone, Res> Policy<Req, Res, BoxError> for Failover {
    type Future = std::future::Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, BoxError>) -> Option<Self::Future> {
        let error = result.as_ref().err()?;
        let again = match error.downcast_ref::<Error>() {
            Some(error) => error.may_send_again(self.idempotent),
            None => error
                .downcast_ref::<CallError>()
                .is_some_and(|error| error.may_send_again(self.idempotent)),
        };
        if !again || self.retried + 1 >= self.registry.len() || self.registry.ready() == 0 {
            return None;
        }
        self.retried += 1;
        tracing::debug!(%error, idempotent = self.idempotent, "request failed over to another endpoint");
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use netproto_wire::ErrorCode;

    use super::*;

    #[test]
    fn only_requests_certainly_not_processed_or_idempotent_are_sent_again() {
        let lost = || {
            netproto_dispatch::Error::Disconnected(Arc::new(netproto_transport::Error::PeerClosed))
        };
        let down = Error::EndpointDown {
            endpoint: "127.0.0.1:9000".into(),
            cause: Some(lost()),
        };
        let unavailable = Error::Unavailable {
            endpoint: "127.0.0.1:9000".into(),
            state: PeerState::Dead,
        };
        let going = Error::Dispatch(netproto_dispatch::Error::GoingAway {
            last_request_id: 1,
            code: ErrorCode::SHUTTING_DOWN,
        });
        let timeout = Error::Dispatch(netproto_dispatch::Error::Timeout(Duration::from_secs(1)));
        let remote = Error::Dispatch(netproto_dispatch::Error::Remote {
            request_id: 1,
            code: ErrorCode::HANDLER_FAILED,
            message: "no".into(),
        });
        for (error, not_idempotent, idempotent) in [
            (&down, false, true),
            (&unavailable, true, true),
            (&going, true, true),
            (&timeout, false, false),
            (&remote, false, false),
        ] {
            assert_eq!(error.may_send_again(false), not_idempotent, "{error}");
            assert_eq!(error.may_send_again(true), idempotent, "{error}");
        }
        // A typed call's errors follow the same rules.
        let call = |source| CallError::Connection {
            method: "kv.get.v1",
            source,
        };
        let closed = netproto_dispatch::Error::Transport(netproto_transport::Error::Closed);
        let going = netproto_dispatch::Error::GoingAway {
            last_request_id: 1,
            code: ErrorCode::SHUTTING_DOWN,
        };
        for (error, not_idempotent, idempotent) in [
            (call(closed), true, true),
            (call(netproto_dispatch::Error::Closed), true, true),
            (call(going), true, true),
            (call(lost()), false, true),
            (
                call(netproto_dispatch::Error::Timeout(Duration::from_secs(1))),
                false,
                false,
            ),
            (
                CallError::Remote {
                    method: "kv.get.v1",
                    request_id: 1,
                    code: ErrorCode::HANDLER_FAILED,
                    message: "no".into(),
                },
                false,
                false,
            ),
        ] {
            assert_eq!(error.may_send_again(false), not_idempotent, "{error}");
            assert_eq!(error.may_send_again(true), idempotent, "{error}");
        }
    }
}
