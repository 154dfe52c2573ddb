//! The client: connection with timeouts, requests in flight, reconnection.

use netproto_transport::sync::lock;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use netproto_crypto::PublicKey;
use netproto_dispatch::{Correlator, CorrelatorConfig, Unsolicited};
use netproto_transport::Connector;
use netproto_wire::Message;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::config::{ClientConfig, SecurityConfig, TransportConfig};
use crate::security::{ServerTrust, client_security};
use crate::{Error, NetworkConfig, Result};

/// Longest wait between two connection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(30);

struct Live {
    correlator: Arc<Correlator>,
}

/// Logs messages the server sends without a request (this client has no
/// use for them), so that none vanishes without a trace and the queue never
/// holds up responses.
async fn drain_unsolicited(mut unsolicited: Unsolicited) {
    while let Some(item) = unsolicited.recv().await {
        tracing::debug!(?item, "unsolicited message from the server, ignored");
    }
}

/// A netproto client: one connection to one server, many requests in flight.
///
/// After the connection is lost, every pending request fails with a clear
/// error; with `auto_reconnect` the next request connects again, with
/// exponential backoff and jitter, up to `max_reconnect_attempts`.
pub struct Client {
    settings: ClientConfig,
    dialer: Dialer,
    live: Mutex<Option<Live>>,
    /// The live correlator, for requests to reach without waiting on `live`
    /// (which is held while reconnecting); always `live`'s, or `None`.
    current: std::sync::Mutex<Option<Arc<Correlator>>>,
    replies: std::sync::Mutex<VecDeque<JoinHandle<Result<Message>>>>,
    server_key: std::sync::Mutex<Option<PublicKey>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.settings.address)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `config.client.address`, retrying as configured.
    ///
    /// # Errors
    ///
    /// Configuration errors; [`Error::GaveUp`] with the last failure when no
    /// attempt succeeded; [`Error::KeyChanged`] when the server's key differs
    /// from the remembered one (never retried).
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
            settings,
            dialer,
            live: Mutex::new(None),
            current: std::sync::Mutex::new(None),
            replies: std::sync::Mutex::new(VecDeque::new()),
            server_key: std::sync::Mutex::new(None),
        };
        client.correlator().await?;
        Ok(client)
    }

    /// The server's Noise public key, once connected in Noise mode.
    pub fn server_key(&self) -> Option<PublicKey> {
        *lock(&self.server_key)
    }

    /// Sends `message` as a request and waits for the answer.
    ///
    /// # Errors
    ///
    /// [`Error::Dispatch`] with the server's error (code and text), a
    /// timeout, or the lost connection; connection errors as for
    /// [`connect`](Self::connect).
    pub async fn request(&self, message: &Message) -> Result<Message> {
        let correlator = self.correlator().await?;
        let result = correlator
            .request_with_timeout(message, self.settings.response_timeout)
            .await;
        self.forget_if_lost(&correlator, &result).await;
        Ok(result?)
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
        let correlator = self.correlator().await?;
        let result = correlator
            .request_raw_with_timeout(msg_type, payload, self.settings.response_timeout)
            .await;
        self.forget_if_lost(&correlator, &result).await;
        Ok(result?)
    }

    /// Forgets the connection when a request's result says it takes no more
    /// requests, so that the next request reconnects.
    async fn forget_if_lost<T>(
        &self,
        correlator: &Arc<Correlator>,
        result: &std::result::Result<T, netproto_dispatch::Error>,
    ) {
        if result
            .as_ref()
            .is_err_and(netproto_dispatch::Error::is_connection_lost)
        {
            self.forget(correlator).await;
        }
    }

    /// Sends `message` as a request without waiting; [`recv`](Self::recv)
    /// returns the answers in the order the requests were sent.
    ///
    /// # Errors
    ///
    /// Connection errors; [`Error::Timeout`] if the request could not be
    /// queued within `operation_timeout`.
    pub async fn send(self: &Arc<Self>, message: Message) -> Result<()> {
        // Connect (or fail) now, so that send reports connection errors.
        self.correlator().await?;
        let this = self.clone();
        let reply = tokio::spawn(async move { this.request(&message).await });
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

    /// Closes the connection after everything queued is sent.
    ///
    /// # Errors
    ///
    /// None in practice: closing an already closed connection succeeds.
    pub async fn close(&self) -> Result<()> {
        let mut live = self.live.lock().await;
        self.set_current(None);
        if let Some(live) = live.take() {
            let _ = live.correlator.close().await;
        }
        Ok(())
    }

    fn set_current(&self, correlator: Option<Arc<Correlator>>) {
        *lock(&self.current) = correlator;
    }

    async fn forget(&self, dead: &Arc<Correlator>) {
        let mut live = self.live.lock().await;
        if live
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(&l.correlator, dead))
        {
            self.set_current(None);
            *live = None;
        }
    }

    /// The live connection, connecting (with retries) if there is none.
    async fn correlator(&self) -> Result<Arc<Correlator>> {
        let current = lock(&self.current).clone();
        if let Some(correlator) = current {
            return Ok(correlator);
        }
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            return Ok(l.correlator.clone());
        }
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
                Ok(fresh) => {
                    let correlator = fresh.correlator.clone();
                    self.set_current(Some(correlator.clone()));
                    *live = Some(fresh);
                    return Ok(correlator);
                }
                Err(error @ Error::KeyChanged { .. }) => return Err(error),
                // What would fail again as it is is not retried.
                Err(error) if attempt >= attempts || !error.is_retryable() => {
                    return Err(Error::GaveUp {
                        attempts: attempt,
                        last: Box::new(error),
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

    async fn connect_once(&self) -> Result<Live> {
        let (correlator, key) = self.dialer.dial(&self.settings.address).await?;
        if let Some(key) = key {
            *lock(&self.server_key) = Some(key);
        }
        Ok(Live {
            correlator: Arc::new(correlator),
        })
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
        let (security, trust) = client_security(security, address)?;
        let connector = Connector::builder(security, client.connection_config(transport)?)
            .connect_timeout(client.connection_timeout)
            .handshake_timeout(client.connection_timeout)
            .build()?;
        Ok(Self {
            connector,
            response_timeout: client.response_timeout,
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
                self.connector.connect_unix(path).await?
            }
            #[cfg(not(unix))]
            {
                let _ = path;
                return Err(Error::Invalid("unix sockets need a unix system".into()));
            }
        } else {
            self.connector.connect_tcp(address).await?
        };
        let key = conn.info().peer_static;
        if let (Some(key), ServerTrust::KnownHosts(hosts)) = (&key, &self.trust) {
            hosts.check(address, key)?;
        }
        let mut correlator_config = CorrelatorConfig::default();
        correlator_config.request_timeout = self.response_timeout;
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
