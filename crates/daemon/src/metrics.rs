//! Server metrics through the `metrics` facade, and a Prometheus exporter.
//!
//! A [`Server`](crate::Server) records into the global `metrics` recorder
//! (which records nothing unless the application installed one), or, when
//! `server.metrics_address` is set (`netproto serve --metrics
//! 127.0.0.1:9100`), into its own [`Registry`] served as Prometheus text
//! at `GET /metrics` on that address. The registry is the recorder of
//! `metrics-exporter-prometheus`; the HTTP responder is ours, because the
//! crate's listener answers every path and method and has no limits.
//!
//! The same address answers health checks: `GET /healthz` is 200 while
//! the process serves HTTP at all, `GET /readyz` is 200 until a shutdown
//! begins, then 503 (`draining` during `server.drain_delay`, `shutting
//! down` after the goaway), so that load balancers stop sending new
//! connections before the goaway (see
//! [`ServerHandle::shutdown`](crate::ServerHandle::shutdown)).
//!
//! Nothing is recorded per frame: each connection's transport counters
//! ([`netproto_transport::ConnectionStats`]) are folded into the counters
//! below once per [`FOLD_INTERVAL`] and when the connection ends. Requests
//! cost one histogram record and one counter add, through handles obtained
//! once per server.
//!
//! | Name | Type | Labels | Meaning |
//! |------|------|--------|---------|
//! | `netproto_connections_open` | gauge | | Connections open now, those still in their handshake included. |
//! | `netproto_connections_refused_total` | counter | `reason`: `max_connections`, `max_connections_per_ip`, `max_pending`, `max_pending_per_ip`, `max_pending_per_prefix`, `handshake_rate_per_ip`, `handshake_rate_per_prefix` | Connections refused at a limit (answered "busy" once their preface arrives, and closed). |
//! | `netproto_connections_evicted_total` | counter | `reason`: `max_pending`, `max_connections` | Connections not established yet that a newcomer evicted when that bound was full (closed at once, unanswered). |
//! | `netproto_handshakes_completed_total` | counter | | Connections whose preface and security handshake succeeded. |
//! | `netproto_handshakes_failed_total` | counter | `reason`: `preface_timeout`, `timeout`, `preface`, `noise`, `tls`, `first_header`, `closed`, `io`, `other` | Connections whose preface or handshake failed: no preface within `server.preface_timeout`, timed out, a bad or mismatched preface, a failed Noise handshake (or a client key not allowed), a failed TLS handshake or pin, the peer closing, a socket error. |
//! | `netproto_proxy_header_errors_total` | counter | `reason`: `missing`, `malformed`, `too_large`, `timeout`, `closed`, `io` | Connections from a trusted proxy (`server.trusted_proxies`) closed at their PROXY header: none, a malformed one, one past `server.proxy_header_max`, not all there within `server.proxy_timeout`, the peer closing within it, a socket error. |
//! | `netproto_connection_errors_total` | counter | `kind`: `timeout_idle`, `timeout_write`, `timeout_heartbeat`, `protocol`, `compression`, `crypto`, `tls`, `closed`, `io`, `other` | Established connections that ended with an error instead of a clean close: which timeout expired, a protocol violation, a corrupt compressed body, a record that failed to open, the peer vanishing mid-stream, a socket error. |
//! | `netproto_frames_received_total` | counter | | Frames received and decoded (data and control). |
//! | `netproto_frames_sent_total` | counter | | Frames written (data and control). |
//! | `netproto_bytes_received_total` | counter | | Bytes read from sockets, framing and encryption included. |
//! | `netproto_bytes_sent_total` | counter | | Bytes written to sockets, framing and encryption included. |
//! | `netproto_compression_input_bytes_total` | counter | | Bytes of message bodies compressed before sending. |
//! | `netproto_compression_output_bytes_total` | counter | | What those bodies took compressed; the ratio is output over input. |
//! | `netproto_backpressure_waits_total` | counter | | Sends that waited for room in a connection's send queue. |
//! | `netproto_backpressure_refusals_total` | counter | | Non-waiting sends refused because a send queue was full. |
//! | `netproto_requests_total` | counter | `outcome`: `reply`, `error`, `refused`, `cancelled` | Requests answered with a reply, with an error frame, refused while shutting down, or cancelled by the requester (see [`ServeMetrics`]). |
//! | `netproto_requests_deadline_exceeded_total` | counter | | Requests whose deadline passed before their answer (answered `DEADLINE_EXCEEDED`, also `outcome="error"`). |
//! | `netproto_request_duration_seconds` | histogram | | Server-side handler time of each request, in seconds, buckets [`BUCKETS`]. |
//!
//! Every series with a fixed label set is registered at start, so it reads
//! 0 until something happens (alerts on rates need no absent-series case).
//! docs/OPERATIONS.md says which alerts to set on them.

