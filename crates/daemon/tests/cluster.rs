//! Clusters on loopback: daemons in one process, members of one SWIM
//! cluster, one of them killed (its server's task aborted and its cluster
//! dropped, so its sockets close without a goaway and it stops answering
//! probes), frozen behind a proxy, or restarted on the same port with the
//! same key. The balancer's failover tests are in `balancer.rs`.

// Test code: unwrap and indexing fail the test, which is what they should do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netproto_crypto::Keypair;
use netproto_daemon::{
    Cluster, Error, MembershipEvent, NetworkConfig, PeerId, PeerState, Server, ServerHandle,
};
use netproto_dispatch::Dispatcher;
use netproto_wire::Message;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

mod silent_proxy;
use silent_proxy::Proxy;

/// Whole-test limit.
const LIMIT: Duration = Duration::from_secs(30);
const PERIOD: Duration = Duration::from_millis(200);
const PROBE_TIMEOUT: Duration = Duration::from_millis(80);
const SUSPECT_TIMEOUT: Duration = Duration::from_millis(600);
/// Room for a loaded 2-core machine on top of a configured bound.
const MARGIN: Duration = Duration::from_secs(2);

/// When a member that stopped answering is suspect at the latest: each of
/// the other three members probes it within three periods (a shuffled
/// round robin), and the probe fails at the end of its period.
fn suspect_bound() -> Duration {
    PERIOD * 4 + MARGIN
}

/// When it is dead everywhere: suspect, then the suspect timeout, then a
/// period for the news to spread.
fn detection_bound() -> Duration {
    PERIOD * 5 + SUSPECT_TIMEOUT + MARGIN
}

/// When a restarted member is alive again everywhere: it announces itself
/// at once, and the news spreads by gossip.
fn rejoin_bound() -> Duration {
    PERIOD * 5 + MARGIN
}

/// One daemon: a [`Server`] on a fixed port with a fixed key, in a task,
/// and a member of the cluster once it joined.
struct Daemon {
    name: String,
    address: String,
    key_file: PathBuf,
    public_key: String,
    task: Option<JoinHandle<()>>,
    handle: Option<ServerHandle>,
    server: Option<Server>,
    /// Who it joins through, and the address it advertises.
    seeds: Vec<String>,
    advertise: Option<String>,
    /// `cluster.allowed_members`.
    allowed_members: Vec<netproto_crypto::PublicKey>,
    cluster: Option<Cluster>,
}

/// Answers `WHO` with the daemon's name, after sleeping as many
/// milliseconds as the payload says.
fn dispatcher(name: &str) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("PING", |_| Ok(Message::Pong));
    let name = name.to_owned();
    dispatcher.register_async("WHO", move |msg| {
        let name = name.clone();
        async move {
            if let Message::Custom { data, .. } = msg {
                let millis = std::str::from_utf8(&data)
                    .ok()
                    .and_then(|text| text.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(millis)).await;
            }
            Ok(Message::Echo(name))
        }
    });
    dispatcher
}

fn who(delay_ms: u64) -> Message {
    Message::custom("WHO", delay_ms.to_string().into_bytes()).unwrap()
}

fn name_of(answer: &Message) -> &str {
    match answer {
        Message::Echo(name) => name,
        other => panic!("unexpected answer {other:?}"),
    }
}

impl Daemon {
    async fn start(dir: &Path, name: &str) -> Self {
        let key_file = dir.join(format!("{name}.key"));
        let keypair = Keypair::generate(&mut rand::rngs::OsRng);
        keypair.write_key_file(&key_file).unwrap();
        let mut daemon = Self {
            name: name.to_owned(),
            address: "127.0.0.1:0".into(),
            key_file,
            public_key: keypair.public().to_string(),
            task: None,
            handle: None,
            server: None,
            seeds: Vec::new(),
            advertise: None,
            allowed_members: Vec::new(),
            cluster: None,
        };
        daemon.bind().await;
        daemon
    }

    /// Joins the cluster through `seeds`, advertising `advertise` (or its
    /// own address), and serves.
    fn join(&mut self, seeds: Vec<String>, advertise: Option<String>) {
        self.seeds = seeds;
        self.advertise = advertise;
        self.serve();
    }

