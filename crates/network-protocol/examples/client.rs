//! The original README's "Client with Timeout Handling": sends one echo to
//! the `tcp_server` example on 127.0.0.1:9000 and prints the reply in the
//! log.
//!
//! The README's `ClientConfig` has no field for the server's key, so this
//! client does not authenticate the server and logs a warning saying so;
//! `client::connect_pinned` is the authenticated variant.

// Example: short error handling keeps the point visible; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use network_protocol::service::client::{self, ClientConfig};
use network_protocol::utils::logging;
// Changed: only the commented-out options below use NetworkConfig.
#[allow(unused_imports)]
use network_protocol::config::NetworkConfig;
use network_protocol::error::ProtocolError;
use network_protocol::protocol::message::Message;
use std::time::Duration;
use tokio::time::timeout;
use tracing::{error, info};

#[tokio::main]
async fn main() -> Result<(), ProtocolError> {
    // Initialize structured logging
    logging::init_logging(Some("info"), None)?;

    // Option 1: Load configuration from file
    // let config = NetworkConfig::from_file("config.toml")?.client;

    // Option 2: Load from environment variables
    // let config = NetworkConfig::from_env()?.client;

    // Option 3: Configure client with custom settings
    let config = ClientConfig {
        address: "127.0.0.1:9000".to_string(),
        connection_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(3),
        response_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(15),
        auto_reconnect: true,
        max_reconnect_attempts: 3,
        reconnect_delay: Duration::from_secs(1),
    };

    // Connect with timeout handling
    info!("Connecting to server...");
    let mut conn = match timeout(Duration::from_secs(5), client::connect_with_config(config)).await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            error!(error = ?e, "Failed to connect to server");
            return Err(e);
        }
        Err(_) => {
            error!("Connection timeout");
            return Err(ProtocolError::Timeout);
        }
    };

    info!("Connected successfully");

    // Send message with timeout
    match timeout(
        Duration::from_secs(3),
        conn.secure_send(Message::Echo("hello".into())),
    )
    .await
    {
        Ok(Ok(_)) => info!("Message sent successfully"),
        Ok(Err(e)) => {
            error!(error = ?e, "Failed to send message");
            return Err(e);
        }
        Err(_) => {
            error!("Send timeout");
            return Err(ProtocolError::Timeout);
        }
    }

    // Receive reply with timeout
    let reply = match timeout(Duration::from_secs(3), conn.secure_recv()).await {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => {
            error!(error = ?e, "Failed to receive reply");
            return Err(e);
        }
        Err(_) => {
            error!("Receive timeout");
            return Err(ProtocolError::Timeout);
        }
    };

    info!(reply = ?reply, "Received reply");

    // Close connection gracefully
    // Changed: the README's `conn.close().await?` lacks its semicolon before
    // `Ok(())`, which does not parse.
    conn.close().await?;

    Ok(())
}
