//! The client side: many requests in flight on one connection, matched to
//! their responses by request id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use netproto_transport::{Connection, ConnectionInfo, Incoming, Sender};
use netproto_wire::{Envelope, Message, MessageType};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

mod config;
mod options;
mod reader;
mod state;
mod stream;

pub use config::{CorrelatorConfig, MAX_UNSOLICITED};
use options::Forget;
pub use options::RequestOptions;
use reader::Reader;
pub(crate) use state::IdHasher;
use state::{Closed, Pending, Shared, State};
pub use stream::{MAX_STREAM_CREDIT, ServerStream};

use crate::Error;

/// Messages from the peer that answer no request: one-way messages (id 0),
/// the peer's [`GoAway`](netproto_wire::GoAway), and connection-level error frames (id 0).
///
/// The queue is bounded by [`CorrelatorConfig::unsolicited_limit`]: while
/// it is full the connection's reader waits (and so do responses). Dropping
/// this discards unsolicited messages from then on (each is logged at
/// debug level). It ends (`recv` returns `None`) when the connection does.
#[derive(Debug)]
pub struct Unsolicited {
    rx: mpsc::Receiver<Incoming>,
}

impl Unsolicited {
    /// The next unsolicited message, or `None` once the connection has ended.
    pub async fn recv(&mut self) -> Option<Incoming> {
        self.rx.recv().await
    }

    /// The next unsolicited message if one is queued.
    pub fn try_recv(&mut self) -> Option<Incoming> {
        self.rx.try_recv().ok()
    }
}

/// The client side of request/response over one [`Connection`].
///
/// Requests get ids counting up from 1 and may be in flight by the
/// thousand, from many tasks at once (share it in an `Arc`); one reader task
/// matches each response or error frame to its request by id.
///
/// - A response completes its request; an error frame fails it with
///   [`Error::Remote`], carrying the peer's code and text.
/// - A request without an answer within its timeout fails with
///   [`Error::Timeout`], also when it is still waiting to be queued (the
///   send queue is full while the peer does not read), or earlier with
///   [`Error::QueueFull`], not sent, after
///   [`CorrelatorConfig::queue_timeout`] of waiting to be queued.
/// - When the connection ends, every pending request fails with
///   [`Error::Disconnected`], whose source says why. None is silently lost.
/// - After the peer's [`GoAway`](netproto_wire::GoAway), new requests and pending ones above its
///   `last_request_id` fail at once with [`Error::GoingAway`]; the others
///   still complete.
///
/// A request with [`RequestOptions`] carries a header block (deadline, trace
/// context, fingerprint); its deadline is also its local timeout when it is
/// the shorter, failing it with [`Error::DeadlineExceeded`].
///
/// Dropping a request's future before its answer forgets the request and
/// sends the peer a cancel frame for it (from a spawned task: the drop
/// never blocks), so that the server drops its handler; so does a request
/// that times out here ([`Error::Timeout`]; at a deadline the server stops
/// by itself). [`cancelled`](Self::cancelled) counts them.
///
/// Dropping the correlator stops its reader and closes the connection.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, ServeConfig};
/// use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
/// use netproto_wire::Message;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (client_io, server_io) = tokio::io::duplex(64 * 1024);
/// let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default())?;
/// let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default())?;
/// let dispatcher = Arc::new(Dispatcher::default());
/// dispatcher.register("PING", |_| Ok(Message::Pong));
///
/// let server_dispatcher = dispatcher.clone();
/// let server = tokio::spawn(async move {
///     let conn = acceptor.accept(server_io).await?;
///     let (_stop, shutdown) = tokio::sync::watch::channel(false);
///     let report = server_dispatcher.serve(conn, &ServeConfig::default(), shutdown).await?;
///     Ok::<_, netproto_dispatch::Error>(report)
/// });
///
/// let conn = connector.connect(client_io).await?;
/// let (client, _unsolicited) = Correlator::new(conn, &CorrelatorConfig::default())?;
/// assert_eq!(client.request(&Message::Ping).await?, Message::Pong);
/// client.close().await?;
///
/// let report = server.await??;
/// assert_eq!(report.replies, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Correlator {
    sender: Sender,
    shared: Arc<Shared>,
    next_id: AtomicU64,
    request_timeout: Duration,
    queue_timeout: Option<Duration>,
    capacity: Arc<Semaphore>,
    reader: AbortHandle,
    sweeper: AbortHandle,
    info: ConnectionInfo,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("pending", &self.lock().pending.len())
            .finish_non_exhaustive()
    }
}

