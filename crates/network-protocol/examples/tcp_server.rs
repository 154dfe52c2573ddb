//! The original README's "TCP Server with Backpressure and Structured
//! Logging": an echo server on 127.0.0.1:9000, Noise-secured.
//!
//! Stops on ctrl-c, or after `NETPROTO_EXAMPLE_RUN_FOR` (such as `5s`).
//! Run the `client` example against it.

// Example: short error handling keeps the point visible; no library code here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Changed: a helper shared with the TLS server, for stopping unattended.
#[path = "support/run_for.rs"]
mod run_for;

use network_protocol::service::daemon::{self, ServerConfig};
use network_protocol::utils::logging;
// Changed: only the commented-out options below use NetworkConfig.
#[allow(unused_imports)]
use network_protocol::config::NetworkConfig;
use network_protocol::error::Result;
use network_protocol::protocol::dispatcher::Dispatcher;
use std::sync::Arc;
use std::time::Duration;
// Changed: `warn` dropped from this import, the program never uses it.
use tracing::info;

#[tokio::main]
async fn main() -> Result<()> {
    // Initialize structured logging
    logging::init_logging(Some("info"), None).expect("Failed to initialize logging");

    // Create a dispatcher
    let dispatcher = Arc::new(Dispatcher::default());

    // Register message handlers
    dispatcher.register("ECHO", |msg| {
        info!(message_type = "ECHO", "Processing echo request");
        Ok(msg.clone())
    });

    // Option 1: Load configuration from file
    // let config = NetworkConfig::from_file("config.toml")?.server;

    // Option 2: Load configuration from environment variables
    // let config = NetworkConfig::from_env()?.server;

    // Option 3: Configure server with custom settings
    let config = ServerConfig {
        address: "127.0.0.1:9000".to_string(),
        backpressure_limit: 100, // Limit pending messages
        connection_timeout: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(15),
        shutdown_timeout: Duration::from_secs(10),
        max_connections: 1000,
    };

    // Start server with configuration
    let server = daemon::new_with_config(config, dispatcher);

    // Changed: the README moves `server` into the task and then runs it
    // below; the task gets a clone (servers are cheap handles).
    let handle = server.clone();
    // Changed: ctrl-c, or NETPROTO_EXAMPLE_RUN_FOR elapsed (for CI).
    let stop = run_for::stop_signal().expect("NETPROTO_EXAMPLE_RUN_FOR must be like 5s");

    // Handle Ctrl+C for graceful shutdown
    tokio::spawn(async move {
        stop.await;
        info!("Initiating graceful shutdown...");
        handle.shutdown(Some(Duration::from_secs(10))).await;
    });

    // Run server until stopped
    info!("Server starting on 127.0.0.1:9000");
    server.run().await
}
