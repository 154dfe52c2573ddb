//! Draining for load balancers: on shutdown, `GET /readyz` fails first
//! while the server goes on serving for `server.drain_delay`, then the
//! goaway and the graceful shutdown follow; every request gets a reply or
//! a clear going-away or closed error. In process through the library, and
//! as a `netproto serve` process stopped with SIGTERM.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use netproto_daemon::metrics::{REQUESTS, Samples, http_get};
use netproto_daemon::{Client, NetworkConfig, Server, ServerHandle};
use netproto_dispatch::Dispatcher;
use netproto_wire::{ErrorCode, Message};
use support::{ServerProcess, Settings};

const LIMIT: Duration = Duration::from_secs(60);

/// Requests each load task keeps in flight.
const IN_FLIGHT: usize = 16;

/// Most requests one load task sends, should the server never stop.
const MAX_REQUESTS: usize = 10_000_000;

/// Bound on every polling loop: this many tries, `POLL` apart.
const TRIES: usize = 500;
const POLL: Duration = Duration::from_millis(10);

/// How requests ended.
#[derive(Debug, Default)]
struct Outcomes {
    sent: AtomicUsize,
    replied: AtomicUsize,
    /// Refused by the server's goaway, or its shutting-down error frame:
    /// certainly not processed.
    going_away: AtomicUsize,
    /// The connection was gone, or a new one could not be opened.
    closed: AtomicUsize,
}

impl Outcomes {
    /// Counts one result; true while requests should go on. Panics on an
    /// error of any other kind (a timeout would mean a lost request).
    fn record(&self, sent: &Message, result: &Result<Message, netproto_daemon::Error>) -> bool {
        use netproto_daemon::Error as E;
        use netproto_dispatch::Error as D;
        let counter = match result {
            Ok(reply) => {
                assert_eq!(reply, sent, "a reply to another request");
                &self.replied
            }
            Err(E::Dispatch(D::GoingAway { code, .. } | D::Remote { code, .. }))
                if *code == ErrorCode::SHUTTING_DOWN =>
            {
                &self.going_away
            }
            Err(
                E::Dispatch(D::Closed | D::Disconnected(_))
                | E::Transport(_)
                | E::GaveUp { .. }
                | E::Io(_),
            ) => &self.closed,
            Err(error) => panic!("an unclear error: {error:?}"),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        result.is_ok()
    }

    /// `(sent, replied, going away, closed)`.
    fn counts(&self) -> (usize, usize, usize, usize) {
        let n = |counter: &AtomicUsize| counter.load(Ordering::Relaxed);
        (
            n(&self.sent),
            n(&self.replied),
            n(&self.going_away),
            n(&self.closed),
        )
    }
}

/// Keeps [`IN_FLIGHT`] copies of `message` in flight on `client` until one
/// fails, then waits for the others.
async fn load(client: Arc<Client>, message: Message, outcomes: Arc<Outcomes>) {
    let mut running = FuturesUnordered::new();
    let mut issuing = true;
    let mut issued = 0;
    loop {
        while issuing && running.len() < IN_FLIGHT && issued < MAX_REQUESTS {
            issued += 1;
            outcomes.sent.fetch_add(1, Ordering::Relaxed);
            let (client, message) = (client.clone(), message.clone());
            running.push(async move { client.request(&message).await });
        }
        let Some(result) = running.next().await else {
            return;
        };
        if !outcomes.record(&message, &result) {
            issuing = false;
        }
    }
}

/// Clients that each run [`load`].
struct Load {
    outcomes: Arc<Outcomes>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// Connects `clients` clients, each running [`load`] with `message`.
    async fn start(config: &NetworkConfig, clients: usize, message: &Message) -> Self {
        let outcomes = Arc::new(Outcomes::default());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let client = Arc::new(Client::connect(config.clone()).await.unwrap());
            tasks.spawn(load(client, message.clone(), outcomes.clone()));
        }
        Self { outcomes, tasks }
    }

