//! Admission: what a connection that is not established yet may cost the
//! server.
//!
//! A connection is *pending* from `accept` until its preface and security
//! handshake are done. Pending connections are bounded in total, per IP
//! address and per network prefix (IPv4 /24 and IPv6 /64 by default).
//!
//! When the total is reached (or `max_connections`, with pending
//! connections among them), the newcomer is not refused: it evicts a
//! pending connection, whose task is aborted and whose socket closes at
//! once: one that has sent no whole preface if there is any, else the one
//! that has gone longest without progress (see [`eviction_rank`]). Silent
//! sockets and stalled handshakes spread over many addresses therefore only
//! evict each other, while a client that sends its preface and handshake
//! at once is past the silent ones and has progressed more recently than
//! the stalled ones.
//!
//! An address (or prefix) at its own bound is refused instead: evicting
//! its own connections would only have the server churn through an
//! attacker's sockets as fast as it reconnects them, while a refusal waits
//! for a preface (up to the preface timeout) before it closes.
//!
//! Completed handshakes are rate-limited per address and per prefix (token
//! buckets holding one second's worth), so that a flood of valid handshakes
//! from a few addresses cannot take the handshake threads from everyone
//! else: past the rate, new connections from there are refused ("busy").

use netproto_transport::sync::lock;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use netproto_transport::{HandshakeProgress, HandshakeStage};
use tokio::task::AbortHandle;

use crate::config::ServerConfig;

/// How long a handshake must have made no progress before a newcomer may
/// evict it: a client answers within a round trip, so one silent this long
/// has stalled, while one that progressed more recently is still running and
/// is left to finish (the newcomer is refused if nothing else can go).
pub(crate) const STALLED_AFTER: Duration = Duration::from_secs(1);

/// Rate buckets kept at most before full ones are forgotten.
const BUCKETS_KEPT: usize = 4096;

/// Why a pending connection was evicted: the bound that was full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// `server.max_pending`.
    Total,
    /// `server.max_connections`, with pending connections among them.
    Connections,
}

impl Eviction {
    /// The metrics label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Self::Total => "max_pending",
            Self::Connections => "max_connections",
        }
    }
}

/// The server's pending connections and handshake rates.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    total: usize,
    per_ip: usize,
    per_prefix: usize,
    ipv4_prefix_len: u8,
    ipv6_prefix_len: u8,
    /// How long a connection past its preface must have made no progress
    /// before it may be evicted: [`STALLED_AFTER`].
    stalled_after: Duration,
}

#[derive(Debug)]
struct State {
    next_id: u64,
    /// By id: ids grow with time, so the first entries are the oldest.
    pending: BTreeMap<u64, Pending>,
    per_ip: HashMap<IpAddr, usize>,
    per_prefix: HashMap<IpAddr, usize>,
    rate_ip: Buckets,
    rate_prefix: Buckets,
    /// Evicted before [`Admission::attach`] gave their task (not seen in
    /// practice: the acceptor attaches each task right after admitting it).
    unattached_evictions: Vec<u64>,
}

#[derive(Debug)]
struct Pending {
    admitted: Instant,
    ip: Option<IpAddr>,
    prefix: Option<IpAddr>,
    progress: Arc<HandshakeProgress>,
    /// The task running the handshake, once spawned.
    task: Option<AbortHandle>,
}

