//! The `[balancer]` section: where the client balancer finds its endpoints
//! and how it watches their health.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::PeerAddress;
use super::values::by_name;
use crate::{Error, Result};

/// Largest accepted `balancer.suspect_after` and `balancer.dead_after`.
const MAX_MISSES: u32 = 1000;

/// Where a [`Balancer`](crate::Balancer) finds its endpoints
/// (`balancer.discovery`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// The list `balancer.endpoints`, the default.
    #[default]
    Static,
    /// The A and AAAA records of `balancer.dns_name`, each address with
    /// `balancer.dns_port`, resolved again every `balancer.dns_interval`.
    Dns,
    /// The SRV records of `balancer.dns_name` (targets and ports; the
    /// targets' A and AAAA records give the addresses), resolved again
    /// every `balancer.dns_interval`.
    Srv,
}

impl Discovery {
    /// The name configuration files use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Dns => "dns",
            Self::Srv => "srv",
        }
    }
}

/// The `[balancer]` section: the endpoints of a
/// [`Balancer`](crate::Balancer) and how their health is watched.
///
/// Each endpoint gets one connection with the `[client]` and `[security]`
/// settings. A ping request goes to it every `heartbeat_interval`; after
/// `suspect_after` unanswered pings in a row it takes no new requests (its
/// requests in flight go on), and after `dead_after` silent intervals the
/// connection's own heartbeat closes it, failing its requests in flight. A
/// lost endpoint is reconnected with exponential backoff from
/// `client.reconnect_delay` up to `max_reconnect_delay`.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BalancerConfig {
    /// Where the endpoints come from: `static`, `dns` or `srv`.
    #[serde(deserialize_with = "by_name")]
    pub discovery: Discovery,
    /// The endpoints for `discovery = "static"`: `host:port` or
    /// `unix:/path`, optionally prefixed by the endpoint's Noise public key
    /// and `@` to pin it.
    pub endpoints: Vec<PeerAddress>,
    /// The name to resolve for `discovery = "dns"` or `"srv"`
    /// (`netproto.example.com`, `_netproto._tcp.example.com`).
    pub dns_name: Option<String>,
    /// The port of every address found for `discovery = "dns"` (SRV
    /// records carry their own).
    pub dns_port: Option<u16>,
    /// How often the name is resolved again. Answers are cached for their
    /// TTL, so a change is seen within this interval plus the record's TTL.
    #[serde(with = "humantime_serde")]
    pub dns_interval: Duration,
    /// The DNS servers to ask (`ip:port`); empty for the system's
    /// configuration (`/etc/resolv.conf`).
    pub dns_servers: Vec<SocketAddr>,
    /// A ping request goes to every endpoint this often, and the
    /// connection's own heartbeat uses the same interval.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Unanswered pings in a row before an endpoint takes no new requests.
    pub suspect_after: u32,
    /// Silent heartbeat intervals before an endpoint's connection is
    /// closed and its requests in flight fail.
    pub dead_after: u32,
    /// Longest wait between two connection attempts to a lost endpoint.
    #[serde(with = "humantime_serde")]
    pub max_reconnect_delay: Duration,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            discovery: Discovery::Static,
            endpoints: Vec::new(),
            dns_name: None,
            dns_port: None,
            dns_interval: Duration::from_secs(30),
            dns_servers: Vec::new(),
            heartbeat_interval: Duration::from_secs(1),
            suspect_after: 2,
            dead_after: 4,
            max_reconnect_delay: Duration::from_secs(5),
        }
    }
}

