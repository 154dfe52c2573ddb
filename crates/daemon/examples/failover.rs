//! Failover, measured: three daemons, members of one SWIM cluster, behind a
//! client-side [`Balancer`], one killed under load and restarted.
//!
//! ```text
//! cargo run --release -p netproto-daemon --example failover
//! ```
//!
//! Prints requests per second in each phase (all up; from the kill until
//! the balancer declares the daemon dead; two of three; from the restart
//! until it rejoins; all up again) and the failed requests, idempotent or
//! not. Everything runs in one process on loopback, so the daemons and the
//! load share the machine's cores.
#![allow(clippy::print_stdout)] // printing the figures is this example's job

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use netproto_crypto::Keypair;
use netproto_daemon::{
    Balancer, Cluster, ClusterConfig, Error, MembershipEvent, NetworkConfig, Server,
};
use netproto_dispatch::Dispatcher;
use netproto_wire::Message;
use tokio::task::JoinHandle;

/// Requests in flight at once (one task each).
const CONCURRENCY: usize = 32;
/// The SWIM protocol period, probe timeout and suspect timeout.
const PERIOD: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
const SUSPECT_TIMEOUT: Duration = Duration::from_millis(750);
/// How long the steady phases last.
const STEADY: Duration = Duration::from_secs(3);

const PHASES: [&str; 5] = [
    "all three up",
    "kill -> declared dead",
    "two of three",
    "restart -> rejoined",
    "all three up again",
];

/// Counts per phase, updated by the load tasks.
#[derive(Default)]
struct Counters {
    phase: AtomicUsize,
    ok: [AtomicU64; 5],
    failed_idempotent: [AtomicU64; 5],
    failed_not_idempotent: [AtomicU64; 5],
}

impl Counters {
    fn count(&self, idempotent: bool, result: &Result<Message, Error>) {
        let phase = self.phase.load(Ordering::Relaxed);
        let counters = match (result, idempotent) {
            (Ok(_), _) => &self.ok,
            (Err(_), true) => &self.failed_idempotent,
            (Err(_), false) => &self.failed_not_idempotent,
        };
        if let Some(counter) = counters.get(phase) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Daemon {
    address: String,
    config: NetworkConfig,
    task: Option<JoinHandle<()>>,
    cluster: Option<Cluster>,
}

impl Daemon {
    /// A daemon that joins the cluster through `config.cluster.peers`.
    async fn start(mut config: NetworkConfig) -> anyhow::Result<Self> {
        let server = bind(&config).await?;
        config.server.address = server.local_addr();
        let mut daemon = Self {
            address: config.server.address.clone(),
            cluster: Some(Cluster::join(config.clone(), &server)?),
            config,
            task: None,
        };
        daemon.task = Some(spawn(server));
        Ok(daemon)
    }

    /// Aborts the server's task and drops its membership: its sockets
    /// close without a goaway, and it answers no probe.
    async fn kill(&mut self) {
        self.cluster = None;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// A new server on the same port with the same key.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let server = bind(&self.config).await?;
        self.cluster = Some(Cluster::join(self.config.clone(), &server)?);
        self.task = Some(spawn(server));
        Ok(())
    }
}

async fn bind(config: &NetworkConfig) -> anyhow::Result<Server> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("PING", |_| Ok(Message::Pong));
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    let mut attempts = 0;
    loop {
        match Server::bind(config.clone(), dispatcher.clone()).await {
            Ok(server) => return Ok(server),
            // The old socket may take a moment to go away.
            Err(_) if attempts < 50 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => return Err(error).context("binding a daemon"),
        }
    }
}

fn spawn(server: Server) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = server.run().await {
            eprintln!("daemon stopped: {error}");
        }
    })
}

/// The cluster's settings, joining through `peers`.
fn settings(peers: Vec<netproto_daemon::PeerAddress>) -> ClusterConfig {
    let mut settings = ClusterConfig::default();
    settings.peers = peers;
    settings.probe_period = PERIOD;
    settings.probe_timeout = PROBE_TIMEOUT;
    settings.suspect_timeout = SUSPECT_TIMEOUT;
    settings
}

