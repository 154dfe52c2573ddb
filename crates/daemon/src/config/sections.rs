//! The sections of the configuration, with their defaults.

use std::path::PathBuf;
use std::time::Duration;

use netproto_crypto::PublicKey;
use serde::{Deserialize, Serialize};

use super::values::{by_name, compression_by_name, hex_key, hex_keys, hex_pins};
use super::{Compression, NoiseBackend, NoiseCipher, PeerAddress, SecurityMode, TrustedProxy};
use crate::LogFormat;

/// Server settings.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen: `host:port`, or `unix:/path/to/socket`.
    pub address: String,
    /// Frames each connection's send queue holds before senders wait.
    pub backpressure_limit: usize,
    /// Time a new connection has for its preface and handshake.
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// Time a new connection has to send its whole preface (8 bytes, sent
    /// at once by every client), within `connection_timeout`: a socket that
    /// sends nothing is closed after this.
    #[serde(with = "humantime_serde")]
    pub preface_timeout: Duration,
    /// Ping a quiet connection this often; silent peers are dropped.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long a graceful shutdown waits for requests in flight.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How long a shutdown keeps serving as usual, new connections
    /// included, with `GET /readyz` failing (503), before its goaway: time
    /// for load balancers to see the daemon not ready and send nothing
    /// new. `0s` (the default) sends the goaway at once; set it to more
    /// than a balancer's readiness check period times its failure
    /// threshold (docs/OPERATIONS.md, stopping and draining).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Connections open at once; more are refused with a clear answer.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Connections not established yet (preface or handshake in progress)
    /// at once. When full, a new connection evicts the oldest socket that
    /// has sent nothing, else the handshake longest without progress once
    /// it has made none for a second; when none may go, it is refused.
    pub max_pending: usize,
    /// Pending connections at once from one IP address; when full, a new
    /// connection from there is refused (busy), once its preface arrives
    /// or its preface timeout passes.
    pub max_pending_per_ip: usize,
    /// Pending connections at once from one network prefix
    /// (`ipv4_prefix_len`, `ipv6_prefix_len`); when full, a new connection
    /// from there is refused, as for `max_pending_per_ip`.
    pub max_pending_per_prefix: usize,
    /// Length of the IPv4 prefixes the per-prefix limits count by (1 to 32).
    pub ipv4_prefix_len: u8,
    /// Length of the IPv6 prefixes the per-prefix limits count by (1 to
    /// 128; a /64 is what one host or site usually gets).
    pub ipv6_prefix_len: u8,
    /// Handshakes one IP address may complete per second (bursts of one
    /// second's worth); past it, its new connections are refused "busy".
    pub handshake_rate_per_ip: u32,
    /// Handshakes one network prefix may complete per second, as above.
    pub handshake_rate_per_prefix: u32,
    /// Read a PROXY protocol header (v1 or v2, as HAProxy's `send-proxy-v2`
    /// sends it) at the start of each connection from `trusted_proxies`,
    /// and treat the client address it carries as the peer's: in the
    /// per-address and per-prefix limits, and as the `peer` of the
    /// connection's log lines (its handlers' included). From a trusted
    /// source the header is required: a connection without a valid one is
    /// closed. Other sources are served as without it: a header from them
    /// fails their preface. Off by default. On a Unix socket listener
    /// every peer is trusted (the socket file's permissions say who may
    /// connect) and must send a header.
    pub proxy_protocol: bool,
    /// The load balancers whose connections start with a PROXY header:
    /// addresses (`10.0.0.7`) or prefixes (`10.0.0.0/24`, `fd00::/64`).
    /// Must not be empty when `proxy_protocol` is on (TCP listeners).
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Time a connection from a trusted proxy has to send its whole PROXY
    /// header, before its preface timeout starts.
    #[serde(with = "humantime_serde")]
    pub proxy_timeout: Duration,
    /// Largest PROXY header accepted, in bytes (232 to 65551; a v1 header
    /// is at most 107 bytes, a v2 header 16 plus its addresses and TLVs).
    pub proxy_header_max: usize,
    /// Threads that accept connections, run their prefaces, security
    /// handshakes and first-header checks, and decompress large bodies
    /// (64 KiB and more, at most one per core at once), at a lower
    /// scheduling priority than the threads serving established connections
    /// (nice 10 on Linux): a flood of connections, handshakes or
    /// decompression bombs then does not delay their requests. `0` does that
    /// work on the serving threads.
    pub handshake_threads: usize,
    /// Requests handled at once on one connection.
    pub max_in_flight: usize,
    /// Time a handler has to answer one request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Serve Prometheus metrics at `GET /metrics`, and health checks at
    /// `GET /healthz` (alive) and `GET /readyz` (not shutting down), over
    /// HTTP on this `host:port` (see [`metrics`](crate::metrics)). Off by
    /// default.
    pub metrics_address: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9000".into(),
            backpressure_limit: 1024,
            connection_timeout: Duration::from_secs(10),
            preface_timeout: Duration::from_secs(2),
            heartbeat_interval: Duration::from_secs(15),
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            max_connections: 10_000,
            max_connections_per_ip: 1_000,
            max_pending: 8192,
            max_pending_per_ip: 128,
            max_pending_per_prefix: 512,
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 64,
            handshake_rate_per_ip: 20,
            handshake_rate_per_prefix: 1000,
            proxy_protocol: false,
            trusted_proxies: Vec::new(),
            proxy_timeout: Duration::from_secs(2),
            proxy_header_max: 4096,
            handshake_threads: 1,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            metrics_address: None,
        }
    }
}

