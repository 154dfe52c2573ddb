//! A framed connection: a reader task and a writer task over one stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use netproto_compress::Codec;
use netproto_crypto::{Capabilities, Opener, PublicKey, Sealer};
use netproto_wire::{
    Compression, Data, Decoder, Encoder, Envelope, ErrorFrame, Frame, GoAway, READ_CHUNK,
    SecurityMode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::recv_pool::RecvPool;
use crate::stats::Counters;
use crate::{ConnectionConfig, ConnectionStats, Error, Io, TimeoutKind};

/// What the application receives.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message (request, response or one-way).
    Message(Envelope),
    /// The peer is shutting down: no new requests; those up to
    /// `last_request_id` will still be answered.
    GoAway(GoAway),
    /// The peer reports an error, for one request or for the connection.
    Error(ErrorFrame),
}

/// What the handshake established about the peer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// How the connection is protected.
    pub mode: SecurityMode,
    /// The peer's static key, in Noise mode.
    pub peer_static: Option<PublicKey>,
    /// The peer's verified end-entity certificate, in TLS mode (the client's
    /// only with mutual TLS).
    pub peer_certificate: Option<rustls_pki_types::CertificateDer<'static>>,
    /// What both sides agreed in the Noise handshake.
    pub capabilities: Option<Capabilities>,
    /// Largest data-frame body the peer accepts.
    pub peer_max_frame_len: u32,
    /// The compression this side applies to large bodies.
    pub compression: Compression,
}

/// The security layer between frames and the stream.
pub(crate) enum Protection {
    /// Frames go straight to the stream (plain mode, or inside TLS).
    Plain,
    /// Frames are the plaintext of Noise records.
    Noise {
        /// Seals what we send.
        sealer: Box<Sealer>,
        /// Opens what we receive.
        opener: Box<Opener>,
    },
}

/// The send queue: frames already encoded by the senders, waiting for the
/// writer. Senders append under a short lock (no channel hop per message);
/// the writer swaps the whole buffer out at once.
struct Outgoing {
    state: Mutex<OutState>,
    /// Wakes the writer when the queue becomes non-empty or closes.
    writer: Notify,
    /// Wakes senders waiting for room.
    space: Notify,
    /// The queue bound, in frames.
    limit: usize,
    /// The queue bound, in bytes: past it senders wait too (one frame is
    /// always accepted into an empty queue, whatever its size).
    max_bytes: usize,
    encoder: Encoder,
    compression: Compression,
    compression_threshold: usize,
    /// Compression contexts, used outside the queue lock.
    codec: Mutex<Codec>,
    stats: ConnectionStats,
}

/// Payloads at least this large are queued by reference and written with a
/// vectored write (or sealed straight from the application's buffer), not
/// copied into the send queue.
const SEGMENT_MIN: usize = 8 * 1024;

/// Spent record headers and tags kept between the plaintext of a frame in
/// progress and the ciphertext behind it before they are squeezed out.
const MAX_GAP: usize = 1024;

/// Compressed bodies declaring at least this many bytes are decompressed on
/// a blocking thread (see `Reader::decompress_aside`): about 50 us of work
/// and more.
const OFFLOAD_DECOMPRESSION: u32 = 64 * 1024;

/// The uncompressed length a compressed body declares; 0 for a plain one (or
/// one too short to declare anything, which decompression then refuses).
fn declared_len(body: &Data) -> u32 {
    if body.compression == Compression::None {
        return 0;
    }
    netproto_compress::declared_len(&body.body).unwrap_or(0)
}

/// Send buffers with more capacity than this are given back once the
/// connection has written no batch that needed them for a while (a heartbeat
/// interval, or [`SEND_BUFFER_LINGER`]): a burst of large messages should
/// not pin its batch buffers for the connection's life.
const IDLE_SEND_BUFFER: usize = 64 * 1024;

/// How long buffers a large batch grew are kept after it on a connection
/// without heartbeats.
const SEND_BUFFER_LINGER: Duration = Duration::from_secs(15);

/// Replaces `buf` with an empty buffer if it holds more than
/// [`IDLE_SEND_BUFFER`] of capacity and nothing else.
fn shrink_idle(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > IDLE_SEND_BUFFER {
        *buf = BytesMut::new();
    }
}

/// Room for a read while nothing is in progress and the last read did not
/// fill its buffer: idle connections hold a small buffer, not a full
/// [`READ_CHUNK`] each.
const IDLE_READ: usize = 4 * 1024;

