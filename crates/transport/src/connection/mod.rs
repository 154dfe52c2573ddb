//! A framed connection: a reader task and a writer task over one stream,
//! driving the sans-IO core in [`crate::proto`].
//!
//! - `send`: the send queue the [`Sender`]s encode into;
//! - `recv`: the inbound queue the [`Receiver`] takes from;
//! - `reader`: reads the stream into the core's [`Inflow`](crate::proto::Inflow);
//! - `writer`: writes the queue through the core's
//!   [`Outflow`](crate::proto::Outflow), and the heartbeat pings.

mod reader;
mod recv;
mod send;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use netproto_crypto::{Capabilities, Opener, PublicKey, Sealer};
use netproto_wire::{Compression, Credit, Envelope, ErrorFrame, GoAway, SecurityMode};
use tokio::sync::watch;
use tracing::Instrument;

pub use recv::Receiver;
pub use send::Sender;

use crate::proto::{Heartbeat, Inflow, Outflow, Watchdog};
use crate::sync::lock;
use crate::{ConnectionConfig, ConnectionStats, Error, Io};

/// What the application receives.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A message (request, response or one-way), with the
    /// [`flags`](netproto_wire::Envelope::flags) of its data frame; a header
    /// block is still at the front of its payload when they say so (take it
    /// off with [`Envelope::take_headers`](netproto_wire::Envelope::take_headers)).
    Message(Envelope),
    /// The peer is shutting down: no new requests; those up to
    /// `last_request_id` will still be answered.
    GoAway(GoAway),
    /// The peer reports an error, for one request or for the connection.
    Error(ErrorFrame),
    /// The peer cancels its request with this id (PROTOCOL.md Part III §3).
    Cancel(u64),
    /// The peer grants more items to the server stream answering its
    /// request (Part III §4).
    Credit(Credit),
    /// The server stream answering our request with this id has ended
    /// (Part III §4).
    End(u64),
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

/// Who protects the frames once the handshake is done.
pub(crate) enum Protection {
    /// The stream itself: frames go to it as they are (plain mode, or TLS,
    /// whose stream encrypts).
    ByStream,
    /// The connection: frames are the plaintext of Noise records.
    Noise {
        /// Seals what we send.
        sealer: Box<Sealer>,
        /// Opens what we receive.
        opener: Box<Opener>,
    },
}

/// What the reader, the writer and the receiver share.
struct Shared {
    /// When the connection started: the origin of `data_sent`.
    origin: Instant,
    /// When the writer last wrote a data frame, in nanoseconds after
    /// `origin`: what the reader's watchdog needs of the writer, passed
    /// without a lock.
    data_sent: AtomicU64,
    /// The first fatal error, reported to the receiver.
    error: Mutex<Option<Error>>,
    /// Set to true to stop both tasks.
    stop: watch::Sender<bool>,
}

impl Shared {
    /// Records that a data frame was written at `at`.
    fn data_sent(&self, at: Instant) {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        self.data_sent
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// When the writer last wrote a data frame (the start, if never).
    fn last_data_sent(&self) -> Instant {
        let nanos = self.data_sent.load(Ordering::Relaxed);
        self.origin + std::time::Duration::from_nanos(nanos)
    }

    /// Records `error` if it is the first, and stops both tasks.
    fn fail(&self, error: Error) {
        self.record(error);
        self.stop();
    }

    /// Records `error` as the connection's end, without stopping the tasks
    /// yet (see [`stop`](Self::stop)).
    fn record(&self, error: Error) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            tracing::debug!(%error, "closing connection");
            *slot = Some(error);
        }
    }

    /// Stops both tasks.
    fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Records that the peer closed its sending side cleanly. Our writer
    /// goes on (half-close) until the application closes or drops its senders.
    fn peer_closed(&self) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(Error::PeerClosed);
        }
    }

    fn take_error(&self) -> Option<Error> {
        lock(&self.error).take()
    }
}

/// The current instant on the runtime's clock (which tests may pause).
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
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
    ///
    /// Spawns the connection's two tasks, a reader and a writer, on the
    /// current runtime (see docs/ARCHITECTURE.md, "One connection, two
    /// tasks"): they end when the connection does, and nothing else needs to
    /// drive them.
    pub(crate) fn spawn<I: Io>(
        io: I,
        protection: Protection,
        leftover: BytesMut,
        info: ConnectionInfo,
        config: &ConnectionConfig,
        offload: Option<tokio::runtime::Handle>,
    ) -> Self {
        let (read_half, write_half) = tokio::io::split(io);
        let stats = ConnectionStats::default();
        let outgoing = Arc::new(send::Outgoing::new(config, &info, stats.clone()));
        let inbound = Arc::new(recv::Inbound::new(config.inbound_limit));
        let (stop, stop_rx) = watch::channel(false);
        let start = now();
        let shared = Arc::new(Shared {
            origin: start,
            data_sent: AtomicU64::new(0),
            error: Mutex::new(None),
            stop,
        });
        let (sealer, opener) = match protection {
            Protection::ByStream => (None, None),
            Protection::Noise { sealer, opener } => (Some(sealer), Some(opener)),
        };
        let span = tracing::Span::current();
        let reader = reader::Reader {
            shared: shared.clone(),
            inbound: inbound.clone(),
            batch: std::collections::VecDeque::new(),
            outgoing: outgoing.clone(),
            stop: stop_rx.clone(),
            inflow: Inflow::new(config, opener, leftover),
            watchdog: Watchdog::new(config, start),
            offload,
        };
        tokio::spawn(reader.run(read_half).instrument(span.clone()));
        let writer = writer::Writer {
            shared: shared.clone(),
            stop: stop_rx,
            write_timeout: config.write_timeout,
            write_batch_bytes: config.write_batch_bytes,
            heartbeat: Heartbeat::new(config, start),
            linger_after: config.heartbeat_interval,
            outflow: Outflow::new(sealer),
            outgoing: outgoing.clone(),
        };
        tokio::spawn(writer.run(write_half).instrument(span));
        Self {
            stats,
            sender: Sender::new(outgoing, info.peer_max_frame_len),
            receiver: Receiver::new(inbound, shared),
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
