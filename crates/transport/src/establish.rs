//! Establishing connections: preface, security handshake, then framing.

use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use netproto_crypto::{Capabilities, CompressionSet, ReplayCache};
use netproto_wire::{Compression, Decoder, HEADER_LEN, SecurityMode};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::config::check_duration;
use crate::connection::{ConnectionInfo, Protection};
use crate::noise::{self, NoiseConfig};
use crate::tls::{self, CertificateDer, TlsAcceptor, TlsConnector};
use crate::{Connection, ConnectionConfig, Error, Io, SetupError, TimeoutKind, preface};

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
        let stream = with_timeout(handshake_timeout, handshake_timeout, async move {
            preface::client(&mut io, SecurityMode::Tls).await?;
            connector.connect(server_name, io).await
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

/// How long each stage of a server-side handshake may take: see
/// [`AcceptorBuilder::limits`](crate::AcceptorBuilder::limits).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Time from the start for the client's whole preface. A client sends
    /// it at once, so this can be short: a connection that sends nothing
    /// then costs its socket for this long at most.
    pub preface_timeout: Duration,
    /// Time from the start for the preface and the whole security
    /// handshake; at least `preface_timeout` (the shorter one wins).
    pub handshake_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            preface_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl AcceptLimits {
    /// Both limits.
    pub fn new(preface_timeout: Duration, handshake_timeout: Duration) -> Self {
        Self {
            preface_timeout,
            handshake_timeout,
        }
    }
}

/// How far a server-side handshake got, in order: a server that must drop
/// a connection that is not established yet drops one of the least
/// advanced (a silent socket before a client that is mid-handshake).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandshakeStage {
    /// Connected; the client's preface is not complete yet.
    Connected,
    /// The preface arrived and was accepted; in Noise mode the client's
    /// first handshake message is not complete yet.
    Preface,
    /// Noise: the client's first handshake message arrived and was valid
    /// (not a replay, within the clock-skew window); the server has
    /// answered it or is about to.
    Handshake,
}

/// Where [`Acceptor::accept_handshake`](crate::Acceptor::accept_handshake)
/// reports the [`HandshakeStage`] it has reached and when, for another task
/// to read at any time (two atomics).
#[derive(Debug)]
pub struct HandshakeProgress {
    stage: AtomicU8,
    /// When the stage was last reached: microseconds since [`base`].
    at: AtomicU64,
}

/// The instant progress times count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn micros_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_micros()).unwrap_or(u64::MAX)
}

impl Default for HandshakeProgress {
    /// [`HandshakeStage::Connected`], now.
    fn default() -> Self {
        Self {
            stage: AtomicU8::new(0),
            at: AtomicU64::new(micros_since_base(Instant::now())),
        }
    }
}

impl HandshakeProgress {
    /// The stage reached so far.
    pub fn stage(&self) -> HandshakeStage {
        match self.stage.load(Ordering::Relaxed) {
            0 => HandshakeStage::Connected,
            1 => HandshakeStage::Preface,
            _ => HandshakeStage::Handshake,
        }
    }

    /// When the handshake last progressed: when it reached its stage (for
    /// [`HandshakeStage::Connected`], when this was created).
    pub fn progressed_at(&self) -> Instant {
        base() + Duration::from_micros(self.at.load(Ordering::Relaxed))
    }

