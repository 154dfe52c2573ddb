//! Structured logging with tracing-subscriber.

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::{Error, Result};

/// Log output formats (`logging.format`: `human` or `json`).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, the default.
    #[default]
    Human,
    /// One JSON object per line, with span fields (`conn_id`, `peer`).
    Json,
}

impl LogFormat {
    /// Parses `human` (or `text`, `pretty`) or `json`, as a command line
    /// may spell them; configuration files take only `human` and `json`.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "human" | "text" | "pretty" => Ok(Self::Human),
            "json" => Ok(Self::Json),
            other => Err(Error::Invalid(format!(
                "log format must be human or json, not {other:?}"
            ))),
        }
    }
}

/// Installs the global tracing subscriber, writing to standard error.
///
/// `level` is a level (`info`) or a filter in `RUST_LOG` syntax; the
/// `RUST_LOG` environment variable overrides it. `format` defaults to human.
///
/// # Errors
///
/// [`Error::Invalid`] for a bad filter, [`Error::LoggingInit`] if a global
/// subscriber is already installed.
pub fn init_logging(level: Option<&str>, format: Option<LogFormat>) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(env),
        _ => EnvFilter::try_new(level.unwrap_or("info")),
    }
    .map_err(|e| Error::Invalid(format!("log filter: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let result = match format.unwrap_or(LogFormat::Human) {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    result.map_err(|_| Error::LoggingInit)
}
