//! The reader task: reads the stream into the core's [`Inflow`] and hands
//! what it yields to the inbound queue.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use netproto_wire::{Data, Frame};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::recv::{Inbound, append};
use super::send::Outgoing;
use super::{Incoming, Shared, now};
use crate::Error;
use crate::proto::{Event, Inflow, Watchdog, closing_frame, message};
use crate::stats::Counters;
use crate::sync::wait_until_or;

/// How long a connection closing on the peer's error goes on reading (and
/// dropping) what the peer sends, so that the error frame and the answers
/// before it reach the peer instead of being destroyed by a reset.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    pub(super) inbound: Arc<Inbound>,
    /// Items decoded from the current read, handed over together.
    pub(super) batch: VecDeque<Incoming>,
    pub(super) outgoing: Arc<Outgoing>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) inflow: Inflow,
    /// The dead-peer and idle timers; the writer's data frames reach it
    /// through `Shared::data_sent`.
    pub(super) watchdog: Watchdog,
    /// Where large decompressions run: this runtime's blocking threads when
    /// `None`.
    pub(super) offload: Option<tokio::runtime::Handle>,
}

impl Reader {
    pub(super) async fn run<R: AsyncRead + Unpin>(mut self, mut io: R) {
        let result = self.read_loop(&mut io).await;
        // The end is recorded before the receiver can see it.
        let closing = match result {
            // The peer finished sending; we may still answer it.
            Err(Error::PeerClosed) => {
                self.shared.peer_closed();
                None
            }
            // Stopped by the writer, which recorded why.
            Ok(()) => None,
            Err(error) => {
                let closing = closing_frame(&error);
                self.shared.record(error);
                if closing.is_none() {
                    self.shared.stop();
                }
                closing
            }
        };
        // Hand over what was decoded before the end, then mark the end.
        {
            let mut state = self.inbound.lock();
            append(&mut state.items, &mut self.batch);
            state.ended = true;
        }
        self.inbound.ready.notify_one();
        if let Some(frame) = closing {
            self.close_with(&frame, &mut io).await;
        }
    }

    /// Closes the connection on the peer's error, telling it why: `frame`
    /// goes out after what is already queued (answers to the requests that
    /// came before the error), the writer ends our side of the stream, and
    /// meanwhile what the peer still sends is read and dropped, for at most
    /// [`CLOSE_LINGER`]: closing a socket with unread bytes makes the system
    /// reset it, and a reset destroys what we sent but the peer has not read
    /// yet.
    async fn close_with<R: AsyncRead + Unpin>(&mut self, frame: &Frame, io: &mut R) {
        if self.outgoing.close_with(frame) {
            // On the heap: a buffer in this future would sit in every
            // connection's reader task for its whole life.
            let mut sink = vec![0; 4096];
            let drain = async { while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {} };
            tokio::select! {
                _ = tokio::time::timeout(CLOSE_LINGER, drain) => {}
                _ = self.stop.changed() => {}
            }
        }
        self.shared.stop();
    }

    /// Reads until the peer closes (`Err(PeerClosed)`), the writer stops us
    /// (`Ok`), or something fails.
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<(), Error> {
        // Wakes the reader to check the liveness deadline. It is set for the
        // deadline known when it is armed and re-armed when it fires early
        // (reads only move the deadline later), so reads never touch it.
        let deadline = self.watchdog.deadline();
        let timer = tokio::time::sleep_until(match deadline {
            Some(at) => at.into(),
            None => tokio::time::Instant::now() + std::time::Duration::from_secs(3600),
        });
        tokio::pin!(timer);
        loop {
            while let Some(event) = self.inflow.poll_event(&mut self.batch)? {
                match event {
                    Event::Reply(frame) => self.reply(frame).await,
                    Event::DecompressAside(body) => {
                        let flags = body.flags;
                        let body = self.decompress_aside(body).await?;
                        self.batch.push_back(message(body, flags)?);
                    }
                }
            }
            let (decoded, data) = self.inflow.take_counts();
            let mut waited = false;
            if !self.batch.is_empty() {
                waited = self.hand_over().await?;
                if self.inflow.deframer().is_busy() {
                    // More is waiting on the socket, and reading it now would
                    // keep the application from the messages just handed over
                    // (a woken task runs after this one yields): their receive
                    // buffers then stay pinned and each read needs new memory.
                    tokio::task::yield_now().await;
                }
            }
            if data || waited {
                let now = now();
                if data {
                    self.watchdog.handle_data(now);
                }
                if waited {
                    // Time spent waiting for the application is not the
                    // peer's silence.
                    self.watchdog.handle_rx(now);
                }
            }
            if decoded > 0 {
                Counters::add(&self.outgoing.stats.counters().frames_in, decoded);
            }
            let deframer = self.inflow.deframer();
            let buf = deframer.read_buf()?;
            tokio::select! {
                read = io.read_buf(buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(deframer.handle_eof());
                    }
                    deframer.handle_read(n);
                    Counters::add(&self.outgoing.stats.counters().bytes_in, n as u64);
                    self.watchdog.handle_rx(now());
                }
                () = &mut timer, if deadline.is_some() => {
                    self.watchdog.handle_data(self.shared.last_data_sent());
                    self.watchdog.check(now())?;
                    if let Some(at) = self.watchdog.deadline() {
                        timer.as_mut().reset(at.into());
                    }
                }
                _ = self.stop.changed() => return Ok(()),
            }
        }
    }

    /// Queues the answer to a ping. Once our sending side is closed no pong
    /// can go out; the peer sees our end of stream instead.
    async fn reply(&self, frame: Frame) {
        let out = &self.outgoing;
        let _ = out
            .push(false, |state| {
                Ok(out.encoder.encode(&frame, &mut state.frames)?)
            })
            .await;
    }

    /// Decompresses a large body on a blocking thread: its milliseconds of
    /// work then share the CPU with the runtime's workers through the
    /// operating system's scheduler, instead of holding a worker (and the
    /// connections waiting for it) until it is done.
    async fn decompress_aside(&mut self, body: Data) -> Result<Bytes, Error> {
        let mut codec = self.inflow.take_codec();
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
                self.inflow.put_codec(codec);
                Ok(result?)
            }
            Err(error) => Err(Error::Io(std::io::Error::other(format!(
                "the decompression task ended: {error}"
            )))),
        }
    }

    /// Appends the decoded items to the inbound queue; while the queue is at
    /// its limit, waits (not reading the socket, so TCP pushes back).
    /// Returns whether it waited.
    async fn hand_over(&mut self) -> Result<bool, Error> {
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
            return Ok(false);
        }
        let ready = || {
            let mut state = inbound.lock();
            if state.receiver_gone {
                return Some(Err(Error::Closed));
            }
            if state.held() < inbound.limit {
                return Some(Ok(true));
            }
            state.reader_waiting = true;
            None
        };
        // Stopped by the writer, which recorded why.
        let stopped = async {
            let _ = self.stop.changed().await;
        };
        wait_until_or(&inbound.space, ready, stopped)
            .await
            .unwrap_or(Err(Error::Closed))
    }
}
