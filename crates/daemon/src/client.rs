//! The client: connection with timeouts, requests in flight, reconnection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use netproto_crypto::PublicKey;
use netproto_dispatch::{Correlator, CorrelatorConfig, Unsolicited};
use netproto_transport::Connector;
use netproto_transport::sync::lock;
use netproto_wire::Message;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::{ClientConfig, SecurityConfig, TransportConfig};
use crate::security::{ServerTrust, client_security};
use crate::{Error, NetworkConfig, Result};

/// Longest wait between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

/// Logs messages the server sends without a request (this client has no
/// use for them), so that none vanishes without a trace and the queue never
/// holds up responses.
async fn drain_unsolicited(mut unsolicited: Unsolicited) {
    while let Some(item) = unsolicited.recv().await {
        tracing::debug!(?item, "unsolicited message from the server, ignored");
    }
}

/// Why a reconnection round ended without a connection, as every request
/// that waited for it sees it.
#[derive(Debug, Clone)]
enum Failure {
    /// Every attempt failed, or one failed that retrying would not help.
    GaveUp { attempts: u32, last: Arc<Error> },
    /// The client was closed (or dropped) while connecting.
    Closed,
}

impl Failure {
    /// The error for one waiting request: an authentication failure as it
    /// is (it is never retried: [`Error::is_authentication`]),
    /// [`Error::GaveUp`] otherwise.
    fn to_error(&self) -> Error {
        match self {
            Self::GaveUp { attempts, last } => {
                last.authentication_copy().unwrap_or_else(|| Error::GaveUp {
                    attempts: *attempts,
                    last: last.clone(),
                })
            }
            Self::Closed => Error::Dispatch(netproto_dispatch::Error::Closed),
        }
    }
}

/// What a reconnection round ends with.
type Outcome = std::result::Result<Arc<Correlator>, Failure>;

/// A reconnection round under way, which every request that needs the
/// connection meanwhile waits for (a spawned task, so that a request that
/// stops waiting does not stop it).
type Round = Shared<BoxFuture<'static, Outcome>>;

/// The client's connection, as requests find it.
enum Link {
    /// Not connected, and no attempt under way: the next request starts one.
    Down,
    /// Connected.
    Up(Arc<Correlator>),
    /// A reconnection round is under way.
    Connecting {
        /// Which round, so that a round ends only its own state.
        id: u64,
        /// Its outcome, for the requests that wait for it.
        round: Round,
        /// Stops it when the client is closed or dropped.
        task: AbortHandle,
    },
}

/// What the client and its reconnection rounds share.
struct Inner {
    settings: ClientConfig,
    dialer: Dialer,
    link: std::sync::Mutex<Link>,
    rounds: AtomicU64,
    server_key: std::sync::Mutex<Option<PublicKey>>,
}

/// A netproto client: one connection to one server, many requests in flight.
///
/// - When the connection is lost, every pending request fails at once with
///   the lost connection ([`netproto_dispatch::Error::Disconnected`]); a
///   server that stops answering fails each request at its
///   `response_timeout` ([`netproto_dispatch::Error::Timeout`]). A request
///   that finds no room in the connection's full send queue (a server that
///   stopped reading) within `operation_timeout` fails there, not sent
///   ([`netproto_dispatch::Error::QueueFull`]).
/// - The next request connects again: one reconnection round of up to
///   `max_reconnect_attempts` attempts (one without `auto_reconnect`), with
///   exponential backoff and jitter from `reconnect_delay`, each attempt
///   within `connection_timeout`. Every request that needs the connection
///   meanwhile waits for that same round; when it fails, they all fail with
///   [`Error::GaveUp`] and the last attempt's error, and the request after
///   that starts a new round.
/// - A failure that would repeat as it is ends the round at once, and an
///   authentication failure comes as it is, not in [`Error::GaveUp`]: a
///   server key other than the pinned one
///   ([`Error::ServerKeyMismatch`]) or the remembered one
///   ([`Error::KeyChanged`]), a TLS certificate that fails verification
///   ([`Error::is_authentication`]).
/// - A request takes at most `response_timeout` in all, waiting for a
///   connection included.
pub struct Client {
    inner: Arc<Inner>,
    replies: std::sync::Mutex<VecDeque<JoinHandle<Result<Message>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.inner.settings.address)
            .finish_non_exhaustive()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Link::Connecting { task, .. } = &*lock(&self.inner.link) {
            task.abort();
        }
    }
}

