//! The correlator's tunables.

use std::time::Duration;

#[cfg(doc)]
use super::{Correlator, Unsolicited};
use crate::Error;

/// Largest accepted [`CorrelatorConfig::unsolicited_limit`].
pub const MAX_UNSOLICITED: usize = 1 << 20;

/// Tunables of a [`Correlator`].
///
/// Mutate a default; [`Correlator::new`] validates it.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelatorConfig {
    /// A request without a response after this long fails with
    /// [`Error::Timeout`]; a response arriving later is discarded. Default 30 s.
    pub request_timeout: Duration,
    /// Items the [`Unsolicited`] queue holds. When it is full the
    /// connection's reader waits for the application to take one, so
    /// responses wait too and TCP flow control pushes back on the peer:
    /// read the queue, or drop it to discard unsolicited messages.
    /// Default 64.
    pub unsolicited_limit: usize,
    /// Calls in flight at most for the callers that wait for room in the
    /// connection's [`capacity`](Correlator::capacity) before they send:
    /// typed calls and their tower services (`netproto-service`), whose
    /// `poll_ready` is pending while it is spent. Keep it at or below the
    /// server's `max_in_flight`. Requests sent with the correlator's own
    /// methods do not wait for it. Default 256 (the server's default).
    pub max_in_flight: usize,
    /// How long a request or one-way message waits at most for room in the
    /// connection's full send queue (never past the request's own timeout);
    /// then it fails with [`Error::QueueFull`], not sent. `None`, the
    /// default: a request waits for room within its timeout, and a one-way
    /// message as long as it takes.
    pub queue_timeout: Option<Duration>,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            unsolicited_limit: 64,
            max_in_flight: 256,
            queue_timeout: None,
        }
    }
}

impl CorrelatorConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first value that is zero or out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.request_timeout < Duration::from_millis(1)
            || self.request_timeout > netproto_transport::MAX_DURATION
        {
            return Err(Error::Config(
                "request_timeout must be between 1 ms and one day",
            ));
        }
        if self.unsolicited_limit == 0 || self.unsolicited_limit > MAX_UNSOLICITED {
            return Err(Error::Config(
                "unsolicited_limit must be between 1 and 2^20",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > crate::MAX_IN_FLIGHT {
            return Err(Error::Config("max_in_flight must be between 1 and 2^20"));
        }
        if self
            .queue_timeout
            .is_some_and(|limit| limit.is_zero() || limit > netproto_transport::MAX_DURATION)
        {
            return Err(Error::Config(
                "queue_timeout must be more than 0 and at most one day",
            ));
        }
        Ok(())
    }
}
