//! The server: listeners, connection limits, graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netproto_crypto::PublicKey;
use netproto_dispatch::{Dispatcher, ServeConfig};
use netproto_transport::{
    AcceptLimits, Accepted, ConnectionConfig, HandshakeStage, ServerSecurity,
};
use netproto_wire::PrefaceStatus;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::admission::{Admission, Eviction, Ticket};
use crate::config::{SecurityMode, ServerConfig};
use crate::metrics::{Registry, ServerMetrics};
use crate::security::server_security;
use crate::stream::Stream;
use crate::{NetworkConfig, Result};

/// Refusals in progress at most: each waits up to `server.preface_timeout`
/// for the client's preface (plus, past a handshake rate, until the address
/// may connect again, at most [`RATE_REFUSAL_DELAY`]), to answer it "busy". Past this many, a refused
/// connection is closed at once, unanswered.
const MAX_REFUSALS: usize = 1024;

/// The longest a refusal past a handshake rate waits before it is
/// answered: until the address may connect again, at most this.
const RATE_REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// How long a new connection waits on the handshake threads for its first
/// frame header ([`netproto_transport::Accepted::first_header`]) before it is
/// served without one: clients send their first request at once, and a quiet
/// one starts this much later.
const FIRST_HEADER_WAIT: Duration = Duration::from_secs(1);

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    handshake_failures: AtomicU64,
    evicted: AtomicU64,
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

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, SocketFile),
}

/// A Unix socket's file, removed when the listener goes.
#[cfg(unix)]
struct SocketFile(std::path::PathBuf);

#[cfg(unix)]
impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Listener {
    async fn bind(address: &str) -> Result<Self> {
        #[cfg(unix)]
        if let Some(path) = address.strip_prefix("unix:") {
            let path = std::path::PathBuf::from(path);
            // A stale socket file from a previous run would make bind fail.
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            let listener = tokio::net::UnixListener::bind(&path)?;
            return Ok(Self::Unix(listener, SocketFile(path)));
        }
        Ok(Self::Tcp(listen_tcp(address).await?))
    }

    /// The same listener, registered with the current runtime's driver: the
    /// sockets it accepts are registered there too.
    fn rehome(self) -> std::io::Result<Self> {
        Ok(match self {
            Self::Tcp(listener) => {
                Self::Tcp(tokio::net::TcpListener::from_std(listener.into_std()?)?)
            }
            #[cfg(unix)]
            Self::Unix(listener, file) => Self::Unix(
                tokio::net::UnixListener::from_std(listener.into_std()?)?,
                file,
            ),
        })
    }

    async fn accept(&self) -> std::io::Result<(Stream, Option<SocketAddr>)> {
        match self {
            Self::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok((Stream::Tcp(stream), Some(peer)))
            }
            #[cfg(unix)]
            Self::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                Ok((Stream::Unix(stream), None))
            }
        }
    }

    fn local_addr(&self) -> String {
        match self {
            Self::Tcp(listener) => listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string()),
            #[cfg(unix)]
            Self::Unix(_, file) => format!("unix:{}", file.0.display()),
        }
    }
}

/// Connections the kernel queues for `accept` (capped by
/// `net.core.somaxconn`). Tokio's default of 128 is too small for a burst:
/// past it the kernel drops the clients' handshakes and they retry a second
/// or more later, delaying legitimate clients and the server's own timeouts.
const LISTEN_BACKLOG: u32 = 4096;

/// As `TcpListener::bind`, with a [`LISTEN_BACKLOG`] long accept queue.
async fn listen_tcp(address: &str) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(address).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        #[cfg(not(windows))]
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
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

/// Controls a running server from elsewhere: shut it down, read its counters.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shutdown: watch::Sender<bool>,
    limit: Arc<Mutex<Option<Duration>>>,
    done: watch::Receiver<bool>,
    stats: Arc<ServerStats>,
    shutdown_timeout: Duration,
    registry: Option<Registry>,
}

impl ServerHandle {
    /// Starts a graceful shutdown and waits until the server has stopped:
    /// no new connections, a goaway to every client, requests in flight
    /// finish within `timeout` (the configured `shutdown_timeout` when
    /// `None`), then every connection is closed.
    pub async fn shutdown(&self, timeout: Option<Duration>) {
        if let Some(limit) = timeout {
            *self.limit.lock().unwrap_or_else(|e| e.into_inner()) = Some(limit);
        }
        self.shutdown.send_replace(true);
        let mut done = self.done.clone();
        let wait = async {
            while !*done.borrow_and_update() {
                if done.changed().await.is_err() {
                    break;
                }
            }
        };
        let limit = timeout.unwrap_or(self.shutdown_timeout) + Duration::from_secs(1);
        let _ = tokio::time::timeout(limit, wait).await;
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

    /// The address metrics are served on (`GET /metrics`), when
    /// `server.metrics_address` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        let (listener, _) = self.exporter.as_ref()?;
        listener.local_addr().ok()
    }

