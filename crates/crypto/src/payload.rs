//! The netproto handshake payload and capability negotiation.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The payload version this crate writes and accepts.
pub const PAYLOAD_VERSION: u8 = 1;
/// Largest encoded payload: 1 + 10 + 16 + 5 + 1 bytes.
pub const MAX_PAYLOAD_LEN: usize = 33;
/// Default [`Capabilities::max_frame_len`]: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// A set of compression algorithms, as a bitmask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CompressionSet(u8);

impl CompressionSet {
    /// No compression.
    pub const NONE: Self = Self(0);
    /// LZ4 (bit 0).
    pub const LZ4: Self = Self(1);
    /// Zstd (bit 1).
    pub const ZSTD: Self = Self(1 << 1);
    /// Every algorithm this version knows.
    pub const ALL: Self = Self(Self::LZ4.0 | Self::ZSTD.0);

    /// The set with the given bits; unknown (reserved) bits are dropped.
    pub const fn from_bits_truncate(bits: u8) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The bitmask.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every algorithm in `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The algorithms in both sets.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The algorithms in either set.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// What a side offers in its payload, and after the handshake what was agreed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The largest frame body this side accepts, in bytes. Agreed: the minimum.
    pub max_frame_len: u32,
    /// Compression algorithms this side supports. Agreed: the intersection.
    pub compression: CompressionSet,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            compression: CompressionSet::ALL,
        }
    }
}

impl Capabilities {
    /// Capabilities with the given values.
    pub const fn new(max_frame_len: u32, compression: CompressionSet) -> Self {
        Self {
            max_frame_len,
            compression,
        }
    }

    /// What two sides agree on: the smaller frame limit and the common algorithms.
    #[must_use]
    pub fn agree(&self, peer: &Self) -> Self {
        Self {
            max_frame_len: self.max_frame_len.min(peer.max_frame_len),
            compression: self.compression.intersection(peer.compression),
        }
    }
}

/// The payload each side sends in its first handshake message.
///
/// Layout (postcard, version 1), in order:
///
/// | field           | postcard type | bytes                         |
/// |-----------------|---------------|-------------------------------|
/// | `version`       | `u8`          | 1, always `0x01`              |
/// | `timestamp_ms`  | `u64`         | 1-10, unsigned LEB128 varint  |
/// | `nonce`         | `[u8; 16]`    | 16, raw                       |
/// | `max_frame_len` | `u32`         | 1-5, unsigned LEB128 varint   |
/// | `compression`   | `u8`          | 1, bitmask (bit 0 LZ4, bit 1 Zstd) |
///
/// Trailing bytes are an error; reserved compression bits are ignored.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakePayload {
    /// The sender's Unix time in milliseconds.
    pub timestamp_ms: u64,
    /// 16 random bytes, unique per handshake (replay detection).
    pub nonce: [u8; 16],
    /// The sender's capabilities.
    pub capabilities: Capabilities,
}

#[derive(Serialize, Deserialize)]
struct WireV1 {
    version: u8,
    timestamp_ms: u64,
    nonce: [u8; 16],
    max_frame_len: u32,
    compression: u8,
}

impl HandshakePayload {
    /// A payload with the given fields.
    pub const fn new(timestamp_ms: u64, nonce: [u8; 16], capabilities: Capabilities) -> Self {
        Self {
            timestamp_ms,
            nonce,
            capabilities,
        }
    }

    /// Encodes as version 1 (see [`HandshakePayload`]).
    pub fn encode(&self) -> Vec<u8> {
        let wire = WireV1 {
            version: PAYLOAD_VERSION,
            timestamp_ms: self.timestamp_ms,
            nonce: self.nonce,
            max_frame_len: self.capabilities.max_frame_len,
            compression: self.capabilities.compression.bits(),
        };
        let mut buf = [0u8; MAX_PAYLOAD_LEN];
        // The buffer fits the largest encoding, so this cannot fail.
        postcard::to_slice(&wire, &mut buf)
            .map(|used| used.to_vec())
            .unwrap_or_default()
    }

    /// Decodes a payload.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`] if the first byte is not 1;
    /// [`Error::InvalidPayload`] if it is malformed or has trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.first() {
            Some(&PAYLOAD_VERSION) => {}
            Some(&other) => return Err(Error::UnsupportedVersion(other)),
            None => return Err(Error::InvalidPayload),
        }
        let (wire, rest) =
            postcard::take_from_bytes::<WireV1>(bytes).map_err(|_| Error::InvalidPayload)?;
        if !rest.is_empty() {
            return Err(Error::InvalidPayload);
        }
        Ok(Self {
            timestamp_ms: wire.timestamp_ms,
            nonce: wire.nonce,
            capabilities: Capabilities {
                max_frame_len: wire.max_frame_len,
                compression: CompressionSet::from_bits_truncate(wire.compression),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_payload_fits() {
        let payload = HandshakePayload::new(
            u64::MAX,
            [0xff; 16],
            Capabilities::new(u32::MAX, CompressionSet::ALL),
        );
        let bytes = payload.encode();
        assert_eq!(bytes.len(), MAX_PAYLOAD_LEN);
        assert_eq!(HandshakePayload::decode(&bytes).unwrap(), payload);
    }

    #[test]
    fn malformed_payloads_are_rejected() {
        let good = HandshakePayload::new(1, [2; 16], Capabilities::default()).encode();
        assert!(matches!(
            HandshakePayload::decode(&[]),
            Err(Error::InvalidPayload)
        ));
        assert!(matches!(
            HandshakePayload::decode(&[2]),
            Err(Error::UnsupportedVersion(2))
        ));
        let mut long = good.clone();
        long.push(0);
        assert!(matches!(
            HandshakePayload::decode(&long),
            Err(Error::InvalidPayload)
        ));
        for cut in 1..good.len() {
            assert!(matches!(
                HandshakePayload::decode(&good[..cut]),
                Err(Error::InvalidPayload)
            ));
        }
    }

    #[test]
    fn reserved_compression_bits_are_ignored_and_agreement_is_min_and_intersection() {
        let mut bytes = HandshakePayload::new(1, [2; 16], Capabilities::default()).encode();
        *bytes.last_mut().unwrap() = 0xfd;
        let decoded = HandshakePayload::decode(&bytes).unwrap();
        assert_eq!(decoded.capabilities.compression, CompressionSet::LZ4);
        let a = Capabilities::new(1000, CompressionSet::ALL);
        let b = Capabilities::new(4000, CompressionSet::ZSTD);
        assert_eq!(a.agree(&b), Capabilities::new(1000, CompressionSet::ZSTD));
        assert_eq!(b.agree(&a), a.agree(&b));
    }
}
