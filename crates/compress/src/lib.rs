//! LZ4 and Zstd compression of netproto data-frame bodies, with hard limits.
//!
//! A compressed body starts with the uncompressed length as a 4-byte
//! big-endian integer, then the compressed bytes (an LZ4 block, or one Zstd
//! frame). On the way in, the declared length is checked against the limit
//! *before* anything is decompressed, the output buffer is allocated at
//! exactly that size, and any other outcome than exactly that many bytes is
//! an error: a decompression bomb costs the receiver at most the limit.
//!
//! This crate is sans-IO: it transforms bytes and performs no I/O.
//!
//! # Compression and secrecy
//!
//! Compressing before encrypting lets an observer who sees record sizes learn
//! about the plaintext (the CRIME and BREACH attacks), most of all when
//! attacker-chosen bytes share a message with a secret. Leave compression off
//! ([`netproto_wire::Compression::None`]) for such
//! messages, per connection or per message.
//!
//! # Examples
//!
//! ```
//! use bytes::Bytes;
//! use netproto_compress::Codec;
//! use netproto_wire::Compression;
//!
//! let mut codec = Codec::default();
//! let body = Bytes::from(vec![b'a'; 4096]);
//! let data = codec.compress(Compression::Lz4, body.clone())?;
//! assert_eq!(data.compression, Compression::Lz4);
//! assert!(data.body.len() < 100);
//! assert_eq!(codec.decompress(data)?, body);
//! # Ok::<(), netproto_compress::Error>(())
//! ```
#![forbid(unsafe_code)]

mod error;

use bytes::{BufMut, Bytes, BytesMut};
use netproto_wire::{Compression, DEFAULT_MAX_FRAME_LEN, Data};

pub use error::Error;

/// Bodies shorter than this many bytes are sent uncompressed by default.
pub const DEFAULT_THRESHOLD: usize = 512;

/// Zstd level used by default: fast, as the design measures it.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Length of the uncompressed-length prefix of a compressed body.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Tunables of a [`Codec`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Bodies shorter than this are never compressed.
    pub threshold: usize,
    /// Largest uncompressed length accepted from a peer; also the limit of
    /// what this side compresses.
    pub max_decompressed_len: u32,
    /// Zstd compression level (1 to 22; negative levels are faster still).
    pub zstd_level: i32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            max_decompressed_len: DEFAULT_MAX_FRAME_LEN,
            zstd_level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

