//! The original README's "TLS Client": mutual TLS to the `tls_server`
//! example on 127.0.0.1:9443, one echo.
//!
//! It reads `client_cert.pem`, `client_key.pem` and `ca_cert.pem` from the
//! same directory as the server (the first argument, else
//! `NETPROTO_EXAMPLE_CERT_DIR`, else `netproto-example-certs` in the
//! temporary directory), generating them if they are missing. The server's
//! certificate is valid for `example.com`, the name the README checks.

// Example: short error handling keeps the point visible; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Changed: a helper shared with the TLS server.
#[path = "support/cert_dir.rs"]
mod cert_dir;

use network_protocol::error::Result;
use network_protocol::protocol::message::Message;
use network_protocol::service::client::{self, TlsClientConfig};
use tracing::info;

#[tokio::main]
async fn main() -> Result<()> {
    // Changed: the README logs with `info!` but installs no subscriber.
    network_protocol::utils::logging::init_logging(Some("info"), None)?;
    // Changed: find (or generate) the certificates, and work from their
    // directory so that the README's relative file names work.
    cert_dir::enter_cert_dir()?;

    // Configure TLS client
    let tls_config = TlsClientConfig {
        cert_path: Some("client_cert.pem"), // For mTLS
        key_path: Some("client_key.pem"),   // For mTLS
        ca_path: Some("ca_cert.pem"),       // Server verification
        server_name: "example.com",         // SNI
    };

    // Connect with TLS
    let mut conn = client::connect_tls("127.0.0.1:9443", tls_config).await?;

    info!("Connected securely to TLS server");

    // Communicate securely
    conn.send(Message::Echo("secure message".into())).await?;
    let reply = conn.receive().await?;

    info!(response = ?reply, "Received secure response");

    // Close connection properly
    // Changed: the README ends with `conn.close().await?`, whose `()` is not
    // the `Result<()>` that main returns.
    conn.close().await?;
    Ok(())
}
