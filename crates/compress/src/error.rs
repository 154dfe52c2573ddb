//! The one error type of this crate.

/// Everything that can go wrong while compressing or decompressing a body.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A compressed body is shorter than its 4-byte length prefix.
    #[error("compressed body of {0} bytes has no length prefix")]
    MissingLength(usize),
    /// The declared uncompressed length exceeds the limit; nothing was decompressed.
    #[error("declared uncompressed length {declared} exceeds limit of {max}")]
    TooLarge {
        /// Length the body declares.
        declared: u32,
        /// The limit in force.
        max: u32,
    },
    /// The compressed data is corrupt or does not expand to exactly the declared length.
    #[error("{algorithm} body does not decompress to its declared length of {declared} bytes")]
    Corrupt {
        /// The algorithm, as text.
        algorithm: &'static str,
        /// Length the body declares.
        declared: u32,
    },
    /// The input to compress is longer than a frame can declare.
    #[error("input of {0} bytes is too large to compress into one frame")]
    InputTooLarge(usize),
    /// The zstd library failed to compress.
    #[error("zstd compression failed")]
    Zstd(#[source] std::io::Error),
    /// A frame-level error from the wire layer.
    #[error(transparent)]
    Wire(#[from] netproto_wire::Error),
}
