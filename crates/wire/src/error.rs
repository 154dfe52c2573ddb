//! The one error type of this crate.

/// Everything that can go wrong while encoding or decoding netproto bytes.
///
/// Every malformed input maps to one specific variant; decoding never panics.
/// Once the decoder has returned an error the byte stream is out of sync and
/// the connection should be closed (after sending an
/// [`ErrorFrame`](crate::ErrorFrame) if the transport still can).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The first four bytes of a preface are not the netproto magic.
    #[error("bad preface magic")]
    BadMagic,
    /// The preface names a protocol version this implementation does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// The preface names a security mode this implementation does not know.
    #[error("unknown security mode {0:#04x}")]
    UnknownSecurityMode(u8),
    /// A preface answer carries a status code this implementation does not know.
    #[error("unknown preface status {0:#04x}")]
    UnknownPrefaceStatus(u8),
    /// A reserved byte or bit that must be zero is not.
    #[error("reserved {0} is not zero")]
    ReservedNotZero(&'static str),
    /// The body length in a frame header exceeds the decoder's limit.
    #[error("frame of {len} bytes exceeds limit of {max}")]
    FrameTooLarge {
        /// Body length the header declares.
        len: u64,
        /// The limit in force.
        max: u32,
    },
    /// A control frame declares a body longer than [`MAX_CONTROL_BODY`](crate::MAX_CONTROL_BODY).
    #[error("control frame of {0} bytes exceeds limit")]
    ControlTooLarge(u32),
    /// The frame kind byte is not one this version understands.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// The flags byte has a bit set that this version does not define.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// A control frame (anything but data) has the compression bits set.
    #[error("compressed control frame")]
    CompressedControl,
    /// A frame body has the wrong length for its kind.
    #[error("{kind} frame body of {len} bytes is malformed")]
    BadBodyLength {
        /// The frame kind, as text.
        kind: &'static str,
        /// The body length that arrived.
        len: usize,
    },
    /// Text that must be UTF-8 is not.
    #[error("{0} is not valid utf-8")]
    InvalidUtf8(&'static str),
    /// A message envelope could not be decoded.
    #[error("malformed message envelope")]
    BadEnvelope,
    /// A header block (PROTOCOL.md Part III §2) is malformed: it runs past
    /// the payload, its fields do not end exactly where it says, its keys are
    /// not in increasing order (a key appears twice, say), or a field it
    /// knows has a value of the wrong shape.
    #[error("malformed header block")]
    BadHeaders,
    /// A requester sent a data frame with the `STREAM` flag: client
    /// streams are reserved (PROTOCOL.md Part III §4).
    #[error("client stream items are not supported")]
    ClientStream,
    /// A message type name is empty or longer than [`MAX_TYPE_LEN`](crate::MAX_TYPE_LEN).
    #[error("message type name of {0} bytes is out of range")]
    BadTypeName(usize),
    /// A custom message uses one of the reserved built-in type names.
    #[error("message type name is reserved for built-in messages")]
    ReservedTypeName,
    /// A peer announced a frame limit below [`MIN_MAX_FRAME_LEN`](crate::MIN_MAX_FRAME_LEN).
    #[error("peer frame limit of {0} bytes is below the minimum of 64")]
    PeerLimitTooSmall(u32),
    /// A frame to encode is longer than the encoder's limit.
    #[error("frame of {len} bytes exceeds encoder limit of {max}")]
    EncodeTooLarge {
        /// Body length of the frame to encode.
        len: u64,
        /// The limit in force.
        max: u32,
    },
}
