//! Record and frame deframing: from the bytes read off the stream to frames.

use bytes::{Buf, BytesMut};
use netproto_crypto::Opener;
use netproto_wire::{Decoder, Frame, READ_CHUNK};

use super::recv_pool::RecvPool;
use crate::Error;

/// Spent record headers and tags kept between the plaintext of a frame in
/// progress and the ciphertext behind it before they are squeezed out.
const MAX_GAP: usize = 1024;

/// Room for a read while nothing is in progress and the last read did not
/// fill its buffer: idle connections hold a small buffer, not a full
/// [`READ_CHUNK`] each.
const IDLE_READ: usize = 4 * 1024;

/// Turns the bytes read from the stream into frames, opening Noise records
/// first when there are any.
///
/// Frames are split off the read buffer without copying. With Noise the
/// buffer holds, in order: `plain` bytes of plaintext, `gap` bytes of spent
/// record headers and tags, and the ciphertext not opened yet. Each record
/// is decrypted where it lies and its plaintext written over the gap, so the
/// plaintext of consecutive records ends up contiguous.
///
/// Use: [`read_buf`](Self::read_buf) gives the buffer to read into (with
/// room made), [`handle_read`](Self::handle_read) reports how much was
/// appended, then [`poll_frame`](Self::poll_frame) until it returns `None`.
#[derive(Debug)]
pub(crate) struct Deframer {
    buf: BytesMut,
    /// Plaintext bytes at the front of `buf` (Noise only).
    plain: usize,
    /// Spent record bytes after the plaintext (Noise only).
    gap: usize,
    opener: Option<Box<Opener>>,
    decoder: Decoder,
    /// The unopened ciphertext, split off while frames are being decoded.
    rest: Option<BytesMut>,
    /// Where `buf` moves while the application still holds messages that
    /// live in it.
    pool: RecvPool,
    /// Room before the last read.
    room: usize,
    /// Whether the last read filled all the room it had: more is coming.
    busy: bool,
}

impl Deframer {
    /// A deframer for frames up to `max_frame_len`, opening records with
    /// `opener` when there is one, starting with the bytes of `leftover`
    /// (read past the handshake).
    pub(crate) fn new(max_frame_len: u32, opener: Option<Box<Opener>>, leftover: BytesMut) -> Self {
        Self {
            buf: leftover,
            plain: 0,
            gap: 0,
            opener,
            decoder: Decoder::new(max_frame_len),
            rest: None,
            pool: RecvPool::default(),
            room: 0,
            busy: false,
        }
    }

    /// The next complete frame, or `None` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// A record that fails to open ([`Error::Crypto`]) or a malformed frame
    /// ([`Error::Protocol`]); the connection cannot go on after either.
    #[inline]
    pub(crate) fn poll_frame(&mut self) -> Result<Option<Frame>, Error> {
        if self.rest.is_none()
            && let Some(opener) = self.opener.as_mut()
        {
            let buf = &mut self.buf;
            while let Some((n, end)) =
                opener.open_within(buf.get_mut(self.plain..).unwrap_or_default(), self.gap)?
            {
                self.plain += n;
                self.gap = end - n;
            }
            // The decoder sees the plaintext only; the rest waits.
            self.rest = Some(buf.split_off(self.plain));
        }
        if let Some(frame) = self.decoder.decode(&mut self.buf)? {
            return Ok(Some(frame));
        }
        self.rejoin();
        Ok(None)
    }

    /// Puts the unopened ciphertext back behind the plaintext left over.
    fn rejoin(&mut self) {
        let Some(rest) = self.rest.take() else {
            return;
        };
        // Adjacent parts of one allocation: joining them is free.
        self.plain = self.buf.len();
        self.buf.unsplit(rest);
        if self.plain == 0 {
            self.buf.advance(self.gap);
            self.gap = 0;
        } else if self.gap >= MAX_GAP {
            // A long frame in progress: close the gap behind it.
            let (plain, gap) = (self.plain, self.gap);
            self.buf.copy_within(plain + gap.., plain);
            self.buf.truncate(self.buf.len() - gap);
            self.gap = 0;
        }
    }

    /// Makes room for the next read and returns the buffer to append it to.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the frame in progress declares a length past
    /// the limit.
    pub(crate) fn read_buf(&mut self) -> Result<&mut BytesMut, Error> {
        debug_assert!(self.rest.is_none(), "read_buf during a decoding pass");
        if !self.busy && self.buf.is_empty() {
            self.pool.release();
            self.buf.reserve(IDLE_READ);
        } else if self.opener.is_some() {
            // A frame larger than a pool buffer grows in place.
            if !self.pool.make_room(&mut self.buf, READ_CHUNK) {
                self.buf.reserve(READ_CHUNK);
            }
        } else {
            // A frame larger than a pool buffer: `prepare_read` grows it.
            let want = self.decoder.read_room(&self.buf)?;
            self.pool.make_room(&mut self.buf, want);
            self.decoder.prepare_read(&mut self.buf)?;
        }
        self.room = self.buf.capacity() - self.buf.len();
        Ok(&mut self.buf)
    }

    /// Records that a read appended `n` bytes to the buffer from
    /// [`read_buf`](Self::read_buf).
    pub(crate) fn handle_read(&mut self, n: usize) {
        self.busy = n == self.room;
    }

    /// Appends `bytes` as if read from the stream.
    ///
    /// # Errors
    ///
    /// As [`read_buf`](Self::read_buf).
    #[cfg(test)]
    pub(crate) fn handle_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.read_buf()?.extend_from_slice(bytes);
        self.handle_read(bytes.len());
        Ok(())
    }

    /// Whether the last read filled all its room: more is waiting.
    pub(crate) fn is_busy(&self) -> bool {
        self.busy
    }

    /// The peer ended the stream: clean only at a frame (and record)
    /// boundary.
    ///
    /// # Errors
    ///
    /// [`Error::PeerClosed`] at a boundary, the clean end; an
    /// [`Error::Io`] of kind `UnexpectedEof` when a frame or record was cut
    /// short.
    pub(crate) fn handle_eof(&self) -> Error {
        // Spent record bytes are no partial anything.
        if self.buf.len() > self.gap {
            return Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the peer closed the stream inside a frame",
            ));
        }
        Error::PeerClosed
    }
}