/// Compresses and decompresses data-frame bodies.
///
/// Keeps the Zstd contexts between calls, so use one per connection.
pub struct Codec {
    config: Config,
    zstd_compressor: Option<zstd::bulk::Compressor<'static>>,
    zstd_decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new(Config::default())
    }
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Codec {
    /// A codec with the given limits.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            zstd_compressor: None,
            zstd_decompressor: None,
        }
    }

    /// The codec's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns an envelope body into a data frame, compressed with `algorithm`
    /// when the body reaches the threshold and compression makes it smaller.
    ///
    /// Returns the body unchanged (and uncompressed) otherwise. The frame has
    /// no [`DataFlags`](netproto_wire::DataFlags): set those of the envelope
    /// on it.
    ///
    /// # Errors
    ///
    /// [`Error::InputTooLarge`] for a body over the configured limit;
    /// [`Error::Zstd`] if the zstd library fails.
    pub fn compress(&mut self, algorithm: Compression, body: Bytes) -> Result<Data, Error> {
        if algorithm == Compression::None || body.len() < self.config.threshold {
            return Ok(Data::plain(body));
        }
        if u32::try_from(body.len()).map_or(true, |len| len > self.config.max_decompressed_len) {
            return Err(Error::InputTooLarge(body.len()));
        }
        let mut out = BytesMut::new();
        self.compress_into(algorithm, &body, &mut out)?;
        if out.len() >= body.len() {
            return Ok(Data::plain(body));
        }
        Ok(Data {
            compression: algorithm,
            ..Data::plain(out.freeze())
        })
    }

    /// Appends the compressed form of `input` (length prefix included) to `dst`.
    ///
    /// # Errors
    ///
    /// [`Error::InputTooLarge`] when `input` is over 4 GiB; [`Error::Zstd`] if
    /// the zstd library fails.
    pub fn compress_into(
        &mut self,
        algorithm: Compression,
        input: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let len = u32::try_from(input.len()).map_err(|_| Error::InputTooLarge(input.len()))?;
        let start = dst.len();
        match algorithm {
            Compression::Lz4 => {
                let bound = lz4_flex::block::get_maximum_output_size(input.len());
                dst.put_u32(len);
                dst.resize(start + LENGTH_PREFIX_LEN + bound, 0);
                let out = dst.get_mut(start + LENGTH_PREFIX_LEN..).unwrap_or_default();
                let written = lz4_flex::block::compress_into(input, out)
                    .map_err(|_| Error::InputTooLarge(input.len()))?;
                dst.truncate(start + LENGTH_PREFIX_LEN + written);
            }
            Compression::Zstd => {
                let bound = zstd::zstd_safe::compress_bound(input.len());
                let compressor = match &mut self.zstd_compressor {
                    Some(c) => c,
                    slot => slot.insert(
                        zstd::bulk::Compressor::new(self.config.zstd_level).map_err(Error::Zstd)?,
                    ),
                };
                dst.put_u32(len);
                dst.resize(start + LENGTH_PREFIX_LEN + bound, 0);
                let out = dst.get_mut(start + LENGTH_PREFIX_LEN..).unwrap_or_default();
                let written = compressor
                    .compress_to_buffer(input, out)
                    .map_err(Error::Zstd)?;
                dst.truncate(start + LENGTH_PREFIX_LEN + written);
            }
            // `None`, and any algorithm added later that this build does not implement.
            _ => dst.put_slice(input),
        }
        Ok(())
    }

    /// The envelope body of a data frame: the body itself when it is not
    /// compressed (no copy), its decompressed form otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::MissingLength`], [`Error::TooLarge`] (checked before any
    /// decompression) or [`Error::Corrupt`].
    pub fn decompress(&mut self, data: Data) -> Result<Bytes, Error> {
        if data.compression == Compression::None {
            return Ok(data.body);
        }
        self.decompress_body(data.compression, &data.body)
    }

    /// Decompresses a compressed body (length prefix included) into a new
    /// buffer of exactly the declared length.
    ///
    /// # Errors
    ///
    /// As for [`decompress`](Self::decompress).
    pub fn decompress_body(&mut self, algorithm: Compression, body: &[u8]) -> Result<Bytes, Error> {
        let declared = declared_len(body).ok_or(Error::MissingLength(body.len()))?;
        let compressed = body.get(LENGTH_PREFIX_LEN..).unwrap_or_default();
        let max = self.config.max_decompressed_len;
        if declared > max {
            return Err(Error::TooLarge { declared, max });
        }
        let corrupt = |algorithm| Error::Corrupt {
            algorithm,
            declared,
        };
        let mut out = vec![0; declared as usize];
        match algorithm {
            Compression::Lz4 => match lz4_flex::block::decompress_into(compressed, &mut out) {
                Ok(n) if n == out.len() => {}
                _ => return Err(corrupt("lz4")),
            },
            Compression::Zstd => {
                let decompressor = match &mut self.zstd_decompressor {
                    Some(d) => d,
                    slot => {
                        slot.insert(zstd::bulk::Decompressor::new().map_err(|_| corrupt("zstd"))?)
                    }
                };
                match decompressor.decompress_to_buffer(compressed, out.as_mut_slice()) {
                    Ok(n) if n == out.len() => {}
                    _ => return Err(corrupt("zstd")),
                }
            }
            _ => return Err(corrupt("uncompressed")),
        }
        Ok(Bytes::from(out))
    }
}

/// The uncompressed length a compressed body (length prefix included)
/// declares, read without decompressing anything; `None` when the body is
/// too short to hold the prefix.
pub fn declared_len(body: &[u8]) -> Option<u32> {
    body.first_chunk::<LENGTH_PREFIX_LEN>()
        .map(|prefix| u32::from_be_bytes(*prefix))
}

#[cfg(test)]
mod tests;
