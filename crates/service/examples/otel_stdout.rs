//! One trace across a typed client and server, exported to stdout.
//!
//! ```text
//! cargo run -p netproto-service --example otel_stdout --features otel
//! ```
//!
//! Client and server run in one process over an in-memory pipe, with a
//! `tracing_opentelemetry` layer exporting every span to stdout
//! (`opentelemetry-stdout`). The client calls `trace.whoami.v1` inside a
//! span; the call carries that span's context as its `traceparent`, the
//! server's `dispatch` span is its child, and the handler answers the trace
//! id it runs in. The example checks that it is the client's and exits 0.
#![allow(clippy::print_stdout, clippy::expect_used)] // an example prints, and fails loudly

use std::sync::Arc;

use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, ServeConfig};
use netproto_service::{Context, TypedClient, register, service};
use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

service! {
    /// Tells the caller which trace its handler ran in.
    service Trace {
        /// Answers the handler span's trace id (32 hex digits).
        WhoAmI = "trace.whoami.v1": () => String;
    }
}

/// The trace id of the current span, as 32 hex digits.
fn current_trace_id() -> String {
    let context = tracing::Span::current().context();
    context.span().span_context().trace_id().to_string()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("otel_stdout"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))?;

    let dispatcher = Arc::new(Dispatcher::default());
    register::<WhoAmI, _, _>(&dispatcher, |_context: Context, ()| async move {
        Ok(current_trace_id())
    });
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default())?;
    let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default())?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let conn = acceptor.accept(server_io).await?;
        dispatcher
            .serve(conn, &ServeConfig::default(), shutdown)
            .await
    });
    let conn = connector.connect(client_io).await?;
    let (correlator, _unsolicited) = Correlator::new(conn, &CorrelatorConfig::default())?;
    let client = TypedClient::new(Arc::new(correlator));

    let span = tracing::info_span!("client_call");
    let (client_trace, server_trace) = async {
        let server_trace = client.call::<WhoAmI>(()).await;
        (current_trace_id(), server_trace)
    }
    .instrument(span)
    .await;
    let server_trace = server_trace?;
    println!("client trace id {client_trace}, server handler trace id {server_trace}");
    assert_eq!(
        server_trace, client_trace,
        "the server span is not in the client's trace"
    );

    stop.send_replace(true);
    server.await??;
    provider.shutdown()?;
    println!("otel_stdout: the server span is in the client's trace");
    Ok(())
}
