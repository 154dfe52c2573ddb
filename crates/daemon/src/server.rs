//! The server: listeners, connection limits, graceful shutdown.
//!
//! - `listener`: the listening socket;
//! - `acceptor`: limits, refusals, and each new connection up to the point
//!   it is established, on the handshake threads (`handshake`) if any;
//! - `admission`: the budgets of connections not established yet;
//! - `proxy`: the PROXY protocol header of trusted load balancers;
//! - `stream`: sockets that move from the handshake threads' runtime to
//!   the serving one;
//! - here: the server, its handle and counters, and serving established
//!   connections until a graceful shutdown, after its drain delay.

mod acceptor;
mod admission;
mod handshake;
mod listener;
mod proxy;
mod stream;

use netproto_transport::sync::lock;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netproto_crypto::PublicKey;
use netproto_dispatch::{Dispatcher, ServeConfig};
use netproto_transport::{Accepted, ConnectionConfig, ServerSecurity};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use self::acceptor::{Acceptor, ConnectionGuard, Established};
use self::admission::Admission;
use self::handshake::HandshakeRuntime;
use self::listener::Listener;
use self::stream::Stream;
use crate::config::{SecurityMode, ServerConfig};
use crate::metrics::{Health, Registry, ServerMetrics};
use crate::security::server_security;
use crate::{NetworkConfig, Result};

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    handshake_failures: AtomicU64,
    evicted: AtomicU64,
    proxy_header_errors: AtomicU64,
    active: AtomicUsize,
    refusing: AtomicUsize,
    metrics: ServerMetrics,
}

impl ServerStats {
    /// Connections that completed their handshake.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections refused at a limit.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections whose preface or handshake failed or timed out.
    pub fn handshake_failures(&self) -> u64 {
        self.handshake_failures.load(Ordering::Relaxed)
    }

    /// Connections not established yet that a newcomer evicted, because a
    /// bound on pending connections was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Connections from a trusted proxy closed at their PROXY header
    /// (missing, malformed, too large, or late).
    pub fn proxy_header_errors(&self) -> u64 {
        self.proxy_header_errors.load(Ordering::Relaxed)
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A netproto server: accepts connections and serves them with a [`Dispatcher`].
pub struct Server {
    settings: ServerConfig,
    connection: ConnectionConfig,
    mode: SecurityMode,
    dispatcher: Arc<Dispatcher>,
    security: ServerSecurity,
    public_key: Option<PublicKey>,
    listener: Listener,
    /// True from the start of a shutdown: readiness fails, the drain delay runs.
    draining: watch::Sender<bool>,
    /// True once the drain delay is over: the goaway goes out.
    shutdown: watch::Sender<bool>,
    limit: Arc<Mutex<Option<Duration>>>,
    done: watch::Sender<bool>,
    stats: Arc<ServerStats>,
    exporter: Option<(tokio::net::TcpListener, Registry)>,
    handshakes: Option<HandshakeRuntime>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("address", &self.listener.local_addr())
            .finish_non_exhaustive()
    }
}

/// Controls a running server from elsewhere: shut it down, read its
/// counters and readiness.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    draining: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    limit: Arc<Mutex<Option<Duration>>>,
    done: watch::Receiver<bool>,
    stats: Arc<ServerStats>,
    shutdown_timeout: Duration,
    drain_delay: Duration,
    health: Health,
    registry: Option<Registry>,
}

impl ServerHandle {
    /// Drains the server, shuts it down gracefully and waits until it has
    /// stopped.
    ///
    /// 1. Drain: readiness fails at once ([`is_ready`](Self::is_ready) is
    ///    false, `GET /readyz` answers 503 `draining`) while the server
    ///    goes on serving as usual, new connections included, for
    ///    `server.drain_delay`, so that load balancers stop sending it new
    ///    connections first. [`end_drain`](Self::end_drain) cuts it short.
    /// 2. Graceful shutdown: no new connections, a goaway to every client,
    ///    requests in flight finish within `timeout` (the configured
    ///    `server.shutdown_timeout` when `None`), then every connection is
    ///    closed.
    ///
    /// Returns when the server has stopped, or after the drain delay plus
    /// `timeout` plus one second at most. Calling it again, or from other
    /// clones of the handle, waits for the same shutdown.
    pub async fn shutdown(&self, timeout: Option<Duration>) {
        if let Some(limit) = timeout {
            *lock(&self.limit) = Some(limit);
        }
        self.draining.send_replace(true);
        let mut done = self.done.clone();
        let wait = async {
            while !*done.borrow_and_update() {
                if done.changed().await.is_err() {
                    break;
                }
            }
        };
        let limit =
            self.drain_delay + timeout.unwrap_or(self.shutdown_timeout) + Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, wait).await;
    }

    /// Ends the drain delay of a shutdown under way: the goaway and the
    /// rest of the graceful shutdown follow at once (`netproto serve` does
    /// this on a second SIGTERM or Ctrl-C). Does nothing before
    /// [`shutdown`](Self::shutdown) has been called.
    pub fn end_drain(&self) {
        if *self.draining.borrow() {
            self.shutdown.send_replace(true);
        }
    }

    /// Whether the server takes new work: true until a
    /// [`shutdown`](Self::shutdown) begins, what `GET /readyz` on the
    /// metrics address reports.
    pub fn is_ready(&self) -> bool {
        self.health.unready().is_none()
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The server's metrics in the Prometheus text format, when it has a
    /// metrics address (`server.metrics_address`).
    pub fn metrics(&self) -> Option<String> {
        self.registry.as_ref().map(Registry::render)
    }
}

