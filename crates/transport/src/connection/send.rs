//! The send queue and the [`Sender`]s that encode into it.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use netproto_compress::Codec;
use netproto_wire::{Encoder, Envelope, Frame};
use tokio::sync::{Notify, oneshot};

use super::ConnectionInfo;
use crate::proto::{Policy, decompress_config};
use crate::stats::Counters;
use crate::sync::{lock, wait_until};
use crate::{ConnectionConfig, ConnectionStats, Error};

/// Payloads at least this large are queued by reference and written with a
/// vectored write (or sealed straight from the application's buffer), not
/// copied into the send queue.
const SEGMENT_MIN: usize = 8 * 1024;

/// The send queue: frames already encoded by the senders, waiting for the
/// writer. Senders append under a short lock (no channel hop per message);
/// the writer swaps the whole buffer out at once.
pub(super) struct Outgoing {
    state: Mutex<OutState>,
    /// Wakes the writer when the queue becomes non-empty or closes.
    pub(super) writer: Notify,
    /// Wakes senders waiting for room.
    pub(super) space: Notify,
    /// The queue bound, in frames.
    limit: usize,
    /// The queue bound, in bytes: past it senders wait too (one frame is
    /// always accepted into an empty queue, whatever its size).
    max_bytes: usize,
    pub(super) encoder: Encoder,
    policy: Policy,
    /// Compression contexts, used outside the queue lock.
    codec: Mutex<Codec>,
    pub(super) stats: ConnectionStats,
}

#[derive(Default)]
pub(super) struct OutState {
    /// What goes out first: encoded bytes split off `frames` and large
    /// payloads queued without copying, in order.
    pub(super) segments: Vec<Bytes>,
    /// Bytes in `segments`.
    pub(super) segment_bytes: usize,
    /// Encoded frames, after `segments`.
    pub(super) frames: BytesMut,
    /// How many frames `frames` holds.
    pub(super) queued: usize,
    /// Frames the writer has taken and not yet written; they count against
    /// the bound too, so the queue and the write in progress together hold
    /// at most `limit` frames.
    pub(super) writing: usize,
    /// Whether a data frame was queued since the writer last took the queue.
    pub(super) data: bool,
    /// No more frames are accepted: closed, or the writer has stopped.
    pub(super) closed: bool,
    /// The writer stopped: nothing queued will be sent any more.
    pub(super) writer_gone: bool,
    /// Notified once everything queued before the close has been written.
    pub(super) close_done: Vec<oneshot::Sender<()>>,
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
    pub(super) fn new(
        config: &ConnectionConfig,
        info: &ConnectionInfo,
        stats: ConnectionStats,
    ) -> Self {
        Self {
            state: Mutex::new(OutState::default()),
            writer: Notify::new(),
            space: Notify::new(),
            limit: config.backpressure_limit,
            max_bytes: config.write_batch_bytes,
            encoder: Encoder::new(info.peer_max_frame_len),
            policy: Policy {
                compression: info.compression,
                threshold: config.compression_threshold,
            },
            codec: Mutex::new(Codec::new(decompress_config(config))),
            stats,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, OutState> {
        lock(&self.state)
    }

    /// Appends one frame (encoded by `write`), waiting while the queue is full.
    pub(super) async fn push(
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
        wait_until(&self.space, || match self.push_now(data, &write) {
            Err(Error::Backpressure) => {
                if !waited {
                    waited = true;
                    Counters::add(&self.stats.counters().backpressure_waits, 1);
                }
                None
            }
            other => Some(other),
        })
        .await
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
        self.close_after(done, None)
    }

    /// Queues `last` after everything queued so far, whatever the bound, and
    /// closes the queue: the writer sends it last, then ends its side of the
    /// stream. Returns whether the writer was still there to send it.
    pub(super) fn close_with(&self, last: &Frame) -> bool {
        self.close_after(None, Some(last))
    }

    fn close_after(&self, done: Option<oneshot::Sender<()>>, last: Option<&Frame>) -> bool {
        let mut state = self.lock();
        if state.writer_gone {
            return false;
        }
        if let Some(frame) = last.filter(|_| !state.closed) {
            // A control frame always encodes within any limit.
            if self.encoder.encode(frame, &mut state.frames).is_ok() {
                state.queued += 1;
            }
        }
        state.closed = true;
        state.close_done.extend(done);
        drop(state);
        self.writer.notify_one();
        self.space.notify_waiters();
        true
    }

    /// Compresses `envelope` into a frame (with the envelope's flags) when
    /// the policy says so; otherwise it is encoded straight from the
    /// envelope, flags included.
    fn prepare<'a>(&self, envelope: &'a Envelope) -> Result<Ready<'a>, Error> {
        if !self.policy.compresses(envelope.encoded_len()) {
            return Ok(Ready::AsIs(envelope));
        }
        let mut body = BytesMut::with_capacity(envelope.encoded_len());
        envelope.encode(&mut body);
        let input = body.len();
        let mut compressed = lock(&self.codec).compress(self.policy.compression, body.freeze())?;
        compressed.flags = envelope.flags;
        let counters = self.stats.counters();
        Counters::add(&counters.compress_in, input as u64);
        Counters::add(&counters.compress_out, compressed.body.len() as u64);
        Ok(Ready::Compressed(Frame::Data(compressed)))
    }

    fn write_ready(&self, ready: &Ready<'_>, state: &mut OutState) -> Result<(), Error> {
        match ready {
            Ready::AsIs(envelope) if envelope.payload.len() >= SEGMENT_MIN => {
                envelope.encode_frame_head(&self.encoder, &mut state.frames)?;
                state.push_segment(envelope.payload.clone());
            }
            Ready::AsIs(envelope) => envelope.encode_frame(&self.encoder, &mut state.frames)?,
            Ready::Compressed(Frame::Data(data)) if data.body.len() >= SEGMENT_MIN => {
                self.encoder.encode_data_header(
                    data.compression,
                    data.flags,
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
    /// Encoded straight from the envelope.
    AsIs(&'a Envelope),
    /// Already compressed into a data frame.
    Compressed(Frame),
}

/// Marks the send queue closed when the last [`Sender`] is dropped.
struct SenderToken(Arc<Outgoing>);

impl Drop for SenderToken {
    fn drop(&mut self) {
        self.0.close(None);
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
    pub(super) fn new(outgoing: Arc<Outgoing>, max_frame_len: u32) -> Self {
        Self {
            token: Arc::new(SenderToken(outgoing)),
            max_frame_len,
        }
    }

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

    /// Queues a frame as it is, waiting while the queue is full: a control
    /// frame (goaway, error, cancel, credit, end), or a data frame already
    /// encoded (its flags and compression are sent as they are).
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