#[derive(Default)]
struct OutState {
    /// What goes out first: encoded bytes split off `frames` and large
    /// payloads queued without copying, in order.
    segments: Vec<Bytes>,
    /// Bytes in `segments`.
    segment_bytes: usize,
    /// Encoded frames, after `segments`.
    frames: BytesMut,
    /// How many frames `frames` holds.
    queued: usize,
    /// Frames the writer has taken and not yet written; they count against
    /// the bound too, so the queue and the write in progress together hold
    /// at most `limit` frames.
    writing: usize,
    /// Whether a data frame was queued since the writer last took the queue.
    data: bool,
    /// No more frames are accepted: closed, or the writer has stopped.
    closed: bool,
    /// The writer stopped: nothing queued will be sent any more.
    writer_gone: bool,
    /// Notified once everything queued before the close has been written.
    close_done: Vec<oneshot::Sender<()>>,
}

impl OutState {
    /// Bytes waiting in the queue.
    fn queued_bytes(&self) -> usize {
        self.segment_bytes + self.frames.len()
    }

    /// Queues `payload` by reference, after everything encoded so far.
    fn push_segment(&mut self, payload: Bytes) {
        if !self.frames.is_empty() {
            let encoded = self.frames.split().freeze();
            self.segment_bytes += encoded.len();
            self.segments.push(encoded);
        }
        self.segment_bytes += payload.len();
        self.segments.push(payload);
    }
}

impl Outgoing {
    fn lock(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one frame (encoded by `write`), waiting while the queue is full.
    async fn push(
        &self,
        data: bool,
        write: impl Fn(&mut OutState) -> Result<(), Error>,
    ) -> Result<(), Error> {
        // Fast path: room in the queue, no waiter registration.
        match self.push_now(data, &write) {
            Err(Error::Backpressure) => {}
            other => return other,
        }
        let mut waited = false;
        loop {
            let notified = self.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.push_now(data, &write) {
                Err(Error::Backpressure) => {
                    if !waited {
                        waited = true;
                        Counters::add(&self.stats.counters().backpressure_waits, 1);
                    }
                    notified.await;
                }
                other => return other,
            }
        }
    }

    /// Appends one frame if the queue has room; counts a refusal.
    fn try_push(
        &self,
        data: bool,
        write: impl Fn(&mut OutState) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let result = self.push_now(data, write);
        if matches!(result, Err(Error::Backpressure)) {
            Counters::add(&self.stats.counters().backpressure_refusals, 1);
        }
        result
    }

    /// Appends one frame if the queue has room.
    fn push_now(
        &self,
        data: bool,
        write: impl Fn(&mut OutState) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut state = self.lock();
        if state.closed {
            return Err(Error::Closed);
        }
        if state.queued + state.writing >= self.limit
            || (state.queued > 0 && state.queued_bytes() >= self.max_bytes)
        {
            return Err(Error::Backpressure);
        }
        write(&mut state)?;
        state.queued += 1;
        state.data |= data;
        let first = state.queued == 1;
        drop(state);
        if first {
            self.writer.notify_one();
        }
        Ok(())
    }

    /// Closes the queue to new frames (the writer still sends what is queued).
    fn close(&self, done: Option<oneshot::Sender<()>>) -> bool {
        let mut state = self.lock();
        if state.writer_gone {
            return false;
        }
        state.closed = true;
        state.close_done.extend(done);
        drop(state);
        self.writer.notify_one();
        self.space.notify_waiters();
        true
    }

    /// Compresses `envelope` into a frame when configured and worthwhile;
    /// otherwise it is encoded straight from the envelope.
    fn prepare<'a>(&self, envelope: &'a Envelope) -> Result<Ready<'a>, Error> {
        if self.compression == Compression::None
            || envelope.encoded_len() < self.compression_threshold
        {
            return Ok(Ready::Plain(envelope));
        }
        let mut body = BytesMut::with_capacity(envelope.encoded_len());
        envelope.encode(&mut body);
        let input = body.len();
        let mut codec = self.codec.lock().unwrap_or_else(|e| e.into_inner());
        let compressed = codec.compress(self.compression, body.freeze())?;
        drop(codec);
        let counters = self.stats.counters();
        Counters::add(&counters.compress_in, input as u64);
        Counters::add(&counters.compress_out, compressed.body.len() as u64);
        Ok(Ready::Compressed(Frame::Data(compressed)))
    }

    fn write_ready(&self, ready: &Ready<'_>, state: &mut OutState) -> Result<(), Error> {
        match ready {
            Ready::Plain(envelope) if envelope.payload.len() >= SEGMENT_MIN => {
                envelope.encode_frame_head(&self.encoder, &mut state.frames)?;
                state.push_segment(envelope.payload.clone());
            }
            Ready::Plain(envelope) => envelope.encode_frame(&self.encoder, &mut state.frames)?,
            Ready::Compressed(Frame::Data(data)) if data.body.len() >= SEGMENT_MIN => {
                self.encoder.encode_data_header(
                    data.compression,
                    data.body.len(),
                    &mut state.frames,
                )?;
                state.push_segment(data.body.clone());
            }
            Ready::Compressed(frame) => self.encoder.encode(frame, &mut state.frames)?,
        }
        Ok(())
    }
}

