//! Configuration: the original crate's [`ServerConfig`] and [`ClientConfig`]
//! literals, and [`NetworkConfig`] loaded from TOML files and the
//! environment.
//!
//! Loading is done by [`netproto_daemon::NetworkConfig`]; this module maps
//! its `server` and `client` sections onto the original crate's structs and
//! keeps every other setting alongside. Environment variables use the prefix
//! `NETPROTO` and `__` between levels (`NETPROTO__SERVER__ADDRESS`,
//! `NETPROTO__CLIENT__RESPONSE_TIMEOUT=30s`, `NETPROTO__SECURITY__SERVER_KEY`).
//!
//! A TOML file:
//!
//! ```toml
//! [server]
//! address = "127.0.0.1:9000"
//! backpressure_limit = 100
//! connection_timeout = "30s"
//! heartbeat_interval = "15s"
//! shutdown_timeout = "10s"
//! max_connections = 1000
//!
//! [client]
//! address = "127.0.0.1:9000"
//! response_timeout = "30s"
//!
//! [security]
//! mode = "noise"
//! server_key = "…64 hex digits, printed by the server…"
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub use netproto_daemon::{LoggingConfig, SecurityConfig, TransportConfig};

use crate::error::Result;

/// Server settings, as in the original crate.
///
/// Exhaustive on purpose, so that the original README's struct literal
/// compiles as written. It converts into the daemon's own configuration:
/// every setting it lacks (per-IP limit, handshakes in progress, requests in
/// flight, request timeout, security) keeps the daemon's default, and the
/// security mode is Noise with a key generated at start. Use
/// [`daemon::new_with_network_config`](crate::service::daemon::new_with_network_config)
/// to set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where to listen: `host:port` (port 0 picks a free port), or
    /// `unix:/path/to/socket`.
    pub address: String,
    /// Frames each connection's send queue holds before senders wait.
    pub backpressure_limit: usize,
    /// Time a new connection has for its preface and handshake.
    pub connection_timeout: Duration,
    /// Ping a quiet connection this often; silent peers are dropped.
    pub heartbeat_interval: Duration,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// Connections open at once; more are refused with a clear answer.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::from(&netproto_daemon::ServerConfig::default())
    }
}

impl From<&netproto_daemon::ServerConfig> for ServerConfig {
    fn from(server: &netproto_daemon::ServerConfig) -> Self {
        Self {
            address: server.address.clone(),
            backpressure_limit: server.backpressure_limit,
            connection_timeout: server.connection_timeout,
            heartbeat_interval: server.heartbeat_interval,
            shutdown_timeout: server.shutdown_timeout,
            max_connections: server.max_connections,
        }
    }
}

impl ServerConfig {
    /// Writes these settings over the matching fields of `server`.
    pub fn apply_to(&self, server: &mut netproto_daemon::ServerConfig) {
        server.address.clone_from(&self.address);
        server.backpressure_limit = self.backpressure_limit;
        server.connection_timeout = self.connection_timeout;
        server.heartbeat_interval = self.heartbeat_interval;
        server.shutdown_timeout = self.shutdown_timeout;
        server.max_connections = self.max_connections;
    }

    /// The daemon's full configuration with these server settings and
    /// defaults everywhere else (Noise, with a key generated at start).
    pub fn to_daemon(&self) -> netproto_daemon::NetworkConfig {
        let mut config = netproto_daemon::NetworkConfig::default();
        self.apply_to(&mut config.server);
        config
    }
}

/// Client settings, as in the original crate.
///
/// Exhaustive on purpose, like [`ServerConfig`]. It converts into the
/// daemon's configuration with Noise security and **no pinned server key**:
/// see [`client`](crate::service::client) for what that means and how to
/// pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The server: `host:port`, or `unix:/path/to/socket`.
    pub address: String,
    /// Time allowed to open the connection and complete the handshake.
    pub connection_timeout: Duration,
    /// Time allowed to queue one message for sending.
    pub operation_timeout: Duration,
    /// Time allowed for the answer to one request.
    pub response_timeout: Duration,
    /// Ping a quiet connection this often.
    pub heartbeat_interval: Duration,
    /// Reconnect (with exponential backoff and jitter) after a failed
    /// attempt or a lost connection.
    pub auto_reconnect: bool,
    /// Connection attempts before giving up, the first one included.
    pub max_reconnect_attempts: u32,
    /// Delay before the first retry; it doubles with each attempt.
    pub reconnect_delay: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::from(&netproto_daemon::ClientConfig::default())
    }
}