/// Client settings.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientConfig {
    /// The server: `host:port`, or `unix:/path/to/socket`.
    pub address: String,
    /// The server's Noise public key (hex), pinned: the client refuses any
    /// other key at once, without retrying
    /// ([`Error::ServerKeyMismatch`](crate::Error::ServerKeyMismatch)).
    /// `security.server_key` is the same setting under its older name; set
    /// one of them (both only with the same key).
    #[serde(with = "hex_key")]
    pub server_key: Option<PublicKey>,
    /// Frames the connection's send queue holds before senders wait (as
    /// `server.backpressure_limit` on the server's side).
    pub backpressure_limit: usize,
    /// Time allowed to open the connection and complete the handshake.
    #[serde(with = "humantime_serde")]
    pub connection_timeout: Duration,
    /// Time a request or one-way message may wait for room in the
    /// connection's full send queue (the server not reading fast enough);
    /// then it fails, not sent
    /// ([`netproto_dispatch::Error::QueueFull`]).
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Time allowed for the answer to one request.
    #[serde(with = "humantime_serde")]
    pub response_timeout: Duration,
    /// Ping a quiet connection this often.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Reconnect after the connection is lost.
    pub auto_reconnect: bool,
    /// Connection attempts before giving up (the first one included).
    pub max_reconnect_attempts: u32,
    /// Delay before the first retry; it doubles with each attempt, with jitter.
    #[serde(with = "humantime_serde")]
    pub reconnect_delay: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:9000".into(),
            server_key: None,
            backpressure_limit: 1024,
            connection_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(3),
            response_timeout: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(15),
            auto_reconnect: true,
            max_reconnect_attempts: 5,
            reconnect_delay: Duration::from_millis(200),
        }
    }
}

/// Framing, limits and timeouts of every connection.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Largest message body accepted, in bytes.
    pub max_frame_len: u32,
    /// Frames each connection's inbound queue holds before reading pauses.
    pub inbound_limit: usize,
    /// Close connections with no message for this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Close a connection whose peer does not read for this long.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Heartbeat intervals without a sign of life before a peer is dead.
    pub heartbeat_misses: u32,
    /// `none`, `lz4` or `zstd`. Off by default: see docs/SECURITY.md on
    /// compression and secrecy.
    #[serde(deserialize_with = "compression_by_name")]
    pub compression: Compression,
    /// Smallest body that is compressed, in bytes.
    pub compression_threshold: usize,
    /// Bytes of queued frames a connection writes (and seals) at once;
    /// senders wait past it. 4 KiB to 64 MiB, default 512 KiB. Larger
    /// batches mean fewer wake-ups of a busy receiver and larger send
    /// buffers per connection (docs/OPERATIONS.md, memory).
    pub write_batch_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame_len: netproto_wire::DEFAULT_MAX_FRAME_LEN,
            inbound_limit: 1024,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(30),
            heartbeat_misses: 3,
            compression: Compression::None,
            compression_threshold: 512,
            write_batch_bytes: netproto_transport::ConnectionConfig::default().write_batch_bytes,
        }
    }
}