/// A message ready to be queued.
enum Ready<'a> {
    Plain(&'a Envelope),
    Compressed(Frame),
}

/// The inbound queue: what the reader decoded, waiting for the application.
/// The reader appends everything from one read under one lock.
struct Inbound {
    state: Mutex<InState>,
    /// Wakes the receiver when items arrive or the reader ends.
    ready: Notify,
    /// Wakes the reader when the queue has room again.
    space: Notify,
    limit: usize,
}

#[derive(Default)]
struct InState {
    items: VecDeque<Incoming>,
    /// Items the receiver has taken into its own batch and may not have
    /// consumed yet; they count against the limit until it comes back.
    taken: usize,
    /// The reader waits for room.
    reader_waiting: bool,
    /// The reader has ended: no more items will come.
    ended: bool,
    /// The receiver was dropped: nobody listens.
    receiver_gone: bool,
}

impl Inbound {
    fn lock(&self) -> std::sync::MutexGuard<'_, InState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl InState {
    /// Items the application has not consumed yet, as far as the reader knows.
    fn held(&self) -> usize {
        self.items.len() + self.taken
    }
}

/// Marks the send queue closed when the last [`Sender`] is dropped.
struct SenderToken(Arc<Outgoing>);

impl Drop for SenderToken {
    fn drop(&mut self) {
        self.0.close(None);
    }
}

struct Shared {
    /// When the connection started, for the millisecond clocks below.
    start: Instant,
    /// Milliseconds after `start` of the last data frame in either direction.
    last_data_ms: AtomicU64,
    /// The first fatal error, reported to the receiver.
    error: Mutex<Option<Error>>,
    /// Set to true to stop both tasks.
    stop: watch::Sender<bool>,
}

impl Shared {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch_data(&self) {
        self.last_data_ms
            .store(self.elapsed_ms(), Ordering::Relaxed);
    }

    /// Records `error` if it is the first, and stops both tasks.
    fn fail(&self, error: Error) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::debug!(%error, "closing connection");
            *slot = Some(error);
        }
        drop(slot);
        self.stop.send_replace(true);
    }

    /// Records that the peer closed its sending side cleanly. Our writer
    /// goes on (half-close) until the application closes or drops its senders.
    fn peer_closed(&self) {
        let mut slot = self.error.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(Error::PeerClosed);
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Sends messages and control frames on a connection; cheap to clone.
///
/// Messages are encoded into the connection's send queue by the calling
/// task; the writer task takes the whole queue at once and writes it (sealed
/// into Noise records in Noise mode) with one system call.
#[derive(Clone)]
pub struct Sender {
    token: Arc<SenderToken>,
    max_frame_len: u32,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued", &self.out().lock().queued)
            .finish_non_exhaustive()
    }
}

impl Sender {
    fn out(&self) -> &Outgoing {
        &self.token.0
    }

    /// The connection's traffic counters.
    pub fn stats(&self) -> ConnectionStats {
        self.out().stats.clone()
    }

    /// Queues `envelope`, waiting while the send queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the message is larger than the peer accepts;
    /// [`Error::Compression`] if compressing it fails; [`Error::Closed`] when
    /// the connection is closed.
    pub async fn send(&self, envelope: Envelope) -> Result<(), Error> {
        self.check_len(&envelope)?;
        let out = self.out();
        let ready = out.prepare(&envelope)?;
        out.push(true, |state| out.write_ready(&ready, state)).await
    }

    /// Queues `envelope` if the send queue has room.
    ///
    /// # Errors
    ///
    /// [`Error::Backpressure`] when the queue is full, and as [`send`](Self::send).
    pub fn try_send(&self, envelope: Envelope) -> Result<(), Error> {
        self.check_len(&envelope)?;
        let out = self.out();
        let ready = out.prepare(&envelope)?;
        out.try_push(true, |state| out.write_ready(&ready, state))
    }

    /// Queues a control frame (goaway, error), waiting while the queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the frame is larger than the peer accepts
    /// (control frames: [`MAX_CONTROL_BODY`](netproto_wire::MAX_CONTROL_BODY));
    /// [`Error::Closed`] when the connection is closed.
    pub async fn send_frame(&self, frame: Frame) -> Result<(), Error> {
        let max = match &frame {
            Frame::Data(_) => self.max_frame_len,
            _ => netproto_wire::MAX_CONTROL_BODY,
        };
        if frame.body_len() > max as usize {
            return Err(Error::Protocol(netproto_wire::Error::EncodeTooLarge {
                len: frame.body_len() as u64,
                max,
            }));
        }
        let data = matches!(frame, Frame::Data(_));
        let out = self.out();
        out.push(data, |state| {
            Ok(out.encoder.encode(&frame, &mut state.frames)?)
        })
        .await
    }

