//! The server and the client.

pub mod client;
pub mod daemon;
pub mod tls_daemon;
