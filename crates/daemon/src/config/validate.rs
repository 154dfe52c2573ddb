//! The one place the daemon's own settings are range-checked; the settings
//! of connections are checked by
//! [`ConnectionConfig::validate`](netproto_transport::ConnectionConfig::validate),
//! through the conversions in `connection.rs`.

use std::collections::HashSet;
use std::time::Duration;

use super::proxy::{MAX_PROXY_HEADER, MIN_PROXY_HEADER};
use super::{
    ClientConfig, ClusterConfig, MAX_HANDSHAKE_THREADS, NetworkConfig, SecurityConfig,
    SecurityMode, ServerConfig,
};
use crate::{Error, Result};

/// Largest accepted `cluster.indirect_probes`.
const MAX_INDIRECT_PROBES: usize = 16;

/// Shortest accepted `cluster.probe_period`.
const MIN_PROBE_PERIOD: Duration = Duration::from_millis(10);

impl NetworkConfig {
    /// Checks every value; a zero timeout or limit is an error, and so are
    /// files that do not exist.
    ///
    /// Keys, pins, peers and names were read when the configuration was
    /// loaded (their types hold only valid values). The settings of
    /// connections, on both sides, are checked as the transport checks
    /// them ([`ConnectionConfig::validate`](netproto_transport::ConnectionConfig::validate)).
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        check_server(&self.server)?;
        check_client(&self.client)?;
        self.server.connection_config(&self.transport)?;
        self.client.connection_config(&self.transport)?;
        check_security(&self.security)?;
        self.pinned_server_key()?;
        self.cluster.validate()?;
        if !self.cluster.allowed_members.is_empty() && self.security.mode != SecurityMode::Noise {
            return Err(Error::Invalid(
                "cluster.allowed_members needs security.mode = \"noise\": members are told apart by their Noise keys".into(),
            ));
        }
        self.balancer.validate()
    }

    /// The server key the client pins: `client.server_key` or
    /// `security.server_key`, whichever is set.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] when both are set to different keys.
    pub fn pinned_server_key(&self) -> Result<Option<netproto_crypto::PublicKey>> {
        match (self.client.server_key, self.security.server_key) {
            (Some(client), Some(security)) if client != security => Err(Error::Invalid(format!(
                "client.server_key ({client}) and security.server_key ({security}) pin different keys: set one of them"
            ))),
            (client, security) => Ok(client.or(security)),
        }
    }
}

/// The server's own settings (not those of its connections).
fn check_server(s: &ServerConfig) -> Result<()> {
    nonzero(s.max_connections, "server.max_connections")?;
    nonzero(s.max_connections_per_ip, "server.max_connections_per_ip")?;
    nonzero(s.max_pending, "server.max_pending")?;
    nonzero(s.max_pending_per_ip, "server.max_pending_per_ip")?;
    nonzero(s.max_pending_per_prefix, "server.max_pending_per_prefix")?;
    nonzero(
        s.handshake_rate_per_ip as usize,
        "server.handshake_rate_per_ip",
    )?;
    nonzero(
        s.handshake_rate_per_prefix as usize,
        "server.handshake_rate_per_prefix",
    )?;
    for (len, most, name) in [
        (s.ipv4_prefix_len, 32, "server.ipv4_prefix_len"),
        (s.ipv6_prefix_len, 128, "server.ipv6_prefix_len"),
    ] {
        if !(1..=most).contains(&len) {
            return Err(Error::Invalid(format!(
                "{name} must be 1 to {most}, not {len}"
            )));
        }
    }
    if s.preface_timeout > s.connection_timeout {
        return Err(Error::Invalid(format!(
            "server.preface_timeout ({:?}) must not be longer than server.connection_timeout ({:?})",
            s.preface_timeout, s.connection_timeout
        )));
    }
    check_proxy(s)?;
    nonzero(s.max_in_flight, "server.max_in_flight")?;
    if s.handshake_threads > MAX_HANDSHAKE_THREADS {
        return Err(Error::Invalid(format!(
            "server.handshake_threads must be at most {MAX_HANDSHAKE_THREADS}, not {}",
            s.handshake_threads
        )));
    }
    for (value, name) in [
        (s.connection_timeout, "server.connection_timeout"),
        (s.preface_timeout, "server.preface_timeout"),
        (s.shutdown_timeout, "server.shutdown_timeout"),
        (s.request_timeout, "server.request_timeout"),
        (s.proxy_timeout, "server.proxy_timeout"),
    ] {
        duration(value, name)?;
    }
    // No delay is a valid choice: nothing watches readiness.
    at_most_a_day(s.drain_delay, "server.drain_delay")
}