impl Server {
    /// Binds the configured address and prepares the security mode.
    ///
    /// # Errors
    ///
    /// Configuration errors (a missing key or certificate file, a bad value)
    /// and bind errors.
    pub async fn bind(config: NetworkConfig, dispatcher: Arc<Dispatcher>) -> Result<Self> {
        config.validate()?;
        let settings = config.server;
        let connection = settings.connection_config(&config.transport)?;
        let (security, public_key) = server_security(&config.security)?;
        let listener = Listener::bind(&settings.address).await?;
        let (metrics, exporter) = ServerMetrics::bind(settings.metrics_address.as_deref()).await?;
        let handshakes = HandshakeRuntime::start(settings.handshake_threads)?;
        Ok(Self {
            settings,
            connection,
            mode: config.security.mode,
            dispatcher,
            security,
            public_key,
            listener,
            draining: watch::channel(false).0,
            shutdown: watch::channel(false).0,
            limit: Arc::default(),
            done: watch::channel(false).0,
            stats: Arc::new(ServerStats {
                metrics,
                ..ServerStats::default()
            }),
            exporter,
            handshakes,
        })
    }

    /// The address the server listens on (`host:port` or `unix:path`).
    pub fn local_addr(&self) -> String {
        self.listener.local_addr()
    }

