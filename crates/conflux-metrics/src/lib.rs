//! Lock-free metric primitives and the Prometheus text-format renderer.
//!
//! Why hand-rolled rather than `prometheus-client`: that crate's histogram takes a lock per
//! observation and its label families hash the label set under a lock on every update. Here
//! every update on a hot path is one or two relaxed atomic adds on memory the caller already
//! holds (a field of a topic, a slot of a per-API array); label sets are produced only at
//! scrape time. The crate has no dependencies, so the log, the broker and every front end can
//! record into it, and `conflux-http` renders it.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub const fn new() -> Self {
        Gauge(AtomicI64::new(0))
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the latency buckets: 50 µs to 10 s, roughly ×2.5 apart, which
/// covers an fsync on a fast NVMe disk as well as a long-polling fetch.
pub const LATENCY_BUCKETS_S: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
const BUCKETS: usize = LATENCY_BUCKETS_S.len();

/// A latency histogram with the fixed [`LATENCY_BUCKETS_S`] bounds. `observe` is two atomic
/// adds and a short scan of 16 constants; counts are per bucket (made cumulative on render).
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub const fn new() -> Self {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS + 1],
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = LATENCY_BUCKETS_S
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS);
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum of all observations, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// Cumulative counts per bound, the last one being `+Inf`.
    pub fn cumulative(&self) -> [u64; BUCKETS + 1] {
        let mut out = [0; BUCKETS + 1];
        let mut running = 0;
        for (slot, bucket) in self.buckets.iter().enumerate() {
            running += bucket.load(Ordering::Relaxed);
            out[slot] = running;
        }
        out
    }
}

/// Bytes and records moved through one topic.
#[derive(Debug, Default)]
pub struct Throughput {
    pub bytes_in: Counter,
    pub records_in: Counter,
    pub bytes_out: Counter,
    pub records_out: Counter,
}

/// The kinds of metric family the text format knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Builds a Prometheus text-format (0.0.4) exposition. Call [`Exposition::family`] once per
/// metric name, then add its samples; label values are escaped here.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// A label set: `(name, value)` pairs.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// Integer sample (exact for counters above 2^53, unlike `f64`).
    pub fn sample_int(&mut self, name: &str, labels: Labels<'_>, value: i128) {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, h: &Histogram) {
        let cumulative = h.cumulative();
        for (slot, count) in cumulative.iter().enumerate() {
            let le = LATENCY_BUCKETS_S
                .get(slot)
                .map_or_else(|| "+Inf".to_owned(), |b| format_value(*b));
            let _ = write!(self.out, "{name}_bucket");
            write_labels(&mut self.out, labels, Some(&le));
            let _ = writeln!(self.out, " {count}");
        }
        let _ = write!(self.out, "{name}_sum");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", format_value(h.sum_seconds()));
        let _ = write!(self.out, "{name}_count");
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {}", cumulative[BUCKETS]);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn write_labels(out: &mut String, labels: Labels<'_>, le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    let all = labels.iter().copied().chain(le.map(|v| ("le", v)));
    for (name, value) in all {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let c = h.cumulative();
        assert_eq!(c[0], 1, "50 µs falls in the le=0.00005 bucket");
        assert_eq!(c[6], 2, "3 ms falls in le=0.005");
        assert_eq!(c[BUCKETS - 1], 2, "60 s is above the last bound");
        assert_eq!(c[BUCKETS], 3);
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.003_05).abs() < 1e-9);
    }

    #[test]
    fn exposition_escapes_label_values() {
        let mut e = Exposition::new();
        e.family("x_total", Kind::Counter, "a\nb");
        e.sample_int("x_total", &[("topic", "a\"b\\c")], 7);
        let text = e.finish();
        assert!(text.contains("# HELP x_total a\\nb\n"));
        assert!(text.contains("x_total{topic=\"a\\\"b\\\\c\"} 7\n"));
    }

    #[test]
    fn histogram_renders_bucket_sum_and_count() {
        let h = Histogram::new();
        h.observe(Duration::from_millis(1));
        let mut e = Exposition::new();
        e.family("lat_seconds", Kind::Histogram, "latency");
        e.histogram("lat_seconds", &[("api", "Produce")], &h);
        let text = e.finish();
        assert!(text.contains("lat_seconds_bucket{api=\"Produce\",le=\"0.001\"} 1\n"));
        assert!(text.contains("lat_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 1\n"));
        assert!(text.contains("lat_seconds_count{api=\"Produce\"} 1\n"));
    }
}
