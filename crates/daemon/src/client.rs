//! The client: connection with timeouts, requests in flight, reconnection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use netproto_crypto::PublicKey;
use netproto_dispatch::{Correlator, CorrelatorConfig, Unsolicited};
use netproto_transport::{ClientSecurity, ConnectionConfig};
use netproto_wire::Message;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::security::{ServerTrust, client_security};
use crate::{Error, NetworkConfig, Result, compression};

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
    config: NetworkConfig,
    security: ClientSecurity,
    trust: ServerTrust,
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
            .field("address", &self.config.client.address)
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
        let (security, trust) = client_security(&config, &config.client.address)?;
        let client = Self {
            config,
            security,
            trust,
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
        *self.server_key.lock().unwrap_or_else(|e| e.into_inner())
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
            .request_with_timeout(message, self.config.client.response_timeout)
            .await;
        if let Err(
            netproto_dispatch::Error::Disconnected(_)
            | netproto_dispatch::Error::Closed
            | netproto_dispatch::Error::GoingAway { .. },
        ) = &result
        {
            self.forget(&correlator).await;
        }
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
            .request_raw_with_timeout(msg_type, payload, self.config.client.response_timeout)
            .await;
        if let Err(
            netproto_dispatch::Error::Disconnected(_)
            | netproto_dispatch::Error::Closed
            | netproto_dispatch::Error::GoingAway { .. },
        ) = &result
        {
            self.forget(&correlator).await;
        }
        Ok(result?)
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
        self.replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(reply);
        Ok(())
    }

    /// The answer to the oldest request sent with [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// The request's error; [`Error::Invalid`] when nothing was sent.
    pub async fn recv(&self) -> Result<Message> {
        let next = self
            .replies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
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
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = correlator;
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
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(correlator) = current {
            return Ok(correlator);
        }
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            return Ok(l.correlator.clone());
        }
        let c = &self.config.client;
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
                Err(error) if attempt >= attempts => {
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
        let (correlator, key) = dial(
            &self.config,
            &self.security,
            &self.trust,
            &self.config.client.address,
        )
        .await?;
        if let Some(key) = key {
            *self.server_key.lock().unwrap_or_else(|e| e.into_inner()) = Some(key);
        }
        Ok(Live {
            correlator: Arc::new(correlator),
        })
    }
}

/// One connection attempt to `address` (no retry): transport settings from
/// `config`, the handshake, the known-hosts check, and a correlator whose
/// unsolicited messages are logged and dropped. Returns the server's Noise
/// key when the mode has one. Host names are resolved on every call.
pub(crate) async fn dial(
    config: &NetworkConfig,
    security: &ClientSecurity,
    trust: &ServerTrust,
    address: &str,
) -> Result<(Correlator, Option<PublicKey>)> {
    let c = &config.client;
    let t = &config.transport;
    let mut connection_config = ConnectionConfig::default();
    connection_config.max_frame_len = t.max_frame_len;
    connection_config.inbound_limit = t.inbound_limit;
    connection_config.idle_timeout = Some(t.idle_timeout);
    connection_config.write_timeout = t.write_timeout;
    connection_config.heartbeat_interval = Some(c.heartbeat_interval);
    connection_config.heartbeat_misses = t.heartbeat_misses;
    connection_config.compression = compression(&t.compression)?;
    connection_config.compression_threshold = t.compression_threshold;
    connection_config.write_batch_bytes = t.write_batch_bytes;
    let config = &connection_config;
    let conn = if let Some(path) = address.strip_prefix("unix:") {
        #[cfg(unix)]
        {
            let stream = netproto_transport::connect_unix(path, c.connection_timeout).await?;
            netproto_transport::connect(stream, security, config, c.connection_timeout).await?
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            return Err(Error::Invalid("unix sockets need a unix system".into()));
        }
    } else {
        let stream = netproto_transport::connect_tcp(address, c.connection_timeout).await?;
        netproto_transport::connect(stream, security, config, c.connection_timeout).await?
    };
    let key = conn.info().peer_static;
    if let (Some(key), ServerTrust::KnownHosts(hosts)) = (&key, trust) {
        hosts.check(address, key)?;
    }
    let mut correlator_config = CorrelatorConfig::default();
    correlator_config.request_timeout = c.response_timeout;
    let (correlator, unsolicited) = Correlator::new(conn, &correlator_config)?;
    tokio::spawn(drain_unsolicited(unsolicited));
    Ok((correlator, key))
}
