//! The raw Noise handshake engine, generic over handshake patterns.
//!
//! This is plain Noise (rev 34) with the `25519_ChaChaPoly_SHA256` suite, or
//! `25519_AESGCM_SHA256` through [`HandshakeBuilder::cipher`], with no
//! netproto framing or payload checks, so it interoperates with any Noise
//! implementation (snow, cacophony, ...). The netproto session layer in
//! [`session`](crate::session) is built on it.
//!
//! ```
//! use netproto_crypto::noise::{HandshakeBuilder, Pattern};
//! use netproto_crypto::{Keypair, RecordConfig};
//! use bytes::BytesMut;
//!
//! # fn main() -> Result<(), netproto_crypto::Error> {
//! # let mut rng = rand::rngs::OsRng;
//! let server_key = Keypair::generate(&mut rng);
//! let mut initiator = HandshakeBuilder::new(Pattern::xx())
//!     .local_static(Keypair::generate(&mut rng))
//!     .build_initiator(&mut rng)?;
//! let mut responder = HandshakeBuilder::new(Pattern::xx())
//!     .local_static(server_key)
//!     .build_responder(&mut rng)?;
//!
//! let (mut msg, mut payload) = (Vec::new(), Vec::new());
//! while !initiator.is_finished() {
//!     let (writer, reader) = if initiator.is_my_turn() {
//!         (&mut initiator, &mut responder)
//!     } else {
//!         (&mut responder, &mut initiator)
//!     };
//!     msg.clear();
//!     payload.clear();
//!     writer.write_message(b"", &mut msg)?;
//!     reader.read_message(&msg, &mut payload)?;
//! }
//! assert_eq!(initiator.handshake_hash(), responder.handshake_hash());
//!
//! let (mut sealer, _) = initiator.into_split(&RecordConfig::default())?;
//! let (_, mut opener) = responder.into_split(&RecordConfig::default())?;
//! let mut wire = BytesMut::new();
//! sealer.seal(b"hello", &mut wire)?;
//! assert_eq!(opener.open(&mut wire)?.as_deref(), Some(&b"hello"[..]));
//! # Ok(())
//! # }
//! ```

mod pattern;
mod protocol;
mod symmetric;

use std::collections::VecDeque;
use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

pub use self::pattern::{Pattern, Token};
pub use self::protocol::Protocol;
use self::symmetric::SymmetricState;
use crate::keys::{Keypair, PublicKey};
use crate::provider::{self, CipherAlgorithm, KEY_LEN, Provider, TAG_LEN};
use crate::record::{Opener, RecordConfig, Sealer};
use crate::{Error, Result};

/// The largest Noise message, handshake or transport.
pub const MAX_MESSAGE_LEN: usize = 65535;

/// Collects the inputs of a handshake; the only fallible step is `build_*`.
#[must_use]
#[derive(Debug)]
pub struct HandshakeBuilder {
    pattern: Pattern,
    cipher: CipherAlgorithm,
    provider: Arc<dyn Provider>,
    prologue: Vec<u8>,
    local_static: Option<Keypair>,
    remote_static: Option<PublicKey>,
    local_ephemeral: Option<Keypair>,
    remote_ephemeral: Option<PublicKey>,
    psks: Vec<Zeroizing<[u8; KEY_LEN]>>,
}

impl HandshakeBuilder {
    /// Starts a handshake of `pattern` with ChaChaPoly, the default provider
    /// and an empty prologue.
    pub fn new(pattern: Pattern) -> Self {
        Self {
            pattern,
            cipher: CipherAlgorithm::default(),
            provider: provider::default_provider(),
            prologue: Vec::new(),
            local_static: None,
            remote_static: None,
            local_ephemeral: None,
            remote_ephemeral: None,
            psks: Vec::new(),
        }
    }

    /// Starts a handshake of `protocol`'s pattern and cipher.
    pub fn from_protocol(protocol: Protocol) -> Self {
        Self::new(protocol.pattern).cipher(protocol.cipher)
    }

