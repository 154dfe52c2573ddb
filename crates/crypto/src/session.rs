//! The netproto secure session: Noise plus framing, payload checks and pinning.
//!
//! Handshake messages travel as a 2-byte big-endian length followed by the
//! Noise message (at most 65535 bytes). The first message of each side
//! (message 0 from the initiator, message 1 from the responder) carries a
//! [`HandshakePayload`]; later handshake messages carry an empty payload.
//! The responder rejects a timestamp outside ±[`SessionConfig::max_clock_skew_ms`]
//! of its clock and a nonce already in its [`ReplayCache`]. Both sides
//! check the peer's static key against the allow-list, if one is set, as
//! soon as it is known. See Part II of `docs/PROTOCOL.md` for the normative text.
//!
//! `read_message` consumes exactly one framed message: bytes after the last
//! handshake message stay in the input buffer and are records for the
//! [`Opener`] (an XX initiator may send records right after message 2).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rand_core::{CryptoRng, RngCore};

use crate::keys::{Keypair, PublicKey};
use crate::noise::{HandshakeBuilder, HandshakeState, Pattern};
use crate::payload::{Capabilities, HandshakePayload};
use crate::provider::{self, CipherAlgorithm, KEY_LEN, Provider};
use crate::record::{LENGTH_LEN, Opener, RecordConfig, Sealer};
use crate::replay::ReplayCache;
use crate::{Error, Result};

/// Default [`SessionConfig::max_clock_skew_ms`]: 5 seconds.
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 5_000;

/// Session tunables. Both sides must use the same `pattern`, `cipher` and `record`.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The Noise pattern; [`Pattern::xx`] by default. It needs at least two
    /// messages and no `psk` token. Non-default patterns such as IK need
    /// [`SessionBuilder::remote_static`] on the initiator.
    pub pattern: Pattern,
    /// The Noise cipher function, for the handshake and the records:
    /// [`CipherAlgorithm::ChaCha20Poly1305`] by default
    /// (`Noise_XX_25519_ChaChaPoly_SHA256`), or
    /// [`CipherAlgorithm::Aes256Gcm`] (`Noise_XX_25519_AESGCM_SHA256`), which
    /// is several times faster on CPUs with AES instructions, best with
    /// `provider::ring()`.
    ///
    /// It is part of the Noise protocol name, so peers that chose differently
    /// fail the handshake: the initiator gets [`Error::Decrypt`] reading the
    /// responder's first message.
    pub cipher: CipherAlgorithm,
    /// The responder rejects a peer timestamp further than this from its own
    /// clock, in milliseconds. Default 5,000.
    pub max_clock_skew_ms: u64,
    /// What this side offers; the session exposes what both agreed.
    pub capabilities: Capabilities,
    /// Record layer settings (rekey interval).
    pub record: RecordConfig,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            pattern: Pattern::xx(),
            cipher: CipherAlgorithm::default(),
            max_clock_skew_ms: DEFAULT_MAX_CLOCK_SKEW_MS,
            capabilities: Capabilities::default(),
            record: RecordConfig::default(),
        }
    }
}

/// Builds the [`Initiator`] or [`Responder`] of one handshake.
#[must_use]
#[derive(Debug)]
pub struct SessionBuilder {
    identity: Keypair,
    provider: Arc<dyn Provider>,
    config: SessionConfig,
    prologue: Vec<u8>,
    remote_static: Option<PublicKey>,
    allowed_peers: Option<HashSet<PublicKey>>,
}

impl SessionBuilder {
    /// Starts a builder for a node whose static key is `identity`.
    pub fn new(identity: Keypair) -> Self {
        Self {
            identity,
            provider: provider::default_provider(),
            config: SessionConfig::default(),
            prologue: Vec::new(),
            remote_static: None,
            allowed_peers: None,
        }
    }