impl Client {
    /// Connects to `config.client.address`, retrying as configured.
    ///
    /// # Errors
    ///
    /// Configuration errors; [`Error::GaveUp`] with the last failure when no
    /// attempt succeeded; without retrying, [`Error::ServerKeyMismatch`] when
    /// the server's key is not the pinned one, [`Error::KeyChanged`] when it
    /// differs from the remembered one, and the transport's error when the
    /// server's TLS certificate fails verification
    /// ([`Error::is_authentication`]).
    pub async fn connect(config: NetworkConfig) -> Result<Self> {
        config.validate()?;
        let settings = config.client;
        let dialer = Dialer::new(
            &settings,
            &config.transport,
            &config.security,
            &settings.address,
        )?;
        let client = Self {
            inner: Arc::new(Inner {
                settings,
                dialer,
                link: std::sync::Mutex::new(Link::Down),
                rounds: AtomicU64::new(0),
                server_key: std::sync::Mutex::new(None),
            }),
            replies: std::sync::Mutex::new(VecDeque::new()),
        };
        client.inner.connected().await?;
        Ok(client)
    }

    /// The server's Noise public key, once connected in Noise mode.
    pub fn server_key(&self) -> Option<PublicKey> {
        *lock(&self.inner.server_key)
    }

    /// Sends `message` as a request and waits for the answer, for at most
    /// `response_timeout` in all. A request that times out is cancelled on
    /// the server (a cancel frame), which drops its handler; see
    /// [`request_within`](Self::request_within) for a deadline of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Dispatch`] with the server's error (code and text), a
    /// timeout (also when no connection came within the time), or the lost
    /// connection; the errors of a reconnection as for
    /// [`connect`](Self::connect).
    pub async fn request(&self, message: &Message) -> Result<Message> {
        self.inner.request(message).await
    }

    /// As [`request`](Self::request), with a deadline: `deadline` from now,
    /// waiting for a connection included, and never longer than
    /// `response_timeout` here. The deadline travels with the request (its
    /// `deadline` header, PROTOCOL.md Part III §2), so the server drops the
    /// handler when it passes and answers `DEADLINE_EXCEEDED`; a request
    /// that times out here is cancelled on the server too.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request); when the deadline passes, here or on
    /// the server, an error whose
    /// [`is_deadline_exceeded`](Error::is_deadline_exceeded) is true.
    pub async fn request_within(&self, message: &Message, deadline: Duration) -> Result<Message> {
        let started = Instant::now();
        let (correlator, _) = tokio::time::timeout(deadline, self.inner.ready())
            .await
            .map_err(|_| netproto_dispatch::Error::DeadlineExceeded(deadline))??;
        let left = deadline.saturating_sub(started.elapsed());
        let envelope = message.to_envelope(0);
        let options = netproto_dispatch::RequestOptions::default().deadline(left);
        let result = correlator
            .request_raw_with(envelope.msg_type, envelope.payload, &options)
            .await;
        self.inner.forget_if_lost(&correlator, &result);
        // The deadline the caller set, not what was left of it.
        let answer = result.map_err(|error| match error {
            netproto_dispatch::Error::DeadlineExceeded(_) => {
                netproto_dispatch::Error::DeadlineExceeded(deadline)
            }
            other => other,
        })?;
        Ok(Message::try_from(answer)?)
    }

