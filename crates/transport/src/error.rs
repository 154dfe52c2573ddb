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
    /// The peer's Noise static key is not accepted: it is not the pinned key
    /// ([`NoiseConfig::remote_static`](crate::NoiseConfig::remote_static))
    /// or not in the allow-list
    /// ([`NoiseConfig::allowed_peers`](crate::NoiseConfig::allowed_peers)).
    /// The handshake stopped as soon as the peer presented it. Never
    /// retryable: the same peer presents the same key again.
    #[error("peer presented noise key {presented}, which is not accepted")]
    UnknownPeer {
        /// The static public key the peer presented (public, not secret).
        presented: netproto_crypto::PublicKey,
    },
    /// The peer asked for a security mode this side does not offer.
    #[error("peer asked for {asked:?}, this side offers {offered:?}")]
    ModeMismatch {
        /// What the peer asked for.
        asked: netproto_wire::SecurityMode,
        /// What this side offers.
        offered: netproto_wire::SecurityMode,
    },
    /// A TLS error during the handshake: certificate verification, alerts.
    #[error("tls error")]
    Tls(#[from] rustls::Error),
    /// The peer's certificate is valid but matches none of the configured SPKI pins.
    #[error("peer certificate matches no configured pin")]
    PinMismatch,
    /// The server name is not a valid DNS name or IP address.
    #[error("invalid server name {0:?}")]
    InvalidServerName(String),
    /// Invalid settings given to one of the lower-level functions that check
    /// their arguments on every call ([`connect`](crate::connect),
    /// [`accept_handshake_within`](crate::accept_handshake_within),
    /// [`connect_tcp`](crate::connect_tcp)). A [`Connector`](crate::Connector)
    /// or [`Acceptor`](crate::Acceptor) checks them once, when it is built.
    #[error("invalid setup")]
    Setup(#[from] SetupError),
}

impl Error {
    /// Whether trying again, later or over a new connection, may succeed:
    /// the failure is one of the moment, not of the settings or the peer's
    /// software.
    ///
    /// True for:
    /// - I/O errors of a network that failed or a server not (yet) there:
    ///   connection refused, reset or aborted, broken pipe, an unexpected end
    ///   of stream, unreachable host or network, an unavailable address, an
    ///   operating-system timeout, an interrupted call, and a Unix socket
    ///   path that does not exist (yet);
    /// - every [`Timeout`](Self::Timeout): connect, preface, handshake, and
    ///   the timeouts that end an established connection (idle, write,
    ///   heartbeat);
    /// - [`PeerClosed`](Self::PeerClosed);
    /// - [`Refused`](Self::Refused) with [`PrefaceStatus::Busy`]: the server
    ///   is at capacity or shutting down;
    /// - [`Backpressure`](Self::Backpressure): the send queue is full now,
    ///   the connection is fine.
    ///
    /// False for everything that would fail again as it is: a locally
    /// [`Closed`](Self::Closed) connection, a peer that broke the protocol,
    /// TLS, Noise and pin failures (a peer key not accepted,
    /// [`UnknownPeer`](Self::UnknownPeer), included), a refused version or mode, invalid
    /// settings, and other I/O errors (permission denied, say).
    ///
    /// [`PrefaceStatus::Busy`]: netproto_wire::PrefaceStatus::Busy
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Io(error) => io_is_retryable(error),
            Self::Timeout { .. } | Self::PeerClosed | Self::Backpressure => true,
            Self::Refused { status, .. } => *status == netproto_wire::PrefaceStatus::Busy,
            _ => false,
        }
    }

    /// Whether a timeout expired; [`timeout_kind`](Self::timeout_kind) says
    /// which.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Which timeout expired, if this is a [`Timeout`](Self::Timeout).
    pub fn timeout_kind(&self) -> Option<TimeoutKind> {
        match self {
            Self::Timeout { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether the connection is closed, by either side: closed here
    /// ([`Closed`](Self::Closed)) or by the peer
    /// ([`is_peer_closed`](Self::is_peer_closed)).
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed) || self.is_peer_closed()
    }

    /// Whether the peer closed or dropped the connection: a clean close
    /// ([`PeerClosed`](Self::PeerClosed)), or an I/O error saying the
    /// connection was reset or aborted, the pipe broken, or the stream
    /// ended in the middle of something.
    pub fn is_peer_closed(&self) -> bool {
        match self {
            Self::PeerClosed => true,
            Self::Io(error) => matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        }
    }

    /// Whether the peer broke the protocol: a malformed or oversized frame,
    /// an unexpected message ([`Protocol`](Self::Protocol)), or a compressed
    /// body that is corrupt or over the limit
    /// ([`Compression`](Self::Compression)). A frame this side refused to
    /// send for its size is not counted.
    ///
    /// Security failures (TLS, Noise, pins) and refusals of the preface are
    /// not counted here.
    pub fn is_protocol(&self) -> bool {
        match self {
            // A frame too large to send is this side's doing.
            Self::Protocol(netproto_wire::Error::EncodeTooLarge { .. }) => false,
            Self::Protocol(_) | Self::Compression(_) => true,
            _ => false,
        }
    }
}

