//! Establishing connections: preface, security handshake, then framing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use netproto_crypto::{Capabilities, CompressionSet, ReplayCache};
use netproto_wire::{Compression, PrefaceStatus, SecurityMode};
use tokio::io::AsyncReadExt;

use crate::config::check_duration;
use crate::connection::{ConnectionInfo, Protection};
use crate::noise::{self, NoiseConfig};
use crate::tls::{self, CertificateDer, TlsAcceptor, TlsConnector};
use crate::{Connection, ConnectionConfig, Error, Io, SetupError, TimeoutKind, preface};

mod accepted;
mod dial;
mod progress;

pub use accepted::Accepted;
pub(crate) use accepted::AcceptedStream;
#[cfg(windows)]
pub use dial::connect_pipe;
pub use dial::connect_tcp;
#[cfg(unix)]
pub use dial::connect_unix;
pub(crate) use dial::tcp;
#[cfg(unix)]
pub(crate) use dial::unix;
pub use progress::{AcceptLimits, HandshakeProgress, HandshakeStage};

/// Default time allowed for the preface and the security handshake: 10 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default time allowed to establish a TCP or Unix connection: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a client protects its connection.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum ClientSecurity {
    /// No protection: loopback, tests, or inside another secure channel.
    Plain,
    /// A Noise session.
    Noise(Box<NoiseConfig>),
    /// TLS, verifying the server's certificate for `server_name`.
    Tls {
        /// Trust roots, client certificate and pins.
        connector: TlsConnector,
        /// The DNS name or IP address the server's certificate must be valid for.
        server_name: String,
    },
}

impl ClientSecurity {
    /// Noise with these settings.
    pub fn noise(config: NoiseConfig) -> Self {
        Self::Noise(Box::new(config))
    }

    /// The preface mode of this security.
    pub fn mode(&self) -> SecurityMode {
        match self {
            Self::Plain => SecurityMode::Plain,
            Self::Noise(_) => SecurityMode::Noise,
            Self::Tls { .. } => SecurityMode::Tls,
        }
    }
}

/// How a server protects the connections it accepts.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub enum ServerSecurity {
    /// No protection.
    Plain,
    /// Noise sessions; the replay cache is shared by every handshake of the server.
    Noise {
        /// The server's Noise settings.
        config: Box<NoiseConfig>,
        /// First-message nonces already seen.
        replay: Arc<Mutex<ReplayCache>>,
    },
    /// TLS, with mutual authentication if the acceptor asks for client certificates.
    Tls(TlsAcceptor),
}

impl ServerSecurity {
    /// Noise with a fresh replay cache of the default size.
    pub fn noise(config: NoiseConfig) -> Self {
        Self::Noise {
            config: Box::new(config),
            replay: Arc::new(Mutex::new(ReplayCache::default())),
        }
    }

    /// The preface mode of this security.
    pub fn mode(&self) -> SecurityMode {
        match self {
            Self::Plain => SecurityMode::Plain,
            Self::Noise { .. } => SecurityMode::Noise,
            Self::Tls(_) => SecurityMode::Tls,
        }
    }
}

/// Connects the client side of a netproto connection over `io`: preface,
/// handshake (within `handshake_timeout`), then a framed connection.
///
/// This is the lower-level form of [`Connector::connect`](crate::Connector::connect),
/// which checks its settings once instead of on every call.
///
/// # Errors
///
/// [`Error::Setup`] for a bad configuration; [`Error::Timeout`] with
/// [`TimeoutKind::Handshake`]; [`Error::Refused`] when the server refuses the
/// preface; [`Error::Crypto`] when the Noise handshake fails; I/O errors.
pub async fn connect<I: Io>(
    io: I,
    security: &ClientSecurity,
    config: &ConnectionConfig,
    handshake_timeout: Duration,
) -> Result<Connection, Error> {
    check_setup(config, handshake_timeout)?;
    client(io, security, config, handshake_timeout).await
}

