//! The facade's error type: [`ProtocolError`], wrapping every layer's error.

/// Everything that can go wrong behind the facade.
///
/// Errors of the layers are wrapped, not flattened to text: match on the
/// variant and then on the layer's own error (for example
/// [`netproto_daemon::Error::KeyChanged`] inside [`Daemon`](Self::Daemon)),
/// or walk [`std::error::Error::source`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// An operation did not complete in time.
    ///
    /// The facade's own calls report their timeouts through the layers'
    /// errors (with the operation named); this unit variant exists so that
    /// applications can report a timeout of their own, as the original
    /// crate's README does with `tokio::time::timeout`.
    #[error("operation timed out")]
    Timeout,
    /// The server, the client, the configuration or logging failed.
    #[error(transparent)]
    Daemon(#[from] netproto_daemon::Error),
    /// Routing a message or correlating a request failed.
    #[error(transparent)]
    Dispatch(#[from] netproto_dispatch::Error),
    /// A connection failed: socket, TLS, Noise, limits, timeouts.
    #[error(transparent)]
    Transport(#[from] netproto_transport::Error),
    /// Transport settings could not be built: certificates, keys, limits.
    #[error(transparent)]
    TransportSetup(#[from] netproto_transport::SetupError),
    /// A frame or message could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] netproto_wire::Error),
    /// A body could not be compressed or decompressed.
    #[error(transparent)]
    Compression(#[from] netproto_compress::Error),
    /// A handshake, record or key operation failed.
    #[error(transparent)]
    Crypto(#[from] netproto_crypto::Error),
    /// A socket or file operation failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// A facade setting is inconsistent (for example `verify_client`
    /// without a CA).
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// [`Server::run`](crate::service::daemon::Server::run) was called while
    /// the server was already running.
    #[error("the server is already running")]
    AlreadyRunning,
    /// The server was shut down; it cannot be bound or run again.
    #[error("the server has been shut down")]
    ShutDown,
}

/// The facade's result type.
pub type Result<T> = std::result::Result<T, ProtocolError>;
