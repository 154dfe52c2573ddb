//! Structured logging: `logging::init_logging(Some("info"), None)`.

pub use netproto_daemon::LogFormat;

use crate::error::Result;

/// Installs the global tracing subscriber, writing to standard error.
///
/// `level` is a level (`info`) or a filter in `RUST_LOG` syntax
/// (`info,netproto_transport=debug`); the `RUST_LOG` environment variable
/// overrides it. `format` is human-readable lines by default, or
/// [`LogFormat::Json`] (one object per line, with span fields such as
/// `conn_id` and `peer`).
///
/// # Errors
///
/// [`ProtocolError::Daemon`](crate::error::ProtocolError::Daemon) for a bad
/// filter, or when a global subscriber is already installed.
pub fn init_logging(level: Option<&str>, format: Option<LogFormat>) -> Result<()> {
    Ok(netproto_daemon::init_logging(level, format)?)
}
