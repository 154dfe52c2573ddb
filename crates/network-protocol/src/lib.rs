//! The netproto layers under the module paths of the original
//! `network-protocol` crate, so that programs written against its README
//! compile and run here.
//!
//! This crate adds no protocol logic of its own: it re-exports the layers
//! and converts the original crate's configuration structs into theirs.
//!
//! # Server authentication
//!
//! **A client built from the original [`ClientConfig`](config::ClientConfig)
//! encrypts but does not authenticate the server**: that struct has no field
//! for the server's key, and without one an active attacker in the middle
//! goes unnoticed, exactly as with the original crate. The client logs a
//! warning each time. Pin the server's key with
//! [`client::connect_pinned`](service::client::connect_pinned), use a
//! known-hosts file or a pin through
//! [`client::connect_with_network_config`](service::client::connect_with_network_config),
//! or use TLS. See [`service::client`].
//!
//! # Module map
//!
//! | Original path | Here |
//! |---|---|
//! | `config::NetworkConfig` | [`config::NetworkConfig`]: `server` and `client` as the original structs, plus the transport, security and logging sections (loaded by `netproto-daemon`) |
//! | `core` (codec, packet) | [`core`]: `netproto-wire` (frames, [`Decoder`](core::Decoder), [`Encoder`](core::Encoder)) |
//! | `protocol::dispatcher::Dispatcher` | [`protocol::dispatcher`]: `netproto-dispatch` |
//! | `protocol::message::Message` | [`protocol::message`]: `netproto-wire`'s [`Message`](protocol::message::Message) |
//! | `transport` | [`transport`]: `netproto-transport` (TCP, Unix sockets, TLS, Noise) |
//! | `service::daemon` | [`service::daemon`]: [`new_with_config`](service::daemon::new_with_config) over `netproto-daemon`'s server |
//! | `service::client` | [`service::client`]: [`connect_with_config`](service::client::connect_with_config), [`connect_tls`](service::client::connect_tls) over `netproto-daemon`'s client |
//! | `service::tls_daemon` | [`service::tls_daemon`]: [`start`](service::tls_daemon::start) |
//! | `utils::logging` | [`utils::logging`]: [`init_logging`](utils::logging::init_logging) |
//! | `utils::compression` | [`utils::compression`]: `netproto-compress` |
//! | `utils::crypto` | [`utils::crypto`]: `netproto-crypto` |
//! | `error::{ProtocolError, Result}` | [`error`]: wraps each layer's error |
//!
//! The crates themselves are in [`layers`].
//!
//! # What differs from the original crate
//!
//! Security, where the original falls short of its own feature list:
//!
//! - **Authenticated handshake.** `Noise_XX_25519_ChaChaPoly_SHA256` with
//!   static keys that can be pinned (or remembered on first use), instead
//!   of an unauthenticated key exchange. The connection preface is the
//!   Noise prologue, so a downgrade breaks the handshake. Timestamps
//!   (±5 s) and a nonce cache (10,000 entries) reject replayed handshakes.
//! - **Counter nonces.** Records are numbered, not sealed with random
//!   nonces: a replayed, reordered, dropped or forged record fails to
//!   decrypt and ends the connection.
//! - **Real key rotation.** Both sides apply Noise `Rekey()` to each
//!   direction every
//!   [`DEFAULT_REKEY_INTERVAL`](utils::crypto::record::DEFAULT_REKEY_INTERVAL)
//!   records; keys never persist.
//! - **Pinning on top of verification.** A TLS pin (SHA-256 of the server's
//!   SubjectPublicKeyInfo) is checked after full chain, name and signature
//!   verification, never instead of it.
//!
//! API shapes, where the original's did not fit:
//!
//! - `Message::Custom` carries its type name: `Custom { msg_type, data }`,
//!   built with [`Message::custom`](protocol::message::Message::custom).
//!   The handshake is not made of messages, so there is no `HandshakeInit`
//!   or `HandshakeAck`.
//! - Handlers return `Result<Message, HandlerError>`; a failing handler
//!   sends an error answer, which the client receives as an error.
//! - [`daemon::new_with_config`](service::daemon::new_with_config) binds
//!   nothing until the server runs (or [`bind`](service::daemon::Server::bind)
//!   is called), and [`Server`](service::daemon::Server) is `Clone`: keep a
//!   clone to shut it down from another task.
//! - [`Connection::close`](service::client::Connection::close) returns a
//!   `Result<()>`.
//! - The config structs stay exhaustive so that the original struct literals
//!   compile; settings they lack keep the daemon's defaults and are reached
//!   through [`config::NetworkConfig`].
//!
//! # Examples
//!
//! A server and a client in one program (the crate's `examples/` directory
//! holds the README's programs):
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use network_protocol::protocol::dispatcher::Dispatcher;
//! use network_protocol::protocol::message::Message;
//! use network_protocol::service::client::{self, ClientConfig};
//! use network_protocol::service::daemon::{self, ServerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> network_protocol::error::Result<()> {
//! let dispatcher = Arc::new(Dispatcher::default());
//! dispatcher.register("ECHO", |msg| Ok(msg.clone()));
//!
//! let mut server_config = ServerConfig::default();
//! server_config.address = "127.0.0.1:0".into();
//! let server = daemon::new_with_config(server_config, dispatcher);
//! server.bind().await?;
//! let running = tokio::spawn({
//!     let server = server.clone();
//!     async move { server.run().await }
//! });
//!
//! let mut client_config = ClientConfig::default();
//! client_config.address = server.local_addr().unwrap_or_default();
//! let key = server.public_key().expect("noise mode has a key");
//! let mut conn = client::connect_pinned(client_config, key).await?;
//! conn.secure_send(Message::Echo("hello".into())).await?;
//! assert_eq!(conn.secure_recv().await?, Message::Echo("hello".into()));
//! conn.close().await?;
//!
//! server.shutdown(Some(Duration::from_secs(5))).await;
//! running.await.expect("server task")?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod core;
pub mod error;
pub mod protocol;
pub mod service;
pub mod transport;
pub mod utils;

pub use error::{ProtocolError, Result};

/// The netproto crates this facade re-exports, under their own names.
pub mod layers {
    pub use netproto_compress as compress;
    pub use netproto_crypto as crypto;
    pub use netproto_daemon as daemon;
    pub use netproto_dispatch as dispatch;
    pub use netproto_transport as transport;
    pub use netproto_wire as wire;
}