impl Correlator {
    /// Takes over `conn`: starts the reader task and returns the correlator
    /// and the queue of unsolicited messages.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid `config`.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (the reader is a spawned task).
    pub fn new(conn: Connection, config: &CorrelatorConfig) -> Result<(Self, Unsolicited), Error> {
        config.validate()?;
        let (sender, receiver, info) = conn.split();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            idle: Notify::new(),
            sweep: Notify::new(),
            cancelled: AtomicU64::new(0),
        });
        let (unsolicited_tx, unsolicited_rx) = mpsc::channel(config.unsolicited_limit);
        let reader = Reader {
            shared: shared.clone(),
            sender: sender.clone(),
            unsolicited: Some(unsolicited_tx),
        };
        let span = tracing::debug_span!("dispatch");
        let reader = tokio::spawn(reader.run(receiver).instrument(span)).abort_handle();
        let sweeper = tokio::spawn(shared.clone().sweep()).abort_handle();
        let correlator = Self {
            sender,
            shared,
            next_id: AtomicU64::new(1),
            request_timeout: config.request_timeout,
            queue_timeout: config.queue_timeout,
            capacity: Arc::new(Semaphore::new(config.max_in_flight)),
            reader,
            sweeper,
            info,
        };
        Ok((correlator, Unsolicited { rx: unsolicited_rx }))
    }

    /// What the connection's handshake established about the peer.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The connection's in-flight budget
    /// ([`CorrelatorConfig::max_in_flight`] permits): callers that must not
    /// overrun the peer take a permit before sending and hold it until the
    /// answer. Typed calls do; this correlator's own methods do not.
    pub fn capacity(&self) -> &Arc<Semaphore> {
        &self.capacity
    }

    /// Whether a request sent now could go out: `Ok` while the connection
    /// is open, and otherwise the error the request would fail with
    /// ([`Error::Closed`], [`Error::GoingAway`] or [`Error::Disconnected`]).
    ///
    /// # Errors
    ///
    /// As above.
    pub fn check_open(&self) -> Result<(), Error> {
        refuse(&self.shared.lock()).map_or(Ok(()), Err)
    }

    /// Requests sent and not yet answered.
    pub fn pending(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Requests whose caller stopped waiting before the answer, or that
    /// timed out here, and that were cancelled with a cancel frame, since
    /// the start.
    pub fn cancelled(&self) -> u64 {
        self.shared.cancelled.load(Ordering::Relaxed)
    }

    /// Sends `message` as a request and waits for the reply, decoded as a
    /// [`Message`].
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] when the peer answers with an error frame;
    /// [`Error::Timeout`]; [`Error::QueueFull`] when the send queue stayed
    /// full for [`CorrelatorConfig::queue_timeout`] (not sent);
    /// [`Error::Disconnected`]; [`Error::GoingAway`];
    /// [`Error::Closed`] after [`close`](Self::close); [`Error::Transport`]
    /// when the message is larger than the peer accepts; [`Error::Wire`]
    /// when the reply is a built-in type whose payload does not decode.
    pub async fn request(&self, message: &Message) -> Result<Message, Error> {
        self.request_with_timeout(message, self.request_timeout)
            .await
    }

    /// As [`request`](Self::request), with another timeout for this request.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_with_timeout(
        &self,
        message: &Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let envelope = message.to_envelope(0);
        let reply = self
            .call(envelope.msg_type, envelope.payload, timeout, None)
            .await?;
        Ok(Message::try_from(reply)?)
    }

    /// Sends a request of type `msg_type` with `payload` and waits for the
    /// reply envelope, whose payload is a zero-copy slice of the received frame.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), without [`Error::Wire`].
    pub async fn request_raw(
        &self,
        msg_type: MessageType,
        payload: Bytes,
    ) -> Result<Envelope, Error> {
        self.call(msg_type, payload, self.request_timeout, None)
            .await
    }

    /// As [`request_raw`](Self::request_raw), with a header block made of
    /// `options` (none when they are [empty](RequestOptions::is_empty)). The
    /// local timeout is the shorter of the options' deadline and the
    /// correlator's request timeout.
    ///
    /// # Errors
    ///
    /// As [`request_raw`](Self::request_raw); [`Error::DeadlineExceeded`]
    /// when the deadline passes here first, [`Error::Remote`] with
    /// [`ErrorCode::DEADLINE_EXCEEDED`](netproto_wire::ErrorCode::DEADLINE_EXCEEDED)
    /// when it passed on the server (both are
    /// [`is_deadline_exceeded`](Error::is_deadline_exceeded)).
    pub async fn request_raw_with(
        &self,
        msg_type: MessageType,
        payload: Bytes,
        options: &RequestOptions,
    ) -> Result<Envelope, Error> {
        self.call(msg_type, payload, self.request_timeout, Some(options))
            .await
    }

    /// As [`request_raw`](Self::request_raw), with another timeout for this request.
    ///
    /// # Errors
    ///
    /// As [`request_raw`](Self::request_raw).
    pub async fn request_raw_with_timeout(
        &self,
        msg_type: MessageType,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<Envelope, Error> {
        self.call(msg_type, payload, timeout, None).await
    }

    /// Sends a request of type `msg_type` with `payload` that asks for a
    /// server stream (PROTOCOL.md Part III §4) granting `initial_credit`
    /// items, with a header block made of `options`, and returns the
    /// stream once the request is queued.
    ///
    /// The [`ServerStream`] buffers at most `initial_credit` items and
    /// grants as many again as the application takes them (half the credit
    /// at a time); a responder that sends beyond the credit ends the
    /// connection (`stream item beyond its credit`). The correlator's
    /// request timeout does not apply to a stream: its deadline (in
    /// `options`) does, as a local deadline too. A responder that answers
    /// with a plain reply instead gives a stream of that one item.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a credit of 0 or above [`MAX_STREAM_CREDIT`];
    /// [`Error::Closed`], [`Error::GoingAway`] or [`Error::Disconnected`]
    /// when no request may be sent; [`Error::Transport`] when the request
    /// is larger than the peer accepts; [`Error::Timeout`] (or
    /// [`Error::DeadlineExceeded`] with a deadline) when the send queue
    /// stays full for the request timeout (or the deadline), or
    /// [`Error::QueueFull`] for the queue timeout, if shorter. The stream's own failures are its
    /// items.
    pub async fn request_stream(
        &self,
        msg_type: MessageType,
        payload: Bytes,
        options: &RequestOptions,
        initial_credit: u32,
    ) -> Result<ServerStream, Error> {
        if initial_credit == 0 || initial_credit > MAX_STREAM_CREDIT {
            return Err(Error::Config(
                "a stream's initial credit must be between 1 and 2^20",
            ));
        }
        let id = self.next_id();
        let (mut stream, slot) = ServerStream::open(
            &self.shared,
            &self.sender,
            id,
            initial_credit,
            options.deadline,
        );
        {
            let mut state = self.shared.lock();
            if let Some(error) = refuse(&state) {
                return Err(error);
            }
            state.streams.insert(id, slot);
        }
        let envelope = options.envelope(
            id,
            msg_type,
            payload,
            options.deadline,
            Some(initial_credit),
        );
        // Room in a full send queue is awaited for the request timeout (or
        // the deadline) at most, as for any request.
        let wait = options.deadline.unwrap_or(self.request_timeout);
        match self
            .send_by(envelope, Some((Instant::now() + wait, wait)))
            .await
        {
            Err(Error::Timeout(_)) if options.deadline.is_some() => {
                return Err(Error::DeadlineExceeded(wait));
            }
            sent => sent?,
        }
        stream.sent = true;
        Ok(stream)
    }

    /// Sends `message` one-way (request id 0): no reply is expected.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] after [`close`](Self::close); [`Error::Disconnected`]
    /// when the connection has ended; [`Error::Transport`] when the message is
    /// larger than the peer accepts; [`Error::QueueFull`] when the send queue
    /// stayed full for [`CorrelatorConfig::queue_timeout`].
    pub async fn send_oneway(&self, message: &Message) -> Result<(), Error> {
        self.send_oneway_raw(message.to_envelope(0)).await
    }

    /// Sends an envelope one-way; its request id is set to 0.
    ///
    /// # Errors
    ///
    /// As [`send_oneway`](Self::send_oneway).
    pub async fn send_oneway_raw(&self, mut envelope: Envelope) -> Result<(), Error> {
        envelope.request_id = 0;
        self.check_open()?;
        self.send_by(envelope, None).await
    }

    /// Closes the connection gracefully: new requests fail with
    /// [`Error::Closed`] at once; requests already pending complete (each
    /// within its timeout); then the sending side is closed after everything
    /// queued, and the peer sees the end of the stream.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] with [`netproto_transport::Error::Closed`] when the
    /// connection had already ended.
    pub async fn close(&self) -> Result<(), Error> {
        {
            let mut state = self.shared.lock();
            if state.closed.is_none() {
                state.closed = Some(Closed::Locally);
            }
        }
        self.shared.wait_idle().await;
        Ok(self.sender.close().await?)
    }

    fn next_id(&self) -> u64 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Maps a failed send: a closed queue means the connection is gone.
    fn send_error(&self, error: netproto_transport::Error) -> Error {
        if matches!(error, netproto_transport::Error::Closed)
            && let Some(refused) = refuse(&self.shared.lock())
        {
            return refused;
        }
        Error::Transport(error)
    }

    /// Queues a message, waiting while the send queue is full (a peer that
    /// stopped reading fills it), but not past the request's `deadline`
    /// (then it has timed out after `timeout`), nor past the queue timeout,
    /// whichever comes first. A timer is armed only when the queue is full.
    async fn send_by(
        &self,
        envelope: Envelope,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<(), Error> {
        let mut send = std::pin::pin!(self.sender.send(envelope));
        let sent = match std::future::poll_fn(|cx| Poll::Ready(send.as_mut().poll(cx))).await {
            Poll::Ready(sent) => sent,
            Poll::Pending => {
                let request = deadline.map(|(by, timeout)| (by, Error::Timeout(timeout)));
                let queue = self
                    .queue_timeout
                    .map(|limit| (Instant::now() + limit, Error::QueueFull(limit)));
                let first = match (request, queue) {
                    (Some(request), Some(queue)) if queue.0 < request.0 => Some(queue),
                    (request, queue) => request.or(queue),
                };
                match first {
                    Some((by, error)) => {
                        tokio::time::timeout_at(by, send).await.map_err(|_| error)?
                    }
                    None => send.await,
                }
            }
        };
        sent.map_err(|error| self.send_error(error))
    }

    async fn call(
        &self,
        msg_type: MessageType,
        payload: Bytes,
        timeout: Duration,
        options: Option<&RequestOptions>,
    ) -> Result<Envelope, Error> {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let budget = options.and_then(|options| options.deadline);
        let by_deadline = budget.is_some_and(|budget| budget < timeout);
        let timeout = budget.map_or(timeout, |budget| budget.min(timeout));
        let deadline = Instant::now() + timeout;
        let wake_sweeper = {
            let mut state = self.shared.lock();
            if let Some(error) = refuse(&state) {
                return Err(error);
            }
            let pending = Pending {
                waiter: tx,
                deadline,
                timeout,
                by_deadline,
            };
            state.pending.insert(id, pending);
            // With one timeout for all requests, deadlines only grow: the
            // sweeper needs waking only when it sleeps without a deadline.
            let earlier = state.armed.is_none_or(|armed| deadline < armed);
            if earlier {
                state.armed = Some(deadline);
            }
            earlier
        };
        if wake_sweeper {
            self.shared.sweep.notify_one();
        }
        // From here on, leaving early (an error, or the caller dropping this
        // future) must forget the request.
        let mut guard = Forget {
            shared: &self.shared,
            sender: &self.sender,
            id,
            armed: true,
            sent: false,
        };
        let envelope = match options {
            None => Envelope::new(id, msg_type, payload),
            Some(options) => options.envelope(id, msg_type, payload, budget, None),
        };
        self.send_by(envelope, Some((deadline, timeout))).await?;
        guard.sent = true;
        // The reader answers, or the sweeper fails it at its deadline.
        let result = match rx.await {
            Ok(result) => {
                // Whoever answered has removed the request already.
                guard.armed = false;
                // Timed out here: the server need not work on it any more.
                // (At a deadline the server, given the same one, stops
                // by itself and counts it.)
                if let Err(Error::Timeout(_)) = result {
                    options::send_cancel(&self.shared, &self.sender, id);
                }
                result
            }
            // The reader answers every waiter before it goes; a closed
            // channel can only mean it was aborted.
            Err(_) => Err(Error::Disconnected(Arc::new(
                netproto_transport::Error::Closed,
            ))),
        };
        drop(guard);
        result
    }
}

impl Drop for Correlator {
    fn drop(&mut self) {
        self.reader.abort();
        self.sweeper.abort();
        self.shared.streams_fail(|_| true, || Error::Closed);
    }
}

/// Why a new request cannot be sent now, if it cannot.
///
/// After a goaway, new requests fail with [`Error::GoingAway`] even once the
/// connection has ended, so that callers can tell that such a request was
/// never sent (and may go elsewhere) from one lost in flight.
fn refuse(state: &State) -> Option<Error> {
    if let Some(Closed::Locally) = state.closed {
        return Some(Error::Closed);
    }
    if let Some((last_request_id, code)) = state.goaway {
        return Some(Error::GoingAway {
            last_request_id,
            code,
        });
    }
    match &state.closed {
        Some(Closed::Lost(cause)) => Some(Error::Disconnected(cause.clone())),
        _ => None,
    }
}
