//! One endpoint of a balancer: its connection, kept up by a task that
//! reconnects with backoff and pings it, its health, and the tower service
//! that the balance calls on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use netproto_crypto::PublicKey;
use netproto_dispatch::Correlator;
use netproto_service::{CallError, Method, MethodClient, TypedClient};
use netproto_transport::sync::lock;
use netproto_wire::Message;
use tokio::sync::{Notify, watch};
use tower::Service;

use super::EndpointView;
use crate::backoff::Backoff;
use crate::client::Dialer;
use crate::{Error, PeerState, Result};

/// How an endpoint's connection is watched and restored.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// A ping goes to the endpoint this often.
    pub(crate) heartbeat_interval: Duration,
    /// Unanswered pings in a row before the endpoint takes no new requests.
    pub(crate) suspect_after: u32,
    /// The first wait before reconnecting after a failed attempt.
    pub(crate) reconnect_delay: Duration,
    /// The longest wait between two connection attempts.
    pub(crate) max_reconnect_delay: Duration,
}

/// What the view shows of an endpoint.
#[derive(Debug)]
struct Status {
    state: PeerState,
    since: Instant,
    key: Option<PublicKey>,
}

/// One endpoint: its address, its connection, its health.
#[derive(Debug)]
pub(crate) struct Endpoint {
    address: String,
    /// The connection that new requests may use: set while connected and
    /// answering, `None` otherwise. Its receivers are the endpoint's
    /// readiness.
    ready: watch::Sender<Option<Arc<Correlator>>>,
    status: Mutex<Status>,
    in_flight: AtomicUsize,
    /// Wakes the task when a request saw the connection end.
    lost: Notify,
    /// Bumped on every change of state of any endpoint of the balancer.
    changed: Arc<watch::Sender<u64>>,
}

impl Endpoint {
    /// The endpoint at `address`, not connected yet.
    pub(crate) fn new(address: String, changed: Arc<watch::Sender<u64>>) -> Self {
        Self {
            address,
            ready: watch::channel(None).0,
            status: Mutex::new(Status {
                state: PeerState::Joining,
                since: Instant::now(),
                key: None,
            }),
            in_flight: AtomicUsize::new(0),
            lost: Notify::new(),
            changed,
        }
    }

    pub(crate) fn state(&self) -> PeerState {
        lock(&self.status).state
    }

