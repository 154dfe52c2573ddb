//! Connection tunables, with safe defaults.

use std::time::Duration;

use netproto_wire::{Compression, DEFAULT_MAX_FRAME_LEN};

use crate::SetupError;

/// Longest timeout or interval accepted: one day. Anything longer is almost
/// certainly a unit mistake (seconds given as milliseconds).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// Largest queue bound accepted, in frames.
pub const MAX_QUEUE: usize = 1 << 20;

/// Tunables of one framed connection.
///
/// Mutate a default and call [`validate`](Self::validate) (the connection
/// constructors do). A zero or absurd value is a [`SetupError::Config`], never a panic.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// Largest data-frame body accepted from the peer (and largest
    /// decompressed body). Default 16 MiB.
    pub max_frame_len: u32,
    /// Frames the send queue holds; `send` waits and `try_send` fails with
    /// [`Error::Backpressure`](crate::Error::Backpressure) when it is full. Default 1024.
    pub backpressure_limit: usize,
    /// Frames the inbound queue holds; when it is full the reader stops
    /// reading the socket, so TCP flow control pushes back on the peer.
    /// Default 1024.
    pub inbound_limit: usize,
    /// Close the connection when no data frame has moved in either direction
    /// for this long (heartbeats do not count). `None` disables it.
    /// Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// Close the connection when one write does not complete in this time:
    /// the peer is not reading. Default 30 s.
    pub write_timeout: Duration,
    /// Send a ping after this long without sending anything. `None` disables
    /// heartbeats and dead-peer detection. Default 15 s.
    pub heartbeat_interval: Option<Duration>,
    /// Declare the peer dead after this many heartbeat intervals without
    /// receiving anything. Default 3.
    pub heartbeat_misses: u32,
    /// Compression used for data bodies of at least `compression_threshold`
    /// bytes, when the peer supports it. Default none: compressing before
    /// encrypting can leak plaintext through sizes (see `docs/SECURITY.md`).
    pub compression: Compression,
    /// Smallest body that is compressed. Default 512 bytes.
    pub compression_threshold: usize,
    /// Bytes the send queue holds before senders wait (a single larger
    /// message is still accepted into an empty queue); the writer sends the
    /// whole queue in one write. Default 512 KiB: on loopback, Noise bulk
    /// throughput measured 1.6x that at 256 KiB (fewer wake-ups of a reader
    /// that drained the socket), and lower again from 768 KiB (probably
    /// cache misses); see `docs/PERFORMANCE.md`.
    pub write_batch_bytes: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            backpressure_limit: 1024,
            inbound_limit: 1024,
            idle_timeout: Some(Duration::from_secs(300)),
            write_timeout: Duration::from_secs(30),
            heartbeat_interval: Some(Duration::from_secs(15)),
            heartbeat_misses: 3,
            compression: Compression::None,
            compression_threshold: netproto_compress::DEFAULT_THRESHOLD,
            write_batch_bytes: 512 * 1024,
        }
    }
}

impl ConnectionConfig {
    /// Checks every value.
    ///
    /// # Errors
    ///
    /// [`SetupError::Config`] naming the first value that is zero or out of range.
    pub fn validate(&self) -> Result<(), SetupError> {
        check(
            self.max_frame_len >= netproto_wire::MIN_MAX_FRAME_LEN,
            "max_frame_len must be at least 64",
        )?;
        check(
            (1..=MAX_QUEUE).contains(&self.backpressure_limit),
            "backpressure_limit must be 1 to 1048576 frames",
        )?;
        check(
            (1..=MAX_QUEUE).contains(&self.inbound_limit),
            "inbound_limit must be 1 to 1048576 frames",
        )?;
        if let Some(idle) = self.idle_timeout {
            check_duration(idle, "idle_timeout must be between 1 ms and one day")?;
        }
        check_duration(
            self.write_timeout,
            "write_timeout must be between 1 ms and one day",
        )?;
        if let Some(interval) = self.heartbeat_interval {
            check_duration(
                interval,
                "heartbeat_interval must be between 1 ms and one day",
            )?;
            check(
                (1..=1000).contains(&self.heartbeat_misses),
                "heartbeat_misses must be 1 to 1000",
            )?;
        }
        check(
            (4096..=64 << 20).contains(&self.write_batch_bytes),
            "write_batch_bytes must be 4 KiB to 64 MiB",
        )?;
        Ok(())
    }
}

/// Checks a timeout that is not part of [`ConnectionConfig`] (connect, handshake).
pub(crate) fn check_duration(value: Duration, what: &'static str) -> Result<(), SetupError> {
    check(
        value >= Duration::from_millis(1) && value <= MAX_DURATION,
        what,
    )
}

fn check(ok: bool, what: &'static str) -> Result<(), SetupError> {
    if ok {
        Ok(())
    } else {
        Err(SetupError::Config(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ConnectionConfig::default().validate().unwrap();
    }

    #[test]
    fn zero_and_absurd_values_are_config_errors() {
        type Mutation = Box<dyn Fn(&mut ConnectionConfig)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|c| c.backpressure_limit = 0),
            Box::new(|c| c.inbound_limit = 0),
            Box::new(|c| c.inbound_limit = usize::MAX),
            Box::new(|c| c.write_timeout = Duration::ZERO),
            Box::new(|c| c.write_timeout = Duration::from_secs(u64::MAX)),
            Box::new(|c| c.idle_timeout = Some(Duration::ZERO)),
            Box::new(|c| c.heartbeat_interval = Some(Duration::ZERO)),
            Box::new(|c| c.heartbeat_misses = 0),
            Box::new(|c| c.max_frame_len = 0),
            Box::new(|c| c.write_batch_bytes = 0),
        ];
        for (i, mutate) in cases.iter().enumerate() {
            let mut config = ConnectionConfig::default();
            mutate(&mut config);
            assert!(
                matches!(config.validate(), Err(SetupError::Config(_))),
                "case {i}"
            );
        }
    }
}
