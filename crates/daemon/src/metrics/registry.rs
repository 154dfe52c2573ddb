//! A small `metrics` recorder that renders the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};

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

/// Counters and histograms are split in this many shards, each on its own
/// cache line, so that threads recording at once do not contend.
const SHARDS: usize = 4;

/// The shard the current thread records into.
fn shard<T>(shards: &[Padded<T>; SHARDS]) -> &T {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    let index = INDEX.with(|index| *index);
    let [first, ..] = shards;
    &shards.get(index).unwrap_or(first).0
}

/// Keeps its content on cache lines of its own.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

/// A `metrics` [`Recorder`] that keeps every series in memory and renders
/// them in the Prometheus text format (version 0.0.4).
///
/// Cheap to clone (clones share the series). Counters and gauges are one
/// atomic add; histograms have fixed [`BUCKETS`], so recording is a search
/// over 23 bounds and two atomic operations, and memory stays bounded
/// however rarely it is scraped. Counters and histograms are sharded by
/// thread, so that recording from several threads does not contend on one
/// cache line. Registering takes a lock: obtain handles once and keep them.
///
/// It is not installed globally by this crate: a server with a metrics
/// address registers into its own registry, so several servers in one
/// process each report their own traffic. An application can install one
/// with [`metrics::set_global_recorder`] to export its own metrics too.
#[derive(Clone, Debug, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<String, Family>>>);

#[derive(Debug, Default)]
struct Family {
    kind: Option<Kind>,
    help: Option<String>,
    series: BTreeMap<Vec<(String, String)>, Series>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
enum Series {
    Counter(Arc<ShardedCounter>),
    Gauge(Arc<AtomicF64>),
    Histogram(Arc<Buckets>),
}

/// An `f64` in an `AtomicU64`.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some(f(f64::from_bits(bits)).to_bits())
            });
    }
}

