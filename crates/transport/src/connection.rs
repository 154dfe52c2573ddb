//! A framed connection: a reader task and a writer task over one stream.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use netproto_compress::Codec;
use netproto_crypto::{Capabilities, Opener, PublicKey, Sealer};
use netproto_wire::{
    Compression, Decoder, Encoder, Envelope, ErrorFrame, Frame, GoAway, READ_CHUNK, SecurityMode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::Instrument;

use crate::{ConnectionConfig, Error, Io, TimeoutKind};

/// Capacity of the queue of pongs from the reader to the writer.
const CONTROL_QUEUE: usize = 64;

/// Items the writer takes from its queue at once.
const BATCH_ITEMS: usize = 256;

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

enum Outbound {
    Message(Envelope),
    Frame(Frame),
    Close(oneshot::Sender<()>),
}

enum Control {
    Pong(u64),
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
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Outbound>,
    max_frame_len: u32,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("queued", &(self.tx.max_capacity() - self.tx.capacity()))
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// Queues `envelope`, waiting while the send queue is full.
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the message is larger than the peer accepts;
    /// [`Error::Closed`] when the connection is closed.
    pub async fn send(&self, envelope: Envelope) -> Result<(), Error> {
        self.check_len(&envelope)?;
        self.tx
            .send(Outbound::Message(envelope))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Queues `envelope` if the send queue has room.
    ///
    /// # Errors
    ///
    /// [`Error::Backpressure`] when the queue is full, and as [`send`](Self::send).
    pub fn try_send(&self, envelope: Envelope) -> Result<(), Error> {
        self.check_len(&envelope)?;
        self.tx
            .try_send(Outbound::Message(envelope))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Backpressure,
                mpsc::error::TrySendError::Closed(_) => Error::Closed,
            })
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
        self.tx
            .send(Outbound::Frame(frame))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Sends everything queued so far, then closes the sending direction.
    ///
    /// The peer sees the end of the stream after the last frame; this side
    /// keeps receiving until the peer closes too.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the connection was already closed.
    pub async fn close(&self) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Outbound::Close(done))
            .await
            .map_err(|_| Error::Closed)?;
        wait.await.map_err(|_| Error::Closed)
    }

    /// Whether the connection's writer has stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Frames the send queue can still take without waiting.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
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
    rx: mpsc::Receiver<Incoming>,
    shared: Arc<Shared>,
    done: bool,
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
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(item) => Ok(Some(item)),
            None => {
                self.done = true;
                match self.shared.take_error() {
                    Some(Error::PeerClosed) | None => Ok(None),
                    Some(error) => Err(error),
                }
            }
        }
    }
}

/// A framed connection over any stream, with its reader and writer tasks.
///
/// Dropping both the [`Sender`]s and the [`Receiver`] closes it.
#[derive(Debug)]
pub struct Connection {
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
    ) -> Self {
        let (read_half, write_half) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(config.backpressure_limit);
        let (in_tx, in_rx) = mpsc::channel(config.inbound_limit);
        let (control_tx, control_rx) = mpsc::channel(CONTROL_QUEUE);
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
            inbound: in_tx,
            control: control_tx,
            stop: stop_rx.clone(),
            config: config.clone(),
            opener,
            codec: Codec::new(decompress_config(config)),
        };
        tokio::spawn(reader.run(read_half, leftover).instrument(span.clone()));
        let writer = Writer {
            shared: shared.clone(),
            stop: stop_rx,
            config: config.clone(),
            sealer,
            encoder: Encoder::new(info.peer_max_frame_len),
            compression: info.compression,
            codec: Codec::new(decompress_config(config)),
        };
        tokio::spawn(writer.run(write_half, out_rx, control_rx).instrument(span));
        Self {
            sender: Sender {
                tx: out_tx,
                max_frame_len: info.peer_max_frame_len,
            },
            receiver: Receiver {
                rx: in_rx,
                shared,
                done: false,
            },
            info,
        }
    }

    /// What the handshake established.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
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

fn decompress_config(config: &ConnectionConfig) -> netproto_compress::Config {
    let mut c = netproto_compress::Config::default();
    c.max_decompressed_len = config.max_frame_len;
    c.threshold = config.compression_threshold;
    c
}

struct Reader {
    shared: Arc<Shared>,
    inbound: mpsc::Sender<Incoming>,
    control: mpsc::Sender<Control>,
    stop: watch::Receiver<bool>,
    config: ConnectionConfig,
    opener: Option<Box<Opener>>,
    codec: Codec,
}