/// The client side of [`connect`], with settings already checked.
pub(crate) async fn client<I: Io>(
    mut io: I,
    security: &ClientSecurity,
    config: &ConnectionConfig,
    handshake_timeout: Duration,
) -> Result<Connection, Error> {
    if let ClientSecurity::Tls {
        connector,
        server_name,
    } = security
    {
        // TLS from the first byte; the preface is the first thing inside.
        let stream = with_timeout(handshake_timeout, handshake_timeout, async move {
            let mut stream = connector.connect(server_name, io).await?;
            preface::client(&mut stream, SecurityMode::Tls).await?;
            Ok(stream)
        })
        .await?;
        let certificate = tls::server_certificate(&stream).cloned();
        return Ok(tls_connection(stream, certificate, config));
    }
    let handshake = async {
        let prologue = preface::client(&mut io, security.mode()).await?;
        match security {
            ClientSecurity::Plain | ClientSecurity::Tls { .. } => {
                Ok((Protection::ByStream, BytesMut::new(), plain_info(config)))
            }
            ClientSecurity::Noise(noise_config) => {
                let (session, leftover) =
                    noise::client(&mut io, &prologue, noise_config, offered(config)).await?;
                Ok(noise_parts(session, leftover, config))
            }
        }
    };
    let (protection, leftover, info) =
        with_timeout(handshake_timeout, handshake_timeout, handshake).await?;
    Ok(Connection::spawn(
        io, protection, leftover, info, config, None,
    ))
}

/// Checks the configuration and the handshake timeout both sides take.
pub(crate) fn check_setup(
    config: &ConnectionConfig,
    handshake_timeout: Duration,
) -> Result<(), SetupError> {
    config.validate()?;
    check_duration(
        handshake_timeout,
        "handshake timeout must be between 1 ms and one day",
    )
}

/// Runs the server side of the preface and the security handshake over
/// `io` within `limits`, reporting each stage reached to `progress`, without
/// starting the connection's tasks.
///
/// This is the lower-level form of
/// [`Acceptor::accept_handshake`](crate::Acceptor::accept_handshake), which
/// checks its settings once instead of on every call.
///
/// # Errors
///
/// [`Error::Setup`] for a bad configuration; [`Error::Timeout`] with
/// [`TimeoutKind::Preface`] when the preface did not arrive within
/// [`AcceptLimits::preface_timeout`], with [`TimeoutKind::Handshake`] when
/// the handshake did not finish within [`AcceptLimits::handshake_timeout`];
/// [`Error::ModeMismatch`] when the client asked for another security mode
/// (it has been told so before this returns); [`Error::Crypto`] or
/// [`Error::Tls`] when the handshake fails; I/O errors.
pub async fn accept_handshake_within<I: Io>(
    io: I,
    security: &ServerSecurity,
    config: &ConnectionConfig,
    limits: &AcceptLimits,
    progress: &HandshakeProgress,
) -> Result<Accepted<I>, Error> {
    check_limits(config, limits)?;
    server(io, security, config, limits, progress).await
}

/// Checks the configuration and the limits of the server side.
pub(crate) fn check_limits(
    config: &ConnectionConfig,
    limits: &AcceptLimits,
) -> Result<(), SetupError> {
    check_setup(config, limits.handshake_timeout)?;
    check_duration(
        limits.preface_timeout,
        "preface timeout must be between 1 ms and one day",
    )
}

/// The server side of [`accept_handshake_within`], with settings already
/// checked.
pub(crate) async fn server<I: Io>(
    mut io: I,
    security: &ServerSecurity,
    config: &ConnectionConfig,
    limits: &AcceptLimits,
    progress: &HandshakeProgress,
) -> Result<Accepted<I>, Error> {
    let start = tokio::time::Instant::now();
    let preface_within = limits.preface_timeout.min(limits.handshake_timeout);
    let preface_timeout = Error::Timeout {
        kind: TimeoutKind::Preface,
        after: preface_within,
    };
    if let ServerSecurity::Tls(acceptor) = security {
        // TLS from the first byte: the ClientHello is what must arrive
        // within the preface timeout.
        let Ok(hello) = tokio::time::timeout(preface_within, client_hello(acceptor, io)).await
        else {
            return Err(preface_timeout);
        };
        let hello = hello?;
        progress.reached(HandshakeStage::Preface);
        let left = limits.handshake_timeout.saturating_sub(start.elapsed());
        let stream = with_timeout(left, limits.handshake_timeout, async {
            let mut stream = acceptor.complete(hello).await?;
            preface::server(&mut stream, SecurityMode::Tls).await?;
            Ok(stream)
        })
        .await?;
        let certificate = tls::client_certificate(&stream).cloned();
        return Ok(Accepted {
            stream: AcceptedStream::Tls(Box::new(stream)),
            protection: Protection::ByStream,
            leftover: BytesMut::new(),
            info: tls_info(config, certificate),
            config: config.clone(),
            offload: None,
        });
    }
    let Ok(prologue) =
        tokio::time::timeout(preface_within, preface::server(&mut io, security.mode())).await
    else {
        return Err(preface_timeout);
    };
    let prologue = prologue?;
    progress.reached(HandshakeStage::Preface);
    let left = limits.handshake_timeout.saturating_sub(start.elapsed());
    let handshake = async {
        match security {
            ServerSecurity::Plain | ServerSecurity::Tls(_) => {
                Ok((Protection::ByStream, BytesMut::new(), plain_info(config)))
            }
            ServerSecurity::Noise {
                config: noise_config,
                replay,
            } => {
                let (session, leftover) = noise::server(
                    &mut io,
                    &prologue,
                    noise_config,
                    offered(config),
                    replay,
                    progress,
                )
                .await?;
                Ok(noise_parts(session, leftover, config))
            }
        }
    };
    let (protection, leftover, info) =
        with_timeout(left, limits.handshake_timeout, handshake).await?;
    Ok(Accepted {
        stream: AcceptedStream::Raw(io),
        protection,
        leftover,
        info,
        config: config.clone(),
        offload: None,
    })
}