    /// Sends everything queued so far, then closes the sending direction.
    ///
    /// The peer sees the end of the stream after the last frame; this side
    /// keeps receiving until the peer closes too. Sends after the close fail
    /// with [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection was already closed.
    pub async fn close(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        if !self.out().close(Some(done)) {
            return Err(Error::Closed);
        }
        wait.await.map_err(|_| Error::Closed)
    }

    /// Whether the connection no longer takes frames.
    pub fn is_closed(&self) -> bool {
        self.out().lock().closed
    }

    /// Frames the send queue can still take without waiting.
    pub fn capacity(&self) -> usize {
        let out = self.out();
        let state = out.lock();
        out.limit.saturating_sub(state.queued + state.writing)
    }

    fn check_len(&self, envelope: &Envelope) -> Result<(), Error> {
        let len = envelope.encoded_len();
        if len > self.max_frame_len as usize {
            return Err(Error::Protocol(netproto_wire::Error::EncodeTooLarge {
                len: len as u64,
                max: self.max_frame_len,
            }));
        }
        Ok(())
    }
}

/// Receives what the peer sends.
pub struct Receiver {
    inbound: Arc<Inbound>,
    shared: Arc<Shared>,
    /// Items taken from the inbound queue in one go, handed out one by one.
    local: VecDeque<Incoming>,
    done: bool,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.inbound.lock().receiver_gone = true;
        self.inbound.space.notify_one();
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// The next message or control frame.
    ///
    /// Returns `Ok(None)` once the peer has closed the connection cleanly
    /// (at a frame boundary), and for every call after the end.
    ///
    /// # Errors
    ///
    /// The reason the connection failed (a timeout, a protocol violation, a
    /// failed record...), once; then `Ok(None)`.
    pub async fn recv(&mut self) -> Result<Option<Incoming>, Error> {
        if let Some(item) = self.local.pop_front() {
            return Ok(Some(item));
        }
        if self.done {
            return Ok(None);
        }
        // Fast path: something is queued; no waiter registration needed.
        if let Some(item) = self.refill() {
            return item;
        }
        let inbound = self.inbound.clone();
        loop {
            let notified = inbound.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(item) = self.refill() {
                return item;
            }
            notified.await;
        }
    }

    /// Takes everything queued into the local batch (one lock for many
    /// items) and returns the first, or the end of the stream; `None` when
    /// nothing is queued yet.
    fn refill(&mut self) -> Option<Result<Option<Incoming>, Error>> {
        let (ended, wake_reader) = {
            let mut state = self.inbound.lock();
            // The previous batch is consumed: what we take now is what we hold.
            std::mem::swap(&mut state.items, &mut self.local);
            state.taken = self.local.len();
            let wake = state.reader_waiting && state.held() < self.inbound.limit;
            if wake {
                state.reader_waiting = false;
            }
            (state.ended, wake)
        };
        if wake_reader {
            self.inbound.space.notify_one();
        }
        if let Some(item) = self.local.pop_front() {
            return Some(Ok(Some(item)));
        }
        if ended {
            self.done = true;
            return Some(match self.shared.take_error() {
                Some(Error::PeerClosed) | None => Ok(None),
                Some(error) => Err(error),
            });
        }
        None
    }
}

/// A framed connection over any stream, with its reader and writer tasks.
///
/// Dropping both the [`Sender`]s and the [`Receiver`] closes it.
#[derive(Debug)]
pub struct Connection {
    stats: ConnectionStats,
    sender: Sender,
    receiver: Receiver,
    info: ConnectionInfo,
}

