//! The one conversion of the daemon's settings into the transport's
//! [`ConnectionConfig`], for the server's connections, the client's, and
//! those to cluster peers.

use std::time::Duration;

use netproto_transport::ConnectionConfig;

use super::{ClientConfig, ServerConfig, TransportConfig};
use crate::{Error, Result};

impl ServerConfig {
    /// The settings of the server's connections: `[transport]`, with this
    /// section's `backpressure_limit` and `heartbeat_interval`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the first value out of range, as
    /// [`ConnectionConfig::validate`] finds it.
    pub fn connection_config(&self, transport: &TransportConfig) -> Result<ConnectionConfig> {
        transport.connection_config("server", self.backpressure_limit, self.heartbeat_interval)
    }
}

impl ClientConfig {
    /// The settings of the client's connection: `[transport]`, with this
    /// section's `backpressure_limit` and `heartbeat_interval`.
    ///
    /// # Errors
    ///
    /// As [`ServerConfig::connection_config`].
    pub fn connection_config(&self, transport: &TransportConfig) -> Result<ConnectionConfig> {
        transport.connection_config("client", self.backpressure_limit, self.heartbeat_interval)
    }
}

impl TransportConfig {
    /// This section with one side's queue bound and heartbeat, checked.
    fn connection_config(
        &self,
        side: &'static str,
        backpressure_limit: usize,
        heartbeat_interval: Duration,
    ) -> Result<ConnectionConfig> {
        let mut c = ConnectionConfig::default();
        c.max_frame_len = self.max_frame_len;
        c.backpressure_limit = backpressure_limit;
        c.inbound_limit = self.inbound_limit;
        c.idle_timeout = Some(self.idle_timeout);
        c.write_timeout = self.write_timeout;
        c.heartbeat_interval = Some(heartbeat_interval);
        c.heartbeat_misses = self.heartbeat_misses;
        c.compression = self.compression.into();
        c.compression_threshold = self.compression_threshold;
        c.write_batch_bytes = self.write_batch_bytes;
        match c.validate() {
            Ok(()) => Ok(c),
            Err(error) => Err(invalid(error, side, &c)),
        }
    }
}

/// The transport's complaint about `c`, with the configuration's name of
/// the field (`transport.*`, or `side.*` for the two settings of one side)
/// and the value refused.
fn invalid(error: netproto_transport::SetupError, side: &str, c: &ConnectionConfig) -> Error {
    let netproto_transport::SetupError::Config(what) = error else {
        return error.into();
    };
    let field = what.split(' ').next().unwrap_or_default();
    let (section, value) = match field {
        "backpressure_limit" => (side, c.backpressure_limit.to_string()),
        "heartbeat_interval" => (
            side,
            format!("{:?}", c.heartbeat_interval.unwrap_or_default()),
        ),
        "max_frame_len" => ("transport", c.max_frame_len.to_string()),
        "inbound_limit" => ("transport", c.inbound_limit.to_string()),
        "idle_timeout" => (
            "transport",
            format!("{:?}", c.idle_timeout.unwrap_or_default()),
        ),
        "write_timeout" => ("transport", format!("{:?}", c.write_timeout)),
        "heartbeat_misses" => ("transport", c.heartbeat_misses.to_string()),
        "write_batch_bytes" => ("transport", c.write_batch_bytes.to_string()),
        _ => return Error::Invalid(format!("transport: {what}")),
    };
    Error::Invalid(format!("{section}.{what}, not {value}"))
}