/// Security mode, keys and certificates.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `noise` (default), `tls`, or `plain` (no protection: loopback and tests only).
    #[serde(deserialize_with = "by_name")]
    pub mode: SecurityMode,
    /// This node's Noise key file (`netproto keygen`). Without one, a key is
    /// generated at start and lives only as long as the process.
    pub key_file: Option<PathBuf>,
    /// Server: only these client keys (hex) may connect. Empty: any client.
    #[serde(with = "hex_keys")]
    pub allowed_peers: Vec<PublicKey>,
    /// Client: the server's Noise public key (hex), pinned; the same as
    /// `client.server_key`, which sits beside the address it pins (set one
    /// of them, or both with the same key).
    #[serde(with = "hex_key")]
    pub server_key: Option<PublicKey>,
    /// Client: remember server keys here on first use and refuse a changed
    /// key (as SSH does), when no `server_key` is pinned.
    pub known_hosts: Option<PathBuf>,
    /// TLS certificate chain (PEM): the server's, or the client's for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Server: CA that client certificates must chain to (turns on mutual TLS).
    /// Client: CA the server's certificate must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Client: SHA-256 pins (hex) of the server's public key, checked after
    /// full certificate verification.
    #[serde(with = "hex_pins")]
    pub tls_pins: Vec<[u8; 32]>,
    /// Client: the name the server's certificate must carry; defaults to the
    /// address's host.
    pub server_name: Option<String>,
    /// Noise cipher: `chachapoly` (default, `Noise_XX_25519_ChaChaPoly_SHA256`)
    /// or `aesgcm` (`Noise_XX_25519_AESGCM_SHA256`, faster on CPUs with AES
    /// instructions). It is part of the protocol name: both sides must agree.
    #[serde(deserialize_with = "by_name")]
    pub noise_cipher: NoiseCipher,
    /// Implementation of the Noise primitives: `ring` (default, fastest here)
    /// or `rustcrypto`. Both speak the same protocol; peers may differ.
    #[serde(deserialize_with = "by_name")]
    pub noise_backend: NoiseBackend,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            mode: SecurityMode::Noise,
            key_file: None,
            allowed_peers: Vec::new(),
            server_key: None,
            known_hosts: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_pins: Vec::new(),
            server_name: None,
            noise_cipher: NoiseCipher::ChaChaPoly,
            noise_backend: NoiseBackend::Ring,
        }
    }
}

/// The `[cluster]` section: the members a [`Cluster`](crate::Cluster)
/// joins through and the settings of its SWIM failure detector.
///
/// Every `probe_period`, each member probes one other, in a shuffled round
/// robin: a direct ping, then, without an ack within `probe_timeout`,
/// `indirect_probes` pings through other members. A probe unanswered by the
/// end of its period makes the member *suspect* (told to the others, and to
/// the member itself, which refutes it if it is alive); a suspect that has
/// not refuted within `suspect_timeout` is *dead*. Connections to members use
/// the `[client]` and `[security]` settings.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The members to join through (seeds): `host:port` (host names are resolved again on every
    /// connection) or `unix:/path`, optionally prefixed by the member's
    /// Noise public key and `@` (`<64 hex digits>@host:port`) to pin it.
    /// Write each as that member advertises itself. This member's own
    /// address may be listed (it is skipped), so every member can share the
    /// list.
    pub peers: Vec<PeerAddress>,
    /// Where [`Cluster::start`](crate::Cluster::start) listens for the
    /// other members, with the `[server]` and `[security]` settings: a
    /// member that serves nothing else (an observer). A daemon
    /// joins through its own server instead
    /// ([`Cluster::join`](crate::Cluster::join)) and ignores this.
    pub bind: String,
    /// The address the other members reach this member at, when it is not
    /// the listening address (a wildcard, a NAT, a proxy).
    pub advertise: Option<String>,
    /// The protocol period: each member probes one other this often.
    #[serde(with = "humantime_serde")]
    pub probe_period: Duration,
    /// How long a direct ping waits for its ack before the indirect pings
    /// start; less than `probe_period`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// How many members are asked to ping a member that did not answer a
    /// direct ping (1 to 16).
    pub indirect_probes: usize,
    /// How long a suspect member has to refute the suspicion before it is
    /// declared dead; at least `probe_period`.
    #[serde(with = "humantime_serde")]
    pub suspect_timeout: Duration,
    /// Noise mode: the only keys (hex) whose connections may carry
    /// membership packets, beside the keys of `peers`. Empty: any peer
    /// that completes the handshake (set it when clients that are not
    /// members connect to the same listener).
    #[serde(with = "hex_keys")]
    pub allowed_members: Vec<PublicKey>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            peers: Vec::new(),
            bind: "127.0.0.1:0".into(),
            advertise: None,
            probe_period: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(400),
            indirect_probes: 3,
            suspect_timeout: Duration::from_secs(4),
            allowed_members: Vec::new(),
        }
    }
}

/// Log level and format.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// A level (`info`) or a filter in `RUST_LOG` syntax
    /// (`info,netproto_transport=debug`). `RUST_LOG` overrides it.
    pub level: String,
    /// `human` or `json`.
    #[serde(deserialize_with = "by_name")]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}
