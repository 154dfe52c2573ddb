//! The one error type of this crate.

use std::path::PathBuf;

/// Everything that can go wrong in the server, the client or the configuration.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be read or parsed.
    #[error("cannot load configuration")]
    Config(#[from] config::ConfigError),
    /// A configuration value is missing or out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A key file could not be read or written.
    #[error("key file {}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: netproto_crypto::Error,
    },
    /// The connection failed.
    #[error(transparent)]
    Transport(#[from] netproto_transport::Error),
    /// Transport settings could not be built: certificates, keys, limits.
    #[error(transparent)]
    TransportSetup(#[from] netproto_transport::SetupError),
    /// A request failed.
    #[error(transparent)]
    Dispatch(#[from] netproto_dispatch::Error),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] netproto_wire::Error),
    /// A socket or file operation failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// The server refused the connection: it is at a connection limit.
    #[error("server refused the connection: {0}")]
    Refused(&'static str),
    /// The peer's key differs from the one remembered for it (known hosts).
    #[error("the server at {address} presented key {presented}, but {known} is remembered for it: refusing (possible man in the middle; remove the line from {} if the key changed on purpose)", file.display())]
    KeyChanged {
        /// The server address.
        address: String,
        /// The key it presented.
        presented: String,
        /// The key remembered for it.
        known: String,
        /// The known-hosts file.
        file: PathBuf,
    },
    /// Logging was already initialised.
    #[error("logging already initialised")]
    LoggingInit,
    /// Every reconnection attempt failed, or one failed in a way that
    /// retrying would not help. Every request that waited for the same
    /// reconnection gets this error, sharing `last`.
    #[error("gave up after {attempts} connection attempts")]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: std::sync::Arc<Self>,
    },
    /// The operation did not complete in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// A cluster peer or balancer endpoint has no connection now, so the
    /// request was not sent (it is safe to send it elsewhere).
    #[error("{endpoint} is {state}: not connected, the request was not sent")]
    Unavailable {
        /// The peer's or endpoint's configured address.
        endpoint: String,
        /// Its state when the request was made.
        state: crate::PeerState,
    },
    /// The connection to a cluster peer or balancer endpoint was lost, or
    /// the peer was declared dead, while the request was in flight: it may
    /// or may not have been processed.
    #[error(
        "{endpoint} went down with the request in flight (it may or may not have been processed)"
    )]
    EndpointDown {
        /// The peer's or endpoint's configured address.
        endpoint: String,
        /// The connection error, if the connection failed (none when the
        /// peer was declared dead after missed heartbeats).
        #[source]
        cause: Option<netproto_dispatch::Error>,
    },
    /// No endpoint of the balancer is alive.
    #[error("none of the {endpoints} endpoints is alive")]
    NoHealthyEndpoint {
        /// How many endpoints are configured.
        endpoints: usize,
    },
}

impl Error {
    /// Whether trying again (a new connection, after a backoff) may succeed.
    ///
    /// True for transport failures that
    /// [`netproto_transport::Error::is_retryable`] calls retryable (refused
    /// or reset connections, timeouts, a busy server), for a lost connection
    /// or a request timeout ([`netproto_dispatch::Error::is_connection_lost`])
    /// and for the same I/O errors; false for what would fail again as it
    /// is: configuration and key files, a changed server key, TLS, Noise and
    /// protocol failures.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(error) => error.is_retryable(),
            Self::Dispatch(error) => {
                error.is_connection_lost() || matches!(error, netproto_dispatch::Error::Timeout(_))
            }
            Self::Io(error) => {
                netproto_transport::Error::Io(std::io::Error::from(error.kind())).is_retryable()
            }
            Self::Timeout(_) | Self::Unavailable { .. } | Self::EndpointDown { .. } => true,
            _ => false,
        }
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
