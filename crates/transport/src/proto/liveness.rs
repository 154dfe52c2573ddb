//! Liveness: when to send a heartbeat ping, when the peer counts as dead and
//! when the connection counts as idle.
//!
//! Time only enters through the `handle_*(now)` inputs; the outputs are the
//! instants at which to act ([`Heartbeat::ping_at`], [`Watchdog::deadline`])
//! and what to do then ([`Heartbeat::poll_ping`], [`Watchdog::check`]).
//! The two halves are apart because the connection's writer and reader own
//! one each, with no lock between them: the writer pings when it has written
//! nothing for an interval, the reader declares the peer dead or the
//! connection idle. The one fact they share, when a data frame was last
//! sent, the writer passes to the reader's watchdog through
//! [`Watchdog::handle_data`].

use std::time::{Duration, Instant};

use crate::{ConnectionConfig, Error, TimeoutKind};

/// The sending side's timer: a ping after an interval without writing.
#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    every: Option<Duration>,
    last_tx: Instant,
    token: u64,
}

impl Heartbeat {
    /// The heartbeat of a connection established at `now`.
    pub(crate) fn new(config: &ConnectionConfig, now: Instant) -> Self {
        Self {
            every: config.heartbeat_interval,
            last_tx: now,
            token: 0,
        }
    }

    /// Something was written to the peer.
    pub(crate) fn handle_tx(&mut self, now: Instant) {
        self.last_tx = self.last_tx.max(now);
    }

    /// When a ping is due, if heartbeats are on: one interval after the last
    /// write.
    pub(crate) fn ping_at(&self) -> Option<Instant> {
        self.every.map(|every| self.last_tx + every)
    }

    /// A ping's token, if one is due at `now`; the ping counts as written.
    pub(crate) fn poll_ping(&mut self, now: Instant) -> Option<u64> {
        if self.ping_at()? > now {
            return None;
        }
        self.token = self.token.wrapping_add(1);
        self.last_tx = now;
        Some(self.token)
    }
}

/// The receiving side's timers: the peer is dead after `heartbeat_misses`
/// intervals without a byte from it; the connection is idle after
/// `idle_timeout` without a data frame either way.
#[derive(Debug, Clone)]
pub(crate) struct Watchdog {
    dead_after: Option<Duration>,
    idle: Option<Duration>,
    last_rx: Instant,
    last_data: Instant,
}

impl Watchdog {
    /// The watchdog of a connection established at `now`.
    pub(crate) fn new(config: &ConnectionConfig, now: Instant) -> Self {
        Self {
            dead_after: config
                .heartbeat_interval
                .map(|every| every.saturating_mul(config.heartbeat_misses)),
            idle: config.idle_timeout,
            last_rx: now,
            last_data: now,
        }
    }

    /// Bytes arrived from the peer (or the application released the reader,
    /// which had stopped reading: waiting for it is not the peer's silence).
    pub(crate) fn handle_rx(&mut self, now: Instant) {
        self.last_rx = self.last_rx.max(now);
    }

    /// A data frame was received, or sent.
    pub(crate) fn handle_data(&mut self, now: Instant) {
        self.last_data = self.last_data.max(now);
    }

    /// When the connection fails unless something arrives (or, for the idle
    /// timeout, a data frame moves) first.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        let dead = self.dead_after.map(|after| self.last_rx + after);
        let idle = self.idle.map(|after| self.last_data + after);
        earliest(dead, idle)
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

/// The earlier of two optional instants.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