    /// Uses `provider` for the AEAD and hash.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = provider;
        self
    }

    /// Replaces the configuration.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the prologue: the connection preface both sides saw. A different
    /// prologue on either side makes the handshake fail.
    pub fn prologue(mut self, prologue: &[u8]) -> Self {
        self.prologue = prologue.to_vec();
        self
    }

    /// The responder's static key, known in advance (needed by IK initiators).
    pub fn remote_static(mut self, key: PublicKey) -> Self {
        self.remote_static = Some(key);
        self
    }

    /// Accepts only peers whose static key is in `keys` (pinning).
    ///
    /// Without an allow-list any static key is accepted, which with XX means
    /// an active attacker can sit in the middle: read
    /// [`Session::peer_static`] and check it yourself (trust on first use).
    pub fn allowed_peers(mut self, keys: impl IntoIterator<Item = PublicKey>) -> Self {
        self.allowed_peers = Some(keys.into_iter().collect());
        self
    }

    /// Builds the side that sends the first message (the connecting side).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the pattern does not fit a session,
    /// [`Error::MissingKey`] if it needs a key not given, [`Error::UnknownPeer`]
    /// if the given remote key is not allowed, [`Error::MissingPrimitive`] if
    /// the provider lacks the configured cipher.
    pub fn build_initiator<R: RngCore + CryptoRng + ?Sized>(
        self,
        rng: &mut R,
    ) -> Result<Initiator> {
        self.build(true, rng).map(Initiator)
    }

    /// Builds the side that answers (the accepting side).
    ///
    /// # Errors
    ///
    /// As [`build_initiator`](Self::build_initiator).
    pub fn build_responder<R: RngCore + CryptoRng + ?Sized>(
        self,
        rng: &mut R,
    ) -> Result<Responder> {
        self.build(false, rng).map(Responder)
    }

    fn build<R: RngCore + CryptoRng + ?Sized>(
        self,
        initiator: bool,
        rng: &mut R,
    ) -> Result<Driver> {
        let Self {
            identity,
            provider,
            config,
            prologue,
            remote_static,
            allowed_peers,
        } = self;
        if config.pattern.messages().len() < 2 {
            return Err(Error::Config("session patterns need at least two messages"));
        }
        if config.pattern.has_psk() {
            return Err(Error::Config("psk patterns are not supported by sessions"));
        }
        let mut builder = HandshakeBuilder::new(config.pattern.clone())
            .cipher(config.cipher)
            .provider(provider)
            .prologue(&prologue)
            .local_static(identity);
        if let Some(key) = remote_static {
            builder = builder.remote_static(key);
        }
        let noise = if initiator {
            builder.build_initiator(rng)?
        } else {
            builder.build_responder(rng)?
        };
        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let driver = Driver {
            noise,
            config,
            nonce,
            allowed_peers,
            peer_payload: None,
            failed: false,
            scratch: Vec::new(),
        };
        driver.check_peer()?;
        Ok(driver)
    }
}

/// State shared by both roles.
struct Driver {
    noise: HandshakeState,
    config: SessionConfig,
    nonce: [u8; 16],
    allowed_peers: Option<HashSet<PublicKey>>,
    peer_payload: Option<HandshakePayload>,
    failed: bool,
    scratch: Vec<u8>,
}

