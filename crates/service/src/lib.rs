//! Typed methods for netproto: a versioned name with serde request and
//! response types, encoded with postcard, served by typed handlers or any
//! [`tower::Service`], and called through a typed client that is a
//! [`tower::Service`] too.
//!
//! - [`Method`] names a method (`kv.get.v1`) and its types;
//!   [`service!`] defines a whole service's methods at once.
//! - [`register`] and [`register_service`] put a typed handler on a
//!   [`Dispatcher`](netproto_dispatch::Dispatcher): the request is decoded
//!   (a payload that does not decode is answered `BAD_MESSAGE`, naming the
//!   method), the handler gets it with its [`Context`], and its answer is
//!   encoded.
//! - [`TypedClient`] makes typed calls over a
//!   [`Correlator`](netproto_dispatch::Correlator);
//!   [`TypedClient::method`] gives a [`MethodClient`], a `tower::Service`
//!   whose readiness is the connection's in-flight budget. A failed call is
//!   a [`CallError`] that tells an unknown method, a type mismatch, a
//!   timeout and a lost connection apart.
//! - [`fingerprint`] is the schema fingerprint of a method's types
//!   (PROTOCOL.md Part III §5); [`to_bytes`] and [`from_bytes`] the
//!   encoding.
//!
//! This crate opens no connections and has no wire format of its own: it
//! works on the dispatcher's handlers and correlator, whatever the
//! connection's security.
//!
//! # Deadlines, cancellation and trace context
//!
//! A call made with [`TypedClient::call_with`] and a [`CallOptions`]
//! deadline sends it (PROTOCOL.md Part III §2); the server drops the
//! handler when it passes and answers `DEADLINE_EXCEEDED`
//! ([`CallError::is_deadline_exceeded`]). The handler sees it in its
//! [`Context`] ([`Context::remaining`]), and its own calls inherit what is
//! left with [`CallOptions::within`], trace context included. Dropping a
//! call's future sends a cancel frame, and the server drops the handler.
//!
//! With the `otel` feature (which turns on `netproto-dispatch`'s), a call
//! without a trace context sends the current span's OpenTelemetry context
//! as its `traceparent`, and the server's `dispatch` span, in which the
//! handler runs, is that span's child: one trace across client and server
//! (`examples/otel_stdout.rs`). Without it, the server's span still records
//! the caller's `trace_id` and `parent_span_id`.
//!
//! # Type mismatches
//!
//! Every call carries its method's [`fingerprint`]: a server whose method
//! has other types answers `SCHEMA_MISMATCH` ([`CallError::is_schema_mismatch`])
//! without decoding, even a mismatch whose bytes would decode (postcard
//! sends no field names, so a renamed field or `u32` for `u64` would). A
//! request without a fingerprint (from an untyped requester) is decoded:
//! bytes that are not the request type are answered `BAD_MESSAGE`; a
//! response that does not decode gives [`CallError::Decode`]; both are
//! [`CallError::is_type_mismatch`]. Change a method's types only with a new
//! version.
//!
//! # Examples
//!
//! A typed server and client over an in-memory pipe:
//!
//! ```
//! use std::sync::Arc;
//! use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, HandlerError, ServeConfig};
//! use netproto_service::{Context, TypedClient, register, service};
//! use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
//! use netproto_wire::ErrorCode;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Add {
//!     a: u32,
//!     b: u32,
//! }
//!
//! service! {
//!     /// A calculator.
//!     service Calc {
//!         /// Adds two numbers.
//!         CalcAdd = "calc.add.v1": Add => u64;
//!         /// Divides, failing on zero.
//!         CalcDiv = "calc.div.v1": (u32, u32) => u32;
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dispatcher = Arc::new(Dispatcher::default());
//! register::<CalcAdd, _, _>(&dispatcher, |_context: Context, add: Add| async move {
//!     Ok(u64::from(add.a) + u64::from(add.b))
//! });
//! register::<CalcDiv, _, _>(&dispatcher, |_context: Context, (a, b): (u32, u32)| async move {
//!     a.checked_div(b).ok_or_else(|| HandlerError::failed("division by zero"))
//! });
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
//! let (correlator, _unsolicited) = Correlator::new(conn, &CorrelatorConfig::default())?;
//! let client = TypedClient::new(Arc::new(correlator));
//!
//! assert_eq!(client.call::<CalcAdd>(Add { a: 2, b: 40 }).await?, 42);
//! assert_eq!(client.call::<CalcDiv>((84, 2)).await?, 42);
//! let error = client.call::<CalcDiv>((1, 0)).await.unwrap_err();
//! assert_eq!(error.code(), Some(ErrorCode::HANDLER_FAILED));
//! assert!(error.to_string().contains("division by zero"));
//!
//! stop.send_replace(true);
//! server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod client;
mod codec;
mod context;
mod error;
mod fingerprint;
mod macros;
mod method;
mod server;
mod stream;
mod trace;

pub use client::{CallOptions, MethodClient, TypedClient};
pub use codec::{from_bytes, to_bytes};
pub use context::{Context, Request};
pub use error::{CallError, Error};
pub use fingerprint::fingerprint;
pub use method::Method;
pub use netproto_dispatch::HandlerError;
/// The crate the [`fingerprint`] is computed with, for
/// [`Method::trace_nested`].
pub use serde_reflection;
pub use server::{register, register_service};
pub use stream::{DEFAULT_STREAM_CREDIT, register_stream};