impl Admission {
    /// Admission with the limits of `config`.
    pub(crate) fn new(config: &ServerConfig) -> Self {
        let rate = |per_second: u32| Buckets::new(f64::from(per_second));
        Self {
            limits: Limits {
                total: config.max_pending,
                per_ip: config.max_pending_per_ip,
                per_prefix: config.max_pending_per_prefix,
                ipv4_prefix_len: config.ipv4_prefix_len,
                ipv6_prefix_len: config.ipv6_prefix_len,
                stalled_after: STALLED_AFTER,
            },
            state: Mutex::new(State {
                next_id: 0,
                pending: BTreeMap::new(),
                per_ip: HashMap::new(),
                per_prefix: HashMap::new(),
                rate_ip: rate(config.handshake_rate_per_ip),
                rate_prefix: rate(config.handshake_rate_per_prefix),
                unattached_evictions: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update leaves the maps consistent before it can panic.
        lock(&self.state)
    }

    /// The refusal reason when `ip` (or its prefix) completed handshakes
    /// faster than its rate allows, and how long until it may again.
    pub(crate) fn rate_limited(&self, ip: Option<IpAddr>) -> Option<(&'static str, Duration)> {
        let ip = ip?;
        let prefix = self.prefix(ip);
        let now = Instant::now();
        let state = self.lock();
        let ip_wait = state.rate_ip.wait(ip, now);
        let prefix_wait = state.rate_prefix.wait(prefix, now);
        if ip_wait >= prefix_wait && !ip_wait.is_zero() {
            Some(("handshake_rate_per_ip", ip_wait))
        } else if !prefix_wait.is_zero() {
            Some(("handshake_rate_per_prefix", prefix_wait))
        } else {
            None
        }
    }

    /// Makes room for a new pending connection from `ip`: the eviction
    /// made, if any, or the refusal reason. An address (or prefix) at its
    /// own budget is refused rather than let evict its own connections,
    /// which would only have the server churn through an attacker's sockets
    /// as fast as it reconnects them (its refusal waits for a preface, up
    /// to the preface timeout, like any other). At the total budget a
    /// pending connection is evicted if one may go ([`State::evict`]), and
    /// the newcomer refused if none may.
    pub(crate) fn make_room(&self, ip: Option<IpAddr>) -> Result<Option<Eviction>, &'static str> {
        let prefix = ip.map(|ip| self.prefix(ip));
        let mut state = self.lock();
        if let Some(reason) = state.full_budget(ip, prefix, &self.limits) {
            return Err(reason);
        }
        if state.pending.len() < self.limits.total {
            return Ok(None);
        }
        match state.evict(self.limits.stalled_after) {
            true => Ok(Some(Eviction::Total)),
            false => Err("max_pending"),
        }
    }

    /// Counts a new connection from `ip` as pending (after
    /// [`make_room`](Self::make_room)); returns its ticket.
    pub(crate) fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Ticket {
        let prefix = ip.map(|ip| self.prefix(ip));
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let progress = Arc::new(HandshakeProgress::default());
        if let Some(ip) = ip {
            *state.per_ip.entry(ip).or_default() += 1;
        }
        if let Some(prefix) = prefix {
            *state.per_prefix.entry(prefix).or_default() += 1;
        }
        state.pending.insert(
            id,
            Pending {
                admitted: progress.progressed_at(),
                ip,
                prefix,
                progress: progress.clone(),
                task: None,
            },
        );
        drop(state);
        Ticket {
            admission: self.clone(),
            id,
            ip,
            progress,
            done: false,
        }
    }

    /// Evicts a pending connection, as a newcomer does when `max_pending`
    /// is full; false if none may go (see [`State::evict`]).
    pub(crate) fn evict_one(&self) -> bool {
        self.lock().evict(self.limits.stalled_after)
    }

    /// Aborts the pending connections whose client has been answered
    /// nothing yet (no complete preface): at shutdown, they could only be
    /// refused, and closing them lets the shutdown end without waiting out
    /// their preface timeout. Connections further on are left to finish and
    /// be served their goaway: a client answered its preface may already
    /// have sent requests behind it.
    pub(crate) fn abort_unanswered(&self) {
        let mut state = self.lock();
        let silent: Vec<u64> = state
            .pending
            .iter()
            .filter(|(_, pending)| pending.progress.stage() == HandshakeStage::Connected)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            if let Some(Pending {
                task: Some(task), ..
            }) = state.remove(id)
            {
                task.abort();
            }
        }
    }

    /// Records the task running the handshake of ticket `id`, so that an
    /// eviction can abort it.
    pub(crate) fn attach(&self, id: u64, task: AbortHandle) {
        let mut state = self.lock();
        match state.pending.get_mut(&id) {
            Some(pending) => pending.task = Some(task),
            // Evicted before its task was known: stop it now. Otherwise the
            // handshake is already over.
            None => {
                if let Some(at) = state.unattached_evictions.iter().position(|e| *e == id) {
                    state.unattached_evictions.swap_remove(at);
                    task.abort();
                }
            }
        }
    }

    /// Connections pending now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// The network prefix `ip` belongs to, for the per-prefix limits.
    fn prefix(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = leading(u32::from(v4).into(), 32, self.limits.ipv4_prefix_len);
                IpAddr::V4(u32::try_from(bits).unwrap_or(0).into())
            }
            IpAddr::V6(v6) => {
                IpAddr::V6(leading(v6.into(), 128, self.limits.ipv6_prefix_len).into())
            }
        }
    }
}