    /// Records that the handshake reached `stage` now; a stage never moves
    /// back, and reaching it again changes nothing.
    pub fn reached(&self, stage: HandshakeStage) {
        let value = match stage {
            HandshakeStage::Connected => 0,
            HandshakeStage::Preface => 1,
            HandshakeStage::Handshake => 2,
        };
        if self.stage.fetch_max(value, Ordering::Relaxed) < value {
            self.at
                .store(micros_since_base(Instant::now()), Ordering::Relaxed);
        }
    }
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
    let prologue =
        match tokio::time::timeout(preface_within, preface::server(&mut io, security.mode())).await
        {
            Ok(prologue) => prologue?,
            Err(_) => {
                return Err(Error::Timeout {
                    kind: TimeoutKind::Preface,
                    after: preface_within,
                });
            }
        };
    progress.reached(HandshakeStage::Preface);
    let left = limits.handshake_timeout.saturating_sub(start.elapsed());
    if let ServerSecurity::Tls(acceptor) = security {
        let stream = with_timeout(left, limits.handshake_timeout, acceptor.accept(io)).await?;
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

/// A server connection whose preface and security handshake are done, and
/// whose reader and writer tasks are not started yet: see
/// [`Acceptor::accept_handshake`](crate::Acceptor::accept_handshake).
///
/// A server can run handshakes (the costly public-key work a stranger can
/// make it do) on threads of their own, and start the established
/// connections ([`Accepted::start`]) where its requests are served, so that a
/// flood of handshakes does not delay the clients already connected.
pub struct Accepted<I> {
    stream: AcceptedStream<I>,
    protection: Protection,
    leftover: BytesMut,
    info: ConnectionInfo,
    config: ConnectionConfig,
    offload: Option<tokio::runtime::Handle>,
}

enum AcceptedStream<I> {
    /// The stream as accepted, plain or Noise: the connection itself seals
    /// its frames into Noise records, or sends them as they are.
    Raw(I),
    /// TLS: frames go straight into the TLS stream.
    Tls(Box<tokio_rustls::server::TlsStream<I>>),
}

impl<I: Io> Accepted<I> {
    /// What the handshake established: mode, peer key or certificate,
    /// capabilities.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The socket under the connection (under TLS, in TLS mode): to set an
    /// option on it, or to move it to another runtime's I/O driver before
    /// the connection starts.
    pub fn get_mut(&mut self) -> &mut I {
        match &mut self.stream {
            AcceptedStream::Raw(io) => io,
            AcceptedStream::Tls(stream) => stream.get_mut().0,
        }
    }

    /// Runs the connection's costly work on `runtime`'s blocking threads
    /// instead of the current runtime's: decompressing large bodies (64 KiB
    /// and more), milliseconds of CPU a peer can ask for with a few bytes. A
    /// server gives it threads of lower priority, so that this work waits
    /// while other connections are served.
    ///
    /// The lower-level form of [`StartOptions::offload`](crate::StartOptions::offload),
    /// which an [`Acceptor`](crate::Acceptor) applies to every connection.
    #[must_use]
    pub fn offload_to(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.offload = Some(runtime);
        self
    }

    /// Waits up to `wait` for the peer's first frame header and checks it
    /// against the connection's limits, before the connection is started.
    ///
    /// Clients send their first request as soon as they are connected, and a
    /// stranger's cheapest attacks (garbage, a header declaring a body over
    /// the limit, a connection closed right away) show in their first bytes.
    /// A server that calls this where it runs handshakes turns those away
    /// there, so that the threads serving established connections never see
    /// them: the idea of `TCP_DEFER_ACCEPT` and of accept filters. A quiet
    /// peer is not an error: after `wait` the connection starts as it is.
    /// The bytes read are kept for the connection.
    ///
    /// Only plain connections are checked: Noise records and TLS are opened
    /// once the connection runs, and for them this returns `Ok` at once.
    ///
    /// The lower-level form of
    /// [`StartOptions::first_header_within`](crate::StartOptions::first_header_within),
    /// which an [`Acceptor`](crate::Acceptor) applies to every connection.
    ///
    /// # Errors
    ///
    /// A header the connection would refuse ([`Error::Protocol`]), the peer
    /// closing before a whole header ([`Error::PeerClosed`]), or a read
    /// error.
    pub async fn first_header(&mut self, wait: Duration) -> Result<(), Error> {
        let (AcceptedStream::Raw(io), Protection::ByStream) = (&mut self.stream, &self.protection)
        else {
            return Ok(());
        };
        // Only the header is read here, into no allocation of its own: a
        // quiet peer waits at the cost of its task alone. Bytes already kept
        // (by an earlier call) count towards it.
        let need = HEADER_LEN.saturating_sub(self.leftover.len());
        let mut header = [0; HEADER_LEN];
        let mut got = 0;
        let read = async {
            while got < need {
                let n = io
                    .read(header.get_mut(got..need).unwrap_or_default())
                    .await?;
                if n == 0 {
                    return Err(Error::PeerClosed);
                }
                got += n;
            }
            Ok(())
        };
        let read = tokio::time::timeout(wait, read).await;
        self.leftover
            .extend_from_slice(header.get(..got).unwrap_or_default());
        match read {
            Ok(read) => read?,
            Err(_) => return Ok(()),
        }
        Decoder::new(self.config.max_frame_len).peek_header(&self.leftover)?;
        Ok(())
    }

    /// Sets or clears the runtime of [`offload_to`](Self::offload_to).
    pub(crate) fn set_offload(&mut self, runtime: Option<tokio::runtime::Handle>) {
        self.offload = runtime;
    }

    /// Starts the connection's reader and writer tasks on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub fn start(self) -> Connection {
        let Self {
            stream,
            protection,
            leftover,
            info,
            config,
            offload,
        } = self;
        match stream {
            AcceptedStream::Raw(io) => {
                Connection::spawn(io, protection, leftover, info, &config, offload)
            }
            AcceptedStream::Tls(stream) => {
                Connection::spawn(*stream, protection, leftover, info, &config, offload)
            }
        }
    }
}

impl<I> std::fmt::Debug for Accepted<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Opens a TCP connection with `TCP_NODELAY` on (the writer coalesces
/// frames itself, so Nagle's algorithm would only add delay).
///
/// The lower-level form of [`Connector::connect_tcp`](crate::Connector::connect_tcp),
/// which also runs the handshake.
///
/// # Errors
///
/// [`Error::Setup`] for a timeout out of range; [`Error::Timeout`] with
/// [`TimeoutKind::Connect`], or the I/O error.
pub async fn connect_tcp(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, Error> {
    check_duration(timeout, "connect timeout must be between 1 ms and one day")?;
    tcp(addr, timeout).await
}

/// [`connect_tcp`] with the timeout already checked.
pub(crate) async fn tcp(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, Error> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(stream) => stream?,
        Err(_) => {
            return Err(Error::Timeout {
                kind: TimeoutKind::Connect,
                after: timeout,
            });
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Opens a Unix domain socket connection.
///
/// The lower-level form of [`Connector::connect_unix`](crate::Connector::connect_unix),
/// which also runs the handshake.
///
/// # Errors
///
/// [`Error::Setup`] for a timeout out of range; [`Error::Timeout`] with
/// [`TimeoutKind::Connect`], or the I/O error.
#[cfg(unix)]
pub async fn connect_unix(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<tokio::net::UnixStream, Error> {
    check_duration(timeout, "connect timeout must be between 1 ms and one day")?;
    unix(path, timeout).await
}

/// [`connect_unix`] with the timeout already checked.
#[cfg(unix)]
pub(crate) async fn unix(
    path: impl AsRef<Path>,
    timeout: Duration,
) -> Result<tokio::net::UnixStream, Error> {
    match tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path)).await {
        Ok(stream) => Ok(stream?),
        Err(_) => Err(Error::Timeout {
            kind: TimeoutKind::Connect,
            after: timeout,
        }),
    }
}

/// Opens a Windows named pipe, which stands in for a Unix socket there.
///
/// # Errors
///
/// The I/O error.
#[cfg(windows)]
pub async fn connect_pipe(
    name: impl AsRef<std::ffi::OsStr>,
) -> Result<tokio::net::windows::named_pipe::NamedPipeClient, Error> {
    Ok(tokio::net::windows::named_pipe::ClientOptions::new().open(name)?)
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
