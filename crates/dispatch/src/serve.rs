//! The per-connection server loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use netproto_transport::{Connection, Incoming, Receiver, Sender};
use netproto_wire::{ErrorCode, ErrorFrame, Frame, GoAway};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dispatcher::{Outcome, Started};
use crate::{Dispatcher, Error, ServeMetrics};

/// Largest accepted [`ServeConfig::max_in_flight`].
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// Longest accepted timeout: one day, as in `netproto-transport`.
const MAX_DURATION: Duration = netproto_transport::MAX_DURATION;

/// Tunables of [`Dispatcher::serve`].
///
/// Mutate a default; [`serve`](Dispatcher::serve) validates it.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Async handlers run concurrently on one connection, at most. When this
    /// many are running the loop stops reading requests until one finishes,
    /// so the transport's inbound queue fills and TCP flow control pushes
    /// back on the peer. Synchronous handlers run inline and do not count.
    /// Default 256.
    pub max_in_flight: usize,
    /// An async handler still running after this long is cancelled (its
    /// future dropped) and the request answered with
    /// [`ErrorCode::TIMEOUT`]. Synchronous handlers cannot be interrupted.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// After a graceful shutdown has closed the sending side, keep reading
    /// (and discarding) what the peer still sends for at most this long, or
    /// until it closes too, so that closing the socket with unread data does
    /// not reset the connection before the peer has read the last replies.
    /// Zero skips it. Default 1 s.
    pub linger: Duration,
    /// Where request counts and handler times are recorded. Default: nowhere.
    pub metrics: ServeMetrics,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 256,
            request_timeout: Duration::from_secs(30),
            linger: Duration::from_secs(1),
            metrics: ServeMetrics::default(),
        }
    }
}

impl ServeConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first value that is zero or out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_in_flight == 0 || self.max_in_flight > MAX_IN_FLIGHT {
            return Err(Error::Config("max_in_flight must be between 1 and 2^20"));
        }
        if self.request_timeout < Duration::from_millis(1) || self.request_timeout > MAX_DURATION {
            return Err(Error::Config(
                "request_timeout must be between 1 ms and one day",
            ));
        }
        if self.linger > MAX_DURATION {
            return Err(Error::Config("linger must be at most one day"));
        }
        Ok(())
    }
}

/// What [`Dispatcher::serve`] did on one connection.
///
/// Every request received is counted once: it was taken (`requests`),
/// refused during shutdown (`refused`) or arrived after the sending side was
/// closed (`dropped`). Every request taken was answered with a reply
/// (`replies`) or an error frame (`errors`), or could not be answered because
/// the connection failed (`unanswered`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Requests (id ≠ 0) taken for handling.
    pub requests: u64,
    /// Requests answered with a reply.
    pub replies: u64,
    /// Requests answered with an error frame (no handler, bad message,
    /// handler error or panic, timeout, reply too large).
    pub errors: u64,
    /// Requests taken whose answer could not be sent.
    pub unanswered: u64,
    /// Requests refused with [`ErrorCode::SHUTTING_DOWN`] after the goaway.
    pub refused: u64,
    /// Requests that arrived after the sending side was closed; the peer
    /// sees the connection end instead of an answer.
    pub dropped: u64,
    /// One-way messages (id 0) handled.
    pub one_way: u64,
}

