//! The `dispatch` span each message is handled in, and its place in the
//! caller's trace (PROTOCOL.md Part III §2, `traceparent`).

use netproto_wire::{Headers, MessageType, Traceparent};
use tracing::Span;
use tracing::field::Empty;

/// The span request `request_id` of type `msg_type` is handled in.
///
/// With a `traceparent` in `headers`, its `trace_id` (32 hex digits) and
/// `parent_span_id` (16) fields say which trace and which span of the caller
/// the request belongs to, so that logs correlate; with the `otel` feature
/// the span's OpenTelemetry parent is that span too.
pub(crate) fn dispatch_span(
    request_id: u64,
    msg_type: &MessageType,
    headers: Option<&Headers>,
) -> Span {
    let span = tracing::debug_span!(
        "dispatch",
        request_id,
        msg_type = %msg_type,
        trace_id = Empty,
        parent_span_id = Empty,
    );
    if let Some(traceparent) = headers.and_then(|headers| headers.traceparent) {
        if !span.is_disabled() {
            span.record("trace_id", format_args!("{:032x}", traceparent.trace_id()));
            span.record(
                "parent_span_id",
                format_args!("{:016x}", traceparent.parent_id()),
            );
        }
        set_parent(&span, &traceparent);
    }
    span
}

/// Makes the caller's span `traceparent` names the OpenTelemetry parent of
/// `span`, with the W3C propagator. Without the `otel` feature, nothing.
#[cfg(feature = "otel")]
fn set_parent(span: &Span, traceparent: &Traceparent) {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    if span.is_disabled() {
        return;
    }
    let carrier = std::collections::HashMap::from([(
        "traceparent".to_owned(),
        traceparent.as_str().to_owned(),
    )]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if let Err(error) = span.set_parent(parent) {
        tracing::debug!(%error, "the caller's trace context cannot be the span's parent");
    }
}

#[cfg(not(feature = "otel"))]
fn set_parent(_span: &Span, _traceparent: &Traceparent) {}
