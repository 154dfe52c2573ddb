//! The crate's single error type.

/// Everything that can go wrong in a handshake, a record stream or a key file.
///
/// Display strings are lowercase and never contain key material or peer bytes.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Noise pattern name or token list is not one this crate can run.
    #[error("invalid or unsupported noise pattern")]
    InvalidPattern,
    /// The protocol name is not `Noise_<pattern>_25519_ChaChaPoly_SHA256` or
    /// `Noise_<pattern>_25519_AESGCM_SHA256`.
    #[error("unsupported noise protocol name")]
    UnsupportedProtocol,
    /// The crypto provider does not implement a primitive the suite needs.
    #[error("crypto provider lacks {0}")]
    MissingPrimitive(&'static str),
    /// The pattern needs a key or pre-shared key that was not supplied.
    #[error("missing {0}")]
    MissingKey(&'static str),
    /// `write_message` was called when a message was expected, or the reverse.
    #[error("handshake message out of turn")]
    OutOfTurn,
    /// The handshake is not finished yet, or is already finished.
    #[error("handshake is {0}")]
    HandshakeState(&'static str),
    /// An earlier error aborted the handshake; it cannot be continued.
    #[error("handshake already failed")]
    HandshakeFailed,
    /// A handshake message is longer than 65535 bytes.
    #[error("handshake message of {0} bytes exceeds 65535")]
    MessageTooLarge(usize),
    /// A handshake message ended before all its tokens were read.
    #[error("truncated handshake message")]
    Truncated,
    /// Authenticated decryption failed: the bytes were forged, corrupted, replayed or reordered.
    #[error("decryption failed")]
    Decrypt,
    /// The AEAD backend refused to encrypt (never happens with the built-in providers).
    #[error("encryption failed")]
    Encrypt,
    /// A Diffie-Hellman result was all zeros (the peer sent a low-order point).
    #[error("peer sent a weak public key")]
    WeakKey,
    /// The handshake payload could not be decoded.
    #[error("malformed handshake payload")]
    InvalidPayload,
    /// The handshake payload has a version this implementation does not speak.
    #[error("unsupported handshake payload version {0}")]
    UnsupportedVersion(u8),
    /// The peer's timestamp differs from the local clock by more than allowed.
    #[error("peer clock skew of {skew_ms} ms exceeds {max_ms} ms")]
    ClockSkew {
        /// Peer timestamp minus local time, in milliseconds.
        skew_ms: i64,
        /// The configured maximum, in milliseconds.
        max_ms: u64,
    },
    /// The handshake nonce was seen before: a replayed first message.
    #[error("replayed handshake nonce")]
    Replay,
    /// The peer's static key is not in the allow-list.
    #[error("peer static key is not allowed")]
    UnknownPeer,
    /// A record's length field is below the 16-byte tag length.
    #[error("record of {0} bytes is shorter than its tag")]
    RecordTooShort(u16),
    /// An earlier record failed to open (or seal); the stream is unusable.
    #[error("record stream is poisoned by an earlier error")]
    Poisoned,
    /// The record nonce counter would reach 2^64-1.
    #[error("record nonces exhausted")]
    NonceExhausted,
    /// The session configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
    /// A key file is not in the documented format.
    #[error("malformed key file: {0}")]
    KeyFile(&'static str),
    /// Reading or writing a key file failed.
    #[error("key file i/o failed")]
    Io(#[from] std::io::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = core::result::Result<T, E>;
