//! The entries of `server.trusted_proxies`: the addresses and prefixes
//! whose connections start with a PROXY protocol header.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// Smallest `server.proxy_header_max`: a v2 header with the largest address
/// block (two Unix socket paths, 216 bytes) and no TLVs; a v1 header is at
/// most 107 bytes.
pub(crate) const MIN_PROXY_HEADER: usize = 16 + 216;

/// Largest `server.proxy_header_max`: a v2 header's fixed 16 bytes and the
/// most its 16-bit length can declare.
pub(crate) const MAX_PROXY_HEADER: usize = 16 + 65_535;

/// One entry of `server.trusted_proxies`: an IPv4 or IPv6 address
/// (`10.0.0.7`, `fd00::7`) or a prefix in CIDR notation (`10.0.0.0/24`,
/// `fd00::/64`).
///
/// Configuration files hold it as that text; [`FromStr`] and
/// [`Display`](fmt::Display) convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedProxy(IpNet);

impl TrustedProxy {
    /// Whether `ip` is this address or lies in this prefix. An IPv4 address
    /// mapped into IPv6 (`::ffff:10.0.0.7`, as a dual-stack listener
    /// reports IPv4 peers) also matches as the IPv4 address it stands for.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip) || self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for TrustedProxy {
    type Err = Error;

    /// Reads an address or a prefix.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for anything else, and for a prefix whose address
    /// has bits set past its length (`10.0.0.1/8`: a typo for a host, or
    /// for `10.0.0.0/8`?).
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        let invalid = |why: &str| {
            Error::Invalid(format!(
                "server.trusted_proxies: {text:?} {why} (write an address, 10.0.0.7, or a prefix, 10.0.0.0/24 or fd00::/64)"
            ))
        };
        let net = if text.contains('/') {
            let net: IpNet = text
                .parse()
                .map_err(|_| invalid("is not an address prefix"))?;
            if net.trunc() != net {
                return Err(invalid(&format!(
                    "has bits set past its prefix length: did you mean {}?",
                    net.trunc()
                )));
            }
            net
        } else {
            let ip: IpAddr = text.parse().map_err(|_| invalid("is not an IP address"))?;
            IpNet::from(ip)
        };
        Ok(Self(net))
    }
}

impl fmt::Display for TrustedProxy {
    /// A single address without its prefix length, a prefix with it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for TrustedProxy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TrustedProxy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
