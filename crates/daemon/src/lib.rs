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
//! - [`Cluster`]: a peer set with heartbeats, states and membership events.
//! - [`Balancer`]: requests spread over several servers, with failover, on
//!   tower's balance; [`discovery`] says where its endpoints come from.
//! - [`service`]: typed methods (the `netproto-service` crate, re-exported);
//!   [`Client::typed`] makes typed calls over a client's connection.
#![forbid(unsafe_code)]

mod backoff;
mod balancer;
mod client;
// `Cluster::links` and `Link::usable` served the balancer, which no longer
// uses the cluster; they go with the cluster's move onto SWIM.
#[allow(dead_code)]
mod cluster;
mod config;
pub mod discovery;
mod error;
mod logging;
pub mod metrics;
mod security;
mod server;

pub use balancer::{Balanced, Balancer, EndpointView, RequestOptions};
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

/// Typed methods: serde request and response types, typed handlers and
/// clients (the `netproto-service` crate). Register handlers on the
/// [`Dispatcher`](netproto_dispatch::Dispatcher) given to
/// [`Server::bind`]; call them through [`Client::typed`].
pub use netproto_service as service;