impl Error {
    /// Whether authentication failed: the peer's Noise key is not accepted
    /// ([`UnknownPeer`](Self::UnknownPeer), or the allow-list check of
    /// [`Crypto`](Self::Crypto)), its TLS certificate failed verification
    /// (not signed by a trusted CA, not valid for the name, expired:
    /// [`Tls`](Self::Tls) with `InvalidCertificate`) or matches no pin
    /// ([`PinMismatch`](Self::PinMismatch)), or the peer refused this
    /// side's certificate (a TLS alert about it).
    ///
    /// Never [retryable](Self::is_retryable): the same peer presents the
    /// same key or certificate again.
    pub fn is_authentication(&self) -> bool {
        use rustls::AlertDescription as Alert;
        match self {
            Self::UnknownPeer { .. }
            | Self::PinMismatch
            | Self::Crypto(netproto_crypto::Error::UnknownPeer)
            | Self::Tls(rustls::Error::InvalidCertificate(_)) => true,
            Self::Tls(rustls::Error::AlertReceived(alert)) => matches!(
                alert,
                Alert::BadCertificate
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateRevoked
                    | Alert::CertificateExpired
                    | Alert::CertificateUnknown
                    | Alert::UnknownCA
                    | Alert::CertificateRequired
            ),
            _ => false,
        }
    }
}

/// The I/O errors worth another attempt: see [`Error::is_retryable`].
fn io_is_retryable(error: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        error.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::TimedOut
            | K::Interrupted
            | K::WouldBlock
            | K::AddrNotAvailable
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::NotFound
    )
}

impl From<Error> for io::Error {
    /// The I/O error itself for [`Error::Io`]; otherwise an I/O error of the
    /// closest kind (timeouts [`TimedOut`](io::ErrorKind::TimedOut), a closed
    /// peer [`UnexpectedEof`](io::ErrorKind::UnexpectedEof), protocol and
    /// security failures [`InvalidData`](io::ErrorKind::InvalidData)) that
    /// carries the error as its source.
    fn from(error: Error) -> Self {
        match error {
            Error::Io(io) => io,
            other => {
                let kind = match &other {
                    Error::Timeout { .. } => io::ErrorKind::TimedOut,
                    Error::PeerClosed => io::ErrorKind::UnexpectedEof,
                    Error::Closed => io::ErrorKind::NotConnected,
                    Error::Backpressure => io::ErrorKind::WouldBlock,
                    Error::Refused { .. } => io::ErrorKind::ConnectionRefused,
                    Error::Setup(_) | Error::InvalidServerName(_) => io::ErrorKind::InvalidInput,
                    _ => io::ErrorKind::InvalidData,
                };
                Self::new(kind, other)
            }
        }
    }
}

