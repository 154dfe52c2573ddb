//! Frames: the unit of the byte stream after the preface (and after the
//! security handshake, inside its records).

use alloc::string::String;

use bytes::{BufMut, Bytes, BytesMut};

use crate::Error;

/// Length in bytes of a frame header: body length (u32, big-endian), kind, flags.
pub const HEADER_LEN: usize = 6;

/// Default limit on a frame's body length: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Largest body a control frame (ping, pong, goaway, error) may have.
///
/// Checked when the header arrives, whatever the data-frame limit is.
pub const MAX_CONTROL_BODY: u32 = 4096;

/// The smallest data-frame limit (`max_frame_len`) a side may have: a peer
/// that announces less breaks the protocol.
pub const MIN_MAX_FRAME_LEN: u32 = 64;

/// Mask of the flag bits that select a compression algorithm.
const COMPRESSION_MASK: u8 = 0b0000_0011;

/// Length of the fixed part of goaway and error bodies: a u64 and a u16.
const CONTROL_FIXED_LEN: usize = 10;

/// The kind byte of a frame header.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// `0x01`: a message envelope.
    Data,
    /// `0x02`: a heartbeat probe carrying an opaque token.
    Ping,
    /// `0x03`: the answer to a ping, echoing its token.
    Pong,
    /// `0x04`: the sender is shutting down gracefully.
    GoAway,
    /// `0x05`: the sender reports an error.
    Error,
}

impl FrameKind {
    /// The wire byte of this kind.
    pub const fn to_byte(self) -> u8 {
        match self {
            Self::Data => 0x01,
            Self::Ping => 0x02,
            Self::Pong => 0x03,
            Self::GoAway => 0x04,
            Self::Error => 0x05,
        }
    }

    /// The kind a wire byte stands for.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownKind`] for any other byte.
    pub const fn from_byte(byte: u8) -> Result<Self, Error> {
        match byte {
            0x01 => Ok(Self::Data),
            0x02 => Ok(Self::Ping),
            0x03 => Ok(Self::Pong),
            0x04 => Ok(Self::GoAway),
            0x05 => Ok(Self::Error),
            other => Err(Error::UnknownKind(other)),
        }
    }

    /// The kind's name, as used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::GoAway => "goaway",
            Self::Error => "error",
        }
    }
}

/// The compression algorithm a data frame's body is compressed with.
///
/// Encoded in the low two bits of the flags byte. A compressed body starts
/// with its uncompressed length; `netproto-compress` produces and checks it.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// The body is the envelope itself.
    #[default]
    None,
    /// The body is LZ4 block-compressed.
    Lz4,
    /// The body is a Zstandard frame.
    Zstd,
}

impl Compression {
    /// The flag bits of this algorithm.
    pub const fn to_flags(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Lz4 => 1,
            Self::Zstd => 2,
        }
    }

    /// The algorithm named by the compression bits of `flags`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownFlags`] when the bits hold the reserved value 3.
    pub const fn from_flags(flags: u8) -> Result<Self, Error> {
        match flags & COMPRESSION_MASK {
            0 => Ok(Self::None),
            1 => Ok(Self::Lz4),
            2 => Ok(Self::Zstd),
            _ => Err(Error::UnknownFlags(flags)),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the body that follows the header.
    pub len: u32,
    /// What the body holds.
    pub kind: FrameKind,
    /// Compression of a data body; [`Compression::None`] for control frames.
    pub compression: Compression,
}

impl Header {
    /// Parses and checks a header against a body-length limit.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownKind`], [`Error::UnknownFlags`],
    /// [`Error::CompressedControl`], [`Error::FrameTooLarge`],
    /// [`Error::ControlTooLarge`], or [`Error::BadBodyLength`] for a control
    /// frame whose length cannot hold its fixed fields.
    #[inline]
    pub fn parse(bytes: [u8; HEADER_LEN], max_frame_len: u32) -> Result<Self, Error> {
        let [l0, l1, l2, l3, kind, flags] = bytes;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        let kind = FrameKind::from_byte(kind)?;
        if flags & !COMPRESSION_MASK != 0 {
            return Err(Error::UnknownFlags(flags));
        }
        let compression = Compression::from_flags(flags)?;
        if kind == FrameKind::Data {
            if len > max_frame_len {
                return Err(Error::FrameTooLarge {
                    len: len.into(),
                    max: max_frame_len,
                });
            }
        } else {
            if compression != Compression::None {
                return Err(Error::CompressedControl);
            }
            if len > MAX_CONTROL_BODY {
                return Err(Error::ControlTooLarge(len));
            }
            let fixed_ok = match kind {
                FrameKind::Ping | FrameKind::Pong => len == 8,
                _ => len as usize >= CONTROL_FIXED_LEN,
            };
            if !fixed_ok {
                return Err(Error::BadBodyLength {
                    kind: kind.name(),
                    len: len as usize,
                });
            }
        }
        Ok(Self {
            len,
            kind,
            compression,
        })
    }

    /// The six bytes of this header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [l0, l1, l2, l3] = self.len.to_be_bytes();
        [
            l0,
            l1,
            l2,
            l3,
            self.kind.to_byte(),
            self.compression.to_flags(),
        ]
    }
}