impl Driver {
    fn guard<T>(&mut self, result: Result<T>) -> Result<T> {
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn check_peer(&self) -> Result<()> {
        match (&self.allowed_peers, self.noise.remote_static()) {
            (Some(allowed), Some(key)) if !allowed.contains(key) => Err(Error::UnknownPeer),
            _ => Ok(()),
        }
    }

    /// Refuses calls that do not fit the state, without aborting the handshake.
    fn check_turn(&self, writing: bool) -> Result<()> {
        if self.failed {
            Err(Error::HandshakeFailed)
        } else {
            self.noise.check(writing)
        }
    }

    fn write(&mut self, now_ms: u64, out: &mut BytesMut) -> Result<()> {
        self.check_turn(true)?;
        let payload = if self.noise.message_index() < 2 {
            HandshakePayload::new(now_ms, self.nonce, self.config.capabilities).encode()
        } else {
            Vec::new()
        };
        self.scratch.clear();
        let written = self.noise.write_message(&payload, &mut self.scratch);
        self.guard(written)?;
        let len = u16::try_from(self.scratch.len())
            .map_err(|_| Error::MessageTooLarge(self.scratch.len()));
        let len = self.guard(len)?;
        out.reserve(LENGTH_LEN + self.scratch.len());
        out.put_u16(len);
        out.extend_from_slice(&self.scratch);
        Ok(())
    }

    /// Reads one framed message if complete; returns the peer's payload if it carried one.
    fn read(&mut self, input: &mut BytesMut) -> Result<Option<Option<HandshakePayload>>> {
        self.check_turn(false)?;
        let Some(header) = input.first_chunk::<LENGTH_LEN>() else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes(*header));
        if input.len() < LENGTH_LEN + len {
            return Ok(None);
        }
        let frame = input.split_to(LENGTH_LEN + len);
        let index = self.noise.message_index();
        let result = self.read_frame(frame.get(LENGTH_LEN..).unwrap_or_default(), index);
        self.guard(result).map(Some)
    }

    fn read_frame(&mut self, message: &[u8], index: usize) -> Result<Option<HandshakePayload>> {
        self.scratch.clear();
        self.noise.read_message(message, &mut self.scratch)?;
        self.check_peer()?;
        if index < 2 {
            let payload = HandshakePayload::decode(&self.scratch)?;
            self.peer_payload = Some(payload);
            Ok(Some(payload))
        } else if self.scratch.is_empty() {
            Ok(None)
        } else {
            Err(Error::InvalidPayload)
        }
    }

    fn finish(self) -> Result<Session> {
        if self.failed {
            return Err(Error::HandshakeFailed);
        }
        if !self.noise.is_finished() {
            return Err(Error::HandshakeState("not finished"));
        }
        let peer_static = self.noise.remote_static().copied();
        if self.allowed_peers.is_some() && peer_static.is_none() {
            return Err(Error::UnknownPeer);
        }
        let peer = self.peer_payload.ok_or(Error::InvalidPayload)?;
        let handshake_hash = *self.noise.handshake_hash();
        let (sealer, opener) = self.noise.into_split(&self.config.record)?;
        Ok(Session {
            sealer,
            opener,
            peer_static,
            capabilities: self.config.capabilities.agree(&peer.capabilities),
            handshake_hash,
        })
    }
}

impl core::fmt::Debug for Driver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Handshake")
            .field("noise", &self.noise)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

/// The methods of [`Initiator`] and [`Responder`] other than `read_message`
/// (whose inputs differ by role): both are a [`Driver`] and nothing else.
macro_rules! handshake_api {
    () => {
        /// Appends our next framed handshake message to `out`; `now_ms` is the
        /// Unix time in milliseconds, sent in our payload.
        ///
        /// # Errors
        ///
        /// [`Error::OutOfTurn`] if a message from the peer is expected.
        pub fn write_message(&mut self, now_ms: u64, out: &mut BytesMut) -> Result<()> {
            self.0.write(now_ms, out)
        }

        /// Whether the next step is ours to write.
        pub fn wants_write(&self) -> bool {
            !self.0.failed && self.0.noise.is_my_turn()
        }

        /// Whether every handshake message has been exchanged.
        pub fn is_finished(&self) -> bool {
            self.0.noise.is_finished()
        }

        /// The peer's static key, once known.
        pub fn peer_static(&self) -> Option<&PublicKey> {
            self.0.noise.remote_static()
        }

        /// The established session.
        ///
        /// # Errors
        ///
        /// [`Error::HandshakeState`] if messages remain, [`Error::HandshakeFailed`]
        /// after an error, [`Error::UnknownPeer`] if an allow-list is set but the
        /// pattern never revealed the peer's key.
        pub fn into_session(self) -> Result<Session> {
            self.0.finish()
        }
    };
}

