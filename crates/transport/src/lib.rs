//! netproto over tokio: TCP, Unix domain sockets, TLS and Noise streams,
//! framed connections with backpressure, timeouts and heartbeat.
//!
//! This is the only layer that touches sockets. It drives the sans-IO crates
//! below it: `netproto-wire` for frames, `netproto-compress` for bodies and
//! `netproto-crypto` for the Noise session.
//!
//! A [`Connection`] runs a reader task and a writer task over one stream:
//!
//! - the writer drains the bounded send queue into large writes (and large
//!   Noise records), so many small frames cost one system call;
//! - the reader reads large chunks and decodes every complete frame; when the
//!   inbound queue is full it stops reading, so TCP flow control pushes back;
//! - pings go out when the connection is quiet, and a peer silent for
//!   `heartbeat_misses` intervals is declared dead;
//! - every failure is a typed [`Error`], reported once by [`Receiver::recv`].
//!
//! A [`Connector`] and an [`Acceptor`] hold one side's security,
//! configuration and timeouts, checked once when built: setting up
//! ([`SetupError`]) is kept apart from what can go wrong on a connection
//! ([`Error`]). Users who bring their own stream and want frames only can
//! use the [`codec`] with `tokio_util::codec::Framed`.
//!
//! This crate does not dispatch requests (`netproto-dispatch` does), read
//! configuration files, or spawn anything out of sight other than the
//! reader and writer tasks of each started connection.
//!
//! # Features
//!
//! - `certgen` (default): certificate generation for development and tests
//!   (`tls::self_signed`, `tls::CertificateAuthority`), with rcgen.
//!
//! # Examples
//!
//! ```
//! use netproto_transport::{
//!     Acceptor, ClientSecurity, ConnectionConfig, Connector, Incoming, ServerSecurity,
//! };
//! use netproto_wire::Message;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default())?;
//! let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default())?;
//!
//! let (client_io, server_io) = tokio::io::duplex(64 * 1024);
//! let server = tokio::spawn(async move {
//!     let mut conn = acceptor.accept(server_io).await?;
//!     // Echo one message back.
//!     if let Some(Incoming::Message(envelope)) = conn.recv().await? {
//!         conn.send(envelope).await?;
//!     }
//!     Ok::<_, netproto_transport::Error>(conn)
//! });
//! let mut client = connector.connect(client_io).await?;
//! client.send(Message::Echo("hi".into()).to_envelope(1)).await?;
//! let Some(Incoming::Message(reply)) = client.recv().await? else {
//!     panic!("no reply");
//! };
//! assert_eq!(reply.request_id, 1);
//! # server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod codec;
mod config;
mod connection;
mod endpoint;
mod error;
mod establish;
mod noise;
pub mod preface;
mod proto;
mod stats;
pub mod sync;
pub mod tls;

pub use config::{ConnectionConfig, MAX_DURATION, MAX_QUEUE};
pub use connection::{Connection, ConnectionInfo, Incoming, Receiver, Sender};
pub use endpoint::{Acceptor, AcceptorBuilder, Connector, ConnectorBuilder, StartOptions};
pub use error::{Error, SetupError, TimeoutKind};
#[cfg(windows)]
pub use establish::connect_pipe;
#[cfg(unix)]
pub use establish::connect_unix;
pub use establish::{
    AcceptLimits, Accepted, ClientSecurity, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT,
    HandshakeProgress, HandshakeStage, ServerSecurity, accept_handshake_within, connect,
    connect_tcp,
};
pub use noise::NoiseConfig;
pub use stats::{ConnectionStats, StatsSnapshot};

/// A byte stream a connection can run over: TCP, Unix socket, TLS, or any
/// in-memory pipe.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<T> Io for T where T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