    /// The server's Noise public key, for clients to pin (Noise mode only).
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.public_key.as_ref()
    }

    /// A handle to shut the server down and read its counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shutdown: self.shutdown.clone(),
            limit: self.limit.clone(),
            done: self.done.subscribe(),
            stats: self.stats.clone(),
            shutdown_timeout: self.settings.shutdown_timeout,
            registry: self.exporter.as_ref().map(|(_, registry)| registry.clone()),
        }
    }

    /// Accepts and serves connections until [`ServerHandle::shutdown`].
    ///
    /// # Errors
    ///
    /// A configuration error before anything starts. Errors of single
    /// connections are logged, never returned.
    pub async fn run(mut self) -> Result<()> {
        let connection_config = Arc::new(self.connection.clone());
        let mut serve_config = ServeConfig::default();
        serve_config.max_in_flight = self.settings.max_in_flight;
        serve_config.request_timeout = self.settings.request_timeout;
        serve_config.metrics = self.stats.metrics.serve.clone();
        let exporter = self.exporter.take().map(|(listener, registry)| {
            if let Ok(address) = listener.local_addr() {
                tracing::info!("metrics at http://{address}/metrics");
            }
            tokio::spawn(crate::metrics::serve_http(listener, registry))
        });
        let serve_config = Arc::new(serve_config);
        let mut shutdown = self.shutdown.subscribe();
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
        let acceptor = Acceptor {
            listener,
            limits: self.settings.clone(),
            stats: self.stats.clone(),
            per_ip: Arc::default(),
            admission: Arc::new(Admission::new(&self.settings)),
            security: Arc::new(self.security.clone()),
            connection_config,
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
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                Some(established) = established_rx.recv() => {
                    let Established { accepted, guard, span } = established;
                    let shutdown = self.shutdown.subscribe();
                    let serve = serving.clone().serve(accepted, guard, shutdown);
                    tasks.spawn(serve.instrument(span));
                }
            }
        }
        // Graceful shutdown: stop accepting (the listener closes with the
        // acceptor), let connections finish.
        accepting.abort();
        let _ = accepting.await;
        drop(established_rx);
        let limit = self
            .limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or(self.settings.shutdown_timeout);
        tracing::info!(connections = tasks.len(), ?limit, "shutting down");
        let drain = async { while tasks.join_next().await.is_some() {} };
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

/// Accepts connections, applies the limits, and runs each new connection's
/// preface, handshake and first header; sends the established ones to be
/// served.
struct Acceptor {
    listener: Listener,
    limits: ServerConfig,
    stats: Arc<ServerStats>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    admission: Arc<Admission>,
    security: Arc<ServerSecurity>,
    connection_config: Arc<ConnectionConfig>,
    established: mpsc::UnboundedSender<Established>,
}

