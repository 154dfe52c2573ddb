//! Where a [`Balancer`](crate::Balancer)'s endpoints come from: a fixed
//! list, DNS resolved again on an interval, or any stream of changes.
//!
//! Every source is a [`Stream`] of tower's [`Change`]s, inserting and
//! removing [`PeerAddress`]es under a key of the source's choosing, which
//! is what [`Balancer::with_discovery`](crate::Balancer::with_discovery)
//! takes:
//!
//! - [`list`]: the endpoints of a list, inserted once (`discovery =
//!   "static"`).
//! - [`dns`]: the addresses a name resolves to, as A and AAAA records with
//!   one port ([`DnsQuery::Host`], `discovery = "dns"`) or as SRV records
//!   with their own ports ([`DnsQuery::Srv`], `discovery = "srv"`), asked
//!   again every interval; an endpoint is inserted when its address
//!   appears and removed when it disappears.
//! - Any other stream the application supplies (a service registry, a
//!   configuration watch), with the same item type.
//!
//! # Examples
//!
//! An application's own source: a channel whose sender adds and removes
//! endpoints.
//!
//! ```no_run
//! use futures::StreamExt;
//! use netproto_daemon::discovery::Change;
//! use netproto_daemon::{Balancer, NetworkConfig, PeerAddress};
//!
//! # async fn run() -> netproto_daemon::Result<()> {
//! let (changes, stream) = futures::channel::mpsc::unbounded::<Change<&str, PeerAddress>>();
//! changes.unbounded_send(Change::Insert("a", "10.0.0.1:9000".parse()?)).ok();
//! changes.unbounded_send(Change::Insert("b", "10.0.0.2:9000".parse()?)).ok();
//! let stream = stream.map(Ok::<_, std::convert::Infallible>);
//! let balancer = Balancer::with_discovery(NetworkConfig::default(), stream).await?;
//! // Later: "a" leaves; its requests in flight finish, new ones go to "b".
//! changes.unbounded_send(Change::Remove("a")).ok();
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::Stream;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::{Resolver, TokioResolver};
pub use tower::discover::Change;

use crate::{Error, PeerAddress, Result};

/// The endpoints of `endpoints`, inserted once, each under its address.
pub fn list(
    endpoints: impl IntoIterator<Item = PeerAddress>,
) -> impl Stream<Item = Result<Change<String, PeerAddress>, Infallible>> + Send + 'static {
    let changes: Vec<_> = endpoints
        .into_iter()
        .map(|peer| Ok(Change::Insert(peer.address.clone(), peer)))
        .collect();
    futures::stream::iter(changes)
}

/// What [`dns`] asks for.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsQuery {
    /// The A and AAAA records of `name`, each address with `port`.
    Host {
        /// The name (end it with `.` to skip the search domains).
        name: String,
        /// The port of every endpoint.
        port: u16,
    },
    /// The SRV records of `name`: the targets of the lowest priority
    /// present (weights are ignored: the balancer spreads requests by
    /// load), each target's A and AAAA records with the record's port.
    Srv {
        /// The name, such as `_netproto._tcp.example.com.`.
        name: String,
    },
}

/// A resolver asking `servers`, or the system's configured name servers
/// (`/etc/resolv.conf`) when `servers` is empty.
///
/// With servers given, only they are asked: no hosts file, no search
/// domains.
///
/// # Errors
///
/// [`Error::Invalid`] when the system's configuration cannot be read.
pub fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver> {
    if servers.is_empty() {
        let builder = TokioResolver::builder_tokio().map_err(|error| {
            Error::Invalid(format!(
                "balancer: cannot read the system's DNS configuration: {error}"
            ))
        })?;
        return builder
            .build()
            .map_err(|error| Error::Invalid(format!("balancer: DNS resolver: {error}")));
    }
    let name_servers = servers
        .iter()
        .map(|server| {
            let mut config = NameServerConfig::udp_and_tcp(server.ip());
            for connection in &mut config.connections {
                connection.port = server.port();
            }
            config
        })
        .collect();
    let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
    let mut builder = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    builder.options_mut().use_hosts_file = ResolveHosts::Never;
    builder
        .build()
        .map_err(|error| Error::Invalid(format!("balancer: DNS resolver: {error}")))
}

