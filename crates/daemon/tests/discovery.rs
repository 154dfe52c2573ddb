//! Discovery from DNS on loopback: a DNS server in this process
//! (hickory-server, UDP and TCP on 127.0.0.1, port 0) serves a zone that
//! the tests change; the resolver asks that server and nothing else (no
//! system configuration, no hosts file).

// Test code: unwrap and indexing fail the test, which is what they should do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use daemons::{Daemon, MARGIN, balancer_config, name_of, temp_dir, who};
use futures::{Stream, StreamExt};
use hickory_server::Server;
use hickory_server::proto::rr::{LowerName, Name};
use hickory_server::proto::serialize::txt::Parser;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use netproto_daemon::discovery::{self, Change, DnsQuery};
use netproto_daemon::{Balancer, Discovery, PeerAddress, PeerState};

mod daemons;

/// Whole-test limit.
const LIMIT: Duration = Duration::from_secs(30);
/// How often the tests' discovery resolves the name again.
const INTERVAL: Duration = Duration::from_millis(100);
const ORIGIN: &str = "netproto.test.";

/// An authoritative DNS server for `netproto.test.` on loopback.
struct Dns {
    address: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    /// Serves while it lives.
    _server: Server<Catalog>,
}

/// The zone: an SOA (TTL 0, so that no answer is cached) and `records`.
fn zone(records: &str) -> String {
    format!(
        "$ORIGIN {ORIGIN}\n$TTL 0\n@ IN SOA ns.{ORIGIN} admin.{ORIGIN} 1 60 60 60 0\n{records}\n"
    )
}

impl Dns {
    async fn start(records: &str) -> Self {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = udp.local_addr().unwrap();
        // TCP on the same port, for answers too large for UDP.
        let tcp = tokio::net::TcpListener::bind(address).await.unwrap();
        let origin = Name::from_ascii(ORIGIN).unwrap();
        let (_, records) = Parser::new(zone(records), None, Some(origin.clone()))
            .parse()
            .unwrap();
        let zone = Arc::new(
            InMemoryZoneHandler::new(origin.clone(), records, ZoneType::Primary, AxfrPolicy::Deny)
                .unwrap(),
        );
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = zone.clone();
        catalog.upsert(LowerName::from(origin), vec![handler]);
        let mut server = Server::new(catalog);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 16);
        Self {
            address,
            zone,
            _server: server,
        }
    }

    /// Replaces every record of the zone.
    async fn set(&self, records: &str) {
        let origin = Name::from_ascii(ORIGIN).unwrap();
        let (_, records) = Parser::new(zone(records), None, Some(origin))
            .parse()
            .unwrap();
        *self.zone.records_mut().await = records
            .into_iter()
            .map(|(key, set)| (key, Arc::new(set)))
            .collect();
    }
}