    fn serve(&mut self) {
        let server = self.server.take().unwrap();
        let mut config = NetworkConfig::default();
        // As a daemon does: its connections to members use its own key.
        config.security.key_file = Some(self.key_file.clone());
        config.cluster = member_settings(&self.seeds);
        config.cluster.advertise.clone_from(&self.advertise);
        config
            .cluster
            .allowed_members
            .clone_from(&self.allowed_members);
        self.cluster = Some(Cluster::join(config, &server).unwrap());
        self.task = Some(tokio::spawn(async move { server.run().await.unwrap() }));
    }

    /// Binds again on the same port with the same key, and rejoins.
    async fn run(&mut self) {
        self.bind().await;
        self.serve();
    }

    /// Binds (retrying while the old socket is still going away).
    async fn bind(&mut self) {
        let mut config = NetworkConfig::default();
        config.server.address.clone_from(&self.address);
        config.security.key_file = Some(self.key_file.clone());
        let mut attempts = 0;
        let server = loop {
            match Server::bind(config.clone(), dispatcher(&self.name)).await {
                Ok(server) => break server,
                Err(error) if attempts < 50 => {
                    attempts += 1;
                    eprintln!("bind {}: {error}; retrying", self.address);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(error) => panic!("bind {}: {error}", self.address),
            }
        };
        self.address = server.local_addr();
        self.handle = Some(server.handle());
        self.server = Some(server);
    }

    /// Aborts the server's task and drops its cluster: its listener and
    /// connections close with no goaway, and it answers no probe, as when
    /// the process dies.
    async fn kill(&mut self) {
        self.cluster = None;
        let task = self.task.take().unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    /// The peer entry pinning this daemon's key.
    fn peer(&self) -> String {
        format!("{}@{}", self.public_key, self.address)
    }
}

/// `count` daemons, each joined through those started before it.
async fn daemons(dir: &Path, count: usize) -> Vec<Daemon> {
    let mut daemons: Vec<Daemon> = Vec::new();
    for i in 0..count {
        let mut daemon = Daemon::start(dir, &format!("d{i}")).await;
        daemon.join(daemons.iter().map(Daemon::peer).collect(), None);
        daemons.push(daemon);
    }
    daemons
}

/// The test's SWIM settings, joining through `seeds`.
fn member_settings(seeds: &[String]) -> netproto_daemon::ClusterConfig {
    let mut settings = netproto_daemon::ClusterConfig::default();
    settings.peers = seeds.iter().map(|s| s.parse().unwrap()).collect();
    settings.probe_period = PERIOD;
    settings.probe_timeout = PROBE_TIMEOUT;
    settings.suspect_timeout = SUSPECT_TIMEOUT;
    settings
}

/// A member of its own (an observer, or a balancer's) joined through every
/// daemon.
fn cluster_config(daemons: &[Daemon]) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.cluster = member_settings(&daemons.iter().map(Daemon::peer).collect::<Vec<_>>());
    config.client.response_timeout = Duration::from_secs(10);
    config
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netproto-cluster-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn all_alive(cluster: &Cluster) {
    cluster
        .wait_until(Duration::from_secs(10), |peers| {
            !peers.is_empty() && peers.iter().all(|p| p.state == PeerState::Alive)
        })
        .await
        .unwrap();
}

/// Waits for `wanted` about `peer`, returning every event seen on the way.
async fn wait_event(
    events: &mut broadcast::Receiver<MembershipEvent>,
    peer: PeerId,
    wanted: fn(&MembershipEvent) -> bool,
    limit: Duration,
) -> Vec<MembershipEvent> {
    let mut seen = Vec::new();
    tokio::time::timeout(limit, async {
        loop {
            let event = events.recv().await.unwrap();
            let done = event.peer() == peer && wanted(&event);
            seen.push(event);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no awaited event for {peer} within {limit:?}; saw {seen:?}"));
    seen
}

fn is_down(event: &MembershipEvent) -> bool {
    matches!(event, MembershipEvent::PeerDown { .. })
}

fn is_up(event: &MembershipEvent) -> bool {
    matches!(event, MembershipEvent::PeerUp { .. })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_detects_a_killed_peer_in_time_and_sees_it_rejoin() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let cluster = Cluster::start(cluster_config(&daemons)).unwrap();
        all_alive(&cluster).await;
        // Every daemon probed directly at least once: a round trip each
        // (not a change of state: polled).
        tokio::time::timeout(Duration::from_secs(10), async {
            while !cluster.view().iter().all(|p| p.rtt.is_some()) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert_eq!(cluster.view().len(), 3);
        for (peer, daemon) in cluster.view().iter().zip(&daemons) {
            assert_eq!(peer.address, daemon.address);
            assert!(peer.rtt.is_some() && peer.last_seen.is_some(), "{peer:?}");
            assert_eq!(peer.key.unwrap().to_string(), daemon.public_key);
        }
        let answers = cluster.broadcast(&who(0)).await;
        let names: Vec<&str> = answers
            .iter()
            .map(|(_, answer)| name_of(answer.as_ref().unwrap()))
            .collect();
        assert_eq!(names, ["d0", "d1", "d2"]);

        let victim = cluster.peer(&daemons[1].address).unwrap();
        let mut events = cluster.subscribe();
        let killed_at = Instant::now();
        daemons[1].kill().await;
        let seen = wait_event(&mut events, victim, is_down, detection_bound()).await;
        let detected = killed_at.elapsed();
        eprintln!("killed daemon detected dead after {detected:?}; events {seen:?}");
        assert!(detected <= detection_bound(), "{detected:?}");
        assert!(
            seen.iter().all(|e| e.peer() == victim),
            "other peers changed state: {seen:?}"
        );
        assert!(
            matches!(seen.first(), Some(MembershipEvent::Suspect { .. })),
            "{seen:?}"
        );
        let view = cluster.view();
        assert_eq!(
            view.iter().map(|p| p.state).collect::<Vec<_>>(),
            [PeerState::Alive, PeerState::Dead, PeerState::Alive]
        );
        match cluster.send_to(victim, &who(0)).await {
            Err(Error::Unavailable { endpoint, state }) => {
                assert_eq!(endpoint, daemons[1].address);
                assert_eq!(state, PeerState::Dead);
            }
            other => panic!("send_to a dead peer: {other:?}"),
        }
        let answers = cluster.broadcast(&who(0)).await;
        let peers: Vec<usize> = answers.iter().map(|(peer, _)| peer.index()).collect();
        assert_eq!(peers, [0, 2]);
        assert!(answers.iter().all(|(_, answer)| answer.is_ok()));

        // The same port and key again: a new generation, it rejoins.
        daemons[1].run().await;
        wait_event(&mut events, victim, is_up, rejoin_bound()).await;
        let answer = cluster.send_to(victim, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d1");
        assert_eq!(cluster.broadcast(&who(0)).await.len(), 3);
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_daemon_is_suspected_then_declared_dead_and_rejoins_when_it_heals() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        // d1 is reached, by the observer and by d0, only through the proxy.
        let mut d0 = Daemon::start(&dir, "d0").await;
        d0.join(Vec::new(), None);
        let mut d1 = Daemon::start(&dir, "d1").await;
        let proxy = Proxy::start(d1.address.clone()).await;
        d1.join(vec![d0.peer()], Some(proxy.address.clone()));
        let daemons = [d0, d1];
        let mut config = cluster_config(&daemons);
        config.cluster.peers[1] = format!("{}@{}", daemons[1].public_key, proxy.address)
            .parse()
            .unwrap();
        let cluster = Cluster::start(config).unwrap();
        all_alive(&cluster).await;
        let victim = cluster.peer(&proxy.address).unwrap();
        let other = cluster.peer(&daemons[0].address).unwrap();
        let answer = cluster.send_to(victim, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d1");

        let mut events = cluster.subscribe();
        let frozen_at = Instant::now();
        proxy.freeze(true);
        let is_suspect = |e: &MembershipEvent| matches!(e, MembershipEvent::Suspect { .. });
        let seen = wait_event(&mut events, victim, is_suspect, suspect_bound()).await;
        let suspected = frozen_at.elapsed();
        // A probe fails no sooner than its timeout.
        assert!(suspected >= PROBE_TIMEOUT, "{suspected:?}");
        assert!(suspected <= suspect_bound(), "{suspected:?}");
        assert!(seen.iter().all(|e| e.peer() == victim), "{seen:?}");
        let seen = wait_event(&mut events, victim, is_down, detection_bound()).await;
        let detected = frozen_at.elapsed();
        eprintln!("silent daemon suspected after {suspected:?}, dead after {detected:?}");
        assert!(detected <= detection_bound(), "{detected:?}");
        assert!(seen.iter().all(|e| e.peer() == victim), "{seen:?}");
        let states: Vec<PeerState> = cluster.view().iter().map(|p| p.state).collect();
        assert_eq!(states, [PeerState::Alive, PeerState::Dead]);
        match cluster.send_to(victim, &who(0)).await {
            Err(Error::Unavailable { endpoint, state }) => {
                assert_eq!(endpoint, proxy.address);
                assert_eq!(state, PeerState::Dead);
            }
            other => panic!("send_to a dead peer: {other:?}"),
        }
        let answer = cluster.send_to(other, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d0");

        // The path heals: told it was declared dead, the daemon rejoins
        // under a new generation.
        proxy.freeze(false);
        wait_event(&mut events, victim, is_up, PERIOD * 5 + rejoin_bound()).await;
        let answer = cluster.send_to(victim, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d1");
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A membership packet (PROTOCOL.md Part IV) announcing a member at
/// `address` to the member at `to` with Noise key `key`.
fn announce(address: &str, to: &str, key: &str) -> Vec<u8> {
    let key: netproto_crypto::PublicKey = key.parse().unwrap();
    let src = (address, None::<[u8; 32]>, 7u64);
    let dst = (to, Some(*key.as_bytes()), 0u64);
    let mut packet = postcard::to_allocvec(&(src, 0u16, dst)).unwrap();
    packet.push(6); // Announce
    packet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allowed_members_a_client_that_is_not_one_cannot_announce_members() {
    let case = async {
        let dir = temp_dir();
        // Without the list, then with it: the same packet is taken, then not.
        for allow_list in [false, true] {
            let name = if allow_list { "listed" } else { "open" };
            let mut daemon = Daemon::start(&dir, name).await;
            let mut member = Daemon::start(&dir, &format!("{name}-member")).await;
            if allow_list {
                daemon.allowed_members = vec![member.public_key.parse().unwrap()];
            }
            daemon.join(Vec::new(), None);
            // A member listed (or any, without the list) joins.
            member.join(vec![daemon.peer()], None);
            all_alive(daemon.cluster.as_ref().unwrap()).await;

            // A client with a key of its own, not a member's.
            let mut config = NetworkConfig::default();
            config.client.address.clone_from(&daemon.address);
            let client = netproto_daemon::Client::connect(config).await.unwrap();
            // No socket behind it: nothing is dialled if it is taken.
            let bogus = format!("unix:{}", dir.join("nobody.sock").display());
            let packet = announce(&bogus, &daemon.address, &daemon.public_key);
            let message = Message::custom("netproto.swim.v1", packet).unwrap();
            // As a request it is answered: taken (PONG) or refused.
            let answer = client.request(&message).await;
            if allow_list {
                let error = answer.unwrap_err();
                assert_eq!(
                    error.code(),
                    Some(netproto_daemon::ErrorCode::PERMISSION_DENIED)
                );
            } else {
                assert_eq!(answer.unwrap(), Message::Pong);
            }
            client.send(message).await.unwrap();
            // Handled in order: once the ping is answered, so is the packet,
            // and the member's task has had it for three periods.
            client.request(&Message::Ping).await.unwrap();
            tokio::time::sleep(PERIOD * 3).await;

            let view = daemon.cluster.as_ref().unwrap().view();
            let known = view.iter().any(|peer| peer.address == bogus);
            assert_eq!(
                known, !allow_list,
                "allowed_members set: {allow_list}; view {view:?}"
            );
            client.close().await.unwrap();
            member.kill().await;
            daemon.kill().await;
        }
        std::fs::remove_dir_all(dir).unwrap();
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}