impl BalancerConfig {
    /// Checks every value of the section, and that the keys given belong to
    /// the discovery chosen. An empty endpoint list is accepted here (a
    /// server's configuration has none); [`Balancer::connect`](crate::Balancer::connect)
    /// refuses it.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        for (value, name) in [
            (self.dns_interval, "balancer.dns_interval"),
            (self.heartbeat_interval, "balancer.heartbeat_interval"),
            (self.max_reconnect_delay, "balancer.max_reconnect_delay"),
        ] {
            if value.is_zero() || value > netproto_transport::MAX_DURATION {
                return Err(invalid(format!(
                    "{name} must be more than 0 and at most one day"
                )));
            }
        }
        if !(1..=MAX_MISSES).contains(&self.suspect_after) {
            return Err(invalid(format!(
                "balancer.suspect_after must be 1 to {MAX_MISSES}"
            )));
        }
        if !(self.suspect_after..=MAX_MISSES).contains(&self.dead_after) {
            return Err(invalid(format!(
                "balancer.dead_after must be at least balancer.suspect_after ({}) and at most {MAX_MISSES}",
                self.suspect_after
            )));
        }
        let mut seen = HashSet::new();
        for endpoint in &self.endpoints {
            if !seen.insert(endpoint.address.as_str()) {
                return Err(invalid(format!(
                    "balancer.endpoints: {:?} is listed twice",
                    endpoint.address
                )));
            }
        }
        let discovery = self.discovery.name();
        let dns = self.discovery != Discovery::Static;
        if !dns && (self.dns_name.is_some() || self.dns_port.is_some()) {
            return Err(invalid(
                "balancer.dns_name and balancer.dns_port need discovery = \"dns\" or \"srv\""
                    .into(),
            ));
        }
        if dns && !self.endpoints.is_empty() {
            return Err(invalid(format!(
                "balancer.endpoints is for discovery = \"static\", not \"{discovery}\""
            )));
        }
        if dns && self.dns_name.as_deref().is_none_or(|n| n.trim().is_empty()) {
            return Err(invalid(format!(
                "balancer.dns_name is needed with discovery = \"{discovery}\""
            )));
        }
        match (self.discovery, self.dns_port) {
            (Discovery::Dns, None | Some(0)) => Err(invalid(
                "balancer.dns_port (1 to 65535) is needed with discovery = \"dns\"".into(),
            )),
            (Discovery::Srv, Some(_)) => Err(invalid(
                "balancer.dns_port is not used with discovery = \"srv\": SRV records carry the ports"
                    .into(),
            )),
            _ => Ok(()),
        }
    }
}

fn invalid(text: String) -> Error {
    Error::Invalid(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NetworkConfig;

    #[test]
    fn each_discovery_needs_its_own_keys() {
        let ok = [
            "[balancer]\nendpoints = [\"127.0.0.1:9000\", \"127.0.0.1:9001\"]",
            "[balancer]\ndiscovery = \"dns\"\ndns_name = \"netproto.internal\"\ndns_port = 9000",
            "[balancer]\ndiscovery = \"srv\"\ndns_name = \"_netproto._tcp.internal\"\n\
             dns_servers = [\"127.0.0.1:5353\"]\ndns_interval = \"5s\"",
        ];
        for text in ok {
            NetworkConfig::from_toml_str(text).unwrap();
        }
        let bad = [
            ("discovery = \"mdns\"", "unknown variant"),
            ("discovery = \"dns\"\ndns_port = 9000", "dns_name is needed"),
            (
                "discovery = \"dns\"\ndns_name = \"a\"",
                "dns_port (1 to 65535) is needed",
            ),
            (
                "discovery = \"srv\"\ndns_name = \"a\"\ndns_port = 1",
                "not used with",
            ),
            ("dns_name = \"a\"", "need discovery"),
            (
                "discovery = \"srv\"\ndns_name = \"a\"\nendpoints = [\"127.0.0.1:1\"]",
                "not \"srv\"",
            ),
            (
                "endpoints = [\"127.0.0.1:1\", \"127.0.0.1:1\"]",
                "listed twice",
            ),
            ("dns_interval = \"0s\"", "dns_interval must be more than 0"),
            ("suspect_after = 0", "suspect_after must be 1"),
            (
                "suspect_after = 3\ndead_after = 2",
                "dead_after must be at least",
            ),
            ("dns_servers = [\"nowhere\"]", "invalid socket address"),
        ];
        for (section, expected) in bad {
            let error =
                NetworkConfig::from_toml_str(&format!("[balancer]\n{section}")).unwrap_err();
            let mut text = error.to_string();
            let mut cause: &dyn std::error::Error = &error;
            while let Some(source) = cause.source() {
                text = format!("{text}: {source}");
                cause = source;
            }
            assert!(text.contains(expected), "{section}: {text}");
        }
    }

    #[test]
    fn the_section_reads_from_the_environment() {
        let vars = [
            ("NETPROTO__BALANCER__DISCOVERY", "srv"),
            ("NETPROTO__BALANCER__DNS_NAME", "_netproto._tcp.internal"),
            ("NETPROTO__BALANCER__DNS_SERVERS", "127.0.0.1:53,[::1]:53"),
            ("NETPROTO__BALANCER__DNS_INTERVAL", "250ms"),
        ];
        let env = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = NetworkConfig::load(None, Some(env)).unwrap();
        let b = &config.balancer;
        assert_eq!(b.discovery, Discovery::Srv);
        assert_eq!(b.dns_name.as_deref(), Some("_netproto._tcp.internal"));
        assert_eq!(
            b.dns_servers,
            ["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
        assert_eq!(b.dns_interval, Duration::from_millis(250));
        let text = config.to_toml().unwrap();
        assert_eq!(NetworkConfig::from_toml_str(&text).unwrap(), config);
    }
}
