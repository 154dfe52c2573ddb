//! Frames: the unit of the byte stream after the preface (and after the
//! security handshake, inside its records).

use bytes::{BufMut, Bytes, BytesMut};

use crate::flags::COMPRESSION_MASK;
use crate::{Compression, Credit, DataFlags, Error, ErrorCode, ErrorFrame, GoAway};

/// Length in bytes of a frame header: body length (u32, big-endian), kind, flags.
pub const HEADER_LEN: usize = 6;

/// Default limit on a frame's body length: 16 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 16 * 1024 * 1024;

/// Largest body a control frame (every kind but data) may have.
///
/// Checked when the header arrives, whatever the data-frame limit is.
pub const MAX_CONTROL_BODY: u32 = 4096;

/// The smallest data-frame limit (`max_frame_len`) a side may have: a peer
/// that announces less breaks the protocol.
pub const MIN_MAX_FRAME_LEN: u32 = 64;

/// Length of the fixed part of goaway and error bodies: a u64 and a u16.
const CONTROL_FIXED_LEN: usize = 10;

/// Length of a credit body: a u64 and a u32.
const CREDIT_LEN: usize = 12;

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
    /// `0x06`: the requester no longer wants the answer to a request.
    Cancel,
    /// `0x07`: the requester of a server stream grants more items.
    Credit,
    /// `0x08`: the responder ends a server stream.
    End,
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
            Self::Cancel => 0x06,
            Self::Credit => 0x07,
            Self::End => 0x08,
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
            0x06 => Ok(Self::Cancel),
            0x07 => Ok(Self::Credit),
            0x08 => Ok(Self::End),
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
            Self::Cancel => "cancel",
            Self::Credit => "credit",
            Self::End => "end",
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
    /// The other flags of a data frame; [`DataFlags::NONE`] for control frames.
    pub flags: DataFlags,
}

impl Header {
    /// Parses and checks a header against a body-length limit.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownKind`], [`Error::UnknownFlags`] (a reserved bit: on a
    /// data frame bits 4-7, on a control frame bits 2-7),
    /// [`Error::CompressedControl`], [`Error::FrameTooLarge`],
    /// [`Error::ControlTooLarge`], or [`Error::BadBodyLength`] for a control
    /// frame whose length does not fit its fixed fields.
    #[inline]
    pub fn parse(bytes: [u8; HEADER_LEN], max_frame_len: u32) -> Result<Self, Error> {
        let [l0, l1, l2, l3, kind, flags] = bytes;
        let len = u32::from_be_bytes([l0, l1, l2, l3]);
        let kind = FrameKind::from_byte(kind)?;
        let allowed = if kind == FrameKind::Data {
            COMPRESSION_MASK | DataFlags::MASK
        } else {
            COMPRESSION_MASK
        };
        if flags & !allowed != 0 {
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
                FrameKind::Ping | FrameKind::Pong | FrameKind::Cancel | FrameKind::End => len == 8,
                FrameKind::Credit => len as usize == CREDIT_LEN,
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
            flags: DataFlags::from_flags_byte(flags),
        })
    }

    /// The header of a data frame.
    const fn data(len: u32, compression: Compression, flags: DataFlags) -> Self {
        Self {
            len,
            kind: FrameKind::Data,
            compression,
            flags,
        }
    }

    /// The six bytes of this header.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        // Built as one word: assembled byte by byte, with the flags not known
        // at compile time, the six bytes took a dozen more instructions.
        let flags = self.compression.to_flags() | self.flags.bits();
        let word =
            u64::from(self.len) << 16 | u64::from(self.kind.to_byte()) << 8 | u64::from(flags);
        let [_, _, header @ ..] = word.to_be_bytes();
        header
    }
}

/// A data frame: an encoded [`Envelope`](crate::Envelope), possibly compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// How `body` is compressed.
    pub compression: Compression,
    /// What the frame says about the envelope (a header block, a stream
    /// item), compressed or not: give them to the decoded envelope with
    /// [`Envelope::decode_with_flags`](crate::Envelope::decode_with_flags).
    pub flags: DataFlags,
    /// The frame body as it travels.
    pub body: Bytes,
}

impl Data {
    /// A data frame whose body is not compressed, without flags.
    pub const fn plain(body: Bytes) -> Self {
        Self {
            compression: Compression::None,
            flags: DataFlags::NONE,
            body,
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
    /// The requester cancels the request with this id (Part III §3).
    Cancel(u64),
    /// The requester of a server stream grants more items (Part III §4).
    Credit(Credit),
    /// The server stream of the request with this id ends (Part III §4).
    End(u64),
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
            Self::Cancel(_) => FrameKind::Cancel,
            Self::Credit(_) => FrameKind::Credit,
            Self::End(_) => FrameKind::End,
        }
    }

    /// Length of this frame's body on the wire.
    pub fn body_len(&self) -> usize {
        match self {
            Self::Data(data) => data.body.len(),
            Self::Ping(_) | Self::Pong(_) | Self::Cancel(_) | Self::End(_) => 8,
            Self::Credit(_) => CREDIT_LEN,
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
            FrameKind::Ping | FrameKind::Pong | FrameKind::Cancel | FrameKind::End => {
                let value = u64::from_be_bytes(body.try_into().map_err(|_| bad_len())?);
                Ok(match kind {
                    FrameKind::Ping => Self::Ping(value),
                    FrameKind::Pong => Self::Pong(value),
                    FrameKind::Cancel => Self::Cancel(value),
                    _ => Self::End(value),
                })
            }
            FrameKind::Credit => {
                let [i0, i1, i2, i3, i4, i5, i6, i7, n0, n1, n2, n3] =
                    <[u8; CREDIT_LEN]>::try_from(body).map_err(|_| bad_len())?;
                Ok(Self::Credit(Credit::new(
                    u64::from_be_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
                    u32::from_be_bytes([n0, n1, n2, n3]),
                )))
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
        // Data frames first, on a path of their own: the common case pays
        // for no control frame.
        if let Frame::Data(data) = frame {
            let body_len = data.body.len();
            let len = self.check_len(body_len, self.max_frame_len)?;
            dst.reserve(HEADER_LEN + body_len);
            dst.put_slice(&Header::data(len, data.compression, data.flags).to_bytes());
            dst.put_slice(&data.body);
            return Ok(());
        }
        let len = self.check_len(frame.body_len(), MAX_CONTROL_BODY)?;
        dst.reserve(HEADER_LEN + frame.body_len());
        dst.put_slice(
            &Header {
                len,
                kind: frame.kind(),
                compression: Compression::None,
                flags: DataFlags::NONE,
            }
            .to_bytes(),
        );
        match frame {
            Frame::Data(data) => dst.put_slice(&data.body),
            Frame::Ping(value) | Frame::Pong(value) | Frame::Cancel(value) | Frame::End(value) => {
                dst.put_u64(*value);
            }
            Frame::Credit(credit) => {
                dst.put_u64(credit.request_id);
                dst.put_u32(credit.items);
            }
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
        flags: DataFlags,
        body_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), Error> {
        let len = self.check_len(body_len, self.max_frame_len)?;
        dst.put_slice(&Header::data(len, compression, flags).to_bytes());
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