    /// Uses `provider` for the AEAD and hash.
    pub fn provider(mut self, provider: Arc<dyn Provider>) -> Self {
        self.provider = provider;
        self
    }

    /// Uses the Noise cipher function `cipher` (ChaChaPoly by default), both
    /// in the handshake and for the transport keys. It is part of the
    /// protocol name, so both sides must choose the same.
    pub fn cipher(mut self, cipher: CipherAlgorithm) -> Self {
        self.cipher = cipher;
        self
    }

    /// Sets the prologue: bytes both sides must agree on, hashed into the handshake.
    pub fn prologue(mut self, prologue: &[u8]) -> Self {
        self.prologue = prologue.to_vec();
        self
    }

    /// Sets the local static key pair.
    pub fn local_static(mut self, keypair: Keypair) -> Self {
        self.local_static = Some(keypair);
        self
    }

    /// Sets the peer's static public key, known in advance (pre-message `s`).
    pub fn remote_static(mut self, key: PublicKey) -> Self {
        self.remote_static = Some(key);
        self
    }

    /// Sets the peer's ephemeral public key for patterns with an `e` pre-message.
    pub fn remote_ephemeral(mut self, key: PublicKey) -> Self {
        self.remote_ephemeral = Some(key);
        self
    }

    /// Appends a 32-byte pre-shared key; `psk` tokens consume them in order.
    pub fn psk(mut self, psk: [u8; KEY_LEN]) -> Self {
        self.psks.push(Zeroizing::new(psk));
        self
    }

    /// Uses a fixed ephemeral key instead of a fresh one.
    ///
    /// Only for test vectors: reusing an ephemeral key destroys the
    /// handshake's security.
    pub fn danger_fixed_ephemeral(mut self, keypair: Keypair) -> Self {
        self.local_ephemeral = Some(keypair);
        self
    }

    /// Builds the initiator's state.
    ///
    /// # Errors
    ///
    /// [`Error::MissingKey`] if the pattern needs a key or PSK that was not
    /// given; [`Error::MissingPrimitive`] if the provider lacks the hash or
    /// the cipher.
    pub fn build_initiator<R: RngCore + CryptoRng + ?Sized>(
        self,
        rng: &mut R,
    ) -> Result<HandshakeState> {
        self.build(true, rng)
    }

    /// Builds the responder's state. Errors as [`build_initiator`](Self::build_initiator).
    ///
    /// # Errors
    ///
    /// As [`build_initiator`](Self::build_initiator).
    pub fn build_responder<R: RngCore + CryptoRng + ?Sized>(
        self,
        rng: &mut R,
    ) -> Result<HandshakeState> {
        self.build(false, rng)
    }