/// The endpoints `query` resolves to, asked now and again every
/// `interval`, each keyed by its socket address.
///
/// The first answer inserts its endpoints; each later one inserts the
/// addresses that appeared and removes those that disappeared. Answers are
/// cached for their TTL, so a change shows within `interval` plus the
/// TTL. A failed lookup, or an answer with no address, keeps the endpoints
/// known so far (logged at `warn`): an outage of DNS does not empty the
/// balancer. Endpoints found in DNS pin no key of their own: they use
/// `security.server_key` or `security.known_hosts` as a single client does.
/// The stream never ends and never yields an error.
pub fn dns(
    resolver: TokioResolver,
    query: DnsQuery,
    interval: Duration,
) -> impl Stream<Item = Result<Change<SocketAddr, PeerAddress>, Infallible>> + Send + 'static {
    let state = Dns {
        resolver,
        query,
        interval,
        known: BTreeSet::new(),
        queue: VecDeque::new(),
        asked: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let change = state.next().await;
        Some((Ok(change), state))
    })
}

/// The state of a [`dns`] stream.
struct Dns {
    resolver: TokioResolver,
    query: DnsQuery,
    interval: Duration,
    /// The addresses of the endpoints inserted so far.
    known: BTreeSet<SocketAddr>,
    /// Changes found by the last lookup, not yet yielded.
    queue: VecDeque<Change<SocketAddr, PeerAddress>>,
    /// Whether the first lookup was made.
    asked: bool,
}

impl Dns {
    /// The next change: one queued, or the first that a lookup finds.
    async fn next(&mut self) -> Change<SocketAddr, PeerAddress> {
        loop {
            if let Some(change) = self.queue.pop_front() {
                return change;
            }
            if self.asked {
                tokio::time::sleep(self.interval).await;
            }
            self.asked = true;
            match resolve(&self.resolver, &self.query).await {
                Ok(found) if !found.is_empty() => self.update(found),
                Ok(_) => {
                    tracing::warn!(query = ?self.query, "no address in DNS; keeping the endpoints known so far");
                }
                Err(error) => {
                    tracing::warn!(%error, query = ?self.query, "DNS lookup failed; keeping the endpoints known so far");
                }
            }
        }
    }

    /// Queues the changes from the known addresses to `found`.
    fn update(&mut self, found: BTreeSet<SocketAddr>) {
        for gone in self.known.difference(&found) {
            self.queue.push_back(Change::Remove(*gone));
        }
        for new in found.difference(&self.known) {
            let peer = PeerAddress {
                key: None,
                address: new.to_string(),
            };
            self.queue.push_back(Change::Insert(*new, peer));
        }
        if !self.queue.is_empty() {
            tracing::debug!(query = ?self.query, endpoints = found.len(), "DNS answer changed");
        }
        self.known = found;
    }
}

/// One lookup of `query`.
async fn resolve(
    resolver: &TokioResolver,
    query: &DnsQuery,
) -> Result<BTreeSet<SocketAddr>, NetError> {
    match query {
        DnsQuery::Host { name, port } => Ok(addresses(resolver, name.as_str())
            .await?
            .map(|ip| SocketAddr::new(ip, *port))
            .collect()),
        DnsQuery::Srv { name } => {
            let lookup = resolver.srv_lookup(name.as_str()).await?;
            let records: Vec<_> = lookup
                .answers()
                .iter()
                .filter_map(|record| match &record.data {
                    RData::SRV(srv) => Some(srv.clone()),
                    _ => None,
                })
                .collect();
            let first = records.iter().map(|srv| srv.priority).min();
            let mut found = BTreeSet::new();
            for srv in records.iter().filter(|srv| Some(srv.priority) == first) {
                let target = srv.target.clone();
                match addresses(resolver, target.clone()).await {
                    Ok(ips) => found.extend(ips.map(|ip| SocketAddr::new(ip, srv.port))),
                    // One target without an address does not hide the others.
                    Err(error) => tracing::debug!(%error, %target, "SRV target not resolved"),
                }
            }
            Ok(found)
        }
    }
}

/// The A and AAAA addresses of `name`.
async fn addresses(
    resolver: &TokioResolver,
    name: impl hickory_resolver::proto::rr::IntoName,
) -> Result<impl Iterator<Item = IpAddr>, NetError> {
    let lookup = resolver.lookup_ip(name).await?;
    Ok(lookup.iter().collect::<Vec<_>>().into_iter())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_list_inserts_each_endpoint_once_under_its_address() {
        let peers: Vec<PeerAddress> = ["127.0.0.1:1", "unix:/run/netproto.sock"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect();
        let changes: Vec<_> = list(peers.clone()).collect().await;
        let keys: Vec<String> = changes
            .into_iter()
            .map(|change| match change {
                Ok(Change::Insert(key, peer)) => {
                    assert_eq!(key, peer.address);
                    key
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, ["127.0.0.1:1", "unix:/run/netproto.sock"]);
    }
}