/// What can go wrong while building security or configuration: loading
/// certificates and keys, generating certificates, checking settings.
///
/// These happen once, before any connection, and trying again does not help:
/// the input has to change. Errors on a connection are [`Error`].
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A configuration value is missing or out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
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
    /// rustls refused a certificate, a key or the configuration: a malformed
    /// certificate, a key that does not match its certificate.
    #[error("tls configuration refused")]
    Tls(#[from] rustls::Error),
    /// A self-signed certificate could not be generated.
    #[cfg(feature = "certgen")]
    #[error("certificate generation failed")]
    CertGen(#[from] rcgen::Error),
    /// A generated certificate or key could not be written.
    #[error("i/o error")]
    Io(#[from] io::Error),
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use netproto_wire::{PrefaceStatus, SecurityMode};

    use super::*;

    fn io(kind: io::ErrorKind) -> Error {
        Error::Io(io::Error::from(kind))
    }

    fn timeout(kind: TimeoutKind) -> Error {
        Error::Timeout {
            kind,
            after: Duration::from_secs(1),
        }
    }

    fn refused(status: PrefaceStatus) -> Error {
        Error::Refused {
            status,
            version: 1,
            mode: SecurityMode::Plain,
        }
    }

    #[test]
    fn retryable_errors() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::UnexpectedEof,
            io::ErrorKind::TimedOut,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NotFound,
        ] {
            assert!(io(kind).is_retryable(), "{kind:?}");
        }
        for kind in [
            TimeoutKind::Connect,
            TimeoutKind::Preface,
            TimeoutKind::Handshake,
            TimeoutKind::Idle,
            TimeoutKind::Write,
            TimeoutKind::Heartbeat,
        ] {
            assert!(timeout(kind).is_retryable(), "{kind:?}");
        }
        assert!(Error::PeerClosed.is_retryable());
        assert!(Error::Backpressure.is_retryable());
        assert!(refused(PrefaceStatus::Busy).is_retryable());
    }

    #[test]
    fn errors_that_would_repeat_are_not_retryable() {
        let errors = [
            io(io::ErrorKind::PermissionDenied),
            io(io::ErrorKind::InvalidInput),
            Error::Closed,
            Error::Protocol(netproto_wire::Error::UnknownKind(0xff)),
            Error::Tls(rustls::Error::DecryptError),
            Error::PinMismatch,
            Error::UnknownPeer {
                presented: netproto_crypto::PublicKey::from_bytes([7; 32]),
            },
            refused(PrefaceStatus::UnsupportedVersion),
            refused(PrefaceStatus::ModeNotOffered),
            Error::ModeMismatch {
                asked: SecurityMode::Noise,
                offered: SecurityMode::Plain,
            },
            Error::InvalidServerName("bad name".into()),
            Error::Setup(SetupError::Config("bad value")),
        ];
        for error in errors {
            assert!(!error.is_retryable(), "{error:?}");
        }
    }

    #[test]
    fn timeouts() {
        let error = timeout(TimeoutKind::Handshake);
        assert!(error.is_timeout());
        assert_eq!(error.timeout_kind(), Some(TimeoutKind::Handshake));
        assert!(!Error::PeerClosed.is_timeout());
        assert_eq!(Error::PeerClosed.timeout_kind(), None);
        // An operating-system timeout is an I/O error, not one of ours.
        assert!(!io(io::ErrorKind::TimedOut).is_timeout());
    }

    #[test]
    fn closed_and_peer_closed() {
        assert!(Error::PeerClosed.is_peer_closed());
        assert!(Error::PeerClosed.is_closed());
        assert!(io(io::ErrorKind::ConnectionReset).is_peer_closed());
        assert!(io(io::ErrorKind::UnexpectedEof).is_closed());
        assert!(Error::Closed.is_closed());
        assert!(!Error::Closed.is_peer_closed());
        assert!(!io(io::ErrorKind::ConnectionRefused).is_closed());
        assert!(!timeout(TimeoutKind::Idle).is_closed());
    }

    #[test]
    fn authentication() {
        let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        for error in [
            Error::UnknownPeer {
                presented: netproto_crypto::PublicKey::from_bytes([7; 32]),
            },
            Error::Crypto(netproto_crypto::Error::UnknownPeer),
            Error::PinMismatch,
            Error::Tls(untrusted),
            Error::Tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::UnknownCA,
            )),
        ] {
            assert!(error.is_authentication(), "{error:?}");
            assert!(!error.is_retryable(), "{error:?}");
        }
        for error in [
            Error::Tls(rustls::Error::DecryptError),
            Error::Crypto(netproto_crypto::Error::Decrypt),
            Error::PeerClosed,
            timeout(TimeoutKind::Handshake),
        ] {
            assert!(!error.is_authentication(), "{error:?}");
        }
    }

    #[test]
    fn protocol() {
        assert!(Error::Protocol(netproto_wire::Error::UnknownKind(0xff)).is_protocol());
        assert!(!Error::PeerClosed.is_protocol());
        assert!(!Error::PinMismatch.is_protocol());
        let too_large_to_send = netproto_wire::Error::EncodeTooLarge { len: 2, max: 1 };
        assert!(!Error::Protocol(too_large_to_send).is_protocol());
    }

    #[test]
    fn into_io_error() {
        let error = io::Error::from(Error::Io(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        let error = io::Error::from(timeout(TimeoutKind::Write));
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(
            error.into_inner().map(|inner| inner.downcast::<Error>()),
            Some(Ok(inner)) if inner.is_timeout()
        ));
        let error = io::Error::from(Error::Protocol(netproto_wire::Error::UnknownKind(0)));
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