    fn build<R: RngCore + CryptoRng + ?Sized>(
        self,
        initiator: bool,
        rng: &mut R,
    ) -> Result<HandshakeState> {
        let Self {
            pattern,
            cipher,
            provider,
            prologue,
            local_static,
            remote_static,
            local_ephemeral,
            remote_ephemeral,
            psks,
        } = self;
        let psk_tokens = pattern
            .messages()
            .iter()
            .flatten()
            .filter(|t| **t == Token::Psk)
            .count();
        if psks.len() != psk_tokens {
            return Err(Error::MissingKey("pre-shared key"));
        }
        let (own_pre, peer_pre) = if initiator {
            (
                pattern.initiator_pre_message(),
                pattern.responder_pre_message(),
            )
        } else {
            (
                pattern.responder_pre_message(),
                pattern.initiator_pre_message(),
            )
        };
        let first_own = usize::from(!initiator);
        let sends_static = pattern
            .messages()
            .iter()
            .skip(first_own)
            .step_by(2)
            .flatten()
            .any(|t| *t == Token::S);
        if local_static.is_none() && (sends_static || own_pre.contains(&Token::S)) {
            return Err(Error::MissingKey("local static key"));
        }
        if remote_static.is_none() && peer_pre.contains(&Token::S) {
            return Err(Error::MissingKey("remote static key"));
        }
        if remote_ephemeral.is_none() && peer_pre.contains(&Token::E) {
            return Err(Error::MissingKey("remote ephemeral key"));
        }
        let ephemeral = match local_ephemeral {
            Some(keypair) => Ephemeral {
                secret: keypair.secret_bytes(),
                keypair: Some(keypair),
            },
            None => {
                let mut secret = Zeroizing::new([0u8; KEY_LEN]);
                rng.fill_bytes(secret.as_mut());
                Ephemeral {
                    secret,
                    keypair: None,
                }
            }
        };
        // Refuse a missing cipher now rather than in the middle of the handshake.
        provider::cipher(provider.as_ref(), cipher, &[0; KEY_LEN])?;
        let name = protocol::protocol_name(&pattern, cipher);
        let mut symmetric = SymmetricState::new(provider, cipher, &name)?;
        symmetric.mix_hash(&prologue);
        let mut state = HandshakeState {
            symmetric,
            s: local_static,
            e: ephemeral,
            rs: remote_static,
            re: remote_ephemeral,
            psks: psks.into(),
            psk_mode: psk_tokens > 0,
            messages: pattern.messages().to_vec(),
            next: 0,
            initiator,
            failed: false,
        };
        for (tokens, ours) in [
            (pattern.initiator_pre_message(), initiator),
            (pattern.responder_pre_message(), !initiator),
        ] {
            for token in tokens {
                let key = match (token, ours) {
                    (Token::E, true) => *state.e.keypair().public(),
                    (Token::S, true) => *state.local_static()?.public(),
                    (Token::E, false) => {
                        state.re.ok_or(Error::MissingKey("remote ephemeral key"))?
                    }
                    _ => state.rs.ok_or(Error::MissingKey("remote static key"))?,
                };
                state.symmetric.mix_hash(key.as_bytes());
                if *token == Token::E && state.psk_mode {
                    state.symmetric.mix_key(key.as_bytes())?;
                }
            }
        }
        Ok(state)
    }
}

/// The local ephemeral key pair. A generated one holds only its secret until
/// the public half is first needed: a responder that refuses the first
/// message (a replay, a stale timestamp) never pays the scalar multiplication.
struct Ephemeral {
    secret: Zeroizing<[u8; KEY_LEN]>,
    keypair: Option<Keypair>,
}

impl Ephemeral {
    fn keypair(&mut self) -> &Keypair {
        let secret = &self.secret;
        self.keypair
            .get_or_insert_with(|| Keypair::from_secret_bytes(**secret))
    }
}

/// A Noise handshake in progress (Noise `HandshakeState`).
///
/// Any error aborts the handshake: later calls return [`Error::HandshakeFailed`].
pub struct HandshakeState {
    symmetric: SymmetricState,
    s: Option<Keypair>,
    e: Ephemeral,
    rs: Option<PublicKey>,
    re: Option<PublicKey>,
    psks: VecDeque<Zeroizing<[u8; KEY_LEN]>>,
    psk_mode: bool,
    messages: Vec<Vec<Token>>,
    next: usize,
    initiator: bool,
    failed: bool,
}