    /// Sends a request of type `msg_type` with a raw payload and waits for
    /// the answer's envelope (no conversion to [`Message`]).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_raw(
        &self,
        msg_type: netproto_wire::MessageType,
        payload: bytes::Bytes,
    ) -> Result<netproto_wire::Envelope> {
        let (correlator, timeout) = self.inner.ready().await?;
        let result = correlator
            .request_raw_with_timeout(msg_type, payload, timeout)
            .await;
        self.inner.forget_if_lost(&correlator, &result);
        Ok(result?)
    }

    /// Typed calls ([`service::TypedClient`](crate::service::TypedClient))
    /// over this client's connection, connecting first when there is none.
    ///
    /// The typed client keeps this connection and does not reconnect: when
    /// it is lost, its calls fail with
    /// [`CallError::Connection`](crate::service::CallError::Connection);
    /// take a new one with `typed()` once a [`request`](Self::request) has
    /// reconnected. Its calls take the configured `response_timeout` at
    /// most, as every request does.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect) when no connection can be made within
    /// `response_timeout`.
    pub async fn typed(&self) -> Result<netproto_service::TypedClient> {
        let (correlator, _) = self.inner.ready().await?;
        Ok(netproto_service::TypedClient::new(correlator))
    }

    /// Sends `message` as a request without waiting; [`recv`](Self::recv)
    /// returns the answers in the order the requests were sent.
    ///
    /// # Errors
    ///
    /// The errors of a reconnection, as for [`connect`](Self::connect).
    pub async fn send(&self, message: Message) -> Result<()> {
        // Connect (or fail) now, so that send reports connection errors.
        self.inner.connected().await?;
        let inner = self.inner.clone();
        let reply = tokio::spawn(async move { inner.request(&message).await });
        lock(&self.replies).push_back(reply);
        Ok(())
    }

    /// The answer to the oldest request sent with [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// The request's error; [`Error::Invalid`] when nothing was sent.
    pub async fn recv(&self) -> Result<Message> {
        let next = lock(&self.replies).pop_front();
        match next {
            Some(reply) => reply
                .await
                .map_err(|e| Error::Invalid(format!("request task failed: {e}")))?,
            None => Err(Error::Invalid("recv without a request sent".into())),
        }
    }

    /// Closes the connection after the pending requests are answered (each
    /// within its timeout) and everything queued is sent; stops a
    /// reconnection under way, whose waiting requests fail with
    /// [`netproto_dispatch::Error::Closed`]. A later request connects again.
    ///
    /// # Errors
    ///
    /// None in practice: closing an already closed connection succeeds.
    pub async fn close(&self) -> Result<()> {
        let previous = std::mem::replace(&mut *lock(&self.inner.link), Link::Down);
        match previous {
            Link::Up(correlator) => {
                let _ = correlator.close().await;
            }
            Link::Connecting { task, .. } => task.abort(),
            Link::Down => {}
        }
        Ok(())
    }
}

impl Inner {
    /// One request: the connection (waiting for a reconnection if needed),
    /// then the answer, within `response_timeout` in all.
    async fn request(self: &Arc<Self>, message: &Message) -> Result<Message> {
        let (correlator, timeout) = self.ready().await?;
        let result = correlator.request_with_timeout(message, timeout).await;
        self.forget_if_lost(&correlator, &result);
        Ok(result?)
    }

    /// The live connection and the time the request has left for its
    /// answer: all of `response_timeout` when connected, what is left of it
    /// after waiting for a reconnection otherwise.
    async fn ready(self: &Arc<Self>) -> Result<(Arc<Correlator>, Duration)> {
        let timeout = self.settings.response_timeout;
        if let Link::Up(correlator) = &*lock(&self.link) {
            return Ok((correlator.clone(), timeout));
        }
        let start = Instant::now();
        let correlator = tokio::time::timeout_at(start + timeout, self.connected())
            .await
            .map_err(|_| netproto_dispatch::Error::Timeout(timeout))??;
        let left = timeout.saturating_sub(start.elapsed());
        Ok((correlator, left.max(Duration::from_millis(1))))
    }

