//! Accepting connections: the limits, refusals, and each new connection's
//! PROXY header (from a trusted load balancer), preface, security handshake
//! and first header, up to the point it is established and handed to the
//! serving threads.

use netproto_transport::sync::lock;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netproto_transport::{Accepted, HandshakeStage};
use netproto_wire::{PrefaceStatus, SecurityMode};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::ServerStats;
use super::admission::{Admission, Eviction, Ticket, decrement};
use super::listener::Listener;
use super::proxy::ProxyPolicy;
use super::stream::Stream;
use crate::config::ServerConfig;

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

/// Accepts connections, applies the limits, and runs each new connection's
/// preface, handshake and first header; sends the established ones to be
/// served.
pub(super) struct Acceptor {
    pub(super) listener: Listener,
    pub(super) limits: ServerConfig,
    pub(super) stats: Arc<ServerStats>,
    pub(super) per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    pub(super) admission: Arc<Admission>,
    /// Security, connection settings and the preface and handshake
    /// timeouts.
    pub(super) transport: netproto_transport::Acceptor,
    pub(super) established: mpsc::UnboundedSender<Established>,
}

impl Acceptor {
    /// Accepts until the task is aborted; everything it starts runs on the
    /// current runtime.
    ///
    /// With `own_runtime`, the acceptor runs on a runtime of its own (the
    /// handshake threads), whose driver its listener is registered with:
    /// established sockets are detached from it on their way to the serving
    /// threads.
    pub(super) async fn run(self, own_runtime: bool) {
        let proxy = ProxyPolicy::new(&self.limits).map(Arc::new);
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
            // A trusted proxy's address is not its clients': the limits of
            // addresses wait for the client's, in its PROXY header.
            let proxied = proxy.as_ref().filter(|policy| policy.trusts(peer));
            let ip = peer.map(|p| p.ip()).filter(|_| proxied.is_none());
            let made_room = match self.check_limits(ip) {
                Ok(made_room) => made_room,
                Err(refusal) => {
                    self.refuse(io, conn_id, peer, refusal, proxied.cloned());
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
            let (span, header) = match proxied {
                // `peer` is the client's, recorded once the header is read.
                Some(policy) => {
                    let client = tracing::field::Empty;
                    let span = tracing::info_span!("conn", conn_id, peer = client, proxy = ?peer);
                    (span, Some(self.header_stage(policy.clone(), peer)))
                }
                None => (tracing::info_span!("conn", conn_id, peer = ?peer), None),
            };
            let work = self.handshake(io, guard, ticket, span.clone(), own_runtime, header);
            let task = tokio::spawn(work.instrument(span));
            self.admission.attach(id, task.abort_handle());
        }
    }

    /// Answers a refused connection "busy" once its preface arrived (within
    /// the preface timeout) and the refusal's delay passed; closes it
    /// unanswered at once when [`MAX_REFUSALS`] are already waiting. A
    /// trusted proxy's connection (with its `proxied` policy) is answered
    /// after its PROXY header, within the policy's timeout, and closed
    /// unanswered without one.
    fn refuse(
        &self,
        io: Stream,
        conn_id: u64,
        peer: Option<SocketAddr>,
        refusal: Refusal,
        proxied: Option<Arc<ProxyPolicy>>,
    ) {
        count_refusal(&self.stats, refusal.reason);
        tracing::debug!(conn_id, peer = ?peer, reason = refusal.reason, "refusing connection");
        let Some(refusing) = RefusalGuard::new(self.stats.clone()) else {
            return;
        };
        let busy = self.busy();
        drop(tokio::spawn(async move {
            let mut io = io;
            if let Some(policy) = proxied
                && policy.read(&mut io).await.is_err()
            {
                return;
            }
            busy.answer(io, refusal, refusing).await;
        }));
    }

    /// How refusals are answered.
    fn busy(&self) -> Busy {
        Busy {
            mode: self.transport.security().mode(),
            preface_timeout: self.limits.preface_timeout,
        }
    }

    /// What a trusted proxy's connection from `peer` needs to read its
    /// header and be counted under its client's address.
    fn header_stage(&self, policy: Arc<ProxyPolicy>, peer: Option<SocketAddr>) -> HeaderStage {
        HeaderStage {
            policy,
            peer,
            stats: self.stats.clone(),
            per_ip: self.per_ip.clone(),
            admission: self.admission.clone(),
            max_connections_per_ip: self.limits.max_connections_per_ip,
            busy: self.busy(),
        }
    }

    /// The PROXY header (from a trusted proxy, with a `header` stage), the
    /// preface, the security handshake and the first header of one
    /// connection; an established one goes to the serving threads.
    fn handshake(
        &self,
        io: Stream,
        guard: ConnectionGuard,
        ticket: Ticket,
        span: tracing::Span,
        detach: bool,
        header: Option<HeaderStage>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let transport = self.transport.clone();
        let stats = self.stats.clone();
        let established = self.established.clone();
        let handshake_timeout = self.limits.connection_timeout;
        async move {
            let (io, guard, ticket) = match header {
                Some(stage) => match stage.run(io, guard, ticket, &span).await {
                    Some(admitted) => admitted,
                    None => return,
                },
                None => (io, guard, ticket),
            };
            // Boxed: its state is freed once done, and does not stay in the
            // task while it waits for the first header.
            let accepted = Box::pin(transport.accept_handshake(io, ticket.progress())).await;
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
        rate_limit(&self.admission, ip)?;
        if let Some(ip) = ip
            && connections_from(&self.per_ip, ip) >= self.limits.max_connections_per_ip
        {
            return Err(Refusal::now("max_connections_per_ip"));
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

/// Refuses a new connection from `ip` past its handshake rate (or its
/// prefix's). It is answered once the address may connect again (at most
/// [`RATE_REFUSAL_DELAY`]): a client retrying at once, or an attacker
/// looping on refusals, then comes back no faster than its rate, instead
/// of churning through refusals.
fn rate_limit(admission: &Admission, ip: Option<IpAddr>) -> Result<(), Refusal> {
    match admission.rate_limited(ip) {
        Some((reason, wait)) => Err(Refusal {
            reason,
            delay: wait.min(RATE_REFUSAL_DELAY),
        }),
        None => Ok(()),
    }
}

/// Connections open from `ip` now.
fn connections_from(per_ip: &Mutex<HashMap<IpAddr, usize>>, ip: IpAddr) -> usize {
    lock(per_ip).get(&ip).copied().unwrap_or(0)
}

/// Counts one refusal by `reason`.
fn count_refusal(stats: &ServerStats, reason: &'static str) {
    stats.refused.fetch_add(1, Ordering::Relaxed);
    stats.metrics.refused(reason);
}

/// A trusted proxy's connection before its PROXY header: what reading it,
/// and counting the connection under its client's address, needs.
///
/// At accept such a connection counted only in the server's totals
/// (`max_pending`, `max_connections`), as a pending connection that has
/// sent nothing, evictable like any other. Once its header names the
/// client, the limits of that address apply as they do at accept to a
/// direct connection: its handshake rate, `max_connections_per_ip`, and its
/// pending budgets; past one, it is refused "busy".
struct HeaderStage {
    policy: Arc<ProxyPolicy>,
    /// The socket's peer: the proxy, or none on a Unix socket.
    peer: Option<SocketAddr>,
    stats: Arc<ServerStats>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    admission: Arc<Admission>,
    max_connections_per_ip: usize,
    busy: Busy,
}

impl HeaderStage {
    /// Reads the header and counts the connection under the client's
    /// address it carries (the socket's, when it carries none) and records
    /// that address as the `peer` of `span`; the connection, or `None` when
    /// it was closed or refused.
    async fn run(
        self,
        mut io: Stream,
        mut guard: ConnectionGuard,
        mut ticket: Ticket,
        span: &tracing::Span,
    ) -> Option<(Stream, ConnectionGuard, Ticket)> {
        let client = match self.policy.read(&mut io).await {
            Ok(carried) => carried.or(self.peer),
            Err(error) => {
                self.stats
                    .proxy_header_errors
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.metrics.proxy_header_failed(error.reason());
                tracing::debug!(%error, "closing connection");
                return None;
            }
        };
        span.record("peer", tracing::field::debug(client));
        if let Some(ip) = client.map(|c| c.ip())
            && let Err(refusal) = self.admit(ip, &mut guard, &mut ticket)
        {
            drop((guard, ticket));
            count_refusal(&self.stats, refusal.reason);
            tracing::debug!(reason = refusal.reason, "refusing connection");
            if let Some(refusing) = RefusalGuard::new(self.stats.clone()) {
                self.busy.answer(io, refusal, refusing).await;
            }
            return None;
        }
        if preface_waiting(&io) {
            ticket.progress().reached(HandshakeStage::Preface);
        }
        Some((io, guard, ticket))
    }

    /// Applies the limits of `ip` and moves the connection's counts there.
    fn admit(
        &self,
        ip: IpAddr,
        guard: &mut ConnectionGuard,
        ticket: &mut Ticket,
    ) -> Result<(), Refusal> {
        rate_limit(&self.admission, Some(ip))?;
        if connections_from(&self.per_ip, ip) >= self.max_connections_per_ip {
            return Err(Refusal::now("max_connections_per_ip"));
        }
        ticket.rebind(ip).map_err(Refusal::now)?;
        guard.rebind(ip);
        Ok(())
    }
}

/// How refused connections are answered.
#[derive(Clone, Copy)]
struct Busy {
    mode: SecurityMode,
    preface_timeout: Duration,
}

impl Busy {
    /// Answers "busy" once the client's preface arrived (within the preface
    /// timeout) and the refusal's delay passed.
    async fn answer(self, mut io: Stream, refusal: Refusal, refusing: RefusalGuard) {
        let delay = refusal.delay;
        let answer = async {
            tokio::time::sleep(delay).await;
            netproto_transport::preface::refuse(&mut io, self.mode, PrefaceStatus::Busy).await
        };
        let _ = tokio::time::timeout(self.preface_timeout + delay, answer).await;
        drop(refusing);
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
    /// A place among the refusals in progress; `None` when
    /// [`MAX_REFUSALS`] are already waiting (the connection is then closed
    /// unanswered).
    fn new(stats: Arc<ServerStats>) -> Option<Self> {
        let waiting = stats.refusing.fetch_add(1, Ordering::Relaxed);
        let guard = Self(stats);
        (waiting < MAX_REFUSALS).then_some(guard)
    }
}

impl Drop for RefusalGuard {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one connection in the server's limits while it lives.
pub(super) struct ConnectionGuard {
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
            *lock(&per_ip).entry(ip).or_default() += 1;
        }
        Self { stats, per_ip, ip }
    }

    /// Counts the connection under `ip` from now on.
    fn rebind(&mut self, ip: IpAddr) {
        let mut map = lock(&self.per_ip);
        if let Some(old) = self.ip.replace(ip) {
            decrement(&mut map, old);
        }
        *map.entry(ip).or_default() += 1;
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        self.stats.metrics.connection_closed();
        if let Some(ip) = self.ip {
            decrement(&mut lock(&self.per_ip), ip);
        }
    }
}

/// A connection established on the handshake threads, on its way back to
/// the serving threads.
pub(super) struct Established {
    pub(super) accepted: Accepted<Stream>,
    pub(super) guard: ConnectionGuard,
    pub(super) span: tracing::Span,
}