/// Applies the changes `changes` yields to `endpoints` until they equal
/// `expected`.
async fn follow_until<S>(changes: &mut S, endpoints: &mut BTreeSet<SocketAddr>, expected: &[&str])
where
    S: Stream<Item = Result<Change<SocketAddr, PeerAddress>, std::convert::Infallible>> + Unpin,
{
    let expected: BTreeSet<SocketAddr> = expected.iter().map(|a| a.parse().unwrap()).collect();
    let follow = async {
        while *endpoints != expected {
            match changes.next().await.unwrap().unwrap() {
                Change::Insert(address, peer) => {
                    assert_eq!(peer.address, address.to_string());
                    assert_eq!(peer.key, None);
                    assert!(endpoints.insert(address), "{address} inserted twice");
                }
                Change::Remove(address) => {
                    assert!(endpoints.remove(&address), "{address} removed, not known");
                }
            }
        }
    };
    tokio::time::timeout(MARGIN, follow)
        .await
        .unwrap_or_else(|_| panic!("endpoints {endpoints:?}, expected {expected:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_and_aaaa_records_become_endpoints_that_follow_the_zone() {
    tokio::time::timeout(LIMIT, async {
        let dns = Dns::start("svc IN A 127.0.0.2\nsvc IN A 127.0.0.3\nsvc IN AAAA ::1").await;
        let resolver = discovery::resolver(&[dns.address]).unwrap();
        let query = DnsQuery::Host {
            name: format!("svc.{ORIGIN}"),
            port: 9000,
        };
        let mut changes = Box::pin(discovery::dns(resolver, query, INTERVAL));
        let mut endpoints = BTreeSet::new();
        follow_until(
            &mut changes,
            &mut endpoints,
            &["127.0.0.2:9000", "127.0.0.3:9000", "[::1]:9000"],
        )
        .await;

        // One address goes, one comes, the IPv6 one goes.
        dns.set("svc IN A 127.0.0.3\nsvc IN A 127.0.0.4").await;
        follow_until(
            &mut changes,
            &mut endpoints,
            &["127.0.0.3:9000", "127.0.0.4:9000"],
        )
        .await;

        // The name disappears: the endpoints known so far stay.
        dns.set("other IN A 127.0.0.9").await;
        let quiet = tokio::time::timeout(INTERVAL * 5, changes.next()).await;
        assert!(quiet.is_err(), "a change without the name: {quiet:?}");

        dns.set("svc IN A 127.0.0.5").await;
        follow_until(&mut changes, &mut endpoints, &["127.0.0.5:9000"]).await;
    })
    .await
    .unwrap();
}

/// SRV records for the daemons `(priority, daemon)`, and an A record for
/// each daemon's name.
fn srv_records(daemons: &[Daemon], entries: &[(u16, usize)]) -> String {
    let mut records = String::new();
    for daemon in daemons {
        records.push_str(&format!("{} IN A 127.0.0.1\n", daemon.name));
    }
    for (priority, index) in entries {
        let daemon = &daemons[*index];
        let port = daemon.address.rsplit_once(':').unwrap().1;
        records.push_str(&format!(
            "_netproto._tcp IN SRV {priority} 0 {port} {}\n",
            daemon.name
        ));
    }
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_records_feed_the_balancer_and_it_follows_their_changes() {
    let dir = temp_dir("discovery");
    tokio::time::timeout(LIMIT, async {
        // One name, one key: the daemons behind it share theirs.
        let key_file = dir.join("shared.key");
        let mut daemons = Vec::new();
        for name in ["d0", "d1", "d2"] {
            daemons.push(Daemon::start_with_key(&key_file, name, "127.0.0.1:0").await);
        }
        let dns = Dns::start(&srv_records(&daemons, &[(0, 0), (0, 1)])).await;

        let mut config = balancer_config();
        config.balancer.discovery = Discovery::Srv;
        config.balancer.dns_name = Some(format!("_netproto._tcp.{ORIGIN}"));
        config.balancer.dns_servers = vec![dns.address];
        config.balancer.dns_interval = INTERVAL;
        config.security.server_key = Some(daemons[0].public_key.parse().unwrap());
        let balancer = Balancer::connect(config).await.unwrap();
        let serving = |indexes: &[usize]| {
            let addresses: HashSet<String> = indexes
                .iter()
                .map(|i| daemons[*i].address.clone())
                .collect();
            move |endpoints: &[netproto_daemon::EndpointView]| {
                endpoints.len() == addresses.len()
                    && endpoints
                        .iter()
                        .all(|e| addresses.contains(&e.address) && e.state == PeerState::Alive)
            }
        };
        balancer.wait_until(MARGIN, serving(&[0, 1])).await.unwrap();
        let answered = |names: &[&str]| {
            let balancer = &balancer;
            let names: HashSet<String> = names.iter().map(|n| (*n).to_owned()).collect();
            async move {
                let mut seen = HashSet::new();
                for _ in 0..60 {
                    let answer = balancer.request(&who(0)).await.unwrap();
                    seen.insert(name_of(&answer).to_owned());
                }
                assert_eq!(seen, names);
            }
        };
        answered(&["d0", "d1"]).await;

        // d0 becomes a backup (a higher priority number): not used while
        // the others are listed; d2 joins.
        dns.set(&srv_records(&daemons, &[(10, 0), (0, 1), (0, 2)]))
            .await;
        balancer.wait_until(MARGIN, serving(&[1, 2])).await.unwrap();
        answered(&["d1", "d2"]).await;

        // A removed endpoint's requests in flight finish.
        let message = who(500);
        let slow = balancer.request(&message);
        let (answer, ()) = tokio::join!(slow, async {
            dns.set(&srv_records(&daemons, &[(0, 0)])).await;
        });
        assert!(["d1", "d2"].contains(&name_of(&answer.unwrap())));
        balancer.wait_until(MARGIN, serving(&[0])).await.unwrap();
        answered(&["d0"]).await;
        for daemon in &mut daemons {
            daemon.kill().await;
        }
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