    /// Forgets the connection when a request's result says it takes no more
    /// requests, so that the next request reconnects.
    fn forget_if_lost<T>(
        &self,
        dead: &Arc<Correlator>,
        result: &std::result::Result<T, netproto_dispatch::Error>,
    ) {
        if result
            .as_ref()
            .is_err_and(netproto_dispatch::Error::is_connection_lost)
        {
            let mut link = lock(&self.link);
            if matches!(&*link, Link::Up(live) if Arc::ptr_eq(live, dead)) {
                tracing::debug!("connection lost; the next request reconnects");
                *link = Link::Down;
            }
        }
    }

    /// The live connection; when there is none, waits for the reconnection
    /// round under way, starting one if needed.
    async fn connected(self: &Arc<Self>) -> Result<Arc<Correlator>> {
        let round = {
            let mut link = lock(&self.link);
            match &*link {
                Link::Up(correlator) => return Ok(correlator.clone()),
                Link::Connecting { round, .. } => round.clone(),
                Link::Down => {
                    // The round cannot end before `link` says it is under
                    // way: ending it takes this lock.
                    let id = self.rounds.fetch_add(1, Ordering::Relaxed);
                    let task = tokio::spawn(self.clone().reconnect(id));
                    let abort = task.abort_handle();
                    let round = task
                        .map(|joined| joined.unwrap_or(Err(Failure::Closed)))
                        .boxed()
                        .shared();
                    *link = Link::Connecting {
                        id,
                        round: round.clone(),
                        task: abort,
                    };
                    round
                }
            }
        };
        round.await.map_err(|failure| failure.to_error())
    }

    /// One reconnection round: attempts with backoff until one succeeds,
    /// `max_reconnect_attempts` have failed (one without `auto_reconnect`),
    /// or one fails in a way that retrying would not help. Leaves the link
    /// up, or down for the next request to start another round.
    async fn reconnect(self: Arc<Self>, id: u64) -> Outcome {
        let outcome = self.attempts().await;
        let mut link = lock(&self.link);
        if matches!(&*link, Link::Connecting { id: current, .. } if *current == id) {
            *link = match &outcome {
                Ok(correlator) => Link::Up(correlator.clone()),
                Err(_) => Link::Down,
            };
        }
        outcome
    }

