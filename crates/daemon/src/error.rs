//! The one error type of this crate.

use std::path::PathBuf;

use netproto_crypto::PublicKey;
use netproto_wire::ErrorCode;

/// Everything that can go wrong in the server, the client or the configuration.
///
/// Decide what to do with a failed request through the predicates rather
/// than by matching the variants of four crates:
///
/// - [`is_remote`](Self::is_remote): the server answered with an error;
///   [`code`](Self::code) says which;
/// - [`is_timeout`](Self::is_timeout): this client gave up waiting (its
///   `client.response_timeout`);
/// - [`is_server_timeout`](Self::is_server_timeout): the server gave up
///   (it answered [`ErrorCode::TIMEOUT`]);
/// - [`is_deadline_exceeded`](Self::is_deadline_exceeded): the request's
///   own deadline passed, here or on the server;
/// - [`is_authentication`](Self::is_authentication): the server is not
///   the one configured (a wrong key or certificate): final, never retried;
/// - [`is_retryable`](Self::is_retryable): the same request may succeed
///   later.
///
/// # Examples
///
/// A request that the server's handler refuses, against a server in this
/// process:
///
/// ```
/// use std::sync::Arc;
///
/// use netproto_daemon::{Client, NetworkConfig, Server};
/// use netproto_dispatch::Dispatcher;
/// use netproto_wire::{ErrorCode, Message, MessageType};
///
/// const KV_GET: MessageType = MessageType::from_static("kv.get");
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dispatcher = Arc::new(Dispatcher::default());
/// dispatcher.register("kv.get", |_| Err("no such key".into()));
/// let mut config = NetworkConfig::default();
/// config.server.address = "127.0.0.1:0".into();
/// let server = Server::bind(config.clone(), dispatcher).await?;
/// config.client.address = server.local_addr();
/// config.client.server_key = server.public_key().copied();
/// let stop = server.handle();
/// let running = tokio::spawn(server.run());
///
/// let client = Client::connect(config).await?;
/// let request = Message::custom_static(KV_GET, &b"color"[..]);
/// let code = match client.request(&request).await {
///     Ok(reply) => panic!("unexpected {reply:?}"),
///     // Wait and try again, perhaps on another server.
///     Err(e) if e.is_timeout() || e.is_server_timeout() => None,
///     // Too late to be useful: give up on this request.
///     Err(e) if e.is_deadline_exceeded() => None,
///     // Not the server configured: never retry, tell a human.
///     Err(e) if e.is_authentication() => return Err(e.into()),
///     // The server refused the request: its code says why.
///     Err(e) if e.is_remote() => e.code(),
///     Err(e) if e.is_retryable() => None,
///     Err(e) => return Err(e.into()),
/// };
/// assert_eq!(code, Some(ErrorCode::HANDLER_FAILED));
///
/// client.close().await?;
/// stop.shutdown(None).await;
/// running.await??;
/// # Ok(())
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration could not be read or parsed.
    #[error("cannot load configuration")]
    Config(#[from] config::ConfigError),
    /// A configuration value is missing or out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A key file could not be read or written.
    #[error("key file {}", path.display())]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: netproto_crypto::Error,
    },
    /// The connection failed.
    #[error(transparent)]
    Transport(#[from] netproto_transport::Error),
    /// Transport settings could not be built: certificates, keys, limits.
    #[error(transparent)]
    TransportSetup(#[from] netproto_transport::SetupError),
    /// A request failed.
    #[error(transparent)]
    Dispatch(#[from] netproto_dispatch::Error),
    /// A message could not be encoded or decoded.
    #[error(transparent)]
    Wire(#[from] netproto_wire::Error),
    /// A socket or file operation failed.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// The server refused the connection: it is at a connection limit.
    #[error("server refused the connection: {0}")]
    Refused(&'static str),
    /// The peer's key differs from the one remembered for it (known hosts).
    #[error("the server at {address} presented key {presented}, but {known} is remembered for it: refusing (possible man in the middle; remove the line from {} if the key changed on purpose)", file.display())]
    KeyChanged {
        /// The server address.
        address: String,
        /// The key it presented.
        presented: String,
        /// The key remembered for it.
        known: String,
        /// The known-hosts file.
        file: PathBuf,
    },
    /// The server presented a Noise key other than the pinned one
    /// (`client.server_key` or `security.server_key`). Final: the client
    /// refuses at once and never retries, since the server would present
    /// the same key again.
    #[error(
        "the server at {address} presented key {presented}, but {pinned} is pinned for it: refusing (possible man in the middle; if the server's key changed on purpose, pin the new one in client.server_key)"
    )]
    ServerKeyMismatch {
        /// The server address.
        address: String,
        /// The key it presented.
        presented: PublicKey,
        /// The key pinned for it.
        pinned: PublicKey,
    },
    /// Logging was already initialised.
    #[error("logging already initialised")]
    LoggingInit,
    /// Every reconnection attempt failed, or one failed in a way that
    /// retrying would not help. Every request that waited for the same
    /// reconnection gets this error, sharing `last`.
    ///
    /// Authentication failures are not wrapped in it: they are final and
    /// come as they are ([`is_authentication`](Self::is_authentication)).
    #[error("gave up after {attempts} connection {}", if *attempts == 1 { "attempt" } else { "attempts" })]
    GaveUp {
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        #[source]
        last: std::sync::Arc<Self>,
    },
    /// The operation did not complete in time.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// A cluster peer or balancer endpoint has no connection now, so the
    /// request was not sent (it is safe to send it elsewhere).
    #[error("{endpoint} is {state}: not connected, the request was not sent")]
    Unavailable {
        /// The peer's or endpoint's configured address.
        endpoint: String,
        /// Its state when the request was made.
        state: crate::PeerState,
    },
    /// The connection to a cluster peer or balancer endpoint was lost, or
    /// the peer was declared dead, while the request was in flight: it may
    /// or may not have been processed.
    #[error(
        "{endpoint} went down with the request in flight (it may or may not have been processed)"
    )]
    EndpointDown {
        /// The peer's or endpoint's configured address.
        endpoint: String,
        /// The connection error, if the connection failed (none when the
        /// peer was declared dead after missed heartbeats).
        #[source]
        cause: Option<netproto_dispatch::Error>,
    },
    /// No endpoint of the balancer is alive.
    #[error("none of the {endpoints} endpoints is alive")]
    NoHealthyEndpoint {
        /// How many endpoints are configured.
        endpoints: usize,
    },
    /// The balancer's tasks are gone: the tokio runtime it was created on
    /// has shut down. Nothing was sent; make a new balancer on a runtime
    /// that runs.
    #[error("the balancer has stopped: the runtime it was created on has shut down")]
    BalancerStopped,
}

