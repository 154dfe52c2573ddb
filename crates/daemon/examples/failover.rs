//! Failover, measured: three daemons behind a client-side [`Balancer`],
//! one killed under load and restarted.
//!
//! ```text
//! cargo run --release -p netproto-daemon --example failover
//! ```
//!
//! Prints requests per second in each phase (all up; from the kill until
//! the balancer takes the daemon out of rotation; two of three; from the
//! restart until it is back in rotation; all up again) and the failed
//! requests, idempotent or not. Everything runs in one process on loopback, so the daemons and the
//! load share the machine's cores.
//!
//! It checks the balancer's guarantees and exits with an error when one
//! fails: no idempotent request fails, and every failed request is an
//! `EndpointDown` naming the killed daemon (a request in flight on it).
//! `cargo xtask examples` runs it (unoptimized, so its rates are lower).
#![allow(clippy::print_stdout)] // printing the figures is this example's job

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use netproto_crypto::Keypair;
use netproto_daemon::{Balancer, EndpointView, Error, NetworkConfig, PeerState, Server};
use netproto_dispatch::Dispatcher;
use netproto_wire::Message;
use tokio::task::JoinHandle;

/// Requests in flight at once (one task each).
const CONCURRENCY: usize = 32;
const HEARTBEAT: Duration = Duration::from_millis(250);
const SUSPECT_AFTER: u32 = 2;
const DEAD_AFTER: u32 = 4;
/// How long the steady phases last.
const STEADY: Duration = Duration::from_secs(3);

const PHASES: [&str; 5] = [
    "all three up",
    "kill -> out of rotation",
    "two of three",
    "restart -> in rotation",
    "all three up again",
];

/// Counts per phase, updated by the load tasks.
#[derive(Default)]
struct Counters {
    phase: AtomicUsize,
    ok: [AtomicU64; 5],
    failed_idempotent: [AtomicU64; 5],
    failed_not_idempotent: [AtomicU64; 5],
    /// Failures that are not an `EndpointDown` naming the killed daemon.
    unexplained: AtomicU64,
}

impl Counters {
    fn count(&self, idempotent: bool, result: &Result<Message, Error>, victim: &str) {
        let phase = self.phase.load(Ordering::Relaxed);
        let counters = match (result, idempotent) {
            (Ok(_), _) => &self.ok,
            (Err(_), true) => &self.failed_idempotent,
            (Err(_), false) => &self.failed_not_idempotent,
        };
        if let Some(counter) = counters.get(phase) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(error) = result {
            // Every failure is shown, with its cause: none may go unexplained.
            let mut text = error.to_string();
            let mut cause: &dyn std::error::Error = error;
            while let Some(source) = cause.source() {
                text = format!("{text}: {source}");
                cause = source;
            }
            eprintln!("phase {phase}, idempotent {idempotent}: {text}");
            if !matches!(error, Error::EndpointDown { endpoint, .. } if endpoint == victim) {
                self.unexplained.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

struct Daemon {
    address: String,
    config: NetworkConfig,
    task: Option<JoinHandle<()>>,
}

impl Daemon {
    async fn start(mut config: NetworkConfig) -> anyhow::Result<Self> {
        let server = bind(&config).await?;
        config.server.address = server.local_addr();
        let mut daemon = Self {
            address: config.server.address.clone(),
            config,
            task: None,
        };
        daemon.task = Some(spawn(server));
        Ok(daemon)
    }

    /// Aborts the server's task: its sockets close without a goaway.
    async fn kill(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// A new server on the same port with the same key.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let server = bind(&self.config).await?;
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

/// Waits until the endpoint at `address` satisfies `wanted`.
async fn wait_for(
    balancer: &Balancer,
    address: &str,
    wanted: fn(&EndpointView) -> bool,
) -> anyhow::Result<()> {
    balancer
        .wait_until(Duration::from_secs(30), |endpoints| {
            endpoints.iter().any(|e| e.address == address && wanted(e))
        })
        .await
        .context("the endpoint did not change state in 30 s")
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
        let daemon = Daemon::start(config).await?;
        peers.push(format!("{}@{}", keypair.public(), daemon.address).parse()?);
        daemons.push(daemon);
    }

    let mut config = NetworkConfig::default();
    config.balancer.endpoints = peers;
    config.balancer.heartbeat_interval = HEARTBEAT;
    config.balancer.suspect_after = SUSPECT_AFTER;
    config.balancer.dead_after = DEAD_AFTER;
    config.balancer.max_reconnect_delay = Duration::from_secs(1);
    let balancer = Arc::new(Balancer::connect(config).await?);
    balancer
        .wait_until(Duration::from_secs(10), |endpoints| {
            endpoints.iter().all(|e| e.state == PeerState::Alive)
        })
        .await?;

    let victim_address = daemons
        .get(1)
        .context("three daemons were started")?
        .address
        .clone();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for task in 0..CONCURRENCY {
        let (balancer, counters, stop) = (balancer.clone(), counters.clone(), stop.clone());
        let victim = victim_address.clone();
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
                counters.count(idempotent, &result, &victim);
            }
        }));
    }

    let victim = daemons.get_mut(1).context("three daemons were started")?;
    let mut ends = [Instant::now(); 6];
    tokio::time::sleep(STEADY).await;
    ends[1] = Instant::now();
    counters.phase.store(1, Ordering::Relaxed);
    victim.kill().await;
    wait_for(&balancer, &victim.address, |e| e.state != PeerState::Alive).await?;
    ends[2] = Instant::now();
    counters.phase.store(2, Ordering::Relaxed);
    tokio::time::sleep(STEADY).await;
    ends[3] = Instant::now();
    counters.phase.store(3, Ordering::Relaxed);
    victim.restart().await?;
    wait_for(&balancer, &victim.address, |e| e.state == PeerState::Alive).await?;
    ends[4] = Instant::now();
    counters.phase.store(4, Ordering::Relaxed);
    tokio::time::sleep(STEADY).await;
    stop.store(true, Ordering::Relaxed);
    ends[5] = Instant::now();
    for task in load {
        task.await?;
    }

    println!(
        "3 daemons (Noise, loopback, one process), {CONCURRENCY} requests in flight, heartbeat {HEARTBEAT:?}, suspect after {SUSPECT_AFTER}, dead after {DEAD_AFTER}"
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
    let unexplained = counters.unexplained.load(Ordering::Relaxed);
    if failed_idempotent > 0 || unexplained > 0 {
        bail!(
            "{failed_idempotent} idempotent requests failed, {unexplained} failures were not \
             an EndpointDown naming the killed daemon"
        );
    }
    println!("failover: all checks passed");
    Ok(())
}
