//! Exponential backoff with jitter, for the reconnections of the client and
//! of the balancer's endpoints.

use std::time::Duration;

use rand::Rng;

/// Delays that double from `initial` up to `max`, each with a random
/// extra of up to `1 / jitter_divisor` of itself, so that many clients
/// that failed together do not retry together.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    jitter_divisor: u32,
    next: Duration,
}

impl Backoff {
    /// Starts at `initial` (even above `max`), doubles up to `max`; each
    /// wait adds up to `1 / jitter_divisor` of the delay (`0` adds nothing).
    pub(crate) fn new(initial: Duration, max: Duration, jitter_divisor: u32) -> Self {
        Self {
            initial,
            max,
            jitter_divisor,
            next: initial,
        }
    }

    /// The next wait, with jitter from the thread's random generator; the
    /// delay after it doubles.
    pub(crate) fn next_wait(&mut self) -> Duration {
        self.next_wait_with(&mut rand::thread_rng())
    }

    /// As [`next_wait`](Self::next_wait), with jitter from `rng`.
    pub(crate) fn next_wait_with(&mut self, rng: &mut impl Rng) -> Duration {
        let delay = self.next;
        self.next = delay.saturating_mul(2).min(self.max);
        let most = match self.jitter_divisor {
            0 => 0,
            divisor => u64::try_from(delay.as_millis() / u128::from(divisor)).unwrap_or(u64::MAX),
        };
        delay + Duration::from_millis(rng.gen_range(0..=most))
    }

    /// Back to the initial delay (after a success).
    pub(crate) fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_up_to_the_cap_with_bounded_jitter() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(100 * MS, 1000 * MS, 2);
        for base in [100, 200, 400, 800, 1000, 1000] {
            let wait = backoff.next_wait_with(&mut rng);
            assert!(
                wait >= base * MS && wait <= base * MS * 3 / 2,
                "{wait:?} for {base} ms"
            );
        }
    }

    #[test]
    fn jitter_varies_and_stays_within_its_fraction() {
        let mut rng = StdRng::seed_from_u64(1);
        let waits: Vec<Duration> = (0..64)
            .map(|_| Backoff::new(400 * MS, 400 * MS, 4).next_wait_with(&mut rng))
            .collect();
        assert!(waits.iter().all(|w| (400 * MS..=500 * MS).contains(w)));
        assert!(waits.iter().any(|w| *w != waits[0]), "no jitter: {waits:?}");
    }

    #[test]
    fn no_jitter_divisor_means_exact_delays_and_reset_starts_over() {
        let mut backoff = Backoff::new(10 * MS, 35 * MS, 0);
        let waits: Vec<Duration> = (0..4).map(|_| backoff.next_wait()).collect();
        assert_eq!(waits, [10 * MS, 20 * MS, 35 * MS, 35 * MS]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), 10 * MS);
    }
}
