//! The writer task: takes the whole send queue at once and writes it through
//! the core's [`Outflow`], and sends the heartbeat pings.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use netproto_wire::Frame;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::send::{OutState, Outgoing};
use super::{Shared, now};
use crate::proto::{Heartbeat, Outflow};
use crate::stats::Counters;
use crate::sync::wait_until;
use crate::{Error, TimeoutKind};

/// Send buffers with more capacity than this are given back once the
/// connection has written no batch that needed them for a while (a heartbeat
/// interval, or [`SEND_BUFFER_LINGER`]): a burst of large messages should
/// not pin its batch buffers for the connection's life.
const IDLE_SEND_BUFFER: usize = 64 * 1024;

/// How long buffers a large batch grew are kept after it on a connection
/// without heartbeats.
const SEND_BUFFER_LINGER: Duration = Duration::from_secs(15);

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) write_timeout: Duration,
    pub(super) write_batch_bytes: usize,
    /// When to ping.
    pub(super) heartbeat: Heartbeat,
    /// How long buffers a large batch grew are kept after it: the heartbeat
    /// interval, or [`SEND_BUFFER_LINGER`] without heartbeats.
    pub(super) linger_after: Option<Duration>,
    pub(super) outflow: Outflow,
    pub(super) outgoing: Arc<Outgoing>,
}

/// What the writer took from the queue.
struct Batch {
    /// Frames taken (0 when the queue was empty).
    took: usize,
    /// The queue is closed.
    closed: bool,
    /// A data frame is among them.
    data: bool,
}

impl Writer {
    pub(super) async fn run<W: AsyncWrite + Unpin>(mut self, mut io: W) {
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
                let _ = tokio::time::timeout(self.write_timeout, io.shutdown()).await;
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
        let heartbeat = self.linger_after;
        // Wakes the writer for a ping (when due) or to give buffers back.
        let tick = tokio::time::sleep(heartbeat.unwrap_or(Duration::from_secs(3600)));
        tokio::pin!(tick);
        // Buffers a large batch grew are given back this long after it.
        let linger = heartbeat.unwrap_or(SEND_BUFFER_LINGER);
        // When a batch last needed more than IDLE_SEND_BUFFER.
        let mut large_at: Option<Instant> = None;
        let outgoing = self.outgoing.clone();
        loop {
            let mut take = || {
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
                let batch = Batch {
                    took,
                    closed: state.closed,
                    data: std::mem::take(&mut state.data),
                };
                (took > 0 || batch.closed).then_some(batch)
            };
            // Fast path: something is queued; no waiter registration.
            let ready = take();
            let batch = if let Some(batch) = ready {
                batch
            } else {
                tokio::select! {
                    batch = wait_until(&outgoing.writer, &mut take) => batch,
                    () = &mut tick, if heartbeat.is_some() || large_at.is_some() => {
                        if large_at.is_some_and(|at| at.elapsed() >= linger) {
                            large_at = None;
                            let queue = give_back(&mut frames, &mut sealed, &mut outgoing.lock());
                            set_send_buffer(&outgoing, &frames, &sealed, queue);
                        }
                        let ping = self.heartbeat.poll_ping(now());
                        let Some(token) = ping else {
                            // Early (something was written since the tick was
                            // set), or only here to give buffers back.
                            let ping_at = self.heartbeat.ping_at();
                            let wake = match (ping_at, large_at) {
                                (Some(ping), Some(at)) => Some(Instant::from_std(ping).min(at + linger)),
                                (Some(ping), None) => Some(Instant::from_std(ping)),
                                (None, at) => at.map(|at| at + linger),
                            };
                            if let Some(wake) = wake {
                                tick.as_mut().reset(wake);
                            }
                            continue;
                        };
                        outgoing.encoder.encode(&Frame::Ping(token), &mut frames)?;
                        Batch { took: 0, closed: false, data: false }
                    }
                    _ = self.stop.changed() => return Ok(()),
                }
            };
            if batch.took == 0 && batch.closed && frames.is_empty() {
                return Ok(());
            }
            let took = batch.took;
            // What goes on the stream: the sealed records with Noise, else
            // the queued segments and frames themselves. The whole batch is
            // sealed before it is written: sealing and writing 64 KiB at a
            // time measured slower (more, smaller writes and wake-ups).
            let mut written = 0;
            let outflow = &mut self.outflow;
            let write = async {
                if outflow.seals() {
                    sealed.clear();
                    outflow.seal(&segments, &frames, &mut sealed)?;
                    io.write_all(&sealed).await?;
                    written = sealed.len();
                } else if segments.is_empty() {
                    io.write_all(&frames).await?;
                    written = frames.len();
                } else {
                    write_all_vectored(io, &segments, &frames).await?;
                    written = segments.iter().map(Bytes::len).sum::<usize>() + frames.len();
                }
                // Flush too: a TLS stream may keep records back until flushed.
                io.flush().await?;
                Ok::<(), Error>(())
            };
            match tokio::time::timeout(self.write_timeout, write).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(Error::Timeout {
                        kind: TimeoutKind::Write,
                        after: self.write_timeout,
                    });
                }
            }
            let now = Instant::now();
            self.heartbeat.handle_tx(now.into_std());
            if batch.data {
                self.shared.data_sent(now.into_std());
            }
            let counters = outgoing.stats.counters();
            Counters::add(&counters.bytes_out, written as u64);
            frames.clear();
            segments.clear();
            // A heartbeat ping is one frame the queue did not hold.
            Counters::add(&counters.frames_out, took.max(1) as u64);
            let huge = 4 * self.write_batch_bytes;
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

/// Replaces `buf` with an empty buffer if it holds more than
/// [`IDLE_SEND_BUFFER`] of capacity and nothing else.
fn shrink_idle(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > IDLE_SEND_BUFFER {
        *buf = BytesMut::new();
    }
}

/// Updates the send-buffer gauge: the writer's two buffers and the queue's.
fn set_send_buffer(outgoing: &Outgoing, frames: &BytesMut, sealed: &BytesMut, queue: usize) {
    Counters::set(
        &outgoing.stats.counters().send_buffer,
        frames.capacity() + sealed.capacity() + queue,
    );
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
