//! A server's Prometheus recorder: `metrics-exporter-prometheus`'s, with
//! our histogram buckets and help texts.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Upper bounds of the histogram buckets, in seconds (the unit of every
/// histogram this crate records): 1 µs to 30 s.
pub const BUCKETS: [f64; 23] = [
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
];

/// How often the exporter task moves recorded histogram samples into
/// their buckets ([`Registry::upkeep`]).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A `metrics` [`Recorder`] that keeps every series in memory and renders
/// them in the Prometheus text format (version 0.0.4): the
/// [`PrometheusRecorder`] of `metrics-exporter-prometheus`, built with
/// [`BUCKETS`] and not installed globally.
///
/// Cheap to clone (clones share the series). Counters and gauges are one
/// atomic add (and one for the exporter's generation count). A histogram
/// record appends the value to a lock-free list, and [`upkeep`](Self::upkeep)
/// (or a render) moves the values into the fixed [`BUCKETS`]; memory
/// between two upkeeps grows with the values recorded, so whoever records
/// histograms runs it periodically (a server's exporter task does, every
/// [`UPKEEP_INTERVAL`]). Registering takes a lock: obtain handles once and
/// keep them.
///
/// Help texts get the unit appended, as in `Bytes written (bytes)`; names
/// are left as registered (no unit suffix). The text lists metric families
/// in no particular order, separated by blank lines.
///
/// It is not installed globally by this crate: a server with a metrics
/// address registers into its own registry, so several servers in one
/// process each report their own traffic. An application can install one
/// with [`metrics::set_global_recorder`] to export its own metrics too.
#[derive(Clone, Debug)]
pub struct Registry {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        // `set_buckets` fails only for an empty list.
        let builder = PrometheusBuilder::new()
            .set_buckets(&BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        Self {
            recorder: Arc::new(recorder),
            handle,
        }
    }

    /// Every series in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Moves the histogram values recorded since the last upkeep or render
    /// into their buckets, which bounds the memory they take.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// `help`, with the unit appended unless it is a plain count.
fn help(unit: Option<Unit>, help: SharedString) -> SharedString {
    match unit {
        Some(unit) if unit != Unit::Count => format!("{help} ({})", unit.as_str()).into(),
        _ => help,
    }
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let description = help(unit, description);
        self.recorder.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let description = help(unit, description);
        self.recorder.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        let description = help(unit, description);
        self.recorder.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.recorder.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.recorder.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.recorder.register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use metrics::{Key, Label, Level, Metadata, Recorder, Unit};

    use super::Registry;

    const META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let registry = Registry::new();
        registry.describe_counter("c_total".into(), None, "a \"counter\"".into());
        registry.describe_counter("b_total".into(), Some(Unit::Bytes), "bytes".into());
        let labels = vec![Label::new("reason", "a\"b")];
        registry
            .register_counter(&Key::from_parts("c_total", labels), &META)
            .increment(3);
        registry
            .register_counter(&Key::from_name("b_total"), &META)
            .increment(5);
        let gauge = registry.register_gauge(&Key::from_name("open"), &META);
        gauge.increment(2.0);
        gauge.decrement(1.0);
        let h = registry.register_histogram(&Key::from_name("t_seconds"), &META);
        h.record(0.000_2);
        registry.upkeep();
        h.record(0.3);
        h.record(100.0);
        let text = registry.render();
        for line in [
            "# HELP c_total a \"counter\"",
            "# TYPE c_total counter",
            "c_total{reason=\"a\\\"b\"} 3",
            "# HELP b_total bytes (bytes)",
            "b_total 5",
            "# TYPE open gauge",
            "open 1",
            "# TYPE t_seconds histogram",
            "t_seconds_bucket{le=\"0.000001\"} 0",
            "t_seconds_bucket{le=\"0.0001\"} 0",
            "t_seconds_bucket{le=\"0.00025\"} 1",
            "t_seconds_bucket{le=\"0.5\"} 2",
            "t_seconds_bucket{le=\"30\"} 2",
            "t_seconds_bucket{le=\"+Inf\"} 3",
            "t_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }

    #[test]
    fn records_from_several_threads() {
        let registry = Registry::new();
        let counter = registry.register_counter(&Key::from_name("n_total"), &META);
        let h = registry.register_histogram(&Key::from_name("h_seconds"), &META);
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counter.increment(1);
                        h.record(0.001);
                    }
                });
            }
        });
        let text = registry.render();
        for line in [
            "n_total 6000",
            "h_seconds_bucket{le=\"0.0005\"} 0",
            "h_seconds_bucket{le=\"0.001\"} 6000",
            "h_seconds_count 6000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("h_seconds_sum "))
            .unwrap();
        assert!((sum.parse::<f64>().unwrap() - 6.0).abs() < 1e-6, "{sum}");
    }
}
