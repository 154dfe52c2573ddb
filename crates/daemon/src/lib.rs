//! The netproto server, client, configuration and logging, and the
//! `netproto` command.
//!
//! - [`Server`]: listens on TCP or a Unix socket, with connection limits
//!   (total, per IP, handshakes in progress) and graceful shutdown.
//! - [`Client`]: connects with timeouts, many requests in flight on one
//!   connection, reconnection with exponential backoff and jitter.
//! - [`NetworkConfig`]: TOML files and `NETPROTO__*` environment variables.
//! - [`init_logging`]: human or JSON logs, `RUST_LOG` filters.
//! - [`metrics`]: what the server records, and its Prometheus exporter.
//! - [`Cluster`]: a peer set with heartbeats, states and membership events.
//! - [`Balancer`]: requests spread over several servers, with failover.
#![forbid(unsafe_code)]

mod admission;
mod backoff;
mod balancer;
mod client;
mod cluster;
mod config;
mod error;
mod logging;
pub mod metrics;
mod security;
mod server;
mod stream;

pub use balancer::{Balancer, RequestOptions};
pub use client::Client;
pub use cluster::{Cluster, MembershipEvent, PeerId, PeerState, PeerView};
pub use config::{
    ClientConfig, ClusterConfig, ENV_PREFIX, ENV_SEPARATOR, LoggingConfig, MAX_HANDSHAKE_THREADS,
    NetworkConfig, SecurityConfig, ServerConfig, TransportConfig,
};
pub use error::{Error, Result};
pub use logging::{LogFormat, init_logging};
pub use security::{KnownHosts, load_or_generate_identity};
pub use server::{Server, ServerHandle, ServerStats};

use netproto_crypto::PublicKey;
use netproto_wire::{Compression, SecurityMode};

/// Parses a compression name: `none`, `lz4` or `zstd`.
///
/// # Errors
///
/// [`Error::Invalid`] for another name.
pub fn compression(name: &str) -> Result<Compression> {
    match name {
        "none" | "" => Ok(Compression::None),
        "lz4" => Ok(Compression::Lz4),
        "zstd" => Ok(Compression::Zstd),
        other => Err(Error::Invalid(format!(
            "compression must be none, lz4 or zstd, not {other:?}"
        ))),
    }
}

/// Parses a security mode name: `noise`, `tls` or `plain`.
///
/// # Errors
///
/// [`Error::Invalid`] for another name.
pub fn security_mode(name: &str) -> Result<SecurityMode> {
    match name {
        "noise" => Ok(SecurityMode::Noise),
        "tls" => Ok(SecurityMode::Tls),
        "plain" => Ok(SecurityMode::Plain),
        other => Err(Error::Invalid(format!(
            "security mode must be noise, tls or plain, not {other:?}"
        ))),
    }
}

/// Parses a Noise public key written as 64 hex digits.
///
/// # Errors
///
/// [`Error::Invalid`] for anything else.
pub fn parse_public_key(hex_key: &str) -> Result<PublicKey> {
    hex_key
        .trim()
        .parse()
        .map_err(|_| Error::Invalid(format!("{hex_key:?} is not a public key (64 hex digits)")))
}

/// Parses a TLS SPKI pin written as 64 hex digits (SHA-256).
///
/// # Errors
///
/// [`Error::Invalid`] for anything else.
pub fn parse_pin(hex_pin: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(hex_pin.trim())
        .map_err(|_| Error::Invalid(format!("{hex_pin:?} is not a pin (64 hex digits)")))?;
    bytes
        .try_into()
        .map_err(|_| Error::Invalid(format!("{hex_pin:?} is not a pin (64 hex digits)")))
}