/// Waits for `wanted` about the daemon at `address`.
async fn wait_for(
    events: &mut tokio::sync::broadcast::Receiver<MembershipEvent>,
    address: &str,
    wanted: fn(&MembershipEvent) -> bool,
) -> anyhow::Result<()> {
    let limit = Duration::from_secs(30);
    tokio::time::timeout(limit, async {
        loop {
            let event = events.recv().await?;
            if event.address() == address && wanted(&event) {
                return anyhow::Ok(());
            }
        }
    })
    .await
    .context("no membership event in 30 s")?
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("netproto-failover-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut daemons = Vec::new();
    let mut peers = Vec::new();
    for i in 0..3 {
        let key_file = dir.join(format!("d{i}.key"));
        let keypair = Keypair::generate(&mut rand::rngs::OsRng);
        let _ = std::fs::remove_file(&key_file);
        keypair.write_key_file(&key_file)?;
        let mut config = NetworkConfig::default();
        config.server.address = "127.0.0.1:0".into();
        config.security.key_file = Some(key_file);
        config.cluster = settings(peers.clone());
        let daemon = Daemon::start(config).await?;
        peers.push(format!("{}@{}", keypair.public(), daemon.address).parse()?);
        daemons.push(daemon);
    }

    let mut config = NetworkConfig::default();
    config.cluster = settings(peers);
    let balancer = Arc::new(Balancer::connect(config).await?);
    balancer
        .cluster()
        .wait_until(Duration::from_secs(10), |peers| {
            peers
                .iter()
                .all(|p| p.state == netproto_daemon::PeerState::Alive)
        })
        .await?;
    let mut events = balancer.subscribe();

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..CONCURRENCY {
        let (balancer, counters, stop) = (balancer.clone(), counters.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            // Half the tasks send idempotent requests, half not.
            let idempotent = task % 2 == 0;
            let message = Message::Echo(format!("request from task {task}"));
            while !stop.load(Ordering::Relaxed) {
                let result = if idempotent {
                    balancer.request_idempotent(&message).await
                } else {
                    balancer.request(&message).await
                };
                counters.count(idempotent, &result);
            }
        }));
    }

    let victim = daemons.get_mut(1).context("three daemons were started")?;
    let mut ends = [Instant::now(); 6];
    tokio::time::sleep(STEADY).await;
    ends[1] = Instant::now();
    counters.phase.store(1, Ordering::Relaxed);
    victim.kill().await;
    wait_for(&mut events, &victim.address, |e| {
        matches!(e, MembershipEvent::PeerDown { .. })
    })
    .await?;
    ends[2] = Instant::now();
    counters.phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(STEADY).await;
    ends[3] = Instant::now();
    counters.phase.store(3, Ordering::Relaxed);
    victim.restart().await?;
    wait_for(&mut events, &victim.address, |e| {
        matches!(e, MembershipEvent::PeerUp { .. })
    })
    .await?;
    ends[4] = Instant::now();
    counters.phase.store(4, Ordering::Relaxed);
    tokio::time::sleep(STEADY).await;
    stop.store(true, Ordering::Relaxed);
    ends[5] = Instant::now();
    for task in load {
        task.await?;
    }

    println!(
        "3 daemons (Noise, loopback, one process), {CONCURRENCY} requests in flight, SWIM probe period {PERIOD:?}, probe timeout {PROBE_TIMEOUT:?}, suspect timeout {SUSPECT_TIMEOUT:?}"
    );
    println!(
        "{:<24} {:>9} {:>10} {:>12} {:>15} {:>19}",
        "phase", "duration", "requests/s", "ok", "failed idempot.", "failed not idempot."
    );
    let (mut failed_idempotent, mut failed_not_idempotent) = (0, 0);
    for (phase, name) in PHASES.iter().enumerate() {
        let (Some(start), Some(end)) = (ends.get(phase), ends.get(phase + 1)) else {
            bail!("phase {phase} has no end");
        };
        let took = end.duration_since(*start);
        let load =
            |counter: &[AtomicU64; 5]| counter.get(phase).map_or(0, |c| c.load(Ordering::Relaxed));
        let ok = load(&counters.ok);
        let (fi, fn_) = (
            load(&counters.failed_idempotent),
            load(&counters.failed_not_idempotent),
        );
        failed_idempotent += fi;
        failed_not_idempotent += fn_;
        println!(
            "{name:<24} {:>8.2}s {:>10.0} {ok:>12} {fi:>15} {fn_:>19}",
            took.as_secs_f64(),
            ok as f64 / took.as_secs_f64()
        );
    }
    println!(
        "failed requests: {failed_idempotent} idempotent, {failed_not_idempotent} not idempotent (in flight on the killed daemon)"
    );
    for daemon in &mut daemons {
        daemon.kill().await;
    }
    std::fs::remove_dir_all(dir)?;
    Ok(())
}
