//! Sans-IO secure sessions for netproto: a Noise handshake engine, record
//! protection with counter nonces and automatic rekey, replay and clock-skew
//! checks, static identities with pinning, and a pluggable crypto provider.
//!
//! The suite is `Noise_<pattern>_25519_ChaChaPoly_SHA256`, XX by default,
//! built on x25519-dalek, chacha20poly1305, hkdf and sha2 (or ring's AEAD
//! and SHA-256 with the `ring` feature).
//!
//! Sessions can instead use Noise's AESGCM cipher,
//! `Noise_<pattern>_25519_AESGCM_SHA256`, by setting
//! [`SessionConfig::cipher`] to [`CipherAlgorithm::Aes256Gcm`] on both sides
//! (or [`noise::HandshakeBuilder::cipher`] for raw Noise). On CPUs with AES
//! instructions it is several times faster than ChaCha20-Poly1305 for bulk
//! data, especially with `provider::ring()`; the RustCrypto provider
//! implements it too, through the aes-gcm crate. The cipher is part of the
//! protocol name hashed into the handshake, so peers that disagree fail the
//! handshake instead of talking past each other.
//!
//! This crate deliberately contains no networking code, spawns no tasks and
//! never reads a clock: the caller moves bytes, passes the current Unix time
//! in milliseconds and a cryptographic RNG. Its only file access is the
//! optional key-file helpers of [`Keypair`].
//!
//! - [`session`]: the netproto handshake ([`SessionBuilder`], [`Initiator`],
//!   [`Responder`]) yielding a [`Session`].
//! - [`record`]: [`Sealer`] and [`Opener`], the two halves of a session.
//! - [`noise`]: the raw Noise engine, for interoperating with other Noise
//!   implementations.
//! - [`provider`]: the AEAD and hash backends.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use netproto_crypto::{Keypair, ReplayCache, SessionBuilder};
//!
//! # fn main() -> Result<(), netproto_crypto::Error> {
//! let mut rng = rand::rngs::OsRng;
//! let now_ms = 1_700_000_000_000; // the caller's clock
//! let server_key = Keypair::generate(&mut rng);
//! let server_public = *server_key.public();
//! let mut replay = ReplayCache::default(); // one per server
//!
//! let mut client = SessionBuilder::new(Keypair::generate(&mut rng))
//!     .prologue(b"netproto preface")
//!     .allowed_peers([server_public]) // pin the server
//!     .build_initiator(&mut rng)?;
//! let mut server = SessionBuilder::new(server_key)
//!     .prologue(b"netproto preface")
//!     .build_responder(&mut rng)?;
//!
//! let (mut to_server, mut to_client) = (BytesMut::new(), BytesMut::new());
//! client.write_message(now_ms, &mut to_server)?; // -> e, payload
//! server.read_message(&mut to_server, now_ms, &mut replay)?;
//! server.write_message(now_ms, &mut to_client)?; // <- e, ee, s, es, payload
//! client.read_message(&mut to_client)?;
//! client.write_message(now_ms, &mut to_server)?; // -> s, se
//! server.read_message(&mut to_server, now_ms, &mut replay)?;
//!
//! let client = client.into_session()?;
//! let server = server.into_session()?;
//! assert_eq!(client.peer_static(), Some(&server_public));
//!
//! let (mut sealer, _) = client.into_split();
//! let (_, mut opener) = server.into_split();
//! let mut wire = BytesMut::new();
//! sealer.seal(b"frame one", &mut wire)?;
//! assert_eq!(opener.open(&mut wire)?.as_deref(), Some(&b"frame one"[..]));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod error;
mod keys;
pub mod noise;
mod payload;
pub mod provider;
pub mod record;
mod replay;
pub mod session;

#[cfg(fuzzing)]
pub mod fuzzing;

pub use crate::error::{Error, Result};
pub use crate::keys::{KEY_FILE_HEADER, Keypair, PublicKey};
pub use crate::payload::{
    Capabilities, CompressionSet, DEFAULT_MAX_FRAME_LEN, HandshakePayload, MAX_PAYLOAD_LEN,
    PAYLOAD_VERSION,
};
pub use crate::provider::{CipherAlgorithm, Provider};
pub use crate::record::{Opener, RecordConfig, Sealer};
pub use crate::replay::{DEFAULT_REPLAY_CAPACITY, ReplayCache};
pub use crate::session::{Initiator, Responder, Session, SessionBuilder, SessionConfig};
