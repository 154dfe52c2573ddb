//! The TLS server: `tls_daemon::start(address, TlsConfig { .. })`.
//!
//! TLS 1.3 and 1.2 only (rustls with ring, its default cipher suites), with
//! mutual TLS when `verify_client` is set. [`start`] serves the built-in
//! echo handlers ([`echo_dispatcher`]) until ctrl-c; [`new_with_config`]
//! takes your own [`Dispatcher`] and gives a
//! [`Server`] to run and shut down.
//!
//! Development certificates (a CA, a server certificate, a client
//! certificate) come from
//! [`utils::certs::ensure_dev_certs`](crate::utils::certs::ensure_dev_certs)
//! or `netproto certgen` (self-signed server certificate only).
//!
//! # Examples
//!
//! ```no_run
//! use network_protocol::service::tls_daemon::{self, TlsConfig};
//!
//! # async fn run() -> network_protocol::error::Result<()> {
//! let config = TlsConfig {
//!     cert_path: "server_cert.pem",
//!     key_path: "server_key.pem",
//!     ca_path: Some("ca_cert.pem"),
//!     verify_client: true,
//! };
//! tls_daemon::start("127.0.0.1:9443", config).await?;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::sync::Arc;

use netproto_dispatch::Dispatcher;
use netproto_wire::Message;

use super::daemon::{self, Server};
use crate::error::{ProtocolError, Result};

/// TLS server settings, as in the original crate.
///
/// Exhaustive on purpose, so that the original README's struct literal
/// compiles as written. All files are PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsConfig<'a> {
    /// The server's certificate chain, end-entity certificate first.
    pub cert_path: &'a str,
    /// The private key of the end-entity certificate.
    pub key_path: &'a str,
    /// The CA that issues client certificates (mutual TLS).
    pub ca_path: Option<&'a str>,
    /// Require a client certificate issued by `ca_path` (mutual TLS). When
    /// `false`, `ca_path` is ignored and clients are not asked for a
    /// certificate.
    pub verify_client: bool,
}

impl TlsConfig<'_> {
    /// Writes these settings into the security section of `config` (mode
    /// `tls`).
    ///
    /// # Errors
    ///
    /// [`ProtocolError::Config`] when `verify_client` is set without
    /// `ca_path`.
    pub fn apply_to(&self, config: &mut netproto_daemon::NetworkConfig) -> Result<()> {
        let ca = match (self.verify_client, self.ca_path) {
            (true, None) => {
                return Err(ProtocolError::Config(
                    "TlsConfig::verify_client needs ca_path: the CA of the client certificates",
                ));
            }
            (true, Some(ca)) => Some(ca.into()),
            (false, _) => None,
        };
        let security = &mut config.security;
        security.mode = netproto_daemon::SecurityMode::Tls;
        security.tls_cert = Some(self.cert_path.into());
        security.tls_key = Some(self.key_path.into());
        security.tls_ca = ca;
        Ok(())
    }
}

/// The dispatcher [`start`] serves: `ECHO` answers with the same message,
/// `PING` with `PONG`.
pub fn echo_dispatcher() -> Arc<Dispatcher> {
    let dispatcher = Arc::new(Dispatcher::default());
    dispatcher.register("ECHO", |msg| Ok(msg.clone()));
    dispatcher.register("PING", |_| Ok(Message::Pong));
    dispatcher
}

/// Creates a TLS server on `address` with your handlers and the daemon's
/// default limits. Nothing is bound yet: files are read when it is bound.
///
/// # Errors
///
/// As [`TlsConfig::apply_to`].
pub fn new_with_config(
    address: &str,
    config: TlsConfig<'_>,
    dispatcher: Arc<Dispatcher>,
) -> Result<Server> {
    let mut daemon_config = netproto_daemon::NetworkConfig::default();
    address.clone_into(&mut daemon_config.server.address);
    config.apply_to(&mut daemon_config)?;
    Ok(daemon::new_with_daemon_config(daemon_config, dispatcher))
}

/// Serves [`echo_dispatcher`] over TLS on `address` until ctrl-c, then shuts
/// down gracefully.
///
/// # Errors
///
/// As [`new_with_config`] and [`Server::run`]: a missing or malformed
/// certificate or key, a bind error.
pub async fn start(address: &str, config: TlsConfig<'_>) -> Result<()> {
    start_until(address, config, ctrl_c()).await
}

/// Like [`start`], but runs until `signal` completes.
///
/// # Errors
///
/// As [`start`].
pub async fn start_until(
    address: &str,
    config: TlsConfig<'_>,
    signal: impl Future<Output = ()>,
) -> Result<()> {
    let server = new_with_config(address, config, echo_dispatcher())?;
    server.bind().await?;
    server.run_until(signal).await
}

/// Completes on ctrl-c; never, if the signal handler cannot be installed.
async fn ctrl_c() {
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::warn!(%error, "cannot listen for ctrl-c; the server runs until killed");
        std::future::pending::<()>().await;
    }
}
