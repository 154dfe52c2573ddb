//! Receive buffers that come back once the application drops its messages.
//!
//! A reader hands every decoded message on without copying: the message's
//! bytes still live in the receive buffer. While the application holds them,
//! the buffer cannot be reused in place, and the reader used to move to a new
//! allocation, which the kernel had to fault in page by page (for 64 KiB
//! messages that was about a sixth of a Noise receiver's time). The pool keeps
//! the buffers the reader moved away from and takes one back as soon as
//! nothing shares it any more: a busy connection cycles through a few warm
//! buffers instead of fresh memory.

use bytes::BytesMut;
use netproto_wire::READ_CHUNK;

/// Buffers moved away from and kept for reuse, per connection.
const MAX_SPARE: usize = 4;

/// Capacity of a buffer the pool allocates: one [`READ_CHUNK`] read behind up
/// to one chunk of unread bytes.
pub(crate) const POOL_BUFFER: usize = 2 * READ_CHUNK;

/// A reader's spare receive buffers.
#[derive(Debug, Default)]
pub(crate) struct RecvPool {
    spare: Vec<BytesMut>,
}

impl RecvPool {
    /// Makes `want` bytes of room at the end of `buf`, keeping its contents.
    ///
    /// Tries, in order: the room already there; `buf`'s own allocation, when
    /// nothing else shares it; a spare that nothing shares any more, into which
    /// the unread bytes move; a new [`POOL_BUFFER`] allocation. The buffer
    /// moved away from becomes a spare.
    ///
    /// Returns `false`, and does nothing, when `buf` plus `want` would not fit
    /// in a pool buffer: a large frame in progress grows in place instead.
    pub(crate) fn make_room(&mut self, buf: &mut BytesMut, want: usize) -> bool {
        if buf.capacity() - buf.len() >= want || buf.try_reclaim(want) {
            return true;
        }
        let need = buf.len() + want;
        if need > POOL_BUFFER {
            return false;
        }
        let next = match self
            .spare
            .iter_mut()
            .position(|spare| spare.try_reclaim(need))
        {
            Some(i) => {
                let mut next = self.spare.swap_remove(i);
                next.extend_from_slice(buf);
                next
            }
            None => {
                let mut next = BytesMut::with_capacity(POOL_BUFFER);
                next.extend_from_slice(buf);
                next
            }
        };
        let mut old = std::mem::replace(buf, next);
        old.clear();
        if self.spare.len() == MAX_SPARE {
            // The oldest is the most likely to be free by now, but also the one
            // that has waited longest: a holder that slow should not pin it.
            self.spare.remove(0);
        }
        self.spare.push(old);
        true
    }

    /// Forgets the spare buffers: the connection went idle.
    pub(crate) fn release(&mut self) {
        self.spare = Vec::new();
    }

    /// How many spare buffers are kept.
    #[cfg(test)]
    pub(crate) fn spares(&self) -> usize {
        self.spare.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_its_own_buffer_when_nothing_shares_it() {
        let mut pool = RecvPool::default();
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(&[1; 1000]);
        drop(buf.split_to(1000));
        let before = buf.as_ptr();
        assert!(pool.make_room(&mut buf, 1000));
        assert_eq!(pool.spares(), 0, "no move, no spare");
        assert!(buf.capacity() >= 1000);
        // Reclaimed in place: the allocation starts where the first byte was.
        assert_eq!(buf.as_ptr(), before.wrapping_sub(1000));
    }

    /// Fills `buf`'s room so that the next `make_room` cannot use it.
    fn fill(buf: &mut BytesMut, byte: u8) {
        let room = buf.capacity() - buf.len();
        buf.extend_from_slice(&vec![byte; room]);
    }

    #[test]
    fn moves_unread_bytes_away_from_a_shared_buffer_and_takes_it_back_later() {
        let mut pool = RecvPool::default();
        let mut buf = BytesMut::with_capacity(POOL_BUFFER);
        let a = buf.as_ptr();
        fill(&mut buf, 1);
        // The application holds all but the last 10 bytes of buffer A.
        let held_a = buf.split_to(buf.len() - 10).freeze();
        assert!(pool.make_room(&mut buf, READ_CHUNK));
        assert_eq!(&buf[..], &[1; 10], "the unread bytes moved along");
        assert!(buf.capacity() - buf.len() >= READ_CHUNK);
        let b = buf.as_ptr();
        assert_ne!(b, a);
        assert_eq!(pool.spares(), 1);

        // It holds everything of B as well: the next move needs a third buffer.
        fill(&mut buf, 2);
        let held_b = buf.split().freeze();
        assert!(pool.make_room(&mut buf, READ_CHUNK));
        let c = buf.as_ptr();
        assert!(c != a && c != b);
        assert_eq!(pool.spares(), 2);

        // A is released: the next move takes it back, no new memory.
        drop(held_a);
        fill(&mut buf, 3);
        let held_c = buf.split_to(buf.len() - 3).freeze();
        assert!(pool.make_room(&mut buf, READ_CHUNK));
        assert_eq!(buf.as_ptr(), a, "spare A was reused");
        assert_eq!(&buf[..], &[3; 3]);
        assert_eq!(pool.spares(), 2, "A left the spares, C joined them");
        drop((held_b, held_c));
    }

    #[test]
    fn declines_what_a_pool_buffer_cannot_hold_and_bounds_its_spares() {
        let mut pool = RecvPool::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![0; POOL_BUFFER]);
        let want = buf.capacity() - buf.len() + 1;
        assert!(!pool.make_room(&mut buf, want));
        assert_eq!(buf.len(), POOL_BUFFER);

        let mut held = Vec::new();
        let mut buf = BytesMut::new();
        for _ in 0..3 * MAX_SPARE {
            fill(&mut buf, 1);
            held.push(buf.split().freeze());
            assert!(pool.make_room(&mut buf, READ_CHUNK));
            assert!(pool.spares() <= MAX_SPARE);
        }
        pool.release();
        assert_eq!(pool.spares(), 0);
    }
}
