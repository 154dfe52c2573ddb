//! The netproto server, client, configuration and logging, and the
//! `netproto` command.
//!
//! - [`Server`]: listens on TCP or a Unix socket, with connection limits
//!   (total, per IP, handshakes in progress) and graceful shutdown.
//! - [`Client`]: connects with timeouts, many requests in flight on one
//!   connection, reconnection with exponential backoff and jitter.
//! - [`NetworkConfig`]: TOML files and `NETPROTO__*` environment variables,
//!   typed when loaded ([`SecurityMode`], [`Compression`], keys, pins,
//!   [`PeerAddress`]).
//! - [`init_logging`]: human or JSON logs, `RUST_LOG` filters.
//! - [`metrics`]: what the server records, and its Prometheus exporter.
//! - [`Cluster`]: SWIM membership of daemons (foca), with membership events.
//! - [`Balancer`]: requests spread over several servers, with failover, on
//!   tower's balance; [`discovery`] says where its endpoints come from.
//! - [`service`]: typed methods (the `netproto-service` crate, re-exported);
//!   [`Client::typed`] makes typed calls over a client's connection.
//!
//! This is the one crate a service depends on: besides its own types it
//! re-exports what a server and its clients name from the layers below,
//! [`Dispatcher`] and [`HandlerError`] (handlers), [`Message`] and
//! [`ErrorCode`] (what goes over the wire, and the error codes, with the
//! common application codes such as [`ErrorCode::NOT_FOUND`]), and
//! [`PublicKey`] (a Noise key to pin). `examples/quickstart.rs` is a whole
//! service with only this crate's imports: server and client in one
//! program, the server's key pinned, concurrent typed calls, an
//! application error, a deadline and a graceful shutdown.
#![forbid(unsafe_code)]

mod backoff;
mod balancer;
mod client;
mod cluster;
mod config;
pub mod discovery;
mod error;
mod logging;
pub mod metrics;
mod security;
mod server;

pub use balancer::{Balanced, Balancer, EndpointView, Failover, RequestOptions};
pub use client::Client;
pub use cluster::{Cluster, MembershipEvent, PeerId, PeerState, PeerView};
pub use config::{
    BalancerConfig, ClientConfig, ClusterConfig, Compression, Discovery, ENV_PREFIX, ENV_SEPARATOR,
    LoggingConfig, MAX_HANDSHAKE_THREADS, NetworkConfig, NoiseBackend, NoiseCipher, PeerAddress,
    SecurityConfig, SecurityMode, ServerConfig, TransportConfig, TrustedProxy,
};
pub use error::{Error, Result};
pub use logging::{LogFormat, init_logging};
pub use security::{KnownHosts, load_or_generate_identity};
pub use server::{Server, ServerHandle, ServerStats};

// What a service names from the layers below, so that it depends on this
// crate alone (see the crate docs).
pub use netproto_crypto::PublicKey;
pub use netproto_dispatch::{Dispatcher, HandlerError};
pub use netproto_wire::{ErrorCode, Message};

/// Typed methods: serde request and response types, typed handlers and
/// clients (the `netproto-service` crate). Register handlers on the
/// [`Dispatcher`] given to [`Server::bind`]; call them through [`Client::typed`].
pub use netproto_service as service;
