//! The original README's "TLS Server": mutual TLS on 127.0.0.1:9443,
//! answering `ECHO` and `PING`.
//!
//! It reads `server_cert.pem`, `server_key.pem` and `ca_cert.pem`. So that
//! it runs on a fresh clone, it first generates development certificates
//! (a CA, a server and a client certificate) into a directory, unless they
//! are there already, and works from that directory: the first argument,
//! else `NETPROTO_EXAMPLE_CERT_DIR`, else `netproto-example-certs` in the
//! temporary directory. Give the `tls_client` example the same directory.
//! (`netproto certgen` makes a self-signed server certificate, enough for
//! TLS without client certificates.)
//!
//! Stops on ctrl-c, or after `NETPROTO_EXAMPLE_RUN_FOR` (such as `5s`).

// Example: short error handling keeps the point visible; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Changed: helpers shared with the other examples.
#[path = "support/cert_dir.rs"]
mod cert_dir;
#[path = "support/run_for.rs"]
mod run_for;

// Changed: the README's snippet has no imports.
use network_protocol::error::Result;
use network_protocol::service::tls_daemon::TlsConfig;
use network_protocol::utils::logging;

#[tokio::main]
async fn main() -> Result<()> {
    // Changed: log, so that the server says where it listens.
    logging::init_logging(Some("info"), None)?;
    // Changed: generate development certificates if needed, and work from
    // their directory (see the top of this file).
    let dir = cert_dir::enter_cert_dir()?;
    tracing::info!(dir = %dir.display(), "certificates");
    // Changed: ctrl-c, or NETPROTO_EXAMPLE_RUN_FOR elapsed (for CI).
    let stop = run_for::stop_signal().expect("NETPROTO_EXAMPLE_RUN_FOR must be like 5s");

    // Generate or load certificates
    let cert_config = TlsConfig {
        cert_path: "server_cert.pem",
        key_path: "server_key.pem",
        ca_path: Some("ca_cert.pem"), // For mTLS
        verify_client: true,          // Enable mTLS
    };

    // Start TLS server
    // Changed: `start_until` instead of `start` (which runs until ctrl-c),
    // to stop after NETPROTO_EXAMPLE_RUN_FOR as well.
    network_protocol::service::tls_daemon::start_until("127.0.0.1:9443", cert_config, stop).await?;
    Ok(())
}