    /// Connected and answering: may take new requests.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.borrow().is_some()
    }

    pub(crate) fn view(&self) -> EndpointView {
        let status = lock(&self.status);
        EndpointView {
            address: self.address.clone(),
            state: status.state,
            since: status.since,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            key: status.key,
        }
    }

    /// Enters `state`, with `ready` as the connection for new requests,
    /// and tells whoever waits for a change.
    fn enter(&self, state: PeerState, ready: Option<&Arc<Correlator>>) {
        let changed = {
            let mut status = lock(&self.status);
            let changed = status.state != state;
            if changed {
                status.state = state;
                status.since = Instant::now();
            }
            changed
        };
        self.ready.send_if_modified(|current| {
            let same = match (current.as_ref(), ready) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            if !same {
                *current = ready.cloned();
            }
            !same
        });
        if changed {
            match state {
                PeerState::Alive => tracing::info!(peer = %self.address, "endpoint up"),
                _ => tracing::info!(peer = %self.address, %state, "endpoint out of rotation"),
            }
            self.changed.send_modify(|version| *version += 1);
        }
    }

    /// A request saw `dead` end: if it is the connection new requests use,
    /// takes the endpoint out of rotation at once; wakes the task, whose
    /// next ping on a dead connection fails at once.
    pub(crate) fn lost(&self, dead: &Arc<Correlator>) {
        let current = self
            .ready
            .borrow()
            .as_ref()
            .is_some_and(|ready| Arc::ptr_eq(ready, dead));
        if current {
            self.enter(PeerState::Dead, None);
        }
        self.lost.notify_one();
    }

    /// The endpoint left the balancer (its task is stopped): no new
    /// requests; the connection closes once those in flight are done.
    pub(crate) fn stop(&self) {
        self.enter(PeerState::Dead, None);
    }

    /// Connects, watches and reconnects, until aborted. After a failed
    /// attempt it waits with exponential backoff; after losing a connection
    /// that answered, it tries again at once.
    pub(crate) async fn run(self: Arc<Self>, dialer: Dialer, settings: Settings) {
        let mut backoff = Backoff::new(settings.reconnect_delay, settings.max_reconnect_delay, 4);
        loop {
            match dialer.dial(&self.address).await {
                Ok((correlator, key)) => {
                    lock(&self.status).key = key;
                    if self.keep(&Arc::new(correlator), &settings).await {
                        backoff.reset();
                        continue;
                    }
                }
                Err(error) => {
                    tracing::debug!(peer = %self.address, %error, "connection attempt failed");
                    self.enter(PeerState::Dead, None);
                }
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    /// Pings the connection every interval until it is lost; returns
    /// whether any ping was answered.
    async fn keep(&self, correlator: &Arc<Correlator>, settings: &Settings) -> bool {
        let interval = settings.heartbeat_interval;
        let (mut answered, mut missed) = (false, 0);
        loop {
            let started = tokio::time::Instant::now();
            match correlator
                .request_with_timeout(&Message::Ping, interval)
                .await
            {
                // An error frame (no PING handler, say) is a sign of life.
                Ok(_)
                | Err(
                    netproto_dispatch::Error::Remote { .. } | netproto_dispatch::Error::Wire(_),
                ) => {
                    answered = true;
                    missed = 0;
                    self.enter(PeerState::Alive, Some(correlator));
                }
                Err(error) if lost(&error) => {
                    tracing::debug!(peer = %self.address, %error, "connection lost");
                    self.enter(PeerState::Dead, None);
                    return answered;
                }
                Err(error) => {
                    missed += 1;
                    tracing::debug!(peer = %self.address, %error, missed, "ping missed");
                    if missed >= settings.suspect_after {
                        // In flight requests go on; the connection's own
                        // heartbeat closes it if the endpoint stays silent.
                        self.enter(PeerState::Suspect, None);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(started + interval) => {}
                () = self.lost.notified() => {}
            }
        }
    }
}

/// One request of a balancer, as the balance hands it to an endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// Shared: the retry policy keeps a copy of every attempt.
    pub(crate) message: Arc<Message>,
    pub(crate) timeout: Duration,
}

/// What an endpoint's service needs to know of its errors.
pub(crate) trait EndpointError: Sized {
    /// The connection takes no more requests.
    fn connection_lost(&self) -> bool;
    /// The error of a call made while the endpoint had no connection (not
    /// sent).
    fn not_connected(endpoint: &Endpoint) -> Self;
    /// Whether the call may go to another endpoint: it certainly was not
    /// processed, or it is `idempotent` and was in flight on a connection
    /// that was lost. Never after a timeout or the server's own answer.
    fn may_send_again(&self, idempotent: bool) -> bool;
}

impl EndpointError for Error {
    fn connection_lost(&self) -> bool {
        match self {
            Self::EndpointDown { .. } | Self::Unavailable { .. } => true,
            Self::Dispatch(error) => lost(error),
            _ => false,
        }
    }

    fn not_connected(endpoint: &Endpoint) -> Self {
        Self::Unavailable {
            endpoint: endpoint.address.clone(),
            state: endpoint.state(),
        }
    }

    fn may_send_again(&self, idempotent: bool) -> bool {
        match self {
            // Not sent: no connection, or the connection ending first.
            Self::Unavailable { .. } => true,
            // Refused by a server going away.
            Self::Dispatch(error) => error.is_unprocessed(),
            // In flight when the endpoint went down: maybe processed.
            Self::EndpointDown { .. } => idempotent,
            _ => false,
        }
    }
}

impl EndpointError for CallError {
    fn connection_lost(&self) -> bool {
        matches!(self, Self::Connection { source, .. } if lost(source))
    }

    fn not_connected(_: &Endpoint) -> Self {
        Self::Connection {
            method: "balanced call",
            source: netproto_dispatch::Error::Closed,
        }
    }

    fn may_send_again(&self, idempotent: bool) -> bool {
        match self {
            Self::Connection { source, .. } => {
                unsent(source)
                    || source.is_unprocessed()
                    || (idempotent && source.is_connection_lost())
            }
            _ => false,
        }
    }
}

/// The connection takes no more requests: lost, closed, going away, or its
/// send queue closed (the connection is ending).
fn lost(error: &netproto_dispatch::Error) -> bool {
    error.is_connection_lost() || unsent(error)
}

/// The request could not be queued because the connection is ending: it
/// was not sent.
fn unsent(error: &netproto_dispatch::Error) -> bool {
    matches!(
        error,
        netproto_dispatch::Error::Transport(netproto_transport::Error::Closed)
    )
}

/// Makes the service that calls one connection.
pub(crate) type Make<S> = fn(Arc<Correlator>, &Arc<Endpoint>) -> S;

/// Untyped requests on one connection; errors name the endpoint.
#[derive(Debug)]
pub(crate) struct Exchange {
    endpoint: Arc<Endpoint>,
    correlator: Arc<Correlator>,
}

impl Exchange {
    pub(crate) fn make(correlator: Arc<Correlator>, endpoint: &Arc<Endpoint>) -> Self {
        Self {
            endpoint: endpoint.clone(),
            correlator,
        }
    }
}

impl Service<Attempt> for Exchange {
    type Response = Message;
    type Error = Error;
    type Future = BoxFuture<'static, Result<Message>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, attempt: Attempt) -> Self::Future {
        let (endpoint, correlator) = (self.endpoint.clone(), self.correlator.clone());
        Box::pin(async move {
            let result = correlator
                .request_with_timeout(&attempt.message, attempt.timeout)
                .await;
            result.map_err(|error| match error {
                // Closed here, or the connection ending, before it was sent.
                error if unsent(&error) => Error::not_connected(&endpoint),
                netproto_dispatch::Error::Closed => Error::not_connected(&endpoint),
                cause @ netproto_dispatch::Error::Disconnected(_) => Error::EndpointDown {
                    endpoint: endpoint.address.clone(),
                    cause: Some(cause),
                },
                other => other.into(),
            })
        })
    }
}

/// Typed calls of method `M` on one connection.
pub(crate) fn typed<M: Method>(correlator: Arc<Correlator>, _: &Arc<Endpoint>) -> MethodClient<M> {
    TypedClient::new(correlator).method::<M>()
}

/// The tower service of one endpoint, as a balance holds it: ready while
/// the endpoint is connected and answering (the service `make` builds on
/// its connection decides the rest), pending otherwise.
pub(crate) struct EndpointService<S> {
    endpoint: Arc<Endpoint>,
    ready: watch::Receiver<Option<Arc<Correlator>>>,
    /// A wait for the endpoint's next change of readiness.
    wait: Option<BoxFuture<'static, ()>>,
    make: Make<S>,
    /// The service on the current connection.
    current: Option<(Arc<Correlator>, S)>,
}

impl<S> EndpointService<S> {
    pub(crate) fn new(endpoint: Arc<Endpoint>, make: Make<S>) -> Self {
        let ready = endpoint.ready.subscribe();
        Self {
            endpoint,
            ready,
            wait: None,
            make,
            current: None,
        }
    }
}

impl<S, Req> Service<Req> for EndpointService<S>
where
    S: Service<Req>,
    S::Error: EndpointError + Send + 'static,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        loop {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            let connection = self.ready.borrow_and_update().clone();
            let Some(connection) = connection else {
                self.current = None;
                let mut ready = self.ready.clone();
                self.wait = Some(Box::pin(async move {
                    // The sender lives in the endpoint, which this holds.
                    if ready.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }));
                continue;
            };
            let stale = self
                .current
                .as_ref()
                .is_none_or(|(current, _)| !Arc::ptr_eq(current, &connection));
            if stale {
                let service = (self.make)(connection.clone(), &self.endpoint);
                self.current = Some((connection, service));
            }
            if let Some((_, service)) = self.current.as_mut() {
                return service.poll_ready(cx);
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // The connection may have ended since `poll_ready`: then the request
        // is not sent, and may go elsewhere whatever it is.
        let connected = self.current.as_mut().filter(|(correlator, _)| {
            self.ready
                .borrow()
                .as_ref()
                .is_some_and(|ready| Arc::ptr_eq(ready, correlator))
        });
        let Some((correlator, service)) = connected else {
            let error = S::Error::not_connected(&self.endpoint);
            return Box::pin(std::future::ready(Err(error)));
        };
        let (endpoint, correlator) = (self.endpoint.clone(), correlator.clone());
        endpoint.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = InFlight(endpoint.clone());
        let response = service.call(request);
        Box::pin(async move {
            let _in_flight = in_flight;
            let result = response.await;
            if let Err(error) = &result
                && error.connection_lost()
            {
                endpoint.lost(&correlator);
            }
            result
        })
    }
}

/// Counts one request in flight on an endpoint while it lives.
struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use netproto_wire::ErrorCode;

    use super::*;

    #[test]
    fn a_connection_ending_before_the_send_means_not_sent_and_lost() {
        let closed = netproto_dispatch::Error::Transport(netproto_transport::Error::Closed);
        assert!(unsent(&closed) && lost(&closed));
        let going = netproto_dispatch::Error::GoingAway {
            last_request_id: 1,
            code: ErrorCode::SHUTTING_DOWN,
        };
        assert!(!unsent(&going) && lost(&going));
        let timeout = netproto_dispatch::Error::Timeout(Duration::from_secs(1));
        assert!(!unsent(&timeout) && !lost(&timeout));
        let endpoint = Endpoint::new("127.0.0.1:9000".into(), Arc::new(watch::channel(0).0));
        let error = Error::not_connected(&endpoint);
        assert!(
            matches!(&error, Error::Unavailable { endpoint, state: PeerState::Joining } if endpoint == "127.0.0.1:9000")
        );
        assert!(error.connection_lost());
        let typed = CallError::not_connected(&endpoint);
        assert!(typed.connection_lost());
        assert!(!Error::Dispatch(timeout).connection_lost());
    }
}
