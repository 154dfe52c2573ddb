//! [`Connector`] and [`Acceptor`]: one side's security, connection
//! configuration and timeouts, checked once and shared by every connection.

use std::fmt;
#[cfg(unix)]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::ToSocketAddrs;

use crate::config::check_duration;
use crate::establish::{self, check_limits, check_setup};
use crate::{
    AcceptLimits, Accepted, ClientSecurity, Connection, ConnectionConfig, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_HANDSHAKE_TIMEOUT, Error, HandshakeProgress, Io, ServerSecurity, SetupError,
};

/// The client side: connects streams (TCP, Unix sockets, or any [`Io`]) as
/// netproto connections, with one security, configuration and set of
/// timeouts.
///
/// Cheap to clone: clones share one set of settings.
///
/// # Examples
///
/// ```no_run
/// use netproto_transport::{ClientSecurity, ConnectionConfig, Connector};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let connector = Connector::builder(ClientSecurity::Plain, ConnectionConfig::default())
///     .connect_timeout(Duration::from_secs(3))
///     .build()?;
/// let conn = connector.connect_tcp("127.0.0.1:7000").await?;
/// # drop(conn);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connector {
    inner: Arc<ConnectorInner>,
}

struct ConnectorInner {
    security: ClientSecurity,
    config: ConnectionConfig,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

impl Connector {
    /// A connector with the default timeouts
    /// ([`DEFAULT_CONNECT_TIMEOUT`], [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] when `config` does not
    /// [validate](ConnectionConfig::validate).
    pub fn new(security: ClientSecurity, config: ConnectionConfig) -> Result<Self, SetupError> {
        Self::builder(security, config).build()
    }

    /// Starts building a connector, to set its timeouts.
    pub fn builder(security: ClientSecurity, config: ConnectionConfig) -> ConnectorBuilder {
        ConnectorBuilder {
            security,
            config,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Runs the client side of a netproto connection over `io`, already
    /// connected: preface, security handshake (within the handshake
    /// timeout), then a framed connection whose tasks run on the current
    /// runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] with [`TimeoutKind::Handshake`](crate::TimeoutKind::Handshake);
    /// [`Error::Refused`] when the server refuses the preface;
    /// [`Error::Crypto`], [`Error::Tls`], [`Error::PinMismatch`] or
    /// [`Error::InvalidServerName`] when the handshake fails; I/O errors.
    /// [`Error::is_retryable`] tells which are worth another attempt.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub async fn connect<I: Io>(&self, io: I) -> Result<Connection, Error> {
        let inner = &*self.inner;
        establish::client(io, &inner.security, &inner.config, inner.handshake_timeout).await
    }

    /// Opens a TCP connection to `addr` (within the connect timeout, with
    /// `TCP_NODELAY` on) and [connects](Self::connect) over it.
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect), and [`Error::Timeout`] with
    /// [`TimeoutKind::Connect`](crate::TimeoutKind::Connect).
    pub async fn connect_tcp(&self, addr: impl ToSocketAddrs) -> Result<Connection, Error> {
        let stream = establish::tcp(addr, self.inner.connect_timeout).await?;
        self.connect(stream).await
    }

    /// Opens a Unix domain socket connection to `path` (within the connect
    /// timeout) and [connects](Self::connect) over it.
    ///
    /// # Errors
    ///
    /// As [`connect_tcp`](Self::connect_tcp).
    #[cfg(unix)]
    pub async fn connect_unix(&self, path: impl AsRef<Path>) -> Result<Connection, Error> {
        let stream = establish::unix(path, self.inner.connect_timeout).await?;
        self.connect(stream).await
    }

    /// How this side protects its connections.
    pub fn security(&self) -> &ClientSecurity {
        &self.inner.security
    }

    /// The configuration of every connection.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    /// Time allowed to establish a TCP or Unix connection.
    pub fn connect_timeout(&self) -> Duration {
        self.inner.connect_timeout
    }

    /// Time allowed for the preface and the security handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("security", &self.inner.security)
            .field("config", &self.inner.config)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("handshake_timeout", &self.inner.handshake_timeout)
            .finish()
    }
}

/// Builds a [`Connector`]: setters record, [`build`](Self::build) checks.
#[must_use]
#[derive(Debug, Clone)]
pub struct ConnectorBuilder {
    security: ClientSecurity,
    config: ConnectionConfig,
    connect_timeout: Duration,
    handshake_timeout: Duration,
}

