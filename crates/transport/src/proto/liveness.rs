//! Liveness: when to send a heartbeat ping, when the peer counts as dead and
//! when the connection counts as idle.
//!
//! Time only enters through the `handle_*(now)` inputs; the outputs are
//! [`Liveness::poll_ping`], [`Liveness::check`] and the instants at which to
//! call them again ([`Liveness::poll_timeout`]). The connection's reader and
//! writer share one `Liveness`: the reader reports what arrives and waits
//! for [`Liveness::deadline`]; the writer reports what it writes and waits
//! for [`Liveness::ping_at`].

use std::time::{Duration, Instant};

use crate::{ConnectionConfig, Error, TimeoutKind};

/// The heartbeat and idle timers of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    /// A ping goes out after this long without writing anything.
    heartbeat: Option<Duration>,
    /// The peer is dead after this long without sending anything.
    dead_after: Option<Duration>,
    /// The connection is idle after this long without a data frame either way.
    idle: Option<Duration>,
    last_rx: Instant,
    last_tx: Instant,
    last_data: Instant,
    ping_token: u64,
}

impl Liveness {
    /// Timers for a connection established at `now`.
    pub(crate) fn new(config: &ConnectionConfig, now: Instant) -> Self {
        let heartbeat = config.heartbeat_interval;
        Self {
            heartbeat,
            dead_after: heartbeat.map(|every| every.saturating_mul(config.heartbeat_misses)),
            idle: config.idle_timeout,
            last_rx: now,
            last_tx: now,
            last_data: now,
            ping_token: 0,
        }
    }

    /// Bytes arrived from the peer (or the application released the reader,
    /// which had stopped reading: waiting for it is not the peer's silence).
    pub(crate) fn handle_rx(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// Something was written to the peer.
    pub(crate) fn handle_tx(&mut self, now: Instant) {
        self.last_tx = self.last_tx.max(now);
    }

    /// A data frame was sent or received.
    pub(crate) fn handle_data(&mut self, now: Instant) {
        self.last_data = self.last_data.max(now);
    }

    /// When a ping is due, if heartbeats are on: one interval after the last
    /// write.
    pub(crate) fn ping_at(&self) -> Option<Instant> {
        self.heartbeat.map(|every| self.last_tx + every)
    }

    /// A ping's token, if one is due at `now`; the ping counts as written.
    pub(crate) fn poll_ping(&mut self, now: Instant) -> Option<u64> {
        if self.ping_at()? > now {
            return None;
        }
        self.ping_token = self.ping_token.wrapping_add(1);
        self.last_tx = now;
        Some(self.ping_token)
    }

    /// When the connection fails unless something arrives (or, for the idle
    /// timeout, a data frame moves) first.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let dead = self.dead_after.map(|after| self.last_rx + after);
        let idle = self.idle.map(|after| self.last_data + after);
        earliest(dead, idle)
    }

    /// The next instant at which [`poll_ping`](Self::poll_ping) or
    /// [`check`](Self::check) may have something to say. The connection's
    /// writer and reader wait for its two parts, [`ping_at`](Self::ping_at)
    /// and [`deadline`](Self::deadline), each in its own task; the
    /// deterministic tests drive both sides from this.
    #[cfg(test)]
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.deadline(), self.ping_at())
    }

    /// Whether the connection is still alive at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] of kind [`TimeoutKind::Heartbeat`] when the peer
    /// sent nothing for `heartbeat_misses` intervals, or
    /// [`TimeoutKind::Idle`] when no data frame moved for `idle_timeout`.
    pub(crate) fn check(&self, now: Instant) -> Result<(), Error> {
        if let Some(after) = self.dead_after
            && now.saturating_duration_since(self.last_rx) >= after
        {
            return Err(Error::Timeout {
                kind: TimeoutKind::Heartbeat,
                after,
            });
        }
        if let Some(after) = self.idle
            && now.saturating_duration_since(self.last_data) >= after
        {
            return Err(Error::Timeout {
                kind: TimeoutKind::Idle,
                after,
            });
        }
        Ok(())
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