/// Well-known error codes carried by [`GoAway`] and [`ErrorFrame`].
///
/// Codes not listed here are valid on the wire and must be passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// No error: a plain graceful close.
    pub const NO_ERROR: Self = Self(0);
    /// The peer broke the protocol (a malformed frame, a bad sequence).
    pub const PROTOCOL: Self = Self(1);
    /// The sender hit an internal error.
    pub const INTERNAL: Self = Self(2);
    /// No handler is registered for the request's message type.
    pub const NO_HANDLER: Self = Self(3);
    /// The handler of the request failed.
    pub const HANDLER_FAILED: Self = Self(4);
    /// The sender is overloaded and refused the request.
    pub const OVERLOADED: Self = Self(5);
    /// The sender is shutting down and will not process the request.
    pub const SHUTTING_DOWN: Self = Self(6);
    /// The request took longer than the sender allows.
    pub const TIMEOUT: Self = Self(7);
    /// A frame or message exceeded a limit of the sender.
    pub const TOO_LARGE: Self = Self(8);
    /// The message could not be decoded.
    pub const BAD_MESSAGE: Self = Self(9);
}

/// A data frame: an encoded [`Envelope`](crate::Envelope), possibly compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// How `body` is compressed.
    pub compression: Compression,
    /// The frame body as it travels.
    pub body: Bytes,
}

impl Data {
    /// A data frame whose body is not compressed.
    pub const fn plain(body: Bytes) -> Self {
        Self {
            compression: Compression::None,
            body,
        }
    }
}

/// A goaway frame: the sender stops taking new requests.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    /// The highest request id the sender has taken and will still answer.
    pub last_request_id: u64,
    /// Why the sender is going away.
    pub code: ErrorCode,
    /// Human-readable reason, for logs.
    pub reason: String,
}

impl GoAway {
    /// A goaway frame.
    pub fn new(last_request_id: u64, code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            last_request_id,
            code,
            reason: reason.into(),
        }
    }
}

/// An error frame: a request failed, or the connection is about to close.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The request this error answers; 0 for the connection as a whole.
    pub request_id: u64,
    /// What went wrong.
    pub code: ErrorCode,
    /// Human-readable text, for logs and callers.
    pub message: String,
}

impl ErrorFrame {
    /// An error frame.
    pub fn new(request_id: u64, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            request_id,
            code,
            message: message.into(),
        }
    }
}

/// One frame of the stream.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A message.
    Data(Data),
    /// A heartbeat probe with an opaque token.
    Ping(u64),
    /// The answer to the ping with the same token.
    Pong(u64),
    /// Graceful shutdown.
    GoAway(GoAway),
    /// An error report.
    Error(ErrorFrame),
}

impl Frame {
    /// The kind of this frame.
    pub const fn kind(&self) -> FrameKind {
        match self {
            Self::Data(_) => FrameKind::Data,
            Self::Ping(_) => FrameKind::Ping,
            Self::Pong(_) => FrameKind::Pong,
            Self::GoAway(_) => FrameKind::GoAway,
            Self::Error(_) => FrameKind::Error,
        }
    }

    /// Length of this frame's body on the wire.
    pub fn body_len(&self) -> usize {
        match self {
            Self::Data(data) => data.body.len(),
            Self::Ping(_) | Self::Pong(_) => 8,
            Self::GoAway(g) => CONTROL_FIXED_LEN + g.reason.len(),
            Self::Error(e) => CONTROL_FIXED_LEN + e.message.len(),
        }
    }