impl ConnectorBuilder {
    /// Time allowed to establish a TCP or Unix connection. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Time allowed for the preface and the security handshake. Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`].
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Checks the settings and builds the connector.
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] when the configuration does not
    /// [validate](ConnectionConfig::validate), or a timeout is not between
    /// 1 ms and one day.
    pub fn build(self) -> Result<Connector, SetupError> {
        check_setup(&self.config, self.handshake_timeout)?;
        check_duration(
            self.connect_timeout,
            "connect timeout must be between 1 ms and one day",
        )?;
        Ok(Connector {
            inner: Arc::new(ConnectorInner {
                security: self.security,
                config: self.config,
                connect_timeout: self.connect_timeout,
                handshake_timeout: self.handshake_timeout,
            }),
        })
    }
}

/// What an [`Acceptor`] does with a connection between its handshake and
/// its start: the hooks a server needs.
///
/// Mutate a default: nothing is done unless set.
#[non_exhaustive]
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Run the connection's costly work (decompressing large bodies, 64 KiB
    /// and more) on this runtime's blocking threads instead of the current
    /// runtime's: see [`Accepted::offload_to`].
    pub offload: Option<tokio::runtime::Handle>,
    /// After the handshake, wait up to this long for the peer's first frame
    /// header and check it against the connection's limits, so that garbage
    /// and oversized frames are turned away where handshakes run: see
    /// [`Accepted::first_header`]. Between 1 ms and one day.
    pub first_header_within: Option<Duration>,
}

/// The server side: runs the preface and the security handshake on
/// accepted streams (TCP, Unix sockets, or any [`Io`]), with one security,
/// configuration, set of limits and [`StartOptions`].
///
/// Cheap to clone: clones share one set of settings, and (in Noise mode)
/// one replay cache.
///
/// # Examples
///
/// ```no_run
/// use netproto_transport::{Acceptor, ConnectionConfig, ServerSecurity};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default())?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:7000").await?;
/// loop {
///     let (tcp, _peer) = listener.accept().await?;
///     let acceptor = acceptor.clone();
///     tokio::spawn(async move {
///         let Ok(mut conn) = acceptor.accept(tcp).await else {
///             return;
///         };
///         while let Ok(Some(incoming)) = conn.recv().await {
///             // ...
/// #           drop(incoming);
///         }
///     });
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Acceptor {
    inner: Arc<AcceptorInner>,
}

struct AcceptorInner {
    security: ServerSecurity,
    config: ConnectionConfig,
    limits: AcceptLimits,
    start: StartOptions,
}

impl Acceptor {
    /// An acceptor with the default [`AcceptLimits`] and no
    /// [`StartOptions`].
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] when `config` does not
    /// [validate](ConnectionConfig::validate).
    pub fn new(security: ServerSecurity, config: ConnectionConfig) -> Result<Self, SetupError> {
        Self::builder(security, config).build()
    }

    /// Starts building an acceptor, to set its limits and start options.
    pub fn builder(security: ServerSecurity, config: ConnectionConfig) -> AcceptorBuilder {
        AcceptorBuilder {
            security,
            config,
            limits: AcceptLimits::default(),
            start: StartOptions::default(),
        }
    }

    /// Runs the server side of a netproto connection over `io` and starts
    /// it on the current runtime: [`accept_handshake`](Self::accept_handshake)
    /// followed by [`Accepted::start`].
    ///
    /// # Errors
    ///
    /// As [`accept_handshake`](Self::accept_handshake).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub async fn accept<I: Io>(&self, io: I) -> Result<Connection, Error> {
        self.accept_handshake(io, &HandshakeProgress::default())
            .await
            .map(Accepted::start)
    }

    /// Runs the server side of the preface and the security handshake over
    /// `io` within the limits, reporting each stage reached to `progress`,
    /// and then the first-header check of the [`StartOptions`]; the
    /// connection's tasks are not started.
    ///
    /// A server can run handshakes (the costly public-key work a stranger
    /// can make it do) on threads of their own, and start the established
    /// connections ([`Accepted::start`]) where its requests are served, so
    /// that a flood of handshakes does not delay the clients already
    /// connected.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] with [`TimeoutKind::Preface`](crate::TimeoutKind::Preface)
    /// when the preface did not arrive within
    /// [`AcceptLimits::preface_timeout`], with
    /// [`TimeoutKind::Handshake`](crate::TimeoutKind::Handshake) when the
    /// handshake did not finish within [`AcceptLimits::handshake_timeout`];
    /// [`Error::ModeMismatch`] when the client asked for another security
    /// mode (it has been told so before this returns); [`Error::Crypto`] or
    /// [`Error::Tls`] when the handshake fails; [`Error::Protocol`] or
    /// [`Error::PeerClosed`] from the first-header check; I/O errors.
    pub async fn accept_handshake<I: Io>(
        &self,
        io: I,
        progress: &HandshakeProgress,
    ) -> Result<Accepted<I>, Error> {
        let inner = &*self.inner;
        let mut accepted =
            establish::server(io, &inner.security, &inner.config, &inner.limits, progress).await?;
        if let Some(wait) = inner.start.first_header_within {
            accepted.first_header(wait).await?;
        }
        accepted.set_offload(inner.start.offload.clone());
        Ok(accepted)
    }

    /// How this side protects its connections.
    pub fn security(&self) -> &ServerSecurity {
        &self.inner.security
    }

    /// The configuration of every connection.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    /// The time limits of the preface and the handshake.
    pub fn limits(&self) -> &AcceptLimits {
        &self.inner.limits
    }

    /// What is done between the handshake and the start.
    pub fn start_options(&self) -> &StartOptions {
        &self.inner.start
    }
}

