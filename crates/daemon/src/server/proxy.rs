//! The PROXY protocol (v1 and v2): the header a trusted load balancer sends
//! first on each connection, carrying the client's address.
//!
//! Exactly the header's bytes are read, never one more: a v2 header gives
//! its length in its first 16 bytes, and a v1 header is read a few bytes at
//! a time, never past its CRLF. What follows (the netproto preface, or a TLS
//! ClientHello) stays in the socket for the transport, so nothing needs to
//! be handed over. The bytes are framed here and parsed by the `ppp` crate.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{ServerConfig, TrustedProxy};

/// The start of every v1 header.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// The shortest whole v1 header: `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;

/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;

/// A v2 header's fixed part: the 12-byte signature, version and command,
/// family and protocol, and the 16-bit length of what follows.
const V2_FIXED: usize = 16;

/// Who must send a PROXY header, how long it may take, how large it may be.
#[derive(Debug)]
pub(super) struct ProxyPolicy {
    trusted: Vec<TrustedProxy>,
    timeout: Duration,
    max: usize,
}

impl ProxyPolicy {
    /// The policy of `config`; `None` when `proxy_protocol` is off.
    pub(super) fn new(config: &ServerConfig) -> Option<Self> {
        config.proxy_protocol.then(|| Self {
            trusted: config.trusted_proxies.clone(),
            timeout: config.proxy_timeout,
            max: config.proxy_header_max,
        })
    }

    /// Whether a connection from `peer` must start with a header: one from
    /// a trusted address, or any on a Unix socket (no `peer`), whose file's
    /// permissions decide who may connect.
    pub(super) fn trusts(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_none_or(|peer| self.trusted.iter().any(|t| t.contains(peer.ip())))
    }

    /// Reads the header, within the timeout: the client's address it
    /// carries, or `None` when it carries none (a v2 `LOCAL` command, as a
    /// balancer's health check sends; v1 `UNKNOWN`; an unspecified or Unix
    /// address family) and the socket's own address stands.
    pub(super) async fn read<R: AsyncRead + Unpin>(
        &self,
        io: &mut R,
    ) -> Result<Option<SocketAddr>, HeaderError> {
        tokio::time::timeout(self.timeout, read_header(io, self.max))
            .await
            .unwrap_or(Err(HeaderError::Timeout))
    }
}

/// Why a trusted source's connection was closed at its PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HeaderError {
    /// The connection does not start with a PROXY signature.
    Missing,
    /// A signature, then something the protocol does not allow.
    Malformed,
    /// Longer than `server.proxy_header_max`, or a v1 line past 107 bytes.
    TooLarge,
    /// Not all there within `server.proxy_timeout`.
    Timeout,
    /// The peer closed the connection before the header's end.
    Closed,
    /// The socket failed.
    Io,
}

impl HeaderError {
    /// The metrics label, one of those registered for
    /// [`PROXY_HEADER_ERRORS`](crate::metrics::PROXY_HEADER_ERRORS).
    pub(super) fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
            Self::Io => "io",
        }
    }
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "no PROXY header",
            Self::Malformed => "malformed PROXY header",
            Self::TooLarge => "PROXY header too large",
            Self::Timeout => "PROXY header timed out",
            Self::Closed => "closed within the PROXY header",
            Self::Io => "socket error within the PROXY header",
        })
    }
}

/// Reads one header of at most `max` bytes, and nothing past it.
async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
) -> Result<Option<SocketAddr>, HeaderError> {
    // Every header is longer than either signature's first 6 bytes, which
    // tell the versions apart (or neither, as soon as a netproto preface's
    // 8 bytes have arrived).
    let mut header = Vec::with_capacity(V2_FIXED);
    read_to(io, &mut header, V1_SIGNATURE.len()).await?;
    if header == V1_SIGNATURE {
        read_v1(io, header).await
    } else if ppp::v2::PROTOCOL_PREFIX.starts_with(&header) {
        read_v2(io, header, max).await
    } else {
        Err(HeaderError::Missing)
    }
}

/// The rest of a v1 header, whose first bytes are in `header`.
async fn read_v1<R: AsyncRead + Unpin>(
    io: &mut R,
    mut header: Vec<u8>,
) -> Result<Option<SocketAddr>, HeaderError> {
    read_to(io, &mut header, V1_MIN).await?;
    loop {
        // The line ends at its first CR, which must be followed by LF and
        // nothing else; until a CR shows, two more bytes at least belong
        // to the header.
        let end = header.iter().position(|b| matches!(b, b'\r' | b'\n'));
        let more = match end.and_then(|at| header.get(at..)) {
            Some(b"\r\n") => break,
            Some(b"\r") => 1,
            Some(_) => return Err(HeaderError::Malformed),
            None => 2,
        };
        let len = header.len() + more;
        if len > V1_MAX {
            return Err(HeaderError::TooLarge);
        }
        read_to(io, &mut header, len).await?;
    }
    let parsed =
        ppp::v1::Header::try_from(header.as_slice()).map_err(|_| HeaderError::Malformed)?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(addresses) => Some(source_v4(addresses)),
        ppp::v1::Addresses::Tcp6(addresses) => Some(source_v6(addresses)),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// The rest of a v2 header, whose first bytes are in `header`.
async fn read_v2<R: AsyncRead + Unpin>(
    io: &mut R,
    mut header: Vec<u8>,
    max: usize,
) -> Result<Option<SocketAddr>, HeaderError> {
    read_to(io, &mut header, V2_FIXED).await?;
    if !header.starts_with(ppp::v2::PROTOCOL_PREFIX) {
        return Err(HeaderError::Missing);
    }
    let declared = header
        .get(V2_FIXED - 2..V2_FIXED)
        .and_then(|len| <[u8; 2]>::try_from(len).ok())
        .map_or(0, u16::from_be_bytes);
    // Checked before anything past the fixed part is read or allocated.
    let len = V2_FIXED + usize::from(declared);
    if len > max {
        return Err(HeaderError::TooLarge);
    }
    read_to(io, &mut header, len).await?;
    let parsed =
        ppp::v2::Header::try_from(header.as_slice()).map_err(|_| HeaderError::Malformed)?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(addresses) => Some(source_v4(addresses)),
        ppp::v2::Addresses::IPv6(addresses) => Some(source_v6(addresses)),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

/// The client's side of IPv4 addresses (both versions share the type).
fn source_v4(addresses: ppp::v2::IPv4) -> SocketAddr {
    SocketAddrV4::new(addresses.source_address, addresses.source_port).into()
}

/// The client's side of IPv6 addresses.
fn source_v6(addresses: ppp::v2::IPv6) -> SocketAddr {
    SocketAddrV6::new(addresses.source_address, addresses.source_port, 0, 0).into()
}

/// Reads from `io` until `header` holds `len` bytes.
async fn read_to<R: AsyncRead + Unpin>(
    io: &mut R,
    header: &mut Vec<u8>,
    len: usize,
) -> Result<(), HeaderError> {
    let from = header.len();
    header.resize(len, 0);
    let Some(rest) = header.get_mut(from..) else {
        return Ok(());
    };
    match io.read_exact(rest).await {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Err(HeaderError::Closed),
        Err(_) => Err(HeaderError::Io),
    }
}

#[cfg(test)]
mod tests;
