//! The client: `client::connect_with_config(config)` and
//! `client::connect_tls(address, tls_config)`, giving a [`Connection`].
//!
//! # Server authentication (read this)
//!
//! [`connect_with_config`] speaks Noise (`Noise_XX_25519_ChaChaPoly_SHA256`)
//! to the server, like the original crate, but the original README's
//! [`ClientConfig`] has no field for the server's key. Without a pinned key
//! or a known-hosts file the connection is encrypted but the server is **not
//! authenticated**: an active attacker in the middle would not be noticed.
//! The daemon client logs a warning every time this happens. Authenticate
//! the server with one of:
//!
//! - [`connect_pinned`]: the server's public key
//!   ([`Server::public_key`](super::daemon::Server::public_key), or the key
//!   file made by `netproto keygen`), checked inside the handshake;
//! - [`connect_with_network_config`] with `security.server_key` (a pin) or
//!   `security.known_hosts` (trust on first use, then a changed key is
//!   refused loudly, as SSH does; the `netproto` command's default);
//! - TLS with [`connect_tls`], which verifies the server's certificate
//!   against the given CA.
//!
//! # Examples
//!
//! ```no_run
//! use network_protocol::protocol::message::Message;
//! use network_protocol::service::client::{self, ClientConfig};
//!
//! # async fn run(server_key: network_protocol::utils::crypto::PublicKey) -> network_protocol::error::Result<()> {
//! let mut config = ClientConfig::default();
//! config.address = "127.0.0.1:9000".into();
//! let mut conn = client::connect_pinned(config, server_key).await?;
//! conn.secure_send(Message::Echo("hello".into())).await?;
//! assert_eq!(conn.secure_recv().await?, Message::Echo("hello".into()));
//! // Or both at once, with many requests in flight on one connection:
//! assert_eq!(conn.request(&Message::Ping).await?, Message::Pong);
//! conn.close().await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

use netproto_crypto::PublicKey;
use netproto_wire::Message;

pub use crate::config::ClientConfig;
use crate::config::NetworkConfig;
use crate::error::{ProtocolError, Result};

/// TLS client settings, as in the original crate.
///
/// Exhaustive on purpose, so that the original README's struct literal
/// compiles as written. There are no system roots: `ca_path` (the CA, or
/// the server's self-signed certificate) is required. For SPKI pins (checked
/// in addition to full certificate verification, never instead), use
/// [`connect_with_network_config`] with `security.tls_pins`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsClientConfig<'a> {
    /// This client's certificate chain (PEM), for mutual TLS.
    pub cert_path: Option<&'a str>,
    /// The private key (PEM) of `cert_path`, for mutual TLS.
    pub key_path: Option<&'a str>,
    /// The CA certificates (PEM) the server's certificate must chain to.
    /// Required.
    pub ca_path: Option<&'a str>,
    /// The name the server's certificate must carry (also sent as SNI): a
    /// DNS name or an IP address.
    pub server_name: &'a str,
}

impl TlsClientConfig<'_> {
    /// Writes these settings into the security section of `config` (mode
    /// `tls`).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Config`] without `ca_path`, or with only one of
    /// `cert_path` and `key_path`.
    pub fn apply_to(&self, config: &mut netproto_daemon::NetworkConfig) -> Result<()> {
        let Some(ca) = self.ca_path else {
            return Err(ProtocolError::Config(
                "TlsClientConfig::ca_path is required: the client trusts no system roots",
            ));
        };
        if self.cert_path.is_some() != self.key_path.is_some() {
            return Err(ProtocolError::Config(
                "TlsClientConfig: set both cert_path and key_path for mutual TLS, or neither",
            ));
        }
        let security = &mut config.security;
        security.mode = netproto_daemon::SecurityMode::Tls;
        security.tls_ca = Some(ca.into());
        security.tls_cert = self.cert_path.map(Into::into);
        security.tls_key = self.key_path.map(Into::into);
        security.server_name = Some(self.server_name.to_owned());
        Ok(())
    }
}

/// Connects with the original crate's [`ClientConfig`]: Noise, the server's
/// key **not pinned** (see the [module documentation](self)), retries as
/// configured.
///
/// # Errors
///
/// [`ProtocolError::Daemon`] with the daemon's error: a bad setting, or
/// [`netproto_daemon::Error::GaveUp`] with the last failure when no attempt
/// succeeded.
pub async fn connect_with_config(config: ClientConfig) -> Result<Connection> {
    connect_with_daemon_config(config.to_daemon()).await
}