impl GaugeFn for AtomicF64 {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// A counter split in shards.
#[derive(Debug, Default)]
struct ShardedCounter([Padded<AtomicU64>; SHARDS]);

impl ShardedCounter {
    fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl metrics::CounterFn for ShardedCounter {
    fn increment(&self, value: u64) {
        shard(&self.0).fetch_add(value, Ordering::Relaxed);
    }

    /// Not atomic with respect to concurrent increments.
    fn absolute(&self, value: u64) {
        for (i, s) in self.0.iter().enumerate() {
            s.0.store(if i == 0 { value } else { 0 }, Ordering::Relaxed);
        }
    }
}

/// A histogram with the fixed [`BUCKETS`], split in shards.
#[derive(Debug, Default)]
struct Buckets([Padded<Shard>; SHARDS]);

/// One shard of a histogram; the last count is `+Inf`.
#[derive(Debug, Default)]
struct Shard {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum: AtomicF64,
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let shard = shard(&self.0);
        let index = BUCKETS.partition_point(|bound| *bound < value);
        if let Some(bucket) = shard.counts.get(index) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        shard.sum.update(|sum| sum + value);
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn families(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Family>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn describe(&self, name: &KeyName, kind: Kind, unit: Option<Unit>, help: &SharedString) {
        let mut families = self.families();
        let family = families.entry(sanitize(name.as_str())).or_default();
        if family.kind.is_none() {
            family.kind = Some(kind);
        }
        let help = match unit {
            Some(unit) if unit != Unit::Count => format!("{help} ({})", unit.as_str()),
            _ => help.to_string(),
        };
        family.help = Some(help);
    }

    /// The series of `key`, created on first use; `None` if its name is
    /// already used by a metric of another type.
    fn series<T>(
        &self,
        key: &Key,
        kind: Kind,
        make: impl FnOnce() -> Series,
        pick: impl FnOnce(&Series) -> Option<T>,
    ) -> Option<T> {
        let mut families = self.families();
        let family = families.entry(sanitize(key.name())).or_default();
        if *family.kind.get_or_insert(kind) != kind {
            return None;
        }
        let labels = key
            .labels()
            .map(|l| (sanitize(l.key()), l.value().to_owned()))
            .collect();
        pick(family.series.entry(labels).or_insert_with(make))
    }

    /// Every series in the Prometheus text format, sorted by name.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, family) in self.families().iter() {
            let Some(kind) = family.kind.filter(|_| !family.series.is_empty()) else {
                continue;
            };
            if let Some(help) = &family.help {
                let help = help.replace('\\', "\\\\").replace('\n', "\\n");
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let type_name = match kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# TYPE {name} {type_name}");
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(value) => {
                        let value = value.get();
                        let _ = writeln!(out, "{name}{} {value}", label_set(labels, None));
                    }
                    Series::Gauge(value) => {
                        let value = number(value.get());
                        let _ = writeln!(out, "{name}{} {value}", label_set(labels, None));
                    }
                    Series::Histogram(buckets) => render_histogram(&mut out, name, labels, buckets),
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &[(String, String)], h: &Buckets) {
    let mut cumulative = 0;
    let bounds = BUCKETS.iter().map(|b| number(*b)).chain(["+Inf".into()]);
    for (index, bound) in bounds.enumerate() {
        cumulative +=
            h.0.iter()
                .filter_map(|shard| shard.0.counts.get(index))
                .map(|count| count.load(Ordering::Relaxed))
                .sum::<u64>();
        let labels = label_set(labels, Some(&bound));
        let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
    }
    let sum: f64 = h.0.iter().map(|shard| shard.0.sum.get()).sum();
    let labels = label_set(labels, None);
    let _ = writeln!(out, "{name}_sum{labels} {}", number(sum));
    // The count is the +Inf bucket, so that they always agree.
    let _ = writeln!(out, "{name}_count{labels} {cumulative}");
}

/// `{a="1",le="0.5"}`, or nothing without labels.
fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    let pairs: Vec<String> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le.map(|le| ("le", le)))
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// A sample value as Prometheus writes it.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        value.to_string()
    }
}

/// Replaces characters not allowed in metric and label names with `_`.
fn sanitize(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, Kind::Counter, unit, &description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, Kind::Gauge, unit, &description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(&key, Kind::Histogram, unit, &description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let make = || Series::Counter(Arc::default());
        let pick = |s: &Series| match s {
            Series::Counter(c) => Some(Counter::from_arc(c.clone())),
            _ => None,
        };
        self.series(key, Kind::Counter, make, pick)
            .unwrap_or_else(Counter::noop)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let make = || Series::Gauge(Arc::default());
        let pick = |s: &Series| match s {
            Series::Gauge(g) => Some(Gauge::from_arc(g.clone())),
            _ => None,
        };
        self.series(key, Kind::Gauge, make, pick)
            .unwrap_or_else(Gauge::noop)
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let make = || Series::Histogram(Arc::default());
        let pick = |s: &Series| match s {
            Series::Histogram(h) => Some(Histogram::from_arc(h.clone())),
            _ => None,
        };
        self.series(key, Kind::Histogram, make, pick)
            .unwrap_or_else(Histogram::noop)
    }
}

#[cfg(test)]
mod tests {
    use metrics::{Key, Label, Level, Metadata, Recorder};

    use super::Registry;

    const META: Metadata<'static> = Metadata::new("test", Level::INFO, None);

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let registry = Registry::new();
        registry.describe_counter("c_total".into(), None, "a \"counter\"".into());
        let labels = vec![Label::new("reason", "a\"b")];
        registry
            .register_counter(&Key::from_parts("c_total", labels), &META)
            .increment(3);
        let gauge = registry.register_gauge(&Key::from_name("open"), &META);
        gauge.increment(2.0);
        gauge.decrement(1.0);
        let h = registry.register_histogram(&Key::from_name("t_seconds"), &META);
        h.record(0.000_2);
        h.record(0.3);
        h.record(100.0);
        // A name reused with another type records nothing.
        registry
            .register_gauge(&Key::from_name("c_total"), &META)
            .set(9.0);
        let text = registry.render();
        for line in [
            "# HELP c_total a \"counter\"",
            "# TYPE c_total counter",
            "c_total{reason=\"a\\\"b\"} 3",
            "# TYPE open gauge",
            "open 1",
            "# TYPE t_seconds histogram",
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
        assert!(!text.contains(" 9"), "{text}");
    }

    #[test]
    fn shards_add_up_across_threads() {
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
