//! With the `otel` feature, the server's span of a typed call is the
//! OpenTelemetry child of the client's span.

// Integration test: a failed unwrap, expect, panic or index is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use netproto_dispatch::{Correlator, CorrelatorConfig, Dispatcher, ServeConfig};
use netproto_service::{CallOptions, Context, TypedClient, register, service};
use netproto_transport::{Acceptor, ClientSecurity, ConnectionConfig, Connector, ServerSecurity};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

service! {
    service Echo {
        EchoText = "test.echo.v1": String => String;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_server_span_is_a_child_of_the_client_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    // Thread-local: the current-thread runtime runs client and server here.
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let dispatcher = Arc::new(Dispatcher::default());
    register::<EchoText, _, _>(&dispatcher, |context: Context, text: String| async move {
        // Whether a trace context came with the request.
        Ok(format!("{text} {}", context.traceparent().is_some()))
    });
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = Acceptor::new(ServerSecurity::Plain, ConnectionConfig::default()).unwrap();
    let connector = Connector::new(ClientSecurity::Plain, ConnectionConfig::default()).unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(async move {
        let conn = acceptor.accept(server_io).await.unwrap();
        dispatcher
            .serve(conn, &ServeConfig::default(), shutdown)
            .await
    });
    let conn = connector.connect(client_io).await.unwrap();
    let (correlator, _unsolicited) = Correlator::new(conn, &CorrelatorConfig::default()).unwrap();
    let client = TypedClient::new(Arc::new(correlator));

    let call = async {
        // The default options: the trace context is the current span's.
        let options = CallOptions::default().deadline(Duration::from_secs(10));
        client.call_with::<EchoText>("hi".into(), &options).await
    };
    let answer = call.instrument(tracing::info_span!("client_call")).await;
    assert_eq!(answer.unwrap(), "hi true");
    // Outside any span, no trace context is sent, and none is made up.
    let untraced = client.call::<EchoText>("plain".into()).await.unwrap();
    assert_eq!(untraced, "plain false");

    stop.send_replace(true);
    server.await.unwrap().unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let client_span = spans
        .iter()
        .find(|span| span.name == "client_call")
        .unwrap();
    let dispatched: Vec<_> = spans
        .iter()
        .filter(|span| span.name == "dispatch")
        .collect();
    assert!(dispatched.len() >= 2, "{spans:#?}");
    let children: Vec<_> = dispatched
        .iter()
        .filter(|span| span.parent_span_id == client_span.span_context.span_id())
        .collect();
    assert_eq!(
        children.len(),
        1,
        "one dispatch span is the client's child: {spans:#?}"
    );
    assert_eq!(
        children[0].span_context.trace_id(),
        client_span.span_context.trace_id()
    );
    // The untraced call's span is in a trace of its own.
    assert!(
        dispatched
            .iter()
            .any(|span| span.span_context.trace_id() != client_span.span_context.trace_id())
    );
}