impl core::fmt::Debug for HandshakeState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HandshakeState")
            .field("initiator", &self.initiator)
            .field("cipher", &self.symmetric.algorithm())
            .field("next_message", &self.next)
            .field("messages", &self.messages.len())
            .field("remote_static", &self.rs)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl HandshakeState {
    /// Whether this side started the handshake.
    pub const fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// The Noise cipher function of this handshake and its transport keys.
    pub const fn cipher(&self) -> CipherAlgorithm {
        self.symmetric.algorithm()
    }

    /// Whether every handshake message has been written or read.
    pub fn is_finished(&self) -> bool {
        self.next >= self.messages.len()
    }

    /// Whether the next handshake message is ours to write.
    pub fn is_my_turn(&self) -> bool {
        !self.is_finished() && self.next.is_multiple_of(2) == self.initiator
    }

    /// Index of the next handshake message, from 0.
    pub const fn message_index(&self) -> usize {
        self.next
    }

    /// The handshake hash `h`: final and identical on both sides once finished,
    /// so it can bind the session to a higher-level authentication.
    pub fn handshake_hash(&self) -> &[u8; KEY_LEN] {
        self.symmetric.handshake_hash()
    }

    /// The peer's static key, once known (given in advance or received).
    pub const fn remote_static(&self) -> Option<&PublicKey> {
        self.rs.as_ref()
    }

    fn local_static(&self) -> Result<&Keypair> {
        self.s.as_ref().ok_or(Error::MissingKey("local static key"))
    }

    /// Refuses a call that does not fit the state, without aborting.
    pub(crate) fn check(&self, writing: bool) -> Result<()> {
        if self.failed {
            Err(Error::HandshakeFailed)
        } else if self.is_finished() {
            Err(Error::HandshakeState("finished"))
        } else if self.is_my_turn() != writing {
            Err(Error::OutOfTurn)
        } else {
            Ok(())
        }
    }

    /// Writes the next handshake message carrying `payload`, appending it to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfTurn`] if it is the peer's turn (the state is unchanged);
    /// [`Error::MessageTooLarge`] if the message would exceed 65535 bytes.
    pub fn write_message(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.check(true)?;
        if payload.len() > MAX_MESSAGE_LEN {
            return Err(Error::MessageTooLarge(payload.len()));
        }
        let start = out.len();
        let result = self
            .write_tokens(payload, out)
            .and_then(|()| match out.len() - start {
                len if len > MAX_MESSAGE_LEN => Err(Error::MessageTooLarge(len)),
                _ => Ok(()),
            });
        self.finish_step(result, out, start)
    }

    /// Reads the next handshake message, appending its payload to `payload`.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfTurn`] if it is our turn (the state is unchanged);
    /// [`Error::Decrypt`], [`Error::Truncated`], [`Error::WeakKey`] or
    /// [`Error::MessageTooLarge`] for a bad message, which aborts the handshake.
    pub fn read_message(&mut self, message: &[u8], payload: &mut Vec<u8>) -> Result<()> {
        self.check(false)?;
        let start = payload.len();
        let result = if message.len() > MAX_MESSAGE_LEN {
            Err(Error::MessageTooLarge(message.len()))
        } else {
            self.read_tokens(message, payload)
        };
        self.finish_step(result, payload, start)
    }

    fn finish_step(&mut self, result: Result<()>, buf: &mut Vec<u8>, start: usize) -> Result<()> {
        match result {
            Ok(()) => {
                self.next += 1;
                Ok(())
            }
            Err(err) => {
                self.failed = true;
                buf.truncate(start);
                Err(err)
            }
        }
    }

    fn tokens(&self) -> Result<Vec<Token>> {
        self.messages
            .get(self.next)
            .cloned()
            .ok_or(Error::HandshakeState("finished"))
    }

    fn write_tokens(&mut self, payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
        for token in self.tokens()? {
            match token {
                Token::E => {
                    let public = *self.e.keypair().public();
                    out.extend_from_slice(public.as_bytes());
                    self.mix_ephemeral(&public)?;
                }
                Token::S => {
                    let public = *self.local_static()?.public();
                    self.symmetric.encrypt_and_hash(public.as_bytes(), out)?;
                }
                Token::Psk => self.mix_psk()?,
                dh => self.mix_dh(dh)?,
            }
        }
        self.symmetric.encrypt_and_hash(payload, out)
    }

    fn read_tokens(&mut self, message: &[u8], payload: &mut Vec<u8>) -> Result<()> {
        let mut rest = message;
        for token in self.tokens()? {
            match token {
                Token::E => {
                    let (key, tail) = rest
                        .split_first_chunk::<KEY_LEN>()
                        .ok_or(Error::Truncated)?;
                    rest = tail;
                    let key = PublicKey::from_bytes(*key);
                    self.re = Some(key);
                    self.mix_ephemeral(&key)?;
                }
                Token::S => {
                    let len = if self.symmetric.has_key() {
                        KEY_LEN + TAG_LEN
                    } else {
                        KEY_LEN
                    };
                    let (sealed, tail) = rest.split_at_checked(len).ok_or(Error::Truncated)?;
                    rest = tail;
                    let mut key = Vec::with_capacity(KEY_LEN);
                    self.symmetric.decrypt_and_hash(sealed, &mut key)?;
                    let key: [u8; KEY_LEN] = key.try_into().map_err(|_| Error::Truncated)?;
                    self.rs = Some(PublicKey::from_bytes(key));
                }
                Token::Psk => self.mix_psk()?,
                dh => self.mix_dh(dh)?,
            }
        }
        self.symmetric.decrypt_and_hash(rest, payload)
    }

    fn mix_ephemeral(&mut self, key: &PublicKey) -> Result<()> {
        self.symmetric.mix_hash(key.as_bytes());
        if self.psk_mode {
            self.symmetric.mix_key(key.as_bytes())?;
        }
        Ok(())
    }

    fn mix_psk(&mut self) -> Result<()> {
        let psk = self
            .psks
            .pop_front()
            .ok_or(Error::MissingKey("pre-shared key"))?;
        self.symmetric.mix_key_and_hash(psk.as_ref())
    }

    fn mix_dh(&mut self, token: Token) -> Result<()> {
        let missing_rs = Error::MissingKey("remote static key");
        let (ours_ephemeral, theirs_ephemeral) = match (token, self.initiator) {
            (Token::Ee, _) => (true, true),
            (Token::Es, true) | (Token::Se, false) => (true, false),
            (Token::Es, false) | (Token::Se, true) => (false, true),
            _ => (false, false),
        };
        let remote = if theirs_ephemeral { self.re } else { self.rs };
        let remote = remote.ok_or(missing_rs)?;
        let local = if ours_ephemeral {
            self.e.keypair()
        } else {
            self.local_static()?
        };
        let shared = local
            .secret()
            .diffie_hellman(&x25519_dalek::PublicKey::from(*remote.as_bytes()));
        if !shared.was_contributory() {
            return Err(Error::WeakKey);
        }
        self.symmetric.mix_key(shared.as_bytes())
    }

    /// Finishes the handshake (Noise `Split()`) into a record sealer for our
    /// direction and an opener for the peer's.
    ///
    /// In one-way patterns only the initiator's sealer and the responder's
    /// opener are meaningful.
    ///
    /// # Errors
    ///
    /// [`Error::HandshakeState`] if messages remain; [`Error::HandshakeFailed`]
    /// after an error.
    pub fn into_split(self, config: &RecordConfig) -> Result<(Sealer, Opener)> {
        if self.failed {
            return Err(Error::HandshakeFailed);
        }
        if !self.is_finished() {
            return Err(Error::HandshakeState("not finished"));
        }
        let keys = self.symmetric.split()?;
        let [initiator_key, responder_key] = &*keys;
        let (send, receive) = if self.initiator {
            (initiator_key, responder_key)
        } else {
            (responder_key, initiator_key)
        };
        let provider = self.symmetric.provider();
        let cipher = self.symmetric.algorithm();
        Ok((
            Sealer::from_key_with_cipher(Arc::clone(provider), cipher, send, config)?,
            Opener::from_key_with_cipher(Arc::clone(provider), cipher, receive, config)?,
        ))
    }
}

#[cfg(test)]
mod tests;
