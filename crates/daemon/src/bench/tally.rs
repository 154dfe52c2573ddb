//! What `netproto bench` counts: requests sent, answered and failed (by
//! kind), and the latency of the answered ones.

use std::time::Duration;

use hdrhistogram::Histogram;
use netproto_daemon::Error;

/// Latencies are recorded in nanoseconds, 1 ns to 60 s, 3 significant digits.
pub(crate) fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

/// Why a request failed, as the report groups failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No answer in time (or no connection in time); a connect or
    /// handshake timeout.
    Timeout,
    /// The connection ended with the request in flight or queued.
    ConnectionLost,
    /// No connection: refused by the host, or by a server at its limits.
    Refused,
    /// The server is going away (goaway) and did not take the request.
    GoingAway,
    /// The server answered with an error frame.
    Remote,
    /// Anything else, an answer of the wrong size included.
    Other,
}

impl ErrorKind {
    /// Every kind, in the order of the report.
    pub(crate) const ALL: [Self; 6] = [
        Self::Timeout,
        Self::ConnectionLost,
        Self::Refused,
        Self::GoingAway,
        Self::Remote,
        Self::Other,
    ];

    /// The kind's name in the report.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ConnectionLost => "connection_lost",
            Self::Refused => "refused",
            Self::GoingAway => "going_away",
            Self::Remote => "remote",
            Self::Other => "other",
        }
    }

    /// The kind of a failed request; a reconnection that gave up is
    /// counted by its last attempt's failure.
    pub(crate) fn of(error: &Error) -> Self {
        use netproto_dispatch::Error as Dispatch;
        match error {
            Error::GaveUp { last, .. } => Self::of(last),
            Error::Timeout(_) | Error::Dispatch(Dispatch::Timeout(_)) => Self::Timeout,
            Error::Dispatch(Dispatch::Disconnected(_) | Dispatch::Closed) => Self::ConnectionLost,
            Error::Dispatch(Dispatch::GoingAway { .. }) => Self::GoingAway,
            Error::Dispatch(Dispatch::Remote { .. }) => Self::Remote,
            Error::Dispatch(Dispatch::Transport(error)) | Error::Transport(error) => {
                Self::of_transport(error)
            }
            Error::Io(error) => Self::of_io(error),
            Error::Refused(_) => Self::Refused,
            _ => Self::Other,
        }
    }

    fn of_transport(error: &netproto_transport::Error) -> Self {
        use netproto_transport::Error as Transport;
        match error {
            Transport::Timeout { .. } => Self::Timeout,
            Transport::Refused { .. } => Self::Refused,
            Transport::PeerClosed | Transport::Closed => Self::ConnectionLost,
            Transport::Io(error) => Self::of_io(error),
            _ => Self::Other,
        }
    }

    fn of_io(error: &std::io::Error) -> Self {
        use std::io::ErrorKind as Io;
        match error.kind() {
            // A Unix socket path that is gone: nobody listens there.
            Io::ConnectionRefused | Io::NotFound => Self::Refused,
            Io::TimedOut => Self::Timeout,
            Io::ConnectionReset
            | Io::ConnectionAborted
            | Io::BrokenPipe
            | Io::UnexpectedEof
            | Io::NotConnected => Self::ConnectionLost,
            _ => Self::Other,
        }
    }
}

/// The counts of one worker, then of the whole run: every request sent is
/// answered (`latency` has one value per answer) or failed, of one kind.
pub(crate) struct Tally {
    /// Requests issued.
    pub(crate) sent: u64,
    /// Answers that arrived within the run's window.
    pub(crate) ok_in_window: u64,
    /// Failures, by [`ErrorKind::ALL`] index.
    errors: [u64; ErrorKind::ALL.len()],
    /// Round-trip times of the answers, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
}

impl Tally {
    pub(crate) fn new() -> anyhow::Result<Self> {
        Ok(Self {
            sent: 0,
            ok_in_window: 0,
            errors: [0; ErrorKind::ALL.len()],
            latency: histogram()?,
        })
    }