#[derive(Default)]
struct Counters {
    replies: AtomicU64,
    errors: AtomicU64,
    metrics: ServeMetrics,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// State of one serve loop.
struct Serving {
    sender: Sender,
    counters: Arc<Counters>,
    report: ServeReport,
    last_taken: u64,
    going_away: bool,
}

impl Dispatcher {
    /// Serves requests on `conn` until the peer closes it, the connection
    /// fails, or `shutdown` turns true and the shutdown completes.
    ///
    /// Each request goes to its handler (see [`dispatch`](Self::dispatch));
    /// its reply or error frame is sent back under its id. Synchronous
    /// handlers run inline; async handlers run concurrently, at most
    /// [`ServeConfig::max_in_flight`] at a time, each bounded by
    /// [`ServeConfig::request_timeout`]. One-way messages (id 0) are handled
    /// and never answered. Nothing is answered without a handler: register
    /// `PING` and `ECHO` handlers if you want them answered.
    ///
    /// When the peer closes the connection, handlers already running finish
    /// before this returns; their answers are sent if the connection can
    /// still send (`netproto-transport` currently stops sending as soon as
    /// the peer's end of stream arrives, so they are then counted as
    /// `unanswered`).
    ///
    /// Graceful shutdown: when `shutdown` becomes true (a dropped sender
    /// does not count), a [`GoAway`] with [`ErrorCode::SHUTTING_DOWN`] and
    /// the highest request id taken is sent; requests arriving after it are
    /// refused with an [`ErrorCode::SHUTTING_DOWN`] error frame; handlers
    /// in flight finish and their answers are sent; then the sending side is
    /// closed (after a [linger](ServeConfig::linger)). Bound the whole call
    /// with your own timeout: a handler may never finish.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid `config`; [`Error::Transport`] when
    /// the connection fails (a timeout, a protocol violation...). Handlers
    /// still running are then cancelled, since their answers cannot be sent.
    pub async fn serve(
        self: &Arc<Self>,
        conn: Connection,
        config: &ServeConfig,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<ServeReport, Error> {
        config.validate()?;
        let (sender, mut receiver, _info) = conn.split();
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut state = Serving {
            sender,
            counters: Arc::new(Counters {
                metrics: config.metrics.clone(),
                ..Counters::default()
            }),
            report: ServeReport::default(),
            last_taken: 0,
            going_away: false,
        };
        let mut watch_shutdown = true;
        // One future for the whole connection: it completes at most once,
        // and re-polling it costs nothing, unlike a new one per message.
        let shutdown_signal = shutdown_signalled(&mut shutdown);
        tokio::pin!(shutdown_signal);
        tracing::debug!("serving connection");
        let result = loop {
            while let Some(joined) = tasks.try_join_next() {
                log_join(joined);
            }
            if state.going_away && tasks.is_empty() {
                break Ok(());
            }
            // Refusals during shutdown need no permit.
            let permit = if state.going_away {
                None
            } else if let Ok(permit) = permits.clone().try_acquire_owned() {
                Some(permit)
            } else {
                tokio::select! {
                    biased;
                    signalled = &mut shutdown_signal, if watch_shutdown => {
                        watch_shutdown = false;
                        if signalled {
                            state.go_away().await;
                        }
                        continue;
                    }
                    permit = permits.clone().acquire_owned() => permit.ok(),
                }
            };
            let item = tokio::select! {
                biased;
                signalled = &mut shutdown_signal,
                    if watch_shutdown && !state.going_away =>
                {
                    watch_shutdown = false;
                    if signalled {
                        state.go_away().await;
                    }
                    continue;
                }
                Some(joined) = tasks.join_next(), if state.going_away => {
                    log_join(joined);
                    continue;
                }
                item = receiver.recv() => item,
            };
            match item {
                Ok(Some(Incoming::Message(envelope))) => {
                    let id = envelope.request_id;
                    if state.going_away {
                        state.refuse(id).await;
                        continue;
                    }
                    if id == 0 {
                        state.report.one_way += 1;
                    } else {
                        state.report.requests += 1;
                        state.last_taken = state.last_taken.max(id);
                    }
                    let span = tracing::debug_span!(
                        "dispatch",
                        request_id = id,
                        msg_type = %envelope.msg_type,
                    );
                    let started = Instant::now();
                    match span.in_scope(|| self.start(envelope)) {
                        Started::Done(outcome) => {
                            drop(permit);
                            if id != 0 {
                                config.metrics.request_duration.record(started.elapsed());
                            }
                            send_outcome(&state.sender, outcome, &state.counters)
                                .instrument(span)
                                .await;
                        }
                        Started::Pending(future) => {
                            let sender = state.sender.clone();
                            let counters = state.counters.clone();
                            let timeout = config.request_timeout;
                            tasks.spawn(
                                run_handler(id, future, timeout, sender, counters, permit)
                                    .instrument(span),
                            );
                        }
                    }
                }
                Ok(Some(Incoming::GoAway(goaway))) => {
                    tracing::debug!(
                        code = goaway.code.0,
                        last_request_id = goaway.last_request_id,
                        "peer is going away"
                    );
                }
                Ok(Some(Incoming::Error(error))) => {
                    tracing::debug!(
                        request_id = error.request_id,
                        code = error.code.0,
                        error = ?error.message,
                        "peer reported an error"
                    );
                }
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(error) => break Err(error),
            }
        };
        match result {
            Ok(()) => {
                // The peer closed, or the shutdown is under way: answer
                // everything taken, then close the sending side.
                while let Some(joined) = tasks.join_next().await {
                    log_join(joined);
                }
                if let Err(error) = state.sender.close().await {
                    tracing::debug!(%error, "cannot close the sending side");
                }
                if state.going_away && !config.linger.is_zero() {
                    let _ = tokio::time::timeout(
                        config.linger,
                        linger(&mut receiver, &mut state.report),
                    )
                    .await;
                }
                let report = state.report();
                tracing::debug!(?report, "connection served");
                Ok(report)
            }
            Err(error) => {
                tracing::debug!(%error, "connection failed while serving");
                tasks.abort_all();
                while let Some(joined) = tasks.join_next().await {
                    log_join(joined);
                }
                tracing::debug!(report = ?state.report(), "connection served");
                Err(error.into())
            }
        }
    }
}

impl Serving {
    /// Sends the goaway, once.
    async fn go_away(&mut self) {
        if self.going_away {
            return;
        }
        self.going_away = true;
        tracing::debug!(last_request_id = self.last_taken, "going away");
        let goaway = GoAway::new(self.last_taken, ErrorCode::SHUTTING_DOWN, "shutting down");
        if let Err(error) = self.sender.send_frame(Frame::GoAway(goaway)).await {
            tracing::debug!(%error, "cannot send goaway");
        }
    }

