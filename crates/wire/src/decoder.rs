//! The incremental frame decoder.

use alloc::vec::Vec;

use bytes::{Buf, BytesMut};

use crate::frame::{DEFAULT_MAX_FRAME_LEN, HEADER_LEN, Header};
use crate::{Data, Error, Frame, FrameKind};

/// Largest read the decoder asks for at once, in bytes, through
/// [`Decoder::read_room`].
pub const READ_CHUNK: usize = 64 * 1024;

/// Splits frames off the front of a byte buffer.
///
/// The decoder is incremental: any split of the byte stream, down to one byte
/// at a time, yields the same frames. It checks a header's limits as soon as
/// the header's six bytes are present, and it never reserves memory for a body
/// the peer has only declared: the buffer grows only with bytes that arrived.
///
/// A decoded data body is a [`Bytes`](bytes::Bytes) split off the caller's
/// buffer, without copying.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use netproto_wire::{Decoder, Encoder, Frame};
///
/// let mut wire = BytesMut::new();
/// Encoder::default().encode(&Frame::Ping(7), &mut wire)?;
///
/// let mut decoder = Decoder::default();
/// let mut received = BytesMut::new();
/// received.extend_from_slice(&wire[..3]);
/// assert_eq!(decoder.decode(&mut received)?, None); // needs more bytes
/// received.extend_from_slice(&wire[3..]);
/// assert_eq!(decoder.decode(&mut received)?, Some(Frame::Ping(7)));
/// # Ok::<(), netproto_wire::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    max_frame_len: u32,
}

impl Default for Decoder {
    /// A decoder with the default 16 MiB body limit.
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder {
    /// A decoder that refuses data bodies longer than `max_frame_len` bytes.
    pub const fn new(max_frame_len: u32) -> Self {
        Self { max_frame_len }
    }

    /// The body-length limit of this decoder.
    pub const fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Splits the next complete frame off the front of `src`.
    ///
    /// Returns `Ok(None)` when `src` does not yet hold a whole frame; `src` is
    /// then left as it was, and nothing is allocated.
    ///
    /// # Errors
    ///
    /// Any header or body error of [`Error`]; `src` is then left as it was.
    /// The stream is out of sync: close the connection.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        // Not `peek_header`: the `Option` it returns went through the stack
        // as a packed word, a store-forwarding stall on every frame.
        let Some(&bytes) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let header = Header::parse(bytes, self.max_frame_len)?;
        let total = frame_len(header);
        if src.len() < total {
            return Ok(None);
        }
        if header.kind == FrameKind::Data {
            let mut frame = src.split_to(total);
            frame.advance(HEADER_LEN);
            return Ok(Some(Frame::Data(Data {
                compression: header.compression,
                flags: header.flags,
                body: frame.freeze(),
            })));
        }
        // Control frames are parsed before anything is consumed, so that an
        // error leaves `src` as it was.
        let body = src.get(HEADER_LEN..total).unwrap_or_default();
        let frame = Frame::control_from_body(header.kind, body)?;
        src.advance(total);
        Ok(Some(frame))
    }

    /// Parses and checks the header at the front of `src`, if it is all there.
    ///
    /// # Errors
    ///
    /// The header errors of [`Header::parse`].
    pub fn peek_header(&self, src: &[u8]) -> Result<Option<Header>, Error> {
        src.first_chunk::<HEADER_LEN>()
            .map(|bytes| Header::parse(*bytes, self.max_frame_len))
            .transpose()
    }

    /// Makes room in `src` for the next read and returns the room there is.
    ///
    /// When less than half a [`READ_CHUNK`] is free, the buffer grows to
    /// exactly one [`READ_CHUNK`] of free room, never by doubling: reads stay
    /// large (many small frames per system call), and the memory held for a
    /// frame in progress is at most the bytes received so far plus one
    /// [`READ_CHUNK`], whatever length the peer declared.
    ///
    /// Growing moves the unread bytes to a new allocation when decoded frames
    /// still share the buffer; it never copies more than one unfinished frame.
    ///
    /// # Errors
    ///
    /// The header errors of [`Header::parse`].
    pub fn prepare_read(&self, src: &mut BytesMut) -> Result<usize, Error> {
        let missing = self.missing(src)?;
        let want = room_for(missing);
        let spare = src.capacity() - src.len();
        if spare < want.min(READ_CHUNK / 2) || (missing >= READ_CHUNK / 2 && spare < want) {
            let mut vec = Vec::from(core::mem::take(src));
            vec.reserve_exact(want);
            // Both conversions keep the allocation: no copy, no doubling.
            *src = BytesMut::from(bytes::Bytes::from(vec));
        }
        Ok(src.capacity() - src.len())
    }

    /// The room [`prepare_read`](Self::prepare_read) makes in `src`: a large
    /// frame in progress (half a [`READ_CHUNK`] or more still missing) gets
    /// exactly the room it still needs, up to one chunk, so that it ends at
    /// the end of the allocation and is handed on without copying; otherwise
    /// one [`READ_CHUNK`].
    ///
    /// A reader that finds room elsewhere (a buffer of its own) makes at least
    /// this much, and `prepare_read` then leaves the buffer as it is.
    ///
    /// # Errors
    ///
    /// The header errors of [`Header::parse`].
    pub fn read_room(&self, src: &[u8]) -> Result<usize, Error> {
        self.missing(src).map(room_for)
    }

    /// Bytes still missing from the frame at the front of `src`; 0 without a
    /// whole header.
    fn missing(&self, src: &[u8]) -> Result<usize, Error> {
        Ok(match self.peek_header(src)? {
            Some(header) => frame_len(header).saturating_sub(src.len()),
            None => 0,
        })
    }
}

/// The room to make for a read while `missing` bytes of a frame are missing.
fn room_for(missing: usize) -> usize {
    if missing >= READ_CHUNK / 2 {
        missing.min(READ_CHUNK)
    } else {
        READ_CHUNK
    }
}

/// Header plus body length; a `u32` always fits in `usize` on the targets we build for.
fn frame_len(header: Header) -> usize {
    HEADER_LEN.saturating_add(usize::try_from(header.len).unwrap_or(usize::MAX))
}