use std::pin::Pin;
use std::time::Duration;

use metrics::{Counter, Gauge, Key, Label, Metadata, Recorder, Unit};
use netproto_dispatch::ServeMetrics;
use netproto_transport::{ConnectionStats, StatsSnapshot, TimeoutKind};

mod http;
mod registry;

pub use http::{HTTP_TIMEOUT, MAX_REQUEST, http_get, scrape};
pub(crate) use http::{Health, serve as serve_http};
pub use netproto_dispatch::{REQUEST_DURATION, REQUESTS};
pub use registry::{BUCKETS, Registry, UPKEEP_INTERVAL};

/// Connections open now (gauge).
pub const CONNECTIONS_OPEN: &str = "netproto_connections_open";
/// Connections refused at a limit, by `reason` (counter).
pub const CONNECTIONS_REFUSED: &str = "netproto_connections_refused_total";

/// Connections not established yet that a newcomer evicted, by `reason`
/// (counter).
pub const CONNECTIONS_EVICTED: &str = "netproto_connections_evicted_total";
/// Handshakes that succeeded (counter).
pub const HANDSHAKES_COMPLETED: &str = "netproto_handshakes_completed_total";
/// Handshakes that failed, by `reason` (counter).
pub const HANDSHAKES_FAILED: &str = "netproto_handshakes_failed_total";
/// Connections from a trusted proxy closed at their PROXY header, by
/// `reason` (counter).
pub const PROXY_HEADER_ERRORS: &str = "netproto_proxy_header_errors_total";
/// Connections that ended with an error, by `kind` (counter).
pub const CONNECTION_ERRORS: &str = "netproto_connection_errors_total";
/// Frames received (counter).
pub const FRAMES_RECEIVED: &str = "netproto_frames_received_total";
/// Frames sent (counter).
pub const FRAMES_SENT: &str = "netproto_frames_sent_total";
/// Bytes received (counter).
pub const BYTES_RECEIVED: &str = "netproto_bytes_received_total";
/// Bytes sent (counter).
pub const BYTES_SENT: &str = "netproto_bytes_sent_total";
/// Bytes given to the compressor (counter).
pub const COMPRESSION_INPUT: &str = "netproto_compression_input_bytes_total";
/// Bytes the compressor produced (counter).
pub const COMPRESSION_OUTPUT: &str = "netproto_compression_output_bytes_total";
/// Sends that waited for room in a send queue (counter).
pub const BACKPRESSURE_WAITS: &str = "netproto_backpressure_waits_total";
/// Sends refused because a send queue was full (counter).
pub const BACKPRESSURE_REFUSALS: &str = "netproto_backpressure_refusals_total";

/// How often a live connection's transport counters are folded in.
pub const FOLD_INTERVAL: Duration = Duration::from_secs(1);

const REFUSAL_REASONS: [&str; 7] = [
    "max_connections",
    "max_connections_per_ip",
    "max_pending",
    "max_pending_per_ip",
    "max_pending_per_prefix",
    "handshake_rate_per_ip",
    "handshake_rate_per_prefix",
];
const EVICTION_REASONS: [&str; 2] = ["max_pending", "max_connections"];
const HANDSHAKE_REASONS: [&str; 9] = [
    "preface_timeout",
    "timeout",
    "preface",
    "noise",
    "tls",
    "first_header",
    "closed",
    "io",
    "other",
];
/// The reasons of [`PROXY_HEADER_ERRORS`].
pub(crate) const PROXY_HEADER_REASONS: [&str; 6] = [
    "missing",
    "malformed",
    "too_large",
    "timeout",
    "closed",
    "io",
];
const ERROR_KINDS: [&str; 10] = [
    "timeout_idle",
    "timeout_write",
    "timeout_heartbeat",
    "protocol",
    "compression",
    "crypto",
    "tls",
    "closed",
    "io",
    "other",
];

