//! The compression policy: which bodies are compressed on the way out and
//! which are decompressed aside on the way in.

use netproto_wire::{Compression, Data};

use crate::ConnectionConfig;

/// Compressed bodies declaring at least this many bytes are decompressed
/// aside (on a blocking thread, by the connection's reader): about 50 us of
/// work and more.
pub(crate) const OFFLOAD_DECOMPRESSION: u32 = 64 * 1024;

/// Which outgoing bodies are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// The algorithm applied (`None` turns compression off).
    pub(crate) compression: Compression,
    /// Bodies shorter than this go out as they are.
    pub(crate) threshold: usize,
}

impl Policy {
    /// Whether a message of `encoded_len` bytes is compressed.
    pub(crate) fn compresses(&self, encoded_len: usize) -> bool {
        self.compression != Compression::None && encoded_len >= self.threshold
    }
}

/// Whether `body` is large enough to decompress aside.
pub(crate) fn decompress_aside(body: &Data) -> bool {
    declared_len(body) >= OFFLOAD_DECOMPRESSION
}

/// The uncompressed length a compressed body declares; 0 for a plain one (or
/// one too short to declare anything, which decompression then refuses).
fn declared_len(body: &Data) -> u32 {
    if body.compression == Compression::None {
        return 0;
    }
    netproto_compress::declared_len(&body.body).unwrap_or(0)
}

/// The decompression limits for a connection: nothing inflates past the
/// largest frame it accepts.
pub(crate) fn decompress_config(config: &ConnectionConfig) -> netproto_compress::Config {
    let mut c = netproto_compress::Config::default();
    c.max_decompressed_len = config.max_frame_len;
    c.threshold = config.compression_threshold;
    c
}
