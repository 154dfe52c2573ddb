//! Connections: the `netproto-transport` crate.
//!
//! TCP, Unix domain sockets (named pipes on Windows), TLS and Noise over
//! either; bounded queues with backpressure, connect, handshake, idle and
//! write timeouts, heartbeats. TLS pins are SHA-256 hashes of the server's
//! SubjectPublicKeyInfo, checked after full certificate verification.

pub use netproto_transport::*;
