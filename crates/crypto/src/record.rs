//! Transport records: counter nonces, coalescing, spanning and automatic rekey.
//!
//! A record is a 2-byte big-endian length `L` (16 ≤ `L` ≤ 65535) followed by
//! `L` bytes of AEAD ciphertext and tag, which is exactly one Noise transport
//! message. The AEAD is the session's [`CipherAlgorithm`]: ChaCha20-Poly1305
//! by default, or AES-256-GCM. The plaintext of the records is the frame byte
//! stream: [`Sealer::seal`] packs everything it is given into as few records
//! as possible (one AEAD call per record) and [`Opener::open`] decrypts in
//! place and returns zero-copy [`Bytes`].
//!
//! Nonces count records from 0 in each direction. Every
//! [`RecordConfig::rekey_interval`] records, both sides replace the key of
//! that direction with Noise `Rekey()`; the nonce keeps counting. Nonce
//! 2^64-1 is never used.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::provider::{self, Cipher, CipherAlgorithm, KEY_LEN, Provider, TAG_LEN};
use crate::{Error, Result};

/// Bytes of the length prefix.
pub const LENGTH_LEN: usize = 2;
/// Largest record body (ciphertext plus tag).
pub const MAX_RECORD_LEN: usize = 65535;
/// Largest plaintext in one record.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD_LEN - TAG_LEN;
/// Default [`RecordConfig::rekey_interval`]: 2^20 records.
pub const DEFAULT_REKEY_INTERVAL: u64 = 1 << 20;

/// Record-layer settings. Both sides must use the same values.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// Records per key in each direction before an automatic Noise `Rekey()`;
    /// `0` never rekeys.
    ///
    /// The default, 2^20 (1,048,576), bounds the data under one key to 64 GiB
    /// of full records, so a key that leaks exposes at most that much of a
    /// long-lived connection (and nothing sent before the previous rekey),
    /// while the cost (one 32-byte AEAD call and a key setup per 2^20
    /// records) is immeasurable. It is far below ChaCha20-Poly1305's own
    /// limits, which a 64-bit counter nonce could not reach anyway. For
    /// AES-256-GCM it also bounds the data under one key to 2^32 AES blocks,
    /// keeping GCM's distinguishing advantage near 2^-64; with AES-256-GCM,
    /// do not turn rekeying off on long-lived connections.
    pub rekey_interval: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            rekey_interval: DEFAULT_REKEY_INTERVAL,
        }
    }
}

/// The state shared by both directions: key, nonce counter, rekey schedule.
struct Direction {
    provider: Arc<dyn Provider>,
    algorithm: CipherAlgorithm,
    cipher: Box<dyn Cipher>,
    nonce: u64,
    rekey_interval: u64,
    poisoned: bool,
}

impl Direction {
    fn new(
        provider: Arc<dyn Provider>,
        algorithm: CipherAlgorithm,
        key: &[u8; KEY_LEN],
        config: &RecordConfig,
    ) -> Result<Self> {
        let cipher = provider::cipher(provider.as_ref(), algorithm, key)?;
        Ok(Self {
            provider,
            algorithm,
            cipher,
            nonce: 0,
            rekey_interval: config.rekey_interval,
            poisoned: false,
        })
    }

    /// Checks that `records` more nonces are available (2^64-1 is never used).
    fn reserve(&self, records: usize) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let records = u64::try_from(records).map_err(|_| Error::NonceExhausted)?;
        match self.nonce.checked_add(records) {
            Some(end) if end < u64::MAX => Ok(()),
            _ => Err(Error::NonceExhausted),
        }
    }

    /// Moves past the nonce just used, rekeying at the end of each interval.
    fn advance(&mut self) -> Result<()> {
        self.nonce += 1;
        if self.rekey_interval != 0 && self.nonce.is_multiple_of(self.rekey_interval) {
            self.rekey()?;
        }
        Ok(())
    }

    /// Noise `Rekey()`: the key becomes the first 32 bytes of
    /// `ENCRYPT(k, 2^64-1, empty, 32 zero bytes)`.
    fn rekey(&mut self) -> Result<()> {
        let mut key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        self.cipher.encrypt_in_place(u64::MAX, &[], key.as_mut())?;
        self.cipher = provider::cipher(self.provider.as_ref(), self.algorithm, &key)?;
        Ok(())
    }

    fn poison<T>(&mut self, err: Error) -> Result<T> {
        self.poisoned = true;
        Err(err)
    }
}