/// The PROXY protocol settings: an empty trust list is refused rather than
/// read as "trust everyone" or "trust no one" (fail closed, and say so).
fn check_proxy(s: &ServerConfig) -> Result<()> {
    if s.proxy_protocol && s.trusted_proxies.is_empty() && !s.address.starts_with("unix:") {
        return Err(Error::Invalid(
            "server.proxy_protocol is on but server.trusted_proxies is empty: list the load \
             balancers' addresses or prefixes (a PROXY header is read from them, and only them)"
                .into(),
        ));
    }
    if !(MIN_PROXY_HEADER..=MAX_PROXY_HEADER).contains(&s.proxy_header_max) {
        return Err(Error::Invalid(format!(
            "server.proxy_header_max must be {MIN_PROXY_HEADER} to {MAX_PROXY_HEADER} bytes, not {}",
            s.proxy_header_max
        )));
    }
    Ok(())
}

/// The client's own settings (not those of its connection).
fn check_client(c: &ClientConfig) -> Result<()> {
    for (value, name) in [
        (c.connection_timeout, "client.connection_timeout"),
        (c.operation_timeout, "client.operation_timeout"),
        (c.response_timeout, "client.response_timeout"),
        (c.reconnect_delay, "client.reconnect_delay"),
    ] {
        duration(value, name)?;
    }
    nonzero(
        c.max_reconnect_attempts as usize,
        "client.max_reconnect_attempts",
    )
}

/// The files the security section names exist.
fn check_security(security: &SecurityConfig) -> Result<()> {
    if security.mode == SecurityMode::Tls {
        for (file, name) in [
            (&security.tls_cert, "security.tls_cert"),
            (&security.tls_key, "security.tls_key"),
            (&security.tls_ca, "security.tls_ca"),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return Err(Error::Invalid(format!(
                    "{name}: {} does not exist",
                    path.display()
                )));
            }
        }
    }
    if let Some(path) = &security.key_file
        && !path.is_file()
    {
        return Err(Error::Invalid(format!(
            "security.key_file: {} does not exist (create one with `netproto keygen`)",
            path.display()
        )));
    }
    Ok(())
}

impl ClusterConfig {
    /// Checks every value of the section.
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] naming the first bad value.
    pub fn validate(&self) -> Result<()> {
        duration(self.probe_period, "cluster.probe_period")?;
        duration(self.probe_timeout, "cluster.probe_timeout")?;
        duration(self.suspect_timeout, "cluster.suspect_timeout")?;
        if self.probe_period < MIN_PROBE_PERIOD {
            return Err(Error::Invalid(format!(
                "cluster.probe_period must be at least {MIN_PROBE_PERIOD:?}"
            )));
        }
        if self.probe_timeout >= self.probe_period {
            return Err(Error::Invalid(
                "cluster.probe_timeout must be less than cluster.probe_period".into(),
            ));
        }
        if self.suspect_timeout < self.probe_period {
            return Err(Error::Invalid(
                "cluster.suspect_timeout must be at least cluster.probe_period".into(),
            ));
        }
        if !(1..=MAX_INDIRECT_PROBES).contains(&self.indirect_probes) {
            return Err(Error::Invalid(format!(
                "cluster.indirect_probes must be 1 to {MAX_INDIRECT_PROBES}"
            )));
        }
        address(&self.bind, "cluster.bind", true)?;
        if let Some(advertise) = &self.advertise {
            address(advertise, "cluster.advertise", false)?;
        }
        let mut seen = HashSet::new();
        for peer in &self.peers {
            if !seen.insert(peer.address.as_str()) {
                return Err(Error::Invalid(format!(
                    "cluster.peers: {:?} is listed twice",
                    peer.address
                )));
            }
        }
        Ok(())
    }
}

/// `host:port` (port 0 only if `any_port`) or `unix:/path`.
fn address(value: &str, name: &str, any_port: bool) -> Result<()> {
    let valid = if let Some(path) = value.strip_prefix("unix:") {
        !path.is_empty()
    } else {
        value.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| any_port || p != 0)
        })
    };
    if !valid {
        return Err(Error::Invalid(format!(
            "{name}: {value:?} is not host:port or unix:/path"
        )));
    }
    Ok(())
}

fn nonzero(value: usize, name: &str) -> Result<()> {
    if value == 0 {
        return Err(Error::Invalid(format!("{name} must not be 0")));
    }
    Ok(())
}

fn duration(value: Duration, name: &str) -> Result<()> {
    if value.is_zero() {
        return Err(Error::Invalid(format!("{name} must not be 0")));
    }
    at_most_a_day(value, name)
}

fn at_most_a_day(value: Duration, name: &str) -> Result<()> {
    if value > netproto_transport::MAX_DURATION {
        return Err(Error::Invalid(format!("{name} must be at most one day")));
    }
    Ok(())
}
