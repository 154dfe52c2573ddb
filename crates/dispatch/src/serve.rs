//! The per-connection server loop.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use netproto_transport::{Connection, Incoming, Receiver, Sender};
use netproto_wire::{DataFlags, ErrorCode, ErrorFrame, Frame, GoAway};
use tokio::sync::{Semaphore, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use crate::answer::{Counters, Limits, run_handler, send_outcome, try_answer};
use crate::context::deadline_of;
use crate::correlator::IdHasher;
use crate::dispatcher::Started;
use crate::stream::{Credit, run_stream};
use crate::trace::dispatch_span;
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
    /// [`ErrorCode::TIMEOUT`]. A request's own deadline (its `deadline`
    /// header) applies too, the earlier of the two winning. Synchronous
    /// handlers cannot be interrupted. Default 30 s.
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
/// the connection failed (`unanswered`), or was cancelled by the peer
/// (`cancelled`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeReport {
    /// Requests (id ≠ 0) taken for handling.
    pub requests: u64,
    /// Requests answered with a reply.
    pub replies: u64,
    /// Requests answered with an error frame (no handler, bad message,
    /// handler error or panic, timeout, deadline exceeded, reply too large).
    pub errors: u64,
    /// Requests answered with [`ErrorCode::DEADLINE_EXCEEDED`] (also
    /// counted in `errors`).
    pub deadlines_exceeded: u64,
    /// Requests the peer cancelled while their handler ran: the handler's
    /// future was dropped and nothing was answered.
    pub cancelled: u64,
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

/// The async handlers running, by request id.
type Running = HashMap<u64, AbortHandle, BuildHasherDefault<IdHasher>>;

/// The credit of the server streams running, by request id.
type Streams = HashMap<u64, Arc<Credit>, BuildHasherDefault<IdHasher>>;

/// State of one serve loop.
struct Serving {
    sender: Sender,
    running: Running,
    streams: Streams,
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
    /// [`ServeConfig::request_timeout`]. An async handler is polled once on
    /// the connection's task first: one that is ready at once (no await
    /// that waits) is answered there, without a task of its own; so keep
    /// blocking work out of handlers of either kind. One-way messages (id 0)
    /// are handled and never answered. Nothing is answered without a handler: register
    /// `PING` and `ECHO` handlers if you want them answered.
    ///
    /// A request's header block (PROTOCOL.md Part III §2) is taken off
    /// first; a malformed one ends the connection (an error frame with
    /// [`ErrorCode::BAD_MESSAGE`], then [`Error::Wire`]), and so does a
    /// data frame with the `STREAM` flag, which only responders send
    /// ([`ErrorCode::PROTOCOL`], Part III §4). A request whose
    /// `deadline` passes before its answer has its handler dropped and is
    /// answered [`ErrorCode::DEADLINE_EXCEEDED`] (a deadline already passed
    /// on arrival is answered so at once; a synchronous handler is not
    /// interrupted). A cancel frame for a running async handler drops it and
    /// nothing is answered; a cancel for anything else is ignored. Both are
    /// counted in the [`ServeReport`] and the [`ServeMetrics`].
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
        let (sender, mut receiver, info) = conn.split();
        let peer_key = info.peer_static;
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let mut tasks = JoinSet::new();
        let mut state = Serving {
            sender,
            counters: Arc::new(Counters {
                metrics: config.metrics.clone(),
                ..Counters::default()
            }),
            running: Running::default(),
            streams: Streams::default(),
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
            while let Some(joined) = tasks.try_join_next_with_id() {
                state.joined(joined);
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
                            Box::pin(state.go_away()).await;
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
                        Box::pin(state.go_away()).await;
                    }
                    continue;
                }
                Some(joined) = tasks.join_next_with_id(), if state.going_away => {
                    state.joined(joined);
                    continue;
                }
                item = receiver.recv() => item,
            };
            match item {
                Ok(Some(Incoming::Message(mut envelope))) => {
                    let id = envelope.request_id;
                    if envelope.flags.contains(DataFlags::STREAM) {
                        let error = netproto_wire::Error::ClientStream;
                        break Err(Box::pin(state.end_with(ErrorCode::PROTOCOL, error)).await);
                    }
                    if state.going_away {
                        Box::pin(state.refuse(id)).await;
                        continue;
                    }
                    // One test of a flag bit when there is no header block.
                    let headers = match envelope.take_headers() {
                        Ok(headers) => headers,
                        Err(error) => {
                            break Err(
                                Box::pin(state.end_with(ErrorCode::BAD_MESSAGE, error)).await
                            );
                        }
                    };
                    if id == 0 {
                        state.report.one_way += 1;
                    } else {
                        state.report.requests += 1;
                        state.last_taken = state.last_taken.max(id);
                    }
                    let span = dispatch_span(id, &envelope.msg_type, headers.as_ref());
                    let started = Instant::now();
                    let deadline = deadline_of(headers.as_ref());
                    let begun = if deadline.is_some_and(|at| at <= tokio::time::Instant::now()) {
                        Started::Done(state.counters.deadline_exceeded(id, "on arrival"))
                    } else {
                        span.in_scope(|| self.start(envelope, headers.as_ref(), deadline, peer_key))
                    };
                    let outcome = match begun {
                        Started::Done(outcome) => outcome,
                        Started::Stream(producer) if id != 0 => {
                            let credit = Arc::new(Credit::new(producer.credit));
                            let limits = Limits {
                                timeout: config.request_timeout,
                                deadline,
                            };
                            let sender = state.sender.clone();
                            let counters = state.counters.clone();
                            let stream = run_stream(
                                id,
                                producer,
                                credit.clone(),
                                limits,
                                sender,
                                counters,
                                permit,
                            );
                            state
                                .running
                                .insert(id, tasks.spawn(stream.instrument(span)));
                            state.streams.insert(id, credit);
                            continue;
                        }
                        Started::Stream(_) => {
                            tracing::debug!("one-way message to a stream handler ignored");
                            continue;
                        }
                        Started::Pending(mut future) => {
                            // Most handlers answer without waiting: one poll
                            // here saves a task, its timer and its entry in
                            // the cancel map. Only a handler that is not
                            // ready is spawned; its task polls it again, with
                            // its own waker.
                            let polled = std::future::poll_fn(|cx| {
                                Poll::Ready(span.in_scope(|| future.as_mut().poll(cx)))
                            })
                            .await;
                            if let Poll::Ready(outcome) = polled {
                                outcome
                            } else {
                                let sender = state.sender.clone();
                                let counters = state.counters.clone();
                                let timeout = config.request_timeout;
                                let limits = Limits { timeout, deadline };
                                let task = tasks.spawn(
                                    run_handler(id, future, limits, sender, counters, permit)
                                        .instrument(span),
                                );
                                if id != 0 {
                                    state.running.insert(id, task);
                                }
                                continue;
                            }
                        }
                    };
                    drop(permit);
                    if id != 0 {
                        config.metrics.request_duration.record(started.elapsed());
                    }
                    // Queued at once when there is room; only a full queue or
                    // an error takes the (boxed) path that waits, which keeps
                    // this loop's future, held by every connection, small.
                    if let Some(outcome) = try_answer(&state.sender, outcome, &state.counters) {
                        Box::pin(send_outcome(&state.sender, outcome, &state.counters))
                            .instrument(span)
                            .await;
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
                Ok(Some(Incoming::Cancel(id))) => state.cancel(id),
                Ok(Some(Incoming::Credit(credit))) => state.grant(credit),
                Ok(Some(_)) => {}
                Ok(None) => break Ok(()),
                Err(error) => break Err(Error::from(error)),
            }
        };
        match result {
            Ok(()) => {
                // The peer closed, or the shutdown is under way: answer
                // everything taken, then close the sending side.
                while let Some(joined) = tasks.join_next_with_id().await {
                    state.joined(joined);
                }
                if let Err(error) = state.sender.close().await {
                    tracing::debug!(%error, "cannot close the sending side");
                }
                if state.going_away && !config.linger.is_zero() {
                    let lingering = linger(&mut receiver, &mut state.report);
                    let _ = Box::pin(tokio::time::timeout(config.linger, lingering)).await;
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
                Err(error)
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

    /// Adds a credit frame's items to its stream's credit; a credit for no
    /// running stream (one just ended, say) is ignored.
    fn grant(&self, credit: netproto_wire::Credit) {
        match self.streams.get(&credit.request_id) {
            Some(stream) => stream.grant(credit.items),
            None => tracing::debug!(
                request_id = credit.request_id,
                "credit for no running stream ignored"
            ),
        }
    }

    /// Drops the handler of request `id` at the peer's cancel frame; a
    /// cancel for no running request is ignored.
    fn cancel(&mut self, id: u64) {
        self.streams.remove(&id);
        let Some(task) = self.running.remove(&id) else {
            tracing::debug!(request_id = id, "cancel for no running request ignored");
            return;
        };
        if task.is_finished() {
            return;
        }
        task.abort();
        tracing::debug!(request_id = id, "request cancelled by the peer");
        self.report.cancelled += 1;
        self.counters.metrics.cancelled.increment(1);
    }

    /// Forgets a finished handler task.
    fn joined(&mut self, joined: Result<(tokio::task::Id, u64), tokio::task::JoinError>) {
        let (task, id) = match joined {
            Ok(done) => done,
            Err(error) => {
                let task = error.id();
                log_join::<()>(Err(error));
                self.running.retain(|_, running| running.id() != task);
                let running = &self.running;
                self.streams.retain(|id, _| running.contains_key(id));
                return;
            }
        };
        // A request id the peer reused belongs to the newer task.
        if self
            .running
            .get(&id)
            .is_some_and(|running| running.id() == task)
        {
            self.running.remove(&id);
            self.streams.remove(&id);
        }
    }

    /// Ends the connection on the peer's violation: an error frame for the
    /// connection with `code` and the error's text, then the sending side is
    /// closed. A malformed header block is `BAD_MESSAGE`, as a malformed
    /// envelope (PROTOCOL.md Part III §2); a requester's stream item is
    /// `PROTOCOL` (§4).
    async fn end_with(&mut self, code: ErrorCode, error: netproto_wire::Error) -> Error {
        tracing::debug!(%error, "ending the connection");
        let frame = ErrorFrame::new(0, code, error.to_string());
        if let Err(error) = self.sender.send_frame(Frame::Error(frame)).await {
            tracing::debug!(%error, "cannot send the error frame");
        }
        if let Err(error) = self.sender.close().await {
            tracing::debug!(%error, "cannot close the sending side");
        }
        Error::Wire(error)
    }

    fn report(&self) -> ServeReport {
        let mut report = self.report;
        report.replies = self.counters.replies.load(Ordering::Relaxed);
        report.errors = self.counters.errors.load(Ordering::Relaxed);
        report.deadlines_exceeded = self.counters.deadlines_exceeded.load(Ordering::Relaxed);
        report.unanswered = report
            .requests
            .saturating_sub(report.replies)
            .saturating_sub(report.errors)
            .saturating_sub(report.cancelled);
        report
    }
}

/// Resolves to true once `shutdown` is true, or to false when its sender is
/// gone without having asked for shutdown.
async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) -> bool {
    shutdown.wait_for(|stop| *stop).await.is_ok()
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

fn log_join<T>(joined: Result<T, tokio::task::JoinError>) {
    if let Err(error) = joined
        && !error.is_cancelled()
    {
        tracing::debug!(%error, "handler task failed");
    }
}