impl Acceptor {
    /// Accepts until the task is aborted; everything it starts runs on the
    /// current runtime.
    ///
    /// With `own_runtime`, the acceptor runs on a runtime of its own (the
    /// handshake threads), whose driver its listener is registered with:
    /// established sockets are detached from it on their way to the serving
    /// threads.
    async fn run(self, own_runtime: bool) {
        let mut conn_id = 0u64;
        loop {
            let (io, peer) = match self.listener.accept().await {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            conn_id += 1;
            let ip = peer.map(|p| p.ip());
            let made_room = match self.check_limits(ip) {
                Ok(made_room) => made_room,
                Err(refusal) => {
                    self.refuse(io, conn_id, peer, refusal);
                    continue;
                }
            };
            let guard = ConnectionGuard::new(self.stats.clone(), self.per_ip.clone(), ip);
            let ticket = self.admission.admit(ip);
            for eviction in made_room.into_iter().flatten() {
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                self.stats.metrics.evicted(eviction.reason());
                tracing::debug!(
                    conn_id,
                    reason = eviction.reason(),
                    "evicted a pending connection"
                );
            }
            if preface_waiting(&io) {
                ticket.progress().reached(HandshakeStage::Preface);
            }
            let id = ticket.id();
            let span = tracing::info_span!("conn", conn_id, peer = ?peer);
            let work = self.handshake(io, guard, ticket, span.clone(), own_runtime);
            let task = tokio::spawn(work.instrument(span));
            self.admission.attach(id, task.abort_handle());
        }
    }

    /// Answers a refused connection "busy" once its preface arrived (within
    /// the preface timeout) and the refusal's delay passed; closes it
    /// unanswered at once when [`MAX_REFUSALS`] are already waiting.
    fn refuse(&self, io: Stream, conn_id: u64, peer: Option<SocketAddr>, refusal: Refusal) {
        let Refusal { reason, delay } = refusal;
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.stats.metrics.refused(reason);
        tracing::debug!(conn_id, peer = ?peer, reason, "refusing connection");
        let refusing = RefusalGuard::new(self.stats.clone());
        if refusing.0.refusing.load(Ordering::Relaxed) > MAX_REFUSALS {
            return;
        }
        let mode = self.security.mode();
        let wait = self.limits.preface_timeout + delay;
        drop(tokio::spawn(async move {
            let mut io = io;
            let answer = async {
                tokio::time::sleep(delay).await;
                netproto_transport::preface::refuse(&mut io, mode, PrefaceStatus::Busy).await
            };
            let _ = tokio::time::timeout(wait, answer).await;
            drop(refusing);
        }));
    }

    /// The preface, the security handshake and the first header of one
    /// connection; an established one goes to the serving threads.
    fn handshake(
        &self,
        io: Stream,
        guard: ConnectionGuard,
        ticket: Ticket,
        span: tracing::Span,
        detach: bool,
    ) -> impl Future<Output = ()> + Send + 'static {
        let security = self.security.clone();
        let connection_config = self.connection_config.clone();
        let stats = self.stats.clone();
        let established = self.established.clone();
        let handshake_timeout = self.limits.connection_timeout;
        let limits = AcceptLimits::new(self.limits.preface_timeout, handshake_timeout);
        async move {
            // Boxed: its state is freed once done, and does not stay in the
            // task while it waits for the first header.
            let accepted = Box::pin(netproto_transport::accept_handshake_within(
                io,
                &security,
                &connection_config,
                &limits,
                ticket.progress(),
            ))
            .await;
            match &accepted {
                Ok(_) => ticket.established(),
                Err(_) => drop(ticket),
            }
            // The first frame's header is checked here too, so that garbage
            // and headers over the limit never reach the serving threads.
            let result = match accepted {
                Ok(mut accepted) => {
                    let wait = FIRST_HEADER_WAIT.min(handshake_timeout);
                    match accepted.first_header(wait).await {
                        Ok(()) => Ok(accepted),
                        Err(error) => Err((error, true)),
                    }
                }
                Err(error) => Err((error, false)),
            };
            let result = match result {
                Ok(mut accepted) if detach => match accepted.get_mut().detach() {
                    Ok(()) => Ok(accepted),
                    Err(error) => Err((error.into(), false)),
                },
                other => other,
            };
            match result {
                // The receiver is gone once the server stops accepting: the
                // connection then closes.
                Ok(accepted) => drop(established.send(Established {
                    accepted,
                    guard,
                    span,
                })),
                Err((error, at_first_header)) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    stats.metrics.handshake_failed(&error, at_first_header);
                    if at_first_header {
                        tracing::debug!(%error, "first frame header refused");
                    } else {
                        tracing::debug!(%error, "handshake failed");
                    }
                }
            }
        }
    }

    /// Applies the limits to a new connection from `ip`: the limit that
    /// refuses it, or the evictions that made room for it. At `max_pending`
    /// and at `max_connections` a pending connection that may go (see
    /// `Admission::make_room`) is evicted rather than the newcomer refused:
    /// connections that never speak cannot fill those limits against new
    /// clients. (An evicted connection's count drops as soon as its aborted
    /// task is dropped, a moment later.) The limits of one address or
    /// prefix refuse: evicting an address's own connections for it would
    /// only churn through an attacker's sockets as fast as it reconnects
    /// them.
    fn check_limits(&self, ip: Option<IpAddr>) -> Result<[Option<Eviction>; 2], Refusal> {
        if let Some((reason, wait)) = self.admission.rate_limited(ip) {
            // Answered once the address may connect again (at most
            // RATE_REFUSAL_DELAY): a client retrying at once, or an
            // attacker looping on refusals, then comes back no faster than
            // its rate, instead of churning through refusals.
            return Err(Refusal {
                reason,
                delay: wait.min(RATE_REFUSAL_DELAY),
            });
        }
        if let Some(ip) = ip {
            let count = {
                let map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
                map.get(&ip).copied().unwrap_or(0)
            };
            if count >= self.limits.max_connections_per_ip {
                return Err(Refusal::now("max_connections_per_ip"));
            }
        }
        let pending = self.admission.make_room(ip).map_err(Refusal::now)?;
        let connections =
            if self.stats.active.load(Ordering::Relaxed) >= self.limits.max_connections {
                match self.admission.evict_one() {
                    true => Some(Eviction::Connections),
                    false => return Err(Refusal::now("max_connections")),
                }
            } else {
                None
            };
        Ok([pending, connections])
    }
}

