//! Answering one request: running its handler within its limits, sending
//! the outcome, and counting it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netproto_transport::Sender;
use netproto_wire::{ErrorCode, ErrorFrame, Frame};
use tokio::sync::OwnedSemaphorePermit;

use crate::ServeMetrics;
use crate::dispatcher::Outcome;

/// Per-connection counts of the answers sent, and where metrics go.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) replies: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) deadlines_exceeded: AtomicU64,
    pub(crate) metrics: ServeMetrics,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The answer to request `id` whose deadline passed (`when`), counted.
    pub(crate) fn deadline_exceeded(&self, id: u64, when: &str) -> Outcome {
        tracing::debug!(request_id = id, "deadline exceeded {when}");
        if id != 0 {
            Self::add(&self.deadlines_exceeded);
            self.metrics.deadlines_exceeded.increment(1);
        }
        Outcome::error(
            id,
            ErrorCode::DEADLINE_EXCEEDED,
            format!("the request's deadline passed {when}"),
        )
    }
}

/// How long an async handler may run.
pub(crate) struct Limits {
    /// The server's request timeout.
    pub(crate) timeout: Duration,
    /// The request's own deadline, if it has one.
    pub(crate) deadline: Option<tokio::time::Instant>,
}

/// Runs an async handler under the request timeout and the request's
/// deadline, the earlier winning, and sends its answer. Returns the
/// request's id.
pub(crate) async fn run_handler(
    request_id: u64,
    future: crate::handler::BoxFuture<Outcome>,
    limits: Limits,
    sender: Sender,
    counters: Arc<Counters>,
    permit: Option<OwnedSemaphorePermit>,
) -> u64 {
    let started = Instant::now();
    let timeout = limits.timeout;
    // The clock is read again only for a request with a deadline.
    let deadline = limits
        .deadline
        .filter(|deadline| *deadline < tokio::time::Instant::now() + timeout);
    let finished = match deadline {
        None => tokio::time::timeout(timeout, future).await,
        Some(deadline) => tokio::time::timeout_at(deadline, future).await,
    };
    let outcome = match finished {
        Ok(outcome) => outcome,
        Err(_) if deadline.is_some() => counters.deadline_exceeded(request_id, "before the answer"),
        Err(_) => {
            tracing::debug!(?timeout, "handler timed out");
            Outcome::error(
                request_id,
                ErrorCode::TIMEOUT,
                format!("handler did not finish within {timeout:?}"),
            )
        }
    };
    if request_id != 0 {
        counters.metrics.request_duration.record(started.elapsed());
    }
    send_outcome(&sender, outcome, &counters).await;
    drop(permit);
    request_id
}

/// Queues a reply at once if the send queue has room, and counts it; the
/// outcome is handed back when it must go through [`send_outcome`] instead
/// (a full queue, an error frame, a failure to report).
pub(crate) fn try_answer(
    sender: &Sender,
    outcome: Outcome,
    counters: &Counters,
) -> Option<Outcome> {
    match outcome {
        Outcome::Reply(reply) => match sender.try_send(reply.clone()) {
            Ok(()) => {
                Counters::add(&counters.replies);
                counters.metrics.replies.increment(1);
                None
            }
            Err(_) => Some(Outcome::Reply(reply)),
        },
        Outcome::NoReply => None,
        error @ Outcome::Error(_) => Some(error),
    }
}

/// Sends a reply or an error frame, and counts it once it is queued.
pub(crate) async fn send_outcome(sender: &Sender, outcome: Outcome, counters: &Counters) {
    let error = match outcome {
        Outcome::Reply(reply) => {
            let request_id = reply.request_id;
            match sender.send(reply).await {
                Ok(()) => {
                    Counters::add(&counters.replies);
                    counters.metrics.replies.increment(1);
                    return;
                }
                Err(netproto_transport::Error::Protocol(error)) => {
                    tracing::debug!(%error, "reply too large for the peer");
                    ErrorFrame::new(
                        request_id,
                        ErrorCode::TOO_LARGE,
                        "reply exceeds the peer's frame limit",
                    )
                }
                Err(error) => {
                    tracing::debug!(%error, "reply not sent");
                    return;
                }
            }
        }
        Outcome::Error(error) => error,
        Outcome::NoReply => return,
    };
    match sender.send_frame(Frame::Error(error)).await {
        Ok(()) => {
            Counters::add(&counters.errors);
            counters.metrics.errors.increment(1);
        }
        Err(error) => tracing::debug!(%error, "error frame not sent"),
    }
}
