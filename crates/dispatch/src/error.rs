//! The one error type of this crate.

use std::sync::Arc;
use std::time::Duration;

use netproto_wire::ErrorCode;

/// Everything that can go wrong while serving or making requests.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed while serving, or a message could not be queued.
    #[error("transport error")]
    Transport(#[from] netproto_transport::Error),
    /// A message could not be encoded or decoded (for example a reply whose
    /// payload does not match its built-in type).
    #[error("malformed message")]
    Wire(#[from] netproto_wire::Error),
    /// The peer answered the request with an error frame.
    ///
    /// The text is the peer's; it is shown escaped.
    #[error("request {request_id} failed remotely with code {}: {message:?}", code.0)]
    Remote {
        /// The request the error answers.
        request_id: u64,
        /// The peer's error code, for example [`ErrorCode::NO_HANDLER`].
        code: ErrorCode,
        /// The peer's explanation.
        message: String,
    },
    /// No response arrived within the request timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// No response arrived within the request's own deadline
    /// ([`RequestOptions::deadline`](crate::RequestOptions::deadline)),
    /// shorter than the request timeout. The server, given the same
    /// deadline, drops the handler too.
    #[error("deadline of {0:?} exceeded before the response")]
    DeadlineExceeded(Duration),
    /// The connection ended before the response arrived; the source is why
    /// (for a clean close by the peer, [`netproto_transport::Error::PeerClosed`]).
    #[error("connection lost before the response arrived")]
    Disconnected(#[source] Arc<netproto_transport::Error>),
    /// The peer sent a goaway: it takes no new requests, and this request
    /// (with an id above `last_request_id`, or sent after the goaway) will not
    /// be processed. Retry it on another connection.
    #[error("peer is going away (code {}, last request {last_request_id})", code.0)]
    GoingAway {
        /// The highest request id the peer will still answer.
        last_request_id: u64,
        /// The peer's reason code, usually [`ErrorCode::SHUTTING_DOWN`].
        code: ErrorCode,
    },
    /// The connection was closed locally with [`Correlator::close`](crate::Correlator::close).
    #[error("connection closed")]
    Closed,
    /// The connection's send queue stayed full for this long
    /// ([`CorrelatorConfig::queue_timeout`](crate::CorrelatorConfig::queue_timeout)):
    /// the message was not sent.
    #[error("the send queue stayed full for {0:?}: not sent")]
    QueueFull(Duration),
    /// A configuration value is zero or out of range.
    #[error("invalid configuration: {0}")]
    Config(&'static str),
}

impl Error {
    /// The protocol error code behind this error, when there is one: the
    /// peer's code for [`Remote`](Self::Remote) and
    /// [`GoingAway`](Self::GoingAway), [`ErrorCode::TIMEOUT`] for
    /// [`Timeout`](Self::Timeout), [`ErrorCode::DEADLINE_EXCEEDED`] for
    /// [`DeadlineExceeded`](Self::DeadlineExceeded).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Remote { code, .. } | Self::GoingAway { code, .. } => Some(*code),
            Self::Timeout(_) => Some(ErrorCode::TIMEOUT),
            Self::DeadlineExceeded(_) => Some(ErrorCode::DEADLINE_EXCEEDED),
            _ => None,
        }
    }

    /// Whether the request's deadline passed: here
    /// ([`DeadlineExceeded`](Self::DeadlineExceeded)) or on the server (an
    /// error frame with [`ErrorCode::DEADLINE_EXCEEDED`]).
    pub fn is_deadline_exceeded(&self) -> bool {
        match self {
            Self::DeadlineExceeded(_) => true,
            Self::Remote { code, .. } => *code == ErrorCode::DEADLINE_EXCEEDED,
            _ => false,
        }
    }

    /// Whether time ran out, here or on the server: a local
    /// [`Timeout`](Self::Timeout), [`DeadlineExceeded`](Self::DeadlineExceeded)
    /// or [`QueueFull`](Self::QueueFull), or an error frame with
    /// [`ErrorCode::TIMEOUT`] or [`ErrorCode::DEADLINE_EXCEEDED`].
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::DeadlineExceeded(_) | Self::QueueFull(_) => true,
            Self::Remote { code, .. } => {
                *code == ErrorCode::TIMEOUT || *code == ErrorCode::DEADLINE_EXCEEDED
            }
            _ => false,
        }
    }

    /// Whether the connection under the correlator takes no more requests:
    /// it was lost ([`Disconnected`](Self::Disconnected)), closed here
    /// ([`Closed`](Self::Closed)), or the peer is going away
    /// ([`GoingAway`](Self::GoingAway)). New requests need a new connection.
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Self::Disconnected(_) | Self::Closed | Self::GoingAway { .. }
        )
    }

    /// Whether the request certainly was not processed by the peer, so that
    /// sending it again (elsewhere) cannot run it twice: refused before it
    /// was sent ([`Closed`](Self::Closed)), never out of a full send queue
    /// ([`QueueFull`](Self::QueueFull)), or above the peer's goaway
    /// ([`GoingAway`](Self::GoingAway)).
    pub fn is_unprocessed(&self) -> bool {
        matches!(
            self,
            Self::Closed | Self::QueueFull(_) | Self::GoingAway { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn predicates_sort_the_variants() {
        let lost = Error::Disconnected(Arc::new(netproto_transport::Error::PeerClosed));
        let going = Error::GoingAway {
            last_request_id: 3,
            code: ErrorCode::SHUTTING_DOWN,
        };
        let timeout = Error::Timeout(Duration::from_secs(1));
        assert!(lost.is_connection_lost() && !lost.is_unprocessed());
        assert!(going.is_connection_lost() && going.is_unprocessed());
        assert!(Error::Closed.is_connection_lost() && Error::Closed.is_unprocessed());
        assert!(!timeout.is_connection_lost() && !timeout.is_unprocessed());
        assert!(timeout.is_timeout() && !timeout.is_deadline_exceeded());
        let local = Error::DeadlineExceeded(Duration::from_millis(5));
        let remote = Error::Remote {
            request_id: 1,
            code: ErrorCode::DEADLINE_EXCEEDED,
            message: String::new(),
        };
        for deadline in [&local, &remote] {
            assert!(deadline.is_timeout() && deadline.is_deadline_exceeded());
        }
        assert!(!lost.is_timeout() && !lost.is_deadline_exceeded());
    }
}