/// The connecting side's handshake.
///
/// Drive it with [`write_message`](Self::write_message) and
/// [`read_message`](Self::read_message) while [`is_finished`](Self::is_finished)
/// is false, writing when [`wants_write`](Self::wants_write) says so, then call
/// [`into_session`](Self::into_session). Any error aborts the handshake.
#[derive(Debug)]
pub struct Initiator(Driver);

impl Initiator {
    handshake_api!();

    /// Consumes one complete framed handshake message from the front of
    /// `input`. Returns `Ok(false)`, consuming nothing, if it is incomplete.
    ///
    /// # Errors
    ///
    /// [`Error::Decrypt`] and friends for a bad message, [`Error::UnknownPeer`]
    /// if the responder's key is not allowed, [`Error::InvalidPayload`] or
    /// [`Error::UnsupportedVersion`] for a bad payload.
    pub fn read_message(&mut self, input: &mut BytesMut) -> Result<bool> {
        self.0.read(input).map(|read| read.is_some())
    }
}

/// The accepting side's handshake. See [`Initiator`] for the driving loop.
#[derive(Debug)]
pub struct Responder(Driver);

impl Responder {
    /// Consumes one complete framed handshake message from the front of
    /// `input`. Returns `Ok(false)`, consuming nothing, if it is incomplete.
    ///
    /// For the initiator's first message, `now_ms` (local Unix time in
    /// milliseconds) is compared with its timestamp and its nonce is checked
    /// against and added to `replay`, shared by all handshakes of a server.
    ///
    /// # Errors
    ///
    /// [`Error::ClockSkew`], [`Error::Replay`], [`Error::UnknownPeer`], a bad
    /// payload, or [`Error::Decrypt`] and friends for a bad message.
    pub fn read_message(
        &mut self,
        input: &mut BytesMut,
        now_ms: u64,
        replay: &mut ReplayCache,
    ) -> Result<bool> {
        let Some(payload) = self.0.read(input)? else {
            return Ok(false);
        };
        if let Some(payload) = payload {
            let checked = check_fresh(&payload, now_ms, self.0.config.max_clock_skew_ms, replay);
            self.0.guard(checked)?;
        }
        Ok(true)
    }

    handshake_api!();
}

fn check_fresh(
    payload: &HandshakePayload,
    now_ms: u64,
    max_ms: u64,
    replay: &mut ReplayCache,
) -> Result<()> {
    let skew = i128::from(payload.timestamp_ms) - i128::from(now_ms);
    if skew.unsigned_abs() > u128::from(max_ms) {
        let skew_ms = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
        return Err(Error::ClockSkew { skew_ms, max_ms });
    }
    replay.check_and_insert(&payload.nonce)
}

/// An established session: a record sealer and opener plus what the
/// handshake established.
#[derive(Debug)]
pub struct Session {
    sealer: Sealer,
    opener: Opener,
    peer_static: Option<PublicKey>,
    capabilities: Capabilities,
    handshake_hash: [u8; KEY_LEN],
}

impl Session {
    /// The peer's static key (authenticated by the handshake).
    pub const fn peer_static(&self) -> Option<&PublicKey> {
        self.peer_static.as_ref()
    }

    /// What both sides agreed: the smaller frame limit and the common
    /// compression algorithms.
    pub const fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The Noise handshake hash, identical on both sides (channel binding).
    pub const fn handshake_hash(&self) -> &[u8; KEY_LEN] {
        &self.handshake_hash
    }

    /// The AEAD protecting the records (the configured
    /// [`SessionConfig::cipher`]).
    pub const fn cipher(&self) -> CipherAlgorithm {
        self.sealer.cipher()
    }

    /// The sealer for records we send.
    pub const fn sealer(&mut self) -> &mut Sealer {
        &mut self.sealer
    }

    /// The opener for records we receive.
    pub const fn opener(&mut self) -> &mut Opener {
        &mut self.opener
    }

    /// Splits into independent halves, e.g. for a writer and a reader task.
    pub fn into_split(self) -> (Sealer, Opener) {
        (self.sealer, self.opener)
    }
}