impl fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acceptor")
            .field("security", &self.inner.security)
            .field("config", &self.inner.config)
            .field("limits", &self.inner.limits)
            .field("start", &self.inner.start)
            .finish()
    }
}

/// Builds an [`Acceptor`]: setters record, [`build`](Self::build) checks.
#[must_use]
#[derive(Debug, Clone)]
pub struct AcceptorBuilder {
    security: ServerSecurity,
    config: ConnectionConfig,
    limits: AcceptLimits,
    start: StartOptions,
}

impl AcceptorBuilder {
    /// How long the preface and the handshake may take. Default
    /// [`AcceptLimits::default`].
    pub fn limits(mut self, limits: AcceptLimits) -> Self {
        self.limits = limits;
        self
    }

    /// What is done between the handshake and the start. Default: nothing.
    pub fn start_options(mut self, options: StartOptions) -> Self {
        self.start = options;
        self
    }

    /// Checks the settings and builds the acceptor.
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] when the configuration does not
    /// [validate](ConnectionConfig::validate), or a limit or
    /// [`StartOptions::first_header_within`] is not between 1 ms and one
    /// day.
    pub fn build(self) -> Result<Acceptor, SetupError> {
        check_limits(&self.config, &self.limits)?;
        if let Some(wait) = self.start.first_header_within {
            check_duration(wait, "first header wait must be between 1 ms and one day")?;
        }
        Ok(Acceptor {
            inner: Arc::new(AcceptorInner {
                security: self.security,
                config: self.config,
                limits: self.limits,
                start: self.start,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_once_when_built() {
        let bad = ConnectionConfig {
            backpressure_limit: 0,
            ..ConnectionConfig::default()
        };
        assert!(matches!(
            Connector::new(ClientSecurity::Plain, bad.clone()),
            Err(SetupError::Config(_))
        ));
        assert!(matches!(
            Acceptor::new(ServerSecurity::Plain, bad),
            Err(SetupError::Config(_))
        ));
        let config = ConnectionConfig::default();
        for timeout in [Duration::ZERO, Duration::from_secs(u64::MAX)] {
            let connector = Connector::builder(ClientSecurity::Plain, config.clone());
            assert!(
                connector
                    .clone()
                    .handshake_timeout(timeout)
                    .build()
                    .is_err()
            );
            assert!(connector.connect_timeout(timeout).build().is_err());
            let acceptor = Acceptor::builder(ServerSecurity::Plain, config.clone());
            let start = StartOptions {
                first_header_within: Some(timeout),
                ..StartOptions::default()
            };
            assert!(acceptor.start_options(start).build().is_err());
            let acceptor = Acceptor::builder(ServerSecurity::Plain, config.clone());
            assert!(
                acceptor
                    .limits(AcceptLimits::new(timeout, Duration::from_secs(1)))
                    .build()
                    .is_err()
            );
        }
        let connector = Connector::builder(ClientSecurity::Plain, config.clone())
            .connect_timeout(Duration::from_secs(2))
            .handshake_timeout(Duration::from_secs(3))
            .build()
            .unwrap();
        assert_eq!(connector.connect_timeout(), Duration::from_secs(2));
        assert_eq!(connector.handshake_timeout(), Duration::from_secs(3));
        let acceptor = Acceptor::new(ServerSecurity::Plain, config).unwrap();
        assert_eq!(*acceptor.limits(), AcceptLimits::default());
    }
}
