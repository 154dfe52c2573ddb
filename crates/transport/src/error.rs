//! The one error type of this crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Which timeout expired.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Establishing the TCP or Unix connection.
    Connect,
    /// The client's preface did not arrive in time (server side, see
    /// [`AcceptLimits::preface_timeout`](crate::AcceptLimits::preface_timeout)).
    Preface,
    /// The preface exchange and the security handshake.
    Handshake,
    /// No frame in either direction.
    Idle,
    /// A write did not complete: the peer is not reading.
    Write,
    /// The peer answered no heartbeat for the configured number of intervals.
    Heartbeat,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Preface => "preface",
            Self::Handshake => "handshake",
            Self::Idle => "idle",
            Self::Write => "write",
            Self::Heartbeat => "heartbeat",
        })
    }
}

/// Everything that can go wrong on a netproto connection.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O error on the socket.
    #[error("i/o error")]
    Io(#[from] io::Error),
    /// A timeout expired.
    #[error("{kind} timeout after {after:?}")]
    Timeout {
        /// Which timeout.
        kind: TimeoutKind,
        /// The configured duration.
        after: Duration,
    },
    /// The peer closed the connection.
    #[error("peer closed the connection")]
    PeerClosed,
    /// The connection was closed locally; nothing more can be sent or received.
    #[error("connection closed")]
    Closed,
    /// The send queue is full (`try_send` only; `send` waits instead).
    #[error("send queue full: backpressure")]
    Backpressure,
    /// The peer broke the protocol: a malformed frame or an unexpected message.
    #[error("protocol violation")]
    Protocol(#[from] netproto_wire::Error),
    /// A compressed body was refused or corrupt.
    #[error("decompression failed")]
    Compression(#[from] netproto_compress::Error),
    /// The Noise handshake or a record failed.
    #[error("secure session failed")]
    Crypto(#[from] netproto_crypto::Error),
    /// The server refused the preface.
    #[error(
        "server refused the connection: {status:?} (it speaks version {version}, mode {mode:?})"
    )]
    Refused {
        /// Why.
        status: netproto_wire::PrefaceStatus,
        /// The server's protocol version.
        version: u8,
        /// The server's security mode.
        mode: netproto_wire::SecurityMode,
    },
    /// The peer asked for a security mode this side does not offer.
    #[error("peer asked for {asked:?}, this side offers {offered:?}")]
    ModeMismatch {
        /// What the peer asked for.
        asked: netproto_wire::SecurityMode,
        /// What this side offers.
        offered: netproto_wire::SecurityMode,
    },
    /// A TLS error: handshake, certificate verification, or configuration.
    #[error("tls error")]
    Tls(#[from] rustls::Error),
    /// The peer's certificate is valid but matches none of the configured SPKI pins.
    #[error("peer certificate matches no configured pin")]
    PinMismatch,
    /// A PEM file could not be read or parsed.
    #[error("cannot load {what} from {}", path.display())]
    Pem {
        /// What was being loaded (certificate, private key, CA).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// PEM data passed in memory (not read from a file) could not be parsed.
    #[error("cannot load {what} from pem data")]
    PemData {
        /// What was being loaded (certificate, private key, CA).
        what: &'static str,
        /// Why it failed.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A self-signed certificate could not be generated.
    #[error("certificate generation failed")]
    CertGen(#[from] rcgen::Error),
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}
