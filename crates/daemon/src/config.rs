//! Configuration: TOML files, environment variables, or both layered.
//!
//! Environment variables use the prefix `NETPROTO` and `__` between levels:
//! `NETPROTO__SERVER__ADDRESS=0.0.0.0:9000`, `NETPROTO__SECURITY__MODE=tls`,
//! `NETPROTO__TRANSPORT__MAX_FRAME_LEN=1048576`. Durations are written like
//! `30s`, `500ms` or `2m`. Environment variables override the file.
//!
//! Everything is typed when it is loaded: names into enums ([`SecurityMode`],
//! [`Compression`], [`NoiseCipher`], [`NoiseBackend`],
//! [`LogFormat`](crate::LogFormat)), keys and pins from hex, peers into
//! [`PeerAddress`], trusted proxies into [`TrustedProxy`]; then
//! [`NetworkConfig::validate`] checks the ranges, the connection settings
//! through [`netproto_transport::ConnectionConfig::validate`].

mod balancer;
mod connection;
mod proxy;
mod sections;
#[cfg(test)]
mod tests;
mod validate;
mod values;

use std::path::Path;

use config::builder::DefaultState;
use config::{Config, ConfigBuilder, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};

pub use balancer::{BalancerConfig, Discovery};
pub use proxy::TrustedProxy;
pub use sections::{
    ClientConfig, ClusterConfig, LoggingConfig, SecurityConfig, ServerConfig, TransportConfig,
};
pub use values::{Compression, NoiseBackend, NoiseCipher, PeerAddress, SecurityMode};

use crate::{Error, Result};

/// Prefix of the environment variables read by [`NetworkConfig::from_env`].
pub const ENV_PREFIX: &str = "NETPROTO";

/// Separator between levels in environment variable names.
pub const ENV_SEPARATOR: &str = "__";

/// Most handshake threads a server may run ([`ServerConfig::handshake_threads`]).
pub const MAX_HANDSHAKE_THREADS: usize = 64;

/// Everything the daemon and the client need.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// The server.
    pub server: ServerConfig,
    /// The client.
    pub client: ClientConfig,
    /// Framing, limits and timeouts shared by both.
    pub transport: TransportConfig,
    /// Security mode, keys and certificates.
    pub security: SecurityConfig,
    /// Log level and format.
    pub logging: LoggingConfig,
    /// Peers of this node, their heartbeat and failure detection.
    pub cluster: ClusterConfig,
    /// The endpoints of a client balancer: their discovery and health.
    pub balancer: BalancerConfig,
}

impl NetworkConfig {
    /// Reads a TOML file; missing sections and fields keep their defaults.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the file cannot be read or parsed (unknown
    /// fields are errors), [`Error::Invalid`] when a value is out of range.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::load(Some(path.as_ref()), None)
    }

    /// Reads the environment (`NETPROTO__SECTION__FIELD`).
    ///
    /// # Errors
    ///
    /// As [`from_file`](Self::from_file).
    pub fn from_env() -> Result<Self> {
        Self::load(None, None)
    }

    /// The file (if any) with the environment layered over it.
    ///
    /// `env` replaces the process environment when given (for tests and
    /// embedding).
    ///
    /// # Errors
    ///
    /// As [`from_file`](Self::from_file).
    pub fn load(
        file: Option<&Path>,
        env: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Self> {
        let mut builder = Config::builder();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(Error::Invalid(format!(
                    "configuration file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(File::from(path).format(FileFormat::Toml));
        }
        let mut environment = Environment::with_prefix(ENV_PREFIX)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("security.allowed_peers")
            .with_list_parse_key("security.tls_pins")
            .with_list_parse_key("cluster.peers")
            .with_list_parse_key("cluster.allowed_members")
            .with_list_parse_key("balancer.endpoints")
            .with_list_parse_key("balancer.dns_servers")
            .with_list_parse_key("server.trusted_proxies");
        if let Some(vars) = env {
            environment = environment.source(Some(vars.into_iter().collect()));
        }
        Self::build(builder.add_source(environment))
    }

    /// Parses TOML text as a configuration file holds it, without the
    /// environment; missing sections and fields keep their defaults.
    ///
    /// # Errors
    ///
    /// As [`from_file`](Self::from_file).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        Self::build(Config::builder().add_source(File::from_str(text, FileFormat::Toml)))
    }

    fn build(builder: ConfigBuilder<DefaultState>) -> Result<Self> {
        let config: Self = builder.build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML, as `netproto config` prints it.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] if serialisation fails.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Invalid(e.to_string()))
    }
}