/// The handles a server records into, registered once.
#[derive(Clone, Debug)]
pub(crate) struct ServerMetrics {
    open: Gauge,
    refused: Vec<(&'static str, Counter)>,
    evicted: Vec<(&'static str, Counter)>,
    handshakes: Counter,
    handshake_failures: Vec<(&'static str, Counter)>,
    proxy_errors: Vec<(&'static str, Counter)>,
    errors: Vec<(&'static str, Counter)>,
    traffic: Traffic,
    /// What the dispatcher records per request.
    pub(crate) serve: ServeMetrics,
}

/// Counters of the transport's per-connection statistics.
#[derive(Clone, Debug)]
struct Traffic {
    frames_in: Counter,
    frames_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    compress_in: Counter,
    compress_out: Counter,
    waits: Counter,
    refusals: Counter,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::register(&metrics::NoopRecorder)
    }
}

impl ServerMetrics {
    /// Describes and registers every metric in `recorder`.
    pub(crate) fn register(recorder: &dyn Recorder) -> Self {
        let metadata = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let counter = |name: &'static str, help: &'static str, unit: Unit| {
            recorder.describe_counter(name.into(), Some(unit), help.into());
            recorder.register_counter(&Key::from_static_name(name), &metadata)
        };
        let labelled = |name: &'static str, label: &'static str, values: &[&'static str]| {
            values
                .iter()
                .map(|value| {
                    let key = Key::from_parts(name, vec![Label::from_static_parts(label, value)]);
                    (*value, recorder.register_counter(&key, &metadata))
                })
                .collect::<Vec<_>>()
        };
        recorder.describe_gauge(
            CONNECTIONS_OPEN.into(),
            Some(Unit::Count),
            "Connections open now, those in their handshake included".into(),
        );
        let open = recorder.register_gauge(&Key::from_static_name(CONNECTIONS_OPEN), &metadata);
        for (name, help) in [
            (
                CONNECTIONS_REFUSED,
                "Connections refused at a limit, by reason",
            ),
            (
                CONNECTIONS_EVICTED,
                "Connections not established yet that a newcomer evicted, by the bound that was full",
            ),
            (
                HANDSHAKES_FAILED,
                "Prefaces or handshakes that failed, by reason",
            ),
            (
                PROXY_HEADER_ERRORS,
                "Connections from a trusted proxy closed at their PROXY header, by reason",
            ),
            (
                CONNECTION_ERRORS,
                "Established connections that ended with an error, by kind",
            ),
        ] {
            recorder.describe_counter(name.into(), Some(Unit::Count), help.into());
        }
        let bytes = Unit::Bytes;
        let count = Unit::Count;
        Self {
            open,
            refused: labelled(CONNECTIONS_REFUSED, "reason", &REFUSAL_REASONS),
            evicted: labelled(CONNECTIONS_EVICTED, "reason", &EVICTION_REASONS),
            handshakes: counter(HANDSHAKES_COMPLETED, "Handshakes that succeeded", count),
            handshake_failures: labelled(HANDSHAKES_FAILED, "reason", &HANDSHAKE_REASONS),
            proxy_errors: labelled(PROXY_HEADER_ERRORS, "reason", &PROXY_HEADER_REASONS),
            errors: labelled(CONNECTION_ERRORS, "kind", &ERROR_KINDS),
            traffic: Traffic {
                frames_in: counter(FRAMES_RECEIVED, "Frames received", count),
                frames_out: counter(FRAMES_SENT, "Frames sent", count),
                bytes_in: counter(BYTES_RECEIVED, "Bytes read from sockets", bytes),
                bytes_out: counter(BYTES_SENT, "Bytes written to sockets", bytes),
                compress_in: counter(COMPRESSION_INPUT, "Bytes of bodies compressed", bytes),
                compress_out: counter(COMPRESSION_OUTPUT, "Those bodies once compressed", bytes),
                waits: counter(
                    BACKPRESSURE_WAITS,
                    "Sends that waited for queue room",
                    count,
                ),
                refusals: counter(BACKPRESSURE_REFUSALS, "Sends refused: queue full", count),
            },
            serve: ServeMetrics::register(recorder),
        }
    }

    /// The metrics of a server and, with an `address`, its own registry and
    /// the bound listener to export it on; without one, the handles of the
    /// global recorder.
    pub(crate) async fn bind(
        address: Option<&str>,
    ) -> std::io::Result<(Self, Option<(tokio::net::TcpListener, Registry)>)> {
        let Some(address) = address else {
            return Ok((metrics::with_recorder(Self::register), None));
        };
        let listener = tokio::net::TcpListener::bind(address).await?;
        let registry = Registry::new();
        Ok((Self::register(&registry), Some((listener, registry))))
    }

    pub(crate) fn connection_opened(&self) {
        self.open.increment(1.0);
    }

    pub(crate) fn connection_closed(&self) {
        self.open.decrement(1.0);
    }

    pub(crate) fn refused(&self, reason: &str) {
        add(&self.refused, reason);
    }

    pub(crate) fn evicted(&self, reason: &str) {
        add(&self.evicted, reason);
    }

    pub(crate) fn handshake_completed(&self) {
        self.handshakes.increment(1);
    }

    pub(crate) fn handshake_failed(
        &self,
        error: &netproto_transport::Error,
        at_first_header: bool,
    ) {
        let reason = match error {
            netproto_transport::Error::Protocol(_) if at_first_header => "first_header",
            _ => handshake_reason(error),
        };
        add(&self.handshake_failures, reason);
    }

    /// Counts a connection closed at its PROXY header, by `reason`.
    pub(crate) fn proxy_header_failed(&self, reason: &str) {
        add(&self.proxy_errors, reason);
    }

    /// Counts how an established connection ended, when it was an error.
    pub(crate) fn connection_ended(&self, error: &netproto_dispatch::Error) {
        add(&self.errors, error_kind(error));
    }

    /// Runs `serving` and folds `stats` into the traffic counters every
    /// [`FOLD_INTERVAL`] meanwhile, and once more at the end.
    ///
    /// `serving` is pinned by the caller: taken by value, it would sit in
    /// this future twice (as the argument and as the pinned local), some
    /// 1.5 KiB more for every connection.
    pub(crate) async fn track<F: Future>(
        &self,
        stats: ConnectionStats,
        mut serving: Pin<&mut F>,
    ) -> F::Output {
        let mut last = StatsSnapshot::default();
        let mut ticks = tokio::time::interval(FOLD_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset();
        let output = loop {
            tokio::select! {
                biased;
                output = serving.as_mut() => break output,
                _ = ticks.tick() => last = self.traffic.fold(&stats, last),
            }
        };
        self.traffic.fold(&stats, last);
        output
    }
}

impl Traffic {
    /// Adds what `stats` counted since `last`; returns the new snapshot.
    fn fold(&self, stats: &ConnectionStats, last: StatsSnapshot) -> StatsSnapshot {
        let now = stats.snapshot();
        for (counter, now, then) in [
            (&self.frames_in, now.frames_in, last.frames_in),
            (&self.frames_out, now.frames_out, last.frames_out),
            (&self.bytes_in, now.bytes_in, last.bytes_in),
            (&self.bytes_out, now.bytes_out, last.bytes_out),
            (
                &self.compress_in,
                now.compress_input_bytes,
                last.compress_input_bytes,
            ),
            (
                &self.compress_out,
                now.compress_output_bytes,
                last.compress_output_bytes,
            ),
            (&self.waits, now.backpressure_waits, last.backpressure_waits),
            (
                &self.refusals,
                now.backpressure_refusals,
                last.backpressure_refusals,
            ),
        ] {
            let delta = now.saturating_sub(then);
            if delta > 0 {
                counter.increment(delta);
            }
        }
        now
    }
}

/// Adds one to the counter labelled `label`, or to the last one (`other`).
fn add(counters: &[(&'static str, Counter)], label: &str) {
    if let Some((_, counter)) = counters
        .iter()
        .find(|(l, _)| *l == label)
        .or_else(|| counters.last())
    {
        counter.increment(1);
    }
}

/// The `reason` label of a failed preface or handshake.
fn handshake_reason(error: &netproto_transport::Error) -> &'static str {
    use netproto_transport::Error as E;
    match error {
        E::Timeout {
            kind: TimeoutKind::Preface,
            ..
        } => "preface_timeout",
        E::Timeout { .. } => "timeout",
        E::Protocol(_) | E::ModeMismatch { .. } | E::Refused { .. } => "preface",
        E::Crypto(_) | E::UnknownPeer { .. } => "noise",
        E::Tls(_) | E::PinMismatch => "tls",
        E::PeerClosed | E::Closed => "closed",
        E::Io(_) => "io",
        _ => "other",
    }
}

/// The `kind` label of a connection that ended with an error.
fn error_kind(error: &netproto_dispatch::Error) -> &'static str {
    use netproto_transport::Error as E;
    let netproto_dispatch::Error::Transport(error) = error else {
        return "other";
    };
    match error {
        E::Timeout { kind, .. } => match kind {
            TimeoutKind::Idle => "timeout_idle",
            TimeoutKind::Write => "timeout_write",
            TimeoutKind::Heartbeat => "timeout_heartbeat",
            _ => "other",
        },
        E::Protocol(_) => "protocol",
        E::Compression(_) => "compression",
        E::Crypto(_) | E::UnknownPeer { .. } => "crypto",
        E::Tls(_) | E::PinMismatch => "tls",
        E::PeerClosed | E::Closed => "closed",
        E::Io(_) => "io",
        _ => "other",
    }
}

/// Samples of a Prometheus text exposition, keyed by series as written
/// (`name` or `name{label="value",...}`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples(std::collections::BTreeMap<String, f64>);

impl Samples {
    /// Parses the text format; comment and malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|line| !line.starts_with('#'))
                .filter_map(|line| {
                    let (series, value) = line.trim().rsplit_once(' ')?;
                    Some((series.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The value of one series, written exactly as in the exposition.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.0.get(series).copied()
    }

    /// The sum of every series of metric `name`, whatever its labels.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                series
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// Each series of `self` minus the same series in `before` (missing
    /// there: counted as 0).
    pub fn since(&self, before: &Self) -> Self {
        Self(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v - before.0.get(k).copied().unwrap_or(0.0)))
                .collect(),
        )
    }

    /// The `q` quantile (0 to 1) of histogram `name` (without labels other
    /// than `le`), interpolated within its buckets as Prometheus'
    /// `histogram_quantile` does; `None` when it has no observations.
    pub fn quantile(&self, name: &str, q: f64) -> Option<f64> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .0
            .iter()
            .filter_map(|(series, count)| {
                let bound = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    bound.parse().ok()?
                };
                Some((bound, *count))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for (bound, count) in buckets {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let within = count - below;
                let share = if within > 0.0 {
                    (rank - below) / within
                } else {
                    1.0
                };
                return Some(lower + (bound - lower) * share);
            }
            (lower, below) = (bound, count);
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::Samples;

    #[test]
    fn samples_parse_sum_and_quantiles() {
        let text = "# TYPE a_total counter\na_total{k=\"x\"} 2\na_total{k=\"y\"} 3\nab 9\n\
                    h_bucket{le=\"0.1\"} 50\nh_bucket{le=\"0.2\"} 100\nh_bucket{le=\"+Inf\"} 100\n";
        let samples = Samples::parse(text);
        assert_eq!(samples.sum("a_total"), 5.0);
        assert_eq!(samples.get("ab"), Some(9.0));
        let q = |q| samples.quantile("h", q).unwrap();
        assert!((q(0.5) - 0.1).abs() < 1e-9, "{}", q(0.5));
        assert!((q(0.75) - 0.15).abs() < 1e-9, "{}", q(0.75));
        let before = Samples::parse("a_total{k=\"x\"} 1\n");
        assert_eq!(samples.since(&before).sum("a_total"), 4.0);
        assert_eq!(Samples::default().quantile("h", 0.5), None);
    }
}
