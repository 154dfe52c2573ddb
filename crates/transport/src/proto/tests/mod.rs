//! Two connection cores driven against each other with no runtime, no
//! sockets and no clock: a deterministic [`Pair`], as quinn-proto tests
//! quinn's state machine.

mod cases;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use netproto_compress::Codec;
use netproto_crypto::{Opener, RecordConfig, Sealer};
use netproto_wire::{Compression, Encoder, Envelope, Frame, MessageType};

use super::liveness::earliest;
use super::{Event, Heartbeat, Inflow, Outflow, Policy, Watchdog, decompress_config, message};
use crate::{ConnectionConfig, Error, Incoming};

/// One side of a [`Pair`]: the core's parts, wired as the connection's
/// reader and writer tasks wire them.
pub(super) struct Endpoint {
    config: ConnectionConfig,
    encoder: Encoder,
    policy: Policy,
    codec: Codec,
    outflow: Outflow,
    inflow: Inflow,
    heartbeat: Heartbeat,
    watchdog: Watchdog,
    /// Encoded frames not transmitted yet.
    queued: BytesMut,
    queued_data: bool,
    /// What the core handed to the application.
    pub(super) delivered: VecDeque<Incoming>,
    /// The error that ended the connection, if any.
    pub(super) error: Option<Error>,
    /// Pings this side sent.
    pub(super) pings: u64,
    /// Drops everything it would transmit (a peer that went silent).
    pub(super) mute: bool,
}

impl Endpoint {
    fn new(
        config: &ConnectionConfig,
        now: Instant,
        sealer: Option<Sealer>,
        opener: Option<Opener>,
    ) -> Self {
        Self {
            config: config.clone(),
            encoder: Encoder::new(config.max_frame_len),
            policy: Policy {
                compression: config.compression,
                threshold: config.compression_threshold,
            },
            codec: Codec::new(decompress_config(config)),
            outflow: Outflow::new(sealer.map(Box::new)),
            inflow: Inflow::new(config, opener.map(Box::new), BytesMut::new()),
            heartbeat: Heartbeat::new(config, now),
            watchdog: Watchdog::new(config, now),
            queued: BytesMut::new(),
            queued_data: false,
            delivered: VecDeque::new(),
            error: None,
            pings: 0,
            mute: false,
        }
    }

    /// Queues a message, compressed as the policy says, with its flags.
    pub(super) fn send(&mut self, envelope: &Envelope) {
        if self.policy.compresses(envelope.encoded_len()) {
            let mut body = BytesMut::new();
            envelope.encode(&mut body);
            let mut data = self
                .codec
                .compress(self.policy.compression, body.freeze())
                .unwrap();
            data.flags = envelope.flags;
            self.encoder
                .encode(&Frame::Data(data), &mut self.queued)
                .unwrap();
        } else {
            envelope
                .encode_frame(&self.encoder, &mut self.queued)
                .unwrap();
        }
        self.queued_data = true;
    }

    /// Queues a control frame.
    pub(super) fn send_frame(&mut self, frame: &Frame) {
        self.encoder.encode(frame, &mut self.queued).unwrap();
    }

    /// What goes on the wire now: sealed records, or the frames as they are.
    fn transmit(&mut self, now: Instant) -> Bytes {
        if self.queued.is_empty() || self.error.is_some() {
            return Bytes::new();
        }
        let frames = self.queued.split();
        let wire = if self.outflow.seals() {
            let mut sealed = BytesMut::new();
            self.outflow.seal(&[], &frames, &mut sealed).unwrap();
            sealed.freeze()
        } else {
            frames.freeze()
        };
        self.heartbeat.handle_tx(now);
        if std::mem::take(&mut self.queued_data) {
            self.watchdog.handle_data(now);
        }
        if self.mute { Bytes::new() } else { wire }
    }

    /// Feeds bytes from the peer, as the reader does after a read.
    pub(super) fn receive(&mut self, bytes: &[u8], now: Instant) {
        if self.error.is_some() || bytes.is_empty() {
            return;
        }
        if let Err(error) = self.try_receive(bytes, now) {
            self.error = Some(error);
        }
    }

    fn try_receive(&mut self, bytes: &[u8], now: Instant) -> Result<(), Error> {
        self.inflow.deframer().handle_bytes(bytes)?;
        self.watchdog.handle_rx(now);
        while let Some(event) = self.inflow.poll_event(&mut self.delivered)? {
            match event {
                Event::Reply(frame) => self.send_frame(&frame),
                Event::DecompressAside(body) => {
                    let flags = body.flags;
                    let mut codec = self.inflow.take_codec();
                    let body = codec.decompress(body);
                    self.inflow.put_codec(codec);
                    self.delivered.push_back(message(body?, flags)?);
                }
            }
        }
        if self.inflow.take_counts().1 {
            self.watchdog.handle_data(now);
        }
        Ok(())
    }