impl From<&netproto_daemon::ClientConfig> for ClientConfig {
    fn from(client: &netproto_daemon::ClientConfig) -> Self {
        Self {
            address: client.address.clone(),
            connection_timeout: client.connection_timeout,
            operation_timeout: client.operation_timeout,
            response_timeout: client.response_timeout,
            heartbeat_interval: client.heartbeat_interval,
            auto_reconnect: client.auto_reconnect,
            max_reconnect_attempts: client.max_reconnect_attempts,
            reconnect_delay: client.reconnect_delay,
        }
    }
}

impl ClientConfig {
    /// Writes these settings over the matching fields of `client`.
    pub fn apply_to(&self, client: &mut netproto_daemon::ClientConfig) {
        client.address.clone_from(&self.address);
        client.connection_timeout = self.connection_timeout;
        client.operation_timeout = self.operation_timeout;
        client.response_timeout = self.response_timeout;
        client.heartbeat_interval = self.heartbeat_interval;
        client.auto_reconnect = self.auto_reconnect;
        client.max_reconnect_attempts = self.max_reconnect_attempts;
        client.reconnect_delay = self.reconnect_delay;
    }

    /// The daemon's full configuration with these client settings and
    /// defaults everywhere else (Noise, server key not pinned).
    pub fn to_daemon(&self) -> netproto_daemon::NetworkConfig {
        let mut config = netproto_daemon::NetworkConfig::default();
        self.apply_to(&mut config.client);
        config
    }
}

/// Every setting: the original crate's `server` and `client` sections, and
/// the daemon's transport, security and logging sections.
///
/// Server settings the original crate had no field for (per-IP limit,
/// handshakes in progress, requests in flight, request timeout) are kept
/// inside and survive [`to_daemon`](Self::to_daemon); convert to and from
/// [`netproto_daemon::NetworkConfig`] to change them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    /// The server section.
    pub server: ServerConfig,
    /// The client section.
    pub client: ClientConfig,
    /// Framing, limits and timeouts shared by both sides.
    pub transport: TransportConfig,
    /// Security mode, keys, pins, known hosts and certificates.
    pub security: SecurityConfig,
    /// Log level and format.
    pub logging: LoggingConfig,
    /// The daemon's full server section (its extra limits).
    server_limits: netproto_daemon::ServerConfig,
}

impl From<netproto_daemon::NetworkConfig> for NetworkConfig {
    fn from(config: netproto_daemon::NetworkConfig) -> Self {
        Self {
            server: ServerConfig::from(&config.server),
            client: ClientConfig::from(&config.client),
            transport: config.transport,
            security: config.security,
            logging: config.logging,
            server_limits: config.server,
        }
    }
}

impl From<NetworkConfig> for netproto_daemon::NetworkConfig {
    fn from(config: NetworkConfig) -> Self {
        config.to_daemon()
    }
}

impl NetworkConfig {
    /// Reads a TOML file; missing sections and fields keep their defaults,
    /// and `NETPROTO__*` environment variables override it.
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Daemon`](crate::error::ProtocolError::Daemon) when
    /// the file is missing, cannot be parsed (unknown fields are errors) or
    /// holds a value out of range.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Ok(netproto_daemon::NetworkConfig::from_file(path)?.into())
    }

    /// Reads the `NETPROTO__SECTION__FIELD` environment variables over the
    /// defaults.
    ///
    /// # Errors
    ///
    /// As [`from_file`](Self::from_file).
    pub fn from_env() -> Result<Self> {
        Ok(netproto_daemon::NetworkConfig::from_env()?.into())
    }

    /// The file (if any) with environment variables layered over it; `env`
    /// replaces the process environment when given (for tests and
    /// embedding).
    ///
    /// # Errors
    ///
    /// As [`from_file`](Self::from_file).
    pub fn load(file: Option<&Path>, env: Option<HashMap<String, String>>) -> Result<Self> {
        Ok(netproto_daemon::NetworkConfig::load(file, env)?.into())
    }

    /// The daemon's configuration: every section, with `server` and `client`
    /// written over the matching fields.
    pub fn to_daemon(&self) -> netproto_daemon::NetworkConfig {
        let mut config = netproto_daemon::NetworkConfig::default();
        config.server = self.server_limits.clone();
        self.server.apply_to(&mut config.server);
        self.client.apply_to(&mut config.client);
        config.transport = self.transport.clone();
        config.security = self.security.clone();
        config.logging = self.logging.clone();
        config
    }
}