impl Reader {
    async fn run<R: AsyncRead + Unpin>(mut self, io: R, leftover: BytesMut) {
        match self.read_loop(io, leftover).await {
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
        // In plain mode `frames` is the read buffer; with Noise, `raw` is.
        let (mut raw, mut frames) = if self.opener.is_some() {
            (leftover, BytesMut::new())
        } else {
            (BytesMut::new(), leftover)
        };
        let tick_every = self.tick_period();
        let tick = tokio::time::sleep(tick_every.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(tick);
        let mut last_rx = Instant::now();
        loop {
            if let Some(opener) = self.opener.as_mut() {
                while let Some(record) = opener.open(&mut raw)? {
                    frames.extend_from_slice(&record);
                }
            }
            let mut data = false;
            let mut decoded = false;
            while let Some(frame) = decoder.decode(&mut frames)? {
                data |= matches!(frame, Frame::Data(_));
                decoded = true;
                self.handle(frame).await?;
            }
            if data {
                self.shared.touch_data();
            }
            if decoded {
                // Time spent waiting for the application is not the peer's silence.
                last_rx = Instant::now();
            }
            let buf = if self.opener.is_some() {
                raw.reserve(READ_CHUNK);
                &mut raw
            } else {
                decoder.prepare_read(&mut frames)?;
                &mut frames
            };
            tokio::select! {
                read = io.read_buf(buf) => {
                    if read? == 0 {
                        return Err(Error::PeerClosed);
                    }
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

    async fn handle(&mut self, frame: Frame) -> Result<(), Error> {
        let item = match frame {
            Frame::Data(data) => {
                let body = self.codec.decompress(data)?;
                Incoming::Message(Envelope::decode(body)?)
            }
            Frame::Ping(token) => {
                // Once our sending side is closed no pong can go out; the
                // peer sees our end of stream instead.
                let _ = self.control.send(Control::Pong(token)).await;
                return Ok(());
            }
            Frame::Pong(_) => return Ok(()),
            Frame::GoAway(goaway) => Incoming::GoAway(goaway),
            Frame::Error(error) => Incoming::Error(error),
            // Kinds added to the wire crate later are not understood here.
            _ => return Ok(()),
        };
        // A dropped receiver means nobody listens: stop reading.
        self.inbound.send(item).await.map_err(|_| Error::Closed)
    }
}

struct Writer {
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    config: ConnectionConfig,
    sealer: Option<Box<Sealer>>,
    encoder: Encoder,
    compression: Compression,
    codec: Codec,
}

impl Writer {
    async fn run<W: AsyncWrite + Unpin>(
        mut self,
        mut io: W,
        mut queue: mpsc::Receiver<Outbound>,
        mut control: mpsc::Receiver<Control>,
    ) {
        match self.write_loop(&mut io, &mut queue, &mut control).await {
            Ok(close) => {
                // Everything queued before the close is written: send FIN.
                let _ = tokio::time::timeout(self.config.write_timeout, io.shutdown()).await;
                if let Some(done) = close {
                    let _ = done.send(());
                }
            }
            Err(error) => self.shared.fail(error),
        }
    }

    /// Writes until a close is asked for (returning its notifier), every
    /// sender is gone, or something fails.
    async fn write_loop<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        queue: &mut mpsc::Receiver<Outbound>,
        control: &mut mpsc::Receiver<Control>,
    ) -> Result<Option<oneshot::Sender<()>>, Error> {
        let mut frames = BytesMut::with_capacity(64 * 1024);
        let mut sealed = BytesMut::new();
        let mut items = Vec::with_capacity(BATCH_ITEMS);
        let heartbeat = self.config.heartbeat_interval;
        let tick = tokio::time::sleep(heartbeat.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(tick);
        let mut ping_token = 0u64;
        loop {
            let mut close = None;
            tokio::select! {
                biased;
                Some(Control::Pong(token)) = control.recv() => {
                    self.encoder.encode(&Frame::Pong(token), &mut frames)?;
                }
                received = queue.recv_many(&mut items, BATCH_ITEMS) => {
                    if received == 0 {
                        return Ok(None);
                    }
                }
                () = &mut tick, if heartbeat.is_some() => {
                    ping_token = ping_token.wrapping_add(1);
                    self.encoder.encode(&Frame::Ping(ping_token), &mut frames)?;
                }
                _ = self.stop.changed() => return Ok(None),
            }
            // Gather whatever else is queued into the same write.
            loop {
                while let Ok(Control::Pong(token)) = control.try_recv() {
                    self.encoder.encode(&Frame::Pong(token), &mut frames)?;
                }
                let mut data = false;
                for item in items.drain(..) {
                    data |= matches!(item, Outbound::Message(_));
                    if let Some(done) = self.encode(item, &mut frames)? {
                        close = Some(done);
                    }
                }
                if data {
                    self.shared.touch_data();
                }
                if close.is_some() {
                    // Everything sent before the close goes out before our
                    // end of stream; later sends fail with `Closed`.
                    queue.close();
                } else if frames.len() >= self.config.write_batch_bytes {
                    break;
                }
                match queue.try_recv() {
                    Ok(item) => items.push(item),
                    Err(_) => break,
                }
            }
            let bytes: &[u8] = match self.sealer.as_mut() {
                Some(sealer) => {
                    sealed.clear();
                    sealer.seal(&frames, &mut sealed)?;
                    &sealed
                }
                None => &frames,
            };
            // Flush too: a TLS stream may keep records back until flushed.
            let write = async {
                io.write_all(bytes).await?;
                io.flush().await
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
            frames.clear();
            if frames.capacity() > 4 * self.config.write_batch_bytes {
                // One huge message should not pin its buffer for the connection's life.
                frames = BytesMut::with_capacity(64 * 1024);
                sealed = BytesMut::new();
            }
            if let Some(interval) = heartbeat {
                tick.as_mut().reset(Instant::now() + interval);
            }
            if close.is_some() {
                return Ok(close);
            }
        }
    }

    fn encode(
        &mut self,
        item: Outbound,
        frames: &mut BytesMut,
    ) -> Result<Option<oneshot::Sender<()>>, Error> {
        match item {
            Outbound::Message(envelope) => {
                if self.compression != Compression::None
                    && envelope.encoded_len() >= self.config.compression_threshold
                {
                    let mut body = BytesMut::with_capacity(envelope.encoded_len());
                    envelope.encode(&mut body);
                    let data = self.codec.compress(self.compression, body.freeze())?;
                    self.encoder.encode(&Frame::Data(data), frames)?;
                } else {
                    envelope.encode_frame(&self.encoder, frames)?;
                }
            }
            Outbound::Frame(frame) => self.encoder.encode(&frame, frames)?,
            Outbound::Close(done) => return Ok(Some(done)),
        }
        Ok(None)
    }
}
