//! A peer's health as a pure state machine: heartbeat outcomes in, with the
//! time passed in, changes of state out. No sockets, no clock reads.

use std::fmt;
use std::time::{Duration, Instant};

/// What the heartbeats say about a peer.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Not reached yet since the cluster started.
    Joining,
    /// Connected and answering heartbeats.
    Alive,
    /// Missed `suspect_after` heartbeats in a row, or lost its connection:
    /// no new requests are balanced to it.
    Suspect,
    /// Missed `dead_after` heartbeats in a row: disconnected, probed with
    /// backoff.
    Dead,
}

impl fmt::Display for PeerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Joining => "joining",
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        })
    }
}

/// A change of a peer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The state left.
    pub(crate) from: PeerState,
    /// The state entered.
    pub(crate) to: PeerState,
}

/// What one heartbeat's outcome asks of the side that does the I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) struct Step {
    /// The change of state, if any, to tell subscribers about.
    pub(crate) transition: Option<Transition>,
    /// The peer is dead (`dead_after` misses in a row): drop its connection
    /// and probe it again after a backoff.
    pub(crate) dead: bool,
}

/// One peer's state, misses in a row, last sign of life and round trip.
///
/// Inputs: [`heartbeat_ok`](Self::heartbeat_ok),
/// [`heartbeat_missed`](Self::heartbeat_missed),
/// [`connection_lost`](Self::connection_lost) and [`seen`](Self::seen),
/// each with the time it happened. A peer is joining until first reached,
/// alive while it answers, suspect after `suspect_after` misses in a row
/// (or at once when its connection drops), dead after `dead_after` misses.
/// Only an alive peer becomes suspect: a joining or dead one stays so until
/// it answers or dies.
#[derive(Debug, Clone)]
pub(crate) struct Health {
    state: PeerState,
    since: Instant,
    last_seen: Option<Instant>,
    rtt: Option<Duration>,
    missed: u32,
    suspect_after: u32,
    dead_after: u32,
}

impl Health {
    /// A joining peer, from `now`.
    pub(crate) fn new(now: Instant, suspect_after: u32, dead_after: u32) -> Self {
        Self {
            state: PeerState::Joining,
            since: now,
            last_seen: None,
            rtt: None,
            missed: 0,
            suspect_after,
            dead_after,
        }
    }

    /// A heartbeat was answered at `now`, after `rtt`: the peer is alive.
    pub(crate) fn heartbeat_ok(&mut self, now: Instant, rtt: Duration) -> Step {
        self.rtt = Some(rtt);
        self.last_seen = Some(now);
        self.missed = 0;
        Step {
            transition: self.enter(now, PeerState::Alive),
            dead: false,
        }
    }

    /// A heartbeat went unanswered, a connection attempt failed, or the
    /// connection ended; `connected` says whether a connection remains.
    pub(crate) fn heartbeat_missed(&mut self, now: Instant, connected: bool) -> Step {
        self.missed = self.missed.saturating_add(1);
        if self.missed >= self.dead_after {
            return Step {
                transition: self.enter(now, PeerState::Dead),
                dead: true,
            };
        }
        let transition = if self.missed >= self.suspect_after || !connected {
            self.enter(now, PeerState::Suspect)
        } else {
            None
        };
        Step {
            transition,
            dead: false,
        }
    }

    /// The connection dropped at `now`: an alive peer becomes suspect.
    pub(crate) fn connection_lost(&mut self, now: Instant) -> Option<Transition> {
        self.enter(now, PeerState::Suspect)
    }

    /// A request was answered at `now`: a sign of life (no change of state).
    pub(crate) fn seen(&mut self, now: Instant) {
        self.last_seen = Some(now);
    }

    fn enter(&mut self, now: Instant, to: PeerState) -> Option<Transition> {
        let from = self.state;
        if from == to || (to == PeerState::Suspect && from != PeerState::Alive) {
            return None;
        }
        self.state = to;
        self.since = now;
        Some(Transition { from, to })
    }

    /// The current state.
    pub(crate) fn state(&self) -> PeerState {
        self.state
    }

    /// When the current state was entered.
    pub(crate) fn since(&self) -> Instant {
        self.since
    }

    /// The last sign of life.
    pub(crate) fn last_seen(&self) -> Option<Instant> {
        self.last_seen
    }

    /// The round trip of the last answered heartbeat.
    pub(crate) fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Heartbeats missed in a row.
    pub(crate) fn missed(&self) -> u32 {
        self.missed
    }
}

#[cfg(test)]
mod tests;
