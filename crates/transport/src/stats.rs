//! Traffic counters of one connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live traffic counters of one connection; cheap to clone, read with
/// [`snapshot`](Self::snapshot).
///
/// The reader and writer tasks add to them once per read or write (not per
/// frame), so keeping them costs nothing measurable. They stay readable after
/// the connection has closed: a server can fold them into its totals then.
#[derive(Clone, Debug, Default)]
pub struct ConnectionStats(Arc<Counters>);

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) compress_in: AtomicU64,
    pub(crate) compress_out: AtomicU64,
    pub(crate) backpressure_waits: AtomicU64,
    pub(crate) backpressure_refusals: AtomicU64,
    /// A gauge, not a counter: see [`StatsSnapshot::send_buffer_bytes`].
    pub(crate) send_buffer: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, n: usize) {
        gauge.store(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl ConnectionStats {
    pub(crate) fn counters(&self) -> &Counters {
        &self.0
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            frames_in: get(&c.frames_in),
            frames_out: get(&c.frames_out),
            bytes_in: get(&c.bytes_in),
            bytes_out: get(&c.bytes_out),
            compress_input_bytes: get(&c.compress_in),
            compress_output_bytes: get(&c.compress_out),
            backpressure_waits: get(&c.backpressure_waits),
            backpressure_refusals: get(&c.backpressure_refusals),
            send_buffer_bytes: get(&c.send_buffer),
        }
    }
}

/// The counters of a connection at one moment.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Frames received and decoded (data and control).
    pub frames_in: u64,
    /// Frames written to the stream (data and control).
    pub frames_out: u64,
    /// Bytes read from the stream, after TLS, before Noise records are opened.
    pub bytes_in: u64,
    /// Bytes written to the stream, after Noise sealing, before TLS.
    pub bytes_out: u64,
    /// Bytes of message bodies that were compressed before sending.
    pub compress_input_bytes: u64,
    /// What those bodies took once compressed (with their length prefix).
    pub compress_output_bytes: u64,
    /// Sends that had to wait for room in the send queue.
    pub backpressure_waits: u64,
    /// `try_send` calls refused because the send queue was full.
    pub backpressure_refusals: u64,
    /// Capacity of the send path's buffers after the writer's last write:
    /// the queue's and the writer's encoded-frame buffers and, with Noise,
    /// the sealed records. Each grows to hold the largest batch written (at
    /// most `write_batch_bytes` of queued frames, or one larger message) and
    /// may take up to about twice that; they are given back once no batch
    /// has needed them for a heartbeat interval (15 s without heartbeats),
    /// and at once after a batch over 4 x `write_batch_bytes`. 0 once the
    /// connection is closed. A gauge, not a count.
    pub send_buffer_bytes: u64,
}

impl StatsSnapshot {
    /// Compressed size over uncompressed size of the compressed bodies
    /// (`None` before anything was compressed).
    pub fn compression_ratio(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // a ratio; 2^52 bytes is far off
        (self.compress_input_bytes > 0)
            .then(|| self.compress_output_bytes as f64 / self.compress_input_bytes as f64)
    }
}