    /// Length of this frame on the wire, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Builds a control frame from a checked header and its complete body.
    ///
    /// Data frames are built by the decoder itself, which splits their body
    /// off the buffer without copying.
    pub(crate) fn control_from_body(kind: FrameKind, body: &[u8]) -> Result<Self, Error> {
        let bad_len = || Error::BadBodyLength {
            kind: kind.name(),
            len: body.len(),
        };
        match kind {
            FrameKind::Ping | FrameKind::Pong => {
                let token = u64::from_be_bytes(*body.first_chunk().ok_or_else(bad_len)?);
                if body.len() != 8 {
                    return Err(bad_len());
                }
                Ok(if kind == FrameKind::Ping {
                    Self::Ping(token)
                } else {
                    Self::Pong(token)
                })
            }
            FrameKind::GoAway | FrameKind::Error => {
                let (fixed, text) = body
                    .split_first_chunk::<CONTROL_FIXED_LEN>()
                    .ok_or_else(bad_len)?;
                let [i0, i1, i2, i3, i4, i5, i6, i7, c0, c1] = *fixed;
                let id = u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]);
                let code = ErrorCode(u16::from_be_bytes([c0, c1]));
                let text = core::str::from_utf8(text)
                    .map_err(|_| Error::InvalidUtf8(kind.name()))?
                    .into();
                Ok(if kind == FrameKind::GoAway {
                    Self::GoAway(GoAway {
                        last_request_id: id,
                        code,
                        reason: text,
                    })
                } else {
                    Self::Error(ErrorFrame {
                        request_id: id,
                        code,
                        message: text,
                    })
                })
            }
            // A data frame is never passed here; refuse rather than panic.
            FrameKind::Data => Err(bad_len()),
        }
    }
}

/// Writes frames into a caller's buffer, checking them against a limit.
///
/// Encoding allocates nothing beyond the growth of the destination buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoder {
    max_frame_len: u32,
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Encoder {
    /// An encoder that refuses data bodies longer than `max_frame_len`:
    /// use the peer's limit, so that nothing is sent that the peer would refuse.
    pub const fn new(max_frame_len: u32) -> Self {
        Self { max_frame_len }
    }

    /// The body-length limit of this encoder.
    pub const fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Appends `frame` to `dst`.
    ///
    /// # Errors
    ///
    /// [`Error::EncodeTooLarge`] when the body exceeds the limit (for control
    /// frames, [`MAX_CONTROL_BODY`]); `dst` is then left unchanged.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        let kind = frame.kind();
        let (max, compression) = match frame {
            Frame::Data(data) => (self.max_frame_len, data.compression),
            _ => (MAX_CONTROL_BODY, Compression::None),
        };
        let len = self.check_len(frame.body_len(), max)?;
        dst.reserve(HEADER_LEN + frame.body_len());
        dst.put_slice(
            &Header {
                len,
                kind,
                compression,
            }
            .to_bytes(),
        );
        match frame {
            Frame::Data(data) => dst.put_slice(&data.body),
            Frame::Ping(token) | Frame::Pong(token) => dst.put_u64(*token),
            Frame::GoAway(g) => put_control(dst, g.last_request_id, g.code, &g.reason),
            Frame::Error(e) => put_control(dst, e.request_id, e.code, &e.message),
        }
        Ok(())
    }

    /// Appends the header of a data frame whose body of `body_len` bytes the
    /// caller writes next (or sends separately, with a vectored write).
    ///
    /// # Errors
    ///
    /// [`Error::EncodeTooLarge`] when `body_len` exceeds the limit.
    pub fn encode_data_header(
        &self,
        compression: Compression,
        body_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let len = self.check_len(body_len, self.max_frame_len)?;
        dst.put_slice(
            &Header {
                len,
                kind: FrameKind::Data,
                compression,
            }
            .to_bytes(),
        );
        Ok(())
    }

    fn check_len(&self, len: usize, max: u32) -> Result<u32, Error> {
        match u32::try_from(len) {
            Ok(len) if len <= max => Ok(len),
            _ => Err(Error::EncodeTooLarge {
                len: len as u64,
                max,
            }),
        }
    }
}

fn put_control(dst: &mut BytesMut, id: u64, code: ErrorCode, text: &str) {
    dst.put_u64(id);
    dst.put_u16(code.0);
    dst.put_slice(text.as_bytes());
}
