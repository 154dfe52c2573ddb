//! What the serve loop records through the `metrics` facade.

use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder, Unit};

/// Name of the histogram of handler times, in seconds.
pub const REQUEST_DURATION: &str = "netproto_request_duration_seconds";

/// Name of the counter of requests answered, labelled by `outcome`.
pub const REQUESTS: &str = "netproto_requests_total";

/// Name of the counter of requests whose deadline passed before their
/// answer (answered `DEADLINE_EXCEEDED`; also counted in [`REQUESTS`] as
/// `outcome="error"`).
pub const DEADLINES_EXCEEDED: &str = "netproto_requests_deadline_exceeded_total";

/// Handles the serve loop records into: obtained once (per server, say), so
/// that recording a request never looks a metric up by name (what it costs
/// beyond that is the recorder's: with the daemon's Prometheus recorder, a
/// counter add and a histogram sample, about 0.2 us).
///
/// | Name | Type | Labels | Meaning |
/// |------|------|--------|---------|
/// | `netproto_request_duration_seconds` | histogram | none | Server-side time of each request (id ≠ 0): from taking it off the connection until its handler's answer is ready (a timed-out handler counts its timeout); excludes sending. |
/// | `netproto_requests_total` | counter | `outcome`: `reply`, `error`, `refused`, `cancelled` | Requests answered with a reply, answered with an error frame (no handler, bad message, handler error or panic, timeout, deadline exceeded, reply too large), refused during a graceful shutdown, or cancelled by the requester (a cancel frame; their handler is dropped and nothing is answered). Requests whose answer could not be sent are not counted. |
/// | `netproto_requests_deadline_exceeded_total` | counter | none | Requests whose deadline (their `deadline` header) passed before their answer: the handler was dropped and `DEADLINE_EXCEEDED` answered (also counted as `outcome="error"`). |
///
/// The default handles record nothing.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ServeMetrics {
    /// [`REQUEST_DURATION`].
    pub request_duration: Histogram,
    /// [`REQUESTS`] with `outcome="reply"`.
    pub replies: Counter,
    /// [`REQUESTS`] with `outcome="error"`.
    pub errors: Counter,
    /// [`REQUESTS`] with `outcome="refused"`.
    pub refused: Counter,
    /// [`REQUESTS`] with `outcome="cancelled"`.
    pub cancelled: Counter,
    /// [`DEADLINES_EXCEEDED`].
    pub deadlines_exceeded: Counter,
}

impl Default for ServeMetrics {
    fn default() -> Self {
        Self {
            request_duration: Histogram::noop(),
            replies: Counter::noop(),
            errors: Counter::noop(),
            refused: Counter::noop(),
            cancelled: Counter::noop(),
            deadlines_exceeded: Counter::noop(),
        }
    }
}

impl ServeMetrics {
    /// Describes and registers the metrics in `recorder`.
    pub fn register(recorder: &dyn Recorder) -> Self {
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, None);
        recorder.describe_histogram(
            REQUEST_DURATION.into(),
            Some(Unit::Seconds),
            "Server-side time of each request until its answer is ready".into(),
        );
        recorder.describe_counter(
            REQUESTS.into(),
            Some(Unit::Count),
            "Requests answered, by outcome: reply, error (error frame), refused (shutting down) or cancelled (by the requester)"
                .into(),
        );
        recorder.describe_counter(
            DEADLINES_EXCEEDED.into(),
            Some(Unit::Count),
            "Requests whose deadline passed before their answer (answered DEADLINE_EXCEEDED)"
                .into(),
        );
        let requests = |outcome: &'static str| {
            let key = Key::from_parts(REQUESTS, vec![Label::from_static_parts("outcome", outcome)]);
            recorder.register_counter(&key, &metadata)
        };
        Self {
            request_duration: recorder
                .register_histogram(&Key::from_static_name(REQUEST_DURATION), &metadata),
            replies: requests("reply"),
            errors: requests("error"),
            refused: requests("refused"),
            cancelled: requests("cancelled"),
            deadlines_exceeded: recorder
                .register_counter(&Key::from_static_name(DEADLINES_EXCEEDED), &metadata),
        }
    }

    /// Registers the metrics in the global recorder (which records nothing
    /// unless the application installed one).
    pub fn global() -> Self {
        metrics::with_recorder(Self::register)
    }
}