    /// Waits for every client to stop, and checks that each request ended
    /// with a reply, a going-away or a closed error, and that the clients
    /// saw the goaway; returns the replies.
    async fn finish(mut self, case: &str) -> usize {
        while let Some(joined) = self.tasks.join_next().await {
            joined.unwrap();
        }
        let (sent, replied, going_away, closed) = self.outcomes.counts();
        eprintln!(
            "{case}: {sent} sent, {replied} replied, {going_away} going away, {closed} closed"
        );
        assert_eq!(
            sent,
            replied + going_away + closed,
            "a request without outcome"
        );
        assert!(going_away >= 1, "the clients saw the goaway");
        replied
    }
}

/// Waits until `outcomes` counts more than `replies` replies.
async fn replies_past(outcomes: &Outcomes, replies: usize) {
    for _ in 0..TRIES {
        if outcomes.counts().1 > replies {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("no replies past {replies}: {:?}", outcomes.counts());
}

/// `GET {path}` on the metrics address: status and body.
async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    http_get(&address.to_string(), path).await.unwrap()
}

/// Asks `/readyz` until it answers 503; returns its body.
async fn until_unready(address: SocketAddr) -> String {
    for _ in 0..TRIES {
        let (status, body) = get(address, "/readyz").await;
        if status == 503 {
            return body;
        }
        assert_eq!((status, body.as_str()), (200, "ready\n"));
        tokio::time::sleep(POLL).await;
    }
    panic!("/readyz never answered 503");
}

fn plain_config() -> NetworkConfig {
    let mut config = NetworkConfig::default();
    config.security.mode = "plain".parse().unwrap();
    config.client.auto_reconnect = false;
    // A request without an outcome shows as a timeout, an unclear error.
    config.client.response_timeout = Duration::from_secs(10);
    config
}

/// Starts a plain server with a metrics address and a `SLOW` handler
/// (20 ms); returns its handle, metrics address, a client configuration
/// that reaches it and the task running it.
async fn start_server(
    drain_delay: Duration,
) -> (
    ServerHandle,
    SocketAddr,
    NetworkConfig,
    tokio::task::JoinHandle<()>,
) {
    let mut config = plain_config();
    config.server.address = "127.0.0.1:0".into();
    config.server.metrics_address = Some("127.0.0.1:0".into());
    config.server.drain_delay = drain_delay;
    config.server.shutdown_timeout = Duration::from_secs(2);
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register_async("SLOW", |msg| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok(msg)
    });
    let server = Server::bind(config.clone(), dispatcher).await.unwrap();
    let metrics = server.metrics_addr().unwrap();
    config.client.address = server.local_addr();
    let handle = server.handle();
    let task = tokio::spawn(async move { server.run().await.unwrap() });
    (handle, metrics, config, task)
}

