//! The trace context a call is sent with when its options name none.

use netproto_wire::Traceparent;

/// The current span's W3C trace context, when it is part of an
/// OpenTelemetry trace (the `otel` feature and a `tracing_opentelemetry`
/// layer); `None` otherwise.
#[cfg(feature = "otel")]
pub(crate) fn current() -> Option<Traceparent> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier
        .get("traceparent")
        .and_then(|text| Traceparent::parse(text.as_bytes()))
}

/// Without the `otel` feature there is no span context to send.
#[cfg(not(feature = "otel"))]
pub(crate) fn current() -> Option<Traceparent> {
    None
}