    async fn attempts(&self) -> Outcome {
        let c = &self.settings;
        let attempts = if c.auto_reconnect {
            c.max_reconnect_attempts
        } else {
            1
        };
        let mut backoff = Backoff::new(c.reconnect_delay, MAX_RECONNECT_DELAY, 2);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.connect_once().await {
                Ok(correlator) => return Ok(correlator),
                // What would fail again as it is (a server key other than
                // the pinned one, say) is not retried.
                Err(error) if attempt >= attempts || !error.is_retryable() => {
                    let mut cause: &dyn std::error::Error = &error;
                    while let Some(source) = cause.source() {
                        cause = source;
                    }
                    tracing::warn!(%error, %cause, attempts = attempt, address = %c.address, "cannot connect to the server; giving up");
                    return Err(Failure::GaveUp {
                        attempts: attempt,
                        last: Arc::new(error),
                    });
                }
                Err(error) => {
                    let wait = backoff.next_wait();
                    tracing::debug!(%error, attempt, ?wait, "connection failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn connect_once(&self) -> Result<Arc<Correlator>> {
        let (correlator, key) = self.dialer.dial(&self.settings.address).await?;
        if let Some(key) = key {
            *lock(&self.server_key) = Some(key);
        }
        Ok(Arc::new(correlator))
    }
}

/// What a connection attempt needs, prepared once: the connection's
/// settings, the timeouts of `[client]`, the security mode and how the
/// server is authenticated.
#[derive(Debug)]
pub(crate) struct Dialer {
    /// Security, connection settings and both timeouts
    /// (`client.connection_timeout` for the TCP connect and the handshake).
    connector: Connector,
    response_timeout: Duration,
    /// `client.operation_timeout`: the longest wait for room in the send
    /// queue.
    operation_timeout: Duration,
    trust: ServerTrust,
}

impl Dialer {
    /// Connections to the server at `address` with these settings.
    pub(crate) fn new(
        client: &ClientConfig,
        transport: &TransportConfig,
        security: &SecurityConfig,
        address: &str,
    ) -> Result<Self> {
        let (security, trust) = client_security(security, client.server_key, address)?;
        let connector = Connector::builder(security, client.connection_config(transport)?)
            .connect_timeout(client.connection_timeout)
            .handshake_timeout(client.connection_timeout)
            .build()?;
        Ok(Self {
            connector,
            response_timeout: client.response_timeout,
            operation_timeout: client.operation_timeout,
            trust,
        })
    }

    /// Time allowed for the answer to one request (`client.response_timeout`).
    pub(crate) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// One connection attempt to `address` (no retry): the handshake, the
    /// known-hosts check, and a correlator whose unsolicited messages are
    /// logged and dropped. Returns the server's Noise key when the mode has
    /// one. Host names are resolved on every call.
    pub(crate) async fn dial(&self, address: &str) -> Result<(Correlator, Option<PublicKey>)> {
        let conn = if let Some(path) = address.strip_prefix("unix:") {
            #[cfg(unix)]
            {
                self.connector.connect_unix(path).await
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                return Err(Error::Invalid("unix sockets need a unix system".into()));
            }
        } else {
            self.connector.connect_tcp(address).await
        };
        let conn = match (conn, &self.trust) {
            (Ok(conn), _) => conn,
            (
                Err(netproto_transport::Error::UnknownPeer { presented }),
                ServerTrust::Pinned(pinned),
            ) => {
                return Err(Error::ServerKeyMismatch {
                    address: address.to_owned(),
                    presented,
                    pinned: *pinned,
                });
            }
            (Err(error), _) => return Err(error.into()),
        };
        let key = conn.info().peer_static;
        if let (Some(key), ServerTrust::KnownHosts(hosts)) = (&key, &self.trust) {
            hosts.check(address, key)?;
        }
        let mut correlator_config = CorrelatorConfig::default();
        correlator_config.request_timeout = self.response_timeout;
        correlator_config.queue_timeout = Some(self.operation_timeout);
        let (correlator, unsolicited) = Correlator::new(conn, &correlator_config)?;
        tokio::spawn(drain_unsolicited(unsolicited));
        Ok((correlator, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecurityMode;

    #[test]
    fn the_connection_carries_the_client_settings() {
        let mut config = NetworkConfig::default();
        config.security.mode = SecurityMode::Plain;
        config.client.backpressure_limit = 7;
        config.client.heartbeat_interval = Duration::from_secs(4);
        config.transport.max_frame_len = 4096;
        let dialer = Dialer::new(
            &config.client,
            &config.transport,
            &config.security,
            "127.0.0.1:9000",
        )
        .unwrap();
        assert_eq!(dialer.connector.config().backpressure_limit, 7);
        assert_eq!(
            dialer.connector.config().heartbeat_interval,
            Some(Duration::from_secs(4))
        );
        assert_eq!(dialer.connector.config().max_frame_len, 4096);
        assert_eq!(
            dialer.connector.connect_timeout(),
            config.client.connection_timeout
        );
        assert_eq!(
            dialer.connector.handshake_timeout(),
            config.client.connection_timeout
        );
        config.client.backpressure_limit = 0;
        let error = config
            .client
            .connection_config(&config.transport)
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: client.backpressure_limit must be 1 to 1048576 frames, not 0"
        );
    }
}