/// Whether a whole preface is already waiting on a just-accepted TCP
/// connection (peeked, not read). A client sends it at once, so it has
/// usually arrived while the connection queued for `accept`: the
/// connection then counts as past its preface from the start, before its
/// task ever runs, and a flood of newcomers cannot evict it meanwhile.
fn preface_waiting(io: &Stream) -> bool {
    use futures::FutureExt;
    let Stream::Tcp(stream) = io else {
        return false;
    };
    let mut bytes = [0; netproto_wire::PREFACE_LEN];
    matches!(
        stream.peek(&mut bytes).now_or_never(),
        Some(Ok(netproto_wire::PREFACE_LEN))
    ) && matches!(netproto_wire::Preface::parse(&bytes), Ok(Some(_)))
}

/// Why a new connection is refused, and how long before it is answered.
struct Refusal {
    reason: &'static str,
    delay: Duration,
}

impl Refusal {
    /// A refusal answered as soon as the preface arrives.
    fn now(reason: &'static str) -> Self {
        Self {
            reason,
            delay: Duration::ZERO,
        }
    }
}

/// Counts one refusal in progress while it lives.
struct RefusalGuard(Arc<ServerStats>);

impl RefusalGuard {
    fn new(stats: Arc<ServerStats>) -> Self {
        stats.refusing.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for RefusalGuard {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one connection in the server's limits while it lives.
struct ConnectionGuard {
    stats: Arc<ServerStats>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: Option<IpAddr>,
}

impl ConnectionGuard {
    fn new(
        stats: Arc<ServerStats>,
        per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
        ip: Option<IpAddr>,
    ) -> Self {
        stats.active.fetch_add(1, Ordering::Relaxed);
        stats.metrics.connection_opened();
        if let Some(ip) = ip {
            *per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(ip)
                .or_default() += 1;
        }
        Self { stats, per_ip, ip }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.stats.metrics.connection_closed();
        if let Some(ip) = self.ip {
            let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(count) = map.get_mut(&ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

/// A connection established on the handshake threads, on its way back to
/// the serving threads.
struct Established {
    accepted: Accepted<Stream>,
    guard: ConnectionGuard,
    span: tracing::Span,
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
        let serving = self.dispatcher.serve(conn, &self.serve_config, shutdown);
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

/// The threads that accept connections and run their prefaces, security
/// handshakes and first headers: a tokio runtime of its own whose threads
/// run at a lower scheduling priority (Linux), so that the work a stranger
/// can make the server do (a flood of connections, the public-key work of
/// handshakes) waits while established connections are served, instead of
/// queueing in front of their requests. Its blocking threads decompress
/// large bodies, at the same priority, one per core at most: more would
/// only take turns on the cores, and crowd the serving threads while they
/// do.
struct HandshakeRuntime(Option<tokio::runtime::Runtime>);

impl HandshakeRuntime {
    /// `threads` threads, or none (handshakes on the serving threads) for 0.
    fn start(threads: usize) -> Result<Option<Self>> {
        if threads == 0 {
            return Ok(None);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(
                std::thread::available_parallelism().map_or(threads, |n| n.get().max(threads)),
            )
            .thread_name("netproto-handshake")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(|error| {
                crate::Error::Io(std::io::Error::other(format!(
                    "cannot start the handshake threads: {error}"
                )))
            })?;
        Ok(Some(Self(Some(runtime))))
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|runtime| runtime.handle().clone())
    }
}

impl Drop for HandshakeRuntime {
    fn drop(&mut self) {
        // A runtime dropped inside another one would block; handshakes still
        // running are abandoned (their sockets close with them).
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's scheduling priority (nice 10) on Linux; does
/// nothing elsewhere, or when the system refuses.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(tid), HANDSHAKE_NICE) {
            tracing::debug!(%error, "cannot lower the handshake thread's priority");
        }
    }
}

/// The nice value of handshake threads: a tenth of the CPU share of a
/// serving thread when both want the same core.
#[cfg(target_os = "linux")]
const HANDSHAKE_NICE: i32 = 10;
