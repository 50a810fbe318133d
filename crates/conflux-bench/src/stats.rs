//! Live counters and HDR latency histograms shared by producers and consumers, and the
//! arithmetic that turns them into a report: rates, MB/s and percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, 3 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static histogram bounds are valid")
}

/// Microseconds since the harness clock started; producers stamp messages with it and
/// consumers subtract it (same process, so one monotonic clock serves both).
#[derive(Debug, Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }
    pub fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
    pub fn start(&self) -> Instant {
        self.0
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Counters and histograms. Counters only grow; the runner snapshots them at the start and
/// end of the measured window and per reporting interval.
#[derive(Debug)]
pub struct Stats {
    pub sent_messages: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub send_errors: AtomicU64,
    pub received_messages: AtomicU64,
    pub received_bytes: AtomicU64,
    pub receive_errors: AtomicU64,
    /// Latencies of the current interval and since the measured window began.
    publish: Mutex<Latencies>,
    end_to_end: Mutex<Latencies>,
}

#[derive(Debug)]
struct Latencies {
    interval: Histogram<u64>,
    total: Histogram<u64>,
}

impl Latencies {
    fn new() -> Self {
        Latencies {
            interval: new_histogram(),
            total: new_histogram(),
        }
    }
    /// Records (latency µs, how many messages had it) pairs.
    fn record(&mut self, values_us: impl Iterator<Item = (u64, u64)>) {
        for (v, n) in values_us {
            let v = v.clamp(1, LATENCY_MAX_US);
            // Values are clamped into bounds, so recording cannot fail.
            let _ = self.interval.record_n(v, n);
            let _ = self.total.record_n(v, n);
        }
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub sent_messages: u64,
    pub sent_bytes: u64,
    pub send_errors: u64,
    pub received_messages: u64,
    pub received_bytes: u64,
    pub receive_errors: u64,
}

impl Counts {
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            sent_messages: self.sent_messages - earlier.sent_messages,
            sent_bytes: self.sent_bytes - earlier.sent_bytes,
            send_errors: self.send_errors - earlier.send_errors,
            received_messages: self.received_messages - earlier.received_messages,
            received_bytes: self.received_bytes - earlier.received_bytes,
            receive_errors: self.receive_errors - earlier.receive_errors,
        }
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            sent_messages: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            received_messages: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            receive_errors: AtomicU64::new(0),
            publish: Mutex::new(Latencies::new()),
            end_to_end: Mutex::new(Latencies::new()),
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            sent_messages: self.sent_messages.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            receive_errors: self.receive_errors.load(Ordering::Relaxed),
        }
    }

    pub fn record_sent(&self, messages: u64, bytes: u64, latencies_us: impl Iterator<Item = u64>) {
        self.sent_messages.fetch_add(messages, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.publish
            .lock()
            .unwrap()
            .record(latencies_us.map(|v| (v, 1)));
    }

    /// Consumed messages; latencies come as (µs, message count) pairs.
    pub fn record_received(
        &self,
        messages: u64,
        bytes: u64,
        latencies_us: impl Iterator<Item = (u64, u64)>,
    ) {
        self.received_messages
            .fetch_add(messages, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.end_to_end.lock().unwrap().record(latencies_us);
    }

    /// Clears the whole-run histograms (the end of the warm-up).
    pub fn reset_totals(&self) {
        self.publish.lock().unwrap().total.reset();
        self.end_to_end.lock().unwrap().total.reset();
    }

    /// Takes the interval histograms (publish, end-to-end), leaving empty ones.
    pub fn take_interval(&self) -> (Histogram<u64>, Histogram<u64>) {
        let take = |l: &Mutex<Latencies>| {
            let mut l = l.lock().unwrap();
            let h = l.interval.clone();
            l.interval.reset();
            h
        };
        (take(&self.publish), take(&self.end_to_end))
    }

    /// Copies of the whole-run histograms (publish, end-to-end).
    pub fn totals(&self) -> (Histogram<u64>, Histogram<u64>) {
        (
            self.publish.lock().unwrap().total.clone(),
            self.end_to_end.lock().unwrap().total.clone(),
        )
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            p99_99_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Rates over a window of `seconds`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub publish_msgs_per_s: f64,
    pub publish_mb_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
}

/// MB is 10^6 bytes, as OpenMessaging Benchmark reports it.
pub const MB: f64 = 1_000_000.0;

impl Rates {
    pub fn of(counts: &Counts, seconds: f64) -> Rates {
        if seconds <= 0.0 {
            return Rates::default();
        }
        Rates {
            publish_msgs_per_s: counts.sent_messages as f64 / seconds,
            publish_mb_per_s: counts.sent_bytes as f64 / MB / seconds,
            consume_msgs_per_s: counts.received_messages as f64 / seconds,
            consume_mb_per_s: counts.received_bytes as f64 / MB / seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        // 1..=10_000 µs, one each: p50 = 5 ms, p99 = 9.9 ms, max = 10 ms (3 significant digits).
        for us in 1..=10_000u64 {
            h.record(us).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!((p.p99_9_ms - 9.99).abs() < 0.01, "{p:?}");
        assert!((p.max_ms - 10.0).abs() < 0.01, "{p:?}");
        assert!((p.mean_ms - 5.0005).abs() < 0.01, "{p:?}");
        assert!(p.p50_ms <= p.p99_ms && p.p99_ms <= p.p99_9_ms && p.p99_9_ms <= p.p99_99_ms);
        assert!(p.p99_99_ms <= p.max_ms);
    }

    #[test]
    fn empty_histogram_reports_zeroes() {
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    #[test]
    fn rates_use_decimal_megabytes() {
        let counts = Counts {
            sent_messages: 2_000,
            sent_bytes: 4_000_000,
            received_messages: 1_000,
            received_bytes: 2_000_000,
            ..Default::default()
        };
        let r = Rates::of(&counts, 2.0);
        assert_eq!(r.publish_msgs_per_s, 1_000.0);
        assert_eq!(r.publish_mb_per_s, 2.0);
        assert_eq!(r.consume_msgs_per_s, 500.0);
        assert_eq!(r.consume_mb_per_s, 1.0);
        assert_eq!(Rates::of(&counts, 0.0), Rates::default());
    }

    #[test]
    fn stats_windows_and_intervals() {
        let stats = Stats::new();
        stats.record_sent(3, 300, [100, 200, 300].into_iter());
        let before = stats.counts();
        stats.reset_totals();
        stats.record_sent(2, 200, [1_000, 2_000].into_iter());
        stats.record_received(2, 200, [(5_000, 1), (0, 1)].into_iter());
        let window = stats.counts().since(&before);
        assert_eq!(window.sent_messages, 2);
        assert_eq!(window.sent_bytes, 200);
        assert_eq!(window.received_messages, 2);
        let (publish, e2e) = stats.totals();
        assert_eq!(publish.len(), 2, "warm-up values were cleared");
        assert_eq!(e2e.min(), 1, "zero latencies are clamped to 1 µs");
        let (interval_publish, _) = stats.take_interval();
        assert_eq!(
            interval_publish.len(),
            5,
            "interval keeps everything since last take"
        );
        assert!(stats.take_interval().0.is_empty());
    }
}