/// The first `len` of the `width` bits of `bits`, the others cleared.
fn leading(bits: u128, width: u32, len: u8) -> u128 {
    let cleared = width.saturating_sub(u32::from(len));
    bits.checked_shr(cleared)
        .and_then(|kept| kept.checked_shl(cleared))
        .unwrap_or(0)
}

impl State {
    /// The budget of `ip` or of its `prefix` that is full, if any.
    fn full_budget(
        &self,
        ip: Option<IpAddr>,
        prefix: Option<IpAddr>,
        limits: &Limits,
    ) -> Option<&'static str> {
        if let Some(ip) = ip
            && self.per_ip.get(&ip).copied().unwrap_or(0) >= limits.per_ip
        {
            return Some("max_pending_per_ip");
        }
        if let Some(prefix) = prefix
            && self.per_prefix.get(&prefix).copied().unwrap_or(0) >= limits.per_prefix
        {
            return Some("max_pending_per_prefix");
        }
        None
    }

    /// Evicts the pending connection to lose first (see [`eviction_rank`]),
    /// of those that may go: any that has sent no whole preface, and those
    /// past it that have made no progress for `stalled_after`. False if
    /// none may.
    fn evict(&mut self, stalled_after: Duration) -> bool {
        let now = Instant::now();
        let mut victim: Option<(u64, Rank)> = None;
        for (id, pending) in &self.pending {
            if let Some((_, (false, silent_since, _))) = victim
                && pending.admitted > silent_since
            {
                // The best so far sent nothing, and every connection from
                // here on was admitted after it: none ranks before it.
                break;
            }
            let rank = eviction_rank(&pending.progress);
            let (spoke, progressed_at, _) = rank;
            if spoke && now.saturating_duration_since(progressed_at) < stalled_after {
                continue;
            }
            if victim.is_none_or(|(_, best)| rank < best) {
                victim = Some((*id, rank));
            }
        }
        let Some((id, _)) = victim else {
            return false;
        };
        if let Some(pending) = self.remove(id) {
            match pending.task {
                Some(task) => task.abort(),
                None => self.unattached_evictions.push(id),
            }
        }
        true
    }

    /// Removes a pending connection and its counts.
    fn remove(&mut self, id: u64) -> Option<Pending> {
        let pending = self.pending.remove(&id)?;
        if let Some(ip) = pending.ip {
            decrement(&mut self.per_ip, ip);
        }
        if let Some(prefix) = pending.prefix {
            decrement(&mut self.per_prefix, prefix);
        }
        Some(pending)
    }
}

/// Which pending connection a newcomer evicts first: lowest rank.
type Rank = (bool, Instant, HandshakeStage);

/// A pending connection's eviction rank: one that has sent no whole
/// preface goes before any that has (however long either waited), then
/// the one that has gone longest without progress, then the less advanced.
///
/// Not strictly the least advanced first: attackers that stall at a later
/// stage (half-open handshakes) would then evict every honest newcomer in
/// the moment before its first handshake message arrives. Not strictly the
/// longest without progress either: under a flood of silent sockets, an
/// honest client whose preface has arrived would then be evicted whenever
/// the server took longer to answer it than the flood takes to turn the
/// budget over.
fn eviction_rank(progress: &HandshakeProgress) -> Rank {
    let stage = progress.stage();
    (
        stage != HandshakeStage::Connected,
        progress.progressed_at(),
        stage,
    )
}