    /// The address metrics and health checks are served on (`GET /metrics`,
    /// `/healthz`, `/readyz`), when `server.metrics_address` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let (listener, _) = self.exporter.as_ref()?;
        listener.local_addr().ok()
    }

    /// The dispatcher that serves this server's messages (handlers may be
    /// added to it until the server runs, and after).
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// The server's Noise public key, for clients to pin (Noise mode only).
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.public_key.as_ref()
    }

    /// A handle to shut the server down and read its counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            draining: self.draining.clone(),
            shutdown: self.shutdown.clone(),
            limit: self.limit.clone(),
            done: self.done.subscribe(),
            stats: self.stats.clone(),
            shutdown_timeout: self.settings.shutdown_timeout,
            drain_delay: self.settings.drain_delay,
            health: self.health(),
            registry: self.exporter.as_ref().map(|(_, registry)| registry.clone()),
        }
    }

    /// What the health checks read.
    fn health(&self) -> Health {
        Health::new(self.draining.subscribe(), self.shutdown.subscribe())
    }

    /// Accepts and serves connections until [`ServerHandle::shutdown`] and
    /// its drain delay.
    ///
    /// # Errors
    ///
    /// A configuration error before anything starts. Errors of single
    /// connections are logged, never returned.
    pub async fn run(mut self) -> Result<()> {
        let limits = netproto_transport::AcceptLimits::new(
            self.settings.preface_timeout,
            self.settings.connection_timeout,
        );
        let transport =
            netproto_transport::Acceptor::builder(self.security.clone(), self.connection.clone())
                .limits(limits)
                .build()?;
        let mut serve_config = ServeConfig::default();
        serve_config.max_in_flight = self.settings.max_in_flight;
        serve_config.request_timeout = self.settings.request_timeout;
        serve_config.metrics = self.stats.metrics.serve.clone();
        let health = self.health();
        let exporter = self.exporter.take().map(|(listener, registry)| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!(
                    %address,
                    "metrics at http://{address}/metrics, health checks at /healthz and /readyz"
                );
            }
            tokio::spawn(crate::metrics::serve_http(listener, registry, health))
        });
        let serve_config = Arc::new(serve_config);
        let mut shutdown = self.shutdown.subscribe();
        let drained = drain(self.draining.subscribe(), self.settings.drain_delay);
        tokio::pin!(drained);
        let mut tasks = JoinSet::new();
        let handshakes = self.handshakes.as_ref().and_then(HandshakeRuntime::handle);
        tracing::info!(address = %self.listener.local_addr(), mode = %self.mode, "listening");
        // Connections established (and their first header checked) on the
        // handshake threads come back here to be served.
        let (established_tx, mut established_rx) = mpsc::unbounded_channel::<Established>();
        let serving = Serving {
            dispatcher: self.dispatcher.clone(),
            serve_config: serve_config.clone(),
            stats: self.stats.clone(),
            offload: handshakes.clone(),
        };
        // With handshake threads, the listener is registered with their
        // runtime's driver, and so is every socket it accepts.
        let listener = match &handshakes {
            Some(runtime) => {
                let _context = runtime.enter();
                self.listener.rehome().map_err(|error| {
                    crate::Error::Io(std::io::Error::new(
                        error.kind(),
                        format!("cannot move the listener to the handshake threads: {error}"),
                    ))
                })?
            }
            None => self.listener,
        };
        let admission = Arc::new(Admission::new(&self.settings));
        let acceptor = Acceptor {
            listener,
            limits: self.settings.clone(),
            stats: self.stats.clone(),
            per_ip: Arc::default(),
            admission: admission.clone(),
            transport,
            established: established_tx,
        };
        // Accepting, limits, prefaces, handshakes and first headers all run
        // on the handshake threads: a stranger's connection that never gets
        // established costs the serving threads nothing.
        let accepting = match &handshakes {
            Some(runtime) => runtime.spawn(acceptor.run(true)),
            None => tokio::spawn(acceptor.run(false)),
        };
        loop {
            tokio::select! {
                () = async { drop(shutdown.wait_for(|stop| *stop).await) } => break,
                () = &mut drained => break,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                Some(established) = established_rx.recv() => {
                    let Established { accepted, guard, span } = established;
                    let shutdown = self.shutdown.subscribe();
                    let serve = serving.clone().serve(accepted, guard, shutdown);
                    tasks.spawn(serve.instrument(span));
                }
            }
        }
        // Graceful shutdown. Stop accepting first (the listener closes with
        // the acceptor), so that a client reconnecting after its goaway is
        // refused rather than accepted and dropped; close the connections
        // that have been answered nothing yet; then a goaway to every
        // connection, those whose handshake finishes now included, and let
        // them finish.
        accepting.abort();
        let _ = accepting.await;
        admission.abort_unanswered();
        self.shutdown.send_replace(true);
        let limit = lock(&self.limit).unwrap_or(self.settings.shutdown_timeout);
        tracing::info!(connections = tasks.len(), ?limit, "shutting down");
        let drain = async {
            loop {
                tokio::select! {
                    Some(established) = established_rx.recv() => {
                        let Established { accepted, guard, span } = established;
                        let shutdown = self.shutdown.subscribe();
                        let serve = serving.clone().serve(accepted, guard, shutdown);
                        tasks.spawn(serve.instrument(span));
                    }
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    else => break,
                }
            }
        };
        if tokio::time::timeout(limit, drain).await.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "shutdown timeout: closing remaining connections"
            );
            tasks.shutdown().await;
        }
        if let Some(exporter) = exporter {
            exporter.abort();
            let _ = exporter.await;
        }
        self.done.send_replace(true);
        Ok(())
    }
}

/// Completes `delay` after `draining` turns true: the end of the drain.
async fn drain(mut draining: watch::Receiver<bool>, delay: Duration) {
    if draining.wait_for(|draining| *draining).await.is_err() {
        // The server holds the sender: this never happens.
        std::future::pending::<()>().await;
    }
    tracing::info!(?delay, "draining: not ready, goaway after the drain delay");
    tokio::time::sleep(delay).await;
}

/// What serving an established connection needs.
#[derive(Clone)]
struct Serving {
    dispatcher: Arc<Dispatcher>,
    serve_config: Arc<ServeConfig>,
    stats: Arc<ServerStats>,
    /// Where large decompressions run: the handshake threads, if any.
    offload: Option<tokio::runtime::Handle>,
}

impl Serving {
    /// Starts `accepted` on the current runtime and serves it until it ends.
    async fn serve(
        self,
        accepted: Accepted<Stream>,
        guard: ConnectionGuard,
        shutdown: watch::Receiver<bool>,
    ) {
        let conn = match self.offload {
            Some(runtime) => accepted.offload_to(runtime).start(),
            None => accepted.start(),
        };
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.metrics.handshake_completed();
        tracing::debug!("connection established");
        let traffic = conn.stats();
        let serving = std::pin::pin!(self.dispatcher.serve(conn, &self.serve_config, shutdown));
        match self.stats.metrics.track(traffic, serving).await {
            Ok(_) => tracing::debug!("connection closed"),
            Err(error) => {
                self.stats.metrics.connection_ended(&error);
                tracing::debug!(%error, "connection ended");
            }
        }
        drop(guard);
    }
}