fn slow() -> Message {
    Message::custom("SLOW", b"in flight".to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_server_serves_until_its_goaway_and_every_request_ends_clearly() {
    tokio::time::timeout(LIMIT, drain_in_process())
        .await
        .unwrap();
}

async fn drain_in_process() {
    // Longer than the test: the drain ends with end_drain, so that what
    // happens during it is checked without a race against a timer.
    let (handle, metrics, config, server) = start_server(Duration::from_secs(600)).await;
    assert_eq!(get(metrics, "/readyz").await, (200, "ready\n".into()));
    assert!(handle.is_ready());
    let load = Load::start(&config, 3, &slow()).await;
    let outcomes = load.outcomes.clone();
    replies_past(&outcomes, 100).await;

    let stopping = tokio::spawn({
        let handle = handle.clone();
        async move { handle.shutdown(None).await }
    });
    assert_eq!(until_unready(metrics).await, "draining\n");
    assert!(!handle.is_ready());
    assert_eq!(get(metrics, "/healthz").await, (200, "ok\n".into()));
    // Established clients keep getting replies, and a new one gets in.
    let (_, replied, ..) = outcomes.counts();
    replies_past(&outcomes, replied + 100).await;
    let newcomer = Client::connect(config.clone()).await.unwrap();
    assert_eq!(newcomer.request(&slow()).await.unwrap(), slow());
    let (_, _, going_away, closed) = outcomes.counts();
    assert_eq!((going_away, closed), (0, 0), "no error while draining");
    assert_eq!(get(metrics, "/readyz").await.1, "draining\n");

    handle.end_drain();
    let replied = load.finish("drain").await;
    stopping.await.unwrap();
    server.await.unwrap();
    // Every request the server took was answered, and the answer arrived.
    let served = Samples::parse(&handle.metrics().unwrap());
    let server_replies = served.get(&format!("{REQUESTS}{{outcome=\"reply\"}}"));
    assert_eq!(
        server_replies,
        Some((replied + 1) as f64),
        "newcomer included"
    );
    assert!(!handle.is_ready());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_delay_ends_by_itself_then_the_goaway_follows() {
    let case = async {
        let delay = Duration::from_millis(300);
        let (handle, metrics, config, server) = start_server(delay).await;
        let client = Client::connect(config).await.unwrap();
        assert_eq!(client.request(&slow()).await.unwrap(), slow());
        let started = Instant::now();
        let stopping = tokio::spawn({
            let handle = handle.clone();
            async move { handle.shutdown(None).await }
        });
        assert_eq!(until_unready(metrics).await, "draining\n");
        stopping.await.unwrap();
        server.await.unwrap();
        assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
        let error = client.request(&slow()).await.unwrap_err();
        assert!(error.to_string().contains("going away"), "{error}");
    };
    tokio::time::timeout(LIMIT, case).await.unwrap();
}

/// Waits (at most `limit`) for `server` to exit, without holding a worker
/// thread the load needs.
async fn exit_within(server: &mut ServerProcess, limit: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(status) = server.exit_within(Duration::ZERO) {
            return Some(status);
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_then_exits_0_in_time() {
    tokio::time::timeout(LIMIT, sigterm_under_load())
        .await
        .unwrap();
}

async fn sigterm_under_load() {
    let (drain, shutdown) = (Duration::from_secs(1), Duration::from_secs(2));
    let settings = Settings::default()
        .set("server", "metrics_address", "\"127.0.0.1:0\"")
        .set("server", "drain_delay", "\"1s\"")
        .set("server", "shutdown_timeout", "\"2s\"");
    let mut server = ServerProcess::start("plain", &settings);
    let (address, metrics) = (server.addr.to_string(), server.metrics.unwrap());
    let mut config = plain_config();
    config.client.address = address;
    let echo = Message::Echo("in flight".into());
    let load = Load::start(&config, 2, &echo).await;
    let outcomes = load.outcomes.clone();
    replies_past(&outcomes, 1_000).await;
    assert_eq!(get(metrics, "/readyz").await.0, 200);

    let signalled = Instant::now();
    server.signal("TERM");
    assert_eq!(until_unready(metrics).await, "draining\n");
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    let (_, _, going_away, closed) = outcomes.counts();
    assert_eq!((going_away, closed), (0, 0), "no error while draining");

    // A bound, not a speed criterion: the server promises to be gone by then.
    let bound = drain + shutdown + Duration::from_secs(5);
    let status = exit_within(&mut server, bound).await;
    let took = signalled.elapsed();
    let messages = server.log_lines();
    let status = status.unwrap_or_else(|| panic!("still running after {bound:?}: {messages:?}"));
    assert_eq!(status.code(), Some(0), "{messages:?}");
    assert!(
        took >= drain,
        "exited {took:?} after SIGTERM, before the drain delay"
    );
    eprintln!("sigterm: exit 0 after {took:?}");
    load.finish("sigterm").await;
    let at = |wanted: &str| {
        let wanted = format!("\"message\":\"{wanted}");
        messages.iter().position(|m| m.contains(&wanted))
    };
    let (draining, goaway) = (at("draining: not ready"), at("shutting down"));
    assert!(
        draining.is_some() && draining < goaway && at("stopped") > goaway,
        "{messages:?}"
    );
}
