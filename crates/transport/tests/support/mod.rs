//! What the transport's integration tests share.
#![allow(dead_code)] // each test binary uses a different part

use std::time::Duration;

use netproto_transport::{
    AcceptLimits, Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity,
};

/// A connector with these settings, as the tests use them.
pub(crate) fn new_connector(
    security: ClientSecurity,
    config: &ConnectionConfig,
    handshake: Duration,
) -> Connector {
    Connector::builder(security, config.clone())
        .handshake_timeout(handshake)
        .build()
        .unwrap()
}

/// An acceptor with these settings, one limit for the preface and the handshake.
pub(crate) fn new_acceptor(
    security: ServerSecurity,
    config: &ConnectionConfig,
    handshake: Duration,
) -> Acceptor {
    Acceptor::builder(security, config.clone())
        .limits(AcceptLimits::new(handshake, handshake))
        .build()
        .unwrap()
}