/// Reads the ClientHello that starts a TLS connection. A netproto preface
/// in the clear instead (from a client in another mode, or one that predates
/// TLS from the first byte) is answered "mode not offered" in the clear,
/// whatever mode it asks for, before the error is returned: in TLS mode the
/// preface is valid only inside TLS.
async fn client_hello<I: Io>(
    acceptor: &TlsAcceptor,
    mut io: I,
) -> Result<tokio_rustls::StartHandshake<I>, Error> {
    let first = match io.read_u8().await {
        Ok(byte) => byte,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(Error::PeerClosed),
        Err(e) => return Err(e.into()),
    };
    if first != tls::HANDSHAKE_RECORD {
        let offered = SecurityMode::Tls;
        let status = PrefaceStatus::ModeNotOffered;
        let asked = preface::refuse_after(&mut io, &[first], offered, status).await?;
        return Err(Error::ModeMismatch { asked, offered });
    }
    let mut started = rustls::server::Acceptor::default();
    started.read_tls(&mut &[first][..])?;
    acceptor.client_hello(started, io).await
}

/// What this side offers in the Noise handshake: its frame limit, and every
/// algorithm it can decompress.
fn offered(config: &ConnectionConfig) -> Capabilities {
    Capabilities::new(config.max_frame_len, CompressionSet::ALL)
}

fn plain_info(config: &ConnectionConfig) -> ConnectionInfo {
    ConnectionInfo {
        mode: SecurityMode::Plain,
        peer_static: None,
        peer_certificate: None,
        capabilities: None,
        // Without negotiation, assume the peer uses the same limit.
        peer_max_frame_len: config.max_frame_len,
        compression: config.compression,
    }
}

/// The protection, leftover bytes and description of an established Noise session.
fn noise_parts(
    session: netproto_crypto::Session,
    leftover: BytesMut,
    config: &ConnectionConfig,
) -> (Protection, BytesMut, ConnectionInfo) {
    let info = noise_info(&session, config);
    let (sealer, opener) = session.into_split();
    let protection = Protection::Noise {
        sealer: Box::new(sealer),
        opener: Box::new(opener),
    };
    (protection, leftover, info)
}

fn noise_info(session: &netproto_crypto::Session, config: &ConnectionConfig) -> ConnectionInfo {
    let agreed = *session.capabilities();
    let wanted = match config.compression {
        Compression::Lz4 => CompressionSet::LZ4,
        Compression::Zstd => CompressionSet::ZSTD,
        _ => CompressionSet::NONE,
    };
    let compression = if !wanted.is_empty() && agreed.compression.contains(wanted) {
        config.compression
    } else {
        Compression::None
    };
    ConnectionInfo {
        mode: SecurityMode::Noise,
        peer_static: session.peer_static().copied(),
        peer_certificate: None,
        capabilities: Some(agreed),
        peer_max_frame_len: agreed.max_frame_len,
        compression,
    }
}

/// A connection over an established TLS stream: frames go straight into TLS.
fn tls_connection<S: Io>(
    stream: S,
    peer_certificate: Option<CertificateDer<'static>>,
    config: &ConnectionConfig,
) -> Connection {
    let info = tls_info(config, peer_certificate);
    Connection::spawn(
        stream,
        Protection::ByStream,
        BytesMut::new(),
        info,
        config,
        None,
    )
}

fn tls_info(
    config: &ConnectionConfig,
    peer_certificate: Option<CertificateDer<'static>>,
) -> ConnectionInfo {
    ConnectionInfo {
        mode: SecurityMode::Tls,
        peer_certificate,
        ..plain_info(config)
    }
}

/// Runs `work` for at most `within`; a timeout reports the handshake
/// timeout `after` (of which `within` may be what is left).
async fn with_timeout<T>(
    within: Duration,
    after: Duration,
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(within, work).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout {
            kind: TimeoutKind::Handshake,
            after,
        }),
    }
}
