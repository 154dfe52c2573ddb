//! Logging, compression, crypto and development certificates.

pub mod certs;
pub mod logging;

/// LZ4 and Zstd with hard output limits: the `netproto-compress` crate.
///
/// Compressing before encrypting lets an observer learn about the plaintext
/// from sizes (CRIME, BREACH); connections leave compression off unless it
/// is configured (`transport.compression`).
pub mod compression {
    pub use netproto_compress::*;
}

/// Static keys, the Noise handshake and record protection: the
/// `netproto-crypto` crate.
///
/// Nonces are counters (a replayed, reordered, dropped or forged record
/// ends the connection), and both sides rekey each direction every
/// [`DEFAULT_REKEY_INTERVAL`](crate::utils::crypto::record::DEFAULT_REKEY_INTERVAL)
/// records.
pub mod crypto {
    pub use netproto_crypto::*;
}
