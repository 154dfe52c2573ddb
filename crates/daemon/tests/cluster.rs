//! Clusters on loopback: daemons in one process, one of them killed (its
//! task aborted, so its sockets close without a goaway) and restarted on
//! the same port with the same key, or silenced behind a proxy. The
//! balancer's failover tests are in `balancer.rs`.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// Whole-test limit.
const LIMIT: Duration = Duration::from_secs(30);
const HEARTBEAT: Duration = Duration::from_millis(100);
const SUSPECT_AFTER: u32 = 3;
const DEAD_AFTER: u32 = 6;
const MAX_PROBE_DELAY: Duration = Duration::from_millis(400);
/// Room for a loaded 2-core machine on top of a configured bound.
const MARGIN: Duration = Duration::from_secs(2);

/// The configured detection time: `dead_after` heartbeats, plus one for
/// the tick in progress when the daemon died.
fn detection_bound() -> Duration {
    HEARTBEAT * (DEAD_AFTER + 1) + MARGIN
}

/// One daemon: a [`Server`] on a fixed port with a fixed key, in a task.
struct Daemon {
    name: String,
    address: String,
    key_file: PathBuf,
    public_key: String,
    task: Option<JoinHandle<()>>,
    handle: Option<ServerHandle>,
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
        };
        daemon.run().await;
        daemon
    }

    /// Binds (retrying while the old socket is still going away) and runs.
    async fn run(&mut self) {
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
        self.task = Some(tokio::spawn(async move { server.run().await.unwrap() }));
    }

    /// Aborts the server's task: its listener and connections close with
    /// no goaway, as when the process dies.
    async fn kill(&mut self) {
        let task = self.task.take().unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    /// The peer entry pinning this daemon's key.
    fn peer(&self) -> String {
        format!("{}@{}", self.public_key, self.address)
    }
}

async fn daemons(dir: &Path, count: usize) -> Vec<Daemon> {
    let mut daemons = Vec::new();
    for i in 0..count {
        daemons.push(Daemon::start(dir, &format!("d{i}")).await);
    }
    daemons
}

fn cluster_config(daemons: &[Daemon]) -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.cluster.peers = daemons.iter().map(|d| d.peer().parse().unwrap()).collect();
    config.cluster.heartbeat_interval = HEARTBEAT;
    config.cluster.suspect_after = SUSPECT_AFTER;
    config.cluster.dead_after = DEAD_AFTER;
    config.cluster.max_probe_delay = MAX_PROBE_DELAY;
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
            peers.iter().all(|p| p.state == PeerState::Alive)
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
        assert!(view[1].missed >= DEAD_AFTER, "{:?}", view[1]);
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

        // The same port and key again: probed with backoff, it rejoins.
        daemons[1].run().await;
        let limit = MAX_PROBE_DELAY * 2 + MARGIN;
        wait_event(&mut events, victim, is_up, limit).await;
        let answer = cluster.send_to(victim, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d1");
        assert_eq!(cluster.broadcast(&who(0)).await.len(), 3);
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// A loopback TCP proxy that can go silent: frozen, it holds its
/// connections open but forwards nothing, like a hung host or a broken
/// network path.
struct Proxy {
    address: String,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let frozen = watch::channel(false).0;
        let state = frozen.subscribe();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, state) = (target.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (from_client, to_client) = inbound.into_split();
                    let (from_server, to_server) = outbound.into_split();
                    tokio::spawn(pipe(from_client, to_server, state.clone()));
                    pipe(from_server, to_client, state).await;
                });
            }
        });
        Self {
            address,
            frozen,
            task,
        }
    }

    fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies bytes one way, holding them while frozen.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_daemon_is_suspected_then_declared_dead_by_missed_heartbeats() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        let daemons = daemons(&dir, 2).await;
        let proxy = Proxy::start(daemons[1].address.clone()).await;
        let mut config = cluster_config(&daemons);
        config.cluster.peers[1] = format!("{}@{}", daemons[1].public_key, proxy.address)
            .parse()
            .unwrap();
        let cluster = Arc::new(Cluster::start(config).unwrap());
        all_alive(&cluster).await;
        let victim = cluster.peer(&proxy.address).unwrap();
        let d0 = cluster.peer(&daemons[0].address).unwrap();
        // One slow request on each peer.
        let mut requests = Vec::new();
        for peer in [d0, victim] {
            let cluster = cluster.clone();
            requests.push(tokio::spawn(async move {
                cluster.send_to(peer, &who(2_000)).await
            }));
        }
        let in_flight = || cluster.view().iter().map(|p| p.in_flight).sum::<usize>();
        tokio::time::timeout(Duration::from_secs(5), async {
            while in_flight() < 2 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();

        let mut events = cluster.subscribe();
        let frozen_at = Instant::now();
        proxy.freeze(true);
        let is_suspect = |e: &MembershipEvent| matches!(e, MembershipEvent::Suspect { .. });
        let suspect_bound = HEARTBEAT * (SUSPECT_AFTER + 1) + MARGIN;
        wait_event(&mut events, victim, is_suspect, suspect_bound).await;
        let suspected = frozen_at.elapsed();
        // Each miss takes a whole interval; the first may have begun
        // before the freeze.
        assert!(
            suspected >= HEARTBEAT * (SUSPECT_AFTER - 1),
            "{suspected:?}"
        );
        assert!(suspected <= suspect_bound, "{suspected:?}");
        wait_event(&mut events, victim, is_down, detection_bound()).await;
        let detected = frozen_at.elapsed();
        eprintln!("silent daemon suspected after {suspected:?}, dead after {detected:?}");
        assert!(detected <= detection_bound(), "{detected:?}");

        // The request in flight on the dead peer fails, naming it; the
        // other one is answered.
        let mut requests = requests.into_iter();
        let answer = requests.next().unwrap().await.unwrap().unwrap();
        assert_eq!(name_of(&answer), "d0");
        match requests.next().unwrap().await.unwrap() {
            Err(Error::EndpointDown { endpoint, .. }) => assert_eq!(endpoint, proxy.address),
            other => panic!("request on the silent peer: {other:?}"),
        }

        // The path heals: probed with backoff, the daemon comes back.
        proxy.freeze(false);
        let limit = Duration::from_secs(1) + MAX_PROBE_DELAY * 2 + MARGIN;
        wait_event(&mut events, victim, is_up, limit).await;
        let answer = cluster.send_to(victim, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d1");
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