impl Connection {
    /// Runs a connection over `io`, which has passed the preface and any
    /// handshake; `leftover` holds bytes already read past the handshake.
    pub(crate) fn spawn<I: Io>(
        io: I,
        protection: Protection,
        leftover: BytesMut,
        info: ConnectionInfo,
        config: &ConnectionConfig,
        offload: Option<tokio::runtime::Handle>,
    ) -> Self {
        let (read_half, write_half) = tokio::io::split(io);
        let outgoing = Arc::new(Outgoing {
            state: Mutex::new(OutState::default()),
            writer: Notify::new(),
            space: Notify::new(),
            limit: config.backpressure_limit,
            max_bytes: config.write_batch_bytes,
            encoder: Encoder::new(info.peer_max_frame_len),
            compression: info.compression,
            compression_threshold: config.compression_threshold,
            codec: Mutex::new(Codec::new(decompress_config(config))),
            stats: ConnectionStats::default(),
        });
        let inbound = Arc::new(Inbound {
            state: Mutex::new(InState::default()),
            ready: Notify::new(),
            space: Notify::new(),
            limit: config.inbound_limit,
        });
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            start: Instant::now(),
            last_data_ms: AtomicU64::new(0),
            error: Mutex::new(None),
            stop,
        });
        let (sealer, opener) = match protection {
            Protection::Plain => (None, None),
            Protection::Noise { sealer, opener } => (Some(sealer), Some(opener)),
        };
        let span = tracing::Span::current();
        let reader = Reader {
            shared: shared.clone(),
            inbound: inbound.clone(),
            batch: VecDeque::new(),
            outgoing: outgoing.clone(),
            stop: stop_rx.clone(),
            config: config.clone(),
            opener,
            codec: Codec::new(decompress_config(config)),
            offload,
        };
        tokio::spawn(reader.run(read_half, leftover).instrument(span.clone()));
        let writer = Writer {
            shared: shared.clone(),
            stop: stop_rx,
            config: config.clone(),
            sealer,
            outgoing: outgoing.clone(),
        };
        tokio::spawn(writer.run(write_half).instrument(span));
        Self {
            stats: outgoing.stats.clone(),
            sender: Sender {
                token: Arc::new(SenderToken(outgoing)),
                max_frame_len: info.peer_max_frame_len,
            },
            receiver: Receiver {
                inbound,
                shared,
                local: VecDeque::new(),
                done: false,
            },
            info,
        }
    }

    /// What the handshake established.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The connection's traffic counters, which stay readable after it
    /// closes.
    pub fn stats(&self) -> ConnectionStats {
        self.stats.clone()
    }

    /// A sender for this connection.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Queues a message; see [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    pub async fn send(&self, envelope: Envelope) -> Result<(), Error> {
        self.sender.send(envelope).await
    }

    /// Receives the next item; see [`Receiver::recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Option<Incoming>, Error> {
        self.receiver.recv().await
    }

    /// Splits into the sending and receiving halves, for use from two tasks.
    pub fn split(self) -> (Sender, Receiver, ConnectionInfo) {
        (self.sender, self.receiver, self.info)
    }
}

/// Writes `segments` then `tail` with as few system calls as the stream allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    segments: &[Bytes],
    tail: &[u8],
) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice<'_>> = segments
        .iter()
        .map(|segment| std::io::IoSlice::new(segment))
        .chain((!tail.is_empty()).then(|| std::io::IoSlice::new(tail)))
        .collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = io.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// Moves everything from `batch` to the end of `queue`; swaps the two when
/// `queue` is empty, so a receiver that keeps up costs no copying.
fn append(queue: &mut VecDeque<Incoming>, batch: &mut VecDeque<Incoming>) {
    if queue.is_empty() {
        std::mem::swap(queue, batch);
    } else {
        queue.append(batch);
    }
}

fn decompress_config(config: &ConnectionConfig) -> netproto_compress::Config {
    let mut c = netproto_compress::Config::default();
    c.max_decompressed_len = config.max_frame_len;
    c.threshold = config.compression_threshold;
    c
}