/// The constructors and accessors of [`Sealer`] and [`Opener`], which differ
/// only in the name of the half (`$half`) and what it does to records
/// (`$done`): both are a [`Direction`] and nothing else.
macro_rules! direction_api {
    ($half:literal, $done:literal) => {
        #[doc = concat!("A ChaCha20-Poly1305 ", $half, " with a raw 32-byte key, nonce 0.")]
        ///
        /// Sessions get theirs from the handshake; this is for tests and custom
        /// key schedules. Never use one key in two sealers.
        ///
        /// # Errors
        ///
        /// [`Error::MissingPrimitive`] if `provider` lacks ChaCha20-Poly1305.
        pub fn from_key(
            provider: Arc<dyn Provider>,
            key: &[u8; KEY_LEN],
            config: &RecordConfig,
        ) -> Result<Self> {
            Self::from_key_with_cipher(provider, CipherAlgorithm::ChaCha20Poly1305, key, config)
        }

        #[doc = concat!("A ", $half, " for `cipher` with a raw 32-byte key, nonce 0. See")]
        /// [`from_key`](Self::from_key).
        ///
        /// # Errors
        ///
        /// [`Error::MissingPrimitive`] if `provider` lacks `cipher`.
        pub fn from_key_with_cipher(
            provider: Arc<dyn Provider>,
            cipher: CipherAlgorithm,
            key: &[u8; KEY_LEN],
            config: &RecordConfig,
        ) -> Result<Self> {
            Direction::new(provider, cipher, key, config).map(Self)
        }

        /// Replaces the key now with Noise `Rekey()`, as the automatic schedule
        /// does. The peer must do the same at the same record.
        ///
        /// # Errors
        ///
        /// Only if the provider fails.
        pub fn rekey(&mut self) -> Result<()> {
            self.0.rekey()
        }

        #[doc = concat!("The nonce of the next record (= records ", $done, " so far).")]
        pub const fn nonce(&self) -> u64 {
            self.0.nonce
        }

        /// The AEAD protecting the records.
        pub const fn cipher(&self) -> CipherAlgorithm {
            self.0.algorithm
        }
    };
}

/// Seals plaintext into records: the sending half of a session.
pub struct Sealer(Direction);

impl Sealer {
    direction_api!("sealer", "sealed");

    /// Appends records carrying `plaintext` to `out`.
    ///
    /// The plaintext is split into `ceil(len / 65519)` records (one record if it
    /// is empty), each encrypted in place with one AEAD call.
    ///
    /// # Errors
    ///
    /// [`Error::NonceExhausted`] before any record would use nonce 2^64-1
    /// (nothing is appended), or [`Error::Poisoned`] after an earlier failure.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut BytesMut) -> Result<()> {
        self.seal_parts([plaintext], out)
    }

    /// Appends records carrying the concatenation of `parts` to `out`: the
    /// same records as [`seal`](Self::seal) of the joined plaintext, without
    /// joining it first. Records span part boundaries, so many small parts
    /// cost one AEAD call per 65519 bytes, not one per part.
    ///
    /// # Errors
    ///
    /// As [`seal`](Self::seal).
    pub fn seal_parts<'a, I>(&mut self, parts: I, out: &mut BytesMut) -> Result<()>
    where
        I: IntoIterator<Item = &'a [u8]>,
        I::IntoIter: Clone,
    {
        let mut parts = parts.into_iter();
        let total: usize = parts.clone().map(<[u8]>::len).sum();
        let records = total.div_ceil(MAX_RECORD_PLAINTEXT).max(1);
        self.0.reserve(records)?;
        out.reserve(total + records * (LENGTH_LEN + TAG_LEN));
        let mut current: &[u8] = &[];
        let mut left = total;
        for _ in 0..records {
            let len = left.min(MAX_RECORD_PLAINTEXT);
            left -= len;
            // `len` ≤ 65519, so the body length fits.
            out.put_u16(u16::try_from(len + TAG_LEN).unwrap_or(u16::MAX));
            let start = out.len();
            let mut need = len;
            while need > 0 {
                if current.is_empty() {
                    // The parts summed to `total`: they cannot run out first.
                    let Some(next) = parts.next() else {
                        return self.0.poison(Error::MessageTooLarge(total));
                    };
                    current = next;
                    continue;
                }
                let (head, rest) = current.split_at(need.min(current.len()));
                out.extend_from_slice(head);
                current = rest;
                need -= head.len();
            }
            let (_, in_out) = out.split_at_mut(start);
            let tag = match self.0.cipher.encrypt_in_place(self.0.nonce, &[], in_out) {
                Ok(tag) => tag,
                Err(err) => return self.0.poison(err),
            };
            out.extend_from_slice(&tag);
            if let Err(err) = self.0.advance() {
                return self.0.poison(err);
            }
        }
        Ok(())
    }
}

