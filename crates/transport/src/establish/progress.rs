//! How far an accepted connection got, and the limits on the way.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::DEFAULT_HANDSHAKE_TIMEOUT;

/// How long each stage of a server-side handshake may take: see
/// [`AcceptorBuilder::limits`](crate::AcceptorBuilder::limits).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptLimits {
    /// Time from the start for the client's whole preface. A client sends
    /// it at once, so this can be short: a connection that sends nothing
    /// then costs its socket for this long at most.
    pub preface_timeout: Duration,
    /// Time from the start for the preface and the whole security
    /// handshake; at least `preface_timeout` (the shorter one wins).
    pub handshake_timeout: Duration,
}

impl Default for AcceptLimits {
    fn default() -> Self {
        Self {
            preface_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl AcceptLimits {
    /// Both limits.
    pub fn new(preface_timeout: Duration, handshake_timeout: Duration) -> Self {
        Self {
            preface_timeout,
            handshake_timeout,
        }
    }
}

/// How far a server-side handshake got, in order: a server that must drop
/// a connection that is not established yet drops one of the least
/// advanced (a silent socket before a client that is mid-handshake).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HandshakeStage {
    /// Connected; the client's preface is not complete yet.
    Connected,
    /// The preface arrived and was accepted; in Noise mode the client's
    /// first handshake message is not complete yet.
    Preface,
    /// Noise: the client's first handshake message arrived and was valid
    /// (not a replay, within the clock-skew window); the server has
    /// answered it or is about to.
    Handshake,
}

/// Where [`Acceptor::accept_handshake`](crate::Acceptor::accept_handshake)
/// reports the [`HandshakeStage`] it has reached and when, for another task
/// to read at any time (two atomics).
#[derive(Debug)]
pub struct HandshakeProgress {
    stage: AtomicU8,
    /// When the stage was last reached: microseconds since [`base`].
    at: AtomicU64,
}

/// The instant progress times count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn micros_since_base(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_micros()).unwrap_or(u64::MAX)
}

impl Default for HandshakeProgress {
    /// [`HandshakeStage::Connected`], now.
    fn default() -> Self {
        Self {
            stage: AtomicU8::new(0),
            at: AtomicU64::new(micros_since_base(Instant::now())),
        }
    }
}

impl HandshakeProgress {
    /// The stage reached so far.
    pub fn stage(&self) -> HandshakeStage {
        match self.stage.load(Ordering::Relaxed) {
            0 => HandshakeStage::Connected,
            1 => HandshakeStage::Preface,
            _ => HandshakeStage::Handshake,
        }
    }

    /// When the handshake last progressed: when it reached its stage (for
    /// [`HandshakeStage::Connected`], when this was created).
    pub fn progressed_at(&self) -> Instant {
        base() + Duration::from_micros(self.at.load(Ordering::Relaxed))
    }

    /// Records that the handshake reached `stage` now; a stage never moves
    /// back, and reaching it again changes nothing.
    pub fn reached(&self, stage: HandshakeStage) {
        let value = match stage {
            HandshakeStage::Connected => 0,
            HandshakeStage::Preface => 1,
            HandshakeStage::Handshake => 2,
        };
        if self.stage.fetch_max(value, Ordering::Relaxed) < value {
            self.at
                .store(micros_since_base(Instant::now()), Ordering::Relaxed);
        }
    }
}