struct Reader {
    shared: Arc<Shared>,
    inbound: Arc<Inbound>,
    /// Items decoded from the current read, handed over together.
    batch: VecDeque<Incoming>,
    outgoing: Arc<Outgoing>,
    stop: watch::Receiver<bool>,
    config: ConnectionConfig,
    opener: Option<Box<Opener>>,
    codec: Codec,
    /// Where large decompressions run: this runtime's blocking threads when
    /// `None`.
    offload: Option<tokio::runtime::Handle>,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, io: R, leftover: BytesMut) {
        let result = self.read_loop(io, leftover).await;
        // Hand over what was decoded before the end, then mark the end.
        {
            let mut state = self.inbound.lock();
            append(&mut state.items, &mut self.batch);
            state.ended = true;
        }
        self.inbound.ready.notify_one();
        match result {
            // The peer finished sending; we may still answer it.
            Err(Error::PeerClosed) => self.shared.peer_closed(),
            // Stopped by the writer, which recorded why.
            Ok(()) => {}
            Err(error) => self.shared.fail(error),
        }
    }

    /// Reads until the peer closes (`Err(PeerClosed)`), the writer stops us
    /// (`Ok`), or something fails.
    async fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        mut io: R,
        leftover: BytesMut,
    ) -> Result<(), Error> {
        let mut decoder = Decoder::new(self.config.max_frame_len);
        // The read buffer. With Noise it holds, in order: `plain` bytes of
        // plaintext, `gap` bytes of spent record headers and tags, and the
        // ciphertext not opened yet. Each record is decrypted where it lies
        // and its plaintext written over the gap (in the same pass with the
        // ring backend), so frames are split off the read buffer without a
        // copy, as in plain mode.
        let mut frames = leftover;
        let mut plain = 0;
        let mut gap = 0;
        let tick_every = self.tick_period();
        let tick = tokio::time::sleep(tick_every.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(tick);
        let mut last_rx = Instant::now();
        // Whether the last read filled all the room it had: more is coming,
        // so read in large chunks. An idle connection keeps a small buffer.
        let mut busy = false;
        // Where `frames` moves while the application still holds messages
        // that live in it.
        let mut pool = RecvPool::default();
        loop {
            let mut data = false;
            let mut decoded = 0u64;
            // With Noise the decoder sees the plaintext only; the rest waits.
            let mut rest = None;
            if let Some(opener) = self.opener.as_mut() {
                while let Some((n, end)) =
                    opener.open_within(frames.get_mut(plain..).unwrap_or_default(), gap)?
                {
                    plain += n;
                    gap = end - n;
                }
                rest = Some(frames.split_off(plain));
            }
            while let Some(frame) = decoder.decode(&mut frames)? {
                decoded += 1;
                match frame {
                    Frame::Data(body) => {
                        data = true;
                        let body = if declared_len(&body) >= OFFLOAD_DECOMPRESSION {
                            self.decompress_aside(body).await?
                        } else {
                            self.codec.decompress(body)?
                        };
                        self.batch
                            .push_back(Incoming::Message(Envelope::decode(body)?));
                    }
                    other => self.handle_control(other).await,
                }
            }
            if let Some(rest) = rest {
                // Adjacent parts of one allocation: joining them is free.
                plain = frames.len();
                frames.unsplit(rest);
                if plain == 0 {
                    frames.advance(gap);
                    gap = 0;
                } else if gap >= MAX_GAP {
                    // A long frame in progress: close the gap behind it.
                    frames.copy_within(plain + gap.., plain);
                    frames.truncate(frames.len() - gap);
                    gap = 0;
                }
            }
            if !self.batch.is_empty() {
                self.hand_over().await?;
                if busy {
                    // More is waiting on the socket, and reading it now would
                    // keep the application from the messages just handed over
                    // (a woken task runs after this one yields): their receive
                    // buffers then stay pinned and each read needs new memory.
                    tokio::task::yield_now().await;
                }
            }
            if data {
                self.shared.touch_data();
            }
            if decoded > 0 {
                Counters::add(&self.outgoing.stats.counters().frames_in, decoded);
                // Time spent waiting for the application is not the peer's silence.
                last_rx = Instant::now();
            }
            if !busy && frames.is_empty() {
                pool.release();
                frames.reserve(IDLE_READ);
            } else if self.opener.is_some() {
                // A frame larger than a pool buffer grows in place.
                if !pool.make_room(&mut frames, READ_CHUNK) {
                    frames.reserve(READ_CHUNK);
                }
            } else {
                // A frame larger than a pool buffer: `prepare_read` grows it.
                let want = decoder.read_room(&frames)?;
                pool.make_room(&mut frames, want);
                decoder.prepare_read(&mut frames)?;
            }
            let room = frames.capacity() - frames.len();
            tokio::select! {
                read = io.read_buf(&mut frames) => {
                    let n = read?;
                    if n == 0 {
                        return Err(Error::PeerClosed);
                    }
                    busy = n == room;
                    Counters::add(&self.outgoing.stats.counters().bytes_in, n as u64);
                    last_rx = Instant::now();
                }
                () = &mut tick, if tick_every.is_some() => {
                    self.check_timers(last_rx)?;
                    if let Some(every) = tick_every {
                        tick.as_mut().reset(Instant::now() + every);
                    }
                }
                _ = self.stop.changed() => return Ok(()),
            }
        }
    }

    /// Decompresses a large body on a blocking thread: its milliseconds of
    /// work then share the CPU with the runtime's workers through the
    /// operating system's scheduler, instead of holding a worker (and the
    /// connections waiting for it) until it is done.
    async fn decompress_aside(&mut self, body: Data) -> Result<Bytes, Error> {
        let mut codec = std::mem::take(&mut self.codec);
        let decompress = move || {
            let result = codec.decompress(body);
            (codec, result)
        };
        let work = match &self.offload {
            Some(runtime) => runtime.spawn_blocking(decompress),
            None => tokio::task::spawn_blocking(decompress),
        };
        match work.await {
            Ok((codec, result)) => {
                self.codec = codec;
                Ok(result?)
            }
            Err(error) => Err(Error::Io(std::io::Error::other(format!(
                "the decompression task ended: {error}"
            )))),
        }
    }

    /// How often the reader checks heartbeat silence and idleness.
    fn tick_period(&self) -> Option<Duration> {
        let heartbeat = self.config.heartbeat_interval;
        let idle = self.config.idle_timeout.map(|d| d / 4);
        match (heartbeat, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
        .map(|d| d.max(Duration::from_millis(1)))
    }

    fn check_timers(&self, last_rx: Instant) -> Result<(), Error> {
        if let Some(interval) = self.config.heartbeat_interval {
            let dead_after = interval.saturating_mul(self.config.heartbeat_misses);
            if last_rx.elapsed() >= dead_after {
                return Err(Error::Timeout {
                    kind: TimeoutKind::Heartbeat,
                    after: dead_after,
                });
            }
        }
        if let Some(idle) = self.config.idle_timeout {
            let last = self.shared.last_data_ms.load(Ordering::Relaxed);
            let quiet = self.shared.elapsed_ms().saturating_sub(last);
            if Duration::from_millis(quiet) >= idle {
                return Err(Error::Timeout {
                    kind: TimeoutKind::Idle,
                    after: idle,
                });
            }
        }
        Ok(())
    }

    /// Answers pings and queues goaway and error frames for the application.
    async fn handle_control(&mut self, frame: Frame) {
        let item = match frame {
            Frame::Ping(token) => {
                // Once our sending side is closed no pong can go out; the
                // peer sees our end of stream instead.
                let out = &self.outgoing;
                let _ = out
                    .push(false, |state| {
                        Ok(out.encoder.encode(&Frame::Pong(token), &mut state.frames)?)
                    })
                    .await;
                return;
            }
            Frame::GoAway(goaway) => Incoming::GoAway(goaway),
            Frame::Error(error) => Incoming::Error(error),
            // Pongs only prove the peer alive, which any read does; data
            // frames are handled by the caller; kinds added to the wire crate
            // later are not understood here.
            _ => return,
        };
        self.batch.push_back(item);
    }

    /// Appends the decoded items to the inbound queue; while the queue is at
    /// its limit, waits (not reading the socket, so TCP pushes back).
    async fn hand_over(&mut self) -> Result<(), Error> {
        let inbound = self.inbound.clone();
        let room = {
            let mut state = inbound.lock();
            if state.receiver_gone {
                // A dropped receiver means nobody listens: stop reading.
                return Err(Error::Closed);
            }
            append(&mut state.items, &mut self.batch);
            state.held() < inbound.limit
        };
        inbound.ready.notify_one();
        if room {
            return Ok(());
        }
        loop {
            let notified = inbound.space.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = inbound.lock();
                if state.receiver_gone {
                    return Err(Error::Closed);
                }
                if state.held() < inbound.limit {
                    return Ok(());
                }
                state.reader_waiting = true;
            }
            tokio::select! {
                () = &mut notified => {}
                // Stopped by the writer, which recorded why.
                _ = self.stop.changed() => return Err(Error::Closed),
            }
        }
    }
}