    /// Answers a request that arrived after the goaway.
    async fn refuse(&mut self, request_id: u64) {
        if request_id == 0 {
            tracing::debug!("one-way message after goaway ignored");
            return;
        }
        let frame = ErrorFrame::new(request_id, ErrorCode::SHUTTING_DOWN, "shutting down");
        match self.sender.send_frame(Frame::Error(frame)).await {
            Ok(()) => {
                self.report.refused += 1;
                self.counters.metrics.refused.increment(1);
            }
            Err(error) => {
                tracing::debug!(request_id, %error, "cannot refuse request");
                self.report.dropped += 1;
            }
        }
    }

    fn report(&self) -> ServeReport {
        let mut report = self.report;
        report.replies = self.counters.replies.load(Ordering::Relaxed);
        report.errors = self.counters.errors.load(Ordering::Relaxed);
        report.unanswered = report
            .requests
            .saturating_sub(report.replies)
            .saturating_sub(report.errors);
        report
    }
}

/// Resolves to true once `shutdown` is true, or to false when its sender is
/// gone without having asked for shutdown.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) -> bool {
    shutdown.wait_for(|stop| *stop).await.is_ok()
}

/// Runs an async handler under the request timeout and sends its answer.
async fn run_handler(
    request_id: u64,
    future: crate::handler::BoxFuture<Outcome>,
    timeout: Duration,
    sender: Sender,
    counters: Arc<Counters>,
    permit: Option<OwnedSemaphorePermit>,
) {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(timeout, future).await {
        Ok(outcome) => outcome,
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
}

/// Sends a reply or an error frame, and counts it once it is queued.
async fn send_outcome(sender: &Sender, outcome: Outcome, counters: &Counters) {
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

/// Reads and discards what the peer still sends after our sending side is
/// closed, until it closes too.
async fn linger(receiver: &mut Receiver, report: &mut ServeReport) {
    loop {
        match receiver.recv().await {
            Ok(Some(Incoming::Message(envelope))) => {
                if envelope.request_id != 0 {
                    report.dropped += 1;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(error) = joined
        && !error.is_cancelled()
    {
        tracing::debug!(%error, "handler task failed");
    }
}
