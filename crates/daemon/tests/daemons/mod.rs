//! Daemons in this process for the balancer and discovery suites: each a
//! [`Server`] on a loopback port with its own key, in a task that can be
//! killed (aborted: its sockets close without a goaway), restarted on the
//! same port with the same key, or shut down gracefully.
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netproto_crypto::Keypair;
use netproto_daemon::{Balancer, NetworkConfig, Server, ServerHandle};
use netproto_dispatch::{Dispatcher, HandlerError};
use netproto_service::{Context, Method};
use netproto_wire::Message;
use tokio::task::JoinHandle;

/// A typed method: the daemon's name, after sleeping the milliseconds asked.
pub(crate) struct Whoami;

impl Method for Whoami {
    const NAME: &'static str = "test.whoami.v1";
    type Request = u64;
    type Response = String;
}

/// One daemon.
pub(crate) struct Daemon {
    pub(crate) name: String,
    /// `ip:port` once bound.
    pub(crate) address: String,
    pub(crate) key_file: PathBuf,
    pub(crate) public_key: String,
    /// The ids of the `WHO` requests it received, in order.
    pub(crate) received: Arc<Mutex<Vec<u64>>>,
    task: Option<JoinHandle<()>>,
    handle: Option<ServerHandle>,
}

/// Answers `WHO` with the daemon's name after sleeping as many milliseconds
/// as the payload says (`millis` or `millis:id`, the id recorded), and
/// [`Whoami`] likewise.
fn dispatcher(name: &str, received: Arc<Mutex<Vec<u64>>>) -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("PING", |_| Ok(Message::Pong));
    let who = name.to_owned();
    dispatcher.register_async("WHO", move |msg| {
        let (name, received) = (who.clone(), received.clone());
        async move {
            if let Message::Custom { data, .. } = msg {
                let text = std::str::from_utf8(&data).unwrap_or("0");
                let (millis, id) = text.split_once(':').unwrap_or((text, ""));
                if let Ok(id) = id.parse() {
                    received.lock().unwrap().push(id);
                }
                let millis = millis.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(millis)).await;
            }
            Ok(Message::Echo(name))
        }
    });
    let whoami = name.to_owned();
    netproto_service::register::<Whoami, _, _>(&dispatcher, move |_: Context, millis: u64| {
        let name = whoami.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(millis)).await;
            Ok::<_, HandlerError>(name)
        }
    });
    dispatcher
}

/// A `WHO` request answered after `delay_ms`.
pub(crate) fn who(delay_ms: u64) -> Message {
    Message::custom("WHO", delay_ms.to_string().into_bytes()).unwrap()
}

/// A `WHO` request answered after `delay_ms`, recorded as `id` by the
/// daemon that receives it.
pub(crate) fn who_with_id(delay_ms: u64, id: u64) -> Message {
    Message::custom("WHO", format!("{delay_ms}:{id}").into_bytes()).unwrap()
}

/// The daemon name in an answer to `WHO`.
pub(crate) fn name_of(answer: &Message) -> &str {
    match answer {
        Message::Echo(name) => name,
        other => panic!("unexpected answer {other:?}"),
    }
}

impl Daemon {
    /// A daemon listening on `bind` (`127.0.0.1:0` for any port), with a
    /// key of its own.
    pub(crate) async fn start(dir: &Path, name: &str, bind: &str) -> Self {
        let key_file = dir.join(format!("{name}.key"));
        Self::start_with_key(&key_file, name, bind).await
    }

    /// A daemon listening on `bind` with the key in `key_file`, created
    /// when missing (daemons behind one DNS name share a key).
    pub(crate) async fn start_with_key(key_file: &Path, name: &str, bind: &str) -> Self {
        if !key_file.exists() {
            let keypair = Keypair::generate(&mut rand::rngs::OsRng);
            keypair.write_key_file(key_file).unwrap();
        }
        let public_key = Keypair::read_key_file(key_file)
            .unwrap()
            .public()
            .to_string();
        let mut daemon = Self {
            name: name.to_owned(),
            address: bind.to_owned(),
            key_file: key_file.to_owned(),
            public_key,
            received: Arc::default(),
            task: None,
            handle: None,
        };
        daemon.run().await;
        daemon
    }

    /// Binds (retrying while the old socket is still going away) and runs.
    pub(crate) async fn run(&mut self) {
        let mut config = NetworkConfig::default();
        config.server.address.clone_from(&self.address);
        config.security.key_file = Some(self.key_file.clone());
        let mut attempts = 0;
        let server = loop {
            let dispatcher = dispatcher(&self.name, self.received.clone());
            match Server::bind(config.clone(), dispatcher).await {
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

    /// Graceful shutdown: a goaway to every client, requests in flight
    /// finish.
    pub(crate) async fn shut_down(&mut self) {
        self.handle
            .take()
            .unwrap()
            .shutdown(Some(Duration::from_secs(5)))
            .await;
        self.task.take().unwrap().await.unwrap();
    }

    /// Aborts the server's task: its listener and connections close with
    /// no goaway, as when the process dies.
    pub(crate) async fn kill(&mut self) {
        let task = self.task.take().unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    }

    /// The endpoint entry pinning this daemon's key.
    pub(crate) fn endpoint(&self) -> String {
        format!("{}@{}", self.public_key, self.address)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `count` daemons `d0`, `d1`, … on loopback ports.
pub(crate) async fn daemons(dir: &Path, count: usize) -> Vec<Daemon> {
    let mut daemons = Vec::new();
    for i in 0..count {
        daemons.push(Daemon::start(dir, &format!("d{i}"), "127.0.0.1:0").await);
    }
    daemons
}

pub(crate) const HEARTBEAT: Duration = Duration::from_millis(100);
pub(crate) const SUSPECT_AFTER: u32 = 3;
pub(crate) const DEAD_AFTER: u32 = 6;
pub(crate) const MAX_RECONNECT_DELAY: Duration = Duration::from_millis(400);
/// Room for a loaded 2-core machine on top of a configured bound.
pub(crate) const MARGIN: Duration = Duration::from_secs(2);

/// The balancer's health settings of these suites, without endpoints.
pub(crate) fn balancer_config() -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.balancer.heartbeat_interval = HEARTBEAT;
    config.balancer.suspect_after = SUSPECT_AFTER;
    config.balancer.dead_after = DEAD_AFTER;
    config.balancer.max_reconnect_delay = MAX_RECONNECT_DELAY;
    config.client.reconnect_delay = Duration::from_millis(50);
    config.client.response_timeout = Duration::from_secs(10);
    config
}

/// A balancer over `daemons`, each pinned by its key.
pub(crate) fn static_config(daemons: &[Daemon]) -> NetworkConfig {
    let mut config = balancer_config();
    config.balancer.endpoints = daemons
        .iter()
        .map(|d| d.endpoint().parse().unwrap())
        .collect();
    config
}

pub(crate) fn temp_dir(suite: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netproto-{suite}-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until every endpoint of `balancer` takes requests.
pub(crate) async fn all_ready(balancer: &Balancer) {
    balancer
        .wait_until(Duration::from_secs(10), |endpoints| {
            endpoints
                .iter()
                .all(|e| e.state == netproto_daemon::PeerState::Alive)
        })
        .await
        .unwrap();
}