struct Writer {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    config: ConnectionConfig,
    sealer: Option<Box<Sealer>>,
    outgoing: Arc<Outgoing>,
}

impl Writer {
    async fn run<W: AsyncWrite + Unpin>(mut self, mut io: W) {
        let result = self.write_loop(&mut io).await;
        let done = {
            let mut state = self.outgoing.lock();
            state.closed = true;
            state.writer_gone = true;
            std::mem::take(&mut state.close_done)
        };
        self.outgoing.space.notify_waiters();
        match result {
            Ok(()) => {
                // Everything queued before the close is written: send FIN.
                let _ = tokio::time::timeout(self.config.write_timeout, io.shutdown()).await;
                for done in done {
                    let _ = done.send(());
                }
            }
            Err(error) => self.shared.fail(error),
        }
        // The writer's buffers are gone with it.
        Counters::set(&self.outgoing.stats.counters().send_buffer, 0);
    }

    /// Writes until the queue is closed and empty, or something fails.
    async fn write_loop<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> Result<(), Error> {
        // Buffers grow with what is sent: an idle connection holds none.
        let mut frames = BytesMut::new();
        let mut segments: Vec<Bytes> = Vec::new();
        let mut sealed = BytesMut::new();
        let heartbeat = self.config.heartbeat_interval;
        let tick = tokio::time::sleep(heartbeat.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(tick);
        // Buffers a large batch grew are given back this long after it.
        let linger = heartbeat.unwrap_or(SEND_BUFFER_LINGER);
        // When a batch last needed more than IDLE_SEND_BUFFER.
        let mut large_at: Option<Instant> = None;
        let mut ping_token = 0u64;
        let outgoing = self.outgoing.clone();
        loop {
            let notified = outgoing.writer.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (took, closed, data) = {
                let mut state = outgoing.lock();
                let took = state.queued;
                if took > 0 {
                    // Swap buffers: senders keep appending to the spare one.
                    std::mem::swap(&mut state.frames, &mut frames);
                    std::mem::swap(&mut state.segments, &mut segments);
                    state.segment_bytes = 0;
                    state.queued = 0;
                    state.writing = took;
                }
                (took, state.closed, std::mem::take(&mut state.data))
            };
            if took == 0 && closed {
                return Ok(());
            } else if took == 0 {
                tokio::select! {
                    () = &mut notified => continue,
                    () = &mut tick, if heartbeat.is_some() || large_at.is_some() => {
                        if large_at.is_some_and(|at| at.elapsed() >= linger) {
                            large_at = None;
                            let queue = give_back(&mut frames, &mut sealed, &mut outgoing.lock());
                            set_send_buffer(&outgoing, &frames, &sealed, queue);
                        }
                        if heartbeat.is_none() {
                            // Only here to give buffers back.
                            if let Some(at) = large_at {
                                tick.as_mut().reset(at + linger);
                            }
                            continue;
                        }
                        // The ping's write resets the tick.
                        ping_token = ping_token.wrapping_add(1);
                        outgoing.encoder.encode(&Frame::Ping(ping_token), &mut frames)?;
                    }
                    _ = self.stop.changed() => return Ok(()),
                }
            }
            if data {
                self.shared.touch_data();
            }
            // What goes on the stream: the sealed records with Noise, else
            // the queued segments and frames themselves. The whole batch is
            // sealed before it is written: sealing and writing 64 KiB at a
            // time measured slower (more, smaller writes and wake-ups).
            let mut written = 0;
            let sealer = self.sealer.as_deref_mut();
            let write = async {
                match sealer {
                    Some(sealer) => {
                        // Records span the parts: a 64 KiB message with its
                        // small head takes 2 records, not 3.
                        sealed.clear();
                        if !segments.is_empty() || !frames.is_empty() {
                            let parts = segments.iter().map(|segment| &segment[..]);
                            sealer.seal_parts(parts.chain([&frames[..]]), &mut sealed)?;
                        }
                        io.write_all(&sealed).await?;
                        written = sealed.len();
                    }
                    None if segments.is_empty() => {
                        io.write_all(&frames).await?;
                        written = frames.len();
                    }
                    None => {
                        write_all_vectored(io, &segments, &frames).await?;
                        written = segments.iter().map(Bytes::len).sum::<usize>() + frames.len();
                    }
                }
                // Flush too: a TLS stream may keep records back until flushed.
                io.flush().await?;
                Ok::<(), Error>(())
            };
            match tokio::time::timeout(self.config.write_timeout, write).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(Error::Timeout {
                        kind: TimeoutKind::Write,
                        after: self.config.write_timeout,
                    });
                }
            }
            let counters = outgoing.stats.counters();
            Counters::add(&counters.bytes_out, written as u64);
            frames.clear();
            segments.clear();
            // A heartbeat ping is one frame the queue did not hold.
            Counters::add(&counters.frames_out, took.max(1) as u64);
            let now = Instant::now();
            let huge = 4 * self.config.write_batch_bytes;
            let mut shrink = false;
            if frames.capacity() > huge || sealed.capacity() > huge {
                // One huge message should not pin its buffers at all.
                frames = BytesMut::new();
                sealed = BytesMut::new();
            } else if written > IDLE_SEND_BUFFER {
                large_at = Some(now);
            } else if large_at.is_some_and(|at| now - at >= linger) {
                // Small writes only (answers to the peer's pings, say) since
                // the last large batch.
                large_at = None;
                shrink = true;
            }
            // One lock for the queue's bookkeeping after every write.
            let queue = {
                let mut state = outgoing.lock();
                if took > 0 {
                    state.writing = 0;
                }
                if shrink {
                    give_back(&mut frames, &mut sealed, &mut state)
                } else {
                    state.frames.capacity()
                }
            };
            if took > 0 {
                outgoing.space.notify_waiters();
            }
            set_send_buffer(&outgoing, &frames, &sealed, queue);
            match (heartbeat, large_at) {
                (Some(interval), _) => tick.as_mut().reset(now + interval),
                (None, Some(at)) => tick.as_mut().reset(at + linger),
                (None, None) => {}
            }
        }
    }
}

/// Gives back the send buffers a large batch grew, where they hold nothing:
/// the writer's `frames` and `sealed` (whose records are long written) and
/// the queue's buffer in `state`. Returns the queue buffer's capacity.
fn give_back(frames: &mut BytesMut, sealed: &mut BytesMut, state: &mut OutState) -> usize {
    shrink_idle(frames);
    sealed.clear();
    shrink_idle(sealed);
    shrink_idle(&mut state.frames);
    state.frames.capacity()
}

/// Updates the send-buffer gauge: the writer's two buffers and the queue's.
fn set_send_buffer(outgoing: &Outgoing, frames: &BytesMut, sealed: &BytesMut, queue: usize) {
    Counters::set(
        &outgoing.stats.counters().send_buffer,
        frames.capacity() + sealed.capacity() + queue,
    );
}