impl core::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sealer")
            .field("cipher", &self.0.algorithm)
            .field("nonce", &self.0.nonce)
            .finish_non_exhaustive()
    }
}

/// Opens records: the receiving half of a session.
pub struct Opener(Direction);

impl Opener {
    direction_api!("opener", "opened");

    /// Takes one complete record from the front of `input`, decrypts it in
    /// place and returns its plaintext, sharing `input`'s allocation.
    ///
    /// Returns `Ok(None)` (consuming nothing) while the record is incomplete;
    /// call again to get the next record.
    ///
    /// # Errors
    ///
    /// [`Error::RecordTooShort`] or [`Error::Decrypt`] for a bad record: the
    /// record is consumed, the nonce stays where it was, and the opener is
    /// poisoned, so every later call returns [`Error::Poisoned`].
    /// [`Error::NonceExhausted`] if the next nonce would be 2^64-1.
    pub fn open(&mut self, input: &mut BytesMut) -> Result<Option<Bytes>> {
        self.0.reserve(1)?;
        let Some(header) = input.first_chunk::<LENGTH_LEN>() else {
            return Ok(None);
        };
        let len = u16::from_be_bytes(*header);
        let body_len = usize::from(len);
        if body_len < TAG_LEN {
            return self.0.poison(Error::RecordTooShort(len));
        }
        if input.len() < LENGTH_LEN + body_len {
            return Ok(None);
        }
        let mut record = input.split_to(LENGTH_LEN + body_len);
        record.advance(LENGTH_LEN);
        let plaintext_len = body_len - TAG_LEN;
        let (in_out, tag) = record.split_at_mut(plaintext_len);
        let opened = match <&[u8; TAG_LEN]>::try_from(&*tag) {
            Ok(tag) => self
                .0
                .cipher
                .decrypt_in_place(self.0.nonce, &[], in_out, tag),
            Err(_) => Err(Error::RecordTooShort(len)),
        };
        if let Err(err) = opened {
            return self.0.poison(err);
        }
        if let Err(err) = self.0.advance() {
            return self.0.poison(err);
        }
        record.truncate(plaintext_len);
        Ok(Some(record.freeze()))
    }

    /// Opens the record that starts `gap` bytes into `buf` and writes its
    /// plaintext to the front of `buf`, over the gap.
    ///
    /// This lets a reader keep its plaintext contiguous in the buffer it reads
    /// into, without copying it out: with the plaintext so far ending at `p`,
    /// call this on `&mut buf[p..]` with the number of bytes between `p` and
    /// the next record. With the ring backend the decryption does the move.
    ///
    /// Returns `Ok(None)` (touching nothing) while the record is incomplete;
    /// otherwise `(plaintext_len, record_end)`: `buf[..plaintext_len]` is the
    /// plaintext, and the next record starts at `record_end`, so the next gap
    /// is `record_end - plaintext_len`.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open): a bad record poisons the opener.
    pub fn open_within(&mut self, buf: &mut [u8], gap: usize) -> Result<Option<(usize, usize)>> {
        self.0.reserve(1)?;
        let Some(header) = buf
            .get(gap..)
            .and_then(|rest| rest.first_chunk::<LENGTH_LEN>())
        else {
            return Ok(None);
        };
        let len = u16::from_be_bytes(*header);
        let body_len = usize::from(len);
        if body_len < TAG_LEN {
            return self.0.poison(Error::RecordTooShort(len));
        }
        let end = gap + LENGTH_LEN + body_len;
        let Some(record) = buf.get_mut(..end) else {
            return Ok(None);
        };
        let (in_out, tag) = record.split_at_mut(end - TAG_LEN);
        let opened = match <&[u8; TAG_LEN]>::try_from(&*tag) {
            Ok(tag) => {
                self.0
                    .cipher
                    .decrypt_shifted(self.0.nonce, &[], in_out, gap + LENGTH_LEN, tag)
            }
            Err(_) => Err(Error::RecordTooShort(len)),
        };
        if let Err(err) = opened {
            return self.0.poison(err);
        }
        if let Err(err) = self.0.advance() {
            return self.0.poison(err);
        }
        Ok(Some((body_len - TAG_LEN, end)))
    }

    /// Whether an earlier record failed to open.
    pub const fn is_poisoned(&self) -> bool {
        self.0.poisoned
    }
}

impl core::fmt::Debug for Opener {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Opener")
            .field("cipher", &self.0.algorithm)
            .field("nonce", &self.0.nonce)
            .field("poisoned", &self.0.poisoned)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