/// Takes one from `key`'s count, and forgets it at zero.
pub(super) fn decrement(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(count) = map.get_mut(&key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(&key);
        }
    }
}

/// One pending connection's place in [`Admission`]; gives it up when
/// dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    ip: Option<IpAddr>,
    progress: Arc<HandshakeProgress>,
    done: bool,
}

impl Ticket {
    /// Its id, for [`Admission::attach`].
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Where the handshake reports its stage.
    pub(crate) fn progress(&self) -> &HandshakeProgress {
        &self.progress
    }

    /// Moves a connection admitted without an address (a trusted proxy's,
    /// before its PROXY header) to `ip`, the client's address the header
    /// carried: from now on it counts in the pending budgets and the
    /// handshake rates of `ip` and its prefix. When one of them is full,
    /// the refusal reason, and nothing changes: those budgets refuse as
    /// they do at accept.
    pub(crate) fn rebind(&mut self, ip: IpAddr) -> Result<(), &'static str> {
        let prefix = self.admission.prefix(ip);
        let mut guard = self.admission.lock();
        let state = &mut *guard;
        if let Some(reason) = state.full_budget(Some(ip), Some(prefix), &self.admission.limits) {
            return Err(reason);
        }
        // Not pending any more if just evicted: its task is being aborted.
        if let Some(pending) = state.pending.get_mut(&self.id) {
            if let Some(old) = pending.ip.replace(ip) {
                decrement(&mut state.per_ip, old);
            }
            if let Some(old) = pending.prefix.replace(prefix) {
                decrement(&mut state.per_prefix, old);
            }
            *state.per_ip.entry(ip).or_default() += 1;
            *state.per_prefix.entry(prefix).or_default() += 1;
        }
        self.ip = Some(ip);
        Ok(())
    }

    /// The handshake completed: the connection is no longer pending, and
    /// counts against its address's and prefix's handshake rates.
    pub(crate) fn established(mut self) {
        self.done = true;
        let now = Instant::now();
        let prefix = self.ip.map(|ip| self.admission.prefix(ip));
        let mut state = self.admission.lock();
        state.remove(self.id);
        if let (Some(ip), Some(prefix)) = (self.ip, prefix) {
            state.rate_ip.take(ip, now);
            state.rate_prefix.take(prefix, now);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            self.admission.lock().remove(self.id);
        }
    }
}

/// Token buckets by address or prefix: `rate` tokens a second, holding at
/// most one second's worth.
#[derive(Debug)]
struct Buckets {
    rate: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    fn new(rate: f64) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    /// The tokens of `bucket` at `now`.
    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.rate)
    }

    /// How long until `key` has a token: zero if it has one now.
    fn wait(&self, key: IpAddr, now: Instant) -> Duration {
        let Some(bucket) = self.buckets.get(&key) else {
            return Duration::ZERO;
        };
        let missing = 1.0 - self.refilled(*bucket, now);
        if missing <= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX)
    }

    /// Takes a token from `key`. Handshakes admitted while the bucket still
    /// had a token may complete after it ran out: the bucket then goes into
    /// debt (at most one second's worth), repaid before the next admission.
    fn take(&mut self, key: IpAddr, now: Instant) {
        if self.buckets.len() >= BUCKETS_KEPT {
            // Forget the buckets that are full again: they would admit
            // exactly as a new one does.
            let rate = self.rate;
            self.buckets.retain(|_, bucket| {
                let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
                bucket.tokens + elapsed * rate < rate
            });
        }
        let tokens = match self.buckets.get(&key) {
            Some(bucket) => self.refilled(*bucket, now),
            None => self.rate,
        };
        self.buckets.insert(
            key,
            Bucket {
                tokens: (tokens - 1.0).max(-self.rate),
                at: now,
            },
        );
    }
}

#[cfg(test)]
mod tests;
