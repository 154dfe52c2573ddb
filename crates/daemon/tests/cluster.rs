//! Clusters and failover on loopback: three daemons in one process, members
//! of one SWIM cluster, one of them killed (its server's task aborted and
//! its cluster dropped, so its sockets close without a goaway and it stops
//! answering probes), frozen behind a proxy, or restarted on the same port
//! with the same key.

// Test code: unwrap and indexing fail the test, which is what they should do.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netproto_crypto::Keypair;
use netproto_daemon::{
    Balancer, Cluster, Error, MembershipEvent, NetworkConfig, PeerId, PeerState, Server,
    ServerHandle,
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
        config.cluster = member_settings(&self.seeds);
        config.cluster.advertise.clone_from(&self.advertise);
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

    /// Leaves the cluster, then shuts down gracefully: a goaway to every
    /// client, requests in flight finish.
    async fn shut_down(&mut self) {
        self.cluster.as_ref().unwrap().leave().await;
        self.handle
            .take()
            .unwrap()
            .shutdown(Some(Duration::from_secs(5)))
            .await;
        self.task.take().unwrap().await.unwrap();
        self.cluster = None;
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
async fn requests_in_flight_on_a_killed_daemon_fail_clearly_or_are_retried() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Arc::new(Balancer::connect(cluster_config(&daemons)).await.unwrap());
        all_alive(balancer.cluster()).await;
        // One idempotent and one non-idempotent slow request on each
        // daemon: started one by one, each goes to the least loaded.
        let mut requests = Vec::new();
        for idempotent in [true, true, true, false, false, false] {
            let sender = balancer.clone();
            requests.push((
                idempotent,
                tokio::spawn(async move {
                    if idempotent {
                        sender.request_idempotent(&who(1_500)).await
                    } else {
                        sender.request(&who(1_500)).await
                    }
                }),
            ));
            let started = requests.len();
            let in_flight = || balancer.view().iter().map(|p| p.in_flight).sum::<usize>();
            tokio::time::timeout(Duration::from_secs(5), async {
                while in_flight() < started {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap();
        }
        let loads: Vec<usize> = balancer.view().iter().map(|p| p.in_flight).collect();
        assert_eq!(loads, [2, 2, 2]);

        daemons[1].kill().await;
        let (mut retried, mut failed) = (0, 0);
        for (idempotent, request) in requests {
            match request.await.unwrap() {
                Ok(answer) if idempotent => {
                    assert_ne!(name_of(&answer), "d1");
                    retried += 1;
                }
                Ok(answer) => assert_ne!(name_of(&answer), "d1"),
                Err(Error::EndpointDown { endpoint, .. }) if !idempotent => {
                    assert_eq!(endpoint, daemons[1].address);
                    failed += 1;
                }
                Err(error) => panic!("idempotent {idempotent}: {error}"),
            }
        }
        assert_eq!((retried, failed), (3, 1));
        // New requests go to the others at once.
        for _ in 0..10 {
            let answer = balancer.request(&who(0)).await.unwrap();
            assert_ne!(name_of(&answer), "d1");
        }
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// What a load worker saw of one request.
struct Outcome {
    idempotent: bool,
    /// The test phase when the request started and when it ended.
    phases: (u8, u8),
    result: Result<String, Error>,
}

/// All daemons up.
const BEFORE: u8 = 0;
/// From just before the kill until the balancer's cluster saw it dead.
const KILLED: u8 = 1;
/// Dead, until it is restarted.
const DETECTED: u8 = 2;
/// Restarted, until its rejoining is seen.
const RESTARTED: u8 = 3;
/// Rejoined.
const REJOINED: u8 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancer_moves_load_off_a_killed_daemon_loses_nothing_and_takes_it_back() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Arc::new(Balancer::connect(cluster_config(&daemons)).await.unwrap());
        all_alive(balancer.cluster()).await;
        let victim = balancer.cluster().peer(&daemons[1].address).unwrap();
        let mut events = balancer.subscribe();
        let phase = Arc::new(AtomicU8::new(BEFORE));
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let mut workers = Vec::new();
        for worker in 0..6 {
            let (balancer, phase, stop, outcomes) =
                (balancer.clone(), phase.clone(), stop.clone(), outcomes.clone());
            workers.push(tokio::spawn(async move {
                let mut n = 0u64;
                // Bounded by the stop flag and by count.
                while !stop.load(Ordering::Relaxed) && n < 100_000 {
                    n += 1;
                    let idempotent = (worker + n).is_multiple_of(2);
                    let started = phase.load(Ordering::SeqCst);
                    let message = who(3);
                    let result = if idempotent {
                        balancer.request_idempotent(&message).await
                    } else {
                        balancer.request(&message).await
                    };
                    let result = result.map(|answer| name_of(&answer).to_owned());
                    let ended = phase.load(Ordering::SeqCst);
                    outcomes.lock().unwrap().push(Outcome {
                        idempotent,
                        phases: (started, ended),
                        result,
                    });
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        phase.store(KILLED, Ordering::SeqCst);
        let killed_at = Instant::now();
        daemons[1].kill().await;
        wait_event(&mut events, victim, is_down, detection_bound()).await;
        let detected = killed_at.elapsed();
        phase.store(DETECTED, Ordering::SeqCst);
        assert!(detected <= detection_bound(), "{detected:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        phase.store(RESTARTED, Ordering::SeqCst);
        daemons[1].run().await;
        wait_event(&mut events, victim, is_up, rejoin_bound()).await;
        phase.store(REJOINED, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.await.unwrap();
        }

        let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
        let served_by = |name: &str, phases: (u8, u8)| {
            outcomes
                .iter()
                .filter(|o| o.phases == phases)
                .filter(|o| o.result.as_ref().is_ok_and(|n| n == name))
                .count()
        };
        let mut failed = 0;
        for outcome in &outcomes {
            match &outcome.result {
                Ok(_) => {}
                Err(Error::EndpointDown { endpoint, .. }) if !outcome.idempotent => {
                    assert_eq!(*endpoint, daemons[1].address);
                    assert!(outcome.phases.0 <= KILLED, "{:?}", outcome.phases);
                    failed += 1;
                }
                Err(error) => panic!("idempotent {}: {error}", outcome.idempotent),
            }
        }
        eprintln!(
            "{} requests, {failed} failed (not idempotent, in flight on the killed daemon), detected dead after {detected:?}",
            outcomes.len()
        );
        for name in ["d0", "d1", "d2"] {
            assert!(served_by(name, (BEFORE, BEFORE)) > 0, "{name} before");
            assert!(served_by(name, (REJOINED, REJOINED)) > 0, "{name} after");
        }
        assert_eq!(served_by("d1", (DETECTED, DETECTED)), 0);
        assert!(served_by("d0", (DETECTED, DETECTED)) > 0);
        assert!(served_by("d2", (DETECTED, DETECTED)) > 0);
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
async fn a_silent_daemon_is_suspected_then_declared_dead_and_rejoins_when_it_heals() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        // d1 is reached, by the balancer and by d0, only through the proxy.
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
        let balancer = Arc::new(Balancer::connect(config).await.unwrap());
        all_alive(balancer.cluster()).await;
        let victim = balancer.cluster().peer(&proxy.address).unwrap();
        // One idempotent and one non-idempotent slow request per daemon.
        let mut requests = Vec::new();
        for idempotent in [true, true, false, false] {
            let sender = balancer.clone();
            requests.push((
                idempotent,
                tokio::spawn(async move {
                    let message = who(2_000);
                    if idempotent {
                        sender.request_idempotent(&message).await
                    } else {
                        sender.request(&message).await
                    }
                }),
            ));
            let started = requests.len();
            let in_flight = || balancer.view().iter().map(|p| p.in_flight).sum::<usize>();
            tokio::time::timeout(Duration::from_secs(5), async {
                while in_flight() < started {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await
            .unwrap();
        }
        let loads: Vec<usize> = balancer.view().iter().map(|p| p.in_flight).collect();
        assert_eq!(loads, [2, 2]);

        let mut events = balancer.subscribe();
        let frozen_at = Instant::now();
        proxy.freeze(true);
        let is_suspect = |e: &MembershipEvent| matches!(e, MembershipEvent::Suspect { .. });
        wait_event(&mut events, victim, is_suspect, suspect_bound()).await;
        let suspected = frozen_at.elapsed();
        // A probe fails no sooner than its timeout.
        assert!(suspected >= PROBE_TIMEOUT, "{suspected:?}");
        assert!(suspected <= suspect_bound(), "{suspected:?}");
        // Suspect: no new requests go to it.
        let answer = balancer.request(&who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d0");
        wait_event(&mut events, victim, is_down, detection_bound()).await;
        let detected = frozen_at.elapsed();
        eprintln!("silent daemon suspected after {suspected:?}, dead after {detected:?}");
        assert!(detected <= detection_bound(), "{detected:?}");

        let (mut retried, mut failed) = (0, 0);
        for (idempotent, request) in requests {
            match request.await.unwrap() {
                Ok(answer) => {
                    assert_eq!(name_of(&answer), "d0");
                    retried += usize::from(idempotent);
                }
                Err(Error::EndpointDown { endpoint, .. }) if !idempotent => {
                    assert_eq!(endpoint, proxy.address);
                    failed += 1;
                }
                Err(error) => panic!("idempotent {idempotent}: {error}"),
            }
        }
        assert_eq!((retried, failed), (2, 1));

        // The path heals: told it was declared dead, the daemon rejoins
        // under a new generation.
        proxy.freeze(false);
        wait_event(&mut events, victim, is_up, PERIOD * 5 + rejoin_bound()).await;
        let answer = balancer.cluster().send_to(victim, &who(0)).await.unwrap();
        assert_eq!(name_of(&answer), "d1");
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_shut_down_gracefully_loses_no_request_even_if_not_idempotent() {
    let dir = temp_dir();
    tokio::time::timeout(LIMIT, async {
        let mut daemons = daemons(&dir, 3).await;
        let balancer = Arc::new(Balancer::connect(cluster_config(&daemons)).await.unwrap());
        all_alive(balancer.cluster()).await;
        let victim = balancer.cluster().peer(&daemons[1].address).unwrap();
        let mut events = balancer.subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..6 {
            let (balancer, stop) = (balancer.clone(), stop.clone());
            workers.push(tokio::spawn(async move {
                let mut served = Vec::new();
                while !stop.load(Ordering::Relaxed) && served.len() < 100_000 {
                    // Not idempotent: only a request the daemon refused
                    // with its goaway may be sent elsewhere.
                    match balancer.request(&who(20)).await {
                        Ok(answer) => served.push(name_of(&answer).to_owned()),
                        Err(error) => panic!("lost a request: {error}"),
                    }
                }
                served
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        daemons[1].shut_down().await;
        let is_left = |e: &MembershipEvent| matches!(e, MembershipEvent::PeerLeft { .. });
        wait_event(&mut events, victim, is_left, rejoin_bound()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        let mut served = Vec::new();
        for worker in workers {
            served.extend(worker.await.unwrap());
        }
        for name in ["d0", "d1", "d2"] {
            assert!(served.iter().any(|n| n == name), "{name} served nothing");
        }
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