/// Connects like [`connect_with_config`], with the server's Noise public key
/// pinned: the handshake fails against any other key.
///
/// # Errors
///
/// As [`connect_with_config`]; against another key, at once (without
/// retrying), [`netproto_daemon::Error::ServerKeyMismatch`] naming both
/// keys.
pub async fn connect_pinned(config: ClientConfig, server_key: PublicKey) -> Result<Connection> {
    let mut daemon = config.to_daemon();
    daemon.security.server_key = Some(server_key);
    connect_with_daemon_config(daemon).await
}

/// Connects with a full [`NetworkConfig`] (its `client`, `transport` and
/// `security` sections): any security mode, pins, known hosts, key file.
///
/// # Errors
///
/// As [`connect_with_config`].
pub async fn connect_with_network_config(config: NetworkConfig) -> Result<Connection> {
    connect_with_daemon_config(config.to_daemon()).await
}

/// Connects with the daemon's own configuration.
///
/// # Errors
///
/// As [`connect_with_config`].
pub async fn connect_with_daemon_config(
    config: netproto_daemon::NetworkConfig,
) -> Result<Connection> {
    let client = netproto_daemon::Client::connect(config).await?;
    Ok(Connection {
        client: Arc::new(client),
    })
}

/// Connects to `address` over TLS, with the default [`ClientConfig`]
/// timeouts and retries.
///
/// The server's certificate is fully verified against `ca_path` and
/// `server_name`; with `cert_path` and `key_path` the client presents its
/// certificate for mutual TLS.
///
/// # Errors
///
/// As [`TlsClientConfig::apply_to`] and [`connect_with_config`] (an
/// untrusted certificate or a name mismatch is a transport error inside).
pub async fn connect_tls(address: &str, config: TlsClientConfig<'_>) -> Result<Connection> {
    let mut client = ClientConfig::default();
    address.clone_into(&mut client.address);
    connect_tls_with_config(client, config).await
}

/// Connects over TLS with the timeouts and retries of `client` (whose
/// `address` is used).
///
/// # Errors
///
/// As [`connect_tls`].
pub async fn connect_tls_with_config(
    client: ClientConfig,
    tls: TlsClientConfig<'_>,
) -> Result<Connection> {
    let mut daemon = client.to_daemon();
    tls.apply_to(&mut daemon)?;
    connect_with_daemon_config(daemon).await
}

/// A connection to a server: requests and their answers.
///
/// Every message sent is a request; the server's handler answers it.
/// [`send`](Self::send) (alias [`secure_send`](Self::secure_send)) queues a
/// request and [`receive`](Self::receive) (alias
/// [`secure_recv`](Self::secure_recv)) returns the answers in the order the
/// requests were sent; [`request`](Self::request) does both and allows many
/// requests in flight at once. Whatever the security mode, every message is
/// encrypted: the `secure_` names exist for the original crate's users.
#[derive(Debug)]
pub struct Connection {
    client: Arc<netproto_daemon::Client>,
}

impl Connection {
    /// Sends `message` as a request; its answer comes from
    /// [`receive`](Self::receive).
    ///
    /// # Errors
    ///
    /// Connection errors (after reconnection attempts, if configured).
    pub async fn send(&mut self, message: Message) -> Result<()> {
        Ok(self.client.send(message).await?)
    }

    /// The answer to the oldest request sent with [`send`](Self::send).
    ///
    /// # Errors
    ///
    /// The request's error: the server's error answer (for example no
    /// handler for the type), a timeout after `response_timeout`, or the
    /// lost connection; an error if nothing was sent.
    pub async fn receive(&mut self) -> Result<Message> {
        Ok(self.client.recv().await?)
    }

    /// Same as [`send`](Self::send); every message is encrypted.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    pub async fn secure_send(&mut self, message: Message) -> Result<()> {
        self.send(message).await
    }

    /// Same as [`receive`](Self::receive); every message is encrypted.
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive).
    pub async fn secure_recv(&mut self) -> Result<Message> {
        self.receive().await
    }

    /// Sends `message` and waits for its answer. Many requests may be in
    /// flight at once (call it from several tasks through a shared
    /// reference).
    ///
    /// # Errors
    ///
    /// As [`receive`](Self::receive).
    pub async fn request(&self, message: &Message) -> Result<Message> {
        Ok(self.client.request(message).await?)
    }

    /// The server's Noise public key (Noise mode, once connected): pin it
    /// next time.
    pub fn server_key(&self) -> Option<PublicKey> {
        self.client.server_key()
    }

    /// The daemon client underneath, for its raw-payload requests.
    pub fn client(&self) -> &Arc<netproto_daemon::Client> {
        &self.client
    }

    /// Closes the connection after everything queued is sent.
    ///
    /// # Errors
    ///
    /// None in practice: closing a closed connection succeeds.
    pub async fn close(&mut self) -> Result<()> {
        Ok(self.client.close().await?)
    }
}
