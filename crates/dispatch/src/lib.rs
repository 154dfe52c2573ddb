//! Message routing for netproto: handlers registered by message type name,
//! a per-connection server loop, and client-side request/response
//! correlation.
//!
//! - [`Dispatcher`] holds the handlers (sync, async, or on the raw
//!   envelope) and routes each message to one. [`Dispatcher::serve`] runs a
//!   connection: concurrent handlers up to a limit, per-request timeouts,
//!   an error frame for every request that cannot be answered, panics
//!   contained, and graceful shutdown with a goaway.
//! - [`Correlator`] is the client side: many requests in flight on one
//!   connection, matched to their responses by id, every one of them
//!   completed or failed with a clear [`Error`], none silently dropped.
//!
//! Requests may carry a header block (PROTOCOL.md Part III §2): the
//! correlator sends one with [`RequestOptions`] (deadline, trace context,
//! schema fingerprint) and only then; `serve` takes it off before any
//! handler sees the payload, drops a handler whose deadline passes
//! (answering [`ErrorCode::DEADLINE_EXCEEDED`](netproto_wire::ErrorCode::DEADLINE_EXCEEDED)),
//! and hands the rest to handlers registered with
//! [`Dispatcher::register_with_context`] as a [`RequestContext`]. A request
//! whose caller drops its future is cancelled with a cancel frame, and
//! `serve` drops its handler. Requests without a header block take the
//! same path as before: one flag test more.
//!
//! This crate opens no sockets and does no security handshake: it works on
//! a [`netproto_transport::Connection`] however it was established, and
//! never depends on the daemon above it. Nothing is registered by default.
//!
//! # Examples
//!
//! A server and a client over an in-memory pipe:
//!
//! ```
//! use std::sync::Arc;
//! use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, Error, ServeConfig};
//! use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
//! use netproto_wire::{ErrorCode, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dispatcher = Arc::new(Dispatcher::default());
//! dispatcher.register("ECHO", |msg| Ok(msg.clone()));
//! dispatcher.register_async("PING", |_msg: Message| async { Ok(Message::Pong) });
//!
//! let (client_io, server_io) = tokio::io::duplex(64 * 1024);
//! let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default())?;
//! let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default())?;
//! let (stop, shutdown) = tokio::sync::watch::channel(false);
//! let server = tokio::spawn({
//!     let dispatcher = dispatcher.clone();
//!     async move {
//!         let conn = acceptor.accept(server_io).await?;
//!         dispatcher.serve(conn, &ServeConfig::default(), shutdown).await
//!     }
//! });
//!
//! let conn = connector.connect(client_io).await?;
//! let (client, _unsolicited) = Correlator::new(conn, &CorrelatorConfig::default())?;
//!
//! let reply = client.request(&Message::Echo("hello".into())).await?;
//! assert_eq!(reply, Message::Echo("hello".into()));
//! assert_eq!(client.request(&Message::Ping).await?, Message::Pong);
//!
//! // No handler for this type: the server answers with an error frame.
//! let unknown = Message::custom("NOPE", &b"?"[..])?;
//! let error = client.request(&unknown).await.unwrap_err();
//! assert!(matches!(error, Error::Remote { code: ErrorCode::NO_HANDLER, .. }));
//!
//! // Graceful shutdown: the server sends a goaway, then closes.
//! stop.send_replace(true);
//! let report = server.await??;
//! assert_eq!((report.replies, report.errors), (2, 1));
//! # Ok(())
//! # }
//! ```
//!
//! # Tracing
//!
//! Each message is handled inside a `dispatch` span (level `debug`) with
//! `request_id` and `msg_type` fields, and, for a request with a
//! `traceparent` header, `trace_id` and `parent_span_id` (hex) naming the
//! caller's trace and span; run [`Dispatcher::serve`] inside your
//! connection's span (with its `conn_id`) to tie them together.
//!
//! With the `otel` feature, the `dispatch` span of a request with a
//! `traceparent` is the OpenTelemetry child of the caller's span (through
//! `tracing-opentelemetry` and the W3C propagator), so a
//! `tracing_opentelemetry` layer exports it in the caller's trace. The
//! feature lives here because this crate makes the span, before any
//! handler runs: typed and untyped handlers alike are parented. Peer misbehaviour and failed
//! requests are logged at `debug` level only, so a hostile peer cannot flood
//! the logs.
#![forbid(unsafe_code)]

mod answer;
mod context;
mod correlator;
mod dispatcher;
mod error;
mod handler;
mod metrics;
mod serve;
mod stream;
mod trace;

pub use context::RequestContext;
pub use correlator::{
    Correlator, CorrelatorConfig, MAX_STREAM_CREDIT, MAX_UNSOLICITED, RequestOptions, ServerStream,
    Unsolicited,
};
pub use dispatcher::{Dispatcher, Outcome};
pub use error::Error;
pub use handler::HandlerError;
pub use metrics::{DEADLINES_EXCEEDED, REQUEST_DURATION, REQUESTS, ServeMetrics};
pub use serve::{MAX_IN_FLIGHT, ServeConfig, ServeReport};