impl Error {
    /// Whether trying again (a new connection, after a backoff) may succeed.
    ///
    /// True for transport failures that
    /// [`netproto_transport::Error::is_retryable`] calls retryable (refused
    /// or reset connections, timeouts, a busy server), for a lost connection
    /// or a request timeout ([`netproto_dispatch::Error::is_connection_lost`])
    /// and for the same I/O errors; false for what would fail again as it
    /// is: configuration and key files, authentication failures
    /// ([`is_authentication`](Self::is_authentication)), TLS, Noise and
    /// protocol failures, errors the server answered with.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(error) => error.is_retryable(),
            Self::Dispatch(error) => {
                error.is_connection_lost()
                    || matches!(
                        error,
                        netproto_dispatch::Error::Timeout(_)
                            | netproto_dispatch::Error::QueueFull(_)
                    )
            }
            Self::Io(error) => {
                netproto_transport::Error::Io(std::io::Error::from(error.kind())).is_retryable()
            }
            Self::Timeout(_) | Self::Unavailable { .. } | Self::EndpointDown { .. } => true,
            _ => false,
        }
    }

    /// The request's error, when this is one.
    fn dispatch(&self) -> Option<&netproto_dispatch::Error> {
        match self {
            Self::Dispatch(error) => Some(error),
            _ => None,
        }
    }

    /// The protocol error code behind the error, when there is one: the
    /// server's code when it answered with an error
    /// ([`is_remote`](Self::is_remote)) or is going away;
    /// [`ErrorCode::TIMEOUT`] when this client's response timeout expired
    /// and [`ErrorCode::DEADLINE_EXCEEDED`] when the request's deadline
    /// passed here (as [`netproto_dispatch::Error::code`]).
    pub fn code(&self) -> Option<ErrorCode> {
        self.dispatch().and_then(netproto_dispatch::Error::code)
    }

    /// Whether the server answered the request with an error frame: it
    /// received the request and refused it, or its handler failed
    /// ([`code`](Self::code) says which; the text is in the message).
    pub fn is_remote(&self) -> bool {
        matches!(
            self.dispatch(),
            Some(netproto_dispatch::Error::Remote { .. })
        )
    }

    /// Whether this client gave up waiting: no answer came within
    /// `client.response_timeout` (waiting for a reconnection included), the
    /// request found no room in the send queue within
    /// `client.operation_timeout`, or a cluster did not get ready in time.
    ///
    /// Not the server's timeout ([`is_server_timeout`](Self::is_server_timeout)),
    /// nor a deadline ([`is_deadline_exceeded`](Self::is_deadline_exceeded)),
    /// unlike [`netproto_dispatch::Error::is_timeout`], which counts all three.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
            || matches!(
                self.dispatch(),
                Some(netproto_dispatch::Error::Timeout(_) | netproto_dispatch::Error::QueueFull(_))
            )
    }

    /// Whether the server gave up on the request: it answered with
    /// [`ErrorCode::TIMEOUT`].
    pub fn is_server_timeout(&self) -> bool {
        self.is_remote() && self.code() == Some(ErrorCode::TIMEOUT)
    }

    /// Whether the request's deadline passed: here
    /// ([`netproto_dispatch::Error::DeadlineExceeded`]) or on the server (an
    /// error with [`ErrorCode::DEADLINE_EXCEEDED`]).
    pub fn is_deadline_exceeded(&self) -> bool {
        self.dispatch()
            .is_some_and(netproto_dispatch::Error::is_deadline_exceeded)
    }

    /// Whether the server could not be authenticated: its Noise key is not
    /// the pinned one ([`ServerKeyMismatch`](Self::ServerKeyMismatch)) or
    /// not the remembered one ([`KeyChanged`](Self::KeyChanged)), its TLS
    /// certificate failed verification or matches no pin, or it refused
    /// this client's key or certificate
    /// ([`netproto_transport::Error::is_authentication`]).
    ///
    /// These are final: the client makes one attempt, returns the error as
    /// it is (never in [`GaveUp`](Self::GaveUp)), and
    /// [`is_retryable`](Self::is_retryable) is false.
    pub fn is_authentication(&self) -> bool {
        match self {
            Self::KeyChanged { .. } | Self::ServerKeyMismatch { .. } => true,
            Self::Transport(error) => error.is_authentication(),
            Self::GaveUp { last, .. } => last.is_authentication(),
            _ => false,
        }
    }

    /// A copy of an authentication failure, for each request that waited
    /// for the connection attempt that met it; `None` for other errors.
    pub(crate) fn authentication_copy(&self) -> Option<Self> {
        use netproto_transport::Error as T;
        Some(match self {
            Self::KeyChanged {
                address,
                presented,
                known,
                file,
            } => Self::KeyChanged {
                address: address.clone(),
                presented: presented.clone(),
                known: known.clone(),
                file: file.clone(),
            },
            Self::ServerKeyMismatch {
                address,
                presented,
                pinned,
            } => Self::ServerKeyMismatch {
                address: address.clone(),
                presented: *presented,
                pinned: *pinned,
            },
            Self::Transport(error) if error.is_authentication() => Self::Transport(match error {
                T::UnknownPeer { presented } => T::UnknownPeer {
                    presented: *presented,
                },
                T::PinMismatch => T::PinMismatch,
                T::Tls(tls) => T::Tls(tls.clone()),
                T::Crypto(netproto_crypto::Error::UnknownPeer) => {
                    T::Crypto(netproto_crypto::Error::UnknownPeer)
                }
                _ => return None,
            }),
            _ => return None,
        })
    }
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gave_up_counts_attempts_in_words() {
        let last = std::sync::Arc::new(Error::Timeout("connect"));
        let once = Error::GaveUp {
            attempts: 1,
            last: last.clone(),
        };
        assert_eq!(once.to_string(), "gave up after 1 connection attempt");
        let twice = Error::GaveUp { attempts: 2, last };
        assert_eq!(twice.to_string(), "gave up after 2 connection attempts");
    }

    #[test]
    fn authentication_failures_are_final_and_copied_as_they_are() {
        let key = |byte| PublicKey::from_bytes([byte; 32]);
        let mismatch = Error::ServerKeyMismatch {
            address: "127.0.0.1:9000".into(),
            presented: key(1),
            pinned: key(2),
        };
        let untrusted = Error::Transport(netproto_transport::Error::Tls(
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        ));
        for error in [&mismatch, &untrusted] {
            assert!(
                error.is_authentication() && !error.is_retryable(),
                "{error:?}"
            );
            let copy = error.authentication_copy().unwrap();
            assert_eq!(copy.to_string(), error.to_string());
            assert!(copy.is_authentication());
        }
        let text = mismatch.to_string();
        assert!(
            text.contains(&"01".repeat(32)) && text.contains(&"02".repeat(32)),
            "{text}"
        );
        let refused = Error::Transport(netproto_transport::Error::PeerClosed);
        assert!(!refused.is_authentication() && refused.authentication_copy().is_none());
    }
}