    /// An answer that took `latency`, arrived within the window or not.
    pub(crate) fn answered(&mut self, latency: Duration, in_window: bool) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(ns.max(1));
        self.ok_in_window += u64::from(in_window);
    }

    /// `n` requests that failed with `kind`.
    pub(crate) fn failed(&mut self, kind: ErrorKind, n: u64) {
        let index = ErrorKind::ALL.iter().position(|k| *k == kind);
        if let Some(count) = index.and_then(|i| self.errors.get_mut(i)) {
            *count += n;
        }
    }

    /// Requests answered.
    pub(crate) fn ok(&self) -> u64 {
        self.latency.len()
    }

    /// Requests failed, of every kind.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Failures by kind, every kind listed.
    pub(crate) fn by_kind(&self) -> impl Iterator<Item = (ErrorKind, u64)> + '_ {
        ErrorKind::ALL.into_iter().zip(self.errors.iter().copied())
    }

    /// Adds another worker's counts.
    pub(crate) fn add(&mut self, other: &Self) -> anyhow::Result<()> {
        self.sent += other.sent;
        self.ok_in_window += other.ok_in_window;
        for (mine, theirs) in self.errors.iter_mut().zip(other.errors) {
            *mine += theirs;
        }
        self.latency.add(&other.latency)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use netproto_dispatch::Error as Dispatch;
    use netproto_transport::Error as Transport;

    use super::*;

    fn io(kind: std::io::ErrorKind) -> Error {
        Error::Transport(Transport::Io(kind.into()))
    }

    #[test]
    fn failures_are_sorted_by_what_happened() {
        let lost = Error::Dispatch(Dispatch::Disconnected(Arc::new(Transport::PeerClosed)));
        let gave_up = |last| Error::GaveUp {
            attempts: 5,
            last: Arc::new(last),
        };
        let cases = [
            (lost, ErrorKind::ConnectionLost),
            (
                Error::Dispatch(Dispatch::Timeout(Duration::from_secs(1))),
                ErrorKind::Timeout,
            ),
            (
                gave_up(io(std::io::ErrorKind::ConnectionRefused)),
                ErrorKind::Refused,
            ),
            (
                gave_up(io(std::io::ErrorKind::TimedOut)),
                ErrorKind::Timeout,
            ),
            (
                io(std::io::ErrorKind::ConnectionReset),
                ErrorKind::ConnectionLost,
            ),
            (
                Error::Dispatch(Dispatch::GoingAway {
                    last_request_id: 1,
                    code: netproto_wire::ErrorCode::SHUTTING_DOWN,
                }),
                ErrorKind::GoingAway,
            ),
            (
                Error::Dispatch(Dispatch::Remote {
                    request_id: 1,
                    code: netproto_wire::ErrorCode::NO_HANDLER,
                    message: "no".into(),
                }),
                ErrorKind::Remote,
            ),
            (Error::Dispatch(Dispatch::Closed), ErrorKind::ConnectionLost),
            (Error::Invalid("x".into()), ErrorKind::Other),
        ];
        for (error, kind) in cases {
            assert_eq!(ErrorKind::of(&error), kind, "{error:?}");
        }
    }

    #[test]
    fn every_request_sent_is_counted_once() {
        let mut a = Tally::new().unwrap();
        a.sent = 5;
        a.answered(Duration::from_micros(50), true);
        a.answered(Duration::from_micros(70), false);
        a.failed(ErrorKind::ConnectionLost, 2);
        a.failed(ErrorKind::Timeout, 1);
        let mut total = Tally::new().unwrap();
        total.add(&a).unwrap();
        total.add(&a).unwrap();
        assert_eq!(total.sent, 10);
        assert_eq!(total.ok(), 4);
        assert_eq!(total.ok_in_window, 2);
        assert_eq!(total.errors(), 6);
        assert_eq!(total.ok() + total.errors(), total.sent);
        let kinds: Vec<(&str, u64)> = total.by_kind().map(|(k, n)| (k.name(), n)).collect();
        assert_eq!(
            kinds,
            [
                ("timeout", 2),
                ("connection_lost", 4),
                ("refused", 0),
                ("going_away", 0),
                ("remote", 0),
                ("other", 0)
            ]
        );
    }
}
