//! A bounded cache of handshake nonces already seen.

use std::collections::{HashSet, VecDeque};

use crate::{Error, Result};

/// Default [`ReplayCache`] capacity.
pub const DEFAULT_REPLAY_CAPACITY: usize = 10_000;

/// The handshake nonces a server has seen, oldest evicted first.
///
/// All memory is allocated up front by [`new`](Self::new) and never grows
/// (about 72 bytes per entry). One cache serves every handshake of a
/// server: keep it beside the listener and pass `&mut` (or lock your own
/// `Mutex`) to [`Responder::read_message`](crate::session::Responder::read_message).
///
/// Together with the clock-skew check this rejects a replayed first
/// handshake message as long as fewer than `capacity` handshakes start
/// within the skew window (±5 s by default: 10,000 entries cover 1,000
/// handshakes per second).
#[derive(Debug, Clone)]
pub struct ReplayCache {
    seen: HashSet<[u8; 16]>,
    order: VecDeque<[u8; 16]>,
    capacity: usize,
}

impl Default for ReplayCache {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl ReplayCache {
    /// A cache remembering the last `capacity` nonces (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Twice the entries keep the hash table's load at most one half, so
        // it always rehashes in place and never reallocates.
        Self {
            seen: HashSet::with_capacity(2 * capacity),
            order: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Records `nonce`.
    ///
    /// # Errors
    ///
    /// [`Error::Replay`] if it is already in the cache (the cache is unchanged).
    pub fn check_and_insert(&mut self, nonce: &[u8; 16]) -> Result<()> {
        if self.seen.contains(nonce) {
            return Err(Error::Replay);
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(*nonce);
        self.seen.insert(*nonce);
        Ok(())
    }

    /// Whether `nonce` is in the cache.
    pub fn contains(&self, nonce: &[u8; 16]) -> bool {
        self.seen.contains(nonce)
    }

    /// Nonces currently remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most nonces remembered at once.
    pub const fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nonce(i: u32) -> [u8; 16] {
        let mut n = [0u8; 16];
        n[..4].copy_from_slice(&i.to_le_bytes());
        n
    }

    #[test]
    fn oldest_is_evicted_first_and_memory_is_fixed() {
        let mut cache = ReplayCache::new(3);
        let (table, queue) = (cache.seen.capacity(), cache.order.capacity());
        for i in 0..3 {
            cache.check_and_insert(&nonce(i)).unwrap();
        }
        assert!(matches!(
            cache.check_and_insert(&nonce(1)),
            Err(Error::Replay)
        ));
        cache.check_and_insert(&nonce(3)).unwrap();
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains(&nonce(0)));
        assert!(cache.contains(&nonce(1)));
        cache.check_and_insert(&nonce(0)).unwrap();
        for i in 100..10_000 {
            cache.check_and_insert(&nonce(i)).unwrap();
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(
            (cache.seen.capacity(), cache.order.capacity()),
            (table, queue)
        );
    }

    #[test]
    fn default_capacity() {
        assert_eq!(ReplayCache::default().capacity(), 10_000);
        assert_eq!(ReplayCache::new(0).capacity(), 1);
    }
}