    /// The peer ended its stream.
    pub(super) fn receive_eof(&mut self) {
        if self.error.is_none() {
            self.error = Some(self.inflow.deframer().handle_eof());
        }
    }

    /// Acts on the timers at `now`: fails the connection, or queues a ping.
    fn on_timeout(&mut self, now: Instant) {
        if self.error.is_some() {
            return;
        }
        if let Err(error) = self.watchdog.check(now) {
            self.error = Some(error);
            return;
        }
        if let Some(token) = self.heartbeat.poll_ping(now) {
            self.pings += 1;
            self.send_frame(&Frame::Ping(token));
        }
    }

    /// The messages delivered so far, by request id.
    pub(super) fn messages(&mut self) -> Vec<Envelope> {
        self.delivered
            .drain(..)
            .filter_map(|item| match item {
                Incoming::Message(envelope) => Some(envelope),
                _ => None,
            })
            .collect()
    }

    /// The next instant at which a timer of this side has something to say.
    fn poll_timeout(&self) -> Option<Instant> {
        earliest(self.heartbeat.ping_at(), self.watchdog.deadline())
    }

    /// This side's configuration.
    pub(super) fn config(&self) -> &ConnectionConfig {
        &self.config
    }
}

/// Two cores connected back to back, with a simulated clock.
pub(super) struct Pair {
    pub(super) now: Instant,
    pub(super) start: Instant,
    pub(super) a: Endpoint,
    pub(super) b: Endpoint,
    /// Bytes that crossed the wire, each way.
    pub(super) a_to_b: usize,
    pub(super) b_to_a: usize,
}

impl Pair {
    /// Two plain-mode cores with the same configuration.
    pub(super) fn plain(config: &ConnectionConfig) -> Self {
        let now = Instant::now();
        Self::with(
            now,
            Endpoint::new(config, now, None, None),
            Endpoint::new(config, now, None, None),
        )
    }

    /// Two Noise-mode cores sharing record keys, rekeying every
    /// `rekey_interval` records.
    pub(super) fn noise(config: &ConnectionConfig, rekey_interval: u64) -> Self {
        let now = Instant::now();
        let provider = netproto_crypto::provider::default_provider();
        let mut records = RecordConfig::default();
        records.rekey_interval = rekey_interval;
        let key_ab = [7u8; 32];
        let key_ba = [9u8; 32];
        let half = |key: &[u8; 32]| {
            (
                Sealer::from_key(Arc::clone(&provider), key, &records).unwrap(),
                Opener::from_key(Arc::clone(&provider), key, &records).unwrap(),
            )
        };
        let (seal_ab, open_ab) = half(&key_ab);
        let (seal_ba, open_ba) = half(&key_ba);
        Self::with(
            now,
            Endpoint::new(config, now, Some(seal_ab), Some(open_ba)),
            Endpoint::new(config, now, Some(seal_ba), Some(open_ab)),
        )
    }

    fn with(now: Instant, a: Endpoint, b: Endpoint) -> Self {
        Self {
            now,
            start: now,
            a,
            b,
            a_to_b: 0,
            b_to_a: 0,
        }
    }

    /// Moves bytes both ways until neither side has anything to send.
    pub(super) fn drive(&mut self) {
        for _ in 0..1000 {
            let ab = self.a.transmit(self.now);
            let ba = self.b.transmit(self.now);
            if ab.is_empty() && ba.is_empty() {
                return;
            }
            self.a_to_b += ab.len();
            self.b_to_a += ba.len();
            self.b.receive(&ab, self.now);
            self.a.receive(&ba, self.now);
        }
        panic!("the pair never went quiet");
    }

    /// Lets `duration` pass, waking each side whenever its timers say.
    pub(super) fn advance(&mut self, duration: Duration) {
        let end = self.now + duration;
        self.drive();
        for _ in 0..100_000 {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .filter(|at| *at > self.now)
                .min();
            let Some(at) = next.filter(|at| *at <= end) else {
                self.now = end;
                self.a.on_timeout(end);
                self.b.on_timeout(end);
                self.drive();
                return;
            };
            self.now = at;
            self.a.on_timeout(at);
            self.b.on_timeout(at);
            self.drive();
        }
        panic!("too many timer events");
    }

    /// Time since the pair was made.
    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

/// A request with `len` bytes of payload, id `id`.
pub(super) fn request(id: u64, len: usize) -> Envelope {
    let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    Envelope::new(id, MessageType::ECHO, Bytes::from(payload))
}

/// A configuration with no timers, for cases that are not about them.
pub(super) fn quiet() -> ConnectionConfig {
    ConnectionConfig {
        heartbeat_interval: None,
        idle_timeout: None,
        compression: Compression::None,
        ..ConnectionConfig::default()
    }
}
